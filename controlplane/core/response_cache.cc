#include "core/response_cache.h"

#include <algorithm>

namespace turn::cp {

const std::vector<uint8_t>* ResponseCache::find(const FiveTuple& ft, std::span<const uint8_t, stun::kTxIdSize> txid,
                                                uint16_t method, uint64_t now_ms) const {
    auto it = by_tuple_.find(ft);
    if (it == by_tuple_.end()) {
        return nullptr;
    }
    for (const auto& e : it->second.entries) {
        if (e.bytes.size() >= 2 && now_ms - e.stored_ms < kTtlMs &&
            std::equal(txid.begin(), txid.end(), e.txid.begin()) &&
            stun::type_method(static_cast<uint16_t>(e.bytes[0] << 8 | e.bytes[1])) == method) {
            return &e.bytes;
        }
    }
    return nullptr;
}

void ResponseCache::store(const FiveTuple& ft, std::span<const uint8_t, stun::kTxIdSize> txid,
                          std::span<const uint8_t> response, uint64_t now_ms) {
    if (by_tuple_.size() >= max_tuples_ && by_tuple_.find(ft) == by_tuple_.end()) {
        expire(now_ms);
        if (by_tuple_.size() >= max_tuples_) {
            return;  // bounded memory; a lost cache entry only costs idempotency
        }
    }
    Ring& r = by_tuple_[ft];
    Entry& e = r.entries[r.next];
    r.next = (r.next + 1) % kPerTuple;
    std::copy(txid.begin(), txid.end(), e.txid.begin());
    e.stored_ms = now_ms;
    e.bytes.assign(response.begin(), response.end());
    r.newest_ms = now_ms;
}

void ResponseCache::expire(uint64_t now_ms) {
    for (auto it = by_tuple_.begin(); it != by_tuple_.end();) {
        if (now_ms - it->second.newest_ms >= kTtlMs) {
            it = by_tuple_.erase(it);
        } else {
            ++it;
        }
    }
}

}  // namespace turn::cp
