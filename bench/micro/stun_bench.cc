// STUN hot paths: parsing and authenticating requests, building Data
// indications.
#include <benchmark/benchmark.h>

#include <cstring>
#include <optional>
#include <vector>

#include "auth/credentials.h"
#include "fixtures.h"
#include "stun/builder.h"
#include "stun/integrity.h"
#include "stun/message.h"

namespace turn::bench {

using namespace turn::stun;

Packet binding_request() {
    Packet p;
    MessageBuilder b(p.buf, Method::kBinding, Class::kRequest, kTxId);
    b.add_text(attr::kSoftware, "turnrelay bench client 0.1").add_fingerprint();
    p.size = b.ok() ? b.size() : 0;
    return p;
}

Packet channel_bind_request(const auth::Key& key, bool sha256) {
    Packet p;
    MessageBuilder b(p.buf, Method::kChannelBind, Class::kRequest, kTxId);
    b.add_text(attr::kUsername, kUser)
        .add_text(attr::kRealm, kRealm)
        .add_text(attr::kNonce, kNonce)
        .add_channel_number(0x4001)
        .add_xor_address(attr::kXorPeerAddress, peer_address());
    if (sha256) {
        b.add_message_integrity_sha256(key.span());
    } else {
        b.add_message_integrity(key.span());
    }
    b.add_fingerprint();
    p.size = b.ok() ? b.size() : 0;
    return p;
}

namespace {

void BM_ParseBindingRequest(benchmark::State& state) {
    const Packet p = binding_request();
    MessageView probe;
    if (p.size == 0 || parse(p.bytes(), probe) != ParseError::kOk) {
        state.SkipWithError("fixture does not parse");
        return;
    }
    for (auto _ : state) {
        MessageView m;
        const ParseError e = parse(p.bytes(), m);
        benchmark::DoNotOptimize(e);
        benchmark::DoNotOptimize(m);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseBindingRequest);

// What the control plane does for every authenticated request before it
// looks at the method: parse, check MESSAGE-INTEGRITY(-SHA256) with the
// user's long-term key (looked up beforehand, so not timed), check
// FINGERPRINT.
void parse_verify_channel_bind(benchmark::State& state, PasswordAlgorithm alg) {
    const std::optional<auth::Key> key = auth::long_term_key(alg, kUser, kRealm, kPassword);
    if (!key) {
        state.SkipWithError("long_term_key failed");
        return;
    }
    const bool sha256 = alg == PasswordAlgorithm::kSha256;
    const Packet p = channel_bind_request(*key, sha256);
    const auto verify = [&](std::span<const uint8_t> bytes) {
        MessageView m;
        return parse(bytes, m) == ParseError::kOk &&
               (sha256 ? verify_message_integrity_sha256(m, key->span())
                       : verify_message_integrity(m, key->span())) &&
               verify_fingerprint(m);
    };
    if (p.size == 0 || !verify(p.bytes())) {
        state.SkipWithError("fixture does not verify");
        return;
    }
    for (auto _ : state) {
        const bool ok = verify(p.bytes());
        benchmark::DoNotOptimize(ok);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["msg_bytes"] = static_cast<double>(p.size);
}

void BM_ParseVerifyChannelBind(benchmark::State& state) {
    parse_verify_channel_bind(state, PasswordAlgorithm::kMd5);
}
BENCHMARK(BM_ParseVerifyChannelBind);

void BM_ParseVerifyChannelBindSha256(benchmark::State& state) {
    parse_verify_channel_bind(state, PasswordAlgorithm::kSha256);
}
BENCHMARK(BM_ParseVerifyChannelBindSha256);

// Slow-path relaying of a peer packet to a client without a channel:
// XOR-PEER-ADDRESS + DATA, the payload copied into the reserved attribute.
void BM_BuildDataIndication(benchmark::State& state) {
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<uint8_t> payload(n);
    for (size_t i = 0; i < n; ++i) {
        payload[i] = static_cast<uint8_t>(i * 31u);
    }
    const Address peer = peer_address();
    std::array<uint8_t, 1500> out{};
    {
        MessageBuilder b(out, Method::kData, Class::kIndication, kTxId);
        b.add_xor_address(attr::kXorPeerAddress, peer);
        MessageView m;
        if (b.reserve(attr::kData, n).size() != n || !b.ok() ||
            parse(b.bytes(), m) != ParseError::kOk) {
            state.SkipWithError("Data indication does not build");
            return;
        }
    }
    for (auto _ : state) {
        MessageBuilder b(out, Method::kData, Class::kIndication, kTxId);
        b.add_xor_address(attr::kXorPeerAddress, peer);
        const std::span<uint8_t> data = b.reserve(attr::kData, n);
        std::memcpy(data.data(), payload.data(), n);
        benchmark::DoNotOptimize(b.size());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}
BENCHMARK(BM_BuildDataIndication)->Arg(160)->Arg(1200);

}  // namespace
}  // namespace turn::bench
