// Stage 5: rewrite, in place. The forwarded bytes (ChannelData payload, Send
// DATA value, or the peer's whole UDP payload) stay where they are; new
// headers are written in front of them in the space of the old ones and the
// mbuf headroom:
//   client -> peer:   [eth][ip relayed->peer][udp][data]
//   peer -> client:   [eth][ip listen->client][udp][ChannelData hdr][data]
//                     [eth][ip listen->client][udp][STUN hdr][XOR-PEER-ADDRESS][DATA hdr][data][pad]
// (RFC 8656 sections 11.3, 11.6, 12.4, 12.6). IPv4: TTL one less than
// received (IPv4 TTL or IPv6 hop limit, RFC 8656 section 14's preferred
// behaviour; route.cc dropped 0 and 1), DF, ID 0, TOS kept; IPv6: hop limit
// one less than received, traffic class kept, flow label 0. "Kept" by the
// relay's rule (ipc::Settings, RewriteCtx): (received & keep) | set, the
// received byte unchanged unless the control plane's [server].dscp fixes the
// DSCP (ECN always kept, RFC 8656 section 14). The UDP
// checksum is updated incrementally from the received one (common/checksum.h);
// an IPv4 datagram received without a checksum gets a full one.
//
// Cost (callgrind, IPv4, instructions/packet, before the per-family
// templates): 238 ChannelData -> peer, 327 Send -> peer, 223 peer ->
// ChannelData, 353 peer -> Data indication; 229 for ChannelData after, 246
// with the 8-way family/direction dispatch. With the IPv4 -> IPv4
// specialisation (rewrite44: wide stores, checksums from the header words,
// RFC 1624 over 32-bit words; bench, 10k flows, stage inclusive): 249 -> 117
// ChannelData -> peer, 340 -> 218 Send -> peer, 241 -> 121 peer ->
// ChannelData, 339 -> 193 peer -> Data indication (27 of those are the two
// xorshift draws for the transaction id; Send's are mostly the sums of the
// STUN bytes around the DATA value). The IPv4 -> IPv4 functions live in
// rewrite44.h, shared with the express lane (express.cc), which rewrites the
// ChannelData it finishes itself.
//
// A next hop on a VLAN gets its 802.1Q tag: from rewrite44 with the other
// headers, after the generic rewrite from push_vlan.
//
// Edges: kTx. route.cc has already checked next hop, MTU and headroom.
#include <bit>
#include <cstring>

#include "common/checksum.h"
#include "net/address.h"
#include "stun/constants.h"
#include "worker/rewrite44.h"
#include "worker/rewrite66.h"
#include "worker/stages.h"

namespace dp {

namespace {

// Pseudo-header sums (RFC 768, RFC 8200 section 8.1), unfolded.
uint64_t pseudo4(uint32_t src, uint32_t dst, uint16_t len_be) {
    return uint64_t{src} + dst + rte_cpu_to_be_16(IPPROTO_UDP) + len_be;
}
uint64_t pseudo6(const uint8_t* src, const uint8_t* dst, uint16_t len_be) {
    return csum::sum_bytes(src, 16) + csum::sum_bytes(dst, 16) + rte_cpu_to_be_16(IPPROTO_UDP) + len_be;
}

struct Endpoint {
    uint8_t ip[16];
    uint16_t port_be;
};

// Instantiated per received family (In), built family (Out) and direction,
// so each variant is straight-line code (measured: 238 -> 229
// instructions/packet for IPv4 ChannelData). In != Out relays between
// families (RFC 8656 allocations with a relayed address of the other family).
// Used for IPv6 and between families; IPv4 -> IPv4 has rewrite44 below.
template <uint8_t In, uint8_t Out, bool ToPeer>
void rewrite_one(const RewriteCtx& c, Pkt& q) {
    Worker& w = c.w;
    const Allocation& a = c.allocs[q.alloc];
    constexpr size_t ilen = Out == 4 ? 4 : 16;
    constexpr uint16_t iph = Out == 4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr);
    uint8_t* payload = reinterpret_cast<uint8_t*>(q.udp + 1);
    uint8_t* data = payload + q.data_off;
    constexpr bool to_peer = ToPeer;

    // 1. Everything needed from the old headers, before any byte is overwritten.
    Endpoint old_src;
    uint32_t tclass;  // IPv4 TOS or IPv6 traffic class
    const uint16_t old_ck = q.udp->dgram_cksum;
    bool full = false;
    uint64_t pseudo_old;
    if constexpr (In == 4) {
        const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(q.l3);
        std::memcpy(old_src.ip, &ip->src_addr, 4);
        tclass = ip->type_of_service;
        full = old_ck == 0;  // IPv4 allows "no checksum"; we send one
        pseudo_old = pseudo4(ip->src_addr, ip->dst_addr, q.udp->dgram_len);
    } else {
        const auto* ip = reinterpret_cast<const rte_ipv6_hdr*>(q.l3);
        std::memcpy(old_src.ip, ip->src_addr, 16);
        tclass = (rte_be_to_cpu_32(ip->vtc_flow) >> 20) & 0xff;
        pseudo_old = pseudo6(ip->src_addr, ip->dst_addr, q.udp->dgram_len);
    }
    tclass = (tclass & c.tos_keep()) | c.tos_set();  // the relay's rule (RewriteCtx)
    const uint8_t ttl = static_cast<uint8_t>(received_ttl(q) - 1);  // >= 1: route.cc dropped 0 and 1
    old_src.port_be = q.udp->src_port;
    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with m everything of the old
    // datagram that is not kept (pseudo-header, UDP header, bytes around the
    // data) and m' everything new; accumulated unfolded, folded once each.
    uint64_t removed = 0;
    if (!full) {
        removed = uint64_t{pseudo_old} + csum::udp_header_sum(q.udp);
        if constexpr (to_peer) {
            const uint32_t tail_off = uint32_t{q.data_off} + q.data_len;
            removed += csum::sum_bytes(payload, q.data_off);  // data_off is even (4, or a STUN attribute offset)
            if (tail_off < q.plen) {
                removed += csum::range(payload + tail_off, q.plen - tail_off, (tail_off & 1) != 0);
            }
        }
    }

    // 2. New endpoints.
    Endpoint src, dst;
    if constexpr (to_peer) {
        if constexpr (Out == 4) {
            std::memcpy(src.ip, &a.v4.ip, 4);
            src.port_be = a.relayed4_port;
        } else {
            std::memcpy(src.ip, w.flows->relay_ports->ip[a.relayed6_ip], 16);
            src.port_be = a.relayed6_port;
        }
        std::memcpy(dst.ip, q.peer_ip, ilen);  // lookup put the channel's peer here too
        dst.port_be = q.peer_port_be;
    } else {
        const ListenSet& l = *c.listen;
        if constexpr (Out == 4) {
            std::memcpy(src.ip, &l.v4_ip[a.listen], 4);
            src.port_be = l.v4_port[a.listen];
        } else {
            std::memcpy(src.ip, l.v6_ip[a.listen], 16);
            src.port_be = l.v6_port[a.listen];
        }
        std::memcpy(dst.ip, a.client_ip, ilen);
        dst.port_be = a.client_port;
    }

    // 3. Prefix and padding (to-client).
    uint8_t* pre = data - q.prefix_len;
    if (q.kind == Kind::kToClientChannel) {
        std::memcpy(pre, &q.channel_be, 2);
        store_be16(pre + 2, q.data_len);
    } else if (q.kind == Kind::kToClientData) {
        constexpr uint16_t alen = In == 4 ? 8 : 20;  // XOR-PEER-ADDRESS: the peer, i.e. the received packet's source
        store_be16(pre, kDataIndication);
        store_be16(pre + 2, static_cast<uint16_t>(q.prefix_len - 20 + q.data_len + q.pad_len));
        const uint32_t cookie = rte_cpu_to_be_32(turn::stun::kMagicCookie);
        std::memcpy(pre + 4, &cookie, 4);
        const uint64_t r1 = w.next_random();
        const uint32_t r2 = static_cast<uint32_t>(w.next_random());
        std::memcpy(pre + 8, &r1, 8);
        std::memcpy(pre + 16, &r2, 4);
        uint8_t* x = pre + 20;
        store_be16(x, turn::stun::attr::kXorPeerAddress);
        store_be16(x + 2, alen);
        x[4] = 0;
        x[5] = In == 4 ? turn::kStunFamilyIPv4 : turn::kStunFamilyIPv6;
        const uint16_t xport = old_src.port_be ^ rte_cpu_to_be_16(0x2112);
        std::memcpy(x + 6, &xport, 2);
        for (uint16_t i = 0; i < alen - 4; i++) {  // XOR with cookie + transaction id
            x[8 + i] = old_src.ip[i] ^ pre[4 + i];
        }
        uint8_t* dh = x + 4 + alen;
        store_be16(dh, turn::stun::attr::kData);
        store_be16(dh + 2, q.data_len);
        std::memset(data + q.data_len, 0, q.pad_len);
    }
    const uint16_t udp_len = static_cast<uint16_t>(sizeof(rte_udp_hdr) + q.prefix_len + q.data_len + q.pad_len);
    uint64_t added = q.prefix_len != 0 ? csum::sum_bytes(pre, q.prefix_len) : 0;  // padding zeros add nothing

    // 4. UDP and IP headers.
    auto* udp = reinterpret_cast<rte_udp_hdr*>(pre - sizeof(rte_udp_hdr));
    udp->src_port = src.port_be;
    udp->dst_port = dst.port_be;
    udp->dgram_len = rte_cpu_to_be_16(udp_len);
    udp->dgram_cksum = 0;
    uint8_t* l3 = reinterpret_cast<uint8_t*>(udp) - iph;
    uint64_t pseudo_new;
    if constexpr (Out == 4) {
        auto* ip = reinterpret_cast<rte_ipv4_hdr*>(l3);
        ip->version_ihl = 0x45;
        ip->type_of_service = static_cast<uint8_t>(tclass);
        ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(iph + udp_len));
        ip->packet_id = 0;
        ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
        ip->time_to_live = ttl;
        ip->next_proto_id = IPPROTO_UDP;
        std::memcpy(&ip->src_addr, src.ip, 4);
        std::memcpy(&ip->dst_addr, dst.ip, 4);
        ip->hdr_checksum = 0;
        ip->hdr_checksum = csum::ipv4_header(ip);
        pseudo_new = pseudo4(ip->src_addr, ip->dst_addr, udp->dgram_len);
    } else {
        auto* ip = reinterpret_cast<rte_ipv6_hdr*>(l3);
        ip->vtc_flow = rte_cpu_to_be_32((6u << 28) | (tclass << 20));
        ip->payload_len = rte_cpu_to_be_16(udp_len);
        ip->proto = IPPROTO_UDP;
        ip->hop_limits = ttl;
        std::memcpy(ip->src_addr, src.ip, 16);
        std::memcpy(ip->dst_addr, dst.ip, 16);
        pseudo_new = pseudo6(ip->src_addr, ip->dst_addr, udp->dgram_len);
    }
    if (likely(!full)) {
        added += uint64_t{pseudo_new} + udp->src_port + udp->dst_port + udp->dgram_len;
        udp->dgram_cksum = csum::finish_udp(uint64_t{csum::neg(old_ck)} + csum::neg(csum::fold(removed)) + added);
    } else if constexpr (Out == 4) {
        udp->dgram_cksum = rte_ipv4_udptcp_cksum(reinterpret_cast<const rte_ipv4_hdr*>(l3), udp);
    } else {
        udp->dgram_cksum = rte_ipv6_udptcp_cksum(reinterpret_cast<const rte_ipv6_hdr*>(l3), udp);
    }

    // 5. Ethernet, from the next hop.
    // Stored bytewise, not through rte_ether_hdr (2-byte aligned): the new
    // headers start wherever the forwarded bytes put them.
    uint8_t* eth = l3 - sizeof(rte_ether_hdr);
    const uint16_t type = rte_cpu_to_be_16(Out == 4 ? RTE_ETHER_TYPE_IPV4 : RTE_ETHER_TYPE_IPV6);
    std::memcpy(eth, &q.nh.mac, RTE_ETHER_ADDR_LEN);
    std::memcpy(eth + RTE_ETHER_ADDR_LEN, &w.cfg.port_mac[q.nh.port], RTE_ETHER_ADDR_LEN);
    std::memcpy(eth + offsetof(rte_ether_hdr, ether_type), &type, 2);

    rte_mbuf* m = q.m;
    m->data_off = static_cast<uint16_t>(eth - static_cast<uint8_t*>(m->buf_addr));
    m->data_len = static_cast<uint16_t>(sizeof(rte_ether_hdr) + iph + udp_len);
    m->pkt_len = m->data_len;
    // The rx flags (checksum status, RSS hash, VLAN) described the received
    // packet; who owns the buffer stays: a PMD may attach its own memory
    // (mlx5's multi-packet rx queues do), and without the flag freeing the
    // mbuf would return it to the pool and never release that memory.
    m->ol_flags &= RTE_MBUF_F_EXTERNAL | RTE_MBUF_F_INDIRECT;
    q.next = Next::kTx;
}

// The 802.1Q tag of a next hop on a VLAN, after the generic rewrite (route
// left room for it): the two MACs move 4 bytes forward, the tag (priority
// 0, the VLAN ID) goes between them and the type. (rte_vlan_insert does the
// same, but refuses mbufs with external buffers, which some PMDs receive
// into.) rewrite44 writes the tag itself.
inline void push_vlan(Pkt& q) {
    rte_mbuf* m = q.m;
    uint8_t* old = rte_pktmbuf_mtod(m, uint8_t*);
    uint8_t* eth = old - sizeof(rte_vlan_hdr);
    std::memmove(eth, old, 2 * RTE_ETHER_ADDR_LEN);
    store_be16(eth + 2 * RTE_ETHER_ADDR_LEN, RTE_ETHER_TYPE_VLAN);
    store_be16(eth + 2 * RTE_ETHER_ADDR_LEN + 2, q.nh.vlan);
    m->data_off = static_cast<uint16_t>(m->data_off - sizeof(rte_vlan_hdr));
    m->data_len = static_cast<uint16_t>(m->data_len + sizeof(rte_vlan_hdr));
    m->pkt_len = m->data_len;
}

// Every kind, family and direction, without the specialisations: the
// fallback of rewrite_packet, and the reference the tests compare rewrite44
// and rewrite66 with (rewrite_generic_only).
inline void rewrite_generic(const RewriteCtx& c, Pkt& q) {
    const bool to_peer = q.kind == Kind::kToPeerChannel || q.kind == Kind::kToPeerSend;
    switch ((q.family == 6 ? 4 : 0) | (q.out_family == 6 ? 2 : 0) | (to_peer ? 1 : 0)) {
    // 0 and 1 (IPv4 -> IPv4) are taken by rewrite44 for every kind rewrite
    // sees today, and 6 and 7 by rewrite66 for ChannelData; the generic
    // version stays as the fallback for a kind that gets no specialisation.
    case 0: rewrite_one<4, 4, false>(c, q); break;
    case 1: rewrite_one<4, 4, true>(c, q); break;
    case 2: rewrite_one<4, 6, false>(c, q); break;
    case 3: rewrite_one<4, 6, true>(c, q); break;
    case 4: rewrite_one<6, 4, false>(c, q); break;
    case 5: rewrite_one<6, 4, true>(c, q); break;
    case 6: rewrite_one<6, 6, false>(c, q); break;
    default: rewrite_one<6, 6, true>(c, q); break;
    }
    if (unlikely(q.nh.vlan != 0)) {
        push_vlan(q);
    }
}

inline void rewrite_packet(const RewriteCtx& c, Pkt& q) {
    if (likely(q.family == 4 && q.out_family == 4)) {
        if (q.kind == Kind::kToPeerChannel) {
            rewrite44<Kind::kToPeerChannel>(c, q);
            return;
        }
        if (q.kind == Kind::kToClientChannel) {
            rewrite44<Kind::kToClientChannel>(c, q);
            return;
        }
        if (q.kind == Kind::kToPeerSend) {
            rewrite44<Kind::kToPeerSend>(c, q);
            return;
        }
        if (q.kind == Kind::kToClientData) {
            rewrite44<Kind::kToClientData>(c, q);
            return;
        }
    }
    if (q.family == 6 && q.out_family == 6) {
        if (q.kind == Kind::kToPeerChannel) {
            rewrite66<Kind::kToPeerChannel>(c, q);
            return;
        }
        if (q.kind == Kind::kToClientChannel) {
            rewrite66<Kind::kToClientChannel>(c, q);
            return;
        }
    }
    rewrite_generic(c, q);
}

}  // namespace

void rewrite_generic_only(const RewriteCtx& c, Pkt& q) { rewrite_generic(c, q); }

void rewrite(Worker& w, Pkt* p, uint16_t n) {
    const RewriteCtx c = rewrite_ctx(w, w.flows->allocs, w.flows->listen);
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRewrite) {
            continue;
        }
        rewrite_packet(c, q);
    }
}

}  // namespace dp
