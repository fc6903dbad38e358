// L2 next hops for fast-path egress (DESIGN.md "L2 next hops mirror the
// kernel"): host entries (IP -> MAC, port), as the kernel's neighbour table
// has them, and one default per family (the gateway of the default route).
// Filled by the main lcore from the control plane or from learning kernel
// egress; a destination with neither is a miss, punted, never guessed.
//
// A next hop fits in 64 bits (MAC, port, valid bit), so workers read it as
// one word out of the hash's data pointer or an atomic: updates need no
// reclamation. Key slots of deleted host entries are reclaimed through QSBR.
//
// Mirroring (nexthop/kernel_mirror.h): the kernel's neighbour table and route
// changes, read over rtnetlink, add, change and remove host entries.
//
// Learning: kernel egress (the exception port's rx) carries the kernel's own
// neighbour resolution in its destination MAC. Workers queue (IP, MAC) pairs
// that differ from the table on a ring; the main lcore installs them. A
// destination the kernel never sent to stays a miss, so its first packet is
// punted, the slow path relays it, and that teaches the dataplane.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/dpdk.h"

namespace dp {

struct NextHop {
    rte_ether_addr mac{};
    uint16_t port = 0;
};

struct NextHopKey {
    uint8_t ip[16] = {};
    uint8_t family = 0;
    uint8_t pad[3] = {};
};
static_assert(sizeof(NextHopKey) == 20);

class NextHops {
public:
    static NextHops* create(const std::string& name, uint32_t entries, rte_rcu_qsbr* rcu, int socket_id,
                            std::string* error);
    ~NextHops();
    NextHops(const NextHops&) = delete;
    NextHops& operator=(const NextHops&) = delete;

    // Worker side (route.cc, once per burst): whether there are host entries
    // at all, the family's default, and the host entries of a whole burst.
    // Words are pack()ed, 0 = none.
    bool any_hosts() const { return hosts_.load(std::memory_order_relaxed) != 0; }
    uint64_t default_word(uint8_t family) const {
        return (family == 4 ? default4_ : default6_).load(std::memory_order_acquire);
    }
    // The host entries of n <= RTE_HASH_LOOKUP_BULK_MAX destinations (keys
    // from key()): one rte_hash_lookup_with_hash_bulk_data (its prefetching
    // pipeline, no per-key call), signatures computed inline with the
    // table's hash function (rte_hash_crc, initial value 0).
    void host_words(const NextHopKey* const* keys, uint32_t n, uint64_t* out) const {
        void* d[RTE_HASH_LOOKUP_BULK_MAX];
        hash_sig_t sig[RTE_HASH_LOOKUP_BULK_MAX];
        for (uint32_t i = 0; i < n; i++) {
            sig[i] = rte_hash_crc(keys[i], sizeof(NextHopKey), 0);
        }
        uint64_t hits = 0;
        rte_hash_lookup_with_hash_bulk_data(h_, reinterpret_cast<const void**>(const_cast<const NextHopKey**>(keys)),
                                            sig, n, &hits, d);
        for (uint32_t i = 0; i < n; i++) {
            out[i] = (hits >> i) & 1 ? reinterpret_cast<uint64_t>(d[i]) : 0;
        }
    }
    // The table's key for a destination (ip: 4 or 16 bytes by family).
    static NextHopKey key(uint8_t family, const uint8_t* ip) {
        NextHopKey k;
        std::memcpy(k.ip, ip, family == 4 ? 4 : 16);
        k.family = family;
        return k;
    }
    static uint8_t port_of(uint64_t w) { return static_cast<uint8_t>(w >> 48); }

    // Worker side, exception path only: the kernel sent a frame to `ip` with
    // destination MAC `mac` out of `port`; if that differs from what the
    // table says, queue it for the main lcore (dropped if the queue is full:
    // the kernel's next frame will teach it again).
    void learn(uint8_t family, const uint8_t* ip, const rte_ether_addr& mac, uint16_t port) {
        const NextHopKey k = key(family, ip);
        void* d = nullptr;
        NextHop nh;
        nh.mac = mac;
        nh.port = port;
        const uint64_t want = pack(nh);
        if (rte_hash_lookup_data(h_, &k, &d) >= 0 && reinterpret_cast<uint64_t>(d) == want) {
            return;
        }
        Learned l{k, want};
        rte_ring_mp_enqueue_elem(learn_, &l, sizeof l);
    }

    // Main lcore side.
    // Installs what workers learned from kernel egress; returns how many.
    unsigned apply_learned();
    int set_host(uint8_t family, const uint8_t* ip, const NextHop& nh);
    void del_host(uint8_t family, const uint8_t* ip);
    void set_default(uint8_t family, const NextHop& nh);
    void clear_default(uint8_t family);
    // The host entry for `ip`, if any.
    bool get_host(uint8_t family, const uint8_t* ip, NextHop* out) const;
    // Removes every host entry whose MAC is `mac` (destinations learned
    // through a neighbour that is gone or changed); returns how many.
    size_t remove_by_mac(const rte_ether_addr& mac);
    // Removes every host entry; returns how many.
    size_t flush_hosts();
    uint32_t hosts() const { return hosts_.load(std::memory_order_relaxed); }

    // Word layout (little endian): bytes 0-5 MAC, byte 6 port, byte 7 = 1 (valid).
    static uint64_t pack(const NextHop& nh) {
        uint8_t b[8];
        std::memcpy(b, nh.mac.addr_bytes, 6);
        b[6] = static_cast<uint8_t>(nh.port);
        b[7] = 1;
        uint64_t w;
        std::memcpy(&w, b, 8);
        return w;
    }
    static void unpack(uint64_t w, NextHop* out) {
        if constexpr (RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN) {
            // MAC then port as one 8-byte store: the valid byte cleared, the
            // port byte is the low byte of the 16-bit port.
            static_assert(sizeof(NextHop) == 8 && offsetof(NextHop, port) == 6);
            const uint64_t v = w & 0x00ffffffffffffffull;
            std::memcpy(static_cast<void*>(out), &v, 8);
        } else {
            std::memcpy(out->mac.addr_bytes, &w, 6);
            out->port = static_cast<uint8_t>(w >> 48);
        }
    }

private:
    struct Learned {
        NextHopKey key;
        uint64_t packed;
    };
    static_assert(sizeof(Learned) % 4 == 0);
    NextHops() = default;
    // Removes the host entries whose next hop satisfies `pred`; returns how many.
    template <typename Pred>
    size_t remove_if(Pred pred);
    rte_hash* h_ = nullptr;
    rte_ring* learn_ = nullptr;
    std::atomic<uint32_t> hosts_{0};
    std::atomic<uint64_t> default4_{0};
    std::atomic<uint64_t> default6_{0};
};

}  // namespace dp
