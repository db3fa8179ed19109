// Tests of the catalog reports: gathering (report.cc) against a real SQLite catalog written with
// known rows, and the text, JSON and HTML renderings of what was gathered.
#include "report/report.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <tuple>

#include "catalog/spool.h"
#include "common/util.h"
#include "report/render.h"

namespace fanout::report {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

// 2026-11-26T03:00:00Z plus an offset.
DateTime At(milliseconds offset) { return DateTime(microseconds(1795662000000000LL)) + offset; }

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fanout-report-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto catalog = OpenCatalog("sqlite:" + dir_ + "/fanout.db");
    ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
    catalog_ = std::move(*catalog);
  }
  void TearDown() override {
    catalog_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // An execution that ran from `start` for `length` (still running when length < 0).
  ExecutionRow Execution(const std::string& id, const std::string& package, milliseconds start,
                         milliseconds length, const std::string& status = "succeeded") {
    ExecutionRow row;
    row.id = id;
    row.package = package;
    row.host = "host-a";
    row.status = status;
    row.started_at = At(start);
    if (length.count() >= 0) {
      row.ended_at = At(start + length);
      row.exit_code = status == "succeeded" ? 0 : 1;
    }
    row.operator_name = "etl";
    return row;
  }

  void Write(CatalogBatch batch) { ASSERT_TRUE(catalog_->Write(batch).ok()); }

  // A parent with three children: eu and us in process, apac on agent-a (failed, with a
  // grandchild), plus an unrelated older top-level execution.
  void WriteTree() {
    CatalogBatch b;
    ExecutionRow parent = Execution("0190aaaa-0000-7000-8000-00000000p001", "nightly",
                                    milliseconds(1000), milliseconds(9000), "failed");
    parent.message = "apac: the agent job failed";
    parent.parameters = {{"day", {"2026-11-26", false}}, {"password", {"", true}}};
    b.executions.push_back(parent);
    const char* regions[] = {"eu", "us", "apac"};
    for (int i = 0; i < 3; ++i) {
      ExecutionRow child = Execution("0190aaaa-0000-7000-8000-00000000c00" + std::to_string(i),
                                     "load-region", milliseconds(1500 + 500 * i),
                                     milliseconds(3000), i == 2 ? "failed" : "succeeded");
      child.parent_id = parent.id;
      child.parameters = {{"delay", {"1", false}}, {"region", {regions[i], false}}};
      if (i == 2) {
        child.agent = "agent-a";
        child.job = "load-region";
        child.message = "load: exit code 3 <b>";
      }
      b.executions.push_back(child);
      TaskRunRow run;
      run.execution_id = parent.id;
      run.task_path = std::string("load[") + std::to_string(i) + "]/region";
      run.task_type = i == 2 ? "agent_job" : "package";
      run.status = i == 2 ? "failed" : "succeeded";
      run.started_at = child.started_at;
      run.ended_at = child.ended_at;
      run.child_execution_id = child.id;
      if (i == 2) run.agent = "agent-a";
      b.task_runs.push_back(run);
    }
    // The first attempt of the eu task failed and was retried.
    TaskRunRow retry = b.task_runs[0];
    retry.attempt = 2;
    retry.started_at = At(milliseconds(1400));
    b.task_runs[0].status = "failed";
    b.task_runs[0].started_at = At(milliseconds(1100));
    b.task_runs[0].ended_at = At(milliseconds(1300));
    b.task_runs.push_back(retry);
    ExecutionRow grandchild = Execution("0190aaaa-0000-7000-8000-00000000g001", "archive",
                                        milliseconds(2600), milliseconds(100));
    grandchild.parent_id = "0190aaaa-0000-7000-8000-00000000c002";
    b.executions.push_back(grandchild);
    b.executions.push_back(Execution("0180bbbb-0000-7000-8000-00000000old1", "weekly",
                                     milliseconds(-hours(48)), milliseconds(60000)));
    // apac's errors: the task's event repeats the execution's message, the package's closing
    // event wraps it; both are left out.
    Event task_error;
    task_error.execution_id = "0190aaaa-0000-7000-8000-00000000c002";
    task_error.type = EventType::kOnError;
    task_error.source = "load";
    task_error.source_id = "load";
    task_error.message = "exit code 3 <b>";
    b.events.push_back(task_error);
    Event package_error = task_error;
    package_error.source = "load-region";
    package_error.source_id = "";
    package_error.message = "package load-region failed: load: exit code 3 <b>";
    b.events.push_back(package_error);
    Event other = package_error;
    other.message = "disk full";
    b.events.push_back(other);
    Write(std::move(b));
  }

  std::string dir_;
  std::unique_ptr<Catalog> catalog_;
};

TEST(ParseSinceTest, TakesDurationsAndDates) {
  DateTime now = At(milliseconds(0));
  auto day = ParseSince("24h", now);
  ASSERT_TRUE(day.ok());
  EXPECT_EQ(now - *day, hours(24));
  auto week = ParseSince("7d", now);
  ASSERT_TRUE(week.ok());
  EXPECT_EQ(now - *week, hours(24 * 7));
  auto date = ParseSince("2026-11-25", now);
  ASSERT_TRUE(date.ok());
  EXPECT_EQ(FormatDateTime(*date), "2026-11-25T00:00:00.000000Z");
  auto time = ParseSince("2026-11-25T10:30:00+01:00", now);
  ASSERT_TRUE(time.ok());
  EXPECT_EQ(FormatDateTime(*time), "2026-11-25T09:30:00.000000Z");
  for (const char* bad : {"", "yesterday", "-1h", "2026-13-01", "2026-11-26Tnoon"}) {
    EXPECT_FALSE(ParseSince(bad, now).ok()) << bad;
  }
}

// An age too large to be one says so, rather than that it is not an age (QA).
TEST(ParseAgeTest, SaysWhatIsWrongWithAnAge) {
  auto huge = ParseAge("99999999999d");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("'99999999999d' is too long an age; the longest is "
                                         "36500d"),
            std::string::npos)
      << huge.status().message();
  auto bad = ParseAge("soon");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'soon' is not an age back from now"), std::string::npos)
      << bad.status().message();
  auto bare = ParseAge("30");
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.status().message().find("has no unit"), std::string::npos)
      << bare.status().message();
}

TEST(DisplayCatalogSpecTest, HidesPasswords) {
  EXPECT_EQ(DisplayCatalogSpec("sqlite:fanout.db"), "sqlite:fanout.db");
  EXPECT_EQ(DisplayCatalogSpec("postgresql://etl:pa55@db:5432/fanout"),
            "postgresql://etl:***@db:5432/fanout");
  EXPECT_EQ(DisplayCatalogSpec("postgresql://etl@db/fanout?password=pa55&sslmode=require"),
            "postgresql://etl@db/fanout?password=***&sslmode=require");
  EXPECT_EQ(DisplayCatalogSpec("postgres://db/fanout"), "postgres://db/fanout");
}

TEST(TaskLinesTest, SumsUpALoopsIterationsBeyondTheFirstOnes) {
  std::vector<TaskSummary> tasks;
  auto add = [&](const std::string& path, const std::string& status, int attempts = 1) {
    TaskSummary t;
    t.task_path = path;
    t.task_type = "expression";
    t.status = status;
    t.attempts = attempts;
    tasks.push_back(t);
  };
  const int shown = kShownIterations;
  add("prepare", "succeeded");
  for (int i = 1; i <= shown + 15; ++i) {
    add("l[" + std::to_string(i) + "]/t", i == shown + 10 ? "failed" : "succeeded",
        i == shown + 12 ? 2 : 1);
  }
  for (int i = 1; i <= shown + 1; ++i) add("short[" + std::to_string(i) + "]/t", "succeeded");
  add("finish", "succeeded");
  std::vector<TaskLine> lines = TaskLines(tasks);
  // prepare, l[1..shown], the rest of l, then those of the rest that failed or ran again, all
  // of short (one more would not save a line), finish.
  ASSERT_EQ(lines.size(), static_cast<size_t>(1 + shown + 1 + 2 + shown + 1 + 1));
  EXPECT_EQ(lines[shown].task->task_path, "l[" + std::to_string(shown) + "]/t");
  const TaskLine& rest = lines[shown + 1];
  EXPECT_EQ(rest.task, nullptr);
  EXPECT_EQ(rest.pattern, "l[*]/t");
  EXPECT_EQ(rest.count, 13);
  EXPECT_EQ(rest.states, "13 succeeded");
  EXPECT_EQ(lines[shown + 2].task->task_path, "l[" + std::to_string(shown + 10) + "]/t");
  EXPECT_EQ(lines[shown + 3].task->task_path, "l[" + std::to_string(shown + 12) + "]/t");
  EXPECT_EQ(lines.back().task->task_path, "finish");

  // A loop failing throughout stays a page: the first ones, as many failed ones again, a count.
  tasks.clear();
  for (int i = 1; i <= 10 * shown; ++i) add("f[" + std::to_string(i) + "]/t", "failed");
  lines = TaskLines(tasks);
  ASSERT_EQ(lines.size(), static_cast<size_t>(shown + 1 + shown));
  EXPECT_EQ(lines.back().count, 8 * shown);
  EXPECT_EQ(lines.back().states, std::to_string(8 * shown) + " failed");

  // The iterations that failed can leave one in the rest: it is one iteration, not "1 ...s".
  tasks.clear();
  for (int i = 1; i <= shown + 2; ++i) {
    add("g[" + std::to_string(i) + "]/t", i == shown + 1 ? "failed" : "succeeded");
  }
  lines = TaskLines(tasks);
  ASSERT_EQ(lines.size(), static_cast<size_t>(shown + 2));
  EXPECT_EQ(lines.back().Summary(), "1 more iteration: 1 succeeded (--json lists each)");
}

TEST(AbbreviateTest, CutsAtCharactersNotBytes) {
  EXPECT_EQ(Abbreviate("short", 10), "short");
  EXPECT_EQ(Abbreviate("exactly-10", 10), "exactly-10");
  EXPECT_EQ(Abbreviate("eleven-char", 10), "eleven-ch…");
  EXPECT_EQ(Abbreviate("first line\nsecond", 40), "first line…");
  EXPECT_EQ(Abbreviate("ééééééé", 4), "ééé…");
}

TEST_F(ReportTest, ExecutionsAreTopLevelNewestFirstWithFilters) {
  WriteTree();
  DateTime now = At(milliseconds(20000));
  auto all = ListExecutions(*catalog_, {});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].execution.package, "nightly");
  EXPECT_EQ((*all)[0].children, 3);
  EXPECT_EQ((*all)[1].execution.package, "weekly");

  ExecutionsQuery with_children;
  with_children.include_children = true;
  EXPECT_EQ(ListExecutions(*catalog_, with_children)->size(), 6u);

  ExecutionsQuery failed;
  failed.status = "failed";
  failed.include_children = true;
  auto failures = ListExecutions(*catalog_, failed);
  ASSERT_TRUE(failures.ok());
  ASSERT_EQ(failures->size(), 2u);  // apac and its parent
  for (const auto& s : *failures) EXPECT_EQ(s.execution.status, "failed");

  ExecutionsQuery package;
  package.package = "weekly";
  ASSERT_EQ(ListExecutions(*catalog_, package)->size(), 1u);

  ExecutionsQuery recent;
  recent.since = *ParseSince("1h", now);
  auto since = ListExecutions(*catalog_, recent);
  ASSERT_EQ(since->size(), 1u);
  EXPECT_EQ(since->front().execution.package, "nightly");

  ExecutionsQuery one;
  one.limit = 1;
  one.include_children = true;
  ASSERT_EQ(ListExecutions(*catalog_, one)->size(), 1u);

  std::string text = ExecutionsText(*all, now);
  EXPECT_NE(text.find("(times in UTC)"), std::string::npos) << text;
  EXPECT_NE(text.find("2026-11-26 03:00:01  2026-11-26 03:00:10  9.00 s"), std::string::npos)
      << text;
  auto json = nlohmann::json::parse(ExecutionsJson(*all, now));
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["children"], 3);
  EXPECT_EQ(json[0]["duration_seconds"], 9.0);
  EXPECT_TRUE(json[0]["agent"].is_null());
}

TEST_F(ReportTest, EmptyCatalogListsNothing) {
  auto none = ListExecutions(*catalog_, {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(nlohmann::json::parse(ExecutionsJson({}, At(milliseconds(0)))).size(), 0u);
  EXPECT_EQ(FindExecution(*catalog_, "0190aaaa-0000").status().code(), Code::kNotFound);
}

TEST_F(ReportTest, FindsByIdPrefixOrSuffix) {
  WriteTree();
  auto full = FindExecution(*catalog_, "0190aaaa-0000-7000-8000-00000000p001");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->parameters.size(), 2u) << "the row comes with its parameters";
  auto suffix = FindExecution(*catalog_, "00000000p001");
  ASSERT_TRUE(suffix.ok());
  EXPECT_EQ(suffix->package, "nightly");
  auto prefix = FindExecution(*catalog_, "0180bbbb");
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(prefix->package, "weekly");
  auto ambiguous = FindExecution(*catalog_, "0190aaaa");
  EXPECT_EQ(ambiguous.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ambiguous.status().message().find("matches 5 executions"), std::string::npos)
      << ambiguous.status().message();
  auto short_id = FindExecution(*catalog_, "0190");
  EXPECT_EQ(short_id.status().code(), Code::kNotFound);
  EXPECT_NE(short_id.status().message().find("'0190'"), std::string::npos);
  EXPECT_EQ(FindExecution(*catalog_, "ffffffff-nothing").status().code(), Code::kNotFound);
}

TEST_F(ReportTest, OverviewHasTasksErrorsAndTheChildTree) {
  WriteTree();
  auto parent = FindExecution(*catalog_, "00000000p001");
  ASSERT_TRUE(parent.ok());
  auto overview = BuildOverview(*catalog_, *parent, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();

  ASSERT_EQ(overview->tasks.size(), 3u);
  const TaskSummary& eu = overview->tasks[0];
  EXPECT_EQ(eu.task_path, "load[0]/region");
  EXPECT_EQ(eu.attempts, 2);
  EXPECT_EQ(eu.status, "succeeded") << "the last attempt decides";
  EXPECT_EQ(eu.started_at, At(milliseconds(1100))) << "the first attempt's start";
  EXPECT_EQ(overview->errors, std::vector<std::string>{"apac: the agent job failed"});

  ASSERT_EQ(overview->children.size(), 3u);
  EXPECT_EQ(CountChildren(overview->children), 4);
  const ChildNode& apac = overview->children[2];
  EXPECT_EQ(apac.label, "load-region apac") << "labelled by the parameter that differs";
  EXPECT_EQ(apac.task_path, "load[2]/region");
  EXPECT_EQ(AgentLabel(apac.execution), "agent-a");
  EXPECT_EQ(AgentLabel(overview->children[0].execution), "local");
  EXPECT_EQ(apac.errors, (std::vector<std::string>{"load: exit code 3 <b>", "disk full"}));
  ASSERT_EQ(apac.children.size(), 1u);
  EXPECT_EQ(apac.children[0].execution.package, "archive");
  EXPECT_EQ(apac.children[0].label, "archive");
}

// A child whose task attempt the parent gave up on (its agent lost, no retries left) but that
// succeeded all the same: the overview had listed it as a plain success beside its failed task
// (QA).
TEST_F(ReportTest, AChildItsParentGaveUpOnButThatSucceededIsMarked) {
  CatalogBatch b;
  ExecutionRow parent = Execution("0190aaaa-0000-7000-8000-00000000p002", "nightly",
                                  milliseconds(1000), milliseconds(9000), "failed");
  b.executions.push_back(parent);
  ExecutionRow child = Execution("0190aaaa-0000-7000-8000-00000000c010", "load-region",
                                 milliseconds(1500), milliseconds(3000), "succeeded");
  child.parent_id = parent.id;
  child.agent = "srv3";
  b.executions.push_back(child);
  TaskRunRow run;
  run.execution_id = parent.id;
  run.task_path = "load[15]/job";
  run.task_type = "agent_job";
  run.status = "failed";
  run.message = "agent srv3 was lost while it ran job child";
  run.started_at = child.started_at;
  run.ended_at = At(milliseconds(2500));
  run.child_execution_id = child.id;
  run.agent = "srv3";
  b.task_runs.push_back(run);
  Write(std::move(b));
  auto overview = BuildOverview(*catalog_, parent, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();
  ASSERT_EQ(overview->children.size(), 1u);
  const ChildNode& given_up = overview->children[0];
  EXPECT_TRUE(given_up.given_up);
  EXPECT_FALSE(given_up.superseded);
  EXPECT_TRUE(ShowsChild(kShownChildren, given_up)) << "shown beyond the first ones";
  EXPECT_EQ(AttemptNote(given_up),
            "attempt 1 of its task, which its parent gave up on: this child succeeded all the "
            "same");
}

// Children recorded in an agent's own catalog are said to be elsewhere: "Child packages: none"
// under tasks that name them read as if they had not run (QA).
TEST_F(ReportTest, ChildrenRecordedInAnotherCatalogAreSaidToBeThere) {
  CatalogBatch b;
  ExecutionRow parent = Execution("0190aaaa-0000-7000-8000-00000000p003", "nightly",
                                  milliseconds(1000), milliseconds(9000), "succeeded");
  b.executions.push_back(parent);
  for (int i = 0; i < 2; ++i) {
    TaskRunRow run;
    run.execution_id = parent.id;
    run.task_path = "load[" + std::to_string(i + 1) + "]/job";
    run.task_type = "agent-job";
    run.status = "succeeded";
    run.started_at = At(milliseconds(1500));
    run.ended_at = At(milliseconds(2500));
    run.child_execution_id = "0190aaaa-0000-7000-8000-00000000e00" + std::to_string(i);
    run.agent = "srv1";
    b.task_runs.push_back(run);
  }
  // A `package` task whose child failed before it started names an id recorded nowhere (QA:
  // counted as in an agent's catalog).
  TaskRunRow local = b.task_runs.front();
  local.task_path = "local";
  local.task_type = "package";
  local.status = "failed";
  local.agent.clear();
  local.child_execution_id = "0190aaaa-0000-7000-8000-00000000e009";
  b.task_runs.push_back(local);
  Write(std::move(b));
  auto overview = BuildOverview(*catalog_, parent, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();
  EXPECT_EQ(overview->children_elsewhere, 2);
  std::string text = OverviewText(*overview);
  EXPECT_NE(text.find("Child packages: none in this catalog\n  2 child executions that the tasks "
                      "name are recorded in another catalog"),
            std::string::npos)
      << text;
  EXPECT_NE(OverviewHtml(*overview).find("recorded in another catalog"), std::string::npos);
  // As `fanout logs --children` counts them, over the whole tree.
  auto elsewhere = CountChildrenElsewhere(*catalog_, parent.id);
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.status().ToString();
  EXPECT_EQ(*elsewhere, 2);
}

// SQLite's "attempt to write a readonly database" gets what to do (QA: it named neither the
// user nor the fix, and read as a failed read).
TEST(CatalogProblemTest, AReadOnlyCatalogSaysWhoMayNotWriteIt) {
  EXPECT_EQ(CatalogProblem("sqlite:cat.db", "reading the schema version: attempt to write a "
                                            "readonly database"),
            "catalog sqlite:cat.db: reading the schema version: attempt to write a readonly "
            "database; this user may not write the catalog file, its -wal and -shm files or its "
            "folder (their owner and mode, or a read-only file system): run as their owner, or "
            "give this user write access");
  EXPECT_EQ(CatalogProblem("sqlite:cat.db", "no such table"),
            "catalog sqlite:cat.db: no such table");
}

// A run whose process is gone shows abandoned, unless its last rows wait in a spool file of
// this host (it ended while the catalog was down): then it was not killed, and says so (QA: it
// was shown abandoned and "killed", and a prune could have removed it before its rows came).
TEST_F(ReportTest, AGoneRunWhoseRowsWaitInTheSpoolIsNotAbandoned) {
  const std::string spool = dir_ + "/spool";
  std::filesystem::create_directory(spool);
  const char* saved = std::getenv("FANOUT_SPOOL_DIR");
  std::string restore = saved != nullptr ? saved : "";
  setenv("FANOUT_SPOOL_DIR", spool.c_str(), 1);
  ExecutionRow row = Execution("0190aaaa-0000-7000-8000-00000000e009", "gone", milliseconds(0),
                               milliseconds(-1), "running");
  row.host = HostName();
  row.pid = getpid();
  row.process = "not this process";  // the pid now belongs to another process
  ExecutionRow killed = row;
  EXPECT_TRUE(MarkIfProcessGone(killed));
  EXPECT_EQ(killed.status, "abandoned");

  Event last;
  last.execution_id = row.id;
  last.type = EventType::kOnInformation;
  last.uid = "gone:1";
  std::ofstream(spool + "/k.123.x.spool") << catalog::SpoolLine(last) << "\n";
  ExecutionRow spooled = row;
  bool in_spool = false;
  EXPECT_FALSE(MarkIfProcessGone(spooled, &in_spool));
  EXPECT_TRUE(in_spool);
  EXPECT_EQ(spooled.status, "running");
  EXPECT_NE(spooled.message.find("wait in the spool file " + spool + "/k.123.x.spool"),
            std::string::npos)
      << spooled.message;
  // The overview says it too, in text and HTML (QA: only its JSON did, and the text showed a
  // "running for" that kept growing).
  CatalogBatch b;
  b.executions.push_back(row);
  Write(std::move(b));
  auto overview = BuildOverview(*catalog_, row, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();
  EXPECT_NE(OverviewText(*overview).find("Note     its fanout process"), std::string::npos)
      << OverviewText(*overview);
  EXPECT_NE(OverviewHtml(*overview).find("<dt>Note</dt><dd>its fanout process"),
            std::string::npos);
  if (saved != nullptr) {
    setenv("FANOUT_SPOOL_DIR", restore.c_str(), 1);
  } else {
    unsetenv("FANOUT_SPOOL_DIR");
  }
}

// A task still `running` in an execution that has ended (its process was killed, and an agent
// ended the execution for it) can never end: it shows abandoned, not "running ... so far".
TEST_F(ReportTest, ATaskOfAnEndedExecutionIsNotRunning) {
  CatalogBatch b;
  b.executions.push_back(Execution("0190aaaa-0000-7000-8000-00000000e001", "killed",
                                   milliseconds(1000), milliseconds(2000), "failed"));
  TaskRunRow run;
  run.execution_id = b.executions.back().id;
  run.task_path = "work";
  run.task_type = "process";
  run.status = "running";
  run.started_at = At(milliseconds(1100));
  b.task_runs.push_back(run);
  Write(std::move(b));
  auto execution = FindExecution(*catalog_, "00000000e001");
  ASSERT_TRUE(execution.ok());
  auto overview = BuildOverview(*catalog_, *execution, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();
  ASSERT_EQ(overview->tasks.size(), 1u);
  EXPECT_EQ(overview->tasks[0].status, "abandoned");
}

// Past kMaxErrorsPerExecution, the rest are counted: JSON has them as errors_omitted (the
// notice had been an "error" in its list), text and HTML say how to list them.
TEST_F(ReportTest, ErrorsBeyondTheFirstOnesAreCounted) {
  CatalogBatch b;
  b.executions.push_back(Execution("0190aaaa-0000-7000-8000-00000000e002", "errs",
                                   milliseconds(1000), milliseconds(2000), "failed"));
  for (int i = 0; i < kMaxErrorsPerExecution + 5; ++i) {
    Event error;
    error.execution_id = b.executions.back().id;
    error.type = EventType::kOnError;
    error.source = error.source_id = "t" + std::to_string(i);
    error.message = "exit code 1";
    b.events.push_back(error);
  }
  Write(std::move(b));
  auto execution = FindExecution(*catalog_, "00000000e002");
  ASSERT_TRUE(execution.ok());
  auto overview = BuildOverview(*catalog_, *execution, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok()) << overview.status().ToString();
  EXPECT_EQ(overview->errors.size(), static_cast<size_t>(kMaxErrorsPerExecution));
  EXPECT_EQ(overview->errors_omitted, 5);
  auto json = nlohmann::json::parse(OverviewJson(*overview));
  EXPECT_EQ(json["errors"].size(), static_cast<size_t>(kMaxErrorsPerExecution));
  EXPECT_EQ(json["errors_omitted"], 5);
  EXPECT_NE(OverviewText(*overview).find("! ... and 5 more; `fanout logs --execution"),
            std::string::npos);
}

// Thousands of children stay readable: the first kShownChildren and every one that did not
// succeed are shown, the other succeeded ones counted; JSON keeps them all.
// Grandchildren hang from ├─ and └─ with │ under a sibling that has more after it (every one
// had been └─); a child is not labelled by a parameter that holds its parent's masked secret.
TEST(OverviewTextTest, TheTreeHasConnectorsAndLabelsSkipMaskedValues) {
  Overview overview;
  overview.execution.id = "parent";
  overview.execution.status = "succeeded";
  auto node = [](const std::string& id, const std::string& label) {
    ChildNode child;
    child.execution.id = id;
    child.execution.status = "succeeded";
    child.label = label;
    return child;
  };
  ChildNode mid = node("m1", "mid a");
  ChildNode first = node("l1", "leaf 1");
  first.children.push_back(node("g1", "deep"));
  mid.children = {first, node("l2", "leaf 2")};
  overview.children = {mid};
  std::string text = OverviewText(overview);
  EXPECT_NE(text.find("\n  mid a "), std::string::npos) << text;
  EXPECT_NE(text.find("\n  ├─ leaf 1 "), std::string::npos) << text;
  EXPECT_NE(text.find("\n  │  └─ deep "), std::string::npos) << text;
  EXPECT_NE(text.find("\n  └─ leaf 2 "), std::string::npos) << text;
  std::string html = OverviewHtml(overview);
  EXPECT_NE(html.find("<span class=\"tree\">├ </span>leaf 1"), std::string::npos);
  EXPECT_NE(html.find("<span class=\"tree\">└ </span>leaf 2"), std::string::npos);

  ExecutionRow secretive;
  secretive.package = "leaf";
  secretive.parameters = {{"a_key", {"***", false}}, {"who", {"eu", false}}};
  EXPECT_EQ(ChildLabel(secretive), "leaf eu");
  secretive.parameters = {{"fail", {"true", false}}, {"region", {"eu", false}}};
  EXPECT_EQ(ChildLabel(secretive), "leaf eu") << "a flag says less than a name";
  secretive.parameters = {{"fail", {"true", false}}};
  EXPECT_EQ(ChildLabel(secretive), "leaf true");
}

TEST(OverviewTextTest, ManyChildrenShowTheFirstAndEveryFailure) {
  Overview overview;
  overview.execution.id = "parent";
  overview.execution.package = "nightly";
  overview.execution.status = "failed";
  const int shown = static_cast<int>(kShownChildren);
  for (int i = 1; i <= shown + 10; ++i) {
    ChildNode child;
    child.execution.id = "child-" + std::to_string(i) + ".";
    child.execution.package = "load";
    child.execution.status = i == shown + 7 ? "failed" : "succeeded";
    child.execution.ended_at = child.execution.started_at;
    child.label = "load " + std::to_string(i);
    overview.children.push_back(child);
  }
  std::string text = OverviewText(overview);
  EXPECT_NE(text.find("child-" + std::to_string(shown) + "."), std::string::npos) << text;
  EXPECT_EQ(text.find("child-" + std::to_string(shown + 1) + "."), std::string::npos) << text;
  EXPECT_NE(text.find("child-" + std::to_string(shown + 7) + "."), std::string::npos)
      << "a failure is always shown";
  EXPECT_NE(text.find("... 9 more that succeeded"), std::string::npos) << text;
  EXPECT_EQ(nlohmann::json::parse(OverviewJson(overview))["children"].size(),
            static_cast<size_t>(shown + 10));
}

TEST_F(ReportTest, OverviewRenderings) {
  WriteTree();
  auto parent = FindExecution(*catalog_, "00000000p001");
  ASSERT_TRUE(parent.ok());
  auto overview = BuildOverview(*catalog_, *parent, At(milliseconds(20000)));
  ASSERT_TRUE(overview.ok());

  std::string text = OverviewText(*overview);
  EXPECT_NE(text.find("(times in UTC)"), std::string::npos);
  EXPECT_NE(text.find("password  ***"), std::string::npos) << text;
  EXPECT_NE(text.find("Child packages (4: 3 succeeded, 1 failed)"), std::string::npos) << text;
  EXPECT_NE(text.find("! load: exit code 3 <b>"), std::string::npos) << text;
  EXPECT_NE(text.find("└─ archive"), std::string::npos) << text;

  auto json = nlohmann::json::parse(OverviewJson(*overview));
  EXPECT_TRUE(json["execution"]["parameters"]["password"]["value"].is_null());
  EXPECT_EQ(json["execution"]["parameters"]["password"]["sensitive"], true);
  EXPECT_EQ(json["tasks"].size(), 3u);
  EXPECT_EQ(json["children"][2]["agent"], "agent-a");
  EXPECT_EQ(json["children"][2]["children"][0]["package"], "archive");

  std::string html = OverviewHtml(*overview);
  // One bar per direct child, nothing fetched from elsewhere, nothing run, text escaped.
  std::regex bar("<rect class=\"bar[ \"]");
  auto bars =
      std::distance(std::sregex_iterator(html.begin(), html.end(), bar), std::sregex_iterator());
  EXPECT_EQ(bars, 3);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_NE(html.find("exit code 3 &lt;b&gt;"), std::string::npos);
  EXPECT_NE(html.find(">agent-a<"), std::string::npos) << "one timeline row per agent";
  EXPECT_NE(html.find(">local<"), std::string::npos);
  EXPECT_NE(html.find("bar bar-failed"), std::string::npos);
}

// How many rows (distinct heights) the timeline's succeeded bars are drawn on.
size_t BarRows(const std::string& svg) {
  std::regex y_of_bar("<rect class=\"bar bar-succeeded\" x=\"[0-9.]+\" y=\"([0-9.]+)\"");
  std::set<std::string> rows;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), y_of_bar);
       it != std::sregex_iterator(); ++it) {
    rows.insert((*it)[1]);
  }
  return rows.size();
}

TEST_F(ReportTest, TimelineStacksOverlappingChildrenOfOneAgent) {
  CatalogBatch b;
  ExecutionRow parent = Execution("p", "parent", milliseconds(0), milliseconds(1000));
  b.executions.push_back(parent);
  // a and b overlap, c starts after a ended: two lanes.
  for (auto [id, start, length] : {std::tuple{"a", 0, 500}, {"b", 100, 800}, {"c", 600, 300}}) {
    ExecutionRow child = Execution(id, "child", milliseconds(start), milliseconds(length));
    child.parent_id = "p";
    b.executions.push_back(child);
  }
  Write(std::move(b));
  auto overview = BuildOverview(*catalog_, parent, At(milliseconds(2000)));
  ASSERT_TRUE(overview.ok());
  std::string svg = TimelineSvg(*overview);
  EXPECT_EQ(BarRows(svg), 2u) << svg;
  EXPECT_EQ(TimelineSvg(Overview{}), "") << "no children, no chart";
}

// Children one after the other on one slot, each far shorter than a pixel of the chart: one
// lane, as the agent ran them (their bars, drawn 2 px wide, had been put on 16 lanes).
TEST_F(ReportTest, TimelineLanesFollowTimeNotTheBarsWidths) {
  CatalogBatch b;
  ExecutionRow parent = Execution("p", "parent", milliseconds(0), milliseconds(60000));
  b.executions.push_back(parent);
  for (int i = 0; i < 50; ++i) {
    ExecutionRow child = Execution("c" + std::to_string(i), "child", milliseconds(i * 10),
                                   milliseconds(10));
    child.parent_id = "p";
    b.executions.push_back(child);
  }
  Write(std::move(b));
  auto overview = BuildOverview(*catalog_, parent, At(milliseconds(70000)));
  ASSERT_TRUE(overview.ok());
  std::string svg = TimelineSvg(*overview);
  EXPECT_EQ(BarRows(svg), 1u) << svg.substr(0, 2000);
}

}  // namespace
}  // namespace fanout::report
