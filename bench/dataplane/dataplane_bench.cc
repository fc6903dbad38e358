// Dataplane throughput benchmark (issue 4 "Figures", DESIGN.md "Measuring
// the dataplane"). One worker in one process: a net_pcap port with
// infinite_rx=1 replays a generated capture (fresh mbufs per packet), the
// real pipeline (dp::process_burst) forwards to a net_null port. Side by side
// in the same run, a plain rx -> tx loop on the same ports gives the ceiling.
// For each fast-path case and flow count it reports TSC cycles per packet,
// Mpps, and dataplane memory per flow (malloc-heap bytes of the flow tables
// divided by the flows they were sized for).
//
//   dataplane_bench [--flows 1000,10000,...] [--cases cd,send,peer_cd,peer_data,r2r]
//                   [--runs 5] [--packets 4000000] [--dir /tmp] [--host-nexthops] [--kernel-routes] [--gateway-entry]
//                   [--no-client-cache] [--no-express] [--vlan ID] [--limit BPS]
//                   [--family 4|6] -- <EAL args>
//
// r2r (not in the default set): relay to relay. Flows pair up (i, i ^ 1);
// each allocation has a second channel (0x4002) bound to its partner's
// relayed address and a permission for its IP, and the capture is every
// client's ChannelData on it: the dataplane takes each packet from one
// allocation to the other and out to the partner's client (two forwards per
// received packet, so fwd_ok reads 200%; worker/route.cc own_destination).
// Installed only when r2r is measured (a hash entry more per flow).
//
// --no-express sends every packet through the stages (no express lane,
// dataplane/worker/express.cc), to compare the two.
// --no-client-cache runs the workers without their client cache (every
// client packet through the rte_hash bulk lookup), to measure what it gives.
// --host-nexthops installs a next-hop entry per client and peer (else only
// the default route). --kernel-routes gives the table what a relay node's
// kernel mirror gives it: the gateway's host entry and the routes more
// specific than the default that the node has (its connected subnet, and
// for IPv6 fe80::/64 too), none covering a flow, so that every packet is
// looked up, misses, and is checked against them before it takes the
// default (nexthop/nexthop.h covered()). --gateway-entry gives it the
// gateway's host entry alone, no routes (what the table held on a relay node
// before routes were mirrored: every destination looked up, and missed).
// --vlan puts every next hop on that 802.1Q VLAN
// (forwarded frames leave tagged). --limit gives every allocation a bandwidth
// limit of BPS bits/s (choose one the run never reaches, e.g. 1e12, to
// measure what policing costs a packet; one worker, so the shared clock's
// line never moves between cores: bandwidth_contention.cc measures that).
// --family 6 makes every address IPv6 (fd00::/8; clients, relayed
// addresses and peers as with IPv4, 50,000 relayed ports per relayed IP):
// the IPv6 fast path, which has no express lane, so every packet goes
// through the stages; its allocations have only an IPv6 relayed address, so
// each flow's channel sits in the allocation's one IPv6 slot.
// After each client case a "#" line gives the worker's
// client-cache miss rate over the timed runs (flow/client_cache.h).
//
// Under callgrind use --callgrind (one short run, plain loop skipped) and
// --toggle-collect='dp::process_burst*' to count the pipeline's instructions.
#include <pcap/pcap.h>
#include <rte_net_crc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/dpdk.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "ipc/protocol.h"
#include "ipc_messages.h"
#include "nexthop/nexthop.h"
#include "packet_builder.h"
#include "worker/packet.h"
#include "worker/pipeline.h"

namespace ipc = turn::ipc;
using dptest::Bytes;
using turn::Address;

namespace {

const dptest::Mac kPortMac{0x02, 0, 0, 0, 0, 0x01};
const dptest::Mac kGatewayMac{0x02, 0, 0, 0, 0, 0xfe};
const dptest::Mac kHostMac{0x02, 0, 0, 0, 0, 0xaa};
constexpr uint16_t kChannel = 0x4001;
constexpr uint16_t kChannelR2r = 0x4002;  // r2r: to the partner's relayed address
constexpr size_t kPayload = 120;  // bytes of media per packet (a 20 ms Opus frame is ~80-160)

// Flow i's addresses, all distinct, inside 198.18.0.0/15 (never sent anywhere:
// the capture is replayed into a null port).
struct FlowAddrs {
    Address client, listen, relayed, peer;
};
Address v4(uint32_t ip, uint16_t port) { return Address::v4(ip, port); }
// fd00:0:SS:NN::LLLL (segment 3 `s`, segment 4 `n`, the last 32 bits `low`).
Address v6(uint16_t s, uint16_t n, uint32_t low, uint16_t port) {
    uint8_t b[16] = {0xfd, 0, 0, 0, static_cast<uint8_t>(s >> 8), static_cast<uint8_t>(s), static_cast<uint8_t>(n >> 8),
                     static_cast<uint8_t>(n)};
    b[12] = static_cast<uint8_t>(low >> 24);
    b[13] = static_cast<uint8_t>(low >> 16);
    b[14] = static_cast<uint8_t>(low >> 8);
    b[15] = static_cast<uint8_t>(low);
    return Address::v6(b, port);
}
int g_family = 4;  // --family
FlowAddrs flow(uint32_t i) {
    FlowAddrs f;
    if (g_family == 6) {
        f.client = v6(0x18, 0, 2 + i, 10000);
        f.listen = v6(0x19, 0xff, 1, 3478);
        f.relayed = v6(0x19, static_cast<uint16_t>(i / 50000), 1, static_cast<uint16_t>(10000 + i % 50000));
        f.peer = v6(0x19, 0x80, i, static_cast<uint16_t>(20000 + 2 * (i / 16384)));
        return f;
    }
    f.client = v4((198u << 24) | (18u << 16) | (2 + i % 60000), static_cast<uint16_t>(10000 + i / 60000));
    f.listen = v4((198u << 24) | (19u << 16) | (255u << 8) | 1, 3478);
    f.relayed = v4((198u << 24) | (19u << 16) | ((i / 50000) << 8) | 1, static_cast<uint16_t>(10000 + i % 50000));
    f.peer = v4((198u << 24) | (19u << 16) | ((128 + (i / 256) % 64) << 8) | (i % 256),
                static_cast<uint16_t>(20000 + 2 * (i / 16384)));
    return f;
}

enum class Case { kCd, kSend, kPeerCd, kPeerData, kR2r };
constexpr Case kAllCases[] = {Case::kCd, Case::kSend, Case::kPeerCd, Case::kPeerData, Case::kR2r};
const char* case_name(Case c) {
    switch (c) {
    case Case::kCd: return "cd";
    case Case::kSend: return "send";
    case Case::kPeerCd: return "peer_cd";
    case Case::kPeerData: return "peer_data";
    default: return "r2r";
    }
}

Bytes packet(Case c, uint32_t i) {
    const FlowAddrs a = flow(i);
    dptest::Frame f;
    f.dst_mac = kPortMac;
    f.src_mac = kHostMac;
    f.ttl = 60;
    f.tos = 0xb8;
    const Bytes data = dptest::pattern(kPayload, static_cast<uint8_t>(i));
    switch (c) {
    case Case::kCd:
        f.src = a.client;
        f.dst = a.listen;
        f.payload = dptest::channel_data(kChannel, data);
        break;
    case Case::kSend: {
        std::array<uint8_t, 12> tx{};
        std::memcpy(tx.data(), &i, 4);
        f.src = a.client;
        f.dst = a.listen;
        f.payload = dptest::send_indication(tx, a.peer, data, true);
        break;
    }
    case Case::kPeerCd:
        f.src = a.peer;
        f.dst = a.relayed;
        f.payload = data;
        break;
    case Case::kPeerData:
        f.src = a.peer.with_port(static_cast<uint16_t>(a.peer.port + 1));  // permitted IP, no channel
        f.dst = a.relayed;
        f.payload = data;
        break;
    case Case::kR2r:
        f.src = a.client;
        f.dst = a.listen;
        f.payload = dptest::channel_data(kChannelR2r, data);
        break;
    }
    return dptest::build(f);
}

// A capture of `count` packets over `flows` flows in random order.
bool write_pcap(const std::string& path, Case c, uint32_t flows, uint32_t count) {
    pcap_t* p = pcap_open_dead(DLT_EN10MB, 65535);
    pcap_dumper_t* d = pcap_dump_open(p, path.c_str());
    if (d == nullptr) {
        std::fprintf(stderr, "pcap_dump_open %s: %s\n", path.c_str(), pcap_geterr(p));
        pcap_close(p);
        return false;
    }
    std::vector<uint32_t> order(count);
    for (uint32_t k = 0; k < count; k++) {
        order[k] = k % flows;
    }
    std::mt19937 rng(42);
    std::shuffle(order.begin(), order.end(), rng);
    for (uint32_t k = 0; k < count; k++) {
        const Bytes b = packet(c, order[k]);
        pcap_pkthdr h{};
        h.caplen = h.len = static_cast<bpf_u_int32>(b.size());
        pcap_dump(reinterpret_cast<u_char*>(d), &h, b.data());
    }
    pcap_dump_close(d);
    pcap_close(p);
    return true;
}

struct Options {
    std::vector<uint32_t> flows{1000, 10000, 100000, 1000000};
    std::vector<Case> cases{Case::kCd, Case::kSend, Case::kPeerCd, Case::kPeerData};
    int runs = 5;
    uint64_t packets = 4000000;
    std::string dir = "/tmp";
    bool callgrind = false;
    bool client_cache = true;    // --no-client-cache: every client packet through the hash
    bool express = true;         // --no-express: every packet through the stages
    bool host_nexthops = false;  // a host next hop per client and peer (else only the default route)
    bool kernel_routes = false;  // the gateway's host entry and a node's connected routes
    bool gateway_entry = false;  // the gateway's host entry alone
    uint16_t vlan = 0;           // 802.1Q VLAN of every next hop (0: untagged)
    uint64_t limit_bps = 0;      // --limit: every allocation's bandwidth limit (0: none)
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> v;
    size_t b = 0;
    while (b <= s.size()) {
        const size_t e = s.find(',', b);
        v.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (e == std::string::npos) {
            break;
        }
        b = e + 1;
    }
    return v;
}

uint16_t probe(const std::string& args, const std::string& name) {
    if (rte_dev_probe(args.c_str()) != 0) {
        std::fprintf(stderr, "rte_dev_probe %s failed\n", args.c_str());
        std::exit(1);
    }
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) {
        std::exit(1);
    }
    return port;
}

void start_port(uint16_t port, rte_mempool* pool) {
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 || rte_eth_rx_queue_setup(port, 0, 512, rte_socket_id(), nullptr, pool) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 512, rte_socket_id(), nullptr) != 0 || rte_eth_dev_start(port) != 0) {
        std::fprintf(stderr, "port %u setup failed\n", port);
        std::exit(1);
    }
}

// Returns TSC cycles per packet over `packets` received packets.
double run_plain(uint16_t rx, uint16_t txp, uint64_t packets) {
    rte_mbuf* b[dp::kBurst];
    uint64_t got = 0;
    const uint64_t t0 = rte_rdtsc();
    while (got < packets) {
        const uint16_t n = rte_eth_rx_burst(rx, 0, b, dp::kBurst);
        got += n;
        const uint16_t s = rte_eth_tx_burst(txp, 0, b, n);
        if (s < n) {
            rte_pktmbuf_free_bulk(b + s, n - s);
        }
    }
    return static_cast<double>(rte_rdtsc() - t0) / static_cast<double>(got);
}

double run_pipeline(dp::Worker& w, uint16_t rx, uint64_t packets) {
    rte_mbuf* b[dp::kBurst];
    uint64_t got = 0;
    const uint64_t t0 = rte_rdtsc();
    while (got < packets) {
        const uint16_t n = rte_eth_rx_burst(rx, 0, b, dp::kBurst);
        got += n;
        if (n != 0) {
            dp::process_burst(w, b, n, rte_rdtsc());
        }
        rte_rcu_qsbr_quiescent(w.flows->rcu, w.cfg.id);
    }
    return static_cast<double>(rte_rdtsc() - t0) / static_cast<double>(got);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    int i = 1;
    for (; i < argc && std::string(argv[i]) != "--"; i++) {
        const std::string a = argv[i];
        const std::string v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--flows") {
            o.flows.clear();
            for (const auto& s : split(v)) {
                o.flows.push_back(static_cast<uint32_t>(std::stoul(s)));
            }
            i++;
        } else if (a == "--cases") {
            o.cases.clear();
            for (const auto& s : split(v)) {
                for (Case c : kAllCases) {
                    if (s == case_name(c)) {
                        o.cases.push_back(c);
                    }
                }
            }
            i++;
        } else if (a == "--runs") {
            o.runs = std::stoi(v);
            i++;
        } else if (a == "--packets") {
            o.packets = std::stoull(v);
            i++;
        } else if (a == "--dir") {
            o.dir = v;
            i++;
        } else if (a == "--callgrind") {
            o.callgrind = true;
        } else if (a == "--host-nexthops") {
            o.host_nexthops = true;
        } else if (a == "--kernel-routes") {
            o.kernel_routes = true;
        } else if (a == "--gateway-entry") {
            o.gateway_entry = true;
        } else if (a == "--vlan") {
            o.vlan = static_cast<uint16_t>(std::stoul(v));
            i++;
        } else if (a == "--limit") {
            o.limit_bps = static_cast<uint64_t>(std::stod(v));
            i++;
        } else if (a == "--no-client-cache") {
            o.client_cache = false;
        } else if (a == "--no-express") {
            o.express = false;
        } else if (a == "--family") {
            g_family = std::stoi(v);
            if (g_family != 4 && g_family != 6) {
                std::fprintf(stderr, "--family: 4 or 6\n");
                return 2;
            }
            i++;
        } else {
            std::fprintf(stderr, "unknown option %s\n", a.c_str());
            return 2;
        }
    }
    std::vector<char*> eal{argv[0]};
    for (i++; i < argc; i++) {
        eal.push_back(argv[i]);
    }
    if (rte_eal_init(static_cast<int>(eal.size()), eal.data()) < 0) {
        std::fprintf(stderr, "rte_eal_init: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    rte_net_crc_set_alg(RTE_NET_CRC_SSE42);  // as turn-dataplane: Send indications' FINGERPRINT check
    const double hz = static_cast<double>(rte_get_tsc_hz());
    std::printf("# TSC %.3f GHz, burst %u, payload %zu B, runs %d x %llu packets (median reported), IPv%d\n", hz / 1e9,
                dp::kBurst, kPayload, o.runs, static_cast<unsigned long long>(o.packets), g_family);
    // Medians of interleaved runs, and the minimum (best of N): on a shared,
    // loaded machine the minimum is the run least disturbed by other tenants.
    std::printf("%-10s %8s %10s %10s %10s %10s %10s %10s %7s %7s %11s %8s\n", "case", "flows", "plain_cyc", "plain_min",
                "pipe_cyc", "pipe_min", "plain_Mpps", "pipe_Mpps", "ratio", "r_min", "bytes/flow", "fwd_ok");

    rte_mempool* txpool = rte_pktmbuf_pool_create("bench_null", 1023, 0, 0, 256, SOCKET_ID_ANY);
    const uint16_t null_port = probe("net_null_tx0", "net_null_tx0");
    const uint16_t exc_port = probe("net_null_exc0", "net_null_exc0");
    start_port(null_port, txpool);
    start_port(exc_port, txpool);

    int dev = 0;
    for (uint32_t nflows : o.flows) {
        // Tables sized for the flows: 2 hash entries per flow (kClient,
        // kPermission; the channel sits in the allocation's slots: two for
        // IPv4 peers, one for an IPv6 peer), ChannelValues (channels outside
        // the slots) for 1/16 of the flows; 1 allocation each, ~3% hash
        // headroom. r2r adds a permission per flow and, for IPv6, whose
        // second channel does not fit the line, a hashed channel
        // (kChannelIn, kChannelOut and a ChannelValue).
        dp::FlowConfig fc;
        fc.name = std::string("b").append(std::to_string(nflows));
        const bool r2r = std::find(o.cases.begin(), o.cases.end(), Case::kR2r) != o.cases.end();
        const uint32_t entries = nflows * (r2r ? (g_family == 4 ? 3 : 5) : 2);
        const uint32_t channels = nflows / 16 + (g_family == 6 && r2r ? nflows : 0);
        fc.entries_v4 = g_family == 4 ? entries + nflows / 32 + 64 : 64;
        fc.entries_v6 = g_family == 6 ? entries + nflows / 32 + 64 : 64;
        fc.max_allocations = nflows;
        fc.max_channels = channels + 64;
        fc.workers = 1;
        fc.client_cache = o.client_cache;
        std::string err;
        dp::FlowTables* flows = dp::FlowTables::create(fc, &err);
        if (flows == nullptr) {
            std::fprintf(stderr, "%s\n", err.c_str());
            return 1;
        }
        dp::NextHops* nh = dp::NextHops::create(std::string("bnh").append(std::to_string(nflows)),
                                                o.host_nexthops ? 2 * nflows + 64 : 64, flows->rcu, SOCKET_ID_ANY, &err);
        dp::Applier ap(*flows);
        uint64_t seq = 0;
        auto send = [&](auto m) { ap.apply(ipc::encode(m, ++seq)); };
        for (uint32_t f = 0; f < nflows; f++) {
            const FlowAddrs a = flow(f);
            send(dptest::allocation_add(f + 1, a.client, a.listen, g_family == 4 ? &a.relayed : nullptr,
                                        g_family == 6 ? &a.relayed : nullptr, o.limit_bps));
            send(dptest::permission_add(f + 1, a.relayed, a.peer));
            send(dptest::channel_add(f + 1, a.relayed, a.peer, kChannel));
            if (r2r && (f ^ 1) < nflows) {
                const Address partner = flow(f ^ 1).relayed;
                send(dptest::permission_add(f + 1, a.relayed, partner));
                send(dptest::channel_add(f + 1, a.relayed, partner, kChannelR2r));
            }
        }
        if (ap.stats().table_full != 0 || ap.stats().malformed != 0) {
            std::fprintf(stderr, "install: %llu table-full, %llu malformed\n",
                         static_cast<unsigned long long>(ap.stats().table_full),
                         static_cast<unsigned long long>(ap.stats().malformed));
            return 1;
        }
        // After installing: the relayed-port arrays are allocated on demand.
        const double bytes_per_flow = static_cast<double>(flows->memory_bytes()) / nflows;
        dp::NextHop gw;
        std::copy(kGatewayMac.begin(), kGatewayMac.end(), gw.mac.addr_bytes);
        gw.port = null_port;
        gw.vlan = o.vlan;
        nh->set_default(static_cast<uint8_t>(g_family), gw);
        if (o.kernel_routes || o.gateway_entry) {
            // The node's subnet (TEST-NET-2, or fd00:ffff::/64) with its
            // gateway, and IPv6's link-local routes.
            std::vector<dp::NextHops::Prefix> routes(1);
            routes.reserve(2);
            dp::NextHops::Prefix& net = routes[0];
            if (g_family == 4) {
                const uint8_t n4[4] = {198, 51, 100, 0};
                std::copy(n4, n4 + 4, net.ip);
                net.len = 24;
            } else {
                const uint8_t n6[4] = {0xfd, 0, 0xff, 0xff};
                std::copy(n6, n6 + 4, net.ip);
                net.len = 64;
                dp::NextHops::Prefix ll;
                ll.ip[0] = 0xfe;
                ll.ip[1] = 0x80;
                ll.len = 64;
                routes.push_back(ll);
            }
            if (o.kernel_routes) {
                nh->set_prefixes(static_cast<uint8_t>(g_family), routes);
            }
            uint8_t gw_ip[16] = {};
            std::copy(net.ip, net.ip + 16, gw_ip);
            gw_ip[g_family == 4 ? 3 : 15] = 1;
            nh->set_host(static_cast<uint8_t>(g_family), gw_ip, gw);
        }
        if (o.host_nexthops) {
            // On-link peers and clients, as the kernel mirror installs them.
            for (uint32_t f = 0; f < nflows; f++) {
                const FlowAddrs a = flow(f);
                for (const Address* h : {&a.client, &a.peer}) {
                    nh->set_host(static_cast<uint8_t>(g_family), h->ip.data(), gw);
                }
            }
        }

        dp::Worker w;
        dp::WorkerConfig wc;
        wc.exc_port = exc_port;
        wc.express = o.express;
        wc.nic_port = null_port;
        std::copy(kPortMac.begin(), kPortMac.end(), wc.port_mac[null_port].addr_bytes);
        w.init(wc, flows, nh);

        for (Case c : o.cases) {
            const uint32_t count = std::max<uint32_t>(nflows, 131072);
            const std::string path = o.dir + "/dp_bench_" + std::to_string(getpid()) + "_" + case_name(c) + ".pcap";
            if (!write_pcap(path, c, nflows, count)) {
                return 1;
            }
            const std::string name = "net_pcap_b" + std::to_string(dev++);
            rte_mempool* pool = rte_pktmbuf_pool_create(("bp" + name).c_str(), count + 4096, 256, 0,
                                                        RTE_PKTMBUF_HEADROOM + 384, SOCKET_ID_ANY);
            if (pool == nullptr) {
                std::fprintf(stderr, "mempool: %s\n", rte_strerror(rte_errno));
                return 1;
            }
            const uint16_t rx = probe(name + ",rx_pcap=" + path + ",infinite_rx=1", name);
            start_port(rx, pool);
            unlink(path.c_str());

            std::vector<double> plain, pipe;
            const dp::Counters before = w.counters;
            const uint64_t warm = std::min<uint64_t>(o.packets, count);
            if (!o.callgrind) {
                run_plain(rx, null_port, warm);
            }
            run_pipeline(w, rx, warm);
            const uint64_t cache_lookups = w.cache.lookups, cache_misses = w.cache.misses;  // after the warm-up
            for (int r = 0; r < o.runs; r++) {
                if (!o.callgrind) {
                    plain.push_back(run_plain(rx, null_port, o.packets));
                }
                pipe.push_back(run_pipeline(w, rx, o.packets));
            }
            const uint64_t fwd = w.counters.get(dp::Counter::fwd_client_channel) + w.counters.get(dp::Counter::fwd_client_send) +
                                 w.counters.get(dp::Counter::fwd_peer_channel) + w.counters.get(dp::Counter::fwd_peer_data) -
                                 before.get(dp::Counter::fwd_client_channel) - before.get(dp::Counter::fwd_client_send) -
                                 before.get(dp::Counter::fwd_peer_channel) - before.get(dp::Counter::fwd_peer_data);
            const uint64_t rxd = w.counters.get(dp::Counter::rx) - before.get(dp::Counter::rx);
            const double pc = plain.empty() ? 0 : median(plain);
            const double qc = median(pipe);
            const double pm = plain.empty() ? 0 : *std::min_element(plain.begin(), plain.end());
            const double qm = *std::min_element(pipe.begin(), pipe.end());
            std::printf("%-10s %8u %10.1f %10.1f %10.1f %10.1f %10.2f %10.2f %7.2f %7.2f %11.0f %7.1f%%\n", case_name(c),
                        nflows, pc, pm, qc, qm, pc > 0 ? hz / pc / 1e6 : 0, hz / qc / 1e6, pc > 0 ? qc / pc : 0,
                        pm > 0 ? qm / pm : 0, bytes_per_flow, 100.0 * static_cast<double>(fwd) / static_cast<double>(rxd));
            if (w.cache.lookups != cache_lookups) {
                std::printf("#   client cache misses after the warm-up: %.2f %% of %llu lookups\n",
                            100.0 * static_cast<double>(w.cache.misses - cache_misses) /
                                static_cast<double>(w.cache.lookups - cache_lookups),
                            static_cast<unsigned long long>(w.cache.lookups - cache_lookups));
            }
            std::fflush(stdout);
            rte_eth_dev_info info{};
            rte_eth_dev_info_get(rx, &info);
            rte_eth_dev_stop(rx);
            rte_eth_dev_close(rx);
            rte_dev_remove(info.device);
            rte_mempool_free(pool);
        }
        // Where non-forwarded packets went, for the record.
        for (size_t k = 0; k < dp::kCounterCount; k++) {
            const auto cn = static_cast<dp::Counter>(k);
            const std::string_view n = dp::counter_name(cn);
            if ((n.starts_with("drop_") || n.starts_with("punt_")) && w.counters.get(cn) != 0) {
                std::printf("#   %u flows: %.*s = %llu\n", nflows, static_cast<int>(n.size()), n.data(),
                            static_cast<unsigned long long>(w.counters.get(cn)));
            }
        }
        w.fini();
        delete nh;
        delete flows;
    }
    rte_eal_cleanup();
    return 0;
}
