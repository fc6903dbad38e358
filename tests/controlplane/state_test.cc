// Restarts: the allocation snapshot codec (round trip, and every kind of
// damaged file rejected with a message) and AllocationManager's snapshot /
// restore through the real protocol core: a restored allocation keeps its id,
// 5-tuple, relayed ports, user, permissions and channels with the lifetimes
// they had left, is reported to the offload hook like a new one, and answers
// the client's next requests and relays its data.
#include <zlib.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "common/bytes.h"
#include "core/state_snapshot.h"
#include "io/state_store.h"
#include "log_capture.h"
#include "server_fixture.h"

namespace turn::cp::test {
namespace {

LoopSnapshot sample() {
    LoopSnapshot s;
    s.loop = 1;
    s.loops = 2;
    s.saved_unix_ms = 1'700'000'000'123;
    SavedAllocation a;
    a.id = 42;
    a.five_tuple = {A("198.18.1.1:5000"), A("198.18.0.1:3478"), Transport::kUdp};
    a.username = "alice";
    a.realm = "example.org";
    a.relayed[0] = A("198.18.0.1:50001");
    a.relayed[1] = A("[fd00::1]:50002");
    a.expires_unix_ms = 1'700'000'599'000;
    a.dont_fragment = true;
    a.permissions = {{A("198.18.2.2:0"), 1'700'000'299'000}, {A("[fd00::2]:0"), 1'700'000'000'100}};
    a.channels = {{0x4000, A("198.18.2.2:7000"), 1'700'000'598'000}};
    a.created_unix_ms = 1'699'999'400'000;
    a.usage = {7, 700, 3, 1'234'567'890'123};
    a.relayed_expires_unix_ms = {1'700'000'599'000, 1'700'000'300'000};  // IPv6's refreshed no more
    s.allocations.push_back(a);
    SavedAllocation b;
    b.id = 43;
    b.five_tuple = {A("[fd00::99]:6000"), A("[fd00::1]:3478"), Transport::kUdp};
    b.username = std::string(300, 'u');
    b.realm = "example.org";
    b.relayed[1] = A("[fd00::1]:50010");
    b.expires_unix_ms = 1'700'000'000'001;
    b.mobile = true;
    b.moved = true;
    b.relayed_expires_unix_ms = {0, 1'700'000'000'001};
    s.allocations.push_back(b);
    return s;
}

// Re-seals a modified body with a valid CRC (zlib's crc32 of everything
// before it), to reach the checks behind the checksum.
void reseal(std::vector<uint8_t>& d) {
    const uLong crc = crc32(crc32(0L, Z_NULL, 0), d.data(), static_cast<uInt>(d.size() - 4));
    store_be32(d.data() + d.size() - 4, static_cast<uint32_t>(crc));
}

TEST(StateSnapshot, RoundTripKeepsEveryField) {
    const LoopSnapshot s = sample();
    std::string err;
    auto d = decode_snapshot(encode_snapshot(s), err);
    ASSERT_TRUE(d) << err;
    EXPECT_EQ(d->loop, 1u);
    EXPECT_EQ(d->loops, 2u);
    EXPECT_EQ(d->saved_unix_ms, s.saved_unix_ms);
    EXPECT_EQ(d->allocations, s.allocations);
}

TEST(StateSnapshot, EveryTruncationIsRejected) {
    const auto bytes = encode_snapshot(sample());
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::string err;
        EXPECT_FALSE(decode_snapshot(std::span(bytes).first(n), err)) << n;
        EXPECT_FALSE(err.empty());
    }
}

TEST(StateSnapshot, FlippedByteFailsTheChecksum) {
    auto bytes = encode_snapshot(sample());
    bytes[40] ^= 0x01;
    std::string err;
    EXPECT_FALSE(decode_snapshot(bytes, err));
    EXPECT_EQ(err, "checksum mismatch (file truncated or corrupted)");
}

TEST(StateSnapshot, BadMagicAndVersion) {
    auto bytes = encode_snapshot(sample());
    std::string err;
    auto m = bytes;
    m[0] = 'X';
    EXPECT_FALSE(decode_snapshot(m, err));
    EXPECT_EQ(err, "not a turn-relay state snapshot (bad magic)");
    auto v = bytes;
    store_be32(v.data() + 8, 99);
    reseal(v);
    EXPECT_FALSE(decode_snapshot(v, err));
    EXPECT_EQ(err, "snapshot version 99, this build reads versions 1 to 3");
    store_be32(v.data() + 8, 0);
    reseal(v);
    EXPECT_FALSE(decode_snapshot(v, err));
    EXPECT_EQ(err, "snapshot version 0, this build reads versions 1 to 3");
}

// An absent relayed address is family 0; the bytes after it mean nothing
// (the writer puts zeros) and decode as no address at all, so that the
// snapshot saved again is the same (the fuzzer found a port kept there).
TEST(StateSnapshot, AnAbsentAddressCarriesNothing) {
    LoopSnapshot one = sample();
    one.allocations.resize(1);
    one.allocations[0].relayed[1] = Address{};
    auto bytes = encode_snapshot(one);
    // The second relayed address: after id, transport, client, server,
    // username and realm (u16 length + bytes each) and the first relayed one.
    const size_t rec = 8 + 4 + 4 + 4 + 8 + 4;
    const size_t at = rec + 8 + 1 + 19 + 19 + 2 + 5 + 2 + 11 + 19;
    ASSERT_EQ(bytes[at], 0);
    bytes[at + 1] = 0xAB;   // an IP byte
    bytes[at + 17] = 0xFF;  // the port's
    reseal(bytes);
    std::string err;
    auto d = decode_snapshot(bytes, err);
    ASSERT_TRUE(d) << err;
    EXPECT_EQ(d->allocations[0].relayed[1], Address{});
    EXPECT_EQ(d->allocations, one.allocations);
}

// A file from a build before version 2 (no creation time or usage after the
// channels) still loads: the allocation comes back with both unknown (0).
TEST(StateSnapshot, AVersionOneFileStillLoads) {
    LoopSnapshot one = sample();
    one.allocations.resize(1);
    auto v1 = encode_snapshot(one);
    // Version 3 ends each allocation with 5 + 2 x u64; version 1 had none.
    v1.erase(v1.end() - 4 - 56, v1.end() - 4);
    store_be32(v1.data() + 8, 1);
    reseal(v1);
    std::string err;
    auto d = decode_snapshot(v1, err);
    ASSERT_TRUE(d) << err;
    ASSERT_EQ(d->allocations.size(), 1u);
    SavedAllocation want = one.allocations[0];
    want.created_unix_ms = 0;
    want.usage = {};
    want.relayed_expires_unix_ms = {};
    EXPECT_EQ(d->allocations[0], want);
    // The same bytes said to be version 2 are 40 bytes short.
    store_be32(v1.data() + 8, 2);
    reseal(v1);
    EXPECT_FALSE(decode_snapshot(v1, err));
}

// A version 2 file (no relayed addresses' own expiries) loads with them
// unknown (0): each relayed address has the allocation's lifetime.
TEST(StateSnapshot, AVersionTwoFileStillLoads) {
    LoopSnapshot one = sample();
    one.allocations.resize(1);
    auto v2 = encode_snapshot(one);
    v2.erase(v2.end() - 4 - 16, v2.end() - 4);
    store_be32(v2.data() + 8, 2);
    reseal(v2);
    std::string err;
    auto d = decode_snapshot(v2, err);
    ASSERT_TRUE(d) << err;
    ASSERT_EQ(d->allocations.size(), 1u);
    SavedAllocation want = one.allocations[0];
    want.relayed_expires_unix_ms = {};
    EXPECT_EQ(d->allocations[0], want);
    // Said to be version 3, the same bytes are 16 short.
    store_be32(v2.data() + 8, 3);
    reseal(v2);
    EXPECT_FALSE(decode_snapshot(v2, err));
}

TEST(StateSnapshot, HostileCountsAndFieldsAreBounded) {
    LoopSnapshot one = sample();
    one.allocations.resize(1);
    const auto bytes = encode_snapshot(one);
    std::string err;
    // Allocation count (after magic, version, loop, loops, saved_unix_ms).
    auto c = bytes;
    store_be32(c.data() + 8 + 4 + 4 + 4 + 8, 0xFFFFFFFF);
    reseal(c);
    EXPECT_FALSE(decode_snapshot(c, err));
    EXPECT_EQ(err, "allocation count 4294967295 does not fit the file");
    // Client address family (first byte after id and transport).
    const size_t rec = 8 + 4 + 4 + 4 + 8 + 4;
    auto f = bytes;
    f[rec + 8 + 1] = 5;
    reseal(f);
    EXPECT_FALSE(decode_snapshot(f, err));
    EXPECT_EQ(err, "client address: bad address family 5");
    // Transport other than UDP.
    auto t = bytes;
    t[rec + 8] = 6;
    reseal(t);
    EXPECT_FALSE(decode_snapshot(t, err));
    EXPECT_EQ(err, "allocation transport 6 (only UDP is saved)");
    // Username length beyond the bound.
    auto u = bytes;
    store_be16(u.data() + rec + 8 + 1 + 19 + 19, 5000);
    reseal(u);
    EXPECT_FALSE(decode_snapshot(u, err));
    EXPECT_EQ(err, "username longer than 1024 bytes");
    // Trailing garbage inside the checksummed body.
    auto g = bytes;
    g.insert(g.end() - 4, {1, 2, 3});
    reseal(g);
    EXPECT_FALSE(decode_snapshot(g, err));
    EXPECT_EQ(err, "3 unexpected bytes after the last allocation");
}

// A state directory of its own under /tmp (removed before and after).
class ScratchDir {
public:
    explicit ScratchDir(const std::string& name) : path_("/tmp/" + name + "-" + std::to_string(::getpid())) {
        std::filesystem::remove_all(path_);
    }
    ~ScratchDir() { std::filesystem::remove_all(path_); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

bool exists(const std::string& path) { return std::filesystem::exists(path); }

TEST(StateStore, SavesLoadsAndKeepsTheNonceSecret) {
    const ScratchDir scratch("turn-state-test");
    const std::string& dir = scratch.path();
    std::vector<uint8_t> first;
    {
        StateStore st(dir + "/sub");
        ASSERT_EQ(st.prepare(), "");
        std::string err;
        auto secret = st.nonce_secret(err);
        ASSERT_TRUE(secret) << err;
        EXPECT_EQ(secret->size(), 32u);
        first = *secret;
        // Loop 1 hands over everything, then a change and a removal; the
        // writer merges them before it writes.
        auto all = sample().allocations;
        SavedAllocation changed = all[0];
        changed.expires_unix_ms += 60'000;
        st.submit(1, all, {}, true);
        st.submit(1, {changed}, {43}, false);
        st.start(2);
        st.stop();
        EXPECT_EQ(st.writes(), 1u);
        EXPECT_EQ(st.write_errors(), 0u);
    }
    StateStore st(dir + "/sub");
    ASSERT_EQ(st.prepare(), "");
    std::string err;
    EXPECT_EQ(*st.nonce_secret(err), first);
    EXPECT_FALSE(st.load(0, err));
    EXPECT_EQ(err, "");  // none saved: not an error
    auto s = st.load(1, err);
    ASSERT_TRUE(s) << err;
    EXPECT_EQ(s->loop, 1u);
    EXPECT_EQ(s->loops, 2u);
    ASSERT_EQ(s->allocations.size(), 1u);  // 43 was removed
    EXPECT_EQ(s->allocations[0].id, 42u);
    EXPECT_EQ(s->allocations[0].expires_unix_ms, sample().allocations[0].expires_unix_ms + 60'000);
    EXPECT_EQ(s->allocations[0].channels, sample().allocations[0].channels);
    EXPECT_EQ(st.extra_snapshots(1), std::vector<unsigned>{1});
    EXPECT_TRUE(st.extra_snapshots(2).empty());
    // A damaged file is reported with its path.
    std::ofstream(st.loop_path(0)) << "garbage that is not a snapshot";
    EXPECT_FALSE(st.load(0, err));
    EXPECT_EQ(err, st.loop_path(0) + ": not a turn-relay state snapshot (bad magic)");
}

// The ends between two saves: what a crashed process's journals name is
// known to the next one (a torn last id ignored), and a journal goes only
// once a snapshot written without its allocations covers it.
TEST(StateStore, EndJournalsLastUntilASnapshotCoversThem) {
    const ScratchDir scratch("turn-state-journal-test");
    const std::string& dir = scratch.path();
    {
        StateStore st(dir);
        ASSERT_EQ(st.prepare(), "");
        const auto e = st.ended_allocations(2);
        EXPECT_TRUE(e.ids.empty());
        EXPECT_EQ(e.next_seq, 1u);
        EndJournal j(st, 1, e.next_seq);
        EXPECT_EQ(j.roll(), 0u);  // nothing written: covers none
        j.append(std::vector<uint64_t>{7, 8});
        j.append(std::vector<uint64_t>{9});
        EXPECT_TRUE(exists(st.journal_path(1, 1)));
        EXPECT_EQ(j.roll(), 1u);
        EXPECT_EQ(j.roll(), 1u);  // no file since: still 1
        j.append(std::vector<uint64_t>{10});
        EXPECT_TRUE(exists(st.journal_path(1, 2)));
        // The process dies here: nothing submitted, nothing deleted.
    }
    std::ofstream(dir + "/loop-1.ended.2", std::ios::app) << "abc";  // torn by the crash
    std::ofstream(dir + "/loop-1.ended.x") << "not a journal";
    std::ofstream(dir + "/loop-5.ended.1") << std::string(8, '\0');  // of a loop this process does not run
    {
        StateStore st(dir);
        ASSERT_EQ(st.prepare(), "");
        auto e = st.ended_allocations(2);
        EXPECT_EQ(e.ids, (std::unordered_set<uint64_t>{0, 7, 8, 9, 10}));
        EXPECT_EQ(e.next_seq, 3u);
        // Loop 5's journal is left to the caller, which deletes it with loop 5's snapshot (app/main.cc).
        EXPECT_EQ(e.extra_journals, std::vector<std::string>{dir + "/loop-5.ended.1"});
        EXPECT_TRUE(e.errors.empty());
        std::filesystem::remove(e.extra_journals[0]);
        // The loop's first save covers the previous process's journals; an
        // end after it goes to a journal of this process, which stays.
        EndJournal j(st, 1, e.next_seq);
        st.submit(1, {}, {}, true, j.roll());
        j.append(std::vector<uint64_t>{11});
        st.start(2);
        st.stop();
        EXPECT_EQ(st.writes(), 1u);
        EXPECT_FALSE(exists(st.journal_path(1, 1)));
        EXPECT_FALSE(exists(st.journal_path(1, 2)));
        EXPECT_TRUE(exists(st.journal_path(1, 3)));
        EXPECT_TRUE(exists(dir + "/loop-1.ended.x"));  // not ours to delete
    }
    {
        StateStore st(dir);
        ASSERT_EQ(st.prepare(), "");
        const auto e = st.ended_allocations(2);
        EXPECT_EQ(e.ids, (std::unordered_set<uint64_t>{11}));
        EXPECT_EQ(e.max_id, 11u);
        // A snapshot that cannot be written (a directory in its place) does
        // not take the journals it would have covered with it.
        std::filesystem::remove(st.loop_path(1));
        std::filesystem::create_directories(st.loop_path(1) + "/in-the-way");
        EndJournal j(st, 1, e.next_seq);
        st.submit(1, {}, {}, true, j.roll());
        st.start(2);
        st.stop();
        EXPECT_EQ(st.write_errors(), 1u);
        EXPECT_TRUE(exists(st.journal_path(1, 3)));
    }
}

// A file is closed at a save only a minute after it was opened (or at 1 MiB),
// a name that exists is never reused, and the previous process's journals go
// with the first save however far apart their numbers are.
TEST(StateStore, EndJournalsRollAMinuteApartAndNeverOverwrite) {
    const ScratchDir scratch("turn-state-journal-roll");
    const std::string& dir = scratch.path();
    {
        StateStore st(dir);
        ASSERT_EQ(st.prepare(), "");
        std::ofstream(st.journal_path(0, 5)) << std::string(8, '\1');        // a quiet loop's old journal
        std::ofstream(st.journal_path(1, 1'000'000)) << std::string(8, '\2');  // a busy loop's
        const auto e = st.ended_allocations(2);
        EXPECT_EQ(e.next_seq, 1'000'001u);
        std::ofstream(st.journal_path(0, 1'000'001)) << "someone else's";  // appeared since the listing
        EndJournal j(st, 0, e.next_seq);
        EXPECT_FALSE(j.roll_due(1'000));
        j.append(std::vector<uint64_t>{21}, 1'000);
        EXPECT_EQ(std::filesystem::file_size(st.journal_path(0, 1'000'002)), 8u);
        EXPECT_EQ(std::filesystem::file_size(st.journal_path(0, 1'000'001)), 14u);  // untouched
        EXPECT_FALSE(j.roll_due(1'000 + EndJournal::kRollEveryMs - 1));
        EXPECT_TRUE(j.roll_due(1'000 + EndJournal::kRollEveryMs));
        EXPECT_EQ(j.closed(), 1'000'000u);
        st.submit(0, {}, {}, true, j.closed());  // the first save: the old journals go
        st.submit(1, {}, {}, true, j.closed());
        st.start(2);
        st.stop();
        EXPECT_FALSE(exists(st.journal_path(0, 5)));
        EXPECT_FALSE(exists(st.journal_path(1, 1'000'000)));
        EXPECT_TRUE(exists(st.journal_path(0, 1'000'002)));  // this process's, not covered yet
        EXPECT_EQ(j.roll(), 1'000'002u);
        // 1 MiB makes a file due at once.
        j.append(std::vector<uint64_t>(EndJournal::kRollBytes / 8, 7), 5'000);
        EXPECT_TRUE(j.roll_due(5'000));
    }
}

TEST(StateStore, UnwritableDirectoryIsAConfigurationError) {
    StateStore st("/proc/turn-relay-state");
    EXPECT_NE(st.prepare().find("[state].dir"), std::string::npos);
}

// Records what reaches the offload hook (the dataplane's view).
struct RecordingHook final : OffloadHook {
    void allocation_added(const OffloadAllocation& a) override { added.push_back(a); }
    void allocation_removed(uint64_t id) override { removed.push_back(id); }
    void permission_added(uint64_t id, const Address& ip) override { perms.emplace_back(id, ip); }
    void channel_added(uint64_t id, uint16_t ch, const Address& peer) override { chans.push_back({id, ch, peer}); }
    struct Chan {
        uint64_t id;
        uint16_t ch;
        Address peer;
    };
    std::vector<OffloadAllocation> added;
    std::vector<uint64_t> removed;
    std::vector<std::pair<uint64_t, Address>> perms;
    std::vector<Chan> chans;
};

class Restore : public ServerTest {
protected:
    // A fresh process: new shared state (ports, quotas), new core, same nonce
    // secret (the state directory keeps it).
    void restart() {
        server.reset();
        start(base_config());
        server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    }
    // The core tells the hook of every allocation it ends when it goes: before
    // `rec`, which the base class would outlive.
    void TearDown() override { server.reset(); }
    RecordingHook rec;
};

TEST_F(Restore, AllocationComesBackWithItsStateAndServesTheClient) {
    const auto ft = tuple(5000);
    const Address peer = A("198.18.2.2:7000");
    const Address peer2 = A("198.18.3.3:9");
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, peer).success());
    ASSERT_TRUE(create_permission(ft, {peer2}).success());
    Allocation* before = server->allocations().find(ft);
    ASSERT_NE(before, nullptr);
    const uint64_t id = before->id;
    const Address relayed = before->relays[0].addr;
    advance_s(100);

    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    EXPECT_EQ(saved[0].expires_unix_ms, clock.unix_ms() + 500'000);  // 600 s default lifetime, 100 s gone
    EXPECT_EQ(saved[0].channels.size(), 1u);
    EXPECT_EQ(saved[0].permissions.size(), 2u);

    restart();
    ASSERT_EQ(server->allocations().find(ft), nullptr);
    // 20 s pass while no control plane runs.
    clock.advance_s(20);
    EXPECT_EQ(server->allocations().restore(saved[0]), "");
    Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->id, id);
    EXPECT_EQ(a->relays[0].addr, relayed);
    EXPECT_EQ(a->username, "alice");
    EXPECT_EQ(a->expires_ms(), clock.now_ms() + 480'000);
    EXPECT_EQ(shared->allocations.load(), 1);
    EXPECT_TRUE(a->permitted(peer2, clock.now_ms()));
    EXPECT_EQ(a->channel_for(peer, clock.now_ms()), std::optional<uint16_t>(0x4001));
    // The offload hook sees it exactly as a new allocation: same id.
    ASSERT_EQ(rec.added.size(), 1u);
    EXPECT_EQ(rec.added[0].id, id);
    EXPECT_EQ(rec.added[0].relayed[0], relayed);
    EXPECT_EQ(rec.perms.size(), 2u);
    ASSERT_EQ(rec.chans.size(), 1u);
    EXPECT_EQ(rec.chans[0].id, id);
    // The port is taken again: a new allocation cannot get it.
    const auto ft2 = tuple(5001);
    ASSERT_TRUE(allocate(ft2).success());
    EXPECT_NE(server->allocations().find(ft2)->relays[0].addr, relayed);
    EXPECT_GT(server->allocations().find(ft2)->id, id);

    // The client's next requests are answered: Allocate again is 437,
    // Refresh works, and ChannelData reaches the peer.
    EXPECT_EQ(allocate(ft).code(), 437);
    EXPECT_TRUE(refresh(ft, 600).success());
    ASSERT_NO_FATAL_FAILURE(ping(ft));
    EXPECT_EQ(io.peer_sends.back().peer, peer);
    // The permission expires when it would have without the restart.
    advance_s(181);
    EXPECT_FALSE(server->allocations().find(ft)->permitted(peer2, clock.now_ms()));
}

// RFC 8016: a moved allocation comes back on its new 5-tuple with a client
// path (that 5-tuple may hash to another loop), still mobile; the previous
// process's ticket does not open, but a Refresh showing it gets a new one.
TEST_F(Restore, AMovedAllocationComesBackWithItsClientPath) {
    const auto ft = tuple(5000);
    const FiveTuple moved{A("198.18.2.2:7000"), A("198.18.0.1:3478"), Transport::kUdp};
    auto a = allocate(ft, [](auto& b) { b.add(stun::attr::kMobilityTicket, std::span<const uint8_t>()); });
    ASSERT_TRUE(a.success());
    const auto* t = a.view.find(stun::attr::kMobilityTicket);
    ASSERT_NE(t, nullptr);
    const std::vector<uint8_t> ticket(a.view.value(*t).begin(), a.view.value(*t).end());
    auto refresh_with = [&](const FiveTuple& at) {
        return request(at, stun::Method::kRefresh, [&](auto& b) {
            b.add_u32(stun::attr::kLifetime, 600);
            b.add(stun::attr::kMobilityTicket, ticket);
        });
    };
    ASSERT_TRUE(refresh_with(moved).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    EXPECT_TRUE(saved[0].mobile);
    EXPECT_TRUE(saved[0].moved);
    EXPECT_EQ(saved[0].five_tuple, moved);
    restart();
    io.paths.clear();
    EXPECT_EQ(server->allocations().restore(saved[0]), "");
    ASSERT_NE(server->allocations().find(moved), nullptr);
    ASSERT_EQ(io.paths.size(), 1u);
    EXPECT_EQ(io.paths.begin()->second, moved);
    EXPECT_EQ(refresh_with(tuple(5005)).code(), 400) << "the old process's ticket";
    auto r = refresh_with(moved);
    ASSERT_TRUE(r.success());
    EXPECT_TRUE(r.has(stun::attr::kMobilityTicket)) << "a ticket of this process";
    ASSERT_TRUE(refresh(moved, 0).success());
    EXPECT_TRUE(io.paths.empty()) << "the path closes with the allocation";
}

// RFC 8016: the offload knows an allocation by its client 5-tuple, so a move
// re-announces it under the new one with its permissions and channels.
TEST_F(Restore, AMoveIsAnnouncedToTheOffloadUnderTheNewFiveTuple) {
    restart();  // the recording hook from here on
    const auto ft = tuple(5000);
    const FiveTuple moved{A("198.18.2.2:7000"), A("198.18.0.1:3478"), Transport::kUdp};
    auto a = allocate(ft, [](auto& b) { b.add(stun::attr::kMobilityTicket, std::span<const uint8_t>()); });
    ASSERT_TRUE(a.success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, A("198.18.2.2:9000")).success());
    ASSERT_TRUE(create_permission(ft, {A("198.18.3.3:1")}).success());
    const auto* t = a.view.find(stun::attr::kMobilityTicket);
    ASSERT_NE(t, nullptr);
    const std::vector<uint8_t> ticket(a.view.value(*t).begin(), a.view.value(*t).end());
    const uint64_t id = server->allocations().find(ft)->id;
    rec.added.clear();
    rec.removed.clear();
    rec.perms.clear();
    rec.chans.clear();
    ASSERT_TRUE(request(moved, stun::Method::kRefresh, [&](auto& b) {
                    b.add_u32(stun::attr::kLifetime, 600);
                    b.add(stun::attr::kMobilityTicket, ticket);
                }).success());
    EXPECT_EQ(rec.removed, std::vector<uint64_t>{id});
    ASSERT_EQ(rec.added.size(), 1u);
    EXPECT_EQ(rec.added[0].id, id);
    EXPECT_EQ(rec.added[0].five_tuple, moved);
    EXPECT_EQ(rec.perms.size(), 2u) << "the channel's peer and the other permission";
    ASSERT_EQ(rec.chans.size(), 1u);
    EXPECT_EQ(rec.chans[0].ch, 0x4001);
    EXPECT_EQ(rec.chans[0].id, id);
}

// With tracking on, a save collects only what changed since the last one:
// the allocations touched (with their current state) and the ids removed.
TEST_F(Restore, ChangesAreCollectedIncrementally) {
    server->allocations().track_changes(true);
    auto& m = server->allocations();
    const auto ft1 = tuple(5000);
    const auto ft2 = tuple(5001);
    ASSERT_TRUE(allocate(ft1).success());
    ASSERT_TRUE(allocate(ft2).success());
    std::vector<SavedAllocation> changed;
    std::vector<uint64_t> removed;
    m.take_changes(changed, removed);
    EXPECT_EQ(changed.size(), 2u);
    EXPECT_TRUE(removed.empty());
    // Nothing happened: nothing to save (time passing alone changes nothing).
    changed.clear();
    advance_s(10);
    m.take_changes(changed, removed);
    EXPECT_TRUE(changed.empty());
    // A channel on one, a deletion of the other.
    ASSERT_TRUE(channel_bind(ft1, 0x4001, A("198.18.2.2:7000")).success());
    const uint64_t id2 = m.find(ft2)->id;
    ASSERT_TRUE(refresh(ft2, 0).success());
    m.take_changes(changed, removed);
    ASSERT_EQ(changed.size(), 1u);
    EXPECT_EQ(changed[0].id, m.find(ft1)->id);
    EXPECT_EQ(changed[0].channels.size(), 1u);
    EXPECT_EQ(removed, std::vector<uint64_t>{id2});
    // An expiry is a change too: the permission ends after 300 s.
    changed.clear();
    removed.clear();
    advance_s(301);
    m.take_changes(changed, removed);
    ASSERT_EQ(changed.size(), 1u);
    EXPECT_TRUE(changed[0].permissions.empty());
}

// A dual allocation's relayed addresses are saved with their own lifetimes;
// one that ran out while no process ran does not come back, nor do its
// family's permissions and channels; the other comes back with what it had.
TEST_F(Restore, EachRelayedAddressKeepsItsOwnLifetime) {
    const auto ft = tuple(5000);
    const Address v4peer = A("198.18.2.2:7000");
    const Address v6peer = A("[2001:db8::2]:7000");
    ASSERT_TRUE(allocate(ft, [](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); })
                    .success());
    advance_s(500);
    ASSERT_TRUE(request(ft, stun::Method::kRefresh, [](auto& b) {
                    b.add_u32(stun::attr::kLifetime, 600);
                    b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv4);
                }).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, v4peer).success());
    ASSERT_TRUE(channel_bind(ft, 0x4002, v6peer).success());
    advance_s(50);
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    const uint64_t unix_now = clock.unix_ms();
    EXPECT_EQ(saved[0].relayed_expires_unix_ms[0], unix_now + 550'000);
    EXPECT_EQ(saved[0].relayed_expires_unix_ms[1], unix_now + 50'000);
    EXPECT_EQ(saved[0].expires_unix_ms, unix_now + 550'000);
    std::string err;
    auto round = decode_snapshot(encode_snapshot(LoopSnapshot{0, 1, unix_now, saved}), err);
    ASSERT_TRUE(round) << err;
    ASSERT_EQ(round->allocations, saved);

    // Back 10 s later: both, each with what it had left.
    restart();
    clock.advance_s(10);
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    const Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    ASSERT_TRUE(a->dual());
    EXPECT_EQ(a->relays[0].expires_ms, clock.now_ms() + 540'000);
    EXPECT_EQ(a->relays[1].expires_ms, clock.now_ms() + 40'000);
    EXPECT_EQ(a->channels.size(), 2u);
    advance_s(41);
    a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_FALSE(a->has_family(Family::kIPv6));
    EXPECT_EQ(a->channels.size(), 1u);

    // Back 60 s after that (111 s after the save): IPv6's ran out meanwhile; IPv4 alone, with its
    // family's permission and channel only.
    restart();
    rec = RecordingHook{};
    clock.advance_s(60);
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_TRUE(a->has_family(Family::kIPv4));
    EXPECT_FALSE(a->has_family(Family::kIPv6));
    EXPECT_EQ(shared->ports.in_use(Family::kIPv6), 0u);
    EXPECT_EQ(shared->allocations_v6.load(), 0);
    EXPECT_EQ(a->channel_for(v4peer, clock.now_ms()), std::optional<uint16_t>(0x4001));
    EXPECT_EQ(a->channels.size(), 1u);
    EXPECT_EQ(a->permissions.size(), 1u);
    ASSERT_EQ(rec.added.size(), 1u);
    EXPECT_EQ(rec.added[0].relayed[1].family, Family::kNone);
    for (const auto& [id, ip] : rec.perms) {
        EXPECT_TRUE(ip.is_v4()) << ip.to_string();
    }
    EXPECT_EQ(a->expires_ms(), clock.now_ms() + (saved[0].relayed_expires_unix_ms[0] - clock.unix_ms()));  // 439 s
}

// A file is not trusted with lifetimes: what is left of each is at most what
// the configuration ([allocation].max_lifetime_s) and RFC 8656 (permissions
// 300 s, channels 600 s) grant.
TEST_F(Restore, LifetimesAreCappedAtWhatTheConfigurationGrants) {
    const auto ft = tuple(5000);
    const Address peer = A("198.18.2.2:7000");
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, peer).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    const uint64_t far = clock.unix_ms() + 10 * 86'400'000ull;
    saved[0].expires_unix_ms = far;
    saved[0].relayed_expires_unix_ms[0] = far;
    ASSERT_EQ(saved[0].permissions.size(), 1u);
    saved[0].permissions[0].expires_unix_ms = far;
    saved[0].channels[0].expires_unix_ms = far;
    restart();
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    const Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    const uint64_t now = clock.now_ms();
    EXPECT_EQ(a->expires_ms(), now + uint64_t{shared->config.max_lifetime_s} * 1000);
    ASSERT_EQ(a->permissions.size(), 1u);
    EXPECT_EQ(a->permissions.begin()->second.expires_ms, now + 300'000);
    ASSERT_EQ(a->channels.size(), 1u);
    EXPECT_EQ(a->channels.begin()->second.expires_ms, now + 600'000);
}

// The peer policy is the restoring process's: permissions and channels it
// refuses (here private peers, permitted by the process that saved them) do
// not come back, the others do.
TEST_F(Restore, PermissionsAndChannelsFollowThisProcesssPolicy) {
    Config permissive = base_config();
    permissive.allow_private_peers = true;
    start(permissive);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    const auto ft = tuple(5000);
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(create_permission(ft, {A("10.1.2.3:0"), A("198.18.2.2:0")}).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, A("192.168.1.1:7000")).success());
    ASSERT_TRUE(channel_bind(ft, 0x4002, A("198.18.2.3:7000")).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    ASSERT_EQ(saved[0].permissions.size(), 4u);  // the channels' peers have permissions too
    restart();  // the default policy: private peers denied
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    const Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    const uint64_t now = clock.now_ms();
    EXPECT_TRUE(a->permitted(A("198.18.2.2:1"), now));
    EXPECT_TRUE(a->permitted(A("198.18.2.3:1"), now));
    EXPECT_FALSE(a->permitted(A("10.1.2.3:1"), now));
    EXPECT_FALSE(a->permitted(A("192.168.1.1:1"), now));
    ASSERT_EQ(a->channels.size(), 1u);
    EXPECT_EQ(a->channels.begin()->first, 0x4002);
}

// What the control plane relays changes the allocation's saved usage only
// every 1024 datagrams (either way), so that a crash loses less than that.
TEST_F(Restore, UsageIsSavedEvery1024Datagrams) {
    server->allocations().track_changes(true);
    auto& m = server->allocations();
    const auto ft = tuple(5000);
    const Address peer = A("198.18.2.2:7000");
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, peer).success());
    std::vector<SavedAllocation> changed;
    std::vector<uint64_t> removed;
    m.take_changes(changed, removed);
    changed.clear();
    const std::vector<uint8_t> cd{0x40, 0x01, 0x00, 0x02, 'h', 'i', 0, 0};
    for (int i = 0; i < 1000; ++i) {
        server->on_client_datagram(ft, cd);
    }
    const std::vector<uint8_t> back{'y', 'o', 'u'};
    for (int i = 0; i < 23; ++i) {
        server->on_peer_datagram(m.find(ft)->relays[0].id, peer, back);
    }
    m.take_changes(changed, removed);
    EXPECT_TRUE(changed.empty());  // 1023 datagrams
    server->on_peer_datagram(m.find(ft)->relays[0].id, peer, back);
    m.take_changes(changed, removed);
    ASSERT_EQ(changed.size(), 1u);
    EXPECT_EQ(changed[0].usage, (RelayUsage{1000, 2000, 24, 72}));
}

TEST_F(Restore, WhatCannotComeBackTakesNothing) {
    const auto ft = tuple(5000);
    ASSERT_TRUE(allocate(ft).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    restart();
    auto& m = server->allocations();
    SavedAllocation old = saved[0];
    old.expires_unix_ms = clock.unix_ms();
    EXPECT_EQ(m.restore(old), "expired while no control plane ran");
    // Its port is held by someone else now.
    io.busy_ports.insert(saved[0].relayed[0].port);
    EXPECT_EQ(m.restore(saved[0]), "cannot bind relayed address " + saved[0].relayed[0].to_string());
    io.busy_ports.clear();
    // The relay IP changed in the configuration.
    SavedAllocation moved = saved[0];
    moved.relayed[0] = A("198.18.0.77").with_port(moved.relayed[0].port);
    EXPECT_EQ(m.restore(moved), "relayed address " + moved.relayed[0].to_string() +
                                       " is not on a configured relay IP");
    // Outside the port range.
    SavedAllocation far = saved[0];
    far.relayed[0].port = 60000;
    EXPECT_EQ(m.restore(far), "relayed port 60000 is outside the port range or taken");
    EXPECT_EQ(m.size(), 0u);
    EXPECT_EQ(shared->allocations.load(), 0);
    EXPECT_TRUE(io.open.empty());
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 0u);
    // Its listener is gone from [server].listen: its client could never reach
    // it, and it would hold its ports and its user's quota until it expired.
    SavedAllocation unheard = saved[0];
    unheard.five_tuple.server = A("198.18.0.1:3479");
    EXPECT_EQ(m.restore(unheard), "its server address 198.18.0.1:3479 is not a UDP listener here");
    // An id the next allocation's would wrap from (to 0).
    SavedAllocation last = saved[0];
    last.id = UINT64_MAX;
    EXPECT_EQ(m.restore(last), "its id is out of range");
    // And it still comes back once nothing is in the way; twice is refused.
    EXPECT_EQ(m.restore(saved[0]), "");
    EXPECT_EQ(m.restore(saved[0]), "its 5-tuple already has an allocation");
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 1u);
}

// Restore grants what CreatePermission and ChannelBind would grant now: the
// channel range of this configuration ([server].strict_channel_range; a
// file's 0x0001 would frame the peer's data as a STUN header, 0xFFFF as
// nothing the client parses), and [allocation].max_permissions /
// max_channels, lowered since the file was written.
TEST_F(Restore, ChannelRangeAndCountsAreThisConfigurations) {
    const auto ft = tuple(5000);
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(channel_bind(ft, 0x4001, A("198.18.2.1:7000")).success());
    ASSERT_TRUE(channel_bind(ft, 0x5000, A("198.18.2.2:7000")).success());  // RFC 5766's range: allowed here
    ASSERT_TRUE(create_permission(ft, {A("198.18.2.3:0"), A("198.18.2.4:0")}).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    ASSERT_EQ(saved[0].permissions.size(), 4u);
    ASSERT_EQ(saved[0].channels.size(), 2u);
    // What a hand-edited or hostile file could say.
    SavedAllocation odd = saved[0];
    const uint64_t until = saved[0].channels[0].expires_unix_ms;
    odd.channels.push_back(SavedChannel{0x0001, A("198.18.2.3:7000"), until});
    odd.channels.push_back(SavedChannel{0xFFFF, A("198.18.2.4:7000"), until});

    Config strict = base_config();
    strict.strict_channel_range = true;
    server.reset();
    start(strict);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    ASSERT_EQ(server->allocations().restore(odd), "");
    const Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->permissions.size(), 4u);
    ASSERT_EQ(a->channels.size(), 1u);
    EXPECT_EQ(a->channels.begin()->first, 0x4001);

    Config fewer = base_config();
    fewer.max_permissions = 2;
    fewer.max_channels = 1;
    server.reset();
    start(fewer);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->permissions.size(), 2u);
    EXPECT_LE(a->channels.size(), 1u);
}

// The saved usage has, besides the control plane's share, the offload's
// carry: what a dataplane restarted since counted before its restart, which
// the next process cannot get back from the dataplane's counts
// (OffloadHook::offloaded_carry).
TEST_F(ServerTest, SavedUsageKeepsTheOffloadsCarry) {
    struct CarryHook final : OffloadHook {
        RelayUsage offloaded_carry(uint64_t) const override { return {10, 1'000'000, 2, 300}; }
    } hook;
    server.reset();
    server = std::make_unique<Server>(*shared, clock, io, hook, *stats);
    ASSERT_TRUE(allocate(tuple(5000)).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    EXPECT_EQ(saved[0].usage, (RelayUsage{10, 1'000'000, 2, 300}));
    server.reset();
}

TEST_F(Restore, QuotaIsTakenAgain) {
    Config c = base_config();
    c.max_per_user = 1;
    start(c);
    const auto ft = tuple(5000);
    ASSERT_TRUE(allocate(ft).success());
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    server.reset();
    start(c);
    EXPECT_EQ(server->allocations().restore(saved[0]), "");
    // alice's one allocation is the restored one.
    EXPECT_EQ(allocate(tuple(5001)).code(), 486);
}

// An offload that reports the same fast-path usage for every allocation.
struct UsageHook final : OffloadHook {
    RelayUsage offloaded_usage(uint64_t) const override { return {10, 1000, 4, 400}; }
};

class EndLine : public ServerTest {
protected:
    void SetUp() override {
        ServerTest::SetUp();
        server = std::make_unique<Server>(*shared, clock, io, usage, *stats);
    }
    void TearDown() override { server.reset(); }  // before `usage`, which it calls
    UsageHook usage;
};

// An allocation's end line adds what the control plane relayed (ChannelData
// to the peer: 1 datagram of 4 bytes) and what the offload reports; one the
// process keeps for the next ([state].dir, shutdown) says it continues and
// carries no usage, which the next process's end line will count whole.
TEST_F(EndLine, AddsBothSharesAndAKeptAllocationContinues) {
    LogCapture log;
    const auto ft = tuple(5000);
    ASSERT_NO_FATAL_FAILURE(allocate_and_ping(ft, A("198.18.2.2:7000")));
    ASSERT_TRUE(refresh(ft, 0).success());
    const std::string ended = log.line("event=allocation_deleted ");
    EXPECT_NE(ended.find(" packets_to_peer=11 bytes_to_peer=1004 packets_to_client=4 bytes_to_client=400"),
              std::string::npos)
        << ended;
    EXPECT_EQ(ended.find("continues"), std::string::npos) << ended;

    ASSERT_TRUE(allocate(tuple(5001)).success());
    // A TCP client's allocation is not saved: it ends with this process, usage and all.
    const FiveTuple tcp{A("198.18.1.1:6000"), A("198.18.0.1:3478"), Transport::kTcp};
    ASSERT_TRUE(allocate(tcp).success());
    server->allocations().track_changes(true);
    server.reset();  // the process goes; its UDP allocations stay saved
    const std::string kept = log.line("event=allocation_closed ", " client=198.18.1.1:5001 ");
    EXPECT_NE(kept.find(" continues=yes"), std::string::npos) << kept;
    EXPECT_EQ(kept.find("packets_to_peer"), std::string::npos) << kept;
    const std::string gone = log.line("event=allocation_closed ", " client=198.18.1.1:6000 ");
    EXPECT_EQ(gone.find("continues"), std::string::npos) << gone;
    EXPECT_NE(gone.find(" packets_to_peer=0 bytes_to_peer=0"), std::string::npos) << gone;  // not offloaded
}

// A restored allocation's age and the control plane's share of its usage go
// on from the previous process's (its end line counts its whole life, the
// time no process ran included); one from a version 1 file (neither saved)
// starts both at the restore.
TEST_F(Restore, AgeAndUsageGoOn) {
    LogCapture log;
    const auto ft = tuple(5000);
    ASSERT_NO_FATAL_FAILURE(allocate_and_ping(ft, A("198.18.2.2:7000")));
    advance_s(100);
    std::vector<SavedAllocation> saved;
    server->allocations().snapshot(saved);
    ASSERT_EQ(saved.size(), 1u);
    EXPECT_EQ(saved[0].created_unix_ms, clock.unix_ms() - 100'000);
    EXPECT_EQ(saved[0].usage, (RelayUsage{1, 4, 0, 0}));

    restart();
    clock.advance_s(20);  // while no control plane runs
    ASSERT_EQ(server->allocations().restore(saved[0]), "");
    Allocation* a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(clock.now_ms() - a->created_ms, 120'000u);
    EXPECT_EQ(a->relayed, (RelayUsage{1, 4, 0, 0}));
    server->on_client_datagram(ft, std::vector<uint8_t>{0x40, 0x01, 0x00, 0x05, 'a', 'g', 'a', 'i', 'n', 0, 0, 0});
    ASSERT_EQ(io.peer_sends.size(), 2u);
    advance_s(3);
    ASSERT_TRUE(refresh(ft, 0).success());
    const std::string ended = log.line("event=allocation_deleted ");
    EXPECT_NE(ended.find(" age_s=123 "), std::string::npos) << ended;
    EXPECT_NE(ended.find(" packets_to_peer=2 bytes_to_peer=9 packets_to_client=0 bytes_to_client=0"), std::string::npos)
        << ended;

    // From a version 1 file: neither is known.
    restart();
    SavedAllocation v1 = saved[0];
    v1.created_unix_ms = 0;
    v1.usage = {};
    ASSERT_EQ(server->allocations().restore(v1), "");
    a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->created_ms, clock.now_ms());
    EXPECT_EQ(a->relayed, RelayUsage{});
    EXPECT_EQ(a->age_ms(clock.now_ms()), 0u);

    // Older than the monotonic clock's count (here since its start; a host
    // that rebooted while the state was kept): the age is whole.
    restart();
    SavedAllocation old = saved[0];
    old.created_unix_ms = clock.unix_ms() - 7'200'000;
    ASSERT_LT(clock.now_ms(), 7'200'000u);
    ASSERT_EQ(server->allocations().restore(old), "");
    a = server->allocations().find(ft);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->age_ms(clock.now_ms()), 7'200'000u);
    EXPECT_EQ(server->allocations().saved_view(*a).created_unix_ms, old.created_unix_ms);

    // One that cannot come back (here: its 5-tuple is taken) still gets a
    // last line with its age and usage, so that summed end lines count it.
    EXPECT_EQ(server->allocations().restore(saved[0]), "its 5-tuple already has an allocation");
    const std::string lost = log.line("event=allocation_not_restored ");
    EXPECT_NE(lost.find(" id=" + std::to_string(saved[0].id) + " "), std::string::npos) << lost;
    EXPECT_NE(lost.find(" user=alice "), std::string::npos) << lost;
    EXPECT_NE(lost.find(" age_s=123 "), std::string::npos) << lost;
    EXPECT_NE(lost.find(" reason=\"its 5-tuple already has an allocation\" packets_to_peer=1 bytes_to_peer=4 "),
              std::string::npos)
        << lost;
}

// A saved snapshot or a dataplane report with usage near 2^64 (corrupt, or
// hostile) must not wrap an allocation's billing figures to small numbers.
TEST(RelayUsage, CountsAndSumsSaturateInsteadOfWrapping) {
    constexpr uint64_t kMax = UINT64_MAX;
    RelayUsage u{kMax - 1, kMax - 10, 3, 4};
    u.to_peer(100);
    EXPECT_EQ(u, (RelayUsage{kMax, kMax, 3, 4}));
    u.to_peer(1);
    u.to_client(7);
    EXPECT_EQ(u, (RelayUsage{kMax, kMax, 4, 11}));
    EXPECT_EQ((u + RelayUsage{5, 5, kMax, 1}), (RelayUsage{kMax, kMax, kMax, 12}));
    EXPECT_EQ((RelayUsage{1, 2, 3, 4} + RelayUsage{10, 20, 30, 40}), (RelayUsage{11, 22, 33, 44}));
}

}  // namespace
}  // namespace turn::cp::test
