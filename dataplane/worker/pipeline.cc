// The whole per-packet path, in order. Each stage is one file (stages.h);
// each packet carries its next edge and, when punted or dropped, its reason.
// The express lane (express.cc) takes the common case, ChannelData on slot
// channels (IPv4 or IPv6, not between them), through every stage at once and classifies the rest for
// the stages, which it skips entirely when it finished the whole burst.
#include "worker/pipeline.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "worker/packet.h"
#include "worker/stages.h"

namespace dp {

namespace {

void run_burst(Worker& w, rte_mbuf** mbufs, uint16_t n, uint64_t now_tsc) {
    Pkt p[kBurst];
    // The relay's TOS rule, once for the whole burst: the lane and the
    // rewrite stage apply the same one even if the main lcore changes it now.
    w.tos_rule = w.flows->tos_rule.load(std::memory_order_relaxed);
    // Packets taken from one relayed address to another (Worker::hairpinning,
    // process_burst) are peer packets the lane finishes when their channel
    // is in a slot: it does not wait out a rest for them.
    if (w.hairpinning ? w.cfg.express : express_wanted(w)) {
        // ChannelData on slot channels (IPv4 or IPv6), both directions, through every
        // stage below at once; the other packets classified for the rest.
        if (express(w, mbufs, p, n, now_tsc) == Express::kSent) {
            return;
        }
    } else {
        classify(w, mbufs, p, n);  // Ethernet/IP/UDP, ChannelData vs Send vs peer
    }
    lookup(w, p, n);           // bulk flow-table lookups
    route(w, p, n, now_tsc);   // next hop, MTU, headroom
    police(w, p, n, now_tsc);  // per-allocation token bucket and counters
    rewrite(w, p, n);          // new headers in place, incremental checksums
    tx(w, p, n);               // NIC, exception port, or free
}

// Behind a 1:1 NAT: a hairpinned frame that route sent to a peer's
// external address (route.cc, relayed_peer) leaves rewritten from the
// sender's relayed address on the relay IP to the external IP. The socket
// path delivers it to the relay IP as coming from the sender's external
// address (Config::to_internal, to_external); swapping the two IPs does
// the same, and changes neither the IPv4 header checksum nor the UDP one
// (the pseudo-header holds both addresses either way). The frame is the
// rewrite's own: untagged (next hop kSelfPort), IP right after Ethernet.
void present_external(const NatIps& nat, rte_mbuf* m) {
    uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
    const uint16_t type = load_be16(d + offsetof(rte_ether_hdr, ether_type));
    const uint8_t fam = type == RTE_ETHER_TYPE_IPV4 ? 4 : type == RTE_ETHER_TYPE_IPV6 ? 6 : 0;
    const NatIps::Entry* e = fam == 0 ? nullptr : nat.current(fam);
    if (e == nullptr) {
        return;
    }
    uint8_t* l3 = d + sizeof(rte_ether_hdr);
    const size_t len = fam == 4 ? 4 : 16;
    uint8_t* src = l3 + (fam == 4 ? offsetof(rte_ipv4_hdr, src_addr) : offsetof(rte_ipv6_hdr, src_addr));
    uint8_t* dst = l3 + (fam == 4 ? offsetof(rte_ipv4_hdr, dst_addr) : offsetof(rte_ipv6_hdr, dst_addr));
    // Both checked: the map may have changed since route (then the frame
    // stays to the external IP, which the second pass does not take: no
    // relayed port there; dropped as drop_hairpin_unsendable, tx.cc).
    if (std::memcmp(dst, e->external, len) == 0 && std::memcmp(src, e->relay, len) == 0) {
        std::memcpy(dst, e->relay, len);
        std::memcpy(src, e->external, len);
    }
}

}  // namespace

void process_burst(Worker& w, rte_mbuf** mbufs, uint16_t n, uint64_t now_tsc) {
    w.counters.inc(Counter::rx, n);
    run_burst(w, mbufs, n, now_tsc);
    if (unlikely(w.nhairpin != 0)) {
        // Relay-to-relay: packets a client sent to another relayed address of
        // this relay, rewritten as that peer's packets (source: the sender's
        // relayed address), received again as if from the NIC; the second
        // allocation's permission, channel, limit and counters apply as to
        // any peer packet. Once only: they can only become packets to
        // clients, and route punts any that would come back here.
        static_assert(sizeof w.hairpin / sizeof w.hairpin[0] == kBurst);
        rte_mbuf* b[kBurst];
        const uint16_t k = w.nhairpin;
        std::copy(w.hairpin, w.hairpin + k, b);
        w.nhairpin = 0;
        if (w.flows->nat.n.load(std::memory_order_relaxed) != 0) {
            for (uint16_t i = 0; i < k; i++) {
                present_external(w.flows->nat, b[i]);
            }
        }
        w.counters.inc(Counter::hairpin, k);
        w.hairpinning = true;
        run_burst(w, b, k, now_tsc);
        w.hairpinning = false;
    }
}

namespace {

// The kernel's frame to an IP: its destination MAC, and the VLAN it left on
// (a frame from a VLAN device carries the tag; one 802.1Q tag, priority and
// DEI ignored; VLAN 0, priority-only, is untagged).
void learn_next_hop(Worker& w, const rte_mbuf* m) {
    const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
    const uint32_t len = m->data_len;
    if (len < sizeof(rte_ether_hdr) + sizeof(rte_vlan_hdr) || (d[0] & 1) != 0) {
        return;  // runt or multicast/broadcast destination
    }
    // Copied out, not read through rte_ether_hdr (2-byte aligned): a frame
    // may start at any address.
    rte_ether_addr dst;
    std::memcpy(&dst, d, sizeof dst);
    uint16_t type;
    std::memcpy(&type, d + offsetof(rte_ether_hdr, ether_type), 2);
    uint32_t off = sizeof(rte_ether_hdr);
    uint16_t vlan = 0;
    if (type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN)) {
        vlan = load_be16(d + off) & 0xfff;
        std::memcpy(&type, d + off + 2, 2);
        off += sizeof(rte_vlan_hdr);
        if (vlan > kMaxVlanId) {
            return;
        }
    }
    const uint8_t* l3 = d + off;
    if (type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) && len >= off + sizeof(rte_ipv4_hdr) && (l3[0] >> 4) == 4) {
        w.nexthops->learn(4, l3 + offsetof(rte_ipv4_hdr, dst_addr), dst, w.cfg.nic_port, vlan);
    } else if (type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6) && len >= off + sizeof(rte_ipv6_hdr) &&
               (l3[0] >> 4) == 6) {
        w.nexthops->learn(6, l3 + offsetof(rte_ipv6_hdr, dst_addr), dst, w.cfg.nic_port, vlan);
    }
}

// The exception port's side of a poll, for a worker that owns a queue there:
// the punts other workers left on its ring (WorkerConfig::exc_ring; a
// few bursts at most), then the kernel's egress, out of the NIC unchanged
// (the kernel resolved its L2 header, which teaches the next-hop table,
// nexthop/nexthop.h).
void exception_io(Worker& w) {
    rte_mbuf* b[kBurst];
    if (w.cfg.exc_ring != nullptr) {
        for (int k = 0; k < 4; k++) {
            const unsigned got = rte_ring_dequeue_burst(w.cfg.exc_ring, reinterpret_cast<void**>(b), kBurst, nullptr);
            tx_send(w, w.cfg.exc_port, b, static_cast<uint16_t>(got), Counter::drop_exception_tx_full);
            if (got < kBurst) {
                break;
            }
        }
    }
    const uint16_t e = rte_eth_rx_burst(w.cfg.exc_port, w.cfg.queue, b, kBurst);
    if (e != 0) {
        w.counters.inc(Counter::exception_to_nic, e);
        for (uint16_t i = 0; i < e; i++) {
            learn_next_hop(w, b[i]);
        }
        tx_send(w, w.cfg.nic_port, b, e, Counter::drop_nic_tx_full);
    }
}

}  // namespace

uint16_t poll_once(Worker& w) {
    rte_mbuf* b[kBurst];
    const uint16_t n = rte_eth_rx_burst(w.cfg.nic_port, w.cfg.queue, b, kBurst);
    if (n != 0) {
        process_burst(w, b, n, rte_rdtsc());
    }
    if (w.cfg.exc_owner) {
        exception_io(w);
    }
    rte_rcu_qsbr_quiescent(w.flows->rcu, w.cfg.id);
    return n;
}

}  // namespace dp
