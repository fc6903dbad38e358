#include "report.h"

#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

extern char** environ;

namespace turn::load {

using nlohmann::json;

Percentiles Percentiles::of(const Histogram& h) {
    Percentiles p;
    p.count = h.count();
    p.p50_us = static_cast<double>(h.percentile(50)) / 1e3;
    p.p90_us = static_cast<double>(h.percentile(90)) / 1e3;
    p.p99_us = static_cast<double>(h.percentile(99)) / 1e3;
    p.p999_us = static_cast<double>(h.percentile(99.9)) / 1e3;
    p.max_us = static_cast<double>(h.max()) / 1e3;
    p.mean_us = h.mean() / 1e3;
    return p;
}

namespace {

json latency_json(const Percentiles& p) {
    return {{"count", p.count}, {"p50", p.p50_us},   {"p90", p.p90_us}, {"p99", p.p99_us},
            {"p99_9", p.p999_us}, {"max", p.max_us}, {"mean", p.mean_us}};
}

json churn_json(const ChurnResult& c) {
    return {{"target_per_s", c.target_rate},
            {"achieved_per_s", c.achieved_rate},
            {"attempted", c.attempted},
            {"created", c.created},
            {"failed", c.failed},
            {"deleted", c.deleted},
            {"delete_failed", c.delete_failed},
            {"elapsed_s", c.elapsed_s},
            {"setup_latency_ms",
             {{"p50", static_cast<double>(c.setup_latency.percentile(50)) / 1e6},
              {"p99", static_cast<double>(c.setup_latency.percentile(99)) / 1e6},
              {"max", static_cast<double>(c.setup_latency.max()) / 1e6}}}};
}

json phase_json(const PhaseResult& p) {
    json j = {{"target_pps", p.target_pps},
              {"duration_s", p.duration_s},
              {"offered_pps", p.offered_pps},
              {"delivered_pps", p.delivered_pps},
              {"relayed_pps", 2 * p.delivered_pps},
              {"delivered_bytes_per_s", p.delivered_bytes_per_s},
              {"sent", p.sent},
              {"send_failed", p.send_failed},
              {"received", p.received},
              {"lost", p.lost},
              {"loss_ratio", p.loss_ratio},
              {"duplicates", p.duplicates},
              {"stale", p.stale},
              {"foreign", p.foreign},
              {"stream_broken", p.stream_broken},
              {"harness_rx_wait_us_mean", p.rx_queue_us_mean},
              {"latency_us", latency_json(Percentiles::of(p.latency))}};
    json secs = json::array();
    for (const auto& s : p.seconds) {
        secs.push_back({{"t", s.t_s},
                        {"offered_pps", s.offered_pps},
                        {"delivered_pps", s.delivered_pps},
                        {"loss_ratio", s.loss_ratio},
                        {"latency_us", latency_json(s.latency)}});
    }
    j["per_second"] = secs;
    if (p.churn) {
        j["churn"] = churn_json(*p.churn);
    }
    j["client_cpu_s"] = p.client_cpu_s;
    j["udp_drops"] = {{"own_sockets", p.own_socket_drops},
                      {"host", p.host_udp_drops},
                      {"other_sockets", p.host_udp_drops - std::min(p.host_udp_drops, p.own_socket_drops)}};
    if (p.server_cpu_s >= 0) {
        j["server_cpu_s"] = p.server_cpu_s;
        // Each echo crossed the relay twice (client->peer, peer->client).
        j["server_cpu_ns_per_relayed_packet"] =
            p.received ? p.server_cpu_s * 1e9 / (2.0 * static_cast<double>(p.received)) : 0.0;
    }
    for (const auto& [key, list] : {std::pair{"server_cpu_s_by_pid", &p.server_cpu_s_by_pid},
                                     std::pair{"watch_cpu_s_by_pid", &p.watch_cpu_s_by_pid}}) {
        if (!list->empty()) {
            json m = json::object();
            for (const auto& [pid, s] : *list) {
                m[std::to_string(pid)] = s;
            }
            j[key] = m;
        }
    }
    return j;
}

bool run_gnuplot(const std::string& script, std::string& err) {
    pid_t pid = 0;
    std::string arg0 = "gnuplot";
    std::string arg1 = script;
    char* argv[] = {arg0.data(), arg1.data(), nullptr};
    if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ) != 0) {
        err = "cannot run gnuplot (Debian package gnuplot-nox)";
        return false;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        err = "gnuplot failed on " + script;
        return false;
    }
    return true;
}

std::string stem(const std::string& png) { return png.substr(0, png.size() - 4); }

// Gnuplot string literal: single quotes, doubled inside.
std::string q(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        out += c;
        if (c == '\'') {
            out += '\'';
        }
    }
    return out + "'";
}

}  // namespace

std::string to_json(const RunResult& r) {
    json j;
    j["tool"] = "turn-load";
    j["format"] = 1;
    j["date_utc"] = r.date_utc;
    j["config"] = r.config;
    j["setup"] = {{"requested", r.setup.requested},
                  {"ok", r.setup.ok},
                  {"failed", r.setup.failed},
                  {"elapsed_s", r.setup.elapsed_s},
                  {"rate_per_s", r.setup.rate_per_s},
                  {"latency_ms",
                   {{"p50", static_cast<double>(r.setup.latency.percentile(50)) / 1e6},
                    {"p90", static_cast<double>(r.setup.latency.percentile(90)) / 1e6},
                    {"p99", static_cast<double>(r.setup.latency.percentile(99)) / 1e6},
                    {"max", static_cast<double>(r.setup.latency.max()) / 1e6}}},
                  {"released", r.setup.released},
                  {"release_failed", r.setup.release_failed},
                  {"release_elapsed_s", r.setup.release_elapsed_s}};
    json phases = json::array();
    for (const auto& p : r.phases) {
        phases.push_back(phase_json(p));
    }
    if (r.config.count("sweep") != 0) {
        j["sweep"] = phases;  // one entry per --sweep rate, even if there is only one
    } else if (!r.phases.empty()) {
        j["traffic"] = phases[0];
    }
    j["errors"] = r.errors;
    j["refresh_requests"] = {{"ok", r.async_ok}, {"failed", r.async_failed}};
    if (r.tcp_peers) {
        j["peers"] = {{"transport", "tcp"},
                      {"connections", r.peer_connections},
                      {"echoed_bytes", r.peer_echoed},
                      {"refused_connections", r.peer_refused}};
    } else {
        j["peers"] = {{"echoed", r.peer_echoed}, {"refused", r.peer_refused}};
    }
    return j.dump(2) + "\n";
}

std::string progress_line(const SecondSample& s, double target_pps) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "[%5.0fs] target %8.0f  offered %8.0f pps  delivered %8.0f pps  loss %6.2f%%  "
                  "p50 %8.1f us  p99 %8.1f us",
                  s.t_s, target_pps, s.offered_pps, s.delivered_pps, 100.0 * s.loss_ratio, s.latency.p50_us,
                  s.latency.p99_us);
    return buf;
}

bool plot(const RunResult& r, const std::string& png, std::string& err) {
    const std::string base = stem(png);
    // Loss axis: autoscaled when there is loss, 0..1 % otherwise (gnuplot
    // warns about an empty range).
    bool any_loss = false;
    for (const auto& p : r.phases) {
        any_loss = any_loss || p.lost != 0;
    }
    const std::string y2range = any_loss ? "set y2range [0:*]\n" : "set y2range [0:1]\n";
    const bool sweep = r.config.count("sweep") != 0;
    const std::string time_png = sweep ? base + "-time.png" : png;
    // Time series over all phases, one row per second.
    {
        std::ofstream dat(base + ".dat");
        dat << "# t_s offered_pps delivered_pps loss_pct p50_us p99_us p999_us target_pps\n";
        double t0 = 0;
        for (const auto& p : r.phases) {
            for (const auto& s : p.seconds) {
                dat << t0 + s.t_s << ' ' << s.offered_pps << ' ' << s.delivered_pps << ' ' << 100 * s.loss_ratio
                    << ' ' << s.latency.p50_us << ' ' << s.latency.p99_us << ' ' << s.latency.p999_us << ' '
                    << p.target_pps << '\n';
            }
            t0 += p.seconds.empty() ? 0 : p.seconds.back().t_s;
        }
        if (!dat) {
            err = "cannot write " + base + ".dat";
            return false;
        }
    }
    const std::string title = r.config.count("server") ? "turn-load vs " + r.config.at("server") + " (" +
                                                              r.config.at("mode") + ", " + r.config.at("size") +
                                                              " B, " + r.config.at("allocations") + " allocations)"
                                                        : "turn-load";
    {
        std::ofstream gp(base + ".gp");
        gp << "set terminal pngcairo size 1100,800 noenhanced\n"
           << "set output " << q(time_png) << "\n"
           << "set multiplot layout 2,1 title " << q(title + ", " + r.date_utc) << "\n"
           << "set grid\nset key top left\nset xlabel 'time (s)'\nset lmargin 12\nset rmargin 10\nset xrange [0:*]\n"
           << "set ylabel 'packets/s'\nset yrange [0:*]\nset y2label 'loss %'\nset y2tics\n" << y2range
           << "plot " << q(base + ".dat") << " using 1:2 with lines lw 2 title 'offered', '' using 1:3 with lines lw 2 "
           << "title 'delivered (echoes)', '' using 1:4 axes x1y2 with impulses lw 2 title 'loss %'\n"
           << "unset y2label\nunset y2tics\nset ylabel 'round trip (us)'\nset logscale y\nset yrange [*:*]\n"
           << "plot '' using 1:($5>0?$5:NaN) with linespoints title 'p50', '' using 1:($6>0?$6:NaN) "
           << "with linespoints title 'p99', '' using 1:($7>0?$7:NaN) with lines title 'p99.9'\n"
           << "unset multiplot\n";
        if (sweep) {
            std::ofstream sd(base + "-sweep.dat");
            sd << "# offered_pps delivered_pps loss_pct p50_us p99_us target_pps\n";
            for (const auto& p : r.phases) {
                const Percentiles pc = Percentiles::of(p.latency);
                sd << p.offered_pps << ' ' << p.delivered_pps << ' ' << 100 * p.loss_ratio << ' ' << pc.p50_us << ' '
                   << pc.p99_us << ' ' << p.target_pps << '\n';
            }
            gp << "reset\nset terminal pngcairo size 1100,800 noenhanced\n"
               << "set output " << q(png) << "\n"
               << "set multiplot layout 2,1 title " << q(title + ", sweep, " + r.date_utc) << "\n"
               << "set grid\nset key top left\nset xlabel 'offered load (packets/s)'\n"
               << "set ylabel 'delivered (echoes/s)'\nset yrange [0:*]\nset xrange [0:*]\n"
               << "set y2label 'loss %'\nset y2tics\n" << y2range << "set lmargin 12\nset rmargin 10\n"
               << "plot " << q(base + "-sweep.dat") << " using 1:2 with linespoints lw 2 pt 7 title 'delivered', "
               << "x with lines dt 2 title 'offered = delivered', '' using 1:3 axes x1y2 with linespoints "
               << "title 'loss %'\n"
               << "unset y2label\nunset y2tics\nset ylabel 'round trip (us)'\nset logscale y\nset yrange [*:*]\n"
               << "plot '' using 1:($4>0?$4:NaN) with linespoints pt 7 title 'p50', '' using 1:($5>0?$5:NaN) "
               << "with linespoints pt 7 title 'p99'\nunset multiplot\n";
        }
        if (!gp) {
            err = "cannot write " + base + ".gp";
            return false;
        }
    }
    return run_gnuplot(base + ".gp", err);
}

}  // namespace turn::load
