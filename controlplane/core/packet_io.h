// The boundary between the protocol core and the I/O layer. The core never
// touches a socket: it asks PacketIo to send and to open/close relayed
// sockets. The socket-mode event loop implements it with UDP sockets and
// sendmmsg batching; unit tests implement it with a recording fake; TCP/TLS
// listeners will implement send_to_client for stream 5-tuples.
#pragma once

#include <cstdint>
#include <span>

#include "net/address.h"
#include "net/ip_marks.h"

namespace turn::cp {

using RelayId = uint32_t;
constexpr RelayId kNoRelay = UINT32_MAX;

enum class OpenResult : uint8_t { kOk, kPortInUse, kError };

class PacketIo {
public:
    virtual ~PacketIo() = default;
    // To a client over the 5-tuple's listener. The span is only valid during the call.
    // marks: the IPv4 TOS / IPv6 Traffic Class byte (DSCP and ECN) and the
    // TTL / Hop Limit the datagram leaves with, where the transport is UDP
    // (DTLS included): relayed data keeps the received datagram's TOS and
    // leaves with one less TTL (RFC 8656 section 14); 0 in either is the
    // socket's default (what the server's own messages use).
    virtual void send_to_client(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks = {}) = 0;
    // From a relayed socket to a peer. dont_fragment: this datagram must
    // leave with DF set (IPv4) / unfragmented (IPv6) even if the socket was
    // not opened that way (a Send indication's DONT-FRAGMENT, RFC 8656 11.2).
    // marks: as for send_to_client.
    virtual void send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data,
                              bool dont_fragment = false, IpMarks marks = {}) = 0;
    // Binds a relayed UDP socket at `addr` (IP and port). DONT-FRAGMENT sets
    // IP_MTU_DISCOVER=IP_PMTUDISC_DO / IPV6_DONTFRAG on it.
    virtual OpenResult open_relay(const Address& addr, bool dont_fragment, RelayId& out) = 0;
    virtual void close_relay(RelayId relay) = 0;

    // RFC 8016 mobility: datagrams of the client 5-tuple `ft` (UDP) must
    // reach this event loop from now on, whichever loop the kernel would
    // pick for them (a connected socket on the listening address). kNoRelay
    // if it cannot (the caller serves the allocation anyway: with one loop
    // nothing is needed).
    virtual RelayId open_client_path(const FiveTuple& /*ft*/) { return kNoRelay; }
    virtual void close_client_path(RelayId /*path*/) {}

    // RFC 6062 TCP allocations (TCP/TLS clients only). The defaults refuse:
    // an I/O layer without stream support has no TCP relays.
    //
    // A listening TCP socket at the relayed address; its ids never collide
    // with open_relay's.
    virtual OpenResult open_tcp_relay(const Address& /*addr*/, RelayId& /*out*/) { return OpenResult::kError; }
    // Closes the listener and every peer connection made from or to it.
    virtual void close_tcp_relay(RelayId /*relay*/) {}
    // Starts a connection from the relayed address to `peer`; the result
    // comes back as Server::on_tcp_peer_connected(conn_id, ok). false: it
    // could not even start.
    virtual bool tcp_connect(RelayId /*relay*/, const Address& /*peer*/, uint32_t /*conn_id*/) { return false; }
    virtual void tcp_close_peer(uint32_t /*conn_id*/) {}
    // The client connection `client` (which just sent a successful
    // ConnectionBind, answer already queued) becomes the data connection of
    // peer connection `conn_id`: from now on bytes are piped both ways.
    virtual bool tcp_bind_data(const FiveTuple& /*client*/, uint32_t /*conn_id*/) { return false; }
    // The client connection `client`, whose `message` is a ConnectionBind for
    // a peer connection of event loop `loop`, moves to that loop, which
    // handles the message again; false: it cannot (one loop, no streams).
    virtual bool tcp_handoff(const FiveTuple& /*client*/, unsigned /*loop*/, std::span<const uint8_t> /*message*/) {
        return false;
    }
};

}  // namespace turn::cp
