// Tests for the STUN message parser (src/stun/message.h): one test per class
// of malformed input, each asserting the exact ParseError, plus the walking
// rules of RFC 8489 section 14 and the type encoding of section 5.
//
// Inputs are written with testutil::RawMessage, never with MessageBuilder, so
// a builder bug cannot hide a parser bug. Every input sits in a vector of
// exactly its own size: under ASan (meson -Db_sanitize=address) a read past
// the end is reported.
#include "stun/message.h"

#include <gtest/gtest.h>

#include <bitset>
#include <set>
#include <vector>

#include "common/bytes.h"
#include "stun/constants.h"
#include "../expect_same.h"
#include "stun_test_util.h"

namespace turn::stun {
namespace {

using testutil::RawMessage;

ParseError parse_vec(const std::vector<uint8_t>& v, MessageView& out) {
    return parse(std::span<const uint8_t>(v.data(), v.size()), out);
}
ParseError parse_msg(const RawMessage& m, MessageView& out) { return parse_vec(m.bytes(), out); }
ParseError parse_msg(const RawMessage& m) {
    MessageView v;
    return parse_msg(m, v);
}

std::vector<uint16_t> recorded_types(const MessageView& v) {
    std::vector<uint16_t> t;
    for (const RawAttribute& a : v.attributes()) {
        t.push_back(a.type);
    }
    return t;
}

std::vector<uint16_t> unknown_types(const MessageView& v) {
    return {v.unknown_required().begin(), v.unknown_required().end()};
}

// ---------------------------------------------------------------- header

TEST(StunParse, HeaderOnlyMessageParses) {
    const RawMessage m(make_type(Method::kAllocate, Class::kRequest));
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(v.type(), 0x0003);
    EXPECT_EQ(v.length(), 0u);
    EXPECT_EQ(v.bytes().size(), 20u);
    EXPECT_EQ(v.bytes().data(), m.bytes().data()) << "the view must borrow the input, not copy it";
    EXPECT_TRUE(v.attributes().empty());
    EXPECT_TRUE(v.unknown_required().empty());
    EXPECT_EQ(v.message_integrity(), nullptr);
    EXPECT_EQ(v.message_integrity_sha256(), nullptr);
    EXPECT_EQ(v.fingerprint(), nullptr);
    EXPECT_TRUE(std::equal(v.transaction_id().begin(), v.transaction_id().end(),
                           testutil::kTxId.begin()));
}

TEST(StunParse, TruncatedHeaderIsTooShort) {
    const RawMessage full;
    for (size_t n = 0; n < kHeaderSize; ++n) {
        // Exact-size copy so a read of byte n is out of bounds.
        const std::vector<uint8_t> prefix(full.bytes().begin(), full.bytes().begin() + n);
        MessageView v;
        EXPECT_SAME(parse_vec(prefix, v), ParseError::kTooShort) << "size " << n;
    }
}

TEST(StunParse, LeadingBitsNotZeroIsNotStun) {
    // 0x40: ChannelData; 0x80 and 0xC0: other protocols (RFC 7983 demux).
    for (uint8_t top : {uint8_t{0x40}, uint8_t{0x80}, uint8_t{0xC0}}) {
        RawMessage m;
        m.set_byte(0, static_cast<uint8_t>(m.bytes()[0] | top));
        EXPECT_SAME(parse_msg(m), ParseError::kNotStun) << "first byte " << int(m.bytes()[0]);
    }
}

TEST(StunParse, BadMagicCookie) {
    for (size_t i = 4; i < 8; ++i) {
        RawMessage m;
        m.set_byte(i, static_cast<uint8_t>(m.bytes()[i] ^ 0x01));
        EXPECT_SAME(parse_msg(m), ParseError::kBadMagicCookie) << "cookie byte " << i;
    }
    // An RFC 3489 client puts random bytes there.
    RawMessage m;
    m.set_byte(4, 0).set_byte(5, 0).set_byte(6, 0).set_byte(7, 0);
    EXPECT_SAME(parse_msg(m), ParseError::kBadMagicCookie);
}

TEST(StunParse, HeaderLengthNotMultipleOf4) {
    // Datagram length matches the field exactly, so only the alignment is wrong.
    for (uint16_t len : {1, 2, 3, 5, 6, 7, 9}) {
        RawMessage m;
        m.raw(testutil::filled(len, 0));
        ASSERT_EQ(load_be16(m.bytes().data() + 2), len);
        EXPECT_SAME(parse_msg(m), ParseError::kLengthNotMultipleOf4) << "length " << len;
    }
}

TEST(StunParse, HeaderLengthShorterThanDatagram) {
    RawMessage m;
    m.attr(attr::kSoftware, 4).attr(attr::kSoftware, 4);  // 16 bytes present
    m.set_header_length(8);
    EXPECT_SAME(parse_msg(m), ParseError::kLengthMismatch);

    RawMessage zero;
    zero.attr(attr::kSoftware, 0).set_header_length(0);
    EXPECT_SAME(parse_msg(zero), ParseError::kLengthMismatch);
}

TEST(StunParse, HeaderLengthLongerThanDatagram) {
    RawMessage m;
    m.attr(attr::kSoftware, 4);  // 8 bytes present
    m.set_header_length(16);
    EXPECT_SAME(parse_msg(m), ParseError::kLengthMismatch);

    RawMessage empty;
    empty.set_header_length(4);
    EXPECT_SAME(parse_msg(empty), ParseError::kLengthMismatch);

    RawMessage huge;
    huge.set_header_length(0xFFFC);
    EXPECT_SAME(parse_msg(huge), ParseError::kLengthMismatch);
}

// ------------------------------------------------------------ attribute walk

// With the header length a multiple of 4 and equal to the datagram, every
// attribute boundary is 4-aligned, so a partial attribute header can only be
// a 1-3 byte tail, which the header alignment check rejects first.
// kAttributeTruncated is therefore defensive and not reachable from here.
TEST(StunParse, AttributeHeaderTruncatedIsCaughtByLengthCheck) {
    for (size_t tail = 1; tail <= 3; ++tail) {
        RawMessage m;
        m.attr(attr::kSoftware, 4);
        const uint8_t partial[3] = {0x80, 0x22, 0x00};
        m.raw(std::span<const uint8_t>(partial, tail));
        EXPECT_SAME(parse_msg(m), ParseError::kLengthNotMultipleOf4) << tail << "-byte tail";
    }
}

TEST(StunParse, AttributeValueRunsPastEnd) {
    RawMessage m;
    const auto four = testutil::filled(4, 0x41);
    m.attr_with(attr::kSoftware, 8, four, 0, 0);  // declares 8, has 4
    EXPECT_SAME(parse_msg(m), ParseError::kAttributeOverrun);
}

TEST(StunParse, AttributeValueRunsPastEndAfterValidAttribute) {
    RawMessage m;
    m.attr(attr::kUsername, "alice");
    m.attr_with(attr::kRealm, 5, {}, 0, 0);  // header at the very end, declares 5 bytes
    EXPECT_SAME(parse_msg(m), ParseError::kAttributeOverrun);
}

TEST(StunParse, MaximalAttributeLengthDoesNotWrap) {
    // 0xFFFF + padding = 0x10000: a 16-bit offset computation would wrap to 0.
    RawMessage m;
    const auto four = testutil::filled(4, 0);
    m.attr_with(attr::kData, 0xFFFF, four, 0, 0);
    EXPECT_SAME(parse_msg(m), ParseError::kAttributeOverrun);
}

TEST(StunParse, AttributeOverrunAfterIntegrityIsStillAnError) {
    // Ignored attributes still have to be walked over safely.
    RawMessage m;
    m.attr(attr::kMessageIntegrity, 20);
    const auto four = testutil::filled(4, 0);
    m.attr_with(attr::kSoftware, 12, four, 0, 0);
    EXPECT_SAME(parse_msg(m), ParseError::kAttributeOverrun);
}

// The padding of the last attribute missing from the datagram: depending on
// whether the sender counted it in the header, the header checks catch it.
TEST(StunParse, UnpaddedFinalAttributeIsRejected) {
    const auto five = testutil::filled(5, 0x61);
    RawMessage uncounted;
    uncounted.attr_with(attr::kUsername, 5, five, 0, 0);  // header length 9
    EXPECT_SAME(parse_msg(uncounted), ParseError::kLengthNotMultipleOf4);

    RawMessage counted;
    counted.attr_with(attr::kUsername, 5, five, 0, 0).set_header_length(12);  // 9 present
    EXPECT_SAME(parse_msg(counted), ParseError::kLengthMismatch);
}

TEST(StunParse, OddAttributeLengthsWithPaddingParse) {
    for (uint16_t len = 1; len <= 7; ++len) {
        RawMessage m;
        m.attr(attr::kUsername, len, 0x61).attr(attr::kSoftware, "sw");
        MessageView v;
        ASSERT_SAME(parse_msg(m, v), ParseError::kOk) << "length " << len;
        ASSERT_EQ(v.attributes().size(), 2u);
        const RawAttribute& u = v.attributes()[0];
        EXPECT_EQ(u.length, len);
        EXPECT_EQ(u.offset, 24u);
        EXPECT_EQ(v.value(u).size(), len);
        const RawAttribute& s = v.attributes()[1];
        EXPECT_EQ(s.type, attr::kSoftware);
        EXPECT_EQ(s.offset, 24u + pad4(len) + 4u) << "next attribute must start after the padding";
        EXPECT_EQ(testutil::as_text(v.value(s)), "sw");
    }
}

TEST(StunParse, LengthFiveWithThreePadBytesParses) {
    RawMessage m;
    const auto five = testutil::text_bytes("hello");
    m.attr_with(attr::kUsername, 5, five, 3, 0);
    ASSERT_EQ(m.size(), 32u);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    const RawAttribute* u = v.find(attr::kUsername);
    ASSERT_NE(u, nullptr);
    EXPECT_EQ(testutil::as_text(v.value(*u)), "hello");
}

TEST(StunParse, NonZeroPaddingIsIgnored) {
    // RFC 8489 section 14: padding bits MUST be ignored by the receiver.
    RawMessage m;
    const auto five = testutil::text_bytes("hello");
    m.attr_with(attr::kUsername, 5, five, 3, 0xFF).attr(attr::kSoftware, 4);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), 2u);
}

TEST(StunParse, OffsetsPointAtValues) {
    RawMessage m;
    m.attr(attr::kUsername, "bob").attr(attr::kLifetime, 4, 0x07).attr(attr::kRealm, "example.org");
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    ASSERT_EQ(v.attributes().size(), 3u);
    EXPECT_EQ(v.attributes()[0].offset, 24u);
    EXPECT_EQ(v.attributes()[1].offset, 32u);
    EXPECT_EQ(v.attributes()[2].offset, 40u);
    EXPECT_EQ(v.attributes()[2].length, 11u);
    EXPECT_EQ(testutil::as_text(v.value(v.attributes()[2])), "example.org");
    EXPECT_EQ(v.value(v.attributes()[0]).data(), m.bytes().data() + 24);
}

// ------------------------------------------------------------ attribute count

TEST(StunParse, MaxAttributesAccepted) {
    RawMessage m;
    for (size_t i = 0; i < MessageView::kMaxAttributes; ++i) {
        m.attr(attr::kSoftware, 4, static_cast<uint8_t>(i));
    }
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), MessageView::kMaxAttributes);
    EXPECT_EQ(v.value(v.attributes().back())[0], MessageView::kMaxAttributes - 1);
}

TEST(StunParse, TooManyAttributes) {
    RawMessage m;
    for (size_t i = 0; i < MessageView::kMaxAttributes + 1; ++i) {
        m.attr(attr::kSoftware, 4);
    }
    EXPECT_SAME(parse_msg(m), ParseError::kTooManyAttributes);
}

TEST(StunParse, IntegrityCountsAsRecordedAttribute) {
    RawMessage m;
    for (size_t i = 0; i < MessageView::kMaxAttributes; ++i) {
        m.attr(attr::kSoftware, 4);
    }
    m.attr(attr::kMessageIntegrity, 20);
    EXPECT_SAME(parse_msg(m), ParseError::kTooManyAttributes);
}

TEST(StunParse, IgnoredAttributesAfterIntegrityDoNotCount) {
    RawMessage m;
    for (size_t i = 0; i + 1 < MessageView::kMaxAttributes; ++i) {
        m.attr(attr::kSoftware, 4);
    }
    m.attr(attr::kMessageIntegrity, 20);  // 48th recorded
    for (int i = 0; i < 10; ++i) {
        m.attr(attr::kSoftware, 4);       // ignored
    }
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), MessageView::kMaxAttributes);
}

// ------------------------------------------------ integrity and fingerprint

TEST(StunParse, DuplicateMessageIntegrity) {
    RawMessage m;
    m.attr(attr::kMessageIntegrity, 20).attr(attr::kMessageIntegrity, 20);
    EXPECT_SAME(parse_msg(m), ParseError::kDuplicateIntegrity);
}

TEST(StunParse, DuplicateMessageIntegritySha256) {
    RawMessage m;
    m.attr(attr::kMessageIntegritySha256, 32).attr(attr::kMessageIntegritySha256, 32);
    EXPECT_SAME(parse_msg(m), ParseError::kDuplicateIntegrity);
}

// RFC 8489 section 9: a MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is
// ignored like any other attribute there (ReviewParse covers what is kept).
TEST(StunParse, MessageIntegrityAfterSha256IsIgnored) {
    RawMessage m;
    m.attr(attr::kMessageIntegritySha256, 32).attr(attr::kMessageIntegrity, 20);
    EXPECT_SAME(parse_msg(m), ParseError::kOk);
}

TEST(StunParse, MessageIntegrityThenSha256IsAllowed) {
    RawMessage m;
    m.attr(attr::kUsername, "u").attr(attr::kMessageIntegrity, 20).attr(attr::kMessageIntegritySha256, 32);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    ASSERT_NE(v.message_integrity(), nullptr);
    ASSERT_NE(v.message_integrity_sha256(), nullptr);
    EXPECT_EQ(v.message_integrity()->offset, 32u);
    EXPECT_EQ(v.message_integrity()->length, 20u);
    EXPECT_EQ(v.message_integrity_sha256()->offset, 56u);
    EXPECT_EQ(v.message_integrity_sha256()->length, 32u);
}

TEST(StunParse, MessageIntegrityLengthMustBe20) {
    for (uint16_t len : {0, 4, 16, 19, 21, 24, 32}) {
        RawMessage m;
        m.attr(attr::kMessageIntegrity, len);
        EXPECT_SAME(parse_msg(m), ParseError::kBadIntegrityLength) << "length " << len;
    }
    RawMessage good;
    good.attr(attr::kMessageIntegrity, 20);
    EXPECT_SAME(parse_msg(good), ParseError::kOk);
}

// RFC 8489 section 14.6: at least 16 bytes, at most 32, a multiple of 4.
TEST(StunParse, MessageIntegritySha256BadLengths) {
    for (uint16_t len : {0, 4, 12, 15, 17, 18, 30, 31, 33, 36, 64}) {
        RawMessage m;
        m.attr(attr::kMessageIntegritySha256, len);
        EXPECT_SAME(parse_msg(m), ParseError::kBadIntegrityLength) << "length " << len;
    }
}

TEST(StunParse, MessageIntegritySha256GoodLengths) {
    for (uint16_t len : {16, 20, 24, 28, 32}) {
        RawMessage m;
        m.attr(attr::kMessageIntegritySha256, len);
        MessageView v;
        EXPECT_SAME(parse_msg(m, v), ParseError::kOk) << "length " << len;
        ASSERT_NE(v.message_integrity_sha256(), nullptr);
        EXPECT_EQ(v.message_integrity_sha256()->length, len);
    }
}

TEST(StunParse, FingerprintLengthMustBe4) {
    for (uint16_t len : {0, 1, 2, 3, 5, 8}) {
        RawMessage m;
        m.attr(attr::kFingerprint, len);
        EXPECT_SAME(parse_msg(m), ParseError::kBadFingerprintLength) << "length " << len;
    }
    RawMessage good;
    good.attr(attr::kSoftware, "x").attr(attr::kFingerprint, 4);
    MessageView v;
    ASSERT_SAME(parse_msg(good, v), ParseError::kOk);
    ASSERT_NE(v.fingerprint(), nullptr);
    EXPECT_EQ(v.fingerprint()->offset, 32u);
}

TEST(StunParse, AttributeAfterFingerprint) {
    RawMessage m;
    m.attr(attr::kFingerprint, 4).attr(attr::kSoftware, "x");
    EXPECT_SAME(parse_msg(m), ParseError::kFingerprintNotLast);
}

TEST(StunParse, FingerprintAfterFingerprint) {
    RawMessage m;
    m.attr(attr::kFingerprint, 4).attr(attr::kFingerprint, 4);
    EXPECT_SAME(parse_msg(m), ParseError::kFingerprintNotLast);
}

TEST(StunParse, IntegrityAfterFingerprint) {
    RawMessage m;
    m.attr(attr::kFingerprint, 4).attr(attr::kMessageIntegrity, 20);
    EXPECT_SAME(parse_msg(m), ParseError::kFingerprintNotLast);
}

// RFC 8489 section 14.7: FINGERPRINT MUST be the last attribute, whatever
// precedes it; the "ignore after MESSAGE-INTEGRITY" rule does not lift that.
TEST(StunParse, AttributeAfterFingerprintFollowingIntegrity) {
    RawMessage m;
    m.attr(attr::kMessageIntegrity, 20).attr(attr::kFingerprint, 4).attr(attr::kSoftware, "x");
    EXPECT_SAME(parse_msg(m), ParseError::kFingerprintNotLast);
}

// -------------------------------------------- what is recorded after MI

TEST(StunParse, AttributesAfterIntegrityAreIgnored) {
    RawMessage m;
    m.attr(attr::kSoftware, "before")
        .attr(attr::kMessageIntegrity, 20)
        .attr(0x7777, 4)               // unknown required: ignored, not reported
        .attr(attr::kUsername, "eve")  // known: ignored
        .attr(attr::kSoftware, "after")
        .attr(attr::kMessageIntegritySha256, 32)
        .attr(0x7778, 4)
        .attr(attr::kFingerprint, 4);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(recorded_types(v),
              (std::vector<uint16_t>{attr::kSoftware, attr::kMessageIntegrity,
                                     attr::kMessageIntegritySha256, attr::kFingerprint}));
    EXPECT_TRUE(v.unknown_required().empty());
    EXPECT_EQ(v.find(attr::kUsername), nullptr);
    const RawAttribute* sw = v.find(attr::kSoftware);
    ASSERT_NE(sw, nullptr);
    EXPECT_EQ(testutil::as_text(v.value(*sw)), "before");
    ASSERT_NE(v.message_integrity(), nullptr);
    ASSERT_NE(v.message_integrity_sha256(), nullptr);
    ASSERT_NE(v.fingerprint(), nullptr);
    EXPECT_EQ(v.fingerprint()->offset, m.size() - 4);
}

TEST(StunParse, OnlyFingerprintRecordedAfterSha256) {
    RawMessage m;
    m.attr(attr::kMessageIntegritySha256, 32)
        .attr(attr::kUsername, "eve")
        .attr(0x7777, 4)
        .attr(attr::kRealm, "r")
        .attr(attr::kFingerprint, 4);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(recorded_types(v),
              (std::vector<uint16_t>{attr::kMessageIntegritySha256, attr::kFingerprint}));
    EXPECT_TRUE(v.unknown_required().empty());
    EXPECT_EQ(v.find(attr::kUsername), nullptr);
    EXPECT_EQ(v.find(attr::kRealm), nullptr);
}

// ------------------------------------------------------- unknown attributes

TEST(StunParse, UnknownRequiredReportedOptionalNot) {
    RawMessage m;
    m.attr(0x7777, 4).attr(0xC001, 4).attr(attr::kSoftware, "s").attr(0x0030, 0);
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(unknown_types(v), (std::vector<uint16_t>{0x7777, 0x0030}));
}

TEST(StunParse, UnknownRequiredListIsCappedNotAnError) {
    RawMessage m;
    const size_t n = MessageView::kMaxUnknown + 4;
    for (size_t i = 0; i < n; ++i) {
        m.attr(static_cast<uint16_t>(0x7000 + i), 0);
    }
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    ASSERT_EQ(v.unknown_required().size(), MessageView::kMaxUnknown);
    for (size_t i = 0; i < MessageView::kMaxUnknown; ++i) {
        EXPECT_EQ(v.unknown_required()[i], 0x7000 + i);
    }
}

TEST(StunParse, KnownRequiredAttributesAreNotReportedUnknown) {
    // Every comprehension-required attribute the server processes.
    const uint16_t known[] = {
        attr::kMappedAddress,   attr::kUsername,
        attr::kErrorCode,       attr::kUnknownAttributes,   attr::kChannelNumber,
        attr::kLifetime,        attr::kXorPeerAddress,      attr::kData,
        attr::kRealm,           attr::kNonce,               attr::kXorRelayedAddress,
        attr::kRequestedAddressFamily, attr::kEvenPort,     attr::kRequestedTransport,
        attr::kDontFragment,    attr::kPasswordAlgorithm,   attr::kUserhash,
        attr::kXorMappedAddress, attr::kReservationToken,   attr::kConnectionId,
    };
    RawMessage m;
    for (uint16_t t : known) {
        EXPECT_TRUE(is_known_required_attribute(t)) << std::hex << t;
        m.attr(t, 4);
    }
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_TRUE(v.unknown_required().empty()) << "first: " << std::hex
                                              << (v.unknown_required().empty() ? 0 : v.unknown_required()[0]);
    EXPECT_FALSE(is_known_required_attribute(0x7777));
    // Decodable but not processed by this server (RFC 5780 needs a second
    // address; the RFC 3489 ones are obsolete): reported for a 420.
    for (uint16_t t : {attr::kChangeRequest, attr::kResponsePort, attr::kPadding,
                       attr::kResponseAddress, attr::kPriority, attr::kUseCandidate}) {
        EXPECT_FALSE(is_known_required_attribute(t)) << std::hex << t;
    }
}

TEST(StunParse, FindReturnsFirstOfDuplicates) {
    RawMessage m;
    m.attr(attr::kSoftware, "first")
        .attr(attr::kSoftware, "second")
        .attr(attr::kNonce, "n")
        .attr(attr::kSoftware, "third");
    MessageView v;
    ASSERT_SAME(parse_msg(m, v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), 4u);
    const RawAttribute* a = v.find(attr::kSoftware);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(testutil::as_text(v.value(*a)), "first");
    EXPECT_EQ(v.find(attr::kRealm), nullptr);
}

TEST(StunParse, ReusedViewIsReset) {
    RawMessage first;
    first.attr(attr::kSoftware, "s")
        .attr(0x7777, 4)
        .attr(attr::kMessageIntegrity, 20)
        .attr(attr::kMessageIntegritySha256, 32)
        .attr(attr::kFingerprint, 4);
    RawMessage second(make_type(Method::kRefresh, Class::kRequest));
    second.attr(attr::kLifetime, 4);
    MessageView v;
    ASSERT_SAME(parse_msg(first, v), ParseError::kOk);
    ASSERT_EQ(v.unknown_required().size(), 1u);
    ASSERT_SAME(parse_msg(second, v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), 1u);
    EXPECT_TRUE(v.unknown_required().empty());
    EXPECT_EQ(v.message_integrity(), nullptr);
    EXPECT_EQ(v.message_integrity_sha256(), nullptr);
    EXPECT_EQ(v.fingerprint(), nullptr);
    EXPECT_EQ(v.find(attr::kSoftware), nullptr);
    EXPECT_TRUE(v.is(Method::kRefresh, Class::kRequest));
}

// A message over a stream can be longer than 65535 bytes in total (header
// length 0xFFFC): then value offsets exceed 16 bits. Either it is rejected,
// or the offsets must still be right.
TEST(StunParse, OffsetsBeyond64KiBAreNotTruncated) {
    RawMessage m;
    m.attr(attr::kPadding, 65520, 0);               // ends at 20 + 65524
    m.attr(attr::kSoftware, "tail");                 // value at offset 65548
    ASSERT_EQ(m.size(), 20u + 0xFFFCu);
    MessageView v;
    const ParseError e = parse_msg(m, v);
    if (e == ParseError::kOk) {
        const RawAttribute* sw = v.find(attr::kSoftware);
        ASSERT_NE(sw, nullptr);
        EXPECT_EQ(testutil::as_text(v.value(*sw)), "tail")
            << "RawAttribute::offset truncated to 16 bits (offset 65548 -> " << sw->offset << ")";
    }
}

// ----------------------------------------------------- type encoding

TEST(StunType, RoundTripEveryMethodAndClass) {
    std::bitset<0x4000> seen;
    for (uint16_t m = 0; m < 0x1000; ++m) {
        for (uint8_t c = 0; c < 4; ++c) {
            const Class cls = static_cast<Class>(c);
            const uint16_t t = make_type(m, cls);
            ASSERT_EQ(t & 0xC000, 0) << "method " << m << " class " << int(c);
            ASSERT_EQ(type_method(t), m) << "type " << t;
            ASSERT_EQ(type_class(t), cls) << "type " << t;
            ASSERT_FALSE(seen.test(t)) << "two (method, class) pairs map to " << t;
            seen.set(t);
        }
    }
    EXPECT_TRUE(seen.all()) << "make_type is not onto 0x0000-0x3FFF";
}

TEST(StunType, BitLayoutMatchesRfc8489) {
    // C1 is bit 8 and C0 bit 4 of the type (RFC 8489 section 5, figure 3).
    EXPECT_EQ(make_type(0x000, Class::kIndication), 0x0010);
    EXPECT_EQ(make_type(0x000, Class::kSuccess), 0x0100);
    EXPECT_EQ(make_type(0x000, Class::kError), 0x0110);
    EXPECT_EQ(make_type(0xFFF, Class::kRequest), 0x3EEF);
    EXPECT_EQ(make_type(0xFFF, Class::kError), 0x3FFF);
    EXPECT_EQ(make_type(0x010, Class::kRequest), 0x0020);
    EXPECT_EQ(make_type(0x080, Class::kRequest), 0x0200);
}

struct TypeCase {
    Method method;
    Class cls;
    uint16_t wire;
};

// Wire values from RFC 8489, RFC 8656 and RFC 6062.
constexpr TypeCase kTurnTypes[] = {
    {Method::kBinding, Class::kRequest, 0x0001},
    {Method::kBinding, Class::kIndication, 0x0011},
    {Method::kBinding, Class::kSuccess, 0x0101},
    {Method::kBinding, Class::kError, 0x0111},
    {Method::kAllocate, Class::kRequest, 0x0003},
    {Method::kAllocate, Class::kSuccess, 0x0103},
    {Method::kAllocate, Class::kError, 0x0113},
    {Method::kRefresh, Class::kRequest, 0x0004},
    {Method::kRefresh, Class::kSuccess, 0x0104},
    {Method::kRefresh, Class::kError, 0x0114},
    {Method::kSend, Class::kIndication, 0x0016},
    {Method::kData, Class::kIndication, 0x0017},
    {Method::kCreatePermission, Class::kRequest, 0x0008},
    {Method::kCreatePermission, Class::kSuccess, 0x0108},
    {Method::kCreatePermission, Class::kError, 0x0118},
    {Method::kChannelBind, Class::kRequest, 0x0009},
    {Method::kChannelBind, Class::kSuccess, 0x0109},
    {Method::kChannelBind, Class::kError, 0x0119},
    {Method::kConnect, Class::kRequest, 0x000A},
    {Method::kConnect, Class::kSuccess, 0x010A},
    {Method::kConnect, Class::kError, 0x011A},
    {Method::kConnectionBind, Class::kRequest, 0x000B},
    {Method::kConnectionBind, Class::kSuccess, 0x010B},
    {Method::kConnectionBind, Class::kError, 0x011B},
    {Method::kConnectionAttempt, Class::kIndication, 0x001C},
};

TEST(StunType, TurnMethodsDecodeFromParsedMessages) {
    const Class all[] = {Class::kRequest, Class::kIndication, Class::kSuccess, Class::kError};
    for (const TypeCase& c : kTurnTypes) {
        EXPECT_EQ(make_type(c.method, c.cls), c.wire);
        const RawMessage m(c.wire);
        MessageView v;
        ASSERT_SAME(parse_msg(m, v), ParseError::kOk) << std::hex << c.wire;
        EXPECT_EQ(v.type(), c.wire);
        EXPECT_EQ(v.method(), static_cast<uint16_t>(c.method)) << std::hex << c.wire;
        EXPECT_EQ(v.cls(), c.cls) << std::hex << c.wire;
        for (Class other : all) {
            EXPECT_EQ(v.is(c.method, other), other == c.cls) << std::hex << c.wire;
        }
        EXPECT_FALSE(v.is(c.method == Method::kBinding ? Method::kAllocate : Method::kBinding, c.cls));
    }
}

// ----------------------------------------------- demux helpers

TEST(StunDemux, LooksLikeStun) {
    RawMessage m;
    m.attr(attr::kSoftware, "x");
    EXPECT_TRUE(looks_like_stun(m.span()));
    EXPECT_TRUE(looks_like_stun(m.span().first(kHeaderSize)));  // header alone suffices
    EXPECT_FALSE(looks_like_stun(m.span().first(kHeaderSize - 1)));
    EXPECT_FALSE(looks_like_stun({}));

    for (uint8_t top : {uint8_t{0x40}, uint8_t{0x80}, uint8_t{0xC0}}) {
        RawMessage bad = m;
        bad.set_byte(0, top);
        EXPECT_FALSE(looks_like_stun(bad.span())) << int(top);
    }
    RawMessage cookie = m;
    cookie.set_byte(7, 0x43);
    EXPECT_FALSE(looks_like_stun(cookie.span()));
}

TEST(StunDemux, MessageSize) {
    RawMessage m;
    m.attr(attr::kSoftware, "abcdefgh");  // 12 bytes of attribute
    EXPECT_EQ(message_size(m.span()), 32u);
    // Only the header is needed to know the size.
    EXPECT_EQ(message_size(m.span().first(kHeaderSize)), 32u);
    EXPECT_EQ(message_size(m.span().first(kHeaderSize - 1)), 0u);
    EXPECT_EQ(message_size({}), 0u);

    const RawMessage header_only;
    EXPECT_EQ(message_size(header_only.span()), 20u);

    RawMessage big;
    big.set_header_length(0xFFFC);
    EXPECT_EQ(message_size(big.span()), 20u + 0xFFFCu) << "must not wrap at 16 bits";
}

// ----------------------------------------------------- names

TEST(StunNames, ParseErrorStringsAreDistinct) {
    std::set<std::string_view> seen;
    for (int e = 0; e <= static_cast<int>(ParseError::kFingerprintNotLast); ++e) {
        const std::string_view s = to_string(static_cast<ParseError>(e));
        EXPECT_FALSE(s.empty()) << e;
        EXPECT_TRUE(seen.insert(s).second) << "duplicate name " << s;
    }
}

TEST(StunNames, AttributeNames) {
    EXPECT_EQ(attribute_name(attr::kXorPeerAddress), "XOR-PEER-ADDRESS");
    EXPECT_EQ(attribute_name(attr::kMessageIntegritySha256), "MESSAGE-INTEGRITY-SHA256");
    EXPECT_EQ(attribute_name(attr::kFingerprint), "FINGERPRINT");
    EXPECT_EQ(attribute_name(0x7777), "unknown");
}

}  // namespace
}  // namespace turn::stun
