// bench/load/histogram.h: known inputs give known percentiles; bucket bounds
// keep the promised relative error; snapshots and differences add up.
#include "histogram.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace turn::load {
namespace {

TEST(LoadHistogram, EmptyIsZero) {
    Histogram h;
    EXPECT_EQ(h.count(), 0u);
    EXPECT_EQ(h.percentile(50), 0u);
    EXPECT_EQ(h.percentile(99.9), 0u);
    EXPECT_EQ(h.max(), 0u);
}

TEST(LoadHistogram, SmallValuesAreExact) {
    Histogram h;
    for (uint64_t v = 1; v <= 100; ++v) {
        h.record(v);
    }
    EXPECT_EQ(h.count(), 100u);
    EXPECT_EQ(h.percentile(50), 50u);
    EXPECT_EQ(h.percentile(90), 90u);
    EXPECT_EQ(h.percentile(99), 99u);
    EXPECT_EQ(h.percentile(99.9), 100u);
    EXPECT_EQ(h.percentile(100), 100u);
    EXPECT_EQ(h.min(), 1u);
    EXPECT_EQ(h.max(), 100u);
    EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LoadHistogram, LargeValuesWithinRelativeError) {
    // 1..10000 microseconds in nanoseconds: percentile p is p% of 10 ms.
    Histogram h;
    for (uint64_t us = 1; us <= 10000; ++us) {
        h.record(us * 1000);
    }
    const struct {
        double p;
        double expect_ns;
    } cases[] = {{50, 5e6}, {90, 9e6}, {99, 9.9e6}, {99.9, 9.99e6}};
    for (const auto& c : cases) {
        const double got = static_cast<double>(h.percentile(c.p));
        EXPECT_GE(got, c.expect_ns) << "p" << c.p;              // highest equivalent value: never below
        EXPECT_LE(got, c.expect_ns * (1 + 1.0 / 64)) << "p" << c.p;  // bucket width <= 1/64 of the value
    }
    EXPECT_EQ(h.percentile(100), 10'000'000u);
}

TEST(LoadHistogram, OutlierOnlyMovesTheTail) {
    Histogram h;
    h.record_n(100'000, 999);     // 100 us
    h.record(50'000'000);         // one 50 ms stall
    EXPECT_LE(h.percentile(50), 100'000u * 65 / 64);
    EXPECT_LE(h.percentile(99.9), 100'000u * 65 / 64);
    EXPECT_EQ(h.percentile(100), 50'000'000u);
}

TEST(LoadHistogram, BucketsCoverEveryValueOnce) {
    for (size_t i = 1; i < hist::kBuckets; ++i) {
        ASSERT_EQ(hist::bucket_low(i), hist::bucket_high(i - 1) + 1) << i;
    }
    for (uint64_t v : {0ull, 1ull, 127ull, 128ull, 129ull, 255ull, 256ull, 1'000'000ull, 123'456'789ull}) {
        const size_t b = hist::bucket_of(v);
        EXPECT_LE(hist::bucket_low(b), v);
        EXPECT_GE(hist::bucket_high(b), v);
    }
    EXPECT_EQ(hist::bucket_of(UINT64_MAX), hist::kBuckets - 1);  // clamped, not out of range
}

TEST(LoadHistogram, MergeAndSnapshotDifference) {
    SharedHistogram s;
    Histogram first;
    for (uint64_t v = 1; v <= 50; ++v) {
        s.record(v);
    }
    s.snapshot_into(first);
    for (uint64_t v = 51; v <= 100; ++v) {
        s.record(v);
    }
    Histogram second;
    s.snapshot_into(second);
    EXPECT_EQ(second.count(), 100u);
    const Histogram d = difference(second, first);
    EXPECT_EQ(d.count(), 50u);
    EXPECT_EQ(d.min(), 51u);
    EXPECT_EQ(d.max(), 100u);
    EXPECT_EQ(d.percentile(50), 75u);

    Histogram m = first;
    m.merge(d);
    EXPECT_EQ(m.count(), 100u);
    EXPECT_EQ(m.percentile(50), 50u);
    EXPECT_EQ(m.percentile(99), 99u);
}

}  // namespace
}  // namespace turn::load
