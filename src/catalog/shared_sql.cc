// The decisions both catalog backends share (shared_sql.h): which executions a prune deletes.
#include "catalog/shared_sql.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <unordered_map>

#include "common/util.h"

namespace fanout::catalog {

namespace {
// How long a parent missing from the catalog may still be running with its rows in a spool:
// longer than a night's run, the longest a parent is expected to go on.
constexpr auto kSpooledParentMargin = std::chrono::hours(24);
}  // namespace

PrunePlan PlanPrune(const std::vector<ExecutionRow>& all, DateTime cutoff,
                    const Catalog::IsLive& is_live) {
  std::unordered_map<std::string, const ExecutionRow*> by_id;
  std::unordered_map<std::string, std::vector<const ExecutionRow*>> children;
  for (const ExecutionRow& row : all) by_id[row.id] = &row;
  for (const ExecutionRow& row : all) {
    if (!row.parent_id.empty() && by_id.count(row.parent_id) != 0) {
      children[row.parent_id].push_back(&row);
    }
  }
  PrunePlan plan;
  std::set<std::string> seen;  // a cycle of parent ids is walked once
  for (const ExecutionRow& top : all) {
    const bool orphan = !top.parent_id.empty() && by_id.count(top.parent_id) == 0;
    if (!(top.parent_id.empty() || orphan) || top.started_at >= cutoff) continue;
    if (orphan) {
      // Its parent is elsewhere (another catalog) or not written yet: rows still in a spool,
      // the parent perhaps running. Its tree goes with what the parent's id says of its start,
      // a day earlier than the cutoff (QA: a prune took the finished children of a parent
      // whose rows were spooled, and they were lost).
      auto parent_started = ExecutionIdTime(top.parent_id);
      if (parent_started && *parent_started >= cutoff - kSpooledParentMargin) continue;
    }
    std::vector<std::string> tree;
    bool live = false;
    std::vector<const ExecutionRow*> pending = {&top};
    while (!pending.empty()) {
      const ExecutionRow* row = pending.back();
      pending.pop_back();
      if (!seen.insert(row->id).second) continue;
      tree.push_back(row->id);
      live = live || is_live(*row);
      auto below = children.find(row->id);
      if (below != children.end()) pending.insert(pending.end(), below->second.begin(), below->second.end());
    }
    if (live) {
      ++plan.kept_live;
    } else {
      plan.ids.insert(plan.ids.end(), tree.begin(), tree.end());
    }
  }
  return plan;
}

Status DeletePlanned(const PrunePlan& plan, const RunDelete& run, Catalog::PruneCounts& counts) {
  struct Table {
    const char* name;
    const char* column;
    int64_t Catalog::PruneCounts::*count;  // where its row count goes, or null
  };
  for (const Table& t : {Table{"events", "execution_id", &Catalog::PruneCounts::events},
                         Table{"task_runs", "execution_id", &Catalog::PruneCounts::task_runs},
                         Table{"execution_parameters", "execution_id", nullptr},
                         Table{"executions", "id", &Catalog::PruneCounts::executions}}) {
    for (size_t first = 0; first < plan.ids.size(); first += kIdsPerStatement) {
      const size_t end = std::min(first + kIdsPerStatement, plan.ids.size());
      std::vector<std::string> ids(plan.ids.begin() + static_cast<std::ptrdiff_t>(first),
                                   plan.ids.begin() + static_cast<std::ptrdiff_t>(end));
      std::string sql = std::string("DELETE FROM ") + t.name + " WHERE " + t.column + " IN (" +
                        Placeholders(ids.size()) + ")";
      ASSIGN_OR_RETURN(int64_t removed, run(sql, ids));
      if (t.count != nullptr) counts.*t.count += removed;
    }
  }
  return Status::Ok();
}

}  // namespace fanout::catalog
