// Tests of AgentStore beyond what the agent's end-to-end tests reach: writes that fail, and
// what outlives the agent's process.
#include "agent/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/test_util.h"

namespace fanout::agent {

class AgentStoreTest : public ::testing::Test {
 protected:
  // Caps the database file at its current size, as a full disk would (SQLITE_FULL).
  static Status CapAtCurrentSize(AgentStore& store) { return store.Exec("PRAGMA max_page_count = 1"); }
  static Status Uncap(AgentStore& store) { return store.Exec("PRAGMA max_page_count = 1000000"); }
  // Makes the database as an agent before runs.orphan_timeout_ms left it.
  static Status WithoutOrphanTimeouts(AgentStore& store) {
    return store.Exec("ALTER TABLE runs DROP COLUMN orphan_timeout_ms");
  }
  // A run of job `load` and its first step's attempt, both running.
  static RunRecord RunningRun() {
    RunRecord run;
    run.id = "run-1";
    run.job = "load";
    run.status = "running";
    run.idempotency_key = "key-1";
    run.queued_at = Now();
    return run;
  }
  static StepAttemptRecord RunningAttempt() {
    StepAttemptRecord attempt;
    attempt.run_id = "run-1";
    attempt.step = 1;
    attempt.name = "work";
    attempt.status = "running";
    attempt.started_at = Now();
    return attempt;
  }
};

namespace {

// A full disk had left a finished run `running` in the store for ever: clients long-polling it
// never got its end, and `job stop` could not end it.
TEST_F(AgentStoreTest, AnUpdateThatCannotBeWrittenIsServedFromMemoryAndWrittenLater) {
  testing::TempDir dir;
  const std::string path = dir.File("agent.db");
  {
    auto store = AgentStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    RunRecord run = RunningRun();
    ASSERT_TRUE((*store)->InsertRun(run).ok());
    StepAttemptRecord attempt = RunningAttempt();
    ASSERT_TRUE((*store)->UpsertStepAttempt(attempt).ok());

    ASSERT_TRUE(CapAtCurrentSize(**store).ok());
    run.status = "succeeded";
    run.ended_at = Now();
    run.message = std::string(200000, 'x');  // needs pages the file cannot have
    attempt.status = "succeeded";
    attempt.stdout_text = std::string(200000, 'y');
    EXPECT_FALSE((*store)->UpdateRunAndAttempt(run, attempt).ok());
    EXPECT_EQ((*store)->UnsavedCount(), 2u);

    auto read = (*store)->GetRun(run.id);
    ASSERT_TRUE(read.ok() && read->has_value());
    EXPECT_EQ((*read)->status, "succeeded");
    auto by_key = (*store)->FindRunByKey("key-1");
    ASSERT_TRUE(by_key.ok() && by_key->has_value());
    EXPECT_EQ((*by_key)->status, "succeeded");
    auto history = (*store)->ListRuns("load", 10);
    ASSERT_TRUE(history.ok() && history->size() == 1u);
    EXPECT_EQ((*history)[0].status, "succeeded");
    auto steps = (*store)->ListStepAttempts(run.id, false);
    ASSERT_TRUE(steps.ok() && steps->size() == 1u);
    EXPECT_EQ((*steps)[0].status, "succeeded");
    EXPECT_EQ((*steps)[0].stdout_text, "") << "asked without output";

    // Room again: the next write writes what was kept first.
    ASSERT_TRUE(Uncap(**store).ok());
    RunRecord other = run;
    other.id = "run-2";
    other.idempotency_key = "key-2";
    other.message.clear();
    ASSERT_TRUE((*store)->InsertRun(other).ok());
    ASSERT_TRUE((*store)->UpdateRun(other).ok());
    EXPECT_EQ((*store)->UnsavedCount(), 0u);
  }
  auto reopened = AgentStore::Open(path);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto read = (*reopened)->GetRun("run-1");
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->status, "succeeded");
  EXPECT_EQ((*read)->message.size(), 200000u);
  auto steps = (*reopened)->ListStepAttempts("run-1", true);
  ASSERT_TRUE(steps.ok() && steps->size() == 1u);
  EXPECT_EQ((*steps)[0].stdout_text.size(), 200000u);
}

// Held updates are written once there is room, with no other write to carry them (the
// agent's heartbeat calls WriteUnsaved): an idle agent kept them until its stop.
TEST_F(AgentStoreTest, HeldUpdatesAreWrittenWhenThereIsRoomWithoutAnotherWrite) {
  testing::TempDir dir;
  const std::string path = dir.File("agent.db");
  RunRecord run = RunningRun();
  {
    auto store = AgentStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->InsertRun(run).ok());
    ASSERT_TRUE(CapAtCurrentSize(**store).ok());
    run.status = "failed";
    run.ended_at = Now();
    run.message = std::string(200000, 'x');
    EXPECT_FALSE((*store)->UpdateRun(run).ok());
    ASSERT_TRUE(Uncap(**store).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the once-a-second
    (*store)->WriteUnsaved();
    EXPECT_EQ((*store)->UnsavedCount(), 0u) << "written: nothing is held any more";
  }
}

// QA, a full disk: an attempt's end (with its output) could not be written, the run's end
// (small) could, and the run showed `succeeded` with its attempt `running` for ever. The run's
// end now waits for its attempts'; one lost with them leaves the run unfinished, for recovery.
TEST_F(AgentStoreTest, ARunsEndIsNotWrittenBeforeItsAttemptsEnds) {
  testing::TempDir dir;
  const std::string path = dir.File("agent.db");
  RunRecord run = RunningRun();
  StepAttemptRecord attempt = RunningAttempt();
  {
    auto store = AgentStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->InsertRun(run).ok());
    ASSERT_TRUE((*store)->UpsertStepAttempt(attempt).ok());
    ASSERT_TRUE(CapAtCurrentSize(**store).ok());
    attempt.status = "succeeded";
    attempt.stdout_text = std::string(200000, 'y');
    EXPECT_FALSE((*store)->UpsertStepAttempt(attempt).ok());
    run.pid = 4242;  // an update before the end fits, and is written: recovery needs it
    EXPECT_TRUE((*store)->UpdateRun(run).ok());
    run.status = "succeeded";
    run.ended_at = Now();
    EXPECT_FALSE((*store)->UpdateRun(run).ok()) << "written before its attempt's end";
    auto read = (*store)->GetRun(run.id);
    ASSERT_TRUE(read.ok() && read->has_value());
    EXPECT_EQ((*read)->status, "succeeded") << "answers come from memory";
  }  // the last try at closing fails too: both are lost
  auto reopened = AgentStore::Open(path);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto unfinished = (*reopened)->ListUnfinishedRuns();
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 1u) << "the run's end was written without its attempt's";
  EXPECT_EQ((*unfinished)[0].status, "running");
  EXPECT_EQ((*unfinished)[0].pid, 4242);
  auto steps = (*reopened)->ListStepAttempts(run.id, false);
  ASSERT_TRUE(steps.ok() && steps->size() == 1u);
  EXPECT_EQ((*steps)[0].status, "running");
  EXPECT_EQ(*(*reopened)->CloseAttemptsOfEndedRuns(), 0) << "the run has not ended";

  // A store an older agent left so is mended: the attempt is closed at its run's end.
  ASSERT_TRUE((*reopened)->UpdateRun(run).ok());
  EXPECT_EQ(*(*reopened)->CloseAttemptsOfEndedRuns(), 1);
  steps = (*reopened)->ListStepAttempts(run.id, false);
  ASSERT_TRUE(steps.ok() && steps->size() == 1u);
  EXPECT_EQ((*steps)[0].status, "abandoned");
  EXPECT_EQ((*steps)[0].ended_at, run.ended_at);
}

}  // namespace
// Executions left to end in the catalog outlive the agent's process, until forgotten.
TEST_F(AgentStoreTest, UnendedExecutionsAreKeptAcrossAReopenUntilForgotten) {
  testing::TempDir dir;
  const std::string path = dir.File("agent.db");
  const DateTime seen = Now();
  {
    auto store = AgentStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->SaveUnendedExecution({"e1", "failed", "killed", 137, seen}).ok());
    ASSERT_TRUE((*store)->SaveUnendedExecution({"e2", "canceled", "stopped", std::nullopt,
                                                seen + std::chrono::seconds(1)}).ok());
    // Saved again: replaced, not doubled.
    ASSERT_TRUE((*store)->SaveUnendedExecution({"e1", "failed", "killed", 137, seen}).ok());
  }
  auto store = AgentStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto kept = (*store)->ListUnendedExecutions();
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ((*kept)[0].id, "e1");
  EXPECT_EQ((*kept)[0].status, "failed");
  EXPECT_EQ((*kept)[0].message, "killed");
  EXPECT_EQ((*kept)[0].exit_code, 137);
  EXPECT_EQ((*kept)[0].seen_at, seen);
  EXPECT_EQ((*kept)[1].id, "e2");
  EXPECT_FALSE((*kept)[1].exit_code.has_value());
  ASSERT_TRUE((*store)->ForgetUnendedExecution("e1").ok());
  ASSERT_TRUE((*store)->ForgetUnendedExecution("never-saved").ok());
  kept = (*store)->ListUnendedExecutions();
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].id, "e2");
}

// A database from before runs.orphan_timeout_ms gets it at open; its runs read 0 (never), and
// new runs keep theirs.
TEST_F(AgentStoreTest, AnOlderDatabaseGetsTheOrphanTimeoutColumn) {
  testing::TempDir dir;
  const std::string path = dir.File("agent.db");
  {
    auto store = AgentStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->InsertRun(RunningRun()).ok());
    ASSERT_TRUE(WithoutOrphanTimeouts(**store).ok());
  }
  auto store = AgentStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto old_run = (*store)->GetRun("run-1");
  ASSERT_TRUE(old_run.ok() && *old_run) << old_run.status().ToString();
  EXPECT_EQ((*old_run)->orphan_timeout_ms, 0);
  RunRecord run = RunningRun();
  run.id = "run-2";
  run.idempotency_key = "key-2";
  run.orphan_timeout_ms = 1500;
  ASSERT_TRUE((*store)->InsertRun(run).ok());
  auto new_run = (*store)->GetRun("run-2");
  ASSERT_TRUE(new_run.ok() && *new_run) << new_run.status().ToString();
  EXPECT_EQ((*new_run)->orphan_timeout_ms, 1500);
}

// A data_dir the agent's user may not write in is said to be one: SQLite's "unable to open
// database file" alone left the operator guessing (security QA, an agent run as nobody).
TEST_F(AgentStoreTest, ADatabaseItsUserMayNotWriteSaysSo) {
  testing::TempDir dir;
  const std::string folder = dir.path() + "/data";
  ASSERT_EQ(mkdir(folder.c_str(), geteuid() == 0 ? 0755 : 0500), 0);
  // As root, the folder is root's and the open runs as nobody, in a child process of its own.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && setuid(65534) != 0) _exit(2);
    auto store = AgentStore::Open(folder + "/agent.db");
    const bool said = !store.ok() &&
                      store.status().message().find("may not write " + folder) != std::string::npos;
    if (!said) std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    _exit(said ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace fanout::agent
