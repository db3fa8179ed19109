// Tests of parameter values as JSON: what a child in another process or on an agent gets.
#include "common/param_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace fanout {
namespace {

TEST(ParamJsonTest, ListItemsKeepTheirTypesAndScalarsTravelAsText) {
  Value rows(Value::List{Value("eu"), Value(int64_t{1}), Value(2.5), Value(true),
                         Value(Value::List{Value("us"), Value(int64_t{-7})})});
  nlohmann::json json = *ParamToJson(rows);
  EXPECT_EQ(json, nlohmann::json::parse(R"(["eu", 1, 2.5, true, ["us", -7]])"));
  auto back = ParamFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, rows);

  // A scalar goes as its text: the child converts it to the type it declares.
  EXPECT_EQ(*ParamToJson(Value(int64_t{42})), nlohmann::json("42"));
  // JSON has no NaN: it goes as its text rather than as null.
  Value odd(Value::List{Value(std::numeric_limits<double>::quiet_NaN())});
  EXPECT_EQ(*ParamToJson(odd), nlohmann::json::parse(R"(["nan"])"));
}

// JSON holds only UTF-8 (nlohmann threw, aborting the parent, at a Latin-1 file name): such a
// value is refused, saying where, without showing it (it may be a secret).
TEST(ParamJsonTest, TextThatIsNotUtf8IsRefusedSayingWhere) {
  for (const Value& value : {Value("caf\xe9.csv"), Value(Value::List{Value("ok"), Value(
                                                        Value::List{Value("caf\xe9.csv")})})}) {
    auto json = ParamToJson(value);
    ASSERT_FALSE(json.ok());
    EXPECT_NE(json.status().message().find("not UTF-8 text (byte 3 is 0xE9)"), std::string::npos)
        << json.status().message();
    if (value.is(ValueType::kList)) {
      EXPECT_TRUE(json.status().message().starts_with("value 2 of its list"))
          << json.status().message();
    }
    EXPECT_EQ(json.status().message().find("caf"), std::string::npos) << json.status().message();
  }
}

TEST(ParamJsonTest, NullsObjectsAndHugeNumbersAreRefusedSayingWhat) {
  for (const char* text : {"null", R"({"a": 1})", R"(["a", [null]])"}) {
    auto v = ParamFromJson(nlohmann::json::parse(text));
    ASSERT_FALSE(v.ok()) << text;
    EXPECT_NE(v.status().message().find("is no parameter value"), std::string::npos)
        << v.status().message();
  }
  auto huge = ParamFromJson(nlohmann::json::parse("18446744073709551615"));
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().message(), "18446744073709551615 is out of the 64-bit range");
  EXPECT_EQ(*ParamFromJson(nlohmann::json(5)), Value(int64_t{5}));
  // An environment ends a value at a NUL: the step would have seen "eu" of "eu\0us".
  auto nul = ParamFromJson(nlohmann::json::parse(R"(["ok", "eu\u0000us"])"));
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.status().message(), "a text holding a NUL byte (at byte 3), which no program's "
                                    "environment or argument can carry");
}

TEST(ParamJsonTest, ForEachScalarReachesEveryValueAtAnyDepthWithItsText) {
  nlohmann::json json = nlohmann::json::parse(R"(["a", 1234, ["b", [2.5]], true])");
  std::vector<std::string> seen;
  ForEachScalar(json, [&](nlohmann::json&, const std::string& text) { seen.push_back(text); });
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "1234", "b", "2.5", "true"}));
}

}  // namespace
}  // namespace fanout
