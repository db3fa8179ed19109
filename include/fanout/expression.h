// The SSIS-style expression language of packages (DESIGN §3): `when:` conditions, `${...}`
// interpolation, for-loop init/condition/assign and the `expression` task.
//
// Parsing happens once, at validation time, so a bad expression is reported with its position
// before anything runs. A parsed Expression is immutable and may be evaluated from many threads
// at once, each with its own Scope.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fanout/status.h"
#include "fanout/value.h"

namespace fanout {

// Where an expression reads and writes variables. Names are as written without `@` and without
// brackets: `@rows` and `@[User::rows]` both look up "rows"; `@[System::StartTime]` looks up
// "System::StartTime".
class Scope {
 public:
  virtual ~Scope() = default;
  // The current value, or NotFound.
  virtual Result<Value> Get(std::string_view name) const = 0;
  // Assigns, converting to the variable's declared type; NotFound / InvalidArgument on failure.
  virtual Status Set(std::string_view name, const Value& value) = 0;
};

// A parse error: `offset` is the 0-based byte offset into the text that was parsed.
struct ExpressionError {
  size_t offset = 0;
  std::string message;  // what is wrong and what was expected
};

class Expression {
 public:
  // Parses one expression. `bare_names` allows variables without `@` (used inside `${...}`,
  // where `${run_date}` means `@run_date`). Top-level assignments `@x = expr` are allowed only
  // when `allow_assignment` is set (for-loop init and assign).
  struct Options {
    bool bare_names = false;
    bool allow_assignment = false;
    // Where the text is written ("FILE:LINE:COLUMN"), named in its runtime errors.
    std::string origin;
  };
  static Result<Expression> Parse(std::string_view text, Options options,
                                  ExpressionError* error = nullptr);
  static Result<Expression> Parse(std::string_view text) { return Parse(text, Options{}); }

  // Evaluates; assignments write through `scope`. Runtime errors (division by zero, a type
  // mismatch, an unknown variable) come back as InvalidArgument with a message.
  Result<Value> Evaluate(Scope& scope) const;

  // The type of every value the expression gives when it succeeds, when the expression alone
  // tells it: literals, casts, functions, comparisons and logic, arithmetic on known types, and
  // variables whose type `variable_type` knows. nullopt when it depends on the values.
  using VariableTypes = std::function<std::optional<ValueType>(std::string_view name)>;
  std::optional<ValueType> ResultType(const VariableTypes& variable_type) const;

  // Every variable the expression reads or assigns, for validation of unknown names.
  const std::vector<std::string>& variables() const;
  // True when the expression is (only) an assignment `@x = ...`.
  bool is_assignment() const;
  const std::string& text() const;
  // Options::origin: where the text is written, "" when unknown.
  const std::string& origin() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// A variable's name as Scope takes it, from one written where a variable is named rather than
// read (`set:` keys, `--set NAME=`), in any form an expression takes: "@rows", "@[User::rows]"
// and "User::rows" are all "rows".
std::string VariableName(std::string_view written);

// A string that may contain `${...}` pieces. Text outside `${}` is literal; `$${` writes a
// literal `${`. A template that is exactly one `${expr}` keeps the value's type (a list stays a
// list); otherwise the pieces are joined as strings.
class Template {
 public:
  // `origin` as in Expression::Options.
  static Result<Template> Parse(std::string_view text, ExpressionError* error = nullptr,
                                std::string_view origin = {});

  Result<Value> Render(Scope& scope) const;
  // Render() then ToString().
  Result<std::string> RenderString(Scope& scope) const;

  bool is_constant() const;  // no `${}` at all
  const std::vector<std::string>& variables() const;
  const std::string& text() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace fanout
