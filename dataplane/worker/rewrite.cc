// Stage 5: rewrite, in place. The forwarded bytes (ChannelData payload, Send
// DATA value, or the peer's whole UDP payload) stay where they are; new
// headers are written in front of them in the space of the old ones and the
// mbuf headroom:
//   client -> peer:   [eth][ip relayed->peer][udp][data]
//   peer -> client:   [eth][ip listen->client][udp][ChannelData hdr][data]
//                     [eth][ip listen->client][udp][STUN hdr][XOR-PEER-ADDRESS][DATA hdr][data][pad]
// (RFC 8656 sections 11.3, 11.6, 12.4, 12.6). IPv4: TTL 64, DF, ID 0, TOS
// kept; IPv6: hop limit 64, traffic class kept, flow label 0. The UDP
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
// STUN bytes around the DATA value). Still one of the largest stages; fusing
// it with classify for the common case is the next step.
//
// Edges: kTx. route.cc has already checked next hop, MTU and headroom.
#include <bit>
#include <cstring>

#include "common/checksum.h"
#include "net/address.h"
#include "stun/constants.h"
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kDataIndication = 0x0017;
static_assert(turn::stun::make_type(turn::stun::Method::kData, turn::stun::Class::kIndication) == kDataIndication);

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
void rewrite_one(Worker& w, Pkt& q) {
    const Allocation& a = w.flows->allocs[q.alloc];
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
            std::memcpy(src.ip, &a.relayed4_ip, 4);
            src.port_be = a.relayed4_port;
        } else {
            std::memcpy(src.ip, w.flows->relay_ports->ip[a.relayed6_ip], 16);
            src.port_be = a.relayed6_port;
        }
        std::memcpy(dst.ip, q.peer_ip, ilen);  // lookup put the channel's peer here too
        dst.port_be = q.peer_port_be;
    } else {
        const ListenSet& l = *w.flows->listen;
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
        ip->time_to_live = 64;
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
        ip->hop_limits = 64;
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
    auto* eth = reinterpret_cast<rte_ether_hdr*>(l3 - sizeof(rte_ether_hdr));
    eth->dst_addr = q.nh.mac;
    eth->src_addr = w.cfg.port_mac[q.nh.port];
    eth->ether_type = rte_cpu_to_be_16(Out == 4 ? RTE_ETHER_TYPE_IPV4 : RTE_ETHER_TYPE_IPV6);

    rte_mbuf* m = q.m;
    m->data_off = static_cast<uint16_t>(reinterpret_cast<uint8_t*>(eth) - static_cast<uint8_t*>(m->buf_addr));
    m->data_len = static_cast<uint16_t>(sizeof(rte_ether_hdr) + iph + udp_len);
    m->pkt_len = m->data_len;
    m->ol_flags = 0;
    q.next = Next::kTx;
}

// ---- IPv4 -> IPv4, one straight-line function per kind ----
//
// The common case gets its own code: every header field is built in
// registers and written with a few wide stores, and both checksums come from
// those same words instead of re-reading the headers or looping over runtime
// lengths. The words are assembled by shifting, so this assumes the
// little-endian layout of the x86-64/arm64 targets DPDK runs on.
static_assert(std::endian::native == std::endian::little, "the IPv4 fast path assembles header words by shifting");

constexpr uint16_t be16(uint16_t v) { return static_cast<uint16_t>((v >> 8) | (v << 8)); }

// What rewrite44 needs of the worker, loaded once per burst (the compiler
// cannot hoist these loads itself past the packet stores).
struct Ctx {
    Worker& w;
    const Allocation* allocs;
    const ListenSet* listen;
};

// One's complement subtraction without a per-word ~: everything removed is
// summed, unfolded, and subtracted from this multiple of 0xffff (2^32 - 1 is
// one, so is any multiple of it), which is larger than any such sum (a
// datagram has fewer than 2^24 32-bit words): kNeg - r is non-negative and
// congruent to -r modulo 0xffff, which is all a folded sum depends on.
constexpr uint64_t kNeg = uint64_t{0xffffffff} << 24;

template <Kind K>
void rewrite44(const Ctx& c, Pkt& q) {
    constexpr bool to_peer = K == Kind::kToPeerChannel || K == Kind::kToPeerSend;
    const Allocation& a = c.allocs[q.alloc];
    uint8_t* payload = reinterpret_cast<uint8_t*>(q.udp + 1);

    // 1. The old headers, into registers before any byte is overwritten (the
    // new headers overlap them).
    const uint32_t old_src = load32(q.l3 + 12);
    const uint32_t old_dst = load32(q.l3 + 16);
    const uint32_t tos = q.l3[1];
    const uint32_t old_ports = load32(q.udp);               // source port | destination port
    const uint32_t old_len_ck = load32(&q.udp->dgram_len);  // length | checksum
    const bool full = (old_len_ck >> 16) == 0;             // IPv4 "no checksum": we send one

    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), ~x being -x in one's
    // complement. Removed (r): the old pseudo-header and UDP header; the
    // length|checksum word brings -HC (= ~HC) and the header's length, the
    // pseudo-header's length is added once more, and the protocol (17
    // before and after) cancels. Added (s): everything new, below.
    uint64_t r = uint64_t{old_src} + old_dst + old_ports + old_len_ck + static_cast<uint16_t>(old_len_ck);
    uint64_t s = 0;

    // 2. Where the data stays, what goes in front of it, and the new UDP length.
    uint8_t* pre;  // start of the new UDP payload
    uint32_t udp_len;
    if constexpr (K == Kind::kToPeerChannel) {
        // Removed: the ChannelData header and whatever follows the data
        // (padding, 0-3 bytes from a client that pads; any length is
        // accepted). A short tail is summed from the last 4 bytes of the
        // datagram (plen >= 4 + data_len, so they are inside it) with the
        // data bytes masked off; at an odd offset its bytes sit in the other
        // halves of the 16-bit words, which a rotation by 8 restores.
        pre = payload + 4;
        udp_len = sizeof(rte_udp_hdr) + q.data_len;
        r += load32(payload);
        const uint32_t tail = uint32_t{q.plen} - 4 - q.data_len;
        if (tail != 0) {  // clients need not pad over UDP (RFC 8656 12.5)
            if (likely(tail <= 3)) {
                const uint32_t v = load32(payload + q.plen - 4) & static_cast<uint32_t>(~uint64_t{0} << (8 * (4 - tail)));
                r += std::rotl(v, static_cast<int>(8 * (q.plen & 1u)));
            } else {
                const uint32_t tail_off = 4u + q.data_len;
                r += csum::range(payload + tail_off, tail, (tail_off & 1) != 0);
            }
        }
    } else if constexpr (K == Kind::kToPeerSend) {
        // Removed: the STUN header and attributes before the DATA value
        // (data_off is even: attributes are 4-aligned) and everything after it.
        pre = payload + q.data_off;
        udp_len = sizeof(rte_udp_hdr) + q.data_len;
        r += csum::sum_bytes(payload, q.data_off);
        const uint32_t tail_off = uint32_t{q.data_off} + q.data_len;
        if (tail_off < q.plen) {
            r += csum::range(payload + tail_off, q.plen - tail_off, (tail_off & 1) != 0);
        }
    } else if constexpr (K == Kind::kToClientChannel) {
        // Added: the 4-byte ChannelData header, no padding over UDP (route.cc
        // set prefix_len 4 and pad_len 0 and checked room and MTU for that).
        pre = payload - 4;
        udp_len = sizeof(rte_udp_hdr) + 4 + q.data_len;
        const uint32_t h = q.channel_be | uint32_t{be16(q.data_len)} << 16;
        store32(pre, h);
        s += h;
    } else {
        // Added: STUN header, XOR-PEER-ADDRESS (the received packet's source)
        // and DATA header, 36 bytes (route.cc's data_indication_prefix(4));
        // the padding zeros add nothing.
        static_assert(K == Kind::kToClientData);
        constexpr uint16_t kPrefix = 20 + 4 + 8 + 4;
        pre = payload - kPrefix;
        udp_len = sizeof(rte_udp_hdr) + kPrefix + q.data_len + q.pad_len;
        if (q.pad_len != 0) {
            // 1-3 zero bytes after at least 1 data byte, as one masked 4-byte
            // store ending at the padding's end (route.cc checked it is
            // inside the buffer).
            uint8_t* end = payload + q.data_len + q.pad_len;
            store32(end - 4, load32(end - 4) & (0xffffffffu >> (8 * q.pad_len)));
        }
        const uint32_t cookie = rte_cpu_to_be_32(turn::stun::kMagicCookie);
        const uint32_t h0 = be16(kDataIndication) | uint32_t{be16(static_cast<uint16_t>(kPrefix - 20 + q.data_len + q.pad_len))} << 16;
        const uint64_t r1 = c.w.next_random();  // transaction id; same calls as the generic path
        const uint32_t r2 = static_cast<uint32_t>(c.w.next_random());
        const uint32_t x0 = be16(turn::stun::attr::kXorPeerAddress) | uint32_t{be16(8)} << 16;
        const uint32_t x1 = uint32_t{turn::kStunFamilyIPv4} << 8 |
                            uint32_t{static_cast<uint16_t>(old_ports ^ be16(static_cast<uint16_t>(turn::stun::kMagicCookie >> 16)))} << 16;
        const uint32_t x2 = old_src ^ cookie;
        const uint32_t d0 = be16(turn::stun::attr::kData) | uint32_t{be16(q.data_len)} << 16;
        store32(pre, h0);
        store32(pre + 4, cookie);
        store64(pre + 8, r1);
        store32(pre + 16, r2);
        store32(pre + 20, x0);
        store32(pre + 24, x1);
        store32(pre + 28, x2);
        store32(pre + 32, d0);
        s += uint64_t{h0} + cookie + static_cast<uint32_t>(r1) + (r1 >> 32) + r2 + x0 + x1 + x2 + d0;
    }

    // 3. New addresses and ports.
    uint32_t src, dst, ports;
    if constexpr (to_peer) {
        src = a.relayed4_ip;
        dst = load32(q.peer_ip);  // lookup put the channel's peer here too
        ports = a.relayed4_port | uint32_t{q.peer_port_be} << 16;
    } else {
        src = c.listen->v4_ip[a.listen];
        dst = load32(a.client_ip);
        ports = c.listen->v4_port[a.listen] | uint32_t{a.client_port} << 16;
    }
    const uint64_t addrs = uint64_t{src} + dst;
    // bswap32 of a 16-bit length is its big-endian form in the upper half:
    // the second 16-bit word of a 32-bit word, and worth the same in a sum.
    const uint32_t len_hi = __builtin_bswap32(udp_len);

    // 4. IPv4 header: version/IHL, TOS, total length | ID 0, DF | TTL 64,
    // UDP, checksum | addresses; its checksum from the same words.
    auto* udp = reinterpret_cast<rte_udp_hdr*>(pre - sizeof(rte_udp_hdr));
    uint8_t* ip = reinterpret_cast<uint8_t*>(udp) - sizeof(rte_ipv4_hdr);
    const uint32_t h0 = 0x45u | tos << 8 | __builtin_bswap32(static_cast<uint32_t>(sizeof(rte_ipv4_hdr)) + udp_len);
    constexpr uint32_t h1 = uint32_t{be16(RTE_IPV4_HDR_DF_FLAG)} << 16;
    constexpr uint32_t h2 = 64u | uint32_t{IPPROTO_UDP} << 8;
    const uint16_t ip_ck = csum::neg(csum::fold(uint64_t{h0} + h1 + h2 + addrs));
    store64(ip, h0 | uint64_t{h1} << 32);
    store32(ip + 8, h2 | uint32_t{ip_ck} << 16);
    store64(ip + 12, src | uint64_t{dst} << 32);

    // 5. UDP header; the checksum adds the new pseudo-header (addresses,
    // length) and header (ports, length).
    const uint64_t u = ports | uint64_t{len_hi} << 16;
    if (likely(!full)) {
        s += kNeg - r + addrs + ports + 2 * uint64_t{len_hi};
        store64(udp, u | uint64_t{csum::finish_udp(s)} << 48);
    } else {
        store64(udp, u);
        udp->dgram_cksum = rte_ipv4_udptcp_cksum(reinterpret_cast<const rte_ipv4_hdr*>(ip), udp);
    }

    // 6. Ethernet, from the next hop: destination MAC (the 8-byte store
    // spills 2 bytes that the next one overwrites), source MAC, type.
    uint8_t* eth = ip - sizeof(rte_ether_hdr);
    uint64_t nh;
    static_assert(sizeof(NextHop) == 8);
    std::memcpy(&nh, &q.nh, 8);
    const uint8_t* smac = c.w.cfg.port_mac[q.nh.port].addr_bytes;
    const uint64_t smac48 = load32(smac) | uint64_t{static_cast<uint16_t>(smac[4] | smac[5] << 8)} << 32;
    store64(eth, nh);
    store64(eth + 6, smac48 | uint64_t{be16(RTE_ETHER_TYPE_IPV4)} << 48);

    rte_mbuf* m = q.m;
    m->data_off = static_cast<uint16_t>(eth - static_cast<uint8_t*>(m->buf_addr));
    m->data_len = static_cast<uint16_t>(sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + udp_len);
    m->pkt_len = m->data_len;
    m->ol_flags = 0;
    q.next = Next::kTx;
}

}  // namespace

void rewrite(Worker& w, Pkt* p, uint16_t n) {
    const Ctx c{w, w.flows->allocs, w.flows->listen};
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kRewrite) {
            continue;
        }
        if (likely(q.family == 4 && q.out_family == 4)) {
            if (q.kind == Kind::kToPeerChannel) {
                rewrite44<Kind::kToPeerChannel>(c, q);
                continue;
            }
            if (q.kind == Kind::kToClientChannel) {
                rewrite44<Kind::kToClientChannel>(c, q);
                continue;
            }
            if (q.kind == Kind::kToPeerSend) {
                rewrite44<Kind::kToPeerSend>(c, q);
                continue;
            }
            if (q.kind == Kind::kToClientData) {
                rewrite44<Kind::kToClientData>(c, q);
                continue;
            }
        }
        const bool to_peer = q.kind == Kind::kToPeerChannel || q.kind == Kind::kToPeerSend;
        switch ((q.family == 6 ? 4 : 0) | (q.out_family == 6 ? 2 : 0) | (to_peer ? 1 : 0)) {
        // 0 and 1 (IPv4 -> IPv4) are taken by rewrite44 above for every kind
        // rewrite sees today; the generic version stays as the fallback for
        // a kind that gets no specialisation.
        case 0: rewrite_one<4, 4, false>(w, q); break;
        case 1: rewrite_one<4, 4, true>(w, q); break;
        case 2: rewrite_one<4, 6, false>(w, q); break;
        case 3: rewrite_one<4, 6, true>(w, q); break;
        case 4: rewrite_one<6, 4, false>(w, q); break;
        case 5: rewrite_one<6, 4, true>(w, q); break;
        case 6: rewrite_one<6, 6, false>(w, q); break;
        default: rewrite_one<6, 6, true>(w, q); break;
        }
    }
}

}  // namespace dp
