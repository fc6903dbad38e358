#include "flow/apply.h"

#include <bit>
#include <cstring>
#include <tuple>

namespace dp {

using turn::ipc::WireAddress;
namespace ipc = turn::ipc;

namespace {

// Builds the key (kind, a, b[, port], channel) in the type of a's family and
// calls fn with it; -1 for addresses that make no key (an IPv6 `a` the
// tables have no index for: flow/key.h). b may be family 0; otherwise it must
// be of a's family.
template <typename Fn>
int with_key(const FlowTables& t, KeyKind kind, const WireAddress& a, const WireAddress& b, bool with_b_port,
             uint16_t channel, Fn&& fn) {
    if ((a.family != 4 && a.family != 6) || (b.family != 0 && b.family != a.family)) {
        return -1;
    }
    auto fill = [&](auto& k, size_t ilen) {
        k.a_port = rte_cpu_to_be_16(a.port);
        if (b.family != 0) {
            std::memcpy(&k.b_ip, b.ip, ilen);
        }
        k.b_port = with_b_port ? rte_cpu_to_be_16(b.port) : 0;
        k.channel = rte_cpu_to_be_16(channel);
        k.kind = kind;
    };
    if (a.family == 4) {
        Key4 k{};
        std::memcpy(&k.a_ip, a.ip, 4);
        fill(k, 4);
        return fn(static_cast<const Key4&>(k));
    }
    Key6 k{};
    if (!t.key6_index(kind, a.ip, rte_cpu_to_be_16(a.port), &k.a)) {
        return -1;
    }
    fill(k, 16);
    return fn(static_cast<const Key6&>(k));
}

// Adds (data != nullptr) or deletes one key. A delete with only_alloc set
// removes the key only while it still names that allocation: two
// allocations can share a client 5-tuple for a while (a new id for the same
// client before the old one is deleted or swept), and the later add owns
// the kClient/kChannelIn keys.
int key_op(FlowTables& t, KeyKind kind, const WireAddress& a, const WireAddress& b, bool with_b_port,
           uint16_t channel, void* data, uint32_t only_alloc = UINT32_MAX, const void* only_data = nullptr) {
    return with_key(t, kind, a, b, with_b_port, channel, [&](const auto& k) {
        if (data == nullptr) {
            t.del(k, only_alloc, only_data);
            return 0;
        }
        return t.add(k, data);
    });
}

// The allocation a key names now (UINT32_MAX: none).
uint32_t key_alloc(FlowTables& t, KeyKind kind, const WireAddress& a, const WireAddress& b, bool with_b_port,
                   uint16_t channel) {
    uint32_t alloc = UINT32_MAX;
    with_key(t, kind, a, b, with_b_port, channel, [&](const auto& k) {
        alloc = t.alloc_of(k);
        return 0;
    });
    return alloc;
}

// The key's value now (nullptr: none).
const void* key_data(FlowTables& t, KeyKind kind, const WireAddress& a, const WireAddress& b, bool with_b_port,
                     uint16_t channel) {
    const void* d = nullptr;
    with_key(t, kind, a, b, with_b_port, channel, [&](const auto& k) {
        d = t.data_of(k);
        return 0;
    });
    return d;
}

std::array<uint8_t, 40> perm_key(const WireAddress& relayed, const WireAddress& peer) {
    std::array<uint8_t, 40> k{};
    WireAddress r = relayed;
    WireAddress p = peer;
    p.port = 0;
    std::memcpy(k.data(), &r, 20);
    std::memcpy(k.data() + 20, &p, 20);
    return k;
}

// Whether the allocation's relayed address of family `fam` is offloaded: the
// family's, with a port. A relayed "port 0" (which WireAddress::valid()
// lets through) is treated as no relayed address of that family: the line
// says none (relayed4_port / relayed6_port 0), so its last bytes are slot6
// for IPv4, and no word or slot names it.
bool offloaded(const WireAddress& relayed, uint8_t fam) { return relayed.family == fam && relayed.port != 0; }

bool same_addresses(const ipc::AllocationAdd& x, const ipc::AllocationAdd& y) {
    return std::memcmp(&x.client, &y.client, sizeof(WireAddress) * 4) == 0;
}

}  // namespace

Applier::Alloc* Applier::find(uint64_t id) {
    auto it = allocs_.find(id);
    if (it == allocs_.end()) {
        stats_.unknown_alloc++;
        return nullptr;
    }
    return &it->second;
}

bool Applier::apply(std::span<const uint8_t> d, const std::function<void(std::span<const uint8_t>)>& reply) {
    const auto h = ipc::peek(d);
    if (!h) {
        stats_.malformed++;
        return false;
    }
    const uint64_t full_before = stats_.table_full;
    const uint64_t unknown_before = stats_.unknown_alloc;
    const bool ok = dispatch(h->type, d, reply);
    if (ok) {
        stats_.applied++;
    } else {
        stats_.malformed++;
    }
    if (ok && resyncing_) {
        const bool add = h->type == ipc::MsgType::kAllocationAdd || h->type == ipc::MsgType::kPermissionAdd ||
                         h->type == ipc::MsgType::kChannelAdd;
        const bool del = h->type == ipc::MsgType::kAllocationDel || h->type == ipc::MsgType::kPermissionDel ||
                         h->type == ipc::MsgType::kChannelDel;
        // Refused for a full table, or for an allocation a full table
        // refused earlier in this resync (it may be in after the sweep).
        const bool refused = stats_.table_full != full_before || stats_.unknown_alloc != unknown_before;
        if (add && refused && retry_.size() < kMaxRetries) {
            retry_.emplace_back(d.begin(), d.end());
        } else if (del && !retry_.empty()) {
            // A delete inside a resync (the control plane sends none, but
            // order must hold): the allocation's kept Adds are not retried.
            std::erase_if(retry_, [&](const std::vector<uint8_t>& r) {
                return std::memcmp(r.data() + sizeof(ipc::Header), d.data() + sizeof(ipc::Header), 8) == 0;
            });
        }
    }
    t_.reclaim();
    return ok;
}

bool Applier::dispatch(ipc::MsgType type, std::span<const uint8_t> d,
                       const std::function<void(std::span<const uint8_t>)>& reply) {
    bool ok = true;
    auto run = [&]<typename M>(M*) {
        if (auto m = ipc::decode<M>(d)) {
            on(*m);
        } else {
            ok = false;
        }
    };
    switch (type) {
    case ipc::MsgType::kSettings:
        if (auto m = ipc::decode<ipc::Settings>(d)) {
            on(*m);
            if (reply) {  // acknowledged: the control plane can tell a dataplane that ignores them
                ipc::Settings ack = *m;
                reply(ipc::encode(ack, ++seq_));
            }
        } else {
            ok = false;
        }
        break;
    case ipc::MsgType::kExternalIps:
        if (auto m = ipc::decode<ipc::ExternalIps>(d)) {
            // Echoed only when applied: until then the control plane keeps
            // external-IP peers on the socket path (protocol.h).
            if (on(*m) && reply) {
                ipc::ExternalIps ack = *m;
                reply(ipc::encode(ack, ++seq_));
            }
        } else {
            ok = false;
        }
        break;
    case ipc::MsgType::kResyncBegin: run(static_cast<ipc::ResyncBegin*>(nullptr)); break;
    case ipc::MsgType::kResyncEnd: run(static_cast<ipc::ResyncEnd*>(nullptr)); break;
    case ipc::MsgType::kAllocationAdd: run(static_cast<ipc::AllocationAdd*>(nullptr)); break;
    case ipc::MsgType::kAllocationDel: run(static_cast<ipc::AllocationDel*>(nullptr)); break;
    case ipc::MsgType::kPermissionAdd: run(static_cast<ipc::PermissionAdd*>(nullptr)); break;
    case ipc::MsgType::kPermissionDel: run(static_cast<ipc::PermissionDel*>(nullptr)); break;
    case ipc::MsgType::kChannelAdd: run(static_cast<ipc::ChannelAdd*>(nullptr)); break;
    case ipc::MsgType::kChannelDel: run(static_cast<ipc::ChannelDel*>(nullptr)); break;
    case ipc::MsgType::kLimitSet: run(static_cast<ipc::LimitSet*>(nullptr)); break;
    case ipc::MsgType::kCountersRequest:
        if (ipc::decode<ipc::CountersRequest>(d) && reply) {
            report_counters(reply);
        } else {
            ok = false;
        }
        break;
    default: ok = false; break;
    }
    return ok;
}

void Applier::on(const ipc::Settings& m) {
    t_.tos_rule.store(pack_tos_rule(m.tos_keep, m.tos_set), std::memory_order_relaxed);
    settings_seen_ = true;
}

bool Applier::on(const ipc::ExternalIps& m) {
    external_seen_ = true;
    bool ok = true;
    for (const auto& [ext, relay, fam] : {std::tuple{&m.external_v4, &m.relay_v4, uint8_t{4}},
                                          std::tuple{&m.external_v6, &m.relay_v6, uint8_t{6}}}) {
        if (ext->family != 0 && t_.set_nat(fam, ext->ip, relay->ip)) {
            continue;
        }
        // No pair, or one NatIps has no room for: none current. Whatever was
        // current came from an earlier control plane; this one keeps its
        // external-IP peers on the socket path without the echo, and may
        // offload a peer on that old address as an ordinary one.
        t_.set_nat(fam, nullptr, nullptr);
        ok = ok && ext->family == 0;
    }
    if (!ok) {
        stats_.table_full++;
    }
    return ok;
}

void Applier::on(const ipc::ResyncBegin& m) {
    // A control plane sends Settings right before each ResyncBegin; one that
    // sent none since the last resync predates them (an older turn-relay
    // after a newer one): its rule is "keep", not what the other one set.
    if (!settings_seen_) {
        t_.tos_rule.store(kTosKeepAll, std::memory_order_relaxed);
    }
    settings_seen_ = false;
    // Likewise ExternalIps, which a control plane without external IPs
    // does not send: what an earlier one set no longer holds.
    if (!external_seen_) {
        t_.set_nat(4, nullptr, nullptr);
        t_.set_nat(6, nullptr, nullptr);
    }
    external_seen_ = false;
    gen_ = m.generation;
    reusable_.clear();  // a Del before this resync is another connection's word
    resyncing_ = true;
    retry_.clear();
}

void Applier::on(const ipc::ResyncEnd& m) {
    if (m.generation != gen_) {
        return;  // not the resync we started: sweeping now would drop live state
    }
    for (auto it = allocs_.begin(); it != allocs_.end();) {
        Alloc& a = it->second;
        if (a.gen != gen_) {
            finish(it->first, a, false);
            stats_.swept++;
            it = allocs_.erase(it);
            continue;
        }
        for (auto p = a.perms.begin(); p != a.perms.end();) {
            if (p->second.gen != gen_) {
                remove_perm(a, p->second);
                stats_.swept++;
                p = a.perms.erase(p);
            } else {
                ++p;
            }
        }
        for (auto c = a.chans.begin(); c != a.chans.end();) {
            if (c->second.gen != gen_) {
                remove_chan(a, c->first, c->second);
                stats_.swept++;
                c = a.chans.erase(c);
            } else {
                ++c;
            }
        }
        ++it;
    }
    // What the swept entries held is free now (indices, ChannelValues and
    // hash slots after their grace period: reclaim first), so the resync's
    // refused Adds get a second try, in the order they came.
    resyncing_ = false;
    t_.reclaim();
    const auto kept = std::move(retry_);
    retry_.clear();
    for (const auto& d : kept) {
        stats_.resync_retried++;
        dispatch(ipc::peek(d)->type, d, {});  // an Add apply() accepted: its header is valid
    }
}

bool Applier::install_alloc(Alloc& a) {
    const ipc::AllocationAdd& m = a.msg;
    Allocation& r = t_.allocs[a.idx];
    const int listen = t_.add_listen(m.listen.family, m.listen.ip, rte_cpu_to_be_16(m.listen.port));
    const int relayed6_ip = m.relayed_v6.family == 6 ? t_.relay_ip(6, m.relayed_v6.ip) : 0;
    if (listen < 0 || relayed6_ip < 0) {
        return false;  // nothing published: the allocation stays on the slow path
    }
    std::memset(r.client_ip, 0, 16);
    std::memcpy(r.client_ip, m.client.ip, 16);
    r.client_port = rte_cpu_to_be_16(m.client.port);
    r.listen = static_cast<uint8_t>(listen);
    r.family = m.client.family;
    r.relayed4_port = 0;
    r.relayed6_port = 0;
    r.relayed6_ip = static_cast<uint8_t>(relayed6_ip);
    // The index was retired (grace period) before this reuse: no worker
    // reads the slots (v4 or slot6, the same bytes) now.
    std::memset(static_cast<void*>(&r.v4), 0, sizeof(r.v4));
    // Only with a port: v4.ip in a line whose relayed4_port is 0 would be
    // slot6's channel number and port to the workers.
    if (offloaded(m.relayed_v4, 4)) {
        std::memcpy(&r.v4.ip, m.relayed_v4.ip, 4);
        r.relayed4_port = rte_cpu_to_be_16(m.relayed_v4.port);
    }
    if (offloaded(m.relayed_v6, 6)) {
        r.relayed6_port = rte_cpu_to_be_16(m.relayed_v6.port);
    }
    r.slot_busy = 0;
    r.hashed.store(0, std::memory_order_relaxed);
    r.byte_ticks.store(byte_ticks_of(m.bandwidth_bps, t_.tsc_hz), std::memory_order_relaxed);
    r.tat.store(0, std::memory_order_relaxed);  // a full bucket
    a.described = true;
    return publish_alloc(a);
}

bool Applier::publish_alloc(Alloc& a) {
    const ipc::AllocationAdd& m = a.msg;
    Allocation& r = t_.allocs[a.idx];
    // The entries below publish the allocation (release in rte_hash add and
    // in the relayed-port stores).
    // Another live allocation with this client 5-tuple (an id the control
    // plane has not deleted yet, e.g. during a resync): this one takes the
    // key, so that one must stop being a client-cache answer.
    const uint32_t prev = key_alloc(t_, KeyKind::kClient, m.listen, m.client, true, 0);
    if (prev != UINT32_MAX && prev != a.idx) {
        t_.allocs[prev].live.store(0, std::memory_order_release);
    }
    bool ok = prev == a.idx || key_op(t_, KeyKind::kClient, m.listen, m.client, true, 0, inline_data(a.idx, 0)) == 0;
    if (ok) {
        // Workers' caches accept the index only while live (acquire, then
        // the fields above), and only while the kClient key exists: a key
        // the full table refused leaves the allocation off the fast path
        // even for a cache entry left from this index's previous use by the
        // same client.
        r.live.store(1, std::memory_order_release);
    }
    // (Storing the index again where the word has it already changes nothing.)
    // No word for a relayed port 0 (offloaded()): a worker reaching such a
    // line by an IPv4 word would read its slot6 as IPv4 slots.
    if (offloaded(m.relayed_v4, 4)) {
        ok = t_.set_relayed(4, m.relayed_v4.ip, rte_cpu_to_be_16(m.relayed_v4.port), a.idx) >= 0 && ok;
    }
    if (offloaded(m.relayed_v6, 6)) {
        ok = t_.set_relayed(6, m.relayed_v6.ip, rte_cpu_to_be_16(m.relayed_v6.port), a.idx) >= 0 && ok;
    }
    return ok;
}

void Applier::on(const ipc::AllocationAdd& m) {
    auto it = allocs_.find(m.alloc_id);
    if (it != allocs_.end()) {
        Alloc& a = it->second;
        a.gen = gen_;
        if (same_addresses(a.msg, m)) {  // refresh (resync): keep entries, update the limit
            a.msg = m;
            set_limit(t_.allocs[a.idx], m.bandwidth_bps);
            // And take back the client 5-tuple and relayed address if an
            // allocation added after this one took them (a duplicate the
            // control plane has since deleted, or one a resync sweeps): the
            // latest Add is the control plane's word.
            if (a.described && !publish_alloc(a)) {
                stats_.table_full++;
            }
            return;
        }
        // Addresses changed: another allocation under this id (a control
        // plane whose ids collide with an earlier one's; turn-relay's start
        // from its start time, so this should not happen). The old one's
        // final goes into the next report; this one counts from zero.
        finish(it->first, a, false);
        allocs_.erase(it);
    }
    const uint32_t idx = t_.new_alloc();
    if (idx == UINT32_MAX) {
        stats_.table_full++;
        return;
    }
    Alloc a{idx, gen_, m, {}, {}, 0};
    if (auto f = reusable_.find(m.alloc_id); f != reusable_.end()) {
        // Deleted and added again since the last report (the control plane
        // re-announces a moved allocation with a Del and an Add): one
        // allocation, one count that only grows.
        a.base = f->second.c;
        if (f->second.at != SIZE_MAX) {
            finals_[f->second.at].taken = true;
        }
        reusable_.erase(f);
    }
    if (!install_alloc(a)) {
        stats_.table_full++;
    }
    allocs_.emplace(m.alloc_id, std::move(a));
}

void Applier::remove_alloc(Alloc& a) {
    // First, so no worker's ClientCache accepts the index once the kClient
    // key below is gone (flow/client_cache.h).
    t_.allocs[a.idx].live.store(0, std::memory_order_release);
    for (auto& [ch, c] : a.chans) {
        remove_chan(a, ch, c, false);
    }
    for (auto& [k, p] : a.perms) {
        remove_perm(a, p);
    }
    const ipc::AllocationAdd& m = a.msg;
    key_op(t_, KeyKind::kClient, m.listen, m.client, true, 0, nullptr, a.idx);  // unless a newer allocation took it
    // Every key and relayed address only while it is still this
    // allocation's: another may have been given it since (a relayed port the
    // control plane reused while the link was down, swept here afterwards).
    if (m.relayed_v4.family == 4) {
        t_.clear_relayed(4, m.relayed_v4.ip, rte_cpu_to_be_16(m.relayed_v4.port), a.idx);
    }
    if (m.relayed_v6.family == 6) {
        t_.clear_relayed(6, m.relayed_v6.ip, rte_cpu_to_be_16(m.relayed_v6.port), a.idx);
    }
    t_.retire_alloc(a.idx);
}

void Applier::on(const ipc::AllocationDel& m) {
    auto it = allocs_.find(m.alloc_id);
    if (it == allocs_.end()) {
        stats_.unknown_alloc++;
        return;
    }
    finish(it->first, it->second, true);
    allocs_.erase(it);
}

void Applier::on(const ipc::PermissionAdd& m) {
    Alloc* a = find(m.alloc_id);
    if (a == nullptr) {
        return;
    }
    const auto k = perm_key(m.relayed, m.peer);
    auto [it, inserted] = a->perms.try_emplace(k, Perm{m.relayed, m.peer, gen_});
    it->second.gen = gen_;
    // New, or a refresh whose key another allocation on the same relayed
    // address took since: (re)published as this allocation's.
    if ((inserted || key_alloc(t_, KeyKind::kPermission, m.relayed, m.peer, false, 0) != a->idx) &&
        key_op(t_, KeyKind::kPermission, m.relayed, m.peer, false, 0, inline_data(a->idx, 0)) != 0) {
        stats_.table_full++;
        a->perms.erase(it);
    }
}

void Applier::remove_perm(const Alloc& a, const Perm& p) {
    key_op(t_, KeyKind::kPermission, p.relayed, p.peer, false, 0, nullptr, a.idx);
}

void Applier::on(const ipc::PermissionDel& m) {
    Alloc* a = find(m.alloc_id);
    if (a == nullptr) {
        return;
    }
    auto it = a->perms.find(perm_key(m.relayed, m.peer));
    if (it != a->perms.end()) {
        remove_perm(*a, it->second);
        a->perms.erase(it);
    }
}

void Applier::remove_chan(Alloc& a, uint16_t channel, const Chan& c, bool retire_slot) {
    Allocation& r = t_.allocs[a.idx];
    if (c.slot >= 0) {
        // Both directions stop at once; the peer fields stay as they are
        // until the slot's grace period has passed.
        (r.relayed4_port != 0 ? r.v4.slots[c.slot].channel_be : r.slot6.channel_be).store(0, std::memory_order_release);
        if (retire_slot) {
            t_.retire_slot(a.idx, static_cast<uint32_t>(c.slot));
        }
        return;
    }
    // Each only while it is this channel's: another channel (of this
    // allocation, rebinding the peer, or of another on the same relayed
    // address) may have taken the peer side since, and an allocation with
    // the same client 5-tuple the client side.
    key_op(t_, KeyKind::kChannelIn, a.msg.listen, a.msg.client, true, channel, nullptr, a.idx);
    key_op(t_, KeyKind::kChannelOut, c.relayed, c.peer, true, 0, nullptr, UINT32_MAX,
           inline_data(a.idx, rte_cpu_to_be_16(channel)));
    if (a.hashed > 0 && --a.hashed == 0) {
        r.hashed.store(0, std::memory_order_release);
    }
}

void Applier::on(const ipc::ChannelAdd& m) {
    Alloc* a = find(m.alloc_id);
    if (a == nullptr) {
        return;
    }
    auto it = a->chans.find(m.channel);
    if (it != a->chans.end()) {
        if (std::memcmp(&it->second.peer, &m.peer, sizeof(WireAddress)) == 0 &&
            std::memcmp(&it->second.relayed, &m.relayed, sizeof(WireAddress)) == 0) {
            it->second.gen = gen_;  // refresh
            if (it->second.slot < 0 && !republish_chan(*a, m.channel, it->second)) {
                stats_.table_full++;
                remove_chan(*a, m.channel, it->second);
                a->chans.erase(it);
            }
            return;
        }
        remove_chan(*a, m.channel, it->second);
        a->chans.erase(it);
    }
    Allocation& r = t_.allocs[a->idx];
    // A slot when the channel is on the allocation's relayed address of the
    // peer's family (what the control plane always sends) and the line has
    // slots for that family (IPv4: an IPv4 relayed address; IPv6: only an
    // IPv6 one): workers then find both directions from the allocation's own
    // line.
    const bool v4_line = r.relayed4_port != 0;
    const WireAddress& own = m.peer.family == 4 ? a->msg.relayed_v4 : a->msg.relayed_v6;
    if (offloaded(own, m.peer.family) && (m.peer.family == 4) == v4_line && a->described &&
        std::memcmp(&m.relayed, &own, sizeof(WireAddress)) == 0) {
        const uint32_t slots = v4_line ? Allocation::kSlots : 1;
        for (uint32_t s = 0; s < slots; s++) {
            if (r.slot_busy & (1u << s)) {
                continue;
            }
            std::atomic<uint16_t>* ch;
            if (v4_line) {
                ChanSlot& slot = r.v4.slots[s];
                std::memcpy(&slot.peer_ip, m.peer.ip, 4);
                slot.peer_port = rte_cpu_to_be_16(m.peer.port);
                ch = &slot.channel_be;
            } else {
                std::memcpy(r.slot6.peer_ip, m.peer.ip, 16);
                r.slot6.peer_port = rte_cpu_to_be_16(m.peer.port);
                ch = &r.slot6.channel_be;
            }
            ch->store(rte_cpu_to_be_16(m.channel), std::memory_order_release);
            r.slot_busy = static_cast<uint8_t>(r.slot_busy | (1u << s));
            a->chans.emplace(m.channel, Chan{m.relayed, m.peer, gen_, static_cast<int>(s)});
            return;
        }
    }
    ChannelValue* v = new_value(m.peer, a->idx);
    if (v == nullptr) {
        stats_.table_full++;
        return;
    }
    // Workers look for hashed channels only while the flag is set: set it
    // before the entries appear.
    if (a->hashed++ == 0) {
        r.hashed.store(1, std::memory_order_release);
    }
    // Peer side first: a client packet forwarded before the peer side exists
    // would get an answer the dataplane cannot yet relay back.
    const bool out_ok = key_op(t_, KeyKind::kChannelOut, m.relayed, m.peer, true, 0,
                               inline_data(a->idx, rte_cpu_to_be_16(m.channel))) == 0;
    const bool in_ok = out_ok && key_op(t_, KeyKind::kChannelIn, a->msg.listen, a->msg.client, true, m.channel, v) == 0;
    if (!in_ok) {
        stats_.table_full++;
        Chan c{m.relayed, m.peer, gen_, -1};
        remove_chan(*a, m.channel, c);
        t_.free_unpublished(v);  // the kChannelIn add failed: no reader can hold v
        return;
    }
    a->chans.emplace(m.channel, Chan{m.relayed, m.peer, gen_, -1});
}

ChannelValue* Applier::new_value(const WireAddress& peer, uint32_t alloc) {
    ChannelValue* v = t_.new_value();
    if (v != nullptr) {
        *v = ChannelValue{};
        std::memcpy(v->peer_ip, peer.ip, 16);
        v->peer_port = rte_cpu_to_be_16(peer.port);
        v->family = peer.family;
        v->alloc = alloc;
    }
    return v;
}

bool Applier::republish_chan(Alloc& a, uint16_t channel, const Chan& c) {
    // A slot lives in the allocation's own line; hash entries may have been
    // taken by another channel or allocation since they were added.
    void* out = inline_data(a.idx, rte_cpu_to_be_16(channel));
    if (key_data(t_, KeyKind::kChannelOut, c.relayed, c.peer, true, 0) != out &&
        key_op(t_, KeyKind::kChannelOut, c.relayed, c.peer, true, 0, out) != 0) {
        return false;
    }
    if (key_alloc(t_, KeyKind::kChannelIn, a.msg.listen, a.msg.client, true, channel) == a.idx) {
        return true;
    }
    ChannelValue* v = new_value(c.peer, a.idx);
    if (v == nullptr) {
        return false;
    }
    if (key_op(t_, KeyKind::kChannelIn, a.msg.listen, a.msg.client, true, channel, v) != 0) {
        t_.free_unpublished(v);
        return false;
    }
    return true;
}

void Applier::on(const ipc::ChannelDel& m) {
    Alloc* a = find(m.alloc_id);
    if (a == nullptr) {
        return;
    }
    auto it = a->chans.find(m.channel);
    if (it != a->chans.end()) {
        remove_chan(*a, m.channel, it->second);
        a->chans.erase(it);
    }
}

void Applier::set_limit(Allocation& r, uint64_t bps) const {
    const float bt = byte_ticks_of(bps, t_.tsc_hz);
    if (std::bit_cast<uint32_t>(bt) == std::bit_cast<uint32_t>(r.byte_ticks.load(std::memory_order_relaxed))) {
        return;  // unchanged (a resync's refresh): the budget stays as spent
    }
    r.byte_ticks.store(bt, std::memory_order_relaxed);
    // A new rate starts with a full budget, as the control plane's bucket of a
    // restarted turn-relay does: the clock's lead over now was run up at the
    // old cost per byte and would hold a raised limit back for as long as the
    // old one needed (a minute at 8 kbit/s). A worker's compare-and-swap that
    // loaded the old clock fails and retries from this one.
    r.tat.store(0, std::memory_order_relaxed);
}

void Applier::on(const ipc::LimitSet& m) {
    Alloc* a = find(m.alloc_id);
    if (a != nullptr) {
        a->msg.bandwidth_bps = m.bandwidth_bps;
        set_limit(t_.allocs[a->idx], m.bandwidth_bps);
    }
}

ipc::AllocationCounters Applier::sum_counters(uint64_t id, const Alloc& a) const {
    ipc::AllocationCounters c = a.base;
    c.alloc_id = id;
    const uint32_t epoch = t_.allocs[a.idx].epoch;
    for (uint32_t w = 0; w < t_.config().workers; w++) {
        const AllocState& s = t_.state(w)[a.idx];
        if (s.epoch != epoch) {
            continue;
        }
        c.to_peer_packets += s.to_peer_packets;
        c.to_peer_bytes += s.to_peer_bytes;
        c.to_client_packets += s.to_client_packets;
        c.to_client_bytes += s.to_client_bytes;
        c.dropped_packets += s.dropped_packets;
    }
    return c;
}

void Applier::finish(uint64_t id, Alloc& a, bool reusable) {
    // Entries first: after remove_alloc no new lookup finds the allocation,
    // so the sum below misses at most the packets workers are handling right
    // now. Its slot is reused only after a grace period, so it is still ours.
    remove_alloc(a);
    const ipc::AllocationCounters c = sum_counters(id, a);
    size_t at = SIZE_MAX;
    if (finals_.size() < kMaxFinals) {
        finals_.push_back({c});
        at = finals_.size() - 1;
    } else {
        stats_.finals_dropped++;  // this one's last packets go unreported, unless an Add continues them
    }
    if (reusable) {
        if (reusable_.size() >= kMaxFinals) {
            reusable_.erase(reusable_.begin());  // the newest Del is the one an Add follows
        }
        reusable_[id] = {c, at};
    }
}

void Applier::report_counters(const std::function<void(std::span<const uint8_t>)>& send) {
    if (worker_counters) {
        std::vector<ipc::WorkerCounters> ws;
        worker_counters(ws);
        for (ipc::WorkerCounters& wc : ws) {
            send(ipc::encode(wc, ++seq_));
        }
    }
    if (port_counters) {
        std::vector<ipc::PortCounters> ps;
        port_counters(ps);
        for (ipc::PortCounters& pc : ps) {
            send(ipc::encode(pc, ++seq_));
        }
    }
    if (nexthop_counters) {
        ipc::NextHopCounters nc{};
        nexthop_counters(nc);
        send(ipc::encode(nc, ++seq_));
    }
    ipc::CountersReport r{};
    auto flush = [&](bool last) {
        r.last = last ? 1 : 0;
        send(ipc::encode(r, ++seq_));
        r.count = 0;
    };
    auto add = [&](const ipc::AllocationCounters& c) {
        r.entries[r.count++] = c;
        if (r.count == ipc::CountersReport::kMaxEntries) {
            flush(false);
        }
    };
    // First the allocations removed since the last report, with their final
    // totals (a report has no other way to carry an allocation's last
    // packets), in chunks of their own; then the live ones.
    r.finals = 1;
    for (const Final& f : finals_) {
        if (!f.taken) {
            add(f.c);
        }
    }
    if (r.count != 0) {
        flush(false);
    }
    r.finals = 0;
    finals_.clear();
    reusable_.clear();
    for (const auto& [id, a] : allocs_) {
        add(sum_counters(id, a));
    }
    flush(true);
}

}  // namespace dp
