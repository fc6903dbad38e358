// Send indication (RFC 8656 section 11.2): DATA to XOR-PEER-ADDRESS through
// the relayed address of the peer's family, if a permission exists. There is
// no answer to an indication, so every failure is a counted silent drop.
#include "core/server.h"

#include "stun/attributes.h"

namespace turn::cp {

void Server::handle_send(const FiveTuple& ft, const stun::MessageView& m, IpMarks marks) {
    using namespace stun;
    Allocation* a = allocations_.find(ft);
    if (a == nullptr || a->tcp) {  // a TCP allocation's data goes over its data connections (RFC 6062)
        stats_.drop(Drop::kNoAllocation);
        return;
    }
    const RawAttribute* peer_attr = m.find(attr::kXorPeerAddress);
    const RawAttribute* data_attr = m.find(attr::kData);
    Address peer;
    if (peer_attr == nullptr || data_attr == nullptr ||
        decode_xor_address(m.value(*peer_attr), m.transaction_id(), peer) != AttrError::kOk) {
        stats_.drop(Drop::kMalformed);
        return;
    }
    // RFC 8489 section 6.3.2: an indication with an unknown
    // comprehension-required attribute is discarded.
    if (!m.unknown_required().empty()) {
        stats_.drop(Drop::kUnknownAttribute);
        return;
    }
    peer = peer.normalised();
    if (const PeerVerdict v = policy_->check_transport(peer); v != PeerVerdict::kPermitted) {
        stats_.drop(Drop::kPeerPolicy);
        stats_.peer_denied(v);
        return;
    }
    if (!a->permitted(peer, clock_.now_ms())) {
        stats_.drop(Drop::kNoPermission);
        return;
    }
    // DONT-FRAGMENT (RFC 8656 11.2): this datagram leaves with DF set.
    relay_to_peer(*a, peer, m.value(*data_attr), m.find(attr::kDontFragment) != nullptr, marks);
}

}  // namespace turn::cp
