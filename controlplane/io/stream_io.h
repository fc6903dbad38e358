// TURN over TCP and over TLS (RFC 8656 section 3.1) for one event loop: its
// listeners (SO_REUSEPORT, one set per loop, like the UDP ones: the kernel
// spreads connections over the loops), the client connections they accept, message framing on the stream
// (turn/stream_framing.h), TLS through OpenSSL. Every message framed off a
// connection goes to Server::on_client_datagram with a TCP or TLS 5-tuple;
// the core answers through SocketIo::send_to_client, which queues the bytes
// here (ChannelData padded to 4, RFC 8656 section 12.5). Relaying to peers
// stays UDP.
//
// Bounds, against clients that are slow or hostile:
// - [tcp].max_connections for the whole process (Shared::connections):
//   connections beyond it are closed as soon as they are accepted;
// - input: one partial message per connection, at most
//   turn::kMaxStreamFrame bytes; bytes that are neither STUN nor ChannelData
//   close the connection (there is no next message boundary to find);
// - output: [tcp].send_buffer_bytes queued per connection; beyond it
//   messages are dropped (turn_drops_total{reason="stream_backpressure"}),
//   as UDP would lose them;
// - time: a connection without an allocation is closed [tcp].idle_timeout_s
//   after it was accepted or its allocation ended, whatever unauthenticated
//   messages it sends (a TLS handshake that does not finish included);
// - per client IP: [tcp].max_connections_per_ip;
// - file descriptors: out of them, a listener is not watched for 100 ms
//   (instead of spinning on a connection it cannot accept).
// A closed connection ends the allocation on its 5-tuple
// (Server::on_client_closed).
//
// RFC 6062 TCP allocations live here too: a listening socket per TCP
// allocation at its relayed address, peer connections (made for Connect, or
// accepted from permitted peers), and data connections: a client connection
// whose ConnectionBind succeeded stops being framed and is piped to its peer
// connection, both ways, with backpressure (a side whose partner has
// [tcp].send_buffer_bytes queued is not read until that drains; nothing is
// dropped). A side that ends its stream (FIN; over TLS close_notify) is
// half-closed through the pipe: the other side gets everything queued for
// it and then the FIN (RFC 6062 relays TCP, and a half-close is part of it:
// "request, FIN, read the whole answer" must work), while the other
// direction carries on; once both directions have ended, both connections
// close. An error (RST, a failed send) closes both at once. A peer
// connection's bytes before the bind are kept (up to 64 KiB, then it is not
// read), its FIN too. A
// ConnectionBind that arrives on another loop than its peer connection's
// brings its connection over to that loop first (io/stream_handoff.h).
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/packet_io.h"
#include "core/shared.h"
#include "core/stats.h"
#include "io/stream_handoff.h"
#include "io/tls.h"
#include "net/address.h"

namespace turn::cp {

class Server;

class StreamIo {
public:
    // epoll tags: bit 62 marks stream events; bit 61 a listener (index in
    // the low bits), else a connection (generation << 24 | index).
    static constexpr uint64_t kTag = 1ull << 62;

    StreamIo(Shared& shared, Stats& stats, int epoll_fd);
    ~StreamIo();  // closes every connection (reason "shutdown") without telling the server
    StreamIo(const StreamIo&) = delete;
    StreamIo& operator=(const StreamIo&) = delete;

    void set_server(Server* s) { server_ = s; }
    // A TCP listener; with `tls`, every connection it accepts speaks TLS
    // (with the context current at its accept).
    std::string add_listener(const Address& local, const TlsContexts* tls);

    void on_event(uint64_t tag, uint32_t events);
    // Queues one message for the connection of `to`; false if there is none.
    bool send(const FiveTuple& to, std::span<const uint8_t> data);
    // Writes what is queued (called after every poll, and by SocketIo from
    // inside the server's handlers: before it closes a relay socket, when its
    // batch is full). A connection that fails here is closed at once, but the
    // server hears of it (on_client_closed, on_tcp_peer_closed) only at the
    // next expire(): a handler must not see the allocation it holds removed
    // under it.
    void flush();
    // The loop's clock, every iteration, outside the server's handlers:
    // reports the ends found in flush(); closes idle connections once a second.
    void expire(uint64_t now_ms);

    // RFC 6062 (PacketIo's TCP relay operations, through SocketIo).
    static constexpr RelayId kTcpRelayBase = 1u << 30;  // never an open_relay() id
    OpenResult open_tcp_relay(const Address& addr, RelayId& out);
    void close_tcp_relay(RelayId relay);
    bool tcp_connect(RelayId relay, const Address& peer, uint32_t conn_id);
    void tcp_close_peer(uint32_t conn_id);
    bool tcp_bind_data(const FiveTuple& client, uint32_t conn_id);
    size_t peer_connection_count() const { return by_conn_id_.size(); }
    // Connections from and to other loops (nullptr: this is the only loop).
    void set_handoffs(StreamHandoffs* h, unsigned loop);
    // The client connection `client`, which sent `message` (a ConnectionBind
    // for a peer connection of loop `to`), goes to that loop with everything
    // it holds once the message has been handled; false if it cannot.
    bool tcp_handoff(const FiveTuple& client, unsigned to, std::span<const uint8_t> message);

    size_t connection_count() const { return by_tuple_.size(); }

private:
    struct Listener {
        int fd = -1;
        Address local;
        const TlsContexts* tls = nullptr;
        bool proxied = false;  // [tcp].proxy_protocol: connections start with a PROXY header
    };
    // kClient: framed TURN messages; kData: a client connection piped to a
    // peer connection after ConnectionBind; kPeer: a TCP allocation's
    // connection to or from a peer.
    enum class Role : uint8_t { kClient, kData, kPeer };
    struct Conn {
        int fd = -1;
        Role role = Role::kClient;
        int64_t partner = -1;        // kData <-> kPeer, once bound
        bool paused = false;         // not read while the partner's queue is full (or, bw_paused, the budget is spent)
        bool bw_paused = false;      // pipes: in bw_paused_, waiting for its allocation's bandwidth budget
        bool limited = false;        // pipes: its allocation has a bandwidth limit (pipe_budget)
        bool connecting = false;     // kPeer: the outgoing connect is in progress
        uint32_t conn_id = 0;        // kPeer: CONNECTION-ID
        RelayId relay = 0;           // kPeer: its TCP allocation's relay
        uint32_t gen = 0;
        SSL* ssl = nullptr;          // TLS connections
        bool handshake_done = false;
        bool want_write = false;     // EPOLLOUT registered
        bool write_after_read = false;  // TLS: the write waits for the client's next bytes (write)
        bool eof = false;            // its side ended (FIN, close_notify): not read any more
        bool fin_pending = false;    // pipes: send FIN once `out` is written
        bool fin_sent = false;
        bool parked = false;         // pipes: out of the epoll set (shut down both ways, see on_event)
        bool arrived = false;        // handed over by another loop (it is not handed on again)
        bool queued = false;         // in dirty_
        // A proxied listener's connection whose PROXY header has not been
        // read (or whose named client is not yet admitted): `ft` is the
        // proxy's, `in` holds the header so far, and the connection is not
        // in by_tuple_ nor counted per IP.
        bool awaiting_proxy = false;
        // From a proxied listener: `ft` is what its PROXY header said, which
        // no kernel vouches for (adopt_all).
        bool proxied = false;
        FiveTuple ft;
        uint64_t last_rx_ms = 0;     // accept / connect; for a client, then the last tick it had an allocation
        std::vector<uint8_t> in;     // a partial message
        std::vector<uint8_t> out;    // queued output from out_off on
        size_t out_off = 0;
    };

    void accept_all(Listener& l);
    // A proxied connection's PROXY header (peeked, so that no byte after it
    // is taken from the socket): true once it is read and its client
    // admitted (the per-IP limits), with `ft` naming that client; false
    // while it is incomplete, or if the connection was closed.
    bool read_proxy_header(uint32_t idx);
    // Closes a proxied connection whose header is refused, as proxy_header,
    // without a word to the server (it has not seen the connection, or the
    // 5-tuple belongs to another one); at debug level logs why, the proxy
    // (when known: nullptr after a handoff) and, when `named`, the client
    // the header named.
    void refuse_proxy_header(uint32_t idx, const Address* proxy, std::string_view why, bool named);
    void read(uint32_t idx);
    void read_some(uint32_t idx);  // up to kReadsPerEvent reads, handed on (consume, raw_in)
    // Frames messages off `bytes` (the connection's partial message first);
    // false if the connection was closed.
    bool consume(uint32_t idx, std::span<const uint8_t> bytes);
    bool deliver(uint32_t idx, std::span<const uint8_t> bytes, size_t& used);
    void write(uint32_t idx);
    void set_want_write(Conn& c, uint32_t idx, bool on);
    void update_events(Conn& c, uint32_t idx);
    void compact(Conn& c);
    void pause_on_exhaustion(int fd, uint64_t tag);
    struct PausedListener {
        int fd;
        uint64_t tag;
        uint64_t until_ms;
    };
    std::vector<PausedListener> paused_listeners_;
    // Pipe sides not read while their allocation's bandwidth budget is spent
    // (Server::tcp_budget), each tried again at every tick (expire).
    struct BwPaused {
        uint32_t idx;
        uint64_t tag;
    };
    std::vector<BwPaused> bw_paused_;
    // The budget a pipe side may read now (UINT64_MAX: no limit; a peer not
    // bound yet is bounded by kPeerPending instead).
    uint64_t pipe_budget(const Conn& c) const;
    void resume_bandwidth_paused();
    bool fd_warning_logged_ = false;
    void close(uint32_t idx, ConnClose why, bool notify = true);
    // RFC 6062.
    struct TcpRelay {
        int fd = -1;
        Address local;
        std::vector<uint32_t> conns;  // conn ids of its peer connections
    };
    void accept_peers(uint32_t relay_index);
    uint32_t new_conn_slot();
    void raw_in(uint32_t idx, std::span<const uint8_t> bytes);
    // What the reads of pipe side idx queued for its partner, written now
    // (unless the partner waits for room; a failed write closes both).
    void forward_now(uint32_t idx);
    // Half-close: side idx ended its stream; its partner gets a FIN after
    // what is queued for it (send_fin), and a pipe whose two directions have
    // both ended closes.
    void half_close(uint32_t idx);
    void send_fin(uint32_t idx);
    bool pipe_done(uint32_t idx) const;
    void queue_raw(uint32_t idx, std::span<const uint8_t> bytes);
    // `bytes` piped for the peer connection `conn_id` (CONNECTION-ID): the
    // relay's turn_tcp_relayed_bytes_total and its allocation's usage.
    void count_piped(uint32_t conn_id, Direction d, size_t bytes);
    void connect_done(uint32_t idx, bool ok);
    // A peer connection of relay `relay_index` on `fd` (connecting: an
    // outgoing connect still in progress).
    void add_peer(int fd, uint32_t conn_id, uint32_t relay_index, const Address& peer, bool connecting);
    // Closes a peer connection and its data connection (if bound); tells the
    // server unless it asked for the close.
    void close_peer(uint32_t idx, bool notify);
    // A connection of any role ended: a framed client connection alone, a
    // pipe's side with its other side.
    void close_any(uint32_t idx, ConnClose why);
    uint64_t tag(uint32_t idx) const { return kTag | uint64_t{conns_[idx]->gen} << 24 | idx; }
    // Handoff: the connection leaves (from deliver(), after its message, with
    // the bytes that followed it); connections arriving from other loops.
    void finish_handoff(uint32_t idx, std::span<const uint8_t> after);
    void adopt_all();
    // The connection tcp_handoff() marked, handed over when its message is done.
    struct Leaving {
        uint32_t idx = 0;
        unsigned to = 0;
        std::vector<uint8_t> message;
    };
    std::optional<Leaving> leaving_;
    StreamHandoffs* handoffs_ = nullptr;
    unsigned loop_ = 0;

    Shared& shared_;
    Stats& stats_;
    int epoll_fd_;
    Server* server_ = nullptr;
    std::vector<Listener> listeners_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<uint32_t> free_;
    std::unordered_map<FiveTuple, uint32_t, FiveTupleHash> by_tuple_;
    std::vector<uint32_t> dirty_;  // connections with output to write
    bool in_flush_ = false;
    std::vector<FiveTuple> ended_clients_;  // closed in flush(), for on_client_closed
    std::vector<uint32_t> ended_peers_;     // closed in flush(), for on_tcp_peer_closed (CONNECTION-ID)
    std::vector<uint8_t> rx_;      // read buffer shared by the loop's connections
    std::vector<TcpRelay> tcp_relays_;  // index = RelayId - kTcpRelayBase
    std::vector<uint32_t> free_tcp_relays_;
    std::unordered_map<uint32_t, uint32_t> by_conn_id_;  // CONNECTION-ID -> peer connection slot
    uint64_t now_ms_ = 0;
    uint64_t last_expire_ms_ = 0;
};

}  // namespace turn::cp
