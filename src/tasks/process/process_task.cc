// The `process` task: runs a program (argv, no shell unless `shell: true`) in its own process
// group, captures bounded stdout/stderr into variables and an OnInformation event, and
// succeeds when the exit code is one of `success_codes`. Timeout and cancel stop the group.
#include "tasks/process/process_task.h"

#include <algorithm>
#include <tuple>

#include <fmt/format.h>

#include "common/subprocess.h"
#include "fanout/catalog.h"
#include "fanout/engine.h"

namespace fanout {
namespace {

constexpr size_t kEventOutputLimit = 8 * 1024;  // captured output kept in an event

std::string Tail(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text;
  return "..." + text.substr(text.size() - limit);
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

class ProcessTask : public Task {
 public:
  std::vector<Template> argv;
  std::optional<Template> shell_command;
  std::optional<Template> cwd;
  std::map<std::string, Template> env;
  std::vector<int64_t> success_codes{0};
  std::string stdout_var, stderr_var;

  TaskOutcome Execute(TaskContext& context) const override {
    SpawnSpec spec;
    Scope& scope = context.scope();
    if (shell_command) {
      auto cmd = shell_command->RenderString(scope);
      if (!cmd.ok()) return TaskOutcome::Failure(cmd.status().message());
      spec.argv = {"/bin/sh", "-c", *cmd};
    } else {
      for (const Template& t : argv) {
        auto arg = t.RenderString(scope);
        if (!arg.ok()) return TaskOutcome::Failure(arg.status().message());
        spec.argv.push_back(std::move(*arg));
      }
    }
    // Relative paths in a package resolve against its folder, so that is the default cwd too.
    spec.cwd = context.package().dir;
    if (cwd) {
      auto dir = cwd->RenderString(scope);
      if (!dir.ok()) return TaskOutcome::Failure(dir.status().message());
      spec.cwd = context.ResolvePath(*dir);
    }
    for (const auto& [name, t] : env) {
      auto v = t.RenderString(scope);
      if (!v.ok()) return TaskOutcome::Failure(v.status().message());
      spec.env[name] = std::move(*v);
    }
    spec.env["FANOUT_EXECUTION_ID"] = context.execution_id();
    spec.env["FANOUT_TASK_PATH"] = context.task_path();

    auto run = RunProcess(spec, context.cancel().fd());
    if (!run.ok()) return TaskOutcome::Failure(run.status().message());
    const SpawnResult& r = *run;

    // Masked before the event's tail is cut, and with the capture limit's cut in mind, so that
    // no part of a secret survives either cut (the Recorder masks whole secrets only).
    // The event shows each stream's end, also past the capture limit: a program says why it
    // failed at the end (QA: the message showed byte 64 Ki of 1 MB, cut mid-word).
    const Masker& masker = context.engine().recorder().masker();
    const std::string out = masker.MaskOutputEnd(r.out, r.out_dropped, r.out_tail);
    const std::string err = masker.MaskOutputEnd(r.err, r.err_dropped, r.err_tail);
    std::string output;
    if (!out.empty()) {
      output += "stdout:\n";
      output += Tail(out, kEventOutputLimit);
    }
    if (!err.empty()) {
      if (!output.empty()) output += '\n';
      output += "stderr:\n";
      output += Tail(err, kEventOutputLimit);
    }
    if (r.out_dropped + r.err_dropped > 0) {
      output += fmt::format("\n({} bytes of output beyond the capture limit were dropped)",
                            r.out_dropped + r.err_dropped);
    }
    std::string program = spec.argv[0];
    if (r.stopped) {
      return {TaskResult::kCanceled, fmt::format("{} was stopped", program), "", ""};
    }
    context.Emit(EventType::kOnInformation,
                 r.term_signal != 0
                     ? fmt::format("{} was killed by signal {}", program, r.term_signal)
                     : fmt::format("{} exited with code {}", program, r.exit_code),
                 r.exit_code, std::move(output));
    // Captured after the event, so output that does not fit its variable is still logged; a
    // failed exit is the task's error before a failed assignment.
    Status assigned = Status::Ok();
    for (auto [var, dropped, stream] : {std::tuple{&stdout_var, r.out_dropped, "stdout"},
                                        std::tuple{&stderr_var, r.err_dropped, "stderr"}}) {
      if (!var->empty() && dropped > 0) {
        context.Emit(EventType::kOnWarning,
                     fmt::format("variable {} holds only the first {} bytes of {}: {} more were "
                                 "dropped",
                                 *var, spec.capture_limit, stream, dropped));
      }
    }
    if (!stdout_var.empty()) assigned = scope.Set(stdout_var, Value(Trimmed(r.out)));
    if (!stderr_var.empty() && assigned.ok()) assigned = scope.Set(stderr_var, Value(Trimmed(r.err)));
    bool ok = r.term_signal == 0 && std::find(success_codes.begin(), success_codes.end(),
                                              r.exit_code) != success_codes.end();
    if (ok) return assigned.ok() ? TaskOutcome::Success() : TaskOutcome::Failure(assigned.message());
    std::string what = r.term_signal != 0
                           ? fmt::format("{} was killed by signal {}", program, r.term_signal)
                           : fmt::format("{} failed with exit code {}", program, r.exit_code);
    std::string last = Trimmed(Tail(err, 400));
    return TaskOutcome::Failure(what + (last.empty() ? "" : ": " + last));
  }
};

class ProcessTaskType : public TaskType {
 public:
  std::string_view name() const override { return "process"; }
  std::vector<std::string_view> keys() const override {
    return {"run", "shell", "cwd", "env", "success_codes", "stdout", "stderr"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto task = std::make_shared<ProcessTask>();
    bool shell = parser.BoolAt(node, "shell").value_or(false);
    YAML::Node run = node["run"];
    // A `run` of the wrong shape is reported with whatever else is wrong in the task.
    bool run_usable = true;
    if (shell) {
      if (run && !run.IsScalar()) {
        parser.Error(run, "with `shell: true`, `run` is one command string for /bin/sh");
        run_usable = false;
      } else {
        task->shell_command = parser.TemplateAt(node, "run", true);
      }
    } else if (run && run.IsScalar()) {
      parser.Error(run, "`run` is a list: the program and its arguments, e.g. "
                        "[/usr/bin/python3, load.py]; to run a command line through /bin/sh "
                        "add `shell: true`");
      run_usable = false;
    } else {
      task->argv = parser.TemplateListAt(node, "run", true);
      if (run && run.IsSequence() && run.size() == 0) {
        parser.Error(run, "`run` needs at least the program to run");
      }
    }
    task->cwd = parser.TemplateAt(node, "cwd", false);
    task->env = parser.TemplateMapAt(node, "env");
    if (YAML::Node env = node["env"]; env && env.IsMap()) {
      for (const auto& entry : env) {
        const std::string name = entry.first.Scalar();
        if (name.empty() || name.find('=') != std::string::npos) {
          parser.Error(entry.first, fmt::format("'{}' is not an environment variable name: it "
                                                "must not be empty or hold '='", name));
        }
      }
    }
    if (YAML::Node codes = node["success_codes"]; codes) {
      task->success_codes.clear();
      if (!codes.IsSequence() || codes.size() == 0) {
        // An empty list would make every exit a failure, 0 included.
        parser.Error(codes, "`success_codes` is a list of at least one exit code, e.g. [0, 1]");
      } else {
        for (const YAML::Node& c : codes) {
          int64_t code = 0;
          if (!c.IsScalar() || !YAML::convert<int64_t>::decode(c, code) || code < 0 || code > 255) {
            parser.Error(c, "exit codes are whole numbers from 0 to 255");
          } else {
            task->success_codes.push_back(code);
          }
        }
      }
    }
    for (auto [key, target] : {std::pair{"stdout", &task->stdout_var},
                               std::pair{"stderr", &task->stderr_var}}) {
      if (auto var = parser.StringAt(node, key, false)) {
        std::string name = var->starts_with("@") ? var->substr(1) : *var;
        parser.CheckVariable(node[key], name);
        *target = name;
      }
    }
    return run_usable ? task : nullptr;
  }
};

}  // namespace

std::unique_ptr<TaskType> MakeProcessTaskType() { return std::make_unique<ProcessTaskType>(); }

}  // namespace fanout
