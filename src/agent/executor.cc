// Run execution on the agent (see executor.h): slots and FIFO queue, the step loop with SQL
// Server Agent's actions and retries, proxies checked at every step, stop, and recovery.
#include "agent/executor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "catalog/postgres_catalog.h"
#include "client/agent_client.h"
#include "common/param_json.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "fanout/catalog.h"

namespace fanout::agent {
namespace {

constexpr size_t kOutputLimit = 64 * 1024;  // bytes of stdout/stderr kept per step attempt

// What the history keeps of a step's stdout or stderr (`captured`, with `dropped` bytes beyond
// the capture limit): the text, secrets masked, or when it was cut, as much as fits in
// kOutputLimit (ending at a line's end) and a last line saying so, e.g. "[output cut at 64 KiB;
// 588895 bytes in all]": cut silently, it looked complete (QA).
std::string KeptOutput(const std::string& captured, size_t dropped, const Masker& secrets) {
  if (dropped == 0) return secrets.Mask(captured);
  // Cut at the capture limit, the text may end in a secret's first part.
  std::string text = secrets.MaskTruncated(captured);
  const std::string marker = fmt::format("[output cut at {} KiB; {} bytes in all]\n",
                                         kOutputLimit / 1024, captured.size() + dropped);
  const size_t room = kOutputLimit - marker.size();
  if (text.size() > room) {
    // At a line's end, unless that loses more than a few KiB (one long line).
    size_t nl = text.rfind('\n', room - 1);
    text.resize(nl != std::string::npos && room - nl <= 4096 ? nl + 1 : room - 1);
  }
  if (!text.empty() && text.back() != '\n') text += '\n';
  return text + marker;
}

// `params` with every secret in their values masked, and the values of `sensitive` params
// hidden whole: what the agent's database and answers show. `touched` gets the names of the
// params that held a secret.
nlohmann::json MaskedParams(const nlohmann::json& params, const Masker& secrets,
                            const std::vector<std::string>& sensitive,
                            std::vector<std::string>& touched) {
  nlohmann::json out = params;
  for (auto& [name, value] : out.items()) {
    if (std::find(sensitive.begin(), sensitive.end(), name) != sensitive.end()) {
      value = "***";
      touched.push_back(name);
      continue;
    }
    bool masked = false;
    // A number or boolean that holds a secret becomes the masked text, "***".
    ForEachScalar(value, [&](nlohmann::json& item, const std::string& text) {
      std::string shown = secrets.MaskValue(text);
      if (shown == text) return;
      item = std::move(shown);
      masked = true;
    });
    if (masked) touched.push_back(name);
  }
  return out;
}

// Where a package step's `fanout run` writes its exit code (`--result-file`): read when the
// agent re-attaches to a step that outlived it, whether or not the catalog answers. A step run
// through a proxy writes in results/USER/, a folder of that user's own (0700): it may not write
// the agent's.
std::string ResultFile(const std::string& data_dir, const std::string& execution_id,
                       const std::string& proxy_user) {
  std::filesystem::path dir = std::filesystem::path(data_dir) / "results";
  if (!proxy_user.empty()) dir /= proxy_user;
  return (dir / (execution_id + ".json")).string();
}

// The folder of ResultFile for `run_as`, created for that user alone.
Status MakeResultFolder(const std::string& data_dir, const RunAs& run_as) {
  std::string dir = (std::filesystem::path(data_dir) / "results" / run_as.user).string();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || chown(dir.c_str(), run_as.uid, run_as.gid) != 0 || chmod(dir.c_str(), 0700) != 0) {
    return Internal(fmt::format("cannot prepare {} for user {}: {}", dir, run_as.user,
                                ec ? ec.message() : std::strerror(errno)));
  }
  return Status::Ok();
}

struct StepResult {
  int exit_code = 0;
  std::string reason;  // the step's last line on stderr, which said why it failed
};

// A package step's result file and the stop file beside it, once read.
void RemoveStepFiles(const std::string& result_file) {
  std::error_code ignored;
  std::filesystem::remove(result_file, ignored);
  std::filesystem::remove(StopFileOf(result_file), ignored);
}

// What a result file says; nullopt when there is none (the step was killed) or it is bad.
std::optional<StepResult> ReadResultFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return std::nullopt;
  try {
    nlohmann::json result = nlohmann::json::parse(*text);
    return StepResult{result.at("exit_code").get<int>(),
                      AsChildReason(result.value("reason", ""))};
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

constexpr const char* kSecretsLost =
    "the secrets in the run's params were held in the agent's memory only and did not survive "
    "its restart; start the job again";

}  // namespace

struct Executor::ActiveRun {
  RunRecord record;
  std::shared_ptr<const JobDef> job;  // shared with the server's cache of parsed jobs
  nlohmann::json params;  // the real values, sensitive ones too: never written anywhere
  // The sensitive params' values: handed to package steps to mask, and masked in what the
  // agent keeps of process steps (output, messages).
  Masker secrets;
  bool secrets_lost = false;  // recovered after a restart: the values above are gone
  CancelToken stop;  // Stop() and Drain() fire it
  std::string stop_reason = "stopped on request";  // Drain() says why instead; set under mu_
  bool reattach = false;  // recovered with a live step process
  // Recovered between two attempts of a step (`retrying`): the retry wait goes on, then the
  // attempts left.
  bool resume_retry = false;
  // A step attempt to be written with the run's next SaveRun, in the same transaction: the
  // attempt that is starting goes with the run's new pid, the attempt that ended a run goes
  // with the run's end. Only the run's own thread sets it.
  std::optional<StepAttemptRecord> pending_attempt;
  // Set under mu_ when the run has ended, and when a package step has started and been saved
  // with its execution (a new child, which a parent shows in its tree at once). Long-polls wait
  // on `ended` of their own run rather than on changed_, which every state change of every run
  // would wake.
  bool finished = false;
  std::string saved_execution_id;
  std::condition_variable ended;
  // Who follows the run, for its orphan_timeout (record.orphan_timeout_ms): the Wait() calls
  // under way, and when the last one ended (or the run was started or recovered).
  int followers = 0;
  std::chrono::steady_clock::time_point followed_at = std::chrono::steady_clock::now();
};

Executor::Executor(const AgentConfig& config, AgentStore& store, std::string fanout_binary)
    : config_(config), store_(store), fanout_binary_(std::move(fanout_binary)) {
  closer_ = std::thread([this] { CloserLoop(); });
}

Executor::~Executor() { Drain(std::chrono::milliseconds(0)); }

void Executor::SaveRun(ActiveRun& run) { SaveRun(run, run.record); }

void Executor::SaveRun(ActiveRun& run, const RunRecord& record) {
  Status s;
  if (run.pending_attempt) {
    s = store_.UpdateRunAndAttempt(record, *run.pending_attempt);
    run.pending_attempt.reset();
  } else {
    s = store_.UpdateRun(record);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "fanout agent: saving run %s: %s; answers give it from memory, and it is "
                 "written by a later save that can be (tried at most once a second) or when the "
                 "agent stops\n", record.id.c_str(), s.ToString().c_str());
  }
}

namespace {

std::filesystem::path AliveFile(const std::string& data_dir) {
  return std::filesystem::path(data_dir) / "alive";
}

// The heartbeat's period: how much longer than the truth a measured downtime may be.
constexpr auto kHeartbeat = std::chrono::milliseconds(250);
// How long after a package step took the warm process the next one is started: past the
// step's own start (about 2 ms to its execution's first row).
constexpr auto kWarmAfter = std::chrono::milliseconds(10);

// How long ago the agent of `data_dir` was last known alive (its heartbeat file), if it ran.
std::optional<std::chrono::milliseconds> DownFor(const std::string& data_dir) {
  std::error_code ec;
  auto touched = std::filesystem::last_write_time(AliveFile(data_dir), ec);
  if (ec) return std::nullopt;
  auto down = std::filesystem::file_time_type::clock::now() - touched;
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(down, decltype(down)::zero()));
}

void Touch(const std::filesystem::path& file) {
  std::error_code ec;
  std::filesystem::last_write_time(file, std::filesystem::file_time_type::clock::now(), ec);
  if (ec) std::ofstream(file.string()).flush();  // not there yet
}

}  // namespace

Status Executor::Recover() {
  ASSIGN_OR_RETURN(std::vector<RunRecord> runs, store_.ListUnfinishedRuns());
  // About as long as a parent waits (counted from the first poll the dead agent refused, so at
  // most a heartbeat later than the last beat): it may have placed those children elsewhere.
  // A second run is worse than a child given up, so the doubt goes that way.
  const std::optional<std::chrono::milliseconds> down = DownFor(config_.data_dir);
  const bool parents_gave_up = down && *down > client::kAgentComeBackWait - kHeartbeat;
  std::vector<OpenExecution> orphaned;  // package steps' executions their dead runs left open
  // What became of the runs, said once: after a crash, the operator's first question.
  int reattached = 0, read_back = 0, retrying = 0, requeued = 0, ended = 0;
  std::lock_guard lock(mu_);
  for (RunRecord& r : runs) {
    auto run = std::make_shared<ActiveRun>();
    run->record = r;
    try {
      run->params = nlohmann::json::parse(r.params.empty() ? "{}" : r.params);
    } catch (const nlohmann::json::exception&) {
      run->params = nlohmann::json::object();
    }
    // The job as the run started it, whatever it has become since (runs of older agents kept
    // none: the job as it is now).
    std::string definition = r.definition;
    if (definition.empty()) {
      auto job_record = store_.GetJob(r.job);
      if (job_record.ok() && *job_record) definition = (*job_record)->definition;
    }
    std::shared_ptr<const JobDef> job;
    if (!definition.empty()) {
      auto parsed = ParseJob(definition, nullptr, JobCheck::kStored);
      if (parsed.ok()) job = std::make_shared<const JobDef>(std::move(*parsed));
    }
    bool alive = r.pid > 0 && kill(r.pid, 0) == 0 && ProcessStartTime(r.pid) == r.pid_start;
    run->secrets_lost = r.sensitive != "[]" && !r.sensitive.empty();
    bool queued = r.status == "queued";
    if (!queued && !alive && r.pid == 0 && r.execution_id.empty() && job) {
      auto attempts = store_.ListStepAttempts(r.id, /*with_output=*/false);
      if (attempts.ok() && attempts->empty()) {
        // Given a slot just before the agent died, no step started: it waits for one again.
        queued = true;
        run->record.status = "queued";
        run->record.started_at.reset();
      }
    }
    // A package step that ended while the agent was down left its result file (or its end in
    // the catalog): Reattach reads it, as for a step still alive.
    const bool result_left = job && !queued && !r.execution_id.empty() && r.current_step >= 0 &&
                             r.current_step < static_cast<int>(job->steps.size()) &&
                             job->steps[static_cast<size_t>(r.current_step)].subsystem == "package";
    // Between two attempts of a step: its failed attempt is stored, no process runs.
    const bool between_attempts = job && !queued && !alive && !result_left &&
                                  r.status == "retrying" && r.stop_reason.empty() &&
                                  r.current_step >= 0 &&
                                  r.current_step < static_cast<int>(job->steps.size());
    if (!alive) run->record.pid = 0;  // a pid of another process now, if any
    // A parent's run not running now (queued, or between two attempts of a step) that the
    // parent no longer follows: started now, it would run twice.
    const bool given_up = (queued || between_attempts) && parents_gave_up &&
                          !r.parent_execution_id.empty();
    if (!job || (!queued && !alive && !result_left && !between_attempts) ||
        (queued && run->secrets_lost) || given_up) {
      // A stop was under way and its step is gone: the stop is done.
      const bool stopped = !queued && !alive && !r.stop_reason.empty();
      run->record.status = stopped ? "canceled" : "abandoned";
      run->record.ended_at = Now();
      run->record.message =
          stopped    ? "Job canceled: " + r.stop_reason
          : !job     ? "the job was deleted while this run was in flight"
          : given_up ? fmt::format("the agent was down for {:.1f} s, about as long as a parent "
                                   "waits for it ({} s): its parent has placed this child "
                                   "elsewhere",
                                   std::chrono::duration<double>(*down).count(),
                                   client::kAgentComeBackWait.count())
          : queued   ? kSecretsLost
                     : "the agent stopped while this run was running, and its step process is "
                       "gone";
      run->record.pid = 0;
      SaveRun(*run);
      if (!queued && !alive && !r.execution_id.empty()) {
        orphaned.push_back(FoundDead(r.execution_id, stopped ? "canceled" : "failed",
                                     run->record.message, std::nullopt));
      }
      ++run_counts_[run->record.status];
      step_counts_[run->record.status] +=
          CloseOpenAttempts(r.id, run->record.status, run->record.message, std::nullopt);
      ++ended;
      continue;
    }
    if (queued && !r.stop_reason.empty()) {
      if (r.status == "queued") {
        // Only a drain of an older agent saved a stop reason on a run still in its queue (a
        // stop request cancels a queued run at once): it is not a stop, and the run queues.
        (void)store_.SaveStopReason(r.id, "");
      } else {  // given its slot, then stopped before its step could start
        CancelBeforeStartLocked(*run);
        ++ended;
        continue;
      }
    }
    run->job = job;
    active_[r.id] = run;
    if (queued) {
      queue_.push_back(run);
      ++requeued;
    } else if (between_attempts) {
      run->resume_retry = true;
      if (LaunchLocked(run)) work_.notify_one();
      ++retrying;
    } else {
      run->reattach = true;
      // A package step that ended while the agent was down: gone, or a zombie not yet reaped by
      // whoever adopted it, its result file written.
      const bool ended_meanwhile =
          result_left &&
          (!alive || std::filesystem::exists(StepResultFile(
                         job->steps[static_cast<size_t>(r.current_step)], r.execution_id)));
      ++(ended_meanwhile ? read_back : reattached);
      if (!r.stop_reason.empty()) {
        // A stop was under way when the agent died: it is finished now.
        run->stop_reason = r.stop_reason;
        run->stop.Cancel(CancelToken::Reason::kCanceled);
      }
      if (LaunchLocked(run)) work_.notify_one();
    }
  }
  while (!queue_.empty() && busy_ < config_.slots) {
    auto next = queue_.front();
    queue_.pop_front();
    if (LaunchLocked(next)) work_.notify_one();
  }
  if (!runs.empty()) {
    std::fprintf(stderr, "fanout agent: %zu run%s in flight when the agent last stopped: %d "
                 "re-attached (some may be finishing a stop), %d whose package step ended while "
                 "the agent was down (its result is read now), %d waiting to retry a step, %d "
                 "queued again, %d ended (abandoned or canceled; `fanout job history` says why)\n",
                 runs.size(), runs.size() == 1 ? " was" : "s were", reattached, read_back,
                 retrying, requeued, ended);
  }
  if (auto closed = store_.CloseAttemptsOfEndedRuns(); closed.ok() && *closed > 0) {
    std::fprintf(stderr, "fanout agent: %lld step attempt%s of ended runs %s left `running`: "
                 "closed as abandoned (their ends could not be written)\n",
                 static_cast<long long>(*closed), *closed == 1 ? "" : "s",
                 *closed == 1 ? "was" : "were");
  }
  // Those an agent before this one could not end yet, then these; on the closer thread: an
  // unreachable catalog must not hold up the agent's start.
  if (auto kept = store_.ListUnendedExecutions(); kept.ok()) {
    std::vector<OpenExecution> left;
    std::set<std::string> ids;
    for (UnendedExecutionRecord& e : *kept) {
      ids.insert(e.id);
      left.push_back({std::move(e), std::nullopt, /*saved=*/true});
    }
    // One kept and found again (the agent died between keeping it and ending its run): as kept,
    // with the end the agent saw.
    for (OpenExecution& e : orphaned) {
      if (ids.count(e.execution.id) == 0) left.push_back(std::move(e));
    }
    orphaned = std::move(left);
  } else {
    std::fprintf(stderr, "fanout agent: cannot read the executions left to end in the catalog: "
                 "%s\n", kept.status().ToString().c_str());
  }
  EndOpenExecutions(std::move(orphaned), /*now=*/false);
  heartbeat_ = std::thread([this] {
    const std::filesystem::path file = AliveFile(config_.data_dir);
    std::string last_problem;  // the database's, at the last beat
    std::unique_lock lock(heartbeat_mu_);
    do {
      Touch(file);
      store_.WriteUnsaved();
      // The database gone (QA: `rm -rf` of the data_dir), the agent went on for ever, healthy
      // to its probes, failing every package step, and its runs' records went nowhere.
      // Seen twice in a row (a quarter second apart), not a file being moved back and forth.
      std::string problem = store_.FileProblem();
      const bool again = !problem.empty() && problem == std::exchange(last_problem, problem);
      {
        std::lock_guard state_lock(mu_);
        StopOrphansLocked();
      }
      if (again) {
        std::lock_guard state_lock(mu_);
        if (broken_.empty()) {
          broken_ = problem;
          std::fprintf(stderr, "fanout agent: %s; starting no runs and taking no deploys "
                       "until the agent is restarted\n", problem.c_str());
          // Runs waiting for a slot would start into a database that is gone: they end
          // failed now, and their parents place them elsewhere.
          for (const std::shared_ptr<ActiveRun>& run : std::deque(queue_)) {
            EndQueuedLocked(run, "failed", "not started: the agent's database is gone (" +
                                               problem + "); restart the agent");
          }
        }
      }
    } while (!heartbeat_stop_cv_.wait_for(lock, kHeartbeat, [&] { return heartbeat_stop_; }));
    Touch(file);  // the time it stopped
  });
  return Status::Ok();
}

Result<StartResult> Executor::Start(std::shared_ptr<const JobDef> job_def,
                                    const StartRequest& request) {
  const JobDef& job = *job_def;
  std::unique_lock lock(mu_);
  // The run an earlier start with the same key began, which must be of the same job.
  auto earlier = [&](const RunRecord& run) -> Result<StartResult> {
    if (run.job != job.name) {
      return InvalidArgument(fmt::format(
          "idempotency key '{}' already started run {} of job {}, not of job {}: a key names one "
          "start", request.idempotency_key, run.id, run.job, job.name));
    }
    return StartResult{run, true};
  };
  if (!request.idempotency_key.empty()) {
    for (const auto& [id, run] : active_) {
      if (run->record.idempotency_key == request.idempotency_key) return earlier(run->record);
    }
  }
  // A repeated key gets its run whatever would refuse a new one (draining, say). A stored run
  // with the key is found by the insert below (the key is UNIQUE), so a start that goes through
  // costs no look-up; a start refused before it looks first.
  auto refuse = [&](Status why) -> Result<StartResult> {
    if (!request.idempotency_key.empty()) {
      ASSIGN_OR_RETURN(auto existing, store_.FindRunByKey(request.idempotency_key));
      if (existing) return earlier(*existing);
    }
    return why;
  };
  if (draining_) return refuse(Unavailable("the agent is shutting down and starts no new runs"));
  if (!broken_.empty()) return refuse(Unavailable("the agent starts no runs: " + broken_));
  int start_index = 0;
  if (!request.start_step.empty()) {
    start_index = job.StepIndex(request.start_step);
    if (start_index < 0) {
      return refuse(
          NotFound(fmt::format("job {} has no step named '{}'", job.name, request.start_step)));
    }
  }
  int in_flight = 0;
  for (const auto& [id, run] : active_) in_flight += run->record.job == job.name;
  if (in_flight >= job.max_concurrent_runs) {
    return refuse(FailedPrecondition(fmt::format(
        "Request to run job {} refused because the job is already running ({} of "
        "max_concurrent_runs {})", job.name, in_flight, job.max_concurrent_runs)));
  }
  auto run = std::make_shared<ActiveRun>();
  run->job = std::move(job_def);
  run->params = request.params;
  for (const std::string& secret : request.secrets) run->secrets.AddSecret(secret);
  std::vector<std::string> sensitive;
  RunRecord& r = run->record;
  r.id = NewExecutionId();
  r.job = job.name;
  r.status = "queued";
  r.params = MaskedParams(request.params, run->secrets, request.sensitive_params, sensitive).dump();
  r.sensitive = nlohmann::json(sensitive).dump();
  r.parent_execution_id = request.parent_execution_id;
  r.start_step = request.start_step;
  r.idempotency_key = request.idempotency_key;
  r.orphan_timeout_ms = request.orphan_timeout.count();
  r.definition = job.text.empty() ? job.ToJson().dump() : job.text;
  r.queued_at = Now();
  r.current_step = start_index - 1;
  // A run that takes a slot at once is inserted as running: one transaction instead of an
  // insert and an update. A crash right after it finds the run running with no step attempt,
  // and queues it again (Recover).
  bool launch_now = busy_ < config_.slots && queue_.empty();
  if (launch_now) {
    r.status = "running";
    r.started_at = r.queued_at;
  }
  Status inserted = store_.InsertRun(r);
  if (inserted.code() == Code::kAlreadyExists) {
    ASSIGN_OR_RETURN(auto existing, store_.FindRunByKey(request.idempotency_key));
    if (existing) return earlier(*existing);
  }
  RETURN_IF_ERROR(inserted);
  active_[r.id] = run;
  StartResult started{r, false};  // copied under mu_: the run's thread may change it at once
  if (!launch_now) {
    queue_.push_back(run);
  } else if (LaunchLocked(run)) {
    lock.unlock();
    work_.notify_one();
  }
  return started;
}

// Takes a slot and starts the run's thread. Holds mu_.
bool Executor::LaunchLocked(const std::shared_ptr<ActiveRun>& run) {
  ++busy_;
  ++threads_;
  if (!run->reattach && run->record.status == "queued") {
    run->record.status = "running";
    run->record.started_at = Now();
    SaveRun(*run);
  }
  ready_.push_back(run);
  if (idle_workers_ >= static_cast<int>(ready_.size())) return true;
  ++idle_workers_;
  ++workers_;
  std::thread([this] { WorkerLoop(); }).detach();
  return false;
}

void Executor::WorkerLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return !ready_.empty() || stop_workers_; });
    if (ready_.empty()) break;
    auto run = std::move(ready_.front());
    ready_.pop_front();
    --idle_workers_;
    lock.unlock();
    RunThread(std::move(run));
    lock.lock();
    ++idle_workers_;
  }
  --idle_workers_;
  --workers_;
  changed_.notify_all();  // after this, the thread touches nothing of the Executor's
}

void Executor::RunThread(std::shared_ptr<ActiveRun> run) {
  const JobDef& job = *run->job;
  int index = run->reattach || run->resume_retry ? run->record.current_step
               : run->record.start_step.empty() ? 0
                                                : job.StepIndex(run->record.start_step);
  std::string final_status = "succeeded";
  std::string message;
  int hops = 0;  // goto loops are bounded so a cycle cannot run forever
  // Attempts so far of each step: a step run again (goto, retries) gets the next number, so
  // every execution of it keeps its own row in the history. A re-attached run counts what the
  // agent before the restart recorded.
  std::vector<int> attempts(job.steps.size(), 0);
  int reattached_tries = 1;  // the re-attached step's attempts in its current visit (goto)
  // Resumed between attempts: what is left of the retry wait after the last attempt's end.
  std::chrono::milliseconds retry_wait_left{0};
  if (run->reattach || run->resume_retry) {
    auto recorded = store_.ListStepAttempts(run->record.id, /*with_output=*/false);
    if (recorded.ok()) {
      std::vector<const StepAttemptRecord*> by_start;
      for (const StepAttemptRecord& a : *recorded) {
        if (a.step < 1 || a.step > static_cast<int>(attempts.size())) continue;
        int& count = attempts[static_cast<size_t>(a.step - 1)];
        count = std::max(count, a.attempt);
        by_start.push_back(&a);
      }
      std::stable_sort(by_start.begin(), by_start.end(), [](auto* a, auto* b) {
        return a->started_at < b->started_at;
      });
      int tries = 0;
      for (auto it = by_start.rbegin(); it != by_start.rend() && (*it)->step == index + 1; ++it) ++tries;
      reattached_tries = std::max(1, tries);
      if (run->resume_retry && !by_start.empty() && by_start.back()->ended_at) {
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
            Now() - *by_start.back()->ended_at);
        const auto interval = job.steps[static_cast<size_t>(index)].retry_interval;
        retry_wait_left = std::clamp(interval - waited, std::chrono::milliseconds(0), interval);
      } else if (run->resume_retry) {
        retry_wait_left = job.steps[static_cast<size_t>(index)].retry_interval;
      }
    }
  }
  while (index >= 0 && index < static_cast<int>(job.steps.size())) {
    const StepDef& step = job.steps[static_cast<size_t>(index)];
    StepOutcome outcome;
    for (int attempt = 1;; ++attempt) {
      auto retry_wait = step.retry_interval;
      if (run->resume_retry) {
        // The failed attempt before the restart is stored; go on as right after it.
        run->resume_retry = false;
        attempt = reattached_tries;
        outcome = StepOutcome{false, false, run->record.message};
        retry_wait = retry_wait_left;
      } else if (run->reattach) {
        // The attempt the agent before the restart started: the step's retries that remain
        // after it still apply.
        run->reattach = false;
        attempt = reattached_tries;
        outcome = Reattach(*run);
        if (run->record.status == "abandoned") {
          FinishRun(run, "abandoned", outcome.message);
          return;
        }
      } else {
        if (run->secrets_lost) {  // re-attached after a restart: the next step would need them
          FinishRun(run, "abandoned", kSecretsLost);
          return;
        }
        outcome = RunStep(*run, index, ++attempts[static_cast<size_t>(index)]);
      }
      if (outcome.success || outcome.canceled || attempt > step.retries || run->stop.canceled()) break;
      {
        std::lock_guard lock(mu_);
        run->record.status = "retrying";
        run->record.message = outcome.message;
        SaveRun(*run);
      }
      if (!run->stop.SleepFor(retry_wait)) {
        outcome.canceled = true;
        std::lock_guard lock(mu_);
        outcome.message = run->stop_reason;  // not the failure it was about to retry
        break;
      }
    }
    if (outcome.canceled || run->stop.canceled()) {
      final_status = "canceled";
      message = "Job canceled" + (outcome.message.empty() ? "" : ": " + outcome.message);
      break;
    }
    const StepAction& action = outcome.success ? step.on_success : step.on_failure;
    if (!outcome.success) message = fmt::format("step {} ({}) failed: {}", index + 1, step.name, outcome.message);
    if (action.kind == StepAction::kQuitSuccess) {
      final_status = "succeeded";
      if (outcome.success) message.clear();
      break;
    }
    if (action.kind == StepAction::kQuitFailure) {
      final_status = "failed";
      if (outcome.success) message = fmt::format("step {} ({}) quits with failure", index + 1, step.name);
      break;
    }
    if (action.kind == StepAction::kGoto) {
      if (++hops > 1000) {
        final_status = "failed";
        message = "more than 1000 goto jumps: the job's steps loop";
        break;
      }
      index = job.StepIndex(action.target);
    } else {
      ++index;
    }
    final_status = outcome.success ? "succeeded" : "failed";
    if (outcome.success) message.clear();
  }
  FinishRun(run, final_status, message);
}

Executor::StepOutcome Executor::RunStep(ActiveRun& run, int index, int attempt) {
  // The previous attempt's end is written before the next attempt starts, so a crash never
  // loses the result of a step that ended.
  if (run.pending_attempt) {
    (void)store_.UpsertStepAttempt(*run.pending_attempt);
    run.pending_attempt.reset();
  }
  const StepDef& step = run.job->steps[static_cast<size_t>(index)];
  StepAttemptRecord rec;
  rec.run_id = run.record.id;
  rec.step = index + 1;
  rec.name = step.name;
  rec.attempt = attempt;
  rec.status = "running";
  rec.started_at = Now();

  auto fail_now = [&](std::string message) {
    rec.status = "failed";
    rec.ended_at = Now();
    rec.message = message;
    (void)store_.UpsertStepAttempt(rec);
    std::lock_guard lock(mu_);
    ++step_counts_["failed"];
    return StepOutcome{false, false, std::move(message)};
  };

  SpawnSpec spec;
  spec.kill_grace = config_.stop_grace;
  spec.capture_limit = kOutputLimit;
  if (step.timeout) spec.timeout = *step.timeout;
  // Proxy access is checked every time the step runs, as SQL Server Agent does.
  if (!step.proxy.empty()) {
    auto proxy = config_.proxies.find(step.proxy);
    if (proxy == config_.proxies.end()) {
      return fail_now(fmt::format("proxy '{}' is not defined on agent {}", step.proxy, config_.name));
    }
    const auto& subs = proxy->second.subsystems;
    if (std::find(subs.begin(), subs.end(), step.subsystem) == subs.end()) {
      return fail_now(fmt::format("proxy '{}' has no access to the {} subsystem; grant it under "
                                  "proxies.{}.subsystems in the agent configuration",
                                  step.proxy, step.subsystem, step.proxy));
    }
    auto user = LookUpUser(proxy->second.user);
    if (!user.ok()) return fail_now(fmt::format("proxy '{}': {}", step.proxy, user.status().message()));
    spec.run_as = *user;
    // In the user's home, as `su -` starts there, or in / when it has none: the agent's own
    // working directory is no business of that user (QA).
    std::error_code ec;
    spec.cwd = std::filesystem::is_directory(user->home, ec) ? user->home : "/";
  }
  if (step.subsystem == "package") {
    if (spec.run_as) {
      if (Status s = MakeResultFolder(config_.data_dir, *spec.run_as); !s.ok()) {
        return fail_now(s.message());
      }
    }
    std::string path = PackagePath(config_.data_dir, step.package);
    if (!std::filesystem::exists(path)) {
      // The file is the store's copy: one removed under the agent is written back, as at start
      // (a deploy finds the same sha256 and sends nothing).
      auto stored = store_.GetPackage(step.package);
      if (stored.ok() && *stored) {
        (void)WritePackageFile(config_.data_dir, step.package, (*stored)->content);
      }
    }
    if (!std::filesystem::exists(path)) {
      // Named by its `package:`, not a guessed file name (QA: the hint named sleeper.yaml, and
      // the file was child.yaml).
      return fail_now(fmt::format("package '{}' is not deployed on agent {}; deploy the file "
                                  "that says `package: {}` with `fanout deploy FILE --agent URL`",
                                  step.package, config_.name, step.package));
    }
    rec.execution_id = NewExecutionId();
    // A step run as another user logs in to a PostgreSQL catalog with that user's credentials
    // (~/.pgpass): the password in the agent's own spec would be readable in its process.
    std::string catalog = spec.run_as && config_.catalog.starts_with("postgres")
                              ? catalog::WithoutPassword(config_.catalog)
                              : config_.catalog;
    spec.argv = {fanout_binary_, "run", path, "--catalog", catalog, "--execution-id",
                 rec.execution_id, "--reporting", "EW", "--params-stdin", "--agent-name",
                 config_.name, "--job", run.job->name, "--run-id", run.record.id,
                 "--result-file", StepResultFile(step, rec.execution_id)};
    if (!run.record.parent_execution_id.empty()) {
      spec.argv.push_back("--parent-execution-id");
      spec.argv.push_back(run.record.parent_execution_id);
    }
    if (step.timeout) {
      // The subprocess's deadline sends SIGTERM without a word: why is written beforehand (a
      // stop's reason, written by StopLocked, takes its place).
      (void)WriteFileAtomically(StopFileOf(StepResultFile(step, rec.execution_id)),
                                fmt::format("its step timed out after {}",
                                            FormatDuration(*step.timeout)),
                                0644);
    }
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [k, v] : step.params) params[k] = v;
    for (const auto& [k, v] : run.params.items()) params[k] = v;
    spec.stdin_data =
        nlohmann::json{{"params", params}, {"secrets", run.secrets.secrets()}}.dump();
  } else {
    spec.argv = step.run;
    spec.env["FANOUT_RUN_ID"] = run.record.id;
    spec.env["FANOUT_JOB"] = run.job->name;
    for (const auto& [k, v] : run.params.items()) {
      spec.env["FANOUT_PARAM_" + k] = v.is_string() ? v.get<std::string>() : v.dump();
    }
  }
  {
    std::lock_guard lock(mu_);
    run.record.current_step = index;
    run.record.execution_id = rec.execution_id;
    if (run.record.status != "retrying") run.record.status = "running";
  }
  // The running attempt is written with the run's pid once the process exists (on_start), in
  // one transaction. A crash between the spawn and that write (microseconds) leaves the run
  // without a pid or attempt: recovery queues a first step again (its process, orphaned, may
  // have run it too), and ends a later one abandoned.
  run.pending_attempt = rec;
  spec.on_start = [&](int pid) {
    int64_t start_time = ProcessStartTime(pid);
    {
      std::lock_guard lock(mu_);
      run.record.pid = pid;
      run.record.pid_start = start_time;
      run.record.status = "running";
    }
    // Outside mu_, which long-polls and starts take: only this thread writes a running run's
    // record, so reading it here races with nothing.
    SaveRun(run);
    if (step.subsystem == "package") {
      {
        std::lock_guard lock(mu_);
        run.saved_execution_id = rec.execution_id;
      }
      run.ended.notify_all();
    }
  };

  auto result = step.subsystem == "package" ? RunPackageStep(spec, run.stop.fd())
                                            : RunProcess(spec, run.stop.fd());
  {
    std::lock_guard lock(mu_);
    run.record.pid = 0;
    run.record.pid_start = 0;
  }
  StepOutcome outcome;
  if (!result.ok()) {
    outcome.message = result.status().message();
    // Not started: only the stop file its timeout left may be there.
    if (step.subsystem == "package") RemoveStepFiles(StepResultFile(step, rec.execution_id));
  } else {
    const SpawnResult& r = *result;
    rec.exit_code = r.exit_code;
    rec.stdout_text = KeptOutput(r.out, r.out_dropped, run.secrets);
    rec.stderr_text = KeptOutput(r.err, r.err_dropped, run.secrets);
    // Why a failed step failed: the last line of stderr, also past the capture limit (a
    // package step's fanout run, quoted as its result file is).
    auto last_line = [&] {
      std::string line = LastLine(run.secrets.MaskOutputEnd(r.err, r.err_dropped, r.err_tail));
      return step.subsystem == "package" ? AsChildReason(std::move(line)) : line;
    };
    if (r.timed_out) {
      outcome.message = fmt::format("timed out after {}", FormatDuration(spec.timeout));
    } else if (r.stopped) {
      outcome.canceled = true;
      std::lock_guard lock(mu_);
      outcome.message = run.stop_reason;
    } else if (step.subsystem == "package") {
      outcome.success = r.exit_code == 0;
      outcome.canceled = r.exit_code == 3 && run.stop.canceled();
      if (!outcome.success) {
        // Killed, its last line is not why it ended (it said "exited with code 137"). Its
        // result file says why, where a later line may not (QA: the catalog's "rows are kept
        // in a spool file" had taken the place of the failure, for good).
        std::optional<StepResult> written;
        if (r.term_signal == 0) written = ReadResultFile(StepResultFile(step, rec.execution_id));
        const std::string why = r.term_signal != 0                    ? ""
                                : written && !written->reason.empty() ? written->reason
                                                                      : last_line();
        outcome.message = r.term_signal != 0
                              ? fmt::format("fanout run was killed by signal {}", r.term_signal)
                          : why.empty() ? fmt::format("fanout run exited with code {}", r.exit_code)
                                        : why;
      }
    } else {
      outcome.success = r.term_signal == 0 &&
                        std::find(step.success_codes.begin(), step.success_codes.end(),
                                  r.exit_code) != step.success_codes.end();
      if (!outcome.success) {
        std::string why = r.term_signal ? fmt::format("killed by signal {}", r.term_signal)
                                        : fmt::format("exit code {}", r.exit_code);
        const std::string err = last_line();
        outcome.message = fmt::format("{} {}{}", step.run[0], why, err.empty() ? "" : ": " + err);
      }
    }
    if (step.subsystem == "package") {
      // The exit code came straight from the process.
      RemoveStepFiles(StepResultFile(step, rec.execution_id));
    }
    if (step.subsystem == "package" && r.term_signal != 0) {
      // Killed (our stop's SIGKILL after the grace, or anything else): it recorded no end.
      EndOpenExecutions({FoundDead(rec.execution_id, outcome.canceled ? "canceled" : "failed",
                                   fmt::format("fanout run was killed by signal {} before it "
                                               "recorded its end", r.term_signal),
                                   r.exit_code)},
                        /*now=*/true);
    }
  }
  outcome.message = run.secrets.Mask(outcome.message);
  rec.status = outcome.success ? "succeeded" : outcome.canceled ? "canceled" : "failed";
  rec.ended_at = Now();
  rec.message = outcome.message;
  // Written by the run's next SaveRun (retrying, or its end) or before its next step starts.
  run.pending_attempt = std::move(rec);
  std::lock_guard lock(mu_);
  ++step_counts_[run.pending_attempt->status];
  return outcome;
}

// A step process that outlived an agent restart: wait for it to end, then learn its result
// from the catalog (package steps record their execution there). A process step's exit code
// went with the old agent, so its run ends `abandoned`.
std::string Executor::StepResultFile(const StepDef& step, const std::string& execution_id) const {
  auto proxy = config_.proxies.find(step.proxy);
  return ResultFile(config_.data_dir, execution_id,
                    proxy == config_.proxies.end() ? "" : proxy->second.user);
}

Executor::StepOutcome Executor::Reattach(ActiveRun& run) {
  const StepDef& step = run.job->steps[static_cast<size_t>(run.record.current_step)];
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, run.record.pid, 0));
  while (pidfd >= 0) {
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {run.stop.fd(), POLLIN, 0}};
    poll(fds, 2, -1);
    if (fds[0].revents & POLLIN) break;
    if (fds[1].revents & POLLIN) {
      kill(-run.record.pid, SIGTERM);
      // The grace at most, and no longer than the step takes to end; then whatever is left of
      // its process group goes.
      auto grace = config_.stop_grace;
      pollfd ended = {pidfd, POLLIN, 0};
      // Not ours to reap: once it ended, its pid may be reused, so only its group is signalled.
      if (poll(&ended, 1, static_cast<int>(grace.count())) == 0) {
        KillProcessTree(run.record.pid);
      } else {
        kill(-run.record.pid, SIGKILL);
      }
      poll(&ended, 1, -1);
      break;
    }
  }
  if (pidfd >= 0) close(pidfd);
  // The step's attempt row was left `running` by the agent before the restart: end it too.
  // `ended_at`: when the step ended, if known (it may have ended while the agent was down).
  auto end_attempt = [&](const std::string& status, const std::string& message,
                         std::optional<int> exit_code, std::optional<DateTime> ended_at = {}) {
    int closed = CloseOpenAttempts(run.record.id, status, message, exit_code, ended_at);
    std::lock_guard lock(mu_);
    step_counts_[status] += closed;
  };
  // A package step's result file, which is read (and removed) whatever ends the step here.
  const std::string result_file = step.subsystem == "package" && !run.record.execution_id.empty()
                                      ? StepResultFile(step, run.record.execution_id)
                                      : "";
  if (run.stop.canceled()) {
    std::string reason;
    {
      std::lock_guard lock(mu_);
      reason = run.stop_reason;
    }
    if (!result_file.empty()) RemoveStepFiles(result_file);
    end_attempt("canceled", reason, std::nullopt);
    return StepOutcome{false, true, reason};
  }
  if (!result_file.empty()) {
    // The step's own word first: it does not depend on the catalog answering.
    if (std::optional<StepResult> result = ReadResultFile(result_file)) {
      const int code = result->exit_code;
      // Written as the step ended: its time is the step's end, not when the agent read it.
      std::optional<DateTime> ended;
      if (struct stat st{}; stat(result_file.c_str(), &st) == 0) {
        ended = DateTime(std::chrono::duration_cast<DateTime::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
      }
      RemoveStepFiles(result_file);
      StepOutcome outcome{code == 0, code == 3, ""};
      if (!outcome.success) {
        outcome.message = !result->reason.empty() ? result->reason
                          : outcome.canceled      ? "fanout run was canceled"
                                             : fmt::format("fanout run exited with code {}", code);
      }
      end_attempt(outcome.success ? "succeeded" : outcome.canceled ? "canceled" : "failed",
                  outcome.message, code, ended);
      return outcome;
    }
    auto catalog = OpenCatalog(config_.catalog);
    if (catalog.ok()) {
      auto execution = (*catalog)->GetExecution(run.record.execution_id);
      if (execution.ok() && *execution && (*execution)->ended_at) {
        const ExecutionRow& e = **execution;
        bool ok = e.status == "succeeded";
        bool canceled = e.status == "canceled";
        StepOutcome outcome{ok, canceled, ok ? "" : e.message};
        const char* status = ok ? "succeeded" : canceled ? "canceled" : "failed";
        end_attempt(status, outcome.message, e.exit_code, e.ended_at);
        return outcome;
      }
    }
  }
  const std::string message =
      "the agent restarted while this step ran; its process has ended but its result is unknown";
  end_attempt("abandoned", message, std::nullopt);
  if (step.subsystem == "package") {
    EndOpenExecutions({FoundDead(run.record.execution_id, "failed", message, std::nullopt)},
                      /*now=*/true);
  }
  std::lock_guard lock(mu_);
  run.record.status = "abandoned";
  return StepOutcome{false, false, message};
}

Executor::OpenExecution Executor::FoundDead(std::string id, std::string status,
                                            std::string message, std::optional<int> exit_code) {
  return {{std::move(id), std::move(status), std::move(message), exit_code, Now()}};
}

void Executor::EndOpenExecutions(std::vector<OpenExecution> executions, bool now) {
  std::erase_if(executions, [](const OpenExecution& e) { return e.execution.id.empty(); });
  std::string why;
  if (now && !executions.empty()) executions = TryEndOpenExecutions(executions, why);
  if (executions.empty()) return;
  // Kept in the store as well: an agent restarted before the catalog is back ends them then.
  for (OpenExecution& e : executions) {
    if (!e.saved) SaveOpenExecution(e);
  }
  std::lock_guard lock(closer_mu_);
  if (now) {  // tried once already: the closer's first try comes after its first pause
    if (!why.empty()) SayCannotEndLocked(executions.size(), why);
    closer_next_try_ =
        std::max(closer_next_try_, std::chrono::steady_clock::now() + kCloserFirstPause);
  }
  to_end_.insert(to_end_.end(), std::make_move_iterator(executions.begin()),
                 std::make_move_iterator(executions.end()));
  closer_wake_.notify_one();
}

void Executor::SaveOpenExecution(OpenExecution& e) {
  Status saved = store_.SaveUnendedExecution(e.execution);
  e.saved = saved.ok();
  if (!saved.ok()) {
    std::fprintf(stderr, "fanout agent: cannot keep execution %s to end in the catalog after a "
                 "restart: %s\n", e.execution.id.c_str(), saved.ToString().c_str());
  }
}

void Executor::ForgetOpenExecution(const OpenExecution& e) {
  if (e.saved) (void)store_.ForgetUnendedExecution(e.execution.id);
}

void Executor::SayCannotEndLocked(size_t count, const std::string& why) {
  if (closer_said_) return;
  closer_said_ = true;
  std::fprintf(stderr, "fanout agent: cannot end %s left running in the catalog yet, trying "
               "again until it answers: %s\n", Counted(count, "execution").c_str(), why.c_str());
}

std::vector<Executor::OpenExecution> Executor::TryEndOpenExecutions(
    const std::vector<OpenExecution>& executions, std::string& why) {
  auto catalog = OpenCatalog(config_.catalog);
  if (!catalog.ok()) {
    why = catalog.status().ToString();
    return executions;
  }
  std::vector<OpenExecution> again;  // rows that could not be written, or are not there yet
  for (const OpenExecution& e : executions) {
    const UnendedExecutionRecord& dead = e.execution;
    ExecutionRow end;
    end.id = dead.id;
    end.status = dead.status;
    end.ended_at = dead.seen_at;
    end.exit_code = dead.exit_code;
    end.message = dead.message;
    // Only a running row is ended: the real end, from the dead process's spool say, may have
    // come first and stays.
    Result<bool> ended = (*catalog)->EndRunningExecution(end);
    if (ended.ok() && *ended) {
      ForgetOpenExecution(e);
      continue;
    }
    // Not running there: ended before, or not there yet.
    auto execution = ended.ok() ? (*catalog)->GetExecution(dead.id)
                                : Result<std::optional<ExecutionRow>>(ended.status());
    if (!execution.ok()) {
      why = execution.status().ToString();
      again.push_back(e);
      continue;
    }
    if (*execution && (*execution)->ended_at) {
      ForgetOpenExecution(e);
      continue;
    }
    OpenExecution& kept = again.emplace_back(e);
    // Running after all: its start arrived from its spool since the update; ended next time.
    if (*execution) continue;
    // Its rows may wait in the dead process's spool, which a later run delivers: ended then.
    const auto now = std::chrono::steady_clock::now();
    if (!kept.missing_since) kept.missing_since = now;
    if (now - *kept.missing_since >= kWaitForMissingRow) {
      std::fprintf(stderr, "fanout agent: execution %s has not reached the catalog in %lld "
                   "minutes of looking; no longer waiting to end it\n", dead.id.c_str(),
                   static_cast<long long>(kWaitForMissingRow.count()));
      ForgetOpenExecution(kept);
      again.pop_back();
    }
  }
  return again;
}

void Executor::CloserLoop() {
  auto pause = kCloserFirstPause;
  std::unique_lock lock(closer_mu_);
  while (!closer_stop_) {
    if (to_end_.empty()) {
      closer_wake_.wait(lock, [&] { return closer_stop_ || !to_end_.empty(); });
      continue;
    }
    if (std::chrono::steady_clock::now() < closer_next_try_) {
      closer_wake_.wait_until(lock, closer_next_try_, [&] { return closer_stop_; });
      continue;
    }
    std::vector<OpenExecution> batch = std::exchange(to_end_, {});
    lock.unlock();
    std::string why;
    std::vector<OpenExecution> left = TryEndOpenExecutions(batch, why);
    lock.lock();
    if (why.empty() && closer_said_) {
      std::fprintf(stderr, "fanout agent: the catalog answers again; ending the executions left "
                   "running there\n");
      closer_said_ = false;
    }
    if (left.empty()) {
      pause = kCloserFirstPause;
      continue;
    }
    if (!why.empty()) SayCannotEndLocked(left.size(), why);
    to_end_.insert(to_end_.begin(), std::make_move_iterator(left.begin()),
                   std::make_move_iterator(left.end()));
    closer_next_try_ = std::chrono::steady_clock::now() + pause;
    pause = std::min<std::chrono::seconds>(pause * 2, kCloserLongestPause);
  }
  if (!to_end_.empty()) {
    std::fprintf(stderr, "fanout agent: stopping with %s left running in the catalog: it was "
                 "down, or their rows had not reached it yet; the agent's next start ends them\n",
                 Counted(to_end_.size(), "execution").c_str());
  }
}

int Executor::CloseOpenAttempts(const std::string& run_id, const std::string& status,
                                const std::string& message, std::optional<int> exit_code,
                                std::optional<DateTime> ended_at) {
  auto attempts = store_.ListStepAttempts(run_id, /*with_output=*/true);
  if (!attempts.ok()) return 0;
  int closed = 0;
  for (StepAttemptRecord a : *attempts) {
    if (a.status != "running") continue;
    a.status = status;
    a.ended_at = ended_at.value_or(Now());
    a.message = message;
    a.exit_code = exit_code;
    if (store_.UpsertStepAttempt(a).ok()) ++closed;
  }
  return closed;
}

void Executor::FinishRun(const std::shared_ptr<ActiveRun>& run, const std::string& status,
                         const std::string& message) {
  // Once a tenth of the job's kept history has finished since the last trim: one DELETE per
  // many runs, not per run, and never more than a tenth over.
  const int keep = config_.history_runs_per_job;
  bool trim = false;
  RunRecord ended;
  {
    std::lock_guard lock(mu_);
    ended = run->record;
  }
  ended.status = status;
  ended.message = message;
  ended.ended_at = Now();
  ended.pid = 0;
  // Written before anyone is told, but outside mu_: a long-poll or a start does not wait for
  // the commit. Only this thread writes a running run's record.
  SaveRun(*run, ended);
  int wake = 0;
  {
    std::lock_guard lock(mu_);
    run->record = std::move(ended);
    trim = ++finished_since_trim_[run->record.job] >= std::max(1, keep / 10);
    if (trim) finished_since_trim_[run->record.job] = 0;
    wake = EndRunLocked(run);
  }
  // After mu_ is released: woken under it, a thread would at once wait for mu_ again.
  run->ended.notify_all();
  changed_.notify_all();
  while (wake-- > 0) work_.notify_one();
  if (trim) {
    auto trimmed = store_.TrimHistory(run->record.job, keep);
    if (!trimmed.ok()) {
      std::fprintf(stderr, "fanout agent: cannot trim the history of job %s to its %d newest "
                   "runs: %s\n", run->record.job.c_str(), keep, trimmed.status().message().c_str());
    }
  }
}

int Executor::EndRunLocked(const std::shared_ptr<ActiveRun>& run) {
  ++run_counts_[run->record.status];
  active_.erase(run->record.id);
  run->finished = true;
  --busy_;
  --threads_;
  int wake = 0;
  while (!draining_ && !queue_.empty() && busy_ < config_.slots) {
    auto next = queue_.front();
    queue_.pop_front();
    wake += LaunchLocked(next);
  }
  return wake;
}

void Executor::CancelBeforeStartLocked(ActiveRun& run, const std::string& why) {
  run.record.status = "canceled";
  run.record.message = "Job canceled before it started" + (why.empty() ? "" : ": " + why);
  run.record.ended_at = Now();
  SaveRun(run);
  ++run_counts_["canceled"];
}

void Executor::EndQueuedLocked(const std::shared_ptr<ActiveRun>& run, const std::string& status,
                               const std::string& message) {
  auto queued = std::find(queue_.begin(), queue_.end(), run);
  if (queued != queue_.end()) queue_.erase(queued);
  active_.erase(run->record.id);
  if (status == "canceled") {
    CancelBeforeStartLocked(*run, message);
  } else {
    run->record.status = status;
    run->record.message = message;
    run->record.ended_at = Now();
    SaveRun(*run);
    ++run_counts_[status];
  }
  run->finished = true;
  run->ended.notify_all();
}

Result<RunRecord> Executor::Stop(const std::string& run_id) {
  std::unique_lock lock(mu_);
  auto it = active_.find(run_id);
  if (it == active_.end()) {
    lock.unlock();
    ASSIGN_OR_RETURN(auto stored, store_.GetRun(run_id));
    if (!stored) return NotFound("no run " + run_id);
    return *stored;
  }
  std::shared_ptr<ActiveRun> run = it->second;
  StopLocked(run, "");
  return run->record;
}

void Executor::StopLocked(const std::shared_ptr<ActiveRun>& run, std::string reason) {
  // Not started yet (in queue_, or left queued by a drain): it ends here.
  if (run->record.status == "queued") {
    EndQueuedLocked(run, "canceled", reason);
    return;
  }
  if (run->stop.canceled()) return;  // a stop is under way, with its own reason
  if (!reason.empty()) run->stop_reason = std::move(reason);
  // Kept, so that an agent that dies within the stop's grace finishes the stop after its restart.
  (void)store_.SaveStopReason(run->record.id, run->stop_reason);
  // A package step's `fanout run` records why, which it cannot tell from the signal alone.
  const int step = run->record.current_step;
  if (run->job && step >= 0 && step < static_cast<int>(run->job->steps.size()) &&
      run->job->steps[static_cast<size_t>(step)].subsystem == "package" &&
      !run->record.execution_id.empty()) {
    (void)WriteFileAtomically(
        StopFileOf(StepResultFile(run->job->steps[static_cast<size_t>(step)],
                                  run->record.execution_id)),
        run->stop_reason, 0644);
  }
  run->stop.Cancel(CancelToken::Reason::kCanceled);
}

void Executor::StopOrphansLocked() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<ActiveRun>> orphans;
  for (const auto& [id, run] : active_) {
    const std::chrono::milliseconds timeout(run->record.orphan_timeout_ms);
    if (timeout.count() > 0 && run->followers == 0 && !run->finished && !run->stop.canceled() &&
        now - run->followed_at >= timeout) {
      orphans.push_back(run);
    }
  }
  for (const std::shared_ptr<ActiveRun>& run : orphans) {  // a queued one leaves active_
    const std::string reason = fmt::format(
        "nobody followed this run for {} (its orphan_timeout): its parent was stopped or lost "
        "this agent", FormatDuration(std::chrono::milliseconds(run->record.orphan_timeout_ms)));
    std::fprintf(stderr, "fanout agent: stopping run %s of job %s: %s\n", run->record.id.c_str(),
                 run->record.job.c_str(), reason.c_str());
    StopLocked(run, reason);
  }
}

Result<RunRecord> Executor::Wait(const std::string& run_id, std::chrono::milliseconds wait,
                                 const std::optional<std::string>& known_execution_id) {
  {
    std::unique_lock lock(mu_);
    auto deadline = std::chrono::steady_clock::now() + wait;
    auto it = active_.find(run_id);
    if (it != active_.end()) {
      std::shared_ptr<ActiveRun> run = it->second;
      ++run->followers;
      run->ended.wait_until(lock, deadline, [&] {
        return run->finished ||
               (known_execution_id && run->saved_execution_id != *known_execution_id);
      });
      --run->followers;
      run->followed_at = std::chrono::steady_clock::now();
      // What the store holds of it, or will once a failed write can be made: no read needed.
      return run->record;
    }
  }
  ASSIGN_OR_RETURN(auto stored, store_.GetRun(run_id));
  if (!stored) return NotFound("no run " + run_id);
  return *stored;
}

ExecutorStatus Executor::Snapshot() {
  std::lock_guard lock(mu_);
  ExecutorStatus s;
  s.slots = config_.slots;
  s.busy = busy_;
  s.queued = static_cast<int>(queue_.size());
  s.draining = draining_;
  s.broken = broken_;
  for (const auto& [id, run] : active_) {
    s.active.push_back(run->record);
    int step = run->record.current_step;
    if (step >= 0 && step < static_cast<int>(run->job->steps.size())) {
      s.steps[id] = run->job->steps[static_cast<size_t>(step)].name;
    }
  }
  std::sort(s.active.begin(), s.active.end(),
            [](const RunRecord& a, const RunRecord& b) { return a.queued_at < b.queued_at; });
  return s;
}

bool Executor::Draining() {
  std::lock_guard lock(mu_);
  return draining_;
}

std::string Executor::Broken() {
  std::lock_guard lock(mu_);
  return broken_;
}

std::map<std::string, int64_t> Executor::RunCounts() {
  std::lock_guard lock(mu_);
  return run_counts_;
}

std::map<std::string, int64_t> Executor::StepCounts() {
  std::lock_guard lock(mu_);
  return step_counts_;
}

Result<SpawnResult> Executor::RunPackageStep(SpawnSpec& spec, int cancel_fd) {
  // The command line holds the catalog spec: on stdin, a password in it stays out of `ps`. A
  // warm process (`fanout --argv-from-stdin` started ahead) takes the same input.
  MoveArgvToStdin(spec);
  // The warm process was started as the agent itself: only a step with nothing of its own
  // (user, directory, environment) can use it.
  if (spec.run_as || !spec.cwd.empty() || !spec.env.empty()) return RunProcess(spec, cancel_fd);
  ChildProcess child;
  {
    std::lock_guard lock(warm_mu_);
    child = std::move(warm_);
    if (!warm_off_) {
      // The next one is started a moment later, off this step's start: its exec and loading
      // took a core from the step's own start, which on a busy agent doubled it (pool_bench
      // pool-makespan: 4.2 ms from the step to its execution, 2.2 ms started later).
      // Not moved on by the steps after it: a step every few ms would put it off for good.
      if (!warm_due_) warm_due_ = std::chrono::steady_clock::now() + kWarmAfter;
      StartWarmerLocked();
      warm_cv_.notify_all();
    }
  }
  if (child.pid() <= 0 || child.Ended()) return RunProcess(spec, cancel_fd);
  if (spec.on_start) spec.on_start(child.pid());
  return FollowProcess(child, spec, cancel_fd);
}

Result<ChildProcess> Executor::SpawnWarm() const {
  SpawnSpec next;
  next.argv = {fanout_binary_, std::string(kArgvFromStdin)};
  // A SQLite catalog's path holds no secret: the warm process opens it while it waits.
  if (auto sqlite = CatalogSqlitePath(config_.catalog); sqlite.ok() && !sqlite->empty()) {
    next.env[kWarmCatalogEnv] = config_.catalog;
  }
  return StartProcess(next, /*stdin_pipe=*/true);
}

void Executor::StartWarmLocked() {
  if (warm_off_) return;
  auto started = SpawnWarm();
  if (started.ok()) warm_ = std::move(*started);
}

void Executor::StartWarmerLocked() {
  if (warmer_.joinable()) return;
  warmer_ = std::thread([this] {
    std::unique_lock lock(warm_mu_);
    while (!warm_off_) {
      if (!warm_due_) {
        warm_cv_.wait(lock);
      } else if (const auto due = *warm_due_; std::chrono::steady_clock::now() < due) {
        warm_cv_.wait_until(lock, due);  // a later step may move it on meanwhile
      } else {
        warm_due_.reset();
        if (warm_.pid() > 0 && !warm_.Ended()) continue;
        // Spawned unlocked: a step due meanwhile takes no warm process rather than wait.
        lock.unlock();
        auto started = SpawnWarm();
        lock.lock();
        if (started.ok() && !warm_off_ && (warm_.pid() <= 0 || warm_.Ended())) {
          warm_ = std::move(*started);
        }
        // Else it is not needed after all: killed and reaped as it goes out of scope.
      }
    }
  });
}

bool Executor::KeepWarmFor(const JobDef& job) {
  const bool uses_warm = std::any_of(job.steps.begin(), job.steps.end(), [](const StepDef& s) {
    return s.subsystem == "package" && s.proxy.empty();
  });
  if (!uses_warm) return false;
  std::lock_guard lock(warm_mu_);
  if (warm_.pid() <= 0 || warm_.Ended()) StartWarmLocked();
  return warm_.pid() > 0;
}

void Executor::Drain(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(warm_mu_);
    warm_off_ = true;
    warm_ = ChildProcess();  // killed and reaped
  }
  warm_cv_.notify_all();
  if (warmer_.joinable()) warmer_.join();
  std::unique_lock lock(mu_);
  draining_ = true;
  changed_.wait_for(lock, grace, [&] { return busy_ == 0; });
  // Queued runs are left queued in the store, untouched, for the next start to run. Judged by
  // status, not by queue_: the destructor drains again with queue_ empty, and a stop reason it
  // saved on them made the next start cancel them (QA).
  queue_.clear();
  for (auto& [id, run] : active_) {
    if (run->record.status == "queued") continue;
    StopLocked(run, fmt::format("the agent shut down and stopped its step after drain_grace {}",
                                FormatDuration(grace)));
  }
  changed_.wait(lock, [&] { return threads_ == 0; });
  stop_workers_ = true;
  work_.notify_all();
  changed_.wait(lock, [&] { return workers_ == 0; });
  lock.unlock();
  {
    std::lock_guard closer_lock(closer_mu_);
    closer_stop_ = true;
  }
  closer_wake_.notify_all();
  if (closer_.joinable()) closer_.join();
  {
    std::lock_guard heartbeat_lock(heartbeat_mu_);
    heartbeat_stop_ = true;
  }
  heartbeat_stop_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

}  // namespace fanout::agent
