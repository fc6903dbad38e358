// The IP header fields of a UDP datagram that a relay carries over to the
// datagram relaying it (RFC 8656 section 14, preferred behaviour): the IPv4
// TOS / IPv6 Traffic Class byte (DSCP << 2 | ECN) and the IPv4 TTL / IPv6 Hop
// Limit. Setting what a socket sends with, asking for each received
// datagram's, reading them from its control messages and writing them as
// the control messages of one datagram to send. One definition for the
// relay's sockets (controlplane/io), the load harness (bench/load) and the
// tests.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace turn {

// One datagram's marks, received or to send. Cross-family relaying maps
// TOS <-> Traffic Class and TTL <-> Hop Limit directly (same meaning, same
// width).
struct IpMarks {
    uint8_t tos = 0;  // DSCP << 2 | ECN; 0: the socket's default
    // TTL / Hop Limit; 0: not known (a stream, no control message) when
    // received, the socket's default when sent. A received 0 is kept as 1:
    // neither can be relayed (RFC 8656 section 14 discards 0; 1 would leave
    // with 0, which the kernel does not send for IPv4 and the next router
    // would discard anyway).
    uint8_t ttl = 0;

    bool operator==(const IpMarks&) const = default;
};

// Every datagram the socket sends leaves with `tos`. false: the option failed.
inline bool set_socket_tos(int fd, bool v6, int tos) {
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos)
               : ::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos)) == 0;
}

// Every datagram the socket sends (unicast) leaves with TTL / Hop Limit
// `ttl` (IPv4 1..255; IPv6 0..255, -1 the default). false: the option failed.
inline bool set_socket_ttl(int fd, bool v6, int ttl) {
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl)
               : ::setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl)) == 0;
}

// Each received datagram comes with its TOS byte as a control message
// (IP_RECVTOS / IPV6_RECVTCLASS). false: the option failed.
inline bool receive_socket_tos(int fd, bool v6) {
    const int on = 1;
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on)
               : ::setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof on)) == 0;
}

// Each received datagram comes with its TTL / Hop Limit as a control message
// (IP_RECVTTL / IPV6_RECVHOPLIMIT). false: the option failed.
inline bool receive_socket_ttl(int fd, bool v6) {
    const int on = 1;
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on)
               : ::setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &on, sizeof on)) == 0;
}

// Both fields as found among a received datagram's control messages
// (IP_TOS: one byte; IPV6_TCLASS, IP_TTL, IPV6_HOPLIMIT: an int), -1 for
// one without its control message.
struct ReceivedMarks {
    int tos = -1;
    int ttl = -1;

    // What a relay keeps: TOS 0 without the control message; TTL 0 (not
    // known) without it, a received 0 as 1 (see IpMarks).
    IpMarks kept() const {
        return IpMarks{static_cast<uint8_t>(tos < 0 ? 0 : tos),
                       static_cast<uint8_t>(ttl < 0 ? 0 : ttl == 0 ? 1 : ttl)};
    }
};
// The marks among the control messages recvmsg / recvmmsg filled in `h`.
inline ReceivedMarks received_marks(const msghdr& h) {
    ReceivedMarks r;
    for (const cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(&h), const_cast<cmsghdr*>(c))) {
        int v = 0;
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS && c->cmsg_len >= CMSG_LEN(1)) {
            r.tos = *CMSG_DATA(c);
        } else if (c->cmsg_len < CMSG_LEN(sizeof(int))) {
            continue;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            r.tos = v & 0xff;
        } else if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
                   (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) {
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            r.ttl = v & 0xff;
        }
    }
    return r;
}

// Room for the control messages write_marks_control writes (two ints).
constexpr size_t kMarksControlSpace = 2 * CMSG_SPACE(sizeof(int));

// The control messages that make one datagram (to an IPv6 address if v6)
// leave with `m`: IP_TOS / IPV6_TCLASS if m.tos != 0, IP_TTL / IPV6_HOPLIMIT
// if m.ttl != 0, into `buf` (kMarksControlSpace bytes, aligned for
// cmsghdr). Returns their length, 0 for none (the socket's defaults).
inline size_t write_marks_control(uint8_t* buf, bool v6, IpMarks m) {
    size_t used = 0;
    auto put = [&](int level, int type, int value) {
        auto* c = reinterpret_cast<cmsghdr*>(buf + used);
        c->cmsg_level = level;
        c->cmsg_type = type;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &value, sizeof value);
        used += CMSG_SPACE(sizeof(int));
    };
    if (m.tos != 0) {
        put(v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS, m.tos);
    }
    if (m.ttl != 0) {
        put(v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_HOPLIMIT : IP_TTL, m.ttl);
    }
    return used;
}

}  // namespace turn
