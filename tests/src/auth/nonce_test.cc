// Stateless nonce cookies (RFC 8489 section 9.2). Time is passed in, never
// slept on.
#include "auth/nonce.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>

namespace turn::auth {
namespace {

constexpr uint32_t kLifetime = 3600;
constexpr uint64_t kNow = 1'700'000'000;

const std::array<uint8_t, 32> kSecret = {
    0x5e, 0x11, 0x6c, 0x9a, 0x03, 0xf2, 0x47, 0x88, 0x21, 0xd4, 0x0b, 0x7e, 0x90, 0x3c, 0xa1, 0x56,
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0xed, 0xcb, 0xa9, 0x87, 0x65, 0x43, 0x21};

Address v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    Address x;
    x.family = Family::kIPv4;
    x.port = port;
    x.ip = {a, b, c, d};
    return x;
}

Address v6_test(uint8_t last, uint16_t port) {
    Address x;
    x.family = Family::kIPv6;
    x.port = port;
    x.ip = {0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    return x;
}

const Address kClient = v4(198, 18, 0, 1, 40000);

TEST(Nonce, FormatIsCookieFeaturesTimeMac) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string n = codec.issue(kClient, kNow, kFeaturePasswordAlgorithms);
    ASSERT_EQ(n.size(), 9u + 4 + 16 + 24);
    EXPECT_EQ(n.substr(0, 9), "obMatJos2");
    // Password algorithms is bit 0 (the least significant, per the RFC 8489
    // erratum on section 18.1): 0x000001 is "AAAB".
    EXPECT_EQ(n.substr(9, 4), "AAAB");
    EXPECT_EQ(n.substr(13, 16), "000000006553f100");  // 1700000000 in hex
    for (char c : n.substr(29)) {
        EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << n;
    }
}

TEST(Nonce, UsernameAnonymityMatchesRfc8489B1Cookie) {
    // RFC 8489 B.1's nonce starts "obMatJos2AAAC": username anonymity only.
    const NonceCodec codec(kSecret, kLifetime);
    EXPECT_EQ(codec.issue(kClient, kNow, kFeatureUsernameAnonymity).substr(0, 13),
              "obMatJos2AAAC");
}

TEST(Nonce, ValidWithinLifetime) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string n = codec.issue(kClient, kNow, 0);
    EXPECT_EQ(codec.check(n, kClient, kNow), NonceStatus::kValid);
    EXPECT_EQ(codec.check(n, kClient, kNow + kLifetime), NonceStatus::kValid);
    // A clock that stepped back a little.
    EXPECT_EQ(codec.check(n, kClient, kNow - 2), NonceStatus::kValid);
}

TEST(Nonce, StaleAfterLifetime) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string n = codec.issue(kClient, kNow, kFeaturePasswordAlgorithms);
    uint32_t features = 0;
    EXPECT_EQ(codec.check(n, kClient, kNow + kLifetime + 1, &features), NonceStatus::kStale);
    EXPECT_EQ(features, kFeaturePasswordAlgorithms);  // reported for stale nonces too
    EXPECT_EQ(codec.check(n, kClient, kNow + 10 * kLifetime), NonceStatus::kStale);
}

TEST(Nonce, FarFutureIssueTimeIsInvalid) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string n = codec.issue(kClient, kNow + 3600, 0);
    EXPECT_EQ(codec.check(n, kClient, kNow), NonceStatus::kInvalid);
}

TEST(Nonce, FeaturesRoundTrip) {
    const NonceCodec codec(kSecret, kLifetime);
    for (uint32_t f : {0u, kFeaturePasswordAlgorithms, kFeatureUsernameAnonymity,
                       kFeaturePasswordAlgorithms | kFeatureUsernameAnonymity, 0xFFFFFFu}) {
        uint32_t out = 0xDEADBEEF;
        EXPECT_EQ(codec.check(codec.issue(kClient, kNow, f), kClient, kNow, &out),
                  NonceStatus::kValid);
        EXPECT_EQ(out, f);
    }
}

TEST(Nonce, ChangedFeaturesAreInvalid) {
    // A bid-down attacker clearing the password-algorithms bit (RFC 8489
    // section 9.2.1) changes the nonce, which no longer authenticates.
    const NonceCodec codec(kSecret, kLifetime);
    std::string n = codec.issue(kClient, kNow, kFeaturePasswordAlgorithms);
    ASSERT_EQ(n.substr(9, 4), "AAAB");
    n.replace(9, 4, "AAAA");
    EXPECT_EQ(codec.check(n, kClient, kNow), NonceStatus::kInvalid);
}

TEST(Nonce, EveryTamperedByteIsInvalid) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string good = codec.issue(kClient, kNow, kFeaturePasswordAlgorithms);
    for (size_t i = 0; i < good.size(); ++i) {
        std::string bad = good;
        // Swap to a different character of the same class so the format
        // still parses and only the MAC can catch it.
        const char c = bad[i];
        bad[i] = (c == '0') ? '1' : (c >= '1' && c <= '9') ? '0' : (c == 'a') ? 'b'
               : (c >= 'b' && c <= 'f') ? 'a' : (c == 'A') ? 'B' : 'A';
        EXPECT_EQ(codec.check(bad, kClient, kNow), NonceStatus::kInvalid) << i << " " << bad;
    }
}

TEST(Nonce, OtherClientIsInvalid) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string n = codec.issue(kClient, kNow, 0);
    EXPECT_EQ(codec.check(n, v4(198, 18, 0, 2, 40000), kNow), NonceStatus::kInvalid);
    EXPECT_EQ(codec.check(n, v4(198, 18, 0, 1, 40001), kNow), NonceStatus::kInvalid);

    const std::string n6 = codec.issue(v6_test(1, 5000), kNow, 0);
    EXPECT_EQ(codec.check(n6, v6_test(1, 5000), kNow), NonceStatus::kValid);
    EXPECT_EQ(codec.check(n6, v6_test(2, 5000), kNow), NonceStatus::kInvalid);
}

TEST(Nonce, OtherSecretIsInvalid) {
    std::array<uint8_t, 32> other = kSecret;
    other[31] ^= 1;
    const NonceCodec a(kSecret, kLifetime);
    const NonceCodec b(other, kLifetime);
    EXPECT_EQ(b.check(a.issue(kClient, kNow, 0), kClient, kNow), NonceStatus::kInvalid);

    // Two codecs with random secrets do not accept each other's nonces.
    const NonceCodec r1(kLifetime);
    const NonceCodec r2(kLifetime);
    const std::string n = r1.issue(kClient, kNow, 0);
    EXPECT_EQ(r1.check(n, kClient, kNow), NonceStatus::kValid);
    EXPECT_EQ(r2.check(n, kClient, kNow), NonceStatus::kInvalid);
}

TEST(Nonce, WrongPrefixOrShapeIsInvalid) {
    const NonceCodec codec(kSecret, kLifetime);
    const std::string good = codec.issue(kClient, kNow, 0);

    std::string bad = good;
    bad[0] = 'O';
    EXPECT_EQ(codec.check(bad, kClient, kNow), NonceStatus::kInvalid);
    EXPECT_EQ(codec.check(good.substr(0, good.size() - 1), kClient, kNow), NonceStatus::kInvalid);
    EXPECT_EQ(codec.check(good + "0", kClient, kNow), NonceStatus::kInvalid);
    EXPECT_EQ(codec.check("", kClient, kNow), NonceStatus::kInvalid);
    EXPECT_EQ(codec.check("f//499k954d6OL34oL9FSTvy64sA", kClient, kNow), NonceStatus::kInvalid);

    // Upper-case hex is not what we issue.
    bad = good;
    for (size_t i = 13; i < bad.size(); ++i) {
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = static_cast<char>(bad[i] - 'a' + 'A');
        }
    }
    if (bad != good) {
        EXPECT_EQ(codec.check(bad, kClient, kNow), NonceStatus::kInvalid);
    }
    // Not base64 in the features field.
    bad = good;
    bad[10] = '*';
    EXPECT_EQ(codec.check(bad, kClient, kNow), NonceStatus::kInvalid);
}

TEST(Nonce, ShortAndLongSecrets) {
    // A 16-byte secret behaves like the same secret zero-padded to 32 bytes
    // (HMAC zero-pads short keys), and a 48-byte one is accepted.
    std::array<uint8_t, 16> short_secret{};
    std::copy(kSecret.begin(), kSecret.begin() + 16, short_secret.begin());
    std::array<uint8_t, 32> padded{};
    std::copy(short_secret.begin(), short_secret.end(), padded.begin());
    const NonceCodec a(short_secret, kLifetime);
    const NonceCodec b(padded, kLifetime);
    EXPECT_EQ(a.issue(kClient, kNow, 0), b.issue(kClient, kNow, 0));

    std::array<uint8_t, 48> long_secret{};
    long_secret.fill(0x42);
    const NonceCodec c(long_secret, kLifetime);
    const std::string n = c.issue(kClient, kNow, 0);
    EXPECT_EQ(c.check(n, kClient, kNow), NonceStatus::kValid);
    EXPECT_EQ(a.check(n, kClient, kNow), NonceStatus::kInvalid);
}

}  // namespace
}  // namespace turn::auth
