// The `agent-job` task type: a job started on a remote agent or pool.
#pragma once

#include <memory>

#include "fanout/task.h"

namespace fanout {
std::unique_ptr<TaskType> MakeAgentJobTaskType();
}
