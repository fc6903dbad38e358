// A test client's UDP socket on loopback, shared by the tests that talk to
// a real turn-relay process.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "net/address.h"
#include "net/ip_marks.h"

namespace turn::cp::test {

// The next datagram on fd within timeout_ms, its TOS / Traffic Class byte
// and its TTL / Hop Limit (as far as the socket asked for them:
// turn::receive_socket_tos, turn::receive_socket_ttl); flags MSG_PEEK
// leaves it queued (for a DTLS client's SSL to read).
struct WithMarks {
    std::vector<uint8_t> bytes;
    int tos = -1;  // -1: no TOS control message
    int ttl = -1;  // -1: no TTL / Hop Limit control message
};
inline std::optional<WithMarks> recv_with_marks(int fd, int timeout_ms = 2000, int flags = 0) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
        return std::nullopt;
    }
    WithMarks g;
    g.bytes.resize(65536);
    iovec iov{g.bytes.data(), g.bytes.size()};
    alignas(cmsghdr) uint8_t ctl[128];
    msghdr h{};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = ctl;
    h.msg_controllen = sizeof ctl;
    const ssize_t n = ::recvmsg(fd, &h, flags);
    if (n < 0) {
        return std::nullopt;
    }
    g.bytes.resize(static_cast<size_t>(n));
    const ReceivedMarks r = received_marks(h);
    g.tos = r.tos;
    g.ttl = r.ttl;
    return g;
}

// The TTL / Hop Limit a UDP socket of that family sends with by default
// (what the relay's own messages leave with): 64 unless the sysctls say
// otherwise.
inline int default_ttl(bool v6) {
    const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int v = -1;
    socklen_t len = sizeof v;
    ::getsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL, &v, &len);
    ::close(fd);
    return v;
}

class UdpSocket {
public:
    // Port 0: a port no earlier socket of this process had. The relays under
    // test outlive the clients, and an allocation stays until it expires, so
    // a new client on a reused port would find the old client's allocation
    // (437 Allocation Mismatch) — a flake that hit CI once.
    explicit UdpSocket(const Address& local) {
        static std::set<uint16_t> used;
        for (int attempt = 0; attempt < 64; attempt++) {
            fd_ = ::socket(local.is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            sockaddr_storage ss{};
            const size_t len = local.to_sockaddr(&ss);
            EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)), 0);
            if (local.port != 0 || used.insert(this->local().port).second) {
                return;
            }
            ::close(fd_);
        }
        ADD_FAILURE() << "no fresh UDP port";
    }
    ~UdpSocket() { ::close(fd_); }
    UdpSocket(const UdpSocket&) = delete;
    UdpSocket& operator=(const UdpSocket&) = delete;

    Address local() const {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
        return *Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
    }
    void send(const Address& to, std::span<const uint8_t> data) const {
        sockaddr_storage ss{};
        const size_t len = to.to_sockaddr(&ss);
        ::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
    }
    std::optional<std::vector<uint8_t>> recv(int timeout_ms = 2000, Address* from = nullptr) const {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) {
            return std::nullopt;
        }
        std::vector<uint8_t> buf(65536);
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        const ssize_t n = ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
        if (n < 0) {
            return std::nullopt;
        }
        buf.resize(static_cast<size_t>(n));
        if (from != nullptr) {
            *from = *Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
        }
        return buf;
    }
    int fd() const { return fd_; }

private:
    int fd_ = -1;
};

}  // namespace turn::cp::test
