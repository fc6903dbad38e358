// The whole per-packet path, in order. Each stage is one file (stages.h);
// each packet carries its next edge and, when punted or dropped, its reason.
#include "worker/pipeline.h"

#include "worker/packet.h"
#include "worker/stages.h"

namespace dp {

void process_burst(Worker& w, rte_mbuf** mbufs, uint16_t n, uint64_t now_tsc) {
    Pkt p[kBurst];
    w.counters.inc(Counter::rx, n);
    classify(w, mbufs, p, n);  // Ethernet/IP/UDP, ChannelData vs Send vs peer
    lookup(w, p, n);           // bulk flow-table lookups
    route(w, p, n);            // next hop, MTU, headroom
    police(w, p, n, now_tsc);  // per-allocation token bucket and counters
    rewrite(w, p, n);          // new headers in place, incremental checksums
    tx(w, p, n);               // NIC, exception port, or free
}

uint16_t poll_once(Worker& w) {
    rte_mbuf* b[kBurst];
    const uint16_t n = rte_eth_rx_burst(w.cfg.nic_port, w.cfg.queue, b, kBurst);
    if (n != 0) {
        process_burst(w, b, n, rte_rdtsc());
    }
    // Kernel egress goes out unchanged; the kernel resolved its L2 header.
    const uint16_t e = rte_eth_rx_burst(w.cfg.exc_port, w.cfg.queue, b, kBurst);
    if (e != 0) {
        w.counters.inc(Counter::exception_to_nic, e);
        const uint16_t sent = rte_eth_tx_burst(w.cfg.nic_port, w.cfg.queue, b, e);
        if (unlikely(sent < e)) {
            w.counters.inc(Counter::drop_nic_tx_full, e - sent);
            rte_pktmbuf_free_bulk(b + sent, e - sent);
        }
    }
    rte_rcu_qsbr_quiescent(w.flows->rcu, w.cfg.id);
    return n;
}

}  // namespace dp
