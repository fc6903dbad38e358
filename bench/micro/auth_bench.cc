// Authentication costs paid per request: deriving a long-term key (for a
// REST user whose key is not cached) and issuing / checking a nonce.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "auth/credentials.h"
#include "auth/nonce.h"
#include "fixtures.h"

namespace turn::bench {
namespace {

void BM_LongTermKeyDerivation(benchmark::State& state, auth::PasswordAlgorithm alg) {
    if (!auth::long_term_key(alg, kUser, kRealm, kPassword)) {
        state.SkipWithError("long_term_key failed");
        return;
    }
    for (auto _ : state) {
        std::optional<auth::Key> k = auth::long_term_key(alg, kUser, kRealm, kPassword);
        benchmark::DoNotOptimize(k);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_LongTermKeyDerivation, md5, auth::PasswordAlgorithm::kMd5);
BENCHMARK_CAPTURE(BM_LongTermKeyDerivation, sha256, auth::PasswordAlgorithm::kSha256);

// One issue (the 401 answer) plus one check (the authenticated retry).
void BM_NonceIssueCheck(benchmark::State& state) {
    std::array<uint8_t, 32> secret{};
    for (size_t i = 0; i < secret.size(); ++i) {
        secret[i] = static_cast<uint8_t>(0xA5 ^ (i * 13));
    }
    const auth::NonceCodec codec(secret, 3600);
    const Address client = client_address();
    const uint64_t now = 1'800'000'000;
    const uint32_t features = auth::kFeaturePasswordAlgorithms | auth::kFeatureUsernameAnonymity;
    if (codec.check(codec.issue(client, now, features), client, now + 1) !=
        auth::NonceStatus::kValid) {
        state.SkipWithError("issued nonce does not check");
        return;
    }
    for (auto _ : state) {
        const std::string nonce = codec.issue(client, now, features);
        const auth::NonceStatus s = codec.check(nonce, client, now + 1);
        benchmark::DoNotOptimize(s);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NonceIssueCheck);

}  // namespace
}  // namespace turn::bench
