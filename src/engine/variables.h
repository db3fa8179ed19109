// Variable storage for one execution: the package's parameters, variables and System::
// values (VariableStore), and the per-iteration variable of a foreach loop (LoopScope).
// Both are Scopes and are safe to use from several task threads at once.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "fanout/expression.h"

namespace fanout {

class VariableStore : public Scope {
 public:
  using ChangeHook = std::function<void(const std::string& name, const Value& value)>;
  explicit VariableStore(ChangeHook on_change) : on_change_(std::move(on_change)) {}

  // Adds a variable; its type is the type of `value`.
  void Define(const std::string& name, Value value, bool read_only, bool raise_changed_event);

  Result<Value> Get(std::string_view name) const override;
  Status Set(std::string_view name, const Value& value) override;

 private:
  struct Variable {
    Value value;
    bool read_only = false;
    bool raise_changed_event = false;
  };
  mutable std::mutex mu_;
  std::map<std::string, Variable, std::less<>> vars_;
  ChangeHook on_change_;
};

class LoopScope : public Scope {
 public:
  // names[k] holds values[k].
  LoopScope(Scope& parent, const std::vector<std::string>& names, std::vector<Value> values)
      : parent_(parent), names_(names), values_(std::move(values)) {}

  Result<Value> Get(std::string_view name) const override;
  Status Set(std::string_view name, const Value& value) override;

 private:
  // The index of `name` among the loop's variables, or names_.size().
  size_t Find(std::string_view name) const;

  Scope& parent_;
  const std::vector<std::string>& names_;
  mutable std::mutex mu_;
  std::vector<Value> values_;
};

}  // namespace fanout
