// Concurrency of the flow tables: one writer (the test thread, as the main
// lcore) rebinds and deletes channels through the Applier while a reader
// thread (as a worker) looks them up lock-free and reports quiescent states.
// A value reclaimed too early would be reused for another channel and show
// the reader a peer port that belongs to a different key; the same for a
// channel slot in the allocation's line rewritten too early.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/dpdk.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "ipc/protocol.h"

namespace dptest {
bool ensure_eal();
}

namespace {

namespace ipc = turn::ipc;

constexpr uint16_t kChannels = 512;

ipc::WireAddress v4(uint8_t last, uint16_t port) {
    ipc::WireAddress a;
    a.family = 4;
    a.port = port;
    a.ip[0] = 198;
    a.ip[1] = 18;
    a.ip[2] = 3;
    a.ip[3] = last;
    return a;
}

// The allocation index a worker finds for an IPv4 allocation's client
// 5-tuple (its kClient entry, as lookup does); UINT32_MAX when there is none.
uint32_t client_index(const dp::FlowTables& t, const ipc::AllocationAdd& m) {
    dp::Key4 k{};
    std::memcpy(&k.a_ip, m.listen.ip, 4);
    std::memcpy(&k.b_ip, m.client.ip, 4);
    k.a_port = rte_cpu_to_be_16(m.listen.port);
    k.b_port = rte_cpu_to_be_16(m.client.port);
    k.kind = dp::KeyKind::kClient;
    void* d = nullptr;
    if (rte_hash_lookup_data(t.h4, &k, &d) < 0) {
        return UINT32_MAX;
    }
    return dp::inline_alloc(d);
}

TEST(FlowTablesConcurrency, ReaderNeverSeesAReusedValue) {
    ASSERT_TRUE(dptest::ensure_eal());
    dp::FlowConfig fc;
    fc.name = "conc";
    fc.entries_v4 = 4096;
    fc.entries_v6 = 64;
    fc.max_allocations = 8;
    fc.max_channels = kChannels + 64;  // little slack: reclamation must keep up
    fc.workers = 2;
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(fc, &err);
    ASSERT_NE(t, nullptr) << err;
    dp::Applier ap(*t);
    uint64_t seq = 0;
    ipc::AllocationAdd a{};
    a.alloc_id = 1;
    a.client = v4(10, 50000);
    a.listen = v4(1, 3478);
    a.relayed_v4 = v4(1, 49152);
    ASSERT_TRUE(ap.apply(ipc::encode(a, ++seq)));

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> hits{0}, bad{0}, slot_hits{0};
    // Reader: QSBR thread 1 (thread 0 is the writer's, offline).
    std::thread reader([&] {
        rte_rcu_qsbr_thread_register(t->rcu, 1);
        rte_rcu_qsbr_thread_online(t->rcu, 1);
        std::mt19937 rng(1);
        while (!stop.load(std::memory_order_relaxed)) {
            for (int i = 0; i < 64; i++) {
                const uint16_t ch = static_cast<uint16_t>(rng() % kChannels);
                dp::Key4 k{};
                std::memcpy(&k.a_ip, a.listen.ip, 4);
                std::memcpy(&k.b_ip, a.client.ip, 4);
                k.a_port = rte_cpu_to_be_16(a.listen.port);
                k.b_port = rte_cpu_to_be_16(a.client.port);
                k.channel = rte_cpu_to_be_16(static_cast<uint16_t>(0x4000 + ch));
                k.kind = dp::KeyKind::kChannelIn;
                void* d = nullptr;
                if (rte_hash_lookup_data(t->h4, &k, &d) >= 0) {
                    const auto* v = static_cast<const dp::ChannelValue*>(d);
                    // Channel ch's peers always use port 20000 + ch.
                    if (rte_be_to_cpu_16(v->peer_port) != 20000 + ch || v->family != 4) {
                        bad.fetch_add(1);
                    }
                    hits.fetch_add(1, std::memory_order_relaxed);
                }
            }
            // The allocation's channel slots (flow/tables.h ChanSlot): a
            // slot rewritten before its grace period would show a channel
            // number with another channel's peer.
            if (const uint32_t idx = client_index(*t, a); idx != UINT32_MAX) {
                const dp::Allocation& al = t->allocs[idx];
                for (const dp::ChanSlot& s : al.v4.slots) {
                    const uint16_t ch_be = s.channel_be.load(std::memory_order_acquire);
                    if (ch_be == 0) {
                        continue;
                    }
                    const uint16_t ch = static_cast<uint16_t>(rte_be_to_cpu_16(ch_be) - 0x4000);
                    // Widen the window a worker has between the two
                    // loads (without it a premature reuse is rarely hit).
                    for (int spin = 0; spin < 64; spin++) {
                        rte_pause();
                    }
                    if (rte_be_to_cpu_16(s.peer_port) != 20000 + ch) {
                        bad.fetch_add(1);
                    }
                    slot_hits.fetch_add(1, std::memory_order_relaxed);
                }
            }
            rte_rcu_qsbr_quiescent(t->rcu, 1);
        }
        rte_rcu_qsbr_thread_offline(t->rcu, 1);
        rte_rcu_qsbr_thread_unregister(t->rcu, 1);
    });

    // Writer: bind, rebind to another peer IP (same port), delete, at random.
    std::mt19937 rng(2);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(800);
    uint64_t ops = 0;
    uint64_t full_before = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        // On this shared 2-core machine the reader can be descheduled for
        // milliseconds; then grace periods stall and the value pool (64 spare)
        // runs dry. The dataplane's answer is "leave the flow on the slow
        // path" (table_full); the test waits for the reader instead.
        if (ap.stats().table_full != full_before) {
            full_before = ap.stats().table_full;
            std::this_thread::yield();
        }
        const uint16_t ch = static_cast<uint16_t>(rng() % kChannels);
        if (rng() % 4 == 0) {
            ipc::ChannelDel d{};
            d.alloc_id = 1;
            d.channel = static_cast<uint16_t>(0x4000 + ch);
            ap.apply(ipc::encode(d, ++seq));
        } else {
            ipc::ChannelAdd c{};
            c.alloc_id = 1;
            c.relayed = a.relayed_v4;
            c.peer = v4(static_cast<uint8_t>(100 + rng() % 100), static_cast<uint16_t>(20000 + ch));
            c.channel = static_cast<uint16_t>(0x4000 + ch);
            ap.apply(ipc::encode(c, ++seq));
        }
        ops++;
    }
    stop.store(true);
    reader.join();
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_GT(hits.load(), 1000u);
    EXPECT_GT(slot_hits.load(), 1000u);
    EXPECT_GT(ops - ap.stats().table_full, 1000u);
    // With the reader gone every retired value comes back: at most one value
    // per channel remains in use.
    t->reclaim();
    EXPECT_LE(t->channel_values_in_use(), kChannels);
    EXPECT_LE(t->channel_slots_in_use(), dp::Allocation::kSlots);
    delete t;
}

// Flow tables for an Applier test: 64 entries per family, 4 channels.
dp::FlowConfig small_config(const char* name, uint32_t max_allocations, uint32_t workers) {
    dp::FlowConfig fc;
    fc.name = name;
    fc.entries_v4 = 64;
    fc.entries_v6 = 64;
    fc.max_allocations = max_allocations;
    fc.max_channels = 4;
    fc.workers = workers;
    return fc;
}

// The relay's own IPv4 set (relay-to-relay, worker/route.cc): every address
// added is found, no other is, up to the most a relay can have (relayed +
// listening IPs), whatever their probe sequences collide on; the first two
// are what the express lane compares with; 0.0.0.0 is never own.
TEST(OwnIps4, HoldsEveryAddedAddressAndNoOther) {
    auto own = std::make_unique<dp::OwnIps4>();
    EXPECT_FALSE(own->has(0));
    own->add(0);
    EXPECT_EQ(own->n.load(), 0u);
    std::mt19937 rng(7);
    std::vector<uint32_t> added;
    // Half of them sharing a home word with another (the same top 8 bits of the hash).
    while (added.size() < dp::OwnIps4::kMax) {
        const uint32_t a = static_cast<uint32_t>(rng()) | 1;
        const bool collide = !added.empty() && added.size() % 2 == 1;
        if (collide && dp::OwnIps4::home(a) != dp::OwnIps4::home(added.back())) {
            continue;
        }
        if (std::find(added.begin(), added.end(), a) != added.end()) {
            continue;
        }
        own->add(a);
        own->add(a);  // twice: once in the set
        added.push_back(a);
        ASSERT_EQ(own->n.load(), added.size());
        for (uint32_t b : added) {
            ASSERT_TRUE(own->has(b)) << added.size();
        }
    }
    EXPECT_EQ(own->first[0].load(), added[0]);
    EXPECT_EQ(own->first[1].load(), added[1]);
    own->add(12345);  // full: refused, not found
    EXPECT_FALSE(own->has(12345));
    size_t others = 0;
    for (int k = 0; k < 100000; k++) {
        const uint32_t a = static_cast<uint32_t>(rng());
        if (std::find(added.begin(), added.end(), a) == added.end()) {
            others += own->has(a);
        }
    }
    EXPECT_EQ(others, 0u);
}

// The relay's own IPv6 addresses (relay-to-relay and the express lane,
// FlowTables::own_ip): every listening, relayed and external address is own
// once added, and no other is, not even one that shares its bit of the
// filter in front of the exact checks (own6_bits).
TEST(FlowTables, OwnIpv6AddressesAreOwnAndNoOthers) {
    ASSERT_TRUE(dptest::ensure_eal());
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(small_config("own6", 4, 1), &err);
    ASSERT_NE(t, nullptr) << err;
    std::mt19937 rng(5);
    auto random6 = [&] {
        std::array<uint8_t, 16> a{0xfd};
        for (size_t b = 1; b < 16; b++) {
            a[b] = static_cast<uint8_t>(rng());
        }
        return a;
    };
    std::vector<std::array<uint8_t, 16>> own;
    for (int kind = 0; kind < 3; kind++) {
        for (int k = 0; k < 3; k++) {
            const std::array<uint8_t, 16> a = random6();
            ASSERT_FALSE(t->own_ip(6, a.data()));
            if (kind == 0) {
                ASSERT_GE(t->add_listen(6, a.data(), rte_cpu_to_be_16(3478)), 0);
            } else if (kind == 1) {
                ASSERT_GE(t->relay_ip(6, a.data()), 0);
            } else {
                const std::array<uint8_t, 16> relay = own[3];  // a relayed IP behind the external one
                ASSERT_TRUE(t->set_nat(6, a.data(), relay.data()));
            }
            own.push_back(a);
            for (const auto& b : own) {
                ASSERT_TRUE(t->own_ip(6, b.data())) << kind << " " << k;
            }
        }
    }
    size_t others = 0, same_bit = 0;
    for (int k = 0; k < 200000; k++) {
        const std::array<uint8_t, 16> a = random6();
        for (const auto& b : own) {
            same_bit += dp::RelayPorts::home6(a.data()) == dp::RelayPorts::home6(b.data());
        }
        others += t->own_ip(6, a.data());
    }
    EXPECT_EQ(others, 0u);
    EXPECT_GT(same_bit, 1000u);  // the exact checks behind the filter were asked
    delete t;
}

// Relayed IPs as a worker finds them (RelayPorts::index_of, by hash since a
// relay with a million allocations has 16 or more): every IPv4 and IPv6
// relayed IP added names the index relay_ip() gave it, half of each family
// sharing a home word with another; no other address names one;
// a full set refuses more; a port set on one IP is found there and nowhere else.
TEST(RelayPorts, EveryRelayedIpFoundByItsIndexAndNoOther) {
    ASSERT_TRUE(dptest::ensure_eal());
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(small_config("relayips", 4, 1), &err);
    ASSERT_NE(t, nullptr) << err;
    const dp::RelayPorts& rp = *t->relay_ports;
    std::mt19937 rng(11);
    std::vector<uint32_t> v4s;  // network byte order, as in packets
    std::vector<std::array<uint8_t, 16>> v6s;
    std::vector<int> idx4, idx6;
    while (v4s.size() + v6s.size() < dp::RelayPorts::kMaxIps) {
        if (v4s.size() + v6s.size() >= 2 * dp::RelayPorts::kMaxIps / 3) {  // the last third IPv6
            std::array<uint8_t, 16> a{0xfd};
            for (size_t b = 1; b < 16; b++) {
                a[b] = static_cast<uint8_t>(rng());
            }
            if ((v6s.size() % 2 == 1 && dp::RelayPorts::home6(a.data()) != dp::RelayPorts::home6(v6s.back().data())) ||
                std::find(v6s.begin(), v6s.end(), a) != v6s.end()) {
                continue;
            }
            idx6.push_back(t->relay_ip(6, a.data()));
            ASSERT_GE(idx6.back(), 0);
            v6s.push_back(a);
            continue;
        }
        const uint32_t a = static_cast<uint32_t>(rng()) | 1;
        const bool collide = v4s.size() % 2 == 1;
        if ((collide && dp::RelayPorts::home4(a) != dp::RelayPorts::home4(v4s.back())) ||
            std::find(v4s.begin(), v4s.end(), a) != v4s.end()) {
            continue;
        }
        const int i = t->relay_ip(4, reinterpret_cast<const uint8_t*>(&a));
        ASSERT_GE(i, 0);
        EXPECT_EQ(t->relay_ip(4, reinterpret_cast<const uint8_t*>(&a)), i) << "added twice: one index";
        v4s.push_back(a);
        idx4.push_back(i);
    }
    for (size_t k = 0; k < v4s.size(); k++) {
        EXPECT_EQ(rp.index_of(4, reinterpret_cast<const uint8_t*>(&v4s[k])), static_cast<uint32_t>(idx4[k])) << k;
        EXPECT_TRUE(t->own_ip(4, reinterpret_cast<const uint8_t*>(&v4s[k])));
    }
    for (size_t k = 0; k < v6s.size(); k++) {
        EXPECT_EQ(rp.index_of(6, v6s[k].data()), static_cast<uint32_t>(idx6[k])) << k;
    }
    const uint32_t extra = 0x01020304;
    EXPECT_EQ(t->relay_ip(4, reinterpret_cast<const uint8_t*>(&extra)), -1) << "more than kMaxIps";
    EXPECT_EQ(rp.index_of(4, reinterpret_cast<const uint8_t*>(&extra)), UINT32_MAX);
    size_t others = 0;
    for (int k = 0; k < 100000; k++) {
        const uint32_t a = static_cast<uint32_t>(rng());
        if (std::find(v4s.begin(), v4s.end(), a) == v4s.end()) {
            others += rp.index_of(4, reinterpret_cast<const uint8_t*>(&a)) != UINT32_MAX;
        }
    }
    EXPECT_EQ(others, 0u);
    for (int k = 0; k < 100000; k++) {
        std::array<uint8_t, 16> a{0xfd};
        for (size_t b = 1; b < 16; b++) {
            a[b] = static_cast<uint8_t>(rng());
        }
        if (std::find(v6s.begin(), v6s.end(), a) == v6s.end()) {
            others += rp.index_of(6, a.data()) != UINT32_MAX;
        }
    }
    EXPECT_EQ(others, 0u);
    // An IPv4 address whose 4 bytes begin an IPv6 relayed IP is not that IP.
    EXPECT_EQ(rp.index_of(4, v6s[0].data()), UINT32_MAX);
    // A relayed port on the last IPv4 IP (the end of a probe chain): found
    // there, not on its colliding neighbour.
    const uint16_t port = rte_cpu_to_be_16(50000);
    ASSERT_GE(t->set_relayed(4, reinterpret_cast<const uint8_t*>(&v4s.back()), port, 3), 0);
    uint32_t alloc = UINT32_MAX;
    EXPECT_TRUE(rp.find(4, reinterpret_cast<const uint8_t*>(&v4s.back()), port, &alloc));
    EXPECT_EQ(alloc, 3u);
    EXPECT_FALSE(rp.find(4, reinterpret_cast<const uint8_t*>(&v4s[v4s.size() - 2]), port, &alloc));
    delete t;
}

// ipc::Settings through the Applier: a valid rule is stored where workers
// read it (FlowTables::tos_rule), inside a resync or not, counted as
// applied and answered with itself; an invalid one is refused, counted as
// malformed, not answered, and leaves the rule as it was.
TEST(ApplierSettings, ValidRulesAppliedInvalidRefused) {
    ASSERT_TRUE(dptest::ensure_eal());
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(small_config("settings", 4, 1), &err);
    ASSERT_NE(t, nullptr) << err;
    dp::Applier ap(*t);
    uint64_t seq = 0;
    int replies = 0;
    std::optional<ipc::Settings> last_ack;  // each valid Settings is answered with itself
    auto reply = [&](std::span<const uint8_t> r) {
        replies++;
        last_ack = ipc::decode<ipc::Settings>(r);
    };
    auto settings = [&](uint8_t keep, uint8_t set) {
        ipc::Settings m{};
        m.tos_keep = keep;
        m.tos_set = set;
        const auto b = ipc::encode(m, ++seq);
        return std::vector<uint8_t>(b.begin(), b.end());
    };
    EXPECT_EQ(t->tos_rule.load(), dp::kTosKeepAll);  // a new dataplane keeps the received byte
    EXPECT_EQ(dp::kTosKeepAll, 0x00ff);

    // Valid: every DSCP with ECN kept, and keep. Word: keep | set << 8.
    for (uint8_t dscp = 0; dscp < 64; dscp++) {
        const uint8_t set = static_cast<uint8_t>(dscp << 2);
        EXPECT_TRUE(ap.apply(settings(0x03, set), reply)) << int{dscp};
        EXPECT_EQ(t->tos_rule.load(), 0x0003 | set << 8) << int{dscp};
        ASSERT_TRUE(last_ack) << "no acknowledgement";
        EXPECT_EQ(last_ack->tos_keep, 0x03);
        EXPECT_EQ(last_ack->tos_set, set);
    }
    EXPECT_TRUE(ap.apply(settings(0xFF, 0), reply));
    EXPECT_EQ(t->tos_rule.load(), 0x00ff);
    // Also valid by the message's own rule (ECN kept, no bit both kept and
    // set), if not what today's control plane sends.
    EXPECT_TRUE(ap.apply(settings(0x0F, 0xA0), reply));
    EXPECT_EQ(t->tos_rule.load(), 0xA00f);
    EXPECT_EQ(ap.stats().applied, 66u);
    EXPECT_EQ(ap.stats().malformed, 0u);

    // In a resync, at once; kept through its end.
    ipc::ResyncBegin b{};
    b.generation = 3;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_TRUE(ap.apply(settings(0x03, 46 << 2), reply));
    EXPECT_EQ(t->tos_rule.load(), 0xB803);
    ipc::ResyncEnd e{};
    e.generation = 3;
    ASSERT_TRUE(ap.apply(ipc::encode(e, ++seq), reply));
    EXPECT_EQ(t->tos_rule.load(), 0xB803);
    EXPECT_EQ(ap.stats().resync_retried, 0u);  // Settings are no Add to retry

    // Invalid: ECN not kept (either bit), a bit both kept and set, padding,
    // a byte short or long (length field matching), another version, a
    // header length that disagrees with the datagram.
    std::vector<std::vector<uint8_t>> bad{settings(0xFC, 46 << 2), settings(0xFE, 0), settings(0xFD, 0),
                                          settings(0x00, 0),       settings(0xFF, 0xB8), settings(0x03, 0x01),
                                          settings(0x07, 0x04)};
    for (size_t i = 0; i < 6; i++) {
        std::vector<uint8_t> m = settings(0x03, 0);
        m[offsetof(ipc::Settings, pad) + i] = 0x40;
        bad.push_back(m);
    }
    std::vector<uint8_t> m = settings(0x03, 0);
    m.pop_back();
    m[4] = static_cast<uint8_t>(m.size());
    bad.push_back(m);
    m = settings(0x03, 0);
    m.push_back(0);
    m[4] = static_cast<uint8_t>(m.size());
    bad.push_back(m);
    m = settings(0x03, 0);
    m[0] = 2;
    bad.push_back(m);
    m = settings(0x03, 0);
    m.pop_back();  // header length still 24
    bad.push_back(m);
    for (size_t i = 0; i < bad.size(); i++) {
        EXPECT_FALSE(ap.apply(bad[i], reply)) << i;
        EXPECT_EQ(t->tos_rule.load(), 0xB803) << i;
    }
    EXPECT_EQ(ap.stats().malformed, bad.size());
    EXPECT_EQ(ap.stats().applied, 69u);
    EXPECT_EQ(replies, 67) << "one acknowledgement per valid Settings, none for the invalid ones";

    // A control plane that predates Settings (an older turn-relay after this
    // one) resyncs without them: its rule is "keep", not the last one's.
    b.generation = 4;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_EQ(t->tos_rule.load(), 0xB803) << "Settings came before the previous ResyncBegin";
    e.generation = 4;
    ASSERT_TRUE(ap.apply(ipc::encode(e, ++seq), reply));
    b.generation = 5;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_EQ(t->tos_rule.load(), dp::kTosKeepAll) << "a resync without Settings";
    // And a newer one again: its Settings before its ResyncBegin hold.
    EXPECT_TRUE(ap.apply(settings(0x03, 10 << 2), reply));
    b.generation = 6;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_EQ(t->tos_rule.load(), 0x2803);
    delete t;
}

// Per-allocation counters as the Applier reports them (CountersReport, in
// answer to a CountersRequest): every worker's AllocState line of the
// allocation's index summed, plus what earlier installs of the same id
// counted. The control plane turns each id's cumulative figures into deltas
// (controlplane/offload/ipc_server.cc), so an id must appear at most once per
// report and its figures must never go back, including when the control
// plane removes and re-adds it (RFC 8016 mobility, a dropped address family:
// a Del and an Add with the same id, or an Add with other addresses).
// Traffic is counted into the lines the way a worker does
// (Worker::alloc_state, worker/worker.h), at the index the allocation's
// kClient entry names.
class ApplierCounters : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(dptest::ensure_eal());
        std::string err;
        t_ = dp::FlowTables::create(small_config("counters", 8, 2), &err);  // a report sums both workers' lines
        ASSERT_NE(t_, nullptr) << err;
        ap_ = std::make_unique<dp::Applier>(*t_);
    }
    void TearDown() override {
        ap_.reset();
        delete t_;
    }

    // Allocation `id` of client 198.18.3.<client>:50000 on 198.18.3.1:3478,
    // relayed at 198.18.3.1:<relayed_port>.
    static ipc::AllocationAdd allocation(uint64_t id, uint8_t client, uint16_t relayed_port) {
        ipc::AllocationAdd a{};
        a.alloc_id = id;
        a.client = v4(client, 50000);
        a.listen = v4(1, 3478);
        a.relayed_v4 = v4(1, relayed_port);
        return a;
    }
    static ipc::AllocationCounters figures(uint64_t id, uint64_t to_peer_packets, uint64_t to_peer_bytes,
                                           uint64_t to_client_packets, uint64_t to_client_bytes, uint64_t dropped) {
        ipc::AllocationCounters c{};
        c.alloc_id = id;
        c.to_peer_packets = to_peer_packets;
        c.to_peer_bytes = to_peer_bytes;
        c.to_client_packets = to_client_packets;
        c.to_client_bytes = to_client_bytes;
        c.dropped_packets = dropped;
        return c;
    }

    void add(ipc::AllocationAdd m) { ASSERT_TRUE(ap_->apply(ipc::encode(m, ++seq_))); }
    void resync_begin(uint64_t generation) {
        ipc::ResyncBegin b{};
        b.generation = generation;
        ASSERT_TRUE(ap_->apply(ipc::encode(b, ++seq_)));
    }
    void resync_end(uint64_t generation) {
        ipc::ResyncEnd e{};
        e.generation = generation;
        ASSERT_TRUE(ap_->apply(ipc::encode(e, ++seq_)));
    }
    void del(uint64_t id) {
        ipc::AllocationDel d{};
        d.alloc_id = id;
        ASSERT_TRUE(ap_->apply(ipc::encode(d, ++seq_)));
    }

    // The index a worker finds for the allocation's client 5-tuple (its
    // kClient entry); UINT32_MAX when there is none.
    uint32_t index_of(const ipc::AllocationAdd& m) const { return client_index(*t_, m); }

    // Worker `w` relays traffic of the allocation at `idx`: as
    // Worker::alloc_state, its line starts from zero the first time it is
    // touched after the index was (re)used.
    void count(uint32_t w, uint32_t idx, const ipc::AllocationCounters& f) {
        ASSERT_LT(idx, t_->config().max_allocations);
        dp::AllocState& s = t_->state(w)[idx];
        const uint32_t e = t_->allocs[idx].epoch;
        if (s.epoch != e) {
            s = dp::AllocState{};
            s.epoch = e;
        }
        s.to_peer_packets += f.to_peer_packets;
        s.to_peer_bytes += f.to_peer_bytes;
        s.to_client_packets += f.to_client_packets;
        s.to_client_bytes += f.to_client_bytes;
        s.dropped_packets += f.dropped_packets;
    }

    // A CountersRequest's answer: every chunk decoded, the entries in order
    // (finals first); `finals` and `live` get them apart.
    std::vector<ipc::AllocationCounters> report() {
        std::vector<ipc::AllocationCounters> out;
        finals.clear();
        live.clear();
        bool last = false;
        ipc::CountersRequest rq{};
        EXPECT_TRUE(ap_->apply(ipc::encode(rq, ++seq_), [&](std::span<const uint8_t> b) {
            const auto r = ipc::decode<ipc::CountersReport>(b);
            EXPECT_TRUE(r) << "an answer that is not a CountersReport";
            if (!r) {
                return;
            }
            EXPECT_FALSE(last) << "a chunk after the last one";
            last = r->last != 0;
            EXPECT_TRUE(r->finals == 0 || live.empty()) << "a chunk of finals after live entries";
            out.insert(out.end(), r->entries, r->entries + r->count);
            (r->finals != 0 ? finals : live).insert((r->finals != 0 ? finals : live).end(), r->entries,
                                                     r->entries + r->count);
        }));
        EXPECT_TRUE(last) << "no final chunk";
        return out;
    }
    std::vector<ipc::AllocationCounters> finals, live;  // of the last report()

    static std::string str(const ipc::AllocationCounters& c) {
        std::ostringstream s;
        s << "{id " << c.alloc_id << ": to peer " << c.to_peer_packets << "/" << c.to_peer_bytes << ", to client "
          << c.to_client_packets << "/" << c.to_client_bytes << ", dropped " << c.dropped_packets << "}";
        return s.str();
    }
    static std::string str(const std::vector<ipc::AllocationCounters>& r) {
        if (r.empty()) {
            return "empty report";
        }
        std::ostringstream s;
        s << "report:";
        for (const auto& c : r) {
            s << " " << str(c);
        }
        return s.str();
    }
    // Exactly one entry for want.alloc_id, with want's figures.
    static ::testing::AssertionResult reported_once(const std::vector<ipc::AllocationCounters>& r,
                                                    const ipc::AllocationCounters& want) {
        const ipc::AllocationCounters* got = nullptr;
        size_t n = 0;
        for (const auto& c : r) {
            if (c.alloc_id == want.alloc_id) {
                got = &c;
                n++;
            }
        }
        if (n != 1) {
            return ::testing::AssertionFailure()
                   << "id " << want.alloc_id << " reported " << n << " times, want once as " << str(want) << "; "
                   << str(r);
        }
        if (std::memcmp(got, &want, sizeof want) != 0) {
            return ::testing::AssertionFailure() << "want " << str(want) << "; " << str(r);
        }
        return ::testing::AssertionSuccess();
    }
    static bool mentions(const std::vector<ipc::AllocationCounters>& r, uint64_t id) {
        for (const auto& c : r) {
            if (c.alloc_id == id) {
                return true;
            }
        }
        return false;
    }

    dp::FlowTables* t_ = nullptr;
    std::unique_ptr<dp::Applier> ap_;
    uint64_t seq_ = 0;
};

// One installed allocation: the report has one entry, both workers' lines
// summed; a report without new traffic repeats the cumulative figures.
TEST_F(ApplierCounters, LiveAllocationReportsBothWorkersSummed) {
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    const uint32_t idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 6, 600, 3, 300, 1));
    count(1, idx, figures(7, 4, 400, 1, 100, 1));
    auto r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 2)));
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 2)));
}

// Del then Add of the same id with the same addresses before the next
// report (the control plane re-announcing an allocation): one entry for the
// id, the old install's figures plus the new one's, and they keep growing
// over further re-adds and reports. Right after the re-add, before any new
// traffic, the figures are the old install's exactly: the new install does
// not count the old one's lines again, whether or not it got the same index
// (a worker's line of a reused index is stale until the worker touches it).
TEST_F(ApplierCounters, DelThenAddOfTheSameIdReportsOneCumulativeEntry) {
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    uint32_t idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 6, 600, 3, 300, 1));
    count(1, idx, figures(7, 4, 400, 1, 100, 0));
    auto r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 1)));

    del(7);
    EXPECT_EQ(index_of(a), UINT32_MAX);
    add(a);
    ASSERT_EQ(ap_->allocations(), 1u);
    idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 1))) << "nothing relayed since";

    count(1, idx, figures(7, 3, 300, 1, 100, 2));
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 13, 1300, 5, 500, 3)));

    // Traffic on both installs between two reports, re-added twice.
    count(0, idx, figures(7, 2, 200, 0, 0, 0));
    del(7);
    add(a);
    idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 1, 100, 1, 100, 0));
    del(7);
    add(a);
    idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(1, idx, figures(7, 0, 0, 2, 200, 1));
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 16, 1600, 8, 800, 4)));
    EXPECT_EQ(ap_->stats().finals_dropped, 0u);
}

// An Add for a known id with other addresses is another allocation under
// that id (a control plane restarted without its state numbers its own from
// 1 again; a moved allocation comes as a Del and an Add): the old install's
// final totals are reported apart, in the finals chunk, and the new one
// counts from zero.
TEST_F(ApplierCounters, AddWithOtherAddressesIsAnotherInstall) {
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    uint32_t idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 10, 1000, 4, 400, 0));
    auto r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(live, figures(7, 10, 1000, 4, 400, 0)));

    count(1, idx, figures(7, 1, 100, 0, 0, 1));  // not reported yet
    const ipc::AllocationAdd other = allocation(7, 11, 49152);
    add(other);
    EXPECT_EQ(ap_->allocations(), 1u);
    EXPECT_EQ(index_of(a), UINT32_MAX) << "the old client 5-tuple still names an allocation";
    idx = index_of(other);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 3, 300, 1, 100, 0));
    r = report();
    EXPECT_EQ(r.size(), 2u) << str(r);
    EXPECT_TRUE(reported_once(finals, figures(7, 11, 1100, 4, 400, 1)));
    EXPECT_TRUE(reported_once(live, figures(7, 3, 300, 1, 100, 0)));

    // The Del after it reports the new install's total once, as a final.
    count(1, idx, figures(7, 1, 50, 1, 50, 0));
    del(7);
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(finals, figures(7, 4, 350, 2, 150, 0)));
    r = report();
    EXPECT_TRUE(r.empty()) << str(r);
}

// Only a Del of the current control-plane connection lets an Add of the
// same id go on counting: what a resync sweeps (an allocation the new
// control plane did not re-add), and a Del from before a new resync, are
// finals of their own, and the next allocation under the id starts at zero.
TEST_F(ApplierCounters, SweptOrEarlierDeletedIdsAreNotContinued) {
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    count(0, index_of(a), figures(7, 10, 1000, 4, 400, 0));
    const ipc::AllocationAdd b = allocation(8, 12, 49160);
    add(b);
    count(1, index_of(b), figures(8, 6, 600, 2, 200, 0));
    auto r = report();
    EXPECT_EQ(live.size(), 2u) << str(r);

    // A new control plane without state: its resync re-adds neither, then
    // its own first allocations get ids 7 and 8 again.
    resync_begin(2);
    resync_end(2);
    const ipc::AllocationAdd a2 = allocation(7, 20, 49170);
    add(a2);
    count(0, index_of(a2), figures(7, 1, 10, 0, 0, 0));
    // And id 8: deleted by this control plane before the next resync.
    const ipc::AllocationAdd b2 = allocation(8, 21, 49171);
    add(b2);
    count(0, index_of(b2), figures(8, 2, 20, 0, 0, 0));
    del(8);
    resync_begin(3);
    add(a2);  // the live one re-added by this resync, as it is
    resync_end(3);
    const ipc::AllocationAdd b3 = allocation(8, 22, 49172);
    add(b3);
    count(0, index_of(b3), figures(8, 1, 5, 0, 0, 0));
    r = report();
    EXPECT_TRUE(reported_once(live, figures(7, 1, 10, 0, 0, 0))) << "the swept id 7 was continued";
    EXPECT_TRUE(reported_once(live, figures(8, 1, 5, 0, 0, 0))) << "a Del from before the resync was continued";
    EXPECT_EQ(finals.size(), 3u) << str(r);  // swept 7 and 8, then 8 deleted
}

// With finals_ full (a control plane that has not asked for counters for a
// while), a Del's final is not kept for the report, but an Add of the same
// id still continues its count.
TEST_F(ApplierCounters, FullFinalsStillLetADelAndAddContinue) {
    for (uint64_t id = 100; id < 100 + dp::Applier::kMaxFinals; ++id) {
        add(allocation(id, 30, 49180));
        del(id);
    }
    EXPECT_EQ(ap_->stats().finals_dropped, 0u);
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    count(0, index_of(a), figures(7, 10, 1000, 4, 400, 0));
    del(7);
    EXPECT_EQ(ap_->stats().finals_dropped, 1u);
    add(a);
    count(1, index_of(a), figures(7, 1, 100, 0, 0, 0));
    const auto r = report();
    EXPECT_TRUE(reported_once(live, figures(7, 11, 1100, 4, 400, 0)));
    EXPECT_EQ(finals.size(), dp::Applier::kMaxFinals) << "the earlier finals, and not 7's";
}

// A Del with no Add after it: the next report carries the allocation's final
// figures (including what was relayed after the previous report) once; the
// report after that does not name it.
TEST_F(ApplierCounters, DeletedAllocationReportsItsFinalOnce) {
    const ipc::AllocationAdd a = allocation(7, 10, 49152);
    add(a);
    const uint32_t idx = index_of(a);
    ASSERT_NE(idx, UINT32_MAX);
    count(0, idx, figures(7, 10, 1000, 4, 400, 0));
    auto r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 0)));

    count(1, idx, figures(7, 2, 200, 1, 100, 3));
    del(7);
    EXPECT_EQ(ap_->allocations(), 0u);
    EXPECT_EQ(index_of(a), UINT32_MAX);
    r = report();
    EXPECT_EQ(r.size(), 1u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 12, 1200, 5, 500, 3)));
    r = report();
    EXPECT_FALSE(mentions(r, 7)) << str(r);
    EXPECT_TRUE(r.empty()) << str(r);
    EXPECT_EQ(ap_->stats().finals_dropped, 0u);
}

// Different ids deleted and added between two reports (a new id may get a
// deleted one's index): each id once, with its own figures only.
TEST_F(ApplierCounters, DifferentIdsDeletedAndAddedAreReportedApart) {
    const ipc::AllocationAdd a7 = allocation(7, 10, 49152);
    const ipc::AllocationAdd a8 = allocation(8, 20, 49153);
    add(a7);
    add(a8);
    const uint32_t i7 = index_of(a7);
    const uint32_t i8 = index_of(a8);
    ASSERT_NE(i7, UINT32_MAX);
    ASSERT_NE(i8, UINT32_MAX);
    ASSERT_NE(i7, i8);
    count(0, i7, figures(7, 10, 1000, 4, 400, 1));
    count(1, i8, figures(8, 20, 2000, 8, 800, 0));
    auto r = report();
    EXPECT_EQ(r.size(), 2u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 10, 1000, 4, 400, 1)));
    EXPECT_TRUE(reported_once(r, figures(8, 20, 2000, 8, 800, 0)));

    count(1, i7, figures(7, 1, 100, 0, 0, 0));
    del(7);
    const ipc::AllocationAdd a9 = allocation(9, 30, 49154);
    add(a9);
    del(8);
    const ipc::AllocationAdd a10 = allocation(10, 40, 49155);
    add(a10);
    const uint32_t i9 = index_of(a9);
    const uint32_t i10 = index_of(a10);
    ASSERT_NE(i9, UINT32_MAX);
    ASSERT_NE(i10, UINT32_MAX);
    count(0, i9, figures(9, 5, 500, 2, 200, 0));
    count(1, i10, figures(10, 7, 700, 3, 300, 2));
    r = report();
    EXPECT_EQ(r.size(), 4u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(7, 11, 1100, 4, 400, 1)));
    EXPECT_TRUE(reported_once(r, figures(8, 20, 2000, 8, 800, 0)));
    EXPECT_TRUE(reported_once(r, figures(9, 5, 500, 2, 200, 0)));
    EXPECT_TRUE(reported_once(r, figures(10, 7, 700, 3, 300, 2)));
    r = report();
    EXPECT_EQ(r.size(), 2u) << str(r);
    EXPECT_TRUE(reported_once(r, figures(9, 5, 500, 2, 200, 0)));
    EXPECT_TRUE(reported_once(r, figures(10, 7, 700, 3, 300, 2)));
}

}  // namespace

// ipc::ExternalIps through the Applier (behind a 1:1 NAT): each family's
// pair becomes current in FlowTables::nat, the external IPs become own
// addresses, and the message is echoed once applied (the control plane
// withholds external-IP peers until then). Invalid ones are refused and not
// echoed; a full NatIps refuses a new pair (no echo, counted as
// table_full) while an old pair can still be made current; a resync
// without ExternalIps clears the current pairs but not the own addresses.
TEST(ApplierExternalIps, AppliedEchoedClearedAndBounded) {
    ASSERT_TRUE(dptest::ensure_eal());
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(small_config("extips", 4, 1), &err);
    ASSERT_NE(t, nullptr) << err;
    dp::Applier ap(*t);
    uint64_t seq = 0;
    std::vector<std::vector<uint8_t>> echoes;
    auto reply = [&](std::span<const uint8_t> r) { echoes.emplace_back(r.begin(), r.end()); };
    auto wire = [](const char* ip) { return ipc::WireAddress::from(*turn::Address::parse(ip)); };
    auto msg = [&](const char* ext4, const char* relay4, const char* ext6, const char* relay6) {
        ipc::ExternalIps m{};
        if (ext4 != nullptr) {
            m.external_v4 = wire(ext4);
            m.relay_v4 = wire(relay4);
        }
        if (ext6 != nullptr) {
            m.external_v6 = wire(ext6);
            m.relay_v6 = wire(relay6);
        }
        const auto b = ipc::encode(m, ++seq);
        return std::vector<uint8_t>(b.begin(), b.end());
    };
    auto ip4 = [](const char* s) {
        const turn::Address a = *turn::Address::parse(s);
        uint32_t v;
        std::memcpy(&v, a.ip.data(), 4);
        return v;
    };
    auto ip6 = [](const char* s) { return turn::Address::parse(s)->ip; };
    EXPECT_EQ(t->nat.current(4), nullptr);
    EXPECT_EQ(t->nat.current(6), nullptr);

    const auto both = msg("198.19.7.1:0", "198.18.0.1:0", "[fd00:7::1]:0", "[fd00::1]:0");
    ASSERT_TRUE(ap.apply(both, reply));
    ASSERT_EQ(echoes.size(), 1u);
    EXPECT_EQ(std::vector<uint8_t>(echoes[0].begin() + sizeof(ipc::Header), echoes[0].end()),
              std::vector<uint8_t>(both.begin() + sizeof(ipc::Header), both.end()))
        << "echoed unchanged but for the header's sequence number";
    ASSERT_NE(t->nat.current(4), nullptr);
    ASSERT_NE(t->nat.current(6), nullptr);
    EXPECT_EQ(std::memcmp(t->nat.current(4)->external, ip6("198.19.7.1").data(), 16), 0);
    EXPECT_EQ(std::memcmp(t->nat.current(4)->relay, ip6("198.18.0.1").data(), 16), 0);
    EXPECT_EQ(std::memcmp(t->nat.current(6)->external, ip6("fd00:7::1").data(), 16), 0);
    EXPECT_EQ(std::memcmp(t->nat.current(6)->relay, ip6("fd00::1").data(), 16), 0);
    EXPECT_TRUE(t->own_ip(4, ip6("198.19.7.1").data()));
    EXPECT_TRUE(t->own_ip(6, ip6("fd00:7::1").data()));
    EXPECT_FALSE(t->own_ip(4, ip6("198.19.7.2").data()));
    EXPECT_FALSE(t->own_ip(6, ip6("fd00:7::2").data()));
    EXPECT_TRUE(t->own4.has(ip4("198.19.7.1")));

    // Invalid: half a pair, a family mismatch, the relay IP itself, a port,
    // an unspecified IP, no family at all. None applied, none echoed.
    std::vector<std::vector<uint8_t>> bad{msg(nullptr, nullptr, nullptr, nullptr),
                                          msg("198.19.7.9:0", "198.19.7.9:0", nullptr, nullptr),
                                          msg("198.19.7.9:1", "198.18.0.1:0", nullptr, nullptr),
                                          msg("198.19.7.9:0", "198.18.0.1:5", nullptr, nullptr),
                                          msg("0.0.0.0:0", "198.18.0.1:0", nullptr, nullptr),
                                          msg(nullptr, nullptr, "[::]:0", "[fd00::1]:0"),
                                          msg("[fd00:7::9]:0", "[fd00::1]:0", nullptr, nullptr)};
    std::vector<uint8_t> half = msg("198.19.7.9:0", "198.18.0.1:0", nullptr, nullptr);
    std::memset(half.data() + offsetof(ipc::ExternalIps, relay_v4), 0, sizeof(ipc::WireAddress));
    bad.push_back(half);
    std::vector<uint8_t> cross = msg(nullptr, nullptr, "[fd00:7::9]:0", "[fd00::1]:0");
    std::memcpy(cross.data() + offsetof(ipc::ExternalIps, external_v4), cross.data() + offsetof(ipc::ExternalIps, external_v6),
                sizeof(ipc::WireAddress));
    bad.push_back(cross);
    const auto malformed0 = ap.stats().malformed;
    for (size_t i = 0; i < bad.size(); i++) {
        EXPECT_FALSE(ap.apply(bad[i], reply)) << i;
    }
    EXPECT_EQ(ap.stats().malformed, malformed0 + bad.size());
    EXPECT_EQ(echoes.size(), 1u);
    EXPECT_EQ(std::memcmp(t->nat.current(4)->external, ip6("198.19.7.1").data(), 16), 0);
    EXPECT_FALSE(t->own_ip(4, ip6("198.19.7.9").data()));

    // IPv4 only: IPv6's pair is no longer current (still an own address).
    ASSERT_TRUE(ap.apply(msg("198.19.7.1:0", "198.18.0.1:0", nullptr, nullptr), reply));
    EXPECT_EQ(echoes.size(), 2u);
    EXPECT_NE(t->nat.current(4), nullptr);
    EXPECT_EQ(t->nat.current(6), nullptr);
    EXPECT_TRUE(t->own_ip(6, ip6("fd00:7::1").data()));

    // NatIps holds kMax pairs over the process's life: 2 used, 2 more fit,
    // the next is refused (no echo, and no pair of that family current: the
    // control plane that sent it treats the old external IP as any peer), an
    // old one is still taken.
    ASSERT_EQ(dp::NatIps::kMax, 4u);
    ASSERT_TRUE(ap.apply(msg("198.19.7.2:0", "198.18.0.1:0", nullptr, nullptr), reply));
    ASSERT_TRUE(ap.apply(msg("198.19.7.3:0", "198.18.0.1:0", nullptr, nullptr), reply));
    EXPECT_EQ(echoes.size(), 4u);
    const auto full0 = ap.stats().table_full;
    EXPECT_TRUE(ap.apply(msg("198.19.7.4:0", "198.18.0.1:0", nullptr, nullptr), reply)) << "valid, if not applied";
    EXPECT_EQ(echoes.size(), 4u) << "a pair NatIps has no room for is not echoed";
    EXPECT_EQ(ap.stats().table_full, full0 + 1);
    EXPECT_EQ(t->nat.current(4), nullptr) << "198.19.7.3 stayed current after a refused pair";
    EXPECT_FALSE(t->own_ip(4, ip6("198.19.7.4").data()));
    // And in the same message as a pair that fits: that one applies, the
    // refused family has none, no echo.
    ASSERT_TRUE(ap.apply(msg("198.19.7.4:0", "198.18.0.1:0", "[fd00:7::1]:0", "[fd00::1]:0"), reply));
    EXPECT_EQ(echoes.size(), 4u);
    EXPECT_EQ(t->nat.current(4), nullptr);
    ASSERT_NE(t->nat.current(6), nullptr);
    EXPECT_EQ(ap.stats().table_full, full0 + 2);
    // The resync that follows keeps it so (the refused ExternalIps came before it).
    {
        ipc::ResyncBegin rb{};
        rb.generation = 2;
        ASSERT_TRUE(ap.apply(ipc::encode(rb, ++seq), reply));
        EXPECT_EQ(t->nat.current(4), nullptr);
        EXPECT_NE(t->nat.current(6), nullptr);
    }
    ASSERT_TRUE(ap.apply(both, reply));
    EXPECT_EQ(echoes.size(), 5u);
    EXPECT_EQ(std::memcmp(t->nat.current(4)->external, ip6("198.19.7.1").data(), 16), 0);
    EXPECT_NE(t->nat.current(6), nullptr);

    // A resync with ExternalIps before it keeps them; one without clears them.
    ipc::ResyncBegin b{};
    b.generation = 3;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_NE(t->nat.current(4), nullptr) << "ExternalIps came before this ResyncBegin";
    b.generation = 4;
    ASSERT_TRUE(ap.apply(ipc::encode(b, ++seq), reply));
    EXPECT_EQ(t->nat.current(4), nullptr);
    EXPECT_EQ(t->nat.current(6), nullptr);
    EXPECT_TRUE(t->own_ip(4, ip6("198.19.7.1").data())) << "own addresses are never dropped";
    delete t;
}

// A deleted key's slot waits in its hash's defer queue (an eighth of the
// table) for a grace period. Deleting more keys than that while a worker
// reports no quiescent state must not lose the slots that did not fit: the
// table keeps its whole capacity.
namespace {

// Adds n permission keys from b_ip `base` on; how many the table took (and
// those keys, in `keys` when given).
size_t fill(dp::FlowTables* t, uint32_t base, uint32_t n, std::vector<dp::Key4>* keys) {
    size_t ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        dp::Key4 k{};
        k.a_ip = 0x0100A8C0;
        k.b_ip = base + i;
        k.kind = dp::KeyKind::kPermission;
        if (t->add(k, dp::inline_data(1, 0)) == 0) {
            ok++;
            if (keys != nullptr) {
                keys->push_back(k);
            }
        }
    }
    return ok;
}

// How many keys a table of 1024 takes after 900 were added and deleted while
// its one worker (QSBR thread 0, another thread) reported quiescent states
// all along, or (reader_stalls) none until the deletes were done. The stalled
// worker resumes after 100 ms anyway: the deletes may wait for it.
size_t capacity_after_churn(const char* name, bool reader_stalls) {
    dp::FlowConfig fc;
    fc.name = name;
    fc.entries_v4 = 1024;
    fc.entries_v6 = 64;
    fc.max_allocations = 8;
    fc.max_channels = 8;
    fc.workers = 1;
    fc.client_cache = false;
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(fc, &err);
    EXPECT_NE(t, nullptr) << err;
    if (t == nullptr) {
        return 0;
    }
    std::vector<dp::Key4> keys;
    fill(t, 0x10000000, 900, &keys);

    std::atomic<bool> online{false}, deleted{false}, stop{false};
    std::thread worker([&] {
        rte_rcu_qsbr_thread_register(t->rcu, 0);
        rte_rcu_qsbr_thread_online(t->rcu, 0);
        online.store(true);
        const auto resume = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
        while (reader_stalls && !deleted.load() && std::chrono::steady_clock::now() < resume) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        while (!stop.load()) {
            rte_rcu_qsbr_quiescent(t->rcu, 0);
            std::this_thread::yield();
        }
        rte_rcu_qsbr_thread_offline(t->rcu, 0);
        rte_rcu_qsbr_thread_unregister(t->rcu, 0);
    });
    while (!online.load()) {  // before the first delete
        std::this_thread::yield();
    }
    for (const dp::Key4& k : keys) {
        t->del(k);
    }
    deleted.store(true);
    rte_rcu_qsbr_synchronize(t->rcu, RTE_QSBR_THRID_INVALID);  // every deleted slot reclaimable now
    const size_t cap = fill(t, 0x20000000, 1024, nullptr);
    stop.store(true);
    worker.join();
    delete t;
    return cap;
}

TEST(FlowTables, DeletesBeyondTheHashDeferQueueLoseNoCapacity) {
    ASSERT_TRUE(dptest::ensure_eal());
    const size_t normal = capacity_after_churn("dqchurn_a", false);
    const size_t stalled = capacity_after_churn("dqchurn_b", true);
    EXPECT_EQ(normal, 1024u);
    EXPECT_EQ(stalled, normal) << "key slots lost for good";
}

}  // namespace
