// Helpers shared by the STUN unit tests: a raw message writer that can
// produce malformed messages the real builder refuses to write.
//
// RawMessage is deliberately independent of MessageBuilder, so the parser
// tests do not trust the code under test to produce their inputs.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "stun/attributes.h"
#include "stun/constants.h"
#include "stun/message.h"

namespace turn::stun {
namespace testutil {

// The transaction ID of RFC 5769 section 2.2/2.3 (so XOR vectors can be reused).
constexpr std::array<uint8_t, kTxIdSize> kTxId = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
                                                  0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

inline std::vector<uint8_t> filled(size_t n, uint8_t byte) { return std::vector<uint8_t>(n, byte); }

inline std::vector<uint8_t> text_bytes(std::string_view s) {
    return std::vector<uint8_t>(s.begin(), s.end());
}

// Writes a STUN message byte by byte. The header length field tracks the
// bytes appended unless set_header_length() pins it.
class RawMessage {
public:
    explicit RawMessage(uint16_t type = make_type(Method::kBinding, Class::kRequest),
                        std::span<const uint8_t, kTxIdSize> txid = kTxId) {
        bytes_.resize(kHeaderSize);
        store_be16(bytes_.data(), type);
        store_be32(bytes_.data() + 4, kMagicCookie);
        std::copy(txid.begin(), txid.end(), bytes_.begin() + 8);
        sync();
    }

    // A well-formed attribute: header, value, zero padding to 4.
    RawMessage& attr(uint16_t type, std::span<const uint8_t> value) {
        return attr_with(type, static_cast<uint16_t>(value.size()), value, pad4(static_cast<uint32_t>(value.size())) - value.size(), 0);
    }
    RawMessage& attr(uint16_t type, std::string_view text) {
        const auto v = text_bytes(text);
        return attr(type, v);
    }
    RawMessage& attr(uint16_t type, size_t value_len, uint8_t fill = 0x5A) {
        const auto v = filled(value_len, fill);
        return attr(type, v);
    }
    // Full control: declared length, the value bytes actually written, and
    // how many padding bytes (of `pad_byte`) follow.
    RawMessage& attr_with(uint16_t type, uint16_t declared_len, std::span<const uint8_t> value,
                          size_t pad_count, uint8_t pad_byte) {
        uint8_t h[4];
        store_be16(h, type);
        store_be16(h + 2, declared_len);
        raw(h);
        raw(value);
        bytes_.insert(bytes_.end(), pad_count, pad_byte);
        sync();
        return *this;
    }
    RawMessage& raw(std::span<const uint8_t> b) {
        bytes_.insert(bytes_.end(), b.begin(), b.end());
        sync();
        return *this;
    }
    RawMessage& set_header_length(uint16_t len) {
        pinned_ = true;
        store_be16(bytes_.data() + 2, len);
        return *this;
    }
    RawMessage& set_byte(size_t i, uint8_t v) {
        bytes_.at(i) = v;
        return *this;
    }

    const std::vector<uint8_t>& bytes() const { return bytes_; }
    std::span<const uint8_t> span() const { return bytes_; }
    size_t size() const { return bytes_.size(); }

private:
    void sync() {
        if (!pinned_) {
            store_be16(bytes_.data() + 2, static_cast<uint16_t>(bytes_.size() - kHeaderSize));
        }
    }
    std::vector<uint8_t> bytes_;
    bool pinned_ = false;
};

inline std::vector<uint8_t> to_vec(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

inline std::string_view as_text(std::span<const uint8_t> s) {
    return {reinterpret_cast<const char*>(s.data()), s.size()};
}

}  // namespace testutil
}  // namespace turn::stun
