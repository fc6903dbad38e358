// CreatePermission (RFC 8656 section 9): one or more XOR-PEER-ADDRESS, all
// installed or none (403 if any is denied by policy, 443 if any has a family
// the allocation has no relayed address for).
#include "core/server.h"

#include "stun/attributes.h"

namespace turn::cp {

void Server::handle_create_permission(const Request& r, Allocation& a) {
    using namespace stun;
    const MessageView& m = r.msg;
    std::array<Address, MessageView::kMaxAttributes> peers{};
    size_t n = 0;
    for (const auto& at : m.attributes()) {
        if (at.type != attr::kXorPeerAddress) {
            continue;
        }
        Address p;
        if (decode_xor_address(m.value(at), m.transaction_id(), p) != AttrError::kOk) {
            reply_error(r, err::kBadRequest);
            return;
        }
        peers[n++] = p.normalised();
    }
    if (n == 0) {
        reply_error(r, err::kBadRequest);
        return;
    }
    for (size_t i = 0; i < n; ++i) {
        if (!a.has_family(peers[i].family)) {
            reply_error(r, err::kPeerAddressFamilyMismatch);
            return;
        }
    }
    for (size_t i = 0; i < n; ++i) {
        if (!peer_permitted(r, peers[i], false)) {
            return;
        }
    }
    // Bounded state per allocation: new permissions beyond the limit get 508
    // (RFC 8656 section 9.2: the server may refuse for lack of capacity).
    // A peer IP listed twice is one new permission.
    size_t fresh = 0;
    for (size_t i = 0; i < n; ++i) {
        const auto key = Allocation::permission_key(peers[i]);
        bool listed_before = false;
        for (size_t j = 0; j < i && !listed_before; ++j) {
            listed_before = Allocation::permission_key(peers[j]) == key;
        }
        fresh += !listed_before && a.permissions.count(key) == 0 ? 1 : 0;
    }
    if (a.permissions.size() + fresh > shared_.config.max_permissions) {
        reply_error(r, err::kInsufficientCapacity);
        return;
    }
    for (size_t i = 0; i < n; ++i) {
        allocations_.add_permission(a, peers[i]);
    }
    MessageBuilder b = begin(r, Class::kSuccess);
    finish(r, b, 200);
}

}  // namespace turn::cp
