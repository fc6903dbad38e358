#include "core/timer_wheel.h"

#include <gtest/gtest.h>

#include <vector>

namespace turn::cp {
namespace {

TEST(TimerWheel, FiresAtDeadlineNotBefore) {
    TimerWheel w(0, 100, 64);
    int fired = 0;
    w.schedule(1000, [&] { ++fired; });
    w.advance(999);
    EXPECT_EQ(fired, 0);
    w.advance(1000);
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, DeadlinesBeyondOneRotation) {
    TimerWheel w(0, 100, 16);  // one rotation = 1.6 s
    std::vector<int> order;
    w.schedule(5'000, [&] { order.push_back(5); });
    w.schedule(300, [&] { order.push_back(0); });
    for (uint64_t t = 0; t <= 4'900; t += 100) {
        w.advance(t);
    }
    EXPECT_EQ(order, std::vector<int>({0}));
    w.advance(5'000);
    EXPECT_EQ(order, std::vector<int>({0, 5}));
}

TEST(TimerWheel, LongJumpFiresEverythingDue) {
    TimerWheel w(0, 100, 16);
    int fired = 0;
    for (int i = 1; i <= 100; ++i) {
        w.schedule(static_cast<uint64_t>(i) * 1000, [&] { ++fired; });
    }
    w.advance(50'000);
    EXPECT_EQ(fired, 50);
    w.advance(1'000'000);
    EXPECT_EQ(fired, 100);
}

TEST(TimerWheel, CallbackMayReschedule) {
    TimerWheel w(0, 100, 8);
    int fired = 0;
    std::function<void()> again = [&] {
        if (++fired < 3) {
            w.schedule(static_cast<uint64_t>(fired + 1) * 1000, again);
        }
    };
    w.schedule(1000, again);
    for (uint64_t t = 0; t <= 5000; t += 100) {
        w.advance(t);
    }
    EXPECT_EQ(fired, 3);
}

TEST(TimerWheel, PastDeadlineFiresOnNextTick) {
    TimerWheel w(10'000, 100, 8);
    int fired = 0;
    w.schedule(5'000, [&] { ++fired; });
    w.advance(10'000);
    EXPECT_EQ(fired, 0);
    w.advance(10'100);
    EXPECT_EQ(fired, 1);
}

}  // namespace
}  // namespace turn::cp
