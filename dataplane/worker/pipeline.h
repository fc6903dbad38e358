// The data path of one worker (DESIGN.md "The data path").
#pragma once

#include <cstdint>

#include "worker/worker.h"

namespace dp {

// Runs one received burst (at most kBurst mbufs) through every stage; each
// mbuf ends transmitted, punted to the exception port, or freed.
void process_burst(Worker& w, rte_mbuf** mbufs, uint16_t n, uint64_t now_tsc);

// One iteration of the worker loop: NIC rx -> process_burst; for a worker
// that owns an exception queue (WorkerConfig::exc_owner), the other
// workers' punts from its ring -> exception tx, and exception-port rx
// (kernel egress) -> NIC tx; then a QSBR quiescent state. Returns the number
// of packets received on the NIC.
uint16_t poll_once(Worker& w);

}  // namespace dp
