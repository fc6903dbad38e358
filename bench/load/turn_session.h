// One TURN allocation seen from the client side (RFC 8656): a UDP socket
// connected to the server (with a DTLS session on it over DTLS, RFC 7350:
// DtlsConn, one message per record), or its own TCP or TLS connection (RFC
// 8656 3.1, messages framed by their length fields: StreamConn), the long-term
// credential dance (RFC 8489 9.2),
// and the requests the harness needs: Allocate, CreatePermission,
// ChannelBind, Refresh. Requests are either synchronous (setup, churn,
// teardown; bounded by a deadline, retransmitted per RFC 8489 6.2.1) or
// asynchronous while traffic flows on the same socket (refresh cycles driven
// by the traffic thread that owns the socket).
//
// RFC 6062 TCP allocations (SessionConfig::tcp_relay, over TCP or TLS): the
// connection above is the control connection (Allocate with
// REQUESTED-TRANSPORT TCP, Connect, Refresh); ConnectionBind goes on a second,
// data connection to the server (data()), which after its success response is
// a raw byte pipe to the peer.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "auth/credentials.h"
#include "credentials.h"
#include "dtls_conn.h"
#include "errors.h"
#include "net/address.h"
#include "requests.h"
#include "stream_conn.h"
#include "stun/message.h"

namespace turn::load {

// Result of a request: 0 success, 300..699 the STUN error code, or one of these.
namespace outcome {
constexpr int kOk = 0;
constexpr int kTimeout = -1;       // no answer before the deadline
constexpr int kBadResponse = -2;   // unparsable answer or missing attribute
constexpr int kSocket = -3;        // send/recv failed (e.g. ICMP port unreachable)
constexpr int kIntegrity = -4;     // success answer whose MESSAGE-INTEGRITY does not verify
constexpr int kAuthLoop = -5;      // still challenged after fresh credentials
}  // namespace outcome
std::string outcome_name(int o);

struct SessionConfig {
    Address server;
    Credentials creds;
    std::string realm;        // empty: learned from the 401
    Address peer;             // echo peer this allocation talks to
    uint16_t channel = 0;     // 0x4000..0x4FFF in channel mode, 0 in send mode
    ErrorTally* errors = nullptr;
    uint64_t rto_ns = 250'000'000;   // first retransmission timeout; doubles per try
    int max_tries = 5;
    Transport transport = Transport::kUdp;
    TlsClient* tls = nullptr;        // kTls, kDtls: the shared client context
    uint64_t connect_timeout_ns = 5'000'000'000;  // TCP connect + TLS handshake, or the DTLS handshake
    int tos = 0;  // UDP: IPv4 TOS / IPv6 Traffic Class of everything sent (DSCP << 2 | ECN)
    // RFC 6062 (TCP or TLS only): Allocate asks for a TCP relayed address, and
    // setup is Connect to `peer` plus a data connection bound with ConnectionBind.
    bool tcp_relay = false;
};

class TurnSession {
public:
    explicit TurnSession(SessionConfig cfg);
    ~TurnSession();
    TurnSession(const TurnSession&) = delete;
    TurnSession& operator=(const TurnSession&) = delete;

    // Creates the socket and connects it to the server (over TCP/TLS: the
    // connection and the handshake, over DTLS the handshake, bounded by
    // connect_timeout_ns); false with `err` set and the reason added to
    // cfg.errors.
    bool open(std::string& err);
    int fd() const { return stream_ ? stream_->fd() : fd_; }
    // The TCP/TLS connection, null over UDP and DTLS (tcp_relay: the control connection).
    StreamConn* stream() const { return stream_.get(); }
    // tcp_relay: the data connection, a byte pipe to the peer once bound; else null.
    StreamConn* data() const { return data_.get(); }
    // The DTLS session on the UDP socket, null unless over DTLS.
    DtlsConn* dtls() const { return dtls_.get(); }
    uint16_t local_port() const { return local_port_; }
    const SessionConfig& config() const { return cfg_; }

    // Synchronous requests; each returns an outcome (see above). Errors are
    // also added to cfg.errors.
    int allocate(uint64_t deadline_ns);
    int create_permission(uint64_t deadline_ns);
    int channel_bind(uint64_t deadline_ns);
    int refresh(uint32_t lifetime_s, uint64_t deadline_ns);
    // tcp_relay: Connect to cfg.peer (RFC 6062 section 5.2), a data connection
    // to the server (TLS over TLS, bounded like open()), ConnectionBind with
    // the CONNECTION-ID on it (section 5.4). On any failure the data
    // connection is closed and the allocation given up (deleted when the
    // server answered, else left to end with the control connection).
    int connect_pipe(uint64_t deadline_ns);
    // Allocate + CreatePermission (+ ChannelBind when a channel is set), or
    // with tcp_relay Allocate + connect_pipe(). `on_relayed` gets the relayed
    // address as soon as Allocate succeeds: over RFC 6062 the server connects
    // to the peer during Connect, so the peer must accept that address before.
    int setup(uint64_t deadline_ns, const std::function<void(const Address&)>& on_relayed = {});
    // Closes the data connection (tcp_relay), then Refresh LIFETIME 0 if
    // allocated; true if the server confirmed.
    bool release(uint64_t deadline_ns);

    bool allocated() const { return allocated_; }
    const Address& relayed() const { return relayed_; }
    const Address& mapped() const { return mapped_; }
    uint32_t lifetime_s() const { return lifetime_s_; }

    // Asynchronous refresh cycle while the socket carries traffic: queues
    // Refresh (keeping the allocation), CreatePermission and, with a channel,
    // ChannelBind, each sent immediately.
    void start_refresh_cycle(uint64_t now_ns);
    // A STUN message that arrived on the socket while traffic flows. Returns
    // true if it answered one of the pending asynchronous requests.
    bool on_control(std::span<const uint8_t> datagram, uint64_t now_ns);
    // Counts why a TCP/TLS connection (control or data) or a DTLS session broke (once each).
    void count_break();
    // Retransmits pending asynchronous requests whose timeout expired.
    void poll(uint64_t now_ns);
    size_t pending() const { return pending_.size(); }
    uint64_t async_ok() const { return async_ok_; }
    uint64_t async_failed() const { return async_failed_; }

private:
    struct Pending {
        Request kind;
        std::array<uint8_t, 12> txid;
        uint64_t next_send_ns;
        uint64_t rto_ns;
        int tries;
        int auth_retries;
    };

    size_t build(Request kind, uint32_t lifetime_s, std::span<const uint8_t, 12> txid, uint8_t* buf,
                 size_t cap) const;
    // `via`: the connection the request goes on and is answered on (the data
    // connection's ConnectionBind); null: the session's own socket or connection.
    int transact(Request kind, uint32_t lifetime_s, uint64_t deadline_ns, StreamConn* via = nullptr);
    // Handles a response to `kind`; returns an outcome, or sets `retry` when a
    // 401/438 brought new credentials and the request should be sent again.
    int handle_response(Request kind, const stun::MessageView& m, bool& retry);
    bool send_pending(Pending& p, uint64_t now_ns);
    void count(int o) const;
    // Sends one message: a datagram (a DTLS record), or queued on the stream
    // (`via`, else stream_) and flushed (waiting for room in the queue until `deadline_ns`).
    bool send_message(std::span<const uint8_t> m, uint64_t deadline_ns = 0, StreamConn* via = nullptr);
    // The next message from the server (on `via` if set), waiting until
    // `wait_until`. False on timeout (o = kOk) or when the socket/connection
    // failed (o = kSocket).
    bool next_message(uint64_t wait_until, std::span<const uint8_t>& m, int& o, StreamConn* via = nullptr);

    SessionConfig cfg_;
    int fd_ = -1;
    std::unique_ptr<StreamConn> stream_;
    std::unique_ptr<DtlsConn> dtls_;  // before close(fd_): its close_notify goes out on fd_
    std::unique_ptr<StreamConn> data_;  // tcp_relay: the data connection
    uint32_t connection_id_ = 0;        // tcp_relay: CONNECTION-ID from Connect
    bool break_counted_ = false;
    bool data_break_counted_ = false;
    uint16_t local_port_ = 0;
    std::string realm_;
    std::string nonce_;
    auth::Key key_{};
    bool have_key_ = false;
    bool allocated_ = false;
    Address relayed_{};
    Address mapped_{};
    uint32_t lifetime_s_ = 0;
    uint32_t refresh_lifetime_s_ = 600;
    std::vector<Pending> pending_;
    uint64_t async_ok_ = 0;
    uint64_t async_failed_ = 0;
    std::array<uint8_t, 2048> rx_{};
};

}  // namespace turn::load
