// The agent's run executor: starts job runs on demand into a fixed number of slots (extra runs
// wait in a FIFO queue), runs their steps as SQL Server Agent does (actions, retries, proxies),
// stops them, answers long-polls, and after a restart re-attaches to steps still alive.
// Thread-safe: HTTP handler threads call it concurrently; each running run has a thread of its
// own, taken from idle run threads that are kept for the next runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config.h"
#include "agent/job.h"
#include "agent/store.h"
#include "common/subprocess.h"
#include "fanout/status.h"
#include "fanout/task.h"

namespace fanout::agent {

// Beside a package step's --result-file: why its agent stops the step, written before the
// step's process is signalled, so that the step's own record says why.
inline std::string StopFileOf(const std::string& result_file) { return result_file + ".stop"; }

struct StartRequest {
  nlohmann::json params = nlohmann::json::object();  // name -> string (or list of strings)
  // Secrets in the params' values: kept in memory only, masked in all the agent keeps and shows.
  std::vector<std::string> secrets;
  // Params whose whole values are secret (a package step declares them sensitive): shown as
  // `***` however short, their values also in `secrets`.
  std::vector<std::string> sensitive_params;
  std::string parent_execution_id;
  std::string start_step;
  std::string idempotency_key;
  // Stop the run once nobody has followed it (long-polled or read it) for this long: its parent
  // was killed or has lost this agent, and would not see its end. 0: never.
  std::chrono::milliseconds orphan_timeout{0};
};

struct StartResult {
  RunRecord run;
  bool existing = false;  // an earlier start with the same idempotency key
};

struct ExecutorStatus {
  int slots = 0;
  int busy = 0;
  int queued = 0;
  bool draining = false;
  std::string broken;  // Broken()
  std::vector<RunRecord> active;  // queued and running, in start order
  std::map<std::string, std::string> steps;  // run id -> name of the step it is at
};

class Executor {
 public:
  // `fanout_binary` runs package steps (`fanout run`).
  Executor(const AgentConfig& config, AgentStore& store, std::string fanout_binary);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // After a restart: queued runs queue again, running ones re-attach to their step process
  // when it is still alive, else end `abandoned`. A parent's queued run ends `abandoned` when
  // the agent was down longer than parents wait for it (kAgentComeBackWait): the parent has
  // placed that child elsewhere. Then keeps DATA_DIR/alive's time current until Drain.
  Status Recover();

  // NotFound (unknown start step), FailedPrecondition (max_concurrent_runs reached),
  // Unavailable (draining).
  Result<StartResult> Start(std::shared_ptr<const JobDef> job, const StartRequest& request);
  // Cancels a queued or running run; a finished run is returned as it is.
  Result<RunRecord> Stop(const std::string& run_id);
  // The run once it is final or `wait` has passed; with `known_execution_id`, also as soon as
  // the run's latest package step execution is another (the caller has not seen it yet).
  Result<RunRecord> Wait(const std::string& run_id, std::chrono::milliseconds wait,
                         const std::optional<std::string>& known_execution_id = std::nullopt);
  ExecutorStatus Snapshot();
  // Whether a drain began (Snapshot().draining, without copying every run).
  bool Draining();
  // "" while the agent's database is the file it opened; else what became of it (its data_dir
  // removed, say). Then no run starts and nothing is deployed: both would be lost.
  std::string Broken();
  // Counters for /metrics: finished runs and step attempts by final status.
  std::map<std::string, int64_t> RunCounts();
  std::map<std::string, int64_t> StepCounts();

  // SIGTERM: start nothing new, let running steps finish for up to `grace`, stop the rest,
  // and return when every run thread has ended. Queued runs stay queued for the next start.
  void Drain(std::chrono::milliseconds grace);

  // Keeps a warm process from now on if `job` has a package step that can use it (one not run
  // through a proxy), so that the first package step after the agent's start or a job's
  // creation starts as fast as the later ones. True when one is kept; false also when starting
  // one failed (the step then starts its own process, as without one).
  bool KeepWarmFor(const JobDef& job);

 private:
  struct ActiveRun;
  // Takes a slot and hands the run to a run thread. True when an idle run thread is to be woken
  // (work_.notify_one()), which the caller does once it has released mu_ if it can: woken under
  // it, the thread would at once wait for mu_ again.
  [[nodiscard]] bool LaunchLocked(const std::shared_ptr<ActiveRun>& run);
  // A run thread: runs what LaunchLocked hands over, waits idle for more, ends on Drain.
  void WorkerLoop();
  void RunThread(std::shared_ptr<ActiveRun> run);
  // Ends the run, starts what is queued, and now and then trims the job's history.
  void FinishRun(const std::shared_ptr<ActiveRun>& run, const std::string& status,
                 const std::string& message);
  // The ended run (its final record saved) leaves its slot to what is queued; how many idle
  // run threads are to be woken.
  int EndRunLocked(const std::shared_ptr<ActiveRun>& run);
  // Writes the run's record (or `record`, what it is about to become) with its pending attempt.
  void SaveRun(ActiveRun& run);
  void SaveRun(ActiveRun& run, const RunRecord& record);
  // A queued run stopped before its step could start: it ends canceled, saying `why` if given.
  void CancelBeforeStartLocked(ActiveRun& run, const std::string& why = "");
  // Stops a run of active_: a queued one ends canceled at once, a running one's step is stopped
  // and the run ends canceled saying `reason`.
  void StopLocked(const std::shared_ptr<ActiveRun>& run, std::string reason);
  // The heartbeat's: stops the runs whose orphan_timeout has passed since anyone followed them.
  void StopOrphansLocked();
  // Ends a run of queue_ that never started, `status` with `message`, and wakes its waiters.
  void EndQueuedLocked(const std::shared_ptr<ActiveRun>& run, const std::string& status,
                       const std::string& message);
  // Where a package step's `fanout run` writes its exit code (for its proxy's user, if any).
  std::string StepResultFile(const StepDef& step, const std::string& execution_id) const;

  struct StepOutcome {
    bool success = false;
    bool canceled = false;
    std::string message;
  };
  StepOutcome RunStep(ActiveRun& run, int index, int attempt);
  StepOutcome Reattach(ActiveRun& run);
  // Ends the step attempts of a run that the store still shows `running` (a crash left them
  // so), keeping their output; returns how many it ended.
  int CloseOpenAttempts(const std::string& run_id, const std::string& status,
                        const std::string& message, std::optional<int> exit_code,
                        std::optional<DateTime> ended_at = std::nullopt);
  // A package step's `fanout run` that died without recording its end (killed, or gone while
  // the agent was down) would show `running` in the catalog forever: ends them there, unless
  // they ended after all.
  struct OpenExecution {
    UnendedExecutionRecord execution;  // what to end it with, as the store keeps it
    // Since when the catalog answers without its row (still in the dead process's spool).
    // Not kept across a restart: while the agent is down, no run delivers that spool.
    std::optional<std::chrono::steady_clock::time_point> missing_since = std::nullopt;
    bool saved = false;  // in the store (unended_executions), for the agent's next start
  };
  // Execution `id`, found dead now, to be ended with `status`.
  static OpenExecution FoundDead(std::string id, std::string status, std::string message,
                                 std::optional<int> exit_code);
  // Ends them now (`now`) or on the closer thread; those the catalog could not take (it is
  // down) are tried again there, after pauses growing to a minute, while the agent runs.
  void EndOpenExecutions(std::vector<OpenExecution> executions, bool now);
  // One try, opening the catalog once: the executions to try again, and why when the catalog
  // failed ("" when it answered and only rows not recorded yet are left: a spool delivers them
  // later, so they are tried again for kWaitForMissingRow).
  std::vector<OpenExecution> TryEndOpenExecutions(const std::vector<OpenExecution>& executions,
                                                  std::string& why);
  void CloserLoop();
  // In the store, for the agent's next start (SaveOpenExecution sets `saved`), and out of it.
  void SaveOpenExecution(OpenExecution& execution);
  void ForgetOpenExecution(const OpenExecution& execution);
  // Once until the catalog takes them again. Needs closer_mu_.
  void SayCannotEndLocked(size_t count, const std::string& why);
  static constexpr std::chrono::seconds kCloserFirstPause{2};
  static constexpr std::chrono::seconds kCloserLongestPause{60};
  static constexpr std::chrono::minutes kWaitForMissingRow{10};
  // Runs a package step's `fanout run` in the warm process when there is one, and starts the
  // next warm process.
  Result<SpawnResult> RunPackageStep(SpawnSpec& spec, int cancel_fd);
  // Starts a warm process into warm_ unless the agent is draining. Needs warm_mu_.
  void StartWarmLocked();

  const AgentConfig& config_;
  AgentStore& store_;
  const std::string fanout_binary_;

  std::mutex mu_;
  std::condition_variable changed_;  // busy_, threads_ or workers_ fell (Drain waits on it)
  std::map<std::string, std::shared_ptr<ActiveRun>> active_;
  std::deque<std::shared_ptr<ActiveRun>> queue_;
  int busy_ = 0;
  int threads_ = 0;  // runs on their threads, until FinishRun
  // Run threads are kept rather than started per run: creating and ending a thread for each run
  // (clone, stack madvise, exit) was about a tenth of the agent's CPU per run.
  std::condition_variable work_;                  // ready_ got a run, or stop_workers_
  std::deque<std::shared_ptr<ActiveRun>> ready_;  // launched, not yet picked by a thread
  int idle_workers_ = 0;  // waiting for ready_, or started and about to take from it
  int workers_ = 0;       // run threads alive
  bool stop_workers_ = false;
  bool draining_ = false;
  std::string broken_;  // Broken(), found by the heartbeat
  // The closer thread: ends executions left open in the catalog (EndOpenExecutions).
  std::thread closer_;
  std::mutex closer_mu_;
  std::condition_variable closer_wake_;
  std::vector<OpenExecution> to_end_;
  std::chrono::steady_clock::time_point closer_next_try_{};
  bool closer_said_ = false;  // that it cannot end them yet, since the catalog last took them
  bool closer_stop_ = false;
  // Touches DATA_DIR/alive every second (and once more at Drain), so that the next start knows
  // how long the agent was down.
  std::thread heartbeat_;
  std::mutex heartbeat_mu_;
  std::condition_variable heartbeat_stop_cv_;
  bool heartbeat_stop_ = false;
  // A `fanout --argv-from-stdin` started ahead of the next package step: its dynamic loading
  // (~3 ms, the larger part of a step's start) and its warm-up (OpenSSL's digest set-up, ~1.5
  // ms; src/cli/cli.cc) are done by the time the step is due, and the step's command line goes
  // to its stdin. Started once a job with a package step is known (KeepWarmFor) and, by the
  // warmer thread, kWarmAfter each package step took one, and kept until the agent drains: an
  // agent that never held such a job keeps none.
  std::mutex warm_mu_;
  ChildProcess warm_;
  bool warm_off_ = false;  // draining: no new warm process
  std::optional<std::chrono::steady_clock::time_point> warm_due_;  // when the warmer starts one
  std::condition_variable warm_cv_;
  std::thread warmer_;  // started with the first warm process
  void StartWarmerLocked();
  Result<ChildProcess> SpawnWarm() const;
  std::map<std::string, int64_t> run_counts_;
  std::map<std::string, int> finished_since_trim_;  // by job, for history_runs_per_job
  std::map<std::string, int64_t> step_counts_;
};

}  // namespace fanout::agent
