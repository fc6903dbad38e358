// Message boundaries on a stream transport (TURN over TCP or TLS, RFC 8656
// section 3.1): STUN messages and ChannelData follow each other with no
// other delimiter. The first two bits tell them apart (00: STUN, 01:
// ChannelData, RFC 8656 section 12); the length field tells where the
// message ends: 20 + length for STUN (a multiple of 4, RFC 8489 section 5),
// 4 + length rounded up to a multiple of 4 for ChannelData (the padding is
// mandatory over streams, RFC 8656 section 12.5). Anything else means the
// stream is not TURN or has lost its framing, and the connection has to go:
// there is no way to find the next message boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace turn {

enum class StreamFrameStatus : uint8_t {
    kNeedMore,     // not enough bytes yet to know (or hold) the next message
    kFrame,        // a whole message: message_len bytes, then consumed - message_len of padding
    kBadType,      // first two bits 10 or 11: neither STUN nor ChannelData
    kBadLength,    // a STUN length that is not a multiple of 4
};
std::string_view to_string(StreamFrameStatus s);

struct StreamFrame {
    StreamFrameStatus status = StreamFrameStatus::kNeedMore;
    size_t message_len = 0;  // kFrame: the STUN message or ChannelData (header + data, no padding)
    size_t consumed = 0;     // kFrame: bytes the message takes on the stream, padding included
    size_t needed = 0;       // kNeedMore: bytes the next message needs in all (0: unknown yet, < 4 bytes)
};

// The next message at the start of `buf`. Never reads past `buf`; a frame is
// at most 20 + 65535 bytes (STUN) or 4 + 65535 + 3 (ChannelData).
StreamFrame next_stream_frame(std::span<const uint8_t> buf);

constexpr size_t kMaxStreamFrame = 20 + 65535;

// ChannelData leaving on a stream is padded to a multiple of 4 (RFC 8656
// section 12.5): how many zero bytes follow `len` bytes of message.
inline size_t stream_padding(std::span<const uint8_t> message) {
    if (message.empty() || (message[0] & 0xC0) != 0x40) {
        return 0;  // STUN messages are already a multiple of 4
    }
    return (4 - (message.size() & 3)) & 3;
}

}  // namespace turn
