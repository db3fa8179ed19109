// Registers the built-in task types (see builtin.h).
#include "tasks/builtin.h"

#include <mutex>

#include "tasks/agent_job/agent_job_task.h"
#include "tasks/expression/expression_task.h"
#include "tasks/package/package_task.h"
#include "tasks/process/process_task.h"
#include "tasks/sql/sql_task.h"

namespace fanout {

void RegisterBuiltinTaskTypes() {
  static std::once_flag once;
  std::call_once(once, [] {
    RegisterTaskType(MakeProcessTaskType());
    RegisterTaskType(MakeSqlTaskType());
    RegisterTaskType(MakePackageTaskType());
    RegisterTaskType(MakeExpressionTaskType());
    RegisterTaskType(MakeAgentJobTaskType());
  });
}

}  // namespace fanout
