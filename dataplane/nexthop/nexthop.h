// L2 next hops for fast-path egress (DESIGN.md "L2 next hops mirror the
// kernel"): host entries (IP -> MAC, port), as the kernel's neighbour table
// has them, and one default per family (the gateway of the default route).
// Filled by the main lcore from the kernel mirror or from learning kernel
// egress; a destination with neither is a miss, punted, never guessed.
//
// A destination that a kernel route more specific than the default covers
// (a connected subnet, a route via another router, a blackhole; the
// mirror's prefixes below) has no default next hop: the kernel would not
// send it to the default gateway. Its host entry sends it; without one it
// is punted, and the kernel, which knows the route, sends it (resolving an
// on-link neighbour, which the mirror then takes, or teaching the
// dataplane the other router's MAC through kernel egress).
//
// A next hop fits in 64 bits (MAC, port, valid bit, VLAN ID), so workers
// read it as one word out of the hash's data pointer or an atomic: updates
// need no reclamation. Key slots of deleted host entries are reclaimed
// through QSBR.
//
// VLANs: a next hop reached through an 802.1Q VLAN carries its VLAN ID, and
// frames to it leave tagged with it (rewrite.cc). The kernel mirror takes it
// from the VLAN device the neighbour is on; learning from the tag of the
// kernel's frame. A received frame's own tag decides nothing: where a
// packet goes decides how it leaves.
//
// Mirroring (nexthop/kernel_mirror.h): the kernel's neighbour table and route
// changes, read over rtnetlink, add, change and remove host entries.
//
// Learning: kernel egress (the exception port's rx) carries the kernel's own
// neighbour resolution in its destination MAC. Workers queue (IP, MAC) pairs
// that differ from the table on a ring; the main lcore installs them. A
// destination the kernel never sent to stays a miss, so its first packet is
// punted, the slow path relays it, and that teaches the dataplane.
// Learned entries are the main lcore's to age: each expires its TTL after it
// was installed (the destination's next packet takes the slow path once and
// the kernel's egress teaches it again, so a destination no longer used
// does not hold a slot for ever, and one whose route changed in a way no
// notification said is corrected), and while the table is nearly full the
// oldest learned entries make room for new ones. Neighbour entries (the
// kernel mirror's) do not expire: the kernel's neighbour table says when
// they go. Where every destination is learned (a multipath default route,
// no default route), the table's capacity (turn-dataplane --nexthops) bounds
// how many destinations the fast path reaches at once.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/dpdk.h"

namespace dp {

struct NextHop {
    rte_ether_addr mac{};
    uint16_t port = 0;  // < 8 (three bits of the word; main.cc keeps ports below kMaxPorts)
    uint16_t vlan = 0;  // 802.1Q VLAN ID the frame leaves with, 1-4094; 0: untagged
};
constexpr uint16_t kMaxVlanId = 4094;  // 4095 is reserved (IEEE 802.1Q)

// 8-byte aligned and sized: rte_hash_crc reads keys 8 bytes at a time, also
// in arrays of them (route.cc, express.cc). Every byte is part of the key.
struct alignas(8) NextHopKey {
    uint8_t ip[16] = {};
    uint8_t family = 0;
    uint8_t pad[7] = {};
    bool operator==(const NextHopKey&) const = default;
};
static_assert(sizeof(NextHopKey) == 24);

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
    // Whether some host entry is outside every more specific route (a
    // neighbour off the kernel's subnets, or a destination the kernel sends
    // to another MAC than the default's). While none is, a destination no
    // route covers has no host entry: its next hop is the default, without
    // a lookup (need_lookup).
    bool uncovered_hosts() const { return uncovered_.load(std::memory_order_relaxed) != 0; }
    // Whether `ip` may have a host entry, or is covered (false: the default
    // is its next hop). `uncovered`: uncovered_hosts(), read once per burst
    // by a caller with many destinations.
    bool need_lookup(uint8_t family, const uint8_t* ip, bool uncovered) const {
        return uncovered || covered(family, ip);
    }
    bool need_lookup(uint8_t family, const uint8_t* ip) const {
        return need_lookup(family, ip, uncovered_hosts());
    }
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
    // One destination's next hop: its host entry, else the family's default
    // unless a more specific route covers it (0: neither).
    uint64_t word_for(uint8_t family, const uint8_t* ip) const {
        uint64_t nh = 0;
        if (need_lookup(family, ip)) {
            const NextHopKey k = key(family, ip);
            const NextHopKey* kp = &k;
            host_words(&kp, 1, &nh);
        }
        return nh != 0 ? nh : default_for(family, ip, default_word(family));
    }
    // Whether the kernel has routes more specific than the default (a
    // burst's destinations then need checking one by one).
    bool any_prefixes() const {
        return (prefixes_[0].n.load(std::memory_order_relaxed) | prefixes_[1].n.load(std::memory_order_relaxed)) != 0;
    }
    // The next hop of a destination without a host entry: the family's
    // default `def`, or none (0) when a more specific route covers `ip`.
    uint64_t default_for(uint8_t family, const uint8_t* ip, uint64_t def) const {
        return def != 0 && covered(family, ip) ? 0 : def;
    }
    // Whether a more specific route covers `ip`. Read as a seqlock: while
    // the main lcore rewrites the family's prefixes, or past kMaxPrefixes of
    // them, every destination is covered (punted: the slow path, never a
    // guess).
    bool covered(uint8_t family, const uint8_t* ip) const;
    // The table's key for a destination (ip: 4 or 16 bytes by family).
    static NextHopKey key(uint8_t family, const uint8_t* ip) {
        NextHopKey k;
        std::memcpy(k.ip, ip, family == 4 ? 4 : 16);
        k.family = family;
        return k;
    }
    static uint8_t port_of(uint64_t w) { return static_cast<uint8_t>((w >> 48) & 7); }
    static uint16_t vlan_of(uint64_t w) { return static_cast<uint16_t>(w >> kVlanShift); }
    // A next hop at all (the word of a missing one is 0).
    static bool usable(uint64_t w) { return (w & kValid) != 0; }

    // Worker side, exception path only: the kernel sent a frame to `ip` with
    // destination MAC `mac` out of `port` (tagged `vlan`, 0: untagged); if
    // that differs from what the table says, queue it for the main lcore
    // (dropped if the queue is full: the kernel's next frame will teach it
    // again).
    void learn(uint8_t family, const uint8_t* ip, const rte_ether_addr& mac, uint16_t port, uint16_t vlan) {
        const NextHopKey k = key(family, ip);
        void* d = nullptr;
        NextHop nh;
        nh.mac = mac;
        nh.port = port;
        nh.vlan = vlan;
        const uint64_t want = pack(nh);
        if (rte_hash_lookup_data(h_, &k, &d) >= 0 ? reinterpret_cast<uint64_t>(d) == want
                                                   : default_says(family, ip, want)) {
            return;  // known, or what the default says already (apply_learned)
        }
        Learned l{k, want};
        rte_ring_mp_enqueue_elem(learn_, &l, sizeof l);
    }

    // Main lcore side.
    // Installs what workers learned from kernel egress (as learned at
    // `now`, TSC); returns how many entries it added, changed or removed.
    // A new entry while the table holds high_water() entries or more
    // removes the oldest learned ones first (learn_stats().evicted); one
    // that still finds the table at its high water (its entries are
    // neighbours) or no free slot is counted (refused) and dropped: the
    // kernel's next frame to it teaches it again.
    unsigned apply_learned(uint64_t now);
    unsigned apply_learned() { return apply_learned(rte_get_timer_cycles()); }
    // Removes learned entries installed at least learned_ttl (TSC cycles)
    // before `now`, oldest first, at most kExpireAtOnce per call (so that
    // entries learned together, after a flush, leave over several calls and
    // their next packets do not reach the kernel all at once); returns how
    // many. learned_ttl 0: learned entries never expire.
    unsigned expire_learned(uint64_t now);
    static constexpr unsigned kExpireAtOnce = 256;
    void set_learned_ttl(uint64_t cycles) { learned_ttl_ = cycles; }
    struct LearnStats {
        uint64_t installed = 0;  // learned entries added or changed
        uint64_t expired = 0;    // removed at their TTL
        uint64_t evicted = 0;    // removed to make room for newer ones
        uint64_t refused = 0;    // learned next hops not installed: at the high water with only neighbours, or no free slot
    };
    const LearnStats& learn_stats() const { return learn_stats_; }
    // Host entries the table holds, and how many of those present are learned.
    uint32_t capacity() const { return capacity_; }
    uint32_t learned() const { return static_cast<uint32_t>(learned_.size()); }
    // From this many entries on, a new one evicts the oldest learned ones,
    // and learned ones are refused when none is left to evict: a sixteenth
    // of the table stays for neighbours and for deleted entries' slots,
    // which the hash reuses only after the workers' grace period.
    uint32_t high_water() const { return capacity_ - std::max<uint32_t>(capacity_ / 16, 4); }
    // The family's kernel routes more specific than the default as the
    // workers see them (kMaxPrefixes + 1: too many).
    uint32_t prefix_count(uint8_t family) const {
        return prefixes_[family == 4 ? 0 : 1].n.load(std::memory_order_relaxed);
    }
    int set_host(uint8_t family, const uint8_t* ip, const NextHop& nh);
    void del_host(uint8_t family, const uint8_t* ip);
    void set_default(uint8_t family, const NextHop& nh);
    void clear_default(uint8_t family);
    // The kernel's routes more specific than the default, of one family
    // (len 1-32 or 1-128; ip's bits past len are ignored). More than
    // kMaxPrefixes: every destination without a host entry is punted.
    struct Prefix {
        uint8_t ip[16] = {};
        uint8_t len = 0;
        bool operator==(const Prefix&) const = default;
        // Whether `addr` (of the prefix's family) is inside it.
        bool contains(const uint8_t* addr) const {
            const unsigned full = len / 8;
            if (std::memcmp(addr, ip, full) != 0) {
                return false;
            }
            const unsigned rest = len % 8;
            if (rest == 0) {
                return true;
            }
            const auto mask = static_cast<uint8_t>(0xffu << (8 - rest));
            return ((addr[full] ^ ip[full]) & mask) == 0;
        }
    };
    static constexpr uint32_t kMaxPrefixes = 32;
    void set_prefixes(uint8_t family, const std::vector<Prefix>& p);
    // The host entry for `ip`, if any.
    bool get_host(uint8_t family, const uint8_t* ip, NextHop* out) const;
    // Removes every host entry whose MAC is `mac` on VLAN `vlan`
    // (destinations learned through a neighbour that is gone or changed);
    // returns how many.
    size_t remove_by_mac(const rte_ether_addr& mac, uint16_t vlan);
    // Removes every host entry; returns how many.
    size_t flush_hosts();
    // The host entry of `ip` is the kernel's neighbour (the mirror found it
    // there already, learned from the kernel's egress first): no longer
    // aged or evicted as a learned one.
    void keep_as_neighbour(uint8_t family, const uint8_t* ip) { learned_.erase(key(family, ip)); }
    // Whether the host entry of `ip` was learned from kernel egress (not the
    // kernel's neighbour).
    bool is_learned(uint8_t family, const uint8_t* ip) const { return learned_.count(key(family, ip)) != 0; }
    // Removes the learned host entries whose key satisfies `pred` (the kernel
    // mirror: destinations a route change may reroute); returns how many.
    template <typename Pred>
    size_t remove_learned_if(Pred pred) {
        std::vector<NextHopKey> doomed;
        for (const auto& [k, at] : learned_) {
            if (pred(k)) {
                doomed.push_back(k);
            }
        }
        for (const NextHopKey& k : doomed) {
            remove_key(k);
        }
        return doomed.size();
    }
    uint32_t hosts() const { return hosts_.load(std::memory_order_relaxed); }

    // Word layout: bits 0-47 the MAC (its bytes in order in a little-endian
    // word), 48-50 the port, 51 valid, 52-63 the VLAN ID.
    static constexpr uint64_t kValid = 1ull << 51;
    static constexpr unsigned kVlanShift = 52;
    static constexpr uint64_t kVlanMask = 0xfffull << kVlanShift;
    static uint64_t pack(const NextHop& nh) {
        uint64_t mac = 0;
        for (int i = 5; i >= 0; i--) {
            mac = mac << 8 | nh.mac.addr_bytes[i];
        }
        return mac | uint64_t{nh.port & 7u} << 48 | kValid | uint64_t{nh.vlan & 0xfffu} << kVlanShift;
    }
    static void unpack(uint64_t w, NextHop* out) {
        if constexpr (RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN) {
            // MAC then port as one 8-byte store (rewrite44 reads them back as
            // one word): the port's three bits are the low byte of the
            // 16-bit port.
            static_assert(offsetof(NextHop, port) == 6 && offsetof(NextHop, vlan) == 8);
            const uint64_t v = w & 0x0007ffffffffffffull;
            std::memcpy(static_cast<void*>(out), &v, 8);
        } else {
            for (int i = 0; i < 6; i++) {
                out->mac.addr_bytes[i] = static_cast<uint8_t>(w >> (8 * i));
            }
            out->port = port_of(w);
        }
        out->vlan = vlan_of(w);
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
    // One family's prefixes, as an address's two 64-bit words (IPv4: the
    // first word's low half) masked.
    struct PrefixSet {
        std::atomic<uint32_t> seq{0};  // odd while set_prefixes writes
        std::atomic<uint32_t> n{0};    // entries; kMaxPrefixes + 1: too many
        struct {
            std::atomic<uint64_t> net[2];
            std::atomic<uint64_t> mask[2];
        } e[kMaxPrefixes];
    };
    rte_hash* h_ = nullptr;
    rte_ring* learn_ = nullptr;
    uint32_t capacity_ = 0;
    PrefixSet prefixes_[2];  // [0] IPv4, [1] IPv6
    // Counts a host entry added (+1) or removed (-1).
    void count(const NextHopKey& k, int delta);
    // Whether next hop `w` for `ip` is what the default gives it (no route
    // covers it): no host entry needed (learn, apply_learned).
    bool default_says(uint8_t family, const uint8_t* ip, uint64_t w) const {
        return w == default_word(family) && !covered(family, ip);
    }
    std::atomic<uint32_t> hosts_{0};
    std::atomic<uint32_t> uncovered_{0};  // host entries no prefix covers
    std::atomic<uint64_t> default4_{0};
    std::atomic<uint64_t> default6_{0};
    // Main lcore only, on lines of their own (no worker's line is written
    // when they change): the learned entries present, with the TSC at which
    // each was installed, and the same in installation order (a record whose
    // key is gone, or was installed again later, is skipped when it comes
    // up; compact_order() rebuilds the queue when such records pile up).
    struct KeyHash {
        size_t operator()(const NextHopKey& k) const { return rte_hash_crc(&k, sizeof k, 0); }
    };
    alignas(RTE_CACHE_LINE_SIZE) std::unordered_map<NextHopKey, uint64_t, KeyHash> learned_;
    std::deque<std::pair<NextHopKey, uint64_t>> order_;
    uint64_t learned_ttl_ = 0;
    LearnStats learn_stats_;
    // Removes the oldest learned entry (learned_, the hash); false: none.
    bool evict_oldest();
    // While the table is at its high water, the oldest learned entries go
    // (counted as evicted) until it is not or none is left.
    void make_room();
    // Whether order_'s record (k, at) is the learned entry present (not one
    // removed, or installed again later).
    bool current(const NextHopKey& k, uint64_t at) const;
    void compact_order();
    // Removes host entry k (a deleted key's slot is reused after the
    // workers' grace period); true if it was there.
    bool remove_key(const NextHopKey& k);
};

}  // namespace dp
