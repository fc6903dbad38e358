// Writes the seed corpus of server_fuzz.cc (tests/fuzz/corpus/server/):
// scripts of real client conversations (server_net.h has the format) for
// every TURN method over UDP and TCP, RFC 5780 Binding, mobility, expiry
// and the common errors. Requests are written unsigned; steps marked
// kClientSigned are signed by the harness.
//
//   build/tests/fuzz/server_seeds tests/fuzz/corpus/server
//
// The output is deterministic; the files are committed.
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "net/address.h"
#include "seed_writer.h"
#include "server_net.h"
#include "stun/builder.h"
#include "stun/constants.h"

namespace {

using namespace turn;
using namespace servernet;
using Bytes = std::vector<uint8_t>;
namespace attr = turn::stun::attr;

Address A(const char* s) { return *Address::parse(s); }
const Address kPeer0 = A(kPeers[0]);
const Address kPeer6 = A(kPeers[2]);

Bytes msg(stun::Method m, stun::Class c, const std::function<void(stun::MessageBuilder&)>& f = {}) {
    static uint8_t n = 0;
    std::array<uint8_t, stun::kTxIdSize> tx{};
    tx.fill(++n);
    Bytes buf(1024);
    stun::MessageBuilder b(buf, m, c, tx);
    if (f) {
        f(b);
    }
    buf.resize(b.size());
    return buf;
}
Bytes req(stun::Method m, const std::function<void(stun::MessageBuilder&)>& f = {}) {
    return msg(m, stun::Class::kRequest, f);
}

class Script {
public:
    Script& step(Op op, uint8_t sel, const Bytes& payload = {}) {
        b_.push_back(op);
        b_.push_back(sel);
        b_.push_back(static_cast<uint8_t>(payload.size() >> 8));
        b_.push_back(static_cast<uint8_t>(payload.size()));
        b_.insert(b_.end(), payload.begin(), payload.end());
        return *this;
    }
    const Bytes& bytes() const { return b_; }

private:
    Bytes b_;
};

Bytes allocate(uint8_t proto = stun::kProtoUdp, const std::function<void(stun::MessageBuilder&)>& more = {}) {
    return req(stun::Method::kAllocate, [&](stun::MessageBuilder& b) {
        b.add_requested_transport(proto);
        if (more) {
            more(b);
        }
    });
}
Bytes permission(const Address& p) {
    return req(stun::Method::kCreatePermission, [&](auto& b) { b.add_xor_address(attr::kXorPeerAddress, p); });
}
Bytes channel_bind(uint16_t ch, const Address& p) {
    return req(stun::Method::kChannelBind, [&](auto& b) {
        b.add_channel_number(ch);
        b.add_xor_address(attr::kXorPeerAddress, p);
    });
}
Bytes refresh(uint32_t lifetime) {
    return req(stun::Method::kRefresh, [&](auto& b) { b.add_u32(attr::kLifetime, lifetime); });
}
Bytes channel_data(uint16_t ch, size_t n) {
    Bytes d{static_cast<uint8_t>(ch >> 8), static_cast<uint8_t>(ch), 0, static_cast<uint8_t>(n)};
    for (size_t i = 0; i < n; i++) {
        d.push_back(static_cast<uint8_t>(i));
    }
    return d;
}
Bytes send(const Address& p) {
    return msg(stun::Method::kSend, stun::Class::kIndication, [&](stun::MessageBuilder& b) {
        b.add_xor_address(attr::kXorPeerAddress, p);
        const std::array<uint8_t, 5> d{1, 2, 3, 4, 5};
        b.add(attr::kData, d);
    });
}

fuzzseeds::Files scripts() {
    fuzzseeds::Files s;
    const Bytes payload{9, 8, 7, 6, 5, 4, 3, 2, 1};
    s.emplace_back("udp-channel-send-refresh",
                   Script()
                       .step(kClientSigned, 0, allocate())
                       .step(kClientSigned, 0, permission(kPeer0))
                       .step(kClientSigned, 0, channel_bind(0x4000, kPeer0))
                       .step(kClientRaw, 0, channel_data(0x4000, 20))
                       .step(kClientRaw, 0, send(kPeer0))
                       .step(kClientRaw, 0, send(A(kPeers[1])))  // no permission: dropped
                       .step(kPeer, 0x00, payload)
                       .step(kPeer, 0x10, payload)
                       .step(kPeerIcmp, 0x00, {3, 3, 0, 0, 5, 0xdc})
                       .step(kClientSigned, 0, refresh(600))
                       .step(kClock, 100)
                       .step(kClientSigned, 0, refresh(0))
                       .bytes());
    // Marks (server_net.h: op / kOps): TTL 2 and 255 relayed with one less,
    // TTL 1 not relayed, both ways; TOS EF kept.
    auto marked = [](Op op, uint8_t v) { return static_cast<Op>(op + kOps * v); };
    s.emplace_back("udp-ttl-marks",
                   Script()
                       .step(kClientSigned, 0, allocate())
                       .step(kClientSigned, 0, permission(kPeer0))
                       .step(kClientSigned, 0, channel_bind(0x4000, kPeer0))
                       .step(marked(kClientRaw, 2), 0, channel_data(0x4000, 20))  // TTL 2
                       .step(marked(kClientRaw, 1), 0, channel_data(0x4000, 20))  // TTL 1: dropped
                       .step(marked(kClientRaw, 7), 0, send(kPeer0))              // TTL 255, EF
                       .step(marked(kPeer, 6), 0x00, payload)                     // TTL 2, EF: ChannelData
                       .step(marked(kPeer, 5), 0x00, payload)                     // TTL 1, EF: dropped
                       .step(marked(kPeer, 4), 0x00, payload)                     // TTL 64, EF
                       .step(kClientSigned, 0, refresh(0))
                       .bytes());
    s.emplace_back("udp-dual-stack",
                   Script()
                       .step(kClientSigned, 0,
                             allocate(stun::kProtoUdp,
                                      [](auto& b) { b.add_address_family(attr::kAdditionalAddressFamily, Family::kIPv6); }))
                       .step(kClientSigned, 0, permission(kPeer6))
                       .step(kClientSigned, 0, channel_bind(0x4001, kPeer6))
                       .step(kPeer, 0x21, payload)
                       .step(kPeer, 0x20, payload)
                       .step(kClientRaw, 0, channel_data(0x4001, 3))
                       .bytes());
    s.emplace_back("udp-v6-client-sha256",
                   Script()
                       .step(kClientSigned, kSelV6 | kSelSha256 | kSelBob,
                             allocate(stun::kProtoUdp,
                                      [](auto& b) { b.add_address_family(attr::kRequestedAddressFamily, Family::kIPv6); }))
                       .step(kClientSigned, kSelV6 | kSelSha256 | kSelBob, permission(kPeer6))
                       .step(kClientRaw, kSelV6, send(kPeer6))
                       .step(kPeer, 0x20, payload)
                       .bytes());
    s.emplace_back("tcp-connect",
                   Script()
                       .step(kClientSigned, kSelTcp, allocate(stun::kProtoTcp))
                       .step(kClientSigned, kSelTcp, permission(kPeer0))
                       .step(kClientSigned, kSelTcp,
                             req(stun::Method::kConnect, [](auto& b) { b.add_xor_address(attr::kXorPeerAddress, kPeer0); }))
                       .step(kTcpPeer, 1)
                       .step(kClientSigned, kSelTcp | 1 | kSelReuse,
                             req(stun::Method::kConnectionBind, [](auto& b) { b.add_u32(attr::kConnectionId, 1); }))
                       .step(kTcpPeer, 0)
                       .step(kClientClosed, kSelTcp)
                       .bytes());
    s.emplace_back("binding-rfc5780",
                   Script()
                       .step(kClientRaw, 0, req(stun::Method::kBinding))
                       .step(kClientRaw, 1, req(stun::Method::kBinding, [](auto& b) { b.add_change_request(true, true); }))
                       .step(kClientRaw, 2, req(stun::Method::kBinding, [](auto& b) { b.add_response_port(6000); }))
                       .step(kClientRaw, 3, req(stun::Method::kBinding, [](auto& b) { b.add_padding(100); }))
                       .step(kClientRaw, kSelTcp, req(stun::Method::kBinding))
                       .bytes());
    s.emplace_back("unauthenticated-then-signed",
                   Script()
                       .step(kClientRaw, 0, allocate())
                       .step(kClientSigned, kSelBob | kSelSha256, allocate())
                       .step(kClientSigned, kSelBob, allocate())
                       .bytes());
    s.emplace_back("expiry",
                   Script()
                       .step(kClientSigned, 0, allocate(stun::kProtoUdp, [](auto& b) { b.add_u32(attr::kLifetime, 60); }))
                       .step(kClientSigned, 0, channel_bind(0x4000, kPeer0))
                       .step(kClock, 200)
                       .step(kPeer, 0, payload)
                       .step(kClientRaw, 0, channel_data(0x4000, 4))
                       .bytes());
    s.emplace_back("even-port-reservation",
                   Script()
                       .step(kClientSigned, 0, allocate(stun::kProtoUdp, [](auto& b) { b.add_even_port(true); }))
                       .step(kClientSigned, 1 | kSelReuse,
                             allocate(stun::kProtoUdp, [](auto& b) {
                                 const std::array<uint8_t, 8> token{1, 2, 3, 4, 5, 6, 7, 8};
                                 b.add(attr::kReservationToken, token);
                             }))
                       .step(kClientSigned, 2, allocate(stun::kProtoUdp, [](auto& b) { b.add_empty(attr::kDontFragment); }))
                       .bytes());
    s.emplace_back("mobility",
                   Script()
                       .step(kClientSigned, 0,
                             allocate(stun::kProtoUdp, [](auto& b) { b.add(attr::kMobilityTicket, std::span<const uint8_t>{}); }))
                       .step(kClientSigned, 1 | kSelReuse,
                             req(stun::Method::kRefresh, [](auto& b) {
                                 const std::array<uint8_t, 32> t{};
                                 b.add(attr::kMobilityTicket, t);
                             }))
                       .step(kClientRaw, 1, channel_data(0x4000, 4))
                       .step(kClientSigned, 0, refresh(600))
                       .bytes());
    s.emplace_back("errors",
                   Script()
                       .step(kClientSigned, 0, allocate(99))
                       .step(kClientSigned, 0, permission(kPeer0))
                       .step(kClientSigned, 0, allocate())
                       .step(kClientSigned, 0, allocate())
                       .step(kClientSigned, 0, channel_bind(0x3000, kPeer0))
                       .step(kClientSigned, 0, channel_bind(0x4000, A("127.0.0.1:9")))
                       .step(kClientSigned, 0,
                             req(stun::Method::kRefresh,
                                 [](auto& b) { b.add_address_family(attr::kRequestedAddressFamily, Family::kIPv6); }))
                       .step(kClientRaw, 0, channel_data(0x4fff, 8))
                       .bytes());
    // FINGERPRINT (RFC 8489 section 7.3): a Send indication and a Binding
    // whose FINGERPRINT is wrong are dropped (bad_fingerprint); the same with
    // kSelFingerprint, which makes it right, are relayed / answered.
    Bytes bad_fp = msg(stun::Method::kSend, stun::Class::kIndication, [&](stun::MessageBuilder& b) {
        b.add_xor_address(attr::kXorPeerAddress, kPeer0);
        const std::array<uint8_t, 5> d{1, 2, 3, 4, 5};
        b.add(attr::kData, d);
        b.add_fingerprint();
    });
    bad_fp.back() ^= 0xff;
    Bytes bad_binding = msg(stun::Method::kBinding, stun::Class::kRequest, [](stun::MessageBuilder& b) { b.add_fingerprint(); });
    bad_binding.back() ^= 0xff;
    s.emplace_back("fingerprint",
                   Script()
                       .step(kClientSigned, 0, allocate())
                       .step(kClientSigned, 0, permission(kPeer0))
                       .step(kClientRaw, 0, bad_fp)
                       .step(kClientRaw, kSelFingerprint, bad_fp)
                       .step(kClientRaw, 1, bad_binding)
                       .step(kClientRaw, 1 | kSelFingerprint, bad_binding)
                       .bytes());
    // A dual allocation whose IPv6 address alone is refreshed: the IPv4 one
    // ends on its own (with its permission and channel) while traffic of
    // both families goes on; then the rest expires. (Last in the list: a
    // seed inserted earlier shifts the transaction ids of every later one.)
    auto refresh_family = [](uint32_t lifetime, Family f) {
        return req(stun::Method::kRefresh, [=](auto& b) {
            b.add_u32(attr::kLifetime, lifetime);
            b.add_address_family(attr::kRequestedAddressFamily, f);
        });
    };
    s.emplace_back("udp-dual-stack-lifetimes",
                   Script()
                       .step(kClientSigned, 0,
                             allocate(stun::kProtoUdp,
                                      [](auto& b) { b.add_address_family(attr::kAdditionalAddressFamily, Family::kIPv6); }))
                       .step(kClientSigned, 0, channel_bind(0x4000, kPeer0))
                       .step(kClientSigned, 0, channel_bind(0x4001, kPeer6))
                       .step(kClock, 250)
                       .step(kClock, 250)
                       .step(kClientSigned, 0, refresh_family(600, Family::kIPv6))
                       .step(kClientSigned, 0, channel_bind(0x4001, kPeer6))
                       .step(kClock, 101)  // IPv4's 600 s are over
                       .step(kPeer, 0x21, payload)
                       .step(kPeer, 0x20, payload)
                       .step(kClientRaw, 0, channel_data(0x4000, 3))
                       .step(kClientRaw, 0, channel_data(0x4001, 3))
                       .step(kClientSigned, 0, refresh_family(600, Family::kIPv4))
                       .step(kClientSigned, 0, refresh_family(0, Family::kIPv6))
                       .bytes());
    return s;
}

}  // namespace

int main(int argc, char** argv) { return fuzzseeds::write_seeds(argc, argv, scripts()); }
