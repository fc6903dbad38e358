// Binding (RFC 8489 sections 6.3.1 and 7.3.1; RFC 8656 section 5: a TURN
// server answers Binding without authentication).
#include "core/server.h"

namespace turn::cp {

void Server::handle_binding(const Request& r) {
    if (!r.msg.unknown_required().empty()) {
        stun::MessageBuilder b = begin(r, stun::Class::kError);
        b.add_error_code(stun::err::kUnknownAttribute);
        b.add_unknown_attributes(r.msg.unknown_required());
        finish(r, b, stun::err::kUnknownAttribute);
        return;
    }
    stun::MessageBuilder b = begin(r, stun::Class::kSuccess);
    b.add_xor_address(stun::attr::kXorMappedAddress, r.ft.client.normalised());
    // RFC 5780 section 7.3: where the response comes from (our listener).
    if (!r.ft.server.is_unspecified()) {
        b.add_address(stun::attr::kResponseOrigin, r.ft.server.normalised());
    }
    finish(r, b, 200);
}

}  // namespace turn::cp
