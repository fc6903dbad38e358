// Connect / ConnectionBind (RFC 6062). This server offers UDP allocations only
// (Allocate with REQUESTED-TRANSPORT=TCP gets 442), so a Connect always
// arrives on a UDP allocation: RFC 6062 section 5.2 defines no success for
// that, and we answer 400 (Bad Request). 446 (Connection Already Exists) can
// only arise on TCP allocations and is therefore never sent.
#include "core/server.h"

namespace turn::cp {

void Server::handle_connect(const Request& r, Allocation& /*a*/) { reply_error(r, stun::err::kBadRequest); }

}  // namespace turn::cp
