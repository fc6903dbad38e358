#include "nexthop/nexthop.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dp {

NextHops* NextHops::create(const std::string& name, uint32_t entries, rte_rcu_qsbr* rcu, int socket_id,
                           std::string* error) {
    auto* n = new NextHops();
    rte_hash_parameters p{};
    p.name = name.c_str();
    p.entries = entries < 8 ? 8 : entries;
    p.key_len = sizeof(NextHopKey);
    p.hash_func = rte_hash_crc;
    p.socket_id = socket_id;
    p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
    n->h_ = rte_hash_create(&p);
    n->capacity_ = p.entries;
    n->learned_.reserve(n->high_water());  // no rehash (seconds at millions) while learning
    rte_hash_rcu_config rc{};
    rc.v = rcu;
    rc.mode = RTE_HASH_QSBR_MODE_DQ;
    const std::string rn = name + "_learn";
    n->learn_ = rte_ring_create_elem(rn.c_str(), sizeof(Learned), 1024, socket_id, RING_F_SC_DEQ);
    if (n->h_ == nullptr || n->learn_ == nullptr || rte_hash_rcu_qsbr_add(n->h_, &rc) != 0) {
        *error = "next-hop table " + name + ": " + rte_strerror(rte_errno);
        delete n;
        return nullptr;
    }
    return n;
}

NextHops::~NextHops() {
    rte_hash_free(h_);
    rte_ring_free(learn_);
}

// A destination no route covers whose kernel egress goes to the default's
// MAC needs no entry: the default says the same (and without entries
// outside the prefixes, the workers skip the lookup, need_lookup). One that
// had another MAC before loses its entry.
unsigned NextHops::apply_learned(uint64_t now) {
    Learned l[32];
    unsigned total = 0;
    unsigned n;
    while ((n = rte_ring_sc_dequeue_burst_elem(learn_, l, sizeof(Learned), 32, nullptr)) != 0) {
        for (unsigned i = 0; i < n; i++) {
            const NextHopKey& k = l[i].key;
            void* cur = nullptr;
            const bool existed = rte_hash_lookup_data(h_, &k, &cur) >= 0;
            if (existed && reinterpret_cast<uint64_t>(cur) == l[i].packed) {
                // Already so: queued twice, or the kernel's neighbour was
                // installed meanwhile (which stays a neighbour's entry).
                continue;
            }
            if (default_says(k.family, k.ip, l[i].packed)) {
                if (existed && remove_key(k)) {
                    total++;
                }
                continue;
            }
            if (!existed) {
                make_room();
            }
            // Still at the high water: the table is neighbours' (the rest is
            // theirs and the deleted entries' slots'); or no slot is free.
            if ((!existed && hosts_.load(std::memory_order_relaxed) >= high_water()) ||
                rte_hash_add_key_data(h_, &k, reinterpret_cast<void*>(l[i].packed)) != 0) {
                learn_stats_.refused++;
                continue;
            }
            total++;
            learn_stats_.installed++;
            if (!existed) {
                count(k, +1);
            }
            learned_[k] = now;
            order_.emplace_back(k, now);
        }
    }
    if (order_.size() > 2 * learned_.size() + 1024) {
        compact_order();
    }
    return total;
}

unsigned NextHops::expire_learned(uint64_t now) {
    unsigned removed = 0;
    // Stale records (a key removed, or installed again later) cost a look
    // each: bounded too, so one call never walks a long queue.
    for (unsigned looked = 0; !order_.empty() && removed < kExpireAtOnce && looked < 4 * kExpireAtOnce; looked++) {
        const auto& [k, at] = order_.front();
        if (current(k, at)) {
            if (learned_ttl_ == 0 || now - at < learned_ttl_) {
                break;  // the oldest is young enough: so are the rest
            }
            remove_key(k);  // also forgets it in learned_
            learn_stats_.expired++;
            removed++;
        }
        order_.pop_front();
    }
    return removed;
}

bool NextHops::evict_oldest() {
    while (!order_.empty()) {
        const auto [k, at] = order_.front();
        order_.pop_front();
        if (current(k, at)) {
            remove_key(k);
            return true;
        }
    }
    return false;
}

// order_ is in installation order already: the records still current are
// kept in it, the stale ones dropped.
void NextHops::compact_order() {
    std::erase_if(order_, [&](const std::pair<NextHopKey, uint64_t>& r) { return !current(r.first, r.second); });
}

bool NextHops::current(const NextHopKey& k, uint64_t at) const {
    const auto it = learned_.find(k);
    return it != learned_.end() && it->second == at;
}

void NextHops::make_room() {
    while (hosts_.load(std::memory_order_relaxed) >= high_water() && evict_oldest()) {
        learn_stats_.evicted++;
    }
}

bool NextHops::remove_key(const NextHopKey& k) {
    learned_.erase(k);
    if (rte_hash_del_key(h_, &k) < 0) {
        return false;
    }
    count(k, -1);
    return true;
}

void NextHops::count(const NextHopKey& k, int delta) {
    if (!covered(k.family, k.ip)) {
        uncovered_.fetch_add(static_cast<uint32_t>(delta), std::memory_order_release);
    }
    hosts_.fetch_add(static_cast<uint32_t>(delta), std::memory_order_release);
}

int NextHops::set_host(uint8_t family, const uint8_t* ip, const NextHop& nh) {
    const NextHopKey k = key(family, ip);
    learned_.erase(k);  // the kernel's neighbour now: it says when the entry goes
    const bool existed = rte_hash_lookup(h_, &k) >= 0;
    if (!existed) {
        make_room();  // a neighbour comes before learned destinations
    }
    const int r = rte_hash_add_key_data(h_, &k, reinterpret_cast<void*>(pack(nh)));
    if (r == 0 && !existed) {
        count(k, +1);
    }
    return r;
}

void NextHops::del_host(uint8_t family, const uint8_t* ip) { remove_key(key(family, ip)); }

bool NextHops::get_host(uint8_t family, const uint8_t* ip, NextHop* out) const {
    const NextHopKey k = key(family, ip);
    void* d = nullptr;
    if (rte_hash_lookup_data(h_, &k, &d) < 0) {
        return false;
    }
    unpack(reinterpret_cast<uint64_t>(d), out);
    return true;
}

template <typename Pred>
size_t NextHops::remove_if(Pred pred) {
    // Collected first: rte_hash_iterate must not run across deletes.
    std::vector<NextHopKey> doomed;
    const void* key = nullptr;
    void* data = nullptr;
    uint32_t it = 0;
    while (rte_hash_iterate(h_, &key, &data, &it) >= 0) {
        NextHop nh;
        unpack(reinterpret_cast<uint64_t>(data), &nh);
        if (pred(nh)) {
            doomed.push_back(*static_cast<const NextHopKey*>(key));
        }
    }
    for (const auto& k : doomed) {
        remove_key(k);
    }
    return doomed.size();
}

size_t NextHops::remove_by_mac(const rte_ether_addr& mac, uint16_t vlan) {
    return remove_if(
        [&](const NextHop& nh) { return nh.vlan == vlan && std::memcmp(nh.mac.addr_bytes, mac.addr_bytes, 6) == 0; });
}

size_t NextHops::flush_hosts() {
    learned_.clear();  // first: every key goes, none needs looking up there
    order_.clear();
    return remove_if([](const NextHop&) { return true; });
}

void NextHops::set_default(uint8_t family, const NextHop& nh) {
    (family == 4 ? default4_ : default6_).store(pack(nh), std::memory_order_release);
}
void NextHops::clear_default(uint8_t family) {
    (family == 4 ? default4_ : default6_).store(0, std::memory_order_release);
}

bool NextHops::covered(uint8_t family, const uint8_t* ip) const {
    const PrefixSet& s = prefixes_[family == 4 ? 0 : 1];
    const uint32_t seq = s.seq.load(std::memory_order_acquire);
    const uint32_t n = s.n.load(std::memory_order_relaxed);
    bool hit = n > kMaxPrefixes;
    const uint32_t m = std::min(n, kMaxPrefixes);
    // Fixed-size copies (a length chosen at run time would be a call).
    if (family == 4) {
        uint32_t v;
        std::memcpy(&v, ip, 4);
        for (uint32_t i = 0; i < m && !hit; i++) {
            hit = (v & s.e[i].mask[0].load(std::memory_order_relaxed)) == s.e[i].net[0].load(std::memory_order_relaxed);
        }
    } else {
        uint64_t a[2];
        std::memcpy(a, ip, 16);
        for (uint32_t i = 0; i < m && !hit; i++) {
            hit = (a[0] & s.e[i].mask[0].load(std::memory_order_relaxed)) == s.e[i].net[0].load(std::memory_order_relaxed) &&
                  (a[1] & s.e[i].mask[1].load(std::memory_order_relaxed)) == s.e[i].net[1].load(std::memory_order_relaxed);
        }
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    return hit || seq % 2 != 0 || s.seq.load(std::memory_order_relaxed) != seq;
}

void NextHops::set_prefixes(uint8_t family, const std::vector<Prefix>& p) {
    PrefixSet& s = prefixes_[family == 4 ? 0 : 1];
    const size_t bytes = family == 4 ? 4 : 16;
    // Which host entries the prefixes cover changes: until they are counted
    // again below, every destination is looked up (need_lookup), so that
    // none skips an entry the new prefixes leave outside.
    uncovered_.store(UINT32_MAX, std::memory_order_release);
    const uint32_t seq = s.seq.load(std::memory_order_relaxed);
    s.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    const size_t n = std::min<size_t>(p.size(), kMaxPrefixes);
    for (size_t i = 0; i < n; i++) {
        uint8_t mask[16] = {};
        const unsigned len = std::min<unsigned>(p[i].len, static_cast<unsigned>(bytes * 8));
        for (unsigned b = 0; b < len; b++) {
            mask[b / 8] |= static_cast<uint8_t>(0x80u >> (b % 8));
        }
        uint64_t m[2] = {0, 0};
        uint64_t a[2] = {0, 0};
        std::memcpy(m, mask, bytes);
        std::memcpy(a, p[i].ip, bytes);
        for (int w = 0; w < 2; w++) {
            s.e[i].mask[w].store(m[w], std::memory_order_relaxed);
            s.e[i].net[w].store(a[w] & m[w], std::memory_order_relaxed);
        }
    }
    s.n.store(p.size() > kMaxPrefixes ? kMaxPrefixes + 1 : static_cast<uint32_t>(n), std::memory_order_relaxed);
    s.seq.store(seq + 2, std::memory_order_release);
    uint32_t outside = 0;
    const void* key = nullptr;
    void* data = nullptr;
    uint32_t it = 0;
    while (rte_hash_iterate(h_, &key, &data, &it) >= 0) {
        const auto* k = static_cast<const NextHopKey*>(key);
        outside += covered(k->family, k->ip) ? 0 : 1;
    }
    uncovered_.store(outside, std::memory_order_release);
}

}  // namespace dp
