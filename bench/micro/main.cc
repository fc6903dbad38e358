// Entry point of the microbenchmarks; each *_bench.cc registers its own.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
