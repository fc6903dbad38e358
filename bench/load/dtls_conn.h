// TURN over DTLS (RFC 7350: "turns:" with transport=udp; RFC 8656 section
// 3.1) from the client side: an OpenSSL DTLS 1.2+ client session on the
// session's UDP socket, which is connected to the server. Every STUN or
// ChannelData message is one DTLS record and every record one datagram: no
// stream framing, no ChannelData padding, and loss as over UDP (requests are
// retransmitted as over UDP).
//
// The SSL sits on a small BIO of our own, so that the traffic thread keeps
// the UDP mode's batching and kernel receive timestamps:
//   handshake()  SSL_connect with poll() on the socket, flights retransmitted
//                on OpenSSL's timer (DTLSv1_get_timeout/DTLSv1_handle_timeout),
//                bounded by a deadline (the only place that waits);
//   seal()       encrypts one message into a caller's buffer, which the
//                traffic thread hands to sendmmsg with the rest of its batch;
//   send()       encrypts one message and sends it now (requests, refreshes);
//   feed()+read() decrypts a datagram the traffic thread got from recvmmsg;
//   read(.., true) reads the socket itself (setup and teardown requests).
// Untrusted input: records that do not decrypt or parse are dropped by
// OpenSSL (RFC 6347 4.1.2.7), a datagram is at most what the caller read, a
// record's plaintext at most 2^14 bytes; a close_notify or a fatal alert ends
// the session (broken(), the reason for the error tally), nothing else does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "net/address.h"
#include "stream_conn.h"

namespace turn::load {

class DtlsConn {
public:
    // The largest plaintext of one record (2^14, RFC 6347 4.1).
    static constexpr size_t kMaxRecord = 16384;
    // What a record adds to its plaintext, at most: the 13-byte header and,
    // for a CBC suite, IV (16), MAC (up to 48) and padding (up to 16); AEAD
    // suites add 24.
    static constexpr size_t kMaxOverhead = 128;
    // Largest datagram of a handshake flight: IPv6 minimum MTU less headers,
    // for a real path as well as loopback.
    static constexpr long kMtu = 1200;

    DtlsConn();
    // close_notify (one datagram, no wait) unless the session broke; the
    // socket belongs to the caller and must still be open.
    ~DtlsConn();
    DtlsConn(const DtlsConn&) = delete;
    DtlsConn& operator=(const DtlsConn&) = delete;

    // The DTLS handshake on `fd` (a non-blocking UDP socket connected to
    // `server`) with `tls` (a datagram TlsClient), until `deadline_ns`. False
    // with `err` (a sentence naming the server) and `why` set.
    bool handshake(int fd, TlsClient& tls, const Address& server, uint64_t deadline_ns, std::string& err,
                   ConnectError& why);

    bool broken() const { return broken_; }
    // Why it broke, for the error tally ("dtls_closed", "dtls_error", ...).
    const std::string& break_reason() const { return reason_; }

    // `message` as one record into `out` (not sent); the datagram's length,
    // 0 if the session is broken. `out` must hold message + kMaxOverhead.
    size_t seal(std::span<const uint8_t> message, std::span<uint8_t> out);
    // `message` as one record, sent now; false if the session is broken or
    // the socket refused the datagram for another reason than a full buffer
    // (a datagram dropped then is lost, as over UDP).
    bool send(std::span<const uint8_t> message);
    // The next datagram read() decrypts (from recvmmsg); it must stay valid
    // until read() returns something else than kOk.
    void feed(std::span<const uint8_t> datagram) {
        in_ = datagram.data();
        in_len_ = datagram.size();
    }
    // The next message (one record's plaintext; valid until the next read):
    // kOk; kAgain when the fed datagram (or, `from_socket`, the socket) has
    // no more; kClosed (close_notify) or kError (fatal alert, or a socket
    // error such as an ICMP port unreachable from_socket; only the first two
    // break the session).
    IoStatus read(std::span<const uint8_t>& message, bool from_socket);
    // Waits (poll) until the socket is readable or `deadline_ns`.
    bool wait(uint64_t deadline_ns) const;

    // The BIO's side: datagrams in and out (dtls_conn.cc).
    int bio_read(uint8_t* out, size_t cap);
    void bio_write(const uint8_t* data, size_t len);

private:
    void mark_broken(std::string_view reason);

    int fd_ = -1;
    SSL* ssl_ = nullptr;
    bool broken_ = false;
    std::string reason_;
    std::unique_ptr<uint8_t[]> plain_;  // kMaxRecord: one record's plaintext
    // The BIO's state: the fed datagram, whether it may recv() on its own,
    // where a sealed record goes, the last socket error.
    const uint8_t* in_ = nullptr;
    size_t in_len_ = 0;
    bool from_socket_ = true;
    std::span<uint8_t> seal_out_;
    size_t sealed_ = 0;
    int sys_errno_ = 0;
};

}  // namespace turn::load
