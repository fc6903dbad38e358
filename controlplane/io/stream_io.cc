#include "io/stream_io.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/event_log.h"
#include "core/server.h"
#include "net/proxy_header.h"
#include "turn/stream_framing.h"

namespace turn::cp {

namespace {

constexpr uint64_t kListenerBit = 1ull << 61;
constexpr uint64_t kRelayBit = 1ull << 60;        // with kListenerBit: an RFC 6062 relay listener
constexpr uint64_t kInboxBit = 1ull << 59;        // with kListenerBit: connections handed over by other loops
constexpr size_t kPeerPending = 64 * 1024;        // a peer's bytes kept before its ConnectionBind
// A Connect's outgoing connection: RFC 6062 section 5.2 says at least 30 s
// (the kernel's SYN retries at ~1, 3, 7 and 15 s all fit).
constexpr uint64_t kConnectTimeoutMs = 30'000;
constexpr uint32_t kIndexMask = (1u << 24) - 1;
constexpr size_t kReadSize = 64 * 1024;
constexpr int kReadsPerEvent = 8;     // then other connections get their turn
constexpr int kAcceptsPerEvent = 64;

// A non-blocking TCP socket bound to `local`, with SO_REUSEADDR and
// SO_REUSEPORT (each event loop's listeners; an RFC 6062 relayed listener and
// the outgoing connections bound to the same address, which Linux allows only
// so) and IPv6-only for IPv6; -1 with errno set on failure.
int bound_tcp_socket(const Address& local) {
    const int fd = ::socket(local.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (local.is_v6()) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage ss{};
    const size_t len = local.to_sockaddr(&ss);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
        const int e = errno;
        ::close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

// Whether no other socket holds TCP address `local`: a bind without
// SO_REUSEPORT (SO_REUSEADDR only, so that connections in TIME_WAIT do not
// count). A relayed listener takes SO_REUSEPORT (bound_tcp_socket), which
// would let it share a port another process of the same user listens on
// with SO_REUSEPORT too, the kernel then splitting that port's incoming
// connections between them: so the port is probed first, and one held is
// skipped as a UDP relayed port held elsewhere is (found by a review).
bool tcp_port_free(const Address& local) {
    const int fd = ::socket(local.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return true;  // the real bind below reports what is wrong
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (local.is_v6()) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage ss{};
    const size_t len = local.to_sockaddr(&ss);
    const bool in_use =
        ::bind(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0 && errno == EADDRINUSE;
    ::close(fd);
    return !in_use;
}

void set_nodelay(int fd) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

StreamIo::StreamIo(Shared& shared, Stats& stats, int epoll_fd)
    : shared_(shared), stats_(stats), epoll_fd_(epoll_fd), rx_(kReadSize) {}

StreamIo::~StreamIo() {
    server_ = nullptr;  // the server is gone first (EventLoop's member order): nobody to tell
    for (uint32_t i = 0; i < conns_.size(); ++i) {
        if (conns_[i] && conns_[i]->fd >= 0) {
            if (conns_[i]->role == Role::kPeer) {
                close_peer(i, false);
            } else {
                close(i, ConnClose::kShutdown, false);
            }
        }
    }
    for (auto& l : listeners_) {
        ::close(l.fd);
    }
    for (auto& r : tcp_relays_) {
        if (r.fd >= 0) {
            ::close(r.fd);
        }
    }
}

std::string StreamIo::add_listener(const Address& local, const TlsContexts* tls) {
    const std::string what = std::string(tls != nullptr ? "TLS" : "TCP") + " on " + local.to_string();
    const int fd = bound_tcp_socket(local);
    if (fd < 0 || ::listen(fd, 1024) != 0) {
        const std::string e = std::strerror(errno);
        if (fd >= 0) {
            ::close(fd);
        }
        return "cannot listen for " + what + ": " + e;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTag | kListenerBit | listeners_.size();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    listeners_.push_back(Listener{fd, local, tls, shared_.config.proxy_protocol_on(local)});
    return {};
}

void StreamIo::on_event(uint64_t t, uint32_t events) {
    if ((t & kListenerBit) != 0) {
        const size_t i = t & kIndexMask;
        if ((t & kInboxBit) != 0) {
            adopt_all();
        } else if ((t & kRelayBit) != 0) {
            if (i < tcp_relays_.size() && tcp_relays_[i].fd >= 0) {
                accept_peers(static_cast<uint32_t>(i));
            }
        } else if (i < listeners_.size()) {
            accept_all(listeners_[i]);
        }
        return;
    }
    const uint32_t idx = static_cast<uint32_t>(t & kIndexMask);
    // The connection may have been closed (and its slot reused) by an
    // earlier event of the same batch.
    if (idx >= conns_.size() || conns_[idx]->fd < 0 || tag(idx) != t) {
        return;
    }
    Conn& c = *conns_[idx];
    // A pipe's socket reporting an error or a hang-up (both reported whatever
    // the event mask, level-triggered: left as they are they would spin the
    // loop). An error, or a hang-up before this side was sent its FIN, is a
    // reset: both sides close at once. A hang-up after it was sent its FIN
    // means the remote ended too: what is left to read is read (unless the
    // partner's queue is full, see `paused`), and once nothing is left to read
    // the socket leaves the epoll set until the pipe is done (pipe_done).
    if (c.role != Role::kClient && !c.connecting && (events & (EPOLLERR | EPOLLHUP)) != 0) {
        if ((events & EPOLLERR) != 0 || !c.fin_sent) {
            close_any(idx, ConnClose::kClient);
            return;
        }
        if (!c.eof && !c.paused) {
            read(idx);  // the data before the FIN, then the FIN (half_close)
        }
        if (conns_[idx]->fd >= 0 && tag(idx) == t && (c.eof || c.paused) && !c.parked) {
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
            c.parked = true;  // back in the set when unpaused (update_events), if there is more to read
        }
        return;
    }
    if (c.connecting) {
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
            int err = 0;
            socklen_t l = sizeof err;
            ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &l);
            connect_done(idx, err == 0);
        }
        return;
    }
    if ((events & EPOLLOUT) != 0) {
        write(idx);
        if (c.fd < 0) {
            return;
        }
    }
    // A TLS handshake that waited to write goes on from read() too.
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 || (c.ssl != nullptr && !c.handshake_done)) {
        read(idx);
    }
}

void StreamIo::accept_all(Listener& l) {
    for (int k = 0; k < kAcceptsPerEvent; ++k) {
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        const int fd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            pause_on_exhaustion(l.fd, kTag | kListenerBit | static_cast<uint64_t>(&l - listeners_.data()));
            return;  // EAGAIN, or an error of that one connection (ECONNABORTED ...)
        }
        const size_t kd = l.tls != nullptr ? 1 : 0;
        stats_.connections_accepted[kd].add();
        auto client = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
        if (client && l.proxied) {
            // Only the proxies may speak here; the per-source limits wait for
            // the client their header names (read_proxy_header).
            const Address from = client->normalised();
            const auto& trusted = shared_.config.tcp_proxy_protocol_from;
            if (std::none_of(trusted.begin(), trusted.end(), [&](const Prefix& p) { return p.contains(from); })) {
                ::close(fd);
                stats_.connections_closed[kd][static_cast<size_t>(ConnClose::kProxyUntrusted)].add();
                continue;
            }
        } else if (client && !shared_.accept_limiter.allow(*client, now_ms_)) {
            ::close(fd);  // before any TLS work: a connect-handshake-close flood costs an accept
            stats_.connections_closed[kd][static_cast<size_t>(ConnClose::kRate)].add();
            continue;
        }
        if (!client || shared_.connections.load(std::memory_order_relaxed) >=
                           static_cast<int64_t>(shared_.config.tcp_max_connections) ||
            (!l.proxied &&
             !shared_.connections_per_ip.try_add(client->with_port(0), shared_.config.tcp_max_connections_per_ip))) {
            ::close(fd);
            stats_.connections_closed[kd][static_cast<size_t>(ConnClose::kLimit)].add();
            continue;
        }
        Address server = l.local;
        if (server.is_unspecified()) {  // a wildcard listener: the address this client reached
            sockaddr_storage ls{};
            socklen_t ll = sizeof ls;
            if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ls), &ll) == 0) {
                if (auto a = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ls))) {
                    server = *a;
                }
            }
        }
        set_nodelay(fd);
        SSL* ssl = nullptr;
        if (l.tls != nullptr) {
            ssl = SSL_new(l.tls->get());
            if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
                SSL_free(ssl);
                ::close(fd);
                if (!l.proxied) {
                    shared_.connections_per_ip.remove(client->with_port(0));
                }
                ERR_clear_error();
                stats_.connections_closed[kd][static_cast<size_t>(ConnClose::kTlsHandshake)].add();
                continue;
            }
            SSL_set_accept_state(ssl);
        }
        const uint32_t idx = new_conn_slot();
        Conn& c = *conns_[idx];
        c.fd = fd;
        c.ssl = ssl;
        c.handshake_done = ssl == nullptr;
        c.ft = FiveTuple{*client, server, ssl != nullptr ? Transport::kTls : Transport::kTcp};
        c.last_rx_ms = now_ms_;
        c.awaiting_proxy = l.proxied;
        c.proxied = l.proxied;
        shared_.connections.fetch_add(1, std::memory_order_relaxed);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag(idx);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
        if (l.proxied) {
            continue;  // its header first (read), then TLS
        }
        // A client reusing a 5-tuple whose old connection this loop has not
        // seen close yet: the old one is gone as far as the kernel knows.
        if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end()) {
            close(it->second, ConnClose::kClient);
        }
        by_tuple_[c.ft] = idx;
        if (ssl != nullptr) {
            read(idx);  // nothing to read yet, normally; sets up the handshake state
        }
    }
}

bool StreamIo::read_proxy_header(uint32_t idx) {
    Conn& c = *conns_[idx];
    const size_t have = c.in.size();
    const Address proxy = c.ft.client;  // the connection's own source until the header names the client
    auto refuse = [&](std::string_view why, bool named) {
        refuse_proxy_header(idx, &proxy, why, named);
        return false;
    };
    // Peeked: bytes past the header's end stay in the socket for the
    // connection's own protocol (TLS reads the socket itself).
    const ssize_t n = ::recv(c.fd, rx_.data(), kMaxProxyHeader - have, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return false;
    }
    if (n <= 0) {  // ended (or reset) before its header was whole
        return refuse("closed before the header's end", false);
    }
    c.in.insert(c.in.end(), rx_.data(), rx_.data() + n);
    const ProxyHeader h = parse_proxy_header(c.in);
    if (h.status == ProxyHeader::Status::kBad) {
        return refuse(h.error, false);
    }
    // Take from the socket what was header: all of the peeked bytes while it
    // is incomplete (the parser's promise), else up to its end.
    const size_t take = h.status == ProxyHeader::Status::kDone ? h.length - have : static_cast<size_t>(n);
    if (::recv(c.fd, rx_.data(), take, MSG_DONTWAIT) != static_cast<ssize_t>(take)) {
        close(idx, ConnClose::kClient);
        return false;
    }
    if (h.status != ProxyHeader::Status::kDone) {
        return false;  // `in` holds the header so far
    }
    std::vector<uint8_t>().swap(c.in);
    if (!h.local) {
        c.ft.client = h.source.normalised();
        c.ft.server = h.destination.normalised();
    }
    // A 5-tuple a live connection of this loop has: at accept the kernel
    // vouches that the old one is gone, a header does not. The newcomer is
    // refused, so a header can never end another client's connection (and
    // allocation), a direct listener's included.
    if (by_tuple_.contains(c.ft)) {
        return refuse("names the 5-tuple of an open connection", true);
    }
    // The client is known: its per-source limits, as at accept for a
    // listener without a proxy.
    if (!shared_.accept_limiter.allow(c.ft.client, now_ms_)) {
        close(idx, ConnClose::kRate);
        return false;
    }
    if (!shared_.connections_per_ip.try_add(c.ft.client.with_port(0), shared_.config.tcp_max_connections_per_ip)) {
        close(idx, ConnClose::kLimit);
        return false;
    }
    c.awaiting_proxy = false;
    by_tuple_[c.ft] = idx;
    return true;
}

void StreamIo::refuse_proxy_header(uint32_t idx, const Address* proxy, std::string_view why, bool named) {
    if (log_enabled(LogLevel::kDebug)) {
        Field f[3];
        size_t n = 0;
        if (proxy != nullptr) {
            f[n++] = {"proxy", proxy->to_string()};
        }
        f[n++] = {"error", std::string(why)};
        if (named) {
            f[n++] = {"client", conns_[idx]->ft.client.to_string()};
        }
        log_event(LogLevel::kDebug, "proxy_header_refused", std::span<const Field>(f, n));
    }
    close(idx, ConnClose::kProxyHeader, false);
}

// Out of file descriptors (or kernel memory): the pending connection stays
// queued and the listener readable, which would spin the loop. It is not
// watched for 100 ms (expire() resumes it); the clients retry meanwhile.
void StreamIo::pause_on_exhaustion(int fd, uint64_t tag) {
    if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM) {
        return;
    }
    epoll_event ev{};
    ev.events = 0;
    ev.data.u64 = tag;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
    paused_listeners_.push_back(PausedListener{fd, tag, now_ms_ + 100});
    if (!fd_warning_logged_) {
        fd_warning_logged_ = true;
        log_event(LogLevel::kWarn, "accept_paused",
                  {{"error", std::strerror(errno)},
                   {"fix", "raise the open files limit (ulimit -n) or lower [tcp].max_connections"}});
    }
}

void StreamIo::read(uint32_t idx) {
    if (conns_[idx]->awaiting_proxy && !read_proxy_header(idx)) {
        return;  // incomplete, or closed
    }
    read_some(idx);
    if (conns_[idx]->fd >= 0 && conns_[idx]->write_after_read) {
        conns_[idx]->write_after_read = false;
        write(idx);  // the session may have what it waited for (write)
    }
    // What a pipe side read goes on to its partner now (forward_now), once
    // per event, so that the reads of one event still make one write.
    if (conns_[idx]->fd >= 0 && conns_[idx]->role != Role::kClient) {
        forward_now(idx);
    }
}

void StreamIo::read_some(uint32_t idx) {
    for (int k = 0; k < kReadsPerEvent; ++k) {
        Conn& c = *conns_[idx];
        if (c.fd < 0 || c.paused || c.eof) {
            return;
        }
        // A pipe side reads no more than its allocation's bandwidth budget
        // allows, and none while it is spent: its sender then waits, as TCP
        // makes it (bytes read cannot be dropped). A TLS side reads whole
        // records all the same (decrypted bytes left in the session would
        // get no epoll event): what one takes beyond the budget is a debt
        // the budget repays first (TokenBucket::consume).
        const uint64_t budget = pipe_budget(c);
        if (budget == 0) {
            c.paused = true;
            update_events(c, idx);
            if (!c.bw_paused) {
                c.bw_paused = true;
                bw_paused_.push_back({idx, tag(idx)});
            }
            return;
        }
        const size_t want =
            c.ssl != nullptr ? rx_.size() : static_cast<size_t>(std::min<uint64_t>(rx_.size(), budget));
        ssize_t n = 0;
        if (c.ssl == nullptr) {
            n = ::recv(c.fd, rx_.data(), want, MSG_DONTWAIT);
            if (n == 0) {
                if (c.role == Role::kClient) {
                    c.eof = true;  // an orderly end: the answers already queued still go (close)
                    close_any(idx, ConnClose::kClient);
                } else {
                    half_close(idx);
                }
                return;
            }
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    close_any(idx, ConnClose::kClient);
                }
                return;
            }
        } else {
            ERR_clear_error();
            const int r = SSL_read(c.ssl, rx_.data(), static_cast<int>(want));
            if (!c.handshake_done && SSL_is_init_finished(c.ssl)) {
                c.handshake_done = true;
            }
            if (r <= 0) {
                const int e = SSL_get_error(c.ssl, r);
                if (e == SSL_ERROR_WANT_READ) {
                    if (c.out_off == c.out.size()) {
                        set_want_write(c, idx, false);  // a handshake write that waited is done
                    }
                    return;
                }
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_want_write(c, idx, true);  // handshake output waits for room
                    return;
                }
                ERR_clear_error();
                if (e == SSL_ERROR_ZERO_RETURN && c.role == Role::kData) {
                    half_close(idx);  // close_notify: the client's stream to the peer ended
                    return;
                }
                // close_notify, maybe in the same segment as the client's last
                // request: its answer, already queued, still goes (close).
                c.eof = e == SSL_ERROR_ZERO_RETURN;
                close_any(idx, !c.handshake_done && e != SSL_ERROR_ZERO_RETURN ? ConnClose::kTlsHandshake : ConnClose::kClient);
                return;
            }
            n = r;
        }
        const std::span<const uint8_t> got(rx_.data(), static_cast<size_t>(n));
        if (c.role != Role::kClient) {
            raw_in(idx, got);
        } else if (!consume(idx, got)) {
            return;
        }
        if (c.ssl == nullptr && static_cast<size_t>(n) < want) {
            return;  // drained the socket (TLS may hold decrypted bytes: read on)
        }
    }
}

bool StreamIo::consume(uint32_t idx, std::span<const uint8_t> bytes) {
    // With a partial message pending, the new bytes go behind it (at most
    // one message, < kMaxStreamFrame, plus one read); else they are framed
    // where they are and only a trailing partial message is kept.
    Conn& c = *conns_[idx];
    const bool pending = !c.in.empty();
    if (pending) {
        c.in.insert(c.in.end(), bytes.begin(), bytes.end());
    }
    const std::span<const uint8_t> src = pending ? std::span<const uint8_t>(c.in) : bytes;
    size_t used = 0;
    if (!deliver(idx, src, used)) {
        return false;  // closed; nothing of it is touched any more
    }
    if (pending) {
        c.in.erase(c.in.begin(), c.in.begin() + static_cast<ptrdiff_t>(used));
    } else {
        c.in.assign(bytes.begin() + static_cast<ptrdiff_t>(used), bytes.end());
    }
    if (c.in.capacity() > 64 * 1024 && c.in.size() < 16 * 1024) {
        c.in.shrink_to_fit();  // a large message's buffer is not kept by an idle connection
    }
    return true;
}

// Hands every whole message at the start of `bytes` to the server; `used`
// says how far it got.
bool StreamIo::deliver(uint32_t idx, std::span<const uint8_t> bytes, size_t& used) {
    used = 0;
    while (true) {
        const StreamFrame f = next_stream_frame(bytes.subspan(used));
        if (f.status == StreamFrameStatus::kNeedMore) {
            return true;
        }
        if (f.status != StreamFrameStatus::kFrame) {
            close(idx, ConnClose::kBadFrame);
            return false;
        }
        Conn& c = *conns_[idx];
        server_->on_client_datagram(c.ft, bytes.subspan(used, f.message_len));
        used += f.consumed;
        if (leaving_ && leaving_->idx == idx) {
            finish_handoff(idx, bytes.subspan(used));  // it goes with what followed its ConnectionBind
            return false;
        }
        if (conns_[idx]->fd < 0) {
            return false;
        }
        if (conns_[idx]->role == Role::kData) {
            // ConnectionBind made it a data connection: what follows the
            // message is the client's first bytes for the peer.
            raw_in(idx, bytes.subspan(used));
            used = bytes.size();
            return conns_[idx]->fd >= 0;
        }
    }
}

bool StreamIo::send(const FiveTuple& to, std::span<const uint8_t> data) {
    auto it = by_tuple_.find(to);
    if (it == by_tuple_.end()) {
        return false;
    }
    const uint32_t idx = it->second;
    Conn& c = *conns_[idx];
    const size_t pad = stream_padding(data);
    if (c.out.size() - c.out_off + data.size() + pad > shared_.config.tcp_send_buffer_bytes) {
        stats_.drop(Drop::kStreamBackpressure);
        return true;
    }
    compact(c);
    c.out.insert(c.out.end(), data.begin(), data.end());
    c.out.insert(c.out.end(), pad, uint8_t{0});
    if (!c.queued) {
        c.queued = true;
        dirty_.push_back(idx);
    }
    return true;
}

void StreamIo::flush() {
    // write() may close a connection; its slot is not reused before the
    // next accept, which does not happen in here. What it closes is reported
    // to the server later (close, close_peer; expire).
    const bool outer = in_flush_;
    in_flush_ = true;
    for (size_t i = 0; i < dirty_.size(); ++i) {
        const uint32_t idx = dirty_[i];
        Conn& c = *conns_[idx];
        c.queued = false;
        if (c.fd >= 0 && !c.want_write) {
            write(idx);
        }
    }
    dirty_.clear();
    in_flush_ = outer;
}

void StreamIo::write(uint32_t idx) {
    Conn& c = *conns_[idx];
    while (c.out_off < c.out.size()) {
        const size_t len = c.out.size() - c.out_off;
        if (c.ssl == nullptr) {
            const ssize_t n = ::send(c.fd, c.out.data() + c.out_off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    compact(c);
                    set_want_write(c, idx, true);
                    return;
                }
                if (errno == EINTR) {
                    continue;
                }
                close_any(idx, ConnClose::kSendError);
                return;
            }
            c.out_off += static_cast<size_t>(n);
        } else {
            if (!c.handshake_done) {
                return;  // nothing is answered before the handshake; kept for then
            }
            ERR_clear_error();
            const int r = SSL_write(c.ssl, c.out.data() + c.out_off, static_cast<int>(std::min<size_t>(len, 1 << 30)));
            if (r <= 0) {
                const int e = SSL_get_error(c.ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    compact(c);  // allowed: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, same bytes
                    // WANT_READ: the client began a handshake message after
                    // the handshake (a KeyUpdate, a renegotiation's
                    // ClientHello) and OpenSSL writes nothing until it has
                    // the rest. Only the client's bytes help, and the socket
                    // is writable: EPOLLOUT would wake the loop on every poll
                    // until they come. The next read() tries again.
                    c.write_after_read = e == SSL_ERROR_WANT_READ;
                    set_want_write(c, idx, e == SSL_ERROR_WANT_WRITE);
                    return;
                }
                ERR_clear_error();
                close_any(idx, ConnClose::kSendError);
                return;
            }
            c.out_off += static_cast<size_t>(r);
        }
    }
    c.out.clear();
    c.out_off = 0;
    if (c.out.capacity() > 64 * 1024) {
        c.out.shrink_to_fit();  // a burst's buffer is not kept by an idle connection
    }
    set_want_write(c, idx, false);
    if (c.fin_pending && !c.fin_sent) {
        send_fin(idx);
        if (pipe_done(idx)) {
            close_any(idx, ConnClose::kClient);
            return;
        }
    }
    // The pipe's other side was paused for this queue: read it again.
    if (c.partner >= 0) {
        Conn& p = *conns_[static_cast<size_t>(c.partner)];
        if (p.fd >= 0 && p.paused) {
            p.paused = false;
            update_events(p, static_cast<uint32_t>(c.partner));
        }
    }
}

void StreamIo::set_want_write(Conn& c, uint32_t idx, bool on) {
    if (c.want_write == on) {
        return;
    }
    c.want_write = on;
    update_events(c, idx);
}

void StreamIo::update_events(Conn& c, uint32_t idx) {
    epoll_event ev{};
    ev.events = (c.paused || c.eof ? 0u : EPOLLIN) | (c.want_write || c.connecting ? EPOLLOUT : 0u);
    ev.data.u64 = tag(idx);
    if (c.parked) {
        if (c.eof && !c.want_write) {
            return;  // nothing to read or write on it any more
        }
        c.parked = false;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev);
        return;
    }
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void StreamIo::close(uint32_t idx, ConnClose why, bool notify) {
    Conn& c = *conns_[idx];
    if (c.fd < 0) {
        return;
    }
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    // Answers to the messages before a bad one (or before shutdown, or
    // before the client's orderly end: FIN or close_notify, `eof`) go out if
    // the socket takes them now; nothing waits for them.
    const bool graceful = why == ConnClose::kBadFrame || why == ConnClose::kIdle || why == ConnClose::kShutdown ||
                          (why == ConnClose::kClient && (c.role == Role::kData || c.eof));
    if (graceful && c.out_off < c.out.size() && c.handshake_done) {
        const size_t len = c.out.size() - c.out_off;
        if (c.ssl == nullptr) {
            (void)!::send(c.fd, c.out.data() + c.out_off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            (void)SSL_write(c.ssl, c.out.data() + c.out_off, static_cast<int>(std::min<size_t>(len, 1 << 30)));
        }
    }
    if (c.ssl != nullptr) {
        // close_notify, best effort; to a client that sent one, as the answer
        // TLS asks for (RFC 8446 section 6.1), not after a reset or an error.
        if (c.handshake_done && why != ConnClose::kSendError &&
            (why != ConnClose::kClient || (SSL_get_shutdown(c.ssl) & SSL_RECEIVED_SHUTDOWN) != 0)) {
            SSL_shutdown(c.ssl);
        }
        SSL_free(c.ssl);
        c.ssl = nullptr;
        ERR_clear_error();
    }
    const size_t kd = c.ft.transport == Transport::kTls ? 1 : 0;
    const FiveTuple ft = c.ft;
    ::close(c.fd);
    c.fd = -1;
    c.gen++;
    stats_.connections_closed[kd][static_cast<size_t>(why)].add();
    shared_.connections.fetch_sub(1, std::memory_order_relaxed);
    const bool known = !c.awaiting_proxy;  // counted per IP, in by_tuple_, and maybe seen by the server
    c.awaiting_proxy = false;
    if (known) {
        shared_.connections_per_ip.remove(ft.client.with_port(0));
    }
    if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end() && it->second == idx) {
        by_tuple_.erase(it);
    }
    std::vector<uint8_t>().swap(c.in);
    std::vector<uint8_t>().swap(c.out);
    c.out_off = 0;
    const int64_t partner = c.partner;
    c.partner = -1;
    free_.push_back(idx);
    if (partner >= 0) {  // a data connection's peer connection goes with it
        conns_[static_cast<size_t>(partner)]->partner = -1;
        close_peer(static_cast<uint32_t>(partner), notify);
    }
    if (notify && known && server_ != nullptr) {
        if (in_flush_) {
            ended_clients_.push_back(ft);
        } else {
            server_->on_client_closed(ft);
        }
    }
}

uint64_t StreamIo::pipe_budget(const Conn& c) const {
    if (!c.limited || c.partner < 0) {  // limited: a pipe side (tcp_bind_data), with a server
        return UINT64_MAX;
    }
    const Conn& p = *conns_[static_cast<size_t>(c.partner)];
    return server_->tcp_budget(c.role == Role::kPeer ? c.conn_id : p.conn_id);
}

// Pipe sides waiting for budget: read again once there is some (and their
// partner's queue has room: else its drain unpauses them, write()). Each
// tick, so at most a poll interval (100 ms) after the budget refills.
void StreamIo::resume_bandwidth_paused() {
    std::erase_if(bw_paused_, [&](const BwPaused& b) {
        if (b.idx >= conns_.size() || tag(b.idx) != b.tag || conns_[b.idx]->fd < 0) {
            return true;  // closed, maybe reused
        }
        Conn& c = *conns_[b.idx];
        if (c.paused && pipe_budget(c) == 0) {
            return false;
        }
        c.bw_paused = false;
        if (c.paused && c.partner >= 0) {
            const Conn& p = *conns_[static_cast<size_t>(c.partner)];
            if (p.out.size() - p.out_off <= shared_.config.tcp_send_buffer_bytes) {
                c.paused = false;
                update_events(c, b.idx);
            }
        }
        return true;
    });
}

void StreamIo::expire(uint64_t now_ms) {
    now_ms_ = now_ms;
    if (!bw_paused_.empty()) {
        resume_bandwidth_paused();
    }
    if (server_ != nullptr && (!ended_clients_.empty() || !ended_peers_.empty())) {
        std::vector<FiveTuple> clients;
        std::vector<uint32_t> peers;
        clients.swap(ended_clients_);
        peers.swap(ended_peers_);
        for (const FiveTuple& ft : clients) {
            server_->on_client_closed(ft);
        }
        for (const uint32_t id : peers) {
            server_->on_tcp_peer_closed(id);
        }
    }
    if (!paused_listeners_.empty()) {
        std::erase_if(paused_listeners_, [&](const PausedListener& p) {
            if (now_ms < p.until_ms) {
                return false;
            }
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = p.tag;
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, p.fd, &ev);
            return true;
        });
    }
    if (now_ms - last_expire_ms_ < 1000 || server_ == nullptr) {
        return;
    }
    last_expire_ms_ = now_ms;
    const uint64_t idle_ms = uint64_t{shared_.config.tcp_idle_timeout_s} * 1000;
    for (uint32_t i = 0; i < conns_.size(); ++i) {
        Conn& c = *conns_[i];
        if (c.fd < 0) {
            continue;
        }
        // A client connection holds a slot for idle_timeout_s after it was
        // accepted or its allocation ended, however many unauthenticated
        // messages (Binding) it sends meanwhile.
        if (c.role == Role::kClient && server_->has_allocation(c.ft)) {
            c.last_rx_ms = now_ms;
        } else if (c.role == Role::kClient && now_ms - c.last_rx_ms >= idle_ms) {
            close(i, ConnClose::kIdle);
        } else if (c.connecting && now_ms - c.last_rx_ms >= kConnectTimeoutMs) {
            connect_done(i, false);
        }
    }
}

// Drops the written part of a connection's queue once it is the larger part:
// a client that reads, but never quite fast enough to empty the queue, must
// not grow it (only the unwritten bytes count against send_buffer_bytes).
void StreamIo::compact(Conn& c) {
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    } else if (c.out_off > 64 * 1024 && 2 * c.out_off > c.out.size()) {
        c.out.erase(c.out.begin(), c.out.begin() + static_cast<ptrdiff_t>(c.out_off));
        c.out_off = 0;
    }
}

uint32_t StreamIo::new_conn_slot() {
    uint32_t idx = 0;
    if (!free_.empty()) {
        idx = free_.back();
        free_.pop_back();
    } else {
        idx = static_cast<uint32_t>(conns_.size());
        conns_.push_back(std::make_unique<Conn>());
    }
    Conn& c = *conns_[idx];
    c.role = Role::kClient;
    c.partner = -1;
    c.paused = false;
    c.bw_paused = false;
    c.limited = false;
    c.connecting = false;
    c.conn_id = 0;
    c.relay = 0;
    c.ssl = nullptr;
    c.handshake_done = true;
    c.want_write = false;
    c.write_after_read = false;
    c.queued = false;
    c.eof = false;
    c.fin_pending = false;
    c.fin_sent = false;
    c.parked = false;
    c.arrived = false;
    c.awaiting_proxy = false;
    c.in.clear();
    c.out.clear();
    c.out_off = 0;
    return idx;
}

// ---- RFC 6062 ----

OpenResult StreamIo::open_tcp_relay(const Address& addr, RelayId& out) {
    if (!tcp_port_free(addr)) {
        return OpenResult::kPortInUse;
    }
    const int fd = bound_tcp_socket(addr);
    if (fd < 0 || ::listen(fd, 64) != 0) {
        const int e = errno;
        if (fd >= 0) {
            ::close(fd);
        }
        return e == EADDRINUSE ? OpenResult::kPortInUse : OpenResult::kError;
    }
    uint32_t i = 0;
    if (!free_tcp_relays_.empty()) {
        i = free_tcp_relays_.back();
        free_tcp_relays_.pop_back();
    } else {
        i = static_cast<uint32_t>(tcp_relays_.size());
        tcp_relays_.emplace_back();
    }
    tcp_relays_[i] = TcpRelay{fd, addr, {}};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTag | kListenerBit | kRelayBit | i;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    out = kTcpRelayBase + i;
    return OpenResult::kOk;
}

void StreamIo::close_tcp_relay(RelayId relay) {
    const uint32_t i = relay - kTcpRelayBase;
    if (relay < kTcpRelayBase || i >= tcp_relays_.size() || tcp_relays_[i].fd < 0) {
        return;
    }
    TcpRelay& r = tcp_relays_[i];
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, r.fd, nullptr);
    // Paused for want of descriptors (pause_on_exhaustion): expire() must
    // not re-arm its number, which the next socket opened here may get.
    std::erase_if(paused_listeners_, [fd = r.fd](const PausedListener& p) { return p.fd == fd; });
    ::close(r.fd);
    r.fd = -1;
    const std::vector<uint32_t> ids = std::move(r.conns);
    r.conns.clear();
    for (const uint32_t id : ids) {
        if (auto it = by_conn_id_.find(id); it != by_conn_id_.end()) {
            close_peer(it->second, true);  // the server forgets them (its allocation is going)
        }
    }
    free_tcp_relays_.push_back(i);
}

bool StreamIo::tcp_connect(RelayId relay, const Address& peer, uint32_t conn_id) {
    const uint32_t i = relay - kTcpRelayBase;
    if (relay < kTcpRelayBase || i >= tcp_relays_.size() || tcp_relays_[i].fd < 0 ||
        shared_.peer_connections.load(std::memory_order_relaxed) >= static_cast<int64_t>(shared_.config.tcp_max_connections)) {
        return false;
    }
    // From the relayed address itself (RFC 6062 section 5.2).
    const int fd = bound_tcp_socket(tcp_relays_[i].local);
    if (fd < 0) {
        return false;
    }
    set_nodelay(fd);
    sockaddr_storage ps{};
    const size_t pl = peer.to_sockaddr(&ps);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ps), static_cast<socklen_t>(pl)) != 0 && errno != EINPROGRESS) {
        ::close(fd);
        return false;
    }
    add_peer(fd, conn_id, i, peer, true);  // the connect timeout counts from here
    return true;
}

void StreamIo::add_peer(int fd, uint32_t conn_id, uint32_t relay_index, const Address& peer, bool connecting) {
    const uint32_t idx = new_conn_slot();
    Conn& c = *conns_[idx];
    c.fd = fd;
    c.role = Role::kPeer;
    c.connecting = connecting;
    c.conn_id = conn_id;
    c.relay = kTcpRelayBase + relay_index;
    c.ft = FiveTuple{peer, tcp_relays_[relay_index].local, Transport::kTcp};
    c.last_rx_ms = now_ms_;
    by_conn_id_[conn_id] = idx;
    tcp_relays_[relay_index].conns.push_back(conn_id);
    shared_.peer_connections.fetch_add(1, std::memory_order_relaxed);
    epoll_event ev{};
    ev.events = connecting ? EPOLLOUT : EPOLLIN;
    ev.data.u64 = tag(idx);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

void StreamIo::connect_done(uint32_t idx, bool ok) {
    Conn& c = *conns_[idx];
    const uint32_t id = c.conn_id;
    if (!ok) {
        close_peer(idx, false);  // the server hears it as the Connect's result instead
    } else {
        c.connecting = false;
        update_events(c, idx);
    }
    if (server_ != nullptr) {
        server_->on_tcp_peer_connected(id, ok);
    }
}

void StreamIo::accept_peers(uint32_t relay_index) {
    for (int k = 0; k < kAcceptsPerEvent; ++k) {
        TcpRelay& r = tcp_relays_[relay_index];
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        const int fd = ::accept4(r.fd, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            pause_on_exhaustion(r.fd, kTag | kListenerBit | kRelayBit | relay_index);
            return;
        }
        const auto peer = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
        uint32_t id = 0;
        // Without a permission (or over a limit) the peer is closed at once
        // and never announced (RFC 6062 section 5.3).
        if (shared_.peer_connections.load(std::memory_order_relaxed) >= static_cast<int64_t>(shared_.config.tcp_max_connections)) {
            stats_.drop(Drop::kTcpPeerLimit);  // the whole process's, [tcp].max_connections
            ::close(fd);
            continue;
        }
        if (!peer || server_ == nullptr || !server_->on_tcp_peer_accepted(kTcpRelayBase + relay_index, *peer, id)) {
            ::close(fd);
            continue;
        }
        set_nodelay(fd);
        add_peer(fd, id, relay_index, *peer, false);
    }
}

void StreamIo::tcp_close_peer(uint32_t conn_id) {
    if (auto it = by_conn_id_.find(conn_id); it != by_conn_id_.end()) {
        close_peer(it->second, false);
    }
}

bool StreamIo::tcp_bind_data(const FiveTuple& client, uint32_t conn_id) {
    auto ci = by_tuple_.find(client);
    auto pi = by_conn_id_.find(conn_id);
    if (ci == by_tuple_.end() || pi == by_conn_id_.end()) {
        return false;
    }
    const uint32_t cidx = ci->second;
    const uint32_t pidx = pi->second;
    Conn& c = *conns_[cidx];
    Conn& p = *conns_[pidx];
    if (c.role != Role::kClient || p.role != Role::kPeer || p.partner >= 0 || p.connecting) {
        return false;
    }
    // No more TURN messages go into this stream: it carries the peer's bytes.
    by_tuple_.erase(ci);
    c.role = Role::kData;
    c.partner = pidx;
    p.partner = cidx;
    // An allocation's limit is fixed for its life: a pipe without one never
    // asks for its budget again (two lookups per read, ~4 % of a message's
    // CPU at 400k messages/s).
    c.limited = p.limited = server_ != nullptr && server_->tcp_budget(conn_id) != UINT64_MAX;
    if (!p.in.empty()) {  // what the peer sent before the bind, after the success answer
        std::vector<uint8_t> early;
        early.swap(p.in);
        count_piped(p.conn_id, Direction::kPeerToClient, early.size());
        queue_raw(cidx, early);
    }
    if (p.eof) {
        c.fin_pending = true;  // the peer ended before the bind: its FIN follows its bytes
        if (!c.queued) {
            c.queued = true;
            dirty_.push_back(cidx);
        }
    }
    if (p.paused) {
        p.paused = false;
        update_events(p, pidx);
    }
    return true;
}

void StreamIo::count_piped(uint32_t conn_id, Direction d, size_t bytes) {
    stats_.tcp_relayed_bytes[static_cast<size_t>(d)].add(bytes);
    if (server_ != nullptr) {  // the allocation's usage, by its peer connection's CONNECTION-ID
        server_->on_tcp_relayed(conn_id, d, bytes);
    }
}

void StreamIo::queue_raw(uint32_t idx, std::span<const uint8_t> bytes) {
    Conn& c = *conns_[idx];
    if (bytes.empty() || c.fd < 0) {
        return;
    }
    compact(c);
    c.out.insert(c.out.end(), bytes.begin(), bytes.end());
    if (!c.queued) {
        c.queued = true;
        dirty_.push_back(idx);
    }
}

// Bytes read from a pipe's side (or a peer not yet bound): to the other side,
// pausing this one while the other's queue is over the limit.
void StreamIo::raw_in(uint32_t idx, std::span<const uint8_t> bytes) {
    Conn& c = *conns_[idx];
    if (c.partner < 0) {
        c.in.insert(c.in.end(), bytes.begin(), bytes.end());
        if (c.in.size() >= kPeerPending && !c.paused) {
            c.paused = true;
            update_events(c, idx);
        }
        return;
    }
    const uint32_t pidx = static_cast<uint32_t>(c.partner);
    if (c.role == Role::kData) {
        count_piped(conns_[pidx]->conn_id, Direction::kClientToPeer, bytes.size());
    } else {
        count_piped(c.conn_id, Direction::kPeerToClient, bytes.size());
    }
    queue_raw(pidx, bytes);
    const Conn& p = *conns_[pidx];
    if (p.out.size() - p.out_off > shared_.config.tcp_send_buffer_bytes && !c.paused) {
        c.paused = true;
        update_events(c, idx);
    }
}

// What one event's reads of a pipe side queued is written to its partner at
// once instead of with the rest of the epoll batch (flush): a side appears
// once per batch, so waiting would coalesce nothing and only add the time
// the batch's other connections take to every byte's latency.
void StreamIo::forward_now(uint32_t idx) {
    const Conn& c = *conns_[idx];
    if (c.partner < 0) {
        return;  // a peer not bound yet: its bytes wait for the bind
    }
    const auto pidx = static_cast<uint32_t>(c.partner);
    const Conn& p = *conns_[pidx];
    if (p.fd >= 0 && !p.want_write && p.out_off < p.out.size()) {
        write(pidx);  // a failed send closes both sides (close_any)
    }
}

void StreamIo::half_close(uint32_t idx) {
    Conn& c = *conns_[idx];
    c.eof = true;
    update_events(c, idx);
    if (c.partner < 0) {
        return;  // a peer not bound yet: its FIN waits with its bytes for the bind
    }
    const uint32_t pidx = static_cast<uint32_t>(c.partner);
    Conn& p = *conns_[pidx];
    p.fin_pending = true;
    if (p.out_off == p.out.size()) {  // nothing queued: the FIN goes now
        send_fin(pidx);
    }
    if (pipe_done(idx)) {
        close_any(idx, ConnClose::kClient);
    }
}

void StreamIo::send_fin(uint32_t idx) {
    Conn& c = *conns_[idx];
    if (c.fin_sent || c.fd < 0) {
        return;
    }
    c.fin_sent = true;
    if (c.ssl != nullptr) {
        ERR_clear_error();
        (void)SSL_shutdown(c.ssl);  // close_notify; the peer's close_notify is not waited for
        ERR_clear_error();
    }
    ::shutdown(c.fd, SHUT_WR);
}

// Both directions of idx's pipe have ended: each side's stream ended and the
// FIN went to the other side.
bool StreamIo::pipe_done(uint32_t idx) const {
    const Conn& c = *conns_[idx];
    if (c.partner < 0) {
        return false;
    }
    const Conn& p = *conns_[static_cast<size_t>(c.partner)];
    return c.eof && p.eof && c.fin_sent && p.fin_sent;
}

void StreamIo::close_peer(uint32_t idx, bool notify) {
    Conn& c = *conns_[idx];
    if (c.fd < 0) {
        return;
    }
    // What the client sent before it went is written if the socket takes it.
    if (c.out_off < c.out.size()) {
        (void)!::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    c.gen++;
    const uint32_t id = c.conn_id;
    by_conn_id_.erase(id);
    shared_.peer_connections.fetch_sub(1, std::memory_order_relaxed);
    const uint32_t ri = c.relay - kTcpRelayBase;
    if (c.relay >= kTcpRelayBase && ri < tcp_relays_.size()) {
        std::erase(tcp_relays_[ri].conns, id);
    }
    std::vector<uint8_t>().swap(c.in);
    std::vector<uint8_t>().swap(c.out);
    c.out_off = 0;
    c.connecting = false;
    const int64_t partner = c.partner;
    c.partner = -1;
    c.role = Role::kClient;
    free_.push_back(idx);
    if (partner >= 0) {  // its data connection goes with it
        conns_[static_cast<size_t>(partner)]->partner = -1;
        close(static_cast<uint32_t>(partner), ConnClose::kClient, server_ != nullptr);
    }
    if (notify && server_ != nullptr) {
        if (in_flush_) {
            ended_peers_.push_back(id);
        } else {
            server_->on_tcp_peer_closed(id);
        }
    }
}

void StreamIo::close_any(uint32_t idx, ConnClose why) {
    if (conns_[idx]->role == Role::kPeer) {
        close_peer(idx, true);
    } else {
        close(idx, why);  // a data connection's peer connection goes too, the server told
    }
}

// ---- connections between loops (io/stream_handoff.h) ----

void StreamIo::set_handoffs(StreamHandoffs* h, unsigned loop) {
    handoffs_ = h;
    loop_ = loop;
    if (h != nullptr) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kTag | kListenerBit | kInboxBit;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, h->event_fd(loop), &ev);
    }
}

bool StreamIo::tcp_handoff(const FiveTuple& client, unsigned to, std::span<const uint8_t> message) {
    auto it = by_tuple_.find(client);
    if (handoffs_ == nullptr || to >= handoffs_->loops() || to == loop_ || it == by_tuple_.end() || leaving_) {
        return false;
    }
    const Conn& c = *conns_[it->second];
    // Once per connection: one that came from another loop is answered here
    // (a client cannot bounce its connection between loops with binds).
    if (c.role != Role::kClient || !c.handshake_done || c.arrived) {
        return false;
    }
    leaving_ = Leaving{it->second, to, std::vector<uint8_t>(message.begin(), message.end())};
    return true;
}

void StreamIo::finish_handoff(uint32_t idx, std::span<const uint8_t> after) {
    Conn& c = *conns_[idx];
    StreamHandoff h;
    h.fd = c.fd;
    h.ssl = c.ssl;
    h.handshake_done = c.handshake_done;
    h.ft = c.ft;
    h.proxied = c.proxied;
    h.message = std::move(leaving_->message);
    h.after.assign(after.begin(), after.end());  // before c.in goes: `after` may be inside it
    h.out.assign(c.out.begin() + static_cast<ptrdiff_t>(c.out_off), c.out.end());
    const unsigned to = leaving_->to;
    leaving_.reset();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end() && it->second == idx) {
        by_tuple_.erase(it);
    }
    // The slot is free; the connection is not closed and stays counted
    // (Shared::connections, the per-IP count, this process's accepted total).
    c.fd = -1;
    c.ssl = nullptr;
    c.gen++;
    std::vector<uint8_t>().swap(c.in);
    std::vector<uint8_t>().swap(c.out);
    c.out_off = 0;
    free_.push_back(idx);
    stats_.connections_handed_off.add();
    handoffs_->push(to, std::move(h));
}

void StreamIo::adopt_all() {
    if (handoffs_ == nullptr) {
        return;
    }
    for (auto& h : handoffs_->take(loop_)) {
        const uint32_t idx = new_conn_slot();
        Conn& c = *conns_[idx];
        c.fd = h.fd;
        c.ssl = h.ssl;
        c.handshake_done = h.handshake_done;
        c.ft = h.ft;
        c.proxied = h.proxied;
        c.arrived = true;
        c.last_rx_ms = now_ms_;
        if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end()) {
            if (c.proxied) {
                // A PROXY header's 5-tuple that a connection of this loop
                // has (read_proxy_header sees only its own loop's): the
                // newcomer is refused, never the open one.
                refuse_proxy_header(idx, nullptr, "names the 5-tuple of an open connection of another event loop", true);
                continue;
            }
            close(it->second, ConnClose::kClient);  // a stale connection of the same 5-tuple
        }
        by_tuple_[c.ft] = idx;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag(idx);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev);
        if (!h.out.empty()) {
            c.out = std::move(h.out);
            c.queued = true;
            dirty_.push_back(idx);
        }
        // The ConnectionBind again, on the loop of its peer connection; then
        // what followed it: the client's first bytes for the peer if the bind
        // made this a data connection, else further TURN messages.
        const FiveTuple ft = c.ft;
        server_->on_client_datagram(ft, h.message);
        leaving_.reset();  // never set for an arrived connection (tcp_handoff refuses it); defensive
        if (conns_[idx]->fd < 0) {
            continue;
        }
        if (conns_[idx]->role == Role::kData) {
            raw_in(idx, h.after);
        } else if (!h.after.empty() && !consume(idx, h.after)) {
            continue;
        }
        // TLS: bytes the session holds already would not wake epoll. With
        // read_ahead off (io/tls.cc sets it) the other loop's SSL_read took
        // whole records only, so this normally finds nothing; it is insurance.
        if (conns_[idx]->fd >= 0 && conns_[idx]->ssl != nullptr) {
            read(idx);
        }
    }
}

}  // namespace turn::cp
