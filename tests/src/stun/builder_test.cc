// Tests for MessageBuilder (src/stun/builder.h): header upkeep, zeroed
// padding, sticky overflow that never writes past the caller's buffer (checked
// with a canary around the buffer), the 64 KiB message limit, and
// MESSAGE-INTEGRITY / FINGERPRINT values recomputed here with OpenSSL and zlib
// rather than with the library's own integrity code.
#include "stun/builder.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zlib.h>

#include <functional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "net/address.h"
#include "stun/attributes.h"
#include "stun/constants.h"
#include "stun/message.h"
#include "../expect_same.h"
#include "stun_test_util.h"

namespace turn::stun {
namespace {

using Bytes = std::vector<uint8_t>;
using testutil::kTxId;

constexpr uint8_t kCanary = 0xCD;

// A buffer of `n` bytes at the start of a larger canary-filled arena.
class Arena {
public:
    Arena() { mem_.fill(kCanary); }
    std::span<uint8_t> buf(size_t n) {
        n_ = n;
        return {mem_.data(), n};
    }
    // Index of the first overwritten canary byte past the buffer, or -1.
    long first_clobbered() const {
        for (size_t i = n_; i < mem_.size(); ++i) {
            if (mem_[i] != kCanary) {
                return static_cast<long>(i);
            }
        }
        return -1;
    }
    Bytes snapshot() const { return Bytes(mem_.begin(), mem_.begin() + static_cast<long>(n_)); }

private:
    std::array<uint8_t, 1024> mem_{};
    size_t n_ = 0;
};

Address v4_addr() {
    Address a;
    a.family = Family::kIPv4;
    a.port = 3478;
    a.ip[0] = 198;
    a.ip[1] = 18;
    a.ip[2] = 0;
    a.ip[3] = 1;
    return a;
}
Address v6_addr() {
    Address a;
    a.family = Family::kIPv6;
    a.port = 3478;
    a.ip[0] = 0xfd;
    a.ip[15] = 1;
    return a;
}

void expect_padding_zero(const MessageView& v) {
    for (const RawAttribute& a : v.attributes()) {
        for (size_t i = a.offset + a.length; i < a.offset + pad4(a.length); ++i) {
            EXPECT_EQ(v.bytes()[i], 0) << "padding byte " << i << " of attribute 0x" << std::hex << a.type;
        }
    }
}

// ============================================================ header

TEST(StunBuilder, HeaderOnly) {
    Arena ar;
    auto buf = ar.buf(64);
    MessageBuilder b(buf, make_type(Method::kAllocate, Class::kSuccess), kTxId);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b.size(), 20u);
    ASSERT_EQ(b.bytes().size(), 20u);
    EXPECT_EQ(b.bytes().data(), buf.data());
    EXPECT_EQ(load_be16(buf.data()), 0x0103);
    EXPECT_EQ(load_be16(buf.data() + 2), 0u);
    EXPECT_EQ(load_be32(buf.data() + 4), kMagicCookie);
    EXPECT_TRUE(std::equal(kTxId.begin(), kTxId.end(), buf.begin() + 8));
    EXPECT_EQ(ar.first_clobbered(), -1);
}

TEST(StunBuilder, MethodClassConstructor) {
    Bytes a(64), b(64);
    MessageBuilder x(a, Method::kChannelBind, Class::kError, kTxId);
    MessageBuilder y(b, make_type(Method::kChannelBind, Class::kError), kTxId);
    EXPECT_EQ(testutil::to_vec(x.bytes()), testutil::to_vec(y.bytes()));
    EXPECT_EQ(load_be16(a.data()), 0x0119);
}

TEST(StunBuilder, HeaderLengthTracksEveryAttribute) {
    Bytes buf(1024, 0xAA);
    MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
    const std::vector<std::function<void()>> steps = {
        [&] { b.add_text(attr::kSoftware, "abc"); },
        [&] { b.add_even_port(true); },
        [&] { b.add_xor_address(attr::kXorMappedAddress, v6_addr()); },
        [&] { b.add_error_code(420, "Unknown Attribute"); },
        [&] { b.add_padding(7); },
        [&] { b.add_empty(attr::kDontFragment); },
        [&] { b.reserve(attr::kData, 13); },
        [&] { b.add_fingerprint(); },
    };
    size_t prev = b.size();
    for (size_t i = 0; i < steps.size(); ++i) {
        steps[i]();
        ASSERT_TRUE(b.ok()) << "step " << i;
        EXPECT_GT(b.size(), prev) << "step " << i;
        EXPECT_EQ(b.size() % 4, 0u) << "step " << i;
        EXPECT_EQ(load_be16(buf.data() + 2), b.size() - kHeaderSize) << "step " << i;
        EXPECT_EQ(b.bytes().size(), b.size());
        prev = b.size();
    }
}

// ============================================================ padding

TEST(StunBuilder, PaddingBytesAreZero) {
    Bytes buf(1024, 0xAA);  // garbage where padding will go
    const uint16_t unknown[] = {0x7777};
    const Bytes odd = {1, 2, 3, 4, 5};
    MessageBuilder b(buf, Method::kBinding, Class::kRequest, kTxId);
    b.add_text(attr::kUsername, "u")
        .add_text(attr::kRealm, "re")
        .add_text(attr::kNonce, "non")
        .add(attr::kData, odd)
        .add_error_code(438, "Stale Nonce")  // 15 bytes
        .add_unknown_attributes(unknown)    // 2 bytes
        .add_even_port(false)               // 1 byte
        .add_padding(3)
        .add_address_error_code(Family::kIPv6, 440, "ab");
    std::span<uint8_t> r = b.reserve(attr::kData, 5);
    ASSERT_EQ(r.size(), 5u);
    std::fill(r.begin(), r.end(), 0x11);  // the caller fills only the value
    b.add_fingerprint();
    ASSERT_TRUE(b.ok());

    MessageView v;
    ASSERT_SAME(parse(b.bytes(), v), ParseError::kOk);
    EXPECT_EQ(v.attributes().size(), 11u);
    expect_padding_zero(v);
}

TEST(StunBuilder, OutputParsesInOrder) {
    Bytes buf(512);
    MessageBuilder b(buf, Method::kAllocate, Class::kRequest, kTxId);
    b.add_requested_transport(kProtoUdp)
        .add_u32(attr::kLifetime, 600)
        .add_text(attr::kUsername, "alice")
        .add_text(attr::kRealm, "example.org")
        .add_text(attr::kNonce, "abcdef")
        .add_even_port(true)
        .add_fingerprint();
    ASSERT_TRUE(b.ok());
    MessageView v;
    ASSERT_SAME(parse(b.bytes(), v), ParseError::kOk);
    EXPECT_TRUE(v.is(Method::kAllocate, Class::kRequest));
    EXPECT_EQ(v.length(), b.size() - kHeaderSize);
    std::vector<uint16_t> types;
    for (const RawAttribute& a : v.attributes()) {
        types.push_back(a.type);
    }
    EXPECT_EQ(types, (std::vector<uint16_t>{attr::kRequestedTransport, attr::kLifetime, attr::kUsername,
                                            attr::kRealm, attr::kNonce, attr::kEvenPort,
                                            attr::kFingerprint}));
    EXPECT_TRUE(std::equal(v.transaction_id().begin(), v.transaction_id().end(), kTxId.begin()));
}

// ============================================================ overflow

TEST(StunBuilder, OverflowIsStickyAndWritesNothingMore) {
    Arena ar;
    auto buf = ar.buf(32);
    MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
    b.add_u32(attr::kLifetime, 1);  // 28 bytes
    ASSERT_TRUE(b.ok());
    ASSERT_EQ(b.size(), 28u);

    b.add_text(attr::kSoftware, "0123456789");  // would need 44
    EXPECT_FALSE(b.ok());
    EXPECT_TRUE(b.bytes().empty());
    EXPECT_EQ(ar.first_clobbered(), -1);

    // An attribute that would fit in the 4 bytes left must not be written now.
    const Bytes before = ar.snapshot();
    b.add_empty(attr::kDontFragment);
    EXPECT_FALSE(b.ok());
    EXPECT_TRUE(b.reserve(attr::kData, 0).empty());
    b.add_fingerprint();
    EXPECT_FALSE(b.ok());
    EXPECT_TRUE(b.bytes().empty());
    EXPECT_EQ(ar.snapshot(), before) << "builder wrote after overflowing";
    EXPECT_EQ(ar.first_clobbered(), -1);
}

TEST(StunBuilder, BufferSmallerThanHeader) {
    for (size_t n : {0, 1, 12, 19}) {
        Arena ar;
        auto buf = ar.buf(n);
        MessageBuilder b(buf, Method::kBinding, Class::kRequest, kTxId);
        EXPECT_FALSE(b.ok()) << n;
        EXPECT_TRUE(b.bytes().empty()) << n;
        b.add_empty(attr::kDontFragment);
        EXPECT_FALSE(b.ok());
        EXPECT_EQ(ar.first_clobbered(), -1) << "buffer of " << n;
    }
}

TEST(StunBuilder, ExactHeaderBuffer) {
    Arena ar;
    auto buf = ar.buf(20);
    MessageBuilder b(buf, Method::kBinding, Class::kRequest, kTxId);
    EXPECT_TRUE(b.ok());
    EXPECT_EQ(b.bytes().size(), 20u);
    b.add_empty(attr::kDontFragment);
    EXPECT_FALSE(b.ok());
    EXPECT_EQ(ar.first_clobbered(), -1);
}

struct AddCase {
    const char* name;
    size_t value_len;  // unpadded value length the attribute needs
    std::function<void(MessageBuilder&)> add;
};

std::vector<AddCase> every_add() {
    static const uint16_t unknown[] = {0x7777, 0x7778, 0x7779};
    static const PasswordAlgorithm algs[] = {PasswordAlgorithm::kMd5, PasswordAlgorithm::kSha256};
    static const Bytes key(16, 0x4B);
    static const Bytes data(9, 0x44);
    return {
        {"add", 9, [](MessageBuilder& b) { b.add(attr::kData, data); }},
        {"add_text", 5, [](MessageBuilder& b) { b.add_text(attr::kUsername, "alice"); }},
        {"add_u32", 4, [](MessageBuilder& b) { b.add_u32(attr::kLifetime, 1); }},
        {"add_u64", 8, [](MessageBuilder& b) { b.add_u64(attr::kReservationToken, 1); }},
        {"add_empty", 0, [](MessageBuilder& b) { b.add_empty(attr::kDontFragment); }},
        {"add_address v4", 8, [](MessageBuilder& b) { b.add_address(attr::kMappedAddress, v4_addr()); }},
        {"add_address v6", 20, [](MessageBuilder& b) { b.add_address(attr::kMappedAddress, v6_addr()); }},
        {"add_xor_address v4", 8,
         [](MessageBuilder& b) { b.add_xor_address(attr::kXorPeerAddress, v4_addr()); }},
        {"add_xor_address v6", 20,
         [](MessageBuilder& b) { b.add_xor_address(attr::kXorPeerAddress, v6_addr()); }},
        {"add_error_code", 4 + 3, [](MessageBuilder& b) { b.add_error_code(400, "Bad"); }},
        {"add_unknown_attributes", 6, [](MessageBuilder& b) { b.add_unknown_attributes(unknown); }},
        {"add_channel_number", 4, [](MessageBuilder& b) { b.add_channel_number(0x4000); }},
        {"add_requested_transport", 4, [](MessageBuilder& b) { b.add_requested_transport(kProtoUdp); }},
        {"add_address_family", 4,
         [](MessageBuilder& b) { b.add_address_family(attr::kRequestedAddressFamily, Family::kIPv6); }},
        {"add_even_port", 1, [](MessageBuilder& b) { b.add_even_port(true); }},
        {"add_change_request", 4, [](MessageBuilder& b) { b.add_change_request(true, true); }},
        {"add_response_port", 4, [](MessageBuilder& b) { b.add_response_port(1); }},
        {"add_password_algorithm", 4,
         [](MessageBuilder& b) { b.add_password_algorithm(PasswordAlgorithm::kSha256); }},
        {"add_password_algorithms", 8, [](MessageBuilder& b) { b.add_password_algorithms(algs); }},
        {"add_address_error_code", 4 + 1,
         [](MessageBuilder& b) { b.add_address_error_code(Family::kIPv4, 440, "x"); }},
        {"add_icmp", 8, [](MessageBuilder& b) { b.add_icmp(3, 4, 1400); }},
        {"add_padding", 10, [](MessageBuilder& b) { b.add_padding(10); }},
        {"add_message_integrity", 20, [](MessageBuilder& b) { b.add_message_integrity(key); }},
        {"add_message_integrity_sha256", 32,
         [](MessageBuilder& b) { b.add_message_integrity_sha256(key); }},
        {"add_fingerprint", 4, [](MessageBuilder& b) { b.add_fingerprint(); }},
        {"reserve", 6, [](MessageBuilder& b) { EXPECT_TRUE(b.reserve(attr::kData, 6).empty()); }},
    };
}

// Every encoder checks the space it needs, padding included: one byte short
// fails without touching the canary; exactly enough succeeds.
TEST(StunBuilder, EveryEncoderChecksSpaceIncludingPadding) {
    for (const AddCase& c : every_add()) {
        const size_t need = kHeaderSize + 4 + pad4(static_cast<uint32_t>(c.value_len));
        {
            Arena ar;
            auto buf = ar.buf(need - 1);
            MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
            c.add(b);
            EXPECT_FALSE(b.ok()) << c.name << " in " << need - 1 << " bytes";
            EXPECT_TRUE(b.bytes().empty()) << c.name;
            EXPECT_EQ(ar.first_clobbered(), -1) << c.name << " wrote past the buffer";
        }
        if (std::string(c.name) == "reserve") {
            continue;  // its success case is below
        }
        {
            Arena ar;
            auto buf = ar.buf(need);
            MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
            c.add(b);
            EXPECT_TRUE(b.ok()) << c.name << " in exactly " << need << " bytes";
            EXPECT_EQ(b.size(), need) << c.name;
            EXPECT_EQ(ar.first_clobbered(), -1) << c.name;
        }
    }
}

TEST(StunBuilder, ReserveExactFit) {
    Arena ar;
    auto buf = ar.buf(20 + 4 + 8);
    MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
    std::span<uint8_t> r = b.reserve(attr::kData, 6);
    ASSERT_EQ(r.size(), 6u);
    EXPECT_EQ(r.data(), buf.data() + 24);
    EXPECT_TRUE(b.ok());
    EXPECT_EQ(b.size(), 32u);
    EXPECT_EQ(buf[30], 0);
    EXPECT_EQ(buf[31], 0);
    EXPECT_EQ(ar.first_clobbered(), -1);
}

// kMaxMessageSize (65535) bounds the whole message; the header length field
// is 16 bits, so an attribute value over 65535 bytes cannot be encoded.
TEST(StunBuilder, MessageSizeLimit) {
    Bytes big(80000);
    {
        MessageBuilder b(big, Method::kSend, Class::kIndication, kTxId);
        EXPECT_EQ(b.reserve(attr::kData, 65508).size(), 65508u);  // 65532 in total
        EXPECT_TRUE(b.ok());
        EXPECT_EQ(load_be16(big.data() + 2), 65512u);
        b.add_empty(attr::kDontFragment);  // 65536 > 65535
        EXPECT_FALSE(b.ok());
    }
    {
        MessageBuilder b(big, Method::kSend, Class::kIndication, kTxId);
        EXPECT_TRUE(b.reserve(attr::kData, 65509).empty());  // pads to 65536 in total
        EXPECT_FALSE(b.ok());
    }
    {
        MessageBuilder b(big, Method::kSend, Class::kIndication, kTxId);
        const Bytes too_long(65536, 0);
        b.add(attr::kData, too_long);
        EXPECT_FALSE(b.ok()) << "attribute length does not fit 16 bits";
    }
    {
        MessageBuilder b(big, Method::kSend, Class::kIndication, kTxId);
        b.reserve(attr::kData, 40000);
        b.reserve(attr::kData, 40000);
        EXPECT_FALSE(b.ok()) << "message over 64 KiB: header length would wrap";
    }
}

// Whatever the builder accepts must decode: out-of-range input either makes
// ok() false or produces a value the decoder takes.
TEST(StunBuilder, AcceptedValuesDecode) {
    for (uint16_t code : {0, 200, 299, 300, 699, 700, 999}) {
        Bytes buf(128);
        MessageBuilder b(buf, Method::kAllocate, Class::kError, kTxId);
        b.add_error_code(code, "r");
        if (!b.ok()) {
            continue;
        }
        MessageView v;
        ASSERT_SAME(parse(b.bytes(), v), ParseError::kOk);
        ASSERT_NE(v.find(attr::kErrorCode), nullptr);
        ErrorCodeValue ec;
        EXPECT_SAME(decode_error_code(v.value(*v.find(attr::kErrorCode)), ec), AttrError::kOk)
            << "builder wrote ERROR-CODE " << code << " that its decoder rejects";
        EXPECT_EQ(ec.code, code);
    }
    {
        Bytes buf(128);
        MessageBuilder b(buf, Method::kBinding, Class::kSuccess, kTxId);
        b.add_address(attr::kMappedAddress, Address{}).add_xor_address(attr::kXorMappedAddress, Address{});
        if (b.ok()) {
            MessageView v;
            ASSERT_SAME(parse(b.bytes(), v), ParseError::kOk);
            for (const RawAttribute& a : v.attributes()) {
                Address out;
                EXPECT_SAME(decode_address(v.value(a), out), AttrError::kOk)
                    << "builder wrote an address of family kNone";
            }
        }
    }
}

// ============================================================ integrity

Bytes hmac(const EVP_MD* md, std::span<const uint8_t> key, std::span<const uint8_t> data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(md, key.data(), static_cast<int>(key.size()), data.data(), data.size(), out, &len);
    return Bytes(out, out + len);
}

// RFC 8489 sections 14.5 and 14.6: the HMAC covers the message up to the
// integrity attribute, with the header length counting that attribute but not
// what follows it (here MESSAGE-INTEGRITY-SHA256 and FINGERPRINT).
TEST(StunBuilder, MessageIntegrityAndFingerprintMatchIndependentComputation) {
    const Bytes key = {0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb,
                       0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc, 0x40, 0xeb};
    Bytes buf(512, 0xAA);
    MessageBuilder b(buf, Method::kAllocate, Class::kRequest, kTxId);
    b.add_text(attr::kUsername, "alice")
        .add_text(attr::kRealm, "example.org")
        .add_message_integrity(key)
        .add_message_integrity_sha256(key)
        .add_fingerprint();
    ASSERT_TRUE(b.ok());
    MessageView v;
    ASSERT_SAME(parse(b.bytes(), v), ParseError::kOk);
    ASSERT_NE(v.message_integrity(), nullptr);
    ASSERT_NE(v.message_integrity_sha256(), nullptr);
    ASSERT_NE(v.fingerprint(), nullptr);
    EXPECT_EQ(v.message_integrity()->length, 20u);
    EXPECT_EQ(v.message_integrity_sha256()->length, 32u);

    for (auto [attr_ptr, md] : {std::pair{v.message_integrity(), EVP_sha1()},
                                std::pair{v.message_integrity_sha256(), EVP_sha256()}}) {
        const size_t start = attr_ptr->offset - 4u;
        Bytes prefix(v.bytes().begin(), v.bytes().begin() + static_cast<long>(start));
        store_be16(prefix.data() + 2, static_cast<uint16_t>(start - kHeaderSize + 4 + attr_ptr->length));
        EXPECT_EQ(testutil::to_vec(v.value(*attr_ptr)), hmac(md, key, prefix))
            << "attribute 0x" << std::hex << attr_ptr->type;
    }

    // RFC 8489 section 14.7: CRC-32 of everything before FINGERPRINT, xor 0x5354554e.
    const size_t fp_start = v.fingerprint()->offset - 4u;
    const uint32_t crc = static_cast<uint32_t>(crc32(0L, v.bytes().data(), static_cast<uInt>(fp_start)));
    EXPECT_EQ(load_be32(v.value(*v.fingerprint()).data()), crc ^ 0x5354554eu);
}

TEST(StunBuilder, FingerprintAlone) {
    Bytes buf(64);
    MessageBuilder b(buf, Method::kBinding, Class::kRequest, kTxId);
    b.add_fingerprint();
    ASSERT_TRUE(b.ok());
    ASSERT_EQ(b.size(), 28u);
    EXPECT_EQ(load_be16(buf.data() + 2), 8u);
    const uint32_t crc = static_cast<uint32_t>(crc32(0L, buf.data(), 20));
    EXPECT_EQ(load_be32(buf.data() + 24), crc ^ 0x5354554eu);
}

}  // namespace
}  // namespace turn::stun
