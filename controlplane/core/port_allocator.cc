#include "core/port_allocator.h"

#include <openssl/rand.h>

#include <algorithm>

namespace turn::cp {

namespace {

// 64 unpredictable bits (std::random_device's two 32-bit draws should
// OpenSSL's generator ever fail).
uint64_t random64() {
    uint64_t v = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1) {
        std::random_device rd;
        v = uint64_t{rd()} << 32 | rd();
    }
    return v;
}

}  // namespace

PortAllocator::PortAllocator(uint16_t min, uint16_t max, uint64_t reservation_ms, uint64_t seed)
    : min_(min), max_(max), reservation_ms_(reservation_ms), v4_(static_cast<size_t>(max - min) + 1, kFree),
      v6_(static_cast<size_t>(max - min) + 1, kFree), rng_(seed != 0 ? seed : random64()), secure_(seed == 0) {}

void PortAllocator::expire_reservations(uint64_t now_ms) {
    for (auto it = reservations_.begin(); it != reservations_.end();) {
        if (it->second.expires_ms <= now_ms) {
            auto& t = table(it->second.family);
            t[it->second.port - min_] = kFree;
            it = reservations_.erase(it);
        } else {
            ++it;
        }
    }
}

std::optional<PortAllocator::Grant> PortAllocator::acquire(Family f, bool even, bool reserve_next, uint64_t now_ms) {
    std::lock_guard lock(mu_);
    expire_reservations(now_ms);
    auto& t = table(f);
    const size_t n = t.size();
    // Random start, linear probe: ports are not predictable (RFC 8656 section 7.2
    // recommends randomisation) and a full range is still found in one pass.
    const size_t start = static_cast<size_t>(rng_() % n);
    for (size_t i = 0; i < n; ++i) {
        const size_t idx = (start + i) % n;
        const uint16_t port = static_cast<uint16_t>(min_ + idx);
        if (t[idx] != kFree || (even && (port & 1u) != 0)) {
            continue;
        }
        if (reserve_next) {
            if (idx + 1 >= n || t[idx + 1] != kFree) {
                continue;
            }
            uint64_t token = 0;
            while (token == 0 || reservations_.count(token) != 0) {
                token = secure_ ? random64() : rng_();
            }
            t[idx] = kUsed;
            t[idx + 1] = kReserved;
            reservations_[token] = Reservation{f, static_cast<uint16_t>(port + 1), now_ms + reservation_ms_};
            return Grant{port, token};
        }
        t[idx] = kUsed;
        return Grant{port, 0};
    }
    return std::nullopt;
}

std::optional<PortAllocator::Reserved> PortAllocator::take_reserved(uint64_t token, uint64_t now_ms) {
    std::lock_guard lock(mu_);
    expire_reservations(now_ms);
    auto it = reservations_.find(token);
    if (it == reservations_.end()) {
        return std::nullopt;
    }
    const Reserved r{it->second.family, it->second.port};
    table(r.family)[r.port - min_] = kUsed;
    reservations_.erase(it);
    return r;
}

bool PortAllocator::take(Family f, uint16_t port) {
    std::lock_guard lock(mu_);
    if (port < min_ || port > max_ || table(f)[port - min_] != kFree) {
        return false;
    }
    table(f)[port - min_] = kUsed;
    return true;
}

void PortAllocator::release(Family f, uint16_t port) {
    std::lock_guard lock(mu_);
    if (port < min_ || port > max_) {
        return;
    }
    table(f)[port - min_] = kFree;
}

size_t PortAllocator::in_use(Family f) const {
    std::lock_guard lock(mu_);
    const auto& t = f == Family::kIPv6 ? v6_ : v4_;
    return static_cast<size_t>(std::count_if(t.begin(), t.end(), [](uint8_t s) { return s != kFree; }));
}

}  // namespace turn::cp
