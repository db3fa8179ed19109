// The control-flow executor. One scheduling thread (the caller of Engine::Run) owns all state
// of an execution: containers, loops, precedence, error counts, timers. Leaf tasks run on a
// small worker pool (at most max_concurrent threads) and report back through a queue, so a
// container never holds a thread while its children run and thousands of loop iterations need
// no more threads than max_concurrent.
#include "fanout/engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <glob.h>
#include <unistd.h>
#include <map>
#include <cstdlib>
#include <set>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "common/util.h"
#include "engine/variables.h"
#include "engine/worker_pool.h"

namespace fanout {

const char* TaskResultName(TaskResult result) {
  switch (result) {
    case TaskResult::kSuccess: return "Success";
    case TaskResult::kFailure: return "Failure";
    case TaskResult::kCanceled: return "Canceled";
  }
  return "Unknown";
}

namespace {

// Of a variable's new value, what an OnVariableValueChanged message shows.
constexpr size_t kChangedValueShown = 4096;

using Clock = std::chrono::steady_clock;

// How a child of a container ended, as precedence constraints see it.
enum class Final { kSuccess, kFailure, kCanceled, kSkipped, kDisabled, kNotRun };

const char* FinalStatus(Final f) {
  switch (f) {
    case Final::kSuccess: return "succeeded";
    case Final::kFailure: return "failed";
    case Final::kCanceled: return "canceled";
    case Final::kSkipped: return "skipped";
    case Final::kDisabled: return "skipped";
    case Final::kNotRun: return "skipped";
  }
  return "unknown";
}

// SSIS execution results: 0 Success, 1 Failure, 3 Canceled (2, Completed, is not used).
int64_t SsisResultCode(TaskResult r) {
  switch (r) {
    case TaskResult::kSuccess: return 0;
    case TaskResult::kFailure: return 1;
    case TaskResult::kCanceled: return 3;
  }
  return 1;
}

// What every row of an execution repeats, made once and shared with the Recorder's thread.
struct RowContext {
  std::string execution_id;
  std::string computer;
  std::string operator_name;
  std::string package;
  std::string console_label;
};

// An event of the execution; `source` "" is the package itself.
Event MakeEvent(const RowContext& context, EventType type, const std::string& source,
                std::string message, int64_t data_code, std::string data_bytes, DateTime started,
                DateTime ended) {
  Event e;
  e.execution_id = context.execution_id;
  e.type = type;
  e.computer = context.computer;
  e.operator_name = context.operator_name;
  e.source = source.empty() ? context.package : source;
  e.source_id = source;
  e.started_at = started;
  e.ended_at = ended;
  e.data_code = data_code;
  e.data_bytes = std::move(data_bytes);
  e.message = std::move(message);
  e.console_label = context.console_label;
  return e;
}

TaskRunRow MakeTaskRun(const RowContext& context, const std::string& path, const std::string& type,
                       int attempt, const std::string& status, DateTime started,
                       std::optional<DateTime> ended, const std::string& message,
                       const std::string& child_id, const std::string& agent) {
  TaskRunRow r;
  r.execution_id = context.execution_id;
  r.task_path = path;
  r.task_type = type;
  r.attempt = attempt;
  r.status = status;
  r.started_at = started;
  r.ended_at = ended;
  r.message = message;
  r.child_execution_id = child_id;
  r.agent = agent;
  return r;
}

// A leaf attempt's start, end, or both (a task that ended before its start was handed over),
// as the scheduler's thread records it: the facts its task_runs row and its OnPreExecute and
// OnPostExecute events are made from, later, on the Recorder's thread (MakeLeafRows). Kept
// small and one to a trivial task: the scheduler writes them into memory that the Recorder's
// thread reads on the other CPU, and each cache line passed between them costs. At two marks
// of 240 bytes a task, that was 10 to 20 % of a trivial task's time.
struct LeafMark {
  // What only some ends have: kept apart, so that most marks carry one pointer of it.
  struct Details {
    std::string message;  // what failed
    std::string child_execution_id;
    std::string agent;
  };
  std::string path;
  const std::string* type = nullptr;  // the TaskDef's: the exchange keeps its package alive
  DateTime started_at{};
  DateTime ended_at{};            // with `ended` only
  const char* status = "running";  // at the end, FinalStatus
  std::shared_ptr<const Details> details;  // shared: the hand-over closure must copy
  int32_t attempt = 1;
  int32_t result_code = 0;  // at the end, SsisResultCode
  bool started = true;      // the start is in this mark
  bool ended = false;       // the end is in this mark
};

// What the scheduler's thread shares with the Recorder's: the rows' context, and the vectors
// of LeafMarks that go back and forth between them. Reused, a hand-over never touches new
// memory: fresh pages (a page fault each) had cost more than the engine's own work per task.
struct LeafMarkExchange {
  LeafMarkExchange(RowContext context_in, std::shared_ptr<const Package> package_in)
      : context(std::move(context_in)), package(std::move(package_in)) {}
  std::vector<LeafMark> Take() {
    std::lock_guard lock(mu);
    if (spare.empty()) return {};
    std::vector<LeafMark> marks = std::move(spare.back());
    spare.pop_back();
    return marks;
  }
  // Keeps a full batch's vector for reuse; a few suffice, as the Recorder's thread gives each
  // back soon after it is handed over.
  void Give(std::vector<LeafMark> marks) {
    if (marks.capacity() < kFullBatch) return;
    marks.clear();
    std::lock_guard lock(mu);
    if (spare.size() < kMaxSpare) spare.push_back(std::move(marks));
  }

  static constexpr size_t kFullBatch = 256;  // marks per hand-over at most
  static constexpr size_t kMaxSpare = 4;

  const RowContext context;
  const std::shared_ptr<const Package> package;  // what LeafMark::type points into
  std::mutex mu;
  std::vector<std::vector<LeafMark>> spare;
};

// A start makes a "running" row and OnPreExecute; an end, the final row and OnPostExecute. A
// mark with both leaves out the "running" row, which the final one would replace at once.
void MakeLeafRows(const RowContext& context, const std::vector<LeafMark>& marks,
                  CatalogBatch& out) {
  static const LeafMark::Details kNoDetails;
  for (const LeafMark& m : marks) {
    if (m.started) {
      if (!m.ended) {
        out.task_runs.push_back(MakeTaskRun(context, m.path, *m.type, m.attempt, m.status,
                                            m.started_at, std::nullopt, "", "", ""));
      }
      out.events.push_back(MakeEvent(
          context, EventType::kOnPreExecute, m.path,
          m.attempt == 1 ? fmt::format("{} {} started", *m.type, m.path)
                         : fmt::format("{} {} started (attempt {})", *m.type, m.path, m.attempt),
          0, "", m.started_at, m.started_at));
    }
    if (m.ended) {
      const LeafMark::Details& details = m.details ? *m.details : kNoDetails;
      out.task_runs.push_back(MakeTaskRun(context, m.path, *m.type, m.attempt, m.status,
                                          m.started_at, m.ended_at, details.message,
                                          details.child_execution_id, details.agent));
      out.events.push_back(MakeEvent(context, EventType::kOnPostExecute, m.path,
                                     fmt::format("{} {} finished: {}", *m.type, m.path, m.status),
                                     m.result_code, "", m.started_at, m.ended_at));
    }
  }
}

Final FromResult(TaskResult r) {
  switch (r) {
    case TaskResult::kSuccess: return Final::kSuccess;
    case TaskResult::kFailure: return Final::kFailure;
    case TaskResult::kCanceled: return Final::kCanceled;
  }
  return Final::kFailure;
}

const char* ContainerTypeName(ContainerKind k) {
  switch (k) {
    case ContainerKind::kSequence: return "sequence";
    case ContainerKind::kFor: return "for";
    case ContainerKind::kForeach: return "foreach";
    case ContainerKind::kNone: break;
  }
  return "package";
}

class Execution;

struct Loop;

// A set of sibling tasks being run: the package itself, a sequence, or one loop iteration.
struct Container {
  const std::vector<TaskDef>* tasks = nullptr;
  Scope* scope = nullptr;
  std::string path;  // prefix of the children's paths; "" for the package
  int max_errors = 1;
  Container* parent = nullptr;
  Loop* loop = nullptr;  // set on a loop iteration's body
  std::function<void(Final, std::string)> done;
  // This container, or one around it, has `retries`: its tasks may run again with it, so their
  // attempts are numbered by Execution::AttemptFor rather than by their own tries.
  bool may_rerun = false;

  enum : uint8_t { kWaiting, kRunning, kDone };
  std::vector<uint8_t> state;
  std::vector<Final> finals;
  int remaining = 0;
  int running = 0;
  int errors = 0;
  bool stopping = false;
  bool canceled = false;
  bool finished = false;
  std::string first_error;

  std::string ChildPath(const TaskDef& def) const {
    return path.empty() ? def.name : path + "/" + def.name;
  }
  bool Within(const Container* other) const {
    for (const Container* c = this; c != nullptr; c = c->parent) {
      if (c == other) return true;
    }
    return false;
  }
  bool WithinLoop(const Loop* l) const {
    for (const Container* c = this; c != nullptr; c = c->parent) {
      if (c->loop == l) return true;
    }
    return false;
  }
};

// A for or foreach loop: runs iterations (each a Container) until done, failed or stopped.
struct Loop {
  Container* owner = nullptr;
  size_t index = 0;
  const TaskDef* def = nullptr;
  std::string path;
  DateTime started_at{};
  int attempt = 1;     // its task_runs row
  int try_number = 1;  // of 1 + def->retries
  Value::List items;  // foreach
  size_t next = 0;
  int iterations = 0;
  int reported_percent = 0;  // of the last OnProgress
  int running = 0;
  int canceled = 0;  // iterations a cancel stopped: ended, but not done
  int errors = 0;
  bool exhausted = false;
  bool stopping = false;
  bool finished = false;
  std::string first_error;
  // Set when an enclosing container's timeout stopped it: its message, should no iteration
  // have failed with one of its own.
  std::string stopped_by;
  std::vector<std::unique_ptr<LoopScope>> scopes;
};

// TaskContext::start_order: process-wide, so in-process child packages' tasks interleave with
// their parent's by when they started.
uint64_t NextStartOrder() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

// One attempt of one leaf task; the TaskContext the task sees.
class Attempt : public TaskContext {
 public:
  Attempt(Execution& exec, Container* container, size_t index, int try_number, uint64_t id,
          std::string failed_agent);

  Scope& scope() override { return *container_->scope; }
  const CancelToken& cancel() const override { return token_; }
  void Emit(EventType type, std::string message, int64_t data_code,
            std::string data_bytes) override;
  void RecordWhereItRuns(const std::string& agent, const std::string& child_execution_id) override;
  const std::string& task_path() const override { return path_; }
  const std::string& execution_id() const override;
  int attempt() const override { return attempt_; }
  const std::string& failed_agent() const override { return failed_agent_; }
  uint64_t start_order() const override { return start_order_; }
  const Package& package() const override;
  std::string ResolvePath(const std::string& path) const override;
  Result<std::map<std::string, std::string>> Connection(const std::string& name) override;
  Engine& engine() override;
  const RunOptions& run_options() const override;

  Execution& exec_;
  Container* container_;
  size_t index_;
  const TaskDef& def_;
  int try_;  // of 1 + def_.retries
  uint64_t id_;
  uint64_t start_order_;
  std::string path_;
  int attempt_;  // its task_runs row and idempotency: unique for the path in the execution
  std::string failed_agent_;  // failed_agent()
  CancelToken token_;
  DateTime started_at_{};
  TaskOutcome outcome_;
  std::string timeout_message_;  // set when a timer (its own or a container's) stopped it
};

class Execution {
 public:
  Execution(Engine& engine, std::shared_ptr<const Package> package, const RunOptions& options,
            const CancelToken* external)
      : engine_(engine),
        recorder_(engine.recorder()),
        package_(std::move(package)),
        options_(options),
        external_cancel_(external) {
    id_ = options.execution_id.empty() ? NewExecutionId() : options.execution_id;
    leaf_exchange_ = std::make_shared<LeafMarkExchange>(
        RowContext{id_, HostName(), UserName(), package_->name, options.console_label}, package_);
    int max = options.max_concurrent > 0 ? options.max_concurrent : package_->max_concurrent;
    if (max <= 0) max = static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) + 2;
    max_concurrent_ = max;
  }

  Status Prepare();
  RunResult Run();

  const std::string& id() const { return id_; }
  const Package& package() const { return *package_; }
  Engine& engine() { return engine_; }
  const RunOptions& options() const { return options_; }

  // `started` and `ended` default to now; a start or end event passes its row's times, so the
  // event and the task_runs or executions row agree to the microsecond.
  void Emit(EventType type, const std::string& source, std::string message, int64_t data_code = 0,
            std::string data_bytes = "", DateTime started = {}, DateTime ended = {}) {
    if (!BeforeDirectRow()) return;
    if (ended == DateTime{}) ended = Now();
    recorder_.Emit(MakeEvent(row_context(), type, source, std::move(message), data_code,
                             std::move(data_bytes), started == DateTime{} ? ended : started,
                             ended));
  }

  // The attempt number of try `try_number` of the task at `path` in container `c`: the try
  // itself, unless the task may run again with a container around it; then it counts on from
  // the task's earlier runs, so no two runs share a task_runs row or an idempotency key.
  int AttemptFor(const Container* c, const std::string& path, int try_number) {
    return c->may_rerun ? ++attempts_of_[path] : try_number;
  }

  // Thread-safe (the recorder only): a worker's attempt records its running row again.
  void RecordRunning(const Attempt& a, const std::string& agent, const std::string& child_id);

  // A leaf's start and end, the rows every task makes, are recorded as LeafMarks: the
  // scheduler's thread gathers them and hands them to the Recorder together once many have
  // gathered, before it waits, before work starts on another thread and before any other row
  // (so that nothing overtakes them). On a chain of trivial tasks, making and queueing these
  // rows one by one took longer than the engine's own work.
  bool OnScheduler() const { return std::this_thread::get_id() == scheduler_; }
  // Before a row that goes to the Recorder at once: false when it would keep nothing; else the
  // scheduler's pending notes go first.
  bool BeforeDirectRow() {
    if (recorder_.keeps_nothing()) return false;
    if (OnScheduler()) SendLeafMarks();
    return true;
  }
  // Attempt `a`'s start, or with `end` its end (its outcome, `ended`, `final`). Made in place:
  // at half a microsecond a task, a move of the mark was a cost to count. An end whose start
  // is the last mark still held goes into that mark.
  void MarkLeaf(const Attempt& a, const TaskOutcome* end = nullptr, DateTime ended = {},
                Final final = Final::kSuccess) {
    if (recorder_.keeps_nothing()) return;
    LeafMark* m;
    if (end != nullptr && open_start_ == &a) {
      m = &leaf_marks_.back();
    } else {
      m = &leaf_marks_.emplace_back();
      m->path = a.path_;
      m->type = &a.def_.type;
      m->attempt = a.attempt_;
      m->started_at = a.started_at_;
      m->started = end == nullptr;
    }
    open_start_ = end == nullptr ? &a : nullptr;
    if (end != nullptr) {
      m->ended = true;
      m->ended_at = ended;
      m->status = FinalStatus(final);
      m->result_code = static_cast<int32_t>(SsisResultCode(end->result));
      bool failed = end->result != TaskResult::kSuccess;
      if ((failed && !end->message.empty()) || !end->child_execution_id.empty() ||
          !end->agent.empty()) {
        m->details = std::make_shared<const LeafMark::Details>(LeafMark::Details{
            failed ? end->message : std::string(), end->child_execution_id, end->agent});
      }
    }
    leaf_rows_ += m->started && m->ended ? 1 : 2;  // a merged end adds its one row
    if (leaf_marks_.size() >= LeafMarkExchange::kFullBatch) SendLeafMarks();
  }
  // On the scheduler's thread only.
  // A full batch goes in its own vector, swapped for a spare one; a few marks (a wait, a
  // worker's launch) go in a vector of their size, so that many small hand-overs queued while
  // the Recorder is slow hold little memory.
  void SendLeafMarks() {
    if (leaf_marks_.empty()) return;
    open_start_ = nullptr;
    std::vector<LeafMark> batch;
    if (leaf_marks_.size() >= LeafMarkExchange::kFullBatch) {
      batch = std::move(leaf_marks_);
      leaf_marks_ = leaf_exchange_->Take();
      leaf_marks_.reserve(LeafMarkExchange::kFullBatch);
    } else {
      batch.assign(std::make_move_iterator(leaf_marks_.begin()),
                   std::make_move_iterator(leaf_marks_.end()));
      leaf_marks_.clear();
    }
    // Counted before the call: its arguments are evaluated in no set order, and the closure's
    // capture empties `batch` (counted after it, the queue saw no rows and never held the engine
    // back: a 300,000-iteration loop queued a million rows and 760 MB).
    const size_t rows = std::exchange(leaf_rows_, 0);
    recorder_.RecordLater(rows, [exchange = leaf_exchange_, marks = std::move(batch)](
                                    CatalogBatch& out) mutable {
      MakeLeafRows(exchange->context, marks, out);
      exchange->Give(std::move(marks));
    });
  }

  // Called by a worker when an attempt's Execute returned.
  void PostCompletion(Attempt* attempt) {
    {
      std::lock_guard lock(mu_);
      completions_.push_back(attempt);
    }
    cv_.notify_one();
  }

 private:
  bool StopAll() const { return canceled_ || package_failed_; }

  void StartContainer(Container* c);
  void StartNode(Container* c, size_t i);
  // Task i of c, a sequence or a loop, for its try `try_number`.
  void StartContainerTask(Container* c, size_t i, int try_number);
  // Whether a try of task i of c that ended `final` gets another: it failed, `retries` allow
  // it, and neither the run nor c is stopping.
  bool WillRetry(const Container* c, const TaskDef& def, int try_number, Final final) const;
  // Warns that try `try_number` failed and starts the next after `retry_delay`.
  // `failed_agent`: the agent a leaf's failed try ran on, for the next try's failed_agent().
  void Retry(Container* c, size_t i, int try_number, const std::string& reason,
             const std::string& failed_agent = "");
  // A container task's try has ended: retried or finished.
  void EndContainerTry(Container* c, size_t i, int try_number, Final final,
                       const std::string& message);
  void FinishNode(Container* c, size_t i, Final final, const std::string& message);
  void MaybeCompleteContainer(Container* c);
  enum class Readiness { kWait, kRun, kSkip };
  // With kSkip, `why_skipped` says which constraints failed and how.
  Readiness Evaluate(Container* c, size_t i, std::string& why_skipped);

  void StartLeaf(Container* c, size_t i, int try_number, std::string failed_agent = "");
  void Dispatch();
  void Launch(Attempt* a);
  void OnAttemptDone(Attempt* a);

  void StartLoop(Container* c, size_t i, DateTime started, int attempt, int try_number);
  void PumpLoop(Loop* loop);
  void OnIterationDone(Loop* loop, Final final, const std::string& message);
  // A loop's own error (its items, condition, init or assign): said as a leaf's is, under the
  // loop's path, and it fails the loop whatever its maximum_error_count.
  void FailLoop(Loop* l, const std::string& what);

  void RecordTaskRun(const std::string& path, const std::string& type, int attempt,
                     const std::string& status, DateTime started, std::optional<DateTime> ended,
                     const std::string& message, const std::string& child_id = "",
                     const std::string& agent = "");
  void CancelUnder(Container* c, const std::string& message);
  void CancelLoop(Loop* l, const std::string& message);
  void CancelAll();
  // `owner`: the container or loop the timer points at, whose retirement drops it.
  void AddTimer(Clock::duration after, std::function<void()> fn, const void* owner = nullptr) {
    timers_.emplace(Clock::now() + after, Timer{owner, std::move(fn)});
  }
  // Frees a finished loop iteration (with the containers and loops inside it) once nothing can
  // point at it any more, so that a long loop holds only its live iterations.
  void Retire(Container* body);
  // Runs now, rather than at their time, the retries that a container or package that began
  // stopping will not take: they end their task at once (see Retry).
  void DropStoppedRetries();
  void Defer(std::function<void()> fn) { local_.push_back(std::move(fn)); }

  Engine& engine_;
  Recorder& recorder_;
  std::shared_ptr<LeafMarkExchange> leaf_exchange_;
  const RowContext& row_context() const { return leaf_exchange_->context; }
  std::thread::id scheduler_;  // the thread that calls Run()
  std::vector<LeafMark> leaf_marks_;  // not yet handed to recorder_
  size_t leaf_rows_ = 0;                // the rows they will make
  const Attempt* open_start_ = nullptr;  // whose start is leaf_marks_.back(), still open
  std::shared_ptr<const Package> package_;
  RunOptions options_;
  const CancelToken* external_cancel_;
  std::string id_;
  int max_concurrent_ = 1;
  DateTime started_at_{};

  std::unique_ptr<VariableStore> variables_;
  std::vector<std::unique_ptr<Container>> containers_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::unordered_map<uint64_t, std::unique_ptr<Attempt>> attempts_;
  std::deque<Attempt*> ready_;  // created, waiting for a free slot
  int running_leaves_ = 0;
  uint64_t next_attempt_id_ = 1;
  std::unordered_map<std::string, int> attempts_of_;  // path -> attempts, see AttemptFor
  std::unique_ptr<WorkerPool> pool_;

  std::deque<std::function<void()>> local_;  // work for this thread, run in order
  struct Timer {
    const void* owner;
    std::function<void()> fn;
  };
  std::multimap<Clock::time_point, Timer> timers_;
  // Retired iterations: freed once local_ is empty, since work deferred before they were
  // retired may still point at them (it finds them finished and does nothing).
  std::vector<std::unique_ptr<Container>> retired_containers_;
  std::vector<std::unique_ptr<Loop>> retired_loops_;
  std::vector<std::unique_ptr<LoopScope>> retired_scopes_;
  // Tries waiting for their retry_delay, with the container their task is in.
  struct PendingRetry {
    Container* container;
    std::function<void()> start;
  };
  std::multimap<Clock::time_point, PendingRetry> retries_;
  bool stops_ = false;  // something began stopping since DropStoppedRetries last looked

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Attempt*> completions_;  // guarded by mu_

  bool canceled_ = false;
  bool package_failed_ = false;  // a fail_package_on_failure task failed
  bool root_done_ = false;
  Final root_final_ = Final::kSuccess;
  // Errors as they were said, each with the path of what failed. The run's message is the first
  // that counted: not one inside a container that ended well after all, tolerated by its
  // maximum_error_count or made good by a retry (QA: a tolerated error was named as the
  // package's failure).
  struct SaidError {
    std::string path;
    std::string message;
  };
  std::vector<SaidError> errors_said_;
  void SayError(const std::string& path, const std::string& message);
  // Emits a container's timeout (OnError "timed out after D") and says it as an error; returns
  // "PATH: timed out after D", its message.
  std::string SayTimedOut(const std::string& path, std::chrono::milliseconds timeout);
  // Drops the errors of `path` and of everything under it.
  void ForgetErrorsUnder(const std::string& path);
  std::string FirstError() const;
  RunResult result_;
};

// ---- Attempt ----------------------------------------------------------------------------------

Attempt::Attempt(Execution& exec, Container* container, size_t index, int try_number, uint64_t id,
                 std::string failed_agent)
    : exec_(exec),
      container_(container),
      index_(index),
      def_((*container->tasks)[index]),
      try_(try_number),
      id_(id),
      start_order_(NextStartOrder()),
      path_(container->ChildPath(def_)),
      attempt_(exec.AttemptFor(container, path_, try_number)),
      failed_agent_(std::move(failed_agent)) {}

void Attempt::Emit(EventType type, std::string message, int64_t data_code,
                   std::string data_bytes) {
  exec_.Emit(type, path_, std::move(message), data_code, std::move(data_bytes));
}
void Attempt::RecordWhereItRuns(const std::string& agent, const std::string& child_execution_id) {
  exec_.RecordRunning(*this, agent, child_execution_id);
}
void Execution::RecordRunning(const Attempt& a, const std::string& agent,
                              const std::string& child_id) {
  RecordTaskRun(a.path_, a.def_.type, a.attempt_, "running", a.started_at_, std::nullopt, "",
                child_id, agent);
}
const std::string& Attempt::execution_id() const { return exec_.id(); }
const Package& Attempt::package() const { return exec_.package(); }
Engine& Attempt::engine() { return exec_.engine(); }
const RunOptions& Attempt::run_options() const { return exec_.options(); }

std::string Attempt::ResolvePath(const std::string& path) const {
  if (path.empty() || path[0] == '/') return path;
  return (std::filesystem::path(exec_.package().dir) / path).lexically_normal().string();
}

Result<std::map<std::string, std::string>> Attempt::Connection(const std::string& name) {
  auto it = exec_.package().connections.find(name);
  if (it == exec_.package().connections.end()) return NotFound("no connection named " + name);
  std::map<std::string, std::string> settings{{"type", it->second.type}};
  for (const auto& [key, tmpl] : it->second.settings) {
    ASSIGN_OR_RETURN(settings[key], tmpl.RenderString(scope()));
  }
  return settings;
}

// ---- Execution: set-up ------------------------------------------------------------------------

Status Execution::Prepare() {
  Masker& masker = recorder_.masker();
  // Agent tokens taken from the environment are in every process task's environment too (a
  // child `fanout run` needs them): a task that prints its environment must not store one in
  // the catalog (QA). $FANOUT_TOKEN, the default token_env, and each agent connection's own
  // when it is written out (a template's at the end of Prepare, and when a task resolves it).
  std::set<std::string> token_envs = {"FANOUT_TOKEN"};
  for (const auto& [name, connection] : package_->connections) {
    auto token_env = connection.settings.find("token_env");
    if (connection.type == "agent" && token_env != connection.settings.end() &&
        token_env->second.text().find("${") == std::string::npos) {
      token_envs.insert(token_env->second.text());
    }
  }
  for (const std::string& name : token_envs) {
    if (const char* token = std::getenv(name.c_str()); token != nullptr) masker.AddSecret(token);
  }
  variables_ = std::make_unique<VariableStore>(
      [this](const std::string& name, const Value& value) {
        std::string text = value.ToString();
        if (text.size() > kChangedValueShown) {
          // Cut, and a secret's first part at the cut masked too (the Recorder masks whole
          // secrets only).
          text = recorder_.masker().MaskTruncated(std::string_view(text).substr(0, kChangedValueShown)) +
                 fmt::format("... ({} bytes in all)", text.size());
        }
        Emit(EventType::kOnVariableValueChanged, "",
             fmt::format("variable {} changed to {}", name, text));
      });
  std::map<std::string, std::string> sets = options_.sets;
  std::vector<std::string> errors;
  for (const ParameterDef& p : package_->parameters) {
    std::optional<Value> value;
    bool given = false;  // by the parent or --set; when it does not convert, that is the error
    if (auto it = options_.params.find(p.name); it != options_.params.end()) {
      given = true;
      if (p.sensitive) masker.AddSecret(it->second.ToString());
      auto v = it->second.ConvertTo(p.type);
      if (!v.ok()) errors.push_back(fmt::format("parameter {}: {}", p.name, masker.Mask(v.status().message())));
      else value = *v;
    }
    if (auto it = sets.find(p.name); it != sets.end()) {
      given = true;
      if (p.sensitive) masker.AddSecret(it->second);
      auto v = Value(it->second).ConvertTo(p.type);
      if (!v.ok()) errors.push_back(fmt::format("--set {}: {}", p.name, masker.Mask(v.status().message())));
      else value = *v;
      sets.erase(it);
    }
    if (given && !value) continue;
    if (!value && p.default_value) value = *p.default_value;
    if (!value) {
      if (p.required) {
        std::string how;
        if (!options_.parent_execution_id.empty()) {
          how = "give it in the parent's `params:` for this child";
        } else if (!options_.agent.empty()) {  // a job's package step, started by hand
          how = fmt::format("give it in the job step's `params:`, or start the job with "
                            "--param {}=VALUE",
                            p.name);
        } else {
          how = fmt::format("pass --set {}=VALUE", p.name);
        }
        errors.push_back(fmt::format("required parameter '{}' has no value; {}", p.name, how));
        continue;
      }
      value = Value::Default(p.type);  // no secret: the type's zero value, "" or 0 or false
    } else if (p.sensitive && !given) {
      masker.AddSecret(value->ToString());  // the package's own default
    }
    if (p.sensitive && value->is(ValueType::kList)) {
      // Each item is a secret too, and each value of a row: a foreach over the list shows them
      // one at a time (QA: `as: [a, b]` over sensitive rows showed a=abcd b=5555).
      std::function<void(const Value&)> add_items = [&](const Value& list) {
        for (const Value& item : list.as_list()) {
          masker.AddSecret(item.ToString());
          if (item.is(ValueType::kList)) add_items(item);
        }
      };
      add_items(*value);
    }
    variables_->Define(p.name, *value, true, false);
  }
  for (const VariableDef& v : package_->variables) {
    Value value = v.value;
    if (auto it = sets.find(v.name); it != sets.end()) {
      auto converted = Value(it->second).ConvertTo(v.type);
      if (!converted.ok()) errors.push_back(fmt::format("--set {}: {}", v.name, converted.status().message()));
      else value = *converted;
      sets.erase(it);
    }
    variables_->Define(v.name, value, v.read_only, v.raise_changed_event);
  }
  for (std::string& error : package_->UndeclaredSetErrors(sets)) errors.push_back(std::move(error));
  for (const auto& [name, value] : options_.params) {
    if (package_->FindParameter(name) == nullptr) {
      std::vector<std::string> declared;
      for (const ParameterDef& p : package_->parameters) declared.push_back(p.name);
      errors.push_back(fmt::format("parameter '{}' is not declared by package {} ({})", name,
                                   package_->name,
                                   declared.empty() ? "it has no parameters"
                                                    : fmt::format("it declares: {}",
                                                                  fmt::join(declared, ", "))));
    }
  }
  if (!errors.empty()) return InvalidArgument(fmt::format("{}", fmt::join(errors, "; ")));

  started_at_ = Now();
  variables_->Define("System::PackageName", Value(package_->name), true, false);
  variables_->Define("System::ExecutionId", Value(id_), true, false);
  variables_->Define("System::ParentExecutionId", Value(options_.parent_execution_id), true, false);
  variables_->Define("System::StartTime", Value(started_at_), true, false);
  variables_->Define("System::MachineName", Value(HostName()), true, false);
  variables_->Define("System::UserName", Value(UserName()), true, false);
  // A token_env that is a template, as it renders with the starting values (a task that
  // resolves it later masks what it then names too).
  for (const auto& [name, connection] : package_->connections) {
    auto token_env = connection.settings.find("token_env");
    if (connection.type != "agent" || token_env == connection.settings.end()) continue;
    auto rendered = token_env->second.RenderString(*variables_);
    const char* token = rendered.ok() ? std::getenv(rendered->c_str()) : nullptr;
    if (token != nullptr) masker.AddSecret(token);
  }
  return Status::Ok();
}

// ---- Execution: the scheduling loop -------------------------------------------------------------

RunResult Execution::Run() {
  auto wall_start = Clock::now();
  scheduler_ = std::this_thread::get_id();
  ExecutionRow row;
  row.id = id_;
  row.parent_id = options_.parent_execution_id;
  row.package = package_->name;
  row.package_sha256 = package_->sha256;
  row.host = HostName();
  row.pid = getpid();
  row.process = ProcessIdentity(row.pid);
  row.agent = options_.agent;
  row.job = options_.job;
  row.run_id = options_.run_id;
  row.status = "running";
  row.started_at = started_at_;
  row.operator_name = UserName();
  for (const ParameterDef& p : package_->parameters) {
    auto value = variables_->Get(p.name);
    row.parameters[p.name] = p.sensitive ? ParameterValue{"", true}
                                         : ParameterValue{value.ok() ? value->ToString() : "", false};
  }
  recorder_.RecordExecution(row);
  row.parameters.clear();  // written once, with the first row
  Emit(EventType::kOnPreExecute, "", fmt::format("package {} started (execution {})",
                                                 package_->name, id_),
       0, "", started_at_, started_at_);

  pool_ = std::make_unique<WorkerPool>(max_concurrent_);
  auto root = std::make_unique<Container>();
  root->tasks = &package_->tasks;
  root->scope = variables_.get();
  root->max_errors = package_->maximum_error_count;
  root->done = [this](Final final, const std::string& message) {
    root_done_ = true;
    root_final_ = final;
    if (errors_said_.empty()) SayError("", message);
  };
  Container* root_ptr = root.get();
  containers_.push_back(std::move(root));
  StartContainer(root_ptr);

  std::vector<Attempt*> done;
  while (true) {
    // Inline work (containers, loop iterations, expression tasks) runs in slices of at most
    // ~10 ms: a loop of inline work alone, which creates more as it goes, still gets its timers
    // fired and its cancel requests seen below.
    auto slice_end = Clock::now() + std::chrono::milliseconds(10);
    for (int n = 1; !local_.empty(); ++n) {
      auto fn = std::move(local_.front());
      local_.pop_front();
      fn();
      if (n % 256 == 0 && Clock::now() >= slice_end) break;
    }
    if (local_.empty()) {
      retired_containers_.clear();
      retired_loops_.clear();
      retired_scopes_.clear();
    }
    Dispatch();
    bool more_inline = !local_.empty();
    if (!more_inline && root_done_ && attempts_.empty()) break;

    auto deadline = Clock::now() + std::chrono::milliseconds(100);
    if (!timers_.empty()) deadline = std::min(deadline, timers_.begin()->first);
    if (!retries_.empty()) deadline = std::min(deadline, retries_.begin()->first);
    if (!more_inline) SendLeafMarks();
    {
      std::unique_lock lock(mu_);
      if (!more_inline) cv_.wait_until(lock, deadline, [&] { return !completions_.empty(); });
      done.swap(completions_);
    }
    for (Attempt* a : done) OnAttemptDone(a);
    // Ends of worker tasks go at once: inline work may follow for a while, and rows that other
    // threads record meanwhile must not overtake them.
    if (!done.empty()) SendLeafMarks();
    done.clear();
    auto now = Clock::now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      auto fn = std::move(timers_.begin()->second.fn);
      timers_.erase(timers_.begin());
      fn();
    }
    while (!retries_.empty() && retries_.begin()->first <= now) {
      auto start = std::move(retries_.begin()->second.start);
      retries_.erase(retries_.begin());
      start();
    }
    if (stops_) DropStoppedRetries();
    if (!canceled_ && external_cancel_ != nullptr && external_cancel_->canceled()) CancelAll();
  }
  pool_.reset();

  TaskResult result = TaskResult::kSuccess;
  if (canceled_) result = TaskResult::kCanceled;
  else if (package_failed_ || root_final_ == Final::kFailure) result = TaskResult::kFailure;
  else if (root_final_ == Final::kCanceled) result = TaskResult::kCanceled;
  result_.result = result;
  result_.execution_id = id_;
  result_.message = result == TaskResult::kSuccess ? "" : FirstError();
  if (result == TaskResult::kCanceled && result_.message.empty()) {
    const std::string cause = options_.cancel_cause ? options_.cancel_cause() : "";
    result_.message = cause.empty() ? "canceled" : "canceled by " + cause;
  }
  result_.duration = Clock::now() - wall_start;

  if (result == TaskResult::kFailure) {
    Emit(EventType::kOnError, "", PackageFailedMessage(package_->name, result_.message));
  }
  row.ended_at = Now();
  Emit(EventType::kOnPostExecute, "", fmt::format("package {} finished: {}", package_->name,
                                                  TaskResultName(result)),
       SsisResultCode(result), "", started_at_, *row.ended_at);
  row.status = result == TaskResult::kSuccess   ? "succeeded"
               : result == TaskResult::kFailure ? "failed"
                                                : "canceled";
  row.exit_code = result == TaskResult::kSuccess ? 0 : result == TaskResult::kFailure ? 1 : 3;
  row.message = result_.message;
  SendLeafMarks();
  recorder_.RecordExecution(std::move(row));
  return result_;
}

void Execution::RecordTaskRun(const std::string& path, const std::string& type, int attempt,
                              const std::string& status, DateTime started,
                              std::optional<DateTime> ended, const std::string& message,
                              const std::string& child_id, const std::string& agent) {
  if (!BeforeDirectRow()) return;
  recorder_.RecordTaskRun(MakeTaskRun(row_context(), path, type, attempt, status, started, ended,
                                      message, child_id, agent));
}

// ---- Containers and precedence ----------------------------------------------------------------

void Execution::StartContainer(Container* c) {
  size_t n = c->tasks->size();
  c->state.assign(n, Container::kWaiting);
  c->finals.assign(n, Final::kNotRun);
  c->remaining = static_cast<int>(n);
  if (n == 0) {
    Defer([this, c] { MaybeCompleteContainer(c); });
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    if ((*c->tasks)[i].after.empty()) StartNode(c, i);
  }
}

void Execution::StartNode(Container* c, size_t i) {
  const TaskDef& def = (*c->tasks)[i];
  if (c->stopping || c->canceled || StopAll()) return;
  c->state[i] = Container::kRunning;
  ++c->running;
  if (def.disabled) {
    Defer([this, c, i] { FinishNode(c, i, Final::kDisabled, "disabled"); });
    return;
  }
  if (!def.is_container()) {
    StartLeaf(c, i, 1);
    return;
  }
  StartContainerTask(c, i, 1);
}

void Execution::StartContainerTask(Container* c, size_t i, int try_number) {
  const TaskDef& def = (*c->tasks)[i];
  std::string path = c->ChildPath(def);
  int attempt = AttemptFor(c, path, try_number);
  DateTime started = Now();
  RecordTaskRun(path, ContainerTypeName(def.container), attempt, "running", started, std::nullopt,
                "");
  Emit(EventType::kOnPreExecute, path,
       attempt == 1 ? fmt::format("{} {} started", def.type, path)
                    : fmt::format("{} {} started (attempt {})", def.type, path, attempt),
       0, "", started, started);
  if (def.container == ContainerKind::kSequence) {
    auto child = std::make_unique<Container>();
    child->tasks = &def.children;
    child->scope = c->scope;
    child->path = path;
    child->max_errors = def.maximum_error_count;
    child->parent = c;
    child->may_rerun = c->may_rerun || def.retries > 0;
    Container* child_ptr = child.get();
    child->done = [this, c, i, path, started, attempt, try_number](
                      Final final, std::string message) {
      DateTime ended = Now();
      RecordTaskRun(path, "sequence", attempt, FinalStatus(final), started, ended, message);
      Emit(EventType::kOnPostExecute, path, fmt::format("sequence {} finished: {}", path,
                                                        FinalStatus(final)), 0, "", started, ended);
      EndContainerTry(c, i, try_number, final, message);
    };
    containers_.push_back(std::move(child));
    if (def.timeout) {
      AddTimer(*def.timeout, [this, child_ptr, path, &def] {
        if (child_ptr->finished || canceled_) return;
        const std::string message = SayTimedOut(path, *def.timeout);
        child_ptr->first_error = message;
        child_ptr->errors = std::max(child_ptr->errors, child_ptr->max_errors);
        CancelUnder(child_ptr, message);
      }, child_ptr);
    }
    StartContainer(child_ptr);
    return;
  }
  StartLoop(c, i, started, attempt, try_number);
}

bool Execution::WillRetry(const Container* c, const TaskDef& def, int try_number,
                          Final final) const {
  return final == Final::kFailure && try_number <= def.retries && !StopAll() && !c->canceled &&
         !c->stopping;
}

void Execution::Retry(Container* c, size_t i, int try_number, const std::string& reason,
                      const std::string& failed_agent) {
  const TaskDef& def = (*c->tasks)[i];
  Emit(EventType::kOnWarning, c->ChildPath(def),
       fmt::format("attempt {} of {} failed ({}); retrying {}", try_number, def.retries + 1,
                   reason,
                   def.retry_delay.count() > 0 ? "in " + FormatDuration(def.retry_delay)
                                               : std::string("now")));
  // The failure as FinishNode takes it, should no retry follow.
  std::string failure = def.is_container() ? reason : fmt::format("{}: {}", c->ChildPath(def), reason);
  auto start = [this, c, i, try_number, reason, failure, failed_agent] {
    const TaskDef& def = (*c->tasks)[i];
    // No retry once canceled or stopping: the last try's failure stands (as its task run says).
    if (canceled_ || c->canceled || StopAll() || c->stopping) {
      if (!def.is_container()) {
        // Its failure is final now: said as a leaf's last failure is (OnAttemptDone).
        ++result_.failed;
        std::string path = c->ChildPath(def);
        Emit(EventType::kOnError, path, reason);
        Emit(EventType::kOnTaskFailed, path, fmt::format("task {} failed", path));
      }
      FinishNode(c, i, Final::kFailure, failure);
      return;
    }
    if (def.is_container()) {
      StartContainerTask(c, i, try_number + 1);
    } else {
      StartLeaf(c, i, try_number + 1, failed_agent);
    }
  };
  retries_.emplace(Clock::now() + def.retry_delay, PendingRetry{c, std::move(start)});
}

void Execution::DropStoppedRetries() {
  stops_ = false;
  for (auto it = retries_.begin(); it != retries_.end();) {
    const Container* c = it->second.container;
    if (StopAll() || c->canceled || c->stopping) {
      Defer(std::move(it->second.start));
      it = retries_.erase(it);
    } else {
      ++it;
    }
  }
}

void Execution::EndContainerTry(Container* c, size_t i, int try_number, Final final,
                                const std::string& message) {
  const bool retried = WillRetry(c, (*c->tasks)[i], try_number, final);
  // What failed inside was tolerated, or is retried: not the run's error.
  if (retried || final == Final::kSuccess) ForgetErrorsUnder(c->ChildPath((*c->tasks)[i]));
  if (retried) {
    Retry(c, i, try_number, message);
    return;
  }
  FinishNode(c, i, final, message);
}

void Execution::SayError(const std::string& path, const std::string& message) {
  errors_said_.push_back({path, message});
}

std::string Execution::SayTimedOut(const std::string& path, std::chrono::milliseconds timeout) {
  const std::string what = "timed out after " + FormatDuration(timeout);
  const std::string message = path + ": " + what;
  Emit(EventType::kOnError, path, what);
  SayError(path, message);
  return message;
}

void Execution::ForgetErrorsUnder(const std::string& path) {
  std::erase_if(errors_said_, [&](const SaidError& e) {
    return e.path == path || (e.path.starts_with(path) && (e.path[path.size()] == '/' ||
                                                           e.path[path.size()] == '['));
  });
}

std::string Execution::FirstError() const {
  return errors_said_.empty() ? "" : errors_said_.front().message;
}

Execution::Readiness Execution::Evaluate(Container* c, size_t i, std::string& why_skipped) {
  const TaskDef& def = (*c->tasks)[i];
  int satisfied = 0, failed = 0, pending = 0;
  std::vector<std::string> unmet;  // how each failed constraint failed (QA: skips read alike)
  for (const Constraint& k : def.after) {
    if (c->state[k.task_index] != Container::kDone) {
      ++pending;
      continue;
    }
    Final f = c->finals[k.task_index];
    if (f == Final::kDisabled) f = Final::kSuccess;  // a disabled task lets its successors run
    bool ok = false;
    if (f != Final::kSuccess && f != Final::kFailure) {
      unmet.push_back(fmt::format("{} was {}", k.task, FinalStatus(f)));
    } else {
      ok = !k.on || *k.on == ConstraintValue::kCompletion ||
           (*k.on == ConstraintValue::kSuccess) == (f == Final::kSuccess);
      if (!ok) {
        unmet.push_back(fmt::format("{} {}, and this task runs on its {}", k.task,
                                    f == Final::kSuccess ? "succeeded" : "failed",
                                    f == Final::kSuccess ? "failure" : "success"));
      }
      if (ok && k.when) {
        auto v = k.when->Evaluate(*c->scope);
        if (!v.ok() || !v->is(ValueType::kBool)) {
          // An evaluation error names the expression itself.
          Emit(EventType::kOnWarning, c->ChildPath(def),
               v.ok() ? fmt::format("constraint `{}` is not a bool; treating it as false",
                                    k.when->text())
                      : fmt::format("constraint could not be evaluated ({}); treating it as false",
                                    v.status().message()));
          ok = false;
        } else {
          ok = v->as_bool();
        }
        if (!ok) {
          unmet.push_back(fmt::format("`{}` {} after {}", k.when->text(),
                                      !v.ok()                  ? "could not be evaluated"
                                      : v->is(ValueType::kBool) ? "was false"
                                                                : "was not a bool",
                                      k.task));
        }
      }
    }
    ok ? ++satisfied : ++failed;
  }
  auto skip = [&] {  // said only when skipping: this runs after every task's end
    why_skipped = fmt::format("{}: {}", def.after_or ? "none of its constraints held"
                                                     : "its constraints can no longer be met",
                              fmt::join(unmet, "; "));
    return Readiness::kSkip;
  };
  if (def.after_or) {
    if (satisfied > 0) return Readiness::kRun;
    return pending > 0 ? Readiness::kWait : skip();
  }
  if (failed > 0) return skip();
  return pending > 0 ? Readiness::kWait : Readiness::kRun;
}

void Execution::FinishNode(Container* c, size_t i, Final final, const std::string& message) {
  const TaskDef& def = (*c->tasks)[i];
  if (c->state[i] == Container::kRunning) --c->running;
  c->state[i] = Container::kDone;
  c->finals[i] = final;
  --c->remaining;
  if (final == Final::kSkipped || final == Final::kDisabled) {
    {  // A skipped container never started, so this is its only record.
      DateTime now = Now();
      std::string path = c->ChildPath(def);
      RecordTaskRun(path, def.type, AttemptFor(c, path, 1), "skipped", now, now,
                    final == Final::kDisabled ? "disabled"
                    : message.empty()         ? "constraints can no longer be met"
                                              : message);
    }
    // A container skipped whole counts once: its tasks never ran, and a summary of "0 skipped"
    // beside the overview's skipped branches read as if they had (QA).
    ++result_.skipped;
  }
  if (final == Final::kFailure) {
    ++c->errors;
    if (c->first_error.empty()) c->first_error = message;
    SayError(c->ChildPath(def), message);
    // Reaching maximum_error_count fails the container but, as in SSIS, precedence still
    // runs: a failure path (an alert, a clean-up) runs and the container still fails.
    if (def.fail_package_on_failure) {
      package_failed_ = true;
      stops_ = true;
    }
  }
  if (final == Final::kCanceled) {
    c->stopping = true;
    stops_ = true;
  }
  // Once stopped, successors are neither run nor skipped: they were never reached.
  bool stopped = c->stopping || c->canceled || StopAll();
  for (size_t s : stopped ? std::vector<size_t>{} : def.successors) {
    if (c->state[s] != Container::kWaiting) continue;
    std::string why_skipped;
    switch (Evaluate(c, s, why_skipped)) {
      case Readiness::kRun:
        StartNode(c, s);
        break;
      case Readiness::kSkip:
        c->state[s] = Container::kRunning;
        ++c->running;
        Defer([this, c, s, why_skipped] { FinishNode(c, s, Final::kSkipped, why_skipped); });
        break;
      case Readiness::kWait:
        break;
    }
  }
  MaybeCompleteContainer(c);
}

void Execution::MaybeCompleteContainer(Container* c) {
  if (c->finished) return;
  bool stopped = c->stopping || c->canceled || StopAll();
  if (c->remaining > 0 && !(stopped && c->running == 0)) return;
  c->finished = true;
  // Stopped: what remains was never reached. The summary had counted none of it (QA).
  result_.not_started += c->remaining;
  Final final = Final::kSuccess;
  if (c->canceled || canceled_) final = Final::kCanceled;
  else if (c->errors >= c->max_errors) final = Final::kFailure;
  else if (package_failed_) final = Final::kFailure;
  std::string message = c->first_error;
  if (final == Final::kFailure && message.empty()) {
    // Nothing failed in here: the package failed elsewhere (fail_package_on_failure).
    message = package_failed_ && c->errors == 0 && !errors_said_.empty()
                  ? "stopped because the package failed: " + FirstError()
                  : "a task failed";
  }
  Defer([c, final, message] { c->done(final, message); });
}

// ---- Leaf tasks -------------------------------------------------------------------------------

void Execution::StartLeaf(Container* c, size_t i, int try_number, std::string failed_agent) {
  uint64_t id = next_attempt_id_++;
  auto a = std::make_unique<Attempt>(*this, c, i, try_number, id, std::move(failed_agent));
  ready_.push_back(a.get());
  attempts_.emplace(id, std::move(a));
}

void Execution::Dispatch() {
  while (!ready_.empty()) {
    Attempt* a = ready_.front();
    if (StopAll() || a->container_->canceled) {
      ready_.pop_front();
      a->outcome_ = {TaskResult::kCanceled, "not started: the run was stopped", "", ""};
      // A retry that never started leaves its task failed, as its last try was.
      if (a->try_ > 1) ++result_.failed;
      else ++result_.not_started;
      Container* c = a->container_;
      size_t i = a->index_;
      attempts_.erase(a->id_);
      FinishNode(c, i, Final::kNotRun, "");
      continue;
    }
    if (running_leaves_ >= max_concurrent_) return;
    ready_.pop_front();
    Launch(a);
  }
}

void Execution::Launch(Attempt* a) {
  ++running_leaves_;
  a->started_at_ = Now();
  MarkLeaf(*a);
  if (a->def_.timeout) {
    uint64_t id = a->id_;
    AddTimer(*a->def_.timeout, [this, id] {
      auto it = attempts_.find(id);
      if (it == attempts_.end() || canceled_) return;
      it->second->timeout_message_ = fmt::format("timed out after {}", FormatDuration(*it->second->def_.timeout));
      it->second->token_.Cancel(CancelToken::Reason::kTimedOut);
    });
  }
  if (a->def_.task->runs_inline()) {
    a->outcome_ = a->def_.task->Execute(*a);
    Defer([this, a] { OnAttemptDone(a); });
    return;
  }
  SendLeafMarks();
  pool_->Submit([this, a] {
    a->outcome_ = a->def_.task->Execute(*a);
    PostCompletion(a);
  });
}

void Execution::OnAttemptDone(Attempt* a) {
  --running_leaves_;
  TaskOutcome& out = a->outcome_;
  if (a->token_.reason() == CancelToken::Reason::kTimedOut && out.result != TaskResult::kSuccess) {
    out.result = TaskResult::kFailure;
    out.message = a->timeout_message_ + (out.message.empty() ? "" : " (" + out.message + ")");
  } else if (a->token_.reason() == CancelToken::Reason::kCanceled &&
             out.result != TaskResult::kSuccess) {
    out.result = TaskResult::kCanceled;
  } else if (out.result == TaskResult::kCanceled) {
    // Nothing here canceled it (something outside stopped its work): its work is not done, so
    // it failed, and its successors see a failure rather than a run being stopped.
    out.result = TaskResult::kFailure;
    if (out.message.empty()) out.message = "canceled, though this run was not";
  }
  if (out.result == TaskResult::kFailure && out.message.empty()) out.message = "failed";
  std::string message = out.result == TaskResult::kFailure
                            ? fmt::format("{}: {}", a->path_, out.message)
                            : out.message;
  Final final = FromResult(out.result);
  bool will_retry = WillRetry(a->container_, a->def_, a->try_, final);
  if (out.result == TaskResult::kFailure && !will_retry) {
    Emit(EventType::kOnError, a->path_, out.message);
    Emit(EventType::kOnTaskFailed, a->path_, fmt::format("task {} failed", a->path_));
  }
  DateTime ended = Now();  // after its errors: the end comes last in time too
  MarkLeaf(*a, &out, ended, final);

  Container* c = a->container_;
  size_t i = a->index_;
  int try_number = a->try_;
  std::string out_message = out.message;
  std::string out_agent = out.agent;
  attempts_.erase(a->id_);  // `a` is gone from here on

  if (will_retry) {
    Retry(c, i, try_number, out_message, final == Final::kFailure ? out_agent : "");
    return;
  }
  if (final == Final::kSuccess) ++result_.succeeded;
  if (final == Final::kFailure) ++result_.failed;
  if (final == Final::kCanceled) ++result_.canceled;
  FinishNode(c, i, final, message);
}

// ---- Loops ------------------------------------------------------------------------------------

void Execution::StartLoop(Container* c, size_t i, DateTime started, int attempt,
                          int try_number) {
  const TaskDef& def = (*c->tasks)[i];
  auto loop = std::make_unique<Loop>();
  loop->owner = c;
  loop->index = i;
  loop->def = &def;
  loop->path = c->ChildPath(def);
  loop->started_at = started;
  loop->attempt = attempt;
  loop->try_number = try_number;
  Loop* l = loop.get();
  loops_.push_back(std::move(loop));
  if (def.timeout) {
    AddTimer(*def.timeout, [this, l] {
      if (l->finished || canceled_) return;
      CancelLoop(l, SayTimedOut(l->path, *l->def->timeout));
    }, l);
  }

  auto fail = [&](const std::string& what) {
    FailLoop(l, what);
    l->exhausted = true;
  };
  if (def.container == ContainerKind::kForeach) {
    if (def.foreach_list) {
      l->items = def.foreach_list->as_list();
      for (const TaskDef::ItemTemplate& at : def.foreach_list_templates) {
        auto v = at.text.Render(*c->scope);
        if (!v.ok()) {
          fail(fmt::format("`items`, item {}: {}", at.item + 1, v.status().message()));
          break;
        }
        Value& item = l->items[at.item];
        if (!at.column) {
          item = std::move(*v);
          continue;
        }
        if (v->is(ValueType::kList)) {  // as the loader refuses a list written there
          fail(fmt::format("`items`, item {}, value {}: a row holds scalars, and '{}' gave a list",
                           at.item + 1, *at.column + 1, at.text.text()));
          break;
        }
        Value::List row = item.as_list();
        row[*at.column] = std::move(*v);
        item = Value(std::move(row));
      }
    } else if (def.foreach_items) {
      auto v = def.foreach_items->Render(*c->scope);
      if (!v.ok()) fail(v.status().message());
      else if (v->is(ValueType::kList)) l->items = v->as_list();
      else fail(fmt::format("`items` gave the {} '{}', not a list", ValueTypeName(v->type()),
                            v->ToString()));
    } else if (def.foreach_files) {
      auto pattern = def.foreach_files->RenderString(*c->scope);
      if (!pattern.ok()) {
        fail(pattern.status().message());
      } else {
        std::string p = *pattern;
        if (!p.empty() && p[0] != '/') {
          // The package's folder is a path, not a pattern: its *, ? and [ match themselves.
          std::string dir =
              std::filesystem::absolute(std::filesystem::path(package_->dir)).lexically_normal().string();
          std::string escaped;
          for (char ch : dir) {
            if (ch == '*' || ch == '?' || ch == '[' || ch == '\\') escaped += '\\';
            escaped += ch;
          }
          if (!escaped.ends_with('/')) escaped += '/';
          p = escaped + p;
        }
        glob_t g{};
        // GLOB_MARK ends directories with '/': files only, as SSIS's file enumerator.
        int rc = glob(p.c_str(), GLOB_MARK, nullptr, &g);
        if (rc == 0) {
          for (size_t k = 0; k < g.gl_pathc; ++k) {
            std::string_view match = g.gl_pathv[k];
            if (!match.ends_with('/')) {
              l->items.emplace_back(std::filesystem::path(match).lexically_normal().string());
            }
          }
        } else if (rc != GLOB_NOMATCH) {
          fail(fmt::format("cannot list files matching {}", p));
        }
        globfree(&g);
      }
    }
    if (def.foreach_as_values && !l->exhausted) {
      // Each item gives one value per `as` name: a short row would leave names unset.
      for (size_t k = 0; k < l->items.size(); ++k) {
        const Value& item = l->items[k];
        if (!item.is(ValueType::kList) || item.as_list().size() < def.foreach_as.size()) {
          const size_t names = def.foreach_as.size();
          fail(fmt::format("item {} is {}; `as` takes {} value{} from each item, a list such as "
                           "a row of `result: rows`", k + 1,
                           item.is(ValueType::kList)
                               ? fmt::format("a list of {}", item.as_list().size())
                               : fmt::format("the {} '{:.100}'", ValueTypeName(item.type()),
                                             item.ToString()),
                           names, names == 1 ? "" : "s"));
          break;
        }
      }
    }
  } else {
    for (const Expression& e : def.for_init) {
      auto v = e.Evaluate(*c->scope);
      if (!v.ok()) {
        fail("init: " + v.status().message());
        break;
      }
    }
  }
  Defer([this, l] { PumpLoop(l); });
}

void Execution::PumpLoop(Loop* l) {
  if (l->finished) return;
  const TaskDef& def = *l->def;
  Container* owner = l->owner;
  int parallel = def.container == ContainerKind::kForeach ? def.foreach_max_concurrent : 1;
  while (!l->exhausted && !l->stopping && !StopAll() && !owner->canceled && l->running < parallel) {
    Scope* scope = owner->scope;
    if (def.container == ContainerKind::kForeach) {
      if (l->next >= l->items.size()) {
        l->exhausted = true;
        break;
      }
      const Value& item = l->items[l->next];
      std::vector<Value> values;
      if (def.foreach_as_values) {  // StartLoop checked each item's shape
        const Value::List& list = item.as_list();
        values.assign(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(def.foreach_as.size()));
      } else {
        values.push_back(item);
      }
      l->scopes.push_back(std::make_unique<LoopScope>(*owner->scope, def.foreach_as,
                                                      std::move(values)));
      scope = l->scopes.back().get();
      ++l->next;
    } else {
      auto v = def.for_condition->Evaluate(*owner->scope);
      if (!v.ok() || !v->is(ValueType::kBool)) {
        const std::string& origin = def.for_condition->origin();
        FailLoop(l, v.ok() ? fmt::format("condition `{}` is not a bool{}",
                                         def.for_condition->text(),
                                         origin.empty() ? "" : " (" + origin + ")")
                           : "condition: " + v.status().message());
        l->exhausted = true;
        break;
      }
      if (!v->as_bool()) {
        l->exhausted = true;
        break;
      }
    }
    ++l->iterations;
    ++l->running;
    auto body = std::make_unique<Container>();
    body->tasks = &def.children;
    body->scope = scope;
    body->path = fmt::format("{}[{}]", l->path, l->iterations);
    body->max_errors = 1;  // a failed task fails its iteration; the loop counts iterations
    body->parent = owner;
    body->loop = l;
    body->may_rerun = owner->may_rerun || def.retries > 0;
    Container* b = body.get();
    body->done = [this, l, b](Final final, std::string message) {
      OnIterationDone(l, final, message);
      Defer([this, b] { Retire(b); });
    };
    containers_.push_back(std::move(body));
    StartContainer(b);
  }
  if (l->running == 0 && (l->exhausted || l->stopping || StopAll() || owner->canceled)) {
    Final final = Final::kSuccess;
    if (owner->canceled || canceled_) final = Final::kCanceled;
    else if (l->errors >= def.maximum_error_count || package_failed_) final = Final::kFailure;
    std::string message = l->first_error.empty() ? l->stopped_by : l->first_error;
    if (final == Final::kFailure && message.empty()) message = l->path + ": an iteration failed";
    DateTime ended = Now();
    RecordTaskRun(l->path, def.type, l->attempt, FinalStatus(final), l->started_at, ended,
                  fmt::format("{} iteration{}{}", l->iterations, l->iterations == 1 ? "" : "s",
                              message.empty() ? "" : "; " + message));
    Emit(EventType::kOnPostExecute, l->path,
         fmt::format("{} {} finished after {} iteration{}: {}", def.type, l->path, l->iterations,
                     l->iterations == 1 ? "" : "s", FinalStatus(final)),
         0, "", l->started_at, ended);
    l->finished = true;
    // Stopped by a cancel, the package's failure or its own maximum_error_count, the items it
    // never reached count as never started, one each (QA: a canceled foreach of 9 summed to 3;
    // one stopped by its errors left its last items out of the summary).
    // Not when the loop is tried again: its items are reached then.
    if ((StopAll() || owner->canceled || l->stopping) &&
        !WillRetry(owner, def, l->try_number, final)) {
      result_.not_started += static_cast<int>(l->items.size() - std::min(l->next, l->items.size()));
    }
    EndContainerTry(owner, l->index, l->try_number, final, message);
  }
}

void Execution::FailLoop(Loop* l, const std::string& what) {
  Emit(EventType::kOnError, l->path, what);
  ++result_.failed;  // no task of it failed: the summary had said "0 failed" of a failed run
  l->errors = l->def->maximum_error_count;
  l->first_error = fmt::format("{}: {}", l->path, what);
  // Said now, in the order it is said: the loop ends later, after loops that failed after it
  // had ended (QA).
  SayError(l->path, l->first_error);
}

void Execution::OnIterationDone(Loop* l, Final final, const std::string& message) {
  const TaskDef& def = *l->def;
  --l->running;
  if (final == Final::kFailure) {
    ++l->errors;
    if (l->first_error.empty()) l->first_error = message;
    if (l->errors >= def.maximum_error_count) l->stopping = true;
  }
  if (final == Final::kCanceled) {
    l->stopping = true;
    ++l->canceled;
  }
  if (def.container == ContainerKind::kFor && !l->stopping) {
    for (const Expression& e : def.for_assign) {
      auto v = e.Evaluate(*l->owner->scope);
      if (!v.ok()) {
        FailLoop(l, "assign: " + v.status().message());
        l->stopping = true;
        break;
      }
    }
  }
  if (def.container == ContainerKind::kForeach && !l->items.empty()) {
    // One event per tenth of the way (SSIS reports progress in percent), not per iteration.
    int total = static_cast<int>(l->items.size());
    int done = l->iterations - l->running - l->canceled;
    int percent = 100 * done / total;
    if (percent / 10 > l->reported_percent / 10 || done == total) {
      l->reported_percent = percent;
      Emit(EventType::kOnProgress, l->path, fmt::format("{} of {} iterations done", done, total),
           percent);
    }
  }
  PumpLoop(l);
}

void Execution::Retire(Container* body) {
  auto within = [body](const Container* c) { return c != nullptr && c->Within(body); };
  // Anything still pointing into it keeps it: a live attempt, a pending retry, a running loop.
  for (const auto& [id, a] : attempts_) {
    if (within(a->container_)) return;
  }
  for (const auto& [when, retry] : retries_) {
    if (within(retry.container)) return;
  }
  auto first = std::find_if(containers_.rbegin(), containers_.rend(),
                            [body](const auto& c) { return c.get() == body; });
  if (first == containers_.rend()) return;
  auto from = std::prev(first.base());  // its descendants were made after it
  std::set<const void*> gone;
  for (auto it = from; it != containers_.end(); ++it) {
    if ((*it)->Within(body)) gone.insert(it->get());
  }
  for (const auto& l : loops_) {
    if (gone.count(l->owner) != 0 && !l->finished) return;
  }
  for (auto it = loops_.begin(); it != loops_.end();) {
    if (gone.count((*it)->owner) == 0) {
      ++it;
      continue;
    }
    gone.insert(it->get());
    retired_loops_.push_back(std::move(*it));
    it = loops_.erase(it);
  }
  for (auto it = timers_.begin(); it != timers_.end();) {
    it = gone.count(it->second.owner) != 0 ? timers_.erase(it) : std::next(it);
  }
  // A foreach iteration's scope, held by its loop.
  if (body->loop != nullptr) {
    auto& scopes = body->loop->scopes;
    auto scope = std::find_if(scopes.rbegin(), scopes.rend(),
                              [body](const auto& s) { return s.get() == body->scope; });
    if (scope != scopes.rend()) {
      retired_scopes_.push_back(std::move(*scope));
      scopes.erase(std::prev(scope.base()));
    }
  }
  for (auto it = from; it != containers_.end();) {
    if (gone.count(it->get()) == 0) {
      ++it;
      continue;
    }
    retired_containers_.push_back(std::move(*it));
    it = containers_.erase(it);
  }
}

// ---- Cancellation -----------------------------------------------------------------------------

void Execution::CancelUnder(Container* c, const std::string& message) {
  c->stopping = true;
  stops_ = true;
  for (auto& [id, a] : attempts_) {
    if (!a->container_->Within(c)) continue;
    a->timeout_message_ = "stopped: " + message;
    a->token_.Cancel(CancelToken::Reason::kTimedOut);
  }
  for (auto& other : containers_) {
    if (other->Within(c)) other->stopping = true;
  }
  for (auto& l : loops_) {
    if (!l->owner->Within(c) || l->finished) continue;
    // Stopped before its end, the loop failed, as when an iteration was running and failed:
    // a loop of inline tasks that the timeout caught between iterations had ended "succeeded".
    l->stopping = true;
    l->errors = std::max(l->errors, l->def->maximum_error_count);
    l->stopped_by = fmt::format("{}: stopped: {}", l->path, message);
  }
  Defer([this, c] { MaybeCompleteContainer(c); });
}

// A loop past its timeout: no new iterations, running ones stopped, the loop fails.
void Execution::CancelLoop(Loop* l, const std::string& message) {
  l->stopping = true;
  stops_ = true;
  l->errors = std::max(l->errors, l->def->maximum_error_count);
  if (l->first_error.empty()) l->first_error = message;
  for (auto& [id, a] : attempts_) {
    if (!a->container_->WithinLoop(l)) continue;
    a->timeout_message_ = "stopped: " + message;
    a->token_.Cancel(CancelToken::Reason::kTimedOut);
  }
  for (auto& c : containers_) {
    if (c->WithinLoop(l)) c->stopping = true;
  }
  Defer([this, l] { PumpLoop(l); });
}

void Execution::CancelAll() {
  canceled_ = true;
  // A child package's run stopped by its task's timeout says so (QA: it read as a cancel).
  const bool timed_out = external_cancel_ != nullptr &&
                         external_cancel_->reason() == CancelToken::Reason::kTimedOut;
  Emit(EventType::kOnWarning, "",
       timed_out ? "the task running this package timed out: stopping every running task"
                 : "cancel requested: stopping every running task");
  for (auto& [id, a] : attempts_) a->token_.Cancel(CancelToken::Reason::kCanceled);
  for (auto& c : containers_) {
    c->canceled = true;
    Defer([this, p = c.get()] { MaybeCompleteContainer(p); });
  }
  for (auto& l : loops_) {
    if (l->running == 0) Defer([this, p = l.get()] { PumpLoop(p); });
  }
  // Retries waiting on a timer end now rather than after their delay.
  auto pending = std::move(timers_);
  timers_.clear();
  for (auto& [when, timer] : pending) Defer(std::move(timer.fn));
  DropStoppedRetries();
}

}  // namespace

Result<RunResult> Engine::Run(std::shared_ptr<const Package> package, const RunOptions& options,
                              const CancelToken* cancel) {
  Execution exec(*this, std::move(package), options, cancel);
  RETURN_IF_ERROR(exec.Prepare());
  return exec.Run();
}

}  // namespace fanout
