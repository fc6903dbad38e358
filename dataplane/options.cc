#include "options.h"

#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>

#include "nexthop/nexthop.h"

namespace dp {
namespace {

// A decimal option value within [min, max], or nothing (and *error says why).
std::optional<uint32_t> parse_uint(const std::string& opt, const std::string& v, uint32_t min, uint32_t max,
                                   std::string* error) {
    const bool digits = !v.empty() && v.size() <= 10 &&
                        std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    const uint64_t n = digits ? std::stoull(v) : 0;
    if (!digits || n < min || n > max) {
        *error = opt + " " + v + ": expected a whole number from " + std::to_string(min) + " to " + std::to_string(max);
        return std::nullopt;
    }
    return static_cast<uint32_t>(n);
}

bool is_help(const char* a) { return std::strcmp(a, "-h") == 0 || std::strcmp(a, "--help") == 0; }

Parsed fail(std::string* error, std::string what) {
    *error = std::move(what);
    return Parsed::kError;
}

}  // namespace

Parsed parse_command_line(int argc, const char* const* argv, Options* out, std::string* error) {
    // EAL's getopt stops at the first "--"; everything after it is ours.
    int first = argc;
    bool eal_help = false;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--") == 0) {
            first = i + 1;
            break;
        }
        eal_help = eal_help || is_help(argv[i]);
        if (std::strcmp(argv[i], "--huge-unlink=never") == 0) {
            out->keep_hugepage_files = true;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--version") == 0) {
            return Parsed::kVersion;
        }
    }
    // Ours first: "-- --help" is turn-dataplane's usage alone, whatever EAL's
    // arguments say.
    for (int i = first; i < argc; i++) {
        if (is_help(argv[i])) {
            return Parsed::kHelp;
        }
    }
    if (eal_help) {
        return Parsed::kEalHelp;
    }
    Options o;
    o.keep_hugepage_files = out->keep_hugepage_files;
    o.program_args = argc - std::min(first, argc);
    if (first >= argc) {
        return fail(error, "no options of turn-dataplane's own: they go after \"--\" (EAL's before it), at least "
                           "--nic PORT --exc PORT --ipc PATH");
    }
    std::string gw4, gw6;
    for (int i = first; i < argc; i++) {
        const std::string a = argv[i];
        // The value of an option; an option name in its place means it was left out.
        std::string v;
        auto val = [&]() -> bool {
            if (i + 1 >= argc || std::strncmp(argv[i + 1], "--", 2) == 0) {
                *error = "missing value for " + a;
                return false;
            }
            v = argv[++i];
            return true;
        };
        auto number = [&](uint32_t min, uint32_t max, auto* field) -> bool {
            if (!val()) {
                return false;
            }
            const auto n = parse_uint(a, v, min, max, error);
            if (n) {
                *field = static_cast<std::remove_pointer_t<decltype(field)>>(*n);
            }
            return n.has_value();
        };
        bool ok = true;
        if (a == "--nic") {
            ok = val() && (o.nic = v, true);
        } else if (a == "--exc") {
            ok = val() && (o.exc = v, true);
        } else if (a == "--ipc") {
            ok = val() && (o.ipc = v, true);
        } else if (a == "--mtu") {
            ok = number(576, 9216, &o.mtu);
        } else if (a == "--gw4") {
            ok = val() && (gw4 = v, true);
        } else if (a == "--gw6") {
            ok = val() && (gw6 = v, true);
        } else if (a == "--gw4-vlan") {
            ok = number(1, kMaxVlanId, &o.gw4_vlan);
        } else if (a == "--gw6-vlan") {
            ok = number(1, kMaxVlanId, &o.gw6_vlan);
        } else if (a == "--exc-kernel-if") {
            ok = val() && (o.exc_kernel_if = v, true);
        } else if (a == "--no-kernel-mirror") {
            o.kernel_mirror = false;
        } else if (a == "--flows") {
            ok = number(1, 1u << 24, &o.flows);
        } else if (a == "--nexthops") {
            ok = number(64, 1u << 24, &o.nexthops);
        } else if (a == "--learned-ttl") {
            ok = number(1, 86400, &o.learned_ttl_s);
        } else if (a != "--") {  // a second "--" has always been ignored
            return fail(error, "unknown option " + a);
        }
        if (!ok) {
            return Parsed::kError;
        }
    }
    if (o.nic.empty() || o.exc.empty()) {
        return fail(error, "--nic and --exc name the NIC and exception ports (DPDK port names: a PCI address given to "
                           "-a, or a --vdev name such as net_af_xdp1)");
    }
    if (o.nic == o.exc) {
        return fail(error, "--nic and --exc both name " + o.nic +
                               ": the exception port is a port of its own (the --vdev on the kernel's veth end or "
                               "tap), not the NIC");
    }
    if (o.ipc.empty()) {
        return fail(error, "--ipc is required: the path of turn-relay's dataplane socket, its [dataplane].socket "
                           "(e.g. --ipc /run/turnrelay/dataplane.sock)");
    }
    if (o.ipc.size() >= sizeof(sockaddr_un::sun_path)) {
        return fail(error, "--ipc " + o.ipc + ": a socket path has at most " +
                               std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes (this one has " +
                               std::to_string(o.ipc.size()) + "): use a shorter path");
    }
    for (auto [name, s, mac, has] : {std::tuple{"--gw4", &gw4, &o.gw4, &o.has_gw4}, {"--gw6", &gw6, &o.gw6, &o.has_gw6}}) {
        if (s->empty()) {
            continue;
        }
        if (rte_ether_unformat_addr(s->c_str(), mac) != 0) {
            return fail(error, std::string("bad MAC ") + *s + " for " + name + " (expected e.g. 02:00:00:00:00:01)");
        }
        // Relayed packets without a host next hop go to it: a broadcast or
        // multicast address would flood them, an all-zero one is no station's.
        if (!rte_is_valid_assigned_ether_addr(mac)) {
            return fail(error, std::string(name) + " " + *s +
                                   ": a gateway MAC must be a unicast, nonzero address (the next hop's own, e.g. "
                                   "02:00:00:00:00:01)");
        }
        *has = true;
    }
    if ((o.gw4_vlan != 0 && !o.has_gw4) || (o.gw6_vlan != 0 && !o.has_gw6)) {
        return fail(error, "--gw4-vlan / --gw6-vlan tag the static default next hop: give its MAC with --gw4 / --gw6 too");
    }
    *out = o;
    return Parsed::kRun;
}

std::string usage(const char* prgname) {
    std::string p = prgname != nullptr && *prgname != '\0' ? prgname : "turn-dataplane";
    p = p.substr(p.rfind('/') + 1);  // npos + 1 == 0: the whole name
    return "Usage: " + p + " [EAL options] -- --nic PORT --exc PORT --ipc PATH [options]\n"
           "\n"
           "The DPDK dataplane of the TURN relay (dataplane/README.md). EAL options (-l lcores, -a PCI device,\n"
           "--vdev, --file-prefix, --socket-mem, ...) go before \"--\"; \"" + p + " --help\" prints DPDK's EAL\n"
           "help followed by this text. turn-dataplane's own options go after \"--\":\n"
           "\n"
           "  --nic PORT            required: the NIC's DPDK port name (its PCI address given to -a, or a\n"
           "                        --vdev name such as net_af_xdp0)\n"
           "  --exc PORT            required: the exception port's DPDK port name (the --vdev on the kernel's\n"
           "                        veth end or tap, e.g. net_af_xdp1 or virtio_user1)\n"
           "  --ipc PATH            required: turn-relay's dataplane socket ([dataplane].socket, e.g.\n"
           "                        /run/turnrelay/dataplane.sock); reconnected with backoff while absent\n"
           "  --mtu M               both ports' MTU, 576-9216 (default 1500); the exception port's kernel end\n"
           "                        must have the same\n"
           "  --flows N             flow-table capacity in flows (allocation + permission + channel), 1-16777216\n"
           "                        (default 65536)\n"
           "  --nexthops N          next-hop table capacity in host entries: the kernel's neighbours and the\n"
           "                        destinations learned from its egress (those it sends to another router\n"
           "                        than the default's, or every one without a single default route, e.g.\n"
           "                        a multipath default), 64-16777216 (default 65536); when full, the oldest\n"
           "                        learned destinations make room\n"
           "  --learned-ttl S       seconds a learned destination's next hop is kept before its next packet\n"
           "                        asks the kernel again, 1-86400 (default 300)\n"
           "  --gw4 MAC             static IPv4 default next hop (default: the gateway of the kernel's default\n"
           "                        route, from the kernel mirror)\n"
           "  --gw4-vlan ID         802.1Q VLAN of --gw4, 1-4094 (default: untagged); needs --gw4\n"
           "  --gw6 MAC             static IPv6 default next hop (default: as for --gw4)\n"
           "  --gw6-vlan ID         802.1Q VLAN of --gw6, 1-4094 (default: untagged); needs --gw6\n"
           "  --exc-kernel-if NAME  the exception port's kernel interface (default: the one its PMD names), for\n"
           "                        the MTU check and the kernel mirror\n"
           "  --no-kernel-mirror    do not follow the kernel's neighbours and routes (default: follow them);\n"
           "                        next hops then come from --gw4/--gw6 and the kernel's egress only\n"
           "  -h, --help            this text (EAL is not started)\n"
           "  --version             the version (EAL is not started)\n"
           "\n"
           "Every lcore after the first runs a worker (at least two: -l main,worker...).\n"
           "Exit status: 0 stopped by SIGTERM/SIGINT (or --help); 1 start-up failed (EAL, ports, memory, the\n"
           "exception port's interface); 2 bad usage (an option missing, unknown or out of range).\n";
}

}  // namespace dp
