#include "core/allocation.h"

namespace turn::cp {

bool Allocation::permitted(const Address& peer, uint64_t now_ms) const {
    auto it = permissions.find(permission_key(peer));
    return it != permissions.end() && it->second.expires_ms > now_ms;
}

std::optional<uint16_t> Allocation::channel_for(const Address& peer, uint64_t now_ms) const {
    auto it = channel_by_peer.find(peer.normalised());
    if (it == channel_by_peer.end()) {
        return std::nullopt;
    }
    auto ch = channels.find(it->second);
    if (ch == channels.end() || ch->second.expires_ms <= now_ms) {
        return std::nullopt;
    }
    return it->second;
}

const Address* Allocation::peer_for(uint16_t channel, uint64_t now_ms) const {
    auto it = channels.find(channel);
    if (it == channels.end() || it->second.expires_ms <= now_ms) {
        return nullptr;
    }
    return &it->second.peer;
}

Allocation::BindCheck Allocation::can_bind(uint16_t channel, const Address& peer_in, uint64_t now_ms) const {
    const Address peer = peer_in.normalised();
    // Bindings are checked even if their expiry is due but the timer has not
    // run yet: until removal they still count as bound.
    if (auto it = channels.find(channel); it != channels.end() && !(it->second.peer == peer)) {
        return BindCheck::kChannelInUse;
    }
    if (auto it = channel_by_peer.find(peer); it != channel_by_peer.end() && it->second != channel) {
        return BindCheck::kPeerInUse;
    }
    for (const auto& q : quarantine) {
        if (q.until_ms <= now_ms) {
            continue;
        }
        if (q.channel == channel && !(q.peer == peer)) {
            return BindCheck::kChannelQuarantined;
        }
        if (q.peer == peer && q.channel != channel) {
            return BindCheck::kPeerQuarantined;
        }
    }
    return BindCheck::kOk;
}

}  // namespace turn::cp
