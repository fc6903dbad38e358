// Which peer addresses a client may reach through the relay (RFC 8656
// section 21.2.2 "Client-to-Peer Attacks" / coturn's CVE history).
//
// Every check first normalises IPv4-mapped IPv6 (::ffff:127.0.0.1 is
// 127.0.0.1). Order of rules:
//   1. operator deny ranges            -> denied
//   2. operator allow ranges           -> permitted (re-permits a default range,
//                                         e.g. 127.0.0.0/8 for tests)
//   3. IPv6 with an embedded IPv4 address (NAT64 64:ff9b::/96, 6to4
//      2002::/16)                      -> the embedded IPv4 address's verdict
//   4. default-denied ranges and the relay's own IPs -> denied
//   5. private ranges (RFC 1918, shared address space RFC 6598, IPv6
//      unique local RFC 4193 and the old site-local), unless allow_private
//                                      -> denied
//   6. everything else                 -> permitted
// Private ranges are denied by default because a relay's host usually sits
// in a network of such addresses (management, storage, other services) that
// its clients must not reach through it: the way into internal networks
// that TURN relays have been used for (the "TURN as a proxy" class of
// reports). A relay whose peers are on a private network (an enterprise
// deployment) sets [policy].allow_private_peers, or allows the ranges it
// serves with allow_peers.
// On paths that carry a peer port (ChannelBind, Send), the relay's own
// listening transport addresses are denied even when an allow range covers the
// IP, so a client can never make the relay feed its own STUN/TURN port.
// Relayed ports on an allowed own IP stay reachable: relay-to-relay is how two
// relay-only clients of the same server talk (both browsers in a relay-only
// call). With the default policy the own IPs are denied altogether; operators
// who want relay-to-relay add their relay IP to allow_peers.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "net/address.h"

namespace turn::cp {

enum class PeerVerdict : uint8_t {
    kPermitted,
    kDeniedByOperator,
    kDeniedByDefault,   // 0.0.0.0/8, 127/8, ::, ::1, link-local, multicast, ...
    kDeniedSelf,        // one of the relay's own addresses
    kDeniedPrivate,     // a private range (private_ranges()) without allow_private
};
// For logs and metrics: "operator", "default", "self", "private" ("" when permitted).
const char* verdict_name(PeerVerdict v);
static_assert(static_cast<size_t>(PeerVerdict::kDeniedPrivate) == 4, "Stats::kPeerDenyRules counts every verdict but kPermitted");

class PeerPolicy {
public:
    PeerPolicy(std::vector<Prefix> allow, std::vector<Prefix> deny, std::vector<Address> own_listen,
               std::vector<Address> own_relay_ips, bool allow_private = false);

    // For permissions (IP only).
    PeerVerdict check_ip(const Address& peer) const;
    // For paths with a port.
    PeerVerdict check_transport(const Address& peer) const;
    bool permitted_ip(const Address& peer) const { return check_ip(peer) == PeerVerdict::kPermitted; }
    bool permitted_transport(const Address& peer) const {
        return check_transport(peer) == PeerVerdict::kPermitted;
    }

    static const std::vector<Prefix>& default_denied();
    // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10.
    static const std::vector<Prefix>& private_ranges();
    // The IPv4 address a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address stands for.
    static std::optional<Address> embedded_ipv4(const Address& a);

private:
    bool is_own_ip(const Address& a) const;

    std::vector<Prefix> allow_;
    std::vector<Prefix> deny_;
    bool allow_private_;
    std::vector<Address> own_listen_;  // normalised, with ports
    std::vector<Address> own_ips_;     // normalised, port 0: listen + relay IPs
};

}  // namespace turn::cp
