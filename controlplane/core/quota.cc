#include "core/quota.h"

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

bool SourceRateLimiter::allow(const Address& source, uint64_t now_ms) {
    if (per_s_ == 0) {
        return true;
    }
    const Address key = source.normalised().with_port(0);
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
        if (buckets_.size() >= max_) {
            // Purge sources idle for more than a second: their buckets are full.
            for (auto l = last_seen_.begin(); l != last_seen_.end();) {
                if (now_ms - l->second > 1000) {
                    buckets_.erase(l->first);
                    l = last_seen_.erase(l);
                } else {
                    ++l;
                }
            }
            if (buckets_.size() >= max_) {
                return false;
            }
        }
        it = buckets_.emplace(key, TokenBucket(per_s_, per_s_, now_ms)).first;
    }
    last_seen_[key] = now_ms;
    return it->second.take(1, now_ms);
}

}  // namespace turn::cp
