#include "io/event_loop.h"

#include <pthread.h>

#include <chrono>

#include "core/event_log.h"

namespace turn::cp {

EventLoop::EventLoop(Shared& shared, OffloadHook& offload, unsigned index)
    : shared_(shared), index_(index), io_(stats_), server_(shared, clock_, io_, offload, stats_) {
    io_.set_server(&server_);
}

EventLoop::~EventLoop() { stop(); }

std::string EventLoop::bind_listeners() {
    for (const auto& l : shared_.config.listen) {
        if (auto err = io_.add_listener(l); !err.empty()) {
            return err;
        }
    }
    return {};
}

size_t EventLoop::restore(const LoopSnapshot& s, uint64_t elapsed_ms) {
    auto& m = server_.allocations();
    size_t restored = 0;
    for (const auto& a : s.allocations) {
        if (auto why = m.restore(a, elapsed_ms); !why.empty()) {
            log_event(LogLevel::kWarn, "allocation_not_restored",
                      {{"id", std::to_string(a.id)}, {"client", a.five_tuple.client.to_string()}, {"reason", why}});
            continue;
        }
        ++restored;
    }
    saved_changes_ = m.changes();  // what was just read back needs no save
    return restored;
}

void EventLoop::save_state_to(StateStore* store, unsigned loops, uint32_t interval_ms) {
    store_ = store;
    loops_ = loops;
    save_interval_ms_ = interval_ms;
}

void EventLoop::save_state(uint64_t now_ms, bool final) {
    auto& m = server_.allocations();
    if (store_ == nullptr || m.changes() == saved_changes_ || (!final && now_ms - last_save_ms_ < save_interval_ms_)) {
        return;
    }
    LoopSnapshot s;
    s.loop = index_;
    s.loops = loops_;
    s.saved_unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
    s.allocations.reserve(m.size());
    m.snapshot(s.allocations);
    store_->submit(index_, encode_snapshot(s));
    saved_changes_ = m.changes();
    last_save_ms_ = now_ms;
}

void EventLoop::start() {
    thread_ = std::thread([this] { run(); });
}

void EventLoop::stop() {
    stop_.store(true);
    if (thread_.joinable()) {
        thread_.join();
    }
}

void EventLoop::run() {
    const std::string name = "turn-loop-" + std::to_string(index_);
    pthread_setname_np(pthread_self(), name.c_str());
    // Utilisation: time not spent blocked in epoll_wait, per 1 s window.
    uint64_t window_start = clock_.now_ms();
    uint64_t idle_us = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
        // 100 ms = the wheel's tick; with traffic the loop runs far more often.
        io_.poll_once(100, &idle_us);
        server_.tick();
        io_.flush();
        const uint64_t now = clock_.now_ms();
        save_state(now, false);
        if (now - window_start >= 1000) {
            const uint64_t window_us = (now - window_start) * 1000;
            const uint64_t busy_us = window_us > idle_us ? window_us - idle_us : 0;
            stats_.busy_ppm.store(static_cast<uint32_t>(busy_us * 1'000'000 / window_us), std::memory_order_relaxed);
            window_start = now;
            idle_us = 0;
        }
    }
    // Allocations end with the loop (drain is over): log them as closed, and
    // leave what is left to the next control plane.
    io_.flush();
    save_state(clock_.now_ms(), true);
}

}  // namespace turn::cp
