// Per-worker exact-match cache in front of the kClient hash lookup (the
// idea of Open vSwitch's EMC): client address + listening address ->
// allocation index, one 64-byte bucket of 16 entries per lookup instead of
// rte_hash's two buckets and key (three random cache lines, ~130
// instructions in its bulk lookup).
//
// The cache is only a hint. Each worker owns its cache (no sharing, no
// atomics); the flow tables stay the authority. A hit names a candidate
// allocation that lookup.cc accepts only after checking the allocation's own
// line: live (acquire), and its family, client address and listening address
// equal to the packet's, which is exactly the kClient key (flow/apply.cc
// installs that key from the same fields). So a stale entry can never
// forward a packet the hash would not:
//   - a deleted allocation is marked not live before its kClient key is
//     removed (Applier::remove_alloc), so a hit on it falls back to the hash;
//   - an index reused for another client fails the address check; reused
//     for the same client it is that client's allocation now, as the hash
//     would say;
//   - fields are read after the acquire of `live` and cannot change before
//     this worker's next quiescent state (indices are reused only after a
//     grace period), as for any hash hit.
//
// Bucket (64 bytes): 16 one-byte tags (the top byte of the key's CRC, never
// 0; 0 = empty way), then 16 three-byte allocation indices. One SSE2 byte
// compare finds the ways with the packet's tag; the bucket comes from the
// CRC's low bits. A bucket holds any 16 of the keys that map to it; a full
// one replaces a rotating victim. Ways: 1.5 x the allocation count rounded up
// to a power of two; 4 bytes per way, so 6 to 12 bytes per allocation slot
// per worker.
// Allocation indices must fit 24 bits; larger tables run without the cache.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace dp {

struct ClientCache {
    static constexpr uint32_t kWays = 16;
    static constexpr uint32_t kBucketBytes = 64;  // one cache line
    static constexpr uint32_t kMaxAlloc = (1u << 24) - 1;

    uint8_t* e = nullptr;  // (mask + 1) buckets, 64-byte aligned; nullptr = disabled
    uint32_t mask = 0;     // buckets - 1
    uint32_t victim = 0;
    uint64_t lookups = 0;  // client packets looked up (statistics, this worker only)
    uint64_t misses = 0;   // of which went to the hash

    static uint8_t tag_of(uint32_t sig) {
        const auto t = static_cast<uint8_t>(sig >> 24);
        return t == 0 ? 1 : t;
    }
    uint8_t* bucket(uint32_t sig) const { return e + size_t{sig & mask} * kBucketBytes; }

    // Bit i set: way i of the bucket carries this tag.
    static uint32_t matches(const uint8_t* b, uint32_t sig) {
        const uint8_t tag = tag_of(sig);
#if defined(__SSE2__)
        const __m128i tags = _mm_load_si128(reinterpret_cast<const __m128i*>(b));
        return static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(tags, _mm_set1_epi8(static_cast<char>(tag)))));
#else
        uint32_t bits = 0;
        for (uint32_t i = 0; i < kWays; i++) {
            bits |= static_cast<uint32_t>(b[i] == tag) << i;
        }
        return bits;
#endif
    }
    // The index in way `way` (3 bytes, little-endian, after the 16 tags):
    // one 4-byte load ending at its last byte, which stays inside the bucket.
    static uint32_t alloc_at(const uint8_t* b, uint32_t way) {
        uint32_t v;
        std::memcpy(&v, b + kWays + 3 * way - 1, 4);
        return v >> 8;
    }

    // After a hash hit: remember sig -> alloc. `stale` is a bit mask of ways
    // that carried the tag but named another allocation (replaced first),
    // else an empty way, else the rotating victim.
    void insert(uint32_t sig, uint32_t alloc, uint32_t stale) {
        if (alloc > kMaxAlloc) {
            return;
        }
        uint8_t* b = bucket(sig);
        // Already there: several packets of one new flow in a burst all
        // missed, and each comes here.
        for (uint32_t m = matches(b, sig); m != 0; m &= m - 1) {
            if (alloc_at(b, static_cast<uint32_t>(__builtin_ctz(m))) == alloc) {
                return;
            }
        }
        uint32_t way;
        if (stale != 0) {
            way = static_cast<uint32_t>(__builtin_ctz(stale));
        } else {
            const void* empty = std::memchr(b, 0, kWays);
            way = empty != nullptr ? static_cast<uint32_t>(static_cast<const uint8_t*>(empty) - b) : victim++ & (kWays - 1);
        }
        b[way] = tag_of(sig);
        uint8_t* v = b + kWays + 3 * way;
        v[0] = static_cast<uint8_t>(alloc);
        v[1] = static_cast<uint8_t>(alloc >> 8);
        v[2] = static_cast<uint8_t>(alloc >> 16);
    }
};
static_assert(ClientCache::kWays + 3 * ClientCache::kWays == ClientCache::kBucketBytes);

}  // namespace dp
