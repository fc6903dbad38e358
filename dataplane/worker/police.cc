// Stage 4: police. The allocation's bandwidth limit, the rate the control
// plane set (AllocationAdd / LimitSet), on relayed payload bytes, both
// directions together: one budget per allocation that every worker draws
// from (flow/tables.h, Allocation::tat), whichever workers RSS gives the
// allocation's client and peers; the same bucket depth as the control
// plane's (one second at the rate, at least 64 KiB); a worker takes it for
// up to 32 packets at once (at most 100 ms of the rate) and keeps the rest in
// its AllocState, which can let a burst pass the depth by that much per
// worker (stages.h, take_bandwidth). Also counts the
// allocation's forwarded packets and bytes in this worker's AllocState for
// the control plane's metrics and quotas. The express lane polices and
// counts the packets it finishes itself, taking budgets in the same packet
// order (express.cc, police_lane).
//
// Cost (callgrind, IPv4, 10k flows, no limit set): 30 instructions/packet.
//
// Edges: kRewrite; kDrop (rate limited).
#include "worker/stages.h"

namespace dp {

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
        if (!charge(a, s, q, now_tsc, tsc_hz)) {
            continue;
        }
        count_forwarded(s, q.kind, q.data_len);
        q.next = Next::kRewrite;
    }
}

}  // namespace dp
