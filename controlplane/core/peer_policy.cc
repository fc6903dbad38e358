#include "core/peer_policy.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <utility>

namespace turn::cp {

namespace {
std::vector<Prefix> prefixes(std::initializer_list<const char*> cidrs) {
    std::vector<Prefix> r;
    for (const char* s : cidrs) {
        r.push_back(*Prefix::parse(s));
    }
    return r;
}

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
    static const std::vector<Prefix> ranges = prefixes({
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
    });
    return ranges;
}

const std::vector<Prefix>& PeerPolicy::private_ranges() {
    static const std::vector<Prefix> ranges = prefixes({
        "10.0.0.0/8",      // RFC 1918
        "172.16.0.0/12",   // RFC 1918
        "192.168.0.0/16",  // RFC 1918
        "100.64.0.0/10",   // shared address space (carrier-grade NAT), RFC 6598
        "fc00::/7",        // unique local, RFC 4193
        "fec0::/10",       // site-local, deprecated (RFC 3879) but still routed inside some sites
        // Local-use IPv4/IPv6 translation (RFC 8215): a site's own NAT64,
        // which embeds an IPv4 address (a private one as easily as any) at a
        // prefix length only the site knows, so it cannot be decoded as
        // 64:ff9b::/96 is (embedded_ipv4); not globally reachable (IANA).
        "64:ff9b:1::/48",
    });
    return ranges;
}

const char* verdict_name(PeerVerdict v) {
    switch (v) {
        case PeerVerdict::kPermitted: return "";
        case PeerVerdict::kDeniedByOperator: return "operator";
        case PeerVerdict::kDeniedByDefault: return "default";
        case PeerVerdict::kDeniedSelf: return "self";
        case PeerVerdict::kDeniedPrivate: return "private";
    }
    return "";
}

PeerPolicy::PeerPolicy(std::vector<Prefix> allow, std::vector<Prefix> deny, std::vector<Address> own_listen,
                       std::vector<Address> own_relay_ips, bool allow_private)
    : allow_(std::move(allow)), deny_(std::move(deny)), allow_private_(allow_private) {
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

std::optional<Address> PeerPolicy::embedded_ipv4(const Address& a) {
    if (!a.is_v6()) {
        return std::nullopt;
    }
    const auto& b = a.ip;
    // NAT64 well-known prefix (RFC 6052): 64:ff9b::/96, IPv4 in the last 32 bits.
    static constexpr std::array<uint8_t, 12> kNat64{0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) {
        return Address::v4(&b[12], 0);
    }
    // 6to4 (RFC 3056): 2002:V4ADDR::/48.
    if (b[0] == 0x20 && b[1] == 0x02) {
        return Address::v4(&b[2], 0);
    }
    return std::nullopt;
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
    // An IPv6 address that a NAT64 or 6to4 gateway turns into an IPv4 one
    // reaches what that IPv4 address reaches: it gets the IPv4 verdict
    // (64:ff9b::7f00:1 is 127.0.0.1), unless the operator ruled on the IPv6
    // address itself above.
    if (const auto v4 = embedded_ipv4(a)) {
        return check_ip(*v4);
    }
    if (in_any(default_denied(), a)) {
        return PeerVerdict::kDeniedByDefault;
    }
    if (is_own_ip(a)) {
        return PeerVerdict::kDeniedSelf;
    }
    if (!allow_private_ && in_any(private_ranges(), a)) {
        return PeerVerdict::kDeniedPrivate;
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
