// `fanout logs`: the events in the catalog (SSIS's sysssislog), filtered by execution, event type
// and source, as text or JSON lines; --follow keeps polling for new ones while a run goes on.
#include <fmt/format.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "catalog/log_sinks.h"
#include "cli/cli.h"
#include "common/util.h"
#include "report/report.h"

namespace fanout::cli {
namespace {

constexpr const char* kCommand = "logs";
constexpr int kPageSize = 1000;
constexpr std::chrono::milliseconds kPollInterval{200};
// Lines of each stream of captured output (data_bytes) shown under a text line; --json has all.
constexpr size_t kMaxOutputLines = 20;

struct LogsArgs {
  std::string catalog;
  std::string execution;
  bool children = false;
  std::vector<std::string> events;
  std::string source;
  std::string since;
  int tail = -1;  // -1: every event
  bool follow = false;
  bool json = false;
};

std::atomic<bool> g_stop{false};

void OnStopSignal(int) { g_stop.store(true); }

// SIGINT and SIGTERM end --follow; without SA_RESTART they also cut the poll's sleep short.
void CatchStopSignals() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void SleepInterruptibly(std::chrono::milliseconds d) {
  timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>(d.count() % 1000) * 1000000};
  nanosleep(&ts, nullptr);  // EINTR is the point: a signal ends the wait
}

// "OnError,OnWarning" and repeated flags alike.
bool ParseEventTypes(const std::vector<std::string>& names, std::vector<EventType>& out) {
  for (const std::string& flag : names) {
    size_t begin = 0;
    while (begin <= flag.size()) {
      size_t comma = flag.find(',', begin);
      std::string name =
          flag.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
      begin = comma == std::string::npos ? flag.size() + 1 : comma + 1;
      if (name.empty()) continue;
      auto type = ParseEventName(name);
      if (!type.ok()) {
        std::fprintf(stderr, "fanout %s: --event: %s\n", kCommand, type.status().message().c_str());
        return false;
      }
      out.push_back(*type);
    }
  }
  return true;
}

// Prints events and remembers what it learned about their executions.
class EventPrinter {
 public:
  EventPrinter(Catalog& catalog, bool json, bool name_executions)
      : catalog_(catalog), json_(json), name_executions_(name_executions) {}

  void Print(const Event& event) {
    if (json_) {
      // The jsonl log provider's keys, with the catalog's event id first (to resume from).
      std::string text = catalog::EventJsonLine(event, true);
      std::printf("%s\n", text.c_str());
      return;
    }
    // As the console log provider writes it, with the date, and the execution when several can
    // appear: "2026-11-26 03:04:05 child#4f2a9c1e OnError       load: exit code 1".
    std::string line = report::ShortDateTime(event.ended_at) + " ";
    if (name_executions_) line += ExecutionName(event.execution_id) + " ";
    line += fmt::format("{:<13} ", EventName(event.type));
    // A message's further lines go under the source, as on the console.
    const std::string indent(line.size(), ' ');
    line += event.source;
    if (!event.message.empty()) {
      if (!event.source.empty()) line += ": ";
      line += event.message;
    }
    std::printf("%s\n", IndentFurtherLines(EscapeControls(line), indent).c_str());
    if (!event.data_bytes.empty()) PrintOutput(event.data_bytes);
  }

  void Remember(const ExecutionRow& row) { names_.emplace(row.id, NameOf(row.package, row.id)); }

 private:
  // "package#last-8-characters-of-the-id": short, and accepted by `report overview`.
  static std::string NameOf(const std::string& package, const std::string& id) {
    return package + "#" + (id.size() > 8 ? id.substr(id.size() - 8) : id);
  }

  std::string ExecutionName(const std::string& id) {
    auto it = names_.find(id);
    if (it != names_.end()) return it->second;
    std::string package = "?";
    auto row = catalog_.GetExecution(id);
    if (row.ok() && row->has_value()) package = (*row)->package;
    std::string name = NameOf(package, id);
    names_.emplace(id, name);
    return name;
  }

  // A process task's output holds a "stdout:" and a "stderr:" section; each shows its last
  // kMaxOutputLines lines, since the end of stderr is what explains a failure (a long stdout
  // had hidden it).
  void PrintOutput(const std::string& output) {
    std::vector<std::string_view> lines;
    for (size_t begin = 0; begin < output.size();) {
      size_t end = output.find('\n', begin);
      if (end == std::string::npos) end = output.size();
      lines.push_back(std::string_view(output).substr(begin, end - begin));
      begin = end + 1;
    }
    auto is_header = [](std::string_view line) { return line == "stdout:" || line == "stderr:"; };
    auto print = [](std::string_view line) {
      std::printf("    | %s\n", EscapeControls(line).c_str());
    };
    for (size_t section = 0; section < lines.size();) {
      size_t next = section + 1;
      while (next < lines.size() && !is_header(lines[next])) ++next;
      size_t body = section;
      if (is_header(lines[section])) print(lines[body++]);
      size_t body_end = next;
      while (body_end > body && lines[body_end - 1].empty()) --body_end;  // the gap before stderr:
      size_t shown = body_end - body > kMaxOutputLines ? body_end - kMaxOutputLines : body;
      if (shown > body) {
        std::printf("    | ... %zu earlier line%s (--json shows all)\n", shown - body,
                    shown - body == 1 ? "" : "s");
      }
      for (size_t i = shown; i < body_end; ++i) print(lines[i]);
      section = next;
    }
  }

  Catalog& catalog_;
  bool json_;
  bool name_executions_;
  std::map<std::string, std::string> names_;
};

int Logs(const LogsArgs& args) {
  std::vector<EventType> types;
  if (!ParseEventTypes(args.events, types)) return kExitUsage;
  if (args.children && args.execution.empty()) {
    std::fprintf(stderr, "fanout %s: --children needs --execution ID\n", kCommand);
    return kExitUsage;
  }
  // Following may start before the first run has created the catalog; reading alone must not
  // create one, and refuses one that does not exist (a mistyped --catalog would show nothing).
  // Following rides out a catalog that cannot be reached yet, as it rides out an outage later.
  std::string spec;
  std::unique_ptr<Catalog> catalog;
  if (args.follow) CatchStopSignals();
  std::function<bool()> keep_trying;
  if (args.follow) keep_trying = [] { return !g_stop.load(); };
  if (auto rc = OpenCatalogFor(args.catalog, kCommand, args.follow && args.execution.empty(), spec,
                               catalog, keep_trying)) {
    return *rc;
  }
  if (catalog == nullptr) return CatalogDoesNotExist(kCommand, spec, args.execution);

  std::string root;
  if (!args.execution.empty()) {
    auto execution = report::FindExecution(*catalog, args.execution);
    if (!execution.ok()) {
      const Status& s = execution.status();
      std::fprintf(stderr, "fanout %s: %s%s\n", kCommand,
                   s.code() == Code::kNotFound ? ("catalog " + spec + ": ").c_str() : "",
                   s.message().c_str());
      return s.code() == Code::kNotFound          ? kExitNotFound
             : s.code() == Code::kInvalidArgument ? kExitUsage
                                                  : kExitFailure;
    }
    root = execution->id;
  }

  EventQuery query;
  query.types = types;
  query.source = args.source;
  if (!args.since.empty()) {
    if (auto rc = ParseSinceFor(args.since, kCommand, Now(), query.since)) return *rc;
  }
  query.limit = kPageSize;
  query.execution_id = root;
  query.with_descendants = args.children;
  EventPrinter printer(*catalog, args.json, root.empty() || args.children);
  if (args.children) {
    // The names of the tree's executions in one query, not one per child (more are asked for
    // as they appear).
    auto below = catalog->ListDescendantExecutions(root);
    if (below.ok()) {
      for (const ExecutionRow& row : *below) printer.Remember(row);
    }
  }

  bool tail_pending = args.tail >= 0;
  bool unreadable = false;  // following through a catalog outage: said once, until it answers
  // An error while reading: the end of a plain read; while following, a pause to ride out.
  auto failed = [&](const Status& status) {
    if (!args.follow || !unreadable) {
      std::fprintf(stderr, "fanout %s: reading catalog %s: %s%s\n", kCommand, spec.c_str(),
                   status.message().c_str(), args.follow ? "; still following, retrying" : "");
    }
    unreadable = true;
    return !args.follow;
  };
  for (;;) {
    // Whether the execution had ended is read before the events, so that the last drain below
    // sees every event it wrote.
    bool ended = false;
    std::string gone;  // why the execution will never record its end
    bool spooled = false;  // or why it will only once its spool file is delivered
    if (args.follow && !root.empty()) {
      auto row = catalog->GetExecution(root);
      // One whose process was killed will never record its end; one whose process ended with
      // its last rows in a spool file records it when the next run delivers them (QA: the
      // follow waited for ever).
      ended = row.ok() && row->has_value() && (*row)->ended_at.has_value();
      if (!ended && row.ok() && row->has_value() &&
          (report::MarkIfProcessGone(**row, &spooled) || spooled)) {
        ended = true;
        gone = (*row)->message;
      }
    }
    bool read_all = true;
    if (tail_pending) {
      // The last `--tail` events, printed oldest first; reading goes on after them.
      EventQuery last = query;
      last.newest_first = true;
      last.limit = std::max(args.tail, 1);
      auto events = catalog->ListEvents(last);
      if (!events.ok()) {
        if (failed(events.status())) return kExitFailure;
        read_all = false;
      } else {
        tail_pending = false;
        for (const Event& event : *events) query.after_id = std::max(query.after_id, event.id);
        if (args.tail > 0) {
          for (auto it = events->rbegin(); it != events->rend(); ++it) printer.Print(*it);
        }
        if (!args.follow) {
          std::fflush(stdout);
          return kExitSuccess;
        }
      }
    }
    for (bool more = true; more && read_all;) {
      auto events = catalog->ListEvents(query);
      if (!events.ok()) {
        if (failed(events.status())) return kExitFailure;
        read_all = false;
        break;
      }
      if (unreadable) {
        std::fprintf(stderr, "fanout %s: catalog %s answers again\n", kCommand, spec.c_str());
        unreadable = false;
      }
      for (const Event& event : *events) {
        query.after_id = std::max(query.after_id, event.id);
        printer.Print(event);
      }
      more = static_cast<int>(events->size()) >= kPageSize;
    }
    if (!read_all) ended = false;  // the end is only reached with every event read
    // A reader that went away (`fanout logs --follow | head`) ends the command.
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) return kExitSuccess;
    if (ended && !gone.empty()) {
      // Its last event is an ordinary one: say why nothing more comes.
      std::fprintf(stderr, "fanout %s: execution %s%s: %s\n", kCommand, root.c_str(),
                   spooled ? "" : " is abandoned", gone.c_str());
    }
    if (!args.follow || ended || g_stop.load()) break;
    SleepInterruptibly(kPollInterval);
    if (g_stop.load()) break;
  }
  // Their events are not here: said, as the overview says it (QA: left out silently).
  if (args.children) {
    auto elsewhere = report::CountChildrenElsewhere(*catalog, root);
    if (elsewhere.ok() && *elsewhere > 0) {
      std::fprintf(stderr, "fanout %s: %s\n", kCommand,
                   report::ChildrenElsewhereNote(*elsewhere).c_str());
    }
  }
  return kExitSuccess;
}

}  // namespace

Command AddLogsCommand(CLI::App& app) {
  auto args = std::make_shared<LogsArgs>();
  CLI::App* cmd = app.add_subcommand("logs", "Show the events in the catalog; --follow a run");
  cmd->add_option("--execution", args->execution,
                  "Only this execution's events: its id, or its last 8 characters (as "
                  "`p#1f2e3d4c` shows them; its first ones are shared by executions started "
                  "within a minute)");
  cmd->add_flag("--children", args->children,
                "With --execution: its child executions' events too, all the way down");
  cmd->add_option("--event", args->events,
                  "Only events of this type: OnError, OnWarning, OnInformation, OnPreExecute, "
                  "OnPostExecute, OnTaskFailed, OnProgress, OnVariableValueChanged (repeatable, "
                  "or comma-separated)");
  cmd->add_option("--source", args->source, "Only events from this task path (or package)");
  cmd->add_option("--since", args->since,
                  "Only events from then on: a duration back from now (90m, 24h, 7d) or a date "
                  "(2026-11-26, 2026-11-26T03:00:00Z)");
  cmd->add_option("--tail", args->tail,
                  "Only the last N events (of those the other options select); with --follow, "
                  "then the new ones (--tail 0: only the new ones)")
      ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  cmd->add_flag("--follow,-f", args->follow,
                "Keep printing new events as they arrive, until Ctrl-C; with --execution, until "
                "that execution ends");
  cmd->add_flag("--json", args->json, "One JSON object per line, as the jsonl log provider");
  cmd->add_option("--catalog", args->catalog,
                  "The catalog to read: sqlite:PATH or postgresql://USER@HOST/DB (default sqlite:fanout.db, or "
                  "$FANOUT_CATALOG)");
  cmd->footer(
      "Times are UTC. Exit codes: 0 ok (also when --follow is stopped by Ctrl-C or SIGTERM),\n"
      "1 the catalog could not be read, 4 execution or catalog not found, 6 usage error.");
  return {cmd, [args] { return Logs(*args); }};
}

}  // namespace fanout::cli
