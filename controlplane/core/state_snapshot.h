// Allocation state saved to disk so that a restarted control plane takes over
// the allocations of the previous one (docs/CONTROLPLANE.md, "Restarts"): the
// same 5-tuples, relayed addresses, allocation ids, users, permissions and
// channel bindings, with the lifetimes they had left. With the DPDK dataplane
// attached this is what keeps established flows forwarding across a control
// plane restart: the new process resyncs the dataplane with the very entries
// it already holds (same ids, same addresses), so nothing is removed.
//
// Written by io/state_store.h's writer thread from the changes the loops hand
// it; one snapshot per event loop (loops own disjoint allocations; the kernel's
// SO_REUSEPORT hash maps a client 5-tuple to the same loop index as long as
// the number of loops is unchanged, which restore checks).
//
// Format (little-endian is not assumed: every integer is big-endian):
//   "TURNSNAP" u32 version u32 loop u32 loops u64 saved_unix_ms u32 count
//   count x allocation, then u32 CRC-32 (zlib) of everything before it.
// Version 2 adds to each allocation, after its channels, when it was created
// and what the control plane relayed for it (RelayUsage); version 1 files
// (without them) are still read: their allocations restart their age and
// usage at the restore. Version 3 adds, after those, the expiry of each
// relayed address (u64 IPv4, u64 IPv6; 0 where it has none): a dual
// allocation's addresses have lifetimes of their own. In older files both
// have the allocation's.
// The file is read as untrusted input: every length is bounded, a bad magic,
// version, length or CRC rejects the whole file with a message.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/relay_usage.h"
#include "net/address.h"

namespace turn::cp {

// Expiry times are wall-clock Unix milliseconds: lifetimes keep running while
// no process runs, and the file needs no "saved at" to interpret them.
struct SavedPermission {
    Address peer;              // IP, port 0
    uint64_t expires_unix_ms = 0;
    friend bool operator==(const SavedPermission&, const SavedPermission&) = default;
};

struct SavedChannel {
    uint16_t number = 0;
    Address peer;              // IP and port
    uint64_t expires_unix_ms = 0;
    friend bool operator==(const SavedChannel&, const SavedChannel&) = default;
};

struct SavedAllocation {
    uint64_t id = 0;
    FiveTuple five_tuple;
    std::string username;
    std::string realm;
    std::array<Address, 2> relayed{};  // [0] IPv4, [1] IPv6; kNone if absent
    uint64_t expires_unix_ms = 0;
    bool dont_fragment = false;
    // RFC 8016: the client asked for mobility. `moved`: its 5-tuple needs a
    // client path to reach this loop (PacketIo::open_client_path): it moved,
    // or a process with another SO_REUSEPORT hash restored it.
    bool mobile = false;
    bool moved = false;
    std::vector<SavedPermission> permissions;
    std::vector<SavedChannel> channels;
    // Version 2: when it was created (0: not known, a version 1 file), and
    // the control plane's share of its usage (Allocation::relayed) when it
    // was saved: its end line in the next process counts its whole life. The
    // dataplane's share is not saved; its counters run on across a control
    // plane restart.
    uint64_t created_unix_ms = 0;
    RelayUsage usage;
    // Version 3: each relayed address's own expiry ([0] IPv4, [1] IPv6); 0:
    // none saved (the allocation's expires_unix_ms, which is their maximum).
    std::array<uint64_t, 2> relayed_expires_unix_ms{};
    friend bool operator==(const SavedAllocation&, const SavedAllocation&) = default;
};

struct LoopSnapshot {
    uint32_t loop = 0;
    uint32_t loops = 0;
    uint64_t saved_unix_ms = 0;  // when it was written (for logs)
    std::vector<SavedAllocation> allocations;
};

constexpr uint32_t kSnapshotVersion = 3;
constexpr uint32_t kSnapshotOldestVersion = 1;  // still read
// Bounds a hostile or corrupt file cannot push past.
constexpr size_t kSnapshotMaxBytes = size_t{1} << 30;
constexpr uint32_t kSnapshotMaxAllocations = 1u << 22;
constexpr uint32_t kSnapshotMaxEntries = 1u << 20;  // permissions or channels per allocation
constexpr size_t kSnapshotMaxString = 1024;

std::vector<uint8_t> encode_snapshot(const LoopSnapshot& s);
// The same without copying the allocations (the writer thread keeps them in a map).
std::vector<uint8_t> encode_snapshot(uint32_t loop, uint32_t loops, uint64_t saved_unix_ms,
                                     std::span<const SavedAllocation* const> allocations);
// nullopt with `error` saying what is wrong.
std::optional<LoopSnapshot> decode_snapshot(std::span<const uint8_t> data, std::string& error);

}  // namespace turn::cp
