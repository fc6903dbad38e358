// Refresh (RFC 8656 section 7.3/7.4). LIFETIME 0 deletes the allocation at
// once. On a dual-stack allocation REQUESTED-ADDRESS-FAMILY limits the
// Refresh to that family's relayed address: each has its own lifetime, and
// one whose lifetime runs out ends alone.
#include "core/server.h"

#include "stun/attributes.h"

namespace turn::cp {

uint16_t Server::check_refresh(const Request& r, const Allocation& a, uint32_t& lifetime, Family& only) const {
    using namespace stun;
    const MessageView& m = r.msg;
    bool bad = false;
    lifetime = lifetime_for(m, bad);
    if (bad) {
        return err::kBadRequest;
    }
    only = Family::kNone;
    if (const RawAttribute* fam = m.find(attr::kRequestedAddressFamily)) {
        if (decode_address_family(m.value(*fam), only) != AttrError::kOk) {
            return err::kBadRequest;
        }
        if (!a.has_family(only)) {
            return err::kPeerAddressFamilyMismatch;
        }
    }
    return 0;
}

void Server::handle_refresh(const Request& r, Allocation& a) {
    using namespace stun;
    const MessageView& m = r.msg;
    uint32_t lifetime = 0;
    Family only = Family::kNone;
    if (const uint16_t code = check_refresh(r, a, lifetime, only); code != 0) {
        reply_error(r, code);
        return;
    }
    if (lifetime == 0) {
        const bool dual = a.has_family(Family::kIPv4) && a.has_family(Family::kIPv6);
        if (only != Family::kNone && dual) {
            allocations_.remove_family(a, only);
        } else {
            allocations_.remove(a, AllocationManager::EndReason::kDeleted);
        }
    } else {
        allocations_.refresh(a, uint64_t{lifetime} * 1000, only);
    }
    MessageBuilder b = begin(r, Class::kSuccess);
    b.add_u32(attr::kLifetime, lifetime);
    // RFC 8016 section 3.2: a Refresh that shows its ticket gets a new one.
    if (lifetime != 0 && m.find(attr::kMobilityTicket) != nullptr) {
        add_mobility_ticket(b, a);
    }
    finish(r, b, 200);
}

}  // namespace turn::cp
