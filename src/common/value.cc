// Value: type names, zero values, the text form and the conversions used when a value is assigned
// to a typed variable or parameter (see fanout/value.h). ISO 8601 parsing lives in time.cc.
#include "fanout/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include "common/util.h"

namespace fanout {
namespace {

constexpr std::string_view kWhitespace = " \t\n\r\f\v";

// Values captured from process output usually end in a newline; conversions ignore it.
std::string_view TrimSpace(std::string_view s) {
  size_t begin = s.find_first_not_of(kWhitespace);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kWhitespace);
  return s.substr(begin, end - begin + 1);
}

// "+5" is accepted like "5"; "+-5" is not.
std::string_view StripPlus(std::string_view s) {
  if (s.size() > 1 && s[0] == '+' && s[1] != '-') s.remove_prefix(1);
  return s;
}

// Error messages quote the offending value, but never a long one in full: it may be a whole
// captured file, or something that should not end up in a log.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 40;
  if (s.size() <= kMaxShown) return fmt::format("'{}'", s);
  return fmt::format("'{}...'", s.substr(0, kMaxShown));
}

Status CannotConvert(const Value& from, ValueType target, std::string_view why = {}) {
  std::string shown = from.is(ValueType::kList) ? std::string("[...]") : Quote(from.ToString());
  std::string message = fmt::format("cannot convert {} {} to {}", ValueTypeName(from.type()), shown,
                                    ValueTypeName(target));
  if (!why.empty()) message += fmt::format(": {}", why);
  return InvalidArgument(std::move(message));
}

// A list element is written bare unless that would not read back as the same single string.
bool NeedsQuotes(std::string_view s) {
  if (s.empty()) return true;
  if (kWhitespace.find(s.front()) != std::string_view::npos) return true;
  if (kWhitespace.find(s.back()) != std::string_view::npos) return true;
  return s.find_first_of(",[]\"\\") != std::string_view::npos;
}

void AppendListText(const Value::List& list, std::string& out) {
  out.push_back('[');
  for (size_t i = 0; i < list.size(); ++i) {
    if (i > 0) out += ", ";
    const Value& item = list[i];
    if (item.is(ValueType::kString) && NeedsQuotes(item.as_string())) {
      out.push_back('"');
      for (char c : item.as_string()) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
      }
      out.push_back('"');
    } else {
      out += item.ToString();
    }
  }
  out.push_back(']');
}

// Reads back the text form of a list: `[a, "b, c", [d]]`. Elements are strings (or nested lists);
// the list's declared element types, if any, are for the caller to apply.
class ListReader {
 public:
  explicit ListReader(std::string_view text) : text_(text) {}

  Result<Value::List> ReadAll() {
    auto list = ReadList();
    if (!list.ok()) return list;
    SkipSpace();
    if (pos_ != text_.size()) return Error("text after the closing ']'");
    return list;
  }

 private:
  Result<Value::List> ReadList() {
    SkipSpace();
    if (pos_ >= text_.size() || text_[pos_] != '[') return Error("expected '['");
    ++pos_;
    Value::List list;
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return list;
    }
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size()) return Error("missing ']'");
      char c = text_[pos_];
      if (c == '[') {
        auto nested = ReadList();
        if (!nested.ok()) return nested;
        list.emplace_back(std::move(nested).value());
      } else if (c == '"') {
        auto quoted = ReadQuoted();
        if (!quoted.ok()) return quoted.status();
        list.emplace_back(std::move(quoted).value());
      } else {
        size_t end = text_.find_first_of(",]", pos_);
        if (end == std::string_view::npos) return Error("missing ']'");
        std::string_view bare = TrimSpace(text_.substr(pos_, end - pos_));
        if (bare.empty()) return Error("empty element; write \"\" for an empty string");
        list.emplace_back(std::string(bare));
        pos_ = end;
      }
      SkipSpace();
      if (pos_ >= text_.size()) return Error("missing ']'");
      if (text_[pos_] == ']') {
        ++pos_;
        return list;
      }
      if (text_[pos_] != ',') return Error("expected ',' or ']' after an element");
      ++pos_;
    }
  }

  Result<std::string> ReadQuoted() {
    ++pos_;  // the opening quote
    std::string out;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c == '\\' && pos_ < text_.size()) c = text_[pos_++];
      out.push_back(c);
    }
    return Error("unterminated quoted element");
  }

  void SkipSpace() {
    while (pos_ < text_.size() && kWhitespace.find(text_[pos_]) != std::string_view::npos) ++pos_;
  }

  Status Error(std::string_view what) const {
    return InvalidArgument(fmt::format("cannot convert string {} to list: {} at character {}",
                                       Quote(text_), what, pos_ + 1));
  }

  std::string_view text_;
  size_t pos_ = 0;
};

Result<Value> StringToInt(const Value& from) {
  std::string_view digits = StripPlus(TrimSpace(from.as_string()));
  int64_t i = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
  if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty()) {
    return Value(i);
  }
  if (ec == std::errc::result_out_of_range) {
    return CannotConvert(from, ValueType::kInt, "out of the 64-bit range");
  }
  // "42.0" is a whole number written as a decimal; accept it as "numbers between numeric types"
  // would.
  double d = 0;
  auto [dend, dec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
  if (dec == std::errc() && dend == digits.data() + digits.size() && !digits.empty()) {
    auto converted = Value(d).ConvertTo(ValueType::kInt);
    if (converted.ok()) return converted;
    return CannotConvert(from, ValueType::kInt, "not a whole number");
  }
  return CannotConvert(from, ValueType::kInt);
}

Result<Value> StringToDouble(const Value& from) {
  std::string_view text = StripPlus(TrimSpace(from.as_string()));
  double d = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return CannotConvert(from, ValueType::kDouble);
  }
  if (!std::isfinite(d)) return CannotConvert(from, ValueType::kDouble, "not a finite number");
  return Value(d);
}

Result<Value> StringToBool(const Value& from) {
  std::string_view text = TrimSpace(from.as_string());
  if (EqualsIgnoreCase(text, "true") || text == "1") return Value(true);
  if (EqualsIgnoreCase(text, "false") || text == "0") return Value(false);
  return CannotConvert(from, ValueType::kBool, "use true, false, 1 or 0");
}

Result<Value> StringToDateTime(const Value& from) {
  auto t = ParseDateTime(TrimSpace(from.as_string()));
  if (!t.ok()) return InvalidArgument("cannot convert to datetime: " + t.status().message());
  return Value(*t);
}

}  // namespace

const char* ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kString:
      return "string";
    case ValueType::kInt:
      return "int";
    case ValueType::kDouble:
      return "double";
    case ValueType::kBool:
      return "bool";
    case ValueType::kDateTime:
      return "datetime";
    case ValueType::kList:
      return "list";
  }
  return "unknown";
}

Result<ValueType> ParseValueType(std::string_view name) {
  static constexpr ValueType kAll[] = {ValueType::kString, ValueType::kInt,      ValueType::kDouble,
                                       ValueType::kBool,   ValueType::kDateTime, ValueType::kList};
  for (ValueType type : kAll) {
    if (name == ValueTypeName(type)) return type;
  }
  return InvalidArgument(fmt::format(
      "unknown type '{}'; expected one of string, int, double, bool, datetime, list", name));
}

Value Value::Default(ValueType type) {
  switch (type) {
    case ValueType::kString:
      return Value(std::string());
    case ValueType::kInt:
      return Value(int64_t{0});
    case ValueType::kDouble:
      return Value(0.0);
    case ValueType::kBool:
      return Value(false);
    case ValueType::kDateTime:
      return Value(DateTime{});
    case ValueType::kList:
      return Value(List{});
  }
  return Value();
}

std::string Value::ToString() const {
  switch (type()) {
    case ValueType::kString:
      return as_string();
    case ValueType::kInt:
      return std::to_string(as_int());
    case ValueType::kDouble: {
      // Shortest text that parses back to the same double (no "0.30000000000000004" surprises
      // from printf, and no lost digits either).
      char buf[64];
      // + 0.0 turns -0 (CEILING(-0.5), ROUND(-0.4)) into 0, as SSIS shows it.
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, as_double() + 0.0);
      if (ec != std::errc()) return "nan";  // cannot happen with 64 bytes; keep a sane answer
      return std::string(buf, end);
    }
    case ValueType::kBool:
      return as_bool() ? "true" : "false";
    case ValueType::kDateTime:
      return FormatDateTime(as_datetime());
    case ValueType::kList: {
      std::string out;
      AppendListText(as_list(), out);
      return out;
    }
  }
  return {};
}

Result<Value> Value::ConvertTo(ValueType target) const {
  ValueType from = type();
  if (from == target) return *this;
  if (target == ValueType::kString) return Value(ToString());
  switch (from) {
    case ValueType::kString:
      switch (target) {
        case ValueType::kInt:
          return StringToInt(*this);
        case ValueType::kDouble:
          return StringToDouble(*this);
        case ValueType::kBool:
          return StringToBool(*this);
        case ValueType::kDateTime:
          return StringToDateTime(*this);
        case ValueType::kList: {
          auto list = ListReader(as_string()).ReadAll();
          if (!list.ok()) return list.status();
          return Value(std::move(list).value());
        }
        case ValueType::kString:
          break;
      }
      break;
    case ValueType::kInt:
      if (target == ValueType::kDouble) return Value(static_cast<double>(as_int()));
      if (target == ValueType::kBool) return Value(as_int() != 0);
      break;
    case ValueType::kDouble: {
      double d = as_double();
      if (target == ValueType::kInt) {
        if (!std::isfinite(d) || d != std::trunc(d)) {
          return CannotConvert(*this, target, "not a whole number");
        }
        // 2^63 is exactly representable; anything at or beyond it does not fit.
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0) {
          return CannotConvert(*this, target, "out of the 64-bit range");
        }
        return Value(static_cast<int64_t>(d));
      }
      if (target == ValueType::kBool) return Value(d != 0.0);
      break;
    }
    case ValueType::kBool:
      // SSIS's expression language makes TRUE -1: `(DT_I4)@flag` in a ported package means that.
      if (target == ValueType::kInt) return Value(int64_t{as_bool() ? -1 : 0});
      if (target == ValueType::kDouble) return Value(as_bool() ? -1.0 : 0.0);
      break;
    case ValueType::kDateTime:
    case ValueType::kList:
      break;
  }
  return CannotConvert(*this, target);
}

}  // namespace fanout
