// Fanout's benchmarks (DESIGN §7): the engine's overhead per task on packages of 10,000
// `expression` tasks, and the rate of 1,000 `process` tasks of /bin/true against a bare spawn
// loop measured in the same run. A report, not a test: every figure is the median of several
// runs, compared with its target as a ratio; it exits 0 when a target is missed (MISS) and 1 only
// when a run itself went wrong (a failed task, a lost row, a child that did not start).
#include <errno.h>
#include <fmt/format.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "fanout/catalog.h"
#include "fanout/engine.h"
#include "fanout/package.h"
#include "tasks/builtin.h"

extern char** environ;

namespace fanout::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kRuns = 5;
constexpr int kExpressionTasks = 10000;
constexpr int kProcessTasks = 1000;
constexpr int kConcurrency = 4;
constexpr double kTargetMicrosPerTask = 20.0;  // DESIGN §7: engine overhead per task
constexpr double kTargetRateRatio = 0.80;      // DESIGN §7: share of the bare spawn rate
constexpr const char* kTrue = "/bin/true";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Repeated measurements of one quantity: the median is the figure, min..max shows the noise.
class Samples {
 public:
  void Add(double v) { values_.push_back(v); }
  double Median() const {
    std::vector<double> v = values_;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    if (n == 0) return 0;
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  double Min() const {
    return values_.empty() ? 0 : *std::min_element(values_.begin(), values_.end());
  }
  double Max() const {
    return values_.empty() ? 0 : *std::max_element(values_.begin(), values_.end());
  }

 private:
  std::vector<double> values_;
};

const char* Verdict(bool pass) { return pass ? "PASS" : "MISS"; }

// A fresh directory for the SQLite catalogs, removed with everything in it at the end.
class TempDir {
 public:
  static Result<std::unique_ptr<TempDir>> Create() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fanout-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return Internal(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
    }
    return std::unique_ptr<TempDir>(new TempDir(pattern));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

// ---- Packages, generated as YAML text --------------------------------------------------------

enum class Shape { kChain, kFan };

const char* ShapeName(Shape shape) { return shape == Shape::kChain ? "chain" : "fan"; }

// `tasks` expression tasks, each adding 1 to @n: a chain (each `after` the previous) or a fan
// (all independent). With `verify` the tasks sit in a sequence followed by a `check` task that
// runs only when @n == tasks at the end, so the RunResult shows whether every increment happened
// (the engine does not hand variables back to its caller).
std::string ExpressionPackageText(Shape shape, int tasks, bool verify) {
  std::string text = fmt::format(
      "package: bench-{}-{}\n"
      "variables:\n"
      "  n: {{type: int, value: 0}}\n"
      "  checked: {{type: bool, value: false}}\n"
      "tasks:\n",
      ShapeName(shape), verify ? "verify" : "timed");
  std::string indent = "  ";
  if (verify) {
    text += "  work:\n    type: sequence\n    tasks:\n";
    indent = "      ";
  }
  text.reserve(text.size() + static_cast<size_t>(tasks) * 64);
  for (int i = 0; i < tasks; ++i) {
    text += fmt::format("{}t{}: {{type: expression, set: {{n: \"@n + 1\"}}", indent, i);
    if (shape == Shape::kChain && i > 0) text += fmt::format(", after: [t{}]", i - 1);
    text += "}\n";
  }
  if (verify) {
    text += fmt::format(
        "  check: {{type: expression, set: {{checked: \"TRUE\"}}, "
        "after: [{{task: work, when: \"@n == {}\"}}]}}\n",
        tasks);
  }
  return text;
}

std::string ProcessPackageText(int tasks, int concurrency) {
  std::string text =
      fmt::format("package: bench-process\nmax_concurrent: {}\ntasks:\n", concurrency);
  for (int i = 0; i < tasks; ++i) {
    text += fmt::format("  p{}: {{type: process, run: [{}]}}\n", i, kTrue);
  }
  return text;
}

Result<std::shared_ptr<const Package>> Load(const std::string& text, const std::string& name) {
  Diagnostics diagnostics;
  auto package = LoadPackageText(text, name, diagnostics);
  if (!package.ok()) {
    return Internal(fmt::format("cannot load the generated package {}: {}\n{}", name,
                                package.status().message(), diagnostics.ToString()));
  }
  return *package;
}

// ---- Engine runs ------------------------------------------------------------------------------

// How events and rows are recorded: the normal configuration (a Recorder writing to a SQLite
// catalog) or the engine alone (a Recorder with no catalog and no sinks).
enum class Recording { kSqlite, kNone };

struct EngineRun {
  double run_seconds = 0;    // Engine::Run, from call to return
  double flush_seconds = 0;  // then until the Recorder had written everything
  RunResult result;
};

// Runs `package` once with a fresh Recorder (and, for kSqlite, a fresh catalog at `db`); checks
// the run succeeded with `expected_succeeded` leaf tasks and, for kSqlite, that the catalog holds
// one task run for each of them.
Result<EngineRun> RunEngine(const std::shared_ptr<const Package>& package, Recording recording,
                            const std::filesystem::path& db, int expected_succeeded) {
  std::unique_ptr<Catalog> catalog;
  if (recording == Recording::kSqlite) {
    ASSIGN_OR_RETURN(catalog, OpenCatalog("sqlite:" + db.string()));
  }
  EngineRun run;
  {
    Recorder recorder(std::move(catalog), {}, nullptr);
    Engine engine(recorder);
    RunOptions options;  // max_concurrent: the package's
    Clock::time_point start = Clock::now();
    auto result = engine.Run(package, options);
    Clock::time_point ran = Clock::now();
    recorder.Flush();
    Clock::time_point flushed = Clock::now();
    if (!result.ok()) {
      return Internal(
          fmt::format("{}: Engine::Run: {}", package->name, result.status().ToString()));
    }
    run.result = *result;
    run.run_seconds = Seconds(ran - start);
    run.flush_seconds = Seconds(flushed - ran);
  }
  const RunResult& r = run.result;
  if (r.result != TaskResult::kSuccess || r.succeeded != expected_succeeded || r.failed != 0 ||
      r.skipped != 0) {
    return Internal(fmt::format(
        "{}: expected Success with {} succeeded, got {} ({} succeeded, {} failed, {} skipped){}",
        package->name, expected_succeeded, TaskResultName(r.result), r.succeeded, r.failed,
        r.skipped, r.message.empty() ? "" : ": " + r.message));
  }
  if (recording == Recording::kSqlite) {
    ASSIGN_OR_RETURN(auto reopened, OpenCatalog("sqlite:" + db.string()));
    ASSIGN_OR_RETURN(auto task_runs, reopened->ListTaskRuns(r.execution_id));
    if (static_cast<int>(task_runs.size()) != expected_succeeded) {
      return Internal(fmt::format("{}: the catalog holds {} task runs, expected {}", package->name,
                                  task_runs.size(), expected_succeeded));
    }
  }
  return run;
}

// ---- The bare spawn loop ----------------------------------------------------------------------

enum class SpawnMethod { kForkExec, kPosixSpawn };

const char* SpawnMethodName(SpawnMethod m) {
  return m == SpawnMethod::kForkExec ? "fork+execv" : "posix_spawn";
}

// Starts kProcessTasks runs of /bin/true from this one thread, keeping kConcurrency alive at once
// and reaping them with waitpid. Returns children per second.
Result<double> SpawnLoop(SpawnMethod method) {
  char* argv[] = {const_cast<char*>(kTrue), nullptr};
  std::unordered_set<pid_t> live;
  int started = 0;
  int reaped = 0;
  Clock::time_point start = Clock::now();
  while (reaped < kProcessTasks) {
    while (started < kProcessTasks && static_cast<int>(live.size()) < kConcurrency) {
      pid_t pid = -1;
      if (method == SpawnMethod::kForkExec) {
        pid = fork();
        if (pid == 0) {
          execv(kTrue, argv);
          _exit(127);
        }
        if (pid < 0) return Internal(fmt::format("fork: {}", std::strerror(errno)));
      } else {
        int rc = posix_spawn(&pid, kTrue, nullptr, nullptr, argv, environ);
        if (rc != 0) return Internal(fmt::format("posix_spawn: {}", std::strerror(rc)));
      }
      live.insert(pid);
      ++started;
    }
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      return Internal(fmt::format("waitpid: {}", std::strerror(errno)));
    }
    if (live.erase(pid) == 0) continue;  // not one of ours
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Internal(fmt::format("{} {}: child ended with status {:#x}", SpawnMethodName(method),
                                  kTrue, status));
    }
    ++reaped;
  }
  return kProcessTasks / Seconds(Clock::now() - start);
}

// The same work from kConcurrency threads, each starting one child with posix_spawn and waiting
// for it with waitpid(pid), in a loop: how the engine's workers run process tasks, minus the
// engine. Returns children per second.
Result<double> ThreadedSpawnLoop() {
  std::atomic<int> next{0};
  std::mutex mu;
  std::string error;  // the first failure, guarded by mu
  auto work = [&] {
    char* argv[] = {const_cast<char*>(kTrue), nullptr};
    while (next.fetch_add(1) < kProcessTasks) {
      pid_t pid = -1;
      int rc = posix_spawn(&pid, kTrue, nullptr, nullptr, argv, environ);
      int status = 0;
      std::string failure;
      if (rc != 0) {
        failure = fmt::format("posix_spawn: {}", std::strerror(rc));
      } else if (waitpid(pid, &status, 0) != pid) {
        failure = fmt::format("waitpid: {}", std::strerror(errno));
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failure = fmt::format("{}: child ended with status {:#x}", kTrue, status);
      }
      if (!failure.empty()) {
        std::lock_guard lock(mu);
        if (error.empty()) error = std::move(failure);
        return;
      }
    }
  };
  Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < kConcurrency; ++i) threads.emplace_back(work);
  for (std::thread& t : threads) t.join();
  double seconds = Seconds(Clock::now() - start);
  if (!error.empty()) return Internal(error);
  return kProcessTasks / seconds;
}

// ---- The benchmarks ---------------------------------------------------------------------------

std::string Spread(const Samples& s, const char* format) {
  return fmt::format("[{} .. {}]", fmt::format(fmt::runtime(format), s.Min()),
                     fmt::format(fmt::runtime(format), s.Max()));
}

// (b): the process benchmark. The limit is the fastest of three bare loops, each keeping
// `kConcurrency` children alive: one thread with fork+execv (what the design names), one thread
// with posix_spawn (what the engine uses), and one thread per slot each spawning and waiting for
// its own child (the engine's shape: on a VM a single thread is bound by the latency of each
// spawn, which several threads overlap). The measurements take turns within each round, in a
// rotating order, so a slow moment of the machine does not fall on one of them only.
Result<std::string> ProcessBenchmark(const TempDir& dir) {
  fmt::print("\n(b) {} process tasks of {}, {} at a time; children/s, median of {}\n",
             kProcessTasks, kTrue, kConcurrency, kRuns);
  ASSIGN_OR_RETURN(auto package,
                   Load(ProcessPackageText(kProcessTasks, kConcurrency), "bench-process.yaml"));
  struct Measure {
    const char* what;
    bool is_engine;
    std::function<Result<double>(int round)> rate;
    Samples samples;
  };
  auto engine_rate = [&](Recording recording) {
    return [&dir, package, recording](int round) -> Result<double> {
      ASSIGN_OR_RETURN(EngineRun run,
                       RunEngine(package, recording,
                                 dir.path() / fmt::format("process-{}.db", round), kProcessTasks));
      return kProcessTasks / run.run_seconds;
    };
  };
  std::vector<Measure> measures;
  auto add = [&](const char* what, bool is_engine, std::function<Result<double>(int)> rate) {
    measures.push_back({what, is_engine, std::move(rate), {}});
  };
  add("bare, 1 thread, fork+execv", false, [](int) { return SpawnLoop(SpawnMethod::kForkExec); });
  add("bare, 1 thread, posix_spawn", false,
      [](int) { return SpawnLoop(SpawnMethod::kPosixSpawn); });
  add("bare, 1 thread per slot, posix_spawn", false, [](int) { return ThreadedSpawnLoop(); });
  size_t normal = measures.size();  // the configuration the target is judged on
  add("engine + Recorder + SQLite catalog", true, engine_rate(Recording::kSqlite));
  add("engine alone (no catalog, no sinks)", true, engine_rate(Recording::kNone));
  for (int round = 0; round < kRuns; ++round) {
    for (size_t k = 0; k < measures.size(); ++k) {
      Measure& m = measures[(k + static_cast<size_t>(round)) % measures.size()];
      ASSIGN_OR_RETURN(double rate, m.rate(round));
      m.samples.Add(rate);
    }
  }
  const Measure* limit = nullptr;
  for (const Measure& m : measures) {
    if (!m.is_engine && (limit == nullptr || m.samples.Median() > limit->samples.Median())) {
      limit = &m;
    }
  }
  for (const Measure& m : measures) {
    std::string text = fmt::format("  {:<38} {:>6.0f}/s  {:<16}", m.what, m.samples.Median(),
                                   Spread(m.samples, "{:.0f}"));
    if (m.is_engine) {
      double ratio = m.samples.Median() / limit->samples.Median();
      text += fmt::format("  ratio {:.3f} (target >= {:.2f}): {}", ratio, kTargetRateRatio,
                          Verdict(ratio >= kTargetRateRatio));
    } else if (&m == limit) {
      text += "  <- the limit (fastest bare loop)";
    }
    fmt::print("{}\n", text);
  }
  const Samples& engine = measures[normal].samples;
  // The verdict uses the fastest loop; the ratio to each loop shows how much that choice matters.
  std::string each;
  for (const Measure& m : measures) {
    if (m.is_engine) continue;
    each += fmt::format("{}{} {:.2f}", each.empty() ? "" : " | ",
                        std::string_view(m.what).substr(std::string_view("bare, ").size()),
                        engine.Median() / m.samples.Median());
  }
  fmt::print("  engine + SQLite / each bare loop: {}\n", each);
  double ratio = engine.Median() / limit->samples.Median();
  return fmt::format(
      "process {} x {} @{}: engine {:.0f}/s, bare fork/exec limit {:.0f}/s ({}), ratio {:.3f} "
      "(target >= {:.2f}): {}",
      kProcessTasks, kTrue, kConcurrency, engine.Median(), limit->samples.Median(),
      std::string_view(limit->what).substr(std::string_view("bare, ").size()), ratio,
      kTargetRateRatio, Verdict(ratio >= kTargetRateRatio));
}

// (a), one shape: a verification run first (also warming caches), then timed runs alternating
// the two recording configurations.
Result<std::string> ExpressionBenchmark(const TempDir& dir, Shape shape) {
  const char* name = ShapeName(shape);
  Clock::time_point load_start = Clock::now();
  ASSIGN_OR_RETURN(auto package, Load(ExpressionPackageText(shape, kExpressionTasks, false),
                                      fmt::format("bench-{}.yaml", name)));
  double load_seconds = Seconds(Clock::now() - load_start);
  ASSIGN_OR_RETURN(auto verify, Load(ExpressionPackageText(shape, kExpressionTasks, true),
                                     fmt::format("bench-{}-verify.yaml", name)));
  // The check task runs (succeeded = tasks + 1, skipped = 0) only if @n == tasks at the end.
  RETURN_IF_ERROR(RunEngine(verify, Recording::kNone, {}, kExpressionTasks + 1).status());

  Samples sqlite_run, sqlite_flushed, alone_run;
  for (int round = 0; round < kRuns; ++round) {
    ASSIGN_OR_RETURN(
        EngineRun with_catalog,
        RunEngine(package, Recording::kSqlite, dir.path() / fmt::format("{}-{}.db", name, round),
                  kExpressionTasks));
    sqlite_run.Add(with_catalog.run_seconds * 1e6 / kExpressionTasks);
    sqlite_flushed.Add((with_catalog.run_seconds + with_catalog.flush_seconds) * 1e6 /
                       kExpressionTasks);
    ASSIGN_OR_RETURN(EngineRun alone, RunEngine(package, Recording::kNone, {}, kExpressionTasks));
    alone_run.Add(alone.run_seconds * 1e6 / kExpressionTasks);
  }
  // `judged`: the figure is engine time per task and gets a verdict; else it is shown for
  // information (the time until the Recorder has also written everything to the catalog).
  auto line = [&](const std::string& what, const Samples& s, bool judged) {
    double ratio = s.Median() / kTargetMicrosPerTask;
    fmt::print("  {:<44} {:>7.2f} µs/task  {:<16}  {:.2f} of target{}\n", what, s.Median(),
               Spread(s, "{:.2f}"), ratio,
               judged ? fmt::format(": {}", Verdict(s.Median() <= kTargetMicrosPerTask))
                      : " (information)");
  };
  fmt::print("  {}: verified @n == {} at the end; LoadPackageText took {:.0f} ms (not counted)\n",
             name, kExpressionTasks, load_seconds * 1e3);
  line(fmt::format("{}, engine + Recorder + SQLite catalog", name), sqlite_run, true);
  line(fmt::format("{}, the same until the catalog is flushed", name), sqlite_flushed, false);
  line(fmt::format("{}, engine alone (no catalog, no sinks)", name), alone_run, true);
  return fmt::format(
      "engine {} 10k expression tasks: {:.2f} µs/task (median of {}) target <= {:.0f} µs: {} "
      "(ratio {:.2f})",
      name, sqlite_run.Median(), kRuns, kTargetMicrosPerTask,
      Verdict(sqlite_run.Median() <= kTargetMicrosPerTask),
      sqlite_run.Median() / kTargetMicrosPerTask);
}

// The 1-minute load average: a busy machine makes every figure noisier.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one_minute;
  if (!(in >> one_minute)) return "unknown";
  return one_minute;
}

// Which benchmarks to run: every one, or those named on the command line ("process", "chain",
// "fan"), e.g. to profile one of them alone.
struct Selection {
  bool process = true, chain = true, fan = true;
};

Result<Selection> ParseArgs(int argc, char** argv) {
  if (argc <= 1) return Selection{};
  Selection s{false, false, false};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "process") {
      s.process = true;
    } else if (arg == "chain") {
      s.chain = true;
    } else if (arg == "fan") {
      s.fan = true;
    } else {
      return InvalidArgument(fmt::format(
          "unknown benchmark '{}'; usage: fanout_bench [process] [chain] [fan] (default: all)",
          arg));
    }
  }
  return s;
}

Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Selection selection, ParseArgs(argc, argv));
  RegisterBuiltinTaskTypes();
  ASSIGN_OR_RETURN(auto dir, TempDir::Create());
  Clock::time_point start = Clock::now();
  fmt::print(
      "Fanout benchmarks (DESIGN §7): median of {} runs, [min .. max] of the runs beside "
      "it; {} hardware threads, load average {} at start\n",
      kRuns, std::thread::hardware_concurrency(), LoadAverage());

  std::vector<std::string> summary;
  // The process benchmark goes first, while this process is small: fork() copies its page
  // tables, so a heap grown by the 10,000-task packages would slow the bare fork loop only.
  if (selection.process) {
    ASSIGN_OR_RETURN(std::string line, ProcessBenchmark(*dir));
    summary.push_back(std::move(line));
  }
  if (selection.chain || selection.fan) {
    fmt::print(
        "\n(a) {} expression tasks (@n = @n + 1) per package; engine time per task, "
        "median of {}; target <= {:.0f} µs\n",
        kExpressionTasks, kRuns, kTargetMicrosPerTask);
  }
  for (Shape shape : {Shape::kChain, Shape::kFan}) {
    if (!(shape == Shape::kChain ? selection.chain : selection.fan)) continue;
    ASSIGN_OR_RETURN(std::string line, ExpressionBenchmark(*dir, shape));
    // The expression lines come first in the summary, as in DESIGN §7's order of (a), (b).
    summary.insert(summary.end() - (selection.process ? 1 : 0), std::move(line));
  }

  fmt::print("\nSummary (normal configuration: Recorder + SQLite catalog in a temp dir)\n");
  for (const std::string& line : summary) fmt::print("  {}\n", line);
  fmt::print("(whole benchmark: {:.1f} s)\n", Seconds(Clock::now() - start));
  return Status::Ok();
}

}  // namespace
}  // namespace fanout::bench

int main(int argc, char** argv) {
  fanout::Status status = fanout::bench::Main(argc, argv);
  std::fflush(stdout);
  if (!status.ok()) {
    std::fprintf(stderr, "fanout_bench: ERROR, the benchmark could not run: %s\n",
                 status.ToString().c_str());
    return 1;
  }
  return 0;
}
