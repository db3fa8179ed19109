// The `package` task type (SSIS Execute Package task).
#pragma once

#include <memory>

#include "fanout/task.h"

namespace fanout {
std::unique_ptr<TaskType> MakePackageTaskType();
}
