// SocketIo against the kernel: a Send indication's DONT-FRAGMENT (RFC 8656
// section 11.2) on a relayed socket opened without it. In a network
// namespace of its own (a forked child unshares one, so nothing outside is
// touched) whose loopback has a 1280-byte MTU, a 2000-byte datagram from the
// relayed socket is fragmented and delivered without DF, refused (EMSGSIZE,
// counted as send_error) with it, and delivered again afterwards: the option
// is switched back. Needs root (CAP_NET_ADMIN) for the namespace; skipped
// without it. On plain loopback: the TOS and TTL of relayed datagrams.
#include <gtest/gtest.h>

#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "core/stats.h"
#include "io/socket_io.h"
#include "net/address.h"
#include "net/ip_marks.h"
#include "udp_socket.h"

namespace turn::cp {
namespace {

// Brings lo up with the given MTU in the current network namespace.
bool loopback_up(int mtu) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        return false;
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    ifr.ifr_mtu = mtu;
    bool ok = ::ioctl(fd, SIOCSIFMTU, &ifr) == 0;
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
    ok = ok && ::ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
    ::close(fd);
    return ok;
}

// Bytes of the next datagram on fd within 1 s, -1 if none.
long receive_one(int fd) {
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::vector<uint8_t> b(70000);
    return ::recv(fd, b.data(), b.size(), 0);
}

// The scenario, in the child. Result codes: 0 pass, 10+ which step failed,
// 77 no namespace (not root).
int run_in_namespace() {
    if (::unshare(CLONE_NEWNET) != 0) {
        return 77;
    }
    if (!loopback_up(1280)) {
        return 10;
    }
    const int peer = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in pa{};
    pa.sin_family = AF_INET;
    pa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t plen = sizeof pa;
    if (peer < 0 || ::bind(peer, reinterpret_cast<sockaddr*>(&pa), sizeof pa) != 0 ||
        ::getsockname(peer, reinterpret_cast<sockaddr*>(&pa), &plen) != 0) {
        return 11;
    }
    const Address peer_addr = *Address::parse("127.0.0.1:" + std::to_string(ntohs(pa.sin_port)));
    Stats stats;
    SocketIo io(stats);
    RelayId id = 0;
    if (io.open_relay(*Address::parse("127.0.0.1:0"), false, id) != OpenResult::kOk) {
        return 12;
    }
    const std::vector<uint8_t> big(2000, 0x5a);
    io.send_to_peer(id, peer_addr, big, false);
    io.flush();
    if (receive_one(peer) != 2000) {
        return 13;  // fragmented by the kernel and reassembled: arrives whole
    }
    io.send_to_peer(id, peer_addr, big, true);
    io.flush();
    if (stats.drops_of(Drop::kSendError) != 1) {
        return 14;  // DF: larger than the path MTU, so refused, not fragmented
    }
    if (receive_one(peer) != -1) {
        return 15;
    }
    io.send_to_peer(id, peer_addr, big, false);
    io.flush();
    if (receive_one(peer) != 2000 || stats.drops_of(Drop::kSendError) != 1) {
        return 16;  // DF was for that one datagram only
    }
    const std::vector<uint8_t> small(1000, 0x33);
    io.send_to_peer(id, peer_addr, small, true);
    io.flush();
    if (receive_one(peer) != 1000) {
        return 17;  // within the MTU it leaves normally
    }
    ::close(peer);
    return 0;
}

TEST(SocketIoTest, SendIndicationDontFragmentAppliesToThatDatagram) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::_exit(run_in_namespace());
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        GTEST_SKIP() << "needs root for a network namespace";
    }
    EXPECT_EQ(WEXITSTATUS(status), 0) << "step that failed (see run_in_namespace)";
}

// A relayed datagram's marks leave as control messages of its own
// (RFC 8656 section 14): TOS and TTL / Hop Limit on every send path of a
// relayed socket (the sendmmsg batch, a datagram too large for a batch
// slot, a DONT-FRAGMENT one sent on its own), each family with its own
// options (IP_TOS / IP_TTL, IPV6_TCLASS / IPV6_HOPLIMIT); no marks: the
// socket's defaults, nothing carried over from the datagram before.
TEST(SocketIoTest, RelayedDatagramsLeaveWithTheirMarks) {
    for (const bool v6 : {false, true}) {
        SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
        const Address ip = *Address::parse(v6 ? "[::1]:0" : "127.0.0.1:0");
        const test::UdpSocket peer(ip);
        ASSERT_TRUE(receive_socket_tos(peer.fd(), v6));
        ASSERT_TRUE(receive_socket_ttl(peer.fd(), v6));
        Stats stats;
        SocketIo io(stats);
        RelayId id = 0;
        ASSERT_EQ(io.open_relay(ip, false, id), OpenResult::kOk);
        const std::vector<uint8_t> small(100, 0x11);
        const std::vector<uint8_t> big(SocketIo::kTxSlot + 1000, 0x22);  // past a batch slot: sent at once
        struct Case {
            const std::vector<uint8_t>* data;
            bool dont_fragment;
            IpMarks marks;
        };
        const Case cases[] = {
            {&small, false, {.tos = 0xB8, .ttl = 7}},
            {&small, false, {}},
            {&small, false, {.ttl = 255}},
            {&big, false, {.tos = 0x01, .ttl = 5}},
            {&small, true, {.tos = 0x03, .ttl = 3}},  // DF switched on around it
            {&small, false, {.tos = 0x8A}},
        };
        for (const Case& c : cases) {
            io.send_to_peer(id, peer.local(), *c.data, c.dont_fragment, c.marks);
            io.flush();
            const auto got = test::recv_with_marks(peer.fd());
            ASSERT_TRUE(got);
            EXPECT_EQ(got->bytes.size(), c.data->size());
            EXPECT_EQ(got->tos, c.marks.tos);
            EXPECT_EQ(got->ttl, c.marks.ttl != 0 ? c.marks.ttl : test::default_ttl(v6));
        }
        EXPECT_EQ(stats.drops_of(Drop::kSendError), 0u);
    }
}

}  // namespace
}  // namespace turn::cp
