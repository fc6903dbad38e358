// One hashed timer wheel per event loop (not a timer per object).
//
// Timers are fire-and-forget callbacks. Owners use lazy validation instead of
// cancellation: the callback looks its object up by a stable id and checks the
// object's own deadline, re-arming itself if the object was refreshed in the
// meantime and doing nothing if the object is gone. So refreshing a permission
// or an allocation costs no wheel operation at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace turn::cp {

class TimerWheel {
public:
    using Callback = std::function<void()>;

    // tick_ms: resolution; slots: wheel size (a timer further away than
    // slots*tick_ms stays in its slot for several rotations).
    explicit TimerWheel(uint64_t now_ms, uint64_t tick_ms = 100, size_t slots = 4096);

    // Runs `cb` from advance() once now_ms >= deadline_ms (rounded up to a tick).
    void schedule(uint64_t deadline_ms, Callback cb);
    // Fires every due timer. Callbacks may schedule new timers.
    void advance(uint64_t now_ms);

    size_t size() const { return size_; }
    uint64_t tick_ms() const { return tick_ms_; }

private:
    struct Entry {
        uint64_t tick;
        Callback cb;
    };
    uint64_t tick_ms_;
    uint64_t current_tick_;  // every tick <= current_tick_ has fired
    std::vector<std::vector<Entry>> slots_;
    size_t size_ = 0;
};

}  // namespace turn::cp
