// Google Benchmark of the socket-mode per-packet path through the protocol
// core (Server), with an I/O sink that discards: what one relayed datagram
// costs the control plane besides the recvmmsg/sendmmsg syscalls.
#include <benchmark/benchmark.h>

#include <memory>

#include <spdlog/spdlog.h>

#include "core/auth.h"
#include "core/server.h"
#include "core/shared.h"
#include "stun_client.h"

namespace turn::cp {
namespace {

class NullIo final : public PacketIo {
public:
    void send_to_client(const FiveTuple&, std::span<const uint8_t> d) override { bytes += d.size(); }
    void send_to_peer(RelayId, const Address&, std::span<const uint8_t> d) override { bytes += d.size(); }
    OpenResult open_relay(const Address&, bool, RelayId& out) override {
        out = next++;
        return OpenResult::kOk;
    }
    void close_relay(RelayId) override {}
    uint64_t bytes = 0;
    RelayId next = 0;
};

struct Setup {
    ManualClock clock;
    NullIo io;
    OffloadHook hook;
    Stats stats;
    std::unique_ptr<Shared> shared;
    std::unique_ptr<Server> server;
    std::vector<FiveTuple> tuples;
    std::vector<RelayId> relays;
    Address peer = *Address::parse("198.18.9.9:7000");

    explicit Setup(size_t allocations) {
        spdlog::set_level(spdlog::level::off);
        Config c;
        c.listen = {*Address::parse("198.18.0.1:3478")};
        c.relay_ips = {*Address::parse("198.18.0.1")};
        c.relay_port_min = 1024;
        c.relay_port_max = 65535;
        c.realm = "bench";
        c.users = {{"u", "p"}};
        c.max_per_user = 0;
        c.max_total = 0;
        std::string err;
        shared = Shared::create(c, err);
        server = std::make_unique<Server>(*shared, clock, io, hook, stats);
        for (size_t i = 0; i < allocations; ++i) {
            FiveTuple ft{Address::v4(0xC6120000u + static_cast<uint32_t>(i / 60000), static_cast<uint16_t>(1024 + i % 60000)),
                         c.listen[0], Transport::kUdp};
            test::Credentials cr;
            cr.user = "u";
            cr.password = "p";
            cr.realm = "bench";
            cr.nonce = shared->nonces->issue(ft.client.with_port(0), clock.unix_s(), Authenticator::kNonceFeatures);
            server->on_client_datagram(ft, test::build(stun::Method::kAllocate, stun::Class::kRequest,
                                                       [](auto& b) { b.add_requested_transport(17); }, &cr));
            server->on_client_datagram(ft, test::build(stun::Method::kChannelBind, stun::Class::kRequest, [&](auto& b) {
                b.add_channel_number(0x4000);
                b.add_xor_address(stun::attr::kXorPeerAddress, peer);
            }, &cr));
            Family f;
            (void)f;
            tuples.push_back(ft);
            relays.push_back(server->allocations().find(ft)->relay(Family::kIPv4)->id);
        }
    }
};

std::vector<uint8_t> channel_data(size_t payload) {
    std::vector<uint8_t> v(4 + payload, 0xAB);
    v[0] = 0x40;
    v[1] = 0x00;
    v[2] = static_cast<uint8_t>(payload >> 8);
    v[3] = static_cast<uint8_t>(payload);
    return v;
}

void BM_ChannelDataClientToPeer(benchmark::State& state) {
    Setup s(static_cast<size_t>(state.range(0)));
    const auto cd = channel_data(172);
    size_t i = 0;
    for (auto _ : state) {
        s.server->on_client_datagram(s.tuples[i], cd);
        i = i + 1 == s.tuples.size() ? 0 : i + 1;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_ChannelDataClientToPeer)->Arg(1)->Arg(1000)->Arg(50000);

void BM_PeerToClientChannelData(benchmark::State& state) {
    Setup s(static_cast<size_t>(state.range(0)));
    const std::vector<uint8_t> payload(172, 0xCD);
    size_t i = 0;
    for (auto _ : state) {
        s.server->on_peer_datagram(s.relays[i], s.peer, payload);
        i = i + 1 == s.relays.size() ? 0 : i + 1;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_PeerToClientChannelData)->Arg(1)->Arg(1000)->Arg(50000);

void BM_PeerToClientDataIndication(benchmark::State& state) {
    Setup s(1);
    const std::vector<uint8_t> payload(172, 0xCD);
    const Address other = *Address::parse("198.18.9.9:7001");  // permitted IP, no channel
    for (auto _ : state) {
        s.server->on_peer_datagram(s.relays[0], other, payload);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_PeerToClientDataIndication);

void BM_SendIndication(benchmark::State& state) {
    Setup s(1);
    const auto send = test::build(stun::Method::kSend, stun::Class::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, s.peer);
        const std::vector<uint8_t> d(172, 0xEE);
        b.add(stun::attr::kData, d);
    }, nullptr);
    for (auto _ : state) {
        s.server->on_client_datagram(s.tuples[0], send);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SendIndication);

}  // namespace
}  // namespace turn::cp

BENCHMARK_MAIN();
