// Per-worker packet counters, generated from one X-macro list so every drop
// and punt reason has a name, a counter and a description (STYLE.md 3).
// Only the owning worker writes its Counters; the main lcore reads them.
#pragma once

#include <cstdint>
#include <string_view>

namespace dp {

// X(name, description)
#define DP_COUNTERS(X)                                                                  \
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
    X(punt_send_unparsed, "punted: Send indication the fast parser does not handle")    \
    X(drop_bad_length, "dropped: IP/UDP/ChannelData/STUN length inconsistent")          \
    X(drop_bad_ip_checksum, "dropped: IPv4 header checksum wrong")                      \
    X(drop_bad_l4_checksum, "dropped: bad UDP checksum (port flag, or zero over IPv6)")             \
    X(drop_no_permission, "dropped: peer or Send target without a permission")          \
    X(drop_rate_limited, "dropped: allocation over its bandwidth limit")                \
    X(drop_exception_tx_full, "dropped: exception port tx queue full")                  \
    X(drop_nic_tx_full, "dropped: NIC tx queue full")

enum class Counter : uint16_t {
#define DP_X(name, desc) name,
    DP_COUNTERS(DP_X)
#undef DP_X
        kCount
};
constexpr size_t kCounterCount = static_cast<size_t>(Counter::kCount);

constexpr std::string_view counter_name(Counter c) {
    constexpr std::string_view names[] = {
#define DP_X(name, desc) #name,
        DP_COUNTERS(DP_X)
#undef DP_X
    };
    return names[static_cast<size_t>(c)];
}
constexpr std::string_view counter_description(Counter c) {
    constexpr std::string_view d[] = {
#define DP_X(name, desc) desc,
        DP_COUNTERS(DP_X)
#undef DP_X
    };
    return d[static_cast<size_t>(c)];
}

struct alignas(64) Counters {
    uint64_t v[kCounterCount] = {};
    void inc(Counter c, uint64_t n = 1) { v[static_cast<size_t>(c)] += n; }
    uint64_t get(Counter c) const { return v[static_cast<size_t>(c)]; }
};

}  // namespace dp
