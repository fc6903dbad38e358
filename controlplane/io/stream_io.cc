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
#include "turn/stream_framing.h"

namespace turn::cp {

namespace {

constexpr uint64_t kListenerBit = 1ull << 61;
constexpr uint32_t kIndexMask = (1u << 24) - 1;
constexpr size_t kReadSize = 64 * 1024;
constexpr int kReadsPerEvent = 8;     // then other connections get their turn
constexpr int kAcceptsPerEvent = 64;

}  // namespace

StreamIo::StreamIo(Shared& shared, Stats& stats, int epoll_fd)
    : shared_(shared), stats_(stats), epoll_fd_(epoll_fd), rx_(kReadSize) {}

StreamIo::~StreamIo() {
    for (uint32_t i = 0; i < conns_.size(); ++i) {
        if (conns_[i] && conns_[i]->fd >= 0) {
            close(i, ConnClose::kShutdown, false);
        }
    }
    for (auto& l : listeners_) {
        ::close(l.fd);
    }
}

std::string StreamIo::add_listener(const Address& local, SSL_CTX* tls) {
    const int fd = ::socket(local.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const std::string what = std::string(tls != nullptr ? "TLS" : "TCP") + " on " + local.to_string();
    if (fd < 0) {
        return "cannot listen for " + what + ": " + std::strerror(errno);
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (local.is_v6()) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage ss{};
    const size_t len = local.to_sockaddr(&ss);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0 || ::listen(fd, 1024) != 0) {
        const std::string e = std::strerror(errno);
        ::close(fd);
        return "cannot listen for " + what + ": " + e;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTag | kListenerBit | listeners_.size();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    listeners_.push_back(Listener{fd, local, tls});
    return {};
}

void StreamIo::on_event(uint64_t t, uint32_t events) {
    if ((t & kListenerBit) != 0) {
        const size_t i = t & kIndexMask;
        if (i < listeners_.size()) {
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
            return;  // EAGAIN, or an error of that one connection (ECONNABORTED, EMFILE ...)
        }
        const size_t kd = l.tls != nullptr ? 1 : 0;
        stats_.connections_accepted[kd].add();
        auto client = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
        if (!client || shared_.connections.load(std::memory_order_relaxed) >=
                           static_cast<int64_t>(shared_.config.tcp_max_connections)) {
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
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        SSL* ssl = nullptr;
        if (l.tls != nullptr) {
            ssl = SSL_new(l.tls);
            if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
                SSL_free(ssl);
                ::close(fd);
                ERR_clear_error();
                stats_.connections_closed[kd][static_cast<size_t>(ConnClose::kTlsHandshake)].add();
                continue;
            }
            SSL_set_accept_state(ssl);
        }
        uint32_t idx = 0;
        if (!free_.empty()) {
            idx = free_.back();
            free_.pop_back();
        } else {
            idx = static_cast<uint32_t>(conns_.size());
            conns_.push_back(std::make_unique<Conn>());
        }
        Conn& c = *conns_[idx];
        c.fd = fd;
        c.ssl = ssl;
        c.handshake_done = ssl == nullptr;
        c.want_write = false;
        c.queued = false;
        c.ft = FiveTuple{*client, server, ssl != nullptr ? Transport::kTls : Transport::kTcp};
        c.last_rx_ms = now_ms_;
        c.in.clear();
        c.out.clear();
        c.out_off = 0;
        // A client reusing a 5-tuple whose old connection this loop has not
        // seen close yet: the old one is gone as far as the kernel knows.
        if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end()) {
            close(it->second, ConnClose::kClient);
        }
        by_tuple_[c.ft] = idx;
        shared_.connections.fetch_add(1, std::memory_order_relaxed);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag(idx);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
        if (ssl != nullptr) {
            read(idx);  // nothing to read yet, normally; sets up the handshake state
        }
    }
}

void StreamIo::read(uint32_t idx) {
    for (int k = 0; k < kReadsPerEvent; ++k) {
        Conn& c = *conns_[idx];
        if (c.fd < 0) {
            return;
        }
        ssize_t n = 0;
        if (c.ssl == nullptr) {
            n = ::recv(c.fd, rx_.data(), rx_.size(), MSG_DONTWAIT);
            if (n == 0) {
                close(idx, ConnClose::kClient);
                return;
            }
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    close(idx, ConnClose::kClient);
                }
                return;
            }
        } else {
            ERR_clear_error();
            const int r = SSL_read(c.ssl, rx_.data(), static_cast<int>(rx_.size()));
            if (!c.handshake_done && SSL_is_init_finished(c.ssl)) {
                c.handshake_done = true;
            }
            if (r <= 0) {
                const int e = SSL_get_error(c.ssl, r);
                if (e == SSL_ERROR_WANT_READ) {
                    set_want_write(c, idx, !c.out.empty());
                    return;
                }
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_want_write(c, idx, true);  // handshake output waits for room
                    return;
                }
                ERR_clear_error();
                close(idx, !c.handshake_done && e != SSL_ERROR_ZERO_RETURN ? ConnClose::kTlsHandshake
                                                                             : ConnClose::kClient);
                return;
            }
            n = r;
        }
        if (!consume(idx, std::span<const uint8_t>(rx_.data(), static_cast<size_t>(n)))) {
            return;
        }
        if (c.ssl == nullptr && static_cast<size_t>(n) < rx_.size()) {
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
        c.last_rx_ms = now_ms_;
        server_->on_client_datagram(c.ft, bytes.subspan(used, f.message_len));
        used += f.consumed;
        if (conns_[idx]->fd < 0) {
            return false;
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
    if (c.out_off != 0 && c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    }
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
    // next accept, which does not happen in here.
    for (size_t i = 0; i < dirty_.size(); ++i) {
        const uint32_t idx = dirty_[i];
        Conn& c = *conns_[idx];
        c.queued = false;
        if (c.fd >= 0 && !c.want_write) {
            write(idx);
        }
    }
    dirty_.clear();
}

void StreamIo::write(uint32_t idx) {
    Conn& c = *conns_[idx];
    while (c.out_off < c.out.size()) {
        const size_t len = c.out.size() - c.out_off;
        if (c.ssl == nullptr) {
            const ssize_t n = ::send(c.fd, c.out.data() + c.out_off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    set_want_write(c, idx, true);
                    return;
                }
                if (errno == EINTR) {
                    continue;
                }
                close(idx, ConnClose::kSendError);
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
                    set_want_write(c, idx, true);
                    return;
                }
                ERR_clear_error();
                close(idx, ConnClose::kSendError);
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
}

void StreamIo::set_want_write(Conn& c, uint32_t idx, bool on) {
    if (c.want_write == on) {
        return;
    }
    c.want_write = on;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u64 = tag(idx);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void StreamIo::close(uint32_t idx, ConnClose why, bool notify) {
    Conn& c = *conns_[idx];
    if (c.fd < 0) {
        return;
    }
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    // Answers to the messages before a bad one (or before shutdown) go out
    // if the socket takes them now; nothing waits for them.
    const bool graceful = why == ConnClose::kBadFrame || why == ConnClose::kIdle || why == ConnClose::kShutdown;
    if (graceful && c.out_off < c.out.size() && c.handshake_done) {
        const size_t len = c.out.size() - c.out_off;
        if (c.ssl == nullptr) {
            (void)!::send(c.fd, c.out.data() + c.out_off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            (void)SSL_write(c.ssl, c.out.data() + c.out_off, static_cast<int>(std::min<size_t>(len, 1 << 30)));
        }
    }
    if (c.ssl != nullptr) {
        if (c.handshake_done && why != ConnClose::kSendError && why != ConnClose::kClient) {
            SSL_shutdown(c.ssl);  // close_notify, best effort
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
    if (auto it = by_tuple_.find(c.ft); it != by_tuple_.end() && it->second == idx) {
        by_tuple_.erase(it);
    }
    std::vector<uint8_t>().swap(c.in);
    std::vector<uint8_t>().swap(c.out);
    c.out_off = 0;
    free_.push_back(idx);
    if (notify && server_ != nullptr) {
        server_->on_client_closed(ft);
    }
}

void StreamIo::expire(uint64_t now_ms) {
    now_ms_ = now_ms;
    if (now_ms - last_expire_ms_ < 1000) {
        return;
    }
    last_expire_ms_ = now_ms;
    const uint64_t idle_ms = uint64_t{shared_.config.tcp_idle_timeout_s} * 1000;
    for (uint32_t i = 0; i < conns_.size(); ++i) {
        const Conn& c = *conns_[i];
        if (c.fd >= 0 && now_ms - c.last_rx_ms >= idle_ms && !server_->has_allocation(c.ft)) {
            close(i, ConnClose::kIdle);
        }
    }
}

}  // namespace turn::cp
