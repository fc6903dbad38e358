// Tests for Address, Prefix and their hashes (src/net/address.h): text
// parsing and formatting, IPv4-mapped normalisation (the coturn
// CVE-2020-26262 class of ACL bypass), prefix matching at every boundary, and
// the kernel sockaddr round trip.
#include "net/address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "../expect_same.h"

namespace turn {

namespace {

Address must_parse(std::string_view text) {
    const std::optional<Address> a = Address::parse(text);
    EXPECT_TRUE(a.has_value()) << "failed to parse \"" << text << "\"";
    return a.value_or(Address{});
}

Prefix must_prefix(std::string_view text) {
    const std::optional<Prefix> p = Prefix::parse(text);
    EXPECT_TRUE(p.has_value()) << "failed to parse prefix \"" << text << "\"";
    return p.value_or(Prefix{});
}

std::array<uint8_t, 16> ip16(std::initializer_list<uint8_t> bytes) {
    std::array<uint8_t, 16> ip{};
    std::copy(bytes.begin(), bytes.end(), ip.begin());
    return ip;
}

// ============================================================ parse

TEST(Address, ParseIPv4) {
    const Address a = must_parse("1.2.3.4");
    EXPECT_EQ(a.family, Family::kIPv4);
    EXPECT_EQ(a.port, 0);
    EXPECT_EQ(a.ip, ip16({1, 2, 3, 4})) << "IPv4 keeps ip[4..15] zero";
    EXPECT_TRUE(a.is_v4());
    EXPECT_FALSE(a.is_v6());
    EXPECT_EQ(a.ip_len(), 4u);
    EXPECT_EQ(a.v4_host_order(), 0x01020304u);
}

TEST(Address, ParseIPv4WithPort) {
    const Address a = must_parse("1.2.3.4:5");
    EXPECT_EQ(a.family, Family::kIPv4);
    EXPECT_EQ(a.port, 5);
    EXPECT_EQ(a.ip, ip16({1, 2, 3, 4}));
    EXPECT_EQ(must_parse("255.255.255.255:65535").port, 65535);
    EXPECT_EQ(must_parse("0.0.0.0:0").port, 0);
}

TEST(Address, ParseIPv6) {
    const Address a = must_parse("::1");
    EXPECT_EQ(a.family, Family::kIPv6);
    EXPECT_EQ(a.port, 0);
    std::array<uint8_t, 16> want{};
    want[15] = 1;
    EXPECT_EQ(a.ip, want);
    EXPECT_TRUE(a.is_v6());
    EXPECT_EQ(a.ip_len(), 16u);
}

TEST(Address, ParseBracketedIPv6WithPort) {
    const Address a = must_parse("[::1]:5");
    EXPECT_EQ(a.family, Family::kIPv6);
    EXPECT_EQ(a.port, 5);
    EXPECT_EQ(a.ip[15], 1);

    const Address b = must_parse("[2001:db8::42]:3478");
    EXPECT_EQ(b.port, 3478);
    EXPECT_EQ(b.ip, ip16({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42}));

    // Brackets without a port: the port defaults to 0.
    const Address c = must_parse("[::1]");
    EXPECT_EQ(c.family, Family::kIPv6);
    EXPECT_EQ(c.port, 0);
}

TEST(Address, TextWithANulByteIsNoAddress) {
    // inet_pton would stop at the NUL and accept what is before it.
    using namespace std::string_view_literals;
    EXPECT_FALSE(Address::parse("192.0.2.1\0evil"sv));
    EXPECT_FALSE(Address::parse("192.0.2.1\0"sv));
    EXPECT_FALSE(Address::parse("2001:db8::1\0x"sv));
    EXPECT_FALSE(Address::parse("[2001:db8::1\0]:5"sv));
    EXPECT_FALSE(Address::parse("192.0.2.1\0:5"sv));
    EXPECT_TRUE(Address::parse("192.0.2.1"sv));
}

TEST(Address, BareIPv6IsNotSplitAtLastColon) {
    // "::1:5" is the address 0:0:0:0:0:0:1:5, not "::1" port 5.
    const Address a = must_parse("::1:5");
    EXPECT_EQ(a.family, Family::kIPv6);
    EXPECT_EQ(a.port, 0);
    EXPECT_EQ(a.ip, ip16({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5}));
}

TEST(Address, ParseV4MappedAndNormalise) {
    const Address a = must_parse("::ffff:127.0.0.1");
    EXPECT_EQ(a.family, Family::kIPv6);
    EXPECT_TRUE(a.is_v4_mapped());
    const Address n = a.normalised();
    EXPECT_EQ(n.family, Family::kIPv4);
    EXPECT_EQ(n.ip, ip16({127, 0, 0, 1})) << "normalised IPv4 must have a zero tail";
    EXPECT_SAME(n, must_parse("127.0.0.1"));
    EXPECT_EQ(n.v4_host_order(), 0x7F000001u);

    const Address p = must_parse("[::ffff:198.18.0.1]:3478").normalised();
    EXPECT_SAME(p, must_parse("198.18.0.1:3478")) << "normalised() keeps the port";
}

TEST(Address, NotV4Mapped) {
    EXPECT_FALSE(must_parse("::1").is_v4_mapped());
    EXPECT_FALSE(must_parse("127.0.0.1").is_v4_mapped());
    EXPECT_FALSE(must_parse("::fffe:127.0.0.1").is_v4_mapped());
    EXPECT_FALSE(must_parse("::127.0.0.1").is_v4_mapped());  // deprecated IPv4-compatible form
    EXPECT_FALSE(must_parse("1::ffff:127.0.0.1").is_v4_mapped());
    // normalised() leaves everything that is not mapped alone.
    for (std::string_view s : {"::1", "2001:db8::1", "10.0.0.1:9", "::127.0.0.1"}) {
        const Address a = must_parse(s);
        EXPECT_SAME(a.normalised(), a) << s;
    }
}

TEST(Address, ParseRejectsBadInput) {
    const char* bad[] = {
        "",           "1.2.3",         "[::1",        "1.2.3.4:99999", "1.2.3.4:65536", "1.2.3.4:",
        "1.2.3.4:-1", "1.2.3.4:5x",    "256.1.1.1",   "1.2.3.4.5",     "::1]:5",        "[::1]:",
        "[::1]x",     "[::1]:99999",   "1.2.3.4x",    "::g",           "1:2:3:4:5:6:7:8:9",
        "localhost",  "[1.2.3.4]:5x",  ":5",
    };
    for (const char* s : bad) {
        EXPECT_FALSE(Address::parse(s).has_value()) << "\"" << s << "\" should not parse";
    }
}

TEST(Address, Factories) {
    const Address a = Address::v4(0xC6120001u, 3478);
    EXPECT_SAME(a, must_parse("198.18.0.1:3478"));
    const uint8_t b4[4] = {198, 18, 0, 1};
    EXPECT_SAME(Address::v4(b4, 3478), a);
    uint8_t b6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};
    EXPECT_SAME(Address::v6(b6, 9), must_parse("[fd00::7]:9"));
    EXPECT_EQ(a.with_port(1).port, 1);
    EXPECT_TRUE(a.with_port(1).same_ip(a));
    EXPECT_FALSE(a.same_ip(must_parse("198.18.0.2")));
    EXPECT_FALSE(a.same_ip(must_parse("::ffff:198.18.0.1"))) << "same_ip does not normalise";
}

TEST(Address, Unspecified) {
    EXPECT_TRUE(must_parse("0.0.0.0").is_unspecified());
    EXPECT_TRUE(must_parse("::").is_unspecified());
    EXPECT_TRUE(must_parse("[::]:80").is_unspecified());
    EXPECT_FALSE(must_parse("0.0.0.1").is_unspecified());
    EXPECT_FALSE(must_parse("::1").is_unspecified());
    EXPECT_FALSE(Address{}.is_unspecified()) << "kNone is neither 0.0.0.0 nor ::";
}

// ============================================================ format

TEST(Address, ToString) {
    EXPECT_EQ(must_parse("1.2.3.4:5").to_string(), "1.2.3.4:5");
    EXPECT_EQ(must_parse("1.2.3.4").ip_string(), "1.2.3.4");
    EXPECT_EQ(must_parse("[2001:db8::1]:5").to_string(), "[2001:db8::1]:5");
    EXPECT_EQ(must_parse("2001:db8::1").ip_string(), "2001:db8::1");
    EXPECT_EQ(must_parse("::1").to_string(), "[::1]:0");
}

// RFC 5952: lower case, longest zero run compressed (the first on a tie),
// a single zero group not compressed; mixed notation for mapped addresses.
TEST(Address, ToStringIsCanonicalRfc5952) {
    EXPECT_EQ(must_parse("2001:DB8:0:0:0:0:0:1").ip_string(), "2001:db8::1");
    EXPECT_EQ(must_parse("2001:db8:0:0:1:0:0:1").ip_string(), "2001:db8::1:0:0:1");
    EXPECT_EQ(must_parse("2001:db8:0:1:1:1:1:1").ip_string(), "2001:db8:0:1:1:1:1:1");
    EXPECT_EQ(must_parse("::ffff:127.0.0.1").ip_string(), "::ffff:127.0.0.1");
}

TEST(Address, ToStringParsesBack) {
    for (std::string_view s : {"1.2.3.4:5", "[2001:db8::1]:5", "[::]:0", "0.0.0.0:65535",
                               "[fd00::ffff:1]:3478", "[::ffff:10.0.0.1]:1"}) {
        const Address a = must_parse(s);
        EXPECT_SAME(Address::parse(a.to_string()), a) << s;
    }
}

// ============================================================ sockaddr

TEST(Address, SockaddrIPv4RoundTrip) {
    const Address a = must_parse("198.18.0.1:3478");
    sockaddr_storage ss;
    std::memset(&ss, 0xAB, sizeof ss);
    ASSERT_EQ(a.to_sockaddr(&ss), sizeof(sockaddr_in));
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    EXPECT_EQ(sin->sin_family, AF_INET);
    EXPECT_EQ(sin->sin_port, htons(3478));
    EXPECT_EQ(sin->sin_addr.s_addr, htonl(0xC6120001u));
    const std::optional<Address> back = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
    ASSERT_TRUE(back.has_value());
    EXPECT_SAME(*back, a);
}

TEST(Address, SockaddrIPv6RoundTrip) {
    const Address a = must_parse("[fd00::1:2]:65000");
    sockaddr_storage ss;
    std::memset(&ss, 0xAB, sizeof ss);
    ASSERT_EQ(a.to_sockaddr(&ss), sizeof(sockaddr_in6));
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    EXPECT_EQ(sin6->sin6_family, AF_INET6);
    EXPECT_EQ(sin6->sin6_port, htons(65000));
    EXPECT_EQ(std::memcmp(&sin6->sin6_addr, a.ip.data(), 16), 0);
    EXPECT_EQ(sin6->sin6_flowinfo, 0u) << "unset fields must be zeroed";
    EXPECT_EQ(sin6->sin6_scope_id, 0u) << "unset fields must be zeroed";
    const std::optional<Address> back = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
    ASSERT_TRUE(back.has_value());
    EXPECT_SAME(*back, a);
}

TEST(Address, SockaddrFromKernelStructs) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(80);
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    EXPECT_SAME(Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin)), must_parse("10.1.2.3:80"));

    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    EXPECT_FALSE(Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&sun)).has_value());
}

TEST(Address, SockaddrOfNoneIsEmpty) {
    sockaddr_storage ss{};
    EXPECT_EQ(Address{}.to_sockaddr(&ss), 0u);
}

// ============================================================ hashes

TEST(Address, EqualAddressesHashEqual) {
    const AddressHash h;
    EXPECT_EQ(h(must_parse("198.18.0.1:5")), h(Address::v4(0xC6120001u, 5)));
    EXPECT_EQ(h(must_parse("[fd00::1]:5")), h(must_parse("[fd00:0:0::1]:5")));
    EXPECT_EQ(h(must_parse("::ffff:1.2.3.4").normalised()), h(must_parse("1.2.3.4")));

    FiveTuple t1{must_parse("198.18.0.1:5000"), must_parse("198.18.0.2:3478"), Transport::kUdp};
    FiveTuple t2{Address::v4(0xC6120001u, 5000), Address::v4(0xC6120002u, 3478), Transport::kUdp};
    EXPECT_EQ(t1, t2);
    EXPECT_EQ(FiveTupleHash{}(t1), FiveTupleHash{}(t2));
}

// Not a contract, but a hash that ignores the port or the low address bytes
// would put every client of one NAT into one bucket.
TEST(Address, HashSpreadsPortsAndAddresses) {
    const AddressHash h;
    std::set<size_t> by_port, by_ip, by_v6;
    for (uint16_t p = 1; p <= 256; ++p) {
        by_port.insert(h(Address::v4(0xC6120001u, p)));
    }
    for (uint32_t i = 0; i < 256; ++i) {
        by_ip.insert(h(Address::v4(0xC6120000u + i, 3478)));
        uint8_t b6[16] = {0xfd};
        b6[15] = static_cast<uint8_t>(i);
        by_v6.insert(h(Address::v6(b6, 3478)));
    }
    EXPECT_GT(by_port.size(), 250u);
    EXPECT_GT(by_ip.size(), 250u);
    EXPECT_GT(by_v6.size(), 250u);

    const FiveTupleHash th;
    FiveTuple t{must_parse("198.18.0.1:5000"), must_parse("198.18.0.2:3478"), Transport::kUdp};
    FiveTuple u = t;
    u.transport = Transport::kTcp;
    FiveTuple w = t;
    w.server.port = 3479;
    EXPECT_NE(t, u);
    EXPECT_TRUE(th(t) != th(u) || th(t) != th(w)) << "five-tuple hash ignores transport and server";
}

// ============================================================ prefix

TEST(Prefix, ParseAndToString) {
    const Prefix p = must_prefix("198.18.0.0/15");
    EXPECT_EQ(p.base.family, Family::kIPv4);
    EXPECT_EQ(p.length, 15);
    EXPECT_EQ(p.to_string(), "198.18.0.0/15");
    const Prefix q = must_prefix("fd00::/8");
    EXPECT_EQ(q.base.family, Family::kIPv6);
    EXPECT_EQ(q.length, 8);
    EXPECT_EQ(q.to_string(), "fd00::/8");
}

TEST(Prefix, BareAddressIsFullLength) {
    EXPECT_EQ(must_prefix("1.2.3.4").length, 32);
    EXPECT_EQ(must_prefix("2001:db8::1").length, 128);
}

TEST(Prefix, ParseRejectsBadInput) {
    for (const char* s : {"", "/8", "1.2.3.4/", "1.2.3.4/33", "1.2.3.4/-1", "::/129", "::/1000",
                          "1.2.3/8", "1.2.3.4/8x", "fd00::/x", "1.2.3.4//8"}) {
        EXPECT_FALSE(Prefix::parse(s).has_value()) << "\"" << s << "\" should not parse";
    }
}

TEST(Prefix, ContainsIPv4) {
    const Prefix p = must_prefix("198.18.0.0/15");
    EXPECT_TRUE(p.contains(must_parse("198.18.0.0")));
    EXPECT_TRUE(p.contains(must_parse("198.19.255.255:9")));
    EXPECT_FALSE(p.contains(must_parse("198.17.255.255")));
    EXPECT_FALSE(p.contains(must_parse("198.20.0.0")));
    const Prefix ten = must_prefix("10.0.0.0/8");
    EXPECT_TRUE(ten.contains(must_parse("10.255.1.2:1234"))) << "the port is ignored";
    EXPECT_FALSE(ten.contains(must_parse("11.0.0.0")));
    EXPECT_FALSE(ten.contains(must_parse("9.255.255.255")));
}

TEST(Prefix, ZeroLengthMatchesWholeFamilyOnly) {
    const Prefix any4 = must_prefix("0.0.0.0/0");
    EXPECT_TRUE(any4.contains(must_parse("0.0.0.0")));
    EXPECT_TRUE(any4.contains(must_parse("255.255.255.255")));
    EXPECT_TRUE(any4.contains(must_parse("1.2.3.4")));
    EXPECT_FALSE(any4.contains(must_parse("::1")));
    EXPECT_FALSE(any4.contains(Address{}));
    const Prefix any6 = must_prefix("::/0");
    EXPECT_TRUE(any6.contains(must_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    EXPECT_TRUE(any6.contains(must_parse("::")));
    EXPECT_FALSE(any6.contains(must_parse("1.2.3.4")));
    EXPECT_FALSE(any6.contains(Address{}));
}

TEST(Prefix, FullLengthMatchesOneAddress) {
    const Prefix p32 = must_prefix("1.2.3.4/32");
    EXPECT_TRUE(p32.contains(must_parse("1.2.3.4:7")));
    EXPECT_FALSE(p32.contains(must_parse("1.2.3.5")));
    EXPECT_FALSE(p32.contains(must_parse("1.2.3.3")));
    const Prefix p128 = must_prefix("2001:db8::1/128");
    EXPECT_TRUE(p128.contains(must_parse("2001:db8::1")));
    EXPECT_FALSE(p128.contains(must_parse("2001:db8::2")));
    EXPECT_FALSE(p128.contains(must_parse("2001:db8::")));
    EXPECT_FALSE(p128.contains(must_parse("2001:db8::1:0:0:1")));
}

TEST(Prefix, ContainsIPv6NonByteBoundary) {
    const Prefix p = must_prefix("2001:db8::/33");
    EXPECT_TRUE(p.contains(must_parse("2001:db8::1")));
    EXPECT_TRUE(p.contains(must_parse("2001:db8:7fff:ffff::1")));
    EXPECT_FALSE(p.contains(must_parse("2001:db8:8000::")));
    EXPECT_FALSE(p.contains(must_parse("2001:db9::")));
    const Prefix f = must_prefix("fd00::/8");
    EXPECT_TRUE(f.contains(must_parse("fdff::1")));
    EXPECT_FALSE(f.contains(must_parse("fe00::1")));
    EXPECT_FALSE(f.contains(must_parse("fc00::1")));
    const Prefix odd = must_prefix("fe80::/10");
    EXPECT_TRUE(odd.contains(must_parse("febf::1")));
    EXPECT_FALSE(odd.contains(must_parse("fec0::1")));
}

// The CVE-2020-26262 shape: a deny rule for 127.0.0.0/8 must also catch the
// peer ::ffff:127.0.0.1.
TEST(Prefix, V4MappedAddressMatchesIPv4Prefix) {
    const Prefix loop = must_prefix("127.0.0.0/8");
    EXPECT_TRUE(loop.contains(must_parse("::ffff:127.0.0.1")));
    EXPECT_TRUE(loop.contains(must_parse("[::ffff:127.255.0.1]:80")));
    EXPECT_FALSE(loop.contains(must_parse("::ffff:128.0.0.1")));
    const Prefix host = must_prefix("10.0.0.1/32");
    EXPECT_TRUE(host.contains(must_parse("::ffff:10.0.0.1")));
    EXPECT_TRUE(must_prefix("0.0.0.0/0").contains(must_parse("::ffff:8.8.8.8")));
}

TEST(Prefix, FamilyMismatchNeverMatches) {
    // ::1.2.3.4 (IPv4-compatible, not mapped) and 1.2.3.4 share their low bytes.
    EXPECT_FALSE(must_prefix("1.2.3.4/32").contains(must_parse("::1.2.3.4")));
    EXPECT_FALSE(must_prefix("::1.2.3.4/128").contains(must_parse("1.2.3.4")));
    EXPECT_FALSE(must_prefix("::/96").contains(must_parse("1.2.3.4")));
    EXPECT_FALSE(must_prefix("10.0.0.0/8").contains(must_parse("a00::1")));
}

}  // namespace
}  // namespace turn
