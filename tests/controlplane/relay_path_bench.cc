// Google Benchmark of the socket-mode per-packet path through the protocol
// core (Server), with an I/O sink that discards: what one relayed datagram
// costs the control plane besides the recvmmsg/sendmmsg syscalls; plus the
// hot functions behind it: an authenticated request end to end (nonce check,
// MESSAGE-INTEGRITY verify, handler, signed response), the permission lookup
// and the timer wheel in steady state.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <random>

#include <spdlog/spdlog.h>

#include "core/auth.h"
#include "core/server.h"
#include "core/shared.h"
#include "core/state_snapshot.h"
#include "core/timer_wheel.h"
#include "io/state_store.h"
#include "stun_client.h"

namespace turn::cp {
namespace {

class NullIo final : public PacketIo {
public:
    void send_to_client(const FiveTuple&, std::span<const uint8_t> d, IpMarks = {}) override {
        bytes += d.size();
        if (capture) {
            last.assign(d.begin(), d.end());
        }
    }
    void send_to_peer(RelayId, const Address&, std::span<const uint8_t> d, bool = false, IpMarks = {}) override {
        bytes += d.size();
    }
    OpenResult open_relay(const Address&, bool, RelayId& out) override {
        out = next++;
        return OpenResult::kOk;
    }
    void close_relay(RelayId) override {}
    uint64_t bytes = 0;
    RelayId next = 0;
    bool capture = false;  // keep the last client datagram (checks before timing)
    std::vector<uint8_t> last;
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

// What a UDP datagram comes with from the socket layer (IP_RECVTTL): a
// known TTL, so the relayed datagram's is computed (RFC 8656 section 14).
constexpr IpMarks kUdpMarks{.tos = 0, .ttl = 64};

void BM_ChannelDataClientToPeer(benchmark::State& state) {
    Setup s(static_cast<size_t>(state.range(0)));
    const auto cd = channel_data(172);
    size_t i = 0;
    for (auto _ : state) {
        s.server->on_client_datagram(s.tuples[i], cd, kUdpMarks);
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
        s.server->on_peer_datagram(s.relays[i], s.peer, payload, kUdpMarks);
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
        s.server->on_peer_datagram(s.relays[0], other, payload, kUdpMarks);
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
        s.server->on_client_datagram(s.tuples[0], send, kUdpMarks);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SendIndication);

// Request handling with integrity check: an authenticated Refresh through
// Server::on_client_datagram — parse, nonce cookie check, MESSAGE-INTEGRITY
// (HMAC-SHA1 over the long-term key), the handler, and the 200 response with
// its own MESSAGE-INTEGRITY and FINGERPRINT. Eight requests with distinct
// transaction IDs rotate, so none is answered from the retransmission cache
// (it keeps the last four per 5-tuple).
void BM_RefreshRequest(benchmark::State& state) {
    Setup s(1);
    test::Credentials cr;
    cr.user = "u";
    cr.password = "p";
    cr.realm = "bench";
    cr.nonce = s.shared->nonces->issue(s.tuples[0].client.with_port(0), s.clock.unix_s(), Authenticator::kNonceFeatures);
    std::vector<std::vector<uint8_t>> reqs;
    for (int i = 0; i < 8; ++i) {
        reqs.push_back(test::build(stun::Method::kRefresh, stun::Class::kRequest,
                                   [](auto& b) { b.add_u32(stun::attr::kLifetime, 600); }, &cr));
    }
    s.io.capture = true;
    s.server->on_client_datagram(s.tuples[0], reqs[0]);
    test::Answer a(s.io.last);
    if (!a.success()) {
        state.SkipWithError("Refresh was not answered with success");
        return;
    }
    s.io.capture = false;
    size_t i = 1;
    for (auto _ : state) {
        s.server->on_client_datagram(s.tuples[0], reqs[i]);
        i = (i + 1) & 7;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_RefreshRequest);

// Permission lookup (every relayed datagram does one): Allocation::permitted
// for a peer IP among N permissions (keyed SipHash map).
void BM_PermissionLookup(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    Allocation a;
    std::vector<Address> peers;
    for (uint32_t i = 0; i < n; ++i) {
        const Address ip = Address::v4(0xC6130000u + i, 0);
        a.permissions[ip].expires_ms = 1'000'000;
        peers.push_back(ip.with_port(static_cast<uint16_t>(5000 + i % 1000)));
    }
    if (!a.permitted(peers.back(), 10) || a.permitted(Address::v4(0x08080808u, 1), 10)) {
        state.SkipWithError("permission fixture wrong");
        return;
    }
    std::mt19937 rng(1);
    std::shuffle(peers.begin(), peers.end(), rng);
    size_t i = 0;
    size_t hits = 0;
    for (auto _ : state) {
        hits += a.permitted(peers[i], 10) ? 1 : 0;
        i = i + 1 == peers.size() ? 0 : i + 1;
    }
    benchmark::DoNotOptimize(hits);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_PermissionLookup)->Arg(1)->Arg(10)->Arg(1000);

// The timer wheel in steady state: N timers pending, spread over 600 s (the
// lifetimes of allocations, permissions and channels); each iteration moves
// the clock on by 600 s / N, so on average one timer fires and re-arms itself
// 600 s later, as a refreshed allocation's timer does.
void BM_TimerWheelSteadyState(benchmark::State& state) {
    const auto n = static_cast<uint64_t>(state.range(0));
    constexpr uint64_t kSpanMs = 600'000;
    uint64_t now = 1'000'000;
    TimerWheel w(now);
    uint64_t fired = 0;
    std::function<void()> rearm;
    rearm = [&] {
        ++fired;
        w.schedule(now + kSpanMs, rearm);
    };
    for (uint64_t i = 0; i < n; ++i) {
        w.schedule(now + 1 + i * kSpanMs / n, rearm);
    }
    // Per iteration in microseconds, so large N still moves the clock.
    uint64_t now_us = now * 1000;
    const uint64_t step_us = kSpanMs * 1000 / n;
    for (auto _ : state) {
        now_us += step_us;
        now = now_us / 1000;
        w.advance(now);
    }
    if (w.size() != n) {
        state.SkipWithError("timers lost");
    }
    state.counters["fired_per_iter"] = static_cast<double>(fired) / static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<int64_t>(fired));
}
BENCHMARK(BM_TimerWheelSteadyState)->Arg(1000)->Arg(100000);

// Restarts ([state].dir), the two sides of a save. The event loop's side:
// 100 allocations refreshed since the last save are collected (O(changes),
// whatever the number of allocations) — BM_StateLoopSave/N, N allocations.
void BM_StateLoopSave(benchmark::State& state) {
    Setup s(static_cast<size_t>(state.range(0)));
    auto& m = s.server->allocations();
    m.track_changes(true);
    std::vector<SavedAllocation> changed;
    std::vector<uint64_t> removed;
    m.take_changes(changed, removed);
    std::vector<Allocation*> touched;
    for (size_t i = 0; i < 100; ++i) {
        touched.push_back(m.find(s.tuples[i * s.tuples.size() / 100]));
    }
    for (auto _ : state) {
        state.PauseTiming();
        for (Allocation* a : touched) {
            m.refresh(*a, 600'000);
        }
        changed.clear();
        state.ResumeTiming();
        m.take_changes(changed, removed);
        benchmark::DoNotOptimize(changed.data());
    }
    if (changed.size() != 100) {
        state.SkipWithError("expected 100 changed allocations");
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 100);
}
BENCHMARK(BM_StateLoopSave)->Arg(1000)->Arg(50000)->Unit(benchmark::kMicrosecond);

// The writer thread's side: encoding a loop's N allocations (one channel and
// its permission each) into its snapshot, O(N), off the event loop.
void BM_StateWriterEncode(benchmark::State& state) {
    Setup s(static_cast<size_t>(state.range(0)));
    LoopSnapshot snap;
    s.server->allocations().snapshot(snap.allocations);
    size_t bytes = 0;
    for (auto _ : state) {
        bytes = encode_snapshot(snap).size();
        benchmark::DoNotOptimize(bytes);
    }
    state.counters["bytes_per_allocation"] = static_cast<double>(bytes) / static_cast<double>(state.range(0));
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_StateWriterEncode)->Arg(1000)->Arg(50000)->Unit(benchmark::kMillisecond);

// The end journal (io/state_store.h EndJournal): an event loop's pass that
// ended N allocations appends their ids with one write(2), on the file
// system of /var/tmp (the state directory's, /var/lib, on most hosts). A
// save's roll closes the file; the next append creates another (every 1000
// passes here, untimed, so the file stays small).
void BM_StateEndJournalAppend(benchmark::State& state) {
    const std::string dir = "/var/tmp/turn-relay-journal-bench-" + std::to_string(::getpid());
    StateStore store(dir);
    if (auto err = store.prepare(); !err.empty()) {
        state.SkipWithError(err.c_str());
        return;
    }
    EndJournal journal(store, 0, 1);
    std::vector<uint64_t> ids(static_cast<size_t>(state.range(0)));
    uint64_t next = 1;
    uint64_t passes = 0;
    for (auto _ : state) {
        for (auto& id : ids) {
            id = next++;
        }
        journal.append(ids);
        if (++passes % 1000 == 0) {
            state.PauseTiming();
            const uint64_t done = journal.roll();
            ::unlink(store.journal_path(0, done).c_str());
            state.ResumeTiming();
        }
    }
    ::unlink(store.journal_path(0, journal.roll()).c_str());
    std::filesystem::remove_all(dir);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_StateEndJournalAppend)->Arg(1)->Arg(32);

}  // namespace
}  // namespace turn::cp

BENCHMARK_MAIN();
