#include "tcp_echo_peer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "clock.h"

namespace turn::load {

namespace {

// Bytes read at once, and the bound on what waits to be echoed per connection.
constexpr size_t kEchoBuffer = 64 * 1024;

struct Conn {
    int fd = -1;
    std::unique_ptr<uint8_t[]> buf{new uint8_t[kEchoBuffer]};
    size_t head = 0;  // [head, tail): read but not yet echoed
    size_t tail = 0;
};

}  // namespace

TcpEchoPeers::~TcpEchoPeers() {
    stop();
    for (auto& l : listeners_) {
        if (l.fd >= 0) {
            close(l.fd);
        }
    }
}

bool TcpEchoPeers::open(const Address& ip, size_t listeners, std::string& err) {
    for (size_t i = 0; i < listeners; ++i) {
        Listener l;
        l.fd = socket(ip.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l.fd < 0) {
            err = std::string("peer socket: ") + std::strerror(errno);
            return false;
        }
        sockaddr_storage ss{};
        const size_t len = ip.with_port(0).to_sockaddr(&ss);
        if (bind(l.fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0 ||
            listen(l.fd, 1024) != 0) {
            err = "TCP peer bind/listen " + ip.ip_string() + ": " + std::strerror(errno);
            close(l.fd);
            return false;
        }
        socklen_t sl = sizeof ss;
        getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &sl);
        l.addr = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).value_or(Address{});
        listeners_.push_back(l);
    }
    return true;
}

void TcpEchoPeers::allow_ip(const Address& ip) {
    std::lock_guard lock(allow_mu_);
    const Address a = ip.normalised().with_port(0);
    if (std::find(allow_.begin(), allow_.end(), a) == allow_.end()) {
        allow_.push_back(a);
    }
}

bool TcpEchoPeers::allowed(const Address& src) {
    std::lock_guard lock(allow_mu_);
    return std::find(allow_.begin(), allow_.end(), src.normalised().with_port(0)) != allow_.end();
}

void TcpEchoPeers::start(size_t threads, uint64_t deadline_ns) {
    threads = std::clamp<size_t>(threads, 1, listeners_.size());
    for (size_t t = 0; t < threads; ++t) {
        threads_.emplace_back([this, t, threads, deadline_ns] { run(t, threads, deadline_ns); });
    }
}

void TcpEchoPeers::stop() {
    stop_.store(true, std::memory_order_relaxed);
    for (auto& t : threads_) {
        t.join();
    }
    threads_.clear();
}

void TcpEchoPeers::run(size_t first, size_t step, uint64_t deadline_ns) {
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        return;
    }
    std::vector<int> mine;
    for (size_t i = first; i < listeners_.size(); i += step) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = listeners_[i].fd;
        epoll_ctl(ep, EPOLL_CTL_ADD, listeners_[i].fd, &ev);
        mine.push_back(listeners_[i].fd);
    }
    std::unordered_map<int, Conn> conns;
    auto drop = [&](int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        conns.erase(fd);
    };
    auto watch = [&](int fd, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    };
    // Sends what waits; true when all of it went (the connection may be read again).
    auto flush = [&](Conn& c) {
        while (c.head < c.tail) {
            const ssize_t n = ::send(c.fd, c.buf.get() + c.head, c.tail - c.head, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n <= 0) {
                return false;  // EAGAIN: EPOLLOUT will tell; an error shows as EPOLLERR
            }
            c.head += static_cast<size_t>(n);
            echoed_bytes_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
        }
        c.head = c.tail = 0;
        return true;
    };

    epoll_event evs[64];
    while (!stop_.load(std::memory_order_relaxed) && mono_ns() < deadline_ns) {
        const int n = epoll_wait(ep, evs, 64, 20);
        for (int i = 0; i < n; ++i) {
            const int fd = evs[i].data.fd;
            if (std::find(mine.begin(), mine.end(), fd) != mine.end()) {
                for (;;) {
                    sockaddr_storage ss{};
                    socklen_t sl = sizeof ss;
                    const int cfd = accept4(fd, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) {
                        break;
                    }
                    const auto src = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
                    if (!src || !allowed(*src)) {
                        refused_.fetch_add(1, std::memory_order_relaxed);
                        close(cfd);
                        continue;
                    }
                    // Echoes go back at once: no Nagle delay on top of the relay's.
                    const int one = 1;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    Conn& c = conns[cfd];
                    c.fd = cfd;
                    epoll_event ev{};
                    ev.events = EPOLLIN;
                    ev.data.fd = cfd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                    accepted_.fetch_add(1, std::memory_order_relaxed);
                }
                continue;
            }
            auto it = conns.find(fd);
            if (it == conns.end()) {
                continue;
            }
            Conn& c = it->second;
            // An error, or a hang-up while echoes wait to be sent: nothing more can go back.
            if ((evs[i].events & EPOLLERR) != 0 || ((evs[i].events & EPOLLHUP) != 0 && c.tail > c.head)) {
                drop(fd);
                continue;
            }
            if (c.tail > c.head) {  // waiting for room to echo what was read
                if (flush(c)) {
                    watch(fd, EPOLLIN);
                }
                continue;
            }
            // Read and echo, a bounded number of rounds per wake-up (level-triggered: epoll calls again).
            bool closed = false;
            for (int round = 0; round < 16; ++round) {
                const ssize_t r = ::recv(fd, c.buf.get(), kEchoBuffer, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    closed = true;  // the relay closed the pipe (teardown) or reset it
                    break;
                }
                if (r < 0) {
                    break;
                }
                c.head = 0;
                c.tail = static_cast<size_t>(r);
                if (!flush(c)) {
                    watch(fd, EPOLLOUT);
                    break;
                }
                if (static_cast<size_t>(r) < kEchoBuffer) {
                    break;
                }
            }
            if (closed) {
                drop(fd);
            }
        }
    }
    for (auto& [fd, c] : conns) {
        close(fd);
    }
    close(ep);
}

}  // namespace turn::load
