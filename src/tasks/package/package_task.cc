// The `package` task: runs a child package file as its own execution linked to the parent's,
// in this process (default, as SSIS's ExecuteOutOfProcess=false) or as a separate
// `fanout run` process. The child's result is the task's result.
#include "tasks/package/package_task.h"

#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/param_json.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "fanout/engine.h"

namespace fanout {
namespace {

// The `fanout` binary to start for out-of-process children: FANOUT_BIN, else this program.
std::string FanoutBinary() {
  if (const char* bin = std::getenv("FANOUT_BIN"); bin != nullptr && *bin != '\0') return bin;
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "fanout";
  return std::string(buf, static_cast<size_t>(n));
}

std::string Canonical(const std::string& path) {
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : canonical.string();
}

// The `FILE:LINE:COLUMN: error: ...` lines of a load's diagnostics, joined with "; ": every
// problem of a child that cannot be loaded, not only one.
std::string ErrorLines(std::string_view text) {
  std::string problems;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (line.find(": error: ") != std::string_view::npos) {
      problems += (problems.empty() ? "" : "; ") + std::string(line);
    }
    start = end + 1;
  }
  return problems;
}

class PackageTask : public Task {
 public:
  Template path;
  std::map<std::string, Template> params;
  bool out_of_process = false;

  explicit PackageTask(Template p) : path(std::move(p)) {}

  TaskOutcome Execute(TaskContext& context) const override {
    auto rendered = path.RenderString(context.scope());
    if (!rendered.ok()) return TaskOutcome::Failure(rendered.status().message());
    std::string file = context.ResolvePath(*rendered);
    std::map<std::string, Value> values;
    for (const auto& [name, t] : params) {
      auto v = t.Render(context.scope());
      if (!v.ok()) return TaskOutcome::Failure(fmt::format("param {}: {}", name, v.status().message()));
      values.emplace(name, std::move(*v));
    }
    // This package and the ones running it: a child among them would run itself, and so on
    // until the machine runs out of threads or processes.
    std::vector<std::string> ancestors = context.run_options().ancestors;
    ancestors.push_back(Canonical(context.package().path));
    std::string target = Canonical(file);
    if (std::find(ancestors.begin(), ancestors.end(), target) != ancestors.end()) {
      std::string chain;
      for (const std::string& a : ancestors) chain += a + " -> ";
      return TaskOutcome::Failure(fmt::format(
          "child package {} would run itself ({}{}); a package cannot run itself, directly or "
          "through its children", file, chain, target));
    }
    std::string child_id = NewExecutionId();
    // Linked while it runs, not only at its end: the overview of a running (or killed) parent
    // shows which child each package task is running.
    context.RecordWhereItRuns("", child_id);
    TaskOutcome outcome = out_of_process
                              ? RunOutOfProcess(context, file, values, ancestors, child_id)
                              : RunInProcess(context, file, values, ancestors, child_id);
    outcome.child_execution_id = child_id;
    return outcome;
  }

 private:
  TaskOutcome RunInProcess(TaskContext& context, const std::string& file,
                           std::map<std::string, Value> values, std::vector<std::string> ancestors,
                           const std::string& child_id) const {
    Diagnostics diagnostics;
    auto child = LoadPackage(file, diagnostics);
    if (!child.ok()) {
      std::string detail = diagnostics.empty() ? child.status().message()
                                               : ErrorLines(diagnostics.ToString());
      return TaskOutcome::Failure(fmt::format("cannot load child package {}: {}", file,
                                              detail.empty() ? child.status().message() : detail));
    }
    RunOptions options;
    options.params = std::move(values);
    options.execution_id = child_id;
    options.parent_execution_id = context.execution_id();
    options.catalog_spec = context.run_options().catalog_spec;
    options.catalog_unreachable = context.run_options().catalog_unreachable;
    options.ancestors = std::move(ancestors);
    const std::string& outer = context.run_options().console_label;
    options.console_label = outer.empty() ? context.task_path() : outer + " > " + context.task_path();
    // The child's own record says why it stopped (QA: a timeout showed as a bare "canceled").
    options.cancel_cause = [&context] {
      return context.cancel().reason() == CancelToken::Reason::kTimedOut
                 ? fmt::format("the timeout of task {} in the parent", context.task_path())
                 : std::string("its parent");
    };
    auto result = context.engine().Run(*child, options, &context.cancel());
    if (!result.ok()) {
      return TaskOutcome::Failure(fmt::format("child package {}: {}", (*child)->name,
                                              result.status().message()));
    }
    if (result->result == TaskResult::kSuccess) return TaskOutcome::Success();
    // Stopped by this task's timeout, which the engine says ("timed out after 5 s"): the
    // child's "was canceled: canceled" beside it read as if someone had canceled it (QA).
    if (result->result == TaskResult::kCanceled &&
        context.cancel().reason() == CancelToken::Reason::kTimedOut) {
      return {TaskResult::kCanceled, "", "", ""};
    }
    return {result->result,
            fmt::format("child package {} {}: {}", (*child)->name,
                        result->result == TaskResult::kCanceled ? "was canceled" : "failed",
                        result->message),
            "", ""};
  }

  TaskOutcome RunOutOfProcess(TaskContext& context, const std::string& file,
                              const std::map<std::string, Value>& values,
                              const std::vector<std::string>& ancestors,
                              const std::string& child_id) const {
    SpawnSpec spec;
    spec.argv = {FanoutBinary(), "run", file, "--execution-id", child_id,
                 "--parent-execution-id", context.execution_id(), "--reporting", "N",
                 "--params-stdin"};
    if (!context.run_options().catalog_spec.empty()) {
      spec.argv.push_back("--catalog");
      spec.argv.push_back(context.run_options().catalog_spec);
    }
    // Parameters travel on stdin, not argv, so sensitive values never show in `ps`; the
    // parent's secrets go along so the child masks them even where it does not declare a
    // parameter sensitive.
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [name, v] : values) {
      auto sent = ParamToJson(v);
      if (!sent.ok()) {
        return TaskOutcome::Failure(fmt::format("param {}: {}", name, sent.status().message()));
      }
      params[name] = std::move(*sent);
    }
    // With parent_pid the child goes when this process does, killed or not (PR_SET_PDEATHSIG).
    nlohmann::json input = {{"params", params},
                            {"secrets", context.engine().recorder().masker().secrets()},
                            {"ancestors", ancestors},
                            {"parent_pid", getpid()}};
    // A secret or an ancestor's path that is not UTF-8 goes with U+FFFD in its place: JSON
    // cannot hold it (the params, which the child needs as they are, were checked above).
    spec.stdin_data = input.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    MoveArgvToStdin(spec);  // the catalog spec may hold a password
    spec.kill_grace = std::chrono::milliseconds(5000);
    auto run = RunProcess(spec, context.cancel().fd());
    if (!run.ok()) return TaskOutcome::Failure(run.status().message());
    if (run->term_signal != 0 && !run->stopped) {
      return TaskOutcome::Failure(fmt::format("child package {} was killed by signal {}", file,
                                              run->term_signal));
    }
    switch (run->exit_code) {
      case 0: return TaskOutcome::Success();
      case 3:
        if (!context.cancel().canceled()) {
          // Its process was stopped from outside: its work is not done, and this run did not
          // ask for that.
          return TaskOutcome::Failure(fmt::format(
              "child package {} was canceled by a signal to its own process, not by this run",
              file));
        }
        return {TaskResult::kCanceled, fmt::format("child package {} was canceled", file), "", ""};
      case 5: {  // could not load: its `FILE:LINE:COLUMN: error:` lines say why
        std::string problems = ErrorLines(run->err);
        if (!problems.empty()) {
          return TaskOutcome::Failure(
              fmt::format("child package {} cannot be loaded (exit code 5): {}", file, problems));
        }
        [[fallthrough]];
      }
      default: {
        std::string why = AsChildReason(LastLine(context.engine().recorder().masker().MaskOutputEnd(
            run->err, run->err_dropped, run->err_tail)));
        return TaskOutcome::Failure(fmt::format("child package {} failed (exit code {}){}", file,
                                                run->exit_code, why.empty() ? "" : ": " + why));
      }
    }
  }
};

class PackageTaskType : public TaskType {
 public:
  std::string_view name() const override { return "package"; }
  std::vector<std::string_view> keys() const override {
    return {"path", "params", "out_of_process"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto path = parser.TemplateAt(node, "path", true);
    if (!path) return nullptr;
    auto task = std::make_shared<PackageTask>(std::move(*path));
    task->params = parser.TemplateMapAt(node, "params");
    task->out_of_process = parser.BoolAt(node, "out_of_process").value_or(false);
    return task;
  }
};

}  // namespace

std::unique_ptr<TaskType> MakePackageTaskType() { return std::make_unique<PackageTaskType>(); }

}  // namespace fanout
