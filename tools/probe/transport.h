// The probe's connection to the TURN server: a connected UDP socket, a TCP
// connection, or TLS over TCP (RFC 8656 section 3.1), carrying whole STUN
// and ChannelData messages. Stream transports frame with
// turn/stream_framing.h and pad ChannelData to 4 bytes on the way out;
// received ChannelData comes back without its padding.
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

enum class Kind : uint8_t { kUdp, kTcp, kTls };

struct TlsOptions {
    std::string server_name;  // SNI and the name the certificate must match ("" with an IP: the IP)
    std::string ca_file;      // trust these instead of the system's CAs
    bool verify = true;       // false: any certificate (self-signed test servers)
};

// What connecting cost and found (stream transports).
struct ConnectInfo {
    double connect_ms = 0;    // TCP handshake
    double tls_ms = 0;        // TLS handshake
    std::string tls_version;  // "TLSv1.3"
    std::string alpn;         // negotiated ALPN ("stun.turn" or "")
    std::string cipher;
};

class Transport {
public:
    // nullptr with `error` set when the server cannot be reached within
    // timeout_ms or the TLS handshake fails (certificate problems named).
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

    Kind kind_;
    int fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    bool closed_ = false;
    std::vector<uint8_t> in_;
};

}  // namespace turn::probe
