#include "core/stats.h"

#include "stun/constants.h"

namespace turn::cp {

#define TURN_CP_NAME(name, str) str,
namespace {
constexpr std::string_view kDropNames[] = {TURN_CP_DROP_REASONS(TURN_CP_NAME)};
constexpr std::string_view kAuthNames[] = {TURN_CP_AUTH_FAILURES(TURN_CP_NAME)};
constexpr std::string_view kQuotaNames[] = {TURN_CP_QUOTA_KINDS(TURN_CP_NAME)};
constexpr std::string_view kConnCloseNames[] = {TURN_CP_CONN_CLOSE_REASONS(TURN_CP_NAME)};
constexpr std::string_view kMethodNames[] = {"binding", "allocate", "refresh", "create_permission",
                                             "channel_bind", "connect", "connection_bind", "other"};
constexpr std::string_view kDirectionNames[] = {"client_to_peer", "peer_to_client"};
}  // namespace
#undef TURN_CP_NAME

std::string_view name(Drop d) { return kDropNames[static_cast<size_t>(d)]; }
std::string_view name(AuthFailure a) { return kAuthNames[static_cast<size_t>(a)]; }
std::string_view name(QuotaKind q) { return kQuotaNames[static_cast<size_t>(q)]; }
std::string_view name(ConnClose c) { return kConnCloseNames[static_cast<size_t>(c)]; }
std::string_view name(MethodIndex m) { return kMethodNames[static_cast<size_t>(m)]; }
std::string_view name(Direction d) { return kDirectionNames[static_cast<size_t>(d)]; }

MethodIndex method_index(uint16_t method) {
    using stun::Method;
    switch (static_cast<Method>(method)) {
        case Method::kBinding: return MethodIndex::kBinding;
        case Method::kAllocate: return MethodIndex::kAllocate;
        case Method::kRefresh: return MethodIndex::kRefresh;
        case Method::kCreatePermission: return MethodIndex::kCreatePermission;
        case Method::kChannelBind: return MethodIndex::kChannelBind;
        case Method::kConnect: return MethodIndex::kConnect;
        case Method::kConnectionBind: return MethodIndex::kConnectionBind;
        default: return MethodIndex::kOther;
    }
}

size_t code_index(uint16_t code) {
    for (size_t i = 0; i < kTrackedCodes.size(); ++i) {
        if (kTrackedCodes[i] == code) {
            return i;
        }
    }
    return code_index(500);
}

}  // namespace turn::cp
