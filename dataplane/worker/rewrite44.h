// IPv4 -> IPv4 rewrite, one straight-line function per kind: used by the
// rewrite stage (rewrite.cc) and by the express lane (express.cc), which
// rewrites the packets it finishes at once. See rewrite.cc for the layouts
// and the RFC sections.
#pragma once

#include <bit>
#include <cstring>

#include "common/checksum.h"
#include "net/address.h"
#include "stun/constants.h"
#include "worker/stages.h"

namespace dp {

constexpr uint16_t kDataIndication = 0x0017;
static_assert(turn::stun::make_type(turn::stun::Method::kData, turn::stun::Class::kIndication) == kDataIndication);

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
struct RewriteCtx {
    Worker& w;
    const Allocation* allocs;
    const ListenSet* listen;
    // The relay-wide TOS rule (FlowTables::tos_rule, ipc::Settings): the
    // relayed datagram's IPv4 TOS / IPv6 Traffic Class is
    // (received & keep) | set. For rewrite44, in place in the first word of
    // an IPv4 header (version/IHL, TOS, total length): tos_and = keep << 8,
    // tos_or = set << 8 | 0x45 (version 4, IHL 5).
    uint32_t tos_and;
    uint32_t tos_or;
    const RelayPorts* relay_ports;  // IPv6 relayed IPs (rewrite66)
    uint8_t tos_keep() const { return static_cast<uint8_t>(tos_and >> 8); }
    uint8_t tos_set() const { return static_cast<uint8_t>(tos_or >> 8); }
};

// The context of one burst: the TOS rule process_burst loaded for it (one
// relaxed load per burst, shared by the express lane and the rewrite stage;
// a rule that changes during the burst applies from the next).
inline RewriteCtx rewrite_ctx(Worker& w, const Allocation* allocs, const ListenSet* listen) {
    const uint32_t rule = w.tos_rule;
    return RewriteCtx{w, allocs, listen, (rule & 0xffu) << 8, (rule & 0xff00u) | 0x45u, w.flows->relay_ports};
}

// Tests only: the generic rewrite of rewrite.cc (any kind, family and
// direction; the 802.1Q tag pushed after), without rewrite44 and rewrite66,
// to compare them with it on the same packets.
void rewrite_generic_only(const RewriteCtx& c, Pkt& q);

// One's complement subtraction without a per-word ~: everything removed is
// summed, unfolded, and subtracted from this multiple of 0xffff (2^32 - 1 is
// one, so is any multiple of it), which is larger than any such sum (a
// datagram has fewer than 2^24 32-bit words): kNeg - r is non-negative and
// congruent to -r modulo 0xffff, which is all a folded sum depends on.
constexpr uint64_t kNeg = uint64_t{0xffffffff} << 24;

// The last step of rewrite44 and rewrite66: the Ethernet header in front of
// the new IP header at `ip` (l3_len bytes of IP datagram), from the next
// hop: destination MAC (the 8-byte store spills 2 bytes that the next one
// overwrites), source MAC and type (eth_src: the worker's eth_src4 or
// eth_src6 words); for a next hop on a VLAN, the 802.1Q tag (TPID, priority
// 0 and the VLAN ID) before the type (route.cc or the express lane checked
// the room). Then the mbuf's new start and length; q goes to tx.
template <uint16_t EtherType>
inline __attribute__((always_inline)) void finish_frame(Pkt& q, uint8_t* ip, const uint64_t* eth_src, uint32_t l3_len) {
    uint8_t* eth = ip - sizeof(rte_ether_hdr);
    uint64_t nh;
    static_assert(offsetof(NextHop, port) == 6 && sizeof(NextHop::port) == 2);  // MAC + port: 8 bytes
    std::memcpy(&nh, &q.nh, 8);
    if (likely(q.nh.vlan == 0)) {
        store64(eth, nh);
        store64(eth + 6, eth_src[q.nh.port]);
    } else {
        eth -= sizeof(rte_vlan_hdr);
        store64(eth, nh);
        store64(eth + 6, (eth_src[q.nh.port] & 0xffffffffffffull) | uint64_t{be16(RTE_ETHER_TYPE_VLAN)} << 48);
        store32(eth + 14, be16(q.nh.vlan) | uint32_t{be16(EtherType)} << 16);
    }
    rte_mbuf* m = q.m;
    m->data_off = static_cast<uint16_t>(eth - static_cast<uint8_t*>(m->buf_addr));
    m->data_len = static_cast<uint16_t>((ip - eth) + l3_len);
    m->pkt_len = m->data_len;
    // The rx flags (checksum status, RSS hash, VLAN) described the received
    // packet; who owns the buffer stays: a PMD may attach its own memory
    // (mlx5's multi-packet rx queues do), and without the flag freeing the
    // mbuf would return it to the pool and never release that memory.
    m->ol_flags &= RTE_MBUF_F_EXTERNAL | RTE_MBUF_F_INDIRECT;
    q.next = Next::kTx;
}

// What a client's ChannelData (kToPeerChannel, its UDP payload at
// `payload`) carries besides its data, added to `r`, the sum of what the
// checksum update removes: the 4-byte header and whatever follows the data (padding, 0-3 bytes from a
// client that pads; any length is accepted). A short tail is summed from
// the last 4 bytes of the datagram (plen >= 4 + data_len, so they are inside
// it) with the data bytes masked off; at an odd offset its bytes sit in the
// other halves of the 16-bit words, which a rotation by 8 restores. Shared
// by rewrite44 and rewrite66 (adding to r in place: returning the sum cost
// IPv6 ChannelData 19 instructions per packet in the lane's code layout).
inline __attribute__((always_inline)) void add_channel_data_framing(uint64_t& r, const uint8_t* payload,
                                                                     const Pkt& q) {
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
}

template <Kind K>
inline __attribute__((always_inline)) void rewrite44(const RewriteCtx& c, Pkt& q) {
    constexpr bool to_peer = K == Kind::kToPeerChannel || K == Kind::kToPeerSend;
    const Allocation& a = c.allocs[q.alloc];
    uint8_t* payload = reinterpret_cast<uint8_t*>(q.udp + 1);

    // 1. The old headers, into registers before any byte is overwritten (the
    // new headers overlap them).
    const uint32_t old_src = load32(q.l3 + 12);
    const uint32_t old_dst = load32(q.l3 + 16);
    const uint32_t tos_kept = load32(q.l3) & c.tos_and;  // the received TOS bits the rule keeps, in place
    // TTL | protocol (17, as sent) of the received header, the TTL then one
    // less (RFC 8656 section 14; at least 2 here: parse_udp4 or route.cc).
    uint16_t ttl_proto;
    std::memcpy(&ttl_proto, q.l3 + offsetof(rte_ipv4_hdr, time_to_live), 2);
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
        // Removed: the ChannelData header and whatever follows the data.
        pre = payload + 4;
        udp_len = sizeof(rte_udp_hdr) + q.data_len;
        add_channel_data_framing(r, payload, q);
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
        // Added: the 4-byte ChannelData header, no padding over UDP (route.cc,
        // or the express lane's found(), checked room and MTU for that).
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
        src = a.v4.ip;
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

    // 4. IPv4 header: version/IHL, TOS (by the relay's rule), total length | ID 0, DF | TTL
    // (received - 1), UDP, checksum | addresses; its checksum from the same words.
    auto* udp = reinterpret_cast<rte_udp_hdr*>(pre - sizeof(rte_udp_hdr));
    uint8_t* ip = reinterpret_cast<uint8_t*>(udp) - sizeof(rte_ipv4_hdr);
    const uint32_t h0 = c.tos_or | tos_kept | __builtin_bswap32(static_cast<uint32_t>(sizeof(rte_ipv4_hdr)) + udp_len);
    constexpr uint32_t h1 = uint32_t{be16(RTE_IPV4_HDR_DF_FLAG)} << 16;
    const uint32_t h2 = uint32_t{ttl_proto} - 1u;  // the TTL byte is the low one, >= 2: no borrow into the protocol
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

    // 6. Ethernet, and the mbuf's new extent.
    finish_frame<RTE_ETHER_TYPE_IPV4>(q, ip, c.w.eth_src4, sizeof(rte_ipv4_hdr) + udp_len);
}

}  // namespace dp
