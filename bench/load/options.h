// Command-line options of turn-load, validated into one struct.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "net/address.h"
#include "stream_conn.h"
#include "traffic.h"

namespace turn::load {

struct Options {
    std::string server_text;
    Address server;
    std::string user;
    std::string password;
    std::string rest_secret;
    std::string rest_name = "turn-load";
    uint64_t rest_ttl_s = 86400;
    std::string realm;
    size_t allocations = 4;
    std::string mode_text = "channel";
    Mode mode = Mode::kChannel;
    double rate = 1000;
    size_t size = 172;          // an RTP audio packet: 12-byte header + 160 bytes of G.711
    double duration_s = 10;
    size_t threads = 1;
    size_t peer_threads = 1;
    size_t peer_sockets = 0;    // 0: min(allocations, 4)
    std::string peer_text = "127.0.0.1";
    Address peer;
    std::string json_path;
    std::string plot_path;
    bool setup_only = false;
    double churn_rate = 0;
    double churn_hold_s = 1.0;
    std::string sweep_text;
    std::vector<double> sweep;
    double grace_s = 1.0;
    size_t batch = 32;
    int tos = 0;  // IPv4 TOS / IPv6 Traffic Class of UDP datagrams (clients and echo peers)
    double refresh_interval_s = 120;
    double setup_timeout_s = 30;
    bool quiet = false;
    std::vector<int> server_pids; // sample their CPU time from /proc per phase (summed: the server's CPU)
    std::vector<int> watch_pids;  // also sampled per phase, reported apart, not summed (e.g. one thread's TID)
    std::string peer_netns;     // create the echo peer sockets in this network namespace (name or path)
    std::string transport_text = "udp";
    Transport transport = Transport::kUdp;  // client <-> server; peers are always UDP
    std::string tls_ca;         // verify the server's certificate against this PEM bundle
    bool tls_no_verify = false; // accept any certificate (test servers with self-signed ones)
    std::string tls_name;       // SNI and name checked in the certificate; default: --server's host
};

// Parses argv; on --help or a bad flag prints the message and returns the
// process exit code through `exit_code` (and false).
bool parse_options(int argc, char** argv, Options& o, int& exit_code);

}  // namespace turn::load
