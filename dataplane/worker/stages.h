// The packet stages, one per file, in pipeline order. Each takes the whole
// burst and handles only the packets whose Pkt::next names it.
//
//   classify.cc  (rx)     -> kLookup | kPunt | kDrop
//   lookup.cc   kLookup   -> kRoute  | kPunt (miss) | kDrop (no permission)
//   route.cc    kRoute    -> kPolice | kPunt (no next hop, MTU, headroom)
//   police.cc   kPolice   -> kRewrite | kDrop (rate limited)
//   rewrite.cc  kRewrite  -> kTx
//   tx.cc       kTx/kPunt/kDrop -> NIC tx, exception tx, free
#pragma once

#include <cstdint>
#include <cstring>

#include "worker/packet.h"
#include "worker/worker.h"

namespace dp {

void classify(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n);
// Tests only: classify's general parser alone, without the IPv4 fast path
// (and without start_lookup), to compare the two on the same frames.
void classify_general_only(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n);
void lookup(Worker& w, Pkt* p, uint16_t n);
void route(Worker& w, Pkt* p, uint16_t n);
void police(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc);
void rewrite(Worker& w, Pkt* p, uint16_t n);
void tx(Worker& w, Pkt* p, uint16_t n);

// Helpers shared by the stages: unaligned big-endian loads and stores. The
// builtins, not rte_be_to_cpu_*: DPDK's byte swap is an asm statement on
// x86, which the compiler cannot fold into loads and compares.
inline uint16_t load_be16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap16(v) : v;
}
inline uint32_t load_be32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap32(v) : v;
}
inline void store_be16(uint8_t* p, uint16_t v) {
    v = RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap16(v) : v;
    std::memcpy(p, &v, 2);
}
// Unaligned loads and stores in the CPU's byte order (headers read and
// written as whole words).
inline uint32_t load32(const void* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline uint64_t load64(const void* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline void store32(void* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void store64(void* p, uint64_t v) { std::memcpy(p, &v, 8); }

}  // namespace dp
