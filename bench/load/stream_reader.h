// Reassembly of TURN messages from a byte stream (TURN over TCP or TLS, RFC
// 8656 section 3.1) for the load harness: a bounded buffer that the
// connection reads into, cut into whole STUN messages and ChannelData frames
// by turn::next_stream_frame (the relay's own framing rules). Messages split
// across reads wait here for their remainder; several in one read come out one
// by one. No I/O, so the unit test can feed it any split it likes.
//
// Untrusted input: a length beyond `max_frame`, a first byte that is neither
// STUN nor ChannelData or a STUN length not a multiple of 4 is an error that
// sticks (the stream has no next message boundary to resynchronise on); the
// owner counts it and closes the connection. The buffer never grows.
//
// An RFC 6062 data connection carries TURN framing only up to the
// ConnectionBind success response; after it the stream is the peer's raw
// bytes. turn-load writes fixed-size messages into such a pipe, so from then on
// the reader cuts every `n` bytes instead (cut_fixed()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace turn::load {

enum class StreamReadStatus : uint8_t {
    kNeedMore,   // no whole message buffered yet
    kMessage,    // `message` holds the next one
    kBadType,    // first two bits 10 or 11
    kBadLength,  // STUN length not a multiple of 4
    kOversize,   // the message (with padding) would exceed max_frame
};
std::string_view to_string(StreamReadStatus s);

// The largest message the harness expects back: a Data indication around an
// 8000-byte payload (--size's bound) is ~8040 bytes; 16 KiB leaves room for
// large STUN responses and is far below a STUN length field's 65555.
constexpr size_t kDefaultMaxStreamMessage = 16384;

class StreamReader {
public:
    // `max_frame`: largest message accepted (padding included); the buffer
    // holds 4 * max_frame so one read can bring several messages.
    explicit StreamReader(size_t max_frame = kDefaultMaxStreamMessage);

    // Room to read into (compacts first); empty only when an error stuck.
    std::span<uint8_t> space();
    // `n` bytes were written at the start of space().
    void commit(size_t n);
    // The next whole message (ChannelData without its padding; with
    // cut_fixed(n), the next n bytes); the span stays valid until the next
    // space() call.
    StreamReadStatus next(std::span<const uint8_t>& message);
    // From now on every message is `n` bytes (1..max_frame) without any
    // framing of TURN's: what is buffered already is cut the same way.
    // False (nothing changes) for an n out of that range.
    bool cut_fixed(size_t n);

    size_t buffered() const { return end_ - begin_; }
    bool failed() const { return error_ != StreamReadStatus::kNeedMore; }
    size_t max_frame() const { return max_frame_; }

private:
    size_t max_frame_;
    std::vector<uint8_t> buf_;
    size_t begin_ = 0;
    size_t end_ = 0;
    size_t fixed_ = 0;  // cut_fixed(): message size; 0: TURN framing
    StreamReadStatus error_ = StreamReadStatus::kNeedMore;
};

}  // namespace turn::load
