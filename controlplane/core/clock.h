// Time source for the control plane. Everything that expires (allocations,
// permissions, channels, nonces, caches, rate limits) reads time through this
// interface so unit tests drive time by hand and never sleep.
#pragma once

#include <cstdint>

namespace turn::cp {

class Clock {
public:
    virtual ~Clock() = default;
    // Monotonic milliseconds (arbitrary epoch); never goes backwards.
    virtual uint64_t now_ms() const = 0;
    // Wall-clock Unix seconds: TURN REST usernames carry Unix expiry times.
    virtual uint64_t unix_s() const = 0;
    // Wall-clock Unix milliseconds: saved lifetimes outlive the process.
    virtual uint64_t unix_ms() const = 0;
};

// CLOCK_MONOTONIC / CLOCK_REALTIME.
class SystemClock final : public Clock {
public:
    uint64_t now_ms() const override;
    uint64_t unix_s() const override;
    uint64_t unix_ms() const override;
};

// A clock moved only by advance(); for tests and simulations.
class ManualClock final : public Clock {
public:
    explicit ManualClock(uint64_t start_ms = 1'000'000, uint64_t unix_start_s = 1'700'000'000)
        : now_ms_(start_ms), unix_base_s_(unix_start_s), start_ms_(start_ms) {}
    uint64_t now_ms() const override { return now_ms_; }
    uint64_t unix_s() const override { return unix_base_s_ + (now_ms_ - start_ms_) / 1000; }
    uint64_t unix_ms() const override { return unix_base_s_ * 1000 + (now_ms_ - start_ms_); }
    void advance_ms(uint64_t ms) { now_ms_ += ms; }
    void advance_s(uint64_t s) { now_ms_ += s * 1000; }

private:
    uint64_t now_ms_;
    uint64_t unix_base_s_;
    uint64_t start_ms_;
};

}  // namespace turn::cp
