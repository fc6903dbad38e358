// The relay the dataplane fuzz target (worker_fuzz.cc) builds, shared with
// its seed generator (worker_seeds.cc) so that the seeds hit its flows.
// allocations() below lists what is installed (in that order), and is also
// what the target checks every frame that leaves against.
//
//   allocation 1: IPv4 client, relayed IPv4 and IPv6 (a dual allocation):
//     permissions for kPeer4 and kPeer6; channels 0x4001 and 0x4002 to kPeer4
//     ports 6000/6001 (the allocation's two slots), 0x4003 to kPeer4:6002 (the
//     hash: more than Allocation::kSlots), 0x4004 to kPeer6:6000 (across
//     families); kPermOnly4 has a permission and no channel (Data indications).
//   allocation 2: IPv6 client, relayed IPv6: permission for kPeer6, channel
//     0x4001 to kPeer6:6000 (the line's one IPv6 slot, ChanSlot6; so are
//     allocations 5, 6 and 8's 0x4001), permission only for kPermOnly6.
//   allocation 3: IPv4 client with a bandwidth limit of 100 kbit/s, channel
//     0x4001 to kPeer4:7000 (police drops what exceeds the bucket).
//
// Relay-to-relay (dataplane/worker/route.cc own_destination): the relay's
// own IPs are 198.18.0.1 (listening and relayed), 198.18.0.2 (listening
// only), 198.18.0.3 (relayed only), fd00::1 (listening and relayed) and
// fd00::2 (listening only); a relayed packet to one of them never leaves by
// the NIC. Each allocation's peers include other allocations' relayed
// addresses on the same relay IP:
//   allocation 1 permits 198.18.0.1, .2, .3, fd00::1 and fd00::2; channels
//     0x4010 to relayed3 and 0x4011 to relayed2 (both hashed; a channel to
//     relayed2 across families, from its IPv4 client), 0x4012 to
//     198.18.0.1:49160, a relayed port no allocation holds (punted). Its
//     Send indications reach relayed4 and relayed6 (those allocations'
//     clients are own addresses: punted, as they came), relayed5 (no
//     permission there: dropped), its own relayed1_4 (round once, back to
//     client1 as a Data indication) and the listening addresses (punted).
//   allocation 2 permits fd00::1 and has no channel to it: relayed1_6's
//     packets reach client2 as Data indications; its Send indications to
//     relayed1_6 reach client1 on channel 0x4011.
//   allocation 3 permits 198.18.0.1, channel 0x4002 to relayed1_4 (slot 1:
//     the express lane finds client3's ChannelData on it, then leaves it to
//     route): ChannelData both ways between clients 1 and 3, through the
//     hash on allocation 1's side and the limit on allocation 3's.
//   allocation 4 (IPv4): its client is on an own IP (198.18.0.3:49153, a
//     port of a relay IP that no allocation holds) and talks to the
//     listening-only 198.18.0.2; relayed 198.18.0.3:49152 (the third own
//     IPv4 address: the express lane's test beyond its first two); permits
//     kPeer4 and 198.18.0.1, channels 0x4001 to kPeer4:6000 (what comes back
//     is punted: its client is an own address), 0x4002 to relayed1_4 (slot:
//     client1 gets Data indications, having no channel to relayed4), 0x4003
//     to relayed3 (hashed; allocation 3 does not permit 198.18.0.3: dropped).
//   allocation 5 (IPv6): listening address [fd00::2]:3478, relayed
//     [fd00::1]:49154; permission and channel 0x4001 for kPeer6:6000, none
//     for fd00::1 (client1's Send indications to it: dropped).
//   allocation 6 (IPv6): its client is relayed2 (TURN over TURN on one
//     relay), relayed [fd00::1]:49155; permission and channel 0x4001 for
//     kPeer6:6000, a permission for fd00::1 (what client1 sends it would
//     reach that client: punted, as it came).
//
// Relay-to-relay behind a 1:1 NAT (route.cc relayed_peer, pipeline.cc
// present_external): the relay IPs 198.18.0.1 and fd00::1 are reached from
// outside at kExternal4 = 198.18.7.1 and kExternal6 = fd00:7::1 (addresses
// no allocation has; ext*() below names a relayed address's external one).
// The harness makes them the NAT's pairs with an ipc::ExternalIps once at
// start (so that they are own addresses from then on, as they stay in a
// dataplane), clears the pairs with a resync, and the input turns them on
// and off between bursts (worker_fuzz.cc). What was added for it comes
// after everything above, in the same order, so that the slots and hashed
// channels the earlier allocations had stay as they were:
//   allocation 1 permits both external IPs; channels 0x4020 to ext(relayed7_4)
//     (allocation 7 answers on its slot channel 0x4001), 0x4021 to the
//     external IP at 49160 (no allocation holds the port: punted), 0x4022
//     to ext(relayed2) across families (allocation 2's Send indications to
//     ext(relayed1_6) come back on it). What client1 sends to its own
//     ext(relayed1_4) or from relayed1_6 to ext(relayed2) reaches a Data
//     indication naming its own external address.
//   allocation 2 permits kExternal6; channel 0x4002 (hashed: its slot holds
//     0x4001) to ext(relayed7_6).
//   allocation 3 permits only the relay IP 198.18.0.1 (above), never the
//     external IP: what comes to ext(relayed3) is dropped (no permission),
//     and its client's Send indications to the external IP are dropped on
//     the first leg for the same reason.
//   allocation 4 (relayed on 198.18.0.3, not the NAT's relay IP) permits
//     kExternal4, channel 0x4004 to ext(relayed1_4): punted unchanged (the
//     frame could not be presented from an external address by swapping).
//   allocation 7 (IPv4 client 198.18.0.12:50007, dual: relayed
//     198.18.0.1:49156 and [fd00::1]:49156) permits both external IPs;
//     channels 0x4001 to ext(relayed1_4) and 0x4002 to ext(relayed2) (its
//     slots: the express lane finds them both ways; client2's channel to
//     ext(relayed7_6) answers), 0x4003 to ext(relayed3) (hashed; dropped
//     there).
//   allocation 8 (IPv6 client [fd00::18]:50008, relayed [fd00::1]:49157)
//     permits only the relay IP fd00::1: what client2 sends to
//     ext(relayed8) is dropped there (no permission), what it sends to
//     relayed8 itself reaches client8 as a Data indication.
// (The control plane installs a permission with every channel, for the
// channel's peer IP, and so does every allocation here: a channel alone
// lets data through both ways, which the checks would call unpermitted.)
//
// Next hops (L2, nexthop/nexthop.h), as byte 1 of the input sets them up
// (kNh*): the family's default is the gateway (kGatewayMac), untagged, on a
// VLAN (kGatewayVlan4/6) or absent; with kNhHosts the table has the host
// entries of host_hops(): kPeer4's IP (every peer4* address) on VLAN 300,
// client2 on VLAN 4094 (the highest), client1 and kPeer6 untagged, each
// with a MAC of its own; any other destination takes its family's default.
// So the express lane finishes ChannelData to client1 and hands that to
// kPeer4 to the stages, which tag it.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "net/address.h"
#include "packet_builder.h"

namespace workerfuzz {

using turn::Address;

inline const dptest::Mac kPortMac{0x02, 0, 0, 0, 0, 0x01};
inline const dptest::Mac kGatewayMac{0x02, 0, 0, 0, 0, 0xfe};
inline const dptest::Mac kHostMac{0x02, 0, 0, 0, 0, 0xaa};
// Next hops with host entries (host_hops), and the gateway's VLANs.
inline const dptest::Mac kPeer4Mac{0x02, 0, 0, 0, 0x04, 0x20};
inline const dptest::Mac kPeer6Mac{0x02, 0, 0, 0, 0x06, 0x20};
inline const dptest::Mac kClient1Mac{0x02, 0, 0, 0, 0x01, 0x10};
inline const dptest::Mac kClient2Mac{0x02, 0, 0, 0, 0x02, 0x10};
constexpr uint16_t kGatewayVlan4 = 1;
constexpr uint16_t kGatewayVlan6 = 2049;

inline Address addr(const char* s) { return *Address::parse(s); }

struct Net {
    Address listen4 = addr("198.18.0.1:3478");
    Address listen6 = addr("[fd00::1]:3478");
    Address client1 = addr("198.18.0.10:50000");
    Address relayed1_4 = addr("198.18.0.1:49152");
    Address relayed1_6 = addr("[fd00::1]:49152");
    Address client2 = addr("[fd00::10]:50000");
    Address relayed2 = addr("[fd00::1]:49153");
    Address client3 = addr("198.18.0.11:50001");
    Address relayed3 = addr("198.18.0.1:49154");
    Address peer4 = addr("198.19.0.20:6000");
    Address peer4b = addr("198.19.0.20:6001");
    Address peer4c = addr("198.19.0.20:6002");
    Address peer4d = addr("198.19.0.20:7000");
    Address peer6 = addr("[fd00:1::20]:6000");
    Address perm_only4 = addr("198.19.0.30:5000");
    Address perm_only6 = addr("[fd00:1::30]:5000");
    Address stranger4 = addr("198.19.0.99:7000");
    Address stranger6 = addr("[fd00:1::99]:7000");
    // Relay-to-relay (above): the own IPs beyond listen4/listen6's.
    Address listen4b = addr("198.18.0.2:3478");      // listening only
    Address listen6b = addr("[fd00::2]:3478");       // listening only
    Address client4 = addr("198.18.0.3:49153");      // allocation 4's client, on an own IP
    Address relayed4 = addr("198.18.0.3:49152");     // allocation 4's (a relay IP of its own)
    Address client5 = addr("[fd00::15]:50005");
    Address relayed5 = addr("[fd00::1]:49154");      // allocation 5's
    Address relayed6 = addr("[fd00::1]:49155");      // allocation 6's (IPv6); its client is relayed2
    Address unallocated4 = addr("198.18.0.1:49160"); // a relayed port no allocation holds
    // Behind a 1:1 NAT (above): each family's external IP and the relay IP
    // it stands for (ports 0), and allocation 7.
    Address external4 = addr("198.18.7.1:0");
    Address external6 = addr("[fd00:7::1]:0");
    Address nat_relay4 = addr("198.18.0.1:0");
    Address nat_relay6 = addr("[fd00::1]:0");
    Address client7 = addr("198.18.0.12:50007");
    Address relayed7_4 = addr("198.18.0.1:49156");
    Address relayed7_6 = addr("[fd00::1]:49156");
    Address client8 = addr("[fd00::18]:50008");
    Address relayed8 = addr("[fd00::1]:49157");
    // The external address of relayed address `r` (on its family's relay IP).
    Address ext(const Address& r) const { return (r.is_v4() ? external4 : external6).with_port(r.port); }
};

// An allocation as the control plane installs it (tests/dataplane/
// ipc_messages.h): its permissions and channels go on its relayed address of
// their peer's family.
struct Allocation {
    uint64_t id;
    Address client, listen;
    std::optional<Address> relayed4, relayed6;
    uint64_t bandwidth_bps = 0;
    std::vector<Address> permitted;                      // peer IPs (ports ignored)
    std::vector<std::pair<uint16_t, Address>> channels;  // number, peer
    // Its relayed address of IPv4 (v4) or IPv6, if it has one.
    const std::optional<Address>& relayed(bool v4) const { return v4 ? relayed4 : relayed6; }
};

// Installed in this order (worker_fuzz.cc): each allocation, then its
// permissions, then its channels. What relay-to-relay added comes after
// what each allocation had before, and what the NAT added after that, so
// that slots and hashed channels are taken as they were.
inline std::vector<Allocation> allocations(const Net& n) {
    return {
        {1, n.client1, n.listen4, n.relayed1_4, n.relayed1_6, 0,
         {n.peer4, n.perm_only4, n.peer6, n.relayed3, n.listen4b, n.relayed4, n.relayed2, n.listen6b,
          n.external4, n.external6},
         {{0x4001, n.peer4}, {0x4002, n.peer4b}, {0x4003, n.peer4c}, {0x4004, n.peer6},
          {0x4010, n.relayed3}, {0x4011, n.relayed2}, {0x4012, n.unallocated4},
          {0x4020, n.ext(n.relayed7_4)}, {0x4021, n.external4.with_port(49160)}, {0x4022, n.ext(n.relayed2)}}},
        {2, n.client2, n.listen6, std::nullopt, n.relayed2, 0, {n.peer6, n.perm_only6, n.relayed1_6, n.external6},
         {{0x4001, n.peer6}, {0x4002, n.ext(n.relayed7_6)}}},
        {3, n.client3, n.listen4, n.relayed3, std::nullopt, 100000, {n.peer4d, n.relayed1_4},
         {{0x4001, n.peer4d}, {0x4002, n.relayed1_4}}},
        {4, n.client4, n.listen4b, n.relayed4, std::nullopt, 0, {n.peer4, n.relayed1_4, n.external4},
         {{0x4001, n.peer4}, {0x4002, n.relayed1_4}, {0x4003, n.relayed3}, {0x4004, n.ext(n.relayed1_4)}}},
        {5, n.client5, n.listen6b, std::nullopt, n.relayed5, 0, {n.peer6}, {{0x4001, n.peer6}}},
        {6, n.relayed2, n.listen6, std::nullopt, n.relayed6, 0, {n.peer6, n.relayed1_6}, {{0x4001, n.peer6}}},
        {7, n.client7, n.listen4, n.relayed7_4, n.relayed7_6, 0, {n.external4, n.external6},
         {{0x4001, n.ext(n.relayed1_4)}, {0x4002, n.ext(n.relayed2)}, {0x4003, n.ext(n.relayed3)}}},
        {8, n.client8, n.listen6, std::nullopt, n.relayed8, 0, {n.nat_relay6}, {}},
    };
}

// A host entry: the destination's IP (port ignored), the MAC and the 802.1Q
// VLAN ID (0: untagged) frames to it leave with.
struct HostHop {
    Address ip;
    dptest::Mac mac;
    uint16_t vlan;
};
inline std::vector<HostHop> host_hops(const Net& n) {
    return {{n.peer4, kPeer4Mac, 300}, {n.client2, kClient2Mac, 4094}, {n.client1, kClient1Mac, 0},
            {n.peer6, kPeer6Mac, 0}};
}

// Input format: byte 0 = (burst size - 1) in its low 5 bits, the clock step
// between bursts in its high 3 (0: none; k: 2^(4k) TSC cycles); byte 1 = the
// next hops (its low 5 bits, kNh*) and, in its high 3, the headroom every
// frame's buffer has before it (an index in kHeadrooms); then frames, each
// a big-endian 16-bit word and that many bytes (the last one cut to what is
// left). The word's low 11 bits are the frame's length; the next 3 the
// bytes of tailroom its buffer has after it (padding a Data indication needs
// some); the top 2 the checksum flags a NIC would have set on it (0: none;
// 1: IP and UDP checksums good; 2: IP bad; 3: UDP bad; kRxFlags in
// worker_fuzz.cc).
// At most kMaxFrames frames.
//
// Chained mbufs (nb_segs > 1, as a NIC with scattered rx delivers a frame
// longer than its mbufs): a word whose length bits are 0, whose tailroom
// bits t are not and whose top 2 bits are 0 (an empty frame with tailroom,
// which no seed had; an empty frame is still a word with length and
// tailroom 0; with top bits set it is an option word, below) is no frame
// but a chain marker: the next frame arrives in 2 + (t - 1) % 3 segments
// (t = 1, 2, 3: 2, 3, 4 segments). The marker is followed by one big-endian
// 16-bit word per segment but the last, that segment's length (cut to what
// is left of the frame, so a segment can be empty), then by the frame as
// usual (word and bytes): the last segment holds the rest. The last marker
// before a frame counts. Each segment has a heap block of its own, of
// exactly: the first, the headroom of byte 1 + its bytes + the frame's
// tailroom (as an unchained frame's); the middle ones their bytes alone;
// the last its bytes + the frame's tailroom. The rx
// checksum flags are on the first mbuf.
//
// Option words (added after the seeds above were written, in a form none of
// them has, so that they decode as they did): a word whose length bits are
// 0 and whose tailroom bits t and top 2 bits k are both non-zero (a chain
// marker's top bits were ignored before; chain markers have k = 0) is
// neither a frame nor a chain marker but an option of kind k with value t
// (1-7), and may stand wherever a frame's word may:
//   k = 1 (kOptNat): the NAT's pairs (above), from the first burst whose
//     first frame comes after the word on (the tables never change during
//     a burst; before any frame: from the first burst): t's bit 0 (kNat4) and bit 1 (kNat6) name the families an
//     ipc::ExternalIps sets, bit 2 (kNatResync) has a resync follow it (the
//     control plane's ExternalIps, ResyncBegin, every Add, ResyncEnd; t = 4
//     is a resync without ExternalIps, which clears the pairs unless an
//     ExternalIps came since the previous ResyncBegin). Every input starts
//     with no pairs (the external IPs still own addresses); at most
//     kMaxNatOptions are applied, the rest ignored.
//   k = 2 (kOptRest): the express lane worker's WorkerConfig::express_rest
//     is t for the whole input (0 without such a word; the last counts).
//   k = 3: reserved, ignored.
constexpr size_t kMaxFrames = 128;
constexpr uint16_t kLenMask = 0x07ff;
constexpr unsigned kTailShift = 11;
constexpr unsigned kTailMask = 7;
constexpr unsigned kFlagsShift = 14;
constexpr unsigned kMaxSegs = 4;

// An option word's kind (kOpt*, 1-3), or 0 when `word` is a frame's or a
// chain marker's.
constexpr unsigned option_kind(uint16_t word) {
    const unsigned t = word >> kTailShift & kTailMask;
    return (word & kLenMask) != 0 || t == 0 ? 0 : word >> kFlagsShift;
}
constexpr unsigned option_value(uint16_t word) { return word >> kTailShift & kTailMask; }
constexpr unsigned kOptNat = 1;
constexpr unsigned kOptRest = 2;
constexpr unsigned kNat4 = 1;
constexpr unsigned kNat6 = 2;
constexpr unsigned kNatResync = 4;
constexpr unsigned kMaxNatOptions = 16;
constexpr uint16_t option_word(unsigned kind, unsigned value) {
    return static_cast<uint16_t>(kind << kFlagsShift | value << kTailShift);
}
// The number of segments a chain marker asks for (2-4), or 0 when `word`
// is a frame's or an option's.
constexpr unsigned chain_segs(uint16_t word) {
    const unsigned t = word >> kTailShift & kTailMask;
    return (word & kLenMask) != 0 || t == 0 || option_kind(word) != 0 ? 0 : 2 + (t - 1) % 3;
}
static_assert(option_kind(option_word(kOptNat, kNat4)) == kOptNat && chain_segs(option_word(kOptNat, kNat4)) == 0 &&
              option_value(option_word(kOptRest, 3)) == 3);
// The marker for a chain of `segs` (2-4) segments.
constexpr uint16_t chain_marker(unsigned segs) { return static_cast<uint16_t>((segs - 1) << kTailShift); }
static_assert(chain_segs(chain_marker(2)) == 2 && chain_segs(chain_marker(3)) == 3 && chain_segs(chain_marker(4)) == 4);

// Byte 1.
constexpr uint8_t kNhHosts = 1;    // the host entries of host_hops()
constexpr uint8_t kNhGw4Vlan = 2;  // the IPv4 default on kGatewayVlan4
constexpr uint8_t kNhNoGw4 = 4;    // no IPv4 default (over kNhGw4Vlan)
constexpr uint8_t kNhGw6Vlan = 8;  // the IPv6 default on kGatewayVlan6
constexpr uint8_t kNhNoGw6 = 16;   // no IPv6 default (over kNhGw6Vlan)
constexpr unsigned kHeadroomShift = 5;
// Headroom in bytes; 0xffff: the mbuf's default (RTE_PKTMBUF_HEADROOM). The
// others are where the new headers of a frame to a client just fit, or
// not, without and with the 802.1Q tag: ChannelData needs 4 bytes more
// than it came with (8 tagged), an IPv4 Data indication 36 (40), an IPv6
// one 48 (52).
constexpr uint16_t kHeadrooms[8] = {0xffff, 0, 4, 8, 36, 40, 48, 52};

}  // namespace workerfuzz
