// Writes the seed corpus of applier_fuzz.cc (tests/fuzz/corpus/applier/):
// every message type alone and in the flows the control plane sends (a
// session's resync, incremental adds and deletes, channel churn, limits,
// counters requests, Settings), tables filled to "full", re-adds under changed
// addresses, stale resyncs, and every kind of malformed datagram. The input
// format is in applier_input.h.
//
//   build/tests/fuzz/applier_seeds tests/fuzz/corpus/applier
//
// The output is deterministic; the files are committed.
#include <cstdint>
#include <string>
#include <vector>

#include "applier_input.h"
#include "seed_writer.h"

namespace {

using namespace applierfuzz;
using In = std::vector<uint8_t>;

constexpr uint8_t v4(unsigned ip, unsigned port) { return sel(false, ip, port); }
constexpr uint8_t v6(unsigned ip, unsigned port) { return sel(true, ip, port); }
constexpr uint8_t ch(uint16_t c) { return chan_sel(c); }

In start(bool small) { return In{static_cast<uint8_t>(small ? kConfigSmall : 0)}; }

void alloc4(In& in, uint8_t id, uint8_t client, uint8_t relayed, uint8_t bw = 0) {
    record(in, {kAllocationAdd, id, client, v4(0, 0), relayed, kNone, bw});
}
void alloc6(In& in, uint8_t id, uint8_t client, uint8_t relayed4, uint8_t relayed6) {
    record(in, {kAllocationAdd, id, client, v6(0, 0), relayed4, relayed6, 0});
}
void perm(In& in, uint8_t id, uint8_t relayed, uint8_t peer, bool del = false) {
    record(in, {static_cast<uint8_t>(del ? kPermissionDel : kPermissionAdd), id, relayed, peer});
}
void chan(In& in, uint8_t id, uint8_t relayed, uint8_t peer, uint16_t c, bool del = false) {
    record(in, {static_cast<uint8_t>(del ? kChannelDel : kChannelAdd), id, relayed, peer, ch(c)});
}
void begin(In& in, uint8_t gen) { record(in, {kResyncBegin, gen}); }
void end(In& in, uint8_t gen, uint8_t entries = 0) { record(in, {kResyncEnd, gen, entries}); }
void counters(In& in) { record(in, {kCountersRequest}); }

// A typical session: one IPv4 and one IPv6 allocation, permissions, channels.
void session(In& in) {
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    perm(in, 1, v4(0, 0), v4(0, 0));
    chan(in, 1, v4(0, 0), v4(0, 0), 0x4000);
    alloc6(in, 2, v6(0, 0), v4(1, 0), v6(0, 0));
    perm(in, 2, v6(0, 0), v6(0, 0));
    chan(in, 2, v6(0, 0), v6(0, 0), 0x4000);
}

fuzzseeds::Files seeds() {
    fuzzseeds::Files f;
    auto add = [&](const std::string& name, const In& in) { f.emplace_back(name, in); };

    // Each message type alone (with an allocation where it needs one).
    for (bool small : {false, true}) {
        const std::string sfx = small ? "-small" : "";
        In in = start(small);
        begin(in, 1);
        add("resync-begin" + sfx, in);
        in = start(small);
        end(in, 0);
        add("resync-end" + sfx, in);
        in = start(small);
        alloc4(in, 1, v4(0, 0), v4(0, 0));
        add("allocation-add" + sfx, in);
        alloc4(in, 1, v4(0, 0), v4(0, 0), 2);
        add("allocation-refresh" + sfx, in);
        record(in, {kAllocationDel, 1});
        add("allocation-del" + sfx, in);
    }
    In in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    perm(in, 1, v4(0, 0), v4(0, 0));
    perm(in, 1, v4(0, 0), v4(1, 0));
    perm(in, 1, v4(0, 0), v4(0, 0), true);
    add("permission-add-del", in);
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    chan(in, 1, v4(0, 0), v4(0, 0), 0x4000);
    chan(in, 1, v4(0, 0), v4(0, 0), 0x4000, true);
    add("channel-add-del", in);
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    record(in, {kLimitSet, 1, 2});
    record(in, {kLimitSet, 4, 1});  // unknown alloc
    add("limit-set", in);
    in = start(false);
    session(in);
    counters(in);
    record(in, {kAllocationDel, 2});
    counters(in);
    add("counters-request", in);
    in = start(false);
    perm(in, 3, v4(0, 0), v4(0, 0));
    chan(in, 3, v4(0, 0), v4(0, 0), 0x4000);
    chan(in, 3, v4(0, 0), v4(0, 0), 0x4000, true);
    record(in, {kAllocationDel, 3});
    add("unknown-alloc", in);

    // Full resync flows: the reference's own state, leftovers swept, a
    // stale ResyncEnd, and a resync that re-adds everything.
    in = start(false);
    begin(in, 1);
    session(in);
    end(in, 1, 6);
    add("resync-session", in);
    in = start(false);
    session(in);
    alloc4(in, 3, v4(2, 2), v4(3, 3));
    perm(in, 3, v4(3, 3), v4(1, 1));
    chan(in, 3, v4(3, 3), v4(1, 1), 0x4003);
    begin(in, 7);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    perm(in, 1, v4(0, 0), v4(0, 0));
    end(in, 7);
    add("resync-sweeps", in);
    in = start(false);
    session(in);
    begin(in, 7);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    end(in, 6);  // not the resync begun: no sweep
    chan(in, 1, v4(0, 0), v4(1, 1), 0x4001);
    add("resync-end-stale", in);
    in = start(false);
    begin(in, 1);
    session(in);
    end(in, 1);
    begin(in, 2);
    session(in);
    end(in, 2);
    counters(in);
    add("resync-twice", in);
    in = start(false);
    // The reference's allocations with other content (different peers,
    // channels, limits): everything but what the reference re-adds must go.
    alloc4(in, 1, v4(0, 0), v4(0, 0), 3);
    chan(in, 1, v4(0, 0), v4(3, 3), 0x4000);
    chan(in, 1, v4(0, 0), v4(2, 2), 0x4002);
    chan(in, 1, v4(0, 0), v4(1, 1), 0x4003);
    perm(in, 1, v4(0, 0), v4(3, 0));
    alloc6(in, 2, v6(0, 0), v4(1, 0), v6(0, 0));
    chan(in, 2, v6(0, 0), v6(1, 1), 0x4000);
    record(in, {kLimitSet, 5, 3});
    alloc4(in, 5, v4(1, 1), v4(2, 1));
    add("reference-ids-other-content", in);

    // Channel churn: slots reused after their grace period, a third channel
    // in the hash, IPv6 peers, rebinding a number to another peer.
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    for (int round = 0; round < 4; round++) {
        for (uint16_t c = 0x4000; c <= 0x4003; c++) {
            chan(in, 1, v4(0, 0), v4(c & 3, round & 3), c);
        }
        for (uint16_t c = 0x4000; c <= 0x4003; c += 2) {
            chan(in, 1, v4(0, 0), v4(c & 3, round & 3), c, true);
        }
    }
    add("channel-churn", in);
    in = start(false);
    alloc6(in, 2, v6(0, 0), v4(1, 0), v6(0, 0));
    chan(in, 2, v6(0, 0), v6(0, 0), 0x4000);
    chan(in, 2, v6(0, 0), v6(1, 0), 0x4000);  // same number, other peer
    chan(in, 2, v4(1, 0), v4(0, 0), 0x4001);
    chan(in, 2, v4(1, 0), v4(0, 0), 0x4001, true);
    chan(in, 2, v4(1, 0), v4(0, 0), 0x4001);
    add("channel-rebind", in);
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    for (uint16_t c : {0x0000, 0x3fff, 0x7fff, 0xffff}) {
        chan(in, 1, v4(0, 0), v4(3, 3), c);
    }
    chan(in, 1, v6(0, 0), v6(0, 0), 0x4000);  // relayed of the other family
    chan(in, 1, kNone, v4(0, 0), 0x4001);
    add("channel-invalid", in);

    // Tables full: allocations, ChannelValues, hash entries (small tables).
    in = start(true);
    for (uint8_t id = 0; id < 8; id++) {
        alloc4(in, id, v4(id & 3, id >> 2), v4(id & 3, id >> 2));
    }
    add("full-allocations", in);
    in = start(true);
    alloc4(in, 0, v4(0, 0), v4(0, 0));
    for (uint16_t c = 0x4000; c <= 0x4003; c++) {
        chan(in, 0, v4(0, 0), v4(c & 3, 1), c);
    }
    chan(in, 0, v6(0, 0), v6(0, 0), 0x4000);
    add("full-channels", in);
    in = start(true);
    for (uint8_t id = 0; id < 4; id++) {
        alloc4(in, id, v4(id, 0), v4(id, 0));
        for (unsigned p = 0; p < 4; p++) {
            perm(in, id, v4(id, 0), v4(p, 0));
        }
    }
    add("full-hash", in);
    in = start(true);
    for (uint8_t id = 0; id < 4; id++) {
        alloc4(in, id, v4(id, 0), v4(id, 0));
    }
    begin(in, 3);
    record(in, {kAllocationDel, 0});
    alloc4(in, 4, v4(0, 3), v4(0, 3));
    end(in, 3);
    add("full-then-resync", in);

    // Re-adds: an id under changed addresses, two ids with one client.
    in = start(false);
    session(in);
    alloc4(in, 1, v4(0, 0), v4(2, 2));
    perm(in, 1, v4(2, 2), v4(0, 0));
    alloc4(in, 1, v4(1, 0), v4(2, 2));
    add("readd-changed-addresses", in);
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    alloc4(in, 3, v4(0, 0), v4(3, 0));  // same client 5-tuple, other id
    record(in, {kAllocationDel, 1});    // the earlier one goes: the later keeps the key
    add("two-ids-one-client", in);
    in = start(false);
    record(in, {kAllocationAdd, 1, kNone, kNone, kNone, kNone, 0});
    record(in, {kAllocationAdd, 2, v4(0, 0), v6(0, 0), v6(0, 0), v4(0, 0), 0});
    perm(in, 2, v4(0, 0), v6(0, 0));
    add("allocation-odd-families", in);

    // Settings (the relay-wide TOS rule): the rules the control plane sends
    // ({0xff, 0} keep, {0x03, dscp << 2}), around and inside a resync as on a
    // reconnect; and refused ones: ECN not kept, a bit both kept and set,
    // padding, and the header corruptions.
    in = start(false);
    record(in, {kSettings, 0x03, 46 << 2});
    begin(in, 1);
    session(in);
    record(in, {kSettings, 0x03, 0});
    end(in, 1, 6);
    record(in, {kSettings, 0x03, 63 << 2});
    record(in, {kSettings, 0xff, 0});
    add("settings", in);
    // A control plane that predates Settings after one that sent a fixed
    // DSCP: its resync (no Settings before it) resets the rule to "keep";
    // then a newer one again.
    in = start(false);
    record(in, {kSettings, 0x03, 46 << 2});
    begin(in, 1);
    session(in);
    end(in, 1, 6);
    begin(in, 2);
    session(in);
    end(in, 2, 6);
    record(in, {kSettings, 0x03, 10 << 2});
    begin(in, 3);
    session(in);
    end(in, 3, 6);
    add("settings-old-control-plane", in);
    in = start(false);
    record(in, {kSettings, 0x03, 46 << 2});
    record(in, {kSettings, 0xfc, 46 << 2});  // ECN not kept
    record(in, {kSettings, 0x02, 0});
    record(in, {kSettings, 0xff, 46 << 2});  // set bits also kept
    record(in, {kSettings, 0x03, 0x01});
    record(in, {kSettings, 0x03, 0, 1});     // padding
    for (uint8_t c = kBadVersion; c <= kExtended; c++) {
        record(in, {c, kSettings, 0x03, 0});
    }
    record(in, {kSettings});  // short body: fields 0, keep 0: refused
    add("settings-invalid", in);

    // Malformed datagrams, each kind, between valid ones.
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    for (uint8_t c = kBadVersion; c <= kLastCorruption; c++) {
        record(in, {c, kPermissionAdd, 1, v4(0, 0), v4(1, 0)});
        record(in, {c, kAllocationAdd, 2, v4(1, 0), v4(0, 0), v4(1, 0), kNone, 0});
        record(in, {c, kCountersRequest});
    }
    perm(in, 1, v4(0, 0), v4(0, 0));
    add("malformed-each", in);
    in = start(false);
    record(in, {kRaw});                                                     // empty
    record(in, {kRaw, 1, 0, 2, 0});                                         // short header
    record(in, {kRaw, 1, 0, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     // Hello-typed, wrong size
                0, 0, 0, 0, 0, 0, 0, 0});
    record(in, {kRaw, 1, 0, 20, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});  // a raw CountersRequest
    record(in, {kRaw, 1, 0, 21, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});  // CountersReport: dp never takes it
    add("raw-datagrams", in);
    in = start(false);
    In big{kRaw, 1, 0, 10, 0, 0, 16, 0, 0};
    big.resize(4096 + 1, 0xaa);
    record(in, big);
    add("raw-max-size", in);
    return f;
}

// The three ways a resync did not converge that this target's first run
// found (fixed: a refresh re-publishes what another took, and a delete
// removes a key or relayed address only while it is still the owner's).
fuzzseeds::Files fixed_bugs() {
    fuzzseeds::Files f;
    auto add = [&](const std::string& name, const In& in) { f.emplace_back("applier-" + name, in); };
    // A second id with the client 5-tuple of a live one takes the kClient key
    // and clears the first's `live`; deleting the second deletes the key and
    // the first is off the fast path for good: the reference's re-add of the
    // first is a refresh, which re-installs nothing.
    In in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    alloc4(in, 3, v4(0, 0), v4(3, 0));
    record(in, {kAllocationDel, 3});
    add("dup-client-del-later", in);
    // A stale hashed channel on the peer address the reference binds to
    // another (hashed) channel: the re-add replaces the kChannelOut key, the
    // sweep of the stale channel deletes it.
    in = start(false);
    alloc4(in, 1, v4(0, 0), v4(0, 0));
    chan(in, 1, v4(0, 0), v4(0, 0), 0x4000);
    chan(in, 1, v4(0, 0), v4(1, 1), 0x4001);
    chan(in, 1, v4(0, 0), v4(2, 2), 0x4003);
    add("stale-channel-same-peer", in);
    // A stale allocation on the relayed address the reference gives another
    // id (the control plane reused the port while the link was down): its
    // sweep clears the relayed port and deletes the shared permission key.
    in = start(false);
    alloc4(in, 3, v4(2, 2), v4(0, 0));
    perm(in, 3, v4(0, 0), v4(0, 0));
    add("stale-alloc-same-relayed", in);
    return f;
}

// ExternalIps (the NAT's pairs), after all the others so that their files
// stay as they were. Pair bytes: external index 1-3 in bits 0-1 (0: none),
// relay index in bits 2-3 (0-1 the relayed pool's IPs, 2-3 others).
constexpr uint8_t pr(unsigned ext, unsigned relay) { return static_cast<uint8_t>(ext | relay << 2); }
void nat(In& in, uint8_t p4, uint8_t p6, uint8_t flaw = kWhole) { record(in, {kExternalIps, p4, p6, flaw}); }

fuzzseeds::Files nat_seeds() {
    fuzzseeds::Files f;
    auto add = [&](const std::string& name, const In& in) { f.emplace_back("nat-" + name, in); };
    // One family, the other, both; as the control plane sends them: Settings,
    // ExternalIps, then the resync (which keeps the pairs).
    In in = start(false);
    nat(in, pr(1, 0), 0);
    session(in);
    counters(in);
    add("v4", in);
    in = start(false);
    nat(in, 0, pr(1, 0));
    session(in);
    counters(in);
    add("v6", in);
    in = start(false);
    record(in, {kSettings, 0x03, 46 << 2});
    nat(in, pr(1, 0), pr(1, 0));
    begin(in, 1);
    session(in);
    end(in, 1, 6);
    counters(in);
    add("both-resync", in);
    // Both, then IPv4 alone (IPv6's pair no longer current, its external IP
    // still own), then IPv6 alone with a relay IP no allocation relays on,
    // then the first again (pairs already held: no new entry).
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    nat(in, pr(1, 0), 0);
    nat(in, 0, pr(2, 2));
    nat(in, pr(1, 0), pr(1, 0));
    add("switch", in);
    // Four different pairs in three messages (one external IP with two
    // relay IPs is two pairs), a fifth refused (no echo, table_full, IPv4
    // then has no current pair), old pairs taken again, another new one refused.
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    nat(in, pr(1, 1), 0);
    nat(in, pr(2, 2), 0);
    nat(in, pr(3, 3), pr(1, 0));  // IPv4's pair the fifth: refused
    nat(in, pr(1, 0), pr(1, 0));
    nat(in, pr(2, 0), pr(1, 0));  // IPv4's pair new: refused
    counters(in);
    add("fifth-refused", in);
    nat(in, pr(1, 1), 0);  // old: applied, echoed
    nat(in, pr(2, 0), pr(1, 0));
    nat(in, 0, pr(3, 1));  // IPv6's pair new: refused
    add("refused-then-old", in);
    // A refused message on a family's new pair while the other family's
    // part fits: each family is taken in turn (IPv4 first), so a new IPv4
    // pair takes the last free entry and IPv6's is refused (no echo, IPv6
    // then has none); with the history full, a new IPv4 pair refused while
    // IPv6 is given none leaves neither family a current pair.
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    nat(in, pr(2, 0), 0);
    nat(in, pr(3, 0), pr(2, 1));  // both new, room for one: IPv4's taken, IPv6's refused
    nat(in, pr(1, 0), pr(1, 0));  // both old: applied
    nat(in, pr(2, 1), 0);         // full: IPv4 refused (none current), IPv6 cleared
    add("refused-partly", in);
    // Resyncs: one with ExternalIps before it keeps the pairs, one without
    // clears them (own addresses stay), a refused (valid) ExternalIps counts
    // as sent, an invalid one does not.
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    begin(in, 1);
    session(in);
    end(in, 1, 6);
    begin(in, 2);  // no ExternalIps since the previous ResyncBegin: cleared
    session(in);
    end(in, 2, 6);
    nat(in, pr(2, 1), 0);
    begin(in, 3);  // kept
    end(in, 3);
    add("resync-without-clears", in);
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    nat(in, pr(2, 0), pr(2, 0));
    begin(in, 1);
    nat(in, pr(3, 0), pr(1, 0));  // the history full: IPv4 refused
    begin(in, 2);                 // valid if refused: kept
    nat(in, pr(1, 0), pr(1, 0), kEqual);
    begin(in, 3);  // only an invalid one since: cleared
    add("resync-after-refused", in);
    // ExternalIps after the last ResyncBegin: the reference resync that
    // follows every input keeps the pairs; on small tables too.
    in = start(true);
    for (uint8_t id = 0; id < 6; id++) {
        alloc4(in, id, v4(id & 3, id >> 2), v4(id & 3, id >> 2));
    }
    begin(in, 4);
    nat(in, pr(3, 2), pr(3, 3));
    add("before-reference-small", in);
    // Every flaw in each family (each invalid: not applied, not echoed,
    // malformed), between valid ones; no family at all; the header
    // corruptions.
    in = start(false);
    nat(in, pr(1, 0), pr(1, 0));
    for (uint8_t fl = 1; fl < kFlaws; fl++) {
        nat(in, pr(2, 1), pr(2, 1), fl);
        nat(in, pr(2, 1), 0, static_cast<uint8_t>(0x80 | fl));
        nat(in, 0, pr(3, 2), fl);
    }
    record(in, {kExternalIps});  // short body: no family
    nat(in, 0, 0);
    for (uint8_t c = kBadVersion; c <= kLastCorruption; c++) {
        record(in, {c, kExternalIps, pr(1, 0), pr(1, 0)});
    }
    counters(in);
    add("invalid-each", in);
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    fuzzseeds::Files all = seeds();
    for (auto& f : fixed_bugs()) {
        all.push_back(std::move(f));
    }
    for (auto& f : nat_seeds()) {
        all.push_back(std::move(f));
    }
    return fuzzseeds::write_seeds(argc, argv, all);
}
