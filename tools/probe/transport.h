// The probe's connection to the TURN server: a connected UDP socket, a TCP
// connection, TLS over TCP, or DTLS over a connected UDP socket (RFC 8656
// section 3.1, RFC 7350), carrying whole STUN and ChannelData messages.
// Stream transports frame with turn/stream_framing.h and pad ChannelData to
// 4 bytes on the way out; received ChannelData comes back without its
// padding. Datagram transports carry one message per datagram (DTLS: per
// record), unpadded, and lose some: requests are retransmitted over them.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "net/address.h"

namespace turn::probe {

enum class Kind : uint8_t { kUdp, kTcp, kTls, kDtls };

// UDP and DTLS: one message per datagram, no framing, and no delivery
// guarantee (STUN retransmits requests itself, RFC 8489 section 6.2.1).
constexpr bool is_datagram(Kind k) { return k == Kind::kUdp || k == Kind::kDtls; }
// TLS and DTLS: a certificate to check, a handshake to report.
constexpr bool is_secure(Kind k) { return k == Kind::kTls || k == Kind::kDtls; }
// "udp", "tcp", "tls", "dtls" (--transport and the reports).
constexpr const char* kind_name(Kind k) {
    return k == Kind::kUdp ? "udp" : k == Kind::kTcp ? "tcp" : k == Kind::kTls ? "tls" : "dtls";
}

// The most one DTLS record carries (2^14 bytes): one message at most this big.
constexpr size_t kMaxDtlsMessage = 16384;

struct TlsOptions {
    std::string server_name;  // SNI and the name the certificate must match ("" with an IP: the IP)
    std::string ca_file;      // trust these instead of the system's CAs
    bool verify = true;       // false: any certificate (self-signed test servers)
};

// What connecting cost and found (TCP, TLS and DTLS).
struct ConnectInfo {
    double connect_ms = 0;    // TCP handshake
    double tls_ms = 0;        // TLS or DTLS handshake
    std::string tls_version;  // "TLSv1.3", "DTLSv1.2"
    std::string alpn;         // negotiated ALPN ("stun.turn" or "")
    std::string cipher;
};

class Transport {
public:
    // nullptr with `error` set when the server cannot be reached within
    // timeout_ms or the TLS or DTLS handshake fails (certificate problems
    // named).
    static std::unique_ptr<Transport> open(Kind kind, const Address& server, const TlsOptions& tls, int timeout_ms,
                                           ConnectInfo& info, std::string& error);
    ~Transport();
    Transport(const Transport&) = delete;
    Transport& operator=(const Transport&) = delete;

    bool send(std::span<const uint8_t> message);
    // The next whole message within timeout_ms; nothing on timeout, or when
    // the server closed the connection (closed() tells).
    std::optional<std::vector<uint8_t>> recv(int timeout_ms);
    bool closed() const { return closed_; }
    int fd() const { return fd_; }
    // Bytes already read but not yet returned (poll() cannot see them).
    bool buffered() const;
    Address local() const;
    Kind kind() const { return kind_; }

private:
    Transport(Kind k, int fd) : kind_(k), fd_(fd) {}
    bool read_more(int timeout_ms);
    // TLS over the connected socket, or DTLS over it; the handshake within
    // timeout_ms. False with `error` set if it cannot be done.
    bool handshake(const Address& server, const TlsOptions& tls, int timeout_ms, ConnectInfo& info,
                   std::string& error);

    Kind kind_;
    int fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    bool closed_ = false;
    std::vector<uint8_t> in_;
};

}  // namespace turn::probe
