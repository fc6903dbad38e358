// The control plane's core as the fuzz targets run it (server_fuzz.cc,
// snapshot_fuzz.cc): a fresh Server on a recording PacketIo and a clock moved
// by hand, for the relay of server_net.h (listening on 198.18.0.1:3478 and
// [fd00::1]:3478 over UDP and TCP, relayed addresses on those IPs, ports
// 50000-50099, users alice and bob) with Config::seed fixed so that relayed
// ports, tokens and transaction IDs replay.
#pragma once

#include <array>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/offload.h"
#include "core/server.h"
#include "core/shared.h"
#include "core/stats.h"
#include "fake_io.h"
#include "server_net.h"

namespace fuzzcore {

struct CoreWorld {
    turn::cp::ManualClock clock;  // 1'000'000 ms, Unix 1'700'000'000 s
    turn::cp::test::FakeIo io;
    turn::cp::OffloadHook hook;
    turn::cp::Stats stats;
    std::unique_ptr<turn::cp::Shared> shared;
    std::unique_ptr<turn::cp::Server> server;
};

// Starts w's core; "" or why the configuration was refused.
inline std::string start_core(CoreWorld& w) {
    using turn::Address;
    auto A = [](const char* s) { return *Address::parse(s); };
    turn::cp::Config c;
    c.listen = {A(servernet::kListen4), A(servernet::kListen6)};
    c.listen_tcp = c.listen;
    c.relay_ips = {A("198.18.0.1"), A("fd00::1")};
    // The world's IPv6 peers are unique local addresses (fd00::/8), which
    // the default policy denies: permitted, so that inputs reach IPv6
    // permissions, channels and relaying (the private rule has unit tests).
    c.allow_private_peers = true;
    c.relay_port_min = 50000;
    c.relay_port_max = 50099;
    c.realm = servernet::kRealm;
    c.users = {{"alice", "alice-pw"}, {"bob", "bob-pw"}};
    c.metrics_listen = "";
    c.seed = 0x5eed;  // relayed ports, reservation tokens, txids and CONNECTION-IDs replayable
    std::string err;
    const std::array<uint8_t, 32> secret{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    w.shared = turn::cp::Shared::create(c, secret, err);
    if (!w.shared) {
        return err;
    }
    w.server = std::make_unique<turn::cp::Server>(*w.shared, w.clock, w.io, w.hook, w.stats);
    return {};
}

}  // namespace fuzzcore
