#include "offload/ipc_server.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <string>

#include "core/event_log.h"

namespace turn::cp {

namespace {

uint64_t now_ms() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

// The relayed address that serves a peer of this family (family 0 if none).
ipc::WireAddress relayed_for(const OffloadAllocation& a, const Address& peer) {
    const Address& r = a.relayed[peer.is_v6() ? 1 : 0];
    return r.family == Family::kNone ? ipc::WireAddress{} : ipc::WireAddress::from(r);
}

// The Permission*/Channel* Add/Del message M for `peer` of `a`; nullopt when
// `a` has no relayed address of the peer's family.
template <typename M>
std::optional<M> peer_message(const OffloadAllocation& a, const Address& peer, uint16_t channel = 0) {
    const ipc::WireAddress relayed = relayed_for(a, peer);
    if (relayed.family == 0) {
        return std::nullopt;
    }
    M m{};
    m.alloc_id = a.id;
    m.relayed = relayed;
    m.peer = ipc::WireAddress::from(peer);
    if constexpr (requires { m.channel; }) {
        m.channel = channel;
    }
    return m;
}

uint64_t delta(uint64_t cur, uint64_t last) { return cur >= last ? cur - last : cur; }

// The same addresses in both (the headers differ: each side numbers its own
// messages).
bool same_ips(const ipc::ExternalIps& a, const ipc::ExternalIps& b) {
    auto same = [](const ipc::WireAddress& x, const ipc::WireAddress& y) { return std::memcmp(&x, &y, sizeof x) == 0; };
    return same(a.external_v4, b.external_v4) && same(a.relay_v4, b.relay_v4) && same(a.external_v6, b.external_v6) &&
           same(a.relay_v6, b.relay_v6);
}

// "RELAY as EXTERNAL" for each family of `m`, for log lines.
std::string describe(const ipc::ExternalIps& m) {
    const std::pair<const ipc::WireAddress&, const ipc::WireAddress&> pairs[] = {{m.relay_v4, m.external_v4},
                                                                                 {m.relay_v6, m.external_v6}};
    std::string out;
    for (const auto& [relay, ext] : pairs) {
        if (relay.family != 0) {
            out += (out.empty() ? "" : ",") + relay.to().ip_string() + " as " + ext.to().ip_string();
        }
    }
    return out;
}

}  // namespace

bool DataplaneCounters::set_port(const ipc::PortCounters& c) {
    const auto role = static_cast<size_t>(c.role);
    if (role >= ipc::kPortRoles) {
        return false;
    }
    ipc::PortCounters p = c;
    const size_t len = strnlen(p.name, sizeof p.name - 1);
    std::memset(p.name + len, 0, sizeof p.name - len);
    for (size_t i = 0; i < len; ++i) {
        const auto b = static_cast<unsigned char>(p.name[i]);
        if (b < 0x20 || b > 0x7e) {
            p.name[i] = '?';
        }
    }
    std::lock_guard lk(ports_mu);
    ports_[role] = Port{true, p};
    return true;
}

IpcServer::IpcServer(std::string path, uint32_t counters_interval_ms, size_t max_backlog)
    : path_(std::move(path)),
      counters_interval_ms_(counters_interval_ms),
      max_backlog_(max_backlog) {
    // Random start: a restarted control plane never reuses the generation the
    // dataplane's entries carry from the previous one (it would skip the sweep).
    std::random_device rd;
    generation_ = (static_cast<uint64_t>(rd()) << 32) | (rd() & 0xFFFF0000u);
}

void IpcServer::set_external_ips(const Config& c) {
    external_ips_.clear();
    ipc::ExternalIps m{};
    for (const Family f : {Family::kIPv4, Family::kIPv6}) {
        if (const auto p = c.nat_pair(f)) {
            const Address relay = p->first.normalised().with_port(0);
            const Address ext = p->second.normalised().with_port(0);
            external_ips_.push_back(ext);
            (f == Family::kIPv6 ? m.external_v6 : m.external_v4) = ipc::WireAddress::from(ext);
            (f == Family::kIPv6 ? m.relay_v6 : m.relay_v4) = ipc::WireAddress::from(relay);
        }
    }
    // valid() also refuses what Config refuses (an unspecified or equal
    // pair): then nothing is sent, and the peers on the external IPs stay
    // withheld, i.e. on the socket path, which serves them whatever the
    // dataplane does.
    external_msg_.reset();
    if (!external_ips_.empty() && ipc::valid(m)) {
        external_msg_ = m;
    }
}

IpcServer::~IpcServer() {
    stop();
    if (wake_fd_ >= 0) {
        ::close(wake_fd_);
    }
}

std::string IpcServer::check_path(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
        return "[dataplane].socket: " + path + " exists and is not a socket";
    }
    return {};
}

std::string IpcServer::start() {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path_.empty() || path_.size() >= sizeof a.sun_path) {
        return "[dataplane].socket: \"" + path_ + "\" must be 1.." + std::to_string(sizeof a.sun_path - 1) +
               " bytes";
    }
    std::memcpy(a.sun_path, path_.data(), path_.size());
    // The parent directory (e.g. /run/turnrelay) may not exist after boot.
    if (const auto slash = path_.rfind('/'); slash != std::string::npos && slash > 0) {
        ::mkdir(path_.substr(0, slash).c_str(), 0750);
    }
    // A socket file left by a previous run would make bind fail; remove it,
    // but never anything that is not a socket.
    if (auto e = check_path(path_); !e.empty()) {
        return e;
    }
    ::unlink(path_.c_str());
    listen_fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 4) != 0) {
        const std::string e = std::strerror(errno);
        stop();
        return "[dataplane].socket: cannot listen on " + path_ + ": " + e;
    }
    ::chmod(path_.c_str(), 0660);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
        const std::string e = std::strerror(errno);
        stop();
        return "[dataplane].socket: eventfd: " + e;
    }
    stop_.store(false);
    thread_ = std::thread([this] { run(); });
    log_event("dataplane_listening", {{"socket", path_}});
    return {};
}

void IpcServer::stop() {
    stop_.store(true);
    if (thread_.joinable()) {
        wake();
        thread_.join();
    }
    if (conn_fd_ >= 0) {
        ::close(conn_fd_);
        conn_fd_ = -1;
    }
    if (listen_fd_ >= 0) {
        ::close(listen_fd_);
        listen_fd_ = -1;
        ::unlink(path_.c_str());
    }
    // wake_fd_ stays open until destruction: a loop thread may still call wake().
    {
        std::lock_guard lk(mu_);
        in_sync_ = false;
        external_applied_ = false;
        outbox_.clear();
    }
    log_ended();
    counters_.connected.store(false);
    counters_.external_ips_applied.store(false);
}

void IpcServer::wake() {
    if (wake_fd_ >= 0) {
        const uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
    }
}

template <typename M>
IpcServer::Buf IpcServer::encode_buf(M& m) {
    static_assert(sizeof(M) <= sizeof(Buf::bytes));
    const auto bytes = ipc::encode(m, seq_.fetch_add(1, std::memory_order_relaxed) + 1);
    Buf b;
    b.len = static_cast<uint32_t>(bytes.size());
    std::memcpy(b.bytes.data(), bytes.data(), bytes.size());
    return b;
}

template <typename M>
bool IpcServer::push_locked(M& m) {
    if (in_sync_) {
        outbox_.push_back(encode_buf(m));
    }
    return in_sync_;
}

template <typename F>
void IpcServer::change_locked(F&& change) {
    bool woke = false;
    {
        std::lock_guard lk(mu_);
        woke = change();
    }
    if (woke) {
        wake();
    }
}

// ---- OffloadHook: event-loop threads --------------------------------------

bool IpcServer::added_locked(const OffloadAllocation& a) {
    Mirrored& m = mirror_[a.id];
    m = Mirrored{};
    m.a = a;
    if (!in_sync_) {
        return false;
    }
    uint64_t adds = 0;
    std::deque<Buf> msgs;
    append_state(m, msgs, adds);
    for (auto& b : msgs) {
        outbox_.push_back(std::move(b));
    }
    return true;
}

bool IpcServer::removed_locked(uint64_t id) {
    mirror_.erase(id);
    ipc::AllocationDel d{};
    d.alloc_id = id;
    if (auto e = ended_.find(id); e != ended_.end()) {
        // The next CountersRequest goes out after this Del (run() queues
        // the outbox ahead of it): its answer has the final totals.
        e->second.due = requests_ + 1;
    }
    return push_locked(d);
}

void IpcServer::allocation_added(const OffloadAllocation& a) {
    change_locked([&] { return added_locked(a); });
}

void IpcServer::allocation_removed(uint64_t id) {
    change_locked([&] { return removed_locked(id); });
}

void IpcServer::allocation_replaced(const OffloadAllocation& a) {
    change_locked([&] {
        const bool del = removed_locked(a.id);
        return added_locked(a) || del;
    });
}

void IpcServer::permission_added(uint64_t id, const Address& peer_ip) {
    change_locked([&] {
        auto it = mirror_.find(id);
        if (it == mirror_.end()) {
            return false;
        }
        it->second.permissions.insert(peer_ip);
        if (withheld_locked(peer_ip)) {
            return false;  // sent when the dataplane confirms the external IPs
        }
        auto msg = peer_message<ipc::PermissionAdd>(it->second.a, peer_ip, 0);
        return msg && push_locked(*msg);
    });
}

void IpcServer::permission_removed(uint64_t id, const Address& peer_ip) {
    change_locked([&] {
        auto it = mirror_.find(id);
        if (it == mirror_.end()) {
            return false;
        }
        it->second.permissions.erase(peer_ip);
        if (withheld_locked(peer_ip)) {
            return false;  // never sent on this connection
        }
        auto msg = peer_message<ipc::PermissionDel>(it->second.a, peer_ip, 0);
        return msg && push_locked(*msg);
    });
}

void IpcServer::channel_added(uint64_t id, uint16_t channel, const Address& peer) {
    change_locked([&] {
        auto it = mirror_.find(id);
        if (it == mirror_.end()) {
            return false;
        }
        it->second.channels[channel] = peer;
        if (withheld_locked(peer)) {
            return false;  // sent when the dataplane confirms the external IPs
        }
        auto msg = peer_message<ipc::ChannelAdd>(it->second.a, peer, channel);
        return msg && push_locked(*msg);
    });
}

void IpcServer::channel_removed(uint64_t id, uint16_t channel, const Address& peer) {
    change_locked([&] {
        auto it = mirror_.find(id);
        if (it == mirror_.end()) {
            return false;
        }
        it->second.channels.erase(channel);
        if (withheld_locked(peer)) {
            return false;  // never sent on this connection
        }
        auto msg = peer_message<ipc::ChannelDel>(it->second.a, peer, channel);
        return msg && push_locked(*msg);
    });
}

bool IpcServer::on_external_ip(const Address& peer) const {
    const Address ip = peer.normalised();
    return std::any_of(external_ips_.begin(), external_ips_.end(), [&](const Address& e) { return e.same_ip(ip); });
}

void IpcServer::append_state(const Mirrored& m, std::deque<Buf>& out, uint64_t& adds) {
    const OffloadAllocation& a = m.a;
    ipc::AllocationAdd add{};
    add.alloc_id = a.id;
    add.client = ipc::WireAddress::from(a.five_tuple.client);
    add.listen = ipc::WireAddress::from(a.five_tuple.server);
    add.relayed_v4 = a.relayed[0].family == Family::kNone ? ipc::WireAddress{} : ipc::WireAddress::from(a.relayed[0]);
    add.relayed_v6 = a.relayed[1].family == Family::kNone ? ipc::WireAddress{} : ipc::WireAddress::from(a.relayed[1]);
    add.bandwidth_bps = a.bandwidth_bps;
    out.push_back(encode_buf(add));
    ++adds;
    if (a.bandwidth_bps != 0) {
        ipc::LimitSet l{};
        l.alloc_id = a.id;
        l.bandwidth_bps = a.bandwidth_bps;
        out.push_back(encode_buf(l));
    }
    peer_adds(m, [&](const Address& peer) { return !withheld_locked(peer); },
              [&](auto& msg) {
                  out.push_back(encode_buf(msg));
                  ++adds;
              });
}

template <typename Pick, typename Emit>
void IpcServer::peer_adds(const Mirrored& m, Pick&& pick, Emit&& emit) {
    for (const Address& peer : m.permissions) {
        if (pick(peer)) {
            if (auto p = peer_message<ipc::PermissionAdd>(m.a, peer)) {
                emit(*p);
            }
        }
    }
    for (const auto& [ch, peer] : m.channels) {
        if (pick(peer)) {
            if (auto c = peer_message<ipc::ChannelAdd>(m.a, peer, ch)) {
                emit(*c);
            }
        }
    }
}

// ---- IPC thread -----------------------------------------------------------

void IpcServer::run() {
    pthread_setname_np(pthread_self(), "turn-dp-ipc");
    uint64_t next_counters = now_ms() + counters_interval_ms_;
    while (!stop_.load(std::memory_order_relaxed)) {
        pollfd fds[3];
        nfds_t n = 0;
        fds[n++] = pollfd{listen_fd_, POLLIN, 0};
        fds[n++] = pollfd{wake_fd_, POLLIN, 0};
        if (conn_fd_ >= 0) {
            fds[n++] = pollfd{conn_fd_, static_cast<short>(POLLIN | (pending_.empty() ? 0 : POLLOUT)), 0};
        }
        const uint64_t now = now_ms();
        const int timeout = next_counters > now ? static_cast<int>(std::min<uint64_t>(next_counters - now, 100)) : 0;
        if (::poll(fds, n, timeout) < 0 && errno != EINTR) {
            break;
        }
        if ((fds[1].revents & POLLIN) != 0) {
            uint64_t v = 0;
            (void)!::read(wake_fd_, &v, sizeof v);
        }
        if (n == 3 && fds[2].revents != 0) {
            // Read everything queued; one datagram per message.
            uint8_t buf[ipc::kMaxMessage];
            while (conn_fd_ >= 0) {
                const ssize_t r = ::recv(conn_fd_, buf, sizeof buf, MSG_DONTWAIT);
                if (r > 0) {
                    on_message({buf, static_cast<size_t>(r)});
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    break;
                }
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                close_conn(Disconnect::kClosed, r == 0 ? "closed by the dataplane" : std::strerror(errno));
            }
        }
        if ((fds[0].revents & POLLIN) != 0) {
            accept_one();
        }
        if (conn_fd_ >= 0) {
            {
                // The outbox first, then the request, in one critical
                // section: a Del queued before the request precedes it.
                std::lock_guard lk(mu_);
                for (auto& b : outbox_) {
                    state_left_ += b.state ? 1 : 0;
                    pending_.push_back(std::move(b));
                }
                outbox_.clear();
                if (now_ms() >= next_counters) {
                    next_counters = now_ms() + counters_interval_ms_;
                    if (in_sync_) {
                        ++requests_;
                        ipc::CountersRequest r{};
                        pending_.push_back(encode_buf(r));
                    }
                }
            }
            log_overdue(now_ms());
            flush();
        } else if (now_ms() >= next_counters) {
            next_counters = now_ms() + counters_interval_ms_;
        }
    }
}

void IpcServer::accept_one() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    if (conn_fd_ >= 0) {
        close_conn(Disconnect::kReplaced, "replaced by a new connection");
    }
    // Room for a burst of updates (and most resyncs) without waiting.
    const int sndbuf = kSendBuffer;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    conn_fd_ = fd;
    bad_logged_.clear();
    log_event("dataplane_connected", {{"socket", path_}});
}

void IpcServer::close_conn(Disconnect kind, const char* why) {
    if (conn_fd_ < 0) {
        return;
    }
    ::close(conn_fd_);
    conn_fd_ = -1;
    {
        std::lock_guard lk(mu_);
        in_sync_ = false;
        external_applied_ = false;  // a new connection confirms them anew
        outbox_.clear();
    }
    external_sent_ = false;
    log_ended();  // their finals will not come on this link
    pending_.clear();
    resync_left_ = 0;
    state_left_ = 0;
    counters_.connected.store(false);
    counters_.settings_applied.store(false);
    counters_.external_ips_applied.store(false);
    counters_.disconnects_by[static_cast<size_t>(kind)].fetch_add(1);
    log_event(LogLevel::kWarn, "dataplane_disconnected", {{"reason", why}});
}

void IpcServer::on_message(std::span<const uint8_t> d) {
    const auto h = ipc::peek(d);
    if (!h) {
        bad_message(-1, d.size());
        return;
    }
    switch (h->type) {
    case ipc::MsgType::kHello:
        if (auto m = ipc::decode<ipc::Hello>(d)) {
            on_hello(*m);
            return;
        }
        break;
    case ipc::MsgType::kCountersReport:
        if (auto m = ipc::decode<ipc::CountersReport>(d)) {
            on_counters(*m);
            return;
        }
        break;
    case ipc::MsgType::kWorkerCounters:
        if (auto m = ipc::decode<ipc::WorkerCounters>(d); m && m->worker < dp_workers_) {
            counters_.set_worker(*m);
            return;
        }
        break;
    case ipc::MsgType::kSettings:  // the dataplane applied them
        if (auto m = ipc::decode<ipc::Settings>(d)) {
            if (m->tos_keep == settings_.tos_keep && m->tos_set == settings_.tos_set) {
                counters_.settings_applied.store(true);
            }
            return;
        }
        break;
    case ipc::MsgType::kExternalIps:  // the dataplane applied them
        // Only the ExternalIps this connection was sent: any other is the
        // dataplane's mistake, and taking it would offload peers it may not
        // translate.
        if (auto m = ipc::decode<ipc::ExternalIps>(d); m && external_sent_ && same_ips(*m, *external_msg_)) {
            on_external_ips_applied();
            return;
        }
        break;
    case ipc::MsgType::kPortCounters:
        if (auto m = ipc::decode<ipc::PortCounters>(d); m && counters_.set_port(*m)) {
            return;
        }
        break;
    case ipc::MsgType::kNextHopCounters:
        if (auto m = ipc::decode<ipc::NextHopCounters>(d)) {
            counters_.set_nexthop(*m);
            return;
        }
        break;
    default: break;
    }
    bad_message(static_cast<int>(h->type), d.size());
}

void IpcServer::bad_message(int type, size_t bytes) {
    counters_.bad_messages.fetch_add(1, std::memory_order_relaxed);
    if (!bad_logged_.insert(type).second) {
        return;
    }
    if (type < 0) {
        log_event(LogLevel::kWarn, "dataplane_bad_message",
                  {{"bytes", std::to_string(bytes)}, {"note", "logged once per connection"}});
    } else {
        log_event(LogLevel::kWarn, "dataplane_bad_message",
                  {{"type", std::to_string(type)},
                   {"bytes", std::to_string(bytes)},
                   {"note", "logged once per type and connection, counted in turn_dataplane_bad_messages_total"}});
    }
}

void IpcServer::on_hello(const ipc::Hello& h) {
    std::vector<Ended> waiting;  // requests are counted anew from this resync on
    if (h.boot_id != boot_id_) {
        last_.clear();  // a new dataplane process: its counters start at zero
        counters_.clear_workers();
        counters_.clear_ports();
        counters_.clear_nexthop();
        boot_id_ = h.boot_id;
        std::lock_guard lk(mu_);
        carried_ = usage_;  // all of it counted by the processes before this one
    }
    dp_workers_ = std::min(h.workers, kMaxDataplaneWorkers);
    if (!first_boot_) {
        first_boot_ = h.boot_id;
    }
    ++generation_;
    uint64_t adds = 0;
    size_t allocations = 0;
    {
        std::lock_guard lk(mu_);
        // Whatever was queued is superseded by the snapshot.
        outbox_.clear();
        pending_.clear();
        ipc::Settings st = settings_;
        pending_.push_back(encode_buf(st));
        counters_.settings_applied.store(false);
        settings_warned_ = false;
        // Withheld again until this session's echo: the dataplane may be
        // another process than the one that confirmed them before.
        external_applied_ = false;
        counters_.external_ips_applied.store(false);
        external_warned_ = false;
        external_sent_ = external_msg_.has_value();
        if (external_msg_) {
            ipc::ExternalIps x = *external_msg_;
            pending_.push_back(encode_buf(x));
        }
        ipc::ResyncBegin b{};
        b.generation = generation_;
        pending_.push_back(encode_buf(b));
        for (const auto& [id, m] : mirror_) {
            (void)id;
            append_state(m, pending_, adds);
        }
        allocations = mirror_.size();
        ipc::ResyncEnd e{};
        e.generation = generation_;
        e.entries = adds;
        pending_.push_back(encode_buf(e));
        in_sync_ = true;
        requests_ = 0;
        answered_ = 0;
        take_ended_locked([](const Ended&) { return true; }, waiting);
    }
    // All of it is the connection's state: none of it counts against the
    // backlog bound while it waits.
    for (auto& b : pending_) {
        b.state = true;
    }
    state_left_ = pending_.size();
    // In sync once the socket has taken the whole resync (flush): until
    // then the dataplane lacks part of the state.
    resync_left_ = pending_.size();
    counters_.connected.store(false);
    counters_.resyncs.fetch_add(1);
    log_event("dataplane_resync", {{"pid", std::to_string(h.pid)},
                                   {"workers", std::to_string(h.workers)},
                                   {"generation", std::to_string(generation_)},
                                   {"allocations", std::to_string(allocations)},
                                   {"entries", std::to_string(adds)}});
    log_ends(waiting);
}

void IpcServer::on_external_ips_applied() {
    uint64_t sent = 0;
    bool first = false;
    // Under mu_, into the outbox, like the loops' changes: the Adds follow
    // every change queued before them and precede every change after, and
    // they are built from the mirror as it is now, so an allocation removed
    // or re-announced or a permission deleted since the snapshot is not
    // installed (nothing of it on an external IP was sent). A walk of the
    // whole mirror under the lock, as a resync's, once per connection.
    change_locked([&] {
        if (external_applied_) {
            return false;  // an echo repeated: all was sent at the first
        }
        first = true;
        external_applied_ = true;
        for (const auto& [id, m] : mirror_) {
            (void)id;
            peer_adds(m, [&](const Address& peer) { return on_external_ip(peer); },
                      [&](auto& msg) {
                          if (push_locked(msg)) {
                              outbox_.back().state = true;
                              sent++;
                          }
                      });
        }
        return sent != 0;
    });
    counters_.external_ips_applied.store(true);
    if (first) {
        log_event("dataplane_external_ips_applied",
                  {{"relay_ips", describe(*external_msg_)}, {"entries", std::to_string(sent)}});
    }
}

bool IpcServer::defer_end(uint64_t id, EndLine& line, RelayUsage& offloaded) {
    std::lock_guard lk(mu_);
    // Its usage leaves usage_ either way, to the caller or to ended_.
    RelayUsage fast;
    if (auto u = usage_.find(id); u != usage_.end()) {
        fast = u->second;
        usage_.erase(u);
    }
    carried_.erase(id);
    auto m = mirror_.find(id);
    if (!in_sync_ || m == mirror_.end() || ended_.size() >= kMaxEnded) {
        if (m != mirror_.end()) {
            m->second.ending = true;  // until allocation_removed: reports add nothing back
        }
        offloaded = fast;
        return false;
    }
    // due: set again by allocation_removed, under the lock that queues the Del.
    ended_[id] = Ended{std::move(line), fast, requests_ + 2, now_ms() + 3 * uint64_t{counters_interval_ms_}};
    return true;
}

template <typename P>
void IpcServer::take_ended_locked(P&& pick, std::vector<Ended>& out) {
    for (auto e = ended_.begin(); e != ended_.end();) {
        if (pick(e->second)) {
            out.push_back(std::move(e->second));
            e = ended_.erase(e);
        } else {
            ++e;
        }
    }
}

void IpcServer::log_ends(const std::vector<Ended>& lines) {
    for (const Ended& e : lines) {
        log_end(e.line, e.fast);
    }
}

void IpcServer::log_ended() {
    std::vector<Ended> all;
    {
        std::lock_guard lk(mu_);
        take_ended_locked([](const Ended&) { return true; }, all);
    }
    log_ends(all);
}

void IpcServer::log_overdue(uint64_t now) {
    std::vector<Ended> late;
    {
        std::lock_guard lk(mu_);
        if (ended_.empty() || now < next_deadline_check_) {
            return;
        }
        next_deadline_check_ = now + counters_interval_ms_;
        // A dataplane that does not answer.
        take_ended_locked([now](const Ended& e) { return now >= e.deadline_ms; }, late);
    }
    log_ends(late);
}

RelayUsage IpcServer::offloaded_usage(uint64_t id) const {
    std::lock_guard lk(mu_);
    auto it = usage_.find(id);
    return it == usage_.end() ? RelayUsage{} : it->second;
}

RelayUsage IpcServer::offloaded_carry(uint64_t id) const {
    std::lock_guard lk(mu_);
    auto it = carried_.find(id);
    return it == carried_.end() ? RelayUsage{} : it->second;
}

void IpcServer::on_counters(const ipc::CountersReport& r) {
    constexpr auto kToPeer = static_cast<size_t>(Direction::kClientToPeer);
    constexpr auto kToClient = static_cast<size_t>(Direction::kPeerToClient);
    const uint32_t n = std::min<uint32_t>(r.count, ipc::CountersReport::kMaxEntries);
    std::array<RelayUsage, ipc::CountersReport::kMaxEntries> d;
    std::vector<Ended> ready;  // end lines complete with this chunk
    for (uint32_t i = 0; i < n; ++i) {
        const ipc::AllocationCounters& c = r.entries[i];
        auto [it, fresh] = last_.try_emplace(c.alloc_id);  // a final of an install never seen live: all of it is new
        Last& l = it->second;
        d[i] = {delta(c.to_peer_packets, l.c.to_peer_packets), delta(c.to_peer_bytes, l.c.to_peer_bytes),
                delta(c.to_client_packets, l.c.to_client_packets), delta(c.to_client_bytes, l.c.to_client_bytes)};
        // A previous process's allocation, first seen in the dataplane that
        // process reported from: the metrics have this count already
        // (set_inherited_below); its usage takes it whole, below.
        const bool inherited =
            !first_report_done_ && fresh && c.alloc_id < inherited_below_ && first_boot_ == boot_id_;
        if (!inherited) {
            counters_.packets[kToPeer].fetch_add(d[i].packets_to_peer, std::memory_order_relaxed);
            counters_.bytes[kToPeer].fetch_add(d[i].bytes_to_peer, std::memory_order_relaxed);
            counters_.packets[kToClient].fetch_add(d[i].packets_to_client, std::memory_order_relaxed);
            counters_.bytes[kToClient].fetch_add(d[i].bytes_to_client, std::memory_order_relaxed);
            counters_.dropped.fetch_add(delta(c.dropped_packets, l.c.dropped_packets), std::memory_order_relaxed);
        }
        if (r.finals != 0) {
            last_.erase(c.alloc_id);  // that install is gone; a live entry of the id is another one
            continue;
        }
        l.c = c;
        l.seen = true;
    }
    {
        // Per allocation, for its end log line and turn-ctl (one lock per
        // chunk of a report). An allocation the control plane has removed is
        // not counted any more: its end is logged already.
        std::lock_guard lk(mu_);
        // A final belongs to a removed install, whose end line may be waiting
        // for it, or to an earlier allocation under a reused id: never to a
        // live one.
        for (uint32_t i = 0; i < n; ++i) {
            const uint64_t id = r.entries[i].alloc_id;
            if (r.finals == 0) {
                if (d[i] == RelayUsage{}) {
                    continue;
                }
                if (auto e = ended_.find(id); e != ended_.end()) {
                    e->second.fast += d[i];  // reported live once more before its Del took effect
                } else if (auto m = mirror_.find(id); m != mirror_.end() && !m->second.ending) {
                    usage_[id] += d[i];
                }
            } else if (auto e = ended_.find(id); e != ended_.end() && !mirror_.contains(id)) {
                e->second.fast += d[i];
                ready.push_back(std::move(e->second));
                ended_.erase(e);
            }
        }
        if (r.last != 0) {
            ++answered_;
            // No final came (none installed, or lost).
            take_ended_locked([this](const Ended& e) { return e.due <= answered_; }, ready);
        }
    }
    log_ends(ready);
    if (r.last != 0) {
        first_report_done_ = true;
        // Allocations absent from a whole report are gone from the dataplane.
        std::erase_if(last_, [](auto& kv) { return !kv.second.seen; });
        for (auto& [id, l] : last_) {
            (void)id;
            l.seen = false;
        }
        counters_.reports.fetch_add(1);
        // By the first report the answer to this connection's Settings has
        // long come (the dataplane answers them at once, before the resync).
        // Without it a fixed [server].dscp does not hold on the fast path.
        if (!counters_.settings_applied.load() && !settings_warned_ && settings_.tos_keep != 0xFF) {
            settings_warned_ = true;
            log_event(LogLevel::kWarn, "dataplane_ignores_settings",
                      {{"dscp", std::to_string(settings_.tos_set >> 2)},
                       {"fix", "upgrade turn-dataplane: an older one keeps the received DSCP on the fast path"}});
        }
        // The same for this connection's ExternalIps: without the echo,
        // relay-to-relay traffic between external-IP peers stays on the
        // socket path (correct, not fast).
        if (external_sent_ && !counters_.external_ips_applied.load() && !external_warned_) {
            external_warned_ = true;
            log_event(LogLevel::kWarn, "dataplane_ignores_external_ips",
                      {{"relay_ips", describe(*external_msg_)},
                       {"fix", "upgrade turn-dataplane if it predates external IPs, or restart it if it has seen "
                               "four other external IP pairs since it started (ipc_table_full in its counters); "
                               "until it confirms them, relay-to-relay traffic between external-IP peers takes "
                               "the socket path"}});
        }
    }
}

bool IpcServer::flush() {
    while (!pending_.empty() && conn_fd_ >= 0) {
        const Buf& b = pending_.front();
        const ssize_t r = ::send(conn_fd_, b.bytes.data(), b.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0) {
            state_left_ -= b.state ? 1 : 0;
            pending_.pop_front();
            if (resync_left_ != 0 && --resync_left_ == 0) {
                counters_.connected.store(true);  // the resync's ResyncEnd has gone
            }
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;  // POLLOUT resumes
        }
        if (errno == EINTR) {
            continue;
        }
        close_conn(Disconnect::kSendError, std::strerror(errno));
        return false;
    }
    // Counted once the socket has taken what it can, so that what counts is
    // what the dataplane has not read, not a burst of changes that came
    // between two wakes of this thread.
    if (pending_.size() > state_left_ && pending_.size() - state_left_ > max_backlog_) {
        close_conn(Disconnect::kBacklogFull, "backlog full (dataplane not reading)");
        return false;
    }
    return true;
}

}  // namespace turn::cp
