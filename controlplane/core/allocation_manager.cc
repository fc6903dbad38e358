#include "core/allocation_manager.h"

#include <algorithm>
#include <array>
#include <atomic>

#include "core/event_log.h"
#include "core/nat_behavior.h"
#include "stun/constants.h"
#include "turn/channel_data.h"

namespace turn::cp {

namespace {
// [0] IPv4, [1] IPv6; Address{} (family none) where it has none, as saved
// and as the offload is told.
std::array<Address, 2> relayed_addresses(const Allocation& a) {
    std::array<Address, 2> out{};
    for (size_t i = 0; i < 2; ++i) {
        out[i] = a.relays[i].active() ? a.relays[i].addr : Address{};
    }
    return out;
}

// For log lines: the relayed addresses there are, comma-separated.
std::string relays_string(const std::array<Address, 2>& relayed) {
    std::string s;
    for (const auto& r : relayed) {
        if (r.family != Family::kNone) {
            if (!s.empty()) {
                s += ',';
            }
            s += r.to_string();
        }
    }
    return s;
}

// A saved allocation's age at wall-clock `unix_ms`: 0 if its creation time
// is unknown (a version 1 file) or not before then.
uint64_t saved_age_ms(const SavedAllocation& s, uint64_t unix_ms) {
    return s.created_unix_ms != 0 && s.created_unix_ms < unix_ms ? unix_ms - s.created_unix_ms : 0;
}

}  // namespace

AllocationManager::AllocationManager(Shared& shared, const Clock& clock, TimerWheel& wheel, PacketIo& io,
                                     OffloadHook& offload, Stats& stats)
    : shared_(shared), clock_(clock), wheel_(wheel), io_(io), offload_(offload), stats_(stats) {}

AllocationManager::~AllocationManager() {
    while (!by_tuple_.empty()) {
        remove(*by_tuple_.begin()->second, EndReason::kShutdown);
    }
}

Allocation* AllocationManager::find(const FiveTuple& ft) {
    auto it = by_tuple_.find(ft);
    return it == by_tuple_.end() ? nullptr : it->second.get();
}

Allocation* AllocationManager::find_by_relay(RelayId relay, Family& family) {
    auto it = by_relay_.find(relay);
    if (it == by_relay_.end()) {
        return nullptr;
    }
    family = it->second.family;
    return it->second.allocation;
}

AllocationManager::RelayGrant AllocationManager::open_relay(Family f, bool even_port, bool reserve_next,
                                                            std::optional<uint64_t> token, bool dont_fragment,
                                                            bool tcp) {
    RelayGrant g;
    auto open = [&](const Address& addr, RelayId& id) {
        return tcp ? io_.open_tcp_relay(addr, id) : io_.open_relay(addr, dont_fragment, id);
    };
    const auto ip = shared_.config.relay_ip(f);
    if (!ip && !token) {
        g.error = stun::err::kAddressFamilyNotSupported;
        return g;
    }
    const uint64_t now = clock_.now_ms();
    if (token) {
        auto res = shared_.ports.take_reserved(*token, now);
        const auto res_ip = res ? shared_.config.relay_ip(res->family) : std::nullopt;
        if (!res || !res_ip) {
            g.error = stun::err::kInsufficientCapacity;
            return g;
        }
        RelayId id = kNoRelay;
        if (open(res_ip->with_port(res->port), id) != OpenResult::kOk) {
            shared_.ports.release(res->family, res->port);
            g.error = stun::err::kInsufficientCapacity;
            return g;
        }
        g.endpoint = RelayEndpoint{res_ip->with_port(res->port), id, tcp};
        return g;
    }
    // A port another process holds is skipped: it stays marked as used for
    // the rest of this loop (so no attempt picks it again) and is released
    // afterwards, to be tried again by later Allocates. A handful of attempts
    // is plenty unless the range is nearly exhausted, in which case 508 is right.
    std::array<uint16_t, 16> held{};
    size_t n_held = 0;
    auto release_held = [&] {
        for (size_t i = 0; i < n_held; ++i) {
            shared_.ports.release(f, held[i]);
        }
    };
    for (int attempt = 0; attempt < 16; ++attempt) {
        auto grant = shared_.ports.acquire(f, even_port, reserve_next, now);
        if (!grant) {
            break;
        }
        RelayId id = kNoRelay;
        const OpenResult r = open(ip->with_port(grant->port), id);
        if (r == OpenResult::kOk) {
            release_held();
            g.endpoint = RelayEndpoint{ip->with_port(grant->port), id, tcp};
            g.reservation_token = grant->token;
            return g;
        }
        if (grant->token != 0) {
            if (auto p = shared_.ports.take_reserved(grant->token, now)) {
                shared_.ports.release(p->family, p->port);
            }
        }
        if (r == OpenResult::kError) {
            shared_.ports.release(f, grant->port);
            break;
        }
        held[n_held++] = grant->port;
    }
    release_held();
    stats_.quota(QuotaKind::kPorts);
    g.error = stun::err::kInsufficientCapacity;
    return g;
}

void AllocationManager::close_relay(Family f, const RelayEndpoint& e) {
    if (!e.active()) {
        return;
    }
    if (e.tcp) {
        io_.close_tcp_relay(e.id);
    } else {
        io_.close_relay(e.id);
    }
    shared_.ports.release(f, e.addr.port);
}

Allocation& AllocationManager::create(const FiveTuple& ft, std::string username, std::string realm,
                                      std::array<RelayEndpoint, 2> relays, uint64_t lifetime_ms, bool dont_fragment) {
    auto a = std::make_unique<Allocation>();
    a->id = shared_.next_allocation_id.fetch_add(1, std::memory_order_relaxed);
    a->five_tuple = ft;
    a->username = std::move(username);
    a->realm = std::move(realm);
    a->relays = relays;
    a->created_ms = clock_.now_ms();
    for (auto& r : a->relays) {
        r.expires_ms = r.active() ? a->created_ms + lifetime_ms : 0;
    }
    a->dont_fragment = dont_fragment;
    Allocation& ref = insert(std::move(a));
    log("allocation_created", ref);
    return ref;
}

Allocation& AllocationManager::insert(std::unique_ptr<Allocation> a) {
    changed(*a);
    const uint64_t bps = shared_.config.bandwidth_bps;
    if (bps != 0) {
        // Bytes per second, one second of burst (and at least one full datagram).
        const uint64_t rate = bps / 8;
        a->bandwidth = TokenBucket(rate, rate < 65536 ? 65536 : rate, clock_.now_ms());  // full, from now (a restored one's created_ms is in the past)
    }
    Allocation& ref = *a;
    by_id_[ref.id] = &ref;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        if (const auto* r = ref.relay(f)) {
            by_relay_[r->id] = RelayOwner{&ref, f};
        }
    }
    by_tuple_[ref.five_tuple] = std::move(a);
    shared_.allocations.fetch_add(1);
    if (ref.has_family(Family::kIPv4)) {
        shared_.allocations_v4.fetch_add(1);
    }
    if (ref.has_family(Family::kIPv6)) {
        shared_.allocations_v6.fetch_add(1);
    }
    arm_allocation_timer(ref.id, ref.next_expiry_ms());
    offload_for(ref).allocation_added(offload_view(ref, bps));
    return ref;
}

void AllocationManager::refresh(Allocation& a, uint64_t lifetime_ms, Family only) {
    changed(a);
    const uint64_t at = clock_.now_ms() + lifetime_ms;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        auto& r = a.relays[family_slot(f)];
        if (r.active() && (only == Family::kNone || only == f)) {
            r.expires_ms = at;
        }
    }
    // Extending needs no wheel operation (the pending timer re-arms itself);
    // shortening needs an earlier entry, which supersedes the pending one.
    if (const uint64_t next = a.next_expiry_ms(); next < a.timer_at_ms) {
        arm_allocation_timer(a.id, next);
    }
    log("allocation_refreshed", a);
}

void AllocationManager::remove_family(Allocation& a, Family f, bool expired) {
    auto& r = a.relays[family_slot(f)];
    if (!r.active()) {
        return;
    }
    changed(a);
    const RelayEndpoint gone = r;
    by_relay_.erase(r.id);
    (f == Family::kIPv4 ? shared_.allocations_v4 : shared_.allocations_v6).fetch_sub(1);
    r = RelayEndpoint{};
    // Its permissions and channels served only that relayed address (peers
    // of one family go through the relayed address of that family); the
    // channels' numbers and peers stay reserved as after an expiry (RFC 8656
    // section 12.2).
    const uint64_t now = clock_.now_ms();
    std::erase_if(a.permissions, [f](const auto& p) { return p.first.family == f; });
    for (auto it = a.channels.begin(); it != a.channels.end();) {
        if (it->second.peer.family == f) {
            a.channel_by_peer.erase(it->second.peer);
            a.quarantine.push_back(ChannelQuarantine{it->first, it->second.peer, now + kChannelQuarantineMs});
            it = a.channels.erase(it);
        } else {
            ++it;
        }
    }
    reannounce(a);  // offloaded state follows: the allocation without that family
    EndLine line = end_line(expired ? "relayed_address_expired" : "relayed_address_deleted", a);
    line.fields.insert(line.fields.begin() + 6, {"address", gone.addr.to_string()});  // after "relayed": what is left
    log_event(LogLevel::kInfo, line.event, line.fields);
    // Last: closing the socket flushes the loop's queued output, and a
    // TCP/TLS client connection whose write fails there ends (and removes)
    // this very allocation from inside the call (see remove()); nothing
    // touches `a` after it.
    close_relay(f, gone);
}

void AllocationManager::reannounce(const Allocation& a) {
    OffloadHook& hook = offload_for(a);
    hook.allocation_replaced(offload_view(a, shared_.config.bandwidth_bps));
    for (const auto& [peer, p] : a.permissions) {
        (void)p;
        if (offloadable(peer)) {
            hook.permission_added(a.id, peer);
        }
    }
    for (const auto& [ch, b] : a.channels) {
        if (channel_offloaded(a, b.peer)) {
            hook.channel_added(a.id, ch, b.peer);
        }
    }
}

void AllocationManager::release_resources(Allocation& a) {
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        auto& r = a.relays[family_slot(f)];
        if (r.active()) {
            by_relay_.erase(r.id);
            close_relay(f, r);
            (f == Family::kIPv4 ? shared_.allocations_v4 : shared_.allocations_v6).fetch_sub(1);
            r = RelayEndpoint{};
        }
    }
    shared_.quota.release(a.username);
    shared_.allocations.fetch_sub(1);
}

void AllocationManager::remove(Allocation& a, EndReason why) {
    // Out of the maps before anything else: closing its relay sockets flushes
    // the loop's queued output (SocketIo::close_relay), and a TCP or TLS
    // connection whose write fails there reports its end
    // (Server::on_client_closed) from inside this call, which must not find
    // the allocation again (it would be released twice, and then used after
    // being freed). `owned` keeps it alive until the end.
    auto owned = by_tuple_.extract(a.five_tuple);
    by_id_.erase(a.id);
    if (track_ && why != EndReason::kShutdown) {  // at shutdown the allocations stay saved for the next process
        dirty_.erase(a.id);
        removed_.push_back(a.id);
    }
    // Its end line, before the offload forgets it: the offload's share of
    // its usage comes with the line now, or the offload logs the line when
    // it has its final share.
    OffloadHook& hook = offload_for(a);
    EndLine line = end_line(why == EndReason::kDeleted ? "allocation_deleted"
                            : why == EndReason::kExpired ? "allocation_expired"
                            : why == EndReason::kConnectionClosed ? "allocation_connection_closed"
                            : why == EndReason::kOperator       ? "allocation_closed_by_operator"
                                                                  : "allocation_closed",
                            a);
    RelayUsage fast;
    if (why == EndReason::kShutdown && track_ && saved(a)) {
        // Saved for the next process, which goes on counting it (the fast
        // path's share from the dataplane's running totals): no usage here,
        // so that summing end lines counts nothing twice.
        line.fields.emplace_back("continues", "yes");
        log_event(LogLevel::kInfo, line.event, line.fields);
    } else if (!hook.defer_end(a.id, line, fast)) {
        log_end(line, fast);
    }
    for (const auto& [ch, b] : a.channels) {
        if (channel_offloaded(a, b.peer)) {
            hook.channel_removed(a.id, ch, b.peer);
        }
    }
    for (const auto& [peer, p] : a.permissions) {
        (void)p;
        if (offloadable(peer)) {
            hook.permission_removed(a.id, peer);
        }
    }
    hook.allocation_removed(a.id);
    release_resources(a);
    if (a.client_path != kNoRelay) {
        io_.close_client_path(a.client_path);
    }
}  // `owned` destroys `a`

void AllocationManager::move(Allocation& a, const FiveTuple& to) {
    const FiveTuple from = a.five_tuple;
    auto node = by_tuple_.extract(from);
    node.key() = to;
    by_tuple_.insert(std::move(node));
    a.five_tuple = to;
    a.moved = true;
    ++a.moves;
    changed(a);
    reannounce(a);  // the offload knows the allocation by its client 5-tuple
    log_event("allocation_moved", {{"id", std::to_string(a.id)},
                                   {"from", from.client.to_string()},
                                   {"to", to.client.to_string()},
                                   {"server", to.server.to_string()}});
}

void AllocationManager::add_permission(Allocation& a, const Address& peer) {
    set_permission(a, Allocation::permission_key(peer), clock_.now_ms() + kPermissionLifetimeMs);
}

void AllocationManager::set_permission(Allocation& a, const Address& key, uint64_t expires_ms) {
    changed(a);
    auto [it, inserted] = a.permissions.try_emplace(key);
    it->second.expires_ms = expires_ms;
    if (inserted && offloadable(key)) {
        OffloadHook& hook = offload_for(a);
        hook.permission_added(a.id, key);
        // Channels to this IP that waited for it (channel_offloaded): a
        // binding made before it, or one that outlived the IP's last one.
        for (const auto& [ch, b] : a.channels) {
            if (key.same_ip(b.peer)) {
                hook.channel_added(a.id, ch, b.peer);
            }
        }
    }
    if (!it->second.timer_armed) {
        it->second.timer_armed = true;
        arm_permission_timer(a.id, key, it->second.expires_ms);
    }
}

void AllocationManager::bind_channel(Allocation& a, uint16_t channel, const Address& peer_in) {
    const Address peer = peer_in.normalised();
    set_channel(a, channel, peer, clock_.now_ms() + kChannelLifetimeMs);
    add_permission(a, peer);
}

void AllocationManager::set_channel(Allocation& a, uint16_t channel, const Address& peer, uint64_t expires_ms) {
    changed(a);
    auto [it, inserted] = a.channels.try_emplace(channel);
    it->second.peer = peer;
    it->second.expires_ms = expires_ms;
    a.channel_by_peer[peer] = channel;
    if (inserted && channel_offloaded(a, peer)) {  // else with the permission (set_permission)
        offload_for(a).channel_added(a.id, channel, peer);
    }
    if (!it->second.timer_armed) {
        it->second.timer_armed = true;
        arm_channel_timer(a.id, channel, it->second.expires_ms);
    }
}

void AllocationManager::arm_allocation_timer(uint64_t id, uint64_t at_ms) {
    if (auto it = by_id_.find(id); it != by_id_.end()) {
        it->second->timer_at_ms = at_ms;
    }
    wheel_.schedule(at_ms, [this, id, at_ms] { on_allocation_timer(id, at_ms); });
}

void AllocationManager::arm_permission_timer(uint64_t id, const Address& key, uint64_t at_ms) {
    wheel_.schedule(at_ms, [this, id, key] { on_permission_timer(id, key); });
}

void AllocationManager::arm_channel_timer(uint64_t id, uint16_t channel, uint64_t at_ms) {
    wheel_.schedule(at_ms, [this, id, channel] { on_channel_timer(id, channel); });
}

void AllocationManager::on_allocation_timer(uint64_t id, uint64_t at_ms) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) {
        return;
    }
    Allocation& a = *it->second;
    if (a.timer_at_ms != at_ms) {
        return;  // superseded by an earlier entry
    }
    const uint64_t now = clock_.now_ms();
    if (a.expires_ms() <= now) {
        remove(a, EndReason::kExpired);
        return;
    }
    // A dual allocation whose relayed address of one family was not
    // refreshed: that address ends, the other lives on.
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        const RelayEndpoint* r = a.relay(f);
        if (r != nullptr && r->expires_ms <= now) {
            remove_family(a, f, true);
            break;  // at most one: a.expires_ms() > now, so the other is unexpired
        }
    }
    // remove_family may have ended the allocation (its client connection
    // closed while the socket's output was flushed): look it up again.
    if (auto again = by_id_.find(id); again != by_id_.end()) {
        arm_allocation_timer(id, again->second->next_expiry_ms());  // refreshed meanwhile, or the other family's
    }
}

void AllocationManager::on_permission_timer(uint64_t id, const Address& key) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) {
        return;
    }
    Allocation& a = *it->second;
    auto p = a.permissions.find(key);
    if (p == a.permissions.end()) {
        return;
    }
    p->second.timer_armed = false;
    if (p->second.expires_ms > clock_.now_ms()) {
        p->second.timer_armed = true;
        arm_permission_timer(id, key, p->second.expires_ms);
        return;
    }
    changed(a);
    if (offloadable(key)) {
        // Its channels first (channel_offloaded): they stay bound, on the
        // socket path, which refuses their data without the permission.
        OffloadHook& hook = offload_for(a);
        for (const auto& [ch, b] : a.channels) {
            if (key.same_ip(b.peer)) {
                hook.channel_removed(id, ch, b.peer);
            }
        }
        hook.permission_removed(id, key);
    }
    a.permissions.erase(p);
}

void AllocationManager::on_channel_timer(uint64_t id, uint16_t channel) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) {
        return;
    }
    Allocation& a = *it->second;
    auto c = a.channels.find(channel);
    if (c == a.channels.end()) {
        return;
    }
    c->second.timer_armed = false;
    const uint64_t now = clock_.now_ms();
    if (c->second.expires_ms > now) {
        c->second.timer_armed = true;
        arm_channel_timer(id, channel, c->second.expires_ms);
        return;
    }
    // RFC 8656 section 12.2: number and peer stay reserved for 5 minutes
    // after expiry, counted from the expiry itself (not from when the timer ran).
    changed(a);
    const ChannelBinding b = c->second;
    a.channels.erase(c);
    a.channel_by_peer.erase(b.peer);
    std::erase_if(a.quarantine, [now](const ChannelQuarantine& q) { return q.until_ms <= now; });
    a.quarantine.push_back(ChannelQuarantine{channel, b.peer, b.expires_ms + kChannelQuarantineMs});
    if (channel_offloaded(a, b.peer)) {
        offload_for(a).channel_removed(id, channel, b.peer);
    }
}

SavedAllocation AllocationManager::saved_view(const Allocation& a) const {
    const uint64_t now = clock_.now_ms();
    const uint64_t unix_now = clock_.unix_ms();
    auto at = [&](uint64_t expires) { return unix_now + (expires > now ? expires - now : 0); };
    SavedAllocation s;
    s.id = a.id;
    s.five_tuple = a.five_tuple;
    s.username = a.username;
    s.realm = a.realm;
    s.relayed = relayed_addresses(a);
    s.expires_unix_ms = at(a.expires_ms());
    for (size_t i = 0; i < a.relays.size(); ++i) {
        s.relayed_expires_unix_ms[i] = a.relays[i].active() ? at(a.relays[i].expires_ms) : 0;
    }
    s.created_unix_ms = unix_now - std::min(unix_now, a.age_ms(now));
    // The control plane's share, and the offload's that a next process
    // cannot get back from it (a dataplane restarted since the install).
    s.usage = a.relayed + offload_for(a).offloaded_carry(a.id);
    s.dont_fragment = a.dont_fragment;
    s.mobile = a.mobile;
    s.moved = a.moved;
    s.permissions.reserve(a.permissions.size());
    for (const auto& [key, p] : a.permissions) {
        if (p.expires_ms > now) {
            s.permissions.push_back(SavedPermission{key, at(p.expires_ms)});
        }
    }
    s.channels.reserve(a.channels.size());
    for (const auto& [ch, b] : a.channels) {
        if (b.expires_ms > now) {
            s.channels.push_back(SavedChannel{ch, b.peer, at(b.expires_ms)});
        }
    }
    return s;
}

void AllocationManager::snapshot(std::vector<SavedAllocation>& out) const {
    for (const auto& [ft, a] : by_tuple_) {
        if (saved(*a)) {
            out.push_back(saved_view(*a));
        }
    }
}

void AllocationManager::take_changes(std::vector<SavedAllocation>& changed, std::vector<uint64_t>& removed) {
    for (const uint64_t id : dirty_) {
        if (auto it = by_id_.find(id); it != by_id_.end() && saved(*it->second)) {
            changed.push_back(saved_view(*it->second));
        }
    }
    dirty_.clear();
    removed.insert(removed.end(), removed_.begin(), removed_.end());
    removed_.clear();
}

void AllocationManager::log_not_restored(const SavedAllocation& s, uint64_t unix_now_ms, const std::string& why) {
    // It lived until now, or until it expired while no process ran.
    const uint64_t age_s = saved_age_ms(s, std::min(unix_now_ms, s.expires_unix_ms)) / 1000;
    EndLine e;
    e.event = "allocation_not_restored";
    e.fields = {{"id", std::to_string(s.id)},
                {"client", s.five_tuple.client.to_string()},
                {"server", s.five_tuple.server.to_string()},
                {"transport", std::string(transport_name(s.five_tuple.transport))},
                {"user", s.username},
                {"relayed", relays_string(s.relayed)},
                {"age_s", std::to_string(age_s)},
                {"reason", why}};
    e.relayed = s.usage;
    log_end(e, {}, LogLevel::kWarn);
}

std::string AllocationManager::restore(const SavedAllocation& s, bool client_path) {
    std::string why = restore_or_why(s, client_path);
    if (!why.empty()) {
        log_not_restored(s, clock_.unix_ms(), why);
    }
    return why;
}

std::string AllocationManager::restore_or_why(const SavedAllocation& s, bool client_path) {
    const uint64_t unix_now = clock_.unix_ms();
    if (s.expires_unix_ms <= unix_now) {
        return "expired while no control plane ran";
    }
    if (s.five_tuple.transport != Transport::kUdp) {
        return "not a UDP allocation";
    }
    // Its client reaches it only through a UDP listener this process has:
    // one since removed from [server].listen would leave it holding its
    // relayed ports and the user's quota until it expires, unreachable.
    {
        std::vector<Address> udp = shared_.config.listen;
        const auto alternates = nat_extra_listeners(shared_.config);
        udp.insert(udp.end(), alternates.begin(), alternates.end());
        const Address server = s.five_tuple.server.normalised();
        if (std::none_of(udp.begin(), udp.end(), [&](const Address& l) { return l.normalised() == server; })) {
            return "its server address " + server.to_string() + " is not a UDP listener here";
        }
    }
    if (s.id == UINT64_MAX) {
        return "its id is out of range";  // the next id would wrap to 0
    }
    if (find(s.five_tuple) != nullptr) {
        return "its 5-tuple already has an allocation";
    }
    if (by_id_.count(s.id) != 0) {
        return "its id is already in use";
    }
    std::array<RelayEndpoint, 2> relays{};
    auto undo = [&] {
        for (Family f : {Family::kIPv4, Family::kIPv6}) {
            close_relay(f, relays[family_slot(f)]);
        }
    };
    const uint64_t now = clock_.now_ms();
    const uint64_t max_ms = uint64_t{shared_.config.max_lifetime_s} * 1000;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        const Address& addr = s.relayed[family_slot(f)];
        // Each relayed address's own lifetime (0 in a file before version
        // 3: the allocation's); one that ran out while no process ran is
        // not re-opened.
        const uint64_t own = s.relayed_expires_unix_ms[family_slot(f)];
        const uint64_t expires = own != 0 ? std::min(own, s.expires_unix_ms) : s.expires_unix_ms;
        if (addr.family == Family::kNone || expires <= unix_now) {
            continue;
        }
        const auto ip = shared_.config.relay_ip(f);
        if (!ip || ip->with_port(0) != addr.with_port(0)) {
            undo();
            return "relayed address " + addr.to_string() + " is not on a configured relay IP";
        }
        if (!shared_.ports.take(f, addr.port)) {
            undo();
            return "relayed port " + std::to_string(addr.port) + " is outside the port range or taken";
        }
        RelayId id = kNoRelay;
        if (io_.open_relay(addr, s.dont_fragment, id) != OpenResult::kOk) {
            shared_.ports.release(f, addr.port);
            undo();
            return "cannot bind relayed address " + addr.to_string();
        }
        relays[family_slot(f)] = RelayEndpoint{addr, id};
        // What is left of it, at most what this configuration and RFC 8656
        // grant (a file is not trusted to say more).
        relays[family_slot(f)].expires_ms = now + std::min(expires - unix_now, max_ms);
    }
    if (!relays[0].active() && !relays[1].active()) {
        return "no relayed address";
    }
    if (shared_.quota.acquire(s.username) != QuotaResult::kOk) {
        undo();
        return "user \"" + s.username + "\" is over its allocation quota";
    }
    auto a = std::make_unique<Allocation>();
    a->id = s.id;
    a->five_tuple = s.five_tuple;
    a->username = s.username;
    a->realm = s.realm;
    a->relays = relays;
    // Its age and the control plane's share of its usage go on from the
    // previous process's (unknown in a version 1 file: from now); the time
    // no process ran counts in its age, as in its lifetime.
    const uint64_t age = saved_age_ms(s, unix_now);
    a->created_ms = now - std::min(now, age);
    a->age_before_ms = age - std::min(now, age);
    a->relayed = s.usage;
    a->dont_fragment = s.dont_fragment;
    // RFC 8016: the previous process's tickets do not open here (its key is
    // gone); the client's next Refresh showing one gets a new ticket. A moved
    // allocation's 5-tuple may hash to another loop: a client path brings it.
    a->mobile = s.mobile;
    // One given a client path keeps it in every later process too (saved
    // as moved): it lives in the loop of the hash that first placed it.
    a->moved = s.moved || client_path;
    if (a->moved) {
        a->client_path = io_.open_client_path(s.five_tuple);
    }
    // Later allocations must not reuse a restored id (the dataplane keys its
    // entries by id).
    uint64_t next = shared_.next_allocation_id.load(std::memory_order_relaxed);
    while (next <= s.id &&
           !shared_.next_allocation_id.compare_exchange_weak(next, s.id + 1, std::memory_order_relaxed)) {
    }
    Allocation& ref = insert(std::move(a));
    // The peer policy is this process's: a permission or channel it would
    // refuse now (a range denied since, e.g. private peers after an upgrade)
    // does not come back.
    const auto policy = shared_.policy.get();
    // Nor one for a peer of a family whose relayed address did not come back.
    auto served = [&ref](const Address& peer) { return peer.family != Family::kNone && ref.has_family(peer.family); };
    // And within what CreatePermission and ChannelBind would grant now: the
    // configured counts (lowered since, or a file that says more) and the
    // channel number range; a number outside it would frame the peer's data
    // as something else (0x0001 reads as a STUN Binding request header).
    const ChannelRange range = shared_.config.strict_channel_range ? ChannelRange::kRfc8656 : ChannelRange::kRfc5766;
    for (const auto& p : s.permissions) {
        const Address key = Allocation::permission_key(p.peer);
        if (p.expires_unix_ms > unix_now && served(key) && policy->permitted_ip(p.peer) &&
            (ref.permissions.size() < shared_.config.max_permissions || ref.permissions.count(key) != 0)) {
            set_permission(ref, key, now + std::min(p.expires_unix_ms - unix_now, kPermissionLifetimeMs));
        }
    }
    for (const auto& c : s.channels) {
        const Address peer = c.peer.normalised();
        if (c.expires_unix_ms > unix_now && served(peer) && policy->permitted_transport(peer) &&
            is_valid_channel(c.number, range) && ref.channels.size() < shared_.config.max_channels &&
            ref.can_bind(c.number, peer, now) == Allocation::BindCheck::kOk) {
            set_channel(ref, c.number, peer, now + std::min(c.expires_unix_ms - unix_now, kChannelLifetimeMs));
        }
    }
    log("allocation_restored", ref);
    return {};
}

void AllocationManager::for_each(const std::function<void(const Allocation&)>& fn) const {
    for (const auto& [ft, a] : by_tuple_) {
        (void)ft;
        fn(*a);
    }
}

OffloadAllocation AllocationManager::offload_view(const Allocation& a, uint64_t bandwidth_bps) {
    OffloadAllocation v;
    v.id = a.id;
    v.five_tuple = a.five_tuple;
    v.relayed = relayed_addresses(a);
    v.bandwidth_bps = bandwidth_bps;
    return v;
}

void AllocationManager::log(std::string_view event, const Allocation& a) {
    log_event(LogLevel::kInfo, event, end_line(event, a).fields);
}

EndLine AllocationManager::end_line(std::string_view event, const Allocation& a) const {
    const uint64_t now = clock_.now_ms();
    const uint64_t expires = a.expires_ms();
    const uint64_t remaining = expires > now ? (expires - now) / 1000 : 0;
    EndLine e;
    e.event = event;
    e.fields = {{"id", std::to_string(a.id)},
                {"client", a.five_tuple.client.to_string()},
                {"server", a.five_tuple.server.to_string()},
                {"transport", std::string(transport_name(a.five_tuple.transport))},
                {"user", a.username},
                {"relayed", relays_string(relayed_addresses(a))},
                {"lifetime_s", std::to_string(remaining)},
                {"permissions", std::to_string(a.permissions.size())},
                {"channels", std::to_string(a.channels.size())},
                {"age_s", std::to_string(a.age_ms(now) / 1000)}};
    e.relayed = a.relayed;
    return e;
}

}  // namespace turn::cp
