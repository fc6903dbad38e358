// The client side of TURN requests over any message transport: matching
// answers to requests by transaction id and the long-term credential dance.
// Self provides send(span) -> bool and recv(timeout_ms) -> optional message
// (tcp_client.h over TCP, dtls_io_test.cc over DTLS).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "net/address.h"
#include "stun_client.h"

namespace turn::cp::test {

template <class Self>
class TurnRequester {
public:
    // A request and its answer (the same transaction id; indications and
    // ChannelData in between are skipped).
    std::optional<Answer> exchange(const std::vector<uint8_t>& req) {
        if (!self().send(req)) {
            return std::nullopt;
        }
        for (int i = 0; i < 16; ++i) {
            auto r = self().recv();
            if (!r) {
                return std::nullopt;
            }
            Answer a(*r);
            if (a.ok && std::equal(req.begin() + 8, req.begin() + 20, r->begin() + 8)) {
                return a;
            }
        }
        return std::nullopt;
    }
    Answer request(stun::Method m, const Attrs& attrs) {
        if (creds_.nonce.empty()) {
            auto a = exchange(build(stun::Method::kAllocate, stun::Class::kRequest, {}, nullptr));
            EXPECT_TRUE(a && a->code() == 401);
            if (a) {
                creds_.realm = a->text(stun::attr::kRealm);
                creds_.nonce = a->text(stun::attr::kNonce);
            }
        }
        auto a = exchange(build(m, stun::Class::kRequest, attrs, &creds_));
        EXPECT_TRUE(a) << "no answer";
        return a ? *a : Answer({});
    }
    // The relayed address, or an empty Address.
    Address allocate() {
        auto a = request(stun::Method::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoUdp); });
        EXPECT_TRUE(a.success()) << a.code();
        auto v = a.xor_addresses(stun::attr::kXorRelayedAddress);
        return v.empty() ? Address{} : v.front();
    }
    // ChannelBind of `channel` to `peer`.
    Answer bind_channel(uint16_t channel, const Address& peer) {
        return request(stun::Method::kChannelBind, [&](auto& b) {
            b.add_channel_number(channel);
            b.add_xor_address(stun::attr::kXorPeerAddress, peer);
        });
    }

    // A request signed with the credentials learnt so far (after a request()),
    // to send without waiting for its answer.
    std::vector<uint8_t> signed_request(stun::Method m, const Attrs& attrs) {
        return build(m, stun::Class::kRequest, attrs, &creds_);
    }

protected:
    Self& self() { return static_cast<Self&>(*this); }
    Credentials creds_;
};

}  // namespace turn::cp::test
