// turn-load: load harness for any TURN server over UDP, TCP, TLS or DTLS. See README.md.
//
// Flow: parse flags -> start echo peers -> set up N allocations in parallel
// (401 -> authenticated Allocate -> CreatePermission [-> ChannelBind]; RFC
// 6062: Allocate -> Connect -> data connection -> ConnectionBind) ->
// one traffic phase per offered rate (progress every second, churn alongside)
// -> delete the allocations -> JSON and plots. Every phase is bounded by the
// flags, and a watchdog ends the process if the whole run overshoots.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "churn.h"
#include "clock.h"
#include "credentials.h"
#include "echo_peer.h"
#include "options.h"
#include "report.h"
#include "tcp_echo_peer.h"
#include "traffic.h"
#include "turn_session.h"
#include "udp_drops.h"

namespace turn::load {
namespace {

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    char buf[32];
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

void sleep_until(uint64_t t_ns) {
    for (uint64_t now = mono_ns(); now < t_ns; now = mono_ns()) {
        const uint64_t d = t_ns - now;
        const timespec ts{static_cast<time_t>(d / kNsPerSec), static_cast<long>(d % kNsPerSec)};
        nanosleep(&ts, nullptr);
    }
}

struct Counters {
    uint64_t sent = 0, failed = 0, received = 0;
    Histogram latency;
};

double self_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// utime + stime of a process, all threads (fields 14 and 15 of /proc/PID/stat).
double process_cpu_s(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (pid <= 0 || !std::getline(f, line)) {
        return -1;
    }
    const auto paren = line.rfind(')');  // the command name may contain spaces
    if (paren == std::string::npos) {
        return -1;
    }
    std::istringstream rest(line.substr(paren + 2));
    std::string field;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) {
            utime = std::stoull(field);
        } else if (i == 15) {
            stime = std::stoull(field);
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

Counters snapshot(const std::vector<std::unique_ptr<ThreadCounters>>& cs) {
    Counters out;
    for (const auto& c : cs) {
        out.sent += c->sent.load(std::memory_order_relaxed);
        out.failed += c->send_failed.load(std::memory_order_relaxed);
        out.received += c->received.load(std::memory_order_relaxed);
        c->latency.snapshot_into(out.latency);
    }
    return out;
}

class Run {
public:
    explicit Run(const Options& o) : o_(o) {}

    int main() {
        result_.date_utc = utc_now();
        fill_config();
        const uint64_t t_start = mono_ns();
        // Hard bound on the whole run: setup, phases (each duration + grace),
        // teardown and plotting, plus slack. Overshooting means a bug or a
        // wedged server; exit rather than hang.
        const size_t nphases = o_.setup_only ? 0 : std::max<size_t>(1, o_.sweep.size());
        const double bound_s = (o_.setup_only ? o_.duration_s : o_.setup_timeout_s) +
                               static_cast<double>(nphases) * (o_.duration_s + o_.grace_s + 0.5) + 20.0;
        hard_deadline_ = t_start + static_cast<uint64_t>(bound_s * 1e9);
        std::thread([d = hard_deadline_] {
            sleep_until(d);
            std::fprintf(stderr, "turn-load: run exceeded its bound; exiting\n");
            _exit(3);
        }).detach();

        std::string err;
        if (o_.transport == Transport::kTls || o_.transport == Transport::kDtls) {
            const bool datagram = o_.transport == Transport::kDtls;
            tls_ = TlsClient::create({!o_.tls_no_verify, o_.tls_ca, o_.tls_name, datagram}, err);
            if (!tls_) {
                std::cerr << "turn-load: " << err << "\n";
                return 1;
            }
        }
        if (tcp_relay()) {
            if (!tcp_peers_.open(o_.peer, o_.peer_sockets, err)) {
                std::cerr << "turn-load: " << err << "\n";
                return 1;
            }
            tcp_peers_.start(o_.peer_threads, hard_deadline_);
        } else {
            if (!peers_.open(o_.peer, o_.peer_sockets, err, o_.peer_netns, o_.tos)) {
                std::cerr << "turn-load: " << err << "\n";
                return 1;
            }
            peers_.start(o_.peer_threads, hard_deadline_);
        }
        make_sessions();
        if (!setup(err)) {
            std::cerr << "turn-load: " << err << "\n";
            teardown();
            finish();
            return 1;
        }
        if (!o_.setup_only) {
            traffic();
        }
        teardown();
        peers_.stop();
        tcp_peers_.stop();
        return finish();
    }

private:
    bool tcp_relay() const { return o_.mode == Mode::kTcpRelay; }

    // The echo peers must know a relayed address's IP before it sends to
    // them (over RFC 6062 the server connects to the peer during Connect).
    void allow_relayed(const Address& relayed) {
        if (tcp_relay()) {
            tcp_peers_.allow_ip(relayed);
        } else {
            peers_.allow_ip(relayed);
        }
    }

    void fill_config() {
        auto& c = result_.config;
        c["server"] = o_.server.to_string();
        c["transport"] = std::string(to_string(o_.transport));
        if (o_.transport == Transport::kTls || o_.transport == Transport::kDtls) {
            c["tls_verify"] = o_.tls_no_verify ? "false" : "true";
        }
        c["auth"] = o_.rest_secret.empty() ? "long-term" : "rest";
        c["allocations"] = std::to_string(o_.allocations);
        c["mode"] = o_.mode_text;
        c["rate"] = std::to_string(o_.rate);
        c["size"] = std::to_string(o_.size);
        c["duration_s"] = std::to_string(o_.duration_s);
        c["threads"] = std::to_string(o_.threads);
        c["peer_threads"] = std::to_string(o_.peer_threads);
        c["peer_sockets"] = std::to_string(o_.peer_sockets);
        c["peer_addr"] = o_.peer.ip_string();
        c["peer_transport"] = tcp_relay() ? "tcp" : "udp";
        if (!o_.peer_netns.empty()) {
            c["peer_netns"] = o_.peer_netns;
        }
        c["batch"] = std::to_string(o_.batch);
        c["tos"] = std::to_string(o_.tos);
        c["latency"] = o_.transport == Transport::kTcp || o_.transport == Transport::kTls
                           ? "round trip: payload send time (CLOCK_MONOTONIC) to turn-load's read of the stream"
                           : "round trip: payload send time (CLOCK_MONOTONIC) to kernel receive time (SO_TIMESTAMPNS)";
        c["grace_s"] = std::to_string(o_.grace_s);
        if (!o_.sweep_text.empty()) {
            c["sweep"] = o_.sweep_text;
        }
        if (o_.churn_rate > 0) {
            c["churn"] = std::to_string(o_.churn_rate);
        }
        c["setup_only"] = o_.setup_only ? "true" : "false";
    }

    Credentials credentials() const {
        if (!o_.rest_secret.empty()) {
            return rest_credentials(o_.rest_secret, o_.rest_name, static_cast<uint64_t>(std::time(nullptr)),
                                    o_.rest_ttl_s);
        }
        return {o_.user, o_.password};
    }

    SessionConfig session_config(uint64_t i) {
        SessionConfig sc;
        sc.server = o_.server;
        sc.creds = credentials();
        sc.realm = o_.realm;
        sc.peer = tcp_relay() ? tcp_peers_.address(i % tcp_peers_.size()) : peers_.address(i % peers_.size());
        sc.channel = o_.mode == Mode::kChannel ? static_cast<uint16_t>(0x4000 + i % 0x1000) : 0;
        sc.tcp_relay = tcp_relay();
        sc.errors = &errors_;
        sc.transport = o_.transport;
        sc.tls = tls_.get();
        sc.tos = o_.tos;
        return sc;
    }

    void make_sessions() {
        for (size_t i = 0; i < o_.allocations; ++i) {
            sessions_.push_back(std::make_unique<TurnSession>(session_config(i)));
        }
    }

    // Runs fn(thread, session) over all sessions, split across o_.threads threads.
    template <typename Fn>
    void parallel(Fn fn) {
        std::vector<std::thread> ts;
        for (size_t t = 0; t < o_.threads; ++t) {
            ts.emplace_back([&, t] {
                for (size_t i = t; i < sessions_.size(); i += o_.threads) {
                    fn(t, *sessions_[i]);
                }
            });
        }
        for (auto& t : ts) {
            t.join();
        }
    }

    bool setup(std::string& err) {
        auto& s = result_.setup;
        s.requested = sessions_.size();
        const uint64_t deadline = mono_ns() + static_cast<uint64_t>(
                                                  (o_.setup_only ? o_.duration_s : o_.setup_timeout_s) * 1e9);
        std::vector<Histogram> lat(o_.threads);
        std::atomic<uint64_t> ok{0};
        std::atomic<uint64_t> failed{0};
        std::string open_err;
        uint64_t open_failed = 0;
        std::mutex mu;
        const uint64_t t0 = mono_ns();
        parallel([&](size_t t, TurnSession& ses) {
            std::string e;
            const uint64_t a = mono_ns();
            if (a >= deadline) {
                failed++;  // out of set-up time (e.g. connects that time out): do not start more
                return;
            }
            if (!ses.open(e)) {
                std::lock_guard lock(mu);
                open_err = e;
                open_failed++;
                failed++;
                return;
            }
            if (ses.setup(deadline, [this](const Address& relayed) { allow_relayed(relayed); }) == outcome::kOk) {
                lat[t].record(mono_ns() - a);
                ok++;
            } else {
                failed++;
            }
        });
        s.elapsed_s = static_cast<double>(mono_ns() - t0) / 1e9;
        s.ok = ok;
        s.failed = failed;
        s.rate_per_s = s.elapsed_s > 0 ? static_cast<double>(s.ok) / s.elapsed_s : 0;
        for (auto& h : lat) {
            s.latency.merge(h);
        }
        if (!o_.quiet) {
            std::fprintf(stderr, "setup: %lu/%lu allocations in %.3f s (%.0f/s), p50 %.2f ms, p99 %.2f ms\n",
                         static_cast<unsigned long>(s.ok), static_cast<unsigned long>(s.requested), s.elapsed_s,
                         s.rate_per_s, static_cast<double>(s.latency.percentile(50)) / 1e6,
                         static_cast<double>(s.latency.percentile(99)) / 1e6);
        }
        // Over TCP/TLS/DTLS a connection that cannot be made (refused,
        // handshake failure) is a set-up error of the run, not a figure: stop with it.
        if (o_.transport != Transport::kUdp && open_failed > 0) {
            err = std::to_string(open_failed) + " of " + std::to_string(s.requested) + " " +
                  std::string(to_string(o_.transport)) + " connections could not be set up: " + open_err;
            return false;
        }
        if (s.ok == 0) {
            err = "no allocation could be set up";
            if (!open_err.empty()) {
                err += " (" + open_err + ")";
            }
            const auto e = errors_.snapshot();
            for (const auto& [k, v] : e) {
                err += "; " + k + ": " + std::to_string(v);
            }
            return false;
        }
        return true;
    }

    void traffic() {
        // Only allocations that are up carry traffic; spread them over threads.
        std::vector<std::vector<TurnSession*>> share(o_.threads);
        size_t k = 0;
        for (auto& s : sessions_) {
            if (s->allocated()) {
                share[k++ % o_.threads].push_back(s.get());
            }
        }
        // Refresh well inside the shortest lifetime the server granted (and
        // the 300 s permission lifetime, RFC 8656 9).
        double interval_s = o_.refresh_interval_s;
        for (const auto& s : sessions_) {
            if (s->allocated() && s->lifetime_s() > 0) {
                interval_s = std::min(interval_s, s->lifetime_s() / 2.0);
            }
        }
        const uint64_t refresh_ns = static_cast<uint64_t>(std::max(1.0, interval_s) * 1e9);
        for (size_t t = 0; t < o_.threads; ++t) {
            if (!share[t].empty()) {
                workers_.push_back(std::make_unique<TrafficThread>(static_cast<uint16_t>(t), o_.mode, o_.size,
                                                                   o_.batch, share[t], refresh_ns,
                                                                   mono_ns() + refresh_ns));
            }
        }
        const std::vector<double> rates = o_.sweep.empty() ? std::vector<double>{o_.rate} : o_.sweep;
        for (size_t i = 0; i < rates.size(); ++i) {
            result_.phases.push_back(phase(static_cast<uint16_t>(i + 1), rates[i]));
        }
        for (const auto& s : sessions_) {
            result_.async_ok += s->async_ok();
            result_.async_failed += s->async_failed();
        }
    }

    PhaseResult phase(uint16_t id, double rate) {
        PhaseResult r;
        r.target_pps = rate;
        r.duration_s = o_.duration_s;
        const size_t secs = static_cast<size_t>(std::ceil(o_.duration_s)) + 1;
        std::vector<std::unique_ptr<ThreadCounters>> counters;
        Phase ph;
        ph.id = id;
        ph.start_ns = mono_ns() + 50 * kNsPerMs;
        ph.send_end_ns = ph.start_ns + static_cast<uint64_t>(o_.duration_s * 1e9);
        ph.end_ns = ph.send_end_ns + static_cast<uint64_t>(o_.grace_s * 1e9);
        ph.rate_pps = rate / static_cast<double>(workers_.size());
        std::unordered_set<uint16_t> ports;
        for (const auto& s : sessions_) {
            if (s->stream() == nullptr) {
                ports.insert(s->local_port());  // UDP drop counters: the client's UDP (and DTLS) sockets only
            }
        }
        for (size_t i = 0; i < peers_.size(); ++i) {
            ports.insert(peers_.address(i).port);
        }
        const UdpDrops drops0 = read_udp_drops(ports);
        const double cpu0 = self_cpu_s();
        std::vector<double> srv0;
        std::vector<double> watch0;
        for (const int pid : o_.server_pids) {
            srv0.push_back(process_cpu_s(pid));
        }
        for (const int pid : o_.watch_pids) {
            watch0.push_back(process_cpu_s(pid));
        }
        std::vector<std::thread> ts;
        for (auto& w : workers_) {
            counters.push_back(std::make_unique<ThreadCounters>(secs));
            ts.emplace_back([&w, &ph, c = counters.back().get()] { w->run(ph, *c); });
        }
        std::unique_ptr<Churner> churner;
        if (o_.churn_rate > 0) {
            churner = std::make_unique<Churner>(
                [this](uint64_t i) {
                    // Churned allocations use channels above the traffic ones' range start.
                    SessionConfig sc = session_config(i);
                    if (sc.channel != 0) {
                        sc.channel = static_cast<uint16_t>(0x4000 + (o_.allocations + i) % 0x1000);
                    }
                    return sc;
                },
                [this](const Address& relayed) { allow_relayed(relayed); }, o_.churn_rate,
                static_cast<uint64_t>(o_.churn_hold_s * 1e9));
            churner->start(ph.start_ns, ph.send_end_ns);
        }

        // Reporter: one sample per second of sending.
        Counters prev;
        uint64_t tick = ph.start_ns;
        while (tick < ph.send_end_ns) {
            const uint64_t next = std::min(tick + kNsPerSec, ph.send_end_ns);
            sleep_until(next);
            Counters now = snapshot(counters);
            const double dt = static_cast<double>(next - tick) / 1e9;
            SecondSample s;
            s.t_s = static_cast<double>(next - ph.start_ns) / 1e9;
            s.offered_pps = static_cast<double>(now.sent + now.failed - prev.sent - prev.failed) / dt;
            s.delivered_pps = static_cast<double>(now.received - prev.received) / dt;
            s.latency = Percentiles::of(difference(now.latency, prev.latency));
            // Provisional loss of this second (final figures are filled in below).
            s.loss_ratio = s.offered_pps > 0 ? std::max(0.0, 1.0 - s.delivered_pps / s.offered_pps) : 0.0;
            if (!o_.quiet) {
                std::fprintf(stderr, "%s\n", progress_line(s, rate).c_str());
            }
            r.seconds.push_back(s);
            prev = std::move(now);
            tick = next;
        }
        for (auto& t : ts) {
            t.join();
        }
        if (churner) {
            r.churn = churner->finish();
        }
        r.client_cpu_s = self_cpu_s() - cpu0;
        const UdpDrops drops1 = read_udp_drops(ports);
        r.own_socket_drops = drops1.own - std::min(drops1.own, drops0.own);
        r.host_udp_drops = drops1.host - std::min(drops1.host, drops0.host);
        if (!o_.server_pids.empty()) {
            r.server_cpu_s = 0;
            for (size_t i = 0; i < o_.server_pids.size(); ++i) {
                const double srv1 = process_cpu_s(o_.server_pids[i]);
                const double d = srv0[i] >= 0 && srv1 >= 0 ? srv1 - srv0[i] : -1;
                r.server_cpu_s_by_pid.emplace_back(o_.server_pids[i], d);
                r.server_cpu_s = d >= 0 && r.server_cpu_s >= 0 ? r.server_cpu_s + d : -1;
            }
        }
        for (size_t i = 0; i < o_.watch_pids.size(); ++i) {
            const double w1 = process_cpu_s(o_.watch_pids[i]);
            r.watch_cpu_s_by_pid.emplace_back(o_.watch_pids[i], watch0[i] >= 0 && w1 >= 0 ? w1 - watch0[i] : -1);
        }
        for (size_t i = 0; i < r.seconds.size(); ++i) {
            uint64_t sent = 0;
            uint64_t back = 0;
            for (const auto& c : counters) {
                sent += c->sent_by_sec[i].load(std::memory_order_relaxed);
                back += c->back_by_sec[i].load(std::memory_order_relaxed);
            }
            r.seconds[i].loss_ratio = sent > 0 ? static_cast<double>(sent - std::min(sent, back)) /
                                                     static_cast<double>(sent)
                                               : 0.0;
        }
        for (const auto& c : counters) {
            r.sent += c->sent.load();
            r.send_failed += c->send_failed.load();
            r.received += c->received.load();
            r.duplicates += c->duplicates.load();
            r.stale += c->stale.load();
            r.foreign += c->foreign.load();
            r.stream_broken += c->stream_broken.load();
            r.rx_queue_us_mean += static_cast<double>(c->rx_queue_ns.load()) / 1e3;
            c->latency.snapshot_into(r.latency);
        }
        r.rx_queue_us_mean = r.received ? r.rx_queue_us_mean / static_cast<double>(r.received) : 0.0;
        if (r.stream_broken != 0) {
            // Reported even with -q: these connections carry nothing for the rest of the run.
            std::string why;
            for (const auto& [k, v] : errors_.snapshot()) {
                if (k.rfind("stream_", 0) == 0 || k.rfind("tls_", 0) == 0 || k.rfind("dtls_", 0) == 0) {
                    why += " " + k + "=" + std::to_string(v);
                }
            }
            std::fprintf(stderr, "turn-load: phase %u: %lu %s connection(s) broke (so far:%s)\n", id,
                         static_cast<unsigned long>(r.stream_broken), std::string(to_string(o_.transport)).c_str(),
                         why.c_str());
        }
        const uint64_t offered = r.sent + r.send_failed;
        r.lost = offered - std::min(offered, r.received);
        r.loss_ratio = offered > 0 ? static_cast<double>(r.lost) / static_cast<double>(offered) : 0.0;
        r.offered_pps = static_cast<double>(offered) / o_.duration_s;
        r.delivered_pps = static_cast<double>(r.received) / o_.duration_s;
        r.delivered_bytes_per_s = r.delivered_pps * static_cast<double>(o_.size);
        if (!o_.quiet) {
            const Percentiles p = Percentiles::of(r.latency);
            char wait_note[96] = "(to turn-load's read: no kernel timestamp per message on a stream)";
            if (o_.transport == Transport::kUdp || o_.transport == Transport::kDtls) {
                std::snprintf(wait_note, sizeof wait_note, "(+ %.1f us mean wait in turn-load's socket, not counted)",
                              r.rx_queue_us_mean);
            }
            std::fprintf(stderr,
                         "phase %u: target %.0f pps: offered %.0f, delivered %.0f echoes/s, lost %lu of %lu (%.3f%%), "
                         "p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f us %s\n",
                         id, rate, r.offered_pps, r.delivered_pps, static_cast<unsigned long>(r.lost),
                         static_cast<unsigned long>(offered), 100 * r.loss_ratio, p.p50_us, p.p90_us, p.p99_us,
                         p.p999_us, p.max_us,
                         wait_note);
            if (tcp_relay()) {
                std::fprintf(stderr, "phase %u: %.2f MB/s of payload each way through the data connections\n", id,
                             r.delivered_bytes_per_s / 1e6);
            }
            if (r.lost != 0 && (o_.transport == Transport::kUdp || o_.transport == Transport::kDtls)) {
                std::fprintf(stderr, "kernel UDP drops: %lu on turn-load's sockets, %lu host-wide\n",
                             static_cast<unsigned long>(r.own_socket_drops), static_cast<unsigned long>(r.host_udp_drops));
            }
            if (r.server_cpu_s >= 0 && r.received > 0) {
                std::fprintf(stderr, "server CPU %.2f s (%.0f ns per relayed %s), turn-load CPU %.2f s\n",
                             r.server_cpu_s, r.server_cpu_s * 1e9 / (2.0 * static_cast<double>(r.received)),
                             tcp_relay() ? "message" : "packet", r.client_cpu_s);
            }
            if (r.churn) {
                std::fprintf(stderr, "churn: target %.1f/s achieved %.1f/s, created %lu failed %lu deleted %lu\n",
                             r.churn->target_rate, r.churn->achieved_rate, static_cast<unsigned long>(r.churn->created),
                             static_cast<unsigned long>(r.churn->failed), static_cast<unsigned long>(r.churn->deleted));
            }
        }
        return r;
    }

    void teardown() {
        workers_.clear();
        std::atomic<uint64_t> ok{0};
        std::atomic<uint64_t> failed{0};
        const uint64_t t0 = mono_ns();
        const uint64_t deadline = std::min(hard_deadline_ - 2 * kNsPerSec, t0 + 5 * kNsPerSec);
        parallel([&](size_t, TurnSession& s) {
            if (s.allocated()) {
                (s.release(deadline) ? ok : failed)++;
            }
        });
        result_.setup.released = ok;
        result_.setup.release_failed = failed;
        result_.setup.release_elapsed_s = static_cast<double>(mono_ns() - t0) / 1e9;
    }

    int finish() {
        result_.errors = errors_.snapshot();
        result_.tcp_peers = tcp_relay();
        result_.peer_echoed = tcp_relay() ? tcp_peers_.echoed_bytes() : peers_.echoed();
        result_.peer_refused = tcp_relay() ? tcp_peers_.refused() : peers_.refused();
        result_.peer_connections = tcp_peers_.accepted();
        int rc = 0;
        if (!o_.json_path.empty()) {
            std::ofstream f(o_.json_path);
            f << to_json(result_);
            if (!f) {
                std::cerr << "turn-load: cannot write " << o_.json_path << "\n";
                rc = 1;
            }
        }
        if (!o_.plot_path.empty() && !result_.phases.empty()) {
            std::string err;
            if (!plot(result_, o_.plot_path, err)) {
                std::cerr << "turn-load: plot: " << err << "\n";
                rc = 1;
            }
        }
        return rc;
    }

    const Options& o_;
    uint64_t hard_deadline_ = 0;
    std::unique_ptr<TlsClient> tls_;
    EchoPeers peers_;
    TcpEchoPeers tcp_peers_;  // --mode tcp-relay, instead of peers_
    ErrorTally errors_;
    std::vector<std::unique_ptr<TurnSession>> sessions_;
    std::vector<std::unique_ptr<TrafficThread>> workers_;
    RunResult result_;
};

}  // namespace
}  // namespace turn::load

int main(int argc, char** argv) {
    // A server closing a TCP/TLS connection must be an error we count, not SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    // One descriptor per allocation over TCP/TLS (and UDP): lift the soft limit.
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    turn::load::Options o;
    int rc = 0;
    if (!turn::load::parse_options(argc, argv, o, rc)) {
        return rc;
    }
    turn::load::Run run(o);
    return run.main();
}
