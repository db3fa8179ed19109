// The `fanout` command line: one file per subcommand (run.cc, validate.cc), registered here.
#pragma once

#include <CLI/CLI.hpp>
#include <signal.h>

#include "agent/job.h"
#include "fanout/catalog.h"
#include "fanout/package.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
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

// Opens the catalog named by `flag` (--catalog, else $FANOUT_CATALOG, else sqlite:fanout.db)
// and sets `spec` to the spec as messages show it. A SQLite file that does not exist is created
// only when `create` is set; otherwise `catalog` stays null. On failure prints why, as "fanout
// COMMAND: catalog SPEC: REASON", and returns the exit code (6 for a bad spec, else 1). With
// `keep_trying` (--follow), a catalog that cannot be reached is tried again every second while
// it returns true, said once; 0 is returned when it turns false first (stopped by a signal).
std::optional<int> OpenCatalogFor(const std::string& flag, const char* command, bool create,
                                  std::string& spec, std::unique_ptr<Catalog>& catalog,
                                  const std::function<bool()>& keep_trying = nullptr);
// The same for `catalog prune`, which writes: another user's SQLite file is opened as any.
std::optional<int> OpenCatalogToWrite(const std::string& flag, const char* command,
                                      std::string& spec, std::unique_ptr<Catalog>& catalog);

// Says that the SQLite catalog `spec` does not exist (and so has no execution `execution`, when
// one was asked for); returns kExitNotFound.
int CatalogDoesNotExist(const char* command, const std::string& spec,
                        const std::string& execution = "");

// --since AGE|DATE (report::ParseSince) into `since`; on a bad one prints why, as "fanout
// COMMAND: --since: REASON", and returns kExitUsage.
std::optional<int> ParseSinceFor(const std::string& text, const char* command, DateTime now,
                                 std::optional<DateTime>& since);

// Adds `signal` to `set` (signals a thread waits for) unless it was inherited ignored: SIGHUP
// under `nohup`, SIGINT for a command a script starts in the background. A blocked signal is
// never discarded, so waiting for it would undo what the caller asked.
void AddUnlessIgnored(sigset_t& set, int signal);

// Parses repeated NAME=VALUE pairs; on a malformed one prints why and returns false.
bool ParseSets(const std::vector<std::string>& pairs, std::map<std::string, std::string>& out);

// Reads repeated `option` NAME=FILE pairs into `out`: each value is FILE's text ("-": standard
// input) without its final line breaks, so that a secret stays out of `ps`. kExitSuccess, or the
// exit code after saying what failed.
int ReadValueFiles(const char* option, const std::vector<std::string>& pairs,
                   std::map<std::string, std::string>& out);

// What a file's top-level keys say it is: a package has `package:`, a job file `job:`. Text that
// is not YAML throws YAML::Exception.
struct FileKeys {
  bool mapping = false;  // else no key at all: a list, a scalar, an empty file
  bool package = false;
  bool job = false;
  bool tasks = false;  // a package's other key: with it, a missing `package:` is a typo
};
FileKeys TopLevelKeys(const std::string& text);
// The same, or none for text that is not YAML (a full check then says where it breaks).
std::optional<FileKeys> TopLevelKeysIfYaml(const std::string& text);
// "FILE is neither a package nor a job; ..." (or "has both"), for a file whose keys tell no kind.
std::string NeitherKindOfFile(const FileKeys& keys, const std::string& file);
// For a command given the other kind of file (a job file to `run`, a package to `job create`):
// one line saying what it is and which command takes it, instead of every key it lacks.
std::optional<std::string> OtherKindOfFile(const std::string& text, const std::string& file,
                                           bool want_job);

// A job file (`job:` at the top, YAML or JSON) checked as an agent checks it, for `fanout
// validate`, `deploy` and `job create`, so that a bad one is refused before any agent sees it.
struct JobFile {
  agent::JobDef job;
  std::string content_type;  // application/json or application/yaml, as the agent reads it
};
// On problems, nullopt, each problem added to `diagnostics` as a package's are (FILE:LINE:COLUMN;
// JSON has no positions).
std::optional<JobFile> CheckJobFile(const std::string& text, const std::string& file,
                                    Diagnostics& diagnostics);

// The arguments after `fanout` that `fanout --argv-from-stdin` reads from its stdin's first
// line, a JSON array of strings. InvalidArgument saying what is wrong and where.
Result<std::vector<std::string>> ParseArgvLine(const std::string& line);

// A command's exit code, unless what it wrote to stdout was lost (QA: `fanout report executions
// --json > out.json` on a full disk exited 0 with the file cut short). A reader that went away
// (`| head`) is not an error.
int WithStdoutWritten(int code);

int Main(int argc, char** argv);

}  // namespace fanout::cli
