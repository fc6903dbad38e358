// The event loops' UDP sockets (listeners, DTLS listeners, relayed sockets,
// RFC 8016 client paths): non-blocking, close-on-exec, 4 MiB buffers, IPv6
// only for IPv6 addresses, each datagram's TOS / Traffic Class and TTL / Hop
// Limit received with it (net/ip_marks.h), bound to `local`.
#pragma once

#include <string>

#include "net/address.h"

namespace turn::cp {

// The descriptor, or -1 with `err` set ("in use" when the address is taken).
// reuseport: SO_REUSEPORT, so that every event loop binds the same address.
int make_udp_socket(const Address& local, bool reuseport, std::string& err);

}  // namespace turn::cp
