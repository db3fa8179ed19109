// The subcommand registry and the shared parts of every command.
#include "cli/cli.h"

#include <poll.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "common/subprocess.h"
#include "common/util.h"
#include "fanout/catalog.h"
#include "fanout/package.h"
#include "report/report.h"

#include "tasks/builtin.h"

namespace fanout::cli {

CLI::Validator WholeNumberAtLeastOne() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        int value = 0;
        const char* end = text.data() + text.size();
        auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (ec == std::errc::result_out_of_range && ptr == end) {
          return fmt::format("must be a whole number from 1 to {}, not '{}'",
                             std::numeric_limits<int>::max(), text);
        }
        if (ec != std::errc() || ptr != end || value < 1) {
          return fmt::format("must be a whole number of 1 or more, not '{}'", text);
        }
        return "";
      },
      "POSITIVE");
}

std::optional<int> ParseSinceFor(const std::string& text, const char* command, DateTime now,
                                 std::optional<DateTime>& since) {
  auto parsed = report::ParseSince(text, now);
  if (!parsed.ok()) {
    std::fprintf(stderr, "fanout %s: --since: %s\n", command, parsed.status().message().c_str());
    return kExitUsage;
  }
  since = *parsed;
  return std::nullopt;
}

namespace {

using Guest = catalog::SqliteCatalogOptions::Guest;

std::optional<int> OpenCatalogAs(Guest guest, const std::string& flag, const char* command,
                                 bool create, std::string& spec,
                                 std::unique_ptr<Catalog>& catalog,
                                 const std::function<bool()>& keep_trying) {
  const std::string full_spec = report::CatalogSpec(flag);
  spec = report::DisplayCatalogSpec(full_spec);  // from here on only shown in messages
  auto open = [&]() -> Result<std::unique_ptr<Catalog>> {
    // An existing file is read as a catalog or refused (never made into one); only a missing
    // one is created, when asked.
    auto opened = report::OpenCatalogToRead(full_spec, guest);
    if (create && opened.ok() && *opened == nullptr) opened = OpenCatalog(full_spec);
    return opened;
  };
  auto opened = open();
  for (bool said = false; keep_trying && !opened.ok() &&
                          opened.status().code() == Code::kUnavailable;) {
    if (!said) {
      std::fprintf(stderr, "fanout %s: %s; still following, retrying\n", command,
                   report::CatalogProblem(full_spec, opened.status().message()).c_str());
      said = true;
    }
    for (int i = 0; i < 10 && keep_trying(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!keep_trying()) return kExitSuccess;  // stopped (Ctrl-C) while waiting
    opened = open();
  }
  if (!opened.ok()) {
    std::fprintf(stderr, "fanout %s: %s\n", command,
                 report::CatalogProblem(full_spec, opened.status().message()).c_str());
    switch (opened.status().code()) {
      case Code::kInvalidArgument:
        return kExitUsage;
      case Code::kNotFound:  // no such directory, or a file that is not a catalog
        return kExitNotFound;
      default:
        return kExitFailure;
    }
  }
  catalog = std::move(*opened);
  return std::nullopt;
}

}  // namespace

int WithStdoutWritten(int code) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return code;
  // A write to a pipe whose reader has gone: EPIPE now, or earlier (a command's own flush,
  // which glibc leaves with errno long gone); then polling the pipe reports an error.
  pollfd out{STDOUT_FILENO, 0, 0};
  const int error = errno;
  clearerr(stdout);  // said once, though a command checks before Main does
  if (error == EPIPE || (poll(&out, 1, 0) == 1 && (out.revents & POLLERR) != 0)) return code;
  std::fprintf(stderr, "fanout: cannot write to standard output (%s): what the command printed "
               "is lost\n", error != 0 ? std::strerror(error) : "a write failed");
  return code == 0 ? kExitFailure : code;
}

std::optional<int> OpenCatalogFor(const std::string& flag, const char* command, bool create,
                                  std::string& spec, std::unique_ptr<Catalog>& catalog,
                                  const std::function<bool()>& keep_trying) {
  return OpenCatalogAs(keep_trying ? Guest::kRefuse : Guest::kReadOnce, flag, command, create,
                       spec, catalog, keep_trying);
}

std::optional<int> OpenCatalogToWrite(const std::string& flag, const char* command,
                                      std::string& spec, std::unique_ptr<Catalog>& catalog) {
  return OpenCatalogAs(Guest::kOpen, flag, command, /*create=*/false, spec, catalog, nullptr);
}

int CatalogDoesNotExist(const char* command, const std::string& spec,
                        const std::string& execution) {
  fmt::print(stderr,
             "fanout {}: {}catalog {} does not exist (no run has recorded to it; check --catalog "
             "or $FANOUT_CATALOG)\n",
             command, execution.empty() ? "" : "no execution '" + execution + "': ", spec);
  return kExitNotFound;
}

bool ParseSets(const std::vector<std::string>& pairs, std::map<std::string, std::string>& out) {
  for (const std::string& pair : pairs) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "fanout: --set needs NAME=VALUE, got '%s'\n", pair.c_str());
      return false;
    }
    out[VariableName(pair.substr(0, eq))] = pair.substr(eq + 1);
  }
  return true;
}

void AddUnlessIgnored(sigset_t& set, int signal) {
  struct sigaction inherited {};
  if (sigaction(signal, nullptr, &inherited) == 0 && inherited.sa_handler == SIG_IGN) return;
  sigaddset(&set, signal);
}

int ReadValueFiles(const char* option, const std::vector<std::string>& pairs,
                   std::map<std::string, std::string>& out) {
  bool stdin_read = false;  // a second `-` would read nothing and give its name ""
  for (const std::string& pair : pairs) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == pair.size()) {
      fmt::print(stderr, "fanout: {} needs NAME=FILE (- for standard input), got '{}'\n", option,
                 pair);
      return kExitUsage;
    }
    const std::string name = VariableName(pair.substr(0, eq)), file = pair.substr(eq + 1);
    if (file == "-" && std::exchange(stdin_read, true)) {
      fmt::print(stderr, "fanout: {} {}=-: standard input is read for one name only\n", option,
                 name);
      return kExitUsage;
    }
    // A value is held in memory and sent whole (to an agent, whose requests take at most
    // 4 MiB): /dev/zero or an endless pipe must end in an error, not fill the memory (QA).
    constexpr size_t kMaxValueBytes = 16 * 1024 * 1024;
    auto value = file == "-" ? ReadStandardInput(kMaxValueBytes) : ReadFile(file, kMaxValueBytes);
    if (!value.ok()) {
      fmt::print(stderr, "fanout: {} {}: {}{}\n", option, name, value.status().message(),
                 value.status().code() == Code::kResourceExhausted ? " (16 MiB at most)" : "");
      return value.status().code() == Code::kNotFound ? kExitNotFound : kExitUsage;
    }
    std::string text = std::move(*value);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    out[name] = std::move(text);
  }
  return kExitSuccess;
}

FileKeys TopLevelKeys(const std::string& text) {
  YAML::Node root = YAML::Load(text);
  if (!root.IsMap()) return {};
  return {true, static_cast<bool>(root["package"]), static_cast<bool>(root["job"]),
          static_cast<bool>(root["tasks"])};
}

std::string NeitherKindOfFile(const FileKeys& keys, const std::string& file) {
  return fmt::format("{}: {}; a package file has a `package:` key, a job file a `job:` key", file,
                     keys.package ? "has both `package:` and `job:`"
                                  : "is neither a package nor a job");
}

std::optional<FileKeys> TopLevelKeysIfYaml(const std::string& text) {
  try {
    return TopLevelKeys(text);
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

std::optional<std::string> OtherKindOfFile(const std::string& text, const std::string& file,
                                           bool want_job) {
  const FileKeys keys = TopLevelKeysIfYaml(text).value_or(FileKeys{});
  if (want_job && keys.package && !keys.job) {
    return fmt::format("{} is a package file (it has `package:`), not a job: deploy it with "
                       "`fanout deploy {} --agent URL`, or run it here with `fanout run {}`",
                       file, file, file);
  }
  if (!want_job && keys.job && !keys.package) {
    return fmt::format("{} is a job file (it has `job:`), which agents run: deploy it with "
                       "`fanout deploy {} --agent URL`, then `fanout job start`",
                       file, file);
  }
  return std::nullopt;
}

std::optional<JobFile> CheckJobFile(const std::string& text, const std::string& file,
                                    Diagnostics& diagnostics) {
  std::vector<agent::JobProblem> problems;
  auto job = agent::ParseJob(text, &problems);
  if (!job.ok()) {
    for (agent::JobProblem& p : problems) {
      diagnostics.Error(SourcePos{file, p.line, p.column}, std::move(p.message));
    }
    return std::nullopt;
  }
  return JobFile{std::move(*job),
                 agent::IsJsonText(text) ? "application/json" : "application/yaml"};
}

Result<std::vector<std::string>> ParseArgvLine(const std::string& line) {
  nlohmann::json array = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!array.is_array()) {
    return InvalidArgument(array.is_discarded() ? "it is not valid JSON" : "it is not an array");
  }
  std::vector<std::string> args;
  for (const nlohmann::json& arg : array) {
    const size_t number = args.size() + 1;
    if (!arg.is_string()) {
      return InvalidArgument(fmt::format("argument {} is a JSON {}, not a string", number,
                                         arg.type_name()));
    }
    std::string text = arg.get<std::string>();
    // An argument goes on as a C string: one with a NUL would be cut there.
    if (text.find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("argument {} holds a NUL character", number));
    }
    args.push_back(std::move(text));
  }
  return args;
}

namespace {

// `fanout --argv-from-stdin` (MoveArgvToStdin: a child package's process, an agent's package
// step, its warm process): reads the arguments after `fanout` as a JSON array on the first line
// of stdin, leaving the rest of stdin to the command. False, having
// said why, on bad input; an empty stdin (the agent discarded it unused) ends it quietly.
bool ReadArgvFromStdin(const char* program, std::vector<std::string>& args, bool& discarded) {
  std::string line;
  discarded = !std::getline(std::cin, line);
  if (discarded) return false;
  auto parsed = ParseArgvLine(line);
  if (!parsed.ok()) {
    std::fprintf(stderr, "fanout: %s: expected a JSON array of strings on stdin's first line, "
                 "the arguments after `fanout`: %s\n", std::string(kArgvFromStdin).c_str(),
                 parsed.status().message().c_str());
    return false;
  }
  args = {program};
  args.insert(args.end(), parsed->begin(), parsed->end());
  return true;
}

// Whether stdin has something to read now (or is at its end): a process started with its
// arguments already written needs no warm-up. One whose parent writes them a moment later
// (a cold start on a busy machine) warms up too, which costs only the small parse: the rest
// its command does anyway.
bool StdinHasInput() {
  pollfd in{STDIN_FILENO, POLLIN, 0};
  return poll(&in, 1, 0) != 0;
}

// A warm process (started ahead, its arguments still to come) does now what its command would
// do on first use: OpenSSL's digest set-up, about 1.5 ms on its first hash (a package's sha256),
// and the first pass through the YAML parser and the package loader. The package it loads is
// thrown away.
// An agent's warm process also opens the agent's SQLite catalog (kWarmCatalogEnv), about 1 ms
// of its step's start.
void WarmUp() {
  Diagnostics ignored;
  (void)LoadPackageText("package: warm-up\ntasks:\n  t: {type: process, run: [/bin/true]}\n",
                        "warm-up.yaml", ignored);
  if (const char* catalog = std::getenv(kWarmCatalogEnv); catalog != nullptr) {
    PreopenCatalogForRun(catalog);
  }
}

// The innermost command given (`fanout report overview`'s), and its words in `path`.
const CLI::App* InnermostCommand(const CLI::App& app, std::string& path) {
  const CLI::App* command = &app;
  path = "fanout";
  while (!command->get_subcommands().empty()) {
    command = command->get_subcommands().front();
    path += " " + command->get_name();
  }
  return command;
}

// How many single-character edits turn `a` into `b` (Levenshtein).
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// CLI11's words for a bad command line, said as the command's own, with the unknown option
// named first and the nearest known one offered (QA: `fanout run --sett x=1 p.yaml` answered
// "The following arguments were not expected: p.yaml --sett", blaming the valid file).
void ExplainParseError(const CLI::App& app, const CLI::ParseError& error) {
  std::string path;
  const CLI::App* command = InnermostCommand(app, path);
  std::string message = error.what();
  // CLI11 says "--catalog: At Most 1 required but received 2" for an option given twice.
  static const std::regex kGivenTwice("^(-[^:]+): At Most 1 required but received (\\d+)$");
  if (std::smatch m; std::regex_match(message, m, kGivenTwice)) {
    message = fmt::format("{} was given {} times; it takes one value", m.str(1), m.str(2));
  }
  for (const std::string& arg : app.remaining(true)) {
    if (!arg.starts_with("-") || arg == "-") continue;
    const std::string given = arg.substr(0, arg.find('='));
    message = "unknown option " + given;
    std::string nearest;
    size_t best = 3;  // at most two edits away
    // The enclosing commands' options too: `fanout job start --token-fle` meant `fanout job`'s.
    for (const CLI::App* c = command; c != nullptr; c = c->get_parent()) {
      for (const CLI::Option* option : c->get_options()) {
        for (const std::string& name : option->get_lnames()) {
          if (size_t d = EditDistance(given, "--" + name); d < best) {
            best = d;
            nearest = "--" + name;
          }
        }
      }
    }
    if (!nearest.empty()) message += " (did you mean " + nearest + "?)";
    break;
  }
  std::fprintf(stderr, "%s: %s; see %s --help\n", path.c_str(), message.c_str(), path.c_str());
}

// CLI11 answers `fanout nosuchcmd` (and `fanout report nosuch`) with only "A subcommand is
// required". When the innermost command given wants a subcommand and the next word is not an
// option, names that word and the commands there are; false when that is not the case.
bool ExplainUnknownCommand(const CLI::App& app) {
  std::string path;
  const CLI::App* command = InnermostCommand(app, path);
  const std::vector<const CLI::App*> choices =
      command->get_subcommands([](const CLI::App*) { return true; });
  const std::vector<std::string> rest = app.remaining(true);
  if (choices.empty() || rest.empty() || rest.front().starts_with("-")) return false;
  std::vector<std::string> names;
  for (const CLI::App* choice : choices) names.push_back(choice->get_name());
  const std::string list = fmt::format("{}", fmt::join(names, ", "));
  std::fprintf(stderr, "%s: unknown command '%s'; the commands are %s (see %s --help)\n",
               path.c_str(), rest.front().c_str(), list.c_str(), path.c_str());
  return true;
}

// Rules for every option of every command, applied once here rather than at each add_option:
// - A value may not be empty: `--execution "$RUN"` with an empty $RUN must not mean "every
//   execution", nor `--catalog ""` the default catalog.
// - A repeatable option takes one value per occurrence: `run --set x=1 p.yaml` had taken
//   p.yaml as a second --set value and then said the file was missing.
void ApplyOptionRules(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    if (option->get_type_size() == 0) continue;  // a flag
    option->check(CLI::Validator(
        [](std::string& value) { return value.empty() ? std::string("must not be empty") : ""; },
        ""));
    if (option->nonpositional() && option->get_allow_extra_args()) {
      option->expected(1)->allow_extra_args(false)->multi_option_policy(
          CLI::MultiOptionPolicy::TakeAll);
    }
  }
  for (CLI::App* sub : app.get_subcommands({})) ApplyOptionRules(*sub);
}

}  // namespace

int Main(int argc, char** argv) {
  // A peer that goes away (a child's stdin, an agent's socket) is an error to handle, not a
  // reason to die.
  std::signal(SIGPIPE, SIG_IGN);
  // Before a warm process waits for its arguments: this set-up, too, is then done ahead.
  RegisterBuiltinTaskTypes();
  CLI::App app{"Fanout runs packages of tasks and spreads child packages over agents."};
  app.set_version_flag("--version", std::string("fanout ") + FANOUT_VERSION);
  app.require_subcommand(1);
  const std::vector<Command> commands = {AddRunCommand(app), AddValidateCommand(app),
                                         AddAgentCommand(app), AddJobCommand(app),
                                         AddDeployCommand(app), AddReportCommand(app),
                                         AddLogsCommand(app), AddCatalogCommand(app)};
  ApplyOptionRules(app);
  std::vector<std::string> stdin_args;
  std::vector<char*> stdin_argv;
  if (argc > 2 && argv[1] == kArgvFromStdin) {
    std::fprintf(stderr, "fanout: %s takes the whole command line from stdin: give it alone\n",
                 std::string(kArgvFromStdin).c_str());
    return kExitUsage;
  }
  if (argc == 2 && argv[1] == kArgvFromStdin) {
    if (!StdinHasInput()) WarmUp();
    unsetenv(kWarmCatalogEnv);  // not passed on to the step's own processes
    bool discarded = false;
    if (!ReadArgvFromStdin(argv[0], stdin_args, discarded)) return discarded ? 0 : kExitUsage;
    for (std::string& arg : stdin_args) stdin_argv.push_back(arg.data());
    stdin_argv.push_back(nullptr);
    argc = static_cast<int>(stdin_args.size());
    argv = stdin_argv.data();
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (!ExplainUnknownCommand(app)) ExplainParseError(app, e);
    return kExitUsage;
  }
  for (const Command& command : commands) {
    if (command.app->parsed()) return WithStdoutWritten(command.run());
  }
  return kExitUsage;
}

}  // namespace fanout::cli
