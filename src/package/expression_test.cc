// Unit tests for the expression language and `${...}` templates: lexing and parse errors with
// offsets, every operator and function, the type rules, assignment, and concurrent evaluation.
#include "fanout/expression.h"

#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace fanout {
namespace {

// A Scope over a map. Set converts to the type the variable already has, as the engine does with
// declared types.
class MapScope : public Scope {
 public:
  MapScope() = default;
  MapScope(std::initializer_list<std::pair<const std::string, Value>> vars) : vars_(vars) {}

  Result<Value> Get(std::string_view name) const override {
    auto it = vars_.find(name);
    if (it == vars_.end()) return NotFound("no such variable");
    return it->second;
  }

  Status Set(std::string_view name, const Value& value) override {
    auto it = vars_.find(name);
    if (it == vars_.end()) return NotFound("no such variable");
    auto converted = value.ConvertTo(it->second.type());
    if (!converted.ok()) return converted.status();
    it->second = *converted;
    return Status::Ok();
  }

  Value& operator[](const std::string& name) { return vars_[name]; }

 private:
  std::map<std::string, Value, std::less<>> vars_;
};

Expression::Options Bare() {
  Expression::Options options;
  options.bare_names = true;
  return options;
}

Expression::Options Assign() {
  Expression::Options options;
  options.allow_assignment = true;
  return options;
}

Value Eval(std::string_view text, Scope& scope, Expression::Options options = {}) {
  ExpressionError error;
  auto e = Expression::Parse(text, options, &error);
  EXPECT_TRUE(e.ok()) << text << ": " << e.status().ToString();
  if (!e.ok()) return Value("<parse error>");
  auto v = e->Evaluate(scope);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status().ToString();
  return v.ok() ? *v : Value("<evaluation error>");
}

Value Eval(std::string_view text) {
  MapScope scope;
  return Eval(text, scope);
}

// The message of an evaluation error (the expression must parse).
std::string EvalError(std::string_view text, Scope& scope, Expression::Options options = {}) {
  auto e = Expression::Parse(text, options);
  EXPECT_TRUE(e.ok()) << text << ": " << e.status().ToString();
  if (!e.ok()) return "<parse error>";
  auto v = e->Evaluate(scope);
  EXPECT_FALSE(v.ok()) << text << " gave " << v->ToString();
  if (v.ok()) return "<no error>";
  EXPECT_EQ(v.status().code(), Code::kInvalidArgument) << v.status().ToString();
  return v.status().message();
}

std::string EvalError(std::string_view text) {
  MapScope scope;
  return EvalError(text, scope);
}

ExpressionError ParseError(std::string_view text, Expression::Options options = {}) {
  ExpressionError error;
  auto e = Expression::Parse(text, options, &error);
  EXPECT_FALSE(e.ok()) << text << " parsed";
  if (e.ok()) return {};
  EXPECT_EQ(e.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(e.status().message(), error.message);
  return error;
}

DateTime At(std::string_view iso) {
  auto t = ParseDateTime(iso);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : DateTime{};
}

bool Contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- literals and variables

TEST(ExpressionLiteralTest, Numbers) {
  EXPECT_EQ(Eval("42"), Value(42));
  EXPECT_EQ(Eval("1.5"), Value(1.5));
  EXPECT_EQ(Eval("1e3"), Value(1000.0));
  EXPECT_EQ(Eval("2E-2"), Value(0.02));
  EXPECT_EQ(Eval(".5"), Value(0.5));
  EXPECT_EQ(Eval("-7"), Value(-7));
  EXPECT_EQ(Eval("9223372036854775807"), Value(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(Eval("-9223372036854775808"), Value(std::numeric_limits<int64_t>::min()));
}

TEST(ExpressionLiteralTest, StringsAndEscapes) {
  EXPECT_EQ(Eval(R"("plain")"), Value("plain"));
  EXPECT_EQ(Eval(R"("")"), Value(""));
  EXPECT_EQ(Eval(R"("q\"q \\ a\nb\tc\rd")"), Value("q\"q \\ a\nb\tc\rd"));
  EXPECT_EQ(Eval("\"h\xC3\xA9llo\""), Value("h\xC3\xA9llo"));
}

TEST(ExpressionLiteralTest, BooleansAreCaseInsensitive) {
  EXPECT_EQ(Eval("TRUE"), Value(true));
  EXPECT_EQ(Eval("true"), Value(true));
  EXPECT_EQ(Eval("False"), Value(false));
  EXPECT_EQ(Eval("FALSE"), Value(false));
}

TEST(ExpressionVariableTest, AllSpellingsOfAName) {
  MapScope scope{{"rows", Value(5)}, {"System::StartTime", Value("t0")}, {"my-var", Value(1)}};
  EXPECT_EQ(Eval("@rows", scope), Value(5));
  EXPECT_EQ(Eval("@[User::rows]", scope), Value(5));
  EXPECT_EQ(Eval("@User::rows", scope), Value(5));
  EXPECT_EQ(Eval("@[rows]", scope), Value(5));
  EXPECT_EQ(Eval("@[System::StartTime]", scope), Value("t0"));
  EXPECT_EQ(Eval("@System::StartTime", scope), Value("t0"));
  EXPECT_EQ(Eval("@[my-var]", scope), Value(1));
}

TEST(ExpressionVariableTest, AtNameStopsAtMinus) {
  MapScope scope{{"n", Value(5)}};
  EXPECT_EQ(Eval("@n-1", scope), Value(4));
  EXPECT_EQ(Eval("@n*@n", scope), Value(25));
}

TEST(ExpressionVariableTest, VariablesAreListedOnceInFirstSeenOrder) {
  auto e = Expression::Parse("@b + @[User::a] + @b + @[System::X] + LEN(@c)");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->variables(), (std::vector<std::string>{"b", "a", "System::X", "c"}));
  EXPECT_FALSE(e->is_assignment());
  EXPECT_EQ(e->text(), "@b + @[User::a] + @b + @[System::X] + LEN(@c)");
}

TEST(ExpressionVariableTest, BareNamesOnlyWhenAllowed) {
  MapScope scope{{"run_date", Value("2026-11-26")},
                 {"region", Value("eu")},
                 {"n", Value(2)},
                 {"len", Value(9)}};
  EXPECT_EQ(Eval("run_date", scope, Bare()), Value("2026-11-26"));
  EXPECT_EQ(Eval("UPPER(region)", scope, Bare()), Value("EU"));
  EXPECT_EQ(Eval("@n + 1", scope, Bare()), Value(3));
  EXPECT_EQ(Eval("n * n", scope, Bare()), Value(4));
  // A function name that is not called is a variable; true/false stay keywords.
  EXPECT_EQ(Eval("len + LEN(region)", scope, Bare()), Value(11));
  EXPECT_EQ(Eval("true", scope, Bare()), Value(true));
  auto e = Expression::Parse("region + run_date", Bare());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->variables(), (std::vector<std::string>{"region", "run_date"}));

  ExpressionError error = ParseError("run_date");
  EXPECT_EQ(error.offset, 0u);
  EXPECT_EQ(error.message,
            "unknown name 'run_date' at column 1: expected a variable written @run_date, a "
            "function call, TRUE or FALSE");
}

TEST(ExpressionVariableTest, UnknownVariableIsAnEvaluationError) {
  MapScope scope{{"a", Value(1)}};
  EXPECT_EQ(EvalError("@a + @nope", scope), "evaluating '@a + @nope': unknown variable 'nope'");
}

TEST(ExpressionVariableTest, OtherScopeErrorsKeepTheirCode) {
  class BrokenScope : public Scope {
   public:
    Result<Value> Get(std::string_view) const override { return Unavailable("catalog down"); }
    Status Set(std::string_view, const Value&) override { return Unavailable("catalog down"); }
  } scope;
  auto e = Expression::Parse("@x");
  ASSERT_TRUE(e.ok());
  auto v = e->Evaluate(scope);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kUnavailable);
  EXPECT_EQ(v.status().message(), "evaluating '@x': reading variable 'x': catalog down");
}

// ---- operators

TEST(ExpressionOperatorTest, PrecedenceAndAssociativityFollowC) {
  EXPECT_EQ(Eval("1 + 2 * 3"), Value(7));
  EXPECT_EQ(Eval("(1 + 2) * 3"), Value(9));
  EXPECT_EQ(Eval("10 - 4 - 3"), Value(3));
  EXPECT_EQ(Eval("100 / 10 / 5"), Value(2));
  EXPECT_EQ(Eval("2 * 7 % 4"), Value(2));
  EXPECT_EQ(Eval("-2 * 3"), Value(-6));
  EXPECT_EQ(Eval("- (2 + 3)"), Value(-5));
  EXPECT_EQ(Eval("--4"), Value(4));
  EXPECT_EQ(Eval("1 + 2 < 4"), Value(true));
  EXPECT_EQ(Eval("1 < 2 == 2 < 3"), Value(true));
  EXPECT_EQ(Eval("!TRUE == FALSE"), Value(true));
  EXPECT_EQ(Eval("TRUE || FALSE && FALSE"), Value(true));
  EXPECT_EQ(Eval("(TRUE || FALSE) && FALSE"), Value(false));
  EXPECT_EQ(Eval("FALSE ? 1 : TRUE ? 2 : 3"), Value(2));
  EXPECT_EQ(Eval("TRUE ? FALSE ? 1 : 2 : 3"), Value(2));
  EXPECT_EQ(Eval("1 == 1 && 2 > 1 ? \"y\" : \"n\""), Value("y"));
}

TEST(ExpressionOperatorTest, IntegerArithmetic) {
  EXPECT_EQ(Eval("7 / 2"), Value(3));
  EXPECT_EQ(Eval("-7 / 2"), Value(-3));
  EXPECT_EQ(Eval("7 % 3"), Value(1));
  EXPECT_EQ(Eval("-7 % 3"), Value(-1));
  EXPECT_EQ(Eval("6 * 7"), Value(42));
  EXPECT_EQ(Eval("5 - 8"), Value(-3));
  EXPECT_TRUE(Eval("7 / 2").is(ValueType::kInt));
}

TEST(ExpressionOperatorTest, AnyDoubleMakesADouble) {
  EXPECT_EQ(Eval("7.0 / 2"), Value(3.5));
  EXPECT_EQ(Eval("7 / 2.0"), Value(3.5));
  EXPECT_EQ(Eval("1 + 0.5"), Value(1.5));
  EXPECT_EQ(Eval("2 * 1.5"), Value(3.0));
  EXPECT_EQ(Eval("1.5 - 1"), Value(0.5));
  EXPECT_EQ(Eval("7.5 % 2"), Value(1.5));
  EXPECT_EQ(Eval("-1.5"), Value(-1.5));
}

TEST(ExpressionOperatorTest, ArithmeticErrors) {
  EXPECT_EQ(EvalError("1 / 0"), "evaluating '1 / 0': division by zero");
  // An expression written over several lines (a YAML block scalar) is said on one.
  EXPECT_EQ(EvalError("1 /\n0"), "evaluating '1 / 0': division by zero");
  EXPECT_EQ(EvalError("1 % 0"), "evaluating '1 % 0': modulo by zero");
  // Long expressions are named in full, so the failing one can be found in the package.
  EXPECT_EQ(EvalError("1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 / 0"),
            "evaluating '1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 / 0': division by zero");
  EXPECT_EQ(EvalError("1.0 / 0"), "evaluating '1.0 / 0': division by zero");
  EXPECT_EQ(EvalError("1.5 % 0.0"), "evaluating '1.5 % 0.0': modulo by zero");
  EXPECT_TRUE(Contains(EvalError("9223372036854775807 + 1"), "integer overflow"));
  EXPECT_TRUE(Contains(EvalError("-9223372036854775808 - 1"), "integer overflow"));
  EXPECT_TRUE(Contains(EvalError("4611686018427387904 * 2"), "integer overflow"));
  EXPECT_TRUE(Contains(EvalError("-9223372036854775808 / -1"), "integer overflow"));
  MapScope huge{{"big", Value(1e308)}};
  EXPECT_TRUE(Contains(EvalError("@big * 10", huge), "double overflow in"));
  EXPECT_TRUE(Contains(EvalError("-@big - @big", huge), "double overflow in"));
  EXPECT_EQ(Eval("@big / 10", huge), Value(1e307));
  EXPECT_EQ(Eval("-9223372036854775808 % -1"), Value(0));
  MapScope scope{{"min", Value(std::numeric_limits<int64_t>::min())}};
  EXPECT_TRUE(Contains(EvalError("-@min", scope), "integer overflow"));
}

TEST(ExpressionOperatorTest, ArithmeticTypeErrorsNameBothTypes) {
  EXPECT_EQ(EvalError("\"a\" - 1"), "evaluating '\"a\" - 1': cannot apply '-' to string and int");
  EXPECT_TRUE(Contains(EvalError("TRUE + 1"), "cannot apply '+' to bool and int"));
  EXPECT_TRUE(Contains(EvalError("2 * FALSE"), "cannot apply '*' to int and bool"));
  EXPECT_TRUE(Contains(EvalError("\"6\" / \"3\""), "cannot apply '/' to string and string"));
  EXPECT_TRUE(Contains(EvalError("-\"x\""), "cannot apply '-' to string: expected a number"));
  EXPECT_TRUE(Contains(EvalError("!1"), "cannot apply '!' to int: expected a bool"));
}

TEST(ExpressionOperatorTest, PlusConcatenatesWhenEitherSideIsAString) {
  MapScope scope{{"d", Value(At("2026-11-26T00:00:00Z"))}, {"l", Value(Value::List{Value("a")})}};
  EXPECT_EQ(Eval(R"("a" + "b")"), Value("ab"));
  EXPECT_EQ(Eval(R"("n=" + 5)"), Value("n=5"));
  EXPECT_EQ(Eval(R"(1.5 + "x")"), Value("1.5x"));
  EXPECT_EQ(Eval(R"("" + TRUE)"), Value("true"));
  EXPECT_EQ(Eval(R"(1 + 2 + "x")"), Value("3x"));  // left to right
  EXPECT_EQ(Eval(R"("x" + 1 + 2)"), Value("x12"));
  EXPECT_EQ(Eval(R"("day " + @d)", scope), Value("day 2026-11-26T00:00:00.000000Z"));
  EXPECT_EQ(Eval(R"(@l + "!")", scope), Value("[a]!"));
}

TEST(ExpressionOperatorTest, NumbersCompareAcrossIntAndDouble) {
  EXPECT_EQ(Eval("1 == 1.0"), Value(true));
  EXPECT_EQ(Eval("1 != 1.5"), Value(true));
  EXPECT_EQ(Eval("2 > 1.5"), Value(true));
  EXPECT_EQ(Eval("2 < 1.5"), Value(false));
  EXPECT_EQ(Eval("2 >= 2"), Value(true));
  EXPECT_EQ(Eval("2 <= 1"), Value(false));
  EXPECT_EQ(Eval("9223372036854775807 > 9223372036854775806"), Value(true));
}

TEST(ExpressionOperatorTest, StringsCompareLexicographically) {
  EXPECT_EQ(Eval(R"("abc" == "abc")"), Value(true));
  EXPECT_EQ(Eval(R"("abc" == "ABC")"), Value(false));
  EXPECT_EQ(Eval(R"("abc" < "abd")"), Value(true));
  EXPECT_EQ(Eval(R"("b" > "abc")"), Value(true));
  EXPECT_EQ(Eval(R"("a" <= "a")"), Value(true));
  EXPECT_EQ(Eval(R"("2026-01-02" >= "2026-01-10")"), Value(false));
}

TEST(ExpressionOperatorTest, BoolsDatesAndListsCompare) {
  MapScope scope{{"a", Value(At("2026-01-01"))},
                 {"b", Value(At("2026-01-02"))},
                 {"l1", Value(Value::List{Value("x")})},
                 {"l2", Value(Value::List{Value("x")})}};
  EXPECT_EQ(Eval("TRUE == TRUE"), Value(true));
  EXPECT_EQ(Eval("TRUE != FALSE"), Value(true));
  EXPECT_EQ(Eval("FALSE < TRUE"), Value(true));
  EXPECT_EQ(Eval("@a < @b", scope), Value(true));
  EXPECT_EQ(Eval("@a == @a", scope), Value(true));
  EXPECT_EQ(Eval("@b >= @a", scope), Value(true));
  EXPECT_EQ(Eval("@l1 == @l2", scope), Value(true));
  EXPECT_EQ(Eval("@l1 != @l2", scope), Value(false));
  EXPECT_TRUE(Contains(EvalError("@l1 < @l2", scope), "cannot order lists with '<'"));
}

TEST(ExpressionOperatorTest, MismatchedComparisonNamesBothTypes) {
  MapScope scope{{"d", Value(At("2026-01-01"))}};
  EXPECT_EQ(EvalError(R"("1" == 1)"),
            "evaluating '\"1\" == 1': cannot compare string with int "
            "using '=='");
  EXPECT_TRUE(Contains(EvalError("TRUE < 1"), "cannot compare bool with int using '<'"));
  EXPECT_TRUE(Contains(EvalError(R"(@d > "2026")", scope),
                       "cannot compare datetime with string using '>'"));
}

TEST(ExpressionOperatorTest, LogicRequiresBoolsAndShortCircuits) {
  MapScope scope{{"n", Value(0)}, {"total", Value(10)}};
  EXPECT_EQ(Eval("TRUE && TRUE"), Value(true));
  EXPECT_EQ(Eval("TRUE && FALSE"), Value(false));
  EXPECT_EQ(Eval("FALSE || TRUE"), Value(true));
  EXPECT_EQ(Eval("FALSE || FALSE"), Value(false));
  EXPECT_EQ(Eval("!FALSE"), Value(true));
  // The right side is not evaluated, so neither the division nor the unknown name fails.
  EXPECT_EQ(Eval("@n > 0 && @total / @n > 1", scope), Value(false));
  EXPECT_EQ(Eval("@n == 0 || @missing", scope), Value(true));
  EXPECT_EQ(Eval("FALSE && 1", scope), Value(false));
  EXPECT_EQ(EvalError("1 && TRUE"),
            "evaluating '1 && TRUE': '&&' needs bool operands, got int on the left");
  EXPECT_TRUE(Contains(EvalError("FALSE || \"x\""),
                       "'||' needs bool operands, got string on the "
                       "right"));
}

TEST(ExpressionOperatorTest, ConditionalNeedsABoolAndEvaluatesOneBranch) {
  MapScope scope{{"n", Value(0)}};
  EXPECT_EQ(Eval("@n == 0 ? \"none\" : \"some\"", scope), Value("none"));
  EXPECT_EQ(Eval("@n == 0 ? 0 : 10 / @n", scope), Value(0));
  EXPECT_EQ(EvalError("1 ? 2 : 3"),
            "evaluating '1 ? 2 : 3': the condition before '?' must be a bool, got int");
}

// ---- functions

TEST(ExpressionFunctionTest, NamesAreCaseInsensitive) {
  EXPECT_EQ(Eval(R"(upper("a"))"), Value("A"));
  EXPECT_EQ(Eval(R"(Len("abc"))"), Value(3));
  EXPECT_EQ(Eval(R"(SubString("abc", 2, 1))"), Value("b"));
}

TEST(ExpressionFunctionTest, Len) {
  MapScope scope{{"items", Value(Value::List{Value("a"), Value("b")})}};
  EXPECT_EQ(Eval(R"(LEN("hello"))"), Value(5));
  EXPECT_EQ(Eval(R"(LEN(""))"), Value(0));
  EXPECT_EQ(Eval("LEN(\"h\xC3\xA9llo\")"), Value(5));  // characters, not bytes
  EXPECT_EQ(Eval("LEN(@items)", scope), Value(2));
  EXPECT_EQ(EvalError("LEN(5)"),
            "evaluating 'LEN(5)': LEN: the argument must be a string or a "
            "list, got int");
}

TEST(ExpressionFunctionTest, UpperLower) {
  EXPECT_EQ(Eval(R"(UPPER("MiXed 1"))"), Value("MIXED 1"));
  EXPECT_EQ(Eval(R"(LOWER("MiXed 1"))"), Value("mixed 1"));
  EXPECT_TRUE(Contains(EvalError("UPPER(1)"),
                       "UPPER: the argument must be a string, got int; cast it with (DT_WSTR, n)"));
}

TEST(ExpressionFunctionTest, Substring) {
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 1, 3))"), Value("abc"));
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 4, 2))"), Value("de"));
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 5, 100))"), Value("ef"));
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 10, 2))"), Value(""));
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 2, 0))"), Value(""));
  EXPECT_EQ(Eval(R"(SUBSTRING("abcdef", 2.0, 2))"), Value("bc"));
  EXPECT_EQ(Eval("SUBSTRING(\"h\xC3\xA9llo\", 2, 2)"), Value("\xC3\xA9l"));
  EXPECT_TRUE(Contains(EvalError(R"(SUBSTRING("abc", 0, 1))"),
                       "SUBSTRING: start must be 1 or more (positions are 1-based), got 0"));
  EXPECT_TRUE(Contains(EvalError(R"(SUBSTRING("abc", 1, -1))"),
                       "SUBSTRING: length must not be negative, got -1"));
  EXPECT_TRUE(Contains(EvalError(R"(SUBSTRING("abc", "1", 1))"),
                       "SUBSTRING: start must be a whole number, got string"));
  EXPECT_TRUE(Contains(EvalError(R"(SUBSTRING("abc", 1.5, 1))"),
                       "SUBSTRING: start must be a whole number, got 1.5"));
}

TEST(ExpressionFunctionTest, LeftRight) {
  EXPECT_EQ(Eval(R"(LEFT("abcdef", 2))"), Value("ab"));
  EXPECT_EQ(Eval(R"(LEFT("ab", 5))"), Value("ab"));
  EXPECT_EQ(Eval(R"(RIGHT("abcdef", 2))"), Value("ef"));
  EXPECT_EQ(Eval(R"(RIGHT("ab", 5))"), Value("ab"));
  EXPECT_EQ(Eval("RIGHT(\"h\xC3\xA9\", 1)"), Value("\xC3\xA9"));
  EXPECT_TRUE(Contains(EvalError(R"(LEFT("a", -1))"), "LEFT: length must not be negative"));
}

TEST(ExpressionFunctionTest, Replace) {
  EXPECT_EQ(Eval(R"(REPLACE("a-b-c", "-", "+"))"), Value("a+b+c"));
  EXPECT_EQ(Eval(R"(REPLACE("aaaa", "aa", "b"))"), Value("bb"));
  EXPECT_EQ(Eval(R"(REPLACE("abc", "x", "y"))"), Value("abc"));
  EXPECT_EQ(Eval(R"(REPLACE("abc", "b", ""))"), Value("ac"));
  EXPECT_TRUE(Contains(EvalError(R"(REPLACE("abc", "", "y"))"),
                       "REPLACE: find must not be "
                       "empty"));
}

TEST(ExpressionFunctionTest, TrimFamilyRemovesAllWhitespace) {
  EXPECT_EQ(Eval(R"(TRIM("  a b \n"))"), Value("a b"));
  EXPECT_EQ(Eval(R"(LTRIM("  a b \n"))"), Value("a b \n"));
  EXPECT_EQ(Eval(R"(RTRIM("\t a b \r\n"))"), Value("\t a b"));
  EXPECT_EQ(Eval(R"(TRIM("   "))"), Value(""));
}

TEST(ExpressionFunctionTest, FindString) {
  EXPECT_EQ(Eval(R"(FINDSTRING("a,b,c", ",", 1))"), Value(2));
  EXPECT_EQ(Eval(R"(FINDSTRING("a,b,c", ",", 2))"), Value(4));
  EXPECT_EQ(Eval(R"(FINDSTRING("a,b,c", ",", 3))"), Value(0));
  EXPECT_EQ(Eval(R"(FINDSTRING("a,b,c", ";", 1))"), Value(0));
  EXPECT_EQ(Eval(R"(FINDSTRING("a,b,c", "b"))"), Value(3));
  EXPECT_EQ(Eval(R"(FINDSTRING("aaa", "aa", 2))"), Value(2));
  EXPECT_EQ(Eval("FINDSTRING(\"\xC3\xA9x\", \"x\", 1)"), Value(2));
  EXPECT_TRUE(Contains(EvalError(R"(FINDSTRING("a", "a", 0))"),
                       "FINDSTRING: occurrence must be 1 or more, got 0"));
}

TEST(ExpressionFunctionTest, TokenAndTokenCount) {
  EXPECT_EQ(Eval(R"(TOKEN("a,b;;c", ",;", 2))"), Value("b"));
  EXPECT_EQ(Eval(R"(TOKEN("a,b;;c", ",;", 3))"), Value("c"));
  EXPECT_EQ(Eval(R"(TOKEN("a,b;;c", ",;", 4))"), Value(""));
  EXPECT_EQ(Eval(R"(TOKENCOUNT(",a,,b,", ","))"), Value(2));
  EXPECT_EQ(Eval(R"(TOKENCOUNT("", ","))"), Value(0));
}

TEST(ExpressionFunctionTest, NumericFunctions) {
  EXPECT_EQ(Eval("ABS(-5)"), Value(5));
  EXPECT_EQ(Eval("ABS(5)"), Value(5));
  EXPECT_EQ(Eval("ABS(-2.5)"), Value(2.5));
  EXPECT_TRUE(Contains(EvalError("ABS(-9223372036854775808)"), "ABS: integer overflow"));
  EXPECT_TRUE(Contains(EvalError(R"(ABS("1"))"),
                       "ABS: the argument must be a number, got "
                       "string"));
  EXPECT_EQ(Eval("CEILING(1.2)"), Value(2.0));
  EXPECT_EQ(Eval("CEILING(-1.2)"), Value(-1.0));
  EXPECT_EQ(Eval("FLOOR(-1.2)"), Value(-2.0));
  EXPECT_EQ(Eval("FLOOR(7)"), Value(7));
  EXPECT_EQ(Eval("ROUND(2.345, 2)"), Value(2.35));
  EXPECT_EQ(Eval("ROUND(2.5, 0)"), Value(3.0));
  EXPECT_EQ(Eval("ROUND(-2.5)"), Value(-3.0));
  EXPECT_EQ(Eval("ROUND(1234.5, -2)"), Value(1200.0));
  EXPECT_EQ(Eval("ROUND(17, 1)"), Value(17));
  EXPECT_EQ(Eval("ROUND(1250, -2)"), Value(1300));
  EXPECT_EQ(Eval("ROUND(-1250, -2)"), Value(-1300));
  EXPECT_EQ(Eval("ROUND(1249, -2)"), Value(1200));
}

TEST(ExpressionFunctionTest, GetDateIsUtcNow) {
  auto before =
      std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  Value now = Eval("GETDATE()");
  auto after =
      std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  ASSERT_TRUE(now.is(ValueType::kDateTime));
  EXPECT_GE(now.as_datetime(), before);
  EXPECT_LE(now.as_datetime(), after);
  EXPECT_TRUE(Eval("GETUTCDATE()").is(ValueType::kDateTime));
}

TEST(ExpressionFunctionTest, DateAdd) {
  MapScope scope{{"d", Value(At("2026-01-31T10:30:00Z"))}, {"s", Value("2026-03-01")}};
  EXPECT_EQ(Eval(R"(DATEADD("day", 1, @d))", scope), Value(At("2026-02-01T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("day", -31, @d))", scope), Value(At("2025-12-31T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("hour", 14, @d))", scope), Value(At("2026-02-01T00:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("minute", -31, @d))", scope), Value(At("2026-01-31T09:59:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("second", 90, @d))", scope), Value(At("2026-01-31T10:31:30Z")));
  EXPECT_EQ(Eval(R"(DATEADD("ms", 5, @d))", scope), Value(At("2026-01-31T10:30:00.005Z")));
  EXPECT_EQ(Eval(R"(DATEADD("week", 1, @d))", scope), Value(At("2026-02-07T10:30:00Z")));
  // Months clamp to the end of the shorter month, as in SQL Server.
  EXPECT_EQ(Eval(R"(DATEADD("month", 1, @d))", scope), Value(At("2026-02-28T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("mm", -2, @d))", scope), Value(At("2025-11-30T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("quarter", 1, @d))", scope), Value(At("2026-04-30T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("year", -2, @d))", scope), Value(At("2024-01-31T10:30:00Z")));
  EXPECT_EQ(Eval(R"(DATEADD("DAY", 1, "2024-02-28"))", scope), Value(At("2024-02-29")));
  // A string parameter such as run_date works directly.
  EXPECT_EQ(Eval(R"(DATEADD("dd", -1, @s))", scope), Value(At("2026-02-28")));
  EXPECT_TRUE(Contains(EvalError(R"(DATEADD("day", 1, "soon"))", scope),
                       "DATEADD: date: cannot convert to datetime"));
  EXPECT_TRUE(Contains(EvalError(R"(DATEADD("day", 1, 5))", scope),
                       "DATEADD: date must be a datetime, got int"));
  EXPECT_TRUE(Contains(EvalError(R"(DATEADD("year", 100000, @d))", scope), "out of range"));
  EXPECT_TRUE(
      Contains(EvalError(R"(DATEADD("ms", 9223372036854775807, @d))", scope), "out of range"));
}

TEST(ExpressionFunctionTest, DatePartDecidedAtRunTime) {
  MapScope scope{
      {"part", Value("hour")}, {"bad", Value("fortnight")}, {"d", Value(At("2026-01-01"))}};
  EXPECT_EQ(Eval("DATEADD(@part, 2, @d)", scope), Value(At("2026-01-01T02:00:00Z")));
  EXPECT_TRUE(
      Contains(EvalError("DATEADD(@bad, 2, @d)", scope), "DATEADD: unknown date part fortnight"));
}

TEST(ExpressionFunctionTest, DateDiffCountsBoundaries) {
  MapScope scope{{"a", Value(At("2026-01-31T23:59:00Z"))},
                 {"b", Value(At("2026-02-01T00:01:00Z"))}};
  EXPECT_EQ(Eval(R"(DATEDIFF("day", @a, @b))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEDIFF("day", @b, @a))", scope), Value(-1));
  EXPECT_EQ(Eval(R"(DATEDIFF("hour", @a, @b))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEDIFF("minute", @a, @b))", scope), Value(2));
  EXPECT_EQ(Eval(R"(DATEDIFF("second", @a, @b))", scope), Value(120));
  EXPECT_EQ(Eval(R"(DATEDIFF("ms", @a, @b))", scope), Value(120000));
  EXPECT_EQ(Eval(R"(DATEDIFF("month", @a, @b))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEDIFF("year", @a, @b))", scope), Value(0));
  EXPECT_EQ(Eval(R"(DATEDIFF("year", "2025-12-31", "2026-01-01"))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEDIFF("quarter", "2026-03-31", "2026-04-01"))", scope), Value(1));
  // 2026-01-03 is a Saturday, 2026-01-04 a Sunday: weeks start on Sunday.
  EXPECT_EQ(Eval(R"(DATEDIFF("week", "2026-01-03", "2026-01-04"))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEDIFF("week", "2026-01-04", "2026-01-10"))", scope), Value(0));
  EXPECT_EQ(Eval(R"(DATEDIFF("day", "1969-12-31", "1970-01-02"))", scope), Value(2));
}

TEST(ExpressionFunctionTest, DatePartYearMonthDay) {
  MapScope scope{{"d", Value(At("2026-11-26T03:04:05.678Z"))}};
  EXPECT_EQ(Eval("YEAR(@d)", scope), Value(2026));
  EXPECT_EQ(Eval("MONTH(@d)", scope), Value(11));
  EXPECT_EQ(Eval("DAY(@d)", scope), Value(26));
  EXPECT_EQ(Eval(R"(YEAR("2024-02-29"))", scope), Value(2024));
  EXPECT_EQ(Eval(R"(DATEPART("hh", @d))", scope), Value(3));
  EXPECT_EQ(Eval(R"(DATEPART("minute", @d))", scope), Value(4));
  EXPECT_EQ(Eval(R"(DATEPART("second", @d))", scope), Value(5));
  EXPECT_EQ(Eval(R"(DATEPART("millisecond", @d))", scope), Value(678));
  EXPECT_EQ(Eval(R"(DATEPART("quarter", @d))", scope), Value(4));
  EXPECT_EQ(Eval(R"(DATEPART("dayofyear", "2026-02-01"))", scope), Value(32));
  EXPECT_EQ(Eval(R"(DATEPART("weekday", "2026-11-26"))", scope), Value(5));  // Thursday
  EXPECT_EQ(Eval(R"(DATEPART("week", "2026-01-03"))", scope), Value(1));
  EXPECT_EQ(Eval(R"(DATEPART("week", "2026-01-04"))", scope), Value(2));
  EXPECT_TRUE(Contains(EvalError("YEAR(1)"), "YEAR: the argument must be a datetime, got int"));
}

TEST(ExpressionFunctionTest, ArgumentsAreEvaluatedLikeAnyExpression) {
  MapScope scope{{"s", Value("Hello, World")}};
  EXPECT_EQ(Eval(R"(UPPER(SUBSTRING(@s, FINDSTRING(@s, ",", 1) + 2, LEN(@s))))", scope),
            Value("WORLD"));
  EXPECT_EQ(EvalError(R"(UPPER(SUBSTRING(@s, 1 / 0, 1)))", scope),
            "evaluating 'UPPER(SUBSTRING(@s, 1 / 0, 1))': division by zero");
}

// ---- casts

TEST(ExpressionCastTest, ConvertLikeAssignment) {
  EXPECT_EQ(Eval(R"x((DT_I4)"42")x"), Value(42));
  EXPECT_EQ(Eval("(DT_I8)\"9000000000\""), Value(int64_t{9000000000}));
  EXPECT_EQ(Eval("(DT_I4)3.0"), Value(3));
  EXPECT_EQ(Eval("(DT_R8)3"), Value(3.0));
  EXPECT_EQ(Eval(R"x((DT_R8)"1.25")x"), Value(1.25));
  EXPECT_EQ(Eval("(DT_R4)2"), Value(2.0));
  EXPECT_EQ(Eval("(DT_BOOL)1"), Value(true));
  EXPECT_EQ(Eval(R"x((DT_BOOL)"false")x"), Value(false));
  // TRUE is -1 (all bits set) as in SSIS: an unsigned type's largest value.
  EXPECT_EQ(Eval("(DT_I4)TRUE"), Value(-1));
  EXPECT_EQ(Eval("(DT_UI1)TRUE"), Value(255));
  EXPECT_EQ(Eval("(DT_UI4)TRUE"), Value(int64_t{4294967295}));
  EXPECT_EQ(Eval("(DT_UI2)FALSE"), Value(0));
  EXPECT_EQ(Eval("(DT_WSTR, 10)42"), Value("42"));
  EXPECT_EQ(Eval("(DT_STR, 10, 1252)1.5"), Value("1.5"));
  EXPECT_EQ(Eval("(DT_WSTR,3)\"longer than three\""), Value("longer than three"));
  EXPECT_EQ(Eval(R"x((DT_DBTIMESTAMP)"2026-01-02 03:04:05")x"), Value(At("2026-01-02T03:04:05Z")));
  EXPECT_EQ(Eval(R"x((DT_DATE)"2026-01-02T03:04:05")x"), Value(At("2026-01-02T03:04:05Z")));
  EXPECT_EQ(Eval(R"x((DT_DBDATE)"2026-01-02T03:04:05")x"), Value(At("2026-01-02")));
  EXPECT_EQ(Eval("(dt_i4)\"7\""), Value(7));
}

TEST(ExpressionCastTest, BindsLikeAUnaryOperator) {
  EXPECT_EQ(Eval(R"x((DT_I4)"2" + 1)x"), Value(3));
  EXPECT_EQ(Eval(R"x((DT_WSTR, 5)1 + 2)x"), Value("12"));
  EXPECT_EQ(Eval(R"x((DT_WSTR, 5)(1 + 2))x"), Value("3"));
  EXPECT_EQ(Eval(R"x(-(DT_I4)"2")x"), Value(-2));
  EXPECT_EQ(Eval(R"x((DT_I4)(DT_R8)"2")x"), Value(2));
}

TEST(ExpressionCastTest, FailuresSayWhy) {
  EXPECT_EQ(EvalError(R"x((DT_I4)"abc")x"),
            "evaluating '(DT_I4)\"abc\"': (DT_I4): cannot convert string 'abc' to int");
  EXPECT_TRUE(Contains(EvalError("(DT_I4)1.5"), "not a whole number"));
  EXPECT_TRUE(Contains(EvalError("(DT_I4)5000000000"),
                       "(DT_I4): 5000000000 is out of range (-2147483648 to 2147483647)"));
  EXPECT_TRUE(Contains(EvalError("(DT_UI1)-1"), "(DT_UI1): -1 is out of range (0 to 255)"));
  EXPECT_TRUE(Contains(EvalError("(DT_DBTIMESTAMP)5"), "cannot convert int"));
}

// ---- parse errors

TEST(ExpressionParseErrorTest, MessagesGiveColumnAndWhatWasExpected) {
  ExpressionError e = ParseError("(1 + 2) * )");
  EXPECT_EQ(e.offset, 10u);
  EXPECT_EQ(e.message,
            "unexpected ')' at column 11: expected an operand (a number, string, variable, "
            "function call or '(')");

  e = ParseError("1 +");
  EXPECT_EQ(e.offset, 3u);
  EXPECT_TRUE(Contains(e.message,
                       "unexpected end of expression at column 4: expected an "
                       "operand"));

  e = ParseError("");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.message, "empty expression at column 1: expected an operand");

  e = ParseError("   ");
  EXPECT_EQ(e.offset, 0u);
}

TEST(ExpressionParseErrorTest, UnbalancedParentheses) {
  ExpressionError e = ParseError("(1 + 2");
  EXPECT_EQ(e.offset, 6u);
  EXPECT_EQ(e.message,
            "unexpected end of expression at column 7: expected ')' to close the '(' at column 1");
  e = ParseError("(1 + 2))");
  EXPECT_EQ(e.offset, 7u);
  EXPECT_EQ(e.message,
            "unexpected ')' at column 8: expected an operator or the end of the expression");
}

TEST(ExpressionParseErrorTest, TrailingGarbage) {
  ExpressionError e = ParseError("1 2");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message,
            "unexpected number 2 at column 3: expected an operator or the end of the expression");
  e = ParseError("@a @b");
  EXPECT_EQ(e.offset, 3u);
  EXPECT_TRUE(Contains(e.message, "unexpected variable @b"));
  e = ParseError("\"a\" \"b\"");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_TRUE(Contains(e.message, "unexpected string \"b\""));
}

TEST(ExpressionParseErrorTest, LexicalErrors) {
  ExpressionError e = ParseError(R"(1 + "abc)");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_EQ(e.message, "unterminated string at column 5: expected a closing '\"'");

  e = ParseError(R"("a\qb")");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message,
            "unknown escape '\\q' in string at column 3: expected one of \\\" \\\\ "
            "\\n \\t \\r");

  e = ParseError("1 & 2");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message,
            "unexpected '&' at column 3: expected '&&' (there are no bitwise "
            "operators)");

  e = ParseError("1 | 2");
  EXPECT_EQ(e.offset, 2u);

  e = ParseError("1 # 2");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message, "unexpected character '#' at column 3: expected an operand or an operator");

  e = ParseError("'x'");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_TRUE(Contains(e.message, "double quotes"));

  e = ParseError("12abc");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_TRUE(Contains(e.message, "unexpected 'a' after number 12"));

  e = ParseError("1.2.3");
  EXPECT_EQ(e.offset, 3u);

  e = ParseError("9223372036854775808");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_TRUE(Contains(e.message, "integer 9223372036854775808 is too large at column 1"));

  e = ParseError("1 + 99999999999999999999999");
  EXPECT_EQ(e.offset, 4u);

  e = ParseError("1e999");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_TRUE(Contains(e.message, "out of range"));
}

TEST(ExpressionParseErrorTest, VariableSyntax) {
  ExpressionError e = ParseError("1 + @");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_EQ(e.message,
            "'@' without a variable name at column 5: expected a name such as @rows "
            "or @[User::rows]");
  e = ParseError("@[User::x + 1");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.message, "unterminated '@[' at column 1: expected ']' to close the variable name");
  e = ParseError("@[] + 1");
  EXPECT_EQ(e.offset, 0u);
  e = ParseError("@[User::]");
  EXPECT_EQ(e.offset, 0u);
  // `@my-var` reads as `@my - var`: the way to write such a name is said.
  e = ParseError("@my-var + 1");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_EQ(e.message,
            "unknown name 'var' at column 5: a name with '-' or '.' is written @[my-var]");
  EXPECT_EQ(ParseError("@a.b.c").message,
            "unexpected character '.' at column 3: a name with '-' or '.' is written @[a.b.c]");
}

// Names may start with a digit; after '@' nothing else can follow.
TEST(ExpressionVariableTest, ANameMayStartWithADigit) {
  MapScope scope{{"1st", Value(1)}};
  EXPECT_EQ(Eval("@1st + 1", scope), Value(2));
}

TEST(ExpressionParseErrorTest, UnknownFunctionsAndArity) {
  ExpressionError e = ParseError("1 + FOO(1)");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_TRUE(Contains(e.message, "unknown function 'FOO' at column 5: expected one of ABS, "));
  EXPECT_TRUE(Contains(e.message, "SUBSTRING"));

  e = ParseError("UPPER(\"a\", \"b\")");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.message,
            "wrong number of arguments to UPPER at column 1: expected 1 (string), got 2");

  e = ParseError("  SUBSTRING(\"abc\", 1)");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message,
            "wrong number of arguments to SUBSTRING at column 3: expected 3 (string, "
            "start, length), got 2");

  e = ParseError("GETDATE(1)");
  EXPECT_EQ(e.message,
            "wrong number of arguments to GETDATE at column 1: expected no arguments, "
            "got 1");

  e = ParseError("ROUND()");
  EXPECT_EQ(e.message,
            "wrong number of arguments to ROUND at column 1: expected 1 to 2 (number, "
            "digits), got 0");

  e = ParseError("LEN(\"a\" \"b\")");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_EQ(e.message,
            "unexpected string \"b\" at column 9: expected ',' or ')' in the arguments "
            "of LEN (the '(' at column 4)");

  e = ParseError("UPPER");
  EXPECT_EQ(e.message, "function UPPER without arguments at column 1: expected '(' after UPPER");

  e = ParseError("LEN(1,)");
  EXPECT_EQ(e.offset, 6u);
}

TEST(ExpressionParseErrorTest, BadDatePartIsCaughtAtParseTime) {
  ExpressionError e = ParseError(R"(DATEADD("dya", 1, GETDATE()))");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_TRUE(Contains(e.message, "unknown date part \"dya\" at column 9: expected year, "));
  e = ParseError("DATEDIFF(1, GETDATE(), GETDATE())");
  EXPECT_EQ(e.offset, 9u);
  EXPECT_TRUE(Contains(e.message, "DATEDIFF needs a date part name"));
}

TEST(ExpressionParseErrorTest, Casts) {
  ExpressionError e = ParseError("(DT_FOO)1");
  EXPECT_EQ(e.offset, 1u);
  EXPECT_TRUE(Contains(e.message, "unknown cast type 'DT_FOO' at column 2: expected one of DT_I1"));
  e = ParseError("(DT_WSTR)1");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_EQ(e.message, "unexpected ')' at column 9: expected ',' and a length in (DT_WSTR, n)");
  e = ParseError("(DT_STR, 10)1");
  EXPECT_EQ(e.offset, 11u);
  EXPECT_TRUE(Contains(e.message, "expected ',' and a code page in (DT_STR, n, codepage)"));
  e = ParseError("(DT_I4 1");
  EXPECT_EQ(e.offset, 7u);
  EXPECT_TRUE(Contains(e.message, "expected ')' to close the cast at column 1"));
  e = ParseError("(DT_I4)");
  EXPECT_EQ(e.offset, 7u);
}

TEST(ExpressionParseErrorTest, Conditional) {
  ExpressionError e = ParseError("TRUE ? 1");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_EQ(
      e.message,
      "unexpected end of expression at column 9: expected ':' to go with the '?' at column 6");
}

TEST(ExpressionParseErrorTest, DeepNestingFailsCleanly) {
  std::string deep(5000, '(');
  ExpressionError e = ParseError(deep + "1");
  EXPECT_TRUE(Contains(e.message, "too deeply nested"));

  std::string nots(5000, '!');
  EXPECT_TRUE(Contains(ParseError(nots + "TRUE").message, "too deeply nested"));

  std::string chain = "1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_TRUE(Contains(ParseError(chain).message, "too long or too deeply nested"));

  std::string fine = "1";
  for (int i = 0; i < 500; ++i) fine += " + 1";
  EXPECT_EQ(Eval(fine), Value(501));
}

TEST(ExpressionParseErrorTest, ErrorOutputIsOptional) {
  auto e = Expression::Parse("1 +", Expression::Options{});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(Expression::Parse(")").ok());
}

// ---- assignment

TEST(ExpressionAssignTest, AssignsThroughTheScope) {
  MapScope scope{{"i", Value(1)}};
  auto e = Expression::Parse("@i = @i + 1", Assign());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(e->is_assignment());
  EXPECT_EQ(e->variables(), (std::vector<std::string>{"i"}));
  auto v = e->Evaluate(scope);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, Value(2));
  EXPECT_EQ(scope["i"], Value(2));
  ASSERT_TRUE(e->Evaluate(scope).ok());
  EXPECT_EQ(scope["i"], Value(3));
}

TEST(ExpressionAssignTest, ScopeConvertsToTheDeclaredType) {
  MapScope scope{{"i", Value(0)}, {"s", Value("")}};
  EXPECT_EQ(Eval("@[User::i] = \"42\"", scope, Assign()), Value("42"));
  EXPECT_EQ(scope["i"], Value(42));
  EXPECT_EQ(Eval("@s = 1.5", scope, Assign()), Value(1.5));
  EXPECT_EQ(scope["s"], Value("1.5"));
  EXPECT_EQ(EvalError("@i = \"x\"", scope, Assign()),
            "evaluating '@i = \"x\"': assigning to 'i': cannot convert string 'x' to int");
}

TEST(ExpressionAssignTest, AVariableNamedAsExpressionsNameIt) {
  for (const char* written : {"rows", "@rows", "@[rows]", "User::rows", "@User::rows",
                              "@[User::rows]"}) {
    EXPECT_EQ(VariableName(written), "rows") << written;
  }
  EXPECT_EQ(VariableName("@[System::StartTime]"), "System::StartTime");
}

TEST(ExpressionAssignTest, BareNameAssignment) {
  Expression::Options options = Assign();
  options.bare_names = true;
  MapScope scope{{"n", Value(1)}};
  EXPECT_EQ(Eval("n = n * 10", scope, options), Value(10));
  EXPECT_EQ(scope["n"], Value(10));
}

TEST(ExpressionAssignTest, UnknownTargetIsAnEvaluationError) {
  MapScope scope;
  EXPECT_EQ(EvalError("@zz = 1", scope, Assign()),
            "evaluating '@zz = 1': cannot assign to unknown variable 'zz'");
}

TEST(ExpressionAssignTest, OnlyWhenAllowedAndOnlyAtTheTop) {
  ExpressionError e = ParseError("@a = 1");
  EXPECT_EQ(e.offset, 3u);
  EXPECT_EQ(e.message,
            "unexpected '=' at column 4: assignment is only allowed in for-loop init "
            "and assign; use '==' to compare");

  e = ParseError("@a == 1 = 2");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_TRUE(Contains(e.message, "use '==' to compare"));

  e = ParseError("@a = @b = 1", Assign());
  EXPECT_EQ(e.offset, 8u);
  EXPECT_TRUE(Contains(e.message, "only one assignment"));

  e = ParseError("1 = 2", Assign());
  EXPECT_EQ(e.offset, 2u);

  e = ParseError("(@a = 1)", Assign());
  EXPECT_EQ(e.offset, 4u);
  EXPECT_TRUE(Contains(e.message,
                       "expected ')' to close the '(' at column 1; use '==' to "
                       "compare"));

  e = ParseError("@a =", Assign());
  EXPECT_EQ(e.offset, 4u);

  auto plain = Expression::Parse("@a == 1", Assign());
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->is_assignment());
}

// ---- the Expression object

TEST(ExpressionTest, DefaultConstructedIsHarmless) {
  Expression e;
  MapScope scope;
  EXPECT_EQ(e.text(), "");
  EXPECT_TRUE(e.variables().empty());
  EXPECT_FALSE(e.is_assignment());
  auto v = e.Evaluate(scope);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kFailedPrecondition);
}

TEST(ExpressionTest, CopiesShareTheParsedTree) {
  auto parsed = Expression::Parse("@x * 2");
  ASSERT_TRUE(parsed.ok());
  Expression copy = *parsed;
  MapScope scope{{"x", Value(21)}};
  auto v = copy.Evaluate(scope);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, Value(42));
  EXPECT_EQ(&copy.text(), &parsed->text());
}

TEST(ExpressionTest, ConcurrentEvaluationWithSeparateScopes) {
  auto parsed = Expression::Parse(
      R"(@i % 2 == 0 ? UPPER("even-" + (DT_WSTR, 20)@i) : SUBSTRING("odd", 1, 3) + @i)");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const Expression expression = *parsed;
  constexpr int kThreads = 8;
  constexpr int kIterations = 2000;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      MapScope scope{{"i", Value(0)}};
      for (int n = 0; n < kIterations; ++n) {
        int64_t i = t * kIterations + n;
        scope["i"] = Value(i);
        auto v = expression.Evaluate(scope);
        std::string expected = i % 2 == 0 ? "EVEN-" + std::to_string(i) : "odd" + std::to_string(i);
        if (!v.ok() || *v != Value(expected)) ++failures[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// ---- templates

Value Render(std::string_view text, Scope& scope) {
  auto t = Template::Parse(text);
  EXPECT_TRUE(t.ok()) << text << ": " << t.status().ToString();
  if (!t.ok()) return Value("<parse error>");
  auto v = t->Render(scope);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status().ToString();
  return v.ok() ? *v : Value("<evaluation error>");
}

ExpressionError TemplateError(std::string_view text) {
  ExpressionError error;
  auto t = Template::Parse(text, &error);
  EXPECT_FALSE(t.ok()) << text << " parsed";
  if (t.ok()) return {};
  EXPECT_EQ(t.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(t.status().message(), error.message);
  return error;
}

TEST(TemplateTest, ConstantText) {
  MapScope scope;
  auto t = Template::Parse("plain text, cost $5 {not a template}");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->is_constant());
  EXPECT_TRUE(t->variables().empty());
  EXPECT_EQ(*t->Render(scope), Value("plain text, cost $5 {not a template}"));
  EXPECT_EQ(*t->RenderString(scope), "plain text, cost $5 {not a template}");
  EXPECT_EQ(t->text(), "plain text, cost $5 {not a template}");

  auto empty = Template::Parse("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->is_constant());
  EXPECT_EQ(*empty->Render(scope), Value(""));
}

TEST(TemplateTest, ExactlyOnePieceKeepsItsType) {
  MapScope scope{{"n", Value(7)},
                 {"regions", Value(Value::List{Value("eu"), Value("us")})},
                 {"flag", Value(true)}};
  EXPECT_EQ(Render("${n}", scope), Value(7));
  EXPECT_EQ(Render("${regions}", scope), Value(Value::List{Value("eu"), Value("us")}));
  EXPECT_EQ(Render("${@n + 1}", scope), Value(8));
  EXPECT_EQ(Render("${ flag }", scope), Value(true));
  EXPECT_EQ(Render("${TRUE}", scope), Value(true));
  auto t = Template::Parse("${regions}");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->is_constant());
  EXPECT_EQ(*t->RenderString(scope), "[eu, us]");
}

TEST(TemplateTest, MixedTextIsAString) {
  MapScope scope{
      {"run_date", Value("2026-11-26")}, {"region", Value("eu")}, {"n", Value(1)}, {"m", Value(2)}};
  EXPECT_EQ(Render("/data/${run_date}/${UPPER(region)}.csv", scope),
            Value("/data/2026-11-26/EU.csv"));
  EXPECT_EQ(Render("${n}${m}", scope), Value("12"));
  EXPECT_EQ(Render("x${n}", scope), Value("x1"));
  EXPECT_EQ(Render("${n} ", scope), Value("1 "));
  EXPECT_EQ(Render("${@[User::n] + @m}!", scope), Value("3!"));
}

TEST(TemplateTest, DollarDollarBraceIsALiteral) {
  MapScope scope{{"x", Value("v")}};
  auto t = Template::Parse("$${x} and ${x}");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->variables(), (std::vector<std::string>{"x"}));
  EXPECT_EQ(*t->Render(scope), Value("${x} and v"));
  auto only = Template::Parse("$${x}");
  ASSERT_TRUE(only.ok());
  EXPECT_TRUE(only->is_constant());
  EXPECT_EQ(*only->Render(scope), Value("${x}"));
  EXPECT_EQ(Render("$$ and $", scope), Value("$$ and $"));
}

TEST(TemplateTest, BracesInsideStringsDoNotEndThePiece) {
  MapScope scope{{"x", Value("a}b{c")}};
  EXPECT_EQ(Render(R"(${REPLACE(x, "}", "")})", scope), Value("ab{c"));
  EXPECT_EQ(Render(R"([${REPLACE(x, "}", "\"}")}])", scope), Value("[a\"}b{c]"));
  EXPECT_EQ(Render(R"(${"{" + x + "}"})", scope), Value("{a}b{c}"));
}

TEST(TemplateTest, VariablesAcrossPiecesAreDeduplicated) {
  auto t = Template::Parse("${a}-${@b}-${a + c}-${System::StartTime}-${User::d}");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->variables(), (std::vector<std::string>{"a", "b", "c", "System::StartTime", "d"}));
}

// ResultType, which validate uses to refuse a `when` that cannot give a bool, must agree with
// what Evaluate gives whenever it names a type.
TEST(ExpressionTypeTest, ResultTypeAgreesWithEvaluation) {
  MapScope scope{{"n", Value(3)},     {"x", Value(2.5)},       {"s", Value("a,b")},
                 {"b", Value(true)},  {"d", Value(DateTime{})}, {"l", Value(Value::List{1, 2})}};
  const Expression::VariableTypes types = [&](std::string_view name) {
    auto v = scope.Get(name);
    return v.ok() ? std::optional<ValueType>(v->type()) : std::nullopt;
  };
  const std::vector<std::pair<std::string, std::optional<ValueType>>> cases = {
      {"1", ValueType::kInt},
      {"@n", ValueType::kInt},
      {"@n + 1", ValueType::kInt},
      {"@n % 2", ValueType::kInt},
      {"@n / 2.0", ValueType::kDouble},
      {"-@x", ValueType::kDouble},
      {"@s + @n", ValueType::kString},
      {"@n > 1", ValueType::kBool},
      {"@s == \"a\" || @b", ValueType::kBool},
      {"!@b", ValueType::kBool},
      {"@b ? 1 : 2", ValueType::kInt},
      {"@b ? 1 : \"one\"", std::nullopt},
      {"LEN(@l)", ValueType::kInt},
      {"TOKEN(@s, \",\", 2)", ValueType::kString},
      {"ABS(@x)", ValueType::kDouble},
      {"ROUND(@n)", ValueType::kInt},
      {"DATEADD(\"dd\", 1, @d)", ValueType::kDateTime},
      {"(DT_WSTR, 10)@n", ValueType::kString},
      {"(DT_BOOL)@n", ValueType::kBool},
      {"@l", ValueType::kList},
      {"@undeclared + 1", std::nullopt},
      {"@b + 1", std::nullopt},  // an error when it runs, whatever the values
  };
  for (const auto& [text, type] : cases) {
    auto e = Expression::Parse(text);
    ASSERT_TRUE(e.ok()) << text << ": " << e.status().message();
    EXPECT_EQ(e->ResultType(types), type) << text;
    if (!type) continue;
    auto v = e->Evaluate(scope);
    ASSERT_TRUE(v.ok()) << text << ": " << v.status().message();
    EXPECT_EQ(v->type(), *type) << text;
  }
  // An assignment gives the value assigned, before its variable's type converts it.
  Expression::Options assigning;
  assigning.allow_assignment = true;
  auto assign = Expression::Parse("@x = 1", assigning);
  ASSERT_TRUE(assign.ok());
  EXPECT_EQ(assign->ResultType(types), ValueType::kInt);
  auto assigned = assign->Evaluate(scope);
  ASSERT_TRUE(assigned.ok()) << assigned.status().message();
  EXPECT_EQ(assigned->type(), ValueType::kInt);
}

TEST(TemplateTest, UnterminatedPieceReportsItsOffset) {
  ExpressionError e = TemplateError("abc ${x");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_EQ(e.message, "unterminated '${' at column 5: expected '}'");
  e = TemplateError(R"(${"abc})");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.message,
            "unterminated '${' at column 1: expected '}' (the string at column 3 is "
            "not closed)");
  e = TemplateError("ok ${x} ${");
  EXPECT_EQ(e.offset, 8u);
}

TEST(TemplateTest, EmptyPieceIsAnError) {
  ExpressionError e = TemplateError("a ${} b");
  EXPECT_EQ(e.offset, 2u);
  EXPECT_EQ(e.message, "empty '${}' at column 3: expected an expression inside");
  EXPECT_EQ(TemplateError("${  }").offset, 0u);
}

TEST(TemplateTest, ExpressionErrorsPointIntoTheTemplate) {
  ExpressionError e = TemplateError("ab ${1 +}");
  EXPECT_EQ(e.offset, 8u);
  EXPECT_TRUE(Contains(e.message, "unexpected end of expression at column 9: expected an operand"));
  e = TemplateError("x ${UPPER(a, b)}");
  EXPECT_EQ(e.offset, 4u);
  EXPECT_TRUE(Contains(e.message, "wrong number of arguments to UPPER at column 5"));
  e = TemplateError("x ${n = 1}");
  EXPECT_EQ(e.offset, 6u);
}

TEST(TemplateTest, EvaluationErrorsNameTheExpression) {
  MapScope scope{{"n", Value(0)}};
  auto t = Template::Parse("x ${10 / n} y");
  ASSERT_TRUE(t.ok());
  auto v = t->Render(scope);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(v.status().message(), "evaluating '${10 / n}': division by zero");
  auto s = t->RenderString(scope);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "evaluating '${10 / n}': division by zero");

  auto single = Template::Parse("${missing}");
  ASSERT_TRUE(single.ok());
  auto m = single->Render(scope);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "evaluating '${missing}': unknown variable 'missing'");
}

TEST(TemplateTest, DefaultConstructedRendersEmpty) {
  Template t;
  MapScope scope;
  EXPECT_TRUE(t.is_constant());
  EXPECT_EQ(*t.Render(scope), Value(""));
  EXPECT_EQ(*t.RenderString(scope), "");
  EXPECT_EQ(t.text(), "");
}

}  // namespace
}  // namespace fanout
