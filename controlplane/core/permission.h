// RFC 8656 section 9: a permission is keyed by the peer's IP address alone
// (the port is ignored) and lasts 300 s unless refreshed by CreatePermission
// or ChannelBind.
#pragma once

#include <cstdint>

namespace turn::cp {

constexpr uint64_t kPermissionLifetimeMs = 300'000;

struct Permission {
    uint64_t expires_ms = 0;
    bool timer_armed = false;  // one wheel entry at a time; see TimerWheel
};

}  // namespace turn::cp
