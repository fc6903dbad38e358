// Hook for a forwarding offload (the DPDK dataplane of DESIGN.md). The control
// plane stays the authority: it reports every forwarding decision it makes —
// allocations, permissions and channel bindings as they are created, refreshed
// and removed — and the offload may install matching fast-path flows. The
// default hook does nothing (socket mode). A dataplane client implements this
// interface, turning calls into IPC messages, and replays the full state with
// AllocationManager::for_each_* after every (re)connect.
#pragma once

#include <array>
#include <cstdint>

#include "core/relay_usage.h"
#include "net/address.h"

namespace turn::cp {

struct OffloadAllocation {
    uint64_t id = 0;
    FiveTuple five_tuple;                  // client <-> listening address
    std::array<Address, 2> relayed{};      // [0] IPv4, [1] IPv6; family kNone if absent
    uint64_t bandwidth_bps = 0;            // 0 = unlimited
};

class OffloadHook {
public:
    virtual ~OffloadHook() = default;
    virtual void allocation_added(const OffloadAllocation&) {}
    virtual void allocation_removed(uint64_t /*allocation_id*/) {}
    // The allocation again, as `a` now is (re-keyed or re-sized: moved to a
    // new 5-tuple, or one family's relayed address gone), without its
    // permissions and channels, which follow as added: allocation_removed
    // then allocation_added, as one step where the offload can make it one
    // (IpcServer: no counters request between the two, so the dataplane keeps
    // one count across them).
    virtual void allocation_replaced(const OffloadAllocation& a) {
        allocation_removed(a.id);
        allocation_added(a);
    }
    // Permission for a peer IP (port ignored, RFC 8656 section 9).
    virtual void permission_added(uint64_t /*allocation_id*/, const Address& /*peer_ip*/) {}
    virtual void permission_removed(uint64_t /*allocation_id*/, const Address& /*peer_ip*/) {}
    virtual void channel_added(uint64_t /*allocation_id*/, uint16_t /*channel*/, const Address& /*peer*/) {}
    virtual void channel_removed(uint64_t /*allocation_id*/, uint16_t /*channel*/, const Address& /*peer*/) {}
    // What the offload relayed for the allocation so far, as far as it has
    // reported it (the dataplane: as of its last counters report). Called
    // from any event loop.
    virtual RelayUsage offloaded_usage(uint64_t /*allocation_id*/) const { return {}; }
    // The part of offloaded_usage that a next process, continuing the
    // allocation from [state].dir, cannot get back from the offload (the
    // dataplane: what processes before its current one counted, since a
    // dataplane restart starts every count at zero). Saved with the
    // allocation's usage. Called from any event loop.
    virtual RelayUsage offloaded_carry(uint64_t /*allocation_id*/) const { return {}; }
    // The allocation is ending (called right before allocation_removed):
    // true if the offload takes `line` (moved from) and logs it, with its
    // own share of the usage, once it knows that share in full (the
    // dataplane: its final totals, in the report after the Del); false, and
    // `line` untouched, to have the caller log it now with `offloaded`, the
    // offload's share as far as it knows it (it counts no more of it).
    virtual bool defer_end(uint64_t allocation_id, EndLine& /*line*/, RelayUsage& offloaded) {
        offloaded = offloaded_usage(allocation_id);
        return false;
    }
};

}  // namespace turn::cp
