// bench/load/credentials.h: TURN REST credentials (draft-uberti-behave-turn-rest
// section 2.2). Expected passwords computed independently:
//   python3 -c "import hmac,hashlib,base64; print(base64.b64encode(
//       hmac.new(b'north-secret', b'1700000000:alice', hashlib.sha1).digest()).decode())"
#include "credentials.h"

#include <gtest/gtest.h>

#include "auth/credential_store.h"

namespace turn::load {
namespace {

TEST(LoadRestCredentials, UsernameIsExpiryColonName) {
    EXPECT_EQ(rest_username(1'699'990'000, 10'000, "alice"), "1700000000:alice");
    EXPECT_EQ(rest_username(1'699'990'000, 10'000, ""), "1700000000");
}

TEST(LoadRestCredentials, PasswordIsBase64HmacSha1OfUsername) {
    const Credentials c = rest_credentials("north-secret", "alice", 1'699'990'000, 10'000);
    EXPECT_EQ(c.username, "1700000000:alice");
    EXPECT_EQ(c.password, "g+jb180fcj+xlpA/2mP60OdIgU0=");
    EXPECT_EQ(rest_credentials("north-secret", "", 1'699'990'000, 10'000).password, "KSVUc7JbPzLiz2XwcNjXxFmbP04=");
}

TEST(LoadRestCredentials, AcceptedByTheServerSideStore) {
    // The relay's own credential store derives the same key from the secret.
    const Credentials c = rest_credentials("north-secret", "alice", 1'699'990'000, 10'000);
    auth::CredentialStore store("turnrelay.local");
    ASSERT_TRUE(store.add_secret("north-secret"));
    std::array<auth::Key, auth::CredentialStore::kMaxSecrets> keys{};
    auth::LookupError err = auth::LookupError::kOk;
    const size_t n = store.keys_for(c.username, stun::PasswordAlgorithm::kMd5, 1'699'990'001, keys, err);
    ASSERT_EQ(n, 1u);
    const auto expect = auth::long_term_key(stun::PasswordAlgorithm::kMd5, c.username, "turnrelay.local", c.password);
    ASSERT_TRUE(expect.has_value());
    EXPECT_EQ(keys[0], *expect);
    // Past its expiry the store refuses it.
    EXPECT_EQ(store.keys_for(c.username, stun::PasswordAlgorithm::kMd5, 1'700'000'001, keys, err), 0u);
}

}  // namespace
}  // namespace turn::load
