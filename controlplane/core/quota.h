// Allocation quotas shared by all event loops (per user and in total, answered
// with 486), a token bucket for per-allocation bandwidth, and the per-source
// rate limiter for unauthenticated (401/438) answers.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "net/address.h"

namespace turn::cp {

enum class QuotaResult : uint8_t { kOk, kPerUser, kTotal };

class AllocationQuota {
public:
    AllocationQuota(uint32_t max_per_user, uint32_t max_total) : per_user_(max_per_user), total_(max_total) {}
    // Takes one slot for `user` or says which limit stops it. 0 = unlimited.
    QuotaResult acquire(const std::string& user);
    void release(const std::string& user);
    uint32_t total() const;

private:
    mutable std::mutex mu_;
    uint32_t per_user_;
    uint32_t total_;
    uint32_t count_ = 0;
    std::unordered_map<std::string, uint32_t> by_user_;
};

// Classic token bucket in bytes (or packets); rate 0 = unlimited.
class TokenBucket {
public:
    TokenBucket() = default;
    TokenBucket(uint64_t rate_per_s, uint64_t burst, uint64_t now_ms)
        : rate_(rate_per_s), burst_(burst), tokens_(burst), last_ms_(now_ms) {}
    bool unlimited() const { return rate_ == 0; }
    bool take(uint64_t amount, uint64_t now_ms) {
        if (rate_ == 0) {
            return true;
        }
        if (now_ms > last_ms_) {
            uint64_t add = (now_ms - last_ms_) * rate_ / 1000;
            if (add > 0) {
                last_ms_ = now_ms;
                const uint64_t repaid = add < debt_ ? add : debt_;  // consume()'s debt first
                debt_ -= repaid;
                add -= repaid;
                tokens_ = tokens_ + add > burst_ ? burst_ : tokens_ + add;
            }
        }
        if (tokens_ < amount) {
            return false;
        }
        tokens_ -= amount;
        return true;
    }
    // What take() would allow now (UINT64_MAX without a limit; 0 while a
    // debt is being repaid).
    uint64_t available(uint64_t now_ms) {
        if (rate_ == 0) {
            return UINT64_MAX;
        }
        take(0, now_ms);  // the refill
        return debt_ != 0 ? 0 : tokens_;
    }
    // Bytes already relayed (a stream's, which cannot be dropped): taken,
    // and what the budget lacks becomes a debt the refill repays before
    // anything is available again, so the rate holds on average.
    void consume(uint64_t amount, uint64_t now_ms) {
        if (rate_ == 0 || take(amount, now_ms)) {
            return;
        }
        debt_ += amount - tokens_;
        tokens_ = 0;
    }

private:
    uint64_t rate_ = 0;
    uint64_t burst_ = 0;
    uint64_t tokens_ = 0;
    uint64_t debt_ = 0;  // consume() beyond the budget
    uint64_t last_ms_ = 0;
};

// Per-source token buckets for unauthenticated (401/438) answers, shared by
// all event loops: a source gets the configured rate in total, however
// SO_REUSEPORT spreads its ports over the loops. A source is an IPv4
// address, or an IPv6 /64 (one subscriber's prefix: an attacker holding a
// /64 must not get a fresh bucket per address). Sharded by the keyed address
// hash, one mutex per shard; only requests that failed authentication get
// here.
//
// Bounded at max_sources. A new source in a full shard first has the
// shard's idle sources dropped (idle for a second: their buckets would be
// full again; at most every kPurgeIntervalMs, so a flood of new sources
// costs O(1) per request, not a scan), and if the shard is still full it
// replaces a random entry. So every new source, a legitimate client among
// them, still gets its challenge during a flood of spoofed sources, and a
// source already in the table loses its bucket only after about
// max_sources / kShards new ones have landed in its shard.
class SourceRateLimiter {
public:
    static constexpr size_t kShards = 16;
    static constexpr uint64_t kIdleMs = 1000;
    static constexpr uint64_t kPurgeIntervalMs = 100;
    static constexpr size_t kDefaultMaxSources = 65536;
    // seed: which entries full shards replace; 0 (production) draws it from
    // std::random_device, tests pass Config::seed to replay a run.
    explicit SourceRateLimiter(uint32_t per_s, size_t max_sources = kDefaultMaxSources, uint64_t seed = 0);
    bool allow(const Address& source, uint64_t now_ms);
    size_t size() const;
    // The bucket key of a source: IPv4 address, or the IPv6 /64; port 0.
    static Address source_key(const Address& source);

private:
    struct Source {
        TokenBucket bucket;
        uint64_t last_seen_ms;
    };
    struct alignas(64) Shard {
        mutable std::mutex mu;
        std::unordered_map<Address, Source, AddressHash> sources;
        uint64_t next_purge_ms = 0;
        uint64_t rng = 0;  // xorshift64 state: which entry a full shard replaces
    };
    void make_room(Shard& sh, uint64_t now_ms);

    uint32_t per_s_;
    size_t max_per_shard_;
    Shard shards_[kShards];
};

}  // namespace turn::cp
