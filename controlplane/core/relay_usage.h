// What one allocation relayed: datagrams and payload bytes (ChannelData,
// Send and Data indications' data, not their framing), each way. Kept per
// allocation by the control plane for the datagrams it relays itself, and by
// the DPDK dataplane for those of its fast path (OffloadHook::offloaded_usage);
// the sum goes into the allocation's end log line and turn-ctl's listing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/event_log.h"

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

// An allocation's end log line (AllocationManager::remove) before its usage
// is added: the offload may keep it until it knows its own share
// (OffloadHook::defer_end).
struct EndLine {
    std::string event;          // allocation_deleted, allocation_expired, ...
    std::vector<Field> fields;  // who and what it was; keys are literals
    RelayUsage relayed;         // the control plane's share
};

// Logs `e` with its usage: the control plane's share plus `offloaded`.
inline void log_end(const EndLine& e, const RelayUsage& offloaded, LogLevel level = LogLevel::kInfo) {
    const RelayUsage u = e.relayed + offloaded;
    std::vector<Field> f = e.fields;
    f.emplace_back("packets_to_peer", std::to_string(u.packets_to_peer));
    f.emplace_back("bytes_to_peer", std::to_string(u.bytes_to_peer));
    f.emplace_back("packets_to_client", std::to_string(u.packets_to_client));
    f.emplace_back("bytes_to_client", std::to_string(u.bytes_to_client));
    log_event(level, e.event, f);
}

}  // namespace turn::cp
