// The `expression` task (SSIS Expression task): assigns variables from expressions, in order.
//   set: {rows: "@rows + 1", label: "UPPER(@region)"}
#include "tasks/expression/expression_task.h"

#include <map>

#include <fmt/format.h>

namespace fanout {
namespace {

class ExpressionTask : public Task {
 public:
  std::vector<std::pair<std::string, Expression>> assignments;

  TaskOutcome Execute(TaskContext& context) const override {
    for (const auto& [name, expr] : assignments) {
      auto value = expr.Evaluate(context.scope());
      if (!value.ok()) {
        // The message names the expression ("evaluating '...'"): say which assignment it was.
        return TaskOutcome::Failure(fmt::format("setting {}: {}", name, value.status().message()));
      }
      Status set = context.scope().Set(name, *value);
      if (!set.ok()) {
        const std::string& origin = expr.origin();
        return TaskOutcome::Failure(fmt::format("setting {}: '{}'{}: {}", name, expr.text(),
                                                origin.empty() ? "" : " (" + origin + ")",
                                                set.message()));
      }
    }
    return TaskOutcome::Success();
  }
  bool runs_inline() const override { return true; }
};

class ExpressionTaskType : public TaskType {
 public:
  std::string_view name() const override { return "expression"; }
  std::vector<std::string_view> keys() const override { return {"set"}; }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    YAML::Node set = node["set"];
    if (!set || !set.IsMap() || set.size() == 0) {
      parser.Error(set ? set : node,
                   "an expression task needs `set:`, a mapping of variable to expression, "
                   "e.g. set: {rows: \"@rows + 1\"}");
      return nullptr;
    }
    auto task = std::make_shared<ExpressionTask>();
    bool ok = true;
    std::map<std::string, std::string> assigned;  // variable -> its key as written
    for (auto it = set.begin(); it != set.end(); ++it) {
      std::string name = VariableName(it->first.Scalar());
      // `x` and `User::x` are one variable: written twice, as a key written twice is (QA; the
      // same key twice is said as a duplicate key).
      auto [first, added] = assigned.emplace(name, it->first.Scalar());
      if (!added && first->second != it->first.Scalar()) {
        parser.Error(it->first, fmt::format("`set` assigns '{}' twice (as {} and {})", name,
                                            first->second, it->first.Scalar()));
        ok = false;
      }
      parser.CheckVariable(it->first, name);
      // Parse each value through the shared expression checks by looking it up as a key.
      auto expr = parser.ExpressionAt(set, it->first.Scalar(), true);
      if (!expr) {
        ok = false;
        continue;
      }
      task->assignments.emplace_back(name, std::move(*expr));
    }
    return ok ? task : nullptr;
  }
};

}  // namespace

std::unique_ptr<TaskType> MakeExpressionTaskType() {
  return std::make_unique<ExpressionTaskType>();
}

}  // namespace fanout
