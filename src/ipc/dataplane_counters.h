// The dataplane's per-worker packet counters, one X-macro list shared by
// the dataplane (dataplane/worker/counters.h: the Counter enum the workers
// bump) and the control plane (the names it exports to Prometheus from
// WorkerCounters reports, ipc/protocol.h). Append only: a report carries
// the values in this order.
#pragma once

// X(name, description)
#define TURN_DP_COUNTERS(X)                                                             \
    X(rx, "packets received on the NIC port")                                          \
    X(fwd_client_channel, "client ChannelData forwarded to its peer")                   \
    X(fwd_client_send, "client Send indication forwarded to its peer")                  \
    X(fwd_peer_channel, "peer packet forwarded to the client as ChannelData")           \
    X(fwd_peer_data, "peer packet forwarded to the client as a Data indication")        \
    X(exception_to_nic, "kernel egress from the exception port sent out the NIC")       \
    X(punt_not_ip, "punted: not IPv4/IPv6 (ARP and other ethertypes)")                  \
    X(punt_not_udp, "punted: not UDP (ICMP, TCP, ...)")                                 \
    X(punt_fragment, "punted: IP fragment, reassembled by the kernel")                  \
    X(punt_ip_options, "punted: IPv4 options or IPv6 extension headers")                \
    X(punt_not_fast_path, "punted: to a listening address but not ChannelData/Send")    \
    X(punt_miss, "punted: no flow-table entry")                                         \
    X(punt_mtu, "punted: the relayed packet would exceed the MTU")                      \
    X(punt_no_next_hop, "punted: no L2 next hop for the destination")                   \
    X(punt_multi_segment, "punted: chained mbuf")                                       \
    X(punt_no_headroom, "punted: not enough headroom to prepend headers")               \
    X(punt_send_unparsed, "punted: Send indication the fast parser does not handle, or a wrong FINGERPRINT") \
    X(drop_bad_length, "dropped: IP/UDP/ChannelData/STUN length inconsistent")          \
    X(drop_bad_ip_checksum, "dropped: IPv4 header checksum wrong")                      \
    X(drop_bad_l4_checksum, "dropped: bad UDP checksum (port flag, or zero over IPv6)") \
    X(drop_no_permission, "dropped: peer or Send target without a permission")          \
    X(drop_rate_limited, "dropped: allocation over its bandwidth limit")                \
    X(drop_exception_tx_full, "dropped: exception port tx queue full")                  \
    X(drop_nic_tx_full, "dropped: NIC tx queue full")                                  \
    X(drop_ttl_expired, "dropped: relayed packet received with TTL / hop limit 0 or 1") \
    X(hairpin, "relayed packet to one of this relay's own relayed addresses, taken to that allocation inside the dataplane") \
    X(punt_own_address, "punted: relayed packet to one of this relay's own addresses that is not an offloaded relayed address") \
    X(drop_hairpin_unsendable, "dropped: relay-to-relay packet the receiving allocation could not send after all (a table change between its two legs)")
