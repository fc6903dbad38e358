// One recvmmsg batch: N datagrams of up to Slot bytes each with their source
// addresses, received in one system call (SocketIo's listeners and relayed
// sockets, DtlsIo's listeners). A datagram larger than Slot is dropped and
// counted (turn_drops_total{reason="too_large"}); nothing is allocated per
// datagram. Each datagram comes with its IpMarks (net/ip_marks.h): the TOS /
// Traffic Class byte and the TTL / Hop Limit, as far as the socket asked for
// them (IP_RECVTOS / IPV6_RECVTCLASS, IP_RECVTTL / IPV6_RECVHOPLIMIT: every
// socket of make_udp_socket does), else 0 (TOS none, TTL not known).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/stats.h"
#include "net/address.h"
#include "net/ip_marks.h"

namespace turn::cp {

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
    // fn(source, bytes, IpMarks) for each datagram; the bytes live until the
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
                   received_marks(msgs_[i].msg_hdr).kept());
            }
        }
        return static_cast<size_t>(n);
    }

private:
    std::vector<uint8_t> buf_;
    std::array<mmsghdr, N> msgs_{};
    std::array<iovec, N> iov_{};
    std::array<sockaddr_storage, N> addr_{};
    // Room for the TOS and TTL control messages and one more the kernel may
    // add (a control message that does not fit sets MSG_CTRUNC and is lost:
    // a lost TTL would relay the datagram with the default one).
    struct alignas(cmsghdr) Control : std::array<uint8_t, 3 * CMSG_SPACE(sizeof(int))> {};
    std::array<Control, N> ctl_{};
};

}  // namespace turn::cp
