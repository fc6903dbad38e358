// ChannelBind (RFC 8656 section 12.2): binds or refreshes a channel (600 s)
// and installs or refreshes the peer's permission (300 s). A number or peer
// already bound to something else, or within 5 minutes of such a binding's
// expiry, gets 400. Channel numbers 0x5000-0x7FFF (RFC 5766's range, which
// RFC 8656 reserved) are accepted unless [server].strict_channel_range is set,
// because deployed clients (coturn's turnutils_uclient) still pick them.
#include "core/server.h"

#include "core/event_log.h"

#include "stun/attributes.h"
#include "turn/channel_data.h"

namespace turn::cp {

void Server::handle_channel_bind(const Request& r, Allocation& a) {
    using namespace stun;
    if (a.tcp) {  // RFC 6062 section 5: channels are for UDP relaying
        reply_error(r, err::kBadRequest);
        return;
    }
    const MessageView& m = r.msg;
    const RawAttribute* ch_attr = m.find(attr::kChannelNumber);
    const RawAttribute* peer_attr = m.find(attr::kXorPeerAddress);
    uint16_t channel = 0;
    Address peer;
    if (ch_attr == nullptr || peer_attr == nullptr ||
        decode_channel_number(m.value(*ch_attr), channel) != AttrError::kOk ||
        !is_valid_channel(channel, shared_.config.strict_channel_range ? ChannelRange::kRfc8656 : ChannelRange::kRfc5766) ||
        decode_xor_address(m.value(*peer_attr), m.transaction_id(), peer) != AttrError::kOk) {
        log_event(LogLevel::kDebug, "channel_bind_refused", {{"reason", "bad CHANNEL-NUMBER or XOR-PEER-ADDRESS"},
                                                              {"channel", std::to_string(channel)}});
        reply_error(r, err::kBadRequest);
        return;
    }
    peer = peer.normalised();
    if (!a.has_family(peer.family)) {
        reply_error(r, err::kPeerAddressFamilyMismatch);
        return;
    }
    if (!peer_permitted(r, peer, true)) {
        return;
    }
    if (const auto check = a.can_bind(channel, peer, clock_.now_ms()); check != Allocation::BindCheck::kOk) {
        log_event(LogLevel::kDebug, "channel_bind_refused",
                  {{"reason", "number or peer bound or quarantined"},
                   {"channel", std::to_string(channel)},
                   {"peer", peer.to_string()},
                   {"check", std::to_string(static_cast<int>(check))}});
        reply_error(r, err::kBadRequest);
        return;
    }
    const bool new_channel = a.channels.count(channel) == 0;
    const bool new_permission = a.permissions.count(Allocation::permission_key(peer)) == 0;
    if ((new_channel && a.channels.size() >= shared_.config.max_channels) ||
        (new_permission && a.permissions.size() >= shared_.config.max_permissions)) {
        reply_error(r, err::kInsufficientCapacity);  // bounded state per allocation
        return;
    }
    allocations_.bind_channel(a, channel, peer);
    MessageBuilder b = begin(r, Class::kSuccess);
    finish(r, b, 200);
}

}  // namespace turn::cp
