// What the shared bandwidth clock costs when two workers police the same
// allocation (bench/RESULTS.md "One bandwidth budget per allocation across
// workers"). An allocation with a limit keeps one GCRA clock (Allocation::tat)
// in its 64-byte line, advanced by every worker with a compare-and-swap
// (take_bandwidth, dataplane/worker/stages.h). When the allocation's client
// and peer flows are on different workers, the line moves between their
// cores on each policed packet. This measures that, without DPDK: two
// threads pinned to two CPUs each "forward a packet" per iteration (read the
// allocation's fields the express lane reads, take the budget, then `--work`
// rounds of unrelated arithmetic standing for the rest of the packet), and
// report TSC cycles per iteration, median of the repetitions, for:
//   alone          one thread, its own allocations (the baseline)
//   separate_cas   two threads, each with allocations of its own (lines never
//                  shared), a compare-and-swap on the clock for every packet
//                  (the dataplane before the workers' leases; a copy of that
//                  code below)
//   shared_cas     the same on the same allocations: what moving the lines
//                  between the cores costs is shared_cas - separate_cas
//   separate       each its own allocations, take_bandwidth as it is (leases)
//   shared         the same allocations, take_bandwidth as it is
//   shared_unlim   two threads, the same allocations without a limit
//                  (read-only sharing: no writes, so no bouncing)
// With --allocs 1 every packet of both threads is for one allocation (the
// worst case); with --allocs N each packet picks one of N at random, as a
// worker serving many calls does, so the other worker touched the line since
// this one did about half the time.
// The limit is one the run never reaches (1e12 bit/s), so every take passes
// and writes; how leases compete for a nearly empty budget is not measured
// here (pipeline_test has the exact cases).
//
//   bandwidth_contention [--iters 2000000] [--reps 7] [--work 0,50,200] [--allocs 1,1000] [--cpus 0,1]

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <x86intrin.h>

#include "flow/tables.h"
#include "worker/stages.h"

namespace {

struct Options {
    uint64_t iters = 2000000;
    int reps = 7;
    std::vector<int> work{0, 50, 200};
    std::vector<int> allocs{1, 1000};
    int cpu[2] = {0, 1};
};

std::vector<int> ints(const char* s) {
    std::vector<int> v;
    for (const char* p = s; *p != '\0';) {
        char* end = nullptr;
        const long x = std::strtol(p, &end, 10);
        if (end == p || x < 0) {
            std::fprintf(stderr, "not a list of non-negative integers: %s\n", s);
            std::exit(2);
        }
        v.push_back(static_cast<int>(x));
        p = *end == ',' ? end + 1 : end;
    }
    return v;
}

void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        std::fprintf(stderr, "cannot pin a thread to CPU %d\n", cpu);
        std::exit(1);
    }
}

double tsc_hz_estimate() {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = __rdtsc();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const uint64_t c1 = __rdtsc();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<double>(c1 - c0) / s;
}

// take_bandwidth before the leases (b03fed1): one compare-and-swap per packet.
bool take_every_packet(const dp::Allocation& a, uint32_t bytes, uint64_t now, double tsc_hz) {
    const float byte_ticks = a.byte_ticks.load(std::memory_order_relaxed);
    if (std::bit_cast<uint32_t>(byte_ticks) == 0) {
        return true;
    }
    const auto cost = static_cast<uint64_t>(static_cast<double>(bytes) * byte_ticks);
    const auto depth = static_cast<uint64_t>(std::max(tsc_hz, 65536.0 * byte_ticks));
    uint64_t tat = a.tat.load(std::memory_order_relaxed);
    for (;;) {
        const uint64_t start = std::max(tat, now);
        if (start + cost - now > depth) {
            return false;
        }
        if (a.tat.compare_exchange_weak(tat, start + cost, std::memory_order_relaxed)) {
            return true;
        }
    }
}

// One worker's loop; returns TSC cycles per iteration. `sink` keeps the
// reads and the arithmetic from being optimised away.
double run(const dp::Allocation* set, dp::AllocState* mine, uint32_t n, bool per_packet, uint64_t iters, int work,
           double tsc_hz, std::atomic<int>& start, uint64_t& passed, uint64_t& sink, uint64_t seed) {
    while (start.load(std::memory_order_acquire) == 0) {
    }
    uint64_t acc = 0, ok = 0, x = seed;
    const uint64_t t0 = __rdtsc();
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;  // xorshift64: which allocation this packet is for
        x ^= x >> 7;
        x ^= x << 17;
        const uint32_t k = n == 1 ? 0 : static_cast<uint32_t>((x >> 32) * n >> 32);
        const dp::Allocation& a = set[k];
        // The fields the lane reads for a client ChannelData packet (owns4, rewrite44).
        acc += a.live.load(std::memory_order_acquire) + a.epoch + a.v4.ip + a.relayed4_port + a.client_port;
        ok += per_packet ? take_every_packet(a, 120, __rdtsc(), tsc_hz)
                         : dp::take_bandwidth(a, mine[k], 120, __rdtsc(), tsc_hz);
        for (int r = 0; r < work; r++) {
            acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
            asm volatile("" : "+r"(acc));
        }
    }
    const uint64_t t1 = __rdtsc();
    passed = ok;
    sink += acc;
    return static_cast<double>(t1 - t0) / static_cast<double>(iters);
}

struct Result {
    double cycles;  // per iteration, the slower thread's
    uint64_t passed;
};

Result measure(const Options& o, dp::Allocation* allocs, uint32_t n, int threads, bool same, bool per_packet, int work,
               double tsc_hz) {
    std::atomic<int> start{0};
    double cyc[2] = {0, 0};
    uint64_t passed[2] = {0, 0}, sink[2] = {0, 0};
    std::vector<std::thread> ts;
    std::vector<dp::AllocState> state[2];  // each worker's own, as Worker::state
    for (int t = 0; t < threads; t++) {
        state[t].assign(n, dp::AllocState{});
    }
    for (int t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
            pin(o.cpu[t]);
            cyc[t] = run(allocs + (same ? 0 : t * n), state[t].data(), n, per_packet, o.iters, work, tsc_hz, start,
                         passed[t], sink[t],
                         0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(t + 1));
        });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    start.store(1, std::memory_order_release);
    for (auto& t : ts) {
        t.join();
    }
    if (sink[0] + sink[1] == 42) {
        std::puts("");  // never in practice; keeps sink alive
    }
    return {std::max(cyc[0], cyc[1]), passed[0] + passed[1]};
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--iters" && v != nullptr) {
            o.iters = std::strtoull(v, nullptr, 10);
            i++;
        } else if (a == "--reps" && v != nullptr) {
            o.reps = std::max(1, std::atoi(v));
            i++;
        } else if (a == "--work" && v != nullptr) {
            o.work = ints(v);
            i++;
        } else if (a == "--allocs" && v != nullptr) {
            o.allocs = ints(v);
            if (std::find(o.allocs.begin(), o.allocs.end(), 0) != o.allocs.end()) {
                std::fprintf(stderr, "--allocs: at least 1\n");
                return 2;
            }
            i++;
        } else if (a == "--cpus" && v != nullptr) {
            const auto c = ints(v);
            if (c.size() != 2) {
                std::fprintf(stderr, "--cpus takes two CPUs\n");
                return 2;
            }
            o.cpu[0] = c[0];
            o.cpu[1] = c[1];
            i++;
        } else {
            std::fprintf(stderr, "usage: %s [--iters N] [--reps N] [--work 0,50,200] [--allocs 1,1000] [--cpus 0,1]\n", argv[0]);
            return 2;
        }
    }
    if (o.iters == 0) {
        std::fprintf(stderr, "--iters must be at least 1\n");
        return 2;
    }
    const double tsc_hz = tsc_hz_estimate();
    // Allocations on lines of their own (Allocation is alignas(64)), as in the table.
    const int most = *std::max_element(o.allocs.begin(), o.allocs.end());
    // Zeroed raw lines, as the dataplane's (rte_zmalloc): Allocation has no
    // default constructor (its tail is a union of atomics).
    const size_t nallocs = 2 * static_cast<size_t>(most);
    std::unique_ptr<dp::Allocation, decltype(&std::free)> store(
        static_cast<dp::Allocation*>(std::aligned_alloc(alignof(dp::Allocation), nallocs * sizeof(dp::Allocation))),
        &std::free);
    std::memset(static_cast<void*>(store.get()), 0, nallocs * sizeof(dp::Allocation));
    const std::span<dp::Allocation> allocs(store.get(), nallocs);
    std::printf("# TSC %.3f GHz, %llu iterations x %d repetitions (median), CPUs %d,%d; cycles per iteration\n",
                tsc_hz / 1e9, static_cast<unsigned long long>(o.iters), o.reps, o.cpu[0], o.cpu[1]);
    std::printf("%-7s %-6s %10s %13s %11s %10s %10s %13s\n", "allocs", "work", "alone", "separate_cas", "shared_cas",
                "separate", "shared", "shared_unlim");
    for (const int n : o.allocs)
    for (const int work : o.work) {
        struct Case {
            int threads;
            bool same;
            bool limited;
            bool per_packet;
        };
        const Case cases[] = {{1, false, true, false}, {2, false, true, true}, {2, true, true, true},
                              {2, false, true, false}, {2, true, true, false}, {2, true, false, false}};
        constexpr int kCases = sizeof cases / sizeof cases[0];
        double med[kCases];
        for (int c = 0; c < kCases; c++) {
            std::vector<double> v;
            for (int r = 0; r < o.reps; r++) {
                for (auto& a : allocs) {
                    a.tat.store(0, std::memory_order_relaxed);
                    a.byte_ticks.store(cases[c].limited ? dp::byte_ticks_of(1000000000000ULL, tsc_hz) : 0.0f,
                                       std::memory_order_relaxed);
                    a.live.store(1, std::memory_order_relaxed);
                }
                const Result res = measure(o, allocs.data(), static_cast<uint32_t>(n), cases[c].threads, cases[c].same,
                                           cases[c].per_packet, work, tsc_hz);
                const uint64_t want = o.iters * static_cast<uint64_t>(cases[c].threads);
                if (res.passed != want) {  // the limit is out of reach: every take must pass
                    std::fprintf(stderr, "only %llu of %llu takes passed\n", static_cast<unsigned long long>(res.passed),
                                 static_cast<unsigned long long>(want));
                    return 1;
                }
                v.push_back(res.cycles);
            }
            std::sort(v.begin(), v.end());
            med[c] = v[v.size() / 2];
        }
        std::printf("%-7d %-6d %10.1f %13.1f %11.1f %10.1f %10.1f %13.1f\n", n, work, med[0], med[1], med[2], med[3],
                    med[4], med[5]);
    }
    return 0;
}
