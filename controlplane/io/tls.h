// The TLS server context for TURN over TLS ("turns:", RFC 8656 section 3.1):
// OpenSSL, TLS 1.2 or newer, the operator's certificate chain and key, ALPN
// "stun.turn" (RFC 7443) when the client offers it. One context per
// process, shared by every event loop (SSL_CTX is safe to share for SSL_new).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

namespace turn::cp {

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using TlsContext = std::unique_ptr<SSL_CTX, SslCtxFree>;

// nullptr with `error` naming the key and what to fix when a file cannot be
// read, is not PEM, or the key does not belong to the certificate.
TlsContext make_tls_context(const std::string& certificate, const std::string& private_key, std::string& error);

}  // namespace turn::cp
