#include "transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>

#include "turn/stream_framing.h"

namespace turn::probe {

namespace {

double ms_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string ssl_errors() {
    std::string s;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        s += (s.empty() ? "" : "; ") + std::string(buf);
    }
    return s;
}

// Waits for `events` on fd; false on timeout.
bool wait_fd(int fd, short events, int timeout_ms) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

// Why the server's certificate was refused, and what to do about it.
std::string certificate_problem(long verify_result, const std::string& name) {
    std::string s = std::string("certificate not accepted (") + X509_verify_cert_error_string(verify_result) + ")";
    if (verify_result == X509_V_ERR_HOSTNAME_MISMATCH || verify_result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        return s + ": it is not for \"" + name + "\"; pass --server-name with a name it carries, or --insecure for a test server";
    }
    return s + "; pass --ca with the issuer's certificate, or --insecure for a test server";
}

}  // namespace

std::unique_ptr<Transport> Transport::open(Kind kind, const Address& server, const TlsOptions& tls, int timeout_ms,
                                           ConnectInfo& info, std::string& error) {
    const int type = is_datagram(kind) ? SOCK_DGRAM : SOCK_STREAM;
    const int fd = ::socket(server.is_v6() ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error = std::string("socket: ") + std::strerror(errno);
        return nullptr;
    }
    std::unique_ptr<Transport> t(new Transport(kind, fd));
    sockaddr_storage ss{};
    const size_t len = server.to_sockaddr(&ss);
    const auto t0 = std::chrono::steady_clock::now();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
        if (errno != EINPROGRESS) {
            error = "connect to " + server.to_string() + ": " + std::strerror(errno);
            return nullptr;
        }
        if (!wait_fd(fd, POLLOUT, timeout_ms)) {
            error = "connect to " + server.to_string() + ": no answer within " + std::to_string(timeout_ms) + " ms";
            return nullptr;
        }
        int so = 0;
        socklen_t sl = sizeof so;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
        if (so != 0) {
            error = "connect to " + server.to_string() + ": " + std::strerror(so);
            return nullptr;
        }
    }
    info.connect_ms = is_datagram(kind) ? 0 : ms_since(t0);
    if (kind == Kind::kTcp) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (is_secure(kind) && !t->handshake(server, tls, timeout_ms, info, error)) {
        return nullptr;
    }
    return t;
}

bool Transport::handshake(const Address& server, const TlsOptions& tls, int timeout_ms, ConnectInfo& info,
                          std::string& error) {
    const bool dtls = kind_ == Kind::kDtls;
    const std::string what = dtls ? "DTLS" : "TLS";
    ERR_clear_error();
    ctx_ = SSL_CTX_new(dtls ? DTLS_client_method() : TLS_client_method());
    if (ctx_ == nullptr) {
        error = what + ": cannot create a context: " + ssl_errors();
        return false;
    }
    // DTLS 1.0 was retired with TLS 1.1 (RFC 8996), and turn-relay takes 1.2 up.
    SSL_CTX_set_min_proto_version(ctx_, dtls ? DTLS1_2_VERSION : TLS1_2_VERSION);
    if (tls.verify) {
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
        const bool loaded = tls.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx_) == 1
                                                : SSL_CTX_load_verify_locations(ctx_, tls.ca_file.c_str(), nullptr) == 1;
        if (!loaded) {
            error = what + ": cannot load trusted certificates" +
                    (tls.ca_file.empty() ? std::string(" (system store)") : " from " + tls.ca_file) + ": " + ssl_errors();
            return false;
        }
    }
    ssl_ = SSL_new(ctx_);
    if (ssl_ == nullptr) {
        error = what + ": out of memory: " + ssl_errors();
        return false;
    }
    if (dtls) {
        // A datagram BIO on the connected socket: every record it writes is
        // one datagram, every datagram it reads one or more whole records. It
        // asks the socket for the path MTU (connected) to size handshake
        // fragments. The socket stays non-blocking: the retransmission timer
        // is run below.
        BIO* bio = BIO_new_dgram(fd_, BIO_NOCLOSE);
        if (bio == nullptr) {
            error = "DTLS: out of memory: " + ssl_errors();
            return false;
        }
        sockaddr_storage peer{};  // read as a BIO_ADDR, OpenSSL's union of the sockaddr kinds
        server.to_sockaddr(&peer);
        BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &peer);
        SSL_set_bio(ssl_, bio, bio);
    } else {
        SSL_set_fd(ssl_, fd_);
    }
    static const unsigned char kAlpn[] = {9, 's', 't', 'u', 'n', '.', 't', 'u', 'r', 'n'};  // RFC 7443
    SSL_set_alpn_protos(ssl_, kAlpn, sizeof kAlpn);
    const std::string name = tls.server_name.empty() ? server.ip_string() : tls.server_name;
    if (!Address::parse(name)) {
        SSL_set_tlsext_host_name(ssl_, name.c_str());  // SNI only for names, not IP literals
    }
    if (tls.verify) {
        X509_VERIFY_PARAM* vp = SSL_get0_param(ssl_);
        const auto ip = Address::parse(name);
        const bool set = ip ? (ip->port == 0 && X509_VERIFY_PARAM_set1_ip_asc(vp, ip->ip_string().c_str()) == 1)
                            : X509_VERIFY_PARAM_set1_host(vp, name.c_str(), 0) == 1;
        if (!set) {
            error = what + ": \"" + name + "\" is not a host name or IP address to verify the certificate against";
            return false;
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    // Every pass waits for the socket or the DTLS retransmission timer, so
    // timeout_ms bounds the loop.
    for (;;) {
        errno = 0;
        const int r = SSL_connect(ssl_);
        if (r == 1) {
            break;
        }
        const int sys = errno;  // the socket's error (DTLS: ICMP port unreachable is ECONNREFUSED)
        const int e = SSL_get_error(ssl_, r);
        const int left = timeout_ms - static_cast<int>(ms_since(t1));
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && left > 0) {
            if (!dtls) {
                if (wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, left)) {
                    continue;
                }
            } else {
                // Lost flights are resent on OpenSSL's timer (RFC 6347
                // section 4.2.4: 1 s, doubling), which runs only when called:
                // wait for the server until it fires, then let it resend.
                int wait = left;
                timeval tv{};
                if (DTLSv1_get_timeout(ssl_, &tv) == 1) {
                    wait = static_cast<int>(std::min<long>(left, tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000));
                }
                if (wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, wait) || DTLSv1_handle_timeout(ssl_) >= 0) {
                    continue;  // an answer, or the flight resent (or the timer not due yet)
                }
                // < 0: OpenSSL gave up after its retransmissions.
            }
        }
        const long v = SSL_get_verify_result(ssl_);
        error = what + " handshake with " + server.to_string() + " failed: ";
        if (tls.verify && v != X509_V_OK) {
            error += certificate_problem(v, name);
        } else if (dtls && e == SSL_ERROR_SYSCALL && sys == ECONNREFUSED) {
            error += "port unreachable (ICMP): nothing listens on UDP " + server.to_string();
        } else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            error += "no answer within " + std::to_string(timeout_ms) + " ms";
            if (dtls) {
                error += " (is it a DTLS port? plain TURN over UDP is --transport udp)";
            }
        } else {
            const std::string s = ssl_errors();
            if (dtls) {
                error += s.empty() ? std::string(sys != 0 ? std::strerror(sys) : "the server ended the handshake") : s;
            } else {
                error += s.empty() ? "the server closed the connection" : s;
                if (s.empty() || s.find("unexpected eof") != std::string::npos ||
                    s.find("wrong version number") != std::string::npos) {
                    error += " (is it a TLS port? plain TURN over TCP is --transport tcp)";
                }
            }
        }
        return false;
    }
    info.tls_ms = ms_since(t1);
    info.tls_version = SSL_get_version(ssl_);
    info.cipher = SSL_get_cipher_name(ssl_);
    const unsigned char* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl_, &p, &n);
    info.alpn.assign(reinterpret_cast<const char*>(p), n);
    return true;
}

Transport::~Transport() {
    if (ssl_ != nullptr) {
        SSL_shutdown(ssl_);
        SSL_free(ssl_);
    }
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

Address Transport::local() const {
    sockaddr_storage ss{};
    socklen_t l = sizeof ss;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &l);
    return Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss)).value_or(Address{});
}

bool Transport::send(std::span<const uint8_t> message) {
    if (kind_ == Kind::kDtls && message.size() > kMaxDtlsMessage) {
        return false;  // OpenSSL refuses it: one message is one record
    }
    std::vector<uint8_t> padded;
    if (!is_datagram(kind_)) {
        const size_t pad = stream_padding(message);
        if (pad != 0) {
            padded.assign(message.begin(), message.end());
            padded.resize(padded.size() + pad, 0);
            message = padded;
        }
    }
    size_t off = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (off < message.size()) {
        ssize_t n = 0;
        if (ssl_ != nullptr) {
            const int r = SSL_write(ssl_, message.data() + off, static_cast<int>(message.size() - off));
            if (r <= 0) {
                const int e = SSL_get_error(ssl_, r);
                if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) && ms_since(t0) < 2000 &&
                    wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 100)) {
                    continue;
                }
                return false;
            }
            n = r;
        } else {
            n = ::send(fd_, message.data() + off, message.size() - off, MSG_NOSIGNAL);
            if (n < 0) {
                if ((errno == EAGAIN || errno == EINTR) && ms_since(t0) < 2000 && wait_fd(fd_, POLLOUT, 100)) {
                    continue;
                }
                return false;
            }
        }
        off += static_cast<size_t>(n);
        if (is_datagram(kind_)) {
            break;  // sent whole, or not at all
        }
    }
    return true;
}

bool Transport::buffered() const {
    if (kind_ == Kind::kUdp) {
        return false;
    }
    if (kind_ == Kind::kDtls) {
        // One datagram may carry several records; SSL_read returns one each
        // time, and the rest wait in OpenSSL, where poll() cannot see them.
        return SSL_has_pending(ssl_) == 1;
    }
    return next_stream_frame(in_).status == StreamFrameStatus::kFrame || (ssl_ != nullptr && SSL_pending(ssl_) > 0);
}

bool Transport::read_more(int timeout_ms) {
    uint8_t buf[65536];
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        if (ssl_ != nullptr) {
            const int r = SSL_read(ssl_, buf, sizeof buf);
            if (r > 0) {
                in_.insert(in_.end(), buf, buf + r);
                return true;
            }
            const int e = SSL_get_error(ssl_, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                closed_ = true;
                return false;
            }
        } else {
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                in_.insert(in_.end(), buf, buf + n);
                return true;
            }
            if (n == 0 && kind_ != Kind::kUdp) {
                closed_ = true;  // the server closed the connection
                return false;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                closed_ = true;  // reset, or (UDP) ICMP port unreachable
                return false;
            }
        }
        const int left = timeout_ms - static_cast<int>(ms_since(t0));
        if (left < 0 || !wait_fd(fd_, POLLIN, left)) {
            return false;
        }
    }
}

std::optional<std::vector<uint8_t>> Transport::recv(int timeout_ms) {
    const auto t0 = std::chrono::steady_clock::now();
    if (is_datagram(kind_)) {
        in_.clear();  // a datagram (DTLS: a record) is a message
        if (!read_more(timeout_ms)) {
            return std::nullopt;
        }
        return std::move(in_);
    }
    for (;;) {
        const StreamFrame f = next_stream_frame(in_);
        if (f.status == StreamFrameStatus::kFrame) {
            std::vector<uint8_t> m(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(f.message_len));
            in_.erase(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(f.consumed));
            return m;
        }
        if (f.status != StreamFrameStatus::kNeedMore) {
            closed_ = true;  // the server's stream is not TURN
            return std::nullopt;
        }
        const int left = timeout_ms - static_cast<int>(ms_since(t0));
        if (left < 0 || !read_more(left)) {
            return std::nullopt;
        }
    }
}

}  // namespace turn::probe
