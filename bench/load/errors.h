// Error tally by name: STUN error codes ("438"), "timeout", "bad_response",
// "integrity", socket errors. Rare-path only (setup, refresh, teardown), so a
// mutex is fine; traffic-path drops are counted in per-thread counters instead.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace turn::load {

class ErrorTally {
public:
    void add(const std::string& what, uint64_t n = 1) {
        std::lock_guard lock(mu_);
        counts_[what] += n;
    }
    std::map<std::string, uint64_t> snapshot() const {
        std::lock_guard lock(mu_);
        return counts_;
    }

private:
    mutable std::mutex mu_;
    std::map<std::string, uint64_t> counts_;
};

}  // namespace turn::load
