// Stage 2: flow lookup. Allocations first, then what the allocation's own
// line cannot answer, in bulk per address family
// (rte_hash_lookup_with_hash_bulk_data hides the cache misses of one key
// behind the others'):
//   1. the allocation: client packets by kClient (listen addr, client addr),
//      first in this worker's ClientCache (flow/client_cache.h: one cache
//      line, the candidate checked against the allocation's own line), its
//      misses in the hash (which refills the cache); peer packets by their
//      destination in the relayed-port array (flow/tables.h RelayPorts; no
//      such relayed port: punt);
//   2. the allocation's channel slots (flow/tables.h ChanSlot): client
//      ChannelData by channel number, peer packets by source address;
//   3. the hash for the rest: kChannelIn / kChannelOut (only while the
//      allocation has channels outside its slots), then kPermission
//      (relayed addr, peer IP) for Sends and peer packets without a channel
//      (RFC 8656 section 9: permissions are per IP; a peer packet's miss is a
//      drop, never a punt; a Send's is punted: permissions for a peer on an
//      external IP are not offloaded).
//
// Cost (callgrind, IPv4, 10k flows, instructions/packet, stage inclusive):
// client ChannelData 127 (was 222 with every client packet in rte_hash's
// bulk lookup, ~133 of them inside rte_hash), peer ChannelData 112, Send and
// Data indications ~320 (their permission is a hash lookup).
//
// The express lane (express.cc) finds ChannelData on slot channels itself
// (the client cache's candidate checked with owns4 or owns6, or the relayed
// port's word, then the slot); this stage sees the rest.
//
// Edges: kRoute; kPunt (miss); kDrop (no permission).
#include <cstring>

#include "worker/stages.h"

namespace dp {

namespace {

// Bulk lookup of the packets selected by `idx`, per family. With `have_sig`
// their Pkt::sig is the key's signature already (classify's, kClient keys).
template <typename Fn>
void bulk(Worker& w, Pkt* p, const uint16_t* idx, uint16_t cnt, bool have_sig, Fn&& on_result) {
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
            sig[j] = have_sig ? p[i4[j]].sig : rte_hash_crc(k4[j], sizeof(Key4), 0);
        }
        rte_hash_lookup_with_hash_bulk_data(w.flows->h4, k4, sig, n4, &hits, d);
        for (uint16_t j = 0; j < n4; j++) {
            on_result(p[i4[j]], (hits >> j) & 1 ? d[j] : nullptr);
        }
    }
    if (n6 != 0) {
        hits = 0;
        for (uint16_t j = 0; j < n6; j++) {
            sig[j] = have_sig ? p[i6[j]].sig : rte_hash_crc(k6[j], sizeof(Key6), 0);
        }
        rte_hash_lookup_with_hash_bulk_data(w.flows->h6, k6, sig, n6, &hits, d);
        for (uint16_t j = 0; j < n6; j++) {
            on_result(p[i6[j]], (hits >> j) & 1 ? d[j] : nullptr);
        }
    }
}

// Permission keys: a = the allocation's relayed address of the peer's
// family (IPv6: its IP's index in RelayPorts), b = peer IP.
void permission_key4(Pkt& q, uint32_t relayed_ip, uint16_t relayed_port, const uint8_t* peer_ip) {
    q.key_family = 4;
    q.k4 = Key4{};
    q.k4.a_ip = relayed_ip;
    std::memcpy(&q.k4.b_ip, peer_ip, 4);
    q.k4.a_port = relayed_port;
    q.k4.kind = KeyKind::kPermission;
}
void permission_key6(Pkt& q, uint8_t relayed_index, uint16_t relayed_port, const uint8_t* peer_ip) {
    q.key_family = 6;
    q.k6 = Key6{};
    q.k6.a = relayed_index;
    std::memcpy(q.k6.b_ip, peer_ip, 16);
    q.k6.a_port = relayed_port;
    q.k6.kind = KeyKind::kPermission;
}

// The allocation and this worker's state for it are read by police and
// rewrite; start loading them while the rest of the burst is looked up.
inline void prefetch_alloc(const Allocation* allocs, const AllocState* state, uint32_t alloc) {
    rte_prefetch0(&allocs[alloc]);
    rte_prefetch0(&state[alloc]);
}

// The packet's source as a permission key for its allocation's relayed
// address (IPv6: its index, round 1 of lookup() put it in the kChannelOut key).
void peer_permission_key(Pkt& q) {
    if (q.family == 4) {
        const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(q.l3);
        permission_key4(q, ip->dst_addr, q.udp->dst_port, reinterpret_cast<const uint8_t*>(&ip->src_addr));
    } else {
        const auto* ip = reinterpret_cast<const rte_ipv6_hdr*>(q.l3);
        permission_key6(q, q.k6.a, q.udp->dst_port, ip->src_addr);
    }
}

KeyKind key_kind(const Pkt& q) { return q.key_family == 4 ? q.k4.kind : q.k6.kind; }

// Whether allocation `a` is the one the packet's kClient key names
// (flow/client_cache.h): live, and the key's addresses are its own.
bool owns(const Allocation& a, const ListenSet& l, const Pkt& q) {
    if (q.key_family == 4) {
        return owns4(a, l, q.k4.b_ip, q.k4.b_port, q.k4.a_ip, q.k4.a_port);
    }
    return owns6(a, q.k6);
}

// Round 2 for one packet whose allocation is known: the allocation's line
// (channel slots, relayed addresses) finishes it or queues it in again[]
// for the hash (kChannelIn/kChannelOut, kPermission).
inline void with_alloc(Worker& w, Pkt* p, uint16_t i, uint16_t* again, uint16_t& nagain) {
    Pkt& q = p[i];
    const Allocation& a = w.flows->allocs[q.alloc];
    switch (q.kind) {
    case Kind::kClientChannel: {
        if (const ChanSlot* s = slot_of_channel(a, q.channel_be); likely(s != nullptr)) {
            std::memcpy(q.peer_ip, &s->peer_ip, 4);
            q.peer_port_be = s->peer_port;
            q.out_family = 4;
            q.kind = Kind::kToPeerChannel;
            q.next = Next::kRoute;
        } else if (const ChanSlot6* s6 = slot6_of_channel(a, q.channel_be); s6 != nullptr) {
            std::memcpy(q.peer_ip, s6->peer_ip, 16);
            q.peer_port_be = s6->peer_port;
            q.out_family = 6;
            q.kind = Kind::kToPeerChannel;
            q.next = Next::kRoute;
        } else if (a.hashed.load(std::memory_order_acquire) != 0) {
            // kChannelIn: the kClient key plus the channel number.
            if (q.key_family == 4) {
                q.k4.kind = KeyKind::kChannelIn;
                q.k4.channel = q.channel_be;
            } else {
                q.k6.kind = KeyKind::kChannelIn;
                q.k6.channel = q.channel_be;
            }
            again[nagain++] = i;
        } else {
            punt(q, Counter::punt_miss);
        }
        return;
    }
    case Kind::kClientSend: {
        q.out_family = q.peer_family;  // permission lives with the relayed address of the peer's family
        if (q.peer_family == 4) {
            if (unlikely(a.relayed4_port == 0)) {
                punt(q, Counter::punt_miss);
                return;
            }
            permission_key4(q, a.v4.ip, a.relayed4_port, q.peer_ip);
        } else {
            if (unlikely(a.relayed6_port == 0)) {
                punt(q, Counter::punt_miss);
                return;
            }
            permission_key6(q, a.relayed6_ip, a.relayed6_port, q.peer_ip);
        }
        again[nagain++] = i;
        return;
    }
    default: {  // kPeer: slots hold peers on the relayed address of their family
        const uint16_t ch = q.family == 4
                                ? channel_of_peer(a, reinterpret_cast<const rte_ipv4_hdr*>(q.l3)->src_addr, q.udp->src_port)
                                : channel_of_peer6(a, reinterpret_cast<const rte_ipv6_hdr*>(q.l3)->src_addr, q.udp->src_port);
        if (ch != 0) {
            q.channel_be = ch;
            q.out_family = a.family;  // the client's
            q.kind = Kind::kToClientChannel;
            q.next = Next::kRoute;
            return;
        }
        if (a.hashed.load(std::memory_order_acquire) == 0) {
            peer_permission_key(q);  // else classify's kChannelOut key first
        }
        again[nagain++] = i;
        return;
    }
    }
}

// Client packets (kClient keys, both families): the worker's cache first,
// checked against the allocation's line; its misses through one bulk hash
// lookup (reusing the signatures), whose hits refill the cache. Cache hits
// go on through with_alloc at once; hash hits are appended to hit[] with
// the allocation line and state prefetched; misses are punted.
void client_allocs(Worker& w, Pkt* p, const uint16_t* cl, uint16_t ncl, uint16_t* hit, uint16_t& nhit,
                   uint16_t* again, uint16_t& nagain) {
    const Allocation* allocs = w.flows->allocs;
    const AllocState* state = w.state;
    ClientCache& c = w.cache;
    uint16_t miss[kBurst];
    uint16_t nmiss = 0;
    uint32_t stale[kBurst];  // by packet index, set for misses when the cache is on: tags that named another allocation
    if (c.e == nullptr) {
        std::memcpy(miss, cl, sizeof(uint16_t) * ncl);
        nmiss = ncl;
    } else {
        // Buckets (prefetched by classify) name candidates, whose
        // allocation line and state are requested kAllocAhead packets before
        // the candidate is checked (see kAllocAhead).
        uint32_t cand[kBurst];
        const uint8_t* bk[kBurst];
        const ListenSet& l = *w.flows->listen;
        auto request = [&](uint16_t j) {
            const uint32_t sig = p[cl[j]].sig;
            const uint8_t* b = c.bucket(sig);
            bk[j] = b;
            cand[j] = ClientCache::matches(b, sig);
            if (cand[j] != 0) {
                prefetch_alloc(allocs, state, ClientCache::alloc_at(b, static_cast<uint32_t>(__builtin_ctz(cand[j]))));
            }
        };
        auto check = [&](uint16_t j) {
            Pkt& q = p[cl[j]];
            uint32_t bad = 0;
            uint32_t m = cand[j];
            while (m != 0) {
                const auto way = static_cast<uint32_t>(__builtin_ctz(m));
                m &= m - 1;
                const uint32_t a = ClientCache::alloc_at(bk[j], way);
                if (likely(owns(allocs[a], l, q))) {
                    q.alloc = a;
                    with_alloc(w, p, cl[j], again, nagain);  // its line is in cache now
                    return;
                }
                bad |= 1u << way;
            }
            stale[cl[j]] = bad;
            miss[nmiss++] = cl[j];
        };
        paced(ncl, request, check);
        c.lookups += ncl;
        c.misses += nmiss;
    }
    if (nmiss == 0) {
        return;
    }
    bulk(w, p, miss, nmiss, true, [&](Pkt& q, void* d) {
        if (d == nullptr) {
            punt(q, Counter::punt_miss);
            return;
        }
        q.alloc = inline_alloc(d);
        const auto i = static_cast<uint16_t>(&q - p);
        if (c.e != nullptr) {
            c.insert(q.sig, q.alloc, stale[i]);
        }
        prefetch_alloc(allocs, state, q.alloc);
        hit[nhit++] = i;
    });
}

}  // namespace

void lookup(Worker& w, Pkt* p, uint16_t n) {
    const Allocation* allocs = w.flows->allocs;
    // Round 1: the allocation. Peer packets through the relayed-port array
    // (the word prefetched now, read after the client packets), client
    // packets through the worker's cache (hits finished at once by
    // with_alloc) and the misses through one bulk hash lookup; the
    // allocation lines and this worker's states are prefetched
    // kAllocAhead packets ahead of their use, so the burst's misses overlap.
    uint16_t cl[kBurst];
    uint16_t ncl = 0;
    uint16_t pe[kBurst];
    uint16_t npe = 0;
    const std::atomic<uint32_t>* word[kBurst];
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kLookup) {
            continue;
        }
        if (q.kind != Kind::kPeer) {
            cl[ncl++] = i;
            continue;
        }
        // The relayed port's word: prefetched now, read after the client
        // lookups, so the burst's misses overlap.
        // (IPv6: the relayed IP's index is the `a` of the packet's keys.)
        const uint8_t* dst = q.family == 4 ? reinterpret_cast<const uint8_t*>(&reinterpret_cast<const rte_ipv4_hdr*>(q.l3)->dst_addr)
                                           : reinterpret_cast<const rte_ipv6_hdr*>(q.l3)->dst_addr;
        const RelayPorts& rp = *w.flows->relay_ports;
        const uint32_t ri = rp.index_of(q.family, dst);
        word[npe] = ri == UINT32_MAX ? nullptr : rp.word_at(ri, q.udp->dst_port);
        if (q.family == 6) {
            q.k6.a = static_cast<uint8_t>(ri);
        }
        if (word[npe] == nullptr) {
            punt(q, Counter::punt_miss);  // not an offloaded relayed port
            continue;
        }
        rte_prefetch0(word[npe]);
        pe[npe++] = i;
    }
    uint16_t hit[kBurst];
    uint16_t nhit = 0;
    uint16_t again[kBurst];
    uint16_t nagain = 0;
    if (ncl != 0) {
        client_allocs(w, p, cl, ncl, hit, nhit, again, nagain);
    }
    // Peer packets: the word names the allocation, whose line and state are
    // requested kAllocAhead packets before with_alloc reads them.
    auto resolve = [&](uint16_t j) {
        Pkt& q = p[pe[j]];
        const uint32_t v = word[j]->load(std::memory_order_acquire);
        if (v == 0) {
            punt(q, Counter::punt_miss);
            return;
        }
        q.alloc = v - 1;
        prefetch_alloc(allocs, w.state, q.alloc);
    };
    paced(npe, resolve, [&](uint16_t j) {
        if (p[pe[j]].next == Next::kLookup) {  // not punted by resolve
            with_alloc(w, p, pe[j], again, nagain);
        }
    });

    // Round 2: the allocation's line for those the hash found (cache hits
    // and peer packets went through with_alloc already).
    for (uint16_t j = 0; j < nhit; j++) {
        with_alloc(w, p, hit[j], again, nagain);
    }

    // Rounds 3 and 4: kChannelIn / kChannelOut, kPermission.
    while (nagain != 0) {
        uint16_t next[kBurst];
        uint16_t nnext = 0;
        bulk(w, p, again, nagain, false, [&](Pkt& q, void* d) {
            switch (key_kind(q)) {
            case KeyKind::kChannelIn: {
                if (d == nullptr) {
                    punt(q, Counter::punt_miss);
                    return;
                }
                const auto* v = static_cast<const ChannelValue*>(d);
                const Allocation& a = allocs[q.alloc];
                if (unlikely((v->family == 4 ? a.relayed4_port : a.relayed6_port) == 0)) {
                    // No relayed address of the peer's family to send from
                    // (a control plane that bound such a channel): its
                    // line's last bytes may be slot6, not an IPv4 address.
                    punt(q, Counter::punt_miss);
                    return;
                }
                std::memcpy(q.peer_ip, v->peer_ip, 16);
                q.peer_port_be = v->peer_port;
                q.out_family = v->family;  // the peer's; may differ from the client's
                q.kind = Kind::kToPeerChannel;
                q.next = Next::kRoute;
                return;
            }
            case KeyKind::kChannelOut:
                if (d == nullptr) {
                    peer_permission_key(q);  // no channel: a permission may allow a Data indication
                    next[nnext++] = static_cast<uint16_t>(&q - p);
                    return;
                }
                q.channel_be = inline_channel(d);
                q.out_family = allocs[q.alloc].family;
                q.kind = Kind::kToClientChannel;
                q.next = Next::kRoute;
                return;
            default:  // kPermission
                if (d == nullptr) {
                    if (q.kind == Kind::kClientSend) {
                        // Not every permission is offloaded (a peer on an
                        // external IP, [server].external_ips, stays with the
                        // control plane): it decides, as for ChannelData.
                        punt(q, Counter::punt_miss);
                        return;
                    }
                    if (q.kind == Kind::kPeer) {
                        w.alloc_state(q.alloc).dropped_packets++;
                    }
                    drop(q, Counter::drop_no_permission);  // RFC 8656 9 and 11.2: discard silently
                    return;
                }
                if (q.kind == Kind::kClientSend) {
                    q.kind = Kind::kToPeerSend;
                } else {
                    q.out_family = allocs[q.alloc].family;
                    q.kind = Kind::kToClientData;
                }
                q.next = Next::kRoute;
                return;
            }
        });
        std::memcpy(again, next, sizeof(uint16_t) * nnext);
        nagain = nnext;
    }
}

}  // namespace dp
