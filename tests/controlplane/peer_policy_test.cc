// Peer address policy: every known bypass of other TURN servers is its own test.
#include "core/peer_policy.h"

#include <gtest/gtest.h>

#include "core/config.h"
#include "core/shared.h"

namespace turn::cp {
namespace {

Address A(const char* s) { return *Address::parse(s); }

PeerPolicy default_policy() {
    return PeerPolicy({}, {}, {A("198.18.0.1:3478"), A("[fd00::1]:3478")}, {A("198.18.0.2"), A("fd00::2")});
}

TEST(PeerPolicy, PublicAddressesPermitted) {
    const auto p = default_policy();
    EXPECT_TRUE(p.permitted_ip(A("8.8.8.8")));
    EXPECT_TRUE(p.permitted_transport(A("198.18.5.5:4000")));
    EXPECT_TRUE(p.permitted_ip(A("2001:db8::1")));
}

TEST(PeerPolicy, DeniesZeroAddress) {
    // 0.0.0.0 reaches the local host on Linux (coturn CVE-2020-26262).
    EXPECT_EQ(default_policy().check_ip(A("0.0.0.0")), PeerVerdict::kDeniedByDefault);
    EXPECT_FALSE(default_policy().permitted_transport(A("0.0.0.0:3478")));
    EXPECT_FALSE(default_policy().permitted_ip(A("0.1.2.3")));
}

TEST(PeerPolicy, DeniesIPv6Unspecified) {
    EXPECT_EQ(default_policy().check_ip(A("::")), PeerVerdict::kDeniedByDefault);
}

TEST(PeerPolicy, DeniesMappedLoopback) {
    // ::ffff:127.0.0.1 must be treated as 127.0.0.1.
    EXPECT_EQ(default_policy().check_ip(A("::ffff:127.0.0.1")), PeerVerdict::kDeniedByDefault);
    EXPECT_FALSE(default_policy().permitted_transport(A("[::ffff:127.0.0.1]:5000")));
    EXPECT_FALSE(default_policy().permitted_ip(A("::ffff:0.0.0.0")));
}

TEST(PeerPolicy, DeniesIPv4Loopback) {
    EXPECT_FALSE(default_policy().permitted_ip(A("127.0.0.1")));
    EXPECT_FALSE(default_policy().permitted_ip(A("127.255.0.7")));
}

TEST(PeerPolicy, DeniesIPv6Loopback) { EXPECT_FALSE(default_policy().permitted_ip(A("::1"))); }

TEST(PeerPolicy, DeniesOwnRelayAddress) {
    EXPECT_EQ(default_policy().check_ip(A("198.18.0.2")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(default_policy().check_ip(A("fd00::2")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(default_policy().check_ip(A("::ffff:198.18.0.2")), PeerVerdict::kDeniedSelf);
}

TEST(PeerPolicy, DeniesOwnListenAddress) {
    EXPECT_EQ(default_policy().check_ip(A("198.18.0.1")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(default_policy().check_transport(A("198.18.0.1:3478")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(default_policy().check_transport(A("[fd00::1]:3478")), PeerVerdict::kDeniedSelf);
}

TEST(PeerPolicy, DeniesIPv4LinkLocal) { EXPECT_FALSE(default_policy().permitted_ip(A("169.254.169.254"))); }

TEST(PeerPolicy, DeniesIPv6LinkLocal) { EXPECT_FALSE(default_policy().permitted_ip(A("fe80::1"))); }

TEST(PeerPolicy, DeniesIPv4Multicast) {
    EXPECT_FALSE(default_policy().permitted_ip(A("224.0.0.1")));
    EXPECT_FALSE(default_policy().permitted_ip(A("239.255.255.250")));
    EXPECT_FALSE(default_policy().permitted_ip(A("255.255.255.255")));
}

TEST(PeerPolicy, DeniesIPv6Multicast) { EXPECT_FALSE(default_policy().permitted_ip(A("ff02::1"))); }

TEST(PeerPolicy, DeniesIPv4CompatibleLoopback) { EXPECT_FALSE(default_policy().permitted_ip(A("::127.0.0.1"))); }

// NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses reach the IPv4 address
// they embed once a gateway translates them: they get that address's verdict.
TEST(PeerPolicy, DeniesNat64And6to4EmbeddingDeniedIPv4) {
    const auto p = default_policy();
    EXPECT_EQ(p.check_ip(A("64:ff9b::7f00:1")), PeerVerdict::kDeniedByDefault);      // 127.0.0.1
    EXPECT_EQ(p.check_ip(A("64:ff9b::a9fe:a9fe")), PeerVerdict::kDeniedByDefault);   // 169.254.169.254
    EXPECT_EQ(p.check_ip(A("64:ff9b::c612:2")), PeerVerdict::kDeniedSelf);           // 198.18.0.2, own relay IP
    EXPECT_EQ(p.check_ip(A("2002:7f00:1::1")), PeerVerdict::kDeniedByDefault);       // 6to4 of 127.0.0.1
    EXPECT_EQ(p.check_ip(A("2002:0:0::1")), PeerVerdict::kDeniedByDefault);          // 6to4 of 0.0.0.0
    EXPECT_FALSE(p.permitted_transport(A("[64:ff9b::7f00:1]:3478")));
    // Public IPv4 behind NAT64 / 6to4 stays reachable.
    EXPECT_TRUE(p.permitted_ip(A("64:ff9b::808:808")));                               // 8.8.8.8
    EXPECT_TRUE(p.permitted_ip(A("2002:808:808::1")));
    // The operator's IPv4 rules apply to the embedded address too.
    PeerPolicy deny10({}, {*Prefix::parse("10.0.0.0/8")}, {}, {});
    EXPECT_EQ(deny10.check_ip(A("64:ff9b::a00:1")), PeerVerdict::kDeniedByOperator);
    PeerPolicy allow_lo({*Prefix::parse("127.0.0.0/8")}, {}, {}, {});
    EXPECT_TRUE(allow_lo.permitted_ip(A("64:ff9b::7f00:1")));
    // A rule on the IPv6 address itself decides first.
    PeerPolicy allow_nat64({*Prefix::parse("64:ff9b::/96")}, {}, {}, {});
    EXPECT_TRUE(allow_nat64.permitted_ip(A("64:ff9b::7f00:1")));
    PeerPolicy deny_6to4({}, {*Prefix::parse("2002::/16")}, {}, {});
    EXPECT_EQ(deny_6to4.check_ip(A("2002:808:808::1")), PeerVerdict::kDeniedByOperator);
}

TEST(PeerPolicy, AllowRangeRepermitsLoopback) {
    PeerPolicy p({*Prefix::parse("127.0.0.0/8"), *Prefix::parse("::1/128")}, {},
                 {A("127.0.0.1:3478"), A("[::1]:3478")}, {A("127.0.0.1"), A("::1")});
    EXPECT_TRUE(p.permitted_ip(A("127.0.0.1")));
    EXPECT_TRUE(p.permitted_ip(A("::ffff:127.0.0.1")));
    EXPECT_TRUE(p.permitted_transport(A("127.0.0.1:40000")));
    EXPECT_TRUE(p.permitted_transport(A("[::1]:40000")));
    // Relayed ports stay reachable (relay-to-relay), the listener never is.
    EXPECT_TRUE(p.permitted_transport(A("127.0.0.1:50000")));
    EXPECT_EQ(p.check_transport(A("127.0.0.1:3478")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(p.check_transport(A("[::ffff:127.0.0.1]:3478")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(p.check_transport(A("[::1]:3478")), PeerVerdict::kDeniedSelf);
    // Other default-denied ranges stay denied.
    EXPECT_FALSE(p.permitted_ip(A("0.0.0.0")));
    EXPECT_FALSE(p.permitted_ip(A("169.254.1.1")));
}

TEST(PeerPolicy, OperatorDenyWinsOverAllow) {
    PeerPolicy p({*Prefix::parse("10.0.0.0/8")}, {*Prefix::parse("10.1.0.0/16")}, {}, {});
    EXPECT_TRUE(p.permitted_ip(A("10.2.3.4")));
    EXPECT_EQ(p.check_ip(A("10.1.3.4")), PeerVerdict::kDeniedByOperator);
    EXPECT_EQ(p.check_ip(A("::ffff:10.1.3.4")), PeerVerdict::kDeniedByOperator);
}

// Private ranges (RFC 1918, RFC 6598 shared space, RFC 4193 unique local,
// RFC 8215 local-use NAT64):
// the networks around a relay's host, denied unless the operator says so.
TEST(PeerPolicy, DeniesPrivateRangesByDefault) {
    const auto p = default_policy();
    for (const char* ip : {"10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1",
                           "192.168.255.255", "100.64.0.1", "100.127.255.255", "fc00::1", "fd12:3456::1",
                           "fec0::1", "feff:ffff::1", "64:ff9b:1::a01:203", "64:ff9b:1:ffff:ffff::1",
                           "::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:c0a8:101::1"}) {
        EXPECT_EQ(p.check_ip(A(ip)), PeerVerdict::kDeniedPrivate) << ip;
    }
    EXPECT_EQ(p.check_transport(A("192.168.1.1:5000")), PeerVerdict::kDeniedPrivate);
    EXPECT_EQ(p.check_transport(A("[fd00::5]:5000")), PeerVerdict::kDeniedPrivate);
    // Their neighbours are public.
    for (const char* ip : {"9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0", "192.167.255.255",
                           "192.169.0.0", "100.63.255.255", "100.128.0.0", "fe00::1", "fbff::1", "fe7f::1",
                           "64:ff9b:0:1::1", "64:ff9b:2::1"}) {
        EXPECT_TRUE(p.permitted_ip(A(ip))) << ip;
    }
    // The relay's own IPs say so first.
    EXPECT_EQ(p.check_ip(A("fd00::2")), PeerVerdict::kDeniedSelf);
    EXPECT_STREQ(verdict_name(PeerVerdict::kDeniedPrivate), "private");
    EXPECT_STREQ(verdict_name(PeerVerdict::kDeniedByOperator), "operator");
    EXPECT_STREQ(verdict_name(PeerVerdict::kPermitted), "");
}

TEST(PeerPolicy, PrivateRangesWhereTheOperatorAllowsThem) {
    // All of them ([policy].allow_private_peers): the other rules stay.
    PeerPolicy all({}, {*Prefix::parse("10.9.0.0/16")}, {A("10.0.0.1:3478")}, {A("10.0.0.2")}, true);
    EXPECT_TRUE(all.permitted_ip(A("10.1.2.3")));
    EXPECT_TRUE(all.permitted_ip(A("fd00::5")));
    EXPECT_TRUE(all.permitted_transport(A("192.168.1.1:5000")));
    EXPECT_EQ(all.check_ip(A("10.0.0.2")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(all.check_transport(A("10.0.0.1:3478")), PeerVerdict::kDeniedSelf);
    EXPECT_EQ(all.check_ip(A("10.9.1.1")), PeerVerdict::kDeniedByOperator);
    EXPECT_EQ(all.check_ip(A("127.0.0.1")), PeerVerdict::kDeniedByDefault);
    // Or one range (allow_peers): only that one.
    PeerPolicy one({*Prefix::parse("10.1.0.0/16")}, {}, {}, {});
    EXPECT_TRUE(one.permitted_ip(A("10.1.2.3")));
    EXPECT_EQ(one.check_ip(A("10.2.0.1")), PeerVerdict::kDeniedPrivate);
}

TEST(PeerPolicy, WildcardListenerOwnsItsPortOnEveryIP) {
    PeerPolicy p({*Prefix::parse("127.0.0.0/8")}, {}, {A("0.0.0.0:3478")}, {A("198.18.0.2")});
    EXPECT_EQ(p.check_transport(A("127.0.0.1:3478")), PeerVerdict::kDeniedSelf);
    EXPECT_TRUE(p.permitted_transport(A("127.0.0.1:3479")));
}

// The policy the relay runs with knows every transport address of its own:
// a client must not make it connect to its TLS port or send to its DTLS,
// RFC 5780 or metrics port (each on a relay IP a peer may otherwise use).
TEST(PeerPolicy, TheRelaysOwnListenersOfEveryKindAreSelf) {
    auto loaded = load_config_text(R"(
[server]
listen = ["198.18.0.1:3478"]
listen_tcp = ["198.18.0.1:3478"]
listen_tls = ["198.18.0.9:443"]
listen_dtls = ["198.18.0.1:5349"]
alternate_ips = ["198.18.0.7"]
alternate_port = 3479
relay_ips = ["198.18.0.1"]
[tls]
certificate = "/nonexistent/cert.pem"
private_key = "/nonexistent/key.pem"
[auth]
users = ["a:b"]
[metrics]
listen = "198.18.0.1:9641"
)",
                                   {});
    ASSERT_TRUE(std::holds_alternative<Config>(loaded)) << std::get<ConfigError>(loaded).message;
    const auto p = Shared::make_policy(std::get<Config>(loaded));
    for (const char* own : {"198.18.0.9:443", "198.18.0.1:5349", "198.18.0.1:9641", "198.18.0.1:3479",
                            "198.18.0.7:3478", "198.18.0.7:3479", "198.18.0.1:3478"}) {
        EXPECT_EQ(p->check_transport(A(own)), PeerVerdict::kDeniedSelf) << own;
    }
    // The TLS listener's IP is the relay's own, whatever the port; another host is a peer.
    EXPECT_EQ(p->check_ip(A("198.18.0.9")), PeerVerdict::kDeniedSelf);
    EXPECT_TRUE(p->permitted_transport(A("198.18.0.2:443")));
}

}  // namespace
}  // namespace turn::cp
