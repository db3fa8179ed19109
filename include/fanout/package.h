// The in-memory form of a package file (DESIGN §3) and the loader that builds it with every
// problem reported at once, each with file:line:column. A loaded Package is immutable and is
// shared between threads (loops, child executions) through shared_ptr<const Package>.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fanout/event.h"
#include "fanout/expression.h"
#include "fanout/status.h"
#include "fanout/value.h"

namespace fanout {

class Task;

struct SourcePos {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based
};

// One problem found while loading: "file:line:col: message".
struct Diagnostic {
  SourcePos pos;
  std::string message;
  std::string ToString() const;
};

class Diagnostics {
 public:
  void Error(const SourcePos& pos, std::string message) {
    items_.push_back({pos, std::move(message)});
  }
  bool empty() const { return items_.empty(); }
  const std::vector<Diagnostic>& items() const { return items_; }
  // The problems in file order (line, then column), as they are found otherwise.
  std::vector<Diagnostic> Sorted() const;
  // All problems, one per line, in file order.
  std::string ToString() const;

 private:
  std::vector<Diagnostic> items_;
};

struct ParameterDef {
  std::string name;
  ValueType type = ValueType::kString;
  bool required = false;
  bool sensitive = false;
  std::optional<Value> default_value;
  std::string description;
  SourcePos pos;
};

struct VariableDef {
  std::string name;
  ValueType type = ValueType::kString;
  Value value;
  bool read_only = false;
  bool raise_changed_event = false;  // SSIS RaiseChangedEvent: emit OnVariableValueChanged
  SourcePos pos;
};

// A connection manager. Settings are templates so they may use parameters ("${db_password}").
struct ConnectionDef {
  std::string name;
  std::string type;  // sqlite, agent, agent-pool
  std::map<std::string, Template> settings;
  std::vector<std::string> members;    // agent-pool: names of agent connections
  std::vector<SourcePos> member_pos;
  SourcePos pos;
};

struct LoggingDef {
  std::string provider;  // text | jsonl | console
  std::string path;      // relative to the package's folder
  std::vector<EventType> events;  // empty: all
  SourcePos pos;
};

enum class ConstraintValue { kSuccess, kFailure, kCompletion };

// "run this task after `task`, when it ended with `on` and/or `when` holds".
struct Constraint {
  std::string task;
  size_t task_index = 0;  // index of `task` among the container's children
  std::optional<ConstraintValue> on;  // absent with `when`: SSIS Expression-only evaluation
  std::optional<Expression> when;
  SourcePos pos;
};

enum class ContainerKind { kNone, kSequence, kFor, kForeach };

struct TaskDef {
  std::string name;
  std::string type;
  std::string description;
  SourcePos pos;

  std::vector<Constraint> after;
  bool after_or = false;  // after_logic: or
  bool disabled = false;
  bool fail_package_on_failure = false;
  std::optional<std::chrono::milliseconds> timeout;
  int retries = 0;
  std::chrono::milliseconds retry_delay{0};

  // A leaf task's parsed, type-specific part; null for containers.
  std::shared_ptr<const Task> task;

  // Containers.
  ContainerKind container = ContainerKind::kNone;
  std::vector<TaskDef> children;
  int maximum_error_count = 1;
  // for: init and assign are assignments, condition a boolean expression.
  std::vector<Expression> for_init;
  std::optional<Expression> for_condition;
  std::vector<Expression> for_assign;
  // foreach: items (a list written inline, or a template rendering a list) or files (a glob).
  std::optional<Value> foreach_list;
  // Inline items (or values of inline rows) written with `${...}`, rendered into their places
  // in foreach_list when the loop starts.
  struct ItemTemplate {
    size_t item;
    std::optional<size_t> column;  // of the row `item` is
    Template text;
  };
  std::vector<ItemTemplate> foreach_list_templates;
  std::optional<Template> foreach_items;
  std::optional<Template> foreach_files;
  // The loop's variables: `as: row` holds each item whole; `as: [id, region]` (SSIS's ADO
  // enumerator mapping columns by index) takes each item, a list, value by value.
  std::vector<std::string> foreach_as;
  bool foreach_as_values = false;  // `as` was a list of names
  int foreach_max_concurrent = 1;  // iterations at once; SSIS runs them one by one

  // Indices of the children that name this child in `after` (filled by the loader).
  std::vector<size_t> successors;
  bool is_container() const { return container != ContainerKind::kNone; }
};

struct Package {
  std::string name;
  std::string description;
  std::string path;      // the file it was loaded from
  std::string dir;       // its folder: relative paths in the package resolve here
  std::string sha256;    // of the file's bytes
  int max_concurrent = 0;  // 0: cores + 2
  int maximum_error_count = 1;
  std::vector<ParameterDef> parameters;
  std::vector<VariableDef> variables;
  std::map<std::string, ConnectionDef> connections;
  std::vector<LoggingDef> logging;
  std::vector<TaskDef> tasks;

  const ParameterDef* FindParameter(const std::string& name) const;
  const VariableDef* FindVariable(const std::string& name) const;
  // For each name of `sets` (--set NAME=VALUE) that is no parameter or variable here: "--set
  // NAME: the package has no parameter or variable of that name (it has: ...)". `fanout run`
  // and `fanout validate` both report them.
  std::vector<std::string> UndeclaredSetErrors(const std::map<std::string, std::string>& sets) const;
};

// Loads and validates a package file. On failure the Status is NotFound (no such file) or
// InvalidArgument, and `diagnostics` lists every problem found.
Result<std::shared_ptr<const Package>> LoadPackage(const std::string& path,
                                                   Diagnostics& diagnostics);
// The same from text already in memory; `path` is used for messages and relative paths.
Result<std::shared_ptr<const Package>> LoadPackageText(const std::string& text,
                                                       const std::string& path,
                                                       Diagnostics& diagnostics);
// Parses as far as possible even when there are problems (for `fanout validate`, which checks
// more); null only when the text is not a YAML mapping.
std::shared_ptr<const Package> ParsePackage(const std::string& text, const std::string& path,
                                            Diagnostics& diagnostics);

// System variables every package sees, as `@[System::Name]`.
const std::vector<std::string>& SystemVariableNames();

}  // namespace fanout
