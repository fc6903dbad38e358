// State shared by every event loop of one process: configuration, credentials,
// the nonce secret, peer policy, relayed ports and quotas. Everything here is
// either immutable after start-up or internally locked / atomic, and none of
// it is touched per relayed packet.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "auth/credential_store.h"
#include "auth/nonce.h"
#include "core/config.h"
#include "core/mobility.h"
#include "core/peer_policy.h"
#include "core/port_allocator.h"
#include "core/quota.h"
#include "core/reloadable.h"

namespace turn::cp {

// TCP/TLS client connections per client source, all loops together
// ([tcp].max_connections_per_ip): taken at accept, given back at close. A
// source is an IPv4 address or an IPv6 /64 (one host's share of a network,
// as for the 401/438 limiter). A mutex per accept and close; nothing per
// message.
class ConnectionsPerIp {
public:
    bool try_add(const Address& ip, uint32_t max);
    void remove(const Address& ip);

private:
    std::mutex m_;
    std::unordered_map<Address, uint32_t, AddressHash> n_;
};

struct Shared {
    // Fails (returns nullptr with `error` set) if a configured password is
    // rejected by OpaqueString or a secret cannot be added.
    static std::unique_ptr<Shared> create(const Config& config, std::string& error);
    // For tests: a fixed nonce secret instead of a random one.
    static std::unique_ptr<Shared> create(const Config& config, std::span<const uint8_t> nonce_secret,
                                          std::string& error);

    Shared(const Config& c, std::unique_ptr<auth::NonceCodec> n);

    // [auth] users and rest_secrets as a credential store; nullptr with
    // `error` naming the key when a password or secret is refused.
    static std::shared_ptr<auth::CredentialStore> make_credentials(const Config& c, std::string& error);
    static std::shared_ptr<PeerPolicy> make_policy(const Config& c);
    // Every transport address the relay listens on: UDP, TCP, TLS and DTLS
    // listeners, the RFC 5780 alternates and the metrics endpoint.
    static std::vector<Address> own_listeners(const Config& c);
    // The relay's own IPs whose peers stay on the socket path (normalised,
    // port 0; wildcards left out): the IPs of own_listeners(), which the
    // kernel delivers locally and the dataplane would send to its router,
    // and the relay IP of a family with an external IP (a datagram between
    // two relayed addresses is then known by its external source, and the
    // dataplane translates only datagrams addressed to the external IP). A
    // relay IP without one is not among them: the dataplane takes such
    // peers' packets from one allocation to the other itself. Nor are the
    // external IPs (the listeners' ports on them included): once it has
    // confirmed them (ipc::ExternalIps), the dataplane takes a datagram to a
    // relayed port there to that allocation itself, and IpcServer keeps
    // such peers from it until then (IpcServer::set_external_ips).
    static std::vector<Address> make_socket_only_peer_ips(const Config& c);

    // Start-up configuration. What SIGHUP may replace (core/config_reload.h) is read
    // through `credentials` and `policy`, not from here.
    Config config;
    Reloadable<auth::CredentialStore> credentials;
    std::unique_ptr<auth::NonceCodec> nonces;
    Reloadable<PeerPolicy> policy;
    const std::vector<Address> socket_only_peer_ips;  // make_socket_only_peer_ips(config)
    PortAllocator ports;
    AllocationQuota quota;
    SourceRateLimiter unauth_limiter;  // 401/438 answers per source, all loops together
    // New TCP/TLS client connections per source, all loops together: a
    // connect-handshake-close flood is closed at accept, before any TLS work.
    SourceRateLimiter accept_limiter;
    std::atomic<bool> draining{false};
    // For the metrics (app/main.cc sets them): whether the last reload
    // (SIGHUP, turn-ctl reload) applied everything, the time of the last one
    // that did (of the start until then), and the notAfter of the TLS
    // certificate in use (0: no TLS listener); seconds since the epoch.
    std::atomic<bool> last_reload_ok{true};
    std::atomic<int64_t> last_reload_success_unix{0};
    std::atomic<int64_t> tls_not_after_unix{0};
    // The first peer refused for being private was logged
    // (Server::peer_permitted): once per process, naming the key to set.
    std::atomic<bool> private_peer_warned{false};
    // RFC 8016 tickets: sealed under this process's key, opened by any loop.
    MobilityTickets tickets;
    // The next allocation id. Ids are unique across the process (one Shared,
    // all loops), so the offload and logs can name an allocation without its
    // 5-tuple; restoring a saved allocation moves this past its id. Here
    // rather than in a global so that each Shared (a test's, a fuzz input's)
    // numbers its allocations from 1; turn-relay starts it from the time
    // (app/main.cc), so that ids are unique across its processes too.
    std::atomic<uint64_t> next_allocation_id{1};
    // Live gauges: allocations holding a relayed address of each family.
    std::atomic<int64_t> allocations_v4{0};
    std::atomic<int64_t> allocations_v6{0};
    std::atomic<int64_t> allocations{0};
    // Open TCP/TLS client connections of all loops ([tcp].max_connections).
    std::atomic<int64_t> connections{0};
    ConnectionsPerIp connections_per_ip;
    // RFC 6062 peer connections of all loops (also bounded by [tcp].max_connections).
    std::atomic<int64_t> peer_connections{0};
    // DTLS sessions of all loops past the cookie exchange ([dtls]
    // max_sessions / max_sessions_per_ip / handshakes_per_ip_per_s).
    std::atomic<int64_t> dtls_sessions{0};
    ConnectionsPerIp dtls_sessions_per_ip;
    SourceRateLimiter dtls_handshake_limiter;
};

}  // namespace turn::cp
