// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT on messages made
// by MessageBuilder (RFC 8489 sections 14.5-14.7).
#include "stun/integrity.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zlib.h>

#include <array>
#include <cstring>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "stun/builder.h"
#include "stun/message.h"

namespace turn::stun {
namespace {

constexpr std::array<uint8_t, kTxIdSize> kTxId = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

const std::span<const uint8_t> kKey = bytes_of("a short-term password");
const std::span<const uint8_t> kOtherKey = bytes_of("a short-term passworD");

// Keeps the buffer the view borrows alive next to the view.
struct Parsed {
    std::vector<uint8_t> bytes;
    MessageView view;
    ParseError error = ParseError::kOk;
};

Parsed parse_copy(std::span<const uint8_t> b) {
    Parsed p;
    p.bytes.assign(b.begin(), b.end());
    p.error = parse(p.bytes, p.view);
    return p;
}

// USERNAME and SOFTWARE in front of the integrity attributes, so the MAC
// covers padded attributes too.
MessageBuilder start(std::span<uint8_t> buf) {
    MessageBuilder b(buf, Method::kBinding, Class::kRequest, kTxId);
    b.add_text(attr::kUsername, "alice").add_text(attr::kSoftware, "integrity test");
    return b;
}

TEST(HmacStun, SubstitutesTheLengthFieldWithoutCopying) {
    // An independent computation: patch a copy and MAC it with the one-shot API.
    std::vector<uint8_t> msg(64);
    for (size_t i = 0; i < msg.size(); ++i) {
        msg[i] = static_cast<uint8_t>(i * 7 + 3);
    }
    const size_t prefix = 40;
    const uint16_t length_field = 0x1234;
    std::vector<uint8_t> patched(msg.begin(), msg.begin() + prefix);
    store_be16(patched.data() + 2, length_field);

    uint8_t expected1[20];
    unsigned int len = 0;
    ASSERT_NE(HMAC(EVP_sha1(), kKey.data(), static_cast<int>(kKey.size()), patched.data(),
                   patched.size(), expected1, &len),
              nullptr);
    uint8_t out1[kSha1Size];
    hmac_sha1_stun(kKey, msg, prefix, length_field, out1);
    EXPECT_EQ(0, std::memcmp(out1, expected1, kSha1Size));

    uint8_t expected256[32];
    ASSERT_NE(HMAC(EVP_sha256(), kKey.data(), static_cast<int>(kKey.size()), patched.data(),
                   patched.size(), expected256, &len),
              nullptr);
    uint8_t out256[kSha256Size];
    hmac_sha256_stun(kKey, msg, prefix, length_field, out256);
    EXPECT_EQ(0, std::memcmp(out256, expected256, kSha256Size));

    // The input itself is untouched.
    EXPECT_EQ(msg[2], 3 + 2 * 7);
}

TEST(HmacStun, ReusedContextsGiveIndependentResults) {
    // The per-thread context is re-keyed per call; a call must not leak into the next.
    std::vector<uint8_t> msg(48, 0xAB);
    uint8_t a[kSha1Size];
    uint8_t b[kSha1Size];
    uint8_t c[kSha1Size];
    hmac_sha1_stun(kKey, msg, 48, 28, a);
    hmac_sha1_stun(kOtherKey, msg, 48, 28, b);
    hmac_sha1_stun(kKey, msg, 48, 28, c);
    EXPECT_NE(0, std::memcmp(a, b, kSha1Size));
    EXPECT_EQ(0, std::memcmp(a, c, kSha1Size));
}

TEST(HmacStun, EmptyKeyIsAnEmptyKeyNotThePreviousOne) {
    // OpenSSL treats a null key in EVP_MAC_init as "reuse the last key"; an
    // empty span must still mean the empty key on the reused context.
    std::vector<uint8_t> msg(48, 0x5A);
    uint8_t first[kSha256Size];
    hmac_sha256_stun(kKey, msg, 48, 28, first);
    uint8_t empty[kSha256Size];
    hmac_sha256_stun({}, msg, 48, 28, empty);

    std::vector<uint8_t> patched = msg;
    store_be16(patched.data() + 2, 28);
    uint8_t expected[32];
    unsigned int len = 0;
    const uint8_t no_key = 0;
    ASSERT_NE(HMAC(EVP_sha256(), &no_key, 0, patched.data(), patched.size(), expected, &len),
              nullptr);
    EXPECT_EQ(0, std::memcmp(empty, expected, kSha256Size));
    EXPECT_NE(0, std::memcmp(empty, first, kSha256Size));
}

TEST(FingerprintValue, IsZlibCrc32XorStun) {
    // CRC-32 check value of "123456789" is 0xCBF43926 (ISO-HDLC).
    EXPECT_EQ(fingerprint_value(bytes_of("123456789")), 0xCBF43926u ^ 0x5354554eu);
    EXPECT_EQ(fingerprint_value({}), 0x5354554eu);
}

TEST(ConstantTimeEqual, ComparesSizeAndBytes) {
    const uint8_t a[] = {1, 2, 3};
    const uint8_t b[] = {1, 2, 4};
    EXPECT_TRUE(constant_time_equal(a, a));
    EXPECT_FALSE(constant_time_equal(a, b));
    EXPECT_FALSE(constant_time_equal(std::span<const uint8_t>(a, 2), a));
    EXPECT_TRUE(constant_time_equal({}, {}));
}

TEST(MessageIntegrity, BuiltMessageVerifies) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity(kKey).add_fingerprint();
    ASSERT_TRUE(b.ok());
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    ASSERT_NE(p.view.message_integrity(), nullptr);
    EXPECT_TRUE(verify_message_integrity(p.view, kKey));
    EXPECT_FALSE(verify_message_integrity(p.view, kOtherKey));
    EXPECT_TRUE(verify_fingerprint(p.view));
    EXPECT_FALSE(verify_message_integrity_sha256(p.view, kKey));  // absent
}

TEST(MessageIntegrity, AbsentAttributesFail) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    ASSERT_TRUE(b.ok());
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity(p.view, kKey));
    EXPECT_FALSE(verify_message_integrity_sha256(p.view, kKey));
    EXPECT_FALSE(verify_fingerprint(p.view));
}

TEST(MessageIntegrity, EveryChangedByteBeforeItFails) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity(kKey);
    ASSERT_TRUE(b.ok());
    const std::vector<uint8_t> good(b.bytes().begin(), b.bytes().end());
    // Every byte except the length field (changing it breaks parsing instead).
    for (size_t i = 0; i < good.size(); ++i) {
        if (i == 2 || i == 3) {
            continue;
        }
        std::vector<uint8_t> bad = good;
        bad[i] ^= 0x01;
        MessageView v;
        if (parse(bad, v) != ParseError::kOk) {
            continue;  // e.g. a flipped attribute length: not a message at all
        }
        EXPECT_FALSE(verify_message_integrity(v, kKey)) << "byte " << i;
    }
}

TEST(MessageIntegritySha256, FullLengthVerifies) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity_sha256(kKey).add_fingerprint();
    ASSERT_TRUE(b.ok());
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(verify_message_integrity_sha256(p.view, kKey));
    EXPECT_FALSE(verify_message_integrity_sha256(p.view, kOtherKey));
    EXPECT_FALSE(verify_message_integrity(p.view, kKey));  // absent
    EXPECT_TRUE(verify_fingerprint(p.view));
}

// RFC 8489 section 14.6: where a STUN usage allows it, the value may be
// truncated to 16..32 bytes in steps of 4; the length field used for the HMAC
// counts the truncated attribute. TURN allows no truncation, so the default
// min_len (32) refuses them.
TEST(MessageIntegritySha256, TruncatedValuesVerify) {
    for (size_t n : {16u, 20u, 24u, 28u}) {
        std::array<uint8_t, 256> buf{};
        MessageBuilder b = start(buf);
        ASSERT_TRUE(b.ok());
        const size_t before = b.size();
        std::span<uint8_t> value = b.reserve(attr::kMessageIntegritySha256, n);
        ASSERT_EQ(value.size(), n);
        uint8_t mac[kSha256Size];
        hmac_sha256_stun(kKey, {buf.data(), before}, before,
                         static_cast<uint16_t>(b.size() - kHeaderSize), mac);
        std::memcpy(value.data(), mac, n);
        b.add_fingerprint();
        ASSERT_TRUE(b.ok());

        Parsed p = parse_copy(b.bytes());
        ASSERT_EQ(p.error, ParseError::kOk) << n;
        ASSERT_NE(p.view.message_integrity_sha256(), nullptr);
        EXPECT_EQ(p.view.message_integrity_sha256()->length, n);
        EXPECT_TRUE(verify_message_integrity_sha256(p.view, kKey, 16)) << n;
        EXPECT_FALSE(verify_message_integrity_sha256(p.view, kKey)) << n;
        EXPECT_FALSE(verify_message_integrity_sha256(p.view, kOtherKey, 16)) << n;
        EXPECT_TRUE(verify_fingerprint(p.view));

        // The leading bytes of the full MAC are not enough: the length field
        // differs from the one a full-length attribute would have had.
        std::array<uint8_t, 256> buf32{};
        MessageBuilder b32 = start(buf32);
        b32.add_message_integrity_sha256(kKey);
        ASSERT_TRUE(b32.ok());
        std::vector<uint8_t> wrong(b.bytes().begin(), b.bytes().end());
        std::memcpy(wrong.data() + before + 4, buf32.data() + before + 4, n);
        MessageView v;
        ASSERT_EQ(parse(wrong, v), ParseError::kOk);
        EXPECT_FALSE(verify_message_integrity_sha256(v, kKey, 16)) << n;
    }
}

TEST(MessageIntegritySha256, TruncatedTamperedFails) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    const size_t before = b.size();
    std::span<uint8_t> value = b.reserve(attr::kMessageIntegritySha256, 16);
    ASSERT_EQ(value.size(), 16u);
    uint8_t mac[kSha256Size];
    hmac_sha256_stun(kKey, {buf.data(), before}, before,
                     static_cast<uint16_t>(b.size() - kHeaderSize), mac);
    std::memcpy(value.data(), mac, 16);
    Parsed good = parse_copy(b.bytes());
    ASSERT_EQ(good.error, ParseError::kOk);
    ASSERT_TRUE(verify_message_integrity_sha256(good.view, kKey, 16));
    value[15] ^= 0x80;
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity_sha256(p.view, kKey, 16));
}

// RFC 8489 section 14.6: MESSAGE-INTEGRITY-SHA256 after MESSAGE-INTEGRITY
// covers it; both verify, each over its own prefix.
TEST(MessageIntegritySha256, AfterMessageIntegrityBothVerify) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity(kKey).add_message_integrity_sha256(kKey).add_fingerprint();
    ASSERT_TRUE(b.ok());
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(verify_message_integrity(p.view, kKey));
    EXPECT_TRUE(verify_message_integrity_sha256(p.view, kKey));
    EXPECT_TRUE(verify_fingerprint(p.view));

    // A change in MESSAGE-INTEGRITY's value breaks only the SHA-256 MAC.
    std::vector<uint8_t> bad = p.bytes;
    bad[p.view.message_integrity()->offset] ^= 0x01;
    MessageView v;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity(v, kKey));
    EXPECT_FALSE(verify_message_integrity_sha256(v, kKey));
    EXPECT_FALSE(verify_fingerprint(v));
}

// RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY (other than
// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) are ignored by the receiver. The
// MAC is defined by MESSAGE-INTEGRITY's position, not by the header length,
// so they must not break verification.
TEST(MessageIntegrity, IgnoredAttributesAfterItDoNotBreakVerification) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity(kKey)
        .add_text(attr::kSoftware, "appended after MI")
        .add_u32(attr::kLifetime, 600)
        .add_fingerprint();
    ASSERT_TRUE(b.ok());
    Parsed p = parse_copy(b.bytes());
    ASSERT_EQ(p.error, ParseError::kOk);
    // The parser dropped the appended attributes.
    EXPECT_EQ(p.view.find(attr::kLifetime), nullptr);
    EXPECT_TRUE(verify_message_integrity(p.view, kKey));
    EXPECT_TRUE(verify_fingerprint(p.view));
}

TEST(Fingerprint, ChangedByteFails) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_message_integrity(kKey).add_fingerprint();
    ASSERT_TRUE(b.ok());
    const std::vector<uint8_t> good(b.bytes().begin(), b.bytes().end());

    // In the CRC value itself: MI still verifies, FINGERPRINT does not.
    std::vector<uint8_t> bad = good;
    bad.back() ^= 0x01;
    MessageView v;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_TRUE(verify_message_integrity(v, kKey));
    EXPECT_FALSE(verify_fingerprint(v));

    // In the transaction ID: both fail.
    bad = good;
    bad[10] ^= 0x40;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity(v, kKey));
    EXPECT_FALSE(verify_fingerprint(v));
}

TEST(Fingerprint, MatchesZlibOverPrefix) {
    std::array<uint8_t, 256> buf{};
    MessageBuilder b = start(buf);
    b.add_fingerprint();
    ASSERT_TRUE(b.ok());
    const auto bytes = b.bytes();
    const size_t prefix = bytes.size() - 8;
    const uint32_t crc = static_cast<uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(prefix)));
    EXPECT_EQ(load_be32(bytes.data() + bytes.size() - 4), crc ^ 0x5354554eu);
}

}  // namespace
}  // namespace turn::stun
