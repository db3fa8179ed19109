// The engine: runs one package as one execution, following SSIS control-flow rules
// (precedence constraints, containers, error counts, results). See docs/engine.md.
// An Engine may run several executions at once (a parent and its in-process children);
// Run() blocks the calling thread until the execution ends.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "fanout/catalog.h"
#include "fanout/package.h"
#include "fanout/status.h"
#include "fanout/task.h"
#include "fanout/value.h"

namespace fanout {

struct RunOptions {
  // Parameter and variable values given as text (--set NAME=VALUE), converted to their types.
  std::map<std::string, std::string> sets;
  // Parameter values given typed (by a parent package).
  std::map<std::string, Value> params;
  int max_concurrent = 0;            // 0: the package's, else cores + 2
  std::string execution_id;          // "" to generate one
  std::string parent_execution_id;   // set for child packages
  std::string catalog_spec;          // handed to out-of-process children
  // The catalog did not answer when the run started (its rows are spooled): nothing is read
  // from it, such as past durations, which would wait for its connect timeout.
  bool catalog_unreachable = false;
  std::string agent, job, run_id;    // recorded on the execution when an agent runs it
  // For a child package: the files of the packages running it, outermost first (canonical
  // paths). A package task refuses to start a package among them, which would run forever.
  std::vector<std::string> ancestors;
  // For a child run in the parent's process: the parent's task path that runs it
  // ("load[2]/child", below its own parent's when nested), shown before its events' sources on
  // the console, where the parent's and every child's events mix.
  std::string console_label;
  // What canceled the run from outside ("SIGINT"), asked once it was: the run's message says
  // it ("canceled by SIGINT") rather than only "canceled".
  std::function<std::string()> cancel_cause;
};

struct RunResult {
  TaskResult result = TaskResult::kSuccess;
  std::string execution_id;
  std::string message;  // the first error, when it failed
  int succeeded = 0;    // leaf tasks by final result (a retried task counts once)
  int failed = 0;
  int canceled = 0;     // stopped by a cancel (SIGINT/SIGTERM, a timeout of the whole run)
  int skipped = 0;      // leaf tasks, and containers skipped whole (once each)
  // Tasks and containers (once each) never started because the run or their container was
  // stopped first: by a cancel, a failure that fails the package, or a container's timeout. A
  // foreach item never reached counts one.
  int not_started = 0;
  std::chrono::nanoseconds duration{0};
};

// "Success", "Failure", "Canceled" as SSIS names execution results.
const char* TaskResultName(TaskResult result);

class Engine {
 public:
  explicit Engine(Recorder& recorder) : recorder_(recorder) {}

  // Runs `package` to its end. Fails (without running anything) when the options do not fit
  // the package: an unknown --set name, a value of the wrong type, a required parameter unset.
  // `cancel`, when given, stops the run: running tasks are stopped, the result is Canceled.
  Result<RunResult> Run(std::shared_ptr<const Package> package, const RunOptions& options,
                        const CancelToken* cancel = nullptr);

  Recorder& recorder() { return recorder_; }

 private:
  Recorder& recorder_;
};

}  // namespace fanout
