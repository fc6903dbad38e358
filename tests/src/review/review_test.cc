// Review findings for the protocol library (src/). Each test asserts the
// behaviour the RFCs (or a safe API) require; a failing test is an open
// finding, see the review report for severity and the recommended fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <unordered_map>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "auth/nonce.h"
#include "ipc/protocol.h"
#include "net/address.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/integrity.h"
#include "stun/message.h"
#include "turn/channel_data.h"
#include "../stun/stun_test_util.h"

namespace turn {
namespace {

using stun::testutil::RawMessage;

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ------------------------------------------------------------ net/address

// An operator who writes a deny rule in IPv4-mapped form expects it to cover
// the peer however it is spelled. Prefix::contains() normalises the peer to
// IPv4 but Prefix::parse() keeps the rule as IPv6, so the families never
// match and the rule is silently dead (the peer is then permitted).
TEST(ReviewPrefix, MappedFormDenyRuleMatchesMappedPeer) {
    const auto rule = Prefix::parse("::ffff:10.0.0.0/104");
    ASSERT_TRUE(rule.has_value());
    EXPECT_TRUE(rule->contains(*Address::parse("::ffff:10.0.0.1")));
    EXPECT_TRUE(rule->contains(*Address::parse("10.0.0.1")));
}

TEST(ReviewPrefix, MappedFormSingleHostRuleMatches) {
    const auto rule = Prefix::parse("::ffff:127.0.0.1");
    ASSERT_TRUE(rule.has_value());
    EXPECT_TRUE(rule->contains(*Address::parse("127.0.0.1")));
    EXPECT_TRUE(rule->contains(*Address::parse("::ffff:127.0.0.1")));
}

// ::ffff:0.0.0.0 is 0.0.0.0 on a dual-stack socket (reaches the host itself),
// but is_unspecified() does not see it; controlplane/core/config.cc:104 uses
// is_unspecified() before normalised() to refuse wildcard relay IPs.
TEST(ReviewAddress, MappedUnspecifiedIsUnspecified) {
    const auto a = Address::parse("::ffff:0.0.0.0");
    ASSERT_TRUE(a.has_value());
    EXPECT_TRUE(a->normalised().is_unspecified());
    EXPECT_TRUE(a->is_unspecified());
}

// AddressHash is unkeyed and public, so a remote sender can compute offline
// which bucket of an unordered_map<Address, ..., AddressHash> a source lands
// in (controlplane SourceRateLimiter, permissions, channel_by_peer,
// allocations by 5-tuple). This test plays that attacker: it evaluates the
// published formula (not AddressHash itself) to pick interface IDs inside one
// /64 that share a bucket, then inserts them into a real map. With a
// per-process random key in AddressHash the prediction fails and the chain
// stays short.
size_t attacker_model_hash(const Address& a) {
    auto mix = [](size_t h, uint64_t v) { return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)); };
    uint64_t lo;
    uint64_t hi;
    std::memcpy(&lo, a.ip.data(), 8);
    std::memcpy(&hi, a.ip.data() + 8, 8);
    size_t h = mix(0, lo);
    h = mix(h, hi);
    return mix(h, (uint64_t{a.port} << 8) | static_cast<uint8_t>(a.family));
}

TEST(ReviewAddressHash, RemoteSenderCannotFillOneBucket) {
    std::unordered_map<Address, int, AddressHash> m;
    m.reserve(4096);
    const size_t n = m.bucket_count();
    Address a = *Address::parse("2001:db8:1:2::");  // the attacker's own /64
    const size_t target = attacker_model_hash(a) % n;
    size_t placed = 0;
    for (uint64_t iid = 1; placed < 1000 && iid < 50'000'000; ++iid) {
        std::memcpy(a.ip.data() + 8, &iid, 8);
        if (attacker_model_hash(a) % n == target) {
            m.emplace(a, 0);
            ++placed;
        }
    }
    ASSERT_EQ(placed, 1000u);
    ASSERT_EQ(m.bucket_count(), n);
    size_t longest = 0;
    for (size_t b = 0; b < n; ++b) {
        longest = std::max(longest, m.bucket_size(b));
    }
    EXPECT_LT(longest, 32u) << "every lookup of these sources walks a chain of " << longest;
}

// ------------------------------------------------------------ turn/channel_data

// build_channel_data() uses memmove, i.e. it expects payload and output to
// overlap (framing a datagram received at the start of the buffer), but it
// writes the 4-byte header before moving the payload, so the first 4 payload
// bytes are overwritten by the header before they are copied.
TEST(ReviewChannelData, InPlaceFramingKeepsPayload) {
    std::array<uint8_t, 16> buf{1, 2, 3, 4, 5, 6, 7, 8};
    const std::array<uint8_t, 8> want{1, 2, 3, 4, 5, 6, 7, 8};
    const size_t n = build_channel_data(buf, 0x4000, std::span<const uint8_t>(buf.data(), 8), false);
    ASSERT_EQ(n, 12u);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), buf.begin() + 4));
}

// ------------------------------------------------------------ stun/message

// RFC 8489 section 9: "agents MUST ignore all attributes that follow the
// MESSAGE-INTEGRITY-SHA256 attribute if the MESSAGE-INTEGRITY attribute is
// not present, with the exception of the FINGERPRINT attribute." A
// MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is to be ignored, not a
// parse error (which the server turns into 400).
TEST(ReviewParse, MessageIntegrityAfterSha256IsIgnored) {
    RawMessage m;
    m.attr(stun::attr::kUsername, "user");
    m.attr(stun::attr::kMessageIntegritySha256, 32);
    m.attr(stun::attr::kMessageIntegrity, 20);
    stun::MessageView v;
    EXPECT_EQ(stun::parse(m.span(), v), stun::ParseError::kOk);
    EXPECT_EQ(v.message_integrity(), nullptr);
    EXPECT_NE(v.message_integrity_sha256(), nullptr);
}

// A failed parse leaves the view holding the attributes (and the
// MESSAGE-INTEGRITY index) walked so far; a caller that forgets the error
// code sees a half-parsed message with an integrity attribute.
TEST(ReviewParse, FailedParseResetsView) {
    RawMessage m;
    m.attr(stun::attr::kUsername, "user");
    m.attr(stun::attr::kMessageIntegrity, 20);
    m.attr(stun::attr::kMessageIntegrity, 20);
    stun::MessageView v;
    ASSERT_EQ(stun::parse(m.span(), v), stun::ParseError::kDuplicateIntegrity);
    EXPECT_TRUE(v.attributes().empty());
    EXPECT_EQ(v.message_integrity(), nullptr);
    EXPECT_TRUE(v.bytes().empty());
}

// UNKNOWN-ATTRIBUTES of a 420 should list each unknown type once; repeats
// also use up the kMaxUnknown slots and can hide other unknown types.
TEST(ReviewParse, UnknownRequiredListedOnce) {
    RawMessage m;
    for (int i = 0; i < 20; ++i) {
        m.attr(0x7777, 4);
    }
    m.attr(0x7778, 4);
    stun::MessageView v;
    ASSERT_EQ(stun::parse(m.span(), v), stun::ParseError::kOk);
    const std::vector<uint16_t> got(v.unknown_required().begin(), v.unknown_required().end());
    EXPECT_EQ(got, (std::vector<uint16_t>{0x7777, 0x7778}));
}

// ------------------------------------------------------------ stun/constants

// is_known_required_attribute() lists what the library can name, not what
// the server processes: CHANGE-REQUEST (RFC 5780) is "known", so a Binding
// request carrying it is answered 200 from the same address and port instead
// of 420, and an RFC 5780 client misreads that as endpoint-independent
// filtering. RESPONSE-PORT, PADDING and RESPONSE-ADDRESS behave the same way.
TEST(ReviewConstants, UnimplementedRfc5780AttributesAreReportedUnknown) {
    RawMessage m;
    const std::array<uint8_t, 4> change{0, 0, 0, 0x06};
    m.attr(stun::attr::kChangeRequest, change);
    stun::MessageView v;
    ASSERT_EQ(stun::parse(m.span(), v), stun::ParseError::kOk);
    const std::vector<uint16_t> got(v.unknown_required().begin(), v.unknown_required().end());
    EXPECT_EQ(got, (std::vector<uint16_t>{stun::attr::kChangeRequest}));
}

// ------------------------------------------------------------ stun/attributes

// RFC 8489 section 14.3: "A compliant implementation MUST be able to parse a
// UTF-8-encoded sequence of 763 or fewer octets [USERNAME]". kMaxUsername is
// 513, so a 600-byte USERNAME is refused with kTooLong (server: 400).
TEST(ReviewAttr, UsernameUpTo763BytesParses) {
    const std::string name(600, 'u');
    std::string_view out;
    EXPECT_EQ(stun::decode_text(bytes_of(name), stun::kMaxUsername, out), stun::AttrError::kOk);
}

// ------------------------------------------------------------ stun/integrity

// RFC 8489 section 14.6: "The value must be the full 32 bytes unless the STUN
// Usage explicitly specifies that truncation is allowed." RFC 8656 (TURN)
// does not allow it, yet a 16-byte MESSAGE-INTEGRITY-SHA256 verifies, and
// controlplane/core/auth.cc:129 authenticates the request with it.
TEST(ReviewIntegrity, TruncatedSha256IsNotAcceptedForTurn) {
    const auto key = bytes_of("password-key");
    std::array<uint8_t, 256> buf{};
    stun::MessageBuilder b(buf, stun::Method::kAllocate, stun::Class::kRequest,
                           stun::testutil::kTxId);
    b.add_text(stun::attr::kUsername, "user");
    const size_t before = b.size();
    std::span<uint8_t> value = b.reserve(stun::attr::kMessageIntegritySha256, 16);
    ASSERT_EQ(value.size(), 16u);
    uint8_t mac[stun::kSha256Size];
    stun::hmac_sha256_stun(key, {buf.data(), before}, before,
                           static_cast<uint16_t>(b.size() - stun::kHeaderSize), mac);
    std::memcpy(value.data(), mac, 16);
    ASSERT_TRUE(b.ok());
    std::vector<uint8_t> msg(b.bytes().begin(), b.bytes().end());
    stun::MessageView v;
    ASSERT_EQ(stun::parse(msg, v), stun::ParseError::kOk);
    EXPECT_FALSE(stun::verify_message_integrity_sha256(v, key));
}

// ------------------------------------------------------------ stun/builder

// RFC 8489 section 14.8: the reason phrase is fewer than 128 characters (at
// most 509 bytes when encoding). The builder writes any length and any bytes.
TEST(ReviewBuilder, OverlongErrorReasonIsRefused) {
    std::array<uint8_t, 2048> buf{};
    stun::MessageBuilder b(buf, stun::Method::kAllocate, stun::Class::kError, stun::testutil::kTxId);
    b.add_error_code(400, std::string(600, 'x'));
    EXPECT_FALSE(b.ok());
}

// ------------------------------------------------------------ auth/nonce

// NonceCodec(secret, ...) documents "at least 16 random bytes" but accepts an
// empty secret, which is the all-zero HMAC key: anyone can mint nonces.
// Fixed: a secret shorter than 16 bytes is refused at construction.
TEST(ReviewNonce, EmptySecretIsNotTheAllZeroKey) {
    EXPECT_THROW(auth::NonceCodec(std::span<const uint8_t>{}, 3600), std::invalid_argument);
    const std::array<uint8_t, 15> short_secret{};
    EXPECT_THROW(auth::NonceCodec(short_secret, 3600), std::invalid_argument);
    const std::array<uint8_t, 16> ok_secret{1};
    EXPECT_NO_THROW(auth::NonceCodec(ok_secret, 3600));
}

// ------------------------------------------------------------ ipc/protocol

// decode() checks type, version and size but not CountersReport::count: a
// report claiming 1000 entries decodes, and a consumer looping to `count`
// reads past entries[80].
TEST(ReviewIpc, CountersReportCountBeyondCapacityIsRejected) {
    ipc::CountersReport r{};
    r.count = 1000;
    const auto wire = ipc::encode(r, 1);
    std::vector<uint8_t> copy(wire.begin(), wire.end());
    const auto got = ipc::decode<ipc::CountersReport>(copy);
    EXPECT_FALSE(got.has_value());
}

// The same bound for a worker's counters: the control plane exports `count`
// of them by name.
TEST(ReviewIpc, WorkerCountersCountBeyondCapacityIsRejected) {
    ipc::WorkerCounters w{};
    w.count = ipc::WorkerCounters::kMaxCounters;
    const auto wire = ipc::encode(w, 1);
    EXPECT_TRUE(ipc::decode<ipc::WorkerCounters>(std::vector<uint8_t>(wire.begin(), wire.end())).has_value());
    w.count = ipc::WorkerCounters::kMaxCounters + 1;
    const auto bad = ipc::encode(w, 2);
    EXPECT_FALSE(ipc::decode<ipc::WorkerCounters>(std::vector<uint8_t>(bad.begin(), bad.end())).has_value());
}

}  // namespace
}  // namespace turn
