#include "traffic.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"
#include "common/bytes.h"
#include "stun/builder.h"
#include "stun/message.h"
#include "turn/channel_data.h"

namespace turn::load {

namespace {
constexpr size_t kRxBatch = 64;
constexpr size_t kRxFrame = 9216;
constexpr uint64_t kPollEveryNs = 50 * kNsPerMs;
// epoll tag of a kTcpRelay session's control connection (its data connection has the bare index).
constexpr uint64_t kControlTag = uint64_t{1} << 63;
}  // namespace

TrafficThread::TrafficThread(uint16_t index, Mode mode, size_t payload_size, size_t batch,
                             std::vector<TurnSession*> sessions, uint64_t refresh_interval_ns,
                             uint64_t first_refresh_ns)
    : index_(index),
      mode_(mode),
      payload_size_(payload_size),
      batch_(batch),
      sessions_(std::move(sessions)),
      refresh_interval_ns_(refresh_interval_ns),
      next_refresh_ns_(first_refresh_ns) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    out_armed_.assign(sessions_.size(), 0);
    dead_.assign(sessions_.size(), 0);
    for (size_t i = 0; i < sessions_.size(); ++i) {
        const int one = 1;
        if (sessions_[i]->stream() == nullptr) {
            setsockopt(sessions_[i]->fd(), SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (mode_ == Mode::kTcpRelay) {
            // The pipe carries our fixed-size payloads back to back from now on.
            sessions_[i]->data()->reader().cut_fixed(payload_size_);
            epoll_ctl(epfd_, EPOLL_CTL_ADD, sessions_[i]->data()->fd(), &ev);
            ev.data.u64 = i | kControlTag;
        }
        epoll_ctl(epfd_, EPOLL_CTL_ADD, sessions_[i]->fd(), &ev);
    }
    build_templates();
    rx_.resize(kRxBatch * kRxFrame);
}

TrafficThread::~TrafficThread() {
    if (epfd_ >= 0) {
        close(epfd_);
    }
}

void TrafficThread::build_templates() {
    frame_ = 0;
    for (TurnSession* s : sessions_) {
        std::vector<uint8_t> t(payload_size_ + 128, 0);
        size_t off = 0;
        size_t len = 0;
        if (mode_ == Mode::kTcpRelay) {
            len = payload_size_;  // no TURN framing inside the pipe
        } else if (mode_ == Mode::kChannel) {
            write_channel_data_header(t.data(), s->config().channel, static_cast<uint16_t>(payload_size_));
            off = kChannelDataHeader;
            len = kChannelDataHeader + payload_size_;
            if (s->stream() != nullptr) {
                len = (len + 3) & ~size_t{3};  // mandatory zero padding over streams (RFC 8656 12.5)
            }
        } else {
            const std::array<uint8_t, 12> txid{};
            stun::MessageBuilder b({t.data(), t.size()}, stun::Method::kSend, stun::Class::kIndication, txid);
            b.add_xor_address(stun::attr::kXorPeerAddress, s->config().peer);
            const auto data = b.reserve(stun::attr::kData, payload_size_);
            off = static_cast<size_t>(data.data() - t.data());
            len = b.size();
        }
        t.resize(len);
        // An IPv6 XOR-PEER-ADDRESS is XORed with the transaction ID (RFC 8489
        // 14.2), so only IPv4 Send indications get a fresh ID per packet.
        patch_txid_.push_back(mode_ == Mode::kSend && s->config().peer.is_v4());
        templates_.push_back(std::move(t));
        payload_offset_.push_back(off);
        frame_ = std::max(frame_, len);
    }
    tx_.assign(batch_ * frame_, 0);
    if (std::any_of(sessions_.begin(), sessions_.end(), [](const TurnSession* s) { return s->dtls() != nullptr; })) {
        sealed_frame_ = frame_ + DtlsConn::kMaxOverhead;
        sealed_.assign(batch_ * sealed_frame_, 0);
    }
}

StreamConn* TrafficThread::traffic_stream(size_t si) const {
    return mode_ == Mode::kTcpRelay ? sessions_[si]->data() : sessions_[si]->stream();
}

void TrafficThread::send_batch(size_t si, size_t n, uint64_t now, const Phase& ph, ThreadCounters& c) {
    if (sessions_[si]->stream() != nullptr) {
        send_stream(si, n, now, ph, c);
        return;
    }
    mmsghdr msgs[64];
    iovec iov[64];
    n = std::min<size_t>({n, 64, batch_});
    const auto& tpl = templates_[si];
    DtlsConn* dtls = dead_[si] ? nullptr : sessions_[si]->dtls();
    size_t m = 0;  // datagrams to send: all n, less messages a broken DTLS session did not seal
    for (size_t i = 0; i < n; ++i) {
        uint8_t* f = tx_.data() + i * frame_;
        fill_message(f, si, now, ph);
        iov[m] = {f, tpl.size()};
        if (sessions_[si]->dtls() != nullptr) {
            uint8_t* rec = sealed_.data() + i * sealed_frame_;
            const size_t len = dtls != nullptr ? dtls->seal({f, tpl.size()}, {rec, sealed_frame_}) : 0;
            if (len == 0) {
                continue;  // offered, not sent: counted in send_failed
            }
            iov[m] = {rec, len};
        }
        msgs[m] = {};
        msgs[m].msg_hdr.msg_iov = &iov[m];
        msgs[m].msg_hdr.msg_iovlen = 1;
        ++m;
    }
    if (dtls != nullptr && dtls->broken()) {
        retire(si, c);  // SSL_write failed: the session carries nothing more
    }
    size_t done = 0;
    while (done < m) {
        const int r = sendmmsg(sessions_[si]->fd(), msgs + done, static_cast<unsigned>(m - done), MSG_DONTWAIT);
        if (r <= 0) {
            break;
        }
        done += static_cast<size_t>(r);
    }
    count_sent(n, done, now, ph, c);
}

void TrafficThread::fill_message(uint8_t* f, size_t si, uint64_t now, const Phase& ph) {
    const auto& tpl = templates_[si];
    std::memcpy(f, tpl.data(), tpl.size());
    const uint64_t seq = next_seq_++;
    if (patch_txid_[si]) {
        std::memcpy(f + 12, &seq, sizeof seq);  // a distinct transaction ID per indication
    }
    uint8_t* p = f + payload_offset_[si];
    const uint32_t magic = kPayloadMagic;
    std::memcpy(p, &magic, 4);
    std::memcpy(p + 4, &index_, 2);
    std::memcpy(p + 6, &ph.id, 2);
    std::memcpy(p + 8, &seq, 8);
    std::memcpy(p + 16, &now, 8);
}

void TrafficThread::count_sent(size_t n, size_t done, uint64_t now, const Phase& ph, ThreadCounters& c) {
    const size_t sec = std::min<size_t>((now - ph.start_ns) / kNsPerSec, c.seconds - 1);
    c.sent_by_sec[sec].store(c.sent_by_sec[sec].load(std::memory_order_relaxed) + done, std::memory_order_relaxed);
    c.sent.store(c.sent.load(std::memory_order_relaxed) + done, std::memory_order_relaxed);
    if (done < n) {
        c.send_failed.store(c.send_failed.load(std::memory_order_relaxed) + (n - done), std::memory_order_relaxed);
    }
}

// Whole messages back to back in tx_, as many as the output queue takes; the
// rest is refused like a datagram the socket buffer refuses (send_failed).
void TrafficThread::send_stream(size_t si, size_t n, uint64_t now, const Phase& ph, ThreadCounters& c) {
    n = std::min<size_t>(n, 64);
    StreamConn& conn = *traffic_stream(si);
    const auto& tpl = templates_[si];
    const size_t fit = dead_[si] ? 0 : std::min(n, conn.out_space() / tpl.size());
    if (ph.rate_pps <= 0) {
        n = fit;  // as fast as the relay takes it: a full queue is back-pressure, not loss
    }
    for (size_t i = 0; i < fit; ++i) {
        fill_message(tx_.data() + i * tpl.size(), si, now, ph);  // back to back on the stream
    }
    size_t done = 0;
    if (fit > 0) {
        // write() queues all or nothing and flushes; on a broken connection
        // the queued copy is simply never sent (counted lost, as it is).
        if (conn.write({tx_.data(), fit * tpl.size()})) {
            done = fit;
        } else {
            next_seq_ -= fit;  // never queued: these sequence numbers were not offered
        }
        update_stream_events(si, c);
    }
    count_sent(n, done, now, ph, c);
}

void TrafficThread::retire(size_t si, ThreadCounters& c) {
    if (!dead_[si]) {
        dead_[si] = 1;
        epoll_ctl(epfd_, EPOLL_CTL_DEL, sessions_[si]->fd(), nullptr);
        if (mode_ == Mode::kTcpRelay) {
            epoll_ctl(epfd_, EPOLL_CTL_DEL, sessions_[si]->data()->fd(), nullptr);
        }
        sessions_[si]->count_break();
        c.stream_broken.store(c.stream_broken.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
}

void TrafficThread::update_stream_events(size_t si, ThreadCounters& c) {
    StreamConn& conn = *traffic_stream(si);
    if (dead_[si]) {
        return;
    }
    if (conn.broken()) {
        retire(si, c);
        return;
    }
    const uint8_t want = conn.want_write() ? 1 : 0;
    if (want != out_armed_[si]) {
        epoll_event ev{};
        ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
        ev.data.u64 = si;
        epoll_ctl(epfd_, EPOLL_CTL_MOD, conn.fd(), &ev);
        out_armed_[si] = want;
    }
}

// Reads what the connection has (bounded rounds, so one busy connection does
// not starve the others; level-triggered epoll calls again) and hands every
// whole message to on_datagram (an RFC 6062 pipe's payloads straight to
// on_payload). Latency is measured to this read: there is no per-message
// kernel timestamp on a byte stream (and none through TLS).
void TrafficThread::drain_stream(size_t si, StreamConn& conn, bool pipe, const Phase& ph, ThreadCounters& c) {
    if (dead_[si]) {
        return;
    }
    if (conn.want_write()) {
        conn.flush();
    }
    for (int round = 0; round < 16 || conn.has_pending_input(); ++round) {
        const IoStatus io = conn.read_once();
        const uint64_t now = mono_ns();
        std::span<const uint8_t> m;
        StreamReadStatus st;
        while ((st = conn.reader().next(m)) == StreamReadStatus::kMessage) {
            if (pipe) {
                on_payload(m.data(), m.size(), now, now, ph, c);
            } else {
                on_datagram(si, m.data(), m.size(), now, now, ph, c);
            }
        }
        if (st != StreamReadStatus::kNeedMore) {
            conn.mark_broken(to_string(st));  // malformed frame: no next boundary to find
        }
        if (io != IoStatus::kOk || conn.broken()) {
            break;
        }
        if (round > 64) {
            break;  // bound even if OpenSSL keeps reporting buffered input
        }
    }
    if (&conn == traffic_stream(si)) {
        update_stream_events(si, c);
    } else if (conn.broken()) {
        retire(si, c);  // the control connection: the allocation is gone with it
    }
}

void TrafficThread::on_payload(const uint8_t* p, size_t len, uint64_t now, uint64_t rx, const Phase& ph,
                               ThreadCounters& c) {
    auto bump = [](std::atomic<uint64_t>& a) { a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); };
    uint32_t magic = 0;
    uint16_t thread = 0;
    uint16_t phase = 0;
    uint64_t seq = 0;
    uint64_t ts = 0;
    if (len < kPayloadHeader) {
        bump(c.foreign);
        return;
    }
    std::memcpy(&magic, p, 4);
    std::memcpy(&thread, p + 4, 2);
    std::memcpy(&phase, p + 6, 2);
    std::memcpy(&seq, p + 8, 8);
    std::memcpy(&ts, p + 16, 8);
    if (magic != kPayloadMagic || thread != index_ || ts > now) {
        bump(c.foreign);
        return;
    }
    // Phase first: a late echo of the last phase has a sequence number this
    // one has not reached yet (a backlog drained over TCP, typically).
    if (phase != ph.id || ts < ph.start_ns) {
        bump(c.stale);
        return;
    }
    if (seq >= next_seq_) {
        bump(c.foreign);
        return;
    }
    const size_t word = seq / 64;
    if (word >= seen_.size()) {
        seen_.resize(std::max(word + 1, seen_.size() * 2), 0);
    }
    const uint64_t bit = uint64_t{1} << (seq % 64);
    if ((seen_[word] & bit) != 0) {
        bump(c.duplicates);
        return;
    }
    seen_[word] |= bit;
    bump(c.received);
    rx = std::clamp(rx, ts, now);  // the clock conversion may be off by a few ns
    c.latency.record(rx - ts);
    c.rx_queue_ns.store(c.rx_queue_ns.load(std::memory_order_relaxed) + (now - rx), std::memory_order_relaxed);
    const size_t sec = std::min<size_t>((ts - ph.start_ns) / kNsPerSec, c.seconds - 1);
    bump(c.back_by_sec[sec]);
}

void TrafficThread::on_datagram(size_t si, const uint8_t* d, size_t len, uint64_t now, uint64_t rx,
                                const Phase& ph, ThreadCounters& c) {
    if (len > 0 && is_channel_data(d[0])) {
        ChannelDataView v;
        if (parse_channel_data({d, len}, v) == ChannelDataError::kOk) {
            on_payload(v.payload.data(), v.payload.size(), now, rx, ph, c);
            return;
        }
    } else if (stun::looks_like_stun({d, len})) {
        stun::MessageView m;
        if (stun::parse({d, len}, m) == stun::ParseError::kOk) {
            if (m.is(stun::Method::kData, stun::Class::kIndication)) {
                if (const auto* a = m.find(stun::attr::kData); a != nullptr) {
                    const auto v = m.value(*a);
                    on_payload(v.data(), v.size(), now, rx, ph, c);
                    return;
                }
            } else if (sessions_[si]->on_control({d, len}, now)) {
                return;
            }
        }
    }
    c.foreign.store(c.foreign.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Every record of the datagram (a server may put several in one); a DTLS
// session that ends here (close_notify, fatal alert) is retired.
void TrafficThread::open_records(size_t si, std::span<const uint8_t> datagram, uint64_t now, uint64_t rx,
                                 const Phase& ph, ThreadCounters& c) {
    DtlsConn& d = *sessions_[si]->dtls();
    if (dead_[si]) {
        return;
    }
    d.feed(datagram);
    std::span<const uint8_t> m;
    while (d.read(m, false) == IoStatus::kOk) {
        on_datagram(si, m.data(), m.size(), now, rx, ph, c);
    }
    if (d.broken()) {
        retire(si, c);
    }
}

void TrafficThread::drain(uint64_t tag, const Phase& ph, ThreadCounters& c) {
    const size_t si = static_cast<size_t>(tag & ~kControlTag);
    if ((tag & kControlTag) != 0) {
        drain_stream(si, *sessions_[si]->stream(), false, ph, c);  // answers to refresh cycles
        return;
    }
    if (StreamConn* conn = traffic_stream(si)) {
        drain_stream(si, *conn, mode_ == Mode::kTcpRelay, ph, c);
        return;
    }
    const bool dtls = sessions_[si]->dtls() != nullptr;
    mmsghdr msgs[kRxBatch];
    iovec iov[kRxBatch];
    union Control {
        cmsghdr align;
        char buf[CMSG_SPACE(sizeof(timespec))];
    };
    Control ctrl[kRxBatch];
    for (int round = 0; round < 8; ++round) {
        for (size_t i = 0; i < kRxBatch; ++i) {
            iov[i] = {rx_.data() + i * kRxFrame, kRxFrame};
            msgs[i] = {};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i].buf;
        }
        const int n = recvmmsg(sessions_[si]->fd(), msgs, kRxBatch, MSG_DONTWAIT, nullptr);
        if (n <= 0) {
            return;  // EAGAIN, or a queued ICMP error (ECONNREFUSED) consumed
        }
        // Kernel timestamps are CLOCK_REALTIME; map them onto CLOCK_MONOTONIC
        // with the offset between the two clocks read back to back.
        const uint64_t now = mono_ns();
        const int64_t offset = static_cast<int64_t>(real_ns()) - static_cast<int64_t>(now);
        for (int i = 0; i < n; ++i) {
            uint64_t rx = now;
            for (cmsghdr* cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm != nullptr;
                 cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    timespec ts{};
                    std::memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    const int64_t real = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
                    rx = static_cast<uint64_t>(std::max<int64_t>(0, real - offset));
                }
            }
            const uint8_t* d = rx_.data() + static_cast<size_t>(i) * kRxFrame;
            if (dtls) {
                open_records(si, {d, msgs[i].msg_len}, now, rx, ph, c);
            } else {
                on_datagram(si, d, msgs[i].msg_len, now, rx, ph, c);
            }
        }
        if (static_cast<size_t>(n) < kRxBatch) {
            return;
        }
    }
}

void TrafficThread::run(const Phase& ph, ThreadCounters& c) {
    next_seq_ = 0;
    seen_.assign(1024, 0);
    const bool unlimited = ph.rate_pps <= 0;
    const double per_ns = ph.rate_pps / 1e9;
    // Wake up for at least `chunk` tokens (<= 200 us of traffic) so that high
    // rates go out in batches, and allow a 10 ms burst to catch up after the
    // thread was descheduled on a busy machine.
    const double chunk = std::clamp(ph.rate_pps * 200e-6, 1.0, static_cast<double>(batch_));
    const double burst = std::max(static_cast<double>(batch_), ph.rate_pps * 0.01);
    double tokens = 0;
    uint64_t last = ph.start_ns;
    size_t rr = 0;
    uint64_t next_poll = 0;
    epoll_event evs[64];

    for (;;) {
        uint64_t now = mono_ns();
        if (now >= ph.end_ns) {
            break;
        }
        const bool sending = now >= ph.start_ns && now < ph.send_end_ns;
        bool stalled = false;  // unlimited over streams: every output queue full
        if (sending) {
            if (unlimited) {
                const uint64_t before = c.sent.load(std::memory_order_relaxed);
                for (size_t k = 0; k < sessions_.size(); ++k) {
                    send_batch(rr, batch_, now, ph, c);
                    rr = (rr + 1) % sessions_.size();
                }
                stalled = c.sent.load(std::memory_order_relaxed) == before;
            } else {
                tokens = std::min(burst, tokens + static_cast<double>(now - last) * per_ns);
                last = now;
                while (tokens >= 1.0) {
                    const size_t n = std::min(batch_, static_cast<size_t>(tokens));
                    send_batch(rr, n, now, ph, c);
                    rr = (rr + 1) % sessions_.size();
                    tokens -= static_cast<double>(n);
                }
            }
        } else if (now < ph.start_ns) {
            last = now;
        }

        uint64_t timeout_ns = 0;
        if (!sending) {
            const uint64_t until = now < ph.start_ns ? ph.start_ns : ph.end_ns;
            timeout_ns = std::min<uint64_t>(until - now, 10 * kNsPerMs);
        } else if (stalled) {
            timeout_ns = kNsPerMs;  // EPOLLOUT (armed on every full queue) ends it sooner
        } else if (!unlimited) {
            timeout_ns = static_cast<uint64_t>(std::max(0.0, (chunk - tokens) / per_ns));
            timeout_ns = std::min<uint64_t>(timeout_ns, std::min<uint64_t>(2 * kNsPerMs, ph.send_end_ns - now));
        }
        const timespec ts{static_cast<time_t>(timeout_ns / kNsPerSec), static_cast<long>(timeout_ns % kNsPerSec)};
        const int n = epoll_pwait2(epfd_, evs, 64, &ts, nullptr);
        for (int i = 0; i < n; ++i) {
            drain(evs[i].data.u64, ph, c);
        }

        now = mono_ns();
        if (now >= next_poll) {
            next_poll = now + kPollEveryNs;
            const bool cycle = refresh_interval_ns_ != 0 && now >= next_refresh_ns_;
            if (cycle) {
                next_refresh_ns_ = now + refresh_interval_ns_;
            }
            for (size_t i = 0; i < sessions_.size(); ++i) {
                TurnSession* s = sessions_[i];
                if (dead_[i]) {
                    continue;
                }
                if (cycle && s->allocated()) {
                    s->start_refresh_cycle(now);
                }
                s->poll(now);
                if (mode_ == Mode::kTcpRelay && s->stream()->want_write()) {
                    s->stream()->flush();  // a refresh request the control connection's queue still holds
                }
                if (s->stream() != nullptr) {
                    update_stream_events(i, c);
                }
            }
        }
    }
}

}  // namespace turn::load
