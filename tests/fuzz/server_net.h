// The script format of server_fuzz.cc, shared with its seed generator
// (server_seeds.cc).
//
// A script is a sequence of records: op (byte), selector (byte), length
// (16-bit big endian) and that many payload bytes (the last record's cut to
// what is left); at most kMaxSteps records. op % kOps picks the event, and
// op / kOps the IpMarks of a datagram from a UDP client or a peer (0: none,
// as the seeds write them; server_fuzz.cc step_marks):
//   kClientRaw     the payload as a datagram (or TCP-framed message) from the
//                  client the selector names; with kSelFingerprint, a STUN
//                  message's FINGERPRINT is first made right for its
//                  (mutated) bytes, so that mutations of unsigned messages
//                  that carry one (Binding, Send indications) reach the
//                  handlers instead of stopping at the FINGERPRINT check;
//   kClientSigned  the same, after the harness re-signed it as that client's
//                  user (alice, or bob with kSelBob; SHA-256 key with
//                  kSelSha256): it must parse as STUN, or the step is skipped;
//                  with kSelReuse its MOBILITY-TICKET, CONNECTION-ID and
//                  RESERVATION-TOKEN values become the last ones the server
//                  sent (so a Refresh can move, a ConnectionBind bind, and an
//                  Allocate take its reserved port);
//   kPeer          the payload as a datagram from peer (selector >> 4) % 3 to
//                  the (selector % open)-th relayed socket the core opened;
//   kPeerIcmp      an ICMP error (type, code, 4 bytes of data) from that peer
//                  about that relayed socket;
//   kClock         selector seconds in 1 s ticks, then length milliseconds;
//   kClientClosed  the selector's client's TCP connection closed;
//   kTcpPeer       the ((selector >> 2) % n)-th Connect's peer connection
//                  closed (selector & 3 == 0), connected (odd) or failed.
// Client selector: port 5000 + (sel & kSelPortMask), IPv6 with kSelV6, over
// TCP with kSelTcp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace servernet {

constexpr const char* kListen4 = "198.18.0.1:3478";
constexpr const char* kListen6 = "[fd00::1]:3478";
constexpr const char* kRealm = "example.org";
// The peers kPeer and kPeerIcmp steps come from ((selector >> 4) % 3); the
// seeds grant permissions to them by the same index.
constexpr const char* kPeers[] = {"198.18.9.9:7000", "198.18.9.10:7001", "[fd00:9::9]:7000"};

enum Op : uint8_t { kClientRaw, kClientSigned, kPeer, kPeerIcmp, kClock, kClientClosed, kTcpPeer, kOps };

constexpr uint8_t kSelPortMask = 0x03;
constexpr uint8_t kSelV6 = 0x04;
constexpr uint8_t kSelTcp = 0x08;
constexpr uint8_t kSelBob = 0x10;
constexpr uint8_t kSelSha256 = 0x20;
constexpr uint8_t kSelReuse = 0x40;
constexpr uint8_t kSelFingerprint = 0x80;  // kClientRaw only

constexpr size_t kMaxSteps = 64;

}  // namespace servernet
