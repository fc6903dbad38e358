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
// Entry: tag << 24 | (allocation index + 1); 0 = empty. The tag is the top
// byte of the key's CRC (never 0), the bucket its low bits, so a bucket
// holds any 16 of the keys that map to it; a full bucket replaces a
// rotating victim. 4 bytes per allocation slot per worker (buckets: the
// allocation count rounded up to a power of two, / 16). Allocation indices
// must be below 2^24 - 1; larger tables run without the cache.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace dp {

struct ClientCache {
    static constexpr uint32_t kWays = 16;  // 64 bytes: one cache line
    static constexpr uint32_t kMaxAlloc = (1u << 24) - 2;

    uint32_t* e = nullptr;  // buckets * kWays, 64-byte aligned; nullptr = disabled
    uint32_t mask = 0;      // buckets - 1
    uint32_t victim = 0;
    uint64_t lookups = 0;   // client packets looked up (statistics, this worker only)
    uint64_t misses = 0;    // of which went to the hash

    static uint32_t tag_of(uint32_t sig) {
        const uint32_t t = sig >> 24;
        return t == 0 ? 1u : t;
    }
    const uint32_t* bucket(uint32_t sig) const { return e + size_t{sig & mask} * kWays; }
    uint32_t* bucket(uint32_t sig) { return e + size_t{sig & mask} * kWays; }

    // Bit i set: entry i of the bucket carries this tag.
    static uint32_t matches(const uint32_t* b, uint32_t sig) {
        const uint32_t tag = tag_of(sig) << 24;
#if defined(__SSE2__)
        const __m128i t = _mm_set1_epi32(static_cast<int>(tag));
        const __m128i m = _mm_set1_epi32(static_cast<int>(0xff000000u));
        const auto* v = reinterpret_cast<const __m128i*>(b);
        const __m128i e0 = _mm_cmpeq_epi32(_mm_and_si128(_mm_load_si128(v), m), t);
        const __m128i e1 = _mm_cmpeq_epi32(_mm_and_si128(_mm_load_si128(v + 1), m), t);
        const __m128i e2 = _mm_cmpeq_epi32(_mm_and_si128(_mm_load_si128(v + 2), m), t);
        const __m128i e3 = _mm_cmpeq_epi32(_mm_and_si128(_mm_load_si128(v + 3), m), t);
        // 32-bit all-ones/zero lanes -> 16-bit -> 8-bit, one byte per entry.
        const __m128i bytes = _mm_packs_epi16(_mm_packs_epi32(e0, e1), _mm_packs_epi32(e2, e3));
        return static_cast<uint32_t>(_mm_movemask_epi8(bytes));
#else
        uint32_t bits = 0;
        for (uint32_t i = 0; i < kWays; i++) {
            bits |= static_cast<uint32_t>((b[i] & 0xff000000u) == tag) << i;
        }
        return bits;
#endif
    }
    static uint32_t alloc_of(uint32_t entry) { return (entry & 0xffffffu) - 1; }

    // After a hash hit: remember sig -> alloc. `stale` is a bit mask of
    // entries that carried the tag but named another allocation (replaced
    // first), else an empty entry, else the rotating victim.
    void insert(uint32_t sig, uint32_t alloc, uint32_t stale) {
        if (alloc > kMaxAlloc) {
            return;
        }
        uint32_t* b = bucket(sig);
        uint32_t way;
        if (stale != 0) {
            way = static_cast<uint32_t>(__builtin_ctz(stale));
        } else {
            way = kWays;
            for (uint32_t i = 0; i < kWays; i++) {
                if (b[i] == 0) {
                    way = i;
                    break;
                }
            }
            if (way == kWays) {
                way = victim++ & (kWays - 1);
            }
        }
        b[way] = (tag_of(sig) << 24) | (alloc + 1);
    }
};

}  // namespace dp
