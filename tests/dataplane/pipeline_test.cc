// Golden packet tests: every fast-path case, drop and punt, for IPv4 and
// IPv6, through the real worker pipeline (dp::poll_once) on in-memory DPDK
// ports (net_ring over rte_rings the test feeds and drains). State is
// installed through encoded IPC messages, as the control plane would.
// Outputs are compared byte for byte with frames built independently
// (packet_builder.cc), and every test asserts the exact counter deltas.
#include <gtest/gtest.h>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "common/dpdk.h"
#include "common/port_counters.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "ipc/protocol.h"
#include "ipc_messages.h"
#include "nexthop/nexthop.h"
#include "packet_builder.h"
#include "stun/integrity.h"
#include "worker/pipeline.h"
#include "worker/stages.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#include <rte_eth_ring.h>
#include <rte_net_crc.h>
#pragma GCC diagnostic pop

using namespace dptest;
using dp::Counter;
using turn::Address;
namespace ipc = turn::ipc;

namespace {

const Mac kPortMac{0x02, 0, 0, 0, 0, 0x01};
const Mac kGatewayMac{0x02, 0, 0, 0, 0, 0xfe};
const Mac kHostMac{0x02, 0, 0, 0, 0, 0xaa};
constexpr uint16_t kChannel = 0x4001;
constexpr uint64_t kAllocId = 7;
constexpr uint8_t kTos = 0xb8;  // EF, kept across the relay
constexpr uint8_t kTtl = 57;   // received TTL / hop limit; relayed packets leave with kTtl - 1

struct Env {
    rte_mempool* pool = nullptr;
    rte_ring* nic_in = nullptr;
    rte_ring* nic_out = nullptr;
    rte_ring* exc_in = nullptr;
    rte_ring* exc_out = nullptr;
    uint16_t nic_port = 0;
    uint16_t exc_port = 0;
};
Env* g_env = nullptr;

// "<prefix><n>". (GCC 12 at -O3 reports a false -Wrestrict on
// `"short literal" + std::to_string(n)`.)
std::string numbered(const char* prefix, long n) {
    char b[64];
    std::snprintf(b, sizeof b, "%s%ld", prefix, n);
    return b;
}

// Releases EAL memory and removes this process's runtime directory
// (/var/run/dpdk/<prefix>), which --no-shconf still creates.
class EalCleanup : public ::testing::Environment {
public:
    void TearDown() override {
        if (g_env == nullptr) {
            return;
        }
        const std::string dir = rte_eal_get_runtime_dir();
        rte_eal_cleanup();
        std::filesystem::remove_all(dir);
    }
};
const auto* const g_cleanup = ::testing::AddGlobalTestEnvironment(new EalCleanup);

uint16_t ring_port(const char* name, rte_ring* rx, rte_ring* txr) {
    const int id = rte_eth_from_rings(name, &rx, 1, &txr, 1, static_cast<unsigned>(rte_socket_id()));
    if (id < 0) {
        return UINT16_MAX;
    }
    const auto port = static_cast<uint16_t>(id);
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(port, 0, 64, rte_socket_id(), nullptr, g_env->pool) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 64, rte_socket_id(), nullptr) != 0 || rte_eth_dev_start(port) != 0) {
        return UINT16_MAX;
    }
    return port;
}

void init_env() {
    if (g_env != nullptr) {
        return;
    }
    // --no-huge implies legacy memory, which --in-memory refuses; --no-shconf
    // and a per-process prefix keep runs from touching each other's files.
    const std::string prefix = numbered("--file-prefix=dptest", getpid());
    const char* argv[] = {"dataplane_tests", "--no-huge", "-m", "512", "--no-pci", "--no-shconf",
                          prefix.c_str(), "--log-level=lib.eal:error", "-l", "0"};
    ASSERT_GE(rte_eal_init(static_cast<int>(std::size(argv)), const_cast<char**>(argv)), 0) << rte_strerror(rte_errno);
    rte_net_crc_set_alg(RTE_NET_CRC_SSE42);  // the FINGERPRINT CRC turn-dataplane selects
    g_env = new Env();
    g_env->pool = rte_pktmbuf_pool_create("dpt_pool", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    ASSERT_NE(g_env->pool, nullptr);
    auto ring = [](const char* n) {
        return rte_ring_create(n, 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    };
    g_env->nic_in = ring("nic_in");
    g_env->nic_out = ring("nic_out");
    g_env->exc_in = ring("exc_in");
    g_env->exc_out = ring("exc_out");
    g_env->nic_port = ring_port("net_nic", g_env->nic_in, g_env->nic_out);
    g_env->exc_port = ring_port("net_exc", g_env->exc_in, g_env->exc_out);
    ASSERT_NE(g_env->nic_port, UINT16_MAX);
    ASSERT_NE(g_env->exc_port, UINT16_MAX);
}

struct Net {
    Address client, listen, relayed, peer, stranger;
};
Net net_for(int family) {
    if (family == 4) {
        return {*Address::parse("198.18.0.10:50000"), *Address::parse("198.18.0.1:3478"),
                *Address::parse("198.18.0.1:49152"), *Address::parse("198.19.0.20:6000"),
                *Address::parse("198.19.0.99:7000")};
    }
    return {*Address::parse("[fd00::10]:50000"), *Address::parse("[fd00::1]:3478"),
            *Address::parse("[fd00::1]:49152"), *Address::parse("[fd00:1::20]:6000"),
            *Address::parse("[fd00:1::99]:7000")};
}

// The golden cases' fixture, whatever the test's parameter: a worker on the
// in-memory ports with its own flow tables and next hops, and allocation
// kAllocId (install) on the addresses n_ of family(), 4 or 6.
class PipelineBase : public ::testing::Test {
protected:
    virtual int family() const = 0;
    void SetUp() override {
        init_env();
        ASSERT_NE(g_env, nullptr);
        static int instance = 0;
        instance++;
        dp::FlowConfig fc;
        fc.name = numbered("t", instance);
        fc.entries_v4 = 1024;
        fc.entries_v6 = 1024;
        fc.max_allocations = 64;
        fc.max_channels = 64;
        fc.workers = 2;  // w_ is worker 0; a test may start a worker 1 (bandwidth budgets)
        fc.client_cache = client_cache_;
        std::string err;
        flows_ = dp::FlowTables::create(fc, &err);
        ASSERT_NE(flows_, nullptr) << err;
        nh_ = dp::NextHops::create(numbered("nh", instance), 64, flows_->rcu, SOCKET_ID_ANY, &err);
        ASSERT_NE(nh_, nullptr) << err;
        applier_ = new dp::Applier(*flows_);
        dp::WorkerConfig wc;
        wc.nic_port = g_env->nic_port;
        wc.exc_port = g_env->exc_port;
        wc.mtu = 1500;
        // meson runs this binary twice: with the express lane (the default)
        // and, with DP_TEST_NO_EXPRESS set, every case through the stages alone.
        wc.express = std::getenv("DP_TEST_NO_EXPRESS") == nullptr;
        wc.express_rest = 0;  // the lane tries every burst (ExpressLaneRests... tests resting)
        std::copy(kPortMac.begin(), kPortMac.end(), wc.port_mac[g_env->nic_port].addr_bytes);
        w_.init(wc, flows_, nh_);
        dp::NextHop gw;
        std::copy(kGatewayMac.begin(), kGatewayMac.end(), gw.mac.addr_bytes);
        gw.port = g_env->nic_port;
        nh_->set_default(4, gw);
        nh_->set_default(6, gw);
        n_ = net_for(family());
        install();
    }
    void TearDown() override {
        w_.fini();
        delete applier_;
        delete nh_;
        delete flows_;
    }

    template <typename M>
    void ipc_send(M m) {
        ASSERT_TRUE(applier_->apply(ipc::encode(m, ++seq_)));
    }
    // The control plane's messages, as it would send them. Allocations are
    // always on the listening address n_.listen.
    void add_allocation(uint64_t id, const Address& client, const Address& relayed, uint64_t bandwidth = 0) {
        ipc_send(allocation_add(id, client, n_.listen, relayed.is_v4() ? &relayed : nullptr,
                                relayed.is_v6() ? &relayed : nullptr, bandwidth));
    }
    void add_permission(uint64_t id, const Address& relayed, const Address& peer) {
        ipc_send(permission_add(id, relayed, peer));
    }
    void add_channel(uint64_t id, const Address& relayed, const Address& peer, uint16_t channel) {
        ipc_send(channel_add(id, relayed, peer, channel));
    }
    void del_allocation(uint64_t id) {
        ipc::AllocationDel d{};
        d.alloc_id = id;
        ipc_send(d);
    }
    // The control plane's Settings (sent before each ResyncBegin): relayed
    // datagrams' TOS / Traffic Class = (received & keep) | set.
    void set_tos_rule(uint8_t keep, uint8_t set) {
        ipc::Settings m{};
        m.tos_keep = keep;
        m.tos_set = set;
        ipc_send(m);
    }
    void install(uint64_t bandwidth = 0) {
        add_allocation(kAllocId, n_.client, n_.relayed, bandwidth);
        add_permission(kAllocId, n_.relayed, n_.peer);
        add_channel(kAllocId, n_.relayed, n_.peer, kChannel);
    }

    // Binds `channel` on the allocation's relayed address to `peer`.
    void bind_channel(uint16_t channel, const Address& peer) { add_channel(kAllocId, n_.relayed, peer, channel); }
    // Quiescent states, so retired values and slots come back.
    void settle() {
        for (int i = 0; i < 4; i++) {
            dp::poll_once(w_);
            flows_->reclaim();
        }
    }

    Frame from_client(const Bytes& payload) const {
        Frame f;
        f.dst_mac = kPortMac;
        f.src_mac = kHostMac;
        f.src = n_.client;
        f.dst = n_.listen;
        f.payload = payload;
        f.ttl = kTtl;
        f.ip_id = 0x1234;
        f.df = false;
        f.tos = kTos;
        return f;
    }
    Frame from_peer(const Bytes& payload, const Address& peer) const {
        Frame f = from_client(payload);
        f.src = peer;
        f.dst = n_.relayed;
        return f;
    }
    // What the relay must emit: fresh IP header from the relay, TOS kept,
    // TTL / hop limit one less than received (RFC 8656 section 14).
    static Frame relayed(const Address& src, const Address& dst, const Bytes& payload) {
        Frame f;
        f.dst_mac = kGatewayMac;
        f.src_mac = kPortMac;
        f.src = src;
        f.dst = dst;
        f.payload = payload;
        f.ttl = kTtl - 1;
        f.ip_id = 0;
        f.df = true;
        f.tos = kTos;
        return f;
    }

    struct Out {
        std::vector<Bytes> nic;
        std::vector<Bytes> exc;
    };
    static std::vector<Bytes> drain(rte_ring* r) {
        std::vector<Bytes> v;
        void* o;
        while (rte_ring_dequeue(r, &o) == 0) {
            auto* m = static_cast<rte_mbuf*>(o);
            const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
            v.emplace_back(d, d + rte_pktmbuf_pkt_len(m));
            rte_pktmbuf_free(m);
        }
        return v;
    }
    static rte_mbuf* mbuf_of(const Bytes& b) {
        rte_mbuf* m = rte_pktmbuf_alloc(g_env->pool);
        char* d = rte_pktmbuf_append(m, static_cast<uint16_t>(b.size()));
        std::memcpy(d, b.data(), b.size());
        return m;
    }
    Out run(const std::vector<Bytes>& nic_in, const std::vector<Bytes>& exc_in = {}) {
        before_ = w_.counters;
        for (const Bytes& b : nic_in) {
            rte_ring_enqueue(g_env->nic_in, mbuf_of(b));
        }
        for (const Bytes& b : exc_in) {
            rte_ring_enqueue(g_env->exc_in, mbuf_of(b));
        }
        while (dp::poll_once(w_) != 0 || !rte_ring_empty(g_env->exc_in)) {
        }
        return {drain(g_env->nic_out), drain(g_env->exc_out)};
    }
    Out run1(const Bytes& b) { return run({b}); }

    // Every counter moved by exactly the given amounts, all others by zero.
    void expect_deltas(std::map<Counter, uint64_t> want) const {
        for (size_t i = 0; i < dp::kCounterCount; i++) {
            const auto c = static_cast<Counter>(i);
            const uint64_t d = w_.counters.get(c) - before_.get(c);
            const uint64_t e = want.count(c) ? want[c] : 0;
            EXPECT_EQ(d, e) << "counter " << dp::counter_name(c);
        }
    }

    dp::FlowTables* flows_ = nullptr;
    dp::NextHops* nh_ = nullptr;
    dp::Applier* applier_ = nullptr;
    dp::Worker w_;
    bool client_cache_ = true;  // FlowConfig::client_cache (PipelineWithoutCache sets false)
    dp::Counters before_;
    Net n_;
    uint64_t seq_ = 0;
};

// Most cases: the parameter is the family.
class Pipeline : public PipelineBase, public ::testing::WithParamInterface<int> {
protected:
    int family() const override { return GetParam(); }
    // ExpressLaneMatchesTheStages, with and without the client cache.
    void check_express_against_stages(uint64_t min_finished_per_phase);
};

// The cases of one family only (instantiated with that family alone, so
// that the other is not reported as skipped).
class PipelineIpv4 : public Pipeline {};
class PipelineIpv6 : public Pipeline {};

// Checksums of a frame, recomputed independently: IPv4 header and UDP.
void expect_valid_checksums(const Bytes& f) {
    ASSERT_GE(f.size(), 14u);
    const bool v4 = f[12] == 0x08;
    if (v4) {
        EXPECT_EQ(checksum(&f[14], 20), 0) << "IPv4 header checksum";
    }
}

// ---- fast path ----

TEST_P(Pipeline, ClientChannelDataToPeer) {
    const Bytes data = pattern(161);
    const Out o = run1(build(from_client(channel_data(kChannel, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_TRUE(o.exc.empty());
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_valid_checksums(o.nic[0]);
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

// A PMD may hand the worker mbufs whose data lives in its own memory,
// attached as an external buffer (mlx5's multi-packet rx queues do). The
// rewrite must keep RTE_MBUF_F_EXTERNAL, or freeing the forwarded mbuf
// returns it to the pool without releasing that memory. Every forwarding
// kind, through the lane and (DP_TEST_NO_EXPRESS) the stages.
TEST_P(Pipeline, ExternalBuffersAreReleasedAfterForwarding) {
    static int released = 0;
    struct Ext {
        rte_mbuf_ext_shared_info sh{};
        uint8_t buf[2048];
    };
    auto ext_mbuf = [](const Bytes& b) {
        auto* e = new Ext();
        e->sh.free_cb = [](void*, void* opaque) {
            delete static_cast<Ext*>(opaque);
            released++;
        };
        e->sh.fcb_opaque = e;
        rte_mbuf_ext_refcnt_set(&e->sh, 1);
        rte_mbuf* m = rte_pktmbuf_alloc(g_env->pool);
        rte_pktmbuf_attach_extbuf(m, e->buf, RTE_BAD_IOVA, sizeof e->buf, &e->sh);
        m->data_off = RTE_PKTMBUF_HEADROOM;
        std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(b.size())), b.data(), b.size());
        return m;
    };
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const std::vector<Bytes> in = {
        build(from_client(channel_data(kChannel, pattern(40)))),
        build(from_client(send_indication(tx, n_.peer, pattern(41), false))),
        build(from_peer(pattern(42), n_.peer)),
        build(from_peer(pattern(43), n_.peer.with_port(6001))),
    };
    before_ = w_.counters;
    released = 0;
    for (const Bytes& b : in) {
        rte_ring_enqueue(g_env->nic_in, ext_mbuf(b));
    }
    while (dp::poll_once(w_) != 0) {
    }
    void* o;
    int out = 0;
    while (rte_ring_dequeue(g_env->nic_out, &o) == 0) {
        auto* m = static_cast<rte_mbuf*>(o);
        EXPECT_TRUE(RTE_MBUF_HAS_EXTBUF(m)) << "frame " << out;
        rte_pktmbuf_free(m);
        out++;
    }
    EXPECT_EQ(out, 4);
    EXPECT_EQ(released, 4);
    expect_deltas({{Counter::rx, 4},
                   {Counter::fwd_client_channel, 1},
                   {Counter::fwd_client_send, 1},
                   {Counter::fwd_peer_channel, 1},
                   {Counter::fwd_peer_data, 1}});
}

TEST_P(Pipeline, ClientChannelDataWithPaddingIsTrimmed) {
    const Bytes data = pattern(5);
    const Out o = run1(build(from_client(channel_data(kChannel, data, 3))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

TEST_P(Pipeline, ClientChannelDataEmptyPayload) {
    const Out o = run1(build(from_client(channel_data(kChannel, {}))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, {})));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

TEST_P(Pipeline, ClientChannelDataVlanTaggedInput) {
    Frame f = from_client(channel_data(kChannel, pattern(64)));
    f.vlan = 100;
    const Out o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(64))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

TEST_P(Pipeline, SendIndicationToPeer) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Bytes data = pattern(37);  // odd: padding and FINGERPRINT follow it
    const Out o = run1(build(from_client(send_indication(tx, n_.peer, data, true))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}});
}

TEST_P(Pipeline, PeerToClientChannelData) {
    const Bytes data = pattern(99);
    const Out o = run1(build(from_peer(data, n_.peer)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, channel_data(kChannel, data))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_channel, 1}});
}

TEST_P(Pipeline, PeerToClientDataIndication) {
    // Same peer IP, other port: permission (per IP) but no channel.
    const Address peer2 = n_.peer.with_port(6001);
    const Bytes data = pattern(45);
    const Out o = run1(build(from_peer(data, peer2)));
    ASSERT_EQ(o.nic.size(), 1u);
    const size_t stun = 14 + (GetParam() == 4 ? 20 : 40) + 8;
    ASSERT_GT(o.nic[0].size(), stun + 20);
    std::array<uint8_t, 12> txid;
    std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
              txid.begin());
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, data_indication(txid, peer2, data))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
}

// IPv4 only: IPv6 forbids a zero UDP checksum.
TEST_P(PipelineIpv4, Ipv4ZeroUdpChecksumGetsFullChecksum) {
    Frame f = from_client(channel_data(kChannel, pattern(30)));
    f.zero_udp_checksum = true;
    const Out o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(30))));
}

TEST_P(Pipeline, BurstOfMixedTrafficKeepsOrderPerDirection) {
    std::vector<Bytes> in;
    for (int i = 0; i < 40; i++) {  // more than one burst
        in.push_back(i % 2 ? build(from_peer(pattern(20, static_cast<uint8_t>(i)), n_.peer))
                           : build(from_client(channel_data(kChannel, pattern(20, static_cast<uint8_t>(i))))));
    }
    const Out o = run(in);
    ASSERT_EQ(o.nic.size(), 40u);
    for (int i = 0; i < 40; i++) {
        const Bytes d = pattern(20, static_cast<uint8_t>(i));
        EXPECT_EQ(o.nic[static_cast<size_t>(i)], i % 2 ? build(relayed(n_.listen, n_.client, channel_data(kChannel, d)))
                                                       : build(relayed(n_.relayed, n_.peer, d)));
    }
    expect_deltas({{Counter::rx, 40}, {Counter::fwd_client_channel, 20}, {Counter::fwd_peer_channel, 20}});
}

// One full burst over many flows, with misses among both the client and the
// peer packets before and after the first kAllocAhead of each (lookup.cc
// requests allocation lines that many packets ahead): every packet gets its
// own flow's verdict and bytes, whatever its neighbours are. Run twice: the
// first time every client packet misses the worker's cache (it is filled
// from the hash), the second time the known clients hit it.
TEST_P(Pipeline, FullBurstOfManyFlowsWithMissesInBetween) {
    constexpr int kFlows = 12;
    auto client_of = [&](int k) { return n_.client.with_port(static_cast<uint16_t>(40000 + k)); };
    auto relayed_of = [&](int k) { return n_.relayed.with_port(static_cast<uint16_t>(49300 + k)); };
    for (int k = 1; k <= kFlows; k++) {
        add_allocation(kAllocId + 100 + k, client_of(k), relayed_of(k));
        add_permission(kAllocId + 100 + k, relayed_of(k), n_.peer);
        add_channel(kAllocId + 100 + k, relayed_of(k), n_.peer, kChannel);
    }
    del_allocation(kAllocId + 100 + kFlows);  // its relayed port's word is 0 now
    std::vector<Bytes> in;
    std::vector<Bytes> want_nic;
    uint64_t want_exc = 0, want_to_client = 0, unknown_clients = 0;
    int peer_pos = 0, client_pos = 0;  // position among the burst's peer / client packets
    std::vector<int> peer_miss_pos, client_miss_pos;
    for (int i = 0; i < 32; i++) {
        const Bytes d = pattern(16 + i, static_cast<uint8_t>(i));
        const int k = 1 + i % (kFlows - 1);
        Frame f;
        if (i == 3 || i == 28) {  // unknown client: cache and hash miss
            f = from_client(channel_data(kChannel, d));
            f.src = n_.client.with_port(static_cast<uint16_t>(39000 + i));
            want_exc++;
            unknown_clients++;
            client_miss_pos.push_back(client_pos++);
        } else if (i == 5 || i == 30) {  // the deleted allocation's relayed port
            f = from_peer(d, n_.peer);
            f.dst = relayed_of(kFlows);
            want_exc++;
            peer_miss_pos.push_back(peer_pos++);
        } else if (i == 12) {  // a port in no relayed chunk at all
            f = from_peer(d, n_.peer);
            f.dst = n_.relayed.with_port(1000);
            want_exc++;  // punted before it is a peer packet of the paced loop
        } else if (i % 3 == 0) {
            f = from_peer(d, n_.peer);
            f.dst = relayed_of(k);
            want_nic.push_back(build(relayed(n_.listen, client_of(k), channel_data(kChannel, d))));
            want_to_client++;
            peer_pos++;
        } else {
            f = from_client(channel_data(kChannel, d));
            f.src = client_of(k);
            want_nic.push_back(build(relayed(relayed_of(k), n_.peer, d)));
            client_pos++;
        }
        in.push_back(build(f));
    }
    // The misses sit on both sides of the distance (8) in both lists.
    ASSERT_LT(peer_miss_pos.front(), 8);
    ASSERT_GE(peer_miss_pos.back(), 8);
    ASSERT_LT(client_miss_pos.front(), 8);
    ASSERT_GE(client_miss_pos.back(), 8);
    for (int round = 0; round < 2; round++) {
        SCOPED_TRACE(round == 0 ? "cold cache" : "warm cache");
        const uint64_t misses_before = w_.cache.misses;
        const Out o = run(in);
        ASSERT_EQ(o.nic.size(), want_nic.size());
        for (size_t i = 0; i < want_nic.size(); i++) {
            EXPECT_EQ(o.nic[i], want_nic[i]) << "forwarded packet " << i;
        }
        EXPECT_EQ(o.exc.size(), want_exc);
        expect_deltas({{Counter::rx, 32},
                       {Counter::punt_miss, want_exc},
                       {Counter::fwd_client_channel, 32 - want_exc - want_to_client},
                       {Counter::fwd_peer_channel, want_to_client}});
        if (w_.cache.e != nullptr) {
            EXPECT_EQ(w_.cache.misses - misses_before,
                      round == 0 ? static_cast<uint64_t>(client_pos) : unknown_clients);
        }
    }
}

// ---- relaying between families (client of one family, relayed address and
// peer of the other; RFC 8656 REQUESTED-ADDRESS-FAMILY) ----

struct CrossFamily {
    Address client, relayed, peer;
};
CrossFamily cross_for(int family) {
    if (family == 4) {  // IPv4 client, IPv6 relayed address and peer
        return {*Address::parse("198.18.0.11:50001"), *Address::parse("[fd00::1]:49200"),
                *Address::parse("[fd00:1::30]:6100")};
    }
    return {*Address::parse("[fd00::11]:50001"), *Address::parse("198.18.0.1:49200"),
            *Address::parse("198.19.0.30:6100")};
}
constexpr uint16_t kCrossChannel = 0x4005;

class CrossPipeline : public Pipeline {
protected:
    void SetUp() override {
        Pipeline::SetUp();
        x_ = cross_for(GetParam());
        add_allocation(8, x_.client, x_.relayed);
        add_permission(8, x_.relayed, x_.peer);
        add_channel(8, x_.relayed, x_.peer, kCrossChannel);
    }
    Frame from_client2(const Bytes& payload) const {
        Frame f = from_client(payload);
        f.src = x_.client;
        return f;
    }
    Frame from_peer2(const Bytes& payload, const Address& peer) const {
        Frame f = from_client(payload);
        f.src = peer;
        f.dst = x_.relayed;
        return f;
    }
    CrossFamily x_;
};

TEST_P(CrossPipeline, ChannelDataToPeerOfOtherFamily) {
    const Out o = run1(build(from_client2(channel_data(kCrossChannel, pattern(33)))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(x_.relayed, x_.peer, pattern(33))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

TEST_P(CrossPipeline, SendToPeerOfOtherFamily) {
    const std::array<uint8_t, 12> tx{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
    const Out o = run1(build(from_client2(send_indication(tx, x_.peer, pattern(21), true))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(x_.relayed, x_.peer, pattern(21))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}});
}

TEST_P(CrossPipeline, PeerOfOtherFamilyToClientChannelData) {
    const Out o = run1(build(from_peer2(pattern(50), x_.peer)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, x_.client, channel_data(kCrossChannel, pattern(50)))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_channel, 1}});
}

TEST_P(CrossPipeline, PeerOfOtherFamilyToClientDataIndication) {
    const Address peer2 = x_.peer.with_port(6101);
    const Out o = run1(build(from_peer2(pattern(7), peer2)));
    ASSERT_EQ(o.nic.size(), 1u);
    const size_t stun = 14 + (GetParam() == 4 ? 20 : 40) + 8;  // headers of the client's family
    ASSERT_GT(o.nic[0].size(), stun + 20);
    std::array<uint8_t, 12> txid;
    std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
              txid.begin());
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, x_.client, data_indication(txid, peer2, pattern(7)))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
}

// TTL <-> hop limit between families: one less, and 0 or 1 dropped, both ways.
TEST_P(CrossPipeline, TtlBetweenFamilies) {
    Frame c = from_client2(channel_data(kCrossChannel, pattern(33)));
    Frame p = from_peer2(pattern(50), x_.peer);
    c.ttl = p.ttl = 1;
    Out o = run({build(c), build(p)});
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 2}, {Counter::drop_ttl_expired, 2}});
    c.ttl = p.ttl = 2;
    o = run({build(c), build(p)});
    ASSERT_EQ(o.nic.size(), 2u);
    Frame e = relayed(x_.relayed, x_.peer, pattern(33));
    e.ttl = 1;
    EXPECT_EQ(o.nic[0], build(e));
    e = relayed(n_.listen, x_.client, channel_data(kCrossChannel, pattern(50)));
    e.ttl = 1;
    EXPECT_EQ(o.nic[1], build(e));
    expect_deltas({{Counter::rx, 2}, {Counter::fwd_client_channel, 1}, {Counter::fwd_peer_channel, 1}});
}

// The relay's TOS rule (ipc::Settings) between families too: an IPv4 TOS
// becomes an IPv6 Traffic Class and the reverse, by the rule, ECN kept.
TEST_P(CrossPipeline, TosRuleBetweenFamilies) {
    const Address peer2 = x_.peer.with_port(6101);
    const size_t stun = 14 + (GetParam() == 4 ? 20 : 40) + 8;  // headers of the client's family
    // {keep, set, received, relayed}
    const std::array<std::array<uint8_t, 4>, 4> cases{{
        {0x03, 46 << 2, 0x8B, 0xBB},  // AF41 + CE -> EF + CE
        {0x03, 46 << 2, 0xB9, 0xB9},  // EF + ECT(1) stays
        {0x03, 0, 0x8B, 0x03},        // DSCP cleared, CE kept
        {0xFF, 0, 0x8B, 0x8B},        // back to keep
    }};
    for (const auto& [keep, set, in, want] : cases) {
        set_tos_rule(keep, set);
        const std::string what = "rule " + std::to_string(keep) + "/" + std::to_string(set) + " in " + std::to_string(in);
        Frame f = from_client2(channel_data(kCrossChannel, pattern(33)));
        f.tos = in;
        Frame e = relayed(x_.relayed, x_.peer, pattern(33));
        e.tos = want;
        Out o = run1(build(f));
        ASSERT_EQ(o.nic.size(), 1u) << what;
        EXPECT_EQ(o.nic[0], build(e)) << what;

        const std::array<uint8_t, 12> tx{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
        f = from_client2(send_indication(tx, x_.peer, pattern(21), true));
        f.tos = in;
        e = relayed(x_.relayed, x_.peer, pattern(21));
        e.tos = want;
        o = run1(build(f));
        ASSERT_EQ(o.nic.size(), 1u) << what;
        EXPECT_EQ(o.nic[0], build(e)) << what;

        f = from_peer2(pattern(50), x_.peer);
        f.tos = in;
        e = relayed(n_.listen, x_.client, channel_data(kCrossChannel, pattern(50)));
        e.tos = want;
        o = run1(build(f));
        ASSERT_EQ(o.nic.size(), 1u) << what;
        EXPECT_EQ(o.nic[0], build(e)) << what;

        f = from_peer2(pattern(7), peer2);
        f.tos = in;
        o = run1(build(f));
        ASSERT_EQ(o.nic.size(), 1u) << what;
        ASSERT_GT(o.nic[0].size(), stun + 20);
        std::array<uint8_t, 12> txid;
        std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
                  txid.begin());
        e = relayed(n_.listen, x_.client, data_indication(txid, peer2, pattern(7)));
        e.tos = want;
        EXPECT_EQ(o.nic[0], build(e)) << what;
        expect_valid_checksums(o.nic[0]);
    }
}

INSTANTIATE_TEST_SUITE_P(Families, CrossPipeline, ::testing::Values(4, 6),
                         [](const auto& i) { return i.param == 4 ? std::string("IPv4Client") : std::string("IPv6Client"); });

// An IPv4 client's allocation with only an IPv6 relayed address: its line's
// last bytes hold its one IPv6 channel slot (flow/tables.h ChanSlot6), the
// same bytes an allocation with an IPv4 relayed address keeps its IPv4 slots
// in. The peer here is chosen so that its IP's bytes 8-9 read 0x4123 where
// the second IPv4 slot's channel number would be: ChannelData on 0x4123,
// which the client never bound, must be punted, not sent to an IPv4 "peer"
// made of the IPv6 address's bytes (what a worker reading the bytes as IPv4
// slots would do). The bound channel forwards both ways from the slot.
class CrossPipelineIpv4Client : public CrossPipeline {};

TEST_P(CrossPipelineIpv4Client, Ipv6SlotIsNeverReadAsIpv4Slots) {
    const Address client = *Address::parse("198.18.0.12:50002");
    const Address relayed6 = *Address::parse("[fd00::1]:49201");
    const Address peer = *Address::parse("[fd00:1::4123:0:0:30]:6100");
    add_allocation(9, client, relayed6);
    add_permission(9, relayed6, peer);
    add_channel(9, relayed6, peer, 0x4006);
    EXPECT_EQ(flows_->channel_values_in_use(), 0u);  // both allocations' channels in slot6 (SetUp's 8 too)
    Frame c = from_client(channel_data(0x4006, pattern(30)));
    c.src = client;
    Frame bad = from_client(channel_data(0x4123, pattern(31)));
    bad.src = client;
    Frame back = from_client(pattern(32));
    back.src = peer;
    back.dst = relayed6;
    const Out o = run({build(c), build(bad), build(back)});
    ASSERT_EQ(o.nic.size(), 2u);
    EXPECT_EQ(o.nic[0], build(relayed(relayed6, peer, pattern(30))));
    EXPECT_EQ(o.nic[1], build(relayed(n_.listen, client, channel_data(0x4006, pattern(32)))));
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], build(bad));
    expect_deltas({{Counter::rx, 3}, {Counter::fwd_client_channel, 1}, {Counter::fwd_peer_channel, 1},
                   {Counter::punt_miss, 1}});
}

INSTANTIATE_TEST_SUITE_P(Families, CrossPipelineIpv4Client, ::testing::Values(4),
                         [](const auto&) { return std::string("IPv4Client"); });

// ---- drops ----

// RFC 8656 section 14, preferred behaviour: the relayed packet leaves with
// one less TTL / hop limit than it came with (every golden output above:
// kTtl - 1), and one that came with 0 or 1 is not relayed at all. Every
// relayed kind, through the express lane and (DP_TEST_NO_EXPRESS) the
// stages; 2 is the lowest that goes through, with 1.
TEST_P(Pipeline, TtlIsDecrementedAndZeroOrOneIsDropped) {
    const std::array<uint8_t, 12> tx{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
    const Address peer2 = n_.peer.with_port(6001);  // permission, no channel: Data indication
    const std::vector<Frame> relayable = {
        from_client(channel_data(kChannel, pattern(30))),
        from_client(send_indication(tx, n_.peer, pattern(31), false)),
        from_peer(pattern(32), n_.peer),
        from_peer(pattern(33), peer2),
    };
    for (const uint8_t ttl : {uint8_t{0}, uint8_t{1}}) {
        std::vector<Bytes> in;
        for (Frame f : relayable) {
            f.ttl = ttl;
            in.push_back(build(f));
        }
        const Out o = run(in);
        EXPECT_TRUE(o.nic.empty()) << "TTL " << int{ttl};
        EXPECT_TRUE(o.exc.empty()) << "TTL " << int{ttl};
        expect_deltas({{Counter::rx, 4}, {Counter::drop_ttl_expired, 4}});
    }
    for (const uint8_t ttl : {uint8_t{2}, uint8_t{255}}) {
        std::vector<Bytes> in;
        for (Frame f : relayable) {
            f.ttl = ttl;
            in.push_back(build(f));
        }
        const uint64_t lane0 = w_.express_packets;
        const Out o = run(in);
        // The lane still finishes ChannelData with 2 (parse_udp4 and parse_udp6 turn away only 0 and 1).
        EXPECT_EQ(w_.express_packets - lane0, w_.cfg.express ? 2u : 0u) << "TTL " << int{ttl};
        ASSERT_EQ(o.nic.size(), 4u) << "TTL " << int{ttl};
        Frame want = relayed(n_.relayed, n_.peer, pattern(30));
        want.ttl = static_cast<uint8_t>(ttl - 1);
        EXPECT_EQ(o.nic[0], build(want));
        want.payload = pattern(31);
        EXPECT_EQ(o.nic[1], build(want));
        want = relayed(n_.listen, n_.client, channel_data(kChannel, pattern(32)));
        want.ttl = static_cast<uint8_t>(ttl - 1);
        EXPECT_EQ(o.nic[2], build(want));
        const size_t ttl_at = 14 + (GetParam() == 4 ? 8 : 7);
        ASSERT_GT(o.nic[3].size(), ttl_at);
        EXPECT_EQ(o.nic[3][ttl_at], ttl - 1);
        for (const Bytes& f : o.nic) {
            expect_valid_checksums(f);
        }
        expect_deltas({{Counter::rx, 4},
                       {Counter::fwd_client_channel, 1},
                       {Counter::fwd_client_send, 1},
                       {Counter::fwd_peer_channel, 1},
                       {Counter::fwd_peer_data, 1}});
    }
}

// A packet with TTL 1 is dropped as that before anything else route
// decides: one over the MTU of a rate-limited allocation is neither punted
// nor charged (the budget, 1 B/s with the 64 KiB floor, still holds 44 or 45
// datagrams that size afterwards, as RateLimitCoversWhatIsPunted).
TEST_P(Pipeline, TtlExpiredIsDroppedBeforeMtuAndBudget) {
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 8;
    ipc_send(l);
    const size_t room = 1500 - (GetParam() == 4 ? 20 : 40) - 8;  // over the MTU as ChannelData
    std::vector<Bytes> in;
    for (int i = 0; i < 10; i++) {
        Frame f = from_peer(pattern(room), n_.peer);
        f.ttl = 1;
        in.push_back(build(f));
    }
    const Out o = run(in);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 10}, {Counter::drop_ttl_expired, 10}});
    in.clear();
    for (int i = 0; i < 50; i++) {
        in.push_back(build(from_peer(pattern(room), n_.peer)));
    }
    const size_t fit = 65536 / room;
    const Out o2 = run(in);
    EXPECT_EQ(o2.exc.size(), fit);
    expect_deltas({{Counter::rx, 50}, {Counter::punt_mtu, fit}, {Counter::drop_rate_limited, 50 - fit}});
}

// The TTL rule is for relayed traffic only: a STUN request with TTL 1 still
// reaches the control plane, and a datagram with TTL 1 for the host that is
// not to a relayed port still reaches the kernel; a peer without a
// permission is counted as that, whatever its TTL.
TEST_P(Pipeline, TtlOneOutsideTheRelayedTrafficIsNotDropped) {
    Frame stun = from_client(stun_binding_request());
    stun.ttl = 1;
    Frame other = from_peer(pattern(10), n_.peer);
    other.dst = n_.relayed.with_port(50000);  // not an offloaded relayed port
    other.ttl = 1;
    Frame stranger = from_peer(pattern(11), n_.stranger);
    stranger.ttl = 1;
    const Out o = run({build(stun), build(other), build(stranger)});
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 2u);
    EXPECT_EQ(o.exc[0], build(stun));
    EXPECT_EQ(o.exc[1], build(other));
    expect_deltas({{Counter::rx, 3},
                   {Counter::punt_not_fast_path, 1},
                   {Counter::punt_miss, 1},
                   {Counter::drop_no_permission, 1}});
}

TEST_P(Pipeline, PeerWithoutPermissionIsDroppedNotPunted) {
    const Out o = run1(build(from_peer(pattern(10), n_.stranger)));
    EXPECT_TRUE(o.nic.empty());
    EXPECT_TRUE(o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_no_permission, 1}});
}

TEST_P(Pipeline, SendWithoutPermissionIsPunted) {
    const std::array<uint8_t, 12> tx{};
    const Bytes in = build(from_client(send_indication(tx, n_.stranger, pattern(8), false)));
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], in);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
}

// ---- relay-to-relay: a peer that is one of the relay's own addresses ----

// Two relay-only clients of this relay: allocation kAllocId (client n_.client,
// relayed n_.relayed) and a second one, kAllocB, on the same relay IP. Each
// one's peer is the other's relayed address; the dataplane takes the packet
// from one allocation to the other itself (route.cc, own_destination;
// pipeline.cc), never out of the NIC to its router.
//
// The parameter: (family, behind a 1:1 NAT). Behind the NAT (ipc::ExternalIps)
// each client learnt the other's relayed address as the external IP and the
// relayed port (XOR-RELAYED-ADDRESS), so that is the peer it sends to and the
// one the other allocation permits. The dataplane takes the packet to that
// allocation itself, presented as coming from the sender's external address,
// as the socket path does (Config::to_internal / to_external): route.cc
// relayed_peer, pipeline.cc present_external. A case that holds either way
// is written once with peer_b() and peer_a() and runs in both modes;
// RelayToRelayWithoutNat and RelayToRelayBehindNat hold those of one mode.
class RelayToRelay : public PipelineBase, public ::testing::WithParamInterface<std::tuple<int, bool>> {
protected:
    static constexpr uint64_t kAllocB = 8;
    static constexpr uint16_t kChannelA = 0x4005;  // A's channel to peer_b()
    static constexpr uint16_t kChannelB = 0x4006;  // B's channel to peer_a()
    int family() const override { return std::get<0>(GetParam()); }
    bool nat() const { return std::get<1>(GetParam()); }
    void SetUp() override {
        PipelineBase::SetUp();
        client_b_ = family() == 4 ? *Address::parse("198.18.0.11:50001") : *Address::parse("[fd00::11]:50001");
        relayed_b_ = n_.relayed.with_port(49153);
        external_ = family() == 4 ? *Address::parse("198.19.7.1") : *Address::parse("fd00:7::1");
        add_allocation(kAllocB, client_b_, relayed_b_);
        if (nat()) {
            set_external(true);
        }
        // A's client knows B as peer_b() (behind the NAT, by its external address only).
        add_permission(kAllocId, n_.relayed, peer_b());
        add_channel(kAllocId, n_.relayed, peer_b(), kChannelA);
    }
    // The address A's client sends to for B: B's relayed address, or behind
    // the NAT B's external one (the external IP and B's relayed port).
    Address peer_b() const { return nat() ? external_.with_port(relayed_b_.port) : relayed_b_; }
    // The address A's packets reach B from, which B's client permits and a
    // Data indication names: A's relayed address, or behind the NAT A's
    // external one, never the relay IP behind it.
    Address peer_a() const { return nat() ? external_.with_port(n_.relayed.port) : n_.relayed; }
    // B lets A in: a permission for peer_a(), and optionally a channel.
    void b_permits_a(bool channel) {
        add_permission(kAllocB, relayed_b_, peer_a());
        if (channel) {
            add_channel(kAllocB, relayed_b_, peer_a(), kChannelB);
        }
    }
    // What the control plane sends: ExternalIps (the pair of external_ and
    // the relay IP, of this family), or (off) none before its ResyncBegin.
    // The first ResyncBegin here is the one the ExternalIps of SetUp
    // preceded; the second a control plane's without them. (No ResyncEnd:
    // nothing is swept, the entries stay.)
    void set_external(bool on) {
        if (!on) {
            for (uint64_t g : {77, 78}) {
                ipc::ResyncBegin b{};
                b.generation = g;
                ipc_send(b);
            }
            return;
        }
        ipc::ExternalIps m{};
        auto& ext = family() == 4 ? m.external_v4 : m.external_v6;
        auto& relay = family() == 4 ? m.relay_v4 : m.relay_v6;
        ext = ipc::WireAddress::from(external_);
        relay = ipc::WireAddress::from(n_.relayed.with_port(0));
        std::vector<uint8_t> echo;
        ASSERT_TRUE(applier_->apply(ipc::encode(m, ++seq_), [&](std::span<const uint8_t> r) { echo.assign(r.begin(), r.end()); }));
        ASSERT_FALSE(echo.empty()) << "applied ExternalIps are echoed";
    }
    // What reaches B's client: relayed twice, so two less TTL than A's client sent.
    Frame to_b(const Bytes& payload) const {
        Frame f = relayed(n_.listen, client_b_, payload);
        f.ttl = kTtl - 2;
        return f;
    }
    // The transaction ID of a Data indication the relay made.
    std::array<uint8_t, 12> txid_of(const Bytes& frame) const {
        const size_t stun = 14 + (family() == 4 ? 20 : 40) + 8;
        std::array<uint8_t, 12> t{};
        if (frame.size() >= stun + 20) {
            std::copy(frame.begin() + static_cast<long>(stun + 8), frame.begin() + static_cast<long>(stun + 20), t.begin());
        }
        return t;
    }
    // The table index of the allocation a relayed address names.
    uint32_t index_of(const Address& relayed) const {
        uint32_t idx = UINT32_MAX;
        EXPECT_TRUE(flows_->relay_ports->find(static_cast<uint8_t>(family()), relayed.ip.data(),
                                              rte_cpu_to_be_16(relayed.port), &idx));
        return idx;
    }
    Address client_b_, relayed_b_;
    Address external_;  // the NAT's external IP (set_external; used when nat())
};

// Own addresses without a NAT in the way: other own IPs, other allocations.
class RelayToRelayWithoutNat : public RelayToRelay {};

// What only the NAT brings: the relay IP behind it, its external IP's other
// ports, the pair's life.
class RelayToRelayBehindNat : public RelayToRelay {};

// IPv4 only: both modes (RelayToRelayIpv4), without the NAT (RelayToRelayWithoutNatIpv4).
class RelayToRelayIpv4 : public RelayToRelay {};
class RelayToRelayWithoutNatIpv4 : public RelayToRelay {};

// Twice: the second time the client cache knows A's client, so the express
// lane finds the packet itself (IPv4: kChannelA is in a slot of A's) and
// must leave it to route all the same (B's relayed IP and the external IP
// are own IPs).
TEST_P(RelayToRelay, ChannelDataToAChannelOfTheOtherAllocation) {
    b_permits_a(true);
    for (int k = 0; k < 2; k++) {
        const Bytes data = pattern(161, static_cast<uint8_t>(k + 1));
        const Out o = run1(build(from_client(channel_data(kChannelA, data))));
        EXPECT_TRUE(o.exc.empty()) << k;
        ASSERT_EQ(o.nic.size(), 1u) << k;
        EXPECT_EQ(o.nic[0], build(to_b(channel_data(kChannelB, data)))) << k;
        expect_valid_checksums(o.nic[0]);
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                       {Counter::fwd_peer_channel, 1}});
        // Both allocations' own counters saw it, as with two separate relays.
        EXPECT_EQ(w_.state[index_of(n_.relayed)].to_peer_packets, k + 1u);
        EXPECT_EQ(w_.state[index_of(relayed_b_)].to_client_packets, k + 1u);
    }
}

// A Data indication to B's client names A by peer_a(), the address B's
// client knows (XOR-PEER-ADDRESS): behind the NAT the external one, never
// the relay IP behind it.
TEST_P(RelayToRelay, ChannelDataToAPermissionOfTheOtherAllocation) {
    b_permits_a(false);
    const Bytes data = pattern(45);
    const Out o = run1(build(from_client(channel_data(kChannelA, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(to_b(data_indication(txid_of(o.nic[0]), peer_a(), data))));
    expect_valid_checksums(o.nic[0]);
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                   {Counter::fwd_peer_data, 1}});
}

TEST_P(RelayToRelay, SendIndicationToTheOtherAllocation) {
    b_permits_a(true);
    const std::array<uint8_t, 12> tx{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
    const Bytes data = pattern(37);
    const Out o = run1(build(from_client(send_indication(tx, peer_b(), data, true))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(to_b(channel_data(kChannelB, data))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}, {Counter::hairpin, 1},
                   {Counter::fwd_peer_channel, 1}});
}

// Both ways in one burst, each client sending to the other's peer address.
TEST_P(RelayToRelay, BothWaysInOneBurst) {
    b_permits_a(true);
    // B's client answers on its channel: the same path the other way.
    Frame fb = from_client(channel_data(kChannelB, pattern(20, 2)));
    fb.src = client_b_;
    const Out o = run({build(from_client(channel_data(kChannelA, pattern(10)))), build(fb)});
    ASSERT_EQ(o.nic.size(), 2u);
    EXPECT_EQ(o.nic[0], build(to_b(channel_data(kChannelB, pattern(10)))));
    Frame fa = relayed(n_.listen, n_.client, channel_data(kChannelA, pattern(20, 2)));
    fa.ttl = kTtl - 2;
    EXPECT_EQ(o.nic[1], build(fa));
    expect_deltas({{Counter::rx, 2}, {Counter::fwd_client_channel, 2}, {Counter::hairpin, 2},
                   {Counter::fwd_peer_channel, 2}});
}

// A relay with more than two own IPv4 addresses (the lane then asks
// OwnIps4::has): a peer on the third is still taken to its allocation, by
// the lane (once the client cache knows the client) as by the stages.
// IPv4 only: the lane's comparison with the first two own IPs is IPv4's.
TEST_P(RelayToRelayWithoutNatIpv4, ThirdOwnIpAddress) {
    const uint64_t kAllocC = 9, kAllocD = 10;
    const Address relayed_c = *Address::parse("198.18.0.5:49160");
    const Address relayed_d = *Address::parse("198.18.0.6:49161");
    const Address client_c = *Address::parse("198.18.0.13:50003");
    const Address client_d = *Address::parse("198.18.0.12:50002");
    add_allocation(kAllocC, client_c, relayed_c);
    add_allocation(kAllocD, client_d, relayed_d);
    ASSERT_GT(flows_->own4.n.load(), 2u);
    // C's client to D's relayed address (a channel in C's slots, which the
    // lane finds), on the third own IPv4 address.
    add_permission(kAllocC, relayed_c, relayed_d);
    add_channel(kAllocC, relayed_c, relayed_d, 0x4009);
    add_permission(kAllocD, relayed_d, relayed_c);
    add_channel(kAllocD, relayed_d, relayed_c, 0x400a);
    for (int round = 0; round < 2; round++) {
        const Bytes data = pattern(50, static_cast<uint8_t>(round));
        Frame in = from_client(channel_data(0x4009, data));
        in.src = client_c;
        const Out o = run1(build(in));
        ASSERT_EQ(o.nic.size(), 1u) << round;
        Frame f = relayed(n_.listen, client_d, channel_data(0x400a, data));
        f.ttl = kTtl - 2;
        EXPECT_EQ(o.nic[0], build(f)) << round;
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                       {Counter::fwd_peer_channel, 1}});
    }
}

// The other allocation has no permission for peer_a(): dropped there, as
// any peer packet without one (RFC 8656 section 9).
TEST_P(RelayToRelay, WithoutThePermissionOfTheOtherAllocationIsDropped) {
    const Out o = run1(build(from_client(channel_data(kChannelA, pattern(30)))));
    EXPECT_TRUE(o.nic.empty());
    EXPECT_TRUE(o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                   {Counter::drop_no_permission, 1}});
}

// TTL 2 leaves A with 1, which B does not relay: a loop between relayed
// addresses ends as it would across the network.
TEST_P(RelayToRelay, TtlCountsBothHops) {
    b_permits_a(true);
    Frame f = from_client(channel_data(kChannelA, pattern(12)));
    f.ttl = 2;
    const Out o = run1(build(f));
    EXPECT_TRUE(o.nic.empty());
    EXPECT_TRUE(o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                   {Counter::drop_ttl_expired, 1}});
}

// An own IP whose port the dataplane has no allocation for (a TCP client's
// allocation, another service): to the kernel, which delivers it locally, as
// the original frame. Behind the NAT, a port on the external IP: to the
// kernel unchanged, where the control plane relays it as in socket mode.
// Twice: the second time with the client known to the client cache.
TEST_P(RelayToRelay, OwnAddressWithoutAnOffloadedAllocationIsPunted) {
    const Address other = peer_b().with_port(49999);
    add_permission(kAllocId, n_.relayed, other);
    add_channel(kAllocId, n_.relayed, other, 0x4007);
    const std::array<uint8_t, 12> tx{};
    for (int k = 0; k < 2; k++) {
        const std::vector<Bytes> in = {build(from_client(channel_data(0x4007, pattern(14)))),
                                       build(from_client(send_indication(tx, other, pattern(15), false)))};
        const Out o = run(in);
        EXPECT_TRUE(o.nic.empty()) << k;
        ASSERT_EQ(o.exc.size(), 2u) << k;
        EXPECT_EQ(o.exc[0], in[0]) << k;
        EXPECT_EQ(o.exc[1], in[1]) << k;
        expect_deltas({{Counter::rx, 2}, {Counter::punt_own_address, 2}});
    }
}

// A client that is itself one of the relayed addresses (TURN through TURN on
// one relay): its packets go to the kernel too, never to the router.
TEST_P(RelayToRelayWithoutNat, ClientOnAnOwnAddressIsPunted) {
    const uint64_t kAllocC = 9;
    const Address relayed_c = n_.relayed.with_port(49154);
    add_allocation(kAllocC, relayed_b_, relayed_c);
    add_permission(kAllocC, relayed_c, n_.peer);
    add_channel(kAllocC, relayed_c, n_.peer, 0x4008);
    Frame f = from_peer(pattern(16), n_.peer);
    f.dst = relayed_c;
    const Bytes in = build(f);
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], in);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_own_address, 1}});
}

// A rate-limited receiving allocation: its own budget applies to what
// arrives from the other one.
TEST_P(RelayToRelay, TheOtherAllocationsBandwidthLimitApplies) {
    del_allocation(kAllocB);
    add_allocation(kAllocB, client_b_, relayed_b_, 8 * 2000);  // 2000 bytes/s
    b_permits_a(true);
    std::vector<Bytes> in;
    for (int i = 0; i < 8; i++) {
        in.push_back(build(from_client(channel_data(kChannelA, pattern(1000)))));
    }
    const Out o = run(in);
    // The budget's depth is 64 KiB at least (Allocation's comment), so a
    // burst of 8 KB passes; B's bucket was charged.
    EXPECT_EQ(o.nic.size(), 8u);
    const uint32_t b = index_of(relayed_b_);
    EXPECT_EQ(w_.state[b].to_client_packets, 8u);
    EXPECT_NE(flows_->allocs[b].tat.load(), 0u);
    // 120 KB more, in full bursts, well within a second: past the depth B's
    // budget refuses what A's (unlimited) let through. The refill over the
    // test's milliseconds at 2000 bytes/s is a few bytes.
    in.assign(120, build(from_client(channel_data(kChannelA, pattern(1000)))));
    const Out o2 = run(in);
    const uint64_t dropped = w_.counters.get(Counter::drop_rate_limited) - before_.get(Counter::drop_rate_limited);
    EXPECT_EQ(o2.nic.size() + dropped, 120u);
    EXPECT_GE(dropped, 40u) << "B's limit let through " << o2.nic.size() << " of 120 KB";
    EXPECT_GE(o2.nic.size(), 40u) << "the depth's 64 KiB less the first 8 KB should pass";
    EXPECT_EQ(w_.counters.get(Counter::hairpin) - before_.get(Counter::hairpin), 120u) << "A's side sent all";
    EXPECT_EQ(w_.state[b].dropped_packets, dropped) << "counted as B's drops";
    EXPECT_EQ(w_.state[index_of(n_.relayed)].dropped_packets, 0u) << "A's own budget is unlimited";
}

// Instance names: IPv4, IPv6, IPv4BehindNat, IPv6BehindNat. The fixtures of
// one mode are named by their family alone: the fixture's name says the mode.
std::string family_name(const ::testing::TestParamInfo<std::tuple<int, bool>>& i) {
    return std::get<0>(i.param) == 4 ? "IPv4" : "IPv6";
}
std::string family_and_nat_name(const ::testing::TestParamInfo<std::tuple<int, bool>>& i) {
    return family_name(i) + (std::get<1>(i.param) ? "BehindNat" : "");
}
INSTANTIATE_TEST_SUITE_P(Families, RelayToRelay, ::testing::Combine(::testing::Values(4, 6), ::testing::Bool()),
                         family_and_nat_name);
INSTANTIATE_TEST_SUITE_P(Families, RelayToRelayWithoutNat,
                         ::testing::Combine(::testing::Values(4, 6), ::testing::Values(false)), family_name);
INSTANTIATE_TEST_SUITE_P(Families, RelayToRelayBehindNat,
                         ::testing::Combine(::testing::Values(4, 6), ::testing::Values(true)), family_name);
INSTANTIATE_TEST_SUITE_P(Families, RelayToRelayIpv4, ::testing::Combine(::testing::Values(4), ::testing::Bool()),
                         family_and_nat_name);
INSTANTIATE_TEST_SUITE_P(Families, RelayToRelayWithoutNatIpv4,
                         ::testing::Combine(::testing::Values(4), ::testing::Values(false)), family_name);

// B permits only A's internal relay IP (as a client that saw the relay IP
// itself could): the packet comes from the external IP, so it is dropped
// there, as on the socket path, where B's socket sees the external source.
TEST_P(RelayToRelayBehindNat, APermissionOfTheInternalRelayIpDoesNotMatch) {
    add_permission(kAllocB, relayed_b_, n_.relayed);
    add_channel(kAllocB, relayed_b_, n_.relayed, kChannelB);
    const Out o = run1(build(from_client(channel_data(kChannelA, pattern(30)))));
    EXPECT_TRUE(o.nic.empty());
    EXPECT_TRUE(o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                   {Counter::drop_no_permission, 1}});
}

// A sender whose relayed address is not on the NAT's relay IP: the frame
// could not be presented as coming from the external IP by swapping its
// addresses, so it is punted (no control plane does this: one relay IP per
// family).
TEST_P(RelayToRelayBehindNat, SenderOnAnotherRelayIpIsPunted) {
    const uint64_t kAllocC = 9;
    const Address relayed_c = family() == 4 ? *Address::parse("198.18.0.5:49160") : *Address::parse("[fd00::5]:49160");
    const Address client_c = family() == 4 ? *Address::parse("198.18.0.13:50003") : *Address::parse("[fd00::13]:50003");
    add_allocation(kAllocC, client_c, relayed_c);
    add_permission(kAllocC, relayed_c, peer_b());
    add_channel(kAllocC, relayed_c, peer_b(), 0x4017);
    Frame f = from_client(channel_data(0x4017, pattern(22)));
    f.src = client_c;
    const Bytes in = build(f);
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], in);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_own_address, 1}});
}

// A control plane without external IPs (a resync with no ExternalIps): the
// pair is gone, the address stays an own one (punted, never routed out).
TEST_P(RelayToRelayBehindNat, ClearedByAResyncWithoutExternalIps) {
    b_permits_a(true);
    ASSERT_EQ(run1(build(from_client(channel_data(kChannelA, pattern(10))))).nic.size(), 1u);
    set_external(false);
    const Bytes in = build(from_client(channel_data(kChannelA, pattern(11))));
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], in);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_own_address, 1}});
    set_external(true);
    EXPECT_EQ(run1(build(from_client(channel_data(kChannelA, pattern(12))))).nic.size(), 1u);
}

// The peer's ordinary traffic is unaffected: a peer on the internet still
// reaches A's client, and A's client still reaches it, with the NAT known.
TEST_P(RelayToRelayBehindNat, OtherPeersUnaffected) {
    const Out o = run({build(from_client(channel_data(kChannel, pattern(9)))), build(from_peer(pattern(8), n_.peer))});
    ASSERT_EQ(o.nic.size(), 2u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(9))));
    EXPECT_EQ(o.nic[1], build(relayed(n_.listen, n_.client, channel_data(kChannel, pattern(8)))));
    expect_deltas({{Counter::rx, 2}, {Counter::fwd_client_channel, 1}, {Counter::fwd_peer_channel, 1}});
}

TEST_P(Pipeline, ChannelDataLengthOverrunIsDropped) {
    Bytes cd = channel_data(kChannel, pattern(10));
    cd[3] = 11;  // claims one byte more than present
    const Out o = run1(build(from_client(cd)));
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
}

TEST_P(Pipeline, IpLengthBeyondFrameIsDropped) {
    Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    f.erase(f.end() - 3, f.end());  // truncated frame
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
}

// IPv4 only: IPv6 has no header checksum.
TEST_P(PipelineIpv4, BadIpv4HeaderChecksumIsDropped) {
    Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    f[14 + 10] ^= 0x55;
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_ip_checksum, 1}});
}

// IPv6 only: IPv4 allows a zero UDP checksum.
// IPv6 keys name the listening address and the relayed IP by index
// (flow/key.h): one client on two listening addresses has two allocations,
// whose relayed addresses differ only in the IP, and whose kClient,
// kChannelIn, kChannelOut and kPermission keys differ only in that index.
// Each packet must reach its own allocation's entries.
TEST_P(PipelineIpv6, KeysTellListeningAddressesAndRelayedIpsApart) {
    const Address listen2 = *Address::parse("[fd00::2]:3478");
    const Address relayed2 = *Address::parse("[fd00::2]:49152");  // n_.relayed's port on another IP
    const Address peer2 = *Address::parse("[fd00:1::21]:6000");
    ipc_send(allocation_add(20, n_.client, listen2, nullptr, &relayed2, 0));
    add_permission(20, relayed2, peer2);
    // One slot channel each (kChannel is kAllocId's), then one hashed
    // channel each with the same number and peer: keys equal but for `a`.
    add_channel(20, relayed2, peer2, kChannel);
    const Address shared = *Address::parse("[fd00:1::22]:6001");
    add_permission(kAllocId, n_.relayed, shared);
    add_permission(20, relayed2, shared);
    bind_channel(0x4100, shared);
    add_channel(20, relayed2, shared, 0x4100);
    EXPECT_EQ(flows_->channel_values_in_use(), 2u);
    auto to = [&](const Address& listen, const Bytes& payload) {
        Frame f = from_client(payload);
        f.dst = listen;
        return build(f);
    };
    auto from = [&](const Address& peer, const Address& relayed, const Bytes& payload) {
        Frame f = from_client(payload);
        f.src = peer;
        f.dst = relayed;
        return build(f);
    };
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Out o = run({
        to(n_.listen, channel_data(kChannel, pattern(1))),   // -> n_.peer from n_.relayed
        to(listen2, channel_data(kChannel, pattern(2))),     // -> peer2 from relayed2
        to(n_.listen, channel_data(0x4100, pattern(3))),     // -> shared from n_.relayed (hashed)
        to(listen2, channel_data(0x4100, pattern(4))),       // -> shared from relayed2 (hashed)
        from(shared, n_.relayed, pattern(5)),                // -> client on n_.listen, 0x4100
        from(shared, relayed2, pattern(6)),                  // -> client on listen2, 0x4100
        to(listen2, send_indication(tx, n_.peer, pattern(7), true)),  // no permission on 20: punted
        from(n_.peer, relayed2, pattern(8)),                 // no permission on 20: dropped
        to(n_.listen, send_indication(tx, peer2, pattern(9), true)),  // no permission on kAllocId: punted
    });
    ASSERT_EQ(o.nic.size(), 6u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(1))));
    EXPECT_EQ(o.nic[1], build(relayed(relayed2, peer2, pattern(2))));
    EXPECT_EQ(o.nic[2], build(relayed(n_.relayed, shared, pattern(3))));
    EXPECT_EQ(o.nic[3], build(relayed(relayed2, shared, pattern(4))));
    EXPECT_EQ(o.nic[4], build(relayed(n_.listen, n_.client, channel_data(0x4100, pattern(5)))));
    EXPECT_EQ(o.nic[5], build(relayed(listen2, n_.client, channel_data(0x4100, pattern(6)))));
    EXPECT_EQ(o.exc.size(), 2u);
    expect_deltas({{Counter::rx, 9}, {Counter::fwd_client_channel, 4}, {Counter::fwd_peer_channel, 2},
                   {Counter::punt_miss, 2}, {Counter::drop_no_permission, 1}});
}

// A relayed IPv4 "port 0" (WireAddress::valid() lets it through) is no IPv4
// relayed address: the line's last bytes are then slot6, and the IPv4 IP
// must not be written there. 64.1.0.7 reads as channel 0x4001 to [::]:7;
// ChannelData on 0x4001, bound to nothing, is punted. (In-memory ports:
// nothing is sent anywhere.)
TEST_P(PipelineIpv6, RelayedIpv4PortZeroBindsNoChannel) {
    const Address client = *Address::parse("[fd00::30]:50000");
    const Address relayed4 = *Address::parse("64.1.0.7:0");
    const Address relayed6 = *Address::parse("[fd00::1]:49300");
    ipc_send(allocation_add(20, client, n_.listen, &relayed4, &relayed6, 0));
    Frame f = from_client(channel_data(0x4001, pattern(40)));
    f.src = client;
    const Out o = run1(build(f));
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], build(f));
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
}

TEST_P(PipelineIpv6, Ipv6ZeroUdpChecksumIsDropped) {
    Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    f[14 + 40 + 6] = f[14 + 40 + 7] = 0;
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_l4_checksum, 1}});
}

TEST_P(Pipeline, RateLimitedAllocationDropsOverBudget) {
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 8 * 1000;  // 1000 B/s: bucket depth is the 64 KiB floor
    ipc_send(l);
    std::vector<Bytes> in;
    for (int i = 0; i < 80; i++) {
        in.push_back(build(from_client(channel_data(kChannel, pattern(1200)))));
    }
    // Back to back: 54 packets of 1200 bytes fit the 65536-byte bucket.
    const Out o = run(in);
    EXPECT_EQ(o.nic.size(), 54u);
    expect_deltas({{Counter::rx, 80}, {Counter::fwd_client_channel, 54}, {Counter::drop_rate_limited, 26}});
}

// What the dataplane punts of a limited allocation (here: peer packets the
// ChannelData header would take over the MTU) is charged to the same budget
// as what it forwards, before it goes to the kernel, and dropped as
// drop_rate_limited once the budget is spent: the control plane relays the
// punted ones with a bucket of its own that sees only those, so the two
// paths together could otherwise carry twice the rate. 1 B/s: the 64 KiB
// floor is the whole budget (nothing refills during the test).
TEST_P(Pipeline, RateLimitCoversWhatIsPunted) {
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 8;
    ipc_send(l);
    constexpr size_t kDepth = 65536, kFast = 30, kSlow = 40, kFastLen = 1000;
    const size_t room = 1500 - (GetParam() == 4 ? 20 : 40) - 8;  // as OverMtuIsPunted
    std::vector<Bytes> in;
    for (size_t i = 0; i < kFast; i++) {
        in.push_back(build(from_client(channel_data(kChannel, pattern(kFastLen)))));
    }
    std::vector<Bytes> slow;
    for (size_t i = 0; i < kSlow; i++) {
        slow.push_back(build(from_peer(pattern(room, static_cast<uint8_t>(i)), n_.peer)));
        in.push_back(slow.back());
    }
    const size_t punted = (kDepth - kFast * kFastLen) / room;
    ASSERT_LT(punted, kSlow);
    const Out o = run(in);
    EXPECT_EQ(o.nic.size(), kFast);
    ASSERT_EQ(o.exc.size(), punted);
    for (size_t i = 0; i < punted; i++) {
        EXPECT_EQ(o.exc[i], slow[i]) << "punted unchanged, in order: " << i;
    }
    expect_deltas({{Counter::rx, kFast + kSlow},
                   {Counter::fwd_client_channel, kFast},
                   {Counter::punt_mtu, punted},
                   {Counter::drop_rate_limited, kSlow - punted}});
    // And the fast path finds the budget spent too.
    const Out o2 = run1(build(from_client(channel_data(kChannel, pattern(kFastLen)))));
    EXPECT_TRUE(o2.nic.empty() && o2.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_rate_limited, 1}});
}

// A bandwidth limit is one budget per allocation, both directions and every
// worker together (flow/tables.h, Allocation::tat): RSS gives an
// allocation's client and its peer to different workers, and neither may
// get a share of the rate only, nor each the whole rate. The depth is one
// second at the rate (at least 64 KiB), as the control plane's bucket in
// socket mode. Explicit clocks: the tables' TSC rate is 1 GHz here.
TEST_P(Pipeline, RateLimitIsOneBudgetForEveryWorker) {
    flows_->tsc_hz = 1e9;
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 800'000;  // 100,000 B/s: depth 100,000 bytes (one second)
    ipc_send(l);
    dp::Worker w1;
    dp::WorkerConfig wc = w_.cfg;
    wc.id = 1;
    w1.init(wc, flows_, nh_);
    // Frames through worker `w` in bursts, all at TSC `now`: how many left by the NIC.
    auto forward_at = [&](dp::Worker& w, const Bytes& frame, size_t count, uint64_t now) {
        size_t out = 0;
        for (size_t done = 0; done < count;) {
            rte_mbuf* b[dp::kBurst];
            const auto n = static_cast<uint16_t>(std::min<size_t>(dp::kBurst, count - done));
            for (uint16_t i = 0; i < n; i++) {
                b[i] = mbuf_of(frame);
            }
            dp::process_burst(w, b, n, now);
            out += drain(g_env->nic_out).size();
            EXPECT_TRUE(drain(g_env->exc_out).empty());
            done += n;
        }
        return out;
    };
    const Bytes to_peer = build(from_client(channel_data(kChannel, pattern(1000))));
    const Bytes to_client = build(from_peer(pattern(1000), n_.peer));
    const dp::Counters c0 = w_.counters, c1 = w1.counters;
    const uint64_t t0 = rte_rdtsc();  // the allocation's clock starts at 0: a full bucket
    // Worker 0 alone gets the allocation's whole depth (a worker's share of
    // the rate would have given it 65 KiB)...
    EXPECT_EQ(forward_at(w_, to_peer, 100, t0), 100u);
    EXPECT_EQ(forward_at(w_, to_peer, 1, t0), 0u);
    // ... which is then spent for worker 1 too (a bucket of its own would
    // have passed these).
    EXPECT_EQ(forward_at(w1, to_client, 10, t0), 0u);
    // A quarter of a second later a quarter of the rate is back, for
    // whichever worker asks first.
    EXPECT_EQ(forward_at(w1, to_client, 40, t0 + 250'000'000), 25u);
    EXPECT_EQ(forward_at(w_, to_peer, 5, t0 + 250'000'000), 0u);
    EXPECT_EQ(forward_at(w_, to_peer, 5, t0 + 260'000'000), 1u);
    // Idle for long: the bucket is full, and no fuller than its depth. A
    // worker takes budget for up to 32 packets at a time, at most 100 ms of
    // the rate (10 here: 11 at once), and keeps what it took ahead
    // (worker/stages.h, take_bandwidth): worker 1's 56th packet took budget
    // up to the 66th, so worker 0 finds 34 left, and worker 1 still has 6
    // when the clock has none (3 of them spent here).
    const uint64_t t1 = t0 + 100'000'000'000;
    EXPECT_EQ(forward_at(w1, to_client, 60, t1), 60u);
    EXPECT_EQ(forward_at(w_, to_peer, 60, t1), 34u);
    EXPECT_EQ(forward_at(w1, to_client, 3, t1), 3u);
    // What a worker holds ahead is good for a second: 1.5 s later its last 3
    // are gone and the clock's budget is all there is (150 packets' worth of
    // time, held to the depth).
    EXPECT_EQ(forward_at(w1, to_client, 120, t1 + 1'500'000'000), 100u);
    // A packet that costs more than the lease holds, with nothing left on
    // the clock, is refused and the lease kept for smaller ones: full again
    // 100 s later, worker 1 sends 95 and has taken budget up to a 99th (its
    // 89th took 10 ahead), so it holds 4; worker 0 gets the one left; worker
    // 1's 1400-byte packets pass from its lease until it holds 1200 bytes,
    // which one more 1000-byte packet spends.
    const uint64_t t2 = t1 + 100'000'000'000;
    const Bytes big_to_client = build(from_peer(pattern(1400), n_.peer));
    EXPECT_EQ(forward_at(w1, to_client, 95, t2), 95u);
    EXPECT_EQ(forward_at(w_, to_peer, 5, t2), 1u);
    EXPECT_EQ(forward_at(w1, big_to_client, 3, t2), 2u);
    EXPECT_EQ(forward_at(w1, to_client, 2, t2), 1u);
    // Each worker counted its own forwards and drops.
    EXPECT_EQ(w_.counters.get(Counter::fwd_client_channel) - c0.get(Counter::fwd_client_channel), 136u);
    EXPECT_EQ(w_.counters.get(Counter::drop_rate_limited) - c0.get(Counter::drop_rate_limited), 40u);
    EXPECT_EQ(w1.counters.get(Counter::fwd_peer_channel) - c1.get(Counter::fwd_peer_channel), 286u);
    EXPECT_EQ(w1.counters.get(Counter::drop_rate_limited) - c1.get(Counter::drop_rate_limited), 47u);
    // And the control plane's per-allocation figures: the two workers' sum.
    uint64_t to_peer_bytes = 0, to_client_bytes = 0, dropped = 0;
    for (uint32_t w = 0; w < 2; w++) {
        for (uint32_t i = 0; i < flows_->config().max_allocations; i++) {
            const dp::AllocState& st = flows_->state(w)[i];
            to_peer_bytes += st.to_peer_bytes;
            to_client_bytes += st.to_client_bytes;
            dropped += st.dropped_packets;
        }
    }
    EXPECT_EQ(to_peer_bytes, 136'000u);
    EXPECT_EQ(to_client_bytes, 286'800u);
    EXPECT_EQ(dropped, 87u);
    w1.fini();
}

// A budget belongs to its allocation: one added again in the same index (after
// the grace period) starts full, and so does a rate the control plane changes
// (a restarted turn-relay with another [allocation].bandwidth_bps): the old
// rate's debt would hold a raised limit back for as long as the old rate
// needed. A resync's refresh with the same rate changes nothing.
TEST_P(Pipeline, RateLimitBudgetStartsFullForANewAllocationOrRate) {
    flows_->tsc_hz = 1e9;
    auto limit = [&](uint64_t bps) {
        ipc::LimitSet l{};
        l.alloc_id = kAllocId;
        l.bandwidth_bps = bps;
        ipc_send(l);
    };
    const Bytes f = build(from_client(channel_data(kChannel, pattern(1000))));
    auto forward_at = [&](size_t count, uint64_t now) {
        size_t out = 0;
        for (size_t i = 0; i < count; i++) {
            rte_mbuf* m = mbuf_of(f);
            dp::process_burst(w_, &m, 1, now);
            out += drain(g_env->nic_out).size();
        }
        return out;
    };
    const uint64_t t0 = rte_rdtsc();
    limit(8'000);  // 1000 B/s: the 64 KiB floor, 65 datagrams, a minute to refill
    EXPECT_EQ(forward_at(70, t0), 65u);
    // The same rate again (a resync refresh): still spent. 2.514 s later
    // 3,050 bytes are back: 3 datagrams. (A datagram here costs a second of
    // the rate, more than the 100 ms a worker may take ahead, so nothing is
    // taken ahead: 100 bytes taken ahead with each would have left 2,950.)
    limit(8'000);
    EXPECT_EQ(forward_at(4, t0 + 2'514'000'000), 3u);
    // A raised limit: a full budget at once (one second of 1 MB/s).
    limit(8'000'000);
    EXPECT_EQ(forward_at(1010, t0 + 2'514'000'000), 1000u);
    // The allocation deleted and added again: a full budget, whatever the
    // index's last owner spent.
    limit(8'000);
    EXPECT_EQ(forward_at(70, t0 + 3'000'000'000), 65u);
    del_allocation(kAllocId);
    settle();
    install(8'000);
    EXPECT_EQ(forward_at(70, t0 + 3'000'000'000), 65u);
}

// The express lane polices what it finishes (flow/tables.h budgets) in
// packet order, as the police stage does, so a burst that runs out of
// budget half-way forwards the same packets with the lane as without it:
// here client and peer packets of one allocation alternate, and the budget
// holds 10 of them.
TEST_P(Pipeline, ExpressLanePolicesInPacketOrder) {
    flows_->tsc_hz = 1e9;
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 8'000;  // 1000 B/s, a 64 KiB budget
    ipc_send(l);
    std::vector<Bytes> burst;
    for (int i = 0; i < 32; i++) {
        burst.push_back(i % 2 == 0 ? build(from_client(channel_data(kChannel, pattern(1000 + i))))
                                   : build(from_peer(pattern(1000 + i), n_.peer)));
    }
    const uint32_t idx = [&] {  // the allocation's index: the one client packets count in
        const Out o = run1(build(from_client(channel_data(kChannel, pattern(1)))));
        EXPECT_EQ(o.nic.size(), 1u);
        for (uint32_t i = 0; i < flows_->config().max_allocations; i++) {
            if (w_.state[i].to_peer_packets != 0) {
                return i;
            }
        }
        return UINT32_MAX;
    }();
    ASSERT_NE(idx, UINT32_MAX);
    const uint64_t now = rte_rdtsc() + 1'000'000'000'000;
    // 10.5 datagrams of ~1000 bytes left: 55,000 bytes of the 65,536 spent.
    const uint64_t spent = uint64_t{55'000} * 1'000'000;  // ticks at 1e6 per byte
    auto once = [&](bool express) {
        flows_->allocs[idx].tat.store(now + spent);
        w_.state[idx].lease = 0;  // nothing held ahead from the other run
        w_.cfg.express = express;
        rte_mbuf* b[32];
        for (int i = 0; i < 32; i++) {
            b[i] = mbuf_of(burst[i]);
        }
        const dp::Counters c0 = w_.counters;
        dp::process_burst(w_, b, 32, now);
        std::vector<uint64_t> d(dp::kCounterCount);
        for (size_t k = 0; k < dp::kCounterCount; k++) {
            d[k] = w_.counters.v[k] - c0.v[k];
        }
        return std::make_pair(drain(g_env->nic_out), d);
    };
    const auto lane = once(true);
    const auto stages = once(false);
    w_.cfg.express = true;
    EXPECT_EQ(lane.first.size(), 10u);
    EXPECT_EQ(lane.first, stages.first) << "the same packets forwarded, in the same order";
    EXPECT_EQ(lane.second, stages.second) << "the same counters";
    EXPECT_EQ(lane.second[static_cast<size_t>(Counter::drop_rate_limited)], 22u);
    EXPECT_EQ(lane.second[static_cast<size_t>(Counter::fwd_client_channel)], 5u);
    EXPECT_EQ(lane.second[static_cast<size_t>(Counter::fwd_peer_channel)], 5u);
}

// Two workers on two threads draw from one budget at the same instant: the
// allocation's clock moves by compare-and-swap, so together they pass
// the depth, however their attempts interleave (a read-modify-write that is
// not atomic lets both spend the same bytes: 156-167 packets here). What a
// worker takes ahead is whole packets of the size it was taken for, so with
// one size nothing is stranded in a worker's lease at the end: exactly the
// depth.
TEST_P(Pipeline, RateLimitBudgetIsExactUnderConcurrentWorkers) {
    flows_->tsc_hz = 1e9;
    ipc::LimitSet l{};
    l.alloc_id = kAllocId;
    l.bandwidth_bps = 800'000;  // depth 100,000 bytes
    ipc_send(l);
    // The allocation's index: the one a client packet's police would use.
    const Bytes probe = build(from_client(channel_data(kChannel, pattern(10))));
    ASSERT_EQ(run1(probe).nic.size(), 1u);
    uint32_t idx = UINT32_MAX;
    for (uint32_t i = 0; i < flows_->config().max_allocations; i++) {
        if (w_.state[i].to_peer_packets != 0) {
            idx = i;
        }
    }
    ASSERT_NE(idx, UINT32_MAX);
    dp::Worker w1;
    dp::WorkerConfig wc = w_.cfg;
    wc.id = 1;
    w1.init(wc, flows_, nh_);
    constexpr int kRounds = 300;
    constexpr uint16_t kSize = 700;  // 142 packets fit 100,000 bytes (99,400)
    std::atomic<int> ready{0};
    std::vector<uint64_t> passed[2];
    const uint64_t t0 = rte_rdtsc() + 1'000'000'000'000;  // well after the probe's
    auto offer = [&](dp::Worker& w, int me) {
        for (int r = 0; r < kRounds; r++) {
            // Both threads in round r, then go together.
            ready.fetch_add(1);
            while (ready.load() < 2 * (r + 1)) {
            }
            const uint64_t now = t0 + uint64_t(r) * 10'000'000'000;  // 10 s apart: full again
            uint64_t n = 0;
            for (int b = 0; b < 6; b++) {  // 6 x 32 packets each: 384 offered, 142 pass
                dp::Pkt p[dp::kBurst];
                for (dp::Pkt& q : p) {
                    q.next = dp::Next::kPolice;
                    q.kind = dp::Kind::kToPeerChannel;
                    q.alloc = idx;
                    q.data_len = kSize;
                }
                dp::police(w, p, dp::kBurst, now);
                for (const dp::Pkt& q : p) {
                    n += q.next == dp::Next::kRewrite;
                }
            }
            passed[me].push_back(n);
        }
    };
    // EAL pinned this thread to lcore 0's CPU, and a new thread inherits
    // that: the other one runs on another CPU, where there is one, so that
    // the two really draw at the same time.
    std::atomic<bool> apart{false};
    std::thread other([&] {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(1, &cpus);
        // Fails on a host (or cpuset) without CPU 1: then both share a CPU.
        apart = pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus) == 0;
        offer(w1, 1);
    });
    offer(w_, 0);
    other.join();
    int both = 0;
    for (int r = 0; r < kRounds; r++) {
        ASSERT_EQ(passed[0][r] + passed[1][r], 142u) << "round " << r;
        both += passed[0][r] != 0 && passed[1][r] != 0;
    }
    // Both passed some in most rounds: they did draw at the same time.
    RecordProperty("rounds_both_passed", both);
    if (apart) {  // on two CPUs (this thread is on lcore 0's)
        EXPECT_GT(both, kRounds / 2);
    }
    w1.fini();
}

// ---- punts: the original frame goes to the kernel unchanged ----

// An exception port with fewer queues than workers (a veth under AF_XDP has
// one): a worker without a queue there puts its punts on its owner's ring,
// and the worker that owns the queue sends them on its next poll, unchanged
// and in order; a full ring drops them, counted.
TEST_P(Pipeline, PuntsOfAWorkerWithoutAnExceptionQueueGoThroughTheOwner) {
    rte_ring* ring = rte_ring_create(numbered("excr", static_cast<int>(seq_) + GetParam() * 100).c_str(), 4,
                                     SOCKET_ID_ANY, RING_F_SC_DEQ);  // holds 3
    ASSERT_NE(ring, nullptr);
    w_.cfg.exc_ring = ring;  // w_ owns the exception queue
    dp::Worker w1;
    dp::WorkerConfig wc = w_.cfg;
    wc.id = 1;
    wc.exc_owner = false;
    w1.init(wc, flows_, nh_);
    std::vector<Bytes> in;
    for (uint16_t i = 0; i < 5; i++) {
        in.push_back(build(from_client(channel_data(static_cast<uint16_t>(0x4100 + i), pattern(10 + i)))));
    }
    rte_mbuf* b[5];
    for (int i = 0; i < 5; i++) {
        b[i] = mbuf_of(in[i]);
    }
    const dp::Counters c1 = w1.counters;
    dp::process_burst(w1, b, 3, rte_rdtsc());
    EXPECT_TRUE(drain(g_env->exc_out).empty()) << "worker 1 has no exception queue of its own";
    EXPECT_EQ(rte_ring_count(ring), 3u);
    dp::process_burst(w1, b + 3, 2, rte_rdtsc());  // the ring is full: dropped
    EXPECT_EQ(w1.counters.get(Counter::punt_miss) - c1.get(Counter::punt_miss), 5u);
    EXPECT_EQ(w1.counters.get(Counter::drop_exception_tx_full) - c1.get(Counter::drop_exception_tx_full), 2u);
    const Out o = run({});  // worker 0's poll sends what waits on the ring
    ASSERT_EQ(o.exc.size(), 3u);
    for (size_t i = 0; i < 3; i++) {
        EXPECT_EQ(o.exc[i], in[i]) << i;
    }
    EXPECT_EQ(rte_ring_count(ring), 0u);
    EXPECT_EQ(rte_mempool_avail_count(g_env->pool), 1023u) << "every mbuf back in the pool";
    // A worker without an exception queue leaves the kernel's egress to the owner.
    const Bytes egress = build(relayed(n_.relayed, n_.peer, pattern(20)));
    rte_ring_enqueue(g_env->exc_in, mbuf_of(egress));
    dp::poll_once(w1);
    EXPECT_TRUE(drain(g_env->nic_out).empty());
    EXPECT_EQ(run({}).nic.size(), 1u);
    w_.cfg.exc_ring = nullptr;
    w1.fini();
    rte_ring_free(ring);
}

TEST_P(Pipeline, UnknownChannelIsPunted) {
    const Bytes f = build(from_client(channel_data(0x4002, pattern(10))));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
}

TEST_P(Pipeline, StunRequestToListenerIsPunted) {
    const Bytes f = build(from_client(stun_binding_request()));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_not_fast_path, 1}});
}

TEST_P(Pipeline, TrafficToUnknownAddressIsPunted) {
    Frame fr = from_peer(pattern(10), n_.peer);
    fr.dst = n_.relayed.with_port(50000);  // not an offloaded relayed port
    const Bytes f = build(fr);
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
}

TEST_P(Pipeline, NonUdpIsPunted) {
    Frame fr = from_client(pattern(16));
    fr.proto = GetParam() == 4 ? 1 : 58;  // ICMP / ICMPv6
    const Bytes f = build(fr);
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_not_udp, 1}});
}

TEST_P(Pipeline, FragmentIsPunted) {
    Bytes f;
    if (GetParam() == 4) {
        f = build(from_client(channel_data(kChannel, pattern(10))));
        f[14 + 6] = 0x20;  // MF
        f[14 + 10] = f[14 + 11] = 0;
        const uint16_t c = checksum(&f[14], 20);
        f[14 + 10] = static_cast<uint8_t>(c >> 8);
        f[14 + 11] = static_cast<uint8_t>(c);
    } else {
        Frame fr = from_client(pattern(16));
        fr.proto = 44;  // Fragment header
        f = build(fr);
    }
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_fragment, 1}});
}

TEST_P(Pipeline, IpOptionsArePunted) {
    Bytes f;
    if (GetParam() == 4) {
        // Rebuild with IHL 6 and one 4-byte option (NOP x4).
        const Bytes plain = build(from_client(channel_data(kChannel, pattern(8))));
        f.assign(plain.begin(), plain.begin() + 34);
        f.insert(f.end(), {1, 1, 1, 1});
        f.insert(f.end(), plain.begin() + 34, plain.end());
        f[14] = 0x46;
        const uint16_t tot = static_cast<uint16_t>((f[16] << 8 | f[17]) + 4);
        f[16] = static_cast<uint8_t>(tot >> 8);
        f[17] = static_cast<uint8_t>(tot);
        f[24] = f[25] = 0;
        const uint16_t c = checksum(&f[14], 24);
        f[24] = static_cast<uint8_t>(c >> 8);
        f[25] = static_cast<uint8_t>(c);
    } else {
        Frame fr = from_client(pattern(16));
        fr.proto = 0;  // Hop-by-hop options
        f = build(fr);
    }
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_ip_options, 1}});
}

TEST_P(Pipeline, ArpIsPunted) {
    Bytes f(42, 0);
    std::copy(kPortMac.begin(), kPortMac.end(), f.begin());
    f[12] = 0x08;
    f[13] = 0x06;
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_not_ip, 1}});
}

TEST_P(Pipeline, OverMtuIsPunted) {
    // 1500 - IP - UDP leaves room for the payload itself but not for the
    // 4-byte ChannelData header the client-bound packet needs.
    const size_t room = 1500 - (GetParam() == 4 ? 20 : 40) - 8;
    const Bytes f = build(from_peer(pattern(room), n_.peer));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_mtu, 1}});
}

TEST_P(Pipeline, MissingNextHopIsPunted) {
    nh_->clear_default(static_cast<uint8_t>(GetParam()));
    const Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_no_next_hop, 1}});
}

TEST_P(Pipeline, HostNextHopOverridesDefault) {
    dp::NextHop h;
    h.mac = {{0x02, 0, 0, 0, 0, 0x77}};
    h.port = g_env->nic_port;
    nh_->set_host(static_cast<uint8_t>(GetParam()), n_.peer.ip.data(), h);
    const Out o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    ASSERT_EQ(o.nic.size(), 1u);
    Frame e = relayed(n_.relayed, n_.peer, pattern(10));
    e.dst_mac = {0x02, 0, 0, 0, 0, 0x77};
    EXPECT_EQ(o.nic[0], build(e));
}

TEST_P(Pipeline, KernelEgressGoesOutTheNic) {
    const Bytes f = build(relayed(n_.listen, n_.client, stun_binding_request()));
    const Out o = run({}, {f});
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], f);
    expect_deltas({{Counter::exception_to_nic, 1}});
}

TEST_P(Pipeline, KernelEgressTeachesNextHops) {
    nh_->clear_default(static_cast<uint8_t>(GetParam()));
    const Bytes peer_pkt = build(from_peer(pattern(10), n_.peer));
    Out o = run1(peer_pkt);
    ASSERT_EQ(o.exc.size(), 1u);  // no next hop for the client yet: slow path
    // The kernel answers the client itself (e.g. a STUN response), resolving
    // the client's MAC; the main lcore then installs what the worker queued.
    Frame k = relayed(n_.listen, n_.client, stun_binding_request());
    k.dst_mac = {0x02, 0, 0, 0, 0, 0x55};
    o = run({}, {build(k)});
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(nh_->apply_learned(), 1u);
    o = run1(peer_pkt);
    ASSERT_EQ(o.nic.size(), 1u);
    Frame e = relayed(n_.listen, n_.client, channel_data(kChannel, pattern(10)));
    e.dst_mac = {0x02, 0, 0, 0, 0, 0x55};
    EXPECT_EQ(o.nic[0], build(e));
    // Same MAC again: nothing new to learn.
    run({}, {build(k)});
    EXPECT_EQ(nh_->apply_learned(), 0u);
}

// ---- 802.1Q VLANs on egress ----

// Each forwarding kind to a next hop on a VLAN: the frame leaves tagged with
// that next hop's VLAN ID and is otherwise the untagged frame byte for byte.
// ChannelData through the express lane (rewrite44 or rewrite66 writes the
// tag), Send and Data indications through the stages (rewrite44 too, IPv6
// push_vlan).
TEST_P(Pipeline, NextHopOnVlanTagsEveryKind) {
    const auto fam = static_cast<uint8_t>(GetParam());
    const Mac peer_mac{0x02, 0, 0, 0, 0, 0x71};
    const Mac client_mac{0x02, 0, 0, 0, 0, 0x72};
    dp::NextHop h;
    h.port = g_env->nic_port;
    std::copy(peer_mac.begin(), peer_mac.end(), h.mac.addr_bytes);
    h.vlan = 200;
    ASSERT_EQ(nh_->set_host(fam, n_.peer.ip.data(), h), 0);
    std::copy(client_mac.begin(), client_mac.end(), h.mac.addr_bytes);
    h.vlan = 100;
    ASSERT_EQ(nh_->set_host(fam, n_.client.ip.data(), h), 0);
    dp::NextHop got;
    ASSERT_TRUE(nh_->get_host(fam, n_.client.ip.data(), &got));
    EXPECT_EQ(got.vlan, 100);
    EXPECT_EQ(got.port, g_env->nic_port);

    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Address peer2 = n_.peer.with_port(6001);  // permission, no channel: Data indication
    run1(build(from_client(channel_data(kChannel, pattern(39)))));  // the client cache learns the client
    const uint64_t lane0 = w_.express_packets;
    const Out o = run({build(from_client(channel_data(kChannel, pattern(40)))),
                       build(from_client(send_indication(tx, n_.peer, pattern(41), true))),
                       build(from_peer(pattern(42), n_.peer)), build(from_peer(pattern(43), peer2))});
    ASSERT_EQ(o.nic.size(), 4u);
    EXPECT_TRUE(o.exc.empty());
    auto tagged = [](Frame f, const Mac& mac, uint16_t vlan) {
        f.dst_mac = mac;
        f.vlan = vlan;
        return build(f);
    };
    EXPECT_EQ(o.nic[0], tagged(relayed(n_.relayed, n_.peer, pattern(40)), peer_mac, 200));
    EXPECT_EQ(o.nic[1], tagged(relayed(n_.relayed, n_.peer, pattern(41)), peer_mac, 200));
    EXPECT_EQ(o.nic[2], tagged(relayed(n_.listen, n_.client, channel_data(kChannel, pattern(42))), client_mac, 100));
    const size_t stun = 14 + 4 + (fam == 4 ? 20 : 40) + 8;
    ASSERT_GT(o.nic[3].size(), stun + 20);
    std::array<uint8_t, 12> txid;
    std::copy(o.nic[3].begin() + static_cast<long>(stun + 8), o.nic[3].begin() + static_cast<long>(stun + 20),
              txid.begin());
    EXPECT_EQ(o.nic[3],
              tagged(relayed(n_.listen, n_.client, data_indication(txid, peer2, pattern(43))), client_mac, 100));
    // The two ChannelData packets through the lane.
    EXPECT_EQ(w_.express_packets - lane0, w_.cfg.express ? 2u : 0u);
    expect_deltas({{Counter::rx, 4},
                   {Counter::fwd_client_channel, 1},
                   {Counter::fwd_client_send, 1},
                   {Counter::fwd_peer_channel, 1},
                   {Counter::fwd_peer_data, 1}});
}

// The default next hop (the gateway) on a VLAN, also the highest VLAN ID.
TEST_P(Pipeline, DefaultNextHopOnVlan) {
    const auto fam = static_cast<uint8_t>(GetParam());
    dp::NextHop gw;
    std::copy(kGatewayMac.begin(), kGatewayMac.end(), gw.mac.addr_bytes);
    gw.port = g_env->nic_port;
    gw.vlan = dp::kMaxVlanId;
    nh_->set_default(fam, gw);
    const Out o = run({build(from_client(channel_data(kChannel, pattern(20)))), build(from_peer(pattern(21), n_.peer))});
    ASSERT_EQ(o.nic.size(), 2u);
    Frame e0 = relayed(n_.relayed, n_.peer, pattern(20));
    e0.vlan = dp::kMaxVlanId;
    Frame e1 = relayed(n_.listen, n_.client, channel_data(kChannel, pattern(21)));
    e1.vlan = dp::kMaxVlanId;
    EXPECT_EQ(o.nic[0], build(e0));
    EXPECT_EQ(o.nic[1], build(e1));
    expect_deltas({{Counter::rx, 2}, {Counter::fwd_client_channel, 1}, {Counter::fwd_peer_channel, 1}});
}

// The tag takes 4 bytes of headroom: a peer packet whose mbuf has room for
// the ChannelData header's 4 extra bytes but not for the tag as well goes to
// the slow path, unchanged (the lane hands it to route, which punts it);
// untagged, the same frame is forwarded; 7 bytes are not enough, 8 are.
TEST_P(Pipeline, VlanTagNeedsHeadroom) {
    const auto fam = static_cast<uint8_t>(GetParam());
    const Bytes f = build(from_peer(pattern(30), n_.peer));
    auto with_headroom = [&](uint16_t room) {
        before_ = w_.counters;
        rte_mbuf* m = rte_pktmbuf_alloc(g_env->pool);
        m->data_off = room;
        std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
        rte_ring_enqueue(g_env->nic_in, m);
        while (dp::poll_once(w_) != 0) {
        }
        return Out{drain(g_env->nic_out), drain(g_env->exc_out)};
    };
    Out o = with_headroom(4);
    ASSERT_EQ(o.nic.size(), 1u);
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_channel, 1}});
    dp::NextHop h;
    std::copy(kHostMac.begin(), kHostMac.end(), h.mac.addr_bytes);
    h.port = g_env->nic_port;
    h.vlan = 5;
    ASSERT_EQ(nh_->set_host(fam, n_.client.ip.data(), h), 0);
    for (uint16_t room : {4, 7}) {
        o = with_headroom(room);
        ASSERT_EQ(o.exc.size(), 1u) << room;
        EXPECT_EQ(o.exc[0], f);
        expect_deltas({{Counter::rx, 1}, {Counter::punt_no_headroom, 1}});
    }
    o = with_headroom(8);
    ASSERT_EQ(o.nic.size(), 1u);
    Frame e = relayed(n_.listen, n_.client, channel_data(kChannel, pattern(30)));
    e.dst_mac = kHostMac;
    e.vlan = 5;
    EXPECT_EQ(o.nic[0], build(e));
}

// The kernel's tagged egress (from a VLAN device on the exception
// interface) teaches a next hop on that VLAN; its untagged egress to the
// same IP later teaches the untagged one back.
TEST_P(Pipeline, KernelEgressOnVlanTeachesTaggedNextHop) {
    nh_->clear_default(static_cast<uint8_t>(GetParam()));
    const Bytes peer_pkt = build(from_peer(pattern(10), n_.peer));
    Out o = run1(peer_pkt);
    ASSERT_EQ(o.exc.size(), 1u);
    Frame k = relayed(n_.listen, n_.client, stun_binding_request());
    k.dst_mac = {0x02, 0, 0, 0, 0, 0x55};
    k.vlan = 300;
    o = run({}, {build(k)});
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(k));  // the kernel's frame leaves as it came, tag and all
    EXPECT_EQ(nh_->apply_learned(), 1u);
    o = run1(peer_pkt);
    ASSERT_EQ(o.nic.size(), 1u);
    Frame e = relayed(n_.listen, n_.client, channel_data(kChannel, pattern(10)));
    e.dst_mac = {0x02, 0, 0, 0, 0, 0x55};
    e.vlan = 300;
    EXPECT_EQ(o.nic[0], build(e));
    run({}, {build(k)});
    EXPECT_EQ(nh_->apply_learned(), 0u);  // nothing new
    k.vlan.reset();
    run({}, {build(k)});
    EXPECT_EQ(nh_->apply_learned(), 1u);  // the same MAC, untagged now
    o = run1(peer_pkt);
    ASSERT_EQ(o.nic.size(), 1u);
    e.vlan.reset();
    EXPECT_EQ(o.nic[0], build(e));
    // A tag naming VLAN 4095 (reserved) teaches nothing.
    k.vlan = 4095;
    k.dst_mac = {0x02, 0, 0, 0, 0, 0x56};
    run({}, {build(k)});
    EXPECT_EQ(nh_->apply_learned(), 0u);
}

// A router that is the same MAC on two VLANs: one VLAN's neighbour going
// away retires only the destinations learned through that VLAN.
TEST_P(Pipeline, RemoveByMacKeepsTheOtherVlan) {
    const auto fam = static_cast<uint8_t>(GetParam());
    dp::NextHop h;
    std::copy(kHostMac.begin(), kHostMac.end(), h.mac.addr_bytes);
    h.port = g_env->nic_port;
    h.vlan = 10;
    ASSERT_EQ(nh_->set_host(fam, n_.peer.ip.data(), h), 0);
    h.vlan = 20;
    ASSERT_EQ(nh_->set_host(fam, n_.stranger.ip.data(), h), 0);
    rte_ether_addr mac;
    std::copy(kHostMac.begin(), kHostMac.end(), mac.addr_bytes);
    EXPECT_EQ(nh_->remove_by_mac(mac, 10), 1u);
    dp::NextHop got;
    EXPECT_FALSE(nh_->get_host(fam, n_.peer.ip.data(), &got));
    ASSERT_TRUE(nh_->get_host(fam, n_.stranger.ip.data(), &got));
    EXPECT_EQ(got.vlan, 20);
}

// ---- control plane messages ----

TEST_P(Pipeline, ChannelDelStopsFastPath) {
    ipc::ChannelDel d{};
    d.alloc_id = kAllocId;
    d.relayed = ipc::WireAddress::from(n_.relayed);
    d.peer = ipc::WireAddress::from(n_.peer);
    d.channel = kChannel;
    ipc_send(d);
    const Out o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    EXPECT_EQ(o.exc.size(), 1u);
    // The peer still has a permission: its packets now become Data indications.
    const Out o2 = run1(build(from_peer(pattern(10), n_.peer)));
    EXPECT_EQ(o2.nic.size(), 1u);
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
}

TEST_P(Pipeline, AllocationDelRemovesEverything) {
    del_allocation(kAllocId);
    run({build(from_client(channel_data(kChannel, pattern(10)))), build(from_peer(pattern(10), n_.peer))});
    expect_deltas({{Counter::rx, 2}, {Counter::punt_miss, 2}});
}

TEST_P(Pipeline, ResyncSweepsWhatWasNotResent) {
    ipc::ResyncBegin b{};
    b.generation = 2;
    ipc_send(b);
    // Re-send the allocation and the permission, but not the channel.
    add_allocation(kAllocId, n_.client, n_.relayed);
    add_permission(kAllocId, n_.relayed, n_.peer);
    // Until ResyncEnd the old channel still forwards.
    Out o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    EXPECT_EQ(o.nic.size(), 1u);
    ipc::ResyncEnd e{};
    e.generation = 2;
    ipc_send(e);
    EXPECT_EQ(applier_->stats().swept, 1u);
    o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    EXPECT_EQ(o.exc.size(), 1u);
    o = run1(build(from_peer(pattern(10), n_.peer)));
    EXPECT_EQ(o.nic.size(), 1u);  // permission kept: Data indication
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
}

TEST_P(Pipeline, CountersReportThroughIpc) {
    run({build(from_client(channel_data(kChannel, pattern(100)))), build(from_peer(pattern(50), n_.peer)),
         build(from_peer(pattern(5), n_.stranger))});
    std::vector<Bytes> replies;
    ipc::CountersRequest rq{};
    ASSERT_TRUE(applier_->apply(ipc::encode(rq, 99), [&](std::span<const uint8_t> s) {
        replies.emplace_back(s.begin(), s.end());
    }));
    ASSERT_EQ(replies.size(), 1u);
    const auto r = ipc::decode<ipc::CountersReport>(replies[0]);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->last, 1);
    ASSERT_EQ(r->count, 1u);
    EXPECT_EQ(r->entries[0].alloc_id, kAllocId);
    EXPECT_EQ(r->entries[0].to_peer_packets, 1u);
    EXPECT_EQ(r->entries[0].to_peer_bytes, 100u);
    EXPECT_EQ(r->entries[0].to_client_packets, 1u);
    EXPECT_EQ(r->entries[0].to_client_bytes, 50u);
    EXPECT_EQ(r->entries[0].dropped_packets, 1u);
}

// The ports' statistics as turn-dataplane reports them (common/port_counters.h,
// set as Applier::port_counters in main.cc): the ring ports' own rte_eth_stats
// move by what the worker received and sent, and a CountersRequest is
// answered with the worker's counters, then the ports', then the report.
TEST_P(Pipeline, PortCountersReadFromThePortsAndReportedBeforeTheAllocations) {
    using ipc::PortRole;
    const auto nic0 = dp::read_port_counters(g_env->nic_port, PortRole::kNic);
    const auto exc0 = dp::read_port_counters(g_env->exc_port, PortRole::kException);
    ASSERT_TRUE(nic0 && exc0);
    // Two forwarded to the NIC, one punted to the exception port; one frame of
    // kernel egress from the exception port out the NIC.
    const Bytes cd = build(from_client(channel_data(kChannel, pattern(40))));
    const Bytes unknown = build(from_client(channel_data(0x4002, pattern(10))));
    const Out o = run({cd, cd, unknown}, {build(relayed(n_.listen, n_.client, pattern(20)))});
    ASSERT_EQ(o.nic.size(), 3u);
    ASSERT_EQ(o.exc.size(), 1u);
    const auto nic = dp::read_port_counters(g_env->nic_port, PortRole::kNic);
    const auto exc = dp::read_port_counters(g_env->exc_port, PortRole::kException);
    ASSERT_TRUE(nic && exc);
    EXPECT_EQ(nic->role, PortRole::kNic);
    EXPECT_EQ(exc->role, PortRole::kException);
    EXPECT_STREQ(nic->name, "net_ring_net_nic");  // net_ring prefixes the name given to it
    EXPECT_STREQ(exc->name, "net_ring_net_exc");
    EXPECT_EQ(nic->link_up, 1);
    EXPECT_EQ(nic->link_speed_mbps, RTE_ETH_SPEED_NUM_10G);  // what net_ring reports
    EXPECT_EQ(nic->ipackets - nic0->ipackets, 3u);
    EXPECT_EQ(nic->opackets - nic0->opackets, 3u);
    EXPECT_EQ(exc->ipackets - exc0->ipackets, 1u);
    EXPECT_EQ(exc->opackets - exc0->opackets, 1u);
    EXPECT_EQ(nic->imissed + nic->ierrors + nic->oerrors + nic->rx_nombuf, 0u);
    // A port that does not exist: no message (main.cc skips it), no crash.
    EXPECT_FALSE(dp::read_port_counters(RTE_MAX_ETHPORTS - 1, PortRole::kNic));

    applier_->worker_counters = [](std::vector<ipc::WorkerCounters>& out) { out.push_back(ipc::WorkerCounters{}); };
    applier_->port_counters = [](std::vector<ipc::PortCounters>& out) {
        for (const auto& [port, role] : {std::pair{g_env->nic_port, PortRole::kNic},
                                         std::pair{g_env->exc_port, PortRole::kException},
                                         std::pair<uint16_t, PortRole>{RTE_MAX_ETHPORTS - 1, PortRole::kNic}}) {
            if (const auto c = dp::read_port_counters(port, role)) {
                out.push_back(*c);
            }
        }
    };
    std::vector<Bytes> replies;
    ipc::CountersRequest rq{};
    ASSERT_TRUE(applier_->apply(ipc::encode(rq, 99), [&](std::span<const uint8_t> b) {
        replies.emplace_back(b.begin(), b.end());
    }));
    ASSERT_EQ(replies.size(), 4u);
    EXPECT_TRUE(ipc::decode<ipc::WorkerCounters>(replies[0]));
    const auto pn = ipc::decode<ipc::PortCounters>(replies[1]);
    const auto pe = ipc::decode<ipc::PortCounters>(replies[2]);
    ASSERT_TRUE(pn && pe);
    EXPECT_EQ(pn->role, PortRole::kNic);
    EXPECT_EQ(pn->ipackets, nic->ipackets);
    EXPECT_STREQ(pn->name, "net_ring_net_nic");
    EXPECT_EQ(pe->role, PortRole::kException);
    EXPECT_EQ(pe->opackets, exc->opackets);
    const auto r = ipc::decode<ipc::CountersReport>(replies[3]);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->last, 1);
}

// An allocation's last packets before its deletion are reported once, in the
// next report after the Del, with the allocation's final totals; the report
// after that no longer names it.
TEST_P(Pipeline, DeletedAllocationReportsItsFinalCountersOnce) {
    run({build(from_client(channel_data(kChannel, pattern(100)))), build(from_peer(pattern(50), n_.peer))});
    // The report's chunks in one (entries in order; finals: how many came in
    // chunks of finals, which precede the live ones; last: the last chunk's flag).
    auto report = [&] {
        std::vector<Bytes> replies;
        ipc::CountersRequest rq{};
        EXPECT_TRUE(applier_->apply(ipc::encode(rq, 99), [&](std::span<const uint8_t> s) {
            replies.emplace_back(s.begin(), s.end());
        }));
        ipc::CountersReport all{};
        uint32_t finals = 0;
        for (const Bytes& b : replies) {
            auto r = ipc::decode<ipc::CountersReport>(b);
            EXPECT_TRUE(r);
            if (!r) {
                continue;
            }
            EXPECT_TRUE(r->finals == 0 || finals == all.count) << "finals after live entries";
            for (uint32_t i = 0; i < r->count && all.count < ipc::CountersReport::kMaxEntries; ++i) {
                all.entries[all.count++] = r->entries[i];
            }
            finals += r->finals != 0 ? r->count : 0;
            all.last = r->last;
        }
        return std::make_pair(all, finals);
    };
    auto [r, finals] = report();
    ASSERT_EQ(r.count, 1u);
    EXPECT_EQ(finals, 0u);
    EXPECT_EQ(r.entries[0].to_peer_packets, 1u);
    // More traffic, then the Del before the next request.
    run({build(from_client(channel_data(kChannel, pattern(30)))), build(from_peer(pattern(20), n_.peer)),
         build(from_peer(pattern(20), n_.peer))});
    del_allocation(kAllocId);
    Out o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    EXPECT_EQ(o.exc.size(), 1u);  // gone from the fast path
    std::tie(r, finals) = report();
    ASSERT_EQ(r.count, 1u);
    EXPECT_EQ(finals, 1u);  // reported as the final totals of a removed allocation
    EXPECT_EQ(r.last, 1);
    EXPECT_EQ(r.entries[0].alloc_id, kAllocId);
    EXPECT_EQ(r.entries[0].to_peer_packets, 2u);
    EXPECT_EQ(r.entries[0].to_peer_bytes, 130u);
    EXPECT_EQ(r.entries[0].to_client_packets, 3u);
    EXPECT_EQ(r.entries[0].to_client_bytes, 90u);
    std::tie(r, finals) = report();
    EXPECT_EQ(r.count, 0u);
    EXPECT_EQ(r.last, 1);
}

TEST_P(Pipeline, ChannelRebindToAnotherPeerMovesBothDirections) {
    // RFC 8656 12.3 lets a client rebind a channel only to the same peer, but
    // the dataplane must follow whatever the control plane installs: the old
    // kChannelOut entry goes, the new one appears, the old value is retired.
    const Address peer2 = n_.peer.with_port(6002);
    bind_channel(kChannel, peer2);
    Out o = run1(build(from_client(channel_data(kChannel, pattern(12)))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, peer2, pattern(12))));
    o = run1(build(from_peer(pattern(12), peer2)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, channel_data(kChannel, pattern(12)))));
    // The old peer keeps its permission (per IP) but has no channel any more.
    o = run1(build(from_peer(pattern(12), n_.peer)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
    settle();
    // IPv4 peers sit in the allocation's two channel slots (the old slot
    // comes back after its grace period). The IPv6-only allocation has one,
    // still retiring at the rebind: the new binding went to the hash, with a
    // value, and the slot is free again now.
    EXPECT_EQ(flows_->channel_values_in_use(), GetParam() == 4 ? 0u : 1u);
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 1u : 0u);
}

// RFC 5766 channel numbers (0x5000-0x7FFF), which the control plane binds by
// default for old clients, are forwarded both ways like RFC 8656 ones.
TEST_P(Pipeline, Rfc5766ChannelNumberBothWays) {
    const Address peer2 = n_.peer.with_port(6003);
    bind_channel(0x6001, peer2);
    Out o = run1(build(from_client(channel_data(0x6001, pattern(40)))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_TRUE(o.exc.empty());
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, peer2, pattern(40))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
    o = run1(build(from_peer(pattern(41), peer2)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, channel_data(0x6001, pattern(41)))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_channel, 1}});
}

// More channels than the allocation has slots (two for IPv4 peers, one for
// the IPv6 peer of an allocation with only an IPv6 relayed address): the
// rest go to the hash (kChannelIn + kChannelOut); every one forwards both
// ways, and deleting slot channels leaves the hashed ones working.
TEST_P(Pipeline, MoreChannelsThanSlots) {
    constexpr int kChans = 5;  // kChannel (SetUp) + 4 more
    std::vector<Address> peers{n_.peer};
    std::vector<uint16_t> chans{kChannel};
    for (int i = 1; i < kChans; i++) {
        peers.push_back(n_.peer.with_port(static_cast<uint16_t>(7100 + i)));
        chans.push_back(static_cast<uint16_t>(0x4100 + i));
        bind_channel(chans.back(), peers.back());
    }
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 2u : 1u);
    EXPECT_EQ(flows_->channel_values_in_use(), GetParam() == 4 ? 3u : 4u);
    auto check_all = [&](const std::vector<int>& live) {
        std::vector<Bytes> in;
        for (int i : live) {
            in.push_back(build(from_client(channel_data(chans[i], pattern(10, static_cast<uint8_t>(i))))));
            in.push_back(build(from_peer(pattern(11, static_cast<uint8_t>(i)), peers[i])));
        }
        const Out o = run(in);
        ASSERT_EQ(o.nic.size(), 2 * live.size());
        EXPECT_TRUE(o.exc.empty());
        for (size_t k = 0; k < live.size(); k++) {
            const int i = live[k];
            EXPECT_EQ(o.nic[2 * k], build(relayed(n_.relayed, peers[i], pattern(10, static_cast<uint8_t>(i))))) << i;
            EXPECT_EQ(o.nic[2 * k + 1],
                      build(relayed(n_.listen, n_.client, channel_data(chans[i], pattern(11, static_cast<uint8_t>(i))))))
                << i;
        }
        expect_deltas({{Counter::rx, 2 * live.size()},
                       {Counter::fwd_client_channel, live.size()},
                       {Counter::fwd_peer_channel, live.size()}});
    };
    check_all({0, 1, 2, 3, 4});
    // Delete the two slot channels (IPv4; IPv6: the slot channel and a
    // hashed one) and one hashed channel.
    for (int i : {0, 1, 3}) {
        ipc::ChannelDel d{};
        d.alloc_id = kAllocId;
        d.relayed = ipc::WireAddress::from(n_.relayed);
        d.peer = ipc::WireAddress::from(peers[i]);
        d.channel = chans[i];
        ipc_send(d);
    }
    check_all({2, 4});
    // The deleted ones: client ChannelData punted, peers (permission kept)
    // get Data indications.
    const Out o = run({build(from_client(channel_data(chans[1], pattern(10)))), build(from_peer(pattern(10), peers[1]))});
    EXPECT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.nic.size(), 1u);
    expect_deltas({{Counter::rx, 2}, {Counter::punt_miss, 1}, {Counter::fwd_peer_data, 1}});
    // After the grace period the freed slots take new channels.
    settle();
    bind_channel(0x4200, peers[0]);
    bind_channel(0x4201, peers[1]);
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 2u : 1u);
    EXPECT_EQ(flows_->channel_values_in_use(), GetParam() == 4 ? 2u : 3u);
    chans[0] = 0x4200;
    chans[1] = 0x4201;
    check_all({0, 1, 2, 4});
}

// A channel deleted and its number bound again before the grace period: the
// cleared slot must not be reused yet (a worker may still read its peer), so
// the new binding takes the other slot or the hash, and forwards at once.
TEST_P(Pipeline, ChannelDeleteAndImmediateRebindWithSlots) {
    const Address peer2 = n_.peer.with_port(6004);
    ipc::ChannelDel d{};
    d.alloc_id = kAllocId;
    d.relayed = ipc::WireAddress::from(n_.relayed);
    d.peer = ipc::WireAddress::from(n_.peer);
    d.channel = kChannel;
    ipc_send(d);
    bind_channel(kChannel, peer2);
    const Address peer3 = n_.peer.with_port(6005);
    bind_channel(0x4003, peer3);  // IPv4: slot 0 still retiring, slot 1 taken: hash
    // IPv6: its one slot retiring, both in the hash.
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 2u : 1u);  // IPv4: one bound, one retiring
    EXPECT_EQ(flows_->channel_values_in_use(), GetParam() == 4 ? 1u : 2u);
    Out o = run({build(from_client(channel_data(kChannel, pattern(12)))), build(from_client(channel_data(0x4003, pattern(13)))),
                 build(from_peer(pattern(14), peer2)), build(from_peer(pattern(15), peer3)),
                 build(from_peer(pattern(16), n_.peer))});
    ASSERT_EQ(o.nic.size(), 5u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, peer2, pattern(12))));
    EXPECT_EQ(o.nic[1], build(relayed(n_.relayed, peer3, pattern(13))));
    EXPECT_EQ(o.nic[2], build(relayed(n_.listen, n_.client, channel_data(kChannel, pattern(14)))));
    EXPECT_EQ(o.nic[3], build(relayed(n_.listen, n_.client, channel_data(0x4003, pattern(15)))));
    expect_deltas({{Counter::rx, 5}, {Counter::fwd_client_channel, 2}, {Counter::fwd_peer_channel, 2},
                   {Counter::fwd_peer_data, 1}});
    settle();
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 1u : 0u);
}

// Resync with slot and hashed channels: what is re-sent stays (slot or
// hash), what is not is swept, both directions.
TEST_P(Pipeline, ResyncWithSlotsAndHashedChannels) {
    const Address p2 = n_.peer.with_port(6010), p3 = n_.peer.with_port(6011);
    bind_channel(0x4010, p2);  // IPv4: second slot
    bind_channel(0x4011, p3);  // IPv4: hash
    ipc::ResyncBegin b{};
    b.generation = 5;
    ipc_send(b);
    add_allocation(kAllocId, n_.client, n_.relayed);
    add_permission(kAllocId, n_.relayed, n_.peer);
    bind_channel(0x4010, p2);  // kept; kChannel (slot) and 0x4011 (hash) are not re-sent
    ipc::ResyncEnd e{};
    e.generation = 5;
    ipc_send(e);
    EXPECT_EQ(applier_->stats().swept, 2u);
    Out o = run({build(from_client(channel_data(0x4010, pattern(20)))), build(from_peer(pattern(21), p2)),
                 build(from_client(channel_data(kChannel, pattern(22)))), build(from_client(channel_data(0x4011, pattern(23)))),
                 build(from_peer(pattern(24), n_.peer)), build(from_peer(pattern(25), p3))});
    ASSERT_EQ(o.nic.size(), 4u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, p2, pattern(20))));
    EXPECT_EQ(o.nic[1], build(relayed(n_.listen, n_.client, channel_data(0x4010, pattern(21)))));
    EXPECT_EQ(o.exc.size(), 2u);
    expect_deltas({{Counter::rx, 6}, {Counter::fwd_client_channel, 1}, {Counter::fwd_peer_channel, 1},
                   {Counter::punt_miss, 2}, {Counter::fwd_peer_data, 2}});
    settle();
    EXPECT_EQ(flows_->channel_values_in_use(), GetParam() == 4 ? 0u : 1u);
    EXPECT_EQ(flows_->channel_slots_in_use(), GetParam() == 4 ? 1u : 0u);
}

TEST_P(Pipeline, FullTablesLeaveFlowsOnTheSlowPath) {
    // 64 allocations fit (SetUp used one); the rest are refused and counted,
    // and their traffic is punted rather than misforwarded.
    for (uint64_t id = 100; id < 200; id++) {
        add_allocation(id, n_.client.with_port(static_cast<uint16_t>(id)),
                       n_.relayed.with_port(static_cast<uint16_t>(40000 + id)));
    }
    EXPECT_EQ(applier_->stats().table_full, 100u - 63u);
    const Out o = run1(build(from_client(channel_data(kChannel, pattern(10)))));
    EXPECT_EQ(o.nic.size(), 1u);  // existing flows are untouched
}

TEST_P(Pipeline, MalformedIpcIsRejected) {
    ipc::ChannelAdd c{};
    auto s = ipc::encode(c, 1);
    Bytes b(s.begin(), s.end());
    b.pop_back();
    EXPECT_FALSE(applier_->apply(b));
    b[0] = 9;  // version
    EXPECT_FALSE(applier_->apply(b));
}

// ---- the worker's client cache (flow/client_cache.h) ----

// Index of the one live allocation (the test installs exactly one).
int live_index(const dp::FlowTables& t) {
    int found = -1;
    for (uint32_t i = 0; i < t.config().max_allocations; i++) {
        if (t.allocs[i].live.load() != 0) {
            if (found >= 0) {
                return -2;
            }
            found = static_cast<int>(i);
        }
    }
    return found;
}

TEST_P(Pipeline, ClientCacheNeverOutlivesItsAllocation) {
    const Bytes data = pattern(20);
    Out o = run1(build(from_client(channel_data(kChannel, data))));  // fills the cache
    ASSERT_EQ(o.nic.size(), 1u);
    const int idx = live_index(*flows_);
    ASSERT_GE(idx, 0);
    // Deleted: the cached index names an allocation that is no longer live.
    del_allocation(kAllocId);
    o = run1(build(from_client(channel_data(kChannel, data))));
    EXPECT_EQ(o.exc.size(), 1u);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
    settle();  // the index is free again
    // The same index reused for another client on the same listening address:
    // the first client's cache entry now names a live allocation that is not
    // its own.
    const Address other = n_.client.with_port(50001);
    add_allocation(kAllocId + 1, other, n_.relayed);
    add_channel(kAllocId + 1, n_.relayed, n_.peer, kChannel);
    ASSERT_EQ(live_index(*flows_), idx) << "the test needs the index reused";
    o = run1(build(from_client(channel_data(kChannel, data))));
    EXPECT_EQ(o.exc.size(), 1u);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
    Frame f = from_client(channel_data(kChannel, data));
    f.src = other;
    o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
    // The first client again, with a new allocation relayed elsewhere.
    const Address relayed2 = n_.relayed.with_port(49153);
    add_allocation(kAllocId, n_.client, relayed2);
    add_channel(kAllocId, relayed2, n_.peer, kChannel);
    o = run1(build(from_client(channel_data(kChannel, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(relayed2, n_.peer, data)));
    EXPECT_EQ(w_.cache.e != nullptr, true);
    EXPECT_GE(w_.cache.misses, 3u);  // first packet, after the reuse, the new allocation
}

// Two allocation ids with one client 5-tuple (a new id before the old one is
// deleted or swept, as in a resync after the control plane restarted): the
// later one takes the client's traffic even though the worker's cache holds
// the earlier one, and deleting the earlier one leaves the later one alone.
TEST_P(Pipeline, ClientCacheFollowsANewAllocationForTheSameClient) {
    const Bytes data = pattern(24);
    Out o = run1(build(from_client(channel_data(kChannel, data))));  // fills the cache with the first
    ASSERT_EQ(o.nic.size(), 1u);
    const Address relayed2 = n_.relayed.with_port(49153);
    const Address peer2 = n_.peer.with_port(6002);
    add_allocation(kAllocId + 1, n_.client, relayed2);
    add_channel(kAllocId + 1, relayed2, peer2, kChannel);
    o = run1(build(from_client(channel_data(kChannel, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(relayed2, peer2, data)));
    del_allocation(kAllocId);
    o = run1(build(from_client(channel_data(kChannel, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(relayed2, peer2, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
    // The same through the hash alone: the earlier allocation's delete left
    // the key that names the later one.
    uint8_t* const cache = w_.cache.e;
    w_.cache.e = nullptr;
    o = run1(build(from_client(channel_data(kChannel, data))));
    w_.cache.e = cache;
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(relayed2, peer2, data)));
    del_allocation(kAllocId + 1);
    o = run1(build(from_client(channel_data(kChannel, data))));
    EXPECT_EQ(o.exc.size(), 1u);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_miss, 1}});
}

// Several packets of one new flow in one burst all miss the cache; it keeps
// one entry for the flow, not one per packet (which would evict others).
TEST_P(Pipeline, ClientCacheKeepsOneEntryPerFlow) {
    ASSERT_NE(w_.cache.e, nullptr);
    const Bytes f = build(from_client(channel_data(kChannel, pattern(8))));
    const Out o = run(std::vector<Bytes>(16, f));
    ASSERT_EQ(o.nic.size(), 16u);
    EXPECT_EQ(w_.cache.misses, 16u);
    const int idx = live_index(*flows_);
    ASSERT_GE(idx, 0);
    int entries = 0;
    for (uint32_t b = 0; b <= w_.cache.mask; b++) {
        const uint8_t* bk = w_.cache.e + size_t{b} * dp::ClientCache::kBucketBytes;
        for (uint32_t way = 0; way < dp::ClientCache::kWays; way++) {
            entries += bk[way] != 0 && dp::ClientCache::alloc_at(bk, way) == static_cast<uint32_t>(idx);
        }
    }
    EXPECT_EQ(entries, 1);
    const Out o2 = run1(f);
    EXPECT_EQ(o2.nic.size(), 1u);
    EXPECT_EQ(w_.cache.misses, 16u);  // and it answers the next one
}

// RFC 768: a UDP checksum that computes to zero is sent as 0xffff (zero means
// "no checksum"). Finds the ChannelData payload whose relayed datagram sums to
// exactly that (one value of a 16-bit word does) and checks the output.
TEST_P(Pipeline, ComputedZeroUdpChecksumIsSentAsAllOnes) {
    const size_t ck = 14 + (GetParam() == 4 ? 20 : 40) + 6;
    Bytes data = pattern(30);
    Bytes want;
    for (uint32_t x = 0; x < 0x10000; x++) {
        data[10] = static_cast<uint8_t>(x >> 8);
        data[11] = static_cast<uint8_t>(x);
        want = build(relayed(n_.relayed, n_.peer, data));
        if (want[ck] == 0xff && want[ck + 1] == 0xff) {
            break;
        }
    }
    ASSERT_EQ(want[ck], 0xff);
    ASSERT_EQ(want[ck + 1], 0xff);
    const Out o = run1(build(from_client(channel_data(kChannel, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], want);
    // And back: the peer's datagram, as ChannelData to the client, checked
    // against the builder's checksum whatever it is.
    const Out o2 = run1(build(from_peer(data, n_.peer)));
    ASSERT_EQ(o2.nic.size(), 1u);
    EXPECT_EQ(o2.nic[0], build(relayed(n_.listen, n_.client, channel_data(kChannel, data))));
}

// classify's straight-line IPv4 check must give exactly the general parser's
// verdict, reason and parse for every frame, including hostile ones: random
// byte changes, truncations and extensions of valid client, Send, peer and
// STUN frames, with every combination of the NIC's checksum flags.
TEST_P(Pipeline, ClassifyFastPathAgreesWithTheGeneralParser) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    std::vector<Bytes> seeds;
    for (size_t len : {0, 1, 5, 32, 161}) {
        seeds.push_back(build(from_client(channel_data(kChannel, pattern(len)))));
        seeds.push_back(build(from_client(send_indication(tx, n_.peer, pattern(len), len % 2 == 0))));
        seeds.push_back(build(from_peer(pattern(len), n_.peer)));
    }
    seeds.push_back(build(from_client(stun_binding_request())));
    const uint64_t flag_sets[] = {0, RTE_MBUF_F_RX_IP_CKSUM_GOOD, RTE_MBUF_F_RX_IP_CKSUM_BAD, RTE_MBUF_F_RX_L4_CKSUM_GOOD,
                                  RTE_MBUF_F_RX_L4_CKSUM_BAD, RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_BAD,
                                  RTE_MBUF_F_RX_IP_CKSUM_NONE | RTE_MBUF_F_RX_L4_CKSUM_NONE};
    std::mt19937 rng(static_cast<unsigned>(GetParam()));
    uint64_t looked_up = 0, punted_or_dropped = 0;
    for (int iter = 0; iter < 20000; iter++) {
        Bytes f = seeds[rng() % seeds.size()];
        for (unsigned k = rng() % 4; k-- > 0;) {
            switch (rng() % 4) {
            case 0: case 1:  // a byte in the headers or just after them
                if (!f.empty()) {
                    f[rng() % std::min<size_t>(f.size(), 90)] ^= static_cast<uint8_t>(1u << (rng() % 8));
                }
                break;
            case 2: f.resize(rng() % (f.size() + 1)); break;
            default: f.resize(f.size() + rng() % 16, static_cast<uint8_t>(rng())); break;
            }
        }
        const uint64_t flags = flag_sets[rng() % std::size(flag_sets)];
        rte_mbuf* m1 = mbuf_of(f);
        rte_mbuf* m2 = mbuf_of(f);
        ASSERT_TRUE(m1 != nullptr && m2 != nullptr);
        m1->ol_flags = flags;
        m2->ol_flags = flags;
        dp::Pkt a[1], b[1];
        dp::classify(w_, &m1, a, 1);
        dp::classify_general_only(w_, &m2, b, 1);
        const auto* d1 = rte_pktmbuf_mtod(m1, const uint8_t*);
        const auto* d2 = rte_pktmbuf_mtod(m2, const uint8_t*);
        const dp::Pkt& x = a[0];
        const dp::Pkt& y = b[0];
        ASSERT_EQ(static_cast<int>(x.next), static_cast<int>(y.next)) << "iteration " << iter;
        if (x.next == dp::Next::kLookup) {
            looked_up++;
            ASSERT_EQ(static_cast<int>(x.kind), static_cast<int>(y.kind)) << iter;
            ASSERT_EQ(x.family, y.family) << iter;
            ASSERT_EQ(x.key_family, y.key_family) << iter;
            ASSERT_EQ(x.l3 - d1, y.l3 - d2) << iter;
            ASSERT_EQ(reinterpret_cast<const uint8_t*>(x.udp) - d1, reinterpret_cast<const uint8_t*>(y.udp) - d2) << iter;
            ASSERT_EQ(x.plen, y.plen) << iter;
            ASSERT_EQ(x.data_off, y.data_off) << iter;
            ASSERT_EQ(x.data_len, y.data_len) << iter;
            ASSERT_EQ(x.channel_be, y.channel_be) << iter;
            ASSERT_EQ(0, x.key_family == 4 ? std::memcmp(&x.k4, &y.k4, sizeof(dp::Key4)) : std::memcmp(&x.k6, &y.k6, sizeof(dp::Key6)))
                << iter;
            if (x.kind == dp::Kind::kClientSend) {
                ASSERT_EQ(x.peer_family, y.peer_family) << iter;
                ASSERT_EQ(x.peer_port_be, y.peer_port_be) << iter;
                ASSERT_EQ(0, std::memcmp(x.peer_ip, y.peer_ip, x.peer_family == 4 ? 4 : 16)) << iter;
            }
        } else {
            punted_or_dropped++;
            ASSERT_EQ(static_cast<int>(x.reason), static_cast<int>(y.reason)) << "iteration " << iter;
        }
        rte_pktmbuf_free(m1);
        rte_pktmbuf_free(m2);
    }
    // Both outcomes were exercised in earnest.
    EXPECT_GT(looked_up, 2000u);
    EXPECT_GT(punted_or_dropped, 2000u);
}

// A worker thread forwards ChannelData from 8 clients through the real
// pipeline while this thread (as the main lcore) deletes and re-adds their
// allocations at random, so allocation indices move between clients. Client
// i's allocation always relays from port 40000 + i to peer port 6000 + i, and
// its payload starts with i: a cache entry (or anything else) that forwarded a
// packet with another client's allocation shows up as a mismatch.
TEST_P(Pipeline, ClientCacheUnderAllocationChurn) {
    constexpr int kClients = 8;
    const bool v4 = GetParam() == 4;
    std::vector<Bytes> frames;
    std::vector<Address> clients;
    for (int i = 0; i < kClients; i++) {
        clients.push_back(n_.client.with_port(static_cast<uint16_t>(51000 + i)));
        Frame f = from_client(channel_data(kChannel, pattern(16, static_cast<uint8_t>(i))));
        f.src = clients.back();
        frames.push_back(build(f));
        ASSERT_EQ(frames.back()[(v4 ? 42 : 62) + 4], pattern(16, static_cast<uint8_t>(i))[0]);
    }
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> fwd{0}, punted{0}, bad{0};
    std::thread worker([&] {
        std::mt19937 rng(3);
        const size_t sport = v4 ? 34 : 54, payload = v4 ? 42 : 62;
        while (!stop.load(std::memory_order_relaxed)) {
            for (int k = 0; k < 16; k++) {
                rte_ring_enqueue(g_env->nic_in, mbuf_of(frames[rng() % kClients]));
            }
            while (dp::poll_once(w_) != 0) {
            }
            for (const Bytes& b : drain(g_env->nic_out)) {
                int who = -1;
                for (int i = 0; i < kClients; i++) {
                    if (b.size() > payload && b[payload] == pattern(16, static_cast<uint8_t>(i))[0]) {
                        who = i;
                    }
                }
                const uint16_t sp = static_cast<uint16_t>(b[sport] << 8 | b[sport + 1]);
                const uint16_t dpt = static_cast<uint16_t>(b[sport + 2] << 8 | b[sport + 3]);
                if (who < 0 || sp != 40000 + who || dpt != 6000 + who) {
                    bad.fetch_add(1);
                }
                fwd.fetch_add(1, std::memory_order_relaxed);
            }
            punted.fetch_add(drain(g_env->exc_out).size(), std::memory_order_relaxed);
        }
    });
    std::mt19937 rng(4);
    std::vector<bool> has(kClients, false);
    // At least 1000 changes while the worker forwards at least 2000 packets
    // (bounded by 20 s for a very slow machine, where the checks below fail).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    uint64_t ops = 0;
    while ((ops < 1000 || fwd.load(std::memory_order_relaxed) < 2000) && std::chrono::steady_clock::now() < deadline) {
        const int i = static_cast<int>(rng() % kClients);
        const uint64_t id = 100 + static_cast<uint64_t>(i);
        if (has[i]) {
            del_allocation(id);
        } else {
            const Address relayed = n_.relayed.with_port(static_cast<uint16_t>(40000 + i));
            const Address peer = n_.peer.with_port(static_cast<uint16_t>(6000 + i));
            add_allocation(id, clients[i], relayed);
            add_permission(id, relayed, peer);
            add_channel(id, relayed, peer, kChannel);
        }
        has[i] = !has[i];
        flows_->reclaim();
        ops++;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    stop.store(true);
    worker.join();
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_GE(fwd.load(), 2000u);
    EXPECT_GT(punted.load(), 0u);  // clients without an allocation
    EXPECT_GE(ops, 1000u);
    EXPECT_GT(w_.cache.lookups - w_.cache.misses, 500u);  // the cache answered most of them
}

// The express lane (dataplane/worker/express.cc) is a second implementation
// of the stages' common case: every burst of random traffic, run once with
// it and once without (the stages alone) from the same state (tables, the
// worker's client cache and its statistics, the transaction-id generator),
// must leave the same bytes on every port in the same order, move the same
// counters, count the same packets and bytes per allocation and leave the
// same client cache behind. The traffic mixes what the lane finishes
// (ChannelData on slot channels both ways, whole bursts of it too) with what
// it must hand on: channels in the hash, Send and Data indications, a
// bandwidth limit, sizes over the MTU, frames without headroom or with a
// VLAN tag, unknown clients, peers and channels, an allocation deleted and
// re-added under the cache (stale candidates, a relayed port whose word is
// 0), frames with flipped bits, cut short or with offload flags. Four
// phases of next hops: the default only; host entries for the client and
// (on the other port) the peer; those without a default; neither.
void Pipeline::check_express_against_stages(uint64_t min_finished_per_phase) {
    // Allocation kAllocId (SetUp): kChannel and 0x4101 in its two slots,
    // 0x4102 and 0x4103 in the hash.
    std::vector<Address> peers{n_.peer};
    std::vector<uint16_t> chans{kChannel};
    for (uint16_t i = 1; i <= 3; i++) {
        peers.push_back(n_.peer.with_port(static_cast<uint16_t>(7100 + i)));
        chans.push_back(static_cast<uint16_t>(0x4100 + i));
        bind_channel(chans.back(), peers.back());
    }
    // A second client, its allocation with a (never reached) bandwidth
    // limit; a third, deleted and added again now and then.
    const Address client2 = n_.client.with_port(50001);
    const Address relayed2 = n_.relayed.with_port(49153);
    add_allocation(kAllocId + 1, client2, relayed2, 10'000'000'000ull);
    add_permission(kAllocId + 1, relayed2, n_.peer);
    add_channel(kAllocId + 1, relayed2, n_.peer, kChannel);
    const Address client3 = n_.client.with_port(50002);
    const Address relayed3 = n_.relayed.with_port(49154);
    bool have3 = false;
    auto toggle3 = [&] {
        if (have3) {
            del_allocation(kAllocId + 2);
        } else {
            add_allocation(kAllocId + 2, client3, relayed3);
            add_permission(kAllocId + 2, relayed3, n_.peer);
            add_channel(kAllocId + 2, relayed3, n_.peer, kChannel);
        }
        have3 = !have3;
        flows_->reclaim();
    };
    toggle3();
    const Address no_channel_peer = n_.peer.with_port(6001);  // permission (per IP), no channel

    std::mt19937 rng(static_cast<unsigned>(GetParam()) * 7 + (client_cache_ ? 1 : 2));
    auto payload_len = [&] {  // mostly small, some across the MTU
        const uint32_t r = rng() % 8;
        return r < 5 ? rng() % 200 : r < 7 ? 1400 + rng() % 80 : rng() % 1473;
    };
    // Received TOS bytes, and the relay's TOS rule changed now and then
    // (ipc::Settings): both ways must apply it alike. (Own generator: the
    // mix of frames stays what it was.)
    std::mt19937 tos_rng(static_cast<unsigned>(GetParam()) * 11 + 3);
    const std::pair<uint8_t, uint8_t> tos_rules[] = {{0xFF, 0}, {0x03, 46 << 2}, {0x03, 0}, {0x03, 10 << 2}};
    auto lane_frame = [&](size_t len) {  // what the lane finishes (when nothing else is in the way)
        const Bytes d = pattern(len, static_cast<uint8_t>(rng()));
        // (Client ChannelData only with the cache: without it lookup finds the allocation.)
        Frame f = rng() % 2 && client_cache_ ? from_client(channel_data(kChannel, d)) : from_peer(d, n_.peer);
        f.tos = static_cast<uint8_t>(tos_rng());
        return f;
    };
    // ChannelData on kChannel of the allocation of (client, relayed), one way or the other.
    auto either_way = [&](const Address& client, const Address& relayed, const Bytes& d) {
        Frame f;
        if (rng() % 2 == 0) {
            f = from_client(channel_data(kChannel, d));
            f.src = client;
        } else {
            f = from_peer(d, n_.peer);
            f.dst = relayed;
        }
        return f;
    };
    auto random_frame = [&]() -> Bytes {
        const size_t len = payload_len();
        const Bytes d = pattern(len, static_cast<uint8_t>(rng()));
        Frame f;
        switch (rng() % 13) {
        case 0: case 1: case 2:  // slot channel, client -> peer (the lane's)
            f = from_client(channel_data(kChannel, d, rng() % 4 == 0 ? rng() % 4 : 0));
            break;
        case 3: {  // any channel of the first allocation, some in the hash
            const size_t k = rng() % chans.size();
            f = from_client(channel_data(chans[k], d));
            break;
        }
        case 4: case 5: {  // peer -> client, channel or not
            const size_t k = rng() % (peers.size() + 1);
            f = from_peer(d, k < peers.size() ? peers[k] : no_channel_peer);
            break;
        }
        case 6:  // the limited allocation
            f = either_way(client2, relayed2, d);
            break;
        case 7: {  // Send indication
            std::array<uint8_t, 12> tx{};
            for (auto& b : tx) {
                b = static_cast<uint8_t>(rng());
            }
            f = from_client(send_indication(tx, rng() % 2 ? n_.peer : n_.stranger, d, rng() % 2 == 0));
            break;
        }
        case 8:  // unknown client, unknown channel
            f = from_client(channel_data(rng() % 2 ? kChannel : 0x4ffe, d));
            if (rng() % 2 == 0) {
                f.src = n_.stranger;
            }
            break;
        case 9:  // the allocation that comes and goes
            f = either_way(client3, relayed3, d);
            break;
        case 10:
            f = rng() % 2 ? from_peer(d, n_.stranger) : from_client(stun_binding_request());
            break;
        case 11:  // a relayed port nobody has (its chunk exists: word 0)
            f = from_peer(d, n_.peer);
            f.dst = n_.relayed.with_port(49155);
            break;
        default:  // tagged
            f = lane_frame(len);
            f.vlan = 7;
            break;
        }
        f.df = rng() % 2 == 0;
        f.tos = static_cast<uint8_t>(tos_rng());
        if (const uint32_t t = tos_rng() % 16; t < 3) {  // TTLs that are dropped (0, 1) or just pass (2)
            f.ttl = static_cast<uint8_t>(t);
        }
        Bytes b = build(f);
        if (rng() % 6 == 0) {  // damaged: a flipped bit in the headers, cut short, or grown
            switch (rng() % 3) {
            case 0: b[rng() % std::min<size_t>(b.size(), 90)] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
            case 1: b.resize(rng() % (b.size() + 1)); break;
            default: b.resize(b.size() + rng() % 8, static_cast<uint8_t>(rng())); break;
            }
        }
        return b;
    };
    const uint64_t flag_sets[] = {0, 0, 0, RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD,
                                  RTE_MBUF_F_RX_IP_CKSUM_BAD, RTE_MBUF_F_RX_L4_CKSUM_BAD};
    struct In {
        Bytes bytes;
        uint64_t flags;
        uint16_t headroom;
    };
    auto mbuf_for = [](const In& in) {
        rte_mbuf* m = rte_pktmbuf_alloc(g_env->pool);
        m->data_off = in.headroom;
        char* d = rte_pktmbuf_append(m, static_cast<uint16_t>(in.bytes.size()));
        std::memcpy(d, in.bytes.data(), in.bytes.size());
        m->ol_flags = in.flags;
        return m;
    };
    // The per-allocation packets and bytes police or the lane counted.
    auto alloc_counts = [&] {
        std::vector<uint64_t> v;
        for (uint32_t i = 0; i < flows_->config().max_allocations; i++) {
            const dp::AllocState& st = w_.state[i];
            v.insert(v.end(), {st.to_peer_packets, st.to_peer_bytes, st.to_client_packets, st.to_client_bytes,
                               st.dropped_packets});
        }
        return v;
    };
    // The worker's client cache: its buckets and statistics.
    const size_t cache_bytes = w_.cache.e != nullptr ? size_t{w_.cache.mask + 1} * dp::ClientCache::kBucketBytes : 0;
    struct CacheState {
        std::vector<uint8_t> bytes;
        uint32_t victim;
        uint64_t lookups, misses;
        bool operator==(const CacheState&) const = default;
    };
    auto cache_state = [&] {
        return CacheState{std::vector<uint8_t>(w_.cache.e, w_.cache.e + cache_bytes), w_.cache.victim, w_.cache.lookups,
                          w_.cache.misses};
    };
    auto set_cache = [&](const CacheState& c) {
        std::copy(c.bytes.begin(), c.bytes.end(), w_.cache.e);
        w_.cache.victim = c.victim;
        w_.cache.lookups = c.lookups;
        w_.cache.misses = c.misses;
    };
    struct Result {
        std::vector<Bytes> nic, exc;
        std::array<uint64_t, dp::kCounterCount> counters;
        std::vector<uint64_t> allocs;
        CacheState cache;
        uint64_t express = 0;  // packets the lane finished
    };
    auto run_burst = [&](const std::vector<In>& burst, bool express) {
        rte_mbuf* b[dp::kBurst];
        for (size_t i = 0; i < burst.size(); i++) {
            b[i] = mbuf_for(burst[i]);
        }
        const dp::Counters c0 = w_.counters;
        const std::vector<uint64_t> a0 = alloc_counts();
        const uint64_t e0 = w_.express_packets;
        w_.cfg.express = express;
        dp::process_burst(w_, b, static_cast<uint16_t>(burst.size()), rte_rdtsc());
        Result r{drain(g_env->nic_out), drain(g_env->exc_out), {}, alloc_counts(), cache_state(),
                 w_.express_packets - e0};
        for (size_t i = 0; i < dp::kCounterCount; i++) {
            r.counters[i] = w_.counters.v[i] - c0.v[i];
        }
        for (size_t i = 0; i < r.allocs.size(); i++) {
            r.allocs[i] -= a0[i];
        }
        return r;
    };
    const auto family = static_cast<uint8_t>(GetParam());
    uint64_t forwarded = 0, punted = 0, dropped = 0;
    std::array<uint64_t, 5> finished{}, whole{};
    for (int phase = 0; phase < 5; phase++) {
        dp::NextHop h;
        h.mac = {{0x02, 0, 0, 0, 0, 0x77}};
        if (phase == 1) {  // host entries: the client's, and the peer's on the other port
            h.port = g_env->nic_port;
            ASSERT_EQ(nh_->set_host(family, n_.client.ip.data(), h), 0);
            h.port = g_env->exc_port;
            ASSERT_EQ(nh_->set_host(family, n_.peer.ip.data(), h), 0);
        }
        if (phase == 2) {  // and no default: nothing for the other peers
            nh_->clear_default(family);
        }
        if (phase == 3) {  // no next hop at all
            nh_->del_host(family, n_.client.ip.data());
            nh_->del_host(family, n_.peer.ip.data());
        }
        if (phase == 4) {  // VLANs: a tagged default and client, an untagged peer
            h.port = g_env->nic_port;
            h.vlan = 7;
            nh_->set_default(family, h);
            h.vlan = 42;
            ASSERT_EQ(nh_->set_host(family, n_.client.ip.data(), h), 0);
            h.vlan = 0;
            ASSERT_EQ(nh_->set_host(family, n_.peer.ip.data(), h), 0);
        }
        for (int iter = 0; iter < 300; iter++) {
            if (iter % 37 == 36) {
                toggle3();
            }
            if (iter % 50 == 0) {
                const auto [keep, set] = tos_rules[static_cast<size_t>(phase + iter / 50) % std::size(tos_rules)];
                set_tos_rule(keep, set);
            }
            // One burst in five only what the lane finishes: whole bursts.
            const bool pure = rng() % 5 == 0;
            std::vector<In> burst(1 + rng() % dp::kBurst);
            for (In& in : burst) {
                in = pure ? In{build(lane_frame(rng() % 200)), 0, RTE_PKTMBUF_HEADROOM}
                          : In{random_frame(), flag_sets[rng() % std::size(flag_sets)],
                               static_cast<uint16_t>(rng() % 16 == 0 ? rng() % 6 : RTE_PKTMBUF_HEADROOM)};
            }
            // Either order, from the same state both times.
            const uint64_t rng_state = w_.rng;
            const CacheState cache0 = cache_state();
            const bool express_first = iter % 2 == 1;
            Result first = run_burst(burst, express_first);
            w_.rng = rng_state;
            set_cache(cache0);
            Result second = run_burst(burst, !express_first);
            const Result& with = express_first ? first : second;
            const Result& without = express_first ? second : first;
            const std::string where = "phase " + std::to_string(phase) + " iteration " + std::to_string(iter);
            ASSERT_EQ(with.nic, without.nic) << where;
            ASSERT_EQ(with.exc, without.exc) << where;
            ASSERT_EQ(with.counters, without.counters) << where;
            ASSERT_EQ(with.allocs, without.allocs) << where;
            ASSERT_TRUE(with.cache == without.cache) << where;
            ASSERT_EQ(without.express, 0u);
            finished[static_cast<size_t>(phase)] += with.express;
            whole[static_cast<size_t>(phase)] += with.express == burst.size();
            forwarded += with.nic.size();
            punted += with.exc.size();
            dropped += burst.size() - with.nic.size() - with.exc.size();
        }
    }
    // The mix reached every verdict; the lane finished packets itself (both
    // families) wherever there was a next hop, whole bursts too (tagged ones
    // as well: rewrite44 and rewrite66 write the tag).
    EXPECT_GT(forwarded, 1000u);
    EXPECT_GT(punted, 500u);
    EXPECT_GT(dropped, 100u);
    for (size_t phase = 0; phase < 5; phase++) {
        if (phase < 3) {
            EXPECT_GT(finished[phase], min_finished_per_phase) << phase;
            EXPECT_GT(whole[phase], 5u) << phase;
        } else if (phase == 4) {
            EXPECT_GT(finished[phase], min_finished_per_phase / 4) << phase;
        } else {  // no next hop
            EXPECT_EQ(finished[phase], 0u) << phase;
        }
    }
}

TEST_P(Pipeline, ExpressLaneMatchesTheStages) { check_express_against_stages(300); }

// The lane rests (sends bursts straight to the stages) for express_rest
// bursts after one it finished less than half of, and takes over again.
TEST_P(Pipeline, ExpressLaneRestsAfterTrafficItGivesBack) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Bytes cd = build(from_client(channel_data(kChannel, pattern(20))));
    const Bytes send = build(from_client(send_indication(tx, n_.peer, pattern(20), false)));
    auto burst = [&](int n_cd, int n_send) {
        std::vector<Bytes> in(static_cast<size_t>(n_cd), cd);
        in.insert(in.end(), static_cast<size_t>(n_send), send);
        const uint64_t e0 = w_.express_packets;
        const Out o = run(in);
        EXPECT_EQ(o.nic.size(), in.size());  // forwarded either way
        return w_.express_packets - e0;
    };
    w_.cfg.express = true;       // also in the dataplane-stages-only run
    EXPECT_EQ(burst(1, 0), 0u);  // the client cache's miss (lookup fills it); resting is off
    w_.cfg.express_rest = 3;
    EXPECT_EQ(burst(2, 2), 2u);  // half: no rest
    EXPECT_EQ(burst(4, 0), 4u);
    EXPECT_EQ(burst(1, 2), 1u);  // less than half: rests for 3 bursts
    EXPECT_EQ(burst(4, 0), 0u);
    EXPECT_EQ(burst(4, 0), 0u);
    EXPECT_EQ(burst(4, 0), 0u);
    EXPECT_EQ(burst(4, 0), 4u);  // back
    w_.cfg.express_rest = 0;     // never rests
    EXPECT_EQ(burst(0, 3), 0u);
    EXPECT_EQ(burst(4, 0), 4u);
}

// ExpressLaneMatchesTheStages across families: bursts of both, so that the
// lane's phases run their mixed version (IPv4 and IPv6 packets in one
// burst), on allocations of every shape the lane must hand on: dual-stack
// (the IPv6 channel in the hash, the IPv4 one in a slot), an IPv6 client
// with an IPv4 relayed address and the reverse, bandwidth limits in both
// families (police_lane's packet order across them), relay to relay over
// IPv6 both ways; with host next hops of both families (one on a VLAN), a
// tagged IPv6 default beside an IPv4 one on the other port, and no IPv4
// default. Each burst runs with and without the lane from the same state
// (per-allocation counts, bandwidth clocks, client cache, transaction ids)
// at one TSC; the output, counters, counts, clocks and cache must agree.
TEST_P(PipelineIpv6, ExpressLaneMatchesTheStagesAcrossFamilies) {
    flows_->tsc_hz = 1e9;
    const Net n4 = net_for(4);
    const Net& n6 = n_;
    auto a4 = [&](const char* s) { return *Address::parse(s); };
    struct Al { uint64_t id; Address client; bool v4client; std::optional<Address> r4, r6; uint64_t bw; };
    std::vector<Al> al;
    al.push_back({kAllocId, n6.client, false, std::nullopt, n6.relayed, 0});
    al.push_back({100, a4("198.18.0.10:50000"), true, a4("198.18.0.1:49160"), std::nullopt, 0});
    al.push_back({101, a4("[fd00::10]:50001"), false, std::nullopt, a4("[fd00::1]:49161"), 800'000});
    al.push_back({102, a4("198.18.0.10:50001"), true, a4("198.18.0.1:49162"), std::nullopt, 800'000});
    al.push_back({103, a4("[fd00::10]:50003"), false, a4("198.18.0.1:49163"), a4("[fd00::1]:49163"), 0});
    al.push_back({104, a4("[fd00::10]:50004"), false, a4("198.18.0.1:49164"), std::nullopt, 0});
    al.push_back({105, a4("198.18.0.10:50005"), true, std::nullopt, a4("[fd00::1]:49165"), 0});
    al.push_back({106, a4("[fd00::10]:50006"), false, std::nullopt, a4("[fd00::1]:49166"), 1'600'000});
    for (size_t i = 1; i < al.size(); i++) {
        const Al& x = al[i];
        ipc_send(allocation_add(x.id, x.client, x.v4client ? n4.listen : n6.listen, x.r4 ? &*x.r4 : nullptr,
                                x.r6 ? &*x.r6 : nullptr, x.bw));
    }
    struct Ch { size_t a; uint16_t ch; Address relayed, peer; };
    std::vector<Ch> chans{{0, kChannel, n6.relayed, n6.peer}};
    auto chan = [&](size_t a, uint16_t ch, const Address& relayed, const Address& peer) {
        add_permission(al[a].id, relayed, peer);
        add_channel(al[a].id, relayed, peer, ch);
        chans.push_back({a, ch, relayed, peer});
    };
    chan(1, 0x4001, *al[1].r4, n4.peer);
    chan(2, 0x4001, *al[2].r6, n6.peer);
    chan(3, 0x4001, *al[3].r4, n4.peer);
    chan(4, 0x4001, *al[4].r6, n6.peer);   // dual-stack: IPv6 peer (hash)
    chan(4, 0x4002, *al[4].r4, n4.peer);   // IPv4 slot
    chan(5, 0x4001, *al[5].r4, n4.peer);   // IPv6 client, IPv4 relayed
    chan(6, 0x4001, *al[6].r6, n6.peer);   // IPv4 client, IPv6 relayed
    chan(7, 0x4001, *al[7].r6, n6.relayed);  // relay to relay: kAllocId's relayed address
    chan(0, 0x4003, n6.relayed, *al[7].r6);  // and back on kAllocId (slot6 is taken: hash)
    chan(2, 0x4002, *al[2].r6, *al[7].r6);   // a second channel to another own relayed address
    std::mt19937 rng(2929);
    auto listen_of = [&](const Al& x) { return x.v4client ? n4.listen : n6.listen; };
    auto random_frame = [&]() -> Bytes {
        const uint32_t r = rng() % 8;
        const size_t len = r < 5 ? rng() % 200 : r < 7 ? 1400 + rng() % 80 : rng() % 1473;
        const Bytes d = pattern(len, static_cast<uint8_t>(rng()));
        const Ch& c = chans[rng() % chans.size()];
        const Al& x = al[c.a];
        Frame f = from_client({});
        if (rng() % 2 == 0) {
            f.src = x.client;
            f.dst = listen_of(x);
            f.payload = channel_data(c.ch, d, rng() % 4 == 0 ? rng() % 4 : 0);
        } else {
            f.src = c.peer;
            f.dst = c.relayed;
            f.payload = d;
        }
        f.df = rng() % 2 == 0;
        f.tos = static_cast<uint8_t>(rng());
        if (const uint32_t t = rng() % 16; t < 3) {
            f.ttl = static_cast<uint8_t>(t);
        }
        if (rng() % 16 == 0) {
            f.vlan = 7;
        }
        return build(f);
    };
    auto mbuf_for = [](const Bytes& bytes, uint16_t headroom) {
        rte_mbuf* m = rte_pktmbuf_alloc(g_env->pool);
        m->data_off = headroom;
        std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size())), bytes.data(), bytes.size());
        return m;
    };
    const uint32_t nalloc = flows_->config().max_allocations;
    struct Snap {
        std::vector<dp::AllocState> st;
        std::vector<uint64_t> tat;
        std::vector<uint8_t> cache;
        uint32_t victim;
        uint64_t lookups, misses, rng;
    };
    const size_t cache_bytes = w_.cache.e != nullptr ? size_t{w_.cache.mask + 1} * dp::ClientCache::kBucketBytes : 0;
    auto snap = [&] {
        Snap s;
        s.st.assign(w_.state, w_.state + nalloc);
        for (uint32_t i = 0; i < nalloc; i++) {
            s.tat.push_back(flows_->allocs[i].tat.load());
        }
        s.cache.assign(w_.cache.e, w_.cache.e + cache_bytes);
        s.victim = w_.cache.victim;
        s.lookups = w_.cache.lookups;
        s.misses = w_.cache.misses;
        s.rng = w_.rng;
        return s;
    };
    auto restore = [&](const Snap& s) {
        std::copy(s.st.begin(), s.st.end(), w_.state);
        for (uint32_t i = 0; i < nalloc; i++) {
            flows_->allocs[i].tat.store(s.tat[i]);
        }
        std::copy(s.cache.begin(), s.cache.end(), w_.cache.e);
        w_.cache.victim = s.victim;
        w_.cache.lookups = s.lookups;
        w_.cache.misses = s.misses;
        w_.rng = s.rng;
    };
    struct Result {
        std::vector<Bytes> nic, exc;
        std::array<uint64_t, dp::kCounterCount> counters;
        Snap after;
        uint64_t express;
    };
    uint64_t now = 1'000'000'000ull;
    auto run_burst = [&](const std::vector<std::pair<Bytes, uint16_t>>& burst, bool express) {
        rte_mbuf* b[dp::kBurst];
        for (size_t i = 0; i < burst.size(); i++) {
            b[i] = mbuf_for(burst[i].first, burst[i].second);
        }
        const dp::Counters c0 = w_.counters;
        const uint64_t e0 = w_.express_packets;
        w_.cfg.express = express;
        dp::process_burst(w_, b, static_cast<uint16_t>(burst.size()), now);
        Result r{drain(g_env->nic_out), drain(g_env->exc_out), {}, snap(), w_.express_packets - e0};
        for (size_t i = 0; i < dp::kCounterCount; i++) {
            r.counters[i] = w_.counters.v[i] - c0.v[i];
        }
        return r;
    };
    uint64_t finished = 0, total = 0, drops_rl = 0, hairpins = 0, whole = 0;
    for (int phase = 0; phase < 4; phase++) {
        dp::NextHop h;
        h.mac = {{0x02, 0, 0, 0, 0, 0x77}};
        h.port = g_env->nic_port;
        if (phase == 1) {  // host entries, both families
            ASSERT_EQ(nh_->set_host(4, n4.peer.ip.data(), h), 0);
            h.vlan = 9;
            ASSERT_EQ(nh_->set_host(6, n6.client.ip.data(), h), 0);
        }
        if (phase == 2) {  // no host entries; a tagged IPv6 default, the IPv4 one on the other port
            nh_->del_host(4, n4.peer.ip.data());
            nh_->del_host(6, n6.client.ip.data());
            h.vlan = 5;
            nh_->set_default(6, h);
            h.vlan = 0;
            h.port = g_env->exc_port;
            nh_->set_default(4, h);
        }
        if (phase == 3) {
            nh_->clear_default(4);
        }
        for (int iter = 0; iter < 2000; iter++) {
            now += 1'000'000;  // 1 ms
            const bool pure = rng() % 3 == 0;
            std::vector<std::pair<Bytes, uint16_t>> burst(1 + rng() % dp::kBurst);
            for (auto& in : burst) {
                in = {random_frame(), static_cast<uint16_t>(!pure && rng() % 16 == 0 ? rng() % 10 : RTE_PKTMBUF_HEADROOM)};
            }
            const Snap s0 = snap();
            const bool express_first = iter % 2 == 1;
            Result first = run_burst(burst, express_first);
            restore(s0);
            Result second = run_burst(burst, !express_first);
            const Result& with = express_first ? first : second;
            const Result& without = express_first ? second : first;
            const std::string where = "phase " + std::to_string(phase) + " iteration " + std::to_string(iter);
            ASSERT_EQ(with.nic, without.nic) << where;
            ASSERT_EQ(with.exc, without.exc) << where;
            ASSERT_EQ(with.counters, without.counters) << where;
            for (uint32_t i = 0; i < nalloc; i++) {
                const dp::AllocState& x = with.after.st[i];
                const dp::AllocState& y = without.after.st[i];
                ASSERT_TRUE(x.to_peer_packets == y.to_peer_packets && x.to_peer_bytes == y.to_peer_bytes &&
                            x.to_client_packets == y.to_client_packets && x.to_client_bytes == y.to_client_bytes &&
                            x.dropped_packets == y.dropped_packets)
                    << where << " alloc " << i;
                ASSERT_EQ(with.after.tat[i], without.after.tat[i]) << where << " tat " << i;
            }
            ASSERT_TRUE(with.after.cache == without.after.cache) << where;
            ASSERT_EQ(with.after.lookups, without.after.lookups) << where;
            ASSERT_EQ(with.after.misses, without.after.misses) << where;
            finished += with.express;
            whole += with.express == burst.size();
            total += burst.size();
            drops_rl += with.counters[static_cast<size_t>(Counter::drop_rate_limited)];
            hairpins += with.counters[static_cast<size_t>(Counter::hairpin)];
        }
    }
    // The mix reached what it is for: the lane finished packets, whole
    // bursts too, limits dropped, relay to relay went round.
    EXPECT_GT(finished, total / 20);
    EXPECT_GT(whole, 10u);
    EXPECT_GT(drops_rl, 100u);
    EXPECT_GT(hairpins, 10u);
}

// The workers without their client cache (FlowConfig::client_cache false,
// as when there is no memory for it): every client packet is looked up in
// the hash, with the same answers.
class PipelineWithoutCache : public Pipeline {
protected:
    PipelineWithoutCache() { client_cache_ = false; }
};

TEST_P(PipelineWithoutCache, ClientTrafficGoesThroughTheHash) {
    ASSERT_EQ(w_.cache.e, nullptr);
    ASSERT_FALSE(flows_->cache_enabled());
    std::vector<Bytes> in;
    std::vector<Bytes> want;
    for (int i = 0; i < 40; i++) {  // more than one burst
        const Bytes d = pattern(20, static_cast<uint8_t>(i));
        if (i % 2 != 0) {
            in.push_back(build(from_peer(d, n_.peer)));
            want.push_back(build(relayed(n_.listen, n_.client, channel_data(kChannel, d))));
        } else if (i % 10 == 4) {
            Frame f = from_client(channel_data(kChannel, d));
            f.src = n_.stranger;  // no allocation: punted
            in.push_back(build(f));
        } else {
            in.push_back(build(from_client(channel_data(kChannel, d))));
            want.push_back(build(relayed(n_.relayed, n_.peer, d)));
        }
    }
    for (int round = 0; round < 2; round++) {
        const Out o = run(in);
        EXPECT_EQ(o.nic, want);
        EXPECT_EQ(o.exc.size(), 4u);
        expect_deltas({{Counter::rx, 40},
                       {Counter::punt_miss, 4},
                       {Counter::fwd_client_channel, 16},
                       {Counter::fwd_peer_channel, 20}});
    }
    EXPECT_EQ(w_.cache.lookups, 0u);
}

// Without the cache the lane still finishes peer ChannelData.
TEST_P(PipelineWithoutCache, ExpressLaneMatchesTheStages) { check_express_against_stages(50); }

INSTANTIATE_TEST_SUITE_P(Families, PipelineWithoutCache, ::testing::Values(4, 6),
                         [](const auto& i) { return i.param == 4 ? std::string("IPv4") : std::string("IPv6"); });

INSTANTIATE_TEST_SUITE_P(Families, Pipeline, ::testing::Values(4, 6),
                         [](const auto& i) { return i.param == 4 ? std::string("IPv4") : std::string("IPv6"); });
INSTANTIATE_TEST_SUITE_P(Families, PipelineIpv4, ::testing::Values(4), [](const auto&) { return std::string("IPv4"); });
INSTANTIATE_TEST_SUITE_P(Families, PipelineIpv6, ::testing::Values(6), [](const auto&) { return std::string("IPv6"); });

}  // namespace

namespace dptest {
// For the other test files of this binary: EAL and ports, initialised once.
bool ensure_eal() {
    init_env();
    return g_env != nullptr;
}
}  // namespace dptest

// ---- rewrite: checksum corner cases of the incremental update ----
namespace {

// Non-zero bytes after the ChannelData payload (padding, or any trailing
// junk): they leave the checksum, at either byte parity, whatever their number.
TEST_P(Pipeline, ClientChannelDataWithNonZeroTailOfEveryLength) {
    for (size_t len : {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 160u, 161u}) {
        for (size_t tail = 0; tail <= 9; tail++) {
            const Bytes data = pattern(len, static_cast<uint8_t>(len + 3));
            Bytes payload = channel_data(kChannel, data);
            for (size_t i = 0; i < tail; i++) {
                payload.push_back(static_cast<uint8_t>(0xA5 ^ (i * 0x3B)));
            }
            const Out o = run1(build(from_client(payload)));
            ASSERT_EQ(o.nic.size(), 1u) << len << "+" << tail;
            EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data))) << len << "+" << tail;
            expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
        }
    }
}

// IPv4 only: IPv6 forbids a zero UDP checksum.
TEST_P(PipelineIpv4, Ipv4ZeroUdpChecksumGetsFullChecksumEveryKind) {
    Frame f = from_client(channel_data(kChannel, pattern(31), 1));
    f.zero_udp_checksum = true;
    Out o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(31))));

    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    f = from_client(send_indication(tx, n_.peer, pattern(37), true));
    f.zero_udp_checksum = true;
    o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(37))));

    f = from_peer(pattern(99), n_.peer);
    f.zero_udp_checksum = true;
    o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, channel_data(kChannel, pattern(99)))));

    const Address peer2 = n_.peer.with_port(6001);
    f = from_peer(pattern(45), peer2);
    f.zero_udp_checksum = true;
    o = run1(build(f));
    ASSERT_EQ(o.nic.size(), 1u);
    const size_t stun = 14 + 20 + 8;
    ASSERT_GT(o.nic[0].size(), stun + 20);
    std::array<uint8_t, 12> txid;
    std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
              txid.begin());
    EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, data_indication(txid, peer2, pattern(45)))));
}

// Send and both peer directions at every data length modulo 4 (odd data,
// Data indication padding of 0-3 bytes).
TEST_P(Pipeline, EveryDirectionAtEveryLengthModulo4) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Address peer2 = n_.peer.with_port(6001);
    const size_t stun = 14 + (GetParam() == 4 ? 20 : 40) + 8;
    for (size_t len = 1; len <= 8; len++) {
        const Bytes data = pattern(len, static_cast<uint8_t>(0x80 + len));
        Out o = run1(build(from_client(send_indication(tx, n_.peer, data, len & 1))));
        ASSERT_EQ(o.nic.size(), 1u);
        EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data))) << len;
        o = run1(build(from_peer(data, n_.peer)));
        ASSERT_EQ(o.nic.size(), 1u);
        EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, channel_data(kChannel, data)))) << len;
        o = run1(build(from_peer(data, peer2)));
        ASSERT_EQ(o.nic.size(), 1u);
        ASSERT_GT(o.nic[0].size(), stun + 20);
        std::array<uint8_t, 12> txid;
        std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
                  txid.begin());
        EXPECT_EQ(o.nic[0], build(relayed(n_.listen, n_.client, data_indication(txid, peer2, data)))) << len;
    }
}

}  // namespace

// ---- the relay's TOS rule (ipc::Settings, the control plane's [server].dscp) ----
namespace {

// The TOS / Traffic Class byte of a frame built without VLAN tag.
uint8_t tos_of(const Bytes& f) {
    if (f.size() < 16) {
        return 0;
    }
    return f[12] == 0x08 ? f[15] : static_cast<uint8_t>((f[14] & 0x0f) << 4 | f[15] >> 4);
}

struct TosCase {
    uint8_t keep, set, in, want;
};
// Every rule the control plane can send is {0xFF, 0} or {0x03, dscp << 2}.
constexpr TosCase kTosCases[] = {
    {0xFF, 0, 0x8B, 0x8B},        // keep (the default): AF41 + CE as received
    {0x03, 46 << 2, 0x8B, 0xBB},  // EF: AF41 + CE -> EF + CE
    {0x03, 46 << 2, 0xB9, 0xB9},  // EF + ECT(1) stays
    {0x03, 46 << 2, 0x00, 0xB8},  // unmarked, not-ECT -> EF
    {0x03, 0, 0x8B, 0x03},        // DSCP cleared, CE kept
    {0x03, 0, 0xB9, 0x01},        // DSCP cleared, ECT(1) kept
    {0x03, 63 << 2, 0x02, 0xFE},  // the largest DSCP, ECT(0) kept
    {0xFF, 0, 0xB9, 0xB9},        // keep again: the rule is not sticky
};

// Each kind the relay forwards, its received TOS `in`, forwarded with `want`:
// the whole frame compared with one built independently (IP header checksum
// included; the UDP checksum does not cover the TOS, but is compared too).
TEST_P(Pipeline, TosRuleAppliesToEveryKind) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Address peer2 = n_.peer.with_port(6001);  // permission, no channel: Data indication
    const size_t stun = 14 + (GetParam() == 4 ? 20 : 40) + 8;
    EXPECT_EQ(flows_->tos_rule.load(), dp::kTosKeepAll);  // before any Settings
    bool first = true;
    for (const TosCase& c : kTosCases) {
        if (!first) {  // the first case is the tables' initial rule, no Settings yet
            set_tos_rule(c.keep, c.set);
        }
        first = false;
        const std::string what = "rule " + std::to_string(c.keep) + "/" + std::to_string(c.set) + " in " +
                                 std::to_string(c.in);
        auto check = [&](Frame f, Frame want, const char* kind, Counter counter) {
            f.tos = c.in;
            want.tos = c.want;
            const Out o = run1(build(f));
            ASSERT_EQ(o.nic.size(), 1u) << what << " " << kind;
            EXPECT_EQ(tos_of(o.nic[0]), c.want) << what << " " << kind;
            EXPECT_EQ(o.nic[0], build(want)) << what << " " << kind;
            expect_valid_checksums(o.nic[0]);
            expect_deltas({{Counter::rx, 1}, {counter, 1}});
        };
        check(from_client(channel_data(kChannel, pattern(61))), relayed(n_.relayed, n_.peer, pattern(61)),
              "client ChannelData", Counter::fwd_client_channel);
        check(from_client(send_indication(tx, n_.peer, pattern(37), true)), relayed(n_.relayed, n_.peer, pattern(37)),
              "Send", Counter::fwd_client_send);
        check(from_peer(pattern(99), n_.peer), relayed(n_.listen, n_.client, channel_data(kChannel, pattern(99))),
              "peer ChannelData", Counter::fwd_peer_channel);
        // Data indication: its transaction id is the relay's own.
        Frame f = from_peer(pattern(45), peer2);
        f.tos = c.in;
        const Out o = run1(build(f));
        ASSERT_EQ(o.nic.size(), 1u) << what << " Data";
        ASSERT_GT(o.nic[0].size(), stun + 20);
        std::array<uint8_t, 12> txid;
        std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20),
                  txid.begin());
        Frame want = relayed(n_.listen, n_.client, data_indication(txid, peer2, pattern(45)));
        want.tos = c.want;
        EXPECT_EQ(tos_of(o.nic[0]), c.want) << what << " Data";
        EXPECT_EQ(o.nic[0], build(want)) << what << " Data";
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_peer_data, 1}});
    }
}

// One burst of every kind, each with its own received TOS: the express lane
// (IPv4 ChannelData) and the rewrite stage (the rest) of one burst apply the
// same rule; the next burst after a new Settings the new one.
TEST_P(Pipeline, TosRuleInAMixedBurst) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const uint8_t ins[] = {0x00, 0x01, 0x8B, 0xB9, 0xFF, 0x02, 0x4A, 0xFC};
    for (const auto& [keep, set] : {std::pair<uint8_t, uint8_t>{0x03, 46 << 2}, {0x03, 0}, {0x03, 10 << 2}}) {
        set_tos_rule(keep, set);
        std::vector<Bytes> in;
        std::vector<Bytes> want;
        for (size_t i = 0; i < std::size(ins); i++) {
            const Bytes d = pattern(20 + i, static_cast<uint8_t>(i));
            Frame f = i % 3 == 0   ? from_client(channel_data(kChannel, d))
                      : i % 3 == 1 ? from_client(send_indication(tx, n_.peer, d, false))
                                   : from_peer(d, n_.peer);
            f.tos = ins[i];
            in.push_back(build(f));
            Frame w = i % 3 == 2 ? relayed(n_.listen, n_.client, channel_data(kChannel, d))
                                 : relayed(n_.relayed, n_.peer, d);
            w.tos = static_cast<uint8_t>((ins[i] & keep) | set);
            want.push_back(build(w));
        }
        // Frames leave in order per direction (tx.cc), not necessarily
        // across directions: compared as sets.
        const uint64_t lane0 = w_.express_packets;
        const Out o = run(in);
        if (GetParam() == 4 && w_.cfg.express) {  // the peer ChannelData at least (slot channel)
            EXPECT_GE(w_.express_packets - lane0, 2u);
        }
        ASSERT_EQ(o.nic.size(), in.size());
        std::vector<Bytes> left = o.nic;
        for (size_t i = 0; i < want.size(); i++) {
            const auto it = std::find(left.begin(), left.end(), want[i]);
            if (it == left.end()) {
                ADD_FAILURE() << "rule " << int{keep} << "/" << int{set} << ": frame " << i << " (received TOS "
                              << int{ins[i]} << ") not forwarded as expected";
                continue;
            }
            left.erase(it);
        }
        expect_deltas({{Counter::rx, in.size()},
                       {Counter::fwd_client_channel, 3},
                       {Counter::fwd_client_send, 3},
                       {Counter::fwd_peer_channel, 2}});
    }
}

// Settings through the Applier as the control plane sends them: before a
// resync's ResyncBegin and, on a later reconnect, again; each applies to the
// next packet, inside a resync too (the old state still forwarding), and
// outlives ResyncEnd's sweep. A Settings the Applier refuses (malformed)
// leaves the rule the packets get as it was.
TEST_P(Pipeline, TosRuleFromSettingsInAndAroundResyncs) {
    auto forwarded_tos = [&](uint8_t in) -> int {
        Frame f = from_client(channel_data(kChannel, pattern(24)));
        f.tos = in;
        const Out o = run1(build(f));
        if (o.nic.size() != 1) {
            return -1;
        }
        Frame want = relayed(n_.relayed, n_.peer, pattern(24));
        want.tos = tos_of(o.nic[0]);
        EXPECT_EQ(o.nic[0], build(want));  // the rest of the frame as always
        return tos_of(o.nic[0]);
    };
    EXPECT_EQ(forwarded_tos(0x8B), 0x8B);

    // A reconnect: Settings, ResyncBegin, the state again, ResyncEnd.
    set_tos_rule(0x03, 46 << 2);
    EXPECT_EQ(forwarded_tos(0x8B), 0xBB);
    ipc::ResyncBegin b{};
    b.generation = 2;
    ipc_send(b);
    EXPECT_EQ(forwarded_tos(0x8B), 0xBB);
    // Inside the resync, before anything is re-added: at once.
    set_tos_rule(0x03, 0);
    EXPECT_EQ(forwarded_tos(0x8B), 0x03);
    install();
    ipc::ResyncEnd e{};
    e.generation = 2;
    ipc_send(e);
    EXPECT_EQ(applier_->stats().swept, 0u);
    EXPECT_EQ(forwarded_tos(0x8B), 0x03);
    EXPECT_EQ(forwarded_tos(0xB9), 0x01);

    // Refused: ECN not kept, a set bit also kept, padding, wrong size, wrong
    // version. Each counted as malformed; the packets keep the last rule.
    auto bytes_of = [&](uint8_t keep, uint8_t set, uint8_t pad0) {
        ipc::Settings m{};
        m.tos_keep = keep;
        m.tos_set = set;
        m.pad[0] = pad0;
        const auto sp = ipc::encode(m, ++seq_);
        return Bytes(sp.begin(), sp.end());
    };
    std::vector<Bytes> bad{bytes_of(0xFC, 46 << 2, 0), bytes_of(0x00, 0, 0), bytes_of(0xFF, 46 << 2, 0),
                           bytes_of(0x03, 0x07, 0), bytes_of(0x03, 46 << 2, 1)};
    Bytes shorter = bytes_of(0x03, 46 << 2, 0);
    shorter.pop_back();
    shorter[4] = static_cast<uint8_t>(shorter.size());  // header length matching: wrong size for its type
    bad.push_back(shorter);
    Bytes longer = bytes_of(0x03, 46 << 2, 0);
    longer.push_back(0);
    longer[4] = static_cast<uint8_t>(longer.size());
    bad.push_back(longer);
    Bytes version = bytes_of(0x03, 46 << 2, 0);
    version[0] = 2;
    bad.push_back(version);
    const auto stats0 = applier_->stats();
    for (const Bytes& m : bad) {
        EXPECT_FALSE(applier_->apply(m));
        EXPECT_EQ(flows_->tos_rule.load(), dp::pack_tos_rule(0x03, 0));
    }
    EXPECT_EQ(applier_->stats().malformed, stats0.malformed + bad.size());
    EXPECT_EQ(applier_->stats().applied, stats0.applied);
    EXPECT_EQ(forwarded_tos(0x8B), 0x03);

    // Back to keep, as a control plane with dscp = "keep" sends on its
    // next connect.
    set_tos_rule(0xFF, 0);
    EXPECT_EQ(forwarded_tos(0x8B), 0x8B);
    EXPECT_EQ(forwarded_tos(0xB9), 0xB9);
}

}  // namespace

// ---- classify: the general parser behind the IPv4 fast path ----
namespace {

// The UDP header of a frame built without VLAN tag: after IPv4 (20) or IPv6 (40).
size_t udp_offset(int family) { return 14 + (family == 4 ? 20 : 40); }

TEST_P(Pipeline, SendWithDataBeforePeerAddressIsForwarded) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Bytes data = pattern(37);
    const Bytes s = send_indication(tx, n_.peer, data, false);
    const size_t peer_attr = 4 + (n_.peer.is_v4() ? 8 : 20);
    Bytes r(s.begin(), s.begin() + 20);                          // STUN header
    r.insert(r.end(), s.begin() + 20 + peer_attr, s.end());      // DATA (padded)
    r.insert(r.end(), s.begin() + 20, s.begin() + 20 + peer_attr);  // XOR-PEER-ADDRESS
    ASSERT_EQ(r.size(), s.size());
    const Out o = run1(build(from_client(r)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}});
}

TEST_P(Pipeline, SendWithUnknownRequiredAttributeAfterDataIsPunted) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    Bytes s = send_indication(tx, n_.peer, pattern(8), false);
    for (uint8_t b : {0x7f, 0x01, 0x00, 0x04, 0xaa, 0xbb, 0xcc, 0xdd}) {  // type 0x7f01, 4 bytes
        s.push_back(b);
    }
    const uint16_t mlen = static_cast<uint16_t>(s.size() - 20);
    s[2] = static_cast<uint8_t>(mlen >> 8);
    s[3] = static_cast<uint8_t>(mlen);
    const Bytes f = build(from_client(s));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});
}

// RFC 8489 section 7.3: a Send indication whose FINGERPRINT is wrong is
// discarded by the control plane; the fast path must not forward it, so it
// punts it (the control plane then drops it, turn_drops_total
// {reason="bad_fingerprint"}). A correct one is forwarded, in the common
// layout (checked straight-line) and in any other (the attribute walk); a
// FINGERPRINT that is not the last attribute is the control plane's to refuse.
TEST_P(Pipeline, SendWithWrongFingerprintIsPunted) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (size_t len : {size_t{1}, size_t{8}, size_t{37}, size_t{160}}) {
        SCOPED_TRACE(len);
        const Bytes data = pattern(len);
        const Bytes good = send_indication(tx, n_.peer, data, true);
        const Out ok = run1(build(from_client(good)));
        ASSERT_EQ(ok.nic.size(), 1u);
        EXPECT_EQ(ok.nic[0], build(relayed(n_.relayed, n_.peer, data)));
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}});
        for (size_t at : {good.size() - 1, good.size() - 4, size_t{28}}) {  // in the value, in the peer address
            Bytes bad = good;
            bad[at] ^= 0x10;
            const Bytes f = build(from_client(bad));
            const Out o = run1(f);
            ASSERT_EQ(o.exc.size(), 1u) << at;
            EXPECT_EQ(o.exc[0], f);
            EXPECT_TRUE(o.nic.empty());
            expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});
        }
    }
}

TEST_P(Pipeline, SendFingerprintIsCheckedInAnyLayout) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const Bytes data = pattern(37);
    // DATA before XOR-PEER-ADDRESS (the walk), then a FINGERPRINT computed
    // over the reordered message.
    const Bytes s = send_indication(tx, n_.peer, data, false);
    const size_t peer_attr = 4 + (n_.peer.is_v4() ? 8 : 20);
    Bytes r(s.begin(), s.begin() + 20);
    r.insert(r.end(), s.begin() + 20 + peer_attr, s.end());
    r.insert(r.end(), s.begin() + 20, s.begin() + 20 + peer_attr);
    const uint16_t mlen = static_cast<uint16_t>(r.size() - 20 + 8);
    r[2] = static_cast<uint8_t>(mlen >> 8);
    r[3] = static_cast<uint8_t>(mlen);
    const uint32_t fp = turn::stun::fingerprint_value(r);
    for (uint8_t b : {uint8_t{0x80}, uint8_t{0x28}, uint8_t{0}, uint8_t{4}, static_cast<uint8_t>(fp >> 24),
                      static_cast<uint8_t>(fp >> 16), static_cast<uint8_t>(fp >> 8), static_cast<uint8_t>(fp)}) {
        r.push_back(b);
    }
    const Out o = run1(build(from_client(r)));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, data)));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_send, 1}});

    Bytes bad = r;
    bad.back() ^= 1;
    const Bytes f = build(from_client(bad));
    const Out p = run1(f);
    ASSERT_EQ(p.exc.size(), 1u);
    EXPECT_EQ(p.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});

    // A FINGERPRINT followed by SOFTWARE: not the last attribute, though its
    // CRC is right for the message before it (with the final length).
    Bytes after = send_indication(tx, n_.peer, data, false);
    const uint16_t alen = static_cast<uint16_t>(after.size() - 20 + 8 + 8);
    after[2] = static_cast<uint8_t>(alen >> 8);
    after[3] = static_cast<uint8_t>(alen);
    const uint32_t afp = turn::stun::fingerprint_value(after);
    for (int b : {0x80, 0x28, 0x00, 0x04}) {
        after.push_back(static_cast<uint8_t>(b));
    }
    for (int k = 24; k >= 0; k -= 8) {
        after.push_back(static_cast<uint8_t>(afp >> k));
    }
    for (int b : {0x80, 0x22, 0x00, 0x04, 0x61, 0x62, 0x63, 0x64}) {
        after.push_back(static_cast<uint8_t>(b));
    }
    const Bytes g = build(from_client(after));
    const Out q = run1(g);
    ASSERT_EQ(q.exc.size(), 1u);
    EXPECT_EQ(q.exc[0], g);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});
}

// Bytes after the STUN message in the datagram: the control plane's parser
// refuses such a datagram (malformed), so the fast path must not forward it.
TEST_P(Pipeline, SendWithBytesAfterTheMessageIsPunted) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (bool fingerprint : {false, true}) {
        Bytes s = send_indication(tx, n_.peer, pattern(8), fingerprint);
        for (int k = 0; k < 4; k++) {
            s.push_back(0);
        }
        const Bytes f = build(from_client(s));
        const Out o = run1(f);
        ASSERT_EQ(o.exc.size(), 1u) << fingerprint;
        EXPECT_EQ(o.exc[0], f);
        EXPECT_TRUE(o.nic.empty());
        expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});
    }
}

TEST_P(Pipeline, SendWithTruncatedDataIsPunted) {
    const std::array<uint8_t, 12> tx{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    Bytes s = send_indication(tx, n_.peer, pattern(8), false);
    const size_t data_attr = 20 + 4 + (n_.peer.is_v4() ? 8 : 20);
    s[data_attr + 3] = 9;  // DATA claims 9 bytes: past the end of the message
    const Bytes f = build(from_client(s));
    const Out o = run1(f);
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], f);
    expect_deltas({{Counter::rx, 1}, {Counter::punt_send_unparsed, 1}});
}

TEST_P(Pipeline, UdpLengthBeyondIpPayloadIsDropped) {
    Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    f[udp_offset(GetParam()) + 5] += 1;  // UDP length one more than the IP payload
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
}

TEST_P(Pipeline, UdpLengthBelowHeaderIsDropped) {
    Bytes f = build(from_client(channel_data(kChannel, pattern(10))));
    f[udp_offset(GetParam()) + 4] = 0;
    f[udp_offset(GetParam()) + 5] = 7;
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
}

TEST_P(Pipeline, ShortUdpLengthLimitsTheChannelData) {
    // UDP length shorter than the IP payload: the bytes after it are not
    // part of the datagram, so ChannelData claiming them is too long.
    Bytes f = build(from_client(channel_data(kChannel, pattern(12))));
    f[udp_offset(GetParam()) + 5] -= 4;
    const Out o = run1(f);
    EXPECT_TRUE(o.nic.empty() && o.exc.empty());
    expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
}

TEST_P(Pipeline, ClientChannelDataWithDfIsForwarded) {
    Frame fr = from_client(channel_data(kChannel, pattern(20)));
    fr.df = true;
    const Out o = run1(build(fr));
    ASSERT_EQ(o.nic.size(), 1u);
    EXPECT_EQ(o.nic[0], build(relayed(n_.relayed, n_.peer, pattern(20))));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
}

TEST_P(Pipeline, RuntFramesAreDropped) {
    const Bytes full = build(from_client(channel_data(kChannel, pattern(10))));
    for (size_t len : {size_t{13}, size_t{14}, size_t{33}, udp_offset(GetParam()) + 7}) {
        const Out o = run1(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len)));
        EXPECT_TRUE(o.nic.empty() && o.exc.empty()) << len;
        expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_length, 1}});
    }
}

TEST_P(Pipeline, ChecksumFlagsFromTheNic) {
    // One frame with the given rx offload flags.
    auto run_flags = [&](const Bytes& b, uint64_t flags) {
        before_ = w_.counters;
        rte_mbuf* m = mbuf_of(b);
        m->ol_flags |= flags;
        rte_ring_enqueue(g_env->nic_in, m);
        while (dp::poll_once(w_) != 0) {
        }
        return Out{drain(g_env->nic_out), drain(g_env->exc_out)};
    };
    const Bytes good = build(from_client(channel_data(kChannel, pattern(10))));
    const Bytes want = build(relayed(n_.relayed, n_.peer, pattern(10)));
    // L4 flagged bad: dropped, whatever the IP flags say.
    for (uint64_t ip : {uint64_t{0}, uint64_t{RTE_MBUF_F_RX_IP_CKSUM_GOOD}}) {
        const Out o = run_flags(good, RTE_MBUF_F_RX_L4_CKSUM_BAD | ip);
        EXPECT_TRUE(o.nic.empty() && o.exc.empty());
        expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_l4_checksum, 1}});
    }
    // L4 good or unknown, IP good or unknown: forwarded.
    for (uint64_t fl : {uint64_t{RTE_MBUF_F_RX_L4_CKSUM_GOOD}, uint64_t{RTE_MBUF_F_RX_IP_CKSUM_GOOD},
                        uint64_t{RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD},
                        uint64_t{RTE_MBUF_F_RX_IP_CKSUM_BAD}}) {
        const Out o = run_flags(good, fl);
        ASSERT_EQ(o.nic.size(), 1u) << fl;
        EXPECT_EQ(o.nic[0], want);
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
    }
    if (GetParam() == 4) {
        // A bad IPv4 header checksum: dropped unless the NIC vouched for it
        // (IP_CKSUM_BAD is not trusted either way: the header is checked).
        Bytes bad = good;
        bad[14 + 10] ^= 0x55;
        for (uint64_t fl : {uint64_t{0}, uint64_t{RTE_MBUF_F_RX_L4_CKSUM_GOOD}, uint64_t{RTE_MBUF_F_RX_IP_CKSUM_BAD}}) {
            const Out o = run_flags(bad, fl);
            EXPECT_TRUE(o.nic.empty() && o.exc.empty()) << fl;
            expect_deltas({{Counter::rx, 1}, {Counter::drop_bad_ip_checksum, 1}});
        }
        const Out o = run_flags(bad, RTE_MBUF_F_RX_IP_CKSUM_GOOD);
        EXPECT_EQ(o.nic.size(), 1u);
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}});
    }
}

}  // namespace

// ---- relay to relay: second legs that cannot be sent, bursts, families, VLANs ----
// (RelayToRelay's cases run with and without the NAT, as those above.)

// The second leg cannot be sent (here: B has a permission but no channel
// for A, so B's client would get a Data indication, 36/48 bytes longer than
// the ChannelData A's client sent, which no longer fits the MTU). Had the
// first leg been taken, the kernel would get the rewritten frame: from the
// relay's own relayed IP (a martian source, dropped with accept_local=0),
// to the NIC port's MAC, where socket mode delivers the datagram (loopback,
// then a fragmented Data indication). So route judges the second leg first
// and punts the client's own frame, for the control plane to relay.
TEST_P(RelayToRelay, SecondLegOverTheMtuPuntsTheClientsFrame) {
    b_permits_a(false);
    // Fits the client's frame and the first leg, not the Data indication.
    const size_t d = family() == 4 ? 1440 : 1420;
    const Bytes in = build(from_client(channel_data(kChannelA, pattern(d))));
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    const size_t src_off = 14 + (family() == 4 ? 12 : 8);
    const size_t alen = family() == 4 ? 4 : 16;
    const Bytes src(o.exc[0].begin() + static_cast<long>(src_off), o.exc[0].begin() + static_cast<long>(src_off + alen));
    const Bytes relay_ip(n_.relayed.ip.begin(), n_.relayed.ip.begin() + static_cast<long>(alen));
    EXPECT_NE(src, relay_ip) << "the kernel got a frame whose source IP is the relay's own relayed IP (martian)";
    EXPECT_EQ(o.exc[0], in) << "punted frame is not the client's original (" << o.exc[0].size() << " vs "
                            << in.size() << " bytes)";
    expect_deltas({{Counter::rx, 1}, {Counter::punt_mtu, 1}});
}

// Same with no next hop for B's client (host entries only, no default).
TEST_P(RelayToRelay, SecondLegWithoutNextHopPuntsTheClientsFrame) {
    b_permits_a(true);
    nh_->clear_default(static_cast<uint8_t>(family()));
    const Bytes in = build(from_client(channel_data(kChannelA, pattern(40))));
    const Out o = run1(in);
    EXPECT_TRUE(o.nic.empty());
    ASSERT_EQ(o.exc.size(), 1u);
    EXPECT_EQ(o.exc[0], in) << "punted frame is not the client's original";
    expect_deltas({{Counter::rx, 1}, {Counter::punt_no_next_hop, 1}});
}

// A whole burst hairpinned (Worker::hairpin holds exactly kBurst), twice in
// a row, both ways.
TEST_P(RelayToRelay, FullBurstsAllHairpinned) {
    b_permits_a(true);
    for (int round = 0; round < 2; round++) {
        std::vector<Bytes> in;
        for (int i = 0; i < 32; i++) {
            Frame f = from_client(channel_data(i % 2 ? kChannelB : kChannelA, pattern(100 + i)));
            if (i % 2) {
                f.src = client_b_;
            }
            in.push_back(build(f));
        }
        const Out o = run(in);
        EXPECT_TRUE(o.exc.empty());
        ASSERT_EQ(o.nic.size(), 32u);
        expect_deltas({{Counter::rx, 32}, {Counter::fwd_client_channel, 32}, {Counter::hairpin, 32},
                       {Counter::fwd_peer_channel, 32}});
        EXPECT_EQ(w_.nhairpin, 0u);
    }
}

// More than two own IPv4s: the relayed address B is on the third one
// (OwnIps4 past the lane's two snapshot words: own_more -> has()).
// IPv4 only: OwnIps4 is.
TEST_P(RelayToRelayWithoutNatIpv4, RelayIpThirdOfTheOwnIps) {
    const Address listen2 = *Address::parse("198.18.0.2:3478");
    const Address relayed_c = *Address::parse("198.18.0.1:49160");
    ipc_send(allocation_add(20, *Address::parse("198.18.0.12:50002"), listen2, &relayed_c, nullptr, 0));
    const Address relayed_d = *Address::parse("198.18.0.3:49153");
    const Address client_d = *Address::parse("198.18.0.13:50003");
    add_allocation(21, client_d, relayed_d);
    ASSERT_EQ(flows_->own4.n.load(), 3u);
    add_permission(kAllocId, n_.relayed, relayed_d);
    add_channel(kAllocId, n_.relayed, relayed_d, 0x4009);
    add_permission(21, relayed_d, n_.relayed);
    add_channel(21, relayed_d, n_.relayed, 0x400a);
    for (int k = 0; k < 2; k++) {  // the second time the client cache knows A's client: the lane finds it
        const Out o = run1(build(from_client(channel_data(0x4009, pattern(50)))));
        ASSERT_EQ(o.nic.size(), 1u);
        Frame f = relayed(n_.listen, client_d, channel_data(0x400a, pattern(50)));
        f.ttl = kTtl - 2;
        EXPECT_EQ(o.nic[0], build(f));
        expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                       {Counter::fwd_peer_channel, 1}});
    }
}

// A peer on a listening IP that is no relayed IP (only an older control
// plane would offload it): punted as the client sent it, never to the router.
// IPv4 only (the second listening IP is an IPv4 one).
TEST_P(RelayToRelayWithoutNatIpv4, PeerOnAListeningIpOnlyIsPunted) {
    const Address listen2 = *Address::parse("198.18.0.2:3478");
    const Address relayed_c = *Address::parse("198.18.0.1:49160");
    ipc_send(allocation_add(20, *Address::parse("198.18.0.12:50002"), listen2, &relayed_c, nullptr, 0));
    const Address peer = *Address::parse("198.18.0.2:8080");
    add_permission(kAllocId, n_.relayed, peer);
    add_channel(kAllocId, n_.relayed, peer, 0x4009);
    for (int k = 0; k < 2; k++) {
        const Bytes in = build(from_client(channel_data(0x4009, pattern(50))));
        const Out o = run1(in);
        EXPECT_TRUE(o.nic.empty());
        ASSERT_EQ(o.exc.size(), 1u);
        EXPECT_EQ(o.exc[0], in);
        expect_deltas({{Counter::rx, 1}, {Counter::punt_own_address, 1}});
    }
}

// IPv4 clients whose relayed addresses are IPv6 (RFC 8656 REQUESTED-ADDRESS-FAMILY).
// Behind the NAT, behind the IPv6 pair too: the hop between the allocations
// is IPv6 and so is the swap. B first has a permission only (a Data
// indication naming A's IPv6 address as B knows it), then a channel too.
// IPv4 clients with IPv6 relayed addresses.
TEST_P(RelayToRelayIpv4, AcrossFamilies) {
    if (nat()) {
        ipc::ExternalIps m{};
        m.external_v4 = ipc::WireAddress::from(external_);
        m.relay_v4 = ipc::WireAddress::from(n_.relayed.with_port(0));
        m.external_v6 = ipc::WireAddress::from(*Address::parse("fd00:7::1"));
        m.relay_v6 = ipc::WireAddress::from(*Address::parse("fd00::1"));
        ipc_send(m);
    }
    const Address ra6 = *Address::parse("[fd00::1]:49170");
    const Address rb6 = *Address::parse("[fd00::1]:49171");
    // What peer_a() and peer_b() are for these two allocations.
    const Address pa6 = nat() ? *Address::parse("[fd00:7::1]:49170") : ra6;
    const Address pb6 = nat() ? *Address::parse("[fd00:7::1]:49171") : rb6;
    const Address ca = *Address::parse("198.18.0.20:50010");
    const Address cb = *Address::parse("198.18.0.21:50011");
    add_allocation(30, ca, ra6);
    add_allocation(31, cb, rb6);
    add_permission(30, ra6, pb6);
    add_channel(30, ra6, pb6, 0x4010);
    add_permission(31, rb6, pa6);
    for (const bool b_channel : {false, true}) {
        if (b_channel) {
            add_channel(31, rb6, pa6, 0x4011);
        }
        for (int k = 0; k < 2; k++) {
            Frame in = from_client(channel_data(0x4010, pattern(70)));
            in.src = ca;
            const Out o = run1(build(in));
            EXPECT_TRUE(o.exc.empty()) << b_channel << k;
            ASSERT_EQ(o.nic.size(), 1u) << b_channel << k;
            Frame f = relayed(n_.listen, cb, b_channel ? channel_data(0x4011, pattern(70))
                                                       : data_indication(txid_of(o.nic[0]), pa6, pattern(70)));
            f.ttl = kTtl - 2;
            EXPECT_EQ(o.nic[0], build(f)) << b_channel << k;
            expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                           {b_channel ? Counter::fwd_peer_channel : Counter::fwd_peer_data, 1}});
        }
    }
}

// B's client behind a VLAN next hop, and a DSCP rule: applied on both legs,
// the same as once.
TEST_P(RelayToRelay, VlanNextHopAndDscpRule) {
    b_permits_a(false);
    set_tos_rule(0x03, 0xb8);  // ECN kept, DSCP EF
    dp::NextHop h;
    h.mac = {{0x02, 0, 0, 0, 0, 0x66}};
    h.port = g_env->nic_port;
    h.vlan = 42;
    ASSERT_EQ(nh_->set_host(static_cast<uint8_t>(family()), client_b_.ip.data(), h), 0);
    const Bytes data = pattern(33);
    const Out o = run1(build(from_client(channel_data(kChannelA, data))));
    ASSERT_EQ(o.nic.size(), 1u);
    std::array<uint8_t, 12> tx{};
    const size_t stun = 18 + (family() == 4 ? 20 : 40) + 8;  // tagged
    ASSERT_GE(o.nic[0].size(), stun + 20);
    std::copy(o.nic[0].begin() + static_cast<long>(stun + 8), o.nic[0].begin() + static_cast<long>(stun + 20), tx.begin());
    Frame f = to_b(data_indication(tx, peer_a(), data));
    f.dst_mac = {0x02, 0, 0, 0, 0, 0x66};
    f.vlan = 42;
    f.tos = static_cast<uint8_t>((kTos & 0x03) | 0xb8);
    EXPECT_EQ(o.nic[0], build(f));
    expect_deltas({{Counter::rx, 1}, {Counter::fwd_client_channel, 1}, {Counter::hairpin, 1},
                   {Counter::fwd_peer_data, 1}});
}

// ---- AllocationAdd addresses the dataplane cannot use ----
// A client of family 0, or a client and listening address of two families,
// would give the allocation's line a family its listening index does not
// belong to, while the relayed port's word is published anyway: the fast
// path would send the peer's packets to 0.0.0.0:0, or mix the families. Such
// a message is refused as malformed and installs nothing.

TEST_P(PipelineIpv4, AllocationWithClientOfNoneOrAnotherFamilyIsRefused) {
    const Address client6 = *Address::parse("[fd00::77]:40000");
    ipc_send(allocation_add(98, client6, *Address::parse("[fd00::1]:3478"), nullptr, nullptr));  // IPv6 listen index 0
    ipc::AllocationAdd none = allocation_add(99, n_.client, n_.listen, nullptr, nullptr);
    none.client = ipc::WireAddress{};                                             // family 0, port 0
    const ipc::AllocationAdd mixed = allocation_add(99, client6, n_.listen, nullptr, nullptr);  // IPv6 client, IPv4 listen
    uint16_t port = 49300;
    for (ipc::AllocationAdd a : {none, mixed}) {
        const Address relayed = *Address::parse("198.18.0.1:" + std::to_string(port++));
        a.relayed_v4 = ipc::WireAddress::from(relayed);
        EXPECT_FALSE(applier_->apply(ipc::encode(a, ++seq_))) << "client family " << int{a.client.family} << " accepted";
        ipc::PermissionAdd perm = permission_add(99, relayed, n_.peer);
        applier_->apply(ipc::encode(perm, ++seq_));
        Frame f = from_peer(pattern(40), n_.peer);
        f.dst = relayed;
        const Out o = run1(build(f));
        EXPECT_TRUE(o.nic.empty()) << "peer packet forwarded to the NIC (client family " << int{a.client.family} << ")";
    }
}

// Each refused message counts as malformed, not applied, and leaves the
// tables as they were; family 0 stays valid where it means "none" (an
// absent relayed address).
TEST_P(PipelineIpv4, AddressesOfNoOrMixedFamiliesCountAsMalformed) {
    const Address relayed2 = *Address::parse("198.18.0.1:49302");
    const Address peer6 = *Address::parse("[fd00:1::20]:6000");
    std::vector<Bytes> bad;
    auto keep = [&](auto m) {
        const auto d = ipc::encode(m, ++seq_);
        bad.emplace_back(d.begin(), d.end());
    };
    ipc::AllocationAdd a = allocation_add(99, n_.client.with_port(40001), n_.listen, &relayed2, nullptr);
    a.client = ipc::WireAddress{};
    keep(a);
    a = allocation_add(99, n_.client.with_port(40001), n_.listen, &relayed2, nullptr);
    a.client.port = 0;
    keep(a);
    a = allocation_add(99, n_.client.with_port(40001), n_.listen, &relayed2, nullptr);
    a.listen = ipc::WireAddress{};
    keep(a);
    keep(allocation_add(99, *Address::parse("[fd00::77]:40000"), n_.listen, &relayed2, nullptr));
    keep(allocation_add(99, n_.client.with_port(40001), n_.listen, nullptr, &relayed2));  // IPv4 as relayed_v6
    ipc::PermissionAdd p = permission_add(kAllocId, n_.relayed, n_.peer);
    p.peer = ipc::WireAddress{};
    keep(p);
    keep(permission_add(kAllocId, n_.relayed, peer6));
    ipc::ChannelAdd c = channel_add(kAllocId, n_.relayed, n_.peer.with_port(6001), 0x4020);
    c.peer = ipc::WireAddress{};
    keep(c);
    c = channel_add(kAllocId, n_.relayed, n_.peer.with_port(6001), 0x4020);
    c.relayed = ipc::WireAddress{};
    keep(c);
    keep(channel_add(kAllocId, n_.relayed, peer6, 0x4020));

    const auto stats0 = applier_->stats();
    const size_t allocs0 = applier_->allocations();
    const uint32_t values0 = flows_->channel_values_in_use();
    for (size_t i = 0; i < bad.size(); i++) {
        EXPECT_FALSE(applier_->apply(bad[i])) << "message " << i;
    }
    EXPECT_EQ(applier_->stats().malformed, stats0.malformed + bad.size());
    EXPECT_EQ(applier_->stats().applied, stats0.applied);
    EXPECT_EQ(applier_->stats().table_full, stats0.table_full);
    EXPECT_EQ(applier_->allocations(), allocs0);
    EXPECT_EQ(flows_->channel_values_in_use(), values0);
    uint32_t idx = 0;
    EXPECT_FALSE(flows_->relay_ports->find(4, relayed2.ip.data(), rte_cpu_to_be_16(relayed2.port), &idx));

    // What the control plane sends stays valid: no relayed address of a
    // family is family 0.
    ipc_send(allocation_add(99, n_.client.with_port(40001), n_.listen, &relayed2, nullptr));
    EXPECT_EQ(applier_->allocations(), allocs0 + 1);
}
