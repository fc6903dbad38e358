#include "core/shared.h"

#include <algorithm>

#include "core/nat_behavior.h"

namespace turn::cp {

Shared::Shared(const Config& c, std::unique_ptr<auth::NonceCodec> n)
    : config(c), credentials(std::make_shared<auth::CredentialStore>(c.realm)), nonces(std::move(n)),
      policy(make_policy(c)),
      socket_only_peer_ips(make_socket_only_peer_ips(c)),
      // Config::seed: 0 (production) draws the seeds from std::random_device
      // (the ports' from RAND_bytes, PortAllocator).
      ports(c.relay_port_min, c.relay_port_max, uint64_t{c.reservation_lifetime_s} * 1000, c.seed),
      quota(c.max_per_user, c.max_total),
      unauth_limiter(c.unauth_per_ip_per_s, SourceRateLimiter::kDefaultMaxSources, c.seed),
      accept_limiter(c.tcp_accepts_per_ip_per_s, SourceRateLimiter::kDefaultMaxSources, c.seed),
      dtls_handshake_limiter(c.dtls_handshakes_per_ip_per_s, SourceRateLimiter::kDefaultMaxSources, c.seed) {}

std::shared_ptr<auth::CredentialStore> Shared::make_credentials(const Config& c, std::string& error) {
    auto store = std::make_shared<auth::CredentialStore>(c.realm);
    for (const auto& [user, pass] : c.users) {
        if (!store->add_user(user, pass)) {
            error = "[auth].users: the password of \"" + user +
                    "\" is not a valid OpaqueString (RFC 8265: no control characters, not empty)";
            return nullptr;
        }
    }
    for (const auto& secret : c.rest_secrets) {
        if (!store->add_secret(secret)) {
            error = "[auth].rest_secrets: a secret was rejected (too many? at most 8)";
            return nullptr;
        }
    }
    return store;
}

std::vector<Address> Shared::own_listeners(const Config& c) {
    std::vector<Address> own = c.listen;
    for (const auto* more : {&c.listen_tcp, &c.listen_tls, &c.listen_dtls}) {
        own.insert(own.end(), more->begin(), more->end());
    }
    const auto alternates = nat_extra_listeners(c);
    own.insert(own.end(), alternates.begin(), alternates.end());
    if (const auto m = Address::parse(c.metrics_listen)) {
        own.push_back(*m);
    }
    // Behind a NAT the same ports are reached on the external IPs too.
    const size_t local = own.size();
    for (const auto& e : c.external_ips) {
        for (size_t i = 0; i < local; ++i) {
            if (own[i].family == e.family) {
                own.push_back(e.with_port(own[i].port));
            }
        }
    }
    return own;
}

std::vector<Address> Shared::make_socket_only_peer_ips(const Config& c) {
    // own_listeners() names the listeners' ports on the external IPs too:
    // those IPs are left out below, like the external IPs themselves.
    std::vector<Address> own = own_listeners(c);
    own.insert(own.end(), c.relay_ips.begin(), c.relay_ips.end());
    std::vector<Address> out;
    for (const Address& a : own) {
        const Address ip = a.normalised().with_port(0);
        auto same = [&](const Address& o) { return o.normalised().same_ip(ip); };
        // Behind a NAT a datagram from a relayed address is known by its
        // external address (Config::to_external), and the dataplane
        // translates only datagrams addressed to the external IP: a peer on
        // the relay IP stays on the socket path, which presents the sender
        // on its external address.
        const bool natted = std::any_of(c.external_ips.begin(), c.external_ips.end(),
                                        [&](const Address& e) { return e.family == ip.family; });
        const bool relay_ip = std::any_of(c.relay_ips.begin(), c.relay_ips.end(), same);
        const bool external_ip = std::any_of(c.external_ips.begin(), c.external_ips.end(), same);
        if (ip.is_unspecified() || (relay_ip && !natted) || external_ip || std::any_of(out.begin(), out.end(), same)) {
            continue;
        }
        out.push_back(ip);
    }
    return out;
}

std::shared_ptr<PeerPolicy> Shared::make_policy(const Config& c) {
    // No client may make the relay send or connect to one of its own
    // listeners of any transport (a Connect to the TLS port, a Send to the
    // DTLS port would otherwise reach the relay itself).
    std::vector<Address> own_ips = c.relay_ips;
    own_ips.insert(own_ips.end(), c.external_ips.begin(), c.external_ips.end());
    return std::make_shared<PeerPolicy>(c.allow_peers, c.deny_peers, own_listeners(c), own_ips, c.allow_private_peers);
}

namespace {
std::unique_ptr<Shared> finish(std::unique_ptr<Shared> s, std::string& error) {
    auto store = Shared::make_credentials(s->config, error);
    if (!store) {
        return nullptr;
    }
    s->credentials.set(std::move(store));
    return s;
}
}  // namespace

std::unique_ptr<Shared> Shared::create(const Config& config, std::string& error) {
    return finish(std::make_unique<Shared>(config, std::make_unique<auth::NonceCodec>(config.nonce_lifetime_s)),
                  error);
}

std::unique_ptr<Shared> Shared::create(const Config& config, std::span<const uint8_t> nonce_secret,
                                       std::string& error) {
    return finish(std::make_unique<Shared>(
                      config, std::make_unique<auth::NonceCodec>(nonce_secret, config.nonce_lifetime_s)),
                  error);
}

bool ConnectionsPerIp::try_add(const Address& ip, uint32_t max) {
    std::lock_guard<std::mutex> lock(m_);
    const Address key = SourceRateLimiter::source_key(ip);
    uint32_t& n = n_[key];
    if (n >= max) {
        if (n == 0) {
            n_.erase(key);
        }
        return false;
    }
    ++n;
    return true;
}

void ConnectionsPerIp::remove(const Address& ip) {
    std::lock_guard<std::mutex> lock(m_);
    if (auto it = n_.find(SourceRateLimiter::source_key(ip)); it != n_.end() && --it->second == 0) {
        n_.erase(it);
    }
}

}  // namespace turn::cp
