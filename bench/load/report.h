// Results of a run, their JSON form, the progress line and the gnuplot plots.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "churn.h"
#include "histogram.h"

namespace turn::load {

struct Percentiles {
    double p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0, mean_us = 0;
    uint64_t count = 0;
    static Percentiles of(const Histogram& h);
};

struct SecondSample {
    double t_s = 0;              // end of this second, from phase start
    double offered_pps = 0;      // sent + refused by our socket
    double delivered_pps = 0;    // echoes received in this second
    double loss_ratio = 0;       // of packets sent in this second (final, after grace)
    Percentiles latency;
};

struct PhaseResult {
    double target_pps = 0;       // 0 = as fast as possible
    double duration_s = 0;
    uint64_t sent = 0;
    uint64_t send_failed = 0;
    uint64_t received = 0;
    uint64_t lost = 0;
    uint64_t duplicates = 0;
    uint64_t stale = 0;
    uint64_t foreign = 0;
    uint64_t stream_broken = 0;  // TCP/TLS connections or DTLS sessions that broke during the phase (see errors)
    double rx_queue_us_mean = 0; // mean time an echo waited in turn-load's socket before it was read
    double offered_pps = 0;
    double delivered_pps = 0;    // echoes per second; each is two relayed packets
    double delivered_bytes_per_s = 0;  // payload bytes of those echoes per second (one way)
    double loss_ratio = 0;
    Histogram latency;
    std::vector<SecondSample> seconds;
    std::optional<ChurnResult> churn;
    uint64_t own_socket_drops = 0;    // kernel drops on the harness's sockets
    uint64_t host_udp_drops = 0;      // kernel UDP receive-buffer drops on the whole host
    double client_cpu_s = 0;     // this process (user + system) during the phase
    double server_cpu_s = -1;    // --server-pid's processes during the phase (summed); < 0 unknown
    std::vector<std::pair<int, double>> server_cpu_s_by_pid;  // each --server-pid apart
    std::vector<std::pair<int, double>> watch_cpu_s_by_pid;   // each --watch-pid (not in server_cpu_s)
};

struct SetupResult {
    uint64_t requested = 0;
    uint64_t ok = 0;
    uint64_t failed = 0;
    double elapsed_s = 0;
    double rate_per_s = 0;       // successful setups per second (all threads together)
    Histogram latency;           // ns per allocation setup
    uint64_t released = 0;
    uint64_t release_failed = 0;
    double release_elapsed_s = 0;
};

struct RunResult {
    std::string date_utc;
    std::map<std::string, std::string> config;
    SetupResult setup;
    std::vector<PhaseResult> phases;
    std::map<std::string, uint64_t> errors;
    uint64_t async_ok = 0;       // refresh-cycle requests answered during traffic
    uint64_t async_failed = 0;
    uint64_t peer_echoed = 0;    // datagrams; with tcp_peers, bytes
    uint64_t peer_refused = 0;   // datagrams; with tcp_peers, connections
    bool tcp_peers = false;      // --mode tcp-relay: TCP echo peers
    uint64_t peer_connections = 0;  // tcp_peers: connections accepted from the server
};

std::string to_json(const RunResult& r);
std::string progress_line(const SecondSample& s, double target_pps);
// Writes `png` with gnuplot (data and script next to it: FILE.dat, FILE.gp);
// with a sweep, FILE.png is delivered rate and p99 against offered load and
// the time series goes to FILE-time.png. False with `err` on failure.
bool plot(const RunResult& r, const std::string& png, std::string& err);

}  // namespace turn::load
