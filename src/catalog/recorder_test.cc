// Tests of the Recorder: ordering and Flush, masking on the way to sinks and catalog, retries of
// failed catalog writes, and a throughput check run by hand.
#include <gtest/gtest.h>

#include <fstream>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "catalog/sqlite_catalog.h"
#include "catalog/test_util.h"
#include "fanout/catalog.h"

namespace fanout::catalog {
namespace {

using testing::SampleEvent;
using testing::SampleExecution;
using testing::SampleTaskRun;
using testing::TempDir;

// What a MemorySink saw; read by the test after Flush() or after the Recorder is gone.
struct SinkLog {
  std::vector<Event> events;
  int flushes = 0;
};

class MemorySink : public EventSink {
 public:
  explicit MemorySink(std::shared_ptr<SinkLog> log) : log_(std::move(log)) {}
  void Write(const Event& event) override { log_->events.push_back(event); }
  void Flush() override { ++log_->flushes; }

 private:
  std::shared_ptr<SinkLog> log_;
};

// Rows a FakeCatalog stored, with upserts applied, and how many writes it refused.
struct FakeStore {
  std::mutex mu;
  std::map<std::string, ExecutionRow> executions;
  std::map<std::string, TaskRunRow> task_runs;
  std::vector<Event> events;
  int failures_left = 0;
  int failed_writes = 0;
};

class FakeCatalog : public testing::WriteOnlyCatalog {
 public:
  explicit FakeCatalog(std::shared_ptr<FakeStore> store) : store_(std::move(store)) {}
  Status Write(const CatalogBatch& batch) override {
    std::lock_guard lock(store_->mu);
    if (store_->failures_left > 0) {
      --store_->failures_left;
      ++store_->failed_writes;
      return Unavailable("database is down");
    }
    for (const auto& row : batch.executions) store_->executions[row.id] = row;
    for (const auto& row : batch.task_runs) {
      store_
          ->task_runs[row.execution_id + "/" + row.task_path + "#" + std::to_string(row.attempt)] =
          row;
    }
    for (const auto& event : batch.events) store_->events.push_back(event);
    return Status::Ok();
  }

 private:
  std::shared_ptr<FakeStore> store_;
};

std::vector<std::unique_ptr<EventSink>> OneSink(std::shared_ptr<SinkLog> log) {
  std::vector<std::unique_ptr<EventSink>> sinks;
  sinks.push_back(std::make_unique<MemorySink>(std::move(log)));
  return sinks;
}

TEST(RecorderTest, FlushDeliversEverythingInOrderToSinksAndCatalog) {
  TempDir dir;
  std::string path = dir.File("c.db");
  auto log = std::make_shared<SinkLog>();
  auto catalog = std::make_unique<SqliteCatalog>(path);
  ASSERT_TRUE(catalog->Open().ok());
  Recorder recorder(std::move(catalog), OneSink(log), nullptr);

  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&recorder, t] {
      for (int i = 0; i < kPerThread; ++i) {
        recorder.Emit(SampleEvent("e", EventType::kOnInformation,
                                  std::to_string(t) + ":" + std::to_string(i)));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  recorder.Emit(SampleEvent("e", EventType::kOnPostExecute, "last"));
  recorder.Flush();

  ASSERT_EQ(log->events.size(), static_cast<size_t>(kThreads * kPerThread + 1));
  EXPECT_EQ(log->events.back().message, "last");
  EXPECT_GE(log->flushes, 1);
  // Each thread's events stay in the order it emitted them.
  std::vector<int> next(kThreads, 0);
  for (size_t i = 0; i + 1 < log->events.size(); ++i) {
    const std::string& m = log->events[i].message;
    int t = std::stoi(m.substr(0, m.find(':')));
    int n = std::stoi(m.substr(m.find(':') + 1));
    ASSERT_EQ(n, next[t]++) << m;
  }
  // The catalog holds the same events in the same order, already at Flush().
  SqliteCatalog reader(path);
  ASSERT_TRUE(reader.Open().ok());
  auto stored = reader.ListEvents({});
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), log->events.size());
  for (size_t i = 0; i < stored->size(); ++i) {
    ASSERT_EQ((*stored)[i].message, log->events[i].message);
  }
}

TEST(RecorderTest, FlushWithNothingRecordedReturns) {
  auto log = std::make_shared<SinkLog>();
  Recorder recorder(nullptr, OneSink(log), nullptr);
  recorder.Flush();
  recorder.Flush();
  EXPECT_TRUE(log->events.empty());
  EXPECT_GE(log->flushes, 2);
}

TEST(RecorderTest, SecretsReachNeitherSinksNorCatalog) {
  auto log = std::make_shared<SinkLog>();
  auto store = std::make_shared<FakeStore>();
  auto masker = std::make_shared<Masker>();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), OneSink(log), masker);
    recorder.masker().AddSecret("s3cr3t");
    Event event = SampleEvent("e", EventType::kOnError, "login with s3cr3t failed");
    event.data_bytes = "stdout: password=s3cr3t\n";
    event.source = "task-s3cr3t";
    recorder.Emit(event);
    ExecutionRow execution = SampleExecution("e");
    execution.message = "failed: s3cr3t";
    recorder.RecordExecution(execution);
    TaskRunRow run = SampleTaskRun("e", "t");
    run.message = "exit 1 (s3cr3t)";
    recorder.RecordTaskRun(run);
    recorder.Flush();

    ASSERT_EQ(log->events.size(), 1u);
    EXPECT_EQ(log->events[0].message, "login with *** failed");
    EXPECT_EQ(log->events[0].data_bytes, "stdout: password=***\n");
    EXPECT_EQ(log->events[0].source, "task-***");
  }
  std::lock_guard lock(store->mu);
  ASSERT_EQ(store->events.size(), 1u);
  EXPECT_EQ(store->events[0].message, "login with *** failed");
  EXPECT_EQ(store->events[0].data_bytes, "stdout: password=***\n");
  EXPECT_EQ(store->executions["e"].message, "failed: ***");
  EXPECT_EQ(store->task_runs["e/t#1"].message, "exit 1 (***)");
}

TEST(RecorderTest, LaterTaskRunRowsWin) {
  auto store = std::make_shared<FakeStore>();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), {}, nullptr);
    for (int i = 0; i < 100; ++i) {
      TaskRunRow run = SampleTaskRun("e", "t" + std::to_string(i % 10));
      run.status = "running";
      recorder.RecordTaskRun(run);
      if (i % 7 == 0) recorder.Flush();
      run.status = "succeeded";
      run.message = std::to_string(i);
      recorder.RecordTaskRun(run);
    }
  }
  std::lock_guard lock(store->mu);
  ASSERT_EQ(store->task_runs.size(), 10u);
  for (int k = 0; k < 10; ++k) {
    const TaskRunRow& run = store->task_runs["e/t" + std::to_string(k) + "#1"];
    EXPECT_EQ(run.status, "succeeded");
    EXPECT_EQ(run.message, std::to_string(90 + k));
  }
}

// RecordLater's rows are made on the Recorder's thread, yet take their place in the queue:
// after what was recorded before the call and before what came after it.
TEST(RecorderTest, RowsRecordedLaterKeepTheirPlace) {
  auto log = std::make_shared<SinkLog>();
  auto store = std::make_shared<FakeStore>();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), OneSink(log), nullptr);
    EXPECT_FALSE(recorder.keeps_nothing());
    for (int round = 0; round < 50; ++round) {
      std::string t = "t" + std::to_string(round);
      recorder.Emit(SampleEvent("e", EventType::kOnInformation, t + " a"));
      recorder.RecordLater(2, [t](CatalogBatch& out) {
        out.events.push_back(SampleEvent("e", EventType::kOnInformation, t + " b"));
        TaskRunRow running = SampleTaskRun("e", t);
        running.status = "running";
        out.task_runs.push_back(running);
      });
      recorder.Emit(SampleEvent("e", EventType::kOnInformation, t + " c"));
      TaskRunRow done = SampleTaskRun("e", t);
      done.status = "succeeded";
      recorder.RecordTaskRun(done);
      if (round % 7 == 0) recorder.Flush();
      recorder.RecordLater(1, [t](CatalogBatch& out) {
        out.events.push_back(SampleEvent("e", EventType::kOnInformation, t + " d"));
      });
    }
  }
  std::vector<std::string> expected;
  for (int round = 0; round < 50; ++round) {
    for (const char* step : {" a", " b", " c", " d"}) {
      expected.push_back("t" + std::to_string(round) + step);
    }
  }
  std::vector<std::string> in_sink, in_catalog;
  for (const Event& e : log->events) in_sink.push_back(e.message);
  std::lock_guard lock(store->mu);
  for (const Event& e : store->events) in_catalog.push_back(e.message);
  EXPECT_EQ(in_sink, expected);
  EXPECT_EQ(in_catalog, expected);
  ASSERT_EQ(store->task_runs.size(), 50u);
  for (const auto& [key, run] : store->task_runs) EXPECT_EQ(run.status, "succeeded") << key;
}

TEST(RecorderTest, WithNoCatalogAndNoSinkItKeepsNothing) {
  Recorder recorder(nullptr, {}, nullptr);
  EXPECT_TRUE(recorder.keeps_nothing());
  bool made = false;
  recorder.RecordLater(1, [&made](CatalogBatch&) { made = true; });
  recorder.Emit(SampleEvent("e", EventType::kOnInformation, "dropped"));
  recorder.Flush();
  EXPECT_FALSE(made);
}

TEST(RecorderTest, KeepsRowsWhileTheCatalogFailsAndReportsOnce) {
  auto log = std::make_shared<SinkLog>();
  auto store = std::make_shared<FakeStore>();
  store->failures_left = 3;
  ::testing::internal::CaptureStderr();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), OneSink(log), nullptr);
    recorder.RecordExecution(SampleExecution("e"));
    for (int i = 0; i < 10; ++i) {
      recorder.Emit(SampleEvent("e", EventType::kOnInformation, std::to_string(i)));
      recorder.Flush();  // each Flush forces one catalog attempt
    }
    // Sinks are not held up by the catalog.
    EXPECT_EQ(log->events.size(), 10u);
  }
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "fanout: catalog write failed: Unavailable: database is down; will retry\n");
  std::lock_guard lock(store->mu);
  EXPECT_EQ(store->failed_writes, 3);
  EXPECT_EQ(store->executions.count("e"), 1u);
  ASSERT_EQ(store->events.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(store->events[i].message, std::to_string(i));
}

// A spool folder that cannot be made is said once (it was said every few milliseconds of the
// outage), and the failure does not name a spool file that is not there. The rows wait in
// memory until the catalog is back.
TEST(RecorderTest, ASpoolThatCannotBeWrittenIsSaidOnce) {
  TempDir dir;
  const std::string not_a_folder = dir.File("file");
  { std::ofstream(not_a_folder) << "x"; }
  auto store = std::make_shared<FakeStore>();
  store->failures_left = 1000000;  // the catalog stays down
  RecorderOptions options{not_a_folder, "fake:catalog"};
  options.shutdown_retry = std::chrono::milliseconds(0);
  ::testing::internal::CaptureStderr();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), {}, nullptr, options);
    for (int i = 0; i < 5; ++i) {
      recorder.Emit(SampleEvent("e", EventType::kOnInformation, std::to_string(i)));
      recorder.Flush();
    }
    std::lock_guard lock(store->mu);
    store->failures_left = 0;  // back before the end, which would wait 5 s for it
  }
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("fanout: catalog write failed: Unavailable: database is down; will retry\n"),
            std::string::npos)
      << err;
  size_t said = err.find("cannot spool the rows the catalog has not taken");
  EXPECT_NE(said, std::string::npos) << err;
  EXPECT_EQ(err.find("cannot spool", said + 1), std::string::npos) << err;
  std::lock_guard lock(store->mu);
  EXPECT_EQ(store->events.size(), 5u);
}

TEST(RecorderTest, DestructorDeliversWithoutFlush) {
  auto log = std::make_shared<SinkLog>();
  auto store = std::make_shared<FakeStore>();
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), OneSink(log), nullptr);
    for (int i = 0; i < 25000; ++i) {
      recorder.Emit(SampleEvent("e", EventType::kOnProgress, std::to_string(i)));
    }
  }
  EXPECT_EQ(log->events.size(), 25000u);
  EXPECT_GE(log->flushes, 1);
  std::lock_guard lock(store->mu);
  ASSERT_EQ(store->events.size(), 25000u);
  EXPECT_EQ(store->events.back().message, "24999");
}

// A child run's Recorder (it does not wait for the catalog at its end) that records `message`
// and ends while the catalog is down: its rows stay in the spool for another process.
void RecordAsAChildDuringAnOutage(std::shared_ptr<FakeStore> store, RecorderOptions options,
                                  const std::string& message) {
  options.shutdown_retry = std::chrono::milliseconds(0);
  Recorder child(std::make_unique<FakeCatalog>(std::move(store)), {}, nullptr, options);
  child.Emit(SampleEvent("c", EventType::kOnInformation, message));
}

TEST(RecorderTest, AChildLeavesItsRowsInTheSpoolAndTheParentDeliversThem) {
  TempDir spool;
  auto store = std::make_shared<FakeStore>();
  store->failures_left = 1000000;  // the catalog is down
  RecorderOptions parent_options{spool.path(), "fake:catalog"};
  ::testing::internal::CaptureStderr();
  {
    Recorder parent(std::make_unique<FakeCatalog>(store), {}, nullptr, parent_options);
    parent.Emit(SampleEvent("p", EventType::kOnInformation, "parent before"));
    parent.Flush();
    auto started = std::chrono::steady_clock::now();
    RecordAsAChildDuringAnOutage(store, parent_options, "child");
    // The child's end does not wait for the catalog (a parent's would, 5 s).
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
    {
      std::lock_guard lock(store->mu);
      EXPECT_TRUE(store->events.empty());
      store->failures_left = 0;  // the catalog is back
    }
    parent.Emit(SampleEvent("p", EventType::kOnInformation, "parent after"));
    parent.Flush();
    std::lock_guard lock(store->mu);
    std::vector<std::string> messages;
    for (const Event& e : store->events) messages.push_back(e.message);
    EXPECT_EQ(messages, (std::vector<std::string>{"parent before", "parent after", "child"}));
  }
  ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(std::filesystem::is_empty(spool.path()));
}

// A run stopped with Ctrl-C does not wait out the end's retries of a catalog that is down (it
// had exited up to 10 s after the signal): its rows stay in the spool for the next run.
TEST(RecorderTest, AStoppedRunLeavesItsRowsInTheSpoolAtOnce) {
  TempDir spool;
  auto store = std::make_shared<FakeStore>();
  store->failures_left = 1000000;  // the catalog is down
  std::atomic<bool> stopped{false};
  RecorderOptions options{spool.path(), "fake:catalog"};
  options.shutdown_retry = std::chrono::seconds(60);
  options.stop_retrying = [&stopped] { return stopped.load(); };
  ::testing::internal::CaptureStderr();
  auto ended = std::chrono::steady_clock::now();
  std::thread ctrl_c;
  {
    Recorder recorder(std::make_unique<FakeCatalog>(store), {}, nullptr, options);
    recorder.Emit(SampleEvent("r", EventType::kOnInformation, "before the stop"));
    recorder.Flush();
    ctrl_c = std::thread([&stopped] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      stopped = true;
    });
    ended = std::chrono::steady_clock::now();
  }
  const auto waited = std::chrono::steady_clock::now() - ended;
  ctrl_c.join();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_LT(waited, std::chrono::seconds(3)) << "the end waited for the catalog after the stop";
  EXPECT_GE(waited, std::chrono::milliseconds(250)) << "it retried until the stop";
  EXPECT_NE(err.find("will be delivered by the next `fanout run`"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::is_empty(spool.path())) << "the rows are kept";
}

// Leftovers that the start could not deliver (the catalog was down then) go once this process's
// own writes succeed, not only when a later process starts.
TEST(RecorderTest, LeftoversTheStartCouldNotDeliverGoOnceTheCatalogAnswers) {
  TempDir spool;
  auto store = std::make_shared<FakeStore>();
  store->failures_left = 1000000;
  RecorderOptions options{spool.path(), "fake:catalog"};
  ::testing::internal::CaptureStderr();
  RecordAsAChildDuringAnOutage(store, options, "left behind");
  {
    std::lock_guard lock(store->mu);
    store->failures_left = 1;  // down for the next start's replay only
  }
  {
    Recorder next(std::make_unique<FakeCatalog>(store), {}, nullptr, options);
    next.Emit(SampleEvent("n", EventType::kOnInformation, "own row"));
    next.Flush();
    std::lock_guard lock(store->mu);
    std::vector<std::string> messages;
    for (const Event& e : store->events) messages.push_back(e.message);
    EXPECT_EQ(messages, (std::vector<std::string>{"own row", "left behind"}));
  }
  std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("could not deliver spooled catalog rows yet"), std::string::npos) << said;
  EXPECT_TRUE(std::filesystem::is_empty(spool.path()));
}

TEST(RecorderTest, ProducersWaitWhenTheQueueIsFullAndLoseNothing) {
  auto store = std::make_shared<FakeStore>();
  std::promise<void> open;
  constexpr int kEvents = 200000;  // far more than the queue takes while the catalog is stuck
  std::atomic<int> emitted{0};
  {
    Recorder recorder(std::make_unique<testing::GatedCatalog>(std::make_unique<FakeCatalog>(store),
                                                              open.get_future().share()),
                      {}, nullptr);
    std::thread producer([&] {
      for (int i = 0; i < kEvents; ++i) {
        recorder.Emit(SampleEvent("e", EventType::kOnProgress, std::to_string(i)));
        emitted.store(i + 1);
      }
    });
    // The thread takes a round of rows into its Write, which waits; the producer then fills
    // the queue and waits too, well short of the end (without the bound it would finish).
    int stuck_at = -1;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (stuck_at < 0 && std::chrono::steady_clock::now() < deadline) {
      int before = emitted.load();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (emitted.load() == before && before > 0) stuck_at = before;
    }
    EXPECT_GT(stuck_at, 0);
    EXPECT_LT(stuck_at, kEvents / 2);
    open.set_value();
    producer.join();
  }
  std::lock_guard lock(store->mu);
  ASSERT_EQ(store->events.size(), static_cast<size_t>(kEvents));
  for (int i = 0; i < kEvents; i += 9973) EXPECT_EQ(store->events[i].message, std::to_string(i));
  EXPECT_EQ(store->events.back().message, std::to_string(kEvents - 1));
}

// Events a SharedSink saw, read by the test while the Recorder runs.
struct SharedSinkLog {
  std::mutex mu;
  std::condition_variable seen;
  std::vector<std::string> messages;

  bool WaitFor(size_t count, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu);
    return seen.wait_for(lock, limit, [&] { return messages.size() >= count; });
  }
};

class SharedSink : public EventSink {
 public:
  explicit SharedSink(std::shared_ptr<SharedSinkLog> log) : log_(std::move(log)) {}
  void Write(const Event& event) override {
    std::lock_guard lock(log_->mu);
    log_->messages.push_back(event.message);
    log_->seen.notify_all();
  }
  void Flush() override {}

 private:
  std::shared_ptr<SharedSinkLog> log_;
};

// A catalog whose writes hang until the test lets them go, as a PostgreSQL server that stopped
// answering does (for its 5 s timeout); says when the first write began.
class HangingCatalog : public testing::WriteOnlyCatalog {
 public:
  HangingCatalog(std::shared_ptr<FakeStore> store, std::shared_future<void> answer,
                 std::shared_ptr<std::promise<void>> writing)
      : inner_(std::move(store)), answer_(std::move(answer)), writing_(std::move(writing)) {}
  Status Write(const CatalogBatch& batch) override {
    if (writing_) {
      writing_->set_value();
      writing_.reset();
    }
    answer_.wait();
    return inner_.Write(batch);
  }

 private:
  FakeCatalog inner_;
  std::shared_future<void> answer_;
  std::shared_ptr<std::promise<void>> writing_;
};

// The console and log files go on while a catalog write hangs (they stopped for its whole
// timeout, 5 s at a time, while a PostgreSQL server was frozen); the rows reach the catalog
// once it answers.
TEST(RecorderTest, SinksGoOnWhileACatalogWriteHangs) {
  auto store = std::make_shared<FakeStore>();
  std::promise<void> answer;
  auto writing = std::make_shared<std::promise<void>>();
  std::future<void> write_began = writing->get_future();
  auto log = std::make_shared<SharedSinkLog>();
  std::vector<std::unique_ptr<EventSink>> sinks;
  sinks.push_back(std::make_unique<SharedSink>(log));
  {
    Recorder recorder(
        std::make_unique<HangingCatalog>(store, answer.get_future().share(), writing),
        std::move(sinks), nullptr);
    recorder.Emit(SampleEvent("e", EventType::kOnInformation, "before"));
    bool began = write_began.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    EXPECT_TRUE(began) << "the catalog thread did not write";
    recorder.Emit(SampleEvent("e", EventType::kOnInformation, "during"));
    EXPECT_TRUE(log->WaitFor(2, std::chrono::seconds(10)))
        << "an event waited for the catalog write under way";
    answer.set_value();  // in every case: the Recorder's end would wait for it
    recorder.Flush();
  }
  std::lock_guard lock(store->mu);
  ASSERT_EQ(store->events.size(), 2u);
  EXPECT_EQ(store->events[0].message, "before");
  EXPECT_EQ(store->events[1].message, "during");
}

// A throughput check, not a test: run with --gtest_also_run_disabled_tests.
TEST(RecorderTest, DISABLED_EventsPerSecondIntoSqlite) {
  TempDir dir;
  auto catalog = std::make_unique<SqliteCatalog>(dir.File("bench.db"));
  ASSERT_TRUE(catalog->Open().ok());
  constexpr int kEvents = 500000;
  auto start = std::chrono::steady_clock::now();
  {
    Recorder recorder(std::move(catalog), {}, nullptr);
    std::thread other([&] {
      for (int i = 0; i < kEvents / 2; ++i) {
        recorder.Emit(SampleEvent("0190f3a2-7c4e-7d4a-9b1e-4a5c6d7e8f90", EventType::kOnProgress,
                                  "task finished"));
      }
    });
    for (int i = 0; i < kEvents / 2; ++i) {
      recorder.Emit(SampleEvent("0190f3a2-7c4e-7d4a-9b1e-4a5c6d7e8f90", EventType::kOnInformation,
                                "task started"));
    }
    other.join();
    double emitted =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("emitting took %.3f s (%.2f us per event)\n", emitted, emitted * 1e6 / kEvents);
    recorder.Flush();
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d events stored in %.3f s: %.0f events/s\n", kEvents, seconds, kEvents / seconds);
}

// The catalog alone, in the Recorder's largest transactions.
TEST(RecorderTest, DISABLED_CatalogWritesPerSecond) {
  TempDir dir;
  SqliteCatalog catalog(dir.File("bench.db"));
  ASSERT_TRUE(catalog.Open().ok());
  CatalogBatch batch;
  for (int i = 0; i < 10000; ++i) {
    batch.events.push_back(SampleEvent("0190f3a2-7c4e-7d4a-9b1e-4a5c6d7e8f90",
                                       EventType::kOnInformation, "task started"));
  }
  constexpr int kBatches = 50;
  auto start = std::chrono::steady_clock::now();
  for (int b = 0; b < kBatches; ++b) ASSERT_TRUE(catalog.Write(batch).ok());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("catalog alone: %.0f events/s\n", kBatches * 10000 / seconds);
}

}  // namespace
}  // namespace fanout::catalog
