// turn-ctl: inspect and steer a running turn-relay through its admin socket
// ([admin].socket, controlplane/io/admin_server.h; tools/README.md).
//
//   turn-ctl [--socket PATH] [--json] status
//   turn-ctl [--socket PATH] [--json] allocations [--user U]
//   turn-ctl [--socket PATH] [--json] close ID
//   turn-ctl [--socket PATH] [--json] drain [--deadline S]
//   turn-ctl [--socket PATH] [--json] reload
//
// --socket and --json may also follow the subcommand (`turn-ctl status --json`).
// Exit 0 when the relay did what was asked, 1 when it answered with an error,
// 2 on a usage error, 3 when the relay cannot be reached.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr int kTimeoutMs = 5000;

// One request, one answer line; nullopt with `err` set if the relay cannot be reached.
std::optional<nlohmann::json> ask(const std::string& path, const nlohmann::json& req, std::string& err) {
    sockaddr_un sa{};
    if (path.size() >= sizeof sa.sun_path) {
        err = "socket path too long: " + path;
        return std::nullopt;
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.data(), path.size());
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        err = "cannot connect to " + path + ": " + std::strerror(errno) +
              (errno == ENOENT ? " (is turn-relay running with [admin].socket set to this path?)"
               : errno == EACCES ? " (the socket is its owner's only: run as that user or root)"
                                 : "");
        if (fd >= 0) {
            ::close(fd);
        }
        return std::nullopt;
    }
    const std::string line = req.dump() + "\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
        err = std::string("cannot send the request: ") + std::strerror(errno);
        ::close(fd);
        return std::nullopt;
    }
    std::string in;
    char buf[65536];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, kTimeoutMs) <= 0) {
            err = "no answer within 5 s";
            break;
        }
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            break;
        }
        in.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        if (err.empty()) {
            err = "the answer is not JSON: " + in.substr(0, 200);
        }
        return std::nullopt;
    }
    return j;
}

std::string list(const nlohmann::json& a) {
    std::string s;
    if (!a.is_array()) {
        return "-";
    }
    for (const auto& x : a) {
        s += (s.empty() ? "" : " ") + (x.is_string() ? x.get<std::string>() : x.dump());
    }
    return s.empty() ? "-" : s;
}

// A field of an answer as text, "?" if a relay of another version left it out.
std::string field(const nlohmann::json& j, const char* key) {
    if (!j.is_object() || !j.contains(key)) {
        return "?";
    }
    const auto& v = j.at(key);
    return v.is_string() ? v.get<std::string>() : v.dump();
}

const nlohmann::json& member(const nlohmann::json& j, const char* key) {
    static const nlohmann::json empty = nlohmann::json::object();
    return j.is_object() && j.contains(key) ? j.at(key) : empty;
}

void print_status(const nlohmann::json& j) {
    const auto& al = member(j, "allocations");
    std::printf("pid            %s\n", field(j, "pid").c_str());
    std::printf("uptime         %s s\n", field(j, "uptime_s").c_str());
    std::printf("realm          %s\n", field(j, "realm").c_str());
    std::printf("listen udp     %s\n", list(member(j, "listen")).c_str());
    std::printf("listen tcp     %s\n", list(member(j, "listen_tcp")).c_str());
    std::printf("listen tls     %s\n", list(member(j, "listen_tls")).c_str());
    std::printf("listen dtls    %s\n", list(member(j, "listen_dtls")).c_str());
    std::printf("relay ips      %s\n", list(member(j, "relay_ips")).c_str());
    if (const auto& ext = member(j, "external_ips"); ext.is_array() && !ext.empty()) {
        std::printf("external ips   %s\n", list(ext).c_str());
    }
    if (const auto& px = member(j, "proxy_protocol"); px.is_array() && !px.empty()) {
        std::printf("behind proxy   %s (from %s)\n", list(px).c_str(), list(member(j, "proxy_protocol_from")).c_str());
    }
    std::printf("loops          %s (busy %s)\n", field(j, "loops").c_str(), list(member(j, "loop_busy")).c_str());
    std::printf("allocations    %s (ipv4 %s, ipv6 %s)\n", field(al, "total").c_str(), field(al, "ipv4").c_str(),
                field(al, "ipv6").c_str());
    std::printf("connections    %s (TCP/TLS), %s DTLS sessions\n", field(j, "connections").c_str(),
                field(j, "dtls_sessions").c_str());
    std::printf("draining       %s\n", j.value("draining", false) ? "yes" : "no");
}

void print_allocations(const nlohmann::json& j) {
    std::printf("%-18s %-4s %-5s %-42s %-16s %-42s %7s %7s %5s %5s %10s %10s %12s %12s\n", "ID", "LOOP", "PROTO", "CLIENT",
                "USER", "RELAYED", "AGE_S", "LEFT_S", "PERMS", "CHANS", "PKTS_UP", "PKTS_DOWN", "BYTES_UP", "BYTES_DOWN");
    const auto& all = member(j, "allocations");
    size_t n = 0;
    for (const auto& a : all.is_array() ? all : nlohmann::json::array()) {
        ++n;
        const std::string proto = field(a, "transport") + (a.value("tcp_allocation", false) ? "/T" : "");
        std::printf("%-18s %-4s %-5s %-42s %-16s %-42s %7s %7s %5s %5s %10s %10s %12s %12s\n", field(a, "id").c_str(),
                    field(a, "loop").c_str(), proto.c_str(), field(a, "client").c_str(), field(a, "user").c_str(),
                    list(member(a, "relayed")).c_str(), field(a, "age_s").c_str(), field(a, "expires_in_s").c_str(),
                    field(a, "permission_count").c_str(), field(a, "channel_count").c_str(),
                    field(a, "packets_client_to_peer").c_str(), field(a, "packets_peer_to_client").c_str(),
                    field(a, "bytes_client_to_peer").c_str(), field(a, "bytes_peer_to_client").c_str());
    }
    std::printf("%zu allocation(s)%s\n", n,
                j.value("complete", true) ? "" : " (some event loop did not answer in time: the list may be short)");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"turn-ctl: inspect and steer a running turn-relay (its [admin].socket)"};
    app.set_version_flag("--version", "turn-ctl " TURN_RELAY_VERSION);
    std::string socket_path = "/run/turnrelay/admin.sock";
    bool json = false;
    app.add_option("--socket,-s", socket_path, "the relay's admin socket ([admin].socket)")->capture_default_str();
    app.add_flag("--json", json, "print the relay's JSON answer as it is");
    app.footer("--socket and --json go before or after the subcommand: turn-ctl status --json");
    app.require_subcommand(1);
    // Options a subcommand does not know go on to the main command, so the
    // global ones are accepted after the subcommand too (set before the
    // subcommands are added: they inherit it).
    app.fallthrough();
    auto* status = app.add_subcommand("status", "process, loops, allocations, connections, draining");
    auto* allocs = app.add_subcommand("allocations", "every allocation: 5-tuple, user, relayed addresses, lifetimes");
    std::string user;
    allocs->add_option("--user,-u", user, "only this user's");
    auto* close = app.add_subcommand("close", "end one allocation now, or every allocation of a user (its clients may "
                                              "allocate again while their credentials are good)");
    uint64_t id = 0;
    std::string close_user;
    auto* id_opt = close->add_option("id", id, "allocation id (from `allocations`)");
    auto* user_opt = close->add_option("--user,-u", close_user, "every allocation of this user instead");
    id_opt->excludes(user_opt);
    close->require_option(1);
    auto* drain = app.add_subcommand("drain", "what SIGTERM does: redirect/refuse new allocations, exit when the rest end");
    unsigned deadline = 0;
    auto* deadline_opt = drain->add_option("--deadline", deadline, "seconds to wait for allocations to end ([drain].deadline_s)");
    auto* reload = app.add_subcommand("reload",
                                      "what SIGHUP does: applies [auth] users, rest_secrets and [policy] allow_peers, "
                                      "deny_peers, allow_private_peers, re-reads the [tls] files; other keys need a restart");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : kExitUsage;
    }
    nlohmann::json req;
    if (status->parsed()) {
        req = {{"command", "status"}};
    } else if (allocs->parsed()) {
        req = {{"command", "allocations"}};
        if (!user.empty()) {
            req["user"] = user;
        }
    } else if (close->parsed()) {
        req = user_opt->count() > 0 ? nlohmann::json{{"command", "close"}, {"user", close_user}}
                                    : nlohmann::json{{"command", "close"}, {"id", id}};
    } else if (drain->parsed()) {
        req = {{"command", "drain"}};
        if (deadline_opt->count() > 0) {
            req["deadline_s"] = deadline;
        }
    } else if (reload->parsed()) {
        req = {{"command", "reload"}};
    }
    std::string err;
    const auto answer = ask(socket_path, req, err);
    if (!answer) {
        std::fprintf(stderr, "turn-ctl: %s\n", err.c_str());
        return kExitUnreachable;
    }
    const nlohmann::json& j = *answer;
    const bool ok = j.value("ok", false);
    if (json) {
        std::cout << j.dump() << std::endl;
    } else if (!ok) {
        std::fprintf(stderr, "turn-ctl: %s\n", j.value("error", std::string("failed")).c_str());
    } else if (status->parsed()) {
        print_status(j);
    } else if (allocs->parsed()) {
        print_allocations(j);
    } else if (close->parsed() && user_opt->count() > 0) {
        const auto& ids = member(j, "closed");
        std::printf("closed %zu allocation(s) of %s%s%s%s\n", ids.is_array() ? ids.size() : 0, field(j, "user").c_str(),
                    ids.is_array() && !ids.empty() ? ": " : "", ids.is_array() && !ids.empty() ? list(ids).c_str() : "",
                    j.value("complete", true) ? "" : " (some event loop did not answer in time: run it again)");
    } else if (close->parsed()) {
        std::printf("closed allocation %s of %s\n", field(j, "closed").c_str(), field(j, "client").c_str());
    } else if (drain->parsed()) {
        std::printf("draining; %s allocation(s) left\n", field(j, "allocations").c_str());
    }
    if (reload->parsed() && !json) {
        // Also after a failure: what was applied, and the TLS outcome.
        std::printf("applied: %s\n", list(member(j, "applied")).c_str());
        if (!list(member(j, "need_restart")).empty() && list(member(j, "need_restart")) != "-") {
            std::printf("need a restart (not applied): %s\n", list(member(j, "need_restart")).c_str());
        }
        if (j.contains("tls_certificate")) {
            std::printf("TLS certificate: %s (%s)\n", field(j, "tls_certificate").c_str(),
                        j.value("tls_changed", false) ? "reloaded" : "unchanged");
        }
    }
    return ok ? 0 : kExitFailed;
}
