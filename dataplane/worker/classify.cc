// Stage 1: classify. Parses Ethernet (one optional 802.1Q tag), IPv4/IPv6 and
// UDP, bounds every length, and tells client traffic (to a listening address:
// ChannelData, RFC 8656 section 12.4, or a Send indication, section 11.1)
// from peer traffic (anything else over UDP: maybe a relayed port). Builds
// the primary flow key for the lookup stage and, for client packets, its
// signature, starting the load of its client-cache bucket.
//
// Cost (callgrind, IPv4, 10k flows, instructions/packet): 108 ChannelData,
// 171 Send (attribute walk), 93 peer; was 158/298/143 before the
// straight-line IPv4 check (parse_udp4, stages.h, shared with the express
// lane) took the common case off the general parser. start_lookup adds ~17
// per client packet (the key's CRC, moved here from lookup, and the
// cache-bucket prefetch): 125 ChannelData. A Send indication with a
// FINGERPRINT adds its CRC-32 (fingerprint_ok): 216 -> 261 cycles per packet
// through the pipeline at 10k flows, 120-byte payloads (bench/RESULTS.md,
// "FINGERPRINT").
// Per-stage cycles are not separable on these machines (no PMU);
// bench/RESULTS.md has the pipeline total.
//
// The express lane (express.cc) parses with parse_udp4 too and hands the
// packets it does not finish to this stage's code (classify_udp4,
// classify_other), so their verdicts are this stage's.
//
// Edges: kLookup; kPunt (not IP, not UDP, fragments, options/extension
// headers, other traffic to a listening address, Send indications outside
// the fast parser); kDrop (bad lengths, bad IPv4 header checksum).
#include <rte_net_crc.h>

#include <cstring>

#include "common/checksum.h"
#include "net/address.h"
#include "stun/constants.h"
#include "stun/integrity.h"
#include "worker/stages.h"

namespace dp {

namespace {

constexpr uint16_t kSendIndication = 0x0016;  // make_type(Send, Indication)
static_assert(turn::stun::make_type(turn::stun::Method::kSend, turn::stun::Class::kIndication) == kSendIndication);

// XOR-PEER-ADDRESS value at s+v (family byte at v+1, port at v+2, address at
// v+4), already checked to be `len` bytes inside the message: decodes it
// into p (RFC 8489 section 14.2). False for a family/length it cannot use.
inline bool xor_peer(const uint8_t* s, size_t v, uint16_t len, Pkt& p) {
    const uint8_t fam = s[v + 1];
    uint16_t xport;
    std::memcpy(&xport, s + v + 2, 2);
    // XOR with magic cookie + transaction id: the 16 bytes at s+4.
    if (fam == turn::kStunFamilyIPv4 && len == 8) {
        p.peer_family = 4;
        p.peer_port_be = xport ^ rte_cpu_to_be_16(0x2112);
        const uint32_t a = load32(s + v + 4) ^ load32(s + 4);
        std::memcpy(p.peer_ip, &a, 4);
        return true;
    }
    if (fam == turn::kStunFamilyIPv6 && len == 20) {
        p.peer_family = 6;
        p.peer_port_be = xport ^ rte_cpu_to_be_16(0x2112);
        const uint64_t a0 = load64(s + v + 4) ^ load64(s + 4);
        const uint64_t a1 = load64(s + v + 12) ^ load64(s + 12);
        std::memcpy(p.peer_ip, &a0, 8);
        std::memcpy(p.peer_ip + 8, &a1, 8);
        return true;
    }
    return false;
}

// A Send indication's FINGERPRINT (its last attribute, at s+pos): CRC-32 of
// the message before it (the header as received: its length already counts
// the FINGERPRINT), xor 0x5354554e (RFC 8489 section 14.7). DPDK's
// PCLMULQDQ CRC once main() selected it (rte_net_crc_set_alg), ~1 cycle
// per 8 bytes. A wrong one is not forwarded: the control plane discards it
// (section 7.3), so the packet is punted and both paths agree.
inline bool fingerprint_ok(const uint8_t* s, size_t pos) {
    const uint32_t crc = rte_net_crc_calc(s, static_cast<uint32_t>(pos), RTE_NET_CRC32_ETH) ^ turn::stun::kFingerprintXor;
    return load_be32(s + pos + 4) == crc;
}

// RFC 8656 section 11.2 / RFC 8489 section 14: a bounded walk over the
// attributes of a Send indication. Finds XOR-PEER-ADDRESS (the first one) and
// DATA; gives up (slow path) on anything it does not understand. The common
// layout (XOR-PEER-ADDRESS first, DATA second, as every client sends it) is
// matched straight-line; the loop then only walks what follows DATA.
bool parse_send(const uint8_t* s, uint16_t plen, Pkt& p) {
    const uint16_t mlen = load_be16(s + 2);
    // The message fills the datagram exactly, as the control plane's parser
    // requires (bytes after it: it discards the datagram as malformed).
    if ((mlen & 3) != 0 || size_t{20} + mlen != plen) {
        return false;
    }
    const size_t end = size_t{20} + mlen;
    size_t pos = 20;
    bool have_peer = false, have_data = false;
    // (type, length) words, big endian, of an IPv4 XOR-PEER-ADDRESS and of DATA.
    constexpr uint32_t kPeer4Hdr = (uint32_t{turn::stun::attr::kXorPeerAddress} << 16) | 8;
    if (end >= 36 && load_be32(s + 20) == kPeer4Hdr && load_be16(s + 32) == turn::stun::attr::kData) {
        if (!xor_peer(s, 24, 8, p)) {
            return false;
        }
        const uint16_t len = load_be16(s + 34);
        if (size_t{36} + len > end) {
            return false;
        }
        p.data_off = 36;
        p.data_len = len;
        have_peer = have_data = true;
        pos = 36 + ((len + 3u) & ~3u);
        // And nothing after DATA but a FINGERPRINT.
        constexpr uint32_t kFingerprintHdr = (uint32_t{turn::stun::attr::kFingerprint} << 16) | 4;
        if (pos + 8 == end && load_be32(s + pos) == kFingerprintHdr) {
            return fingerprint_ok(s, pos);
        }
    }
    while (pos + 4 <= end) {
        const uint16_t type = load_be16(s + pos);
        const uint16_t len = load_be16(s + pos + 2);
        const size_t v = pos + 4;
        if (v + len > end) {
            return false;
        }
        pos = v + ((len + 3u) & ~3u);
        // FINGERPRINT is checked, and must be last (the control plane's
        // parser refuses anything after it); SOFTWARE and every other
        // comprehension-optional type are not needed to forward.
        if (type == turn::stun::attr::kFingerprint) {
            if (len != 4 || pos != end || !fingerprint_ok(s, v - 4)) {
                return false;
            }
            continue;
        }
        static_assert(!turn::stun::attr::is_comprehension_required(turn::stun::attr::kFingerprint) &&
                      !turn::stun::attr::is_comprehension_required(turn::stun::attr::kSoftware));
        if (!turn::stun::attr::is_comprehension_required(type) || type == turn::stun::attr::kDontFragment) {
            continue;
        }
        if (type == turn::stun::attr::kXorPeerAddress) {
            if (!have_peer) {
                if (!xor_peer(s, v, len, p)) {
                    return false;
                }
                have_peer = true;
            }
        } else if (type == turn::stun::attr::kData) {
            if (!have_data) {
                p.data_off = static_cast<uint16_t>(v);
                p.data_len = len;
                have_data = true;
            }
        } else {
            return false;  // unknown comprehension-required: the kernel path decides
        }
    }
    return have_peer && have_data;
}

// The UDP payload at pl (p.plen bytes, inside the packet): ChannelData or a
// Send indication to a listening address, or peer traffic. Sets p.kind,
// p.data_off/len (and the Send fields), *kk and *channel_be; false when it
// punted or dropped p. Shared by both parsers below.
inline bool classify_payload(Pkt& p, const uint8_t* pl, uint16_t plen, bool to_listen, KeyKind* kk,
                             uint16_t* channel_be_out) {
    uint16_t channel_be = 0;
    if (!to_listen) {
        p.kind = Kind::kPeer;
        *kk = KeyKind::kChannelOut;
        p.data_off = 0;
        p.data_len = plen;
    } else if (plen >= 4 && (pl[0] & 0xC0) == 0x40) {
        // 0b01 leading bits: channel 0x4000-0x7FFF. Which numbers are valid
        // (RFC 8656's 0x4000-0x4FFF, or RFC 5766's whole range for old
        // clients) is the control plane's policy: only channels it bound are
        // in the table, and a lookup miss is punted to the slow path, which
        // discards reserved numbers. Checking the range here as well made
        // RFC 5766 channels slow one way and fast the other.
        const uint16_t cdlen = load_be16(pl + 2);
        if (unlikely(size_t{4} + cdlen > plen)) {
            drop(p, Counter::drop_bad_length);  // RFC 8656 12.5: discard
            return false;
        }
        p.kind = Kind::kClientChannel;
        *kk = KeyKind::kClient;  // the channel is looked up in the allocation (lookup.cc)
        std::memcpy(&channel_be, pl, 2);
        p.data_off = 4;
        p.data_len = cdlen;
    } else if (plen >= 20 && load_be16(pl) == kSendIndication && load_be32(pl + 4) == turn::stun::kMagicCookie) {
        if (!parse_send(pl, plen, p)) {
            punt(p, Counter::punt_send_unparsed);
            return false;
        }
        p.kind = Kind::kClientSend;
        *kk = KeyKind::kClient;
    } else {
        punt(p, Counter::punt_not_fast_path);
        return false;
    }
    *channel_be_out = channel_be;
    return true;
}

// The general parser: every layout classify accepts, and every verdict.
__attribute__((noinline)) void classify_general(Worker& w, rte_mbuf* m, Pkt& p) {
    p.m = m;
    p.kind = Kind::kNone;
    if (unlikely(m->nb_segs != 1)) {
        punt(p, Counter::punt_multi_segment);
        return;
    }
    uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
    const uint32_t len = m->data_len;
    if (unlikely(len < sizeof(rte_ether_hdr))) {
        drop(p, Counter::drop_bad_length);
        return;
    }
    uint32_t off = sizeof(rte_ether_hdr);
    uint16_t et = load_be16(d + 12);
    if (et == RTE_ETHER_TYPE_VLAN) {
        if (len < off + 4) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        et = load_be16(d + off + 2);
        off += 4;
    }
    uint8_t* l3 = d + off;
    const uint32_t l3avail = len - off;
    rte_udp_hdr* udp;
    uint32_t l4avail;  // bytes from the UDP header to the end of the IP datagram
    if (et == RTE_ETHER_TYPE_IPV4) {
        if (unlikely(l3avail < sizeof(rte_ipv4_hdr))) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        auto* ip = reinterpret_cast<rte_ipv4_hdr*>(l3);
        if (unlikely(ip->version_ihl != 0x45)) {
            if ((ip->version_ihl >> 4) != 4 || (ip->version_ihl & 0xf) < 5) {
                drop(p, Counter::drop_bad_length);
            } else {
                punt(p, Counter::punt_ip_options);
            }
            return;
        }
        const uint32_t tot = rte_be_to_cpu_16(ip->total_length);
        if (unlikely(tot < sizeof(rte_ipv4_hdr) || tot > l3avail)) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        if (unlikely((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
                     !csum::ipv4_header_ok(ip))) {
            drop(p, Counter::drop_bad_ip_checksum);
            return;
        }
        if (unlikely((ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0)) {
            punt(p, Counter::punt_fragment);
            return;
        }
        if (unlikely(ip->next_proto_id != IPPROTO_UDP)) {
            punt(p, Counter::punt_not_udp);
            return;
        }
        if (unlikely(tot < sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr))) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        p.family = 4;
        udp = reinterpret_cast<rte_udp_hdr*>(l3 + sizeof(rte_ipv4_hdr));
        l4avail = tot - sizeof(rte_ipv4_hdr);
    } else if (et == RTE_ETHER_TYPE_IPV6) {
        if (unlikely(l3avail < sizeof(rte_ipv6_hdr))) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        auto* ip = reinterpret_cast<rte_ipv6_hdr*>(l3);
        const uint32_t pl = rte_be_to_cpu_16(ip->payload_len);
        if (unlikely((l3[0] >> 4) != 6 || pl + sizeof(rte_ipv6_hdr) > l3avail)) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        if (unlikely(ip->proto != IPPROTO_UDP)) {
            switch (ip->proto) {
            case IPPROTO_FRAGMENT: punt(p, Counter::punt_fragment); break;
            case IPPROTO_HOPOPTS: case IPPROTO_ROUTING: case IPPROTO_DSTOPTS:
                punt(p, Counter::punt_ip_options); break;
            default: punt(p, Counter::punt_not_udp); break;
            }
            return;
        }
        if (unlikely(pl < sizeof(rte_udp_hdr))) {
            drop(p, Counter::drop_bad_length);
            return;
        }
        p.family = 6;
        udp = reinterpret_cast<rte_udp_hdr*>(l3 + sizeof(rte_ipv6_hdr));
        l4avail = pl;
    } else {
        punt(p, Counter::punt_not_ip);
        return;
    }
    const uint32_t ulen = rte_be_to_cpu_16(udp->dgram_len);
    if (unlikely(ulen < sizeof(rte_udp_hdr) || ulen > l4avail)) {
        drop(p, Counter::drop_bad_length);
        return;
    }
    // RFC 8200 section 8.1: a zero UDP checksum is invalid over IPv6 (the
    // incremental update could not repair it either).
    if (unlikely((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD ||
                 (p.family == 6 && udp->dgram_cksum == 0))) {
        drop(p, Counter::drop_bad_l4_checksum);
        return;
    }
    p.l3 = l3;
    p.udp = udp;
    p.plen = static_cast<uint16_t>(ulen - sizeof(rte_udp_hdr));
    const uint8_t* pl = reinterpret_cast<const uint8_t*>(udp + 1);

    bool to_listen;
    int listen6 = -1;  // IPv6: the listening address's index, the `a` of a client's keys (flow/key.h)
    if (p.family == 4) {
        const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(l3);
        to_listen = w.flows->listen->has4(ip->dst_addr, udp->dst_port);
    } else {
        const auto* ip = reinterpret_cast<const rte_ipv6_hdr*>(l3);
        listen6 = w.flows->listen->index6(ip->dst_addr, udp->dst_port);
        to_listen = listen6 >= 0;
    }

    KeyKind kk;
    uint16_t channel_be;
    if (!classify_payload(p, pl, p.plen, to_listen, &kk, &channel_be)) {
        return;
    }
    p.channel_be = channel_be;

    // Primary key: a = destination (listening or relayed addr), b = source.
    p.key_family = p.family;
    if (p.family == 4) {
        const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(l3);
        p.k4 = Key4{};
        p.k4.a_ip = ip->dst_addr;
        p.k4.b_ip = ip->src_addr;
        p.k4.a_port = udp->dst_port;
        p.k4.b_port = udp->src_port;
        p.k4.kind = kk;
    } else {
        const auto* ip = reinterpret_cast<const rte_ipv6_hdr*>(l3);
        // A peer packet's `a`, its relayed IP's index, is lookup's to find.
        key6_of(p.k6, ip->src_addr, udp->dst_port, udp->src_port, static_cast<uint8_t>(to_listen ? listen6 : 0), kk);
    }
    p.next = Next::kLookup;
}

// A client packet's key signature (the hash function of the tables,
// flow/tables.cc), and the first random read of the lookup stage started:
// its bucket in this worker's client cache (flow/client_cache.h), which the
// rest of the burst's parsing then hides.
inline void start_lookup(Worker& w, Pkt& q) {
    if (q.next != Next::kLookup || q.kind == Kind::kPeer) {
        return;
    }
    q.sig = q.key_family == 4 ? rte_hash_crc(&q.k4, sizeof(Key4), 0) : rte_hash_crc(&q.k6, sizeof(Key6), 0);
    if (w.cache.e != nullptr) {
        rte_prefetch0(w.cache.bucket(q.sig));
    }
}

// The common case once parse_udp4 (stages.h) accepted the frame at d.
inline __attribute__((always_inline)) void classify_parsed(Worker& w, const uint8_t* d, const Udp4& h, bool to_listen,
                                                           Pkt& p) {
    p.family = 4;
    p.l3 = const_cast<uint8_t*>(d + sizeof(rte_ether_hdr));
    p.udp = reinterpret_cast<rte_udp_hdr*>(const_cast<uint8_t*>(d + sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr)));
    p.plen = h.plen;
    KeyKind kk;
    uint16_t channel_be;
    if (!classify_payload(p, d + kUdp4Min, h.plen, to_listen, &kk, &channel_be)) {
        p.kind = Kind::kNone;
        return;
    }
    p.channel_be = channel_be;
    p.key_family = 4;
    uint64_t k[2];
    key4_words(h.addrs, h.udp, kk, k);
    std::memcpy(&p.k4, k, sizeof k);
    p.next = Next::kLookup;
    start_lookup(w, p);
}

// The common case, straight-line (parse_udp4). Anything else, including
// every packet that is punted or dropped before the payload is looked at,
// goes to classify_general, so verdicts and counters are those of the
// general parser.
inline __attribute__((always_inline)) void classify_one(Worker& w, const ListenSet& listen, rte_mbuf* m, Pkt& p) {
    const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
    Udp4 h;
    if (likely(parse_udp4(m, d, &h))) {
        p.m = m;
        classify_parsed(w, d, h, listen.has4(h.dst_ip(), h.dst_port()), p);
        return;
    }
    classify_general(w, m, p);
    start_lookup(w, p);
}

}  // namespace

void classify_udp4(Worker& w, const Udp4& h, bool to_listen, Pkt& p) {
    classify_parsed(w, rte_pktmbuf_mtod(p.m, const uint8_t*), h, to_listen, p);
}

void classify_general_only(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n) {
    for (uint16_t i = 0; i < n; i++) {
        classify_general(w, mbufs[i], p[i]);
    }
}

void classify_other(Worker& w, Pkt& p) {
    classify_general(w, p.m, p);
    start_lookup(w, p);
}

void classify(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n) {
    const ListenSet& listen = *w.flows->listen;
    constexpr uint16_t kAhead = 4;
    for (uint16_t i = 0; i < n && i < kAhead; i++) {
        rte_prefetch0(rte_pktmbuf_mtod(mbufs[i], void*));
    }
    // Split so the loop with the prefetch has no per-packet bound check.
    uint16_t i = 0;
    for (; i + kAhead < n; i++) {
        rte_prefetch0(rte_pktmbuf_mtod(mbufs[i + kAhead], void*));
        classify_one(w, listen, mbufs[i], p[i]);
    }
    for (; i < n; i++) {
        classify_one(w, listen, mbufs[i], p[i]);
    }
}

}  // namespace dp
