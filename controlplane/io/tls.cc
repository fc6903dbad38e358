#include "io/tls.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <sys/socket.h>
#include <sys/stat.h>

#include <array>
#include <cstdlib>
#include <ctime>

#include <cstring>
#include <utility>

#include "io/files.h"

namespace turn::cp {

namespace {

// What the file `path` holds, for telling a renewed file from the loaded
// one (certificates and keys are a few KiB; at most 64 MiB is read); empty if
// it cannot be read (make_tls_context then says why).
std::string file_contents(const std::string& path) {
    std::string ignored;
    const auto d = read_file(path, size_t{64} << 20, ignored);
    return d ? std::string(d->begin(), d->end()) : std::string();
}

std::string openssl_error() {
    std::string s;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!s.empty()) {
            s += "; ";
        }
        s += buf;
    }
    return s.empty() ? "unknown OpenSSL error" : s;
}

// RFC 7443: "stun.turn" for TURN over TLS. A client that offers only other
// protocols is served without ALPN rather than refused.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen, void*) {
    static const unsigned char kTurn[] = {9, 's', 't', 'u', 'n', '.', 't', 'u', 'r', 'n'};
    unsigned char* sel = nullptr;
    if (SSL_select_next_proto(&sel, outlen, kTurn, sizeof kTurn, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

uint64_t unix_minute() {
    return static_cast<uint64_t>(std::time(nullptr)) / 60;
}

int generate_cookie(SSL* ssl, unsigned char* out, unsigned int* len) {
    const auto* client = static_cast<const Address*>(SSL_get_app_data(ssl));
    if (client == nullptr) {
        return 0;
    }
    uint8_t c[kDtlsCookieSize];
    dtls_cookie(*client, unix_minute(), c);
    std::memcpy(out, c, sizeof c);  // DTLS1_COOKIE_LENGTH (255) bytes of room
    *len = sizeof c;
    return 1;
}

int verify_cookie(SSL* ssl, const unsigned char* cookie, unsigned int len) {
    const auto* client = static_cast<const Address*>(SSL_get_app_data(ssl));
    if (client == nullptr || len != kDtlsCookieSize) {
        return 0;
    }
    const uint64_t now = unix_minute();
    for (const uint64_t minute : {now, now - 1}) {
        uint8_t c[kDtlsCookieSize];
        dtls_cookie(*client, minute, c);
        if (CRYPTO_memcmp(c, cookie, sizeof c) == 0) {
            return 1;
        }
    }
    return 0;
}

}  // namespace

void dtls_cookie(const Address& client, uint64_t minute, uint8_t (&out)[kDtlsCookieSize]) {
    static const auto key = [] {
        std::array<uint8_t, 32> k{};
        if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) {
            std::abort();  // no randomness: nothing secure can be done
        }
        return k;
    }();
    sockaddr_storage ss{};
    const size_t n = client.to_sockaddr(&ss);
    uint8_t msg[sizeof ss + sizeof minute];
    std::memcpy(msg, &ss, n);
    std::memcpy(msg + n, &minute, sizeof minute);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg, n + sizeof minute, mac, &mac_len);
    std::memcpy(out, mac, sizeof out);
}

TlsContext make_tls_context(const std::string& certificate, const std::string& private_key, std::string& error,
                            bool dtls) {
    ERR_clear_error();
    TlsContext ctx(SSL_CTX_new(dtls ? DTLS_server_method() : TLS_server_method()));
    if (!ctx) {
        error = "[tls]: cannot create a " + std::string(dtls ? "DTLS" : "TLS") + " context: " + openssl_error();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx.get(), dtls ? DTLS1_2_VERSION : TLS1_2_VERSION);
    if (dtls) {
        SSL_CTX_set_cookie_generate_cb(ctx.get(), generate_cookie);
        SSL_CTX_set_cookie_verify_cb(ctx.get(), verify_cookie);
    }
    // Partial writes (the event loop keeps the rest), the output buffer may
    // move between retries, and idle connections give their buffers back.
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                    SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // No read-ahead (OpenSSL's default, said here because the loop handoff
    // relies on it): SSL_read takes one record at a time off the socket, so
    // nothing undecrypted waits inside a session where epoll cannot see it.
    SSL_CTX_set_read_ahead(ctx.get(), 0);
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    // An encrypted key must fail start-up, not make OpenSSL ask for a
    // passphrase on a terminal a service does not have.
    SSL_CTX_set_default_passwd_cb(ctx.get(), [](char*, int, int, void*) { return 0; });
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), certificate.c_str()) != 1) {
        error = "[tls].certificate: cannot load \"" + certificate + "\" (" + openssl_error() +
                "); give a readable PEM file with the server certificate first, then its chain";
        return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            error = "[tls].private_key: \"" + private_key + "\" does not belong to the certificate in \"" +
                    certificate + "\"; give the key the certificate was issued for";
            return nullptr;
        }
        error = "[tls].private_key: cannot load \"" + private_key + "\" (" + openssl_error() +
                "); give a readable, unencrypted PEM private key";
        return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
        error = "[tls].private_key: \"" + private_key + "\" does not belong to the certificate in \"" + certificate +
                "\"; give the key the certificate was issued for";
        return nullptr;
    }
    SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, nullptr);
    return ctx;
}

TlsContexts::~TlsContexts() {
    SSL_CTX_free(current_.load());
    SSL_CTX_free(current_dtls_.load());
    for (SSL_CTX* c : retired_) {
        SSL_CTX_free(c);
    }
}

bool TlsContexts::load(const std::string& certificate, const std::string& private_key, std::string& error,
                       bool* unchanged) {
    // A directory (or a device) named as a file stops start-up or a reload
    // with the key to fix, as a missing file does (make_tls_context).
    for (const auto& [key, path] : {std::pair{"[tls].certificate", &certificate}, {"[tls].private_key", &private_key}}) {
        struct stat st{};
        if (::stat(path->c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
            error = std::string(key) + ": \"" + *path + "\" is not a regular file" +
                    (S_ISDIR(st.st_mode) ? " but a directory" : "") + "; give the path of a readable PEM file";
            return false;
        }
    }
    const std::string both = file_contents(certificate) + '\0' + file_contents(private_key) + '\0';
    if (unchanged != nullptr) {
        *unchanged = false;
    }
    if (get() != nullptr && both == loaded_) {
        if (unchanged != nullptr) {
            *unchanged = true;
        }
        return true;
    }
    TlsContext fresh = make_tls_context(certificate, private_key, error);
    if (!fresh) {
        return false;
    }
    TlsContext fresh_dtls = make_tls_context(certificate, private_key, error, true);
    if (!fresh_dtls) {
        return false;
    }
    if (SSL_CTX* old = current_.exchange(fresh.release(), std::memory_order_acq_rel)) {
        retired_.push_back(old);
    }
    if (SSL_CTX* old = current_dtls_.exchange(fresh_dtls.release(), std::memory_order_acq_rel)) {
        retired_.push_back(old);
    }
    loaded_ = both;
    return true;
}

std::string TlsContexts::describe() const {
    SSL_CTX* c = get();
    X509* x = c != nullptr ? SSL_CTX_get0_certificate(c) : nullptr;
    if (x == nullptr) {
        return "none";
    }
    char subject[256] = {0};
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    std::string out = subject;
    if (BIO* b = BIO_new(BIO_s_mem())) {
        if (ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
            char* p = nullptr;
            const long n = BIO_get_mem_data(b, &p);
            out += ", expires " + std::string(p, static_cast<size_t>(n));
        }
        BIO_free(b);
    }
    return out;
}

int64_t TlsContexts::not_after() const {
    SSL_CTX* c = get();
    X509* x = c != nullptr ? SSL_CTX_get0_certificate(c) : nullptr;
    tm t{};
    if (x == nullptr || ASN1_TIME_to_tm(X509_get0_notAfter(x), &t) != 1) {
        return 0;
    }
    return static_cast<int64_t>(::timegm(&t));
}

}  // namespace turn::cp
