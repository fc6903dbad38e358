// The boundary between the protocol core and the I/O layer. The core never
// touches a socket: it asks PacketIo to send and to open/close relayed
// sockets. The socket-mode event loop implements it with UDP sockets and
// sendmmsg batching; unit tests implement it with a recording fake; TCP/TLS
// listeners will implement send_to_client for stream 5-tuples.
#pragma once

#include <cstdint>
#include <span>

#include "net/address.h"

namespace turn::cp {

using RelayId = uint32_t;
constexpr RelayId kNoRelay = UINT32_MAX;

enum class OpenResult : uint8_t { kOk, kPortInUse, kError };

class PacketIo {
public:
    virtual ~PacketIo() = default;
    // To a client over the 5-tuple's listener. The span is only valid during the call.
    virtual void send_to_client(const FiveTuple& to, std::span<const uint8_t> data) = 0;
    // From a relayed socket to a peer. dont_fragment: this datagram must
    // leave with DF set (IPv4) / unfragmented (IPv6) even if the socket was
    // not opened that way (a Send indication's DONT-FRAGMENT, RFC 8656 11.2).
    virtual void send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data,
                              bool dont_fragment = false) = 0;
    // Binds a relayed UDP socket at `addr` (IP and port). DONT-FRAGMENT sets
    // IP_MTU_DISCOVER=IP_PMTUDISC_DO / IPV6_DONTFRAG on it.
    virtual OpenResult open_relay(const Address& addr, bool dont_fragment, RelayId& out) = 0;
    virtual void close_relay(RelayId relay) = 0;
};

}  // namespace turn::cp
