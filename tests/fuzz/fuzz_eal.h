// DPDK's EAL for the dataplane fuzz targets (worker_fuzz.cc, applier_fuzz.cc):
// in memory (no hugepages, no shared config), one lcore, a file prefix of
// this process's own so that parallel fuzzing jobs do not meet.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iterator>
#include <string>
#include <system_error>

#include <rte_eal.h>

namespace fuzzeal {

// false if rte_eal_init failed. `name` is the target's (argv[0] and the
// file prefix's stem), `mem_mb` the memory EAL reserves.
inline bool init(const char* name, int mem_mb) {
    char prefix[96];
    std::snprintf(prefix, sizeof prefix, "--file-prefix=%s%d", name, static_cast<int>(getpid()));
    const std::string mem = std::to_string(mem_mb);
    const char* argv[] = {name, "--no-huge", "-m", mem.c_str(), "--no-pci", "--no-shconf",
                          prefix, "--log-level=*:error", "-l", "0"};
    // EAL pins this thread to lcore 0; parallel fuzzing jobs (-jobs) would
    // all share that CPU, so the thread gets its CPUs back afterwards.
    cpu_set_t cpus;
    const bool have_cpus = sched_getaffinity(0, sizeof cpus, &cpus) == 0;
    if (rte_eal_init(static_cast<int>(std::size(argv)), const_cast<char**>(argv)) < 0) {
        return false;
    }
    if (have_cpus) {
        pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
    }
    return true;
}

// At exit: EAL's memory and this process's runtime directory
// (/var/run/dpdk/<prefix>, which rte_eal_cleanup leaves behind).
inline void cleanup() {
    const std::string dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

}  // namespace fuzzeal
