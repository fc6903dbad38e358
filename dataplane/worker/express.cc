// Stage 0: the express lane. The relay's common case, IPv4 ChannelData on a
// channel held in its allocation's slots, in both directions (client ->
// peer, and peer -> client), classified, looked up, routed and policed in
// one pass per memory phase instead of a pass per stage: a second, narrow
// implementation of what classify, lookup, route and police do for these
// packets, leaving each finished packet ready for rewrite. Everything else
// (IPv6, Send and Data indications, channels in the hash, cache misses,
// malformed frames, every punt and drop) is marked kClassify and goes
// through the stages, which judge it from scratch; a packet the lane gave up
// on costs its parse twice, which steady-state traffic does not see.
//
// Why: the stages' IPv4 common cases were already straight-line, and fusing
// their loops saved nothing (bench/RESULTS.md); what costs at 1k-10k flows
// is instructions, ~470 per ChannelData packet across six stages, most of
// them spent handing fields from one stage to the next through Pkt. Here a
// packet's fields stay in registers from parse to verdict.
//
// Phases, each over the burst, so that one packet's cache misses overlap
// the others' (as in lookup.cc):
//   1. parse (parse_udp4, stages.h) with the frames prefetched 4 ahead;
//      client packets compute their key's signature and prefetch their
//      client-cache bucket, peer packets their relayed port's word;
//   2. client packets: the bucket names the allocation, whose line and this
//      worker's state are requested 8 packets before it is checked (owns4),
//      then the channel's slot;
//   3. peer packets: the word names the allocation, paced the same way, then
//      the slot of the peer's address;
//   4. (in each check) next hop, MTU and headroom as route.cc, the byte and
//      packet counters as police.cc. An allocation with a bandwidth limit,
//      or host next hops in the table, send the packet on to route
//      (kRoute) with every field route and police read.
//
// Edges: kRewrite (finished), kRoute (route and police to do), kClassify.
#include "worker/rewrite44.h"
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kFrameAhead = 4;  // frames prefetched before their parse
constexpr uint16_t kAllocAhead = 8;  // allocation lines before their check (lookup.cc)

// What the burst shares: tables, and the route decision made once.
struct Lane {
    Worker& w;
    const Allocation* allocs;
    const ListenSet& listen;
    RewriteCtx rw;
    NextHop nh;        // the IPv4 default next hop, when `routed`
    bool routed;       // finish here: no host next hops, a usable default
    bool need_route = false;
    uint16_t to_peer = 0;    // finished (kTx) client -> peer
    uint16_t to_client = 0;  // finished (kTx) peer -> client
    Pkt* done[kBurst];
    uint16_t ndone = 0;
    uint16_t looked_up = 0;  // kRoute or done
};

// Route and police for one looked-up packet (q.alloc, q.kind and the fields
// route reads are set), then rewrite. `hdrs`: IP + UDP (+ ChannelData) header
// bytes in front of the data; `room`: the mbuf has the headroom they need.
inline void finish(Lane& l, Pkt& q, uint32_t hdrs, bool room) {
    l.looked_up++;
    const Allocation& a = l.allocs[q.alloc];
    if (unlikely(!l.routed || a.rate_bps.load(std::memory_order_relaxed) != 0 || hdrs + q.data_len > l.w.cfg.mtu ||
                 !room)) {
        q.next = Next::kRoute;  // route and police decide (next hop, limit, MTU, headroom punts)
        l.need_route = true;
        return;
    }
    q.nh = l.nh;
    q.next = Next::kRewrite;
    l.done[l.ndone++] = &q;
}

// A packet the lane parsed but does not finish (its channel is in the hash,
// a Data indication, a client the cache does not know): classify's verdict
// from the headers parse_udp4 accepted, for lookup.
void give_back(Worker& w, Pkt& q, bool to_listen) {
    const uint8_t* d = rte_pktmbuf_mtod(q.m, const uint8_t*);
    Udp4 h;
    h.addrs = load64(d + 26);
    h.udp = load64(d + 34);
    h.plen = q.plen;
    classify_udp4(w, h, to_listen, q);
}

}  // namespace

ExpressResult express(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n) {
    if (!w.cfg.express) {
        for (uint16_t i = 0; i < n; i++) {
            p[i].m = mbufs[i];
            p[i].next = Next::kClassify;
        }
        return {true, false, false, false};
    }
    const uint64_t def4 = w.nexthops->default_word(4);
    Lane l{w, w.flows->allocs, *w.flows->listen, {w, w.flows->allocs, w.flows->listen}, {},
           !w.nexthops->any_hosts() && nexthop_usable(def4)};
    NextHops::unpack(def4, &l.nh);
    const RelayPorts& rp = *w.flows->relay_ports;
    ClientCache& c = w.cache;
    const bool cache = c.e != nullptr;
    const AllocState* state = w.state;

    // 1. Parse.
    uint16_t cl[kBurst], pe[kBurst];
    uint16_t ncl = 0, npe = 0;
    uint32_t sig[kBurst];  // by client index
    const std::atomic<uint32_t>* word[kBurst];  // by peer index
    bool to_classify = false;  // kClassify: parse_udp4 said no
    bool to_lookup = false;    // handed to classify_udp4 (kLookup, kPunt, kDrop)
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
        q.next = Next::kClassify;
        auto* d = rte_pktmbuf_mtod(m, uint8_t*);
        Udp4 h;
        if (unlikely(!parse_udp4(m, d, &h))) {
            to_classify = true;
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
            if (!cache || h.plen < 4 || (pl[0] & 0xC0) != 0x40 || size_t{4} + load_be16(pl + 2) > h.plen) {
                classify_udp4(w, h, true, q);  // Send indications, STUN, bad lengths: as classify would
                to_lookup = true;
                continue;
            }
            const uint16_t cdlen = load_be16(pl + 2);
            q.kind = Kind::kToPeerChannel;
            q.data_off = 4;
            q.data_len = cdlen;
            std::memcpy(&q.channel_be, pl, 2);
            // The kClient key as classify builds it (Key4: destination,
            // source; destination port, source port, channel 0, kind).
            uint32_t ports = static_cast<uint32_t>(h.udp);
            ports = (ports >> 16) | (ports << 16);
            const uint64_t key[2] = {(h.addrs >> 32) | (h.addrs << 32),
                                     uint64_t{ports} | (uint64_t(KeyKind::kClient) << 48)};
            sig[ncl] = rte_hash_crc(key, sizeof key, 0);
            rte_prefetch0(c.bucket(sig[ncl]));
            cl[ncl++] = i;
        } else {
            const std::atomic<uint32_t>* wd = rp.word(4, d + 30, h.dst_port());
            if (wd == nullptr) {
                classify_udp4(w, h, false, q);  // a relayed port nobody has: lookup punts it
                to_lookup = true;
                continue;
            }
            rte_prefetch0(wd);
            q.kind = Kind::kToClientChannel;
            q.data_off = 0;
            q.data_len = h.plen;
            word[npe] = wd;
            pe[npe++] = i;
        }
    }

    // 2. Client packets: cache bucket -> allocation -> channel slot.
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
        auto check = [&](uint16_t j) {
            Pkt& q = p[cl[j]];
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
                q.prefix_len = 0;
                q.pad_len = 0;
                // New headers end where the data starts: 28 bytes where there were 46.
                finish(l, q, sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr), true);
                return;
            }
            give_back(w, q, true);
            to_lookup = true;
        };
        for (uint16_t j = 0; j < ncl && j < kAllocAhead; j++) {
            request(j);
        }
        for (uint16_t j = 0; j < ncl; j++) {
            if (j + kAllocAhead < ncl) {
                request(static_cast<uint16_t>(j + kAllocAhead));
            }
            check(j);
        }
        // Counted here only when found; the rest are looked up (and
        // counted) again by lookup.cc.
        c.lookups += hits;
    }

    // 3. Peer packets: relayed port's word -> allocation -> slot of the peer.
    if (npe != 0) {
        uint32_t alloc[kBurst];
        auto resolve = [&](uint16_t j) {
            const uint32_t v = word[j]->load(std::memory_order_acquire);
            alloc[j] = v;  // 0: none (lookup punts it)
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
                const uint16_t ch = al.family == 4 ? channel_of_peer(al, load32(q.l3 + 12), q.udp->src_port) : 0;
                if (ch != 0) {
                    q.alloc = a;
                    q.channel_be = ch;
                    q.prefix_len = 4;
                    q.pad_len = 0;
                    // 4 bytes of ChannelData header in front of where the UDP payload was.
                    finish(l, q, sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr) + 4, q.m->data_off >= 4);
                    return;
                }
            }
            give_back(w, q, false);
            to_lookup = true;
        };
        for (uint16_t j = 0; j < npe && j < kAllocAhead; j++) {
            resolve(j);
        }
        for (uint16_t j = 0; j < npe; j++) {
            if (j + kAllocAhead < npe) {
                resolve(static_cast<uint16_t>(j + kAllocAhead));
            }
            check(j);
        }
    }
    // Police's counters and rewrite, in a pass of their own: this worker's
    // state line of each allocation was requested with its allocation line
    // but is first needed here, a whole burst later (at 1M flows both are
    // DRAM reads; using the state as early as the allocation waited for it).
    for (uint16_t j = 0; j < l.ndone; j++) {
        Pkt& q = *l.done[j];
        AllocState& s = w.alloc_state(q.alloc);
        if (q.kind == Kind::kToPeerChannel) {
            s.to_peer_packets++;
            s.to_peer_bytes += q.data_len;
            l.to_peer++;
            rewrite44<Kind::kToPeerChannel>(l.rw, q);
        } else {
            s.to_client_packets++;
            s.to_client_bytes += q.data_len;
            l.to_client++;
            rewrite44<Kind::kToClientChannel>(l.rw, q);
        }
    }
    w.express_packets += l.looked_up;
    if (!to_classify && !to_lookup && !l.need_route) {
        // The whole burst finished here, in order, for one next hop (the
        // default): out at once, counted as tx.cc would.
        w.counters.inc(Counter::fwd_client_channel, l.to_peer);
        w.counters.inc(Counter::fwd_peer_channel, l.to_client);
        tx_send(w, l.nh.port, mbufs, n, Counter::drop_nic_tx_full);
        return {false, false, false, true};
    }
    return {to_classify, to_lookup, l.need_route, false};
}

}  // namespace dp
