// Tests of Engine::Run with a scriptable fake task type: precedence, skipping, error counts,
// retries, timeouts, cancellation, concurrency limits, loops, --set handling, masking and events.
// The tasks module is not linked here; the `fake` type below stands in for real tasks.
#include "fanout/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "catalog/test_util.h"
#include "fanout/catalog.h"
#include "fanout/package.h"
#include "fanout/task.h"

namespace fanout {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

// A blocking fake gives up after this long, so a missing cancel fails a test instead of hanging
// it.
constexpr auto kBlockSafety = 2s;

// ---- What the fake tasks did ------------------------------------------------------------------

struct Call {
  std::string path;
  int attempt = 0;
  std::string failed_agent;  // TaskContext::failed_agent()
  Clock::time_point start;
  Clock::time_point end;
  std::string log;
};

// Shared by every fake task of a test; reset before each test. Thread-safe.
class World {
 public:
  static World& Get() {
    static World* world = new World();
    return *world;
  }

  void Reset() {
    std::lock_guard lock(mu_);
    calls_.clear();
    started_.clear();
    finished_.clear();
    failures_.clear();
    running_ = 0;
    max_running_ = 0;
  }

  void Started(const std::string& path) {
    {
      std::lock_guard lock(mu_);
      started_.insert(path);
      max_running_ = std::max(max_running_, ++running_);
    }
    cv_.notify_all();
  }

  void Finished(Call call) {
    {
      std::lock_guard lock(mu_);
      --running_;
      finished_.insert(call.path);
      calls_.push_back(std::move(call));
    }
    cv_.notify_all();
  }

  bool WaitStarted(const std::string& path, Clock::duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return started_.count(path) != 0; });
  }
  bool WaitFinished(const std::string& path, Clock::duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return finished_.count(path) != 0; });
  }

  // How many times `key` has asked so far, this call included.
  int CountAttempt(const std::string& key) {
    std::lock_guard lock(mu_);
    return ++failures_[key];
  }

  std::vector<Call> Calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<Call> CallsOf(const std::string& path) const {
    std::vector<Call> out;
    for (const Call& c : Calls()) {
      if (c.path == path) out.push_back(c);
    }
    return out;
  }
  bool Ran(const std::string& path) const { return !CallsOf(path).empty(); }
  int max_running() const {
    std::lock_guard lock(mu_);
    return max_running_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Call> calls_;
  std::multiset<std::string> started_;
  std::multiset<std::string> finished_;
  std::map<std::string, int> failures_;
  int running_ = 0;
  int max_running_ = 0;
};

// ---- The fake task type -----------------------------------------------------------------------

// Keys: result (template: success|failure|canceled), message (failure text), sleep_ms, block
// (until canceled), set + value (assign a variable on success), fail_times (fail the first N
// attempts), log (template recorded with the call), emit (template sent as OnInformation),
// wait_for (template: a task path that must have started before this one goes on), agent (the
// agent a failure names, as an agent-job's does).
class FakeTask : public Task {
 public:
  std::optional<Template> result, message, value, log, emit, wait_for, agent;
  int64_t sleep_ms = 0;
  int64_t fail_times = 0;
  bool block = false;
  bool inline_ = false;  // runs on the scheduler's thread, as expression tasks do
  std::string set;

  bool runs_inline() const override { return inline_; }

  TaskOutcome Execute(TaskContext& ctx) const override {
    World& world = World::Get();
    Call call;
    call.path = ctx.task_path();
    call.attempt = ctx.attempt();
    call.failed_agent = ctx.failed_agent();
    call.start = Clock::now();
    world.Started(call.path);
    TaskOutcome out = Body(ctx, call);
    call.end = Clock::now();
    world.Finished(std::move(call));
    return out;
  }

 private:
  static std::string Render(const std::optional<Template>& t, TaskContext& ctx,
                            const std::string& fallback) {
    if (!t) return fallback;
    auto r = t->RenderString(ctx.scope());
    return r.ok() ? *r : "<render error: " + r.status().message() + ">";
  }

  TaskOutcome Body(TaskContext& ctx, Call& call) const {
    call.log = Render(log, ctx, "");
    if (emit) ctx.Emit(EventType::kOnInformation, Render(emit, ctx, ""));
    if (wait_for) {
      std::string other = Render(wait_for, ctx, "");
      if (!World::Get().WaitStarted(other, 2s)) {
        return TaskOutcome::Failure("gave up waiting for " + other + " to start");
      }
    }
    if (sleep_ms > 0 && !ctx.cancel().SleepFor(milliseconds(sleep_ms))) {
      return TaskOutcome::Failure("interrupted");
    }
    if (block) {
      if (!ctx.cancel().SleepFor(std::chrono::duration_cast<milliseconds>(kBlockSafety))) {
        return TaskOutcome::Failure("interrupted");
      }
      call.log += "[never canceled]";
      return TaskOutcome::Success();
    }
    std::string what = Render(result, ctx, "success");
    if (fail_times > 0 && World::Get().CountAttempt(ctx.task_path()) <= fail_times) {
      what = "failure";
    }
    if (what == "failure") {
      TaskOutcome failed = TaskOutcome::Failure(Render(message, ctx, "fake failure"));
      failed.agent = Render(agent, ctx, "");
      return failed;
    }
    if (what == "canceled") return {TaskResult::kCanceled, "fake canceled", "", ""};
    if (!set.empty()) {
      Value v;
      if (value) {
        auto r = value->Render(ctx.scope());
        if (!r.ok()) return TaskOutcome::Failure(r.status().message());
        v = *r;
      }
      Status s = ctx.scope().Set(set, v);
      if (!s.ok()) return TaskOutcome::Failure(s.message());
    }
    return TaskOutcome::Success();
  }
};

class FakeType : public TaskType {
 public:
  std::string_view name() const override { return "fake"; }
  std::vector<std::string_view> keys() const override {
    return {"result",     "message", "sleep_ms", "block",    "set",   "value",
            "fail_times", "log",     "emit",     "wait_for", "inline", "agent"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto t = std::make_shared<FakeTask>();
    t->result = parser.TemplateAt(node, "result", false);
    t->message = parser.TemplateAt(node, "message", false);
    t->value = parser.TemplateAt(node, "value", false);
    t->log = parser.TemplateAt(node, "log", false);
    t->emit = parser.TemplateAt(node, "emit", false);
    t->wait_for = parser.TemplateAt(node, "wait_for", false);
    t->agent = parser.TemplateAt(node, "agent", false);
    t->sleep_ms = parser.IntAt(node, "sleep_ms").value_or(0);
    t->fail_times = parser.IntAt(node, "fail_times").value_or(0);
    t->block = parser.BoolAt(node, "block").value_or(false);
    t->inline_ = parser.BoolAt(node, "inline").value_or(false);
    if (auto s = parser.StringAt(node, "set", false)) {
      parser.CheckVariable(node["set"], *s);
      t->set = *s;
    }
    return t;
  }
};

// ---- Recording --------------------------------------------------------------------------------

struct Store {
  std::mutex mu;
  std::vector<ExecutionRow> executions;         // every write, in order
  std::map<std::string, TaskRunRow> task_runs;  // path#attempt -> last row written
  std::vector<Event> events;
};

class FakeCatalog : public catalog::testing::WriteOnlyCatalog {
 public:
  explicit FakeCatalog(std::shared_ptr<Store> store) : store_(std::move(store)) {}
  Status Write(const CatalogBatch& batch) override {
    std::lock_guard lock(store_->mu);
    for (const auto& row : batch.executions) store_->executions.push_back(row);
    for (const auto& row : batch.task_runs) {
      store_->task_runs[row.task_path + "#" + std::to_string(row.attempt)] = row;
    }
    for (const auto& e : batch.events) store_->events.push_back(e);
    return Status::Ok();
  }

 private:
  std::shared_ptr<Store> store_;
};

struct SinkLog {
  std::mutex mu;
  std::vector<Event> events;
};

class MemorySink : public EventSink {
 public:
  explicit MemorySink(std::shared_ptr<SinkLog> log) : log_(std::move(log)) {}
  void Write(const Event& event) override {
    std::lock_guard lock(log_->mu);
    log_->events.push_back(event);
  }

 private:
  std::shared_ptr<SinkLog> log_;
};

// ---- Fixture ----------------------------------------------------------------------------------

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { RegisterTaskType(std::make_unique<FakeType>()); }
  void SetUp() override { World::Get().Reset(); }

  // A thread that cancels `token` (as SIGINT does) after `delay`.
  static std::jthread CancelAfter(CancelToken& token, std::chrono::milliseconds delay) {
    return std::jthread([&token, delay] {
      std::this_thread::sleep_for(delay);
      token.Cancel(CancelToken::Reason::kCanceled);
    });
  }

  std::shared_ptr<const Package> Load(const std::string& yaml) {
    Diagnostics diags;
    auto r = LoadPackageText(yaml, "/tmp/fanout-engine-test/p.yaml", diags);
    EXPECT_TRUE(r.ok()) << diags.ToString();
    return r.ok() ? *r : nullptr;
  }

  // Runs a package through a Recorder with a fake catalog and a memory sink; afterwards the
  // events, task runs and execution rows are in events_, runs_ and executions_.
  Result<RunResult> Run(const std::string& yaml, const RunOptions& options = {},
                        const CancelToken* cancel = nullptr) {
    auto pkg = Load(yaml);
    if (!pkg) return Internal("the test package did not load");
    auto store = std::make_shared<Store>();
    auto sink_log = std::make_shared<SinkLog>();
    std::vector<std::unique_ptr<EventSink>> sinks;
    sinks.push_back(std::make_unique<MemorySink>(sink_log));
    std::optional<Result<RunResult>> result;
    auto start = Clock::now();
    {
      Recorder recorder(std::make_unique<FakeCatalog>(store), std::move(sinks),
                        std::make_shared<Masker>());
      Engine engine(recorder);
      result.emplace(engine.Run(pkg, options, cancel));
      recorder.Flush();
    }
    elapsed_ = Clock::now() - start;
    {
      std::lock_guard lock(sink_log->mu);
      events_ = sink_log->events;
    }
    std::lock_guard lock(store->mu);
    runs_ = store->task_runs;
    executions_ = store->executions;
    catalog_events_ = store->events;
    return *result;
  }

  RunResult MustRun(const std::string& yaml, const RunOptions& options = {},
                    const CancelToken* cancel = nullptr) {
    auto r = Run(yaml, options, cancel);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : RunResult{};
  }

  // The status of the last attempt recorded for `path` ("" when none was recorded).
  std::string StatusOf(const std::string& path) const {
    const TaskRunRow* last = nullptr;
    for (const auto& [key, row] : runs_) {
      if (row.task_path == path && (last == nullptr || row.attempt > last->attempt)) last = &row;
    }
    return last == nullptr ? "" : last->status;
  }
  const TaskRunRow* RunOf(const std::string& path, int attempt = 1) const {
    auto it = runs_.find(path + "#" + std::to_string(attempt));
    return it == runs_.end() ? nullptr : &it->second;
  }
  int AttemptsRecorded(const std::string& path) const {
    int n = 0;
    for (const auto& [key, row] : runs_) n += row.task_path == path ? 1 : 0;
    return n;
  }

  std::vector<Event> EventsOf(EventType type, const std::string& source = "") const {
    std::vector<Event> out;
    for (const Event& e : events_) {
      if (e.type == type && (source.empty() || e.source == source)) out.push_back(e);
    }
    return out;
  }
  bool AnyEventContains(const std::string& text) const {
    for (const Event& e : events_) {
      if (e.message.find(text) != std::string::npos ||
          e.data_bytes.find(text) != std::string::npos ||
          e.source.find(text) != std::string::npos) {
        return true;
      }
    }
    return false;
  }
  std::string AllEvents() const {
    std::string out;
    for (const Event& e : events_) {
      out += std::string(EventName(e.type)) + " [" + e.source + "] " + e.message + "\n";
    }
    return out;
  }

  // Task paths of the calls, in the order they finished.
  static std::vector<std::string> Logs(const std::vector<Call>& calls) {
    std::vector<std::string> out;
    for (const Call& c : calls) out.push_back(c.log);
    return out;
  }

  std::vector<Event> events_;
  std::vector<Event> catalog_events_;
  std::map<std::string, TaskRunRow> runs_;
  std::vector<ExecutionRow> executions_;
  Clock::duration elapsed_{};
};

// ---- Precedence -------------------------------------------------------------------------------

TEST_F(EngineTest, SuccessConstraintsRunInOrder) {
  RunResult r = MustRun(R"(package: chain
tasks:
  a: {type: fake, sleep_ms: 5}
  b: {type: fake, after: [a]}
  c: {type: fake, after: [b]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(r.succeeded, 3);
  EXPECT_EQ(r.failed, 0);
  EXPECT_EQ(r.skipped, 0);
  EXPECT_EQ(r.message, "");
  auto a = World::Get().CallsOf("a"), b = World::Get().CallsOf("b"), c = World::Get().CallsOf("c");
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_LE(a[0].end, b[0].start);
  EXPECT_LE(b[0].end, c[0].start);
  for (const char* t : {"a", "b", "c"}) EXPECT_EQ(StatusOf(t), "succeeded") << t;
}

TEST_F(EngineTest, FailureAndCompletionConstraints) {
  RunResult r = MustRun(R"(package: fail
tasks:
  a: {type: fake, result: failure, message: boom}
  on_fail: {type: fake, after: [{task: a, on: failure}]}
  on_ok: {type: fake, after: [a]}
  on_done: {type: fake, after: [{task: a, on: completion}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure) << "one error reaches maximum_error_count 1";
  EXPECT_NE(r.message.find("a: boom"), std::string::npos) << r.message;
  EXPECT_TRUE(World::Get().Ran("on_fail"));
  EXPECT_TRUE(World::Get().Ran("on_done"));
  EXPECT_FALSE(World::Get().Ran("on_ok"));
  EXPECT_EQ(StatusOf("a"), "failed");
  EXPECT_EQ(StatusOf("on_ok"), "skipped");
  // Its record says which constraint failed and how (QA: every skip read the same).
  ASSERT_NE(RunOf("on_ok"), nullptr);
  EXPECT_EQ(RunOf("on_ok")->message, "its constraints can no longer be met: a failed, and this "
                                     "task runs on its success");
  EXPECT_EQ(StatusOf("on_fail"), "succeeded");
  EXPECT_EQ(r.succeeded, 2);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.skipped, 1);
  ASSERT_EQ(EventsOf(EventType::kOnError, "a").size(), 1u) << AllEvents();
  EXPECT_EQ(EventsOf(EventType::kOnError, "a")[0].message, "boom");
  EXPECT_EQ(EventsOf(EventType::kOnTaskFailed, "a").size(), 1u);
}

// A task that ends canceled when nothing in the run canceled it (a child package's process
// stopped from outside) did not do its work: it failed, and the package with it.
TEST_F(EngineTest, ACancelNobodyAskedForIsAFailure) {
  RunResult r = MustRun(R"(package: stopped-outside
tasks:
  a: {type: fake, result: canceled}
  next: {type: fake, after: [a]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure) << r.message;
  EXPECT_NE(r.message.find("a: fake canceled"), std::string::npos) << r.message;
  EXPECT_EQ(StatusOf("a"), "failed");
  EXPECT_EQ(StatusOf("next"), "skipped");
  ASSERT_NE(RunOf("next"), nullptr);
  EXPECT_EQ(RunOf("next")->message, "its constraints can no longer be met: a failed, and this "
                                    "task runs on its success");
  EXPECT_FALSE(World::Get().Ran("next"));
  EXPECT_EQ(EventsOf(EventType::kOnError, "a").size(), 1u) << AllEvents();
}

TEST_F(EngineTest, CompletionAndFailureAfterSuccess) {
  RunResult r = MustRun(R"(package: ok
tasks:
  a: {type: fake}
  on_fail: {type: fake, after: [{task: a, on: failure}]}
  on_done: {type: fake, after: [{task: a, on: completion}]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_TRUE(World::Get().Ran("on_done"));
  EXPECT_FALSE(World::Get().Ran("on_fail"));
  EXPECT_EQ(StatusOf("on_fail"), "skipped");
}

TEST_F(EngineTest, WhenAloneIgnoresTheResult) {
  RunResult r = MustRun(R"(package: expr
maximum_error_count: 5
variables:
  x: {type: int, value: 0}
tasks:
  a: {type: fake, result: failure}
  expr_true: {type: fake, after: [{task: a, when: "@x == 0"}]}
  expr_false: {type: fake, after: [{task: a, when: "@x > 0"}]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_TRUE(World::Get().Ran("expr_true")) << "SSIS Expression: the result does not matter";
  EXPECT_FALSE(World::Get().Ran("expr_false"));
  EXPECT_EQ(StatusOf("expr_false"), "skipped");
  ASSERT_NE(RunOf("expr_false"), nullptr);
  EXPECT_EQ(RunOf("expr_false")->message,
            "its constraints can no longer be met: `@x > 0` was false after a");
}

TEST_F(EngineTest, WhenWithOnNeedsBoth) {
  RunResult r = MustRun(R"(package: expr-and
variables:
  rows: {type: int, value: 0}
tasks:
  count: {type: fake, set: rows, value: "5"}
  both_hold: {type: fake, after: [{task: count, on: success, when: "@rows == 5"}]}
  expr_false: {type: fake, after: [{task: count, on: success, when: "@rows > 5"}]}
  wrong_value: {type: fake, after: [{task: count, on: failure, when: "@rows == 5"}]}
  completion: {type: fake, after: [{task: count, on: completion, when: "@rows == 5"}]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_TRUE(World::Get().Ran("both_hold")) << "the expression sees the value count set";
  EXPECT_TRUE(World::Get().Ran("completion"));
  EXPECT_FALSE(World::Get().Ran("expr_false"));
  EXPECT_FALSE(World::Get().Ran("wrong_value"));
  EXPECT_EQ(r.skipped, 2);
}

TEST_F(EngineTest, NonBooleanWhenIsFalseWithAWarning) {
  RunResult r = MustRun(R"(package: expr-int
variables:
  rows: {type: int, value: 0}
tasks:
  a: {type: fake}
  b: {type: fake, after: [{task: a, when: "@rows == 0 ? @rows + 1 : false"}]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_FALSE(World::Get().Ran("b"));
  EXPECT_EQ(StatusOf("b"), "skipped");
  ASSERT_EQ(EventsOf(EventType::kOnWarning, "b").size(), 1u) << AllEvents();
  EXPECT_NE(EventsOf(EventType::kOnWarning, "b")[0].message.find("@rows + 1"), std::string::npos);
}

TEST_F(EngineTest, AfterLogicOrNeedsAnyOne) {
  RunResult r = MustRun(R"(package: or
maximum_error_count: 5
tasks:
  a: {type: fake}
  b: {type: fake, result: failure, wait_for: any}
  any: {type: fake, after_logic: or, after: [a, b]}
  all: {type: fake, after: [a, b]}
  none: {type: fake, after_logic: or, after: [{task: a, on: failure}, b]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(StatusOf("b"), "failed");
  EXPECT_TRUE(World::Get().Ran("any"));
  EXPECT_FALSE(World::Get().Ran("all"));
  EXPECT_FALSE(World::Get().Ran("none"));
  EXPECT_EQ(StatusOf("all"), "skipped");
  EXPECT_EQ(StatusOf("none"), "skipped");
  // b ends only once `any` has started: `or` must not wait for every predecessor.
  ASSERT_EQ(EventsOf(EventType::kOnError, "b").size(), 1u) << AllEvents();
  EXPECT_EQ(EventsOf(EventType::kOnError, "b")[0].message, "fake failure")
      << "b failed by its own result, not by giving up on `any`";
}

TEST_F(EngineTest, SkippingPropagatesAndSkippedTasksNeverRun) {
  RunResult r = MustRun(R"(package: skip
tasks:
  a: {type: fake, result: failure}
  b: {type: fake, after: [a]}
  c: {type: fake, after: [b]}
  d: {type: fake, after: [{task: b, on: completion}]}
  e: {type: fake, after: [{task: c, on: failure}]}
  f: {type: fake, after: [{task: c, when: "true"}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  for (const char* t : {"b", "c", "d", "e", "f"}) {
    EXPECT_FALSE(World::Get().Ran(t)) << t;
    EXPECT_EQ(StatusOf(t), "skipped") << t;
    const TaskRunRow* row = RunOf(t);
    ASSERT_NE(row, nullptr) << t;
    EXPECT_EQ(row->task_type, "fake");
  }
  EXPECT_EQ(r.skipped, 5);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.succeeded, 0);
  EXPECT_TRUE(EventsOf(EventType::kOnPreExecute, "b").empty()) << "a skipped task never starts";
}

TEST_F(EngineTest, SkippedContainerIsRecordedAndItsChildrenNeverRun) {
  RunResult r = MustRun(R"(package: skip-container
tasks:
  a: {type: fake, result: failure}
  seq:
    type: sequence
    after: [a]
    tasks:
      x: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("seq/x"));
  EXPECT_EQ(StatusOf("seq"), "skipped");
  EXPECT_EQ(r.skipped, 1) << "a container skipped whole counts once (the summary said 0)";
}

TEST_F(EngineTest, DisabledTaskLetsSuccessorsRun) {
  RunResult r = MustRun(R"(package: disabled
tasks:
  a: {type: fake}
  off: {type: fake, result: failure, disabled: true, after: [a]}
  b: {type: fake, after: [off]}
  c: {type: fake, after: [{task: off, on: failure}]}
  seq_off:
    type: sequence
    disabled: true
    tasks:
      inner: {type: fake}
  d: {type: fake, after: [seq_off]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_FALSE(World::Get().Ran("off"));
  EXPECT_FALSE(World::Get().Ran("seq_off/inner"));
  EXPECT_TRUE(World::Get().Ran("b"));
  EXPECT_TRUE(World::Get().Ran("d"));
  EXPECT_FALSE(World::Get().Ran("c")) << "a disabled task counts as succeeded";
  EXPECT_EQ(StatusOf("off"), "skipped");
  ASSERT_NE(RunOf("off"), nullptr);
  EXPECT_EQ(RunOf("off")->message, "disabled");
  EXPECT_EQ(StatusOf("seq_off"), "skipped");
  EXPECT_EQ(r.skipped, 3) << "off, c (after off's failure) and seq_off once";
}

// ---- Error counts -----------------------------------------------------------------------------

TEST_F(EngineTest, PackageMaximumErrorCount) {
  const std::string tasks = R"(
tasks:
  a: {type: fake, result: failure}
  b: {type: fake, result: failure}
  c: {type: fake}
)";
  RunResult two = MustRun("package: errors\nmaximum_error_count: 2\n" + tasks);
  EXPECT_EQ(two.result, TaskResult::kFailure);
  EXPECT_EQ(two.failed, 2);
  EXPECT_TRUE(World::Get().Ran("c"));

  World::Get().Reset();
  RunResult three = MustRun("package: errors\nmaximum_error_count: 3\n" + tasks);
  EXPECT_EQ(three.result, TaskResult::kSuccess) << "2 errors stay below 3";
  EXPECT_EQ(three.failed, 2);
  EXPECT_EQ(three.succeeded, 1);
  EXPECT_EQ(three.message, "");
}

TEST_F(EngineTest, SequenceMaximumErrorCountAbsorbsFailures) {
  RunResult r = MustRun(R"(package: tolerant
tasks:
  tolerant:
    type: sequence
    maximum_error_count: 2
    tasks:
      bad: {type: fake, result: failure}
      good: {type: fake}
  next: {type: fake, after: [tolerant]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(StatusOf("tolerant"), "succeeded");
  EXPECT_EQ(StatusOf("tolerant/bad"), "failed");
  EXPECT_EQ(StatusOf("tolerant/good"), "succeeded");
  EXPECT_TRUE(World::Get().Ran("next"));
  EXPECT_EQ(r.failed, 1);
}

TEST_F(EngineTest, FailedSequenceFailsItsSuccessorsConstraints) {
  RunResult r = MustRun(R"(package: strict
tasks:
  strict:
    type: sequence
    tasks:
      bad: {type: fake, result: failure, message: inner trouble}
  after_ok: {type: fake, after: [strict]}
  after_fail: {type: fake, after: [{task: strict, on: failure}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_EQ(StatusOf("strict"), "failed");
  EXPECT_FALSE(World::Get().Ran("after_ok"));
  EXPECT_TRUE(World::Get().Ran("after_fail"));
  EXPECT_NE(r.message.find("inner trouble"), std::string::npos) << r.message;
}

TEST_F(EngineTest, FailPackageOnFailureStopsNewStarts) {
  RunResult r = MustRun(R"(package: fail-package
maximum_error_count: 10
max_concurrent: 1
tasks:
  critical: {type: fake, result: failure, fail_package_on_failure: true}
  queued: {type: fake}
  later: {type: fake, after: [{task: critical, on: completion}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_TRUE(World::Get().Ran("critical"));
  EXPECT_FALSE(World::Get().Ran("queued")) << "waiting for a slot when the package failed";
  EXPECT_FALSE(World::Get().Ran("later"));
  // The summary's counts cover every task: the two never started are said so.
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.succeeded + r.skipped + r.canceled, 0);
  EXPECT_EQ(r.not_started, 2);
}

TEST_F(EngineTest, FailPackageOnFailureInsideATolerantSequence) {
  RunResult r = MustRun(R"(package: fail-package-nested
maximum_error_count: 10
tasks:
  seq:
    type: sequence
    maximum_error_count: 10
    tasks:
      critical: {type: fake, result: failure, fail_package_on_failure: true}
  later: {type: fake, after: [{task: seq, on: completion}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("later"));
}

// ---- Retries, timeouts, cancellation ----------------------------------------------------------

TEST_F(EngineTest, RetriesCountAttemptsAndHonourTheDelay) {
  RunResult r = MustRun(R"(package: retries
tasks:
  flaky: {type: fake, fail_times: 2, retries: 2, retry_delay: 30ms}
  exhausted: {type: fake, result: failure, retries: 1, retry_delay: 5ms}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  auto flaky = World::Get().CallsOf("flaky");
  ASSERT_EQ(flaky.size(), 3u);
  for (size_t i = 0; i < flaky.size(); ++i) EXPECT_EQ(flaky[i].attempt, static_cast<int>(i) + 1);
  for (size_t i = 1; i < flaky.size(); ++i) {
    EXPECT_GE(flaky[i].start - flaky[i - 1].end, 30ms) << "retry_delay between attempts";
  }
  EXPECT_EQ(StatusOf("flaky"), "succeeded");
  EXPECT_EQ(AttemptsRecorded("flaky"), 3);
  ASSERT_NE(RunOf("flaky", 1), nullptr);
  EXPECT_EQ(RunOf("flaky", 1)->status, "failed");
  EXPECT_EQ(RunOf("flaky", 2)->status, "failed");
  EXPECT_EQ(RunOf("flaky", 3)->status, "succeeded");
  EXPECT_EQ(EventsOf(EventType::kOnWarning, "flaky").size(), 2u) << AllEvents();
  EXPECT_EQ(EventsOf(EventType::kOnPreExecute, "flaky").size(), 3u);

  EXPECT_EQ(World::Get().CallsOf("exhausted").size(), 2u);
  EXPECT_EQ(StatusOf("exhausted"), "failed");
  EXPECT_EQ(AttemptsRecorded("exhausted"), 2);
  EXPECT_EQ(r.succeeded, 1);
}

// A retry learns the agent its previous attempt failed on (an agent-job then places it on
// another); a first attempt, and one after an attempt that named no agent, learn none.
TEST_F(EngineTest, ARetryKnowsTheAgentItsLastAttemptFailedOn) {
  MustRun(R"(package: failed-on
tasks:
  remote: {type: fake, fail_times: 2, retries: 2, agent: srv-a}
  local: {type: fake, fail_times: 1, retries: 1}
)");
  auto remote = World::Get().CallsOf("remote");
  ASSERT_EQ(remote.size(), 3u);
  EXPECT_EQ(remote[0].failed_agent, "");
  EXPECT_EQ(remote[1].failed_agent, "srv-a");
  EXPECT_EQ(remote[2].failed_agent, "srv-a");
  auto local = World::Get().CallsOf("local");
  ASSERT_EQ(local.size(), 2u);
  EXPECT_EQ(local[1].failed_agent, "");
}

// A container with `retries` runs again as a whole when it fails: every task inside runs again,
// each run with its own attempt number (its own task_runs row and idempotency key).
TEST_F(EngineTest, AFailedSequenceIsRetriedAsAWhole) {
  RunResult r = MustRun(R"(package: seq-retry
tasks:
  batch:
    type: sequence
    retries: 1
    retry_delay: 20ms
    tasks:
      download: {type: fake}
      load: {type: fake, fail_times: 1, after: [download]}
  publish: {type: fake, after: [batch]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto download = World::Get().CallsOf("batch/download");
  ASSERT_EQ(download.size(), 2u);
  EXPECT_EQ(download[0].attempt, 1);
  EXPECT_EQ(download[1].attempt, 2);
  EXPECT_GE(download[1].start - World::Get().CallsOf("batch/load")[0].end, 20ms) << "retry_delay";
  EXPECT_EQ(AttemptsRecorded("batch"), 2);
  EXPECT_EQ(RunOf("batch", 1)->status, "failed");
  EXPECT_EQ(RunOf("batch", 2)->status, "succeeded");
  EXPECT_EQ(AttemptsRecorded("batch/load"), 2);
  EXPECT_EQ(RunOf("batch/load", 1)->status, "failed");
  EXPECT_EQ(RunOf("batch/load", 2)->status, "succeeded");
  EXPECT_EQ(AttemptsRecorded("batch/download"), 2);
  ASSERT_EQ(EventsOf(EventType::kOnWarning, "batch").size(), 1u) << AllEvents();
  EXPECT_NE(EventsOf(EventType::kOnWarning, "batch")[0].message.find("attempt 1 of 2 failed"),
            std::string::npos);
  EXPECT_TRUE(World::Get().Ran("publish"));
  // Every leaf run counts: download twice, load once each way, publish.
  EXPECT_EQ(r.succeeded, 4);
  EXPECT_EQ(r.failed, 1);
}

// A container still running when fail_package_on_failure fires ends failed, saying so rather
// than "a task failed" when nothing in it failed.
TEST_F(EngineTest, AContainerStoppedByThePackagesFailureSaysSo) {
  RunResult r = MustRun(R"(package: fpl
tasks:
  seq:
    type: sequence
    tasks:
      slow: {type: fake, sleep_ms: 100}
  bad: {type: fake, result: failure, message: boom, fail_package_on_failure: true}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  ASSERT_NE(RunOf("seq"), nullptr);
  EXPECT_EQ(RunOf("seq")->status, "failed");
  EXPECT_NE(RunOf("seq")->message.find("stopped because the package failed: bad: boom"),
            std::string::npos)
      << RunOf("seq")->message;
}

// The run's message is its first error that counted: not one a container's retry made good.
TEST_F(EngineTest, AnErrorARetriedContainerMadeGoodIsNotTheRunsMessage) {
  RunResult r = MustRun(R"(package: seq-then-bad
tasks:
  batch:
    type: sequence
    retries: 1
    tasks:
      load: {type: fake, fail_times: 1, message: transient}
  bad: {type: fake, result: failure, message: the real cause, after: [batch]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_NE(r.message.find("the real cause"), std::string::npos) << r.message;
  EXPECT_EQ(r.message.find("transient"), std::string::npos) << r.message;
}

// A loop retried after its tasks used up their own retries: attempt numbers go on counting
// across both, and only the last try of the loop decides.
TEST_F(EngineTest, ALoopRetriedAfterItsTasksOwnRetriesCountsAttemptsOn) {
  RunResult r = MustRun(R"(package: loop-retry
tasks:
  each:
    type: foreach
    items: [a]
    as: x
    retries: 2
    tasks:
      work: {type: fake, fail_times: 2, retries: 1}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto work = World::Get().CallsOf("each[1]/work");
  ASSERT_EQ(work.size(), 3u);
  for (size_t i = 0; i < work.size(); ++i) EXPECT_EQ(work[i].attempt, static_cast<int>(i) + 1);
  EXPECT_EQ(AttemptsRecorded("each[1]/work"), 3);
  EXPECT_EQ(RunOf("each[1]/work", 3)->status, "succeeded");
  EXPECT_EQ(AttemptsRecorded("each"), 2) << "the loop's third try was not needed";
  EXPECT_EQ(RunOf("each", 1)->status, "failed");
  EXPECT_EQ(RunOf("each", 2)->status, "succeeded");
}

// Loops that fail as they start: the run's message is the first error said, though the loops
// end in another order (QA: the message was the second OnError's).
TEST_F(EngineTest, TheRunsMessageIsItsFirstOnError) {
  RunResult r = MustRun(R"(package: loops-fail
variables:
  i: {type: int, value: 0}
tasks:
  a:
    type: for
    condition: "@i == 0 ? @i : false"
    tasks:
      x: {type: fake}
  b:
    type: foreach
    items: "not a list"
    as: it
    tasks:
      y: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  std::vector<Event> errors;  // the loops', in the order they were said
  for (const Event& e : EventsOf(EventType::kOnError)) {
    if (e.source == "a" || e.source == "b") errors.push_back(e);
  }
  ASSERT_EQ(errors.size(), 2u) << AllEvents();
  EXPECT_EQ(r.message, errors[0].source + ": " + errors[0].message) << AllEvents();
}

// QA: the run's message was the first error seen, here one the tolerant sequence absorbed, and
// a timed-out loop's children's "stopped" errors before the loop's own.
TEST_F(EngineTest, TheRunsMessageIsTheFirstErrorThatCounted) {
  RunResult tolerated = MustRun(R"(package: tolerated
tasks:
  seq:
    type: sequence
    maximum_error_count: 2
    tasks:
      x: {type: fake, result: failure, message: absorbed}
  fail: {type: fake, result: failure, message: counted, after: [{task: seq, on: completion}]}
)");
  EXPECT_EQ(tolerated.result, TaskResult::kFailure);
  EXPECT_EQ(tolerated.message, "fail: counted") << AllEvents();

  World::Get().Reset();
  RunResult timed_out = MustRun(R"(package: timed-out
tasks:
  fe:
    type: foreach
    items: [1]
    as: i
    timeout: 50ms
    retries: 1
    tasks:
      t: {type: fake, block: true}
)");
  EXPECT_EQ(timed_out.result, TaskResult::kFailure);
  EXPECT_EQ(timed_out.message, "fe: timed out after 50.0 ms") << AllEvents();
}

TEST_F(EngineTest, AContainerOutOfRetriesFails) {
  RunResult r = MustRun(R"(package: seq-exhausted
tasks:
  batch:
    type: sequence
    retries: 2
    tasks:
      load: {type: fake, result: failure, message: no rows}
  publish: {type: fake, after: [batch]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_EQ(World::Get().CallsOf("batch/load").size(), 3u);
  EXPECT_EQ(AttemptsRecorded("batch"), 3);
  EXPECT_EQ(StatusOf("batch"), "failed");
  EXPECT_EQ(EventsOf(EventType::kOnWarning, "batch").size(), 2u) << AllEvents();
  EXPECT_FALSE(World::Get().Ran("publish"));
  EXPECT_NE(r.message.find("no rows"), std::string::npos) << r.message;
}

// A loop whose iterations do only inline work (no task on a worker) never lets the scheduler
// wait; its timeout and a cancel must still be seen.
TEST_F(EngineTest, AnEndlessInlineLoopStillSeesItsTimeoutAndACancel) {
  RunResult timed = MustRun(R"(package: endless
tasks:
  f: {type: for, condition: "true", timeout: 100ms, tasks: {}}
)");
  EXPECT_EQ(timed.result, TaskResult::kFailure);
  EXPECT_NE(timed.message.find("timed out"), std::string::npos) << timed.message;
  EXPECT_LT(elapsed_, kBlockSafety);

  CancelToken token;
  std::jthread canceler = CancelAfter(token, 100ms);
  RunResult canceled = MustRun(R"(package: endless-too
tasks:
  f: {type: for, condition: "true", tasks: {}}
)",
                               {}, &token);
  canceler.join();
  EXPECT_EQ(canceled.result, TaskResult::kCanceled);
  EXPECT_LT(elapsed_, kBlockSafety);
}

// A foreach stopped by its own maximum_error_count counts the items it never reached as not
// started (QA: the summary said nothing of them).
TEST_F(EngineTest, AForeachStoppedByItsErrorsCountsItsItemsNeverReached) {
  auto package = [](const std::string& retries) {
    return "package: stops-at-failure\ntasks:\n  each:\n    type: foreach\n" + retries +
           "    items: [success, failure, success, success]\n    as: outcome\n    tasks:\n"
           "      work: {type: fake, result: \"${outcome}\"}\n";
  };
  RunResult r = MustRun(package(""));
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_EQ(r.succeeded, 1);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.not_started, 2) << AllEvents();
  // Tried again, its items are reached again: counted once, after its last try (review).
  RunResult retried = MustRun(package("    retries: 1\n"));
  EXPECT_EQ(retried.result, TaskResult::kFailure);
  EXPECT_EQ(retried.not_started, 2) << AllEvents();
}

// An iteration a cancel stopped is not done: OnProgress said "1 of 2 iterations done" of it.
TEST_F(EngineTest, ACanceledIterationIsNotReportedDone) {
  CancelToken token;
  std::jthread canceler([&] {
    World::Get().WaitStarted("each[1]/work", 5s);
    token.Cancel(CancelToken::Reason::kCanceled);
  });
  RunResult canceled = MustRun(R"(package: progress-canceled
tasks:
  each:
    type: foreach
    items: [a, b]
    as: x
    tasks:
      work: {type: fake, sleep_ms: 5000}
)",
                               {}, &token);
  canceler.join();
  EXPECT_EQ(canceled.result, TaskResult::kCanceled);
  EXPECT_TRUE(EventsOf(EventType::kOnProgress, "each").empty()) << AllEvents();
  EXPECT_EQ(canceled.canceled, 1);
  EXPECT_EQ(canceled.not_started, 1) << "item b, never reached";
  EXPECT_LT(elapsed_, kBlockSafety);
}

// Finished loop iterations are freed as the loop goes (Execution::Retire); iterations holding
// nested loops, sequences with timeouts and retried tasks still run right, and a cancel in the
// middle finds nothing freed that it needs. (Run under AddressSanitizer, this is the test of
// Retire's safety.)
TEST_F(EngineTest, ALoopsFinishedIterationsAreFreedWithoutLosingWork) {
  std::string items;
  for (int i = 1; i <= 60; ++i) items += (i > 1 ? ", " : "") + std::to_string(i);
  auto package = [&](const std::string& name, int sleep_ms) {
    return "package: " + name + "\ntasks:\n  each:\n    type: foreach\n    as: i\n    items: [" +
           items + "]\n    max_concurrent: 4\n    tasks:\n      seq:\n        type: sequence\n"
           "        timeout: 5s\n        tasks:\n          inner:\n            type: foreach\n"
           "            as: k\n            items: [a, b, c]\n            tasks:\n"
           "              step: {type: fake, sleep_ms: " + std::to_string(sleep_ms) + "}\n"
           "          flaky: {type: fake, fail_times: 1, retries: 1, after: [inner]}\n";
  };
  RunResult r = MustRun(package("long", 1));
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  for (int i = 1; i <= 60; ++i) {
    std::string each = "each[" + std::to_string(i) + "]";
    EXPECT_EQ(StatusOf(each + "/seq/flaky"), "succeeded") << each;
    EXPECT_EQ(StatusOf(each + "/seq/inner[3]/step"), "succeeded") << each;
  }

  CancelToken token;
  std::jthread canceler = CancelAfter(token, 100ms);
  RunResult canceled = MustRun(package("long-canceled", 20), {}, &token);
  canceler.join();
  EXPECT_EQ(canceled.result, TaskResult::kCanceled);
  EXPECT_LT(elapsed_, kBlockSafety);
}

// A task waiting for its retry_delay when its container times out, or the package fails, takes
// no retry, and nothing waits for the delay: the task ends failed at once.
TEST_F(EngineTest, AStoppingContainerOrPackageDropsRetriesWithoutWaitingForThem) {
  RunResult r = MustRun(R"(package: dropped
tasks:
  seq:
    type: sequence
    timeout: 100ms
    tasks:
      t: {type: fake, result: failure, retries: 5, retry_delay: 5s}
  cleanup: {type: fake, after: [{task: seq, on: failure}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_LT(elapsed_, kBlockSafety) << "the container waited for the retry delay";
  EXPECT_TRUE(World::Get().Ran("cleanup"));
  EXPECT_EQ(World::Get().CallsOf("seq/t").size(), 1u);
  EXPECT_EQ(r.failed, 1) << "the task whose retry was dropped failed";

  RunResult p = MustRun(R"(package: failing
tasks:
  b: {type: fake, result: failure, retries: 5, retry_delay: 5s}
  s: {type: fake, sleep_ms: 50}
  a: {type: fake, result: failure, fail_package_on_failure: true, after: [s]}
)");
  EXPECT_EQ(p.result, TaskResult::kFailure);
  EXPECT_LT(elapsed_, kBlockSafety) << "the failed package waited for the retry delay";
  EXPECT_EQ(World::Get().CallsOf("b").size(), 1u);

  // A cancel during the delay: the run is canceled, the task counted as its last try recorded
  // it, failed (the console's summary and the catalog agree).
  CancelToken token;
  std::jthread canceler = CancelAfter(token, 50ms);
  RunResult c = MustRun(R"(package: canceled-in-delay
tasks:
  rt: {type: fake, result: failure, retries: 3, retry_delay: 5s}
)",
                        {}, &token);
  canceler.join();
  EXPECT_EQ(c.result, TaskResult::kCanceled);
  EXPECT_LT(elapsed_, kBlockSafety);
  EXPECT_EQ(c.failed, 1);
  EXPECT_EQ(StatusOf("rt"), "failed");
}

TEST_F(EngineTest, TimeoutCancelsABlockingTask) {
  RunResult r = MustRun(R"(package: timeout
tasks:
  slow: {type: fake, block: true, timeout: 50ms}
  next: {type: fake, after: [slow]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_LT(elapsed_, kBlockSafety) << "the timeout did not stop the task";
  auto slow = World::Get().CallsOf("slow");
  ASSERT_EQ(slow.size(), 1u);
  EXPECT_GE(elapsed_, 50ms) << "stopped before its timeout";
  EXPECT_EQ(StatusOf("slow"), "failed");
  ASSERT_NE(RunOf("slow"), nullptr);
  EXPECT_NE(RunOf("slow")->message.find("timed out"), std::string::npos) << RunOf("slow")->message;
  EXPECT_NE(r.message.find("timed out"), std::string::npos) << r.message;
  EXPECT_FALSE(World::Get().Ran("next"));
}

TEST_F(EngineTest, SequenceTimeoutStopsItsChildren) {
  RunResult r = MustRun(R"(package: seq-timeout
tasks:
  seq:
    type: sequence
    timeout: 50ms
    tasks:
      slow: {type: fake, block: true}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_LT(elapsed_, kBlockSafety);
  EXPECT_EQ(StatusOf("seq"), "failed");
  EXPECT_NE(r.message.find("timed out"), std::string::npos) << r.message;
}

// A sequence's timeout that catches a loop of inline tasks between two iterations fails the
// loop, as it does when an iteration was running (it had ended "succeeded").
TEST_F(EngineTest, ASequenceTimeoutFailsTheInlineLoopInIt) {
  RunResult r = MustRun(R"(package: seq-loop-timeout
tasks:
  seq:
    type: sequence
    timeout: 50ms
    tasks:
      loop: {type: for, condition: "true", tasks: {a: {type: fake, inline: true}}}
  after_it: {type: fake, after: [{task: seq, on: failure}]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_EQ(StatusOf("seq"), "failed");
  ASSERT_NE(RunOf("seq/loop"), nullptr);
  EXPECT_EQ(RunOf("seq/loop")->status, "failed");
  EXPECT_NE(RunOf("seq/loop")->message.find("seq/loop: stopped: seq: timed out"),
            std::string::npos)
      << RunOf("seq/loop")->message;
  EXPECT_EQ(StatusOf("after_it"), "succeeded");
  EXPECT_NE(r.message.find("timed out"), std::string::npos) << r.message;
}

TEST_F(EngineTest, LoopTimeoutStopsItsIterations) {
  RunResult r = MustRun(R"(package: loop-timeout
tasks:
  each:
    type: foreach
    items: [1]
    as: n
    timeout: 50ms
    tasks:
      slow: {type: fake, block: true}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_LT(elapsed_, kBlockSafety);
  EXPECT_NE(r.message.find("timed out"), std::string::npos) << r.message;
}

TEST_F(EngineTest, ExternalCancelStopsTheRun) {
  CancelToken token;
  std::thread canceler([&] {
    World::Get().WaitStarted("wait", 5s);
    token.Cancel(CancelToken::Reason::kCanceled);
  });
  RunResult r = MustRun(R"(package: cancel
tasks:
  wait: {type: fake, block: true}
  next: {type: fake, after: [{task: wait, on: completion}]}
)",
                        {}, &token);
  canceler.join();
  EXPECT_EQ(r.result, TaskResult::kCanceled);
  EXPECT_LT(elapsed_, kBlockSafety);
  EXPECT_EQ(StatusOf("wait"), "canceled");
  EXPECT_FALSE(World::Get().Ran("next"));
  EXPECT_FALSE(r.message.empty());
  ASSERT_FALSE(executions_.empty());
  EXPECT_EQ(executions_.back().status, "canceled");
  EXPECT_EQ(executions_.back().exit_code, 3);
}

TEST_F(EngineTest, CancelDuringRetryDelayEndsAtOnce) {
  CancelToken token;
  std::thread canceler([&] {
    World::Get().WaitFinished("flaky", 5s);
    // Its failure reaches the scheduler and its retry is queued within microseconds; the
    // retry waits 10 s.
    std::this_thread::sleep_for(200ms);
    token.Cancel(CancelToken::Reason::kCanceled);
  });
  RunResult r = MustRun(R"(package: cancel-retry
tasks:
  flaky: {type: fake, result: failure, retries: 3, retry_delay: 10s}
  next: {type: fake, after: [{task: flaky, on: completion}]}
)",
                        {}, &token);
  canceler.join();
  EXPECT_EQ(r.result, TaskResult::kCanceled);
  EXPECT_LT(elapsed_, 5s) << "waited for the retry delay";
  EXPECT_EQ(World::Get().CallsOf("flaky").size(), 1u);
  EXPECT_FALSE(World::Get().Ran("next"));
  // The dropped retry leaves the last failure final, and said as such.
  EXPECT_EQ(r.failed, 1);
  ASSERT_EQ(EventsOf(EventType::kOnError, "flaky").size(), 1u) << AllEvents();
  EXPECT_EQ(EventsOf(EventType::kOnError, "flaky")[0].message, "fake failure");
  EXPECT_EQ(EventsOf(EventType::kOnTaskFailed, "flaky").size(), 1u) << AllEvents();
}

// ---- Concurrency ------------------------------------------------------------------------------

// Tasks come in pairs that wait for each other to start, so two at once is reached for sure;
// the limit keeps it from going higher.
TEST_F(EngineTest, MaxConcurrentIsRespected) {
  RunResult r = MustRun(R"(package: limit
max_concurrent: 2
tasks:
  t1: {type: fake, wait_for: t2, sleep_ms: 5}
  t2: {type: fake, wait_for: t1, sleep_ms: 5}
  t3: {type: fake, wait_for: t4, sleep_ms: 5}
  t4: {type: fake, wait_for: t3, sleep_ms: 5}
  t5: {type: fake, wait_for: t6, sleep_ms: 5}
  t6: {type: fake, wait_for: t5, sleep_ms: 5}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(r.succeeded, 6);
  EXPECT_EQ(World::Get().max_running(), 2);
}

TEST_F(EngineTest, RunOptionsMaxConcurrentOverridesThePackage) {
  RunOptions options;
  options.max_concurrent = 1;
  RunResult r = MustRun(R"(package: limit-one
max_concurrent: 4
tasks:
  t1: {type: fake, sleep_ms: 5}
  t2: {type: fake, sleep_ms: 5}
  t3: {type: fake, sleep_ms: 5}
  t4: {type: fake, sleep_ms: 5}
)",
                        options);
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(World::Get().max_running(), 1);
  auto calls = World::Get().Calls();
  ASSERT_EQ(calls.size(), 4u);
  std::sort(calls.begin(), calls.end(),
            [](const Call& a, const Call& b) { return a.start < b.start; });
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].end, calls[i].start);
}

// ---- Loops ------------------------------------------------------------------------------------

TEST_F(EngineTest, ForeachOverAListVariable) {
  RunResult r = MustRun(R"(package: foreach
variables:
  regions: {type: list, value: [eu, us, apac]}
tasks:
  each:
    type: foreach
    items: "${regions}"
    as: region
    tasks:
      work: {type: fake, log: "${UPPER(region)}"}
  done: {type: fake, after: [each], log: "${LEN(regions)}"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto calls = World::Get().Calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[0].path, "each[1]/work");
  EXPECT_EQ(calls[1].path, "each[2]/work");
  EXPECT_EQ(calls[2].path, "each[3]/work");
  EXPECT_EQ(Logs({calls[0], calls[1], calls[2]}), (std::vector<std::string>{"EU", "US", "APAC"}));
  EXPECT_EQ(calls[3].path, "done");
  EXPECT_EQ(StatusOf("each"), "succeeded");
  EXPECT_EQ(StatusOf("each[2]/work"), "succeeded");
  EXPECT_EQ(EventsOf(EventType::kOnProgress, "each").size(), 3u) << AllEvents();
  EXPECT_EQ(World::Get().max_running(), 1) << "iterations run one by one by default";
}

TEST_F(EngineTest, ForeachOverInlineItemsKeepsTheirTypes) {
  RunResult r = MustRun(R"(package: foreach-inline
tasks:
  seq:
    type: sequence
    tasks:
      each:
        type: foreach
        items: [1, 2, 3]
        as: n
        tasks:
          work: {type: fake, log: "${n * 10}"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"10", "20", "30"}));
  EXPECT_TRUE(World::Get().Ran("seq/each[3]/work"));
}

// Inline items are templates as `items: "${list}"` is (QA: `${x}` was iterated as its text, and
// validate said nothing); a whole `${...}` keeps its value's type, in a row too.
TEST_F(EngineTest, ForeachRendersTheTemplatesOfInlineItems) {
  RunResult r = MustRun(R"(package: foreach-inline-templates
variables:
  x: {value: hello}
  n: {type: int, value: 4}
tasks:
  each:
    type: foreach
    items: ["${x}", "b-${UPPER(x)}", "$${x}", [7, "${n}"], 3]
    as: i
    tasks:
      work: {type: fake, log: "${i}"}
  rows:
    type: foreach
    items: [[1, "${x}"], ["${n}", "${n * 2}"]]
    as: [a, b]
    after: [each]
    tasks:
      work: {type: fake, log: "${a + 1}:${b}"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()),
            (std::vector<std::string>{"hello", "b-HELLO", "${x}", "[7, 4]", "3", "2:hello",
                                      "5:8"}));
}

// An inline item's template that fails at run time fails the loop before any iteration.
TEST_F(EngineTest, ForeachInlineItemThatCannotRenderFailsTheLoop) {
  RunResult r = MustRun(R"(package: foreach-inline-bad
variables:
  s: {value: abc}
tasks:
  each:
    type: foreach
    items: [a, "${s * 2}"]
    as: i
    tasks:
      work: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("each[1]/work"));
  EXPECT_TRUE(r.message.starts_with("each: `items`, item 2: evaluating '${s * 2}'")) << r.message;

  // A row's value that renders to a list fails too, as a list written there fails to load.
  RunResult nested = MustRun(R"(package: foreach-inline-nested
variables:
  l: {type: list, value: [1, 2]}
tasks:
  each:
    type: foreach
    items: [[1, "${l}"]]
    as: [a, b]
    tasks:
      work: {type: fake}
)");
  EXPECT_EQ(nested.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("each[1]/work"));
  EXPECT_EQ(nested.message,
            "each: `items`, item 1, value 2: a row holds scalars, and '${l}' gave a list")
      << nested.message;
}

// The loop variable has its item's type and converts what is assigned to it (QA: a string
// went into an int item as it was).
TEST_F(EngineTest, ALoopVariableConvertsWhatIsAssignedToIt) {
  RunResult converted = MustRun(R"(package: loop-assign
tasks:
  each:
    type: foreach
    items: [1, 2]
    as: it
    tasks:
      e: {type: fake, set: it, value: "41"}
      f: {type: fake, log: "${it + 1}", after: [e]}
)");
  EXPECT_EQ(converted.result, TaskResult::kSuccess) << converted.message;
  auto calls = World::Get().Calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(Logs({calls[1], calls[3]}), (std::vector<std::string>{"42", "42"}));

  World::Get().Reset();
  RunResult refused = MustRun(R"(package: loop-assign-bad
tasks:
  each:
    type: foreach
    items: [1]
    as: it
    tasks:
      e: {type: fake, set: it, value: not-a-number}
)");
  EXPECT_EQ(refused.result, TaskResult::kFailure);
  EXPECT_NE(refused.message.find("cannot assign to loop variable 'it' (its item's type is int)"),
            std::string::npos)
      << refused.message;
}

TEST_F(EngineTest, ForeachMaxConcurrentRunsIterationsSideBySide) {
  RunResult r = MustRun(R"(package: foreach-parallel
max_concurrent: 8
tasks:
  each:
    type: foreach
    items: [1, 2, 3, 4]
    as: n
    max_concurrent: 2
    tasks:
      work: {type: fake, sleep_ms: 5, wait_for: "each[${n % 2 == 1 ? n + 1 : n - 1}]/work"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(World::Get().Calls().size(), 4u);
  EXPECT_EQ(World::Get().max_running(), 2);
}

TEST_F(EngineTest, ForeachFailureStopsLaterIterations) {
  RunResult r = MustRun(R"(package: foreach-failure
tasks:
  each:
    type: foreach
    items: [ok, bad, never]
    as: item
    tasks:
      step: {type: fake, result: "${item == \"bad\" ? \"failure\" : \"success\"}"}
  after_each: {type: fake, after: [each]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_TRUE(World::Get().Ran("each[1]/step"));
  EXPECT_TRUE(World::Get().Ran("each[2]/step"));
  EXPECT_FALSE(World::Get().Ran("each[3]/step"));
  EXPECT_EQ(StatusOf("each"), "failed");
  EXPECT_EQ(StatusOf("each[2]/step"), "failed");
  EXPECT_FALSE(World::Get().Ran("after_each"));
}

TEST_F(EngineTest, ForeachErrorCountSpansIterations) {
  RunResult r = MustRun(R"(package: foreach-errors
maximum_error_count: 10
tasks:
  each:
    type: foreach
    items: [a, b, c]
    as: item
    maximum_error_count: 2
    tasks:
      step: {type: fake, result: failure}
)");
  EXPECT_EQ(StatusOf("each"), "failed") << "3 failed tasks in a container that allows 2";
  EXPECT_FALSE(World::Get().Ran("each[3]/step")) << "the second failure reaches the count";
}

TEST_F(EngineTest, ForeachOverAnEmptyListSucceeds) {
  RunResult r = MustRun(R"(package: foreach-empty
variables:
  nothing: {type: list}
tasks:
  each:
    type: foreach
    items: "${nothing}"
    as: x
    tasks:
      work: {type: fake}
  next: {type: fake, after: [each]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_FALSE(World::Get().Ran("each[1]/work"));
  EXPECT_TRUE(World::Get().Ran("next"));
  EXPECT_EQ(StatusOf("each"), "succeeded");
}

// SSIS's ADO enumerator maps a row's columns to variables by index: `as` with several names.
TEST_F(EngineTest, ForeachAsSeveralNamesTakesEachRowsValues) {
  RunResult r = MustRun(R"(package: foreach-rows
tasks:
  each:
    type: foreach
    items: [[1, "eu, west", extra], [2, us]]
    as: [id, region]
    tasks:
      work: {type: fake, log: "${id * 10}:${region}"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"10:eu, west", "20:us"}));
}

// A row too short for the names fails the loop before any iteration runs.
TEST_F(EngineTest, ForeachAsSeveralNamesNeedsRowsLongEnough) {
  RunResult r = MustRun(R"(package: foreach-short
tasks:
  each:
    type: foreach
    items: [[1, eu], [2], solo]
    as: [id, region]
    tasks:
      work: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("each[1]/work"));
  EXPECT_EQ(r.message, "each: item 2 is a list of 1; `as` takes 2 values from each item, a list "
                       "such as a row of `result: rows`")
      << r.message;
}

TEST_F(EngineTest, ForeachItemsThatAreNotAListFail) {
  RunResult r = MustRun(R"(package: foreach-scalar
variables:
  name: {type: string, value: solo}
tasks:
  each:
    type: foreach
    items: "${name}"
    as: x
    tasks:
      work: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("each[1]/work"));
  EXPECT_NE(r.message.find("not a list"), std::string::npos) << r.message;
  EXPECT_EQ(r.failed, 1) << "the summary said 0 failed of a failed run";
}

TEST_F(EngineTest, ForLoopRunsInitConditionAssign) {
  RunResult r = MustRun(R"(package: for
variables:
  i: {type: int, value: 100}
  total: {type: int, value: 0}
tasks:
  loop:
    type: for
    init: "@i = 1"
    condition: "@i <= 4"
    assign: "@i = @i + 1"
    tasks:
      add: {type: fake, set: total, value: "${@total + @i}", log: "${i}"}
  check: {type: fake, after: [loop], log: "${total}/${i}"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto calls = World::Get().Calls();
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls[0].path, "loop[1]/add");
  EXPECT_EQ(calls[3].path, "loop[4]/add");
  EXPECT_EQ(Logs(calls), (std::vector<std::string>{"1", "2", "3", "4", "10/5"}));
  EXPECT_EQ(StatusOf("loop"), "succeeded");
}

TEST_F(EngineTest, ForLoopWithFalseConditionRunsNothing) {
  RunResult r = MustRun(R"(package: for-none
variables:
  i: {type: int}
tasks:
  loop:
    type: for
    condition: "@i > 0"
    tasks:
      body: {type: fake}
  next: {type: fake, after: [loop]}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_FALSE(World::Get().Ran("loop[1]/body"));
  EXPECT_TRUE(World::Get().Ran("next"));
}

TEST_F(EngineTest, ForLoopConditionThatIsNotBooleanFails) {
  RunResult r = MustRun(R"(package: for-int
variables:
  i: {type: int}
tasks:
  loop:
    type: for
    condition: "@i == 0 ? @i + 1 : false"
    tasks:
      body: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_FALSE(World::Get().Ran("loop[1]/body"));
  EXPECT_NE(r.message.find("condition"), std::string::npos) << r.message;
}

// ---- Parameters, variables, --set -------------------------------------------------------------

const char* const kSetsPackage = R"(package: sets
parameters:
  run_date: {type: string, required: true}
  n: {type: int, value: 1}
variables:
  rows: {type: int, value: 0}
tasks:
  show: {type: fake, log: "${run_date}|${n + 1}|${rows}"}
)";

TEST_F(EngineTest, SetsConvertToTheDeclaredTypes) {
  RunOptions options;
  options.sets = {{"run_date", "2026-01-01"}, {"n", "41"}, {"rows", "7"}};
  RunResult r = MustRun(kSetsPackage, options);
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"2026-01-01|42|7"}));
}

TEST_F(EngineTest, TypedParamsConvertToo) {
  RunOptions options;
  options.sets = {{"run_date", "d"}};
  options.params = {{"n", Value("5")}};
  RunResult r = MustRun(kSetsPackage, options);
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"d|6|0"}));
}

TEST_F(EngineTest, BadSetsFailBeforeAnythingRuns) {
  struct Case {
    std::map<std::string, std::string> sets;
    std::map<std::string, Value> params;
    std::vector<std::string> expected;  // parts of the message
  };
  std::vector<Case> cases = {
      {{}, {}, {"required parameter 'run_date'"}},
      {{{"run_date", "d"}, {"n", "abc"}}, {}, {"--set n", "abc"}},
      {{{"run_date", "d"}, {"rows", "many"}}, {}, {"--set rows"}},
      {{{"run_date", "d"}, {"nope", "1"}}, {}, {"--set nope", "run_date, n, rows"}},
      {{{"run_date", "d"}}, {{"ghost", Value("x")}}, {"'ghost' is not declared"}},
      {{{"run_date", "d"}}, {{"n", Value(1.5)}}, {"parameter n"}},
      {{{"n", "x"}}, {}, {"--set n", "required parameter 'run_date'"}},
  };
  for (const Case& c : cases) {
    RunOptions options;
    options.sets = c.sets;
    options.params = c.params;
    auto r = Run(kSetsPackage, options);
    ASSERT_FALSE(r.ok()) << "expected: " << c.expected[0];
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    for (const std::string& part : c.expected) {
      EXPECT_NE(r.status().message().find(part), std::string::npos)
          << "'" << part << "' not in: " << r.status().message();
    }
    EXPECT_TRUE(World::Get().Calls().empty()) << "nothing may run";
    EXPECT_TRUE(events_.empty()) << AllEvents();
  }
}

TEST_F(EngineTest, ListVariableSetFromText) {
  RunOptions options;
  options.sets = {{"regions", "[eu, \"us west\"]"}};
  RunResult r = MustRun(R"(package: list-var
variables:
  regions: {type: list, value: [x]}
tasks:
  each:
    type: foreach
    items: "${regions}"
    as: region
    tasks:
      work: {type: fake, log: "${region}"}
)",
                        options);
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"eu", "us west"}));
}

TEST_F(EngineTest, ListParameterSetFromText) {
  RunOptions options;
  options.sets = {{"regions", "[eu, us]"}};
  RunResult r = MustRun(R"(package: list-param
parameters:
  regions: {type: list}
tasks:
  each:
    type: foreach
    items: "${regions}"
    as: region
    tasks:
      work: {type: fake, log: "${region}"}
)",
                        options);
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  EXPECT_EQ(Logs(World::Get().Calls()), (std::vector<std::string>{"eu", "us"}));
}

TEST_F(EngineTest, SensitiveValuesAreMaskedInEventsAndCatalog) {
  RunOptions options;
  options.sets = {{"password", "hunter2-secret"}};
  RunResult r = MustRun(R"(package: secrets
parameters:
  password: {type: string, sensitive: true}
  pin: {type: string, sensitive: true, value: default-secret-991}
  visible: {type: string, value: plain-value-123}
tasks:
  use:
    type: fake
    emit: "connecting with ${password} and ${pin} as ${visible}"
    result: failure
    message: "login failed for ${password}"
)",
                        options);
  EXPECT_EQ(r.result, TaskResult::kFailure);
  ASSERT_FALSE(events_.empty());
  EXPECT_FALSE(AnyEventContains("hunter2-secret")) << AllEvents();
  EXPECT_FALSE(AnyEventContains("default-secret-991")) << AllEvents();
  EXPECT_TRUE(AnyEventContains("connecting with *** and *** as plain-value-123")) << AllEvents();
  EXPECT_TRUE(AnyEventContains("login failed for ***")) << AllEvents();
  for (const Event& e : catalog_events_) {
    EXPECT_EQ(e.message.find("hunter2-secret"), std::string::npos) << e.message;
  }
  ASSERT_NE(RunOf("use"), nullptr);
  EXPECT_EQ(RunOf("use")->message.find("hunter2-secret"), std::string::npos);
  ASSERT_FALSE(executions_.empty());
  EXPECT_EQ(executions_.back().message.find("hunter2-secret"), std::string::npos)
      << executions_.back().message;
}

// A list of secrets (a token per region) is what foreach is for: each item is masked, as the
// loop shows them one at a time, whether the list came from --set or from `value:`.
TEST_F(EngineTest, EachItemOfASensitiveListIsMasked) {
  RunOptions options;
  options.sets = {{"given", "[alpha-secret-1, beta-secret-2]"}};
  RunResult r = MustRun(R"(package: secret-list
parameters:
  given: {type: list, sensitive: true}
  own: {type: list, sensitive: true, value: [gamma-secret-3]}
tasks:
  each:
    type: foreach
    items: "${given}"
    as: it
    tasks:
      show: {type: fake, emit: "item ${it}"}
  mine:
    type: foreach
    items: "${own}"
    as: it
    tasks:
      show: {type: fake, emit: "own ${it}"}
)",
                        options);
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  for (const char* secret : {"alpha-secret-1", "beta-secret-2", "gamma-secret-3"}) {
    EXPECT_FALSE(AnyEventContains(secret)) << secret << "\n" << AllEvents();
  }
  EXPECT_TRUE(AnyEventContains("item ***")) << AllEvents();
  EXPECT_TRUE(AnyEventContains("own ***")) << AllEvents();
}

TEST_F(EngineTest, SensitiveValueIsMaskedInSetErrors) {
  RunOptions options;
  options.sets = {{"pin", "s3cr3t-pin-value"}};
  auto r = Run(R"(package: secret-int
parameters:
  pin: {type: int, sensitive: true}
tasks:
  a: {type: fake}
)",
               options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--set pin"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("s3cr3t-pin-value"), std::string::npos)
      << r.status().message();
}

// A value that does not convert is the error; "has no value" would contradict it.
TEST_F(EngineTest, ARequiredParameterGivenABadValueGetsOneError) {
  RunOptions options;
  options.sets = {{"pin", "abc"}};
  auto r = Run("package: p\nparameters:\n  pin: {type: int, required: true}\ntasks:\n"
               "  a: {type: fake}\n",
               options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--set pin"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("has no value"), std::string::npos) << r.status().message();
}

// A missing or unknown parameter says how to give it where the run came from: `fanout run`
// takes --set, a job's package step takes the step's params: or `job start --param`.
TEST_F(EngineTest, AMissingParameterSaysHowToGiveItWhereTheRunCameFrom) {
  const char* text = "package: p\nparameters:\n  region: {type: string, required: true}\n"
                     "tasks:\n  a: {type: fake}\n";
  auto by_hand = Run(text, RunOptions{});
  ASSERT_FALSE(by_hand.ok());
  EXPECT_NE(by_hand.status().message().find("pass --set region=VALUE"), std::string::npos)
      << by_hand.status().message();
  RunOptions step;
  step.agent = "srv1";
  step.params = {{"bogus", Value("1")}};
  auto job_step = Run(text, step);
  ASSERT_FALSE(job_step.ok());
  EXPECT_NE(job_step.status().message().find("give it in the job step's `params:`, or start the "
                                             "job with --param region=VALUE"),
            std::string::npos)
      << job_step.status().message();
  EXPECT_NE(job_step.status().message().find("parameter 'bogus' is not declared by package p (it "
                                             "declares: region)"),
            std::string::npos)
      << job_step.status().message();
}

// An unset sensitive parameter holds its type's zero value, which is no secret: "0" and "false"
// stay readable everywhere. Its declared default is a secret.
TEST_F(EngineTest, UnsetSensitiveParametersMaskNothingButTheirDeclaredDefault) {
  RunResult r = MustRun(R"(package: zeros
parameters:
  num: {type: int, sensitive: true}
  flag: {type: bool, sensitive: true}
  key: {type: string, sensitive: true, value: default-key-77}
tasks:
  a: {type: fake, emit: "0 rows, false alarm, default-key-77"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto info = EventsOf(EventType::kOnInformation, "a");
  ASSERT_EQ(info.size(), 1u) << AllEvents();
  EXPECT_EQ(info[0].message, "0 rows, false alarm, ***");
}

TEST_F(EngineTest, VariableChangedEventsOnlyForRaiseChangedEvent) {
  RunResult r = MustRun(R"(package: changes
variables:
  loud: {type: int, value: 0, raise_changed_event: true}
  quiet: {type: int, value: 0}
tasks:
  a: {type: fake, set: loud, value: "7"}
  b: {type: fake, set: quiet, value: "8"}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto changed = EventsOf(EventType::kOnVariableValueChanged);
  ASSERT_EQ(changed.size(), 1u) << AllEvents();
  EXPECT_NE(changed[0].message.find("loud"), std::string::npos) << changed[0].message;
  EXPECT_NE(changed[0].message.find("7"), std::string::npos) << changed[0].message;
  EXPECT_EQ(changed[0].message.find("quiet"), std::string::npos);
}

// A long value is shown cut, and a secret cut in two there shows no part of itself.
TEST_F(EngineTest, AVariableChangedEventShowsALongValueCutWithoutPartOfASecret) {
  RunOptions options;
  options.sets = {{"tok", "Cut-Secret-99"}};
  const std::string pad(4090, 'o');  // the secret starts 6 bytes before the cut at 4096
  RunResult r = MustRun("package: long-change\nparameters:\n  tok: {sensitive: true}\n"
                        "variables:\n  v: {raise_changed_event: true}\ntasks:\n"
                        "  a: {type: fake, set: v, value: \"" + pad + "${tok}\"}\n",
                        options);
  EXPECT_EQ(r.result, TaskResult::kSuccess) << r.message;
  auto changed = EventsOf(EventType::kOnVariableValueChanged);
  ASSERT_EQ(changed.size(), 1u) << AllEvents();
  EXPECT_EQ(changed[0].message.find("Cut-Se"), std::string::npos) << changed[0].message.substr(4000);
  EXPECT_NE(changed[0].message.find("o***... (4103 bytes in all)"), std::string::npos)
      << changed[0].message.substr(4000);
}

TEST_F(EngineTest, SettingAReadOnlyOrMistypedVariableFailsTheTask) {
  RunResult r = MustRun(R"(package: bad-set
variables:
  rows: {type: int}
tasks:
  a: {type: fake, set: rows, value: "not a number"}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  EXPECT_EQ(StatusOf("a"), "failed");
  ASSERT_NE(RunOf("a"), nullptr);
  EXPECT_NE(RunOf("a")->message.find("rows"), std::string::npos) << RunOf("a")->message;
}

// ---- Results, ids and events ------------------------------------------------------------------

TEST_F(EngineTest, RunResultCountsLeafTasks) {
  RunResult r = MustRun(R"(package: counts
maximum_error_count: 5
tasks:
  ok1: {type: fake}
  ok2: {type: fake}
  bad: {type: fake, result: failure}
  skipped1: {type: fake, after: [bad]}
  skipped2: {type: fake, after: [skipped1]}
  seq:
    type: sequence
    tasks:
      inner: {type: fake}
)");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(r.succeeded, 3);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.skipped, 2);
  EXPECT_GT(r.duration.count(), 0);
  const std::regex uuid7("^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  EXPECT_TRUE(std::regex_match(r.execution_id, uuid7)) << r.execution_id;
  for (const Event& e : events_) EXPECT_EQ(e.execution_id, r.execution_id);
}

TEST_F(EngineTest, GivenExecutionIdIsUsedAndRecorded) {
  RunOptions options;
  options.execution_id = "0190a0b0-0000-7000-8000-000000000001";
  options.parent_execution_id = "parent-1";
  RunResult r = MustRun(R"(package: ids
tasks:
  a: {type: fake, log: "${@[System::ExecutionId]}|${@[System::ParentExecutionId]}|${@[System::PackageName]}"}
)",
                        options);
  EXPECT_EQ(r.execution_id, options.execution_id);
  EXPECT_EQ(Logs(World::Get().Calls()),
            (std::vector<std::string>{options.execution_id + "|parent-1|ids"}));
  ASSERT_FALSE(executions_.empty());
  EXPECT_EQ(executions_.front().id, options.execution_id);
  EXPECT_EQ(executions_.front().parent_id, "parent-1");
  EXPECT_EQ(executions_.back().status, "succeeded");
  EXPECT_EQ(executions_.back().exit_code, 0);
  EXPECT_TRUE(executions_.back().ended_at.has_value());
}

TEST_F(EngineTest, PackageAndTaskEventsBracketTheRun) {
  RunResult r = MustRun(R"(package: events
tasks:
  a: {type: fake, emit: "hello from a"}
  b: {type: fake, result: failure, after: [a]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  ASSERT_GE(events_.size(), 2u);
  EXPECT_EQ(events_.front().type, EventType::kOnPreExecute);
  EXPECT_EQ(events_.front().source, "events");
  EXPECT_EQ(events_.front().source_id, "");
  EXPECT_EQ(events_.back().type, EventType::kOnPostExecute);
  EXPECT_EQ(events_.back().source, "events");
  EXPECT_NE(events_.back().message.find("Failure"), std::string::npos) << events_.back().message;
  EXPECT_EQ(EventsOf(EventType::kOnPreExecute, "a").size(), 1u);
  EXPECT_EQ(EventsOf(EventType::kOnPostExecute, "a").size(), 1u);
  ASSERT_EQ(EventsOf(EventType::kOnInformation, "a").size(), 1u);
  EXPECT_EQ(EventsOf(EventType::kOnInformation, "a")[0].message, "hello from a");
  EXPECT_EQ(EventsOf(EventType::kOnError, "b").size(), 1u);
  EXPECT_EQ(EventsOf(EventType::kOnError, "events").size(), 1u) << "the package's own error";
  ASSERT_FALSE(executions_.empty());
  EXPECT_EQ(executions_.back().status, "failed");
  EXPECT_EQ(executions_.back().exit_code, 1);
  EXPECT_EQ(executions_.back().package, "events");
}

// A leaf's start and end rows are handed to the Recorder in batches (LeafMarks): hundreds of
// tasks on the scheduler's thread, some saying something of their own, and a task on a worker
// thread last, must still be recorded each in its place.
TEST_F(EngineTest, EveryTasksEventsAreRecordedInOrderAcrossBatches) {
  // 400 marks between two tasks that say something: full batches of 256 and partial ones.
  constexpr int kInline = 600;
  constexpr int kSaysEvery = 200;
  std::string yaml = "package: many\ntasks:\n";
  for (int i = 0; i < kInline; ++i) {
    yaml += "  t" + std::to_string(i) + ": {type: fake, inline: true";
    if (i % kSaysEvery == 0) yaml += ", emit: \"said by t" + std::to_string(i) + "\"";
    if (i > 0) yaml += ", after: [t" + std::to_string(i - 1) + "]";
    yaml += "}\n";
  }
  yaml += "  tail: {type: fake, emit: \"said by tail\", after: [t" + std::to_string(kInline - 1) +
          "]}\n";
  RunResult r = MustRun(yaml);
  ASSERT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(r.succeeded, kInline + 1);

  std::vector<std::string> expected = {"OnPreExecute [many]"};
  auto task = [&](const std::string& name, bool says) {
    expected.push_back("OnPreExecute [" + name + "] fake " + name + " started");
    if (says) expected.push_back("OnInformation [" + name + "] said by " + name);
    expected.push_back("OnPostExecute [" + name + "] fake " + name + " finished: succeeded");
  };
  for (int i = 0; i < kInline; ++i) task("t" + std::to_string(i), i % kSaysEvery == 0);
  task("tail", true);
  expected.push_back("OnPostExecute [many]");
  auto seen = [](const std::vector<Event>& events) {
    std::vector<std::string> out;
    for (const Event& e : events) {
      std::string line = std::string(EventName(e.type)) + " [" + e.source + "]";
      if (e.source != "many") line += " " + e.message;
      out.push_back(line);
    }
    return out;
  };
  EXPECT_EQ(seen(events_), expected);
  EXPECT_EQ(seen(catalog_events_), expected);
  for (const Event& e : events_) {
    EXPECT_EQ(e.execution_id, r.execution_id);
    EXPECT_FALSE(e.computer.empty());
    EXPECT_LE(e.started_at, e.ended_at);
  }
  ASSERT_EQ(runs_.size(), static_cast<size_t>(kInline + 1));
  for (const auto& [key, run] : runs_) {
    EXPECT_EQ(run.status, "succeeded") << key;
    EXPECT_EQ(run.execution_id, r.execution_id) << key;
    EXPECT_EQ(run.task_type, "fake") << key;
    ASSERT_TRUE(run.ended_at.has_value()) << key;
    EXPECT_LE(run.started_at, *run.ended_at) << key;
  }
}

// The notes count against the Recorder's queue bound: an inline loop far faster than the
// catalog is held at the catalog's pace instead of queueing without end (a 300,000-iteration
// loop had queued a million rows, 760 MB).
TEST_F(EngineTest, AnInlineLoopWaitsForAStuckCatalog) {
  auto pkg = Load(R"(package: held
variables:
  i: {type: int, value: 0}
tasks:
  loop:
    type: for
    init: "@i = 0"
    condition: "@i < 40000"
    assign: "@i = @i + 1"
    tasks:
      a: {type: fake, inline: true}
)");
  ASSERT_NE(pkg, nullptr);
  auto store = std::make_shared<Store>();
  std::promise<void> open;
  Recorder recorder(std::make_unique<catalog::testing::GatedCatalog>(
                        std::make_unique<FakeCatalog>(store), open.get_future().share()),
                    {}, nullptr);
  Engine engine(recorder);
  std::atomic<bool> finished{false};
  std::thread run([&] {
    auto result = engine.Run(pkg, {});
    EXPECT_TRUE(result.ok() && result->result == TaskResult::kSuccess);
    finished = true;
  });
  // 40,000 iterations make 120,000 rows, far past the queue's bound: the loop stalls once it
  // is reached (near 22,000 iterations), however slow the machine.
  size_t ran = 0;
  for (auto stable_since = Clock::now(); Clock::now() - stable_since < 200ms;) {
    std::this_thread::sleep_for(20ms);
    size_t now = World::Get().Calls().size();
    if (now != ran) stable_since = Clock::now();
    ran = now;
    if (finished) break;
  }
  EXPECT_FALSE(finished) << "the engine ran on with the catalog stuck";
  EXPECT_LT(ran, 40000u);
  open.set_value();
  run.join();
  recorder.Flush();
  std::lock_guard lock(store->mu);
  EXPECT_EQ(store->task_runs.size(), 40001u);  // the loop and each iteration's task
}

// The rows made from a failed and a retried leaf's notes: attempts, result codes, messages, and
// the end after the errors it said.
TEST_F(EngineTest, AFailedAndARetriedLeafAreRecordedAsBefore) {
  RunResult r = MustRun(R"(package: fails
tasks:
  again: {type: fake, inline: true, fail_times: 1, retries: 1, message: "first try broke"}
  broken: {type: fake, inline: true, result: failure, message: "it broke", after: [again]}
)");
  EXPECT_EQ(r.result, TaskResult::kFailure);
  auto lines = [&](const std::string& source) {
    std::vector<std::string> out;
    for (const Event& e : events_) {
      if (e.source == source) {
        out.push_back(std::string(EventName(e.type)) + " " + std::to_string(e.data_code) + " " +
                      e.message);
      }
    }
    return out;
  };
  EXPECT_EQ(lines("again"), (std::vector<std::string>{
                                "OnPreExecute 0 fake again started",
                                "OnPostExecute 1 fake again finished: failed",
                                // QA: it said "retrying in 0.0 ms".
                                "OnWarning 0 attempt 1 of 2 failed (first try broke); retrying "
                                "now",
                                "OnPreExecute 0 fake again started (attempt 2)",
                                "OnPostExecute 0 fake again finished: succeeded",
                            }));
  ASSERT_EQ(lines("broken").size(), 4u) << AllEvents();
  EXPECT_EQ(lines("broken")[1], "OnError 0 it broke");
  EXPECT_EQ(lines("broken")[3], "OnPostExecute 1 fake broken finished: failed");
  EXPECT_LE(EventsOf(EventType::kOnError, "broken")[0].ended_at,
            EventsOf(EventType::kOnPostExecute, "broken")[0].ended_at);
  ASSERT_NE(RunOf("again", 1), nullptr);
  EXPECT_EQ(RunOf("again", 1)->status, "failed");
  EXPECT_EQ(RunOf("again", 1)->message, "first try broke");
  ASSERT_NE(RunOf("again", 2), nullptr);
  EXPECT_EQ(RunOf("again", 2)->status, "succeeded");
  EXPECT_EQ(RunOf("again", 2)->message, "");
  ASSERT_NE(RunOf("broken"), nullptr);
  EXPECT_EQ(RunOf("broken")->message, "it broke");
}

// A start or end event carries the times of its task_runs or executions row exactly, for
// leaves, containers, loops and the package: they had differed by up to 26 µs, so a report
// built from events and one built from rows disagreed about durations.
TEST_F(EngineTest, StartAndEndEventsCarryTheirRowsTimes) {
  RunResult r = MustRun(R"(package: times
variables:
  i: {type: int, value: 0}
tasks:
  seq:
    type: sequence
    tasks:
      leaf: {type: fake, inline: true}
  loop:
    type: for
    init: "@i = 0"
    condition: "@i < 2"
    assign: "@i = @i + 1"
    after: [seq]
    tasks:
      body: {type: fake}
)");
  ASSERT_EQ(r.result, TaskResult::kSuccess);
  for (const auto& [key, run] : runs_) {
    std::vector<Event> pre, post;
    for (const Event& e : events_) {
      if (e.source != run.task_path) continue;
      if (e.type == EventType::kOnPreExecute) pre.push_back(e);
      if (e.type == EventType::kOnPostExecute) post.push_back(e);
    }
    ASSERT_EQ(pre.size(), post.size()) << key;
    ASSERT_FALSE(pre.empty()) << key;
    // A path runs once per attempt here, except the loop body: one run per iteration.
    bool found = false;
    for (size_t k = 0; k < pre.size(); ++k) {
      if (pre[k].started_at != run.started_at) continue;
      found = true;
      EXPECT_EQ(pre[k].ended_at, run.started_at) << key;
      ASSERT_TRUE(run.ended_at.has_value()) << key;
      EXPECT_EQ(post[k].started_at, run.started_at) << key;
      EXPECT_EQ(post[k].ended_at, *run.ended_at) << key;
    }
    EXPECT_TRUE(found) << key << ": no OnPreExecute at the row's start";
  }
  ASSERT_FALSE(executions_.empty());
  const ExecutionRow& execution = executions_.back();
  ASSERT_TRUE(execution.ended_at.has_value());
  int package_events = 0;
  for (const Event& e : events_) {
    if (e.source != "times") continue;  // the package's own events
    if (e.type == EventType::kOnPreExecute) {
      ++package_events;
      EXPECT_EQ(e.started_at, execution.started_at);
      EXPECT_EQ(e.ended_at, execution.started_at);
    } else if (e.type == EventType::kOnPostExecute) {
      ++package_events;
      EXPECT_EQ(e.started_at, execution.started_at);
      EXPECT_EQ(e.ended_at, *execution.ended_at);
    }
  }
  EXPECT_EQ(package_events, 2);
}

TEST_F(EngineTest, EmptyPackageSucceeds) {
  RunResult r = MustRun("package: empty\ntasks: {}\n");
  EXPECT_EQ(r.result, TaskResult::kSuccess);
  EXPECT_EQ(r.succeeded + r.failed + r.skipped, 0);
}

}  // namespace
}  // namespace fanout
