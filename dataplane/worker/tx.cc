// Stage 6: tx. Forwarded packets leave on the port of their next hop (or,
// next hop kSelfPort, are kept for the pipeline to receive again), punted
// ones on the exception port (to the kernel, which sees them exactly as in
// socket mode), dropped ones are freed. Counters are bumped here, once per
// packet, from the verdict the stages left. (A burst the express lane
// finished whole it sends itself, through tx_send, counting the same way.)
//
// Cost (callgrind): 21 instructions/packet plus the PMD (net_null: 87);
// 25 before forwarded packets were counted per kind once per burst.
//
// Edges: none (end of the graph).
#include <algorithm>

#include "worker/stages.h"

namespace dp {

namespace {

Counter forwarded_counter(Kind k) {
    switch (k) {
    case Kind::kToPeerChannel: return Counter::fwd_client_channel;
    case Kind::kToPeerSend: return Counter::fwd_client_send;
    case Kind::kToClientChannel: return Counter::fwd_peer_channel;
    default: return Counter::fwd_peer_data;
    }
}

}  // namespace

void tx_send(Worker& w, uint16_t port, rte_mbuf** b, uint16_t n, Counter on_full) {
    if (n == 0) {
        return;
    }
    const uint16_t sent = rte_eth_tx_burst(port, w.cfg.queue, b, n);
    if (unlikely(sent < n)) {
        w.counters.inc(on_full, n - sent);
        rte_pktmbuf_free_bulk(b + sent, n - sent);
    }
}

void punt_send(Worker& w, rte_mbuf** b, uint16_t n) {
    if (likely(w.cfg.exc_owner)) {
        tx_send(w, w.cfg.exc_port, b, n, Counter::drop_exception_tx_full);
        return;
    }
    if (n == 0) {
        return;
    }
    // To a worker that owns an exception queue (WorkerConfig::exc_ring).
    const unsigned queued = rte_ring_enqueue_burst(w.cfg.exc_ring, reinterpret_cast<void**>(b), n, nullptr);
    if (unlikely(queued < n)) {
        w.counters.inc(Counter::drop_exception_tx_full, n - queued);
        rte_pktmbuf_free_bulk(b + queued, n - queued);
    }
}

void tx(Worker& w, Pkt* p, uint16_t n) {
    rte_mbuf* out[kMaxPorts][kBurst];
    uint16_t nout[kMaxPorts] = {};
    rte_mbuf* exc[kBurst];
    uint16_t nexc = 0;
    rte_mbuf* dead[kBurst];
    uint16_t ndead = 0;
    uint16_t fwd[4] = {};  // by Kind - kToPeerChannel, added to the counters once per burst
    static_assert(static_cast<int>(Kind::kToPeerSend) == static_cast<int>(Kind::kToPeerChannel) + 1 &&
                  static_cast<int>(Kind::kToClientChannel) == static_cast<int>(Kind::kToPeerChannel) + 2 &&
                  static_cast<int>(Kind::kToClientData) == static_cast<int>(Kind::kToPeerChannel) + 3);
    for (uint16_t i = 0; i < n; i++) {
        Pkt& q = p[i];
        switch (q.next) {
        case Next::kTx:
            fwd[(static_cast<unsigned>(q.kind) - static_cast<unsigned>(Kind::kToPeerChannel)) & 3]++;
            out[q.nh.port][nout[q.nh.port]++] = q.m;
            break;
        case Next::kPunt:
            if (unlikely(w.hairpinning)) {
                // Rewritten already (route.cc, second_leg_ok): the kernel
                // would discard it; only a race with the main lcore (the
                // receiving allocation changed between the legs, or the NAT
                // pair did, pipeline.cc present_external) gets here.
                w.counters.inc(Counter::drop_hairpin_unsendable);
                dead[ndead++] = q.m;
                break;
            }
            w.counters.inc(q.reason);
            exc[nexc++] = q.m;
            break;
        default:  // kDrop; any other value would be a stage bug, and dropping is safe
            w.counters.inc(q.reason);
            dead[ndead++] = q.m;
            break;
        }
    }
    for (unsigned k = 0; k < 4; k++) {
        w.counters.inc(forwarded_counter(static_cast<Kind>(static_cast<unsigned>(Kind::kToPeerChannel) + k)), fwd[k]);
    }
    for (uint16_t port = 0; port < kSelfPort; port++) {
        tx_send(w, port, out[port], nout[port], Counter::drop_nic_tx_full);
    }
    // Relay-to-relay: received again once this burst is out (pipeline.cc).
    // process_burst empties Worker::hairpin after each burst and route never
    // hairpins in the second pass, so this holds kBurst at most; a caller
    // that broke that (tx() outside process_burst) gets drops, not an
    // overflow.
    if (unlikely(nout[kSelfPort] != 0)) {
        if (likely(!w.hairpinning && w.nhairpin == 0)) {
            std::copy(out[kSelfPort], out[kSelfPort] + nout[kSelfPort], w.hairpin);
            w.nhairpin = nout[kSelfPort];
        } else {
            w.counters.inc(Counter::drop_hairpin_unsendable, nout[kSelfPort]);
            rte_pktmbuf_free_bulk(out[kSelfPort], nout[kSelfPort]);
        }
    }
    punt_send(w, exc, nexc);
    if (ndead != 0) {
        rte_pktmbuf_free_bulk(dead, ndead);
    }
}

}  // namespace dp
