#include "echo_peer.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "clock.h"
#include "net/ip_marks.h"

namespace turn::load {

namespace {
constexpr size_t kBatch = 64;
constexpr size_t kMaxDatagram = 9216;
}  // namespace

EchoPeers::~EchoPeers() {
    stop();
    for (auto& s : socks_) {
        if (s.fd >= 0) {
            close(s.fd);
        }
    }
}

bool EchoPeers::open(const Address& ip, size_t sockets, std::string& err, const std::string& netns, int tos) {
    if (netns.empty()) {
        return open_here(ip, sockets, err, tos);
    }
    const std::string path = netns.find('/') == std::string::npos ? "/var/run/netns/" + netns : netns;
    bool ok = false;
    // setns(CLONE_NEWNET) changes only the calling thread's namespace: do it
    // in a thread of its own, so the rest of the process stays where it was.
    std::thread t([&] {
        const int nsfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) {
            err = "--peer-netns " + path + ": " + std::strerror(errno);
            return;
        }
        if (setns(nsfd, CLONE_NEWNET) != 0) {
            err = "setns " + path + ": " + std::strerror(errno);
            ::close(nsfd);
            return;
        }
        ::close(nsfd);
        ok = open_here(ip, sockets, err, tos);
    });
    t.join();
    return ok;
}

bool EchoPeers::open_here(const Address& ip, size_t sockets, std::string& err, int tos) {
    for (size_t i = 0; i < sockets; ++i) {
        Sock s;
        s.fd = socket(ip.is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s.fd < 0) {
            err = std::string("peer socket: ") + std::strerror(errno);
            return false;
        }
        const int size = 4 << 20;
        if (setsockopt(s.fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
            setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        }
        if (setsockopt(s.fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
            setsockopt(s.fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        }
        if (tos != 0 && !set_socket_tos(s.fd, ip.is_v6(), tos)) {
            err = std::string("--tos: ") + std::strerror(errno);
            close(s.fd);
            return false;
        }
        sockaddr_storage ss{};
        const size_t len = ip.with_port(0).to_sockaddr(&ss);
        if (bind(s.fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
            err = "peer bind " + ip.ip_string() + ": " + std::strerror(errno);
            close(s.fd);
            return false;
        }
        socklen_t sl = sizeof ss;
        getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &sl);
        s.addr = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).value_or(Address{});
        socks_.push_back(s);
    }
    return true;
}

void EchoPeers::allow_ip(const Address& ip) {
    std::lock_guard lock(allow_mu_);
    const Address a = ip.normalised().with_port(0);
    if (std::find(allow_.begin(), allow_.end(), a) == allow_.end()) {
        allow_.push_back(a);
        allow_gen_.fetch_add(1, std::memory_order_release);
    }
}

void EchoPeers::start(size_t threads, uint64_t deadline_ns) {
    threads = std::clamp<size_t>(threads, 1, socks_.size());
    for (size_t t = 0; t < threads; ++t) {
        threads_.emplace_back([this, t, threads, deadline_ns] { run(t, threads, deadline_ns); });
    }
}

void EchoPeers::stop() {
    stop_.store(true, std::memory_order_relaxed);
    for (auto& t : threads_) {
        t.join();
    }
    threads_.clear();
}

void EchoPeers::run(size_t first, size_t step, uint64_t deadline_ns) {
    std::vector<pollfd> fds;
    for (size_t i = first; i < socks_.size(); i += step) {
        fds.push_back({socks_[i].fd, POLLIN, 0});
    }
    // Thread-local copy of the allow list, refreshed when its generation moves.
    std::vector<Address> allow;
    uint64_t gen = ~uint64_t{0};

    std::vector<std::array<uint8_t, kMaxDatagram>> bufs(kBatch);
    std::array<mmsghdr, kBatch> in{};
    std::array<mmsghdr, kBatch> out{};
    std::array<iovec, kBatch> iov{};
    std::array<sockaddr_storage, kBatch> src{};

    while (!stop_.load(std::memory_order_relaxed) && mono_ns() < deadline_ns) {
        if (poll(fds.data(), fds.size(), 20) <= 0) {
            continue;
        }
        if (const uint64_t g = allow_gen_.load(std::memory_order_acquire); g != gen) {
            std::lock_guard lock(allow_mu_);
            allow = allow_;
            gen = g;
        }
        for (auto& p : fds) {
            if ((p.revents & POLLIN) == 0) {
                continue;
            }
            // Drain the socket, a bounded number of batches per wake-up.
            for (int round = 0; round < 16; ++round) {
                for (size_t i = 0; i < kBatch; ++i) {
                    iov[i] = {bufs[i].data(), kMaxDatagram};
                    in[i].msg_hdr = {};
                    in[i].msg_hdr.msg_iov = &iov[i];
                    in[i].msg_hdr.msg_iovlen = 1;
                    in[i].msg_hdr.msg_name = &src[i];
                    in[i].msg_hdr.msg_namelen = sizeof src[i];
                }
                const int n = recvmmsg(p.fd, in.data(), kBatch, MSG_DONTWAIT, nullptr);
                if (n <= 0) {
                    break;
                }
                size_t k = 0;
                for (int i = 0; i < n; ++i) {
                    const auto a = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&src[static_cast<size_t>(i)]));
                    bool ok = false;
                    if (a) {
                        const Address ip = a->normalised().with_port(0);
                        ok = std::find(allow.begin(), allow.end(), ip) != allow.end();
                    }
                    if (!ok) {
                        refused_.fetch_add(1, std::memory_order_relaxed);
                        continue;
                    }
                    iov[static_cast<size_t>(i)].iov_len = in[static_cast<size_t>(i)].msg_len;
                    out[k].msg_hdr = {};
                    out[k].msg_hdr.msg_iov = &iov[static_cast<size_t>(i)];
                    out[k].msg_hdr.msg_iovlen = 1;
                    out[k].msg_hdr.msg_name = &src[static_cast<size_t>(i)];
                    out[k].msg_hdr.msg_namelen = in[static_cast<size_t>(i)].msg_hdr.msg_namelen;
                    ++k;
                }
                size_t sent = 0;
                while (sent < k) {
                    const int s = sendmmsg(p.fd, out.data() + sent, static_cast<unsigned>(k - sent), MSG_DONTWAIT);
                    if (s <= 0) {
                        break;  // a full socket buffer drops the rest: that is loss the client sees
                    }
                    sent += static_cast<size_t>(s);
                }
                echoed_.fetch_add(sent, std::memory_order_relaxed);
                if (static_cast<size_t>(n) < kBatch) {
                    break;
                }
            }
        }
    }
}

}  // namespace turn::load
