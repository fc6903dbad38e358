#include "core/quota.h"

#include <algorithm>
#include <random>

namespace turn::cp {

QuotaResult AllocationQuota::acquire(const std::string& user) {
    std::lock_guard lock(mu_);
    if (total_ != 0 && count_ >= total_) {
        return QuotaResult::kTotal;
    }
    uint32_t& n = by_user_[user];
    if (per_user_ != 0 && n >= per_user_) {
        if (n == 0) {
            by_user_.erase(user);
        }
        return QuotaResult::kPerUser;
    }
    ++n;
    ++count_;
    return QuotaResult::kOk;
}

void AllocationQuota::release(const std::string& user) {
    std::lock_guard lock(mu_);
    auto it = by_user_.find(user);
    if (it == by_user_.end()) {
        return;
    }
    if (--it->second == 0) {
        by_user_.erase(it);
    }
    --count_;
}

uint32_t AllocationQuota::total() const {
    std::lock_guard lock(mu_);
    return count_;
}

Address SourceRateLimiter::source_key(const Address& source) {
    Address key = source.normalised().with_port(0);
    if (key.is_v6()) {
        std::fill(key.ip.begin() + 8, key.ip.end(), uint8_t{0});
    }
    return key;
}

SourceRateLimiter::SourceRateLimiter(uint32_t per_s, size_t max_sources, uint64_t seed)
    : per_s_(per_s), max_per_shard_(std::max<size_t>(max_sources / kShards, 1)) {
    if (seed != 0) {  // tests: the same choices every run
        std::mt19937_64 gen(seed);
        for (Shard& sh : shards_) {
            sh.rng = gen() | 1;
        }
        return;
    }
    std::random_device rd;
    for (Shard& sh : shards_) {
        sh.rng = (uint64_t{rd()} << 32 | rd()) | 1;
    }
}

void SourceRateLimiter::make_room(Shard& sh, uint64_t now_ms) {
    if (now_ms >= sh.next_purge_ms) {
        sh.next_purge_ms = now_ms + kPurgeIntervalMs;
        std::erase_if(sh.sources, [&](const auto& kv) { return now_ms > kv.second.last_seen_ms + kIdleMs; });
        if (sh.sources.size() < max_per_shard_) {
            return;
        }
    }
    // Replace a random entry: the first one in or after a random hash
    // bucket (the map is at most one entry per bucket on average, so this
    // looks at a few buckets).
    sh.rng ^= sh.rng << 13;
    sh.rng ^= sh.rng >> 7;
    sh.rng ^= sh.rng << 17;
    const size_t n = sh.sources.bucket_count();
    for (size_t b = sh.rng % n, i = 0; i < n; i++, b = b + 1 == n ? 0 : b + 1) {
        if (sh.sources.bucket_size(b) != 0) {
            const Address victim = sh.sources.begin(b)->first;  // a copy: erase() must not see a key it frees
            sh.sources.erase(victim);
            return;
        }
    }
}

bool SourceRateLimiter::allow(const Address& source, uint64_t now_ms) {
    if (per_s_ == 0) {
        return true;
    }
    const Address key = source_key(source);
    Shard& sh = shards_[AddressHash{}(key) % kShards];
    std::lock_guard lock(sh.mu);
    auto it = sh.sources.find(key);
    if (it == sh.sources.end()) {
        if (sh.sources.size() >= max_per_shard_) {
            make_room(sh, now_ms);
        }
        it = sh.sources.emplace(key, Source{TokenBucket(per_s_, per_s_, now_ms), now_ms}).first;
    }
    // Loops' clocks differ by a few ms: never move last_seen backwards.
    it->second.last_seen_ms = std::max(it->second.last_seen_ms, now_ms);
    return it->second.bucket.take(1, now_ms);
}

size_t SourceRateLimiter::size() const {
    size_t n = 0;
    for (const Shard& sh : shards_) {
        std::lock_guard lock(sh.mu);
        n += sh.sources.size();
    }
    return n;
}

}  // namespace turn::cp
