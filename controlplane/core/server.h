// The protocol core of one event loop: everything a TURN server does with a
// datagram, without I/O. The I/O layer feeds it client datagrams (with their
// 5-tuple) and peer datagrams (with the relayed socket they arrived on) and
// calls tick(); the core answers through PacketIo.
//
// Client datagram path (on_client_datagram):
//   ChannelData? -> channel lookup -> permission -> bandwidth -> send to peer
//   STUN? parse -> request:    retransmission cache -> Binding (no auth) or
//                              auth -> 420 -> 437/441 -> method handler
//                  indication: Send -> peer policy -> permission -> send to peer
//   RFC 3489 Binding (no magic cookie) -> MAPPED-ADDRESS answer
// Peer datagram path (on_peer_datagram):
//   relay -> allocation -> permission -> bandwidth -> ChannelData or Data indication
// Method handlers live in handlers/<method>.cc, one per method.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <unordered_map>
#include <cstdint>
#include <span>

#include "core/allocation_manager.h"
#include "core/auth.h"
#include "core/clock.h"
#include "core/offload.h"
#include "core/packet_io.h"
#include "core/quota.h"
#include "core/response_cache.h"
#include "core/shared.h"
#include "core/stats.h"
#include "core/timer_wheel.h"
#include "stun/builder.h"
#include "stun/message.h"

namespace turn::cp {


class Server {
public:
    Server(Shared& shared, const Clock& clock, PacketIo& io, OffloadHook& offload, Stats& stats);

    // A datagram, or one message framed off a TCP/TLS stream (ft.transport).
    // marks: the UDP (or DTLS) datagram's IPv4 TOS / IPv6 Traffic Class byte
    // (DSCP and ECN) and TTL / Hop Limit (0: not known, as for streams).
    // Data relayed from it keeps the TOS and leaves with one less TTL, and
    // is dropped if it came with 1 or 0 (RFC 8656 section 14); requests are
    // answered whatever their TTL.
    void on_client_datagram(const FiveTuple& ft, std::span<const uint8_t> data, IpMarks marks = {});
    // A TCP/TLS client connection ended: its 5-tuple can never be used again,
    // so the allocation on it (if any) ends too.
    void on_client_closed(const FiveTuple& ft);
    bool has_allocation(const FiveTuple& ft) { return allocations_.find(ft) != nullptr; }

    // RFC 6062 TCP allocations, from the I/O layer (handlers/tcp_relay.cc).
    // The outgoing connection of a Connect request succeeded or failed.
    void on_tcp_peer_connected(uint32_t conn_id, bool ok);
    // A peer connected to a TCP allocation's relayed address: true (with a
    // connection id) if it has a permission, and the client is told with a
    // ConnectionAttempt indication; false: the I/O layer closes it.
    bool on_tcp_peer_accepted(RelayId relay, const Address& peer, uint32_t& conn_id);
    // A peer connection ended (either side, bound or not).
    void on_tcp_peer_closed(uint32_t conn_id);
    // RFC 6062: `bytes` piped between a data connection and its peer
    // connection `conn_id`, for the allocation's usage (bytes only: a stream
    // has no datagrams to count).
    void on_tcp_relayed(uint32_t conn_id, Direction d, size_t bytes);
    // Bytes the pipe of peer connection conn_id may relay now: what is left of
    // its allocation's bandwidth budget ([allocation].bandwidth_bps, both
    // directions together), UINT64_MAX without a limit (or without the
    // connection). StreamIo reads no more than that, and stops reading the
    // side while it is 0.
    uint64_t tcp_budget(uint32_t conn_id);
    size_t tcp_peer_count() const { return tcp_peers_.size(); }
    // marks: as for on_client_datagram.
    void on_peer_datagram(RelayId relay, const Address& peer, std::span<const uint8_t> data, IpMarks marks = {});
    // An ICMP error about a datagram the relayed socket sent to `peer`
    // (RFC 8656 section 11.5): reported to the client as a Data indication
    // with an ICMP attribute, if the peer has a permission.
    void on_peer_icmp(RelayId relay, const Address& peer, uint8_t type, uint8_t code, uint32_t error_data);
    // Runs due timers; call at least every tick (100 ms) of the wheel.
    void tick();

    AllocationManager& allocations() { return allocations_; }
    uint64_t now_ms() const { return clock_.now_ms(); }
    // Which of `count` event loops this server is (RFC 6062 CONNECTION-IDs
    // name their loop, so a ConnectionBind on another loop can be sent there).
    void set_loop(unsigned index, unsigned count) {
        loop_ = index;
        loops_ = count == 0 ? 1 : count;
    }
    // Runs a task on event loop `loop`'s thread (EventLoop::post); false if
    // there is no such loop. RFC 8016: a mobility Refresh that reaches
    // another loop than its allocation's is handed there.
    using Poster = std::function<bool(unsigned loop, std::function<void(Server&)> task)>;
    void set_poster(Poster p) { poster_ = std::move(p); }
    TimerWheel& wheel() { return wheel_; }
    const ResponseCache& response_cache() const { return cache_; }

    static constexpr size_t kScratchSize = 65536 + 128;

private:
    // One request being answered.
    struct Request {
        const stun::MessageView& msg;
        const FiveTuple& ft;
        const AuthContext* auth = nullptr;  // set once authenticated
        bool fingerprint = false;           // the request had FINGERPRINT
    };

    void on_channel_data(const FiveTuple& ft, std::span<const uint8_t> data, IpMarks marks);
    void on_request(const FiveTuple& ft, const stun::MessageView& m);
    void on_indication(const FiveTuple& ft, const stun::MessageView& m, IpMarks marks);
    void on_rfc3489_binding(const FiveTuple& ft, std::span<const uint8_t> data);
    void on_parse_error(const FiveTuple& ft, std::span<const uint8_t> data);

    // Handlers (handlers/*.cc).
    void handle_binding(const Request& r);
    void handle_allocate(const Request& r);
    void handle_refresh(const Request& r, Allocation& a);
    // Refresh's checks of LIFETIME and REQUESTED-ADDRESS-FAMILY against `a`:
    // 0, or the error code to answer (also before a mobility move).
    uint16_t check_refresh(const Request& r, const Allocation& a, uint32_t& lifetime, Family& only) const;
    void handle_create_permission(const Request& r, Allocation& a);
    void handle_channel_bind(const Request& r, Allocation& a);
    void handle_connect(const Request& r, Allocation& a);
    void handle_connection_bind(const Request& r);
    void handle_send(const FiveTuple& ft, const stun::MessageView& m, IpMarks marks);
    // RFC 8016 (handlers/mobility.cc): a Refresh with MOBILITY-TICKET from a
    // 5-tuple without an allocation; and the ticket a success answer carries.
    void handle_mobility_refresh(const Request& r);
    void add_mobility_ticket(stun::MessageBuilder& b, const Allocation& a) const;
    // [redirect]: answers r with 300 Try Alternate if this Allocate goes to
    // another relay now (returns true), else leaves it to be served here.
    bool redirect_allocate(const Request& r);

    // Response helpers: begin() starts a response to r in the scratch
    // buffer; finish() appends SOFTWARE, the integrity attribute the request
    // used, FINGERPRINT if the request had one, then sends (and caches).
    stun::MessageBuilder begin(const Request& r, stun::Class cls);
    void finish(const Request& r, stun::MessageBuilder& b, uint16_t code);
    // SOFTWARE, the integrity attribute of `auth` (none without), FINGERPRINT if asked.
    void seal(stun::MessageBuilder& b, const AuthContext* auth, bool fingerprint) const;
    void reply_error(const Request& r, uint16_t code);
    // The per-source budget for answers to unauthenticated requests (counts
    // drop_unauth_rate_limit when spent).
    bool unauth_answer_allowed(const FiveTuple& ft);
    // Whether r may reach `peer` (with its port: ChannelBind, Connect;
    // without: CreatePermission); when not, 403 is answered and, at debug
    // level, the peer and the rule that denied it logged (peer_denied; the
    // first private one of the process also at info, private_peer_denied).
    bool peer_permitted(const Request& r, const Address& peer, bool with_port);
    // 401 / 438 with REALM, NONCE and PASSWORD-ALGORITHMS (unsigned).
    void challenge(const Request& r, uint16_t code);

    // Relaying. `received`: the marks of the datagram the data came in.
    void relay_to_peer(Allocation& a, const Address& peer, std::span<const uint8_t> payload, bool dont_fragment,
                       IpMarks received);
    // RFC 8656 section 14 (preferred behaviour) for data relayed from a
    // datagram received with `received`: false if its TTL does not allow it
    // (counted as ttl_expired), else `out` holds the relayed datagram's TOS
    // ([server].dscp applied) and TTL (one less; not known: the default).
    bool relayed_marks(IpMarks received, IpMarks& out);
    std::array<uint8_t, stun::kTxIdSize> next_txid();
    uint32_t lifetime_for(const stun::MessageView& m, bool& bad) const;
    void schedule_housekeeping();

    Shared& shared_;
    const Clock& clock_;
    PacketIo& io_;
    Stats& stats_;
    TimerWheel wheel_;
    AllocationManager allocations_;
    Authenticator auth_;
    ResponseCache cache_;
    ReloadableView<PeerPolicy> policy_;  // this loop's view ([policy] reloads)
    uint64_t txid_state_ = 0;
    uint64_t redirect_next_ = 0;  // round robin over [redirect] servers
    // This server's event loop and how many there are: a CONNECTION-ID
    // names its loop (id % loops_ == loop_).
    unsigned loop_ = 0;
    unsigned loops_ = 1;
    Poster poster_;

    // RFC 6062: peer connections of this loop's TCP allocations, by
    // CONNECTION-ID, from Connect (or a peer's connect) until they end.
    struct TcpPeer {
        uint64_t alloc_id = 0;
        Address peer;
        bool connecting = false;  // a Connect waits for the outgoing connection
        bool bound = false;       // ConnectionBind made a data connection of it
        // The Connect answer, sent when the connection is made or has failed.
        FiveTuple ft;
        std::array<uint8_t, stun::kTxIdSize> txid{};
        std::optional<AuthContext> auth;
        bool fingerprint = false;
    };
    std::unordered_map<uint32_t, TcpPeer> tcp_peers_;
    uint32_t new_connection_id();
    void answer_connect(const TcpPeer& p, uint32_t conn_id, uint16_t code);
    void arm_bind_timeout(uint32_t conn_id);
    std::array<uint8_t, kScratchSize> scratch_{};
};

}  // namespace turn::cp
