// Helpers shared by the benchmark programs engine_bench.cc, agent_bench.cc and pool_bench.cc:
// repeated measurements (Samples, Spread, Verdict), a temporary directory, SIGINT/SIGTERM
// handling, reading the end of a log, the bare fork/exec and posix_spawn baselines of /bin/true,
// starting a child process (a `fanout agent`) with its stderr in a log, and the sections, summary
// and main() every benchmark has. Header-only, so each
// benchmark stays one target.
#ifndef FANOUT_BENCH_BENCH_UTIL_H_
#define FANOUT_BENCH_BENCH_UTIL_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "fanout/status.h"

extern char** environ;

namespace fanout::bench {

using Clock = std::chrono::steady_clock;

inline constexpr const char* kTrue = "/bin/true";

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

template <typename Duration>
double Millis(Duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// ---- Interruption -----------------------------------------------------------------------------

// SIGINT/SIGTERM: every loop checks this and returns an error, so child processes are stopped
// and temporary directories are removed on the way out (no cleanup happens in the handler).
inline volatile sig_atomic_t g_interrupted = 0;

inline void OnSignal(int sig) { g_interrupted = sig; }

inline Status CheckInterrupted() {
  if (g_interrupted == 0) return Status::Ok();
  return Canceled(fmt::format("interrupted by {}", g_interrupted == SIGINT ? "SIGINT" : "SIGTERM"));
}

// Installs OnSignal for SIGINT and SIGTERM, and ignores SIGPIPE: a write to an agent that went
// away fails instead of killing the bench.
inline void InstallSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// ---- Measurements -----------------------------------------------------------------------------

// Repeated measurements of one quantity: the median is the figure, min..max shows the noise.
class Samples {
 public:
  void Add(double v) { values_.push_back(v); }
  double Median() const { return Percentile(50); }
  // Nearest rank: the smallest value with at least p % of the values at or below it.
  double Percentile(double p) const {
    if (values_.empty()) return 0;
    std::vector<double> v = values_;
    std::sort(v.begin(), v.end());
    if (p == 50 && v.size() % 2 == 0) return (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    auto rank = static_cast<size_t>(std::ceil(p / 100 * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
  }
  double Min() const {
    return values_.empty() ? 0 : *std::min_element(values_.begin(), values_.end());
  }
  double Max() const {
    return values_.empty() ? 0 : *std::max_element(values_.begin(), values_.end());
  }
  size_t size() const { return values_.size(); }

 private:
  std::vector<double> values_;
};

inline const char* Verdict(bool pass) { return pass ? "PASS" : "MISS"; }

inline std::string Spread(const Samples& s, const char* format) {
  return fmt::format("[{} .. {}]", fmt::format(fmt::runtime(format), s.Min()),
                     fmt::format(fmt::runtime(format), s.Max()));
}

// p50/p90/p99 of latencies in milliseconds.
inline std::string Percentiles(const Samples& s) {
  return fmt::format("p50 {:6.3f} ms  p90 {:6.3f}  p99 {:6.3f}", s.Percentile(50), s.Percentile(90),
                     s.Percentile(99));
}

// The 1-minute load average: a busy machine makes every figure noisier.
inline std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one_minute;
  if (!(in >> one_minute)) return "unknown";
  return one_minute;
}

// ---- Files ------------------------------------------------------------------------------------

// A fresh directory TMP/PREFIX-XXXXXX, removed with everything in it at the end.
class TempDir {
 public:
  static Result<std::unique_ptr<TempDir>> Create(std::string_view prefix) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / fmt::format("{}-XXXXXX", prefix)).string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return Internal(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
    }
    return std::unique_ptr<TempDir>(new TempDir(pattern));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

// The end of a file, for error messages (a child's log).
inline std::string Tail(const std::filesystem::path& path, size_t bytes = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > bytes) text = "..." + text.substr(text.size() - bytes);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

inline std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {}", WTERMSIG(status));
  return fmt::format("status {:#x}", status);
}

// ---- Bare baselines: /bin/true without fanout ------------------------------------------------

enum class SpawnMethod { kForkExec, kPosixSpawn };

inline const char* SpawnMethodName(SpawnMethod m) {
  return m == SpawnMethod::kForkExec ? "fork+execv" : "posix_spawn";
}

inline Result<pid_t> StartTrue(SpawnMethod method) {
  char* argv[] = {const_cast<char*>(kTrue), nullptr};
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
  return pid;
}

inline Status CheckExit(SpawnMethod method, int status) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  return Internal(fmt::format("{} {}: the child ended with {}", SpawnMethodName(method), kTrue,
                              DescribeWaitStatus(status)));
}

// One child of /bin/true from start to reaped: the bare fork/exec/wait DESIGN §7 compares a
// latency with. Returns seconds.
inline Result<double> SpawnWait(SpawnMethod method) {
  RETURN_IF_ERROR(CheckInterrupted());
  Clock::time_point start = Clock::now();
  ASSIGN_OR_RETURN(pid_t pid, StartTrue(method));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Internal(fmt::format("waitpid: {}", std::strerror(errno)));
  }
  double seconds = Seconds(Clock::now() - start);
  RETURN_IF_ERROR(CheckExit(method, status));
  return seconds;
}

// `children` children of /bin/true from this one thread, `concurrency` alive at once, reaped
// with waitpid (as engine_bench's bare loops); children not started here are skipped. Returns
// children/s.
inline Result<double> SpawnLoop(SpawnMethod method, int children, int concurrency) {
  std::unordered_set<pid_t> live;
  int started = 0, reaped = 0;
  Clock::time_point start = Clock::now();
  while (reaped < children) {
    RETURN_IF_ERROR(CheckInterrupted());
    while (started < children && static_cast<int>(live.size()) < concurrency) {
      ASSIGN_OR_RETURN(pid_t pid, StartTrue(method));
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
    RETURN_IF_ERROR(CheckExit(method, status));
    ++reaped;
  }
  return children / Seconds(Clock::now() - start);
}

// The same work from `threads` threads, each spawning one child with posix_spawn and waiting for
// it, in a loop: the shape of an agent's run threads without the agent. Returns children/s.
inline Result<double> ThreadedSpawnLoop(int children, int threads) {
  std::atomic<int> next{0};
  std::mutex mu;
  Status error;  // the first failure, guarded by mu
  auto work = [&] {
    while (next.fetch_add(1) < children) {
      Status s = SpawnWait(SpawnMethod::kPosixSpawn).status();
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (error.ok()) error = s;
        next.store(children);
        return;
      }
    }
  };
  Clock::time_point start = Clock::now();
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) workers.emplace_back(work);
  for (std::thread& t : workers) t.join();
  double seconds = Seconds(Clock::now() - start);
  RETURN_IF_ERROR(error);
  return children / seconds;
}

// Reads a child's output `fd` into `text` until `done(text)`: true then, false when the output
// ended first. Canceled on SIGINT/SIGTERM of the bench, DeadlineExceeded at `deadline`, else
// an error saying which call failed.
inline Result<bool> ReadUntil(int fd, std::string& text, Clock::time_point deadline,
                              const std::function<bool(const std::string&)>& done) {
  while (!done(text)) {
    RETURN_IF_ERROR(CheckInterrupted());
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return DeadlineExceeded("no answer in time");
    pollfd ready_fd = {fd, POLLIN, 0};
    int ready = poll(&ready_fd, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
    if (ready < 0 && errno != EINTR) return Internal(fmt::format("poll: {}", std::strerror(errno)));
    if (ready <= 0) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return false;
    if (n < 0 && errno != EINTR) return Internal(fmt::format("read: {}", std::strerror(errno)));
    if (n > 0) text.append(buf, static_cast<size_t>(n));
  }
  return true;
}

// ---- Child processes: `fanout agent` and `fanout run` -----------------------------------------

// A started child: its pid, the read end of its stdout pipe and the write end of its stdin pipe
// (-1 without them).
struct SpawnedChild {
  pid_t pid = -1;
  int stdout_fd = -1;
  int stdin_fd = -1;
};

// Starts args[0] with `args` as a child process. Its stdin is /dev/null or a pipe the bench
// writes, its stderr goes to `log`, and its stdout to a pipe the bench reads (an agent's banner)
// or to `log` too. The kernel sends it SIGTERM if the bench dies first (PR_SET_PDEATHSIG).
inline Result<SpawnedChild> SpawnChild(std::vector<std::string> args,
                                       const std::filesystem::path& log, bool pipe_stdout,
                                       bool pipe_stdin = false) {
  // Everything is prepared before fork: between fork and exec the child only makes
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2] = {-1, -1};
  int in[2] = {-1, -1};
  if ((pipe_stdout && pipe2(out, O_CLOEXEC) != 0) || (pipe_stdin && pipe2(in, O_CLOEXEC) != 0)) {
    int err = errno;
    for (int fd : {out[0], out[1]}) {
      if (fd >= 0) close(fd);
    }
    return Internal(fmt::format("pipe: {}", std::strerror(err)));
  }
  int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int child_stdin = pipe_stdin ? in[0] : open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || child_stdin < 0) {
    int err = errno;
    for (int fd : {out[0], out[1], in[1], log_fd, child_stdin}) {
      if (fd >= 0) close(fd);
    }
    return Internal(fmt::format("open {}: {}", log.string(), std::strerror(err)));
  }
  int stdout_fd = pipe_stdout ? out[1] : log_fd;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the bench died before prctl
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (dup2(child_stdin, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(log_fd, 2) < 0) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int fork_errno = errno;
  if (out[1] >= 0) close(out[1]);
  close(log_fd);
  close(child_stdin);
  if (pid < 0) {
    for (int fd : {out[0], in[1]}) {
      if (fd >= 0) close(fd);
    }
    return Internal(fmt::format("fork: {}", std::strerror(fork_errno)));
  }
  return SpawnedChild{pid, out[0], in[1]};
}

// What `fanout agent` prints on start (src/cli/agent.cc): the lines `fanout agent NAME listening
// on URL`, `data_dir: ...`, `token: ...`, `token_file: ...`.
struct AgentBanner {
  std::string url, data_dir, token, token_file;
};

// Whether `text` holds the whole banner (its last line, token_file, has ended).
inline bool AgentBannerComplete(const std::string& text) {
  size_t at = text.find("\ntoken_file: ");
  return at != std::string::npos && text.find('\n', at + 1) != std::string::npos;
}

inline AgentBanner ParseAgentBanner(const std::string& text) {
  AgentBanner banner;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    constexpr std::string_view kListening = " listening on ";
    if (line.starts_with("fanout agent ") && line.find(kListening) != std::string::npos) {
      banner.url = line.substr(line.find(kListening) + kListening.size());
    } else if (line.starts_with("data_dir: ")) {
      banner.data_dir = line.substr(std::string_view("data_dir: ").size());
    } else if (line.starts_with("token: ")) {
      banner.token = line.substr(std::string_view("token: ").size());
    } else if (line.starts_with("token_file: ")) {
      banner.token_file = line.substr(std::string_view("token_file: ").size());
    }
  }
  return banner;
}

// CPU seconds used so far by a process itself (user + system, all threads) and by its reaped
// children, from /proc/PID/stat; clock-tick resolution (10 ms).
struct ProcessCpu {
  double self = 0;
  double children = 0;
};

inline Result<ProcessCpu> CpuTimeOf(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return Internal(fmt::format("cannot read /proc/{}/stat", pid));
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double ticks[4] = {0, 0, 0, 0};  // fields 14..17: utime stime cutime cstime
  for (int i = 3; i <= 17 && fields >> field; ++i) {
    if (i >= 14) ticks[i - 14] = std::stod(field);
  }
  double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  return ProcessCpu{(ticks[0] + ticks[1]) / hz, (ticks[2] + ticks[3]) / hz};
}

// ---- Sections and main -------------------------------------------------------------------------

// The sections named on the command line, each one of `known`; every known one when none is
// named. InvalidArgument, with a usage line, for a name it does not know.
inline Result<std::set<std::string>> SelectSections(int argc, char** argv, const char* program,
                                                    const std::vector<std::string>& known) {
  if (argc <= 1) return std::set<std::string>(known.begin(), known.end());
  std::set<std::string> selected;
  for (int i = 1; i < argc; ++i) {
    if (std::find(known.begin(), known.end(), argv[i]) == known.end()) {
      std::string usage;
      for (const std::string& name : known) usage += " [" + name + "]";
      return InvalidArgument(fmt::format("unknown benchmark '{}'; usage: {}{} (default: all)",
                                         argv[i], program, usage));
    }
    selected.insert(argv[i]);
  }
  return selected;
}

// The benchmarks that start `fanout` need the built executable.
inline Status RequireExecutable(const std::string& path) {
  if (access(path.c_str(), X_OK) == 0) return Status::Ok();
  return NotFound(fmt::format("no fanout executable at {} (build the `fanout` target)", path));
}

// The closing summary: one line per section, then the whole run's time.
inline void PrintSummary(const std::string& title, const std::vector<std::string>& lines,
                         Clock::time_point start) {
  fmt::print("\nSummary ({})\n", title);
  for (const std::string& line : lines) fmt::print("  {}\n", line);
  fmt::print("(whole benchmark: {:.1f} s)\n", Seconds(Clock::now() - start));
}

// A benchmark's main(): runs `run`, turning an exception into an error so that the stack unwinds
// (child agents stopped, TMP removed); exit 1 only when the benchmark could not run.
template <typename Run>
int BenchMain(const char* program, Run&& run) {
  Status status;
  try {
    status = run();
  } catch (const std::exception& e) {
    status = Internal(e.what());
  }
  std::fflush(stdout);
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: ERROR, the benchmark could not run: %s\n", program,
               status.ToString().c_str());
  return 1;
}

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_BENCH_UTIL_H_
