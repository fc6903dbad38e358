#include "requests.h"

#include "stun/attributes.h"
#include "stun/builder.h"

namespace turn::load {

namespace attr = stun::attr;

stun::Method method_of(Request r) {
    switch (r) {
        case Request::kAllocate: return stun::Method::kAllocate;
        case Request::kCreatePermission: return stun::Method::kCreatePermission;
        case Request::kChannelBind: return stun::Method::kChannelBind;
        case Request::kRefresh: return stun::Method::kRefresh;
        case Request::kConnect: return stun::Method::kConnect;
        case Request::kConnectionBind: return stun::Method::kConnectionBind;
    }
    return stun::Method::kBinding;
}

size_t build_request(Request kind, const RequestFields& f, const RequestAuth& auth,
                     std::span<const uint8_t, stun::kTxIdSize> txid, std::span<uint8_t> out) {
    stun::MessageBuilder b(out, method_of(kind), stun::Class::kRequest, txid);
    switch (kind) {
        case Request::kAllocate:
            b.add_requested_transport(f.requested_transport);
            if (f.peer.is_v6()) {
                b.add_address_family(attr::kRequestedAddressFamily, Family::kIPv6);
            }
            break;
        case Request::kCreatePermission:
        case Request::kConnect:  // RFC 6062 section 5.2: the peer to connect to
            b.add_xor_address(attr::kXorPeerAddress, f.peer);
            break;
        case Request::kChannelBind:
            b.add_channel_number(f.channel);
            b.add_xor_address(attr::kXorPeerAddress, f.peer);
            break;
        case Request::kRefresh:
            b.add_u32(attr::kLifetime, f.lifetime_s);
            break;
        case Request::kConnectionBind:  // RFC 6062 section 5.4: the id Connect answered
            b.add_u32(attr::kConnectionId, f.connection_id);
            break;
    }
    if (!auth.key.empty()) {
        b.add_text(attr::kUsername, auth.username);
        b.add_text(attr::kRealm, auth.realm);
        b.add_text(attr::kNonce, auth.nonce);
        b.add_message_integrity(auth.key);
    }
    b.add_fingerprint();
    return b.ok() ? b.size() : 0;
}

bool connection_id_of(const stun::MessageView& response, uint32_t& id) {
    const auto* a = response.find(attr::kConnectionId);
    return a != nullptr && stun::decode_u32(response.value(*a), id) == stun::AttrError::kOk;
}

}  // namespace turn::load
