// RFC 8656 section 12: a channel binding ties a channel number
// (0x4000-0x4FFF) to one peer transport address for 600 s. While bound, and for
// 5 minutes after it expires, neither the number nor the peer may be bound to
// anything else (section 12.2); the same pair may be re-bound.
#pragma once

#include <cstdint>

#include "net/address.h"

namespace turn::cp {

constexpr uint64_t kChannelLifetimeMs = 600'000;
constexpr uint64_t kChannelQuarantineMs = 300'000;

struct ChannelBinding {
    Address peer;
    uint64_t expires_ms = 0;
    bool timer_armed = false;
};

// What a recently expired binding still blocks.
struct ChannelQuarantine {
    uint16_t channel = 0;
    Address peer;
    uint64_t until_ms = 0;
};

}  // namespace turn::cp
