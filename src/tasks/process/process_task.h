// The `process` task type (SSIS Execute Process task).
#pragma once

#include <memory>

#include "fanout/task.h"

namespace fanout {
std::unique_ptr<TaskType> MakeProcessTaskType();
}
