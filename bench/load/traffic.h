// The traffic engine: one TrafficThread owns a subset of the allocations'
// sockets and, for one phase, sends ChannelData or Send indications paced by a
// token bucket (CLOCK_MONOTONIC), receives the echoes (ChannelData or Data
// indications) with recvmmsg, and measures round-trip latency and loss from
// the sequence number and timestamp carried in every payload. It also answers
// for its sockets' control traffic (asynchronous refresh cycles). Over TCP and
// TLS (RFC 8656 3.1) each allocation is a connection: a batch is written as
// one run of whole messages (ChannelData padded to 4, section 12.5) into the
// connection's bounded output queue, and the echoes are cut out of the byte
// stream by the connection's StreamReader; the epoll loop is the same. Over
// DTLS (RFC 7350) the sockets are the UDP ones: each message of a batch is
// sealed into a record of its own and the batch goes out with sendmmsg; each
// datagram from recvmmsg (kernel timestamp kept) is decrypted into its
// message(s). RFC 6062 TCP allocations (Mode::kTcpRelay): the messages are the
// bare payloads, written into each allocation's data connection (a raw byte
// pipe to a TCP echo peer) and cut out of its echo every payload-size bytes;
// the control connection is in the same epoll set for the refresh cycles.
//
// Payload layout (native byte order: only this process reads it):
//   u32 magic | u16 thread | u16 phase | u64 sequence | u64 send time (ns) | zeros
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "histogram.h"
#include "turn_session.h"

namespace turn::load {

// kTcpRelay: RFC 6062 TCP allocation, payloads through its data connection.
enum class Mode : uint8_t { kChannel, kSend, kTcpRelay };

constexpr uint32_t kPayloadMagic = 0x544c4f44;  // "TLOD"
constexpr size_t kPayloadHeader = 24;

// Counters of one thread for one phase, written by that thread only and read
// by the reporter (relaxed atomics; each value only grows).
struct ThreadCounters {
    explicit ThreadCounters(size_t seconds)
        : seconds(seconds),
          sent_by_sec(new std::atomic<uint64_t>[seconds]()),
          back_by_sec(new std::atomic<uint64_t>[seconds]()) {}
    std::atomic<uint64_t> sent{0};         // datagrams handed to the kernel
    std::atomic<uint64_t> send_failed{0};  // offered but refused by our own socket (EAGAIN, ICMP errors)
    std::atomic<uint64_t> received{0};     // unique echoes back
    std::atomic<uint64_t> duplicates{0};
    std::atomic<uint64_t> stale{0};        // echoes from an earlier phase
    std::atomic<uint64_t> foreign{0};      // datagrams that are not ours
    // TCP/TLS connections (reset, EOF, bad frame) or DTLS sessions (close_notify,
    // fatal alert) lost in this phase
    std::atomic<uint64_t> stream_broken{0};
    std::atomic<uint64_t> rx_queue_ns{0};  // sum over echoes of (read by us - kernel receive time)
    SharedHistogram latency;               // round trip, ns
    size_t seconds;
    std::unique_ptr<std::atomic<uint64_t>[]> sent_by_sec;  // by send second
    std::unique_ptr<std::atomic<uint64_t>[]> back_by_sec;  // echoes, by their send second
};

struct Phase {
    uint16_t id = 0;
    uint64_t start_ns = 0;
    uint64_t send_end_ns = 0;   // stop sending
    uint64_t end_ns = 0;        // stop receiving (send_end + grace)
    double rate_pps = 0;        // this thread's share; 0 = as fast as possible
};

class TrafficThread {
public:
    TrafficThread(uint16_t index, Mode mode, size_t payload_size, size_t batch,
                  std::vector<TurnSession*> sessions, uint64_t refresh_interval_ns, uint64_t first_refresh_ns);
    ~TrafficThread();
    TrafficThread(const TrafficThread&) = delete;
    TrafficThread& operator=(const TrafficThread&) = delete;

    void run(const Phase& phase, ThreadCounters& c);

private:
    void build_templates();
    void send_batch(size_t session, size_t n, uint64_t now, const Phase& ph, ThreadCounters& c);
    // `tag`: the epoll tag, a session index (kTcpRelay: with kControlTag for its control connection).
    void drain(uint64_t tag, const Phase& ph, ThreadCounters& c);
    // One connection of a session: its TURN stream, its RFC 6062 data
    // connection (`pipe`: payloads back to back) or control connection.
    void drain_stream(size_t session, StreamConn& conn, bool pipe, const Phase& ph, ThreadCounters& c);
    // The connection a session's messages go out on: its TURN stream, or with
    // kTcpRelay its data connection; null over UDP and DTLS.
    StreamConn* traffic_stream(size_t session) const;
    void send_stream(size_t session, size_t n, uint64_t now, const Phase& ph, ThreadCounters& c);
    // DTLS: the messages of the decrypted records of one datagram to on_datagram.
    void open_records(size_t session, std::span<const uint8_t> datagram, uint64_t now, uint64_t rx, const Phase& ph,
                      ThreadCounters& c);
    // A TCP/TLS connection or DTLS session that broke leaves epoll and is
    // counted, once (kTcpRelay: both connections leave, either one broke).
    void retire(size_t session, ThreadCounters& c);
    // One message at `f`: the session's template with the next sequence
    // number and `now` stamped into its payload (and into the transaction ID
    // of IPv4 Send indications).
    void fill_message(uint8_t* f, size_t session, uint64_t now, const Phase& ph);
    // `done` of `n` messages went out at `now`; the rest count as send_failed.
    static void count_sent(size_t n, size_t done, uint64_t now, const Phase& ph, ThreadCounters& c);
    // Stream: EPOLLOUT only while output is queued; a broken connection leaves epoll.
    void update_stream_events(size_t session, ThreadCounters& c);
    void on_datagram(size_t session, const uint8_t* data, size_t len, uint64_t now, uint64_t rx,
                     const Phase& ph, ThreadCounters& c);
    // `now`: when we read the datagram; `rx`: when the kernel received it
    // (SO_TIMESTAMPNS), which latency is measured to, so that time the
    // datagram waited for this thread is not charged to the relay.
    void on_payload(const uint8_t* p, size_t len, uint64_t now, uint64_t rx, const Phase& ph, ThreadCounters& c);

    uint16_t index_;
    Mode mode_;
    size_t payload_size_;
    size_t batch_;
    std::vector<TurnSession*> sessions_;
    uint64_t refresh_interval_ns_;
    uint64_t next_refresh_ns_;
    int epfd_ = -1;

    std::vector<std::vector<uint8_t>> templates_;  // per session, whole datagram
    std::vector<size_t> payload_offset_;           // per session
    std::vector<bool> patch_txid_;                 // per session: write the sequence into the transaction ID
    std::vector<uint8_t> out_armed_;               // per session (stream): EPOLLOUT registered
    std::vector<uint8_t> dead_;                    // per session (stream, DTLS): broken, out of epoll
    uint64_t next_seq_ = 0;
    std::vector<uint64_t> seen_;                   // bitmap of echoed sequence numbers
    std::vector<uint8_t> tx_;                      // batch * frame
    std::vector<uint8_t> sealed_;                  // DTLS: batch * sealed_frame, the records of tx_
    std::vector<uint8_t> rx_;
    size_t frame_ = 0;
    size_t sealed_frame_ = 0;
};

}  // namespace turn::load
