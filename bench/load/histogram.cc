#include "histogram.h"

#include <algorithm>
#include <cmath>

namespace turn::load {

void Histogram::record_n(uint64_t v, uint64_t n) {
    if (n == 0) {
        return;
    }
    buckets_[hist::bucket_of(v)] += n;
    count_ += n;
    sum_ += v * n;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
}

void Histogram::merge(const Histogram& o) {
    for (size_t i = 0; i < hist::kBuckets; ++i) {
        buckets_[i] += o.buckets_[i];
    }
    count_ += o.count_;
    sum_ += o.sum_;
    if (o.count_ != 0) {
        min_ = std::min(min_, o.min_);
        max_ = std::max(max_, o.max_);
    }
}

void Histogram::clear() { *this = Histogram{}; }

uint64_t Histogram::percentile(double p) const {
    if (count_ == 0) {
        return 0;
    }
    p = std::clamp(p, 0.0, 100.0);
    // The relative nudge keeps decimal percentiles such as 99.9 (not exact
    // in binary) from rounding the rank up past an exact boundary.
    uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_) * (1 - 1e-12)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < hist::kBuckets; ++i) {
        seen += buckets_[i];
        if (seen >= rank) {
            return std::clamp(hist::bucket_high(i), min_, max_);
        }
    }
    return max_;
}

void SharedHistogram::snapshot_into(Histogram& out) const {
    auto& b = out.buckets();
    for (size_t i = 0; i < hist::kBuckets; ++i) {
        b[i] += buckets_[i].load(std::memory_order_relaxed);
    }
    // Counts from the buckets themselves so percentile() ranks agree with them.
    uint64_t n = 0;
    for (size_t i = 0; i < hist::kBuckets; ++i) {
        n += b[i];
    }
    const uint64_t mn = std::min(out.count() ? out.min() : UINT64_MAX, min_.load(std::memory_order_relaxed));
    const uint64_t mx = std::max(out.max(), max_.load(std::memory_order_relaxed));
    const uint64_t s = out.sum() + sum_.load(std::memory_order_relaxed);
    out.set_stats(n, mn, mx, s);
}

Histogram difference(const Histogram& a, const Histogram& b) {
    Histogram d;
    auto& db = d.buckets();
    const auto& ab = a.buckets();
    const auto& bb = b.buckets();
    uint64_t n = 0;
    size_t lo = hist::kBuckets;
    size_t hi = 0;
    for (size_t i = 0; i < hist::kBuckets; ++i) {
        db[i] = ab[i] >= bb[i] ? ab[i] - bb[i] : 0;
        if (db[i] != 0) {
            n += db[i];
            lo = std::min(lo, i);
            hi = i;
        }
    }
    if (n == 0) {
        return d;
    }
    const uint64_t mn = std::max(hist::bucket_low(lo), a.min());
    const uint64_t mx = std::min(hist::bucket_high(hi), a.max());
    d.set_stats(n, mn, std::max(mn, mx), a.sum() >= b.sum() ? a.sum() - b.sum() : 0);
    return d;
}

}  // namespace turn::load
