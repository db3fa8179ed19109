// `fanout run FILE`: runs a package as dtexec does, logging to the console, the package's own
// log providers, any --log files and the catalog, and exits with dtexec's codes.
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "agent/config.h"
#include "agent/executor.h"
#include "catalog/log_sinks.h"
#include "catalog/spool.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "client/agent_pool.h"
#include "common/param_json.h"
#include "common/util.h"
#include "fanout/catalog.h"
#include "fanout/engine.h"
#include "fanout/package.h"
#include "report/report.h"

namespace fanout::cli {
namespace {

struct RunArgs {
  std::string file;
  std::vector<std::string> sets;
  std::vector<std::string> set_files;  // NAME=FILE
  std::string catalog;
  std::vector<std::string> logs;
  std::string reporting = "EWP";
  int max_concurrent = 0;
  std::string execution_id;
  std::string parent_execution_id;
  bool params_stdin = false;
  bool no_progress = false;
  std::string agent_name, job, run_id;  // set when an agent runs a package step
  // Set by an agent: the exit code is written there at the end, so that an agent restarted
  // while this ran can learn the step's result without the catalog.
  std::string result_file;
};

// {"exit_code": N, "reason": "..."}, written whole so that a reader never sees half. The reason
// is the line stderr ended with, which an agent that restarted has not read.
void WriteResultFile(const std::string& path, int exit_code, const std::string& reason) {
  nlohmann::json result = {{"exit_code", exit_code}};
  if (!reason.empty()) result["reason"] = reason;
  // A reason may hold bytes that are not UTF-8 (a task's stderr, cut anywhere).
  Status written = WriteFileAtomically(
      path, result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  if (!written.ok()) std::fprintf(stderr, "fanout: --result-file: %s\n", written.message().c_str());
}

// SIGINT/SIGTERM/SIGHUP cancel the run (a closed terminal had killed it on the spot, leaving its
// remote children running): the signals are blocked in every thread and one thread waits for
// them, so cancellation runs as ordinary code rather than in a signal handler.
class SignalWatcher {
 public:
  // `before_message` runs before the watcher prints that a signal came (it clears the terminal's
  // progress line).
  // `agent_stop_file`: for a package step, where its agent writes why it stops the step.
  SignalWatcher(CancelToken& token, std::string agent_stop_file,
                std::function<void()> before_message)
      : agent_stop_file_(std::move(agent_stop_file)) {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) AddUnlessIgnored(set, sig);
    sigaddset(&set, SIGUSR1);  // our own wake-up at exit
    sigaddset(&set, kParentEnded);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread_ = std::thread([this, set, &token, before_message = std::move(before_message)] {
      siginfo_t info{};
      for (int sig; (sig = sigwaitinfo(&set, &info)) > 0 || errno == EINTR;) {
        if (sig <= 0) continue;
        if (sig == SIGUSR1) return;
        const pid_t parent = parent_pid_.load();
        // The kernel's word that the parent ended, only for a child that asked for it.
        if (sig == kParentEnded && parent <= 0) continue;
        // What came, for stderr and as the run's cause.
        std::string came = std::string("SIG") + sigabbrev_np(sig);
        std::string cause = came;
        if (parent > 0 && sig == kParentEnded) {
          came = "the end of the parent package's process";
          cause = fmt::format("the end of its parent package's process ({})", parent);
        } else if (parent > 0 && info.si_pid == parent) {
          cause = fmt::format("its parent package ({} from its process, {})", came, parent);
        } else if (sig == SIGTERM && !agent_stop_file_.empty() && info.si_pid == getppid()) {
          // Its agent's stop: an orphan_timeout, a drain or a request, which the record had
          // not told apart (QA: "canceled by SIGTERM", and only the agent knew why).
          if (auto why = ReadFile(agent_stop_file_); why.ok() && !why->empty()) {
            cause = "its agent: " + *why;
          }
        }
        if (opening_catalog_.load()) {
          // It had died of the signal without a word (exit 130).
          std::fprintf(stderr, "fanout: %s received while opening the catalog, before anything "
                       "ran; stopped\n", came.c_str());
          std::fflush(stderr);
          _exit(kExitCanceled);
        }
        before_message();
        if (run_ended_.load()) {
          // Only the recorder's last writes are left, retried while the catalog is down, and the
          // stops of remote runs given up on, asked again while their agents may come back.
          signaled_after_end_.store(true);
          std::fprintf(stderr, "fanout: %s received after the run ended; no longer waiting "
                       "for the catalog or for agents to answer stops\n", came.c_str());
        } else if (token.canceled()) {
          std::fprintf(stderr, "fanout: %s received again; still stopping the running tasks "
                       "(a second signal changes nothing)\n", came.c_str());
        } else {
          std::fprintf(stderr, "fanout: %s received, stopping every running task\n",
                       came.c_str());
        }
        if (!cause_said_.load()) {  // the first signal's, written by this thread alone
          cause_ = std::move(cause);
          cause_said_.store(true);
        }
        token.Cancel(CancelToken::Reason::kCanceled);
      }
    });
  }
  // What canceled the run, "" before a signal came: "SIGINT", or for a child package in a
  // process of its own (WatchParent), its parent, which stops it with SIGTERM, or that
  // parent's end.
  std::string Cause() const { return cause_said_.load() ? cause_ : ""; }
  // A child package's process goes when its parent's does (PR_SET_PDEATHSIG: a SIGKILLed
  // parent had left it running). The kernel's signal is not SIGTERM, which the parent sends
  // on a timeout or a cancel, so that the record can tell the two apart.
  void WatchParent(pid_t parent) {
    parent_pid_.store(parent);
    prctl(PR_SET_PDEATHSIG, kParentEnded);
    // It ended before the line above. (Under a FANOUT_BIN wrapper that does not exec, the
    // direct parent is the wrapper, and the package's process lives on.)
    if (getppid() != parent && kill(parent, 0) != 0 && errno == ESRCH) {
      kill(getpid(), kParentEnded);
    }
  }
  ~SignalWatcher() {
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  // Until then a signal ends the process at once (the catalog's connect may hang, and nothing
  // has run); after, it cancels the run.
  void CatalogOpened() { opening_catalog_.store(false); }
  // From then on a signal only cuts short the wait for the catalog.
  void RunEnded() { run_ended_.store(true); }
  bool SignaledAfterRunEnded() const { return signaled_after_end_.load(); }

 private:
  std::atomic<bool> opening_catalog_{true};
  std::atomic<bool> run_ended_{false};
  std::atomic<bool> signaled_after_end_{false};
  static constexpr int kParentEnded = SIGUSR2;
  std::atomic<pid_t> parent_pid_{0};
  const std::string agent_stop_file_;
  std::string cause_;  // written once, before cause_said_
  std::atomic<bool> cause_said_{false};
  std::thread thread_;
};

// Reads {"params": {"name": "value" | ["a", 1, ["b", 2]]}, "secrets": ["..."], "ancestors":
// ["..."], "parent_pid": N} from stdin: what a parent package hands a child started as its own
// process, kept off the command line. An agent's package step gives no parent_pid: it outlives
// its agent, which re-attaches to it when it starts again.
bool ReadParentInput(RunOptions& options, Masker& masker, SignalWatcher& signals) {
  std::map<std::string, Value>& params = options.params;
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  try {
    nlohmann::json json = nlohmann::json::parse(text);
    if (json.contains("secrets")) {
      for (const auto& secret : json.at("secrets")) masker.AddSecret(secret.get<std::string>());
    }
    if (json.contains("ancestors")) {
      options.ancestors = json.at("ancestors").get<std::vector<std::string>>();
    }
    if (json.contains("parent_pid")) signals.WatchParent(json.at("parent_pid").get<pid_t>());
    if (!json.contains("params")) return true;
    for (auto& [name, value] : json.at("params").items()) {
      auto param = ParamFromJson(value);
      if (!param.ok()) {
        fmt::print(stderr, "fanout: --params-stdin: param {}: {}\n", name,
                   param.status().message());
        return false;
      }
      params.emplace(name, std::move(*param));
    }
  } catch (const nlohmann::json::exception& e) {
    std::fprintf(stderr, "fanout: --params-stdin: expected {\"params\": {...}, \"secrets\": [...], "
                 "\"ancestors\": [...]}: %s\n",
                 e.what());
    return false;
  }
  return true;
}

// `reason` gets the line that says why the run failed or was canceled, which stderr ends with.
int RunPackage(const RunArgs& args, std::string& reason) {
  std::map<std::string, std::string> sets;
  if (!ParseSets(args.sets, sets)) return kExitUsage;
  std::map<std::string, std::string> from_files;
  if (int code = ReadValueFiles("--set-file", args.set_files, from_files); code != kExitSuccess) {
    return code;
  }
  for (const auto& [name, value] : from_files) {
    if (sets.count(name) != 0) {
      fmt::print(stderr, "fanout: {} is given by both --set and --set-file; give it once\n", name);
      return kExitUsage;
    }
    sets[name] = value;
  }
  if (auto s = catalog::ValidateReportingLevels(args.reporting); !s.ok()) {
    std::fprintf(stderr, "fanout: --reporting: %s\n", s.message().c_str());
    return kExitUsage;
  }
  // Set by a parent for its out-of-process child, and by an agent for its package step: an id
  // of NewExecutionId's (QA: `--execution-id notauuid` was recorded as the execution's id).
  if (!args.execution_id.empty() && !IsExecutionId(args.execution_id)) {
    std::fprintf(stderr, "fanout: --execution-id: '%s' is not an execution id (a UUIDv7)\n",
                 EscapeControls(args.execution_id).c_str());
    return kExitUsage;
  }
  RunOptions options;
  options.sets = std::move(sets);
  options.max_concurrent = args.max_concurrent;
  options.execution_id = args.execution_id;
  options.parent_execution_id = args.parent_execution_id;
  options.agent = args.agent_name;
  options.job = args.job;
  options.run_id = args.run_id;
  options.catalog_spec = report::CatalogSpec(args.catalog);
  if (!args.agent_name.empty()) SetCatalogSpecSource(agent::CatalogSpecSourceOf(args.agent_name));

  // Read here, not by LoadPackage, so that a file that cannot be read (missing, a directory) is
  // told apart from an invalid one, with the same message `fanout validate` prints.
  auto text = ReadFile(args.file);
  if (!text.ok()) {
    std::fprintf(stderr, "fanout: %s\n", text.status().message().c_str());
    return kExitNotFound;
  }
  if (auto other = OtherKindOfFile(*text, args.file, /*want_job=*/false)) {
    std::fprintf(stderr, "fanout: %s\n", other->c_str());
    return kExitInvalid;
  }
  Diagnostics diagnostics;
  auto package = LoadPackageText(*text, args.file, diagnostics);
  if (!package.ok()) {
    std::fputs(diagnostics.ToString().c_str(), stderr);
    std::fprintf(stderr, "fanout: cannot load %s: %s\n", args.file.c_str(),
                 package.status().message().c_str());
    return kExitInvalid;
  }
  const Package& pkg = **package;

  std::vector<std::unique_ptr<EventSink>> sinks;
  // Other console logs (`--log console`, a package's console providers) print their events to
  // stdout too. Each prints only what none before it prints, and the reporting console what
  // none of them prints: no event shows twice (QA: a console provider beside `--log console`
  // printed each of its events twice).
  catalog::EventFilter reporting = catalog::ReportingLevelsFilter(args.reporting);
  std::vector<catalog::EventFilter> console_logs;  // `--log console` prints every event
  if (std::count(args.logs.begin(), args.logs.end(), "console") > 0) console_logs.emplace_back();
  for (const LoggingDef& log : pkg.logging) {
    if (log.provider == "console") console_logs.emplace_back(log.events);
  }
  catalog::EventFilter printed = catalog::EventFilter::None();
  for (catalog::EventFilter& log : console_logs) {
    log.Remove(printed);
    printed.Add(log);
  }
  reporting.Remove(printed);
  const bool other_console = !console_logs.empty();
  auto console = std::make_unique<catalog::ConsoleSink>(reporting, stdout);
  // Outlives the Recorder, which holds the sink that feeds it.
  std::unique_ptr<ProgressLine> progress;
  bool quiet = args.reporting == "N" || args.reporting == "n";
  // The other console logs write to the terminal on their own and would run into the line: none
  // then.
  if (!args.no_progress && !quiet && !other_console && ProgressLine::Wanted(stdout)) {
    progress = std::make_unique<ProgressLine>(stdout);
    sinks.push_back(progress->Wrap(std::move(console)));
  } else {
    sinks.push_back(std::move(console));
  }
  for (const catalog::EventFilter& log : console_logs) {
    sinks.push_back(std::make_unique<catalog::ConsoleSink>(log, stdout));
  }
  for (const LoggingDef& log : pkg.logging) {
    if (log.provider == "console") continue;  // above
    std::string spec = log.provider + ":" + (std::filesystem::path(pkg.dir) / log.path).string();
    auto sink = catalog::MakeLogSink(spec, log.events);
    if (!sink.ok()) {
      std::fprintf(stderr, "%s\n",
                   Diagnostic{log.pos, "logging: " + sink.status().message()}.ToString().c_str());
      return kExitInvalid;
    }
    sinks.push_back(std::move(*sink));
  }
  for (const std::string& spec : args.logs) {
    if (spec == "console") continue;  // above
    auto sink = catalog::MakeLogSink(spec, {});
    if (!sink.ok()) {
      std::fprintf(stderr, "fanout: --log %s: %s\n", spec.c_str(), sink.status().message().c_str());
      return kExitUsage;
    }
    sinks.push_back(std::move(*sink));
  }
  const bool child = !args.parent_execution_id.empty();
  // A package task's child: its parent checked the catalog. An agent's step (a run id) uses
  // the agent's catalog, which a step checks at its start so that a wrong one fails it.
  const bool connect_later = child && args.run_id.empty();
  std::string unreachable;
  // Watching before the catalog opens: every thread started from here (a PostgreSQL catalog's
  // watchdog among them) inherits the blocked signals, and a Ctrl-C while a catalog server keeps
  // the connect waiting ends the process at once, nothing having run.
  CancelToken cancel;
  SignalWatcher signals(cancel,
                        args.result_file.empty() ? "" : agent::StopFileOf(args.result_file),
                        [&progress] {
    if (progress) progress->Erase();
  });
  auto catalog = OpenCatalogForRun(options.catalog_spec, unreachable, connect_later);
  if (!catalog.ok()) {
    std::fprintf(stderr, "fanout: %s\n",
                 report::CatalogProblem(options.catalog_spec, catalog.status().message()).c_str());
    return kExitUsage;
  }
  options.catalog_unreachable = !unreachable.empty();
  // A SQLite catalog file removed or replaced during the run takes what it recorded with it,
  // and SQLite says nothing (QA: the run said Success and the rows were nowhere).
  const auto catalog_file = CatalogSqlitePath(options.catalog_spec);
  struct stat catalog_at_start {};
  const bool watch_catalog_file = catalog_file.ok() && !catalog_file->empty() &&
                                  stat(catalog_file->c_str(), &catalog_at_start) == 0;
  if (!unreachable.empty()) {
    std::string spool = catalog::DefaultSpoolDir();
    std::fprintf(stderr,
                 "fanout: catalog %s cannot be reached (%s); the run goes on, and its rows wait "
                 "%s until the catalog answers\n",
                 report::DisplayCatalogSpec(options.catalog_spec).c_str(), unreachable.c_str(),
                 spool.empty() ? "in memory" : ("in the spool in " + spool).c_str());
  }

  signals.CatalogOpened();
  auto masker = std::make_shared<Masker>();
  if (args.params_stdin && !ReadParentInput(options, *masker, signals)) return kExitUsage;
  // A value kept in a file is kept out of sight, declared sensitive or not (docs/engine.md).
  for (const auto& [name, value] : from_files) masker->AddSecret(value);
  RecorderOptions recording{catalog::DefaultSpoolDir(), options.catalog_spec};
  // A child (of a package task or an agent's step) does not hold its parent's task or slot
  // while the catalog is down: its rows stay in the spool for a recorder that lives on.
  if (child) recording.shutdown_retry = std::chrono::milliseconds(0);
  recording.stop_retrying = [&cancel] { return cancel.canceled(); };
  recording.unreachable_said = options.catalog_unreachable;
  Recorder recorder(std::move(*catalog), std::move(sinks), masker, recording);
  Engine engine(recorder);
  if (progress) progress->Start();
  options.cancel_cause = [&signals] { return signals.Cause(); };
  auto result = engine.Run(*package, options, &cancel);
  signals.RunEnded();
  recorder.Flush();
  if (progress) progress->Stop();
  if (struct stat now {}; watch_catalog_file &&
                          (stat(catalog_file->c_str(), &now) != 0 ||
                           now.st_ino != catalog_at_start.st_ino ||
                           now.st_dev != catalog_at_start.st_dev)) {
    std::fprintf(stderr, "fanout: warning: the catalog file %s was removed or replaced during "
                 "the run: what the run recorded there went with the old file and is lost (this "
                 "output and any --log file are what is left)\n", catalog_file->c_str());
  }
  // Remote runs given up on (lost, or begun by a start whose answer was lost) are stopped now,
  // the run's record written first: once this process has exited, nobody would, and they would
  // go on beside their retries.
  for (const std::string& left : client::AgentPool::StopLeftRuns(
           std::chrono::steady_clock::now() + client::kAgentComeBackWait,
           [&signals] { return signals.SignaledAfterRunEnded(); })) {
    std::fprintf(stderr, "fanout: warning: %s\n", EscapeControls(masker->Mask(left)).c_str());
  }
  if (!result.ok()) {
    // The engine names every value given on the command line `--set NAME`: say --set-file for
    // those read from files.
    std::string message = result.status().message();
    for (const auto& [name, unused] : from_files) {
      const std::string said = "--set " + name + ": ";
      for (size_t at = message.find(said); at != std::string::npos; at = message.find(said, at)) {
        message.replace(at, said.size(), "--set-file " + name + ": ");
      }
    }
    std::fprintf(stderr, "fanout: %s: %s\n", args.file.c_str(),
                 EscapeControls(masker->Mask(message)).c_str());
    return kExitInvalid;
  }
  const RunResult& r = *result;
  std::string counts = fmt::format("{} succeeded, {} failed, {}{} skipped{}", r.succeeded, r.failed,
                                   r.canceled > 0 ? fmt::format("{} canceled, ", r.canceled) : "",
                                   r.skipped,
                                   r.not_started > 0
                                       ? fmt::format(", {} not started", r.not_started)
                                       : "");
  std::string line = fmt::format("Package {}: {} ({}) in {}; execution {}", pkg.name,
                                 TaskResultName(r.result), counts, FormatDuration(r.duration),
                                 r.execution_id);
  if (!quiet) {
    std::printf("%s\n", masker->Mask(line).c_str());
    // One line per agent that ran children of this run (agent-job tasks).
    for (const client::AgentSummary& a : client::AgentPool::AllSummaries()) {
      std::string unusable =
          a.unusable.empty() ? "" : "; unusable at least once, last: " + a.unusable;
      if (!a.jobs_missing.empty()) {
        unusable += fmt::format("; had no job {} when asked", fmt::join(a.jobs_missing, ", "));
      }
      // Unfollowed children (wait: false) end unseen: neither failed nor busy here (SSIS QA:
      // "1 child, 0 failed, busy 0.0 ms" of one that failed later).
      const std::string unfollowed =
          a.unfollowed == 0 ? "" : fmt::format(" ({} not followed)", a.unfollowed);
      std::printf("  agent %-12s %s: %d child%s%s, %d failed, %d lost, busy %s%s\n",
                  a.name.c_str(), a.url.c_str(), a.children, a.children == 1 ? "" : "ren",
                  unfollowed.c_str(), a.failed, a.lost,
                  FormatDuration(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::duration<double>(a.busy_seconds)))
                      .c_str(),
                  EscapeControls(masker->Mask(unusable)).c_str());
    }
  }
  // The reason always goes to stderr, where scripts and a parent package look for it.
  // A task's output in it is escaped, as in logs and reports: it must not drive the terminal.
  // On one line, its breaks written `\n`: a parent, or an agent, takes a child's last line of
  // stderr as its reason (QA: of "exit code 4: e-one\ne-two" only "e-two" reached the parent).
  auto one_line = [&](const std::string& message) {
    std::string text = EscapeControls(masker->Mask(message));
    while (!text.empty() && text.back() == '\n') text.pop_back();
    for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 2)) {
      text.replace(at, 1, "\\n");
    }
    return text;
  };
  if (r.result == TaskResult::kFailure) {
    reason = fmt::format("fanout: package {} failed: {}", pkg.name, one_line(r.message));
  } else if (r.result == TaskResult::kCanceled) {
    // The message is the run's first error, which came before the cancel, not its cause.
    const bool says_more = !r.message.empty() && r.message != "canceled" &&
                           r.message != "canceled by " + signals.Cause();
    reason = fmt::format("fanout: package {} was canceled{}{}", pkg.name,
                         says_more ? "; its first error: " : "",
                         says_more ? one_line(r.message) : "");
  }
  if (!reason.empty()) std::fprintf(stderr, "%s\n", reason.c_str());
  switch (r.result) {
    case TaskResult::kSuccess: return kExitSuccess;
    case TaskResult::kFailure: return kExitFailure;
    case TaskResult::kCanceled: return kExitCanceled;
  }
  return kExitFailure;
}

}  // namespace

Command AddRunCommand(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Run a package (as dtexec does)");
  cmd->add_option("file", args->file, "The package file (YAML)")->required();
  cmd->add_option("--set", args->sets,
                  "NAME=VALUE: set a parameter or variable (repeatable)");
  cmd->add_option("--set-file", args->set_files,
                  "NAME=FILE: set it to FILE's text (- for standard input), keeping a secret out "
                  "of `ps` (repeatable)");
  cmd->add_option("--catalog", args->catalog,
                  "Where executions are recorded: sqlite:PATH or postgresql://USER@HOST/DB "
                  "(default sqlite:fanout.db, or $FANOUT_CATALOG)");
  cmd->add_option("--log", args->logs,
                  "Also log every event to text:PATH, jsonl:PATH or console (repeatable)");
  cmd->add_option("--reporting", args->reporting,
                  "Console events, as dtexec /Reporting: E errors, W warnings, I information, "
                  "P progress, V verbose (all), N none")
      ->default_str("EWP");
  cmd->add_flag("--no-progress", args->no_progress,
               "No progress line at the bottom of the terminal (shown when stdout is one and "
               "the run lasts over a second)");
  cmd->add_option("--max-concurrent", args->max_concurrent,
                  "Tasks run at once (default: the package's max_concurrent, else cores + 2)")
      ->check(WholeNumberAtLeastOne());
  // Hidden: how a parent starts a child package as its own process (engine.md).
  cmd->add_option("--execution-id", args->execution_id)->group("");
  cmd->add_option("--parent-execution-id", args->parent_execution_id)->group("");
  cmd->add_flag("--params-stdin", args->params_stdin)->group("");
  // Used when an agent runs a package step: recorded on the execution.
  cmd->add_option("--agent-name", args->agent_name)->group("");
  cmd->add_option("--job", args->job)->group("");
  cmd->add_option("--run-id", args->run_id)->group("");
  cmd->footer(
      "Exit codes: 0 success, 1 failure, 3 canceled (SIGINT/SIGTERM/SIGHUP, or the end of a\n"
      "parent package's process), 4 file not found,\n"
      "5 cannot load or invalid, 6 usage error.");
  cmd->add_option("--result-file", args->result_file)->group("");
  return {cmd, [args] {
    std::string reason;
    // Before the result file, which must say the code the process exits with.
    int code = WithStdoutWritten(RunPackage(*args, reason));
    if (!args->result_file.empty()) WriteResultFile(args->result_file, code, reason);
    return code;
  }};
}

}  // namespace fanout::cli
