// TURN over TCP and TLS (controlplane/io/stream_io.*, io/tls.*): a real
// EventLoop in this process with stream listeners on loopback, driven by
// real TCP sockets and an OpenSSL client. What a hostile or slow client can
// do and what it costs it: connections over [tcp].max_connections closed at
// accept; a client that does not read loses whole answers (counted), never
// parts of one, and the relay's queue stays bounded; bytes that are neither
// STUN nor ChannelData close the connection; a connection without an
// allocation that goes quiet is closed; a TLS port given plain bytes closes
// with reason tls_handshake. A connection whose queued answer fails to
// write inside one of the server's handlers (Refresh 0, of one family too;
// large ChannelData to a peer) ends its allocation once, after the handler.
// TLS answers Binding, negotiates ALPN
// "stun.turn" when offered (RFC 7443) and serves clients that offer other
// protocols only. Start-up errors of the TLS files and of the new keys name
// what to fix.
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "core/config.h"
#include "core/offload.h"
#include "core/shared.h"
#include "io/event_loop.h"
#include "io/tls.h"
#include "loop_wait.h"
#include "loopback_util.h"
#include "cert_files.h"
#include "stun_client.h"
#include "tcp_client.h"
#include "turn/channel_data.h"
#include "udp_socket.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;
using C = stun::Class;

// One event loop with a TCP and a TLS listener on loopback.
class StreamLoop {
public:
    explicit StreamLoop(void (*tune)(Config&) = nullptr) {
        Config c;
        tcp_ = Address::parse("127.0.0.1")->with_port(free_port(SOCK_STREAM));
        tls_ = Address::parse("127.0.0.1")->with_port(free_port(SOCK_STREAM));
        c.listen_tcp = {tcp_};
        c.listen_tls = {tls_};
        c.relay_ips = {*Address::parse("127.0.0.1")};
        c.users = {{"alice", "alice-pw"}};
        c.tls_certificate = certs_.cert;
        c.tls_private_key = certs_.key;
        if (tune != nullptr) {
            tune(c);
        }
        std::string err;
        shared_ = Shared::create(c, err);
        EXPECT_TRUE(shared_) << err;
        EXPECT_TRUE(tls_ctx_.load(c.tls_certificate, c.tls_private_key, err)) << err;
        loop_ = std::make_unique<EventLoop>(*shared_, offload_, 0);
        const std::string e = loop_->bind_listeners(&tls_ctx_);
        EXPECT_EQ(e, "");
        loop_->start();
    }
    ~StreamLoop() { loop_->stop(); }
    const Address& tcp() const { return tcp_; }
    const Address& tls() const { return tls_; }
    const Stats& stats() { return loop_->stats(); }
    Shared& shared() { return *shared_; }
    TlsContexts& tls_contexts() { return tls_ctx_; }
    void post(std::function<void(Server&)> task) { loop_->post(std::move(task)); }

private:
    CertFiles certs_;
    Address tcp_, tls_;
    std::unique_ptr<Shared> shared_;
    OffloadHook offload_;
    TlsContexts tls_ctx_;
    std::unique_ptr<EventLoop> loop_;
};

std::vector<uint8_t> binding() { return build(M::kBinding, C::kRequest, {}, nullptr); }

TEST(StreamIo, ConnectionsOverTheLimitAreClosedAtAccept) {
    StreamLoop loop([](Config& c) { c.tcp_max_connections = 2; });
    TcpClient a(loop.tcp(), "alice", "alice-pw");
    TcpClient b(loop.tcp(), "alice", "alice-pw");
    ASSERT_TRUE(a.exchange(binding()));
    ASSERT_TRUE(b.exchange(binding()));
    TcpClient c(loop.tcp(), "alice", "alice-pw");  // the kernel accepts it; the relay closes it
    EXPECT_FALSE(c.exchange(binding()));
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kLimit) == 1; }));
    EXPECT_EQ(loop.shared().connections.load(), 2);
    // Room again once one goes.
    a.close();
    ASSERT_TRUE(eventually([&] { return loop.shared().connections.load() == 1; }));
    TcpClient d(loop.tcp(), "alice", "alice-pw");
    auto ans = d.exchange(binding());
    ASSERT_TRUE(ans);
    EXPECT_EQ(ans->xor_addresses(stun::attr::kXorMappedAddress).at(0), d.local());
    EXPECT_EQ(loop.stats().connections_accepted[0].get(), 4u);
}

// A client's connection whose queued output fails to write inside one of the
// server's handlers: SocketIo flushes the loop's queued output from inside
// them (before it closes a relayed or client-path socket, before a datagram
// larger than its batch slots or a DONT-FRAGMENT one it sends at once, when
// its batch is full). The connection closes there, but the server hears of
// its end only at the next StreamIo::expire(), after the handler: one that
// holds the client's allocation must not see it removed under it. Each test
// holds the loop while the client's messages and its reset (SO_LINGER 0)
// arrive, so that the relay reads them together: the first message's answer
// is queued, the second makes its handler flush, and the write fails there.

// Holds the loop's thread for 300 ms with a posted task; true once it is held.
bool hold(StreamLoop& loop) {
    auto held = std::make_shared<std::atomic<bool>>(false);
    loop.post([held](Server&) {
        *held = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    return eventually([&] { return held->load(); });
}

// After the reset of the client's only connection: its queued answer's write
// failed (else the test did not reach the case), the connection closed once,
// the allocation ended once (every gauge at exactly 0 some loop iterations
// later; -1 is an allocation ended twice), and the loop serves a new client.
void expect_ended_once_by_a_failed_write(StreamLoop& loop) {
    ASSERT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kSendError) == 1; }))
        << "the answer's write did not fail: the test did not reach the case";
    EXPECT_TRUE(eventually([&] { return loop.shared().allocations.load() == 0; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a few loop iterations
    EXPECT_EQ(loop.shared().allocations.load(), 0);
    EXPECT_EQ(loop.shared().allocations_v4.load(), 0);
    EXPECT_EQ(loop.shared().allocations_v6.load(), 0);
    EXPECT_EQ(loop.shared().connections.load(), 0);
    uint64_t ends = 0;
    for (size_t why = 0; why < static_cast<size_t>(ConnClose::kCount); ++why) {
        ends += closed(loop.stats(), 0, static_cast<ConnClose>(why));
    }
    EXPECT_EQ(ends, 1u);
    TcpClient next(loop.tcp(), "alice", "alice-pw");
    EXPECT_NE(next.allocate().port, 0);
    EXPECT_EQ(loop.shared().allocations.load(), 1);
}

// A Binding request and Refresh 0 back to back, then a reset (as Chromium
// closing a turns: connection did in CI, with its data still flowing): the
// Refresh ends the allocation, and the Binding answer's write fails inside
// that removal (SocketIo::close_relay). Before 11d8955 the end came from
// inside the removal, which ended the allocation a second time (allocation
// gauges at -1, the allocation used after free). Since then remove() also
// takes the allocation out of its maps first, so this case holds even
// without the deferral; the two below do not.
TEST(StreamIo, AResetRightAfterRefreshZeroEndsTheAllocationOnce) {
    StreamLoop loop;
    TcpClient t(loop.tcp(), "alice", "alice-pw");
    ASSERT_TRUE(t.connected());
    ASSERT_NE(t.allocate().port, 0);
    ASSERT_EQ(loop.shared().allocations.load(), 1);
    ASSERT_TRUE(hold(loop));
    std::vector<uint8_t> both = binding();
    const auto zero = t.signed_request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); });
    both.insert(both.end(), zero.begin(), zero.end());
    ASSERT_TRUE(t.send(both));
    t.reset();
    expect_ended_once_by_a_failed_write(loop);
}

// The same with Refresh 0 of one family of a dual-stack allocation (RFC 8656
// section 7.3, REQUESTED-ADDRESS-FAMILY): AllocationManager::remove_family
// closes the IPv6 relayed socket, and the write fails there. The allocation
// stays in its maps meanwhile, so an end reported from inside would remove it
// under remove_family (IPv6 gauge at -1, the allocation written after free).
TEST(StreamIo, AResetRightAfterRefreshZeroOfOneFamilyEndsTheAllocationOnce) {
    StreamLoop loop([](Config& c) { c.relay_ips = {*Address::parse("127.0.0.1"), *Address::parse("::1")}; });
    TcpClient t(loop.tcp(), "alice", "alice-pw");
    const Answer a = t.request(M::kAllocate, [](auto& b) {
        b.add_requested_transport(stun::kProtoUdp);
        b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6);
    });
    ASSERT_TRUE(a.success()) << a.code();
    ASSERT_EQ(a.xor_addresses(stun::attr::kXorRelayedAddress).size(), 2u);
    ASSERT_EQ(loop.shared().allocations_v6.load(), 1);
    ASSERT_TRUE(hold(loop));
    std::vector<uint8_t> both = binding();
    const auto zero = t.signed_request(M::kRefresh, [](auto& b) {
        b.add_u32(stun::attr::kLifetime, 0);
        b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
    });
    both.insert(both.end(), zero.begin(), zero.end());
    ASSERT_TRUE(t.send(both));
    t.reset();
    expect_ended_once_by_a_failed_write(loop);
}

// Client data to a peer (Server::relay_to_peer): ChannelData larger than
// SocketIo's batch slots is sent at once, after a flush, and the Binding
// answer's write fails there. The data read before the reset still reaches
// the peer: its allocation stands until the handler is done. An end reported
// from inside would remove the allocation under relay_to_peer (the peer's
// address, which the allocation holds, read after free and the datagram sent
// on a closed socket; the allocation's counters written after free).
TEST(StreamIo, AResetRightAfterLargeChannelDataEndsTheAllocationOnce) {
    StreamLoop loop([](Config& c) { c.allow_peers = {*Prefix::parse("127.0.0.0/8")}; });
    TcpClient t(loop.tcp(), "alice", "alice-pw");
    ASSERT_NE(t.allocate().port, 0);
    const UdpSocket peer(*Address::parse("127.0.0.1:0"));
    ASSERT_TRUE(t.bind_channel(0x4000, peer.local()).success());
    ASSERT_TRUE(hold(loop));
    constexpr size_t kLarge = 3000;
    static_assert(kLarge > SocketIo::kTxSlot && kLarge % 4 == 0, "sent at once, and needs no padding");
    const std::vector<uint8_t> data(kLarge, 0x5a);
    std::vector<uint8_t> both = binding();
    const size_t at = both.size();
    both.resize(at + kChannelDataHeader);
    write_channel_data_header(both.data() + at, 0x4000, static_cast<uint16_t>(kLarge));
    both.insert(both.end(), data.begin(), data.end());
    ASSERT_TRUE(t.send(both));
    t.reset();
    expect_ended_once_by_a_failed_write(loop);
    const auto got = peer.recv(2000);
    ASSERT_TRUE(got) << "the ChannelData read before the reset was not relayed";
    EXPECT_TRUE(*got == data) << got->size() << " bytes";
}

// 20000 Binding requests written without reading an answer: the kernel's
// buffers fill, then the relay's queue (70000 bytes, the smallest allowed)
// does, and further answers are dropped whole. Each answer arrives whole or
// not at all: received + dropped == sent.
TEST(StreamIo, AClientThatDoesNotReadLosesWholeAnswersAndTheQueueStaysBounded) {
    StreamLoop loop([](Config& c) { c.tcp_send_buffer_bytes = 70000; });
    TcpClient t(loop.tcp(), "alice", "alice-pw");
    ASSERT_TRUE(t.connected());
    constexpr int kSent = 20000;
    std::vector<uint8_t> all;
    for (int i = 0; i < kSent; ++i) {
        const auto r = binding();
        all.insert(all.end(), r.begin(), r.end());
    }
    ASSERT_TRUE(t.send(all));
    const auto drops = [&] { return loop.stats().drops_of(Drop::kStreamBackpressure); };
    ASSERT_TRUE(eventually([&] { return loop.stats().requests[0][0].get() == kSent; }, 10000))
        << "answered " << loop.stats().requests[0][0].get();
    EXPECT_GT(drops(), 0u);
    int received = 0;
    while (auto m = t.recv(500)) {
        Answer a(*m);
        ASSERT_TRUE(a.success()) << "a partial or broken answer after " << received;
        ++received;
    }
    EXPECT_EQ(static_cast<uint64_t>(received) + drops(), static_cast<uint64_t>(kSent));
    EXPECT_FALSE(t.closed_by_peer());
}

TEST(StreamIo, BytesThatAreNeitherStunNorChannelDataCloseTheConnection) {
    StreamLoop loop;
    {
        TcpClient t(loop.tcp(), "alice", "alice-pw");
        ASSERT_TRUE(t.exchange(binding()));
        const std::vector<uint8_t> junk(64, 0xff);
        ASSERT_TRUE(t.send(junk));
        EXPECT_FALSE(t.recv(2000));
        EXPECT_TRUE(t.closed_by_peer());
    }
    {
        // A STUN header whose length is not a multiple of 4, after a whole
        // message in the same write.
        TcpClient t(loop.tcp(), "alice", "alice-pw");
        auto bytes = binding();
        const std::vector<uint8_t> bad = {0x00, 0x01, 0x00, 0x07};
        bytes.insert(bytes.end(), bad.begin(), bad.end());
        ASSERT_TRUE(t.send(bytes));
        EXPECT_TRUE(t.recv(2000)) << "the whole message before the bad one is answered";
        EXPECT_FALSE(t.recv(2000));
        EXPECT_TRUE(t.closed_by_peer());
    }
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kBadFrame) == 2; }));
    TcpClient next(loop.tcp(), "alice", "alice-pw");
    EXPECT_TRUE(next.exchange(binding()));
}

TEST(StreamIo, MessagesSplitAnywhereOrBackToBackAreAllAnswered) {
    StreamLoop loop;
    TcpClient t(loop.tcp(), "alice", "alice-pw");
    const auto a = binding();
    const auto b = binding();
    const auto c = binding();
    std::vector<uint8_t> s = a;
    s.insert(s.end(), b.begin(), b.end());
    s.insert(s.end(), c.begin(), c.end());
    // One byte at a time, with pauses that make the relay read each alone.
    for (size_t i = 0; i < s.size(); ++i) {
        ASSERT_TRUE(t.send(std::span<const uint8_t>(&s[i], 1)));
        if (i % 7 == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }
    for (const auto* req : {&a, &b, &c}) {
        auto m = t.recv();
        ASSERT_TRUE(m);
        EXPECT_TRUE(std::equal(req->begin() + 8, req->begin() + 20, m->begin() + 8)) << "answers out of order";
    }
}

// Without an allocation a connection has idle_timeout_s from its accept,
// whatever unauthenticated messages (Binding) it sends: one host cannot hold
// slots with keepalives. With an allocation it stays while the allocation does.
TEST(StreamIo, ConnectionsWithoutAnAllocationHaveADeadline) {
    StreamLoop loop([](Config& c) { c.tcp_idle_timeout_s = 1; });
    TcpClient quiet(loop.tcp(), "alice", "alice-pw");
    const std::vector<uint8_t> half = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12};
    ASSERT_TRUE(quiet.send(half));
    TcpClient chatty(loop.tcp(), "alice", "alice-pw");
    TcpClient owner(loop.tcp(), "alice", "alice-pw");
    ASSERT_NE(owner.allocate().family, Family::kNone);
    const auto start = std::chrono::steady_clock::now();
    int answered = 0;
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(3000)) {
        if (!chatty.exchange(binding())) {
            break;
        }
        ++answered;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_GT(answered, 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000))
        << "Bindings every 200 ms kept a connection without an allocation open";
    EXPECT_FALSE(quiet.recv(500));
    EXPECT_TRUE(quiet.closed_by_peer());
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kIdle) == 2; }));
    auto ans = owner.exchange(binding());
    EXPECT_TRUE(ans) << "the allocation's connection was closed as idle";
}

TEST(StreamIo, ConnectionsPerClientIpAreCapped) {
    StreamLoop loop([](Config& c) { c.tcp_max_connections_per_ip = 2; });
    TcpClient a(loop.tcp(), "alice", "alice-pw");
    TcpClient b(loop.tcp(), "alice", "alice-pw");
    ASSERT_TRUE(a.exchange(binding()));
    ASSERT_TRUE(b.exchange(binding()));
    TcpClient c(loop.tcp(), "alice", "alice-pw");
    EXPECT_FALSE(c.exchange(binding()));
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kLimit) == 1; }));
    b.close();
    ASSERT_TRUE(eventually([&] { return loop.shared().connections.load() == 1; }));
    TcpClient d(loop.tcp(), "alice", "alice-pw");
    EXPECT_TRUE(d.exchange(binding())) << "a slot of that IP is free again";
}

// A connect-and-close flood from one source is cut at accept: beyond
// [tcp].accepts_per_ip_per_s (a bucket of that many, refilled per second)
// connections are closed before anything is read from them.
TEST(StreamIo, NewConnectionsPerSourceAreRateLimitedAtAccept) {
    StreamLoop loop([](Config& c) { c.tcp_accepts_per_ip_per_s = 5; });
    int answered = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 15; ++i) {
        TcpClient t(loop.tcp(), "alice", "alice-pw");
        answered += t.exchange(binding()) ? 1 : 0;
    }
    const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(answered, 5);
    EXPECT_LE(answered, 5 + static_cast<int>(took_s * 5) + 1) << "in " << took_s << " s";
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 0, ConnClose::kRate) + answered == 15; }));
    EXPECT_EQ(closed(loop.stats(), 0, ConnClose::kLimit), 0u);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the bucket refills
    TcpClient later(loop.tcp(), "alice", "alice-pw");
    EXPECT_TRUE(later.exchange(binding()));
}

// An OpenSSL client connection to the TLS listener; `alpn` in wire format.
struct TlsClient {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = nullptr;
    int fd = -1;
    bool ok = false;
    TlsClient(const Address& server, const std::vector<uint8_t>& alpn) {
        ::signal(SIGPIPE, SIG_IGN);  // SSL_write to a connection the relay closed
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_storage ss{};
        const size_t len = server.to_sockaddr(&ss);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
            return;
        }
        ssl = SSL_new(ctx);
        if (!alpn.empty()) {
            SSL_set_alpn_protos(ssl, alpn.data(), static_cast<unsigned>(alpn.size()));
        }
        SSL_set_fd(ssl, fd);
        ok = SSL_connect(ssl) == 1;  // the self-signed certificate is not verified here
    }
    ~TlsClient() {
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        ::close(fd);
    }
    // The server certificate's subject CN.
    std::string peer_cn() const {
        X509* x = SSL_get1_peer_certificate(ssl);
        char cn[128] = {0};
        if (x != nullptr) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
            X509_free(x);
        }
        return cn;
    }
    std::string alpn() const {
        const unsigned char* p = nullptr;
        unsigned n = 0;
        SSL_get0_alpn_selected(ssl, &p, &n);
        return std::string(reinterpret_cast<const char*>(p), n);
    }
    std::optional<std::vector<uint8_t>> exchange(const std::vector<uint8_t>& req) {
        if (SSL_write(ssl, req.data(), static_cast<int>(req.size())) != static_cast<int>(req.size())) {
            return std::nullopt;
        }
        std::vector<uint8_t> buf;
        for (;;) {
            const StreamFrame f = next_stream_frame(buf);
            if (f.status == StreamFrameStatus::kFrame) {
                buf.resize(f.message_len);
                return buf;
            }
            uint8_t tmp[4096];
            const int n = SSL_read(ssl, tmp, sizeof tmp);
            if (n <= 0) {
                return std::nullopt;
            }
            buf.insert(buf.end(), tmp, tmp + n);
        }
    }
};

TEST(StreamIo, TlsAnswersNegotiatesStunTurnAndClosesPlainBytes) {
    StreamLoop loop;
    {
        const std::vector<uint8_t> turn_then_h2 = {9, 's', 't', 'u', 'n', '.', 't', 'u', 'r', 'n', 2, 'h', '2'};
        TlsClient t(loop.tls(), turn_then_h2);
        ASSERT_TRUE(t.ok) << "TLS handshake failed";
        EXPECT_EQ(t.alpn(), "stun.turn");
        auto m = t.exchange(binding());
        ASSERT_TRUE(m);
        Answer a(*m);
        EXPECT_TRUE(a.success());
        EXPECT_EQ(a.xor_addresses(stun::attr::kXorMappedAddress).size(), 1u);
    }
    {
        const std::vector<uint8_t> h2_only = {2, 'h', '2'};
        TlsClient t(loop.tls(), h2_only);
        ASSERT_TRUE(t.ok) << "a client offering other protocols only must still be served";
        EXPECT_EQ(t.alpn(), "");
        EXPECT_TRUE(t.exchange(binding()));
    }
    {
        TcpClient plain(loop.tls(), "alice", "alice-pw");  // STUN without TLS on the TLS port
        EXPECT_FALSE(plain.exchange(binding()));
        EXPECT_TRUE(plain.closed_by_peer());
    }
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 1, ConnClose::kTlsHandshake) == 1; }));
    EXPECT_TRUE(eventually([&] { return closed(loop.stats(), 1, ConnClose::kClient) == 2; }));
    EXPECT_EQ(loop.stats().connections_accepted[1].get(), 3u);
}

// SIGHUP's work (main.cc calls TlsContexts::load again): new connections get
// the renewed certificate, established ones carry on with theirs, and files
// that do not load leave the current certificate in place.
TEST(TlsContext, ReloadServesNewConnectionsAndKeepsTheOldOnFailure) {
    StreamLoop loop;
    TlsClient before(loop.tls(), {});
    ASSERT_TRUE(before.ok);
    EXPECT_EQ(before.peer_cn(), "turn.test");
    CertFiles renewed("renewed.turn.test");
    std::string err;
    ASSERT_TRUE(loop.tls_contexts().load(renewed.cert, renewed.key, err)) << err;
    EXPECT_NE(loop.tls_contexts().describe().find("renewed.turn.test"), std::string::npos);
    TlsClient after(loop.tls(), {});
    ASSERT_TRUE(after.ok);
    EXPECT_EQ(after.peer_cn(), "renewed.turn.test");
    EXPECT_TRUE(before.exchange(binding())) << "an established connection keeps working";
    EXPECT_TRUE(after.exchange(binding()));
    EXPECT_FALSE(loop.tls_contexts().load(renewed.dir + "/missing.pem", renewed.key, err));
    EXPECT_EQ(err.rfind("[tls].certificate:", 0), 0u) << err;
    TlsClient still(loop.tls(), {});
    ASSERT_TRUE(still.ok);
    EXPECT_EQ(still.peer_cn(), "renewed.turn.test");
}

TEST(TlsContext, BadFilesNameTheKeyToFix) {
    CertFiles f;
    std::string err;
    EXPECT_TRUE(make_tls_context(f.cert, f.key, err)) << err;
    err.clear();
    EXPECT_FALSE(make_tls_context(f.dir + "/missing.pem", f.key, err));
    EXPECT_EQ(err.rfind("[tls].certificate: cannot load", 0), 0u) << err;
    err.clear();
    EXPECT_FALSE(make_tls_context(f.key, f.key, err));  // a key where the certificate belongs
    EXPECT_EQ(err.rfind("[tls].certificate:", 0), 0u) << err;
    err.clear();
    EXPECT_FALSE(make_tls_context(f.cert, f.dir + "/missing.pem", err));
    EXPECT_EQ(err.rfind("[tls].private_key: cannot load", 0), 0u) << err;
    err.clear();
    EXPECT_FALSE(make_tls_context(f.cert, f.other_key, err));
    EXPECT_EQ(err.rfind("[tls].private_key:", 0), 0u) << err;
    EXPECT_NE(err.find("does not belong to the certificate"), std::string::npos) << err;
}

std::string config_error(std::string_view toml, const CliOverrides& cli = {}) {
    auto r = load_config_text(toml, cli);
    auto* e = std::get_if<ConfigError>(&r);
    return e != nullptr ? e->message : std::string();
}

TEST(Config, StreamListenersAndTheirSections) {
    auto r = load_config_text(R"(
[server]
listen = ["127.0.0.1:3478"]
listen_tcp = ["127.0.0.1:3478", "[::1]:3478"]
listen_tls = ["127.0.0.1:5349"]
[auth]
users = ["a:b"]
[tls]
certificate = "/etc/turn/fullchain.pem"
private_key = "/etc/turn/key.pem"
[tcp]
max_connections = 500
idle_timeout_s = 12
send_buffer_bytes = 100000
)",
                              {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    EXPECT_EQ(c.listen_tcp.size(), 2u);
    EXPECT_EQ(c.listen_tls.at(0), *Address::parse("127.0.0.1:5349"));
    EXPECT_EQ(c.tls_certificate, "/etc/turn/fullchain.pem");
    EXPECT_EQ(c.tcp_max_connections, 500u);
    EXPECT_EQ(c.tcp_idle_timeout_s, 12u);
    EXPECT_EQ(c.tcp_send_buffer_bytes, 100000u);

    EXPECT_EQ(config_error("[server]\nlisten_tls = [\"127.0.0.1:5349\"]\n[auth]\nusers = [\"a:b\"]\n").rfind(
                  "[tls].certificate: listen_tls is set", 0),
              0u);
    EXPECT_EQ(config_error("[server]\nlisten_tls = [\"127.0.0.1:5349\"]\n[auth]\nusers = [\"a:b\"]\n"
                           "[tls]\ncertificate = \"c.pem\"\n")
                  .rfind("[tls].private_key:", 0),
              0u);
    EXPECT_NE(config_error("[server]\nlisten_tcp = [\"127.0.0.1:5349\"]\nlisten_tls = [\"127.0.0.1:5349\"]\n"
                           "[auth]\nusers = [\"a:b\"]\n[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n")
                  .find("listed twice"),
              std::string::npos);
    EXPECT_EQ(config_error("[server]\nlisten_tcp = [\"127.0.0.1\"]\n[auth]\nusers = [\"a:b\"]\n").rfind(
                  "[server].listen_tcp:", 0),
              0u);
    EXPECT_EQ(config_error("[tcp]\nsend_buffer_bytes = 1000\n[auth]\nusers = [\"a:b\"]\n").rfind(
                  "[tcp].send_buffer_bytes: value 1000 is out of range", 0),
              0u);
    EXPECT_EQ(config_error("[tcp]\nmax_conns = 1\n[auth]\nusers = [\"a:b\"]\n").rfind("[tcp].max_conns: unknown key", 0),
              0u);
    // Command line.
    CliOverrides cli;
    cli.listen_tls = {"127.0.0.1:5350"};
    cli.tls_certificate = "c.pem";
    cli.tls_private_key = "k.pem";
    auto o = load_config_text("[auth]\nusers = [\"a:b\"]\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(o)) << std::get<ConfigError>(o).message;
    EXPECT_EQ(std::get<Config>(o).listen_tls.at(0).port, 5350);
    EXPECT_EQ(std::get<Config>(o).tls_private_key, "k.pem");
}

}  // namespace
}  // namespace turn::cp::test
