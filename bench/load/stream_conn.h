// One client connection to a TURN server over TCP or TLS (RFC 8656 section
// 3.1), non-blocking so one traffic thread drives hundreds of them from its
// epoll loop, as it drives UDP sockets:
//   connect()   non-blocking connect, then the TLS handshake, both bounded by a
//               deadline (the only place that waits, at allocation set-up);
//   write()     queues whole messages in a bounded output queue (all or
//               nothing: a message is never cut, as a datagram is never cut);
//   flush()     hands the queue to the kernel (or OpenSSL) as far as it takes;
//   read_once() one recv/SSL_read into the StreamReader, which cuts messages.
// A connection that breaks (reset, EOF, TLS error, malformed frame) stays
// broken: the owner counts the reason and stops using it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/address.h"
#include "stream_reader.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace turn::load {

// kDtls: TURN over DTLS (RFC 7350), a connected UDP socket with a DTLS
// session on it (dtls_conn.h); not a stream.
enum class Transport : uint8_t { kUdp, kTcp, kTls, kDtls };
std::string_view to_string(Transport t);

struct TlsOptions {
    bool verify = true;          // check the certificate chain (and the name below)
    std::string ca_file;         // PEM CA bundle; empty: the system's default paths
    std::string server_name;     // SNI and verified name (DNS name or IP); empty: not checked
    bool datagram = false;       // a DTLS 1.2+ context (DTLS_client_method) instead of TLS 1.2+
};

// The shared client SSL_CTX, TLS or DTLS (thread-safe to share; each SSL
// belongs to one thread at a time).
class TlsClient {
public:
    static std::unique_ptr<TlsClient> create(const TlsOptions& o, std::string& err);
    ~TlsClient();
    TlsClient(const TlsClient&) = delete;
    TlsClient& operator=(const TlsClient&) = delete;
    SSL_CTX* ctx() const { return ctx_; }
    const TlsOptions& options() const { return opts_; }

private:
    TlsClient() = default;
    SSL_CTX* ctx_ = nullptr;
    TlsOptions opts_;
};

// The first queued OpenSSL error as text (the queue is cleared).
std::string ssl_errors();
// A new client SSL (TLS or DTLS) of `tls` for its server name: SNI for a DNS
// name, and the name or IP checked in the certificate when verifying.
// nullptr with `err` set.
SSL* new_client_ssl(const TlsClient& tls, std::string& err);
// Why SSL_connect failed with SSL_get_error() `ssl_error` (errno `sys_errno`
// of the socket call under it, 0 if none): the certificate check, the socket
// error or OpenSSL's queued error, as a sentence.
std::string handshake_error(SSL* ssl, int ssl_error, int sys_errno);

enum class IoStatus : uint8_t { kOk, kAgain, kClosed, kError };

// Why a connection could not be set up: also the key in the error tally.
enum class ConnectError : uint8_t { kNone, kSocket, kRefused, kTimeout, kConnect, kTlsHandshake, kDtlsHandshake };
std::string_view to_string(ConnectError e);

class StreamConn {
public:
    // `out_capacity`: bound on queued output (like a UDP socket's send buffer).
    explicit StreamConn(size_t out_capacity = 256 * 1024, size_t max_message = kDefaultMaxStreamMessage);
    ~StreamConn();
    StreamConn(const StreamConn&) = delete;
    StreamConn& operator=(const StreamConn&) = delete;

    // TCP connect to `server` and, with `tls`, the TLS handshake; false with
    // `err` (a sentence naming the server) and `why` set.
    bool connect(const Address& server, TlsClient* tls, uint64_t deadline_ns, std::string& err, ConnectError& why);

    int fd() const { return fd_; }
    uint16_t local_port() const { return local_port_; }
    bool broken() const { return broken_; }
    // The reason it broke, for the error tally ("stream_closed", "stream_reset", ...).
    const std::string& break_reason() const { return reason_; }
    void mark_broken(std::string_view reason);

    size_t out_space() const { return out_.size() - (tail_ - head_); }
    bool want_write() const { return tail_ > head_; }
    // Queues `data` (whole messages) and flushes. False if it does not fit in
    // the queue or the connection is broken; nothing is queued then.
    bool write(std::span<const uint8_t> data);
    // Sends queued output as far as the kernel takes it; false if broken.
    bool flush();
    // One read into reader(); kAgain when nothing is there (or TLS wants to
    // write first), kClosed at EOF, kError on a reset or TLS error (broken).
    IoStatus read_once();
    // TLS: decrypted or undecrypted bytes OpenSSL holds that epoll cannot see.
    bool has_pending_input() const;
    StreamReader& reader() { return reader_; }

    // Waits (poll) until the connection is readable, or writable when output
    // is queued, or `deadline_ns`; false on timeout.
    bool wait(uint64_t deadline_ns) const;

private:
    IoStatus tls_result(int r, const char* what);
    bool handshake(TlsClient& tls, const Address& server, uint64_t deadline_ns, std::string& err);

    int fd_ = -1;
    SSL* ssl_ = nullptr;
    uint16_t local_port_ = 0;
    bool broken_ = false;
    bool tls_wants_read_ = false;   // SSL_write asked for a read first
    std::string reason_;
    std::vector<uint8_t> out_;
    size_t head_ = 0;
    size_t tail_ = 0;
    StreamReader reader_;
};

}  // namespace turn::load
