#include "stream_reader.h"

#include <algorithm>
#include <cstring>

#include "turn/stream_framing.h"

namespace turn::load {

std::string_view to_string(StreamReadStatus s) {
    switch (s) {
        case StreamReadStatus::kNeedMore: return "need_more";
        case StreamReadStatus::kMessage: return "message";
        case StreamReadStatus::kBadType: return "stream_bad_type";
        case StreamReadStatus::kBadLength: return "stream_bad_length";
        case StreamReadStatus::kOversize: return "stream_oversize";
    }
    return "unknown";
}

StreamReader::StreamReader(size_t max_frame)
    : max_frame_(std::clamp<size_t>(max_frame, 20, turn::kMaxStreamFrame + 3)), buf_(4 * max_frame_) {}

std::span<uint8_t> StreamReader::space() {
    if (failed()) {
        return {};
    }
    if (begin_ == end_) {
        begin_ = end_ = 0;
    } else if (begin_ > 0 && buf_.size() - end_ < max_frame_) {
        // What is left is less than one message (next() took the whole ones),
        // so this moves at most max_frame bytes.
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    return {buf_.data() + end_, buf_.size() - end_};
}

bool StreamReader::cut_fixed(size_t n) {
    if (n == 0 || n > max_frame_) {
        return false;
    }
    fixed_ = n;
    return true;
}

void StreamReader::commit(size_t n) { end_ = std::min(buf_.size(), end_ + n); }

StreamReadStatus StreamReader::next(std::span<const uint8_t>& message) {
    if (failed()) {
        return error_;
    }
    const std::span<const uint8_t> avail{buf_.data() + begin_, end_ - begin_};
    if (fixed_ != 0) {
        if (avail.size() < fixed_) {
            return StreamReadStatus::kNeedMore;
        }
        message = avail.first(fixed_);
        begin_ += fixed_;
        return StreamReadStatus::kMessage;
    }
    const StreamFrame f = next_stream_frame(avail);
    switch (f.status) {
        case StreamFrameStatus::kFrame:
            if (f.consumed > max_frame_) {
                return error_ = StreamReadStatus::kOversize;
            }
            message = avail.first(f.message_len);
            begin_ += f.consumed;
            return StreamReadStatus::kMessage;
        case StreamFrameStatus::kNeedMore:
            // Known length already too large: reject before buffering it.
            if (f.needed > max_frame_) {
                return error_ = StreamReadStatus::kOversize;
            }
            return StreamReadStatus::kNeedMore;
        case StreamFrameStatus::kBadType: return error_ = StreamReadStatus::kBadType;
        case StreamFrameStatus::kBadLength: return error_ = StreamReadStatus::kBadLength;
    }
    return error_ = StreamReadStatus::kBadType;
}

}  // namespace turn::load
