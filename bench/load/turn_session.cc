#include "turn_session.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "clock.h"
#include "net/ip_marks.h"
#include "stun/attributes.h"
#include "stun/integrity.h"

namespace turn::load {

using stun::Class;
using stun::Method;
namespace attr = stun::attr;

std::string outcome_name(int o) {
    switch (o) {
        case outcome::kOk: return "ok";
        case outcome::kTimeout: return "timeout";
        case outcome::kBadResponse: return "bad_response";
        case outcome::kSocket: return "socket_error";
        case outcome::kIntegrity: return "bad_integrity";
        case outcome::kAuthLoop: return "auth_loop";
        default: return std::to_string(o);
    }
}

namespace {

void random_txid(std::array<uint8_t, 12>& t) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    for (size_t i = 0; i < t.size(); i += 8) {
        const uint64_t r = rng();
        std::memcpy(t.data() + i, &r, std::min<size_t>(8, t.size() - i));
    }
}

}  // namespace

TurnSession::TurnSession(SessionConfig cfg) : cfg_(std::move(cfg)), realm_(cfg_.realm) {}

TurnSession::~TurnSession() {
    dtls_.reset();
    if (fd_ >= 0) {
        close(fd_);
    }
}

bool TurnSession::open(std::string& err) {
    if (cfg_.transport == Transport::kTcp || cfg_.transport == Transport::kTls) {
        stream_ = std::make_unique<StreamConn>();
        ConnectError why = ConnectError::kNone;
        if (!stream_->connect(cfg_.server, cfg_.transport == Transport::kTls ? cfg_.tls : nullptr,
                              mono_ns() + cfg_.connect_timeout_ns, err, why)) {
            if (cfg_.errors != nullptr) {
                cfg_.errors->add(std::string(to_string(why)));
            }
            break_counted_ = true;  // counted here, by its set-up reason
            return false;
        }
        local_port_ = stream_->local_port();
        return true;
    }
    const int af = cfg_.server.is_v6() ? AF_INET6 : AF_INET;
    fd_ = socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        return false;
    }
    // Large buffers so bursts from the relay are not dropped by our own socket
    // (SO_RCVBUFFORCE needs CAP_NET_ADMIN; fall back to the capped option).
    const int size = 4 << 20;
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
        setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
        setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    if (cfg_.tos != 0 && !set_socket_tos(fd_, af == AF_INET6, cfg_.tos)) {
        err = std::string("--tos: ") + std::strerror(errno);
        return false;
    }
    sockaddr_storage ss{};
    const size_t len = cfg_.server.to_sockaddr(&ss);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0) {
        err = std::string("connect: ") + std::strerror(errno);
        return false;
    }
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) {
        local_port_ = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&local)).value_or(Address{}).port;
    }
    if (cfg_.transport == Transport::kDtls) {
        dtls_ = std::make_unique<DtlsConn>();
        ConnectError why = ConnectError::kDtlsHandshake;
        if (cfg_.tls == nullptr) {
            err = "DTLS: no client context";
        }
        if (cfg_.tls == nullptr ||
            !dtls_->handshake(fd_, *cfg_.tls, cfg_.server, mono_ns() + cfg_.connect_timeout_ns, err, why)) {
            if (cfg_.errors != nullptr) {
                cfg_.errors->add(std::string(to_string(why)));
            }
            break_counted_ = true;  // counted here, by its set-up reason
            return false;
        }
    }
    return true;
}

void TurnSession::count(int o) const {
    if (o != outcome::kOk && cfg_.errors != nullptr) {
        cfg_.errors->add(outcome_name(o));
    }
}

size_t TurnSession::build(Request kind, uint32_t lifetime_s, std::span<const uint8_t, 12> txid, uint8_t* buf,
                          size_t cap) const {
    RequestFields f;
    f.requested_transport = cfg_.tcp_relay ? kTransportTcp : kTransportUdp;
    f.peer = cfg_.peer;
    f.channel = cfg_.channel;
    f.lifetime_s = lifetime_s;
    f.connection_id = connection_id_;
    RequestAuth auth;
    if (have_key_) {
        auth = {cfg_.creds.username, realm_, nonce_, key_.span()};
    }
    return build_request(kind, f, auth, txid, {buf, cap});
}

int TurnSession::handle_response(Request kind, const stun::MessageView& m, bool& retry) {
    retry = false;
    if (m.cls() == Class::kSuccess) {
        if (have_key_ && m.message_integrity() != nullptr && !stun::verify_message_integrity(m, key_.span())) {
            return outcome::kIntegrity;
        }
        if (kind == Request::kAllocate) {
            const auto* r = m.find(attr::kXorRelayedAddress);
            if (r == nullptr ||
                stun::decode_xor_address(m.value(*r), m.transaction_id(), relayed_) != stun::AttrError::kOk) {
                return outcome::kBadResponse;
            }
            if (const auto* x = m.find(attr::kXorMappedAddress); x != nullptr) {
                stun::decode_xor_address(m.value(*x), m.transaction_id(), mapped_);
            }
            lifetime_s_ = 600;
            if (const auto* l = m.find(attr::kLifetime); l != nullptr) {
                stun::decode_u32(m.value(*l), lifetime_s_);
            }
            refresh_lifetime_s_ = lifetime_s_;
            allocated_ = true;
        } else if (kind == Request::kConnect && !connection_id_of(m, connection_id_)) {
            return outcome::kBadResponse;
        }
        return outcome::kOk;
    }
    if (m.cls() != Class::kError) {
        return outcome::kBadResponse;
    }
    const auto* e = m.find(attr::kErrorCode);
    stun::ErrorCodeValue ec;
    if (e == nullptr || stun::decode_error_code(m.value(*e), ec) != stun::AttrError::kOk) {
        return outcome::kBadResponse;
    }
    if (ec.code == stun::err::kUnauthenticated || ec.code == stun::err::kStaleNonce) {
        const auto* n = m.find(attr::kNonce);
        std::string_view nonce;
        if (n == nullptr || stun::decode_text(m.value(*n), stun::kMaxNonce, nonce) != stun::AttrError::kOk) {
            return ec.code;
        }
        // A 401 after we already authenticated with this very nonce means the
        // credentials are wrong: report it rather than loop.
        if (ec.code == stun::err::kUnauthenticated && have_key_ && nonce == nonce_) {
            return ec.code;
        }
        nonce_ = std::string(nonce);
        if (const auto* r = m.find(attr::kRealm); r != nullptr && cfg_.realm.empty()) {
            std::string_view realm;
            if (stun::decode_text(m.value(*r), stun::kMaxRealm, realm) == stun::AttrError::kOk) {
                realm_ = std::string(realm);
            }
        }
        if (!have_key_ || ec.code == stun::err::kUnauthenticated) {
            auto k = auth::long_term_key(stun::PasswordAlgorithm::kMd5, cfg_.creds.username, realm_,
                                         cfg_.creds.password);
            if (!k) {
                return ec.code;
            }
            key_ = *k;
            have_key_ = true;
        }
        if (ec.code == stun::err::kStaleNonce && cfg_.errors != nullptr) {
            cfg_.errors->add("438_retried");
        }
        retry = true;
        return ec.code;
    }
    return ec.code;
}

bool TurnSession::send_message(std::span<const uint8_t> m, uint64_t deadline_ns, StreamConn* via) {
    if (StreamConn* conn = via != nullptr ? via : stream_.get()) {
        // A full output queue (traffic still draining at teardown) is waited
        // out until the deadline; the asynchronous path (deadline 0) does not wait.
        while (!conn->write(m)) {
            if (conn->broken() || !conn->flush() || mono_ns() >= deadline_ns) {
                count_break();
                return false;
            }
            if (conn->out_space() < m.size()) {
                conn->wait(deadline_ns);
                conn->flush();
            }
        }
        return true;
    }
    if (dtls_) {
        if (!dtls_->send(m)) {
            count_break();
            return false;
        }
        return true;
    }
    return send(fd_, m.data(), m.size(), MSG_DONTWAIT) >= 0 || errno == EAGAIN;
}

bool TurnSession::next_message(uint64_t wait_until, std::span<const uint8_t>& m, int& o, StreamConn* via) {
    o = outcome::kOk;
    // The socket failed, or the connection or DTLS session broke (counted once).
    auto failed = [&] {
        count_break();
        o = outcome::kSocket;
        return false;
    };
    StreamConn* conn = via != nullptr ? via : stream_.get();
    if (conn == nullptr && dtls_) {
        for (;;) {
            const IoStatus st = dtls_->read(m, true);
            if (st == IoStatus::kOk) {
                return true;
            }
            if (st != IoStatus::kAgain) {
                return failed();
            }
            if (mono_ns() >= wait_until) {
                return false;
            }
            dtls_->wait(wait_until);
        }
    }
    if (conn == nullptr) {
        for (;;) {
            const uint64_t t_now = mono_ns();
            if (t_now >= wait_until) {
                return false;
            }
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, poll_ms(wait_until)) <= 0) {
                continue;
            }
            const ssize_t got = recv(fd_, rx_.data(), rx_.size(), 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    continue;
                }
                return failed();
            }
            m = {rx_.data(), static_cast<size_t>(got)};
            return true;
        }
    }
    for (;;) {
        const StreamReadStatus st = conn->reader().next(m);
        if (st == StreamReadStatus::kMessage) {
            return true;
        }
        if (st != StreamReadStatus::kNeedMore) {
            conn->mark_broken(to_string(st));
            return failed();
        }
        const IoStatus io = conn->read_once();
        if (io == IoStatus::kOk) {
            continue;
        }
        if (io != IoStatus::kAgain) {
            return failed();
        }
        if (conn->want_write() && !conn->flush()) {
            return failed();
        }
        if (mono_ns() >= wait_until) {
            return false;
        }
        conn->wait(wait_until);
    }
}

void TurnSession::count_break() {
    const bool broken = stream_ ? stream_->broken() : dtls_ && dtls_->broken();
    if (broken && !break_counted_) {
        break_counted_ = true;
        if (cfg_.errors != nullptr) {
            cfg_.errors->add(stream_ ? stream_->break_reason() : dtls_->break_reason());
        }
    }
    if (data_ && data_->broken() && !data_break_counted_) {
        data_break_counted_ = true;
        if (cfg_.errors != nullptr) {
            cfg_.errors->add(data_->break_reason());
        }
    }
}

int TurnSession::transact(Request kind, uint32_t lifetime_s, uint64_t deadline_ns, StreamConn* via) {
    std::array<uint8_t, 1024> tx{};
    // Initial request, then up to two credential retries (401 challenge, 438).
    for (int round = 0; round < 4; ++round) {
        std::array<uint8_t, 12> txid{};
        random_txid(txid);
        const size_t n = build(kind, lifetime_s, txid, tx.data(), tx.size());
        if (n == 0) {
            return outcome::kBadResponse;
        }
        uint64_t rto = cfg_.rto_ns;
        // A stream is reliable: send once and wait as long as the
        // retransmissions would have taken (RFC 8489 6.2.2: no retransmission
        // over TCP; its 39.5 s timeout is longer than the harness wants).
        const bool reliable = via != nullptr || stream_;
        const int tries = reliable ? 1 : cfg_.max_tries;
        if (reliable) {
            rto = cfg_.rto_ns * ((uint64_t{1} << cfg_.max_tries) - 1);
        }
        bool answered = false;
        for (int t = 0; t < tries && !answered; ++t) {
            const uint64_t now = mono_ns();
            if (now >= deadline_ns) {
                return outcome::kTimeout;
            }
            if (!send_message({tx.data(), n}, deadline_ns, via)) {
                return outcome::kSocket;
            }
            const uint64_t wait_until = std::min(deadline_ns, now + rto);
            rto *= 2;
            for (;;) {
                std::span<const uint8_t> got;
                int o = outcome::kOk;
                if (!next_message(wait_until, got, o, via)) {
                    if (o != outcome::kOk) {
                        return o;
                    }
                    break;
                }
                stun::MessageView m;
                if (stun::parse(got, m) != stun::ParseError::kOk ||
                    !std::equal(txid.begin(), txid.end(), m.transaction_id().begin()) ||
                    m.method() != static_cast<uint16_t>(method_of(kind))) {
                    continue;  // stray traffic, an old retransmission's answer, or not ours
                }
                bool retry = false;
                const int o2 = handle_response(kind, m, retry);
                if (!retry) {
                    return o2;
                }
                answered = true;
                break;
            }
        }
        if (!answered) {
            return outcome::kTimeout;
        }
    }
    return outcome::kAuthLoop;
}

int TurnSession::allocate(uint64_t deadline_ns) {
    const int o = transact(Request::kAllocate, 0, deadline_ns);
    count(o);
    return o;
}
int TurnSession::create_permission(uint64_t deadline_ns) {
    const int o = transact(Request::kCreatePermission, 0, deadline_ns);
    count(o);
    return o;
}
int TurnSession::channel_bind(uint64_t deadline_ns) {
    const int o = transact(Request::kChannelBind, 0, deadline_ns);
    count(o);
    return o;
}
int TurnSession::refresh(uint32_t lifetime_s, uint64_t deadline_ns) {
    const int o = transact(Request::kRefresh, lifetime_s, deadline_ns);
    count(o);
    return o;
}

int TurnSession::connect_pipe(uint64_t deadline_ns) {
    int o = transact(Request::kConnect, 0, deadline_ns);
    if (o == outcome::kOk) {
        data_ = std::make_unique<StreamConn>();
        std::string err;
        ConnectError why = ConnectError::kNone;
        if (!data_->connect(cfg_.server, cfg_.transport == Transport::kTls ? cfg_.tls : nullptr,
                            std::min(deadline_ns, mono_ns() + cfg_.connect_timeout_ns), err, why)) {
            data_break_counted_ = true;  // counted here, by its set-up reason
            if (cfg_.errors != nullptr) {
                cfg_.errors->add("data_" + std::string(to_string(why)));
            }
            o = outcome::kSocket;
        } else {
            o = transact(Request::kConnectionBind, 0, deadline_ns, data_.get());
            count(o);
        }
    } else {
        count(o);  // e.g. 447: the server could not connect to the peer
    }
    if (o != outcome::kOk) {
        data_.reset();
        // A server that answers is there to delete the allocation now; one
        // that timed out, or a broken control connection, ends it with the
        // control connection, at exit.
        if (o != outcome::kTimeout && stream_ && !stream_->broken()) {
            release(deadline_ns);
        }
        allocated_ = false;
    }
    return o;
}

int TurnSession::setup(uint64_t deadline_ns, const std::function<void(const Address&)>& on_relayed) {
    int o = allocate(deadline_ns);
    if (o != outcome::kOk) {
        return o;
    }
    if (on_relayed) {
        on_relayed(relayed_);
    }
    if (cfg_.tcp_relay) {
        return connect_pipe(deadline_ns);
    }
    o = create_permission(deadline_ns);
    if (o != outcome::kOk || cfg_.channel == 0) {
        return o;
    }
    return channel_bind(deadline_ns);
}

bool TurnSession::release(uint64_t deadline_ns) {
    data_.reset();  // the pipe first: the peer sees its end before the allocation's
    if (!allocated_) {
        return false;
    }
    const int o = refresh(0, deadline_ns);
    allocated_ = false;
    return o == outcome::kOk;
}

void TurnSession::start_refresh_cycle(uint64_t now_ns) {
    pending_.clear();  // anything still unanswered from the last cycle is superseded
    auto queue = [&](Request r) {
        Pending p{r, {}, now_ns, cfg_.rto_ns, 0, 0};
        random_txid(p.txid);
        pending_.push_back(p);
    };
    queue(Request::kRefresh);
    queue(Request::kCreatePermission);
    if (cfg_.channel != 0) {
        queue(Request::kChannelBind);
    }
    for (auto& p : pending_) {
        send_pending(p, now_ns);
    }
}

bool TurnSession::send_pending(Pending& p, uint64_t now_ns) {
    std::array<uint8_t, 1024> tx{};
    const size_t n = build(p.kind, refresh_lifetime_s_, p.txid, tx.data(), tx.size());
    p.tries++;
    p.next_send_ns = now_ns + p.rto_ns;
    p.rto_ns *= 2;
    if (stream_) {
        // Reliable: no retransmission (RFC 8489 6.2.2); poll() gives up
        // after the time the retransmissions would have taken.
        p.next_send_ns = now_ns + cfg_.rto_ns * ((uint64_t{1} << cfg_.max_tries) - 1);
        p.tries = cfg_.max_tries;
    }
    return n != 0 && send_message({tx.data(), n});
}

bool TurnSession::on_control(std::span<const uint8_t> datagram, uint64_t now_ns) {
    stun::MessageView m;
    if (stun::parse(datagram, m) != stun::ParseError::kOk) {
        return false;
    }
    for (size_t i = 0; i < pending_.size(); ++i) {
        Pending& p = pending_[i];
        if (!std::equal(p.txid.begin(), p.txid.end(), m.transaction_id().begin())) {
            continue;
        }
        bool retry = false;
        const int o = handle_response(p.kind, m, retry);
        if (retry && p.auth_retries < 2) {
            p.auth_retries++;
            random_txid(p.txid);
            p.tries = 0;
            p.rto_ns = cfg_.rto_ns;
            send_pending(p, now_ns);
            return true;
        }
        count(o);
        (o == outcome::kOk ? async_ok_ : async_failed_)++;
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
        return true;
    }
    return false;
}

void TurnSession::poll(uint64_t now_ns) {
    for (size_t i = 0; i < pending_.size();) {
        Pending& p = pending_[i];
        if (now_ns < p.next_send_ns) {
            ++i;
            continue;
        }
        if (p.tries >= cfg_.max_tries) {
            count(outcome::kTimeout);
            async_failed_++;
            pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
            continue;
        }
        send_pending(p, now_ns);
        ++i;
    }
}

}  // namespace turn::load
