// EXPECT_SAME / ASSERT_SAME: EXPECT_EQ for the library's error enums and
// addresses, printing "2 (bad address family)" or "[::1]:5" on failure
// instead of gtest's "1-byte object <02>".
//
// Why not a PrintTo overload: gtest's printer for a type is a template
// instantiated in every test file that compares that type. A PrintTo visible
// in some files and not in others makes those instantiations differ (an ODR
// violation), and the linker keeps one of them at random. A predicate
// formatter belongs to the files that use it, so nothing can clash.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "net/address.h"
#include "stun/attributes.h"
#include "stun/message.h"
#include "turn/channel_data.h"

namespace turn::testutil {

template <typename E>
std::string describe_enum(E e, std::string_view name) {
    return std::to_string(static_cast<int>(e)) + " (" + std::string(name) + ")";
}
inline std::string describe(stun::ParseError e) { return describe_enum(e, stun::to_string(e)); }
inline std::string describe(stun::AttrError e) { return describe_enum(e, stun::to_string(e)); }
inline std::string describe(ChannelDataError e) { return describe_enum(e, to_string(e)); }
inline std::string describe(const Address& a) {
    return a.family == Family::kNone ? std::string("<no address>") : a.to_string();
}
inline std::string describe(const std::optional<Address>& a) {
    return a.has_value() ? describe(*a) : std::string("nullopt");
}

template <typename A, typename B>
::testing::AssertionResult same(const char* a_expr, const char* b_expr, const A& a, const B& b) {
    if (a == b) {
        return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "Expected equality of these values:\n  " << a_expr << "\n    Which is: " << describe(a)
           << "\n  " << b_expr << "\n    Which is: " << describe(b);
}

}  // namespace turn::testutil

#define EXPECT_SAME(a, b) EXPECT_PRED_FORMAT2(::turn::testutil::same, a, b)
#define ASSERT_SAME(a, b) ASSERT_PRED_FORMAT2(::turn::testutil::same, a, b)
