// One recvmmsg batch: N datagrams of up to Slot bytes each with their source
// addresses, received in one system call (SocketIo's listeners and relayed
// sockets, DtlsIo's listeners). A datagram larger than Slot is dropped and
// counted (turn_drops_total{reason="too_large"}); nothing is allocated per
// datagram. With IP_RECVTOS / IPV6_RECVTCLASS on the socket
// (enable_tos_receive) each datagram comes with its TOS / Traffic Class
// byte, else with 0.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/stats.h"
#include "net/address.h"

namespace turn::cp {

// Asks the kernel for each received datagram's IPv4 TOS / IPv6 Traffic
// Class (DSCP and ECN) as a control message. false: the option failed.
inline bool enable_tos_receive(int fd, bool v6) {
    const int on = 1;
    return v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on) == 0
              : ::setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof on) == 0;
}

// The TOS / Traffic Class byte among a received datagram's control
// messages (IP_TOS: one byte; IPV6_TCLASS: an int), 0 without one.
inline uint8_t received_tos(const msghdr& h) {
    for (const cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), const_cast<cmsghdr*>(c))) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS && c->cmsg_len >= CMSG_LEN(1)) {
            return *CMSG_DATA(c);
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v = 0;
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            return static_cast<uint8_t>(v);
        }
    }
    return 0;
}

template <size_t N, size_t Slot>
class RecvBatch {
public:
    RecvBatch() : buf_(N * Slot) {
        for (size_t i = 0; i < N; ++i) {
            iov_[i].iov_base = buf_.data() + i * Slot;
            iov_[i].iov_len = Slot;
        }
    }
    RecvBatch(const RecvBatch&) = delete;
    RecvBatch& operator=(const RecvBatch&) = delete;

    // Receives what `fd` has (up to N, without blocking) and calls
    // fn(source, bytes, tos) for each datagram; the bytes live until the
    // next receive(). Returns how many datagrams the kernel gave (0: none).
    template <typename F>
    size_t receive(int fd, Stats& stats, F&& fn) {
        for (size_t i = 0; i < N; ++i) {
            msgs_[i].msg_hdr = msghdr{};
            msgs_[i].msg_hdr.msg_name = &addr_[i];
            msgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
            msgs_[i].msg_hdr.msg_iov = &iov_[i];
            msgs_[i].msg_hdr.msg_iovlen = 1;
            msgs_[i].msg_hdr.msg_control = ctl_[i].data();
            msgs_[i].msg_hdr.msg_controllen = ctl_[i].size();
        }
        const int n = ::recvmmsg(fd, msgs_.data(), N, MSG_DONTWAIT, nullptr);
        if (n <= 0) {
            return 0;
        }
        for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
            if ((msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
                stats.drop(Drop::kTooLarge);
                continue;
            }
            if (auto src = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&addr_[i]))) {
                fn(*src, std::span<const uint8_t>(static_cast<const uint8_t*>(iov_[i].iov_base), msgs_[i].msg_len),
                   received_tos(msgs_[i].msg_hdr));
            }
        }
        return static_cast<size_t>(n);
    }

private:
    std::vector<uint8_t> buf_;
    std::array<mmsghdr, N> msgs_{};
    std::array<iovec, N> iov_{};
    std::array<sockaddr_storage, N> addr_{};
    // Room for the TOS control message and one more the kernel may add
    // (a control message that does not fit sets MSG_CTRUNC and is lost).
    struct alignas(cmsghdr) Control : std::array<uint8_t, 2 * CMSG_SPACE(sizeof(int))> {};
    std::array<Control, N> ctl_{};
};

}  // namespace turn::cp
