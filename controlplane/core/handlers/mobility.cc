// RFC 8016 mobility: a client whose address changed (a new network, a NAT
// rebinding) sends Refresh with the MOBILITY-TICKET it was given from its new
// 5-tuple, and its allocation follows it: same relayed address, permissions
// and channels, so its peers notice nothing.
//
// The ticket names the allocation and its event loop (core/mobility.h). The
// kernel may hand the new 5-tuple to any loop (SO_REUSEPORT hashes it), so a
// Refresh on another loop is passed to the allocation's loop as it came, and
// that loop, once it has moved the allocation, opens a path that brings the
// new 5-tuple's datagrams to itself (PacketIo::open_client_path: a socket
// connected to the client on the listening address, which Linux prefers to
// the SO_REUSEPORT group). Datagrams that reach another loop in between are
// dropped there as they would be for any unknown 5-tuple; the client
// retransmits its Refresh, which the owner answers from its response cache.
//
// Checks, in order (the request is authenticated already):
//   mobility off, or not UDP           -> 405 Mobility Forbidden
//   ticket not ours / altered          -> 400
//   another loop's ticket              -> handed to that loop
//   allocation gone                    -> 437
//   allocation did not ask for mobility (only UDP ones can) -> 405
//   another user's allocation          -> 441
//   a ticket spent by a later move     -> 400 (a replayed Refresh takes nothing)
//   LIFETIME / REQUESTED-ADDRESS-FAMILY as for any Refresh (400, 443)
//   no path for the new 5-tuple to this loop (several loops) -> 500
// and only then does the allocation move to this 5-tuple and take the
// Refresh (LIFETIME as usual; the answer carries a new ticket).
//
// Allocate (handlers/allocate.cc) with MOBILITY-TICKET, as coturn answers
// it: 405 when mobility is off or the transport is not UDP, 400 when the
// attribute is not empty; else a ticket in the answer.
#include "core/event_log.h"
#include "core/server.h"
#include "stun/attributes.h"

namespace turn::cp {

void Server::add_mobility_ticket(stun::MessageBuilder& b, const Allocation& a) const {
    if (!a.mobile || loop_ > 255) {  // a ticket names one of 256 loops at most
        return;
    }
    const auto t = shared_.tickets.issue({a.id, static_cast<uint8_t>(loop_), a.moves});
    if (!t.empty()) {
        b.add(stun::attr::kMobilityTicket, t);
    }
}

void Server::handle_mobility_refresh(const Request& r) {
    using namespace stun;
    if (!shared_.config.mobility || r.ft.transport != Transport::kUdp) {
        reply_error(r, err::kMobilityForbidden);
        return;
    }
    const RawAttribute* attr = r.msg.find(attr::kMobilityTicket);
    const auto ticket = shared_.tickets.open(r.msg.value(*attr));
    if (!ticket) {
        reply_error(r, err::kBadRequest);
        return;
    }
    if (ticket->loop != loop_) {
        // Handed over as it came; the owner authenticates it again and answers.
        std::vector<uint8_t> copy(r.msg.bytes().begin(), r.msg.bytes().end());
        const FiveTuple ft = r.ft;
        if (ticket->loop < loops_ && poster_ &&
            poster_(ticket->loop, [ft, copy = std::move(copy)](Server& owner) { owner.on_client_datagram(ft, copy); })) {
            stats_.mobility_forwarded.add();
            return;
        }
        reply_error(r, err::kAllocationMismatch);  // a loop this process does not have
        return;
    }
    Allocation* a = allocations_.find_by_id(ticket->allocation_id);
    if (a == nullptr) {
        reply_error(r, err::kAllocationMismatch);
        return;
    }
    if (!a->mobile) {  // Allocate gives a ticket to UDP clients only
        reply_error(r, err::kMobilityForbidden);
        return;
    }
    if (a->username != r.auth->username) {
        stats_.auth_failure(AuthFailure::kWrongCredentials);
        reply_error(r, err::kWrongCredentials);
        return;
    }
    if (ticket->moves != a->moves) {
        reply_error(r, err::kBadRequest);
        return;
    }
    uint32_t lifetime = 0;
    Family only = Family::kNone;
    if (const uint16_t code = check_refresh(r, *a, lifetime, only); code != 0) {
        reply_error(r, code);
        return;
    }
    // With one loop every 5-tuple reaches it; with several the new one needs
    // its path here, or the move would strand the client's traffic.
    RelayId path = kNoRelay;
    if (loops_ > 1) {
        path = io_.open_client_path(r.ft);
        if (path == kNoRelay) {
            reply_error(r, err::kServerError);
            return;
        }
    }
    if (a->client_path != kNoRelay) {
        io_.close_client_path(a->client_path);
    }
    a->client_path = path;
    allocations_.move(*a, r.ft);
    stats_.mobility_moves.add();
    handle_refresh(r, *a);
}

}  // namespace turn::cp
