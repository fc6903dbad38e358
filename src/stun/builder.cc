#include "stun/builder.h"

#include <cstring>

#include <unistr.h>  // libunistring: u8_check

#include "common/bytes.h"
#include "stun/attributes.h"
#include "stun/integrity.h"

namespace turn::stun {

namespace {
bool valid_utf8(std::span<const uint8_t> s) {
    return s.empty() || u8_check(s.data(), s.size()) == nullptr;
}
}  // namespace

MessageBuilder::MessageBuilder(std::span<uint8_t> buf, uint16_t type,
                               std::span<const uint8_t, kTxIdSize> txid)
    : buf_(buf) {
    if (buf_.size() < kHeaderSize) {
        ok_ = false;
        return;
    }
    uint8_t* p = buf_.data();
    store_be16(p, static_cast<uint16_t>(type & 0x3FFF));
    store_be16(p + 2, 0);
    store_be32(p + 4, kMagicCookie);
    std::memcpy(p + 8, txid.data(), kTxIdSize);
    size_ = kHeaderSize;
}

uint8_t* MessageBuilder::begin_attr(uint16_t type, size_t len) {
    if (!ok_) {
        return nullptr;
    }
    const size_t total = 4 + pad4(static_cast<uint32_t>(len));
    // The whole message must fit one datagram (kMaxMessageSize); that also
    // keeps the 16-bit header length field from overflowing.
    if (len > 0xFFFF || total > buf_.size() - size_ || total > kMaxMessageSize - size_) {
        ok_ = false;
        return nullptr;
    }
    uint8_t* a = buf_.data() + size_;
    store_be16(a, type);
    store_be16(a + 2, static_cast<uint16_t>(len));
    // Zero the padding so no stale buffer bytes leave the host.
    std::memset(a + 4 + len, 0, total - 4 - len);
    size_ += total;
    store_be16(buf_.data() + 2, static_cast<uint16_t>(size_ - kHeaderSize));
    return a + 4;
}

MessageBuilder& MessageBuilder::add(uint16_t type, std::span<const uint8_t> value) {
    if (uint8_t* v = begin_attr(type, value.size())) {
        if (!value.empty()) {
            std::memcpy(v, value.data(), value.size());
        }
    }
    return *this;
}

std::span<uint8_t> MessageBuilder::reserve(uint16_t type, size_t len) {
    uint8_t* v = begin_attr(type, len);
    if (v == nullptr) {
        return {};
    }
    // Zeroed so a short fill can never leak earlier buffer contents.
    std::memset(v, 0, len);
    return {v, len};
}

MessageBuilder& MessageBuilder::add_text(uint16_t type, std::string_view text) {
    return add(type, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

MessageBuilder& MessageBuilder::add_u32(uint16_t type, uint32_t v) {
    if (uint8_t* p = begin_attr(type, 4)) {
        store_be32(p, v);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_u64(uint16_t type, uint64_t v) {
    if (uint8_t* p = begin_attr(type, 8)) {
        store_be64(p, v);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_empty(uint16_t type) {
    begin_attr(type, 0);
    return *this;
}

namespace {
void write_address(uint8_t* p, const Address& a) {
    p[0] = 0;
    p[1] = a.is_v4() ? kStunFamilyIPv4 : kStunFamilyIPv6;
    store_be16(p + 2, a.port);
    std::memcpy(p + 4, a.ip.data(), a.ip_len());
}
}  // namespace

MessageBuilder& MessageBuilder::add_address(uint16_t type, const Address& a) {
    if (a.family == Family::kNone) {
        ok_ = false;
        return *this;
    }
    if (uint8_t* p = begin_attr(type, 4 + a.ip_len())) {
        write_address(p, a);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_xor_address(uint16_t type, const Address& a) {
    if (a.family == Family::kNone) {
        ok_ = false;
        return *this;
    }
    uint8_t* p = begin_attr(type, 4 + a.ip_len());
    if (p == nullptr) {
        return *this;
    }
    write_address(p, a);
    uint8_t mask[16];
    store_be32(mask, kMagicCookie);
    std::memcpy(mask + 4, buf_.data() + 8, kTxIdSize);
    store_be16(p + 2, static_cast<uint16_t>(a.port ^ (kMagicCookie >> 16)));
    for (size_t i = 0; i < a.ip_len(); ++i) {
        p[4 + i] = static_cast<uint8_t>(p[4 + i] ^ mask[i]);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_error_code(uint16_t code, std::string_view reason) {
    // RFC 8489 14.8: fewer than 128 characters, at most 509 bytes, UTF-8.
    if (code < 300 || code > 699 || reason.size() > kMaxSendText ||
        !valid_utf8({reinterpret_cast<const uint8_t*>(reason.data()), reason.size()})) {
        ok_ = false;
        return *this;
    }
    if (uint8_t* p = begin_attr(attr::kErrorCode, 4 + reason.size())) {
        p[0] = 0;
        p[1] = 0;
        p[2] = static_cast<uint8_t>(code / 100);
        p[3] = static_cast<uint8_t>(code % 100);
        std::memcpy(p + 4, reason.data(), reason.size());
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_error_code(uint16_t code) {
    return add_error_code(code, error_reason(code));
}

MessageBuilder& MessageBuilder::add_unknown_attributes(std::span<const uint16_t> types) {
    if (uint8_t* p = begin_attr(attr::kUnknownAttributes, types.size() * 2)) {
        for (size_t i = 0; i < types.size(); ++i) {
            store_be16(p + 2 * i, types[i]);
        }
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_channel_number(uint16_t channel) {
    if (uint8_t* p = begin_attr(attr::kChannelNumber, 4)) {
        store_be16(p, channel);
        store_be16(p + 2, 0);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_requested_transport(uint8_t protocol) {
    if (uint8_t* p = begin_attr(attr::kRequestedTransport, 4)) {
        p[0] = protocol;
        p[1] = p[2] = p[3] = 0;
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_address_family(uint16_t type, Family f) {
    if (f == Family::kNone) {
        ok_ = false;
        return *this;
    }
    if (uint8_t* p = begin_attr(type, 4)) {
        p[0] = f == Family::kIPv4 ? kStunFamilyIPv4 : kStunFamilyIPv6;
        p[1] = p[2] = p[3] = 0;
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_even_port(bool reserve_next) {
    if (uint8_t* p = begin_attr(attr::kEvenPort, 1)) {
        p[0] = reserve_next ? 0x80 : 0x00;
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_change_request(bool change_ip, bool change_port) {
    if (uint8_t* p = begin_attr(attr::kChangeRequest, 4)) {
        p[0] = p[1] = p[2] = 0;
        p[3] = static_cast<uint8_t>((change_ip ? 0x04 : 0) | (change_port ? 0x02 : 0));
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_response_port(uint16_t port) {
    if (uint8_t* p = begin_attr(attr::kResponsePort, 4)) {
        store_be16(p, port);
        store_be16(p + 2, 0);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_password_algorithm(PasswordAlgorithm alg) {
    if (uint8_t* p = begin_attr(attr::kPasswordAlgorithm, 4)) {
        store_be16(p, static_cast<uint16_t>(alg));
        store_be16(p + 2, 0);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_password_algorithms(std::span<const PasswordAlgorithm> algs) {
    if (uint8_t* p = begin_attr(attr::kPasswordAlgorithms, algs.size() * 4)) {
        for (size_t i = 0; i < algs.size(); ++i) {
            store_be16(p + 4 * i, static_cast<uint16_t>(algs[i]));
            store_be16(p + 4 * i + 2, 0);  // MD5 and SHA-256 take no parameters
        }
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_address_error_code(Family f, uint16_t code,
                                                       std::string_view reason) {
    if (code < 300 || code > 699 || f == Family::kNone || reason.size() > kMaxSendText ||
        !valid_utf8({reinterpret_cast<const uint8_t*>(reason.data()), reason.size()})) {
        ok_ = false;
        return *this;
    }
    if (uint8_t* p = begin_attr(attr::kAddressErrorCode, 4 + reason.size())) {
        p[0] = f == Family::kIPv4 ? kStunFamilyIPv4 : kStunFamilyIPv6;
        p[1] = 0;
        p[2] = static_cast<uint8_t>(code / 100);
        p[3] = static_cast<uint8_t>(code % 100);
        std::memcpy(p + 4, reason.data(), reason.size());
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_icmp(uint8_t type, uint8_t code, uint32_t error_data) {
    if (uint8_t* p = begin_attr(attr::kIcmp, 8)) {
        p[0] = p[1] = 0;
        p[2] = type;
        p[3] = code;
        store_be32(p + 4, error_data);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_padding(size_t len) {
    if (uint8_t* p = begin_attr(attr::kPadding, len)) {
        std::memset(p, 0, len);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_message_integrity(std::span<const uint8_t> key) {
    const size_t before = size_;
    if (uint8_t* p = begin_attr(attr::kMessageIntegrity, kSha1Size)) {
        // The header length already counts this attribute (RFC 8489 14.5).
        hmac_sha1_stun(key, {buf_.data(), before}, before,
                       static_cast<uint16_t>(size_ - kHeaderSize), p);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_message_integrity_sha256(std::span<const uint8_t> key) {
    const size_t before = size_;
    if (uint8_t* p = begin_attr(attr::kMessageIntegritySha256, kSha256Size)) {
        hmac_sha256_stun(key, {buf_.data(), before}, before,
                         static_cast<uint16_t>(size_ - kHeaderSize), p);
    }
    return *this;
}

MessageBuilder& MessageBuilder::add_fingerprint() {
    const size_t before = size_;
    if (uint8_t* p = begin_attr(attr::kFingerprint, 4)) {
        store_be32(p, fingerprint_value({buf_.data(), before}));
    }
    return *this;
}

}  // namespace turn::stun
