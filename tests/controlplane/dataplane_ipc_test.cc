// The control plane's end of the dataplane link (controlplane/offload/ipc_server.*):
// starts the real turn-relay process on loopback with [dataplane].socket in a
// temporary directory, plays the dataplane process over a plain unix
// SOCK_SEQPACKET socket (src/ipc/protocol.h), drives the relay with real STUN
// requests and checks every IPC message it sends: the empty resync, Allocation/
// Permission/ChannelAdd as they are created, the Del messages on deletion, a
// full resync of the live state after a reconnect, and a CountersReport folded
// into /metrics as path="dataplane".
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "ipc/protocol.h"
#include "loopback_util.h"
#include "offload/ipc_server.h"
#include "stun_client.h"
#include "tcp_client.h"
#include "udp_socket.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;
using C = stun::Class;
namespace ipc = turn::ipc;

Address A(const char* s) { return *Address::parse(s); }

// turn-relay with a dataplane socket in a fresh temporary directory.
class RelayProcess {
public:
    // dual: relayed addresses of both families (and IPv6 peers allowed);
    // bandwidth_bps: [allocation].bandwidth_bps; server_extra: more [server] lines.
    explicit RelayProcess(bool dual = false, uint64_t bandwidth_bps = 0, const std::string& server_extra = "",
                          const std::string& log_level = "warn") {
        char tmpl[] = "/tmp/turn-ipc-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        sock_path_ = dir_ + "/dataplane.sock";
        port_ = free_port(SOCK_DGRAM);
        tcp_port_ = free_port(SOCK_STREAM);
        metrics_port_ = free_port(SOCK_STREAM);
        const uint16_t base = static_cast<uint16_t>(31000 + (::getpid() % 300) * 100);
        const std::string cfg = dir_ + "/relay.toml";
        std::ofstream(cfg) << "[server]\nlisten = [\"127.0.0.1:" << port_ << "\"]\n"
                           << "listen_tcp = [\"127.0.0.1:" << tcp_port_ << "\"]\nrelay_ips = "
                           << (dual ? "[\"127.0.0.1\", \"::1\"]" : "[\"127.0.0.1\"]") << "\n"
                           << "relay_port_min = " << base << "\nrelay_port_max = " << base + 49
                           << "\nrealm = \"ipc.test\"\nthreads = 2\n" << server_extra
                           << "[auth]\nusers = [\"alice:alice-pw\"]\n"
                           << "[allocation]\nbandwidth_bps = " << bandwidth_bps << "\n"
                           << "[policy]\nallow_peers = [\"127.0.0.0/8\", \"::1/128\"]\n"
                           << "[metrics]\nlisten = \"127.0.0.1:" << metrics_port_ << "\"\n"
                           << "[dataplane]\nsocket = \"" << sock_path_ << "\"\n"
                           << "[log]\nlevel = \"" << log_level << "\"\n[drain]\ndeadline_s = 1\n";
        const std::string log = dir_ + "/relay.log";
        pid_ = ::fork();
        if (pid_ == 0) {
            const int lfd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (lfd >= 0) {
                ::dup2(lfd, 2);  // its log, for the tests that read it (log())
            }
            ::execl(TURN_RELAY_PATH, "turn-relay", "--config", cfg.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        UdpSocket s(A("127.0.0.1:0"));
        const auto req = build(M::kBinding, C::kRequest, {}, nullptr);
        for (int i = 0; i < 100 && !ready_; ++i) {
            s.send(server(), req);
            ready_ = s.recv(100).has_value();
        }
    }
    ~RelayProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::usleep(100'000);
            ::kill(pid_, SIGTERM);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    bool ready() const { return ready_; }
    Address server() const { return A("127.0.0.1").with_port(port_); }
    Address tcp_server() const { return A("127.0.0.1").with_port(tcp_port_); }
    const std::string& socket_path() const { return sock_path_; }
    uint16_t metrics_port() const { return metrics_port_; }
    // Everything it has logged so far (its stderr).
    std::string log() const {
        std::ifstream f(dir_ + "/relay.log");
        return std::string(std::istreambuf_iterator<char>(f), {});
    }

private:
    std::string dir_;
    std::string sock_path_;
    uint16_t port_ = 0;
    uint16_t tcp_port_ = 0;
    uint16_t metrics_port_ = 0;
    pid_t pid_ = -1;
    bool ready_ = false;
};

class Client {
public:
    explicit Client(const Address& server) : server_(server), sock_(A("127.0.0.1:0")) {
        creds_.user = "alice";
        creds_.password = "alice-pw";
    }
    std::optional<Answer> exchange(const std::vector<uint8_t>& req) {
        sock_.send(server_, req);
        for (int i = 0; i < 5; ++i) {
            auto r = sock_.recv();
            if (!r) {
                return std::nullopt;
            }
            Answer a(*r);
            if (a.ok && a.view.cls() != C::kIndication && std::equal(req.begin() + 8, req.begin() + 20, r->begin() + 8)) {
                return a;
            }
        }
        return std::nullopt;
    }
    Answer request(M m, const Attrs& attrs) {
        if (creds_.nonce.empty()) {
            auto a = exchange(build(M::kAllocate, C::kRequest, {}, nullptr));
            EXPECT_TRUE(a && a->code() == 401);
            if (a) {
                creds_.realm = a->text(stun::attr::kRealm);
                creds_.nonce = a->text(stun::attr::kNonce);
            }
        }
        auto a = exchange(build(m, C::kRequest, attrs, &creds_));
        EXPECT_TRUE(a) << "no answer";
        return a ? *a : Answer({});
    }
    // Returns the relayed address.
    Address allocate() { return allocate_all().value_or(std::vector<Address>{Address{}}).front(); }
    // Every relayed address (dual stack: IPv4 first).
    std::optional<std::vector<Address>> allocate_all(const Attrs& extra = {}) {
        auto a = request(M::kAllocate, [&](auto& b) {
            b.add_requested_transport(stun::kProtoUdp);
            if (extra) {
                extra(b);
            }
        });
        EXPECT_TRUE(a.success()) << a.code();
        auto v = a.xor_addresses(stun::attr::kXorRelayedAddress);
        if (v.empty()) {
            return std::nullopt;
        }
        return v;
    }
    Address local() const { return sock_.local(); }
    // Datagrams without waiting for an answer (indications, ChannelData).
    void send(const std::vector<uint8_t>& d) { sock_.send(server_, d); }
    std::optional<std::vector<uint8_t>> recv(int timeout_ms = 2000) { return sock_.recv(timeout_ms); }

private:
    Address server_;
    UdpSocket sock_;
    Credentials creds_;
};

// The test's stand-in for turn-dataplane: connects, says Hello, reads
// messages; answers CountersRequest with the configured report.
class FakeDataplane {
public:
    explicit FakeDataplane(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, path.data(), path.size());
        for (int i = 0; i < 100; ++i) {
            if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
                connected_ = true;
                break;
            }
            ::usleep(20'000);
        }
    }
    ~FakeDataplane() { ::close(fd_); }
    bool connected() const { return connected_; }

    void hello(uint64_t boot_id) {
        ipc::Hello h{};
        h.pid = static_cast<uint32_t>(::getpid());
        h.workers = 2;  // the WorkerCounters it may report: 0 and 1
        h.boot_id = boot_id;
        auto b = ipc::encode(h, ++seq_);
        ASSERT_EQ(::send(fd_, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    }

    // Next message other than CountersRequest (answered if a report is set),
    // Settings (kept in `settings`, counted) and ExternalIps (kept in
    // `external_ips`, counted); each one's type but CountersRequest's is
    // appended to `types`.
    std::optional<std::vector<uint8_t>> next(int timeout_ms = 3000) {
        for (;;) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, timeout_ms) != 1) {
                return std::nullopt;
            }
            std::vector<uint8_t> buf(ipc::kMaxMessage);
            const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
            if (n <= 0) {
                return std::nullopt;
            }
            buf.resize(static_cast<size_t>(n));
            const auto h = ipc::peek(buf);
            if (h && h->type != ipc::MsgType::kCountersRequest) {
                types.push_back(h->type);
            }
            if (h && h->type == ipc::MsgType::kCountersRequest) {
                ++counter_requests;
                for (auto wc : workers) {  // as turn-dataplane: worker counters first
                    auto b = ipc::encode(wc, ++seq_);
                    ::send(fd_, b.data(), b.size(), 0);
                }
                for (auto pc : ports) {  // then the ports'
                    auto b = ipc::encode(pc, ++seq_);
                    ::send(fd_, b.data(), b.size(), 0);
                }
                if (nexthop) {  // then the next-hop table's
                    auto nh = *nexthop;
                    auto b = ipc::encode(nh, ++seq_);
                    ::send(fd_, b.data(), b.size(), 0);
                }
                for (const auto& r : raw_with_counters) {
                    ::send(fd_, r.data(), r.size(), 0);
                }
                if (report) {
                    auto r = *report;
                    auto b = ipc::encode(r, ++seq_);
                    ::send(fd_, b.data(), b.size(), 0);
                }
                continue;
            }
            if (h && h->type == ipc::MsgType::kSettings) {
                settings = ipc::decode<ipc::Settings>(buf);
                EXPECT_TRUE(settings) << "a Settings message that does not decode";
                ++settings_count;
                if (settings && ack_settings) {  // as turn-dataplane: applied, answered with itself
                    auto s = *settings;
                    auto b = ipc::encode(s, ++seq_);
                    ::send(fd_, b.data(), b.size(), 0);
                }
                continue;
            }
            if (h && h->type == ipc::MsgType::kExternalIps) {
                external_ips = ipc::decode<ipc::ExternalIps>(buf);
                EXPECT_TRUE(external_ips) << "an ExternalIps message that does not decode";
                ++external_ips_count;
                if (external_ips && ack_external_ips) {  // as turn-dataplane: applied, answered with itself
                    send(*external_ips);
                }
                continue;
            }
            return buf;
        }
    }
    template <typename Msg>
    std::optional<Msg> expect(int timeout_ms = 3000) {
        auto d = next(timeout_ms);
        if (!d) {
            ADD_FAILURE() << "no message (expected type " << static_cast<int>(Msg::kType) << ")";
            return std::nullopt;
        }
        auto m = ipc::decode<Msg>(*d);
        if (!m) {
            const auto h = ipc::peek(*d);
            ADD_FAILURE() << "expected type " << static_cast<int>(Msg::kType) << ", got "
                          << (h ? static_cast<int>(h->type) : -1);
        }
        return m;
    }
    // Drives the relay's periodic requests until the reply has been read.
    void serve_counters(int ms) {
        const int before = counter_requests;
        for (int i = 0; i < ms / 50 && counter_requests == before; ++i) {
            (void)next(50);
        }
    }

    void send_raw(std::span<const uint8_t> b) { ::send(fd_, b.data(), b.size(), 0); }
    template <typename Msg>
    void send(Msg m) {
        auto b = ipc::encode(m, ++seq_);
        ASSERT_EQ(::send(fd_, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    }

    std::optional<ipc::CountersReport> report;
    std::vector<ipc::WorkerCounters> workers;
    std::vector<ipc::PortCounters> ports;
    std::optional<ipc::NextHopCounters> nexthop;  // sent after the ports (none: a dataplane that predates it)
    std::vector<std::vector<uint8_t>> raw_with_counters;  // sent as they are, after the ports and the next hops
    int counter_requests = 0;
    std::optional<ipc::Settings> settings;  // the last one received
    int settings_count = 0;
    bool ack_settings = true;  // false: a dataplane that predates Settings
    std::optional<ipc::ExternalIps> external_ips;  // the last one received
    int external_ips_count = 0;
    bool ack_external_ips = true;  // false: echoed by the test when it chooses (or never)
    std::vector<ipc::MsgType> types;  // of every message received but CountersRequest

private:
    int fd_ = -1;
    bool connected_ = false;
    uint64_t seq_ = 0;
};

bool same(const ipc::WireAddress& w, const Address& a) { return w.to() == a; }

Address ip_only(const Address& a) { return a.with_port(0); }

class DataplaneIpc : public ::testing::Test {
protected:
    void SetUp() override { ASSERT_TRUE(relay_.ready()) << "turn-relay did not start"; }
    RelayProcess relay_;
};

TEST_F(DataplaneIpc, ResyncIncrementalDeleteReconnectAndCounters) {
    // 1. The relay serves in socket mode before any dataplane is attached.
    Client early(relay_.server());
    const Address early_relayed = early.allocate();
    ASSERT_EQ(early_relayed.family, Family::kIPv4);

    // 2. Hello -> the resync carries the live state (one allocation).
    auto dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(1);
    auto rb = dp->expect<ipc::ResyncBegin>();
    ASSERT_TRUE(rb);
    auto early_add = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(early_add);
    EXPECT_TRUE(same(early_add->client, early.local()));
    EXPECT_TRUE(same(early_add->listen, relay_.server()));
    EXPECT_TRUE(same(early_add->relayed_v4, early_relayed));
    EXPECT_EQ(early_add->relayed_v6.family, 0);
    auto re = dp->expect<ipc::ResyncEnd>();
    ASSERT_TRUE(re);
    EXPECT_EQ(re->generation, rb->generation);
    EXPECT_EQ(re->entries, 1u);

    // 3. Allocation, permission, channel, each as it is created.
    Client c(relay_.server());
    const Address relayed = c.allocate();
    ASSERT_EQ(relayed.family, Family::kIPv4);
    auto add = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add);
    const uint64_t id = add->alloc_id;
    EXPECT_NE(id, 0u);
    EXPECT_NE(id, early_add->alloc_id);
    EXPECT_TRUE(same(add->client, c.local()));
    EXPECT_TRUE(same(add->listen, relay_.server()));
    EXPECT_TRUE(same(add->relayed_v4, relayed));
    EXPECT_EQ(add->relayed_v6.family, 0);
    EXPECT_EQ(add->bandwidth_bps, 0u);

    const Address peer1 = A("127.0.0.1:40001");
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer1);
                 }).success());
    auto perm = dp->expect<ipc::PermissionAdd>();
    ASSERT_TRUE(perm);
    EXPECT_EQ(perm->alloc_id, id);
    EXPECT_TRUE(same(perm->relayed, relayed));
    EXPECT_TRUE(same(perm->peer, ip_only(peer1)));

    // A refresh of the same permission is no new flow: nothing is sent.
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer1);
                 }).success());

    const Address peer2 = A("127.0.0.2:40002");
    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                     b.add_channel_number(0x4001);
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer2);
                 }).success());
    // ChannelBind installs the peer's permission too, and the channel goes
    // to the dataplane after it (a channel is offloaded only with its
    // permission: AllocationManager::channel_offloaded).
    auto perm2 = dp->expect<ipc::PermissionAdd>();
    ASSERT_TRUE(perm2);
    EXPECT_EQ(perm2->alloc_id, id);
    auto chan = dp->expect<ipc::ChannelAdd>();
    ASSERT_TRUE(chan);
    EXPECT_EQ(chan->alloc_id, id);
    EXPECT_TRUE(same(chan->relayed, relayed));
    EXPECT_TRUE(same(chan->peer, peer2));
    EXPECT_EQ(chan->channel, 0x4001);
    EXPECT_TRUE(same(perm2->peer, ip_only(peer2)));

    // 4. Counters: one report for the allocation, folded into /metrics.
    ipc::CountersReport r{};
    r.count = 1;
    r.last = 1;
    r.entries[0].alloc_id = id;
    r.entries[0].to_peer_packets = 10;
    r.entries[0].to_peer_bytes = 1000;
    r.entries[0].to_client_packets = 7;
    r.entries[0].to_client_bytes = 700;
    r.entries[0].dropped_packets = 2;
    dp->report = r;
    // And two workers' packet counters (ipc/dataplane_counters.h order: rx,
    // fwd_client_channel, ...), and a third of a worker the Hello did not
    // announce: a bad message, not a series kept (and exported) for ever.
    for (uint32_t w = 0; w < 3; ++w) {
        ipc::WorkerCounters wc{};
        wc.worker = w < 2 ? w : 7;
        wc.count = 3;
        wc.counters[0] = 100 + w;  // rx
        wc.counters[1] = 40 + w;   // fwd_client_channel
        wc.counters[2] = 3;        // fwd_client_send
        wc.counters[3] = 999;      // beyond count: not exported
        wc.cache_lookups = 50;
        wc.cache_misses = 5 + w;
        wc.express_packets = 30 + w;
        dp->workers.push_back(wc);
    }
    dp->serve_counters(3000);
    ASSERT_GT(dp->counter_requests, 0) << "no CountersRequest within 3 s";
    // The same cumulative figures again add nothing.
    dp->serve_counters(3000);
    dp->report.reset();
    std::string body;
    const std::string want = "turn_relayed_packets_total{direction=\"client_to_peer\",path=\"dataplane\"} 10";
    for (int i = 0; i < 50 && body.find(want) == std::string::npos; ++i) {
        body = http_get(relay_.metrics_port(), "/metrics");
        ::usleep(20'000);
    }
    EXPECT_NE(body.find(want), std::string::npos) << body;
    EXPECT_NE(body.find("turn_relayed_packets_total{direction=\"peer_to_client\",path=\"dataplane\"} 7"),
              std::string::npos);
    EXPECT_NE(body.find("turn_relayed_bytes_total{direction=\"client_to_peer\",path=\"dataplane\"} 1000"),
              std::string::npos);
    EXPECT_NE(body.find("turn_relayed_bytes_total{direction=\"peer_to_client\",path=\"dataplane\"} 700"),
              std::string::npos);
    EXPECT_NE(body.find("turn_relayed_packets_total{direction=\"client_to_peer\",path=\"socket\"} 0"),
              std::string::npos);
    EXPECT_NE(body.find("turn_dataplane_dropped_packets_total 2"), std::string::npos);
    EXPECT_NE(body.find("turn_dataplane_connected 1"), std::string::npos);
    EXPECT_NE(body.find("turn_dataplane_disconnects_total{reason=\"closed\"} 0"), std::string::npos) << body;
    // The workers' counters, by name.
    EXPECT_NE(body.find("turn_dataplane_worker_packets_total{worker=\"0\",counter=\"rx\"} 100"), std::string::npos)
        << body;
    EXPECT_NE(body.find("turn_dataplane_worker_packets_total{worker=\"1\",counter=\"fwd_client_channel\"} 41"),
              std::string::npos);
    EXPECT_NE(body.find("turn_dataplane_worker_packets_total{worker=\"1\",counter=\"fwd_client_send\"} 3"),
              std::string::npos);
    EXPECT_EQ(body.find("counter=\"fwd_peer_channel\""), std::string::npos);  // beyond the report's count
    EXPECT_NE(body.find("turn_dataplane_client_cache_misses_total{worker=\"1\"} 6"), std::string::npos);
    EXPECT_NE(body.find("turn_dataplane_express_packets_total{worker=\"0\"} 30"), std::string::npos);
    EXPECT_EQ(body.find("worker=\"7\""), std::string::npos) << body;

    // 5. Disconnect: the relay keeps serving; a reconnect gets the full live state.
    dp.reset();
    Client late(relay_.server());
    const Address late_relayed = late.allocate();
    ASSERT_EQ(late_relayed.family, Family::kIPv4);
    dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(1);
    auto rb2 = dp->expect<ipc::ResyncBegin>();
    ASSERT_TRUE(rb2);
    EXPECT_NE(rb2->generation, rb->generation);
    std::map<uint64_t, ipc::AllocationAdd> allocs;
    std::vector<ipc::PermissionAdd> perms;
    std::vector<ipc::ChannelAdd> chans;
    for (;;) {
        auto d = dp->next();
        ASSERT_TRUE(d) << "resync did not end";
        if (auto m = ipc::decode<ipc::AllocationAdd>(*d)) {
            allocs[m->alloc_id] = *m;
        } else if (auto p = ipc::decode<ipc::PermissionAdd>(*d)) {
            perms.push_back(*p);
        } else if (auto ch = ipc::decode<ipc::ChannelAdd>(*d)) {
            chans.push_back(*ch);
        } else if (auto e = ipc::decode<ipc::ResyncEnd>(*d)) {
            EXPECT_EQ(e->generation, rb2->generation);
            EXPECT_EQ(e->entries, 6u);  // 3 allocations, 2 permissions, 1 channel
            break;
        } else {
            FAIL() << "unexpected message in resync";
        }
    }
    ASSERT_EQ(allocs.size(), 3u);
    ASSERT_TRUE(allocs.count(id));
    EXPECT_TRUE(same(allocs[id].client, c.local()));
    EXPECT_TRUE(same(allocs[id].relayed_v4, relayed));
    EXPECT_TRUE(allocs.count(early_add->alloc_id));
    bool late_seen = false;
    for (const auto& [aid, a] : allocs) {
        late_seen = late_seen || (same(a.client, late.local()) && same(a.relayed_v4, late_relayed));
    }
    EXPECT_TRUE(late_seen);
    ASSERT_EQ(perms.size(), 2u);
    std::vector<Address> perm_peers;
    for (const auto& p : perms) {
        EXPECT_EQ(p.alloc_id, id);
        EXPECT_TRUE(same(p.relayed, relayed));
        perm_peers.push_back(p.peer.to());
    }
    EXPECT_TRUE(std::find(perm_peers.begin(), perm_peers.end(), ip_only(peer1)) != perm_peers.end());
    EXPECT_TRUE(std::find(perm_peers.begin(), perm_peers.end(), ip_only(peer2)) != perm_peers.end());
    ASSERT_EQ(chans.size(), 1u);
    EXPECT_EQ(chans[0].alloc_id, id);
    EXPECT_EQ(chans[0].channel, 0x4001);
    EXPECT_TRUE(same(chans[0].peer, peer2));
    EXPECT_TRUE(same(chans[0].relayed, relayed));
    // The first connection's end, counted by its reason.
    const std::string closed = "\nturn_dataplane_disconnects_total{reason=\"closed\"} 1\n";
    body = http_get(relay_.metrics_port(), "/metrics");
    EXPECT_NE(body.find(closed), std::string::npos) << body;
    EXPECT_NE(body.find("\nturn_dataplane_disconnects_total{reason=\"backlog_full\"} 0\n"), std::string::npos);

    // 6. Refresh LIFETIME 0: channel, permissions, then the allocation are removed.
    ASSERT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    auto cdel = dp->expect<ipc::ChannelDel>();
    ASSERT_TRUE(cdel);
    EXPECT_EQ(cdel->alloc_id, id);
    EXPECT_EQ(cdel->channel, 0x4001);
    EXPECT_TRUE(same(cdel->peer, peer2));
    EXPECT_TRUE(same(cdel->relayed, relayed));
    std::vector<Address> deleted;
    for (int i = 0; i < 2; ++i) {
        auto pd = dp->expect<ipc::PermissionDel>();
        ASSERT_TRUE(pd);
        EXPECT_EQ(pd->alloc_id, id);
        EXPECT_TRUE(same(pd->relayed, relayed));
        deleted.push_back(pd->peer.to());
    }
    EXPECT_TRUE(std::find(deleted.begin(), deleted.end(), ip_only(peer1)) != deleted.end());
    EXPECT_TRUE(std::find(deleted.begin(), deleted.end(), ip_only(peer2)) != deleted.end());
    auto adel = dp->expect<ipc::AllocationDel>();
    ASSERT_TRUE(adel);
    EXPECT_EQ(adel->alloc_id, id);
    EXPECT_FALSE(dp->next(300).has_value()) << "nothing else expected";
}

TEST_F(DataplaneIpc, GarbageFromTheDataplaneIsIgnoredAndAnotherHelloResyncs) {
    FakeDataplane dp(relay_.socket_path());
    ASSERT_TRUE(dp.connected());
    // Nothing is sent before Hello, and a malformed datagram does not break the link.
    EXPECT_FALSE(dp.next(300).has_value());
    const uint8_t junk[] = {1, 2, 3, 4, 5};
    dp.send_raw(junk);
    ipc::Hello bad{};
    auto hb = ipc::encode(bad, 1);
    std::vector<uint8_t> wrong_len(hb.begin(), hb.end());
    wrong_len.push_back(0);
    dp.send_raw(wrong_len);
    Client c(relay_.server());
    const Address relayed = c.allocate();
    EXPECT_FALSE(dp.next(300).has_value());
    dp.hello(7);
    auto rb = dp.expect<ipc::ResyncBegin>();
    ASSERT_TRUE(rb);
    auto add = dp.expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add);
    EXPECT_TRUE(same(add->relayed_v4, relayed));
    auto re = dp.expect<ipc::ResyncEnd>();
    ASSERT_TRUE(re);
    EXPECT_EQ(re->entries, 1u);
    // A second Hello on the same connection (dataplane restarted its session) resyncs again.
    dp.hello(8);
    auto rb2 = dp.expect<ipc::ResyncBegin>();
    ASSERT_TRUE(rb2);
    EXPECT_NE(rb2->generation, rb->generation);
    ASSERT_TRUE(dp.expect<ipc::AllocationAdd>());
    ASSERT_TRUE(dp.expect<ipc::ResyncEnd>());
    // The relay still answers clients.
    Client d(relay_.server());
    EXPECT_EQ(d.allocate().family, Family::kIPv4);
    auto add2 = dp.expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add2);
    EXPECT_TRUE(same(add2->client, d.local()));
}

TEST(DataplaneIpcDualStack, EachPeerGetsTheRelayOfItsFamilyLimitIsSetAndAFamilyCanBeDropped) {
    RelayProcess relay(true, 8'000'000);
    ASSERT_TRUE(relay.ready()) << "turn-relay did not start";
    FakeDataplane dp(relay.socket_path());
    ASSERT_TRUE(dp.connected());
    dp.hello(3);
    ASSERT_TRUE(dp.expect<ipc::ResyncBegin>());
    auto re = dp.expect<ipc::ResyncEnd>();
    ASSERT_TRUE(re);
    EXPECT_EQ(re->entries, 0u);

    Client c(relay.server());
    auto relays =
        c.allocate_all([](auto& b) { b.add_address_family(stun::attr::kAdditionalAddressFamily, Family::kIPv6); });
    ASSERT_TRUE(relays);
    ASSERT_EQ(relays->size(), 2u);
    const Address r4 = (*relays)[0].is_v4() ? (*relays)[0] : (*relays)[1];
    const Address r6 = (*relays)[0].is_v6() ? (*relays)[0] : (*relays)[1];
    ASSERT_TRUE(r4.is_v4());
    ASSERT_TRUE(r6.is_v6());
    auto add = dp.expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add);
    const uint64_t id = add->alloc_id;
    EXPECT_TRUE(same(add->relayed_v4, r4));
    EXPECT_TRUE(same(add->relayed_v6, r6));
    EXPECT_EQ(add->bandwidth_bps, 8'000'000u);
    auto lim = dp.expect<ipc::LimitSet>();
    ASSERT_TRUE(lim);
    EXPECT_EQ(lim->alloc_id, id);
    EXPECT_EQ(lim->bandwidth_bps, 8'000'000u);

    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                     b.add_xor_address(stun::attr::kXorPeerAddress, A("127.0.0.1:40010"));
                 }).success());
    auto p4 = dp.expect<ipc::PermissionAdd>();
    ASSERT_TRUE(p4);
    EXPECT_TRUE(same(p4->relayed, r4));
    EXPECT_TRUE(same(p4->peer, A("127.0.0.1:0")));
    const Address peer6 = A("[::1]:40011");
    ASSERT_TRUE(c.request(M::kChannelBind, [&](auto& b) {
                     b.add_channel_number(0x4002);
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer6);
                 }).success());
    auto p6 = dp.expect<ipc::PermissionAdd>();  // the permission first, then its channel
    ASSERT_TRUE(p6);
    EXPECT_TRUE(same(p6->relayed, r6));
    EXPECT_TRUE(same(p6->peer, ip_only(peer6)));
    auto ch = dp.expect<ipc::ChannelAdd>();
    ASSERT_TRUE(ch);
    EXPECT_EQ(ch->alloc_id, id);
    EXPECT_EQ(ch->channel, 0x4002);
    EXPECT_TRUE(same(ch->relayed, r6));
    EXPECT_TRUE(same(ch->peer, peer6));

    // Refresh LIFETIME 0 for IPv6 only: the allocation is re-announced without
    // its IPv6 relayed address, and only the IPv4 state comes back.
    ASSERT_TRUE(c.request(M::kRefresh, [](auto& b) {
                     b.add_u32(stun::attr::kLifetime, 0);
                     b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
                 }).success());
    auto del = dp.expect<ipc::AllocationDel>();
    ASSERT_TRUE(del);
    EXPECT_EQ(del->alloc_id, id);
    auto add2 = dp.expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add2);
    EXPECT_EQ(add2->alloc_id, id);
    EXPECT_TRUE(same(add2->relayed_v4, r4));
    EXPECT_EQ(add2->relayed_v6.family, 0);
    ASSERT_TRUE(dp.expect<ipc::LimitSet>());
    auto p4b = dp.expect<ipc::PermissionAdd>();
    ASSERT_TRUE(p4b);
    EXPECT_TRUE(same(p4b->relayed, r4));
    EXPECT_TRUE(same(p4b->peer, A("127.0.0.1:0")));
    EXPECT_FALSE(dp.next(300).has_value()) << "no IPv6 permission or channel without an IPv6 relayed address";
}

}  // namespace
}  // namespace turn::cp::test

namespace turn::cp::test {
namespace {

// The Prometheus sample `line_prefix` (name and labels as exported), -1 if absent.
double metric(uint16_t port, const std::string& line_prefix) {
    const std::string body = http_get(port, "/metrics");
    const size_t at = body.find("\n" + line_prefix + " ");
    return at == std::string::npos ? -1 : std::stod(body.substr(at + line_prefix.size() + 2));
}

// RFC 8656 section 3.1 transports and the offload (DESIGN.md): the dataplane
// frames for datagrams, so an allocation whose client talks TCP is served by
// the control plane alone. Its allocation, permission and channel never
// reach the dataplane, its ChannelData is relayed both ways by the control
// plane (padded on the stream), and closing the connection ends it without
// a Del; a UDP client's allocation made afterwards is the next thing the
// dataplane hears of.
TEST_F(DataplaneIpc, TcpClientsAllocationsStayInTheControlPlane) {
    auto dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(7);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    auto end = dp->expect<ipc::ResyncEnd>();
    ASSERT_TRUE(end);
    EXPECT_EQ(end->entries, 0u);

    UdpSocket peer(A("127.0.0.1:0"));
    TcpClient t(relay_.tcp_server(), "alice", "alice-pw");
    ASSERT_TRUE(t.connected());
    const Address relayed = t.allocate();
    ASSERT_EQ(relayed.family, Family::kIPv4);
    ASSERT_TRUE(t.bind_channel(0x4002, peer.local()).success());

    // Client -> peer: 5 bytes of data, padded to 8 on the stream.
    const std::vector<uint8_t> cd = {0x40, 0x02, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0};
    ASSERT_TRUE(t.send(cd));
    Address from;
    auto got = peer.recv(2000, &from);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, std::vector<uint8_t>({'h', 'e', 'l', 'l', 'o'}));
    EXPECT_EQ(from, relayed);
    // Peer -> client: ChannelData on the stream, padded to a multiple of 4.
    const std::vector<uint8_t> back = {'w', 'o', 'r', 'l', 'd', '!'};
    peer.send(relayed, back);
    auto in = t.recv();
    ASSERT_TRUE(in);
    EXPECT_EQ(*in, std::vector<uint8_t>({0x40, 0x02, 0x00, 0x06, 'w', 'o', 'r', 'l', 'd', '!', 0, 0}));

    // Nothing of it went to the dataplane.
    auto stray = dp->next(300);
    EXPECT_FALSE(stray) << "IPC message type " << (stray ? static_cast<int>(ipc::peek(*stray)->type) : -1)
                        << " about a TCP client's allocation";
    EXPECT_EQ(metric(relay_.metrics_port(), "turn_allocations{family=\"ipv4\"}"), 1);

    // The connection closes: the allocation ends, still without IPC.
    t.close();
    double allocs = -1;
    for (int i = 0; i < 40 && allocs != 0; ++i) {
        ::usleep(50'000);
        allocs = metric(relay_.metrics_port(), "turn_allocations{family=\"ipv4\"}");
    }
    EXPECT_EQ(allocs, 0) << "the allocation outlived its TCP connection";
    EXPECT_EQ(metric(relay_.metrics_port(), "turn_connections_closed_total{transport=\"tcp\",reason=\"client\"}"), 1);

    // A UDP client's allocation is the next message.
    Client u(relay_.server());
    const Address urelayed = u.allocate();
    auto add = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add);
    EXPECT_TRUE(same(add->client, u.local()));
    EXPECT_TRUE(same(add->relayed_v4, urelayed));
}

}  // namespace
}  // namespace turn::cp::test

namespace turn::cp::test {
namespace {

// A port's message with every counter distinct: base, base + 1, ... in
// protocol order (ipackets, opackets, ibytes, obytes, imissed, ierrors,
// oerrors, rx_nombuf).
ipc::PortCounters port_message(ipc::PortRole role, const char* name, uint64_t base) {
    ipc::PortCounters p{};
    p.role = role;
    p.link_up = 1;
    p.link_speed_mbps = 10000;
    std::snprintf(p.name, sizeof p.name, "%s", name);
    p.ipackets = base;
    p.opackets = base + 1;
    p.ibytes = base + 2;
    p.obytes = base + 3;
    p.imissed = base + 4;
    p.ierrors = base + 5;
    p.oerrors = base + 6;
    p.rx_nombuf = base + 7;
    return p;
}

template <typename M>
std::vector<uint8_t> wire(M m, uint64_t seq = 1) {
    const auto b = ipc::encode(m, seq);
    return {b.begin(), b.end()};
}

// The datagram with its header's length field set to its (changed) size, so
// that only decode()'s per-type size check can refuse it.
std::vector<uint8_t> with_length(std::vector<uint8_t> d) {
    const auto len = static_cast<uint32_t>(d.size());
    std::memcpy(d.data() + offsetof(ipc::Header, length), &len, sizeof len);
    return d;
}

// One byte more or less than message M's datagram d, with or without a
// header that agrees, is no M.
template <typename M>
void expect_no_other_length(const std::vector<uint8_t>& d) {
    auto longer = d;
    longer.push_back(0);
    EXPECT_FALSE(ipc::decode<M>(longer));
    EXPECT_FALSE(ipc::decode<M>(with_length(longer)));
    auto shorter = d;
    shorter.pop_back();
    EXPECT_FALSE(ipc::decode<M>(shorter));
    EXPECT_FALSE(ipc::decode<M>(with_length(shorter)));
}

TEST(PortCountersMessage, RoundTripsAndRefusesWrongLengthTypeAndRole) {
    ipc::PortCounters p = port_message(ipc::PortRole::kException, "net_af_xdp1", 100);
    p.link_speed_mbps = 25000;
    const std::vector<uint8_t> d = wire(p, 42);
    ASSERT_EQ(d.size(), sizeof(ipc::PortCounters));
    const auto got = ipc::decode<ipc::PortCounters>(d);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->h.type, ipc::MsgType::kPortCounters);
    EXPECT_EQ(static_cast<unsigned>(got->h.type), 23u);
    EXPECT_EQ(got->h.seq, 42u);
    EXPECT_EQ(got->role, ipc::PortRole::kException);
    EXPECT_EQ(got->link_up, 1);
    EXPECT_EQ(got->link_speed_mbps, 25000u);
    EXPECT_STREQ(got->name, "net_af_xdp1");
    EXPECT_EQ(got->ipackets, 100u);
    EXPECT_EQ(got->opackets, 101u);
    EXPECT_EQ(got->ibytes, 102u);
    EXPECT_EQ(got->obytes, 103u);
    EXPECT_EQ(got->imissed, 104u);
    EXPECT_EQ(got->ierrors, 105u);
    EXPECT_EQ(got->oerrors, 106u);
    EXPECT_EQ(got->rx_nombuf, 107u);
    EXPECT_EQ(std::memcmp(&*got, d.data(), d.size()), 0);  // every byte as sent

    expect_no_other_length<ipc::PortCounters>(d);
    // Not another message, nor another message this one.
    EXPECT_FALSE(ipc::decode<ipc::WorkerCounters>(d));
    ipc::Hello h{};
    const auto hb = ipc::encode(h, 1);
    EXPECT_FALSE(ipc::decode<ipc::PortCounters>(std::vector<uint8_t>(hb.begin(), hb.end())));

    // Roles other than the two ports are refused.
    p.role = ipc::PortRole::kNic;
    EXPECT_TRUE(ipc::decode<ipc::PortCounters>(wire(p)));
    for (const uint8_t bad : {2, 7, 255}) {
        p.role = static_cast<ipc::PortRole>(bad);
        EXPECT_FALSE(ipc::decode<ipc::PortCounters>(wire(p))) << "role " << unsigned{bad};
    }
}

// Addresses are taken only in canonical form: the dataplane tells a refresh
// from a change by comparing whole WireAddresses while its keys use only the
// family's bytes, so a second spelling of one address would be a second
// record for one key (the applier fuzz target found the resync keeping
// neither).
TEST(WireAddressForm, OnlyCanonicalAddressesDecode) {
    Address v4;
    v4.family = Family::kIPv4;
    v4.port = 3478;
    v4.ip[0] = 198;
    v4.ip[1] = 18;
    v4.ip[3] = 1;
    Address v6;
    v6.family = Family::kIPv6;
    v6.port = 3478;
    v6.ip[0] = 0xfd;
    v6.ip[15] = 1;
    ipc::PermissionAdd m{};
    m.alloc_id = 1;
    m.relayed = ipc::WireAddress::from(v4);
    m.peer = ipc::WireAddress::from(v4);
    EXPECT_TRUE(ipc::decode<ipc::PermissionAdd>(wire(m)));
    m.relayed = ipc::WireAddress::from(v6);
    m.peer = ipc::WireAddress::from(v6);
    EXPECT_TRUE(ipc::decode<ipc::PermissionAdd>(wire(m)));  // all 16 bytes are IPv6's
    m.relayed = ipc::WireAddress::from(v4);
    m.peer = ipc::WireAddress::from(v4);
    m.peer.pad = 1;
    EXPECT_FALSE(ipc::decode<ipc::PermissionAdd>(wire(m)));
    m.peer.pad = 0;
    m.peer.ip[8] = 1;  // beyond IPv4's 4 bytes
    EXPECT_FALSE(ipc::decode<ipc::PermissionAdd>(wire(m)));
    m.peer.ip[8] = 0;
    m.relayed.ip[15] = 9;
    EXPECT_FALSE(ipc::decode<ipc::PermissionAdd>(wire(m)));
    m.relayed.ip[15] = 0;
    EXPECT_TRUE(ipc::decode<ipc::PermissionAdd>(wire(m)));
    // No family: nothing else either (AllocationAdd's absent relayed address).
    ipc::AllocationAdd a{};
    a.alloc_id = 2;
    a.client = ipc::WireAddress::from(v4);
    a.listen = ipc::WireAddress::from(v4);
    a.relayed_v4 = ipc::WireAddress::from(v4);
    a.relayed_v6 = ipc::WireAddress::from(Address{});
    EXPECT_TRUE(ipc::decode<ipc::AllocationAdd>(wire(a)));
    a.relayed_v6.port = 1;
    EXPECT_FALSE(ipc::decode<ipc::AllocationAdd>(wire(a)));
    a.relayed_v6.port = 0;
    a.relayed_v6.ip[0] = 1;
    EXPECT_FALSE(ipc::decode<ipc::AllocationAdd>(wire(a)));
}

// What the control plane keeps of a message is bounded whatever came in:
// the name NUL-terminated within the array and printable ASCII (it becomes
// a Prometheus label value), an unknown role not stored at all.
TEST(PortCountersMessage, StoredNameIsBoundedAndPrintableAndUnknownRolesAreNotStored) {
    DataplaneCounters dc;
    ipc::PortCounters p = port_message(ipc::PortRole::kNic, "", 1);
    std::memset(p.name, 'A', sizeof p.name);  // no NUL anywhere
    p.name[3] = '\n';
    p.name[4] = static_cast<char>(0xff);
    p.name[5] = '"';
    p.name[6] = '\\';
    ASSERT_TRUE(dc.set_port(p));
    auto ports = dc.ports();
    ASSERT_TRUE(ports[0].reported);
    EXPECT_FALSE(ports[1].reported);
    const ipc::PortCounters& n = ports[0].c;
    EXPECT_EQ(strnlen(n.name, sizeof n.name), sizeof n.name - 1);
    EXPECT_EQ(std::string(n.name), "AAA??\"\\" + std::string(ipc::PortCounters::kNameLen - 8, 'A'));
    EXPECT_EQ(n.ipackets, 1u);

    // Bytes after the NUL are not kept.
    ipc::PortCounters q = port_message(ipc::PortRole::kException, "exc", 2);
    std::memcpy(q.name + 4, "\x01garbage", 8);
    ASSERT_TRUE(dc.set_port(q));
    ports = dc.ports();
    ASSERT_TRUE(ports[0].reported && ports[1].reported);
    const ipc::PortCounters& e = ports[1].c;
    EXPECT_STREQ(e.name, "exc");
    EXPECT_TRUE(std::all_of(e.name + 3, e.name + sizeof e.name, [](char c) { return c == 0; }));

    // Another role: refused, nothing replaced.
    ipc::PortCounters r = port_message(static_cast<ipc::PortRole>(2), "bad", 99);
    EXPECT_FALSE(dc.set_port(r));
    r.role = static_cast<ipc::PortRole>(255);
    EXPECT_FALSE(dc.set_port(r));
    ports = dc.ports();
    ASSERT_TRUE(ports[0].reported && ports[1].reported);
    EXPECT_EQ(ports[0].c.ipackets, 1u);
    EXPECT_EQ(ports[1].c.ipackets, 2u);
    dc.clear_ports();
    ports = dc.ports();
    EXPECT_FALSE(ports[0].reported || ports[1].reported);
}

// A next-hop table's message, valid, with every field distinct: 4096 slots,
// 300 hosts of which 120 learned, an IPv4 default but no IPv6 one, the
// kernel mirror running, 3 IPv4 routes and too many (33) IPv6 ones; totals
// base, base + 1, ... in protocol order (learned_total, learned_expired,
// learned_evicted, learn_refused, neigh_set, neigh_removed, mac_retired,
// flushes).
ipc::NextHopCounters nexthop_message(uint64_t base) {
    ipc::NextHopCounters n{};
    n.capacity = 4096;
    n.hosts = 300;
    n.learned = 120;
    n.default4 = 1;
    n.default6 = 0;
    n.mirror = 1;
    n.routes4 = 3;
    n.routes6 = 33;
    n.learned_total = base;
    n.learned_expired = base + 1;
    n.learned_evicted = base + 2;
    n.learn_refused = base + 3;
    n.neigh_set = base + 4;
    n.neigh_removed = base + 5;
    n.mac_retired = base + 6;
    n.flushes = base + 7;
    return n;
}

TEST(NextHopCountersMessage, RoundTripsAndRefusesWrongLengthAndType) {
    const ipc::NextHopCounters n = nexthop_message(100);
    const std::vector<uint8_t> d = wire(n, 43);
    ASSERT_EQ(d.size(), sizeof(ipc::NextHopCounters));
    ASSERT_EQ(d.size(), 104u);
    const auto got = ipc::decode<ipc::NextHopCounters>(d);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->h.type, ipc::MsgType::kNextHopCounters);
    EXPECT_EQ(static_cast<unsigned>(got->h.type), 24u);
    EXPECT_EQ(got->h.seq, 43u);
    EXPECT_EQ(got->capacity, 4096u);
    EXPECT_EQ(got->hosts, 300u);
    EXPECT_EQ(got->learned, 120u);
    EXPECT_EQ(got->default4, 1);
    EXPECT_EQ(got->default6, 0);
    EXPECT_EQ(got->mirror, 1);
    EXPECT_EQ(got->routes4, 3u);
    EXPECT_EQ(got->routes6, 33u);
    EXPECT_EQ(got->learned_total, 100u);
    EXPECT_EQ(got->learned_expired, 101u);
    EXPECT_EQ(got->learned_evicted, 102u);
    EXPECT_EQ(got->learn_refused, 103u);
    EXPECT_EQ(got->neigh_set, 104u);
    EXPECT_EQ(got->neigh_removed, 105u);
    EXPECT_EQ(got->mac_retired, 106u);
    EXPECT_EQ(got->flushes, 107u);
    EXPECT_EQ(std::memcmp(&*got, d.data(), d.size()), 0);  // every byte as sent

    expect_no_other_length<ipc::NextHopCounters>(d);
    // Not another message, nor another message this one: the same bytes
    // with another type in the header, a PortCounters, a Hello.
    EXPECT_FALSE(ipc::decode<ipc::PortCounters>(d));
    EXPECT_FALSE(ipc::decode<ipc::WorkerCounters>(d));
    auto retyped = d;
    const auto port_type = ipc::MsgType::kPortCounters;
    std::memcpy(retyped.data() + offsetof(ipc::Header, type), &port_type, sizeof port_type);
    EXPECT_FALSE(ipc::decode<ipc::NextHopCounters>(retyped));
    EXPECT_FALSE(ipc::decode<ipc::NextHopCounters>(wire(port_message(ipc::PortRole::kNic, "net_af_xdp0", 1))));
    ipc::Hello h{};
    const auto hb = ipc::encode(h, 1);
    EXPECT_FALSE(ipc::decode<ipc::NextHopCounters>(std::vector<uint8_t>(hb.begin(), hb.end())));
}

// valid(): learned <= hosts <= capacity, the three flags 0 or 1, pad 0. The
// limits themselves are accepted, one past each is refused.
TEST(NextHopCountersMessage, EachValidityRuleIsEnforced) {
    ipc::NextHopCounters edge = nexthop_message(1);
    edge.capacity = 500;
    edge.hosts = 500;
    edge.learned = 500;
    edge.default4 = 1;
    edge.default6 = 1;
    edge.mirror = 1;
    ASSERT_TRUE(ipc::decode<ipc::NextHopCounters>(wire(edge)));
    ipc::NextHopCounters empty{};  // a table of no slots, nothing set: consistent
    EXPECT_TRUE(ipc::decode<ipc::NextHopCounters>(wire(empty)));
    ipc::NextHopCounters no_flags = edge;
    no_flags.default4 = no_flags.default6 = no_flags.mirror = 0;
    EXPECT_TRUE(ipc::decode<ipc::NextHopCounters>(wire(no_flags)));

    const struct {
        const char* rule;
        void (*spoil)(ipc::NextHopCounters&);
    } cases[] = {
        {"hosts > capacity", [](ipc::NextHopCounters& m) { m.capacity = 499; }},
        {"hosts > capacity (0)", [](ipc::NextHopCounters& m) { m.capacity = 0; }},
        {"learned > hosts", [](ipc::NextHopCounters& m) { m.hosts = 499; }},
        {"learned > hosts (no hosts)", [](ipc::NextHopCounters& m) { m.hosts = 0; }},
        {"default4 2", [](ipc::NextHopCounters& m) { m.default4 = 2; }},
        {"default4 255", [](ipc::NextHopCounters& m) { m.default4 = 255; }},
        {"default6 2", [](ipc::NextHopCounters& m) { m.default6 = 2; }},
        {"default6 128", [](ipc::NextHopCounters& m) { m.default6 = 128; }},
        {"mirror 2", [](ipc::NextHopCounters& m) { m.mirror = 2; }},
        {"mirror 255", [](ipc::NextHopCounters& m) { m.mirror = 255; }},
        {"pad 1", [](ipc::NextHopCounters& m) { m.pad = 1; }},
        {"pad 0x80", [](ipc::NextHopCounters& m) { m.pad = 0x80; }},
    };
    for (const auto& c : cases) {
        ipc::NextHopCounters m = edge;
        c.spoil(m);
        EXPECT_FALSE(ipc::valid(m)) << c.rule;
        EXPECT_FALSE(ipc::decode<ipc::NextHopCounters>(wire(m))) << c.rule;
    }
}

// What DataplaneCounters holds: nothing until one comes, the last one, nothing
// again after clear_nexthop (a new dataplane process).
TEST(NextHopCountersMessage, TheLastOneIsStoredUntilCleared) {
    DataplaneCounters dc;
    EXPECT_FALSE(dc.nexthop());
    const ipc::NextHopCounters a = nexthop_message(10);
    dc.set_nexthop(a);
    auto got = dc.nexthop();
    ASSERT_TRUE(got);
    EXPECT_EQ(std::memcmp(&*got, &a, sizeof a), 0);
    ipc::NextHopCounters b = nexthop_message(20);
    b.learned = 0;
    b.mirror = 0;
    dc.set_nexthop(b);
    got = dc.nexthop();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->learned_total, 20u);
    EXPECT_EQ(got->learned, 0u);
    EXPECT_EQ(got->mirror, 0);
    dc.clear_nexthop();
    EXPECT_FALSE(dc.nexthop());
}

// Polls /metrics until it contains `want` (up to ~2 s); returns the last body.
std::string metrics_with(uint16_t port, const std::string& want) {
    std::string body;
    for (int i = 0; i < 100 && body.find(want) == std::string::npos; ++i) {
        body = http_get(port, "/metrics");
        ::usleep(20'000);
    }
    return body;
}

// promtool's verdict on an exposition (the HTTP body of `response`); true
// without promtool.
bool promtool_accepts(const std::string& response, std::string* out) {
    if (::access("/usr/bin/promtool", X_OK) != 0) {
        return true;
    }
    const size_t at = response.find("\r\n\r\n");
    const std::string body = at == std::string::npos ? response : response.substr(at + 4);
    char path[] = "/tmp/turn-ipc-metrics-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0) {
        return false;
    }
    (void)!::write(fd, body.data(), body.size());
    ::close(fd);
    const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
    FILE* f = ::popen(cmd.c_str(), "r");
    char buf[512];
    while (f != nullptr && std::fgets(buf, sizeof buf, f) != nullptr) {
        *out += buf;
    }
    const int status = f != nullptr ? ::pclose(f) : -1;
    ::unlink(path);
    return status == 0;
}

// Occurrences of `needle` in `hay`.
size_t count_of(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) {
        ++n;
    }
    return n;
}

// [server].dscp reaches the dataplane as ipc::Settings before every
// ResyncBegin: "keep" (the default) as {0xFF, 0}, a number as {0x03, d << 2}
// (ECN kept); a reconnect sends it again.
TEST_F(DataplaneIpc, SettingsCarryTheDscpRuleBeforeEveryResync) {
    RelayProcess fixed(false, 0, "dscp = 46\n");
    ASSERT_TRUE(fixed.ready());
    for (auto* r : {&relay_, &fixed}) {
        for (int conn = 0; conn < 2; ++conn) {
            FakeDataplane dp(r->socket_path());
            ASSERT_TRUE(dp.connected());
            dp.hello(50 + static_cast<uint64_t>(conn));
            ASSERT_TRUE(dp.expect<ipc::ResyncBegin>());
            EXPECT_EQ(dp.settings_count, 1) << "Settings before ResyncBegin";
            ASSERT_TRUE(dp.settings);
            if (r == &relay_) {
                EXPECT_EQ(dp.settings->tos_keep, 0xFF);
                EXPECT_EQ(dp.settings->tos_set, 0);
            } else {
                EXPECT_EQ(dp.settings->tos_keep, 0x03);
                EXPECT_EQ(dp.settings->tos_set, 46 << 2);
            }
            ASSERT_TRUE(dp.expect<ipc::ResyncEnd>());
            EXPECT_NE(metrics_with(r->metrics_port(), "\nturn_dataplane_settings_applied 1\n")
                          .find("\nturn_dataplane_settings_applied 1\n"),
                      std::string::npos)
                << "answered Settings";
        }
    }
    EXPECT_EQ(count_of(fixed.log(), "event=dataplane_ignores_settings"), 0u);
    // A dataplane that predates Settings does not answer them: with a fixed
    // DSCP that is logged once per connection and shown as 0.
    for (int conn = 1; conn <= 2; ++conn) {
        FakeDataplane old(fixed.socket_path());
        old.ack_settings = false;
        ASSERT_TRUE(old.connected());
        old.hello(60 + static_cast<uint64_t>(conn));
        ASSERT_TRUE(old.expect<ipc::ResyncBegin>());
        ASSERT_TRUE(old.expect<ipc::ResyncEnd>());
        old.report = ipc::CountersReport{};
        old.report->last = 1;
        old.serve_counters(3000);
        ASSERT_GT(old.counter_requests, 0);
        const std::string body = metrics_with(fixed.metrics_port(), "\nturn_dataplane_settings_applied 0\n");
        EXPECT_NE(body.find("\nturn_dataplane_settings_applied 0\n"), std::string::npos) << body;
        EXPECT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos) << "the link stays";
        for (int i = 0; i < 50 && count_of(fixed.log(), "event=dataplane_ignores_settings") < static_cast<size_t>(conn); ++i) {
            ::usleep(20'000);
        }
        old.serve_counters(3000);  // a second report: no second warning
        EXPECT_EQ(count_of(fixed.log(), "event=dataplane_ignores_settings"), static_cast<size_t>(conn)) << fixed.log();
    }
    // "keep" needs nothing of the dataplane: no warning for an old one.
    FakeDataplane old(relay_.socket_path());
    old.ack_settings = false;
    old.hello(70);
    ASSERT_TRUE(old.expect<ipc::ResyncBegin>());
    old.report = ipc::CountersReport{};
    old.report->last = 1;
    old.serve_counters(3000);
    old.serve_counters(3000);
    EXPECT_EQ(count_of(relay_.log(), "event=dataplane_ignores_settings"), 0u);
}


// A dataplane newer than the control plane sends message types it does not
// know with every counters report: each is counted
// (turn_dataplane_bad_messages_total), logged once per type and connection
// rather than each time, and the link stays; a new connection logs again.
TEST_F(DataplaneIpc, UnknownMessageTypesAreCountedAndLoggedOncePerConnection) {
    auto unknown = [](uint16_t type) {
        ipc::Header h{};
        h.type = static_cast<ipc::MsgType>(type);
        h.length = sizeof h + 8;
        h.seq = 1;
        std::vector<uint8_t> b(h.length, 0xab);
        std::memcpy(b.data(), &h, sizeof h);
        return b;
    };
    int total = 0;
    for (int conn = 1; conn <= 2; ++conn) {
        auto dp = std::make_unique<FakeDataplane>(relay_.socket_path());
        ASSERT_TRUE(dp->connected());
        dp->hello(40);
        ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
        ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());
        dp->raw_with_counters = {unknown(200), unknown(201), std::vector<uint8_t>{1, 2, 3}};
        for (int i = 0; i < 3; ++i) {
            dp->serve_counters(3000);
        }
        ASSERT_GE(dp->counter_requests, 3);
        total += 3 * dp->counter_requests;  // three bad messages with each report
        const std::string want = "\nturn_dataplane_bad_messages_total " + std::to_string(total) + "\n";
        const std::string body = metrics_with(relay_.metrics_port(), want);
        EXPECT_NE(body.find(want), std::string::npos) << body;
        EXPECT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos) << "link kept";
        const std::string log = relay_.log();
        EXPECT_EQ(count_of(log, "event=dataplane_bad_message "), 3u * static_cast<size_t>(conn)) << log;
        EXPECT_EQ(count_of(log, "type=200"), static_cast<size_t>(conn)) << log;
        EXPECT_EQ(count_of(log, "type=201"), static_cast<size_t>(conn)) << log;
        EXPECT_EQ(count_of(log, "bytes=3 "), static_cast<size_t>(conn)) << log;
    }
}

// The ports' statistics, from the dataplane's reports to /metrics: every
// family with port and name labels; a hostile name (no NUL, quote,
// backslash, newline, a byte above 0x7f) is cut, made printable and escaped,
// and the exposition stays valid; an unknown role and a datagram of the
// wrong length change nothing and keep the link; after a disconnect the
// series stay (as the workers'), a new dataplane process starts them over.
TEST_F(DataplaneIpc, PortCountersReachMetricsAndHostileOnesAreContained) {
    auto dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(21);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());

    dp->ports = {port_message(ipc::PortRole::kNic, "net_af_xdp0", 1000),
                 port_message(ipc::PortRole::kException, "net_af_xdp1", 2000)};
    dp->ports[1].link_up = 0;
    dp->ports[1].link_speed_mbps = 0;
    dp->serve_counters(3000);
    ASSERT_GT(dp->counter_requests, 0) << "no CountersRequest within 3 s";
    const std::string nic = "{port=\"nic\",name=\"net_af_xdp0\"} ";
    const std::string exc = "{port=\"exception\",name=\"net_af_xdp1\"} ";
    std::string body = metrics_with(relay_.metrics_port(), "turn_dataplane_port_rx_packets_total" + nic + "1000");
    const char* families[] = {"rx_packets", "tx_packets", "rx_bytes",  "tx_bytes",
                              "rx_missed",  "rx_errors",  "tx_errors", "rx_nombuf"};
    for (size_t i = 0; i < std::size(families); ++i) {
        const std::string f = std::string("turn_dataplane_port_") + families[i] + "_total";
        EXPECT_NE(body.find("\n" + f + nic + std::to_string(1000 + i) + "\n"), std::string::npos) << f << "\n" << body;
        EXPECT_NE(body.find("\n" + f + exc + std::to_string(2000 + i) + "\n"), std::string::npos) << f;
        EXPECT_NE(body.find("# TYPE " + f + " counter\n"), std::string::npos) << f;
    }
    EXPECT_NE(body.find("\nturn_dataplane_port_link_up" + nic + "1\n"), std::string::npos);
    EXPECT_NE(body.find("\nturn_dataplane_port_link_up" + exc + "0\n"), std::string::npos);
    EXPECT_NE(body.find("\nturn_dataplane_port_link_speed_mbps" + nic + "10000\n"), std::string::npos);
    EXPECT_NE(body.find("\nturn_dataplane_port_link_speed_mbps" + exc + "0\n"), std::string::npos);
    EXPECT_NE(body.find("# TYPE turn_dataplane_port_link_up gauge\n"), std::string::npos);
    std::string lint;
    EXPECT_TRUE(promtool_accepts(body, &lint)) << lint;

    // Hostile: a NIC name without NUL and with characters that would break
    // the exposition, a role that is neither port, a PortCounters one byte
    // too long (its header agreeing).
    ipc::PortCounters hostile = port_message(ipc::PortRole::kNic, "", 3000);
    std::memset(hostile.name, 'z', sizeof hostile.name);
    std::memcpy(hostile.name, "nic\"\\\n\xff", 7);
    ipc::PortCounters bad_role = port_message(static_cast<ipc::PortRole>(9), "net_bad", 999000);
    auto too_long = wire(port_message(ipc::PortRole::kException, "net_long", 888000));
    too_long.push_back(0);
    dp->ports = {hostile, bad_role};
    dp->raw_with_counters = {with_length(too_long)};
    const std::string hostile_labels =
        "{port=\"nic\",name=\"nic\\\"\\\\??" + std::string(ipc::PortCounters::kNameLen - 8, 'z') + "\"} ";
    dp->serve_counters(3000);
    body = metrics_with(relay_.metrics_port(), "turn_dataplane_port_rx_packets_total" + hostile_labels + "3000");
    EXPECT_NE(body.find("\nturn_dataplane_port_rx_packets_total" + hostile_labels + "3000\n"), std::string::npos)
        << body;
    EXPECT_NE(body.find("\nturn_dataplane_port_rx_nombuf_total" + hostile_labels + "3007\n"), std::string::npos);
    EXPECT_EQ(body.find("net_af_xdp0"), std::string::npos) << "the NIC's earlier series replaced";
    EXPECT_EQ(body.find("999000"), std::string::npos) << "unknown role exported";
    EXPECT_EQ(body.find("net_bad"), std::string::npos);
    EXPECT_EQ(body.find("net_long"), std::string::npos) << "wrong-length message exported";
    EXPECT_NE(body.find("\nturn_dataplane_port_rx_packets_total" + exc + "2000\n"), std::string::npos)
        << "the exception port's last good report kept";
    EXPECT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos) << "link kept";
    lint.clear();
    EXPECT_TRUE(promtool_accepts(body, &lint)) << lint;

    // Disconnect: the last figures stay, like the workers' counters.
    dp.reset();
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 0\n");
    ASSERT_NE(body.find("\nturn_dataplane_connected 0\n"), std::string::npos);
    EXPECT_NE(body.find("\nturn_dataplane_port_rx_packets_total" + exc + "2000\n"), std::string::npos);
    // A new dataplane process (another boot id): its ports start over.
    dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(22);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 1\n");
    EXPECT_EQ(body.find("turn_dataplane_port_rx_packets_total{"), std::string::npos) << body;
    EXPECT_EQ(body.find("turn_dataplane_port_link_up{"), std::string::npos);
}

// The first line of the relay's log that has `what` (waits up to 3 s); "".
std::string log_line(const RelayProcess& relay, const std::string& what) {
    for (int i = 0; i < 150; ++i) {
        const std::string log = relay.log();
        if (const size_t at = log.find(what); at != std::string::npos) {
            return log.substr(at, log.find('\n', at) - at);
        }
        ::usleep(20'000);
    }
    return "";
}

// The value of the unlabelled sample `name` in an exposition; -1 if absent.
double sample_of(const std::string& body, const std::string& name) {
    const size_t at = body.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::strtod(body.c_str() + at + name.size() + 2, nullptr);
}

// Samples (not HELP/TYPE lines) of turn_dataplane_nexthop_* in an exposition.
std::vector<std::string> nexthop_samples(const std::string& body) {
    std::vector<std::string> out;
    for (size_t at = body.find("\nturn_dataplane_nexthop_"); at != std::string::npos;
         at = body.find("\nturn_dataplane_nexthop_", at + 1)) {
        out.push_back(body.substr(at + 1, body.find('\n', at + 1) - at - 1));
    }
    return out;
}

// The next-hop table's state, from the dataplane's reports to /metrics: no
// series before a report has one (a dataplane that predates the message),
// every gauge and counter with its value after; an invalid one (hosts >
// capacity) and one of the wrong length are bad messages that change
// nothing and keep the link; a later valid one replaces it. Like the ports'
// series (and by the same rule: IpcServer::on_hello clears both at a Hello
// with a new boot id), they stay after a disconnect and across a reconnect
// of the same dataplane process, and a new process starts them over.
TEST_F(DataplaneIpc, NextHopCountersReachMetricsUntilANewDataplaneProcess) {
    auto dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(31);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());

    // A report without one: the families (as the ports'), but no series.
    const std::string nic = "{port=\"nic\",name=\"net_af_xdp0\"} ";
    dp->ports = {port_message(ipc::PortRole::kNic, "net_af_xdp0", 1000)};
    dp->serve_counters(3000);
    ASSERT_GT(dp->counter_requests, 0) << "no CountersRequest within 3 s";
    std::string body = metrics_with(relay_.metrics_port(), "turn_dataplane_port_rx_packets_total" + nic + "1000");
    ASSERT_NE(body.find("\nturn_dataplane_port_rx_packets_total" + nic + "1000\n"), std::string::npos) << body;
    EXPECT_NE(body.find("# TYPE turn_dataplane_nexthop_capacity gauge\n"), std::string::npos) << body;
    EXPECT_TRUE(nexthop_samples(body).empty()) << body;

    dp->nexthop = nexthop_message(5000);
    dp->serve_counters(3000);
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_nexthop_learned_total 5000\n");
    const char* gauges[] = {
        "turn_dataplane_nexthop_entries{kind=\"neighbour\"} 180",
        "turn_dataplane_nexthop_entries{kind=\"learned\"} 120",
        "turn_dataplane_nexthop_capacity 4096",
        "turn_dataplane_nexthop_default{family=\"ipv4\"} 1",
        "turn_dataplane_nexthop_default{family=\"ipv6\"} 0",
        "turn_dataplane_nexthop_kernel_routes{family=\"ipv4\"} 3",
        "turn_dataplane_nexthop_kernel_routes{family=\"ipv6\"} 33",
        "turn_dataplane_nexthop_kernel_mirror 1",
    };
    for (const char* g : gauges) {
        EXPECT_NE(body.find("\n" + std::string(g) + "\n"), std::string::npos) << g << "\n" << body;
    }
    for (const char* f : {"entries", "capacity", "default", "kernel_routes", "kernel_mirror"}) {
        EXPECT_NE(body.find("# TYPE turn_dataplane_nexthop_" + std::string(f) + " gauge\n"), std::string::npos) << f;
    }
    const char* counters[] = {"learned",       "learned_expired",   "learned_evicted", "learn_refused",
                              "neighbour_set", "neighbour_removed", "mac_retired",     "flushes"};
    for (size_t i = 0; i < std::size(counters); ++i) {
        const std::string f = std::string("turn_dataplane_nexthop_") + counters[i] + "_total";
        EXPECT_EQ(sample_of(body, f), 5000.0 + static_cast<double>(i)) << f << "\n" << body;
        EXPECT_NE(body.find("# TYPE " + f + " counter\n"), std::string::npos) << f;
    }
    EXPECT_EQ(nexthop_samples(body).size(), std::size(gauges) + std::size(counters)) << body;
    std::string lint;
    EXPECT_TRUE(promtool_accepts(body, &lint)) << lint;

    // An invalid one (more hosts than slots) and a valid one a byte too long
    // (its header agreeing): counted as bad, nothing of either exported.
    const double bad_before = sample_of(body, "turn_dataplane_bad_messages_total");
    ASSERT_GE(bad_before, 0);
    ipc::NextHopCounters too_many = nexthop_message(777000);
    too_many.hosts = too_many.capacity + 1;
    auto too_long = wire(nexthop_message(888000));
    too_long.push_back(0);
    dp->nexthop = too_many;
    dp->raw_with_counters = {with_length(too_long)};
    const int requests_before = dp->counter_requests;
    dp->serve_counters(3000);
    const int answered = dp->counter_requests - requests_before;
    ASSERT_GT(answered, 0) << "no CountersRequest within 3 s";
    const std::string bad_want =
        "\nturn_dataplane_bad_messages_total " + std::to_string(static_cast<int>(bad_before) + 2 * answered) + "\n";
    body = metrics_with(relay_.metrics_port(), bad_want);
    EXPECT_NE(body.find(bad_want), std::string::npos) << body;
    for (const std::string& line : nexthop_samples(body)) {
        EXPECT_EQ(line.find("777"), std::string::npos) << "an invalid one exported: " << line;
        EXPECT_EQ(line.find("888"), std::string::npos) << "a wrong-length one exported: " << line;
    }
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_learned_total"), 5000.0) << "the last good one kept";
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_capacity"), 4096.0);
    EXPECT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos) << "link kept";
    EXPECT_NE(log_line(relay_, "type=24 ").find("bytes="), std::string::npos) << relay_.log();

    // A later valid one replaces it, gauges going to 0 included.
    ipc::NextHopCounters later = nexthop_message(6000);
    later.capacity = 8192;
    later.hosts = 40;
    later.learned = 0;
    later.default4 = 0;
    later.default6 = 1;
    later.mirror = 0;
    later.routes4 = 0;
    later.routes6 = 2;
    dp->nexthop = later;
    dp->raw_with_counters.clear();
    dp->serve_counters(3000);
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_nexthop_learned_total 6000\n");
    const char* later_gauges[] = {
        "turn_dataplane_nexthop_entries{kind=\"neighbour\"} 40",
        "turn_dataplane_nexthop_entries{kind=\"learned\"} 0",
        "turn_dataplane_nexthop_capacity 8192",
        "turn_dataplane_nexthop_default{family=\"ipv4\"} 0",
        "turn_dataplane_nexthop_default{family=\"ipv6\"} 1",
        "turn_dataplane_nexthop_kernel_routes{family=\"ipv4\"} 0",
        "turn_dataplane_nexthop_kernel_routes{family=\"ipv6\"} 2",
        "turn_dataplane_nexthop_kernel_mirror 0",
    };
    for (const char* g : later_gauges) {
        EXPECT_NE(body.find("\n" + std::string(g) + "\n"), std::string::npos) << g << "\n" << body;
    }
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_flushes_total"), 6007.0);

    // Disconnect: the last figures stay, like the ports'.
    dp.reset();
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 0\n");
    ASSERT_NE(body.find("\nturn_dataplane_connected 0\n"), std::string::npos);
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_capacity"), 8192.0);
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_learned_total"), 6000.0);
    // The same dataplane process reconnecting (its boot id again): still there.
    dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(31);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 1\n");
    ASSERT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos);
    EXPECT_EQ(sample_of(body, "turn_dataplane_nexthop_capacity"), 8192.0);
    EXPECT_EQ(nexthop_samples(body).size(), std::size(later_gauges) + std::size(counters)) << body;
    // A new dataplane process (another boot id): gone, with the ports' series.
    dp.reset();
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 0\n");
    ASSERT_NE(body.find("\nturn_dataplane_connected 0\n"), std::string::npos);
    dp = std::make_unique<FakeDataplane>(relay_.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(32);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());
    body = metrics_with(relay_.metrics_port(), "\nturn_dataplane_connected 1\n");
    ASSERT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos);
    EXPECT_TRUE(nexthop_samples(body).empty()) << body;
    EXPECT_EQ(body.find("turn_dataplane_port_rx_packets_total{"), std::string::npos) << body;
    EXPECT_NE(body.find("# TYPE turn_dataplane_nexthop_learn_refused_total counter\n"), std::string::npos);
}

// What an allocation relayed, in its end log line: the datagrams the control
// plane relayed itself plus those the dataplane's fast path reported, summed
// over the dataplane's cumulative reports and across a dataplane restart
// (whose counters start again at zero), and its final totals: the line waits
// for the report after the Del. A final of another install under the same id
// (a control plane restarted without its state numbers from 1 again) changes
// only /metrics. Without a final the line comes two reports after the Del;
// a lost dataplane lets the waiting lines go at once.
TEST(DataplaneIpcUsage, TheEndLineAddsBothPathsAcrossADataplaneRestart) {
    RelayProcess relay(false, 0, "", "info");
    ASSERT_TRUE(relay.ready()) << "turn-relay did not start";
    auto dp = std::make_unique<FakeDataplane>(relay.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(1);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());

    Client c(relay.server());
    const Address relayed = c.allocate();
    ASSERT_EQ(relayed.family, Family::kIPv4);
    auto add = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add);
    const uint64_t id = add->alloc_id;
    // Ids start from the process's start time (seconds << 21), so a restarted
    // turn-relay does not reuse the ids the dataplane still holds; below 2^53.
    EXPECT_GE(id, static_cast<uint64_t>(::time(nullptr) - 60) << 21);
    EXPECT_LE(id, (static_cast<uint64_t>(::time(nullptr)) << 21) + 1000);
    EXPECT_LT(id, uint64_t{1} << 53);
    UdpSocket peer(A("127.0.0.1:0"));
    ASSERT_TRUE(c.request(M::kCreatePermission, [&](auto& b) {
                     b.add_xor_address(stun::attr::kXorPeerAddress, peer.local());
                 }).success());
    ASSERT_TRUE(dp->expect<ipc::PermissionAdd>());

    // The socket path (this fake dataplane forwards nothing): a Send
    // indication of 5 bytes to the peer, 7 bytes back as a Data indication.
    c.send(build(M::kSend, C::kIndication, [&](auto& b) {
        b.add_xor_address(stun::attr::kXorPeerAddress, peer.local());
        const uint8_t hello[] = {'h', 'e', 'l', 'l', 'o'};
        b.add(stun::attr::kData, hello);
    }, nullptr));
    auto got = peer.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->size(), 5u);
    peer.send(relayed, std::vector<uint8_t>(7, 'x'));
    ASSERT_TRUE(c.recv()) << "no Data indication";

    // The fast path: two cumulative reports, then a new dataplane process
    // (another boot id) whose counters start again.
    auto report = [&](uint64_t pp, uint64_t bp, uint64_t pc, uint64_t bc, bool final = false) {
        ipc::CountersReport r{};
        r.count = 1;
        r.last = 1;
        r.finals = final ? 1 : 0;
        r.entries[0] = {id, pp, bp, pc, bc, 0};
        dp->report = r;
        const int before = dp->counter_requests;
        dp->serve_counters(3000);
        ASSERT_GT(dp->counter_requests, before) << "no CountersRequest within 3 s";
    };
    // The first report also carries, in a chunk of finals before it, the
    // final totals of an earlier install under this id.
    ipc::CountersReport earlier{};
    earlier.count = 1;
    earlier.finals = 1;
    earlier.entries[0] = {id, 50, 5000, 20, 2000, 0};
    const auto earlier_bytes = ipc::encode(earlier, 1000);
    dp->raw_with_counters = {std::vector<uint8_t>(earlier_bytes.begin(), earlier_bytes.end())};
    report(10, 1000, 4, 400);
    dp->raw_with_counters.clear();
    report(12, 1200, 6, 600);
    dp.reset();
    dp = std::make_unique<FakeDataplane>(relay.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->hello(2);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    ASSERT_TRUE(dp->expect<ipc::AllocationAdd>());
    ASSERT_TRUE(dp->expect<ipc::PermissionAdd>());
    ASSERT_TRUE(dp->expect<ipc::ResyncEnd>());
    report(3, 300, 1, 100);
    const std::string want = "turn_relayed_packets_total{direction=\"client_to_peer\",path=\"dataplane\"} 65";
    const std::string body = metrics_with(relay.metrics_port(), want);
    ASSERT_NE(body.find(want), std::string::npos) << body;

    // The end: its line waits for the dataplane's final totals, which come
    // in the report after the Del (the last second of fast-path traffic).
    // A request sent before the Del is still unanswered then (this fake
    // answers requests as it reads them): its answer, read after the Del,
    // carries the allocation live once more, 4/400.
    ipc::CountersReport live{};
    live.count = 1;
    live.last = 1;
    live.entries[0] = {id, 4, 400, 1, 100, 0};
    dp->report = live;
    ::usleep(1'500'000);  // a request waits in the socket
    ASSERT_TRUE(c.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    ASSERT_TRUE(dp->expect<ipc::PermissionDel>());
    ASSERT_TRUE(dp->expect<ipc::AllocationDel>());
    const std::string ended = "event=allocation_deleted id=" + std::to_string(id) + " ";
    EXPECT_EQ(count_of(relay.log(), ended), 0u) << "logged before the final totals came";
    report(5, 500, 1, 100, true);
    const std::string line = log_line(relay, ended);
    ASSERT_FALSE(line.empty()) << relay.log();
    // To the peer: 15 reported + 1 more live after the Del + 1 more in the
    // final + 1 relayed by the control plane (1500 + 100 + 100 + 5 bytes);
    // to the client: 7 + 0 + 0 + 1 (700 + 7).
    EXPECT_NE(line.find(" packets_to_peer=18 bytes_to_peer=1705 packets_to_client=8 bytes_to_client=707"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find(" user=alice "), std::string::npos) << line;
    const std::string after = "turn_relayed_packets_total{direction=\"client_to_peer\",path=\"dataplane\"} 67";
    EXPECT_NE(metrics_with(relay.metrics_port(), after).find(after), std::string::npos);
    EXPECT_EQ(count_of(relay.log(), "event=allocation_deleted "), 1u);

    // No final (the allocation never reached the fast path, or the final was
    // lost): the line comes two reports after the Del, with what was reported.
    Client c2(relay.server());
    ASSERT_EQ(c2.allocate().family, Family::kIPv4);
    auto add2 = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add2);
    ASSERT_TRUE(c2.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    ASSERT_TRUE(dp->expect<ipc::AllocationDel>());
    const std::string ended2 = "event=allocation_deleted id=" + std::to_string(add2->alloc_id) + " ";
    dp->report = ipc::CountersReport{};
    dp->report->last = 1;
    const int requests_before = dp->counter_requests;
    for (int i = 0; i < 4 && count_of(relay.log(), ended2) == 0; ++i) {
        dp->serve_counters(3000);
    }
    const std::string line2 = log_line(relay, ended2);
    EXPECT_NE(line2.find(" packets_to_peer=0 bytes_to_peer=0 packets_to_client=0 bytes_to_client=0"),
              std::string::npos)
        << relay.log();
    EXPECT_LE(dp->counter_requests - requests_before, 3) << "the line waited longer than two reports";

    // A lost dataplane: the lines waiting for it are logged at once.
    Client c3(relay.server());
    ASSERT_EQ(c3.allocate().family, Family::kIPv4);
    auto add3 = dp->expect<ipc::AllocationAdd>();
    ASSERT_TRUE(add3);
    ASSERT_TRUE(c3.request(M::kRefresh, [](auto& b) { b.add_u32(stun::attr::kLifetime, 0); }).success());
    ASSERT_TRUE(dp->expect<ipc::AllocationDel>());
    const std::string ended3 = "event=allocation_deleted id=" + std::to_string(add3->alloc_id) + " ";
    EXPECT_EQ(count_of(relay.log(), ended3), 0u);
    dp.reset();
    EXPECT_FALSE(log_line(relay, ended3).empty()) << relay.log();
}


// What the dataplane was told from one point on: the Add and Del messages
// of permissions and channels, and how many others came.
struct PeerMessages {
    std::vector<ipc::PermissionAdd> perms;
    std::vector<ipc::ChannelAdd> chans;
    std::vector<ipc::AllocationAdd> allocs;
    uint64_t entries = 0;  // ResyncEnd's, when one came
    bool resync_end = false;
    size_t others = 0;
};

// Reads until ResyncEnd (`until_end`) or until nothing comes for `quiet_ms`.
PeerMessages read_messages(FakeDataplane& dp, bool until_end, int quiet_ms = 400) {
    PeerMessages got;
    while (auto d = dp.next(until_end ? 3000 : quiet_ms)) {
        if (auto p = ipc::decode<ipc::PermissionAdd>(*d)) {
            got.perms.push_back(*p);
        } else if (auto c = ipc::decode<ipc::ChannelAdd>(*d)) {
            got.chans.push_back(*c);
        } else if (auto a = ipc::decode<ipc::AllocationAdd>(*d)) {
            got.allocs.push_back(*a);
        } else if (auto e = ipc::decode<ipc::ResyncEnd>(*d)) {
            got.entries = e->entries;
            got.resync_end = true;
            if (until_end) {
                break;
            }
        } else {
            ++got.others;
        }
    }
    EXPECT_TRUE(!until_end || got.resync_end) << "the resync did not end";
    return got;
}

// (allocation id, peer IP) of each PermissionAdd, sorted.
std::vector<std::pair<uint64_t, Address>> perm_keys(const std::vector<ipc::PermissionAdd>& v) {
    std::vector<std::pair<uint64_t, Address>> out;
    for (const auto& p : v) {
        out.emplace_back(p.alloc_id, p.peer.to());
    }
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) {
        return x.first != y.first ? x.first < y.first : x.second.to_string() < y.second.to_string();
    });
    return out;
}

// (allocation id, channel, peer) of each ChannelAdd, sorted.
std::vector<std::tuple<uint64_t, uint16_t, Address>> chan_keys(const std::vector<ipc::ChannelAdd>& v) {
    std::vector<std::tuple<uint64_t, uint16_t, Address>> out;
    for (const auto& c : v) {
        out.emplace_back(c.alloc_id, c.channel, c.peer.to());
    }
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) {
        return std::tie(std::get<0>(x), std::get<1>(x)) < std::tie(std::get<0>(y), std::get<1>(y));
    });
    return out;
}

bool permit(Client& c, const Address& peer) {
    return c.request(M::kCreatePermission, [&](auto& b) { b.add_xor_address(stun::attr::kXorPeerAddress, peer); })
        .success();
}

bool bind_channel(Client& c, uint16_t channel, const Address& peer) {
    return c.request(M::kChannelBind, [&](auto& b) {
                b.add_channel_number(channel);
                b.add_xor_address(stun::attr::kXorPeerAddress, peer);
            })
        .success();
}

// The relay IP 127.0.0.1 behind a 1:1 NAT whose external IP is 127.0.0.2
// (nothing is sent to it here: the test plays the dataplane).
const std::string kExternalIp = "external_ips = [\"127.0.0.2\"]\n";

// Behind a NAT two relay-only clients of this relay are each other's peers
// on the external IP. Every resync sends ExternalIps between the Settings
// and ResyncBegin; the permissions and channels on the external IP reach
// the dataplane only after it echoed that ExternalIps on this connection (a
// dataplane that predates the message would send their packets to its
// router, i.e. to the NAT), built from the state of that moment; the
// others are sent at once. A wrong echo changes nothing; a reconnect and a
// new Hello withhold them again until their own echo.
TEST(DataplaneIpcExternalIps, PeersOnTheExternalIpWaitForTheDataplanesEcho) {
    RelayProcess relay(false, 0, kExternalIp, "info");
    ASSERT_TRUE(relay.ready()) << "turn-relay did not start";
    Client a(relay.server());
    Client b(relay.server());
    const Address ra = a.allocate();
    const Address rb = b.allocate();
    ASSERT_EQ(ra.ip_string(), "127.0.0.2");  // advertised on the external IP
    ASSERT_EQ(rb.ip_string(), "127.0.0.2");
    const Address external = A("127.0.0.2");
    // Before any dataplane: A permits B as its client knows B.
    ASSERT_TRUE(permit(a, rb));

    auto dp = std::make_unique<FakeDataplane>(relay.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->ack_external_ips = false;
    dp->hello(80);
    ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
    // (a) Settings, ExternalIps, ResyncBegin: 127.0.0.2 for 127.0.0.1, no IPv6.
    EXPECT_EQ(dp->types, (std::vector<ipc::MsgType>{ipc::MsgType::kSettings, ipc::MsgType::kExternalIps,
                                                    ipc::MsgType::kResyncBegin}));
    ASSERT_TRUE(dp->external_ips);
    const ipc::ExternalIps sent = *dp->external_ips;
    EXPECT_TRUE(same(sent.external_v4, external));
    EXPECT_TRUE(same(sent.relay_v4, A("127.0.0.1")));
    EXPECT_EQ(sent.external_v6.family, 0);
    EXPECT_EQ(sent.relay_v6.family, 0);
    // (b) The snapshot: both allocations (bound on the relay IP), not A's permission.
    auto snap = read_messages(*dp, true);
    ASSERT_EQ(snap.allocs.size(), 2u);
    EXPECT_TRUE(snap.perms.empty()) << "a permission on the external IP in the resync before the echo";
    EXPECT_EQ(snap.entries, 2u);
    uint64_t id_a = 0;
    uint64_t id_b = 0;
    for (const auto& add : snap.allocs) {
        (same(add.client, a.local()) ? id_a : id_b) = add.alloc_id;
        EXPECT_EQ(add.relayed_v4.to().ip_string(), "127.0.0.1");
    }
    ASSERT_NE(id_a, 0u);
    ASSERT_NE(id_b, 0u);
    // B's channel to A (with its permission) while withheld, then A's
    // permission for a peer elsewhere (d): that one is sent at once, and is
    // the first thing sent.
    ASSERT_TRUE(bind_channel(b, 0x4001, ra));
    const Address elsewhere = A("127.0.0.3:40001");
    ASSERT_TRUE(permit(a, elsewhere));
    auto other = dp->expect<ipc::PermissionAdd>();
    ASSERT_TRUE(other);
    EXPECT_EQ(other->alloc_id, id_a);
    EXPECT_TRUE(same(other->peer, ip_only(elsewhere)));
    // An allocation that comes and goes before the echo: its Add and Del,
    // nothing of its permission on the external IP, then or later.
    uint64_t id_c = 0;
    {
        Client c(relay.server());
        c.allocate();
        auto add = dp->expect<ipc::AllocationAdd>();
        ASSERT_TRUE(add);
        id_c = add->alloc_id;
        ASSERT_TRUE(permit(c, rb));
        ASSERT_TRUE(c.request(M::kRefresh, [](auto& r) { r.add_u32(stun::attr::kLifetime, 0); }).success());
        auto del = dp->expect<ipc::AllocationDel>();
        ASSERT_TRUE(del);
        EXPECT_EQ(del->alloc_id, id_c);
    }
    EXPECT_FALSE(dp->next(400).has_value()) << "a permission or channel on the external IP was sent before the echo";
    const std::string applied0 = "\nturn_dataplane_external_ips_applied 0\n";
    EXPECT_NE(metrics_with(relay.metrics_port(), applied0).find(applied0), std::string::npos);

    // (f) Echoes that differ from what was sent: bad messages, nothing released.
    ipc::ExternalIps wrong = sent;
    wrong.external_v4 = ipc::WireAddress::from(A("127.0.0.9"));
    dp->send(wrong);
    wrong = sent;
    wrong.relay_v4 = ipc::WireAddress::from(A("127.0.0.5"));
    dp->send(wrong);
    EXPECT_FALSE(dp->next(400).has_value()) << "a wrong echo released the withheld entries";
    const std::string bad2 = "\nturn_dataplane_bad_messages_total 2\n";
    const std::string body = metrics_with(relay.metrics_port(), bad2);
    EXPECT_NE(body.find(bad2), std::string::npos) << body;
    EXPECT_NE(body.find(applied0), std::string::npos) << body;

    // (c) The echo: A's permission, B's channel and permission, as they are
    // now (nothing of the gone allocation), once; the gauge reads 1.
    dp->send(sent);
    auto released = read_messages(*dp, false);
    EXPECT_EQ(released.others, 0u);
    EXPECT_TRUE(released.allocs.empty());
    EXPECT_EQ(perm_keys(released.perms),
              (std::vector<std::pair<uint64_t, Address>>{{std::min(id_a, id_b), external},
                                                         {std::max(id_a, id_b), external}}));
    for (const auto& p : released.perms) {
        EXPECT_NE(p.alloc_id, id_c);
        // Each on its own allocation's relayed address (the relay IP, the advertised port).
        EXPECT_TRUE(same(p.relayed, A("127.0.0.1").with_port(p.alloc_id == id_a ? ra.port : rb.port)));
    }
    ASSERT_EQ(released.chans.size(), 1u);
    EXPECT_EQ(released.chans[0].alloc_id, id_b);
    EXPECT_EQ(released.chans[0].channel, 0x4001);
    EXPECT_TRUE(same(released.chans[0].peer, ra));
    EXPECT_TRUE(same(released.chans[0].relayed, A("127.0.0.1").with_port(rb.port)));
    const std::string applied1 = "\nturn_dataplane_external_ips_applied 1\n";
    EXPECT_NE(metrics_with(relay.metrics_port(), applied1).find(applied1), std::string::npos);
    EXPECT_FALSE(log_line(relay, "event=dataplane_external_ips_applied relay_ips=\"127.0.0.1 as 127.0.0.2\" entries=3")
                     .empty())
        << relay.log();
    // The same echo again: nothing sent twice.
    dp->send(sent);
    EXPECT_FALSE(dp->next(400).has_value());
    // From now on one is sent as it is made.
    ASSERT_TRUE(bind_channel(a, 0x4002, rb));
    auto chan = dp->expect<ipc::ChannelAdd>();
    ASSERT_TRUE(chan);
    EXPECT_EQ(chan->alloc_id, id_a);
    EXPECT_TRUE(same(chan->peer, rb));
    EXPECT_FALSE(dp->next(400).has_value()) << "A's permission for B exists: nothing else";

    // (e) A new connection, and a second Hello on it: withheld again until
    // that session's echo, then all four on the external IP.
    const auto on_external = std::vector<std::pair<uint64_t, Address>>{{std::min(id_a, id_b), external},
                                                                       {std::max(id_a, id_b), external}};
    const auto channels = chan_keys({*chan, released.chans[0]});
    dp.reset();
    const std::string gone = "\nturn_dataplane_connected 0\n";
    const std::string after_close = metrics_with(relay.metrics_port(), gone);
    EXPECT_NE(after_close.find(gone), std::string::npos) << after_close;
    EXPECT_NE(after_close.find(applied0), std::string::npos) << "still confirmed with no dataplane attached";
    dp = std::make_unique<FakeDataplane>(relay.socket_path());
    ASSERT_TRUE(dp->connected());
    dp->ack_external_ips = false;
    for (uint64_t boot : {81, 82}) {
        dp->types.clear();
        dp->hello(boot);
        ASSERT_TRUE(dp->expect<ipc::ResyncBegin>());
        EXPECT_EQ(dp->types, (std::vector<ipc::MsgType>{ipc::MsgType::kSettings, ipc::MsgType::kExternalIps,
                                                        ipc::MsgType::kResyncBegin}));
        auto again = read_messages(*dp, true);
        EXPECT_EQ(again.allocs.size(), 2u);
        EXPECT_EQ(perm_keys(again.perms), (std::vector<std::pair<uint64_t, Address>>{{id_a, ip_only(elsewhere)}}));
        EXPECT_TRUE(again.chans.empty());
        EXPECT_EQ(again.entries, 3u);
        EXPECT_FALSE(dp->next(400).has_value()) << "sent before this session's echo";
        EXPECT_NE(metrics_with(relay.metrics_port(), applied0).find(applied0), std::string::npos);
        ASSERT_TRUE(dp->external_ips);
        dp->send(*dp->external_ips);
        auto now = read_messages(*dp, false);
        EXPECT_EQ(perm_keys(now.perms), on_external);
        EXPECT_EQ(chan_keys(now.chans), channels);
        EXPECT_NE(metrics_with(relay.metrics_port(), applied1).find(applied1), std::string::npos);
    }
}

// A dataplane that never echoes the ExternalIps (one that predates them):
// the link stays, the gauge reads 0, and once it has answered a counters
// request the relay logs once per connection that relay-to-relay traffic
// between external-IP peers stays on the socket path. An ExternalIps sent
// before the Hello confirms nothing. One that echoes gets no warning.
TEST(DataplaneIpcExternalIps, ADataplaneThatNeverEchoesIsWarnedAboutOncePerConnection) {
    RelayProcess relay(false, 0, kExternalIp);
    ASSERT_TRUE(relay.ready()) << "turn-relay did not start";
    const std::string warning = "event=dataplane_ignores_external_ips";
    for (int conn = 1; conn <= 2; ++conn) {
        FakeDataplane old(relay.socket_path());
        ASSERT_TRUE(old.connected());
        old.ack_external_ips = false;
        if (conn == 1) {
            // An "echo" before the Hello, of what the relay would send: none
            // was sent on this connection, so it is a bad message and
            // confirms nothing.
            ipc::ExternalIps early{};
            early.external_v4 = ipc::WireAddress::from(A("127.0.0.2"));
            early.relay_v4 = ipc::WireAddress::from(A("127.0.0.1"));
            old.send(early);
            const std::string bad = "\nturn_dataplane_bad_messages_total 1\n";
            EXPECT_NE(metrics_with(relay.metrics_port(), bad).find(bad), std::string::npos);
        }
        old.hello(90 + static_cast<uint64_t>(conn));
        ASSERT_TRUE(old.expect<ipc::ResyncBegin>());
        ASSERT_TRUE(old.expect<ipc::ResyncEnd>());
        EXPECT_EQ(old.external_ips_count, 1);
        old.report = ipc::CountersReport{};
        old.report->last = 1;
        old.serve_counters(3000);
        ASSERT_GT(old.counter_requests, 0);
        const std::string want = "\nturn_dataplane_external_ips_applied 0\n";
        const std::string body = metrics_with(relay.metrics_port(), want);
        EXPECT_NE(body.find(want), std::string::npos) << body;
        EXPECT_NE(body.find("\nturn_dataplane_connected 1\n"), std::string::npos) << "the link stays";
        for (int i = 0; i < 50 && count_of(relay.log(), warning) < static_cast<size_t>(conn); ++i) {
            ::usleep(20'000);
        }
        old.serve_counters(3000);  // a second report: no second warning
        EXPECT_EQ(count_of(relay.log(), warning), static_cast<size_t>(conn)) << relay.log();
    }
    FakeDataplane current(relay.socket_path());
    ASSERT_TRUE(current.connected());
    current.hello(99);
    ASSERT_TRUE(current.expect<ipc::ResyncBegin>());
    current.report = ipc::CountersReport{};
    current.report->last = 1;
    current.serve_counters(3000);
    current.serve_counters(3000);
    ASSERT_GE(current.counter_requests, 2);
    EXPECT_EQ(count_of(relay.log(), warning), 2u) << relay.log();
    const std::string want = "\nturn_dataplane_external_ips_applied 1\n";
    EXPECT_NE(metrics_with(relay.metrics_port(), want).find(want), std::string::npos);
}

// (g) Without external_ips no ExternalIps is sent, an ExternalIps from the
// dataplane is a bad message, nothing is withheld (a peer on a relayed
// address of this relay, on the relay IP, is sent at once), and the gauge
// stays 0.
TEST_F(DataplaneIpc, WithoutExternalIpsNoneIsSentAndAnEchoIsABadMessage) {
    FakeDataplane dp(relay_.socket_path());
    ASSERT_TRUE(dp.connected());
    dp.hello(100);
    ASSERT_TRUE(dp.expect<ipc::ResyncBegin>());
    EXPECT_EQ(dp.types, (std::vector<ipc::MsgType>{ipc::MsgType::kSettings, ipc::MsgType::kResyncBegin}));
    ASSERT_TRUE(dp.expect<ipc::ResyncEnd>());
    ipc::ExternalIps unasked{};
    unasked.external_v4 = ipc::WireAddress::from(A("127.0.0.2"));
    unasked.relay_v4 = ipc::WireAddress::from(A("127.0.0.1"));
    dp.send(unasked);
    const std::string bad = "\nturn_dataplane_bad_messages_total 1\n";
    const std::string body = metrics_with(relay_.metrics_port(), bad);
    EXPECT_NE(body.find(bad), std::string::npos) << body;
    EXPECT_NE(body.find("\nturn_dataplane_external_ips_applied 0\n"), std::string::npos) << body;
    EXPECT_NE(count_of(relay_.log(), "event=dataplane_bad_message type=5 "), 0u) << relay_.log();
    Client a(relay_.server());
    Client b(relay_.server());
    a.allocate();
    ASSERT_TRUE(dp.expect<ipc::AllocationAdd>());
    const Address rb = b.allocate();
    ASSERT_TRUE(dp.expect<ipc::AllocationAdd>());
    ASSERT_TRUE(bind_channel(a, 0x4001, rb));
    auto perm = dp.expect<ipc::PermissionAdd>();  // the permission first, then its channel
    ASSERT_TRUE(perm);
    EXPECT_TRUE(same(perm->peer, ip_only(rb)));
    auto chan = dp.expect<ipc::ChannelAdd>();
    ASSERT_TRUE(chan);
    EXPECT_TRUE(same(chan->peer, rb));
    EXPECT_EQ(dp.external_ips_count, 0);
}

}  // namespace
}  // namespace turn::cp::test
