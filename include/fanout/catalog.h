// The catalog: the central record of executions, task runs and events (DESIGN §6), with one
// interface for every backend (SQLite now, PostgreSQL later). Writers do not call a Catalog
// directly on the hot path: they hand rows to a Recorder, whose thread writes them in batches.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fanout/event.h"
#include "fanout/status.h"
#include "fanout/value.h"

namespace fanout {

// A parameter value an execution ran with. Sensitive values are never stored: `value` is
// empty and `sensitive` set.
struct ParameterValue {
  std::string value;
  bool sensitive = false;
  friend bool operator==(const ParameterValue&, const ParameterValue&) = default;
};

// Execution and task-run states as stored: "running", "succeeded", "failed", "canceled",
// "skipped" (task runs only).
struct ExecutionRow {
  std::string id;         // UUIDv7, sortable by time
  std::string parent_id;  // "" for a top-level execution
  std::string package;
  std::string package_sha256;
  std::string host;
  std::string agent;   // agent name when started by an agent job, else ""
  std::string job;     // agent job name, else ""
  std::string run_id;  // agent run id, else ""
  std::string status;
  DateTime started_at{};
  std::optional<DateTime> ended_at;
  std::optional<int> exit_code;
  std::string message;
  std::string operator_name;
  // The `fanout` process recording it on `host` (0: unknown, e.g. an older catalog) and that
  // process's identity ("BOOT_ID:START_TICKS", ProcessIdentity), which tells a re-used pid
  // apart: a running execution whose process is gone was killed (report::MarkIfProcessGone).
  int64_t pid = 0;
  std::string process;
  // Written when not empty (an execution's first row); read by GetExecution and
  // ListJobExecutions.
  std::map<std::string, ParameterValue> parameters;
};

struct TaskRunRow {
  std::string execution_id;
  std::string task_path;  // "load/region-job"; loop iterations as "load[3]/region-job"
  std::string task_type;
  int attempt = 1;
  std::string status;
  DateTime started_at{};
  std::optional<DateTime> ended_at;
  std::string agent;
  std::string child_execution_id;
  std::string message;
};

// One write unit: stored in one transaction, executions and task runs upserted by key
// (id; execution_id + task_path + attempt), events appended in order.
struct CatalogBatch {
  std::vector<ExecutionRow> executions;
  std::vector<TaskRunRow> task_runs;
  std::vector<Event> events;
  bool empty() const { return executions.empty() && task_runs.empty() && events.empty(); }
  // Empties it; the vectors keep their capacity.
  void clear() {
    executions.clear();
    task_runs.clear();
    events.clear();
  }
};

struct EventQuery {
  std::string execution_id;      // "" for all
  std::vector<EventType> types;  // empty for all
  std::string source;            // "" for all
  int64_t after_id = 0;          // only events with id > after_id
  int limit = 0;                 // 0 for no limit
  bool newest_first = false;     // by id descending: with `limit`, the last `limit` events
  // With execution_id: also the events of every execution below it (children, theirs, ...).
  bool with_descendants = false;
  std::optional<DateTime> since;  // only events that ended at or after it
};

// A catalog backend. Not thread-safe: one thread (the Recorder's, or a report command) uses it.
class Catalog {
 public:
  virtual ~Catalog() = default;
  // Creates or migrates the schema.
  virtual Status Open() = 0;
  virtual Status Write(const CatalogBatch& batch) = 0;

  virtual Result<std::optional<ExecutionRow>> GetExecution(const std::string& id) = 0;
  // Ends execution `end.id` with `end`'s status, ended_at, exit_code and message if the catalog
  // holds it unended; true when it did. One already ended, or not there, is left as it is: an
  // end recorded first, by the execution's own process say, is the truth.
  virtual Result<bool> EndRunningExecution(const ExecutionRow& end) = 0;
  // Newest first.
  virtual Result<std::vector<ExecutionRow>> ListExecutions(int limit) = 0;
  virtual Result<std::vector<ExecutionRow>> ListChildExecutions(const std::string& parent_id) = 0;
  // How many children each of `parent_ids` has (those without any are left out), in a query per
  // few hundred ids rather than one per id.
  virtual Result<std::map<std::string, int>> CountChildren(
      const std::vector<std::string>& parent_ids) = 0;
  virtual Result<std::vector<TaskRunRow>> ListTaskRuns(const std::string& execution_id) = 0;
  // Every execution below `root_id` (its children, theirs, ...) with its parameters, by start
  // time; and the task runs of `root_id` and of all of those. Each is a query or two whatever
  // the tree's size: asked child by child, a night's tree on a PostgreSQL catalog across a
  // network took minutes.
  virtual Result<std::vector<ExecutionRow>> ListDescendantExecutions(const std::string& root_id) = 0;
  virtual Result<std::vector<TaskRunRow>> ListTreeTaskRuns(const std::string& root_id) = 0;
  virtual Result<std::vector<Event>> ListEvents(const EventQuery& query) = 0;
  // Succeeded executions started by agent job `job`, newest first, with their parameters: the
  // past durations that let a pool place long children first.
  virtual Result<std::vector<ExecutionRow>> ListJobExecutions(const std::string& job,
                                                              int limit) = 0;

  struct PruneCounts {
    int64_t executions = 0;
    int64_t task_runs = 0;
    int64_t events = 0;
    int64_t kept_live = 0;  // trees old enough to go, kept for an execution still running
  };
  // Whether an execution is still going on (its status says running and its process lives).
  using IsLive = std::function<bool(const ExecutionRow&)>;
  // Retention, in one transaction: deletes every tree of executions (one without a parent in
  // the catalog and all below it) whose top started before `cutoff`, with their parameters,
  // task runs and events; a tree with an execution `is_live` says is live is kept whole. With
  // `dry_run` the transaction is rolled back: the counts say what it would delete.
  virtual Result<PruneCounts> Prune(DateTime cutoff, const IsLive& is_live, bool dry_run) = 0;
};

// Opens a catalog from a spec: "sqlite:PATH" (or a bare path ending in .db). Other schemes
// return InvalidArgument naming the supported ones.
Result<std::unique_ptr<Catalog>> OpenCatalog(const std::string& spec);
// The spec's form alone (sqlite:PATH, PATH.db, postgresql://...), opening nothing.
Status CheckCatalogSpec(const std::string& spec);
// The SQLite file a spec names (sqlite:PATH or PATH.db), or "" for a PostgreSQL URI;
// InvalidArgument for a spec of neither form.
Result<std::string> CatalogSqlitePath(const std::string& spec);

// Where this process's catalog spec was given, as the catalog's messages name it for the fix
// ("check --catalog or $FANOUT_CATALOG", the default): an agent and its package steps take
// theirs from the agent's `catalog:` setting. Set once, before other threads start.
void SetCatalogSpecSource(std::string source);
const std::string& CatalogSpecSource();

// OpenCatalog for a run's Recorder: a PostgreSQL catalog that cannot be reached now (Unavailable)
// is returned unopened, with the reason in `unreachable`; it opens on its first successful
// write, and the Recorder spools rows until then, so a catalog outage does not stop the night.
// One that answers but where the role may not write what a run records is PermissionDenied.
// `connect_later`: a child run's (its parent checked the catalog already) is not connected to
// now but at its first write, so that a server that does not answer does not delay its start.
Result<std::unique_ptr<Catalog>> OpenCatalogForRun(const std::string& spec,
                                                   std::string& unreachable,
                                                   bool connect_later = false);
// For a warm process (started ahead of an agent's package step): opens the SQLite catalog of
// `spec` now, for the process's first OpenCatalogForRun of the same spec to take, about a
// millisecond off the step's start. Nothing for a PostgreSQL spec (its connection would sit
// idle as long as the process waits), nor when the file is not a catalog yet or cannot be
// opened: the run then opens it, and says what is wrong. Main thread only.
void PreopenCatalogForRun(const std::string& spec);

struct RecorderOptions {
  // Where rows go while the catalog is unreachable (see src/catalog/spool.h); "" keeps them in
  // memory only.
  std::string spool_dir;
  std::string catalog_spec;  // keys the spool files to this catalog
  // How long the end of the recording keeps retrying an unreachable catalog before it leaves
  // the rows in the spool. A child run passes 0: its rows are safe on disk, its parent's
  // recorder delivers them once the catalog answers, and the child's task ends at once.
  std::chrono::milliseconds shutdown_retry{5000};
  // Asked while the end of the recording retries: true (the run was stopped with Ctrl-C) stops
  // retrying a catalog that is failing, and the spool keeps the rows for the next run.
  std::function<bool()> stop_retrying{};
  // The caller has said that the catalog cannot be reached (`fanout run` at its start): the
  // first failed write then says nothing more (it said the same thing a second time).
  bool unreachable_said = false;
};

// Hands rows and events to a background thread that masks secrets and writes events to the log
// sinks at once, and from there to a second one that writes them to the catalog in batches (a
// catalog that hangs does not hold the console up). Record* calls are cheap and thread-safe; they
// wait only when tens of thousands of rows are queued that the catalog has not taken yet, which
// keeps memory bounded when a run makes events faster than the catalog takes them.
// Flush() blocks until everything recorded before it is written; the destructor flushes.
// A catalog write failure is reported once on stderr; the rows wait in the spool (or memory)
// and are written, in order and without duplicates, once the catalog answers.
class Recorder {
 public:
  Recorder(std::unique_ptr<Catalog> catalog, std::vector<std::unique_ptr<EventSink>> sinks,
           std::shared_ptr<Masker> masker, RecorderOptions options = {});
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  void RecordExecution(ExecutionRow row);
  void RecordTaskRun(TaskRunRow row);
  void Emit(Event event);
  // Rows a producer on a hot path describes by their facts alone: `make`, called on the
  // Recorder's thread, appends them to the batch it is given, in order after everything
  // recorded before this call. `rows` is how many it makes (the queue's bound counts them).
  // The producer then pays for neither the rows' strings nor the queue, row by row.
  void RecordLater(size_t rows, std::function<void(CatalogBatch&)> make);
  void Flush();

  Masker& masker() { return *masker_; }
  // No catalog and no sink: whatever is recorded is dropped, so a producer need not make it.
  bool keeps_nothing() const { return keeps_nothing_; }

 private:
  struct Impl;
  std::shared_ptr<Masker> masker_;
  // Here, never written after construction, rather than in Impl: the engine reads it for every
  // task, and in Impl it could share a cache line with the counters the Recorder's thread
  // writes for every event, a line the two CPUs would pass back and forth.
  const bool keeps_nothing_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fanout
