#include "core/quota.h"

#include <algorithm>

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
            // Sources idle for more than a second have full buckets again.
            std::erase_if(sh.sources, [&](const auto& kv) { return now_ms > kv.second.last_seen_ms + 1000; });
            if (sh.sources.size() >= max_per_shard_) {
                return false;
            }
        }
        it = sh.sources.emplace(key, Source{TokenBucket(per_s_, per_s_, now_ms), now_ms}).first;
    }
    it->second.last_seen_ms = now_ms;
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
