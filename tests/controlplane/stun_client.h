// Builds TURN requests the way a client does (turn::stun::MessageBuilder) and
// reads answers; shared by the unit tests and the conformance test.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "auth/credentials.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/message.h"

namespace turn::cp::test {

using Attrs = std::function<void(stun::MessageBuilder&)>;

struct Credentials {
    std::string user;
    std::string password;
    std::string realm;
    std::string nonce;
    stun::PasswordAlgorithm alg = stun::PasswordAlgorithm::kMd5;
    bool sha256_mi = false;
    bool userhash = false;
    bool send_algorithms = false;  // PASSWORD-ALGORITHMS + PASSWORD-ALGORITHM
};

inline std::array<uint8_t, stun::kTxIdSize> random_txid() {
    static std::mt19937_64 rng{std::random_device{}()};
    std::array<uint8_t, stun::kTxIdSize> t{};
    for (auto& b : t) {
        b = static_cast<uint8_t>(rng());
    }
    return t;
}

// Builds a request; `creds` adds USERNAME/USERHASH, REALM, NONCE and integrity.
inline std::vector<uint8_t> build(stun::Method m, stun::Class c, const Attrs& attrs, const Credentials* creds,
                                  std::array<uint8_t, stun::kTxIdSize> txid = random_txid(),
                                  bool fingerprint = false) {
    std::vector<uint8_t> buf(4096);
    stun::MessageBuilder b(buf, m, c, txid);
    if (attrs) {
        attrs(b);
    }
    if (creds != nullptr) {
        if (creds->userhash) {
            auto h = auth::userhash(creds->user, creds->realm);
            b.add(stun::attr::kUserhash, *h);
        } else {
            b.add_text(stun::attr::kUsername, creds->user);
        }
        b.add_text(stun::attr::kRealm, creds->realm);
        b.add_text(stun::attr::kNonce, creds->nonce);
        if (creds->send_algorithms) {
            const std::array<stun::PasswordAlgorithm, 2> algs = {stun::PasswordAlgorithm::kSha256,
                                                                 stun::PasswordAlgorithm::kMd5};
            b.add_password_algorithms(algs);
            b.add_password_algorithm(creds->alg);
        }
        auto key = auth::long_term_key(creds->alg, creds->user, creds->realm, creds->password);
        if (creds->sha256_mi) {
            b.add_message_integrity_sha256(key->span());
        } else {
            b.add_message_integrity(key->span());
        }
    }
    if (fingerprint) {
        b.add_fingerprint();
    }
    buf.resize(b.size());
    return buf;
}

// A parsed copy of an answer.
struct Answer {
    std::vector<uint8_t> bytes;
    stun::MessageView view;
    bool ok = false;

    explicit Answer(std::vector<uint8_t> b) : bytes(std::move(b)) {
        ok = stun::parse(bytes, view) == stun::ParseError::kOk;
    }
    Answer(const Answer& o) : Answer(o.bytes) {}
    Answer& operator=(const Answer& o) {
        bytes = o.bytes;
        ok = stun::parse(bytes, view) == stun::ParseError::kOk;
        return *this;
    }

    bool success() const { return ok && view.cls() == stun::Class::kSuccess; }
    uint16_t code() const {
        if (!ok) {
            return 0;
        }
        if (view.cls() == stun::Class::kSuccess) {
            return 200;
        }
        const auto* a = view.find(stun::attr::kErrorCode);
        stun::ErrorCodeValue e;
        if (a == nullptr || stun::decode_error_code(view.value(*a), e) != stun::AttrError::kOk) {
            return 0;
        }
        return e.code;
    }
    std::string reason() const {
        const auto* a = view.find(stun::attr::kErrorCode);
        stun::ErrorCodeValue e;
        if (a == nullptr || stun::decode_error_code(view.value(*a), e) != stun::AttrError::kOk) {
            return {};
        }
        return std::string(e.reason);
    }
    bool has(uint16_t type) const { return ok && view.find(type) != nullptr; }
    std::string text(uint16_t type) const {
        const auto* a = view.find(type);
        return a == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(view.value(*a).data()), a->length);
    }
    std::optional<uint32_t> u32(uint16_t type) const {
        const auto* a = view.find(type);
        uint32_t v = 0;
        if (a == nullptr || stun::decode_u32(view.value(*a), v) != stun::AttrError::kOk) {
            return std::nullopt;
        }
        return v;
    }
    std::vector<Address> xor_addresses(uint16_t type) const {
        std::vector<Address> out;
        for (const auto& a : view.attributes()) {
            Address addr;
            if (a.type == type && stun::decode_xor_address(view.value(a), view.transaction_id(), addr) ==
                                      stun::AttrError::kOk) {
                out.push_back(addr);
            }
        }
        return out;
    }
    std::optional<Address> xor_address(uint16_t type) const {
        auto v = xor_addresses(type);
        if (v.empty()) {
            return std::nullopt;
        }
        return v.front();
    }
};

}  // namespace turn::cp::test
