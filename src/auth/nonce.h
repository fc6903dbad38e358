// Stateless nonce cookies (RFC 8489 section 9.2): the server keeps no per-client
// state; a nonce carries its issue time and an HMAC over (time, client address,
// features) under a server secret, so it is checked by recomputation.
//
// Format: "obMatJos2" + base64(24-bit security feature set, 4 characters)
//         + 16 hex digits issue time (seconds) + 24 hex digits truncated HMAC-SHA256.
// The "obMatJos2" prefix and feature bits are RFC 8489's nonce cookie, which
// tells clients the server supports PASSWORD-ALGORITHMS and USERHASH.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "net/address.h"

namespace turn::auth {

// RFC 8489 section 18.1: security feature bits. The RFC's errata for 18.1
// number the bits from the least significant end (bit 0 is the rightmost of
// the 24), which is what clients that read them do (libjuice) and what the
// Appendix B.1 nonce "obMatJos2AAAC..." (USERHASH only: 0x000002) shows.
constexpr uint32_t kFeaturePasswordAlgorithms = 1u << 0;
constexpr uint32_t kFeatureUsernameAnonymity = 1u << 1;

constexpr std::string_view kNonceCookie = "obMatJos2";

enum class NonceStatus : uint8_t {
    kValid,
    kStale,    // authentic but older than the lifetime: answer 438 with a new nonce
    kInvalid,  // not ours, tampered, or for another client address: answer 401
};

class NonceCodec {
public:
    static constexpr size_t kMinSecret = 16;
    // secret: at least kMinSecret random bytes (std::invalid_argument
    // otherwise); lifetime in seconds (RFC 8656 suggests one hour at most).
    NonceCodec(std::span<const uint8_t> secret, uint32_t lifetime_s);
    // A random secret from OpenSSL's RAND_bytes.
    explicit NonceCodec(uint32_t lifetime_s);

    std::string issue(const Address& client, uint64_t now_s, uint32_t features) const;
    // `features_out` receives the feature bits the nonce carries (if valid or stale).
    NonceStatus check(std::string_view nonce, const Address& client, uint64_t now_s,
                      uint32_t* features_out = nullptr) const;

    uint32_t lifetime() const { return lifetime_; }

private:
    void mac(uint64_t issued, const Address& client, uint32_t features, uint8_t out[12]) const;

    std::array<uint8_t, 32> secret_{};
    uint32_t lifetime_;
};

}  // namespace turn::auth
