// Typed variable storage with conversion on assignment and change events (see variables.h).
#include "engine/variables.h"

#include <algorithm>

#include <fmt/format.h>

namespace fanout {

void VariableStore::Define(const std::string& name, Value value, bool read_only,
                           bool raise_changed_event) {
  std::lock_guard lock(mu_);
  vars_[name] = Variable{std::move(value), read_only, raise_changed_event};
}

Result<Value> VariableStore::Get(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = vars_.find(name);
  if (it == vars_.end()) return NotFound(fmt::format("unknown variable '{}'", name));
  return it->second.value;
}

Status VariableStore::Set(std::string_view name, const Value& value) {
  bool raise = false;
  Value stored;
  {
    std::lock_guard lock(mu_);
    auto it = vars_.find(name);
    if (it == vars_.end()) return NotFound(fmt::format("unknown variable '{}'", name));
    if (it->second.read_only) {
      return InvalidArgument(fmt::format("'{}' is read-only and cannot be assigned", name));
    }
    auto converted = value.ConvertTo(it->second.value.type());
    if (!converted.ok()) {
      return InvalidArgument(fmt::format("cannot assign to {} variable '{}': {}",
                                         ValueTypeName(it->second.value.type()), name,
                                         converted.status().message()));
    }
    it->second.value = std::move(converted).value();
    raise = it->second.raise_changed_event;
    if (raise) stored = it->second.value;
  }
  if (raise && on_change_) on_change_(std::string(name), stored);
  return Status::Ok();
}

size_t LoopScope::Find(std::string_view name) const {
  return static_cast<size_t>(std::find(names_.begin(), names_.end(), name) - names_.begin());
}

Result<Value> LoopScope::Get(std::string_view name) const {
  if (size_t k = Find(name); k < names_.size()) {
    std::lock_guard lock(mu_);
    return values_[k];
  }
  return parent_.Get(name);
}

// A loop variable has its item's type, and converts what is assigned to it as a declared
// variable does (QA: a string went into an int item unconverted).
Status LoopScope::Set(std::string_view name, const Value& value) {
  if (size_t k = Find(name); k < names_.size()) {
    std::lock_guard lock(mu_);
    auto converted = value.ConvertTo(values_[k].type());
    if (!converted.ok()) {
      return InvalidArgument(fmt::format("cannot assign to loop variable '{}' (its item's type "
                                         "is {}): {}",
                                         name, ValueTypeName(values_[k].type()),
                                         converted.status().message()));
    }
    values_[k] = std::move(converted).value();
    return Status::Ok();
  }
  return parent_.Set(name, value);
}

}  // namespace fanout
