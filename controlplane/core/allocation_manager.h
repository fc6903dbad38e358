// Owns the allocations of one event loop, keyed by 5-tuple (RFC 8656 section
// 2), and their whole lifecycle: relayed socket and port acquisition, expiry of
// allocations, permissions and channel bindings on the loop's timer wheel,
// quota and port release, the offload hook and the allocation event log.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/allocation.h"
#include "core/clock.h"
#include "core/offload.h"
#include "core/packet_io.h"
#include "core/shared.h"
#include "core/state_snapshot.h"
#include "core/stats.h"
#include "core/timer_wheel.h"

namespace turn::cp {

class AllocationManager {
public:
    AllocationManager(Shared& shared, const Clock& clock, TimerWheel& wheel, PacketIo& io, OffloadHook& offload,
                      Stats& stats);
    ~AllocationManager();

    Allocation* find(const FiveTuple& ft);
    Allocation* find_by_id(uint64_t id) {
        auto it = by_id_.find(id);
        return it == by_id_.end() ? nullptr : it->second;
    }
    // The allocation a relayed socket belongs to, and that socket's family.
    Allocation* find_by_relay(RelayId relay, Family& family);
    size_t size() const { return by_tuple_.size(); }

    // Port + socket for one family (with a reservation token: the
    // reservation's family, whatever `f` says). Result code 0 on success, else the RFC
    // 8656 error to report (508 when the range is exhausted or the
    // reservation is unknown, 440 when no relay IP of that family exists).
    struct RelayGrant {
        uint16_t error = 0;
        RelayEndpoint endpoint;
        uint64_t reservation_token = 0;
    };
    // tcp: an RFC 6062 listening TCP socket instead of a UDP one.
    RelayGrant open_relay(Family f, bool even_port, bool reserve_next, std::optional<uint64_t> token,
                          bool dont_fragment, bool tcp = false);
    // Undoes open_relay() when the allocation is not created after all.
    void close_relay(Family f, const RelayEndpoint& e);

    // Creates the allocation (quota already taken by the caller).
    Allocation& create(const FiveTuple& ft, std::string username, std::string realm,
                       std::array<RelayEndpoint, 2> relays, uint64_t lifetime_ms, bool dont_fragment);
    // A new lifetime for every relayed address, or with `only` (a Refresh's
    // REQUESTED-ADDRESS-FAMILY) for that family's alone.
    void refresh(Allocation& a, uint64_t lifetime_ms, Family only = Family::kNone);
    // One relayed address of a dual allocation ends, the other lives on: a
    // Refresh with LIFETIME 0 and REQUESTED-ADDRESS-FAMILY, or (`expired`)
    // that address's own lifetime ran out. Its family's permissions and
    // channels go with it. The caller must not use `a` afterwards (closing
    // the socket may end the allocation, as in remove()).
    void remove_family(Allocation& a, Family f, bool expired = false);
    // kConnectionClosed: the client's TCP/TLS connection, and with it the
    // 5-tuple, is gone.
    enum class EndReason : uint8_t { kDeleted, kExpired, kShutdown, kConnectionClosed, kOperator };
    void remove(Allocation& a, EndReason why);
    // RFC 8016: the allocation now belongs to the client 5-tuple `to` (no
    // allocation there yet); the offload follows, the old 5-tuple is free.
    void move(Allocation& a, const FiveTuple& to);

    // Installs or refreshes a permission for the peer's IP (300 s).
    void add_permission(Allocation& a, const Address& peer);
    // Installs or refreshes a channel binding (600 s) and the peer's permission.
    void bind_channel(Allocation& a, uint16_t channel, const Address& peer);

    void for_each(const std::function<void(const Allocation&)>& fn) const;
    // What `a` relayed so far: the datagrams the control plane relayed and,
    // for an offloaded (UDP client) allocation, those of the dataplane's fast
    // path as far as it has reported them (OffloadHook::offloaded_usage).
    RelayUsage usage(const Allocation& a) const { return a.relayed + offload_for(a).offloaded_usage(a.id); }

    // Restarts (core/state_snapshot.h). With tracking on, every change to an
    // allocation, its permissions or channels marks it dirty (O(1)); a saver
    // collects what changed since its last call with take_changes(), so the
    // loop's cost follows the changes, not the number of allocations.
    void track_changes(bool on) { track_ = on; }
    void take_changes(std::vector<SavedAllocation>& changed, std::vector<uint64_t>& removed);
    // The ids of allocations that ended (not at shutdown) since the last
    // take_changes, in order: what the loop's end journal records between
    // saves (io/state_store.h EndJournal).
    const std::vector<uint64_t>& removed_since_take() const { return removed_; }
    // After the control plane relayed a datagram for `a` (Allocation::relayed
    // counted it): its saved copy follows its usage every kUsageSaveEvery
    // datagrams, so that a crash loses less than that of each allocation's
    // usage (plus what the last save interval had); a clean stop saves all.
    static constexpr uint64_t kUsageSaveEvery = 1024;
    void relayed_one(const Allocation& a) {
        static_assert((kUsageSaveEvery & (kUsageSaveEvery - 1)) == 0);
        if (track_ && ((a.relayed.packets_to_peer + a.relayed.packets_to_client) & (kUsageSaveEvery - 1)) == 0) {
            dirty_.insert(a.id);
        }
    }
    // Every allocation as it would be saved now.
    void snapshot(std::vector<SavedAllocation>& out) const;
    // Re-creates a saved allocation: the same id, 5-tuple, relayed ports
    // (re-opened), user quota, permissions and channels with what is left of
    // their lifetimes at the current wall-clock time, reported to the offload
    // hook like new ones (and marked dirty if tracking is on).
    // Returns "" or why it was not restored (nothing is taken then; the
    // allocation's last line, log_not_restored, is logged). With
    // `client_path`, its client's datagrams are brought to this loop by a
    // socket connected to the client (PacketIo::open_client_path), as a moved
    // allocation's are, whatever loop the kernel's SO_REUSEPORT hash picks:
    // for a process whose hash is not the saving one's (another boot or
    // network namespace; EventLoop::restore).
    std::string restore(const SavedAllocation& s, bool client_path = false);
    // The last line of a saved allocation this process does not take over
    // (allocation_not_restored, with `why`): who it was, its age (to its
    // expiry, if it expired) and what the control plane relayed for it, as an
    // end line would say, so that summed end lines still count that share
    // (the dataplane's final totals for it go to the metrics only).
    static void log_not_restored(const SavedAllocation& s, uint64_t unix_now_ms, const std::string& why);

    static OffloadAllocation offload_view(const Allocation& a, uint64_t bandwidth_bps);
    // `a` as it would be saved now (expiry times in wall-clock Unix ms); also
    // what the admin interface lists (io/admin_server.h).
    SavedAllocation saved_view(const Allocation& a) const;

private:
    std::string restore_or_why(const SavedAllocation& s, bool client_path);
    Allocation& insert(std::unique_ptr<Allocation> a);
    void set_permission(Allocation& a, const Address& key, uint64_t expires_ms);
    void set_channel(Allocation& a, uint16_t channel, const Address& peer, uint64_t expires_ms);
    // The offload hook for `a`: only UDP clients' allocations go to the
    // offload (the dataplane frames for datagrams, and a TCP/TLS client's
    // packets belong on its stream); the others' changes go to a hook that
    // does nothing.
    OffloadHook& offload_for(const Allocation& a) {
        return a.five_tuple.transport == Transport::kUdp ? offload_ : no_offload_;
    }
    const OffloadHook& offload_for(const Allocation& a) const {
        return const_cast<AllocationManager*>(this)->offload_for(a);
    }
    // Permissions and channels stay on the socket path when their peer is
    // on one of the relay's own IPs that the dataplane cannot serve
    // (Shared::socket_only_peer_ips: listening IPs, and the relay IP of a
    // family with an external IP, whose datagrams the receiver must see
    // from the sender's external address). A peer on a relay IP without a
    // NAT is offloaded: the dataplane takes it to the other allocation
    // itself (relay-to-relay, dataplane/worker/route.cc). So is a peer on
    // an external IP: the dataplane takes a datagram to a relayed port there
    // to that allocation itself, and the offload (IpcServer) holds such a
    // peer back until the dataplane has confirmed the external IPs.
    bool offloadable(const Address& peer) const {
        const Address ip = peer.normalised();
        for (const Address& o : shared_.socket_only_peer_ips) {
            if (o.same_ip(ip)) {
                return false;
            }
        }
        return true;
    }
    // Whether the offload holds channel `peer` of `a`: an offloadable peer
    // whose IP has a permission. The dataplane's channel path has no
    // permission check, so a channel whose permission expired (a client
    // that refreshed neither: 300 s against the channel's 600 s) is
    // withdrawn with it and comes back with a new permission for the IP
    // (RFC 8656 sections 9 and 12: no data either way without one, as on
    // the socket path).
    bool channel_offloaded(const Allocation& a, const Address& peer) const {
        return offloadable(peer) && a.permissions.count(Allocation::permission_key(peer)) != 0;
    }
    // Tells the offload the allocation again (removed, added, its permissions
    // and channels): after a change of what it is keyed or sized by.
    void reannounce(const Allocation& a);
    void changed(const Allocation& a) {
        if (track_) {
            dirty_.insert(a.id);
        }
    }
    void arm_allocation_timer(uint64_t id, uint64_t at_ms);
    void arm_permission_timer(uint64_t id, const Address& key, uint64_t at_ms);
    void arm_channel_timer(uint64_t id, uint16_t channel, uint64_t at_ms);
    void on_allocation_timer(uint64_t id, uint64_t at_ms);
    void on_permission_timer(uint64_t id, const Address& key);
    void on_channel_timer(uint64_t id, uint16_t channel);
    void release_resources(Allocation& a);
    void log(std::string_view event, const Allocation& a);  // its fields as end_line's
    // Saved for a restarted process (snapshot, take_changes): a UDP client's
    // allocation; a TCP/TLS/DTLS one ends with its connection or session,
    // so with this process.
    static bool saved(const Allocation& a) { return a.five_tuple.transport == Transport::kUdp; }
    // The end line of `a` (event: how it ended), without its usage.
    EndLine end_line(std::string_view event, const Allocation& a) const;

    Shared& shared_;
    const Clock& clock_;
    TimerWheel& wheel_;
    PacketIo& io_;
    OffloadHook& offload_;
    OffloadHook no_offload_;  // offload_for()'s hook for allocations that are not offloaded
    Stats& stats_;
    bool track_ = false;
    std::unordered_set<uint64_t> dirty_;  // allocation ids changed since take_changes()
    std::vector<uint64_t> removed_;
    std::unordered_map<FiveTuple, std::unique_ptr<Allocation>, FiveTupleHash> by_tuple_;
    std::unordered_map<uint64_t, Allocation*> by_id_;
    struct RelayOwner {
        Allocation* allocation;
        Family family;
    };
    std::unordered_map<RelayId, RelayOwner> by_relay_;
};

}  // namespace turn::cp
