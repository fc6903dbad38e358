// Stage 4: police. Per-allocation token bucket on relayed payload bytes, both
// directions together, at the rate the control plane set (AllocationAdd /
// LimitSet); with N workers each enforces rate/N, the usual per-core split
// when RSS spreads an allocation's flows. Also counts the allocation's
// forwarded packets and bytes for the control plane's metrics and quotas.
// The express lane counts the packets it finishes itself (allocations
// without a limit; the others it leaves to this stage).
//
// Cost (callgrind, IPv4, 10k flows, no limit set): 30 instructions/packet.
//
// Edges: kRewrite; kDrop (rate limited).
#include <algorithm>

#include "worker/stages.h"

namespace dp {

namespace {
constexpr double kBurstSeconds = 0.05;     // bucket depth: 50 ms at the rate ...
constexpr double kMinBurstBytes = 65536;   // ... but never below one large datagram
}  // namespace

void police(Worker& w, Pkt* p, uint16_t n, uint64_t now_tsc) {
    const Allocation* allocs = w.flows->allocs;
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        if (q.next != Next::kPolice) {
            continue;
        }
        const Allocation& a = allocs[q.alloc];
        AllocState& s = w.alloc_state(q.alloc);
        const uint64_t bps = a.rate_bps.load(std::memory_order_relaxed);
        if (bps != 0) {
            const double rate = static_cast<double>(bps) / 8.0 / w.cfg.workers;  // bytes per second
            const double depth = std::max(rate * kBurstSeconds, kMinBurstBytes);
            if (s.tokens < 0) {
                s.tokens = depth;
            } else {
                s.tokens = std::min(depth, s.tokens + static_cast<double>(now_tsc - s.last_tsc) * rate / w.tsc_hz);
            }
            s.last_tsc = now_tsc;
            if (s.tokens < q.data_len) {
                s.dropped_packets++;
                drop(q, Counter::drop_rate_limited);
                continue;
            }
            s.tokens -= q.data_len;
        }
        count_forwarded(s, q.kind, q.data_len);
        q.next = Next::kRewrite;
    }
}

}  // namespace dp
