// One recvmmsg batch: N datagrams of up to Slot bytes each with their source
// addresses, received in one system call (SocketIo's listeners and relayed
// sockets, DtlsIo's listeners). A datagram larger than Slot is dropped and
// counted (turn_drops_total{reason="too_large"}); nothing is allocated per
// datagram. With IP_RECVTOS / IPV6_RECVTCLASS on the socket
// (net/tos.h) each datagram comes with its TOS / Traffic Class byte,
// else with 0.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/stats.h"
#include "net/address.h"
#include "net/tos.h"

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
                   static_cast<uint8_t>(std::max(0, received_tos(msgs_[i].msg_hdr))));
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
