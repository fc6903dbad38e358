// The control plane's end of the dataplane link (src/ipc/protocol.h): an
// OffloadHook that turns every forwarding decision into IPC messages for the
// DPDK dataplane, which connects to a unix SOCK_SEQPACKET socket we listen on.
//
// Threads (docs/CONTROLPLANE.md, "Attaching the dataplane"): the event loops
// call the hook; each call updates a mirror of the offloaded state and, while
// a dataplane is in sync, appends the encoded message to an outbox, both under
// one mutex held for O(1) work; an eventfd wakes the IPC thread. The IPC
// thread owns the sockets: it accepts, answers every Hello with Settings,
// ExternalIps (behind a NAT), ResyncBegin, the mirror, ResyncEnd (built under
// the same mutex, so the snapshot and the incremental messages that follow it
// are in one order), sends the outbox
// without blocking (a backlog beyond max_backlog, kMaxBacklog but in tests,
// drops the connection; the dataplane reconnects and gets a resync), asks for
// counters periodically and folds the reports into DataplaneCounters. A
// missing or failed dataplane never affects the loops: they keep relaying in
// socket mode.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.h"
#include "core/offload.h"
#include "core/stats.h"
#include "ipc/protocol.h"

namespace turn::cp {

// Why a dataplane connection ended (turn_dataplane_disconnects_total's
// reason label): the dataplane closed it or its read failed; a new
// connection replaced it; it stopped reading and its backlog passed the
// bound; a send failed.
enum class Disconnect : uint8_t { kClosed, kReplaced, kBacklogFull, kSendError, kCount };
inline const char* disconnect_label(Disconnect d) {
    switch (d) {
    case Disconnect::kClosed: return "closed";
    case Disconnect::kReplaced: return "replaced";
    case Disconnect::kBacklogFull: return "backlog_full";
    case Disconnect::kSendError: return "send_error";
    case Disconnect::kCount: break;
    }
    return "?";
}

// Fast-path traffic reported by the dataplane, summed over allocations;
// written by the IPC thread, read by the metrics exporter.
struct DataplaneCounters {
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Direction::kCount)> packets{};
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Direction::kCount)> bytes{};
    std::atomic<uint64_t> dropped{0};
    std::atomic<uint64_t> reports{0};     // complete CountersReports received
    std::atomic<uint64_t> resyncs{0};     // full resyncs sent
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Disconnect::kCount)> disconnects_by{};
    // Connections ended, all reasons.
    uint64_t disconnects() const {
        uint64_t n = 0;
        for (const auto& d : disconnects_by) {
            n += d.load();
        }
        return n;
    }
    std::atomic<uint64_t> bad_messages{0};  // undecodable or of a type this control plane does not know
    // The attached dataplane answered this connection's Settings with the
    // same rule (a dataplane that predates them does not answer).
    std::atomic<bool> settings_applied{false};
    // The attached dataplane answered this connection's ExternalIps with the
    // same addresses (IpcServer::set_external_ips); until then permissions
    // and channels whose peer is on an external IP are not sent to it.
    std::atomic<bool> external_ips_applied{false};
    std::atomic<bool> connected{false};   // a dataplane is attached and the socket took its whole resync

    // Each dataplane worker's last WorkerCounters, by worker id (a new
    // dataplane process starts them over). Written by the IPC thread.
    std::map<uint32_t, ipc::WorkerCounters> workers() const {
        std::lock_guard lk(workers_mu);
        return workers_;
    }
    void set_worker(const ipc::WorkerCounters& c) {
        std::lock_guard lk(workers_mu);
        workers_[c.worker] = c;
    }
    void clear_workers() {
        std::lock_guard lk(workers_mu);
        workers_.clear();
    }

    // The dataplane's ports' last PortCounters, indexed by ipc::PortRole
    // (`reported` false until one came; a new dataplane process starts them
    // over, like the workers'). Their names are NUL-terminated printable
    // ASCII.
    struct Port {
        bool reported = false;
        ipc::PortCounters c{};
    };
    using Ports = std::array<Port, ipc::kPortRoles>;
    Ports ports() const {
        std::lock_guard lk(ports_mu);
        return ports_;
    }
    // Stores `c` under its role, its name cut to kNameLen - 1 bytes with
    // anything but printable ASCII replaced by '?' (it came over a socket and
    // becomes a label value). False, and nothing stored, for an unknown role.
    bool set_port(const ipc::PortCounters& c);
    void clear_ports() {
        std::lock_guard lk(ports_mu);
        ports_ = {};
    }

    // The dataplane's next-hop table's last NextHopCounters (none until one
    // came; a new dataplane process starts it over, like the ports'). Only
    // one that passed ipc::valid() is stored (learned <= hosts <= capacity).
    std::optional<ipc::NextHopCounters> nexthop() const {
        std::lock_guard lk(nexthop_mu);
        return nexthop_;
    }
    void set_nexthop(const ipc::NextHopCounters& c) {
        std::lock_guard lk(nexthop_mu);
        nexthop_ = c;
    }
    void clear_nexthop() {
        std::lock_guard lk(nexthop_mu);
        nexthop_.reset();
    }

private:
    mutable std::mutex workers_mu;
    std::map<uint32_t, ipc::WorkerCounters> workers_;
    mutable std::mutex ports_mu;
    Ports ports_;
    mutable std::mutex nexthop_mu;
    std::optional<ipc::NextHopCounters> nexthop_;
};

class IpcServer final : public OffloadHook {
public:
    // Messages queued for one connection, not taken by its socket, before it
    // is dropped; what is still queued of its resync and of the Adds its
    // ExternalIps echo released does not count (Buf::state).
    static constexpr size_t kMaxBacklog = 1u << 20;
    // SO_SNDBUF asked for on a dataplane connection (the kernel caps it at
    // net.core.wmem_max and doubles it).
    static constexpr int kSendBuffer = 4 << 20;

    // max_backlog: kMaxBacklog but in tests, which cannot queue a million
    // messages to see the bound act. Not a setting: it only caps the memory
    // a dataplane that stopped reading costs the control plane (about
    // 130 MiB beyond the resync); a lower cap would just resync a slow
    // dataplane sooner.
    explicit IpcServer(std::string path, uint32_t counters_interval_ms = 1000, size_t max_backlog = kMaxBacklog);
    ~IpcServer() override;
    IpcServer(const IpcServer&) = delete;
    IpcServer& operator=(const IpcServer&) = delete;

    // The relay-wide rules every resync starts with (ipc::Settings): the
    // TOS rule of relayed data, Config::tos_keep() / tos_set() ([server].dscp).
    // Before start().
    void set_tos_rule(uint8_t keep, uint8_t set) {
        settings_.tos_keep = keep;
        settings_.tos_set = set;
    }
    // Behind a 1:1 NAT (Config::nat_pair: each family's relay IP and
    // external IP, when it has both): every resync sends ipc::ExternalIps
    // after the Settings, with those pairs. A dataplane that predates the
    // message would send packets for a peer on an external IP to its router,
    // i.e. to the NAT, so until the connection's dataplane echoes it the
    // permissions and channels whose peer is on one of those external IPs are
    // mirrored but not sent; the echo sends them. No pair:
    // nothing is sent and nothing withheld. Before start().
    void set_external_ips(const Config& c);
    // Allocation ids below `id` are a previous process's (restored from
    // [state].dir; set before start()). The first counters report of the
    // first dataplane this process meets adds their counts to the
    // allocations' usage (which goes on from the previous process's) but not
    // to turn_relayed_*_total{path="dataplane"}: the previous process
    // exported them up to its last report, and a restarted process's
    // counters start from zero, so Prometheus's increase() over the restart
    // would count that traffic twice. (What the dataplane relayed between
    // the previous process's last report and this one's first is in neither.)
    void set_inherited_below(uint64_t id) { inherited_below_ = id; }
    // Binds and listens (replacing a stale socket file), starts the IPC
    // thread. Returns an error message on failure.
    std::string start();
    // What start() refuses before it binds: something other than a socket
    // at `path` (a stale socket is replaced). "" or the error.
    static std::string check_path(const std::string& path);
    // Stops the thread and closes the sockets; no Del is sent, so the
    // dataplane keeps forwarding until a control plane resyncs it.
    void stop();

    const DataplaneCounters& counters() const { return counters_; }

    void allocation_added(const OffloadAllocation& a) override;
    void allocation_removed(uint64_t allocation_id) override;
    // The Del and the Add under one lock: a CountersRequest the IPC thread
    // queues cannot fall between them. One between them made the dataplane
    // report the Del's final and count the Add from zero, and that final,
    // for an id the mirror holds again, went to no allocation's usage.
    void allocation_replaced(const OffloadAllocation& a) override;
    void permission_added(uint64_t allocation_id, const Address& peer_ip) override;
    void permission_removed(uint64_t allocation_id, const Address& peer_ip) override;
    void channel_added(uint64_t allocation_id, uint16_t channel, const Address& peer) override;
    void channel_removed(uint64_t allocation_id, uint16_t channel, const Address& peer) override;
    // The dataplane's fast-path traffic of the allocation, summed over its
    // counters reports (and over dataplane restarts) up to the last one.
    RelayUsage offloaded_usage(uint64_t allocation_id) const override;
    RelayUsage offloaded_carry(uint64_t allocation_id) const override;
    // Keeps an offloaded allocation's end line until the report after its Del
    // (its final totals: the last second of its fast-path traffic), at most
    // two counters requests after the removal; a lost dataplane logs it with
    // what was reported.
    bool defer_end(uint64_t allocation_id, EndLine& line, RelayUsage& offloaded) override;
    static constexpr size_t kMaxEnded = 1u << 16;  // more end at once: logged at once

private:
    // One encoded message, inline (no heap allocation per message on the
    // loops' side); the largest control-plane message is AllocationAdd (120 B).
    struct Buf {
        uint32_t len = 0;
        // Part of the connection's state, as a resync's messages and the
        // Adds an ExternalIps echo released are: room beyond the backlog
        // bound while it waits.
        bool state = false;
        std::array<uint8_t, 128> bytes{};
    };
    struct Mirrored {
        OffloadAllocation a;
        std::unordered_set<Address, AddressHash> permissions;  // peer IPs, port 0
        std::map<uint16_t, Address> channels;     // channel -> peer
        bool ending = false;  // defer_end came (and did not keep its line): no more usage
    };

    void run();
    void wake();
    void accept_one();
    void close_conn(Disconnect kind, const char* why);
    void on_message(std::span<const uint8_t> d);
    // An undecodable datagram (type -1: not even a header) or one of a type
    // this control plane does not know (a newer dataplane's): counted,
    // logged once per type and connection; the link stays.
    void bad_message(int type, size_t bytes);
    void on_hello(const ipc::Hello& h);
    void on_counters(const ipc::CountersReport& r);
    // The dataplane echoed this connection's ExternalIps: the withheld
    // permissions and channels are sent.
    void on_external_ips_applied();
    bool flush();  // false: connection dropped
    // Logs every kept end line now (the link is gone, or the server stops).
    void log_ended();
    // Logs the kept end lines past their deadline (checked once an interval).
    void log_overdue(uint64_t now);

    // Under mu_: append to the outbox if a dataplane is in sync; true if queued.
    template <typename M>
    bool push_locked(M& m);
    // Under mu_: the mirror and the outbox for allocation_added /
    // allocation_removed (true if queued).
    bool added_locked(const OffloadAllocation& a);
    bool removed_locked(uint64_t id);
    // Runs `change` under mu_ (it returns whether it queued anything), then
    // wakes the IPC thread outside the lock if it did.
    template <typename F>
    void change_locked(F&& change);
    template <typename M>
    Buf encode_buf(M& m);
    // Messages that install one allocation with all its state (less what
    // withheld_locked() keeps back).
    void append_state(const Mirrored& m, std::deque<Buf>& out, uint64_t& adds);
    // The PermissionAdd and ChannelAdd of each of `m`'s permissions and
    // channels whose peer `pick` takes, handed to `emit` (a resync's, and
    // those the ExternalIps echo releases).
    template <typename Pick, typename Emit>
    static void peer_adds(const Mirrored& m, Pick&& pick, Emit&& emit);
    // Whether `peer` is on one of the external IPs.
    bool on_external_ip(const Address& peer) const;
    // Under mu_: a permission or channel to `peer` is mirrored but not sent,
    // because its peer is on an external IP and this connection's dataplane
    // has not confirmed the external IPs.
    bool withheld_locked(const Address& peer) const { return !external_applied_ && on_external_ip(peer); }

    std::string path_;
    uint32_t counters_interval_ms_;
    size_t max_backlog_;
    int listen_fd_ = -1;
    int conn_fd_ = -1;
    int wake_fd_ = -1;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    DataplaneCounters counters_;
    // set_external_ips(), before start(); read-only after, by every thread.
    std::vector<Address> external_ips_;  // normalised, port 0

    // Shared with the event loops.
    mutable std::mutex mu_;
    std::unordered_map<uint64_t, Mirrored> mirror_;
    // Fast-path usage of the allocations in mirror_ (an ending one's moves
    // to ended_ in defer_end).
    std::unordered_map<uint64_t, RelayUsage> usage_;
    // Of usage_, what earlier dataplane processes counted (taken at each
    // Hello with a new boot id): offloaded_carry.
    std::unordered_map<uint64_t, RelayUsage> carried_;
    struct Ended {
        EndLine line;
        RelayUsage fast;           // the fast path's share reported so far
        uint64_t due = 0;          // logged when answered_ reaches it, final or not
        uint64_t deadline_ms = 0;  // or then, whatever the dataplane answers
    };
    std::unordered_map<uint64_t, Ended> ended_;  // by allocation id
    // Under mu_: moves the waiting end lines `pick` chooses out of ended_
    // into `out` (to be logged outside the lock, log_ends).
    template <typename P>
    void take_ended_locked(P&& pick, std::vector<Ended>& out);
    static void log_ends(const std::vector<Ended>& lines);
    uint64_t requests_ = 0;  // CountersRequests sent on this connection
    uint64_t answered_ = 0;  // complete reports received on this connection
    uint64_t next_deadline_check_ = 0;
    std::vector<Buf> outbox_;
    bool in_sync_ = false;  // outbox_ is collected only while true
    // This connection's dataplane echoed external_msg_ (since its last
    // Hello): permissions and channels on an external IP are sent.
    bool external_applied_ = false;
    std::atomic<uint64_t> seq_{0};

    // IPC thread only.
    std::deque<Buf> pending_;
    size_t resync_left_ = 0;  // messages of the last resync not yet sent (its ResyncEnd last); IPC thread
    size_t state_left_ = 0;  // messages in pending_ with Buf::state; IPC thread
    uint64_t generation_;
    uint64_t boot_id_ = 0;
    // Workers the connected dataplane's Hello announced (at most
    // kMaxDataplaneWorkers): a WorkerCounters of another index is a bad
    // message, not a new series kept forever.
    static constexpr uint32_t kMaxDataplaneWorkers = 1024;
    uint32_t dp_workers_ = 0;
    uint64_t inherited_below_ = 0;  // set_inherited_below
    std::optional<uint64_t> first_boot_;  // the boot id of the first Hello this process got
    bool first_report_done_ = false;      // a whole counters report has come (IPC thread)
    ipc::Settings settings_{};  // sent before each ResyncBegin
    bool settings_warned_ = false;  // dataplane_ignores_settings logged on this connection
    std::optional<ipc::ExternalIps> external_msg_;  // sent after the Settings; none without a pair
    bool external_sent_ = false;    // external_msg_ went out since this connection's last Hello
    bool external_warned_ = false;  // dataplane_ignores_external_ips logged on this connection
    // Message types already logged as bad on this connection (-1: datagrams
    // without a header): a dataplane newer than this control plane sends its
    // unknown types with every report, so each is logged once per connection
    // (all are counted).
    std::set<int> bad_logged_;
    struct Last {
        ipc::AllocationCounters c;
        bool seen = false;  // in this report (cleared at each complete one)
    };
    std::unordered_map<uint64_t, Last> last_;
};

}  // namespace turn::cp
