// The agent's own SQLite database under data_dir: deployed packages, jobs, runs and step
// attempts (SQL Server Agent's msdb). History survives restarts. Thread-safe: one connection
// behind a mutex, every call one short statement or transaction.
//
// A run or step attempt update that cannot be written (a full disk) is kept in memory and
// served by the reads in its place, and written by the next update that can be: a run must not
// look `running` for ever because its end could not be saved.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "fanout/status.h"
#include "fanout/value.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fanout::agent {

struct PackageRecord {
  std::string name;
  int version = 0;
  std::string sha256;
  std::string content;
  DateTime deployed_at{};
  int64_t size = 0;  // bytes of content
};

struct JobRecord {
  std::string name;
  std::string definition;  // JSON text of the JobDef
  DateTime updated_at{};
};

// States: queued, running, retrying, succeeded, failed, canceled, abandoned.
struct RunRecord {
  std::string id;
  std::string job;
  std::string status;
  std::string params;  // JSON object text; sensitive values are "***"
  std::string parent_execution_id;
  std::string start_step;
  std::string idempotency_key;
  std::string message;
  DateTime queued_at{};
  std::optional<DateTime> started_at;
  std::optional<DateTime> ended_at;
  int current_step = -1;  // index of the step running, -1 before the first
  int pid = 0;            // the current step's process (group leader), for re-attach
  int64_t pid_start = 0;  // its start time in clock ticks (/proc/PID/stat), against PID reuse
  std::string execution_id;  // the current package step's execution
  // JSON array text: the params whose values are secrets, held in the executor's memory only.
  std::string sensitive = "[]";
  // The job's definition as the run started it: a restart goes on with it, whatever the job
  // has become since ("" in runs of older agents).
  std::string definition;
  // Why a stop of the run is under way ("" for none), kept apart (SaveStopReason) so that an
  // agent dying in the stop's grace finishes it after its restart.
  std::string stop_reason;
  // A parent's child that is stopped once nobody has followed it for this long (its parent was
  // killed, or lost this agent); 0 for never.
  int64_t orphan_timeout_ms = 0;
};

struct StepAttemptRecord {
  std::string run_id;
  int step = 0;  // 1-based, as SQL Server Agent numbers steps
  std::string name;
  int attempt = 1;
  std::string status;  // running, succeeded, failed, canceled, abandoned
  DateTime started_at{};
  std::optional<DateTime> ended_at;
  std::optional<int> exit_code;
  std::string execution_id;
  std::string message;
  std::string stdout_text;
  std::string stderr_text;
};

// A package step's execution that the agent found dead without an end in the catalog, to be
// ended there (`failed` or `canceled`, at `seen_at`) once the catalog takes it.
struct UnendedExecutionRecord {
  std::string id;
  std::string status;
  std::string message;
  std::optional<int> exit_code;
  DateTime seen_at{};  // when the agent found its process dead
};

class Query;

// Where the agent of `data_dir` keeps its store: it exists once that agent has started.
std::string StorePath(const std::string& data_dir);
// The file a package step of the agent of `data_dir` runs: the store's copy of package `name`.
std::string PackagePath(const std::string& data_dir, const std::string& name);
// Package files are readable by the users proxies run steps as, and written by the agent alone.
inline constexpr mode_t kPackageFileMode = 0644;
// Writes package `name`'s file whole, with kPackageFileMode whatever the umask.
Status WritePackageFile(const std::string& data_dir, const std::string& name,
                        std::string_view content);

class AgentStore {
 public:
  static Result<std::unique_ptr<AgentStore>> Open(const std::string& path);
  ~AgentStore();
  AgentStore(const AgentStore&) = delete;
  AgentStore& operator=(const AgentStore&) = delete;

  struct PutResult {
    int version = 0;
    bool changed = false;
    bool created = false;
  };
  Result<PutResult> PutPackage(const std::string& name, const std::string& sha256,
                               const std::string& content);
  Result<std::optional<PackageRecord>> GetPackage(const std::string& name);
  Result<std::vector<PackageRecord>> ListPackages();  // content left empty
  Result<bool> DeletePackage(const std::string& name);

  Result<PutResult> PutJob(const std::string& name, const std::string& definition);
  Result<std::optional<JobRecord>> GetJob(const std::string& name);
  Result<std::vector<JobRecord>> ListJobs();
  Result<bool> DeleteJob(const std::string& name);

  // Inserts a new run; AlreadyExists when its idempotency key is taken.
  Status InsertRun(const RunRecord& run);
  Status UpdateRun(const RunRecord& run);  // all but definition and stop_reason
  Status SaveStopReason(const std::string& run_id, const std::string& reason);
  // The run and one of its step attempts in one transaction: both or neither survive a crash.
  Status UpdateRunAndAttempt(const RunRecord& run, const StepAttemptRecord& attempt);
  Result<std::optional<RunRecord>> GetRun(const std::string& id);
  Result<std::optional<RunRecord>> FindRunByKey(const std::string& idempotency_key);
  // Newest first.
  Result<std::vector<RunRecord>> ListRuns(const std::string& job, int limit);
  // Deletes the job's finished runs (and their step attempts) beyond its newest `keep`, in one
  // transaction; how many runs went.
  Result<int64_t> TrimHistory(const std::string& job, int keep);
  // Runs not in a final state, oldest first (for recovery after a restart).
  Result<std::vector<RunRecord>> ListUnfinishedRuns();
  // Closes as abandoned, at their run's end, step attempts still `running` in ended runs (an
  // agent before 2026-11-28 could leave them after a full disk); how many.
  Result<int64_t> CloseAttemptsOfEndedRuns();

  Status UpsertStepAttempt(const StepAttemptRecord& attempt);
  Result<std::vector<StepAttemptRecord>> ListStepAttempts(const std::string& run_id,
                                                          bool with_output);

  // The executions the agent could not end in the catalog yet, kept across restarts until it
  // has: saved (or replaced, by id), forgotten once ended or given up, listed oldest first.
  Status SaveUnendedExecution(const UnendedExecutionRecord& execution);
  Status ForgetUnendedExecution(const std::string& id);
  Result<std::vector<UnendedExecutionRecord>> ListUnendedExecutions();

  // Updates held in memory because they could not be written yet.
  size_t UnsavedCount();
  // "" while the database's path still names the file the store opened (or cannot be read
  // just now); else what became of it (removed, with its data_dir say, or replaced): writes
  // then go to a file nobody will read again, and the agent must be restarted.
  std::string FileProblem() const;
  // Writes held updates once there is room again, at most once a second. Every write tries
  // first; the agent's heartbeat calls this so that an idle agent's held ends are not left to
  // the next run, or to its stop.
  void WriteUnsaved();

 private:
  friend class AgentStoreTest;
  using AttemptKey = std::tuple<std::string, int, int>;  // run, step, attempt
  explicit AgentStore(sqlite3* db) : db_(db) {}
  Status Exec(const std::string& sql);
  // The statement for `sql`, prepared on first use and kept until the store closes. Holds mu_.
  Query Cached(const std::string& sql);
  // The statements of UpdateRun and UpsertStepAttempt. Hold mu_.
  Status UpdateRunLocked(const RunRecord& run);
  Status UpsertStepAttemptLocked(const StepAttemptRecord& attempt);
  // Writes `run` and `attempt` (either may be null) in one transaction; on failure keeps them
  // in the unsaved maps, on success drops what those held for them. Holds mu_.
  Status WriteOrKeepLocked(const RunRecord* run, const StepAttemptRecord* attempt);
  // Writes what the unsaved maps hold, when it can: at most once a second unless `now`.
  // Holds mu_.
  void WriteUnsavedLocked(bool now = false);
  // Whether updates of `run_id`'s attempts (but `but`) are held in the unsaved map. Holds mu_.
  bool AttemptsUnsavedLocked(const std::string& run_id,
                             const StepAttemptRecord* but = nullptr) const;
  RunRecord WithUnsavedLocked(RunRecord run) const;

  std::mutex mu_;
  sqlite3* db_;
  std::string path_;
  dev_t device_ = 0;  // of the file opened, which FileProblem compares the path's with
  ino_t inode_ = 0;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;
  std::map<std::string, RunRecord> unsaved_runs_;
  std::map<AttemptKey, StepAttemptRecord> unsaved_attempts_;
  std::chrono::steady_clock::time_point unsaved_tried_{};
};

}  // namespace fanout::agent
