#include "stun/message.h"

#include "common/bytes.h"

namespace turn::stun {

std::string_view to_string(ParseError e) {
    switch (e) {
    case ParseError::kOk: return "ok";
    case ParseError::kTooShort: return "shorter than a STUN header";
    case ParseError::kNotStun: return "leading bits not zero";
    case ParseError::kBadMagicCookie: return "bad magic cookie";
    case ParseError::kLengthNotMultipleOf4: return "length not a multiple of 4";
    case ParseError::kLengthMismatch: return "length does not match datagram";
    case ParseError::kAttributeTruncated: return "truncated attribute header";
    case ParseError::kAttributeOverrun: return "attribute runs past the message";
    case ParseError::kTooManyAttributes: return "too many attributes";
    case ParseError::kDuplicateIntegrity: return "duplicate message integrity";
    case ParseError::kBadIntegrityLength: return "bad message integrity length";
    case ParseError::kBadFingerprintLength: return "bad fingerprint length";
    case ParseError::kFingerprintNotLast: return "attribute after FINGERPRINT";
    }
    return "unknown";
}

void add_unknown(MessageView& out, uint16_t type) {
    // Each type once (UNKNOWN-ATTRIBUTES lists types, and repeats must not
    // use up the slots and hide other types).
    for (size_t i = 0; i < out.unknown_count_; ++i) {
        if (out.unknown_[i] == type) {
            return;
        }
    }
    if (out.unknown_count_ < MessageView::kMaxUnknown) {
        out.unknown_[out.unknown_count_++] = type;
    }
}

const RawAttribute* MessageView::find(uint16_t type) const {
    for (size_t i = 0; i < count_; ++i) {
        if (attrs_[i].type == type) {
            return &attrs_[i];
        }
    }
    return nullptr;
}

bool looks_like_stun(std::span<const uint8_t> data) {
    return data.size() >= kHeaderSize && (data[0] & 0xC0) == 0 &&
           load_be32(data.data() + 4) == kMagicCookie;
}

size_t message_size(std::span<const uint8_t> data) {
    if (data.size() < kHeaderSize) {
        return 0;
    }
    return kHeaderSize + load_be16(data.data() + 2);
}

namespace {
// Records nothing of a message that failed: a caller that ignores the error
// must not see half-walked attributes or an integrity index.
ParseError fail(MessageView& out, ParseError e) {
    out = MessageView();
    return e;
}
}  // namespace

ParseError parse(std::span<const uint8_t> data, MessageView& out) {
    ParseError e = parse_into(data, out);
    return e == ParseError::kOk ? e : fail(out, e);
}

ParseError parse_into(std::span<const uint8_t> data, MessageView& out) {
    out.count_ = 0;
    out.unknown_count_ = 0;
    out.mi_ = out.mi256_ = out.fp_ = -1;
    out.data_ = {};

    if (data.size() < kHeaderSize) {
        return ParseError::kTooShort;
    }
    const uint8_t* p = data.data();
    if ((p[0] & 0xC0) != 0) {
        return ParseError::kNotStun;
    }
    if (load_be32(p + 4) != kMagicCookie) {
        return ParseError::kBadMagicCookie;
    }
    const uint16_t length = load_be16(p + 2);
    if ((length & 3) != 0) {
        return ParseError::kLengthNotMultipleOf4;
    }
    if (size_t{length} + kHeaderSize != data.size()) {
        return ParseError::kLengthMismatch;
    }

    out.type_ = load_be16(p);
    out.length_ = length;
    out.data_ = data;

    // The walk: `after_mi` / `after_mi256` implement RFC 8489 section 14's
    // "ignore everything after MESSAGE-INTEGRITY(-SHA256) except ...".
    bool after_mi = false;
    bool after_mi256 = false;
    size_t pos = kHeaderSize;
    const size_t end = data.size();
    while (pos < end) {
        if (out.fp_ >= 0) {
            return ParseError::kFingerprintNotLast;
        }
        if (end - pos < 4) {
            return ParseError::kAttributeTruncated;
        }
        const uint16_t type = load_be16(p + pos);
        const uint16_t len = load_be16(p + pos + 2);
        const size_t value_off = pos + 4;
        if (pad4(len) > end - value_off) {
            return ParseError::kAttributeOverrun;
        }

        bool record = true;
        switch (type) {
        case attr::kMessageIntegrity:
            if (out.mi_ >= 0) {
                return ParseError::kDuplicateIntegrity;
            }
            if (out.mi256_ >= 0) {
                // RFC 8489 section 9: after MESSAGE-INTEGRITY-SHA256 (with no
                // MESSAGE-INTEGRITY before it) everything but FINGERPRINT is
                // ignored, MESSAGE-INTEGRITY included.
                record = false;
                break;
            }
            if (len != 20) {
                return ParseError::kBadIntegrityLength;
            }
            break;
        case attr::kMessageIntegritySha256:
            if (out.mi256_ >= 0) {
                return ParseError::kDuplicateIntegrity;
            }
            // RFC 8489 14.6: at least 16 bytes, at most 32, a multiple of 4.
            if (len < 16 || len > 32 || (len & 3) != 0) {
                return ParseError::kBadIntegrityLength;
            }
            break;
        case attr::kFingerprint:
            if (len != 4) {
                return ParseError::kBadFingerprintLength;
            }
            break;
        default:
            record = !after_mi && !after_mi256;
            break;
        }

        if (record) {
            if (out.count_ == MessageView::kMaxAttributes) {
                return ParseError::kTooManyAttributes;
            }
            const int index = static_cast<int>(out.count_);
            out.attrs_[out.count_++] = RawAttribute{type, len, static_cast<uint32_t>(value_off)};
            if (type == attr::kMessageIntegrity) {
                out.mi_ = index;
                after_mi = true;
            } else if (type == attr::kMessageIntegritySha256) {
                out.mi256_ = index;
                after_mi256 = true;
            } else if (type == attr::kFingerprint) {
                out.fp_ = index;
            } else if (attr::is_comprehension_required(type) && !is_known_required_attribute(type)) {
                add_unknown(out, type);
            }
        }
        pos = value_off + pad4(len);
    }
    return ParseError::kOk;
}

}  // namespace turn::stun
