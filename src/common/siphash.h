// SipHash-1-3 (Aumasson & Bernstein), a keyed hash for hash tables whose keys
// a remote sender chooses (source addresses, peer addresses). With a random
// per-process key, nobody outside the process can compute which bucket a key
// lands in, so no one can flood a bucket. One compression and three
// finalisation rounds is the variant Rust and Python use for this purpose.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace turn {

struct SipKey {
    uint64_t k0 = 0;
    uint64_t k1 = 0;
};

// A per-process random key (OpenSSL RAND_bytes on first use).
const SipKey& process_sip_key();

namespace detail {
inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }
inline void sip_round(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
}
}  // namespace detail

inline uint64_t siphash13(const SipKey& key, const uint8_t* data, size_t len) {
    uint64_t v0 = 0x736f6d6570736575ULL ^ key.k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ key.k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ key.k0;
    uint64_t v3 = 0x7465646279746573ULL ^ key.k1;
    const size_t full = len & ~size_t{7};
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m;
        std::memcpy(&m, data + i, 8);  // little-endian hosts only (x86_64, arm64)
        v3 ^= m;
        detail::sip_round(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint64_t b = uint64_t{len} << 56;
    for (size_t i = 0; i < (len & 7); ++i) {
        b |= uint64_t{data[full + i]} << (8 * i);
    }
    v3 ^= b;
    detail::sip_round(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    detail::sip_round(v0, v1, v2, v3);
    detail::sip_round(v0, v1, v2, v3);
    detail::sip_round(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace turn
