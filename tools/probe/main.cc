// turn-probe: checks a TURN server the way a client uses it and says which
// step fails (tools/README.md). Exit 0 when every step passed, 1 when one
// failed, 2 on a usage error.
//
//   turn-probe [--transport udp|tcp|tls|dtls] (--user U --password P | --rest-secret S)
//              [--count N] [--size B] [--timeout-ms T] [--family 4|6]
//              [--peer-bind IP[:PORT]] [--ca FILE | --insecure] [--server-name NAME]
//              [--json] HOST[:PORT]
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "auth/credential_store.h"
#include "probe.h"

using namespace turn;
using namespace turn::probe;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int usage(const std::string& msg) {
    std::fprintf(stderr, "turn-probe: %s\n", msg.c_str());
    return kExitUsage;
}

// "host", "host:port", "1.2.3.4:5", "[::1]:5", "::1" -> host and port.
bool split_host_port(const std::string& s, uint16_t default_port, std::string& host, uint16_t& port) {
    port = default_port;
    std::string p;
    if (!s.empty() && s[0] == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos) {
            return false;
        }
        host = s.substr(1, close - 1);
        if (close + 1 < s.size()) {
            if (s[close + 1] != ':') {
                return false;
            }
            p = s.substr(close + 2);
        }
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
        host = s.substr(0, s.find(':'));
        p = s.substr(s.find(':') + 1);
    } else {
        host = s;  // a name, an IPv4 address, or a bare IPv6 address
    }
    if (!p.empty()) {
        try {
            const unsigned long v = std::stoul(p);
            if (v == 0 || v > 65535) {
                return false;
            }
            port = static_cast<uint16_t>(v);
        } catch (...) {
            return false;
        }
    }
    return !host.empty();
}

// The server's address: an IP literal, or the first address DNS gives.
std::optional<Address> resolve(const std::string& host, uint16_t port, std::string& err) {
    if (auto a = Address::parse(host)) {
        return a->with_port(port);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || res == nullptr) {
        err = "cannot resolve \"" + host + "\": " + gai_strerror(rc);
        return std::nullopt;
    }
    auto a = Address::from_sockaddr(res->ai_addr);
    ::freeaddrinfo(res);
    if (!a) {
        err = "\"" + host + "\" resolved to an address of an unknown family";
        return std::nullopt;
    }
    return a->with_port(port);
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);  // a reset connection is a FAIL line, not a killed probe
    CLI::App app{"turn-probe: checks a TURN server (RFC 8656) the way a client uses it"};
    app.set_version_flag("--version", "turn-probe " TURN_RELAY_VERSION);
    std::string server;
    std::string transport = "udp";
    std::string user;
    std::string password;
    std::string rest_secret;
    std::string rest_name = "turn-probe";
    unsigned rest_ttl = 3600;
    ProbeConfig cfg;
    int family = 4;
    std::string peer_bind;
    std::string ca;
    bool insecure = false;
    bool json = false;
    app.add_option("server", server, "TURN server HOST[:PORT] (port 3478, or 5349 with --transport tls or dtls)")
        ->required();
    app.add_option("--transport,-t", transport, "udp, tcp, tls (over TCP) or dtls (over UDP)")
        ->check(CLI::IsMember({"udp", "tcp", "tls", "dtls"}));
    app.add_option("--user,-u", user, "long-term credential username");
    app.add_option("--password,-w", password, "long-term credential password");
    app.add_option("--rest-secret", rest_secret, "TURN REST API shared secret (makes time-limited credentials)");
    app.add_option("--rest-name", rest_name, "the name part of the REST username (\"<expiry>:<name>\")");
    app.add_option("--rest-ttl", rest_ttl, "REST credentials' lifetime in seconds")->check(CLI::Range(1u, 86400u * 365));
    app.add_option("--count,-n", cfg.count, "messages per data check")->check(CLI::Range(1, 10000));
    app.add_option("--size,-l", cfg.size, "payload bytes per message")->check(CLI::Range(1, 60000));
    app.add_option("--timeout-ms", cfg.timeout_ms, "per request and per echoed message")->check(CLI::Range(10, 600000));
    app.add_option("--family", family, "relayed address family: 4 or 6")->check(CLI::IsMember({4, 6}));
    app.add_option("--peer-bind", peer_bind,
                   "where the probe's echo peer binds (IP or IP:PORT); default: the address it reaches the server from");
    app.add_option("--ca", ca, "TLS and DTLS: trust this PEM certificate (or bundle) instead of the system's CAs");
    app.add_option("--server-name", cfg.tls.server_name, "TLS and DTLS: the name to send (SNI) and verify; default: HOST");
    app.add_flag("--insecure", insecure, "TLS and DTLS: accept any certificate (test servers only)");
    app.add_flag("--json", json, "one JSON object on stdout instead of lines");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : kExitUsage;
    }

    cfg.kind = transport == "udp"   ? Kind::kUdp
               : transport == "tcp" ? Kind::kTcp
               : transport == "tls" ? Kind::kTls
                                    : Kind::kDtls;
    // One message is one DTLS record (at most 2^14 bytes): the payload and
    // the attributes around it (a Send indication to an IPv6 peer: 59 bytes).
    constexpr size_t kMaxDtlsPayload = kMaxDtlsMessage - 128;
    if (cfg.kind == Kind::kDtls && cfg.size > kMaxDtlsPayload) {
        return usage("--size " + std::to_string(cfg.size) + " does not fit in one DTLS record with its STUN attributes; " +
                     "give at most " + std::to_string(kMaxDtlsPayload) + " with --transport dtls");
    }
    std::string host;
    uint16_t port = 0;
    // RFC 8656 section 3.1: "turns:" uses 5349 for TLS and DTLS alike.
    if (!split_host_port(server, is_secure(cfg.kind) ? 5349 : 3478, host, port)) {
        return usage("\"" + server + "\" is not HOST, HOST:PORT or [IPv6]:PORT");
    }
    std::string err;
    auto addr = resolve(host, port, err);
    if (!addr) {
        return usage(err);
    }
    cfg.server = *addr;
    if (!Address::parse(host) && cfg.tls.server_name.empty()) {
        cfg.tls.server_name = host;
    }
    cfg.tls.ca_file = ca;
    cfg.tls.verify = !insecure;
    if (insecure && !ca.empty()) {
        return usage("--ca and --insecure contradict each other; give one");
    }
    if (!rest_secret.empty()) {
        if (!user.empty() || !password.empty()) {
            return usage("give either --rest-secret or --user/--password, not both");
        }
        const uint64_t now = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        cfg.user = std::to_string(now + rest_ttl) + (rest_name.empty() ? "" : ":" + rest_name);
        cfg.password = auth::rest_password(rest_secret, cfg.user);
    } else {
        if (user.empty() || password.empty()) {
            return usage("credentials needed: --user and --password, or --rest-secret");
        }
        cfg.user = user;
        cfg.password = password;
    }
    cfg.family = family == 6 ? Family::kIPv6 : Family::kIPv4;
    if (!peer_bind.empty()) {
        auto pb = Address::parse(peer_bind);
        if (!pb) {
            return usage("--peer-bind \"" + peer_bind + "\" is not an IP or IP:PORT");
        }
        cfg.peer_bind = *pb;
    }

    const auto steps = run_probe(cfg, [&](const Step& s) {
        if (!json) {
            std::printf("%-13s %-4s %8.2f ms  %s\n", s.name.c_str(), s.ok ? "ok" : "FAIL", s.ms, s.detail.c_str());
            std::fflush(stdout);
        }
    });
    bool ok = !steps.empty();
    for (const auto& s : steps) {
        ok = ok && s.ok;
    }
    if (json) {
        nlohmann::json out;
        out["ok"] = ok;
        out["server"] = cfg.server.to_string();
        out["transport"] = transport;
        for (const auto& s : steps) {
            nlohmann::json j;
            j["ok"] = s.ok;
            j["ms"] = s.ms;
            j["detail"] = s.detail;
            for (const auto& [k, v] : s.fields) {
                j[k] = v;
            }
            out["steps"][s.name] = j;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::printf("%s\n", ok ? "all checks passed" : "FAILED");
    }
    return ok ? 0 : kExitFailed;
}
