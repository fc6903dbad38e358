// One's-complement arithmetic for incremental IPv4/IPv6 UDP checksum updates
// (RFC 1071, RFC 1624). Sums are in DPDK's representation: 16-bit words loaded
// natively from memory, as rte_raw_cksum() and rte_ipv4_phdr_cksum() produce,
// so they combine with those functions directly.
//
// The relay never verifies the UDP checksum of what it forwards: it derives the
// sum of the bytes it keeps from the old checksum, so a corrupted datagram keeps
// an invalid checksum and the receiving host still discards it, as a NAT would.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/dpdk.h"

namespace dp::csum {

// Folds a sum of 16-bit words (any 64-bit value) to 16 bits. Adding a word
// to itself rotated by half its width leaves the end-around-carry sum of its
// two halves in the upper half (the carry out of the lower half lands there
// too): 64 -> 32 -> 16 bits in two rotate-adds (as Linux's csum_fold) instead
// of four mask-shift-add rounds. Same result as those: 0 only for a zero
// sum, otherwise the value in [1, 0xffff] congruent to it mod 0xffff.
inline uint16_t fold(uint64_t s) {
    s += std::rotr(s, 32);
    uint32_t t = static_cast<uint32_t>(s >> 32);
    t += std::rotr(t, 16);
    return static_cast<uint16_t>(t >> 16);
}
inline uint16_t neg(uint16_t a) { return static_cast<uint16_t>(~a); }

// Sum of a byte range, 8 bytes per step with an end-around carry (x86 add +
// adc; rte_raw_cksum goes 2 bytes per step and is not inlined well for the
// short ranges used here), folded to 32 bits at the end so that callers can
// keep adding words to it. Summing little-endian 64-bit loads with end-around
// carry is the same one's-complement sum as summing their 16-bit quarters
// (2^64 - 1 is a multiple of 0xffff); a trailing odd byte counts as a word
// with a zero second byte, as in rte_raw_cksum. Zero only for all-zero bytes.
inline uint64_t sum_bytes(const void* p, size_t len) {
    const auto* b = static_cast<const uint8_t*>(p);
    uint64_t s = 0;
    for (; len >= 8; len -= 8, b += 8) {
        uint64_t w;
        std::memcpy(&w, b, 8);
        s += w;
        s += s < w;
    }
    uint64_t t = 0;
    if (len >= 4) {
        uint32_t w;
        std::memcpy(&w, b, 4);
        t += w;
        b += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        std::memcpy(&w, b, 2);
        t += w;
        b += 2;
        len -= 2;
    }
    if (len != 0) {
        t += *b;
    }
    s += t;
    s += s < t;
    return (s + std::rotr(s, 32)) >> 32;
}

// Sum of `len` bytes that start at an offset of the given parity from the
// start of the checksummed region: a range that starts at an odd offset has
// its bytes in the other halves of the 16-bit words, i.e. byte-swapped.
inline uint16_t range(const void* p, size_t len, bool odd_offset) {
    const uint16_t s = fold(sum_bytes(p, len));
    return odd_offset ? static_cast<uint16_t>((s >> 8) | (s << 8)) : s;
}

// IPv4 header (no options) checksum field value, and validity check.
inline uint64_t sum20(const void* h) {
    uint32_t w[5];
    std::memcpy(w, h, 20);
    return uint64_t{w[0]} + w[1] + w[2] + w[3] + w[4];
}
inline uint16_t ipv4_header(const void* h) { return neg(fold(sum20(h))); }
inline bool ipv4_header_ok(const void* h) { return fold(sum20(h)) == 0xffff; }

// Unfolded sum of a UDP header without its checksum field.
inline uint64_t udp_header_sum(const rte_udp_hdr* u) { return uint64_t{u->src_port} + u->dst_port + u->dgram_len; }

// The checksum field value for a datagram whose parts sum to `total`.
// RFC 768: a computed zero is sent as all ones. fold(total + 1) is in
// [1, 0xffff] and one more than fold(total) unless that is 0xffff (a sum
// congruent to zero), so its two's complement negation is ~fold(total) with
// the zero case already mapped to 0xffff, without a compare. total must be
// below 2^64 - 1 (the callers' sums stay below 2^57).
inline uint16_t finish_udp(uint64_t total) { return static_cast<uint16_t>(-fold(total + 1)); }

}  // namespace dp::csum
