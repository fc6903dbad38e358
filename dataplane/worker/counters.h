// Per-worker packet counters, generated from one X-macro list so every drop
// and punt reason has a name, a counter and a description (STYLE.md 3).
// Only the owning worker writes its Counters; the main lcore reads them.
#pragma once

#include <cstdint>
#include <string_view>

#include "ipc/dataplane_counters.h"

namespace dp {

// The list itself is shared with the control plane, which exports the
// counters (ipc/dataplane_counters.h).
#define DP_COUNTERS TURN_DP_COUNTERS

enum class Counter : uint16_t {
#define DP_X(name, desc) name,
    DP_COUNTERS(DP_X)
#undef DP_X
        kCount
};
constexpr size_t kCounterCount = static_cast<size_t>(Counter::kCount);

constexpr std::string_view counter_name(Counter c) {
    constexpr std::string_view names[] = {
#define DP_X(name, desc) #name,
        DP_COUNTERS(DP_X)
#undef DP_X
    };
    return names[static_cast<size_t>(c)];
}
constexpr std::string_view counter_description(Counter c) {
    constexpr std::string_view d[] = {
#define DP_X(name, desc) desc,
        DP_COUNTERS(DP_X)
#undef DP_X
    };
    return d[static_cast<size_t>(c)];
}

struct alignas(64) Counters {
    uint64_t v[kCounterCount] = {};
    void inc(Counter c, uint64_t n = 1) { v[static_cast<size_t>(c)] += n; }
    uint64_t get(Counter c) const { return v[static_cast<size_t>(c)]; }
};

}  // namespace dp
