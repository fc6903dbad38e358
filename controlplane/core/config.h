// Control-plane configuration: the TOML file (docs/CONFIGURATION.md) plus
// command-line overrides, validated once at start-up. A bad value is a fatal
// start-up error whose message names the key and says what to fix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "net/address.h"

namespace turn::cp {

struct Config {
    // [server]
    std::vector<Address> listen;      // UDP listeners
    std::vector<Address> listen_tcp;  // TURN over TCP (RFC 8656 section 3.1)
    std::vector<Address> listen_tls;  // TURN over TLS over TCP ("turns:")
    std::vector<Address> listen_dtls; // TURN over DTLS over UDP ("turns:...?transport=udp", RFC 7350)
    std::vector<Address> relay_ips;   // at most one per family
    // Behind a 1:1 NAT (a cloud VM's public IP): the address clients and
    // peers reach the relay IP of the same family at, at most one per
    // family. XOR-RELAYED-ADDRESS carries it; a peer address on it is one of
    // this relay's own relayed addresses, reached directly (relay-to-relay
    // without the NAT's hairpin, which many do not do), and datagrams from
    // the relay IP itself come from it (advertised(), to_internal(),
    // to_external()).
    std::vector<Address> external_ips;
    // RFC 5780 NAT behaviour discovery: a second IP (at most one per family)
    // and a second port; with both, Binding is answered on the four
    // combinations with the family's UDP listener (core/nat_behavior.h).
    std::vector<Address> alternate_ips;
    uint16_t alternate_port = 0;
    uint16_t relay_port_min = 49152;
    uint16_t relay_port_max = 65535;
    std::string realm = "turnrelay.local";
    std::string software = "turnrelay";
    unsigned threads = 0;             // 0 = one event loop per core
    // RFC 8656 channels are 0x4000-0x4FFF; RFC 5766 allowed up to 0x7FFF and
    // clients still use it (coturn's turnutils_uclient). false accepts both.
    bool strict_channel_range = false;
    // DSCP of relayed UDP data: -1 keeps the received one (RFC 8656 section
    // 14), 0..63 sets it; ECN is always kept. As a rule on the received
    // TOS / Traffic Class byte, (received & tos_keep()) | tos_set(), which
    // relayed_tos() applies and the dataplane gets as ipc::Settings.
    int dscp = -1;
    uint8_t tos_keep() const { return dscp < 0 ? 0xFF : 0x03; }
    uint8_t tos_set() const { return dscp < 0 ? 0 : static_cast<uint8_t>(dscp << 2); }
    uint8_t relayed_tos(uint8_t received) const { return static_cast<uint8_t>((received & tos_keep()) | tos_set()); }
    // [auth]: users and rest_secrets hold the inline entries (the key, or
    // --user / --rest-secret) followed by those of users_file and
    // rest_secrets_file, which load_config reads (again on every reload).
    std::vector<std::pair<std::string, std::string>> users;
    std::vector<std::string> rest_secrets;  // newest first
    std::string users_file;         // one "name:password" per line, "" = none
    std::string rest_secrets_file;  // one secret per line, newest first, "" = none
    uint32_t nonce_lifetime_s = 3600;
    // [tls]: PEM files, read at start-up
    std::string tls_certificate;  // the chain, leaf first
    std::string tls_private_key;
    // [tcp]: client connections of listen_tcp and listen_tls
    uint32_t tcp_max_connections = 10000;  // whole process; more are closed at accept
    uint32_t tcp_max_connections_per_ip = 1000;  // from one client IP
    uint32_t tcp_idle_timeout_s = 30;      // closed after this long without an allocation (since accept or its end; messages do not count)
    uint32_t tcp_send_buffer_bytes = 256 * 1024;  // queued output per connection; beyond it output is dropped
    uint32_t tcp_accepts_per_ip_per_s = 200;  // new connections per client source and second, 0 = no limit
    // PROXY protocol (net/proxy_header.h): listeners of listen_tcp /
    // listen_tls behind a layer-4 proxy, whose connections start with a
    // header naming the client; accepted only from proxy_protocol_from.
    std::vector<Address> tcp_proxy_protocol;
    std::vector<Prefix> tcp_proxy_protocol_from;
    bool proxy_protocol_on(const Address& listener) const;
    // [dtls]: sessions of listen_dtls (io/dtls_io.h)
    uint32_t dtls_max_sessions = 10000;        // whole process; handshakes beyond it are dropped
    uint32_t dtls_max_sessions_per_ip = 1000;  // from one client source (IPv4 address, IPv6 /64)
    uint32_t dtls_idle_timeout_s = 30;         // without an allocation, closed after this long without a record
    uint32_t dtls_handshakes_per_ip_per_s = 200;  // new sessions per client source and second, 0 = no limit
    uint32_t dtls_mtu = 1200;                  // largest datagram of a handshake flight (IP + UDP included)
    // [allocation]
    uint32_t default_lifetime_s = 600;
    uint32_t max_lifetime_s = 3600;
    uint32_t max_per_user = 10;
    uint32_t max_total = 10000;
    uint64_t bandwidth_bps = 0;       // per allocation, 0 = unlimited
    uint32_t reservation_lifetime_s = 30;  // EVEN-PORT R-bit reservations
    // Bounds on per-allocation state an authenticated client can create
    // (beyond them CreatePermission / ChannelBind get 508).
    uint32_t max_permissions = 1000;
    uint32_t max_channels = 1000;
    uint32_t max_tcp_peer_connections = 64;  // RFC 6062: peer connections per TCP allocation (Connect + accepted)
    // RFC 8016: clients that ask (MOBILITY-TICKET in Allocate) may take their
    // UDP allocation to a new address; false ignores the request.
    bool mobility = true;
    // [policy]
    std::vector<Prefix> allow_peers;
    std::vector<Prefix> deny_peers;
    bool allow_private_peers = false;  // core/peer_policy.h: private ranges denied unless true
    uint32_t unauth_per_ip_per_s = 20;
    // [metrics]
    std::string metrics_listen = "127.0.0.1:9641";  // "" disables
    // [dataplane]
    std::string dataplane_socket;  // unix SOCK_SEQPACKET path the dataplane connects to; "" = no offload
    // [state]: allocations saved for the next control plane (restarts); "" = off
    std::string state_dir;
    uint32_t state_save_interval_ms = 1000;
    // [log]
    std::string log_level = "info";
    std::string log_format = "text";
    // [drain]
    uint32_t drain_deadline_s = 30;
    // [admin]: unix socket of the admin interface (tools/ctl turn-ctl), "" = off
    std::string admin_socket;
    // [redirect]: Allocate answered with 300 Try Alternate + ALTERNATE-SERVER
    // (RFC 8489 section 10, RFC 8656 section 7.2) naming another relay of the
    // client's address family, round robin; no entry of the family: served here.
    enum class RedirectWhen : uint8_t { kDraining, kAlways };
    std::vector<Address> redirect_servers;      // for UDP and TCP clients
    std::vector<Address> redirect_tls_servers;  // for TLS and DTLS clients
    std::string redirect_tls_domain;            // ALTERNATE-DOMAIN for TLS and DTLS clients, "" = none
    RedirectWhen redirect_when = RedirectWhen::kDraining;

    // Not a configuration key: tests and fuzz targets set it to replay a run.
    // Non-zero seeds every pseudo-random choice of the protocol core that does
    // not come from OpenSSL's RAND_bytes: relayed ports and RESERVATION-TOKENs
    // (PortAllocator), which entry a full rate-limiter shard replaces
    // (SourceRateLimiter), and the transaction ids of Data and
    // ConnectionAttempt indications and the CONNECTION-IDs (Server). 0, as
    // load_config() always leaves it: seeds from std::random_device and the
    // Server's address, as in production.
    uint64_t seed = 0;

    // Not a configuration key: the files credentials were read from (the
    // --config file when it sets [auth].users or rest_secrets, users_file,
    // rest_secrets_file), for secret_files_open_to_others().
    std::vector<std::string> secret_files;

    // Relay address of a family, if configured.
    std::optional<Address> relay_ip(Family f) const;
    // Family `f`'s relay IP and external IP (port 0), when it has both.
    std::optional<std::pair<Address, Address>> nat_pair(Family f) const;
    // external_ips: what a relayed address is known as outside (its
    // family's external IP, same port); a peer address on an external IP
    // as the relay IP itself (same port); a source on a relay IP whose
    // family has an external IP as that; to_internal and to_external only
    // within [relay_port_min, relay_port_max]. Each returns its argument
    // otherwise, and at once without external IPs.
    Address advertised(const Address& relayed) const;
    Address to_internal(const Address& peer) const;
    Address to_external(const Address& source) const;
    bool in_relay_range(uint16_t port) const { return port >= relay_port_min && port <= relay_port_max; }
};

// Command-line overrides; each set field replaces (lists: replace) the file's value.
// The demo credential, built in when no configuration file is given.
inline constexpr const char* kDemoUser = "demo";
inline constexpr const char* kDemoPassword = "demo-password";
inline bool is_demo_credential(const std::pair<std::string, std::string>& user) {
    return user.first == kDemoUser && user.second == kDemoPassword;
}

struct CliOverrides {
    std::optional<std::string> config_path;
    std::vector<std::string> listen;
    std::vector<std::string> listen_tcp;
    std::vector<std::string> listen_tls;
    std::vector<std::string> listen_dtls;
    std::optional<std::string> tls_certificate;
    std::optional<std::string> tls_private_key;
    std::vector<std::string> relay_ips;
    std::vector<std::string> external_ips;
    std::vector<std::string> alternate_ips;
    std::optional<unsigned> alternate_port;
    std::optional<std::string> realm;
    std::vector<std::string> users;
    std::vector<std::string> rest_secrets;
    std::optional<std::string> users_file;
    std::optional<std::string> rest_secrets_file;
    std::vector<std::string> allow_peers;
    std::optional<std::string> metrics;
    std::optional<std::string> dataplane_socket;
    std::optional<std::string> state_dir;
    std::optional<std::string> log_level;
    std::optional<unsigned> threads;
    std::optional<std::string> port_range;  // "MIN-MAX"
    std::vector<std::string> redirect_servers;
    std::vector<std::string> redirect_tls_servers;
    std::optional<std::string> redirect_when;
    std::optional<std::string> admin_socket;
};

struct ConfigError {
    std::string message;  // "[server].relay_port_min: ... (fix: ...)"
};

// Loads the TOML file (if any), applies overrides, fills demo defaults when
// nothing is configured, validates. TOML text can be given directly for tests.
std::variant<Config, ConfigError> load_config(const CliOverrides& cli);
std::variant<Config, ConfigError> load_config_text(std::string_view toml_text, const CliOverrides& cli);

// Largest [auth].users_file / rest_secrets_file read; a bigger one is a configuration error.
constexpr size_t kSecretsFileMaxBytes = size_t{1} << 20;

// A file of Config::secret_files that group or others have any access to
// (mode & 077): turn-relay warns (secrets_file_readable) and still starts,
// since a group of its own may be on purpose.
struct OpenSecretFile {
    std::string path;
    uint32_t mode = 0;  // permission bits, e.g. 0644
};
std::vector<OpenSecretFile> secret_files_open_to_others(const Config& c);

}  // namespace turn::cp
