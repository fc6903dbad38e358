// Fuzz target: the dataplane's IPC Applier (dataplane/flow/apply.{h,cc}) over
// real FlowTables (dataplane/flow/tables.{h,cc}), fed a sequence of
// control-plane datagrams: mostly structured messages drawn from a small
// space (alloc ids 0-7, a few IPv4/IPv6 addresses per role in 198.18.0.0/15
// and fd00::/8, channels 0x4000-0x4003 and invalid ones, small generations,
// Settings, ExternalIps pairs from 3 external and 4 relay IPs per family and
// each field value valid() refuses), so that adds, deletes, re-adds under
// changed addresses, limits, resyncs, full tables and the NAT's bounded
// history happen, plus raw and corrupted datagrams. The input format is in
// applier_input.h.
//
// Invariants (a violation prints what failed and traps):
//   1. no crash, no sanitizer report;
//   2. every datagram the Applier sends back, but the echo of a Settings or
//      an ExternalIps right after it (6, 7), decodes as a CountersReport
//      (ipc::decode), with count <= kMaxEntries, `last` set on
//      exactly the final chunk of each answer, sequence numbers rising, alloc
//      ids that valid AllocationAdds named; an answer carries at least every live
//      allocation;
//   3. apply() returns true exactly for the datagrams this file's own
//      decoder of the input calls valid, and stats().applied / malformed
//      count exactly those (applied + malformed = datagrams);
//   4. resync convergence: after the input, a fixed reference resync
//      (ResyncBegin with a generation the input cannot name, the reference
//      AllocationAdd/PermissionAdd/ChannelAdd messages, ResyncEnd) leaves the
//      tables in the state a fresh Applier on fresh tables reaches from that
//      resync alone. Compared: what every probe key (kClient, kPermission,
//      kChannelIn, kChannelOut over every address, channel and family of the
//      input's space) and every relayed address (RelayPorts) answers, with an
//      allocation index replaced by what it means (client, listening and
//      relayed addresses), and per allocation reached: rate, `live`, and its
//      channels whether in a slot or in the hash (slot vs hash is a
//      representation: a refreshed channel may stay hashed where a fresh
//      table puts it in a slot), a hashed channel only counting when the
//      allocation's `hashed` flag lets workers see it. A full table may
//      refuse the resync's Adds while the input's leftovers hold the room;
//      ResyncEnd applies them again after its sweep. Skipped (and said so
//      with APPLIER_FUZZ_VERBOSE=1) with small tables only when one of those
//      retries was refused too; with roomy tables that fails the input.
//   5. after the input and after the reference resync, every hash entry and
//      relayed-port word names an allocation index the Applier holds (an
//      index is reused after its grace period: an entry left naming a
//      removed one would hand its traffic to the index's next allocation);
//   6. a valid Settings is answered with exactly itself; after every datagram the tables' TOS rule (FlowTables::tos_rule, what
//      workers apply to relayed datagrams) is the last valid Settings' rule,
//      "keep everything" before any and after a valid ResyncBegin with no
//      valid Settings since the previous one: an invalid one changes nothing. The
//      reference resync starts with Settings, as the control plane's do, so
//      its rule is part of what invariant 4 compares.
//   7. ExternalIps (the NAT's pairs, FlowTables::nat), against a model of
//      the Applier: each family's pair in turn (IPv4 first) becomes current
//      when the history of pairs holds it or has room (at most 4 different
//      pairs ever), a family given none has none, a new pair past the 4 is
//      refused and its family has none either; a ResyncBegin with no
//      valid ExternalIps (refused or not) since the previous one clears
//      both. An ExternalIps is echoed, unchanged but for the header's seq,
//      exactly when no family was refused, and a refused one counts one
//      table_full. After every datagram (and after the reference resync):
//      nat.current(4/6) is the model's pair byte for byte or none, nat.n the
//      history's size, each external IP the history holds is an own address
//      (own4.has for IPv4, nat.had6 for IPv6, and own_ip()) and no other is,
//      and no relay IP that only an ExternalIps names is. The reference
//      resync has no ExternalIps: the facts of invariant 4 do not include
//      the NAT, so input tables with pairs (fresh ones never have any) must
//      answer every probe as a fresh resync's.
//
// APPLIER_FUZZ_VERBOSE=1 prints every datagram's verdict, the stats and the
// compared facts.
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <rte_eal.h>
#include <rte_hash.h>

#include "applier_input.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "fuzz_eal.h"

namespace {

namespace ipc = turn::ipc;
using namespace applierfuzz;

bool verbose = false;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "applier_fuzz: %s%s%s\n", what, detail.empty() ? "" : ": ", detail.c_str());
    __builtin_trap();
}

void init() {
    static bool done = false;
    if (done) {
        return;
    }
    done = true;
    verbose = std::getenv("APPLIER_FUZZ_VERBOSE") != nullptr;
    if (!fuzzeal::init("applier_fuzz", 128)) {
        fail("rte_eal_init");
    }
    std::atexit(fuzzeal::cleanup);
}

// Small: 4 allocations for 8 ids, 2 ChannelValues, hashes of 16 / 8 entries,
// so every "full" path is reachable (the reference resync alone still fits).
// Roomy: nothing the input can do fills them.
dp::FlowTables* make_tables(bool small) {
    static unsigned n = 0;
    dp::FlowConfig fc;
    fc.name = "apf" + std::to_string(n++);
    fc.entries_v4 = small ? 16 : 1024;
    fc.entries_v6 = small ? 8 : 1024;
    fc.max_allocations = small ? 4 : 64;
    fc.max_channels = small ? 2 : 64;
    fc.workers = 1;
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(fc, &err);
    if (t == nullptr) {
        fail("FlowTables::create", err);
    }
    return t;
}

// ---- invariant 3: the harness's own view of which datagrams are valid ----

// A 20-byte WireAddress at `off` in canonical form: family 0, 4 or 6, pad
// zero, the ip bytes the family does not use zero, and no port without a
// family (ipc::WireAddress::valid()).
bool addr_ok(const std::vector<uint8_t>& d, size_t off) {
    const uint8_t fam = d[off];
    if ((fam != 0 && fam != 4 && fam != 6) || d[off + 1] != 0) {
        return false;
    }
    const size_t used = fam == 4 ? 4 : fam == 6 ? 16 : 0;
    for (size_t i = used; i < 16; i++) {
        if (d[off + 4 + i] != 0) {
            return false;
        }
    }
    return fam != 0 || (d[off + 2] == 0 && d[off + 3] == 0);
}

// ExternalIps' rule (protocol.h), on addresses already in canonical form:
// per family, no pair (both addresses family 0) or an external and a relay
// IP both of that family, neither all zero, not the same IP, both ports 0;
// and a pair for at least one family. Offsets: the header, then external_v4,
// relay_v4, external_v6, relay_v6, 20 bytes each (family, pad, port, ip).
bool nat_pairs_ok(const std::vector<uint8_t>& d) {
    auto pair_ok = [&](size_t ext, size_t relay, uint8_t fam) {
        const auto port = [&](size_t o) { return d[o + 2] | d[o + 3]; };
        if (port(ext) != 0 || port(relay) != 0) {
            return false;
        }
        if (d[ext] == 0) {
            return d[relay] == 0;
        }
        const auto zero = [&](size_t o) {
            return std::all_of(d.begin() + o + 4, d.begin() + o + 20, [](uint8_t b) { return b == 0; });
        };
        return d[ext] == fam && d[relay] == fam && !zero(ext) && !zero(relay) &&
               !std::equal(d.begin() + ext + 4, d.begin() + ext + 20, d.begin() + relay + 4);
    };
    return pair_ok(16, 36, 4) && pair_ok(56, 76, 6) && (d[16] != 0 || d[56] != 0);
}

// Independent of ipc::decode: header, a type the Applier takes, its exact
// size, and its addresses' form.
bool expect_valid(const std::vector<uint8_t>& d) {
    if (d.size() < sizeof(ipc::Header)) {
        return false;
    }
    const uint16_t version = static_cast<uint16_t>(d[0] | d[1] << 8);
    uint16_t type = 0;
    uint32_t length = 0;
    std::memcpy(&type, d.data() + 2, 2);
    std::memcpy(&length, d.data() + 4, 4);
    if (version != 1 || length != d.size()) {
        return false;
    }
    auto fams = [&](std::initializer_list<size_t> offs) {
        for (size_t o : offs) {
            if (!addr_ok(d, o)) {
                return false;
            }
        }
        return true;
    };
    // An address's family byte and whether it has a port.
    const auto fam = [&](size_t o) { return d[o]; };
    const auto has_port = [&](size_t o) { return (d[o + 2] | d[o + 3]) != 0; };
    // AllocationAdd: client of family 4 or 6 with a port, listening address
    // of its family with a port, relayed_v4 IPv4 or none, relayed_v6 IPv6 or
    // none. Permission/Channel Add/Del: relayed 4 or 6, the peer of its family.
    auto five_tuple = [&] {
        return (fam(24) == 4 || fam(24) == 6) && has_port(24) && fam(44) == fam(24) && has_port(44) &&
               (fam(64) == 0 || fam(64) == 4) && (fam(84) == 0 || fam(84) == 6);
    };
    auto peer_side = [&] { return (fam(24) == 4 || fam(24) == 6) && fam(44) == fam(24); };
    // Sizes and address offsets as protocol.h lays them out (16-byte header,
    // 8-byte alloc id, 20-byte addresses).
    switch (type) {
    case 5: return d.size() == 96 && fams({16, 36, 56, 76}) && nat_pairs_ok(d);  // ExternalIps
    case 4:  // Settings: ECN kept, no bit both kept and set, padding zero
        return d.size() == 24 && (d[16] & 0x03) == 0x03 && (d[16] & d[17]) == 0 &&
               std::all_of(d.begin() + 18, d.end(), [](uint8_t b) { return b == 0; });
    case 2: return d.size() == 24;                      // ResyncBegin
    case 3: return d.size() == 32;                      // ResyncEnd
    case 10: return d.size() == 120 && fams({24, 44, 64, 84}) && five_tuple();  // AllocationAdd
    case 11: return d.size() == 24;                     // AllocationDel
    case 12:
    case 13: return d.size() == 64 && fams({24, 44}) && peer_side();   // PermissionAdd/Del
    case 14:
    case 15: return d.size() == 72 && fams({24, 44}) && peer_side();   // ChannelAdd/Del
    case 16: return d.size() == 32;                     // LimitSet
    case 20: return d.size() == 16;                     // CountersRequest
    default: return false;
    }
}
static_assert(sizeof(ipc::AllocationAdd) == 120 && sizeof(ipc::PermissionAdd) == 64 &&
              sizeof(ipc::ChannelAdd) == 72 && sizeof(ipc::ResyncEnd) == 32 && sizeof(ipc::LimitSet) == 32);
static_assert(sizeof(ipc::Settings) == 24 && offsetof(ipc::Settings, tos_keep) == 16 &&
              offsetof(ipc::Settings, tos_set) == 17 && offsetof(ipc::Settings, pad) == 18);
static_assert(sizeof(ipc::ExternalIps) == 96 && offsetof(ipc::ExternalIps, external_v4) == 16 &&
              offsetof(ipc::ExternalIps, relay_v4) == 36 && offsetof(ipc::ExternalIps, external_v6) == 56 &&
              offsetof(ipc::ExternalIps, relay_v6) == 76);

// ---- invariant 2: replies ----

struct Replies {
    std::vector<std::vector<uint8_t>> got;
    uint64_t last_seq = 0;
};

// `ids`: every alloc id a valid AllocationAdd of the input named (raw
// datagrams may carry any id).
void check_replies(Replies& r, size_t live_allocs, const std::set<uint64_t>& ids) {
    if (r.got.empty()) {
        fail("CountersRequest answered with nothing");
    }
    size_t entries = 0;
    for (size_t i = 0; i < r.got.size(); i++) {
        const auto m = ipc::decode<ipc::CountersReport>(r.got[i]);
        if (!m && r.got[i].size() >= 4 && r.got[i][2] == static_cast<uint8_t>(ipc::MsgType::kExternalIps) &&
            r.got[i][3] == 0) {
            // The echo of an applied ExternalIps is taken off right after
            // its datagram: one here was sent for another datagram.
            fail("an ExternalIps echo not right after an ExternalIps the model applied", "chunk " + std::to_string(i));
        }
        if (!m) {
            fail("reply does not decode as CountersReport", "chunk " + std::to_string(i));
        }
        if (m->count > ipc::CountersReport::kMaxEntries) {
            fail("CountersReport count > kMaxEntries");
        }
        if ((m->last != 0) != (i + 1 == r.got.size())) {
            fail("CountersReport `last` not on exactly the final chunk", "chunk " + std::to_string(i));
        }
        if (m->h.seq <= r.last_seq) {
            fail("reply sequence numbers not rising");
        }
        r.last_seq = m->h.seq;
        for (uint32_t k = 0; k < m->count; k++) {
            if (ids.count(m->entries[k].alloc_id) == 0) {
                fail("CountersReport names an alloc id the input never used");
            }
        }
        entries += m->count;
    }
    if (entries < live_allocs) {
        fail("CountersReport misses live allocations");
    }
    r.got.clear();
}

// ---- invariant 7: the NAT's pairs (ipc::ExternalIps, FlowTables::nat) ----

// The dataplane keeps at most this many different pairs over its life
// (protocol.h does not bound it; this harness's expectation is the Applier's
// documented bound, NatIps::kMax: a change there must come with one here).
constexpr size_t kNatPairs = 4;
static_assert(dp::NatIps::kMax == kNatPairs);

// What the Applier should have made of the ExternalIps and ResyncBegins so
// far: every pair it ever took (immutable, at most kNatPairs), each family's
// current one, and whether a valid ExternalIps came since the last valid
// ResyncBegin.
struct NatModel {
    struct Pair {
        uint8_t fam = 0;
        uint8_t ext[16] = {};
        uint8_t relay[16] = {};
        bool operator==(const Pair&) const = default;
    };
    std::vector<Pair> history;
    int cur[2] = {-1, -1};  // index into history, -1: none; [0] IPv4, [1] IPv6
    bool seen = false;

    // A valid ExternalIps `d`: each family in turn (IPv4 first) gets no pair,
    // or its pair if history holds it or has room; a family whose new pair
    // finds no room has none current. Applied (echoed) when no family was
    // refused.
    bool external_ips(const std::vector<uint8_t>& d) {
        seen = true;
        bool applied = true;
        for (const auto& [ext, relay, fam] : {std::tuple{size_t{16}, size_t{36}, uint8_t{4}},
                                              std::tuple{size_t{56}, size_t{76}, uint8_t{6}}}) {
            int& c = cur[fam == 4 ? 0 : 1];
            if (d[ext] == 0) {
                c = -1;
                continue;
            }
            Pair p;
            p.fam = fam;
            std::memcpy(p.ext, d.data() + ext + 4, 16);
            std::memcpy(p.relay, d.data() + relay + 4, 16);
            const auto it = std::find(history.begin(), history.end(), p);
            if (it != history.end()) {
                c = static_cast<int>(it - history.begin());
            } else if (history.size() < kNatPairs) {
                history.push_back(p);
                c = static_cast<int>(history.size() - 1);
            } else {
                c = -1;  // refused: no pair current (an earlier control plane's must not linger)
                applied = false;
            }
        }
        return applied;
    }
    // A valid ResyncBegin: a control plane that sent no ExternalIps before
    // it has no external IPs, so the pairs an earlier one set are dropped.
    void resync_begin() {
        if (!seen) {
            cur[0] = cur[1] = -1;
        }
        seen = false;
    }
    bool had(uint8_t fam, const uint8_t* ip) const {
        return std::any_of(history.begin(), history.end(),
                           [&](const Pair& p) { return p.fam == fam && std::memcmp(p.ext, ip, 16) == 0; });
    }
};

// The addresses the ExternalIps op can name, for the own-address checks:
// every external IP, and the relay IPs no allocation relays on (the relayed
// pool's IPs become own addresses through allocations, not through
// ExternalIps).
struct NatAddrs {
    std::vector<ipc::WireAddress> ext[2], other_relay[2];
    NatAddrs() {
        for (uint8_t fam : {uint8_t{4}, uint8_t{6}}) {
            for (uint8_t b : {uint8_t{1}, uint8_t{2}, uint8_t{3}, uint8_t{1 | 2 << 2}, uint8_t{1 | 3 << 2}}) {
                ipc::WireAddress e, r;
                nat_pair(fam, b, e, r);
                if ((b >> 2) == 0) {
                    ext[fam == 4 ? 0 : 1].push_back(e);
                } else {
                    other_relay[fam == 4 ? 0 : 1].push_back(r);
                }
            }
        }
    }
};

std::string wire(const ipc::WireAddress& a);  // below, with the facts

// FlowTables::nat and the own addresses against the model: each family's
// current pair (none, or the model's, byte for byte), how many pairs the
// tables hold, every external IP the model took an own address (own4 for
// IPv4, nat.had6 for IPv6, and own_ip() for both) and none other, and a
// relay IP that no allocation relays on never one.
void check_nat(const dp::FlowTables& t, const NatModel& m, const std::string& when) {
    static const NatAddrs addrs;
    for (uint8_t fam : {uint8_t{4}, uint8_t{6}}) {
        const dp::NatIps::Entry* e = t.nat.current(fam);
        const int c = m.cur[fam == 4 ? 0 : 1];
        if ((e == nullptr) != (c < 0)) {
            fail(fam == 4 ? "nat.current(4) set or unset against the model" : "nat.current(6) set or unset against the model",
                 when);
        }
        if (e != nullptr) {
            const NatModel::Pair& p = m.history[static_cast<size_t>(c)];
            if (e->family != fam || std::memcmp(e->external, p.ext, 16) != 0 || std::memcmp(e->relay, p.relay, 16) != 0) {
                fail("nat.current() is not the model's pair", when);
            }
        }
        for (const auto& a : addrs.ext[fam == 4 ? 0 : 1]) {
            const bool want = m.had(fam, a.ip);
            uint32_t v4;
            std::memcpy(&v4, a.ip, 4);
            const bool got = fam == 4 ? t.own4.has(v4) : t.nat.had6(a.ip);
            if (got != want || t.own_ip(fam, a.ip) != want) {
                fail(want ? "an external IP the model took is not an own address"
                          : "an external IP the model never took is an own address",
                     when + " (" + wire(a) + ")");
            }
        }
        for (const auto& a : addrs.other_relay[fam == 4 ? 0 : 1]) {
            if (t.own_ip(fam, a.ip) || (fam == 6 && t.nat.had6(a.ip))) {
                fail("a relay IP named only by ExternalIps is an own address", when + " (" + wire(a) + ")");
            }
        }
    }
    if (t.nat.n.load() != m.history.size()) {
        fail("FlowTables::nat holds another number of pairs than the model", when);
    }
}

// ---- invariant 5: nothing names an allocation the Applier no longer holds ----

// Every hash entry and relayed-port word names an allocation index the
// Applier holds: an index is reused after its grace period, so an entry
// left naming a removed one would hand its traffic to whichever allocation
// gets the index next.
void check_owners(const dp::FlowTables& t, const dp::Applier& ap, const char* when) {
    const std::vector<uint32_t> v = ap.indices();
    const std::set<uint32_t> held(v.begin(), v.end());
    for (rte_hash* h : {t.h4, t.h6}) {
        const void* key = nullptr;
        void* data = nullptr;
        uint32_t next = 0;
        while (rte_hash_iterate(h, &key, &data, &next) >= 0) {
            if (held.count(dp::value_alloc(data)) == 0) {
                fail("a hash entry names an allocation index the Applier does not hold", when);
            }
        }
    }
    const dp::RelayPorts& r = *t.relay_ports;
    for (uint32_t i = 0; i < r.n.load(); i++) {
        for (uint32_t c = 0; c < 256; c++) {
            const dp::RelayPorts::Chunk* chunk = r.ports[i][c].load();
            for (uint32_t p = 0; chunk != nullptr && p < 256; p++) {
                const uint32_t w = chunk[p].load();
                if (w != 0 && held.count(w - 1) == 0) {
                    fail("a relayed port names an allocation index the Applier does not hold", when);
                }
            }
        }
    }
}

// ---- invariant 4: what the tables answer ----

std::string hex(const uint8_t* p, size_t n) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s += d[p[i] >> 4];
        s += d[p[i] & 15];
    }
    return s;
}
std::string wire(const ipc::WireAddress& a) {
    return std::to_string(a.family) + "/" + hex(a.ip, a.family == 4 ? 4 : 16) + ":" + std::to_string(a.port);
}

// The addresses of the input's space.
std::vector<ipc::WireAddress> pool(Pool p) {
    std::vector<ipc::WireAddress> v;
    const unsigned lim = p == kListenPool ? 2 : 4;
    for (bool v6 : {false, true}) {
        for (unsigned ip = 0; ip < lim; ip++) {
            for (unsigned port = 0; port < lim; port++) {
                v.push_back(addr(p, sel(v6, ip, port)));
            }
        }
    }
    return v;
}

void* lookup(const dp::FlowTables& t, dp::KeyKind kind, const ipc::WireAddress& a, const ipc::WireAddress& b,
             bool b_port, uint16_t channel) {
    void* data = nullptr;
    auto fill = [&](auto& k, size_t n) {
        std::memcpy(&k.b_ip, b.ip, n);
        k.a_port = rte_cpu_to_be_16(a.port);
        k.b_port = b_port ? rte_cpu_to_be_16(b.port) : 0;
        k.channel = rte_cpu_to_be_16(channel);
        k.kind = kind;
    };
    if (a.family == 4) {
        dp::Key4 k{};
        std::memcpy(&k.a_ip, a.ip, 4);
        fill(k, 4);
        return rte_hash_lookup_data(t.h4, &k, &data) >= 0 ? data : nullptr;
    }
    dp::Key6 k{};
    if (!t.key6_index(kind, a.ip, rte_cpu_to_be_16(a.port), &k.a)) {
        return nullptr;  // an address the tables have no index for: no key of it
    }
    fill(k, 16);
    return rte_hash_lookup_data(t.h6, &k, &data) >= 0 ? data : nullptr;
}

struct Facts {
    const dp::FlowTables& t;
    std::set<std::string> s;
    std::set<uint32_t> reached;

    // What allocation `idx` is, without its index.
    std::string who(uint32_t idx) {
        if (idx >= t.config().max_allocations) {
            return "bad-index-" + std::to_string(idx);
        }
        reached.insert(idx);
        const dp::Allocation& a = t.allocs[idx];
        std::string w = "fam" + std::to_string(a.family) + " c=" + hex(a.client_ip, a.family == 4 ? 4 : 16) + ":" +
                        std::to_string(rte_be_to_cpu_16(a.client_port));
        if (a.family == 4 && a.listen < t.listen->n4.load()) {
            w += " l=" + hex(reinterpret_cast<const uint8_t*>(&t.listen->v4_ip[a.listen]), 4) + ":" +
                 std::to_string(rte_be_to_cpu_16(t.listen->v4_port[a.listen]));
        } else if (a.family == 6 && a.listen < t.listen->n6.load()) {
            w += " l=" + hex(t.listen->v6_ip[a.listen], 16) + ":" +
                 std::to_string(rte_be_to_cpu_16(t.listen->v6_port[a.listen]));
        } else {
            w += " l=?";
        }
        if (a.relayed4_port != 0) {
            w += " r4=" + hex(reinterpret_cast<const uint8_t*>(&a.v4.ip), 4) + ":" +
                 std::to_string(rte_be_to_cpu_16(a.relayed4_port));
        }
        if (a.relayed6_port != 0) {
            w += " r6=" + hex(t.relay_ports->ip[a.relayed6_ip], 16) + ":" +
                 std::to_string(rte_be_to_cpu_16(a.relayed6_port));
        }
        return "[" + w + "]";
    }
    std::string chan_fact(uint32_t idx, uint16_t ch, uint8_t fam, const uint8_t* ip, uint16_t port_be) {
        return "chan " + who(idx) + " " + std::to_string(ch) + " -> " + std::to_string(fam) + "/" +
               hex(ip, fam == 4 ? 4 : 16) + ":" + std::to_string(rte_be_to_cpu_16(port_be));
    }

    void collect() {
        s.insert("tos-rule " + std::to_string(t.tos_rule.load()));
        const auto listens = pool(kListenPool);
        const auto clients = pool(kClientPool);
        const auto relayeds = pool(kRelayedPool);
        const auto peers = pool(kPeerPool);
        for (const auto& l : listens) {
            for (const auto& c : clients) {
                if (l.family != c.family) {
                    continue;
                }
                if (void* d = lookup(t, dp::KeyKind::kClient, l, c, true, 0)) {
                    const uint32_t idx = dp::inline_alloc(d);
                    s.insert("client " + wire(l) + " " + wire(c) + " -> " + who(idx) +
                             (dp::is_inline(d) ? "" : " not-inline"));
                }
                for (uint16_t ch : kChannels) {
                    void* d = lookup(t, dp::KeyKind::kChannelIn, l, c, true, ch);
                    if (d == nullptr) {
                        continue;
                    }
                    if (dp::is_inline(d)) {
                        s.insert("chan-in inline " + wire(l) + " " + wire(c));
                        continue;
                    }
                    const auto* v = static_cast<const dp::ChannelValue*>(d);
                    const bool seen = v->alloc < t.config().max_allocations &&
                                      t.allocs[v->alloc].hashed.load() != 0;
                    s.insert(std::string(seen ? "" : "invisible ") +
                             chan_fact(v->alloc, ch, v->family, v->peer_ip, v->peer_port));
                    // The key must be the client's of the allocation it names.
                    const std::string w = who(v->alloc);
                    if (w.find(" c=" + hex(c.ip, c.family == 4 ? 4 : 16) + ":" + std::to_string(c.port) + " ") ==
                        std::string::npos) {
                        s.insert("chan-in of another client " + wire(l) + " " + wire(c) + " -> " + w);
                    }
                }
            }
        }
        for (const auto& r : relayeds) {
            uint32_t idx = 0;
            if (t.relay_ports->find(r.family, r.ip, rte_cpu_to_be_16(r.port), &idx)) {
                s.insert("relayed " + wire(r) + " -> " + who(idx));
            }
            for (const auto& p : peers) {
                if (p.family != r.family) {
                    continue;
                }
                ipc::WireAddress pip = p;
                pip.port = 0;
                if (void* d = lookup(t, dp::KeyKind::kPermission, r, pip, false, 0)) {
                    s.insert("perm " + wire(r) + " " + wire(pip) + " -> " + who(dp::inline_alloc(d)));
                }
                if (void* d = lookup(t, dp::KeyKind::kChannelOut, r, p, true, 0)) {
                    const uint32_t a = dp::inline_alloc(d);
                    const bool seen = a < t.config().max_allocations && t.allocs[a].hashed.load() != 0;
                    s.insert(std::string(seen ? "" : "invisible ") + "chan-out " + wire(r) + " " + wire(p) + " -> " +
                             who(a) + " " + std::to_string(rte_be_to_cpu_16(dp::inline_channel(d))));
                }
            }
        }
        // Per allocation reached: its line's state and slot channels (slots
        // answer both directions: peer side from the relayed address of the
        // slot's family; two IPv4 slots, or slot6 in a line without an IPv4
        // relayed address).
        for (const uint32_t idx : std::set<uint32_t>(reached)) {
            if (idx >= t.config().max_allocations) {
                continue;
            }
            const dp::Allocation& a = t.allocs[idx];
            s.insert("alloc " + who(idx) + " byte_ticks=" + std::to_string(std::bit_cast<uint32_t>(a.byte_ticks.load())) +
                     " live=" + std::to_string(a.live.load()));
            if (a.relayed4_port == 0) {  // the line's last bytes are slot6 (IPv6 relayed address only)
                const uint16_t ch = rte_be_to_cpu_16(a.slot6.channel_be.load());
                if (ch != 0) {
                    s.insert(chan_fact(idx, ch, 6, a.slot6.peer_ip, a.slot6.peer_port));
                    if (a.relayed6_port != 0) {
                        ipc::WireAddress r{};
                        r.family = 6;
                        std::memcpy(r.ip, t.relay_ports->ip[a.relayed6_ip], 16);
                        r.port = rte_be_to_cpu_16(a.relayed6_port);
                        ipc::WireAddress p{};
                        p.family = 6;
                        std::memcpy(p.ip, a.slot6.peer_ip, 16);
                        p.port = rte_be_to_cpu_16(a.slot6.peer_port);
                        s.insert("chan-out " + wire(r) + " " + wire(p) + " -> " + who(idx) + " " + std::to_string(ch));
                    }
                }
                continue;
            }
            for (const dp::ChanSlot& sl : a.v4.slots) {
                const uint16_t ch = rte_be_to_cpu_16(sl.channel_be.load());
                if (ch == 0) {
                    continue;
                }
                s.insert(chan_fact(idx, ch, 4, reinterpret_cast<const uint8_t*>(&sl.peer_ip), sl.peer_port));
                if (a.relayed4_port != 0) {
                    ipc::WireAddress r{};
                    r.family = 4;
                    std::memcpy(r.ip, &a.v4.ip, 4);
                    r.port = rte_be_to_cpu_16(a.relayed4_port);
                    ipc::WireAddress p{};
                    p.family = 4;
                    std::memcpy(p.ip, &sl.peer_ip, 4);
                    p.port = rte_be_to_cpu_16(sl.peer_port);
                    s.insert("chan-out " + wire(r) + " " + wire(p) + " -> " + who(idx) + " " + std::to_string(ch));
                }
            }
        }
    }
};

// ---- the reference resync ----

constexpr uint64_t kRefGeneration = 1000;  // the input's generations are bytes

std::vector<std::vector<uint8_t>> reference(uint64_t& seq) {
    std::vector<std::vector<uint8_t>> out;
    auto op = [&](uint8_t o, std::initializer_list<uint8_t> f) {
        const std::vector<uint8_t> v(f);
        out.push_back(build(o, Fields{v.data(), v.size()}, ++seq));
    };
    // The control plane's rule first, as on every connect.
    op(kSettings, {0x03, 46 << 2, 0});
    ipc::ResyncBegin b{};
    b.generation = kRefGeneration;
    out.push_back(bytes_of(b, ++seq));
    const uint8_t c4a = sel(false, 0, 0), c4b = sel(false, 1, 1), c6 = sel(true, 0, 0);
    const uint8_t l4 = sel(false, 0, 0), l6 = sel(true, 0, 0);
    const uint8_t r4a = sel(false, 0, 0), r4b = sel(false, 1, 0), r4c = sel(false, 2, 1), r6 = sel(true, 0, 0);
    const uint8_t p4a = sel(false, 0, 0), p4b = sel(false, 1, 1), p4c = sel(false, 2, 2), p6 = sel(true, 0, 0);
    // 1: IPv4, two slot channels and a third in the hash, two permissions.
    op(kAllocationAdd, {1, c4a, l4, r4a, kNone, 0});
    op(kPermissionAdd, {1, r4a, p4a});
    op(kPermissionAdd, {1, r4a, p4b});
    op(kChannelAdd, {1, r4a, p4a, chan_sel(0x4000)});
    op(kChannelAdd, {1, r4a, p4b, chan_sel(0x4001)});
    op(kChannelAdd, {1, r4a, p4c, chan_sel(0x4002)});
    // 2: IPv6 client, dual relayed, an IPv6 (hashed) and an IPv4 (slot) channel.
    op(kAllocationAdd, {2, c6, l6, r4b, r6, 2});
    op(kPermissionAdd, {2, r6, p6});
    op(kPermissionAdd, {2, r4b, p4a});
    op(kChannelAdd, {2, r6, p6, chan_sel(0x4000)});
    op(kChannelAdd, {2, r4b, p4a, chan_sel(0x4001)});
    // 5: IPv4 with a limit, one permission.
    op(kAllocationAdd, {5, c4b, l4, r4c, kNone, 1});
    op(kPermissionAdd, {5, r4c, p4a});
    // 6: IPv6 only, its channel in the line's IPv6 slot (slot6).
    const uint8_t c6b = sel(true, 1, 1), r6b = sel(true, 1, 1), p6b = sel(true, 1, 1);
    op(kAllocationAdd, {6, c6b, l6, kNone, r6b, 0});
    op(kPermissionAdd, {6, r6b, p6b});
    op(kChannelAdd, {6, r6b, p6b, chan_sel(0x4002)});
    ipc::ResyncEnd e{};
    e.generation = kRefGeneration;
    e.entries = out.size() - 2;  // the Adds
    out.push_back(bytes_of(e, ++seq));
    return out;
}

void print_diff(const std::set<std::string>& got, const std::set<std::string>& want) {
    for (const auto& f : got) {
        if (!want.contains(f)) {
            std::fprintf(stderr, "  extra:   %s\n", f.c_str());
        }
    }
    for (const auto& f : want) {
        if (!got.contains(f)) {
            std::fprintf(stderr, "  missing: %s\n", f.c_str());
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    init();
    if (size < 1) {
        return 0;
    }
    const bool small = (data[0] & kConfigSmall) != 0;
    dp::FlowTables* t = make_tables(small);
    dp::Applier ap(*t);
    Replies replies;
    auto reply = [&](std::span<const uint8_t> d) { replies.got.emplace_back(d.begin(), d.end()); };
    uint64_t seq = 0;
    uint64_t valid = 0;
    uint64_t invalid = 0;
    std::set<uint64_t> ids;  // alloc ids valid AllocationAdds named
    uint16_t tos_rule = dp::kTosKeepAll;  // invariant 6: the last valid Settings' rule
    bool settings_seen = false;           // a valid Settings since the last valid ResyncBegin
    NatModel nat;                         // invariant 7
    for (size_t off = 1; off + 2 <= size;) {
        size_t len = size_t{data[off]} | size_t{data[off + 1]} << 8;
        off += 2;
        len = std::min(len % (ipc::kMaxMessage + 1), size - off);
        const std::vector<uint8_t> d = datagram(data + off, len, ++seq);
        off += len;
        const bool want = expect_valid(d);
        const uint64_t full_before = ap.stats().table_full;
        const bool got = ap.apply(d, reply);
        if (verbose) {
            std::fprintf(stderr, "datagram %llu: %zu bytes type %u: %s (expected %s)\n",
                         static_cast<unsigned long long>(seq), d.size(), d.size() >= 4 ? d[2] | d[3] << 8 : 0,
                         got ? "applied" : "malformed", want ? "valid" : "invalid");
        }
        if (got != want) {
            fail("apply() verdict differs from the input's", "datagram " + std::to_string(seq));
        }
        (want ? valid : invalid)++;
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kAllocationAdd) && d[3] == 0) {
            uint64_t id;
            std::memcpy(&id, d.data() + sizeof(ipc::Header), sizeof id);
            ids.insert(id);
        }
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kSettings) && d[3] == 0) {
            // Answered with itself, once applied (the control plane's check).
            const auto ack = replies.got.size() == 1 ? ipc::decode<ipc::Settings>(replies.got[0]) : std::nullopt;
            if (!ack || ack->tos_keep != d[16] || ack->tos_set != d[17] || ack->h.seq <= replies.last_seq) {
                fail("valid Settings not answered with exactly itself", "datagram " + std::to_string(seq));
            }
            replies.last_seq = ack->h.seq;
            replies.got.clear();
        }
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kExternalIps) && d[3] == 0) {
            // Echoed, byte for byte but the header's sequence number, exactly
            // when applied; a refusal (no room for a new pair) is one
            // table_full, and nothing else of this datagram is.
            const bool applied = nat.external_ips(d);
            if (verbose) {
                std::fprintf(stderr, "  ExternalIps %s (model: %zu pairs, current %d/%d)\n",
                             applied ? "applied" : "refused", nat.history.size(), nat.cur[0], nat.cur[1]);
            }
            if (ap.stats().table_full - full_before != (applied ? 0u : 1u)) {
                fail(applied ? "an applied ExternalIps counted as table_full"
                             : "a refused ExternalIps not counted once as table_full",
                     "datagram " + std::to_string(seq));
            }
            if (applied) {
                const auto& e = replies.got;
                uint64_t eseq = 0;
                if (e.size() == 1 && e[0].size() == d.size()) {
                    std::memcpy(&eseq, e[0].data() + 8, 8);
                }
                if (e.size() != 1 || e[0].size() != d.size() || !std::equal(d.begin(), d.begin() + 8, e[0].begin()) ||
                    !std::equal(d.begin() + 16, d.end(), e[0].begin() + 16) || eseq <= replies.last_seq) {
                    fail("applied ExternalIps not echoed once, unchanged but the header's seq",
                         "datagram " + std::to_string(seq));
                }
                replies.last_seq = eseq;
                replies.got.clear();
            } else if (!replies.got.empty()) {
                fail("ExternalIps echoed although the model refused it", "datagram " + std::to_string(seq));
            }
        }
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kResyncBegin) && d[3] == 0) {
            nat.resync_begin();
        }
        check_nat(*t, nat, "datagram " + std::to_string(seq));
        if (!replies.got.empty() || (want && d.size() == sizeof(ipc::CountersRequest) && d[2] == 20)) {
            check_replies(replies, ap.allocations(), ids);
        }
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kSettings) && d[3] == 0) {
            tos_rule = dp::pack_tos_rule(d[16], d[17]);
            settings_seen = true;
        }
        if (want && d[2] == static_cast<uint8_t>(ipc::MsgType::kResyncBegin) && d[3] == 0) {
            if (!settings_seen) {
                tos_rule = dp::kTosKeepAll;  // a control plane without Settings
            }
            settings_seen = false;
        }
        if (t->tos_rule.load() != tos_rule) {
            fail("TOS rule differs from the last valid Settings'", "datagram " + std::to_string(seq));
        }
    }
    if (ap.stats().applied != valid || ap.stats().malformed != invalid) {
        fail("stats applied/malformed differ from the input's count");
    }
    check_owners(*t, ap, "after the input");

    // Invariant 4: the reference resync on top, and alone on fresh tables.
    // A full table may refuse the resync's Adds while the input's leftovers
    // still hold the room; ResyncEnd sweeps those, then applies the refused
    // Adds again. Convergence is checked unless one of those retries was
    // refused too (the table full even without the leftovers: small tables).
    const std::vector<std::vector<uint8_t>> ref = [&] {
        uint64_t rseq = seq;
        return reference(rseq);
    }();
    uint64_t full_before_end = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (i + 1 == ref.size()) {
            full_before_end = ap.stats().table_full;  // the last one is ResyncEnd
        }
        if (!ap.apply(ref[i], reply)) {
            fail("reference datagram refused");
        }
        if (ref[i][2] == static_cast<uint8_t>(ipc::MsgType::kResyncBegin)) {
            nat.resync_begin();
        }
    }
    // The reference has no ExternalIps: its ResyncBegin clears the pairs
    // unless the input sent one after its last ResyncBegin. Either way the
    // facts compared below do not look at FlowTables::nat or own4 (the
    // fresh tables never had pairs), so an input's pairs must leave every
    // key, relayed port and TOS rule as a fresh resync's: that comparison
    // fails if they did not.
    check_nat(*t, nat, "after the reference resync");
    const bool hit_full = ap.stats().table_full != full_before_end;
    check_owners(*t, ap, "after the reference resync");
    dp::FlowTables* ft = make_tables(small);
    {
        dp::Applier fresh(*ft);
        uint64_t fseq = 0;
        for (const auto& d : reference(fseq)) {
            if (!fresh.apply(d, reply)) {
                fail("reference datagram refused (fresh)");
            }
        }
        if (fresh.stats().table_full != 0) {
            fail("harness: the reference resync does not fit fresh tables");
        }
        if (hit_full && !small) {
            fail("reference resync refused an Add even after its sweep, on roomy tables");
        }
        if (!hit_full) {
            Facts got{*t, {}, {}};
            Facts want{*ft, {}, {}};
            got.collect();
            want.collect();
            if (verbose) {
                std::fprintf(stderr, "stats: applied %llu malformed %llu unknown_alloc %llu table_full %llu swept %llu\n",
                             static_cast<unsigned long long>(ap.stats().applied),
                             static_cast<unsigned long long>(ap.stats().malformed),
                             static_cast<unsigned long long>(ap.stats().unknown_alloc),
                             static_cast<unsigned long long>(ap.stats().table_full),
                             static_cast<unsigned long long>(ap.stats().swept));
                for (const auto& f : want.s) {
                    std::fprintf(stderr, "  fact: %s\n", f.c_str());
                }
            }
            if (got.s != want.s) {
                print_diff(got.s, want.s);
                fail("tables after the reference resync differ from a fresh resync's");
            }
            if (ap.allocations() != fresh.allocations()) {
                fail("allocation count after the reference resync differs from a fresh resync's");
            }
        } else if (verbose) {
            std::fprintf(stderr, "reference resync refused an Add even after its sweep (small tables): convergence not checked\n");
        }
    }
    delete ft;
    delete t;
    return 0;
}
