// Allocation lifecycle, permissions, channels, EVEN-PORT, quotas,
// retransmissions, relaying: the protocol core with a fake clock and fake I/O.
#include <set>

#include "core/port_allocator.h"
#include "core/quota.h"
#include "server_fixture.h"
#include "stun/integrity.h"

namespace turn::cp::test {
namespace {

using stun::attr::kXorRelayedAddress;
using M = stun::Method;

// An allocation's bandwidth bucket (core/quota.h) as RFC 6062 pipes use it
// (StreamIo reads what available() allows; bytes read are consume()d): a
// stream's bytes cannot be dropped, so what it takes beyond the budget (a
// TLS record) is a debt the refill repays before anything is available, or
// take() passes, again; the rate holds on average.
TEST(TokenBucket, ConsumedBeyondTheBudgetIsADebtRepaidFirst) {
    TokenBucket b(1000, 1000, 0);  // 1000 bytes/s, a 1000-byte burst, full at 0 ms
    EXPECT_EQ(b.available(0), 1000u);
    b.consume(1500, 0);  // 500 beyond
    EXPECT_EQ(b.available(0), 0u);
    EXPECT_FALSE(b.take(1, 0));
    EXPECT_EQ(b.available(400), 0u);  // 400 of the 500 repaid
    EXPECT_FALSE(b.take(1, 400));
    EXPECT_EQ(b.available(600), 100u);  // repaid at 500 ms, 100 since
    EXPECT_TRUE(b.take(100, 600));
    EXPECT_EQ(b.available(600), 0u);
    EXPECT_EQ(b.available(10'000), 1000u);  // the burst, no more
    TokenBucket unlimited;
    EXPECT_EQ(unlimited.available(5), UINT64_MAX);
    unlimited.consume(1u << 30, 5);
    EXPECT_TRUE(unlimited.take(1u << 30, 5));
}

TEST_F(ServerTest, AllocateReturnsRelayedAndMappedAddresses) {
    auto a = allocate(tuple());
    ASSERT_TRUE(a.success()) << a.code();
    auto relayed = a.xor_address(kXorRelayedAddress);
    ASSERT_TRUE(relayed);
    EXPECT_EQ(relayed->ip_string(), "198.18.0.1");
    EXPECT_GE(relayed->port, 50000);
    EXPECT_LE(relayed->port, 50099);
    EXPECT_EQ(a.xor_address(stun::attr::kXorMappedAddress)->to_string(), "198.18.1.1:5000");
    EXPECT_EQ(a.u32(stun::attr::kLifetime), 600u);
    EXPECT_TRUE(a.has(stun::attr::kMessageIntegrity));
    EXPECT_EQ(io.open.size(), 1u);
}

TEST_F(ServerTest, AllocationExpiresAfterLifetime) {
    ASSERT_TRUE(allocate(tuple()).success());
    advance_s(599);
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    advance_s(2);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    EXPECT_TRUE(io.open.empty());
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 0u);
    EXPECT_EQ(shared->quota.total(), 0u);
}

TEST_F(ServerTest, LifetimeIsClampedToMaximum) {
    auto a = allocate(tuple(), [](auto& b) { b.add_u32(stun::attr::kLifetime, 100000); });
    EXPECT_EQ(a.u32(stun::attr::kLifetime), 3600u);
    auto small = allocate(tuple(5001), [](auto& b) { b.add_u32(stun::attr::kLifetime, 10); });
    EXPECT_EQ(small.u32(stun::attr::kLifetime), 600u);
}

TEST_F(ServerTest, RefreshExtendsLifetime) {
    ASSERT_TRUE(allocate(tuple()).success());
    advance_s(500);
    auto r = refresh(tuple(), 1200);
    ASSERT_TRUE(r.success());
    EXPECT_EQ(r.u32(stun::attr::kLifetime), 1200u);
    advance_s(1100);
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    advance_s(101);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
}

TEST_F(ServerTest, RefreshCanShortenLifetime) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) { b.add_u32(stun::attr::kLifetime, 3600); }).success());
    ASSERT_TRUE(refresh(tuple(), 600).success());
    advance_s(601);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
}

TEST_F(ServerTest, RefreshZeroDeletesAtOnce) {
    ASSERT_TRUE(allocate(tuple()).success());
    auto r = refresh(tuple(), 0);
    ASSERT_TRUE(r.success());
    EXPECT_EQ(r.u32(stun::attr::kLifetime), 0u);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    EXPECT_TRUE(io.open.empty());
    EXPECT_EQ(refresh(tuple(), 600).code(), 437);
}

// Removing an allocation closes its relay socket, and the real I/O flushes
// queued output there (SocketIo::close_relay): a TCP or TLS connection whose
// write fails then reports its end (Server::on_client_closed) from inside the
// removal. CI saw it with Chromium over turns: (Refresh 0, then the browser
// closed its connection): the allocation released twice, the live-allocation
// gauge at -1, the allocation used after it was freed. Now it ends once.
TEST_F(ServerTest, ConnectionEndReportedDuringRemovalEndsTheAllocationOnce) {
    const FiveTuple ft{A("198.18.1.1:6100"), A("198.18.0.1:3478"), Transport::kTcp};
    const FiveTuple other{A("198.18.1.1:6101"), A("198.18.0.1:3478"), Transport::kTcp};
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(allocate(other).success());
    ASSERT_EQ(shared->allocations.load(), 2);
    int reports = 0;
    io.on_close_relay = [&](RelayId) {  // the connection ends once, as a real one does
        if (reports++ == 0) {
            server->on_client_closed(ft);
        }
    };
    ASSERT_TRUE(refresh(ft, 0).success());
    io.on_close_relay = nullptr;
    EXPECT_EQ(reports, 1);
    EXPECT_EQ(server->allocations().find(ft), nullptr);
    EXPECT_NE(server->allocations().find(other), nullptr);
    EXPECT_EQ(shared->allocations.load(), 1);
    EXPECT_EQ(shared->allocations_v4.load(), 1);
    EXPECT_EQ(shared->allocations_v6.load(), 0);
    EXPECT_EQ(io.open.size(), 1u);
    // The same for an end reported while the connection's own end removes it.
    reports = 0;
    io.on_close_relay = [&](RelayId) {
        if (reports++ == 0) {
            server->on_client_closed(other);
        }
    };
    server->on_client_closed(other);
    io.on_close_relay = nullptr;
    EXPECT_EQ(server->allocations().find(other), nullptr);
    EXPECT_EQ(shared->allocations.load(), 0);
    EXPECT_EQ(shared->allocations_v4.load(), 0);
    EXPECT_TRUE(io.open.empty());
    // Nothing of theirs is held: the user's quota and the 5-tuples are free.
    ASSERT_TRUE(allocate(ft).success());
    ASSERT_TRUE(allocate(other).success());
    EXPECT_EQ(shared->allocations.load(), 2);
}

TEST_F(ServerTest, SecondAllocateOnSameTupleIs437) {
    ASSERT_TRUE(allocate(tuple()).success());
    EXPECT_EQ(allocate(tuple()).code(), 437);
}

TEST_F(ServerTest, RetransmittedAllocateGetsIdenticalAnswer) {
    const auto c = creds(tuple());
    const auto txid = random_txid();
    const auto req = build(M::kAllocate, stun::Class::kRequest,
                           [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c, txid);
    auto first = exchange(tuple(), req);
    ASSERT_TRUE(first && first->success());
    advance_s(5);
    auto again = exchange(tuple(), req);
    ASSERT_TRUE(again);
    EXPECT_EQ(first->bytes, again->bytes);
    EXPECT_EQ(io.open.size(), 1u);
    // After the retransmission window the same request is a new one: 437.
    advance_s(40);
    auto late = exchange(tuple(), req);
    ASSERT_TRUE(late);
    EXPECT_EQ(late->code(), 437);
}

// Only a retransmission gets the cached answer: another method under the
// same transaction ID (a broken client, or a hostile one) is answered as
// itself, never with the Allocate's response.
TEST_F(ServerTest, ReusedTransactionIdForAnotherMethodIsNotARetransmission) {
    const auto c = creds(tuple());
    const auto txid = random_txid();
    auto first = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                         [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c, txid));
    ASSERT_TRUE(first && first->success());
    auto other = exchange(tuple(), build(M::kCreatePermission, stun::Class::kRequest,
                                         [](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, A("198.18.9.9:1")); },
                                         &c, txid));
    ASSERT_TRUE(other);
    EXPECT_EQ(other->view.method(), static_cast<uint16_t>(M::kCreatePermission));
    EXPECT_TRUE(other->success());
    EXPECT_EQ(io.open.size(), 1u);
    // The second request's own retransmission gets its own answer: a
    // Refresh to 0 under the same ID, sent twice, succeeds twice (the
    // second time from the cache, as the allocation is gone by then).
    const auto zero = build(M::kRefresh, stun::Class::kRequest,
                            [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }, &c, txid);
    auto deleted = exchange(tuple(), zero);
    ASSERT_TRUE(deleted && deleted->success());
    auto again = exchange(tuple(), zero);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->bytes, deleted->bytes);
}

TEST_F(ServerTest, RetransmittedRefreshZeroStillSucceeds) {
    ASSERT_TRUE(allocate(tuple()).success());
    const auto c = creds(tuple());
    const auto req = build(M::kRefresh, stun::Class::kRequest,
                           [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }, &c);
    ASSERT_TRUE(exchange(tuple(), req)->success());
    EXPECT_TRUE(exchange(tuple(), req)->success());
}

TEST_F(ServerTest, RequestsWithoutAllocationGet437) {
    EXPECT_EQ(refresh(tuple(), 600).code(), 437);
    EXPECT_EQ(create_permission(tuple(), {A("198.18.9.9:1")}).code(), 437);
    EXPECT_EQ(channel_bind(tuple(), 0x4000, A("198.18.9.9:1")).code(), 437);
}

TEST_F(ServerTest, PermissionExpiresAfter300s) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    advance_s(299);
    from_peer(tuple(), peer, {1, 2, 3});
    ASSERT_EQ(io.client.size(), 3u);  // allocate, permission answers + Data indication
    Answer data(io.client.back().bytes);
    EXPECT_TRUE(data.view.is(M::kData, stun::Class::kIndication));
    advance_s(2);
    const auto drops = stats->drops_of(Drop::kNoPermission);
    from_peer(tuple(), peer, {1, 2, 3});
    EXPECT_EQ(io.client.size(), 3u);
    EXPECT_EQ(stats->drops_of(Drop::kNoPermission), drops + 1);
}

TEST_F(ServerTest, PermissionRefreshKeepsItAlive) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    advance_s(250);
    ASSERT_TRUE(create_permission(tuple(), {peer.with_port(1)}).success());  // port is ignored
    advance_s(250);
    EXPECT_TRUE(server->allocations().find(tuple())->permitted(peer, clock.now_ms()));
    advance_s(51);
    EXPECT_FALSE(server->allocations().find(tuple())->permitted(peer, clock.now_ms()));
}

TEST_F(ServerTest, CreatePermissionIsAllOrNothing) {
    ASSERT_TRUE(allocate(tuple()).success());
    auto r = create_permission(tuple(), {A("198.18.9.9:1"), A("127.0.0.1:1")});
    EXPECT_EQ(r.code(), 403);
    EXPECT_FALSE(server->allocations().find(tuple())->permitted(A("198.18.9.9"), clock.now_ms()));
    EXPECT_TRUE(create_permission(tuple(), {A("198.18.9.9:1"), A("198.18.9.10:1")}).success());
}

TEST_F(ServerTest, PermissionAndChannelCountsAreBounded) {
    Config c = base_config();
    c.max_permissions = 3;
    c.max_channels = 2;
    start(c);
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(create_permission(tuple(), {A("198.18.9.1:1"), A("198.18.9.2:1")}).success());
    EXPECT_EQ(create_permission(tuple(), {A("198.18.9.3:1"), A("198.18.9.4:1")}).code(), 508);
    EXPECT_TRUE(create_permission(tuple(), {A("198.18.9.1:1"), A("198.18.9.3:1")}).success());  // refresh + 1 new
    // At the limit, an IP already permitted listed twice is no new permission; a
    // new IP listed twice (other ports: permissions are per IP) is one, over it.
    EXPECT_TRUE(create_permission(tuple(), {A("198.18.9.2:7"), A("198.18.9.2:8")}).success());
    EXPECT_EQ(create_permission(tuple(), {A("198.18.9.4:1"), A("198.18.9.4:2")}).code(), 508);
    EXPECT_TRUE(channel_bind(tuple(), 0x4000, A("198.18.9.1:5")).success());
    EXPECT_TRUE(channel_bind(tuple(), 0x4001, A("198.18.9.2:5")).success());
    EXPECT_EQ(channel_bind(tuple(), 0x4002, A("198.18.9.3:5")).code(), 508);
    EXPECT_TRUE(channel_bind(tuple(), 0x4000, A("198.18.9.1:5")).success());  // refresh
}

TEST_F(ServerTest, PeerListedTwiceIsOneNewPermission) {
    Config c = base_config();
    c.max_permissions = 2;
    start(c);
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(create_permission(tuple(), {A("198.18.9.1:1")}).success());
    // One permission left: a new IP listed twice (two ports) takes just that one.
    EXPECT_TRUE(create_permission(tuple(), {A("198.18.9.5:1"), A("198.18.9.5:2")}).success());
    EXPECT_TRUE(server->allocations().find(tuple())->permitted(A("198.18.9.5"), clock.now_ms()));
}

TEST_F(ServerTest, CreatePermissionFamilyMismatchIs443) {
    ASSERT_TRUE(allocate(tuple()).success());
    EXPECT_EQ(create_permission(tuple(), {A("[2001:db8::1]:1")}).code(), 443);
}

TEST_F(ServerTest, CreatePermissionWithoutPeerIs400) {
    ASSERT_TRUE(allocate(tuple()).success());
    EXPECT_EQ(create_permission(tuple(), {}).code(), 400);
}

TEST_F(ServerTest, ChannelBindingExpiresAndNumberIsQuarantined) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) { b.add_u32(stun::attr::kLifetime, 3600); }).success());
    const Address peer_a = A("198.18.9.9:7000");
    const Address peer_b = A("198.18.9.10:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer_a).success());
    advance_s(599);
    EXPECT_NE(server->allocations().find(tuple())->peer_for(0x4000, clock.now_ms()), nullptr);
    advance_s(2);  // 601 s: expired
    EXPECT_EQ(server->allocations().find(tuple())->peer_for(0x4000, clock.now_ms()), nullptr);
    // Within 5 minutes after expiry neither side may be bound to something else.
    EXPECT_EQ(channel_bind(tuple(), 0x4000, peer_b).code(), 400);
    EXPECT_EQ(channel_bind(tuple(), 0x4001, peer_a).code(), 400);
    advance_s(250);
    EXPECT_EQ(channel_bind(tuple(), 0x4000, peer_b).code(), 400);
    advance_s(50);  // 901 s: 5 minutes after expiry at 600 s
    EXPECT_TRUE(channel_bind(tuple(), 0x4000, peer_b).success());
    EXPECT_TRUE(channel_bind(tuple(), 0x4001, peer_a).success());
}

TEST_F(ServerTest, ExpiredChannelMayBeReboundToSamePeer) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) { b.add_u32(stun::attr::kLifetime, 3600); }).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer).success());
    advance_s(650);
    EXPECT_TRUE(channel_bind(tuple(), 0x4000, peer).success());
}

TEST_F(ServerTest, ChannelBindConflictsAre400) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer_a = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer_a).success());
    EXPECT_TRUE(channel_bind(tuple(), 0x4000, peer_a).success());  // refresh
    EXPECT_EQ(channel_bind(tuple(), 0x4000, A("198.18.9.9:7001")).code(), 400);
    EXPECT_EQ(channel_bind(tuple(), 0x4001, peer_a).code(), 400);
    EXPECT_EQ(channel_bind(tuple(), 0x3FFF, A("198.18.9.8:1")).code(), 400);
    EXPECT_EQ(channel_bind(tuple(), 0x8000, A("198.18.9.8:1")).code(), 400);
    EXPECT_EQ(channel_bind(tuple(), 0x4002, A("127.0.0.1:1")).code(), 403);
    EXPECT_EQ(channel_bind(tuple(), 0x4002, A("[2001:db8::1]:1")).code(), 443);
}

TEST_F(ServerTest, Rfc5766ChannelNumbersAcceptedUnlessStrict) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x7A1E, peer).success());
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x7A, 0x1E, 0x00, 0x01, 'z'});
    ASSERT_EQ(io.peer_sends.size(), 1u);
    from_peer(tuple(), peer, {'y'});
    EXPECT_EQ(io.client.back().bytes, std::vector<uint8_t>({0x7A, 0x1E, 0x00, 0x01, 'y'}));
    Config c = base_config();
    c.strict_channel_range = true;
    start(c);
    ASSERT_TRUE(allocate(tuple()).success());
    EXPECT_EQ(channel_bind(tuple(), 0x5000, peer).code(), 400);
    EXPECT_TRUE(channel_bind(tuple(), 0x4FFF, peer).success());
}

TEST_F(ServerTest, ChannelBindRefreshesPermission) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer).success());
    EXPECT_TRUE(server->allocations().find(tuple())->permitted(peer, clock.now_ms()));
}

TEST_F(ServerTest, ChannelDataRoundTrip) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    const std::vector<uint8_t> cd = {0x40, 0x01, 0x00, 0x03, 'a', 'b', 'c', 0};
    server->on_client_datagram(tuple(), cd);
    ASSERT_EQ(io.peer_sends.size(), 1u);
    EXPECT_EQ(io.peer_sends[0].peer, peer);
    EXPECT_EQ(io.peer_sends[0].bytes, std::vector<uint8_t>({'a', 'b', 'c'}));
    from_peer(tuple(), peer, {'x', 'y'});
    EXPECT_EQ(io.client.back().bytes, std::vector<uint8_t>({0x40, 0x01, 0x00, 0x02, 'x', 'y'}));
    EXPECT_EQ(stats->relayed_packets[0].get(), 1u);
    EXPECT_EQ(stats->relayed_packets[1].get(), 1u);
    // Unbound channel: dropped and counted.
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x02, 0x00, 0x00});
    EXPECT_EQ(stats->drops_of(Drop::kNoChannel), 1u);
}

// RFC 8656 section 14 (UDP to UDP): relayed data keeps the received
// datagram's TOS / Traffic Class byte, DSCP and ECN alike, in both
// directions and for both framings; what the server says itself (answers,
// Data indications of ICMP errors) uses the socket's default (0).
TEST_F(ServerTest, RelayedDataKeepsDscpAndEcn) {
    const Address peer = A("198.18.9.9:7000");
    const Address other = A("198.18.9.9:7001");  // permission (same IP), no channel
    const std::vector<uint8_t> req = build(M::kAllocate, stun::Class::kRequest, [](auto& b) {
        b.add_requested_transport(stun::kProtoUdp);
    }, nullptr);
    server->on_client_datagram(tuple(), req, {.tos = 0xB8});
    ASSERT_FALSE(io.client.empty());
    EXPECT_EQ(io.client.back().tos, 0) << "the 401 is the server's own message";
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    EXPECT_EQ(io.client.back().tos, 0);

    // Client -> peer: ChannelData (EF + ECT(1)) and a Send indication (CE).
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 'a', 0, 0, 0}, {.tos = 0xB9});
    ASSERT_EQ(io.peer_sends.size(), 1u);
    EXPECT_EQ(io.peer_sends.back().tos, 0xB9);
    server->on_client_datagram(tuple(), build(M::kSend, stun::Class::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, other);
        const std::array<uint8_t, 1> d{'s'};
        b.add(stun::attr::kData, d);
    }, nullptr), {.tos = 0x03});
    ASSERT_EQ(io.peer_sends.size(), 2u);
    EXPECT_EQ(io.peer_sends.back().peer, other);
    EXPECT_EQ(io.peer_sends.back().tos, 0x03);
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 'b', 0, 0, 0});
    ASSERT_EQ(io.peer_sends.size(), 3u);
    EXPECT_EQ(io.peer_sends.back().tos, 0) << "nothing sticks from the datagram before";

    // Peer -> client: as ChannelData (AF41 + ECT(0)) and as a Data indication.
    Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    const RelayId relay = a->relay(Family::kIPv4)->id;
    const size_t before = io.client.size();
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'x'}, {.tos = 0x8A});
    server->on_peer_datagram(relay, other, std::vector<uint8_t>{'y'}, {.tos = 0x2E << 2});
    ASSERT_EQ(io.client.size(), before + 2);
    EXPECT_EQ(io.client[before].bytes[0], 0x40);
    EXPECT_EQ(io.client[before].tos, 0x8A);
    EXPECT_TRUE(Answer(io.client[before + 1].bytes).view.is(M::kData, stun::Class::kIndication));
    EXPECT_EQ(io.client[before + 1].tos, 0x2E << 2);
    server->on_peer_icmp(relay, peer, 3, 3, 0);
    ASSERT_EQ(io.client.size(), before + 3);
    EXPECT_EQ(io.client.back().tos, 0);
}

// [server].dscp = 10 (AF11): relayed data gets that DSCP with its own ECN
// bits, both ways; answers stay unmarked.
TEST_F(ServerTest, FixedDscpReplacesTheDscpAndKeepsEcn) {
    Config c = base_config();
    c.dscp = 10;
    start(c);
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    EXPECT_EQ(io.client.back().tos, 0);
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 'a', 0, 0, 0}, {.tos = 0xB9});
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 'b', 0, 0, 0}, {.tos = 0});
    ASSERT_EQ(io.peer_sends.size(), 2u);
    EXPECT_EQ(io.peer_sends[0].tos, (10 << 2) | 0x01);
    EXPECT_EQ(io.peer_sends[1].tos, 10 << 2);
    const RelayId relay = server->allocations().find(tuple())->relay(Family::kIPv4)->id;
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'x'}, {.tos = 0x8B});
    EXPECT_EQ(io.client.back().tos, (10 << 2) | 0x03);
}

// RFC 8656 section 14, TTL preferred behaviour, UDP to UDP: relayed data
// leaves with one less TTL / Hop Limit than it came with, in both
// directions and for both framings, with its TOS kept alongside; a TTL not
// known (0) leaves with the socket's default (0 here), and what the server
// says itself (answers, ICMP Data indications) never carries one.
TEST_F(ServerTest, RelayedDataLeavesWithOneLessTtl) {
    const Address peer = A("198.18.9.9:7000");
    const Address other = A("198.18.9.9:7001");  // permission (same IP), no channel
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    const std::vector<uint8_t> cd{0x40, 0x01, 0x00, 0x01, 'a', 0, 0, 0};
    auto send_ind = [&](IpMarks m) {
        server->on_client_datagram(tuple(), build(M::kSend, stun::Class::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, other);
            const std::array<uint8_t, 1> d{'s'};
            b.add(stun::attr::kData, d);
        }, nullptr), m);
    };

    // Client -> peer.
    server->on_client_datagram(tuple(), cd, {.tos = 0xB9, .ttl = 9});
    send_ind({.ttl = 9});
    server->on_client_datagram(tuple(), cd, {.ttl = 255});
    server->on_client_datagram(tuple(), cd, {.ttl = 2});
    server->on_client_datagram(tuple(), cd);  // not known
    ASSERT_EQ(io.peer_sends.size(), 5u);
    EXPECT_EQ(io.peer_sends[0].ttl, 8);
    EXPECT_EQ(io.peer_sends[0].tos, 0xB9) << "the TOS goes along";
    EXPECT_EQ(io.peer_sends[1].peer, other);
    EXPECT_EQ(io.peer_sends[1].ttl, 8);
    EXPECT_EQ(io.peer_sends[2].ttl, 254);
    EXPECT_EQ(io.peer_sends[3].ttl, 1) << "2 is the lowest TTL relayed";
    EXPECT_EQ(io.peer_sends[4].ttl, 0) << "nothing sticks from the datagram before";

    // Peer -> client, as ChannelData and as a Data indication.
    const RelayId relay = server->allocations().find(tuple())->relay(Family::kIPv4)->id;
    const size_t before = io.client.size();
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'x'}, {.tos = 0x8A, .ttl = 9});
    server->on_peer_datagram(relay, other, std::vector<uint8_t>{'y'}, {.ttl = 9});
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'z'});
    server->on_peer_icmp(relay, peer, 3, 3, 0);
    ASSERT_EQ(io.client.size(), before + 4);
    EXPECT_EQ(io.client[before].bytes[0], 0x40);
    EXPECT_EQ(io.client[before].ttl, 8);
    EXPECT_EQ(io.client[before].tos, 0x8A);
    EXPECT_TRUE(Answer(io.client[before + 1].bytes).view.is(M::kData, stun::Class::kIndication));
    EXPECT_EQ(io.client[before + 1].ttl, 8);
    EXPECT_EQ(io.client[before + 2].ttl, 0);
    EXPECT_EQ(io.client[before + 3].ttl, 0) << "an ICMP Data indication is the server's own message";
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 0u);
}

// The control message of a datagram received with TTL 0 (IPv6 sends Hop
// Limit 0; IPv4 0 comes only from raw sockets): what the I/O layer hands
// the core for it (net/ip_marks.h).
IpMarks received_with_ttl(int ttl) {
    alignas(cmsghdr) uint8_t ctl[CMSG_SPACE(sizeof(int))] = {};
    msghdr h{};
    h.msg_control = ctl;
    h.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_HOPLIMIT;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &ttl, sizeof ttl);
    return received_marks(h).kept();
}

// RFC 8656 section 14: data received with TTL 0 is discarded, and with 1
// too (the relayed datagram would have to leave with 0), both directions,
// counted as turn_drops_total{reason="ttl_expired"}; nothing is sent and no
// bandwidth is taken. Checks before it keep their own reasons.
TEST_F(ServerTest, DataWithTtlOneOrZeroIsDroppedAndCounted) {
    EXPECT_EQ(received_with_ttl(0).ttl, 1) << "a received 0 is kept as 1, not as 'not known'";
    EXPECT_EQ(received_with_ttl(1).ttl, 1);
    EXPECT_EQ(received_with_ttl(64).ttl, 64);
    Config c = base_config();
    c.bandwidth_bps = 8 * 65536;  // a burst of 64 KiB: the datagrams below fit only if the dropped take nothing
    start(c);
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, peer).success());
    const std::vector<uint8_t> cd{0x40, 0x01, 0x00, 0x01, 'a', 0, 0, 0};
    const auto ind = build(M::kSend, stun::Class::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, peer);
        const std::array<uint8_t, 1> d{'s'};
        b.add(stun::attr::kData, d);
    }, nullptr);
    const RelayId relay = server->allocations().find(tuple())->relay(Family::kIPv4)->id;
    const std::vector<uint8_t> big(40000, 'p');

    server->on_client_datagram(tuple(), cd, {.ttl = 1});
    server->on_client_datagram(tuple(), cd, received_with_ttl(0));
    server->on_client_datagram(tuple(), ind, {.tos = 0xB8, .ttl = 1});
    EXPECT_TRUE(io.peer_sends.empty());
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 3u);
    const size_t before = io.client.size();
    server->on_peer_datagram(relay, peer, big, {.ttl = 1});
    server->on_peer_datagram(relay, peer, big, received_with_ttl(0));
    EXPECT_EQ(io.client.size(), before);
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 5u);
    // Without a permission the reason stays no_permission.
    server->on_peer_datagram(relay, A("198.18.9.10:7000"), std::vector<uint8_t>{'n'}, {.ttl = 1});
    EXPECT_EQ(stats->drops_of(Drop::kNoPermission), 1u);
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 5u);
    // The budget is untouched: a TTL 2 datagram of the same size still goes.
    server->on_peer_datagram(relay, peer, big, {.ttl = 2});
    ASSERT_EQ(io.client.size(), before + 1);
    EXPECT_EQ(io.client.back().ttl, 1);
    EXPECT_EQ(stats->drops_of(Drop::kBandwidth), 0u);
}

// The TTL rule is for relayed data only: a STUN request that arrives with
// TTL 1 (or 0) is answered, Binding and authenticated requests alike, and
// the answers leave with the default.
TEST_F(ServerTest, RequestsWithTtlOneAreAnswered) {
    const auto binding = build(M::kBinding, stun::Class::kRequest, {}, nullptr);
    for (const IpMarks m : {IpMarks{.ttl = 1}, received_with_ttl(0)}) {
        const size_t before = io.client.size();
        server->on_client_datagram(tuple(), binding, m);
        ASSERT_EQ(io.client.size(), before + 1);
        EXPECT_TRUE(Answer(io.client.back().bytes).success());
        EXPECT_EQ(io.client.back().ttl, 0);
    }
    const auto cr = creds(tuple());
    server->on_client_datagram(tuple(), build(M::kAllocate, stun::Class::kRequest, [](auto& b) {
        b.add_requested_transport(stun::kProtoUdp);
    }, &cr), {.ttl = 1});
    ASSERT_FALSE(io.client.empty());
    EXPECT_TRUE(Answer(io.client.back().bytes).success()) << Answer(io.client.back().bytes).code();
    EXPECT_EQ(io.client.back().ttl, 0);
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 0u);
}

// A TCP (or TLS) client has no per-message TTL: its data leaves for the
// peer with the socket's default, and a peer's datagram for it is relayed
// whatever its TTL (RFC 8656 section 14 is about datagrams to UDP clients).
TEST_F(ServerTest, TcpClientDataLeavesWithTheDefaultTtl) {
    const FiveTuple tcp{A("198.18.1.1:6200"), A("198.18.0.1:3478"), Transport::kTcp};
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(allocate(tcp).success());
    ASSERT_TRUE(channel_bind(tcp, 0x4001, peer).success());
    server->on_client_datagram(tcp, std::vector<uint8_t>{0x40, 0x01, 0x00, 0x01, 'a'});  // as StreamIo frames it
    ASSERT_EQ(io.peer_sends.size(), 1u);
    EXPECT_EQ(io.peer_sends[0].ttl, 0);
    const RelayId relay = server->allocations().find(tcp)->relay(Family::kIPv4)->id;
    const size_t before = io.client.size();
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'x'}, {.ttl = 9});
    server->on_peer_datagram(relay, peer, std::vector<uint8_t>{'y'}, {.ttl = 1});
    ASSERT_EQ(io.client.size(), before + 2);
    EXPECT_EQ(io.client[before].to, tcp);
    EXPECT_EQ(io.client[before].ttl, 0);
    EXPECT_EQ(io.client[before + 1].ttl, 0);
    EXPECT_EQ(stats->drops_of(Drop::kTtlExpired), 0u);
}

TEST_F(ServerTest, SendIndicationNeedsPermission) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    auto send = [&](const Address& p) {
        server->on_client_datagram(tuple(), build(M::kSend, stun::Class::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, p);
            const std::array<uint8_t, 3> d{'h', 'i', '!'};
            b.add(stun::attr::kData, d);
        }, nullptr));
    };
    send(peer);
    EXPECT_TRUE(io.peer_sends.empty());
    EXPECT_EQ(stats->drops_of(Drop::kNoPermission), 1u);
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    send(peer);
    ASSERT_EQ(io.peer_sends.size(), 1u);
    EXPECT_EQ(io.peer_sends[0].bytes, std::vector<uint8_t>({'h', 'i', '!'}));
    send(A("127.0.0.1:7000"));
    EXPECT_EQ(stats->drops_of(Drop::kPeerPolicy), 1u);
    send(A("[::ffff:127.0.0.1]:7000"));
    EXPECT_EQ(stats->drops_of(Drop::kPeerPolicy), 2u);
    send(A("10.1.2.3:7000"));  // private, denied by default
    EXPECT_EQ(stats->drops_of(Drop::kPeerPolicy), 3u);
    EXPECT_EQ(io.peer_sends.size(), 1u);
    // By rule: two by the default ranges (loopback), one private.
    EXPECT_EQ(stats->peer_denials[0].get(), 0u);  // operator
    EXPECT_EQ(stats->peer_denials[1].get(), 2u);  // default
    EXPECT_EQ(stats->peer_denials[3].get(), 1u);  // private
}

// RFC 8656 11.2: a Send indication's DONT-FRAGMENT asks for DF on that one
// datagram (the socket layer sets it around the send); RFC 8489 6.3.2: an
// indication with an unknown comprehension-required attribute is discarded.
TEST_F(ServerTest, SendIndicationDontFragmentAndUnknownAttributes) {
    ASSERT_TRUE(allocate(tuple()).success());  // no DONT-FRAGMENT on the allocation
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    auto send = [&](bool df, uint16_t extra) {
        server->on_client_datagram(tuple(), build(M::kSend, stun::Class::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, peer);
            const std::array<uint8_t, 2> d{'o', 'k'};
            b.add(stun::attr::kData, d);
            if (df) {
                b.add(stun::attr::kDontFragment, std::span<const uint8_t>());
            }
            if (extra != 0) {
                const std::array<uint8_t, 4> v{1, 2, 3, 4};
                b.add(extra, v);
            }
        }, nullptr));
    };
    send(false, 0);
    ASSERT_EQ(io.peer_sends.size(), 1u);
    EXPECT_FALSE(io.peer_sends.back().dont_fragment);
    send(true, 0);
    ASSERT_EQ(io.peer_sends.size(), 2u);
    EXPECT_TRUE(io.peer_sends.back().dont_fragment);
    EXPECT_EQ(io.peer_sends.back().bytes, std::vector<uint8_t>({'o', 'k'}));
    send(false, 0x7f31);  // unknown, comprehension-required (< 0x8000)
    EXPECT_EQ(io.peer_sends.size(), 2u);
    EXPECT_EQ(stats->drops_of(Drop::kUnknownAttribute), 1u);
    send(false, 0xff31);  // unknown, comprehension-optional: ignored
    EXPECT_EQ(io.peer_sends.size(), 3u);
}

TEST_F(ServerTest, PeerDataBecomesDataIndicationWithPeerAddress) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    from_peer(tuple(), peer, {9, 8, 7});
    Answer ind(io.client.back().bytes);
    ASSERT_TRUE(ind.ok);
    EXPECT_TRUE(ind.view.is(M::kData, stun::Class::kIndication));
    EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), peer);
    const auto* d = ind.view.find(stun::attr::kData);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(std::vector<uint8_t>(ind.view.value(*d).begin(), ind.view.value(*d).end()),
              std::vector<uint8_t>({9, 8, 7}));
}

TEST_F(ServerTest, PeerIcmpBecomesDataIndicationWithIcmpAttribute) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    const RelayId relay = server->allocations().find(tuple())->relay(Family::kIPv4)->id;
    server->on_peer_icmp(relay, peer, 3, 3, 0);
    EXPECT_EQ(stats->drops_of(Drop::kNoPermission), 1u);
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    const size_t before = io.client.size();
    server->on_peer_icmp(relay, peer, 3, 4, 1400);
    ASSERT_EQ(io.client.size(), before + 1);
    Answer ind(io.client.back().bytes);
    ASSERT_TRUE(ind.ok);
    EXPECT_TRUE(ind.view.is(M::kData, stun::Class::kIndication));
    EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), peer);
    EXPECT_FALSE(ind.has(stun::attr::kData));
    const auto* icmp = ind.view.find(stun::attr::kIcmp);
    ASSERT_NE(icmp, nullptr);
    stun::IcmpValue v;
    ASSERT_EQ(stun::decode_icmp(ind.view.value(*icmp), v), stun::AttrError::kOk);
    EXPECT_EQ(v.type, 3);
    EXPECT_EQ(v.code, 4);
    EXPECT_EQ(v.error_data, 1400u);
    EXPECT_EQ(stats->icmp_indications.get(), 1u);
}

// RFC 8656 section 11.5: only Destination Unreachable and Time Exceeded
// (and ICMPv6 Packet Too Big) reach the client; Error Data is the MTU for
// "fragmentation needed" and Packet Too Big only, else 0 (section 18.13),
// whatever the kernel reported there (a parameter problem's pointer).
TEST_F(ServerTest, PeerIcmpOfOtherTypesIsDroppedAndErrorDataIsOnlyAnMtu) {
    auto a = allocate(tuple(), [](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(a.success()) << a.code();
    const Address peer4 = A("198.18.9.9:7000");
    const Address peer6 = A("[2001:db8::9]:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer4, peer6}).success());
    const Allocation& al = *server->allocations().find(tuple());
    const RelayId r4 = al.relay(Family::kIPv4)->id;
    const RelayId r6 = al.relay(Family::kIPv6)->id;
    struct Case {
        RelayId relay;
        Address peer;
        uint8_t type, code;
        uint32_t data;
        bool relayed;
        uint32_t want_data;
    };
    const Case cases[] = {
        {r4, peer4, 12, 0, 7, false, 0},     // parameter problem
        {r4, peer4, 5, 1, 0, false, 0},      // redirect
        {r4, peer4, 0, 0, 0, false, 0},      // echo reply
        {r4, peer4, 3, 3, 7, true, 0},       // port unreachable: no MTU
        {r4, peer4, 3, 4, 1280, true, 1280}, // fragmentation needed
        {r4, peer4, 11, 0, 9, true, 0},      // TTL exceeded
        {r6, peer6, 4, 0, 40, false, 0},     // parameter problem
        {r6, peer6, 128, 0, 0, false, 0},    // echo request
        {r6, peer6, 1, 4, 5, true, 0},       // port unreachable
        {r6, peer6, 2, 0, 1400, true, 1400}, // packet too big
        {r6, peer6, 3, 0, 9, true, 0},       // hop limit exceeded
    };
    uint64_t dropped = 0;
    for (const Case& c : cases) {
        SCOPED_TRACE(testing::Message() << c.peer.to_string() << " type " << int{c.type} << " code " << int{c.code});
        const size_t before = io.client.size();
        server->on_peer_icmp(c.relay, c.peer, c.type, c.code, c.data);
        if (!c.relayed) {
            EXPECT_EQ(io.client.size(), before);
            EXPECT_EQ(stats->drops_of(Drop::kIcmpType), ++dropped);
            continue;
        }
        ASSERT_EQ(io.client.size(), before + 1);
        Answer ind(io.client.back().bytes);
        ASSERT_TRUE(ind.ok);
        EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), c.peer);
        const auto* icmp = ind.view.find(stun::attr::kIcmp);
        ASSERT_NE(icmp, nullptr);
        stun::IcmpValue v;
        ASSERT_EQ(stun::decode_icmp(ind.view.value(*icmp), v), stun::AttrError::kOk);
        EXPECT_EQ(v.type, c.type);
        EXPECT_EQ(v.code, c.code);
        EXPECT_EQ(v.error_data, c.want_data);
    }
    EXPECT_EQ(stats->icmp_indications.get(), 6u);
}

// RFC 8489 section 7.3: a message whose FINGERPRINT does not match is
// discarded unanswered (and counted); a correct one is answered. Applies to
// requests and indications alike.
TEST_F(ServerTest, WrongFingerprintIsDiscarded) {
    const auto c = creds(tuple());
    const Attrs transport = [](stun::MessageBuilder& b) { b.add_requested_transport(stun::kProtoUdp); };
    auto good = build(M::kAllocate, stun::Class::kRequest, transport, &c, random_txid(), true);
    auto bad = build(M::kAllocate, stun::Class::kRequest, transport, &c, random_txid(), true);
    bad[bad.size() - 1] ^= 1;
    EXPECT_FALSE(exchange(tuple(), bad).has_value());
    EXPECT_EQ(stats->drops_of(Drop::kBadFingerprint), 1u);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    auto a = exchange(tuple(), good);
    ASSERT_TRUE(a.has_value());
    EXPECT_TRUE(a->success()) << a->code();
    // A Binding request too, and a Send indication: nothing goes to the peer.
    auto binding = build(M::kBinding, stun::Class::kRequest, {}, nullptr, random_txid(), true);
    binding[binding.size() - 2] ^= 0x80;
    EXPECT_FALSE(exchange(tuple(), binding).has_value());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    auto send = build(M::kSend, stun::Class::kIndication, [&](stun::MessageBuilder& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, peer);
        b.add(stun::attr::kData, std::vector<uint8_t>{1, 2, 3});
    }, nullptr, random_txid(), true);
    const size_t sends = io.peer_sends.size();
    auto damaged = send;
    damaged[damaged.size() - 1] ^= 4;
    server->on_client_datagram(tuple(), damaged);
    EXPECT_EQ(io.peer_sends.size(), sends);
    EXPECT_EQ(stats->drops_of(Drop::kBadFingerprint), 3u);
    server->on_client_datagram(tuple(), send);
    EXPECT_EQ(io.peer_sends.size(), sends + 1);
}

TEST_F(ServerTest, DualStackAllocation) {
    auto a = allocate(tuple(), [](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(a.success()) << a.code();
    auto relayed = a.xor_addresses(kXorRelayedAddress);
    ASSERT_EQ(relayed.size(), 2u);
    EXPECT_TRUE(relayed[0].is_v4());
    EXPECT_TRUE(relayed[1].is_v6());
    EXPECT_TRUE(create_permission(tuple(), {A("[2001:db8::1]:1"), A("198.18.9.9:1")}).success());
}

TEST_F(ServerTest, DualStackWithCoturnCodePoint) {
    auto a = allocate(tuple(), [](auto& b) {
        const std::array<uint8_t, 4> v6{0x02, 0, 0, 0};
        b.add(0x8032, v6);
    });
    ASSERT_TRUE(a.success());
    EXPECT_EQ(a.xor_addresses(kXorRelayedAddress).size(), 2u);
}

TEST_F(ServerTest, DualStackWithOneFamilyMissingReportsAddressErrorCode) {
    Config c = base_config();
    c.relay_ips = {A("198.18.0.1")};
    start(c);
    auto a = allocate(tuple(), [](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(a.success());
    EXPECT_EQ(a.xor_addresses(kXorRelayedAddress).size(), 1u);
    const auto* e = a.view.find(stun::attr::kAddressErrorCode);
    ASSERT_NE(e, nullptr);
    stun::AddressErrorValue v;
    ASSERT_EQ(stun::decode_address_error_code(a.view.value(*e), v), stun::AttrError::kOk);
    EXPECT_EQ(v.family, Family::kIPv6);
    EXPECT_EQ(v.code, 440);
}

// REQUESTED-ADDRESS-FAMILY of a family no server knows is 440; one of the
// wrong length is malformed: 400.
TEST_F(ServerTest, RequestedFamilyUnknownIs440AndMalformedIs400) {
    auto unknown = allocate(tuple(5001), [](stun::MessageBuilder& b) {
        const std::array<uint8_t, 4> v{0x03, 0, 0, 0};
        b.add(stun::attr::kRequestedAddressFamily, v);
    });
    EXPECT_EQ(unknown.code(), 440);
    auto malformed = allocate(tuple(5002), [](stun::MessageBuilder& b) {
        const std::array<uint8_t, 8> v{0x01, 0, 0, 0, 0, 0, 0, 0};
        b.add(stun::attr::kRequestedAddressFamily, v);
    });
    EXPECT_EQ(malformed.code(), 400);
    EXPECT_EQ(shared->quota.total(), 0u);
}

TEST_F(ServerTest, RequestedFamilyNotAvailableIs440) {
    Config c = base_config();
    c.relay_ips = {A("198.18.0.1")};
    start(c);
    auto a = allocate(tuple(), [](auto& b) { b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6); });
    EXPECT_EQ(a.code(), 440);
    EXPECT_EQ(shared->quota.total(), 0u);
}

TEST_F(ServerTest, RefreshWithOtherFamilyIs443) {
    ASSERT_TRUE(allocate(tuple()).success());
    auto r = request(tuple(), M::kRefresh,
                     [](auto& b) { b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6); });
    EXPECT_EQ(r.code(), 443);
}

// RFC 8656 section 7.3: with REQUESTED-ADDRESS-FAMILY a Refresh applies to
// that family's relayed address only; each relayed address of a dual
// allocation has its own lifetime, and one not refreshed ends alone, with the
// permissions and channels of its family.
class DualStack : public ServerTest {
protected:
    static void dual(stun::MessageBuilder& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); }
    Answer refresh_family(const FiveTuple& ft, uint32_t lifetime, Family f) {
        return request(ft, M::kRefresh, [&](auto& b) {
            b.add_u32(stun::attr::kLifetime, lifetime);
            b.add_address_family(stun::attr::kRequestedAddressFamily, f);
        });
    }
    const Address v4peer = A("198.18.9.9:7000");
    const Address v6peer = A("[2001:db8::1]:7000");
};

TEST_F(DualStack, RelayedAddressNotRefreshedEndsAloneWithItsPermissionsAndChannels) {
    ASSERT_TRUE(allocate(tuple(), dual).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, v4peer).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4002, v6peer).success());
    advance_s(500);
    auto r = refresh_family(tuple(), 600, Family::kIPv6);
    ASSERT_TRUE(r.success()) << r.code();
    EXPECT_EQ(r.u32(stun::attr::kLifetime), 600u);
    // Both channels renewed, as a client keeps them.
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, v4peer).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4002, v6peer).success());
    advance_s(99);  // 599 s: both still there
    const Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_TRUE(a->has_family(Family::kIPv4));
    advance_s(2);  // IPv4's 600 s are over, IPv6's were renewed at 500 s
    a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_FALSE(a->has_family(Family::kIPv4));
    EXPECT_TRUE(a->has_family(Family::kIPv6));
    EXPECT_EQ(io.open.size(), 1u);
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 0u);
    EXPECT_EQ(shared->ports.in_use(Family::kIPv6), 1u);
    EXPECT_EQ(shared->allocations.load(), 1);
    EXPECT_EQ(shared->allocations_v4.load(), 0);
    EXPECT_EQ(shared->allocations_v6.load(), 1);
    const uint64_t now = clock.now_ms();
    EXPECT_FALSE(a->permitted(v4peer, now));
    EXPECT_EQ(a->channel_for(v4peer, now), std::nullopt);
    EXPECT_TRUE(a->permitted(v6peer, now));
    EXPECT_EQ(a->channel_for(v6peer, now), std::optional<uint16_t>(0x4002));
    EXPECT_EQ(a->expires_ms(), a->relays[1].expires_ms);
    // The allocation is IPv6-only now.
    EXPECT_EQ(create_permission(tuple(), {v4peer}).code(), 443);
    EXPECT_EQ(refresh_family(tuple(), 600, Family::kIPv4).code(), 443);
    const size_t sends = io.peer_sends.size();
    server->on_client_datagram(tuple(), std::vector<uint8_t>{0x40, 0x02, 0x00, 0x02, 'h', 'i'});
    ASSERT_EQ(io.peer_sends.size(), sends + 1);
    EXPECT_EQ(io.peer_sends.back().peer, v6peer);
    // Its own lifetime ends at 1100 s.
    advance_s(497);
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    advance_s(2);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    EXPECT_TRUE(io.open.empty());
    EXPECT_EQ(shared->allocations.load(), 0);
    EXPECT_EQ(shared->allocations_v6.load(), 0);
    EXPECT_EQ(shared->quota.total(), 0u);
}

TEST_F(DualStack, RefreshWithoutAFamilyRenewsBoth) {
    ASSERT_TRUE(allocate(tuple(), dual).success());
    advance_s(500);
    ASSERT_TRUE(refresh(tuple(), 600).success());
    advance_s(200);
    const Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_TRUE(a->dual());
    EXPECT_EQ(io.open.size(), 2u);
}

TEST_F(DualStack, EachFamilyCanBeShortenedOrRenewedOnItsOwn) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) {
                    dual(b);
                    b.add_u32(stun::attr::kLifetime, 3600);
                }).success());
    // IPv4's cut to 600 s; IPv6's keeps 3600 s.
    ASSERT_TRUE(refresh_family(tuple(), 600, Family::kIPv4).success());
    advance_s(601);
    const Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_FALSE(a->has_family(Family::kIPv4));
    EXPECT_TRUE(a->has_family(Family::kIPv6));
    advance_s(2990);  // 3591 s
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    advance_s(10);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
}

TEST_F(DualStack, DeletingOneFamilyTakesItsPermissionsAndChannels) {
    ASSERT_TRUE(allocate(tuple(), dual).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4001, v4peer).success());
    ASSERT_TRUE(create_permission(tuple(), {v6peer}).success());
    auto r = refresh_family(tuple(), 0, Family::kIPv4);
    ASSERT_TRUE(r.success()) << r.code();
    EXPECT_EQ(r.u32(stun::attr::kLifetime), 0u);
    const Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_FALSE(a->has_family(Family::kIPv4));
    EXPECT_TRUE(a->channels.empty());
    EXPECT_EQ(a->permissions.size(), 1u);
    EXPECT_TRUE(a->permitted(v6peer, clock.now_ms()));
    // The channel's number and peer stay reserved as after an expiry (RFC
    // 8656 section 12.2): not bindable to another peer for 5 minutes.
    EXPECT_EQ(channel_bind(tuple(), 0x4001, v6peer).code(), 400);
}

// The allocation's timer follows the earliest of its addresses' expiries
// through shortening, lengthening and a plain Refresh.
TEST_F(DualStack, TimerFollowsMixedRefreshes) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) {
                    dual(b);
                    b.add_u32(stun::attr::kLifetime, 3600);
                }).success());
    ASSERT_TRUE(refresh_family(tuple(), 600, Family::kIPv4).success());   // IPv4 600 s: the timer moves earlier
    advance_s(100);
    ASSERT_TRUE(refresh_family(tuple(), 3600, Family::kIPv4).success());  // IPv4 at 3700 s, IPv6 at 3600 s
    advance_s(3499);
    const Allocation* a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_TRUE(a->dual());
    advance_s(2);  // 3601 s: IPv6 ends
    a = server->allocations().find(tuple());
    ASSERT_NE(a, nullptr);
    EXPECT_FALSE(a->has_family(Family::kIPv6));
    ASSERT_TRUE(refresh(tuple(), 600).success());  // IPv4 to 4201 s
    advance_s(598);
    EXPECT_NE(server->allocations().find(tuple()), nullptr);
    advance_s(3);
    EXPECT_EQ(server->allocations().find(tuple()), nullptr);
    EXPECT_EQ(shared->allocations.load(), 0);
}

// As ConnectionEndReportedDuringRemovalEndsTheAllocationOnce: closing the
// expired address's socket flushes the loop's output, and the client's TCP
// connection failing there ends the allocation from inside the expiry.
TEST_F(DualStack, ConnectionEndDuringOneFamilysExpiryEndsTheAllocationOnce) {
    const FiveTuple ft{A("198.18.1.1:6100"), A("198.18.0.1:3478"), Transport::kTcp};
    ASSERT_TRUE(allocate(ft, dual).success());
    advance_s(500);
    ASSERT_TRUE(refresh_family(ft, 600, Family::kIPv6).success());
    int reports = 0;
    io.on_close_relay = [&](RelayId) {
        if (reports++ == 0) {
            server->on_client_closed(ft);
        }
    };
    advance_s(101);
    io.on_close_relay = nullptr;
    EXPECT_EQ(server->allocations().find(ft), nullptr);
    EXPECT_EQ(shared->allocations.load(), 0);
    EXPECT_EQ(shared->allocations_v4.load(), 0);
    EXPECT_EQ(shared->allocations_v6.load(), 0);
    EXPECT_TRUE(io.open.empty());
    EXPECT_EQ(shared->quota.total(), 0u);
    advance_s(600);  // no timer of it left to run
    EXPECT_EQ(shared->allocations.load(), 0);
}

// [server].external_ips: the relay IP 198.18.0.1 is reached at 198.19.0.7
// through a 1:1 NAT.
class ExternalIp : public ServerTest {
protected:
    struct PeerHook : OffloadHook {
        void permission_added(uint64_t, const Address& ip) override { perms.push_back(ip); }
        void permission_removed(uint64_t, const Address& ip) override { std::erase(perms, ip); }
        void channel_added(uint64_t, uint16_t, const Address& peer) override { chans.push_back(peer); }
        void channel_removed(uint64_t, uint16_t, const Address& peer) override { std::erase(chans, peer); }
        std::vector<Address> perms;
        std::vector<Address> chans;
    };
    void SetUp() override { restart({}); }
    void TearDown() override { server.reset(); }
    void restart(std::vector<Prefix> allow) {
        Config c = base_config();
        c.external_ips = {A("198.19.0.7")};
        c.allow_peers = std::move(allow);
        start(c);
        server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    }
    Address relayed_of(const Answer& a) { return *a.xor_address(kXorRelayedAddress); }
    PeerHook rec;
};

TEST_F(ExternalIp, RelayedAddressIsAdvertisedOnTheExternalIp) {
    auto a = allocate(tuple());
    ASSERT_TRUE(a.success()) << a.code();
    const Address relayed = relayed_of(a);
    EXPECT_EQ(relayed.ip_string(), "198.19.0.7");
    const Allocation* al = server->allocations().find(tuple());
    ASSERT_NE(al, nullptr);
    EXPECT_EQ(al->relays[0].addr, A("198.18.0.1").with_port(relayed.port));  // bound on the relay IP
    // IPv6 has no external IP: as it is.
    auto six = allocate(tuple(5001), [](auto& b) { b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(six.success());
    EXPECT_EQ(relayed_of(six).ip_string(), "fd00::1");
    // Binding's RESPONSE-ORIGIN: the listener on the relay IP as the client reached it.
    auto bind = exchange(tuple(), build(M::kBinding, stun::Class::kRequest, {}, nullptr));
    ASSERT_TRUE(bind && bind->success());
    const auto* origin = bind->view.find(stun::attr::kResponseOrigin);
    ASSERT_NE(origin, nullptr);
    Address o;
    ASSERT_EQ(stun::decode_address(bind->view.value(*origin), o), stun::AttrError::kOk);
    EXPECT_EQ(o, A("198.19.0.7:3478"));
}

// Two clients of this relay talking relay-to-relay (both relay-only): each
// names the other's advertised address; the relay delivers between its own
// sockets directly, and each sees the other on its advertised address.
TEST_F(ExternalIp, RelayToRelayGoesDirectlyBetweenItsOwnSockets) {
    // Own addresses are denied as peers unless allowed (the default policy).
    ASSERT_TRUE(allocate(tuple(5000)).success());
    EXPECT_EQ(create_permission(tuple(5000), {A("198.19.0.7:1")}).code(), 403);
    restart({*Prefix::parse("198.19.0.7/32")});
    const Address ra = relayed_of(allocate(tuple(5000)));
    const Address rb = relayed_of(allocate(tuple(5001)));
    ASSERT_TRUE(create_permission(tuple(5000), {rb}).success());
    ASSERT_TRUE(create_permission(tuple(5001), {ra}).success());
    // The external listener is still the relay's own: never a peer.
    EXPECT_EQ(channel_bind(tuple(5000), 0x4001, A("198.19.0.7:3478")).code(), 403);
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4001, rb).success());
    server->on_client_datagram(tuple(5000), std::vector<uint8_t>{0x40, 0x01, 0x00, 0x02, 'h', 'i'});
    ASSERT_FALSE(io.peer_sends.empty());
    EXPECT_EQ(io.peer_sends.back().peer, A("198.18.0.1").with_port(rb.port));  // not the NAT's address
    // B's socket hears it from A's socket on the relay IP: B's client sees ra.
    const size_t to_clients = io.client.size();
    from_peer(tuple(5001), A("198.18.0.1").with_port(ra.port), {'h', 'i'});
    ASSERT_EQ(io.client.size(), to_clients + 1);
    Answer ind(io.client.back().bytes);
    ASSERT_TRUE(ind.ok);
    EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), ra);
    // These permissions and the channel go to the offload as the clients
    // named them, on the external IP: a dataplane that has confirmed the
    // external IPs takes such datagrams to the other allocation itself, and
    // the offload (IpcServer) holds them back until it has.
    EXPECT_EQ(rec.perms, (std::vector<Address>{A("198.19.0.7"), A("198.19.0.7")}));
    EXPECT_EQ(rec.chans, std::vector<Address>{rb});
    restart({*Prefix::parse("198.19.0.7/32"), *Prefix::parse("203.0.113.0/24")});
    rec.perms.clear();
    rec.chans.clear();
    ASSERT_TRUE(allocate(tuple(5002)).success());
    ASSERT_TRUE(channel_bind(tuple(5002), 0x4001, A("203.0.113.5:7000")).success());
    EXPECT_EQ(rec.perms, std::vector<Address>{A("203.0.113.5")});
    EXPECT_EQ(rec.chans, std::vector<Address>{A("203.0.113.5:7000")});
}

// Relay-to-relay without a NAT: a peer on the relay IP is offloaded (the
// dataplane takes such packets to the other allocation itself); a peer on
// another of the relay's own IPs, a listener's that is no relay IP, is not
// (the kernel delivers it locally, the dataplane would send it to its
// router). Behind a NAT it is the external IP that is offloaded, and the
// relay IP is not (PeerOnTheInternalRelayIpIsNotOffloadedBehindANat says why).
TEST_F(ExternalIp, PeersOnOwnIpsAreOffloadedOnlyOnTheRelayIpOrBehindANatTheExternalIp) {
    Config c = base_config();
    c.listen_tcp = {A("198.18.0.2:3478")};
    c.allow_peers = {*Prefix::parse("198.18.0.0/24")};
    start(c);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    const Address ra = relayed_of(allocate(tuple(5000)));
    const Address rb = relayed_of(allocate(tuple(5001)));
    EXPECT_EQ(ra.ip_string(), "198.18.0.1");
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4001, rb).success());
    ASSERT_TRUE(create_permission(tuple(5001), {ra}).success());
    EXPECT_EQ(rec.perms, (std::vector<Address>{A("198.18.0.1"), A("198.18.0.1")}));
    EXPECT_EQ(rec.chans, std::vector<Address>{rb});
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4002, A("198.18.0.2:8080")).success());
    ASSERT_TRUE(create_permission(tuple(5001), {A("198.18.0.2:1")}).success());
    EXPECT_EQ(rec.perms.size(), 2u);  // unchanged
    EXPECT_EQ(rec.chans.size(), 1u);
    // Still relayed, on the socket path.
    server->on_client_datagram(tuple(5000), std::vector<uint8_t>{0x40, 0x02, 0x00, 0x02, 'h', 'i'});
    ASSERT_FALSE(io.peer_sends.empty());
    EXPECT_EQ(io.peer_sends.back().peer, A("198.18.0.2:8080"));

    // The same relay behind a NAT: the listener's IP 198.18.0.2 and now the
    // relay IP stay on the socket path; the external IP goes to the offload.
    c.external_ips = {A("198.19.0.7")};
    c.allow_peers.push_back(*Prefix::parse("198.19.0.7/32"));
    start(c);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    rec.perms.clear();
    rec.chans.clear();
    const Address xa = relayed_of(allocate(tuple(5000)));
    const Address xb = relayed_of(allocate(tuple(5001)));
    ASSERT_EQ(xa.ip_string(), "198.19.0.7");
    const Address xb_internal = A("198.18.0.1").with_port(xb.port);
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4001, xb_internal).success());
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4002, A("198.18.0.2:8080")).success());
    ASSERT_TRUE(create_permission(tuple(5001), {A("198.18.0.2:1")}).success());
    EXPECT_TRUE(rec.perms.empty()) << "a permission on the natted relay IP or a listener's IP was offloaded";
    EXPECT_TRUE(rec.chans.empty()) << "a channel to the natted relay IP or a listener's IP was offloaded";
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4003, xb).success());
    ASSERT_TRUE(create_permission(tuple(5001), {xa}).success());
    EXPECT_EQ(rec.perms, (std::vector<Address>{A("198.19.0.7"), A("198.19.0.7")}));
    EXPECT_EQ(rec.chans, std::vector<Address>{xb});
}

// The list behind offloadable(): the listeners' IPs and, of a family with an
// external IP, the relay IP; never the external IP (nor the listeners' ports
// on it), and not the relay IP of a family without one.
TEST_F(ExternalIp, SocketOnlyPeerIpsAreTheListenersAndTheNattedRelayIpNotTheExternalIp) {
    Config c = base_config();
    c.listen_tcp = {A("198.18.0.2:3478")};
    c.external_ips = {A("198.19.0.7")};
    // fd00::1, a listener's and the IPv6 relay IP, has no external IP: the
    // dataplane takes peers there itself.
    EXPECT_EQ(Shared::make_socket_only_peer_ips(c), (std::vector<Address>{A("198.18.0.1"), A("198.18.0.2")}));
    // Without a NAT the IPv4 relay IP is left out too.
    c.external_ips.clear();
    EXPECT_EQ(Shared::make_socket_only_peer_ips(c), std::vector<Address>{A("198.18.0.2")});
}

// Behind a NAT (external_ips), a client may still name
// another allocation's relayed address on the INTERNAL relay IP. In socket
// mode the other allocation sees the datagram as coming from the sender's
// EXTERNAL address (Config::to_external): its permission for the external
// address lets it in, the XOR-PEER-ADDRESS is the external one. The
// dataplane translates only datagrams addressed to the external IP: to one
// addressed to the relay IP it would present the internal source and check
// the receiving allocation's permission for the relay IP, which is not what
// the client created (that one, on the external IP, is offloaded): the
// datagram would be dropped where the socket path delivers it. So with an
// external IP of the peer's family, a peer on the relay IP must stay on
// the socket path.
TEST_F(ExternalIp, PeerOnTheInternalRelayIpIsNotOffloadedBehindANat) {
    restart({*Prefix::parse("198.19.0.7/32"), *Prefix::parse("198.18.0.1/32")});
    const Address ra = relayed_of(allocate(tuple(5000)));
    const Address rb = relayed_of(allocate(tuple(5001)));
    ASSERT_EQ(ra.ip_string(), "198.19.0.7");
    const Address rb_internal = A("198.18.0.1").with_port(rb.port);
    ASSERT_TRUE(channel_bind(tuple(5000), 0x4001, rb_internal).success());
    ASSERT_TRUE(create_permission(tuple(5001), {ra}).success());  // B permits A as its client knows it
    // Socket mode: B hears A's datagram from the relay IP, as from ra: delivered.
    const size_t to_clients = io.client.size();
    from_peer(tuple(5001), A("198.18.0.1").with_port(ra.port), {'h', 'i'});
    ASSERT_EQ(io.client.size(), to_clients + 1);
    EXPECT_EQ(Answer(io.client.back().bytes).xor_address(stun::attr::kXorPeerAddress), ra);
    // B's permission, on the external IP, is offloaded; A's permission and
    // channel on the internal relay IP are not.
    EXPECT_EQ(rec.perms, std::vector<Address>{A("198.19.0.7")})
        << "A's permission on the internal relay IP was offloaded";
    EXPECT_TRUE(rec.chans.empty()) << "A's channel to B's internal relayed address was offloaded";
}

// Only the relayed port range holds relayed addresses: any other port on the
// external IP is not this relay's (a host service the NAT's firewall
// guards) and is not reached on the relay IP, even where allow_peers lets
// clients reach the external IP; nor is a datagram from such a port on the
// relay IP presented as the external IP.
TEST_F(ExternalIp, PortsOutsideTheRelayRangeAreNotTranslated) {
    Config c = base_config();
    c.external_ips = {A("198.19.0.7")};
    c.allow_peers = {*Prefix::parse("198.19.0.7/32")};
    c.deny_peers = {*Prefix::parse("198.18.0.0/24")};  // the relay IP's network
    start(c);
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_EQ(create_permission(tuple(), {A("198.18.0.1:1")}).code(), 403);
    ASSERT_TRUE(create_permission(tuple(), {A("198.19.0.7:1")}).success());
    // Offloaded, as every permission on the external IP is; the socket
    // path sends a datagram to a port outside the relay range there to the
    // NAT, as to any peer.
    EXPECT_EQ(rec.perms, std::vector<Address>{A("198.19.0.7")});
    const size_t before = io.peer_sends.size();
    server->on_client_datagram(tuple(), build(M::kSend, stun::Class::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, A("198.19.0.7:22"));
        const std::array<uint8_t, 1> d{'s'};
        b.add(stun::attr::kData, d);
    }, nullptr));
    ASSERT_EQ(io.peer_sends.size(), before + 1);
    EXPECT_EQ(io.peer_sends.back().peer, A("198.19.0.7:22"));  // to the NAT, as any peer
    const size_t to_client = io.client.size();
    from_peer(tuple(), A("198.18.0.1:22"), {'x'});
    EXPECT_EQ(io.client.size(), to_client);  // the relay IP's port 22 has no permission
}

TEST_F(ServerTest, DontFragmentIsPassedToTheRelaySocket) {
    ASSERT_TRUE(allocate(tuple(), [](auto& b) { b.add_empty(stun::attr::kDontFragment); }).success());
    ASSERT_EQ(io.df.size(), 1u);
    EXPECT_TRUE(io.df.begin()->second);
}

TEST_F(ServerTest, UnsupportedTransportIs442) {
    auto a = request(tuple(), M::kAllocate, [](auto& b) { b.add_requested_transport(132); });  // SCTP
    EXPECT_EQ(a.code(), 442);
    // RFC 6062 section 5.1: TCP relaying needs a TCP or TLS client connection.
    auto tcp_over_udp = request(tuple(), M::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoTcp); });
    EXPECT_EQ(tcp_over_udp.code(), 400);
    auto missing = request(tuple(), M::kAllocate, {});
    EXPECT_EQ(missing.code(), 400);
}

TEST_F(ServerTest, EvenPortReservesNextPort) {
    auto a = allocate(tuple(), [](auto& b) { b.add_even_port(true); });
    ASSERT_TRUE(a.success());
    const auto port = a.xor_address(kXorRelayedAddress)->port;
    EXPECT_EQ(port % 2, 0);
    const auto* tok = a.view.find(stun::attr::kReservationToken);
    ASSERT_NE(tok, nullptr);
    std::vector<uint8_t> token(a.view.value(*tok).begin(), a.view.value(*tok).end());
    auto b = allocate(tuple(5001), [&](auto& m) { m.add(stun::attr::kReservationToken, token); });
    ASSERT_TRUE(b.success());
    EXPECT_EQ(b.xor_address(kXorRelayedAddress)->port, port + 1);
    // A token is good once.
    EXPECT_EQ(allocate(tuple(5002), [&](auto& m) { m.add(stun::attr::kReservationToken, token); }).code(), 508);
}

TEST_F(ServerTest, ReservationTokenKeepsItsFamily) {
    auto a = allocate(tuple(), [](auto& b) {
        b.add_even_port(true);
        b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
    });
    ASSERT_TRUE(a.success());
    const auto v6 = a.xor_address(kXorRelayedAddress);
    ASSERT_TRUE(v6 && v6->is_v6());
    const auto* tok = a.view.find(stun::attr::kReservationToken);
    ASSERT_NE(tok, nullptr);
    std::vector<uint8_t> token(a.view.value(*tok).begin(), a.view.value(*tok).end());
    auto b = allocate(tuple(5001), [&](auto& m) { m.add(stun::attr::kReservationToken, token); });
    ASSERT_TRUE(b.success());
    EXPECT_EQ(*b.xor_address(kXorRelayedAddress), v6->with_port(v6->port + 1));
}

TEST_F(ServerTest, EvenPortReservationExpires) {
    auto a = allocate(tuple(), [](auto& b) { b.add_even_port(true); });
    ASSERT_TRUE(a.success());
    const auto* tok = a.view.find(stun::attr::kReservationToken);
    std::vector<uint8_t> token(a.view.value(*tok).begin(), a.view.value(*tok).end());
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 2u);
    advance_s(31);
    EXPECT_EQ(allocate(tuple(5001), [&](auto& m) { m.add(stun::attr::kReservationToken, token); }).code(), 508);
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 1u);
}

TEST_F(ServerTest, EvenPortWithoutReservation) {
    auto a = allocate(tuple(), [](auto& b) { b.add_even_port(false); });
    ASSERT_TRUE(a.success());
    EXPECT_EQ(a.xor_address(kXorRelayedAddress)->port % 2, 0);
    EXPECT_FALSE(a.has(stun::attr::kReservationToken));
}

TEST_F(ServerTest, EvenPortAndTokenTogetherAre400) {
    auto a = allocate(tuple(), [](auto& b) {
        b.add_even_port(false);
        b.add_u64(stun::attr::kReservationToken, 42);
    });
    EXPECT_EQ(a.code(), 400);
}

// RFC 8656 section 7.2 item 8: a reservation (EVEN-PORT with R) is of one
// port of one family; with ADDITIONAL-ADDRESS-FAMILY it is 400, and nothing
// is allocated or reserved. Without R the pair is fine.
TEST_F(ServerTest, EvenPortReservationWithAdditionalFamilyIs400) {
    auto a = allocate(tuple(), [](auto& b) {
        b.add_even_port(true);
        b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6);
    });
    EXPECT_EQ(a.code(), 400);
    EXPECT_FALSE(a.has(stun::attr::kReservationToken));
    EXPECT_EQ(shared->ports.in_use(Family::kIPv4), 0u);
    EXPECT_EQ(shared->ports.in_use(Family::kIPv6), 0u);
    auto b = allocate(tuple(), [](auto& m) {
        m.add_even_port(false);
        m.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6);
    });
    ASSERT_TRUE(b.success()) << b.code();
    EXPECT_EQ(b.xor_addresses(kXorRelayedAddress).size(), 2u);
}

TEST_F(ServerTest, PortRangeExhaustedIs508) {
    Config c = base_config();
    c.relay_port_min = 50000;
    c.relay_port_max = 50001;
    start(c);
    EXPECT_TRUE(allocate(tuple(1)).success());
    EXPECT_TRUE(allocate(tuple(2)).success());
    EXPECT_EQ(allocate(tuple(3)).code(), 508);
    EXPECT_EQ(stats->quota_rejections[static_cast<size_t>(QuotaKind::kPorts)].get(), 1u);
    EXPECT_EQ(shared->quota.total(), 2u);  // the refused one released its slot
}

TEST_F(ServerTest, PortsHeldByOtherProcessesAreSkipped) {
    Config c = base_config();
    c.relay_port_min = 50000;
    c.relay_port_max = 50003;
    start(c);
    io.busy_ports = {50000, 50001, 50002};
    auto a = allocate(tuple());
    ASSERT_TRUE(a.success());
    EXPECT_EQ(a.xor_address(kXorRelayedAddress)->port, 50003);
}

TEST_F(ServerTest, PerUserQuotaIs486) {
    Config c = base_config();
    c.max_per_user = 2;
    start(c);
    EXPECT_TRUE(allocate(tuple(1)).success());
    EXPECT_TRUE(allocate(tuple(2)).success());
    EXPECT_EQ(allocate(tuple(3)).code(), 486);
    EXPECT_TRUE(allocate(tuple(4), {}, "bob").success());
    ASSERT_TRUE(refresh(tuple(1), 0).success());
    EXPECT_TRUE(allocate(tuple(3)).success());
}

// The process's limit is a capacity limit: 508, not the per-user 486 (bob
// has no allocation at all).
TEST_F(ServerTest, TotalQuotaIs508) {
    Config c = base_config();
    c.max_total = 1;
    start(c);
    EXPECT_TRUE(allocate(tuple(1)).success());
    EXPECT_EQ(allocate(tuple(2), {}, "bob").code(), 508);
    EXPECT_EQ(stats->quota_rejections[static_cast<size_t>(QuotaKind::kTotal)].get(), 1u);
}

TEST_F(ServerTest, BandwidthQuotaDropsExcess) {
    Config c = base_config();
    c.bandwidth_bps = 8 * 1000;  // 1000 bytes/s, burst 64 KiB
    start(c);
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer).success());
    std::vector<uint8_t> cd(4 + 1000, 0);
    cd[0] = 0x40;
    cd[2] = 0x03;
    cd[3] = 0xE8;
    for (int i = 0; i < 70; ++i) {
        server->on_client_datagram(tuple(), cd);
    }
    EXPECT_EQ(io.peer_sends.size(), 65u);
    EXPECT_EQ(stats->drops_of(Drop::kBandwidth), 5u);
    clock.advance_s(1);
    server->on_client_datagram(tuple(), cd);
    EXPECT_EQ(io.peer_sends.size(), 66u);
}

TEST_F(ServerTest, DrainingRefusesAllocateWith403ButRefreshes) {
    ASSERT_TRUE(allocate(tuple(1)).success());
    shared->draining.store(true);
    EXPECT_EQ(allocate(tuple(2)).code(), 403);
    EXPECT_TRUE(refresh(tuple(1), 600).success());
}

// [redirect]: RFC 8489 section 10 / RFC 8656 section 7.2.
Address alternate_of(const Answer& a) {
    Address out;
    const auto* attr = a.view.find(stun::attr::kAlternateServer);
    EXPECT_NE(attr, nullptr);
    if (attr == nullptr || stun::decode_address(a.view.value(*attr), out) != stun::AttrError::kOk) {
        return {};
    }
    return out;
}

Config redirecting(Config c, Config::RedirectWhen when) {
    c.redirect_servers = {A("198.18.0.7:3478"), A("[fd00::7]:3478"), A("198.18.0.8:3478")};
    c.redirect_tls_servers = {A("198.18.0.7:5349")};
    c.redirect_tls_domain = "turn7.example.org";
    c.listen_tls = {A("198.18.0.1:5349")};
    c.redirect_when = when;
    return c;
}

TEST_F(ServerTest, DrainingRedirectsAllocateSignedToAnAlternateOfTheClientsFamily) {
    start(redirecting(base_config(), Config::RedirectWhen::kDraining));
    ASSERT_TRUE(allocate(tuple(1)).success());  // not draining: served here
    shared->draining.store(true);
    auto r = allocate(tuple(2));
    ASSERT_EQ(r.code(), 300) << r.reason();
    EXPECT_EQ(alternate_of(r).to_string(), "198.18.0.7:3478");
    EXPECT_FALSE(r.has(stun::attr::kAlternateDomain));  // UDP client
    // Signed with the requester's key (RFC 8489 section 14.8: receivers validate it before moving).
    const auto key = auth::long_term_key(stun::PasswordAlgorithm::kMd5, "alice", "example.org", "alice-pw");
    EXPECT_TRUE(stun::verify_message_integrity(r.view, key->span()));
    EXPECT_EQ(server->allocations().find(tuple(2)), nullptr);
    EXPECT_EQ(shared->quota.total(), 1u);  // the redirected one took no quota
    // Round robin over the family's alternates; an IPv6 client only ever gets the IPv6 one.
    EXPECT_EQ(alternate_of(allocate(tuple(3))).to_string(), "198.18.0.8:3478");
    EXPECT_EQ(alternate_of(allocate(tuple(4))).to_string(), "198.18.0.7:3478");
    EXPECT_EQ(alternate_of(allocate(tuple(5, true))).to_string(), "[fd00::7]:3478");
    EXPECT_EQ(alternate_of(allocate(tuple(6, true))).to_string(), "[fd00::7]:3478");
    // Existing allocations keep being served.
    EXPECT_TRUE(refresh(tuple(1), 600).success());
    EXPECT_EQ(stats->requests[static_cast<size_t>(MethodIndex::kAllocate)][code_index(300)].get(), 5u);
}

// The first Allocate of a client (no credentials yet) is redirected at once,
// unsigned and without REALM/NONCE: what libwebrtc can follow.
TEST_F(ServerTest, FirstAllocateWithoutCredentialsGetsAnUnsignedRedirect) {
    start(redirecting(base_config(), Config::RedirectWhen::kAlways));
    const Attrs udp = [](auto& b) { b.add_requested_transport(stun::kProtoUdp); };
    auto r = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest, udp, nullptr));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code(), 300);
    EXPECT_EQ(alternate_of(*r).to_string(), "198.18.0.7:3478");
    EXPECT_FALSE(r->has(stun::attr::kMessageIntegrity));
    EXPECT_FALSE(r->has(stun::attr::kRealm));
    EXPECT_FALSE(r->has(stun::attr::kNonce));
    // The other family's alternate follows the mandatory one (RFC 8489 section 10).
    std::vector<std::string> all;
    for (const auto& a : r->view.attributes()) {
        Address addr;
        if (a.type == stun::attr::kAlternateServer && stun::decode_address(r->view.value(a), addr) == stun::AttrError::kOk) {
            all.push_back(addr.to_string());
        }
    }
    EXPECT_EQ(all, (std::vector<std::string>{"198.18.0.7:3478", "[fd00::7]:3478"}));
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kNoCredentials), 0u);  // not a failure
    // Other requests without credentials, and a wrong password, are still challenged.
    auto refresh = exchange(tuple(), build(M::kRefresh, stun::Class::kRequest, nullptr, nullptr));
    EXPECT_EQ(refresh->code(), 401);
    Credentials wrong = creds(tuple(2));
    wrong.password = "not-alice-pw";
    auto bad = exchange(tuple(2), build(M::kAllocate, stun::Class::kRequest, udp, &wrong));
    EXPECT_EQ(bad->code(), 401);
    EXPECT_FALSE(bad->has(stun::attr::kAlternateServer));
}

TEST_F(ServerTest, UnsignedRedirectsAreRateLimitedLikeChallenges) {
    Config c = redirecting(base_config(), Config::RedirectWhen::kAlways);
    c.unauth_per_ip_per_s = 2;
    start(c);
    const Attrs udp = [](auto& b) { b.add_requested_transport(stun::kProtoUdp); };
    int answered = 0;
    for (uint16_t port = 1; port <= 10; ++port) {
        answered += exchange(tuple(port), build(M::kAllocate, stun::Class::kRequest, udp, nullptr)) ? 1 : 0;
    }
    EXPECT_LE(answered, 4);  // the bucket's burst, not one per request
    EXPECT_GE(stats->drops_of(Drop::kUnauthRateLimit), 6u);
}

TEST_F(ServerTest, WithoutRedirectTheFirstAllocateIsChallenged) {
    shared->draining.store(true);  // draining, but no [redirect]
    auto r = exchange(tuple(), build(M::kAllocate, stun::Class::kRequest,
                                     [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, nullptr));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code(), 401);
    EXPECT_EQ(stats->auth_failures_of(AuthFailure::kNoCredentials), 1u);
}

TEST_F(ServerTest, AlwaysRedirectsEveryNewAllocationButNotOtherRequests) {
    start(redirecting(base_config(), Config::RedirectWhen::kAlways));
    EXPECT_EQ(allocate(tuple(1)).code(), 300);
    EXPECT_EQ(server->allocations().size(), 0u);
    // Binding is still answered (clients probe reachability before allocating).
    auto b = exchange(tuple(1), build(M::kBinding, stun::Class::kRequest, nullptr, nullptr));
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->success());
}

TEST_F(ServerTest, RedirectWithoutAnAlternateOfTheFamilyServesOrRefusesAsBefore) {
    Config c = redirecting(base_config(), Config::RedirectWhen::kAlways);
    c.redirect_servers = {A("198.18.0.7:3478")};  // IPv4 only
    start(c);
    EXPECT_EQ(allocate(tuple(1)).code(), 300);
    EXPECT_TRUE(allocate(tuple(2, true)).success());  // no IPv6 alternate: served here
    c.redirect_when = Config::RedirectWhen::kDraining;
    start(c);
    shared->draining.store(true);
    EXPECT_EQ(allocate(tuple(3, true)).code(), 403);  // draining, nowhere to send it
}

TEST_F(ServerTest, TlsClientsGetTheTlsAlternateAndAlternateDomain) {
    start(redirecting(base_config(), Config::RedirectWhen::kAlways));
    FiveTuple tls{A("198.18.1.1:6000"), A("198.18.0.1:5349"), Transport::kTls};
    auto r = allocate(tls);
    ASSERT_EQ(r.code(), 300);
    EXPECT_EQ(alternate_of(r).to_string(), "198.18.0.7:5349");
    EXPECT_EQ(r.text(stun::attr::kAlternateDomain), "turn7.example.org");
    FiveTuple tcp{A("198.18.1.1:6001"), A("198.18.0.1:3478"), Transport::kTcp};
    auto t = allocate(tcp);
    ASSERT_EQ(t.code(), 300);
    EXPECT_EQ(alternate_of(t).port, 3478);
    EXPECT_FALSE(t.has(stun::attr::kAlternateDomain));
}

TEST_F(ServerTest, RetransmittedRedirectedAllocateGetsTheSameAlternate) {
    start(redirecting(base_config(), Config::RedirectWhen::kAlways));
    const auto c = creds(tuple());
    const auto req = build(M::kAllocate, stun::Class::kRequest,
                           [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c);
    auto first = exchange(tuple(), req);
    auto again = exchange(tuple(), req);
    ASSERT_TRUE(first && again);
    EXPECT_EQ(first->bytes, again->bytes);  // from the response cache, not the next in the rotation
}

// RFC 6062 CONNECTION-IDs cannot be predicted from what a client sees: the
// transaction IDs of the relay's own indications come from an xorshift64
// whose whole state a ConnectionAttempt's first 8 bytes show, and ids used to
// be drawn from it, so a client sharing a username with others could compute
// the next id and bind another client's peer connection first. With
// Config::seed 0, as in production, the next id is not that prediction.
TEST_F(ServerTest, ConnectionIdsDoNotFollowTheIndicationsTransactionIds) {
    Config cfg = base_config();
    cfg.seed = 0;
    start(cfg);
    const FiveTuple ctl{A("198.18.1.1:6000"), A("198.18.0.1:3478"), Transport::kTcp};
    auto a = request(ctl, M::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoTcp); });
    ASSERT_TRUE(a.success()) << a.code();
    ASSERT_TRUE(create_permission(ctl, {A("198.18.9.9:1")}).success());
    ASSERT_EQ(io.open.size(), 1u);
    const RelayId relay = io.open.begin()->first;
    const auto xorshift = [](uint64_t s) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    };
    int predicted_right = 0;
    std::vector<uint8_t> last;  // the last ConnectionAttempt indication
    for (uint16_t port = 7000; port < 7016; ++port) {
        uint32_t id = 0;
        ASSERT_TRUE(server->on_tcp_peer_accepted(relay, A("198.18.9.9:1").with_port(port), id));
        if (!last.empty()) {
            // What the last indication's transaction ID said this id would be.
            uint64_t s1 = 0;
            std::memcpy(&s1, last.data() + 8, 8);
            predicted_right += static_cast<uint32_t>(xorshift(xorshift(s1))) == id ? 1 : 0;
        }
        last = io.client.back().bytes;
        ASSERT_EQ(Answer(last).u32(stun::attr::kConnectionId), id);
    }
    EXPECT_EQ(predicted_right, 0) << "CONNECTION-IDs follow the transaction IDs a client sees";
}

// RFC 6062 with several event loops: a CONNECTION-ID names the loop of its
// allocation (id % loops), and a ConnectionBind framed on another loop hands
// its connection there, unanswered here (the owner answers it).
TEST_F(ServerTest, ConnectionIdsNameTheirLoopAndForeignBindsAreHandedOver) {
    server->set_loop(2, 4);
    const FiveTuple ctl{A("198.18.1.1:6000"), A("198.18.0.1:3478"), Transport::kTcp};
    auto a = request(ctl, M::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoTcp); });
    ASSERT_TRUE(a.success()) << a.code();
    std::vector<uint32_t> ids;
    for (uint16_t port = 7000; port < 7020; ++port) {  // answered when the connection is made
        const auto c = creds(ctl);
        server->on_client_datagram(ctl, build(M::kConnect, stun::Class::kRequest, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, A("198.18.9.9:7000").with_port(port));
        }, &c));
    }
    for (const auto& [peer, id] : io.connects) {
        server->on_tcp_peer_connected(id, true);
        EXPECT_EQ(Answer(io.client.back().bytes).u32(stun::attr::kConnectionId), id);
        ids.push_back(id);
    }
    ASSERT_EQ(ids.size(), 20u);
    for (uint32_t id : ids) {
        EXPECT_EQ(id % 4, 2u) << id;
        EXPECT_NE(id, 0u);
    }
    EXPECT_GT(std::set<uint32_t>(ids.begin(), ids.end()).size(), 19u);  // still random

    const auto bind_on = [&](uint16_t port, uint32_t id) {
        const FiveTuple data{A("198.18.1.1:6000").with_port(port), A("198.18.0.1:3478"), Transport::kTcp};
        const auto c = creds(data);
        return std::pair{data, build(M::kConnectionBind, stun::Class::kRequest,
                                     [&](auto& b) { b.add_u32(stun::attr::kConnectionId, id); }, &c)};
    };
    // Another loop's id: handed over with the request itself, nothing answered here.
    const size_t answers = io.client.size();
    const auto [data1, req1] = bind_on(6001, ids[0] - 1);
    server->on_client_datagram(data1, req1);
    ASSERT_EQ(io.handoffs.size(), 1u);
    EXPECT_EQ(io.handoffs[0].loop, 1u);
    EXPECT_EQ(io.handoffs[0].client, data1);
    EXPECT_EQ(io.handoffs[0].message, req1);
    EXPECT_EQ(io.client.size(), answers);
    // This loop's own: bound here.
    const auto [data2, req2] = bind_on(6002, ids[1]);
    auto ok = exchange(data2, req2);
    ASSERT_TRUE(ok);
    EXPECT_TRUE(ok->success()) << ok->code();
    ASSERT_EQ(io.binds.size(), 1u);
    EXPECT_EQ(io.binds[0].second, ids[1]);
    EXPECT_EQ(io.handoffs.size(), 1u);
}

TEST_F(ServerTest, AllocationsOnDifferentTuplesAreIndependent) {
    ASSERT_TRUE(allocate(tuple(1)).success());
    ASSERT_TRUE(allocate(tuple(2, true)).success());
    EXPECT_EQ(server->allocations().size(), 2u);
    auto v6 = server->allocations().find(tuple(2, true));
    ASSERT_NE(v6, nullptr);
    EXPECT_TRUE(v6->has_family(Family::kIPv4));  // IPv4 relay by default, even for IPv6 clients
}

class RecordingHook final : public OffloadHook {
public:
    void allocation_added(const OffloadAllocation&) override { events.push_back("alloc+"); }
    void allocation_removed(uint64_t) override { events.push_back("alloc-"); }
    void permission_added(uint64_t, const Address&) override { events.push_back("perm+"); }
    void permission_removed(uint64_t, const Address&) override { events.push_back("perm-"); }
    void channel_added(uint64_t, uint16_t, const Address&) override { events.push_back("chan+"); }
    void channel_removed(uint64_t, uint16_t, const Address&) override { events.push_back("chan-"); }
    std::vector<std::string> events;
};

TEST_F(ServerTest, OffloadHookSeesEveryFlowChange) {
    RecordingHook rec;
    server.reset();
    server = std::make_unique<Server>(*shared, clock, io, rec, *stats);
    ASSERT_TRUE(allocate(tuple()).success());
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, A("198.18.9.9:7000")).success());
    // The channel reaches the offload with its permission, and leaves with it:
    // the permission expires at 300 s, the channel (600 s) stays bound but
    // off the fast path, whose channel path has no permission check (the
    // socket path drops its data: RFC 8656 sections 9, 12).
    advance_s(301);
    // A new permission for the IP brings the channel back.
    ASSERT_TRUE(create_permission(tuple(), {A("198.18.9.9:1")}).success());
    advance_s(100);  // the channel expires (600 s), its permission lives on
    ASSERT_TRUE(refresh(tuple(), 0).success());
    EXPECT_EQ(rec.events, std::vector<std::string>({"alloc+", "perm+", "chan+", "chan-", "perm-", "perm+", "chan+",
                                                    "chan-", "perm-", "alloc-"}));
    server.reset();
}

}  // namespace
// RESERVATION-TOKENs (RFC 8656 section 7.2, EVEN-PORT with the R bit): with
// seed 0, as in production, they come from RAND_bytes, so two allocators
// give different tokens and no token follows from the generator that picks
// ports; with a seed (tests, fuzzing) they repeat, for reproducible runs.
TEST(PortAllocatorTokens, UnpredictableInProductionReproducibleWithASeed) {
    auto tokens = [](uint64_t seed) {
        turn::cp::PortAllocator p(50000, 50999, 30000, seed);
        std::vector<uint64_t> t;
        for (int i = 0; i < 8; ++i) {
            const auto g = p.acquire(turn::Family::kIPv4, true, true, 0);
            EXPECT_TRUE(g.has_value());
            if (g) {
                EXPECT_NE(g->token, 0u);
                t.push_back(g->token);
            }
        }
        return t;
    };
    EXPECT_EQ(tokens(42), tokens(42));
    EXPECT_NE(tokens(0), tokens(0)) << "seed 0 made a generator seeded with 0 (or 32 bits): tokens that repeat";
}

}  // namespace turn::cp::test
