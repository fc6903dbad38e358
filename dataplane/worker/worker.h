// One worker: an lcore with its own rx/tx queue on every port, its own
// counters, its own slice of per-allocation state, and a QSBR thread id.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/dpdk.h"
#include "flow/tables.h"
#include "nexthop/nexthop.h"
#include "worker/counters.h"
#include "worker/packet.h"

namespace dp {

constexpr uint16_t kMaxPorts = 8;
// The next hop "this dataplane itself" (route.cc): a relayed packet to one of
// the relay's own offloaded relayed addresses goes back into the pipeline as
// a packet from a peer (pipeline.cc) instead of out of a port. DPDK ports
// must be below it (main.cc).
constexpr uint16_t kSelfPort = kMaxPorts - 1;

struct WorkerConfig {
    uint32_t id = 0;          // QSBR thread id, index of the AllocState slice
    uint16_t nic_port = 0;
    uint16_t exc_port = 1;    // exception port (kernel side)
    uint16_t queue = 0;       // rx and tx queue id on every port (the exception port: if exc_owner)
    // The exception port can have fewer queues than there are workers (a
    // veth driven by AF_XDP has one): a worker without a queue of its own
    // there (exc_owner false) puts its punts on exc_ring, the ring of the
    // owner of queue id % queues, which that owner alone drains to its queue
    // (poll_once), so a worker's punts keep their order; only owners take
    // the kernel's egress. nullptr when every worker has its own exception
    // queue.
    bool exc_owner = true;
    rte_ring* exc_ring = nullptr;
    uint16_t mtu = 1500;      // IP MTU of the NIC ports
    rte_ether_addr port_mac[kMaxPorts] = {};  // source MAC per egress port (kSelfPort: init() sets nic_port's)
    uint64_t seed = 0x9e3779b97f4a7c15ull;    // STUN transaction ids
    bool express = true;  // false: every packet through the stages (tests, measurements; express.cc)
    // Bursts sent straight to the stages after one the express lane finished
    // less than half of (such traffic costs more through the lane; 0: never).
    uint8_t express_rest = 15;
};

struct Worker {
    WorkerConfig cfg;
    FlowTables* flows = nullptr;
    NextHops* nexthops = nullptr;
    AllocState* state = nullptr;  // flows->state(cfg.id)
    ClientCache cache;            // flows->client_cache(cfg.id); this worker's only
    uint64_t rng = 0;
    // Bytes 6-13 of an IPv4 / IPv6 frame leaving each port (source MAC,
    // ethertype) as one word, for rewrite44's and rewrite66's store (from
    // cfg.port_mac at init).
    uint64_t eth_src4[kMaxPorts] = {};
    uint64_t eth_src6[kMaxPorts] = {};
    uint64_t express_packets = 0;  // finished by the express lane (express.cc; statistics)
    uint8_t express_skip = 0;      // bursts left before the lane is tried again (express_wanted)
    uint16_t tos_rule = kTosKeepAll;  // this burst's FlowTables::tos_rule (process_burst; rewrite_ctx)
    // Relay-to-relay (pipeline.cc): the packets of a burst whose next hop is
    // kSelfPort (tx.cc puts them here), received again as peer packets once
    // the burst is out; `hairpinning` while they are (route.cc then punts
    // what would hairpin again, so a packet goes round at most once).
    rte_mbuf* hairpin[kBurst];
    uint16_t nhairpin = 0;
    bool hairpinning = false;
    uint64_t self_word = 0;  // NextHops::pack() of kSelfPort (init)
    Counters counters;

    // Bind to tables; call on the worker's lcore before the first poll.
    void init(const WorkerConfig& c, FlowTables* f, NextHops* n) {
        // kSelfPort is no DPDK port (main.cc refuses such ids; tests, the
        // bench and the fuzz targets make their workers themselves).
        RTE_VERIFY(c.nic_port < kSelfPort && c.exc_port < kSelfPort);
        cfg = c;
        cfg.port_mac[kSelfPort] = c.port_mac[c.nic_port];
        NextHop self;
        self.mac = cfg.port_mac[kSelfPort];
        self.port = kSelfPort;
        self_word = NextHops::pack(self);
        for (uint16_t port = 0; port < kMaxPorts; port++) {
            uint64_t mac = 0;
            std::memcpy(&mac, cfg.port_mac[port].addr_bytes, 6);  // little-endian: the MAC's bytes in order
            eth_src4[port] = mac | uint64_t{rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)} << 48;
            eth_src6[port] = mac | uint64_t{rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)} << 48;
        }
        flows = f;
        nexthops = n;
        state = f->state(c.id);
        cache = f->client_cache(c.id);
        rng = c.seed | 1;
        rte_rcu_qsbr_thread_register(f->rcu, c.id);
        rte_rcu_qsbr_thread_online(f->rcu, c.id);
    }
    void fini() {
        rte_rcu_qsbr_thread_offline(flows->rcu, cfg.id);
        rte_rcu_qsbr_thread_unregister(flows->rcu, cfg.id);
    }
    // This worker's counters of an allocation, reset the first time they are
    // touched after the allocation index was (re)used.
    AllocState& alloc_state(uint32_t idx) {
        AllocState& s = state[idx];
        const uint32_t e = flows->allocs[idx].epoch;
        if (unlikely(s.epoch != e)) {
            s = AllocState{};
            s.epoch = e;
        }
        return s;
    }
    uint64_t next_random() {  // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 0x2545F4914F6CDD1Dull;
    }
};

}  // namespace dp
