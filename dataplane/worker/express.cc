// The express lane: the relay's common case, ChannelData on a channel held
// in its allocation's slots, in both directions (client -> peer, and peer ->
// client), IPv4 to IPv4 or IPv6 to IPv6 (between families: the stages),
// parsed, looked up, routed, policed and rewritten in one pass per memory
// phase instead of a pass per stage, and, when that was the whole burst,
// sent: a second, narrow implementation of what the stages do
// for these packets. Every other packet gets classify's verdict from
// classify's own code (classify_udp4 with the headers already checked, or
// classify_other) and goes on through the stages; a packet the lane found
// but whose next hop, MTU or headroom it leaves to route (or whose bandwidth
// limit, in a burst the lane does not finish) goes on from route (kRoute)
// with every field lookup would have set.
//
// Why: the stages' IPv4 common cases were already straight-line, and fusing
// their loops saved nothing (bench/RESULTS.md); what costs at 1k-10k flows
// is instructions, ~470 per ChannelData packet across six stages, many of
// them spent handing fields from one stage to the next through Pkt and
// sorting packets into per-stage lists.
//
// Phases, each over the burst, so that one packet's cache misses overlap
// the others' (as in lookup.cc):
//   1. parse (parse_udp4, else parse_udp6: stages.h) with the frames
//      prefetched 4 ahead; client ChannelData computes its key's signature
//      and prefetches its client-cache bucket, a peer packet its relayed
//      port's word;
//   2. client ChannelData: the bucket names the allocation, whose line and
//      this worker's state line are requested kAllocAhead packets before the
//      allocation is checked (owns4, owns6), then the channel's slot (the
//      IPv4 slots, or slot6 of an allocation with only an IPv6 relayed
//      address);
//   3. peer packets: the word names the allocation, paced the same way, then
//      the slot of the peer's address; those without one (Data indications,
//      channels in the hash) get classify's verdict then;
//   4. next hops: the default, or one bulk lookup where the table has host
//      entries or the kernel routes more specific than the default (as
//      route.cc); one on a VLAN gets its 802.1Q tag from
//      the rewrite (a peer packet whose mbuf lacks room for it goes to route);
//   5. next hops checked; bandwidth limits (police_lane: in packet order,
//      and only when the lane finishes the whole burst, so that it drops
//      what the police stage would); police's counters in this worker's
//      state line, first needed here, a whole burst after it was requested,
//      and rewrite44 or rewrite66 (rewrite44.h, rewrite66.h, shared with the
//      rewrite stage).
// Phases 2-5 come in two versions (`rest`): a burst with IPv6 packets in the
// lane tests each packet's family, an IPv4-only one pays nothing for IPv6.
//
// A burst the lane finished less than half of (Send or Data indications,
// channels in the hash) costs more through it than
// through the stages alone; after one, the next WorkerConfig::express_rest
// bursts go to classify directly (express_wanted).
//
// Cost (callgrind, 10k flows, instructions per packet of process_burst with
// net_null's ~81): client ChannelData 566 -> 492, peer ChannelData 511 ->
// 427, with host next hops 782 -> 698; Send 926 -> 939 and Data indication
// 800 -> 806 (handed to the stages). Cycles: ChannelData 7-8 % fewer at
// 1k-10k flows, no change beyond the noise at 1M (bench/RESULTS.md
// "Express lane"). IPv6 (twenty-ninth session, "IPv6 in the express lane"):
// client ChannelData 857 -> 648, peer 810 -> 578; IPv4 +6 / +4.5 for the
// IPv6 branch's code in the parse loop.
//
// Edges: kTx (finished; or the whole burst sent); kRoute; classify's edges.
#include <algorithm>
#include <functional>
#include <type_traits>

#include "worker/rewrite44.h"
#include "worker/rewrite66.h"
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kFrameAhead = 4;  // frames prefetched before their parse

// What the burst shares: tables, and the packets found so far.
struct Lane {
    Worker& w;
    const Allocation* allocs;
    const ListenSet& listen;
    Pkt* done[kBurst];  // found, and nothing for route to decide
    uint16_t ndone = 0;
    uint16_t routed = 0;   // found, for route to decide (kRoute)
    bool rest = false;     // some packets for the stages
    bool limited = false;  // some found packet's allocation has a bandwidth limit
};

// q's allocation `a` is found and every field lookup would set is set:
// the lane keeps q when route would pass it (`hdrs` bytes of new IP + UDP
// (+ ChannelData) headers fit the MTU; `ok`: the mbuf has room for them
// and Ethernet in front of the data, and the destination is not one of the
// relay's own IPs), else hands it to route, which decides (kRoute). A
// bandwidth limit is policed in phase 5.
inline void found(Lane& l, const Allocation& a, Pkt& q, uint32_t hdrs, bool ok) {
    if (likely(hdrs + q.data_len <= l.w.cfg.mtu && ok)) {
        l.done[l.ndone++] = &q;
        l.limited |= !a.unlimited();
    } else {
        q.next = Next::kRoute;
        l.rest = true;
        l.routed++;
    }
}

// ChannelData (classify_payload's test) in the UDP payload pl of plen bytes.
inline bool channel_data_shape(const uint8_t* pl, uint16_t plen) {
    return plen >= 4 && (pl[0] & 0xC0) == 0x40 && size_t{4} + load_be16(pl + 2) <= plen;
}
// A client's ChannelData (pl: its UDP payload) as lookup would leave it.
inline void set_channel_data(Pkt& q, const uint8_t* pl) {
    q.kind = Kind::kToPeerChannel;
    q.data_off = 4;
    q.data_len = load_be16(pl + 2);
    std::memcpy(&q.channel_be, pl, 2);
}
// A peer's datagram to a relayed port, to become ChannelData.
inline void set_peer_data(Pkt& q, uint16_t plen) {
    q.kind = Kind::kToClientChannel;
    q.data_off = 0;
    q.data_len = plen;
}

// An IPv6 frame the lane may finish (parse_udp6, out of the IPv4 loop's
// way): client ChannelData with its kClient key's signature (*sig) and
// client-cache bucket requested, or a peer packet to a relayed port with
// its word (*wd) requested; anything else classified (kOther). As the IPv4
// loop in express() does, except that the listening address's index is the
// `a` of the client's key (flow/key.h), kept in q.k6 for owns6, and a
// packet handed back is parsed again by classify's general parser.
enum class Parsed6 : uint8_t { kClient, kPeer, kOther };
inline __attribute__((always_inline)) Parsed6 parse6(Worker& w, Pkt& q, const uint8_t* d, uint32_t* sig,
                                         const std::atomic<uint32_t>** wd) {
    Udp6 h;
    if (!parse_udp6(q.m, d, &h)) {
        classify_other(w, q);
        return Parsed6::kOther;
    }
    const uint8_t* pl = d + kUdp6Min;
    q.family = 6;
    q.out_family = 6;
    q.l3 = const_cast<uint8_t*>(d) + sizeof(rte_ether_hdr);
    q.udp = reinterpret_cast<rte_udp_hdr*>(const_cast<uint8_t*>(d) + kUdp6Min - sizeof(rte_udp_hdr));
    q.plen = h.plen;
    const int li = w.flows->listen->index6(d + kIp6Dst, h.dst_port());
    if (li >= 0) {
        if (w.cache.e == nullptr || !channel_data_shape(pl, h.plen)) {
            classify_other(w, q);
            return Parsed6::kOther;
        }
        set_channel_data(q, pl);
        key6_of(q.k6, d + kIp6Src, h.dst_port(), h.src_port(), static_cast<uint8_t>(li), KeyKind::kClient);
        *sig = rte_hash_crc(&q.k6, sizeof(Key6), 0);
        rte_prefetch0(w.cache.bucket(*sig));
        return Parsed6::kClient;
    }
    *wd = w.flows->relay_ports->word(6, d + kIp6Dst, h.dst_port());
    if (*wd == nullptr) {
        classify_other(w, q);  // a relayed port nobody has: lookup punts it
        return Parsed6::kOther;
    }
    rte_prefetch0(*wd);
    set_peer_data(q, h.plen);
    return Parsed6::kPeer;
}

// A packet parse_udp4 (or parse_udp6) accepted that the lane does not finish: classify's
// verdict from the same headers, for lookup.
void give_back(Lane& l, Pkt& q, bool to_listen) {
    l.rest = true;
    if (q.family == 6) {
        classify_other(l.w, q);  // the general parser's verdict (parse_udp6 has no other)
        return;
    }
    const uint8_t* d = rte_pktmbuf_mtod(q.m, const uint8_t*);
    Udp4 h;
    h.addrs = load64(d + 26);
    h.udp = load64(d + 34);
    h.plen = q.plen;
    classify_udp4(l.w, h, to_listen, q);
}

// Bandwidth limits of the packets the lane finishes (`nok` of l.done, next
// hops checked), in the order the police stage would take them, so that a
// worker with the lane and one without drop the same packets: in packet
// order, and only when the lane finishes the whole burst. When some packet
// goes to the stages, the limited ones go too (kRoute: route, then police
// in packet order with the rest). Unlimited packets are left kTx; a limited
// one is kTx when its bytes were taken, else dropped (drop_rate_limited,
// freed by the tx stage).
void police_lane(Lane& l, uint16_t nok, uint64_t now_tsc) {
    for (uint16_t j = 0; j < nok; j++) {
        l.done[j]->next = Next::kTx;
    }
    if (l.rest) {
        for (uint16_t j = 0; j < nok; j++) {
            Pkt& q = *l.done[j];
            if (!l.allocs[q.alloc].unlimited()) {
                q.next = Next::kRoute;
            }
        }
        return;
    }
    // Packet order: l.done holds the client packets, then the peer ones, each
    // run in packet order (pointers into the burst's Pkt array): one merge.
    uint16_t b = 0;
    while (b < nok && l.done[b]->kind == Kind::kToPeerChannel) {
        b++;
    }
    if (b != 0 && b != nok && l.done[b] < l.done[b - 1]) {
        Pkt* merged[kBurst];
        std::merge(l.done, l.done + b, l.done + b, l.done + nok, merged, std::less<const Pkt*>());
        std::copy(merged, merged + nok, l.done);
    }
    const double tsc_hz = l.w.flows->tsc_hz;
    for (uint16_t j = 0; j < nok; j++) {
        Pkt& q = *l.done[j];
        if (!charge(l.allocs[q.alloc], l.w.alloc_state(q.alloc), q, now_tsc, tsc_hz)) {
            l.rest = true;  // the tx stage frees it
        }
    }
}

}  // namespace

Express express(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n, uint64_t now_tsc) {
    Lane l{w, w.flows->allocs, *w.flows->listen};
    // The relay's own IPv4 addresses (OwnIps4): a destination among them is
    // route's to decide (relay-to-relay, route.cc).
    const OwnIps4& own = w.flows->own4;
    const uint32_t nown = own.n.load(std::memory_order_acquire);
    // No own IP yet: 0.0.0.0, which no relayed packet goes to (route decides it all the same).
    const uint32_t own_a = nown > 0 ? own.first[0].load(std::memory_order_relaxed) : 0;
    const uint32_t own_b = nown > 1 ? own.first[1].load(std::memory_order_relaxed) : own_a;
    const bool own_more = nown > 2;
    auto to_own = [&](uint32_t ip) { return ip == own_a || ip == own_b || (unlikely(own_more) && own.has(ip)); };
    auto to_own6 = [&](const uint8_t* ip) { return w.flows->own_ip(6, ip); };
    const RelayPorts& rp = *w.flows->relay_ports;
    ClientCache& c = w.cache;
    const AllocState* state = w.state;

    // 1. Parse.
    uint16_t cl[kBurst], pe[kBurst];
    uint16_t ncl = 0, npe = 0;
    bool v6 = false;  // some IPv6 packet in cl or pe
    uint32_t sig[kBurst];                       // by client index
    const std::atomic<uint32_t>* word[kBurst];  // by peer index
    for (uint16_t i = 0; i < n && i < kFrameAhead; i++) {
        rte_prefetch0(rte_pktmbuf_mtod(mbufs[i], void*));
    }
    for (uint16_t i = 0; i < n; i++) {
        if (i + kFrameAhead < n) {
            rte_prefetch0(rte_pktmbuf_mtod(mbufs[i + kFrameAhead], void*));
        }
        rte_mbuf* m = mbufs[i];
        Pkt& q = p[i];
        q.m = m;
        auto* d = rte_pktmbuf_mtod(m, uint8_t*);
        Udp4 h;
        if (unlikely(!parse_udp4(m, d, &h))) {
            switch (parse6(w, q, d, &sig[ncl], &word[npe])) {
            case Parsed6::kClient: cl[ncl++] = i; v6 = true; break;
            case Parsed6::kPeer: pe[npe++] = i; v6 = true; break;
            default: l.rest = true; break;  // classified (VLAN tags, options, fragments, bad lengths ...)
            }
            continue;
        }
        const uint8_t* pl = d + kUdp4Min;
        q.family = 4;
        q.out_family = 4;
        q.l3 = d + sizeof(rte_ether_hdr);
        q.udp = reinterpret_cast<rte_udp_hdr*>(d + sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr));
        q.plen = h.plen;
        if (l.listen.has4(h.dst_ip(), h.dst_port())) {
            // ChannelData (classify_payload's test), and a cache to find its
            // allocation in.
            if (c.e == nullptr || !channel_data_shape(pl, h.plen)) {
                classify_udp4(w, h, true, q);  // Send indications, STUN, bad lengths: as classify would
                l.rest = true;
                continue;
            }
            set_channel_data(q, pl);
            uint64_t key[2];  // the kClient key, as classify builds it
            key4_words(h.addrs, h.udp, KeyKind::kClient, key);
            sig[ncl] = rte_hash_crc(key, sizeof key, 0);
            rte_prefetch0(c.bucket(sig[ncl]));
            cl[ncl++] = i;
        } else {
            const std::atomic<uint32_t>* wd = rp.word(4, d + 30, h.dst_port());
            if (wd == nullptr) {
                classify_udp4(w, h, false, q);  // a relayed port nobody has: lookup punts it
                l.rest = true;
                continue;
            }
            rte_prefetch0(wd);
            set_peer_data(q, h.plen);
            word[npe] = wd;
            pe[npe++] = i;
        }
    }

    // Phases 2-5, in two versions: for bursts with IPv6 packets in the lane
    // (kMixed: each packet's family tested), and for IPv4 alone, which pays
    // nothing for IPv6.
    auto rest = [&](auto mixed) __attribute__((always_inline)) -> Express {
        constexpr bool kMixed = decltype(mixed)::value;
        // Relay-to-relay (a channel whose peer is an own IP, which route
        // decides): route's own_destination reads the receiving allocation's
        // relayed-port word and then its line, one packet after the other; at
        // 1M flows both miss. Requested here instead, the words as the packets
        // are found and the lines they name after the client loop, so that route
        // finds them in cache. Only for the lane's packets: relay-to-relay Send
        // indications wait in route.
        const std::atomic<uint32_t>* leg[kBurst];
        uint16_t nleg = 0;
        auto second_leg = [&](const Pkt& q) {
            if (const std::atomic<uint32_t>* wd = rp.word(4, q.peer_ip, q.peer_port_be)) {
                rte_prefetch0(wd);
                leg[nleg++] = wd;
            }
        };

        // 2. Client ChannelData: cache bucket -> allocation -> channel slot.
        if (ncl != 0) {
            const uint8_t* bk[kBurst];
            uint32_t cand[kBurst];
            uint64_t hits = 0;
            auto request = [&](uint16_t j) {
                const uint8_t* b = c.bucket(sig[j]);
                bk[j] = b;
                cand[j] = ClientCache::matches(b, sig[j]);
                if (cand[j] != 0) {
                    const uint32_t a = ClientCache::alloc_at(b, static_cast<uint32_t>(__builtin_ctz(cand[j])));
                    rte_prefetch0(&l.allocs[a]);
                    rte_prefetch0(&state[a]);
                }
            };
            auto check6 = [&](Pkt& q, uint32_t cands, const uint8_t* b) {
                for (uint32_t m = cands; m != 0; m &= m - 1) {
                    const uint32_t a = ClientCache::alloc_at(b, static_cast<uint32_t>(__builtin_ctz(m)));
                    const Allocation& al = l.allocs[a];
                    if (!owns6(al, q.k6)) {
                        continue;
                    }
                    const ChanSlot6* s = slot6_of_channel(al, q.channel_be);
                    if (s == nullptr) {
                        break;  // an IPv4 peer, a channel in the hash, or none: the stages decide
                    }
                    hits++;
                    q.alloc = a;
                    std::memcpy(q.peer_ip, s->peer_ip, 16);
                    q.peer_port_be = s->peer_port;
                    const bool to_self = to_own6(s->peer_ip);
                    found(l, al, q, sizeof(rte_ipv6_hdr) + sizeof(rte_udp_hdr), !to_self);
                    return;
                }
                give_back(l, q, true);
            };
            auto check = [&](uint16_t j) {
                Pkt& q = p[cl[j]];
                if (kMixed && q.family == 6) {
                    check6(q, cand[j], bk[j]);
                    return;
                }
                const uint32_t src = load32(q.l3 + 12);
                const uint32_t dst = load32(q.l3 + 16);
                for (uint32_t m = cand[j]; m != 0; m &= m - 1) {
                    const uint32_t a = ClientCache::alloc_at(bk[j], static_cast<uint32_t>(__builtin_ctz(m)));
                    const Allocation& al = l.allocs[a];
                    if (!owns4(al, l.listen, src, q.udp->src_port, dst, q.udp->dst_port)) {
                        continue;
                    }
                    const ChanSlot* s = slot_of_channel(al, q.channel_be);
                    if (s == nullptr) {
                        break;  // a channel in the hash, or none: lookup decides
                    }
                    hits++;
                    q.alloc = a;
                    std::memcpy(q.peer_ip, &s->peer_ip, 4);
                    q.peer_port_be = s->peer_port;
                    const bool to_self = to_own(s->peer_ip);
                    if (unlikely(to_self)) {
                        second_leg(q);
                    }
                    // 42 bytes of new headers where there were 46 (parse_udp4:
                    // untagged, no IP options), the data inside the frame.
                    found(l, al, q, sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr), !to_self);
                    return;
                }
                give_back(l, q, true);
            };
            paced(ncl, request, check);
            // Counted here only when found; the rest are looked up (and
            // counted) by lookup.cc.
            c.lookups += hits;
            for (uint16_t j = 0; j < nleg; j++) {
                if (const uint32_t v = leg[j]->load(std::memory_order_acquire); v != 0) {
                    rte_prefetch0(&l.allocs[v - 1]);
                }
            }
        }

        // 3. Peer packets: relayed port's word -> allocation -> slot of the peer.
        if (npe != 0) {
            uint32_t alloc[kBurst];  // the word: allocation + 1, or 0
            auto resolve = [&](uint16_t j) {
                const uint32_t v = word[j]->load(std::memory_order_acquire);
                alloc[j] = v;
                if (v != 0) {
                    rte_prefetch0(&l.allocs[v - 1]);
                    rte_prefetch0(&state[v - 1]);
                }
            };
            auto check = [&](uint16_t j) {
                Pkt& q = p[pe[j]];
                if (alloc[j] != 0) {
                    const uint32_t a = alloc[j] - 1;
                    const Allocation& al = l.allocs[a];
                    // The client of the peer's family (the stages relay between families).
                    const bool v4 = !kMixed || q.family == 4;
                    const uint16_t sport = q.udp->src_port;
                    const uint16_t ch = al.family != (v4 ? 4 : 6) ? 0
                                        : v4 ? channel_of_peer(al, load32(q.l3 + 12), sport)
                                             : channel_of_peer6(al, q.l3 + offsetof(rte_ipv6_hdr, src_addr), sport);
                    if (ch != 0) {
                        q.alloc = a;
                        q.channel_be = ch;
                        // 4 bytes more of new headers than there were (46 where
                        // there were 42; IPv6 66 where there were 62).
                        const bool to_self = v4 ? to_own(load32(al.client_ip)) : to_own6(al.client_ip);
                        found(l, al, q, (v4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)) + sizeof(rte_udp_hdr) + 4,
                              q.m->data_off >= 4 && !to_self);
                        return;
                    }
                }
                give_back(l, q, false);
            };
            paced(npe, resolve, check);
        }
        // 4. Next hops, as route.cc: the family's default, or where the table
        // has host entries or the kernel more specific routes, the
        // destinations' own (one bulk lookup) falling back to the default
        // where no such route covers them. Without a usable one, route
        // decides (it punts).
        const uint64_t def4 = w.nexthops->default_word(4);
        const uint64_t def6 = w.nexthops->default_word(6);
        const bool hosts = l.ndone != 0 && (w.nexthops->any_hosts() || w.nexthops->any_prefixes());
        uint64_t nh[kBurst];
        if (hosts) {
            // Looked up only where a host entry may be.
            const bool uncovered = w.nexthops->uncovered_hosts();
            NextHopKey keys[kBurst];
            const NextHopKey* kp[kBurst];
            uint16_t look[kBurst];
            uint16_t nlook = 0;
            for (uint16_t j = 0; j < l.ndone; j++) {
                const Pkt& q = *l.done[j];
                const uint8_t f = kMixed ? q.family : 4;
                const uint8_t* dst = q.kind == Kind::kToPeerChannel ? q.peer_ip : l.allocs[q.alloc].client_ip;
                if (w.nexthops->need_lookup(f, dst, uncovered)) {
                    keys[nlook] = NextHops::key(f, dst);
                    kp[nlook] = &keys[nlook];
                    look[nlook++] = j;
                } else {
                    nh[j] = f == 4 ? def4 : def6;
                }
            }
            if (nlook != 0) {
                uint64_t got[kBurst];
                w.nexthops->host_words(kp, nlook, got);
                for (uint16_t i = 0; i < nlook; i++) {
                    const uint8_t f = keys[i].family;
                    nh[look[i]] = got[i] != 0 ? got[i] : w.nexthops->default_for(f, keys[i].ip, f == 4 ? def4 : def6);
                }
            }
        }
        NextHop dnh4, dnh6;
        NextHops::unpack(def4, &dnh4);
        NextHops::unpack(def6, &dnh6);
        const bool def4_ok = nexthop_usable(def4);
        const bool def6_ok = nexthop_usable(def6);

        // 5. Next hops checked, then police and rewrite, in a pass of their
        // own: this worker's state line of each allocation was requested with
        // its allocation line but is first needed here, a whole burst later (at
        // 1M flows both are DRAM reads; using the state as early as the
        // allocation waited for it).
        uint16_t nok = 0;
        uint16_t port = UINT16_MAX;  // the one port every finished packet leaves by (kMaxPorts: several)
        for (uint16_t j = 0; j < l.ndone; j++) {
            Pkt& q = *l.done[j];
            if (!hosts) {
                const bool v4 = !kMixed || q.family == 4;
                if (unlikely(!(v4 ? def4_ok : def6_ok))) {
                    q.next = Next::kRoute;
                    l.rest = true;
                    continue;
                }
                if constexpr (kMixed) {
                    q.nh = v4 ? dnh4 : dnh6;
                    port = port == UINT16_MAX || port == q.nh.port ? q.nh.port : kMaxPorts;
                } else {
                    q.nh = dnh4;
                    port = dnh4.port;
                }
            } else {
                if (unlikely(!nexthop_usable(nh[j]))) {
                    q.next = Next::kRoute;
                    l.rest = true;
                    continue;
                }
                NextHops::unpack(nh[j], &q.nh);
                port = port == UINT16_MAX || port == q.nh.port ? q.nh.port : kMaxPorts;
            }
            // A tag takes 4 bytes more in front of a peer packet than found()
            // checked (a client packet's new headers, tag included, fit where
            // its old ones were).
            if (unlikely(q.nh.vlan != 0) && q.kind == Kind::kToClientChannel && q.m->data_off < 8) {
                q.next = Next::kRoute;
                l.rest = true;
                continue;
            }
            l.done[nok++] = &q;
        }
        if (unlikely(l.limited)) {
            police_lane(l, nok, now_tsc);
        }
        const RewriteCtx rw = rewrite_ctx(w, l.allocs, &l.listen);
        uint16_t to_peer = 0, to_client = 0;
        for (uint16_t j = 0; j < nok; j++) {
            Pkt& q = *l.done[j];
            if (unlikely(l.limited) && q.next != Next::kTx) {  // handed to route or dropped by police_lane
                continue;
            }
            count_forwarded(w.alloc_state(q.alloc), q.kind, q.data_len);
            if (q.kind == Kind::kToPeerChannel) {
                to_peer++;
                if (!kMixed || q.family == 4) {
                    rewrite44<Kind::kToPeerChannel>(rw, q);  // -> kTx
                } else {
                    rewrite66<Kind::kToPeerChannel>(rw, q);
                }
            } else {
                to_client++;
                if (!kMixed || q.family == 4) {
                    rewrite44<Kind::kToClientChannel>(rw, q);
                } else {
                    rewrite66<Kind::kToClientChannel>(rw, q);
                }
            }
        }
        w.express_packets += to_peer + to_client;
        // Found and left to route counts too: the lane spared them classify and
        // lookup (relay-to-relay traffic is all such).
        if (2 * (to_peer + to_client + l.routed) < n) {
            w.express_skip = w.cfg.express_rest;
        }
        if (l.rest || port >= kMaxPorts) {
            return Express::kStages;  // the finished ones go out with the rest, in order (tx.cc)
        }
        // The whole burst finished here, for one port: out at once, in order,
        // counted as tx.cc would.
        w.counters.inc(Counter::fwd_client_channel, to_peer);
        w.counters.inc(Counter::fwd_peer_channel, to_client);
        tx_send(w, port, mbufs, n, Counter::drop_nic_tx_full);
        return Express::kSent;
    };
    return v6 ? rest(std::true_type{}) : rest(std::false_type{});
}

}  // namespace dp
