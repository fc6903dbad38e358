// RFC 8016 mobility in the protocol core (fake clock, recording I/O): the
// ticket codec; an allocation that asked for a ticket follows its client to a
// new 5-tuple with its relayed address, permissions and channels; what is
// refused and with which code; a Refresh on another loop than the
// allocation's is handed to it; with several loops the owner opens a path
// for the new 5-tuple and closes it when the allocation goes.
#include "core/mobility.h"

#include <cctype>

#include "server_fixture.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;
using stun::attr::kMobilityTicket;

TEST(MobilityTickets, OpenWhatTheyIssueAndNothingElse) {
    const MobilityTickets k;
    const auto t = k.issue({0x01020304050607ull, 3});
    ASSERT_EQ(t.size(), MobilityTickets::kSize);
    EXPECT_LT(t.size(), 33u) << "coturn's uclient keeps tickets in 33 bytes";
    for (const uint8_t c : t) {
        EXPECT_TRUE(std::isalnum(c) || c == '+' || c == '/') << "text: uclient keeps it as a C string";
    }
    const auto back = k.open(t);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->allocation_id, 0x01020304050607ull);
    EXPECT_EQ(back->loop, 3);
    EXPECT_NE(k.issue({0x01020304050607ull, 3}), t) << "a fresh IV per ticket: tickets cannot be linked";
    EXPECT_TRUE(k.issue({MobilityTickets::kMaxAllocationId + 1, 0}).empty());
    for (size_t i = 0; i < t.size(); ++i) {
        auto bad = t;
        bad[i] = bad[i] == 'A' ? 'B' : 'A';  // another base64 digit
        EXPECT_FALSE(k.open(bad)) << "character " << i << " altered";
    }
    EXPECT_FALSE(MobilityTickets().open(t)) << "another process's key";
    EXPECT_FALSE(k.open(std::span<const uint8_t>(t).first(t.size() - 1)));
    EXPECT_FALSE(k.open({}));
}

class MobilityTest : public ServerTest {
protected:
    static FiveTuple moved(uint16_t port = 7000) { return {A("198.18.2.2:1").with_port(port), A("198.18.0.1:3478"), Transport::kUdp}; }

    // Allocate asking for a ticket; returns the ticket.
    std::vector<uint8_t> allocate_mobile(const FiveTuple& ft) {
        auto a = allocate(ft, [](auto& b) { b.add(kMobilityTicket, std::span<const uint8_t>()); });
        EXPECT_TRUE(a.success()) << a.code();
        const auto* t = a.view.find(kMobilityTicket);
        EXPECT_NE(t, nullptr) << "no MOBILITY-TICKET in the Allocate answer";
        return t == nullptr ? std::vector<uint8_t>{} : std::vector<uint8_t>(a.view.value(*t).begin(), a.view.value(*t).end());
    }
    Answer mobility_refresh(const FiveTuple& ft, const std::vector<uint8_t>& ticket, const std::string& user = "alice",
                            uint32_t lifetime = 600) {
        return request(ft, M::kRefresh, [&](auto& b) {
            b.add_u32(stun::attr::kLifetime, lifetime);
            b.add(kMobilityTicket, ticket);
        }, user);
    }
};

TEST_F(MobilityTest, TheAllocationFollowsItsClient) {
    const auto ticket = allocate_mobile(tuple());
    ASSERT_NE(server->allocations().find(tuple()), nullptr);
    const Address relayed = server->allocations().find(tuple())->relay(Family::kIPv4)->addr;
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    // The client's address changes: Refresh with the ticket from the new 5-tuple.
    auto r = mobility_refresh(moved(), ticket);
    ASSERT_TRUE(r.success()) << r.code();
    EXPECT_EQ(r.u32(stun::attr::kLifetime), 600u);
    const auto* fresh = r.view.find(kMobilityTicket);
    ASSERT_NE(fresh, nullptr) << "a new ticket for the next move";
    EXPECT_EQ(stats->mobility_moves.get(), 1u);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    Allocation* a = server->allocations().find(moved());
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->relay(Family::kIPv4)->addr, relayed) << "same relayed address";
    EXPECT_TRUE(io.paths.empty()) << "one loop: no client path needed";
    // Permissions and channels came along: the peer's data reaches the new 5-tuple.
    io.client.clear();
    from_peer(moved(), peer, {7, 7});
    ASSERT_EQ(io.client.size(), 1u);
    EXPECT_EQ(io.client.back().to, moved());
    EXPECT_EQ(io.client.back().bytes, (std::vector<uint8_t>{0x40, 0x01, 0x00, 0x02, 7, 7}));
    server->on_client_datagram(moved(), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 9});
    ASSERT_FALSE(io.peer_sends.empty());
    EXPECT_EQ(io.peer_sends.back().peer, peer);
    // The old 5-tuple has nothing any more; the new ticket moves it again.
    EXPECT_EQ(refresh(tuple(), 600).code(), 437);
    std::vector<uint8_t> t2(r.view.value(*fresh).begin(), r.view.value(*fresh).end());
    EXPECT_TRUE(mobility_refresh(moved(7001), t2).success());
    EXPECT_NE(server->allocations().find(moved(7001)), nullptr);
    // A plain Refresh showing the ticket gets a new one too.
    auto plain = mobility_refresh(moved(7001), t2);
    EXPECT_TRUE(plain.success());
    EXPECT_TRUE(plain.has(kMobilityTicket));
}

TEST_F(MobilityTest, RefusedMovesSayWhy) {
    const auto ticket = allocate_mobile(tuple());
    EXPECT_EQ(mobility_refresh(moved(), ticket, "bob").code(), 441) << "another user";
    auto bad = ticket;
    bad[20] = bad[20] == 'A' ? 'B' : 'A';
    EXPECT_EQ(mobility_refresh(moved(), bad).code(), 400) << "altered ticket";
    EXPECT_EQ(mobility_refresh(moved(), {1, 2, 3}).code(), 400) << "not a ticket";
    FiveTuple tcp = moved();
    tcp.transport = Transport::kTcp;
    EXPECT_EQ(mobility_refresh(tcp, ticket).code(), 405) << "a stream 5-tuple cannot take a UDP allocation";
    EXPECT_NE(server->allocations().find(tuple()), nullptr) << "nothing moved";
    EXPECT_EQ(stats->mobility_moves.get(), 0u);
    // An allocation that did not ask: no ticket, and it cannot be moved with another's.
    auto plain = allocate(tuple(5001));
    EXPECT_FALSE(plain.has(kMobilityTicket));
    // Gone: 437.
    ASSERT_TRUE(refresh(tuple(), 0).success());
    EXPECT_EQ(mobility_refresh(moved(), ticket).code(), 437);
}

TEST_F(MobilityTest, MobilityThatCannotBeHadIs405AndATicketInAllocateMustBeEmpty) {
    const auto ask = [](auto& b) { b.add(kMobilityTicket, std::span<const uint8_t>()); };
    for (const Transport t : {Transport::kTls, Transport::kTcp, Transport::kDtls}) {
        FiveTuple ft = tuple(6000);
        ft.transport = t;
        EXPECT_EQ(allocate(ft, ask).code(), 405) << transport_name(t) << ": ends with its connection or session";
        EXPECT_EQ(server->allocations().find(ft), nullptr);
    }
    const std::vector<uint8_t> junk = {1, 2, 3, 4};
    EXPECT_EQ(allocate(tuple(), [&](auto& b) { b.add(kMobilityTicket, junk); }).code(), 400);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    Config c = base_config();
    c.mobility = false;
    start(c);
    EXPECT_EQ(allocate(tuple(), ask).code(), 405);
    EXPECT_TRUE(allocate(tuple(5001)).success()) << "without the attribute all is as usual";
    EXPECT_EQ(mobility_refresh(moved(), std::vector<uint8_t>(MobilityTickets::kSize, 'A')).code(), 405);
}

TEST_F(MobilityTest, AMoveSpendsEveryEarlierTicketAndAFailedRefreshMovesNothing) {
    const auto first = allocate_mobile(tuple());
    // A Refresh that fails its own checks (a family the allocation does not
    // have) leaves the allocation where it is.
    auto bad = request(moved(), M::kRefresh, [&](auto& b) {
        b.add_u32(stun::attr::kLifetime, 600);
        b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
        b.add(kMobilityTicket, first);
    });
    EXPECT_EQ(bad.code(), 443);
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    EXPECT_EQ(server->allocations().find(moved()), nullptr);
    // A plain Refresh on the old 5-tuple gets another ticket of the same count.
    auto plain = request(tuple(), M::kRefresh, [&](auto& b) { b.add(kMobilityTicket, first); });
    ASSERT_TRUE(plain.success());
    const auto* pt = plain.view.find(kMobilityTicket);
    ASSERT_NE(pt, nullptr);
    const std::vector<uint8_t> second(plain.view.value(*pt).begin(), plain.view.value(*pt).end());
    // The client moves with the first ticket; the same Refresh replayed from
    // another port (someone who saw it), or any ticket from before the move,
    // takes nothing.
    const auto c = creds(moved());
    const auto req = build(M::kRefresh, stun::Class::kRequest, [&](auto& b) {
        b.add_u32(stun::attr::kLifetime, 600);
        b.add(kMobilityTicket, first);
    }, &c);
    auto ok = exchange(moved(), req);
    ASSERT_TRUE(ok && ok->success());
    auto replay = exchange(moved(7777), req);
    ASSERT_TRUE(replay);
    EXPECT_EQ(replay->code(), 400);
    EXPECT_EQ(mobility_refresh(moved(7778), second).code(), 400);
    EXPECT_NE(server->allocations().find(moved()), nullptr);
    EXPECT_EQ(stats->mobility_moves.get(), 1u);
}

TEST_F(MobilityTest, ARefreshOnAnotherLoopIsHandedToTheOwner) {
    // This server is loop 1 of 2; the allocation lives on loop 1.
    server->set_loop(1, 2);
    std::vector<std::pair<unsigned, std::function<void(Server&)>>> posted;
    server->set_poster([&](unsigned loop, std::function<void(Server&)> task) {
        posted.emplace_back(loop, std::move(task));
        return true;
    });
    const auto ticket = allocate_mobile(tuple());
    ASSERT_EQ(MobilityTickets::kSize, ticket.size());
    EXPECT_EQ(shared->tickets.open(ticket)->loop, 1);
    // Loop 0 (another Server on the same Shared) gets the new 5-tuple's Refresh.
    FakeIo io0;
    Stats stats0;
    OffloadHook hook0;
    Server loop0(*shared, clock, io0, hook0, stats0);
    loop0.set_loop(0, 2);
    loop0.set_poster([&](unsigned loop, std::function<void(Server&)> task) {
        posted.emplace_back(loop, std::move(task));
        return true;
    });
    const auto c = creds(moved());
    loop0.on_client_datagram(moved(), build(M::kRefresh, stun::Class::kRequest, [&](auto& b) {
        b.add_u32(stun::attr::kLifetime, 600);
        b.add(kMobilityTicket, ticket);
    }, &c));
    EXPECT_TRUE(io0.client.empty()) << "loop 0 does not answer";
    ASSERT_EQ(posted.size(), 1u);
    EXPECT_EQ(posted[0].first, 1u);
    EXPECT_EQ(stats0.mobility_forwarded.get(), 1u);
    // Loop 1 runs the task: the allocation moves, the answer goes to the new 5-tuple.
    io.client.clear();
    posted[0].second(*server);
    ASSERT_EQ(io.client.size(), 1u);
    EXPECT_EQ(io.client[0].to, moved());
    EXPECT_TRUE(Answer(io.client[0].bytes).success());
    EXPECT_NE(server->allocations().find(moved()), nullptr);
    // With two loops the owner brings the new 5-tuple's datagrams to itself...
    ASSERT_EQ(io.paths.size(), 1u);
    EXPECT_EQ(io.paths.begin()->second, moved());
    // ... swaps the path on the next move (with the ticket of the first
    // move's answer), and closes it with the allocation.
    const Answer first(io.client[0].bytes);
    const auto* t2 = first.view.find(kMobilityTicket);
    ASSERT_NE(t2, nullptr);
    auto again = mobility_refresh(moved(7002), std::vector<uint8_t>(first.view.value(*t2).begin(), first.view.value(*t2).end()));
    ASSERT_TRUE(again.success()) << again.code();
    ASSERT_EQ(io.paths.size(), 1u);
    EXPECT_EQ(io.paths.begin()->second, moved(7002));
    ASSERT_TRUE(refresh(moved(7002), 0).success());
    EXPECT_TRUE(io.paths.empty());
}

}  // namespace
}  // namespace turn::cp::test
