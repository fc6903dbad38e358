// Socket-mode I/O for one event loop: UDP listeners (SO_REUSEPORT, one set
// per loop), relayed UDP sockets, an epoll loop, recvmmsg receive batches and
// sendmmsg transmit batches. Implements the core's PacketIo; all protocol
// decisions stay in Server.
//
// Per datagram the loop costs one slot of a recvmmsg batch, the core's
// processing, and one slot of a sendmmsg batch: no allocation, no lock, no log.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/packet_io.h"
#include "core/shared.h"
#include "core/stats.h"
#include "io/dtls_io.h"
#include "io/recv_batch.h"
#include "io/stream_io.h"
#include "net/address.h"
#include "net/ip_marks.h"

namespace turn::cp {

class Server;

class SocketIo final : public PacketIo {
public:
    static constexpr size_t kBatch = 32;
    static constexpr size_t kRxSlot = 9216;  // jumbo frames; larger datagrams are dropped (too_large)
    static constexpr size_t kTxBatch = 64;
    static constexpr size_t kTxSlot = 2048;  // larger sends bypass the batch

    explicit SocketIo(Stats& stats);
    ~SocketIo() override;
    SocketIo(const SocketIo&) = delete;
    SocketIo& operator=(const SocketIo&) = delete;

    // Binds a UDP listener (SO_REUSEPORT so every loop has its own). Returns
    // an error message on failure.
    std::string add_listener(const Address& local);
    // A TCP listener (TURN over TCP), or with `tls` a TLS one (io/stream_io.h).
    std::string add_stream_listener(Shared& shared, const Address& local, const TlsContexts* tls);
    // A TURN-over-DTLS listener (io/dtls_io.h).
    std::string add_dtls_listener(Shared& shared, const Address& local, const TlsContexts* tls);

    void set_server(Server* s);
    // Waits up to timeout_ms, processes every ready socket, flushes sends.
    // Returns false if epoll failed. Adds the time spent blocked to *waited_us.
    bool poll_once(int timeout_ms, uint64_t* waited_us = nullptr);
    void flush();
    // The loop's clock, every iteration (stream connections' idle timeout).
    void tick(uint64_t now_ms);

    // PacketIo
    void send_to_client(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks = {}) override;
    void send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data, bool dont_fragment = false,
                      IpMarks marks = {}) override;
    OpenResult open_relay(const Address& addr, bool dont_fragment, RelayId& out) override;
    void close_relay(RelayId relay) override;
    // RFC 8016: a UDP socket on the listening address connected to the
    // client, so that Linux delivers that 5-tuple here rather than to the
    // SO_REUSEPORT group's choice of loop.
    RelayId open_client_path(const FiveTuple& ft) override;
    void close_client_path(RelayId path) override;
    // RFC 6062 (io/stream_io.h).
    OpenResult open_tcp_relay(const Address& addr, RelayId& out) override {
        return streams_ ? streams_->open_tcp_relay(addr, out) : OpenResult::kError;
    }
    void close_tcp_relay(RelayId relay) override {
        if (streams_) {
            streams_->close_tcp_relay(relay);
        }
    }
    bool tcp_connect(RelayId relay, const Address& peer, uint32_t conn_id) override {
        return streams_ && streams_->tcp_connect(relay, peer, conn_id);
    }
    void tcp_close_peer(uint32_t conn_id) override {
        if (streams_) {
            streams_->tcp_close_peer(conn_id);
        }
    }
    bool tcp_bind_data(const FiveTuple& client, uint32_t conn_id) override {
        return streams_ && streams_->tcp_bind_data(client, conn_id);
    }
    bool tcp_handoff(const FiveTuple& client, unsigned loop, std::span<const uint8_t> message) override {
        return streams_ && streams_->tcp_handoff(client, loop, message);
    }
    // Stream connections from and to other loops (after add_stream_listener).
    void set_stream_handoffs(StreamHandoffs* h, unsigned loop) {
        if (streams_) {
            streams_->set_handoffs(h, loop);
        }
    }

    size_t relay_count() const { return relay_count_; }
    size_t client_path_count() const { return paths_.size() - free_paths_.size(); }
    size_t connection_count() const { return streams_ ? streams_->connection_count() : 0; }
    size_t dtls_session_count() const { return dtls_ ? dtls_->session_count() : 0; }

private:
    struct Listener {
        int fd = -1;
        Address local;
    };
    struct Relay {
        int fd = -1;
        Address local;
        bool dont_fragment = false;  // opened with DF (the allocation's DONT-FRAGMENT)
    };
    // The datagram leaves with marks.tos != 0 as its TOS / Traffic Class
    // (an IP_TOS / IPV6_TCLASS control message) and marks.ttl != 0 as its
    // TTL / Hop Limit (IP_TTL / IPV6_HOPLIMIT), else with the socket's.
    void queue(int fd, const Address& to, std::span<const uint8_t> data, IpMarks marks = {});
    // One datagram now, with sendmsg (what does not fit the batch).
    bool send_now(int fd, const Address& to, std::span<const uint8_t> data, IpMarks marks);
    // `local`: the listening address of a client socket (listener or client
    // path); nullptr: relayed socket `index`.
    void receive(int fd, const Address* local, uint32_t index);
    void receive_errors(int fd, RelayId relay);

    Stats& stats_;
    Server* server_ = nullptr;
    int epoll_fd_ = -1;
    std::vector<Listener> listeners_;
    std::vector<Listener> paths_;  // client paths (fd -1: free)
    std::vector<RelayId> free_paths_;
    std::vector<Relay> relays_;
    std::vector<RelayId> free_relays_;
    size_t relay_count_ = 0;

    // Receive batch.
    RecvBatch<kBatch, kRxSlot> rx_;
    // Transmit batch.
    std::vector<uint8_t> tx_buf_;
    std::array<mmsghdr, kTxBatch> tx_msgs_{};
    std::array<iovec, kTxBatch> tx_iov_{};
    std::array<sockaddr_storage, kTxBatch> tx_addr_{};
    std::array<int, kTxBatch> tx_fd_{};
    // A relayed datagram's TOS and TTL control messages (write_marks_control).
    struct alignas(cmsghdr) TxControl : std::array<uint8_t, kMarksControlSpace> {};
    std::array<TxControl, kTxBatch> tx_ctl_{};
    size_t tx_count_ = 0;

    std::unique_ptr<StreamIo> streams_;  // with TCP/TLS listeners only
    std::unique_ptr<DtlsIo> dtls_;       // with DTLS listeners only
};

}  // namespace turn::cp
