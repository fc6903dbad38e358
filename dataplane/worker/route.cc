// Stage 3: route. Decides whether the relayed packet can leave: drops it if
// it came with a TTL / hop limit of 0 or 1 (RFC 8656 section 14's preferred
// behaviour: the relay sends one less than it received; 0 is discarded, and
// 1 would leave with 0, which Linux does not send for IPv4 and the next hop
// would discard, so the control plane drops both too; only relayed traffic:
// a STUN request or kernel-bound datagram with TTL 1 is not affected, since
// it never reaches this stage; before the next hop is looked up), resolves the
// L2 next hop of its destination (a miss is punted, never guessed), checks
// the rewritten size against the MTU (RFC 8656 section 12.6 leaves larger
// packets to the slow path, which can fragment or answer with ICMP) and that
// the mbuf has room for the headers rewrite will prepend (with an 802.1Q
// tag where the next hop is on a VLAN). Rewrite itself then cannot fail.
//
// Cost (callgrind, IPv4, 10k flows): 46-53 instructions/packet with only a
// default route (was 74-85: the defaults are now read and checked once per
// burst), about 9 more since the TTL check (bench/RESULTS.md "TTL"). With a
// host entry per destination (dataplane_bench --host-nexthops) 262 for
// client ChannelData, was 278: the host lookups go to the hash as one bulk
// call.
//
// The express lane (express.cc) makes the same decisions for the
// ChannelData it finishes and hands this stage the packets it cannot pass
// (kRoute: no usable next hop, over the MTU, no headroom, a bandwidth limit).
//
// A packet of a rate-limited allocation that it punts (no next hop, MTU,
// headroom) is charged to the allocation's budget first, as police charges
// what the fast path sends (stages.h, take_bandwidth), and dropped as
// drop_rate_limited if the budget cannot cover it: the control plane relays
// punted data with its own bucket, which sees only those, so without this
// an allocation sending both kinds could have the whole rate on each path.
//
// A packet to one of the relay's own addresses never goes to a next hop:
// to another offloaded relayed address it gets the next hop kSelfPort and
// goes round the pipeline again as a peer packet; otherwise it is punted
// (own_destination below).
//
// Edges: kPolice; kPunt (no next hop, MTU, no headroom, own address); kDrop
// (TTL, the bandwidth limit of a punted packet).
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kEth = sizeof(rte_ether_hdr);

// STUN header + XOR-PEER-ADDRESS + DATA attribute header (RFC 8656 11.3).
constexpr uint16_t data_prefix(uint8_t family) { return static_cast<uint16_t>(20 + 4 + (family == 4 ? 8 : 20) + 4); }

}  // namespace

uint16_t data_indication_prefix(uint8_t family) { return data_prefix(family); }

namespace {

// kToPeerChannel or kToPeerSend: one compare.
inline bool to_peer(Kind k) {
    static_assert(static_cast<uint8_t>(Kind::kToPeerSend) == static_cast<uint8_t>(Kind::kToPeerChannel) + 1);
    return static_cast<uint8_t>(static_cast<uint8_t>(k) - static_cast<uint8_t>(Kind::kToPeerChannel)) < 2;
}

// Where the packet goes (its destination IP), and the bytes rewrite adds in
// front of (prefix) and after (pad) its data.
inline const uint8_t* destination(const Allocation* allocs, Pkt& q, uint32_t* prefix, uint32_t* pad) {
    if (to_peer(q.kind)) {
        *prefix = 0;  // kToPeerChannel, kToPeerSend
        *pad = 0;
        return q.peer_ip;
    }
    if (q.kind == Kind::kToClientChannel) {
        *prefix = 4;  // over UDP the padding is optional (12.5); not added
        *pad = 0;
    } else {  // Data indication
        *prefix = data_prefix(q.family);
        *pad = (4 - (q.data_len & 3)) & 3;
    }
    return allocs[q.alloc].client_ip;
}

// Ethernet header bytes in front of a packet to next hop word nh: with an
// 802.1Q tag where the next hop is on a VLAN.
inline uint32_t l2_bytes(uint64_t nh) { return kEth + (NextHops::vlan_of(nh) != 0 ? sizeof(rte_vlan_hdr) : 0); }

// A packet that leaves through the kernel: charged first if its allocation
// has a bandwidth limit (above).
inline void punt_relayed(Worker& w, Pkt& q, Counter why, uint64_t now) {
    const Allocation& a = w.flows->allocs[q.alloc];
    if (unlikely(!a.unlimited()) && !charge(a, w.alloc_state(q.alloc), q, now, w.flows->tsc_hz)) {
        return;
    }
    punt(q, why);
}

// False (and q dropped) for a packet that came with TTL / hop limit 0 or 1
// (parse_udp4 sends the IPv4 ones below 2 to the general parser, so the
// express lane never finishes those).
inline bool ttl_left(Pkt& q) {
    if (unlikely(received_ttl(q) <= 1)) {
        drop(q, Counter::drop_ttl_expired);
        return false;
    }
    return true;
}

// Next hop word nh (0: none) resolved; the MTU and headroom checks (l2:
// l2_bytes(nh)).
inline void finish(Worker& w, Pkt& q, uint64_t nh, bool ok, uint32_t l2, uint32_t prefix, uint32_t pad,
                   uint64_t now) {
    q.prefix_len = static_cast<uint16_t>(prefix);
    q.pad_len = static_cast<uint8_t>(pad);
    if (unlikely(!ok)) {
        punt_relayed(w, q, Counter::punt_no_next_hop, now);
        return;
    }
    NextHops::unpack(nh, &q.nh);
    // IP + UDP headers (+ the ChannelData or Data indication prefix)
    // rewrite puts in front of the data, and what follows the data.
    const uint32_t hdrs = (q.out_family == 4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)) + sizeof(rte_udp_hdr) + prefix;
    const uint32_t tail = uint32_t{q.data_len} + pad;
    if (unlikely(hdrs + tail > w.cfg.mtu)) {
        punt_relayed(w, q, Counter::punt_mtu, now);
        return;
    }
    const uint8_t* data = reinterpret_cast<const uint8_t*>(q.udp + 1) + q.data_off;
    const uint8_t* buf = static_cast<const uint8_t*>(q.m->buf_addr);
    if (unlikely(data < buf + l2 + hdrs || data + tail > buf + q.m->buf_len)) {
        punt_relayed(w, q, Counter::punt_no_headroom, now);
        return;
    }
    q.next = Next::kPolice;
}

// Relay-to-relay, the leg from the receiving allocation `b` to its client,
// judged before the first: by then the frame is rewritten (from our own
// relayed address, to our NIC's MAC), which the kernel would discard
// (martian source, another host's frame), so the second leg must never be
// punted; the client's original is punted now instead, and the control
// plane relays it through its sockets. Checked for the worst case, a Data
// indication (whether b has a channel for the sender, or a permission at
// all, is looked up only then: without one the packet is dropped there, as
// in socket mode). False when q was punted.
inline bool second_leg_ok(Worker& w, Pkt& q, const Allocation& b, uint64_t now) {
    const uint32_t hdrs = (b.family == 4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)) + sizeof(rte_udp_hdr) +
                          data_prefix(q.out_family);
    const uint32_t tail = uint32_t{q.data_len} + ((4u - (q.data_len & 3u)) & 3u);
    if (unlikely(hdrs + tail > w.cfg.mtu)) {
        punt_relayed(w, q, Counter::punt_mtu, now);
        return false;
    }
    // The data stays where it is through both legs (an 802.1Q tag at most in front).
    const uint8_t* data = reinterpret_cast<const uint8_t*>(q.udp + 1) + q.data_off;
    const uint8_t* buf = static_cast<const uint8_t*>(q.m->buf_addr);
    if (unlikely(data < buf + kEth + sizeof(rte_vlan_hdr) + hdrs || data + tail > buf + q.m->buf_len)) {
        punt_relayed(w, q, Counter::punt_no_headroom, now);
        return false;
    }
    if (unlikely(w.flows->own_ip(b.family, b.client_ip))) {
        punt_relayed(w, q, Counter::punt_own_address, now);
        return false;
    }
    if (unlikely(!nexthop_usable(w.nexthops->word_for(b.family, b.client_ip)))) {
        punt_relayed(w, q, Counter::punt_no_next_hop, now);
        return false;
    }
    return true;
}

// The allocation whose relayed address the to-peer packet q goes to (dst:
// an own IP), on the relay IP itself or, behind a 1:1 NAT, on its external
// IP (FlowTables::nat: the peer address a client learnt from the other
// client's XOR-RELAYED-ADDRESS). The latter only when q leaves from that
// relay IP, so that pipeline.cc can present the rewritten frame as coming
// from the external IP by swapping its two addresses (a relay with one
// relay IP per family, as the control plane has, always does).
inline bool relayed_peer(const Worker& w, const Pkt& q, const uint8_t* dst, uint32_t* peer_alloc) {
    const FlowTables& t = *w.flows;
    if (t.relay_ports->find(q.out_family, dst, q.peer_port_be, peer_alloc)) {
        return true;
    }
    const NatIps::Entry* e = t.nat.current(q.out_family);
    const size_t len = q.out_family == 4 ? 4 : 16;
    if (e == nullptr || std::memcmp(e->external, dst, len) != 0) {
        return false;
    }
    const Allocation& a = t.allocs[q.alloc];
    const uint8_t* from = q.out_family == 4 ? reinterpret_cast<const uint8_t*>(&a.v4.ip)
                                            : t.relay_ports->ip[a.relayed6_ip];
    return std::memcmp(from, e->relay, len) == 0 && t.relay_ports->find(q.out_family, e->relay, q.peer_port_be, peer_alloc);
}

// Relay-to-relay. A destination that is one of the relay's own IPs
// (FlowTables::own_ip: relayed, listening or external) never leaves by the NIC: its
// next hop would be the router, which may or may not send it back (many
// cloud gateways do not), where the kernel in socket mode delivers it
// locally. A packet to a peer that is an offloaded relayed address (two
// relay-only clients of this relay, each the other's peer) gets the next hop
// kSelfPort: checked, policed and rewritten as any other, then received
// again as that allocation's peer packet (pipeline.cc); behind a 1:1 NAT
// the peer may be given by its external address (relayed_peer). Anything else to an
// own IP goes to the kernel, which delivers it locally as in socket mode
// (punt_own_address): a relayed port the dataplane does not have (an
// allocation of a TCP client), a listening IP, a client that is itself one
// of the relayed addresses, a packet already going round. True when q was
// decided here.
inline bool own_destination(Worker& w, Pkt& q, const uint8_t* dst, uint32_t prefix, uint32_t pad, uint64_t now) {
    if (likely(!w.flows->own_ip(q.out_family, dst))) {
        return false;
    }
    uint32_t peer_alloc;
    if (to_peer(q.kind) && !w.hairpinning && relayed_peer(w, q, dst, &peer_alloc)) {
        if (second_leg_ok(w, q, w.flows->allocs[peer_alloc], now)) {
            finish(w, q, w.self_word, true, kEth, prefix, pad, now);
        }
    } else {
        punt_relayed(w, q, Counter::punt_own_address, now);
    }
    return true;
}

// No host entries: every destination resolves to its family's default,
// read (the main lcore may change it at any time; this stage sees one
// version per burst) and checked once per burst.
void route_defaults(Worker& w, Pkt* p, uint16_t n, uint64_t now) {
    const Allocation* allocs = w.flows->allocs;
    const uint64_t def4 = w.nexthops->default_word(4);
    const uint64_t def6 = w.nexthops->default_word(6);
    const bool ok4 = nexthop_usable(def4);
    const bool ok6 = nexthop_usable(def6);
    const uint32_t l2_4 = l2_bytes(def4);
    const uint32_t l2_6 = l2_bytes(def6);
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRoute || !ttl_left(q)) {
            continue;
        }
        uint32_t prefix, pad;
        const uint8_t* dst = destination(allocs, q, &prefix, &pad);
        if (own_destination(w, q, dst, prefix, pad, now)) {
            continue;
        }
        const bool v4 = q.out_family == 4;
        finish(w, q, v4 ? def4 : def6, v4 ? ok4 : ok6, v4 ? l2_4 : l2_6, prefix, pad, now);
    }
}

// Host entries or more specific routes exist: the destinations that may
// have a host entry (NextHops::need_lookup: while every entry is inside the
// kernel's more specific routes, only those inside them) are looked up
// together (rte_hash_lookup_bulk_data); the others, and a miss that no such
// route covers, take the family's default; a covered miss is punted.
void route_hosts(Worker& w, Pkt* p, uint16_t n, uint64_t now) {
    static_assert(kBurst <= RTE_HASH_LOOKUP_BULK_MAX);
    const Allocation* allocs = w.flows->allocs;
    const uint64_t def4 = w.nexthops->default_word(4);
    const uint64_t def6 = w.nexthops->default_word(6);
    NextHopKey keys[kBurst];
    const NextHopKey* kp[kBurst];
    uint16_t idx[kBurst];
    uint32_t prefix[kBurst], pad[kBurst];
    uint16_t cnt = 0;
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRoute || !ttl_left(q)) {
            continue;
        }
        const uint8_t* dst = destination(allocs, q, &prefix[cnt], &pad[cnt]);
        if (own_destination(w, q, dst, prefix[cnt], pad[cnt], now)) {
            continue;
        }
        if (!w.nexthops->need_lookup(q.out_family, dst)) {
            const uint64_t def = q.out_family == 4 ? def4 : def6;
            finish(w, q, def, nexthop_usable(def), l2_bytes(def), prefix[cnt], pad[cnt], now);
            continue;
        }
        keys[cnt] = NextHops::key(q.out_family, dst);
        kp[cnt] = &keys[cnt];
        idx[cnt++] = i;
    }
    if (cnt == 0) {
        return;
    }
    uint64_t host[kBurst];
    w.nexthops->host_words(kp, cnt, host);
    for (uint16_t j = 0; j < cnt; j++) {
        Pkt& q = p[idx[j]];
        const uint64_t nh =
            host[j] != 0 ? host[j] : w.nexthops->default_for(q.out_family, keys[j].ip, q.out_family == 4 ? def4 : def6);
        finish(w, q, nh, nexthop_usable(nh), l2_bytes(nh), prefix[j], pad[j], now);
    }
}

}  // namespace

void route(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc) {
    // Destinations are looked up only when there are host entries (the
    // kernel mirror and learning add them) or routes that the default does
    // not cover.
    if (w.nexthops->any_hosts() || w.nexthops->any_prefixes()) {
        route_hosts(w, p, n, now_tsc);
    } else {
        route_defaults(w, p, n, now_tsc);
    }
}

}  // namespace dp
