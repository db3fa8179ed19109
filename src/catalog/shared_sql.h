// SQL text shared by the SQLite and PostgreSQL backends: both read $1, $2, .. as the first,
// second, .. parameter.
#pragma once

#include <cstdint>
#include <string>

#include "fanout/catalog.h"

namespace fanout::catalog {

// The query of Catalog::CountChildren for n ids, $1 .. $n; and how many ids one query takes.
inline std::string CountChildrenSql(size_t n) {
  std::string sql = "SELECT parent_id, count(*) FROM executions WHERE parent_id IN (";
  for (size_t i = 1; i <= n; ++i) sql += (i == 1 ? "$" : ", $") + std::to_string(i);
  return sql + ") GROUP BY parent_id";
}
constexpr size_t kCountChildrenBatch = 500;

struct PruneStatement {
  const char* sql;
  int64_t Catalog::PruneCounts::*count;  // where its row count goes, or null
};

// Catalog::Prune: $1 is the cut-off as ISO 8601 text. Children first, the executions last.
inline constexpr PruneStatement kPruneStatements[] = {
    {"DELETE FROM events WHERE execution_id IN "
     "(SELECT id FROM executions WHERE started_at < $1)", &Catalog::PruneCounts::events},
    {"DELETE FROM task_runs WHERE execution_id IN "
     "(SELECT id FROM executions WHERE started_at < $1)", &Catalog::PruneCounts::task_runs},
    {"DELETE FROM execution_parameters WHERE execution_id IN "
     "(SELECT id FROM executions WHERE started_at < $1)", nullptr},
    {"DELETE FROM executions WHERE started_at < $1", &Catalog::PruneCounts::executions},
};

}  // namespace fanout::catalog
