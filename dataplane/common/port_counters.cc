#include "common/port_counters.h"

#include <algorithm>
#include <cstring>

#include "common/dpdk.h"

namespace dp {

static_assert(turn::ipc::PortCounters::kNameLen >= RTE_ETH_NAME_MAX_LEN, "a DPDK port name would be cut");

std::optional<turn::ipc::PortCounters> read_port_counters(uint16_t port, turn::ipc::PortRole role) {
    rte_eth_stats s{};
    if (rte_eth_stats_get(port, &s) != 0) {
        return std::nullopt;
    }
    turn::ipc::PortCounters c{};
    c.role = role;
    c.ipackets = s.ipackets;
    c.opackets = s.opackets;
    c.ibytes = s.ibytes;
    c.obytes = s.obytes;
    c.imissed = s.imissed;
    c.ierrors = s.ierrors;
    c.oerrors = s.oerrors;
    c.rx_nombuf = s.rx_nombuf;
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) {
        c.link_up = 1;
        c.link_speed_mbps = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed;
    }
    // get_name_by_port copies up to RTE_ETH_NAME_MAX_LEN bytes: read into a
    // buffer of that size and keep what fits with its NUL.
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    if (rte_eth_dev_get_name_by_port(port, name) == 0) {
        std::memcpy(c.name, name, std::min(strnlen(name, sizeof name), sizeof c.name - 1));
    }
    return c;
}

}  // namespace dp
