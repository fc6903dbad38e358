// libFuzzer target for the control plane's protocol core (controlplane/core:
// Server and every handler) behind the network: a script of client
// datagrams, peer datagrams, ICMP errors, RFC 6062 connection events and
// clock steps, played against a fresh Server with a recording PacketIo
// (tests/controlplane/fake_io.h) and a hand-driven clock.
//
// A script step may ask for its message to be signed: the harness parses it,
// keeps its type, transaction id and attributes, and adds a valid USERNAME,
// REALM, NONCE, MESSAGE-INTEGRITY (MD5 key) or PASSWORD-ALGORITHMS,
// PASSWORD-ALGORITHM and MESSAGE-INTEGRITY-SHA256 (SHA-256 key), and
// FINGERPRINT, so
// that mutations reach the handlers behind authentication instead of
// stopping at 401.
//
// Script (server_net.h has the encoding): records of op, selector, 16-bit
// length, payload.
//
// Invariants (a violation prints what failed and traps):
//   1. everything sent to a client is STUN or ChannelData: a STUN message
//      parses, ChannelData's length field fits the datagram; the one
//      exception, an RFC 3489 Binding response, has an exact length field
//      and echoes its request's 16-byte transaction id;
//   2. a success or error response to a client's request names that
//      request's transaction id and method;
//   3. an error response carries an ERROR-CODE between 300 and 699;
//   4. every datagram relayed to a peer leaves through a relayed socket of a
//      live allocation with a permission for that peer;
//   5. relayed data keeps its TOS and leaves with one less TTL than it came
//      with (RFC 8656 section 14; none when not known: a stream client, or a
//      peer's data for one), and data that came with TTL 1 is not relayed
//      (the step's marks come from op / kOps, server_net.h: 0, what the
//      seeds use, is "not known").
//
// Deterministic: an input gives the same run whether it is the first in a
// process, follows other inputs, or runs in another process, so whatever
// libFuzzer reports reproduces. OpenSSL's RAND_bytes is a fixed stream
// restarted at every input (det_rand below: it yields the mobility tickets'
// keys and random bytes, and, once per process from its own fixed start, the
// SipHash key of the address hash tables, so their iteration order is the
// same in every process); Config::seed fixes the core's own pseudo-random
// choices (relayed ports, RESERVATION-TOKENs, transaction ids of indications,
// CONNECTION-IDs); allocation ids count from 1 in each Shared, so per input.
// fuzz_output_digest() hashes everything the server sent and what the checks
// made of it; corpus_driver.cc --determinism (the fuzz-determinism-server
// test) compares it across runs.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "auth/credentials.h"
#include "common/siphash.h"
#include "core/auth.h"
#include "core/clock.h"
#include "core/offload.h"
#include "core/server.h"
#include "core/shared.h"
#include "core/stats.h"
#include "core_world.h"
#include "fake_io.h"
#include "server_net.h"
#include "stun/builder.h"
#include "stun/constants.h"
#include "stun/integrity.h"
#include "stun/message.h"

namespace {

using namespace turn;
using namespace turn::cp;
namespace attr = turn::stun::attr;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "server_fuzz: %s\n", what);
    __builtin_trap();
}

Address A(const char* s) { return *Address::parse(s); }

// OpenSSL's randomness as a fixed stream (splitmix64), installed with the
// legacy RAND_METHOD hook (deprecated in OpenSSL 3, still what RAND_bytes
// consults first) and restarted at every input.
namespace det_rand {

constexpr uint64_t kSipKeyStart = 0x5eed0001;  // the SipHash key, drawn once per process
constexpr uint64_t kInputStart = 0x5eed0002;   // every input

uint64_t g_state = 0;

void restart(uint64_t start) { g_state = start; }

uint64_t next() {
    uint64_t z = (g_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int bytes(unsigned char* buf, int num) {
    for (int i = 0; i < num; i += 8) {
        const uint64_t v = next();
        std::memcpy(buf + i, &v, static_cast<size_t>(std::min(8, num - i)));
    }
    return 1;
}
int seed(const void*, int) { return 1; }
int add(const void*, int, double) { return 1; }
int status() { return 1; }

const RAND_METHOD kMethod = {seed, bytes, nullptr, add, bytes, status};

// Once per process, before anything draws: installs the stream, checks that
// RAND_bytes reads it, and has the per-process SipHash key drawn from it at a
// fixed point (not at whatever point of whichever input first hashes an
// address).
void install() {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    if (RAND_set_rand_method(&kMethod) != 1) {
        fail("RAND_set_rand_method refused the fixed stream");
    }
#pragma GCC diagnostic pop
    uint8_t want[16];
    uint8_t got[16];
    restart(kSipKeyStart);
    bytes(want, sizeof want);
    restart(kSipKeyStart);
    if (RAND_bytes(got, sizeof got) != 1 || std::memcmp(want, got, sizeof want) != 0) {
        fail("RAND_bytes does not read the harness's fixed stream");
    }
    restart(kSipKeyStart);
    const SipKey& key = process_sip_key();
    uint8_t drawn[16];
    std::memcpy(drawn, &key.k0, 8);
    std::memcpy(drawn + 8, &key.k1, 8);
    if (std::memcmp(want, drawn, sizeof want) != 0) {
        fail("the SipHash key was drawn before the harness's fixed stream was installed");
    }
}

}  // namespace det_rand

// What an input made the server do, for fuzz_output_digest(): SHA-256 over
// every datagram sent (with where it went), the relays, connections and
// paths the core asked for, and the checks' findings, step by step.
class Transcript {
public:
    Transcript() : ctx_(EVP_MD_CTX_new()) {}
    ~Transcript() { EVP_MD_CTX_free(ctx_); }
    Transcript(const Transcript&) = delete;
    Transcript& operator=(const Transcript&) = delete;

    void start() {
        if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
            fail("cannot start SHA-256");
        }
    }
    void raw(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
    void u64(uint64_t v) {
        uint8_t b[8];
        for (int i = 0; i < 8; ++i) {
            b[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
        }
        raw(b, sizeof b);
    }
    void tag(char c) { raw(&c, 1); }
    void data(std::span<const uint8_t> d) {
        u64(d.size());
        raw(d.data(), d.size());
    }
    void addr(const Address& a) {
        u64(static_cast<uint64_t>(a.family));
        raw(a.ip.data(), a.ip.size());
        u64(a.port);
    }
    void tuple(const FiveTuple& t) {
        addr(t.client);
        addr(t.server);
        u64(static_cast<uint64_t>(t.transport));
    }
    void finish(uint8_t out[32]) {
        unsigned n = 0;
        if (EVP_DigestFinal_ex(ctx_, out, &n) != 1 || n != 32) {
            fail("cannot finish SHA-256");
        }
    }

private:
    EVP_MD_CTX* ctx_;
};

Transcript g_transcript;
uint8_t g_last_digest[32] = {};

// Values a client can only learn from the server, remembered from what it
// sent, for kSelReuse steps.
constexpr uint16_t kLearned[] = {attr::kMobilityTicket, attr::kConnectionId, attr::kReservationToken};

struct World : fuzzcore::CoreWorld {
    std::map<uint16_t, std::vector<uint8_t>> learned;
};

std::unique_ptr<World> make_world() {
    auto w = std::make_unique<World>();
    if (const std::string err = fuzzcore::start_core(*w); !err.empty()) {
        std::fprintf(stderr, "server_fuzz: %s\n", err.c_str());
        fail("configuration refused");
    }
    return w;
}

FiveTuple client_tuple(uint8_t sel) {
    const bool v6 = (sel & servernet::kSelV6) != 0;
    const auto port = static_cast<uint16_t>(5000 + (sel & servernet::kSelPortMask));
    return FiveTuple{A(v6 ? "[fd00::99]:5000" : "198.18.1.1:5000").with_port(port),
                     A(v6 ? servernet::kListen6 : servernet::kListen4),
                     (sel & servernet::kSelTcp) != 0 ? Transport::kTcp : Transport::kUdp};
}

// `msg` with its FINGERPRINT (if it parses as STUN and has one) set to the
// right value for the bytes before it; otherwise unchanged.
std::vector<uint8_t> with_right_fingerprint(std::span<const uint8_t> msg) {
    std::vector<uint8_t> out(msg.begin(), msg.end());
    stun::MessageView v;
    if (stun::parse(msg, v) != stun::ParseError::kOk || v.fingerprint() == nullptr || v.fingerprint()->length != 4) {
        return out;
    }
    const size_t at = v.fingerprint()->offset;
    const uint32_t fp = stun::fingerprint_value(msg.first(at - 4));
    for (int k = 0; k < 4; k++) {
        out[at + static_cast<size_t>(k)] = static_cast<uint8_t>(fp >> (24 - 8 * k));
    }
    return out;
}

// The message signed for the client of `ft`: its type, transaction id and
// attributes (but the credential ones), then valid credentials.
std::optional<std::vector<uint8_t>> sign(World& w, const FiveTuple& ft, uint8_t sel, std::span<const uint8_t> msg) {
    stun::MessageView v;
    if (stun::parse(msg, v) != stun::ParseError::kOk) {
        return std::nullopt;
    }
    const std::string user = (sel & servernet::kSelBob) != 0 ? "bob" : "alice";
    std::vector<uint8_t> buf(65536);  // room for learned values longer than the ones they replace
    stun::MessageBuilder b(buf, v.type(), v.transaction_id());
    for (const stun::RawAttribute& a : v.attributes()) {
        switch (a.type) {
        case attr::kUsername:
        case attr::kUserhash:
        case attr::kRealm:
        case attr::kNonce:
        case attr::kMessageIntegrity:
        case attr::kMessageIntegritySha256:
        case attr::kFingerprint:
        case attr::kPasswordAlgorithm:
        case attr::kPasswordAlgorithms:
            break;
        default: {
            const auto it = (sel & servernet::kSelReuse) != 0 ? w.learned.find(a.type) : w.learned.end();
            b.add(a.type, it != w.learned.end() ? std::span<const uint8_t>(it->second) : v.value(a));
        }
        }
    }
    b.add_text(attr::kUsername, user);
    b.add_text(attr::kRealm, servernet::kRealm);
    b.add_text(attr::kNonce, w.shared->nonces->issue(ft.client.normalised().with_port(0), w.clock.unix_s(),
                                                    Authenticator::kNonceFeatures));
    const bool sha = (sel & servernet::kSelSha256) != 0;
    const auto alg = sha ? stun::PasswordAlgorithm::kSha256 : stun::PasswordAlgorithm::kMd5;
    if (sha) {  // RFC 8489 section 9.2.3.1: the algorithms offered, and the one chosen
        const std::array<stun::PasswordAlgorithm, 2> algs = {stun::PasswordAlgorithm::kSha256,
                                                             stun::PasswordAlgorithm::kMd5};
        b.add_password_algorithms(algs);
        b.add_password_algorithm(alg);
    }
    const auto key = auth::long_term_key(alg, user, servernet::kRealm, user + "-pw");
    if (!key) {
        fail("no long-term key");
    }
    if (sha) {
        b.add_message_integrity_sha256(key->span());
    } else {
        b.add_message_integrity(key->span());
    }
    b.add_fingerprint();
    if (!b.ok()) {
        return std::nullopt;
    }
    buf.resize(b.size());
    return buf;
}

const bool g_verbose = std::getenv("SERVER_FUZZ_VERBOSE") != nullptr;  // what was sent, for people

// An RFC 3489 Binding response (RFC 8489 section 12): a 16-byte transaction
// id where the magic cookie would be, echoed from the request `raw`.
bool classic_binding_response(std::span<const uint8_t> d, const FiveTuple& to, const FiveTuple* asker,
                              std::span<const uint8_t> raw) {
    if (d.size() < 20 || d[0] != 0x01 || (d[1] != 0x01 && d[1] != 0x11) ||
        (d[4] == 0x21 && d[5] == 0x12 && d[6] == 0xa4 && d[7] == 0x42)) {
        return false;
    }
    if ((size_t{d[2]} << 8 | d[3]) != d.size() - 20) {
        fail("an RFC 3489 Binding response whose length field is not its size");
    }
    if (asker != nullptr && to == *asker &&
        (raw.size() < 20 || !std::equal(d.begin() + 4, d.begin() + 20, raw.begin() + 4))) {
        fail("an RFC 3489 Binding response that does not echo the request's transaction id");
    }
    return true;
}

void check_sent(World& w, size_t from, const FiveTuple* asker, const stun::MessageView* req,
                std::span<const uint8_t> raw = {}) {
    const test::FakeIo& io = w.io;
    for (size_t i = from; i < io.client.size(); i++) {
        const auto& s = io.client[i];
        const std::span<const uint8_t> d(s.bytes);
        if (d.empty()) {
            fail("an empty datagram to a client");
        }
        if (classic_binding_response(d, s.to, asker, raw)) {
            g_transcript.tag('3');
            continue;
        }
        if (g_verbose) {
            std::fprintf(stderr, "  -> %s %zu bytes:", s.to.client.to_string().c_str(), d.size());
            stun::MessageView m;
            if (stun::parse(d, m) == stun::ParseError::kOk) {
                const auto* ec = m.find(attr::kErrorCode);
                std::fprintf(stderr, " method 0x%03x class %d txid %02x%02x..", m.method(), static_cast<int>(m.cls()),
                             m.transaction_id()[0], m.transaction_id()[11]);
                if (ec != nullptr && ec->length >= 4) {
                    std::fprintf(stderr, " error %d", (m.value(*ec)[2] & 7) * 100 + m.value(*ec)[3]);
                }
            }
            std::fprintf(stderr, "\n");
        }
        if ((d[0] & 0xc0) == 0x40) {
            if (d.size() < 4 || size_t{4} + (size_t{d[2]} << 8 | d[3]) > d.size()) {
                fail("ChannelData to a client with a length beyond the datagram");
            }
            g_transcript.tag('D');
            continue;
        }
        stun::MessageView v;
        if (stun::parse(d, v) != stun::ParseError::kOk) {
            fail("a message to a client that is neither STUN nor ChannelData");
        }
        for (const uint16_t t : kLearned) {
            if (const auto* a = v.find(t)) {
                const auto val = v.value(*a);
                w.learned[t].assign(val.begin(), val.end());
            }
        }
        g_transcript.tag('S');
        g_transcript.u64(v.type());
        if (v.cls() != stun::Class::kSuccess && v.cls() != stun::Class::kError) {
            continue;
        }
        if (v.cls() == stun::Class::kError) {
            const auto* ec = v.find(attr::kErrorCode);
            if (ec == nullptr || ec->length < 4) {
                fail("an error response without ERROR-CODE");
            }
            const auto val = v.value(*ec);
            const unsigned code = (val[2] & 7u) * 100 + val[3];
            if (code < 300 || code > 699) {
                fail("an error response with a code outside 300-699");
            }
            g_transcript.u64(code);
        }
        if (asker != nullptr && req != nullptr && s.to == *asker && req->cls() == stun::Class::kRequest) {
            if (!std::equal(v.transaction_id().begin(), v.transaction_id().end(), req->transaction_id().begin()) ||
                v.method() != req->method()) {
                fail("a response that does not answer the request (transaction id or method)");
            }
            g_transcript.tag('R');
        }
    }
}

// A step's IpMarks, from what op carries beyond op % kOps (v = op / kOps):
// 0 none (TOS 0, TTL not known, as every seed), else TTL 1, 2, 255 or 64 and
// TOS EF or 0.
IpMarks step_marks(uint8_t v) {
    if (v == 0) {
        return {};
    }
    constexpr uint8_t kTtl[] = {64, 1, 2, 255};
    return IpMarks{static_cast<uint8_t>((v & 4) != 0 ? 0xB8 : 0), kTtl[v % 4]};
}

// Invariant 5 for the data relayed since `from` (to peers, or to clients as
// ChannelData or Data indications) by a step that received `in`.
void check_relayed_marks(const World& w, size_t from_client, size_t from_peer, IpMarks in) {
    auto check = [&](IpMarks out, bool stream_client) {
        const IpMarks want{in.tos, static_cast<uint8_t>(stream_client || in.ttl == 0 ? 0 : in.ttl - 1)};
        if (!stream_client && in.ttl == 1) {
            fail("relayed data that came with TTL 1");
        }
        if (out.ttl != want.ttl || out.tos != want.tos) {
            fail("relayed data without its TOS or with a TTL other than one less than it came with");
        }
    };
    for (size_t i = from_peer; i < w.io.peer_sends.size(); i++) {
        check(IpMarks{w.io.peer_sends[i].tos, w.io.peer_sends[i].ttl}, false);
    }
    for (size_t i = from_client; i < w.io.client.size(); i++) {
        const auto& c = w.io.client[i];
        stun::MessageView v;
        const bool data = (!c.bytes.empty() && (c.bytes[0] & 0xc0) == 0x40) ||
                          (stun::parse(c.bytes, v) == stun::ParseError::kOk &&
                           v.is(stun::Method::kData, stun::Class::kIndication));
        if (data) {
            check(IpMarks{c.tos, c.ttl}, c.to.transport != Transport::kUdp);
        }
    }
}

// Datagrams the core relayed to peers since `from`: each through a relayed
// socket of a live allocation that has a permission for that peer.
void check_peer_sends(World& w, size_t from) {
    for (size_t i = from; i < w.io.peer_sends.size(); i++) {
        const auto& s = w.io.peer_sends[i];
        Family f = Family::kNone;
        const Allocation* a = w.server->allocations().find_by_relay(s.relay, f);
        if (a == nullptr || !a->permitted(s.peer, w.clock.now_ms())) {
            fail("relayed to a peer without a permission, or through no allocation's socket");
        }
        g_transcript.tag('P');
        g_transcript.u64(a->id);
        g_transcript.u64(static_cast<uint64_t>(f));
    }
}

// Everything a step made the server do, into the transcript: datagrams to
// clients and peers, the relayed sockets and client paths open after it, and
// the TCP connects, data-connection binds and hand-offs it asked for.
void record_step(const World& w, size_t before, size_t before_peer, size_t before_connects, size_t before_binds,
                 size_t before_handoffs) {
    Transcript& t = g_transcript;
    for (size_t i = before; i < w.io.client.size(); i++) {
        t.tag('c');
        t.tuple(w.io.client[i].to);
        t.data(w.io.client[i].bytes);
    }
    for (size_t i = before_peer; i < w.io.peer_sends.size(); i++) {
        const auto& s = w.io.peer_sends[i];
        t.tag('p');
        t.u64(s.relay);
        t.addr(s.peer);
        t.u64(s.dont_fragment ? 1 : 0);
        t.data(s.bytes);
    }
    t.tag('o');
    for (const auto& [id, addr] : w.io.open) {
        t.u64(id);
        t.addr(addr);
        const auto df = w.io.df.find(id);
        t.u64(df == w.io.df.end() ? 2 : df->second ? 1 : 0);
    }
    t.tag('a');
    for (const auto& [id, ft] : w.io.paths) {
        t.u64(id);
        t.tuple(ft);
    }
    for (size_t i = before_connects; i < w.io.connects.size(); i++) {
        t.tag('k');
        t.addr(w.io.connects[i].first);
        t.u64(w.io.connects[i].second);
    }
    for (size_t i = before_binds; i < w.io.binds.size(); i++) {
        t.tag('b');
        t.tuple(w.io.binds[i].first);
        t.u64(w.io.binds[i].second);
    }
    for (size_t i = before_handoffs; i < w.io.handoffs.size(); i++) {
        t.tag('h');
        t.tuple(w.io.handoffs[i].client);
        t.u64(w.io.handoffs[i].loop);
        t.data(w.io.handoffs[i].message);
    }
}

Address peer_of(uint8_t sel) { return A(servernet::kPeers[(sel >> 4) % std::size(servernet::kPeers)]); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool quiet = [] {
        spdlog::set_level(g_verbose ? spdlog::level::info : spdlog::level::off);
        return true;
    }();
    (void)quiet;
    static const bool installed = [] {
        det_rand::install();
        return true;
    }();
    (void)installed;
    det_rand::restart(det_rand::kInputStart);
    g_transcript.start();
    auto w = make_world();
    size_t steps = 0;
    for (size_t off = 0; off + 4 <= size && steps < servernet::kMaxSteps; steps++) {
        const uint8_t op = data[off];
        const uint8_t sel = data[off + 1];
        const size_t len = std::min<size_t>(size_t{data[off + 2]} << 8 | data[off + 3], size - off - 4);
        const std::span<const uint8_t> pl(data + off + 4, len);
        off += 4 + len;
        const size_t before = w->io.client.size();
        const size_t before_peer = w->io.peer_sends.size();
        const size_t before_connects = w->io.connects.size();
        const size_t before_binds = w->io.binds.size();
        const size_t before_handoffs = w->io.handoffs.size();
        g_transcript.tag('s');
        g_transcript.u64(op % servernet::kOps);
        g_transcript.u64(sel);
        g_transcript.u64(len);
        const FiveTuple ft = client_tuple(sel);
        if (g_verbose) {
            std::fprintf(stderr, "step %zu: op %u sel 0x%02x, %zu bytes from %s/%s\n", steps, op % servernet::kOps, sel,
                         len, ft.client.to_string().c_str(), std::string(transport_name(ft.transport)).c_str());
        }
        // A stream client's messages have no marks (as StreamIo passes them).
        const IpMarks marks = ft.transport == Transport::kUdp ? step_marks(op / servernet::kOps) : IpMarks{};
        g_transcript.u64(uint64_t{marks.tos} << 8 | marks.ttl);
        switch (op % servernet::kOps) {
        case servernet::kClientRaw: {
            std::vector<uint8_t> fixed;
            std::span<const uint8_t> msg = pl;
            if ((sel & servernet::kSelFingerprint) != 0) {
                fixed = with_right_fingerprint(pl);
                msg = fixed;
            }
            w->server->on_client_datagram(ft, msg, marks);
            stun::MessageView req;
            const bool is_stun = stun::parse(msg, req) == stun::ParseError::kOk;
            check_sent(*w, before, &ft, is_stun ? &req : nullptr, msg);
            check_relayed_marks(*w, w->io.client.size(), before_peer, marks);
            break;
        }
        case servernet::kClientSigned: {
            const auto m = sign(*w, ft, sel, pl);
            if (!m) {
                g_transcript.tag('x');
                break;
            }
            w->server->on_client_datagram(ft, *m, marks);
            stun::MessageView req;
            if (stun::parse(*m, req) != stun::ParseError::kOk) {
                fail("the harness signed a message that does not parse");
            }
            check_sent(*w, before, &ft, &req);
            check_relayed_marks(*w, w->io.client.size(), before_peer, marks);
            break;
        }
        case servernet::kPeer: {
            if (w->io.open.empty()) {
                break;
            }
            auto it = w->io.open.begin();
            std::advance(it, sel % w->io.open.size());
            const IpMarks peer_marks = step_marks(op / servernet::kOps);
            w->server->on_peer_datagram(it->first, peer_of(sel), pl, peer_marks);
            check_sent(*w, before, nullptr, nullptr);
            check_relayed_marks(*w, before, before_peer, peer_marks);
            break;
        }
        case servernet::kPeerIcmp: {
            if (w->io.open.empty() || len < 2) {
                break;
            }
            auto it = w->io.open.begin();
            std::advance(it, sel % w->io.open.size());
            w->server->on_peer_icmp(it->first, peer_of(sel), pl[0], pl[1],
                                    len >= 6 ? uint32_t{pl[2]} << 24 | uint32_t{pl[3]} << 16 | uint32_t{pl[4]} << 8 | pl[5]
                                             : 0);
            check_sent(*w, before, nullptr, nullptr);
            break;
        }
        case servernet::kClock:
            // sel seconds in 1 s steps (every timer at its tick), then len ms.
            for (unsigned s = 0; s < sel; s++) {
                w->clock.advance_s(1);
                w->server->tick();
            }
            w->clock.advance_ms(len);
            w->server->tick();
            check_sent(*w, before, nullptr, nullptr);
            break;
        case servernet::kClientClosed:
            w->server->on_client_closed(ft);
            check_sent(*w, before, nullptr, nullptr);
            break;
        case servernet::kTcpPeer: {
            // The k-th Connect the core asked for succeeded or failed, or a
            // peer connection closed.
            if (w->io.connects.empty()) {
                break;
            }
            const uint32_t conn = w->io.connects[(sel >> 2) % w->io.connects.size()].second;
            if ((sel & 3) == 0) {
                w->server->on_tcp_peer_closed(conn);
            } else {
                w->server->on_tcp_peer_connected(conn, (sel & 1) != 0);
            }
            check_sent(*w, before, nullptr, nullptr);
            break;
        }
        default:
            break;
        }
        check_peer_sends(*w, before_peer);
        record_step(*w, before, before_peer, before_connects, before_binds, before_handoffs);
        if (w->io.client.size() > 4096) {
            w->io.client.clear();
            w->io.peer_sends.clear();
        }
    }
    g_transcript.tag('e');
    g_transcript.u64(steps);
    g_transcript.finish(g_last_digest);
    return 0;
}

// For corpus_driver.cc (--digest, --determinism): the digest of what the
// last input made the server do.
extern "C" void fuzz_output_digest(uint8_t out[32]) { std::memcpy(out, g_last_digest, sizeof g_last_digest); }
