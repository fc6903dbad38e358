// libFuzzer target for ChannelData framing (RFC 8656 section 12.4):
// parse_channel_data, channel_data_frame_size, build_channel_data and
// write_channel_data_header; and message boundaries on a stream
// (next_stream_frame, RFC 8656 section 3.1), the input read as a TCP stream.
//
// Invariants (a violation traps):
//   1. a parsed frame has a valid channel and its payload lies inside the
//      input, right after the 4-byte header;
//   2. channel_data_frame_size is 0 without a whole header and otherwise
//      4 + pad4(length) for ChannelData;
//   3. rebuilding a parsed frame, padded and unpadded, into a buffer of
//      exactly the needed size writes that many bytes (padding zeroed),
//      and the result parses back to the same channel and payload;
//   4. a buffer one byte too small makes build_channel_data return 0;
//   5. on a stream, every frame lies inside what is left of it, a STUN frame
//      is 20 + its length field (a multiple of 4) with no padding, a
//      ChannelData frame is 4 + its length padded to a multiple of 4; a
//      frame not all there asks for exactly the bytes it takes, and every
//      prefix of a frame that holds the length field needs more (never a
//      frame or an error).
// Output buffers are exact-size heap blocks, so a write past the end is an
// AddressSanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "common/bytes.h"
#include "turn/channel_data.h"
#include "turn/stream_framing.h"

namespace {

using namespace turn;

[[noreturn]] void fail() { __builtin_trap(); }

template <typename T>
void keep(const T& v) {
    asm volatile("" : : "r"(&v) : "memory");
}

void round_trip(const ChannelDataView& v, bool pad) {
    const size_t need = kChannelDataHeader + (pad ? pad4(static_cast<uint32_t>(v.payload.size()))
                                                  : v.payload.size());
    std::vector<uint8_t> out(need);
    if (build_channel_data(out, v.channel, v.payload, pad) != need) {
        fail();
    }
    for (size_t i = kChannelDataHeader + v.payload.size(); i < need; ++i) {
        if (out[i] != 0) {
            fail();  // padding must be zeroed, never left uninitialised
        }
    }
    ChannelDataView back;
    if (parse_channel_data(out, back) != ChannelDataError::kOk || back.channel != v.channel ||
        back.payload.size() != v.payload.size() ||
        back.payload.data() != out.data() + kChannelDataHeader ||
        (!v.payload.empty() &&
         std::memcmp(back.payload.data(), v.payload.data(), v.payload.size()) != 0)) {
        fail();
    }
    if (channel_data_frame_size(out) != kChannelDataHeader + pad4(static_cast<uint32_t>(v.payload.size()))) {
        fail();
    }

    std::vector<uint8_t> small(need - 1);
    if (build_channel_data(small, v.channel, v.payload, pad) != 0) {
        fail();
    }

    // In-place framing, as the relay does in front of a payload in an mbuf.
    std::vector<uint8_t> hdr(kChannelDataHeader + v.payload.size());
    write_channel_data_header(hdr.data(), v.channel, static_cast<uint16_t>(v.payload.size()));
    if (load_be16(hdr.data()) != v.channel || load_be16(hdr.data() + 2) != v.payload.size()) {
        fail();
    }
}

void exercise(std::span<const uint8_t> in) {
    const size_t frame = channel_data_frame_size(in);
    if (in.size() < kChannelDataHeader) {
        if (frame != 0) {
            fail();
        }
    } else if (is_channel_data(in[0]) &&
               frame != kChannelDataHeader + pad4(load_be16(in.data() + 2))) {
        fail();
    }

    ChannelDataView v;
    const ChannelDataError e = parse_channel_data(in, v);
    keep(to_string(e));
    if (e != ChannelDataError::kOk) {
        return;
    }
    if (!is_valid_channel(v.channel) || !is_channel_data(in[0]) ||
        v.channel != load_be16(in.data()) || v.payload.data() != in.data() + kChannelDataHeader ||
        v.payload.size() != load_be16(in.data() + 2) ||
        kChannelDataHeader + v.payload.size() > in.size()) {
        fail();
    }
    round_trip(v, false);
    round_trip(v, true);
}

// The input as a stream: frame after frame until the framing fails or the
// bytes run out.
void exercise_stream(std::span<const uint8_t> in) {
    while (true) {
        const StreamFrame f = next_stream_frame(in);
        keep(to_string(f.status));
        const uint8_t top = in.empty() ? 0 : in[0] & 0xC0;
        switch (f.status) {
        case StreamFrameStatus::kBadType:
            if (in.empty() || (top != 0x80 && top != 0xC0)) {
                fail();
            }
            return;
        case StreamFrameStatus::kBadLength:
            if (in.size() < 4 || top != 0x00 || (load_be16(in.data() + 2) & 3) == 0) {
                fail();
            }
            return;
        case StreamFrameStatus::kNeedMore:
            if (f.needed != 0 ? f.needed <= in.size() || in.size() < 4 : in.size() >= 4) {
                fail();
            }
            if (f.needed != 0) {
                // With all it asked for, the same bytes make a frame.
                std::vector<uint8_t> more(in.begin(), in.end());
                more.resize(f.needed);
                const StreamFrame g = next_stream_frame(more);
                if (g.status != StreamFrameStatus::kFrame || g.consumed != f.needed) {
                    fail();
                }
            }
            return;
        case StreamFrameStatus::kFrame: {
            const size_t len = load_be16(in.data() + 2);
            const bool ok = top == 0x00 ? f.message_len == 20 + len && f.consumed == f.message_len && (len & 3) == 0
                                        : f.message_len == kChannelDataHeader + len && f.consumed == pad4(f.message_len);
            if (!ok || f.consumed > in.size()) {
                fail();
            }
            for (size_t cut = 4; cut < f.consumed; cut++) {
                if (next_stream_frame(in.first(cut)).status != StreamFrameStatus::kNeedMore) {
                    fail();
                }
            }
            in = in.subspan(f.consumed);
            break;
        }
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    exercise(std::span<const uint8_t>(data, size));
    exercise_stream(std::span<const uint8_t>(data, size));
    return 0;
}
