#include "stun/attributes.h"

#include <unistr.h>  // libunistring: u8_check

#include <algorithm>
#include <cstring>

#include "common/bytes.h"

namespace turn::stun {

std::string_view to_string(AttrError e) {
    switch (e) {
    case AttrError::kOk: return "ok";
    case AttrError::kBadLength: return "bad attribute length";
    case AttrError::kBadFamily: return "bad address family";
    case AttrError::kBadValue: return "bad attribute value";
    case AttrError::kTooLong: return "attribute too long";
    case AttrError::kBadUtf8: return "attribute is not UTF-8";
    }
    return "unknown";
}

namespace {

bool valid_utf8(std::span<const uint8_t> s) {
    return s.empty() || u8_check(s.data(), s.size()) == nullptr;
}

AttrError decode_address_common(std::span<const uint8_t> v, Address& out) {
    if (v.size() < 4) {
        return AttrError::kBadLength;
    }
    const uint8_t fam = v[1];
    const uint16_t port = load_be16(v.data() + 2);
    if (fam == kStunFamilyIPv4) {
        if (v.size() != 8) {
            return AttrError::kBadLength;
        }
        out = Address::v4(v.data() + 4, port);
        return AttrError::kOk;
    }
    if (fam == kStunFamilyIPv6) {
        if (v.size() != 20) {
            return AttrError::kBadLength;
        }
        out = Address::v6(v.data() + 4, port);
        return AttrError::kOk;
    }
    return AttrError::kBadFamily;
}

}  // namespace

AttrError decode_address(std::span<const uint8_t> value, Address& out) {
    return decode_address_common(value, out);
}

AttrError decode_xor_address(std::span<const uint8_t> value,
                             std::span<const uint8_t, kTxIdSize> txid, Address& out) {
    Address a;
    const AttrError e = decode_address_common(value, a);
    if (e != AttrError::kOk) {
        return e;
    }
    // RFC 8489 14.2: port xor the cookie's top 16 bits; address xor the
    // cookie (IPv4) or the cookie followed by the transaction ID (IPv6).
    uint8_t mask[16];
    store_be32(mask, kMagicCookie);
    std::memcpy(mask + 4, txid.data(), kTxIdSize);
    a.port = static_cast<uint16_t>(a.port ^ (kMagicCookie >> 16));
    for (size_t i = 0; i < a.ip_len(); ++i) {
        a.ip[i] = static_cast<uint8_t>(a.ip[i] ^ mask[i]);
    }
    out = a;
    return AttrError::kOk;
}

AttrError decode_text(std::span<const uint8_t> value, size_t max_len, std::string_view& out) {
    if (value.size() > max_len) {
        return AttrError::kTooLong;
    }
    if (!valid_utf8(value)) {
        return AttrError::kBadUtf8;
    }
    out = std::string_view(reinterpret_cast<const char*>(value.data()), value.size());
    return AttrError::kOk;
}

AttrError decode_error_code(std::span<const uint8_t> value, ErrorCodeValue& out) {
    if (value.size() < 4) {
        return AttrError::kBadLength;
    }
    const unsigned cls = value[2] & 0x07u;
    const unsigned number = value[3];
    // RFC 8489 14.8: class 3..6, number 0..99.
    if (cls < 3 || cls > 6 || number > 99) {
        return AttrError::kBadValue;
    }
    std::string_view reason;
    const AttrError e = decode_text(value.subspan(4), kMaxReason, reason);
    if (e != AttrError::kOk) {
        return e;
    }
    out.code = static_cast<uint16_t>(cls * 100 + number);
    out.reason = reason;
    return AttrError::kOk;
}

AttrError decode_unknown_attributes(std::span<const uint8_t> value, std::span<uint16_t> out,
                                    size_t& count) {
    count = 0;
    if ((value.size() & 1) != 0) {
        return AttrError::kBadLength;
    }
    for (size_t i = 0; i + 1 < value.size() && count < out.size(); i += 2) {
        out[count++] = load_be16(value.data() + i);
    }
    return AttrError::kOk;
}

AttrError decode_u32(std::span<const uint8_t> value, uint32_t& out) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    out = load_be32(value.data());
    return AttrError::kOk;
}

AttrError decode_channel_number(std::span<const uint8_t> value, uint16_t& out) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    out = load_be16(value.data());
    return AttrError::kOk;
}

AttrError decode_requested_transport(std::span<const uint8_t> value, uint8_t& protocol) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    protocol = value[0];
    return AttrError::kOk;
}

AttrError decode_address_family(std::span<const uint8_t> value, Family& out) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    if (value[0] == kStunFamilyIPv4) {
        out = Family::kIPv4;
    } else if (value[0] == kStunFamilyIPv6) {
        out = Family::kIPv6;
    } else {
        return AttrError::kBadFamily;
    }
    return AttrError::kOk;
}

AttrError decode_even_port(std::span<const uint8_t> value, bool& reserve_next) {
    // RFC 8656 18.8: one byte, R is the most significant bit.
    if (value.size() != 1) {
        return AttrError::kBadLength;
    }
    reserve_next = (value[0] & 0x80) != 0;
    return AttrError::kOk;
}

AttrError decode_reservation_token(std::span<const uint8_t> value, uint64_t& out) {
    if (value.size() != 8) {
        return AttrError::kBadLength;
    }
    out = load_be64(value.data());
    return AttrError::kOk;
}

AttrError decode_change_request(std::span<const uint8_t> value, ChangeRequest& out) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    const uint8_t flags = value[3];
    out.change_ip = (flags & 0x04) != 0;
    out.change_port = (flags & 0x02) != 0;
    return AttrError::kOk;
}

AttrError decode_response_port(std::span<const uint8_t> value, uint16_t& port) {
    if (value.size() != 4) {
        return AttrError::kBadLength;
    }
    port = load_be16(value.data());
    return AttrError::kOk;
}

namespace {
// One PASSWORD-ALGORITHM entry at the start of `v`; `consumed` gets its
// padded size (RFC 8489 14.11: parameters are padded to 32 bits).
AttrError decode_one_algorithm(std::span<const uint8_t> v, PasswordAlgorithmValue& out,
                               size_t& consumed) {
    if (v.size() < 4) {
        return AttrError::kBadLength;
    }
    const uint16_t alg = load_be16(v.data());
    const uint16_t plen = load_be16(v.data() + 2);
    if (size_t{plen} > v.size() - 4) {
        return AttrError::kBadLength;
    }
    out.algorithm = alg;
    out.params = v.subspan(4, plen);
    consumed = 4 + std::min<size_t>(pad4(plen), v.size() - 4);
    return AttrError::kOk;
}
}  // namespace

AttrError decode_password_algorithm(std::span<const uint8_t> value, PasswordAlgorithmValue& out) {
    size_t consumed = 0;
    const AttrError e = decode_one_algorithm(value, out, consumed);
    if (e != AttrError::kOk) {
        return e;
    }
    return consumed == value.size() ? AttrError::kOk : AttrError::kBadLength;
}

AttrError decode_password_algorithms(std::span<const uint8_t> value,
                                     std::span<PasswordAlgorithmValue> out, size_t& count) {
    count = 0;
    if (value.empty()) {
        return AttrError::kBadLength;
    }
    size_t pos = 0;
    while (pos < value.size()) {
        PasswordAlgorithmValue v;
        size_t consumed = 0;
        const AttrError e = decode_one_algorithm(value.subspan(pos), v, consumed);
        if (e != AttrError::kOk) {
            return e;
        }
        if (count < out.size()) {
            out[count++] = v;
        }
        pos += consumed;
    }
    return AttrError::kOk;
}

AttrError decode_userhash(std::span<const uint8_t> value, std::span<const uint8_t>& out) {
    if (value.size() != 32) {
        return AttrError::kBadLength;
    }
    out = value;
    return AttrError::kOk;
}

AttrError decode_icmp(std::span<const uint8_t> value, IcmpValue& out) {
    if (value.size() != 8) {
        return AttrError::kBadLength;
    }
    out.type = value[2];
    out.code = value[3];
    out.error_data = load_be32(value.data() + 4);
    return AttrError::kOk;
}

AttrError decode_address_error_code(std::span<const uint8_t> value, AddressErrorValue& out) {
    if (value.size() < 4) {
        return AttrError::kBadLength;
    }
    if (value[0] == kStunFamilyIPv4) {
        out.family = Family::kIPv4;
    } else if (value[0] == kStunFamilyIPv6) {
        out.family = Family::kIPv6;
    } else {
        return AttrError::kBadFamily;
    }
    const unsigned cls = value[2] & 0x07u;
    const unsigned number = value[3];
    if (cls < 3 || cls > 6 || number > 99) {
        return AttrError::kBadValue;
    }
    const AttrError e = decode_text(value.subspan(4), kMaxReason, out.reason);
    if (e != AttrError::kOk) {
        return e;
    }
    out.code = static_cast<uint16_t>(cls * 100 + number);
    return AttrError::kOk;
}

AttrError decode_empty(std::span<const uint8_t> value) {
    return value.empty() ? AttrError::kOk : AttrError::kBadLength;
}

}  // namespace turn::stun
