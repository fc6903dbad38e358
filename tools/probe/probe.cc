#include "probe.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "auth/credentials.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/integrity.h"
#include "stun/message.h"
#include "turn/channel_data.h"

namespace turn::probe {

namespace {

using Clock = std::chrono::steady_clock;
using M = stun::Method;
using C = stun::Class;

constexpr uint16_t kChannel = 0x4000;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::string fmt_ms(double ms) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", ms);
    return b;
}

std::array<uint8_t, stun::kTxIdSize> new_txid() {
    static std::mt19937_64 rng{std::random_device{}()};
    std::array<uint8_t, stun::kTxIdSize> t{};
    for (auto& b : t) {
        b = static_cast<uint8_t>(rng());
    }
    return t;
}

// A parsed answer, owning its bytes.
struct Answer {
    std::vector<uint8_t> bytes;
    stun::MessageView view;
    uint16_t code = 0;  // 200 for success
    std::string reason;

    bool success() const { return code == 200; }
    std::optional<Address> xor_address(uint16_t type) const {
        const auto* a = view.find(type);
        Address out;
        if (a == nullptr || stun::decode_xor_address(view.value(*a), view.transaction_id(), out) != stun::AttrError::kOk) {
            return std::nullopt;
        }
        return out;
    }
    std::string text(uint16_t type) const {
        const auto* a = view.find(type);
        return a == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(view.value(*a).data()), a->length);
    }
};

// The echo peer: a UDP socket that sends every datagram back to its source.
class EchoPeer {
public:
    explicit EchoPeer(const Address& bind_to) {
        fd_ = ::socket(bind_to.is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_storage ss{};
        const size_t len = bind_to.to_sockaddr(&ss);
        ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) == 0;
        if (ok_) {
            socklen_t l = sizeof ss;
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &l);
            addr_ = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss)).value_or(Address{});
        }
    }
    ~EchoPeer() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    bool ok() const { return ok_; }
    int fd() const { return fd_; }
    const Address& address() const { return addr_; }
    // Echoes what is waiting; remembers where it came from.
    void serve() {
        uint8_t buf[65536];
        for (;;) {
            sockaddr_storage from{};
            socklen_t fl = sizeof from;
            const ssize_t n = ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n < 0) {
                return;
            }
            last_source = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&from)).value_or(Address{});
            ++received;
            ::sendto(fd_, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), fl);
        }
    }
    Address last_source;
    int received = 0;

private:
    int fd_ = -1;
    bool ok_ = false;
    Address addr_;
};

class Prober {
public:
    Prober(const ProbeConfig& cfg, Transport& t, EchoPeer* peer) : cfg_(cfg), t_(t), peer_(peer) {}

    // The next message from the server for which `want` is true, echoing
    // for the peer meanwhile; nothing on timeout.
    template <typename F>
    std::optional<std::vector<uint8_t>> await(int timeout_ms, F want) {
        const auto t0 = Clock::now();
        for (;;) {
            const int left = timeout_ms - static_cast<int>(ms_since(t0));
            if (left < 0) {
                return std::nullopt;
            }
            if (!t_.buffered()) {
                pollfd p[2] = {{t_.fd(), POLLIN, 0}, {peer_ != nullptr ? peer_->fd() : -1, POLLIN, 0}};
                if (::poll(p, 2, left) <= 0) {
                    continue;
                }
                if ((p[1].revents & POLLIN) != 0) {
                    peer_->serve();
                }
                if ((p[0].revents & (POLLIN | POLLERR | POLLHUP)) == 0) {
                    continue;
                }
            }
            // Over datagrams poll() saw one waiting: read only it, since a
            // DTLS record that is no message (a resent handshake flight, a
            // forged datagram) must not hold up the echo peer until `left`.
            auto m = t_.recv(is_datagram(t_.kind()) ? 0 : std::max(left, 1));
            if (!m) {
                if (t_.closed()) {
                    return std::nullopt;
                }
                continue;
            }
            if (want(*m)) {
                return m;
            }
        }
    }

    // A request and its answer; over UDP and DTLS retransmitted (RFC 8489
    // 6.2.1: RTO 500 ms, doubling; DTLS resends only its own handshake)
    // until timeout_ms.
    std::optional<Answer> transact(const std::vector<uint8_t>& req) {
        const auto t0 = Clock::now();
        int rto = 500;
        while (ms_since(t0) < cfg_.timeout_ms) {
            if (!t_.send(req)) {
                return std::nullopt;
            }
            const int wait = is_datagram(t_.kind()) ? std::min(rto, cfg_.timeout_ms - static_cast<int>(ms_since(t0)))
                                                     : cfg_.timeout_ms;
            auto m = await(std::max(wait, 1), [&](const std::vector<uint8_t>& b) {
                return b.size() >= 20 && (b[0] & 0xC0) == 0 && std::equal(req.begin() + 8, req.begin() + 20, b.begin() + 8);
            });
            if (m) {
                Answer a;
                a.bytes = std::move(*m);
                if (stun::parse(a.bytes, a.view) != stun::ParseError::kOk) {
                    return std::nullopt;
                }
                if (a.view.cls() == C::kSuccess) {
                    a.code = 200;
                } else if (const auto* ec = a.view.find(stun::attr::kErrorCode)) {
                    stun::ErrorCodeValue e;
                    if (stun::decode_error_code(a.view.value(*ec), e) == stun::AttrError::kOk) {
                        a.code = e.code;
                        a.reason = std::string(e.reason);
                    }
                }
                return a;
            }
            if (t_.closed() || !is_datagram(t_.kind())) {
                return std::nullopt;
            }
            rto *= 2;
        }
        return std::nullopt;
    }

    std::vector<uint8_t> build(M m, const std::function<void(stun::MessageBuilder&)>& attrs, bool auth) {
        std::vector<uint8_t> buf(2048);
        const auto txid = new_txid();
        stun::MessageBuilder b(buf, m, C::kRequest, txid);
        if (attrs) {
            attrs(b);
        }
        if (auth) {
            b.add_text(stun::attr::kUsername, cfg_.user);
            b.add_text(stun::attr::kRealm, realm_);
            b.add_text(stun::attr::kNonce, nonce_);
            b.add_message_integrity(key_);
        }
        b.add_fingerprint();
        buf.resize(b.size());
        return buf;
    }

    // An authenticated request: the first one learns realm and nonce from
    // the 401; a 438 (stale nonce) is retried once with the new nonce.
    std::optional<Answer> request(M m, const std::function<void(stun::MessageBuilder&)>& attrs, std::string& why) {
        for (int attempt = 0; attempt < 3; ++attempt) {
            auto a = transact(build(m, attrs, !nonce_.empty()));
            if (!a) {
                why = t_.closed() ? "the server closed the connection" : "no answer within " + std::to_string(cfg_.timeout_ms) + " ms";
                return std::nullopt;
            }
            if ((a->code == 401 && nonce_.empty()) || a->code == 438) {
                realm_ = a->text(stun::attr::kRealm);
                nonce_ = a->text(stun::attr::kNonce);
                if (realm_.empty() || nonce_.empty()) {
                    why = std::to_string(a->code) + " without REALM and NONCE";
                    return a;
                }
                auto k = auth::long_term_key(stun::PasswordAlgorithm::kMd5, cfg_.user, realm_, cfg_.password);
                if (!k) {
                    why = "the password is not a valid OpaqueString";
                    return std::nullopt;
                }
                key_.assign(k->span().begin(), k->span().end());
                continue;
            }
            if (a->success() && !stun::verify_message_integrity(a->view, key_)) {
                why = "the success answer's MESSAGE-INTEGRITY does not verify with this password";
                a->code = 0;
            }
            return a;
        }
        why = "challenged again after answering the challenge";
        return std::nullopt;
    }

    const std::string& realm() const { return realm_; }
    // True if `a` carries a MESSAGE-INTEGRITY made with our key.
    bool verifies(const Answer& a) const { return !key_.empty() && stun::verify_message_integrity(a.view, key_); }
    // True once requests carry credentials (after the first 401).
    bool authenticating() const { return !key_.empty(); }

private:
    const ProbeConfig& cfg_;
    Transport& t_;
    EchoPeer* peer_;
    std::string realm_;
    std::string nonce_;
    std::vector<uint8_t> key_;
};

std::string fail_text(const std::optional<Answer>& a, const std::string& why) {
    if (!why.empty()) {
        return why;
    }
    if (!a) {
        return "no answer";
    }
    return std::to_string(a->code) + (a->reason.empty() ? "" : " " + a->reason);
}

// Round trips of `count` payloads through the relay and the echo peer.
// `send` frames one payload; `unwrap` returns the payload of a message from
// the server, if it is one of ours.
struct DataResult {
    int echoed = 0;
    std::vector<double> rtts;
    bool corrupted = false;
};

template <typename Send, typename Unwrap>
DataResult round_trips(const ProbeConfig& cfg, Prober& p, Send send, Unwrap unwrap) {
    DataResult r;
    std::mt19937 rng{std::random_device{}()};
    std::vector<std::vector<uint8_t>> earlier;  // a late echo of one of these is late, not corrupted
    for (int i = 0; i < cfg.count; ++i) {
        std::vector<uint8_t> payload(cfg.size);
        for (auto& b : payload) {
            b = static_cast<uint8_t>(rng());
        }
        const auto t0 = Clock::now();
        if (!send(payload)) {
            break;
        }
        bool bad = false;
        auto m = p.await(cfg.timeout_ms, [&](const std::vector<uint8_t>& b) {
            auto got = unwrap(b);
            if (got && *got != payload && std::find(earlier.begin(), earlier.end(), *got) == earlier.end()) {
                bad = true;
            }
            return got && *got == payload;
        });
        r.corrupted = r.corrupted || bad;
        earlier.push_back(std::move(payload));
        if (m) {
            r.echoed++;
            r.rtts.push_back(ms_since(t0));
        }
    }
    return r;
}

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Where a 300 (Try Alternate) sends the probe.
struct Redirect {
    Address to;
    std::string domain;  // ALTERNATE-DOMAIN: the name the alternate's (D)TLS certificate is checked against
};

// Every check against cfg.server; a redirect if its Allocate got a valid 300.
std::optional<Redirect> probe_one(const ProbeConfig& cfg, const std::function<void(Step)>& done) {
    const char* tname = kind_name(cfg.kind);

    // Connect.
    ConnectInfo ci;
    std::string err;
    const auto tc = Clock::now();
    auto t = Transport::open(cfg.kind, cfg.server, cfg.tls, cfg.timeout_ms, ci, err);
    {
        Step s{"connect", t != nullptr, ms_since(tc), "", {{"transport", tname}, {"server", cfg.server.to_string()}}};
        if (!t) {
            s.detail = err;
            done(s);
            return std::nullopt;
        }
        s.detail = std::string(tname) + " to " + cfg.server.to_string() + " from " + t->local().to_string();
        if (!is_datagram(cfg.kind)) {
            s.detail += ", TCP " + fmt_ms(ci.connect_ms) + " ms";
            s.fields.emplace_back("tcp_ms", fmt_ms(ci.connect_ms));
        }
        if (is_secure(cfg.kind)) {
            // The same fields for TLS and DTLS: tls_version tells them apart.
            s.detail += ", " + ci.tls_version + " " + ci.cipher + " " + fmt_ms(ci.tls_ms) + " ms" +
                        (ci.alpn.empty() ? ", no ALPN" : ", ALPN " + ci.alpn);
            s.fields.emplace_back("tls_version", ci.tls_version);
            s.fields.emplace_back("cipher", ci.cipher);
            s.fields.emplace_back("tls_ms", fmt_ms(ci.tls_ms));
            s.fields.emplace_back("alpn", ci.alpn);
        }
        done(s);
    }

    const Address peer_bind = cfg.peer_bind.value_or(t->local().with_port(0));
    EchoPeer peer(peer_bind);
    Prober p(cfg, *t, peer.ok() ? &peer : nullptr);

    // Binding.
    {
        const auto t0 = Clock::now();
        auto a = p.transact(p.build(M::kBinding, {}, false));
        Step s{"binding", a && a->success(), ms_since(t0), "", {}};
        if (s.ok) {
            const auto mapped = a->xor_address(stun::attr::kXorMappedAddress);
            s.ok = mapped.has_value();
            s.detail = mapped ? "mapped address " + mapped->to_string() : "success without XOR-MAPPED-ADDRESS";
            if (mapped) {
                s.fields.emplace_back("mapped", mapped->to_string());
            }
            const std::string sw = a->text(stun::attr::kSoftware);
            if (!sw.empty()) {
                s.detail += ", software \"" + sw + "\"";
                s.fields.emplace_back("software", sw);
            }
        } else {
            s.detail = fail_text(a, !t->closed() ? ""
                                    : cfg.kind == Kind::kUdp ? "port unreachable (ICMP): nothing listens on UDP " + cfg.server.to_string()
                                    : cfg.kind == Kind::kDtls ? "the server ended the DTLS session (an alert, or ICMP port unreachable)"
                                                              : "the server closed the connection");
        }
        done(s);
        if (!s.ok && (t->closed() || !a)) {
            return std::nullopt;  // nothing answers: the rest would only repeat it
        }
    }

    // Allocate.
    Address relayed;
    {
        const auto t0 = Clock::now();
        std::string why;
        auto a = p.request(M::kAllocate, [&](stun::MessageBuilder& b) {
            b.add_requested_transport(stun::kProtoUdp);
            if (cfg.family == Family::kIPv6) {
                b.add_address_family(stun::attr::kRequestedAddressFamily, Family::kIPv6);
            }
        }, why);
        if (a && a->code == 300 && why.empty()) {
            // RFC 8489 section 10: an answer to a request with credentials
            // must be signed with our key (or anyone on the path could send
            // us elsewhere); the answer to the first request, sent before
            // credentials, cannot be, and is what browsers follow.
            Step s{"redirect", false, ms_since(t0), "", {}};
            Redirect r;
            const auto* alt = a->view.find(stun::attr::kAlternateServer);
            const bool is_signed = p.verifies(*a);
            if (p.authenticating() && !is_signed) {
                s.detail = "300 Try Alternate without a MESSAGE-INTEGRITY made with this password: not followed";
            } else if (alt == nullptr || stun::decode_address(a->view.value(*alt), r.to) != stun::AttrError::kOk ||
                       r.to.port == 0) {
                s.detail = "300 Try Alternate without a valid ALTERNATE-SERVER";
            } else {
                r.domain = a->text(stun::attr::kAlternateDomain);
                s.ok = true;
                s.detail = "300 Try Alternate: to " + r.to.to_string() + (r.domain.empty() ? "" : " (domain " + r.domain + ")") +
                           (is_signed ? ", signed" : ", unsigned (the answer to the first request, before credentials)");
                s.fields = {{"from", cfg.server.to_string()}, {"to", r.to.to_string()}, {"domain", r.domain},
                            {"signed", is_signed ? "yes" : "no"}};
            }
            done(s);
            if (!s.ok) {
                return std::nullopt;
            }
            return r;
        }
        Step s{"allocate", a && a->success() && why.empty(), ms_since(t0), "", {}};
        if (s.ok) {
            const auto r = a->xor_address(stun::attr::kXorRelayedAddress);
            uint32_t life = 0;
            if (const auto* l = a->view.find(stun::attr::kLifetime)) {
                stun::decode_u32(a->view.value(*l), life);
            }
            s.ok = r.has_value();
            relayed = r.value_or(Address{});
            s.detail = r ? "relayed address " + r->to_string() + ", lifetime " + std::to_string(life) + " s, realm \"" +
                               p.realm() + "\""
                         : "success without XOR-RELAYED-ADDRESS";
            s.fields = {{"relayed", relayed.to_string()}, {"lifetime_s", std::to_string(life)}, {"realm", p.realm()}};
        } else {
            s.detail = fail_text(a, why);
            if (a && a->code == 401) {
                s.detail += ": the server did not accept the username and password";
            }
        }
        done(s);
        if (!s.ok) {
            return std::nullopt;
        }
    }

    if (!peer.ok()) {
        done(Step{"peer", false, 0, "cannot bind the echo peer at " + peer_bind.to_string() + "; use --peer-bind", {}});
    } else {
        const Address peer_addr = peer.address();
        // CreatePermission.
        {
            const auto t0 = Clock::now();
            std::string why;
            auto a = p.request(M::kCreatePermission, [&](stun::MessageBuilder& b) {
                b.add_xor_address(stun::attr::kXorPeerAddress, peer_addr);
            }, why);
            Step s{"permission", a && a->success() && why.empty(), ms_since(t0), "", {{"peer", peer_addr.to_string()}}};
            s.detail = s.ok ? "for the echo peer " + peer_addr.to_string() : fail_text(a, why);
            if (a && a->code == 403) {
                s.detail += ": the server's policy does not let it relay to " + peer_addr.ip_string() +
                            " (run the probe from an address the relay may reach, or pass --peer-bind)";
            }
            done(s);
        }
        // Send indications out, Data indications back.
        {
            DataResult r = round_trips(
                cfg, p,
                [&](const std::vector<uint8_t>& payload) {
                    std::vector<uint8_t> buf(payload.size() + 128);
                    const auto txid = new_txid();
                    stun::MessageBuilder b(buf, M::kSend, C::kIndication, txid);
                    b.add_xor_address(stun::attr::kXorPeerAddress, peer_addr);
                    b.add(stun::attr::kData, payload);
                    buf.resize(b.size());
                    return t->send(buf);
                },
                [&](const std::vector<uint8_t>& m) -> std::optional<std::vector<uint8_t>> {
                    stun::MessageView v;
                    if (stun::parse(m, v) != stun::ParseError::kOk || v.method() != static_cast<uint16_t>(M::kData) ||
                        v.cls() != C::kIndication) {
                        return std::nullopt;
                    }
                    const auto* d = v.find(stun::attr::kData);
                    if (d == nullptr) {
                        return std::nullopt;
                    }
                    const auto val = v.value(*d);
                    return std::vector<uint8_t>(val.begin(), val.end());
                });
            Step s{"send_data", r.echoed == cfg.count && !r.corrupted, median(r.rtts), "", {}};
            s.detail = std::to_string(r.echoed) + "/" + std::to_string(cfg.count) +
                       " Send indications came back as Data indications, median round trip " + fmt_ms(median(r.rtts)) +
                       " ms" + (r.corrupted ? ", some with wrong bytes" : "");
            if (peer.received > 0 && !(peer.last_source == relayed)) {
                s.ok = false;
                s.detail += "; the peer saw them from " + peer.last_source.to_string() + ", not the relayed address";
            }
            s.fields = {{"echoed", std::to_string(r.echoed)}, {"sent", std::to_string(cfg.count)}};
            done(s);
        }
        // ChannelBind, then ChannelData both ways.
        {
            const auto t0 = Clock::now();
            std::string why;
            auto a = p.request(M::kChannelBind, [&](stun::MessageBuilder& b) {
                b.add_channel_number(kChannel);
                b.add_xor_address(stun::attr::kXorPeerAddress, peer_addr);
            }, why);
            Step s{"channel_bind", a && a->success() && why.empty(), ms_since(t0), "", {{"channel", "0x4000"}}};
            s.detail = s.ok ? "channel 0x4000 to " + peer_addr.to_string() : fail_text(a, why);
            done(s);
            if (s.ok) {
                DataResult r = round_trips(
                    cfg, p,
                    [&](const std::vector<uint8_t>& payload) {
                        std::vector<uint8_t> buf(payload.size() + 8);
                        const size_t n = build_channel_data(buf, kChannel, payload, false);
                        buf.resize(n);
                        return n != 0 && t->send(buf);
                    },
                    [&](const std::vector<uint8_t>& m) -> std::optional<std::vector<uint8_t>> {
                        ChannelDataView v;
                        if (parse_channel_data(m, v) != ChannelDataError::kOk || v.channel != kChannel) {
                            return std::nullopt;
                        }
                        return std::vector<uint8_t>(v.payload.begin(), v.payload.end());
                    });
                Step d{"channel_data", r.echoed == cfg.count && !r.corrupted, median(r.rtts), "", {}};
                d.detail = std::to_string(r.echoed) + "/" + std::to_string(cfg.count) +
                           " ChannelData messages echoed, median round trip " + fmt_ms(median(r.rtts)) + " ms" +
                           (r.corrupted ? ", some with wrong bytes" : "");
                d.fields = {{"echoed", std::to_string(r.echoed)}, {"sent", std::to_string(cfg.count)}};
                done(d);
            }
        }
    }

    // Refresh with lifetime 0 ends the allocation.
    {
        const auto t0 = Clock::now();
        std::string why;
        auto a = p.request(M::kRefresh, [](stun::MessageBuilder& b) { b.add_u32(stun::attr::kLifetime, 0); }, why);
        Step s{"refresh", a && a->success() && why.empty(), ms_since(t0), "", {}};
        s.detail = s.ok ? "allocation released (lifetime 0)" : fail_text(a, why);
        done(s);
    }
    return std::nullopt;
}

}  // namespace

std::vector<Step> run_probe(const ProbeConfig& cfg, const std::function<void(const Step&)>& report) {
    std::vector<Step> steps;
    auto done = [&](Step s) {
        report(s);
        steps.push_back(std::move(s));
    };
    // Redirects are followed to servers not tried yet (RFC 8489 section 10
    // forbids going back to one), at most kMaxRedirects times.
    constexpr int kMaxRedirects = 3;
    ProbeConfig c = cfg;
    std::vector<Address> tried{cfg.server};
    for (int hops = 0;; ++hops) {
        auto r = probe_one(c, done);
        if (!r) {
            return steps;
        }
        const bool seen = std::find(tried.begin(), tried.end(), r->to) != tried.end();
        if (seen || hops == kMaxRedirects || r->to.family != c.server.family) {
            done(Step{"redirect", false, 0,
                      seen ? "redirected back to " + r->to.to_string() + ", which was tried already (a redirect loop)"
                      : hops == kMaxRedirects ? "more than " + std::to_string(kMaxRedirects) + " redirects"
                                              : "redirected to " + r->to.to_string() + ", another address family",
                      {}});
            return steps;
        }
        tried.push_back(r->to);
        c.server = r->to;
        if (!r->domain.empty()) {
            c.tls.server_name = r->domain;  // else the name (or IP) the first server was checked against
        }
    }
}

}  // namespace turn::probe
