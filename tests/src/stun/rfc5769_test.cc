// Published test vectors: RFC 5769 section 2 (MESSAGE-INTEGRITY, FINGERPRINT,
// XOR-MAPPED-ADDRESS) and RFC 8489 Appendix B.1 (MESSAGE-INTEGRITY-SHA256,
// USERHASH).
//
// The bytes were transcribed from the RFC texts and checked twice; since the
// HMACs and CRCs cover every byte before them, a transcription error would
// make the positive checks below fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "auth/credentials.h"
#include "net/address.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/integrity.h"
#include "stun/message.h"

namespace turn::stun {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// RFC 5769 section 2.1-2.3 short-term password.
constexpr std::string_view kShortTermPassword = "VOkJxbRl1RmTxUk/WvJxBt";

// "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>" in UTF-8 (18 bytes).
constexpr std::string_view kMatrixUser =
    "\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9";

// RFC 5769 section 2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
// USERNAME "evtj:h6vY" (padded with spaces, which receivers must ignore),
// MESSAGE-INTEGRITY and FINGERPRINT.
constexpr std::array<uint8_t, 108> kSampleRequest = {
    0x00, 0x01, 0x00, 0x58,  // Request type and message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01,  // Transaction ID
    0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x10,  // SOFTWARE "STUN test client"
    0x53, 0x54, 0x55, 0x4e,
    0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c,
    0x69, 0x65, 0x6e, 0x74,
    0x00, 0x24, 0x00, 0x04,  // PRIORITY
    0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08,  // ICE-CONTROLLED
    0x93, 0x2f, 0xf9, 0xb1,
    0x51, 0x26, 0x3b, 0x36,
    0x00, 0x06, 0x00, 0x09,  // USERNAME "evtj:h6vY" and 3 bytes of padding
    0x65, 0x76, 0x74, 0x6a,
    0x3a, 0x68, 0x36, 0x76,
    0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14,  // MESSAGE-INTEGRITY
    0x9a, 0xea, 0xa7, 0x0c,
    0xbf, 0xd8, 0xcb, 0x56,
    0x78, 0x1e, 0xf2, 0xb5,
    0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2,
    0x80, 0x28, 0x00, 0x04,  // FINGERPRINT
    0xe5, 0x7a, 0x3b, 0xcf,
};

// RFC 5769 section 2.2: Binding success response, XOR-MAPPED-ADDRESS
// 192.0.2.1:32853.
constexpr std::array<uint8_t, 80> kSampleIPv4Response = {
    0x01, 0x01, 0x00, 0x3c,  // Response type and message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01,  // Transaction ID
    0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b,  // SOFTWARE "test vector" and 1 byte of padding
    0x74, 0x65, 0x73, 0x74,
    0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x08,  // XOR-MAPPED-ADDRESS
    0x00, 0x01, 0xa1, 0x47,
    0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14,  // MESSAGE-INTEGRITY
    0x2b, 0x91, 0xf5, 0x99,
    0xfd, 0x9e, 0x90, 0xc3,
    0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53,
    0xf0, 0x6b, 0xe7, 0xd7,
    0x80, 0x28, 0x00, 0x04,  // FINGERPRINT
    0xc0, 0x7d, 0x4c, 0x96,
};

// RFC 5769 section 2.3: Binding success response, XOR-MAPPED-ADDRESS
// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
constexpr std::array<uint8_t, 92> kSampleIPv6Response = {
    0x01, 0x01, 0x00, 0x48,  // Response type and message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01,  // Transaction ID
    0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b,  // SOFTWARE "test vector" and 1 byte of padding
    0x74, 0x65, 0x73, 0x74,
    0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x14,  // XOR-MAPPED-ADDRESS
    0x00, 0x02, 0xa1, 0x47,
    0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79,
    0xbc, 0x25, 0xf4, 0xb5,
    0xbe, 0xd2, 0xb9, 0xd9,
    0x00, 0x08, 0x00, 0x14,  // MESSAGE-INTEGRITY
    0xa3, 0x82, 0x95, 0x4e,
    0x4b, 0xe6, 0x7b, 0xf1,
    0x17, 0x84, 0xc9, 0x7c,
    0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41,
    0x80, 0x28, 0x00, 0x04,  // FINGERPRINT
    0xc8, 0xfb, 0x0b, 0x4c,
};

// RFC 5769 section 2.4: Binding request with long-term credentials, USERNAME
// kMatrixUser, NONCE "f//499k954d6OL34oL9FSTvy64sA", REALM "example.org".
// It has no FINGERPRINT.
constexpr std::array<uint8_t, 116> kSampleRequestLongTerm = {
    0x00, 0x01, 0x00, 0x60,  // Request type and message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0x78, 0xad, 0x34, 0x33,  // Transaction ID
    0xc6, 0xad, 0x72, 0xc0,
    0x29, 0xda, 0x41, 0x2e,
    0x00, 0x06, 0x00, 0x12,  // USERNAME (18 bytes) and 2 bytes of padding
    0xe3, 0x83, 0x9e, 0xe3,
    0x83, 0x88, 0xe3, 0x83,
    0xaa, 0xe3, 0x83, 0x83,
    0xe3, 0x82, 0xaf, 0xe3,
    0x82, 0xb9, 0x00, 0x00,
    0x00, 0x15, 0x00, 0x1c,  // NONCE (28 bytes)
    0x66, 0x2f, 0x2f, 0x34,
    0x39, 0x39, 0x6b, 0x39,
    0x35, 0x34, 0x64, 0x36,
    0x4f, 0x4c, 0x33, 0x34,
    0x6f, 0x4c, 0x39, 0x46,
    0x53, 0x54, 0x76, 0x79,
    0x36, 0x34, 0x73, 0x41,
    0x00, 0x14, 0x00, 0x0b,  // REALM "example.org" and 1 byte of padding
    0x65, 0x78, 0x61, 0x6d,
    0x70, 0x6c, 0x65, 0x2e,
    0x6f, 0x72, 0x67, 0x00,
    0x00, 0x08, 0x00, 0x14,  // MESSAGE-INTEGRITY
    0xf6, 0x70, 0x24, 0x65,
    0x6d, 0xd6, 0x4a, 0x3e,
    0x02, 0xb8, 0xe0, 0x71,
    0x2e, 0x85, 0xc9, 0xa2,
    0x8c, 0xa8, 0x96, 0x66,
};

// RFC 8489 Appendix B.1 exactly as published: USERHASH, NONCE, REALM,
// MESSAGE-INTEGRITY-SHA256 (156 bytes). Its header length is 0x9c = 156, the
// size of the whole message; RFC 8489 section 5 says the length excludes the
// 20-byte header, so it should be 0x88 = 136 (reported as RFC 8489 erratum
// 6268). Recomputing the HMAC shows the authors fed that same wrong 0x9c to
// HMAC-SHA256, so the published MAC verifies only with the wrong length.
constexpr std::array<uint8_t, 156> kRfc8489B1AsPublished = {
    0x00, 0x01, 0x00, 0x9c,  // Request type and (wrong) message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0x78, 0xad, 0x34, 0x33,  // Transaction ID
    0xc6, 0xad, 0x72, 0xc0,
    0x29, 0xda, 0x41, 0x2e,
    0x00, 0x1e, 0x00, 0x20,  // USERHASH (32 bytes)
    0x4a, 0x3c, 0xf3, 0x8f,
    0xef, 0x69, 0x92, 0xbd,
    0xa9, 0x52, 0xc6, 0x78,
    0x04, 0x17, 0xda, 0x0f,
    0x24, 0x81, 0x94, 0x15,
    0x56, 0x9e, 0x60, 0xb2,
    0x05, 0xc4, 0x6e, 0x41,
    0x40, 0x7f, 0x17, 0x04,
    0x00, 0x15, 0x00, 0x29,  // NONCE (41 bytes) and 3 bytes of padding
    0x6f, 0x62, 0x4d, 0x61,
    0x74, 0x4a, 0x6f, 0x73,
    0x32, 0x41, 0x41, 0x41,
    0x43, 0x66, 0x2f, 0x2f,
    0x34, 0x39, 0x39, 0x6b,
    0x39, 0x35, 0x34, 0x64,
    0x36, 0x4f, 0x4c, 0x33,
    0x34, 0x6f, 0x4c, 0x39,
    0x46, 0x53, 0x54, 0x76,
    0x79, 0x36, 0x34, 0x73,
    0x41, 0x00, 0x00, 0x00,
    0x00, 0x14, 0x00, 0x0b,  // REALM "example.org" and 1 byte of padding
    0x65, 0x78, 0x61, 0x6d,
    0x70, 0x6c, 0x65, 0x2e,
    0x6f, 0x72, 0x67, 0x00,
    0x00, 0x1c, 0x00, 0x20,  // MESSAGE-INTEGRITY-SHA256
    0xe4, 0x68, 0x6c, 0x8f,
    0x0e, 0xde, 0xb5, 0x90,
    0x13, 0xe0, 0x70, 0x90,
    0x01, 0x0a, 0x93, 0xef,
    0xcc, 0xbc, 0xcc, 0x54,
    0x4c, 0x0a, 0x45, 0xd9,
    0xf8, 0x30, 0xaa, 0x6d,
    0x6f, 0x73, 0x5a, 0x01,
};

// The corrected B.1 of erratum 6268: length 0x90, and a PASSWORD-ALGORITHM
// (SHA-256) attribute, which a request using SHA-256 needs (RFC 8489 section
// 9.2.4), inserted before a recomputed MESSAGE-INTEGRITY-SHA256.
constexpr std::array<uint8_t, 164> kRfc8489B1Corrected = {
    0x00, 0x01, 0x00, 0x90,  // Request type and message length
    0x21, 0x12, 0xa4, 0x42,  // Magic cookie
    0x78, 0xad, 0x34, 0x33,  // Transaction ID
    0xc6, 0xad, 0x72, 0xc0,
    0x29, 0xda, 0x41, 0x2e,
    0x00, 0x1e, 0x00, 0x20,  // USERHASH (32 bytes)
    0x4a, 0x3c, 0xf3, 0x8f,
    0xef, 0x69, 0x92, 0xbd,
    0xa9, 0x52, 0xc6, 0x78,
    0x04, 0x17, 0xda, 0x0f,
    0x24, 0x81, 0x94, 0x15,
    0x56, 0x9e, 0x60, 0xb2,
    0x05, 0xc4, 0x6e, 0x41,
    0x40, 0x7f, 0x17, 0x04,
    0x00, 0x15, 0x00, 0x29,  // NONCE (41 bytes) and 3 bytes of padding
    0x6f, 0x62, 0x4d, 0x61,
    0x74, 0x4a, 0x6f, 0x73,
    0x32, 0x41, 0x41, 0x41,
    0x43, 0x66, 0x2f, 0x2f,
    0x34, 0x39, 0x39, 0x6b,
    0x39, 0x35, 0x34, 0x64,
    0x36, 0x4f, 0x4c, 0x33,
    0x34, 0x6f, 0x4c, 0x39,
    0x46, 0x53, 0x54, 0x76,
    0x79, 0x36, 0x34, 0x73,
    0x41, 0x00, 0x00, 0x00,
    0x00, 0x14, 0x00, 0x0b,  // REALM "example.org" and 1 byte of padding
    0x65, 0x78, 0x61, 0x6d,
    0x70, 0x6c, 0x65, 0x2e,
    0x6f, 0x72, 0x67, 0x00,
    0x00, 0x1d, 0x00, 0x04,  // PASSWORD-ALGORITHM SHA-256, no parameters
    0x00, 0x02, 0x00, 0x00,
    0x00, 0x1c, 0x00, 0x20,  // MESSAGE-INTEGRITY-SHA256
    0xb5, 0xc7, 0xbf, 0x00,
    0x5b, 0x6c, 0x52, 0xa2,
    0x1c, 0x51, 0xc5, 0xe8,
    0x92, 0xf8, 0x19, 0x24,
    0x13, 0x62, 0x96, 0xcb,
    0x92, 0x7c, 0x43, 0x14,
    0x93, 0x09, 0x27, 0x8c,
    0xc6, 0x51, 0x8e, 0x65,
};

constexpr std::string_view kB1Nonce = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";

// RFC 5769 section 2.4 predates OpaqueString (RFC 8265): its password
// "The<U+00AD>M<U+00AA>tr<U+2168>" is given as "TheMatrIX" after SASLprep
// (RFC 4013), which deletes the soft hyphen and maps the other two by NFKC.
// OpaqueString would instead reject U+00AD (default-ignorable), so the
// SASLprep'd form is what the key is derived from here (as RFC 8489 B.1 also
// does).
constexpr std::string_view kMatrixPassword = "TheMatrIX";

struct Parsed {
    std::vector<uint8_t> bytes;
    MessageView view;
    ParseError error = ParseError::kOk;
};

template <size_t N>
Parsed parse_copy(const std::array<uint8_t, N>& a) {
    Parsed p;
    p.bytes.assign(a.begin(), a.end());
    p.error = parse(p.bytes, p.view);
    return p;
}

Address xor_mapped(const MessageView& m) {
    Address out;
    const RawAttribute* a = m.find(attr::kXorMappedAddress);
    if (a == nullptr) {
        ADD_FAILURE() << "no XOR-MAPPED-ADDRESS";
        return out;
    }
    EXPECT_EQ(decode_xor_address(m.value(*a), m.transaction_id(), out), AttrError::kOk);
    return out;
}

// One changed byte inside the attributes MESSAGE-INTEGRITY covers: integrity
// (and FINGERPRINT, if present) must fail; one changed byte in FINGERPRINT's
// value: only FINGERPRINT fails.
template <size_t N>
void expect_tamper_detected(const std::array<uint8_t, N>& good, std::span<const uint8_t> key,
                            size_t body_byte) {
    std::vector<uint8_t> bad(good.begin(), good.end());
    bad[body_byte] ^= 0x01;
    MessageView v;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity(v, key));
    EXPECT_FALSE(verify_fingerprint(v));

    bad.assign(good.begin(), good.end());
    bad[N - 1] ^= 0x01;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    if (v.fingerprint() != nullptr) {
        EXPECT_TRUE(verify_message_integrity(v, key));
    }
    EXPECT_FALSE(verify_fingerprint(v));
}

TEST(Rfc5769, SampleRequest) {
    Parsed p = parse_copy(kSampleRequest);
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(p.view.is(Method::kBinding, Class::kRequest));
    const RawAttribute* user = p.view.find(attr::kUsername);
    ASSERT_NE(user, nullptr);
    std::string_view username;
    ASSERT_EQ(decode_text(p.view.value(*user), kMaxUsername, username), AttrError::kOk);
    EXPECT_EQ(username, "evtj:h6vY");

    // Short-term key: OpaqueString(password) (RFC 8489 section 9.1.1).
    const auto key = auth::opaque_string(kShortTermPassword);
    ASSERT_TRUE(key.has_value());
    EXPECT_TRUE(verify_message_integrity(p.view, bytes_of(*key)));
    EXPECT_FALSE(verify_message_integrity(p.view, bytes_of("VOkJxbRl1RmTxUk/WvJxBT")));
    EXPECT_TRUE(verify_fingerprint(p.view));
    expect_tamper_detected(kSampleRequest, bytes_of(*key), 24);  // SOFTWARE text
}

TEST(Rfc5769, SampleIPv4Response) {
    Parsed p = parse_copy(kSampleIPv4Response);
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(p.view.is(Method::kBinding, Class::kSuccess));
    Address expected;
    expected.family = Family::kIPv4;
    expected.port = 32853;
    expected.ip = {192, 0, 2, 1};
    EXPECT_EQ(xor_mapped(p.view), expected);

    const auto key = bytes_of(kShortTermPassword);
    EXPECT_TRUE(verify_message_integrity(p.view, key));
    EXPECT_TRUE(verify_fingerprint(p.view));
    expect_tamper_detected(kSampleIPv4Response, key, 45);  // the xor'd address
}

TEST(Rfc5769, SampleIPv6Response) {
    Parsed p = parse_copy(kSampleIPv6Response);
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(p.view.is(Method::kBinding, Class::kSuccess));
    Address expected;
    expected.family = Family::kIPv6;
    expected.port = 32853;
    expected.ip = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78,
                   0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
    EXPECT_EQ(xor_mapped(p.view), expected);

    const auto key = bytes_of(kShortTermPassword);
    EXPECT_TRUE(verify_message_integrity(p.view, key));
    EXPECT_TRUE(verify_fingerprint(p.view));
    expect_tamper_detected(kSampleIPv6Response, key, 55);  // the xor'd address
}

TEST(Rfc5769, SampleRequestWithLongTermAuthentication) {
    Parsed p = parse_copy(kSampleRequestLongTerm);
    ASSERT_EQ(p.error, ParseError::kOk);
    EXPECT_TRUE(p.view.is(Method::kBinding, Class::kRequest));

    // MD5("<username>:example.org:TheMatrIX"), value from
    // `printf '<utf-8 username>:example.org:TheMatrIX' | md5sum`.
    const auto key = auth::long_term_key(auth::PasswordAlgorithm::kMd5, kMatrixUser,
                                         "example.org", kMatrixPassword);
    ASSERT_TRUE(key.has_value());
    const std::array<uint8_t, 16> expected_key = {0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51,
                                                  0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2, 0xa9};
    ASSERT_EQ(key->len, 16);
    EXPECT_TRUE(std::equal(expected_key.begin(), expected_key.end(), key->bytes.begin()));

    EXPECT_TRUE(verify_message_integrity(p.view, key->span()));
    // No FINGERPRINT in this vector.
    EXPECT_EQ(p.view.fingerprint(), nullptr);
    EXPECT_FALSE(verify_fingerprint(p.view));

    std::vector<uint8_t> bad(kSampleRequestLongTerm.begin(), kSampleRequestLongTerm.end());
    bad[60] ^= 0x01;  // inside the NONCE
    MessageView v;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity(v, key->span()));

    // The unprocessed password is not an OpaqueString (see kMatrixPassword).
    EXPECT_FALSE(auth::opaque_string("The\u00ADM\u00AAtr\u2168").has_value());
}

// The SHA-256 long-term key and USERHASH of RFC 8489 Appendix B.1.
auth::Key b1_key() {
    const auto key = auth::long_term_key(auth::PasswordAlgorithm::kSha256, kMatrixUser,
                                         "example.org", kMatrixPassword);
    EXPECT_TRUE(key.has_value());
    return key.value_or(auth::Key{});
}

TEST(Rfc8489B1, AsPublishedLengthIsWrongButMacIsOverIt) {
    Parsed p = parse_copy(kRfc8489B1AsPublished);
    EXPECT_EQ(p.error, ParseError::kLengthMismatch);

    // Fixed length: the message parses, but the published MAC was computed
    // with the wrong length field, so proper verification fails...
    std::vector<uint8_t> fixed(kRfc8489B1AsPublished.begin(), kRfc8489B1AsPublished.end());
    fixed[3] = 0x88;
    MessageView v;
    ASSERT_EQ(parse(fixed, v), ParseError::kOk);
    const RawAttribute* mi = v.message_integrity_sha256();
    ASSERT_NE(mi, nullptr);
    ASSERT_EQ(mi->length, 32);
    const auth::Key key = b1_key();
    EXPECT_FALSE(verify_message_integrity_sha256(v, key.span()));

    // ...while an HMAC with the published 0x9c in the length field reproduces
    // it, which pins down both the key derivation and what went wrong.
    uint8_t mac[kSha256Size];
    hmac_sha256_stun(key.span(), fixed, mi->offset - 4u, 0x9c, mac);
    EXPECT_TRUE(constant_time_equal(mac, v.value(*mi)));

    // USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
    const RawAttribute* uh = v.find(attr::kUserhash);
    ASSERT_NE(uh, nullptr);
    std::span<const uint8_t> hash;
    ASSERT_EQ(decode_userhash(v.value(*uh), hash), AttrError::kOk);
    const auto expected = auth::userhash(kMatrixUser, "example.org");
    ASSERT_TRUE(expected.has_value());
    EXPECT_TRUE(std::equal(hash.begin(), hash.end(), expected->begin(), expected->end()));

    const RawAttribute* nonce = v.find(attr::kNonce);
    ASSERT_NE(nonce, nullptr);
    std::string_view nonce_text;
    ASSERT_EQ(decode_text(v.value(*nonce), kMaxNonce, nonce_text), AttrError::kOk);
    EXPECT_EQ(nonce_text, kB1Nonce);
}

TEST(Rfc8489B1, CorrectedVectorVerifies) {
    Parsed p = parse_copy(kRfc8489B1Corrected);
    ASSERT_EQ(p.error, ParseError::kOk);
    const auth::Key key = b1_key();
    EXPECT_TRUE(verify_message_integrity_sha256(p.view, key.span()));
    EXPECT_FALSE(verify_message_integrity(p.view, key.span()));  // no SHA-1 MI

    std::vector<uint8_t> bad(kRfc8489B1Corrected.begin(), kRfc8489B1Corrected.end());
    bad[110] ^= 0x01;  // inside the REALM
    MessageView v;
    ASSERT_EQ(parse(bad, v), ParseError::kOk);
    EXPECT_FALSE(verify_message_integrity_sha256(v, key.span()));
}

// Our builder, given the B.1 inputs, produces the corrected vector byte for
// byte: key derivation, USERHASH, padding and the SHA-256 MAC all agree.
TEST(Rfc8489B1, BuilderReproducesCorrectedVector) {
    const auto hash = auth::userhash(kMatrixUser, "example.org");
    ASSERT_TRUE(hash.has_value());
    const auth::Key key = b1_key();
    const std::array<uint8_t, kTxIdSize> txid = {0x78, 0xad, 0x34, 0x33, 0xc6, 0xad,
                                                 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e};
    std::array<uint8_t, 256> buf{};
    MessageBuilder b(buf, Method::kBinding, Class::kRequest, txid);
    b.add(attr::kUserhash, *hash)
        .add_text(attr::kNonce, kB1Nonce)
        .add_text(attr::kRealm, "example.org")
        .add_password_algorithm(PasswordAlgorithm::kSha256)
        .add_message_integrity_sha256(key.span());
    ASSERT_TRUE(b.ok());
    const auto out = b.bytes();
    ASSERT_EQ(out.size(), kRfc8489B1Corrected.size());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), kRfc8489B1Corrected.begin()));
}

}  // namespace
}  // namespace turn::stun
