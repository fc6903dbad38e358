#include "core/peer_policy.h"

#include <utility>

namespace turn::cp {

namespace {
bool in_any(const std::vector<Prefix>& ranges, const Address& a) {
    for (const auto& p : ranges) {
        if (p.contains(a)) {
            return true;
        }
    }
    return false;
}
}  // namespace

const std::vector<Prefix>& PeerPolicy::default_denied() {
    static const std::vector<Prefix> ranges = [] {
        std::vector<Prefix> r;
        for (const char* s : {
                 "0.0.0.0/8",        // "this network"; 0.0.0.0 reaches the host itself on Linux
                 "127.0.0.0/8",      // loopback
                 "169.254.0.0/16",   // link-local
                 "224.0.0.0/4",      // multicast
                 "240.0.0.0/4",      // reserved, includes 255.255.255.255 broadcast
                 "::/128",           // unspecified
                 "::1/128",          // loopback
                 "::/96",            // deprecated IPv4-compatible (::a.b.c.d)
                 "fe80::/10",        // link-local
                 "ff00::/8",         // multicast
             }) {
            r.push_back(*Prefix::parse(s));
        }
        return r;
    }();
    return ranges;
}

PeerPolicy::PeerPolicy(std::vector<Prefix> allow, std::vector<Prefix> deny, std::vector<Address> own_listen,
                       std::vector<Address> own_relay_ips)
    : allow_(std::move(allow)), deny_(std::move(deny)) {
    for (const auto& l : own_listen) {
        own_listen_.push_back(l.normalised());
        own_ips_.push_back(l.normalised().with_port(0));
    }
    for (const auto& r : own_relay_ips) {
        own_ips_.push_back(r.normalised().with_port(0));
    }
}

bool PeerPolicy::is_own_ip(const Address& a) const {
    for (const auto& o : own_ips_) {
        if (o.same_ip(a)) {
            return true;
        }
    }
    return false;
}

PeerVerdict PeerPolicy::check_ip(const Address& peer) const {
    const Address a = peer.normalised();
    if (a.family == Family::kNone) {
        return PeerVerdict::kDeniedByDefault;
    }
    if (in_any(deny_, a)) {
        return PeerVerdict::kDeniedByOperator;
    }
    if (in_any(allow_, a)) {
        return PeerVerdict::kPermitted;
    }
    if (in_any(default_denied(), a)) {
        return PeerVerdict::kDeniedByDefault;
    }
    if (is_own_ip(a)) {
        return PeerVerdict::kDeniedSelf;
    }
    return PeerVerdict::kPermitted;
}

PeerVerdict PeerPolicy::check_transport(const Address& peer) const {
    const PeerVerdict v = check_ip(peer);
    if (v != PeerVerdict::kPermitted) {
        return v;
    }
    const Address a = peer.normalised();
    // A wildcard listener (0.0.0.0 / ::) owns its port on every local IP.
    for (const auto& l : own_listen_) {
        if (l.port == a.port && (l.same_ip(a) || (l.is_unspecified() && l.family == a.family))) {
            return PeerVerdict::kDeniedSelf;
        }
    }
    return PeerVerdict::kPermitted;
}

}  // namespace turn::cp
