// RFC 8656 section 2 / 6: an allocation is the relayed transport address(es)
// a client owns on the server, identified by the client's 5-tuple, with its
// permissions and channel bindings. This class is plain state plus the RFC's
// lookup and conflict rules; lifetimes and timers belong to AllocationManager.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/channel_binding.h"
#include "core/packet_io.h"
#include "core/permission.h"
#include "core/quota.h"
#include "core/relay_usage.h"
#include "net/address.h"

namespace turn::cp {

constexpr size_t family_slot(Family f) { return f == Family::kIPv6 ? 1 : 0; }

struct RelayEndpoint {
    Address addr;           // relayed transport address (IP and port)
    RelayId id = kNoRelay;  // the I/O layer's socket handle
    bool tcp = false;       // an RFC 6062 listening TCP socket, not a UDP one
    // Its own time to expiry (monotonic ms): each relayed address of a dual
    // allocation lives until its family is refreshed no more (RFC 8656
    // section 7.3, REQUESTED-ADDRESS-FAMILY in a Refresh).
    uint64_t expires_ms = 0;
    bool active() const { return id != kNoRelay; }
};

class Allocation {
public:
    uint64_t id = 0;
    FiveTuple five_tuple;
    std::string username;   // USERNAME, or the user a USERHASH resolved to
    std::string realm;
    std::array<RelayEndpoint, 2> relays{};  // [family_slot]
    uint64_t created_ms = 0;
    // Age carried over from a previous process that created_ms (monotonic,
    // since boot) cannot hold: an allocation restored after a host reboot
    // may be older than the uptime.
    uint64_t age_before_ms = 0;
    uint64_t timer_at_ms = 0;  // deadline of the wheel entry that counts
    bool dont_fragment = false;
    bool tcp = false;  // RFC 6062: REQUESTED-TRANSPORT TCP, peers reached over TCP connections
    // RFC 8016: the client asked for a MOBILITY-TICKET and may move the
    // allocation to a new 5-tuple; client_path: the socket that brings the
    // new 5-tuple's datagrams to this loop (PacketIo::open_client_path).
    bool mobile = false;
    // Its 5-tuple does not follow the loops' SO_REUSEPORT hash, so it needs a
    // client path: it moved (RFC 8016), or was restored by a process whose
    // hash is not the saving one's (app/main.cc restore_state).
    bool moved = false;
    uint32_t moves = 0;  // RFC 8016 moves so far: tickets of earlier counts are spent
    RelayId client_path = kNoRelay;
    TokenBucket bandwidth;
    // What the control plane relayed for it (the dataplane's fast path
    // counts its own share: AllocationManager::usage).
    RelayUsage relayed;
    // Milliseconds since it was created (by this process or a previous one).
    uint64_t age_ms(uint64_t now_ms) const { return (now_ms > created_ms ? now_ms - created_ms : 0) + age_before_ms; }

    std::unordered_map<Address, Permission, AddressHash> permissions;  // key: peer IP, port 0
    std::unordered_map<uint16_t, ChannelBinding> channels;
    std::unordered_map<Address, uint16_t, AddressHash> channel_by_peer;
    std::vector<ChannelQuarantine> quarantine;

    const RelayEndpoint* relay(Family f) const {
        const auto& r = relays[family_slot(f)];
        return r.active() ? &r : nullptr;
    }
    bool has_family(Family f) const { return relay(f) != nullptr; }
    bool dual() const { return relays[0].active() && relays[1].active(); }
    // When it ends unless refreshed: the latest expiry of its relayed
    // addresses (0 without any).
    uint64_t expires_ms() const {
        uint64_t t = 0;
        for (const auto& r : relays) {
            if (r.active() && r.expires_ms > t) {
                t = r.expires_ms;
            }
        }
        return t;
    }
    // The earliest expiry among its relayed addresses: when its timer is due
    // (0 without any).
    uint64_t next_expiry_ms() const {
        uint64_t t = UINT64_MAX;
        for (const auto& r : relays) {
            if (r.active() && r.expires_ms < t) {
                t = r.expires_ms;
            }
        }
        return t == UINT64_MAX ? 0 : t;
    }

    // Permission for `peer`'s IP (normalised) valid at `now_ms`.
    bool permitted(const Address& peer, uint64_t now_ms) const;
    // Channel bound to `peer` (normalised, with port), if any and unexpired.
    std::optional<uint16_t> channel_for(const Address& peer, uint64_t now_ms) const;
    // Peer of `channel`, if bound and unexpired.
    const Address* peer_for(uint16_t channel, uint64_t now_ms) const;

    enum class BindCheck : uint8_t { kOk, kChannelInUse, kPeerInUse, kChannelQuarantined, kPeerQuarantined };
    // RFC 8656 section 12.2: may `channel` be bound (or re-bound) to `peer`?
    BindCheck can_bind(uint16_t channel, const Address& peer, uint64_t now_ms) const;

    static Address permission_key(const Address& peer) { return peer.normalised().with_port(0); }
};

}  // namespace turn::cp
