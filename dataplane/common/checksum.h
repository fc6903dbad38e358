// One's-complement arithmetic for incremental IPv4/IPv6 UDP checksum updates
// (RFC 1071, RFC 1624). Sums are in DPDK's representation: 16-bit words loaded
// natively from memory, as rte_raw_cksum() and rte_ipv4_phdr_cksum() produce,
// so they combine with those functions directly.
//
// The relay never verifies the UDP checksum of what it forwards: it derives the
// sum of the bytes it keeps from the old checksum, so a corrupted datagram keeps
// an invalid checksum and the receiving host still discards it, as a NAT would.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dpdk.h"

namespace dp::csum {

inline uint16_t fold(uint64_t s) {
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return static_cast<uint16_t>(s);
}
inline uint16_t neg(uint16_t a) { return static_cast<uint16_t>(~a); }

// Sum of `len` bytes that start at an offset of the given parity from the
// start of the checksummed region: a range that starts at an odd offset has
// its bytes in the other halves of the 16-bit words, i.e. byte-swapped.
inline uint16_t range(const void* p, size_t len, bool odd_offset) {
    const uint16_t s = rte_raw_cksum(p, len);
    return odd_offset ? static_cast<uint16_t>((s >> 8) | (s << 8)) : s;
}

inline uint16_t udp_header_sum(const rte_udp_hdr* u) {
    return fold(uint64_t{u->src_port} + u->dst_port + u->dgram_len);
}

// Sum of the UDP payload, derived from a datagram's checksum field, its
// pseudo-header sum and its header sum (checksum field excluded).
inline uint16_t payload_sum_from(uint16_t old_cksum, uint16_t pseudo, uint16_t udp_hdr) {
    return fold(uint64_t{neg(old_cksum)} + neg(pseudo) + neg(udp_hdr));
}

// The checksum field value for a datagram whose parts sum to `total`.
// RFC 768: a computed zero is sent as all ones.
inline uint16_t finish_udp(uint64_t total) {
    const uint16_t c = neg(fold(total));
    return c == 0 ? 0xffff : c;
}

}  // namespace dp::csum
