// The IPv4 TOS / IPv6 Traffic Class byte (DSCP << 2 | ECN) of UDP sockets:
// what a socket sends with, asking for each received datagram's, and reading
// it from the datagram's control messages. One definition for the relay's
// sockets (controlplane/io), the load harness (bench/load) and the tests.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace turn {

// Every datagram the socket sends leaves with `tos`. false: the option failed.
inline bool set_socket_tos(int fd, bool v6, int tos) {
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos)
               : ::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos)) == 0;
}

// Each received datagram comes with its byte as a control message
// (IP_RECVTOS / IPV6_RECVTCLASS). false: the option failed.
inline bool receive_socket_tos(int fd, bool v6) {
    const int on = 1;
    return (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on)
               : ::setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof on)) == 0;
}

// The byte among a received datagram's control messages (IP_TOS: one byte;
// IPV6_TCLASS: an int), -1 without one.
inline int received_tos(const msghdr& h) {
    for (const cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(&h), const_cast<cmsghdr*>(c))) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS && c->cmsg_len >= CMSG_LEN(1)) {
            return *CMSG_DATA(c);
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v = 0;
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            return v & 0xff;
        }
    }
    return -1;
}

}  // namespace turn
