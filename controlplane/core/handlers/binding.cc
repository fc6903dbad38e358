// Binding (RFC 8489 sections 6.3.1 and 7.3.1; RFC 8656 section 5: a TURN
// server answers Binding without authentication), with RFC 5780's NAT
// behaviour discovery attributes where the server has alternates for the
// family ([server].alternate_ips / alternate_port, core/nat_behavior.h):
// RESPONSE-ORIGIN (always, with a concrete listener), OTHER-ADDRESS,
// CHANGE-REQUEST (the response leaves from the changed address), and over
// UDP RESPONSE-PORT (the response goes to that port of the client's IP) and
// PADDING (echoed at the same length, for fragmentation tests). Without
// alternates RFC 5780 is off and all three get 420, as
// docs/CONTROLPLANE.md ("Decisions") promises: an unauthenticated request
// then cannot steer or pad an answer on a relay whose operator did not
// turn discovery on.
#include "core/nat_behavior.h"
#include "core/server.h"
#include "stun/attributes.h"

namespace turn::cp {

void Server::handle_binding(const Request& r) {
    const Config& c = shared_.config;
    const bool udp = r.ft.transport == Transport::kUdp;
    const bool rfc5780 = udp && nat_discovery_enabled(c, r.ft.server);
    // What this server processes of the attributes the library calls
    // unknown: CHANGE-REQUEST, RESPONSE-PORT and PADDING, over UDP with
    // alternates (RESPONSE-PORT and PADDING are about datagrams). Over
    // TCP/TLS and without alternates an RFC 5780 client gets 420 and knows to
    // stop (section 6.1).
    std::vector<uint16_t> unknown;
    for (const uint16_t t : r.msg.unknown_required()) {
        const bool handled =
            rfc5780 && (t == stun::attr::kChangeRequest || t == stun::attr::kResponsePort || t == stun::attr::kPadding);
        if (!handled) {
            unknown.push_back(t);
        }
    }
    if (!unknown.empty()) {
        stun::MessageBuilder b = begin(r, stun::Class::kError);
        b.add_error_code(stun::err::kUnknownAttribute);
        b.add_unknown_attributes(unknown);
        finish(r, b, stun::err::kUnknownAttribute);
        return;
    }
    FiveTuple out = r.ft;  // where the response goes (client) and leaves from (server)
    if (const auto* a = r.msg.find(stun::attr::kChangeRequest); a != nullptr && rfc5780) {
        stun::ChangeRequest cr;
        if (stun::decode_change_request(r.msg.value(*a), cr) != stun::AttrError::kOk) {
            reply_error(r, stun::err::kBadRequest);
            return;
        }
        out.server = *nat_changed_address(c, r.ft.server, cr.change_ip, cr.change_port);
    }
    // RFC 5780 section 6.1: PADDING with RESPONSE-PORT is refused (a padded
    // answer sent to another port would be a reflection tool).
    if (rfc5780 && r.msg.find(stun::attr::kResponsePort) != nullptr && r.msg.find(stun::attr::kPadding) != nullptr) {
        reply_error(r, stun::err::kBadRequest);
        return;
    }
    if (const auto* a = r.msg.find(stun::attr::kResponsePort); a != nullptr && rfc5780) {
        uint16_t port = 0;
        if (stun::decode_response_port(r.msg.value(*a), port) != stun::AttrError::kOk || port == 0) {
            reply_error(r, stun::err::kBadRequest);
            return;
        }
        out.client = out.client.with_port(port);  // same IP: no reflection to another host
    }
    const Request resp{r.msg, out, r.auth, r.fingerprint};
    stun::MessageBuilder b = begin(resp, stun::Class::kSuccess);
    b.add_xor_address(stun::attr::kXorMappedAddress, r.ft.client.normalised());
    // RFC 5780 section 7.3: where the response comes from (our listener; on
    // the relay IP behind a NAT, as the client reached it).
    if (!out.server.is_unspecified()) {
        b.add_address(stun::attr::kResponseOrigin, c.advertised(out.server.normalised()));
    }
    if (rfc5780) {
        b.add_address(stun::attr::kOtherAddress, *nat_changed_address(c, r.ft.server, true, true));
    }
    if (const auto* a = r.msg.find(stun::attr::kPadding); a != nullptr && rfc5780) {
        b.add_padding(a->length);  // as large as the client's; the builder refuses past the scratch buffer
    }
    finish(resp, b, 200);
}

}  // namespace turn::cp
