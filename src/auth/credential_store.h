// Where passwords come from: static users from configuration, and TURN REST
// API ephemeral credentials (draft-uberti-behave-turn-rest) derived from one or
// more shared secrets, several accepted at once so secrets can be rotated.
//
// REST username: "<expiry unix time>:<user>" (or just "<expiry>"); password:
// base64(HMAC-SHA1(secret, username)). A username whose expiry is in the past
// is rejected.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "auth/credentials.h"

namespace turn::auth {

// base64(HMAC-SHA1(secret, username)).
std::string rest_password(std::string_view secret, std::string_view username);

// Parses the expiry of a REST username; nullopt if it does not start with a
// decimal timestamp followed by ':' or the end.
std::optional<uint64_t> rest_username_expiry(std::string_view username);

enum class LookupError : uint8_t {
    kOk = 0,
    kUnknownUser,     // not a static user and not a REST username
    kExpired,         // REST username past its expiry
    kBadPassword,     // configured password fails OpaqueString (configuration error)
    kBadAlgorithm,    // `alg` is not a PasswordAlgorithm value this library knows
};

class CredentialStore {
public:
    static constexpr size_t kMaxSecrets = 8;

    explicit CredentialStore(std::string realm) : realm_(std::move(realm)) {}

    const std::string& realm() const { return realm_; }

    // Static user, stored under the OpaqueString form of its name. Returns
    // false if the name or the password fails OpaqueString.
    bool add_user(std::string_view username, std::string_view password);
    // REST shared secret; up to kMaxSecrets, newest first is tried first.
    bool add_secret(std::string_view secret);
    size_t user_count() const { return users_.size(); }
    size_t secret_count() const { return secrets_.size(); }

    // Candidate keys for `username` under `alg` at time `now_s`: one for a
    // static user, one per secret (newest first) for a REST username. Writes
    // at most out.size() (kMaxSecrets always suffices) and returns the number
    // written (0 with `err` set on failure; `err` is kOk otherwise).
    size_t keys_for(std::string_view username, PasswordAlgorithm alg, uint64_t now_s,
                    std::span<Key> out, LookupError& err) const;

    // USERHASH -> username, for static users only (a REST username cannot be
    // recovered from its hash).
    std::optional<std::string> user_for_hash(std::span<const uint8_t> hash) const;

private:
    struct User {
        Key md5;
        Key sha256;
    };
    std::string realm_;
    std::unordered_map<std::string, User> users_;
    std::unordered_map<std::string, std::string> by_hash_;  // 32-byte hash -> username
    std::vector<std::string> secrets_;
};

}  // namespace turn::auth
