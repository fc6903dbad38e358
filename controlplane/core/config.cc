#include "core/config.h"

#include <ifaddrs.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include <toml++/toml.h>

#include "auth/credential_store.h"
#include "auth/credentials.h"
#include "io/files.h"

namespace turn::cp {

std::optional<Address> Config::relay_ip(Family f) const {
    for (const auto& a : relay_ips) {
        if (a.family == f) {
            return a;
        }
    }
    return std::nullopt;
}

bool Config::proxy_protocol_on(const Address& listener) const {
    return std::find(tcp_proxy_protocol.begin(), tcp_proxy_protocol.end(), listener) != tcp_proxy_protocol.end();
}

std::optional<std::pair<Address, Address>> Config::nat_pair(Family f) const {
    for (const auto& e : external_ips) {
        if (e.family == f) {
            if (auto r = relay_ip(f)) {
                return std::pair{*r, e};
            }
        }
    }
    return std::nullopt;
}

Address Config::advertised(const Address& relayed) const {
    if (external_ips.empty()) {
        return relayed;
    }
    const auto p = nat_pair(relayed.family);
    return p && p->first == relayed.with_port(0) ? p->second.with_port(relayed.port) : relayed;
}

Address Config::to_internal(const Address& peer) const {
    if (external_ips.empty()) {
        return peer;
    }
    // Only the relayed port range holds relayed addresses: any other port on
    // the external IP is not translated (it goes to the NAT, as without
    // external_ips), so no host service on the relay IP is reached directly.
    const auto p = nat_pair(peer.family);
    return p && p->second == peer.with_port(0) && in_relay_range(peer.port) ? p->first.with_port(peer.port) : peer;
}

Address Config::to_external(const Address& source) const {
    if (external_ips.empty()) {
        return source;
    }
    const auto p = nat_pair(source.family);
    return p && p->first == source.with_port(0) && in_relay_range(source.port) ? p->second.with_port(source.port)
                                                                               : source;
}

namespace {

constexpr size_t kMaxRestSecrets = auth::CredentialStore::kMaxSecrets;

struct Fail {
    std::string message;
};

[[noreturn]] void fail(const std::string& key, const std::string& what) {
    throw Fail{key + ": " + what};
}

// The first address of `list` whose family an earlier one has: the lists of
// relay, external and alternate IPs take at most one per family.
std::optional<Address> second_of_a_family(const std::vector<Address>& list) {
    bool seen[2] = {false, false};
    for (const auto& a : list) {
        bool& s = seen[a.is_v4() ? 0 : 1];
        if (s) {
            return a;
        }
        s = true;
    }
    return std::nullopt;
}

const toml::node* find(const toml::table& root, std::string_view section, std::string_view key) {
    const toml::node* s = root.get(section);
    if (s == nullptr || !s->is_table()) {
        return nullptr;
    }
    return s->as_table()->get(key);
}

std::string key_name(std::string_view section, std::string_view key) {
    return "[" + std::string(section) + "]." + std::string(key);
}

template <typename T>
void get_int(const toml::table& root, std::string_view section, std::string_view key, T& out,
             int64_t min, int64_t max) {
    const toml::node* n = find(root, section, key);
    if (n == nullptr) {
        return;
    }
    auto v = n->value<int64_t>();
    if (!n->is_integer() || !v) {
        fail(key_name(section, key), "must be an integer");
    }
    if (*v < min || *v > max) {
        fail(key_name(section, key), "value " + std::to_string(*v) + " is out of range; use " +
                                         std::to_string(min) + ".." + std::to_string(max));
    }
    out = static_cast<T>(*v);
}

void get_string(const toml::table& root, std::string_view section, std::string_view key,
                std::string& out) {
    const toml::node* n = find(root, section, key);
    if (n == nullptr) {
        return;
    }
    if (!n->is_string()) {
        fail(key_name(section, key), "must be a string in double quotes");
    }
    out = *n->value<std::string>();
}

std::optional<std::vector<std::string>> get_strings(const toml::table& root, std::string_view section,
                                                    std::string_view key) {
    const toml::node* n = find(root, section, key);
    if (n == nullptr) {
        return std::nullopt;
    }
    if (!n->is_array()) {
        fail(key_name(section, key), "must be an array of strings, e.g. [\"...\"]");
    }
    std::vector<std::string> out;
    for (const auto& e : *n->as_array()) {
        if (!e.is_string()) {
            fail(key_name(section, key), "every element must be a string");
        }
        out.push_back(*e.value<std::string>());
    }
    return out;
}

Address parse_listen(const std::string& key, const std::string& s) {
    auto a = Address::parse(s);
    if (!a || a->port == 0) {
        fail(key, "\"" + s + "\" is not an address with a port; write \"127.0.0.1:3478\" or \"[::1]:3478\"");
    }
    return *a;
}

// Another relay's client-facing address: concrete (a client cannot be sent to a wildcard) and with a port.
Address parse_redirect_server(const std::string& key, const std::string& s) {
    const Address a = parse_listen(key, s);
    if (a.is_unspecified()) {
        fail(key, "\"" + s + "\" is a wildcard; name the other relay's address clients can reach, e.g. \"198.51.100.7:3478\"");
    }
    return a.normalised();
}

Config::RedirectWhen parse_redirect_when(const std::string& key, const std::string& s) {
    if (s == "draining") {
        return Config::RedirectWhen::kDraining;
    }
    if (s == "always") {
        return Config::RedirectWhen::kAlways;
    }
    fail(key, "\"" + s + "\" is not a choice; use \"draining\" (redirect new allocations while this relay drains) or "
              "\"always\" (every new allocation: a redirector)");
}

Address parse_ip(const std::string& key, const std::string& s) {
    auto a = Address::parse(s);
    if (!a || a->port != 0) {
        fail(key, "\"" + s + "\" is not a plain IP address (no port); write \"127.0.0.1\" or \"::1\"");
    }
    if (a->is_unspecified()) {
        fail(key, "\"" + s + "\" is a wildcard; relayed addresses must be concrete IPs clients can reach");
    }
    return a->normalised();
}

Prefix parse_prefix(const std::string& key, const std::string& s) {
    auto p = Prefix::parse(s);
    if (!p) {
        fail(key, "\"" + s + "\" is not a CIDR range; write \"127.0.0.0/8\" or \"fd00::/8\"");
    }
    return *p;
}

// "name:password" -> (name, password); the password is everything after the
// first ':'. A message never quotes an entry: one without a ':' may be a
// password or a REST secret written in the wrong place, and a reload logs it
// (and answers turn-ctl with it). Only a user name is named.
std::pair<std::string, std::string> split_user(const std::string& key, const std::string& s) {
    const auto colon = s.find(':');
    if (colon == 0) {
        fail(key, "an entry has an empty user name (nothing before the first \":\"); write \"user:password\"");
    }
    if (colon == std::string::npos) {
        fail(key, "an entry has no \":\"; write \"user:password\"");
    }
    if (colon + 1 == s.size()) {
        fail(key, "user \"" + s.substr(0, colon) + "\" has an empty password; write \"user:password\"");
    }
    return {s.substr(0, colon), s.substr(colon + 1)};
}

void parse_user(const std::string& key, const std::string& s, Config& c) {
    auto [name, password] = split_user(key, s);
    for (const auto& u : c.users) {
        if (u.first == name) {
            fail(key, "user \"" + name + "\" is listed twice (only one password would work); keep one entry per user");
        }
    }
    c.users.emplace_back(std::move(name), std::move(password));
}

// A line of an [auth] secrets file that is neither blank nor a comment.
struct SecretLine {
    size_t number;  // from 1
    std::string text;
};

// The entries of an [auth] secrets file: one per line; blank lines and lines
// whose first non-blank character is '#' are skipped; trailing whitespace
// (CRLF's '\r' too) is cut, leading whitespace is kept. `origin` names the
// file in messages: `[auth].users_file "/etc/turn-relay/users"`.
std::vector<SecretLine> read_secret_lines(const std::string& origin, const std::string& path) {
    // Not a regular file: a directory cannot be read, a FIFO would block start-up.
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            fail(origin, std::string("is not a regular file") + (S_ISDIR(st.st_mode) ? " but a directory" : "") +
                             "; give the path of the file itself");
        }
        if (st.st_size > static_cast<off_t>(kSecretsFileMaxBytes)) {
            fail(origin, "is larger than 1 MiB (" + std::to_string(st.st_size) +
                             " bytes); is it the right file? It holds one entry per line");
        }
    }
    std::string error;
    const auto data = read_file(path, kSecretsFileMaxBytes, error);
    if (!data) {
        fail(origin, error.empty() ? "no such file; check the path, or set \"\" for none"
                                   : error + "; make it readable by the user turn-relay runs as (and by no one "
                                             "else: chmod 0600)");
    }
    std::vector<SecretLine> out;
    std::string_view text(reinterpret_cast<const char*>(data->data()), data->size());
    if (text.starts_with("\xEF\xBB\xBF")) {
        text.remove_prefix(3);  // a UTF-8 byte order mark (Windows editors) is no part of the first entry
    }
    size_t number = 0;
    for (size_t pos = 0; pos < text.size();) {
        const size_t nl = std::min(text.find('\n', pos), text.size());
        std::string_view line = text.substr(pos, nl - pos);
        pos = nl + 1;
        ++number;
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' ||
                                 line.back() == '\v' || line.back() == '\f')) {
            line.remove_suffix(1);
        }
        const size_t first = line.find_first_not_of(" \t");
        if (first == std::string_view::npos || line[first] == '#') {
            continue;
        }
        out.push_back({number, std::string(line)});
    }
    return out;
}

// [auth].users_file and rest_secrets_file (or --users-file and
// --rest-secret-file, which replace them): their entries follow the inline
// ones, with the checks the inline ones get; a message names the file and line.
void apply_secret_files(const CliOverrides& cli, Config& c) {
    // One file for both would make every user entry a REST secret (and each
    // secret line a user, or an error naming a line of the other list).
    std::error_code same_err;
    if (!c.users_file.empty() && !c.rest_secrets_file.empty() &&
        (c.users_file == c.rest_secrets_file ||
         std::filesystem::equivalent(c.users_file, c.rest_secrets_file, same_err))) {
        fail(std::string(cli.rest_secrets_file ? "--rest-secret-file" : "[auth].rest_secrets_file") + " \"" +
                 c.rest_secrets_file + "\"",
             std::string("is the same file as ") + (cli.users_file ? "--users-file" : "[auth].users_file") + " \"" +
                 c.users_file + "\"; keep users (name:password lines) and REST secrets in two files");
    }
    if (!c.users_file.empty()) {
        const std::string origin = std::string(cli.users_file ? "--users-file" : "[auth].users_file") + " \"" +
                                   c.users_file + "\"";
        const std::string inline_key = cli.users.empty() ? "[auth].users" : "--user";
        // Where each user was listed: "in [auth].users" or "on line 4".
        std::unordered_map<std::string, std::string> seen;
        for (const auto& u : c.users) {
            seen.emplace(u.first, "in " + inline_key);
        }
        for (const auto& l : read_secret_lines(origin, c.users_file)) {
            const std::string key = origin + ": line " + std::to_string(l.number);
            auto [name, password] = split_user(key, l.text);
            // Checked here rather than when the credential store is made, so
            // that the message names the line.
            if (!auth::opaque_string(name)) {
                fail(key, "user name \"" + name + "\" is not a valid OpaqueString (RFC 8265: no control characters)");
            }
            if (!auth::opaque_string(password)) {
                fail(key, "the password of \"" + name +
                              "\" is not a valid OpaqueString (RFC 8265: no control characters, not empty)");
            }
            const auto [it, fresh] = seen.emplace(name, "on line " + std::to_string(l.number));
            if (!fresh) {
                fail(key, "user \"" + name + "\" is listed twice, here and " + it->second +
                              " (only one password would work); keep one entry per user");
            }
            c.users.emplace_back(std::move(name), std::move(password));
        }
    }
    if (!c.rest_secrets_file.empty()) {
        const std::string origin = std::string(cli.rest_secrets_file ? "--rest-secret-file" : "[auth].rest_secrets_file") +
                                   " \"" + c.rest_secrets_file + "\"";
        const std::string inline_key = cli.rest_secrets.empty() ? "[auth].rest_secrets" : "--rest-secret";
        const size_t inline_count = c.rest_secrets.size();
        for (const auto& l : read_secret_lines(origin, c.rest_secrets_file)) {
            if (c.rest_secrets.size() >= kMaxRestSecrets) {
                const std::string max = std::to_string(kMaxRestSecrets);
                fail(origin + ": line " + std::to_string(l.number),
                     "more than " + max + " REST secrets" +
                         (inline_count == 0 ? std::string()
                                            : " with the " + std::to_string(inline_count) + " of " + inline_key) +
                         "; keep at most " + max + " in all, newest first, and drop the oldest");
            }
            if (std::any_of(l.text.begin(), l.text.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; })) {
                // A lone CR as line end, a NUL: the secret would silently never match.
                fail(origin + ": line " + std::to_string(l.number),
                     "a secret holds a control character (a CR-only line end?); one secret per line, LF or CRLF line ends");
            }
            c.rest_secrets.push_back(l.text);
        }
    }
}

void apply_toml(const toml::table& root, Config& c) {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> known = {
        {"server", {"listen", "listen_tcp", "listen_tls", "listen_dtls", "relay_ips", "external_ips", "alternate_ips", "alternate_port", "relay_port_min", "relay_port_max", "realm", "software", "threads",
                    "strict_channel_range", "dscp"}},
        {"auth", {"users", "rest_secrets", "users_file", "rest_secrets_file", "nonce_lifetime_s"}},
        {"tls", {"certificate", "private_key"}},
        {"tcp", {"max_connections", "max_connections_per_ip", "idle_timeout_s", "send_buffer_bytes", "accepts_per_ip_per_s",
                 "proxy_protocol", "proxy_protocol_from"}},
        {"dtls", {"max_sessions", "max_sessions_per_ip", "idle_timeout_s", "handshakes_per_ip_per_s", "mtu"}},
        {"allocation", {"default_lifetime_s", "max_lifetime_s", "max_per_user", "max_total",
                        "bandwidth_bps", "reservation_lifetime_s", "max_permissions", "max_channels", "max_tcp_peer_connections", "mobility"}},
        {"policy", {"allow_peers", "deny_peers", "allow_private_peers", "unauth_per_ip_per_s"}},
        {"metrics", {"listen"}},
        {"dataplane", {"socket"}},
        {"state", {"dir", "save_interval_ms"}},
        {"log", {"level", "format"}},
        {"drain", {"deadline_s"}},
        {"redirect", {"servers", "tls_servers", "tls_domain", "when"}},
        {"admin", {"socket"}},
    };
    for (const auto& [k, v] : root) {
        const std::string section(k.str());
        const std::vector<std::string>* keys = nullptr;
        for (const auto& [s, ks] : known) {
            if (s == section) {
                keys = &ks;
            }
        }
        if (keys == nullptr || !v.is_table()) {
            fail("[" + section + "]", "unknown section; see docs/CONFIGURATION.md");
        }
        for (const auto& [kk, vv] : *v.as_table()) {
            (void)vv;
            bool ok = false;
            for (const auto& name : *keys) {
                ok = ok || name == kk.str();
            }
            if (!ok) {
                fail(key_name(section, kk.str()), "unknown key; see docs/CONFIGURATION.md");
            }
        }
    }
    for (auto [key, list] : {std::pair{"listen", &c.listen}, std::pair{"listen_tcp", &c.listen_tcp},
                             std::pair{"listen_tls", &c.listen_tls}, std::pair{"listen_dtls", &c.listen_dtls}}) {
        if (auto l = get_strings(root, "server", key)) {
            list->clear();
            for (const auto& s : *l) {
                list->push_back(parse_listen(key_name("server", key), s));
            }
        }
    }
    for (auto [key, list] : {std::pair{"relay_ips", &c.relay_ips}, std::pair{"external_ips", &c.external_ips},
                             std::pair{"alternate_ips", &c.alternate_ips}}) {
        if (auto l = get_strings(root, "server", key)) {
            list->clear();
            for (const auto& s : *l) {
                list->push_back(parse_ip(key_name("server", key), s));
            }
        }
    }
    get_int(root, "server", "alternate_port", c.alternate_port, 0, 65535);
    get_int(root, "server", "relay_port_min", c.relay_port_min, 1, 65535);
    get_int(root, "server", "relay_port_max", c.relay_port_max, 1, 65535);
    get_string(root, "server", "realm", c.realm);
    get_string(root, "server", "software", c.software);
    get_int(root, "server", "threads", c.threads, 0, 256);
    if (const toml::node* n = find(root, "server", "strict_channel_range")) {
        if (!n->is_boolean()) {
            fail("[server].strict_channel_range", "must be true or false");
        }
        c.strict_channel_range = *n->value<bool>();
    }
    if (const toml::node* n = find(root, "server", "dscp")) {
        const auto v = n->value<int64_t>();
        if (n->is_string() && *n->value<std::string>() == "keep") {
            c.dscp = -1;
        } else if (n->is_integer() && v && *v >= 0 && *v <= 63) {
            c.dscp = static_cast<int>(*v);
        } else {
            fail("[server].dscp", "must be \"keep\" (relayed data keeps the DSCP it came with) or a DSCP number "
                                  "0..63 every relayed datagram gets (0: best effort, 46: EF)");
        }
    }
    if (auto l = get_strings(root, "auth", "users")) {
        c.users.clear();
        for (const auto& s : *l) {
            parse_user("[auth].users", s, c);
        }
    }
    if (auto l = get_strings(root, "auth", "rest_secrets")) {
        c.rest_secrets = *l;
    }
    get_string(root, "auth", "users_file", c.users_file);
    get_string(root, "auth", "rest_secrets_file", c.rest_secrets_file);
    get_int(root, "auth", "nonce_lifetime_s", c.nonce_lifetime_s, 1, 86400);
    get_string(root, "tls", "certificate", c.tls_certificate);
    get_string(root, "tls", "private_key", c.tls_private_key);
    get_int(root, "tcp", "max_connections", c.tcp_max_connections, 1, 10'000'000);
    get_int(root, "tcp", "max_connections_per_ip", c.tcp_max_connections_per_ip, 1, 10'000'000);
    get_int(root, "tcp", "idle_timeout_s", c.tcp_idle_timeout_s, 1, 86400);
    get_int(root, "tcp", "send_buffer_bytes", c.tcp_send_buffer_bytes, 70'000, 64 << 20);
    get_int(root, "tcp", "accepts_per_ip_per_s", c.tcp_accepts_per_ip_per_s, 0, 1'000'000);
    if (auto l = get_strings(root, "tcp", "proxy_protocol")) {
        c.tcp_proxy_protocol.clear();
        for (const auto& s : *l) {
            c.tcp_proxy_protocol.push_back(parse_listen("[tcp].proxy_protocol", s));
        }
    }
    if (auto l = get_strings(root, "tcp", "proxy_protocol_from")) {
        c.tcp_proxy_protocol_from.clear();
        for (const auto& s : *l) {
            c.tcp_proxy_protocol_from.push_back(parse_prefix("[tcp].proxy_protocol_from", s));
        }
    }
    get_int(root, "dtls", "max_sessions", c.dtls_max_sessions, 1, 10'000'000);
    get_int(root, "dtls", "max_sessions_per_ip", c.dtls_max_sessions_per_ip, 1, 10'000'000);
    get_int(root, "dtls", "idle_timeout_s", c.dtls_idle_timeout_s, 1, 86400);
    get_int(root, "dtls", "handshakes_per_ip_per_s", c.dtls_handshakes_per_ip_per_s, 0, 1'000'000);
    // 576: the least every IPv4 host takes; 9216: jumbo frames.
    get_int(root, "dtls", "mtu", c.dtls_mtu, 576, 9216);
    get_int(root, "allocation", "default_lifetime_s", c.default_lifetime_s, 1, 86400);
    get_int(root, "allocation", "max_lifetime_s", c.max_lifetime_s, 1, 86400);
    get_int(root, "allocation", "max_per_user", c.max_per_user, 0, 1'000'000);
    get_int(root, "allocation", "max_total", c.max_total, 0, 10'000'000);
    get_int(root, "allocation", "bandwidth_bps", c.bandwidth_bps, 0, INT64_MAX);
    get_int(root, "allocation", "reservation_lifetime_s", c.reservation_lifetime_s, 1, 3600);
    get_int(root, "allocation", "max_permissions", c.max_permissions, 1, 1'000'000);
    get_int(root, "allocation", "max_channels", c.max_channels, 1, 16384);
    get_int(root, "allocation", "max_tcp_peer_connections", c.max_tcp_peer_connections, 1, 65536);
    if (const toml::node* n = find(root, "allocation", "mobility")) {
        if (!n->is_boolean()) {
            fail("[allocation].mobility", "must be true or false");
        }
        c.mobility = *n->value<bool>();
    }
    if (auto l = get_strings(root, "policy", "allow_peers")) {
        c.allow_peers.clear();
        for (const auto& s : *l) {
            c.allow_peers.push_back(parse_prefix("[policy].allow_peers", s));
        }
    }
    if (auto l = get_strings(root, "policy", "deny_peers")) {
        c.deny_peers.clear();
        for (const auto& s : *l) {
            c.deny_peers.push_back(parse_prefix("[policy].deny_peers", s));
        }
    }
    if (const toml::node* n = find(root, "policy", "allow_private_peers")) {
        if (!n->is_boolean()) {
            fail("[policy].allow_private_peers", "must be true or false");
        }
        c.allow_private_peers = *n->value<bool>();
    }
    get_int(root, "policy", "unauth_per_ip_per_s", c.unauth_per_ip_per_s, 0, 1'000'000);
    get_string(root, "metrics", "listen", c.metrics_listen);
    get_string(root, "dataplane", "socket", c.dataplane_socket);
    get_string(root, "state", "dir", c.state_dir);
    get_int(root, "state", "save_interval_ms", c.state_save_interval_ms, 10, 600'000);
    get_string(root, "log", "level", c.log_level);
    get_string(root, "log", "format", c.log_format);
    get_int(root, "drain", "deadline_s", c.drain_deadline_s, 0, 86400);
    for (auto [key, list] : {std::pair{"servers", &c.redirect_servers}, std::pair{"tls_servers", &c.redirect_tls_servers}}) {
        if (auto l = get_strings(root, "redirect", key)) {
            list->clear();
            for (const auto& s : *l) {
                list->push_back(parse_redirect_server(key_name("redirect", key), s));
            }
        }
    }
    get_string(root, "redirect", "tls_domain", c.redirect_tls_domain);
    get_string(root, "admin", "socket", c.admin_socket);
    if (const toml::node* n = find(root, "redirect", "when")) {
        if (!n->is_string()) {
            fail("[redirect].when", "must be \"draining\" or \"always\"");
        }
        c.redirect_when = parse_redirect_when("[redirect].when", *n->value<std::string>());
    }
}

void apply_cli(const CliOverrides& cli, Config& c) {
    for (auto [flag, from, to] : {std::tuple{"--listen", &cli.listen, &c.listen},
                                  std::tuple{"--listen-tcp", &cli.listen_tcp, &c.listen_tcp},
                                  std::tuple{"--listen-tls", &cli.listen_tls, &c.listen_tls},
                                  std::tuple{"--listen-dtls", &cli.listen_dtls, &c.listen_dtls}}) {
        if (!from->empty()) {
            to->clear();
            for (const auto& s : *from) {
                to->push_back(parse_listen(flag, s));
            }
        }
    }
    for (auto [flag, from, to] : {std::tuple{"--relay-ip", &cli.relay_ips, &c.relay_ips},
                                  std::tuple{"--external-ip", &cli.external_ips, &c.external_ips},
                                  std::tuple{"--alternate-ip", &cli.alternate_ips, &c.alternate_ips}}) {
        if (!from->empty()) {
            to->clear();
            for (const auto& s : *from) {
                to->push_back(parse_ip(flag, s));
            }
        }
    }
    if (cli.alternate_port) {
        if (*cli.alternate_port > 65535) {
            fail("--alternate-port", std::to_string(*cli.alternate_port) + " is not a port; use 1..65535");
        }
        c.alternate_port = static_cast<uint16_t>(*cli.alternate_port);
    }
    for (auto [flag, from, to] : {std::tuple{"--redirect-server", &cli.redirect_servers, &c.redirect_servers},
                                  std::tuple{"--redirect-tls-server", &cli.redirect_tls_servers, &c.redirect_tls_servers}}) {
        if (!from->empty()) {
            to->clear();
            for (const auto& s : *from) {
                to->push_back(parse_redirect_server(flag, s));
            }
        }
    }
    if (cli.admin_socket) {
        c.admin_socket = *cli.admin_socket;
    }
    if (cli.redirect_when) {
        c.redirect_when = parse_redirect_when("--redirect-when", *cli.redirect_when);
    }
    if (cli.tls_certificate) {
        c.tls_certificate = *cli.tls_certificate;
    }
    if (cli.tls_private_key) {
        c.tls_private_key = *cli.tls_private_key;
    }
    if (cli.realm) {
        c.realm = *cli.realm;
    }
    if (!cli.users.empty()) {
        c.users.clear();
        for (const auto& s : cli.users) {
            parse_user("--user", s, c);
        }
    }
    if (!cli.rest_secrets.empty()) {
        c.rest_secrets = cli.rest_secrets;
    }
    if (cli.users_file) {
        c.users_file = *cli.users_file;
    }
    if (cli.rest_secrets_file) {
        c.rest_secrets_file = *cli.rest_secrets_file;
    }
    if (!cli.allow_peers.empty()) {
        c.allow_peers.clear();
        for (const auto& s : cli.allow_peers) {
            c.allow_peers.push_back(parse_prefix("--allow-peer", s));
        }
    }
    if (cli.metrics) {
        c.metrics_listen = *cli.metrics;
    }
    if (cli.dataplane_socket) {
        c.dataplane_socket = *cli.dataplane_socket;
    }
    if (cli.state_dir) {
        c.state_dir = *cli.state_dir;
    }
    if (cli.log_level) {
        c.log_level = *cli.log_level;
    }
    if (cli.threads) {
        if (*cli.threads > 256) {
            fail("--threads", std::to_string(*cli.threads) + " is out of range 0..256 (0 = one per CPU)");
        }
        c.threads = *cli.threads;
    }
    if (cli.port_range) {
        const std::string& r = *cli.port_range;
        const auto dash = r.find('-');
        unsigned lo = 0;
        unsigned hi = 0;
        bool ok = dash != std::string::npos;
        if (ok) {
            auto a = std::from_chars(r.data(), r.data() + dash, lo);
            auto b = std::from_chars(r.data() + dash + 1, r.data() + r.size(), hi);
            ok = a.ec == std::errc{} && b.ec == std::errc{} && a.ptr == r.data() + dash &&
                 b.ptr == r.data() + r.size() && lo >= 1 && hi <= 65535;
        }
        if (!ok) {
            fail("--port-range", "\"" + r + "\" must be MIN-MAX with ports 1..65535, e.g. 49152-65535");
        }
        c.relay_port_min = static_cast<uint16_t>(lo);
        c.relay_port_max = static_cast<uint16_t>(hi);
    }
}

// Whether `ip` is an address of one of this host's interfaces (what a
// wildcard listener answers on), as getifaddrs() lists them now.
bool local_ip(const Address& ip) {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) {
        return false;
    }
    bool found = false;
    for (const ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) {
        if (i->ifa_addr == nullptr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) {
            continue;
        }
        const auto a = Address::from_sockaddr(i->ifa_addr);
        found = a && a->same_ip(ip.normalised());
    }
    ::freeifaddrs(list);
    return found;
}

// [redirect]: a redirect to this relay itself would send the client back
// here (clients stop at a loop, but they fail the allocation); a TLS domain
// without TLS alternates, or "always" without any alternate, says nothing.
// Behind a wildcard listener "this relay" is its relay IP and every address
// of the host's interfaces.
void validate_redirect(const Config& c) {
    for (auto [key, list, own] : {std::tuple{"[redirect].servers", &c.redirect_servers, std::vector<const std::vector<Address>*>{&c.listen, &c.listen_tcp}},
                                  std::tuple{"[redirect].tls_servers", &c.redirect_tls_servers, std::vector<const std::vector<Address>*>{&c.listen_tls, &c.listen_dtls}}}) {
        if (list->size() > 64) {
            fail(key, "at most 64 alternate servers");
        }
        for (const auto& a : *list) {
            for (const auto* listeners : own) {
                for (const auto& l : *listeners) {
                    if (l.port == a.port &&
                        (l.normalised() == a || (l.is_unspecified() && l.family == a.family &&
                                                 (c.relay_ip(a.family) == a.with_port(0) || local_ip(a))))) {
                        fail(key, a.to_string() + " is this relay's own listener; list the other relays clients should go to");
                    }
                }
            }
        }
    }
    if (!c.redirect_tls_domain.empty() && c.redirect_tls_servers.empty()) {
        fail("[redirect].tls_domain", "is set but [redirect].tls_servers is empty; the domain names the TLS alternates' certificate");
    }
    if (!c.redirect_tls_servers.empty() && c.listen_tls.empty() && c.listen_dtls.empty()) {
        fail("[redirect].tls_servers", "is set but this relay has no listen_tls or listen_dtls; TLS alternates are only given "
                                       "to TLS and DTLS clients");
    }
    if (c.redirect_tls_domain.size() > 255) {
        fail("[redirect].tls_domain", "longer than a DNS name (255 bytes)");
    }
    if (c.redirect_when == Config::RedirectWhen::kAlways && c.redirect_servers.empty() && c.redirect_tls_servers.empty()) {
        fail("[redirect].when", "\"always\" needs servers or tls_servers to redirect to");
    }
}

void validate(Config& c, bool have_file) {
    if (c.listen.empty()) {
        // Loopback only: an unconfigured relay is never reachable from outside.
        c.listen = {*Address::parse("127.0.0.1:3478"), *Address::parse("[::1]:3478")};
    }
    if (c.relay_ips.empty()) {
        // One relay IP per family from the listeners, when they are concrete.
        for (const auto& l : c.listen) {
            if (!l.is_unspecified() && !c.relay_ip(l.family)) {
                c.relay_ips.push_back(l.with_port(0).normalised());
            }
        }
        if (c.relay_ips.empty()) {
            fail("[server].relay_ips", "cannot be derived from wildcard listeners; set relay_ips = [\"<public IP>\"]");
        }
    }
    if (const auto a = second_of_a_family(c.relay_ips)) {
        fail("[server].relay_ips", "at most one address per family; remove " + a->ip_string() +
                                       " or the other one of its family");
    }
    if (const auto e = second_of_a_family(c.external_ips)) {
        fail("[server].external_ips",
             "at most one address per family (the one the relay IP of that family is reached at); remove " +
                 e->ip_string() + " or the other one of its family");
    }
    for (const auto& e : c.external_ips) {
        const std::string k = "[server].external_ips";
        const auto r = c.relay_ip(e.family);
        if (!r) {
            fail(k, e.ip_string() + " has no relay IP of its family to stand for; add one to relay_ips or remove it");
        }
        if (*r == e) {
            fail(k, e.ip_string() + " is the relay IP itself; list only what a NAT maps to it, or remove it");
        }
    }
    if (!c.external_ips.empty() && !c.alternate_ips.empty()) {
        // RESPONSE-ORIGIN and OTHER-ADDRESS would name this host's own
        // addresses, which clients behind the NAT cannot test against.
        fail("[server].alternate_ips", "NAT behaviour discovery (RFC 5780) cannot be served from behind a NAT "
                                       "(external_ips is set); remove alternate_ips or external_ips");
    }
    if ((!c.listen_tls.empty() || !c.listen_dtls.empty()) && (c.tls_certificate.empty() || c.tls_private_key.empty())) {
        const std::string which = c.listen_tls.empty() ? "listen_dtls" : "listen_tls";
        fail(c.tls_certificate.empty() ? "[tls].certificate" : "[tls].private_key",
             which + " is set but the TLS " + std::string(c.tls_certificate.empty() ? "certificate" : "private key") +
                 " is not; set [tls] certificate = \"/path/fullchain.pem\" and private_key = \"/path/key.pem\" "
                 "(or --tls-cert / --tls-key), or remove " + which);
    }
    // UDP listeners are SO_REUSEPORT sockets (one per event loop), so a DTLS
    // listener on a UDP listener's address would bind and silently take a
    // share of its datagrams: refuse it, and a DTLS address listed twice.
    for (size_t i = 0; i < c.listen_dtls.size(); ++i) {
        const Address& d = c.listen_dtls[i];
        for (const auto& u : c.listen) {
            if (u.port == d.port && (u == d || u.is_unspecified() || d.is_unspecified()) && u.is_v4() == d.is_v4()) {
                fail("[server].listen_dtls", d.to_string() + " is also a UDP listener (" + u.to_string() +
                                                 "); one UDP port serves either plain TURN or DTLS, so give DTLS its own "
                                                 "port (5349 by convention)");
            }
        }
        for (size_t j = i + 1; j < c.listen_dtls.size(); ++j) {
            if (d == c.listen_dtls[j]) {
                fail("[server].listen_dtls", d.to_string() + " is listed twice");
            }
        }
    }
    // A UDP listener address listed twice would be bound twice per loop
    // (SO_REUSEPORT lets it) and offered twice to clients.
    for (size_t i = 0; i < c.listen.size(); ++i) {
        for (size_t j = i + 1; j < c.listen.size(); ++j) {
            if (c.listen[i] == c.listen[j]) {
                fail("[server].listen", c.listen[i].to_string() + " is listed twice");
            }
        }
    }
    // A listener address is one socket: the same IP and port twice in a
    // list, or in the TCP and the TLS list, could not both be bound.
    {
        std::vector<Address> stream = c.listen_tcp;
        stream.insert(stream.end(), c.listen_tls.begin(), c.listen_tls.end());
        for (size_t i = 0; i < stream.size(); ++i) {
            for (size_t j = i + 1; j < stream.size(); ++j) {
                if (stream[i] == stream[j]) {
                    fail(i < c.listen_tcp.size() && j >= c.listen_tcp.size() ? "[server].listen_tls" : "[server].listen_tcp",
                         stream[i].to_string() + " is listed twice for TCP/TLS; one TCP port serves either plain "
                         "TCP or TLS, so give TLS its own port (5349 by convention)");
                }
            }
        }
    }
    // PROXY protocol: each listener one of the TCP/TLS ones, and the proxies
    // trusted to name clients. Without that list any client that reached
    // such a listener directly could claim any source address.
    for (size_t i = 0; i < c.tcp_proxy_protocol.size(); ++i) {
        const Address& p = c.tcp_proxy_protocol[i];
        if (std::find(c.listen_tcp.begin(), c.listen_tcp.end(), p) == c.listen_tcp.end() &&
            std::find(c.listen_tls.begin(), c.listen_tls.end(), p) == c.listen_tls.end()) {
            fail("[tcp].proxy_protocol", p.to_string() + " is not one of [server].listen_tcp or listen_tls; list the TCP "
                                         "or TLS listeners the proxy connects to, written as they are there");
        }
        for (size_t j = i + 1; j < c.tcp_proxy_protocol.size(); ++j) {
            if (p == c.tcp_proxy_protocol[j]) {
                fail("[tcp].proxy_protocol", p.to_string() + " is listed twice");
            }
        }
    }
    if (!c.tcp_proxy_protocol.empty() && c.tcp_proxy_protocol_from.empty()) {
        fail("[tcp].proxy_protocol_from", "is empty but [tcp].proxy_protocol is set; list the proxies' addresses "
                                          "(e.g. [\"10.0.0.5/32\"]): only they may name a client in a PROXY header");
    }
    if (c.tcp_proxy_protocol.empty() && !c.tcp_proxy_protocol_from.empty()) {
        fail("[tcp].proxy_protocol_from", "is set but [tcp].proxy_protocol names no listener; add the TCP or TLS "
                                          "listeners the proxies connect to, or remove proxy_protocol_from");
    }
    if (!c.alternate_ips.empty() || c.alternate_port != 0) {
        const std::string k = "[server].alternate_ips";
        if (c.alternate_ips.empty() || c.alternate_port == 0) {
            fail(c.alternate_ips.empty() ? k : "[server].alternate_port",
                 "NAT behaviour discovery (RFC 5780) needs both alternate_ips and alternate_port; set both or neither");
        }
        if (second_of_a_family(c.alternate_ips)) {
            fail(k, "at most one address per family");
        }
        for (const auto& a : c.alternate_ips) {
            int listeners = 0;
            for (const auto& l : c.listen) {
                if (l.family != a.family) {
                    continue;
                }
                ++listeners;
                if (l.is_unspecified()) {
                    fail(k, "needs a concrete UDP listener of its family, not the wildcard " + l.to_string());
                }
                if (l.with_port(0) == a) {
                    fail(k, a.ip_string() + " is the listener's own IP; the alternate must be a second IP of this host");
                }
                if (l.port == c.alternate_port) {
                    fail("[server].alternate_port", std::to_string(c.alternate_port) + " is the listener's own port; use another (e.g. " +
                                                        std::to_string(l.port + 1) + ")");
                }
            }
            if (listeners != 1) {
                fail(k, "needs exactly one UDP listener of the family of " + a.ip_string() + " in [server].listen (has " +
                            std::to_string(listeners) + ")");
            }
        }
    }
    // RFC 5780's extra UDP listeners are SO_REUSEPORT sockets too.
    for (const auto& d : c.listen_dtls) {
        if (c.alternate_port != 0 && d.port == c.alternate_port) {
            fail("[server].listen_dtls", d.to_string() + " uses alternate_port, where RFC 5780 answers Binding over "
                                                         "plain UDP; give DTLS another port");
        }
        for (const auto& alt : c.alternate_ips) {
            for (const auto& u : c.listen) {
                if (u.port == d.port && alt.is_v4() == d.is_v4() && (d.is_unspecified() || d.with_port(0) == alt.with_port(0))) {
                    fail("[server].listen_dtls", d.to_string() + " is also an RFC 5780 listener (" + alt.ip_string() +
                                                     " with the UDP port); give DTLS another port");
                }
            }
        }
    }
    if (c.relay_port_min > c.relay_port_max) {
        fail("[server].relay_port_min", "greater than relay_port_max (" + std::to_string(c.relay_port_max) +
                                            "); swap them");
    }
    if (c.realm.empty() || c.realm.size() > 763) {
        fail("[server].realm", "must be 1..763 bytes");
    }
    if (c.software.size() > 763) {
        fail("[server].software", "must be at most 763 bytes");
    }
    if (c.users.empty() && c.rest_secrets.empty()) {
        // A secrets file that is empty (by mistake, or half written) never
        // brings the demo user back.
        const bool files = !c.users_file.empty() || !c.rest_secrets_file.empty();
        if (have_file || files) {
            fail("[auth]", std::string("no credentials") +
                               (files ? " (users_file / rest_secrets_file have no entries)" : "") +
                               "; set users = [\"name:password\"] or rest_secrets = [\"...\"], or name a users_file "
                               "or rest_secrets_file with one entry per line");
        }
        c.users.emplace_back(kDemoUser, kDemoPassword);
    }
    if (c.rest_secrets.size() > kMaxRestSecrets) {
        fail("[auth].rest_secrets", "at most 8 secrets (newest first); drop the oldest");
    }
    for (const auto& s : c.rest_secrets) {
        if (s.empty()) {
            fail("[auth].rest_secrets", "a secret is empty");
        }
    }
    if (c.bandwidth_bps > 0 && c.bandwidth_bps < 8) {
        // The buckets count bytes: below 8 bit/s the socket path's rate would
        // round to 0 (unlimited) while the dataplane's would not.
        fail("[allocation].bandwidth_bps", "must be 0 (unlimited) or at least 8 (one byte per second), not " +
                                               std::to_string(c.bandwidth_bps));
    }
    if (c.default_lifetime_s > c.max_lifetime_s) {
        fail("[allocation].default_lifetime_s", "greater than max_lifetime_s (" +
                                                     std::to_string(c.max_lifetime_s) + ")");
    }
    if (c.log_level != "trace" && c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
        c.log_level != "error") {
        fail("[log].level", "\"" + c.log_level + "\" is not one of trace|debug|info|warn|error");
    }
    if (c.log_format != "text" && c.log_format != "json") {
        fail("[log].format", "\"" + c.log_format + "\" is not one of text|json");
    }
    if (!c.metrics_listen.empty()) {
        auto a = Address::parse(c.metrics_listen);
        if (!a || a->port == 0) {
            fail("[metrics].listen", "\"" + c.metrics_listen +
                                         "\" must be \"IP:port\" (e.g. \"127.0.0.1:9641\") or \"\" to disable");
        }
    }
    validate_redirect(c);
    // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    if (c.dataplane_socket.size() > 107) {
        fail("[dataplane].socket", "path longer than 107 bytes (unix socket limit); use a shorter path");
    }
    if (c.admin_socket.size() > 107) {
        fail("[admin].socket", "path longer than 107 bytes (unix socket limit); use a shorter path");
    }
    if (!c.admin_socket.empty() && c.admin_socket == c.dataplane_socket) {
        fail("[admin].socket", "is the same path as [dataplane].socket; give each its own");
    }
}

// `path`: the file `text` was read from (load_config), if any.
std::variant<Config, ConfigError> load_impl(std::optional<std::string_view> text, const std::string& origin,
                                            const CliOverrides& cli, const std::optional<std::string>& path) {
    Config c;
    try {
        if (text) {
            toml::table root;
            try {
                root = toml::parse(*text, origin);
            } catch (const toml::parse_error& e) {
                std::ostringstream os;
                os << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
                   << e.description();
                return ConfigError{os.str()};
            }
            apply_toml(root, c);
            // The configuration file holds secrets itself (even when
            // --user / --rest-secret replace them). The built-in demo
            // credential alone (deploy/turnrelay.toml, which the start line
            // flags as the demo's) is no secret to protect.
            // (c.users and c.rest_secrets hold the file's own entries here,
            // before the command line and the secrets files.)
            const bool inline_secrets = !c.rest_secrets.empty() ||
                                        !std::all_of(c.users.begin(), c.users.end(), is_demo_credential);
            if (path && inline_secrets) {
                c.secret_files.push_back(*path);
            }
        }
        apply_cli(cli, c);
        apply_secret_files(cli, c);
        for (const auto* f : {&c.users_file, &c.rest_secrets_file}) {
            if (!f->empty()) {
                c.secret_files.push_back(*f);
            }
        }
        validate(c, text.has_value());
    } catch (const Fail& f) {
        return ConfigError{f.message};
    }
    return c;
}

}  // namespace

std::variant<Config, ConfigError> load_config_text(std::string_view toml_text, const CliOverrides& cli) {
    return load_impl(toml_text, "config", cli, std::nullopt);
}

std::variant<Config, ConfigError> load_config(const CliOverrides& cli) {
    if (!cli.config_path) {
        return load_impl(std::nullopt, "", cli, std::nullopt);
    }
    std::error_code ec;
    if (std::filesystem::exists(*cli.config_path, ec) && !std::filesystem::is_regular_file(*cli.config_path, ec)) {
        return ConfigError{"--config: \"" + *cli.config_path + "\" is not a regular file; give the path of the TOML file"};
    }
    std::ifstream in(*cli.config_path);
    if (!in) {
        return ConfigError{"--config: cannot read \"" + *cli.config_path + "\"; check the path and permissions"};
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    return load_impl(std::string_view(text), *cli.config_path, cli, cli.config_path);
}

std::vector<OpenSecretFile> secret_files_open_to_others(const Config& c) {
    std::vector<OpenSecretFile> out;
    for (const auto& path : c.secret_files) {
        struct stat st{};
        if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
            out.push_back({path, static_cast<uint32_t>(st.st_mode & 07777)});
        }
    }
    return out;
}

}  // namespace turn::cp
