// What one random cache line costs on this machine: a dependent pointer
// chase over N bytes (one pointer per 64-byte line, random order), on 2 MiB
// hugetlb pages and on 4 KiB pages, in TSC cycles per load. Tells cache
// sizes and DRAM latency apart from page-walk cost, to read the dataplane
// bench's 100k and 1M flow figures (bench/RESULTS.md). Needs free 2 MiB
// hugepages (256 MiB); without them only the 4 KiB column is printed.
//
// Then memory-level parallelism: K independent chases interleaved over the
// largest footprint (K = 1..32), cycles per load. Where the figure stops
// falling is how many cache misses one core keeps in flight; a packet that
// needs L random lines costs about L x that figure once bursts overlap them.
//
//   memory_latency [max MiB, default 256]
#include <sys/mman.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

namespace {

// Links the lines of [base, base + bytes) into one random cycle; returns
// the lines in cycle order.
std::vector<uint32_t> link(uint8_t* base, size_t bytes) {
    const size_t lines = bytes / 64;
    std::vector<uint32_t> order(lines);
    for (size_t i = 0; i < lines; i++) {
        order[i] = static_cast<uint32_t>(i);
    }
    std::mt19937 rng(1);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i = 0; i < lines; i++) {
        *reinterpret_cast<uint8_t**>(base + size_t{order[i]} * 64) = base + size_t{order[(i + 1) % lines]} * 64;
    }
    return order;
}

double chase(uint8_t* base, size_t bytes, size_t steps) {
    const size_t lines = bytes / 64;
    const std::vector<uint32_t> order = link(base, bytes);
    auto* p = base + size_t{order[0]} * 64;
    for (size_t i = 0; i < lines; i++) {  // warm: every line once
        p = *reinterpret_cast<uint8_t**>(p);
    }
    const uint64_t t0 = __rdtsc();
    for (size_t i = 0; i < steps; i++) {
        p = *reinterpret_cast<uint8_t**>(p);
    }
    const uint64_t t1 = __rdtsc();
    std::fprintf(stderr, "%s", p == nullptr ? "?" : "");  // keeps the chain alive
    return static_cast<double>(t1 - t0) / static_cast<double>(steps);
}

// K chases at once, starting K / lines apart on one cycle (so they never
// meet), each step loads one line of every chase.
template <int K>
double parallel(uint8_t* base, size_t bytes, size_t steps) {
    const std::vector<uint32_t> order = link(base, bytes);
    uint8_t* p[K];
    for (int k = 0; k < K; k++) {
        p[k] = base + size_t{order[order.size() / K * k]} * 64;
    }
    const uint64_t t0 = __rdtsc();
    for (size_t i = 0; i < steps; i++) {
        for (int k = 0; k < K; k++) {
            p[k] = *reinterpret_cast<uint8_t**>(p[k]);
        }
    }
    const uint64_t t1 = __rdtsc();
    for (int k = 0; k < K; k++) {
        std::fprintf(stderr, "%s", p[k] == nullptr ? "?" : "");
    }
    return static_cast<double>(t1 - t0) / static_cast<double>(steps * K);
}

}  // namespace

int main(int argc, char** argv) {
    const size_t max_mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 256;
    const size_t max = max_mib << 20;
    void* h = mmap(nullptr, max, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    void* s = mmap(nullptr, max, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        std::perror("mmap");
        return 1;
    }
    madvise(s, max, MADV_NOHUGEPAGE);
    auto* huge = h == MAP_FAILED ? nullptr : static_cast<uint8_t*>(h);
    auto* small = static_cast<uint8_t*>(s);
    std::printf("%8s %12s %12s   (TSC cycles per dependent random load)\n", "MiB", "2MiB pages", "4KiB pages");
    for (size_t mib = 1; mib <= max_mib; mib *= 2) {
        const size_t b = mib << 20;
        const double hc = huge != nullptr ? chase(huge, b, 2000000) : 0;
        std::printf("%8zu %12.1f %12.1f\n", mib, hc, chase(small, b, 2000000));
    }
    uint8_t* mem = huge != nullptr ? huge : small;
    std::printf("\n%8s %12s   (%zu MiB on %s pages: TSC cycles per load, K chases interleaved)\n", "K", "cycles",
                max_mib, huge != nullptr ? "2 MiB" : "4 KiB");
    const size_t steps = 4000000;
    const std::pair<int, double> mlp[] = {
        {1, parallel<1>(mem, max, steps)},        {2, parallel<2>(mem, max, steps / 2)},
        {4, parallel<4>(mem, max, steps / 4)},    {8, parallel<8>(mem, max, steps / 8)},
        {12, parallel<12>(mem, max, steps / 12)}, {16, parallel<16>(mem, max, steps / 16)},
        {24, parallel<24>(mem, max, steps / 24)}, {32, parallel<32>(mem, max, steps / 32)},
    };
    for (const auto& [k, c] : mlp) {
        std::printf("%8d %12.1f\n", k, c);
    }
    return 0;
}
