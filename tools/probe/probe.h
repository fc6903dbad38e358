// turn-probe's checks, in the order a client uses a TURN server (RFC 8656):
// connect (TCP, TLS or DTLS), Binding, Allocate with the long-term credential
// challenge (RFC 8489 section 9.2), CreatePermission, Send indications and
// the Data indications that come back, ChannelBind, ChannelData both ways,
// and Refresh with lifetime 0. The peer is the probe itself: a UDP socket
// that echoes what the relay sends it, so the data checks measure the whole
// round trip client -> relay -> peer -> relay -> client.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/address.h"
#include "transport.h"

namespace turn::probe {

struct ProbeConfig {
    Kind kind = Kind::kUdp;
    Address server;
    TlsOptions tls;
    std::string user;
    std::string password;
    Family family = Family::kIPv4;  // of the relayed address (REQUESTED-ADDRESS-FAMILY)
    // Where the echo peer binds; port 0 = any. Unset: the address the probe
    // reaches the server from. The relay must be allowed to send to it.
    std::optional<Address> peer_bind;
    int count = 5;                  // messages per data check
    size_t size = 100;              // payload bytes
    int timeout_ms = 2000;          // per request, per echoed message
};

struct Step {
    std::string name;
    bool ok = false;
    double ms = 0;                   // the step's own time (median round trip for data checks)
    std::string detail;              // one line for a person
    std::vector<std::pair<std::string, std::string>> fields;  // for --json
};

// Runs every check that can run (a failed Allocate ends the run); `report`
// sees each step as it finishes.
std::vector<Step> run_probe(const ProbeConfig& cfg, const std::function<void(const Step&)>& report);

}  // namespace turn::probe
