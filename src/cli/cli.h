// The `fanout` command line: one file per subcommand (run.cc, validate.cc), registered here.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fanout::cli {

// dtexec's exit codes (DESIGN §5).
enum ExitCode {
  kExitSuccess = 0,
  kExitFailure = 1,
  kExitCanceled = 3,
  kExitNotFound = 4,
  kExitInvalid = 5,
  kExitUsage = 6,
};

// A subcommand adds itself to the app and returns its CLI11 node and what runs it once parsed.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};
Command AddRunCommand(CLI::App& app);
Command AddValidateCommand(CLI::App& app);
Command AddJobCommand(CLI::App& app);
Command AddDeployCommand(CLI::App& app);
Command AddAgentCommand(CLI::App& app);
Command AddReportCommand(CLI::App& app);
Command AddLogsCommand(CLI::App& app);
Command AddCatalogCommand(CLI::App& app);

// The check for counts (--max-concurrent, --slots, --limit): a whole number from 1 up to what an
// int holds. Its message names the option and the value: "--slots: must be a whole number of 1
// or more, not '0'"; the command stays a usage error.
CLI::Validator WholeNumberAtLeastOne();

// Parses repeated NAME=VALUE pairs; on a malformed one prints why and returns false.
bool ParseSets(const std::vector<std::string>& pairs, std::map<std::string, std::string>& out);

int Main(int argc, char** argv);

}  // namespace fanout::cli
