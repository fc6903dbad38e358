#include "core/config_reload.h"

#include <functional>
#include <tuple>

namespace turn::cp {

namespace {

// The keys a reload does not apply, by the name an operator looks for.
struct Fixed {
    const char* key;
    std::function<bool(const Config&, const Config&)> same;
};

template <typename F>
Fixed fixed(const char* key, F fields) {
    return Fixed{key, [fields](const Config& a, const Config& b) { return fields(a) == fields(b); }};
}

const std::vector<Fixed>& fixed_keys() {
    static const std::vector<Fixed> keys = {
        fixed("[server].listen / listen_tcp / listen_tls / listen_dtls",
              [](const Config& c) { return std::tie(c.listen, c.listen_tcp, c.listen_tls, c.listen_dtls); }),
        fixed("[server].relay_ips / external_ips", [](const Config& c) { return std::tie(c.relay_ips, c.external_ips); }),
        fixed("[server].alternate_ips / alternate_port", [](const Config& c) { return std::tie(c.alternate_ips, c.alternate_port); }),
        fixed("[server].relay_port_min / relay_port_max",
              [](const Config& c) { return std::tie(c.relay_port_min, c.relay_port_max); }),
        fixed("[server].realm", [](const Config& c) { return std::tie(c.realm); }),
        fixed("[server].software / threads / strict_channel_range / dscp",
              [](const Config& c) { return std::tie(c.software, c.threads, c.strict_channel_range, c.dscp); }),
        fixed("[auth].nonce_lifetime_s", [](const Config& c) { return std::tie(c.nonce_lifetime_s); }),
        fixed("[tcp]", [](const Config& c) {
            return std::tie(c.tcp_max_connections, c.tcp_max_connections_per_ip, c.tcp_idle_timeout_s,
                            c.tcp_send_buffer_bytes, c.tcp_accepts_per_ip_per_s, c.tcp_proxy_protocol,
                            c.tcp_proxy_protocol_from);
        }),
        fixed("[dtls]", [](const Config& c) {
            return std::tie(c.dtls_max_sessions, c.dtls_max_sessions_per_ip, c.dtls_idle_timeout_s,
                            c.dtls_handshakes_per_ip_per_s, c.dtls_mtu);
        }),
        fixed("[allocation]", [](const Config& c) {
            return std::tie(c.default_lifetime_s, c.max_lifetime_s, c.max_per_user, c.max_total, c.bandwidth_bps,
                            c.reservation_lifetime_s, c.max_permissions, c.max_channels, c.mobility);
        }),
        fixed("[policy].unauth_per_ip_per_s", [](const Config& c) { return std::tie(c.unauth_per_ip_per_s); }),
        fixed("[metrics]", [](const Config& c) { return std::tie(c.metrics_listen); }),
        fixed("[dataplane]", [](const Config& c) { return std::tie(c.dataplane_socket); }),
        fixed("[state]", [](const Config& c) { return std::tie(c.state_dir, c.state_save_interval_ms); }),
        fixed("[log]", [](const Config& c) { return std::tie(c.log_level, c.log_format); }),
        fixed("[drain]", [](const Config& c) { return std::tie(c.drain_deadline_s); }),
        fixed("[admin]", [](const Config& c) { return std::tie(c.admin_socket); }),
        fixed("[redirect]", [](const Config& c) {
            return std::tie(c.redirect_servers, c.redirect_tls_servers, c.redirect_tls_domain, c.redirect_when);
        }),
    };
    return keys;
}

}  // namespace

ReloadOutcome apply_reload(Shared& shared, Config& running, const Config& next) {
    ReloadOutcome out;
    for (const auto& f : fixed_keys()) {
        if (!f.same(running, next)) {
            out.need_restart.emplace_back(f.key);
        }
    }
    const bool auth_changed = running.users != next.users || running.rest_secrets != next.rest_secrets;
    const bool ranges_changed = running.allow_peers != next.allow_peers || running.deny_peers != next.deny_peers;
    const bool private_changed = running.allow_private_peers != next.allow_private_peers;
    std::shared_ptr<auth::CredentialStore> store;
    if (auth_changed) {
        // The realm stays the running one (a new realm needs a restart).
        Config c = next;
        c.realm = running.realm;
        store = Shared::make_credentials(c, out.error);
        if (!store) {
            return out;  // nothing applied
        }
    }
    if (auth_changed) {
        shared.credentials.set(std::move(store));
        if (running.users != next.users) {
            out.applied.emplace_back("[auth].users");
        }
        if (running.rest_secrets != next.rest_secrets) {
            out.applied.emplace_back("[auth].rest_secrets");
        }
        running.users = next.users;
        running.rest_secrets = next.rest_secrets;
    }
    // The files were read by load_config; what they hold is in users and
    // rest_secrets above, so a new path alone changes nothing else.
    running.users_file = next.users_file;
    running.rest_secrets_file = next.rest_secrets_file;
    running.secret_files = next.secret_files;
    if (ranges_changed || private_changed) {
        Config c = running;  // the running listeners and relay IPs stay denied as peers
        c.allow_peers = next.allow_peers;
        c.deny_peers = next.deny_peers;
        c.allow_private_peers = next.allow_private_peers;
        shared.policy.set(Shared::make_policy(c));
        if (ranges_changed) {
            out.applied.emplace_back("[policy].allow_peers / deny_peers");
        }
        if (private_changed) {
            out.applied.emplace_back("[policy].allow_private_peers");
        }
        running.allow_peers = next.allow_peers;
        running.deny_peers = next.deny_peers;
        running.allow_private_peers = next.allow_private_peers;
    }
    if (running.tls_certificate != next.tls_certificate || running.tls_private_key != next.tls_private_key) {
        out.applied.emplace_back("[tls].certificate / private_key");
        running.tls_certificate = next.tls_certificate;
        running.tls_private_key = next.tls_private_key;
    }
    return out;
}

}  // namespace turn::cp
