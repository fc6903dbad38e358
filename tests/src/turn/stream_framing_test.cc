// Tests for message boundaries on TCP/TLS streams (src/turn/stream_framing.h,
// RFC 8656 sections 3.1 and 12.5): STUN and ChannelData back to back, every
// split point of a stream, mandatory ChannelData padding, and the bytes that
// make a stream unusable (neither STUN nor ChannelData, a STUN length that
// is not a multiple of 4).
#include "turn/stream_framing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace turn {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes stun(uint16_t type, uint16_t len) {
    Bytes b(20 + len, 0x5A);
    b[0] = static_cast<uint8_t>(type >> 8);
    b[1] = static_cast<uint8_t>(type);
    b[2] = static_cast<uint8_t>(len >> 8);
    b[3] = static_cast<uint8_t>(len);
    return b;
}

// ChannelData as a stream carries it: padded to 4 with zeros.
Bytes channel(uint16_t ch, uint16_t len) {
    Bytes b(4 + len, 0xC3);
    b[0] = static_cast<uint8_t>(ch >> 8);
    b[1] = static_cast<uint8_t>(ch);
    b[2] = static_cast<uint8_t>(len >> 8);
    b[3] = static_cast<uint8_t>(len);
    b.resize((b.size() + 3) & ~size_t{3}, 0);
    return b;
}

struct Split {
    std::vector<size_t> sizes;  // message_len of each frame
    StreamFrameStatus last = StreamFrameStatus::kNeedMore;
};

// Feeds `stream` in pieces of `step` bytes, as a reader with a buffer would.
Split read_all(const Bytes& stream, size_t step) {
    Split out;
    Bytes buf;
    size_t fed = 0;
    while (true) {
        StreamFrame f = next_stream_frame(buf);
        while (f.status == StreamFrameStatus::kFrame) {
            EXPECT_LE(f.message_len, f.consumed);
            EXPECT_LE(f.consumed, buf.size());
            out.sizes.push_back(f.message_len);
            buf.erase(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(f.consumed));
            f = next_stream_frame(buf);
        }
        if (f.status != StreamFrameStatus::kNeedMore || fed == stream.size()) {
            out.last = f.status;
            return out;
        }
        if (f.needed != 0) {
            EXPECT_GT(f.needed, buf.size());
        }
        const size_t n = std::min(step, stream.size() - fed);
        buf.insert(buf.end(), stream.begin() + static_cast<ptrdiff_t>(fed), stream.begin() + static_cast<ptrdiff_t>(fed + n));
        fed += n;
    }
}

TEST(StreamFraming, MixedMessagesAtEverySplit) {
    Bytes s;
    for (const Bytes& m : {stun(0x0001, 0), channel(0x4000, 5), stun(0x0003, 36), channel(0x4FFF, 0),
                           channel(0x4001, 8), channel(0x4002, 7), stun(0x0017, 4)}) {
        s.insert(s.end(), m.begin(), m.end());
    }
    const std::vector<size_t> want = {20, 9, 56, 4, 12, 11, 24};
    for (size_t step = 1; step <= s.size(); ++step) {
        const Split r = read_all(s, step);
        EXPECT_EQ(r.sizes, want) << "read " << step << " bytes at a time";
        EXPECT_EQ(r.last, StreamFrameStatus::kNeedMore) << step;
    }
}

TEST(StreamFraming, ChannelDataPaddingIsConsumedNotDelivered) {
    for (uint16_t len = 0; len < 12; ++len) {
        const Bytes m = channel(0x4000, len);
        const StreamFrame f = next_stream_frame(m);
        ASSERT_EQ(f.status, StreamFrameStatus::kFrame) << len;
        EXPECT_EQ(f.message_len, 4u + len);
        EXPECT_EQ(f.consumed % 4, 0u);
        EXPECT_EQ(f.consumed, m.size());
        // Without its padding the message is not complete yet.
        if (len % 4 != 0) {
            const StreamFrame g = next_stream_frame(std::span<const uint8_t>(m.data(), 4u + len));
            EXPECT_EQ(g.status, StreamFrameStatus::kNeedMore) << len;
            EXPECT_EQ(g.needed, m.size()) << len;
        }
    }
}

TEST(StreamFraming, LargestMessagesDoNotWrap) {
    Bytes s = stun(0x0101, 0xFFFC);
    StreamFrame f = next_stream_frame(std::span<const uint8_t>(s.data(), 4));
    EXPECT_EQ(f.status, StreamFrameStatus::kNeedMore);
    EXPECT_EQ(f.needed, 20u + 0xFFFC);
    EXPECT_LE(f.needed, kMaxStreamFrame);
    f = next_stream_frame(s);
    EXPECT_EQ(f.status, StreamFrameStatus::kFrame);
    EXPECT_EQ(f.message_len, 20u + 0xFFFC);

    Bytes c = channel(0x4000, 0xFFFF);
    f = next_stream_frame(std::span<const uint8_t>(c.data(), 4));
    EXPECT_EQ(f.needed, 4u + 0x10000u);
    EXPECT_LE(f.needed, kMaxStreamFrame);
    f = next_stream_frame(c);
    EXPECT_EQ(f.status, StreamFrameStatus::kFrame);
    EXPECT_EQ(f.message_len, 4u + 0xFFFF);
    EXPECT_EQ(f.consumed, 4u + 0x10000u);
}

TEST(StreamFraming, BadStreamsAreNamedAsSoonAsVisible) {
    // Known from the first byte.
    for (uint8_t b : {uint8_t{0x80}, uint8_t{0xC0}, uint8_t{0xFF}, uint8_t{0x16}}) {
        const Bytes one = {b};
        const StreamFrameStatus want = (b & 0xC0) >= 0x80 ? StreamFrameStatus::kBadType : StreamFrameStatus::kNeedMore;
        EXPECT_EQ(next_stream_frame(one).status, want) << int{b};
    }
    // A STUN length that is not a multiple of 4, once the length is there.
    Bytes s = stun(0x0001, 8);
    s[3] = 7;
    EXPECT_EQ(next_stream_frame(std::span<const uint8_t>(s.data(), 3)).status, StreamFrameStatus::kNeedMore);
    EXPECT_EQ(next_stream_frame(s).status, StreamFrameStatus::kBadLength);
    // A TLS ClientHello on a plain TCP port starts 0x16 0x03: STUN type 0x1603,
    // whose length field is then taken at face value; an HTTP request ("GET ")
    // has bits 01 and reads as ChannelData 0x4745 of 0x5420 bytes: both wait
    // for more, bounded by kMaxStreamFrame, and the reader's idle timeout
    // ends them.
    const Bytes get = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T'};
    const StreamFrame g = next_stream_frame(get);
    EXPECT_EQ(g.status, StreamFrameStatus::kNeedMore);
    EXPECT_EQ(g.needed, (4u + 0x5420 + 3) & ~size_t{3});
    EXPECT_EQ(next_stream_frame(Bytes{}).status, StreamFrameStatus::kNeedMore);
}

TEST(StreamFraming, PaddingOnTheWayOut) {
    EXPECT_EQ(stream_padding(stun(0x0101, 8)), 0u);
    for (uint16_t len = 0; len < 8; ++len) {
        Bytes m(4 + len, 0);
        m[0] = 0x40;
        EXPECT_EQ((m.size() + stream_padding(m)) % 4, 0u) << len;
        EXPECT_LT(stream_padding(m), 4u);
    }
    EXPECT_EQ(stream_padding(Bytes{}), 0u);
}

}  // namespace
}  // namespace turn
