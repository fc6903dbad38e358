// What the tests of a real event loop in this process wait for and read:
// a bounded wait for a condition the loop's thread makes true, and how many
// client connections (or DTLS sessions) of a kind closed for a reason.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "core/stats.h"

namespace turn::cp::test {

// Waits up to `ms` for `pred`.
template <typename F>
bool eventually(F pred, int ms = 3000) {
    for (int i = 0; i < ms / 20; ++i) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

// kind: 0 TCP, 1 TLS, 2 DTLS (Stats::connections_closed).
inline uint64_t closed(const Stats& s, size_t kind, ConnClose why) {
    return s.connections_closed[kind][static_cast<size_t>(why)].get();
}

}  // namespace turn::cp::test
