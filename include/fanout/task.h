// The extension point for task types (docs/extending.md): a TaskType parses its keys of a task
// into an immutable Task; the engine calls Task::Execute with a TaskContext for every attempt.
// Containers (sequence, for, foreach) belong to the engine and are not TaskTypes.
#pragma once

#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fanout/event.h"
#include "fanout/expression.h"
#include "fanout/package.h"
#include "fanout/status.h"

namespace fanout {

class Engine;
struct RunOptions;

// Stop requests for one running task: cancel (SIGINT/SIGTERM) or a timeout (its own or its
// container's).
// Thread-safe. fd() is an eventfd that becomes readable on Cancel(), for poll() loops.
class CancelToken {
 public:
  enum class Reason { kNone, kCanceled, kTimedOut };
  CancelToken();
  ~CancelToken();
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  void Cancel(Reason reason);
  bool canceled() const { return reason_.load(std::memory_order_acquire) != Reason::kNone; }
  Reason reason() const { return reason_.load(std::memory_order_acquire); }
  // Created on first use: most attempts (inline expression tasks) never poll.
  int fd() const;
  // Sleeps up to `d`; returns false when canceled first.
  bool SleepFor(std::chrono::milliseconds d) const;

  // While it lives, a Callback from OnCancel runs its function once if the token is canceled,
  // on the canceling thread: for a blocking call that cannot poll fd() (an HTTP request). Its end
  // waits for a run of the function under way, after which it never runs.
  class Callback {
   public:
    Callback() = default;
    Callback(Callback&& other) noexcept
        : token_(std::exchange(other.token_, nullptr)), id_(other.id_) {}
    Callback& operator=(Callback&& other) noexcept;
    ~Callback();

   private:
    friend class CancelToken;
    Callback(const CancelToken* token, uint64_t id) : token_(token), id_(id) {}
    const CancelToken* token_ = nullptr;
    uint64_t id_ = 0;
  };
  // Nothing is registered when the token is already canceled: the caller sees canceled().
  [[nodiscard]] Callback OnCancel(std::function<void()> stop) const;

 private:
  struct Callbacks;  // by id; made by the first OnCancel, which few tokens see
  std::atomic<Reason> reason_{Reason::kNone};
  // Guards fd_'s creation and callbacks_ against a concurrent Cancel(), which holds it while
  // it runs the callbacks.
  mutable std::mutex mu_;
  mutable int fd_ = -1;
  mutable std::unique_ptr<Callbacks> callbacks_;
};

enum class TaskResult { kSuccess, kFailure, kCanceled };

struct TaskOutcome {
  TaskResult result = TaskResult::kSuccess;
  std::string message;             // why it failed, for OnError and the catalog
  std::string child_execution_id;  // package (and agent-job) tasks
  std::string agent;               // agent-job tasks
  static TaskOutcome Success() { return {}; }
  static TaskOutcome Failure(std::string message) {
    return {TaskResult::kFailure, std::move(message), "", ""};
  }
};

// What a running task may use. One context per attempt; Execute runs on a worker thread.
class TaskContext {
 public:
  virtual ~TaskContext() = default;
  virtual Scope& scope() = 0;  // thread-safe variable access
  virtual const CancelToken& cancel() const = 0;
  virtual void Emit(EventType type, std::string message, int64_t data_code = 0,
                    std::string data_bytes = "") = 0;
  // Where the attempt runs, as soon as it is known (an agent-job's agent, then its child
  // execution): recorded on its running task-run row, so reports show the tree live.
  virtual void RecordWhereItRuns(const std::string& agent, const std::string& child_execution_id) = 0;
  virtual const std::string& task_path() const = 0;
  virtual const std::string& execution_id() const = 0;
  virtual int attempt() const = 0;
  // For a retry of a leaf task: the agent its previous attempt failed on (TaskOutcome::agent),
  // "" when that attempt ran on none, or this is no retry.
  virtual const std::string& failed_agent() const = 0;
  // Increases with every task attempt the engines of this process start, in the order a run's
  // scheduler starts them (package order, a loop's iterations in turn): tasks that queue for
  // the same thing (an agent pool's slots) are served in this order.
  virtual uint64_t start_order() const = 0;
  virtual const Package& package() const = 0;
  // Resolves a path written in the package against the package's folder.
  virtual std::string ResolvePath(const std::string& path) const = 0;
  // A connection's settings rendered with the current variables.
  virtual Result<std::map<std::string, std::string>> Connection(const std::string& name) = 0;
  // Runs a child package in this process as its own execution linked to this one.
  virtual Engine& engine() = 0;
  virtual const RunOptions& run_options() const = 0;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual TaskOutcome Execute(TaskContext& context) const = 0;
  // True for tasks so cheap and non-blocking (expression) that the engine runs them on its
  // scheduling thread instead of handing them to a worker.
  virtual bool runs_inline() const { return false; }
};

// Loader services for TaskType::Parse: typed key access that records problems with positions,
// and checks of the names a task refers to.
class TaskParser {
 public:
  virtual ~TaskParser() = default;
  virtual SourcePos Pos(const YAML::Node& node) const = 0;
  virtual void Error(const YAML::Node& node, std::string message) = 0;
  // Parses a string template, checking its variables exist. Null node: returns nullopt.
  virtual std::optional<Template> TemplateAt(const YAML::Node& node, std::string_view key,
                                             bool required) = 0;
  // A list of templates (argv, bind parameters). Missing and not required: empty.
  virtual std::vector<Template> TemplateListAt(const YAML::Node& node, std::string_view key,
                                               bool required) = 0;
  // A map of string keys to templates (env, params).
  virtual std::map<std::string, Template> TemplateMapAt(const YAML::Node& node,
                                                        std::string_view key) = 0;
  virtual std::optional<Expression> ExpressionAt(const YAML::Node& node, std::string_view key,
                                                 bool required) = 0;
  virtual std::optional<bool> BoolAt(const YAML::Node& node, std::string_view key) = 0;
  virtual std::optional<int64_t> IntAt(const YAML::Node& node, std::string_view key) = 0;
  virtual std::optional<std::string> StringAt(const YAML::Node& node, std::string_view key,
                                              bool required) = 0;
  // Checks `name` names a variable visible here that a task may assign.
  virtual void CheckVariable(const YAML::Node& at, const std::string& name) = 0;
  // Checks a connection of one of `types` exists; returns its type or "".
  virtual std::string CheckConnection(const YAML::Node& at, const std::string& name,
                                      const std::vector<std::string>& types) = 0;
  virtual const std::string& package_dir() const = 0;
};

class TaskType {
 public:
  virtual ~TaskType() = default;
  virtual std::string_view name() const = 0;
  // Keys this type accepts besides the keys every task has.
  virtual std::vector<std::string_view> keys() const = 0;
  // Parses the task; problems go to `parser` (and make the result an error).
  virtual std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const = 0;
};

// The registry of task types. Built-in types register from RegisterBuiltinTaskTypes(); adding
// a type is one RegisterTaskType call (docs/extending.md).
void RegisterTaskType(std::unique_ptr<TaskType> type);
const TaskType* FindTaskType(std::string_view name);
std::vector<std::string> TaskTypeNames();

}  // namespace fanout
