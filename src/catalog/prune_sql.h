// The statements of Catalog::Prune, shared by the SQLite and PostgreSQL backends ($1, the cut-off
// as ISO 8601 text, is a parameter both understand). Children first, the executions last.
#pragma once

#include <cstdint>

#include "fanout/catalog.h"

namespace fanout::catalog {

struct PruneStatement {
  const char* sql;
  int64_t Catalog::PruneCounts::*count;  // where its row count goes, or null
};

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
