#include "core/mobility.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace turn::cp {

namespace {

constexpr size_t kBlock = 16;
constexpr size_t kTag = 8;
constexpr size_t kRaw = kBlock + kTag;

struct CtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

// One AES-256 block, encrypted or decrypted (a single block under a key
// used for nothing else: the random half makes every plaintext distinct).
bool aes_block(const std::array<uint8_t, 32>& key, bool encrypt, const uint8_t* in, uint8_t* out) {
    Ctx ctx(EVP_CIPHER_CTX_new());
    int n = 0;
    int m = 0;
    return ctx && EVP_CipherInit_ex(ctx.get(), EVP_aes_256_ecb(), nullptr, key.data(), nullptr, encrypt ? 1 : 0) == 1 &&
           EVP_CIPHER_CTX_set_padding(ctx.get(), 0) == 1 &&
           EVP_CipherUpdate(ctx.get(), out, &n, in, static_cast<int>(kBlock)) == 1 &&
           EVP_CipherFinal_ex(ctx.get(), out + n, &m) == 1 && n + m == static_cast<int>(kBlock);
}

void tag(const std::array<uint8_t, 32>& key, const uint8_t* ct, uint8_t* out) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), ct, kBlock, mac, &len);
    std::memcpy(out, mac, kTag);
}

}  // namespace

MobilityTickets::MobilityTickets() {
    if (RAND_bytes(enc_key_.data(), static_cast<int>(enc_key_.size())) != 1 ||
        RAND_bytes(mac_key_.data(), static_cast<int>(mac_key_.size())) != 1) {
        std::abort();  // no randomness: nothing secure can be done
    }
}

MobilityTickets::MobilityTickets(std::span<const uint8_t, 64> keys) {
    std::memcpy(enc_key_.data(), keys.data(), 32);
    std::memcpy(mac_key_.data(), keys.data() + 32, 32);
}

std::vector<uint8_t> MobilityTickets::issue(const Ticket& t) const {
    if (t.allocation_id > kMaxAllocationId) {
        return {};
    }
    uint8_t block[kBlock] = {t.loop};
    for (int i = 0; i < 7; ++i) {
        block[1 + i] = static_cast<uint8_t>(t.allocation_id >> (48 - 8 * i));
    }
    for (int i = 0; i < 4; ++i) {
        block[8 + i] = static_cast<uint8_t>(t.moves >> (24 - 8 * i));
    }
    uint8_t raw[kRaw];
    if (RAND_bytes(block + 12, 4) != 1 || !aes_block(enc_key_, true, block, raw)) {
        return {};  // the client gets no ticket: it cannot move, nothing else breaks
    }
    tag(mac_key_, raw, raw + kBlock);
    std::vector<uint8_t> out(kSize + 1);  // EVP_EncodeBlock writes a NUL after the text
    EVP_EncodeBlock(out.data(), raw, kRaw);
    out.resize(kSize);
    return out;
}

std::optional<MobilityTickets::Ticket> MobilityTickets::open(std::span<const uint8_t> ticket) const {
    if (ticket.size() != kSize) {
        return std::nullopt;
    }
    uint8_t raw[kRaw + 2];  // EVP_DecodeBlock writes whole 3-byte groups: 24 here
    if (EVP_DecodeBlock(raw, ticket.data(), static_cast<int>(kSize)) != static_cast<int>(kRaw)) {
        return std::nullopt;
    }
    uint8_t want[kTag];
    tag(mac_key_, raw, want);
    uint8_t block[kBlock];
    if (CRYPTO_memcmp(want, raw + kBlock, kTag) != 0 || !aes_block(enc_key_, false, raw, block)) {
        return std::nullopt;
    }
    Ticket t;
    t.loop = block[0];
    for (int i = 0; i < 7; ++i) {
        t.allocation_id = t.allocation_id << 8 | block[1 + i];
    }
    for (int i = 0; i < 4; ++i) {
        t.moves = t.moves << 8 | block[8 + i];
    }
    return t;
}

}  // namespace turn::cp
