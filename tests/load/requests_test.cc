// bench/load/requests.h: the requests turn-load sends, RFC 6062's Connect and
// ConnectionBind among them, checked by parsing them back with the relay's
// own STUN parser; and the CONNECTION-ID read from a Connect answer.
#include "requests.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/integrity.h"

namespace turn::load {
namespace {

namespace attr = stun::attr;

constexpr std::array<uint8_t, 12> kTxid{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12};
const std::array<uint8_t, 16> kKey{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

RequestAuth authenticated() { return {"demo", "turnrelay.local", "nonce-123", kKey}; }

// Builds `kind` and parses it back; the buffer stays alive in `buf`.
stun::MessageView built(Request kind, const RequestFields& f, const RequestAuth& auth, std::vector<uint8_t>& buf) {
    buf.assign(512, 0xEE);
    const size_t n = build_request(kind, f, auth, kTxid, buf);
    EXPECT_GT(n, 0u);
    buf.resize(n);
    stun::MessageView m;
    EXPECT_EQ(stun::parse(buf, m), stun::ParseError::kOk);
    EXPECT_TRUE(m.is(method_of(kind), stun::Class::kRequest));
    EXPECT_NE(m.fingerprint(), nullptr);
    EXPECT_TRUE(stun::verify_fingerprint(m));
    return m;
}

TEST(LoadRequests, TcpAllocateAsksForTcp) {
    RequestFields f;
    f.requested_transport = kTransportTcp;
    f.peer = *Address::parse("127.0.0.1:40000");
    std::vector<uint8_t> buf;
    const auto m = built(Request::kAllocate, f, authenticated(), buf);
    const auto* rt = m.find(attr::kRequestedTransport);
    ASSERT_NE(rt, nullptr);
    uint8_t proto = 0;
    ASSERT_EQ(stun::decode_requested_transport(m.value(*rt), proto), stun::AttrError::kOk);
    EXPECT_EQ(proto, 6);
    EXPECT_EQ(m.find(attr::kRequestedAddressFamily), nullptr);  // an IPv4 peer: the default family
    EXPECT_TRUE(stun::verify_message_integrity(m, kKey));
}

TEST(LoadRequests, ConnectCarriesThePeerAndIsAuthenticated) {
    RequestFields f;
    f.peer = *Address::parse("127.0.0.1:43210");
    std::vector<uint8_t> buf;
    const auto m = built(Request::kConnect, f, authenticated(), buf);
    EXPECT_EQ(m.method(), 0x000A);
    const auto* pa = m.find(attr::kXorPeerAddress);
    ASSERT_NE(pa, nullptr);
    Address peer;
    ASSERT_EQ(stun::decode_xor_address(m.value(*pa), m.transaction_id(), peer), stun::AttrError::kOk);
    EXPECT_EQ(peer, f.peer);
    const auto* u = m.find(attr::kUsername);
    ASSERT_NE(u, nullptr);
    std::string_view user;
    ASSERT_EQ(stun::decode_text(m.value(*u), stun::kMaxUsername, user), stun::AttrError::kOk);
    EXPECT_EQ(user, "demo");
    ASSERT_NE(m.find(attr::kNonce), nullptr);
    EXPECT_TRUE(stun::verify_message_integrity(m, kKey));
    const std::array<uint8_t, 16> other{};
    EXPECT_FALSE(stun::verify_message_integrity(m, other));
}

TEST(LoadRequests, ConnectToAnIpv6PeerXorsWithTheTransactionId) {
    RequestFields f;
    f.peer = *Address::parse("[::1]:43211");
    std::vector<uint8_t> buf;
    const auto m = built(Request::kConnect, f, authenticated(), buf);
    Address peer;
    ASSERT_EQ(stun::decode_xor_address(m.value(*m.find(attr::kXorPeerAddress)), m.transaction_id(), peer),
              stun::AttrError::kOk);
    EXPECT_EQ(peer, f.peer);
}

TEST(LoadRequests, ConnectionBindCarriesTheConnectionId) {
    RequestFields f;
    f.connection_id = 0xA1B2C3D4;
    std::vector<uint8_t> buf;
    const auto m = built(Request::kConnectionBind, f, authenticated(), buf);
    EXPECT_EQ(m.method(), 0x000B);
    uint32_t id = 0;
    ASSERT_NE(m.find(attr::kConnectionId), nullptr);
    ASSERT_EQ(stun::decode_u32(m.value(*m.find(attr::kConnectionId)), id), stun::AttrError::kOk);
    EXPECT_EQ(id, 0xA1B2C3D4u);
    EXPECT_EQ(m.find(attr::kXorPeerAddress), nullptr);
    EXPECT_TRUE(stun::verify_message_integrity(m, kKey));
}

TEST(LoadRequests, FirstRequestIsUnauthenticated) {
    RequestFields f;
    f.connection_id = 7;
    std::vector<uint8_t> buf;
    const auto m = built(Request::kConnectionBind, f, RequestAuth{}, buf);
    EXPECT_EQ(m.message_integrity(), nullptr);
    EXPECT_EQ(m.find(attr::kUsername), nullptr);
    EXPECT_EQ(m.find(attr::kNonce), nullptr);
}

TEST(LoadRequests, TooSmallABufferBuildsNothing) {
    RequestFields f;
    f.peer = *Address::parse("127.0.0.1:43210");
    std::vector<uint8_t> buf(40, 0);
    EXPECT_EQ(build_request(Request::kConnect, f, authenticated(), kTxid, buf), 0u);
}

// A Connect answer as a server builds it.
std::vector<uint8_t> connect_answer(bool with_id, size_t id_len) {
    std::vector<uint8_t> buf(256, 0);
    stun::MessageBuilder b(buf, stun::Method::kConnect, stun::Class::kSuccess, kTxid);
    if (with_id) {
        const std::array<uint8_t, 8> v{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0};
        b.add(attr::kConnectionId, std::span<const uint8_t>(v.data(), id_len));
    }
    b.add_fingerprint();
    EXPECT_TRUE(b.ok());
    buf.resize(b.size());
    return buf;
}

TEST(LoadRequests, ConnectionIdOfAConnectAnswer) {
    const auto good = connect_answer(true, 4);
    stun::MessageView m;
    ASSERT_EQ(stun::parse(good, m), stun::ParseError::kOk);
    uint32_t id = 0;
    ASSERT_TRUE(connection_id_of(m, id));
    EXPECT_EQ(id, 0x12345678u);

    // Missing, or not 4 bytes: no id (the session counts a bad response).
    for (const auto& bad : {connect_answer(false, 0), connect_answer(true, 3), connect_answer(true, 8)}) {
        stun::MessageView b;
        ASSERT_EQ(stun::parse(bad, b), stun::ParseError::kOk);
        EXPECT_FALSE(connection_id_of(b, id));
    }
}

}  // namespace
}  // namespace turn::load
