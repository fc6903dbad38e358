// Where datagrams were dropped: the kernel's per-socket drop counters for the
// harness's own sockets (/proc/net/udp{,6} "drops" column, matched by local
// port) and the host-wide UDP receive-buffer errors (/proc/net/snmp). Their
// difference is what other sockets on the host dropped, on loopback mostly
// the relay's own, which tells a relay bottleneck from a harness one.
#pragma once

#include <cstdint>
#include <unordered_set>

namespace turn::load {

struct UdpDrops {
    uint64_t own = 0;    // drops on sockets bound to one of `ports`
    uint64_t host = 0;   // IPv4 Udp RcvbufErrors of the whole host (network namespace)
};

// Reads the counters now; missing files count as zero.
UdpDrops read_udp_drops(const std::unordered_set<uint16_t>& own_ports);

}  // namespace turn::load
