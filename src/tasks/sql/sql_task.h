// The `sql` task type (SSIS Execute SQL task) on SQLite connections.
#pragma once

#include <memory>

#include "fanout/task.h"

namespace fanout {
std::unique_ptr<TaskType> MakeSqlTaskType();
}
