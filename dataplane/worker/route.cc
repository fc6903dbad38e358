// Stage 3: route. Decides whether the relayed packet can leave: resolves the
// L2 next hop of its destination (a miss is punted, never guessed), checks
// the rewritten size against the MTU (RFC 8656 section 12.6 leaves larger
// packets to the slow path, which can fragment or answer with ICMP) and that
// the mbuf has room for the headers rewrite will prepend. Rewrite itself
// then cannot fail.
//
// Cost (callgrind, IPv4, 10k flows): 72-84 instructions/packet.
//
// Edges: kPolice; kPunt (no next hop, MTU, no headroom).
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kEth = sizeof(rte_ether_hdr);

// STUN header + XOR-PEER-ADDRESS + DATA attribute header (RFC 8656 11.3).
constexpr uint16_t data_prefix(uint8_t family) { return static_cast<uint16_t>(20 + 4 + (family == 4 ? 8 : 20) + 4); }

}  // namespace

uint16_t data_indication_prefix(uint8_t family) { return data_prefix(family); }

namespace {

// One burst; kHosts: whether the next-hop table has host entries (else every
// destination resolves to its family's default, looked up once per burst).
template <bool kHosts>
void route_burst(Worker& w, Pkt* p, uint16_t n) {
    const Allocation* allocs = w.flows->allocs;
    const NextHops& nhs = *w.nexthops;
    const uint32_t mtu = w.cfg.mtu;
    // The defaults are read once per burst (the main lcore may change them
    // at any time; a burst sees one version) and checked once.
    const uint64_t def4 = nhs.default_word(4);
    const uint64_t def6 = nhs.default_word(6);
    const bool ok4 = def4 != 0 && NextHops::port_of(def4) < kMaxPorts;
    const bool ok6 = def6 != 0 && NextHops::port_of(def6) < kMaxPorts;
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRoute) {
            continue;
        }
        const bool v4 = q.out_family == 4;
        const uint8_t* dst;
        uint32_t prefix, pad;
        if (static_cast<uint8_t>(static_cast<uint8_t>(q.kind) - static_cast<uint8_t>(Kind::kToPeerChannel)) < 2) {
            static_assert(static_cast<uint8_t>(Kind::kToPeerSend) == static_cast<uint8_t>(Kind::kToPeerChannel) + 1);
            dst = q.peer_ip;  // kToPeerChannel, kToPeerSend
            prefix = 0;
            pad = 0;
        } else {
            dst = allocs[q.alloc].client_ip;
            if (q.kind == Kind::kToClientChannel) {
                prefix = 4;  // over UDP the padding is optional (12.5); not added
                pad = 0;
            } else {  // Data indication
                prefix = data_prefix(q.family);
                pad = (4 - (q.data_len & 3)) & 3;
            }
        }
        q.prefix_len = static_cast<uint16_t>(prefix);
        q.pad_len = static_cast<uint8_t>(pad);
        uint64_t nh = v4 ? def4 : def6;
        bool ok = v4 ? ok4 : ok6;
        if constexpr (kHosts) {
            const uint64_t h = nhs.host_word(q.out_family, dst);
            if (h != 0) {
                nh = h;
                ok = NextHops::port_of(h) < kMaxPorts;
            }
        } else {
            (void)dst;
        }
        if (unlikely(!ok)) {
            punt(q, Counter::punt_no_next_hop);
            continue;
        }
        NextHops::unpack(nh, &q.nh);
        // IP + UDP headers (+ the ChannelData or Data indication prefix)
        // rewrite puts in front of the data, and what follows the data.
        const uint32_t hdrs = (v4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)) + sizeof(rte_udp_hdr) + prefix;
        const uint32_t tail = uint32_t{q.data_len} + pad;
        if (unlikely(hdrs + tail > mtu)) {
            punt(q, Counter::punt_mtu);
            continue;
        }
        const uint8_t* data = reinterpret_cast<const uint8_t*>(q.udp + 1) + q.data_off;
        const uint8_t* buf = static_cast<const uint8_t*>(q.m->buf_addr);
        if (unlikely(data < buf + kEth + hdrs || data + tail > buf + q.m->buf_len)) {
            punt(q, Counter::punt_no_headroom);
            continue;
        }
        q.next = Next::kPolice;
    }
}

}  // namespace

void route(Worker& w, Pkt* p, uint16_t n) {
    // Host entries are looked up per packet (rte_hash_lookup_data) only
    // when there are some (the kernel mirror and learning add them).
    if (w.nexthops->any_hosts()) {
        route_burst<true>(w, p, n);
    } else {
        route_burst<false>(w, p, n);
    }
}

}  // namespace dp
