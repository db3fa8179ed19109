// Fanout's agent benchmarks (DESIGN §7, issue #3 point 9): a real `fanout agent --dev` child
// process on loopback, driven over its HTTP API by AgentClient.
//   agent-latency:    one run of a one-step job [/bin/true] start→final as a client sees it
//                     (StartJob, then GetRun with wait until final), 500 times, against a bare
//                     fork/exec/wait of /bin/true measured in the same run.
//   agent-throughput: 1,000 such runs through one agent with 4 slots, against bare spawn loops
//                     keeping 4 children alive, measured in the same run.
// A report, not a test, in the style of engine_bench.cc: medians of 5 rounds with [min .. max],
// ratios to a baseline measured in the same run, PASS/MISS lines; exit 0 when a target is
// missed, 1 only when a run itself went wrong (the agent did not start, a run did not succeed).
#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "client/agent_client.h"
#include "fanout/status.h"
#include "fanout/value.h"

#ifndef FANOUT_BINARY
#error "FANOUT_BINARY (the path of the built fanout executable) must be defined by CMake"
#endif

namespace fanout::bench {
namespace {

using WallClock = std::chrono::system_clock;  // compared with the agent's timestamps
using nlohmann::json;

constexpr int kRuns = 5;                 // rounds; figures are medians over them
constexpr int kLatencyCycles = 500;      // issue #3: 500 start+wait cycles
constexpr int kLatencyWarmup = 20;       // untimed cycles first (connection, caches, SQLite)
constexpr int kThroughputRuns = 1000;    // issue #3: 1,000 runs
constexpr int kSlots = 4;                // the agent's slots and the bare loops' concurrency
constexpr int kExtraClients = 8;         // information: more clients than slots
constexpr double kTargetP50Ms = 1.5;     // DESIGN §7 / issue #3: p50 on loopback
constexpr double kDesignBareMultiple = 3.0;  // DESIGN §7: 1.5 ms is "3 x a bare fork/exec/wait"
constexpr const char* kJob = "bench-true";
constexpr std::chrono::seconds kRunWait{30};  // GetRun long-poll
constexpr std::chrono::seconds kAgentStartTimeout{20};
constexpr std::chrono::seconds kAgentStopTimeout{15};

// ---- The agent child process ------------------------------------------------------------------

// `fanout agent --dev --slots N --data-dir DIR` as a child process. Start() returns once the
// agent has printed its URL and token; the destructor (or Stop) sends SIGTERM and waits, and
// SIGKILLs it if it has not ended after kAgentStopTimeout. The child also gets SIGTERM if
// this process dies first (PR_SET_PDEATHSIG). Its data_dir lives in the bench's TempDir, so
// it goes when that does; its stderr goes to `log` (shown when something goes wrong).
class AgentProcess {
 public:
  static Result<std::unique_ptr<AgentProcess>> Start(const std::string& fanout,
                                                     const std::filesystem::path& data_dir,
                                                     const std::filesystem::path& log, int slots) {
    std::unique_ptr<AgentProcess> agent(new AgentProcess(log));
    RETURN_IF_ERROR(agent->Spawn(fanout, data_dir, slots));
    RETURN_IF_ERROR(agent->ReadBanner(data_dir));
    return agent;
  }

  ~AgentProcess() {
    Status s = Stop();
    if (!s.ok()) std::fprintf(stderr, "agent_bench: %s\n", s.ToString().c_str());
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  // SIGTERM, then wait; an agent that does not end in time is killed. Idempotent.
  Status Stop() {
    if (out_fd_ >= 0) close(out_fd_);
    out_fd_ = -1;
    if (pid_ <= 0) return Status::Ok();
    pid_t pid = pid_;
    pid_ = -1;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return Internal(fmt::format("the agent had ended by itself with {}; its log:\n{}",
                                  DescribeWaitStatus(status), Tail(log_)));
    }
    kill(pid, SIGTERM);
    Clock::time_point deadline = Clock::now() + kAgentStopTimeout;
    while (true) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (w < 0 && errno != EINTR) {
        return Internal(fmt::format("waitpid agent: {}", std::strerror(errno)));
      }
      if (Clock::now() >= deadline) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return Internal(fmt::format("the agent (pid {}) did not stop within {} s of SIGTERM and "
                                    "was killed; its log:\n{}",
                                    pid, kAgentStopTimeout.count(), Tail(log_)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Internal(fmt::format("the agent ended with {} after SIGTERM; its log:\n{}",
                                  DescribeWaitStatus(status), Tail(log_)));
    }
    return Status::Ok();
  }

  client::AgentEndpoint endpoint() const {
    client::AgentEndpoint e;
    e.url = url_;
    e.token = token_;
    return e;
  }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }

  // CPU seconds used so far by the agent itself (user + system, all threads) and by its reaped
  // children (the steps' processes).
  using Cpu = ProcessCpu;
  Result<Cpu> CpuTime() const { return CpuTimeOf(pid_); }

 private:
  explicit AgentProcess(std::filesystem::path log) : log_(std::move(log)) {}

  Status Spawn(const std::string& fanout, const std::filesystem::path& data_dir, int slots) {
    ASSIGN_OR_RETURN(SpawnedChild spawned,
                     SpawnChild({fanout, "agent", "--dev", "--slots", std::to_string(slots),
                                 "--data-dir", data_dir.string(), "--listen", "127.0.0.1:0"},
                                log_, true));
    pid_ = spawned.pid;
    out_fd_ = spawned.stdout_fd;
    return Status::Ok();
  }

  // Reads the lines `fanout agent NAME listening on URL`, `data_dir: ...`, `token: ...`,
  // `token_file: ...` (src/cli/agent.cc).
  Status ReadBanner(const std::filesystem::path& data_dir) {
    std::string text;
    Clock::time_point deadline = Clock::now() + kAgentStartTimeout;
    auto failed = [&](const std::string& why) {
      return Internal(fmt::format("the agent did not start: {}; it printed:\n{}\nits log:\n{}",
                                  why, text, Tail(log_)));
    };
    auto complete = ReadUntil(out_fd_, text, deadline, AgentBannerComplete);
    if (!complete.ok()) {
      if (complete.status().code() == Code::kCanceled) return complete.status();
      if (complete.status().code() == Code::kDeadlineExceeded) {
        return failed(fmt::format("no URL and token after {} s", kAgentStartTimeout.count()));
      }
      return failed(complete.status().message());
    }
    if (!*complete) {
      int status = 0;
      pid_t w = waitpid(pid_, &status, 0);
      if (w == pid_) pid_ = -1;
      return failed(w > 0 ? "it exited with " + DescribeWaitStatus(status)
                          : "its standard output closed");
    }
    AgentBanner banner = ParseAgentBanner(text);
    url_ = banner.url;
    token_ = banner.token;
    const std::string& printed_dir = banner.data_dir;
    if (url_.empty() || token_.empty()) return failed("no `listening on URL` or `token:` line");
    if (printed_dir != data_dir.string()) {
      return failed(
          fmt::format("it uses data_dir {} instead of {}", printed_dir, data_dir.string()));
    }
    return Status::Ok();
  }

  std::filesystem::path log_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string url_;
  std::string token_;
};

// ---- Runs through the agent -------------------------------------------------------------------

// The job every run starts: one process step running /bin/true, with room for every run the
// benchmark keeps in flight.
Status CreateJob(client::AgentClient& client) {
  json step = {{"name", "true"}, {"subsystem", "process"}, {"run", json::array({kTrue})}};
  json job = {{"job", kJob},
              {"description", "agent_bench: one process step of /bin/true"},
              {"max_concurrent_runs", kThroughputRuns},
              {"steps", json::array({step})}};
  return client.PutJob(kJob, job.dump(), "application/json").status();
}

// One start→final cycle as a client sees it, with its clock readings for the breakdown.
struct Cycle {
  double seconds = 0;                 // StartJob called .. the final GetRun answered
  double start_call_seconds = 0;      // the StartJob round trip alone
  WallClock::time_point sent;         // just before StartJob
  WallClock::time_point start_answered;
  WallClock::time_point received;     // just after the final GetRun
  int get_calls = 0;
  json run;                           // the final answer of GetRun
};

// A string member of a JSON object, "" when absent or not a string (never throws).
std::string StringOf(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

Result<Cycle> StartAndWait(client::AgentClient& client) {
  RETURN_IF_ERROR(CheckInterrupted());
  Cycle c;
  c.sent = WallClock::now();
  Clock::time_point t0 = Clock::now();
  ASSIGN_OR_RETURN(client::StartResult started, client.StartJob(kJob, {}));
  Clock::time_point t1 = Clock::now();
  c.start_answered = WallClock::now();
  for (;;) {
    ASSIGN_OR_RETURN(c.run, client.GetRun(started.run_id, kRunWait));
    ++c.get_calls;
    std::string status = StringOf(c.run, "status");
    if (client::IsFinalRunStatus(status)) break;
    if (c.get_calls >= 4) {
      return Internal(fmt::format("run {} is still {} after {} long-polls of {} s",
                                  started.run_id, status, c.get_calls, kRunWait.count()));
    }
    RETURN_IF_ERROR(CheckInterrupted());
  }
  Clock::time_point t2 = Clock::now();
  c.received = WallClock::now();
  c.seconds = Seconds(t2 - t0);
  c.start_call_seconds = Seconds(t1 - t0);
  const json& run = c.run;
  const json* steps = run.contains("steps") ? &run["steps"] : nullptr;
  if (StringOf(run, "status") != "succeeded" || steps == nullptr || !steps->is_array() ||
      steps->size() != 1 || !(*steps)[0].contains("exit_code") ||
      (*steps)[0]["exit_code"] != 0) {
    std::string text = run.dump();
    if (text.size() > 1500) text = text.substr(0, 1500) + "...";
    return Internal(fmt::format("run {} did not succeed with one step of exit code 0: {}",
                                started.run_id, text));
  }
  return c;
}

// ---- The breakdown of one cycle from the run's own timestamps ---------------------------------

// The agent stamps the run (queued_at, started_at, ended_at) and the step attempt (started_at,
// ended_at) with the system clock, which this process shares, so a cycle splits into phases
// that add up to the client's time (to the clocks' few µs of disagreement).
constexpr int kPhases = 6;
constexpr std::array<const char*, kPhases> kPhaseNames = {
    "client sends start -> run queued_at",
    "queued_at -> run started_at",
    "run started_at -> step started_at",
    "step started_at -> step ended_at",
    "step ended_at -> run ended_at",
    "run ended_at -> client has the answer",
};
// Where each phase's time goes in the agent, for the reader of the report (README has more).
constexpr std::array<const char*, kPhases> kPhaseCode = {
    "HTTP in, auth, the cached job, Executor::Start",
    "InsertRun (already running when a slot is free), LaunchLocked",
    "a kept run thread takes it, RunStep up to Now()",
    "spawn, on_start (pid + attempt, one commit), reap",
    "FinishRun (end + attempt, one commit)",
    "wake the run's waiter, GetRun+steps, HTTP out",
};

Result<DateTime> TimeField(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) {
    return Internal(fmt::format("the run has no `{}` time: {}", key, object.dump()));
  }
  return ParseDateTime(it->get<std::string>());
}

Result<std::array<double, kPhases>> PhasesOf(const Cycle& c) {
  const json& step = c.run["steps"][0];
  ASSIGN_OR_RETURN(DateTime queued, TimeField(c.run, "queued_at"));
  ASSIGN_OR_RETURN(DateTime started, TimeField(c.run, "started_at"));
  ASSIGN_OR_RETURN(DateTime step_started, TimeField(step, "started_at"));
  ASSIGN_OR_RETURN(DateTime step_ended, TimeField(step, "ended_at"));
  ASSIGN_OR_RETURN(DateTime ended, TimeField(c.run, "ended_at"));
  return std::array<double, kPhases>{
      Millis(queued - c.sent),         Millis(started - queued),
      Millis(step_started - started),  Millis(step_ended - step_started),
      Millis(ended - step_ended),      Millis(c.received - ended),
  };
}

// ---- CPU time (the bare baselines are bench_util.h's) -----------------------------------------

// CPU time per run during the agent measurements, in µs: where a throughput is CPU-bound.
struct CpuPerRun {
  Samples agent;     // the agent process, all threads
  Samples children;  // the steps' processes (/bin/true), reaped by the agent
  Samples clients;   // this process: the client threads (HTTP, JSON)
};

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// kThroughputRuns runs through the agent from `clients` threads, each with its own AgentClient
// (one keep-alive connection each, opened before the clock starts) doing start + wait in a
// loop. Returns runs/s; afterwards the agent must be idle again.
Result<double> AgentRate(const AgentProcess& agent, int clients, CpuPerRun* cpu) {
  std::vector<std::unique_ptr<client::AgentClient>> pool;
  for (int i = 0; i < clients; ++i) {
    pool.push_back(std::make_unique<client::AgentClient>(agent.endpoint()));
    RETURN_IF_ERROR(pool.back()->Health().status());
  }
  std::atomic<int> next{0};
  std::mutex mu;
  Status error;  // the first failure, guarded by mu
  auto work = [&](client::AgentClient* client) {
    while (next.fetch_add(1) < kThroughputRuns) {
      Status s = StartAndWait(*client).status();
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (error.ok()) error = s;
        next.store(kThroughputRuns);
        return;
      }
    }
  };
  ASSIGN_OR_RETURN(AgentProcess::Cpu agent_before, agent.CpuTime());
  double self_before = ProcessCpuSeconds();
  Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (auto& c : pool) threads.emplace_back(work, c.get());
  for (std::thread& t : threads) t.join();
  double seconds = Seconds(Clock::now() - start);
  RETURN_IF_ERROR(error);
  double self_after = ProcessCpuSeconds();
  ASSIGN_OR_RETURN(AgentProcess::Cpu agent_after, agent.CpuTime());
  cpu->agent.Add((agent_after.self - agent_before.self) * 1e6 / kThroughputRuns);
  cpu->children.Add((agent_after.children - agent_before.children) * 1e6 / kThroughputRuns);
  cpu->clients.Add((self_after - self_before) * 1e6 / kThroughputRuns);
  ASSIGN_OR_RETURN(json status, pool.front()->Status());
  if (!status.is_object() || status.value("busy", -1) != 0 || status.value("queued", -1) != 0) {
    return Internal(fmt::format("the agent is not idle after the runs: {}", status.dump()));
  }
  return kThroughputRuns / seconds;
}

// ---- The benchmarks ---------------------------------------------------------------------------

// agent-latency: kLatencyCycles start→final cycles, sequential, from one client over one
// keep-alive connection, against the bare fork+execv+waitpid and posix_spawn+waitpid of one
// child. The three take turns in kRuns rounds of kLatencyCycles / kRuns each, in a rotating
// order, so a slow moment of the machine does not fall on one of them only.
Result<std::string> LatencyBenchmark(const TempDir& dir, const std::string& fanout) {
  constexpr int kPerRound = kLatencyCycles / kRuns;
  fmt::print(
      "\nagent-latency: one run of a 1-step job [{}] on an idle agent, start -> final as the "
      "client sees it\n  (StartJob, then GetRun wait={}s until final; one client, one keep-alive "
      "connection); {} cycles in {} rounds of {}, after {} untimed\n",
      kTrue, kRunWait.count(), kLatencyCycles, kRuns, kPerRound, kLatencyWarmup);
  ASSIGN_OR_RETURN(auto agent, AgentProcess::Start(fanout, dir.path() / "agent-latency",
                                                   dir.path() / "agent-latency.log", kSlots));
  client::AgentClient client(agent->endpoint());
  RETURN_IF_ERROR(CreateJob(client));
  for (int i = 0; i < kLatencyWarmup; ++i) RETURN_IF_ERROR(StartAndWait(client).status());

  struct Measure {
    const char* what;
    bool is_agent;
    std::function<Result<double>()> once;  // seconds
    Samples all;          // every cycle, ms
    Samples round_p50;    // each round's p50, ms
  };
  std::vector<std::array<double, kPhases>> phases;
  Samples start_calls, get_calls;
  int ended_before_start_answer = 0;
  auto agent_once = [&]() -> Result<double> {
    ASSIGN_OR_RETURN(Cycle c, StartAndWait(client));
    ASSIGN_OR_RETURN(auto p, PhasesOf(c));
    phases.push_back(p);
    start_calls.Add(c.start_call_seconds * 1e3);
    get_calls.Add(c.get_calls);
    ASSIGN_OR_RETURN(DateTime ended, TimeField(c.run, "ended_at"));
    ended_before_start_answer += ended <= c.start_answered;
    return c.seconds;
  };
  std::vector<Measure> measures;
  measures.push_back({"bare fork+execv+waitpid", false,
                      [] { return SpawnWait(SpawnMethod::kForkExec); }, {}, {}});
  measures.push_back({"bare posix_spawn+waitpid", false,
                      [] { return SpawnWait(SpawnMethod::kPosixSpawn); }, {}, {}});
  measures.push_back({"agent: StartJob + GetRun(wait)", true, agent_once, {}, {}});
  for (int round = 0; round < kRuns; ++round) {
    for (size_t k = 0; k < measures.size(); ++k) {
      Measure& m = measures[(k + static_cast<size_t>(round)) % measures.size()];
      Samples this_round;
      for (int i = 0; i < kPerRound; ++i) {
        ASSIGN_OR_RETURN(double seconds, m.once());
        m.all.Add(seconds * 1e3);
        this_round.Add(seconds * 1e3);
      }
      m.round_p50.Add(this_round.Median());
    }
  }
  RETURN_IF_ERROR(agent->Stop());

  // The bare reference is the faster of the two bare ways (as engine_bench judges the process
  // rate against the fastest bare loop).
  const Measure* bare = nullptr;
  for (const Measure& m : measures) {
    if (!m.is_agent && (bare == nullptr || m.all.Median() < bare->all.Median())) bare = &m;
  }
  const Measure& agent_m = measures.back();
  for (const Measure& m : measures) {
    std::string text = fmt::format("  {:<32} {}  rounds' p50 {:<16}{}", m.what, Percentiles(m.all),
                                   Spread(m.round_p50, "{:.3f}"),
                                   &m == bare ? "  <- the bare reference" : "");
    text.erase(text.find_last_not_of(' ') + 1);
    fmt::print("{}\n", text);
  }
  double p50 = agent_m.all.Median();
  double bare_p50 = bare->all.Median();
  double ratio_target = p50 / kTargetP50Ms;
  double ratio_bare = p50 / bare_p50;
  fmt::print("  agent p50 / {:.1f} ms target: {:.2f}: {}\n", kTargetP50Ms, ratio_target,
             Verdict(p50 <= kTargetP50Ms));
  fmt::print("  agent p50 / bare p50 ({:.3f} ms, {}): {:.2f} (DESIGN: 1.5 ms is {:.0f} x a bare "
             "fork/exec/wait; target <= {:.1f}): {}\n",
             bare_p50, std::string_view(bare->what).substr(std::string_view("bare ").size()),
             ratio_bare, kDesignBareMultiple, kDesignBareMultiple,
             Verdict(ratio_bare <= kDesignBareMultiple));

  // Where the time goes: the medians of the phases (from the run's own timestamps).
  fmt::print("  where the agent's {} cycles spend it (median and p99 of each phase, ms; the run's "
             "timestamps):\n",
             phases.size());
  double sum = 0;
  for (int k = 0; k < kPhases; ++k) {
    Samples s;
    for (const auto& p : phases) s.Add(p[static_cast<size_t>(k)]);
    sum += s.Median();
    fmt::print("    {:<40} {:6.3f}  p99 {:6.3f}   {}\n", kPhaseNames[static_cast<size_t>(k)],
               s.Median(), s.Percentile(99), kPhaseCode[static_cast<size_t>(k)]);
  }
  fmt::print("    {:<40} {:6.3f}   (the cycle's own p50: {:.3f})\n", "sum of the medians", sum,
             p50);
  fmt::print("    client: StartJob round trip p50 {:.3f} ms; GetRun calls per cycle p50 {:.0f}, "
             "max {:.0f}; runs ended before the StartJob answer arrived: {} of {}\n",
             start_calls.Median(), get_calls.Median(), get_calls.Max(), ended_before_start_answer,
             phases.size());
  return fmt::format(
      "agent latency start->final (idle agent, {} cycles): p50 {:.3f} ms, p90 {:.3f}, p99 {:.3f}; "
      "target p50 <= {:.1f} ms: {} (ratio {:.2f}); {:.2f} x bare fork/exec/wait p50 {:.3f} ms "
      "(<= {:.0f}: {})",
      agent_m.all.size(), p50, agent_m.all.Percentile(90), agent_m.all.Percentile(99),
      kTargetP50Ms, Verdict(p50 <= kTargetP50Ms), ratio_target, ratio_bare, bare_p50,
      kDesignBareMultiple, Verdict(ratio_bare <= kDesignBareMultiple));
}

// agent-throughput: kThroughputRuns runs through one agent with kSlots slots, against bare loops
// keeping kSlots children of /bin/true alive, in the same rounds in a rotating order. The limit is
// the fastest bare loop. Issue #3 states no target: the ratio is printed for information.
Result<std::string> ThroughputBenchmark(const TempDir& dir, const std::string& fanout) {
  fmt::print(
      "\nagent-throughput: {} runs of the 1-step job [{}] through one agent with {} slots, against "
      "bare loops\n  keeping {} children alive; runs (children) per second, median of {}\n",
      kThroughputRuns, kTrue, kSlots, kSlots, kRuns);
  ASSIGN_OR_RETURN(auto agent, AgentProcess::Start(fanout, dir.path() / "agent-throughput",
                                                   dir.path() / "agent-throughput.log", kSlots));
  {
    client::AgentClient client(agent->endpoint());
    RETURN_IF_ERROR(CreateJob(client));
    for (int i = 0; i < kLatencyWarmup; ++i) RETURN_IF_ERROR(StartAndWait(client).status());
  }
  struct Measure {
    std::string what;
    bool is_agent;
    bool judged;  // the agent line the summary reports
    std::function<Result<double>()> rate;
    Samples samples;
    CpuPerRun cpu;  // agent lines only
  };
  std::vector<Measure> measures;
  measures.reserve(5);  // the agent lines' lambdas point into their Measure
  measures.push_back({"bare, 1 thread, fork+execv",
                      false,
                      false,
                      [] { return SpawnLoop(SpawnMethod::kForkExec, kThroughputRuns, kSlots); },
                      {},
                      {}});
  measures.push_back({"bare, 1 thread, posix_spawn",
                      false,
                      false,
                      [] { return SpawnLoop(SpawnMethod::kPosixSpawn, kThroughputRuns, kSlots); },
                      {},
                      {}});
  measures.push_back({"bare, 1 thread per slot, posix_spawn",
                      false,
                      false,
                      [] { return ThreadedSpawnLoop(kThroughputRuns, kSlots); },
                      {},
                      {}});
  Measure* m4 = &measures.emplace_back(
      Measure{fmt::format("agent, {} clients (start + wait)", kSlots), true, true, {}, {}, {}});
  m4->rate = [&agent, m4] { return AgentRate(*agent, kSlots, &m4->cpu); };
  Measure* m8 = &measures.emplace_back(Measure{
      fmt::format("agent, {} clients (slots kept full)", kExtraClients), true, false, {}, {}, {}});
  m8->rate = [&agent, m8] { return AgentRate(*agent, kExtraClients, &m8->cpu); };
  for (int round = 0; round < kRuns; ++round) {
    for (size_t k = 0; k < measures.size(); ++k) {
      Measure& m = measures[(k + static_cast<size_t>(round)) % measures.size()];
      ASSIGN_OR_RETURN(double rate, m.rate());
      m.samples.Add(rate);
    }
  }
  RETURN_IF_ERROR(agent->Stop());

  const Measure* limit = nullptr;
  const Measure* judged = nullptr;
  for (const Measure& m : measures) {
    if (!m.is_agent && (limit == nullptr || m.samples.Median() > limit->samples.Median())) {
      limit = &m;
    }
    if (m.judged) judged = &m;
  }
  for (const Measure& m : measures) {
    std::string text = fmt::format("  {:<38} {:>6.0f}/s  {:<16}", m.what, m.samples.Median(),
                                   Spread(m.samples, "{:.0f}"));
    if (m.is_agent) {
      text += fmt::format("  ratio {:.3f} to the limit (information: no target)",
                          m.samples.Median() / limit->samples.Median());
    } else if (&m == limit) {
      text += "  <- the limit (fastest bare loop)";
    }
    text.erase(text.find_last_not_of(' ') + 1);
    fmt::print("{}\n", text);
  }
  std::string each;
  for (const Measure& m : measures) {
    if (m.is_agent) continue;
    each += fmt::format("{}{} {:.2f}", each.empty() ? "" : " | ",
                        std::string_view(m.what).substr(std::string_view("bare, ").size()),
                        judged->samples.Median() / m.samples.Median());
  }
  fmt::print("  agent ({} clients) / each bare loop: {}\n", kSlots, each);
  // CPU per run: on a machine with few cores the agent's rate is bound by CPU, not by slots.
  for (const Measure& m : measures) {
    if (!m.is_agent) continue;
    double total = m.cpu.agent.Median() + m.cpu.children.Median() + m.cpu.clients.Median();
    fmt::print("  CPU per run, {}: agent {:.0f} µs + its /bin/true children {:.0f} µs + the "
               "clients {:.0f} µs = {:.0f} µs (median of {}; {} hardware threads: at most "
               "{:.0f}/s)\n",
               m.what.substr(std::string_view("agent, ").size()), m.cpu.agent.Median(),
               m.cpu.children.Median(), m.cpu.clients.Median(), total, kRuns,
               std::thread::hardware_concurrency(),
               total > 0 ? std::thread::hardware_concurrency() * 1e6 / total : 0.0);
  }
  double ratio = judged->samples.Median() / limit->samples.Median();
  return fmt::format(
      "agent throughput {} x {} @{} slots: agent {:.0f}/s ({} clients), bare limit {:.0f}/s ({}), "
      "ratio {:.3f} (information: issue #3 sets no target)",
      kThroughputRuns, kTrue, kSlots, judged->samples.Median(), kSlots, limit->samples.Median(),
      std::string_view(limit->what).substr(std::string_view("bare, ").size()), ratio);
}

Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(auto sections,
                   SelectSections(argc, argv, "agent_bench", {"agent-latency", "agent-throughput"}));
  InstallSignalHandlers();  // SIGPIPE ignored: a write to an agent that went away fails
  const std::string fanout = FANOUT_BINARY;
  RETURN_IF_ERROR(RequireExecutable(fanout));
  ASSIGN_OR_RETURN(auto dir, TempDir::Create("fanout-agent-bench"));
  Clock::time_point start = Clock::now();
  fmt::print(
      "Fanout agent benchmarks (DESIGN §7, issue #3): a `fanout agent --dev` child on loopback "
      "({}); {} hardware threads, load average {} at start\n",
      fanout, std::thread::hardware_concurrency(), LoadAverage());
  std::vector<std::string> summary;
  if (sections.count("agent-latency")) {
    ASSIGN_OR_RETURN(std::string line, LatencyBenchmark(*dir, fanout));
    summary.push_back(std::move(line));
  }
  if (sections.count("agent-throughput")) {
    ASSIGN_OR_RETURN(std::string line, ThroughputBenchmark(*dir, fanout));
    summary.push_back(std::move(line));
  }
  PrintSummary(fmt::format("fanout agent --dev, --slots {}, token auth, data_dir in a temp dir",
                           kSlots),
               summary, start);
  return Status::Ok();
}

}  // namespace
}  // namespace fanout::bench

int main(int argc, char** argv) {
  return fanout::bench::BenchMain("agent_bench", [&] { return fanout::bench::Main(argc, argv); });
}
