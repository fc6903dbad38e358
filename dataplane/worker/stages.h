// The packet stages, one per file, in pipeline order. Each takes the whole
// burst and, after classify, handles only the packets whose Pkt::next names
// it. The express lane (express.cc) stands in for all of them for the
// common case.
//
//   classify.cc  (rx)     -> kLookup | kPunt | kDrop
//   express.cc   (rx)     -> kTx (or sent) | kRoute | classify's edges
//   lookup.cc   kLookup   -> kRoute  | kPunt (miss) | kDrop (no permission)
//   route.cc    kRoute    -> kPolice (next hop kSelfPort: relay to relay) | kPunt (no next hop,
//                            MTU, headroom, own address) | kDrop (TTL, rate limited)
//   police.cc   kPolice   -> kRewrite | kDrop (rate limited)
//   rewrite.cc  kRewrite  -> kTx
//   tx.cc       kTx/kPunt/kDrop -> NIC tx (kSelfPort: Worker::hairpin, received again by
//                            process_burst), exception tx, free
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "worker/packet.h"
#include "worker/worker.h"

namespace dp {

void classify(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n);
// Tests only: classify's general parser alone, without the IPv4 fast path
// (and without start_lookup), to compare the two on the same frames.
void classify_general_only(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n);
// classify's verdict for one packet (p.m set) whose frame parse_udp4
// (below) accepted as h, to_listen its destination being a listening
// address; and for one it refused. The express lane's way to hand packets to
// lookup without parsing them twice.
struct Udp4;
void classify_udp4(Worker& w, const Udp4& h, bool to_listen, Pkt& p);
void classify_other(Worker& w, Pkt& p);
// The express lane (express.cc): ChannelData on slot channels (IPv4 to
// IPv4, IPv6 to IPv6), both directions, through every stage at once (kTx),
// the whole burst sent when it finished all of it; every other packet
// classified (classify_udp4, classify_other) or, found but for route to
// decide, kRoute.
enum class Express : uint8_t { kSent, kStages };
Express express(Worker& w, rte_mbuf** mbufs, Pkt* p, uint16_t n, uint64_t now_tsc);
// Whether this burst goes through the lane: configured, and not resting
// after one it finished less than half of (WorkerConfig::express_rest).
inline bool express_wanted(Worker& w) {
    if (w.express_skip != 0) {
        w.express_skip--;
        return false;
    }
    return w.cfg.express;
}
void lookup(Worker& w, Pkt* p, uint16_t n);
void route(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc);
void police(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc);
void rewrite(Worker& w, Pkt* p, uint16_t n);
void tx(Worker& w, Pkt* p, uint16_t n);
// n mbufs out of `port` (this worker's queue); what the queue does not take
// is freed and counted as `on_full`.
void tx_send(Worker& w, uint16_t port, rte_mbuf** b, uint16_t n, Counter on_full);
// n punted mbufs to the kernel: out of this worker's exception queue, or
// onto WorkerConfig::exc_ring for an owner to send (full: freed, counted).
void punt_send(Worker& w, rte_mbuf** b, uint16_t n);

// Helpers shared by the stages: unaligned big-endian loads and stores. The
// builtins, not rte_be_to_cpu_*: DPDK's byte swap is an asm statement on
// x86, which the compiler cannot fold into loads and compares.
inline uint16_t load_be16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap16(v) : v;
}
inline uint32_t load_be32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap32(v) : v;
}
inline void store_be16(uint8_t* p, uint16_t v) {
    v = RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN ? __builtin_bswap16(v) : v;
    std::memcpy(p, &v, 2);
}
// Unaligned loads and stores in the CPU's byte order (headers read and
// written as whole words).
inline uint32_t load32(const void* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline uint64_t load64(const void* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline void store32(void* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void store64(void* p, uint64_t v) { std::memcpy(p, &v, 8); }

// The received packet's IPv4 TTL or IPv6 hop limit (classify checked the
// header is there). The relayed packet leaves with one less (RFC 8656
// section 14, preferred behaviour); route.cc drops 0 and 1.
inline uint8_t received_ttl(const Pkt& q) {
    return q.l3[q.family == 4 ? offsetof(rte_ipv4_hdr, time_to_live) : offsetof(rte_ipv6_hdr, hop_limits)];
}

// The common case of the received headers, checked straight-line (shared by
// classify's fast path and the express lane): one mbuf segment, untagged
// Ethernet, IPv4 without options or fragmentation, UDP, consistent lengths,
// good header checksum, L4 checksum not flagged bad, TTL 2 or more. Headers are read as
// four unaligned 8-byte words (all inside the 42 bytes checked against
// data_len) and several fields are compared at once. False for anything
// else, which the general parser then judges. Little-endian only (the
// masks); elsewhere it always says no.
constexpr uint32_t kUdp4Min = sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr);
static_assert(kUdp4Min == 42);

struct Udp4 {
    uint64_t addrs;  // bytes 26-33: source, destination address
    uint64_t udp;    // bytes 34-41: source port, destination port, length, checksum
    uint16_t plen;   // UDP payload bytes, inside the frame
    uint32_t dst_ip() const { return static_cast<uint32_t>(addrs >> 32); }
    uint16_t dst_port() const { return static_cast<uint16_t>(udp >> 16); }
};

inline __attribute__((always_inline)) bool parse_udp4(const rte_mbuf* m, const uint8_t* d, Udp4* h) {
    const uint32_t len = m->data_len;
    if (RTE_BYTE_ORDER != RTE_LITTLE_ENDIAN || unlikely(m->nb_segs != 1 || len < kUdp4Min)) {
        return false;
    }
    const uint64_t w0 = load64(d + 12);  // ethertype, version/IHL, TOS, total length, id
    const uint64_t w1 = load64(d + 20);  // fragment field, TTL, protocol, checksum, source[0..1]
    const uint64_t a = load64(d + 26);   // source, destination
    const uint64_t u = load64(d + 34);   // UDP source and destination ports, length, checksum
    // Byte-swapped with the builtin, which the compiler can fold into the
    // load (rte_be_to_cpu_16 is an asm statement on x86).
    uint16_t tot16, ulen16;
    std::memcpy(&tot16, d + 16, 2);
    std::memcpy(&ulen16, d + 38, 2);
    const uint32_t tot = __builtin_bswap16(tot16);
    const uint32_t ulen = __builtin_bswap16(ulen16);
    // Ethertype 0x0800 then version/IHL 0x45; MF and fragment offset zero
    // (DF may be set), protocol UDP. And a TTL of at least 2: a packet with 0
    // or 1 cannot be relayed (route.cc drops it if it is relayed traffic, and
    // the general parser sends it there).
    const uint64_t hdr = ((w0 & 0xffffff) ^ 0x450008) | ((w1 & 0xff00ff3f) ^ (uint64_t{IPPROTO_UDP} << 24));
    const bool ttl_low = (w1 & 0xfe0000) == 0;
    // 28 <= tot <= len - 14 and 8 <= ulen <= tot - 20, as two unsigned range
    // checks (len >= 42 above; the second relies on the first).
    constexpr uint32_t kMinTot = sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr);
    if (unlikely(hdr != 0 || ttl_low || tot - kMinTot > len - kUdp4Min || ulen - uint32_t{sizeof(rte_udp_hdr)} > tot - kMinTot)) {
        return false;
    }
    // The header checksum from the words already loaded: bytes 14-33 are
    // w0's upper six, all of w1 and a's upper six, each 16-bit aligned as in
    // the header. A one's-complement sum folds to 0xffff exactly when it is a
    // nonzero multiple of 0xffff; this one is nonzero (version/IHL), so
    // csum::ipv4_header_ok(d + 14) is sum % 0xffff == 0.
    const uint64_t sum = (w0 >> 16) + (w1 & 0xffffffffu) + (w1 >> 32) + (a >> 16);
    // No checksum flags at all (no offload) is the one-test case; otherwise:
    // L4 not flagged bad, and IP flagged good or computed.
    constexpr uint64_t kMask = RTE_MBUF_F_RX_IP_CKSUM_MASK | RTE_MBUF_F_RX_L4_CKSUM_MASK;
    const uint64_t ol = m->ol_flags & kMask;
    if (unlikely(ol == 0 ? sum % 0xffff != 0
                         : (ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD ||
                               ((ol & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD && sum % 0xffff != 0))) {
        return false;
    }
    h->addrs = a;
    h->udp = u;
    h->plen = static_cast<uint16_t>(ulen - sizeof(rte_udp_hdr));
    return true;
}

// The same for IPv6 (the express lane only; classify's general parser
// judges these frames in the stages): one segment, untagged Ethernet, IPv6
// with UDP as its first next header (no extension headers), hop limit 2 or
// more, consistent lengths, a UDP checksum (zero is invalid over IPv6, RFC
// 8200 section 8.1) not flagged bad. False for anything else.
constexpr uint32_t kUdp6Min = sizeof(rte_ether_hdr) + sizeof(rte_ipv6_hdr) + sizeof(rte_udp_hdr);
static_assert(kUdp6Min == 62);
constexpr uint32_t kIp6Src = sizeof(rte_ether_hdr) + offsetof(rte_ipv6_hdr, src_addr);  // 22
constexpr uint32_t kIp6Dst = sizeof(rte_ether_hdr) + offsetof(rte_ipv6_hdr, dst_addr);  // 38

struct Udp6 {
    uint64_t udp;   // bytes 54-61: source port, destination port, length, checksum
    uint16_t plen;  // UDP payload bytes, inside the frame
    uint16_t src_port() const { return static_cast<uint16_t>(udp); }
    uint16_t dst_port() const { return static_cast<uint16_t>(udp >> 16); }
};

inline __attribute__((always_inline)) bool parse_udp6(const rte_mbuf* m, const uint8_t* d, Udp6* h) {
    const uint32_t len = m->data_len;
    if (RTE_BYTE_ORDER != RTE_LITTLE_ENDIAN || unlikely(m->nb_segs != 1 || len < kUdp6Min)) {
        return false;
    }
    const uint32_t w0 = load32(d + 12);  // ethertype, version | traffic class high nibble, ...
    const uint32_t w1 = load32(d + 18);  // payload length, next header, hop limit
    const uint64_t u = load64(d + 54);
    const uint32_t pl = __builtin_bswap16(static_cast<uint16_t>(w1));
    const uint32_t ulen = __builtin_bswap16(static_cast<uint16_t>(u >> 32));
    // Ethertype 0x86DD, version 6, next header UDP; hop limit >= 2 (as
    // parse_udp4's TTL); 8 <= ulen <= pl <= len - 54; checksum nonzero.
    const bool bad = ((w0 & 0xf0ffff) ^ 0x60dd86) != 0 || ((w1 >> 16) & 0xff) != IPPROTO_UDP || (w1 >> 24) < 2 ||
                     pl > len - (kUdp6Min - sizeof(rte_udp_hdr)) || ulen < sizeof(rte_udp_hdr) || ulen > pl ||
                     (u >> 48) == 0 ||
                     (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD;
    if (unlikely(bad)) {
        return false;
    }
    h->udp = u;
    h->plen = static_cast<uint16_t>(ulen - sizeof(rte_udp_hdr));
    return true;
}

// Cache hits and peer packets (lookup.cc, express.cc) request their
// allocation line and state this many packets before reading them.
// Requesting the whole burst's (64 lines) at once and then reading was slower at 1M flows, where each is a DRAM
// access: this machine keeps ~16-24 misses in flight (bench/dataplane/
// memory_latency), and the loads queued behind a full set of prefetches
// waited for all of them. Measured (bench/RESULTS.md "Paced prefetch"): 8
// ahead took client ChannelData at 1M flows from ~293 to ~257 cycles, peer
// ChannelData from ~300 to ~283; 4 to 16 ahead were alike at 1M; at 1k and
// 10k flows, where the lines are in cache, it costs ~5 cycles.
constexpr uint16_t kAllocAhead = 8;

// For j in [0, n): ahead(j) (start loading what packet j needs) kAllocAhead
// iterations before now(j) (use it).
template <typename Ahead, typename Now>
inline void paced(uint16_t n, Ahead&& ahead, Now&& now) {
    for (uint16_t j = 0; j < n && j < kAllocAhead; j++) {
        ahead(j);
    }
    for (uint16_t j = 0; j < n; j++) {
        if (j + kAllocAhead < n) {
            ahead(static_cast<uint16_t>(j + kAllocAhead));
        }
        now(j);
    }
}

// The kClient key (Key4: destination = listening address, source = client;
// destination port, source port, channel 0, kind) from the received
// addresses (bytes 26-33 of an untagged IPv4 frame) and UDP header words
// (bytes 34-41), as two words: classify and the express lane build it alike.
inline void key4_words(uint64_t addrs, uint64_t udp, KeyKind kind, uint64_t out[2]) {
    static_assert(offsetof(Key4, a_ip) == 0 && offsetof(Key4, b_ip) == 4 && offsetof(Key4, a_port) == 8 &&
                  offsetof(Key4, b_port) == 10 && offsetof(Key4, channel) == 12 && offsetof(Key4, kind) == 14 &&
                  sizeof(KeyKind) == 1 && sizeof(Key4) == 16);
    uint32_t ports = static_cast<uint32_t>(udp);
    ports = (ports >> 16) | (ports << 16);
    out[0] = (addrs >> 32) | (addrs << 32);
    out[1] = uint64_t{ports} | (uint64_t(kind) << 48);
}

// The IPv6 key of `kind` (Key6: `a` the index of the listening address, or
// 0 for a peer packet, whose relayed IP's index lookup finds; b the source
// address and port) from a received header's source address and UDP ports
// (network order): classify and the express lane build it alike.
inline void key6_of(Key6& k, const uint8_t* src_ip, uint16_t dst_port, uint16_t src_port, uint8_t a, KeyKind kind) {
    k = Key6{};
    std::memcpy(k.b_ip, src_ip, 16);
    k.a_port = dst_port;
    k.b_port = src_port;
    k.a = a;
    k.kind = kind;
}

// Takes `bytes` from an allocation's bandwidth budget at TSC `now` (police
// and the express lane; flow/tables.h, Allocation::tat) for worker state `s`;
// true without a limit, false (nothing taken) when they are over it.
// Lock-free: a compare-and-swap on the allocation's clock, retried only when
// another worker moved it meanwhile.
//
// A worker that has to move the clock moves it for up to 31 more packets of
// this size, as many whole ones as fit 100 ms of the rate (none when one
// packet costs more), and keeps what it took ahead as its lease, which its
// next packets spend without writing the allocation's line: with an
// allocation's two directions busy on two workers, a write for every packet
// moved that line between their cores on every packet. When the budget
// cannot give the lease too, the packet takes its own cost only, so a lease
// never turns a packet away: a worker is refused only with less than a
// packet in its lease (and keeps that). A lease is good for one second and at
// the rate it was taken at (a changed rate starts from a full budget,
// flow/apply.cc).
// Every byte passed was taken from the clock, so the rate holds; what a
// lease shifts is when: a worker may hold up to 100 ms of the rate that the
// other workers cannot have meanwhile, and spend it on top of a full budget
// within the second (so a burst may pass the depth by 100 ms of the rate per
// worker serving the allocation). A lease that lapses unspent stays spent:
// at most 100 ms of the rate, and it lapses only after a second without a
// packet, in which the clock pays back ten times that, so a sender under the
// limit cannot pile such debts up.
inline bool take_bandwidth(const Allocation& a, AllocState& s, uint32_t bytes, uint64_t now, double tsc_hz) {
    const float byte_ticks = a.byte_ticks.load(std::memory_order_relaxed);
    const uint32_t rate = std::bit_cast<uint32_t>(byte_ticks);
    if (rate == 0) {  // as Allocation::unlimited()
        return true;
    }
    const auto cost = static_cast<uint64_t>(static_cast<double>(bytes) * byte_ticks);
    const auto second = static_cast<uint64_t>(tsc_hz);
    const uint64_t lease = s.lease_rate == rate && now - s.lease_at < second ? s.lease : 0;
    if (lease >= cost) {
        s.lease = lease - cost;
        return true;
    }
    constexpr double kMinDepthBytes = 65536;  // the bucket holds at least one large datagram
    const auto depth = static_cast<uint64_t>(std::max(tsc_hz, kMinDepthBytes * byte_ticks));  // in ticks
    const uint64_t need = cost - lease;
    const uint64_t window = second / 10;  // ahead: whole packets, at most 31 and 100 ms
    uint64_t ahead = 0;
    if (cost != 0 && cost <= window) {
        ahead = 31 * cost <= window ? 31 * cost : cost * (window / cost);  // the division only in between
    }
    uint64_t tat = a.tat.load(std::memory_order_relaxed);
    for (;;) {
        const uint64_t start = std::max(tat, now);  // tat in the past: the bucket is full
        const uint64_t used = start - now;
        uint64_t take = need + ahead;
        if (used + take > depth) {
            take = need;
            if (used + take > depth) {
                s.lease = lease;
                return false;
            }
        }
        if (a.tat.compare_exchange_weak(tat, start + take, std::memory_order_relaxed)) {
            s.lease = lease + take - cost;
            s.lease_rate = rate;
            s.lease_at = now;
            return true;
        }
    }
}

// q's data from its allocation `a`'s budget (take_bandwidth, with this
// worker's state `s`): false when it is spent, q then dropped and counted
// (drop_rate_limited, and the allocation's dropped packets). Police, the
// express lane and route's punts.
inline bool charge(const Allocation& a, AllocState& s, Pkt& q, uint64_t now, double tsc_hz) {
    if (!take_bandwidth(a, s, q.data_len, now, tsc_hz)) {
        s.dropped_packets++;
        drop(q, Counter::drop_rate_limited);
        return false;
    }
    return true;
}

// An allocation's forwarded packets and bytes, this worker's share (police
// and the express lane).
inline void count_forwarded(AllocState& s, Kind k, uint16_t data_len) {
    if (k == Kind::kToPeerChannel || k == Kind::kToPeerSend) {
        s.to_peer_packets++;
        s.to_peer_bytes += data_len;
    } else {
        s.to_client_packets++;
        s.to_client_bytes += data_len;
    }
}

// Whether allocation `a` belongs to the IPv4 client (ip, port) on the
// listening address (listen_ip, listen_port): the check of a client-cache
// candidate (flow/client_cache.h), all in network byte order.
inline bool owns4(const Allocation& a, const ListenSet& l, uint32_t ip, uint16_t port, uint32_t listen_ip,
                  uint16_t listen_port) {
    if (a.live.load(std::memory_order_acquire) == 0) {
        return false;
    }
    uint32_t cip;
    std::memcpy(&cip, a.client_ip, 4);
    return a.family == 4 && cip == ip && a.client_port == port && l.v4_ip[a.listen] == listen_ip &&
           l.v4_port[a.listen] == listen_port;
}

// The same for an IPv6 client: allocation `a` is the one the kClient key k
// (flow/key.h: a = the listening address's index) names.
inline bool owns6(const Allocation& a, const Key6& k) {
    if (a.live.load(std::memory_order_acquire) == 0) {
        return false;
    }
    return a.family == 6 && a.client_port == k.b_port && a.listen == k.a && std::memcmp(a.client_ip, k.b_ip, 16) == 0;
}

// The allocation's IPv4 channel slot bound to channel `ch` (network order),
// or nullptr (then the channel, if bound, is in slot6 or the hash). Only a
// line with an IPv4 relayed address has them: in another, the same bytes are
// slot6, whose peer IP could read as any channel number.
inline const ChanSlot* slot_of_channel(const Allocation& a, uint16_t ch) {
    static_assert(Allocation::kSlots == 2);
    if (a.relayed4_port == 0) {
        return nullptr;
    }
    return a.v4.slots[0].channel_be.load(std::memory_order_acquire) == ch   ? &a.v4.slots[0]
           : a.v4.slots[1].channel_be.load(std::memory_order_acquire) == ch ? &a.v4.slots[1]
                                                                             : nullptr;
}

// The IPv6 channel slot of an allocation with only an IPv6 relayed address,
// if it binds channel `ch`; else nullptr.
inline const ChanSlot6* slot6_of_channel(const Allocation& a, uint16_t ch) {
    return a.relayed4_port == 0 && a.slot6.channel_be.load(std::memory_order_acquire) == ch ? &a.slot6 : nullptr;
}

// A next-hop word (nexthop/nexthop.h) that names a MAC on one of our ports.
static_assert(kMaxPorts == 8, "a next hop word holds ports 0-7 (three bits), which index per-port arrays");
inline bool nexthop_usable(uint64_t nh) { return NextHops::usable(nh); }

// The channel (network order) a slot binds to the IPv4 peer (ip, port), or 0.
// Only for a peer packet to the allocation's IPv4 relayed address (so the
// line has its IPv4 slots).
inline uint16_t channel_of_peer(const Allocation& a, uint32_t ip, uint16_t port) {
    for (uint32_t s = 0; s < Allocation::kSlots; s++) {
        const uint16_t ch = a.v4.slots[s].channel_be.load(std::memory_order_acquire);
        if (ch != 0 && a.v4.slots[s].peer_ip == ip && a.v4.slots[s].peer_port == port) {
            return ch;
        }
    }
    return 0;
}

// The same for the IPv6 peer (ip, port) of a packet to the allocation's IPv6
// relayed address: slot6's channel, if the line has slot6 and it binds that
// peer.
inline uint16_t channel_of_peer6(const Allocation& a, const uint8_t* ip, uint16_t port) {
    if (a.relayed4_port != 0) {
        return 0;
    }
    const uint16_t ch = a.slot6.channel_be.load(std::memory_order_acquire);
    return ch != 0 && a.slot6.peer_port == port && std::memcmp(a.slot6.peer_ip, ip, 16) == 0 ? ch : 0;
}

}  // namespace dp
