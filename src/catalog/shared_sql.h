// SQL text and decisions shared by the SQLite and PostgreSQL backends: both read $1, $2, .. as
// the first, second, .. parameter.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fanout/catalog.h"

namespace fanout::catalog {

// "$1, $2, .. $n": the parameters of an IN list of n ids.
inline std::string Placeholders(size_t n) {
  std::string list;
  for (size_t i = 1; i <= n; ++i) list += (i == 1 ? "$" : ", $") + std::to_string(i);
  return list;
}
// How many ids one statement takes (CountChildren, Prune); a longer list goes in batches.
constexpr size_t kIdsPerStatement = 500;

// The query of Catalog::CountChildren for n ids, $1 .. $n.
inline std::string CountChildrenSql(size_t n) {
  return "SELECT parent_id, count(*) FROM executions WHERE parent_id IN (" + Placeholders(n) +
         ") GROUP BY parent_id";
}

// Catalog::Prune's choice, made alike by both backends from every execution (`all`): each tree
// (an execution without a parent in the catalog, and everything below it) whose top started
// before `cutoff` goes whole, unless one of its executions is live. Children are never left
// without their parent, nor a running execution's record cut in two. A tree whose top has a
// parent not in the catalog goes only once that parent's id says it started a day (or more)
// before `cutoff`: the parent may be running with its rows still in a spool.
struct PrunePlan {
  std::vector<std::string> ids;  // the executions to delete
  int64_t kept_live = 0;         // trees old enough but kept for a live execution
};
PrunePlan PlanPrune(const std::vector<ExecutionRow>& all, DateTime cutoff,
                    const Catalog::IsLive& is_live);

// Deletes what `plan` names, children's rows first and the executions last, in batches of ids;
// `run(sql, ids)` runs one DELETE ($1 .. $n are the ids) and returns how many rows it removed.
// Adds those to `counts`.
using RunDelete = std::function<Result<int64_t>(const std::string& sql,
                                                const std::vector<std::string>& ids)>;
Status DeletePlanned(const PrunePlan& plan, const RunDelete& run, Catalog::PruneCounts& counts);

}  // namespace fanout::catalog
