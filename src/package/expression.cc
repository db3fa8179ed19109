// The SSIS-style expression language (fanout/expression.h): a lexer and precedence-climbing parser
// that build an immutable tree once, a tree walker that evaluates it against a Scope, and the
// `${...}` template scanner built on top of them.
#include "fanout/expression.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fanout {
namespace {

// ---------------------------------------------------------------------------------------------
// Small text helpers.

constexpr std::string_view kSpace = " \t\n\r\f\v";

bool IsAlpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }

// `a-b.c` when `text` holds `@a-b.c` (no spaces) and `at` is inside it, past the first part:
// the variable its writer meant, which needs `@[a-b.c]`. Else "".
std::string_view NameWithDashOrDot(std::string_view text, size_t at) {
  auto in_name = [&](size_t k) { return IsAlnum(text[k]) || text[k] == '-' || text[k] == '.'; };
  size_t begin = at, end = at;
  while (begin > 0 && in_name(begin - 1)) --begin;
  while (end < text.size() && in_name(end)) ++end;
  if (begin == 0 || begin == at || text[begin - 1] != '@') return {};
  return text.substr(begin, end - begin);
}
char AsciiUpper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }
char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](char x, char y) { return AsciiUpper(x) == AsciiUpper(y); });
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

// SSIS counts characters, not bytes; strings are UTF-8, so positions and lengths count code
// points (every byte that is not a continuation byte starts one).
bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

int64_t CodePointCount(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += IsContinuationByte(c) ? 0 : 1;
  return n;
}

// Byte offset at which code point `index` (0-based) starts, or s.size() past the end.
size_t ByteOffsetOf(std::string_view s, int64_t index) {
  int64_t seen = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!IsContinuationByte(s[i]) && ++seen == index) return i;
  }
  return s.size();
}

// Shortens source text quoted in an error message.
// `s` for a one-line message: line breaks and tabs (an expression written as a YAML block
// scalar) as spaces, cut after `max` bytes.
std::string Excerpt(std::string_view s, size_t max = 30) {
  std::string out(s.substr(0, max));
  std::replace_if(out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
  if (s.size() > max) out += "...";
  return out;
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// ---------------------------------------------------------------------------------------------
// Tokens.

enum class Tok {
  kEnd,
  kInt,
  kDouble,
  kString,
  kIdent,
  kVariable,
  kPlus,
  kMinus,
  kStar,
  kSlash,
  kPercent,
  kLParen,
  kRParen,
  kComma,
  kQuestion,
  kColon,
  kNot,
  kLess,
  kGreater,
  kLessEq,
  kGreaterEq,
  kEq,
  kNotEq,
  kAnd,
  kOr,
  kAssign
};

struct Token {
  Tok kind = Tok::kEnd;
  size_t offset = 0;  // into the text being parsed
  size_t length = 0;
  std::string text;  // identifier, variable name (as passed to Scope) or decoded string
  uint64_t int_value = 0;
  double double_value = 0;
};

// ---------------------------------------------------------------------------------------------
// The tree. Nodes are built once by the parser and never modified, so any number of threads may
// walk the same tree.

enum class Kind : uint8_t {
  kLiteral,
  kVariable,
  kUnary,
  kBinary,
  kConditional,
  kCall,
  kCast,
  kAssign
};

enum class Op : uint8_t {
  kNeg,
  kNot,
  kAdd,
  kSub,
  kMul,
  kDiv,
  kMod,
  kLess,
  kGreater,
  kLessEq,
  kGreaterEq,
  kEq,
  kNotEq,
  kAnd,
  kOr
};

const char* OpSymbol(Op op) {
  switch (op) {
    case Op::kNeg:
      return "-";
    case Op::kNot:
      return "!";
    case Op::kAdd:
      return "+";
    case Op::kSub:
      return "-";
    case Op::kMul:
      return "*";
    case Op::kDiv:
      return "/";
    case Op::kMod:
      return "%";
    case Op::kLess:
      return "<";
    case Op::kGreater:
      return ">";
    case Op::kLessEq:
      return "<=";
    case Op::kGreaterEq:
      return ">=";
    case Op::kEq:
      return "==";
    case Op::kNotEq:
      return "!=";
    case Op::kAnd:
      return "&&";
    case Op::kOr:
      return "||";
  }
  return "?";
}

enum class Fn : uint8_t {
  kAbs,
  kCeiling,
  kDateAdd,
  kDateDiff,
  kDatePart,
  kDay,
  kFindString,
  kFloor,
  kGetDate,
  kLeft,
  kLen,
  kLower,
  kLtrim,
  kMonth,
  kReplace,
  kRight,
  kRound,
  kRtrim,
  kSubstring,
  kToken,
  kTokenCount,
  kTrim,
  kUpper,
  kYear
};

struct FunctionInfo {
  std::string_view name;
  Fn fn;
  int min_args;
  int max_args;
  std::string_view params;  // for arity messages
};

constexpr int kMaxArgs = 3;

constexpr FunctionInfo kFunctions[] = {
    {"ABS", Fn::kAbs, 1, 1, "number"},
    {"CEILING", Fn::kCeiling, 1, 1, "number"},
    {"DATEADD", Fn::kDateAdd, 3, 3, "datepart, number, date"},
    {"DATEDIFF", Fn::kDateDiff, 3, 3, "datepart, startdate, enddate"},
    {"DATEPART", Fn::kDatePart, 2, 2, "datepart, date"},
    {"DAY", Fn::kDay, 1, 1, "date"},
    {"FINDSTRING", Fn::kFindString, 2, 3, "string, find, occurrence"},
    {"FLOOR", Fn::kFloor, 1, 1, "number"},
    {"GETDATE", Fn::kGetDate, 0, 0, ""},
    {"GETUTCDATE", Fn::kGetDate, 0, 0, ""},
    {"LEFT", Fn::kLeft, 2, 2, "string, length"},
    {"LEN", Fn::kLen, 1, 1, "string or list"},
    {"LOWER", Fn::kLower, 1, 1, "string"},
    {"LTRIM", Fn::kLtrim, 1, 1, "string"},
    {"MONTH", Fn::kMonth, 1, 1, "date"},
    {"REPLACE", Fn::kReplace, 3, 3, "string, find, replacement"},
    {"RIGHT", Fn::kRight, 2, 2, "string, length"},
    {"ROUND", Fn::kRound, 1, 2, "number, digits"},
    {"RTRIM", Fn::kRtrim, 1, 1, "string"},
    {"SUBSTRING", Fn::kSubstring, 3, 3, "string, start, length"},
    {"TOKEN", Fn::kToken, 3, 3, "string, delimiters, occurrence"},
    {"TOKENCOUNT", Fn::kTokenCount, 2, 2, "string, delimiters"},
    {"TRIM", Fn::kTrim, 1, 1, "string"},
    {"UPPER", Fn::kUpper, 1, 1, "string"},
    {"YEAR", Fn::kYear, 1, 1, "date"},
};

const FunctionInfo* FindFunction(std::string_view name) {
  for (const FunctionInfo& f : kFunctions) {
    if (EqualsIgnoreCase(f.name, name)) return &f;
  }
  return nullptr;
}

std::string FunctionList() {
  std::string out;
  for (const FunctionInfo& f : kFunctions) {
    if (!out.empty()) out += ", ";
    out += f.name;
  }
  return out;
}

// SSIS casts: `(DT_I4)x`. Integer casts check the range of the SSIS type; string casts accept and
// ignore their length and code page, since Fanout strings are unbounded UTF-8.
struct CastInfo {
  std::string_view name;
  ValueType target;
  int params;  // numbers after the type name: (DT_WSTR, 50), (DT_STR, 50, 1252)
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  bool date_only = false;
};

constexpr CastInfo kCasts[] = {
    {"DT_I1", ValueType::kInt, 0, -128, 127},
    {"DT_I2", ValueType::kInt, 0, -32768, 32767},
    {"DT_I4", ValueType::kInt, 0, -2147483648LL, 2147483647LL},
    {"DT_I8", ValueType::kInt, 0},
    {"DT_UI1", ValueType::kInt, 0, 0, 255},
    {"DT_UI2", ValueType::kInt, 0, 0, 65535},
    {"DT_UI4", ValueType::kInt, 0, 0, 4294967295LL},
    {"DT_UI8", ValueType::kInt, 0, 0},
    {"DT_R4", ValueType::kDouble, 0},
    {"DT_R8", ValueType::kDouble, 0},
    {"DT_BOOL", ValueType::kBool, 0},
    {"DT_WSTR", ValueType::kString, 1},
    {"DT_STR", ValueType::kString, 2},
    {"DT_DBTIMESTAMP", ValueType::kDateTime, 0},
    {"DT_DATE", ValueType::kDateTime, 0},
    {"DT_DBDATE", ValueType::kDateTime, 0, 0, 0, true},
};

const CastInfo* FindCast(std::string_view name) {
  for (const CastInfo& c : kCasts) {
    if (EqualsIgnoreCase(c.name, name)) return &c;
  }
  return nullptr;
}

// Date parts as SQL Server and SSIS spell them, with their abbreviations.
enum class DatePart : int8_t {
  kYear,
  kQuarter,
  kMonth,
  kDayOfYear,
  kDay,
  kWeek,
  kWeekday,
  kHour,
  kMinute,
  kSecond,
  kMillisecond
};

std::optional<DatePart> FindDatePart(std::string_view name) {
  struct Entry {
    std::string_view names;  // the full name, then its abbreviations
    DatePart part;
  };
  static constexpr Entry kParts[] = {
      {"year yy yyyy", DatePart::kYear},
      {"quarter qq q", DatePart::kQuarter},
      {"month mm m", DatePart::kMonth},
      {"dayofyear dy y", DatePart::kDayOfYear},
      {"day dd d", DatePart::kDay},
      {"week wk ww", DatePart::kWeek},
      {"weekday dw", DatePart::kWeekday},
      {"hour hh", DatePart::kHour},
      {"minute mi n", DatePart::kMinute},
      {"second ss s", DatePart::kSecond},
      {"millisecond ms", DatePart::kMillisecond},
  };
  for (const Entry& e : kParts) {
    std::string_view names = e.names;
    while (!names.empty()) {
      size_t space = names.find(' ');
      if (EqualsIgnoreCase(names.substr(0, space), name)) return e.part;
      names = space == std::string_view::npos ? std::string_view() : names.substr(space + 1);
    }
  }
  return std::nullopt;
}

constexpr std::string_view kDatePartHelp =
    "expected year, quarter, month, dayofyear, day, week, weekday, hour, minute, second or "
    "millisecond (or yy, qq, mm, dy, dd, wk, dw, hh, mi, ss, ms)";

struct Node {
  Kind kind = Kind::kLiteral;
  Op op = Op::kAdd;
  Fn fn = Fn::kAbs;
  const CastInfo* cast = nullptr;
  std::optional<DatePart> date_part;  // DATEADD/DATEDIFF/DATEPART with a literal part
  size_t offset = 0;                  // where the node starts in the parsed text
  int depth = 1;                      // height of the subtree, to bound evaluation recursion
  Value literal;
  std::string name;  // variable name for kVariable and kAssign
  std::vector<std::unique_ptr<const Node>> args;
};

using NodePtr = std::unique_ptr<const Node>;

// What Expression and Template share: the parsed tree of one expression and its metadata.
struct Compiled {
  std::string text;
  std::string origin;  // where it is written, for runtime errors ("" when unknown)
  NodePtr root;
  std::vector<std::string> variables;
  bool is_assignment = false;
};

// Deep nesting would overflow the stack of whichever thread evaluates; no real package needs it.
constexpr int kMaxNesting = 200;
constexpr int kMaxDepth = 1000;

// ---------------------------------------------------------------------------------------------
// Parsing.

class Parser {
 public:
  // `base` is where `text` starts inside a larger text (a template), so offsets and columns in
  // errors point into what the user wrote.
  Parser(std::string_view text, Expression::Options options, size_t base)
      : text_(text), options_(options), base_(base) {}

  Status Run(Compiled& out) {
    RETURN_IF_ERROR(Lex());
    auto root = ParseTop();
    if (!root.ok()) return root.status();
    out.text = std::string(text_);
    out.is_assignment = (*root)->kind == Kind::kAssign;
    out.root = std::move(root).value();
    out.variables = std::move(variables_);
    return Status::Ok();
  }

  const ExpressionError& error() const { return error_; }

 private:
  // ---- errors

  // "<what> at column <n>: <expected>"; columns are 1-based for people, offsets 0-based.
  Status Fail(size_t offset, std::string_view what, std::string_view expected) {
    error_.offset = base_ + offset;
    error_.message = fmt::format("{} at column {}: {}", what, base_ + offset + 1, expected);
    return InvalidArgument(error_.message);
  }

  std::string Describe(const Token& t) const {
    std::string_view src = text_.substr(t.offset, t.length);
    switch (t.kind) {
      case Tok::kEnd:
        return "end of expression";
      case Tok::kInt:
      case Tok::kDouble:
        return fmt::format("number {}", Excerpt(src));
      case Tok::kString:
        return fmt::format("string {}", Excerpt(src));
      case Tok::kIdent:
        return fmt::format("name '{}'", Excerpt(src));
      case Tok::kVariable:
        return fmt::format("variable {}", Excerpt(src));
      default:
        return fmt::format("'{}'", src);
    }
  }

  Status Unexpected(const Token& t, std::string expected) {
    if (t.kind == Tok::kAssign) expected += "; use '==' to compare";
    return Fail(t.offset, "unexpected " + Describe(t), expected);
  }

  // ---- lexer

  Status Lex() {
    size_t i = 0;
    const size_t n = text_.size();
    while (i < n) {
      char c = text_[i];
      if (kSpace.find(c) != std::string_view::npos) {
        ++i;
        continue;
      }
      Token t;
      t.offset = i;
      if (IsDigit(c) || (c == '.' && i + 1 < n && IsDigit(text_[i + 1]))) {
        RETURN_IF_ERROR(LexNumber(i, t));
      } else if (c == '"') {
        RETURN_IF_ERROR(LexString(i, t));
      } else if (c == '@') {
        RETURN_IF_ERROR(LexVariable(i, t));
      } else if (IsAlpha(c)) {
        LexIdentifier(i, t);
      } else {
        RETURN_IF_ERROR(LexOperator(i, t));
      }
      t.length = i - t.offset;
      tokens_.push_back(std::move(t));
    }
    Token end;
    end.kind = Tok::kEnd;
    end.offset = n;
    tokens_.push_back(end);
    return Status::Ok();
  }

  Status LexNumber(size_t& i, Token& t) {
    const size_t n = text_.size();
    size_t start = i;
    bool is_double = false;
    while (i < n && IsDigit(text_[i])) ++i;
    if (i + 1 < n && text_[i] == '.' && IsDigit(text_[i + 1])) {
      is_double = true;
      ++i;
      while (i < n && IsDigit(text_[i])) ++i;
    }
    if (i < n && (text_[i] == 'e' || text_[i] == 'E')) {
      size_t j = i + 1;
      if (j < n && (text_[j] == '+' || text_[j] == '-')) ++j;
      if (j < n && IsDigit(text_[j])) {
        is_double = true;
        i = j;
        while (i < n && IsDigit(text_[i])) ++i;
      }
    }
    if (i < n && IsAlpha(text_[i])) {
      return Fail(
          i,
          fmt::format("unexpected '{}' after number {}", text_[i], text_.substr(start, i - start)),
          "expected an operator or a space");
    }
    std::string_view digits = text_.substr(start, i - start);
    if (is_double) {
      t.kind = Tok::kDouble;
      auto [end, ec] =
          std::from_chars(digits.data(), digits.data() + digits.size(), t.double_value);
      if (ec != std::errc()) {
        return Fail(start, fmt::format("number {} is out of range", Excerpt(digits)),
                    "expected a finite double");
      }
    } else {
      t.kind = Tok::kInt;
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), t.int_value);
      if (ec != std::errc()) {
        return Fail(start, fmt::format("integer {} is too large", Excerpt(digits)),
                    "the largest int is 9223372036854775807");
      }
    }
    return Status::Ok();
  }

  Status LexString(size_t& i, Token& t) {
    const size_t n = text_.size();
    size_t start = i++;
    t.kind = Tok::kString;
    while (true) {
      if (i >= n) return Fail(start, "unterminated string", "expected a closing '\"'");
      char c = text_[i];
      if (c == '"') {
        ++i;
        return Status::Ok();
      }
      if (c == '\\') {
        if (i + 1 >= n) return Fail(start, "unterminated string", "expected a closing '\"'");
        char e = text_[i + 1];
        switch (e) {
          case '"':
            t.text.push_back('"');
            break;
          case '\\':
            t.text.push_back('\\');
            break;
          case 'n':
            t.text.push_back('\n');
            break;
          case 't':
            t.text.push_back('\t');
            break;
          case 'r':
            t.text.push_back('\r');
            break;
          default:
            return Fail(i, fmt::format("unknown escape '\\{}' in string", e),
                        "expected one of \\\" \\\\ \\n \\t \\r");
        }
        i += 2;
        continue;
      }
      t.text.push_back(c);
      ++i;
    }
  }

  // `@name`, `@User::name`, `@[User::name]`, `@[System::Name]`, `@[any text but ]]`.
  Status LexVariable(size_t& i, Token& t) {
    const size_t n = text_.size();
    size_t start = i++;
    t.kind = Tok::kVariable;
    if (i < n && text_[i] == '[') {
      size_t close = text_.find(']', i + 1);
      if (close == std::string_view::npos) {
        return Fail(start, "unterminated '@['", "expected ']' to close the variable name");
      }
      std::string_view name = text_.substr(i + 1, close - i - 1);
      if (name.starts_with("User::")) name.remove_prefix(6);
      if (name.empty()) {
        return Fail(start, "empty variable name", "expected a name such as @[User::rows]");
      }
      t.text = std::string(name);
      i = close + 1;
      return Status::Ok();
    }
    // After '@' a name may start with a digit (`@1st`): nothing else could follow there.
    if (i >= n || !IsAlnum(text_[i])) {
      return Fail(start, "'@' without a variable name",
                  "expected a name such as @rows or @[User::rows]");
    }
    t.text = ReadName(i);
    return Status::Ok();
  }

  // An identifier, with an optional namespace: `name`, `User::name` (= "name"),
  // `System::Name` (kept whole).
  std::string ReadName(size_t& i) {
    const size_t n = text_.size();
    size_t start = i;
    while (i < n && IsAlnum(text_[i])) ++i;
    std::string_view first = text_.substr(start, i - start);
    if (i + 2 < n && text_[i] == ':' && text_[i + 1] == ':' && IsAlpha(text_[i + 2])) {
      size_t second_start = i + 2;
      i = second_start;
      while (i < n && IsAlnum(text_[i])) ++i;
      std::string_view second = text_.substr(second_start, i - second_start);
      if (first == "User") return std::string(second);
      return fmt::format("{}::{}", first, second);
    }
    return std::string(first);
  }

  void LexIdentifier(size_t& i, Token& t) {
    t.kind = Tok::kIdent;
    t.text = ReadName(i);
  }

  Status LexOperator(size_t& i, Token& t) {
    struct Entry {
      std::string_view text;
      Tok kind;
    };
    // Two-character operators first, so "<=" is not read as "<" then "=".
    static constexpr Entry kOperators[] = {
        {"<=", Tok::kLessEq}, {">=", Tok::kGreaterEq}, {"==", Tok::kEq},      {"!=", Tok::kNotEq},
        {"&&", Tok::kAnd},    {"||", Tok::kOr},        {"+", Tok::kPlus},     {"-", Tok::kMinus},
        {"*", Tok::kStar},    {"/", Tok::kSlash},      {"%", Tok::kPercent},  {"(", Tok::kLParen},
        {")", Tok::kRParen},  {",", Tok::kComma},      {"?", Tok::kQuestion}, {":", Tok::kColon},
        {"!", Tok::kNot},     {"<", Tok::kLess},       {">", Tok::kGreater},  {"=", Tok::kAssign},
    };
    std::string_view rest = text_.substr(i);
    for (const Entry& e : kOperators) {
      if (rest.starts_with(e.text)) {
        t.kind = e.kind;
        i += e.text.size();
        return Status::Ok();
      }
    }
    char c = text_[i];
    if (c == '&' || c == '|') {
      return Fail(i, fmt::format("unexpected '{}'", c),
                  fmt::format("expected '{}{}' (there are no bitwise operators)", c, c));
    }
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return Fail(i, fmt::format("unexpected byte 0x{:02x}", static_cast<unsigned char>(c)),
                  "expected an operand or an operator (text belongs in \"quotes\")");
    }
    if (c == '\'') {
      return Fail(i, "unexpected \"'\"", "strings are written in double quotes: \"text\"");
    }
    if (std::string_view joined = NameWithDashOrDot(text_, i); c == '.' && !joined.empty()) {
      return Fail(i, "unexpected character '.'",
                  fmt::format("a name with '-' or '.' is written @[{}]", Excerpt(joined)));
    }
    return Fail(i, fmt::format("unexpected character '{}'", c),
                "expected an operand or an operator");
  }

  // ---- grammar (C precedence):
  //   top         := [variable '='] conditional
  //   conditional := or ['?' conditional ':' conditional]
  //   or := and {'||' and}    and := equality {'&&' equality}
  //   equality := relational {('=='|'!=') relational}
  //   relational := additive {('<'|'>'|'<='|'>=') additive}
  //   additive := multiplicative {('+'|'-') multiplicative}
  //   multiplicative := unary {('*'|'/'|'%') unary}
  //   unary := ('-'|'!'|cast) unary | primary

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }

  bool IsBareVariable(const Token& t) const {
    return options_.bare_names && t.kind == Tok::kIdent && !EqualsIgnoreCase(t.text, "true") &&
           !EqualsIgnoreCase(t.text, "false");
  }

  void AddVariable(const std::string& name) {
    if (std::find(variables_.begin(), variables_.end(), name) == variables_.end()) {
      variables_.push_back(name);
    }
  }

  Result<NodePtr> Finish(std::unique_ptr<Node> node) {
    for (const NodePtr& arg : node->args) node->depth = std::max(node->depth, arg->depth + 1);
    if (node->depth > kMaxDepth) {
      return Fail(
          node->offset, "expression is too long or too deeply nested",
          fmt::format("expected at most {} levels; split it into several variables", kMaxDepth));
    }
    return NodePtr(std::move(node));
  }

  static std::unique_ptr<Node> MakeNode(Kind kind, size_t offset) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->offset = offset;
    return node;
  }

  Result<NodePtr> ParseTop() {
    if (Peek().kind == Tok::kEnd) {
      return Fail(0, "empty expression", "expected an operand");
    }
    const Token& first = Peek();
    if ((first.kind == Tok::kVariable || IsBareVariable(first)) && Peek(1).kind == Tok::kAssign) {
      if (!options_.allow_assignment) {
        return Fail(Peek(1).offset, "unexpected '='",
                    "assignment is only allowed in for-loop init and assign; use '==' to compare");
      }
      auto node = MakeNode(Kind::kAssign, first.offset);
      node->name = first.text;
      AddVariable(node->name);
      pos_ += 2;
      ASSIGN_OR_RETURN(NodePtr value, ParseConditional());
      node->args.push_back(std::move(value));
      RETURN_IF_ERROR(ExpectEnd());
      return Finish(std::move(node));
    }
    ASSIGN_OR_RETURN(NodePtr root, ParseConditional());
    RETURN_IF_ERROR(ExpectEnd());
    return root;
  }

  Status ExpectEnd() {
    const Token& t = Peek();
    if (t.kind == Tok::kEnd) return Status::Ok();
    if (t.kind == Tok::kAssign) {
      return Fail(t.offset, "unexpected '='",
                  options_.allow_assignment
                      ? "only one assignment, to a variable at the start, is allowed; use '==' "
                        "to compare"
                      : "use '==' to compare (assignment is only allowed in for-loop init and "
                        "assign)");
    }
    return Unexpected(t, "expected an operator or the end of the expression");
  }

  Result<NodePtr> ParseConditional() {
    if (++nesting_ > kMaxNesting) {
      return Fail(Peek().offset, "expression is too deeply nested",
                  fmt::format("expected at most {} levels of parentheses", kMaxNesting));
    }
    ASSIGN_OR_RETURN(NodePtr cond, ParseBinary(0));
    if (Peek().kind == Tok::kQuestion) {
      size_t question = Next().offset;
      ASSIGN_OR_RETURN(NodePtr yes, ParseConditional());
      if (Peek().kind != Tok::kColon) {
        return Unexpected(Peek(), fmt::format("expected ':' to go with the '?' at column {}",
                                              base_ + question + 1));
      }
      Next();
      ASSIGN_OR_RETURN(NodePtr no, ParseConditional());
      auto node = MakeNode(Kind::kConditional, cond->offset);
      node->args.push_back(std::move(cond));
      node->args.push_back(std::move(yes));
      node->args.push_back(std::move(no));
      --nesting_;
      return Finish(std::move(node));
    }
    --nesting_;
    return cond;
  }

  // Binary precedence levels, loosest first.
  static std::optional<Op> BinaryOp(int level, Tok kind) {
    switch (level) {
      case 0:
        return kind == Tok::kOr ? std::optional(Op::kOr) : std::nullopt;
      case 1:
        return kind == Tok::kAnd ? std::optional(Op::kAnd) : std::nullopt;
      case 2:
        if (kind == Tok::kEq) return Op::kEq;
        if (kind == Tok::kNotEq) return Op::kNotEq;
        return std::nullopt;
      case 3:
        if (kind == Tok::kLess) return Op::kLess;
        if (kind == Tok::kGreater) return Op::kGreater;
        if (kind == Tok::kLessEq) return Op::kLessEq;
        if (kind == Tok::kGreaterEq) return Op::kGreaterEq;
        return std::nullopt;
      case 4:
        if (kind == Tok::kPlus) return Op::kAdd;
        if (kind == Tok::kMinus) return Op::kSub;
        return std::nullopt;
      case 5:
        if (kind == Tok::kStar) return Op::kMul;
        if (kind == Tok::kSlash) return Op::kDiv;
        if (kind == Tok::kPercent) return Op::kMod;
        return std::nullopt;
    }
    return std::nullopt;
  }
  static constexpr int kUnaryLevel = 6;

  Result<NodePtr> ParseBinary(int level) {
    if (level == kUnaryLevel) return ParseUnary();
    ASSIGN_OR_RETURN(NodePtr left, ParseBinary(level + 1));
    while (std::optional<Op> op = BinaryOp(level, Peek().kind)) {
      size_t offset = Next().offset;
      ASSIGN_OR_RETURN(NodePtr right, ParseBinary(level + 1));
      auto node = MakeNode(Kind::kBinary, offset);
      node->op = *op;
      node->args.push_back(std::move(left));
      node->args.push_back(std::move(right));
      ASSIGN_OR_RETURN(left, Finish(std::move(node)));
    }
    return left;
  }

  Result<NodePtr> ParseUnary() {
    const Token& t = Peek();
    if (t.kind == Tok::kMinus || t.kind == Tok::kNot) {
      if (++nesting_ > kMaxNesting) {
        return Fail(t.offset, "expression is too deeply nested",
                    fmt::format("expected at most {} nested operators", kMaxNesting));
      }
      size_t offset = Next().offset;
      bool negate = t.kind == Tok::kMinus;
      // The one int literal that only exists negated: -9223372036854775808.
      if (negate && Peek().kind == Tok::kInt &&
          Peek().int_value == static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1) {
        Next();
        --nesting_;
        auto node = MakeNode(Kind::kLiteral, offset);
        node->literal = Value(std::numeric_limits<int64_t>::min());
        return Finish(std::move(node));
      }
      ASSIGN_OR_RETURN(NodePtr operand, ParseUnary());
      --nesting_;
      // Fold negative number literals so `-1` costs nothing at run time.
      if (negate && operand->kind == Kind::kLiteral &&
          (operand->literal.is(ValueType::kInt) || operand->literal.is(ValueType::kDouble))) {
        auto node = MakeNode(Kind::kLiteral, offset);
        node->literal = operand->literal.is(ValueType::kInt) ? Value(-operand->literal.as_int())
                                                             : Value(-operand->literal.as_double());
        return Finish(std::move(node));
      }
      auto node = MakeNode(Kind::kUnary, offset);
      node->op = negate ? Op::kNeg : Op::kNot;
      node->args.push_back(std::move(operand));
      return Finish(std::move(node));
    }
    if (t.kind == Tok::kLParen && Peek(1).kind == Tok::kIdent &&
        StartsWithIgnoreCase(Peek(1).text, "DT_")) {
      return ParseCast();
    }
    return ParsePrimary();
  }

  Result<NodePtr> ParseCast() {
    size_t open = Next().offset;
    const Token& type = Next();
    const CastInfo* cast = FindCast(type.text);
    if (cast == nullptr) {
      std::string known;
      for (const CastInfo& c : kCasts) known += (known.empty() ? "" : ", ") + std::string(c.name);
      return Fail(type.offset, fmt::format("unknown cast type '{}'", type.text),
                  "expected one of " + known);
    }
    static constexpr std::string_view kParamNames[] = {"a length", "a code page"};
    for (int i = 0; i < cast->params; ++i) {
      if (Peek().kind != Tok::kComma || Peek(1).kind != Tok::kInt) {
        const Token& bad = Peek().kind == Tok::kComma ? Peek(1) : Peek();
        return Unexpected(bad,
                          fmt::format("expected ',' and {} in ({}{})", kParamNames[i], cast->name,
                                      cast->params == 1 ? ", n" : ", n, codepage"));
      }
      pos_ += 2;
    }
    if (Peek().kind != Tok::kRParen) {
      return Unexpected(
          Peek(), fmt::format("expected ')' to close the cast at column {}", base_ + open + 1));
    }
    Next();
    if (++nesting_ > kMaxNesting) {
      return Fail(open, "expression is too deeply nested",
                  fmt::format("expected at most {} nested casts", kMaxNesting));
    }
    ASSIGN_OR_RETURN(NodePtr operand, ParseUnary());
    --nesting_;
    auto node = MakeNode(Kind::kCast, open);
    node->cast = cast;
    node->args.push_back(std::move(operand));
    return Finish(std::move(node));
  }

  Result<NodePtr> ParsePrimary() {
    const Token& t = Peek();
    switch (t.kind) {
      case Tok::kInt: {
        if (t.int_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return Fail(
              t.offset,
              fmt::format("integer {} is too large", Excerpt(text_.substr(t.offset, t.length))),
              "the largest int is 9223372036854775807");
        }
        auto node = MakeNode(Kind::kLiteral, t.offset);
        node->literal = Value(static_cast<int64_t>(t.int_value));
        Next();
        return Finish(std::move(node));
      }
      case Tok::kDouble: {
        auto node = MakeNode(Kind::kLiteral, t.offset);
        node->literal = Value(t.double_value);
        Next();
        return Finish(std::move(node));
      }
      case Tok::kString: {
        auto node = MakeNode(Kind::kLiteral, t.offset);
        node->literal = Value(t.text);
        Next();
        return Finish(std::move(node));
      }
      case Tok::kVariable: {
        auto node = MakeNode(Kind::kVariable, t.offset);
        node->name = t.text;
        AddVariable(node->name);
        Next();
        return Finish(std::move(node));
      }
      case Tok::kLParen: {
        size_t open = Next().offset;
        ASSIGN_OR_RETURN(NodePtr inner, ParseConditional());
        if (Peek().kind != Tok::kRParen) {
          return Unexpected(
              Peek(), fmt::format("expected ')' to close the '(' at column {}", base_ + open + 1));
        }
        Next();
        return inner;
      }
      case Tok::kIdent:
        return ParseIdentifier();
      default:
        return Unexpected(t,
                          "expected an operand (a number, string, variable, function call "
                          "or '(')");
    }
  }

  Result<NodePtr> ParseIdentifier() {
    const Token& t = Peek();
    if (Peek(1).kind == Tok::kLParen) return ParseCall();
    if (EqualsIgnoreCase(t.text, "true") || EqualsIgnoreCase(t.text, "false")) {
      auto node = MakeNode(Kind::kLiteral, t.offset);
      node->literal = Value(EqualsIgnoreCase(t.text, "true"));
      Next();
      return Finish(std::move(node));
    }
    if (options_.bare_names) {
      auto node = MakeNode(Kind::kVariable, t.offset);
      node->name = t.text;
      AddVariable(node->name);
      Next();
      return Finish(std::move(node));
    }
    if (const FunctionInfo* f = FindFunction(t.text)) {
      return Fail(t.offset, fmt::format("function {} without arguments", f->name),
                  fmt::format("expected '(' after {}", f->name));
    }
    if (std::string_view joined = NameWithDashOrDot(text_, t.offset); !joined.empty()) {
      // `@my-var` reads as `@my - var`.
      return Fail(t.offset, fmt::format("unknown name '{}'", Excerpt(t.text)),
                  fmt::format("a name with '-' or '.' is written @[{}]", Excerpt(joined)));
    }
    return Fail(t.offset, fmt::format("unknown name '{}'", Excerpt(t.text)),
                fmt::format("expected a variable written @{}, a function call, TRUE or FALSE",
                            Excerpt(t.text)));
  }

  Result<NodePtr> ParseCall() {
    const Token& name = Next();
    const FunctionInfo* f = FindFunction(name.text);
    if (f == nullptr) {
      return Fail(name.offset, fmt::format("unknown function '{}'", Excerpt(name.text)),
                  "expected one of " + FunctionList());
    }
    size_t open = Next().offset;
    auto node = MakeNode(Kind::kCall, name.offset);
    node->fn = f->fn;
    node->name = std::string(f->name);  // for messages; calls read no variable
    if (Peek().kind != Tok::kRParen) {
      while (true) {
        ASSIGN_OR_RETURN(NodePtr arg, ParseConditional());
        node->args.push_back(std::move(arg));
        if (Peek().kind == Tok::kComma) {
          Next();
          continue;
        }
        if (Peek().kind == Tok::kRParen) break;
        return Unexpected(Peek(),
                          fmt::format("expected ',' or ')' in the arguments of {} (the '(' at "
                                      "column {})",
                                      f->name, base_ + open + 1));
      }
    }
    Next();  // ')'
    int argc = static_cast<int>(node->args.size());
    if (argc < f->min_args || argc > f->max_args) {
      std::string expected;
      if (f->max_args == 0) {
        expected = fmt::format("expected no arguments, got {}", argc);
      } else if (f->min_args == f->max_args) {
        expected = fmt::format("expected {} ({}), got {}", f->min_args, f->params, argc);
      } else {
        expected = fmt::format("expected {} to {} ({}), got {}", f->min_args, f->max_args,
                               f->params, argc);
      }
      return Fail(name.offset, fmt::format("wrong number of arguments to {}", f->name), expected);
    }
    // A literal date part is checked now, so a typo fails validation instead of the run.
    if (f->fn == Fn::kDateAdd || f->fn == Fn::kDateDiff || f->fn == Fn::kDatePart) {
      const Node& part = *node->args[0];
      if (part.kind == Kind::kLiteral) {
        if (!part.literal.is(ValueType::kString)) {
          return Fail(part.offset, fmt::format("{} needs a date part name", f->name),
                      std::string(kDatePartHelp) + ", in quotes");
        }
        node->date_part = FindDatePart(part.literal.as_string());
        if (!node->date_part) {
          return Fail(part.offset,
                      fmt::format("unknown date part \"{}\"", Excerpt(part.literal.as_string())),
                      kDatePartHelp);
        }
      }
    }
    return Finish(std::move(node));
  }

  std::string_view text_;
  Expression::Options options_;
  size_t base_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int nesting_ = 0;
  std::vector<std::string> variables_;
  ExpressionError error_;
};

Status Compile(std::string_view text, Expression::Options options, size_t base,
               ExpressionError* error, Compiled& out) {
  Parser parser(text, options, base);
  out.origin = options.origin;
  Status status = parser.Run(out);
  if (!status.ok() && error != nullptr) *error = parser.error();
  return status;
}

// ---------------------------------------------------------------------------------------------
// Evaluation. Every function here is reentrant: state lives on the stack of the caller's thread.

bool IsNumber(const Value& v) { return v.is(ValueType::kInt) || v.is(ValueType::kDouble); }
double AsNumber(const Value& v) {
  return v.is(ValueType::kInt) ? static_cast<double>(v.as_int()) : v.as_double();
}
const char* TypeOf(const Value& v) { return ValueTypeName(v.type()); }

Status TypeError(Op op, const Value& a, const Value& b) {
  return InvalidArgument(
      fmt::format("cannot apply '{}' to {} and {}", OpSymbol(op), TypeOf(a), TypeOf(b)));
}

Result<Value> Arithmetic(Op op, const Value& a, const Value& b) {
  if (op == Op::kAdd && (a.is(ValueType::kString) || b.is(ValueType::kString))) {
    if (a.is(ValueType::kString) && b.is(ValueType::kString)) {
      std::string out;
      out.reserve(a.as_string().size() + b.as_string().size());
      out += a.as_string();
      out += b.as_string();
      return Value(std::move(out));
    }
    return Value(a.ToString() + b.ToString());
  }
  if (!IsNumber(a) || !IsNumber(b)) return TypeError(op, a, b);
  if (a.is(ValueType::kInt) && b.is(ValueType::kInt)) {
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    bool overflow = false;
    switch (op) {
      case Op::kAdd:
        overflow = __builtin_add_overflow(x, y, &r);
        break;
      case Op::kSub:
        overflow = __builtin_sub_overflow(x, y, &r);
        break;
      case Op::kMul:
        overflow = __builtin_mul_overflow(x, y, &r);
        break;
      case Op::kDiv:
      case Op::kMod:
        if (y == 0) return InvalidArgument(op == Op::kDiv ? "division by zero" : "modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) {
          overflow = op == Op::kDiv;
          r = 0;
        } else {
          r = op == Op::kDiv ? x / y : x % y;
        }
        break;
      default:
        return TypeError(op, a, b);
    }
    if (overflow) {
      return InvalidArgument(fmt::format("integer overflow in {} {} {}", x, OpSymbol(op), y));
    }
    return Value(r);
  }
  double x = AsNumber(a), y = AsNumber(b);
  double r = 0;
  switch (op) {
    case Op::kAdd:
      r = x + y;
      break;
    case Op::kSub:
      r = x - y;
      break;
    case Op::kMul:
      r = x * y;
      break;
    case Op::kDiv:
      if (y == 0) return InvalidArgument("division by zero");
      r = x / y;
      break;
    case Op::kMod:
      if (y == 0) return InvalidArgument("modulo by zero");
      r = std::fmod(x, y);
      break;
    default:
      return TypeError(op, a, b);
  }
  // As integers do: an infinity would only fail later, as text no conversion reads back.
  if (!std::isfinite(r)) {
    return InvalidArgument(fmt::format("double overflow in {} {} {}", x, OpSymbol(op), y));
  }
  return Value(r);
}

template <typename T>
bool Ordered(Op op, const T& x, const T& y) {
  switch (op) {
    case Op::kLess:
      return x < y;
    case Op::kGreater:
      return x > y;
    case Op::kLessEq:
      return x <= y;
    case Op::kGreaterEq:
      return x >= y;
    case Op::kEq:
      return x == y;
    case Op::kNotEq:
      return x != y;
    default:
      return false;
  }
}

Result<Value> Compare(Op op, const Value& a, const Value& b) {
  if (IsNumber(a) && IsNumber(b)) {
    if (a.is(ValueType::kInt) && b.is(ValueType::kInt)) {
      return Value(Ordered(op, a.as_int(), b.as_int()));
    }
    return Value(Ordered(op, AsNumber(a), AsNumber(b)));
  }
  if (a.type() == b.type()) {
    switch (a.type()) {
      case ValueType::kString:
        return Value(Ordered(op, a.as_string(), b.as_string()));
      case ValueType::kBool:
        return Value(Ordered(op, a.as_bool(), b.as_bool()));
      case ValueType::kDateTime:
        return Value(Ordered(op, a.as_datetime(), b.as_datetime()));
      case ValueType::kList:
        if (op == Op::kEq) return Value(a == b);
        if (op == Op::kNotEq) return Value(!(a == b));
        return InvalidArgument(fmt::format("cannot order lists with '{}'", OpSymbol(op)));
      default:
        break;
    }
  }
  return InvalidArgument(
      fmt::format("cannot compare {} with {} using '{}'", TypeOf(a), TypeOf(b), OpSymbol(op)));
}

Result<Value> ApplyBinary(Op op, const Value& a, const Value& b) {
  switch (op) {
    case Op::kAdd:
    case Op::kSub:
    case Op::kMul:
    case Op::kDiv:
    case Op::kMod:
      return Arithmetic(op, a, b);
    default:
      return Compare(op, a, b);
  }
}

// ---- function arguments

Result<int64_t> IntArg(const Value& v, std::string_view fn, std::string_view what) {
  if (v.is(ValueType::kInt)) return v.as_int();
  if (v.is(ValueType::kDouble)) {
    auto converted = v.ConvertTo(ValueType::kInt);
    if (converted.ok()) return converted->as_int();
    return InvalidArgument(
        fmt::format("{}: {} must be a whole number, got {}", fn, what, v.ToString()));
  }
  return InvalidArgument(fmt::format("{}: {} must be a whole number, got {}", fn, what, TypeOf(v)));
}

Result<std::string_view> StringArg(const Value& v, std::string_view fn, std::string_view what) {
  if (v.is(ValueType::kString)) return std::string_view(v.as_string());
  return InvalidArgument(fmt::format("{}: {} must be a string, got {}; cast it with (DT_WSTR, n)",
                                     fn, what, TypeOf(v)));
}

// Dates may also be given as ISO 8601 strings, since parameters such as run_date usually arrive
// as text.
Result<DateTime> DateArg(const Value& v, std::string_view fn, std::string_view what) {
  if (v.is(ValueType::kDateTime)) return v.as_datetime();
  if (v.is(ValueType::kString)) {
    auto converted = v.ConvertTo(ValueType::kDateTime);
    if (converted.ok()) return converted->as_datetime();
    return InvalidArgument(fmt::format("{}: {}: {}", fn, what, converted.status().message()));
  }
  return InvalidArgument(fmt::format("{}: {} must be a datetime, got {}", fn, what, TypeOf(v)));
}

Result<DatePart> DatePartArg(const Node& node, const Value& v, std::string_view fn) {
  if (node.date_part) return *node.date_part;
  if (v.is(ValueType::kString)) {
    if (auto part = FindDatePart(v.as_string())) return *part;
  }
  return InvalidArgument(
      fmt::format("{}: unknown date part {}: {}", fn, Excerpt(v.ToString()), kDatePartHelp));
}

// ---- dates

using std::chrono::days;
using std::chrono::microseconds;

std::chrono::year_month_day CivilDate(DateTime t) {
  return std::chrono::year_month_day(std::chrono::floor<days>(t));
}

Result<Value> AddMonths(DateTime t, int64_t months) {
  auto day_start = std::chrono::floor<days>(t);
  auto time_of_day = t - day_start;
  std::chrono::year_month_day ymd(day_start);
  int64_t total = static_cast<int64_t>(static_cast<int>(ymd.year())) * 12 +
                  static_cast<unsigned>(ymd.month()) - 1;
  if (__builtin_add_overflow(total, months, &total)) {
    return InvalidArgument("DATEADD: result is out of range");
  }
  int64_t year = FloorDiv(total, 12);
  if (year < 1 || year > 9999) return InvalidArgument("DATEADD: result is out of range");
  std::chrono::year y(static_cast<int>(year));
  std::chrono::month m(static_cast<unsigned>(total - year * 12 + 1));
  std::chrono::year_month_day result(y, m, ymd.day());
  // Jan 31 + 1 month is the last day of February, as in SQL Server.
  if (!result.ok()) result = std::chrono::year_month_day_last(y, std::chrono::month_day_last(m));
  return Value(DateTime(std::chrono::sys_days(result) + time_of_day));
}

Result<Value> DateAdd(DatePart part, int64_t n, DateTime t) {
  int64_t unit = 0;  // microseconds
  switch (part) {
    case DatePart::kYear:
    case DatePart::kQuarter:
    case DatePart::kMonth: {
      int64_t months = n;
      int64_t factor = part == DatePart::kYear ? 12 : part == DatePart::kQuarter ? 3 : 1;
      if (__builtin_mul_overflow(n, factor, &months)) {
        return InvalidArgument("DATEADD: result is out of range");
      }
      return AddMonths(t, months);
    }
    case DatePart::kDayOfYear:
    case DatePart::kDay:
    case DatePart::kWeekday:
      unit = 86'400'000'000LL;
      break;
    case DatePart::kWeek:
      unit = 7 * 86'400'000'000LL;
      break;
    case DatePart::kHour:
      unit = 3'600'000'000LL;
      break;
    case DatePart::kMinute:
      unit = 60'000'000LL;
      break;
    case DatePart::kSecond:
      unit = 1'000'000LL;
      break;
    case DatePart::kMillisecond:
      unit = 1'000LL;
      break;
  }
  int64_t delta = 0, result = 0;
  if (__builtin_mul_overflow(n, unit, &delta) ||
      __builtin_add_overflow(t.time_since_epoch().count(), delta, &result)) {
    return InvalidArgument("DATEADD: result is out of range");
  }
  return Value(DateTime(microseconds(result)));
}

// Sunday-based week number since the epoch (1970-01-01 was a Thursday), SQL Server's default.
int64_t WeekIndex(DateTime t) {
  int64_t day = std::chrono::floor<days>(t).time_since_epoch().count();
  return FloorDiv(day + 4, 7);
}

// Like SQL Server and SSIS, DATEDIFF counts the boundaries crossed between the two dates:
// DATEDIFF("day", 23:59, 00:01 the next day) is 1.
int64_t DateDiff(DatePart part, DateTime a, DateTime b) {
  auto months = [](DateTime t) {
    auto ymd = CivilDate(t);
    return static_cast<int64_t>(static_cast<int>(ymd.year())) * 12 +
           static_cast<unsigned>(ymd.month()) - 1;
  };
  auto floor_count = [](auto unit_tag, DateTime t) {
    return std::chrono::floor<decltype(unit_tag)>(t).time_since_epoch().count();
  };
  switch (part) {
    case DatePart::kYear:
      return static_cast<int>(CivilDate(b).year()) - static_cast<int>(CivilDate(a).year());
    case DatePart::kQuarter:
      return FloorDiv(months(b), 3) - FloorDiv(months(a), 3);
    case DatePart::kMonth:
      return months(b) - months(a);
    case DatePart::kWeek:
      return WeekIndex(b) - WeekIndex(a);
    case DatePart::kDayOfYear:
    case DatePart::kDay:
    case DatePart::kWeekday:
      return floor_count(days{}, b) - floor_count(days{}, a);
    case DatePart::kHour:
      return floor_count(std::chrono::hours{}, b) - floor_count(std::chrono::hours{}, a);
    case DatePart::kMinute:
      return floor_count(std::chrono::minutes{}, b) - floor_count(std::chrono::minutes{}, a);
    case DatePart::kSecond:
      return floor_count(std::chrono::seconds{}, b) - floor_count(std::chrono::seconds{}, a);
    case DatePart::kMillisecond:
      return floor_count(std::chrono::milliseconds{}, b) -
             floor_count(std::chrono::milliseconds{}, a);
  }
  return 0;
}

int64_t DatePartOf(DatePart part, DateTime t) {
  auto day_start = std::chrono::floor<days>(t);
  std::chrono::year_month_day ymd(day_start);
  std::chrono::hh_mm_ss<microseconds> time(t - day_start);
  auto jan1 = std::chrono::sys_days(ymd.year() / std::chrono::January / 1);
  int64_t day_of_year = (day_start - jan1).count() + 1;
  switch (part) {
    case DatePart::kYear:
      return static_cast<int>(ymd.year());
    case DatePart::kQuarter:
      return (static_cast<unsigned>(ymd.month()) - 1) / 3 + 1;
    case DatePart::kMonth:
      return static_cast<unsigned>(ymd.month());
    case DatePart::kDayOfYear:
      return day_of_year;
    case DatePart::kDay:
      return static_cast<unsigned>(ymd.day());
    case DatePart::kWeek: {
      // Week 1 is the week holding January 1st; weeks start on Sunday.
      int64_t jan1_weekday = std::chrono::weekday(jan1).c_encoding();  // 0 = Sunday
      return (day_of_year - 1 + jan1_weekday) / 7 + 1;
    }
    case DatePart::kWeekday:
      return std::chrono::weekday(day_start).c_encoding() + 1;
    case DatePart::kHour:
      return time.hours().count();
    case DatePart::kMinute:
      return time.minutes().count();
    case DatePart::kSecond:
      return time.seconds().count();
    case DatePart::kMillisecond:
      return std::chrono::duration_cast<std::chrono::milliseconds>(time.subseconds()).count();
  }
  return 0;
}

// ---- string functions

std::string_view TrimLeft(std::string_view s) {
  size_t begin = s.find_first_not_of(kSpace);
  return begin == std::string_view::npos ? std::string_view() : s.substr(begin);
}

std::string_view TrimRight(std::string_view s) {
  size_t end = s.find_last_not_of(kSpace);
  return end == std::string_view::npos ? std::string_view() : s.substr(0, end + 1);
}

// Splits on any of `delimiters`, skipping empty tokens, as SSIS TOKEN does.
std::vector<std::string_view> Tokens(std::string_view s, std::string_view delimiters) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t begin = s.find_first_not_of(delimiters, i);
    if (begin == std::string_view::npos) break;
    size_t end = s.find_first_of(delimiters, begin);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(begin, end - begin));
    i = end;
  }
  return out;
}

Result<Value> RoundNumber(const Value& v, int64_t digits) {
  if (v.is(ValueType::kInt)) {
    if (digits >= 0) return v;
    if (digits < -18) return Value(int64_t{0});
    int64_t scale = 1;
    for (int64_t i = 0; i < -digits; ++i) scale *= 10;
    int64_t x = v.as_int();
    int64_t q = x / scale, r = x % scale;
    // Half away from zero, like SSIS ROUND.
    if (r >= 0 ? r * 2 >= scale : -r * 2 >= scale) q += x < 0 ? -1 : 1;
    int64_t result = 0;
    if (__builtin_mul_overflow(q, scale, &result)) {
      return InvalidArgument(fmt::format("ROUND: integer overflow rounding {}", x));
    }
    return Value(result);
  }
  double x = v.as_double();
  double scale = std::pow(10.0, static_cast<double>(std::clamp<int64_t>(digits, -308, 308)));
  double scaled = x * scale;
  if (!std::isfinite(scaled)) return v;  // more digits than a double holds: nothing to round
  return Value(std::round(scaled) / scale);
}

// ---- calls, casts and the tree walker

Status FunctionTypeError(std::string_view fn, std::string_view what, std::string_view wanted,
                         const Value& got) {
  return InvalidArgument(fmt::format("{}: {} must be {}, got {}", fn, what, wanted, TypeOf(got)));
}

Result<Value> CallFunction(const Node& node, const Value* argv, int argc) {
  std::string_view fn = node.name;
  switch (node.fn) {
    case Fn::kLen: {
      if (argv[0].is(ValueType::kList)) {
        return Value(static_cast<int64_t>(argv[0].as_list().size()));
      }
      if (!argv[0].is(ValueType::kString)) {
        return FunctionTypeError(fn, "the argument", "a string or a list", argv[0]);
      }
      return Value(CodePointCount(argv[0].as_string()));
    }
    case Fn::kUpper:
    case Fn::kLower: {
      // ASCII only: locale-dependent case mapping would make a package behave differently on
      // differently configured servers.
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the argument"));
      std::string out(s);
      for (char& c : out) c = node.fn == Fn::kUpper ? AsciiUpper(c) : AsciiLower(c);
      return Value(std::move(out));
    }
    case Fn::kTrim:
    case Fn::kLtrim:
    case Fn::kRtrim: {
      // All ASCII whitespace, not only spaces as in SSIS: captured process output ends in "\n".
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the argument"));
      if (node.fn != Fn::kRtrim) s = TrimLeft(s);
      if (node.fn != Fn::kLtrim) s = TrimRight(s);
      return Value(std::string(s));
    }
    case Fn::kSubstring: {
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the string"));
      ASSIGN_OR_RETURN(int64_t start, IntArg(argv[1], fn, "start"));
      ASSIGN_OR_RETURN(int64_t length, IntArg(argv[2], fn, "length"));
      if (start < 1) {
        return InvalidArgument(
            fmt::format("{}: start must be 1 or more (positions are 1-based), got {}", fn, start));
      }
      if (length < 0) {
        return InvalidArgument(fmt::format("{}: length must not be negative, got {}", fn, length));
      }
      size_t begin = ByteOffsetOf(s, start - 1);
      std::string_view rest = s.substr(begin);
      return Value(std::string(rest.substr(0, ByteOffsetOf(rest, length))));
    }
    case Fn::kLeft:
    case Fn::kRight: {
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the string"));
      ASSIGN_OR_RETURN(int64_t length, IntArg(argv[1], fn, "length"));
      if (length < 0) {
        return InvalidArgument(fmt::format("{}: length must not be negative, got {}", fn, length));
      }
      if (node.fn == Fn::kLeft) return Value(std::string(s.substr(0, ByteOffsetOf(s, length))));
      int64_t count = CodePointCount(s);
      if (length >= count) return Value(std::string(s));
      return Value(std::string(s.substr(ByteOffsetOf(s, count - length))));
    }
    case Fn::kReplace: {
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the string"));
      ASSIGN_OR_RETURN(std::string_view find, StringArg(argv[1], fn, "find"));
      ASSIGN_OR_RETURN(std::string_view replacement, StringArg(argv[2], fn, "replacement"));
      if (find.empty()) return InvalidArgument(fmt::format("{}: find must not be empty", fn));
      std::string out;
      size_t i = 0;
      for (size_t hit; (hit = s.find(find, i)) != std::string_view::npos; i = hit + find.size()) {
        out.append(s.substr(i, hit - i));
        out.append(replacement);
      }
      out.append(s.substr(i));
      return Value(std::move(out));
    }
    case Fn::kFindString: {
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the string"));
      ASSIGN_OR_RETURN(std::string_view find, StringArg(argv[1], fn, "find"));
      int64_t occurrence = 1;
      if (argc > 2) {
        ASSIGN_OR_RETURN(occurrence, IntArg(argv[2], fn, "occurrence"));
      }
      if (occurrence < 1) {
        return InvalidArgument(
            fmt::format("{}: occurrence must be 1 or more, got {}", fn, occurrence));
      }
      if (find.empty()) return Value(int64_t{0});
      size_t from = 0;
      for (int64_t seen = 1;; ++seen) {
        size_t hit = s.find(find, from);
        if (hit == std::string_view::npos) return Value(int64_t{0});
        if (seen == occurrence) return Value(CodePointCount(s.substr(0, hit)) + 1);
        from = hit + 1;
      }
    }
    case Fn::kToken:
    case Fn::kTokenCount: {
      ASSIGN_OR_RETURN(std::string_view s, StringArg(argv[0], fn, "the string"));
      ASSIGN_OR_RETURN(std::string_view delimiters, StringArg(argv[1], fn, "delimiters"));
      std::vector<std::string_view> tokens = Tokens(s, delimiters);
      if (node.fn == Fn::kTokenCount) return Value(static_cast<int64_t>(tokens.size()));
      ASSIGN_OR_RETURN(int64_t occurrence, IntArg(argv[2], fn, "occurrence"));
      if (occurrence < 1) {
        return InvalidArgument(
            fmt::format("{}: occurrence must be 1 or more, got {}", fn, occurrence));
      }
      if (occurrence > static_cast<int64_t>(tokens.size())) return Value(std::string());
      return Value(std::string(tokens[occurrence - 1]));
    }
    case Fn::kAbs:
    case Fn::kCeiling:
    case Fn::kFloor:
    case Fn::kRound: {
      const Value& v = argv[0];
      if (!IsNumber(v)) return FunctionTypeError(fn, "the argument", "a number", v);
      if (node.fn == Fn::kRound) {
        int64_t digits = 0;
        if (argc > 1) {
          ASSIGN_OR_RETURN(digits, IntArg(argv[1], fn, "digits"));
        }
        return RoundNumber(v, digits);
      }
      if (v.is(ValueType::kInt)) {
        if (node.fn != Fn::kAbs || v.as_int() >= 0) return v;
        if (v.as_int() == std::numeric_limits<int64_t>::min()) {
          return InvalidArgument(fmt::format("{}: integer overflow", fn));
        }
        return Value(-v.as_int());
      }
      double d = v.as_double();
      if (node.fn == Fn::kAbs) return Value(std::fabs(d));
      return Value(node.fn == Fn::kCeiling ? std::ceil(d) : std::floor(d));
    }
    case Fn::kGetDate:
      return Value(std::chrono::time_point_cast<microseconds>(std::chrono::system_clock::now()));
    case Fn::kDateAdd: {
      ASSIGN_OR_RETURN(DatePart part, DatePartArg(node, argv[0], fn));
      ASSIGN_OR_RETURN(int64_t n, IntArg(argv[1], fn, "number"));
      ASSIGN_OR_RETURN(DateTime t, DateArg(argv[2], fn, "date"));
      return DateAdd(part, n, t);
    }
    case Fn::kDateDiff: {
      ASSIGN_OR_RETURN(DatePart part, DatePartArg(node, argv[0], fn));
      ASSIGN_OR_RETURN(DateTime a, DateArg(argv[1], fn, "startdate"));
      ASSIGN_OR_RETURN(DateTime b, DateArg(argv[2], fn, "enddate"));
      return Value(DateDiff(part, a, b));
    }
    case Fn::kDatePart: {
      ASSIGN_OR_RETURN(DatePart part, DatePartArg(node, argv[0], fn));
      ASSIGN_OR_RETURN(DateTime t, DateArg(argv[1], fn, "date"));
      return Value(DatePartOf(part, t));
    }
    case Fn::kYear:
    case Fn::kMonth:
    case Fn::kDay: {
      ASSIGN_OR_RETURN(DateTime t, DateArg(argv[0], fn, "the argument"));
      DatePart part = node.fn == Fn::kYear    ? DatePart::kYear
                      : node.fn == Fn::kMonth ? DatePart::kMonth
                                              : DatePart::kDay;
      return Value(DatePartOf(part, t));
    }
  }
  return Internal(fmt::format("{}: not implemented", fn));
}

Result<Value> ApplyCast(const CastInfo& cast, const Value& v) {
  // TRUE is -1, all bits set: to an unsigned type, its largest value (SSIS), not out of range.
  if (v.is(ValueType::kBool) && cast.target == ValueType::kInt && cast.min == 0) {
    return Value(v.as_bool() ? cast.max : int64_t{0});
  }
  auto converted = v.ConvertTo(cast.target);
  if (!converted.ok()) {
    return InvalidArgument(fmt::format("({}): {}", cast.name, converted.status().message()));
  }
  if (cast.target == ValueType::kInt) {
    int64_t i = converted->as_int();
    if (i < cast.min || i > cast.max) {
      return InvalidArgument(
          fmt::format("({}): {} is out of range ({} to {})", cast.name, i, cast.min, cast.max));
    }
  }
  if (cast.date_only) {
    return Value(DateTime(std::chrono::floor<days>(converted->as_datetime())));
  }
  return converted;
}

Result<Value> ReadVariable(const std::string& name, Scope& scope) {
  auto value = scope.Get(name);
  if (value.ok()) return value;
  if (value.status().code() == Code::kNotFound) {
    return InvalidArgument(fmt::format("unknown variable '{}'", name));
  }
  return value.status().WithContext(fmt::format("reading variable '{}'", name));
}

Status WriteVariable(const std::string& name, const Value& value, Scope& scope) {
  Status status = scope.Set(name, value);
  if (status.ok()) return status;
  if (status.code() == Code::kNotFound) {
    return InvalidArgument(fmt::format("cannot assign to unknown variable '{}'", name));
  }
  return status.WithContext(fmt::format("assigning to '{}'", name));
}

Result<Value> Eval(const Node& node, Scope& scope) {
  switch (node.kind) {
    case Kind::kLiteral:
      return node.literal;
    case Kind::kVariable:
      return ReadVariable(node.name, scope);
    case Kind::kUnary: {
      ASSIGN_OR_RETURN(Value v, Eval(*node.args[0], scope));
      if (node.op == Op::kNot) {
        if (!v.is(ValueType::kBool)) {
          return InvalidArgument(fmt::format("cannot apply '!' to {}: expected a bool", TypeOf(v)));
        }
        return Value(!v.as_bool());
      }
      if (v.is(ValueType::kInt)) {
        if (v.as_int() == std::numeric_limits<int64_t>::min()) {
          return InvalidArgument(fmt::format("integer overflow in -({})", v.as_int()));
        }
        return Value(-v.as_int());
      }
      if (v.is(ValueType::kDouble)) return Value(-v.as_double());
      return InvalidArgument(fmt::format("cannot apply '-' to {}: expected a number", TypeOf(v)));
    }
    case Kind::kBinary: {
      if (node.op == Op::kAnd || node.op == Op::kOr) {
        ASSIGN_OR_RETURN(Value left, Eval(*node.args[0], scope));
        if (!left.is(ValueType::kBool)) {
          return InvalidArgument(fmt::format("'{}' needs bool operands, got {} on the left",
                                             OpSymbol(node.op), TypeOf(left)));
        }
        // Short-circuit: `@n > 0 && @total / @n > 10` never divides by zero.
        if (left.as_bool() == (node.op == Op::kOr)) return left;
        ASSIGN_OR_RETURN(Value right, Eval(*node.args[1], scope));
        if (!right.is(ValueType::kBool)) {
          return InvalidArgument(fmt::format("'{}' needs bool operands, got {} on the right",
                                             OpSymbol(node.op), TypeOf(right)));
        }
        return right;
      }
      ASSIGN_OR_RETURN(Value left, Eval(*node.args[0], scope));
      ASSIGN_OR_RETURN(Value right, Eval(*node.args[1], scope));
      return ApplyBinary(node.op, left, right);
    }
    case Kind::kConditional: {
      ASSIGN_OR_RETURN(Value cond, Eval(*node.args[0], scope));
      if (!cond.is(ValueType::kBool)) {
        return InvalidArgument(
            fmt::format("the condition before '?' must be a bool, got {}", TypeOf(cond)));
      }
      return Eval(*node.args[cond.as_bool() ? 1 : 2], scope);
    }
    case Kind::kCall: {
      std::array<Value, kMaxArgs> argv;
      int argc = static_cast<int>(node.args.size());
      for (int i = 0; i < argc; ++i) {
        ASSIGN_OR_RETURN(argv[i], Eval(*node.args[i], scope));
      }
      return CallFunction(node, argv.data(), argc);
    }
    case Kind::kCast: {
      ASSIGN_OR_RETURN(Value v, Eval(*node.args[0], scope));
      return ApplyCast(*node.cast, v);
    }
    case Kind::kAssign: {
      ASSIGN_OR_RETURN(Value v, Eval(*node.args[0], scope));
      RETURN_IF_ERROR(WriteVariable(node.name, v, scope));
      return v;
    }
  }
  return Internal("unknown expression node");
}

std::optional<ValueType> StaticType(const Node& node, const Expression::VariableTypes& types) {
  auto number = [](std::optional<ValueType> t) {
    return t == ValueType::kInt || t == ValueType::kDouble ? t : std::nullopt;
  };
  switch (node.kind) {
    case Kind::kLiteral:
      return node.literal.type();
    case Kind::kVariable:
      return types(node.name);
    case Kind::kUnary:
      return node.op == Op::kNot ? ValueType::kBool : number(StaticType(*node.args[0], types));
    case Kind::kBinary: {
      if (node.op != Op::kAdd && node.op != Op::kSub && node.op != Op::kMul &&
          node.op != Op::kDiv && node.op != Op::kMod) {
        return ValueType::kBool;  // comparisons and logic
      }
      const std::optional<ValueType> a = StaticType(*node.args[0], types);
      const std::optional<ValueType> b = StaticType(*node.args[1], types);
      if (node.op == Op::kAdd && (a == ValueType::kString || b == ValueType::kString)) {
        return ValueType::kString;
      }
      if (!number(a) || !number(b)) return std::nullopt;
      return a == ValueType::kInt && b == ValueType::kInt ? ValueType::kInt : ValueType::kDouble;
    }
    case Kind::kConditional: {
      const std::optional<ValueType> a = StaticType(*node.args[1], types);
      return a == StaticType(*node.args[2], types) ? a : std::nullopt;
    }
    case Kind::kCall:
      switch (node.fn) {
        case Fn::kAbs:
        case Fn::kCeiling:
        case Fn::kFloor:
        case Fn::kRound:
          return number(StaticType(*node.args[0], types));
        case Fn::kDateAdd:
        case Fn::kGetDate:
          return ValueType::kDateTime;
        case Fn::kDateDiff:
        case Fn::kDatePart:
        case Fn::kDay:
        case Fn::kFindString:
        case Fn::kLen:
        case Fn::kMonth:
        case Fn::kTokenCount:
        case Fn::kYear:
          return ValueType::kInt;
        case Fn::kLeft:
        case Fn::kLower:
        case Fn::kLtrim:
        case Fn::kReplace:
        case Fn::kRight:
        case Fn::kRtrim:
        case Fn::kSubstring:
        case Fn::kToken:
        case Fn::kTrim:
        case Fn::kUpper:
          return ValueType::kString;
      }
      return std::nullopt;
    case Kind::kCast:
      return node.cast->target;
    case Kind::kAssign:
      return StaticType(*node.args[0], types);  // the value assigned, as Eval gives it
  }
  return std::nullopt;
}

// Runtime errors say which expression failed; `open`/`close` let templates show `${...}`.
Result<Value> EvaluateCompiled(const Compiled& compiled, Scope& scope, std::string_view open = "",
                               std::string_view close = "") {
  auto result = Eval(*compiled.root, scope);
  if (result.ok()) return result;
  return result.status().WithContext(
      fmt::format("evaluating '{}{}{}'{}", open, Excerpt(compiled.text, 200), close,
                  compiled.origin.empty() ? "" : " (" + compiled.origin + ")"));
}

const std::vector<std::string>& NoNames() {
  static const std::vector<std::string> kNone;
  return kNone;
}

const std::string& NoText() {
  static const std::string kEmpty;
  return kEmpty;
}

// One piece of a template: literal text, or an expression when `expr` is set.
struct TemplatePiece {
  std::string literal;
  std::shared_ptr<const Compiled> expr;
};

Result<std::string> Concatenate(const std::vector<TemplatePiece>& pieces, Scope& scope) {
  std::string out;
  for (const TemplatePiece& piece : pieces) {
    if (!piece.expr) {
      out += piece.literal;
      continue;
    }
    ASSIGN_OR_RETURN(Value v, EvaluateCompiled(*piece.expr, scope, "${", "}"));
    if (v.is(ValueType::kString)) {
      out += v.as_string();
    } else {
      out += v.ToString();
    }
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Expression

struct Expression::Impl : Compiled {};

Result<Expression> Expression::Parse(std::string_view text, Options options,
                                     ExpressionError* error) {
  auto impl = std::make_shared<Impl>();
  RETURN_IF_ERROR(Compile(text, options, 0, error, *impl));
  Expression expression;
  expression.impl_ = std::move(impl);
  return expression;
}

Result<Value> Expression::Evaluate(Scope& scope) const {
  if (!impl_) return FailedPrecondition("evaluating an expression that was never parsed");
  return EvaluateCompiled(*impl_, scope);
}

const std::vector<std::string>& Expression::variables() const {
  return impl_ ? impl_->variables : NoNames();
}

std::optional<ValueType> Expression::ResultType(const VariableTypes& variable_type) const {
  return impl_ ? StaticType(*impl_->root, variable_type) : std::nullopt;
}

bool Expression::is_assignment() const { return impl_ && impl_->is_assignment; }

const std::string& Expression::text() const { return impl_ ? impl_->text : NoText(); }

const std::string& Expression::origin() const { return impl_ ? impl_->origin : NoText(); }

// ---------------------------------------------------------------------------------------------
// Template

struct Template::Impl {
  std::string text;
  std::vector<TemplatePiece> pieces;  // adjacent literals merged; empty for ""
  std::vector<std::string> variables;
  bool constant = true;
};

Result<Template> Template::Parse(std::string_view text, ExpressionError* error,
                                 std::string_view origin) {
  auto fail = [&](size_t offset, std::string message) -> Status {
    if (error != nullptr) *error = ExpressionError{offset, message};
    return InvalidArgument(std::move(message));
  };
  auto impl = std::make_shared<Impl>();
  impl->text = std::string(text);
  std::string literal;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (text[i] != '$') {
      literal.push_back(text[i++]);
      continue;
    }
    if (text.substr(i).starts_with("$${")) {
      literal += "${";
      i += 3;
      continue;
    }
    if (i + 1 >= n || text[i + 1] != '{') {
      literal.push_back(text[i++]);
      continue;
    }
    // Find the closing brace, skipping string literals so `${REPLACE(x, "}", "")}` works.
    size_t start = i;
    size_t j = i + 2;
    std::optional<size_t> open_string;
    for (; j < n; ++j) {
      char c = text[j];
      if (open_string) {
        if (c == '\\') {
          ++j;
        } else if (c == '"') {
          open_string.reset();
        }
      } else if (c == '"') {
        open_string = j;
      } else if (c == '}') {
        break;
      }
    }
    if (j >= n) {
      std::string expected = "expected '}'";
      if (open_string) {
        expected += fmt::format(" (the string at column {} is not closed)", *open_string + 1);
      }
      return fail(start, fmt::format("unterminated '${{' at column {}: {}", start + 1, expected));
    }
    std::string_view inner = text.substr(start + 2, j - start - 2);
    if (inner.find_first_not_of(kSpace) == std::string_view::npos) {
      return fail(start, fmt::format("empty '${{}}' at column {}: expected an expression inside",
                                     start + 1));
    }
    Expression::Options options;
    options.bare_names = true;
    options.origin = std::string(origin);
    auto compiled = std::make_shared<Compiled>();
    RETURN_IF_ERROR(Compile(inner, options, start + 2, error, *compiled));
    for (const std::string& name : compiled->variables) {
      if (std::find(impl->variables.begin(), impl->variables.end(), name) ==
          impl->variables.end()) {
        impl->variables.push_back(name);
      }
    }
    if (!literal.empty()) impl->pieces.push_back({std::exchange(literal, {}), nullptr});
    impl->pieces.push_back({std::string(), std::move(compiled)});
    impl->constant = false;
    i = j + 1;
  }
  if (!literal.empty()) impl->pieces.push_back({std::move(literal), nullptr});
  Template result;
  result.impl_ = std::move(impl);
  return result;
}

Result<Value> Template::Render(Scope& scope) const {
  if (!impl_ || impl_->pieces.empty()) return Value(std::string());
  const std::vector<TemplatePiece>& pieces = impl_->pieces;
  if (pieces.size() == 1) {
    if (pieces[0].expr) return EvaluateCompiled(*pieces[0].expr, scope, "${", "}");
    return Value(pieces[0].literal);
  }
  ASSIGN_OR_RETURN(std::string text, Concatenate(pieces, scope));
  return Value(std::move(text));
}

Result<std::string> Template::RenderString(Scope& scope) const {
  if (!impl_ || impl_->pieces.empty()) return std::string();
  const std::vector<TemplatePiece>& pieces = impl_->pieces;
  if (pieces.size() == 1 && !pieces[0].expr) return pieces[0].literal;
  return Concatenate(pieces, scope);
}

bool Template::is_constant() const { return !impl_ || impl_->constant; }

const std::vector<std::string>& Template::variables() const {
  return impl_ ? impl_->variables : NoNames();
}

const std::string& Template::text() const { return impl_ ? impl_->text : NoText(); }

std::string VariableName(std::string_view written) {
  if (written.starts_with("@")) written.remove_prefix(1);
  if (written.starts_with("[") && written.ends_with("]") && written.size() >= 2) {
    written = written.substr(1, written.size() - 2);
  }
  if (written.starts_with("User::")) written.remove_prefix(6);
  return std::string(written);
}

}  // namespace fanout
