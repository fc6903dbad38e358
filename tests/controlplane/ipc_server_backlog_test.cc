// The bound on what waits for the dataplane (controlplane/offload/ipc_server.*,
// IpcServer::kMaxBacklog): a real IpcServer in this process, built with a small
// bound (its max_backlog argument), listening on a unix SOCK_SEQPACKET socket
// in a temporary directory; the test plays the dataplane over a plain socket
// (src/ipc/protocol.h), reading only when it chooses, and makes the changes
// through the OffloadHook calls the allocation code makes.
//
// A dataplane that does not read first fills the kernel's socket buffer, then
// the server's own queue; only the latter counts against the bound. The tests
// therefore queue more than the socket can hold (kSocketHolds) whenever they
// need the server's queue past the bound, and fewer when they need it not to
// be.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "ipc/protocol.h"
#include "log_capture.h"
#include "loop_wait.h"
#include "offload/ipc_server.h"
#include "temp_files.h"

namespace turn::cp::test {
namespace {

namespace ipc = turn::ipc;

Address A(const char* s) { return *Address::parse(s); }

constexpr int kWaitMs = 5000;

// The server's count of connections that ended for this reason.
uint64_t by(const IpcServer& srv, Disconnect d) { return srv.counters().disconnects_by[static_cast<size_t>(d)].load(); }
// At most this many datagrams fit in the server's socket: it asks for a
// kSendBuffer send buffer, which the kernel caps at net.core.wmem_max and
// doubles (2 * kSendBuffer at most), and charges each datagram its sk_buff
// overhead on top of the data (well over 256 bytes a datagram).
constexpr size_t kSocketHolds = 2 * static_cast<size_t>(IpcServer::kSendBuffer) / 256;
// No CountersRequest during a test: only the messages the test caused are queued.
constexpr uint32_t kNoCounters = 3'600'000;

// Test addresses (DESIGN.md, "Test network"); nothing is sent to them.
const Address kRelayIp = A("198.18.0.1");
const Address kExternalIp = A("198.19.0.1");
const Address kPeer = A("198.18.2.1");

// The test's dataplane: one connection, read only when the test calls next().
class Dataplane {
public:
    explicit Dataplane(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, path.data(), path.size());
        connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    ~Dataplane() { ::close(fd_); }
    Dataplane(const Dataplane&) = delete;
    Dataplane& operator=(const Dataplane&) = delete;
    bool connected() const { return connected_; }

    template <typename M>
    void send(M m) {
        const auto b = ipc::encode(m, ++seq_);
        ASSERT_EQ(::send(fd_, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    }
    void hello(uint64_t boot_id) {
        ipc::Hello h{};
        h.pid = static_cast<uint32_t>(::getpid());
        h.workers = 1;
        h.boot_id = boot_id;
        send(h);
    }

    // The next message; nullopt when the server closed the connection (all
    // it had sent read: `closed()`) or nothing came for kWaitMs.
    std::optional<std::vector<uint8_t>> next() {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, kWaitMs) != 1) {
            return std::nullopt;
        }
        std::vector<uint8_t> buf(ipc::kMaxMessage);
        const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
        if (n <= 0) {
            closed_ = n == 0;
            return std::nullopt;
        }
        buf.resize(static_cast<size_t>(n));
        const auto h = ipc::peek(buf);
        if (!h) {
            ADD_FAILURE() << "a datagram without a valid header (" << n << " bytes)";
            return std::nullopt;
        }
        // The server numbers every message it encodes for a connection in
        // one sequence: a gap is a message lost between two delivered ones.
        if (last_seq_ != 0 && h->seq != last_seq_ + 1) {
            ++gaps_;
        }
        last_seq_ = h->seq;
        ++received_;
        return buf;
    }
    template <typename M>
    std::optional<M> expect() {
        const auto d = next();
        if (!d) {
            ADD_FAILURE() << "no message (expected type " << static_cast<int>(M::kType) << ")"
                          << (closed_ ? ": connection closed" : "");
            return std::nullopt;
        }
        auto m = ipc::decode<M>(*d);
        if (!m) {
            ADD_FAILURE() << "expected type " << static_cast<int>(M::kType) << ", got "
                          << static_cast<int>(ipc::peek(*d)->type);
        }
        return m;
    }
    // Reads until the server's close; how many messages that was, or nullopt
    // if it did not close.
    std::optional<size_t> drain() {
        size_t n = 0;
        while (next()) {
            ++n;
        }
        return closed_ ? std::optional<size_t>(n) : std::nullopt;
    }
    bool closed() const { return closed_; }
    size_t received() const { return received_; }
    size_t gaps() const { return gaps_; }

private:
    int fd_ = -1;
    bool connected_ = false;
    bool closed_ = false;
    uint64_t seq_ = 0;
    uint64_t last_seq_ = 0;
    size_t received_ = 0;
    size_t gaps_ = 0;
};

// What a resync carried, and its ResyncEnd's count.
struct Resync {
    size_t allocations = 0;  // AllocationAdds
    std::vector<ipc::PermissionAdd> permissions;
    std::vector<ipc::ChannelAdd> channels;
    size_t others = 0;  // any other message
    uint64_t entries = 0;
    bool complete = false;  // ResyncEnd came, of ResyncBegin's generation
};

// Reads ResyncBegin .. ResyncEnd (Settings and ExternalIps already read).
Resync read_resync(Dataplane& dp) {
    Resync r;
    const auto begin = dp.expect<ipc::ResyncBegin>();
    if (!begin) {
        return r;
    }
    for (;;) {
        const auto d = dp.next();
        if (!d) {
            ADD_FAILURE() << "the resync stopped after " << dp.received() << " messages"
                          << (dp.closed() ? ": connection closed" : "");
            return r;
        }
        const auto type = ipc::peek(*d)->type;
        if (type == ipc::MsgType::kResyncEnd) {
            const auto e = ipc::decode<ipc::ResyncEnd>(*d);
            r.complete = e && e->generation == begin->generation;
            r.entries = e ? e->entries : 0;
            return r;
        }
        if (ipc::decode<ipc::AllocationAdd>(*d)) {
            ++r.allocations;
        } else if (auto p = ipc::decode<ipc::PermissionAdd>(*d)) {
            r.permissions.push_back(*p);
        } else if (auto c = ipc::decode<ipc::ChannelAdd>(*d)) {
            r.channels.push_back(*c);
        } else {
            ++r.others;
        }
    }
}

// Hello, then the Settings, the ExternalIps (if the server has them: echoed
// at once, as turn-dataplane does) and the resync, all read.
Resync handshake(Dataplane& dp, uint64_t boot_id, bool external_ips = false) {
    dp.hello(boot_id);
    EXPECT_TRUE(dp.expect<ipc::Settings>());
    if (external_ips) {
        if (const auto x = dp.expect<ipc::ExternalIps>()) {
            dp.send(*x);
        }
    }
    return read_resync(dp);
}

OffloadAllocation allocation(uint64_t id) {
    OffloadAllocation a;
    a.id = id;
    a.five_tuple.client = A("198.18.1.1").with_port(static_cast<uint16_t>(1024 + id % 60000));
    a.five_tuple.server = kRelayIp.with_port(3478);
    a.relayed[0] = kRelayIp.with_port(static_cast<uint16_t>(49152 + id % 16384));
    return a;
}

// Allocation `id`'s channel peer on the external IP (another allocation's
// relayed address, as seen from outside).
Address external_peer(uint64_t id) { return kExternalIp.with_port(static_cast<uint16_t>(49152 + id % 16384)); }

bool same(const ipc::WireAddress& w, const Address& a) { return w.to() == a; }

// Queues one message at a time for the connection (a permission of
// allocation `id` to kPeer, made and removed in turn) until the server drops
// the connection or `cap` are made; how many were made. Those made after the
// drop were not queued (nothing is while no dataplane is in sync), so at most
// this many were. Every 256 it sleeps a millisecond: the IPC thread that
// decides the drop must run meanwhile, and on a loaded host (a CI run beside
// builds) a producer that never paused made 8,000 more before it did, past
// the tests' margin. Leaves the permission in the mirror.
size_t push_until_dropped(IpcServer& srv, uint64_t id, size_t cap) {
    const uint64_t before = srv.counters().disconnects();
    size_t made = 0;
    while (made < cap && srv.counters().disconnects() == before) {
        if (made % 2 == 0) {
            srv.permission_added(id, kPeer);
        } else {
            srv.permission_removed(id, kPeer);
        }
        ++made;
        if (made % 256 == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    EXPECT_TRUE(eventually([&] { return srv.counters().disconnects() == before + 1; }, kWaitMs))
        << "not dropped after " << made << " messages queued for a dataplane that does not read";
    srv.permission_added(id, kPeer);
    return made;
}

class IpcServerBacklog : public ::testing::Test {
protected:
    std::string socket_path() const { return dir_.path("dp.sock"); }
    // A server bound to `limit` messages beyond each resync.
    std::unique_ptr<IpcServer> server(size_t limit) {
        return std::make_unique<IpcServer>(socket_path(), kNoCounters, limit);
    }

    // The bound still holds after what the test let through: the dataplane
    // stops reading, changes are made (at most `cap`) until it is dropped,
    // once, for its backlog, after the socket's messages came in order and
    // more than `limit` waited beyond them, but fewer than `lost_below`: the
    // room a delivered resync or echo had is gone with it.
    void expect_dropped_for_its_backlog(IpcServer& srv, Dataplane& dp, size_t limit, size_t cap, size_t lost_below) {
        const size_t made = push_until_dropped(srv, 1, cap);
        ASSERT_EQ(srv.counters().disconnects(), 1u);
        const auto delivered = dp.drain();
        ASSERT_TRUE(delivered) << "the connection was not closed";
        EXPECT_EQ(dp.gaps(), 0u);
        EXPECT_GT(made, *delivered + limit);
        EXPECT_LT(made, *delivered + lost_below) << "the delivered messages' room still counted";
        EXPECT_EQ(log_.lines("event=dataplane_disconnected", "backlog full").size(), 1u);
    }

    LogCapture log_;  // outlives the servers, whose thread logs
    TempDir dir_;
};

TEST_F(IpcServerBacklog, ADataplaneThatStopsReadingIsDroppedAndTheNextConnectionIsResynced) {
    constexpr size_t kLimit = 64;
    auto srv = server(kLimit);
    srv->allocation_added(allocation(1));
    ASSERT_EQ(srv->start(), "");
    auto dp = std::make_unique<Dataplane>(socket_path());
    ASSERT_TRUE(dp->connected());
    const Resync first = handshake(*dp, 1);
    ASSERT_TRUE(first.complete);
    EXPECT_EQ(first.entries, 1u);
    ASSERT_TRUE(eventually([&] { return srv->counters().connected.load(); }));

    // It stops reading: the socket fills, then the server's queue, and once
    // more than kLimit wait there the connection is dropped.
    const size_t made = push_until_dropped(*srv, 1, kSocketHolds + kLimit + 1000);
    ASSERT_EQ(srv->counters().disconnects(), 1u);
    EXPECT_EQ(by(*srv, Disconnect::kBacklogFull), 1u);
    EXPECT_EQ(by(*srv, Disconnect::kClosed) + by(*srv, Disconnect::kReplaced) + by(*srv, Disconnect::kSendError), 0u);
    EXPECT_FALSE(srv->counters().connected.load());
    EXPECT_EQ(srv->counters().resyncs.load(), 1u);
    ASSERT_TRUE(eventually([&] { return !log_.lines("event=dataplane_disconnected").empty(); }));
    const auto lines = log_.lines("event=dataplane_disconnected");
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find("reason=\"backlog full (dataplane not reading)\""), std::string::npos) << lines[0];

    // What the socket held is still delivered, in order and without a gap,
    // then the close; what waited in the server's queue is gone, and that
    // was more than kLimit.
    const auto delivered = dp->drain();
    ASSERT_TRUE(delivered) << "the connection was not closed";
    EXPECT_EQ(dp->gaps(), 0u);
    EXPECT_GT(made, *delivered + kLimit) << "dropped with at most " << made - *delivered << " waiting";

    // The next connection gets the whole mirror again: the allocation and
    // the permission made after the drop (the mirror kept going).
    dp = std::make_unique<Dataplane>(socket_path());
    ASSERT_TRUE(dp->connected());
    const Resync again = handshake(*dp, 1);
    ASSERT_TRUE(again.complete);
    EXPECT_EQ(again.entries, 2u);
    EXPECT_EQ(again.allocations, 1u);
    EXPECT_EQ(again.others, 0u);
    ASSERT_EQ(again.permissions.size(), 1u);
    EXPECT_EQ(again.permissions[0].alloc_id, 1u);
    EXPECT_TRUE(same(again.permissions[0].peer, kPeer));
    EXPECT_TRUE(eventually([&] { return srv->counters().resyncs.load() == 2 && srv->counters().connected.load(); }));
    EXPECT_EQ(srv->counters().disconnects(), 1u);

    // The other reasons a connection ends, each counted as itself: a new
    // connection replaces this one, then the dataplane closes that one.
    auto next = std::make_unique<Dataplane>(socket_path());
    ASSERT_TRUE(next->connected());
    EXPECT_TRUE(eventually([&] { return by(*srv, Disconnect::kReplaced) == 1; }, kWaitMs));
    next.reset();
    EXPECT_TRUE(eventually([&] { return by(*srv, Disconnect::kClosed) == 1; }, kWaitMs));
    EXPECT_EQ(srv->counters().disconnects(), 3u);
    EXPECT_EQ(by(*srv, Disconnect::kBacklogFull), 1u);
    EXPECT_EQ(by(*srv, Disconnect::kSendError), 0u);
}

TEST_F(IpcServerBacklog, ABurstLargerThanTheLimitThatTheSocketTakesIsNoBacklog) {
    constexpr size_t kLimit = 1;
    // Many more than kLimit, fewer than any socket holds (the kernel's usual
    // smallest send buffer, 2 x 208 KiB, takes over 500 of these). A server
    // that counted its queue before the send would drop this reading
    // dataplane whenever its thread found more than kLimit + the resync's 4
    // queued at once: most runs, not all.
    constexpr size_t kBurst = 256;
    auto srv = server(kLimit);
    srv->allocation_added(allocation(1));
    ASSERT_EQ(srv->start(), "");
    Dataplane dp(socket_path());
    ASSERT_TRUE(dp.connected());
    ASSERT_TRUE(handshake(dp, 1).complete);

    // Made in one go, faster than the IPC thread wakes: it finds many of
    // them queued at once, all of which the socket takes.
    for (size_t i = 0; i < kBurst; ++i) {
        if (i % 2 == 0) {
            srv->permission_added(1, kPeer);
        } else {
            srv->permission_removed(1, kPeer);
        }
    }
    for (size_t i = 0; i < kBurst; ++i) {
        const auto d = dp.next();
        ASSERT_TRUE(d) << "change " << i << " of " << kBurst << " did not come"
                       << (dp.closed() ? ": connection closed" : "");
        EXPECT_EQ(ipc::peek(*d)->type, i % 2 == 0 ? ipc::MsgType::kPermissionAdd : ipc::MsgType::kPermissionDel);
    }
    EXPECT_EQ(dp.gaps(), 0u);
    EXPECT_TRUE(srv->counters().connected.load());
    EXPECT_EQ(srv->counters().disconnects(), 0u);
    EXPECT_TRUE(log_.lines("event=dataplane_disconnected").empty());
}

TEST_F(IpcServerBacklog, AResyncLargerThanTheLimitIsDeliveredWholeAndTheLimitCountsBeyondIt) {
    constexpr size_t kLimit = 16;
    // More allocations than the socket holds: while the dataplane does not
    // read, most of the resync waits in the server's queue, far past kLimit.
    constexpr size_t kAllocations = kSocketHolds + kLimit + 1000;
    auto srv = server(kLimit);
    for (uint64_t id = 1; id <= kAllocations; ++id) {
        srv->allocation_added(allocation(id));
    }
    ASSERT_EQ(srv->start(), "");
    Dataplane dp(socket_path());
    ASSERT_TRUE(dp.connected());
    dp.hello(1);
    ASSERT_TRUE(eventually([&] { return srv->counters().resyncs.load() == 1; }));
    // kLimit changes after the resync, still unread: the queue is the
    // resync's size + kLimit at most, which is not past the bound.
    for (size_t i = 0; i < kLimit; ++i) {
        srv->channel_added(1, static_cast<uint16_t>(0x4000 + i), kPeer.with_port(static_cast<uint16_t>(5000 + i)));
    }
    // Not in sync while most of the resync waits in the server's queue
    // (turn_dataplane_connected 0).
    EXPECT_FALSE(srv->counters().connected.load());

    ASSERT_TRUE(dp.expect<ipc::Settings>());
    const Resync r = read_resync(dp);
    ASSERT_TRUE(r.complete);
    // The socket took the ResyncEnd before the dataplane could read it, but
    // the IPC thread sets the gauge only after its send() returns: this
    // thread may read the ResyncEnd in between (preempted on a busy host).
    EXPECT_TRUE(eventually([&] { return srv->counters().connected.load(); }));
    EXPECT_EQ(r.entries, kAllocations);
    EXPECT_EQ(r.allocations, kAllocations);
    EXPECT_EQ(r.others, 0u);
    for (size_t i = 0; i < kLimit; ++i) {
        const auto c = dp.expect<ipc::ChannelAdd>();
        ASSERT_TRUE(c) << "change " << i << " after the resync";
        EXPECT_EQ(c->channel, 0x4000 + i);
    }
    EXPECT_EQ(dp.gaps(), 0u);
    EXPECT_TRUE(srv->counters().connected.load());
    EXPECT_EQ(srv->counters().disconnects(), 0u);

    // Beyond the resync the bound holds: a dataplane that stops reading now
    // is dropped once kLimit wait (the delivered resync is no room any more:
    // far fewer than its size are lost; the margin is for the IPC thread
    // being late on a loaded machine while the test keeps making changes).
    expect_dropped_for_its_backlog(*srv, dp, kLimit, kAllocations + 4 + kSocketHolds + kLimit + 1000, kAllocations);
}

TEST_F(IpcServerBacklog, TheAddsTheExternalIpsEchoReleasesDoNotCountAgainstTheLimit) {
    constexpr size_t kLimit = 16;
    // Each allocation has a permission and a channel to a peer on the
    // external IP, withheld until the echo: more of them than the socket
    // holds, so that after the echo they wait in the server's queue, far
    // past kLimit beyond the resync.
    constexpr size_t kAllocations = kSocketHolds / 2 + kLimit + 1000;
    auto srv = server(kLimit);
    Config c;
    c.relay_ips = {kRelayIp};
    c.external_ips = {kExternalIp};
    srv->set_external_ips(c);
    for (uint64_t id = 1; id <= kAllocations; ++id) {
        srv->allocation_added(allocation(id));
        srv->permission_added(id, kExternalIp);
        srv->channel_added(id, 0x4000, external_peer(id));
    }
    ASSERT_EQ(srv->start(), "");
    Dataplane dp(socket_path());
    ASSERT_TRUE(dp.connected());
    dp.hello(1);
    ASSERT_TRUE(dp.expect<ipc::Settings>());
    const auto x = dp.expect<ipc::ExternalIps>();
    ASSERT_TRUE(x);
    EXPECT_TRUE(same(x->external_v4, kExternalIp));
    EXPECT_TRUE(same(x->relay_v4, kRelayIp));
    // Echoed before the rest of the resync is read (as turn-dataplane does);
    // the Adds it releases are queued (logged) before this test reads on.
    dp.send(*x);
    const std::string applied = "event=dataplane_external_ips_applied";
    const std::string released = " entries=" + std::to_string(2 * kAllocations);
    ASSERT_TRUE(eventually([&] { return !log_.lines(applied).empty(); }));
    EXPECT_EQ(log_.lines(applied, released).size(), 1u);

    // The resync without them, then all of them: nothing dropped.
    const Resync r = read_resync(dp);
    ASSERT_TRUE(r.complete);
    EXPECT_EQ(r.entries, kAllocations);
    EXPECT_EQ(r.allocations, kAllocations);
    EXPECT_EQ(r.others, 0u);
    EXPECT_TRUE(r.permissions.empty());
    EXPECT_TRUE(r.channels.empty());
    size_t permissions = 0;
    size_t channels = 0;
    for (size_t i = 0; i < 2 * kAllocations; ++i) {
        const auto d = dp.next();
        ASSERT_TRUE(d) << "released Add " << i << " of " << 2 * kAllocations << " did not come"
                       << (dp.closed() ? ": connection closed" : "");
        if (const auto p = ipc::decode<ipc::PermissionAdd>(*d)) {
            permissions += same(p->peer, kExternalIp) ? 1 : 0;
        } else if (const auto ch = ipc::decode<ipc::ChannelAdd>(*d)) {
            channels += same(ch->peer, external_peer(ch->alloc_id)) ? 1 : 0;
        }
    }
    EXPECT_EQ(permissions, kAllocations);
    EXPECT_EQ(channels, kAllocations);
    EXPECT_EQ(dp.gaps(), 0u);
    EXPECT_TRUE(srv->counters().connected.load());
    EXPECT_TRUE(srv->counters().external_ips_applied.load());
    EXPECT_EQ(srv->counters().disconnects(), 0u);

    // The bound still holds after them: a dataplane that stops reading now
    // is dropped once kLimit wait (the delivered resync and released Adds,
    // 3 * kAllocations, are no room any more).
    expect_dropped_for_its_backlog(*srv, dp, kLimit, 3 * kAllocations + 4 + kSocketHolds + kLimit + 1000,
                                   2 * kAllocations);
}


// A re-announced allocation (moved by RFC 8016 mobility, or left with one
// family of a dual-stack one: AllocationManager::reannounce) goes to the
// dataplane as a Del and an Add that no CountersRequest falls between
// (IpcServer::allocation_replaced takes both under one lock). A request
// between them made the dataplane report the Del's final and count the Add
// from zero; the IPC server gave that final to no allocation, since the id
// was live again, and the allocation's usage lost what it relayed since the
// previous report. Here the server asks for counters every millisecond
// while 300 re-announcements are made.
TEST(IpcServerReannounce, ADelAndItsAddAreNeverSplitByACountersRequest) {
    TempDir dir;
    IpcServer srv(dir.path("dp.sock"), 1);
    const OffloadAllocation a = allocation(7);
    srv.allocation_added(a);
    ASSERT_EQ(srv.start(), "");
    Dataplane dp(dir.path("dp.sock"));
    ASSERT_TRUE(eventually([&] { return dp.connected(); }, kWaitMs));
    ASSERT_TRUE(handshake(dp, 1).complete);
    constexpr int kTimes = 300;
    for (int i = 0; i < kTimes; ++i) {
        srv.allocation_replaced(a);
        if (i % 10 == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    int adds = 0, dels = 0, requests = 0, split = 0;
    bool after_del = false;
    while (adds < kTimes) {
        const auto d = dp.next();
        ASSERT_TRUE(d) << "only " << adds << " of " << kTimes << " Adds came";
        const auto t = ipc::peek(*d)->type;
        if (t == ipc::MsgType::kAllocationDel) {
            ++dels;
            after_del = true;
            continue;
        }
        if (t == ipc::MsgType::kAllocationAdd) {
            ++adds;
        } else if (t == ipc::MsgType::kCountersRequest) {
            ++requests;
            split += after_del ? 1 : 0;
        }
        after_del = false;
    }
    EXPECT_EQ(dels, kTimes);
    EXPECT_GT(requests, 0) << "no CountersRequest came during the test: it showed nothing";
    EXPECT_EQ(split, 0) << "a CountersRequest between a Del and its Add, " << split << " times";
    srv.stop();
}


// Reads until a CountersRequest; false if none came.
bool until_request(Dataplane& dp) {
    while (const auto d = dp.next()) {
        if (ipc::peek(*d)->type == ipc::MsgType::kCountersRequest) {
            return true;
        }
    }
    return false;
}

ipc::CountersReport report_of(std::initializer_list<std::pair<uint64_t, uint64_t>> to_peer_bytes) {
    ipc::CountersReport r{};
    for (const auto& [id, bytes] : to_peer_bytes) {
        r.entries[r.count].alloc_id = id;
        r.entries[r.count].to_peer_packets = bytes / 100;
        r.entries[r.count].to_peer_bytes = bytes;
        ++r.count;
    }
    r.last = 1;
    return r;
}

// turn-relay restarts while the dataplane goes on forwarding: the new
// process's first report of the same dataplane has each restored
// allocation's whole count since its install, which the previous process
// exported up to its last report. The metric takes only what is new to it
// (an allocation of its own: all of it); the restored allocation's usage
// still takes the whole count (it goes on from the saved one, which has
// only the control plane's share).
TEST(IpcServerRestart, APreviousProcesssAllocationsAreNotCountedTwiceInTheMetrics) {
    TempDir dir;
    const OffloadAllocation a = allocation(7);
    uint64_t first = 0;
    {
        IpcServer srv(dir.path("dp.sock"), 50);
        srv.allocation_added(a);
        ASSERT_EQ(srv.start(), "");
        Dataplane dp(dir.path("dp.sock"));
        ASSERT_TRUE(dp.connected());
        ASSERT_TRUE(handshake(dp, 42).complete);
        ASSERT_TRUE(until_request(dp));
        dp.send(report_of({{7, 1'000'000}}));
        ASSERT_TRUE(eventually([&] { return srv.counters().reports.load() >= 1; }, kWaitMs));
        first = srv.counters().bytes[static_cast<size_t>(Direction::kClientToPeer)].load();
        srv.stop();
    }
    EXPECT_EQ(first, 1'000'000u);
    IpcServer srv(dir.path("dp.sock"), 50);
    srv.allocation_added(a);                 // restored
    srv.allocation_added(allocation(300));   // this process's own
    srv.set_inherited_below(100);
    ASSERT_EQ(srv.start(), "");
    Dataplane dp(dir.path("dp.sock"));
    ASSERT_TRUE(dp.connected());
    ASSERT_TRUE(handshake(dp, 42).complete);  // the same dataplane process
    ASSERT_TRUE(until_request(dp));
    dp.send(report_of({{7, 1'000'100}, {300, 500}}));
    ASSERT_TRUE(until_request(dp));
    dp.send(report_of({{7, 1'000'300}, {300, 700}}));
    ASSERT_TRUE(eventually([&] { return srv.counters().reports.load() >= 2; }, kWaitMs));
    // 7: 200 more after the first report; 300: all 700.
    EXPECT_EQ(srv.counters().bytes[static_cast<size_t>(Direction::kClientToPeer)].load(), 900u);
    EXPECT_EQ(srv.offloaded_usage(7).bytes_to_peer, 1'000'300u);
    EXPECT_EQ(srv.offloaded_usage(300).bytes_to_peer, 700u);
    srv.stop();
}


// A dataplane restart starts every count at zero: what the earlier process
// counted for an allocation stays in its usage here (offloaded_usage), and
// is the carry (offloaded_carry) its saved usage keeps, which a next
// control plane could not get back from the restarted dataplane's counts.
// A reconnect of the same dataplane process carries nothing more.
TEST(IpcServerRestart, ADataplaneRestartsShareIsCarriedForTheNextProcess) {
    TempDir dir;
    IpcServer srv(dir.path("dp.sock"), 50);
    srv.allocation_added(allocation(9));
    ASSERT_EQ(srv.start(), "");
    auto session = [&](uint64_t boot, uint64_t bytes) {
        Dataplane dp(dir.path("dp.sock"));
        ASSERT_TRUE(dp.connected());
        ASSERT_TRUE(handshake(dp, boot).complete);
        const uint64_t before = srv.counters().reports.load();
        ASSERT_TRUE(until_request(dp));
        dp.send(report_of({{9, bytes}}));
        ASSERT_TRUE(eventually([&] { return srv.counters().reports.load() > before; }, kWaitMs));
    };
    session(1, 1'000'000);
    EXPECT_EQ(srv.offloaded_carry(9).bytes_to_peer, 0u);
    session(2, 500);  // a new dataplane process: counts from zero
    EXPECT_EQ(srv.offloaded_usage(9).bytes_to_peer, 1'000'500u);
    EXPECT_EQ(srv.offloaded_carry(9).bytes_to_peer, 1'000'000u);
    session(2, 600);  // the same process again
    EXPECT_EQ(srv.offloaded_usage(9).bytes_to_peer, 1'000'600u);
    EXPECT_EQ(srv.offloaded_carry(9).bytes_to_peer, 1'000'000u);
    srv.stop();
}

}  // namespace
}  // namespace turn::cp::test
