// The specialised ChannelData rewrites (rewrite44, rewrite66) against the
// generic one (rewrite.cc's rewrite_one + push_vlan, through
// rewrite_generic_only) on the same packets, byte for byte, and the UDP
// checksum they write against one summed here from scratch. The stages and
// the express lane both use the specialisations, so the lane-against-stages
// test (pipeline_test.cc) cannot tell a wrong one; the golden cases check a
// few layouts, this the space: both directions, tagged and untagged frames
// in and out, ChannelData padding tails of 0-11 bytes, odd and even lengths,
// up to 1400 bytes of data, any headroom that fits, traffic class / TOS,
// flow label, hop limit / TTL and the relay's TOS rule, and received
// checksums right or wrong (a wrong one stays wrong by the same amount).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "flow/tables.h"
#include "worker/rewrite44.h"
#include "worker/rewrite66.h"
#include "worker/worker.h"

namespace dptest {
bool ensure_eal();
}

namespace {

// One's complement sum of n bytes from p as 16-bit big-endian words.
uint32_t sum_be(const uint8_t* p, size_t n, uint32_t s = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) {
        s += uint32_t{p[i]} << 8 | p[i + 1];
    }
    if ((n & 1) != 0) {
        s += uint32_t{p[n - 1]} << 8;
    }
    return s;
}

// The UDP datagram's checksum over its pseudo-header, header (checksum
// field included) and data, folded and complemented: 0 when it is right.
uint16_t udp_check(const uint8_t* l3, uint8_t family) {
    const uint8_t* udp = l3 + (family == 4 ? 20 : 40);
    const uint32_t ulen = uint32_t{udp[4]} << 8 | udp[5];
    uint32_t s = family == 4 ? sum_be(l3 + 12, 8) : sum_be(l3 + 8, 32);
    s = sum_be(udp, ulen, s + ulen + 17);
    while ((s >> 16) != 0) {
        s = (s & 0xffff) + (s >> 16);
    }
    return static_cast<uint16_t>(~s);
}

class SpecialisedRewrite : public ::testing::TestWithParam<int> {};

TEST_P(SpecialisedRewrite, ChannelDataMatchesTheGenericRewrite) {
    const auto fam = static_cast<uint8_t>(GetParam());
    ASSERT_TRUE(dptest::ensure_eal());
    const std::string name = "rwpool" + std::to_string(fam);
    rte_mempool* pool = rte_pktmbuf_pool_create(name.c_str(), 8, 0, 0, 2048 + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
    ASSERT_NE(pool, nullptr);
    dp::FlowConfig fc;
    fc.name = "rw" + std::to_string(fam);
    fc.entries_v4 = 64;
    fc.entries_v6 = 64;
    fc.max_allocations = 4;
    fc.max_channels = 4;
    fc.workers = 1;
    std::string err;
    dp::FlowTables* t = dp::FlowTables::create(fc, &err);
    ASSERT_NE(t, nullptr) << err;
    std::mt19937 rng(29 + fam);
    auto byte = [&] { return static_cast<uint8_t>(rng()); };
    uint8_t relay[16];
    for (uint8_t& b : relay) {
        b = byte();
    }
    ASSERT_GE(t->relay_ip(fam, relay), 0);
    auto listen = std::make_unique<dp::ListenSet>();
    for (uint32_t i = 0; i < 3; i++) {
        for (uint8_t& b : listen->v6_ip[i]) {
            b = byte();
        }
        listen->v4_ip[i] = static_cast<uint32_t>(rng());
        listen->v6_port[i] = listen->v4_port[i] = static_cast<uint16_t>(rng());
    }
    listen->n4 = listen->n6 = 3;
    // The one allocation, zeroed as the tables' are (Allocation has no constructor).
    std::unique_ptr<dp::Allocation, decltype(&std::free)> allocs(
        static_cast<dp::Allocation*>(std::aligned_alloc(alignof(dp::Allocation), sizeof(dp::Allocation))), &std::free);
    std::memset(static_cast<void*>(allocs.get()), 0, sizeof(dp::Allocation));
    auto w = std::make_unique<dp::Worker>();
    w->flows = t;
    for (uint16_t port = 0; port < dp::kMaxPorts; port++) {
        uint64_t mac = 0;
        for (uint8_t& b : w->cfg.port_mac[port].addr_bytes) {
            b = byte();
        }
        std::memcpy(&mac, w->cfg.port_mac[port].addr_bytes, 6);
        w->eth_src4[port] = mac | uint64_t{rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)} << 48;
        w->eth_src6[port] = mac | uint64_t{rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)} << 48;
    }
    const uint16_t iph = fam == 4 ? 20 : 40;
    size_t mismatches = 0, bad_checksums = 0, checked = 0;
    for (int iter = 0; iter < 100000; iter++) {
        dp::Allocation& a = *allocs;
        a.family = fam;
        a.listen = static_cast<uint8_t>(rng() % 3);
        a.client_port = static_cast<uint16_t>(rng());
        for (uint8_t& b : a.client_ip) {
            b = byte();
        }
        if (fam == 4) {
            a.relayed4_port = static_cast<uint16_t>(rng() | 1);
            std::memcpy(&a.v4.ip, relay, 4);
        } else {
            a.relayed4_port = 0;
            a.relayed6_ip = 0;
            a.relayed6_port = static_cast<uint16_t>(rng() | 1);
        }
        const bool to_peer = rng() % 2 == 0;
        const uint16_t data_len = static_cast<uint16_t>(rng() % 8 == 0 ? rng() % 1400 : rng() % 40);
        const uint16_t tail = to_peer && rng() % 3 == 0 ? static_cast<uint16_t>(rng() % 12) : 0;
        const uint16_t plen = static_cast<uint16_t>(to_peer ? 4 + data_len + tail : data_len);
        const uint16_t l2 = rng() % 4 == 0 ? 18 : 14;  // received tagged or not
        std::vector<uint8_t> f(l2 + iph + 8 + plen + rng() % 5);  // Ethernet padding after the datagram
        for (uint8_t& b : f) {
            b = byte();
        }
        uint8_t* ip = f.data() + l2;
        uint8_t* udp = ip + iph;
        uint8_t* pl = udp + 8;
        const uint16_t ulen = static_cast<uint16_t>(8 + plen);
        if (fam == 4) {
            ip[0] = 0x45;
            ip[2] = static_cast<uint8_t>((iph + ulen) >> 8);
            ip[3] = static_cast<uint8_t>(iph + ulen);
            ip[8] = static_cast<uint8_t>(2 + rng() % 254);
            ip[9] = 17;
        } else {
            ip[0] = static_cast<uint8_t>(0x60 | (byte() & 0x0f));
            ip[4] = static_cast<uint8_t>(ulen >> 8);
            ip[5] = static_cast<uint8_t>(ulen);
            ip[6] = 17;
            ip[7] = static_cast<uint8_t>(2 + rng() % 254);
        }
        udp[4] = static_cast<uint8_t>(ulen >> 8);
        udp[5] = static_cast<uint8_t>(ulen);
        if (to_peer) {
            pl[0] = static_cast<uint8_t>(0x40 | (byte() & 0x3f));
            pl[2] = static_cast<uint8_t>(data_len >> 8);
            pl[3] = static_cast<uint8_t>(data_len);
        }
        const bool valid = rng() % 4 != 0;
        if (valid) {
            udp[6] = udp[7] = 0;
            uint16_t ck = udp_check(ip, fam);
            ck = ck == 0 ? 0xffff : ck;
            udp[6] = static_cast<uint8_t>(ck >> 8);
            udp[7] = static_cast<uint8_t>(ck);
        } else if (udp[6] == 0 && udp[7] == 0) {
            udp[7] = 1;  // a wrong checksum, not IPv4's "none"
        }
        dp::Pkt q0;  // (Pkt zeroes nothing: every field a rewrite reads is set here)
        q0.family = q0.out_family = fam;
        q0.kind = to_peer ? dp::Kind::kToPeerChannel : dp::Kind::kToClientChannel;
        q0.alloc = 0;
        q0.plen = plen;
        q0.data_off = to_peer ? 4 : 0;
        q0.data_len = data_len;
        q0.prefix_len = to_peer ? 0 : 4;
        q0.pad_len = 0;
        if (to_peer) {
            std::memcpy(&q0.channel_be, pl, 2);
        } else {
            q0.channel_be = static_cast<uint16_t>(0x40 | (byte() & 0x3f) | byte() << 8);
        }
        q0.peer_port_be = static_cast<uint16_t>(rng());
        for (uint8_t& b : q0.peer_ip) {
            b = byte();
        }
        new (&q0.nh) dp::NextHop();
        for (uint8_t& b : q0.nh.mac.addr_bytes) {
            b = byte();
        }
        q0.nh.port = static_cast<uint16_t>(rng() % dp::kMaxPorts);
        q0.nh.vlan = rng() % 3 == 0 ? static_cast<uint16_t>(1 + rng() % 4094) : 0;
        const auto headroom = static_cast<uint16_t>(8 + rng() % 120);
        w->tos_rule = dp::pack_tos_rule(rng() % 2 == 0 ? 0xff : 0x03, rng() % 2 == 0 ? 0 : static_cast<uint8_t>((rng() % 64) << 2));
        std::vector<uint8_t> out[2];
        uint16_t off[2];
        for (int generic = 0; generic < 2; generic++) {
            rte_mbuf* m = rte_pktmbuf_alloc(pool);
            ASSERT_NE(m, nullptr);
            m->data_off = headroom;
            std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
            dp::Pkt q = q0;
            q.m = m;
            uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
            q.l3 = d + l2;
            q.udp = reinterpret_cast<rte_udp_hdr*>(d + l2 + iph);
            const dp::RewriteCtx c = dp::rewrite_ctx(*w, allocs.get(), listen.get());
            if (generic != 0) {
                dp::rewrite_generic_only(c, q);
            } else if (fam == 4) {
                to_peer ? dp::rewrite44<dp::Kind::kToPeerChannel>(c, q) : dp::rewrite44<dp::Kind::kToClientChannel>(c, q);
            } else {
                to_peer ? dp::rewrite66<dp::Kind::kToPeerChannel>(c, q) : dp::rewrite66<dp::Kind::kToClientChannel>(c, q);
            }
            EXPECT_EQ(q.next, dp::Next::kTx);
            const uint8_t* o = rte_pktmbuf_mtod(m, const uint8_t*);
            out[generic].assign(o, o + m->data_len);
            off[generic] = m->data_off;
            if (generic == 0 && valid) {
                checked++;
                bad_checksums += udp_check(o + (q.nh.vlan != 0 ? 18 : 14), fam) != 0;
            }
            rte_pktmbuf_free(m);
        }
        if ((out[0] != out[1] || off[0] != off[1]) && mismatches++ < 5) {
            size_t k = 0;
            while (k < std::min(out[0].size(), out[1].size()) && out[0][k] == out[1][k]) {
                k++;
            }
            ADD_FAILURE() << "iteration " << iter << (to_peer ? " to the peer" : " to the client") << ", data "
                          << data_len << ", tail " << tail << ", VLAN " << q0.nh.vlan << ": first difference at byte "
                          << k << ", sizes " << out[0].size() << " / " << out[1].size() << ", data_off " << off[0]
                          << " / " << off[1];
        }
    }
    EXPECT_EQ(mismatches, 0u);
    EXPECT_EQ(bad_checksums, 0u);
    EXPECT_GT(checked, 50000u);
    delete t;
    rte_mempool_free(pool);
}

INSTANTIATE_TEST_SUITE_P(Families, SpecialisedRewrite, ::testing::Values(4, 6),
                         [](const auto& i) { return i.param == 4 ? std::string("IPv4") : std::string("IPv6"); });

}  // namespace
