// libFuzzer target for the STUN codec: parse(), every attribute decoder,
// MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT verification, and the builder.
//
// For an input that parses, every recorded attribute is decoded with its
// typed decoder and written again with the matching MessageBuilder call
// (raw bytes when the decoder rejects it), then MESSAGE-INTEGRITY(-SHA256)
// and FINGERPRINT are added. The invariants checked (a violation traps, so
// the fuzzer reports it as a crash):
//   1. a message the builder finished with ok() parses again, and its
//      MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT verify;
//   2. rebuilding that message gives the same bytes and the same number of
//      successfully decoded attributes (decode(encode(v)) == v for every
//      decoder/encoder pair);
//   3. reserve() returns exactly the requested length when ok() stays true;
//   4. every decoded address is well formed (IPv4 keeps zeros after ip[3]),
//      normalised() maps ::ffff:a.b.c.d to a.b.c.d and is idempotent, prefix
//      checks give the same answer before and after normalisation (the
//      mapped-loopback ACL bypass, coturn CVE-2020-26262), and
//      Address::parse(to_string()) gives the address back.
// The output buffer is a heap block sized from the input, so a builder write
// past its end is an AddressSanitizer report, and the overflow path is taken
// for some inputs and not others.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "net/address.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/constants.h"
#include "stun/integrity.h"
#include "stun/message.h"

namespace {

using namespace turn;
using namespace turn::stun;

// RFC 5769 short-term password.
constexpr std::array<uint8_t, 22> kShortTermKey = {
    'V', 'O', 'k', 'J', 'x', 'b', 'R', 'l', '1', 'R', 'm',
    'T', 'x', 'U', 'k', '/', 'W', 'v', 'J', 'x', 'B', 't'};
// RFC 5769 section 2.4 long-term key: MD5("<user>:example.org:TheMatrIX").
constexpr std::array<uint8_t, 16> kLongTermMd5Key = {
    0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51,
    0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2, 0xa9};
// The same credentials hashed with SHA-256 (RFC 8489 section 9.2.2).
constexpr std::array<uint8_t, 32> kLongTermSha256Key = {
    0xdd, 0x29, 0x5a, 0x61, 0x3b, 0x90, 0x58, 0xc3, 0xc2, 0x3d, 0x6d, 0xc7, 0x16, 0x5b, 0xda, 0x07,
    0x23, 0x04, 0xd9, 0x89, 0xc9, 0xd0, 0xaf, 0x3a, 0x8c, 0x7e, 0x18, 0x4b, 0x4f, 0x9b, 0xb4, 0xa1};

[[noreturn]] void fail() { __builtin_trap(); }

// Keeps a computed value alive so the call is not optimised away.
template <typename T>
void keep(const T& v) {
    asm volatile("" : : "r"(&v) : "memory");
}

bool decoded(AttrError e) { return e == AttrError::kOk; }

// The prefixes a denied-peer ACL typically holds.
const std::array<Prefix, 4>& acl_prefixes() {
    static const std::array<Prefix, 4> p = [] {
        std::array<Prefix, 4> out{};
        const char* const text[] = {"127.0.0.0/8", "::1/128", "198.18.0.0/15", "fd00::/8"};
        for (size_t i = 0; i < out.size(); ++i) {
            const std::optional<Prefix> parsed = Prefix::parse(text[i]);
            if (!parsed) {
                fail();
            }
            out[i] = *parsed;
        }
        return out;
    }();
    return p;
}

// What the control plane does with an address from the wire before any
// policy decision: normalise it, match it against prefixes, log it.
void check_address(const Address& a) {
    if (!a.is_v4() && !a.is_v6()) {
        fail();  // a decoder reported success without a family
    }
    if (a.is_v4()) {
        for (size_t i = 4; i < a.ip.size(); ++i) {
            if (a.ip[i] != 0) {
                fail();  // would break operator== and AddressHash
            }
        }
    }
    const Address n = a.normalised();
    if (n.port != a.port || n.is_v4_mapped() || !(n.normalised() == n)) {
        fail();
    }
    if (a.is_v4_mapped() && (!n.is_v4() || std::memcmp(n.ip.data(), a.ip.data() + 12, 4) != 0)) {
        fail();
    }
    for (const Prefix& p : acl_prefixes()) {
        if (p.contains(a) != p.contains(n)) {
            fail();
        }
    }
    keep(a.is_unspecified());
    keep(AddressHash{}(a));
    const std::optional<Address> back = Address::parse(a.to_string());
    if (!back || !(*back == a)) {
        fail();
    }
}

// Decodes every recorded attribute of `m` and re-encodes it into `b`.
// Returns how many attributes decoded successfully.
size_t rebuild_attributes(const MessageView& m, MessageBuilder& b) {
    size_t ok_count = 0;
    for (const RawAttribute& a : m.attributes()) {
        const std::span<const uint8_t> v = m.value(a);
        bool good = false;
        switch (a.type) {
        case attr::kMessageIntegrity:
        case attr::kMessageIntegritySha256:
        case attr::kFingerprint:
            // Recomputed at the end.
            continue;
        case attr::kMappedAddress:
        case attr::kAlternateServer:
        case attr::kResponseOrigin:
        case attr::kOtherAddress: {
            Address addr;
            if ((good = decoded(decode_address(v, addr)))) {
                check_address(addr);
                b.add_address(a.type, addr);
            }
            break;
        }
        case attr::kXorMappedAddress:
        case attr::kXorPeerAddress:
        case attr::kXorRelayedAddress: {
            Address addr;
            if ((good = decoded(decode_xor_address(v, m.transaction_id(), addr)))) {
                check_address(addr);
                b.add_xor_address(a.type, addr);
            }
            break;
        }
        case attr::kUsername:
        case attr::kRealm:
        case attr::kNonce:
        case attr::kSoftware:
        case attr::kAlternateDomain: {
            const size_t max = a.type == attr::kUsername        ? kMaxUsername
                               : a.type == attr::kRealm         ? kMaxRealm
                               : a.type == attr::kNonce         ? kMaxNonce
                               : a.type == attr::kSoftware      ? kMaxSoftware
                                                                : kMaxAlternateDomain;
            std::string_view text;
            if ((good = decoded(decode_text(v, max, text)))) {
                b.add_text(a.type, text);
            }
            break;
        }
        case attr::kErrorCode: {
            ErrorCodeValue ec;
            if ((good = decoded(decode_error_code(v, ec)))) {
                b.add_error_code(ec.code, ec.reason);
            }
            break;
        }
        case attr::kUnknownAttributes: {
            std::array<uint16_t, 16> types{};
            size_t count = 0;
            if ((good = decoded(decode_unknown_attributes(v, types, count)))) {
                if (count > types.size()) {
                    fail();
                }
                b.add_unknown_attributes(std::span<const uint16_t>(types.data(), count));
            }
            break;
        }
        case attr::kLifetime:
        case attr::kConnectionId:
        case attr::kPriority:
        case attr::kCacheTimeout:
        case attr::kTransactionTransmitCounter: {
            uint32_t u = 0;
            if ((good = decoded(decode_u32(v, u)))) {
                b.add_u32(a.type, u);
            }
            break;
        }
        case attr::kChannelNumber: {
            uint16_t ch = 0;
            if ((good = decoded(decode_channel_number(v, ch)))) {
                b.add_channel_number(ch);
            }
            break;
        }
        case attr::kRequestedTransport: {
            uint8_t proto = 0;
            if ((good = decoded(decode_requested_transport(v, proto)))) {
                b.add_requested_transport(proto);
            }
            break;
        }
        case attr::kRequestedAddressFamily:
        case attr::kAdditionalAddressFamily: {
            Family f = Family::kNone;
            if ((good = decoded(decode_address_family(v, f)))) {
                b.add_address_family(a.type, f);
            }
            break;
        }
        case attr::kEvenPort: {
            bool reserve_next = false;
            if ((good = decoded(decode_even_port(v, reserve_next)))) {
                b.add_even_port(reserve_next);
            }
            break;
        }
        case attr::kReservationToken:
        case attr::kIceControlled:
        case attr::kIceControlling: {
            // ICE-CONTROLLED/-CONTROLLING are 64-bit tie-breakers with the
            // same shape as RESERVATION-TOKEN.
            uint64_t u = 0;
            if ((good = decoded(decode_reservation_token(v, u)))) {
                b.add_u64(a.type, u);
            }
            break;
        }
        case attr::kChangeRequest: {
            ChangeRequest cr;
            if ((good = decoded(decode_change_request(v, cr)))) {
                b.add_change_request(cr.change_ip, cr.change_port);
            }
            break;
        }
        case attr::kResponsePort: {
            uint16_t port = 0;
            if ((good = decoded(decode_response_port(v, port)))) {
                b.add_response_port(port);
            }
            break;
        }
        case attr::kPasswordAlgorithm: {
            PasswordAlgorithmValue pa;
            if ((good = decoded(decode_password_algorithm(v, pa)) && pa.params.empty())) {
                b.add_password_algorithm(static_cast<PasswordAlgorithm>(pa.algorithm));
            }
            break;
        }
        case attr::kPasswordAlgorithms: {
            std::array<PasswordAlgorithmValue, 8> list{};
            size_t count = 0;
            if (decoded(decode_password_algorithms(v, list, count))) {
                if (count > list.size()) {
                    fail();
                }
                // The builder writes algorithms without parameters; only
                // such lists round-trip to identical bytes.
                std::array<PasswordAlgorithm, 8> algs{};
                good = true;
                for (size_t i = 0; i < count; ++i) {
                    algs[i] = static_cast<PasswordAlgorithm>(list[i].algorithm);
                    good = good && list[i].params.empty();
                }
                if (good) {
                    b.add_password_algorithms(std::span<const PasswordAlgorithm>(algs.data(), count));
                }
            }
            break;
        }
        case attr::kUserhash: {
            std::span<const uint8_t> hash;
            if ((good = decoded(decode_userhash(v, hash)))) {
                if (hash.size() != 32) {
                    fail();
                }
                b.add(a.type, hash);
            }
            break;
        }
        case attr::kIcmp: {
            IcmpValue icmp;
            if ((good = decoded(decode_icmp(v, icmp)))) {
                b.add_icmp(icmp.type, icmp.code, icmp.error_data);
            }
            break;
        }
        case attr::kAddressErrorCode: {
            AddressErrorValue ae;
            if ((good = decoded(decode_address_error_code(v, ae)))) {
                b.add_address_error_code(ae.family, ae.code, ae.reason);
            }
            break;
        }
        case attr::kDontFragment:
        case attr::kUseCandidate:
            if ((good = decoded(decode_empty(v)))) {
                b.add_empty(a.type);
            }
            break;
        case attr::kPadding:
            // Content is irrelevant (RFC 5780 section 7.6): written as zeros.
            b.add_padding(v.size());
            good = true;
            break;
        case attr::kData:
            if (!v.empty()) {
                // DATA the way the relay writes it: reserved, then filled.
                const std::span<uint8_t> dst = b.reserve(a.type, v.size());
                if (b.ok()) {
                    if (dst.size() != v.size()) {
                        fail();
                    }
                    std::memcpy(dst.data(), v.data(), v.size());
                }
                good = true;
                break;
            }
            b.add(a.type, v);
            good = true;
            break;
        default:
            break;
        }
        if (good) {
            ++ok_count;
        } else {
            b.add(a.type, v);
        }
    }
    return ok_count;
}

struct Rebuilt {
    size_t size = 0;        // 0: did not fit
    size_t decoded = 0;
};

Rebuilt rebuild(const MessageView& m, std::span<uint8_t> buf) {
    MessageBuilder b(buf, m.type(), m.transaction_id());
    Rebuilt r;
    r.decoded = rebuild_attributes(m, b);
    b.add_message_integrity(kLongTermMd5Key);
    if (m.message_integrity_sha256() != nullptr) {
        b.add_message_integrity_sha256(kLongTermSha256Key);
    }
    b.add_fingerprint();
    if (b.ok()) {
        r.size = b.size();
        if (b.bytes().size() != r.size || r.size > buf.size()) {
            fail();
        }
    }
    return r;
}

void exercise(std::span<const uint8_t> in) {
    keep(looks_like_stun(in));
    const size_t framed = message_size(in);
    // 0 without a whole header; otherwise 0 (not STUN) or 20 + length field.
    if (in.size() < kHeaderSize) {
        if (framed != 0) {
            fail();
        }
    } else if (framed != 0 && framed != kHeaderSize + load_be16(in.data() + 2)) {
        fail();
    }

    MessageView m;
    const ParseError pe = parse(in, m);
    keep(to_string(pe));
    if (pe != ParseError::kOk) {
        return;
    }
    if (m.bytes().size() != in.size() || m.attributes().size() > MessageView::kMaxAttributes) {
        fail();
    }
    for (const RawAttribute& a : m.attributes()) {
        if (a.offset < kHeaderSize || size_t{a.offset} + a.length > in.size()) {
            fail();
        }
        keep(attribute_name(a.type));
        if (m.find(a.type) == nullptr) {
            fail();
        }
    }
    keep(method_name(m.method()));

    keep(verify_fingerprint(m));
    keep(verify_message_integrity(m, kShortTermKey));
    keep(verify_message_integrity(m, kLongTermMd5Key));
    keep(verify_message_integrity_sha256(m, kShortTermKey));
    keep(verify_message_integrity_sha256(m, kLongTermSha256Key));

    // Room for the input plus MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT,
    // less a few words chosen by the input so both the fitting and the
    // overflowing paths run.
    const size_t slack = 24 + 36 + 8;
    const size_t shrink = 4u * (m.transaction_id()[11] % 8u);
    std::vector<uint8_t> first(in.size() + slack - shrink);
    const Rebuilt r1 = rebuild(m, first);
    if (r1.size == 0) {
        return;
    }
    const std::span<const uint8_t> out1(first.data(), r1.size);

    MessageView m1;
    const ParseError pe1 = parse(out1, m1);
    if (pe1 == ParseError::kTooManyAttributes) {
        return;  // the rebuilt message gained MI/FP on top of a full list
    }
    if (pe1 != ParseError::kOk || !verify_message_integrity(m1, kLongTermMd5Key) ||
        !verify_fingerprint(m1)) {
        fail();
    }
    if (m.message_integrity_sha256() != nullptr &&
        !verify_message_integrity_sha256(m1, kLongTermSha256Key)) {
        fail();
    }

    std::vector<uint8_t> second(r1.size);
    const Rebuilt r2 = rebuild(m1, second);
    if (r2.size != r1.size || r2.decoded != r1.decoded ||
        std::memcmp(first.data(), second.data(), r1.size) != 0) {
        fail();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    exercise(std::span<const uint8_t>(data, size));
    return 0;
}
