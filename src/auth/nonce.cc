// Stateless nonce cookies (RFC 8489 sections 9.2 and 18.1; see nonce.h for
// the format).
#include "auth/nonce.h"

#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "auth/credentials.h"
#include "common/bytes.h"
#include "stun/integrity.h"

namespace turn::auth {

namespace {

constexpr size_t kFeaturesChars = 4;   // base64 of 3 bytes
constexpr size_t kTimeDigits = 16;     // 64-bit issue time
constexpr size_t kMacBytes = 12;       // truncated HMAC-SHA256
constexpr size_t kMacDigits = 2 * kMacBytes;
constexpr size_t kNonceLength = kNonceCookie.size() + kFeaturesChars + kTimeDigits + kMacDigits;

// A nonce issued up to this many seconds "in the future" is still accepted:
// the clock the caller passes may step slightly backwards (NTP slew, or two
// threads reading it a moment apart). Anything further ahead is not one of
// ours and is rejected as invalid rather than trusted for a longer lifetime.
constexpr uint64_t kMaxFutureSkewS = 5;

constexpr char kHexDigits[] = "0123456789abcdef";

void put_hex(std::string& out, const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        out.push_back(kHexDigits[p[i] >> 4]);
        out.push_back(kHexDigits[p[i] & 0x0F]);
    }
}

// Lower-case hex only: the codec writes lower case, and accepting one
// spelling keeps the nonce's text unique.
int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

bool get_hex(std::string_view text, uint8_t* out) {
    for (size_t i = 0; i < text.size() / 2; ++i) {
        const int hi = hex_value(text[2 * i]);
        const int lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return true;
}

}  // namespace

// Secrets longer than 32 bytes are hashed down to 32 with SHA-256. Shorter ones
// are stored zero-padded, which leaves the HMAC unchanged: HMAC pads every key
// shorter than the digest block (64 bytes) with zeros (RFC 2104 section 2).
NonceCodec::NonceCodec(std::span<const uint8_t> secret, uint32_t lifetime_s)
    : lifetime_(lifetime_s) {
    // A short secret is guessable, an empty one is the all-zero key anyone can
    // use to mint nonces. Start-up only (configuration or tests), so throwing
    // is the clear error here.
    if (secret.size() < kMinSecret) {
        throw std::invalid_argument("nonce secret must be at least 16 bytes");
    }
    if (secret.size() <= secret_.size()) {
        std::copy(secret.begin(), secret.end(), secret_.begin());
    } else {
        unsigned int len = 0;
        if (EVP_Digest(secret.data(), secret.size(), secret_.data(), &len, EVP_sha256(),
                       nullptr) != 1) {
            // Should not happen; fail closed with a secret no one knows.
            (void)RAND_bytes(secret_.data(), static_cast<int>(secret_.size()));
        }
    }
}

NonceCodec::NonceCodec(uint32_t lifetime_s) : lifetime_(lifetime_s) {
    if (RAND_bytes(secret_.data(), static_cast<int>(secret_.size())) != 1) {
        // Without a random secret anyone could forge nonces; there is no safe
        // way to continue, and this only runs at start-up.
        std::abort();
    }
}

// HMAC-SHA256 over issue time (8 bytes), features (3 bytes), and the client's
// address family (1), IP (16, IPv4 zero-padded) and port (2). The client
// address is normalised so an IPv4 client seen through a dual-stack socket as
// ::ffff:a.b.c.d gets the same nonce either way.
void NonceCodec::mac(uint64_t issued, const Address& client, uint32_t features,
                     uint8_t out[12]) const {
    const Address c = client.normalised();
    uint8_t input[8 + 3 + 1 + 16 + 2] = {};
    store_be64(input, issued);
    input[8] = static_cast<uint8_t>(features >> 16);
    input[9] = static_cast<uint8_t>(features >> 8);
    input[10] = static_cast<uint8_t>(features);
    input[11] = static_cast<uint8_t>(c.family);
    std::memcpy(input + 12, c.ip.data(), 16);
    store_be16(input + 28, c.port);

    // The cached per-thread context of stun/integrity: the HMAC() one-shot
    // set up a new context per call and made issue+check cost ~2.4 us.
    uint8_t full[stun::kSha256Size];
    if (!stun::hmac_sha256(secret_, input, full)) {
        // Fail closed: a random MAC matches nothing.
        (void)RAND_bytes(full, kMacBytes);
    }
    std::memcpy(out, full, kMacBytes);
    OPENSSL_cleanse(full, sizeof full);
}

std::string NonceCodec::issue(const Address& client, uint64_t now_s, uint32_t features) const {
    features &= 0xFFFFFF;
    const uint8_t feature_bytes[3] = {static_cast<uint8_t>(features >> 16),
                                      static_cast<uint8_t>(features >> 8),
                                      static_cast<uint8_t>(features)};
    uint8_t time_bytes[8];
    store_be64(time_bytes, now_s);
    uint8_t tag[kMacBytes];
    mac(now_s, client, features, tag);

    std::string out;
    out.reserve(kNonceLength);
    out.append(kNonceCookie);
    out.append(base64_encode(feature_bytes));
    put_hex(out, time_bytes, sizeof time_bytes);
    put_hex(out, tag, sizeof tag);
    return out;
}

NonceStatus NonceCodec::check(std::string_view nonce, const Address& client, uint64_t now_s,
                              uint32_t* features_out) const {
    if (nonce.size() != kNonceLength || nonce.substr(0, kNonceCookie.size()) != kNonceCookie) {
        return NonceStatus::kInvalid;
    }
    size_t pos = kNonceCookie.size();
    const auto features_text = base64_decode(nonce.substr(pos, kFeaturesChars));
    pos += kFeaturesChars;
    if (!features_text || features_text->size() != 3) {
        return NonceStatus::kInvalid;
    }
    const auto* fb = reinterpret_cast<const uint8_t*>(features_text->data());
    const uint32_t features = uint32_t{fb[0]} << 16 | uint32_t{fb[1]} << 8 | uint32_t{fb[2]};
    uint8_t time_bytes[8];
    if (!get_hex(nonce.substr(pos, kTimeDigits), time_bytes)) {
        return NonceStatus::kInvalid;
    }
    pos += kTimeDigits;
    uint8_t tag[kMacBytes];
    if (!get_hex(nonce.substr(pos, kMacDigits), tag)) {
        return NonceStatus::kInvalid;
    }
    const uint64_t issued = load_be64(time_bytes);

    uint8_t expected[kMacBytes];
    mac(issued, client, features, expected);
    if (CRYPTO_memcmp(expected, tag, kMacBytes) != 0) {
        return NonceStatus::kInvalid;
    }
    if (issued > now_s && issued - now_s > kMaxFutureSkewS) {
        return NonceStatus::kInvalid;
    }
    if (features_out != nullptr) {
        *features_out = features;
    }
    if (issued < now_s && now_s - issued > lifetime_) {
        return NonceStatus::kStale;
    }
    return NonceStatus::kValid;
}

}  // namespace turn::auth
