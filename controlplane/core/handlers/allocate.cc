// Allocate (RFC 8656 section 7.2; dual-stack per RFC 8656 sections 7.2 and
// 18.11; EVEN-PORT / RESERVATION-TOKEN per section 18.8 / 18.9; TCP
// allocations per RFC 6062 section 5.1).
#include "core/server.h"

#include "core/event_log.h"
#include "stun/attributes.h"

namespace turn::cp {

constexpr uint16_t kCoturnAdditionalAddressFamily = 0x8032;

void Server::handle_allocate(const Request& r) {
    using namespace stun;
    const MessageView& m = r.msg;

    const RawAttribute* transport = m.find(attr::kRequestedTransport);
    uint8_t proto = 0;
    if (transport == nullptr || decode_requested_transport(m.value(*transport), proto) != AttrError::kOk) {
        reply_error(r, err::kBadRequest);
        return;
    }
    const bool tcp = proto == kProtoTcp;
    if (proto != kProtoUdp && !tcp) {
        reply_error(r, err::kUnsupportedTransportProtocol);  // RFC 8656: any transport the server does not offer
        return;
    }
    // RFC 8016 section 3.1, answered as coturn does: mobility that cannot be
    // had is 405 (off, or a TCP/TLS/DTLS 5-tuple, which ends with its
    // connection or session; the client may allocate without it), a ticket
    // in an Allocate must be empty.
    if (const RawAttribute* mt = m.find(attr::kMobilityTicket)) {
        if (!shared_.config.mobility || r.ft.transport != Transport::kUdp || tcp) {
            reply_error(r, err::kMobilityForbidden);
            return;
        }
        if (mt->length != 0) {
            reply_error(r, err::kBadRequest);
            return;
        }
    }
    // RFC 6062 section 5.1: a TCP allocation needs a TCP or TLS client
    // connection (its peers' data arrives on further connections; not UDP,
    // not DTLS), and the UDP-only attributes make no sense on it.
    if (tcp && (r.ft.transport == Transport::kUdp || r.ft.transport == Transport::kDtls || m.find(attr::kDontFragment) != nullptr ||
                m.find(attr::kEvenPort) != nullptr || m.find(attr::kReservationToken) != nullptr ||
                m.find(attr::kAdditionalAddressFamily) != nullptr || m.find(kCoturnAdditionalAddressFamily) != nullptr)) {
        reply_error(r, err::kBadRequest);
        return;
    }
    const RawAttribute* df = m.find(attr::kDontFragment);
    const RawAttribute* token_attr = m.find(attr::kReservationToken);
    const RawAttribute* even_attr = m.find(attr::kEvenPort);
    const RawAttribute* req_family = m.find(attr::kRequestedAddressFamily);
    const RawAttribute* add_family = m.find(attr::kAdditionalAddressFamily);
    if (add_family == nullptr) {
        // coturn (and its turnutils_uclient -Z) used the draft's code point
        // 0x8032 before RFC 8656 assigned 0x8000; comprehension-optional, so
        // honouring it as an alias is harmless.
        add_family = m.find(kCoturnAdditionalAddressFamily);
    }
    if ((df != nullptr && decode_empty(m.value(*df)) != AttrError::kOk) ||
        (token_attr != nullptr && even_attr != nullptr) ||        // section 7.2 item 4/5
        (req_family != nullptr && add_family != nullptr) ||       // section 7.2 item 6
        (token_attr != nullptr && (req_family != nullptr || add_family != nullptr))) {
        reply_error(r, err::kBadRequest);
        return;
    }
    std::array<Family, 2> families{Family::kIPv4, Family::kNone};
    if (req_family != nullptr) {
        Family f = Family::kNone;
        // A family this server does not know is 440 (section 7.2 item 6); a
        // malformed attribute is a bad request (RFC 8489 section 6.3.1).
        if (const AttrError e = decode_address_family(m.value(*req_family), f); e != AttrError::kOk) {
            reply_error(r, e == AttrError::kBadFamily ? err::kAddressFamilyNotSupported : err::kBadRequest);
            return;
        }
        families[0] = f;
    }
    if (add_family != nullptr) {
        Family f = Family::kNone;
        // ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6 (section 18.11).
        if (decode_address_family(m.value(*add_family), f) != AttrError::kOk || f != Family::kIPv6) {
            reply_error(r, err::kBadRequest);
            return;
        }
        families[1] = Family::kIPv6;
    }
    bool even = false;
    bool reserve_next = false;
    if (even_attr != nullptr) {
        // A reservation is of one port of one family: not with a second
        // family (section 7.2 item 8).
        if (decode_even_port(m.value(*even_attr), reserve_next) != AttrError::kOk ||
            (reserve_next && add_family != nullptr)) {
            reply_error(r, err::kBadRequest);
            return;
        }
        even = true;
    }
    std::optional<uint64_t> token;
    if (token_attr != nullptr) {
        uint64_t t = 0;
        if (decode_reservation_token(m.value(*token_attr), t) != AttrError::kOk) {
            reply_error(r, err::kBadRequest);
            return;
        }
        token = t;
    }
    bool bad_lifetime = false;
    uint32_t lifetime = lifetime_for(m, bad_lifetime);
    if (bad_lifetime) {
        reply_error(r, err::kBadRequest);
        return;
    }
    if (lifetime == 0) {
        lifetime = shared_.config.default_lifetime_s;
    }
    if (redirect_allocate(r)) {
        return;
    }
    // Draining (SIGTERM) with nowhere to redirect to: an administrative
    // restriction, so 403 — not 508, which would invite an immediate retry
    // with other parameters.
    if (shared_.draining.load(std::memory_order_relaxed)) {
        reply_error(r, err::kForbidden);
        return;
    }
    switch (shared_.quota.acquire(r.auth->username)) {
        case QuotaResult::kPerUser:
            stats_.quota(QuotaKind::kPerUser);
            reply_error(r, err::kAllocationQuotaReached);
            return;
        case QuotaResult::kTotal:
            // The process's limit, not this user's quota: a capacity limit
            // (RFC 8656 section 7.2), which tells the client to try another
            // server (section 7.4) rather than that its username is spent.
            stats_.quota(QuotaKind::kTotal);
            reply_error(r, err::kInsufficientCapacity);
            return;
        case QuotaResult::kOk:
            break;
    }

    std::array<RelayEndpoint, 2> relays{};
    std::array<uint16_t, 2> errors{};  // per requested family index
    uint64_t reservation = 0;
    bool any = false;
    for (size_t i = 0; i < families.size(); ++i) {
        if (families[i] == Family::kNone) {
            continue;
        }
        // EVEN-PORT and the reservation apply to the first (primary) family.
        auto g = allocations_.open_relay(families[i], i == 0 && even, i == 0 && reserve_next,
                                         i == 0 ? token : std::nullopt, df != nullptr, tcp);
        errors[i] = g.error;
        if (g.error == 0) {
            relays[family_slot(g.endpoint.addr.family)] = g.endpoint;
            if (i == 0) {
                reservation = g.reservation_token;
            }
            any = true;
        }
    }
    if (!any) {
        shared_.quota.release(r.auth->username);
        // 508 if ports ran out anywhere, else 440 (family not available).
        const uint16_t code = (errors[0] == err::kInsufficientCapacity || errors[1] == err::kInsufficientCapacity)
                                  ? err::kInsufficientCapacity
                                  : err::kAddressFamilyNotSupported;
        reply_error(r, code);
        return;
    }
    Allocation& a = allocations_.create(r.ft, r.auth->username, shared_.config.realm, relays,
                                        uint64_t{lifetime} * 1000, df != nullptr);
    a.tcp = tcp;
    // RFC 8016: a client that asked (checked above) may take this UDP
    // allocation to a new address later.
    a.mobile = m.find(attr::kMobilityTicket) != nullptr;

    MessageBuilder b = begin(r, Class::kSuccess);
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        if (const auto* rel = a.relay(f)) {
            b.add_xor_address(attr::kXorRelayedAddress, shared_.config.advertised(rel->addr));
        }
    }
    b.add_u32(attr::kLifetime, lifetime);
    if (reservation != 0) {
        b.add_u64(attr::kReservationToken, reservation);
    }
    b.add_xor_address(attr::kXorMappedAddress, r.ft.client.normalised());
    add_mobility_ticket(b, a);
    // Dual-stack request with one family refused: ADDRESS-ERROR-CODE says
    // which and why (RFC 8656 section 18.12).
    for (size_t i = 0; i < families.size(); ++i) {
        if (families[i] != Family::kNone && errors[i] != 0) {
            b.add_address_error_code(families[i], errors[i], error_reason(errors[i]));
        }
    }
    finish(r, b, 200);
}

// RFC 8489 section 10. The alternate is one of the family the client's
// request came from (section 14.15), round robin, followed by one of the
// other family if there is one ("SHOULD include an additional
// ALTERNATE-SERVER"), on the transport the client uses: TLS clients get the
// TLS alternates and, if configured, ALTERNATE-DOMAIN to check the
// alternate's certificate against (section 14.16).
//
// Two moments, because clients differ in what they can follow:
//  - the first, unauthenticated Allocate (no MESSAGE-INTEGRITY): an unsigned
//    300 without REALM or NONCE. libwebrtc (every browser) follows only this
//    one: after it has sent credentials it takes any 401 or 438 from the
//    alternate as final, and the alternate cannot verify this relay's nonce.
//    Section 10 allows it ("the error response MAY be authenticated ... use
//    cases where authentication of the response is not possible"); an
//    off-path attacker would have to guess the 96-bit transaction ID, and it
//    is rate-limited like a 401.
//  - an authenticated Allocate (a client that kept this relay's nonce): a 300
//    signed with the requester's key (section 14.8), answered once for all
//    its retransmissions (the response cache), so the client is not bounced
//    twice. The client re-authenticates at the alternate (438, fresh nonce).
bool Server::redirect_allocate(const Request& r) {
    const Config& c = shared_.config;
    const bool draining = shared_.draining.load(std::memory_order_relaxed);
    if (c.redirect_when == Config::RedirectWhen::kDraining && !draining) {
        return false;
    }
    // (D)TLS clients go to the TLS alternates (ALTERNATE-DOMAIN names their certificate).
    const bool tls = r.ft.transport == Transport::kTls || r.ft.transport == Transport::kDtls;
    const auto& servers = tls ? c.redirect_tls_servers : c.redirect_servers;
    const Family family = r.ft.client.normalised().family;
    // The n-th alternate of a family (round robin), nullptr if it has none.
    auto nth = [&servers](Family f, uint64_t n) -> const Address* {
        size_t count = 0;
        for (const auto& a : servers) {
            count += a.family == f ? 1 : 0;
        }
        if (count == 0) {
            return nullptr;
        }
        size_t pick = n % count;
        for (const auto& a : servers) {
            if (a.family == f && pick-- == 0) {
                return &a;
            }
        }
        return nullptr;
    };
    const Address* to = nth(family, redirect_next_);
    if (to == nullptr) {
        return false;
    }
    const Address* other = nth(family == Family::kIPv4 ? Family::kIPv6 : Family::kIPv4, redirect_next_);
    ++redirect_next_;
    stun::MessageBuilder b = begin(r, stun::Class::kError);
    b.add_error_code(stun::err::kTryAlternate);
    b.add_address(stun::attr::kAlternateServer, *to);
    if (other != nullptr) {
        b.add_address(stun::attr::kAlternateServer, *other);
    }
    if (tls && !c.redirect_tls_domain.empty()) {
        b.add_text(stun::attr::kAlternateDomain, c.redirect_tls_domain);
    }
    log_event(LogLevel::kInfo, "allocation_redirected",
              {{"client", r.ft.client.to_string()}, {"user", r.auth != nullptr ? r.auth->username : ""},
               {"to", to->to_string()}, {"signed", r.auth != nullptr ? "yes" : "no"},
               {"reason", draining ? "draining" : "always"}});
    finish(r, b, stun::err::kTryAlternate);
    return true;
}

}  // namespace turn::cp
