// The requests turn-load sends (RFC 8656 Allocate, CreatePermission,
// ChannelBind, Refresh; RFC 6062 Connect, ConnectionBind), built into a
// caller's buffer, and what it reads back from their answers. No I/O and no
// state: TurnSession keeps the credentials and the sockets, and the unit tests
// build and parse these directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "net/address.h"
#include "stun/constants.h"
#include "stun/message.h"

namespace turn::load {

enum class Request : uint8_t { kAllocate, kCreatePermission, kChannelBind, kRefresh, kConnect, kConnectionBind };

stun::Method method_of(Request r);

// REQUESTED-TRANSPORT protocol numbers (RFC 8656 section 18.11, RFC 6062 section 4.1).
constexpr uint8_t kTransportUdp = 17;
constexpr uint8_t kTransportTcp = 6;

// What a request carries besides its credentials; each kind reads its own fields.
struct RequestFields {
    uint8_t requested_transport = kTransportUdp;  // Allocate
    Address peer;                 // CreatePermission, ChannelBind, Connect; Allocate: its family
    uint16_t channel = 0;         // ChannelBind
    uint32_t lifetime_s = 0;      // Refresh
    uint32_t connection_id = 0;   // ConnectionBind
};

// Long-term credential attributes (RFC 8489 section 9.2). An empty `key`: the
// first, unauthenticated request, which the server answers with 401.
struct RequestAuth {
    std::string_view username;
    std::string_view realm;
    std::string_view nonce;
    std::span<const uint8_t> key;
};

// Builds `kind` into `out` (MESSAGE-INTEGRITY with auth.key if set, then
// FINGERPRINT); returns its size, 0 if it does not fit.
size_t build_request(Request kind, const RequestFields& fields, const RequestAuth& auth,
                     std::span<const uint8_t, stun::kTxIdSize> txid, std::span<uint8_t> out);

// CONNECTION-ID of a Connect success response (RFC 6062 section 5.2, the
// attribute in 6.2.1); false when it is missing or not 4 bytes.
bool connection_id_of(const stun::MessageView& response, uint32_t& id);

}  // namespace turn::load
