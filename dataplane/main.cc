// turn-dataplane: the DPDK primary process (DESIGN.md "Two processes").
//
//   turn-dataplane <EAL args, ports as --vdev> -- --nic <port name> --exc <port name>
//                  [--ipc /run/turnrelay/dataplane.sock] [--mtu 1500]
//                  [--gw4 MAC [--gw4-vlan ID]] [--gw6 MAC [--gw6-vlan ID]] [--flows N]
//                  [--exc-kernel-if NAME] [--no-kernel-mirror]
//
// e.g. on a veth pair whose kernel end (exc0-k) holds the relay IP:
//   turn-dataplane -l 0,1 --vdev=net_af_packet0,iface=nic0
//       --vdev=net_af_packet1,iface=exc0-d -- --nic net_af_packet0 --exc net_af_packet1
//
// The main lcore applies control-plane messages (the flow tables' only
// writer) and keeps the IPC session alive; every other lcore is a worker with
// its own rx/tx queue on both ports. Fatal errors happen only at start-up.
#include <fcntl.h>
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
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/dpdk.h"
#include "common/port_counters.h"
#include "flow/apply.h"
#include "flow/tables.h"
#include "ipc/protocol.h"
#include "nexthop/kernel_mirror.h"
#include "nexthop/nexthop.h"
#include "worker/pipeline.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

struct Options {
    std::string nic;
    std::string exc;
    std::string ipc = "/run/turnrelay/dataplane.sock";
    uint16_t mtu = 1500;
    std::string gw4;
    std::string gw6;
    uint16_t gw4_vlan = 0;  // 802.1Q VLAN of the static default next hop (0: untagged)
    uint16_t gw6_vlan = 0;
    uint32_t flows = 1u << 16;
    std::string exc_kernel_if;  // the exception port's kernel end, when its PMD cannot name it
    bool kernel_mirror = true;
};

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "turn-dataplane: %s\n", what.c_str());
    std::exit(1);
}

// A decimal option value within [min, max], or a start-up error naming the option.
uint32_t parse_uint(const std::string& opt, const std::string& v, uint32_t min, uint32_t max) {
    uint64_t n = 0;
    const bool digits = !v.empty() && v.size() <= 10 &&
                        std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
        n = std::stoull(v);
    }
    if (!digits || n < min || n > max) {
        die(opt + " " + v + ": expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
    }
    return static_cast<uint32_t>(n);
}

bool parse_mac(const std::string& s, rte_ether_addr* out) { return rte_ether_unformat_addr(s.c_str(), out) == 0; }

uint16_t port_by_name(const std::string& name) {
    uint16_t p;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &p) != 0) {
        std::string hint;
        if (name.rfind("virtio_user", 0) == 0 && access("/dev/vhost-net", R_OK | W_OK) != 0) {
            hint = "; virtio-user needs /dev/vhost-net (modprobe vhost_net), or use a veth pair with "
                   "net_af_xdp / net_af_packet as the exception port";
        }
        die("no DPDK port named '" + name + "' (add it with --vdev=... or -a <pci>)" + hint);
    }
    if (p >= dp::kMaxPorts) {
        die("port id " + std::to_string(p) + " is above the supported maximum");
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
        die("rte_eth_dev_info_get");
    }
    const uint32_t have = std::min(info.max_rx_queues, info.max_tx_queues);
    if (have == 0) {
        die("port " + std::to_string(port) + " has no queues");
    }
    return static_cast<uint16_t>(std::min(have, workers));
}

void setup_port(const std::string& name, uint16_t port, uint16_t queues, rte_mempool* pool, uint16_t mtu) {
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0) {
        die("rte_eth_dev_info_get");
    }
    if (queues > info.max_rx_queues || queues > info.max_tx_queues) {
        die(name + " has " + std::to_string(std::min(info.max_rx_queues, info.max_tx_queues)) +
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
        die(name + " (" + drv + ") takes an MTU from " + std::to_string(info.min_mtu) + " to " +
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
        die("rte_eth_dev_configure " + name + ": " + rte_strerror(-rc));
    }
    // Ports whose driver sets a link MTU (the NIC's, af_packet's and
    // af_xdp's interface) get it now; net_null/net_ring/net_pcap have none
    // to set and enforce nothing (-ENOTSUP).
    rc = rte_eth_dev_set_mtu(port, mtu);
    if (rc != 0 && rc != -ENOTSUP) {
        die("setting the MTU of " + name + " to " + std::to_string(mtu) + ": " + rte_strerror(-rc));
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
            die("queue setup on " + name + " (queue " + std::to_string(q) + "): " + rte_strerror(-rc) + hint);
        }
    }
    if (rte_eth_dev_start(port) != 0) {
        die("rte_eth_dev_start port " + std::to_string(port));
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
        die("the exception port's kernel interface " + name + " has MTU " + std::to_string(kmtu) +
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
    return 0;
}

// The control-plane link: connect, Hello, then apply every datagram. On any
// error the socket is closed and reconnected with exponential backoff; the
// flow tables keep forwarding meanwhile and the control plane's resync on
// reconnect replaces their content.
class IpcClient {
public:
    IpcClient(std::string path, dp::Applier& ap, uint32_t workers) : path_(std::move(path)), ap_(ap), workers_(workers) {
        std::random_device rd;
        boot_id_ = (uint64_t{rd()} << 32) | rd();
    }
    ~IpcClient() { close_fd(); }

    // One step of the main loop; waits at most `timeout_ms`.
    void step(int timeout_ms) {
        if (fd_ < 0) {
            const uint64_t now = rte_get_timer_cycles();
            if (now < next_try_) {
                usleep(static_cast<useconds_t>(timeout_ms) * 1000);
                return;
            }
            if (!connect_once()) {
                backoff_ms_ = backoff_ms_ == 0 ? 100 : std::min<uint64_t>(backoff_ms_ * 2, 5000);
                next_try_ = now + rte_get_timer_hz() * backoff_ms_ / 1000;
                return;
            }
            backoff_ms_ = 0;
        }
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0) {
            return;
        }
        uint8_t buf[turn::ipc::kMaxMessage];
        for (;;) {
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
        fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
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
        std::fprintf(stderr, "turn-dataplane: connected to %s, sent Hello\n", path_.c_str());
        return fd_ >= 0;
    }
    void send_msg(std::span<const uint8_t> m) {
        if (fd_ >= 0 && send(fd_, m.data(), m.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(m.size())) {
            close_fd();
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

}  // namespace

int main(int argc, char** argv) {
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0) {
        die(std::string("rte_eal_init: ") + rte_strerror(rte_errno));
    }
    Options o;
    for (int i = eal + 1; i < argc; i++) {
        const std::string a = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) {
                die("missing value for " + a);
            }
            return argv[++i];
        };
        if (a == "--nic") {
            o.nic = val();
        } else if (a == "--exc") {
            o.exc = val();
        } else if (a == "--ipc") {
            o.ipc = val();
        } else if (a == "--mtu") {
            o.mtu = static_cast<uint16_t>(parse_uint(a, val(), 576, 9216));
        } else if (a == "--gw4") {
            o.gw4 = val();
        } else if (a == "--gw6") {
            o.gw6 = val();
        } else if (a == "--gw4-vlan") {
            o.gw4_vlan = static_cast<uint16_t>(parse_uint(a, val(), 1, dp::kMaxVlanId));
        } else if (a == "--gw6-vlan") {
            o.gw6_vlan = static_cast<uint16_t>(parse_uint(a, val(), 1, dp::kMaxVlanId));
        } else if (a == "--exc-kernel-if") {
            o.exc_kernel_if = val();
        } else if (a == "--no-kernel-mirror") {
            o.kernel_mirror = false;
        } else if (a == "--flows") {
            o.flows = parse_uint(a, val(), 1, 1u << 24);
        } else if (a != "--") {
            die("unknown option " + a);
        }
    }
    if (o.nic.empty() || o.exc.empty()) {
        die("--nic and --exc name the NIC and exception ports");
    }
    if ((o.gw4_vlan != 0 && o.gw4.empty()) || (o.gw6_vlan != 0 && o.gw6.empty())) {
        die("--gw4-vlan / --gw6-vlan tag the static default next hop: give its MAC with --gw4 / --gw6 too");
    }
    const uint32_t workers = rte_lcore_count() - 1;
    if (workers == 0) {
        die("needs at least two lcores (-l main,worker...): the main lcore applies control-plane updates");
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    const uint16_t nic = port_by_name(o.nic);
    const uint16_t exc = port_by_name(o.exc);
    int named_kernel_if = 0;
    if (!o.exc_kernel_if.empty()) {
        named_kernel_if = static_cast<int>(if_nametoindex(o.exc_kernel_if.c_str()));
        if (named_kernel_if == 0) {
            die("--exc-kernel-if " + o.exc_kernel_if + ": no such interface in this network namespace");
        }
        check_kernel_mtu(named_kernel_if, o.mtu);  // before any port's MTU changes
    }
    // The exception port may have fewer queues than there are workers (a veth
    // driven by AF_XDP in DPDK 22.11 has one): the workers beyond its queues
    // hand their punts to those that own one through a ring
    // (WorkerConfig::exc_ring: one per owner, so that a worker's punts keep
    // their order). The NIC needs a queue per worker.
    const uint16_t exc_queues = queues_for(exc, workers);
    constexpr unsigned kExcRingSize = 4096;
    const uint32_t mbufs = 8191 * workers + 4096 + (exc_queues < workers ? kExcRingSize * exc_queues : 0);
    rte_mempool* pool = rte_pktmbuf_pool_create("dp_mbufs", mbufs, 256, 0, data_room(o.mtu),
                                                static_cast<int>(rte_socket_id()));
    if (pool == nullptr) {
        // What it asked for, so that the operator can size hugepages: the
        // mbufs grow with --mtu and their number with the workers.
        const uint64_t mib = (uint64_t{mbufs} * mbuf_object(o.mtu) >> 20) + 1;
        die(std::string("mbuf pool: ") + rte_strerror(rte_errno) + " (" + std::to_string(mbufs) + " mbufs of " +
            std::to_string(data_room(o.mtu)) + " bytes for " + std::to_string(workers) + " workers and --mtu " +
            std::to_string(o.mtu) + ", about " + std::to_string(mib) +
            " MiB: reserve more hugepages, raise --socket-mem or -m, or lower --mtu)");
    }
    setup_port(o.nic, nic, static_cast<uint16_t>(workers), pool, o.mtu);
    setup_port(o.exc, exc, exc_queues, pool, o.mtu);
    std::vector<rte_ring*> exc_rings;  // [owner]: the punts of workers id % exc_queues == owner
    if (exc_queues < workers) {
        for (uint16_t q = 0; q < exc_queues; q++) {
            rte_ring* r = rte_ring_create(("dp_exc_punts" + std::to_string(q)).c_str(), kExcRingSize,
                                          static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
            if (r == nullptr) {
                die(std::string("exception ring: ") + rte_strerror(rte_errno));
            }
            exc_rings.push_back(r);
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
    dp::FlowTables* flows = dp::FlowTables::create(fc, &err);
    if (flows == nullptr) {
        die(err);
    }
    if (!flows->cache_enabled()) {
        std::fprintf(stderr,
                     "turn-dataplane: no hugepage memory for the workers' client caches; client packets go to the "
                     "flow hash every time (slower); reserve more hugepages or lower --flows\n");
    }
    dp::NextHops* nh = dp::NextHops::create("nexthops", 4096, flows->rcu, SOCKET_ID_ANY, &err);
    if (nh == nullptr) {
        die(err);
    }
    for (auto [fam, mac, vlan] : {std::tuple<uint8_t, std::string, uint16_t>{4, o.gw4, o.gw4_vlan},
                                  {6, o.gw6, o.gw6_vlan}}) {
        if (mac.empty()) {
            continue;
        }
        dp::NextHop h;
        if (!parse_mac(mac, &h.mac)) {
            die("bad MAC " + mac);
        }
        h.port = nic;
        h.vlan = vlan;
        nh->set_default(fam, h);
    }

    std::vector<dp::Worker> ws(workers);
    uint32_t id = 0;
    unsigned lcore;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        dp::WorkerConfig wc;
        wc.id = id;
        wc.nic_port = nic;
        wc.exc_port = exc;
        wc.queue = static_cast<uint16_t>(id);
        wc.exc_owner = id < exc_queues;
        wc.exc_ring = exc_rings.empty() ? nullptr : exc_rings[id % exc_queues];
        wc.mtu = o.mtu;
        wc.seed ^= (uint64_t{id} + 1) * 0x9E3779B97F4A7C15ull;
        rte_eth_macaddr_get(nic, &wc.port_mac[nic]);
        ws[id].init(wc, flows, nh);
        if (rte_eal_remote_launch(worker_main, &ws[id], lcore) != 0) {
            die("rte_eal_remote_launch");
        }
        id++;
    }

    // Host next hops follow the kernel's neighbour table and routes.
    std::unique_ptr<dp::KernelMirror> mirror;
    if (o.kernel_mirror) {
        // Only the exception port's kernel end (and VLAN devices on it) says
        // where the NIC's traffic goes; the PMD knows its interface.
        rte_eth_dev_info exc_info{};
        const int exc_if = rte_eth_dev_info_get(exc, &exc_info) == 0 ? static_cast<int>(exc_info.if_index) : 0;
        mirror = dp::KernelMirror::open(*nh, nic, exc_if, !o.gw4.empty(), !o.gw6.empty(), &err, named_kernel_if);
        if (mirror == nullptr) {
            die(err + " (or run with --no-kernel-mirror to rely on learning from kernel egress alone)");
        }
        char name[IF_NAMESIZE] = "?";
        if (mirror->kernel_ifindex() != 0 && if_indextoname(static_cast<unsigned>(mirror->kernel_ifindex()), name)) {
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
    if (named_kernel_if == 0 && mirror) {
        check_kernel_mtu(mirror->kernel_ifindex(), o.mtu);
    }

    dp::Applier applier(*flows);
    // Each worker's counters for the control plane's metrics, read while the
    // workers run (single-writer 64-bit counters: a report may be a burst
    // behind, never torn on the 64-bit targets DPDK supports).
    applier.worker_counters = [&ws](std::vector<turn::ipc::WorkerCounters>& out) {
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
    applier.port_counters = [nic, exc](std::vector<turn::ipc::PortCounters>& out) {
        for (const auto& [port, role] : {std::pair{nic, turn::ipc::PortRole::kNic},
                                         std::pair{exc, turn::ipc::PortRole::kException}}) {
            if (const auto c = dp::read_port_counters(port, role)) {
                out.push_back(*c);
            }
        }
    };
    IpcClient ipc(o.ipc, applier, workers);
    while (!g_stop.load()) {
        ipc.step(100);
        nh->apply_learned();
        if (mirror) {
            mirror->poll();
        }
        flows->reclaim();
    }
    rte_eal_mp_wait_lcore();
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
    for (auto& w : ws) {
        w.fini();
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
    if (mirror) {
        const auto& ms = mirror->stats();
        std::printf("nexthop_neigh_set %llu\nnexthop_neigh_removed %llu\nnexthop_mac_retired %llu\n"
                    "nexthop_flushes %llu\nnexthop_defaults_set %llu\n",
                    static_cast<unsigned long long>(ms.neigh_set), static_cast<unsigned long long>(ms.neigh_removed),
                    static_cast<unsigned long long>(ms.mac_retired), static_cast<unsigned long long>(ms.flushes),
                    static_cast<unsigned long long>(ms.defaults_set));
    }
    rte_eth_dev_stop(nic);
    rte_eth_dev_stop(exc);
    for (rte_ring* r : exc_rings) {  // punts no owner sent before the workers stopped
        void* m = nullptr;
        while (rte_ring_dequeue(r, &m) == 0) {
            rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
        }
        rte_ring_free(r);
    }
    delete nh;
    delete flows;
    rte_eal_cleanup();
    return 0;
}
