// The real protocol core (Server) with an injected clock and a recording
// FakeIo: tests drive time by hand and never sleep.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "core/auth.h"
#include "core/server.h"
#include "core/shared.h"
#include "fake_io.h"
#include "stun_client.h"

namespace turn::cp::test {

inline Address A(const char* s) { return *Address::parse(s); }

class ServerTest : public ::testing::Test {
protected:
    static Config base_config() {
        Config c;
        c.listen = {A("198.18.0.1:3478"), A("[fd00::1]:3478")};
        c.relay_ips = {A("198.18.0.1"), A("fd00::1")};
        c.relay_port_min = 50000;
        c.relay_port_max = 50099;
        c.realm = "example.org";
        c.users = {{"alice", "alice-pw"}, {"bob", "bob-pw"}};
        c.metrics_listen = "";
        return c;
    }

    void SetUp() override { start(base_config()); }

    void start(const Config& c) {
        server.reset();
        std::string err;
        const std::array<uint8_t, 32> secret{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        shared = Shared::create(c, secret, err);
        ASSERT_TRUE(shared) << err;
        stats = std::make_unique<Stats>();
        server = std::make_unique<Server>(*shared, clock, io, hook, *stats);
    }

    static FiveTuple tuple(uint16_t port = 5000, bool v6 = false) {
        return v6 ? FiveTuple{A("[fd00::99]:5000").with_port(port), A("[fd00::1]:3478"), Transport::kUdp}
                  : FiveTuple{A("198.18.1.1:5000").with_port(port), A("198.18.0.1:3478"), Transport::kUdp};
    }

    Credentials creds(const FiveTuple& ft, const std::string& user = "alice") const {
        Credentials c;
        c.user = user;
        c.password = user + "-pw";
        c.realm = "example.org";
        c.nonce = shared->nonces->issue(ft.client.normalised().with_port(0), clock.unix_s(),
                                        Authenticator::kNonceFeatures);
        return c;
    }

    // Sends one datagram; returns the answer if there was exactly one.
    std::optional<Answer> exchange(const FiveTuple& ft, const std::vector<uint8_t>& req) {
        const size_t before = io.client.size();
        server->on_client_datagram(ft, req);
        if (io.client.size() != before + 1) {
            return std::nullopt;
        }
        return Answer(io.client.back().bytes);
    }

    Answer request(const FiveTuple& ft, stun::Method m, const Attrs& attrs, const std::string& user = "alice") {
        const auto c = creds(ft, user);
        auto a = exchange(ft, build(m, stun::Class::kRequest, attrs, &c));
        EXPECT_TRUE(a.has_value());
        return a ? *a : Answer({});
    }

    Answer allocate(const FiveTuple& ft, const Attrs& extra = {}, const std::string& user = "alice") {
        return request(ft, stun::Method::kAllocate, [&](stun::MessageBuilder& b) {
            b.add_requested_transport(stun::kProtoUdp);
            if (extra) {
                extra(b);
            }
        }, user);
    }

    Answer create_permission(const FiveTuple& ft, std::vector<Address> peers) {
        return request(ft, stun::Method::kCreatePermission, [&](stun::MessageBuilder& b) {
            for (const auto& p : peers) {
                b.add_xor_address(stun::attr::kXorPeerAddress, p);
            }
        });
    }

    Answer channel_bind(const FiveTuple& ft, uint16_t ch, const Address& peer) {
        return request(ft, stun::Method::kChannelBind, [&](stun::MessageBuilder& b) {
            b.add_channel_number(ch);
            b.add_xor_address(stun::attr::kXorPeerAddress, peer);
        });
    }

    // ChannelData of 4 bytes ("ping") on channel 0x4001 from the client of
    // `ft`, which must reach a peer.
    void ping(const FiveTuple& ft) {
        const size_t sends = io.peer_sends.size();
        server->on_client_datagram(ft, std::vector<uint8_t>{0x40, 0x01, 0x00, 0x04, 'p', 'i', 'n', 'g'});
        ASSERT_EQ(io.peer_sends.size(), sends + 1);
    }
    // An allocation for `ft` with channel 0x4001 bound to `peer`, which one
    // ping reached.
    void allocate_and_ping(const FiveTuple& ft, const Address& peer) {
        ASSERT_TRUE(allocate(ft).success());
        ASSERT_TRUE(channel_bind(ft, 0x4001, peer).success());
        ping(ft);
    }

    Answer refresh(const FiveTuple& ft, uint32_t lifetime) {
        return request(ft, stun::Method::kRefresh,
                       [&](stun::MessageBuilder& b) { b.add_u32(stun::attr::kLifetime, lifetime); });
    }

    // Moves time in 1 s steps so every timer runs at its due tick.
    void advance_s(uint64_t s) {
        for (uint64_t i = 0; i < s; ++i) {
            clock.advance_s(1);
            server->tick();
        }
    }

    // Delivers a peer datagram to the relayed socket of `ft`'s allocation.
    void from_peer(const FiveTuple& ft, const Address& peer, std::vector<uint8_t> data) {
        Allocation* a = server->allocations().find(ft);
        ASSERT_NE(a, nullptr);
        const auto* r = a->relay(peer.normalised().family);
        ASSERT_NE(r, nullptr);
        server->on_peer_datagram(r->id, peer, data);
    }

    ManualClock clock;
    FakeIo io;
    OffloadHook hook;
    std::unique_ptr<Stats> stats;
    std::unique_ptr<Shared> shared;
    std::unique_ptr<Server> server;
};

}  // namespace turn::cp::test
