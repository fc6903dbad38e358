// STUN and TURN numbers: methods, classes, attribute types and error codes
// (RFC 8489, RFC 8656, RFC 5780, RFC 6062, RFC 8016).
#pragma once

#include <cstdint>
#include <string_view>

namespace turn::stun {

constexpr uint32_t kMagicCookie = 0x2112A442;
constexpr size_t kHeaderSize = 20;
constexpr size_t kTxIdSize = 12;
// Largest STUN message we accept or build: it must fit one UDP datagram.
constexpr size_t kMaxMessageSize = 65535;

// Methods (12 bits).
enum class Method : uint16_t {
    kBinding = 0x001,
    kAllocate = 0x003,
    kRefresh = 0x004,
    kSend = 0x006,
    kData = 0x007,
    kCreatePermission = 0x008,
    kChannelBind = 0x009,
    kConnect = 0x00A,             // RFC 6062
    kConnectionBind = 0x00B,      // RFC 6062
    kConnectionAttempt = 0x00C,   // RFC 6062
};

enum class Class : uint8_t {
    kRequest = 0,
    kIndication = 1,
    kSuccess = 2,
    kError = 3,
};

// Message type <-> (method, class), RFC 8489 section 5: M11..M0 interleaved
// with C1 C0 as 00MMMMMCMMMCMMMM.
constexpr uint16_t make_type(uint16_t method, Class cls) {
    const uint16_t c = static_cast<uint16_t>(cls);
    return static_cast<uint16_t>((method & 0x000F) | ((method & 0x0070) << 1) |
                                 ((method & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7));
}
constexpr uint16_t make_type(Method m, Class cls) {
    return make_type(static_cast<uint16_t>(m), cls);
}
constexpr uint16_t type_method(uint16_t type) {
    return static_cast<uint16_t>((type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2));
}
constexpr Class type_class(uint16_t type) {
    return static_cast<Class>(((type >> 4) & 1) | ((type >> 7) & 2));
}

// Attribute types.
namespace attr {
// RFC 8489
constexpr uint16_t kMappedAddress = 0x0001;
constexpr uint16_t kResponseAddress = 0x0002;    // RFC 3489, obsolete
constexpr uint16_t kChangeRequest = 0x0003;      // RFC 5780
constexpr uint16_t kSourceAddress = 0x0004;      // RFC 3489, obsolete
constexpr uint16_t kChangedAddress = 0x0005;     // RFC 3489, obsolete
constexpr uint16_t kUsername = 0x0006;
constexpr uint16_t kMessageIntegrity = 0x0008;
constexpr uint16_t kErrorCode = 0x0009;
constexpr uint16_t kUnknownAttributes = 0x000A;
constexpr uint16_t kChannelNumber = 0x000C;      // RFC 8656
constexpr uint16_t kLifetime = 0x000D;           // RFC 8656
constexpr uint16_t kXorPeerAddress = 0x0012;     // RFC 8656
constexpr uint16_t kData = 0x0013;               // RFC 8656
constexpr uint16_t kRealm = 0x0014;
constexpr uint16_t kNonce = 0x0015;
constexpr uint16_t kXorRelayedAddress = 0x0016;  // RFC 8656
constexpr uint16_t kRequestedAddressFamily = 0x0017;  // RFC 8656
constexpr uint16_t kEvenPort = 0x0018;           // RFC 8656
constexpr uint16_t kRequestedTransport = 0x0019; // RFC 8656
constexpr uint16_t kDontFragment = 0x001A;       // RFC 8656
constexpr uint16_t kAccessToken = 0x001B;        // RFC 7635
constexpr uint16_t kMessageIntegritySha256 = 0x001C;
constexpr uint16_t kPasswordAlgorithm = 0x001D;
constexpr uint16_t kUserhash = 0x001E;
constexpr uint16_t kXorMappedAddress = 0x0020;
constexpr uint16_t kReservationToken = 0x0022;   // RFC 8656
constexpr uint16_t kPriority = 0x0024;           // RFC 8445
constexpr uint16_t kUseCandidate = 0x0025;       // RFC 8445
constexpr uint16_t kPadding = 0x0026;            // RFC 5780
constexpr uint16_t kResponsePort = 0x0027;       // RFC 5780
constexpr uint16_t kConnectionId = 0x002A;       // RFC 6062
// Comprehension-optional range (>= 0x8000).
constexpr uint16_t kAdditionalAddressFamily = 0x8000;  // RFC 8656
constexpr uint16_t kAddressErrorCode = 0x8001;         // RFC 8656
constexpr uint16_t kPasswordAlgorithms = 0x8002;
constexpr uint16_t kAlternateDomain = 0x8003;
constexpr uint16_t kIcmp = 0x8004;                     // RFC 8656
constexpr uint16_t kSoftware = 0x8022;
constexpr uint16_t kAlternateServer = 0x8023;
constexpr uint16_t kTransactionTransmitCounter = 0x8025;  // RFC 7982
constexpr uint16_t kCacheTimeout = 0x8027;             // RFC 5780
constexpr uint16_t kFingerprint = 0x8028;
constexpr uint16_t kIceControlled = 0x8029;            // RFC 8445
constexpr uint16_t kIceControlling = 0x802A;           // RFC 8445
constexpr uint16_t kMobilityTicket = 0x8030;           // RFC 8016
constexpr uint16_t kResponseOrigin = 0x802B;           // RFC 5780
constexpr uint16_t kOtherAddress = 0x802C;             // RFC 5780
constexpr uint16_t kOrigin = 0x802F;                   // coturn / draft, ignored

constexpr bool is_comprehension_required(uint16_t type) { return type < 0x8000; }
}  // namespace attr

// True for the comprehension-required attribute types the server processes
// (see constants.cc for what is deliberately left out). Anything else below
// 0x8000 goes into UNKNOWN-ATTRIBUTES of a 420 answer.
bool is_known_required_attribute(uint16_t type);

// Human-readable name for logs ("XOR-PEER-ADDRESS"); "unknown" otherwise.
std::string_view attribute_name(uint16_t type);
std::string_view method_name(uint16_t method);

// Error codes (RFC 8489 section 14.8, RFC 8656 section 19, RFC 6062).
namespace err {
constexpr uint16_t kTryAlternate = 300;
constexpr uint16_t kBadRequest = 400;
constexpr uint16_t kUnauthenticated = 401;
constexpr uint16_t kForbidden = 403;
constexpr uint16_t kMobilityForbidden = 405;           // RFC 8016
constexpr uint16_t kUnknownAttribute = 420;
constexpr uint16_t kAllocationMismatch = 437;
constexpr uint16_t kStaleNonce = 438;
constexpr uint16_t kAddressFamilyNotSupported = 440;
constexpr uint16_t kWrongCredentials = 441;
constexpr uint16_t kUnsupportedTransportProtocol = 442;
constexpr uint16_t kPeerAddressFamilyMismatch = 443;
constexpr uint16_t kConnectionAlreadyExists = 446;     // RFC 6062
constexpr uint16_t kConnectionTimeoutOrFailure = 447;  // RFC 6062
constexpr uint16_t kAllocationQuotaReached = 486;
constexpr uint16_t kRoleConflict = 487;                // RFC 8445
constexpr uint16_t kServerError = 500;
constexpr uint16_t kInsufficientCapacity = 508;
}  // namespace err

// The plain reason phrase the RFCs give for a code ("Stale Nonce").
std::string_view error_reason(uint16_t code);

// RFC 8489 section 18.5: PASSWORD-ALGORITHM values.
enum class PasswordAlgorithm : uint16_t {
    kMd5 = 0x0001,
    kSha256 = 0x0002,
};

// RFC 8656 REQUESTED-TRANSPORT protocol numbers.
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoTcp = 6;

// RFC 8656 section 12: channel numbers.
constexpr uint16_t kChannelMin = 0x4000;
constexpr uint16_t kChannelMax = 0x4FFF;  // 0x5000-0x7FFF are reserved

}  // namespace turn::stun
