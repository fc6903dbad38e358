// A test client's TCP connection to a real turn-relay (TURN over TCP, RFC
// 8656 section 3.1): writes messages as they are (the caller pads
// ChannelData), reads whole messages off the stream with the relay's own
// framer (turn/stream_framing.h), and does the long-term credential dance
// for TURN requests.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include "net/address.h"
#include "stun_client.h"
#include "turn_requester.h"
#include "turn/stream_framing.h"

namespace turn::cp::test {

class TcpClient : public TurnRequester<TcpClient> {
public:
    TcpClient(const Address& server, std::string user, std::string password) {
        creds_.user = std::move(user);
        creds_.password = std::move(password);
        fd_ = ::socket(server.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_storage ss{};
        const size_t len = server.to_sockaddr(&ss);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) == 0;
    }
    ~TcpClient() { close(); }
    TcpClient(const TcpClient&) = delete;
    TcpClient& operator=(const TcpClient&) = delete;

    bool connected() const { return connected_; }
    void close() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    Address local() const {
        sockaddr_storage ss{};
        socklen_t l = sizeof ss;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &l);
        return *Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
    }
    // Closes with a reset (SO_LINGER 0) instead of a FIN: the relay's next
    // write on the connection fails.
    void reset() {
        if (fd_ >= 0) {
            const linger l{1, 0};
            ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            close();
        }
    }
    bool send(std::span<const uint8_t> b) {
        return ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
    }
    // The next whole message (ChannelData with its padding, as on the
    // stream), or nothing within timeout_ms / when the relay closed.
    std::optional<std::vector<uint8_t>> recv(int timeout_ms = 2000) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            const StreamFrame f = next_stream_frame(buf_);
            if (f.status == StreamFrameStatus::kFrame) {
                std::vector<uint8_t> m(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(f.consumed));
                buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(f.consumed));
                return m;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            pollfd p{fd_, POLLIN, 0};
            if (f.status != StreamFrameStatus::kNeedMore || left.count() <= 0 ||
                ::poll(&p, 1, static_cast<int>(left.count())) != 1) {
                return std::nullopt;
            }
            uint8_t tmp[65536];
            const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
            if (n <= 0) {
                closed_by_peer_ = true;
                return std::nullopt;
            }
            buf_.insert(buf_.end(), tmp, tmp + n);
        }
    }
    bool closed_by_peer() const { return closed_by_peer_; }

private:
    int fd_ = -1;
    bool connected_ = false;
    bool closed_by_peer_ = false;
    std::vector<uint8_t> buf_;
};

}  // namespace turn::cp::test
