#include "churn.h"

#include <deque>

#include "clock.h"

namespace turn::load {

Churner::Churner(std::function<SessionConfig(uint64_t)> make, std::function<void(const Address&)> on_relayed,
                 double rate, uint64_t hold_ns)
    : make_(std::move(make)), on_relayed_(std::move(on_relayed)), rate_(rate), hold_ns_(hold_ns) {}

Churner::~Churner() {
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Churner::start(uint64_t start_ns, uint64_t end_ns) {
    thread_ = std::thread([this, start_ns, end_ns] { run(start_ns, end_ns); });
}

ChurnResult Churner::finish() {
    if (thread_.joinable()) {
        thread_.join();
    }
    return result_;
}

void Churner::run(uint64_t start_ns, uint64_t end_ns) {
    struct Live {
        std::unique_ptr<TurnSession> s;
        uint64_t expires_ns;
    };
    std::deque<Live> live;
    // A released session keeps its socket for a while: closed at once, its
    // port could be the kernel's pick for the next session while the server
    // still holds the old allocation's 5-tuple, and that Allocate would get
    // 437 (coturn answered so to 1 in ~40 churned allocations here).
    constexpr uint64_t kLingerNs = 2 * kNsPerSec;
    std::deque<Live> lingering;  // expires_ns: when its socket closes
    result_.target_rate = rate_;
    const uint64_t interval = static_cast<uint64_t>(1e9 / rate_);
    uint64_t next = start_ns;
    uint64_t i = 0;
    // Each delete has its own second.
    auto release_due = [&](uint64_t now, bool all) {
        while (!live.empty() && (all || live.front().expires_ns <= now)) {
            if (live.front().s->release(mono_ns() + kNsPerSec)) {
                result_.deleted++;
            } else {
                result_.delete_failed++;
            }
            lingering.push_back({std::move(live.front().s), mono_ns() + kLingerNs});
            live.pop_front();
        }
        while (!lingering.empty() && (all || lingering.front().expires_ns <= now)) {
            lingering.pop_front();
        }
    };
    while (true) {
        uint64_t now = mono_ns();
        if (now >= end_ns) {
            break;
        }
        release_due(now, false);
        if (now < next) {
            const uint64_t wait = std::min(next, end_ns) - now;
            const timespec ts{static_cast<time_t>(wait / kNsPerSec), static_cast<long>(wait % kNsPerSec)};
            nanosleep(&ts, nullptr);
            continue;
        }
        // Behind schedule by more than a second: skip ahead rather than burst.
        next = std::max(next + interval, now - kNsPerSec);
        auto s = std::make_unique<TurnSession>(make_(i++));
        result_.attempted++;
        std::string err;
        const uint64_t t0 = mono_ns();
        if (!s->open(err)) {
            result_.failed++;
            continue;
        }
        // Its own 5 s, not cut at the window's end: one started just before
        // the end is not a server's failure (the window only stops new ones).
        const int o = s->setup(t0 + 5 * kNsPerSec);
        const uint64_t t1 = mono_ns();
        if (o == outcome::kOk) {
            result_.created++;
            result_.setup_latency.record(t1 - t0);
            if (on_relayed_) {
                on_relayed_(s->relayed());
            }
            live.push_back({std::move(s), t1 + hold_ns_});
        } else {
            result_.failed++;
            if (s->allocated()) {
                live.push_back({std::move(s), t1});
            }
        }
    }
    // Teardown after the churn window.
    release_due(0, true);
    result_.elapsed_s = static_cast<double>(end_ns - start_ns) / 1e9;
    result_.achieved_rate = result_.elapsed_s > 0 ? static_cast<double>(result_.created) / result_.elapsed_s : 0;
}

}  // namespace turn::load
