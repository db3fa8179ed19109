// Variable storage for one execution: the package's parameters, variables and System::
// values (VariableStore), and the per-iteration variable of a foreach loop (LoopScope).
// Both are Scopes and are safe to use from several task threads at once.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>

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
  LoopScope(Scope& parent, std::string name, Value value)
      : parent_(parent), name_(std::move(name)), value_(std::move(value)) {}

  Result<Value> Get(std::string_view name) const override;
  Status Set(std::string_view name, const Value& value) override;

 private:
  Scope& parent_;
  const std::string name_;
  mutable std::mutex mu_;
  Value value_;
};

}  // namespace fanout
