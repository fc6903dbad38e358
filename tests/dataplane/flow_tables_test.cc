// Concurrency of the flow tables: one writer (the test thread, as the main
// lcore) rebinds and deletes channels through the Applier while a reader
// thread (as a worker) looks them up lock-free and reports quiescent states.
// A value reclaimed too early would be reused for another channel and show
// the reader a peer port that belongs to a different key; the same for a
// channel slot in the allocation's line rewritten too early.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <optional>
#include <random>
#include <span>
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
            {
                dp::Key4 k{};
                std::memcpy(&k.a_ip, a.listen.ip, 4);
                std::memcpy(&k.b_ip, a.client.ip, 4);
                k.a_port = rte_cpu_to_be_16(a.listen.port);
                k.b_port = rte_cpu_to_be_16(a.client.port);
                k.kind = dp::KeyKind::kClient;
                void* d = nullptr;
                if (rte_hash_lookup_data(t->h4, &k, &d) >= 0) {
                    const dp::Allocation& al = t->allocs[dp::inline_alloc(d)];
                    for (const dp::ChanSlot& s : al.slots) {
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

// ipc::Settings through the Applier: a valid rule is stored where workers
// read it (FlowTables::tos_rule), inside a resync or not, and counted as
// applied; an invalid one is refused, counted as malformed, and leaves the
// rule as it was. Nothing is answered.
TEST(ApplierSettings, ValidRulesAppliedInvalidRefused) {
    ASSERT_TRUE(dptest::ensure_eal());
    dp::FlowConfig fc;
    fc.name = "settings";
    fc.entries_v4 = 64;
    fc.entries_v6 = 64;
    fc.max_allocations = 4;
    fc.max_channels = 4;
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(fc, &err);
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

}  // namespace
