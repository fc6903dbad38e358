// MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
// (RFC 8489 sections 14.5-14.7), computed with OpenSSL and zlib. The HMAC is
// taken over the message up to the attribute with the header length rewritten
// to end just after it, without copying the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "stun/message.h"

namespace turn::stun {

constexpr uint32_t kFingerprintXor = 0x5354554e;
constexpr size_t kSha1Size = 20;
constexpr size_t kSha256Size = 32;

// HMAC of the first `prefix_len` bytes of `msg` with the header length field
// replaced by `length_field`. Writes 20 (SHA-1) or 32 (SHA-256) bytes.
void hmac_sha1_stun(std::span<const uint8_t> key, std::span<const uint8_t> msg, size_t prefix_len,
                    uint16_t length_field, uint8_t out[kSha1Size]);
void hmac_sha256_stun(std::span<const uint8_t> key, std::span<const uint8_t> msg, size_t prefix_len,
                      uint16_t length_field, uint8_t out[kSha256Size]);

// Plain HMAC-SHA256 of `data` on the same cached per-thread context (for
// nonce cookies and other server-side MACs). False (and `out` zeroed) if
// OpenSSL fails.
bool hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data,
                 uint8_t out[kSha256Size]);

// CRC-32 (ISO-HDLC, as zlib) of `data`, xor 0x5354554e.
uint32_t fingerprint_value(std::span<const uint8_t> data);

// Verification against a parsed message; false if the attribute is absent or
// wrong. Comparisons are constant-time (CRYPTO_memcmp).
bool verify_message_integrity(const MessageView& m, std::span<const uint8_t> key);
// MESSAGE-INTEGRITY-SHA256 shorter than min_len (16..32) fails; TURN (RFC
// 8656) allows no truncation, hence the default.
bool verify_message_integrity_sha256(const MessageView& m, std::span<const uint8_t> key,
                                     size_t min_len = kSha256Size);
bool verify_fingerprint(const MessageView& m);

// Constant-time equality of two byte strings of equal length.
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace turn::stun
