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
// allocation index, a channel slot) go through a second defer queue on the
// same QSBR variable. Every object a worker can reach is immutable while
// reachable, except the allocation's bandwidth cost, `hashed` flag and slot
// channel numbers (atomic words; see ChanSlot for the slots' protocol), the
// relay-wide TOS rule (FlowTables::tos_rule), and the one word workers write:
// an allocation's bandwidth clock (Allocation::tat, shared by every worker).
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/dpdk.h"
#include "flow/client_cache.h"
#include "flow/key.h"

namespace dp {

// One client channel held in its allocation's line: both directions find it
// without a hash entry. An allocation with an IPv4 relayed address has two,
// for IPv4 peers on that address (ChannelAdd with an IPv4 peer on the
// allocation's IPv4 relayed address); one with only an IPv6 relayed address
// has one, for an IPv6 peer (ChanSlot6, in the same bytes). Publication
// protocol (main lcore writes, workers read): the peer is written while
// channel_be is 0, then channel_be is stored with release; a worker loads
// channel_be with acquire and reads the peer only if it is non-zero. A
// cleared slot (channel_be = 0, release) is rewritten only after a QSBR grace
// period (FlowTables::retire_slot), so a worker that saw the old channel
// number also sees the old peer.
struct ChanSlot {
    std::atomic<uint16_t> channel_be;  // 0 = empty (channels are >= 0x4000)
    uint16_t peer_port;                // network byte order
    uint32_t peer_ip;
};
static_assert(sizeof(ChanSlot) == 8);

struct ChanSlot6 {
    std::atomic<uint16_t> channel_be;  // as ChanSlot's
    uint16_t peer_port;
    uint8_t peer_ip[16];
};
static_assert(sizeof(ChanSlot6) == 20);

// The part of an allocation's line that only an allocation with an IPv4
// relayed address uses (Allocation::relayed4_port != 0).
struct RelayedV4 {
    static constexpr uint32_t kSlots = 2;
    uint32_t ip;             // the IPv4 relayed IP, network byte order
    ChanSlot slots[kSlots];
};
static_assert(sizeof(RelayedV4) == sizeof(ChanSlot6));

// Addresses in network byte order, as in packets. One cache line holds
// everything a packet needs (police: epoch, bandwidth; rewrite: relayed and
// client addresses, indices of the listening address and the IPv6 relayed
// IP; lookup: the channel slots), for both directions.
//
// Its last 20 bytes are the IPv4 relayed IP and two IPv4 channel slots
// (`v4`) when the allocation has an IPv4 relayed address (relayed4_port !=
// 0; dual-stack allocations too, whose IPv6 channels are then hashed), and
// one IPv6 channel slot (`slot6`) when it has only an IPv6 one: an IPv6 flow
// (allocation, permission, channel) then costs two hash entries, as an IPv4
// one does, not four and a ChannelValue (bench/RESULTS.md "IPv6 flows in
// 256 bytes"). Which one it is never changes while the index is published.
//
// Bandwidth limit (worker/police.cc): one budget per allocation, both
// directions and every worker together, as the control plane's own bucket
// in socket mode (docs/CONFIGURATION.md, [allocation].bandwidth_bps): a
// token bucket kept as its "theoretical arrival time" (GCRA, the virtual
// scheduling form of a token bucket), so that the whole state is one word
// that workers advance with compare-and-swap. `tat` is in TSC ticks: the
// bucket is full while tat <= now, and a packet of b bytes passes when
// max(tat, now) + b * byte_ticks - now <= the depth in ticks (one second, or
// 64 KiB when that is more), advancing tat by b * byte_ticks (or by budget
// for more packets, below). RSS puts an
// allocation's client and its peers on different workers; each enforcing a
// share of the rate would cut the allocation to a fraction of its limit.
// Only allocations with a limit write the line (and only for packets that
// pass); the main lcore zeroes tat before publishing a (re)used index.
// A worker advances the clock for up to 32 packets at once (AllocState::lease,
// worker/stages.h take_bandwidth): when both directions are busy on two
// workers, a write per packet would move this line, which the other fields
// share, between their cores on every packet (bench/RESULTS.md).
struct alignas(64) Allocation {
    static constexpr uint32_t kSlots = RelayedV4::kSlots;
    uint32_t epoch;          // changes whenever the index is reused
    uint8_t family;          // of client/listen: 4 or 6
    std::atomic<uint8_t> live;  // 1 from publication (release) until removal; workers' ClientCache check
    uint8_t listen;          // index in ListenSet (v4_* or v6_* by family)
    uint8_t relayed6_ip;     // index in RelayPorts::ip (if relayed6_port != 0)
    mutable std::atomic<uint64_t> tat;  // bandwidth clock (above), TSC ticks; written by workers
    uint16_t relayed6_port;  // 0 if no IPv6 relayed address
    uint16_t client_port;
    std::atomic<float> byte_ticks;  // TSC ticks per payload byte at the limit (byte_ticks_of); 0 = unlimited
    std::atomic<uint8_t> hashed;  // != 0: channels in the hash too (kChannelIn/kChannelOut)
    uint8_t slot_busy;       // main lcore only: bit i = slot i bound or waiting for a grace period
    uint16_t relayed4_port;  // 0 if no IPv4 relayed address
    uint8_t client_ip[16];
    union {
        RelayedV4 v4;     // relayed4_port != 0
        ChanSlot6 slot6;  // relayed4_port == 0
    };

    // No bandwidth limit (byte_ticks +0.0), tested as bits: an integer
    // compare on the express lane's path, 3 instructions fewer than a float one.
    bool unlimited() const { return std::bit_cast<uint32_t>(byte_ticks.load(std::memory_order_relaxed)) == 0; }
};
static_assert(sizeof(Allocation) == 64);
static_assert(offsetof(Allocation, v4) == 44);
static_assert(std::atomic<float>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

// Allocation::byte_ticks for a limit of `bps` payload bits per second on a
// TSC of `tsc_hz` (0: unlimited). A float: 24 bits of precision for any
// rate from 1 bit/s up.
inline float byte_ticks_of(uint64_t bps, double tsc_hz) {
    return bps == 0 ? 0.0f : static_cast<float>(tsc_hz * 8.0 / static_cast<double>(bps));
}

// Relayed transport addresses -> allocation, without hash entries: a relay
// has few relayed IPs and each has at most 65536 ports, so per relayed IP a
// two-level array (256 chunk pointers, chunks of 256 ports allocated when a
// port in them is first used: 1 KiB per 256 ports) answers "is this an
// offloaded relayed port, of which allocation" in two loads (the first one
// hits a 2 KiB table that stays in cache). Written by the main lcore; a word
// holds allocation index + 1, 0 for none. IPs and chunks are never freed
// before the tables are.
struct RelayPorts {
    static constexpr uint32_t kMaxIps = 64;
    using Chunk = std::atomic<uint32_t>;  // [256]
    uint8_t ip[kMaxIps][16];
    uint32_t ip4[kMaxIps];  // ip[i][0..3] as one word (IPv4 only)
    uint8_t family[kMaxIps];
    std::atomic<Chunk*>* ports[kMaxIps];  // [256]
    std::atomic<uint32_t> n;
    // Relayed IP -> index, per family: open addressing (linear probing, at
    // most 64 of 256 words used), a word stored with release once the IP's
    // entry above is whole; 0 = empty. IPv4: ip << 32 | index + 1. IPv6:
    // index + 1, a hit checked against ip[].
    static constexpr uint32_t kMapWords = 256;
    static_assert(kMapWords >= 4 * kMaxIps && (kMapWords & (kMapWords - 1)) == 0);
    std::atomic<uint64_t> map4[kMapWords];
    std::atomic<uint32_t> map6[kMapWords];

    // Worker side. ip: 4 or 16 bytes; port in network byte order. The word
    // of a relayed address (nullptr: not offloaded); both loads here hit the
    // small per-IP tables, the word itself is a separate (prefetchable) line.
    const std::atomic<uint32_t>* word(uint8_t fam, const uint8_t* a, uint16_t port_be) const {
        const uint32_t i = index_of(fam, a);
        return i == UINT32_MAX ? nullptr : word_at(i, port_be);
    }
    // The same for the relayed IP of index i (index_of).
    const std::atomic<uint32_t>* word_at(uint32_t i, uint16_t port_be) const {
        const uint16_t port = rte_be_to_cpu_16(port_be);
        const Chunk* c = ports[i][port >> 8].load(std::memory_order_acquire);
        return c == nullptr ? nullptr : &c[port & 0xff];
    }
    // The index of relayed IP `a` (4 or 16 bytes), UINT32_MAX if it is none.
    uint32_t index_of(uint8_t fam, const uint8_t* a) const {
        if (fam == 4) {
            uint32_t a4;
            std::memcpy(&a4, a, 4);
            return index_of4(a4);
        }
        for (uint32_t h = home6(a);; h = (h + 1) & (kMapWords - 1)) {
            const uint32_t v = map6[h].load(std::memory_order_acquire);
            if (v == 0) {
                return UINT32_MAX;
            }
            if (family[v - 1] == 6 && std::memcmp(ip[v - 1], a, 16) == 0) {
                return v - 1;
            }
        }
    }
    // Relayed IPs by hash (map4, map6): a relay with many of them (a million
    // allocations need at least 16) pays one probe per packet, not a scan
    // whose length, random per packet, the branch predictor cannot learn.
    static uint32_t home4(uint32_t a) { return (a * 0x9e3779b1u) >> 24; }
    static uint32_t home6(const uint8_t* a) {
        uint64_t x[2];
        std::memcpy(x, a, 16);
        const uint64_t f = x[0] ^ x[1];
        return home4(static_cast<uint32_t>(f ^ (f >> 32)));
    }
    uint32_t index_of4(uint32_t a) const {
        for (uint32_t h = home4(a);; h = (h + 1) & (kMapWords - 1)) {
            const uint64_t v = map4[h].load(std::memory_order_acquire);
            if (v == 0) {
                return UINT32_MAX;
            }
            if (static_cast<uint32_t>(v >> 32) == a) {
                return static_cast<uint32_t>(v) - 1;
            }
        }
    }
    // Stores `word` in the first empty word from `home` on (main lcore).
    template <class W>
    static void place(std::atomic<W>* map, uint32_t home, W word) {
        uint32_t h = home;
        while (map[h].load(std::memory_order_relaxed) != 0) {
            h = (h + 1) & (kMapWords - 1);
        }
        map[h].store(word, std::memory_order_release);
    }
    bool find(uint8_t fam, const uint8_t* a, uint16_t port_be, uint32_t* alloc) const {
        const std::atomic<uint32_t>* w = word(fam, a, port_be);
        const uint32_t v = w == nullptr ? 0 : w->load(std::memory_order_acquire);
        if (v == 0) {
            return false;
        }
        *alloc = v - 1;
        return true;
    }
};

// One worker's counters of one allocation; only that worker writes them, the
// main lcore reads them (aligned 64-bit loads, no tearing on x86-64). A line
// of its own: workers never write each other's lines.
struct alignas(64) AllocState {
    uint32_t epoch;        // != Allocation::epoch: stale, reset before use
    uint32_t lease_rate;   // bits of the Allocation::byte_ticks the lease was taken at
    uint64_t to_peer_packets;
    uint64_t to_peer_bytes;
    uint64_t to_client_packets;
    uint64_t to_client_bytes;
    uint64_t dropped_packets;
    uint64_t lease;        // ticks of the allocation's clock this worker took ahead, not yet spent (take_bandwidth)
    uint64_t lease_at;     // TSC when the lease was taken
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
    // The index of IPv6 listening address (ip, port), -1 if it is none (the
    // `a` of an IPv6 client's keys, flow/key.h).
    int index6(const uint8_t* ip, uint16_t port) const;
    // Whether IPv6 address `ip` is a listening IP, any port (IPv4 ones are
    // in OwnIps4).
    bool has6_ip(const uint8_t* ip) const;
};

// Behind a 1:1 NAT (ipc::ExternalIps, the control plane's
// [server].external_ips): per family, the IP the relay IP is reached at from
// outside. A client's packet to a peer on the external IP with an offloaded
// relayed port is relay-to-relay (worker/route.cc), and the second leg
// presents it as coming from the sender's external address (pipeline.cc),
// as the control plane's socket path does. Entries are written once by the
// main lcore and never changed after publication (n, release); `active`
// names each family's current one (index + 1, 0: none), so a worker reads an
// entry that stays whole however the map changes. At most kMax different
// pairs in a process's life (a control plane restarted with other external
// IPs each time); past that the Applier refuses a new one (and leaves that
// family without a current pair), and the control plane, which gets no echo,
// keeps such peers on the socket path. The external IPv4 addresses also join
// OwnIps4 and stay own addresses until the dataplane restarts, whatever
// pairs are current: a packet to a former external IP is punted, for the
// socket path to relay.
struct NatIps {
    static constexpr uint32_t kMax = 4;
    struct Entry {
        uint8_t family;          // 4 or 6
        uint8_t external[16];    // network byte order; IPv4 in the first 4 bytes, the rest 0
        uint8_t relay[16];
    };
    Entry e[kMax];
    std::atomic<uint32_t> n{0};
    std::atomic<uint8_t> active[2] = {};  // [0] IPv4, [1] IPv6

    // Family `fam`'s current pair, nullptr when it has none.
    const Entry* current(uint8_t fam) const {
        const uint8_t a = active[fam == 4 ? 0 : 1].load(std::memory_order_acquire);
        return a == 0 ? nullptr : &e[a - 1];
    }
    // Whether IPv6 address `ip` was ever an external IP here (IPv4 ones are
    // in OwnIps4).
    bool had6(const uint8_t* ip) const {
        const uint32_t cnt = n.load(std::memory_order_acquire);
        for (uint32_t i = 0; i < cnt; i++) {
            if (e[i].family == 6 && std::memcmp(e[i].external, ip, 16) == 0) {
                return true;
            }
        }
        return false;
    }
};

// The relay's own IPv4 addresses as the dataplane knows them: its relayed
// IPs (RelayPorts), listening IPs (ListenSet) and external IPs (NatIps), added with them by the
// main lcore and never removed before the tables are. A relayed packet to
// one of them never leaves by the NIC (relay-to-relay, route.cc). The
// express lane compares every packet's destination with the first two (one
// IPv4 address that listens and relays in most deployments) and asks has()
// only when there are more; the stages ask has(): an open-addressing set
// (linear probing, at most 80 of 256 words used, ~1 probe), so that a relay
// with many IPs (dataplane_bench's 1M flows use 21) pays no per-IP loop.
struct alignas(64) OwnIps4 {
    static constexpr uint32_t kMax = RelayPorts::kMaxIps + ListenSet::kMax + NatIps::kMax;
    static constexpr uint32_t kWords = 256;
    static_assert(kWords >= 3 * kMax && (kWords & (kWords - 1)) == 0);
    std::atomic<uint32_t> n{0};
    // The first two added, network byte order: atomic words (relaxed loads
    // are plain ones on x86 and arm64) because the express lane may read one
    // the main lcore is writing; only those below n (acquire) mean anything.
    std::atomic<uint32_t> first[2] = {};
    std::atomic<uint32_t> set[kWords] = {};  // 0: empty (0.0.0.0 is never own)

    static uint32_t home(uint32_t a) { return (a * 0x9e3779b1u) >> 24; }
    bool has(uint32_t a) const {
        for (uint32_t i = home(a);; i = (i + 1) & (kWords - 1)) {
            const uint32_t v = set[i].load(std::memory_order_relaxed);
            if (v == a) {
                return a != 0;
            }
            if (v == 0) {
                return false;
            }
        }
    }
    void add(uint32_t a) {  // main lcore
        const uint32_t cnt = n.load(std::memory_order_relaxed);
        if (a == 0 || has(a) || cnt == kMax) {
            return;
        }
        uint32_t i = home(a);
        while (set[i].load(std::memory_order_relaxed) != 0) {
            i = (i + 1) & (kWords - 1);
        }
        set[i].store(a, std::memory_order_release);
        if (cnt < 2) {
            first[cnt].store(a, std::memory_order_relaxed);
        }
        n.store(cnt + 1, std::memory_order_release);
    }
};

// FlowTables::tos_rule's word: keep in bits 0-7, set in bits 8-15.
constexpr uint16_t pack_tos_rule(uint8_t keep, uint8_t set) { return static_cast<uint16_t>(keep | set << 8); }
constexpr uint16_t kTosKeepAll = pack_tos_rule(0xff, 0);

struct FlowConfig {
    std::string name = "flows";
    uint32_t entries_v4 = 1u << 16;   // hash entries (all kinds together)
    uint32_t entries_v6 = 1u << 12;
    uint32_t max_allocations = 1u << 14;
    // ChannelValues: channels not held in an allocation's slots (more than
    // Allocation::kSlots per allocation, IPv6 peers).
    uint32_t max_channels = 1u << 12;
    uint32_t workers = 1;
    int socket_id = SOCKET_ID_ANY;
    bool client_cache = true;  // false: every client packet goes to the hash (measurements)
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
    ListenSet* listen = nullptr;
    RelayPorts* relay_ports = nullptr;
    // The TOS / Traffic Class byte of relayed datagrams: (received & keep) |
    // set, as pack_tos_rule() packs it (ipc::Settings; the control plane's
    // [server].dscp). One word, so a worker never combines one rule's keep
    // with another's set. Written by the main lcore (the Applier), loaded
    // (relaxed) by workers once per burst (rewrite_ctx, worker/rewrite44.h).
    // Starts as "keep everything".
    std::atomic<uint16_t> tos_rule{kTosKeepAll};
    OwnIps4 own4;  // relayed, listening and external IPv4 addresses (add_listen, relay_ip, set_nat)
    NatIps nat;    // external IPs (set_nat)
    // Whether `ip` (4 or 16 bytes by family) is one of the relay's own
    // addresses the dataplane knows: relayed, listening or external.
    bool own_ip(uint8_t family, const uint8_t* ip) const {
        if (family == 4) {
            uint32_t a;
            std::memcpy(&a, ip, 4);
            return own4.has(a);
        }
        return maybe_own6(ip) && (relay_ports->index_of(6, ip) != UINT32_MAX || listen->has6_ip(ip) || nat.had6(ip));
    }
    // A filter in front of own_ip(6, ...): bit RelayPorts::home6(ip) of 256
    // is set for every own IPv6 address (relayed, listening, external)
    // before the address is published, and never cleared (own addresses are
    // never removed), so one word answers "not own" for most destinations
    // (the express lane asks for every IPv6 packet it finishes).
    std::atomic<uint64_t> own6_bits[4] = {};
    bool maybe_own6(const uint8_t* ip) const {
        const uint32_t b = RelayPorts::home6(ip);
        return ((own6_bits[b >> 6].load(std::memory_order_acquire) >> (b & 63)) & 1) != 0;
    }
    void mark_own6(const uint8_t* ip) {  // main lcore
        const uint32_t b = RelayPorts::home6(ip);
        own6_bits[b >> 6].fetch_or(uint64_t{1} << (b & 63), std::memory_order_release);
    }
    // The `a` of an IPv6 key of `kind` for address (ip, port) (flow/key.h):
    // the index of that listening address or relayed IP. False when the
    // tables do not know it (no key of it can exist).
    bool key6_index(KeyKind kind, const uint8_t* ip, uint16_t port_be, uint8_t* a) const {
        const uint32_t i = a_is_listen(kind) ? static_cast<uint32_t>(listen->index6(ip, port_be))
                                             : relay_ports->index_of(6, ip);
        if (i >= RelayPorts::kMaxIps) {  // -1 as unsigned, or UINT32_MAX
            return false;
        }
        *a = static_cast<uint8_t>(i);
        return true;
    }
    // The TSC rate bandwidth limits are computed with (Allocation::byte_ticks
    // by the Applier, the bucket depth by the workers): rte_get_tsc_hz() at
    // create(). Tests that step their own clock set it before the first
    // allocation.
    double tsc_hz = 0;
    AllocState* state(uint32_t worker) const { return states_ + size_t{worker} * cfg_.max_allocations; }
    // Worker `worker`'s kClient cache (entries zeroed at creation; disabled
    // when the table has more allocations than the cache can name, or there
    // was no memory for it).
    bool cache_enabled() const { return caches_ != nullptr; }
    ClientCache client_cache(uint32_t worker) const {
        ClientCache c;
        if (caches_ != nullptr) {
            c.e = caches_ + size_t{worker} * (cache_mask_ + 1) * ClientCache::kBucketBytes;
            c.mask = cache_mask_;
        }
        return c;
    }

    // ---- write side (main lcore only) ----
    // add() inserts or replaces; a replaced ChannelValue is retired. <0 on a full table.
    int add(const Key4& k, void* data);
    int add(const Key6& k, void* data);
    // del() with only_alloc != UINT32_MAX deletes only while the key names
    // that allocation (inline value or ChannelValue::alloc); with only_data,
    // only while its value is exactly that (an inline allocation + channel).
    void del(const Key4& k, uint32_t only_alloc = UINT32_MAX, const void* only_data = nullptr);
    void del(const Key6& k, uint32_t only_alloc = UINT32_MAX, const void* only_data = nullptr);
    // The allocation a key names (UINT32_MAX: not in the table).
    uint32_t alloc_of(const Key4& k) const;
    uint32_t alloc_of(const Key6& k) const;
    // The key's value (nullptr: not in the table).
    const void* data_of(const Key4& k) const;
    const void* data_of(const Key6& k) const;
    ChannelValue* new_value();        // nullptr when the pool is empty
    void free_unpublished(ChannelValue* v) { release(reinterpret_cast<uint64_t>(v)); }
    uint32_t new_alloc();             // UINT32_MAX when full
    void retire_alloc(uint32_t idx);  // reusable after a grace period
    // Index of the listening address in ListenSet, added if new; -1 when the
    // set is full.
    int add_listen(uint8_t family, const uint8_t* ip, uint16_t port_be);
    // Relayed address -> allocation (alloc = UINT32_MAX clears). Returns the
    // IP's index in RelayPorts, -1 when the relay has more relayed IPs than
    // RelayPorts::kMaxIps or memory ran out.
    int set_relayed(uint8_t family, const uint8_t* ip, uint16_t port_be, uint32_t alloc);
    // Clears the relayed address only while it names `alloc` (another
    // allocation may have been given the address since).
    void clear_relayed(uint8_t family, const uint8_t* ip, uint16_t port_be, uint32_t alloc);
    // Index of a relayed IP in RelayPorts, added (no port published) if new;
    // -1 when full.
    int relay_ip(uint8_t family, const uint8_t* ip);
    // Makes (external, relay) family `family`'s current NAT pair (ip: 4 or
    // 16 bytes each), or clears the family's (external == nullptr). False
    // when NatIps already holds kMax other pairs (nothing changed).
    bool set_nat(uint8_t family, const uint8_t* external, const uint8_t* relay);
    // Channel slot `slot` of allocation `idx` was cleared (channel_be = 0);
    // it becomes free (slot_busy bit) after a grace period.
    void retire_slot(uint32_t idx, uint32_t slot);
    uint32_t channel_slots_in_use() const;
    // Frees what the defer queues hold once readers have moved on.
    void reclaim();

    const FlowConfig& config() const { return cfg_; }
    uint32_t channel_values_in_use() const { return cfg_.max_channels - static_cast<uint32_t>(free_values_.size()); }
    uint32_t allocs_in_use() const { return cfg_.max_allocations - static_cast<uint32_t>(free_allocs_.size()); }
    // Bytes of hugepage memory this object allocated (hash tables, defer
    // queues, arrays), from the malloc heap statistics around create().
    // Plus the relayed-port tables and chunks allocated since.
    size_t memory_bytes() const { return memory_bytes_ + relay_bytes_; }

private:
    FlowTables() = default;
    static void free_retired(void* self, void* elems, unsigned n);
    void retire(uint64_t tagged);
    void release(uint64_t tagged);
    // del() from h4 (i = 0) or h6 (1).
    void del_key(uint32_t i, const void* key, uint32_t only_alloc, const void* only_data);

    FlowConfig cfg_;
    AllocState* states_ = nullptr;
    uint8_t* caches_ = nullptr;  // per worker: cache_mask_ + 1 buckets
    uint32_t cache_mask_ = 0;
    rte_rcu_qsbr_dq* dq_ = nullptr;
    std::vector<uint32_t> free_values_;
    std::vector<uint32_t> free_allocs_;
    uint32_t next_epoch_ = 1;
    // The hashes' defer queues (del_key), [0] h4, [1] h6: their capacity,
    // and the deletes since the last mark (rte_rcu_qsbr_start token) every
    // worker has passed: before the current mark key_mark_, and since.
    uint32_t key_dq_size_[2] = {};
    uint32_t key_before_mark_[2] = {};
    uint32_t key_since_mark_[2] = {};
    uint64_t key_mark_ = 0;
    size_t memory_bytes_ = 0;
    size_t relay_bytes_ = 0;
};

}  // namespace dp
