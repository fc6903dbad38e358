#include "stun/constants.h"

namespace turn::stun {

// What the server processes, not merely what the library can name: an RFC
// 5780 client that sends CHANGE-REQUEST to a server that cannot change its
// address must get 420, or it misreads the answer as endpoint-independent
// filtering. CHANGE-REQUEST, RESPONSE-PORT, PADDING, the RFC 3489 address
// attributes and ICE's PRIORITY/USE-CANDIDATE are therefore "unknown" here;
// the control plane's Binding handler accepts the RFC 5780 ones where it can
// honour them (controlplane/core/handlers/binding.cc).
bool is_known_required_attribute(uint16_t type) {
    switch (type) {
    case attr::kMappedAddress:
    case attr::kUsername:
    case attr::kMessageIntegrity:
    case attr::kErrorCode:
    case attr::kUnknownAttributes:
    case attr::kChannelNumber:
    case attr::kLifetime:
    case attr::kXorPeerAddress:
    case attr::kData:
    case attr::kRealm:
    case attr::kNonce:
    case attr::kXorRelayedAddress:
    case attr::kRequestedAddressFamily:
    case attr::kEvenPort:
    case attr::kRequestedTransport:
    case attr::kDontFragment:
    case attr::kMessageIntegritySha256:
    case attr::kPasswordAlgorithm:
    case attr::kUserhash:
    case attr::kXorMappedAddress:
    case attr::kReservationToken:
    case attr::kConnectionId:
        return true;
    default:
        return false;
    }
}

std::string_view attribute_name(uint16_t type) {
    switch (type) {
    case attr::kMappedAddress: return "MAPPED-ADDRESS";
    case attr::kResponseAddress: return "RESPONSE-ADDRESS";
    case attr::kChangeRequest: return "CHANGE-REQUEST";
    case attr::kSourceAddress: return "SOURCE-ADDRESS";
    case attr::kChangedAddress: return "CHANGED-ADDRESS";
    case attr::kUsername: return "USERNAME";
    case attr::kMessageIntegrity: return "MESSAGE-INTEGRITY";
    case attr::kErrorCode: return "ERROR-CODE";
    case attr::kUnknownAttributes: return "UNKNOWN-ATTRIBUTES";
    case attr::kChannelNumber: return "CHANNEL-NUMBER";
    case attr::kLifetime: return "LIFETIME";
    case attr::kXorPeerAddress: return "XOR-PEER-ADDRESS";
    case attr::kData: return "DATA";
    case attr::kRealm: return "REALM";
    case attr::kNonce: return "NONCE";
    case attr::kXorRelayedAddress: return "XOR-RELAYED-ADDRESS";
    case attr::kRequestedAddressFamily: return "REQUESTED-ADDRESS-FAMILY";
    case attr::kEvenPort: return "EVEN-PORT";
    case attr::kRequestedTransport: return "REQUESTED-TRANSPORT";
    case attr::kDontFragment: return "DONT-FRAGMENT";
    case attr::kAccessToken: return "ACCESS-TOKEN";
    case attr::kMessageIntegritySha256: return "MESSAGE-INTEGRITY-SHA256";
    case attr::kPasswordAlgorithm: return "PASSWORD-ALGORITHM";
    case attr::kUserhash: return "USERHASH";
    case attr::kXorMappedAddress: return "XOR-MAPPED-ADDRESS";
    case attr::kReservationToken: return "RESERVATION-TOKEN";
    case attr::kPriority: return "PRIORITY";
    case attr::kUseCandidate: return "USE-CANDIDATE";
    case attr::kPadding: return "PADDING";
    case attr::kResponsePort: return "RESPONSE-PORT";
    case attr::kConnectionId: return "CONNECTION-ID";
    case attr::kAdditionalAddressFamily: return "ADDITIONAL-ADDRESS-FAMILY";
    case attr::kAddressErrorCode: return "ADDRESS-ERROR-CODE";
    case attr::kPasswordAlgorithms: return "PASSWORD-ALGORITHMS";
    case attr::kAlternateDomain: return "ALTERNATE-DOMAIN";
    case attr::kIcmp: return "ICMP";
    case attr::kSoftware: return "SOFTWARE";
    case attr::kAlternateServer: return "ALTERNATE-SERVER";
    case attr::kTransactionTransmitCounter: return "TRANSACTION_TRANSMIT_COUNTER";
    case attr::kCacheTimeout: return "CACHE-TIMEOUT";
    case attr::kFingerprint: return "FINGERPRINT";
    case attr::kIceControlled: return "ICE-CONTROLLED";
    case attr::kIceControlling: return "ICE-CONTROLLING";
    case attr::kResponseOrigin: return "RESPONSE-ORIGIN";
    case attr::kOtherAddress: return "OTHER-ADDRESS";
    case attr::kOrigin: return "ORIGIN";
    default: return "unknown";
    }
}

std::string_view method_name(uint16_t method) {
    switch (static_cast<Method>(method)) {
    case Method::kBinding: return "Binding";
    case Method::kAllocate: return "Allocate";
    case Method::kRefresh: return "Refresh";
    case Method::kSend: return "Send";
    case Method::kData: return "Data";
    case Method::kCreatePermission: return "CreatePermission";
    case Method::kChannelBind: return "ChannelBind";
    case Method::kConnect: return "Connect";
    case Method::kConnectionBind: return "ConnectionBind";
    case Method::kConnectionAttempt: return "ConnectionAttempt";
    }
    return "unknown";
}

std::string_view error_reason(uint16_t code) {
    switch (code) {
    case err::kTryAlternate: return "Try Alternate";
    case err::kBadRequest: return "Bad Request";
    case err::kUnauthenticated: return "Unauthenticated";
    case err::kForbidden: return "Forbidden";
    case err::kMobilityForbidden: return "Mobility Forbidden";
    case err::kUnknownAttribute: return "Unknown Attribute";
    case err::kAllocationMismatch: return "Allocation Mismatch";
    case err::kStaleNonce: return "Stale Nonce";
    case err::kAddressFamilyNotSupported: return "Address Family not Supported";
    case err::kWrongCredentials: return "Wrong Credentials";
    case err::kUnsupportedTransportProtocol: return "Unsupported Transport Protocol";
    case err::kPeerAddressFamilyMismatch: return "Peer Address Family Mismatch";
    case err::kConnectionAlreadyExists: return "Connection Already Exists";
    case err::kConnectionTimeoutOrFailure: return "Connection Timeout or Failure";
    case err::kAllocationQuotaReached: return "Allocation Quota Reached";
    case err::kRoleConflict: return "Role Conflict";
    case err::kServerError: return "Server Error";
    case err::kInsufficientCapacity: return "Insufficient Capacity";
    default: return "Error";
    }
}

}  // namespace turn::stun
