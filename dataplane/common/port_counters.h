// A DPDK port's link state and statistics as the control plane exports them
// (ipc::PortCounters, src/ipc/protocol.h): NIC-level drops (rx ring full,
// no mbuf, tx errors) that no worker counter sees.
#pragma once

#include <cstdint>
#include <optional>

#include "ipc/protocol.h"

namespace dp {

// Reads `port` with rte_eth_stats_get, rte_eth_link_get_nowait and
// rte_eth_dev_get_name_by_port. For the main lcore (the Applier's
// CountersRequest answer), never a worker's loop: a PMD's stats_get may make
// a system call (AF_XDP's XDP_STATISTICS getsockopt). nullopt when the
// statistics cannot be read; a link that cannot be read is reported down.
std::optional<turn::ipc::PortCounters> read_port_counters(uint16_t port, turn::ipc::PortRole role);

}  // namespace dp
