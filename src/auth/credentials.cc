// OpaqueString (RFC 8265 section 4.2 over the PRECIS FreeformClass of RFC 8264
// section 4.3), long-term keys (RFC 8489 section 9.2.2), USERHASH (RFC 8489
// section 14.4) and base64.
#include "auth/credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include <cstdlib>
#include <memory>
#include <vector>

namespace turn::auth {

namespace {

struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
};

// Decodes well-formed UTF-8 (the caller has run u8_check) into code points.
std::vector<ucs4_t> to_code_points(const uint8_t* s, size_t n) {
    std::vector<ucs4_t> cps;
    cps.reserve(n);
    size_t i = 0;
    while (i < n) {
        ucs4_t uc = 0;
        const int len = u8_mbtouc(&uc, s + i, n - i);
        cps.push_back(uc);
        i += static_cast<size_t>(len > 0 ? len : 1);
    }
    return cps;
}

bool in_script(ucs4_t uc, const char* name) {
    const uc_script_t* s = uc_script(uc);
    return s != nullptr && s->name != nullptr && std::string_view(s->name) == name;
}

// RFC 5892 Appendix A.1 (ZERO WIDTH NON-JOINER): allowed after a virama, or
// between a left/dual-joining and a right/dual-joining character with only
// transparent characters around it.
bool zwnj_context_ok(const std::vector<ucs4_t>& cps, size_t i) {
    if (i > 0 && uc_combining_class(cps[i - 1]) == UC_CCC_VR) {
        return true;
    }
    size_t b = i;
    bool left = false;
    while (b > 0) {
        const int jt = uc_joining_type(cps[--b]);
        if (jt == UC_JOINING_TYPE_T) {
            continue;
        }
        left = jt == UC_JOINING_TYPE_L || jt == UC_JOINING_TYPE_D;
        break;
    }
    if (!left) {
        return false;
    }
    for (size_t a = i + 1; a < cps.size(); ++a) {
        const int jt = uc_joining_type(cps[a]);
        if (jt == UC_JOINING_TYPE_T) {
            continue;
        }
        return jt == UC_JOINING_TYPE_R || jt == UC_JOINING_TYPE_D;
    }
    return false;
}

// RFC 5892 Appendix A.3-A.9: the CONTEXTO exceptions of section 2.6.
bool contexto_ok(const std::vector<ucs4_t>& cps, size_t i) {
    const ucs4_t uc = cps[i];
    switch (uc) {
    case 0x00B7:  // MIDDLE DOT: only in Catalan "l·l" (A.3)
        return i > 0 && i + 1 < cps.size() && cps[i - 1] == 0x006C && cps[i + 1] == 0x006C;
    case 0x0375:  // GREEK LOWER NUMERAL SIGN: followed by Greek (A.4)
        return i + 1 < cps.size() && in_script(cps[i + 1], "Greek");
    case 0x05F3:  // HEBREW PUNCTUATION GERESH / GERSHAYIM: after Hebrew (A.5, A.6)
    case 0x05F4:
        return i > 0 && in_script(cps[i - 1], "Hebrew");
    case 0x30FB:  // KATAKANA MIDDLE DOT: with some Hiragana, Katakana or Han (A.7)
        for (ucs4_t c : cps) {
            if (c != 0x30FB &&
                (in_script(c, "Hiragana") || in_script(c, "Katakana") || in_script(c, "Han"))) {
                return true;
            }
        }
        return false;
    default:
        break;
    }
    // ARABIC-INDIC and EXTENDED ARABIC-INDIC digits must not be mixed (A.8, A.9).
    const bool arabic = uc >= 0x0660 && uc <= 0x0669;
    const bool extended = uc >= 0x06F0 && uc <= 0x06F9;
    if (arabic || extended) {
        for (ucs4_t c : cps) {
            const bool other = arabic ? (c >= 0x06F0 && c <= 0x06F9) : (c >= 0x0660 && c <= 0x0669);
            if (other) {
                return false;
            }
        }
    }
    return true;
}

bool is_contexto(ucs4_t uc) {
    return uc == 0x00B7 || uc == 0x0375 || uc == 0x05F3 || uc == 0x05F4 || uc == 0x30FB ||
           (uc >= 0x0660 && uc <= 0x0669) || (uc >= 0x06F0 && uc <= 0x06F9);
}

// RFC 5892 section 2.6 exceptions that are DISALLOWED outright.
bool is_exception_disallowed(ucs4_t uc) {
    return uc == 0x0640 || uc == 0x07FA || uc == 0x302E || uc == 0x302F ||
           (uc >= 0x3031 && uc <= 0x3035) || uc == 0x303B;
}

// RFC 5892 section 2.6 exceptions that are PVALID whatever their category.
bool is_exception_pvalid(ucs4_t uc) {
    return uc == 0x00DF || uc == 0x03C2 || uc == 0x06FD || uc == 0x06FE || uc == 0x0F0B ||
           uc == 0x3007;
}

// RFC 8264 section 9.9: conjoining Hangul Jamo (Hangul_Syllable_Type L, V, T).
bool is_old_hangul_jamo(ucs4_t uc) {
    return (uc >= 0x1100 && uc <= 0x11FF) || (uc >= 0xA960 && uc <= 0xA97F) ||
           (uc >= 0xD7B0 && uc <= 0xD7FF);
}

// RFC 8264 section 9.17: a compatibility decomposition exists.
bool has_compat(ucs4_t uc) {
    int tag = 0;
    ucs4_t decomposition[UC_DECOMPOSITION_MAX_LENGTH];
    return uc_decomposition(uc, &tag, decomposition) > 0 && tag != UC_DECOMP_CANONICAL;
}

// RFC 8264 section 8 derivation, in its order, for the FreeformClass: true if
// code point i may appear in an OpaqueString.
bool freeform_allowed(const std::vector<ucs4_t>& cps, size_t i) {
    const ucs4_t uc = cps[i];
    if (is_exception_disallowed(uc)) {
        return false;
    }
    if (is_contexto(uc)) {
        return contexto_ok(cps, i);
    }
    if (is_exception_pvalid(uc)) {
        return true;
    }
    // BackwardCompatible is empty. Unassigned (Cn that is not a noncharacter;
    // noncharacters fall to the Ignorable rule below, DISALLOWED either way).
    if (uc_is_general_category(uc, UC_CATEGORY_Cn) && !uc_is_property_not_a_character(uc)) {
        return false;
    }
    if (uc >= 0x21 && uc <= 0x7E) {  // ASCII7
        return true;
    }
    if (uc == 0x200C) {  // JoinControl: CONTEXTJ (RFC 5892 A.1, A.2)
        return zwnj_context_ok(cps, i);
    }
    if (uc == 0x200D) {
        return i > 0 && uc_combining_class(cps[i - 1]) == UC_CCC_VR;
    }
    if (is_old_hangul_jamo(uc)) {
        return false;
    }
    if (uc_is_property_default_ignorable_code_point(uc) || uc_is_property_not_a_character(uc)) {
        return false;
    }
    if (uc_is_general_category(uc, UC_CATEGORY_Cc)) {
        return false;
    }
    if (has_compat(uc)) {  // FREE_PVAL
        return true;
    }
    // LetterDigits, OtherLetterDigits, Spaces, Symbols, Punctuation.
    static const uc_general_category_t allowed = uc_general_category_or(
        uc_general_category_or(uc_general_category_or(UC_CATEGORY_L, UC_CATEGORY_M),
                               uc_general_category_or(UC_CATEGORY_N, UC_CATEGORY_Zs)),
        uc_general_category_or(UC_CATEGORY_S, UC_CATEGORY_P));
    return uc_is_general_category(uc, allowed);
}

bool is_ascii_printable(std::string_view s) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u > 0x7E) {
            return false;
        }
    }
    return true;
}

bool digest(const EVP_MD* md, std::string_view data, uint8_t* out, unsigned int expected_len) {
    unsigned int len = 0;
    return EVP_Digest(data.data(), data.size(), out, &len, md, nullptr) == 1 && len == expected_len;
}

// Holds key material and wipes it on destruction.
struct WipedString {
    std::string s;
    ~WipedString() { OPENSSL_cleanse(s.data(), s.size()); }
};

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : 63;
}

}  // namespace

std::optional<std::string> opaque_string(std::string_view in) {
    if (in.empty()) {
        return std::nullopt;
    }
    // ASCII printable is a fixed point of every step: U+0020 is the only
    // space, NFC leaves ASCII alone and every character is valid.
    if (is_ascii_printable(in)) {
        return std::string(in);
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(in.data());
    if (u8_check(bytes, in.size()) != nullptr) {
        return std::nullopt;
    }

    // RFC 8265 section 4.2.1 additional mapping rule: non-ASCII spaces (Zs)
    // become U+0020. Re-encoded into a fresh UTF-8 buffer for u8_normalize.
    std::vector<ucs4_t> cps = to_code_points(bytes, in.size());
    WipedString mapped;
    mapped.s.reserve(in.size());
    for (ucs4_t& uc : cps) {
        if (uc != 0x20 && uc_is_general_category(uc, UC_CATEGORY_Zs)) {
            uc = 0x20;
        }
        uint8_t buf[6];
        const int n = u8_uctomb(buf, uc, sizeof buf);
        if (n <= 0) {
            return std::nullopt;
        }
        mapped.s.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
    }

    // Normalization rule: NFC.
    size_t out_len = 0;
    std::unique_ptr<uint8_t, FreeDeleter> normalized(
        u8_normalize(UNINORM_NFC, reinterpret_cast<const uint8_t*>(mapped.s.data()),
                     mapped.s.size(), nullptr, &out_len));
    if (!normalized) {
        return std::nullopt;
    }
    WipedString result;
    result.s.assign(reinterpret_cast<const char*>(normalized.get()), out_len);
    OPENSSL_cleanse(normalized.get(), out_len);

    // RFC 8265 section 4.2.2: the result must not be empty, and every code
    // point must be allowed by the FreeformClass (RFC 8264 section 4.3).
    if (result.s.empty()) {
        return std::nullopt;
    }
    cps = to_code_points(reinterpret_cast<const uint8_t*>(result.s.data()), result.s.size());
    for (size_t i = 0; i < cps.size(); ++i) {
        if (!freeform_allowed(cps, i)) {
            return std::nullopt;
        }
    }
    return std::move(result.s);
}

std::optional<Key> long_term_key(PasswordAlgorithm alg, std::string_view username,
                                 std::string_view realm, std::string_view password) {
    const EVP_MD* md = nullptr;
    uint8_t len = 0;
    switch (alg) {
    case PasswordAlgorithm::kMd5:
        md = EVP_md5();
        len = 16;
        break;
    case PasswordAlgorithm::kSha256:
        md = EVP_sha256();
        len = 32;
        break;
    }
    if (md == nullptr) {
        return std::nullopt;
    }
    auto r = opaque_string(realm);
    if (!r) {
        return std::nullopt;
    }
    auto p = opaque_string(password);
    if (!p) {
        return std::nullopt;
    }
    WipedString password_string{std::move(*p)};
    WipedString input;
    input.s.reserve(username.size() + r->size() + password_string.s.size() + 2);
    input.s.append(username).append(":").append(*r).append(":").append(password_string.s);
    Key key;
    if (!digest(md, input.s, key.bytes.data(), len)) {
        return std::nullopt;
    }
    key.len = len;
    return key;
}

std::optional<std::array<uint8_t, 32>> userhash(std::string_view username, std::string_view realm) {
    auto u = opaque_string(username);
    auto r = opaque_string(realm);
    if (!u || !r) {
        return std::nullopt;
    }
    std::string input;
    input.reserve(u->size() + r->size() + 1);
    input.append(*u).append(":").append(*r);
    std::array<uint8_t, 32> out{};
    if (!digest(EVP_sha256(), input, out.data(), 32)) {
        return std::nullopt;
    }
    return out;
}

std::string base64_encode(std::span<const uint8_t> data) {
    if (data.empty()) {
        return {};
    }
    // EVP_EncodeBlock writes 4 characters per started 3-byte group and a NUL.
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                  static_cast<int>(data.size()));
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    // EVP_DecodeBlock is lenient (it skips surrounding whitespace, accepts
    // '=' anywhere and counts padding as data bytes), so the text is checked
    // here first: a multiple of 4 characters from the RFC 4648 alphabet, at
    // most two '=' at the very end, and zero pad bits (RFC 4648 section 3.5),
    // which makes the encoding of any byte string unique.
    if (text.size() % 4 != 0) {
        return std::nullopt;
    }
    if (text.empty()) {
        return std::string();
    }
    size_t pad = 0;
    while (pad < 2 && text[text.size() - 1 - pad] == '=') {
        ++pad;
    }
    for (size_t i = 0; i < text.size() - pad; ++i) {
        if (!is_base64_char(text[i])) {
            return std::nullopt;
        }
    }
    const char last = text[text.size() - 1 - pad];
    if ((pad == 1 && (base64_value(last) & 0x03) != 0) ||
        (pad == 2 && (base64_value(last) & 0x0F) != 0)) {
        return std::nullopt;
    }
    if (text.size() > 0x7FFFFFFF) {
        return std::nullopt;
    }
    std::string out(text.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()),
                                  static_cast<int>(text.size()));
    if (n < 0 || static_cast<size_t>(n) != out.size()) {
        return std::nullopt;
    }
    // EVP_DecodeBlock decodes '=' as zero bits and returns them as bytes.
    out.resize(out.size() - pad);
    return out;
}

}  // namespace turn::auth
