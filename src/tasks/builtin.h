// The task types that ship with Fanout: process, sql, package, expression, agent-job.
#pragma once

namespace fanout {

// Registers every built-in task type with the registry in fanout/task.h. Idempotent; call it
// before loading a package.
void RegisterBuiltinTaskTypes();

}  // namespace fanout
