// Static long-term users and TURN REST API shared secrets
// (draft-uberti-behave-turn-rest-00 section 2.2).
#include "auth/credential_store.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <limits>

namespace turn::auth {

namespace {

bool known_algorithm(PasswordAlgorithm alg) {
    return alg == PasswordAlgorithm::kMd5 || alg == PasswordAlgorithm::kSha256;
}

}  // namespace

std::string rest_password(std::string_view secret, std::string_view username) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (secret.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
        HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(username.data()), username.size(), mac,
             &len) == nullptr) {
        return {};
    }
    return base64_encode(std::span<const uint8_t>(mac, len));
}

std::optional<uint64_t> rest_username_expiry(std::string_view username) {
    uint64_t value = 0;
    size_t i = 0;
    for (; i < username.size() && username[i] >= '0' && username[i] <= '9'; ++i) {
        const auto digit = static_cast<uint64_t>(username[i] - '0');
        if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
            return std::nullopt;  // overflow: not a timestamp
        }
        value = value * 10 + digit;
    }
    if (i == 0 || (i < username.size() && username[i] != ':')) {
        return std::nullopt;
    }
    return value;
}

bool CredentialStore::add_user(std::string_view raw_username, std::string_view password) {
    // Store the OpaqueString form (RFC 8489 9.2.2 / 14.3): that is what a
    // conforming client puts in USERNAME and hashes into USERHASH, so key and
    // hash agree for a name configured in another Unicode normal form.
    const auto prepared = opaque_string(raw_username);
    if (!prepared) {
        return false;
    }
    const std::string_view username = *prepared;
    auto md5 = long_term_key(PasswordAlgorithm::kMd5, username, realm_, password);
    auto sha256 = long_term_key(PasswordAlgorithm::kSha256, username, realm_, password);
    if (!md5 || !sha256) {
        return false;
    }
    std::string name(username);
    // A username that fails OpaqueString has no USERHASH (RFC 8489 section
    // 14.4 hashes the OpaqueString form); it can still log in by USERNAME.
    if (auto hash = userhash(username, realm_)) {
        by_hash_[std::string(hash->begin(), hash->end())] = name;
    }
    users_[std::move(name)] = User{*md5, *sha256};
    return true;
}

bool CredentialStore::add_secret(std::string_view secret) {
    if (secret.empty() || secrets_.size() >= kMaxSecrets) {
        return false;
    }
    // Newest first: after a rotation most clients hold the new secret's
    // credentials, so it is the likeliest match.
    secrets_.insert(secrets_.begin(), std::string(secret));
    return true;
}

size_t CredentialStore::keys_for(std::string_view username, PasswordAlgorithm alg, uint64_t now_s,
                                 std::span<Key> out, LookupError& err) const {
    err = LookupError::kOk;
    if (!known_algorithm(alg)) {
        err = LookupError::kBadAlgorithm;
        return 0;
    }
    // Heterogeneous lookup needs C++20's transparent unordered_map hashing,
    // which the map type here does not opt into; one copy per lookup is fine
    // on the control path.
    if (auto it = users_.find(std::string(username)); it != users_.end()) {
        if (out.empty()) {
            return 0;
        }
        out[0] = alg == PasswordAlgorithm::kMd5 ? it->second.md5 : it->second.sha256;
        return 1;
    }
    if (secrets_.empty()) {
        err = LookupError::kUnknownUser;
        return 0;
    }
    const auto expiry = rest_username_expiry(username);
    if (!expiry) {
        err = LookupError::kUnknownUser;
        return 0;
    }
    if (*expiry < now_s) {
        err = LookupError::kExpired;
        return 0;
    }
    size_t n = 0;
    for (const std::string& secret : secrets_) {
        if (n == out.size()) {
            break;
        }
        // The REST password is base64, plain ASCII, so OpaqueString cannot
        // fail for it; only the realm could, and then no key is produced.
        auto key = long_term_key(alg, username, realm_, rest_password(secret, username));
        if (!key) {
            err = LookupError::kBadPassword;
            return 0;
        }
        out[n++] = *key;
    }
    return n;
}

std::optional<std::string> CredentialStore::user_for_hash(std::span<const uint8_t> hash) const {
    if (hash.size() != 32) {
        return std::nullopt;
    }
    auto it = by_hash_.find(std::string(hash.begin(), hash.end()));
    if (it == by_hash_.end()) {
        return std::nullopt;
    }
    return it->second;
}

}  // namespace turn::auth
