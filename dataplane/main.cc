// turn-dataplane: the DPDK primary process (DESIGN.md "Two processes").
//
//   turn-dataplane <EAL args, ports as --vdev> -- --nic <port name> --exc <port name>
//                  --ipc /run/turnrelay/dataplane.sock [--mtu 1500]
//                  [--gw4 MAC [--gw4-vlan ID]] [--gw6 MAC [--gw6-vlan ID]] [--flows N]
//                  [--exc-kernel-if NAME] [--no-kernel-mirror]
//   turn-dataplane -- --help     (options.cc: every option; EAL is not started)
//
// e.g. on a veth pair whose kernel end (exc0-k) holds the relay IP:
//   turn-dataplane -l 0,1 --vdev=net_af_packet0,iface=nic0
//       --vdev=net_af_packet1,iface=exc0-d -- --nic net_af_packet0 --exc net_af_packet1
//
// The main lcore applies control-plane messages (the flow tables' only
// writer) and keeps the IPC session alive; every other lcore is a worker with
// its own rx/tx queue on both ports. Fatal errors happen only at start-up:
// usage errors exit 2, found before rte_eal_init; the rest exit 1, and those
// after rte_eal_init only after the Dataplane's teardown and eal_cleanup()
// (README "Command line").
#include <fcntl.h>
#include <rte_net_crc.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/dpdk.h"
#include "common/port_counters.h"
#include "eal_cleanup.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "ipc/protocol.h"
#include "nexthop/kernel_mirror.h"
#include "nexthop/nexthop.h"
#include "options.h"
#include "worker/pipeline.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

// A start-up error after rte_eal_init. fatal() throws it; main() catches it
// after the Dataplane's destructor has released what was set up, calls
// eal_cleanup() and exits with `code`, so that an error leaves nothing in
// /var/run/dpdk/<prefix> or the hugepage directory.
struct Fatal {
    std::string what;
    int code = dp::kExitFailed;
};

[[noreturn]] void fatal(const std::string& what) { throw Fatal{what}; }

uint16_t port_by_name(const std::string& name) {
    uint16_t p;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &p) != 0) {
        std::string hint;
        if (name.rfind("virtio_user", 0) == 0 && access("/dev/vhost-net", R_OK | W_OK) != 0) {
            hint = "; virtio-user needs /dev/vhost-net (modprobe vhost_net), or use a veth pair with "
                   "net_af_xdp / net_af_packet as the exception port";
        }
        fatal("no DPDK port named '" + name + "' (add it with --vdev=... or -a <pci>)" + hint);
    }
    if (p >= dp::kSelfPort) {
        fatal("port id " + std::to_string(p) + " is above the supported maximum (" + std::to_string(dp::kSelfPort - 1) +
              ")");
    }
    return p;
}

// Bytes of the largest frame a port must carry for --mtu: Ethernet, one
// 802.1Q tag (a trunk port; Q-in-Q is never forwarded) and the IP packet.
uint32_t max_frame(uint16_t mtu) { return uint32_t{mtu} + RTE_ETHER_HDR_LEN + 4; }

// The mbufs' data room: headroom plus the largest frame, so that every
// received frame is one segment (the fast path punts chains; no port is
// set up for scattered rx), plus 256 bytes that AF_XDP keeps in front of
// each frame inside the buffer (XDP_PACKET_HEADROOM: net_af_xdp receives
// into the mbufs' memory and drops a frame longer than what is left).
uint16_t data_room(uint16_t mtu) {
    constexpr uint32_t kXdpHeadroom = 256;
    return static_cast<uint16_t>(RTE_PKTMBUF_HEADROOM +
                                 std::max<uint32_t>(RTE_MBUF_DEFAULT_DATAROOM, max_frame(mtu) + kXdpHeadroom));
}

// Bytes one mbuf takes in the pool (header, data room, the mempool's own
// header and padding): what net_af_xdp registers as one UMEM frame, and what
// the pool's memory is made of.
size_t mbuf_object(uint16_t mtu) { return rte_mempool_calc_obj_size(sizeof(rte_mbuf) + data_room(mtu), 0, nullptr); }

// Queue pairs to set up on a port for `workers` workers: one each, or as
// many as the port has.
uint16_t queues_for(uint16_t port, uint32_t workers) {
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0) {
        fatal("rte_eth_dev_info_get");
    }
    const uint32_t have = std::min(info.max_rx_queues, info.max_tx_queues);
    if (have == 0) {
        fatal("port " + std::to_string(port) + " has no queues");
    }
    return static_cast<uint16_t>(std::min(have, workers));
}

void setup_port(const std::string& name, uint16_t port, uint16_t queues, rte_mempool* pool, uint16_t mtu) {
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0) {
        fatal("rte_eth_dev_info_get");
    }
    if (queues > info.max_rx_queues || queues > info.max_tx_queues) {
        fatal(name + " has " + std::to_string(std::min(info.max_rx_queues, info.max_tx_queues)) +
            " queue pair(s), fewer than the " + std::to_string(queues) +
            " workers: each worker needs its own NIC queue (one worker lcore per queue; for net_af_packet add "
            "qpairs=<workers> to its --vdev)");
    }
    // The port's MTU is --mtu: the fast path sends packets up to it and the
    // kernel's egress through the exception port is sized by it too. The
    // largest MTU the port takes is max_mtu, and no more than its largest
    // frame less the overhead ethdev assumes (rte_eth_dev_configure's check).
    const uint32_t overhead = info.max_mtu != UINT16_MAX && info.max_rx_pktlen > info.max_mtu
                                  ? info.max_rx_pktlen - info.max_mtu
                                  : RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
    const uint32_t max_mtu =
        std::min<uint32_t>(info.max_mtu, info.max_rx_pktlen > overhead ? info.max_rx_pktlen - overhead : 0);
    const std::string drv = info.driver_name != nullptr ? info.driver_name : "";
    const bool af_xdp = drv.find("af_xdp") != std::string::npos;
    if (mtu < info.min_mtu || mtu > max_mtu) {
        std::string hint;
        if (drv.find("af_packet") != std::string::npos) {
            hint = "; net_af_packet carries standard frames only: for a larger MTU use net_af_xdp (up to a page "
                   "per frame) or virtio-user";
        } else if (af_xdp) {
            hint = "; AF_XDP takes one page per frame";
        }
        fatal(name + " (" + drv + ") takes an MTU from " + std::to_string(info.min_mtu) + " to " +
            std::to_string(max_mtu) + ", not --mtu " + std::to_string(mtu) + hint);
    }
    rte_eth_conf conf{};
    conf.rxmode.mtu = mtu;
    if (queues > 1) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf =
            (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    }
    int rc = rte_eth_dev_configure(port, queues, queues, &conf);
    if (rc != 0) {
        fatal("rte_eth_dev_configure " + name + ": " + rte_strerror(-rc));
    }
    // Ports whose driver sets a link MTU (the NIC's, af_packet's and
    // af_xdp's interface) get it now; net_null/net_ring/net_pcap have none
    // to set and enforce nothing (-ENOTSUP).
    rc = rte_eth_dev_set_mtu(port, mtu);
    if (rc != 0 && rc != -ENOTSUP) {
        fatal("setting the MTU of " + name + " to " + std::to_string(mtu) + ": " + rte_strerror(-rc));
    }
    for (uint16_t q = 0; q < queues; q++) {
        rc = rte_eth_rx_queue_setup(port, q, 1024, rte_eth_dev_socket_id(port), nullptr, pool);
        if (rc == 0) {
            rc = rte_eth_tx_queue_setup(port, q, 1024, rte_eth_dev_socket_id(port), nullptr);
        }
        if (rc != 0) {
            std::string hint;
            if (af_xdp && mbuf_object(mtu) > static_cast<size_t>(getpagesize())) {
                // net_af_xdp registers each mbuf as one UMEM frame; kernels
                // before 6.6 refuse frames larger than a page.
                hint = "; with --mtu " + std::to_string(mtu) +
                       " an mbuf is larger than a page, which AF_XDP takes only on kernels from 6.6: lower --mtu "
                       "to 3400 or less";
            }
            fatal("queue setup on " + name + " (queue " + std::to_string(q) + "): " + rte_strerror(-rc) + hint);
        }
    }
    if (rte_eth_dev_start(port) != 0) {
        fatal("rte_eth_dev_start port " + std::to_string(port));
    }
    rte_eth_promiscuous_enable(port);
}

// The exception port's kernel end must carry the same MTU as the ports:
// a larger one sends frames the NIC drops, a smaller one drops what the
// dataplane punts to it.
// Read with SIOCGIFMTU in this process's network namespace (sysfs would
// follow its mount, which nsenter does not change).
void check_kernel_mtu(int ifindex, uint16_t mtu) {
    ifreq r{};
    if (ifindex == 0 || if_indextoname(static_cast<unsigned>(ifindex), r.ifr_name) == nullptr) {
        return;
    }
    const std::string name = r.ifr_name;
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const bool ok = fd >= 0 && ioctl(fd, SIOCGIFMTU, &r) == 0;
    if (fd >= 0) {
        close(fd);
    }
    const auto kmtu = static_cast<unsigned>(r.ifr_mtu);
    if (ok && kmtu != mtu) {
        fatal("the exception port's kernel interface " + name + " has MTU " + std::to_string(kmtu) +
            " and --mtu is " + std::to_string(mtu) + ": make them equal (ip link set " + name + " mtu " +
            std::to_string(mtu) + ", or deploy/setup-exception-port.sh --mtu " + std::to_string(mtu) +
            ", or --mtu " + std::to_string(kmtu) + ")");
    }
}

int worker_main(void* arg) {
    auto* w = static_cast<dp::Worker*>(arg);
    while (!g_stop.load(std::memory_order_relaxed)) {
        dp::poll_once(*w);
    }
    // No more quiescent states come from this worker: the main lcore, which
    // may still be applying a message (its deletes wait for the workers'
    // grace periods), must not wait for it.
    rte_rcu_qsbr_thread_offline(w->flows->rcu, w->cfg.id);
    return 0;
}

// The control-plane link: connect, Hello, then apply every datagram. On any
// error the socket is closed and reconnected with exponential backoff; the
// flow tables keep forwarding meanwhile and the control plane's resync on
// reconnect replaces their content. The socket never blocks the main lcore:
// it is non-blocking, and a send waits only a bounded time for room
// (send_msg).
class IpcClient {
public:
    IpcClient(std::string path, dp::Applier& ap, uint32_t workers) : path_(std::move(path)), ap_(ap), workers_(workers) {
        std::random_device rd;
        boot_id_ = (uint64_t{rd()} << 32) | rd();
    }
    ~IpcClient() { close_fd(); }

    // One step of the main loop; waits at most `timeout_ms` for datagrams,
    // plus what answering them takes (send_msg), and returns early when
    // `wake_fd` (the kernel mirror's notifications; -1: none) is readable.
    void step(int timeout_ms, int wake_fd) {
        if (fd_ < 0) {
            const uint64_t now = rte_get_timer_cycles();
            if (now < next_try_) {
                pollfd w{wake_fd, POLLIN, 0};
                poll(&w, 1, timeout_ms);
                return;
            }
            if (!connect_once()) {
                backoff_ms_ = backoff_ms_ == 0 ? 100 : std::min<uint64_t>(backoff_ms_ * 2, 5000);
                next_try_ = now + rte_get_timer_hz() * backoff_ms_ / 1000;
                return;
            }
            backoff_ms_ = 0;
        }
        pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
        if (poll(p, 2, timeout_ms) <= 0 || p[0].revents == 0) {
            return;
        }
        uint8_t buf[turn::ipc::kMaxMessage];
        while (fd_ >= 0) {  // an answer's send_msg may have dropped the link
            const ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                ap_.apply({buf, static_cast<size_t>(n)}, [this](std::span<const uint8_t> out) { send_msg(out); });
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                std::fprintf(stderr, "turn-dataplane: control plane link closed, reconnecting\n");
                close_fd();
            }
            return;
        }
    }

private:
    bool connect_once() {
        // Non-blocking from the start: a control plane that does not accept
        // fills its listen backlog, and a blocking connect() would then wait
        // for it; this one fails with EAGAIN and is retried with the backoff.
        fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            return false;
        }
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
        if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            close_fd();
            return false;
        }
        turn::ipc::Hello h{};
        h.pid = static_cast<uint32_t>(getpid());
        h.workers = workers_;
        h.boot_id = boot_id_;
        send_msg(turn::ipc::encode(h, ++seq_));
        if (fd_ >= 0) {
            std::fprintf(stderr, "turn-dataplane: connected to %s, sent Hello\n", path_.c_str());
        }
        return fd_ >= 0;
    }
    // A control plane that does not read for this long is stopped or wedged,
    // not busy: its IPC thread reads whatever is queued at least every 100 ms
    // (controlplane/offload/ipc_server.cc), so a healthy one, even on a
    // loaded host, leaves no datagram waiting for seconds. Dropping the link
    // makes this process reconnect; the control plane then resends its whole
    // state (a resync), so nothing is lost but the reports of that link.
    static constexpr uint64_t kSendWaitMs = 3000;

    // Every datagram to the control plane (Hello, the answers the Applier
    // sends through `reply`) goes here. One the socket has no room for
    // waits for it in slices of 100 ms, checking the stop flag between them;
    // if SIGTERM/SIGINT come meanwhile, or the control plane takes nothing
    // for kSendWaitMs, or the send fails, the link is dropped (never left
    // with a hole in a report), and the next step() reconnects unless the
    // process is stopping.
    // While it waits, the main loop's other work (the kernel mirror, learned
    // next hops, QSBR reclaim) waits too: for at most kSendWaitMs per
    // datagram, which only a wedged control plane costs. Doing that work from
    // inside a reply, in the middle of a message the Applier is applying,
    // would run the other writers of the tables and next hops where they
    // never run otherwise, for a delay of seconds at worst.
    void send_msg(std::span<const uint8_t> m) {
        const uint64_t give_up = rte_get_timer_cycles() + rte_get_timer_hz() * kSendWaitMs / 1000;
        while (fd_ >= 0) {
            if (send(fd_, m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) {
                return;  // whole: SOCK_SEQPACKET sends a datagram whole or not at all
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                std::fprintf(stderr, "turn-dataplane: sending to the control plane: %s, reconnecting\n",
                             std::strerror(errno));
                close_fd();
            } else if (g_stop.load()) {
                close_fd();  // stopping: the link ends with the process
            } else if (rte_get_timer_cycles() >= give_up) {
                std::fprintf(stderr,
                             "turn-dataplane: the control plane has read nothing for %llu ms, dropping the link "
                             "and reconnecting\n",
                             static_cast<unsigned long long>(kSendWaitMs));
                close_fd();
            } else {
                pollfd p{fd_, POLLOUT, 0};
                poll(&p, 1, 100);
            }
        }
    }
    void close_fd() {
        if (fd_ >= 0) {
            close(fd_);
            fd_ = -1;
        }
    }

    std::string path_;
    dp::Applier& ap_;
    uint32_t workers_;
    int fd_ = -1;
    uint64_t seq_ = 0;
    uint64_t boot_id_ = 0;
    uint64_t backoff_ms_ = 0;
    uint64_t next_try_ = 0;
};

// Everything turn-dataplane sets up after rte_eal_init, filled in by start()
// as it goes. The destructor releases it in one order on every way out (a
// start-up error unwinding from fatal(), or the main loop's end after
// SIGTERM/SIGINT): workers stopped, the kernel mirror closed, the workers'
// QSBR ids released, ports stopped, punt rings drained, the tables freed,
// every port closed (its queues back to the pool), the mbuf pool freed.
// main() then calls eal_cleanup().
struct Dataplane {
    Dataplane() = default;
    Dataplane(const Dataplane&) = delete;
    Dataplane& operator=(const Dataplane&) = delete;
    ~Dataplane() {
        stop_workers();
        mirror.reset();
        for (uint32_t i = 0; i < registered; i++) {
            ws[i].fini();
        }
        for (const uint16_t p : started) {
            rte_eth_dev_stop(p);
        }
        for (rte_ring* r : exc_rings) {  // punts no owner sent before the workers stopped
            void* m = nullptr;
            while (rte_ring_dequeue(r, &m) == 0) {
                rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
            }
            rte_ring_free(r);
        }
        delete nh;
        delete flows;
        // Every probed port, also those start() did not get to (DPDK 22.11's
        // rte_eal_cleanup closes none).
        std::vector<uint16_t> ports;
        uint16_t p;
        RTE_ETH_FOREACH_DEV(p) { ports.push_back(p); }
        for (const uint16_t q : ports) {
            rte_eth_dev_close(q);
        }
        rte_mempool_free(pool);
    }
    void stop_workers() {
        if (launched) {
            g_stop.store(true);
            rte_eal_mp_wait_lcore();
            launched = false;
        }
    }

    uint16_t nic = 0;
    uint16_t exc = 0;
    uint32_t workers = 0;
    rte_mempool* pool = nullptr;
    std::vector<uint16_t> started;     // ports rte_eth_dev_start started
    std::vector<rte_ring*> exc_rings;  // [owner]: the punts of workers id % exc_queues == owner
    dp::FlowTables* flows = nullptr;
    dp::NextHops* nh = nullptr;
    std::unique_ptr<dp::KernelMirror> mirror;
    std::vector<dp::Worker> ws;
    uint32_t registered = 0;  // ws[0, registered) hold a QSBR thread id (Worker::init)
    bool launched = false;    // workers running on their lcores
};

// The next-hop table's state and totals (ipc::NextHopCounters), for the
// control plane's reports and the totals printed at exit.
void nexthop_counters(const Dataplane& d, turn::ipc::NextHopCounters& c) {
    const dp::NextHops& nh = *d.nh;
    c.capacity = nh.capacity();
    c.hosts = std::min(nh.hosts(), c.capacity);
    c.learned = std::min(nh.learned(), c.hosts);
    c.default4 = nh.default_word(4) != 0 ? 1 : 0;
    c.default6 = nh.default_word(6) != 0 ? 1 : 0;
    c.mirror = d.mirror ? 1 : 0;
    c.routes4 = nh.prefix_count(4);
    c.routes6 = nh.prefix_count(6);
    const auto& ls = nh.learn_stats();
    c.learned_total = ls.installed;
    c.learned_expired = ls.expired;
    c.learned_evicted = ls.evicted;
    c.learn_refused = ls.refused;
    if (d.mirror) {
        const auto& ms = d.mirror->stats();
        c.neigh_set = ms.neigh_set;
        c.neigh_removed = ms.neigh_removed;
        c.mac_retired = ms.mac_retired;
        c.flushes = ms.flushes;
    }
}

// Ports, memory, tables, next hops, then the workers: the last step, so that
// no start-up error can happen while they run.
void start(const dp::Options& o, int named_kernel_if, Dataplane& d) {
    d.workers = rte_lcore_count() - 1;
    if (d.workers == 0) {
        fatal("needs at least two lcores (-l main,worker...): the main lcore applies control-plane updates");
    }
    const uint32_t workers = d.workers;
    d.nic = port_by_name(o.nic);
    d.exc = port_by_name(o.exc);
    const uint16_t nic = d.nic;
    const uint16_t exc = d.exc;
    // The exception port may have fewer queues than there are workers (a veth
    // driven by AF_XDP in DPDK 22.11 has one): the workers beyond its queues
    // hand their punts to those that own one through a ring
    // (WorkerConfig::exc_ring: one per owner, so that a worker's punts keep
    // their order). The NIC needs a queue per worker.
    const uint16_t exc_queues = queues_for(exc, workers);
    constexpr unsigned kExcRingSize = 4096;
    const uint32_t mbufs = 8191 * workers + 4096 + (exc_queues < workers ? kExcRingSize * exc_queues : 0);
    d.pool = rte_pktmbuf_pool_create("dp_mbufs", mbufs, 256, 0, data_room(o.mtu), static_cast<int>(rte_socket_id()));
    if (d.pool == nullptr) {
        // What it asked for, so that the operator can size hugepages: the
        // mbufs grow with --mtu and their number with the workers.
        const uint64_t mib = (uint64_t{mbufs} * mbuf_object(o.mtu) >> 20) + 1;
        fatal(std::string("mbuf pool: ") + rte_strerror(rte_errno) + " (" + std::to_string(mbufs) + " mbufs of " +
              std::to_string(data_room(o.mtu)) + " bytes for " + std::to_string(workers) + " workers and --mtu " +
              std::to_string(o.mtu) + ", about " + std::to_string(mib) +
              " MiB: reserve more hugepages, raise --socket-mem or -m, or lower --mtu)");
    }
    setup_port(o.nic, nic, static_cast<uint16_t>(workers), d.pool, o.mtu);
    d.started.push_back(nic);
    setup_port(o.exc, exc, exc_queues, d.pool, o.mtu);
    d.started.push_back(exc);
    if (exc_queues < workers) {
        for (uint16_t q = 0; q < exc_queues; q++) {
            rte_ring* r = rte_ring_create(("dp_exc_punts" + std::to_string(q)).c_str(), kExcRingSize,
                                          static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
            if (r == nullptr) {
                fatal(std::string("exception ring: ") + rte_strerror(rte_errno));
            }
            d.exc_rings.push_back(r);
        }
        std::fprintf(stderr,
                     "turn-dataplane: %s has %u queue(s) for %u workers: the workers without one hand their "
                     "punts to those with one, through a ring\n",
                     o.exc.c_str(), exc_queues, workers);
    }

    dp::FlowConfig fc;
    // A flow (allocation + permission + channel) takes 2 hash entries
    // (kClient, kPermission): IPv4 channels sit in the allocation's slots.
    // An eighth more for further permissions and for channels outside the
    // slots (2 entries + a ChannelValue each: IPv6 peers, a third channel).
    fc.entries_v4 = o.flows * 2 + o.flows / 8 + 64;
    fc.entries_v6 = o.flows + o.flows / 8 + 64;
    fc.max_allocations = o.flows;
    fc.max_channels = o.flows / 2 + 64;
    fc.workers = workers;
    std::string err;
    d.flows = dp::FlowTables::create(fc, &err);
    if (d.flows == nullptr) {
        fatal(err);
    }
    if (!d.flows->cache_enabled()) {
        std::fprintf(stderr,
                     "turn-dataplane: no hugepage memory for the workers' client caches; client packets go to the "
                     "flow hash every time (slower); reserve more hugepages or lower --flows\n");
    }
    d.nh = dp::NextHops::create("nexthops", o.nexthops, d.flows->rcu, SOCKET_ID_ANY, &err);
    if (d.nh == nullptr) {
        fatal(err + " (--nexthops " + std::to_string(o.nexthops) + ": reserve more hugepages or lower it)");
    }
    d.nh->set_learned_ttl(rte_get_timer_hz() * o.learned_ttl_s);
    for (auto [fam, has, mac, vlan] : {std::tuple{uint8_t{4}, o.has_gw4, o.gw4, o.gw4_vlan},
                                       std::tuple{uint8_t{6}, o.has_gw6, o.gw6, o.gw6_vlan}}) {
        if (!has) {
            continue;
        }
        dp::NextHop h;
        h.mac = mac;
        h.port = nic;
        h.vlan = vlan;
        d.nh->set_default(fam, h);
    }

    // Host next hops follow the kernel's neighbour table and routes.
    if (o.kernel_mirror) {
        // Only the exception port's kernel end (and VLAN devices on it) says
        // where the NIC's traffic goes; the PMD knows its interface.
        rte_eth_dev_info exc_info{};
        const int exc_if = rte_eth_dev_info_get(exc, &exc_info) == 0 ? static_cast<int>(exc_info.if_index) : 0;
        d.mirror = dp::KernelMirror::open(*d.nh, nic, exc_if, o.has_gw4, o.has_gw6, &err, named_kernel_if);
        if (d.mirror == nullptr) {
            fatal(err + " (or run with --no-kernel-mirror to rely on learning from kernel egress alone)");
        }
        char name[IF_NAMESIZE] = "?";
        if (d.mirror->kernel_ifindex() != 0 &&
            if_indextoname(static_cast<unsigned>(d.mirror->kernel_ifindex()), name)) {
            std::fprintf(stderr, "turn-dataplane: next hops follow the kernel's neighbours and routes on %s\n", name);
        } else {
            std::fprintf(stderr,
                         "turn-dataplane: the exception port's kernel interface is unknown (its PMD names none; "
                         "name it with --exc-kernel-if): next hops follow the neighbours and routes of every "
                         "interface in this namespace\n");
        }
    }
    // The kernel end the mirror found (its PMD's veth peer or tap): known
    // only now, after the ports' set-up. Without the mirror and without
    // --exc-kernel-if it is not known and not checked.
    if (named_kernel_if == 0 && d.mirror) {
        check_kernel_mtu(d.mirror->kernel_ifindex(), o.mtu);
    }

    d.ws.resize(workers);
    uint32_t id = 0;
    unsigned lcore;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        dp::WorkerConfig wc;
        wc.id = id;
        wc.nic_port = nic;
        wc.exc_port = exc;
        wc.queue = static_cast<uint16_t>(id);
        wc.exc_owner = id < exc_queues;
        wc.exc_ring = d.exc_rings.empty() ? nullptr : d.exc_rings[id % exc_queues];
        wc.mtu = o.mtu;
        wc.seed ^= (uint64_t{id} + 1) * 0x9E3779B97F4A7C15ull;
        rte_eth_macaddr_get(nic, &wc.port_mac[nic]);
        d.ws[id].init(wc, d.flows, d.nh);
        d.registered = id + 1;
        if (rte_eal_remote_launch(worker_main, &d.ws[id], lcore) != 0) {
            fatal("rte_eal_remote_launch");
        }
        d.launched = true;
        id++;
    }
}

// The main loop until SIGTERM/SIGINT, then the totals on stdout.
void run(const dp::Options& o, Dataplane& d) {
    dp::Applier applier(*d.flows);
    // Each worker's counters for the control plane's metrics, read while the
    // workers run (single-writer 64-bit counters: a report may be a burst
    // behind, never torn on the 64-bit targets DPDK supports).
    applier.worker_counters = [&ws = d.ws](std::vector<turn::ipc::WorkerCounters>& out) {
        static_assert(dp::kCounterCount <= turn::ipc::WorkerCounters::kMaxCounters);
        for (const auto& w : ws) {
            turn::ipc::WorkerCounters c{};
            c.worker = w.cfg.id;
            c.count = static_cast<uint32_t>(dp::kCounterCount);
            for (size_t k = 0; k < dp::kCounterCount; k++) {
                c.counters[k] = w.counters.v[k];
            }
            c.cache_lookups = w.cache.lookups;
            c.cache_misses = w.cache.misses;
            c.express_packets = w.express_packets;
            out.push_back(c);
        }
    };
    // Both ports' link and rte_eth_stats (rx ring full, no mbuf, tx errors:
    // drops no worker counter sees), read on this lcore, the Applier's. A
    // port whose statistics cannot be read this time is left out of this
    // report only: its series keep their last values and nothing stops.
    applier.port_counters = [nic = d.nic, exc = d.exc](std::vector<turn::ipc::PortCounters>& out) {
        for (const auto& [port, role] : {std::pair{nic, turn::ipc::PortRole::kNic},
                                         std::pair{exc, turn::ipc::PortRole::kException}}) {
            if (const auto c = dp::read_port_counters(port, role)) {
                out.push_back(*c);
            }
        }
    };
    applier.nexthop_counters = [&d](turn::ipc::NextHopCounters& c) { nexthop_counters(d, c); };
    IpcClient ipc(o.ipc, applier, d.workers);
    // A neighbour the kernel resolved, or a next hop learned from its
    // egress, is applied within milliseconds: until then packets to that
    // destination take the slow path (on-link destinations have no default
    // next hop). The mirror's notifications wake the loop; learned next hops
    // wait for the next tick, 10 ms at most.
    const int mirror_fd = d.mirror ? d.mirror->fd() : -1;
    while (!g_stop.load()) {
        ipc.step(10, mirror_fd);
        const uint64_t now = rte_get_timer_cycles();
        d.nh->apply_learned(now);
        d.nh->expire_learned(now);
        if (d.mirror) {
            d.mirror->poll();
        }
        d.flows->reclaim();
    }
    d.stop_workers();
    // The same per-worker figures the control plane gets, summed.
    std::vector<turn::ipc::WorkerCounters> snap;
    applier.worker_counters(snap);
    dp::Counters total;
    uint64_t cache_lookups = 0, cache_misses = 0, express = 0;
    for (const auto& c : snap) {
        for (size_t k = 0; k < dp::kCounterCount; k++) {
            total.v[k] += c.counters[k];
        }
        cache_lookups += c.cache_lookups;
        cache_misses += c.cache_misses;
        express += c.express_packets;
    }
    for (size_t k = 0; k < dp::kCounterCount; k++) {
        if (total.v[k] != 0) {
            const auto n = dp::counter_name(static_cast<dp::Counter>(k));
            std::printf("%.*s %llu\n", static_cast<int>(n.size()), n.data(), static_cast<unsigned long long>(total.v[k]));
        }
    }
    // Workers' kClient caches (flow/client_cache.h): misses went to the hash.
    std::printf("client_cache_lookups %llu\nclient_cache_misses %llu\n", static_cast<unsigned long long>(cache_lookups),
                static_cast<unsigned long long>(cache_misses));
    // Forwarded packets the express lane (worker/express.cc) finished itself.
    std::printf("express_packets %llu\n", static_cast<unsigned long long>(express));
    // The control-plane link's totals: what was applied, and what resyncs
    // swept (entries a new control plane did not re-add).
    const auto& as = applier.stats();
    std::printf("ipc_applied %llu\nipc_malformed %llu\nipc_unknown_alloc %llu\nipc_table_full %llu\nipc_swept %llu\n"
                "ipc_finals_dropped %llu\nipc_resync_retried %llu\n",
                static_cast<unsigned long long>(as.applied), static_cast<unsigned long long>(as.malformed),
                static_cast<unsigned long long>(as.unknown_alloc), static_cast<unsigned long long>(as.table_full),
                static_cast<unsigned long long>(as.swept), static_cast<unsigned long long>(as.finals_dropped),
                static_cast<unsigned long long>(as.resync_retried));
    // The next-hop table, as the control plane gets it (NextHopCounters).
    turn::ipc::NextHopCounters nc{};
    nexthop_counters(d, nc);
    std::printf("nexthop_capacity %u\nnexthop_hosts %u\nnexthop_learned %u\nnexthop_learned_total %llu\n"
                "nexthop_learned_expired %llu\nnexthop_learned_evicted %llu\nnexthop_learn_refused %llu\n",
                nc.capacity, nc.hosts, nc.learned, static_cast<unsigned long long>(nc.learned_total),
                static_cast<unsigned long long>(nc.learned_expired), static_cast<unsigned long long>(nc.learned_evicted),
                static_cast<unsigned long long>(nc.learn_refused));
    if (d.mirror) {
        const auto& ms = d.mirror->stats();
        std::printf("nexthop_neigh_set %llu\nnexthop_neigh_removed %llu\nnexthop_mac_retired %llu\n"
                    "nexthop_flushes %llu\nnexthop_defaults_set %llu\nnexthop_notifications_lost %llu\n"
                    "nexthop_route_changes %llu\nnexthop_rerouted %llu\n",
                    static_cast<unsigned long long>(ms.neigh_set), static_cast<unsigned long long>(ms.neigh_removed),
                    static_cast<unsigned long long>(ms.mac_retired), static_cast<unsigned long long>(ms.flushes),
                    static_cast<unsigned long long>(ms.defaults_set),
                    static_cast<unsigned long long>(ms.notifications_lost),
                    static_cast<unsigned long long>(ms.route_changes), static_cast<unsigned long long>(ms.rerouted));
    }
    std::fflush(stdout);
}

// Printed by EAL after its own help (turn-dataplane --help, EAL's option).
void usage_hook(const char* prgname) { std::fputs(dp::usage(prgname).c_str(), stdout); }

}  // namespace

int main(int argc, char** argv) {
    // Our options first, before EAL is started: --help and usage errors
    // leave no trace of EAL (no hugepages mapped, no /var/run/dpdk/<prefix>).
    dp::Options o;
    std::string usage_error;
    switch (dp::parse_command_line(argc, argv, &o, &usage_error)) {
    case dp::Parsed::kHelp:
        std::fputs(dp::usage(argv[0]).c_str(), stdout);
        return dp::kExitOk;
    case dp::Parsed::kVersion:
        std::puts("turn-dataplane " TURN_RELAY_VERSION);
        return dp::kExitOk;
    case dp::Parsed::kError:
        std::fprintf(stderr, "turn-dataplane: %s\n(turn-dataplane -- --help lists its options; EAL's go before \"--\")\n",
                     usage_error.c_str());
        return dp::kExitUsage;
    case dp::Parsed::kEalHelp: {
        // EAL's help, then ours through its usage hook; EAL's option parser
        // exits at --help, before it creates any file or maps any memory.
        rte_set_application_usage_hook(usage_hook);
        char help[] = "--help";
        char* eal_argv[] = {argv[0], help, nullptr};
        rte_eal_init(2, eal_argv);
        return dp::kExitOk;  // not reached
    }
    case dp::Parsed::kRun:
        break;
    }
    // The exception port's kernel end named on the command line is checked
    // before EAL too: a missing interface or another MTU costs no start-up.
    int named_kernel_if = 0;
    if (!o.exc_kernel_if.empty()) {
        named_kernel_if = static_cast<int>(if_nametoindex(o.exc_kernel_if.c_str()));
        if (named_kernel_if == 0) {
            std::fprintf(stderr, "turn-dataplane: --exc-kernel-if %s: no such interface in this network namespace\n",
                         o.exc_kernel_if.c_str());
            return dp::kExitFailed;
        }
        try {
            check_kernel_mtu(named_kernel_if, o.mtu);  // before any port's MTU changes
        } catch (const Fatal& f) {
            std::fprintf(stderr, "turn-dataplane: %s\n", f.what.c_str());
            return dp::kExitFailed;
        }
    }
    // From here a signal ends the main loop (or start-up, which checks it),
    // so that a stop always goes through the teardown below.
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    rte_set_application_usage_hook(usage_hook);  // after EAL's usage on a bad EAL option
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0) {
        std::fprintf(stderr, "turn-dataplane: rte_eal_init: %s\n", rte_strerror(rte_errno));
        return dp::kExitFailed;
    }
    // Send indications' FINGERPRINT check (worker/classify.cc): the CPU's
    // carry-less multiply where it has one (SSE4.2 + PCLMULQDQ), else DPDK
    // keeps its table-driven CRC.
    rte_net_crc_set_alg(RTE_NET_CRC_SSE42);
    int rc = dp::kExitOk;
    try {
        // EAL's getopt moves arguments that are no option of its own to its
        // end, ahead of ours: one before "--" would otherwise go unnoticed.
        if (argc - eal - 1 != o.program_args) {
            std::string stray;
            for (int i = eal + 1; i < argc - o.program_args; i++) {
                stray += std::string(" ") + argv[i];
            }
            throw Fatal{"unexpected argument(s) before \"--\":" + stray + " (EAL options go before \"--\", "
                        "turn-dataplane's after it)", dp::kExitUsage};
        }
        Dataplane d;
        start(o, named_kernel_if, d);
        run(o, d);
    } catch (const Fatal& f) {
        std::fprintf(stderr, "turn-dataplane: %s\n", f.what.c_str());
        rc = f.code;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "turn-dataplane: %s\n", e.what());
        rc = dp::kExitFailed;
    }
    dp::eal_cleanup(o.keep_hugepage_files);
    return rc;
}
