// Static users and TURN REST API credentials.
#include "auth/credential_store.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

namespace turn::auth {
namespace {

constexpr std::string_view kRealm = "relay.example";
constexpr uint64_t kNow = 1'690'000'000;

// REST passwords computed on the shell, e.g.
//   printf '1700000000:alice' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
constexpr std::string_view kRestUser = "1700000000:alice";
constexpr std::string_view kNorthPassword = "g+jb180fcj+xlpA/2mP60OdIgU0=";
constexpr std::string_view kSouthPassword = "vrczJ4LAk4Vli1P7hiL4bQgl7AE=";
constexpr std::string_view kBareRestUser = "1700000000";
constexpr std::string_view kBareNorthPassword = "KSVUc7JbPzLiz2XwcNjXxFmbP04=";

Key key_of(PasswordAlgorithm alg, std::string_view user, std::string_view password) {
    const auto k = long_term_key(alg, user, kRealm, password);
    EXPECT_TRUE(k.has_value());
    return k.value_or(Key{});
}

TEST(RestPassword, MatchesOpensslCommandLine) {
    EXPECT_EQ(rest_password("north-secret", kRestUser), kNorthPassword);
    EXPECT_EQ(rest_password("south-secret", kRestUser), kSouthPassword);
    EXPECT_EQ(rest_password("north-secret", kBareRestUser), kBareNorthPassword);
}

TEST(RestUsernameExpiry, Parses) {
    EXPECT_EQ(rest_username_expiry("1700000000:alice"), 1700000000u);
    EXPECT_EQ(rest_username_expiry("1700000000"), 1700000000u);
    EXPECT_EQ(rest_username_expiry("0:x"), 0u);
    EXPECT_EQ(rest_username_expiry("1700000000:"), 1700000000u);
    EXPECT_EQ(rest_username_expiry("18446744073709551615"), UINT64_MAX);
    EXPECT_FALSE(rest_username_expiry("alice").has_value());
    EXPECT_FALSE(rest_username_expiry("alice:1700000000").has_value());
    EXPECT_FALSE(rest_username_expiry("").has_value());
    EXPECT_FALSE(rest_username_expiry(":alice").has_value());
    EXPECT_FALSE(rest_username_expiry("17x:alice").has_value());
    EXPECT_FALSE(rest_username_expiry("-1:alice").has_value());
    EXPECT_FALSE(rest_username_expiry("18446744073709551616").has_value());  // overflow
}

TEST(CredentialStore, StaticUserGetsPrecomputedKeys) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_user("alice", "wonderland"));
    EXPECT_EQ(store.user_count(), 1u);

    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kUnknownUser;
    ASSERT_EQ(store.keys_for("alice", PasswordAlgorithm::kMd5, kNow, keys, err), 1u);
    EXPECT_EQ(err, LookupError::kOk);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kMd5, "alice", "wonderland"));
    EXPECT_EQ(keys[0].len, 16);

    ASSERT_EQ(store.keys_for("alice", PasswordAlgorithm::kSha256, kNow, keys, err), 1u);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kSha256, "alice", "wonderland"));
    EXPECT_EQ(keys[0].len, 32);
}

TEST(CredentialStore, BadStaticPasswordIsRejected) {
    CredentialStore store(std::string{kRealm});
    EXPECT_FALSE(store.add_user("bob", ""));
    EXPECT_FALSE(store.add_user("bob", "ctrl\x01"));
    EXPECT_EQ(store.user_count(), 0u);
}

TEST(CredentialStore, UserhashFindsStaticUser) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_user("alice", "wonderland"));
    const auto hash = userhash("alice", kRealm);
    ASSERT_TRUE(hash.has_value());
    EXPECT_EQ(store.user_for_hash(*hash), "alice");

    auto other = *hash;
    other[0] ^= 1;
    EXPECT_FALSE(store.user_for_hash(other).has_value());
    EXPECT_FALSE(store.user_for_hash(std::span<const uint8_t>(hash->data(), 31)).has_value());
}

TEST(CredentialStore, RestUserGetsOneKeyPerSecret) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_secret("north-secret"));
    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kUnknownUser;
    ASSERT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, kNow, keys, err), 1u);
    EXPECT_EQ(err, LookupError::kOk);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kMd5, kRestUser, kNorthPassword));

    ASSERT_EQ(store.keys_for(kBareRestUser, PasswordAlgorithm::kSha256, kNow, keys, err), 1u);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kSha256, kBareRestUser, kBareNorthPassword));
}

TEST(CredentialStore, RotationAcceptsBothSecretsNewestFirst) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_secret("north-secret"));
    ASSERT_TRUE(store.add_secret("south-secret"));  // the newer one
    EXPECT_EQ(store.secret_count(), 2u);

    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kUnknownUser;
    ASSERT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, kNow, keys, err), 2u);
    EXPECT_EQ(err, LookupError::kOk);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kMd5, kRestUser, kSouthPassword));
    EXPECT_EQ(keys[1], key_of(PasswordAlgorithm::kMd5, kRestUser, kNorthPassword));

    // A smaller output span gets the newest secret's key only.
    std::array<Key, 1> one{};
    ASSERT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, kNow, one, err), 1u);
    EXPECT_EQ(one[0], keys[0]);
}

TEST(CredentialStore, SecretLimit) {
    CredentialStore store(std::string{kRealm});
    for (size_t i = 0; i < CredentialStore::kMaxSecrets; ++i) {
        EXPECT_TRUE(store.add_secret("secret-" + std::to_string(i)));
    }
    EXPECT_FALSE(store.add_secret("one too many"));
    EXPECT_FALSE(CredentialStore(std::string{kRealm}).add_secret(""));
    EXPECT_EQ(store.secret_count(), CredentialStore::kMaxSecrets);
}

TEST(CredentialStore, ExpiredRestUserIsRejected) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_secret("north-secret"));
    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kOk;
    EXPECT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, 1'700'000'001, keys, err), 0u);
    EXPECT_EQ(err, LookupError::kExpired);
    // Still valid at the expiry second itself.
    EXPECT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, 1'700'000'000, keys, err), 1u);
    EXPECT_EQ(err, LookupError::kOk);
}

TEST(CredentialStore, UnknownUsers) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_user("alice", "wonderland"));
    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kOk;

    // No secrets: a REST-looking name is just an unknown user.
    EXPECT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, kNow, keys, err), 0u);
    EXPECT_EQ(err, LookupError::kUnknownUser);
    EXPECT_EQ(store.keys_for("mallory", PasswordAlgorithm::kMd5, kNow, keys, err), 0u);
    EXPECT_EQ(err, LookupError::kUnknownUser);

    // With secrets: a name without a timestamp is still unknown.
    ASSERT_TRUE(store.add_secret("north-secret"));
    err = LookupError::kOk;
    EXPECT_EQ(store.keys_for("mallory", PasswordAlgorithm::kMd5, kNow, keys, err), 0u);
    EXPECT_EQ(err, LookupError::kUnknownUser);
}

TEST(CredentialStore, StaticUserWinsOverRest) {
    // A configured user whose name looks like a REST username keeps its own
    // password, even past the "expiry", and gets no REST candidates.
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_secret("north-secret"));
    ASSERT_TRUE(store.add_user(kRestUser, "static-password"));
    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kUnknownUser;
    ASSERT_EQ(store.keys_for(kRestUser, PasswordAlgorithm::kMd5, 1'800'000'000, keys, err), 1u);
    EXPECT_EQ(err, LookupError::kOk);
    EXPECT_EQ(keys[0], key_of(PasswordAlgorithm::kMd5, kRestUser, "static-password"));
}

TEST(CredentialStore, UnknownAlgorithm) {
    CredentialStore store(std::string{kRealm});
    ASSERT_TRUE(store.add_user("alice", "wonderland"));
    std::array<Key, CredentialStore::kMaxSecrets> keys{};
    LookupError err = LookupError::kOk;
    EXPECT_EQ(store.keys_for("alice", static_cast<PasswordAlgorithm>(7), kNow, keys, err), 0u);
    EXPECT_EQ(err, LookupError::kBadAlgorithm);
}

}  // namespace
}  // namespace turn::auth
