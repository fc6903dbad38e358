// Latency histogram with log-linear buckets, after Gil Tene's HdrHistogram:
// values below 2^kSubBits are counted exactly; above, every power-of-two range
// is cut into 2^(kSubBits-1) equal buckets, so a bucket's width is at most
// 1/64 of its values (relative error <= 1.6 %). Fixed size, no allocation after
// construction, recording is a few instructions.
//
// Histogram is the plain version (merging, percentiles, unit tests).
// SharedHistogram is written by exactly one thread and snapshotted by another
// (per-second progress): its counters are relaxed atomics updated with a load
// and a store, which costs the same as a plain increment for the single writer.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace turn::load {

namespace hist {
constexpr unsigned kSubBits = 7;                       // 128 exact values, then 64 per octave
constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;
constexpr uint64_t kHalf = kSubCount / 2;
constexpr unsigned kMaxBits = 40;                      // values clamp at 2^40 - 1 (~18 min in ns)
constexpr uint64_t kMaxValue = (uint64_t{1} << kMaxBits) - 1;
constexpr size_t kBuckets = kSubCount + (kMaxBits - kSubBits) * kHalf;

constexpr size_t bucket_of(uint64_t v) {
    if (v > kMaxValue) {
        v = kMaxValue;
    }
    if (v < kSubCount) {
        return static_cast<size_t>(v);
    }
    const unsigned msb = 63u - static_cast<unsigned>(__builtin_clzll(v));
    const unsigned shift = msb - (kSubBits - 1);       // v >> shift lies in [64, 128)
    return static_cast<size_t>(kSubCount + (shift - 1) * kHalf + ((v >> shift) - kHalf));
}
// Smallest and largest value counted in bucket `i`.
constexpr uint64_t bucket_low(size_t i) {
    if (i < kSubCount) {
        return i;
    }
    const uint64_t shift = (i - kSubCount) / kHalf + 1;
    const uint64_t top = (i - kSubCount) % kHalf + kHalf;
    return top << shift;
}
constexpr uint64_t bucket_high(size_t i) {
    if (i < kSubCount) {
        return i;
    }
    const uint64_t shift = (i - kSubCount) / kHalf + 1;
    return bucket_low(i) + (uint64_t{1} << shift) - 1;
}
}  // namespace hist

class Histogram {
public:
    void record(uint64_t v) { record_n(v, 1); }
    void record_n(uint64_t v, uint64_t n);
    void merge(const Histogram& o);
    void clear();

    uint64_t count() const { return count_; }
    uint64_t min() const { return count_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
    // The value at percentile p (0..100]: the highest value equivalent to the
    // bucket holding the ceil(p% * count)-th smallest sample, clamped to
    // [min, max] so p100 is the exact maximum. 0 when empty.
    uint64_t percentile(double p) const;

    // For SharedHistogram snapshots: bucket counts and extremes.
    std::array<uint64_t, hist::kBuckets>& buckets() { return buckets_; }
    const std::array<uint64_t, hist::kBuckets>& buckets() const { return buckets_; }
    uint64_t sum() const { return sum_; }
    void set_stats(uint64_t count, uint64_t min, uint64_t max, uint64_t sum) {
        count_ = count;
        min_ = min;
        max_ = max;
        sum_ = sum;
    }

private:
    std::array<uint64_t, hist::kBuckets> buckets_{};
    uint64_t count_ = 0;
    uint64_t min_ = UINT64_MAX;
    uint64_t max_ = 0;
    uint64_t sum_ = 0;
};

class SharedHistogram {
public:
    // Writer thread only.
    void record(uint64_t v) {
        bump(buckets_[hist::bucket_of(v)], 1);
        bump(count_, 1);
        bump(sum_, v);
        if (v > max_.load(std::memory_order_relaxed)) {
            max_.store(v, std::memory_order_relaxed);
        }
        if (v < min_.load(std::memory_order_relaxed)) {
            min_.store(v, std::memory_order_relaxed);
        }
    }
    // Any thread: adds the current counts to `out` (merge of a consistent-enough
    // view: each counter only grows, so differences of snapshots are >= 0).
    void snapshot_into(Histogram& out) const;

private:
    static void bump(std::atomic<uint64_t>& c, uint64_t n) {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    std::array<std::atomic<uint64_t>, hist::kBuckets> buckets_{};
    std::atomic<uint64_t> count_{0};
    std::atomic<uint64_t> sum_{0};
    std::atomic<uint64_t> min_{UINT64_MAX};
    std::atomic<uint64_t> max_{0};
};

// out = a - b, bucket by bucket (a is a later snapshot of the same counters).
// min/max of the difference are the bounds of the lowest/highest non-empty
// bucket, clamped by a's exact extremes.
Histogram difference(const Histogram& a, const Histogram& b);

}  // namespace turn::load
