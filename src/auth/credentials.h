// Long-term credential keys, OpaqueString processing and USERHASH
// (RFC 8489 sections 9.2.2, 14.4, 18.5.1; RFC 8265 section 4.2).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "stun/constants.h"

namespace turn::auth {

using stun::PasswordAlgorithm;

// An HMAC key: 16 bytes for MD5-derived keys, 32 for SHA-256-derived ones.
struct Key {
    std::array<uint8_t, 32> bytes{};
    uint8_t len = 0;
    std::span<const uint8_t> span() const { return {bytes.data(), len}; }
    friend bool operator==(const Key&, const Key&) = default;
};

// RFC 8265 OpaqueString profile (PRECIS FreeformClass): valid UTF-8, non-ASCII
// space characters mapped to U+0020, Unicode NFC, and rejects control
// characters, default-ignorable code points and the empty string. Pure ASCII
// printable input is returned unchanged without touching the Unicode tables.
std::optional<std::string> opaque_string(std::string_view in);

// key = H(username ":" OpaqueString(realm) ":" OpaqueString(password)), H = MD5
// or SHA-256 per PASSWORD-ALGORITHM. nullopt if realm or password fail
// OpaqueString.
std::optional<Key> long_term_key(PasswordAlgorithm alg, std::string_view username,
                                 std::string_view realm, std::string_view password);

// USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
std::optional<std::array<uint8_t, 32>> userhash(std::string_view username, std::string_view realm);

// Base64 (RFC 4648, with padding) through OpenSSL.
std::string base64_encode(std::span<const uint8_t> data);
// Decodes standard base64 with padding; nullopt on any invalid input.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace turn::auth
