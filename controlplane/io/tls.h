// The TLS server contexts for TURN over TLS ("turns:", RFC 8656 section 3.1)
// and over DTLS (RFC 7350): OpenSSL, TLS 1.2 / DTLS 1.2 or newer, the
// operator's certificate chain and key, ALPN "stun.turn" (RFC 7443) when the
// client offers it. One context of each per process, shared by every event
// loop (SSL_CTX is safe to share for SSL_new).
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <memory>
#include <vector>
#include <string>

#include "net/address.h"

namespace turn::cp {

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using TlsContext = std::unique_ptr<SSL_CTX, SslCtxFree>;

// nullptr with `error` naming the key and what to fix when a file cannot be
// read, is not PEM, or the key does not belong to the certificate.
// With `dtls` a DTLS server context: DTLS 1.2, stateless cookies
// (dtls_cookie below) for DTLSv1_listen.
TlsContext make_tls_context(const std::string& certificate, const std::string& private_key, std::string& error,
                            bool dtls = false);

// DTLS cookies (RFC 6347 section 4.2.1): HMAC-SHA256 of the client's address
// and the minute, under a key drawn once per process; a cookie holds for its
// minute and the next. A DTLS SSL's app data (SSL_set_app_data) must point at
// the Address of the client it talks to: the context's callbacks read it.
constexpr size_t kDtlsCookieSize = 16;
void dtls_cookie(const Address& client, uint64_t minute, uint8_t (&out)[kDtlsCookieSize]);

// The context new TLS connections get, replaceable while the loops run
// (SIGHUP: a renewed certificate without a restart). Connections keep the
// context they were accepted with (OpenSSL counts the references); a replaced
// context is kept until this object goes, because a loop may be between
// reading the pointer and SSL_new() on it. Reloads are rare, so that is a few
// kilobytes per reload at most.
class TlsContexts {
public:
    TlsContexts() = default;
    ~TlsContexts();
    TlsContexts(const TlsContexts&) = delete;
    TlsContexts& operator=(const TlsContexts&) = delete;

    // One thread at a time (start-up, then the reload): loads (or reloads)
    // the files; false with `error` set, the current context unchanged. Files
    // whose contents are those already loaded make no new context (replaced
    // contexts are kept until exit, since a loop may be between get() and
    // SSL_new; an unchanged reload must not add one): `*unchanged` says so.
    bool load(const std::string& certificate, const std::string& private_key, std::string& error,
              bool* unchanged = nullptr);
    // Any thread. get(): TLS; get_dtls(): DTLS, the same certificate.
    SSL_CTX* get() const { return current_.load(std::memory_order_acquire); }
    SSL_CTX* get_dtls() const { return current_dtls_.load(std::memory_order_acquire); }
    // "subject CN ..., expires ..." of the current certificate, for logs.
    std::string describe() const;
    // The current certificate's notAfter in seconds since the epoch (UTC);
    // 0 without one. For the metrics (turn_tls_certificate_expiry_timestamp_seconds).
    int64_t not_after() const;

private:
    std::atomic<SSL_CTX*> current_{nullptr};
    std::atomic<SSL_CTX*> current_dtls_{nullptr};
    std::vector<SSL_CTX*> retired_;
    std::string loaded_;  // the current context's certificate and key file contents
};

}  // namespace turn::cp
