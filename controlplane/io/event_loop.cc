#include "io/event_loop.h"

#include <pthread.h>

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
        if (now - window_start >= 1000) {
            const uint64_t window_us = (now - window_start) * 1000;
            const uint64_t busy_us = window_us > idle_us ? window_us - idle_us : 0;
            stats_.busy_ppm.store(static_cast<uint32_t>(busy_us * 1'000'000 / window_us), std::memory_order_relaxed);
            window_start = now;
            idle_us = 0;
        }
    }
    // Allocations end with the loop (drain is over): log them as closed.
    io_.flush();
}

}  // namespace turn::cp
