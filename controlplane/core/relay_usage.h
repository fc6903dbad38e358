// What one allocation relayed: datagrams and payload bytes (ChannelData,
// Send and Data indications' data, not their framing), each way. Kept per
// allocation by the control plane for the datagrams it relays itself, and by
// the DPDK dataplane for those of its fast path (OffloadHook::offloaded_usage);
// the sum goes into the allocation's end log line and turn-ctl's listing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace turn::cp {

struct RelayUsage {
    uint64_t packets_to_peer = 0;
    uint64_t bytes_to_peer = 0;
    uint64_t packets_to_client = 0;
    uint64_t bytes_to_client = 0;

    void to_peer(size_t bytes) {
        ++packets_to_peer;
        bytes_to_peer += bytes;
    }
    void to_client(size_t bytes) {
        ++packets_to_client;
        bytes_to_client += bytes;
    }
    RelayUsage& operator+=(const RelayUsage& o) {
        packets_to_peer += o.packets_to_peer;
        bytes_to_peer += o.bytes_to_peer;
        packets_to_client += o.packets_to_client;
        bytes_to_client += o.bytes_to_client;
        return *this;
    }
    friend RelayUsage operator+(RelayUsage a, const RelayUsage& b) { return a += b; }
    bool operator==(const RelayUsage&) const = default;
};

}  // namespace turn::cp
