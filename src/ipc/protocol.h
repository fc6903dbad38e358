// Control plane <-> dataplane IPC, version 1: typed fixed-layout messages over a
// unix SOCK_SEQPACKET socket (one message per datagram, so no framing). Both
// processes run on the same host, so fields are in host byte order; every
// struct is trivially copyable with its size pinned by static_assert, and
// decode() checks type, version and exact length before a message is used.
//
// Session: on every (re)connect the dataplane sends Hello; the control plane
// answers Settings (relay-wide rules), ExternalIps (behind a NAT only),
// ResyncBegin, re-sends its whole offloaded state (Allocation/Permission/
// Channel Add), then ResyncEnd; the dataplane drops any entry not re-added
// between the two. After that, incremental Add/Del messages follow.
// The dataplane never decides policy: it only caches what it is told.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <span>
#include <type_traits>

#include "net/address.h"

namespace turn::ipc {

constexpr uint16_t kVersion = 1;
constexpr size_t kMaxMessage = 4096;

enum class MsgType : uint16_t {
    kHello = 1,            // dp -> cp: (re)connected, please resync
    kResyncBegin = 2,      // cp -> dp
    kResyncEnd = 3,        // cp -> dp
    kSettings = 4,         // cp -> dp: relay-wide forwarding rules, before each ResyncBegin; dp -> cp: applied
    kExternalIps = 5,      // cp -> dp: the relay IPs' external (1:1 NAT) IPs, after Settings; dp -> cp: applied
    kAllocationAdd = 10,   // cp -> dp: client 5-tuple and relayed address(es)
    kAllocationDel = 11,
    kPermissionAdd = 12,   // (relayed addr, peer IP) may exchange data
    kPermissionDel = 13,
    kChannelAdd = 14,      // (client 5-tuple, channel) <-> (relayed addr, peer addr)
    kChannelDel = 15,
    kLimitSet = 16,        // per-allocation bandwidth limit
    kCountersRequest = 20, // cp -> dp
    kCountersReport = 21,  // dp -> cp: per-allocation counters, in chunks
    kWorkerCounters = 22,  // dp -> cp: one worker's packet counters, with each CountersReport
    kPortCounters = 23,    // dp -> cp: one DPDK port's link and statistics, with each CountersReport
    kNextHopCounters = 24, // dp -> cp: the next-hop table's state and totals, with each CountersReport
};
// New types are appended without a version change as long as a peer that
// does not know one can drop it and go on: the control plane counts an
// unknown or malformed datagram (turn_dataplane_bad_messages_total), logs
// each unknown type once per connection (dataplane_bad_message) and keeps
// the link, and the dataplane's Applier counts it as malformed and keeps the
// link. So a dataplane that sends PortCounters works with a control plane
// that predates them, and a control plane that knows them just exports no
// port series for an older dataplane. A message an old peer must not ignore
// needs kVersion 2. Settings were added without one: a dataplane that predates
// them counts them as malformed and forwards as before (the received DSCP
// kept), which is only wrong where [server].dscp sets a DSCP.

// Address on the wire: 20 bytes.
struct WireAddress {
    uint8_t family = 0;  // 4 or 6, 0 = none
    uint8_t pad = 0;
    uint16_t port = 0;
    uint8_t ip[16] = {};

    static WireAddress from(const Address& a) {
        WireAddress w;
        w.family = static_cast<uint8_t>(a.family);
        w.port = a.port;
        std::memcpy(w.ip, a.ip.data(), 16);
        return w;
    }
    Address to() const {
        Address a;
        a.family = family == 4 ? Family::kIPv4 : family == 6 ? Family::kIPv6 : Family::kNone;
        a.port = port;
        // IPv4 keeps ip[4..15] zero (Address equality and hashing rely on it).
        std::memcpy(a.ip.data(), ip, a.ip_len());
        return a;
    }
    // A known family in canonical form: pad zero, and the bytes the family
    // does not use (ip[4..15] for IPv4, all of ip for none) zero. The
    // dataplane compares whole WireAddresses to tell a refresh from a change
    // while its hash keys use only the family's bytes, so two spellings of
    // one address would be two records for one key (to() and from() always
    // give the canonical one).
    bool valid() const {
        const size_t used = family == 4 ? 4 : family == 6 ? 16 : 0;
        if ((family != 0 && family != 4 && family != 6) || pad != 0) {
            return false;
        }
        for (size_t i = used; i < sizeof ip; i++) {
            if (ip[i] != 0) {
                return false;
            }
        }
        return family != 0 || port == 0;
    }
};
static_assert(sizeof(WireAddress) == 20);

struct Header {
    uint16_t version = kVersion;
    MsgType type{};
    uint32_t length = 0;  // whole message including this header
    uint64_t seq = 0;     // sender's sequence number, for logs and acks
};
static_assert(sizeof(Header) == 16);

struct Hello {
    static constexpr MsgType kType = MsgType::kHello;
    Header h;
    uint32_t pid = 0;
    uint32_t workers = 0;
    uint64_t boot_id = 0;  // random per process start
};

struct ResyncBegin {
    static constexpr MsgType kType = MsgType::kResyncBegin;
    Header h;
    uint64_t generation = 0;
};

// How relayed datagrams' IPv4 TOS / IPv6 Traffic Class byte is formed from
// the received one: (received & tos_keep) | tos_set. The control plane's
// [server].dscp: "keep" is {0xFF, 0}; a fixed DSCP d is {0x03, d << 2}
// (ECN is always kept, RFC 8656 section 14). Applies from the next packet a
// worker forwards; a dataplane starts with {0xFF, 0}. The dataplane sends
// each valid Settings back once applied, so the control plane can tell a
// dataplane that predates them (turn_dataplane_settings_applied).
struct Settings {
    static constexpr MsgType kType = MsgType::kSettings;
    Header h;
    uint8_t tos_keep = 0xFF;
    uint8_t tos_set = 0;
    uint8_t pad[6] = {};
};
static_assert(sizeof(Settings) == 24);

// Behind a 1:1 NAT ([server].external_ips): for each family, the IP the
// relay IP is reached at from outside (XOR-RELAYED-ADDRESS carries it) and
// that relay IP; family 0 for a family without one (then both are 0). Sent
// only by a control plane with external IPs, after Settings and before
// ResyncBegin; a dataplane clears what an earlier one set at a ResyncBegin
// with no ExternalIps since the previous one. A peer address on an
// external IP with a relayed port is one of this relay's own relayed
// addresses: the dataplane takes such a packet to that allocation itself,
// presented as coming from the sender's external address, as the socket
// path does (Config::to_internal / to_external). The dataplane sends each
// ExternalIps it applied back unchanged; until that echo comes the control
// plane keeps permissions and channels whose peer is on an external IP on
// the socket path (a dataplane that predates the message would send such
// packets to its router, i.e. to the NAT).
struct ExternalIps {
    static constexpr MsgType kType = MsgType::kExternalIps;
    Header h;
    WireAddress external_v4;  // port 0
    WireAddress relay_v4;
    WireAddress external_v6;
    WireAddress relay_v6;
};
static_assert(sizeof(ExternalIps) == 96);

struct ResyncEnd {
    static constexpr MsgType kType = MsgType::kResyncEnd;
    Header h;
    uint64_t generation = 0;
    uint64_t entries = 0;  // how many Add messages the resync carried
};

struct AllocationAdd {
    static constexpr MsgType kType = MsgType::kAllocationAdd;
    Header h;
    uint64_t alloc_id = 0;
    WireAddress client;      // client's transport address: family 4 or 6, a port
    WireAddress listen;      // server address the client talks to: the client's family, a port
    WireAddress relayed_v4;  // family 4, or 0 when absent
    WireAddress relayed_v6;  // family 6, or 0 when absent
    uint64_t bandwidth_bps = 0;  // 0 = unlimited
    uint8_t dont_fragment = 0;
    uint8_t pad[7] = {};
};

struct AllocationDel {
    static constexpr MsgType kType = MsgType::kAllocationDel;
    Header h;
    uint64_t alloc_id = 0;
};

struct PermissionAdd {
    static constexpr MsgType kType = MsgType::kPermissionAdd;
    Header h;
    uint64_t alloc_id = 0;
    WireAddress relayed;  // the allocation's relayed address of the peer's family
    WireAddress peer;     // port ignored: permissions are per IP (RFC 8656 9)
};
struct PermissionDel {
    static constexpr MsgType kType = MsgType::kPermissionDel;
    Header h;
    uint64_t alloc_id = 0;
    WireAddress relayed;
    WireAddress peer;
};

struct ChannelAdd {
    static constexpr MsgType kType = MsgType::kChannelAdd;
    Header h;
    uint64_t alloc_id = 0;
    WireAddress relayed;
    WireAddress peer;
    uint16_t channel = 0;
    uint8_t pad[6] = {};
};
struct ChannelDel {
    static constexpr MsgType kType = MsgType::kChannelDel;
    Header h;
    uint64_t alloc_id = 0;
    WireAddress relayed;
    WireAddress peer;
    uint16_t channel = 0;
    uint8_t pad[6] = {};
};

struct LimitSet {
    static constexpr MsgType kType = MsgType::kLimitSet;
    Header h;
    uint64_t alloc_id = 0;
    uint64_t bandwidth_bps = 0;
};

struct CountersRequest {
    static constexpr MsgType kType = MsgType::kCountersRequest;
    Header h;
};

struct AllocationCounters {
    uint64_t alloc_id = 0;
    uint64_t to_peer_packets = 0;
    uint64_t to_peer_bytes = 0;
    uint64_t to_client_packets = 0;
    uint64_t to_client_bytes = 0;
    uint64_t dropped_packets = 0;  // rate limit and no-permission drops
};
static_assert(sizeof(AllocationCounters) == 48);

struct CountersReport {
    static constexpr MsgType kType = MsgType::kCountersReport;
    static constexpr size_t kMaxEntries = 80;
    Header h;
    uint32_t count = 0;
    uint8_t last = 0;  // 1 on the final chunk of a report
    // 1: the entries are the final totals of allocations removed since the
    // last report (their chunks come first, before the live allocations'; a
    // control plane that predates the flag reads them as live ones). An
    // id's final and a live entry of the same id belong to two installs
    // (ids of a control plane that restarted without its state start again).
    uint8_t finals = 0;
    uint8_t pad[2] = {};
    AllocationCounters entries[kMaxEntries];
};
static_assert(sizeof(CountersReport) <= kMaxMessage);

// One dataplane worker's packet counters (ipc/dataplane_counters.h, in that
// order; `count` of them, as many as the sender knows), its client-cache
// statistics and the packets its express lane finished; all cumulative
// since the dataplane process started. Sent before the CountersReport
// chunks that answer a CountersRequest.
struct WorkerCounters {
    static constexpr MsgType kType = MsgType::kWorkerCounters;
    static constexpr size_t kMaxCounters = 64;
    Header h;
    uint32_t worker = 0;
    uint32_t count = 0;
    uint64_t counters[kMaxCounters] = {};
    uint64_t cache_lookups = 0;
    uint64_t cache_misses = 0;
    uint64_t express_packets = 0;
};
static_assert(sizeof(WorkerCounters) <= kMaxMessage);

// Which of the dataplane's two ports a PortCounters describes.
enum class PortRole : uint8_t {
    kNic = 0,        // the network
    kException = 1,  // the kernel's side: rx = kernel egress, tx = packets punted to the kernel
};
constexpr size_t kPortRoles = 2;

// One of the dataplane's DPDK ports: its name, its link as
// rte_eth_link_get_nowait reports it and its rte_eth_stats, cumulative since
// the port started (the dataplane process's start). Sent after the
// WorkerCounters and before the CountersReport chunks that answer a
// CountersRequest; a port whose statistics could not be read is left out
// of that report.
struct PortCounters {
    static constexpr MsgType kType = MsgType::kPortCounters;
    // RTE_ETH_NAME_MAX_LEN, so no DPDK port name is cut. NUL-padded; the
    // dataplane always leaves a NUL, the control plane does not rely on it.
    static constexpr size_t kNameLen = 64;
    Header h;
    PortRole role{};
    uint8_t link_up = 0;  // 1: up
    uint8_t pad[2] = {};
    uint32_t link_speed_mbps = 0;  // 0: down, none or unknown
    char name[kNameLen] = {};
    uint64_t ipackets = 0;
    uint64_t opackets = 0;
    uint64_t ibytes = 0;
    uint64_t obytes = 0;
    uint64_t imissed = 0;    // dropped by the port: its rx ring was full
    uint64_t ierrors = 0;    // erroneous frames received
    uint64_t oerrors = 0;    // transmissions that failed
    uint64_t rx_nombuf = 0;  // receives that failed for want of an mbuf
};
static_assert(sizeof(PortCounters) == 152);

// The dataplane's next-hop table (dataplane/nexthop/nexthop.h): where its
// fast path sends packets. Host entries come from the kernel's neighbour
// table (the kernel mirror) or are learned from the kernel's own egress;
// learned ones expire after their TTL and make room for newer ones when the
// table is full. Gauges are the state at the report; totals are cumulative
// since the dataplane process started. Sent after the PortCounters and
// before the CountersReport chunks that answer a CountersRequest.
struct NextHopCounters {
    static constexpr MsgType kType = MsgType::kNextHopCounters;
    Header h;
    uint32_t capacity = 0;   // host entries the table holds (turn-dataplane --nexthops)
    uint32_t hosts = 0;      // host entries now, learned ones included (<= capacity)
    uint32_t learned = 0;    // of hosts, learned from kernel egress (<= hosts)
    uint8_t default4 = 0;    // 1: an IPv4 default next hop is set (the kernel's default route, or --gw4)
    uint8_t default6 = 0;    // 1: an IPv6 one
    uint8_t mirror = 0;      // 1: the kernel mirror runs (not --no-kernel-mirror)
    uint8_t pad = 0;
    uint32_t routes4 = 0;    // kernel routes more specific than the default, IPv4 (NextHops::kMaxPrefixes + 1: too many)
    uint32_t routes6 = 0;    // the same, IPv6
    uint64_t learned_total = 0;    // learned entries installed
    uint64_t learned_expired = 0;  // learned entries removed at their TTL
    uint64_t learned_evicted = 0;  // learned entries removed to make room for a newer one
    uint64_t learn_refused = 0;    // learned next hops not installed: the table full of neighbours, or no free slot yet
    uint64_t neigh_set = 0;        // kernel mirror: neighbour entries installed or changed
    uint64_t neigh_removed = 0;    // kernel mirror: neighbour entries removed (failed, deleted)
    uint64_t mac_retired = 0;      // kernel mirror: entries removed with a neighbour whose MAC changed or went
    uint64_t flushes = 0;          // kernel mirror: full flushes (lost notifications)
};
static_assert(sizeof(NextHopCounters) == 104);

// has_unique_object_representations: no hidden padding, so encode() never
// sends uninitialised bytes.
template <typename M>
concept Message = std::is_trivially_copyable_v<M> && std::has_unique_object_representations_v<M> &&
                  requires { M::kType; } && std::is_same_v<decltype(M::h), Header>;

// Fills the header and returns the bytes to send.
template <Message M>
std::span<const uint8_t> encode(M& m, uint64_t seq) {
    m.h.version = kVersion;
    m.h.type = M::kType;
    m.h.length = static_cast<uint32_t>(sizeof(M));
    m.h.seq = seq;
    return {reinterpret_cast<const uint8_t*>(&m), sizeof(M)};
}

// Header of a received datagram, if it is long enough and of our version.
inline std::optional<Header> peek(std::span<const uint8_t> data) {
    if (data.size() < sizeof(Header)) {
        return std::nullopt;
    }
    Header h;
    std::memcpy(&h, data.data(), sizeof h);
    if (h.version != kVersion || h.length != data.size()) {
        return std::nullopt;
    }
    return h;
}

// Per-type checks of field values a peer process could get wrong; a message
// that fails is dropped like a malformed one.
template <Message M>
bool valid(const M& m) {
    // Permission and Channel Add/Del: a peer and the relayed address that
    // serves it, of one family (the control plane sends none for a peer
    // whose family the allocation has no relayed address of).
    if constexpr (requires { m.relayed; m.peer; }) {
        if (!m.relayed.valid() || !m.peer.valid() || (m.relayed.family != 4 && m.relayed.family != 6) ||
            m.peer.family != m.relayed.family) {
            return false;
        }
    }
    // AllocationAdd: the client 5-tuple is one family, with ports (the
    // dataplane's allocation line has one family for the client and its
    // listening address); each relayed address of its own family or absent.
    if constexpr (requires { m.client; m.listen; m.relayed_v4; m.relayed_v6; }) {
        if (!m.client.valid() || !m.listen.valid() || !m.relayed_v4.valid() || !m.relayed_v6.valid() ||
            (m.client.family != 4 && m.client.family != 6) || m.client.port == 0 ||
            m.listen.family != m.client.family || m.listen.port == 0 ||
            (m.relayed_v4.family != 0 && m.relayed_v4.family != 4) ||
            (m.relayed_v6.family != 0 && m.relayed_v6.family != 6)) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, CountersReport>) {
        if (m.count > CountersReport::kMaxEntries) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, WorkerCounters>) {
        if (m.count > WorkerCounters::kMaxCounters) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, Settings>) {
        // ECN kept, set bits not also kept, padding zero.
        if ((m.tos_keep & 0x03) != 0x03 || (m.tos_keep & m.tos_set) != 0 ||
            std::any_of(std::begin(m.pad), std::end(m.pad), [](uint8_t b) { return b != 0; })) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, ExternalIps>) {
        // Per family: none (both family 0) or an external IP and a relay IP
        // of that family, neither unspecified, not the same, ports 0; at
        // least one family.
        auto specified = [](const WireAddress& a) {
            return std::any_of(std::begin(a.ip), std::end(a.ip), [](uint8_t b) { return b != 0; });
        };
        auto pair_ok = [&](const WireAddress& ext, const WireAddress& relay, uint8_t fam) {
            if (!ext.valid() || !relay.valid() || ext.port != 0 || relay.port != 0) {
                return false;
            }
            if (ext.family == 0) {
                return relay.family == 0;
            }
            return ext.family == fam && relay.family == fam && specified(ext) && specified(relay) &&
                   std::memcmp(ext.ip, relay.ip, 16) != 0;
        };
        if (!pair_ok(m.external_v4, m.relay_v4, 4) || !pair_ok(m.external_v6, m.relay_v6, 6) ||
            (m.external_v4.family == 0 && m.external_v6.family == 0)) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, PortCounters>) {
        if (m.role != PortRole::kNic && m.role != PortRole::kException) {
            return false;
        }
    }
    if constexpr (std::is_same_v<M, NextHopCounters>) {
        if (m.hosts > m.capacity || m.learned > m.hosts || m.default4 > 1 || m.default6 > 1 || m.mirror > 1 ||
            m.pad != 0) {
            return false;
        }
    }
    return true;
}

// Copies a received datagram into M if type and size match exactly and the
// fields pass valid().
template <Message M>
std::optional<M> decode(std::span<const uint8_t> data) {
    const auto h = peek(data);
    if (!h || h->type != M::kType || data.size() != sizeof(M)) {
        return std::nullopt;
    }
    M m;
    std::memcpy(&m, data.data(), sizeof m);
    if (!valid(m)) {
        return std::nullopt;
    }
    return m;
}

}  // namespace turn::ipc
