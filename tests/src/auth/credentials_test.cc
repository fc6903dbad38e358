// OpaqueString (RFC 8265 section 4.2), long-term keys (RFC 8489 section
// 9.2.2), USERHASH (RFC 8489 section 14.4) and base64 (RFC 4648).
#include "auth/credentials.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <vector>

namespace turn::auth {
namespace {

// UTF-8 of the RFC 5769 / RFC 8489 example username
// "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>".
constexpr std::string_view kMatrixUser =
    "\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9";

template <size_t N>
bool key_equals(const std::optional<Key>& key, const std::array<uint8_t, N>& expected) {
    return key.has_value() && key->len == N &&
           std::equal(expected.begin(), expected.end(), key->bytes.begin());
}

TEST(OpaqueString, AsciiIsUnchanged) {
    EXPECT_EQ(opaque_string("Correct Horse Battery Staple!"), "Correct Horse Battery Staple!");
    EXPECT_EQ(opaque_string(" ~leading and trailing spaces kept~ "),
              " ~leading and trailing spaces kept~ ");
    EXPECT_EQ(opaque_string("VOkJxbRl1RmTxUk/WvJxBt"), "VOkJxbRl1RmTxUk/WvJxBt");
}

TEST(OpaqueString, NormalisesToNfc) {
    EXPECT_EQ(opaque_string("e\u0301"), "\u00e9");
    EXPECT_EQ(opaque_string("cafe\u0301 au lait"), "caf\u00e9 au lait");
    // Conjoining jamo compose to a syllable before the Old Hangul Jamo rule
    // is applied, so the composed string is valid.
    EXPECT_EQ(opaque_string("\u1100\u1161"), "\uac00");
    // Already NFC, non-ASCII: unchanged.
    EXPECT_EQ(opaque_string(kMatrixUser), std::string(kMatrixUser));
    EXPECT_EQ(opaque_string("\u00dcn\u00efc\u00f6d\u00e9"), "\u00dcn\u00efc\u00f6d\u00e9");
}

TEST(OpaqueString, MapsNonAsciiSpacesToSpace) {
    EXPECT_EQ(opaque_string("a\u00a0b"), "a b");   // NO-BREAK SPACE
    EXPECT_EQ(opaque_string("a\u3000b"), "a b");   // IDEOGRAPHIC SPACE
    EXPECT_EQ(opaque_string("a\u2009b"), "a b");   // THIN SPACE
    EXPECT_EQ(opaque_string("a\u1680b"), "a b");   // OGHAM SPACE MARK
}

TEST(OpaqueString, KeepsCompatibilityCharacters) {
    // OpaqueString has no width or compatibility mapping (unlike SASLprep).
    EXPECT_EQ(opaque_string("\ufb01"), "\ufb01");           // LATIN SMALL LIGATURE FI
    EXPECT_EQ(opaque_string("Matr\u2168"), "Matr\u2168");   // ROMAN NUMERAL NINE
    EXPECT_EQ(opaque_string("\U0001F600"), "\U0001F600");   // an emoji (So)
}

TEST(OpaqueString, RejectsControlCharacters) {
    EXPECT_FALSE(opaque_string("a\x01" "b").has_value());
    EXPECT_FALSE(opaque_string("tab\there").has_value());
    EXPECT_FALSE(opaque_string("del\x7f").has_value());
    EXPECT_FALSE(opaque_string("caf\u00e9\n").has_value());
    EXPECT_FALSE(opaque_string("next\u0085line").has_value());  // C1 control
    EXPECT_FALSE(opaque_string(std::string("nul\0byte", 8)).has_value());
}

TEST(OpaqueString, RejectsEmpty) {
    EXPECT_FALSE(opaque_string("").has_value());
}

TEST(OpaqueString, RejectsInvalidUtf8) {
    EXPECT_FALSE(opaque_string("\xff").has_value());
    EXPECT_FALSE(opaque_string("abc\xc3").has_value());          // truncated
    EXPECT_FALSE(opaque_string("\xc0\xaf").has_value());         // overlong '/'
    EXPECT_FALSE(opaque_string("\xed\xa0\x80").has_value());     // surrogate U+D800
    EXPECT_FALSE(opaque_string("\xf4\x90\x80\x80").has_value()); // above U+10FFFF
    EXPECT_FALSE(opaque_string("\x80" "abc").has_value());       // lone continuation
}

TEST(OpaqueString, RejectsDisallowedCodePoints) {
    EXPECT_FALSE(opaque_string("The\u00adMatrix").has_value());  // SOFT HYPHEN, ignorable
    EXPECT_FALSE(opaque_string("zero\u200bwidth").has_value());  // ZERO WIDTH SPACE
    EXPECT_FALSE(opaque_string("\ufeffbom").has_value());        // BOM
    EXPECT_FALSE(opaque_string("a\u0378").has_value());          // unassigned
    EXPECT_FALSE(opaque_string("\ue000").has_value());           // private use
    EXPECT_FALSE(opaque_string("x\ufffe").has_value());          // noncharacter
    EXPECT_FALSE(opaque_string("line\u2028sep").has_value());    // Zl
    EXPECT_FALSE(opaque_string("\u0600" "1").has_value());       // format (Cf)
    EXPECT_FALSE(opaque_string("\u1100").has_value());           // Old Hangul Jamo
    EXPECT_FALSE(opaque_string("\u0640").has_value());           // RFC 5892 exception
}

TEST(OpaqueString, AppliesContextRules) {
    // RFC 5892 Appendix A: MIDDLE DOT only between 'l's, KATAKANA MIDDLE DOT
    // only with kana or Han, ZERO WIDTH JOINER only after a virama.
    EXPECT_TRUE(opaque_string("col\u00b7legi").has_value());
    EXPECT_FALSE(opaque_string("a\u00b7b").has_value());
    EXPECT_TRUE(opaque_string("\u30a2\u30fb\u30a4").has_value());
    EXPECT_FALSE(opaque_string("a\u30fbb").has_value());
    EXPECT_TRUE(opaque_string("\u0915\u094d\u200d\u0937").has_value());
    EXPECT_FALSE(opaque_string("a\u200db").has_value());
}

TEST(LongTermKey, Md5KnownValue) {
    // printf 'user:realm:pass' | md5sum
    const std::array<uint8_t, 16> expected = {0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb,
                                              0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc, 0x40, 0xeb};
    EXPECT_TRUE(key_equals(long_term_key(PasswordAlgorithm::kMd5, "user", "realm", "pass"),
                           expected));
}

TEST(LongTermKey, Sha256KnownValue) {
    // printf 'user:realm:pass' | sha256sum
    const std::array<uint8_t, 32> expected = {
        0x07, 0xe9, 0x34, 0x11, 0x7a, 0xbd, 0x40, 0x83,
        0x6e, 0x7c, 0x63, 0x29, 0xb5, 0x47, 0x31, 0xb2,
        0xb2, 0xd2, 0xa5, 0xf9, 0xa7, 0x1f, 0x54, 0x49,
        0x22, 0xd7, 0x5e, 0x07, 0x30, 0xd8, 0x25, 0x1b};
    EXPECT_TRUE(key_equals(long_term_key(PasswordAlgorithm::kSha256, "user", "realm", "pass"),
                           expected));
}

TEST(LongTermKey, Rfc5769Key) {
    // printf '<utf-8 of kMatrixUser>:example.org:TheMatrIX' | md5sum
    const std::array<uint8_t, 16> expected = {0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51,
                                              0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2, 0xa9};
    EXPECT_TRUE(key_equals(
        long_term_key(PasswordAlgorithm::kMd5, kMatrixUser, "example.org", "TheMatrIX"),
        expected));
}

TEST(LongTermKey, ProcessesRealmAndPasswordButNotUsername) {
    // Password and realm go through OpaqueString.
    EXPECT_EQ(long_term_key(PasswordAlgorithm::kMd5, "u", "r", "pa\u00a0ss"),
              long_term_key(PasswordAlgorithm::kMd5, "u", "r", "pa ss"));
    EXPECT_EQ(long_term_key(PasswordAlgorithm::kMd5, "u", "re\u0301alm", "p"),
              long_term_key(PasswordAlgorithm::kMd5, "u", "r\u00e9alm", "p"));
    // The username is used as it came (already OpaqueString'd by the client).
    EXPECT_NE(long_term_key(PasswordAlgorithm::kMd5, "e\u0301", "r", "p"),
              long_term_key(PasswordAlgorithm::kMd5, "\u00e9", "r", "p"));
}

TEST(LongTermKey, RejectsBadInput) {
    EXPECT_FALSE(long_term_key(PasswordAlgorithm::kMd5, "u", "r", "").has_value());
    EXPECT_FALSE(long_term_key(PasswordAlgorithm::kMd5, "u", "r", "bad\x01").has_value());
    EXPECT_FALSE(long_term_key(PasswordAlgorithm::kMd5, "u", "", "p").has_value());
    EXPECT_FALSE(long_term_key(static_cast<PasswordAlgorithm>(3), "u", "r", "p").has_value());
}

TEST(Userhash, Rfc8489AppendixB1) {
    // USERHASH value printed in RFC 8489 Appendix B.1.
    const std::array<uint8_t, 32> expected = {
        0x4a, 0x3c, 0xf3, 0x8f, 0xef, 0x69, 0x92, 0xbd,
        0xa9, 0x52, 0xc6, 0x78, 0x04, 0x17, 0xda, 0x0f,
        0x24, 0x81, 0x94, 0x15, 0x56, 0x9e, 0x60, 0xb2,
        0x05, 0xc4, 0x6e, 0x41, 0x40, 0x7f, 0x17, 0x04};
    EXPECT_EQ(userhash(kMatrixUser, "example.org"), expected);
    // The username is OpaqueString'd here (unlike in the key).
    EXPECT_EQ(userhash("e\u0301", "r"), userhash("\u00e9", "r"));
    EXPECT_FALSE(userhash("", "r").has_value());
}

TEST(Base64, Rfc4648Vectors) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", ""},         {"f", "Zg=="},       {"fo", "Zm8="},      {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (const auto& [plain, encoded] : cases) {
        const auto* p = reinterpret_cast<const uint8_t*>(plain.data());
        EXPECT_EQ(base64_encode({p, plain.size()}), encoded);
        EXPECT_EQ(base64_decode(encoded), plain);
    }
}

TEST(Base64, RoundTripsBinary) {
    std::vector<uint8_t> data;
    for (size_t n = 0; n < 70; ++n) {
        const std::string text = base64_encode(data);
        EXPECT_EQ(text.size(), (n + 2) / 3 * 4);
        const auto back = base64_decode(text);
        ASSERT_TRUE(back.has_value()) << n;
        EXPECT_EQ(*back, std::string(data.begin(), data.end())) << n;
        data.push_back(static_cast<uint8_t>(n * 37 + (n % 3 == 0 ? 0 : 0x80)));
    }
    const std::array<uint8_t, 3> zeros = {0, 0, 0};
    EXPECT_EQ(base64_decode(base64_encode(zeros)), std::string(3, '\0'));
}

TEST(Base64, RejectsInvalidInput) {
    for (const char* bad : {"Zg=", "Zg", "Zm9vY", "Zg==Zg==", "Z===", "====", "Zh==", "Zm9=",
                            " Zg==", "Zg== ", "Zm9v\n", "Zm9-", "Zm9_", "Zg=a"}) {
        EXPECT_FALSE(base64_decode(bad).has_value()) << bad;
    }
    EXPECT_FALSE(base64_decode(std::string_view("Zm\0v", 4)).has_value());
}

}  // namespace
}  // namespace turn::auth
