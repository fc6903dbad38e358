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

uint16_t ip_header_len(uint8_t family) { return family == 4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr); }

}  // namespace

// STUN header + XOR-PEER-ADDRESS + DATA attribute header (RFC 8656 11.3).
uint16_t data_indication_prefix(uint8_t family) { return static_cast<uint16_t>(20 + 4 + (family == 4 ? 8 : 20) + 4); }

void route(Worker& w, Pkt* p, uint16_t n) {
    const Allocation* allocs = w.flows->allocs;
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRoute) {
            continue;
        }
        const uint8_t* dst;
        switch (q.kind) {
        case Kind::kToPeerChannel:
        case Kind::kToPeerSend: dst = q.peer_ip; q.prefix_len = 0; q.pad_len = 0; break;
        case Kind::kToClientChannel:
            dst = allocs[q.alloc].client_ip;
            q.prefix_len = 4;  // over UDP the padding is optional (12.5); not added
            q.pad_len = 0;
            break;
        default:
            dst = allocs[q.alloc].client_ip;
            q.prefix_len = data_indication_prefix(q.family);
            q.pad_len = static_cast<uint8_t>((4 - (q.data_len & 3)) & 3);
            break;
        }
        if (unlikely(!w.nexthops->resolve(q.out_family, dst, &q.nh) || q.nh.port >= kMaxPorts)) {
            punt(q, Counter::punt_no_next_hop);
            continue;
        }
        const uint32_t ip_total = uint32_t{ip_header_len(q.out_family)} + sizeof(rte_udp_hdr) + q.prefix_len + q.data_len + q.pad_len;
        if (unlikely(ip_total > w.cfg.mtu)) {
            punt(q, Counter::punt_mtu);
            continue;
        }
        const uint8_t* data = reinterpret_cast<const uint8_t*>(q.udp + 1) + q.data_off;
        const uint8_t* buf = static_cast<const uint8_t*>(q.m->buf_addr);
        const size_t front = size_t{kEth} + ip_header_len(q.out_family) + sizeof(rte_udp_hdr) + q.prefix_len;
        if (unlikely(data < buf + front || data + q.data_len + q.pad_len > buf + q.m->buf_len)) {
            punt(q, Counter::punt_no_headroom);
            continue;
        }
        q.next = Next::kPolice;
    }
}

}  // namespace dp
