// bench/load/echo_peer.h: --peer-netns. The echo peer sockets must be created
// in the named network namespace (a socket stays in the namespace it was made
// in), while the calling thread and the rest of the process stay where they
// were. Needs CAP_SYS_ADMIN (unshare/setns); skipped without it.
#include "echo_peer.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace turn::load {
namespace {

ino_t ns_inode(int fd) {
    struct stat st{};
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

ino_t ns_inode(const char* path) {
    struct stat st{};
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

// The network namespace a socket belongs to (SIOCGSKNS gives an fd to it).
ino_t socket_ns_inode(int sock) {
    const int nsfd = ioctl(sock, SIOCGSKNS);
    if (nsfd < 0) {
        return 0;
    }
    const ino_t ino = ns_inode(nsfd);
    close(nsfd);
    return ino;
}

TEST(LoadEchoPeerNetns, SocketsAreCreatedInTheGivenNamespace) {
    // A fresh namespace, held by an fd: a thread unshares and opens its own ns file.
    int nsfd = -1;
    int unshare_errno = 0;
    std::thread([&] {
        if (unshare(CLONE_NEWNET) != 0) {
            unshare_errno = errno;
            return;
        }
        nsfd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    }).join();
    if (unshare_errno == EPERM) {
        GTEST_SKIP() << "needs CAP_SYS_ADMIN";
    }
    ASSERT_EQ(unshare_errno, 0);
    ASSERT_GE(nsfd, 0);
    const ino_t other = ns_inode(nsfd);
    const ino_t mine = ns_inode("/proc/thread-self/ns/net");
    ASSERT_NE(other, 0u);
    ASSERT_NE(other, mine);

    EchoPeers peers;
    std::string err;
    // 0.0.0.0: a fresh namespace's loopback is down, a wildcard bind still works.
    ASSERT_TRUE(peers.open(*Address::parse("0.0.0.0"), 2, err, "/proc/self/fd/" + std::to_string(nsfd))) << err;
    ASSERT_EQ(peers.size(), 2u);
    EXPECT_EQ(socket_ns_inode(peers.fd(0)), other);
    EXPECT_EQ(socket_ns_inode(peers.fd(1)), other);
    EXPECT_NE(peers.address(0).port, 0);
    // The calling thread did not move.
    EXPECT_EQ(ns_inode("/proc/thread-self/ns/net"), mine);
    close(nsfd);
}

TEST(LoadEchoPeerNetns, WithoutNamespaceSocketsStayHere) {
    EchoPeers peers;
    std::string err;
    ASSERT_TRUE(peers.open(*Address::parse("127.0.0.1"), 1, err)) << err;
    const ino_t s = socket_ns_inode(peers.fd(0));
    if (s == 0 && errno == EPERM) {
        GTEST_SKIP() << "SIOCGSKNS needs CAP_NET_ADMIN";
    }
    EXPECT_EQ(s, ns_inode("/proc/thread-self/ns/net"));
}

TEST(LoadEchoPeerNetns, UnknownNamespaceIsAnError) {
    EchoPeers peers;
    std::string err;
    EXPECT_FALSE(peers.open(*Address::parse("127.0.0.1"), 1, err, "bnc_no_such_namespace_here"));
    EXPECT_NE(err.find("/var/run/netns/bnc_no_such_namespace_here"), std::string::npos) << err;
    EXPECT_EQ(peers.size(), 0u);
}

}  // namespace
}  // namespace turn::load
