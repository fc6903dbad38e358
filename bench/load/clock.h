// CLOCK_MONOTONIC in nanoseconds: send timestamps, pacing and deadlines.
#pragma once

#include <cstdint>
#include <ctime>

namespace turn::load {

inline uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// CLOCK_REALTIME, only to map kernel receive timestamps (SO_TIMESTAMPNS) onto
// CLOCK_MONOTONIC.
inline uint64_t real_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint64_t kNsPerSec = 1'000'000'000u;
constexpr uint64_t kNsPerMs = 1'000'000u;

// Milliseconds from now to `deadline_ns` for poll(), rounded up; 0 once it has passed.
inline int poll_ms(uint64_t deadline_ns) {
    const uint64_t now = mono_ns();
    return now >= deadline_ns ? 0 : static_cast<int>((deadline_ns - now + kNsPerMs - 1) / kNsPerMs);
}

}  // namespace turn::load
