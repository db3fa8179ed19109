// Unit tests for Value: type names, zero values, the text form and the conversions applied when a
// value is assigned to a typed variable.
#include "fanout/value.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace fanout {
namespace {

DateTime At(std::string_view iso) {
  auto t = ParseDateTime(iso);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : DateTime{};
}

Value Convert(const Value& v, ValueType target) {
  auto r = v.ConvertTo(target);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : Value();
}

std::string ConvertError(const Value& v, ValueType target) {
  auto r = v.ConvertTo(target);
  EXPECT_FALSE(r.ok()) << "converted to " << r->ToString();
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  return r.status().message();
}

TEST(ValueTypeTest, NamesRoundTrip) {
  for (ValueType t : {ValueType::kString, ValueType::kInt, ValueType::kDouble, ValueType::kBool,
                      ValueType::kDateTime, ValueType::kList}) {
    auto parsed = ParseValueType(ValueTypeName(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_STREQ(ValueTypeName(ValueType::kDateTime), "datetime");
}

TEST(ValueTypeTest, UnknownNameListsTheAllowedOnes) {
  auto parsed = ParseValueType("integer");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("'integer'"), std::string::npos);
  EXPECT_NE(parsed.status().message().find("string, int, double, bool, datetime, list"),
            std::string::npos);
}

TEST(ValueTest, DefaultsAreZeroValues) {
  EXPECT_EQ(Value::Default(ValueType::kString), Value(""));
  EXPECT_EQ(Value::Default(ValueType::kInt), Value(0));
  EXPECT_EQ(Value::Default(ValueType::kDouble), Value(0.0));
  EXPECT_EQ(Value::Default(ValueType::kBool), Value(false));
  EXPECT_EQ(Value::Default(ValueType::kDateTime), Value(DateTime{}));
  EXPECT_EQ(Value::Default(ValueType::kList), Value(Value::List{}));
  EXPECT_TRUE(Value().is(ValueType::kString));
}

TEST(ValueTest, ToStringOfScalars) {
  EXPECT_EQ(Value("abc").ToString(), "abc");
  EXPECT_EQ(Value(-42).ToString(), "-42");
  EXPECT_EQ(Value(std::numeric_limits<int64_t>::min()).ToString(), "-9223372036854775808");
  EXPECT_EQ(Value(true).ToString(), "true");
  EXPECT_EQ(Value(false).ToString(), "false");
  EXPECT_EQ(Value(At("2026-11-26T03:04:05.123456Z")).ToString(), "2026-11-26T03:04:05.123456Z");
}

TEST(ValueTest, DoubleToStringIsShortestRoundTrip) {
  EXPECT_EQ(Value(1.5).ToString(), "1.5");
  EXPECT_EQ(Value(0.1).ToString(), "0.1");
  EXPECT_EQ(Value(0.1 + 0.2).ToString(), "0.30000000000000004");
  EXPECT_EQ(Value(2.0).ToString(), "2");
  EXPECT_EQ(Value(-0.25).ToString(), "-0.25");
  EXPECT_EQ(Value(1e300).ToString(), "1e+300");
  EXPECT_EQ(Value(-0.0).ToString(), "0") << "CEILING(-0.5) shows 0, as in SSIS";
  for (double d : {1.0 / 3, 123456.789, 5e-324, 1.7976931348623157e308}) {
    auto back = Value(Value(d).ToString()).ConvertTo(ValueType::kDouble);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->as_double(), d);
  }
}

TEST(ValueTest, ListToStringIsJsonLike) {
  Value list(Value::List{Value("eu"), Value("us"), Value(3), Value(Value::List{Value(true)})});
  EXPECT_EQ(list.ToString(), "[eu, us, 3, [true]]");
  EXPECT_EQ(Value(Value::List{}).ToString(), "[]");
}

TEST(ValueTest, ListToStringQuotesOnlyElementsThatNeedIt) {
  Value list(
      Value::List{Value("a, b"), Value(""), Value(" x"), Value("say \"hi\""), Value("plain")});
  EXPECT_EQ(list.ToString(), R"(["a, b", "", " x", "say \"hi\"", plain])");
}

TEST(ValueConvertTest, SameTypeIsIdentity) {
  EXPECT_EQ(Convert(Value(7), ValueType::kInt), Value(7));
  EXPECT_EQ(Convert(Value("x"), ValueType::kString), Value("x"));
}

TEST(ValueConvertTest, AnythingToString) {
  EXPECT_EQ(Convert(Value(42), ValueType::kString), Value("42"));
  EXPECT_EQ(Convert(Value(1.25), ValueType::kString), Value("1.25"));
  EXPECT_EQ(Convert(Value(true), ValueType::kString), Value("true"));
  EXPECT_EQ(Convert(Value(Value::List{Value("a")}), ValueType::kString), Value("[a]"));
}

TEST(ValueConvertTest, BetweenNumbers) {
  EXPECT_EQ(Convert(Value(3), ValueType::kDouble), Value(3.0));
  EXPECT_EQ(Convert(Value(3.0), ValueType::kInt), Value(3));
  EXPECT_EQ(Convert(Value(-1e15), ValueType::kInt), Value(int64_t{-1000000000000000}));
  EXPECT_NE(ConvertError(Value(1.5), ValueType::kInt).find("not a whole number"),
            std::string::npos);
  EXPECT_NE(ConvertError(Value(1e19), ValueType::kInt).find("out of the 64-bit range"),
            std::string::npos);
  ConvertError(Value(std::nan("")), ValueType::kInt);
  ConvertError(Value(std::numeric_limits<double>::infinity()), ValueType::kInt);
}

TEST(ValueConvertTest, NumbersAndBools) {
  EXPECT_EQ(Convert(Value(0), ValueType::kBool), Value(false));
  EXPECT_EQ(Convert(Value(-3), ValueType::kBool), Value(true));
  EXPECT_EQ(Convert(Value(0.5), ValueType::kBool), Value(true));
  // TRUE is -1 in SSIS's expression language, which ported packages' arithmetic relies on.
  EXPECT_EQ(Convert(Value(true), ValueType::kInt), Value(-1));
  EXPECT_EQ(Convert(Value(true), ValueType::kDouble), Value(-1.0));
  EXPECT_EQ(Convert(Value(false), ValueType::kInt), Value(0));
  EXPECT_EQ(Convert(Value(false), ValueType::kDouble), Value(0.0));
}

TEST(ValueConvertTest, StringToInt) {
  EXPECT_EQ(Convert(Value("42"), ValueType::kInt), Value(42));
  EXPECT_EQ(Convert(Value("-7"), ValueType::kInt), Value(-7));
  EXPECT_EQ(Convert(Value("+7"), ValueType::kInt), Value(7));
  EXPECT_EQ(Convert(Value(" 12\n"), ValueType::kInt), Value(12));  // captured stdout
  EXPECT_EQ(Convert(Value("12.0"), ValueType::kInt), Value(12));
  EXPECT_EQ(Convert(Value("9223372036854775807"), ValueType::kInt),
            Value(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(ConvertError(Value("abc"), ValueType::kInt), "cannot convert string 'abc' to int");
  EXPECT_NE(ConvertError(Value("12.5"), ValueType::kInt).find("not a whole number"),
            std::string::npos);
  EXPECT_NE(ConvertError(Value("9223372036854775808"), ValueType::kInt).find("64-bit"),
            std::string::npos);
  ConvertError(Value(""), ValueType::kInt);
  ConvertError(Value("12abc"), ValueType::kInt);
  ConvertError(Value("+-1"), ValueType::kInt);
}

TEST(ValueConvertTest, StringToDouble) {
  EXPECT_EQ(Convert(Value("1.5"), ValueType::kDouble), Value(1.5));
  EXPECT_EQ(Convert(Value("1e3"), ValueType::kDouble), Value(1000.0));
  EXPECT_EQ(Convert(Value(" -2 "), ValueType::kDouble), Value(-2.0));
  EXPECT_EQ(ConvertError(Value("1.5x"), ValueType::kDouble),
            "cannot convert string '1.5x' to double");
}

TEST(ValueConvertTest, StringToBool) {
  for (const char* t : {"true", "TRUE", "True", "1", " true\n"}) {
    EXPECT_EQ(Convert(Value(t), ValueType::kBool), Value(true)) << t;
  }
  for (const char* f : {"false", "FALSE", "0"}) {
    EXPECT_EQ(Convert(Value(f), ValueType::kBool), Value(false)) << f;
  }
  EXPECT_NE(ConvertError(Value("yes"), ValueType::kBool).find("use true, false, 1 or 0"),
            std::string::npos);
}

TEST(ValueConvertTest, StringToDateTime) {
  EXPECT_EQ(Convert(Value("2026-11-26"), ValueType::kDateTime), Value(At("2026-11-26T00:00:00Z")));
  EXPECT_EQ(Convert(Value("2026-11-26T03:04:05+01:00"), ValueType::kDateTime),
            Value(At("2026-11-26T02:04:05Z")));
  std::string error = ConvertError(Value("tomorrow"), ValueType::kDateTime);
  EXPECT_NE(error.find("cannot convert to datetime"), std::string::npos);
  EXPECT_NE(error.find("ISO 8601"), std::string::npos);
}

TEST(ParseDateTimeTest, TakesTheOffsetFormsOfIso8601AndPostgres) {
  DateTime utc = At("2026-11-26T01:04:05Z");
  EXPECT_EQ(At("2026-11-26T03:04:05+02:00"), utc);
  EXPECT_EQ(At("2026-11-26T03:04:05+0200"), utc);
  EXPECT_EQ(At("2026-11-26 03:04:05+02"), utc);  // PostgreSQL's timestamptz text
  EXPECT_EQ(At("2026-11-26 01:04:05.5+00"), utc + std::chrono::milliseconds(500));
  EXPECT_EQ(At("2026-11-25T22:34:05-02:30"), utc);
  for (const char* bad : {"2026-11-26T03:04:05+2", "2026-11-26T03:04:05+02:", "2026-11-26T03:04:05+02:7",
                          "2026-11-26T03:04:05+25:00", "2026-11-26T03:04:05+0260",
                          // Signs where digits belong once read as negative hours and minutes.
                          "2026-11-26 -1:-5", "2026-11-26T+1:05", "2026-+1-26", "2026-11-26T03:04:-1"}) {
    EXPECT_FALSE(ParseDateTime(bad).ok()) << bad;
  }
}

// from_chars reads "nan" and "inf": a double that is not a number is refused as it is in YAML.
TEST(ValueConvertTest, StringToDoubleRefusesNanAndInfinity) {
  for (const char* bad : {"nan", "NaN", "inf", "-inf", "infinity", "1e400"}) {
    EXPECT_NE(ConvertError(Value(bad), ValueType::kDouble).find("cannot convert"), std::string::npos)
        << bad;
  }
  EXPECT_EQ(Convert(Value("-1.5e3"), ValueType::kDouble), Value(-1500.0));
}

TEST(ValueConvertTest, DateTimeRoundTripsThroughString) {
  Value t(At("2026-02-03T04:05:06.000007Z"));
  EXPECT_EQ(Convert(Convert(t, ValueType::kString), ValueType::kDateTime), t);
}

TEST(ValueConvertTest, StringToList) {
  EXPECT_EQ(Convert(Value("[eu, us, apac]"), ValueType::kList),
            Value(Value::List{Value("eu"), Value("us"), Value("apac")}));
  EXPECT_EQ(Convert(Value(" [] "), ValueType::kList), Value(Value::List{}));
  EXPECT_EQ(Convert(Value("[a, [b, c]]"), ValueType::kList),
            Value(Value::List{Value("a"), Value(Value::List{Value("b"), Value("c")})}));
  ConvertError(Value("eu, us"), ValueType::kList);
  ConvertError(Value("[a, b"), ValueType::kList);
  ConvertError(Value("[a,,b]"), ValueType::kList);
  ConvertError(Value("[a] x"), ValueType::kList);
  ConvertError(Value("[\"a]"), ValueType::kList);
}

TEST(ValueConvertTest, ListOfStringsRoundTripsThroughString) {
  Value list(Value::List{Value("a, b"), Value(""), Value("c\\d"), Value("\"q\""), Value("x y")});
  EXPECT_EQ(Convert(Convert(list, ValueType::kString), ValueType::kList), list);
}

TEST(ValueConvertTest, ImpossibleConversionsFail) {
  EXPECT_EQ(ConvertError(Value(Value::List{}), ValueType::kInt),
            "cannot convert list [...] to int");
  ConvertError(Value(At("2026-01-01")), ValueType::kInt);
  ConvertError(Value(true), ValueType::kDateTime);
  ConvertError(Value(5), ValueType::kList);
  ConvertError(Value(5), ValueType::kDateTime);
}

TEST(ValueConvertTest, ErrorsDoNotQuoteLongValuesInFull) {
  std::string long_text(500, 'x');
  std::string error = ConvertError(Value(long_text), ValueType::kInt);
  EXPECT_LT(error.size(), 100u);
  EXPECT_NE(error.find("..."), std::string::npos);
}

}  // namespace
}  // namespace fanout
