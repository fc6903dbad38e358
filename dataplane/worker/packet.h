// Per-packet state carried between the stages of one burst. Lives on the
// worker's stack (pipeline.cc), one per received mbuf; never in the mbuf.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dpdk.h"
#include "flow/key.h"
#include "nexthop/nexthop.h"
#include "worker/counters.h"

namespace dp {

constexpr uint16_t kBurst = 32;

// Where a packet goes after the stage that handled it. Each stage touches
// only the packets whose `next` names it, and sets `next` to one of the edges
// its header lists.
enum class Next : uint8_t {
    kLookup,   // classify  -> lookup
    kRoute,    // lookup    -> route (also express: found, for route and police to decide)
    kPolice,   // route     -> police
    kRewrite,  // police    -> rewrite
    kTx,       // rewrite   -> tx (out the NIC port of the next hop); also express
    kPunt,     // any stage -> exception port (kernel), reason in `reason`
    kDrop,     // any stage -> freed, reason in `reason`
};

enum class Kind : uint8_t {
    kNone,
    // classify
    kClientChannel,  // ChannelData to a listening address
    kClientSend,     // Send indication to a listening address
    kPeer,           // UDP to a non-listening address (maybe a relayed port)
    // lookup
    kToPeerChannel,  // ChannelData payload -> peer
    kToPeerSend,     // Send DATA -> peer
    kToClientChannel,  // peer payload -> client as ChannelData
    kToClientData,     // peer payload -> client as Data indication
};

struct Pkt {
    Pkt() {}  // stages fill what they use; nothing is zeroed per burst
    rte_mbuf* m;
    Next next;
    Kind kind;
    Counter reason;      // for kPunt / kDrop
    uint8_t family;      // 4 or 6, of the received packet
    uint8_t out_family;  // of the packet rewrite builds (differs when relaying between families)
    uint8_t key_family;  // of the key in k4/k6 (which table lookup searches)
    uint8_t* l3;         // received IP header
    rte_udp_hdr* udp;    // received UDP header
    uint16_t plen;       // UDP payload bytes (UDP length - 8)
    uint16_t data_off;   // forwarded bytes: offset in the UDP payload ...
    uint16_t data_len;   // ... and length (to-peer: ChannelData/DATA; to-client: all)
    uint16_t channel_be;
    uint16_t prefix_len; // bytes rewrite prepends to the data (to-client)
    uint8_t pad_len;     // zero bytes rewrite appends (Data indication padding)
    uint8_t peer_family; // Send: XOR-PEER-ADDRESS family
    uint16_t peer_port_be;
    uint8_t peer_ip[16]; // to-peer destination: Send's XOR-PEER-ADDRESS, or the channel's peer (lookup)
    uint32_t alloc;
    uint32_t sig;        // client packets: CRC of the kClient key (classify; lookup's cache and hash)
    union {
        NextHop nh;  // in a union: not zeroed for every packet of every burst (route fills it)
    };
    union alignas(8) {  // rte_hash_crc reads keys 8 bytes at a time
        Key4 k4;
        Key6 k6;
    };
};

static_assert(offsetof(Pkt, k4) % 8 == 0 && offsetof(Pkt, k6) % 8 == 0);

inline void punt(Pkt& p, Counter why) {
    p.next = Next::kPunt;
    p.reason = why;
}
inline void drop(Pkt& p, Counter why) {
    p.next = Next::kDrop;
    p.reason = why;
}

}  // namespace dp
