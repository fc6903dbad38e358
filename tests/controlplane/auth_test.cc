// Long-term credentials, nonces, SHA-256 integrity, USERHASH, REST secrets,
// 401 rate limiting; Binding and malformed input.
#include <atomic>
#include <cstring>
#include <functional>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "auth/credential_store.h"
#include "server_fixture.h"
#include "stun/integrity.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;

std::vector<uint8_t> plain_allocate() {
    return build(M::kAllocate, stun::Class::kRequest, [](auto& b) { b.add_requested_transport(stun::kProtoUdp); },
                 nullptr);
}

TEST_F(ServerTest, NoCredentialsGets401WithRealmNonceAndAlgorithms) {
    auto a = exchange(tuple(), plain_allocate());
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 401);
    EXPECT_EQ(a->reason(), "Unauthenticated");
    EXPECT_EQ(a->text(stun::attr::kRealm), "example.org");
    EXPECT_EQ(a->text(stun::attr::kNonce).rfind("obMatJos2", 0), 0u);
    EXPECT_TRUE(a->has(stun::attr::kPasswordAlgorithms));
    EXPECT_FALSE(a->has(stun::attr::kMessageIntegrity));
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kNoCredentials), 1u);
}

TEST_F(ServerTest, NonceFromChallengeWorks) {
    auto a = exchange(tuple(), plain_allocate());
    Credentials c = creds(tuple());
    c.nonce = a->text(stun::attr::kNonce);
    auto ok = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                      [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    ASSERT_TRUE(ok);
    EXPECT_TRUE(ok->success());
    // The answer is signed with the request's key.
    auto key = auth::long_term_key(stun::PasswordAlgorithm::kMd5, "alice", "example.org", "alice-pw");
    EXPECT_TRUE(stun::verify_message_integrity(ok->view, key->span()));
}

TEST_F(ServerTest, WrongPasswordIs401) {
    Credentials c = creds(tuple());
    c.password = "nope";
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    EXPECT_EQ(a->code(), 401);
    EXPECT_TRUE(a->has(stun::attr::kNonce));
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kBadIntegrity), 1u);
}

TEST_F(ServerTest, UnknownUserIs401) {
    Credentials c = creds(tuple(), "mallory");
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest, {}, &c));
    EXPECT_EQ(a->code(), 401);
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kUnknownUser), 1u);
}

TEST_F(ServerTest, StaleNonceIs438WithFreshNonce) {
    const Credentials c = creds(tuple());
    advance_s(3601);
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 438);
    EXPECT_EQ(a->reason(), "Stale Nonce");
    EXPECT_TRUE(a->has(stun::attr::kRealm));
    EXPECT_NE(a->text(stun::attr::kNonce), c.nonce);
    Credentials fresh = c;
    fresh.nonce = a->text(stun::attr::kNonce);
    EXPECT_TRUE(exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                        [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &fresh))
                    ->success());
}

// A nonce of another relay (a redirected client) or of this relay's previous
// run: 438 with a fresh nonce, which then works with the same credentials.
TEST_F(ServerTest, ForeignNonceIs438AndTheFreshNonceWorks) {
    Credentials c = creds(tuple());
    c.nonce = "obMatJos2AAAA0000000000000000000000000000000000000000000000000";
    const Attrs udp = [](auto& b) { b.add_requested_transport(stun::kProtoUdp); };
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest, udp, &c));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 438);
    EXPECT_EQ(a->text(stun::attr::kRealm), "example.org");
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kInvalidNonce), 1u);
    c.nonce = a->text(stun::attr::kNonce);
    EXPECT_TRUE(exchange(tuple(), build(M::kAllocate, stun::Class::kRequest, udp, &c))->success());
    // A nonce issued to another client IP is not valid for this one either.
    Credentials moved = creds(tuple());
    moved.nonce = shared->nonces->issue(A("198.18.1.2"), clock.unix_s(), Authenticator::kNonceFeatures);
    EXPECT_EQ(exchange(tuple(5001), build(M::kAllocate, stun::Class::kRequest, udp, &moved))->code(), 438);
}

TEST_F(ServerTest, IntegrityWithoutNonceIs400) {
    std::vector<uint8_t> buf(512);
    stun::MessageBuilder b(buf, M::kAllocate, stun::Class::kRequest, random_txid());
    b.add_requested_transport(stun::kProtoUdp);
    b.add_text(stun::attr::kUsername, "alice");
    auto key = auth::long_term_key(stun::PasswordAlgorithm::kMd5, "alice", "example.org", "alice-pw");
    b.add_message_integrity(key->span());
    buf.resize(b.size());
    EXPECT_EQ(exchange(tuple(), buf)->code(), 400);
}

TEST_F(ServerTest, Sha256IntegrityAndPasswordAlgorithm) {
    Credentials c = creds(tuple());
    c.alg = stun::PasswordAlgorithm::kSha256;
    c.send_algorithms = true;
    c.sha256_mi = true;
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->success()) << a->code();
    EXPECT_TRUE(a->has(stun::attr::kMessageIntegritySha256));
    EXPECT_FALSE(a->has(stun::attr::kMessageIntegrity));
    auto key = auth::long_term_key(stun::PasswordAlgorithm::kSha256, "alice", "example.org", "alice-pw");
    EXPECT_TRUE(stun::verify_message_integrity_sha256(a->view, key->span()));
}

TEST_F(ServerTest, Md5KeyWithSha256Integrity) {
    Credentials c = creds(tuple());
    c.sha256_mi = true;
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    EXPECT_TRUE(a->success());
}

// An Allocate with c's USERNAME, REALM and NONCE, the algorithm attributes
// `algorithms` adds as a test wants them, and MESSAGE-INTEGRITY with c's key
// under `key_alg`.
std::vector<uint8_t> allocate_with_algorithms(const Credentials& c, stun::PasswordAlgorithm key_alg,
                                              const std::function<void(stun::MessageBuilder&)>& algorithms) {
    std::vector<uint8_t> buf(512);
    stun::MessageBuilder b(buf, M::kAllocate, stun::Class::kRequest, random_txid());
    b.add_requested_transport(stun::kProtoUdp);
    b.add_text(stun::attr::kUsername, c.user);
    b.add_text(stun::attr::kRealm, c.realm);
    b.add_text(stun::attr::kNonce, c.nonce);
    algorithms(b);
    auto key = auth::long_term_key(key_alg, c.user, c.realm, c.password);
    b.add_message_integrity(key->span());
    buf.resize(b.size());
    return buf;
}

TEST_F(ServerTest, PasswordAlgorithmsMismatchIs400) {
    const auto buf = allocate_with_algorithms(creds(tuple()), stun::PasswordAlgorithm::kMd5, [](auto& b) {
        const std::array<stun::PasswordAlgorithm, 1> only_md5 = {stun::PasswordAlgorithm::kMd5};  // not what we sent
        b.add_password_algorithms(only_md5);
        b.add_password_algorithm(stun::PasswordAlgorithm::kMd5);
    });
    EXPECT_EQ(exchange(tuple(), buf)->code(), 400);
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kBadAlgorithm), 1u);
}

// RFC 8489 section 9.2.4: PASSWORD-ALGORITHM must match one of the entries
// of the PASSWORD-ALGORITHMS we sent, parameters included; MD5 and SHA-256
// have none, so SHA-256 with a parameter is refused (it was accepted).
TEST_F(ServerTest, PasswordAlgorithmWithParametersIs400) {
    for (const bool with_params : {true, false}) {  // the refused one first: no allocation yet
        // SHA-256 (2), parameters length 0 or 4, then the parameters.
        const std::vector<uint8_t> alg = with_params ? std::vector<uint8_t>{0, 2, 0, 4, 1, 2, 3, 4}
                                                     : std::vector<uint8_t>{0, 2, 0, 0};
        const auto buf = allocate_with_algorithms(creds(tuple()), stun::PasswordAlgorithm::kSha256, [&](auto& b) {
            b.add_password_algorithms(Authenticator::kAlgorithms);  // what the 401 offered
            b.add(stun::attr::kPasswordAlgorithm, alg);
        });
        auto a = exchange(tuple(), buf);
        ASSERT_TRUE(a);
        if (with_params) {
            EXPECT_EQ(a->code(), 400);
            EXPECT_EQ(stats->auth_failures_of(AuthFailure::kBadAlgorithm), 1u);
        } else {
            EXPECT_TRUE(a->success()) << a->code();
            EXPECT_TRUE(server->allocations().find(tuple()) != nullptr);
        }
    }
}

TEST_F(ServerTest, UserhashInsteadOfUsername) {
    Credentials c = creds(tuple());
    c.userhash = true;
    auto a = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    ASSERT_TRUE(a);
    EXPECT_TRUE(a->success()) << a->code();
    EXPECT_EQ(server->allocations().find(tuple())->username, "alice");
}

TEST_F(ServerTest, RestSecretCredentials) {
    Config cfg = base_config();
    cfg.rest_secrets = {"new-secret", "old-secret"};
    start(cfg);
    for (const char* secret : {"new-secret", "old-secret"}) {
        const std::string user = std::to_string(clock.unix_s() + 3600) + ":carol";
        Credentials c = creds(tuple());
        c.user = user;
        c.password = auth::rest_password(secret, user);
        const FiveTuple ft = tuple(std::string(secret) == "new-secret" ? 1 : 2);
        c.nonce = creds(ft).nonce;
        auto a = exchange(ft, build(M::kAllocate, stun::Class::kRequest,
                                    [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
        EXPECT_TRUE(a->success()) << secret;
    }
    const std::string expired = std::to_string(clock.unix_s() - 1) + ":carol";
    Credentials c = creds(tuple(3));
    c.user = expired;
    c.password = auth::rest_password("new-secret", expired);
    EXPECT_EQ(exchange(tuple(3), build(M::kAllocate, stun::Class::kRequest, {}, &c))->code(), 401);
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kExpiredUser), 1u);
}

TEST_F(ServerTest, OtherUserOnAllocationIs441) {
    ASSERT_TRUE(allocate(tuple()).success());
    auto r = request(tuple(), M::kRefresh, {}, "bob");
    EXPECT_EQ(r.code(), 441);
    EXPECT_EQ(r.reason(), "Wrong Credentials");
}

TEST_F(ServerTest, UnknownComprehensionRequiredIs420) {
    auto a = allocate(tuple(), [](auto& b) {
        const std::array<uint8_t, 4> v{};
        b.add(0x0031, v);
    });
    EXPECT_EQ(a.code(), 420);
    const auto* u = a.view.find(stun::attr::kUnknownAttributes);
    ASSERT_NE(u, nullptr);
    std::array<uint16_t, 4> types{};
    size_t n = 0;
    ASSERT_EQ(stun::decode_unknown_attributes(a.view.value(*u), types, n), stun::AttrError::kOk);
    ASSERT_EQ(n, 1u);
    EXPECT_EQ(types[0], 0x0031);
}

TEST_F(ServerTest, UnauthenticatedAnswersAreRateLimited) {
    Config c = base_config();
    c.unauth_per_ip_per_s = 5;
    start(c);
    int answered = 0;
    for (int i = 0; i < 20; ++i) {
        answered += exchange(tuple(static_cast<uint16_t>(1000 + i)), plain_allocate()).has_value() ? 1 : 0;
    }
    EXPECT_EQ(answered, 5);
    EXPECT_EQ(stats->drops_of(Drop::kUnauthRateLimit), 15u);
    clock.advance_s(1);
    EXPECT_TRUE(exchange(tuple(), plain_allocate()).has_value());
    // Other sources have their own bucket.
    FiveTuple other = tuple();
    other.client = A("198.18.1.2:5000");
    EXPECT_TRUE(exchange(other, plain_allocate()).has_value());
}

// 400 answers to unknown methods and to requests with malformed attributes
// are larger than what provoked them: the same per-source budget as the
// challenges (spoofed sources must not get a reflector). Binding is answered.
TEST_F(ServerTest, BadRequestAnswersShareTheUnauthenticatedLimit) {
    Config c = base_config();
    c.unauth_per_ip_per_s = 4;
    start(c);
    int answered = 0;
    for (int i = 0; i < 10; ++i) {
        // Method 0x0FF: no such TURN method.
        const auto m = build(static_cast<stun::Method>(0x0FF), stun::Class::kRequest, {}, nullptr);
        answered += exchange(tuple(static_cast<uint16_t>(3000 + i)), m).has_value() ? 1 : 0;
    }
    for (int i = 0; i < 10; ++i) {
        // A sound header whose one attribute overruns the message: 400 from on_parse_error.
        auto m = build(M::kBinding, stun::Class::kRequest, {}, nullptr);
        m.resize(m.size() + 4);
        const uint8_t attr[4] = {0x80, 0x22, 0x00, 0x40};  // SOFTWARE, 64 bytes, none present
        std::memcpy(m.data() + m.size() - 4, attr, 4);
        m[2] = static_cast<uint8_t>((m.size() - 20) >> 8);
        m[3] = static_cast<uint8_t>(m.size() - 20);
        answered += exchange(tuple(static_cast<uint16_t>(3100 + i)), m).has_value() ? 1 : 0;
    }
    EXPECT_EQ(answered, 4);
    EXPECT_EQ(stats->drops_of(Drop::kUnauthRateLimit), 16u);
    // Binding is not limited.
    EXPECT_TRUE(exchange(tuple(3200), build(M::kBinding, stun::Class::kRequest, {}, nullptr)).has_value());
}

// Event loops are separate Servers on one Shared: a source whose ports
// SO_REUSEPORT spreads over loops still gets the configured rate in total.
TEST_F(ServerTest, UnauthenticatedLimitIsSharedByEventLoops) {
    Config c = base_config();
    c.unauth_per_ip_per_s = 6;
    start(c);
    FakeIo io2;
    Stats stats2;
    Server loop2(*shared, clock, io2, hook, stats2);
    int answered = 0;
    for (int i = 0; i < 20; ++i) {
        const FiveTuple ft = tuple(static_cast<uint16_t>(2000 + i));
        if (i % 2 == 0) {
            answered += exchange(ft, plain_allocate()).has_value() ? 1 : 0;
        } else {
            const size_t before = io2.client.size();
            loop2.on_client_datagram(ft, plain_allocate());
            answered += io2.client.size() == before + 1 ? 1 : 0;
        }
    }
    EXPECT_EQ(answered, 6);
    EXPECT_EQ(stats->drops_of(Drop::kUnauthRateLimit) + stats2.drops_of(Drop::kUnauthRateLimit), 14u);
}

// One IPv6 /64 is one source (one subscriber's prefix); the next /64 is another.
TEST_F(ServerTest, UnauthenticatedLimitCountsAnIpv6Slash64AsOneSource) {
    Config c = base_config();
    c.unauth_per_ip_per_s = 3;
    start(c);
    int answered = 0;
    for (int i = 0; i < 10; ++i) {
        FiveTuple ft = tuple(5000, true);
        ft.client = A(("[fd00::" + std::to_string(100 + i) + ":7]:5000").c_str());  // fd00::/64, different interface IDs
        answered += exchange(ft, plain_allocate()).has_value() ? 1 : 0;
    }
    EXPECT_EQ(answered, 3);
    FiveTuple other = tuple(5000, true);
    other.client = A("[fd00:0:0:1::7]:5000");  // fd00:0:0:1::/64
    EXPECT_TRUE(exchange(other, plain_allocate()).has_value());
    EXPECT_EQ(SourceRateLimiter::source_key(A("[fd00::1:2:3:4]:9")), A("[fd00::]:0"));
    EXPECT_EQ(SourceRateLimiter::source_key(A("[::ffff:198.18.1.1]:9")), A("198.18.1.1:0"));
}

// The limiter itself from several threads at once (the loops' threads),
// started together, each inserting thousands of sources of its own (the
// shards' maps rehash) between requests from one shared source: the shared
// source is answered exactly its bucket (no refill at a fixed time), every
// other source once.
TEST(SourceRateLimiter, ThreadsShareOneBucketPerSource) {
    SourceRateLimiter l(50);
    const auto shared_source = Address::v4((198u << 24) | (18u << 16) | 7, 1);
    constexpr int kThreads = 4, kEach = 5000;
    std::atomic<int> shared_allowed{0}, own_allowed{0};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < kEach; ++i) {
                shared_allowed += l.allow(shared_source.with_port(static_cast<uint16_t>(i)), 1000) ? 1 : 0;
                const uint32_t own = (198u << 24) | (19u << 16) | static_cast<uint32_t>(t * kEach + i);
                own_allowed += l.allow(Address::v4(own, 2), 1000) ? 1 : 0;
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    EXPECT_EQ(shared_allowed.load(), 50);
    EXPECT_EQ(own_allowed.load(), kThreads * kEach);
    EXPECT_EQ(l.size(), size_t{kThreads * kEach + 1});
    EXPECT_TRUE(l.allow(shared_source, 1020));  // 20 ms refill one token
    EXPECT_FALSE(l.allow(shared_source, 1020));
}

// A flood of new sources: the table stays bounded and every new source (a
// legitimate client among them) still gets its first answer; once the flood
// is idle, a new source's shard drops it.
TEST(SourceRateLimiter, FloodOfSourcesStaysBoundedAndStillAnswersNewSources) {
    SourceRateLimiter l(5, 64);  // 4 per shard
    int admitted = 0;
    for (uint32_t i = 0; i < 10000; ++i) {
        admitted += l.allow(Address::v4((198u << 24) | (18u << 16) | i, 1), 1000) ? 1 : 0;
        ASSERT_LE(l.size(), 64u);
    }
    EXPECT_EQ(admitted, 10000);
    EXPECT_EQ(l.size(), 64u);  // every shard full
    // 1.5 s later everything is idle: the next new source's shard is purged
    // (its 4 entries) before it is added.
    EXPECT_TRUE(l.allow(Address::v4((198u << 24) | (19u << 16) | 1, 1), 2500));
    EXPECT_EQ(l.size(), 61u);
}

TEST_F(ServerTest, BindingAnswersWithXorMappedAndResponseOrigin) {
    auto a = exchange(tuple(), build(M::kBinding, stun::Class::kRequest, {}, nullptr, random_txid(), true));
    ASSERT_TRUE(a);
    EXPECT_TRUE(a->success());
    EXPECT_EQ(a->xor_address(stun::attr::kXorMappedAddress)->to_string(), "198.18.1.1:5000");
    const auto* origin = a->view.find(stun::attr::kResponseOrigin);
    ASSERT_NE(origin, nullptr);
    Address o;
    ASSERT_EQ(stun::decode_address(a->view.value(*origin), o), stun::AttrError::kOk);
    EXPECT_EQ(o.to_string(), "198.18.0.1:3478");
    EXPECT_EQ(a->text(stun::attr::kSoftware), "turnrelay");
    EXPECT_TRUE(a->view.fingerprint() != nullptr);
    EXPECT_TRUE(stun::verify_fingerprint(a->view));
    auto no_fp = exchange(tuple(), build(M::kBinding, stun::Class::kRequest, {}, nullptr));
    EXPECT_EQ(no_fp->view.fingerprint(), nullptr);
}

TEST_F(ServerTest, Rfc3489BindingGetsMappedAddress) {
    std::vector<uint8_t> req(20, 0);
    req[1] = 0x01;  // Binding Request, length 0
    for (size_t i = 4; i < 20; ++i) {
        req[i] = static_cast<uint8_t>(i * 7);
    }
    server->on_client_datagram(tuple(), req);
    ASSERT_EQ(io.client.size(), 1u);
    const auto& resp = io.client[0].bytes;
    ASSERT_GE(resp.size(), 32u);
    EXPECT_EQ(resp[0], 0x01);
    EXPECT_EQ(resp[1], 0x01);
    EXPECT_TRUE(std::equal(req.begin() + 4, req.end(), resp.begin() + 4));  // 128-bit ID echoed
    EXPECT_EQ(resp[20], 0x00);
    EXPECT_EQ(resp[21], 0x01);  // MAPPED-ADDRESS first
    EXPECT_EQ(resp[26] * 256 + resp[27], 5000);
    EXPECT_EQ(resp[28], 198);
}

TEST_F(ServerTest, MalformedRequestIs400) {
    auto req = build(M::kAllocate, stun::Class::kRequest, [](auto& b) { b.add_requested_transport(17); }, nullptr);
    req[22] = 0x00;
    req[23] = 0x40;  // attribute length runs past the end
    auto a = exchange(tuple(), req);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 400);
    EXPECT_EQ(stats->drops_of(Drop::kMalformed), 1u);
    // Garbage is dropped silently.
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0xFF, 0x00});
    EXPECT_EQ(stats->drops_of(Drop::kMalformed), 2u);
}

TEST_F(ServerTest, UnknownMethodIs400) {
    auto a = exchange(tuple(), build(static_cast<M>(0x0FF), stun::Class::kRequest, {}, nullptr));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 400);
}

TEST_F(ServerTest, ConnectOnUdpAllocationIs400) {
    ASSERT_TRUE(allocate(tuple()).success());
    auto a = request(tuple(), M::kConnect,
                     [](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, A("198.18.9.9:80")); });
    EXPECT_EQ(a.code(), 400);
}

}  // namespace
}  // namespace turn::cp::test
