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
        add(packets_to_peer, 1);
        add(bytes_to_peer, bytes);
    }
    void to_client(size_t bytes) {
        add(packets_to_client, 1);
        add(bytes_to_client, bytes);
    }
    // Counts and shares added up (the control plane's, the dataplane's
    // reports, a saved snapshot's) saturate at 2^64 - 1 instead of wrapping
    // to a small count: no traffic gets there, but a corrupt report or state
    // file could, and a billing line must not turn a huge figure into a small one.
    RelayUsage& operator+=(const RelayUsage& o) {
        add(packets_to_peer, o.packets_to_peer);
        add(bytes_to_peer, o.bytes_to_peer);
        add(packets_to_client, o.packets_to_client);
        add(bytes_to_client, o.bytes_to_client);
        return *this;
    }
    static void add(uint64_t& a, uint64_t b) {
        if (__builtin_add_overflow(a, b, &a)) {
            a = UINT64_MAX;
        }
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
