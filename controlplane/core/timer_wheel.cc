#include "core/timer_wheel.h"

#include <utility>

namespace turn::cp {

TimerWheel::TimerWheel(uint64_t now_ms, uint64_t tick_ms, size_t slots)
    : tick_ms_(tick_ms), current_tick_(now_ms / tick_ms), slots_(slots) {}

void TimerWheel::schedule(uint64_t deadline_ms, Callback cb) {
    uint64_t tick = (deadline_ms + tick_ms_ - 1) / tick_ms_;
    if (tick <= current_tick_) {
        tick = current_tick_ + 1;  // never fire from inside schedule()
    }
    slots_[tick % slots_.size()].push_back(Entry{tick, std::move(cb)});
    ++size_;
}

void TimerWheel::advance(uint64_t now_ms) {
    const uint64_t target = now_ms / tick_ms_;
    if (target <= current_tick_) {
        return;
    }
    // A jump longer than one rotation visits every slot once; each visit fires
    // everything due by `target`, so the result is the same as stepping.
    const uint64_t steps = target - current_tick_;
    const uint64_t visits = steps < slots_.size() ? steps : slots_.size();
    const uint64_t first = steps < slots_.size() ? current_tick_ + 1 : target - slots_.size() + 1;
    current_tick_ = target;
    std::vector<Entry> due;
    for (uint64_t i = 0; i < visits; ++i) {
        auto& slot = slots_[(first + i) % slots_.size()];
        if (slot.empty()) {
            continue;
        }
        std::vector<Entry> keep;
        for (auto& e : slot) {
            if (e.tick <= target) {
                due.push_back(std::move(e));
            } else {
                keep.push_back(std::move(e));
            }
        }
        slot.swap(keep);
    }
    size_ -= due.size();
    for (auto& e : due) {
        e.cb();
    }
}

}  // namespace turn::cp
