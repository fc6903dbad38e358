#include "io/event_loop.h"

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/event_log.h"
#include "core/nat_behavior.h"

namespace turn::cp {

namespace {

// Binds a throwaway socket of `type` to `a` (TCP with SO_REUSEADDR, as a
// listener would, so that connections left in TIME_WAIT do not count; never
// SO_REUSEPORT); the bind's errno, or 0.
int probe_bind(const Address& a, int type) {
    const int fd = ::socket(a.is_v6() ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno;
    }
    const int one = 1;
    if (type == SOCK_STREAM) {
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (a.is_v6()) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage ss{};
    const size_t len = a.to_sockaddr(&ss);
    const int e = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) == 0 ? 0 : errno;
    ::close(fd);
    return e;
}

}  // namespace

std::string check_addresses(const Config& c, bool taken_ok) {
    struct Listener {
        const std::vector<Address>* addrs;
        int type;
        const char* what;
    };
    const std::vector<Address> alternates = nat_extra_listeners(c);
    std::vector<Address> metrics;
    if (const auto m = Address::parse(c.metrics_listen)) {
        metrics.push_back(*m);
    }
    for (const Listener& l : {Listener{&c.listen, SOCK_DGRAM, "UDP listener"},
                              Listener{&alternates, SOCK_DGRAM, "RFC 5780 alternate listener"},
                              Listener{&c.listen_dtls, SOCK_DGRAM, "DTLS listener"},
                              Listener{&c.listen_tcp, SOCK_STREAM, "TCP listener"},
                              Listener{&c.listen_tls, SOCK_STREAM, "TLS listener"},
                              Listener{&metrics, SOCK_STREAM, "[metrics].listen"}}) {
        for (const Address& a : *l.addrs) {
            const int e = probe_bind(a, l.type);
            // Checking (taken_ok): a port the running relay holds, or one below
            // 1024 that this user may not bind (the service gets
            // CAP_NET_BIND_SERVICE; a check run by hand does not).
            if (taken_ok && (e == EADDRINUSE || (e == EACCES && a.port < 1024))) {
                continue;
            }
            if (e == EADDRINUSE) {
                return std::string(l.what) + " " + a.to_string() +
                       ": the port is in use by another process (another turn-relay? fix: stop it, or choose "
                       "another port)";
            } else if (e != 0) {
                return std::string(l.what) + " " + a.to_string() + ": " + std::strerror(e);
            }
        }
    }
    for (const Address& ip : c.relay_ips) {
        if (const int e = probe_bind(ip.with_port(0), SOCK_DGRAM); e != 0) {
            return "[server].relay_ips: cannot bind " + ip.ip_string() + ": " + std::strerror(e) +
                   (e == EADDRNOTAVAIL ? " (fix: an address of this host's interfaces; for a floating address "
                                         "that arrives later, set net.ipv4.ip_nonlocal_bind = 1 "
                                         "(net.ipv6.ip_nonlocal_bind for IPv6))"
                                       : "");
        }
    }
    return {};
}

EventLoop::EventLoop(Shared& shared, OffloadHook& offload, unsigned index)
    : shared_(shared), index_(index), io_(stats_), server_(shared, clock_, io_, offload, stats_) {
    io_.set_server(&server_);
}

EventLoop::~EventLoop() {
    stop();
    // The server goes before the I/O (member order); whatever the I/O closes
    // from here on (its destructor's last flush, the allocations' relays)
    // must not call back into it.
    io_.set_server(nullptr);
}

std::string EventLoop::bind_listeners(const TlsContexts* tls, StreamHandoffs* handoffs) {
    for (const auto& l : shared_.config.listen) {
        if (auto err = io_.add_listener(l); !err.empty()) {
            return err;
        }
    }
    for (const auto& l : nat_extra_listeners(shared_.config)) {  // RFC 5780 alternates
        if (auto err = io_.add_listener(l); !err.empty()) {
            return err;
        }
    }
    // TCP and TLS listeners on every loop too (SO_REUSEPORT spreads the
    // connections); an RFC 6062 data connection that lands on another loop
    // than its allocation's is handed over (io/stream_handoff.h).
    for (const auto& l : shared_.config.listen_tcp) {
        if (auto err = io_.add_stream_listener(shared_, l, nullptr); !err.empty()) {
            return err;
        }
    }
    for (const auto& l : shared_.config.listen_tls) {
        if (tls == nullptr) {
            return "TLS listener " + l.to_string() + " without a TLS context";
        }
        if (auto err = io_.add_stream_listener(shared_, l, tls); !err.empty()) {
            return err;
        }
    }
    for (const auto& l : shared_.config.listen_dtls) {
        if (auto err = io_.add_dtls_listener(shared_, l, tls); !err.empty()) {
            return err;
        }
    }
    if (handoffs != nullptr) {
        io_.set_stream_handoffs(handoffs, index_);
        server_.set_loop(index_, handoffs->loops());
    }
    return {};
}

size_t EventLoop::restore(const LoopSnapshot& s, bool client_paths) {
    auto& m = server_.allocations();
    size_t restored = 0;
    for (const auto& a : s.allocations) {
        // One that does not come back is logged by restore (allocation_not_restored).
        restored += m.restore(a, client_paths).empty() ? 1 : 0;
    }
    return restored;
}

void EventLoop::save_state_to(StateStore* store, uint32_t interval_ms, uint64_t first_journal) {
    store_ = store;
    save_interval_ms_ = interval_ms;
    server_.allocations().track_changes(store != nullptr);
    if (store != nullptr) {
        journal_ = std::make_unique<EndJournal>(*store, index_, first_journal);
        // Everything there is now (restored allocations included: they came
        // back before tracking started) goes into the first save; after that
        // only what changes. It covers the previous process's journals (what
        // they name was not restored).
        std::vector<SavedAllocation> all;
        server_.allocations().snapshot(all);
        store->submit(index_, std::move(all), {}, true, journal_->roll());
    }
}

// O(changes since the last save) on the loop's thread; the writer thread
// merges them into its copy of the loop's allocations and writes the file.
void EventLoop::save_state(uint64_t now_ms, bool final) {
    if (store_ == nullptr) {
        return;
    }
    // Every pass: the ends since the last one into the journal (one write).
    const auto& ended = server_.allocations().removed_since_take();
    if (journaled_ < ended.size()) {
        journal_->append(std::span(ended).subspan(journaled_), now_ms);
        journaled_ = ended.size();
    }
    if (!final && now_ms - last_save_ms_ < save_interval_ms_) {
        return;
    }
    last_save_ms_ = now_ms;
    std::vector<SavedAllocation> changed;
    std::vector<uint64_t> removed;
    server_.allocations().take_changes(changed, removed);
    journaled_ = 0;
    if (final) {
        // The last save has every allocation as it is now: what the control
        // plane relayed for each moves with every datagram, which the
        // changes do not track (between saves it is as of the last change).
        changed.clear();
        server_.allocations().snapshot(changed);
        store_->submit(index_, std::move(changed), {}, true, journal_->roll());
        return;
    }
    if (!changed.empty() || !removed.empty()) {
        // This save covers the journal written so far (its ids are in
        // `removed`); the file is closed, so that the writer may delete it,
        // at most once a minute (EndJournal::roll_due).
        const uint64_t covered = journal_->roll_due(now_ms) ? journal_->roll() : journal_->closed();
        store_->submit(index_, std::move(changed), std::move(removed), false, covered);
    }
}

void EventLoop::post(std::function<void(Server&)> task) {
    std::lock_guard<std::mutex> lock(tasks_m_);
    tasks_.push_back(std::move(task));
    has_tasks_.store(true, std::memory_order_release);
}

void EventLoop::set_siblings(std::vector<EventLoop*> loops) {
    server_.set_loop(index_, static_cast<unsigned>(loops.size()));
    server_.set_poster([loops = std::move(loops)](unsigned loop, std::function<void(Server&)> task) {
        if (loop >= loops.size()) {
            return false;
        }
        loops[loop]->post(std::move(task));
        return true;
    });
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
    io_.tick(window_start);  // connections accepted in the first poll need the time
    while (!stop_.load(std::memory_order_relaxed)) {
        // 100 ms = the wheel's tick; with traffic the loop runs far more often.
        io_.poll_once(100, &idle_us);
        server_.tick();
        if (has_tasks_.load(std::memory_order_acquire)) {
            std::vector<std::function<void(Server&)>> tasks;
            {
                std::lock_guard<std::mutex> lock(tasks_m_);
                tasks.swap(tasks_);
                has_tasks_.store(false, std::memory_order_relaxed);
            }
            for (auto& t : tasks) {
                t(server_);
            }
        }
        const uint64_t now = clock_.now_ms();
        io_.tick(now);
        io_.flush();
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
