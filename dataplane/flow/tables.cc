#include "flow/tables.h"

#include <algorithm>
#include <cstring>

namespace dp {

namespace {

size_t heap_allocated() {
    size_t total = 0;
    for (unsigned s = 0; s < rte_socket_count(); s++) {
        rte_malloc_socket_stats st{};
        if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(s), &st) == 0) {
            total += st.heap_allocsz_bytes;
        }
    }
    return total;
}

// Tagged defer-queue element: bit 0 set = allocation index << 1; bits 1..0 =
// 10 = channel slot (index << 3 | slot << 2); else a ChannelValue pointer
// (8-byte aligned).
uint64_t tag_alloc(uint32_t idx) { return (uint64_t{idx} << 1) | 1u; }
uint64_t tag_slot(uint32_t idx, uint32_t slot) { return (uint64_t{idx} << 3) | (uint64_t{slot} << 2) | 2u; }

// Defer-queue sizes: rte_rcu_qsbr_dq rounds size + 1 up to a power of two,
// so 2^k - 1 costs exactly 2^k elements.
uint32_t dq_size_for(uint32_t want, uint32_t min) {
    want = std::max(want, min + 1);
    return rte_align32prevpow2(want) - 1;
}

}  // namespace

int ListenSet::index6(const uint8_t* ip, uint16_t port) const {
    const uint32_t n = n6.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        if (v6_port[i] == port && std::memcmp(v6_ip[i], ip, 16) == 0) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

bool ListenSet::has6_ip(const uint8_t* ip) const {
    const uint32_t n = n6.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        if (std::memcmp(v6_ip[i], ip, 16) == 0) {
            return true;
        }
    }
    return false;
}

FlowTables* FlowTables::create(const FlowConfig& cfg, std::string* error) {
    auto* t = new FlowTables();
    t->cfg_ = cfg;
    t->tsc_hz = static_cast<double>(rte_get_tsc_hz());
    const size_t before = heap_allocated();
    auto fail = [&](const std::string& what) {
        *error = what + ": " + rte_strerror(rte_errno);
        delete t;
        return nullptr;
    };

    const size_t rcu_size = rte_rcu_qsbr_get_memsize(cfg.workers);
    t->rcu = static_cast<rte_rcu_qsbr*>(rte_zmalloc_socket("dp_rcu", rcu_size, RTE_CACHE_LINE_SIZE, cfg.socket_id));
    if (t->rcu == nullptr || rte_rcu_qsbr_init(t->rcu, cfg.workers) != 0) {
        return fail("rcu qsbr");
    }

    const std::string n4 = cfg.name + "_v4";
    const std::string n6 = cfg.name + "_v6";
    rte_hash_parameters p{};
    p.hash_func = rte_hash_crc;
    p.hash_func_init_val = 0;
    p.socket_id = cfg.socket_id;
    p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;

    p.name = n4.c_str();
    p.entries = cfg.entries_v4;
    p.key_len = sizeof(Key4);
    t->h4 = rte_hash_create(&p);
    if (t->h4 == nullptr) {
        return fail("rte_hash_create " + n4);
    }
    p.name = n6.c_str();
    p.entries = cfg.entries_v6;
    p.key_len = sizeof(Key6);
    t->h6 = rte_hash_create(&p);
    if (t->h6 == nullptr) {
        return fail("rte_hash_create " + n6);
    }
    for (rte_hash* h : {t->h4, t->h6}) {
        rte_hash_rcu_config rc{};
        rc.v = t->rcu;
        rc.mode = RTE_HASH_QSBR_MODE_DQ;
        // Deleted keys wait here for a grace period. An eighth of the table
        // (the default, one slot per entry, costs 16 bytes per entry); at
        // least 127. A delete the full queue refuses would lose its key slot
        // for good (DPDK 22.11 logs it and frees nothing), so del_key()
        // waits for the workers before one could. Each delete reclaims,
        // once more than 64 wait, every key whose grace period has passed
        // (at most the whole queue), so that del_key's bound holds.
        const uint32_t i = h == t->h4 ? 0 : 1;
        rc.dq_size = dq_size_for((i == 0 ? cfg.entries_v4 : cfg.entries_v6) / 8, 127);
        rc.trigger_reclaim_limit = 64;
        rc.max_reclaim_size = rc.dq_size;
        t->key_dq_size_[i] = rc.dq_size;
        // Key slots only: values are retired through our own defer queue
        // (del() below), which reclaim() can drain on demand; DPDK 22.11 has
        // no call to drain the hash's queue before its trigger limit.
        rc.key_data_ptr = nullptr;
        rc.free_key_data_func = nullptr;
        if (rte_hash_rcu_qsbr_add(h, &rc) != 0) {
            return fail("rte_hash_rcu_qsbr_add");
        }
    }

    const std::string dqname = cfg.name + "_dq";
    rte_rcu_qsbr_dq_parameters dp{};
    dp.name = dqname.c_str();
    // Retired values, allocation indices and channel slots wait here. An
    // eighth of what could be retired at once (at least 1023); when it is
    // full, retire() waits for the workers' next quiescent states (main
    // lcore only, never a worker).
    dp.size = dq_size_for((cfg.max_channels + cfg.max_allocations) / 8, 1023);
    dp.esize = 8;
    dp.trigger_reclaim_limit = 64;
    dp.max_reclaim_size = 256;
    dp.free_fn = &FlowTables::free_retired;
    dp.p = t;
    dp.v = t->rcu;
    t->dq_ = rte_rcu_qsbr_dq_create(&dp);
    if (t->dq_ == nullptr) {
        return fail("rte_rcu_qsbr_dq_create");
    }

    t->allocs = static_cast<Allocation*>(
        rte_zmalloc_socket("dp_allocs", sizeof(Allocation) * cfg.max_allocations, RTE_CACHE_LINE_SIZE, cfg.socket_id));
    t->values = static_cast<ChannelValue*>(
        rte_zmalloc_socket("dp_chvals", sizeof(ChannelValue) * cfg.max_channels, RTE_CACHE_LINE_SIZE, cfg.socket_id));
    t->states_ = static_cast<AllocState*>(rte_zmalloc_socket(
        "dp_astate", sizeof(AllocState) * cfg.max_allocations * cfg.workers, RTE_CACHE_LINE_SIZE, cfg.socket_id));
    t->listen = static_cast<ListenSet*>(rte_zmalloc_socket("dp_listen", sizeof(ListenSet), RTE_CACHE_LINE_SIZE, cfg.socket_id));
    t->relay_ports = static_cast<RelayPorts*>(
        rte_zmalloc_socket("dp_relayports", sizeof(RelayPorts), RTE_CACHE_LINE_SIZE, cfg.socket_id));
    if (t->allocs == nullptr || t->values == nullptr || t->states_ == nullptr || t->listen == nullptr ||
        t->relay_ports == nullptr) {
        return fail("rte_zmalloc flow arrays");
    }
    // Worker caches (flow/client_cache.h): 1.5 ways per allocation slot,
    // rounded up to a power of two, in 16-way buckets (with one way per slot
    // 4.5 % of lookups missed at 1M flows: buckets overflowed).
    if (cfg.client_cache && cfg.max_allocations <= ClientCache::kMaxAlloc + 1) {
        const uint32_t want = cfg.max_allocations + cfg.max_allocations / 2;  // load <= 2/3 of the ways
        const uint32_t buckets = std::max(rte_align32pow2(want), ClientCache::kWays) / ClientCache::kWays;
        t->cache_mask_ = buckets - 1;
        // Without memory for it the workers go to the hash for every client
        // packet (slower, same answers); FlowTables::cache_enabled() says so.
        t->caches_ = static_cast<uint8_t*>(rte_zmalloc_socket(
            "dp_ccache", size_t{buckets} * ClientCache::kBucketBytes * cfg.workers, RTE_CACHE_LINE_SIZE, cfg.socket_id));
    }
    t->free_values_.reserve(cfg.max_channels);
    for (uint32_t i = cfg.max_channels; i-- > 0;) {
        t->free_values_.push_back(i);
    }
    t->free_allocs_.reserve(cfg.max_allocations);
    for (uint32_t i = cfg.max_allocations; i-- > 0;) {
        t->free_allocs_.push_back(i);
    }
    t->memory_bytes_ = heap_allocated() - before;
    return t;
}

FlowTables::~FlowTables() {
    if (dq_ != nullptr) {
        rte_rcu_qsbr_dq_delete(dq_);
    }
    rte_hash_free(h4);
    rte_hash_free(h6);
    rte_free(allocs);
    rte_free(values);
    rte_free(states_);
    rte_free(caches_);
    rte_free(listen);
    if (relay_ports != nullptr) {
        for (uint32_t i = 0; i < relay_ports->n.load(); i++) {
            for (uint32_t c = 0; c < 256; c++) {
                rte_free(relay_ports->ports[i][c].load());
            }
            rte_free(relay_ports->ports[i]);
        }
    }
    rte_free(relay_ports);
    rte_free(rcu);
}

void FlowTables::release(uint64_t tagged) {
    if (tagged & 1u) {
        const auto idx = static_cast<uint32_t>(tagged >> 1);
        free_allocs_.push_back(idx);  // not live since Applier::remove_alloc
    } else if (tagged & 2u) {
        // FIFO: an allocation's slot retirements come back before the
        // allocation's own, so the index still names the same allocation.
        const auto idx = static_cast<uint32_t>(tagged >> 3);
        allocs[idx].slot_busy = static_cast<uint8_t>(allocs[idx].slot_busy & ~(1u << ((tagged >> 2) & 1u)));
    } else {
        auto* v = reinterpret_cast<ChannelValue*>(tagged);
        free_values_.push_back(static_cast<uint32_t>(v - values));
    }
}

void FlowTables::free_retired(void* self, void* elems, unsigned n) {
    auto* t = static_cast<FlowTables*>(self);
    for (unsigned i = 0; i < n; i++) {
        uint64_t e;
        std::memcpy(&e, static_cast<uint8_t*>(elems) + i * 8, 8);
        t->release(e);
    }
}

void FlowTables::retire(uint64_t tagged) {
    // Full queue: wait until the workers' quiescent states free some of it
    // (microseconds; they never wait for the main lcore).
    while (rte_rcu_qsbr_dq_enqueue(dq_, &tagged) != 0) {
        unsigned freed = 0, pending = 0, avail = 0;
        rte_rcu_qsbr_dq_reclaim(dq_, UINT32_MAX, &freed, &pending, &avail);
        if (freed == 0) {
            rte_pause();
        }
    }
}

void FlowTables::retire_slot(uint32_t idx, uint32_t slot) { retire(tag_slot(idx, slot)); }

uint32_t FlowTables::channel_slots_in_use() const {
    uint32_t n = 0;
    for (uint32_t i = 0; i < cfg_.max_allocations; i++) {
        n += static_cast<uint32_t>(__builtin_popcount(allocs[i].slot_busy));
    }
    return n;
}

template <typename K>
static int add_impl(FlowTables& t, rte_hash* h, const K& k, void* data, void (FlowTables::*retire_fn)(uint64_t)) {
    void* old = nullptr;
    const bool had = rte_hash_lookup_data(h, &k, &old) >= 0;
    const int r = rte_hash_add_key_data(h, &k, data);
    if (r == 0 && had && old != data && !is_inline(old)) {
        (t.*retire_fn)(reinterpret_cast<uint64_t>(old));
    }
    return r;
}

int FlowTables::add(const Key4& k, void* data) { return add_impl(*this, h4, k, data, &FlowTables::retire); }
int FlowTables::add(const Key6& k, void* data) { return add_impl(*this, h6, k, data, &FlowTables::retire); }
void FlowTables::del_key(uint32_t i, const void* key, uint32_t only_alloc, const void* only_data) {
    rte_hash* h = i == 0 ? h4 : h6;
    void* old = nullptr;
    if (rte_hash_lookup_data(h, key, &old) < 0 || (only_alloc != UINT32_MAX && value_alloc(old) != only_alloc) ||
        (only_data != nullptr && old != only_data)) {
        return;
    }
    // Room in the hash's defer queue (create()), or the key's slot is lost.
    // The keys deleted before the last mark every worker has passed are
    // reclaimable and first in the queue, so a delete that finds more than
    // 64 keys waiting frees all of those (max_reclaim_size is the queue's
    // size): it finds at most max(64, the deletes since that mark) waiting.
    // Once those deletes would fill the queue, wait until the workers pass
    // the current mark (microseconds; they never wait for the main lcore).
    bool wait = false;
    for (;;) {
        if (rte_rcu_qsbr_check(rcu, key_mark_, wait) == 1) {
            for (uint32_t j = 0; j < 2; j++) {
                key_before_mark_[j] = key_since_mark_[j];
                key_since_mark_[j] = 0;
            }
            key_mark_ = rte_rcu_qsbr_start(rcu);
        }
        if (key_before_mark_[i] + key_since_mark_[i] < key_dq_size_[i]) {
            break;
        }
        wait = true;
    }
    if (rte_hash_del_key(h, key) >= 0) {
        key_since_mark_[i]++;
        if (!is_inline(old)) {
            retire(reinterpret_cast<uint64_t>(old));
        }
    }
}

void FlowTables::del(const Key4& k, uint32_t only_alloc, const void* only_data) { del_key(0, &k, only_alloc, only_data); }
void FlowTables::del(const Key6& k, uint32_t only_alloc, const void* only_data) { del_key(1, &k, only_alloc, only_data); }

template <typename K>
static const void* data_of_impl(const rte_hash* h, const K& k) {
    void* d = nullptr;
    return rte_hash_lookup_data(h, &k, &d) >= 0 ? d : nullptr;
}
const void* FlowTables::data_of(const Key4& k) const { return data_of_impl(h4, k); }
const void* FlowTables::data_of(const Key6& k) const { return data_of_impl(h6, k); }

uint32_t FlowTables::alloc_of(const Key4& k) const {
    const void* d = data_of(k);
    return d != nullptr ? value_alloc(d) : UINT32_MAX;
}
uint32_t FlowTables::alloc_of(const Key6& k) const {
    const void* d = data_of(k);
    return d != nullptr ? value_alloc(d) : UINT32_MAX;
}

ChannelValue* FlowTables::new_value() {
    if (free_values_.empty()) {
        reclaim();
        if (free_values_.empty()) {
            return nullptr;
        }
    }
    const uint32_t i = free_values_.back();
    free_values_.pop_back();
    return &values[i];
}

uint32_t FlowTables::new_alloc() {
    if (free_allocs_.empty()) {
        reclaim();
        if (free_allocs_.empty()) {
            return UINT32_MAX;
        }
    }
    const uint32_t i = free_allocs_.back();
    free_allocs_.pop_back();
    allocs[i].epoch = next_epoch_++;
    return i;
}

void FlowTables::retire_alloc(uint32_t idx) { retire(tag_alloc(idx)); }

int FlowTables::add_listen(uint8_t family, const uint8_t* ip, uint16_t port_be) {
    if (family == 4) {
        uint32_t ip4;
        std::memcpy(&ip4, ip, 4);
        const uint32_t n = listen->n4.load(std::memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            if (listen->v4_ip[i] == ip4 && listen->v4_port[i] == port_be) {
                return static_cast<int>(i);
            }
        }
        if (n == ListenSet::kMax) {
            return -1;
        }
        listen->v4_ip[n] = ip4;
        listen->v4_port[n] = port_be;
        own4.add(ip4);  // before the listening address: no packet to it is seen first
        listen->n4.store(n + 1, std::memory_order_release);
        return static_cast<int>(n);
    }
    if (family == 6) {
        const uint32_t n = listen->n6.load(std::memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            if (listen->v6_port[i] == port_be && std::memcmp(listen->v6_ip[i], ip, 16) == 0) {
                return static_cast<int>(i);
            }
        }
        if (n == ListenSet::kMax) {
            return -1;
        }
        std::memcpy(listen->v6_ip[n], ip, 16);
        listen->v6_port[n] = port_be;
        mark_own6(ip);  // before the listening address is published, as own4 above
        listen->n6.store(n + 1, std::memory_order_release);
        return static_cast<int>(n);
    }
    return -1;
}

int FlowTables::relay_ip(uint8_t family, const uint8_t* ip) {
    RelayPorts& r = *relay_ports;
    const size_t len = family == 4 ? 4 : 16;
    if (const uint32_t i = r.index_of(family, ip); i != UINT32_MAX) {
        return static_cast<int>(i);
    }
    const uint32_t n = r.n.load(std::memory_order_relaxed);
    if (n == RelayPorts::kMaxIps) {
        return -1;
    }
    const size_t before = heap_allocated();
    auto* top = static_cast<std::atomic<RelayPorts::Chunk*>*>(rte_zmalloc_socket(
        "dp_relaytop", sizeof(std::atomic<RelayPorts::Chunk*>) * 256, RTE_CACHE_LINE_SIZE, cfg_.socket_id));
    if (top == nullptr) {
        return -1;
    }
    relay_bytes_ += heap_allocated() - before;
    std::memset(r.ip[n], 0, 16);
    std::memcpy(r.ip[n], ip, len);
    std::memcpy(&r.ip4[n], ip, 4);
    r.family[n] = family;
    r.ports[n] = top;
    if (family == 4) {
        own4.add(r.ip4[n]);
        RelayPorts::place(r.map4, RelayPorts::home4(r.ip4[n]), uint64_t{r.ip4[n]} << 32 | (n + 1));
    } else {
        mark_own6(r.ip[n]);
        RelayPorts::place(r.map6, RelayPorts::home6(r.ip[n]), n + 1);
    }
    r.n.store(n + 1, std::memory_order_release);
    return static_cast<int>(n);
}

bool FlowTables::set_nat(uint8_t family, const uint8_t* external, const uint8_t* relay) {
    std::atomic<uint8_t>& active = nat.active[family == 4 ? 0 : 1];
    if (external == nullptr) {
        active.store(0, std::memory_order_release);
        return true;
    }
    NatIps::Entry want{};
    want.family = family;
    const size_t len = family == 4 ? 4 : 16;
    std::memcpy(want.external, external, len);
    std::memcpy(want.relay, relay, len);
    const uint32_t n = nat.n.load(std::memory_order_relaxed);
    uint32_t i = 0;
    while (i < n && std::memcmp(&nat.e[i], &want, sizeof want) != 0) {
        i++;
    }
    if (i == n) {
        if (n == NatIps::kMax) {
            return false;
        }
        nat.e[n] = want;
        if (family == 4) {
            uint32_t a;
            std::memcpy(&a, external, 4);
            own4.add(a);  // before the pair is current: no packet to it is routed out first
        } else {
            mark_own6(external);
        }
        nat.n.store(n + 1, std::memory_order_release);
    }
    active.store(static_cast<uint8_t>(i + 1), std::memory_order_release);
    return true;
}

int FlowTables::set_relayed(uint8_t family, const uint8_t* ip, uint16_t port_be, uint32_t alloc) {
    RelayPorts& r = *relay_ports;
    const int ii = relay_ip(family, ip);
    if (ii < 0) {
        return -1;
    }
    const auto i = static_cast<uint32_t>(ii);
    const uint16_t port = rte_be_to_cpu_16(port_be);
    RelayPorts::Chunk* c = r.ports[i][port >> 8].load(std::memory_order_relaxed);
    if (c == nullptr) {
        if (alloc == UINT32_MAX) {
            return static_cast<int>(i);
        }
        const size_t before = heap_allocated();
        c = static_cast<RelayPorts::Chunk*>(
            rte_zmalloc_socket("dp_relaychunk", sizeof(RelayPorts::Chunk) * 256, RTE_CACHE_LINE_SIZE, cfg_.socket_id));
        if (c == nullptr) {
            return -1;
        }
        relay_bytes_ += heap_allocated() - before;
        r.ports[i][port >> 8].store(c, std::memory_order_release);
    }
    c[port & 0xff].store(alloc == UINT32_MAX ? 0 : alloc + 1, std::memory_order_release);
    return static_cast<int>(i);
}

void FlowTables::clear_relayed(uint8_t family, const uint8_t* ip, uint16_t port_be, uint32_t alloc) {
    uint32_t now = UINT32_MAX;
    if (relay_ports->find(family, ip, port_be, &now) && now == alloc) {
        set_relayed(family, ip, port_be, UINT32_MAX);
    }
}

void FlowTables::reclaim() {
    unsigned freed = 0, pending = 0, avail = 0;
    rte_rcu_qsbr_dq_reclaim(dq_, UINT32_MAX, &freed, &pending, &avail);
    // The hashes' own defer queues reclaim on add/delete (trigger limit 64);
    // there is no public call to drain them early in DPDK 22.11.
}

}  // namespace dp
