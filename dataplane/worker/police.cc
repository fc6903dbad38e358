// Stage 4: police. The allocation's bandwidth limit, the rate the control
// plane set (AllocationAdd / LimitSet), on relayed payload bytes, both
// directions together: one budget per allocation that every worker draws
// from (flow/tables.h, Allocation::tat), whichever workers RSS gives the
// allocation's client and peers; the same bucket depth as the control
// plane's (one second at the rate, at least 64 KiB). Also counts the
// allocation's forwarded packets and bytes in this worker's AllocState for
// the control plane's metrics and quotas. The express lane counts the
// packets it finishes itself (allocations without a limit; the others it
// leaves to this stage).
//
// Cost (callgrind, IPv4, 10k flows, no limit set): 30 instructions/packet.
//
// Edges: kRewrite; kDrop (rate limited).
#include <algorithm>
#include <bit>

#include "worker/stages.h"

namespace dp {

namespace {

constexpr double kMinDepthBytes = 65536;  // the bucket holds at least one large datagram

// Takes `bytes` from the allocation's budget at TSC `now`; false (nothing
// taken) when they are over it. Lock-free: a compare-and-swap on the
// allocation's clock, retried only when another worker moved it meanwhile.
bool take(const Allocation& a, float byte_ticks, uint32_t bytes, uint64_t now, double tsc_hz) {
    const auto cost = static_cast<uint64_t>(static_cast<double>(bytes) * byte_ticks);
    const auto depth = static_cast<uint64_t>(std::max(tsc_hz, kMinDepthBytes * byte_ticks));  // in ticks
    uint64_t tat = a.tat.load(std::memory_order_relaxed);
    for (;;) {
        const uint64_t start = std::max(tat, now);  // tat in the past: the bucket is full
        if (start + cost - now > depth) {
            return false;
        }
        if (a.tat.compare_exchange_weak(tat, start + cost, std::memory_order_relaxed)) {
            return true;
        }
    }
}

}  // namespace

void police(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc) {
    const Allocation* allocs = w.flows->allocs;
    const double tsc_hz = w.flows->tsc_hz;
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kPolice) {
            continue;
        }
        const Allocation& a = allocs[q.alloc];
        AllocState& s = w.alloc_state(q.alloc);
        const float byte_ticks = a.byte_ticks.load(std::memory_order_relaxed);
        if (std::bit_cast<uint32_t>(byte_ticks) != 0 && !take(a, byte_ticks, q.data_len, now_tsc, tsc_hz)) {
            s.dropped_packets++;
            drop(q, Counter::drop_rate_limited);
            continue;
        }
        count_forwarded(s, q.kind, q.data_len);
        q.next = Next::kRewrite;
    }
}

}  // namespace dp
