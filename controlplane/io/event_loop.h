// One socket-mode event loop (one per core): its own listeners (SO_REUSEPORT,
// so the kernel spreads clients over loops by 5-tuple hash and a 5-tuple
// always lands on the same loop), its own relayed sockets, timer wheel,
// allocations and counters. Loops share nothing but `Shared`.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/offload.h"
#include "core/server.h"
#include "core/shared.h"
#include "core/stats.h"
#include "io/socket_io.h"

namespace turn::cp {

class EventLoop {
public:
    EventLoop(Shared& shared, OffloadHook& offload, unsigned index);
    ~EventLoop();

    // Binds every configured listener; returns an error message on failure.
    std::string bind_listeners();
    void start();
    void stop();  // asks the thread to finish and joins it

    Stats& stats() { return stats_; }
    unsigned index() const { return index_; }

private:
    void run();

    Shared& shared_;
    unsigned index_;
    SystemClock clock_;
    Stats stats_;
    SocketIo io_;
    Server server_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace turn::cp
