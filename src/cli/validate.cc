// `fanout validate FILE`: parse and check a package without running it; print every problem.
#include <cstdio>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "cli/cli.h"
#include "common/util.h"
#include "fanout/package.h"

namespace fanout::cli {

Command AddValidateCommand(CLI::App& app) {
  struct Args {
    std::string file;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("validate", "Check a package and print every problem found");
  cmd->add_option("file", args->file, "The package file (YAML)")->required();
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
    if (!diagnostics.empty()) {
      std::fputs(diagnostics.ToString().c_str(), stderr);
      size_t n = diagnostics.items().size();
      std::fprintf(stderr, "%s: %zu problem%s\n", args->file.c_str(), n, n == 1 ? "" : "s");
      return kExitInvalid;
    }
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
