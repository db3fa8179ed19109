// `fanout validate FILE...`: parse and check packages and job files without running them; print
// every problem of each.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/cli.h"
#include "common/util.h"
#include "fanout/event.h"
#include "fanout/package.h"

namespace fanout::cli {

namespace {

// A job file is told by its `job:` key; anything else, YAML errors included, is checked (and
// reported with positions) as a package.
bool IsJobFile(const std::optional<FileKeys>& keys) {
  return keys && keys->job && !keys->package;
}

// A mapping with both kinds' keys, or with none of a package's or a job's (another tool's file,
// an agent.yaml beside the packages): one line, as `deploy` says it, rather than every key it
// lacks or has beyond a package's. What is no mapping is said with its place, as a package.
bool IsNeitherKind(const std::optional<FileKeys>& keys) {
  return keys && keys->mapping &&
         ((keys->package && keys->job) || (!keys->package && !keys->job && !keys->tasks));
}

// Every problem, then "FILE: N problems"; kExitInvalid.
int ReportProblems(const Diagnostics& diagnostics, const std::string& file) {
  std::fputs(diagnostics.ToString().c_str(), stderr);
  size_t n = diagnostics.items().size();
  std::fprintf(stderr, "%s: %zu problem%s\n", file.c_str(), n, n == 1 ? "" : "s");
  return kExitInvalid;
}

int ValidateJobFile(const std::string& text, const std::string& file,
                    const std::map<std::string, std::string>& sets) {
  if (!sets.empty()) {
    std::fprintf(stderr, "fanout validate: --set gives package parameters; %s is a job file\n",
                 file.c_str());
    return kExitUsage;
  }
  Diagnostics diagnostics;
  auto job = CheckJobFile(text, file, diagnostics);
  if (!job) return ReportProblems(diagnostics, file);
  size_t steps = job->job.steps.size();
  std::printf("%s: valid (job %s, %zu step%s)\n", file.c_str(), job->job.name.c_str(), steps,
              steps == 1 ? "" : "s");
  return kExitSuccess;
}

// One file, as the command checks each: 0 valid, 5 invalid or unreadable, 6 a usage error.
int ValidateFile(const std::string& file, const std::map<std::string, std::string>& sets) {
  auto text = ReadFile(file);
  if (!text.ok()) {
    std::fprintf(stderr, "fanout: %s\n", text.status().message().c_str());
    return kExitInvalid;
  }
  const std::optional<FileKeys> keys = TopLevelKeysIfYaml(*text);
  if (IsJobFile(keys)) return ValidateJobFile(*text, file, sets);
  if (IsNeitherKind(keys)) {
    std::fprintf(stderr, "%s\n", NeitherKindOfFile(*keys, file).c_str());
    return kExitInvalid;
  }
  Diagnostics diagnostics;
  std::shared_ptr<const Package> package = ParsePackage(*text, file, diagnostics);
  if (package) {
    for (std::string& error : package->UndeclaredSetErrors(sets)) {
      diagnostics.Error(SourcePos{file, 0, 0}, std::move(error));
    }
    // A value that `fanout run --set` would refuse for its type is refused here too (SSIS QA:
    // `--set fail=maybe` for a bool was valid here, exit 5 there), in the run's words.
    auto check_type = [&](const std::string& name, ValueType type, bool sensitive) {
      auto set = sets.find(name);
      if (set == sets.end()) return;
      auto converted = Value(set->second).ConvertTo(type);
      if (converted.ok()) return;
      Masker masker;  // as the run masks a sensitive parameter's value
      if (sensitive) masker.AddSecret(set->second);
      const std::string why = masker.Mask(converted.status().message());
      diagnostics.Error(SourcePos{file, 0, 0}, fmt::format("--set {}: {}", name, why));
    };
    for (const ParameterDef& p : package->parameters) check_type(p.name, p.type, p.sensitive);
    for (const VariableDef& v : package->variables) check_type(v.name, v.type, false);
  }
  if (!diagnostics.empty()) return ReportProblems(diagnostics, file);
  // Required parameters without a value are no problem of the file: a parent, an agent's start
  // or `fanout run --set` gives them (QA: the shipped child packages failed `validate *.yaml`,
  // which `deploy` accepted). Named, so that a run without them is no surprise.
  std::vector<std::string> needed;
  for (const ParameterDef& p : package->parameters) {
    if (p.required && !p.default_value && sets.count(p.name) == 0) needed.push_back(p.name);
  }
  size_t tasks = 0;
  std::function<void(const std::vector<TaskDef>&)> count = [&](const std::vector<TaskDef>& ts) {
    for (const TaskDef& t : ts) {
      ++tasks;
      count(t.children);
    }
  };
  count(package->tasks);
  std::string needs;
  if (needed.size() == 1) {
    needs = fmt::format("; parameter {} is required when it runs", needed[0]);
  } else if (needed.size() > 1) {
    needs = fmt::format("; parameters {} are required when it runs", fmt::join(needed, ", "));
  }
  std::printf("%s: valid (package %s, %zu task%s%s)\n", file.c_str(), package->name.c_str(),
              tasks, tasks == 1 ? "" : "s", needs.c_str());
  return kExitSuccess;
}

}  // namespace

Command AddValidateCommand(CLI::App& app) {
  struct Args {
    std::vector<std::string> files;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "validate", "Check package and job files and print every problem found");
  cmd->add_option("files", args->files,
                  "Package files (YAML), or job files (`job:`, YAML or JSON); each is checked")
      ->required();
  cmd->add_option("--set", args->sets,
                  "NAME=VALUE: a parameter value, to check its name as `fanout run` would "
                  "(one file only)");
  cmd->footer("Exit codes: 0 every file valid, 5 a file invalid or unreadable, 6 usage error.");
  return {cmd, [args]() -> int {
    std::map<std::string, std::string> sets;
    if (!ParseSets(args->sets, sets)) return kExitUsage;
    // Another package would refuse a name it does not declare.
    if (!args->sets.empty() && args->files.size() > 1) {
      std::fprintf(stderr, "fanout validate: --set gives one package's parameters; give it with "
                           "one file\n");
      return kExitUsage;
    }
    // Every file is checked; a usage error (6) outranks an invalid file (5).
    int worst = kExitSuccess;
    for (const std::string& file : args->files) {
      worst = std::max(worst, ValidateFile(file, sets));
    }
    return worst;
  }};
}

}  // namespace fanout::cli
