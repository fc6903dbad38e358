// Typed decoding of STUN/TURN attribute values. Each decoder checks the value
// length and contents and returns a precise AttrError; none reads outside the
// attribute's value. Encoders live in builder.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "net/address.h"
#include "stun/constants.h"
#include "stun/message.h"

namespace turn::stun {

enum class AttrError : uint8_t {
    kOk = 0,
    kBadLength,        // value length wrong for this attribute type (or for its family)
    kBadFamily,        // address family byte not 0x01/0x02
    kBadValue,         // a reserved field, class/number, or enumerated value is invalid
    kTooLong,          // text longer than the RFC allows (e.g. USERNAME > 513 bytes)
    kBadUtf8,          // text attribute is not valid UTF-8
};

std::string_view to_string(AttrError e);

// Maximum value lengths a receiver accepts (RFC 8489 section 14: senders stay
// below 509 bytes, receivers "MUST be able to parse" up to 763).
constexpr size_t kMaxUsername = 763;
constexpr size_t kMaxRealm = 763;      // < 128 characters, up to 763 bytes
constexpr size_t kMaxNonce = 763;
constexpr size_t kMaxSoftware = 763;
constexpr size_t kMaxReason = 763;
constexpr size_t kMaxAlternateDomain = 255;
// What this implementation writes: fewer than 509 bytes (RFC 8489 14.3, 14.8,
// 14.9, 14.10, 14.14).
constexpr size_t kMaxSendText = 508;

// MAPPED-ADDRESS, ALTERNATE-SERVER, RESPONSE-ORIGIN, OTHER-ADDRESS.
AttrError decode_address(std::span<const uint8_t> value, Address& out);
// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS.
AttrError decode_xor_address(std::span<const uint8_t> value,
                             std::span<const uint8_t, kTxIdSize> txid, Address& out);

// USERNAME, REALM, NONCE, SOFTWARE, ALTERNATE-DOMAIN: UTF-8 text with a
// per-type length bound.
AttrError decode_text(std::span<const uint8_t> value, size_t max_len, std::string_view& out);

struct ErrorCodeValue {
    uint16_t code = 0;          // 300..699
    std::string_view reason;
};
AttrError decode_error_code(std::span<const uint8_t> value, ErrorCodeValue& out);

// UNKNOWN-ATTRIBUTES: a list of 16-bit types (even count not required).
// Writes up to out.size() entries, sets `count`.
AttrError decode_unknown_attributes(std::span<const uint8_t> value, std::span<uint16_t> out,
                                    size_t& count);

// LIFETIME (seconds), CHANNEL-NUMBER, REQUESTED-TRANSPORT, REQUESTED-ADDRESS-FAMILY,
// ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT, RESERVATION-TOKEN, CHANGE-REQUEST,
// RESPONSE-PORT, CONNECTION-ID, PASSWORD-ALGORITHM(S), USERHASH, ICMP,
// ADDRESS-ERROR-CODE.
AttrError decode_u32(std::span<const uint8_t> value, uint32_t& out);  // LIFETIME, CONNECTION-ID
// CHANNEL-NUMBER: 16-bit number + RFFU; number is not range-checked here.
AttrError decode_channel_number(std::span<const uint8_t> value, uint16_t& out);
// REQUESTED-TRANSPORT: protocol byte + 3 RFFU.
AttrError decode_requested_transport(std::span<const uint8_t> value, uint8_t& protocol);
// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: family byte (0x01 / 0x02).
AttrError decode_address_family(std::span<const uint8_t> value, Family& out);
// EVEN-PORT: one byte, the R bit is the top bit.
AttrError decode_even_port(std::span<const uint8_t> value, bool& reserve_next);
// RESERVATION-TOKEN: 8 opaque bytes.
AttrError decode_reservation_token(std::span<const uint8_t> value, uint64_t& out);
// CHANGE-REQUEST (RFC 5780): flags A (change IP, 0x4) and B (change port, 0x2).
struct ChangeRequest {
    bool change_ip = false;
    bool change_port = false;
};
AttrError decode_change_request(std::span<const uint8_t> value, ChangeRequest& out);
// RESPONSE-PORT (RFC 5780): 16-bit port + 16 bits padding.
AttrError decode_response_port(std::span<const uint8_t> value, uint16_t& port);

// PASSWORD-ALGORITHM: algorithm + parameters length + parameters.
struct PasswordAlgorithmValue {
    uint16_t algorithm = 0;
    std::span<const uint8_t> params;
};
AttrError decode_password_algorithm(std::span<const uint8_t> value, PasswordAlgorithmValue& out);
// PASSWORD-ALGORITHMS: a list of PASSWORD-ALGORITHM entries, each padded to 4.
// Writes up to out.size() entries.
AttrError decode_password_algorithms(std::span<const uint8_t> value,
                                     std::span<PasswordAlgorithmValue> out, size_t& count);

// USERHASH: 32 bytes (SHA-256).
AttrError decode_userhash(std::span<const uint8_t> value, std::span<const uint8_t>& out);

// ICMP (RFC 8656 section 18.13): 2 bytes reserved, type, code, 4 bytes error data.
struct IcmpValue {
    uint8_t type = 0;
    uint8_t code = 0;
    uint32_t error_data = 0;
};
AttrError decode_icmp(std::span<const uint8_t> value, IcmpValue& out);

// ADDRESS-ERROR-CODE (RFC 8656 section 18.12): family, reserved, class/number, reason.
struct AddressErrorValue {
    Family family = Family::kNone;
    uint16_t code = 0;
    std::string_view reason;
};
AttrError decode_address_error_code(std::span<const uint8_t> value, AddressErrorValue& out);

// DONT-FRAGMENT and other flag attributes must be empty.
AttrError decode_empty(std::span<const uint8_t> value);

}  // namespace turn::stun
