// Flow-table keys and values (DESIGN.md "Flow tables").
//
// One rte_hash per address family holds every kind of entry; the kind is part
// of the key. IPv4 keys are 16 bytes, which rte_hash compares with a single
// SSE compare (its k16 specialisation) and which keeps the key store at 32
// bytes per entry. IPv6 keys are 24 bytes, which keeps their key store at 32
// bytes per entry too (rte_hash stores 8 bytes of data with each key and
// rounds the sum up to 16): their `a` is not the 16-byte address but its
// index, of the listening address in ListenSet or of the relayed IP in
// RelayPorts (flow/tables.h; neither is ever removed or renumbered while the
// tables live). A 40-byte key with the whole address cost 48 bytes per entry
// (bench/RESULTS.md "IPv6 flows in 256 bytes"). Both are zero-padded so
// memcmp-style equality is exact.
//
//   kind         a (ip, port)       b (ip, port)      channel   data
//   kClient      listen addr        client addr       0         inline: alloc
//   kPermission  relayed addr       peer IP, port 0   0         inline: alloc
//   kChannelIn   listen addr        client addr       number    ChannelValue* (peer addr, alloc)
//   kChannelOut  relayed addr       peer addr         0         inline: alloc, channel
//
// kChannelIn/kChannelOut hold only channels that are not in their
// allocation's slots (flow/tables.h ChanSlot: two IPv4 peers per allocation
// with an IPv4 relayed address, one IPv6 peer per allocation with only an
// IPv6 one). Relayed addresses themselves are not in the hash: RelayPorts
// (flow/tables.h) maps them to allocations.
#pragma once

#include <cstdint>
#include <cstring>

namespace dp {

enum class KeyKind : uint8_t {
    kChannelIn = 1,
    kClient = 2,
    kChannelOut = 3,
    kPermission = 4,
};

// Ports are in network byte order, as they sit in the packet, so building a
// key from a header is plain copies.
struct Key4 {
    uint32_t a_ip = 0;
    uint32_t b_ip = 0;
    uint16_t a_port = 0;
    uint16_t b_port = 0;
    uint16_t channel = 0;  // network byte order too
    KeyKind kind{};
    uint8_t pad = 0;
};
static_assert(sizeof(Key4) == 16);

struct Key6 {
    uint8_t b_ip[16] = {};
    uint16_t a_port = 0;
    uint16_t b_port = 0;
    uint16_t channel = 0;
    uint8_t a = 0;  // index of a: ListenSet v6 entry (kClient, kChannelIn) or RelayPorts IP (kPermission, kChannelOut)
    KeyKind kind{};
};
static_assert(sizeof(Key6) == 24);

// Which index a key's `a` is, by kind.
inline bool a_is_listen(KeyKind k) { return k == KeyKind::kClient || k == KeyKind::kChannelIn; }

// Value of a kChannelIn entry: where the client's ChannelData goes. The
// relayed address comes from the allocation (same family as the peer).
struct ChannelValue {
    uint8_t peer_ip[16] = {};  // IPv4 in [0..3]
    uint16_t peer_port = 0;    // network byte order
    uint8_t family = 0;        // 4 or 6
    uint8_t pad = 0;
    uint32_t alloc = 0;
};
static_assert(sizeof(ChannelValue) == 24);

// Inline values ride in the hash's 8-byte data pointer, tagged with bit 0
// (ChannelValue pointers are at least 8-byte aligned, so bit 0 is free).
inline void* inline_data(uint32_t alloc, uint16_t channel_be) {
    return reinterpret_cast<void*>((uintptr_t{alloc} << 32) | (uintptr_t{channel_be} << 16) | 1u);
}
inline bool is_inline(const void* d) { return (reinterpret_cast<uintptr_t>(d) & 1u) != 0; }
inline uint32_t inline_alloc(const void* d) {
    return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(d) >> 32);
}
inline uint16_t inline_channel(const void* d) {
    return static_cast<uint16_t>(reinterpret_cast<uintptr_t>(d) >> 16);
}
// The allocation a hash value names: inline, or the ChannelValue's.
inline uint32_t value_alloc(const void* d) {
    return is_inline(d) ? inline_alloc(d) : static_cast<const ChannelValue*>(d)->alloc;
}

}  // namespace dp
