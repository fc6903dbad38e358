// Allocation churn while traffic flows: a thread creates allocations at a
// steady rate (Allocate + CreatePermission [+ ChannelBind], on fresh sockets
// so each is a new 5-tuple), keeps each for `hold`, then deletes it (Refresh
// LIFETIME 0). Reports setup latency, how many were created, deleted and
// failed, and the rate actually achieved (a slow server makes the thread fall
// behind its target, which is itself a result). The window's end stops new
// setups only: each setup has 5 s and each delete 1 s of its own, so the
// thread can outlast the window by that much.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "histogram.h"
#include "turn_session.h"

namespace turn::load {

struct ChurnResult {
    double target_rate = 0;
    double achieved_rate = 0;   // successful setups per second of churn time
    uint64_t attempted = 0;
    uint64_t created = 0;
    uint64_t failed = 0;
    uint64_t deleted = 0;
    uint64_t delete_failed = 0;
    double elapsed_s = 0;
    Histogram setup_latency;    // ns, successful setups
};

class Churner {
public:
    // make() returns a SessionConfig for the i-th churned allocation.
    Churner(std::function<SessionConfig(uint64_t)> make, std::function<void(const Address&)> on_relayed,
            double rate, uint64_t hold_ns);
    ~Churner();
    void start(uint64_t start_ns, uint64_t end_ns);
    ChurnResult finish();

private:
    void run(uint64_t start_ns, uint64_t end_ns);

    std::function<SessionConfig(uint64_t)> make_;
    std::function<void(const Address&)> on_relayed_;
    double rate_;
    uint64_t hold_ns_;
    std::thread thread_;
    ChurnResult result_;
};

}  // namespace turn::load
