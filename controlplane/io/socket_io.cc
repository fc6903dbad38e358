#include "io/socket_io.h"

#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <ctime>
#include <cerrno>
#include <cstring>

#include "core/event_log.h"

#include "core/server.h"
#include "io/udp_socket.h"

namespace turn::cp {

namespace {
// epoll tags: high bit marks a listener, the rest is the index; with
// kPathTag too, a client path (open_client_path).
constexpr uint64_t kListenerTag = 1ull << 63;
constexpr uint64_t kPathTag = 1ull << 59;

// The socket's DF option: IP_MTU_DISCOVER (IPv4) or IPV6_DONTFRAG (IPv6),
// as (level, name); its value for DF on: IP_PMTUDISC_DO (IPv4), 1 (IPv6).
constexpr int kDontFragmentLevel[2] = {IPPROTO_IP, IPPROTO_IPV6};
constexpr int kDontFragmentName[2] = {IP_MTU_DISCOVER, IPV6_DONTFRAG};
constexpr int kDontFragmentOn[2] = {IP_PMTUDISC_DO, 1};

int dont_fragment_option(int fd, bool v6) {
    int v = v6 ? 0 : IP_PMTUDISC_WANT;
    socklen_t len = sizeof v;
    ::getsockopt(fd, kDontFragmentLevel[v6], kDontFragmentName[v6], &v, &len);
    return v;
}
bool set_dont_fragment_option(int fd, bool v6, int v) {
    return ::setsockopt(fd, kDontFragmentLevel[v6], kDontFragmentName[v6], &v, sizeof v) == 0;
}

// A slot of `slots` for a new socket (a freed one first) and its epoll
// registration under `tag | id`: relayed sockets and client paths.
template <typename T>
RelayId add_slot(std::vector<T>& slots, std::vector<RelayId>& free, T value, int epoll_fd, uint64_t tag) {
    RelayId id = 0;
    if (!free.empty()) {
        id = free.back();
        free.pop_back();
    } else {
        id = static_cast<RelayId>(slots.size());
        slots.emplace_back();
    }
    const int fd = value.fd;
    slots[id] = std::move(value);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag | id;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    return id;
}

}  // namespace

int make_udp_socket(const Address& local, bool reuseport, std::string& err) {
    const int domain = local.is_v6() ? AF_INET6 : AF_INET;
    const int fd = ::socket(domain, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    const int one = 1;
    if (reuseport) {
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    if (local.is_v6()) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    // Each datagram's TOS / Traffic Class and TTL / Hop Limit from the first
    // one on (before bind): relayed data keeps DSCP and ECN and leaves with
    // one less TTL (RFC 8656 section 14, preferred behaviour; a DTLS
    // datagram's go with the messages its records carry). Without the TTL a
    // datagram is relayed with the default one, as before.
    if (!receive_socket_tos(fd, local.is_v6())) {
        log_event(LogLevel::kWarn, "tos_receive_unavailable",
                  {{"address", local.to_string()}, {"error", std::strerror(errno)}});
    }
    if (!receive_socket_ttl(fd, local.is_v6())) {
        log_event(LogLevel::kWarn, "ttl_receive_unavailable",
                  {{"address", local.to_string()}, {"error", std::strerror(errno)}});
    }
    const int buf = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    sockaddr_storage ss{};
    const size_t len = local.to_sockaddr(&ss);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
        err = errno == EADDRINUSE ? "in use" : std::strerror(errno);
        ::close(fd);
        return -1;
    }
    return fd;
}

SocketIo::SocketIo(Stats& stats)
    : stats_(stats), epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)), tx_buf_(kTxBatch * kTxSlot) {}

SocketIo::~SocketIo() {
    if (dtls_) {
        dtls_->close_all();  // close_notify to every DTLS client, sent by this flush
    }
    flush();
    dtls_.reset();
    streams_.reset();
    for (auto& l : listeners_) {
        ::close(l.fd);
    }
    for (auto& p : paths_) {
        if (p.fd >= 0) {
            ::close(p.fd);
        }
    }
    for (auto& r : relays_) {
        if (r.fd >= 0) {
            ::close(r.fd);
        }
    }
    if (epoll_fd_ >= 0) {
        ::close(epoll_fd_);
    }
}

std::string SocketIo::add_listener(const Address& local) {
    std::string err;
    const int fd = make_udp_socket(local, true, err);
    if (fd < 0) {
        return "cannot listen on " + local.to_string() + ": " + err;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag | listeners_.size();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    listeners_.push_back(Listener{fd, local});
    return {};
}

std::string SocketIo::add_stream_listener(Shared& shared, const Address& local, const TlsContexts* tls) {
    if (!streams_) {
        streams_ = std::make_unique<StreamIo>(shared, stats_, epoll_fd_);
        streams_->set_server(server_);
    }
    return streams_->add_listener(local, tls);
}

std::string SocketIo::add_dtls_listener(Shared& shared, const Address& local, const TlsContexts* tls) {
    if (!dtls_) {
        dtls_ = std::make_unique<DtlsIo>(shared, stats_, epoll_fd_,
                                         [this](int fd, const Address& to, std::span<const uint8_t> data,
                                                IpMarks marks) { queue(fd, to, data, marks); });
        dtls_->set_server(server_);
    }
    return dtls_->add_listener(local, tls);
}

void SocketIo::set_server(Server* s) {
    server_ = s;
    if (streams_) {
        streams_->set_server(s);
    }
    if (dtls_) {
        dtls_->set_server(s);
    }
}

void SocketIo::tick(uint64_t now_ms) {
    if (streams_) {
        streams_->expire(now_ms);
    }
    if (dtls_) {
        dtls_->expire(now_ms);
    }
}

OpenResult SocketIo::open_relay(const Address& addr, bool dont_fragment, RelayId& out) {
    std::string err;
    const int fd = make_udp_socket(addr, false, err);
    if (fd < 0) {
        if (err != "in use") {
            log_event(LogLevel::kWarn, "relay_socket_failed", {{"address", addr.to_string()}, {"error", err}});
        }
        return err == "in use" ? OpenResult::kPortInUse : OpenResult::kError;
    }
    if (dont_fragment) {
        // RFC 8656 section 18.10: DONT-FRAGMENT -> set DF on relayed packets.
        set_dont_fragment_option(fd, !addr.is_v4(), kDontFragmentOn[!addr.is_v4()]);
    }
    // ICMP errors about relayed datagrams arrive on the error queue
    // (EPOLLERR) and become Data indications with an ICMP attribute.
    {
        const int on = 1;
        if (addr.is_v4()) {
            ::setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
        } else {
            ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &on, sizeof on);
        }
    }
    out = add_slot(relays_, free_relays_, Relay{fd, addr, dont_fragment}, epoll_fd_, 0);
    ++relay_count_;
    return OpenResult::kOk;
}

void SocketIo::close_relay(RelayId relay) {
    if (relay >= relays_.size() || relays_[relay].fd < 0) {
        return;
    }
    // Pending sends from this socket must not go out on a reused fd number.
    flush();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, relays_[relay].fd, nullptr);
    ::close(relays_[relay].fd);
    relays_[relay].fd = -1;
    free_relays_.push_back(relay);
    --relay_count_;
}

RelayId SocketIo::open_client_path(const FiveTuple& ft) {
    std::string err;
    const int fd = make_udp_socket(ft.server, true, err);
    sockaddr_storage ss{};
    const size_t len = ft.client.to_sockaddr(&ss);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
        log_event(LogLevel::kWarn, "client_path_failed",
                  {{"client", ft.client.to_string()}, {"server", ft.server.to_string()},
                   {"error", fd < 0 ? err : std::string(std::strerror(errno))}});
        if (fd >= 0) {
            ::close(fd);
        }
        return kNoRelay;
    }
    return add_slot(paths_, free_paths_, Listener{fd, ft.server}, epoll_fd_, kListenerTag | kPathTag);
}

void SocketIo::close_client_path(RelayId path) {
    if (path >= paths_.size() || paths_[path].fd < 0) {
        return;
    }
    flush();  // nothing queued may leave through a reused descriptor number
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, paths_[path].fd, nullptr);
    ::close(paths_[path].fd);
    paths_[path].fd = -1;
    free_paths_.push_back(path);
}

void SocketIo::send_to_client(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks) {
    if (to.transport == Transport::kDtls) {
        if (!dtls_ || !dtls_->send(to, data, marks)) {
            stats_.drop(Drop::kSendError);  // the session has gone
        }
        return;
    }
    if (to.transport != Transport::kUdp) {
        if (!streams_ || !streams_->send(to, data)) {
            stats_.drop(Drop::kSendError);  // the connection has gone
        }
        return;
    }
    for (const auto& l : listeners_) {
        if (l.local == to.server) {
            queue(l.fd, to.client, data, marks);
            return;
        }
    }
    stats_.drop(Drop::kSendError);
}

void SocketIo::send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data, bool dont_fragment,
                            IpMarks marks) {
    if (relay >= relays_.size() || relays_[relay].fd < 0) {
        stats_.drop(Drop::kSendError);
        return;
    }
    const Relay& r = relays_[relay];
    if (!dont_fragment || r.dont_fragment) {
        queue(r.fd, peer, data, marks);
        return;
    }
    // One datagram with DF on a socket without it (rare: a Send indication
    // with DONT-FRAGMENT on an allocation made without): sent on its own,
    // after what is queued, with the option switched on around it. Too
    // large for the path: EMSGSIZE, counted as a send error, as RFC 8656
    // 11.2 wants it not fragmented.
    flush();
    const bool v6 = !r.local.is_v4();
    const int before = dont_fragment_option(r.fd, v6);
    if (!set_dont_fragment_option(r.fd, v6, kDontFragmentOn[v6]) || !send_now(r.fd, peer, data, marks)) {
        stats_.drop(Drop::kSendError);
    }
    set_dont_fragment_option(r.fd, v6, before);  // as it was (the kernel's default, normally)
}

bool SocketIo::send_now(int fd, const Address& to, std::span<const uint8_t> data, IpMarks marks) {
    sockaddr_storage ss{};
    iovec iov{const_cast<uint8_t*>(data.data()), data.size()};
    msghdr h{};
    h.msg_name = &ss;
    h.msg_namelen = static_cast<socklen_t>(to.to_sockaddr(&ss));
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    TxControl ctl{};
    if (const size_t n = write_marks_control(ctl.data(), !to.is_v4(), marks); n != 0) {
        h.msg_control = ctl.data();
        h.msg_controllen = n;
    }
    return ::sendmsg(fd, &h, 0) >= 0;
}

void SocketIo::queue(int fd, const Address& to, std::span<const uint8_t> data, IpMarks marks) {
    if (data.size() > kTxSlot) {
        flush();  // keep order with what is already queued
        if (!send_now(fd, to, data, marks)) {
            stats_.drop(Drop::kSendError);
        }
        return;
    }
    if (tx_count_ == kTxBatch) {
        flush();
    }
    const size_t i = tx_count_++;
    uint8_t* slot = tx_buf_.data() + i * kTxSlot;
    std::memcpy(slot, data.data(), data.size());
    tx_iov_[i].iov_base = slot;
    tx_iov_[i].iov_len = data.size();
    const size_t len = to.to_sockaddr(&tx_addr_[i]);
    tx_msgs_[i].msg_hdr = msghdr{};
    tx_msgs_[i].msg_hdr.msg_name = &tx_addr_[i];
    tx_msgs_[i].msg_hdr.msg_namelen = static_cast<socklen_t>(len);
    tx_msgs_[i].msg_hdr.msg_iov = &tx_iov_[i];
    tx_msgs_[i].msg_hdr.msg_iovlen = 1;
    // Relayed data: its TOS and TTL as control messages (none for the
    // relay's own messages and unmarked traffic without a known TTL).
    if (const size_t n = write_marks_control(tx_ctl_[i].data(), !to.is_v4(), marks); n != 0) {
        tx_msgs_[i].msg_hdr.msg_control = tx_ctl_[i].data();
        tx_msgs_[i].msg_hdr.msg_controllen = n;
    }
    tx_fd_[i] = fd;
}

void SocketIo::flush() {
    if (streams_) {
        streams_->flush();
    }
    size_t i = 0;
    while (i < tx_count_) {
        // One sendmmsg per run of datagrams leaving through the same socket.
        size_t j = i + 1;
        while (j < tx_count_ && tx_fd_[j] == tx_fd_[i]) {
            ++j;
        }
        size_t done = i;
        bool retried = false;
        while (done < j) {
            const int n = ::sendmmsg(tx_fd_[i], &tx_msgs_[done], static_cast<unsigned>(j - done), 0);
            if (n <= 0) {
                // EINTR, or a pending ICMP error of a relayed socket
                // (IP_RECVERR) reported by this call and thereby cleared:
                // the datagram itself was not sent, so try it again.
                if (errno == EINTR || ((errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH ||
                                        errno == EMSGSIZE || errno == EPROTO) && !retried)) {
                    retried = errno != EINTR;
                    continue;
                }
                retried = false;
                // Skip the datagram that failed (e.g. EMSGSIZE with DF, or
                // ENOBUFS) and carry on with the rest.
                stats_.drop(Drop::kSendError);
                ++done;
                continue;
            }
            done += static_cast<size_t>(n);
            retried = false;
        }
        i = j;
    }
    tx_count_ = 0;
}

void SocketIo::receive(int fd, const Address* local, uint32_t index) {
    // A copy: the server may open or close client paths (paths_ moves).
    const Address here = local != nullptr ? *local : Address{};
    rx_.receive(fd, stats_, [&](const Address& src, std::span<const uint8_t> data, IpMarks marks) {
        if (local != nullptr) {
            server_->on_client_datagram(FiveTuple{src, here, Transport::kUdp}, data, marks);
        } else {
            server_->on_peer_datagram(index, src, data, marks);
        }
    });
}

void SocketIo::receive_errors(int fd, RelayId relay) {
    for (int budget = 0; budget < 64; ++budget) {
        sockaddr_storage peer{};
        std::array<uint8_t, 512> control{};
        std::array<uint8_t, 64> payload{};
        iovec iov{payload.data(), payload.size()};
        msghdr msg{};
        msg.msg_name = &peer;
        msg.msg_namelen = sizeof peer;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        if (::recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            return;
        }
        auto to = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&peer));
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            const bool v4 = c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR;
            const bool v6 = c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR;
            if (!(v4 || v6) || c->cmsg_len < CMSG_LEN(sizeof(sock_extended_err))) {
                continue;
            }
            sock_extended_err ee{};
            std::memcpy(&ee, CMSG_DATA(c), sizeof ee);
            if (to && (ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6)) {
                // ee_info carries the MTU for "fragmentation needed" /
                // "packet too big", which is what the ICMP attribute wants.
                server_->on_peer_icmp(relay, *to, ee.ee_type, ee.ee_code, ee.ee_info);
            }
        }
    }
}

bool SocketIo::poll_once(int timeout_ms, uint64_t* waited_us) {
    std::array<epoll_event, 64> events{};
    timespec a{};
    clock_gettime(CLOCK_MONOTONIC, &a);
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    timespec b{};
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (waited_us != nullptr) {
        *waited_us += static_cast<uint64_t>((b.tv_sec - a.tv_sec) * 1'000'000 + (b.tv_nsec - a.tv_nsec) / 1000);
    }
    if (n < 0) {
        return errno == EINTR;
    }
    for (int i = 0; i < n; ++i) {
        const uint64_t tag = events[static_cast<size_t>(i)].data.u64;
        if ((tag & DtlsIo::kTag) != 0 && (tag & (kListenerTag | StreamIo::kTag)) == 0) {
            if (dtls_) {
                dtls_->on_event(tag);
            }
        } else if ((tag & StreamIo::kTag) != 0 && (tag & kListenerTag) == 0) {
            if (streams_) {
                streams_->on_event(tag, events[static_cast<size_t>(i)].events);
            }
        } else if ((tag & kListenerTag) != 0 && (tag & kPathTag) != 0) {
            const auto idx = static_cast<uint32_t>(tag & ~(kListenerTag | kPathTag));
            // Closed by an earlier event of this batch?
            if (idx < paths_.size() && paths_[idx].fd >= 0) {
                receive(paths_[idx].fd, &paths_[idx].local, idx);
            }
        } else if ((tag & kListenerTag) != 0) {
            const auto idx = static_cast<uint32_t>(tag & ~kListenerTag);
            receive(listeners_[idx].fd, &listeners_[idx].local, idx);
        } else {
            const auto id = static_cast<RelayId>(tag);
            // The socket may have been closed by an earlier event in this batch.
            if (id < relays_.size() && relays_[id].fd >= 0 && (events[static_cast<size_t>(i)].events & EPOLLERR) != 0) {
                receive_errors(relays_[id].fd, id);
            }
            if (id < relays_.size() && relays_[id].fd >= 0 && (events[static_cast<size_t>(i)].events & EPOLLIN) != 0) {
                receive(relays_[id].fd, nullptr, id);
            }
        }
    }
    flush();
    return true;
}

}  // namespace turn::cp
