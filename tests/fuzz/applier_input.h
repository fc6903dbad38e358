// The input format of applier_fuzz.cc, shared with its seed generator
// (applier_seeds.cc): how bytes become IPC datagrams for dp::Applier.
//
//   input   := config record*
//   config  := 1 byte; bit 0 set: small tables (kSmall, "table full" paths
//              reachable), clear: roomy tables (kRoomy)
//   record  := len:u16 little-endian, body[len]   (len taken modulo
//              kMaxMessage + 1 and cut to what the input has left)
//   body    := op field*                           structured message
//            | kRaw byte*                          the bytes as the datagram
//            | corruption op field*                a structured message, then
//                                                  broken as `corruption` says
//
// op (body[0] < kRaw) picks the message type, op_of(): 0xe0-0xef
// ExternalIps, any other byte b the type b % kOps (the types before
// ExternalIps, which keep the numbers the committed seeds use); its fields
// follow, one byte each, 0 when the body is shorter (so a short body is
// still a message):
//   ResyncBegin     gen
//   ResyncEnd       gen entries
//   AllocationAdd   id client listen relayed_v4 relayed_v6 bw
//   AllocationDel   id
//   PermissionAdd   id relayed peer           (PermissionDel the same)
//   ChannelAdd      id relayed peer channel   (ChannelDel the same)
//   LimitSet        id bw
//   CountersRequest -
//   Settings        keep set pad          (tos_keep, tos_set and pad[0] as
//                                          they are: valid and invalid rules)
//   ExternalIps     pair4 pair6 flaw      (the NAT's pairs, below)
// id: alloc id (byte & 7); gen: the byte; bw: kBandwidths[byte & 3];
// channel: kChannels[byte & 7] (0x4000-0x4003 and four invalid numbers);
// an address byte: 0xff = family 0 (none), else bit 7 = IPv6, bits 4-5 = IP
// index, bits 0-1 = port index, in the pool of the field (client, listen,
// relayed, peer): IPv4 198.18.<pool>.<1 + ip>, IPv6 fd00::<pool>:<1 + ip>,
// port kPortBase[pool] + index; the listen pool has 2 IPs and 2 ports per
// family (ListenSet holds 16), the others 4 and 4.
// A field may name an address of the other family or none: the Applier must
// cope (a key it cannot build is a full table, never a crash).
// ExternalIps: a pair byte per family, bits 0-1 the external IP (0: none,
// the family's pair absent; 1-3: 198.19.7.<n>, fd00:7::<n>), bits 2-3 the
// relay IP (0-1: the relayed pool's IPs 198.18.2.<1 + n>, fd00::2:<1 + n>;
// 2-3: IPs no allocation relays on, 198.18.9.<n - 1>, fd00::9:<n - 1>).
// So 24 different pairs, more than the 4 the dataplane keeps. The flaw
// byte breaks one family's pair (bit 7 clear: IPv4's, set: IPv6's; one
// without a pair first gets external 1 and relay 0) with a field value
// ipc::valid() refuses: flaw % kFlaws (enum Flaw); 0 leaves it whole. Both
// pair bytes 0 (a short body) is itself invalid: no family at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ipc/protocol.h"

namespace applierfuzz {

namespace ipc = turn::ipc;

constexpr uint8_t kConfigSmall = 1;

enum Op : uint8_t {
    kResyncBegin = 0,
    kResyncEnd,
    kAllocationAdd,
    kAllocationDel,
    kPermissionAdd,
    kPermissionDel,
    kChannelAdd,
    kChannelDel,
    kLimitSet,
    kCountersRequest,
    kSettings,  // appended: the ops before it keep their numbers (committed seeds)
    kOps,
    // Appended after kOps rather than before it: growing kOps would change
    // what b % kOps means for every other byte, and a committed seed
    // (raw-max-size, whose 0xaa filler bytes start records) would run other
    // messages. No committed seed starts a record (or names a corrupted
    // record's op) with a byte of 0xe0-0xef, so they are free.
    kExternalIps = 0xe0,
};
constexpr uint8_t kExternalIpsLast = 0xef;

// The message type of op byte b (also a corruption's second byte).
constexpr uint8_t op_of(uint8_t b) {
    return b >= kExternalIps && b <= kExternalIpsLast ? uint8_t{kExternalIps} : static_cast<uint8_t>(b % kOps);
}

// What the ExternalIps flaw byte does to its family's pair. Each makes the
// message invalid under protocol.h's rule for ExternalIps.
enum Flaw : uint8_t {
    kWhole = 0,          // no flaw
    kNoRelay,            // an external IP without its relay IP (half a pair)
    kNoExternal,         // a relay IP without its external IP (half a pair)
    kOtherFamily,        // both addresses of the other family in this family's fields
    kMixedFamilies,      // the relay IP of the other family
    kExternalZero,       // the external IP unspecified (0.0.0.0 / ::)
    kRelayZero,          // the relay IP unspecified
    kEqual,              // the relay IP equal to the external IP
    kExternalPort,       // the external address with a port
    kRelayPort,          // the relay address with a port
    kRelayPad,           // the relay address's pad byte set (not canonical)
    kRelayBadFamily,     // the relay address's family 5
    kNotCanonical,       // IPv4: the relay's ip[15] set; IPv6 (all 16 bytes used):
                         // the pair absent (both families 0) but the relay's ip left
    kFlaws,
};

// body[0] >= kRaw: not a structured message.
constexpr uint8_t kRaw = 0xf0;
enum Corruption : uint8_t {
    kBadVersion = 0xf1,   // header version 2
    kBadLength = 0xf2,    // header length one more than the datagram
    kUnknownType = 0xf3,  // type 99
    kTruncated = 0xf4,    // last byte cut (header length still says the whole)
    kTruncatedFix = 0xf5, // last byte cut, header length matching: wrong size for its type
    kExtended = 0xf6,     // one zero byte more, header length matching
    kBadFamily = 0xf7,    // first address field's family 5 (no effect on types without addresses)
    kPadSet = 0xf8,       // first address field's pad byte 1: not canonical
    kIpTail = 0xf9,       // first address field's ip[15] = 1: not canonical for IPv4 or no family,
                          // another address for IPv6
    kLastCorruption = kIpTail,
};

enum Pool : uint8_t { kClientPool = 0, kListenPool = 1, kRelayedPool = 2, kPeerPool = 3 };
constexpr uint16_t kPortBase[4] = {40000, 3478, 50000, 60000};
constexpr uint8_t kNone = 0xff;
constexpr uint64_t kBandwidths[4] = {0, 64000, 1000000, 1ull << 40};
constexpr uint16_t kChannels[8] = {0x4000, 0x4001, 0x4002, 0x4003, 0x0000, 0x3fff, 0x7fff, 0xffff};

// The address byte for (family, ip index, port index).
constexpr uint8_t sel(bool v6, unsigned ip, unsigned port) {
    return static_cast<uint8_t>((v6 ? 0x80u : 0u) | (ip & 3u) << 4 | (port & 3u));
}
// The channel byte for a channel number of kChannels.
constexpr uint8_t chan_sel(uint16_t ch) {
    for (uint8_t i = 0; i < 8; i++) {
        if (kChannels[i] == ch) {
            return i;
        }
    }
    return 0;
}

inline ipc::WireAddress addr(Pool pool, uint8_t b) {
    ipc::WireAddress w;
    if (b == kNone) {
        return w;
    }
    const unsigned lim = pool == kListenPool ? 1 : 3;
    const unsigned ip = (b >> 4) & lim;
    const unsigned port = b & lim;
    w.port = static_cast<uint16_t>(kPortBase[pool] + port);
    if (b & 0x80) {
        w.family = 6;
        w.ip[0] = 0xfd;
        w.ip[13] = pool;
        w.ip[15] = static_cast<uint8_t>(1 + ip);
    } else {
        w.family = 4;
        w.ip[0] = 198;
        w.ip[1] = 18;
        w.ip[2] = pool;
        w.ip[3] = static_cast<uint8_t>(1 + ip);
    }
    return w;
}

// The ExternalIps addresses of pair byte `b` for family `fam` (4 or 6):
// external and relay, both family 0 when bits 0-1 are 0. Ports 0.
inline void nat_pair(uint8_t fam, uint8_t b, ipc::WireAddress& ext, ipc::WireAddress& relay) {
    ext = {};
    relay = {};
    const unsigned e = b & 3u;
    const unsigned r = (b >> 2) & 3u;
    if (e == 0) {
        return;
    }
    ext.family = relay.family = fam;
    if (fam == 4) {
        const uint8_t x[4] = {198, 19, 7, static_cast<uint8_t>(e)};
        const uint8_t y[4] = {198, 18, static_cast<uint8_t>(r < 2 ? kRelayedPool : 9),
                              static_cast<uint8_t>(r < 2 ? 1 + r : r - 1)};
        std::memcpy(ext.ip, x, 4);
        std::memcpy(relay.ip, y, 4);
    } else {
        ext.ip[0] = relay.ip[0] = 0xfd;
        ext.ip[3] = 7;
        ext.ip[15] = static_cast<uint8_t>(e);
        relay.ip[13] = static_cast<uint8_t>(r < 2 ? kRelayedPool : 9);
        relay.ip[15] = static_cast<uint8_t>(r < 2 ? 1 + r : r - 1);
    }
}

// Family `fam`'s pair with flaw `flaw` (Flaw) applied: invalid unless kWhole.
inline void nat_flaw(uint8_t fam, uint8_t flaw, ipc::WireAddress& ext, ipc::WireAddress& relay) {
    if (flaw == kWhole) {
        return;
    }
    if (ext.family == 0) {
        nat_pair(fam, 1, ext, relay);  // external 1, relay 0: a whole pair to break
    }
    ipc::WireAddress oext, orelay;  // the other family's pair of the same choice
    nat_pair(fam == 4 ? 6 : 4, 1, oext, orelay);
    switch (flaw) {
    case kNoRelay: relay = {}; break;
    case kNoExternal: ext = {}; break;
    case kOtherFamily: ext = oext; relay = orelay; break;
    case kMixedFamilies: relay = orelay; break;
    case kExternalZero: std::memset(ext.ip, 0, 16); break;
    case kRelayZero: std::memset(relay.ip, 0, 16); break;
    case kEqual: relay = ext; break;
    case kExternalPort: ext.port = 3478; break;
    case kRelayPort: relay.port = 50000; break;
    case kRelayPad: relay.pad = 1; break;
    case kRelayBadFamily: relay.family = 5; break;
    default:  // kNotCanonical
        if (fam == 4) {
            relay.ip[15] = 1;
        } else {
            ext = {};
            relay.family = 0;
        }
        break;
    }
}

// Reads fields; 0 past the end.
struct Fields {
    const uint8_t* p;
    size_t n;
    size_t i = 0;
    uint8_t next() { return i < n ? p[i++] : 0; }
};

template <typename M>
std::vector<uint8_t> bytes_of(M& m, uint64_t seq) {
    const auto s = ipc::encode(m, seq);
    return {s.begin(), s.end()};
}

// The datagram of structured op `op` with fields f (encoded, header filled).
inline std::vector<uint8_t> build(uint8_t op, Fields f, uint64_t seq) {
    const uint8_t o = op_of(op);
    switch (o) {
    case kResyncBegin: {
        ipc::ResyncBegin m{};
        m.generation = f.next();
        return bytes_of(m, seq);
    }
    case kResyncEnd: {
        ipc::ResyncEnd m{};
        m.generation = f.next();
        m.entries = f.next();
        return bytes_of(m, seq);
    }
    case kAllocationAdd: {
        ipc::AllocationAdd m{};
        m.alloc_id = f.next() & 7u;
        m.client = addr(kClientPool, f.next());
        m.listen = addr(kListenPool, f.next());
        m.relayed_v4 = addr(kRelayedPool, f.next());
        m.relayed_v6 = addr(kRelayedPool, f.next());
        m.bandwidth_bps = kBandwidths[f.next() & 3u];
        return bytes_of(m, seq);
    }
    case kAllocationDel: {
        ipc::AllocationDel m{};
        m.alloc_id = f.next() & 7u;
        return bytes_of(m, seq);
    }
    case kPermissionAdd:
    case kPermissionDel: {
        ipc::PermissionAdd m{};  // same layout as PermissionDel
        m.alloc_id = f.next() & 7u;
        m.relayed = addr(kRelayedPool, f.next());
        m.peer = addr(kPeerPool, f.next());
        if (o == kPermissionDel) {
            ipc::PermissionDel d{};
            d.alloc_id = m.alloc_id;
            d.relayed = m.relayed;
            d.peer = m.peer;
            return bytes_of(d, seq);
        }
        return bytes_of(m, seq);
    }
    case kChannelAdd:
    case kChannelDel: {
        ipc::ChannelAdd m{};
        m.alloc_id = f.next() & 7u;
        m.relayed = addr(kRelayedPool, f.next());
        m.peer = addr(kPeerPool, f.next());
        m.channel = kChannels[f.next() & 7u];
        if (o == kChannelDel) {
            ipc::ChannelDel d{};
            d.alloc_id = m.alloc_id;
            d.relayed = m.relayed;
            d.peer = m.peer;
            d.channel = m.channel;
            return bytes_of(d, seq);
        }
        return bytes_of(m, seq);
    }
    case kLimitSet: {
        ipc::LimitSet m{};
        m.alloc_id = f.next() & 7u;
        m.bandwidth_bps = kBandwidths[f.next() & 3u];
        return bytes_of(m, seq);
    }
    case kSettings: {
        ipc::Settings m{};
        m.tos_keep = f.next();
        m.tos_set = f.next();
        m.pad[0] = f.next();
        return bytes_of(m, seq);
    }
    case kExternalIps: {
        ipc::ExternalIps m{};
        nat_pair(4, f.next(), m.external_v4, m.relay_v4);
        nat_pair(6, f.next(), m.external_v6, m.relay_v6);
        const uint8_t flaw = f.next();
        if (flaw & 0x80) {
            nat_flaw(6, (flaw & 0x7f) % kFlaws, m.external_v6, m.relay_v6);
        } else {
            nat_flaw(4, flaw % kFlaws, m.external_v4, m.relay_v4);
        }
        return bytes_of(m, seq);
    }
    default: {
        ipc::CountersRequest m{};
        return bytes_of(m, seq);
    }
    }
}

// Offset of the first WireAddress field of a structured op's message, 0 if none.
inline size_t first_address(uint8_t op) {
    switch (op_of(op)) {
    case kAllocationAdd: return offsetof(ipc::AllocationAdd, client);
    case kPermissionAdd: return offsetof(ipc::PermissionAdd, relayed);
    case kPermissionDel: return offsetof(ipc::PermissionDel, relayed);
    case kChannelAdd: return offsetof(ipc::ChannelAdd, relayed);
    case kChannelDel: return offsetof(ipc::ChannelDel, relayed);
    case kExternalIps: return offsetof(ipc::ExternalIps, external_v4);
    default: return 0;
    }
}

// The datagram of record body b.
inline std::vector<uint8_t> datagram(const uint8_t* b, size_t n, uint64_t seq) {
    if (n == 0) {
        return {};
    }
    if (b[0] < kRaw) {
        return build(b[0], Fields{b + 1, n - 1}, seq);
    }
    if (b[0] == kRaw || b[0] > kLastCorruption) {
        return {b + 1, b + n};
    }
    const uint8_t op = n > 1 ? op_of(b[1]) : 0;
    std::vector<uint8_t> d = build(op, Fields{b + 2, n > 2 ? n - 2 : 0}, seq);
    ipc::Header h;
    std::memcpy(&h, d.data(), sizeof h);
    switch (b[0]) {
    case kBadVersion: h.version = 2; break;
    case kBadLength: h.length++; break;
    case kUnknownType: h.type = static_cast<ipc::MsgType>(99); break;
    case kTruncated: d.pop_back(); break;
    case kTruncatedFix: d.pop_back(); h.length--; break;
    case kExtended: d.push_back(0); h.length++; break;
    default:
        if (const size_t off = first_address(op); off != 0) {
            // WireAddress: family, pad, port, ip[16].
            if (b[0] == kBadFamily) {
                d[off] = 5;
            } else if (b[0] == kPadSet) {
                d[off + 1] = 1;
            } else {
                d[off + 4 + 15] = 1;
            }
        }
        break;
    }
    std::memcpy(d.data(), &h, sizeof h);
    return d;
}

// Seed side: appends one record.
inline void record(std::vector<uint8_t>& in, std::initializer_list<uint8_t> body) {
    const auto n = static_cast<uint16_t>(body.size());
    in.push_back(static_cast<uint8_t>(n & 0xff));
    in.push_back(static_cast<uint8_t>(n >> 8));
    in.insert(in.end(), body.begin(), body.end());
}
inline void record(std::vector<uint8_t>& in, const std::vector<uint8_t>& body) {
    const auto n = static_cast<uint16_t>(body.size());
    in.push_back(static_cast<uint8_t>(n & 0xff));
    in.push_back(static_cast<uint8_t>(n >> 8));
    in.insert(in.end(), body.begin(), body.end());
}

}  // namespace applierfuzz
