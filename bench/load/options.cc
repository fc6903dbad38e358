#include "options.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>
#include <sstream>

namespace turn::load {

namespace {

// "HOST:PORT" / "[V6]:PORT"; HOST may be a name (resolved once, here).
bool resolve_server(const std::string& text, Address& out, std::string& err) {
    if (auto a = Address::parse(text); a && a->port != 0) {
        out = *a;
        return true;
    }
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
        err = "--server must be HOST:PORT (e.g. 127.0.0.1:3478), got '" + text + "'";
        return false;
    }
    std::string host = text.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(host.c_str(), text.substr(colon + 1).c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
        err = "--server: cannot resolve '" + text + "': " + gai_strerror(rc);
        return false;
    }
    auto a = Address::from_sockaddr(res->ai_addr);
    freeaddrinfo(res);
    if (!a || a->port == 0) {
        err = "--server: '" + text + "' has no usable address or port";
        return false;
    }
    out = *a;
    return true;
}

}  // namespace

bool parse_options(int argc, char** argv, Options& o, int& exit_code) {
    CLI::App app{"turn-load: load harness for any TURN server over UDP, TCP, TLS or DTLS (RFC 8656, RFC 7350). "
                 "It makes real "
                 "authenticated allocations toward UDP echo peers it runs itself, drives ChannelData or "
                 "Send-indication traffic, and reports delivered packets/s, loss and round-trip latency."};
    app.get_formatter()->column_width(34);
    app.set_version_flag("--version", "turn-load " TURN_RELAY_VERSION);
    app.add_option("--server", o.server_text, "TURN server HOST:PORT")->required();
    app.add_option("--transport", o.transport_text,
                   "client-to-server transport: udp, tcp, tls or dtls (RFC 8656 3.1, RFC 7350 DTLS 1.2+ over "
                   "UDP; tcp/tls/dtls: one connection per allocation; peers stay UDP)")
        ->capture_default_str()->check(CLI::IsMember({"udp", "tcp", "tls", "dtls"}));
    app.add_option("--tls-ca", o.tls_ca, "--transport tls or dtls: PEM file of the CA (or self-signed "
                   "certificate) to verify the server against (default: the system's CAs)");
    app.add_flag("--tls-no-verify", o.tls_no_verify, "--transport tls or dtls: accept any server certificate "
                 "(no verification at all: for test servers only)");
    app.add_option("--tls-name", o.tls_name, "--transport tls or dtls: name (or IP) for SNI and the certificate "
                   "check (default: --server's host)");
    app.add_option("--user", o.user, "long-term credential username");
    app.add_option("--password", o.password, "long-term credential password");
    app.add_option("--rest-secret", o.rest_secret, "TURN REST shared secret (instead of --user/--password)");
    app.add_option("--rest-name", o.rest_name, "name part of the REST username '<expiry>:<name>'")
        ->capture_default_str();
    app.add_option("--rest-ttl", o.rest_ttl_s, "REST credential lifetime, seconds")->capture_default_str()
        ->check(CLI::Range(uint64_t{1}, uint64_t{10} * 365 * 86400));
    app.add_option("--realm", o.realm, "realm (default: learned from the server's 401)");
    app.add_option("--allocations,-n", o.allocations, "number of allocations")->capture_default_str()
        ->check(CLI::Range(size_t{1}, size_t{65536}));
    app.add_option("--mode", o.mode_text,
                   "channel (ChannelData), send (Send/Data indications) or tcp-relay (RFC 6062 TCP allocations: "
                   "Connect + ConnectionBind to TCP echo peers, payloads through the data connections; needs "
                   "--transport tcp or tls)")
        ->capture_default_str()->check(CLI::IsMember({"channel", "send", "tcp-relay"}));
    app.add_option("--rate", o.rate, "total offered packets (tcp-relay: messages)/s; 0 = as fast as possible")->capture_default_str()
        ->check(CLI::Range(0.0, 1e8));
    app.add_option("--size", o.size, "application payload bytes per packet (>= 24)")->capture_default_str()
        ->check(CLI::Range(size_t{kPayloadHeader}, size_t{8000}));
    app.add_option("--duration", o.duration_s, "seconds of traffic per phase (setup-only: setup time bound)")
        ->capture_default_str()->check(CLI::Range(0.1, 3600.0));
    app.add_option("--threads,-t", o.threads, "client threads (each owns a share of the allocations)")
        ->capture_default_str()->check(CLI::Range(size_t{1}, size_t{64}));
    app.add_option("--peer-threads", o.peer_threads, "echo peer threads")->capture_default_str()
        ->check(CLI::Range(size_t{1}, size_t{64}));
    app.add_option("--peer-sockets", o.peer_sockets, "echo peer sockets (default min(allocations, 4))")
        ->check(CLI::Range(size_t{1}, size_t{1024}));
    app.add_option("--peer-addr", o.peer_text, "IP the echo peers bind to (must be reachable from the relay)")
        ->capture_default_str();
    app.add_option("--json", o.json_path, "write the results as JSON to FILE");
    app.add_option("--plot", o.plot_path, "draw a PNG with gnuplot (FILE.png; data in FILE.dat)");
    app.add_flag("--setup-only", o.setup_only, "only measure Allocate + CreatePermission(+ChannelBind) per second "
                 "(tcp-relay: connect + Allocate + Connect + data connection + ConnectionBind)");
    app.add_option("--churn", o.churn_rate, "create and delete allocations at RATE/s while traffic flows")
        ->check(CLI::Range(0.0, 100000.0));
    app.add_option("--churn-hold", o.churn_hold_s, "seconds each churned allocation lives")->capture_default_str()
        ->check(CLI::Range(0.0, 600.0));
    app.add_option("--sweep", o.sweep_text, "comma-separated offered rates; one phase of --duration each");
    app.add_option("--grace", o.grace_s, "seconds to wait for echoes after sending stops")->capture_default_str()
        ->check(CLI::Range(0.05, 30.0));
    app.add_option("--tos", o.tos,
                   "IPv4 TOS / IPv6 Traffic Class byte (DSCP << 2 | ECN) of every UDP datagram the clients and echo "
                   "peers send, 0-255 (e.g. 184: EF)")
        ->check(CLI::Range(0, 255))
        ->capture_default_str();
    app.add_option("--batch", o.batch, "packets per sendmmsg")->capture_default_str()
        ->check(CLI::Range(size_t{1}, size_t{64}));
    app.add_option("--refresh-interval", o.refresh_interval_s,
                   "seconds between Refresh/CreatePermission/ChannelBind cycles during traffic")
        ->capture_default_str()->check(CLI::Range(1.0, 290.0));
    app.add_option("--setup-timeout", o.setup_timeout_s, "bound on the allocation setup phase, seconds")
        ->capture_default_str()->check(CLI::Range(1.0, 600.0));
    app.add_flag("--quiet,-q", o.quiet, "no progress line");
    app.add_option("--server-pid", o.server_pids,
                   "PID (or TID) of a local server process: report its CPU time per relayed packet (from "
                   "/proc); repeat it for a server made of several processes (summed)")
        ->check(CLI::Range(1, 1 << 22));
    app.add_option("--watch-pid", o.watch_pids,
                   "PID or TID whose CPU time per phase is reported apart (not added to the server's); repeatable")
        ->check(CLI::Range(1, 1 << 22));
    app.add_option("--peer-netns", o.peer_netns,
                   "create the echo peer sockets in this network namespace: a name under /var/run/netns "
                   "(ip netns) or a path to a namespace file; needs CAP_SYS_ADMIN");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        exit_code = app.exit(e);
        return false;
    }
    auto fail = [&](const std::string& msg) {
        std::cerr << "turn-load: " << msg << "\n";
        exit_code = 2;
        return false;
    };
    std::string err;
    if (!resolve_server(o.server_text, o.server, err)) {
        return fail(err);
    }
    o.transport = o.transport_text == "tcp"    ? Transport::kTcp
                  : o.transport_text == "tls"  ? Transport::kTls
                  : o.transport_text == "dtls" ? Transport::kDtls
                                               : Transport::kUdp;
    const bool secure = o.transport == Transport::kTls || o.transport == Transport::kDtls;
    if (!secure && (!o.tls_ca.empty() || o.tls_no_verify || !o.tls_name.empty())) {
        return fail("--tls-ca, --tls-no-verify and --tls-name need --transport tls or dtls");
    }
    if (!o.tls_ca.empty() && o.tls_no_verify) {
        return fail("--tls-ca and --tls-no-verify exclude each other");
    }
    if (!o.tls_ca.empty() && access(o.tls_ca.c_str(), R_OK) != 0) {
        return fail("--tls-ca " + o.tls_ca + ": cannot read the file");
    }
    if (secure && o.tls_name.empty()) {
        std::string host = o.server_text.substr(0, o.server_text.rfind(':'));
        if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
            host = host.substr(1, host.size() - 2);
        }
        o.tls_name = host;
    }
    const bool long_term = !o.user.empty() || !o.password.empty();
    if (long_term == !o.rest_secret.empty()) {
        return fail("give either --user and --password, or --rest-secret");
    }
    if (long_term && (o.user.empty() || o.password.empty())) {
        return fail("--user and --password go together");
    }
    auto peer = Address::parse(o.peer_text);
    if (!peer || peer->port != 0) {
        return fail("--peer-addr must be an IP address without port, got '" + o.peer_text + "'");
    }
    o.peer = *peer;
    o.mode = o.mode_text == "send"        ? Mode::kSend
             : o.mode_text == "tcp-relay" ? Mode::kTcpRelay
                                          : Mode::kChannel;
    if (o.mode == Mode::kTcpRelay) {
        if (o.transport != Transport::kTcp && o.transport != Transport::kTls) {
            // RFC 6062 section 4.1: TCP allocations are made over a TCP or TLS control connection.
            return fail("--mode tcp-relay needs --transport tcp or tls");
        }
        if (o.tos != 0) {
            return fail("--tos marks UDP datagrams; --mode tcp-relay sends none");
        }
        if (!o.peer_netns.empty()) {
            return fail("--peer-netns is not supported with --mode tcp-relay (its TCP echo peers listen here)");
        }
    }
    if (o.mode == Mode::kChannel && o.allocations > 0x1000) {
        // Each allocation gets its own channel number from 0x4000..0x4FFF.
        return fail("--mode channel supports at most 4096 allocations");
    }
    if (o.peer_sockets == 0) {
        o.peer_sockets = std::min<size_t>(o.allocations, 4);
    }
    if (o.threads > o.allocations) {
        return fail("--threads (" + std::to_string(o.threads) + ") exceeds --allocations (" +
                    std::to_string(o.allocations) + "): each thread needs an allocation");
    }
    if (!o.sweep_text.empty()) {
        std::stringstream ss(o.sweep_text);
        std::string item;
        while (std::getline(ss, item, ',')) {
            try {
                size_t used = 0;
                const double r = std::stod(item, &used);
                if (used != item.size() || !(r > 0) || r > 1e8 || std::isnan(r)) {
                    throw std::invalid_argument(item);
                }
                o.sweep.push_back(r);
            } catch (const std::exception&) {
                return fail("--sweep: '" + item + "' is not a positive rate");
            }
        }
        if (o.sweep.empty() || o.sweep.size() > 64) {
            return fail("--sweep needs 1 to 64 rates");
        }
        if (o.setup_only) {
            return fail("--sweep and --setup-only exclude each other");
        }
    }
    if (o.setup_only && o.churn_rate > 0) {
        return fail("--churn needs traffic; it cannot be combined with --setup-only");
    }
    for (const auto* pids : {&o.server_pids, &o.watch_pids}) {
        for (const int pid : *pids) {
            if (access(("/proc/" + std::to_string(pid) + "/stat").c_str(), R_OK) != 0) {
                return fail("--server-pid/--watch-pid " + std::to_string(pid) + ": no such process");
            }
        }
    }
    if (!o.plot_path.empty() && (o.plot_path.size() < 5 || o.plot_path.substr(o.plot_path.size() - 4) != ".png")) {
        return fail("--plot must name a .png file");
    }
    return true;
}

}  // namespace turn::load
