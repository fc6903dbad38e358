// libFuzzer target for the dataplane worker: any frames a NIC could deliver,
// in bursts, through the real pipeline (dp::process_burst) of two workers on
// the same flow tables, one with the express lane (worker/express.cc) and
// one through the stages alone. The relay is worker_net.h's (allocations()
// both installs it and is what the checks hold every frame against; some
// allocations are each other's peers on one relay IP: relay-to-relay), with
// the next hops (host entries, defaults untagged, on a VLAN or absent) the
// input chooses; the input format is described there. Option words in the
// input turn the relay's 1:1 NAT pairs (ipc::ExternalIps, through the one
// Applier that installed the relay, and resyncs) on and off between bursts,
// and choose the express lane's rest (WorkerConfig::express_rest), so that
// a relay without and behind a NAT, and a lane that rests, are fuzzed alike.
//
// Each frame gets the rx checksum flags the input chose for it, and a heap
// buffer of exactly the headroom (the input's choice for all its frames)
// plus its length plus the tailroom the input chose, attached to an mbuf as
// an external buffer, so a read or write past the frame (or more than the
// headroom before it) is an AddressSanitizer report rather than a stray
// access to the mempool. Every other frame's buffer starts at an odd
// address (one poisoned byte before the block's start), as no allocator
// would place it, so that an access through a type with alignment (e.g.
// rte_ether_hdr) at a packet offset is an UndefinedBehaviorSanitizer
// report on any PMD's layout. The input can deliver a frame as a chain of 2-4
// mbufs (nb_segs > 1, as scattered rx does), split where it says, each
// segment in an exact-size block of its own (worker_net.h).
//
// Invariants (a violation prints what failed and traps):
//   1. every frame is accounted for: rx counts them all, each forwarded one
//      leaves by the NIC port (a relay-to-relay one, counted by hairpin, is
//      forwarded twice: the first time back into the pipeline), each punted
//      one by the exception port, and the rest are counted as drops;
//   2. the two workers agree: the same frames out of each port, in the same
//      order, byte for byte, and the same counter deltas (both start from
//      full bandwidth budgets: the shared allocation clocks are reset; from
//      no NAT pairs, replaying the input's ExternalIps and resyncs between
//      the same bursts; the lane worker from no rest);
//   3. a punted frame reaches the kernel exactly as it came (never one
//      rewritten for relay-to-relay, below: from one of the relay's own
//      addresses, the kernel would discard it as a martian source);
//   4. a forwarded frame is well formed: from the port's MAC to the MAC of
//      its destination's next hop (host entry, else the family's default;
//      a destination with neither is never forwarded), with one 802.1Q tag
//      (TPID 0x8100, priority and DEI 0, the next hop's VLAN ID) exactly
//      when that next hop is on a VLAN, then IPv4 with a valid header
//      checksum or IPv6, IP and UDP lengths that match the frame, a
//      TTL / hop limit one less than received (which was at least 2; two
//      less after relay-to-relay, from at least 3), and a valid UDP checksum
//      whenever the received one was valid (or zero over IPv4);
//   5. it goes where the flows allow and nowhere else, and never to one of
//      the relay's own IPs (relayed, listening or external, with the NAT's
//      pairs current or not: relay-to-relay packets stay inside, route.cc
//      own_destination): from an allocation's relayed address to the peer
//      its client named (channel or XOR-PEER-ADDRESS) in the frame, with a
//      permission; or from an allocation's listening address to its client,
//      from a peer it permits, on the channel it bound to that peer's
//      address or else in a Data indication naming it (XOR-PEER-ADDRESS) --
//      the peer being the received frame's source or, relay-to-relay
//      (another allocation's client's datagram to this one's relayed
//      address, which the sender's allocation permits), the sending
//      allocation's relayed address; or, behind the NAT (that family's pair
//      current in the burst), a client's datagram to this one's EXTERNAL
//      address, sent from the sender's relayed address on the NAT's relay
//      IP and permitted by the sender for the external address it named:
//      then the peer is the sender's external address (pipeline.cc
//      present_external), never its relayed one. hairpin counts at least
//      these two-round frames and no more than the frames that are a
//      client's datagram to a relayed address of this relay or, with the
//      pair, to the external address of one from the relay IP; what went
//      round is never dropped as unsendable (drop_hairpin_unsendable: route
//      decided the second round before the first, on tables that do not
//      change during a burst here);
//   6. what it carries came from the received frame: to a peer, the UDP
//      payload is bytes of the received frame; to a client, a ChannelData
//      message with an exact length field, or a Data indication that parses,
//      whose DATA is bytes of the received frame and whose padding is zero
//      (the tailroom it is written into starts as 0xa5);
//   7. a chained frame is never forwarded (nor goes round): it reaches the
//      exception port unchanged (classify.cc punts every nb_segs != 1 as
//      punt_multi_segment, and the express lane's parse_udp4 hands them to
//      it), counted as punt_multi_segment, which counts nothing else; every
//      punted frame, chained or not, leaves as the same mbufs in the same
//      order with the same data_off, data_len, nb_segs and pkt_len (the
//      chain passes rte_mbuf_check), and its bytes across the segments are
//      those received;
//   8. every mbuf is freed exactly once: after each burst, every segment's
//      external buffer was released once (its free callback; a second call
//      fails) and the mempool holds exactly the mbufs it started with
//      (fewer: a leak, e.g. a chain freed by its first segment only; more:
//      an mbuf freed twice; the pool is smaller than its ring, so a second
//      free is counted, not lost);
//   9. the NAT's pairs are what the control plane's messages make them:
//      every applied ExternalIps is echoed once, unchanged; after each
//      ExternalIps or resync, FlowTables::nat has each family's (external
//      IP, relay IP) pair current exactly when the harness's model of the
//      Applier says (set by an ExternalIps, cleared by a ResyncBegin with
//      no ExternalIps since the previous one); the external IPs are own
//      addresses (OwnIps4, NatIps::had6) from their first ExternalIps on.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <sanitizer/asan_interface.h>

#include "common/dpdk.h"
#include "flow/apply.h"
#include "fuzz_eal.h"
#include "flow/tables.h"
#include "ipc/protocol.h"
#include "ipc_messages.h"
#include "nexthop/nexthop.h"
#include "stun/constants.h"
#include "stun/attributes.h"
#include "stun/message.h"
#include "worker/pipeline.h"
#include "worker_net.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#include <rte_eth_ring.h>
#include <rte_net_crc.h>
#pragma GCC diagnostic pop

namespace {

using dp::Counter;
using dptest::Bytes;
using workerfuzz::Net;
namespace ipc = turn::ipc;

// The rx checksum flags an input can give a frame (worker_net.h).
constexpr uint64_t kRxFlags[4] = {0, RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD,
                                  RTE_MBUF_F_RX_IP_CKSUM_BAD, RTE_MBUF_F_RX_L4_CKSUM_BAD};

[[noreturn]] void fail(const char* what, size_t frame = SIZE_MAX) {
    if (frame == SIZE_MAX) {
        std::fprintf(stderr, "worker_fuzz: %s\n", what);
    } else {
        std::fprintf(stderr, "worker_fuzz: %s (frame %zu)\n", what, frame);
    }
    __builtin_trap();
}

// The segments' heap blocks not yet released: which frame (index in the
// input) and segment each belongs to.
struct Owner {
    size_t frame;
    unsigned seg;
    size_t skew;  // the buffer starts this many (poisoned) bytes into its heap block
};

// Fewer mbufs than the mempool's ring holds (1023), so that one freed twice
// shows as one too many in the pool instead of being lost.
constexpr unsigned kPoolMbufs = 1000;

class Installer;

struct Env {
    rte_mempool* pool = nullptr;
    std::unordered_map<const void*, Owner> live;  // external buffers attached, not yet released
    rte_ring* nic_out = nullptr;
    rte_ring* exc_out = nullptr;
    uint16_t nic_port = 0;
    uint16_t exc_port = 0;
    dp::FlowTables* flows = nullptr;
    dp::NextHops* nh_plain = nullptr;  // no host entries: route's defaults-only path
    dp::NextHops* nh_hosts = nullptr;  // worker_net.h's host_hops()
    dp::Worker w[2];  // [0] express lane, [1] stages only
    uint64_t now = 1u << 30;
    Net net;
    std::vector<workerfuzz::Allocation> allocs = workerfuzz::allocations(net);  // installed, and the checks' model
    Installer* installer = nullptr;  // the relay's control plane (one Applier, as in a dataplane)
};
Env* g = nullptr;

uint16_t ring_port(const char* name, rte_ring* rx, rte_ring* txr) {
    const int id = rte_eth_from_rings(name, &rx, 1, &txr, 1, static_cast<unsigned>(rte_socket_id()));
    if (id < 0) {
        fail("rte_eth_from_rings");
    }
    const auto port = static_cast<uint16_t>(id);
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(port, 0, 64, rte_socket_id(), nullptr, g->pool) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 64, rte_socket_id(), nullptr) != 0 || rte_eth_dev_start(port) != 0) {
        fail("ring port setup");
    }
    return port;
}

// The NAT's pairs (worker_net.h) as the harness expects the Applier to
// hold them: which families have their pair current.
struct Nat {
    bool v4 = false, v6 = false;
    bool on(bool v4_family) const { return v4_family ? v4 : v6; }
    bool operator==(const Nat&) const = default;
};

// Applies the control plane's install messages (tests/dataplane/ipc_messages.h)
// through one Applier for the whole process, as a dataplane does: the
// relay of worker_net.h, and the NAT's ExternalIps and resyncs the inputs
// ask for (Installer::nat), with what the Applier must then hold kept in
// `model`.
class Installer {
public:
    explicit Installer(dp::FlowTables& t) : t_(t), ap_(t) {}
    template <typename M>
    void send(M m) {
        const uint64_t full = ap_.stats().table_full, unknown = ap_.stats().unknown_alloc;
        if (!ap_.apply(ipc::encode(m, ++seq_))) {
            fail("the flow tables refused an IPC message");
        }
        // The relay must be what allocations() says, or the checks would
        // hold frames against another one.
        if (ap_.stats().table_full != full || ap_.stats().unknown_alloc != unknown) {
            fail("harness: an install message was not applied (table full or unknown allocation)");
        }
    }
    // Every allocation with its permissions and channels, in order; the
    // number of Add messages sent.
    uint64_t install(const std::vector<workerfuzz::Allocation>& allocs) {
        using dptest::allocation_add, dptest::channel_add, dptest::permission_add;
        uint64_t n = 0;
        for (const workerfuzz::Allocation& a : allocs) {
            send(allocation_add(a.id, a.client, a.listen, a.relayed4 ? &*a.relayed4 : nullptr,
                                a.relayed6 ? &*a.relayed6 : nullptr, a.bandwidth_bps));
            n++;
            for (const turn::Address& peer : a.permitted) {
                send(permission_add(a.id, *a.relayed(peer.is_v4()), peer));
                n++;
            }
            for (const auto& [number, peer] : a.channels) {
                send(channel_add(a.id, *a.relayed(peer.is_v4()), peer, number));
                n++;
            }
        }
        return n;
    }
    // An ExternalIps with the pairs of the families asked for (at least
    // one), which the Applier must apply and echo unchanged.
    void external(const Net& n, bool v4, bool v6) {
        ipc::ExternalIps m{};
        if (v4) {
            m.external_v4 = ipc::WireAddress::from(n.external4);
            m.relay_v4 = ipc::WireAddress::from(n.nat_relay4);
        }
        if (v6) {
            m.external_v6 = ipc::WireAddress::from(n.external6);
            m.relay_v6 = ipc::WireAddress::from(n.nat_relay6);
        }
        std::optional<ipc::ExternalIps> echo;
        size_t replies = 0;
        const ipc::ExternalIps sent = m;
        if (!ap_.apply(ipc::encode(m, ++seq_), [&](std::span<const uint8_t> r) {
                replies++;
                echo = ipc::decode<ipc::ExternalIps>(r);
            })) {
            fail("the Applier refused a valid ExternalIps");
        }
        auto same = [](const ipc::WireAddress& a, const ipc::WireAddress& b) {
            return std::memcmp(&a, &b, sizeof a) == 0;
        };
        if (replies != 1 || !echo || !same(echo->external_v4, sent.external_v4) ||
            !same(echo->relay_v4, sent.relay_v4) || !same(echo->external_v6, sent.external_v6) ||
            !same(echo->relay_v6, sent.relay_v6)) {
            fail("an applied ExternalIps was not echoed once, unchanged");
        }
        model = {v4, v6};
        seen_ = true;
    }
    // The control plane's resync: its ExternalIps first when it has one
    // (with_external), ResyncBegin, every Add again, ResyncEnd.
    void resync(const Net& n, const std::vector<workerfuzz::Allocation>& allocs, bool with_external, bool v4,
                bool v6) {
        if (with_external) {
            external(n, v4, v6);
        }
        ipc::ResyncBegin b{};
        b.generation = ++gen_;
        send(b);
        if (!seen_) {
            model = {};
        }
        seen_ = false;
        ipc::ResyncEnd e{};
        e.generation = gen_;
        e.entries = install(allocs);
        send(e);
    }
    // An option word's NAT value t (worker_net.h kNat*).
    void nat(const Net& n, const std::vector<workerfuzz::Allocation>& allocs, unsigned t) {
        const bool v4 = (t & workerfuzz::kNat4) != 0, v6 = (t & workerfuzz::kNat6) != 0;
        if ((t & workerfuzz::kNatResync) != 0) {
            resync(n, allocs, v4 || v6, v4, v6);
        } else {
            external(n, v4, v6);
        }
        check(n);
    }
    // Back to no pairs and no ExternalIps since the last ResyncBegin, as
    // every input starts: a resync without ExternalIps, or two when one
    // came since the last (the first then keeps the pairs).
    void reset(const Net& n, const std::vector<workerfuzz::Allocation>& allocs) {
        for (int k = 0; k < 2 && (model != Nat{} || seen_); k++) {
            resync(n, allocs, false, false, false);
        }
        check(n);
    }
    // The tables' current pairs (FlowTables::nat) are the model's: each
    // family's pair is (its external IP, its relay IP) exactly when on.
    void check(const Net& n) const {
        for (const bool v4 : {true, false}) {
            const dp::NatIps::Entry* e = t_.nat.current(v4 ? 4 : 6);
            const size_t len = v4 ? 4 : 16;
            const turn::Address& ext = v4 ? n.external4 : n.external6;
            const turn::Address& relay = v4 ? n.nat_relay4 : n.nat_relay6;
            const bool ok = e == nullptr ? !model.on(v4)
                                         : model.on(v4) && e->family == (v4 ? 4 : 6) &&
                                               std::memcmp(e->external, ext.ip.data(), len) == 0 &&
                                               std::memcmp(e->relay, relay.ip.data(), len) == 0;
            if (!ok) {
                fail(v4 ? "FlowTables::nat's IPv4 pair is not what the ExternalIps and resyncs sent make it"
                        : "FlowTables::nat's IPv6 pair is not what the ExternalIps and resyncs sent make it");
            }
        }
    }
    Nat model;  // what the Applier must hold

private:
    dp::FlowTables& t_;
    dp::Applier ap_;
    uint64_t seq_ = 0;
    uint64_t gen_ = 0;
    bool seen_ = false;  // an ExternalIps since the last ResyncBegin
};

struct In {
    std::span<const uint8_t> bytes;
    size_t tail;      // bytes of tailroom after it
    uint64_t flags;   // rx checksum flags
    size_t headroom;  // bytes before it
    unsigned nsegs = 1;  // mbufs it arrives in (worker_net.h: chain markers)
    uint16_t seg[workerfuzz::kMaxSegs] = {};  // each one's bytes, summing to bytes.size()
};
// A segment of a received frame as the harness made it.
struct Seg {
    rte_mbuf* m;
    uint16_t off, len;  // data_off, data_len
};
rte_mbuf* frame_mbuf(const In& in, size_t frame, std::vector<Seg>* segs = nullptr);

// Both workers on the table byte 1 of the input names (worker_net.h), its
// defaults set as it says.
void set_next_hops(uint8_t sel) {
    using namespace workerfuzz;
    dp::NextHops* t = (sel & kNhHosts) != 0 ? g->nh_hosts : g->nh_plain;
    for (uint8_t fam : {4, 6}) {
        const bool v4 = fam == 4;
        if ((sel & (v4 ? kNhNoGw4 : kNhNoGw6)) != 0) {
            t->clear_default(fam);
            continue;
        }
        dp::NextHop gw;
        std::memcpy(gw.mac.addr_bytes, kGatewayMac.data(), 6);
        gw.port = g->nic_port;
        gw.vlan = (sel & (v4 ? kNhGw4Vlan : kNhGw6Vlan)) == 0 ? 0 : v4 ? kGatewayVlan4 : kGatewayVlan6;
        t->set_default(fam, gw);
    }
    for (dp::Worker& w : g->w) {
        w.nexthops = t;
    }
}

void init() {
    if (g != nullptr) {
        return;
    }
    if (!fuzzeal::init("worker_fuzz", 256)) {
        fail("rte_eal_init");
    }
    rte_net_crc_set_alg(RTE_NET_CRC_SSE42);  // the FINGERPRINT CRC turn-dataplane selects
    g = new Env();
    std::atexit(fuzzeal::cleanup);
    g->pool = rte_pktmbuf_pool_create("fz_pool", kPoolMbufs, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    auto ring = [](const char* n) { return rte_ring_create(n, 256, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ); };
    rte_ring* nic_in = ring("fz_nic_in");
    rte_ring* exc_in = ring("fz_exc_in");
    g->nic_out = ring("fz_nic_out");
    g->exc_out = ring("fz_exc_out");
    if (g->pool == nullptr || nic_in == nullptr || exc_in == nullptr || g->nic_out == nullptr || g->exc_out == nullptr) {
        fail("mempool or rings");
    }
    g->nic_port = ring_port("net_fznic", nic_in, g->nic_out);
    g->exc_port = ring_port("net_fzexc", exc_in, g->exc_out);

    dp::FlowConfig fc;
    fc.name = "fz";
    fc.entries_v4 = 1024;
    fc.entries_v6 = 1024;
    fc.max_allocations = 64;
    fc.max_channels = 64;
    fc.workers = 2;
    std::string err;
    g->flows = dp::FlowTables::create(fc, &err);
    if (g->flows == nullptr) {
        fail(err.c_str());
    }
    // Two tables, so that no input's host entries outlive it (and none are
    // deleted: their key slots would wait for QSBR); each input picks one
    // and sets its defaults (set_next_hops).
    g->nh_plain = dp::NextHops::create("fznh", 64, g->flows->rcu, SOCKET_ID_ANY, &err);
    g->nh_hosts = dp::NextHops::create("fznh_hosts", 64, g->flows->rcu, SOCKET_ID_ANY, &err);
    if (g->nh_plain == nullptr || g->nh_hosts == nullptr) {
        fail(err.c_str());
    }
    const Net& n = g->net;
    for (const workerfuzz::HostHop& h : workerfuzz::host_hops(n)) {
        dp::NextHop nh;
        std::memcpy(nh.mac.addr_bytes, h.mac.data(), 6);
        nh.port = g->nic_port;
        nh.vlan = h.vlan;
        if (g->nh_hosts->set_host(h.ip.is_v4() ? 4 : 6, h.ip.ip.data(), nh) != 0) {
            fail("set_host");
        }
    }
    // The clock the input steps, not the host's: the same bandwidth budgets
    // everywhere (set before the limited allocation is added).
    g->flows->tsc_hz = 2e9;
    g->installer = new Installer(*g->flows);
    g->installer->install(g->allocs);
    // The NAT's pairs once, then cleared by a resync: the external IPs are
    // own addresses from here on (a dataplane never forgets one), with or
    // without the pairs an input turns on, so that every input sees the
    // same relay whatever ran before it.
    g->installer->external(n, true, true);
    g->installer->reset(n, g->allocs);
    {
        uint32_t ext4;
        std::memcpy(&ext4, n.external4.ip.data(), 4);
        if (!g->flows->own4.has(ext4) || !g->flows->nat.had6(n.external6.ip.data())) {
            fail("the external IPs are not own addresses after their ExternalIps");
        }
    }

    for (uint32_t id = 0; id < 2; id++) {
        dp::WorkerConfig wc;
        wc.id = id;
        wc.nic_port = g->nic_port;
        wc.exc_port = g->exc_port;
        wc.express = id == 0;
        wc.express_rest = 0;  // the lane tries every burst, however the last one went
        std::memcpy(wc.port_mac[g->nic_port].addr_bytes, workerfuzz::kPortMac.data(), 6);
        g->w[id].init(wc, g->flows, g->nh_plain);
    }
    // Each worker's client cache learns the clients (lookup.cc fills it on
    // a miss), so that an input's first ChannelData can take the express
    // lane all the way.
    set_next_hops(0);
    for (const workerfuzz::Allocation& a : g->allocs) {
        dptest::Frame f;
        f.dst_mac = workerfuzz::kPortMac;
        f.src_mac = workerfuzz::kHostMac;
        f.src = a.client;
        f.dst = a.listen;
        f.payload = dptest::channel_data(0x4001, dptest::pattern(16));
        const Bytes b = dptest::build(f);
        for (dp::Worker& w : g->w) {
            In one{{b.data(), b.size()}, 0, 0, RTE_PKTMBUF_HEADROOM};
            one.seg[0] = static_cast<uint16_t>(b.size());
            rte_mbuf* m = frame_mbuf(one, 0);
            dp::process_burst(w, &m, 1, g->now);
            void* o = nullptr;
            while (rte_ring_dequeue(g->nic_out, &o) == 0 || rte_ring_dequeue(g->exc_out, &o) == 0) {
                rte_pktmbuf_free(static_cast<rte_mbuf*>(o));
            }
        }
    }
}

// Called by DPDK when an mbuf's external buffer is released (the mbuf
// freed): once per buffer.
void free_ext(void* addr, void* opaque) {
    const auto it = g->live.find(addr);
    if (it == g->live.end()) {
        fail("an mbuf's external buffer released twice (its mbuf freed twice)");
    }
    uint8_t* block = static_cast<uint8_t*>(addr) - it->second.skew;
    ASAN_UNPOISON_MEMORY_REGION(block, it->second.skew);
    g->live.erase(it);
    std::free(block);
    delete static_cast<rte_mbuf_ext_shared_info*>(opaque);
}

// An mbuf whose buffer is a heap block of exactly headroom + `f` + tailroom
// bytes (after one poisoned byte for odd frames: the buffer at an odd
// address), registered in g->live as segment `seg` of frame `frame`.
rte_mbuf* ext_mbuf(std::span<const uint8_t> f, size_t headroom, size_t tail, size_t frame, unsigned seg) {
    rte_mbuf* m = rte_pktmbuf_alloc(g->pool);
    if (m == nullptr) {
        fail("mempool empty");
    }
    const size_t len = headroom + f.size() + tail;
    const size_t skew = frame & 1;
    auto* block = static_cast<uint8_t*>(std::malloc(skew + len));  // may be 0 bytes: an empty segment, no room
    if (block == nullptr) {
        fail("malloc");
    }
    ASAN_POISON_MEMORY_REGION(block, skew);
    uint8_t* buf = block + skew;
    g->live.emplace(buf, Owner{frame, seg, skew});
    auto* sh = new rte_mbuf_ext_shared_info{};
    sh->free_cb = free_ext;
    sh->fcb_opaque = sh;
    rte_mbuf_ext_refcnt_set(sh, 1);
    std::memset(buf, 0, headroom);
    if (!f.empty()) {
        std::memcpy(buf + headroom, f.data(), f.size());
    }
    std::memset(buf + headroom + f.size(), 0xa5, tail);  // not zero: padding must be written
    rte_pktmbuf_attach_extbuf(m, buf, RTE_BAD_IOVA, static_cast<uint16_t>(len), sh);
    m->data_off = static_cast<uint16_t>(headroom);
    m->data_len = static_cast<uint16_t>(f.size());
    m->pkt_len = f.size();
    return m;
}

// The frame as the NIC would hand it over: one mbuf, or a chain of
// in.nsegs (worker_net.h: the first with the headroom and the tailroom, the
// middle ones exact, the last with the tailroom), the rx flags on the
// first. Records each segment in *segs.
rte_mbuf* frame_mbuf(const In& in, size_t frame, std::vector<Seg>* segs) {
    rte_mbuf* head = nullptr;
    rte_mbuf* last = nullptr;
    size_t off = 0;
    for (unsigned k = 0; k < in.nsegs; k++) {
        const bool first = k == 0, final = k + 1 == in.nsegs;
        rte_mbuf* m = ext_mbuf(in.bytes.subspan(off, in.seg[k]), first ? in.headroom : 0, first || final ? in.tail : 0,
                               frame, k);
        off += in.seg[k];
        (first ? head : last->next) = m;
        last = m;
        if (segs != nullptr) {
            segs->push_back({m, m->data_off, m->data_len});
        }
    }
    if (off != in.bytes.size()) {
        fail("harness: segments do not add up to the frame", frame);
    }
    head->nb_segs = static_cast<uint16_t>(in.nsegs);
    head->pkt_len = static_cast<uint32_t>(off);
    head->ol_flags |= in.flags;
    const char* why = nullptr;
    if (rte_mbuf_check(head, 1, &why) != 0) {
        fail(why, frame);
    }
    return head;
}

struct Sent {
    size_t frame;  // index of the received frame it came from
    Bytes bytes;   // of every segment, in order
    std::vector<uint16_t> segs;  // each segment's data_len
};
struct Run {
    std::vector<Sent> nic, exc;
    dp::Counters delta;
    uint64_t express = 0;  // packets the express lane finished
    std::vector<Nat> nat;  // the NAT's pairs during each burst
};
// An input's NAT option (worker_net.h): its value, applied before the first
// burst that starts at or after frame index `at` (the frames before it).
struct NatOption {
    size_t at;
    unsigned value;
};

// Takes what a port sent (`nic`: the NIC's, else the exception port's) of
// the burst whose frames start at index `base`, `segs` their segments as
// received, and frees it.
void drain(rte_ring* r, const std::vector<std::vector<Seg>>& segs, size_t base, bool nic, std::vector<Sent>& out) {
    void* o = nullptr;
    while (rte_ring_dequeue(r, &o) == 0) {
        auto* m = static_cast<rte_mbuf*>(o);
        size_t i = SIZE_MAX;
        for (size_t k = 0; k < segs.size(); k++) {
            if (segs[k][0].m == m) {
                i = k;
            }
        }
        if (i == SIZE_MAX) {
            fail("an mbuf left that was not received (or not the first of its chain)");
        }
        const size_t idx = base + i;
        const std::vector<Seg>& want = segs[i];
        Sent s{idx, {}, {}};
        if (nic) {
            if (want.size() != 1) {
                fail("a chained frame was forwarded (NIC port)", idx);
            }
            if (m->nb_segs != 1 || m->next != nullptr || m->pkt_len != m->data_len) {
                fail("a chained mbuf left by the NIC port", idx);
            }
        } else {
            // To the kernel as received: the same mbufs, each with its data
            // where it was, and a chain that is still one.
            uint32_t total = 0;
            for (const Seg& g2 : want) {
                total += g2.len;
            }
            if (m->nb_segs != want.size() || m->pkt_len != total) {
                fail("a punted frame's nb_segs or pkt_len changed", idx);
            }
            const rte_mbuf* x = m;
            for (const Seg& g2 : want) {
                if (x != g2.m || x->data_off != g2.off || x->data_len != g2.len) {
                    fail("a punted frame's segments changed (mbuf, data_off or data_len)", idx);
                }
                x = x->next;
            }
            const char* why = nullptr;
            if (x != nullptr || rte_mbuf_check(m, 1, &why) != 0) {
                fail(why != nullptr ? why : "a punted frame has more segments than it came with", idx);
            }
        }
        for (const rte_mbuf* x = m; x != nullptr; x = x->next) {
            const auto* d = rte_pktmbuf_mtod(x, const uint8_t*);
            s.bytes.insert(s.bytes.end(), d, d + x->data_len);
            s.segs.push_back(x->data_len);
        }
        out.push_back(std::move(s));
        rte_pktmbuf_free(m);
    }
}

// After a burst: every segment of its frames freed exactly once.
void check_freed() {
    if (!g->live.empty()) {
        const Owner& o = g->live.begin()->second;
        std::fprintf(stderr, "worker_fuzz: segment %u of frame %zu (and %zu buffers in all) never released\n", o.seg,
                     o.frame, g->live.size());
        fail("an mbuf not freed: its external buffer is still attached", o.frame);
    }
    const unsigned avail = rte_mempool_avail_count(g->pool);
    if (avail != kPoolMbufs) {
        std::fprintf(stderr, "worker_fuzz: %u mbufs in the pool of %u\n", avail, kPoolMbufs);
        fail(avail < kPoolMbufs ? "mbufs missing from the pool after a burst (leaked)"
                                : "more mbufs in the pool than it has: one freed twice");
    }
}

Run run(dp::Worker& w, const std::vector<In>& frames, size_t burst, uint64_t step, const std::vector<NatOption>& nat,
        uint8_t express_rest) {
    Run r;
    const dp::Counters before = w.counters;
    const uint64_t express_before = w.express_packets;
    uint64_t now = g->now;
    // Each worker from the same start: no NAT pairs, the lane not resting.
    g->installer->reset(g->net, g->allocs);
    w.cfg.express_rest = express_rest;
    w.express_skip = 0;
    size_t next_opt = 0;
    for (size_t b = 0; b < frames.size(); b += burst) {
        // Between bursts only: the tables never change during one.
        for (; next_opt < nat.size() && nat[next_opt].at <= b; next_opt++) {
            g->installer->nat(g->net, g->allocs, nat[next_opt].value);
        }
        r.nat.push_back(g->installer->model);
        const size_t n = std::min(burst, frames.size() - b);
        std::vector<rte_mbuf*> mb(n);
        std::vector<std::vector<Seg>> segs(n);
        for (size_t i = 0; i < n; i++) {
            mb[i] = frame_mbuf(frames[b + i], b + i, &segs[i]);
        }
        dp::process_burst(w, mb.data(), static_cast<uint16_t>(n), now);
        drain(g->nic_out, segs, b, true, r.nic);
        drain(g->exc_out, segs, b, false, r.exc);
        check_freed();
        now += step;
    }
    for (size_t k = 0; k < dp::kCounterCount; k++) {
        r.delta.v[k] = w.counters.v[k] - before.v[k];
    }
    r.express = w.express_packets - express_before;
    return r;
}

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// The UDP checksum of a datagram `u` of `ulen` bytes between addresses
// `src`/`dst` (4 or 16 bytes each) is valid: the sum over the pseudo-header
// and the datagram is all ones. Over IPv4 a zero checksum counts as valid
// (none sent); over IPv6 it is invalid.
bool udp_checksum_ok(const uint8_t* src, const uint8_t* dst, size_t alen, const uint8_t* u, size_t ulen) {
    const uint16_t ck = be16(u + 6);
    if (ck == 0) {
        return alen == 4;
    }
    uint32_t pseudo = 17 + static_cast<uint32_t>(ulen);
    for (size_t i = 0; i < alen; i += 2) {
        pseudo += be16(src + i) + be16(dst + i);
    }
    return dptest::checksum(u, ulen, pseudo) == 0;
}

// Whether a received frame is Ethernet (untagged or one 802.1Q tag) + IPv4
// (no options, not a fragment) or IPv6 (no extension headers) + UDP with
// consistent lengths and a valid UDP checksum: then its forwarded form must
// carry a valid one too.
bool received_checksum_ok(std::span<const uint8_t> f) {
    if (f.size() < 14 + 20 + 8) {
        return false;
    }
    uint16_t type = be16(f.data() + 12);
    if (type == 0x8100) {  // one 802.1Q tag: the IP packet 4 bytes later
        f = f.subspan(4);
        type = be16(f.data() + 12);
        if (f.size() < 14 + 20 + 8) {
            return false;
        }
    }
    const uint8_t* ip = f.data() + 14;
    if (type == 0x0800 && ip[0] == 0x45 && ip[9] == 17 && (be16(ip + 6) & 0x3fff) == 0) {
        const size_t tot = be16(ip + 2);
        if (tot < 28 || tot > f.size() - 14) {
            return false;
        }
        const uint8_t* u = ip + 20;
        const size_t ulen = be16(u + 4);
        return ulen >= 8 && ulen <= tot - 20 && udp_checksum_ok(ip + 12, ip + 16, 4, u, ulen);
    }
    if (type == 0x86dd && f.size() >= 14 + 40 + 8 && (ip[0] >> 4) == 6 && ip[6] == 17) {
        const size_t plen = be16(ip + 4);
        if (plen < 8 || plen > f.size() - 54) {
            return false;
        }
        const uint8_t* u = ip + 40;
        const size_t ulen = be16(u + 4);
        return ulen >= 8 && ulen <= plen && udp_checksum_ok(ip + 8, ip + 24, 16, u, ulen);
    }
    return false;
}

turn::Address addr_of(const uint8_t* ip, size_t alen, const uint8_t* port) {
    turn::Address a;
    a.family = alen == 4 ? turn::Family::kIPv4 : turn::Family::kIPv6;
    std::memcpy(a.ip.data(), ip, alen);
    a.port = be16(port);
    return a;
}

// A UDP datagram as the harness reads a frame: Ethernet with at most one
// 802.1Q tag, IPv4 without options or IPv6 without extension headers, a UDP
// length inside the IP packet. Every frame the pipeline relays is one.
struct Udp {
    turn::Address src, dst;
    uint8_t ttl;                       // TTL / hop limit
    std::span<const uint8_t> payload;  // the UDP payload (by the UDP length)
};
std::optional<Udp> parse_udp(std::span<const uint8_t> f) {
    if (f.size() < 14) {
        return std::nullopt;
    }
    size_t l2 = 14;
    uint16_t type = be16(f.data() + 12);
    if (type == 0x8100) {
        if (f.size() < 18) {
            return std::nullopt;
        }
        type = be16(f.data() + 16);
        l2 = 18;
    }
    const uint8_t* ip = f.data() + l2;
    const size_t avail = f.size() - l2;
    size_t iphl = 0, alen = 0, saddr = 0, end = 0;  // header length, address length and offset, packet end
    if (type == 0x0800 && avail >= 28 && ip[0] == 0x45 && ip[9] == 17) {
        iphl = 20, alen = 4, saddr = 12, end = be16(ip + 2);
    } else if (type == 0x86dd && avail >= 48 && (ip[0] >> 4) == 6 && ip[6] == 17) {
        iphl = 40, alen = 16, saddr = 8, end = 40 + size_t{be16(ip + 4)};
    } else {
        return std::nullopt;
    }
    if (end < iphl + 8 || end > avail) {
        return std::nullopt;
    }
    const uint8_t* u = ip + iphl;
    const size_t ulen = be16(u + 4);
    if (ulen < 8 || ulen > end - iphl) {
        return std::nullopt;
    }
    return Udp{addr_of(ip + saddr, alen, u), addr_of(ip + saddr + alen, alen, u + 2), ip[alen == 4 ? 8 : 7],
               {u + 8, ulen - 8}};
}

// The relay's allocations (worker_net.h, what init() installed): what a
// frame that leaves may be. The dataplane must never relay for anyone else,
// to a peer without a permission, or out of the NIC to the relay itself.
using workerfuzz::Allocation;

bool permitted(const Allocation& a, const turn::Address& peer) {
    for (const auto& p : a.permitted) {
        if (p.same_ip(peer)) {
            return true;
        }
    }
    return false;
}
bool has_relayed(const Allocation& a, const turn::Address& r) { return a.relayed4 == r || a.relayed6 == r; }
// The allocation with relayed address `r`.
const Allocation* by_relayed(const turn::Address& r) {
    for (const Allocation& a : g->allocs) {
        if (has_relayed(a, r)) {
            return &a;
        }
    }
    return nullptr;
}
// The allocation of `client` on listening address `listen`.
const Allocation* by_client(const turn::Address& client, const turn::Address& listen) {
    for (const Allocation& a : g->allocs) {
        if (a.client == client && a.listen == listen) {
            return &a;
        }
    }
    return nullptr;
}
// The channel `a` has bound to exactly `peer`.
std::optional<uint16_t> channel_to(const Allocation& a, const turn::Address& peer) {
    for (const auto& [number, p] : a.channels) {
        if (p == peer) {
            return number;
        }
    }
    return std::nullopt;
}
// One of the relay's own IPs: a listening, relayed or external one (the
// external IPs from init() on, with the NAT's pairs or without).
bool own_ip(const turn::Address& ip) {
    if (ip.same_ip(g->net.external4) || ip.same_ip(g->net.external6)) {
        return true;
    }
    for (const Allocation& a : g->allocs) {
        if (a.listen.same_ip(ip) || (a.relayed4 && a.relayed4->same_ip(ip)) ||
            (a.relayed6 && a.relayed6->same_ip(ip))) {
            return true;
        }
    }
    return false;
}

// The peer a client's datagram `pl` (its UDP payload) names: its
// ChannelData's channel's, or its Send indication's first XOR-PEER-ADDRESS
// (the one classify.cc parse_send takes; RFC 8489 section 14.2), decoded
// here by hand.
std::optional<turn::Address> named_peer(const Allocation& x, std::span<const uint8_t> pl) {
    if (pl.size() >= 4 && (pl[0] & 0xc0) == 0x40) {
        for (const auto& [number, p] : x.channels) {
            if (number == be16(pl.data())) {
                return p;
            }
        }
        return std::nullopt;
    }
    if (pl.size() < 20) {
        return std::nullopt;
    }
    const size_t end = std::min(pl.size(), size_t{20} + be16(pl.data() + 2));
    for (size_t pos = 20; pos + 4 <= end;) {
        const uint16_t type = be16(pl.data() + pos), len = be16(pl.data() + pos + 2);
        const size_t v = pos + 4;
        if (v + len > end) {
            return std::nullopt;
        }
        if (type == turn::stun::attr::kXorPeerAddress) {
            // The length first: the family byte is inside only then.
            const size_t alen = len == 8 && pl[v + 1] == 1 ? 4 : len == 20 && pl[v + 1] == 2 ? 16 : 0;
            if (alen == 0) {
                return std::nullopt;
            }
            uint8_t ip[16], port[2];
            for (size_t k = 0; k < alen; k++) {
                ip[k] = pl[v + 4 + k] ^ pl[4 + k];  // magic cookie, then the transaction ID
            }
            port[0] = pl[v + 2] ^ 0x21;
            port[1] = pl[v + 3] ^ 0x12;
            return addr_of(ip, alen, port);
        }
        pos = v + ((len + 3u) & ~3u);
    }
    return std::nullopt;
}

// Relay-to-relay (dataplane/worker/route.cc own_destination, relayed_peer):
// a client's datagram `rx` to a peer that is a relayed address of this relay
// (another allocation's, or its own) or, with the NAT's pair of that
// family current (`nat`), the external address of one, sent from the
// sender's relayed address on that family's relay IP.
struct R2r {
    const Allocation* sender = nullptr;  // the allocation whose client sent it; null: not relay-to-relay
    turn::Address named;  // the peer the client named (channel or XOR-PEER-ADDRESS), which it must permit
    turn::Address to;     // the relayed address it goes to
    turn::Address from;   // the peer that allocation sees: the sender's relayed address, or its external one
};
R2r relay_to_relay(const Udp& rx, Nat nat) {
    const Allocation* x = by_client(rx.src, rx.dst);
    const std::optional<turn::Address> p = x != nullptr ? named_peer(*x, rx.payload) : std::nullopt;
    if (!p || !x->relayed(p->is_v4())) {
        return {};
    }
    const turn::Address& mine = *x->relayed(p->is_v4());
    if (by_relayed(*p) != nullptr) {
        return {x, *p, *p, mine};
    }
    // Behind the NAT: the pipeline swaps the rewritten frame's two IPs
    // (pipeline.cc present_external), so the receiving allocation sees the
    // sender's external address, which only a sender on the relay IP has.
    const Net& n = g->net;
    const bool v4 = p->is_v4();
    const turn::Address& relay = v4 ? n.nat_relay4 : n.nat_relay6;
    if (!nat.on(v4) || !p->same_ip(v4 ? n.external4 : n.external6) || !mine.same_ip(relay)) {
        return {};
    }
    const turn::Address to = relay.with_port(p->port);
    if (by_relayed(to) == nullptr) {
        return {};
    }
    return {x, *p, to, n.ext(mine)};
}

bool inside(std::span<const uint8_t> hay, std::span<const uint8_t> needle) {
    return needle.empty() || memmem(hay.data(), hay.size(), needle.data(), needle.size()) != nullptr;
}

// The next hop (MAC, VLAN ID or 0) a frame to `dst` must leave for, with
// the next hops byte 1 of the input set up (worker_net.h): its host entry,
// else its family's default; none: it must not be forwarded at all.
struct Hop {
    dptest::Mac mac;
    uint16_t vlan;
};
std::optional<Hop> next_hop_of(const turn::Address& dst, uint8_t sel) {
    using namespace workerfuzz;
    static const std::vector<HostHop> hosts = host_hops(g->net);
    if ((sel & kNhHosts) != 0) {
        for (const HostHop& h : hosts) {
            if (h.ip.same_ip(dst)) {
                return Hop{h.mac, h.vlan};
            }
        }
    }
    const bool v4 = dst.is_v4();
    if ((sel & (v4 ? kNhNoGw4 : kNhNoGw6)) != 0) {
        return std::nullopt;
    }
    const bool tagged = (sel & (v4 ? kNhGw4Vlan : kNhGw6Vlan)) != 0;
    return Hop{kGatewayMac, static_cast<uint16_t>(!tagged ? 0 : v4 ? kGatewayVlan4 : kGatewayVlan6)};
}

// A forwarded frame as the pipeline wrote it, its headers checked: from the
// port's MAC, at most one 802.1Q tag (a second one is "neither IPv4 nor
// IPv6"; everything after it is checked as an untagged frame's would be),
// IPv4 with a valid header checksum or IPv6, IP and UDP lengths that match
// the frame.
struct Forwarded {
    bool tagged;
    uint16_t tci;  // the tag's, or 0
    Udp udp;
    bool checksum_ok;  // the UDP checksum
};
Forwarded parse_forwarded(const Bytes& o, size_t i) {
    auto bad = [&](const char* why) {
        std::fprintf(stderr, "worker_fuzz: forwarded frame: %s\n", why);
        fail("a forwarded frame is malformed", i);
    };
    if (o.size() < 14 || std::memcmp(o.data() + 6, workerfuzz::kPortMac.data(), 6) != 0) {
        bad("short, or not from the port's MAC");
    }
    const bool tagged = be16(o.data() + 12) == 0x8100;
    const size_t l2 = tagged ? 18 : 14;
    if (o.size() < l2 + 20 + 8) {
        bad("short");
    }
    const uint16_t type = be16(o.data() + l2 - 2);
    const uint8_t* ip = o.data() + l2;
    const size_t iplen = o.size() - l2;  // the IP packet
    size_t iphl = 0, alen = 0, saddr = 0;  // IP header length, address length, source address offset
    if (type == 0x0800) {
        if (ip[0] != 0x45 || ip[9] != 17 || be16(ip + 2) != iplen || dptest::checksum(ip, 20) != 0) {
            bad("IPv4 header: version/IHL, protocol, total length or checksum");
        }
        iphl = 20, alen = 4, saddr = 12;
    } else if (type == 0x86dd) {
        if (iplen < 40 + 8 || (ip[0] >> 4) != 6 || ip[6] != 17 || be16(ip + 4) != iplen - 40) {
            bad("IPv6 header: version, next header or payload length");
        }
        iphl = 40, alen = 16, saddr = 8;
    } else {
        bad("neither IPv4 nor IPv6 (after at most one 802.1Q tag)");
    }
    const uint8_t* u = ip + iphl;
    const size_t ulen = iplen - iphl;
    if (be16(u + 4) != ulen) {
        bad("UDP length differs from the IP payload");
    }
    return {tagged,
            static_cast<uint16_t>(tagged ? be16(o.data() + 14) : 0),
            {addr_of(ip + saddr, alen, u), addr_of(ip + saddr + alen, alen, u + 2), ip[alen == 4 ? 8 : 7],
             {u + 8, ulen - 8}},
            udp_checksum_ok(ip + saddr, ip + saddr + alen, alen, u, ulen)};
}

// A frame out of the NIC port (invariants 4-6 in the header). Counts in
// *hairpins the frames that went round the pipeline twice (relay-to-relay).
void check_forwarded(const Sent& s, std::span<const uint8_t> in, uint8_t sel, Nat nat, size_t* hairpins) {
    const size_t i = s.frame;
    const Forwarded r = parse_forwarded(s.bytes, i);
    const turn::Address& src = r.udp.src;
    const turn::Address& dst = r.udp.dst;
    // What relay-to-relay fixes: the router may never send these back.
    if (own_ip(dst)) {
        fail("forwarded out of the NIC to one of the relay's own IPs (relayed, listening or external)", i);
    }
    const std::optional<Hop> hop = next_hop_of(dst, sel);
    if (!hop) {
        fail("forwarded to a destination without a next hop", i);
    }
    if (std::memcmp(s.bytes.data(), hop->mac.data(), 6) != 0) {
        fail("forwarded frame not to its destination's next hop's MAC", i);
    }
    if (r.tagged != (hop->vlan != 0)) {
        fail(r.tagged ? "forwarded frame tagged for a next hop that is not on a VLAN"
                      : "forwarded frame untagged (or not TPID 0x8100) for a next hop on a VLAN",
             i);
    }
    if (r.tci != hop->vlan) {  // priority and DEI 0
        fail("forwarded frame's 802.1Q TCI is not its next hop's VLAN ID with priority 0", i);
    }
    // The received frame was IPv4 or IPv6 UDP (after at most one tag) or it
    // would not have been forwarded.
    const std::optional<Udp> rx = parse_udp(in);
    if (!rx) {
        fail("forwarded a frame that was not UDP over IPv4 or IPv6", i);
    }
    if (received_checksum_ok(in) && !r.checksum_ok) {
        fail("forwarded UDP checksum wrong for a frame received with a valid one", i);
    }
    const std::span<const uint8_t> pl = r.udp.payload;
    unsigned hops = 1;  // relays the frame went through
    if (const Allocation* x = by_relayed(src)) {
        // To a peer, from a relayed address: sent by that allocation's
        // client, to the peer it named, which it permits.
        if (by_client(rx->src, rx->dst) != x) {
            fail("relayed to a peer for someone other than the allocation's client", i);
        }
        if (named_peer(*x, rx->payload) != dst) {
            fail("relayed to a peer the client did not name (channel or XOR-PEER-ADDRESS)", i);
        }
        if (!permitted(*x, dst)) {
            fail("relayed to a peer without a permission", i);
        }
        if (!inside(in, pl)) {
            fail("data sent to a peer that the received frame did not carry", i);
        }
    } else {
        // To a client, from its listening address: a peer's datagram to the
        // allocation's relayed address or, relay-to-relay, another (or the
        // same) allocation's client's sent to it, whose relayed address is
        // then the peer (behind the NAT, sent to this one's external
        // address: the sender's external address). Either way a peer it
        // permits, named by its channel if it has one bound to that
        // address, else in a Data indication.
        const Allocation* y = by_client(dst, src);
        if (y == nullptr) {
            fail("forwarded from neither a relayed address to a peer nor a listening address to its client", i);
        }
        turn::Address from = rx->src;
        if (!has_relayed(*y, rx->dst)) {
            const R2r r2r = relay_to_relay(*rx, nat);
            if (r2r.sender == nullptr || !has_relayed(*y, r2r.to)) {
                fail("to a client, from neither a peer's datagram to its allocation nor another client's to it", i);
            }
            if (!permitted(*r2r.sender, r2r.named)) {
                fail("relay-to-relay: the sending allocation has no permission for the peer its client named", i);
            }
            from = r2r.from;
            hops = 2;
            ++*hairpins;
        }
        if (!permitted(*y, from)) {
            fail("to a client from a peer its allocation does not permit", i);
        }
        if (pl.empty()) {
            fail("an empty message to a client", i);
        }
        const std::optional<uint16_t> channel = channel_to(*y, from);
        if ((pl[0] & 0xc0) == 0x40) {
            if (pl.size() < 4 || be16(pl.data() + 2) != pl.size() - 4 || !inside(in, pl.subspan(4))) {
                fail("ChannelData to a client: length field, or data the frame did not carry", i);
            }
            if (channel != be16(pl.data())) {
                fail("ChannelData to a client on a channel not bound to the peer it came from", i);
            }
        } else {
            turn::stun::MessageView v;
            if (turn::stun::parse(pl, v) != turn::stun::ParseError::kOk ||
                !v.is(turn::stun::Method::kData, turn::stun::Class::kIndication)) {
                fail("a message to a client that is neither ChannelData nor a Data indication", i);
            }
            const auto* data = v.find(turn::stun::attr::kData);
            const auto* xpa = v.find(turn::stun::attr::kXorPeerAddress);
            if (data == nullptr || xpa == nullptr || !inside(in, v.value(*data))) {
                fail("Data indication without DATA or XOR-PEER-ADDRESS, or data the frame did not carry", i);
            }
            turn::Address peer;
            if (turn::stun::decode_xor_address(v.value(*xpa), v.transaction_id(), peer) != turn::stun::AttrError::kOk ||
                peer != from) {
                fail("Data indication's XOR-PEER-ADDRESS is not the peer the data came from", i);
            }
            if (channel) {
                fail("Data indication from a peer the allocation has a channel to (RFC 8656 section 12)", i);
            }
            for (size_t k = data->offset + data->length; k < pl.size() && (k & 3) != 0; k++) {
                if (pl[k] != 0) {
                    fail("Data indication padding not zero", i);
                }
            }
        }
    }
    // The received TTL / hop limit was at least 2 at each relay, and each
    // sent one less (RFC 8656 section 14).
    if (rx->ttl < hops + 1 || r.udp.ttl != rx->ttl - hops) {
        fail(hops == 1 ? "forwarded TTL / hop limit is not one less than the received one (at least 2)"
                       : "relay-to-relay: TTL / hop limit is not two less than the received one (at least 3)",
             i);
    }
}

uint64_t sum(const dp::Counters& c, std::string_view prefix) {
    uint64_t s = 0;
    for (size_t k = 0; k < dp::kCounterCount; k++) {
        if (dp::counter_name(static_cast<Counter>(k)).starts_with(prefix)) {
            s += c.v[k];
        }
    }
    return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    init();
    if (size < 2) {
        return 0;
    }
    const size_t burst = (data[0] & 31u) + 1;
    const unsigned k = data[0] >> 5;
    const uint64_t step = k == 0 ? 0 : uint64_t{1} << (4 * k);
    const uint8_t sel = data[1];
    const uint16_t hr = workerfuzz::kHeadrooms[sel >> workerfuzz::kHeadroomShift];
    const size_t headroom = hr == 0xffff ? RTE_PKTMBUF_HEADROOM : hr;
    std::vector<In> frames;
    std::vector<NatOption> nat;  // the input's NAT options, in order
    uint8_t express_rest = 0;
    unsigned nsegs = 1;  // of the next frame: a chain marker before it says more
    uint16_t req[workerfuzz::kMaxSegs] = {};  // the marker's segment lengths
    for (size_t off = 2; off + 2 <= size && frames.size() < workerfuzz::kMaxFrames;) {
        const uint16_t word = be16(data + off);
        off += 2;
        if (const unsigned kind = workerfuzz::option_kind(word); kind != 0) {
            if (kind == workerfuzz::kOptNat && nat.size() < workerfuzz::kMaxNatOptions) {
                nat.push_back({frames.size(), workerfuzz::option_value(word)});
            } else if (kind == workerfuzz::kOptRest) {
                express_rest = static_cast<uint8_t>(workerfuzz::option_value(word));
            }
            continue;
        }
        if (const unsigned c = workerfuzz::chain_segs(word); c != 0) {
            if (off + 2 * (c - 1) > size) {
                break;  // no frame follows
            }
            nsegs = c;
            for (unsigned j = 0; j + 1 < c; j++, off += 2) {
                req[j] = be16(data + off);
            }
            continue;
        }
        const size_t len = std::min<size_t>(word & workerfuzz::kLenMask, size - off);
        In in{{data + off, len},
              size_t{word} >> workerfuzz::kTailShift & workerfuzz::kTailMask,
              kRxFlags[word >> workerfuzz::kFlagsShift],
              headroom};
        in.nsegs = nsegs;
        size_t left = len;
        for (unsigned j = 0; j + 1 < nsegs; j++) {
            in.seg[j] = static_cast<uint16_t>(std::min<size_t>(req[j], left));
            left -= in.seg[j];
        }
        in.seg[nsegs - 1] = static_cast<uint16_t>(left);
        frames.push_back(in);
        nsegs = 1;
        off += len;
    }
    if (frames.empty()) {
        return 0;
    }
    size_t chained = 0;
    for (const In& f : frames) {
        chained += f.nsegs > 1;
    }
    set_next_hops(sel);

    // Bandwidth budgets are per allocation, shared by the workers
    // (Allocation::tat): each worker starts from full ones, on the same clock
    // (g->now, never advanced between inputs: each input is its own run),
    // with nothing held ahead (AllocState::lease).
    const uint32_t nalloc = g->flows->config().max_allocations;
    auto fill_budgets = [&] {
        for (uint32_t i = 0; i < nalloc; i++) {
            g->flows->allocs[i].tat.store(0);
            for (dp::Worker& wk : g->w) {
                wk.state[i].lease = 0;
            }
        }
    };
    fill_budgets();
    const Run a = run(g->w[0], frames, burst, step, nat, express_rest);
    fill_budgets();
    const Run b = run(g->w[1], frames, burst, step, nat, express_rest);
    // The NAT's pairs while frame i was received (the same in both runs:
    // each replays the same messages from the same start, and check()
    // held the tables to them).
    auto nat_of = [&](size_t i) { return a.nat[i / burst]; };

    if (std::getenv("WORKER_FUZZ_VERBOSE") != nullptr) {  // what the input did, for people
        std::fprintf(stderr, "%zu frames, next hops 0x%02x, headroom %zu:", frames.size(), sel & 31u, headroom);
        if (!nat.empty() || express_rest != 0) {  // only then, so that the earlier seeds print as they did
            std::fprintf(stderr, " [NAT by burst:");
            for (const Nat& m : a.nat) {
                std::fprintf(stderr, " %s", m.v4 && m.v6 ? "46" : m.v4 ? "4" : m.v6 ? "6" : "-");
            }
            std::fprintf(stderr, "; express_rest %u]", express_rest);
        }
        for (size_t k2 = 0; k2 < dp::kCounterCount; k2++) {
            if (a.delta.v[k2] != 0) {
                const auto nm = dp::counter_name(static_cast<Counter>(k2));
                std::fprintf(stderr, " %.*s=%llu", static_cast<int>(nm.size()), nm.data(),
                             static_cast<unsigned long long>(a.delta.v[k2]));
            }
        }
        size_t tagged = 0;
        for (const Sent& s : a.nic) {
            tagged += s.bytes.size() >= 14 && be16(s.bytes.data() + 12) == 0x8100;
        }
        std::fprintf(stderr, " (lane finished %llu; %zu forwarded tagged; %zu chained)\n",
                     static_cast<unsigned long long>(a.express), tagged, chained);
    }
    for (const Run* r : {&a, &b}) {
        // A hairpinned frame (relay-to-relay) is forwarded twice, the first
        // time back into the pipeline rather than out of the NIC.
        const uint64_t fwd = sum(r->delta, "fwd_"), punt = sum(r->delta, "punt_"), drop = sum(r->delta, "drop_");
        const uint64_t again = r->delta.get(Counter::hairpin);
        if (r->delta.get(Counter::rx) != frames.size() || fwd != r->nic.size() + again || punt != r->exc.size() ||
            fwd + punt + drop != frames.size() + again) {
            fail("frames not accounted for: rx, hairpin, fwd_* (NIC), punt_* (exception port) and drop_* disagree");
        }
    }
    // Chained frames: punted, each of them, and nothing else as
    // punt_multi_segment (never forwarded: drain).
    for (const Run* r : {&a, &b}) {
        const bool lane = r == &a;
        if (r->delta.get(Counter::punt_multi_segment) != chained) {
            fail(lane ? "punt_multi_segment does not count the chained frames (express lane)"
                      : "punt_multi_segment does not count the chained frames (stages)");
        }
        size_t seen = 0;
        for (const Sent& s : r->exc) {
            seen += frames[s.frame].nsegs > 1;
        }
        if (seen != chained) {
            fail(lane ? "a chained frame did not reach the exception port (express lane)"
                      : "a chained frame did not reach the exception port (stages)");
        }
    }
    for (size_t k2 = 0; k2 < dp::kCounterCount; k2++) {
        if (a.delta.v[k2] != b.delta.v[k2]) {
            fail(std::string(dp::counter_name(static_cast<Counter>(k2))).insert(0, "the lane and the stages differ in ").c_str());
        }
    }
    for (auto [x, y] : {std::pair{&a.nic, &b.nic}, std::pair{&a.exc, &b.exc}}) {
        for (size_t i = 0; i < x->size(); i++) {
            if ((*x)[i].frame != (*y)[i].frame || (*x)[i].bytes != (*y)[i].bytes || (*x)[i].segs != (*y)[i].segs) {
                fail("the lane and the stages sent different frames", (*x)[i].frame);
            }
        }
    }
    // Never a rewritten frame: one that went round (relay-to-relay) and was
    // punted on its second round would reach the kernel from one of its own
    // addresses, which Linux discards (a martian source).
    for (const Sent& s : a.exc) {
        const auto f = frames[s.frame].bytes;
        if (s.bytes.size() != f.size() || !std::equal(f.begin(), f.end(), s.bytes.begin())) {
            fail("a punted frame changed on its way to the kernel", s.frame);
        }
    }
    // Relay-to-relay: what went round twice ends as a frame to a client
    // (check_forwarded) or is dropped; only a client's datagram to a relayed
    // address of this relay may go round. Route decides whether the second
    // round can send before the first (what it cannot is punted unchanged),
    // so with tables that no burst sees change, as here, nothing is dropped
    // as unsendable there.
    size_t hairpins = 0;
    for (const Sent& s : a.nic) {
        check_forwarded(s, frames[s.frame].bytes, sel, nat_of(s.frame), &hairpins);
    }
    if (a.delta.get(Counter::drop_hairpin_unsendable) != 0) {
        fail("relay-to-relay: the second round could not send what route let go round");
    }
    size_t could = 0;  // frames that may go round
    for (size_t i = 0; i < frames.size(); i++) {
        const In& f = frames[i];
        const std::optional<Udp> rx = f.nsegs == 1 ? parse_udp(f.bytes) : std::nullopt;
        could += rx && relay_to_relay(*rx, nat_of(i)).sender != nullptr;
    }
    if (hairpins > a.delta.get(Counter::hairpin) || a.delta.get(Counter::hairpin) > could) {
        fail("hairpin counts more than the clients' datagrams to relayed addresses (or, with the NAT's pair, "
             "their external addresses), or fewer than went round");
    }
    return 0;
}
