// The dataplane's forwarding state: one lock-free rte_hash per address family
// (keys in flow/key.h), the allocation array, the per-worker per-allocation
// state (token bucket, counters) and the listening addresses.
//
// Concurrency: exactly one writer, the main lcore (flow/apply.cc), and any
// number of lock-free readers, the workers. The hashes are created with
// RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF and attached to an rte_rcu_qsbr
// variable: a deleted key's slot and its value are reused only after every
// worker has reported a quiescent state (once per burst loop) since the
// delete. Values that are replaced rather than deleted (a ChannelValue, an
// allocation index) go through a second defer queue on the same QSBR variable.
// Every object a worker can reach is immutable while reachable, except the
// allocation's rate (an atomic word).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/dpdk.h"
#include "flow/key.h"

namespace dp {

// Addresses in network byte order, as in packets. One cache line holds
// everything an IPv4 packet needs (police: epoch, rate; rewrite: relayed,
// client and listen addresses); the IPv6 relayed address lives in a side
// array (FlowTables::relayed6).
struct alignas(64) Allocation {
    uint32_t epoch;          // changes whenever the index is reused
    uint8_t family;          // of client/listen: 4 or 6
    uint8_t live;
    uint16_t relayed6_port;  // 0 if no IPv6 relayed address
    std::atomic<uint64_t> rate_bps;  // 0 = unlimited
    uint32_t relayed4_ip;
    uint16_t relayed4_port;  // 0 if no IPv4 relayed address
    uint16_t client_port;
    uint16_t listen_port;
    uint16_t pad0;
    uint32_t pad1;
    uint8_t client_ip[16];
    uint8_t listen_ip[16];
};
static_assert(sizeof(Allocation) == 64);

struct Relayed6 {
    uint8_t ip[16];
};

// Relayed transport addresses -> allocation, without hash entries: a relay
// has few relayed IPs and each has at most 65536 ports, so a direct array of
// 65536 words per relayed IP (256 KiB, allocated when the IP first appears)
// answers "is this an offloaded relayed port" in one load. Written by the main
// lcore; a word holds allocation index + 1, 0 for none.
struct RelayPorts {
    static constexpr uint32_t kMaxIps = 64;
    uint8_t ip[kMaxIps][16];
    uint8_t family[kMaxIps];
    std::atomic<uint32_t>* ports[kMaxIps];
    std::atomic<uint32_t> n;

    // Worker side. ip: 4 or 16 bytes; port in network byte order.
    bool find(uint8_t fam, const uint8_t* a, uint16_t port_be, uint32_t* alloc) const {
        const uint32_t cnt = n.load(std::memory_order_acquire);
        const size_t len = fam == 4 ? 4 : 16;
        for (uint32_t i = 0; i < cnt; i++) {
            if (family[i] == fam && std::memcmp(ip[i], a, len) == 0) {
                const uint32_t v = ports[i][rte_be_to_cpu_16(port_be)].load(std::memory_order_acquire);
                if (v == 0) {
                    return false;
                }
                *alloc = v - 1;
                return true;
            }
        }
        return false;
    }
};

// One worker's view of one allocation; only that worker writes it, the main
// lcore reads the counters (aligned 64-bit loads, no tearing on x86-64).
struct alignas(64) AllocState {
    uint32_t epoch;        // != Allocation::epoch: stale, reset before use
    uint32_t pad;
    double tokens;         // bytes
    uint64_t last_tsc;
    uint64_t to_peer_packets;
    uint64_t to_peer_bytes;
    uint64_t to_client_packets;
    uint64_t to_client_bytes;
    uint64_t dropped_packets;
};
static_assert(sizeof(AllocState) == 64);

struct ListenSet {
    static constexpr uint32_t kMax = 16;
    uint32_t v4_ip[kMax];
    uint16_t v4_port[kMax];
    uint8_t v6_ip[kMax][16];
    uint16_t v6_port[kMax];
    std::atomic<uint32_t> n4;  // entries below n are published (release)
    std::atomic<uint32_t> n6;

    bool has4(uint32_t ip, uint16_t port) const {
        const uint32_t n = n4.load(std::memory_order_acquire);
        for (uint32_t i = 0; i < n; i++) {
            if (v4_ip[i] == ip && v4_port[i] == port) {
                return true;
            }
        }
        return false;
    }
    bool has6(const uint8_t* ip, uint16_t port) const;
};

struct FlowConfig {
    std::string name = "flows";
    uint32_t entries_v4 = 1u << 16;   // hash entries (all kinds together)
    uint32_t entries_v6 = 1u << 12;
    uint32_t max_allocations = 1u << 14;
    uint32_t max_channels = 1u << 15;
    uint32_t workers = 1;
    int socket_id = SOCKET_ID_ANY;
};

class FlowTables {
public:
    // nullptr and *error set on failure (start-up only).
    static FlowTables* create(const FlowConfig& cfg, std::string* error);
    ~FlowTables();
    FlowTables(const FlowTables&) = delete;
    FlowTables& operator=(const FlowTables&) = delete;

    // ---- read side (workers) ----
    rte_hash* h4 = nullptr;
    rte_hash* h6 = nullptr;
    rte_rcu_qsbr* rcu = nullptr;
    Allocation* allocs = nullptr;
    ChannelValue* values = nullptr;
    Relayed6* relayed6 = nullptr;  // per allocation
    ListenSet* listen = nullptr;
    RelayPorts* relay_ports = nullptr;
    AllocState* state(uint32_t worker) const { return states_ + size_t{worker} * cfg_.max_allocations; }

    // ---- write side (main lcore only) ----
    // add() inserts or replaces; a replaced ChannelValue is retired. <0 on a full table.
    int add(const Key4& k, void* data);
    int add(const Key6& k, void* data);
    void del(const Key4& k);
    void del(const Key6& k);
    ChannelValue* new_value();        // nullptr when the pool is empty
    void free_unpublished(ChannelValue* v) { release(reinterpret_cast<uint64_t>(v)); }
    uint32_t new_alloc();             // UINT32_MAX when full
    void retire_alloc(uint32_t idx);  // reusable after a grace period
    void add_listen(uint8_t family, const uint8_t* ip, uint16_t port_be);
    // Relayed address -> allocation (alloc = UINT32_MAX clears). False when
    // the relay has more relayed IPs than RelayPorts::kMaxIps.
    bool set_relayed(uint8_t family, const uint8_t* ip, uint16_t port_be, uint32_t alloc);
    // Frees what the defer queues hold once readers have moved on.
    void reclaim();

    const FlowConfig& config() const { return cfg_; }
    uint32_t channel_values_in_use() const { return cfg_.max_channels - static_cast<uint32_t>(free_values_.size()); }
    uint32_t allocs_in_use() const { return cfg_.max_allocations - static_cast<uint32_t>(free_allocs_.size()); }
    // Bytes of hugepage memory this object allocated (hash tables, defer
    // queues, arrays), from the malloc heap statistics around create().
    // Plus the relayed-port arrays allocated since (256 KiB per relayed IP).
    size_t memory_bytes() const {
        return memory_bytes_ + size_t{relay_ports->n.load()} * 65536 * sizeof(uint32_t);
    }

private:
    FlowTables() = default;
    static void free_retired(void* self, void* elems, unsigned n);
    void retire(uint64_t tagged);
    void release(uint64_t tagged);

    FlowConfig cfg_;
    AllocState* states_ = nullptr;
    rte_rcu_qsbr_dq* dq_ = nullptr;
    std::vector<uint32_t> free_values_;
    std::vector<uint32_t> free_allocs_;
    uint32_t next_epoch_ = 1;
    size_t memory_bytes_ = 0;
};

}  // namespace dp
