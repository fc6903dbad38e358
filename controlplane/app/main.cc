// turn-relay: the control plane run alone in socket mode.
//   parse CLI -> load + validate config (exit 2 on a bad value) -> logging ->
//   shared state -> one event loop per core (SO_REUSEPORT listeners) ->
//   metrics endpoint -> wait for SIGTERM/SIGINT (SIGHUP: reload the TLS
//   certificate) -> drain -> exit 0.
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <memory>
#include <mutex>
#include <algorithm>
#include <optional>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "app/metrics.h"
#include "core/config.h"
#include "core/config_reload.h"
#include "core/event_log.h"
#include "core/offload.h"
#include "core/shared.h"
#include "io/admin_server.h"
#include "io/event_loop.h"
#include "io/files.h"
#include "io/state_store.h"
#include "io/tls.h"
#include "offload/ipc_server.h"

using namespace turn;
using namespace turn::cp;

namespace {

constexpr int kExitConfig = 2;
constexpr int kExitRuntime = 1;

int fatal_config(const std::string& msg) {
    std::fprintf(stderr, "turn-relay: configuration error: %s\n", msg.c_str());
    return kExitConfig;
}

void setup_logging(const Config& c) {
    auto logger = spdlog::stderr_logger_mt("turn-relay");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(c.log_level));
    if (c.log_format == "json") {
        set_log_json(true);
        spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l",%v})");
    } else {
        spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
    }
    spdlog::flush_on(spdlog::level::info);
}

// Listening ports inside the relayed port range on a relay IP: harmless (the
// allocator skips a port it cannot bind) but a planning mistake that shrinks
// the range, so said once at start-up.
void warn_listeners_in_relay_range(const Config& c) {
    for (const Address& l : Shared::own_listeners(c)) {
        const auto relay = c.relay_ip(l.family);
        if (l.port >= c.relay_port_min && l.port <= c.relay_port_max && relay &&
            (l.is_unspecified() || l.same_ip(*relay))) {
            log_event(LogLevel::kWarn, "listener_in_relay_range",
                      {{"listener", l.to_string()},
                       {"range", std::to_string(c.relay_port_min) + "-" + std::to_string(c.relay_port_max)},
                       {"fix", "move the listener or [server].relay_port_min/relay_port_max apart; that port is "
                               "never relayed"}});
        }
    }
}

// Credentials on the command line: any local user reads them (ps,
// /proc/PID/cmdline). Said once at start-up, naming the options, never a value.
void warn_secrets_on_command_line(const CliOverrides& cli) {
    std::string options;
    if (!cli.users.empty()) {
        options = "--user";
    }
    if (!cli.rest_secrets.empty()) {
        options += std::string(options.empty() ? "" : ",") + "--rest-secret";
    }
    if (!options.empty()) {
        log_event(LogLevel::kWarn, "secrets_on_command_line",
                  {{"options", options},
                   {"risk", "other local users can read the command line (ps, /proc/PID/cmdline)"},
                   {"fix", "put them in a file only turn-relay can read: --users-file / --rest-secret-file "
                           "([auth].users_file / rest_secrets_file)"}});
    }
}

// Files holding credentials that group or others may access: at start-up and
// on each reload (a rewritten file may come with the wrong mode). A warning,
// not an error: a group of its own may be on purpose.
void warn_open_secret_files(const Config& c) {
    for (const auto& f : secret_files_open_to_others(c)) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(f.mode));
        log_event(LogLevel::kWarn, "secrets_file_readable",
                  {{"path", f.path},
                   {"mode", mode},
                   {"fix", "chmod 0600 it, owned by the user turn-relay runs as, unless its group is meant to read it"}});
    }
}

// The demo credential (deploy/turnrelay.toml's) accepted where it is more
// than a demo: beside other credentials (users or REST secrets added to the
// example file, which keeps it), or on a listener other clients can reach.
// Anyone who has read the README could use such a relay.
void warn_demo_credential(const Config& c) {
    const bool demo = std::any_of(c.users.begin(), c.users.end(), is_demo_credential);
    if (!demo) {
        return;
    }
    bool reachable = false;
    for (const auto* ls : {&c.listen, &c.listen_tcp, &c.listen_tls, &c.listen_dtls}) {
        for (const Address& a : *ls) {
            const Address n = a.normalised();
            const bool loopback = n.is_v4() ? n.ip_string().rfind("127.", 0) == 0 : n.ip_string() == "::1";
            reachable = reachable || !loopback;
        }
    }
    if (reachable || c.users.size() > 1 || !c.rest_secrets.empty()) {
        log_event(LogLevel::kWarn, "demo_credential_enabled",
                  {{"user", kDemoUser},
                   {"risk", reachable ? "the README's demo password opens a relay reachable beyond this host"
                                      : "the README's demo password is accepted beside the real credentials"},
                   {"fix", std::string("remove \"") + kDemoUser + ":" + kDemoPassword + "\" from [auth].users"}});
    }
}

std::string turn_urls(const Config& c) {
    std::string s;
    auto add = [&](const std::vector<Address>& ls, const char* scheme, const char* transport) {
        for (const auto& l : ls) {
            if (std::string_view(transport) == "tcp" && c.proxy_protocol_on(l)) {
                continue;  // clients reach it through the proxy (proxy_protocol_summary)
            }
            s += (s.empty() ? "" : " ") + std::string(scheme) + ":" + l.to_string() + "?transport=" + transport;
        }
    };
    add(c.listen, "turn", "udp");
    add(c.listen_tcp, "turn", "tcp");
    add(c.listen_tls, "turns", "tcp");
    add(c.listen_dtls, "turns", "udp");
    return s;
}

// [tcp].proxy_protocol for the start line: the listeners behind a proxy and
// the proxies they accept, or "off".
std::string proxy_protocol_summary(const Config& c) {
    if (c.tcp_proxy_protocol.empty()) {
        return "off";
    }
    std::string s;
    for (const auto& l : c.tcp_proxy_protocol) {
        s += (s.empty() ? "" : ",") + l.to_string();
    }
    s += " from ";
    for (size_t i = 0; i < c.tcp_proxy_protocol_from.size(); ++i) {
        s += (i == 0 ? "" : ",") + c.tcp_proxy_protocol_from[i].to_string();
    }
    return s;
}

// What authenticates clients, for the start line and --check-config; never a
// secret.
std::string credentials_summary(const Config& c) {
    std::string mode;
    if (!c.users.empty()) {
        mode = "static users (" + std::to_string(c.users.size()) + ")";
    }
    if (!c.rest_secrets.empty()) {
        mode += std::string(mode.empty() ? "" : " + ") + "TURN REST shared secrets (" +
                std::to_string(c.rest_secrets.size()) + ")";
    }
    return mode;
}

// turn-relay --check-config: what start-up would refuse, told without
// starting (as nginx -t), in start-up's order: every key (load_config,
// before this), the TLS files (loaded by the caller), [state].dir (a probe
// file, removed at once; its lock file opened and its nonce secret read, not
// locked or made), the credential files, every listener and relay IP (each
// bound and closed at once; a port in use, or one below 1024 this user may
// not bind, is not an error here) and [dataplane].socket (not a file other
// than a socket). Nothing is served, locked or kept, so it runs beside the
// relay whose file it checks, e.g. before a reload. Not covered: what only a
// real start meets (a port another program holds, snapshots that do not
// restore). 0 and one line to stdout when start-up would get past all of
// this; otherwise the exit status and message start-up would give.
int check_config(const Config& c, const std::string& path) {
    // In start-up's order, so that a file with several mistakes gets the
    // status start-up would give.
    if (!c.state_dir.empty()) {
        if (auto e = StateStore::check(c.state_dir); !e.empty()) {
            return fatal_config(e);
        }
    }
    std::string err;
    if (!Shared::make_credentials(c, err)) {
        return fatal_config(err);
    }
    for (const std::string& e : {check_addresses(c, /*taken_ok=*/true),
                                 c.dataplane_socket.empty() ? std::string() : IpcServer::check_path(c.dataplane_socket)}) {
        if (!e.empty()) {
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            return kExitRuntime;
        }
    }
    std::string relays;
    for (const auto& a : c.relay_ips) {
        relays += (relays.empty() ? "" : ",") + a.ip_string();
    }
    std::printf("turn-relay: configuration OK (%s): urls=%s relay_ips=%s ports=%u-%u credentials=%s "
                "metrics=%s dataplane=%s state=%s\n",
                path.empty() ? "command line" : path.c_str(), turn_urls(c).c_str(), relays.c_str(),
                static_cast<unsigned>(c.relay_port_min), static_cast<unsigned>(c.relay_port_max),
                credentials_summary(c).c_str(), c.metrics_listen.empty() ? "off" : c.metrics_listen.c_str(),
                c.dataplane_socket.empty() ? "off" : c.dataplane_socket.c_str(),
                c.state_dir.empty() ? "off" : c.state_dir.c_str());
    return 0;
}

uint64_t unix_now_ms() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

// What the kernel's SO_REUSEPORT hash of a client 5-tuple depends on besides
// the tuple and the number of sockets: a secret drawn once per boot and a
// value per network namespace. "" if it cannot be told.
std::string reuseport_identity() {
    std::string err;
    const auto boot = read_file("/proc/sys/kernel/random/boot_id", 128, err);
    struct stat ns {};
    if (!boot || ::stat("/proc/self/ns/net", &ns) != 0) {
        return "";
    }
    std::string id(boot->begin(), boot->end());
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) {
        id.pop_back();
    }
    return "boot " + id + " netns " + std::to_string(ns.st_dev) + ":" + std::to_string(ns.st_ino) + "\n";
}

// Restores every loop's snapshot, or none: a snapshot belongs to the loop the
// kernel's SO_REUSEPORT hash sends its clients to, which holds only while the
// number of loops is the same as when it was saved, and only within one boot
// and one network namespace (reuseport_identity, kept in the state directory
// by the saving process). After a reboot, or in another namespace (a
// container restarted), the hash sends most clients to another loop than
// their allocation's: each restored allocation then gets a client path (a
// socket connected to its client, as a moved allocation has), which the
// kernel prefers to the listeners, so its datagrams come to its own loop. When none is restored,
// each allocation in the files that could be read gets its last line
// (allocation_not_restored), so that its usage is still logged once.
// Allocations an end journal names are neither. Returns the sequence number
// this process's end journals start at.
uint64_t restore_state(StateStore& store, const std::vector<std::unique_ptr<EventLoop>>& loops, Shared& shared) {
    const auto n = static_cast<unsigned>(loops.size());
    // Whether this process's SO_REUSEPORT hash is the saving one's; then this
    // one's identity, for the next process (the snapshots it saves are its).
    const std::string identity = reuseport_identity();
    bool same_hash = false;
    {
        std::string err;
        const auto prev = read_file(store.reuseport_path(), 256, err);
        same_hash = !identity.empty() && prev && std::string(prev->begin(), prev->end()) == identity;
        if (!identity.empty()) {
            const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(identity.data()), identity.size());
            if (!write_file_atomically(store.reuseport_path(), bytes, err)) {
                log_event(LogLevel::kWarn, "state_identity_unwritable",
                          {{"error", err}, {"effect", "the next process gives its restored allocations client paths"}});
            }
        }
    }
    // Allocations that ended after their loop's last save (io/state_store.h
    // EndJournal): their end lines were logged by the previous process, and
    // they do not come back. New ids stay above theirs (a clock set back
    // must not make a new allocation one the journals name).
    StateStore::Ended ended = store.ended_allocations(n);
    uint64_t next_id = shared.next_allocation_id.load();
    while (next_id <= ended.max_id && !shared.next_allocation_id.compare_exchange_weak(next_id, ended.max_id + 1)) {
    }
    for (const auto& e : ended.errors) {
        log_event(LogLevel::kWarn, "state_journal_unreadable",
                  {{"error", e}, {"effect", "allocations that ended in its save interval may come back"}});
    }
    size_t already_ended = 0;
    const auto drop_ended = [&](LoopSnapshot& s) {
        const auto gone = std::erase_if(s.allocations, [&](const SavedAllocation& a) { return ended.ids.contains(a.id); });
        already_ended += gone;
    };
    std::vector<LoopSnapshot> snaps;
    std::vector<std::string> problems;  // the first one says why nothing is restored
    for (unsigned i = 0; i < n; ++i) {
        std::string err;
        auto s = store.load(i, err);
        if (!err.empty()) {
            problems.push_back(err);
        } else if (s) {
            if (s->loops != n || s->loop != i) {
                problems.push_back("saved by " + std::to_string(s->loops) + " event loops, this process runs " +
                                   std::to_string(n) + " (set [server].threads = " + std::to_string(s->loops) +
                                   " to take them over)");
            }
            drop_ended(*s);
            snaps.push_back(std::move(*s));
        }
    }
    const auto extra = store.extra_snapshots(n);
    if (!extra.empty()) {
        problems.push_back("snapshots of more event loops than this process runs (" +
                           store.loop_path(extra.front()) + ")");
        for (const unsigned i : extra) {
            std::string err;
            if (auto s = store.load(i, err)) {
                drop_ended(*s);
                snaps.push_back(std::move(*s));
            } else if (!err.empty()) {
                problems.push_back(err);
            }
        }
    }
    for (const unsigned i : extra) {
        ::unlink(store.loop_path(i).c_str());  // never consistent with this process's loops
    }
    for (const auto& path : ended.extra_journals) {
        ::unlink(path.c_str());  // after their loops' snapshots: those are never restored
    }
    if (!problems.empty()) {
        for (const auto& p : problems) {
            log_event(LogLevel::kError, "state_not_restored", {{"reason", p}});
        }
        const uint64_t now = unix_now_ms();
        for (const auto& s : snaps) {
            for (const auto& a : s.allocations) {
                AllocationManager::log_not_restored(a, now, "its snapshot was not restored");
            }
        }
        // Out of the way (kept for a look), so that a process that stops
        // before its first save does not log these allocations again.
        for (unsigned i = 0; i < n; ++i) {
            const std::string path = store.loop_path(i);
            if (::access(path.c_str(), F_OK) == 0) {
                ::rename(path.c_str(), (path + ".rejected").c_str());
            }
        }
        return ended.next_seq;
    }
    size_t saved = 0;
    size_t restored = 0;
    uint64_t oldest_ms = 0;
    const uint64_t now = unix_now_ms();
    const bool paths = n > 1 && !same_hash;
    for (const auto& s : snaps) {
        oldest_ms = std::max(oldest_ms, now > s.saved_unix_ms ? now - s.saved_unix_ms : 0);
        saved += s.allocations.size();
        restored += loops[s.loop]->restore(s, paths);
    }
    if (!snaps.empty()) {
        log_event("state_restored", {{"allocations", std::to_string(restored)},
                                     {"saved", std::to_string(saved)},
                                     {"ended_after_save", std::to_string(already_ended)},
                                     {"age_ms", std::to_string(oldest_ms)},
                                     {"client_paths", paths ? "yes" : "no"}});
    }
    return ended.next_seq;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"turn-relay: TURN server (RFC 8656) control plane, socket mode"};
    app.set_version_flag("--version", "turn-relay " TURN_RELAY_VERSION);
    CliOverrides cli;
    std::string config_path;
    std::string realm;
    std::string metrics;
    std::string log_level;
    std::string port_range;
    std::string dataplane_socket;
    std::string state_dir;
    unsigned threads = 0;
    app.add_option("--config,-c", config_path, "TOML configuration file");
    app.add_option("--listen", cli.listen, "UDP listening address IP:port (repeatable)");
    app.add_option("--listen-tcp", cli.listen_tcp, "TURN over TCP listening address IP:port (repeatable)");
    app.add_option("--listen-tls", cli.listen_tls, "TURN over TLS listening address IP:port (repeatable)");
    app.add_option("--listen-dtls", cli.listen_dtls,
                   "TURN over DTLS listening address IP:port (UDP, repeatable; uses --tls-cert/--tls-key)");
    std::string tls_cert;
    std::string tls_key;
    auto* cert_opt = app.add_option("--tls-cert", tls_cert, "PEM certificate chain for --listen-tls and --listen-dtls");
    auto* key_opt = app.add_option("--tls-key", tls_key, "PEM private key for --listen-tls and --listen-dtls");
    app.add_option("--relay-ip", cli.relay_ips, "relayed address IP, at most one per family (repeatable)");
    app.add_option("--external-ip", cli.external_ips,
                   "behind a 1:1 NAT: the public IP the relay IP of its family is reached at (repeatable)");
    app.add_option("--alternate-ip", cli.alternate_ips, "RFC 5780 alternate IP, at most one per family (repeatable)");
    unsigned alternate_port = 0;
    auto* alt_port_opt = app.add_option("--alternate-port", alternate_port, "RFC 5780 alternate port");
    app.add_option("--redirect-server", cli.redirect_servers,
                   "another relay IP:port for UDP/TCP clients' Allocate (300 Try Alternate; repeatable)");
    app.add_option("--redirect-tls-server", cli.redirect_tls_servers,
                   "another relay IP:port for TLS clients' Allocate (300 Try Alternate; repeatable)");
    std::string redirect_when;
    auto* redirect_when_opt = app.add_option("--redirect-when", redirect_when,
                                             "draining (default) | always: when Allocate is redirected");
    std::string admin_socket;
    auto* admin_opt = app.add_option("--admin-socket", admin_socket,
                                     "unix socket of the admin interface (turn-ctl), \"\" = off");
    auto* realm_opt = app.add_option("--realm", realm, "authentication realm");
    app.add_option("--user", cli.users, "static user NAME:PASS (repeatable; visible to local users, see --users-file)");
    app.add_option("--rest-secret", cli.rest_secrets,
                   "TURN REST API shared secret, newest first (repeatable; visible to local users, see --rest-secret-file)");
    std::string users_file;
    std::string rest_secrets_file;
    auto* users_file_opt = app.add_option("--users-file", users_file,
                                          "file of static users, one NAME:PASS per line (read again on SIGHUP)");
    auto* secrets_file_opt = app.add_option("--rest-secret-file", rest_secrets_file,
                                            "file of TURN REST API shared secrets, one per line, newest first (read again on SIGHUP)");
    app.add_option("--allow-peer", cli.allow_peers, "CIDR of peers to permit despite the default deny list");
    auto* metrics_opt = app.add_option("--metrics", metrics, "Prometheus listen address IP:port, \"\" disables");
    auto* level_opt = app.add_option("--log-level", log_level, "trace|debug|info|warn|error");
    auto* threads_opt = app.add_option("--threads", threads, "event loops, 0..256 (0 = one per CPU the process may run on)");
    auto* range_opt = app.add_option("--port-range", port_range, "relayed port range MIN-MAX");
    auto* dp_opt = app.add_option("--dataplane-socket", dataplane_socket,
                                  "unix socket the DPDK dataplane connects to, \"\" = no offload");
    auto* state_opt = app.add_option("--state-dir", state_dir,
                                     "directory where allocations are saved for the next turn-relay, \"\" = off");
    bool check_only = false;
    app.add_flag("--check-config", check_only,
                 "check the configuration (keys, TLS and credential files, state directory, listener and "
                 "relay IPs) and exit: 0 if turn-relay would start with it; nothing is served, locked or kept");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : kExitConfig;
    }
    if (!config_path.empty()) {
        cli.config_path = config_path;
    }
    if (realm_opt->count() > 0) {
        cli.realm = realm;
    }
    if (metrics_opt->count() > 0) {
        cli.metrics = metrics;
    }
    if (level_opt->count() > 0) {
        cli.log_level = log_level;
    }
    if (threads_opt->count() > 0) {
        cli.threads = threads;
    }
    if (range_opt->count() > 0) {
        cli.port_range = port_range;
    }
    if (dp_opt->count() > 0) {
        cli.dataplane_socket = dataplane_socket;
    }
    if (state_opt->count() > 0) {
        cli.state_dir = state_dir;
    }
    if (alt_port_opt->count() > 0) {
        cli.alternate_port = alternate_port;
    }
    if (admin_opt->count() > 0) {
        cli.admin_socket = admin_socket;
    }
    if (redirect_when_opt->count() > 0) {
        cli.redirect_when = redirect_when;
    }
    if (cert_opt->count() > 0) {
        cli.tls_certificate = tls_cert;
    }
    if (key_opt->count() > 0) {
        cli.tls_private_key = tls_key;
    }
    if (users_file_opt->count() > 0) {
        cli.users_file = users_file;
    }
    if (secrets_file_opt->count() > 0) {
        cli.rest_secrets_file = rest_secrets_file;
    }

    auto loaded = load_config(cli);
    if (auto* err = std::get_if<ConfigError>(&loaded)) {
        return fatal_config(err->message);
    }
    const Config config = std::get<Config>(loaded);
    if (const auto m = Address::parse(config.metrics_listen); m && m->is_v6() && !MetricsExporter::serves_ipv6()) {
        return fatal_config("[metrics].listen: \"" + config.metrics_listen +
                            "\": this build's HTTP server (civetweb) has no IPv6; give an IPv4 address (e.g. "
                            "\"127.0.0.1:9641\")");
    }
    setup_logging(config);
    warn_secrets_on_command_line(cli);
    warn_open_secret_files(config);
    warn_demo_credential(config);
    // TURN over TLS and DTLS: the certificate and key are read (and checked
    // against each other) now, so a bad file stops start-up with the key to fix.
    TlsContexts tls;
    const bool any_tls = !config.listen_tls.empty() || !config.listen_dtls.empty();
    if (any_tls) {
        std::string tls_err;
        if (!tls.load(config.tls_certificate, config.tls_private_key, tls_err)) {
            return fatal_config(tls_err);
        }
    }
    if (check_only) {
        warn_listeners_in_relay_range(config);
        return check_config(config, config_path);
    }

    std::string err;
    // With a state directory the nonce secret outlives the process, so the
    // nonces clients hold stay valid across a restart.
    std::unique_ptr<StateStore> store;
    std::unique_ptr<Shared> shared;
    if (!config.state_dir.empty()) {
        store = std::make_unique<StateStore>(config.state_dir);
        if (auto e = store->prepare(); !e.empty()) {
            return fatal_config(e);
        }
        auto secret = store->nonce_secret(err);
        if (!secret) {
            return fatal_config("[state].dir: " + err);
        }
        shared = Shared::create(config, *secret, err);
    } else {
        shared = Shared::create(config, err);
    }
    if (!shared) {
        return fatal_config(err);
    }
    // Allocation ids unique across this host's turn-relay processes, not only
    // within one: a dataplane outlives a control plane restarted without
    // [state].dir (its old ids must not name the new one's allocations), and
    // logs name allocations by id. Seconds since the epoch times 2^21: a
    // process would have to make 2 million allocations per second of its
    // life to reach the next one's first id, and ids stay below 2^53 (exact
    // as doubles, for JSON tools such as jq) until 2106. Restored allocations
    // keep theirs.
    shared->next_allocation_id.store(static_cast<uint64_t>(::time(nullptr)) << 21);
    shared->last_reload_success_unix.store(static_cast<int64_t>(::time(nullptr)));
    if (any_tls) {
        shared->tls_not_after_unix.store(tls.not_after());
    }

    // Every TCP/TLS client, relayed socket and peer connection is a file
    // descriptor: take the hard limit, and say so when it is still short.
    {
        rlimit rl{};
        if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            ::setrlimit(RLIMIT_NOFILE, &rl);
        }
        const uint64_t want = uint64_t{config.tcp_max_connections} * 2 + 1024;
        if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && (!config.listen_tcp.empty() || !config.listen_tls.empty()) &&
            rl.rlim_cur < want) {
            log_event(LogLevel::kWarn, "open_files_limit_low",
                      {{"limit", std::to_string(rl.rlim_cur)},
                       {"fix", "raise it to " + std::to_string(want) +
                                   " (ulimit -n, LimitNOFILE) or lower [tcp].max_connections"}});
        }
    }
    // Signals are taken synchronously by this thread (sigwait); the loops
    // inherit the blocked mask and never see them.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);  // reload the TLS certificate and key
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    unsigned n = config.threads;
    if (n == 0) {
        // One per CPU this process may run on (taskset, systemd's
        // CPUAffinity=: a host shared with a dataplane leaves its lcores out).
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        const int allowed = ::sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 0;
        n = allowed > 0 ? static_cast<unsigned>(allowed) : std::thread::hardware_concurrency();
        n = std::clamp(n, 1u, 256u);
    }
    // Socket mode relays everything itself; with [dataplane].socket set, the
    // IPC server also offloads UDP allocations to the DPDK dataplane (it
    // outlives the loops, whose shutdown still calls the hook).
    OffloadHook no_offload;
    std::unique_ptr<IpcServer> dataplane;
    if (!config.dataplane_socket.empty()) {
        dataplane = std::make_unique<IpcServer>(config.dataplane_socket);
        dataplane->set_tos_rule(config.tos_keep(), config.tos_set());
        dataplane->set_external_ips(config);
    }
    OffloadHook& offload = dataplane ? static_cast<OffloadHook&>(*dataplane) : no_offload;
    // TCP/TLS connections between loops (RFC 6062 data connections); it
    // outlives the loops, and closes what one left in another's inbox.
    std::unique_ptr<StreamHandoffs> handoffs;
    if (n > 1 && (!config.listen_tcp.empty() || !config.listen_tls.empty())) {
        std::string e;
        handoffs = std::make_unique<StreamHandoffs>(n, e);
        if (!e.empty()) {
            log_event(LogLevel::kError, "startup_failed", {{"error", e}});
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            return kExitRuntime;
        }
    }
    warn_listeners_in_relay_range(config);
    if (auto e = check_addresses(config); !e.empty()) {
        log_event(LogLevel::kError, "startup_failed", {{"error", e}});
        std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
        return kExitRuntime;
    }
    std::vector<std::unique_ptr<EventLoop>> loops;
    std::vector<const Stats*> stats;
    for (unsigned i = 0; i < n; ++i) {
        loops.push_back(std::make_unique<EventLoop>(*shared, offload, i));
        if (auto e = loops.back()->bind_listeners(any_tls ? &tls : nullptr, handoffs.get());
            !e.empty()) {
            log_event(LogLevel::kError, "startup_failed", {{"error", e}});
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            return kExitRuntime;
        }
        stats.push_back(&loops.back()->stats());
    }
    {
        std::vector<EventLoop*> all;
        for (auto& l : loops) {
            all.push_back(l.get());
        }
        for (auto& l : loops) {
            l->set_siblings(all);
        }
    }
    // Take over the previous process's allocations before the dataplane can
    // connect: its first resync then carries them, and the flows it is still
    // forwarding stay installed.
    if (store) {
        const uint64_t first_journal = restore_state(*store, loops, *shared);
        store->start(n);
        for (auto& l : loops) {
            l->save_state_to(store.get(), config.state_save_interval_ms, first_journal);
        }
    }
    if (dataplane) {
        dataplane->set_inherited_below(shared->next_allocation_id.load());  // restored ids are below it
        if (auto e = dataplane->start(); !e.empty()) {
            log_event(LogLevel::kError, "startup_failed", {{"error", e}});
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            return kExitRuntime;
        }
    }
    MetricsExporter exporter(*shared, stats, dataplane ? &dataplane->counters() : nullptr);
    if (!config.metrics_listen.empty()) {
        if (auto e = exporter.start(config.metrics_listen); !e.empty()) {
            log_event(LogLevel::kError, "startup_failed", {{"error", e}});
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            return kExitRuntime;
        }
    }
    for (auto& l : loops) {
        l->start();
    }


    // SIGHUP reads the configuration again (file + the same command-line
    // overrides) and applies what can change under the running loops
    // (core/config_reload.h): [auth] users and rest_secrets, [policy]
    // allow_peers and deny_peers, and the [tls] files, re-read every time (a
    // renewed certificate: new connections get it, established ones keep
    // theirs; a file that does not load leaves the current one in place).
    // Also run by the admin interface's "reload" (its thread): one at a time.
    Config running = config;
    std::mutex reload_m;
    const auto reload = [&]() -> nlohmann::json {
        std::lock_guard<std::mutex> lock(reload_m);
        nlohmann::json out{{"ok", false}};
        const auto join = [](const std::vector<std::string>& v) {
            std::string s;
            for (const auto& k : v) {
                s += (s.empty() ? "" : ", ") + k;
            }
            return s.empty() ? std::string("none") : s;
        };
        auto reloaded = load_config(cli);
        // The outcome line (config_reloaded) comes last, after the TLS
        // files' own line, and names a new certificate among what it applied.
        std::optional<ReloadOutcome> applied;
        if (auto* bad = std::get_if<ConfigError>(&reloaded)) {
            log_event(LogLevel::kError, "config_reload_failed", {{"error", bad->message}, {"kept", "everything"}});
            out["error"] = bad->message;
        } else {
            warn_open_secret_files(std::get<Config>(reloaded));
            warn_demo_credential(std::get<Config>(reloaded));
            ReloadOutcome r = apply_reload(*shared, running, std::get<Config>(reloaded));
            if (!r.need_restart.empty()) {
                log_event(LogLevel::kWarn, "config_reload_needs_restart",
                          {{"changed", join(r.need_restart)}, {"fix", "restart turn-relay to apply these; the running values stay"}});
            }
            out["need_restart"] = r.need_restart;
            if (!r.error.empty()) {
                log_event(LogLevel::kError, "config_reload_failed", {{"error", r.error}, {"kept", "everything"}});
                out["error"] = r.error;
            } else {
                applied = std::move(r);
            }
        }
        bool tls_ok = true;
        if (any_tls) {
            std::string e;
            bool same = false;
            if (tls.load(running.tls_certificate, running.tls_private_key, e, &same)) {
                shared->tls_not_after_unix.store(tls.not_after());
                log_event(same ? "tls_unchanged" : "tls_reloaded", {{"certificate", tls.describe()}});
                out["tls_certificate"] = tls.describe();
                out["tls_changed"] = !same;
                if (applied && !same) {
                    applied->applied.emplace_back("[tls] certificate");
                }
            } else {
                // The certificate a renewal hook meant to install is not in
                // use: the reload as a whole failed, whatever else it applied.
                log_event(LogLevel::kError, "tls_reload_failed", {{"error", e}, {"kept", tls.describe()}});
                out["tls_error"] = e;
                out["error"] = "[tls]: " + e;
                tls_ok = false;
            }
        }
        // The metrics first: whoever reads config_reloaded (or a failure's
        // line, logged above) and then scrapes sees this reload's outcome.
        const bool ok = applied && tls_ok;
        shared->last_reload_ok.store(ok);
        if (ok) {
            shared->last_reload_success_unix.store(static_cast<int64_t>(::time(nullptr)));
        }
        out["ok"] = ok;
        if (applied) {
            log_event("config_reloaded", {{"applied", join(applied->applied)}});
            out["applied"] = applied->applied;
        }
        return out;
    };

    // The admin interface (tools/ctl's turn-ctl): status, allocations,
    // close, and the same reload and drain as SIGHUP and SIGTERM (its drain
    // raises SIGTERM, with the deadline it was given).
    std::atomic<int64_t> drain_deadline_override{-1};
    std::vector<EventLoop*> loop_ptrs;
    for (auto& l : loops) {
        loop_ptrs.push_back(l.get());
    }
    AdminServer admin(*shared, loop_ptrs,
                      {reload, [&](std::optional<uint32_t> deadline_s) {
                           // Draining from here on (the answer says so); SIGTERM
                           // wakes the main thread into the drain below.
                           drain_deadline_override.store(deadline_s ? int64_t{*deadline_s} : -1);
                           shared->draining.store(true);
                           ::kill(::getpid(), SIGTERM);
                       }});
    if (!config.admin_socket.empty()) {
        if (auto e = admin.start(config.admin_socket); !e.empty()) {
            log_event(LogLevel::kError, "startup_failed", {{"error", e}});
            std::fprintf(stderr, "turn-relay: %s\n", e.c_str());
            for (auto& l : loops) {
                l->stop();
            }
            return kExitRuntime;
        }
    }
    std::string relays;
    for (const auto& r : config.relay_ips) {
        const Address outside = config.advertised(r);
        relays += (relays.empty() ? "" : ",") + r.ip_string() + (outside == r ? "" : " (as " + outside.ip_string() + ")");
    }
    const std::string mode = credentials_summary(config);
    // The built-in demo credential only (no [auth] given): a real password,
    // even a "demo" user's, is never logged.
    const bool demo = config.users.size() == 1 && is_demo_credential(config.users[0]);
    log_event("started", {{"urls", turn_urls(config)},
                          {"realm", config.realm},
                          {"credentials", mode},
                          {"demo_user", demo ? config.users[0].first + ":" + config.users[0].second : ""},
                          {"relay_ips", relays},
                          {"ports", std::to_string(config.relay_port_min) + "-" + std::to_string(config.relay_port_max)},
                          {"loops", std::to_string(n)},
                          {"metrics", config.metrics_listen.empty() ? "off" : "http://" + config.metrics_listen + "/metrics"},
                          {"dataplane", config.dataplane_socket.empty() ? "off" : config.dataplane_socket},
                          {"state", config.state_dir.empty() ? "off" : config.state_dir},
                          {"tls_certificate", any_tls ? tls.describe() : "off"},
                          {"proxy_protocol", proxy_protocol_summary(config)},
                          {"admin", config.admin_socket.empty() ? "off" : config.admin_socket}});

    int sig = 0;
    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP) {
        (void)reload();
    }
    // Drain: redirect ([redirect]) or refuse (403) new allocations, keep relaying for the existing ones
    // until they end or the deadline passes; a second signal ends at once.
    shared->draining.store(true);
    const int64_t override_s = drain_deadline_override.load();
    const uint32_t drain_s = override_s >= 0 ? static_cast<uint32_t>(override_s) : config.drain_deadline_s;
    log_event("draining", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
                           {"allocations", std::to_string(shared->allocations.load())},
                           {"deadline_s", std::to_string(drain_s)}});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(drain_s);
    const timespec poll{0, 100'000'000};
    while (shared->allocations.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        const int got = sigtimedwait(&sigs, nullptr, &poll);
        if (got == SIGHUP) {
            (void)reload();
        } else if (got > 0) {
            break;
        }
    }
    const auto left = shared->allocations.load();
    admin.stop();     // it posts to the loops
    exporter.stop();  // it reads the loops' counters
    for (auto& l : loops) {
        l->request_stop();  // all at once: each finishes within its 100 ms poll
    }
    for (auto& l : loops) {
        l->stop();
    }
    // Before the loops' allocations are destroyed: a control-plane restart must
    // not tear down the dataplane's established flows (the next control plane
    // resyncs them), and the loops' last snapshots must be on disk.
    if (dataplane) {
        dataplane->stop();
    }
    if (store) {
        store->stop();
    }
    loops.clear();  // the allocations left log their usage (allocation_closed)
    log_event("stopped", {{"allocations_left", std::to_string(left)}});
    spdlog::shutdown();
    return 0;
}
