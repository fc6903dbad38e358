#include "stream_conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"

namespace turn::load {

std::string_view to_string(Transport t) {
    switch (t) {
        case Transport::kUdp: return "udp";
        case Transport::kTcp: return "tcp";
        case Transport::kTls: return "tls";
        case Transport::kDtls: return "dtls";
    }
    return "unknown";
}

std::string_view to_string(ConnectError e) {
    switch (e) {
        case ConnectError::kNone: return "none";
        case ConnectError::kSocket: return "connect_socket";
        case ConnectError::kRefused: return "connect_refused";
        case ConnectError::kTimeout: return "connect_timeout";
        case ConnectError::kConnect: return "connect_failed";
        case ConnectError::kTlsHandshake: return "tls_handshake_failed";
        case ConnectError::kDtlsHandshake: return "dtls_handshake_failed";
    }
    return "unknown";
}

std::string ssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (out.empty()) {
            out = buf;
        }
    }
    return out.empty() ? "no OpenSSL error queued" : out;
}

SSL* new_client_ssl(const TlsClient& tls, std::string& err) {
    SSL* ssl = SSL_new(tls.ctx());
    if (ssl == nullptr) {
        err = "SSL_new: " + ssl_errors();
        return nullptr;
    }
    const std::string& name = tls.options().server_name;
    if (!name.empty()) {
        const bool is_ip = Address::parse(name).has_value();
        if (!is_ip) {
            SSL_set_tlsext_host_name(ssl, name.c_str());  // SNI is for DNS names only (RFC 6066 3)
        }
        if (tls.options().verify) {
            X509_VERIFY_PARAM* vp = SSL_get0_param(ssl);
            const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name.c_str())
                                 : X509_VERIFY_PARAM_set1_host(vp, name.c_str(), 0);
            if (ok != 1) {
                err = "cannot check the certificate against '" + name + "'";
                SSL_free(ssl);
                return nullptr;
            }
        }
    }
    return ssl;
}

std::string handshake_error(SSL* ssl, int ssl_error, int sys_errno) {
    const long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        ERR_clear_error();
        return std::string("certificate not accepted: ") + X509_verify_cert_error_string(v) +
               " (--tls-ca FILE to trust it, or --tls-no-verify)";
    }
    if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
        std::string err = sys_errno != 0 ? std::strerror(sys_errno) : "connection closed by the server";
        const std::string q = ssl_errors();
        if (q != "no OpenSSL error queued") {
            err += " (" + q + ")";
        }
        return err;
    }
    return ssl_errors();
}

std::unique_ptr<TlsClient> TlsClient::create(const TlsOptions& o, std::string& err) {
    std::unique_ptr<TlsClient> t(new TlsClient());
    t->opts_ = o;
    t->ctx_ = SSL_CTX_new(o.datagram ? DTLS_client_method() : TLS_client_method());
    if (t->ctx_ == nullptr) {
        err = "TLS: SSL_CTX_new: " + ssl_errors();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(t->ctx_, o.datagram ? DTLS1_2_VERSION : TLS1_2_VERSION);
    // Partial writes: flush() hands OpenSSL what the socket takes and keeps
    // the rest queued; the queue may move between retries (compaction).
    SSL_CTX_set_mode(t->ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // A server that closes without close_notify: an ordinary EOF (stream_closed).
    SSL_CTX_set_options(t->ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (o.verify) {
        const int ok = o.ca_file.empty() ? SSL_CTX_set_default_verify_paths(t->ctx_)
                                         : SSL_CTX_load_verify_locations(t->ctx_, o.ca_file.c_str(), nullptr);
        if (ok != 1) {
            err = "TLS: cannot load CA certificates" + (o.ca_file.empty() ? std::string() : " from " + o.ca_file) +
                  ": " + ssl_errors();
            return nullptr;
        }
        SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_NONE, nullptr);
    }
    return t;
}

TlsClient::~TlsClient() {
    if (ctx_ != nullptr) {
        SSL_CTX_free(ctx_);
    }
}

StreamConn::StreamConn(size_t out_capacity, size_t max_message) : out_(out_capacity), reader_(max_message) {}

StreamConn::~StreamConn() {
    if (ssl_ != nullptr) {
        if (!broken_ && !want_write()) {
            SSL_shutdown(ssl_);  // close_notify, one non-blocking attempt; no wait for the answer
        }
        SSL_free(ssl_);
    }
    if (fd_ >= 0) {
        close(fd_);
    }
}

void StreamConn::mark_broken(std::string_view reason) {
    if (!broken_) {
        broken_ = true;
        reason_ = std::string(reason);
    }
}

bool StreamConn::connect(const Address& server, TlsClient* tls, uint64_t deadline_ns, std::string& err,
                         ConnectError& why) {
    const std::string where = std::string(tls != nullptr ? "TLS" : "TCP") + " to " + server.to_string();
    fd_ = socket(server.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        why = ConnectError::kSocket;
        err = "socket: " + std::string(std::strerror(errno));
        mark_broken(to_string(why));
        return false;
    }
    // Small messages at a steady rate: no Nagle delay on top of the relay's.
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_storage ss{};
    const size_t len = server.to_sockaddr(&ss);
    int rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
    if (rc != 0 && errno == EINPROGRESS) {
        pollfd p{fd_, POLLOUT, 0};
        while ((rc = ::poll(&p, 1, poll_ms(deadline_ns))) < 0 && errno == EINTR) {
        }
        if (rc == 0) {
            why = ConnectError::kTimeout;
            err = "connect " + where + ": timed out";
            mark_broken(to_string(why));
            return false;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        errno = soerr;
        rc = soerr == 0 ? 0 : -1;
    }
    if (rc != 0) {
        why = errno == ECONNREFUSED ? ConnectError::kRefused : ConnectError::kConnect;
        err = "connect " + where + ": " + std::strerror(errno);
        mark_broken(to_string(why));
        return false;
    }
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) {
        local_port_ = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&local)).value_or(Address{}).port;
    }
    if (tls != nullptr && !handshake(*tls, server, deadline_ns, err)) {
        why = ConnectError::kTlsHandshake;
        err = "TLS handshake with " + server.to_string() + ": " + err;
        mark_broken(to_string(why));
        return false;
    }
    return true;
}

bool StreamConn::handshake(TlsClient& tls, const Address& server, uint64_t deadline_ns, std::string& err) {
    ERR_clear_error();
    ssl_ = new_client_ssl(tls, err);
    if (ssl_ == nullptr) {
        return false;
    }
    if (SSL_set_fd(ssl_, fd_) != 1) {
        err = "SSL_set_fd: " + ssl_errors();
        return false;
    }
    (void)server;
    for (;;) {
        errno = 0;
        const int r = SSL_connect(ssl_);
        if (r == 1) {
            return true;
        }
        const int e = SSL_get_error(ssl_, r);
        short events = 0;
        if (e == SSL_ERROR_WANT_READ) {
            events = POLLIN;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            events = POLLOUT;
        } else {
            err = handshake_error(ssl_, e, errno);
            return false;
        }
        pollfd p{fd_, events, 0};
        const int ms = poll_ms(deadline_ns);
        if (ms == 0 || (::poll(&p, 1, ms) == 0 && mono_ns() >= deadline_ns)) {
            err = "timed out";
            return false;
        }
    }
}

IoStatus StreamConn::tls_result(int r, const char* what) {
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return IoStatus::kAgain;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        mark_broken("stream_closed");
        return IoStatus::kClosed;
    }
    if (e == SSL_ERROR_SYSCALL && errno == 0) {
        ERR_clear_error();
        mark_broken("stream_closed");  // EOF without close_notify
        return IoStatus::kClosed;
    }
    ERR_clear_error();
    mark_broken(std::string("tls_") + what + "_error");
    return IoStatus::kError;
}

bool StreamConn::write(std::span<const uint8_t> data) {
    if (broken_) {
        return false;
    }
    if (data.size() > out_space()) {
        return false;
    }
    if (tail_ + data.size() > out_.size()) {
        // Compact. TLS: allowed between SSL_write retries (ACCEPT_MOVING_WRITE_BUFFER),
        // and the retry then passes at least the bytes of the last attempt.
        std::memmove(out_.data(), out_.data() + head_, tail_ - head_);
        tail_ -= head_;
        head_ = 0;
    }
    std::memcpy(out_.data() + tail_, data.data(), data.size());
    tail_ += data.size();
    return flush();
}

bool StreamConn::flush() {
    while (!broken_ && tail_ > head_) {
        const size_t n = tail_ - head_;
        if (ssl_ != nullptr) {
            ERR_clear_error();
            errno = 0;
            const int r = SSL_write(ssl_, out_.data() + head_, static_cast<int>(std::min<size_t>(n, 1 << 30)));
            if (r <= 0) {
                const int e = SSL_get_error(ssl_, r);
                tls_wants_read_ = e == SSL_ERROR_WANT_READ;
                return tls_result(r, "write") == IoStatus::kAgain;
            }
            tls_wants_read_ = false;
            head_ += static_cast<size_t>(r);
        } else {
            const ssize_t r = ::send(fd_, out_.data() + head_, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return true;
                }
                mark_broken(errno == ECONNRESET || errno == EPIPE ? "stream_reset" : "stream_send_error");
                return false;
            }
            head_ += static_cast<size_t>(r);
        }
    }
    if (head_ == tail_) {
        head_ = tail_ = 0;
    }
    return !broken_;
}

IoStatus StreamConn::read_once() {
    if (broken_) {
        return IoStatus::kError;
    }
    const std::span<uint8_t> space = reader_.space();
    if (space.empty()) {
        return IoStatus::kAgain;  // the caller takes the buffered messages first
    }
    if (ssl_ != nullptr) {
        ERR_clear_error();
        errno = 0;
        const int r = SSL_read(ssl_, space.data(), static_cast<int>(std::min<size_t>(space.size(), 1 << 30)));
        if (r <= 0) {
            const IoStatus s = tls_result(r, "read");
            if (s == IoStatus::kAgain && tls_wants_read_) {
                flush();  // a write that waited for this read can go on now
            }
            return s;
        }
        reader_.commit(static_cast<size_t>(r));
        return IoStatus::kOk;
    }
    const ssize_t r = ::recv(fd_, space.data(), space.size(), MSG_DONTWAIT);
    if (r > 0) {
        reader_.commit(static_cast<size_t>(r));
        return IoStatus::kOk;
    }
    if (r == 0) {
        mark_broken("stream_closed");
        return IoStatus::kClosed;
    }
    if (errno == EAGAIN || errno == EINTR) {
        return IoStatus::kAgain;
    }
    mark_broken(errno == ECONNRESET ? "stream_reset" : "stream_recv_error");
    return IoStatus::kError;
}

bool StreamConn::has_pending_input() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

bool StreamConn::wait(uint64_t deadline_ns) const {
    if (has_pending_input()) {
        return true;
    }
    pollfd p{fd_, static_cast<short>(POLLIN | (want_write() ? POLLOUT : 0)), 0};
    const int ms = poll_ms(deadline_ns);
    return ms > 0 && ::poll(&p, 1, ms) > 0;
}

}  // namespace turn::load
