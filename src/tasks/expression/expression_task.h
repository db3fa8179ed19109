// The `expression` task type.
#pragma once

#include <memory>

#include "fanout/task.h"

namespace fanout {
std::unique_ptr<TaskType> MakeExpressionTaskType();
}
