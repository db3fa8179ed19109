// Parameter values as JSON, the form they take on the way to a child package in another process
// (`out_of_process: true`, an agent's package step) and in an agent's start request: a list's
// items keep their types there, as they do for a child run in the parent's process.
#pragma once

#include <nlohmann/json.hpp>

#include "fanout/status.h"
#include "fanout/value.h"

namespace fanout {

// A scalar becomes its text (the child converts it to the type it declares, as it does a
// `--set`); a list becomes an array whose items are JSON strings, numbers, booleans (a datetime
// is its text) and arrays for rows. Fails on text that is not UTF-8, which JSON cannot carry
// (the message does not show the value: it may be a secret).
Result<nlohmann::json> ParamToJson(const Value& value);
// Whether every text in a parameter's JSON value is UTF-8, as ParamToJson checks it: a JSON
// value built by hand (`fanout job start --param`) may hold any bytes until it is written.
Status CheckParamUtf8(const nlohmann::json& json);

// Back to a Value: a string, number or boolean, or an array of those and of arrays. Fails, saying
// what was found, on null and objects.
Result<Value> ParamFromJson(const nlohmann::json& json);

// Calls `each(item, text)` with every string, number and boolean in `json`, at any depth of
// arrays, and its text (a number's or boolean's as JSON writes it): where secrets are looked
// for and masked. Numbers too: a sensitive list of PINs travels as numbers.
template <typename Json, typename Fn>
void ForEachScalar(Json& json, Fn&& each) {
  if (json.is_array()) {
    for (auto& item : json) ForEachScalar(item, each);
  } else if (json.is_string()) {
    each(json, json.template get<std::string>());
  } else if (json.is_number() || json.is_boolean()) {
    each(json, json.dump());
  }
}

}  // namespace fanout
