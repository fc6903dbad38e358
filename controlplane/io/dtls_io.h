// TURN over DTLS (RFC 8656 section 3.1, RFC 7350: "turns:" with
// transport=udp) for one event loop: its DTLS listeners (UDP sockets with
// SO_REUSEPORT, one set per loop like the plain UDP ones, so a client's
// datagrams always reach the same loop) and the DTLS sessions of the clients
// that reached them, through OpenSSL. Every record a session decrypts is one
// datagram for Server::on_client_datagram with a DTLS 5-tuple; the core
// answers through SocketIo::send_to_client, which encrypts it here as one
// record and sends it as one datagram. Relaying to peers stays UDP.
//
// All sessions of a loop share its listener's socket: a session's SSL reads
// the datagram being handled and writes its records straight into the loop's
// transmit batch through a small BIO of our own (one per SSL), so datagram
// boundaries are kept (each BIO write is one datagram) without a socket per
// client.
//
// Against clients that are hostile or spoofed:
// - a source without a session gets state only for a ClientHello that
//   carries a valid cookie (DTLSv1_listen, the cookie from io/tls.h): a
//   spoofed source never sees the HelloVerifyRequest's cookie, and that
//   answer is smaller than the ClientHello (no amplification); any other
//   datagram from a source without a session is dropped
//   (turn_drops_total{reason="dtls_no_session"});
// - an unfinished handshake: past 4 records of a later epoch (which OpenSSL
//   would buffer, ~17.7 KiB each), its datagrams are dropped
//   (reason="dtls_early_records"), and handshake messages are reassembled
//   in at most ~16.6 KiB (SSL_set_max_cert_list);
// - [dtls].max_sessions (whole process), max_sessions_per_ip (IPv4 address
//   or IPv6 /64), handshakes_per_ip_per_s: a handshake over them is not
//   started (turn_connections_closed_total{transport="dtls",reason="limit"|"rate"});
// - time: a session without an allocation is closed [dtls].idle_timeout_s
//   after its last record (a handshake that does not finish included);
//   OpenSSL retransmits handshake flights on its own timer, driven by expire();
// - records: invalid ones are discarded by OpenSSL (RFC 6347 4.1.2.7);
//   plaintext for the client over 16 KiB (the largest DTLS record) would be
//   dropped, not sent (turn_drops_total{reason="too_large"}); no message
//   comes near it today (peer datagrams over 9216 bytes are dropped first),
//   the check keeps OpenSSL from ending the session if one ever does.
// A session ends with the client's close_notify or a fatal alert, the idle
// timeout, or the loop's end (close_notify sent); it ends the allocation on
// its 5-tuple (Server::on_client_closed), as a TLS connection's end does. A
// new handshake (epoch 0 ClientHello with a valid cookie and another client
// random) from the 5-tuple of a session, established or not, replaces it if
// the handshake rate allows: the client restarted; a late copy of the
// session's own ClientHello changes nothing.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/socket.h>

#include "core/shared.h"
#include "core/stats.h"
#include "core/timer_wheel.h"
#include "io/recv_batch.h"
#include "io/tls.h"
#include "net/address.h"
#include "net/ip_marks.h"

namespace turn::cp {

class Server;

class DtlsIo {
public:
    // epoll tag: bit 60 marks DTLS listeners (index in the low bits).
    static constexpr uint64_t kTag = 1ull << 60;
    // The largest plaintext one DTLS record carries (2^14).
    static constexpr size_t kMaxRecord = 16384;
    // Sends one datagram from listener socket `fd` (the loop's transmit batch)
    // with those marks (TOS, TTL; 0: the socket's default).
    using SendFn = std::function<void(int fd, const Address& to, std::span<const uint8_t> data, IpMarks marks)>;

    DtlsIo(Shared& shared, Stats& stats, int epoll_fd, SendFn send);
    ~DtlsIo();  // close_all() first
    // Sends close_notify to every established session and ends them all
    // (reason "shutdown") without telling the server; the alerts are in the
    // transmit batch, so flush it before the listeners close.
    void close_all();
    DtlsIo(const DtlsIo&) = delete;
    DtlsIo& operator=(const DtlsIo&) = delete;

    void set_server(Server* s) { server_ = s; }
    std::string add_listener(const Address& local, const TlsContexts* tls);

    void on_event(uint64_t tag);
    // Encrypts `data` as one record to the session of `to`, the datagram
    // leaving with `marks` (relayed data keeps DSCP and ECN and leaves with
    // one less TTL, RFC 8656 section 14; handshake records and alerts leave
    // with the defaults); false if there is no established session.
    bool send(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks = {});
    // The loop's clock, every iteration: the sessions' timers (handshake
    // retransmissions every 100 ms while one lasts; the idle check when a
    // session's idle time may have run out), on a wheel of this DtlsIo's:
    // O(timers due), not O(sessions).
    void expire(uint64_t now_ms);

    size_t session_count() const { return sessions_.size(); }

    struct Bio;  // io/dtls_io.cc: one per SSL

private:
    struct Listener {
        int fd = -1;
        Address local;
        const TlsContexts* tls = nullptr;
        // The SSL that answers ClientHellos of sources without a session
        // (DTLSv1_listen); it becomes the session's SSL once a cookie checks out.
        SSL* listen_ssl = nullptr;
        std::unique_ptr<Bio> listen_bio;
        BIO_ADDR* listen_addr = nullptr;
    };
    struct Session {
        SSL* ssl = nullptr;
        std::unique_ptr<Bio> bio;
        FiveTuple ft;
        bool established = false;
        // Records of a later epoch than 0 received before the session was
        // established (DtlsIo::feed): OpenSSL keeps each such record with a
        // whole read buffer (~17.7 KiB) until its epoch starts, up to 100.
        uint32_t early_records = 0;
        uint64_t last_rx_ms = 0;  // last STUN or ChannelData record from the client (or the session's start)
        size_t max_plain = kMaxRecord;  // the largest record it takes
        uint64_t serial = 0;  // tells its timers from those of an earlier session on its 5-tuple
    };

    bool new_listen_ssl(Listener& l);
    void receive(uint32_t index);
    void on_datagram(uint32_t index, const Address& src, std::span<const uint8_t> data);
    // A ClientHello from a source without a session (or a new one on an
    // established 5-tuple): answered statelessly, or a new session.
    void on_hello(Listener& l, const FiveTuple& ft, std::span<const uint8_t> data);
    // Feeds a datagram to a session; false if the session was closed.
    bool feed(Session& s, std::span<const uint8_t> data);
    // Decrypted records to the server; false if the session was closed.
    bool read_records(Session& s);
    void close(const FiveTuple& key, ConnClose why, bool notify = true);
    // The session of `ft` if it is the one numbered `serial`.
    Session* session_of(const FiveTuple& ft, uint64_t serial);
    // Lazy timers (core/timer_wheel.h): each looks its session up and
    // re-arms itself or ends it. The handshake's: OpenSSL's retransmission
    // timer, every 100 ms until established. The idle one: due at the last
    // datagram + [dtls].idle_timeout_s; a session with an allocation is kept
    // (checked again one idle time later), one without is closed (idle, or
    // tls_handshake if never established).
    void arm_handshake_timer(const FiveTuple& ft, uint64_t serial);
    void arm_idle_timer(const FiveTuple& ft, uint64_t serial, uint64_t at_ms);
    void on_handshake_timer(const FiveTuple& ft, uint64_t serial);
    void on_idle_timer(const FiveTuple& ft, uint64_t serial);
    uint64_t idle_ms() const { return uint64_t{shared_.config.dtls_idle_timeout_s} * 1000; }
    void count_closed(ConnClose why);

    Shared& shared_;
    Stats& stats_;
    int epoll_fd_;
    SendFn send_;
    Server* server_ = nullptr;
    std::vector<Listener> listeners_;
    std::unordered_map<FiveTuple, std::unique_ptr<Session>, FiveTupleHash> sessions_;
    uint64_t now_ms_ = 0;
    IpMarks rx_marks_;  // the TOS and TTL of the datagram being handled
    TimerWheel wheel_{0};  // 100 ms ticks
    uint64_t next_serial_ = 0;

    // Receive batch and the decrypted record.
    static constexpr size_t kBatch = 16;
    static constexpr size_t kRxSlot = 9216;  // as SocketIo's: larger datagrams are dropped (too_large)
    RecvBatch<kBatch, kRxSlot> rx_;
    std::vector<uint8_t> plain_;
};

}  // namespace turn::cp
