// Stage 2: flow lookup, in bulk per address family (rte_hash_lookup_bulk_data
// hides the cache misses of one key behind the others'), in up to three
// rounds:
//   1. primary key from classify: kChannelIn (client ChannelData), kClient
//      (client Send), kChannelOut (peer packet with a channel);
//   2. kPermission (relayed addr, peer IP) for Sends and for peer packets
//      without a channel (RFC 8656 section 9: permissions are per IP);
//   3. the relayed-port array (flow/tables.h RelayPorts), only for peer
//      packets that missed both, to tell a relayed port (drop, never punt:
//      section 9) from anything else (punt).
//
// Cost (callgrind, IPv4, 10k flows, instructions/packet, incl. rte_hash):
// 219 ChannelData, 415 Send, 225 peer with channel, 336 peer with permission.
//
// Edges: kRoute; kPunt (miss); kDrop (no permission).
#include <cstring>

#include "worker/stages.h"

namespace dp {

namespace {

// Bulk lookup of the packets selected by `want` (index list), per family.
template <typename Fn>
void bulk(Worker& w, Pkt* p, const uint16_t* idx, uint16_t cnt, Fn&& on_result) {
    const void* k4[kBurst];
    const void* k6[kBurst];
    uint16_t i4[kBurst], i6[kBurst];
    uint16_t n4 = 0, n6 = 0;
    for (uint16_t j = 0; j < cnt; j++) {
        Pkt& q = p[idx[j]];
        if (q.key_family == 4) {
            i4[n4] = idx[j];
            k4[n4++] = &q.k4;
        } else {
            i6[n6] = idx[j];
            k6[n6++] = &q.k6;
        }
    }
    void* d[kBurst];
    hash_sig_t sig[kBurst];
    uint64_t hits = 0;
    if (n4 != 0) {
        // Signatures computed here with the table's function (CRC32-C,
        // flow/tables.cc) inline, not through its function pointer.
        for (uint16_t j = 0; j < n4; j++) {
            sig[j] = rte_hash_crc(k4[j], sizeof(Key4), 0);
        }
        rte_hash_lookup_with_hash_bulk_data(w.flows->h4, k4, sig, n4, &hits, d);
        for (uint16_t j = 0; j < n4; j++) {
            on_result(p[i4[j]], (hits >> j) & 1 ? d[j] : nullptr);
        }
    }
    if (n6 != 0) {
        hits = 0;
        for (uint16_t j = 0; j < n6; j++) {
            sig[j] = rte_hash_crc(k6[j], sizeof(Key6), 0);
        }
        rte_hash_lookup_with_hash_bulk_data(w.flows->h6, k6, sig, n6, &hits, d);
        for (uint16_t j = 0; j < n6; j++) {
            on_result(p[i6[j]], (hits >> j) & 1 ? d[j] : nullptr);
        }
    }
}

// Permission key: a = the allocation's relayed address of `family`, b = peer IP.
void permission_key(Pkt& q, uint8_t family, const uint8_t* relayed_ip, uint16_t relayed_port, const uint8_t* peer_ip) {
    q.key_family = family;
    if (family == 4) {
        q.k4 = Key4{};
        std::memcpy(&q.k4.a_ip, relayed_ip, 4);
        std::memcpy(&q.k4.b_ip, peer_ip, 4);
        q.k4.a_port = relayed_port;
        q.k4.kind = KeyKind::kPermission;
    } else {
        q.k6 = Key6{};
        std::memcpy(q.k6.a_ip, relayed_ip, 16);
        std::memcpy(q.k6.b_ip, peer_ip, 16);
        q.k6.a_port = relayed_port;
        q.k6.kind = KeyKind::kPermission;
    }
}

// The allocation and this worker's state for it are read by police and
// rewrite; start loading them while the rest of the burst is looked up.
inline void prefetch_alloc(Worker& w, uint32_t alloc) {
    rte_prefetch0(&w.flows->allocs[alloc]);
    rte_prefetch0(&w.state[alloc]);
}

}  // namespace

void lookup(Worker& w, Pkt* p, uint16_t n) {
    uint16_t idx[kBurst];
    uint16_t cnt = 0;
    for (uint16_t i = 0; i < n; i++) {
        if (p[i].next == Next::kLookup) {
            idx[cnt++] = i;
        }
    }
    if (cnt == 0) {
        return;
    }
    const Allocation* allocs = w.flows->allocs;

    // Round 1. Hits are only prefetched in the callback and handled in a
    // second pass, so the value/allocation cache misses of the whole burst
    // overlap instead of stalling one packet at a time.
    uint16_t again[kBurst];
    uint16_t nagain = 0;
    uint16_t hit[kBurst];
    uint16_t nhit = 0;
    void* hd[kBurst];
    bulk(w, p, idx, cnt, [&](Pkt& q, void* d) {
        const auto i = static_cast<uint16_t>(&q - p);
        if (d == nullptr) {
            if (q.kind == Kind::kPeer) {
                // No channel: a permission may still allow a Data indication.
                uint8_t* hdr = q.l3;
                if (q.family == 4) {
                    const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(hdr);
                    permission_key(q, 4, reinterpret_cast<const uint8_t*>(&ip->dst_addr), q.udp->dst_port,
                                   reinterpret_cast<const uint8_t*>(&ip->src_addr));
                } else {
                    const auto* ip = reinterpret_cast<const rte_ipv6_hdr*>(hdr);
                    permission_key(q, 6, ip->dst_addr, q.udp->dst_port, ip->src_addr);
                }
                again[nagain++] = i;
            } else {
                punt(q, Counter::punt_miss);
            }
            return;
        }
        hd[i] = d;
        hit[nhit++] = i;
        if (q.kind == Kind::kClientChannel) {
            rte_prefetch0(d);
        } else if (q.kind == Kind::kClientSend) {
            rte_prefetch0(&allocs[inline_alloc(d)]);
        } else {
            prefetch_alloc(w, inline_alloc(d));
        }
    });
    for (uint16_t j = 0; j < nhit; j++) {
        Pkt& q = p[hit[j]];
        void* d = hd[hit[j]];
        switch (q.kind) {
        case Kind::kClientChannel: {
            const auto* v = static_cast<const ChannelValue*>(d);
            q.out_family = v->family;  // the peer's; may differ from the client's
            q.value = v;
            q.alloc = v->alloc;
            prefetch_alloc(w, q.alloc);
            q.kind = Kind::kToPeerChannel;
            q.next = Next::kRoute;
            continue;
        }
        case Kind::kClientSend: {
            q.alloc = inline_alloc(d);
            rte_prefetch0(&w.state[q.alloc]);
            const Allocation& a = allocs[q.alloc];
            q.out_family = q.peer_family;  // permission lives with the relayed address of the peer's family
            if (q.peer_family == 4) {
                if (unlikely(a.relayed4_port == 0)) {
                    punt(q, Counter::punt_miss);
                    continue;
                }
                permission_key(q, 4, reinterpret_cast<const uint8_t*>(&a.relayed4_ip), a.relayed4_port, q.peer_ip);
            } else {
                if (unlikely(a.relayed6_port == 0)) {
                    punt(q, Counter::punt_miss);
                    continue;
                }
                permission_key(q, 6, w.flows->relayed6[q.alloc].ip, a.relayed6_port, q.peer_ip);
            }
            again[nagain++] = hit[j];
            continue;
        }
        default: {  // kPeer with a channel
            q.alloc = inline_alloc(d);
            q.channel_be = inline_channel(d);
            q.out_family = allocs[q.alloc].family;  // the client's
            q.kind = Kind::kToClientChannel;
            q.next = Next::kRoute;
            continue;
        }
        }
    }
    if (nagain == 0) {
        return;
    }

    // Round 2: permissions.
    uint16_t last[kBurst];
    uint16_t nlast = 0;
    bulk(w, p, again, nagain, [&](Pkt& q, void* d) {
        if (q.kind == Kind::kClientSend) {
            if (d == nullptr) {
                drop(q, Counter::drop_no_permission);  // RFC 8656 11.2: discard silently
                return;
            }
            q.kind = Kind::kToPeerSend;
            q.next = Next::kRoute;
            return;
        }
        if (d != nullptr) {
            q.alloc = inline_alloc(d);
            prefetch_alloc(w, q.alloc);
            q.out_family = allocs[q.alloc].family;
            q.kind = Kind::kToClientData;
            q.next = Next::kRoute;
            return;
        }
        last[nlast++] = static_cast<uint16_t>(&q - p);
    });

    // Round 3 (rare): is the destination an offloaded relayed address?
    for (uint16_t j = 0; j < nlast; j++) {
        Pkt& q = p[last[j]];
        const uint8_t* dst = q.family == 4 ? reinterpret_cast<const uint8_t*>(&reinterpret_cast<const rte_ipv4_hdr*>(q.l3)->dst_addr)
                                           : reinterpret_cast<const rte_ipv6_hdr*>(q.l3)->dst_addr;
        uint32_t alloc;
        if (w.flows->relay_ports->find(q.family, dst, q.udp->dst_port, &alloc)) {
            w.alloc_state(alloc).dropped_packets++;
            drop(q, Counter::drop_no_permission);
        } else {
            punt(q, Counter::punt_miss);
        }
    }
}

}  // namespace dp
