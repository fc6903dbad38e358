// bench/load/tcp_echo_peer.h: the TCP echo peers of --mode tcp-relay, on real
// loopback sockets: an allowed source gets every byte back in order, also
// when it writes far more than it reads at first (the echo waits, bounded,
// for room instead of dropping); a source that is not allowed is closed
// unserved and counted.
#include "tcp_echo_peer.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "clock.h"

namespace turn::load {
namespace {

// A blocking TCP connection from `source_ip` (port 0) to `to`; -1 on failure.
int connect_from(const char* source_ip, const Address& to) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage src{};
    const size_t src_len = Address::parse(source_ip)->with_port(0).to_sockaddr(&src);
    sockaddr_storage dst{};
    const size_t dst_len = to.to_sockaddr(&dst);
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), static_cast<socklen_t>(src_len)) != 0 ||
        connect(fd, reinterpret_cast<sockaddr*>(&dst), static_cast<socklen_t>(dst_len)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

TEST(LoadTcpEchoPeer, EchoesEveryByteInOrderWithBackPressure) {
    TcpEchoPeers peers;
    std::string err;
    ASSERT_TRUE(peers.open(*Address::parse("127.0.0.1"), 1, err)) << err;
    peers.allow_ip(*Address::parse("127.0.0.1:5555"));  // the port does not matter
    peers.start(1, mono_ns() + 20 * kNsPerSec);
    const int fd = connect_from("127.0.0.1", peers.address(0));
    ASSERT_GE(fd, 0);
    // 4 MiB written before reading anything: more than the socket buffers
    // and the peer's 64 KiB hold, so the peer must wait for room, not drop.
    std::vector<uint8_t> out(4 << 20);
    for (size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<uint8_t>(i * 7 + i / 251);
    }
    std::vector<uint8_t> back;
    back.reserve(out.size());
    size_t first_read_at = 0;  // bytes written before the first read
    size_t sent = 0;
    const uint64_t deadline = mono_ns() + 15 * kNsPerSec;
    while (back.size() < out.size() && mono_ns() < deadline) {
        pollfd p{fd, static_cast<short>(POLLIN | (sent < out.size() ? POLLOUT : 0)), 0};
        ASSERT_GE(poll(&p, 1, 100), 0);
        bool stalled = (p.revents & POLLOUT) == 0;
        if (!stalled && sent < out.size()) {
            const ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_DONTWAIT);
            stalled = n <= 0;
            if (n > 0) {
                sent += static_cast<size_t>(n);
            }
        }
        // Read only when writing stalls (or is done): until then the echo
        // direction backs up and the peer has to hold its echo.
        if ((p.revents & POLLIN) != 0 && (stalled || sent == out.size())) {
            uint8_t buf[65536];
            const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            ASSERT_NE(n, 0) << "the peer closed after " << back.size() << " bytes";
            if (n > 0) {
                first_read_at = back.empty() ? sent : first_read_at;
                back.insert(back.end(), buf, buf + n);
            }
        }
    }
    EXPECT_GT(first_read_at, size_t{64} << 10) << "writing never stalled: no back-pressure was exercised";
    EXPECT_EQ(back.size(), out.size());
    EXPECT_TRUE(back == out) << "the echo differs from what was sent";
    close(fd);
    peers.stop();
    EXPECT_EQ(peers.accepted(), 1u);
    EXPECT_EQ(peers.refused(), 0u);
    EXPECT_EQ(peers.echoed_bytes(), out.size());
}

TEST(LoadTcpEchoPeer, SourceNotAllowedIsClosedAndCounted) {
    TcpEchoPeers peers;
    std::string err;
    ASSERT_TRUE(peers.open(*Address::parse("127.0.0.1"), 2, err)) << err;
    peers.allow_ip(*Address::parse("127.0.0.1"));
    peers.start(2, mono_ns() + 20 * kNsPerSec);
    // 127.0.0.2 is loopback too, but not a relayed address's IP.
    const int fd = connect_from("127.0.0.2", peers.address(1));
    ASSERT_GE(fd, 0);
    const uint8_t hello[4] = {1, 2, 3, 4};
    send(fd, hello, sizeof hello, MSG_NOSIGNAL);
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    uint8_t buf[16];
    EXPECT_LE(recv(fd, buf, sizeof buf, 0), 0);  // closed (or reset), nothing echoed
    close(fd);
    peers.stop();
    EXPECT_EQ(peers.refused(), 1u);
    EXPECT_EQ(peers.accepted(), 0u);
    EXPECT_EQ(peers.echoed_bytes(), 0u);
}

}  // namespace
}  // namespace turn::load
