// What one random cache line costs on this machine: a dependent pointer
// chase over N bytes (one pointer per 64-byte line, random order), on 2 MiB
// hugetlb pages and on 4 KiB pages, in TSC cycles per load. Tells cache
// sizes and DRAM latency apart from page-walk cost, to read the dataplane
// bench's 100k and 1M flow figures (bench/RESULTS.md). Needs free 2 MiB
// hugepages (256 MiB); without them only the 4 KiB column is printed.
//
//   memory_latency [max MiB, default 256]
#include <sys/mman.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

double chase(uint8_t* base, size_t bytes, size_t steps) {
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
    return 0;
}
