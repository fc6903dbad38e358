// The PROXY protocol header (HAProxy's "The PROXY protocol", versions 1 and
// 2): what a layer-4 proxy or load balancer (HAProxy `send-proxy` /
// `send-proxy-v2`, nginx `proxy_protocol on`, cloud network load balancers)
// writes at the start of each TCP connection it opens to a backend, naming
// the client's address and the address the client connected to. A TURN
// server behind such a proxy needs it: the client's address goes into
// XOR-MAPPED-ADDRESS, its per-source limits and its nonces, and a proxy's own
// address there breaks ICE (Firefox drops a loopback or private mapped
// address as bogus).
//
// Only the parse, no I/O. The header's bytes may arrive in pieces; the
// reader calls parse_proxy_header with every byte received so far, which
// never looks past the header's end, so the bytes after it (a TLS
// ClientHello, a STUN message) stay for the connection's own protocol.
//
// Accepted:
//   v1  "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 likewise), and
//       "PROXY UNKNOWN ...\r\n"; at most 107 bytes with the CRLF.
//   v2  the 12-byte signature, version 2; command LOCAL (a proxy's own
//       connection, e.g. a health check) or PROXY; for PROXY, family
//       UNSPEC, or INET / INET6 over STREAM, or UNIX over STREAM; TLVs
//       after the addresses are skipped; at most kMaxProxyHeader bytes.
// A v2 header's version, command, family, protocol and length are judged at
// its 16th byte, before its address block arrives.
// Everything else is kBad with a reason (a stream that does not begin with
// a header, e.g. a client that reached a proxied listener directly; a v2
// UDP (DGRAM) header on a TCP connection; an address that does not parse).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "net/address.h"

namespace turn {

struct ProxyHeader {
    enum class Status : uint8_t {
        kNeedMore,  // every byte given so far belongs to the header; read more
        kDone,      // a whole header in the first `length` bytes
        kBad,       // not a header this parser accepts (`error`)
    };
    Status status = Status::kNeedMore;
    size_t length = 0;  // kDone: the header's bytes; the stream goes on after them
    // kDone: the header names no client (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or
    // UNIX): the connection's own addresses stand.
    bool local = false;
    Address source;       // kDone, !local: the client
    Address destination;  // kDone, !local: the address the client connected to
    const char* error = "";  // kBad: what is wrong, for a log line
};

constexpr size_t kMaxProxyV1Header = 107;
constexpr size_t kMaxProxyHeader = 4096;  // v2: 16 bytes + addresses + TLVs

// `bytes`: the stream from its first byte, as much as has arrived (more than
// the header is fine).
ProxyHeader parse_proxy_header(std::span<const uint8_t> bytes);

}  // namespace turn
