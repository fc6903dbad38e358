// bench/load/dtls_conn.h: turn-load's DTLS client session against an
// OpenSSL DTLS server in the test (a UDP socket on loopback): the handshake
// (refused, timed out, certificate not accepted, a lost flight retransmitted),
// one message per record both ways (sent now, or sealed for the caller's
// sendmmsg, and decrypted from the socket or from a datagram handed over),
// input that is not a valid record dropped without breaking the session, and
// the server's close_notify ending it.
#include "dtls_conn.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

#include "../controlplane/cert_files.h"
#include "clock.h"

namespace turn::load {
namespace {

using Bytes = std::vector<uint8_t>;

Address local_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).value_or(Address{});
}

// A UDP socket on 127.0.0.1, bound to any port; blocking with a 3 s receive timeout.
int bound_udp() {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    const timeval tv{3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

// The client's socket, as TurnSession makes it: non-blocking, connected to the server.
int client_udp(const Address& server) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_storage ss{};
    const size_t len = server.to_sockaddr(&ss);
    connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
    return fd;
}

std::unique_ptr<TlsClient> dtls_client(bool verify) {
    std::string err;
    auto c = TlsClient::create({verify, "", "turn.test", true}, err);
    EXPECT_NE(c, nullptr) << err;
    return c;
}

// OpenSSL's DTLS server on one UDP socket, for one client.
struct DtlsServer {
    cp::test::CertFiles certs;
    SSL_CTX* ctx = SSL_CTX_new(DTLS_server_method());
    int fd = bound_udp();
    Address addr = local_address(fd);
    SSL* ssl = nullptr;

    DtlsServer() {
        SSL_CTX_use_certificate_chain_file(ctx, certs.cert.c_str());
        SSL_CTX_use_PrivateKey_file(ctx, certs.key.c_str(), SSL_FILETYPE_PEM);
    }
    ~DtlsServer() {
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        ERR_clear_error();
    }
    // Waits for the client's first datagram (dropping `drop_first` of them,
    // as a lossy path would), then runs the handshake on the socket connected
    // to the client.
    bool accept(int drop_first = 0) {
        std::array<uint8_t, 2048> buf{};
        for (int i = 0; i < drop_first; ++i) {
            if (recv(fd, buf.data(), buf.size(), 0) <= 0) {
                return false;
            }
        }
        sockaddr_storage from{};
        socklen_t len = sizeof from;
        if (recvfrom(fd, buf.data(), buf.size(), MSG_PEEK, reinterpret_cast<sockaddr*>(&from), &len) <= 0 ||
            connect(fd, reinterpret_cast<sockaddr*>(&from), len) != 0) {
            return false;
        }
        BIO* b = BIO_new_dgram(fd, BIO_NOCLOSE);
        BIO_ctrl(b, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &from);
        ssl = SSL_new(ctx);
        SSL_set_bio(ssl, b, b);
        return SSL_accept(ssl) == 1;
    }
    Bytes read_record() {
        Bytes b(DtlsConn::kMaxRecord);
        const int n = SSL_read(ssl, b.data(), static_cast<int>(b.size()));
        b.resize(n > 0 ? static_cast<size_t>(n) : 0);
        return b;
    }
    void write_record(const Bytes& m) {
        ASSERT_EQ(SSL_write(ssl, m.data(), static_cast<int>(m.size())), static_cast<int>(m.size()));
    }
};

Bytes message(size_t n, uint8_t fill) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) {
        b[i] = static_cast<uint8_t>(fill + i);
    }
    return b;
}

// The next message the client decrypts from its socket, waiting up to `wait_ms`.
Bytes client_read(DtlsConn& c, IoStatus& st, uint64_t wait_ms = 2000) {
    const uint64_t deadline = mono_ns() + wait_ms * kNsPerMs;
    std::span<const uint8_t> m;
    while ((st = c.read(m, true)) == IoStatus::kAgain && mono_ns() < deadline) {
        c.wait(deadline);
    }
    return st == IoStatus::kOk ? Bytes(m.begin(), m.end()) : Bytes{};
}

// The next raw datagram on the client's socket (not decrypted), waiting up to 2 s.
Bytes raw_datagram(DtlsConn& c, int fd) {
    Bytes b(DtlsConn::kMaxRecord + DtlsConn::kMaxOverhead);
    c.wait(mono_ns() + 2 * kNsPerSec);
    const ssize_t n = recv(fd, b.data(), b.size(), MSG_DONTWAIT);
    b.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return b;
}

TEST(LoadDtlsConn, RefusedWhenNothingListens) {
    const int probe = bound_udp();
    const Address dead = local_address(probe);
    close(probe);
    auto tls = dtls_client(false);
    const int fd = client_udp(dead);
    std::string err;
    ConnectError why = ConnectError::kNone;
    {
        DtlsConn c;
        EXPECT_FALSE(c.handshake(fd, *tls, dead, mono_ns() + 2 * kNsPerSec, err, why));
        EXPECT_EQ(why, ConnectError::kRefused);
        EXPECT_NE(err.find("Connection refused"), std::string::npos) << err;
        EXPECT_TRUE(c.broken());
    }
    close(fd);
}

TEST(LoadDtlsConn, HandshakeEndsAtItsDeadlineWhenNothingAnswers) {
    const int silent = bound_udp();
    const Address addr = local_address(silent);
    auto tls = dtls_client(false);
    const int fd = client_udp(addr);
    std::string err;
    ConnectError why = ConnectError::kNone;
    const uint64_t t0 = mono_ns();
    {
        DtlsConn c;
        EXPECT_FALSE(c.handshake(fd, *tls, addr, t0 + 300 * kNsPerMs, err, why));
    }
    const uint64_t took = mono_ns() - t0;
    EXPECT_EQ(why, ConnectError::kTimeout);
    EXPECT_NE(err.find("timed out"), std::string::npos) << err;
    EXPECT_GE(took, 300 * kNsPerMs);
    EXPECT_LT(took, 1500 * kNsPerMs);
    close(fd);
    close(silent);
}

TEST(LoadDtlsConn, CertificateThatDoesNotVerifyIsNamed) {
    DtlsServer srv;
    auto tls = dtls_client(true);  // the system's CAs: the test's self-signed certificate is not among them
    const int fd = client_udp(srv.addr);
    std::thread server([&] { srv.accept(); });
    std::string err;
    ConnectError why = ConnectError::kNone;
    {
        DtlsConn c;
        EXPECT_FALSE(c.handshake(fd, *tls, srv.addr, mono_ns() + 3 * kNsPerSec, err, why));
        EXPECT_EQ(why, ConnectError::kDtlsHandshake);
        EXPECT_NE(err.find("certificate not accepted"), std::string::npos) << err;
    }
    server.join();
    close(fd);
}

TEST(LoadDtlsConn, LostClientHelloIsRetransmitted) {
    DtlsServer srv;
    auto tls = dtls_client(false);
    const int fd = client_udp(srv.addr);
    bool accepted = false;
    std::thread server([&] { accepted = srv.accept(1); });
    std::string err;
    ConnectError why = ConnectError::kNone;
    const uint64_t t0 = mono_ns();
    {
        DtlsConn c;
        EXPECT_TRUE(c.handshake(fd, *tls, srv.addr, t0 + 4 * kNsPerSec, err, why)) << err;
        server.join();
        EXPECT_TRUE(accepted);
        // OpenSSL's first timer is 1 s: the second ClientHello went out after it.
        EXPECT_GE(mono_ns() - t0, 900 * kNsPerMs);
    }
    close(fd);
}

TEST(LoadDtlsConn, OneMessagePerRecordBadInputDroppedCloseNotifyEnds) {
    DtlsServer srv;
    auto tls = dtls_client(false);
    const int fd = client_udp(srv.addr);
    std::thread server([&] { EXPECT_TRUE(srv.accept()); });
    std::string err;
    ConnectError why = ConnectError::kNone;
    DtlsConn c;
    ASSERT_TRUE(c.handshake(fd, *tls, srv.addr, mono_ns() + 3 * kNsPerSec, err, why)) << err;
    server.join();
    ASSERT_NE(srv.ssl, nullptr);

    // Client to server: sent now, and sealed into a buffer the caller sends.
    const Bytes a = message(100, 1);
    const Bytes b = message(8004, 7);
    EXPECT_TRUE(c.send(a));
    Bytes rec(b.size() + DtlsConn::kMaxOverhead);
    const size_t n = c.seal(b, rec);
    ASSERT_GT(n, b.size());
    ASSERT_LE(n, rec.size());
    ASSERT_EQ(send(fd, rec.data(), n, 0), static_cast<ssize_t>(n));
    EXPECT_EQ(srv.read_record(), a);
    EXPECT_EQ(srv.read_record(), b);

    // Server to client: each record is one message, read from the socket.
    IoStatus st = IoStatus::kOk;
    for (size_t size : {20, 1, 9000}) {
        srv.write_record(message(size, static_cast<uint8_t>(size)));
        EXPECT_EQ(client_read(c, st), message(size, static_cast<uint8_t>(size)));
    }

    // A datagram handed over (recvmmsg's path): its message, then nothing more.
    srv.write_record(message(64, 3));
    const Bytes good = raw_datagram(c, fd);
    ASSERT_FALSE(good.empty());
    std::span<const uint8_t> m;
    // Not records: dropped, the session goes on.
    Bytes junk = message(50, 200);
    Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
    Bytes flipped = good;
    flipped.back() ^= 0x55;  // the tag no longer verifies
    Bytes long_header = good;
    long_header[11] = 0xFF;  // record length beyond the datagram
    long_header[12] = 0xFF;
    for (const Bytes* bad : {&junk, &cut, &flipped, &long_header}) {
        c.feed(*bad);
        EXPECT_EQ(c.read(m, false), IoStatus::kAgain);
        EXPECT_FALSE(c.broken());
    }
    c.feed(std::span<const uint8_t>{});  // an empty datagram
    EXPECT_EQ(c.read(m, false), IoStatus::kAgain);
    c.feed(good);
    ASSERT_EQ(c.read(m, false), IoStatus::kOk);
    EXPECT_EQ(Bytes(m.begin(), m.end()), message(64, 3));
    EXPECT_EQ(c.read(m, false), IoStatus::kAgain);  // fed datagram used up; the socket is not read
    c.feed(good);                                   // a replay
    EXPECT_EQ(c.read(m, false), IoStatus::kAgain);
    // Junk straight from the server's address, on the socket.
    ASSERT_EQ(send(srv.fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    EXPECT_TRUE(client_read(c, st, 200).empty());
    EXPECT_EQ(st, IoStatus::kAgain);
    EXPECT_FALSE(c.broken());
    // Still working both ways.
    EXPECT_TRUE(c.send(a));
    EXPECT_EQ(srv.read_record(), a);

    // The server's close_notify ends the session.
    SSL_shutdown(srv.ssl);
    client_read(c, st);
    EXPECT_EQ(st, IoStatus::kClosed);
    EXPECT_TRUE(c.broken());
    EXPECT_EQ(c.break_reason(), "dtls_closed");
    EXPECT_FALSE(c.send(a));
    EXPECT_EQ(c.seal(a, rec), 0u);
    close(fd);
}

}  // namespace
}  // namespace turn::load
