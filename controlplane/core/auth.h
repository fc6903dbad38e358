// Long-term credential authentication of a request (RFC 8489 sections 9.2.4
// and 9.2.5, RFC 8656 section 5): stateless nonces, MESSAGE-INTEGRITY and
// MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHMS negotiation, USERHASH, static
// users and TURN REST shared secrets. Pure logic: the caller turns the
// verdict into a 400/401/438 answer (see Server::challenge).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "auth/credentials.h"
#include "core/clock.h"
#include "core/shared.h"
#include "core/stats.h"
#include "stun/message.h"

namespace turn::cp {

// What a request authenticated with; responses are signed the same way.
struct AuthContext {
    std::string username;
    auth::Key key;
    bool sha256 = false;  // the request used MESSAGE-INTEGRITY-SHA256
};

enum class AuthVerdict : uint8_t {
    kOk,
    kBadRequest,  // 400: integrity present but USERNAME/REALM/NONCE missing, or algorithm mismatch
    kChallenge,   // 401 with REALM, NONCE, PASSWORD-ALGORITHMS
    kStaleNonce,  // 438 with a fresh NONCE
};

struct AuthOutcome {
    AuthVerdict verdict = AuthVerdict::kChallenge;
    AuthFailure reason = AuthFailure::kNoCredentials;
    AuthContext context;
};

class Authenticator {
public:
    // Offered in PASSWORD-ALGORITHMS, in order of preference.
    static constexpr std::array<stun::PasswordAlgorithm, 2> kAlgorithms = {stun::PasswordAlgorithm::kSha256,
                                                                          stun::PasswordAlgorithm::kMd5};
    static constexpr uint32_t kNonceFeatures = auth::kFeaturePasswordAlgorithms | auth::kFeatureUsernameAnonymity;

    Authenticator(const Shared& shared, const Clock& clock)
        : shared_(shared), clock_(clock), credentials_(shared.credentials) {}

    AuthOutcome check(const stun::MessageView& m, const Address& client) const;
    std::string nonce_for(const Address& client) const;
    const std::string& realm() const { return shared_.config.realm; }

private:
    const Shared& shared_;
    const Clock& clock_;
    mutable ReloadableView<auth::CredentialStore> credentials_;  // this loop's view ([auth] reloads)
};

}  // namespace turn::cp
