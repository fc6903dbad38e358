// turn-dataplane's own command line (the arguments after "--"), parsed and
// checked before rte_eal_init, so that --help and every usage error cost no
// EAL initialisation (no PCI probe, no hugepages, no /var/run/dpdk/<prefix>).
#pragma once

#include <cstdint>
#include <string>

#include "common/dpdk.h"

namespace dp {

struct Options {
    std::string nic;  // DPDK port names (required)
    std::string exc;
    std::string ipc;  // turn-relay's dataplane socket (required)
    uint16_t mtu = 1500;
    bool has_gw4 = false;  // --gw4 / --gw6: static default next hops
    bool has_gw6 = false;
    rte_ether_addr gw4{};
    rte_ether_addr gw6{};
    uint16_t gw4_vlan = 0;  // 802.1Q VLAN of the static default next hop (0: untagged)
    uint16_t gw6_vlan = 0;
    uint32_t flows = 1u << 16;
    uint32_t nexthops = 1u << 16;     // host next-hop entries (neighbours + learned destinations)
    uint32_t learned_ttl_s = 300;     // a learned next hop's lifetime
    std::string exc_kernel_if;  // the exception port's kernel end, when its PMD cannot name it
    bool kernel_mirror = true;

    // Not options of ours: what main() needs to know about the command line.
    int program_args = 0;             // arguments after the first "--"
    bool keep_hugepage_files = false;  // EAL's --huge-unlink=never: the operator keeps them for reuse
};

enum class Parsed {
    kRun,      // *out is complete and valid
    kHelp,     // -h / --help after "--": print usage(), exit 0, no EAL
    kVersion,  // --version anywhere: print the version, exit 0, no EAL
    kEalHelp,  // -h / --help before "--" (EAL's option): EAL's help, then usage() through its hook
    kError,    // *error names the option and what to fix: exit 2, no EAL
};

// argv as main() received it; EAL's arguments (before the first "--") are
// only looked at for -h / --help and --huge-unlink=never.
Parsed parse_command_line(int argc, const char* const* argv, Options* out, std::string* error);

// Every option, its range, default and meaning (dataplane/README.md).
std::string usage(const char* prgname);

// Exit statuses (dataplane/README.md "Command line").
constexpr int kExitOk = 0;      // stopped by SIGTERM / SIGINT, or --help
constexpr int kExitFailed = 1;  // start-up failed: EAL, ports, memory, the exception port's interface
constexpr int kExitUsage = 2;   // an option missing, unknown or out of range: found before EAL starts

}  // namespace dp
