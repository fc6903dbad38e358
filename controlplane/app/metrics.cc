#include "app/metrics.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "core/peer_policy.h"
#include "ipc/dataplane_counters.h"

namespace turn::cp {

namespace {

// The standard process series (process_*, as Prometheus's client libraries
// export them), read from /proc at scrape time.
struct ProcessSample {
    bool ok = false;
    double cpu_seconds = 0;
    double start_unix = 0;
    double virtual_bytes = 0;
    double resident_bytes = 0;
};

// Seconds since the epoch the machine booted at (/proc/stat btime); 0 if unknown.
double boot_time_unix() {
    std::ifstream in("/proc/stat");
    std::string key;
    double v = 0;
    while (in >> key) {
        if (key == "btime") {
            in >> v;
            return v;
        }
        in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    return 0;
}

ProcessSample sample_process(double boot_unix) {
    ProcessSample p;
    std::ifstream in("/proc/self/stat");
    std::string line;
    if (!std::getline(in, line)) {
        return p;
    }
    // After the command name in parentheses (which may hold spaces and
    // parentheses itself): fields 3 onwards (proc(5)).
    const size_t close = line.rfind(')');
    if (close == std::string::npos) {
        return p;
    }
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> f;
    for (std::string t; rest >> t;) {
        f.push_back(t);
    }
    auto field = [&](size_t n) { return std::strtod(f[n - 3].c_str(), nullptr); };  // proc(5)'s numbering
    if (f.size() < 24 - 2) {
        return p;
    }
    const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    p.cpu_seconds = (field(14) + field(15)) / tick;  // utime + stime
    p.start_unix = boot_unix + field(22) / tick;     // starttime, ticks after boot
    p.virtual_bytes = field(23);                     // vsize
    p.resident_bytes = field(24) * page;             // rss, pages
    p.ok = true;
    return p;
}

double open_fds() {
    std::error_code ec;
    double n = 0;
    for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) {
        n++;
    }
    return n;
}

}  // namespace

class MetricsExporter::Collector final : public prometheus::Collectable {
public:
    Collector(const Shared& shared, std::vector<const Stats*> loops, const DataplaneCounters* dp)
        : shared_(shared), loops_(std::move(loops)), dp_(dp), boot_unix_(boot_time_unix()) {}

    std::vector<prometheus::MetricFamily> Collect() const override {
        using prometheus::ClientMetric;
        using prometheus::MetricFamily;
        using prometheus::MetricType;
        std::deque<MetricFamily> out;  // family() hands out references: a deque's push_back keeps them valid
        auto family = [&](const char* name, const char* help, MetricType t) -> MetricFamily& {
            out.push_back(MetricFamily{name, help, t, {}});
            return out.back();
        };
        auto counter = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
            ClientMetric m;
            m.label = std::move(labels);
            m.counter.value = v;
            f.metric.push_back(std::move(m));
        };
        auto gauge = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
            ClientMetric m;
            m.label = std::move(labels);
            m.gauge.value = v;
            f.metric.push_back(std::move(m));
        };
        auto sum = [&](auto get) {
            uint64_t s = 0;
            for (const Stats* l : loops_) {
                s += get(*l);
            }
            return static_cast<double>(s);
        };

        auto& alloc = family("turn_allocations", "Live allocations holding a relayed address of each family",
                             MetricType::Gauge);
        gauge(alloc, {{"family", "ipv4"}}, static_cast<double>(shared_.allocations_v4.load()));
        gauge(alloc, {{"family", "ipv6"}}, static_cast<double>(shared_.allocations_v6.load()));

        auto& req = family("turn_requests_total", "STUN/TURN requests answered, by method and response code",
                           MetricType::Counter);
        for (size_t m = 0; m < static_cast<size_t>(MethodIndex::kCount); ++m) {
            for (size_t c = 0; c < kTrackedCodes.size(); ++c) {
                const double v = sum([&](const Stats& s) { return s.requests[m][c].get(); });
                if (v > 0) {
                    counter(req,
                            {{"method", std::string(name(static_cast<MethodIndex>(m)))},
                             {"code", std::to_string(kTrackedCodes[c])}},
                            v);
                }
            }
        }
        auto& af = family("turn_auth_failures_total", "Requests that failed authentication, by reason",
                          MetricType::Counter);
        for (size_t i = 0; i < static_cast<size_t>(AuthFailure::kCount); ++i) {
            counter(af, {{"reason", std::string(name(static_cast<AuthFailure>(i)))}},
                    sum([&](const Stats& s) { return s.auth_failures[i].get(); }));
        }
        auto& pk = family("turn_relayed_packets_total", "Relayed datagrams by direction", MetricType::Counter);
        auto& by = family("turn_relayed_bytes_total", "Relayed payload bytes by direction", MetricType::Counter);
        for (size_t i = 0; i < static_cast<size_t>(Direction::kCount); ++i) {
            const std::string d(name(static_cast<Direction>(i)));
            counter(pk, {{"direction", d}, {"path", "socket"}},
                    sum([&](const Stats& s) { return s.relayed_packets[i].get(); }));
            counter(by, {{"direction", d}, {"path", "socket"}},
                    sum([&](const Stats& s) { return s.relayed_bytes[i].get(); }));
            if (dp_ != nullptr) {
                // Fast-path traffic, as of the dataplane's last counters report.
                counter(pk, {{"direction", d}, {"path", "dataplane"}},
                        static_cast<double>(dp_->packets[i].load(std::memory_order_relaxed)));
                counter(by, {{"direction", d}, {"path", "dataplane"}},
                        static_cast<double>(dp_->bytes[i].load(std::memory_order_relaxed)));
            }
        }
        auto& tb = family("turn_tcp_relayed_bytes_total",
                          "Bytes relayed over RFC 6062 TCP allocations' data connections, by direction",
                          MetricType::Counter);
        for (size_t i = 0; i < static_cast<size_t>(Direction::kCount); ++i) {
            counter(tb, {{"direction", std::string(name(static_cast<Direction>(i)))}},
                    sum([&](const Stats& s) { return s.tcp_relayed_bytes[i].get(); }));
        }
        auto& dr = family("turn_drops_total", "Datagrams dropped, by reason", MetricType::Counter);
        for (size_t i = 0; i < static_cast<size_t>(Drop::kCount); ++i) {
            counter(dr, {{"reason", std::string(name(static_cast<Drop>(i)))}},
                    sum([&](const Stats& s) { return s.drops[i].get(); }));
        }
        auto& pd = family("turn_peer_denials_total",
                          "Peers refused by the peer policy (CreatePermission, ChannelBind, Connect, Send), by rule",
                          MetricType::Counter);
        for (size_t i = 0; i < Stats::kPeerDenyRules; ++i) {
            counter(pd, {{"rule", verdict_name(Stats::peer_denial_rule(i))}},
                    sum([&](const Stats& s) { return s.peer_denials[i].get(); }));
        }
        auto& q = family("turn_quota_rejections_total", "Allocations refused by a quota, by kind",
                         MetricType::Counter);
        for (size_t i = 0; i < static_cast<size_t>(QuotaKind::kCount); ++i) {
            counter(q, {{"kind", std::string(name(static_cast<QuotaKind>(i)))}},
                    sum([&](const Stats& s) { return s.quota_rejections[i].get(); }));
        }
        auto& busy = family("turn_event_loop_busy_ratio", "Share of the last second each event loop was not idle",
                            MetricType::Gauge);
        for (size_t i = 0; i < loops_.size(); ++i) {
            gauge(busy, {{"loop", std::to_string(i)}},
                  static_cast<double>(loops_[i]->busy_ppm.load(std::memory_order_relaxed)) / 1e6);
        }
        auto& icmp = family("turn_icmp_indications_total",
                            "ICMP errors from peers reported to clients (Data indication with ICMP)", MetricType::Counter);
        counter(icmp, {}, sum([](const Stats& s) { return s.icmp_indications.get(); }));
        // TCP/TLS client connections and DTLS sessions (the transports'
        // listeners, RFC 8656 3.1; a DTLS session counts once its cookie checked out).
        auto& co = family("turn_connections", "Open TCP/TLS client connections and DTLS sessions", MetricType::Gauge);
        auto& ca = family("turn_connections_accepted_total",
                          "TCP/TLS client connections accepted, DTLS sessions started (cookie verified)",
                          MetricType::Counter);
        auto& cc = family("turn_connections_closed_total",
                          "TCP/TLS client connections and DTLS sessions closed, by reason", MetricType::Counter);
        for (size_t t = 0; t < kStreamKinds; ++t) {
            static constexpr const char* kNames[kStreamKinds] = {"tcp", "tls", "dtls"};
            const std::string tr = kNames[t];
            double closed = 0;  // read before accepted: a connection closed in between is not counted below zero
            for (size_t r = 0; r < static_cast<size_t>(ConnClose::kCount); ++r) {
                const double v = sum([&](const Stats& s) { return s.connections_closed[t][r].get(); });
                closed += v;
                counter(cc, {{"transport", tr}, {"reason", std::string(name(static_cast<ConnClose>(r)))}}, v);
            }
            const double accepted = sum([&](const Stats& s) { return s.connections_accepted[t].get(); });
            counter(ca, {{"transport", tr}}, accepted);
            gauge(co, {{"transport", tr}}, accepted - closed);
        }
        auto& ho = family("turn_connections_handed_off_total",
                          "RFC 6062 data connections moved to the event loop of their TCP allocation",
                          MetricType::Counter);
        counter(ho, {}, sum([](const Stats& s) { return s.connections_handed_off.get(); }));
        auto& mm = family("turn_mobility_moves_total",
                          "RFC 8016: allocations moved to their client's new address (MOBILITY-TICKET)",
                          MetricType::Counter);
        counter(mm, {}, sum([](const Stats& s) { return s.mobility_moves.get(); }));
        auto& mf = family("turn_mobility_forwarded_total",
                          "RFC 8016: mobility Refreshes handed to the event loop holding the allocation",
                          MetricType::Counter);
        counter(mf, {}, sum([](const Stats& s) { return s.mobility_forwarded.get(); }));
        if (dp_ != nullptr) {
            auto& dc = family("turn_dataplane_connected", "1 while a dataplane is attached and has been sent the whole resync",
                              MetricType::Gauge);
            gauge(dc, {}, dp_->connected.load() ? 1.0 : 0.0);
            auto& dd = family("turn_dataplane_dropped_packets_total",
                              "Packets the dataplane dropped for offloaded allocations (rate limit, no permission)",
                              MetricType::Counter);
            counter(dd, {}, static_cast<double>(dp_->dropped.load(std::memory_order_relaxed)));
            auto& rs = family("turn_dataplane_resyncs_total", "Full state resyncs sent to the dataplane",
                              MetricType::Counter);
            counter(rs, {}, static_cast<double>(dp_->resyncs.load()));
            auto& dx = family("turn_dataplane_disconnects_total",
                              "Dataplane connections ended, by reason: closed (by the dataplane, e.g. it restarted, or a read failed), "
                              "replaced (by a new connection), backlog_full (it stopped reading), send_error",
                              MetricType::Counter);
            for (size_t k = 0; k < static_cast<size_t>(Disconnect::kCount); ++k) {
                counter(dx, {{"reason", disconnect_label(static_cast<Disconnect>(k))}},
                        static_cast<double>(dp_->disconnects_by[k].load()));
            }
            auto& sa = family("turn_dataplane_settings_applied",
                              "1 when the attached dataplane confirmed the relay-wide settings ([server].dscp); 0 "
                              "with a dataplane older than them, whose fast path keeps the received DSCP",
                              MetricType::Gauge);
            gauge(sa, {}, dp_->settings_applied.load() ? 1.0 : 0.0);
            auto& ea = family("turn_dataplane_external_ips_applied",
                              "1 when the attached dataplane confirmed the external IPs ([server].external_ips); "
                              "until then relay-to-relay traffic between external-IP peers takes the socket path",
                              MetricType::Gauge);
            gauge(ea, {}, dp_->external_ips_applied.load() ? 1.0 : 0.0);
            auto& bm = family("turn_dataplane_bad_messages_total",
                              "IPC messages from the dataplane this control plane could not decode or does not know "
                              "(a dataplane newer than the control plane; logged once per type and connection)",
                              MetricType::Counter);
            counter(bm, {}, static_cast<double>(dp_->bad_messages.load(std::memory_order_relaxed)));
            // Each worker's packet counters: forwards, every punt and drop reason.
            const auto workers = dp_->workers();
            auto& wp = family("turn_dataplane_worker_packets_total",
                              "Dataplane worker packet counters by name: rx, fwd_* forwarded, punt_* to the kernel, "
                              "drop_* dropped (dataplane/README.md)",
                              MetricType::Counter);
            static constexpr const char* kNames[] = {
#define TURN_X(name, desc) #name,
                TURN_DP_COUNTERS(TURN_X)
#undef TURN_X
            };
            for (const auto& [id, c] : workers) {
                for (size_t k = 0; k < std::min<size_t>(c.count, std::size(kNames)); ++k) {
                    counter(wp, {{"worker", std::to_string(id)}, {"counter", kNames[k]}},
                            static_cast<double>(c.counters[k]));
                }
            }
            auto& cl = family("turn_dataplane_client_cache_lookups_total",
                              "Client packets a dataplane worker looked up in its client cache", MetricType::Counter);
            auto& cm = family("turn_dataplane_client_cache_misses_total",
                              "Client-cache lookups that went on to the flow hash", MetricType::Counter);
            auto& ex = family("turn_dataplane_express_packets_total",
                              "Packets a dataplane worker's express lane forwarded (IPv4 ChannelData on slot channels)",
                              MetricType::Counter);
            for (const auto& [id, c] : workers) {
                counter(cl, {{"worker", std::to_string(id)}}, static_cast<double>(c.cache_lookups));
                counter(cm, {{"worker", std::to_string(id)}}, static_cast<double>(c.cache_misses));
                counter(ex, {{"worker", std::to_string(id)}}, static_cast<double>(c.express_packets));
            }
            // The dataplane's two DPDK ports (rte_eth_stats and link), as of its
            // last report, kept like the workers' until a new dataplane process
            // reports: port="nic" is the network, port="exception" the kernel's
            // side (rx: kernel egress, tx: packets punted to the kernel).
            const auto ports = dp_->ports();
            auto port_labels = [](const ipc::PortCounters& p) -> std::vector<ClientMetric::Label> {
                return {{"port", p.role == ipc::PortRole::kNic ? "nic" : "exception"}, {"name", p.name}};
            };
            struct PortFamily {
                const char* name;
                const char* help;
                uint64_t ipc::PortCounters::*value;
            };
            static constexpr PortFamily kPortFamilies[] = {
                {"turn_dataplane_port_rx_packets_total",
                 "Packets a dataplane port received (rte_eth_stats ipackets); port=\"exception\": the kernel's egress",
                 &ipc::PortCounters::ipackets},
                {"turn_dataplane_port_tx_packets_total",
                 "Packets a dataplane port sent (opackets); port=\"exception\": packets punted to the kernel",
                 &ipc::PortCounters::opackets},
                {"turn_dataplane_port_rx_bytes_total", "Bytes a dataplane port received (ibytes)",
                 &ipc::PortCounters::ibytes},
                {"turn_dataplane_port_tx_bytes_total", "Bytes a dataplane port sent (obytes)", &ipc::PortCounters::obytes},
                {"turn_dataplane_port_rx_missed_total",
                 "Packets a dataplane port dropped because its rx ring was full (imissed): rising, the workers do not "
                 "keep up with the traffic (more workers/queues, or less load)",
                 &ipc::PortCounters::imissed},
                {"turn_dataplane_port_rx_errors_total",
                 "Erroneous frames a dataplane port received and dropped (ierrors: bad FCS, runts, oversized): rising, "
                 "look at the link, its MTU and the device on the other end",
                 &ipc::PortCounters::ierrors},
                {"turn_dataplane_port_tx_errors_total",
                 "Packets a dataplane port failed to transmit (oerrors): rising, the packets are lost on the way out",
                 &ipc::PortCounters::oerrors},
                {"turn_dataplane_port_rx_nombuf_total",
                 "Receives a dataplane port could not do for want of an mbuf (rx_nombuf): rising, the mbuf pool is "
                 "exhausted and packets are dropped",
                 &ipc::PortCounters::rx_nombuf},
            };
            for (const PortFamily& pf : kPortFamilies) {
                auto& f = family(pf.name, pf.help, MetricType::Counter);
                for (const auto& p : ports) {
                    if (p.reported) {
                        counter(f, port_labels(p.c), static_cast<double>(p.c.*pf.value));
                    }
                }
            }
            auto& lu = family("turn_dataplane_port_link_up",
                              "1 while a dataplane port's link is up, as of the dataplane's last report (0 on "
                              "port=\"nic\": no traffic reaches the relay)",
                              MetricType::Gauge);
            auto& ls = family("turn_dataplane_port_link_speed_mbps",
                              "A dataplane port's link speed in Mb/s (0: down or unknown)", MetricType::Gauge);
            for (const auto& p : ports) {
                if (p.reported) {
                    gauge(lu, port_labels(p.c), p.c.link_up != 0 ? 1.0 : 0.0);
                    gauge(ls, port_labels(p.c), static_cast<double>(p.c.link_speed_mbps));
                }
            }
            // The dataplane's next-hop table (where its fast path sends
            // packets), as of its last report, kept like the ports' until a
            // new dataplane process reports: gauges are the state at the
            // report, counters cumulative since the dataplane process started.
            // The families are always there (as the ports'), their series only
            // while a report is held.
            const auto nh = dp_->nexthop();
            auto& ne = family("turn_dataplane_nexthop_entries",
                              "Host entries in the dataplane's next-hop table, by kind: neighbour (mirrored from the "
                              "kernel's neighbour table; they go when the kernel's neighbour goes), learned (from the "
                              "kernel's own egress; they expire after their TTL and make room for newer ones when "
                              "the table is nearly full)",
                              MetricType::Gauge);
            auto& nc = family("turn_dataplane_nexthop_capacity",
                              "Host entries the dataplane's next-hop table holds (turn-dataplane --nexthops)",
                              MetricType::Gauge);
            auto& nd = family("turn_dataplane_nexthop_default",
                              "1 while the dataplane has a default next hop of the family (the kernel's default "
                              "route, or --gw4/--gw6); 0: destinations of that family without a host entry take the "
                              "slow path",
                              MetricType::Gauge);
            auto& nr = family("turn_dataplane_nexthop_kernel_routes",
                              "Kernel routes more specific than the default the dataplane honours, by family (a "
                              "destination they cover takes the slow path until it has a host entry); 33 means more "
                              "than 32: then no destination gets the default next hop, every one without a host "
                              "entry takes the slow path",
                              MetricType::Gauge);
            auto& nm = family("turn_dataplane_nexthop_kernel_mirror",
                              "1 while the dataplane mirrors the kernel's neighbour table and routes into its next-hop "
                              "table; 0: turn-dataplane --no-kernel-mirror",
                              MetricType::Gauge);
            if (nh) {
                gauge(ne, {{"kind", "neighbour"}}, static_cast<double>(nh->hosts - nh->learned));
                gauge(ne, {{"kind", "learned"}}, static_cast<double>(nh->learned));
                gauge(nc, {}, static_cast<double>(nh->capacity));
                gauge(nd, {{"family", "ipv4"}}, nh->default4 != 0 ? 1.0 : 0.0);
                gauge(nd, {{"family", "ipv6"}}, nh->default6 != 0 ? 1.0 : 0.0);
                gauge(nr, {{"family", "ipv4"}}, static_cast<double>(nh->routes4));
                gauge(nr, {{"family", "ipv6"}}, static_cast<double>(nh->routes6));
                gauge(nm, {}, nh->mirror != 0 ? 1.0 : 0.0);
            }
            struct NextHopFamily {
                const char* name;
                const char* help;
                uint64_t ipc::NextHopCounters::*value;
            };
            static constexpr NextHopFamily kNextHopFamilies[] = {
                {"turn_dataplane_nexthop_learned_total",
                 "Next hops the dataplane learned from the kernel's egress and installed in its next-hop table",
                 &ipc::NextHopCounters::learned_total},
                {"turn_dataplane_nexthop_learned_expired_total",
                 "Learned next-hop entries removed at the end of their TTL (the destination's next packet takes "
                 "the slow path once and is learned again)",
                 &ipc::NextHopCounters::learned_expired},
                {"turn_dataplane_nexthop_learned_evicted_total",
                 "Learned next-hop entries removed to make room for a newer one: rising, the table is too small for "
                 "the destinations in use, which take the slow path by turns (raise turn-dataplane --nexthops)",
                 &ipc::NextHopCounters::learned_evicted},
                {"turn_dataplane_nexthop_learn_refused_total",
                 "Learned next hops not installed: the table was full of neighbour entries, or had no free slot "
                 "yet (deleted entries' slots wait for the workers' grace period); those destinations take the "
                 "slow path (raise turn-dataplane --nexthops)",
                 &ipc::NextHopCounters::learn_refused},
                {"turn_dataplane_nexthop_neighbour_set_total",
                 "Neighbour entries the kernel mirror installed or changed in the dataplane's next-hop table",
                 &ipc::NextHopCounters::neigh_set},
                {"turn_dataplane_nexthop_neighbour_removed_total",
                 "Neighbour entries the kernel mirror removed (the kernel's neighbour failed or was deleted)",
                 &ipc::NextHopCounters::neigh_removed},
                {"turn_dataplane_nexthop_mac_retired_total",
                 "Next-hop entries the kernel mirror removed with a neighbour whose MAC address changed or that went "
                 "(the destinations behind that router are learned again)",
                 &ipc::NextHopCounters::mac_retired},
                {"turn_dataplane_nexthop_flushes_total",
                 "Times the kernel mirror emptied the dataplane's next-hop table and read the kernel's neighbours "
                 "again (lost netlink notifications); learned destinations are learned again",
                 &ipc::NextHopCounters::flushes},
            };
            for (const NextHopFamily& nf : kNextHopFamilies) {
                auto& f = family(nf.name, nf.help, MetricType::Counter);
                if (nh) {
                    counter(f, {}, static_cast<double>((*nh).*nf.value));
                }
            }
        }
        auto& draining = family("turn_draining", "1 while the relay drains after SIGTERM", MetricType::Gauge);
        gauge(draining, {}, shared_.draining.load() ? 1.0 : 0.0);

        auto& build = family("turn_relay_build_info", "Always 1; the running turn-relay's version", MetricType::Gauge);
        gauge(build, {{"version", TURN_RELAY_VERSION}}, 1.0);
        auto& ro = family("turn_config_last_reload_successful",
                          "1 at start and after a reload (SIGHUP, turn-ctl reload) that applied everything reloadable "
                          "(keys that need a restart are not a failure); 0 after one that failed (the relay kept "
                          "its previous settings) until the next that succeeds",
                          MetricType::Gauge);
        gauge(ro, {}, shared_.last_reload_ok.load() ? 1.0 : 0.0);
        auto& rt = family("turn_config_last_reload_success_timestamp_seconds",
                          "When the last successful reload happened (the start until the first one), seconds since "
                          "the epoch",
                          MetricType::Gauge);
        gauge(rt, {}, static_cast<double>(shared_.last_reload_success_unix.load()));
        if (const int64_t na = shared_.tls_not_after_unix.load(); na != 0) {
            auto& te = family("turn_tls_certificate_expiry_timestamp_seconds",
                              "notAfter of the TLS certificate in use for TURN over TLS and DTLS, seconds since "
                              "the epoch (a reload that loads a renewed certificate updates it)",
                              MetricType::Gauge);
            gauge(te, {}, static_cast<double>(na));
        }

        if (const ProcessSample p = sample_process(boot_unix_); p.ok) {
            counter(family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
                           MetricType::Counter),
                    {}, p.cpu_seconds);
            gauge(family("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
                         MetricType::Gauge),
                  {}, p.start_unix);
            gauge(family("process_virtual_memory_bytes", "Virtual memory size in bytes", MetricType::Gauge), {},
                  p.virtual_bytes);
            gauge(family("process_resident_memory_bytes", "Resident memory size in bytes", MetricType::Gauge), {},
                  p.resident_bytes);
        }
        gauge(family("process_open_fds", "Number of open file descriptors", MetricType::Gauge), {}, open_fds());
        if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
            gauge(family("process_max_fds", "Maximum number of open file descriptors (the soft limit)",
                         MetricType::Gauge),
                  {}, rl.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(rl.rlim_cur));
        }
        return {std::make_move_iterator(out.begin()), std::make_move_iterator(out.end())};
    }

private:
    const Shared& shared_;
    std::vector<const Stats*> loops_;
    const DataplaneCounters* dp_;
    const double boot_unix_;
};

MetricsExporter::MetricsExporter(const Shared& shared, std::vector<const Stats*> loops,
                                 const DataplaneCounters* dataplane)
    : shared_(shared), collector_(std::make_shared<Collector>(shared, std::move(loops), dataplane)) {}

MetricsExporter::~MetricsExporter() {
    stop();
}

namespace {

// One TCP connection to `to` (an unspecified IP: the loopback of its
// family), opened without waiting and closed at once.
void knock(Address to) {
    if (to.is_unspecified()) {
        to = to.is_v4() ? Address::v4(0x7f000001u, to.port) : Address::v6(in6addr_loopback.s6_addr, to.port);
    }
    sockaddr_storage sa{};
    const size_t len = to.to_sockaddr(&sa);
    const int fd = ::socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    (void)::connect(fd, reinterpret_cast<const sockaddr*>(&sa), static_cast<socklen_t>(len));
    ::close(fd);
}

// GET /health (and HEAD) for load balancers and DNS failover checks: 200
// while the relay takes new allocations; 503 while it drains (SIGTERM,
// turn-ctl drain) or holds [allocation].max_total, so that the checker sends
// new clients elsewhere while the allocations here go on. civetweb calls
// begin_request on its own threads before any handler, without user data:
// the one running exporter's state is a process-wide pointer.
std::atomic<const Shared*> g_health{nullptr};

int begin_request(mg_connection* conn) {
    const mg_request_info* ri = mg_get_request_info(conn);
    const Shared* shared = g_health.load(std::memory_order_acquire);
    if (ri == nullptr || ri->local_uri == nullptr || std::strcmp(ri->local_uri, "/health") != 0 || shared == nullptr) {
        return 0;  // civetweb's own handling: /metrics, or 404
    }
    const bool head = ri->request_method != nullptr && std::strcmp(ri->request_method, "HEAD") == 0;
    if (!head && (ri->request_method == nullptr || std::strcmp(ri->request_method, "GET") != 0)) {
        mg_printf(conn, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return 405;
    }
    const int64_t allocations = shared->allocations.load(std::memory_order_relaxed);
    const uint32_t max_total = shared->config.max_total;
    const bool draining = shared->draining.load(std::memory_order_relaxed);
    const bool full = max_total != 0 && allocations >= static_cast<int64_t>(max_total);
    const char* status = draining ? "draining" : full ? "full" : "ok";
    const int code = draining || full ? 503 : 200;
    const std::string body = std::string("{\"status\":\"") + status + "\",\"allocations\":" + std::to_string(allocations) +
                             ",\"max_total\":" + std::to_string(max_total) +
                             ",\"draining\":" + (draining ? "true" : "false") + "}\n";
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
              "Connection: close\r\n\r\n",
              code, code == 200 ? "OK" : "Service Unavailable", body.size());
    if (!head) {
        mg_write(conn, body.data(), body.size());
    }
    return code;
}

}  // namespace

bool MetricsExporter::serves_ipv6() { return mg_check_feature(8) != 0; }  // 8: IPv6, civetweb.h

void MetricsExporter::stop() {
    if (!exposer_) {
        return;
    }
    // civetweb's listening thread polls its socket with a 2 s timeout
    // (compiled in) and only then sees the stop request, which
    // the Exposer's destructor (mg_stop) waits for: 1-2 s of every
    // shutdown. A connection to the socket ends that poll at once, so the
    // destructor runs on its own thread while this one knocks every few ms
    // until it returns. A knock that lands before the stop request is an
    // empty connection, closed by the server as any other.
    std::atomic<bool> done{false};
    std::thread stopper;
    try {
        stopper = std::thread([this, &done] {
            exposer_.reset();
            done.store(true, std::memory_order_release);
        });
    } catch (const std::system_error&) {
        exposer_.reset();  // no thread to spare: the slow way
        g_health.store(nullptr, std::memory_order_release);
        return;
    }
    for (int i = 0; !done.load(std::memory_order_acquire); i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(i == 0 ? 2 : 10));
        if (listen_ && !done.load(std::memory_order_acquire)) {
            knock(*listen_);
        }
    }
    stopper.join();
    g_health.store(nullptr, std::memory_order_release);
}

std::string MetricsExporter::start(const std::string& listen) {
    try {
        // civetweb: a few threads, and a client that sends half a request (or
        // reads nothing) holds one for at most the request timeout, not for as
        // long as it keeps the connection open, which blocked every scrape.
        CivetCallbacks callbacks;  // copied by civetweb at its start
        callbacks.begin_request = begin_request;
        g_health.store(&shared_, std::memory_order_release);
        exposer_ = std::make_unique<prometheus::Exposer>(
            std::vector<std::string>{"listening_ports", listen, "num_threads", "4", "request_timeout_ms", "3000"}, &callbacks);
        exposer_->RegisterCollectable(collector_);
        listen_ = Address::parse(listen);
    } catch (const std::exception& e) {
        return "[metrics].listen: cannot serve on " + listen + ": " + e.what();
    }
    return {};
}

}  // namespace turn::cp
