// Builds a STUN message into a caller's buffer. No allocation; every byte
// written (padding included) is initialised. Overflow is sticky: once an
// attribute does not fit, ok() is false and nothing more is written, so a
// caller checks once at the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "net/address.h"
#include "stun/constants.h"

namespace turn::stun {


class MessageBuilder {
public:
    // Starts a message of `type` with `txid` in `buf`. buf must outlive the builder.
    MessageBuilder(std::span<uint8_t> buf, uint16_t type, std::span<const uint8_t, kTxIdSize> txid);
    MessageBuilder(std::span<uint8_t> buf, Method m, Class c, std::span<const uint8_t, kTxIdSize> txid)
        : MessageBuilder(buf, make_type(m, c), txid) {}

    bool ok() const { return ok_; }
    // Bytes written so far (header + attributes); the header length is kept current.
    size_t size() const { return size_; }
    std::span<const uint8_t> bytes() const { return {buf_.data(), ok_ ? size_ : 0}; }

    // Raw attribute; value is copied and zero-padded to 4 bytes.
    MessageBuilder& add(uint16_t type, std::span<const uint8_t> value);
    MessageBuilder& add_text(uint16_t type, std::string_view text);
    MessageBuilder& add_u32(uint16_t type, uint32_t v);        // LIFETIME, CONNECTION-ID
    MessageBuilder& add_u64(uint16_t type, uint64_t v);        // RESERVATION-TOKEN
    MessageBuilder& add_empty(uint16_t type);                  // DONT-FRAGMENT
    MessageBuilder& add_address(uint16_t type, const Address& a);      // MAPPED-ADDRESS etc.
    MessageBuilder& add_xor_address(uint16_t type, const Address& a);  // XOR-* addresses
    MessageBuilder& add_error_code(uint16_t code, std::string_view reason);
    // Uses error_reason(code) as the reason phrase.
    MessageBuilder& add_error_code(uint16_t code);
    MessageBuilder& add_unknown_attributes(std::span<const uint16_t> types);
    MessageBuilder& add_channel_number(uint16_t channel);
    MessageBuilder& add_requested_transport(uint8_t protocol);
    MessageBuilder& add_address_family(uint16_t type, Family f);  // REQUESTED-/ADDITIONAL-ADDRESS-FAMILY
    MessageBuilder& add_even_port(bool reserve_next);
    MessageBuilder& add_change_request(bool change_ip, bool change_port);
    MessageBuilder& add_response_port(uint16_t port);
    MessageBuilder& add_password_algorithm(PasswordAlgorithm alg);
    MessageBuilder& add_password_algorithms(std::span<const PasswordAlgorithm> algs);
    MessageBuilder& add_address_error_code(Family f, uint16_t code, std::string_view reason);
    MessageBuilder& add_icmp(uint8_t type, uint8_t code, uint32_t error_data);
    // PADDING (RFC 5780): `len` zero bytes.
    MessageBuilder& add_padding(size_t len);

    // MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over the message so far, the
    // header length counting the MESSAGE-INTEGRITY attribute (RFC 8489 14.5).
    MessageBuilder& add_message_integrity(std::span<const uint8_t> key);
    // MESSAGE-INTEGRITY-SHA256, full 32 bytes (RFC 8489 14.6).
    MessageBuilder& add_message_integrity_sha256(std::span<const uint8_t> key);
    // FINGERPRINT: CRC-32 xor 0x5354554e; must be the last attribute.
    MessageBuilder& add_fingerprint();

    // Reserves space for an attribute of `len` bytes and returns it for the
    // caller to fill (e.g. DATA written in place); empty span on overflow.
    std::span<uint8_t> reserve(uint16_t type, size_t len);

private:
    uint8_t* begin_attr(uint16_t type, size_t len);

    std::span<uint8_t> buf_;
    size_t size_ = 0;
    bool ok_ = true;
};

}  // namespace turn::stun
