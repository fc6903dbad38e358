// The relay the dataplane fuzz target (worker_fuzz.cc) builds, shared with
// its seed generator (worker_seeds.cc) so that the seeds hit its flows.
//
//   allocation 1: IPv4 client, relayed IPv4 and IPv6 (a dual allocation):
//     permissions for kPeer4 and kPeer6; channels 0x4001 and 0x4002 to kPeer4
//     ports 6000/6001 (the allocation's two slots), 0x4003 to kPeer4:6002 (the
//     hash: more than Allocation::kSlots), 0x4004 to kPeer6:6000 (across
//     families); kPermOnly4 has a permission and no channel (Data indications).
//   allocation 2: IPv6 client, relayed IPv6: permission for kPeer6, channel
//     0x4001 to kPeer6:6000, permission only for kPermOnly6.
//   allocation 3: IPv4 client with a bandwidth limit of 100 kbit/s, channel
//     0x4001 to kPeer4:7000 (police drops what exceeds the bucket).
#pragma once

#include <cstdint>

#include "net/address.h"
#include "packet_builder.h"

namespace workerfuzz {

using turn::Address;

inline const dptest::Mac kPortMac{0x02, 0, 0, 0, 0, 0x01};
inline const dptest::Mac kGatewayMac{0x02, 0, 0, 0, 0, 0xfe};
inline const dptest::Mac kHostMac{0x02, 0, 0, 0, 0, 0xaa};

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
};

// Input format: byte 0 = (burst size - 1) in its low 5 bits, the clock step
// between bursts in its high 3 (0: none; k: 2^(4k) TSC cycles); then frames,
// each a big-endian 16-bit word and that many bytes (the last one cut to what
// is left). The word's low 11 bits are the frame's length; the next 3 the
// bytes of tailroom its buffer has after it (padding a Data indication needs
// some); the top 2 the checksum flags a NIC would have set on it (0: none;
// 1: IP and UDP checksums good; 2: IP bad; 3: UDP bad; kRxFlags in
// worker_fuzz.cc).
// At most kMaxFrames frames.
constexpr size_t kMaxFrames = 128;
constexpr uint16_t kLenMask = 0x07ff;
constexpr unsigned kTailShift = 11;
constexpr unsigned kTailMask = 7;
constexpr unsigned kFlagsShift = 14;

}  // namespace workerfuzz
