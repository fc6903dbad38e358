// Tests for ChannelData framing (src/turn/channel_data.h, RFC 8656 section
// 12.4/12.5): valid and reserved channel numbers, truncation, demultiplexing
// by the first two bits, optional UDP padding, stream frame sizes, and the
// builder's bounds checks (with a canary past the output buffer).
#include "turn/channel_data.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <set>
#include <vector>

#include "../expect_same.h"
#include "common/bytes.h"

namespace turn {

namespace {

using Bytes = std::vector<uint8_t>;

// Header (channel, length field) followed by `payload` and `pad` bytes of 0xEE.
Bytes frame(uint16_t channel, uint16_t length_field, const Bytes& payload, size_t pad = 0) {
    // Sized once: vector::insert here trips a GCC 12 -Warray-bounds false positive at -O3.
    Bytes f(kChannelDataHeader + payload.size() + pad, 0xEE);
    store_be16(f.data(), channel);
    store_be16(f.data() + 2, length_field);
    std::copy(payload.begin(), payload.end(), f.begin() + kChannelDataHeader);
    return f;
}
Bytes frame(uint16_t channel, const Bytes& payload, size_t pad = 0) {
    return frame(channel, static_cast<uint16_t>(payload.size()), payload, pad);
}

Bytes payload_of(size_t n) {
    Bytes p(n);
    for (size_t i = 0; i < n; ++i) {
        p[i] = static_cast<uint8_t>(i + 1);
    }
    return p;
}

Bytes to_vec(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

// ============================================================ parse

TEST(ChannelDataParse, ValidChannelsAtRangeEnds) {
    const Bytes p = payload_of(8);
    for (uint16_t ch : {uint16_t{0x4000}, uint16_t{0x4001}, uint16_t{0x4ABC}, uint16_t{0x4FFF}}) {
        const Bytes f = frame(ch, p);
        ChannelDataView v;
        ASSERT_SAME(parse_channel_data(f, v), ChannelDataError::kOk) << std::hex << ch;
        EXPECT_EQ(v.channel, ch);
        EXPECT_EQ(to_vec(v.payload), p);
        EXPECT_EQ(v.payload.data(), f.data() + 4) << "payload must point into the input";
    }
}

TEST(ChannelDataParse, EmptyPayload) {
    const Bytes f = frame(0x4000, Bytes{});
    ChannelDataView v;
    ASSERT_SAME(parse_channel_data(f, v), ChannelDataError::kOk);
    EXPECT_TRUE(v.payload.empty());
}

TEST(ChannelDataParse, ReservedChannelsRejected) {
    for (uint16_t ch : {uint16_t{0x5000}, uint16_t{0x5FFF}, uint16_t{0x6000}, uint16_t{0x7FFF}}) {
        const Bytes f = frame(ch, payload_of(4));
        ChannelDataView v;
        EXPECT_SAME(parse_channel_data(f, v), ChannelDataError::kBadChannel) << std::hex << ch;
    }
}

TEST(ChannelDataParse, LengthOverrun) {
    ChannelDataView v;
    EXPECT_SAME(parse_channel_data(frame(0x4000, 5, payload_of(4)), v), ChannelDataError::kLengthOverrun);
    EXPECT_SAME(parse_channel_data(frame(0x4000, 1, Bytes{}), v), ChannelDataError::kLengthOverrun);
    EXPECT_SAME(parse_channel_data(frame(0x4FFF, 0xFFFF, payload_of(100)), v), ChannelDataError::kLengthOverrun);
}

TEST(ChannelDataParse, TooShort) {
    const Bytes f = frame(0x4000, payload_of(4));
    for (size_t n = 0; n < kChannelDataHeader; ++n) {
        const Bytes cut(f.begin(), f.begin() + static_cast<long>(n));
        ChannelDataView v;
        EXPECT_SAME(parse_channel_data(cut, v), ChannelDataError::kTooShort) << n << " bytes";
    }
}

TEST(ChannelDataParse, NotChannelData) {
    // First two bits 00 (STUN), 10 and 11 (RTP/DTLS range per RFC 7983 demux).
    for (uint16_t ch : {uint16_t{0x0001}, uint16_t{0x3FFF}, uint16_t{0x8000}, uint16_t{0xBFFF},
                        uint16_t{0xC000}, uint16_t{0xFFFF}}) {
        const Bytes f = frame(ch, payload_of(4));
        ChannelDataView v;
        EXPECT_SAME(parse_channel_data(f, v), ChannelDataError::kNotChannelData) << std::hex << ch;
    }
}

TEST(ChannelDataParse, UdpTrailingPaddingAccepted) {
    for (size_t len : {1, 2, 3, 5}) {
        const Bytes p = payload_of(len);
        const size_t pad = pad4(static_cast<uint32_t>(len)) - len;
        const Bytes f = frame(0x4123, p, pad);
        ChannelDataView v;
        ASSERT_SAME(parse_channel_data(f, v), ChannelDataError::kOk) << len;
        EXPECT_EQ(to_vec(v.payload), p) << "padding must not be part of the payload";
    }
}

TEST(ChannelDataDemux, FirstByte) {
    EXPECT_TRUE(is_channel_data(0x40));
    EXPECT_TRUE(is_channel_data(0x7F));
    EXPECT_FALSE(is_channel_data(0x00));
    EXPECT_FALSE(is_channel_data(0x3F));
    EXPECT_FALSE(is_channel_data(0x80));
    EXPECT_FALSE(is_channel_data(0xC0));
    EXPECT_TRUE(is_valid_channel(0x4000));
    EXPECT_TRUE(is_valid_channel(0x4FFF));
    EXPECT_FALSE(is_valid_channel(0x3FFF));
    EXPECT_FALSE(is_valid_channel(0x5000));
}

// ============================================================ frame size

TEST(ChannelDataFrameSize, PaddedToFour) {
    EXPECT_EQ(channel_data_frame_size(frame(0x4000, Bytes{})), 4u);
    EXPECT_EQ(channel_data_frame_size(frame(0x4000, payload_of(4))), 8u);
    EXPECT_EQ(channel_data_frame_size(frame(0x4000, payload_of(5), 3)), 12u);
    EXPECT_EQ(channel_data_frame_size(frame(0x4000, payload_of(7), 1)), 12u);
    EXPECT_EQ(channel_data_frame_size(frame(0x4000, payload_of(8))), 12u);
}

TEST(ChannelDataFrameSize, HeaderIsEnough) {
    // A stream reader asks before the payload has arrived.
    const Bytes hdr = frame(0x4000, 100, Bytes{});
    EXPECT_EQ(channel_data_frame_size(hdr), 104u);
    const Bytes max = frame(0x4FFF, 0xFFFF, Bytes{});
    EXPECT_EQ(channel_data_frame_size(max), 4u + 0x10000u) << "must not wrap at 16 bits";
}

TEST(ChannelDataFrameSize, TooShortIsZero) {
    const Bytes f = frame(0x4000, payload_of(4));
    for (size_t n = 0; n < kChannelDataHeader; ++n) {
        EXPECT_EQ(channel_data_frame_size(std::span<const uint8_t>(f.data(), n)), 0u) << n;
    }
}

// ============================================================ build

TEST(ChannelDataBuild, WithoutPadding) {
    const Bytes p = payload_of(5);
    Bytes out(64, 0xAA);
    const size_t n = build_channel_data(out, 0x4001, p, false);
    ASSERT_EQ(n, 9u);
    EXPECT_EQ(Bytes(out.begin(), out.begin() + 9), frame(0x4001, p));
    EXPECT_EQ(out[9], 0xAA) << "unpadded build wrote past its length";
}

TEST(ChannelDataBuild, WithPadding) {
    for (size_t len : {0, 1, 2, 3, 4, 5, 8}) {
        const Bytes p = payload_of(len);
        Bytes out(64, 0xAA);
        const size_t n = build_channel_data(out, 0x4FFF, p, true);
        const size_t want = kChannelDataHeader + pad4(static_cast<uint32_t>(len));
        ASSERT_EQ(n, want) << len;
        EXPECT_EQ(load_be16(out.data()), 0x4FFF);
        EXPECT_EQ(load_be16(out.data() + 2), len) << "the length field excludes padding";
        EXPECT_EQ(Bytes(out.begin() + 4, out.begin() + 4 + static_cast<long>(len)), p);
        for (size_t i = 4 + len; i < want; ++i) {
            EXPECT_EQ(out[i], 0) << "padding byte " << i << " not zeroed";
        }
        EXPECT_EQ(out[want], 0xAA);
    }
}

TEST(ChannelDataBuild, BuiltFrameParses) {
    const Bytes p = payload_of(13);
    Bytes out(64);
    const size_t n = build_channel_data(out, 0x4321, p, true);
    ASSERT_EQ(n, 20u);
    ChannelDataView v;
    ASSERT_SAME(parse_channel_data(std::span<const uint8_t>(out.data(), n), v), ChannelDataError::kOk);
    EXPECT_EQ(v.channel, 0x4321);
    EXPECT_EQ(to_vec(v.payload), p);
    EXPECT_EQ(channel_data_frame_size(std::span<const uint8_t>(out.data(), n)), n);
}

TEST(ChannelDataBuild, BufferTooSmall) {
    constexpr uint8_t kCanary = 0xCD;
    const Bytes p = payload_of(5);
    struct Case {
        size_t cap;
        bool pad;
    };
    // Unpadded needs 9, padded needs 12.
    for (const Case& c : {Case{0, false}, Case{3, false}, Case{8, false}, Case{11, true}, Case{9, true}}) {
        std::array<uint8_t, 64> arena;
        arena.fill(kCanary);
        const size_t n = build_channel_data(std::span<uint8_t>(arena.data(), c.cap), 0x4000, p, c.pad);
        EXPECT_EQ(n, 0u) << "cap " << c.cap << " pad " << c.pad;
        for (size_t i = c.cap; i < arena.size(); ++i) {
            ASSERT_EQ(arena[i], kCanary) << "wrote byte " << i << " past a " << c.cap << "-byte buffer";
        }
    }
    std::array<uint8_t, 12> exact{};
    EXPECT_EQ(build_channel_data(exact, 0x4000, p, true), 12u);
    EXPECT_EQ(build_channel_data(std::span<uint8_t>(exact.data(), 9), 0x4000, p, false), 9u);
}

TEST(ChannelDataBuild, PayloadOver64KiBRejected) {
    const Bytes p(65536, 0x55);
    Bytes out(70000);
    EXPECT_EQ(build_channel_data(out, 0x4000, p, false), 0u);
    EXPECT_EQ(build_channel_data(out, 0x4000, p, true), 0u);
    const Bytes max(65535, 0x55);
    EXPECT_EQ(build_channel_data(out, 0x4000, max, false), 4u + 65535u);
    EXPECT_EQ(build_channel_data(out, 0x4000, max, true), 4u + 65536u);
}

TEST(ChannelDataBuild, HeaderOnly) {
    std::array<uint8_t, 6> out;
    out.fill(0xAA);
    write_channel_data_header(out.data(), 0x4ABC, 0x1234);
    EXPECT_EQ(out, (std::array<uint8_t, 6>{0x4A, 0xBC, 0x12, 0x34, 0xAA, 0xAA}));
}

TEST(ChannelDataNames, ErrorStringsAreDistinct) {
    std::set<std::string_view> seen;
    for (int e = 0; e <= static_cast<int>(ChannelDataError::kLengthOverrun); ++e) {
        const std::string_view s = to_string(static_cast<ChannelDataError>(e));
        EXPECT_FALSE(s.empty()) << e;
        EXPECT_TRUE(seen.insert(s).second) << "duplicate name " << s;
    }
}

}  // namespace
}  // namespace turn

namespace turn {
namespace {

// RFC 5766 allowed channels up to 0x7FFF; RFC 8656 reserves 0x5000-0x7FFF.
// Callers that must serve RFC 5766 clients opt in per call.
TEST(ChannelDataRange, Rfc5766RangeIsOptIn) {
    const uint8_t frame[] = {0x6F, 0xFF, 0x00, 0x02, 0xAB, 0xCD};
    ChannelDataView v;
    EXPECT_EQ(parse_channel_data(frame, v), ChannelDataError::kBadChannel);
    ASSERT_EQ(parse_channel_data(frame, v, ChannelRange::kRfc5766), ChannelDataError::kOk);
    EXPECT_EQ(v.channel, 0x6FFF);
    ASSERT_EQ(v.payload.size(), 2u);
    EXPECT_EQ(v.payload[1], 0xCD);
    EXPECT_FALSE(is_valid_channel(0x5000));
    EXPECT_TRUE(is_valid_channel(0x5000, ChannelRange::kRfc5766));
    EXPECT_FALSE(is_valid_channel(0x8000, ChannelRange::kRfc5766));
    EXPECT_FALSE(is_valid_channel(0x3FFF, ChannelRange::kRfc5766));
}

}  // namespace
}  // namespace turn
