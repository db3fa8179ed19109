// Parameter values to and from JSON: see param_json.h.
#include "common/param_json.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "common/util.h"

namespace fanout {

namespace {

nlohmann::json ItemToJson(const Value& item) {
  switch (item.type()) {
    case ValueType::kInt: return item.as_int();
    case ValueType::kDouble:
      // JSON has no NaN or infinity (nlohmann writes them as null): those go as their text.
      if (!std::isfinite(item.as_double())) break;
      return item.as_double();
    case ValueType::kBool: return item.as_bool();
    case ValueType::kList: {
      nlohmann::json row = nlohmann::json::array();
      for (const Value& v : item.as_list()) row.push_back(ItemToJson(v));
      return row;
    }
    case ValueType::kString:
    case ValueType::kDateTime:
      break;
  }
  return item.ToString();
}

}  // namespace

Result<nlohmann::json> ParamToJson(const Value& value) {
  nlohmann::json json =
      value.is(ValueType::kList) ? ItemToJson(value) : nlohmann::json(value.ToString());
  RETURN_IF_ERROR(CheckParamUtf8(json));
  return json;
}

Status CheckParamUtf8(const nlohmann::json& json) {
  Status bad;
  int value = 0;  // of a list, counting rows' values in order
  ForEachScalar(json, [&](const nlohmann::json&, const std::string& text) {
    ++value;
    if (auto at = InvalidUtf8At(text); at && bad.ok()) {
      bad = InvalidArgument(fmt::format(
          "{} is not UTF-8 text (byte {} is 0x{:02X}); parameters reach another process or an "
          "agent as JSON, which holds only UTF-8: convert it (iconv) or rename the file",
          json.is_array() ? fmt::format("value {} of its list (rows' values counted in order)",
                                        value)
                          : "its value",
          *at, static_cast<unsigned char>(text[*at])));
    }
  });
  return bad;
}

Result<Value> ParamFromJson(const nlohmann::json& json) {
  switch (json.type()) {
    case nlohmann::json::value_t::string: {
      // A process step gets it in its environment, which ends a value at a NUL: the step would
      // see less than was sent, and nothing would say so (review).
      std::string text = json.get<std::string>();
      if (const size_t nul = text.find('\0'); nul != std::string::npos) {
        // Not quoted: it may be a secret, or megabytes long (review).
        return InvalidArgument(fmt::format("a text holding a NUL byte (at byte {}), which no "
                                           "program's environment or argument can carry",
                                           nul + 1));
      }
      return Value(std::move(text));
    }
    case nlohmann::json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t n = json.get<uint64_t>();
      if (n > static_cast<uint64_t>(INT64_MAX)) {
        return InvalidArgument(fmt::format("{} is out of the 64-bit range", n));
      }
      return Value(static_cast<int64_t>(n));
    }
    case nlohmann::json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::json::value_t::array: {
      Value::List list;
      for (const nlohmann::json& item : json) {
        auto v = ParamFromJson(item);
        if (!v.ok()) return v;
        list.push_back(std::move(*v));
      }
      return Value(std::move(list));
    }
    default:
      break;
  }
  return InvalidArgument(fmt::format("{} is no parameter value: a string, a number, a boolean, "
                                     "or a list of these and of lists",
                                     json.dump()));
}

}  // namespace fanout
