// Gathering the All Executions and Overview reports from a Catalog (see report.h). Everything is
// read through the Catalog interface; filters it does not offer are applied here.
#include "report/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <type_traits>

#include "catalog/postgres_catalog.h"
#include "catalog/spool.h"
#include "catalog/sqlite_catalog.h"
#include "common/util.h"

namespace fanout::report {
namespace {

// Windows of newest executions read by ListExecutions and FindExecution: the first is a
// multiple of the wanted rows, then it grows until enough match or this many were read.
constexpr int kMaxScan = 200000;
// Deeper child trees than this are cut (a cycle in a damaged catalog must not recurse forever).
constexpr int kMaxDepth = 32;

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// The execution's message (unless it succeeded), then its OnError events' messages, each once,
// at most kMaxErrorsPerExecution of them; `omitted` counts the other distinct ones.
// The engine's closing "package P failed: M" repeats M, so it is dropped when M is listed.
std::vector<std::string> Errors(const ExecutionRow& execution, const std::vector<Event>& events,
                                int& omitted) {
  std::vector<std::string> errors;
  std::set<std::string> beyond;
  auto add = [&](std::string_view text) {
    std::string message = Trim(text);
    if (message.empty() || std::find(errors.begin(), errors.end(), message) != errors.end()) return;
    std::string_view inner = PackageFailedReason(message, execution.package);
    if (!inner.empty() && std::find(errors.begin(), errors.end(), inner) != errors.end()) return;
    if (static_cast<int>(errors.size()) >= kMaxErrorsPerExecution) {
      beyond.insert(std::move(message));
      return;
    }
    errors.push_back(std::move(message));
  };
  if (execution.status != "succeeded" && execution.status != "running") add(execution.message);
  for (const Event& event : events) {
    // A task's event names its task, as the execution's message does ("load: exit code 3").
    add(event.source_id.empty() || event.source.empty() ? event.message
                                                        : event.source + ": " + event.message);
  }
  omitted = static_cast<int>(beyond.size());
  return errors;
}

// Task runs grouped by task path, in the order the tasks first started.
std::vector<TaskSummary> SummarizeTasks(const std::vector<TaskRunRow>& runs) {
  std::vector<TaskSummary> tasks;
  std::map<std::string, size_t> index;
  std::map<std::string, int> last_attempt;
  for (const TaskRunRow& run : runs) {
    auto [it, inserted] = index.try_emplace(run.task_path, tasks.size());
    if (inserted) {
      TaskSummary summary;
      summary.task_path = run.task_path;
      summary.started_at = run.started_at;
      tasks.push_back(std::move(summary));
    }
    TaskSummary& task = tasks[it->second];
    task.started_at = std::min(task.started_at, run.started_at);
    int& last = last_attempt[run.task_path];
    if (run.attempt < last) continue;
    last = run.attempt;
    task.attempts = std::max(task.attempts, run.attempt);
    task.task_type = run.task_type;
    task.status = run.status;
    task.ended_at = run.ended_at;
    task.agent = run.agent;
    task.child_execution_id = run.child_execution_id;
    task.message = run.message;
  }
  for (const TaskRunRow& run : runs) {
    if (run.attempt < last_attempt[run.task_path]) {
      tasks[index[run.task_path]].earlier_attempts.push_back(run);
    }
  }
  auto by_attempt = [](const TaskRunRow& a, const TaskRunRow& b) { return a.attempt < b.attempt; };
  for (TaskSummary& task : tasks) {
    std::stable_sort(task.earlier_attempts.begin(), task.earlier_attempts.end(), by_attempt);
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const TaskSummary& a, const TaskSummary& b) {
    return a.started_at < b.started_at;
  });
  return tasks;
}

// A parameter that is sensitive, or holds a secret of its parent's (masked when recorded): it
// tells a child apart by nothing but "***".
bool Masked(const ParameterValue& value) {
  return value.sensitive || value.value.find("***") != std::string::npos;
}

// Labels children after the parameter whose values differ the most between siblings of the same
// package (the region of a load-region child), so that the labels tell them apart.
void LabelSiblings(std::vector<ChildNode>& children) {
  std::map<std::string, std::vector<ChildNode*>> by_package;
  for (ChildNode& child : children) by_package[child.execution.package].push_back(&child);
  for (auto& [package, siblings] : by_package) {
    std::string best;
    size_t best_distinct = 1;
    if (siblings.size() > 1) {
      std::map<std::string, std::set<std::string>> values;
      for (const ChildNode* child : siblings) {
        for (const auto& [name, value] : child->execution.parameters) {
          if (!Masked(value)) values[name].insert(value.value);
        }
      }
      for (const auto& [name, distinct] : values) {
        if (distinct.size() > best_distinct) {
          best = name;
          best_distinct = distinct.size();
        }
      }
    }
    for (ChildNode* child : siblings) {
      auto it =
          best.empty() ? child->execution.parameters.end() : child->execution.parameters.find(best);
      child->label = it == child->execution.parameters.end() || it->second.value.empty()
                         ? ChildLabel(child->execution)
                         : package + " " + Abbreviate(it->second.value, 24);
    }
  }
}

// An execution's whole tree, read in four queries whatever its size.
struct Tree {
  std::map<std::string, std::vector<ExecutionRow>> children;  // parent id -> them, by start
  std::map<std::string, std::vector<TaskRunRow>> runs;        // execution id -> its task runs
  std::map<std::string, std::vector<Event>> errors;           // execution id -> its OnErrors
};

Result<Tree> ReadTree(Catalog& catalog, const std::string& root_id) {
  Tree tree;
  ASSIGN_OR_RETURN(std::vector<ExecutionRow> below, catalog.ListDescendantExecutions(root_id));
  for (ExecutionRow& row : below) tree.children[row.parent_id].push_back(std::move(row));
  ASSIGN_OR_RETURN(std::vector<TaskRunRow> runs, catalog.ListTreeTaskRuns(root_id));
  for (TaskRunRow& run : runs) tree.runs[run.execution_id].push_back(std::move(run));
  EventQuery query;
  query.execution_id = root_id;
  query.with_descendants = true;
  query.types = {EventType::kOnError};
  ASSIGN_OR_RETURN(std::vector<Event> errors, catalog.ListEvents(query));
  for (Event& event : errors) tree.errors[event.execution_id].push_back(std::move(event));
  return tree;
}

std::vector<ChildNode> Children(Tree& tree, const std::string& parent_id,
                                std::set<std::string>& visited, int depth) {
  std::map<std::string, const TaskRunRow*> task_of;
  std::map<std::string, int> last_attempt;
  for (const TaskRunRow& run : tree.runs[parent_id]) {
    if (!run.child_execution_id.empty()) task_of[run.child_execution_id] = &run;
    int& last = last_attempt[run.task_path];
    last = std::max(last, run.attempt);
  }
  std::vector<ChildNode> children;
  for (ExecutionRow& row : tree.children[parent_id]) {
    if (!visited.insert(row.id).second) continue;
    ChildNode node;
    node.execution = std::move(row);
    MarkIfProcessGone(node.execution);
    if (auto it = task_of.find(node.execution.id); it != task_of.end()) {
      node.task_path = it->second->task_path;
      node.attempt = it->second->attempt;
      node.superseded = node.attempt < last_attempt[node.task_path];
      const std::string& ended = it->second->status;
      node.given_up = !node.superseded && node.execution.status == "succeeded" &&
                      (ended == "failed" || ended == "canceled");
    }
    node.errors = Errors(node.execution, tree.errors[node.execution.id], node.errors_omitted);
    if (depth + 1 < kMaxDepth) node.children = Children(tree, node.execution.id, visited, depth + 1);
    children.push_back(std::move(node));
  }
  LabelSiblings(children);
  return children;
}

}  // namespace

bool ShowsChild(size_t index, const ChildNode& child) {
  return index < kShownChildren || child.execution.status != "succeeded" || child.superseded ||
         child.given_up;
}

std::string TaskMessage(const TaskSummary& task) {
  if (!task.message.empty() || task.earlier_attempts.empty()) return task.message;
  const TaskRunRow& run = task.earlier_attempts.back();
  return fmt::format("attempt {}{} {}{}", run.attempt,
                     run.agent.empty() ? "" : " on " + run.agent, run.status,
                     run.message.empty() ? "" : ": " + run.message);
}

std::string AttemptNote(const ChildNode& child) {
  if (child.given_up) {
    return fmt::format("attempt {} of its task, which its parent gave up on: this child "
                       "succeeded all the same",
                       child.attempt);
  }
  if (!child.superseded) return "";
  const std::string& status = child.execution.status;
  return fmt::format("attempt {} of its task, which ran again{}", child.attempt,
                     status == "succeeded" ? ": this child's work may have been done twice"
                     : status == "running" ? ": it may still be running there"
                                           : "");
}

std::string CatalogSpec(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("FANOUT_CATALOG"); env != nullptr && *env != '\0') return env;
  return "sqlite:fanout.db";
}

std::string DisplayCatalogSpec(const std::string& spec) {
  return catalog::RedactConnectionString(spec);
}

std::string CatalogProblem(const std::string& spec, const std::string& message) {
  const std::string display = DisplayCatalogSpec(spec);
  auto file = CatalogSqlitePath(spec);
  // SQLite's words name neither the user nor the fix (QA: "reading the schema version: attempt
  // to write a readonly database" for a root-owned file opened by another user).
  const std::string hint =
      message.find("readonly database") != std::string::npos
          ? "; this user may not write the catalog file, its -wal and -shm files or its folder "
            "(their owner and mode, or a read-only file system): run as their owner, or give "
            "this user write access"
          : "";
  if (message.find(display) != std::string::npos ||
      (file.ok() && !file->empty() && message.find("'" + *file + "'") != std::string::npos)) {
    return message + hint;
  }
  return "catalog " + display + ": " + message + hint;
}

namespace {

// Opens a backend made with existing_catalog_only: one with no tables yet (a run is creating
// them now, or none has run) is no catalog yet, null.
// A PostgreSQL server that answers and refuses (a wrong password, SSL it does not offer) is no
// outage: said as a failed precondition, so that `logs --follow` does not wait for it for ever.
template <typename Backend>
Result<std::unique_ptr<Catalog>> OpenExisting(std::unique_ptr<Backend> catalog) {
  Status opened = catalog->Open();
  if constexpr (std::is_same_v<Backend, catalog::PostgresCatalog>) {
    if (catalog->Refuses(opened)) return FailedPrecondition(opened.message());
  }
  if (!opened.ok() && catalog->found_empty()) return std::unique_ptr<Catalog>();
  RETURN_IF_ERROR(opened);
  return std::unique_ptr<Catalog>(std::move(catalog));
}

}  // namespace

// Reading creates nothing: not the tables in a PostgreSQL database (a reader's role may only
// read), nor a catalog in another application's SQLite file.
Result<std::unique_ptr<Catalog>> OpenCatalogToRead(const std::string& spec,
                                                   catalog::SqliteCatalogOptions::Guest guest) {
  ASSIGN_OR_RETURN(std::string path, CatalogSqlitePath(spec));
  if (path.empty()) {
    return OpenExisting(
        std::make_unique<catalog::PostgresCatalog>(spec, /*existing_catalog_only=*/true));
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::unique_ptr<Catalog>();
  catalog::SqliteCatalogOptions options;
  options.existing_catalog_only = true;
  options.guest = guest;
  return OpenExisting(std::make_unique<catalog::SqliteCatalog>(path, options));
}

Result<std::vector<ExecutionSummary>> ListExecutions(Catalog& catalog,
                                                     const ExecutionsQuery& query) {
  const size_t limit = static_cast<size_t>(std::max(query.limit, 1));
  const bool filtered = !query.include_children || !query.package.empty() || !query.status.empty();
  int window = filtered ? std::max(query.limit * 8, 1000) : static_cast<int>(limit);
  std::vector<ExecutionRow> picked;
  for (;;) {
    ASSIGN_OR_RETURN(std::vector<ExecutionRow> rows, catalog.ListExecutions(window));
    const bool exhausted = rows.size() < static_cast<size_t>(window);
    bool past_since = false;
    picked.clear();
    for (ExecutionRow& row : rows) {
      if (query.since && row.started_at < *query.since) {
        past_since = true;  // newest first: every later row is older still
        break;
      }
      if (!query.include_children && !row.parent_id.empty()) continue;
      if (!query.package.empty() && row.package != query.package) continue;
      MarkIfProcessGone(row);
      if (!query.status.empty() && row.status != query.status) continue;
      picked.push_back(std::move(row));
      if (picked.size() >= limit) break;
    }
    if (picked.size() >= limit || exhausted || past_since || window >= kMaxScan) break;
    window = std::min(window * 8, kMaxScan);
  }
  std::vector<std::string> ids;
  ids.reserve(picked.size());
  for (const ExecutionRow& row : picked) ids.push_back(row.id);
  ASSIGN_OR_RETURN(auto child_counts, catalog.CountChildren(ids));
  std::vector<ExecutionSummary> summaries;
  summaries.reserve(picked.size());
  for (ExecutionRow& row : picked) {
    auto it = child_counts.find(row.id);
    int children = it == child_counts.end() ? 0 : it->second;
    summaries.push_back({std::move(row), children});
  }
  return summaries;
}

namespace {

bool LooksLikeDate(std::string_view text) {
  return text.size() >= 10 && text[4] == '-' && text[7] == '-';
}

}  // namespace

Result<std::chrono::milliseconds> ParseAge(std::string_view text) {
  if (LooksLikeDate(text)) {
    return InvalidArgument(fmt::format("'{}' is a date; give an age back from now instead, such "
                                       "as 30d (days), 12h or 90m",
                                       text));
  }
  if (!text.empty() && (std::isdigit(static_cast<unsigned char>(text.back())) || text.back() == '.')) {
    return InvalidArgument(fmt::format("'{}' has no unit; write the age with one, e.g. {}d (days), "
                                       "{}h or {}m",
                                       text, text, text, text));
  }
  auto duration = ParseDuration(text);
  if (!duration.ok() && duration.status().code() == Code::kResourceExhausted) {
    return InvalidArgument(fmt::format("'{}' is too long an age; the longest is 36500d (100 years)",
                                       text));
  }
  if (!duration.ok()) {
    return InvalidArgument(fmt::format("'{}' is not an age back from now such as 30d, 12h or 90m",
                                       text));
  }
  return *duration;
}

std::vector<std::string> ErrorsToShow(const std::vector<std::string>& errors, int omitted,
                                      const std::string& execution_id) {
  std::vector<std::string> shown = errors;
  if (omitted > 0) {
    shown.push_back(fmt::format("... and {} more; `fanout logs --execution {} --event OnError` "
                                "lists every one",
                                omitted, execution_id));
  }
  return shown;
}

Result<DateTime> ParseSince(std::string_view text, DateTime now) {
  if (LooksLikeDate(text)) return ParseDateTime(text);
  auto age = ParseAge(text);
  if (!age.ok()) {
    return InvalidArgument(fmt::format(
        "{}; or a date (2026-11-26, 2026-11-26T03:00:00Z)", age.status().message()));
  }
  return now - std::chrono::duration_cast<DateTime::duration>(*age);
}

bool MarkIfProcessGone(ExecutionRow& row, bool* spooled) {
  if (row.status != "running" || row.ended_at || row.pid <= 0 || row.process.empty() ||
      row.host != HostName() || ProcessIdentity(row.pid) == row.process) {
    return false;
  }
  // Ended while the catalog could not take its last rows: they are on their way, not lost.
  if (std::string spool = catalog::SpoolFileHolding(catalog::DefaultSpoolDir(), row.id);
      !spool.empty()) {
    row.message = fmt::format(
        "its fanout process (pid {}) on {} has ended; its last rows wait in the spool file {} "
        "for the catalog, and the next `fanout run` that records to this catalog delivers them",
        row.pid, row.host, spool);
    if (spooled != nullptr) *spooled = true;
    return false;
  }
  row.status = "abandoned";
  row.message = fmt::format(
      "its fanout process (pid {}) on {} ended without recording an end: it was killed "
      "(SIGKILL, out of memory), the machine restarted, or its last rows could not be written "
      "(a full disk: that run said so on its stderr)",
      row.pid, row.host);
  return true;
}

Result<ExecutionRow> FindExecution(Catalog& catalog, const std::string& id) {
  if (id.empty()) return InvalidArgument("no execution id given");
  ASSIGN_OR_RETURN(std::optional<ExecutionRow> exact, catalog.GetExecution(id));
  if (exact) return std::move(*exact);
  if (id.size() < kMinIdFragment) {
    return NotFound(fmt::format(
        "no execution '{}'; give the full id or at least {} of its first or last characters", id,
        kMinIdFragment));
  }
  const std::string fragment = AsciiLower(id);
  ASSIGN_OR_RETURN(std::vector<ExecutionRow> rows, catalog.ListExecutions(kMaxScan));
  std::vector<std::string> matches;
  for (const ExecutionRow& row : rows) {
    std::string candidate = AsciiLower(row.id);
    if (StartsWith(candidate, fragment) || candidate.ends_with(fragment)) {
      matches.push_back(row.id);
    }
  }
  if (matches.empty()) return NotFound(fmt::format("no execution '{}'", id));
  if (matches.size() > 1) {
    std::string list;
    for (size_t i = 0; i < matches.size() && i < 5; ++i) list += (i ? ", " : "") + matches[i];
    if (matches.size() > 5) list += fmt::format(" and {} more", matches.size() - 5);
    return InvalidArgument(fmt::format("'{}' matches {} executions ({}); give more of the id", id,
                                       matches.size(), list));
  }
  ASSIGN_OR_RETURN(std::optional<ExecutionRow> found, catalog.GetExecution(matches.front()));
  if (!found) return NotFound(fmt::format("no execution '{}'", id));  // deleted meanwhile
  return std::move(*found);
}

std::string ChildrenElsewhereNote(int children_elsewhere) {
  if (children_elsewhere == 0) return "";
  return fmt::format("{} child execution{} that the tasks name {} recorded in another catalog, "
                     "an agent's own: give every agent this catalog to see the whole tree here",
                     children_elsewhere, children_elsewhere == 1 ? "" : "s",
                     children_elsewhere == 1 ? "is" : "are");
}

// The child executions that agents ran for `runs`. Only those can be in another catalog: a
// `package` task's child is recorded in its parent's, or, when it failed before it started,
// nowhere, though the task run names the id it would have had (QA: such children were said to
// be in "an agent's own" catalog).
std::set<std::string> AgentChildren(const std::vector<TaskRunRow>& runs) {
  std::set<std::string> named;
  for (const TaskRunRow& run : runs) {
    if (!run.agent.empty() && !run.child_execution_id.empty()) {
      named.insert(run.child_execution_id);
    }
  }
  return named;
}

Result<int> CountChildrenElsewhere(Catalog& catalog, const std::string& root_id) {
  ASSIGN_OR_RETURN(std::vector<TaskRunRow> runs, catalog.ListTreeTaskRuns(root_id));
  ASSIGN_OR_RETURN(std::vector<ExecutionRow> below, catalog.ListDescendantExecutions(root_id));
  std::set<std::string> named = AgentChildren(runs);
  for (const ExecutionRow& row : below) named.erase(row.id);
  return static_cast<int>(named.size());
}

Result<Overview> BuildOverview(Catalog& catalog, ExecutionRow execution, DateTime now) {
  Overview overview;
  overview.generated_at = now;
  bool gone = MarkIfProcessGone(execution);
  ASSIGN_OR_RETURN(Tree tree, ReadTree(catalog, execution.id));
  std::vector<TaskRunRow>& runs = tree.runs[execution.id];
  // An execution that ended (or whose process is gone) runs nothing: a task still `running` in
  // the catalog went with a killed process (one an agent ended for it, say) and never will end.
  if (gone || execution.ended_at) {
    for (TaskRunRow& run : runs) {
      if (run.status != "running") continue;
      run.status = "abandoned";
    }
  }
  overview.tasks = SummarizeTasks(runs);
  overview.errors = Errors(execution, tree.errors[execution.id], overview.errors_omitted);
  std::set<std::string> visited = {execution.id};
  overview.children = Children(tree, execution.id, visited, 0);
  std::set<std::string> named = AgentChildren(runs);  // those not among the children read
  for (const ChildNode& child : overview.children) named.erase(child.execution.id);
  overview.children_elsewhere = static_cast<int>(named.size());
  overview.execution = std::move(execution);
  return overview;
}

std::string TaskLine::Summary() const {
  return fmt::format("{}: {} (--json lists each)", Counted(count, "more iteration"), states);
}

std::vector<TaskLine> TaskLines(const std::vector<TaskSummary>& tasks) {
  // "load[12]/region-job" -> "load[*]/region-job": the same task in every iteration.
  auto pattern_of = [](const std::string& path) {
    std::string pattern;
    for (size_t i = 0; i < path.size(); ++i) {
      size_t j = i + 1;
      while (path[i] == '[' && j < path.size() && std::isdigit(static_cast<unsigned char>(path[j]))) ++j;
      if (path[i] == '[' && j > i + 1 && j < path.size() && path[j] == ']') {
        pattern += "[*]";
        i = j;
      } else {
        pattern += path[i];
      }
    }
    return pattern;
  };
  std::vector<std::string> patterns;
  std::map<std::string, int> total;
  for (const TaskSummary& t : tasks) {
    patterns.push_back(pattern_of(t.task_path));
    if (patterns.back() != t.task_path) ++total[patterns.back()];
  }
  std::vector<TaskLine> lines;
  std::map<std::string, int> seen;
  std::map<std::string, int> notable_seen;  // beyond the first: not succeeded, or ran again
  std::map<std::string, size_t> rest_line;
  std::map<std::string, std::map<std::string, int>> rest_states;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string& pattern = patterns[i];
    auto counted = total.find(pattern);
    // Cut only what saves lines: more than one iteration beyond those shown. Of the rest, as
    // many again that did not succeed or ran again are shown (QA: 40 children lost with their
    // agent and run again were counted among "1475 succeeded", nowhere else in the text).
    bool show = counted == total.end() || counted->second <= kShownIterations + 1 ||
                ++seen[pattern] <= kShownIterations;
    if (!show && (tasks[i].status != "succeeded" || tasks[i].attempts > 1)) {
      show = ++notable_seen[pattern] <= kShownIterations;
    }
    if (show) {
      lines.push_back({&tasks[i], "", "", 0, ""});
      continue;
    }
    auto [it, first] = rest_line.try_emplace(pattern, lines.size());
    if (first) lines.push_back({nullptr, pattern, tasks[i].task_type, 0, ""});
    ++lines[it->second].count;
    ++rest_states[pattern][tasks[i].status];
  }
  for (auto& [pattern, index] : rest_line) {
    std::string states;
    for (const auto& [state, n] : rest_states[pattern]) {
      states += fmt::format("{}{} {}", states.empty() ? "" : ", ", n, state);
    }
    lines[index].states = std::move(states);
  }
  return lines;
}

std::string AgentLabel(const ExecutionRow& execution) {
  return execution.agent.empty() ? "local" : execution.agent;
}

std::chrono::nanoseconds Elapsed(DateTime started, const std::optional<DateTime>& ended,
                                 DateTime now) {
  auto d = ended.value_or(now) - started;
  return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(d),
                  std::chrono::nanoseconds::zero());
}

bool EndUnknown(std::string_view status, const std::optional<DateTime>& ended) {
  return !ended && status != "running";
}

std::string DurationLabel(std::string_view status, DateTime started,
                          const std::optional<DateTime>& ended, DateTime now) {
  if (EndUnknown(status, ended)) return "-";
  std::string d = FormatDuration(Elapsed(started, ended, now));
  return ended ? d : d + " so far";
}

std::string ShortDateTime(const std::optional<DateTime>& t) {
  if (!t) return "-";
  std::string iso = FormatDateTime(*t);  // 2026-11-26T03:04:05.123456Z
  return iso.substr(0, 10) + " " + iso.substr(11, 8);
}

std::string ChildLabel(const ExecutionRow& execution) {
  // A flag says less than a name: of `fail: true` and `region: eu`, "child eu" (SSIS QA: it
  // read "child true").
  const ParameterValue* shown = nullptr;
  for (const auto& [name, value] : execution.parameters) {
    if (Masked(value) || value.value.empty()) continue;
    const bool flag = value.value == "true" || value.value == "false";
    if (shown == nullptr || (!flag && (shown->value == "true" || shown->value == "false"))) {
      shown = &value;
    }
  }
  return shown == nullptr ? execution.package
                          : execution.package + " " + Abbreviate(shown->value, 24);
}

std::string Abbreviate(std::string_view text, size_t max_chars) {
  size_t newline = text.find_first_of("\r\n");
  bool cut = newline != std::string_view::npos;
  if (cut) text = text.substr(0, newline);
  // Counts characters as UTF-8 lead bytes; `end` is where character max_chars - 1 starts, so
  // that the "…" fits within max_chars.
  size_t chars = 0, end = text.size();
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;
    if (chars == max_chars - 1 && end == text.size()) end = i;
    if (++chars > max_chars) {
      cut = true;
      break;
    }
  }
  if (!cut) return std::string(text);
  return std::string(text.substr(0, std::min(end, text.size()))) + "…";
}

int CountChildren(const std::vector<ChildNode>& children) {
  int n = 0;
  for (const ChildNode& child : children) n += 1 + CountChildren(child.children);
  return n;
}

}  // namespace fanout::report
