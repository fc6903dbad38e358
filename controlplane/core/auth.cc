#include "core/auth.h"

#include <algorithm>

#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/integrity.h"

namespace turn::cp {

namespace {
AuthOutcome fail(AuthVerdict v, AuthFailure r) {
    AuthOutcome o;
    o.verdict = v;
    o.reason = r;
    return o;
}

// The PASSWORD-ALGORITHMS value we send, for the byte-exact comparison RFC
// 8489 section 9.2.4 asks for.
std::span<const uint8_t> offered_algorithms_value(std::array<uint8_t, 64>& buf) {
    std::array<uint8_t, 128> msg{};
    std::array<uint8_t, stun::kTxIdSize> txid{};
    stun::MessageBuilder b(msg, stun::Method::kBinding, stun::Class::kRequest, txid);
    b.add_password_algorithms(Authenticator::kAlgorithms);
    // Attribute starts after the 20-byte header: 4-byte TLV header then value.
    const uint16_t len = static_cast<uint16_t>((msg[22] << 8) | msg[23]);
    std::copy_n(msg.begin() + 24, len, buf.begin());
    return {buf.data(), len};
}
}  // namespace

std::string Authenticator::nonce_for(const Address& client) const {
    return shared_.nonces->issue(client.normalised().with_port(0), clock_.unix_s(), kNonceFeatures);
}

AuthOutcome Authenticator::check(const stun::MessageView& m, const Address& client) const {
    using namespace stun;
    const RawAttribute* mi = m.message_integrity();
    const RawAttribute* mi256 = m.message_integrity_sha256();
    if (mi == nullptr && mi256 == nullptr) {
        return fail(AuthVerdict::kChallenge, AuthFailure::kNoCredentials);
    }
    const RawAttribute* user_attr = m.find(attr::kUsername);
    const RawAttribute* hash_attr = m.find(attr::kUserhash);
    const RawAttribute* realm_attr = m.find(attr::kRealm);
    const RawAttribute* nonce_attr = m.find(attr::kNonce);
    if ((user_attr == nullptr && hash_attr == nullptr) || realm_attr == nullptr || nonce_attr == nullptr) {
        return fail(AuthVerdict::kBadRequest, AuthFailure::kMissingAttributes);
    }
    std::string_view realm;
    std::string_view nonce;
    if (decode_text(m.value(*realm_attr), kMaxRealm, realm) != AttrError::kOk ||
        decode_text(m.value(*nonce_attr), kMaxNonce, nonce) != AttrError::kOk) {
        return fail(AuthVerdict::kBadRequest, AuthFailure::kMissingAttributes);
    }
    // Nonces are bound to the client IP (not port): a client behind a NAT
    // that rebinds its port keeps a valid nonce.
    uint32_t features = 0;
    const auto status = shared_.nonces->check(nonce, client.normalised().with_port(0), clock_.unix_s(), &features);
    // A nonce this relay cannot verify (issued by another relay the client
    // was redirected from, before a restart without [state], or to the
    // client's previous IP) is "no longer valid" as much as an expired one:
    // 438 (RFC 8489 section 9.2.4), so the client retries with the fresh
    // nonce. A 401 would tell it its credentials were refused, and libwebrtc
    // gives the allocation up on a 401 after it has sent credentials.
    if (status == auth::NonceStatus::kInvalid) {
        return fail(AuthVerdict::kStaleNonce, AuthFailure::kInvalidNonce);
    }
    if (status == auth::NonceStatus::kStale) {
        return fail(AuthVerdict::kStaleNonce, AuthFailure::kStaleNonce);
    }
    if (realm != shared_.config.realm) {
        return fail(AuthVerdict::kChallenge, AuthFailure::kWrongRealm);
    }

    // RFC 8489 section 9.2.4, PASSWORD-ALGORITHMS / PASSWORD-ALGORITHM.
    PasswordAlgorithm alg = PasswordAlgorithm::kMd5;
    if ((features & auth::kFeaturePasswordAlgorithms) != 0) {
        const RawAttribute* algs_attr = m.find(attr::kPasswordAlgorithms);
        const RawAttribute* alg_attr = m.find(attr::kPasswordAlgorithm);
        if ((algs_attr == nullptr) != (alg_attr == nullptr)) {
            return fail(AuthVerdict::kBadRequest, AuthFailure::kBadAlgorithm);
        }
        if (algs_attr != nullptr) {
            std::array<uint8_t, 64> buf{};
            const auto offered = offered_algorithms_value(buf);
            if (!constant_time_equal(m.value(*algs_attr), offered) || m.value(*algs_attr).size() != offered.size()) {
                return fail(AuthVerdict::kBadRequest, AuthFailure::kBadAlgorithm);
            }
            PasswordAlgorithmValue chosen;
            if (decode_password_algorithm(m.value(*alg_attr), chosen) != AttrError::kOk) {
                return fail(AuthVerdict::kBadRequest, AuthFailure::kBadAlgorithm);
            }
            // It must match one of the entries we offered, parameters
            // included: ours have none (a review helper's note).
            bool known = false;
            for (auto a : kAlgorithms) {
                known = known || (static_cast<uint16_t>(a) == chosen.algorithm && chosen.params.empty());
            }
            if (!known) {
                return fail(AuthVerdict::kBadRequest, AuthFailure::kBadAlgorithm);
            }
            alg = static_cast<PasswordAlgorithm>(chosen.algorithm);
        }
    }

    AuthOutcome out;
    if (user_attr != nullptr) {
        std::string_view user;
        if (decode_text(m.value(*user_attr), kMaxUsername, user) != AttrError::kOk) {
            return fail(AuthVerdict::kBadRequest, AuthFailure::kMissingAttributes);
        }
        out.context.username = std::string(user);
    } else {
        std::span<const uint8_t> hash;
        if (decode_userhash(m.value(*hash_attr), hash) != AttrError::kOk) {
            return fail(AuthVerdict::kBadRequest, AuthFailure::kMissingAttributes);
        }
        auto user = credentials_->user_for_hash(hash);
        if (!user) {
            return fail(AuthVerdict::kChallenge, AuthFailure::kUnknownUser);
        }
        out.context.username = *user;
    }

    std::array<auth::Key, auth::CredentialStore::kMaxSecrets + 1> keys{};
    auth::LookupError err = auth::LookupError::kOk;
    const size_t n = credentials_->keys_for(out.context.username, alg, clock_.unix_s(), keys, err);
    if (n == 0) {
        return fail(AuthVerdict::kChallenge,
                    err == auth::LookupError::kExpired ? AuthFailure::kExpiredUser : AuthFailure::kUnknownUser);
    }
    // MESSAGE-INTEGRITY-SHA256 wins when both are present (RFC 8489 9.2.4).
    out.context.sha256 = mi256 != nullptr;
    for (size_t i = 0; i < n; ++i) {
        const bool ok = out.context.sha256 ? verify_message_integrity_sha256(m, keys[i].span())
                                           : verify_message_integrity(m, keys[i].span());
        if (ok) {
            out.verdict = AuthVerdict::kOk;
            out.context.key = keys[i];
            return out;
        }
    }
    return fail(AuthVerdict::kChallenge, AuthFailure::kBadIntegrity);
}

}  // namespace turn::cp
