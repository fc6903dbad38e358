// IPv6 -> IPv6 rewrite of ChannelData, one straight-line function per
// direction, as rewrite44 (rewrite44.h) for IPv4: used by the rewrite stage
// (rewrite.cc) and by the express lane (express.cc). The generic
// rewrite_one<6, 6, ...> (rewrite.cc) stays for Send and Data indications.
//
// The 40-byte IPv6 header is built in registers and written with wide
// stores: version 6, the traffic class by the relay's TOS rule, flow label
// 0, payload length, next header UDP, hop limit one less than received
// (RFC 8656 section 14; at least 2 here: parse_udp6 or route.cc). The UDP
// checksum is updated incrementally (RFC 1624) from the received one over
// 32-bit words: IPv6 has no "no checksum" case to fill in (parse_udp6 and
// classify refuse a zero one).
#pragma once

#include "worker/rewrite44.h"

namespace dp {

template <Kind K>
inline __attribute__((always_inline)) void rewrite66(const RewriteCtx& c, Pkt& q) {
    static_assert(K == Kind::kToPeerChannel || K == Kind::kToClientChannel);
    constexpr bool to_peer = K == Kind::kToPeerChannel;
    const Allocation& a = c.allocs[q.alloc];
    uint8_t* payload = reinterpret_cast<uint8_t*>(q.udp + 1);

    // 1. The old headers, into registers before any byte is overwritten.
    // Traffic class: the 8 bits after the version, kept by the relay's rule.
    const uint32_t vtc = __builtin_bswap32(load32(q.l3));
    const uint32_t tclass = (((vtc >> 20) & 0xffu) & c.tos_keep()) | c.tos_set();
    const uint32_t hop = q.l3[offsetof(rte_ipv6_hdr, hop_limits)];
    const uint32_t old_ports = load32(q.udp);
    const uint32_t old_len_ck = load32(&q.udp->dgram_len);
    // Removed (RFC 1624 eqn. 3, as rewrite44): the old pseudo-header
    // (addresses, length; next header 17 before and after cancels) and UDP
    // header, whose length|checksum word brings -HC.
    uint64_t r = csum::sum_bytes(q.l3 + offsetof(rte_ipv6_hdr, src_addr), 32) + old_ports + old_len_ck +
                 static_cast<uint16_t>(old_len_ck);
    uint64_t s = 0;

    // 2. The data stays; the ChannelData header goes (to the peer, with any
    // padding after the data, as rewrite44) or comes (to the client).
    uint8_t* pre;
    uint32_t udp_len;
    if constexpr (to_peer) {
        pre = payload + 4;
        udp_len = sizeof(rte_udp_hdr) + q.data_len;
        add_channel_data_framing(r, payload, q);
    } else {
        pre = payload - 4;
        udp_len = sizeof(rte_udp_hdr) + 4 + q.data_len;
        const uint32_t h = q.channel_be | uint32_t{be16(q.data_len)} << 16;
        store32(pre, h);
        s += h;
    }

    // 3. New addresses and ports.
    const uint8_t* src;
    const uint8_t* dst;
    uint32_t ports;
    if constexpr (to_peer) {
        src = c.relay_ports->ip[a.relayed6_ip];
        dst = q.peer_ip;  // lookup or the lane put the channel's peer here
        ports = a.relayed6_port | uint32_t{q.peer_port_be} << 16;
    } else {
        src = c.listen->v6_ip[a.listen];
        dst = a.client_ip;
        ports = c.listen->v6_port[a.listen] | uint32_t{a.client_port} << 16;
    }
    const uint64_t s0 = load64(src), s1 = load64(src + 8);
    const uint64_t d0 = load64(dst), d1 = load64(dst + 8);
    const uint64_t addrs = csum::sum_bytes(src, 16) + csum::sum_bytes(dst, 16);
    const uint32_t len_hi = __builtin_bswap32(udp_len);  // the length, big-endian, in the upper half

    // 4. IPv6 header: version | traffic class | flow label 0, payload length
    // | next header | hop limit, addresses.
    auto* udp = reinterpret_cast<rte_udp_hdr*>(pre - sizeof(rte_udp_hdr));
    uint8_t* ip = reinterpret_cast<uint8_t*>(udp) - sizeof(rte_ipv6_hdr);
    const uint32_t h0 = __builtin_bswap32((6u << 28) | (tclass << 20));
    const uint32_t h1 = be16(static_cast<uint16_t>(udp_len)) | uint32_t{IPPROTO_UDP} << 16 | (hop - 1) << 24;
    store64(ip, h0 | uint64_t{h1} << 32);
    store64(ip + 8, s0);
    store64(ip + 16, s1);
    store64(ip + 24, d0);
    store64(ip + 32, d1);

    // 5. UDP header, its checksum from the same words.
    s += kNeg - r + addrs + ports + 2 * uint64_t{len_hi};
    store64(udp, ports | uint64_t{len_hi} << 16 | uint64_t{csum::finish_udp(s)} << 48);

    // 6. Ethernet, and the mbuf's new extent (rewrite44.h).
    finish_frame<RTE_ETHER_TYPE_IPV6>(q, ip, c.w.eth_src6, sizeof(rte_ipv6_hdr) + udp_len);
}

}  // namespace dp
