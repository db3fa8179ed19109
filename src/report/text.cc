// The reports as aligned text tables for a terminal (see render.h).
#include <fmt/format.h>

#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "common/util.h"
#include "report/render.h"

namespace fanout::report {
namespace {

// Characters, not bytes, so that "…" and "└─" do not throw the columns off.
size_t DisplayWidth(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Columns padded to their widest cell; a note is a free line printed under the row before it.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) { lines_.push_back({std::move(header), ""}); }
  void Row(std::vector<std::string> cells) { lines_.push_back({std::move(cells), ""}); }
  void Note(std::string text) { lines_.push_back({{}, std::move(text)}); }

  std::string Render(std::string_view indent) const {
    std::vector<size_t> widths;
    for (const Line& line : lines_) {
      if (widths.size() < line.cells.size()) widths.resize(line.cells.size(), 0);
      for (size_t i = 0; i < line.cells.size(); ++i) {
        widths[i] = std::max(widths[i], DisplayWidth(line.cells[i]));
      }
    }
    std::string out;
    for (const Line& line : lines_) {
      std::string text(indent);
      if (line.cells.empty()) {
        text += line.note;
      } else {
        for (size_t i = 0; i < line.cells.size(); ++i) {
          text += line.cells[i];
          if (i + 1 < line.cells.size()) {
            text.append(widths[i] - DisplayWidth(line.cells[i]) + 2, ' ');
          }
        }
      }
      while (!text.empty() && text.back() == ' ') text.pop_back();
      out += text;
      out += '\n';
    }
    return out;
  }

 private:
  struct Line {
    std::vector<std::string> cells;
    std::string note;
  };
  std::vector<Line> lines_;
};

std::string Dash(const std::string& s) { return s.empty() ? "-" : s; }

// "03:04:05" of a time, UTC.
std::string ClockTime(DateTime t) { return FormatDateTime(t).substr(11, 8); }

// "6: 5 succeeded, 1 failed" in a fixed order of states, then any others.
template <typename T, typename StatusOf>
std::string StatusCounts(const std::vector<T>& items, StatusOf status_of) {
  std::map<std::string, int> counts;
  int total = 0;
  auto count = [&](auto& self, const std::vector<T>& list) -> void {
    for (const T& item : list) {
      ++counts[status_of(item)];
      ++total;
      if constexpr (std::is_same_v<T, ChildNode>) self(self, item.children);
    }
  };
  count(count, items);
  std::string text = std::to_string(total);
  std::string sep = ": ";
  for (const char* state : {"succeeded", "failed", "canceled", "running", "skipped"}) {
    if (auto it = counts.find(state); it != counts.end()) {
      text += sep + std::to_string(it->second) + " " + state;
      sep = ", ";
      counts.erase(it);
    }
  }
  for (const auto& [state, n] : counts) {
    text += sep + std::to_string(n) + " " + state;
    sep = ", ";
  }
  return text;
}

// `prefix`: what goes before the tree connectors at this level ("│  " below a sibling that has
// more after it); null for the top level, which has no connectors.
void AddChildRows(TextTable& table, const std::vector<ChildNode>& children, const std::string* prefix,
                  DateTime now) {
  size_t hidden = 0, last_shown = children.size();
  for (size_t i = 0; i < children.size(); ++i) {
    if (ShowsChild(i, children[i])) last_shown = i;
  }
  const bool note_follows = last_shown + 1 < children.size();  // "... N more" closes the level
  for (size_t i = 0; i < children.size(); ++i) {
    const ChildNode& child = children[i];
    const ExecutionRow& e = child.execution;
    if (!ShowsChild(i, child)) {
      ++hidden;
      continue;
    }
    const bool last = i == last_shown && !note_follows;
    std::string name = child.label;
    std::string below;  // the prefix of what hangs under this row
    if (prefix != nullptr) {
      name = *prefix + (last ? "└─ " : "├─ ") + child.label;
      below = *prefix + (last ? "   " : "│  ");
    }
    table.Row({name, Dash(child.task_path), AgentLabel(e), e.status, ClockTime(e.started_at),
               DurationLabel(e.status, e.started_at, e.ended_at, now), e.id});
    if (std::string note = AttemptNote(child); !note.empty()) table.Note(below + "  ~ " + note);
    for (const std::string& error : ErrorsToShow(child.errors, child.errors_omitted, e.id)) {
      table.Note(below + "  ! " + Abbreviate(error, 120));
    }
    AddChildRows(table, child.children, &below, now);
  }
  if (hidden > 0) {
    table.Note(fmt::format("{}{}... {} more that succeeded (--json lists each)",
                           prefix != nullptr ? *prefix : "", prefix != nullptr ? "└─ " : "",
                           hidden));
  }
}

}  // namespace

std::string ExecutionsText(const std::vector<ExecutionSummary>& executions, DateTime now) {
  std::string out = fmt::format("{} execution{}, newest first (times in UTC)\n", executions.size(),
                                executions.size() == 1 ? "" : "s");
  TextTable table(
      {"ID", "PACKAGE", "HOST", "AGENT", "STATUS", "STARTED", "ENDED", "DURATION", "CHILDREN"});
  for (const ExecutionSummary& s : executions) {
    const ExecutionRow& e = s.execution;
    table.Row({e.id, e.package, Dash(e.host), Dash(e.agent), e.status, ShortDateTime(e.started_at),
               ShortDateTime(e.ended_at), DurationLabel(e.status, e.started_at, e.ended_at, now),
               std::to_string(s.children)});
  }
  return out + table.Render("");
}

std::string OverviewText(const Overview& overview) {
  const ExecutionRow& e = overview.execution;
  const DateTime now = overview.generated_at;
  std::string out = fmt::format("Execution {} (times in UTC)\n", e.id);
  TextTable head(
      {"Package",
       e.package +
           (e.package_sha256.empty() ? "" : "  (sha256 " + e.package_sha256.substr(0, 12) + ")")});
  std::string status = e.status;
  if (e.exit_code) status += fmt::format(", exit code {}", *e.exit_code);
  head.Row({"Status", status});
  head.Row({"Started", ShortDateTime(e.started_at)});
  head.Row({"Ended", e.ended_at
                         ? ShortDateTime(e.ended_at) + "  (" +
                               FormatDuration(Elapsed(e.started_at, e.ended_at, now)) + ")"
                         : EndUnknown(e.status, e.ended_at)
                               ? std::string("-  (unknown)")
                               : "-  (running for " +
                                     FormatDuration(Elapsed(e.started_at, e.ended_at, now)) + ")"});
  // Its process ended with its last rows in a spool file (MarkIfProcessGone; QA: the text
  // said only "running for", a time that kept growing).
  if (e.status == "running" && !e.message.empty()) head.Row({"Note", e.message});
  head.Row(
      {"Host", Dash(e.host) + (e.operator_name.empty() ? "" : ", operator " + e.operator_name)});
  if (!e.agent.empty()) {
    head.Row({"Agent", e.agent + (e.job.empty() ? "" : ", job " + e.job) +
                           (e.run_id.empty() ? "" : ", run " + e.run_id)});
  }
  if (!e.parent_id.empty()) head.Row({"Parent", e.parent_id});
  out += head.Render("  ");

  out += "\nParameters";
  if (e.parameters.empty()) {
    out += ": none\n";
  } else {
    out += "\n";
    TextTable params({"NAME", "VALUE"});
    for (const auto& [name, value] : e.parameters) {
      params.Row({name, value.sensitive ? "***" : Abbreviate(value.value, 100)});
    }
    out += params.Render("  ");
  }

  out += "\nTasks";
  if (overview.tasks.empty()) {
    out += ": none recorded\n";
  } else {
    out +=
        " (" + StatusCounts(overview.tasks, [](const TaskSummary& t) { return t.status; }) + ")\n";
    TextTable tasks({"TASK", "TYPE", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "AGENT",
                     "CHILD EXECUTION", "MESSAGE"});
    for (const TaskLine& line : TaskLines(overview.tasks)) {
      if (line.task == nullptr) {
        tasks.Row({line.pattern, line.task_type, "...", "", "", "", "", "",
                   line.Summary()});
        continue;
      }
      const TaskSummary& t = *line.task;
      tasks.Row({t.task_path, t.task_type, t.status, std::to_string(t.attempts),
                 ClockTime(t.started_at), DurationLabel(t.status, t.started_at, t.ended_at, now),
                 Dash(t.agent), Dash(t.child_execution_id),
                 Abbreviate(TaskMessage(t), 80)});
    }
    out += tasks.Render("  ");
  }

  if (!overview.errors.empty()) {
    out += "\nErrors\n";
    for (const std::string& error : ErrorsToShow(overview.errors, overview.errors_omitted,
                                                 overview.execution.id)) {
      out += "  ! " + Abbreviate(error, 200) + "\n";
    }
  }

  out += "\nChild packages";
  const std::string elsewhere = ChildrenElsewhereNote(overview.children_elsewhere);
  if (overview.children.empty()) {
    out += elsewhere.empty() ? ": none\n" : ": none in this catalog\n";
  } else {
    out += " (" +
           StatusCounts(overview.children, [](const ChildNode& c) { return c.execution.status; }) +
           ")\n";
    TextTable children({"PACKAGE", "TASK", "AGENT", "STATUS", "STARTED", "DURATION", "EXECUTION"});
    AddChildRows(children, overview.children, nullptr, now);
    out += children.Render("  ");
  }
  if (!elsewhere.empty()) out += "  " + elsewhere + "\n";
  return out;
}

}  // namespace fanout::report
