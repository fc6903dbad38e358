#include "dtls_conn.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"

namespace turn::load {

namespace {

// DtlsConn::bio_read's answers besides a length.
constexpr int kBioRetry = -1;
constexpr int kBioError = -2;

int bio_read_cb(BIO* b, char* out, int len) {
    auto* c = static_cast<DtlsConn*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    const int r = c != nullptr && len > 0 ? c->bio_read(reinterpret_cast<uint8_t*>(out), static_cast<size_t>(len))
                                          : kBioRetry;
    if (r == kBioRetry) {
        BIO_set_retry_read(b);
    }
    return r < 0 ? -1 : r;
}

// Never fails and never blocks: a datagram the socket does not take is lost,
// as any datagram may be (OpenSSL would otherwise have to repeat the write).
int bio_write_cb(BIO* b, const char* data, int len) {
    auto* c = static_cast<DtlsConn*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (c != nullptr && len > 0) {
        c->bio_write(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len));
    }
    return std::max(len, 0);
}

long bio_ctrl_cb(BIO*, int cmd, long, void*) {
    // Flushing is a no-op (every write is a datagram already); no MTU query
    // (SSL_OP_NO_QUERY_MTU, SSL_set_mtu), nothing pending, no peer to report.
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create_cb(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
}

BIO_METHOD* bio_method() {
    static BIO_METHOD* const m = [] {
        BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "turn-load dtls datagram");
        if (bm != nullptr) {
            BIO_meth_set_read(bm, bio_read_cb);
            BIO_meth_set_write(bm, bio_write_cb);
            BIO_meth_set_ctrl(bm, bio_ctrl_cb);
            BIO_meth_set_create(bm, bio_create_cb);
        }
        return bm;
    }();
    return m;
}

}  // namespace

DtlsConn::DtlsConn() = default;

DtlsConn::~DtlsConn() {
    if (ssl_ != nullptr) {
        if (!broken_ && plain_ != nullptr) {
            SSL_shutdown(ssl_);  // close_notify: the server ends the allocation now, not at its idle timeout
        }
        SSL_free(ssl_);  // and the BIO with it
        ERR_clear_error();
    }
}

void DtlsConn::mark_broken(std::string_view reason) {
    if (!broken_) {
        broken_ = true;
        reason_ = std::string(reason);
    }
}

int DtlsConn::bio_read(uint8_t* out, size_t cap) {
    if (in_ != nullptr) {
        const size_t n = std::min(in_len_, cap);  // a longer datagram is cut and then discarded as a bad record
        std::memcpy(out, in_, n);
        in_ = nullptr;
        in_len_ = 0;
        return n > 0 ? static_cast<int>(n) : kBioRetry;  // an empty datagram carries no record
    }
    while (from_socket_) {
        const ssize_t r = ::recv(fd_, out, cap, MSG_DONTWAIT);
        if (r > 0) {
            return static_cast<int>(r);
        }
        if (r < 0 && errno != EINTR) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            sys_errno_ = errno;  // e.g. ECONNREFUSED: an ICMP port unreachable for an earlier datagram
            return kBioError;
        }
    }
    return kBioRetry;
}

void DtlsConn::bio_write(const uint8_t* data, size_t len) {
    if (sealed_ == 0 && len <= seal_out_.size()) {
        std::memcpy(seal_out_.data(), data, len);
        sealed_ = len;
        return;
    }
    // Not sealing (handshake flights, requests, close_notify), or a second
    // datagram for one seal() (one record never is): sent now.
    while (::send(fd_, data, len, MSG_DONTWAIT) < 0) {
        if (errno != EINTR) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                sys_errno_ = errno;
            }
            return;
        }
    }
}

bool DtlsConn::handshake(int fd, TlsClient& tls, const Address& server, uint64_t deadline_ns, std::string& err,
                         ConnectError& why) {
    fd_ = fd;
    const uint64_t start = mono_ns();
    auto fail = [&](ConnectError w, const std::string& text) {
        why = w;
        err = "DTLS handshake with " + server.to_string() + ": " + text;
        mark_broken(to_string(w));
        ERR_clear_error();
        return false;
    };
    ERR_clear_error();
    ssl_ = new_client_ssl(tls, err);
    if (ssl_ == nullptr) {
        return fail(ConnectError::kDtlsHandshake, err);
    }
    BIO* b = bio_method() != nullptr ? BIO_new(bio_method()) : nullptr;
    if (b == nullptr) {
        return fail(ConnectError::kDtlsHandshake, "BIO_new: " + ssl_errors());
    }
    BIO_set_data(b, this);
    SSL_set_bio(ssl_, b, b);
    SSL_set_options(ssl_, SSL_OP_NO_QUERY_MTU);
    if (SSL_set_mtu(ssl_, kMtu) <= 0) {  // it returns the MTU it set
        return fail(ConnectError::kDtlsHandshake, "SSL_set_mtu: " + ssl_errors());
    }
    for (;;) {
        sys_errno_ = 0;
        ERR_clear_error();
        const int r = SSL_connect(ssl_);
        if (r == 1) {
            plain_ = std::make_unique<uint8_t[]>(kMaxRecord);
            return true;
        }
        const int e = SSL_get_error(ssl_, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            if (sys_errno_ == ECONNREFUSED) {
                return fail(ConnectError::kRefused, std::string(std::strerror(ECONNREFUSED)) +
                                                        " (ICMP port unreachable: nothing listens on that UDP port)");
            }
            return fail(ConnectError::kDtlsHandshake, handshake_error(ssl_, e, sys_errno_));
        }
        const uint64_t now = mono_ns();
        if (now >= deadline_ns) {
            return fail(ConnectError::kTimeout,
                        "timed out after " + std::to_string((now - start) / kNsPerMs) +
                            " ms (no DTLS answer: the port serves no DTLS, or the server dropped the handshake)");
        }
        // The server's next flight, or OpenSSL's retransmission timer
        // (1 s, doubling), whichever comes first.
        uint64_t until = deadline_ns;
        timeval tv{};
        if (DTLSv1_get_timeout(ssl_, &tv) == 1) {
            until = std::min(until, now + static_cast<uint64_t>(tv.tv_sec) * kNsPerSec +
                                        static_cast<uint64_t>(tv.tv_usec) * 1000);
        }
        pollfd p{fd_, POLLIN, 0};
        const int ms = poll_ms(until);
        if (ms > 0 && ::poll(&p, 1, ms) > 0) {
            continue;
        }
        if (DTLSv1_handle_timeout(ssl_) < 0) {  // retransmits our last flight if its timer ran out
            return fail(ConnectError::kDtlsHandshake, "retransmission failed: " + ssl_errors());
        }
    }
}

size_t DtlsConn::seal(std::span<const uint8_t> message, std::span<uint8_t> out) {
    if (broken_) {
        return 0;
    }
    seal_out_ = out;
    sealed_ = 0;
    const bool ok = send(message);
    seal_out_ = {};
    return ok ? sealed_ : 0;
}

bool DtlsConn::send(std::span<const uint8_t> message) {
    if (broken_ || ssl_ == nullptr) {
        return false;
    }
    sys_errno_ = 0;
    ERR_clear_error();
    const int r = SSL_write(ssl_, message.data(), static_cast<int>(std::min<size_t>(message.size(), kMaxRecord)));
    if (r > 0) {
        return sys_errno_ == 0;
    }
    const int e = SSL_get_error(ssl_, r);
    ERR_clear_error();
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        mark_broken(e == SSL_ERROR_ZERO_RETURN ? "dtls_closed" : "dtls_write_error");
    }
    return false;
}

IoStatus DtlsConn::read(std::span<const uint8_t>& message, bool from_socket) {
    if (broken_ || plain_ == nullptr) {
        in_ = nullptr;
        return IoStatus::kError;
    }
    from_socket_ = from_socket;
    sys_errno_ = 0;
    ERR_clear_error();
    const int r = SSL_read(ssl_, plain_.get(), static_cast<int>(kMaxRecord));
    from_socket_ = true;
    if (r > 0) {
        message = {plain_.get(), static_cast<size_t>(r)};
        return IoStatus::kOk;
    }
    in_ = nullptr;  // whatever was fed has been read
    const int e = SSL_get_error(ssl_, r);
    ERR_clear_error();
    switch (e) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return IoStatus::kAgain;
        case SSL_ERROR_ZERO_RETURN:
            mark_broken("dtls_closed");  // the server's close_notify
            return IoStatus::kClosed;
        case SSL_ERROR_SYSCALL:
            if (sys_errno_ != 0) {
                return IoStatus::kError;  // the socket's error, not the session's
            }
            [[fallthrough]];
        default:
            mark_broken("dtls_error");  // a fatal alert from the server, or a protocol error
            return IoStatus::kError;
    }
}

bool DtlsConn::wait(uint64_t deadline_ns) const {
    if (ssl_ != nullptr && SSL_has_pending(ssl_) == 1) {
        return true;  // records of a datagram already read
    }
    pollfd p{fd_, POLLIN, 0};
    const int ms = poll_ms(deadline_ns);
    return ms > 0 && ::poll(&p, 1, ms) > 0;
}

}  // namespace turn::load
