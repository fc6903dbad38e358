// TURN over DTLS (controlplane/io/dtls_io.*, the DTLS context of io/tls.*):
// a real EventLoop in this process with a DTLS listener on loopback, driven
// by an OpenSSL DTLS client on a real UDP socket and by raw datagrams. A
// source gets no state before its cookie checks out, and the answer to a
// cookie-less ClientHello is smaller than it; datagrams that start no
// handshake and belong to no session are dropped and counted; a session
// relays (Send/Data indications, ChannelData both ways), and its end
// (close_notify, idle timeout, the loop's end) ends its allocation and tells
// the client; a new handshake on the same 5-tuple replaces the session; the
// [dtls] limits refuse sessions with a named reason; a reload's certificate
// goes to new sessions; a datagram larger than the MTU is one record.
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "cert_files.h"
#include "core/config.h"
#include "core/offload.h"
#include "core/shared.h"
#include "io/event_loop.h"
#include "io/tls.h"
#include "loop_wait.h"
#include "loopback_util.h"
#include "stun_client.h"
#include "turn_requester.h"
#include "udp_socket.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;
using C = stun::Class;
constexpr size_t kDtls = 2;  // Stats' connection kind of DTLS sessions

uint64_t closed(const Stats& s, ConnClose why) { return test::closed(s, kDtls, why); }

const Address kLoopback = *Address::parse("127.0.0.1:0");

// One event loop with a DTLS listener on loopback; loopback peers allowed.
class DtlsLoop {
public:
    explicit DtlsLoop(void (*tune)(Config&) = nullptr) {
        Config c;
        dtls_ = Address::parse("127.0.0.1")->with_port(free_port(SOCK_DGRAM));
        c.listen_dtls = {dtls_};
        c.relay_ips = {*Address::parse("127.0.0.1")};
        c.allow_peers = {*Prefix::parse("127.0.0.0/8")};
        c.users = {{"alice", "alice-pw"}};
        c.tls_certificate = certs_.cert;
        c.tls_private_key = certs_.key;
        if (tune != nullptr) {
            tune(c);
        }
        std::string err;
        shared_ = Shared::create(c, err);
        EXPECT_TRUE(shared_) << err;
        EXPECT_TRUE(tls_.load(c.tls_certificate, c.tls_private_key, err)) << err;
        loop_ = std::make_unique<EventLoop>(*shared_, offload_, 0);
        EXPECT_EQ(loop_->bind_listeners(&tls_), "");
        loop_->start();
    }
    ~DtlsLoop() { stop(); }
    void stop() {
        if (loop_) {
            loop_->stop();
            loop_.reset();
        }
    }
    const Address& dtls() const { return dtls_; }
    const Stats& stats() { return loop_->stats(); }
    Shared& shared() { return *shared_; }
    TlsContexts& tls() { return tls_; }

private:
    CertFiles certs_;
    Address dtls_;
    std::unique_ptr<Shared> shared_;
    OffloadHook offload_;
    TlsContexts tls_;
    std::unique_ptr<EventLoop> loop_;
};

// An OpenSSL DTLS 1.2 client on a connected UDP socket (certificate not
// verified: the tests check what the relay does, not the PKI). A second
// client may take over the socket of a first one (the same 5-tuple).
class DtlsClient : public TurnRequester<DtlsClient> {
public:
    DtlsClient(const Address& server, int reuse_fd = -1) {
        creds_.user = "alice";
        creds_.password = "alice-pw";
        if (reuse_fd < 0) {
            own_ = std::make_unique<UdpSocket>(kLoopback);
        }
        fd_ = reuse_fd >= 0 ? reuse_fd : own_->fd();
        sockaddr_storage ss{};
        const size_t len = server.to_sockaddr(&ss);
        ::connect(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
        ctx_ = SSL_CTX_new(DTLS_client_method());
        SSL_CTX_set_min_proto_version(ctx_, DTLS1_2_VERSION);
        ssl_ = SSL_new(ctx_);
        BIO* b = BIO_new_dgram(fd_, BIO_NOCLOSE);
        BIO_ctrl(b, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &ss);
        SSL_set_bio(ssl_, b, b);
        set_timeout(100);
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (std::chrono::steady_clock::now() < end) {
            const int r = SSL_connect(ssl_);
            if (r == 1) {
                ok_ = true;
                break;
            }
            const int e = SSL_get_error(ssl_, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                break;
            }
            DTLSv1_handle_timeout(ssl_);
        }
        ERR_clear_error();
    }
    ~DtlsClient() {
        SSL_free(ssl_);
        SSL_CTX_free(ctx_);
    }
    DtlsClient(const DtlsClient&) = delete;
    DtlsClient& operator=(const DtlsClient&) = delete;

    bool ok() const { return ok_; }
    int fd() const { return fd_; }
    Address local() const {
        sockaddr_storage ss{};
        socklen_t l = sizeof ss;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &l);
        return *Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
    }
    std::string peer_cn() const {
        X509* x = SSL_get1_peer_certificate(ssl_);
        char cn[256] = {0};
        if (x != nullptr) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
            X509_free(x);
        }
        return cn;
    }
    bool send(std::span<const uint8_t> b) {
        return ok_ && SSL_write(ssl_, b.data(), static_cast<int>(b.size())) == static_cast<int>(b.size());
    }
    // The next record within timeout_ms; nothing on timeout or once the
    // relay ended the session (closed_by_peer()).
    std::optional<std::vector<uint8_t>> recv(int timeout_ms = 2000) {
        std::vector<uint8_t> b(20000);
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (ok_ && std::chrono::steady_clock::now() < end) {
            const int n = SSL_read(ssl_, b.data(), static_cast<int>(b.size()));
            if (n > 0) {
                b.resize(static_cast<size_t>(n));
                return b;
            }
            const int e = SSL_get_error(ssl_, n);
            ERR_clear_error();
            if (e == SSL_ERROR_ZERO_RETURN || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)) {
                closed_by_peer_ = e == SSL_ERROR_ZERO_RETURN;
                return std::nullopt;
            }
        }
        return std::nullopt;
    }
    bool closed_by_peer() const { return closed_by_peer_; }
    void close_notify() { SSL_shutdown(ssl_); }

private:
    void set_timeout(int ms) {
        timeval tv{0, ms * 1000};
        BIO_ctrl(SSL_get_rbio(ssl_), BIO_CTRL_DGRAM_SET_RECV_TIMEOUT, 0, &tv);
    }
    std::unique_ptr<UdpSocket> own_;  // unless the socket is another client's
    int fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    bool ok_ = false;
    bool closed_by_peer_ = false;
};

// The first flight of a DTLS 1.2 client: a ClientHello without a cookie,
// as OpenSSL writes it.
std::vector<uint8_t> client_hello() {
    SSL_CTX* ctx = SSL_CTX_new(DTLS_client_method());
    SSL* ssl = SSL_new(ctx);
    BIO* rb = BIO_new(BIO_s_mem());
    BIO* wb = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_connect(ssl);  // wants to read the answer
    char* p = nullptr;
    const long n = BIO_get_mem_data(wb, &p);
    std::vector<uint8_t> out(p, p + n);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return out;
}

std::vector<uint8_t> binding() { return build(M::kBinding, C::kRequest, {}, nullptr); }

TEST(DtlsIo, NoStateBeforeTheCookieAndTheAnswerIsSmaller) {
    DtlsLoop loop;
    const auto hello = client_hello();
    ASSERT_GT(hello.size(), 13u + 12u);
    ASSERT_EQ(hello[0], 22);   // handshake record
    ASSERT_EQ(hello[13], 1);   // ClientHello
    // 50 sources, each sending the first ClientHello (as a spoofer would:
    // it never sees the cookie): each gets one HelloVerifyRequest, no more
    // bytes than it sent, and the relay keeps nothing.
    for (int i = 0; i < 50; ++i) {
        const UdpSocket src(kLoopback);
        src.send(loop.dtls(), hello);
        auto answer = src.recv(2000);
        ASSERT_TRUE(answer) << "no HelloVerifyRequest for source " << i;
        EXPECT_EQ((*answer)[0], 22);
        EXPECT_EQ((*answer)[13], 3) << "handshake type HelloVerifyRequest";
        EXPECT_LE(answer->size(), hello.size()) << "the cookie exchange must not amplify";
        EXPECT_FALSE(src.recv(20)) << "one answer only";
    }
    EXPECT_EQ(loop.stats().connections_accepted[kDtls].get(), 0u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 0);
    // A client that echoes the cookie gets a session.
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(loop.stats().connections_accepted[kDtls].get(), 1u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 1);
    EXPECT_EQ(c.peer_cn(), "turn.test");
    auto a = c.exchange(binding());
    ASSERT_TRUE(a && a->success());
    EXPECT_EQ(a->xor_address(stun::attr::kXorMappedAddress), c.local());
}

TEST(DtlsIo, DatagramsOutsideASessionAreDroppedAndCounted) {
    DtlsLoop loop;
    const UdpSocket src(kLoopback);
    const auto drops = [&] { return loop.stats().drops_of(Drop::kDtlsNoSession); };
    // A STUN Binding in the clear, an application-data record of epoch 1, a
    // truncated handshake record, random bytes, an empty datagram.
    std::vector<std::vector<uint8_t>> junk = {binding(),
                                              {23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4},
                                              {22, 0xFE, 0xFD, 0, 0},
                                              std::vector<uint8_t>(300, 0xA5),
                                              {}};
    for (const auto& j : junk) {
        src.send(loop.dtls(), j);
    }
    EXPECT_TRUE(eventually([&] { return drops() == junk.size(); })) << drops();
    EXPECT_FALSE(src.recv(200)) << "nothing is answered";
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 0);
    DtlsClient c(loop.dtls());  // and the listener still serves
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c.exchange(binding()));
}

TEST(DtlsIo, RelaysBothWaysAndCloseNotifyEndsTheAllocation) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    const Address relayed = c.allocate();
    ASSERT_NE(relayed.port, 0);
    EXPECT_EQ(loop.shared().allocations.load(), 1);
    const UdpSocket peer(kLoopback);
    const Address peer_addr = peer.local();
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, peer_addr); })
                    .success());
    // Send indication -> the peer; the peer -> a Data indication.
    const std::vector<uint8_t> hello = {'h', 'e', 'l', 'l', 'o'};
    ASSERT_TRUE(c.send(build(M::kSend, C::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, peer_addr);
        b.add(stun::attr::kData, hello);
    }, nullptr)));
    Address from;
    auto got = peer.recv(2000, &from);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, hello);
    EXPECT_EQ(from, relayed);
    const std::vector<uint8_t> back(1000, 0x42);
    peer.send(relayed, back);
    auto data = c.recv();
    ASSERT_TRUE(data);
    Answer ind(*data);
    ASSERT_TRUE(ind.ok);
    EXPECT_EQ(ind.view.method(), static_cast<uint16_t>(M::kData));
    const auto* d = ind.view.find(stun::attr::kData);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(std::vector<uint8_t>(ind.view.value(*d).begin(), ind.view.value(*d).end()), back);
    // ChannelBind, then ChannelData both ways (one message per record, no padding).
    ASSERT_TRUE(c.bind_channel(0x4001, peer_addr).success());
    const std::vector<uint8_t> cd = {0x40, 0x01, 0x00, 0x03, 'a', 'b', 'c'};
    ASSERT_TRUE(c.send(cd));
    got = peer.recv(2000);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, (std::vector<uint8_t>{'a', 'b', 'c'}));
    peer.send(relayed, std::vector<uint8_t>{'x', 'y', 'z'});
    auto in = c.recv();
    ASSERT_TRUE(in);
    EXPECT_EQ(*in, (std::vector<uint8_t>{0x40, 0x01, 0x00, 0x03, 'x', 'y', 'z'}));
    // The client ends its session: its allocation goes with it.
    c.close_notify();
    EXPECT_TRUE(eventually([&] { return loop.shared().allocations.load() == 0; }));
    EXPECT_EQ(closed(loop.stats(), ConnClose::kClient), 1u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 0);
}

// The TOS byte and TTL of the next datagram on `fd` (as far as the socket
// asked for them: IP_RECVTOS, IP_RECVTTL), left queued for whoever reads it;
// -1 each if none comes within 2 s or it has none.
WithMarks peek_marks(int fd) {
    const auto g = recv_with_marks(fd, 2000, MSG_PEEK);
    return g ? *g : WithMarks{};
}

// RFC 8656 section 14 over DTLS: the client's marking of its DTLS datagram
// goes with the ChannelData it carries to the peer, and the peer's marking
// with the record that carries its data to the client; the handshake and
// the relay's answers keep 0.
TEST(DtlsIo, RelayedDataKeepsDscpAndEcn) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(receive_socket_tos(c.fd(), false));
    ASSERT_TRUE(set_socket_tos(c.fd(), false, 0xB9));  // EF + ECT(1)
    const Address relayed = c.allocate();
    ASSERT_NE(relayed.port, 0);
    const UdpSocket peer(kLoopback);
    ASSERT_TRUE(receive_socket_tos(peer.fd(), false));
    ASSERT_TRUE(c.bind_channel(0x4002, peer.local()).success());
    ASSERT_TRUE(c.send(std::vector<uint8_t>{0x40, 0x02, 0x00, 0x02, 'u', 'p'}));
    EXPECT_EQ(peek_marks(peer.fd()).tos, 0xB9);
    auto up = peer.recv(2000);
    ASSERT_TRUE(up);
    EXPECT_EQ(*up, (std::vector<uint8_t>{'u', 'p'}));
    ASSERT_TRUE(set_socket_tos(c.fd(), false, 0));
    ASSERT_TRUE(c.send(std::vector<uint8_t>{0x40, 0x02, 0x00, 0x01, 'p'}));
    EXPECT_EQ(peek_marks(peer.fd()).tos, 0) << "unmarked stays unmarked";
    ASSERT_TRUE(peer.recv(2000));

    ASSERT_TRUE(set_socket_tos(peer.fd(), false, 0x8A));  // AF41 + ECT(0)
    peer.send(relayed, std::vector<uint8_t>{'d', 'o', 'w', 'n'});
    EXPECT_EQ(peek_marks(c.fd()).tos, 0x8A);
    auto down = c.recv();
    ASSERT_TRUE(down);
    EXPECT_EQ(*down, (std::vector<uint8_t>{0x40, 0x02, 0x00, 0x04, 'd', 'o', 'w', 'n'}));
    // An answer (to a request sent marked EF above) is the relay's own: 0.
    ASSERT_TRUE(set_socket_tos(c.fd(), false, 0xB8));
    ASSERT_TRUE(c.send(binding()));
    EXPECT_EQ(peek_marks(c.fd()).tos, 0);
    ASSERT_TRUE(c.recv());
}

// RFC 8656 section 14's TTL rule over DTLS (a UDP transport): the TTL of
// the client's DTLS datagram less one goes with the ChannelData it carries
// to the peer, and the peer's less one with the record that carries its
// data to the client; data that came with 1 is dropped (ttl_expired); a
// request with 1 is answered with the default.
TEST(DtlsIo, RelayedDataLeavesWithOneLessTtl) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(receive_socket_ttl(c.fd(), false));
    ASSERT_TRUE(set_socket_ttl(c.fd(), false, 9));
    const Address relayed = c.allocate();
    ASSERT_NE(relayed.port, 0);
    const UdpSocket peer(kLoopback);
    ASSERT_TRUE(receive_socket_ttl(peer.fd(), false));
    ASSERT_TRUE(c.bind_channel(0x4002, peer.local()).success());
    ASSERT_TRUE(c.send(std::vector<uint8_t>{0x40, 0x02, 0x00, 0x02, 'u', 'p'}));
    EXPECT_EQ(peek_marks(peer.fd()).ttl, 8);
    auto up = peer.recv(2000);
    ASSERT_TRUE(up);
    EXPECT_EQ(*up, (std::vector<uint8_t>{'u', 'p'}));
    // 1: dropped; the datagram after it (2) arrives with 1.
    ASSERT_TRUE(set_socket_ttl(c.fd(), false, 1));
    ASSERT_TRUE(c.send(std::vector<uint8_t>{0x40, 0x02, 0x00, 0x01, 'x'}));
    ASSERT_TRUE(set_socket_ttl(c.fd(), false, 2));
    ASSERT_TRUE(c.send(std::vector<uint8_t>{0x40, 0x02, 0x00, 0x01, 'y'}));
    EXPECT_EQ(peek_marks(peer.fd()).ttl, 1);
    EXPECT_EQ(peer.recv(2000), (std::vector<uint8_t>{'y'}));
    EXPECT_EQ(loop.stats().drops_of(Drop::kTtlExpired), 1u);

    ASSERT_TRUE(set_socket_ttl(peer.fd(), false, 9));
    peer.send(relayed, std::vector<uint8_t>{'d', 'o', 'w', 'n'});
    EXPECT_EQ(peek_marks(c.fd()).ttl, 8);
    auto down = c.recv();
    ASSERT_TRUE(down);
    EXPECT_EQ(*down, (std::vector<uint8_t>{0x40, 0x02, 0x00, 0x04, 'd', 'o', 'w', 'n'}));
    ASSERT_TRUE(set_socket_ttl(peer.fd(), false, 1));
    peer.send(relayed, std::vector<uint8_t>{'x'});
    ASSERT_TRUE(set_socket_ttl(peer.fd(), false, 30));
    peer.send(relayed, std::vector<uint8_t>{'z'});
    EXPECT_EQ(peek_marks(c.fd()).ttl, 29);
    EXPECT_EQ(c.recv(), (std::vector<uint8_t>{0x40, 0x02, 0x00, 0x01, 'z'}));
    EXPECT_TRUE(eventually([&] { return loop.stats().drops_of(Drop::kTtlExpired) == 2; }));
    // A request with TTL 1 is answered, with the default.
    ASSERT_TRUE(set_socket_ttl(c.fd(), false, 1));
    ASSERT_TRUE(c.send(binding()));
    EXPECT_EQ(peek_marks(c.fd()).ttl, default_ttl(false));
    auto answer = c.recv();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(Answer(*answer).success());
}

TEST(DtlsIo, TcpAllocationsAndConnectionBindAreRefused) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    auto a = c.request(M::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoTcp); });
    EXPECT_EQ(a.code(), 400);
    auto bind = c.request(M::kConnectionBind, [](auto& b) { b.add_u32(stun::attr::kConnectionId, 7); });
    EXPECT_EQ(bind.code(), 400);
    EXPECT_EQ(loop.shared().allocations.load(), 0);
}

TEST(DtlsIo, ANewHandshakeOnTheSameFiveTupleReplacesTheSession) {
    DtlsLoop loop;
    auto first = std::make_unique<DtlsClient>(loop.dtls());
    ASSERT_TRUE(first->ok());
    ASSERT_NE(first->allocate().port, 0);
    const int fd = ::dup(first->fd());
    // The client restarts on the same port: a fresh ClientHello, epoch 0.
    DtlsClient second(loop.dtls(), fd);
    ASSERT_TRUE(second.ok());
    EXPECT_TRUE(eventually([&] { return loop.shared().allocations.load() == 0; }))
        << "the old session's allocation must end with it";
    EXPECT_EQ(closed(loop.stats(), ConnClose::kClient), 1u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 1);
    EXPECT_NE(second.allocate().port, 0);
    EXPECT_EQ(loop.shared().allocations.load(), 1);
    ::close(fd);
}

TEST(DtlsIo, SessionLimitsRefuseWithANamedReason) {
    DtlsLoop loop([](Config& c) { c.dtls_max_sessions_per_ip = 1; });
    DtlsClient a(loop.dtls());
    ASSERT_TRUE(a.ok());
    DtlsClient b(loop.dtls());  // the cookie checks out, then the limit: no ServerHello
    EXPECT_FALSE(b.ok());
    EXPECT_GE(closed(loop.stats(), ConnClose::kLimit), 1u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 1);
    EXPECT_TRUE(a.exchange(binding())) << "the first session is unaffected";
}

TEST(DtlsIo, IdleSessionsAreClosedAndTold) {
    DtlsLoop loop([](Config& c) { c.dtls_idle_timeout_s = 1; });
    DtlsClient idle(loop.dtls());
    ASSERT_TRUE(idle.ok());
    DtlsClient busy(loop.dtls());
    ASSERT_TRUE(busy.ok());
    ASSERT_NE(busy.allocate().port, 0);  // an allocation keeps its session
    EXPECT_FALSE(idle.recv(3000));
    EXPECT_TRUE(idle.closed_by_peer()) << "close_notify expected";
    EXPECT_EQ(closed(loop.stats(), ConnClose::kIdle), 1u);
    EXPECT_TRUE(busy.exchange(binding()));
    EXPECT_EQ(loop.shared().allocations.load(), 1);
}

// A session keeps its timers on the loop's wheel: one whose client keeps
// talking (without an allocation) stays open past the idle timeout, and goes
// once the client stops.
TEST(DtlsIo, ASessionThatKeepsTalkingStaysOpen) {
    DtlsLoop loop([](Config& c) { c.dtls_idle_timeout_s = 1; });
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    for (int i = 0; i < 7; ++i) {  // 2.8 s, a request every 400 ms
        ASSERT_TRUE(c.exchange(binding())) << i;
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
    }
    EXPECT_EQ(closed(loop.stats(), ConnClose::kIdle), 0u);
    EXPECT_FALSE(c.recv(3000));
    EXPECT_TRUE(c.closed_by_peer()) << "close_notify expected";
    EXPECT_EQ(closed(loop.stats(), ConnClose::kIdle), 1u);
}

// A client that echoes the cookie and then goes silent: the relay resends
// its flight on OpenSSL's timer (1 s), then ends the session when the idle
// timeout runs out, as tls_handshake (it never became a session).
TEST(DtlsIo, AnAbandonedHandshakeIsResentThenClosed) {
    DtlsLoop loop([](Config& c) { c.dtls_idle_timeout_s = 3; });
    SSL_CTX* ctx = SSL_CTX_new(DTLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
    SSL* ssl = SSL_new(ctx);
    BIO* rb = BIO_new(BIO_s_mem());
    BIO* wb = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    const UdpSocket src(kLoopback);
    auto send_written = [&] {
        char* p = nullptr;
        const long n = BIO_get_mem_data(wb, &p);
        ASSERT_GT(n, 0);
        src.send(loop.dtls(), std::span(reinterpret_cast<const uint8_t*>(p), static_cast<size_t>(n)));
        (void)BIO_reset(wb);
    };
    SSL_connect(ssl);
    send_written();  // ClientHello
    auto hvr = src.recv(2000);
    ASSERT_TRUE(hvr);
    BIO_write(rb, hvr->data(), static_cast<int>(hvr->size()));
    SSL_connect(ssl);
    const auto t0 = std::chrono::steady_clock::now();
    send_written();  // ClientHello with the cookie: the relay makes a session
    auto count_until = [&](int ms) {
        size_t n = 0;
        while (std::chrono::steady_clock::now() < t0 + std::chrono::milliseconds(ms)) {
            n += src.recv(50).has_value() ? 1 : 0;
        }
        return n;
    };
    EXPECT_GE(count_until(600), 1u) << "the relay's first flight";
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 1);
    EXPECT_GE(count_until(2500), 1u) << "the flight again, on the retransmission timer";
    count_until(4500);
    EXPECT_EQ(closed(loop.stats(), ConnClose::kTlsHandshake), 1u);
    EXPECT_EQ(loop.shared().dtls_sessions.load(), 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
}

TEST(DtlsIo, TheLoopsEndSendsCloseNotify) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    loop.stop();
    EXPECT_FALSE(c.recv(2000));
    EXPECT_TRUE(c.closed_by_peer());
}

TEST(DtlsIo, AReloadedCertificateGoesToNewSessions) {
    DtlsLoop loop;
    DtlsClient before(loop.dtls());
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(before.peer_cn(), "turn.test");
    CertFiles renewed("renewed.turn.test");
    std::string err;
    ASSERT_TRUE(loop.tls().load(renewed.cert, renewed.key, err)) << err;
    DtlsClient after(loop.dtls());
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after.peer_cn(), "renewed.turn.test");
    EXPECT_TRUE(before.exchange(binding())) << "an established session keeps working";
}

TEST(DtlsIo, APeerDatagramLargerThanTheMtuIsOneRecord) {
    DtlsLoop loop;
    DtlsClient c(loop.dtls());
    ASSERT_TRUE(c.ok());
    const Address relayed = c.allocate();
    const UdpSocket peer(kLoopback);
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer.local());
                 }).success());
    // 9000 bytes (a jumbo frame's worth; the relayed sockets take up to
    // 9216): one Data indication, one record, far over the 1200-byte MTU
    // that only handshake flights are cut to.
    peer.send(relayed, std::vector<uint8_t>(9000, 2));
    auto m = c.recv();
    ASSERT_TRUE(m);
    Answer ind(*m);
    ASSERT_TRUE(ind.ok);
    ASSERT_NE(ind.view.find(stun::attr::kData), nullptr);
    EXPECT_EQ(ind.view.find(stun::attr::kData)->length, 9000);
    EXPECT_TRUE(c.exchange(binding())) << "the session goes on";
}

TEST(DtlsIo, HandshakesOverTheRateWaitForTheBucket) {
    DtlsLoop loop([](Config& c) { c.dtls_handshakes_per_ip_per_s = 1; });
    const auto start = std::chrono::steady_clock::now();
    // The first takes the one token; the next are refused (no answer) until
    // the client's own retransmission a second later finds a new one.
    for (int i = 0; i < 3; ++i) {
        DtlsClient c(loop.dtls());
        EXPECT_TRUE(c.ok()) << i;
    }
    EXPECT_GE(closed(loop.stats(), ConnClose::kRate), 2u);
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
}

}  // namespace
}  // namespace turn::cp::test
