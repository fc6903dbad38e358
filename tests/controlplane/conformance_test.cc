// Conformance test: starts the real turn-relay process on loopback with a
// temporary TOML configuration and sends hand-built requests over UDP, one
// test per RFC 8656 error case, plus the happy paths (IPv4 and IPv6
// ChannelData and Send/Data round trips through a local UDP echo peer), an
// RFC 3489 Binding, and a retransmitted Allocate.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "auth/credential_store.h"
#include "common/bytes.h"
#include "loopback_util.h"
#include "stun_client.h"
#include "udp_socket.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;
using C = stun::Class;

Address A(const char* s) { return *Address::parse(s); }

uint16_t free_udp_port(const Address& ip) {
    UdpSocket s(ip.with_port(0));
    return s.local().port;
}

// The relay under test, a child process.
class RelayProcess {
public:
    RelayProcess(const std::string& name, const std::string& toml_body, uint16_t port) : port_(port) {
        path_ = "/tmp/turn-relay-conformance-" + std::to_string(::getpid()) + "-" + name + ".toml";
        std::ofstream(path_) << toml_body;
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execl(TURN_RELAY_PATH, "turn-relay", "--config", path_.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // Ready when a Binding request is answered.
        UdpSocket s(A("127.0.0.1:0"));
        const auto req = build(M::kBinding, C::kRequest, {}, nullptr);
        for (int i = 0; i < 100 && !ready_; ++i) {
            s.send(A("127.0.0.1:0").with_port(port_), req);
            ready_ = s.recv(100).has_value();
        }
    }
    ~RelayProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::usleep(100'000);
            ::kill(pid_, SIGTERM);  // second signal: end the drain at once
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
        ::unlink(path_.c_str());
    }
    bool ready() const { return ready_; }
    void signal(int sig) const { ::kill(pid_, sig); }
    // Exit status if the process ends within timeout_ms, else nullopt.
    std::optional<int> wait_exit(int timeout_ms) {
        for (int i = 0; i < timeout_ms / 10; ++i) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            ::usleep(10'000);
        }
        return std::nullopt;
    }
    Address v4() const { return A("127.0.0.1").with_port(port_); }
    Address v6() const { return A("::1").with_port(port_); }

private:
    std::string path_;
    pid_t pid_ = -1;
    uint16_t port_;
    bool ready_ = false;
};

std::string config(uint16_t port, const std::string& relay_ips, uint16_t pmin, uint16_t pmax,
                   const std::string& extra, const std::string& metrics = "", int drain_s = 1) {
    return "[server]\nlisten = [\"127.0.0.1:" + std::to_string(port) + "\", \"[::1]:" + std::to_string(port) +
           "\"]\nrelay_ips = " + relay_ips + "\nrelay_port_min = " + std::to_string(pmin) +
           "\nrelay_port_max = " + std::to_string(pmax) +
           "\nrealm = \"conformance.test\"\nthreads = 1\n"
           "[auth]\nusers = [\"alice:alice-pw\", \"bob:bob-pw\"]\n" + extra +
           "[policy]\nallow_peers = [\"127.0.0.0/8\", \"::1/128\"]\n"
           "[metrics]\nlisten = \"" + metrics + "\"\n[log]\nlevel = \"warn\"\n[drain]\ndeadline_s = " +
           std::to_string(drain_s) + "\n";
}

// A client talking to one relay listener from its own UDP socket (= its own 5-tuple).
class Client {
public:
    Client(const Address& server, const std::string& user = "alice")
        : server_(server), sock_(server.is_v6() ? A("[::1]:0") : A("127.0.0.1:0")) {
        creds_.user = user;
        creds_.password = user + "-pw";
    }

    std::optional<Answer> exchange(const std::vector<uint8_t>& req) {
        sock_.send(server_, req);
        for (int i = 0; i < 5; ++i) {
            auto r = sock_.recv();
            if (!r) {
                return std::nullopt;
            }
            Answer a(*r);
            // Skip indications (Data) while waiting for an answer.
            if (a.ok && a.view.cls() != C::kIndication &&
                std::equal(req.begin() + 8, req.begin() + 20, r->begin() + 8)) {
                return a;
            }
        }
        return std::nullopt;
    }

    // Learns REALM and NONCE from a 401.
    void login() {
        auto a = exchange(build(M::kAllocate, C::kRequest, {}, nullptr));
        ASSERT_TRUE(a);
        ASSERT_EQ(a->code(), 401);
        creds_.realm = a->text(stun::attr::kRealm);
        creds_.nonce = a->text(stun::attr::kNonce);
    }

    Answer request(M m, const Attrs& attrs) {
        if (creds_.nonce.empty()) {
            login();
        }
        auto a = exchange(build(m, C::kRequest, attrs, &creds_));
        EXPECT_TRUE(a) << "no answer";
        return a ? *a : Answer({});
    }
    Answer allocate(const Attrs& extra = {}) {
        return request(M::kAllocate, [&](stun::MessageBuilder& b) {
            b.add_requested_transport(stun::kProtoUdp);
            if (extra) {
                extra(b);
            }
        });
    }

    Credentials& creds() { return creds_; }
    UdpSocket& socket() { return sock_; }
    const Address& server() const { return server_; }

private:
    Address server_;
    UdpSocket sock_;
    Credentials creds_;
};

// Echoes every datagram back to its sender.
class EchoPeer {
public:
    explicit EchoPeer(const Address& ip) : sock_(ip.with_port(0)) {
        thread_ = std::thread([this] {
            while (!stop_) {
                Address from;
                if (auto d = sock_.recv(50, &from)) {
                    sock_.send(from, *d);
                }
            }
        });
    }
    ~EchoPeer() {
        stop_ = true;
        thread_.join();
    }
    Address address() const { return sock_.local(); }

private:
    UdpSocket sock_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

class Conformance : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        std::mt19937 rng(static_cast<unsigned>(::getpid()));
        const uint16_t base = static_cast<uint16_t>(40000 + (rng() % 200) * 100);
        const uint16_t pa = free_udp_port(A("127.0.0.1:0"));
        main_ = new RelayProcess("main", config(pa, "[\"127.0.0.1\", \"::1\"]", base, base + 49,
                                                "rest_secrets = [\"s3cret\", \"old-s3cret\"]\n"
                                                "[allocation]\nmax_per_user = 100\n"),
                                 pa);
        const uint16_t pb = free_udp_port(A("127.0.0.1:0"));
        // IPv4 relay only, a single relayed port, one allocation per user,
        // nonces valid for one second.
        small_ = new RelayProcess("small", config(pb, "[\"127.0.0.1\"]", base + 60, base + 60,
                                                  "nonce_lifetime_s = 1\n[allocation]\nmax_per_user = 1\n"),
                                  pb);
    }
    static void TearDownTestSuite() {
        delete main_;
        delete small_;
        main_ = nullptr;
        small_ = nullptr;
    }
    void SetUp() override {
        ASSERT_TRUE(main_->ready()) << "turn-relay (main) did not start";
        ASSERT_TRUE(small_->ready()) << "turn-relay (small) did not start";
    }

    static RelayProcess* main_;
    static RelayProcess* small_;
};
RelayProcess* Conformance::main_ = nullptr;
RelayProcess* Conformance::small_ = nullptr;

std::vector<uint8_t> channel_data(uint16_t ch, std::string_view payload) {
    std::vector<uint8_t> v(pad4(static_cast<uint32_t>(4 + payload.size())), 0);
    store_be16(v.data(), ch);
    store_be16(v.data() + 2, static_cast<uint16_t>(payload.size()));
    for (size_t i = 0; i < payload.size(); ++i) {
        v[4 + i] = static_cast<uint8_t>(payload[i]);
    }
    return v;
}

TEST_F(Conformance, BindingHasXorMappedResponseOriginSoftwareFingerprint) {
    Client c(main_->v4());
    auto a = c.exchange(build(M::kBinding, C::kRequest, {}, nullptr, random_txid(), true));
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->success());
    EXPECT_EQ(a->xor_address(stun::attr::kXorMappedAddress), c.socket().local());
    EXPECT_TRUE(a->has(stun::attr::kResponseOrigin));
    EXPECT_EQ(a->text(stun::attr::kSoftware), "turnrelay");
    EXPECT_NE(a->view.fingerprint(), nullptr);
}

TEST_F(Conformance, Rfc3489BindingGetsMappedAddress) {
    UdpSocket s(A("127.0.0.1:0"));
    std::vector<uint8_t> req(20, 0);
    req[1] = 0x01;
    for (size_t i = 4; i < 20; ++i) {
        req[i] = static_cast<uint8_t>(0xA0 + i);
    }
    s.send(main_->v4(), req);
    auto r = s.recv();
    ASSERT_TRUE(r);
    ASSERT_GE(r->size(), 32u);
    EXPECT_EQ((*r)[1], 0x01);
    EXPECT_EQ((*r)[0], 0x01);
    EXPECT_TRUE(std::equal(req.begin() + 4, req.end(), r->begin() + 4));
    EXPECT_EQ(load_be16(r->data() + 20), stun::attr::kMappedAddress);
    EXPECT_EQ(load_be16(r->data() + 26), s.local().port);
}

TEST_F(Conformance, E400_AllocateWithoutRequestedTransport) {
    Client c(main_->v4());
    auto a = c.request(M::kAllocate, {});
    EXPECT_EQ(a.code(), 400);
    EXPECT_EQ(a.reason(), "Bad Request");
    EXPECT_TRUE(a.has(stun::attr::kMessageIntegrity));
}

TEST_F(Conformance, E400_BadChannelNumber) {
    Client c(main_->v4());
    ASSERT_TRUE(c.allocate().success());
    auto a = c.request(M::kChannelBind, [](auto& b) {
        b.add_channel_number(0x3FFF);
        b.add_xor_address(stun::attr::kXorPeerAddress, A("127.0.0.1:9"));
    });
    EXPECT_EQ(a.code(), 400);
}

TEST_F(Conformance, E401_NoCredentialsCarriesRealmNonceAlgorithms) {
    Client c(main_->v4());
    auto a = c.exchange(build(M::kAllocate, C::kRequest,
                              [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, nullptr));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code(), 401);
    EXPECT_EQ(a->reason(), "Unauthenticated");
    EXPECT_EQ(a->text(stun::attr::kRealm), "conformance.test");
    EXPECT_FALSE(a->text(stun::attr::kNonce).empty());
    EXPECT_TRUE(a->has(stun::attr::kPasswordAlgorithms));
}

TEST_F(Conformance, E401_WrongPassword) {
    Client c(main_->v4());
    c.login();
    c.creds().password = "wrong";
    EXPECT_EQ(c.allocate().code(), 401);
}

TEST_F(Conformance, E403_DeniedPeers) {
    Client c(main_->v4());
    ASSERT_TRUE(c.allocate().success());
    for (const char* peer : {"0.0.0.0:9", "169.254.1.1:9", "224.0.0.1:9"}) {
        auto a = c.request(M::kCreatePermission,
                           [&](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, A(peer)); });
        EXPECT_EQ(a.code(), 403) << peer;
        EXPECT_EQ(a.reason(), "Forbidden");
    }
    // The relay's own listening port stays denied even with loopback allowed.
    auto self = c.request(M::kChannelBind, [&](auto& b) {
        b.add_channel_number(0x4000);
        b.add_xor_address(stun::attr::kXorPeerAddress, main_->v4());
    });
    EXPECT_EQ(self.code(), 403);
}

TEST_F(Conformance, E420_UnknownComprehensionRequiredAttribute) {
    Client c(main_->v4());
    auto a = c.allocate([](auto& b) {
        const std::array<uint8_t, 4> v{};
        b.add(0x0031, v);
    });
    EXPECT_EQ(a.code(), 420);
    EXPECT_EQ(a.reason(), "Unknown Attribute");
    const auto* u = a.view.find(stun::attr::kUnknownAttributes);
    ASSERT_NE(u, nullptr);
    EXPECT_EQ(load_be16(a.view.value(*u).data()), 0x0031);
}

TEST_F(Conformance, E437_NoAllocationAndDoubleAllocate) {
    Client c(main_->v4());
    auto r = c.request(M::kRefresh, {});
    EXPECT_EQ(r.code(), 437);
    EXPECT_EQ(r.reason(), "Allocation Mismatch");
    ASSERT_TRUE(c.allocate().success());
    EXPECT_EQ(c.allocate().code(), 437);
}

TEST_F(Conformance, E438_StaleNonceGetsFreshNonce) {
    Client c(small_->v4());
    c.login();
    const std::string old = c.creds().nonce;
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));  // a real process: real time
    auto a = c.allocate();
    EXPECT_EQ(a.code(), 438);
    EXPECT_EQ(a.reason(), "Stale Nonce");
    EXPECT_TRUE(a.has(stun::attr::kRealm));
    EXPECT_NE(a.text(stun::attr::kNonce), old);
    EXPECT_FALSE(a.text(stun::attr::kNonce).empty());
}

TEST_F(Conformance, E440_FamilyNotAvailable) {
    Client c(small_->v4());
    auto a = c.allocate([](auto& b) { b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6); });
    EXPECT_EQ(a.code(), 440);
    EXPECT_EQ(a.reason(), "Address Family not Supported");
}

TEST_F(Conformance, E441_OtherUserOnAllocation) {
    Client c(main_->v4());
    ASSERT_TRUE(c.allocate().success());
    c.creds().user = "bob";
    c.creds().password = "bob-pw";
    auto a = c.request(M::kRefresh, {});
    EXPECT_EQ(a.code(), 441);
    EXPECT_EQ(a.reason(), "Wrong Credentials");
}

TEST_F(Conformance, E442_UnsupportedTransport) {
    Client c(main_->v4());
    auto a = c.request(M::kAllocate, [](auto& b) { b.add_requested_transport(132); });  // SCTP
    EXPECT_EQ(a.code(), 442);
    EXPECT_EQ(a.reason(), "Unsupported Transport Protocol");
    // TCP relaying (RFC 6062) exists, but not for a client on UDP (section 5.1).
    Client d(main_->v4());
    EXPECT_EQ(d.request(M::kAllocate, [](auto& b) { b.add_requested_transport(stun::kProtoTcp); }).code(), 400);
}

TEST_F(Conformance, E443_PeerFamilyMismatch) {
    Client c(main_->v4());
    ASSERT_TRUE(c.allocate().success());  // IPv4 only
    auto a = c.request(M::kCreatePermission,
                       [](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, A("[::1]:9")); });
    EXPECT_EQ(a.code(), 443);
    EXPECT_EQ(a.reason(), "Peer Address Family Mismatch");
    auto r = c.request(M::kRefresh,
                       [](auto& b) { b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6); });
    EXPECT_EQ(r.code(), 443);
}

// Connect (RFC 6062) needs a TCP allocation, made over a TCP or TLS client
// connection: on a UDP allocation it is answered 400 (section 5.2). 446 for a
// second connection to the same peer, on a TCP allocation, is tested in
// tests/integration/test_tcp_allocations.py.
TEST_F(Conformance, Connect_OnUdpAllocationIs400) {
    Client c(main_->v4());
    ASSERT_TRUE(c.allocate().success());
    auto a = c.request(M::kConnect,
                       [](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, A("127.0.0.1:9")); });
    EXPECT_EQ(a.code(), 400);
}

TEST_F(Conformance, E486_QuotaThenE508_PortsExhausted) {
    Client first(small_->v4(), "alice");
    ASSERT_TRUE(first.allocate().success());  // takes the only relayed port
    Client second(small_->v4(), "alice");
    auto q = second.allocate();
    EXPECT_EQ(q.code(), 486);
    EXPECT_EQ(q.reason(), "Allocation Quota Reached");
    Client third(small_->v4(), "bob");
    auto p = third.allocate();
    EXPECT_EQ(p.code(), 508);
    EXPECT_EQ(p.reason(), "Insufficient Capacity");
    EXPECT_TRUE(first.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    EXPECT_TRUE(third.allocate().success());
    EXPECT_TRUE(third.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
}

TEST_F(Conformance, RetransmittedAllocateGetsIdenticalResponse) {
    Client c(main_->v4());
    c.login();
    const auto req = build(M::kAllocate, C::kRequest, [](auto& b) { b.add_requested_transport(stun::kProtoUdp); },
                           &c.creds());
    auto first = c.exchange(req);
    auto second = c.exchange(req);
    ASSERT_TRUE(first && second);
    EXPECT_TRUE(first->success());
    EXPECT_EQ(first->bytes, second->bytes);
}

void round_trip(RelayProcess& relay, bool v6) {
    EchoPeer peer(v6 ? A("[::1]:0") : A("127.0.0.1:0"));
    Client c(v6 ? relay.v6() : relay.v4());
    auto alloc = c.allocate([&](auto& b) {
        if (v6) {
            b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
        }
    });
    ASSERT_TRUE(alloc.success()) << alloc.code();
    const auto relayed = alloc.xor_address(stun::attr::kXorRelayedAddress);
    ASSERT_TRUE(relayed);
    EXPECT_EQ(relayed->is_v6(), v6);

    // Send indication without permission: silently dropped.
    auto send = [&](std::string_view text) {
        c.socket().send(c.server(), build(M::kSend, C::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
            b.add(stun::attr::kData, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                                              text.size()));
        }, nullptr));
    };
    send("dropped");
    EXPECT_FALSE(c.socket().recv(300).has_value());

    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
                }).success());
    send("hello via send");
    auto data = c.socket().recv();
    ASSERT_TRUE(data);
    Answer ind(*data);
    ASSERT_TRUE(ind.ok);
    EXPECT_TRUE(ind.view.is(M::kData, C::kIndication));
    EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), peer.address());
    const auto* d = ind.view.find(stun::attr::kData);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(ind.view.value(*d).data()), d->length), "hello via send");

    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                    b.add_channel_number(0x4001);
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
                }).success());
    c.socket().send(c.server(), channel_data(0x4001, "hello via channel"));
    auto cd = c.socket().recv();
    ASSERT_TRUE(cd);
    ASSERT_GE(cd->size(), 4u);
    EXPECT_EQ(load_be16(cd->data()), 0x4001);
    EXPECT_EQ(load_be16(cd->data() + 2), 17);
    EXPECT_EQ(std::string(cd->begin() + 4, cd->begin() + 21), "hello via channel");

    EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
}

// RFC 8656 section 11.5: an ICMP error caused by a relayed datagram reaches
// the client as a Data indication with an ICMP attribute. A closed port on
// loopback answers "port unreachable".
void icmp_round_trip(RelayProcess& relay, bool v6) {
    Client c(v6 ? relay.v6() : relay.v4());
    ASSERT_TRUE(c.allocate([&](auto& b) {
                    if (v6) {
                        b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
                    }
                }).success());
    const Address closed = v6 ? A("[::1]:0").with_port(free_udp_port(A("[::1]:0")))
                              : A("127.0.0.1:0").with_port(free_udp_port(A("127.0.0.1:0")));
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                    b.add_xor_address(stun::attr::kXorPeerAddress, closed);
                }).success());
    c.socket().send(c.server(), build(M::kSend, C::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, closed);
        const std::array<uint8_t, 4> d{1, 2, 3, 4};
        b.add(stun::attr::kData, d);
    }, nullptr));
    auto r = c.socket().recv();
    ASSERT_TRUE(r) << "no Data indication for the ICMP error";
    Answer ind(*r);
    ASSERT_TRUE(ind.ok);
    EXPECT_TRUE(ind.view.is(M::kData, C::kIndication));
    EXPECT_EQ(ind.xor_address(stun::attr::kXorPeerAddress), closed);
    const auto* icmp = ind.view.find(stun::attr::kIcmp);
    ASSERT_NE(icmp, nullptr);
    stun::IcmpValue v;
    ASSERT_EQ(stun::decode_icmp(ind.view.value(*icmp), v), stun::AttrError::kOk);
    if (v6) {
        EXPECT_EQ(v.type, 1);  // ICMPv6 destination unreachable
        EXPECT_EQ(v.code, 4);  // port unreachable
    } else {
        EXPECT_EQ(v.type, 3);  // destination unreachable
        EXPECT_EQ(v.code, 3);  // port unreachable
    }
    EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
}

TEST_F(Conformance, IcmpPortUnreachableIPv4) { icmp_round_trip(*main_, false); }
TEST_F(Conformance, IcmpPortUnreachableIPv6) { icmp_round_trip(*main_, true); }

TEST_F(Conformance, HappyPathIPv4) { round_trip(*main_, false); }
TEST_F(Conformance, HappyPathIPv6) { round_trip(*main_, true); }

// RFC 8656 section 14, preferred behaviour: a datagram relayed UDP to UDP
// leaves with the DSCP and ECN bits it arrived with (IPv4 TOS <-> IPv6
// Traffic Class, also across families), in both directions and for
// ChannelData, Send and Data indications; the relay's own answers keep the
// socket's default. Real sockets on loopback read the byte with
// IP_RECVTOS / IPV6_RECVTCLASS.

// The set-up both round trips below share: a client of `relay` (IPv6 if
// client_v6) with an allocation of the peer's family (peer_v6), `channel`
// bound to `peer`, and `other` on the peer's IP (a permission, no channel).
// prepare(socket, v6) runs on each of the three sockets first (asking for
// the marks to read), `before_allocate` on the client after that. Then
// body(client, peer, other, relayed address).
template <typename Prepare, typename Before, typename Body>
void with_relayed(RelayProcess& relay, bool client_v6, bool peer_v6, uint16_t channel, Prepare prepare,
                  Before before_allocate, Body body) {
    Client c(client_v6 ? relay.v6() : relay.v4());
    const Address pip = peer_v6 ? A("[::1]:0") : A("127.0.0.1:0");
    UdpSocket peer(pip), other(pip);
    prepare(c.socket(), client_v6);
    prepare(peer, peer_v6);
    prepare(other, peer_v6);
    before_allocate(c.socket());
    auto alloc = c.allocate([&](auto& b) {
        b.add_address_family(stun::attr::kRequestedAddressFamily, peer_v6 ? Family::kIPv6 : Family::kIPv4);
    });
    ASSERT_TRUE(alloc.success()) << alloc.code();
    const auto relayed = alloc.xor_address(stun::attr::kXorRelayedAddress);
    ASSERT_TRUE(relayed && relayed->is_v6() == peer_v6);
    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                    b.add_channel_number(channel);
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer.local());
                }).success());
    body(c, peer, other, *relayed);
}

namespace tos {

void set(const UdpSocket& s, bool v6, int tos) { ASSERT_TRUE(set_socket_tos(s.fd(), v6, tos)); }
void want(const UdpSocket& s, bool v6) { ASSERT_TRUE(receive_socket_tos(s.fd(), v6)); }
std::optional<WithMarks> recv(const UdpSocket& s) { return recv_with_marks(s.fd()); }

// client_v6: the client's transport; peer_v6: the relayed address's and
// the peer's family (REQUESTED-ADDRESS-FAMILY); dscp: the relay's
// [server].dscp (-1: "keep").
void round_trip(RelayProcess& relay, bool client_v6, bool peer_v6, int dscp = -1) {
    // What a datagram sent with `t` arrives with: the same, or the fixed
    // DSCP with its own ECN bits.
    auto out = [dscp](int t) { return dscp < 0 ? t : (t & 0x03) | dscp << 2; };
    auto body = [&](Client& c, UdpSocket& peer, UdpSocket& other, const Address& relayed) {
        // The answers: the server's own, default TOS (read with the byte).
        c.socket().send(c.server(), build(M::kBinding, C::kRequest, {}, nullptr));
        auto ans = recv(c.socket());
        ASSERT_TRUE(ans);
        EXPECT_EQ(ans->tos, 0) << "a Binding answer to an EF request";

        // Client -> peer, ChannelData: EF + ECT(1).
        set(c.socket(), client_v6, 0xB9);
        c.socket().send(c.server(), channel_data(0x4002, "cd up"));
        auto up = recv(peer);
        ASSERT_TRUE(up) << "ChannelData did not reach the peer";
        EXPECT_EQ(std::string(up->bytes.begin(), up->bytes.end()), "cd up");
        EXPECT_EQ(up->tos, out(0xB9));
        // A Send indication: CE on a best-effort datagram.
        set(c.socket(), client_v6, 0x03);
        c.socket().send(c.server(), build(M::kSend, C::kIndication, [&](auto& b) {
            b.add_xor_address(stun::attr::kXorPeerAddress, other.local());
            const std::array<uint8_t, 4> d{'s', 'e', 'n', 'd'};
            b.add(stun::attr::kData, d);
        }, nullptr));
        auto sent = recv(other);
        ASSERT_TRUE(sent) << "Send indication did not reach the peer";
        EXPECT_EQ(sent->bytes.size(), 4u);
        EXPECT_EQ(sent->tos, out(0x03));
        // Unmarked stays unmarked.
        set(c.socket(), client_v6, 0);
        c.socket().send(c.server(), channel_data(0x4002, "plain"));
        auto plain = recv(peer);
        ASSERT_TRUE(plain);
        EXPECT_EQ(plain->tos, out(0));

        // Peer -> client: AF41 + ECT(0) as ChannelData, CS1 as a Data indication.
        set(peer, peer_v6, 0x8A);
        peer.send(relayed, std::vector<uint8_t>{'d', 'o', 'w', 'n'});
        auto down = recv(c.socket());
        ASSERT_TRUE(down) << "peer datagram did not reach the client";
        ASSERT_GE(down->bytes.size(), 8u);
        EXPECT_EQ(load_be16(down->bytes.data()), 0x4002);
        EXPECT_EQ(down->tos, out(0x8A));
        set(other, peer_v6, 0x20);
        other.send(relayed, std::vector<uint8_t>{'i', 'n', 'd'});
        auto ind = recv(c.socket());
        ASSERT_TRUE(ind);
        Answer a(ind->bytes);
        ASSERT_TRUE(a.ok);
        EXPECT_TRUE(a.view.is(M::kData, C::kIndication));
        EXPECT_EQ(ind->tos, out(0x20));

        set(c.socket(), client_v6, 0);
        EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    };
    with_relayed(relay, client_v6, peer_v6, 0x4002, want,
                 [&](const UdpSocket& s) { set(s, client_v6, 0xB8); },  // EF, requests included
                 body);
}

}  // namespace tos

TEST_F(Conformance, DscpAndEcnKeptIPv4) { tos::round_trip(*main_, false, false); }
TEST_F(Conformance, DscpAndEcnKeptIPv6) { tos::round_trip(*main_, true, true); }
TEST_F(Conformance, DscpAndEcnKeptIPv4ClientIPv6Peer) { tos::round_trip(*main_, false, true); }
TEST_F(Conformance, DscpAndEcnKeptIPv6ClientIPv4Peer) { tos::round_trip(*main_, true, false); }

// RFC 8656 section 14, TTL preferred behaviour: data relayed UDP to UDP
// leaves with one less TTL / Hop Limit than it arrived with (IPv4 TTL <->
// IPv6 Hop Limit across families), both directions, for ChannelData, Send
// and Data indications; data that arrived with 1 is not relayed; a request
// with 1 is still answered, with the default. Loopback decrements nothing,
// so the peer reads exactly what the relay sent (IP_RECVTTL /
// IPV6_RECVHOPLIMIT).
namespace ttl {

void set(const UdpSocket& s, bool v6, int t) { ASSERT_TRUE(set_socket_ttl(s.fd(), v6, t)); }
void want(const UdpSocket& s, bool v6) { ASSERT_TRUE(receive_socket_ttl(s.fd(), v6)); }
std::optional<WithMarks> recv(const UdpSocket& s) { return recv_with_marks(s.fd()); }
std::string text(const std::optional<WithMarks>& g) { return g ? std::string(g->bytes.begin(), g->bytes.end()) : "(none)"; }
std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> send_indication(const Address& to, std::string_view payload) {
    return build(M::kSend, C::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, to);
        b.add(stun::attr::kData, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(payload.data()),
                                                          payload.size()));
    }, nullptr);
}

// client_v6: the client's transport; peer_v6: the relayed address's and
// the peer's family.
void round_trip(RelayProcess& relay, bool client_v6, bool peer_v6) {
    auto body = [&](Client& c, UdpSocket& peer, UdpSocket& other, const Address& relayed) {
        // A request with TTL 1 is answered, with the default.
        set(c.socket(), client_v6, 1);
        c.socket().send(c.server(), build(M::kBinding, C::kRequest, {}, nullptr));
        auto ans = recv(c.socket());
        ASSERT_TRUE(ans) << "a Binding request with TTL 1 must be answered";
        EXPECT_TRUE(Answer(ans->bytes).success());
        EXPECT_EQ(ans->ttl, default_ttl(client_v6)) << "the answer is the relay's own message";

        // Client -> peer: 9 arrives as 8, ChannelData and Send indication.
        set(c.socket(), client_v6, 9);
        c.socket().send(c.server(), channel_data(0x4003, "cd up"));
        auto up = recv(peer);
        ASSERT_TRUE(up) << "ChannelData did not reach the peer";
        EXPECT_EQ(text(up), "cd up");
        EXPECT_EQ(up->ttl, 8);
        c.socket().send(c.server(), send_indication(other.local(), "send"));
        auto sent = recv(other);
        ASSERT_TRUE(sent) << "Send indication did not reach the peer";
        EXPECT_EQ(text(sent), "send");
        EXPECT_EQ(sent->ttl, 8);
        // 1 is not relayed: the next datagram each peer gets is the one sent after it.
        set(c.socket(), client_v6, 1);
        c.socket().send(c.server(), channel_data(0x4003, "expired"));
        c.socket().send(c.server(), send_indication(other.local(), "expired"));
        set(c.socket(), client_v6, 2);
        c.socket().send(c.server(), channel_data(0x4003, "last hop"));
        c.socket().send(c.server(), send_indication(other.local(), "last hop"));
        auto last = recv(peer);
        EXPECT_EQ(text(last), "last hop");
        EXPECT_EQ(last ? last->ttl : -1, 1);
        auto last_ind = recv(other);
        EXPECT_EQ(text(last_ind), "last hop");
        EXPECT_EQ(last_ind ? last_ind->ttl : -1, 1);

        // Peer -> client: 9 arrives as 8, as ChannelData and as a Data indication.
        set(peer, peer_v6, 9);
        peer.send(relayed, bytes("down"));
        auto down = recv(c.socket());
        ASSERT_TRUE(down) << "peer datagram did not reach the client";
        ASSERT_GE(down->bytes.size(), 8u);
        EXPECT_EQ(load_be16(down->bytes.data()), 0x4003);
        EXPECT_EQ(down->ttl, 8);
        set(other, peer_v6, 9);
        other.send(relayed, bytes("ind"));
        auto ind = recv(c.socket());
        ASSERT_TRUE(ind);
        Answer a(ind->bytes);
        ASSERT_TRUE(a.ok);
        EXPECT_TRUE(a.view.is(M::kData, C::kIndication));
        EXPECT_EQ(ind->ttl, 8);
        // 1 is not relayed.
        set(peer, peer_v6, 1);
        peer.send(relayed, bytes("expired"));
        set(peer, peer_v6, 200);
        peer.send(relayed, bytes("after"));
        auto after = recv(c.socket());
        ASSERT_TRUE(after);
        ASSERT_GE(after->bytes.size(), 9u);
        EXPECT_EQ(std::string(after->bytes.begin() + 4, after->bytes.end()).substr(0, 5), "after");
        EXPECT_EQ(after->ttl, 199);

        set(c.socket(), client_v6, -1);  // the default
        EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    };
    with_relayed(relay, client_v6, peer_v6, 0x4003, want,
                 [&](const UdpSocket& s) { set(s, client_v6, 9); },  // requests included
                 body);
}

}  // namespace ttl

TEST_F(Conformance, TtlDecrementedIPv4) { ttl::round_trip(*main_, false, false); }
TEST_F(Conformance, TtlDecrementedIPv6) { ttl::round_trip(*main_, true, true); }
TEST_F(Conformance, TtlDecrementedIPv4ClientIPv6Peer) { ttl::round_trip(*main_, false, true); }
TEST_F(Conformance, TtlDecrementedIPv6ClientIPv4Peer) { ttl::round_trip(*main_, true, false); }


TEST_F(Conformance, DualStackAllocation) {
    Client c(main_->v6());
    auto a = c.allocate([](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(a.success());
    EXPECT_EQ(a.xor_addresses(stun::attr::kXorRelayedAddress).size(), 2u);
}

TEST_F(Conformance, DualStackWithMissingFamilyReportsAddressErrorCode) {
    Client c(small_->v4());  // IPv4 relay only
    auto a = c.allocate([](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(a.success()) << a.code();
    EXPECT_EQ(a.xor_addresses(stun::attr::kXorRelayedAddress).size(), 1u);
    const auto* e = a.view.find(stun::attr::kAddressErrorCode);
    ASSERT_NE(e, nullptr);
    stun::AddressErrorValue v;
    ASSERT_EQ(stun::decode_address_error_code(a.view.value(*e), v), stun::AttrError::kOk);
    EXPECT_EQ(v.family, Family::kIPv6);
    EXPECT_EQ(v.code, 440);
    EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
}

TEST_F(Conformance, RestSecretCredentialsWithRotation) {
    for (const char* secret : {"s3cret", "old-s3cret"}) {
        Client c(main_->v4());
        const std::string user = std::to_string(::time(nullptr) + 3600) + ":carol";
        c.creds().user = user;
        c.creds().password = auth::rest_password(secret, user);
        auto a = c.allocate();
        EXPECT_TRUE(a.success()) << secret << " " << a.code();
        EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    }
    Client expired(main_->v4());
    const std::string user = std::to_string(::time(nullptr) - 10) + ":carol";
    expired.creds().user = user;
    expired.creds().password = auth::rest_password("s3cret", user);
    EXPECT_EQ(expired.allocate().code(), 401);
}

TEST_F(Conformance, Sha256IntegrityWithUserhash) {
    Client c(main_->v4());
    c.login();
    c.creds().alg = stun::PasswordAlgorithm::kSha256;
    c.creds().send_algorithms = true;
    c.creds().sha256_mi = true;
    c.creds().userhash = true;
    auto a = c.allocate();
    EXPECT_TRUE(a.success()) << a.code();
    EXPECT_TRUE(a.has(stun::attr::kMessageIntegritySha256));
}

uint16_t random_port_base(int slot) {
    std::mt19937 rng(static_cast<unsigned>(::getpid()) * 7u + static_cast<unsigned>(slot));
    return static_cast<uint16_t>(30000 + (rng() % 90) * 100);
}

TEST(ConformanceProcess, MetricsAreLive) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t mport = free_port(SOCK_STREAM);
    const uint16_t base = random_port_base(1);
    RelayProcess relay("metrics", config(port, "[\"127.0.0.1\", \"::1\"]", base, base + 20, "",
                                         "127.0.0.1:" + std::to_string(mport)),
                       port);
    ASSERT_TRUE(relay.ready());
    EchoPeer peer(A("127.0.0.1:0"));
    Client c(relay.v4());
    ASSERT_TRUE(c.allocate().success());
    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                    b.add_channel_number(0x4000);
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
                }).success());
    for (int i = 0; i < 3; ++i) {
        c.socket().send(c.server(), channel_data(0x4000, "abcd"));
        ASSERT_TRUE(c.socket().recv().has_value());
    }
    std::string body;
    for (int i = 0; i < 50 && body.find("turn_allocations") == std::string::npos; ++i) {
        body = http_get(mport, "/metrics");
        ::usleep(20'000);
    }
    EXPECT_NE(body.find("turn_allocations{family=\"ipv4\"} 1"), std::string::npos) << body;
    EXPECT_NE(body.find("turn_requests_total{method=\"allocate\",code=\"200\"} 1"), std::string::npos) << body;
    EXPECT_NE(body.find("turn_requests_total{method=\"allocate\",code=\"401\"} 1"), std::string::npos);
    EXPECT_NE(body.find("turn_auth_failures_total{reason=\"no_credentials\"} 1"), std::string::npos);
    EXPECT_NE(body.find("turn_relayed_packets_total{direction=\"client_to_peer\",path=\"socket\"} 3"), std::string::npos);
    EXPECT_NE(body.find("turn_relayed_packets_total{direction=\"peer_to_client\",path=\"socket\"} 3"), std::string::npos);
    EXPECT_NE(body.find("turn_relayed_bytes_total{direction=\"client_to_peer\",path=\"socket\"} 12"), std::string::npos);
    EXPECT_NE(body.find("turn_drops_total{reason=\"no_permission\"} 0"), std::string::npos);
    EXPECT_NE(body.find("turn_quota_rejections_total{kind=\"per_user\"} 0"), std::string::npos);
    EXPECT_NE(body.find("turn_event_loop_busy_ratio{loop=\"0\"}"), std::string::npos);
}

// Data that arrives with TTL 1, or Hop Limit 0 or 1 (IPv6 sends 0), is
// dropped and counted as turn_drops_total{reason="ttl_expired"}, one each,
// from clients and from peers; nothing of it reaches the other side (the
// datagram sent after it arrives first).
TEST(ConformanceProcess, TtlExpiredDataIsDroppedAndCounted) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t mport = free_port(SOCK_STREAM);
    const uint16_t base = random_port_base(8);
    RelayProcess relay("ttl", config(port, "[\"127.0.0.1\", \"::1\"]", base, base + 20, "",
                                     "127.0.0.1:" + std::to_string(mport)),
                       port);
    ASSERT_TRUE(relay.ready());
    auto expired = [&] {
        const std::string body = http_get(mport, "/metrics");
        const std::string key = "turn_drops_total{reason=\"ttl_expired\"} ";
        const size_t at = body.find(key);
        return at == std::string::npos ? -1 : std::atoi(body.c_str() + at + key.size());
    };
    EXPECT_EQ(expired(), 0);
    int want = 0;
    for (const bool v6 : {false, true}) {
        Client c(v6 ? relay.v6() : relay.v4());
        UdpSocket peer(v6 ? A("[::1]:0") : A("127.0.0.1:0"));
        auto alloc = c.allocate([&](auto& b) {
            b.add_address_family(stun::attr::kRequestedAddressFamily, v6 ? Family::kIPv6 : Family::kIPv4);
        });
        ASSERT_TRUE(alloc.success()) << alloc.code();
        const Address relayed = *alloc.xor_address(stun::attr::kXorRelayedAddress);
        ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                        b.add_channel_number(0x4000);
                        b.add_xor_address(stun::attr::kXorPeerAddress, peer.local());
                    }).success());
        // IPv4 cannot send TTL 0 from a UDP socket; IPv6 sends Hop Limit 0.
        const std::vector<int> dead = v6 ? std::vector<int>{0, 1} : std::vector<int>{1};
        for (const int t : dead) {
            ttl::set(c.socket(), v6, t);
            c.socket().send(c.server(), channel_data(0x4000, "expired"));
            c.socket().send(c.server(), ttl::send_indication(peer.local(), "expired"));
            ttl::set(peer, v6, t);
            peer.send(relayed, ttl::bytes("expired"));
            want += 3;
        }
        ttl::set(c.socket(), v6, -1);
        ttl::set(peer, v6, -1);
        c.socket().send(c.server(), channel_data(0x4000, "after"));
        EXPECT_EQ(ttl::text(ttl::recv(peer)), "after");
        peer.send(relayed, ttl::bytes("after"));
        auto back = c.socket().recv();
        ASSERT_TRUE(back);
        ASSERT_GE(back->size(), 9u);
        EXPECT_EQ(std::string(back->begin() + 4, back->end()).substr(0, 5), "after");
        EXPECT_EQ(expired(), want);
        EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    }
    EXPECT_EQ(want, 9);
}

TEST(ConformanceProcess, SigtermDrainsThenExitsZero) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t base = random_port_base(2);
    RelayProcess relay("drain", config(port, "[\"127.0.0.1\"]", base, base + 20, "", "", 30), port);
    ASSERT_TRUE(relay.ready());
    EchoPeer peer(A("127.0.0.1:0"));
    Client c(relay.v4());
    ASSERT_TRUE(c.allocate().success());
    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                    b.add_channel_number(0x4000);
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
                }).success());
    relay.signal(SIGTERM);
    ::usleep(200'000);
    // No new allocations...
    Client late(relay.v4());
    EXPECT_EQ(late.allocate().code(), 403);
    // ...but the existing one is still served.
    c.socket().send(c.server(), channel_data(0x4000, "still here"));
    EXPECT_TRUE(c.socket().recv().has_value());
    EXPECT_TRUE(c.request(M::kRefresh, {}).success());
    EXPECT_FALSE(relay.wait_exit(300).has_value());
    // The last allocation ends: the process exits 0 well before the deadline.
    EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    auto status = relay.wait_exit(3000);
    ASSERT_TRUE(status.has_value());
    EXPECT_EQ(*status, 0);
}

TEST(ConformanceProcess, DrainDeadlineEndsTheProcess) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t base = random_port_base(3);
    RelayProcess relay("deadline", config(port, "[\"127.0.0.1\"]", base, base + 20, "", "", 1), port);
    ASSERT_TRUE(relay.ready());
    Client c(relay.v4());
    ASSERT_TRUE(c.allocate().success());
    relay.signal(SIGTERM);
    auto status = relay.wait_exit(4000);
    ASSERT_TRUE(status.has_value());
    EXPECT_EQ(*status, 0);
}

// Restarts ([state].dir): turn-relay killed with SIGKILL (no chance to save
// anything on the way out) and started again on the same configuration takes
// over the allocation its periodic snapshot holds: the client's next Refresh
// with the nonce it already had is answered 200 (the nonce secret is kept
// too), the relayed address is the same (the peer reaches the client through
// it) and the channel binding still carries ChannelData both ways.
TEST(ConformanceProcess, KilledRelayTakesOverItsAllocations) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t base = random_port_base(4);
    const std::string dir = "/tmp/turn-relay-conformance-state-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    // Removed when the test ends, after every relay below has exited (declared
    // first, destroyed last: a relay writes snapshots until it exits).
    struct RemoveDir {
        std::string d;
        ~RemoveDir() {
            std::error_code ec;
            std::filesystem::remove_all(d, ec);
        }
    } remove_dir{dir};
    const std::string cfg = config(port, "[\"127.0.0.1\"]", base, base + 20,
                                   "[state]\ndir = \"" + dir + "\"\nsave_interval_ms = 50\n");
    EchoPeer peer(A("127.0.0.1:0"));
    UdpSocket other_peer(A("127.0.0.1:0"));
    Client c(A("127.0.0.1").with_port(port));
    Address relayed;
    {
        RelayProcess first("state1", cfg, port);
        ASSERT_TRUE(first.ready());
        auto alloc = c.allocate();
        ASSERT_TRUE(alloc.success()) << alloc.code();
        relayed = *alloc.xor_address(stun::attr::kXorRelayedAddress);
        ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                        b.add_channel_number(0x4000);
                        b.add_xor_address(stun::attr::kXorPeerAddress, peer.address());
                    }).success());
        ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                        b.add_xor_address(stun::attr::kXorPeerAddress, other_peer.local());
                    }).success());
        c.socket().send(c.server(), channel_data(0x4000, "before"));
        ASSERT_TRUE(c.socket().recv().has_value());
        ::usleep(400'000);  // several save intervals
        first.signal(SIGKILL);
        ASSERT_TRUE(first.wait_exit(3000).has_value());
    }
    RelayProcess second("state2", cfg, port);
    ASSERT_TRUE(second.ready());
    // Same nonce as before the restart: no 438.
    auto refresh = c.request(M::kRefresh, {});
    EXPECT_TRUE(refresh.success()) << refresh.code();
    // The 5-tuple still has its allocation.
    EXPECT_EQ(c.allocate().code(), 437);
    // The channel carries data both ways through the re-bound relayed socket.
    c.socket().send(c.server(), channel_data(0x4000, "after"));
    auto echoed = c.socket().recv();
    ASSERT_TRUE(echoed.has_value());
    ASSERT_GE(echoed->size(), 9u);
    EXPECT_EQ(load_be16(echoed->data()), 0x4000);
    EXPECT_EQ(std::string(echoed->begin() + 4, echoed->begin() + 9), "after");
    // The permission for the other peer survived: it reaches the client at
    // the same relayed address, as a Data indication.
    const std::string hello = "from the other peer";
    other_peer.send(relayed, std::span(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
    auto ind = c.socket().recv();
    ASSERT_TRUE(ind.has_value());
    Answer a(*ind);
    ASSERT_TRUE(a.ok);
    EXPECT_TRUE(a.view.is(M::kData, C::kIndication));
    EXPECT_EQ(a.xor_address(stun::attr::kXorPeerAddress), other_peer.local());
    EXPECT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
}

// The same with four event loops and twelve clients: the kernel's SO_REUSEPORT
// hash sends each client back to the loop that restored its allocation (same
// number of loops, same socket order), so every one of them is found again;
// a relay started with another number of loops restores nothing.
TEST(ConformanceProcess, KilledRelayWithSeveralLoopsFindsEveryAllocation) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t base = random_port_base(5);
    const std::string dir = "/tmp/turn-relay-conformance-state4-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    std::string cfg = config(port, "[\"127.0.0.1\"]", base, base + 40,
                             "[allocation]\nmax_per_user = 100\n[state]\ndir = \"" + dir +
                                 "\"\nsave_interval_ms = 50\n");
    cfg.replace(cfg.find("threads = 1"), 11, "threads = 4");
    std::vector<std::unique_ptr<Client>> clients;
    {
        RelayProcess first("state4a", cfg, port);
        ASSERT_TRUE(first.ready());
        for (int i = 0; i < 12; ++i) {
            clients.push_back(std::make_unique<Client>(A("127.0.0.1").with_port(port)));
            ASSERT_TRUE(clients.back()->allocate().success()) << i;
        }
        ::usleep(400'000);
        first.signal(SIGKILL);
        ASSERT_TRUE(first.wait_exit(3000).has_value());
    }
    {
        RelayProcess second("state4b", cfg, port);
        ASSERT_TRUE(second.ready());
        int found = 0;
        for (auto& c : clients) {
            found += c->request(M::kRefresh, {}).success() ? 1 : 0;
        }
        EXPECT_EQ(found, 12);
        ::usleep(300'000);  // the refreshed lifetimes are saved
        second.signal(SIGKILL);
        ASSERT_TRUE(second.wait_exit(3000).has_value());
    }
    // Started with two loops instead of four, the relay restores nothing (a
    // client could land on a loop that does not hold its allocation): it starts
    // empty, and every client gets 437 and allocates anew.
    cfg.replace(cfg.find("threads = 4"), 11, "threads = 2");
    {
        RelayProcess third("state4c", cfg, port);
        ASSERT_TRUE(third.ready());
        int missing = 0;
        for (auto& c : clients) {
            missing += c->request(M::kRefresh, {}).code() == 437 ? 1 : 0;
        }
        EXPECT_EQ(missing, 12);
        EXPECT_TRUE(clients[0]->allocate().success());
    }
    std::error_code ec;  // after the relay has exited: it writes snapshots until then
    std::filesystem::remove_all(dir, ec);
}

// [server].dscp = 46: every relayed datagram leaves as EF, with the ECN bits
// it came with; answers are not marked.
TEST(ConformanceProcess, FixedDscpMarksRelayedDataAndKeepsEcn) {
    const uint16_t port = free_udp_port(A("127.0.0.1:0"));
    const uint16_t base = random_port_base(7);
    std::string cfg = config(port, "[\"127.0.0.1\", \"::1\"]", base, base + 20, "");
    const size_t at = cfg.find("threads = 1\n");
    ASSERT_NE(at, std::string::npos);
    cfg.insert(at, "dscp = 46\n");  // in [server]
    RelayProcess relay("dscp", cfg, port);
    ASSERT_TRUE(relay.ready());
    for (bool client_v6 : {false, true}) {
        for (bool peer_v6 : {false, true}) {
            SCOPED_TRACE(std::string(client_v6 ? "IPv6" : "IPv4") + " client, " + (peer_v6 ? "IPv6" : "IPv4") + " peer");
            tos::round_trip(relay, client_v6, peer_v6, 46);
        }
    }
}

TEST(ConformanceProcess, BadConfigExitsTwoNamingTheKey) {
    const std::string path = "/tmp/turn-relay-badconfig-" + std::to_string(::getpid()) + ".toml";
    std::ofstream(path) << "[server]\nrelay_port_min = 70000\n";
    const std::string cmd = std::string(TURN_RELAY_PATH) + " --config " + path + " 2>&1";
    FILE* f = ::popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    std::string out;
    char buf[512];
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
        out += buf;
    }
    const int status = ::pclose(f);
    ::unlink(path.c_str());
    EXPECT_EQ(WEXITSTATUS(status), 2);
    EXPECT_NE(out.find("[server].relay_port_min"), std::string::npos) << out;
}

}  // namespace
}  // namespace turn::cp::test
