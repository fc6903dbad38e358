// Messages the benchmarks run on, built with the library's own builder so
// they are exactly what the relay and its clients exchange. Each benchmark
// checks its fixture once before timing and skips with an error if it does
// not parse or verify, so a broken codec cannot produce a fast, wrong figure.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "auth/credentials.h"
#include "net/address.h"
#include "stun/constants.h"

namespace turn::bench {

constexpr std::array<uint8_t, stun::kTxIdSize> kTxId = {0x5a, 0x17, 0x3c, 0x91, 0x0e, 0x6b,
                                                        0xd2, 0x48, 0x7f, 0x20, 0xa5, 0xc3};

// Credentials of a typical WebRTC client (TURN REST style username).
inline constexpr const char* kUser = "1800000000:alice";
inline constexpr const char* kRealm = "turn.example.org";
inline constexpr const char* kPassword = "Qm9ndXNQYXNzd29yZEZvckJlbmNo";
// A nonce of the length NonceCodec issues (9 + 4 + 16 + 24 characters).
inline constexpr const char* kNonce = "obMatJos2AAABAAAAAGtJ1YA8d1b2f6c0e3a9b4c7d2e1f08";

// 198.18.0.0/15: the project's test range (DESIGN.md).
inline Address peer_address() { return Address::v4(0xC6120201u, 5000); }    // 198.18.2.1
inline Address client_address() { return Address::v4(0xC6120114u, 61000); } // 198.18.1.20

struct Packet {
    std::array<uint8_t, 2048> buf{};
    size_t size = 0;
    std::span<const uint8_t> bytes() const { return {buf.data(), size}; }
};

// Binding request with SOFTWARE and FINGERPRINT, as ICE agents send.
Packet binding_request();
// Authenticated ChannelBind request: USERNAME, REALM, NONCE, CHANNEL-NUMBER,
// XOR-PEER-ADDRESS, then MESSAGE-INTEGRITY (sha256 == false) or
// MESSAGE-INTEGRITY-SHA256 (sha256 == true) with `key`, then FINGERPRINT.
Packet channel_bind_request(const auth::Key& key, bool sha256);

}  // namespace turn::bench
