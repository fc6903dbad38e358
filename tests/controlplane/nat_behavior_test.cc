// RFC 5780 NAT behaviour discovery in the Binding handler (core/nat_behavior.*,
// core/handlers/binding.cc), on the real protocol core with the recording
// FakeIo: OTHER-ADDRESS and RESPONSE-ORIGIN on each of the four addresses,
// CHANGE-REQUEST answered from the changed IP and/or port (the FakeIo sees
// which listener a response leaves from), RESPONSE-PORT, PADDING echoed,
// and 420 / 400 wherever the server cannot or must not honour them (no
// alternates, TCP, TURN methods, malformed values). Also the configuration
// checks of alternate_ips / alternate_port.
#include "core/nat_behavior.h"

#include "server_fixture.h"
#include "stun/attributes.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;

Config with_alternates() {
    Config c;
    c.listen = {A("198.18.0.1:3478"), A("[fd00::1]:3478")};
    c.relay_ips = {A("198.18.0.1"), A("fd00::1")};
    c.alternate_ips = {A("198.18.0.2")};  // IPv4 only: IPv6 has no alternates here
    c.alternate_port = 3479;
    c.realm = "example.org";
    c.users = {{"alice", "alice-pw"}};
    c.metrics_listen = "";
    return c;
}

std::optional<Address> plain_address(const Answer& a, uint16_t type) {
    const auto* at = a.view.find(type);
    Address out;
    if (at == nullptr || stun::decode_address(a.view.value(*at), out) != stun::AttrError::kOk) {
        return std::nullopt;
    }
    return out;
}

std::vector<uint16_t> unknown_of(const Answer& a) {
    const auto* at = a.view.find(stun::attr::kUnknownAttributes);
    std::array<uint16_t, 16> buf{};
    size_t n = 0;
    if (at == nullptr || stun::decode_unknown_attributes(a.view.value(*at), buf, n) != stun::AttrError::kOk) {
        return {};
    }
    return {buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n)};
}

class NatBehavior : public ServerTest {
protected:
    void SetUp() override { start(with_alternates()); }

    // A Binding received on `on` from the client; the one message sent back.
    std::optional<SentToClient> binding(const Address& on, const Attrs& attrs, Transport t = Transport::kUdp) {
        const FiveTuple ft{A("198.18.1.1:5000"), on, t};
        const size_t before = io.client.size();
        server->on_client_datagram(ft, build(M::kBinding, stun::Class::kRequest, attrs, nullptr));
        if (io.client.size() != before + 1) {
            return std::nullopt;
        }
        return io.client.back();
    }
};

TEST_F(NatBehavior, EachOfTheFourAddressesNamesTheOneThatDiffersInBoth) {
    const Address quad[4] = {A("198.18.0.1:3478"), A("198.18.0.1:3479"), A("198.18.0.2:3478"), A("198.18.0.2:3479")};
    for (int i = 0; i < 4; ++i) {
        auto s = binding(quad[i], {});
        ASSERT_TRUE(s);
        Answer a(s->bytes);
        ASSERT_TRUE(a.success());
        EXPECT_EQ(s->to.server, quad[i]) << "without CHANGE-REQUEST the answer leaves where the request came in";
        EXPECT_EQ(plain_address(a, stun::attr::kResponseOrigin), quad[i]);
        EXPECT_EQ(plain_address(a, stun::attr::kOtherAddress), quad[3 - i]) << i;
        EXPECT_EQ(a.xor_address(stun::attr::kXorMappedAddress), A("198.18.1.1:5000"));
    }
}

TEST_F(NatBehavior, ChangeRequestAnswersFromTheChangedAddress) {
    struct Case {
        const char* on;
        bool ip, port;
        const char* from;
    } cases[] = {
        {"198.18.0.1:3478", true, true, "198.18.0.2:3479"},   // filtering test II (RFC 5780 4.4)
        {"198.18.0.1:3478", false, true, "198.18.0.1:3479"},  // filtering test III
        {"198.18.0.1:3478", true, false, "198.18.0.2:3478"},
        {"198.18.0.2:3479", true, false, "198.18.0.1:3479"},
        {"198.18.0.2:3479", false, false, "198.18.0.2:3479"},
    };
    for (const auto& k : cases) {
        auto s = binding(A(k.on), [&](stun::MessageBuilder& b) { b.add_change_request(k.ip, k.port); });
        ASSERT_TRUE(s) << k.on;
        Answer a(s->bytes);
        ASSERT_TRUE(a.success()) << a.code();
        EXPECT_EQ(s->to.server, A(k.from)) << k.on << " ip=" << k.ip << " port=" << k.port;
        EXPECT_EQ(s->to.client, A("198.18.1.1:5000"));
        EXPECT_EQ(plain_address(a, stun::attr::kResponseOrigin), A(k.from));
        EXPECT_EQ(plain_address(a, stun::attr::kOtherAddress), *nat_changed_address(shared->config, A(k.on), true, true));
    }
}

TEST_F(NatBehavior, ResponsePortAndPaddingOverUdp) {
    auto s = binding(A("198.18.0.1:3478"), [](stun::MessageBuilder& b) { b.add_response_port(7777); });
    ASSERT_TRUE(s);
    EXPECT_EQ(s->to.client, A("198.18.1.1:7777")) << "same IP, the requested port";
    Answer a(s->bytes);
    EXPECT_EQ(a.xor_address(stun::attr::kXorMappedAddress), A("198.18.1.1:5000"));

    s = binding(A("198.18.0.1:3478"), [](stun::MessageBuilder& b) { b.add_padding(1500); });
    ASSERT_TRUE(s);
    Answer p(s->bytes);
    ASSERT_TRUE(p.success());
    const auto* pad = p.view.find(stun::attr::kPadding);
    ASSERT_NE(pad, nullptr);
    EXPECT_EQ(pad->length, 1500);

    for (uint16_t bad_port : {uint16_t{0}}) {
        s = binding(A("198.18.0.1:3478"), [&](stun::MessageBuilder& b) { b.add_response_port(bad_port); });
        ASSERT_TRUE(s);
        EXPECT_EQ(Answer(s->bytes).code(), 400);
    }
    s = binding(A("198.18.0.1:3478"), [](stun::MessageBuilder& b) {
        b.add_response_port(7777);
        b.add_padding(500);
    });
    ASSERT_TRUE(s);
    EXPECT_EQ(Answer(s->bytes).code(), 400) << "PADDING with RESPONSE-PORT (RFC 5780 section 6.1)";
    EXPECT_EQ(s->to.client, A("198.18.1.1:5000")) << "the refusal goes to the sender";
    s = binding(A("198.18.0.1:3478"), [](stun::MessageBuilder& b) {
        const uint8_t short_value[2] = {0, 6};
        b.add(stun::attr::kChangeRequest, short_value);
    });
    ASSERT_TRUE(s);
    EXPECT_EQ(Answer(s->bytes).code(), 400) << "a CHANGE-REQUEST that is not 4 bytes";
}

TEST_F(NatBehavior, WhatCannotBeHonouredIs420) {
    const auto change = [](stun::MessageBuilder& b) { b.add_change_request(true, true); };
    // IPv6 has no alternates here.
    const FiveTuple v6{A("[fd00::99]:5000"), A("[fd00::1]:3478"), Transport::kUdp};
    server->on_client_datagram(v6, build(M::kBinding, stun::Class::kRequest, change, nullptr));
    Answer a(io.client.back().bytes);
    EXPECT_EQ(a.code(), 420);
    EXPECT_EQ(unknown_of(a), std::vector<uint16_t>{stun::attr::kChangeRequest});
    EXPECT_FALSE(a.view.find(stun::attr::kOtherAddress));
    // Nor, without alternates, RESPONSE-PORT and PADDING: RFC 5780 is off there.
    for (const auto& [attrs, type] : std::vector<std::pair<Attrs, uint16_t>>{
             {[](stun::MessageBuilder& b) { b.add_response_port(9); }, stun::attr::kResponsePort},
             {[](stun::MessageBuilder& b) { b.add_padding(1200); }, stun::attr::kPadding}}) {
        const size_t before = io.client.size();
        server->on_client_datagram(v6, build(M::kBinding, stun::Class::kRequest, attrs, nullptr));
        ASSERT_EQ(io.client.size(), before + 1);
        Answer u(io.client.back().bytes);
        EXPECT_EQ(u.code(), 420);
        EXPECT_EQ(unknown_of(u), std::vector<uint16_t>{type});
        EXPECT_EQ(io.client.back().to.client, v6.client) << "to the sender's own port";
    }
    // Over TCP there is nothing to change and no datagram to pad or redirect.
    for (const Attrs& attrs : std::vector<Attrs>{change, [](stun::MessageBuilder& b) { b.add_response_port(9); },
                                                 [](stun::MessageBuilder& b) { b.add_padding(8); }}) {
        auto s = binding(A("198.18.0.1:3478"), attrs, Transport::kTcp);
        ASSERT_TRUE(s);
        EXPECT_EQ(Answer(s->bytes).code(), 420);
        EXPECT_EQ(s->to.server, A("198.18.0.1:3478"));
    }
    // TURN methods do not process them either.
    const FiveTuple ft{A("198.18.1.1:6000"), A("198.18.0.1:3478"), Transport::kUdp};
    Answer al = allocate(ft, change);
    EXPECT_EQ(al.code(), 420);
}

// RFC 3489 clients (no magic cookie): CHANGE-REQUEST is honoured from the
// alternates, with CHANGED-ADDRESS; without alternates it is not answered,
// since an answer from the same address would read as a full-cone NAT.
std::vector<uint8_t> rfc3489_binding(uint8_t change_flags) {
    std::vector<uint8_t> m = {0x00, 0x01, 0x00, static_cast<uint8_t>(change_flags != 0 ? 8 : 0)};
    for (uint8_t i = 4; i < 20; ++i) {
        m.push_back(static_cast<uint8_t>(i * 7));  // a 128-bit transaction ID, no magic cookie
    }
    if (change_flags != 0) {
        for (uint8_t b : {uint8_t{0x00}, uint8_t{0x03}, uint8_t{0x00}, uint8_t{0x04}, uint8_t{0}, uint8_t{0}, uint8_t{0},
                          change_flags}) {
            m.push_back(b);
        }
    }
    return m;
}

TEST_F(NatBehavior, Rfc3489ChangeRequestUsesTheAlternates) {
    const FiveTuple ft{A("198.18.1.1:5000"), A("198.18.0.1:3478"), Transport::kUdp};
    server->on_client_datagram(ft, rfc3489_binding(0x6));
    ASSERT_FALSE(io.client.empty());
    EXPECT_EQ(io.client.back().to.server, A("198.18.0.2:3479"));
    const std::vector<uint8_t>& r = io.client.back().bytes;
    ASSERT_GE(r.size(), 20u);
    EXPECT_TRUE(std::equal(r.begin() + 4, r.begin() + 20, rfc3489_binding(0).begin() + 4)) << "the old transaction ID";
    bool changed_address = false;
    for (size_t off = 20; off + 4 <= r.size(); off += 4 + (size_t{r[off + 2]} << 8 | r[off + 3])) {
        changed_address = changed_address || (r[off] == 0x00 && r[off + 1] == 0x05);
    }
    EXPECT_TRUE(changed_address);
    // Over TCP there is no other address: not answered, and no CHANGED-ADDRESS
    // in a plain answer.
    const FiveTuple tcp{A("198.18.1.1:5001"), A("198.18.0.1:3478"), Transport::kTcp};
    const size_t before = io.client.size();
    server->on_client_datagram(tcp, rfc3489_binding(0x6));
    EXPECT_EQ(io.client.size(), before);
    server->on_client_datagram(tcp, rfc3489_binding(0));
    ASSERT_EQ(io.client.size(), before + 1);
    const std::vector<uint8_t>& p = io.client.back().bytes;
    for (size_t off = 20; off + 4 <= p.size(); off += 4 + (size_t{p[off + 2]} << 8 | p[off + 3])) {
        EXPECT_FALSE(p[off] == 0x00 && p[off + 1] == 0x05) << "CHANGED-ADDRESS over TCP";
    }
}

TEST_F(ServerTest, Rfc3489ChangeRequestWithoutAlternatesIsNotAnswered) {
    const size_t before = io.client.size();
    server->on_client_datagram(tuple(), rfc3489_binding(0x2));
    EXPECT_EQ(io.client.size(), before);
    server->on_client_datagram(tuple(), rfc3489_binding(0));
    EXPECT_EQ(io.client.size(), before + 1) << "a plain RFC 3489 Binding is still answered";
}

TEST_F(ServerTest, WithoutAlternatesChangeRequestIs420AndNoOtherAddress) {
    auto a = exchange(tuple(), build(M::kBinding, stun::Class::kRequest,
                                     [](stun::MessageBuilder& b) { b.add_change_request(false, true); }, nullptr));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 420);
    auto plain = exchange(tuple(), build(M::kBinding, stun::Class::kRequest, {}, nullptr));
    ASSERT_TRUE(plain && plain->success());
    EXPECT_FALSE(plain->view.find(stun::attr::kOtherAddress));
    EXPECT_TRUE(plain->view.find(stun::attr::kResponseOrigin));
}

std::string config_error(std::string_view toml) {
    auto r = load_config_text(toml, {});
    auto* e = std::get_if<ConfigError>(&r);
    return e != nullptr ? e->message : std::string();
}

TEST(NatBehaviorConfig, AlternatesAreCheckedAtStartUp) {
    const std::string base = "[auth]\nusers = [\"a:b\"]\n[server]\n";
    auto ok = load_config_text(base + "listen = [\"127.0.0.1:3478\"]\nalternate_ips = [\"127.0.0.2\"]\nalternate_port = 3479\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(ok)) << std::get<ConfigError>(ok).message;
    const Config& c = std::get<Config>(ok);
    EXPECT_EQ(nat_extra_listeners(c), (std::vector<Address>{A("127.0.0.1:3479"), A("127.0.0.2:3478"), A("127.0.0.2:3479")}));

    EXPECT_EQ(config_error(base + "listen = [\"127.0.0.1:3478\"]\nalternate_ips = [\"127.0.0.2\"]\n")
                  .rfind("[server].alternate_port: NAT behaviour discovery (RFC 5780) needs both", 0),
              0u);
    EXPECT_EQ(config_error(base + "listen = [\"127.0.0.1:3478\"]\nalternate_port = 3479\n").rfind("[server].alternate_ips:", 0), 0u);
    EXPECT_NE(config_error(base + "listen = [\"127.0.0.1:3478\"]\nalternate_ips = [\"127.0.0.1\"]\nalternate_port = 3479\n")
                  .find("listener's own IP"),
              std::string::npos);
    EXPECT_NE(config_error(base + "listen = [\"127.0.0.1:3478\"]\nalternate_ips = [\"127.0.0.2\"]\nalternate_port = 3478\n")
                  .find("listener's own port"),
              std::string::npos);
    EXPECT_NE(config_error(base + "listen = [\"0.0.0.0:3478\"]\nrelay_ips = [\"127.0.0.1\"]\n"
                                  "alternate_ips = [\"127.0.0.2\"]\nalternate_port = 3479\n")
                  .find("not the wildcard"),
              std::string::npos);
    EXPECT_NE(config_error(base + "listen = [\"127.0.0.1:3478\", \"127.0.0.3:3478\"]\n"
                                  "alternate_ips = [\"127.0.0.2\"]\nalternate_port = 3479\n")
                  .find("exactly one UDP listener"),
              std::string::npos);
}

}  // namespace
}  // namespace turn::cp::test
