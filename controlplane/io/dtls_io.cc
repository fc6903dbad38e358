#include "io/dtls_io.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/event_log.h"
#include "core/server.h"
#include "io/udp_socket.h"
#include "stun/message.h"
#include "turn/channel_data.h"

namespace turn::cp {

// The BIO under one SSL: a read hands over the datagram being handled (once),
// a write is one datagram to the client through the loop's transmit batch.
struct DtlsIo::Bio {
    const SendFn* send = nullptr;
    int fd = -1;
    Address peer;                 // the client (the SSL's app data: the cookie callbacks read it)
    const uint8_t* in = nullptr;  // the datagram not read yet, if any
    size_t in_len = 0;
    IpMarks marks;                // of what SSL_write sends now (DtlsIo::send), else the defaults
};

namespace {

// turn_connections{transport="dtls"}: the third kind after TCP and TLS.
constexpr size_t kKind = 2;
// DTLS record header: type, version (2), epoch (2), sequence (6), length (2);
// then the handshake header: type, length (3), message_seq (2), fragment
// offset (3) and length (3).
constexpr size_t kRecordHeader = 13;
constexpr size_t kHandshakeHeader = 12;
constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kClientHello = 1;
constexpr uint64_t kHandshakeTickMs = 100;  // how often a handshake's retransmission timer is looked at

// A ClientHello that starts a handshake: a handshake record of epoch 0 whose
// first message is a ClientHello. Nothing else from a source without a
// session can be for us.
bool is_initial_client_hello(std::span<const uint8_t> d) {
    return d.size() >= kRecordHeader + kHandshakeHeader && d[0] == kContentHandshake && d[1] == 0xFE &&
           d[3] == 0 && d[4] == 0 && d[kRecordHeader] == kClientHello;
}

// A ClientHello record (is_initial_client_hello) holding a fragment after
// the first (a ClientHello larger than the client's MTU): it has no client
// random to tell a new handshake by; it is the rest of the hello whose first
// fragment started the session.
bool later_fragment(std::span<const uint8_t> d) {
    const size_t frag_off = kRecordHeader + 6;
    return d[frag_off] != 0 || d[frag_off + 1] != 0 || d[frag_off + 2] != 0;
}

// A copy of the ClientHello that started `ssl`'s session (a retransmission
// that arrived late, or a duplicate on the path): the same client random,
// which follows the version in the first fragment.
bool same_client_hello(SSL* ssl, std::span<const uint8_t> d) {
    constexpr size_t kRandom = kRecordHeader + kHandshakeHeader + 2;
    if (d.size() < kRandom + SSL3_RANDOM_SIZE || later_fragment(d)) {
        return false;
    }
    uint8_t r[SSL3_RANDOM_SIZE];
    return SSL_get_client_random(ssl, r, sizeof r) == sizeof r && std::memcmp(r, d.data() + kRandom, sizeof r) == 0;
}

int bio_write(BIO* b, const char* data, int len) {
    auto* s = static_cast<DtlsIo::Bio*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (s == nullptr || len < 0) {
        return -1;
    }
    (*s->send)(s->fd, s->peer, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len)),
               s->marks);
    return len;
}

int bio_read(BIO* b, char* out, int len) {
    auto* s = static_cast<DtlsIo::Bio*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (s == nullptr || s->in == nullptr || len <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    // OpenSSL reads a datagram with room for the largest record; a datagram
    // larger than its buffer is cut, as recvmsg would, and then discarded as
    // an invalid record.
    const size_t n = std::min(s->in_len, static_cast<size_t>(len));
    std::memcpy(out, s->in, n);
    s->in = nullptr;
    s->in_len = 0;
    return static_cast<int>(n);
}

long bio_ctrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
    auto* s = static_cast<DtlsIo::Bio*>(BIO_get_data(b));
    switch (cmd) {
        case BIO_CTRL_FLUSH:
        case BIO_CTRL_DGRAM_SET_CONNECTED:
        case BIO_CTRL_DGRAM_SET_PEER:
        case BIO_CTRL_DGRAM_CONNECT:
            return 1;
        case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD:
            // IP and UDP headers: the link MTU less these is what a datagram may carry.
            return s != nullptr && !s->peer.normalised().is_v4() ? 48 : 28;
        default:
            return 0;  // no MTU query (SSL_OP_NO_QUERY_MTU), nothing pending, no peer to report
    }
}

int bio_create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
}

BIO_METHOD* bio_method() {
    static BIO_METHOD* m = [] {
        BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "turn-relay dtls datagram");
        BIO_meth_set_write(bm, bio_write);
        BIO_meth_set_read(bm, bio_read);
        BIO_meth_set_ctrl(bm, bio_ctrl);
        BIO_meth_set_create(bm, bio_create);
        return bm;
    }();
    return m;
}

// A DTLS SSL on its own BIO (`bio`, which must outlive it), in the server role.
SSL* new_ssl(SSL_CTX* ctx, DtlsIo::Bio* bio, uint32_t mtu) {
    SSL* ssl = SSL_new(ctx);
    if (ssl == nullptr) {
        return nullptr;
    }
    BIO* b = BIO_new(bio_method());
    if (b == nullptr) {
        SSL_free(ssl);
        return nullptr;
    }
    BIO_set_data(b, bio);
    SSL_set_bio(ssl, b, b);
    SSL_set_app_data(ssl, &bio->peer);
    SSL_set_options(ssl, SSL_OP_COOKIE_EXCHANGE | SSL_OP_NO_QUERY_MTU);
    // The relay asks for no client certificate: no handshake message it
    // takes is large. OpenSSL reassembles fragmented messages in a buffer of
    // the announced length, up to this (its floor, ~16.6 KiB, is used).
    SSL_set_max_cert_list(ssl, 16 * 1024);
    DTLS_set_link_mtu(ssl, static_cast<long>(mtu));
    SSL_set_accept_state(ssl);
    return ssl;
}

}  // namespace

DtlsIo::DtlsIo(Shared& shared, Stats& stats, int epoll_fd, SendFn send)
    : shared_(shared), stats_(stats), epoll_fd_(epoll_fd), send_(std::move(send)), plain_(kMaxRecord + 1) {}

void DtlsIo::close_all() {
    while (!sessions_.empty()) {
        close(sessions_.begin()->first, ConnClose::kShutdown, false);
    }
}

DtlsIo::~DtlsIo() {
    close_all();
    for (auto& l : listeners_) {
        SSL_free(l.listen_ssl);
        BIO_ADDR_free(l.listen_addr);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, l.fd, nullptr);
        ::close(l.fd);
    }
}

std::string DtlsIo::add_listener(const Address& local, const TlsContexts* tls) {
    if (tls == nullptr || tls->get_dtls() == nullptr) {
        return "DTLS listener " + local.to_string() + " without a DTLS context";
    }
    std::string err;
    const int fd = make_udp_socket(local, true, err);
    if (fd < 0) {
        return "cannot listen for DTLS on " + local.to_string() + ": " + err;
    }
    Listener l;
    l.fd = fd;
    l.local = local;
    l.tls = tls;
    l.listen_addr = BIO_ADDR_new();
    listeners_.push_back(std::move(l));
    if (listeners_.back().listen_addr == nullptr || !new_listen_ssl(listeners_.back())) {
        return "cannot set up DTLS on " + local.to_string() + " (out of memory)";
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTag | (listeners_.size() - 1);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    return {};
}

// With the context current now (a SIGHUP may have replaced the certificate).
bool DtlsIo::new_listen_ssl(Listener& l) {
    l.listen_bio = std::make_unique<Bio>();
    l.listen_bio->send = &send_;
    l.listen_bio->fd = l.fd;
    l.listen_ssl = new_ssl(l.tls->get_dtls(), l.listen_bio.get(), shared_.config.dtls_mtu);
    ERR_clear_error();
    return l.listen_ssl != nullptr;
}

void DtlsIo::on_event(uint64_t tag) {
    const auto index = static_cast<uint32_t>(tag & ~kTag);
    if (index < listeners_.size()) {
        receive(index);
    }
}

void DtlsIo::receive(uint32_t index) {
    // A few batches per event, so one busy listener does not starve the loop.
    for (int round = 0; round < 4; ++round) {
        // The datagram's TOS / Traffic Class and TTL / Hop Limit go with
        // the messages its records hold (the client marked its DTLS
        // traffic; relayed data keeps DSCP and ECN and leaves with one less
        // TTL, RFC 8656 section 14).
        const size_t n = rx_.receive(listeners_[index].fd, stats_,
                                     [&](const Address& src, std::span<const uint8_t> data, IpMarks marks) {
                                         rx_marks_ = marks;
                                         on_datagram(index, src, data);
                                         rx_marks_ = {};
                                     });
        if (n < kBatch) {
            return;
        }
    }
}

void DtlsIo::on_datagram(uint32_t index, const Address& src, std::span<const uint8_t> data) {
    Listener& l = listeners_[index];
    const FiveTuple ft{src, l.local, Transport::kDtls};
    auto it = sessions_.find(ft);
    if (it == sessions_.end()) {
        if (!is_initial_client_hello(data)) {
            stats_.drop(Drop::kDtlsNoSession);
            return;
        }
        on_hello(l, ft, data);
        return;
    }
    // An epoch-0 ClientHello with another client random is a new handshake
    // (the client restarted on the same port, before or after its session
    // was established): answered like a new source's; the old session goes
    // once the new one's cookie checks out. A copy of the session's own
    // ClientHello is not: the session's SSL takes it (a retransmission), as
    // it takes the later fragments of a ClientHello (DTLSv1_listen reads
    // only a first fragment: they would be lost and the handshake stall).
    if (is_initial_client_hello(data) && !later_fragment(data) && !same_client_hello(it->second->ssl, data)) {
        on_hello(l, ft, data);
        return;
    }
    feed(*it->second, data);
}

void DtlsIo::on_hello(Listener& l, const FiveTuple& ft, std::span<const uint8_t> data) {
    // The listening SSL was made with the context of its time; after a
    // reload (SIGHUP: a renewed certificate) new sessions get the new one.
    if (l.listen_ssl != nullptr && SSL_get_SSL_CTX(l.listen_ssl) != l.tls->get_dtls()) {
        SSL_free(l.listen_ssl);
        l.listen_ssl = nullptr;
    }
    if (l.listen_ssl == nullptr && !new_listen_ssl(l)) {
        return;
    }
    Bio& b = *l.listen_bio;
    b.peer = ft.client;
    b.in = data.data();
    b.in_len = data.size();
    const int r = DTLSv1_listen(l.listen_ssl, l.listen_addr);
    b.in = nullptr;
    if (r <= 0) {
        // 0: a HelloVerifyRequest went out (no cookie, or a stale one), or
        // the datagram was not a usable ClientHello; < 0: the SSL is unusable.
        ERR_clear_error();
        if (r < 0) {
            SSL_free(l.listen_ssl);
            l.listen_ssl = nullptr;
        }
        return;
    }
    // The cookie checks out: the client owns its address. The rate limit
    // first (a refused restart keeps its old session), then the session
    // this one replaces, if any (its place is the new one's), then the
    // counts; the handshake goes on in the SSL that checked the cookie.
    stats_.connections_accepted[kKind].add();
    SSL* ssl = l.listen_ssl;
    std::unique_ptr<Bio> bio = std::move(l.listen_bio);
    l.listen_ssl = nullptr;
    new_listen_ssl(l);
    const Address source = ft.client.normalised().with_port(0);
    const auto refuse = [&](ConnClose why) {
        SSL_free(ssl);  // nothing sent: the client's handshake times out
        count_closed(why);
    };
    if (!shared_.dtls_handshake_limiter.allow(source, now_ms_)) {
        refuse(ConnClose::kRate);
        return;
    }
    if (sessions_.count(ft) != 0) {
        close(ft, ConnClose::kClient);
    }
    // Taken first and given back if over: loops check at the same time.
    if (shared_.dtls_sessions.fetch_add(1, std::memory_order_relaxed) >=
        static_cast<int64_t>(shared_.config.dtls_max_sessions)) {
        shared_.dtls_sessions.fetch_sub(1, std::memory_order_relaxed);
        refuse(ConnClose::kLimit);
        return;
    }
    if (!shared_.dtls_sessions_per_ip.try_add(source, shared_.config.dtls_max_sessions_per_ip)) {
        shared_.dtls_sessions.fetch_sub(1, std::memory_order_relaxed);
        refuse(ConnClose::kLimit);
        return;
    }
    auto s = std::make_unique<Session>();
    s->ssl = ssl;
    s->bio = std::move(bio);
    s->ft = ft;
    s->last_rx_ms = now_ms_;
    s->serial = ++next_serial_;
    Session& ref = *s;
    sessions_.emplace(ft, std::move(s));
    arm_handshake_timer(ft, ref.serial);
    arm_idle_timer(ft, ref.serial, now_ms_ + idle_ms());
    feed(ref, {});  // ServerHello ... ServerHelloDone, from the ClientHello DTLSv1_listen kept
}

namespace {

// Records in `data` (DTLS record headers: type, version, epoch, sequence
// number, length; 13 bytes) whose epoch is not 0; a truncated last record
// counts if its epoch field is there.
uint32_t later_epoch_records(std::span<const uint8_t> data) {
    constexpr size_t kHeader = 13;
    uint32_t n = 0;
    for (size_t off = 0; off + 5 <= data.size();) {
        n += (data[off + 3] | data[off + 4]) != 0 ? 1 : 0;
        if (off + kHeader > data.size()) {
            break;
        }
        off += kHeader + (size_t{data[off + 11]} << 8 | data[off + 12]);
    }
    return n;
}

// A client's handshake sends one record of epoch 1 (its Finished) with its
// last flight, which makes the session established when it arrives whole;
// only a flight that arrives in parts, reordered or retransmitted before
// then, shows a few more.
constexpr uint32_t kMaxEarlyRecords = 4;

}  // namespace

bool DtlsIo::feed(Session& s, std::span<const uint8_t> data) {
    // Before the handshake ends, OpenSSL buffers every record of the next
    // epoch (up to 100, each with a ~17.7 KiB buffer), junk included: more
    // than a real client's handshake sends are dropped, so that a session
    // costs what docs/CONFIGURATION.md says however its handshake is fed.
    if (!s.established && !data.empty()) {
        s.early_records += later_epoch_records(data);
        if (s.early_records > kMaxEarlyRecords) {
            stats_.drop(Drop::kDtlsEarlyRecords);
            return true;
        }
    }
    if (!data.empty()) {
        s.bio->in = data.data();
        s.bio->in_len = data.size();
    }
    if (!s.established) {
        const int r = SSL_do_handshake(s.ssl);
        if (r != 1) {
            const int e = SSL_get_error(s.ssl, r);
            s.bio->in = nullptr;
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char why[256] = "closed by the client";
                if (const unsigned long code = ERR_peek_last_error(); code != 0) {
                    ERR_error_string_n(code, why, sizeof why);
                }
                ERR_clear_error();
                log_event(LogLevel::kDebug, "dtls_handshake_failed", {{"client", s.ft.client.to_string()}, {"error", why}});
                close(s.ft, ConnClose::kTlsHandshake);
                return false;
            }
            ERR_clear_error();
            return true;
        }
        s.established = true;
        // RFC 6066 max_fragment_length, if the client negotiated it: OpenSSL
        // ends the session over a larger write, so larger messages are dropped.
        if (const uint8_t mfl = SSL_SESSION_get_max_fragment_length(SSL_get_session(s.ssl)); mfl >= 1 && mfl <= 4) {
            s.max_plain = size_t{256} << mfl;
        }
        log_event(LogLevel::kDebug, "dtls_session", {{"client", s.ft.client.to_string()},
                                                     {"cipher", SSL_get_cipher_name(s.ssl)}});
    }
    const bool open = read_records(s);
    if (open) {
        s.bio->in = nullptr;
    }
    return open;
}

bool DtlsIo::read_records(Session& s) {
    // One datagram may carry several records (the client's Finished and its
    // first request, say): each is one message.
    for (;;) {
        const int n = SSL_read(s.ssl, plain_.data(), static_cast<int>(plain_.size()));
        if (n > 0) {
            const std::span<const uint8_t> msg{plain_.data(), static_cast<size_t>(n)};
            // A record holding a STUN or ChannelData message keeps the session
            // from its idle timeout; anything else inside valid records (or
            // datagrams that are no record) does not, so that a session
            // without an allocation cannot be held by junk (as over TCP,
            // where nothing but an allocation holds a connection).
            turn::ChannelDataView cd;
            if (stun::looks_like_stun(msg) ||
                turn::parse_channel_data(msg, cd, turn::ChannelRange::kRfc5766) == turn::ChannelDataError::kOk) {
                s.last_rx_ms = now_ms_;
            }
            if (server_ != nullptr) {
                server_->on_client_datagram(s.ft, msg, rx_marks_);
            }
            continue;
        }
        const int e = SSL_get_error(s.ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            return true;
        }
        // close_notify (SSL_ERROR_ZERO_RETURN), a fatal alert, or an error.
        close(s.ft, ConnClose::kClient);
        return false;
    }
}

bool DtlsIo::send(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks) {
    auto it = sessions_.find(to);
    if (it == sessions_.end() || !it->second->established) {
        return false;
    }
    if (data.size() > it->second->max_plain) {
        // OpenSSL would end the session over it (a record carries at most
        // 2^14 bytes, or what max_fragment_length negotiated).
        stats_.drop(Drop::kTooLarge);
        return true;
    }
    Bio& bio = *it->second->bio;
    bio.marks = marks;  // the record's datagram (bio_write, at once)
    const int r = SSL_write(it->second->ssl, data.data(), static_cast<int>(data.size()));
    bio.marks = {};
    if (r <= 0) {
        ERR_clear_error();
        stats_.drop(Drop::kSendError);
    }
    return true;
}

void DtlsIo::expire(uint64_t now_ms) {
    now_ms_ = now_ms;
    wheel_.advance(now_ms);
}

DtlsIo::Session* DtlsIo::session_of(const FiveTuple& ft, uint64_t serial) {
    auto it = sessions_.find(ft);
    return it != sessions_.end() && it->second->serial == serial ? it->second.get() : nullptr;
}

void DtlsIo::arm_handshake_timer(const FiveTuple& ft, uint64_t serial) {
    wheel_.schedule(now_ms_ + kHandshakeTickMs, [this, ft, serial] { on_handshake_timer(ft, serial); });
}

void DtlsIo::arm_idle_timer(const FiveTuple& ft, uint64_t serial, uint64_t at_ms) {
    wheel_.schedule(at_ms, [this, ft, serial] { on_idle_timer(ft, serial); });
}

void DtlsIo::on_handshake_timer(const FiveTuple& ft, uint64_t serial) {
    Session* s = session_of(ft, serial);
    if (s == nullptr || s->established) {
        return;
    }
    // Resends the last flight when its timer has run out; < 0: too many
    // tries, the client has gone.
    timeval tv{};
    if (DTLSv1_get_timeout(s->ssl, &tv) == 1 && tv.tv_sec == 0 && tv.tv_usec == 0 &&
        DTLSv1_handle_timeout(s->ssl) < 0) {
        ERR_clear_error();
        close(ft, ConnClose::kTlsHandshake);
        return;
    }
    arm_handshake_timer(ft, serial);
}

void DtlsIo::on_idle_timer(const FiveTuple& ft, uint64_t serial) {
    Session* s = session_of(ft, serial);
    if (s == nullptr) {
        return;
    }
    const uint64_t idle_ms = this->idle_ms();
    if (now_ms_ < s->last_rx_ms + idle_ms) {
        arm_idle_timer(ft, serial, s->last_rx_ms + idle_ms);  // it heard from its client since
        return;
    }
    if (server_ != nullptr && server_->has_allocation(ft)) {
        arm_idle_timer(ft, serial, now_ms_ + idle_ms);  // an allocation keeps its session
        return;
    }
    // An unfinished handshake ends as tls_handshake, a quiet session as idle.
    close(ft, s->established ? ConnClose::kIdle : ConnClose::kTlsHandshake);
}

void DtlsIo::close(const FiveTuple& key, ConnClose why, bool notify) {
    const FiveTuple ft = key;  // `key` may live in the entry erased below (close_all)
    auto it = sessions_.find(ft);
    if (it == sessions_.end()) {
        return;
    }
    std::unique_ptr<Session> s = std::move(it->second);
    sessions_.erase(it);
    // close_notify: the client learns at once; a client that sent one gets
    // one back (RFC 6347 via RFC 5246 section 7.2.1), not one that failed.
    if (s->established && (why != ConnClose::kClient || (SSL_get_shutdown(s->ssl) & SSL_RECEIVED_SHUTDOWN) != 0)) {
        SSL_shutdown(s->ssl);
    }
    SSL_free(s->ssl);
    ERR_clear_error();
    shared_.dtls_sessions.fetch_sub(1, std::memory_order_relaxed);
    shared_.dtls_sessions_per_ip.remove(ft.client.normalised().with_port(0));
    count_closed(why);
    if (notify && server_ != nullptr) {
        server_->on_client_closed(ft);
    }
}

void DtlsIo::count_closed(ConnClose why) {
    stats_.connections_closed[kKind][static_cast<size_t>(why)].add();
}

}  // namespace turn::cp
