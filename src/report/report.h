// The catalog reports, SSIS's "All Executions" and "Overview": what they show, gathered from any
// Catalog backend through its public interface alone. render.h turns them into text, JSON and
// HTML. Functions here are stateless; a Catalog is not thread-safe, so use one per thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "catalog/sqlite_catalog.h"
#include "fanout/catalog.h"
#include "fanout/status.h"

namespace fanout::report {

// ---- Opening the catalog ----------------------------------------------------------------------

// The catalog spec a command uses: `flag` (--catalog), else $FANOUT_CATALOG, else
// sqlite:fanout.db in the working directory, as `fanout run` does.
std::string CatalogSpec(const std::string& flag);

// The spec as messages may show it: a URI's password (user:PASSWORD@ or password=...) as ***.
std::string DisplayCatalogSpec(const std::string& spec);

// A catalog backend's `message` as a command says it: "catalog SPEC: MESSAGE", unless the
// message names the catalog already (a PostgreSQL URL, a SQLite file in quotes).
std::string CatalogProblem(const std::string& spec, const std::string& message);

// Opens a catalog to read. A SQLite file that does not exist is not created: the result is then
// nullptr (an empty catalog), so that a report run in the wrong directory leaves nothing behind.
// `guest`: what a SQLite file of another user that no run has open is read as.
Result<std::unique_ptr<Catalog>> OpenCatalogToRead(const std::string& spec,
                                                   catalog::SqliteCatalogOptions::Guest guest);

// ---- All Executions ---------------------------------------------------------------------------

// Execution states a user may filter on.
inline constexpr const char* kExecutionStates[] = {"succeeded", "failed", "canceled", "running"};

struct ExecutionsQuery {
  std::optional<DateTime> since;  // started at or after
  std::string package;            // "" for every package
  std::string status;             // "" for every state
  bool include_children = false;  // child executions too, not only top-level ones
  int limit = 50;
};

struct ExecutionSummary {
  ExecutionRow execution;  // without parameters
  int children = 0;        // direct child executions
};

// Newest first, at most query.limit. The Catalog interface filters on nothing but a limit, so
// this reads ever larger windows of the newest executions and filters here.
Result<std::vector<ExecutionSummary>> ListExecutions(Catalog& catalog,
                                                     const ExecutionsQuery& query);

// --since: a duration back from `now` ("24h", "7d", "90m") or an ISO 8601 date or time
// ("2026-11-26", "2026-11-26T03:00:00Z"; UTC when no offset is given).
Result<DateTime> ParseSince(std::string_view text, DateTime now);
// An age as --since and `catalog prune --older-than` take it: a duration with its unit ("30d",
// "12h"); a bare number, which elsewhere means seconds, is refused here, as is a date.
Result<std::chrono::milliseconds> ParseAge(std::string_view text);

// ---- Finding one execution --------------------------------------------------------------------

// The shortest id fragment FindExecution accepts.
inline constexpr size_t kMinIdFragment = 8;

// An execution by its full id, or by a unique prefix or suffix of at least kMinIdFragment
// characters (the suffix is the random part of a UUIDv7, the short form `fanout logs` prints).
// NotFound naming the id when nothing matches; InvalidArgument listing the candidates when the
// fragment is ambiguous. The row comes with its parameters.
Result<ExecutionRow> FindExecution(Catalog& catalog, const std::string& id);

// A `running` execution whose `fanout` process on this host is gone (SIGKILL, out of memory, a
// reboot: it could record no end) becomes `abandoned`, its end unknown, with a message saying
// so; true then. One of another host, or of a catalog from before executions named their
// process, stays as recorded. Reports and `logs` apply it to what they read; the catalog is
// not changed. One whose last rows wait in a spool file of this host (its run ended while the
// catalog was down) stays `running`, with a message saying where they wait, and `spooled` (when
// given) set.
bool MarkIfProcessGone(ExecutionRow& row, bool* spooled = nullptr);

// ---- Overview ---------------------------------------------------------------------------------

// One task of an execution: its last attempt, with the number of attempts. Times span every
// attempt (first start to last end).
struct TaskSummary {
  std::string task_path;
  std::string task_type;
  std::string status;
  int attempts = 1;
  DateTime started_at{};
  std::optional<DateTime> ended_at;
  std::string agent;  // "" when run here
  std::string child_execution_id;
  std::string message;
  // The attempts before the last, oldest first (a child lost with its agent and run again
  // elsewhere shows here, not only as a count).
  std::vector<TaskRunRow> earlier_attempts;
};

// A line of the overview's task table in text and HTML: one task, or the rest of a loop's
// iterations of one task beyond the first kShownIterations, summed up, so that a loop of
// 150,000 iterations stays a page; of the rest, the first kShownIterations that did not
// succeed or took more than one attempt are lines of their own too. JSON lists every task.
inline constexpr int kShownIterations = 25;
struct TaskLine {
  const TaskSummary* task = nullptr;  // one task; else the rest of the iterations:
  std::string pattern;                // "load[*]/region-job"
  std::string task_type;
  int count = 0;
  std::string states;                 // "149985 succeeded, 5 failed"

  // What the summed-up line says: "149990 more iterations: 149985 succeeded, 5 failed (...)".
  std::string Summary() const;
};
std::vector<TaskLine> TaskLines(const std::vector<TaskSummary>& tasks);

// The child tree in text and HTML shows, at each level, the first kShownChildren children and
// every one that did not succeed or whose task ran again; the other succeeded ones (with their
// own children) are counted in one line. JSON lists every child.
inline constexpr size_t kShownChildren = 50;
struct ChildNode;
bool ShowsChild(size_t index, const ChildNode& child);

// A child execution (a package run in process, out of process or on an agent) with its own
// children.
struct ChildNode {
  ExecutionRow execution;  // with parameters
  std::string task_path;   // the parent's task that started it, when the task run names it
  int attempt = 0;         // of that task, when known
  // Its task ran again after this attempt (its agent was lost, say): this child's work may
  // have been done twice.
  bool superseded = false;
  // Its task's last attempt, which the parent ended (failed or canceled: its agent lost, say)
  // without this child's result, though the child succeeded: its work was done all the same.
  bool given_up = false;
  // What the timeline and tables call it: the package and the value of the parameter that best
  // tells it from its siblings of the same package ("load-region eu"), else ChildLabel.
  std::string label;
  // The execution's message, then the messages of its OnError events, without repeats: the
  // first kMaxErrorsPerExecution, and how many more there are.
  std::vector<std::string> errors;
  int errors_omitted = 0;
  std::vector<ChildNode> children;
};

struct Overview {
  ExecutionRow execution;  // with parameters
  std::vector<TaskSummary> tasks;
  std::vector<std::string> errors;  // as ChildNode::errors, for the execution itself
  int errors_omitted = 0;
  std::vector<ChildNode> children;
  // Child executions its task runs name that this catalog does not hold: recorded in another
  // (an agent's own catalog).
  int children_elsewhere = 0;
  DateTime generated_at{};  // "now" for executions still running
};

// "" or, when some children are recorded in another catalog, a sentence that says so (QA: "none"
// under a table of agent children read as if they had not run).
std::string ChildrenElsewhereNote(int children_elsewhere);
// How many child executions the task runs of the tree under `root_id` name that the catalog
// does not hold (an agent recorded them in its own catalog).
Result<int> CountChildrenElsewhere(Catalog& catalog, const std::string& root_id);

// The overview's message for a task: its own, or when that is empty, its last earlier attempt
// ("attempt 1 on srv1 failed: agent srv1 was lost ...").
std::string TaskMessage(const TaskSummary& task);
// What text and HTML say under a child whose task ran again after it, or whose parent gave its
// attempt up though it succeeded; "" for others.
std::string AttemptNote(const ChildNode& child);

// At most this many errors are kept per execution (the first ones).
inline constexpr int kMaxErrorsPerExecution = 20;
// The errors as text and HTML show them: with a last line saying how many more there are and
// how to list them, when some were omitted.
std::vector<std::string> ErrorsToShow(const std::vector<std::string>& errors, int omitted,
                                      const std::string& execution_id);

// Reads the execution's task runs, errors and the whole tree of its child executions.
Result<Overview> BuildOverview(Catalog& catalog, ExecutionRow execution, DateTime now);

// ---- Shared by the renderers ------------------------------------------------------------------

// "agent-a", or "local" for an execution run in this process or a child process of it.
std::string AgentLabel(const ExecutionRow& execution);
// From start to end, or to `now` while running; never negative.
std::chrono::nanoseconds Elapsed(DateTime started, const std::optional<DateTime>& ended,
                                 DateTime now);
// Whether the end of something not running is unknown: an execution (or its task) whose process
// was killed (MarkIfProcessGone) recorded none.
bool EndUnknown(std::string_view status, const std::optional<DateTime>& ended);
// A duration as reports show it: "1.2 s", "3.4 s so far" while running, "-" when EndUnknown.
std::string DurationLabel(std::string_view status, DateTime started,
                          const std::optional<DateTime>& ended, DateTime now);
// "2026-11-26 03:04:05" (UTC), "-" for nullopt.
std::string ShortDateTime(const std::optional<DateTime>& t);
// A short label for a child: its package and the value of its first non-sensitive parameter,
// "load-region eu".
std::string ChildLabel(const ExecutionRow& execution);
// The first line of `text`, cut to at most `max_chars` characters (UTF-8 aware) with "…" when
// anything was left out.
std::string Abbreviate(std::string_view text, size_t max_chars);
// Every child in the tree, depth first.
int CountChildren(const std::vector<ChildNode>& children);

}  // namespace fanout::report
