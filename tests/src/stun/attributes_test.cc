// Tests for the attribute decoders (src/stun/attributes.h) and the matching
// MessageBuilder encoders: every attribute the builder can write goes through
// builder -> parse() -> decode_*, and its wire bytes are compared against the
// layout the RFC draws, so a builder and decoder that agree on a wrong layout
// still fail. The malformed side feeds hand-written values to the decoders.
#include "stun/attributes.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "net/address.h"
#include "stun/builder.h"
#include "stun/constants.h"
#include "stun/message.h"
#include "../expect_same.h"
#include "stun_test_util.h"

namespace turn::stun {
namespace {

using Bytes = std::vector<uint8_t>;
using testutil::kTxId;

// Addresses built field by field, so these tests do not depend on
// Address::parse or the Address factories.
Address mk4(std::initializer_list<uint8_t> ip, uint16_t port) {
    Address a;
    a.family = Family::kIPv4;
    a.port = port;
    std::copy(ip.begin(), ip.end(), a.ip.begin());
    return a;
}
Address mk6(std::initializer_list<uint8_t> ip, uint16_t port) {
    Address a;
    a.family = Family::kIPv6;
    a.port = port;
    std::copy(ip.begin(), ip.end(), a.ip.begin());
    return a;
}

// RFC 5769 sections 2.2 and 2.3.
const Address kV4 = mk4({192, 0, 2, 1}, 32853);
const Address kV6 = mk6({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78, 0x00, 0x11, 0x22, 0x33, 0x44,
                         0x55, 0x66, 0x77},
                        32853);

// One message built with MessageBuilder and parsed back. The view borrows
// buf_, so the object is neither copied nor moved.
class Built {
public:
    template <typename Fill>
    explicit Built(Fill&& fill, size_t capacity = 4096) : buf_(capacity, 0xEE) {
        MessageBuilder b(buf_, Method::kBinding, Class::kSuccess, kTxId);
        fill(b);
        built_ok_ = b.ok();
        if (built_ok_) {
            parse_error_ = parse(b.bytes(), view_);
        }
    }
    Built(const Built&) = delete;
    Built& operator=(const Built&) = delete;

    ::testing::AssertionResult ok() const {
        if (!built_ok_) {
            return ::testing::AssertionFailure() << "builder overflowed";
        }
        if (parse_error_ != ParseError::kOk) {
            return ::testing::AssertionFailure() << "builder output does not parse: " << to_string(parse_error_);
        }
        return ::testing::AssertionSuccess();
    }
    const MessageView& view() const { return view_; }
    std::span<const uint8_t, kTxIdSize> txid() const { return view_.transaction_id(); }

    std::span<const uint8_t> value(uint16_t type) const {
        const RawAttribute* a = view_.find(type);
        if (a == nullptr) {
            ADD_FAILURE() << "attribute 0x" << std::hex << type << " missing";
            return {};
        }
        return view_.value(*a);
    }
    Bytes value_bytes(uint16_t type) const { return testutil::to_vec(value(type)); }

private:
    Bytes buf_;
    MessageView view_;
    bool built_ok_ = false;
    ParseError parse_error_ = ParseError::kOk;
};

Bytes cat(Bytes a, std::string_view text) {
    a.insert(a.end(), text.begin(), text.end());
    return a;
}

// ======================================================= addresses

const uint16_t kPlainAddressTypes[] = {attr::kMappedAddress, attr::kAlternateServer,
                                       attr::kResponseOrigin, attr::kOtherAddress};
const uint16_t kXorAddressTypes[] = {attr::kXorMappedAddress, attr::kXorPeerAddress,
                                     attr::kXorRelayedAddress};

TEST(StunAddressAttr, PlainIPv4RoundTrip) {
    for (uint16_t type : kPlainAddressTypes) {
        Built m([&](MessageBuilder& b) { b.add_address(type, kV4); });
        ASSERT_TRUE(m.ok()) << std::hex << type;
        EXPECT_EQ(m.value_bytes(type), (Bytes{0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1})) << std::hex << type;
        Address out;
        ASSERT_SAME(decode_address(m.value(type), out), AttrError::kOk);
        EXPECT_SAME(out, kV4);
    }
}

TEST(StunAddressAttr, PlainIPv6RoundTrip) {
    for (uint16_t type : kPlainAddressTypes) {
        Built m([&](MessageBuilder& b) { b.add_address(type, kV6); });
        ASSERT_TRUE(m.ok()) << std::hex << type;
        const Bytes want = {0x00, 0x02, 0x80, 0x55, 0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34,
                            0x56, 0x78, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
        EXPECT_EQ(m.value_bytes(type), want) << std::hex << type;
        Address out;
        ASSERT_SAME(decode_address(m.value(type), out), AttrError::kOk);
        EXPECT_SAME(out, kV6);
    }
}

// Wire values from RFC 5769 section 2.2.
TEST(StunAddressAttr, XorIPv4RoundTrip) {
    for (uint16_t type : kXorAddressTypes) {
        Built m([&](MessageBuilder& b) { b.add_xor_address(type, kV4); });
        ASSERT_TRUE(m.ok()) << std::hex << type;
        EXPECT_EQ(m.value_bytes(type), (Bytes{0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43}))
            << std::hex << type;
        Address out;
        ASSERT_SAME(decode_xor_address(m.value(type), m.txid(), out), AttrError::kOk);
        EXPECT_SAME(out, kV4);
    }
}

// Wire values from RFC 5769 section 2.3: the IPv6 address is XORed with the
// magic cookie followed by the transaction ID.
TEST(StunAddressAttr, XorIPv6RoundTrip) {
    for (uint16_t type : kXorAddressTypes) {
        Built m([&](MessageBuilder& b) { b.add_xor_address(type, kV6); });
        ASSERT_TRUE(m.ok()) << std::hex << type;
        EXPECT_EQ(m.value_bytes(type),
                  (Bytes{0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
                         0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9}))
            << std::hex << type;
        Address out;
        ASSERT_SAME(decode_xor_address(m.value(type), m.txid(), out), AttrError::kOk);
        EXPECT_SAME(out, kV6);
    }
}

TEST(StunAddressAttr, XorUsesTransactionIdOnlyForIPv6) {
    const std::array<uint8_t, kTxIdSize> other = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    {
        Built m([&](MessageBuilder& b) { b.add_xor_address(attr::kXorPeerAddress, kV4); });
        ASSERT_TRUE(m.ok());
        Address out;
        ASSERT_SAME(decode_xor_address(m.value(attr::kXorPeerAddress), other, out), AttrError::kOk);
        EXPECT_SAME(out, kV4);
    }
    {
        Built m([&](MessageBuilder& b) { b.add_xor_address(attr::kXorPeerAddress, kV6); });
        ASSERT_TRUE(m.ok());
        Address out;
        ASSERT_SAME(decode_xor_address(m.value(attr::kXorPeerAddress), other, out), AttrError::kOk);
        EXPECT_NE(out, kV6);
        EXPECT_EQ(out.port, kV6.port);
        // The first 4 bytes depend on the cookie only.
        EXPECT_TRUE(std::equal(kV6.ip.begin(), kV6.ip.begin() + 4, out.ip.begin()));
    }
}

TEST(StunAddressAttr, DecodedIPv4HasZeroTail) {
    Address out;
    out.ip.fill(0xFF);
    const Bytes v = {0x00, 0x01, 0x00, 0x01, 10, 0, 0, 1};
    ASSERT_SAME(decode_address(v, out), AttrError::kOk);
    EXPECT_SAME(out, mk4({10, 0, 0, 1}, 1)) << "ip[4..15] must be zero for IPv4";
}

// RFC 8489 section 14.1: the first byte MUST be ignored by receivers.
TEST(StunAddressAttr, ReservedFirstByteIgnored) {
    const Bytes v = {0xFF, 0x01, 0x12, 0x34, 10, 0, 0, 1};
    Address out;
    EXPECT_SAME(decode_address(v, out), AttrError::kOk);
    EXPECT_SAME(out, mk4({10, 0, 0, 1}, 0x1234));
}

TEST(StunAddressAttr, WrongLength) {
    const Bytes cases[] = {
        {},
        {0x00, 0x01, 0x00, 0x01},
        {0x00, 0x01, 0x00, 0x01, 10, 0, 0},  // 7 bytes
    };
    for (const Bytes& v : cases) {
        Address out;
        EXPECT_SAME(decode_address(v, out), AttrError::kBadLength) << v.size() << " bytes";
        EXPECT_SAME(decode_xor_address(v, kTxId, out), AttrError::kBadLength) << v.size() << " bytes";
    }
}

// attributes.h: a valid family byte with the other family's length is a
// length error (kBadLength "for its family"); kBadFamily is only for the byte.
TEST(StunAddressAttr, FamilyLengthMismatch) {
    Bytes v4_with_20 = {0x00, 0x01, 0x00, 0x01};
    v4_with_20.resize(20, 0);
    Bytes v6_with_8 = {0x00, 0x02, 0x00, 0x01, 10, 0, 0, 1};
    Address out;
    EXPECT_SAME(decode_address(v4_with_20, out), AttrError::kBadLength);
    EXPECT_SAME(decode_address(v6_with_8, out), AttrError::kBadLength);
    EXPECT_SAME(decode_xor_address(v4_with_20, kTxId, out), AttrError::kBadLength);
    EXPECT_SAME(decode_xor_address(v6_with_8, kTxId, out), AttrError::kBadLength);
}

TEST(StunAddressAttr, BadFamilyByte) {
    for (uint8_t fam : {uint8_t{0x00}, uint8_t{0x03}, uint8_t{0x04}, uint8_t{0x06}, uint8_t{0xFF}}) {
        Bytes v8 = {0x00, fam, 0x00, 0x01, 10, 0, 0, 1};
        Bytes v20 = {0x00, fam, 0x00, 0x01};
        v20.resize(20, 0);
        Address out;
        EXPECT_SAME(decode_address(v8, out), AttrError::kBadFamily) << int(fam);
        EXPECT_SAME(decode_address(v20, out), AttrError::kBadFamily) << int(fam);
        EXPECT_SAME(decode_xor_address(v8, kTxId, out), AttrError::kBadFamily) << int(fam);
    }
}

// ======================================================= text

struct TextCase {
    uint16_t type;
    size_t max;
};
const TextCase kTextTypes[] = {
    {attr::kUsername, kMaxUsername}, {attr::kRealm, kMaxRealm},       {attr::kNonce, kMaxNonce},
    {attr::kSoftware, kMaxSoftware}, {attr::kAlternateDomain, kMaxAlternateDomain},
};

TEST(StunTextAttr, RoundTrip) {
    const std::string_view samples[] = {"a", "alice", "example.org", "\xc3\xa9t\xc3\xa9",
                                        "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9d\x84\x9e", "turnrelay 0.1.0"};
    for (const TextCase& c : kTextTypes) {
        for (std::string_view s : samples) {
            Built m([&](MessageBuilder& b) { b.add_text(c.type, s); });
            ASSERT_TRUE(m.ok());
            EXPECT_EQ(testutil::as_text(m.value(c.type)), s);
            std::string_view out;
            ASSERT_SAME(decode_text(m.value(c.type), c.max, out), AttrError::kOk) << std::hex << c.type;
            EXPECT_EQ(out, s);
        }
    }
}

TEST(StunTextAttr, MaximumLengthAcceptedOneMoreRejected) {
    for (const TextCase& c : kTextTypes) {
        const Bytes at_max(c.max, 'a');
        const Bytes over(c.max + 1, 'a');
        std::string_view out;
        EXPECT_SAME(decode_text(at_max, c.max, out), AttrError::kOk) << std::hex << c.type;
        EXPECT_EQ(out.size(), c.max);
        EXPECT_SAME(decode_text(over, c.max, out), AttrError::kTooLong) << std::hex << c.type;
    }
}

// RFC 8489 section 14.3: receivers parse up to 763 bytes (senders stay below 509).
TEST(StunTextAttr, Username764BytesTooLong) {
    EXPECT_EQ(kMaxUsername, 763u);
    const Bytes ok(763, 'u');
    std::string_view got;
    EXPECT_SAME(decode_text(ok, kMaxUsername, got), AttrError::kOk);
    const Bytes v(764, 'u');
    std::string_view out;
    EXPECT_SAME(decode_text(v, kMaxUsername, out), AttrError::kTooLong);
}

TEST(StunTextAttr, InvalidUtf8InRealm) {
    const Bytes bad[] = {
        {0x80},                          // lone continuation byte
        {'a', 0xC3},                     // truncated 2-byte sequence at the end
        {'a', 0xE2, 0x82, 'b'},          // truncated 3-byte sequence in the middle
        {0xC0, 0xAF},                    // overlong '/'
        {0xE0, 0x80, 0xAF},              // overlong 3-byte
        {0xF0, 0x80, 0x80, 0xAF},        // overlong 4-byte
        {0xED, 0xA0, 0x80},              // UTF-16 surrogate U+D800
        {0xF4, 0x90, 0x80, 0x80},        // above U+10FFFF
        {0xF8, 0x88, 0x80, 0x80, 0x80},  // 5-byte form
        {0xFF},
        {0xFE},
    };
    for (const Bytes& v : bad) {
        std::string_view out;
        EXPECT_SAME(decode_text(v, kMaxRealm, out), AttrError::kBadUtf8)
            << "first byte 0x" << std::hex << int(v[0]) << ", " << std::dec << v.size() << " bytes";
    }
}

TEST(StunTextAttr, ValidUtf8Boundaries) {
    const Bytes good[] = {
        {0x7F},
        {0xC2, 0x80},              // U+0080
        {0xDF, 0xBF},              // U+07FF
        {0xE0, 0xA0, 0x80},        // U+0800
        {0xED, 0x9F, 0xBF},        // U+D7FF
        {0xEE, 0x80, 0x80},        // U+E000
        {0xEF, 0xBF, 0xBD},        // U+FFFD
        {0xF0, 0x90, 0x80, 0x80},  // U+10000
        {0xF4, 0x8F, 0xBF, 0xBF},  // U+10FFFF
    };
    for (const Bytes& v : good) {
        std::string_view out;
        EXPECT_SAME(decode_text(v, kMaxRealm, out), AttrError::kOk)
            << "first byte 0x" << std::hex << int(v[0]);
    }
}

// ======================================================= ERROR-CODE

TEST(StunErrorCodeAttr, ClassNumberSplitAndReason) {
    Built m([](MessageBuilder& b) { b.add_error_code(438, "Stale Nonce"); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kErrorCode), cat({0x00, 0x00, 4, 38}, "Stale Nonce"));
    ErrorCodeValue ec;
    ASSERT_SAME(decode_error_code(m.value(attr::kErrorCode), ec), AttrError::kOk);
    EXPECT_EQ(ec.code, 438);
    EXPECT_EQ(ec.reason, "Stale Nonce");
}

TEST(StunErrorCodeAttr, RangeEnds) {
    for (uint16_t code : {300, 399, 401, 420, 486, 508, 600, 699}) {
        Built m([&](MessageBuilder& b) { b.add_error_code(code, "r"); });
        ASSERT_TRUE(m.ok());
        const Bytes v = m.value_bytes(attr::kErrorCode);
        ASSERT_EQ(v.size(), 5u);
        EXPECT_EQ(v[2], code / 100) << code;
        EXPECT_EQ(v[3], code % 100) << code;
        ErrorCodeValue ec;
        ASSERT_SAME(decode_error_code(m.value(attr::kErrorCode), ec), AttrError::kOk);
        EXPECT_EQ(ec.code, code);
        EXPECT_EQ(ec.reason, "r");
    }
}

TEST(StunErrorCodeAttr, DefaultReasonPhrase) {
    EXPECT_EQ(error_reason(err::kStaleNonce), "Stale Nonce");
    const uint16_t codes[] = {err::kTryAlternate,       err::kBadRequest,
                              err::kUnauthenticated,    err::kForbidden,
                              err::kUnknownAttribute,   err::kAllocationMismatch,
                              err::kStaleNonce,         err::kAddressFamilyNotSupported,
                              err::kWrongCredentials,   err::kUnsupportedTransportProtocol,
                              err::kPeerAddressFamilyMismatch, err::kConnectionAlreadyExists,
                              err::kConnectionTimeoutOrFailure, err::kAllocationQuotaReached,
                              err::kRoleConflict,       err::kServerError,
                              err::kInsufficientCapacity};
    for (uint16_t code : codes) {
        EXPECT_FALSE(error_reason(code).empty()) << code;
        Built m([&](MessageBuilder& b) { b.add_error_code(code); });
        ASSERT_TRUE(m.ok()) << code;
        ErrorCodeValue ec;
        ASSERT_SAME(decode_error_code(m.value(attr::kErrorCode), ec), AttrError::kOk) << code;
        EXPECT_EQ(ec.code, code);
        EXPECT_EQ(ec.reason, error_reason(code));
    }
}

TEST(StunErrorCodeAttr, EmptyReasonAccepted) {
    const Bytes v = {0x00, 0x00, 4, 0};
    ErrorCodeValue ec;
    ASSERT_SAME(decode_error_code(v, ec), AttrError::kOk);
    EXPECT_EQ(ec.code, 400);
    EXPECT_TRUE(ec.reason.empty());
}

TEST(StunErrorCodeAttr, BadClassOrNumber) {
    const Bytes cases[] = {
        cat({0x00, 0x00, 7, 0}, "x"),   // class 7
        cat({0x00, 0x00, 4, 100}, "x"), // number 100
        cat({0x00, 0x00, 4, 255}, "x"), // number 255
        cat({0x00, 0x00, 2, 0}, "x"),   // class 2: code 200 is not an error
        cat({0x00, 0x00, 0, 0}, "x"),   // code 0
        cat({0x00, 0x00, 1, 99}, "x"),  // 199
    };
    for (const Bytes& v : cases) {
        ErrorCodeValue ec;
        EXPECT_SAME(decode_error_code(v, ec), AttrError::kBadValue) << int(v[2]) << "/" << int(v[3]);
    }
}

TEST(StunErrorCodeAttr, TooShort) {
    for (size_t n = 0; n < 4; ++n) {
        const Bytes v(n, 0);
        ErrorCodeValue ec;
        EXPECT_SAME(decode_error_code(v, ec), AttrError::kBadLength) << n;
    }
}

TEST(StunErrorCodeAttr, ReasonChecked) {
    ErrorCodeValue ec;
    EXPECT_SAME(decode_error_code(Bytes{0x00, 0x00, 4, 38, 'S', 0xC3}, ec), AttrError::kBadUtf8);
    Bytes at_max = {0x00, 0x00, 4, 38};
    at_max.resize(4 + kMaxReason, 'r');
    EXPECT_SAME(decode_error_code(at_max, ec), AttrError::kOk);
    Bytes over = at_max;
    over.push_back('r');
    EXPECT_SAME(decode_error_code(over, ec), AttrError::kTooLong);
}

// ======================================================= UNKNOWN-ATTRIBUTES

TEST(StunUnknownAttributesAttr, OddCountRoundTrip) {
    const uint16_t types[] = {0x7777, 0x0002, 0x1234};
    Built m([&](MessageBuilder& b) { b.add_unknown_attributes(types); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kUnknownAttributes), (Bytes{0x77, 0x77, 0x00, 0x02, 0x12, 0x34}));
    std::array<uint16_t, 8> out{};
    size_t count = 99;
    ASSERT_SAME(decode_unknown_attributes(m.value(attr::kUnknownAttributes), out, count), AttrError::kOk);
    ASSERT_EQ(count, 3u);
    EXPECT_EQ(out[0], 0x7777);
    EXPECT_EQ(out[1], 0x0002);
    EXPECT_EQ(out[2], 0x1234);
}

TEST(StunUnknownAttributesAttr, OddByteLengthRejected) {
    std::array<uint16_t, 8> out{};
    size_t count = 0;
    EXPECT_SAME(decode_unknown_attributes(Bytes{0x77}, out, count), AttrError::kBadLength);
    EXPECT_SAME(decode_unknown_attributes(Bytes{0x77, 0x77, 0x00}, out, count), AttrError::kBadLength);
}

// ======================================================= PASSWORD-ALGORITHM(S)

TEST(StunPasswordAlgorithmAttr, RoundTrip) {
    Built m([](MessageBuilder& b) { b.add_password_algorithm(PasswordAlgorithm::kSha256); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kPasswordAlgorithm), (Bytes{0x00, 0x02, 0x00, 0x00}));
    PasswordAlgorithmValue pa;
    ASSERT_SAME(decode_password_algorithm(m.value(attr::kPasswordAlgorithm), pa), AttrError::kOk);
    EXPECT_EQ(pa.algorithm, 0x0002);
    EXPECT_TRUE(pa.params.empty());
}

TEST(StunPasswordAlgorithmAttr, Parameters) {
    const Bytes v = {0x00, 0x01, 0x00, 0x03, 0xAA, 0xBB, 0xCC};
    PasswordAlgorithmValue pa;
    ASSERT_SAME(decode_password_algorithm(v, pa), AttrError::kOk);
    EXPECT_EQ(pa.algorithm, 0x0001);
    EXPECT_EQ(testutil::to_vec(pa.params), (Bytes{0xAA, 0xBB, 0xCC}));
}

TEST(StunPasswordAlgorithmAttr, Malformed) {
    PasswordAlgorithmValue pa;
    EXPECT_SAME(decode_password_algorithm(Bytes{}, pa), AttrError::kBadLength);
    EXPECT_SAME(decode_password_algorithm(Bytes{0x00, 0x01}, pa), AttrError::kBadLength);
    EXPECT_SAME(decode_password_algorithm(Bytes{0x00, 0x01, 0x00}, pa), AttrError::kBadLength);
    // Parameters length runs past the value.
    EXPECT_SAME(decode_password_algorithm(Bytes{0x00, 0x01, 0x00, 0x04, 0xAA}, pa), AttrError::kBadLength);
    // Bytes after the one entry (a PASSWORD-ALGORITHMS value in the wrong attribute).
    EXPECT_SAME(decode_password_algorithm(Bytes{0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00}, pa),
              AttrError::kBadLength);
}

TEST(StunPasswordAlgorithmsAttr, TwoEntriesRoundTrip) {
    const PasswordAlgorithm algs[] = {PasswordAlgorithm::kMd5, PasswordAlgorithm::kSha256};
    Built m([&](MessageBuilder& b) { b.add_password_algorithms(algs); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kPasswordAlgorithms),
              (Bytes{0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00}));
    std::array<PasswordAlgorithmValue, 4> out{};
    size_t count = 0;
    ASSERT_SAME(decode_password_algorithms(m.value(attr::kPasswordAlgorithms), out, count), AttrError::kOk);
    ASSERT_EQ(count, 2u);
    EXPECT_EQ(out[0].algorithm, 0x0001);
    EXPECT_EQ(out[1].algorithm, 0x0002);
}

// RFC 8489 section 14.12: each entry's parameters are padded to 4 bytes.
TEST(StunPasswordAlgorithmsAttr, EntryParametersArePadded) {
    const Bytes v = {0x00, 0x01, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x00,  // MD5 with 3 bytes + 1 pad
                     0x00, 0x02, 0x00, 0x00};
    std::array<PasswordAlgorithmValue, 4> out{};
    size_t count = 0;
    ASSERT_SAME(decode_password_algorithms(v, out, count), AttrError::kOk);
    ASSERT_EQ(count, 2u);
    EXPECT_EQ(out[0].algorithm, 0x0001);
    EXPECT_EQ(testutil::to_vec(out[0].params), (Bytes{0xAA, 0xBB, 0xCC}));
    EXPECT_EQ(out[1].algorithm, 0x0002);
    EXPECT_TRUE(out[1].params.empty());
}

TEST(StunPasswordAlgorithmsAttr, Malformed) {
    std::array<PasswordAlgorithmValue, 4> out{};
    size_t count = 0;
    // Second entry truncated.
    EXPECT_SAME(decode_password_algorithms(Bytes{0x00, 0x01, 0x00, 0x00, 0x00, 0x02}, out, count),
              AttrError::kBadLength);
    // Parameters length runs past the value.
    EXPECT_SAME(decode_password_algorithms(Bytes{0x00, 0x01, 0x00, 0x08, 0xAA, 0xBB, 0xCC, 0xDD}, out, count),
              AttrError::kBadLength);
}

// ======================================================= fixed-size values

TEST(StunU32Attr, LifetimeAndConnectionId) {
    Built m([](MessageBuilder& b) {
        b.add_u32(attr::kLifetime, 3600).add_u32(attr::kConnectionId, 0xDEADBEEF);
    });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kLifetime), (Bytes{0x00, 0x00, 0x0E, 0x10}));
    EXPECT_EQ(m.value_bytes(attr::kConnectionId), (Bytes{0xDE, 0xAD, 0xBE, 0xEF}));
    uint32_t v = 0;
    ASSERT_SAME(decode_u32(m.value(attr::kLifetime), v), AttrError::kOk);
    EXPECT_EQ(v, 3600u);
    ASSERT_SAME(decode_u32(m.value(attr::kConnectionId), v), AttrError::kOk);
    EXPECT_EQ(v, 0xDEADBEEFu);
}

TEST(StunU32Attr, WrongLength) {
    uint32_t v = 0;
    for (size_t n : {0, 3, 5, 8}) {
        EXPECT_SAME(decode_u32(Bytes(n, 0), v), AttrError::kBadLength) << n;
    }
}

TEST(StunChannelNumberAttr, RoundTrip) {
    for (uint16_t ch : {kChannelMin, uint16_t{0x4321}, kChannelMax}) {
        Built m([&](MessageBuilder& b) { b.add_channel_number(ch); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kChannelNumber),
                  (Bytes{static_cast<uint8_t>(ch >> 8), static_cast<uint8_t>(ch), 0x00, 0x00}));
        uint16_t out = 0;
        ASSERT_SAME(decode_channel_number(m.value(attr::kChannelNumber), out), AttrError::kOk);
        EXPECT_EQ(out, ch);
    }
}

TEST(StunChannelNumberAttr, NotRangeCheckedByDecoder) {
    // attributes.h: "number is not range-checked here" (the handler answers 400).
    uint16_t out = 0;
    ASSERT_SAME(decode_channel_number(Bytes{0x00, 0x01, 0x00, 0x00}, out), AttrError::kOk);
    EXPECT_EQ(out, 1);
    ASSERT_SAME(decode_channel_number(Bytes{0x50, 0x00, 0x00, 0x00}, out), AttrError::kOk);
    EXPECT_EQ(out, 0x5000);
}

TEST(StunChannelNumberAttr, WrongLength) {
    uint16_t out = 0;
    EXPECT_SAME(decode_channel_number(Bytes{0x40, 0x00, 0x00}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_channel_number(Bytes{0x40, 0x00}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_channel_number(Bytes{0x40, 0x00, 0x00, 0x00, 0x00}, out), AttrError::kBadLength);
}

TEST(StunDataAttr, AddAndReserve) {
    const Bytes payload = {1, 2, 3, 4, 5};
    {
        Built m([&](MessageBuilder& b) { b.add(attr::kData, payload); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kData), payload);
    }
    {
        Built m([&](MessageBuilder& b) {
            std::span<uint8_t> dst = b.reserve(attr::kData, 7);
            ASSERT_EQ(dst.size(), 7u);
            for (size_t i = 0; i < dst.size(); ++i) {
                dst[i] = static_cast<uint8_t>(0xD0 + i);
            }
            b.add_text(attr::kSoftware, "after");
        });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kData), (Bytes{0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6}));
        EXPECT_EQ(testutil::as_text(m.value(attr::kSoftware)), "after");
    }
    {
        Built m([&](MessageBuilder& b) { b.add(attr::kData, {}); });
        ASSERT_TRUE(m.ok());
        EXPECT_TRUE(m.value(attr::kData).empty());
    }
}

TEST(StunRequestedTransportAttr, RoundTrip) {
    for (uint8_t proto : {kProtoUdp, kProtoTcp}) {
        Built m([&](MessageBuilder& b) { b.add_requested_transport(proto); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kRequestedTransport), (Bytes{proto, 0x00, 0x00, 0x00}));
        uint8_t out = 0;
        ASSERT_SAME(decode_requested_transport(m.value(attr::kRequestedTransport), out), AttrError::kOk);
        EXPECT_EQ(out, proto);
    }
    uint8_t out = 0;
    EXPECT_SAME(decode_requested_transport(Bytes{17}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_requested_transport(Bytes{17, 0, 0, 0, 0}, out), AttrError::kBadLength);
}

TEST(StunAddressFamilyAttr, RoundTrip) {
    const uint16_t types[] = {attr::kRequestedAddressFamily, attr::kAdditionalAddressFamily};
    for (uint16_t type : types) {
        for (Family f : {Family::kIPv4, Family::kIPv6}) {
            Built m([&](MessageBuilder& b) { b.add_address_family(type, f); });
            ASSERT_TRUE(m.ok());
            const uint8_t code = f == Family::kIPv4 ? kStunFamilyIPv4 : kStunFamilyIPv6;
            EXPECT_EQ(m.value_bytes(type), (Bytes{code, 0x00, 0x00, 0x00})) << std::hex << type;
            Family out = Family::kNone;
            ASSERT_SAME(decode_address_family(m.value(type), out), AttrError::kOk);
            EXPECT_EQ(out, f);
        }
    }
}

TEST(StunAddressFamilyAttr, Malformed) {
    Family out = Family::kNone;
    EXPECT_SAME(decode_address_family(Bytes{0x03, 0, 0, 0}, out), AttrError::kBadFamily);
    EXPECT_SAME(decode_address_family(Bytes{0x00, 0, 0, 0}, out), AttrError::kBadFamily);
    EXPECT_SAME(decode_address_family(Bytes{0x01, 0}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_address_family(Bytes{}, out), AttrError::kBadLength);
}

TEST(StunEvenPortAttr, RBitOnAndOff) {
    for (bool r : {true, false}) {
        Built m([&](MessageBuilder& b) { b.add_even_port(r); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kEvenPort), (Bytes{static_cast<uint8_t>(r ? 0x80 : 0x00)}));
        bool out = !r;
        ASSERT_SAME(decode_even_port(m.value(attr::kEvenPort), out), AttrError::kOk);
        EXPECT_EQ(out, r);
    }
}

// RFC 8656 section 18.8: the other 7 bits are ignored on reception.
TEST(StunEvenPortAttr, RffuBitsIgnored) {
    bool out = true;
    ASSERT_SAME(decode_even_port(Bytes{0x7F}, out), AttrError::kOk);
    EXPECT_FALSE(out);
    ASSERT_SAME(decode_even_port(Bytes{0x81}, out), AttrError::kOk);
    EXPECT_TRUE(out);
}

TEST(StunEvenPortAttr, WrongLength) {
    bool out = false;
    EXPECT_SAME(decode_even_port(Bytes{0x80, 0x00}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_even_port(Bytes{}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_even_port(Bytes{0x80, 0, 0, 0}, out), AttrError::kBadLength);
}

TEST(StunEmptyAttr, DontFragment) {
    Built m([](MessageBuilder& b) { b.add_empty(attr::kDontFragment).add_text(attr::kSoftware, "s"); });
    ASSERT_TRUE(m.ok());
    const RawAttribute* a = m.view().find(attr::kDontFragment);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->length, 0u);
    EXPECT_SAME(decode_empty(m.value(attr::kDontFragment)), AttrError::kOk);
}

TEST(StunEmptyAttr, ContentRejected) {
    EXPECT_SAME(decode_empty(Bytes{0x00}), AttrError::kBadLength);
    EXPECT_SAME(decode_empty(Bytes{0, 0, 0, 0}), AttrError::kBadLength);
}

TEST(StunReservationTokenAttr, RoundTrip) {
    Built m([](MessageBuilder& b) { b.add_u64(attr::kReservationToken, 0x0102030405060708ull); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kReservationToken), (Bytes{1, 2, 3, 4, 5, 6, 7, 8}));
    uint64_t out = 0;
    ASSERT_SAME(decode_reservation_token(m.value(attr::kReservationToken), out), AttrError::kOk);
    EXPECT_EQ(out, 0x0102030405060708ull);
    EXPECT_SAME(decode_reservation_token(Bytes(4, 0), out), AttrError::kBadLength);
    EXPECT_SAME(decode_reservation_token(Bytes(7, 0), out), AttrError::kBadLength);
    EXPECT_SAME(decode_reservation_token(Bytes(12, 0), out), AttrError::kBadLength);
}

// RFC 8656 section 18.12: Family (8), Reserved (13), Class (3), Number (8), Reason.
TEST(StunAddressErrorCodeAttr, RoundTrip) {
    Built m([](MessageBuilder& b) {
        b.add_address_error_code(Family::kIPv6, 440, "Address Family not Supported");
    });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kAddressErrorCode),
              cat({kStunFamilyIPv6, 0x00, 4, 40}, "Address Family not Supported"));
    AddressErrorValue out;
    ASSERT_SAME(decode_address_error_code(m.value(attr::kAddressErrorCode), out), AttrError::kOk);
    EXPECT_EQ(out.family, Family::kIPv6);
    EXPECT_EQ(out.code, 440);
    EXPECT_EQ(out.reason, "Address Family not Supported");

    Built m4([](MessageBuilder& b) { b.add_address_error_code(Family::kIPv4, 508, "Insufficient Capacity"); });
    ASSERT_TRUE(m4.ok());
    EXPECT_EQ(m4.value_bytes(attr::kAddressErrorCode),
              cat({kStunFamilyIPv4, 0x00, 5, 8}, "Insufficient Capacity"));
    ASSERT_SAME(decode_address_error_code(m4.value(attr::kAddressErrorCode), out), AttrError::kOk);
    EXPECT_EQ(out.family, Family::kIPv4);
    EXPECT_EQ(out.code, 508);
}

TEST(StunAddressErrorCodeAttr, Malformed) {
    AddressErrorValue out;
    EXPECT_SAME(decode_address_error_code(Bytes{0x03, 0, 4, 40}, out), AttrError::kBadFamily);
    EXPECT_SAME(decode_address_error_code(Bytes{0x02, 0, 7, 40}, out), AttrError::kBadValue);
    EXPECT_SAME(decode_address_error_code(Bytes{0x02, 0, 4, 100}, out), AttrError::kBadValue);
    EXPECT_SAME(decode_address_error_code(Bytes{0x02, 0, 4}, out), AttrError::kBadLength);
    EXPECT_SAME(decode_address_error_code(Bytes{0x02, 0, 4, 40, 0xFF}, out), AttrError::kBadUtf8);
}

// attributes.h / RFC 8656 section 18.13: 2 bytes reserved, type, code, 4 bytes
// error data.
TEST(StunIcmpAttr, RoundTrip) {
    Built m([](MessageBuilder& b) { b.add_icmp(3, 4, 1400); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kIcmp), (Bytes{0x00, 0x00, 3, 4, 0x00, 0x00, 0x05, 0x78}));
    IcmpValue out;
    ASSERT_SAME(decode_icmp(m.value(attr::kIcmp), out), AttrError::kOk);
    EXPECT_EQ(out.type, 3);
    EXPECT_EQ(out.code, 4);
    EXPECT_EQ(out.error_data, 1400u);

    Built m6([](MessageBuilder& b) { b.add_icmp(2, 0, 1280); });  // ICMPv6 packet too big
    ASSERT_TRUE(m6.ok());
    ASSERT_SAME(decode_icmp(m6.value(attr::kIcmp), out), AttrError::kOk);
    EXPECT_EQ(out.type, 2);
    EXPECT_EQ(out.code, 0);
    EXPECT_EQ(out.error_data, 1280u);

    EXPECT_SAME(decode_icmp(Bytes(7, 0), out), AttrError::kBadLength);
    EXPECT_SAME(decode_icmp(Bytes(4, 0), out), AttrError::kBadLength);
}

// RFC 5780 section 7.2: A (change IP) = 0x4, B (change port) = 0x2.
TEST(StunChangeRequestAttr, RoundTrip) {
    struct Case {
        bool ip, port;
        uint8_t wire;
    };
    for (const Case& c : {Case{false, false, 0x00}, Case{true, false, 0x04}, Case{false, true, 0x02},
                          Case{true, true, 0x06}}) {
        Built m([&](MessageBuilder& b) { b.add_change_request(c.ip, c.port); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kChangeRequest), (Bytes{0x00, 0x00, 0x00, c.wire}));
        ChangeRequest out;
        out.change_ip = !c.ip;
        out.change_port = !c.port;
        ASSERT_SAME(decode_change_request(m.value(attr::kChangeRequest), out), AttrError::kOk);
        EXPECT_EQ(out.change_ip, c.ip);
        EXPECT_EQ(out.change_port, c.port);
    }
    ChangeRequest out;
    EXPECT_SAME(decode_change_request(Bytes{0, 0, 6}, out), AttrError::kBadLength);
}

TEST(StunResponsePortAttr, RoundTrip) {
    Built m([](MessageBuilder& b) { b.add_response_port(3479); });
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.value_bytes(attr::kResponsePort), (Bytes{0x0D, 0x97, 0x00, 0x00}));
    uint16_t port = 0;
    ASSERT_SAME(decode_response_port(m.value(attr::kResponsePort), port), AttrError::kOk);
    EXPECT_EQ(port, 3479);
    EXPECT_SAME(decode_response_port(Bytes{0x0D, 0x97}, port), AttrError::kBadLength);
}

TEST(StunPaddingAttr, ZeroBytes) {
    for (size_t len : {0, 1, 10, 64}) {
        Built m([&](MessageBuilder& b) { b.add_padding(len).add_text(attr::kSoftware, "s"); });
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m.value_bytes(attr::kPadding), Bytes(len, 0)) << len;
        EXPECT_EQ(testutil::as_text(m.value(attr::kSoftware)), "s");
    }
}

TEST(StunUserhashAttr, RoundTrip) {
    Bytes hash(32);
    for (size_t i = 0; i < hash.size(); ++i) {
        hash[i] = static_cast<uint8_t>(i * 7);
    }
    Built m([&](MessageBuilder& b) { b.add(attr::kUserhash, hash); });
    ASSERT_TRUE(m.ok());
    std::span<const uint8_t> out;
    ASSERT_SAME(decode_userhash(m.value(attr::kUserhash), out), AttrError::kOk);
    EXPECT_EQ(testutil::to_vec(out), hash);
    EXPECT_SAME(decode_userhash(Bytes(31, 0), out), AttrError::kBadLength);
    EXPECT_SAME(decode_userhash(Bytes(33, 0), out), AttrError::kBadLength);
    EXPECT_SAME(decode_userhash(Bytes(20, 0), out), AttrError::kBadLength);
}

// ======================================================= everything at once

TEST(StunAttributes, EveryAttributeInOneMessage) {
    const uint16_t unknown[] = {0x7777};
    const PasswordAlgorithm algs[] = {PasswordAlgorithm::kMd5, PasswordAlgorithm::kSha256};
    const Bytes hash(32, 0x11);
    const Bytes data = {9, 8, 7};
    Built m(
        [&](MessageBuilder& b) {
            b.add_address(attr::kMappedAddress, kV4)
                .add_xor_address(attr::kXorMappedAddress, kV6)
                .add_xor_address(attr::kXorPeerAddress, kV4)
                .add_xor_address(attr::kXorRelayedAddress, kV6)
                .add_address(attr::kAlternateServer, kV6)
                .add_address(attr::kResponseOrigin, kV4)
                .add_address(attr::kOtherAddress, kV6)
                .add_text(attr::kUsername, "user")
                .add(attr::kUserhash, hash)
                .add_text(attr::kRealm, "realm")
                .add_text(attr::kNonce, "nonce-1")
                .add_text(attr::kSoftware, "sw")
                .add_text(attr::kAlternateDomain, "alt.example")
                .add_error_code(401)
                .add_unknown_attributes(unknown)
                .add_password_algorithm(PasswordAlgorithm::kMd5)
                .add_password_algorithms(algs)
                .add_u32(attr::kLifetime, 600)
                .add_channel_number(0x4001)
                .add(attr::kData, data)
                .add_requested_transport(kProtoUdp)
                .add_address_family(attr::kRequestedAddressFamily, Family::kIPv6)
                .add_address_family(attr::kAdditionalAddressFamily, Family::kIPv6)
                .add_even_port(true)
                .add_empty(attr::kDontFragment)
                .add_u64(attr::kReservationToken, 42)
                .add_address_error_code(Family::kIPv4, 440, "x")
                .add_icmp(1, 2, 3)
                .add_change_request(true, true)
                .add_response_port(1234)
                .add_padding(5)
                .add_u32(attr::kConnectionId, 77);
        },
        8192);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m.view().attributes().size(), 32u);
    // The RFC 5780 attributes decode, but the server does not process them,
    // so the parser lists them for a 420 (constants.cc says why).
    const std::vector<uint16_t> unknown_got(m.view().unknown_required().begin(),
                                            m.view().unknown_required().end());
    EXPECT_EQ(unknown_got, (std::vector<uint16_t>{attr::kChangeRequest, attr::kResponsePort,
                                                  attr::kPadding}));

    Address a;
    ASSERT_SAME(decode_address(m.value(attr::kMappedAddress), a), AttrError::kOk);
    EXPECT_SAME(a, kV4);
    ASSERT_SAME(decode_xor_address(m.value(attr::kXorMappedAddress), m.txid(), a), AttrError::kOk);
    EXPECT_SAME(a, kV6);
    ASSERT_SAME(decode_xor_address(m.value(attr::kXorPeerAddress), m.txid(), a), AttrError::kOk);
    EXPECT_SAME(a, kV4);
    ASSERT_SAME(decode_xor_address(m.value(attr::kXorRelayedAddress), m.txid(), a), AttrError::kOk);
    EXPECT_SAME(a, kV6);
    ASSERT_SAME(decode_address(m.value(attr::kOtherAddress), a), AttrError::kOk);
    EXPECT_SAME(a, kV6);
    std::string_view s;
    ASSERT_SAME(decode_text(m.value(attr::kNonce), kMaxNonce, s), AttrError::kOk);
    EXPECT_EQ(s, "nonce-1");
    ErrorCodeValue ec;
    ASSERT_SAME(decode_error_code(m.value(attr::kErrorCode), ec), AttrError::kOk);
    EXPECT_EQ(ec.code, 401);
    uint32_t u = 0;
    ASSERT_SAME(decode_u32(m.value(attr::kConnectionId), u), AttrError::kOk);
    EXPECT_EQ(u, 77u);
    bool r = false;
    ASSERT_SAME(decode_even_port(m.value(attr::kEvenPort), r), AttrError::kOk);
    EXPECT_TRUE(r);
    EXPECT_EQ(m.value_bytes(attr::kData), data);
}

TEST(StunAttributes, AttrErrorStringsAreDistinct) {
    std::set<std::string_view> seen;
    for (int e = 0; e <= static_cast<int>(AttrError::kBadUtf8); ++e) {
        const std::string_view s = to_string(static_cast<AttrError>(e));
        EXPECT_FALSE(s.empty()) << e;
        EXPECT_TRUE(seen.insert(s).second) << "duplicate name " << s;
    }
}

}  // namespace
}  // namespace turn::stun
