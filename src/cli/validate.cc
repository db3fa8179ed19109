// `fanout validate FILE`: parse and check a package, or a job file, without running it; print
// every problem.
#include <cstdio>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "cli/cli.h"
#include "common/util.h"
#include "fanout/package.h"

namespace fanout::cli {

namespace {

// A job file is told by its `job:` key; anything else, YAML errors included, is checked (and
// reported with positions) as a package.
bool IsJobFile(const std::string& text) {
  try {
    FileKeys keys = TopLevelKeys(text);
    return keys.job && !keys.package;
  } catch (const YAML::Exception&) {
    return false;
  }
}

// Every problem, then "FILE: N problems"; kExitInvalid.
int ReportProblems(const Diagnostics& diagnostics, const std::string& file) {
  std::fputs(diagnostics.ToString().c_str(), stderr);
  size_t n = diagnostics.items().size();
  std::fprintf(stderr, "%s: %zu problem%s\n", file.c_str(), n, n == 1 ? "" : "s");
  return kExitInvalid;
}

int ValidateJobFile(const std::string& text, const std::string& file,
                    const std::vector<std::string>& sets) {
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

}  // namespace

Command AddValidateCommand(CLI::App& app) {
  struct Args {
    std::string file;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "validate", "Check a package or a job file and print every problem found");
  cmd->add_option("file", args->file, "The package file (YAML), or a job file (`job:`, YAML or JSON)")
      ->required();
  cmd->add_option("--set", args->sets, "NAME=VALUE: a parameter value, to check required ones");
  cmd->footer("Exit codes: 0 valid, 5 invalid or unreadable, 6 usage error.");
  return {cmd, [args]() -> int {
    std::map<std::string, std::string> sets;
    if (!ParseSets(args->sets, sets)) return kExitUsage;
    auto text = ReadFile(args->file);
    if (!text.ok()) {
      std::fprintf(stderr, "fanout: %s\n", text.status().message().c_str());
      return kExitInvalid;
    }
    if (IsJobFile(*text)) return ValidateJobFile(*text, args->file, args->sets);
    Diagnostics diagnostics;
    std::shared_ptr<const Package> package = ParsePackage(*text, args->file, diagnostics);
    if (package) {
      for (std::string& error : package->UndeclaredSetErrors(sets)) {
        diagnostics.Error(SourcePos{args->file, 0, 0}, std::move(error));
      }
      for (const ParameterDef& p : package->parameters) {
        if (p.required && !p.default_value && sets.count(p.name) == 0) {
          diagnostics.Error(p.pos, fmt::format("required parameter '{}' has no value; give it a "
                                               "`value:` or pass --set {}=VALUE", p.name, p.name));
        }
      }
    }
    if (!diagnostics.empty()) return ReportProblems(diagnostics, args->file);
    size_t tasks = 0;
    std::function<void(const std::vector<TaskDef>&)> count = [&](const std::vector<TaskDef>& ts) {
      for (const TaskDef& t : ts) {
        ++tasks;
        count(t.children);
      }
    };
    count(package->tasks);
    std::printf("%s: valid (package %s, %zu task%s)\n", args->file.c_str(),
                package->name.c_str(), tasks, tasks == 1 ? "" : "s");
    return kExitSuccess;
  }};
}

}  // namespace fanout::cli
