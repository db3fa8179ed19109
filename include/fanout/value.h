// Value: the typed, never-null value of a Fanout variable or parameter, and the result of an
// expression. Types follow DESIGN §3: string, int, double, bool, datetime, list.
// Values are plain copyable data; share them between threads like any other value.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fanout/status.h"

namespace fanout {

enum class ValueType { kString, kInt, kDouble, kBool, kDateTime, kList };

// "string", "int", "double", "bool", "datetime", "list".
const char* ValueTypeName(ValueType type);
// Parses a type name as written in a package; nullopt-like failure as a Status.
Result<ValueType> ParseValueType(std::string_view name);

using DateTime = std::chrono::sys_time<std::chrono::microseconds>;

class Value {
 public:
  using List = std::vector<Value>;

  Value() : data_(std::string()) {}
  Value(std::string s) : data_(std::move(s)) {}       // NOLINT: implicit by design
  Value(const char* s) : data_(std::string(s)) {}     // NOLINT
  Value(int64_t i) : data_(i) {}                      // NOLINT
  Value(int i) : data_(static_cast<int64_t>(i)) {}    // NOLINT
  Value(double d) : data_(d) {}                       // NOLINT
  Value(bool b) : data_(b) {}                         // NOLINT
  Value(DateTime t) : data_(t) {}                     // NOLINT
  Value(List l) : data_(std::move(l)) {}              // NOLINT

  // The zero value of a type: "", 0, 0.0, false, the epoch, [].
  static Value Default(ValueType type);

  ValueType type() const { return static_cast<ValueType>(data_.index()); }
  bool is(ValueType t) const { return type() == t; }

  const std::string& as_string() const { return std::get<std::string>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_double() const { return std::get<double>(data_); }
  bool as_bool() const { return std::get<bool>(data_); }
  DateTime as_datetime() const { return std::get<DateTime>(data_); }
  const List& as_list() const { return std::get<List>(data_); }

  // Text form used by interpolation, logs and --set round trips: strings as is, ints in decimal,
  // doubles shortest round-trip, bools "true"/"false", datetimes ISO 8601 UTC
  // ("2026-11-26T03:04:05.123456Z"), lists as JSON-like "[a, b]".
  std::string ToString() const;

  // Converts to `target`, as assigning to a typed variable does: numbers between numeric types
  // (double -> int only when integral), strings parsed ("42", "1.5", "true"/"false"/"1"/"0",
  // ISO 8601), anything to string via ToString(). A list converts only to list or string.
  // Fails with InvalidArgument saying what could not be converted.
  Result<Value> ConvertTo(ValueType target) const;

  friend bool operator==(const Value& a, const Value& b) { return a.data_ == b.data_; }

 private:
  std::variant<std::string, int64_t, double, bool, DateTime, List> data_;
};

// ISO 8601 parse/format helpers shared by Value and the catalog.
Result<DateTime> ParseDateTime(std::string_view text);
// The current time, to the microsecond.
DateTime Now();
std::string FormatDateTime(DateTime t);

}  // namespace fanout
