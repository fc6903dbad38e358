// ChannelData framing, the per-packet path of channel traffic.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <vector>

#include "turn/channel_data.h"

namespace turn::bench {
namespace {

void BM_ParseChannelData(benchmark::State& state) {
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<uint8_t> payload(n, 0x5a);
    std::vector<uint8_t> frame(kChannelDataHeader + n + 3);
    frame.resize(build_channel_data(frame, 0x4001, payload, false));
    ChannelDataView probe;
    if (frame.empty() || parse_channel_data(frame, probe) != ChannelDataError::kOk ||
        probe.payload.size() != n) {
        state.SkipWithError("fixture does not parse");
        return;
    }
    for (auto _ : state) {
        ChannelDataView v;
        const ChannelDataError e = parse_channel_data(frame, v);
        benchmark::DoNotOptimize(e);
        benchmark::DoNotOptimize(v);
    }
    // No bytes/s: parsing reads the 4-byte header only, never the payload.
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseChannelData)->Arg(160)->Arg(1200);

}  // namespace
}  // namespace turn::bench
