// Untrusted input never crashes the core: mutated and random datagrams from
// clients and peers, with and without an allocation. (Run under ASan/UBSan
// with -Db_sanitize=address,undefined for the full effect.)
#include <random>

#include "core/event_log.h"
#include "server_fixture.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;

TEST_F(ServerTest, MutatedAndRandomDatagramsAreHandledGracefully) {
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(channel_bind(tuple(), 0x4000, peer).success());
    const auto c = creds(tuple());
    std::vector<std::vector<uint8_t>> seeds = {
        build(M::kAllocate, stun::Class::kRequest, [](auto& b) { b.add_requested_transport(17); }, &c),
        build(M::kChannelBind, stun::Class::kRequest, [&](auto& b) {
            b.add_channel_number(0x4001);
            b.add_xor_address(stun::attr::kXorPeerAddress, peer);
        }, &c),
        build(M::kCreatePermission, stun::Class::kRequest,
              [&](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, peer); }, &c),
        build(M::kSend, stun::Class::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, peer);
            const std::array<uint8_t, 8> d{};
            b.add(stun::attr::kData, d);
        }, nullptr),
        build(M::kBinding, stun::Class::kRequest, {}, nullptr, random_txid(), true),
        {0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4},
    };
    std::mt19937 rng(12345);
    for (int i = 0; i < 200'000; ++i) {
        std::vector<uint8_t> d = seeds[rng() % seeds.size()];
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            switch (rng() % 3) {
                case 0:
                    d[rng() % d.size()] = static_cast<uint8_t>(rng());
                    break;
                case 1:
                    d.resize(rng() % (d.size() + 1));
                    break;
                default:
                    d.push_back(static_cast<uint8_t>(rng()));
            }
            if (d.empty()) {
                break;
            }
        }
        if (i % 2 == 0) {
            server->on_client_datagram(tuple(static_cast<uint16_t>(5000 + rng() % 3)), d);
        } else {
            server->on_peer_datagram(static_cast<RelayId>(rng() % 3), peer, d);
        }
        if (i % 50'000 == 0) {
            io.client.clear();
            io.peer_sends.clear();
        }
    }
    // Still serving.
    EXPECT_TRUE(exchange(tuple(9), build(M::kBinding, stun::Class::kRequest, {}, nullptr))->success());
}

TEST(EventLog, TextAndJsonFormats) {
    EXPECT_EQ(format_event("allocation_created", {{"user", "alice"}, {"relayed", "1.2.3.4:5"}}, false),
              "event=allocation_created user=alice relayed=1.2.3.4:5");
    EXPECT_EQ(format_event("x", {{"user", "a \"b\""}}, true), R"("event":"x","user":"a \"b\"")");
    EXPECT_EQ(format_event("x", {{"empty", ""}}, false), "event=x empty=\"\"");
    // Text values that would not read back as one value are quoted and escaped.
    EXPECT_EQ(format_event("x", {{"error", "[auth].users: \"alice:\" must be"}}, false),
              R"(event=x error="[auth].users: \"alice:\" must be")");
    EXPECT_EQ(format_event("x", {{"user", "a\nevent=forged"}}, false), R"(event=x user="a\nevent=forged")");
    EXPECT_EQ(format_event("x", {{"k", "a=b"}, {"p", "C:\\x"}}, false), R"(event=x k="a=b" p="C:\\x")");
}

}  // namespace
}  // namespace turn::cp::test
