// Zero-copy, bounds-checked STUN message parser (RFC 8489 sections 5, 6, 14).
//
// parse() validates the header and walks the attribute list once, recording
// where each attribute sits; it allocates nothing and never reads outside the
// input span. The resulting MessageView borrows the input: keep the buffer
// alive while the view is used.
//
// Rules applied while walking (RFC 8489 section 14):
//  - attributes after MESSAGE-INTEGRITY are ignored (not recorded, not
//    reported as unknown), except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT;
//  - attributes after MESSAGE-INTEGRITY-SHA256 are ignored except FINGERPRINT
//    (a MESSAGE-INTEGRITY there included, RFC 8489 section 9);
//  - FINGERPRINT must be the last attribute;
//  - unknown comprehension-required attributes are collected for a 420 reply.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "stun/constants.h"

namespace turn::stun {

enum class ParseError : uint8_t {
    kOk = 0,
    kTooShort,               // fewer than 20 bytes
    kNotStun,                // the two leading bits are not zero
    kBadMagicCookie,         // bytes 4..7 are not 0x2112A442
    kLengthNotMultipleOf4,   // header length field not a multiple of 4
    kLengthMismatch,         // header length != bytes after the header
    kAttributeTruncated,     // fewer than 4 bytes left for an attribute header
    kAttributeOverrun,       // attribute value (with padding) runs past the end
    kTooManyAttributes,      // more than kMaxAttributes recorded attributes
    kDuplicateIntegrity,     // a second MESSAGE-INTEGRITY(-SHA256)
    kBadIntegrityLength,     // MI not 20 bytes; MI-SHA256 not 16..32 by 4
    kBadFingerprintLength,   // FINGERPRINT not 4 bytes
    kFingerprintNotLast,     // an attribute follows FINGERPRINT
};

std::string_view to_string(ParseError e);

// One attribute as it sits in the message.
struct RawAttribute {
    uint16_t type = 0;
    uint16_t length = 0;   // value length, without padding
    uint32_t offset = 0;   // offset of the value from the message start (may exceed 65535)
};

class MessageView {
public:
    static constexpr size_t kMaxAttributes = 48;
    static constexpr size_t kMaxUnknown = 16;

    uint16_t type() const { return type_; }
    uint16_t method() const { return type_method(type_); }
    Class cls() const { return type_class(type_); }
    bool is(Method m, Class c) const { return type_ == make_type(m, c); }
    // Length from the header (bytes after the 20-byte header).
    uint16_t length() const { return length_; }
    // All zeros on a view that holds no message (never parsed, or failed).
    std::span<const uint8_t, kTxIdSize> transaction_id() const {
        static constexpr uint8_t kNone[kTxIdSize] = {};
        const uint8_t* p = data_.size() >= kHeaderSize ? data_.data() + 8 : kNone;
        return std::span<const uint8_t, kTxIdSize>(p, kTxIdSize);
    }
    // Whole message as parsed (header + attributes).
    std::span<const uint8_t> bytes() const { return data_; }

    // Recorded attributes, in message order.
    std::span<const RawAttribute> attributes() const { return {attrs_.data(), count_}; }
    // First attribute of `type`, or nullptr.
    const RawAttribute* find(uint16_t type) const;
    // Value bytes of an attribute.
    std::span<const uint8_t> value(const RawAttribute& a) const {
        return data_.subspan(a.offset, a.length);
    }

    // Unknown comprehension-required attribute types (first kMaxUnknown).
    std::span<const uint16_t> unknown_required() const { return {unknown_.data(), unknown_count_}; }

    const RawAttribute* message_integrity() const { return idx(mi_); }
    const RawAttribute* message_integrity_sha256() const { return idx(mi256_); }
    const RawAttribute* fingerprint() const { return idx(fp_); }

private:
    friend ParseError parse_into(std::span<const uint8_t>, MessageView&);
    friend void add_unknown(MessageView&, uint16_t);
    const RawAttribute* idx(int i) const { return i < 0 ? nullptr : &attrs_[static_cast<size_t>(i)]; }

    std::span<const uint8_t> data_;
    uint16_t type_ = 0;
    uint16_t length_ = 0;
    std::array<RawAttribute, kMaxAttributes> attrs_{};
    size_t count_ = 0;
    std::array<uint16_t, kMaxUnknown> unknown_{};
    size_t unknown_count_ = 0;
    int mi_ = -1;
    int mi256_ = -1;
    int fp_ = -1;
};

// Parses one STUN message that must fill `data` exactly (a UDP datagram, or a
// frame cut out of a stream with message_size()). On error `out` is reset to
// an empty view.
ParseError parse(std::span<const uint8_t> data, MessageView& out);
// Internal pieces of parse(), declared for the friend declarations above.
ParseError parse_into(std::span<const uint8_t> data, MessageView& out);
void add_unknown(MessageView& out, uint16_t type);

// Cheap test used by demultiplexers: first byte 0b00xxxxxx, magic cookie at
// bytes 4..7, at least 20 bytes. Does not validate attributes.
bool looks_like_stun(std::span<const uint8_t> data);

// For stream transports: if `data` begins with a complete STUN header, the
// total size of that message (20 + length); 0 if fewer than 20 bytes are
// available. Does not validate beyond the header.
size_t message_size(std::span<const uint8_t> data);

}  // namespace turn::stun
