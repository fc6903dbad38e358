// RFC 8489 section 6.3.1 / RFC 8656 section 7.2: a retransmitted request
// (same transaction ID on the same 5-tuple) gets the same answer, even when
// processing it again would give another one (a second Allocate must not get
// 437). The last few responses per 5-tuple are kept for 40 s, the
// retransmission window of RFC 8489's default timers (39.5 s).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "net/address.h"
#include "stun/constants.h"

namespace turn::cp {

class ResponseCache {
public:
    static constexpr size_t kPerTuple = 4;
    static constexpr uint64_t kTtlMs = 40'000;

    explicit ResponseCache(size_t max_tuples = 65536) : max_tuples_(max_tuples) {}

    // The response to a retransmission: same 5-tuple, transaction ID and
    // method (a request reusing an ID for another method is a new request).
    const std::vector<uint8_t>* find(const FiveTuple& ft, std::span<const uint8_t, stun::kTxIdSize> txid,
                                     uint16_t method, uint64_t now_ms) const;
    void store(const FiveTuple& ft, std::span<const uint8_t, stun::kTxIdSize> txid,
               std::span<const uint8_t> response, uint64_t now_ms);
    void expire(uint64_t now_ms);
    size_t size() const { return by_tuple_.size(); }

private:
    struct Entry {
        std::array<uint8_t, stun::kTxIdSize> txid{};
        uint64_t stored_ms = 0;
        std::vector<uint8_t> bytes;
    };
    struct Ring {
        std::array<Entry, kPerTuple> entries;
        size_t next = 0;
        uint64_t newest_ms = 0;
    };
    size_t max_tuples_;
    std::unordered_map<FiveTuple, Ring, FiveTupleHash> by_tuple_;
};

}  // namespace turn::cp
