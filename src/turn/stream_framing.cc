#include "turn/stream_framing.h"

#include "turn/channel_data.h"

namespace turn {

std::string_view to_string(StreamFrameStatus s) {
    switch (s) {
        case StreamFrameStatus::kNeedMore: return "need_more";
        case StreamFrameStatus::kFrame: return "frame";
        case StreamFrameStatus::kBadType: return "bad_type";
        case StreamFrameStatus::kBadLength: return "bad_length";
    }
    return "unknown";
}

StreamFrame next_stream_frame(std::span<const uint8_t> buf) {
    StreamFrame f;
    if (buf.empty()) {
        return f;
    }
    const uint8_t top = buf[0] & 0xC0;
    if (top != 0x00 && top != 0x40) {
        f.status = StreamFrameStatus::kBadType;
        return f;
    }
    if (buf.size() < 4) {
        return f;  // the length field is bytes 2-3 in both formats
    }
    const size_t len = static_cast<size_t>(buf[2]) << 8 | buf[3];
    if (top == 0x00) {
        if ((len & 3) != 0) {
            f.status = StreamFrameStatus::kBadLength;
            return f;
        }
        f.message_len = 20 + len;
        f.consumed = f.message_len;
    } else {
        f.message_len = kChannelDataHeader + len;
        f.consumed = channel_data_frame_size(buf);
    }
    if (buf.size() < f.consumed) {
        f.needed = f.consumed;
        f.message_len = 0;
        f.consumed = 0;
        return f;
    }
    f.status = StreamFrameStatus::kFrame;
    return f;
}

}  // namespace turn
