// One socket-mode event loop (one per core): its own listeners (SO_REUSEPORT,
// so the kernel spreads clients over loops by 5-tuple hash and a 5-tuple
// always lands on the same loop), its own relayed sockets, timer wheel,
// allocations and counters. Loops share nothing but `Shared`.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/offload.h"
#include "core/server.h"
#include "core/shared.h"
#include "core/stats.h"
#include "io/socket_io.h"
#include "io/state_store.h"
#include "io/stream_handoff.h"
#include "io/tls.h"

namespace turn::cp {

// Before any loop binds (turn-relay's start-up): every listening address is
// free, by a probe socket without SO_REUSEPORT, so that a second turn-relay on
// the same ports (a manual start while the service runs) stops instead of
// silently taking a share of the first one's clients through SO_REUSEPORT
// (the metrics address too: a taken one otherwise fails without a reason);
// and every [server].relay_ips address can be bound (is this host's, or
// net.ipv4.ip_nonlocal_bind allows it), instead of answering every Allocate
// with 508. "" or the first problem, naming the address and what to fix.
// `taken_ok`: a port in use is not a problem (turn-relay --check-config,
// beside the running relay that holds them), nor a port below 1024 this user
// may not bind (the service has CAP_NET_BIND_SERVICE); any other reason a
// listener could not bind still is (an IP this host does not have).
std::string check_addresses(const Config& c, bool taken_ok = false);

class EventLoop {
public:
    EventLoop(Shared& shared, OffloadHook& offload, unsigned index);
    ~EventLoop();

    // Binds every configured listener (TLS ones with `tls`, which must be
    // set when the configuration has any); returns an error message on
    // failure. With several loops, `handoffs` carries RFC 6062 data
    // connections to the loop of their allocation (io/stream_handoff.h).
    std::string bind_listeners(const TlsContexts* tls = nullptr, StreamHandoffs* handoffs = nullptr);
    void start();
    // Asks the thread to finish (it does within one 100 ms poll), without
    // waiting: a process stopping many loops asks them all first.
    void request_stop() { stop_.store(true); }
    void stop();  // asks the thread to finish and joins it

    // Restarts: restores a previous process's snapshot of this loop (before
    // start(); returns how many allocations came back, logging each one that
    // did not). Then, with a store, hands the store every allocation once and
    // afterwards what changed, at most every `interval_ms` and once more when
    // the loop stops.
    // `client_paths`: each restored allocation gets a client path
    // (AllocationManager::restore), for a process whose SO_REUSEPORT hash
    // may differ from the saving one's.
    size_t restore(const LoopSnapshot& s, bool client_paths = false);
    // `first_journal`: the sequence number this loop's end journals start at
    // (StateStore::Ended::next_seq; the first save covers the ones below).
    void save_state_to(StateStore* store, uint32_t interval_ms, uint64_t first_journal);

    Stats& stats() { return stats_; }
    unsigned index() const { return index_; }
    // Runs `task` on the loop's own thread at its next iteration (within the
    // 100 ms poll timeout): how other threads (io/admin_server.h) read or
    // change what the loop owns. Tasks still queued when the loop stops are
    // dropped, so a caller waits with a timeout.
    void post(std::function<void(Server&)> task);
    // Every loop of the process, this one included, in index order (before
    // start()): how this loop's server reaches the others (RFC 8016 mobility).
    void set_siblings(std::vector<EventLoop*> loops);

private:
    void run();
    void save_state(uint64_t now_ms, bool final);

    Shared& shared_;
    unsigned index_;
    SystemClock clock_;
    Stats stats_;
    SocketIo io_;
    Server server_;
    StateStore* store_ = nullptr;
    std::unique_ptr<EndJournal> journal_;  // with store_
    size_t journaled_ = 0;                 // of removed_since_take(), the ids already in the journal
    uint32_t save_interval_ms_ = 1000;
    uint64_t last_save_ms_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex tasks_m_;
    std::vector<std::function<void(Server&)>> tasks_;
    std::atomic<bool> has_tasks_{false};
};

}  // namespace turn::cp
