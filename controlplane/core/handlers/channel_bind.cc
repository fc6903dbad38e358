// ChannelBind (RFC 8656 section 12.2): binds or refreshes a channel (600 s)
// and installs or refreshes the peer's permission (300 s). A number or peer
// already bound to something else, or within 5 minutes of such a binding's
// expiry, gets 400.
#include "core/server.h"

#include "stun/attributes.h"
#include "turn/channel_data.h"

namespace turn::cp {

void Server::handle_channel_bind(const Request& r, Allocation& a) {
    using namespace stun;
    const MessageView& m = r.msg;
    const RawAttribute* ch_attr = m.find(attr::kChannelNumber);
    const RawAttribute* peer_attr = m.find(attr::kXorPeerAddress);
    uint16_t channel = 0;
    Address peer;
    if (ch_attr == nullptr || peer_attr == nullptr ||
        decode_channel_number(m.value(*ch_attr), channel) != AttrError::kOk || !is_valid_channel(channel) ||
        decode_xor_address(m.value(*peer_attr), m.transaction_id(), peer) != AttrError::kOk) {
        reply_error(r, err::kBadRequest);
        return;
    }
    peer = peer.normalised();
    if (!a.has_family(peer.family)) {
        reply_error(r, err::kPeerAddressFamilyMismatch);
        return;
    }
    if (!shared_.policy.permitted_transport(peer)) {
        reply_error(r, err::kForbidden);
        return;
    }
    if (a.can_bind(channel, peer, clock_.now_ms()) != Allocation::BindCheck::kOk) {
        reply_error(r, err::kBadRequest);
        return;
    }
    allocations_.bind_channel(a, channel, peer);
    MessageBuilder b = begin(r, Class::kSuccess);
    finish(r, b, 200);
}

}  // namespace turn::cp
