// Builds test frames byte by byte with its own checksum code (RFC 1071, big
// endian, no DPDK), so golden outputs are checked against an independent
// computation rather than the dataplane's own incremental arithmetic.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "net/address.h"

namespace dptest {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

struct Frame {
    Mac dst_mac{};
    Mac src_mac{};
    std::optional<uint16_t> vlan;
    turn::Address src;  // ip + port
    turn::Address dst;
    Bytes payload;      // UDP payload
    uint8_t ttl = 64;
    uint16_t ip_id = 0;
    bool df = true;
    uint8_t tos = 0;    // IPv4 TOS / IPv6 traffic class
    bool zero_udp_checksum = false;  // IPv4 only
    uint8_t proto = 17;
};

uint16_t checksum(const uint8_t* p, size_t n, uint32_t initial = 0);
Bytes build(const Frame& f);

// TURN payloads (RFC 8656).
Bytes channel_data(uint16_t channel, const Bytes& data, size_t extra_pad = 0);
Bytes send_indication(const std::array<uint8_t, 12>& txid, const turn::Address& peer, const Bytes& data,
                      bool fingerprint);
Bytes data_indication(const std::array<uint8_t, 12>& txid, const turn::Address& peer, const Bytes& data);
Bytes stun_binding_request();
Bytes pattern(size_t n, uint8_t seed = 1);

}  // namespace dptest
