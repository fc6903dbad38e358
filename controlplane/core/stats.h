// Per-event-loop counters. Each loop owns one Stats and is its only writer, so
// an increment is a relaxed load + store (no lock, no atomic read-modify-write);
// the metrics exporter sums the loops' counters when Prometheus scrapes.
// Every drop reason, auth failure reason and quota kind has a name here.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace turn::cp {

enum class PeerVerdict : uint8_t;  // core/peer_policy.h

struct Counter {
    std::atomic<uint64_t> v{0};
    void add(uint64_t n = 1) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

#define TURN_CP_DROP_REASONS(X)                                                          \
    X(kMalformed, "malformed")                 /* unparseable STUN / ChannelData */     \
    X(kUnexpectedClass, "unexpected_class")    /* responses, unknown indications */     \
    X(kNoAllocation, "no_allocation")          /* data on a 5-tuple with no allocation */ \
    X(kNoPermission, "no_permission")          /* peer/Send without permission */        \
    X(kNoChannel, "no_channel")                /* ChannelData on an unbound channel */   \
    X(kPeerPolicy, "peer_policy")              /* Send/peer traffic to a denied peer */  \
    X(kFamilyMismatch, "family_mismatch")      /* no relayed address of that family */  \
    X(kBandwidth, "bandwidth")                 /* allocation over its bandwidth quota */ \
    X(kUnauthRateLimit, "unauth_rate_limit")   /* 401/438/400 answers over the per-source limit */   \
    X(kSendError, "send_error")                /* sendmsg failed */                      \
    X(kTooLarge, "too_large")                  /* framed result exceeds 65535 bytes */  \
    X(kUnknownAttribute, "unknown_attribute")  /* indication with an unknown comprehension-required attribute */ \
    X(kStreamBackpressure, "stream_backpressure") /* TCP/TLS client not reading: its send buffer is full */ \
    X(kDtlsNoSession, "dtls_no_session")       /* on a DTLS listener: not a ClientHello, and no session */ \
    X(kDtlsEarlyRecords, "dtls_early_records") /* a DTLS handshake's datagram past 4 records of a later epoch (junk OpenSSL would buffer) */ \
    X(kTtlExpired, "ttl_expired")              /* data to relay received with TTL / Hop Limit 0 or 1 (RFC 8656 section 14) */ \
    X(kTcpPeerLimit, "tcp_peer_limit")         /* RFC 6062: a peer's connection to an allocation at [allocation].max_tcp_peer_connections, or to the process at [tcp].max_connections */ \
    X(kBadFingerprint, "bad_fingerprint")      /* STUN message whose FINGERPRINT does not match (RFC 8489 section 7.3) */ \
    X(kIcmpType, "icmp_type")                  /* ICMP error from a peer of a type not relayed (RFC 8656 section 11.5) */

#define TURN_CP_AUTH_FAILURES(X)              \
    X(kNoCredentials, "no_credentials")       \
    X(kMissingAttributes, "missing_attributes") \
    X(kInvalidNonce, "invalid_nonce")         \
    X(kStaleNonce, "stale_nonce")             \
    X(kWrongRealm, "wrong_realm")             \
    X(kUnknownUser, "unknown_user")           \
    X(kExpiredUser, "expired_user")           \
    X(kBadIntegrity, "bad_integrity")         \
    X(kBadAlgorithm, "bad_algorithm")         \
    X(kWrongCredentials, "wrong_credentials")

#define TURN_CP_QUOTA_KINDS(X)       \
    X(kPerUser, "per_user")          \
    X(kTotal, "total")               \
    X(kPorts, "ports")

// Why a TCP/TLS client connection or a DTLS session ended.
#define TURN_CP_CONN_CLOSE_REASONS(X)                                                    \
    X(kClient, "client")              /* the client closed or reset it */               \
    X(kBadFrame, "bad_frame")         /* bytes that are neither STUN nor ChannelData */  \
    X(kIdle, "idle")                  /* TCP/TLS: no allocation for [tcp].idle_timeout_s; DTLS: no allocation and no record for [dtls].idle_timeout_s */ \
    X(kTlsHandshake, "tls_handshake") /* the TLS (DTLS) handshake failed (or did not end in time) */ \
    X(kLimit, "limit")                /* over [tcp].max_connections(_per_ip) or [dtls].max_sessions(_per_ip): closed at accept */ \
    X(kRate, "rate")                  /* over [tcp].accepts_per_ip_per_s or [dtls].handshakes_per_ip_per_s: closed at accept */ \
    X(kSendError, "send_error")       /* writing to it failed */                        \
    X(kProxyUntrusted, "proxy_untrusted") /* to a [tcp].proxy_protocol listener from outside proxy_protocol_from: closed at accept */ \
    X(kProxyHeader, "proxy_header")   /* [tcp].proxy_protocol: no valid PROXY header first */ \
    X(kShutdown, "shutdown")          /* the event loop stopped */

#define TURN_CP_ENUM(name, str) name,
enum class Drop : uint8_t { TURN_CP_DROP_REASONS(TURN_CP_ENUM) kCount };
enum class AuthFailure : uint8_t { TURN_CP_AUTH_FAILURES(TURN_CP_ENUM) kCount };
enum class QuotaKind : uint8_t { TURN_CP_QUOTA_KINDS(TURN_CP_ENUM) kCount };
enum class ConnClose : uint8_t { TURN_CP_CONN_CLOSE_REASONS(TURN_CP_ENUM) kCount };
#undef TURN_CP_ENUM

std::string_view name(Drop d);
std::string_view name(AuthFailure a);
std::string_view name(QuotaKind q);
std::string_view name(ConnClose c);

// Client connections: index 0 TCP, 1 TLS, 2 DTLS (sessions, io/dtls_io.h).
constexpr size_t kStreamKinds = 3;

// Request methods and response codes tracked by turn_requests_total.
enum class MethodIndex : uint8_t {
    kBinding, kAllocate, kRefresh, kCreatePermission, kChannelBind, kConnect, kConnectionBind, kOther, kCount
};
std::string_view name(MethodIndex m);
MethodIndex method_index(uint16_t method);

constexpr std::array<uint16_t, 17> kTrackedCodes = {200, 300, 400, 401, 403, 405, 420, 437, 438,
                                                   440, 441, 442, 443, 446, 486, 500, 508};
size_t code_index(uint16_t code);  // unknown codes map to 500's slot

enum class Direction : uint8_t { kClientToPeer, kPeerToClient, kCount };
std::string_view name(Direction d);

struct Stats {
    std::array<Counter, static_cast<size_t>(Drop::kCount)> drops;
    std::array<Counter, static_cast<size_t>(AuthFailure::kCount)> auth_failures;
    std::array<Counter, static_cast<size_t>(QuotaKind::kCount)> quota_rejections;
    std::array<std::array<Counter, kTrackedCodes.size()>, static_cast<size_t>(MethodIndex::kCount)> requests;
    std::array<Counter, static_cast<size_t>(Direction::kCount)> relayed_packets;
    std::array<Counter, static_cast<size_t>(Direction::kCount)> relayed_bytes;
    Counter icmp_indications;  // Data indications carrying an ICMP attribute
    // TCP/TLS client connections and DTLS sessions; open = accepted - closed.
    std::array<Counter, kStreamKinds> connections_accepted;
    std::array<std::array<Counter, static_cast<size_t>(ConnClose::kCount)>, kStreamKinds> connections_closed;
    // Connections handed to the loop of their RFC 6062 peer connection (io/stream_handoff.h).
    Counter connections_handed_off;
    // RFC 8016 mobility: allocations moved to a client's new 5-tuple, and
    // mobility Refreshes handed to the event loop that holds the allocation.
    Counter mobility_moves;
    Counter mobility_forwarded;
    // RFC 6062: bytes piped between data connections and peer connections.
    std::array<Counter, static_cast<size_t>(Direction::kCount)> tcp_relayed_bytes;
    // Peers refused by the peer policy (requests and Send indications), by
    // the rule that refused them: peer_denied(v) counts verdict v (not
    // kPermitted), peer_denial_rule(i) is the verdict counted at index i.
    static constexpr size_t kPeerDenyRules = 4;
    std::array<Counter, kPeerDenyRules> peer_denials;
    void peer_denied(PeerVerdict v) { peer_denials[static_cast<size_t>(v) - 1].add(); }
    static PeerVerdict peer_denial_rule(size_t i) { return static_cast<PeerVerdict>(i + 1); }
    // Event loop utilisation over the last window, in parts per million.
    std::atomic<uint32_t> busy_ppm{0};

    void drop(Drop d) { drops[static_cast<size_t>(d)].add(); }
    void auth_failure(AuthFailure a) { auth_failures[static_cast<size_t>(a)].add(); }
    void quota(QuotaKind q) { quota_rejections[static_cast<size_t>(q)].add(); }
    void request(uint16_t method, uint16_t code) {
        requests[static_cast<size_t>(method_index(method))][code_index(code)].add();
    }
    void relayed(Direction d, size_t bytes) {
        relayed_packets[static_cast<size_t>(d)].add();
        relayed_bytes[static_cast<size_t>(d)].add(bytes);
    }
    uint64_t drops_of(Drop d) const { return drops[static_cast<size_t>(d)].get(); }
    uint64_t auth_failures_of(AuthFailure a) const { return auth_failures[static_cast<size_t>(a)].get(); }
};

}  // namespace turn::cp
