// The catalog conformance suite: every Catalog method, with the same expectations, against each
// backend — SQLite in a temporary file, PostgreSQL in a fresh schema of the database that
// $FANOUT_TEST_POSTGRES (a libpq URI) names. Also OpenCatalog's specs, and the PostgreSQL
// backend's own behaviour (redaction, reconnection).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "catalog/postgres_catalog.h"
#include "catalog/shared_sql.h"
#include "catalog/sqlite_catalog.h"
#include "catalog/test_util.h"

namespace fanout::catalog {
namespace {

using testing::At;
using testing::SampleEvent;
using testing::SampleExecution;
using testing::SampleTaskRun;
using testing::TempDir;

constexpr const char* kPostgresEnv = "FANOUT_TEST_POSTGRES";
constexpr const char* kHowToRunPostgres =
    "PostgreSQL cases skipped: set FANOUT_TEST_POSTGRES to a libpq URI of a database where the "
    "tests may create schemas (eval \"$(bash scripts/postgres.sh start)\" starts a throwaway "
    "server and sets it; scripts/test.sh does this)";

// One catalog store for one test: catalogs made by Make() share it.
class Backend {
 public:
  virtual ~Backend() = default;
  // A new, unopened catalog object (its own connection) on the store.
  virtual std::unique_ptr<Catalog> Make() = 0;
  // The OpenCatalog spec of the store.
  virtual std::string Spec() = 0;
  // The schema version this build writes.
  virtual int version() const = 0;
  // Runs SQL directly on the store, as a user with the database's shell would; returns the
  // first column of the first row as text, "<null>", "" without rows, or "<error: ...>".
  virtual std::string Query(const std::string& sql) = 0;
};

class SqliteBackend : public Backend {
 public:
  SqliteBackend() : path_(dir_.File("catalog.db")) {}

  std::unique_ptr<Catalog> Make() override { return std::make_unique<SqliteCatalog>(path_); }
  std::string Spec() override { return "sqlite:" + path_; }
  int version() const override { return kSqliteSchemaVersion; }

  std::string Query(const std::string& sql) override {
    sqlite3* db = nullptr;
    sqlite3_open(path_.c_str(), &db);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt* stmt = nullptr;
    std::string result;
    int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      result = text ? reinterpret_cast<const char*>(text) : "<null>";
    } else if (rc != SQLITE_DONE) {
      result = std::string("<error: ") + sqlite3_errmsg(db) + ">";
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return result;
  }

 private:
  TempDir dir_;
  std::string path_;
};

// `uri` with the search_path set to `schema`, in the form (URI or key=value) it is written in.
std::string WithSearchPath(const std::string& uri, const std::string& schema) {
  if (uri.starts_with("postgresql://") || uri.starts_with("postgres://")) {
    return uri + (uri.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
           schema;
  }
  return uri + " options='-csearch_path=" + schema + "'";
}

// A uniquely named schema, dropped with everything in it at the end of the test.
class PostgresBackend : public Backend {
 public:
  explicit PostgresBackend(const std::string& uri) {
    std::random_device random;
    schema_ = "fanout_test_" + std::to_string(getpid()) + "_" + std::to_string(random() % 1000000);
    uri_ = WithSearchPath(uri, schema_);
    admin_ = PQconnectdb(uri.c_str());
    if (PQstatus(admin_) != CONNECTION_OK) {
      ADD_FAILURE() << kPostgresEnv << " names an unreachable server: " << PQerrorMessage(admin_);
      return;
    }
    PQsetNoticeProcessor(
        admin_, [](void*, const char*) {}, nullptr);
    std::string created = Query("CREATE SCHEMA " + schema_);
    EXPECT_EQ(created, "") << created;
    Query("SET search_path TO " + schema_);
  }
  ~PostgresBackend() override {
    if (PQstatus(admin_) == CONNECTION_OK) Query("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    PQfinish(admin_);
  }

  std::unique_ptr<Catalog> Make() override { return std::make_unique<PostgresCatalog>(uri_); }
  std::string Spec() override { return uri_; }
  int version() const override { return kPostgresSchemaVersion; }

  std::string Query(const std::string& sql) override {
    PGresult* result = PQexec(admin_, sql.c_str());
    std::string out;
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_TUPLES_OK) {
      if (PQntuples(result) > 0) {
        out = PQgetisnull(result, 0, 0) ? "<null>" : PQgetvalue(result, 0, 0);
      }
    } else if (status != PGRES_COMMAND_OK) {
      out = std::string("<error: ") + PQresultErrorMessage(result) + ">";
    }
    PQclear(result);
    return out;
  }

  const std::string& schema() const { return schema_; }

 private:
  std::string schema_;
  std::string uri_;
  PGconn* admin_ = nullptr;
};

class CatalogConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      backend_ = std::make_unique<SqliteBackend>();
    } else {
      const char* uri = std::getenv(kPostgresEnv);
      if (uri == nullptr || *uri == '\0') GTEST_SKIP() << kHowToRunPostgres;
      backend_ = std::make_unique<PostgresBackend>(uri);
    }
  }

  std::unique_ptr<Catalog> Open() {
    auto catalog = backend_->Make();
    Status status = catalog->Open();
    EXPECT_TRUE(status.ok()) << status.ToString();
    return catalog;
  }

  std::unique_ptr<Backend> backend_;
};

INSTANTIATE_TEST_SUITE_P(Backends, CatalogConformanceTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(CatalogConformanceTest, RoundTripsEveryField) {
  auto catalog = Open();
  ExecutionRow execution = SampleExecution("exec-1");
  execution.parent_id = "exec-0";
  execution.agent = "agent-a";
  execution.job = "load-region";
  execution.run_id = "run-9";
  execution.status = "failed";
  execution.ended_at = At(2500000);
  execution.exit_code = 1;
  execution.message = "one task failed";
  execution.pid = 4194304;  // pid_max on 64-bit Linux
  execution.process = "6f1b0c2e-boot:123456789";
  execution.parameters["day"] = ParameterValue{"2026-11-26", false};
  execution.parameters["empty"] = ParameterValue{"", false};
  TaskRunRow run = SampleTaskRun("exec-1", "load[3]/region-job", 10);
  run.attempt = 2;
  run.status = "succeeded";
  run.ended_at = At(20);
  run.agent = "agent-b";
  run.child_execution_id = "exec-2";
  run.message = "ok";
  Event event = SampleEvent("exec-1", EventType::kOnWarning, "multi\nline, \"quoted\"");
  event.data_bytes = std::string("bin\0ary", 7);
  event.data_code = -3;

  CatalogBatch batch;
  batch.executions.push_back(execution);
  batch.task_runs.push_back(run);
  batch.events.push_back(event);
  Status written = catalog->Write(batch);
  ASSERT_TRUE(written.ok()) << written.ToString();

  auto got = catalog->GetExecution("exec-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  const ExecutionRow& e = **got;
  EXPECT_EQ(e.id, "exec-1");
  EXPECT_EQ(e.parent_id, "exec-0");
  EXPECT_EQ(e.package, "nightly-orders");
  EXPECT_EQ(e.package_sha256, "abc123");
  EXPECT_EQ(e.host, "host-a");
  EXPECT_EQ(e.agent, "agent-a");
  EXPECT_EQ(e.job, "load-region");
  EXPECT_EQ(e.run_id, "run-9");
  EXPECT_EQ(e.status, "failed");
  EXPECT_EQ(e.started_at, execution.started_at);
  EXPECT_EQ(e.ended_at, execution.ended_at);
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_EQ(e.message, "one task failed");
  EXPECT_EQ(e.operator_name, "etl");
  EXPECT_EQ(e.pid, 4194304);
  EXPECT_EQ(e.process, "6f1b0c2e-boot:123456789");
  EXPECT_EQ(e.parameters, execution.parameters);

  auto runs = catalog->ListTaskRuns("exec-1");
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();
  ASSERT_EQ(runs->size(), 1u);
  const TaskRunRow& r = (*runs)[0];
  EXPECT_EQ(r.execution_id, "exec-1");
  EXPECT_EQ(r.task_path, "load[3]/region-job");
  EXPECT_EQ(r.task_type, "process");
  EXPECT_EQ(r.attempt, 2);
  EXPECT_EQ(r.status, "succeeded");
  EXPECT_EQ(r.started_at, run.started_at);
  EXPECT_EQ(r.ended_at, run.ended_at);
  EXPECT_EQ(r.agent, "agent-b");
  EXPECT_EQ(r.child_execution_id, "exec-2");
  EXPECT_EQ(r.message, "ok");

  auto events = catalog->ListEvents({});
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 1u);
  const Event& v = (*events)[0];
  EXPECT_GT(v.id, 0);
  EXPECT_EQ(v.execution_id, "exec-1");
  EXPECT_EQ(v.type, EventType::kOnWarning);
  EXPECT_EQ(v.computer, "host-a");
  EXPECT_EQ(v.operator_name, "etl");
  EXPECT_EQ(v.source, "load/region-job");
  EXPECT_EQ(v.source_id, "load/region-job");
  EXPECT_EQ(v.started_at, event.started_at);
  EXPECT_EQ(v.ended_at, event.ended_at);
  EXPECT_EQ(v.data_code, -3);
  EXPECT_EQ(v.data_bytes, event.data_bytes);
  EXPECT_EQ(v.message, event.message);

  auto missing = catalog->GetExecution("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  EXPECT_TRUE(catalog->ListTaskRuns("nope")->empty());
  EXPECT_TRUE(catalog->ListChildExecutions("nope")->empty());
}

// Text that needs escaping somewhere (COPY, SQL, CSV) comes back byte for byte; any byte value
// does in data_bytes.
// A tree read whole: the executions below a root with their parameters, the task runs and the
// events of the root and all of them; nothing of an unrelated execution. And events since a time.
TEST_P(CatalogConformanceTest, ReadsAnExecutionTreeWholeAndEventsSince) {
  auto catalog = Open();
  CatalogBatch batch;
  auto add = [&](const std::string& id, const std::string& parent, int64_t started) {
    ExecutionRow row = SampleExecution(id, started);
    row.parent_id = parent;
    row.parameters["region"] = ParameterValue{id + "-region", false};
    batch.executions.push_back(row);
    batch.task_runs.push_back(SampleTaskRun(id, "t", started));
    batch.events.push_back(SampleEvent(id, EventType::kOnError, "error of " + id));
  };
  add("root", "", 0);
  add("b", "root", 30);
  add("a", "root", 10);
  add("a1", "a", 20);
  add("other", "", 5);
  add("other1", "other", 6);
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto below = catalog->ListDescendantExecutions("root");
  ASSERT_TRUE(below.ok()) << below.status().ToString();
  std::vector<std::string> ids;
  for (const ExecutionRow& row : *below) ids.push_back(row.id + "<" + row.parent_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a<root", "a1<a", "b<root"}));
  ASSERT_EQ(below->size(), 3u);
  EXPECT_EQ((*below)[1].parameters.at("region").value, "a1-region");

  auto runs = catalog->ListTreeTaskRuns("root");
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();
  std::vector<std::string> run_ids;
  for (const TaskRunRow& run : *runs) run_ids.push_back(run.execution_id);
  EXPECT_EQ(run_ids, (std::vector<std::string>{"root", "a", "a1", "b"}));

  EventQuery query;
  query.execution_id = "a";
  query.with_descendants = true;
  auto events = catalog->ListEvents(query);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  std::vector<std::string> messages;
  for (const Event& e : *events) messages.push_back(e.message);
  EXPECT_EQ(messages, (std::vector<std::string>{"error of a", "error of a1"}));
  EXPECT_TRUE(catalog->ListDescendantExecutions("a1")->empty());

  // `since` keeps the events that ended then or later.
  CatalogBatch timed;
  for (int i = 0; i < 3; ++i) {
    Event e = SampleEvent("root", EventType::kOnInformation, "at " + std::to_string(i));
    e.started_at = e.ended_at = At(1000000LL * i);
    timed.events.push_back(e);
  }
  ASSERT_TRUE(catalog->Write(timed).ok());
  EventQuery recent;
  recent.types = {EventType::kOnInformation};
  recent.since = At(1000000);
  auto later = catalog->ListEvents(recent);
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  messages.clear();
  for (const Event& e : *later) messages.push_back(e.message);
  EXPECT_EQ(messages, (std::vector<std::string>{"at 1", "at 2"}));
}

TEST_P(CatalogConformanceTest, RoundTripsAwkwardText) {
  auto catalog = Open();
  std::string awkward = "tab\there\nnewline\r\nback\\slash \\N \\. 'quote' \"dq\" é € 🚀 ,;|";
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
  CatalogBatch batch;
  ExecutionRow execution = SampleExecution(awkward);
  execution.message = awkward;
  execution.parameters[awkward] = ParameterValue{awkward, false};
  batch.executions.push_back(execution);
  TaskRunRow run = SampleTaskRun(awkward, awkward);
  run.message = awkward;
  batch.task_runs.push_back(run);
  Event event = SampleEvent(awkward, EventType::kOnInformation, awkward);
  event.source = awkward;
  event.data_bytes = every_byte;
  batch.events.push_back(event);
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto got = catalog->GetExecution(awkward);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->message, awkward);
  EXPECT_EQ((*got)->parameters, execution.parameters);
  auto runs = catalog->ListTaskRuns(awkward);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].task_path, awkward);
  EXPECT_EQ((*runs)[0].message, awkward);
  EventQuery query;
  query.execution_id = awkward;
  query.source = awkward;
  auto events = catalog->ListEvents(query);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].message, awkward);
  EXPECT_EQ((*events)[0].data_bytes, every_byte);
}

// Process output is not always UTF-8. PostgreSQL text cannot hold NUL or invalid UTF-8, so that
// backend stores U+FFFD for such bytes; either way the batch must be written, not refused (the
// Recorder would retry it for ever).
TEST_P(CatalogConformanceTest, WritesTextThatIsNotUtf8) {
  auto catalog = Open();
  const std::string bad("latin1 caf\xE9, nul \0 end", 22);
  CatalogBatch batch;
  ExecutionRow execution = SampleExecution("e");
  execution.message = bad;
  batch.executions.push_back(execution);
  batch.events.push_back(SampleEvent("e", EventType::kOnError, bad));
  Status status = catalog->Write(batch);
  ASSERT_TRUE(status.ok()) << status.ToString();
  auto events = catalog->ListEvents({});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  const std::string& message = (*events)[0].message;
  EXPECT_TRUE(message.starts_with("latin1 caf")) << message;
  EXPECT_TRUE(message.ends_with(" end")) << message;
  if (GetParam() == "sqlite") {
    EXPECT_EQ(message, bad);
  } else {
    EXPECT_EQ(message, "latin1 caf\uFFFD, nul \uFFFD end");
    EXPECT_EQ((*catalog->GetExecution("e"))->message, message);
  }
}

TEST_P(CatalogConformanceTest, StoresAbsentValuesAsNullAndTimesAsIsoText) {
  auto catalog = Open();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("top", 123456));
  batch.task_runs.push_back(SampleTaskRun("top", "a"));
  ASSERT_TRUE(catalog->Write(batch).ok());
  for (const char* column : {"parent_id", "agent", "job", "run_id", "ended_at", "exit_code"}) {
    EXPECT_EQ(backend_->Query(std::string("SELECT ") + column + " FROM executions"), "<null>")
        << column;
  }
  for (const char* column : {"ended_at", "agent", "child_execution_id"}) {
    EXPECT_EQ(backend_->Query(std::string("SELECT ") + column + " FROM task_runs"), "<null>")
        << column;
  }
  EXPECT_EQ(backend_->Query("SELECT started_at FROM executions"), "2026-11-26T03:04:05.123456Z");
  EXPECT_EQ(backend_->Query("SELECT MAX(version) FROM schema_version"),
            std::to_string(backend_->version()));

  auto got = catalog->GetExecution("top");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->parent_id, "");
  EXPECT_EQ((*got)->agent, "");
  EXPECT_FALSE((*got)->ended_at.has_value());
  EXPECT_FALSE((*got)->exit_code.has_value());
  EXPECT_TRUE((*got)->parameters.empty());
}

TEST_P(CatalogConformanceTest, UpsertsExecutionsAndTaskRunsByKey) {
  auto catalog = Open();
  CatalogBatch first;
  first.executions.push_back(SampleExecution("e"));
  first.task_runs.push_back(SampleTaskRun("e", "a"));
  first.task_runs.push_back(SampleTaskRun("e", "b", 5));
  ASSERT_TRUE(catalog->Write(first).ok());

  CatalogBatch second;
  ExecutionRow done = SampleExecution("e");
  done.status = "succeeded";
  done.ended_at = At(100);
  done.exit_code = 0;
  second.executions.push_back(done);
  TaskRunRow a = SampleTaskRun("e", "a");
  a.status = "failed";
  a.ended_at = At(50);
  second.task_runs.push_back(a);
  TaskRunRow retry = SampleTaskRun("e", "a", 60);
  retry.attempt = 2;
  second.task_runs.push_back(retry);
  ASSERT_TRUE(catalog->Write(second).ok());

  auto execution = catalog->GetExecution("e");
  ASSERT_TRUE(execution.ok() && execution->has_value());
  EXPECT_EQ((*execution)->status, "succeeded");
  EXPECT_EQ((*execution)->exit_code, 0);
  EXPECT_EQ(catalog->ListExecutions(0)->size(), 1u);

  auto runs = catalog->ListTaskRuns("e");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 3u);  // ordered by started_at
  EXPECT_EQ((*runs)[0].task_path, "a");
  EXPECT_EQ((*runs)[0].attempt, 1);
  EXPECT_EQ((*runs)[0].status, "failed");
  EXPECT_EQ((*runs)[1].task_path, "b");
  EXPECT_EQ((*runs)[2].task_path, "a");
  EXPECT_EQ((*runs)[2].attempt, 2);

  // A late copy of its start (a spool replayed after someone ended it) leaves it ended; a later
  // end still replaces the end.
  CatalogBatch late;
  late.executions.push_back(SampleExecution("e"));
  ASSERT_TRUE(catalog->Write(late).ok());
  execution = catalog->GetExecution("e");
  ASSERT_TRUE(execution.ok() && execution->has_value());
  EXPECT_EQ((*execution)->status, "succeeded");
  EXPECT_EQ((*execution)->ended_at, At(100));
  ExecutionRow killed = done;
  killed.status = "failed";
  killed.ended_at = At(120);
  CatalogBatch end_again;
  end_again.executions.push_back(killed);
  ASSERT_TRUE(catalog->Write(end_again).ok());
  execution = catalog->GetExecution("e");
  ASSERT_TRUE(execution.ok() && execution->has_value());
  EXPECT_EQ((*execution)->status, "failed");
  EXPECT_EQ((*execution)->ended_at, At(120));
}

// An agent ending the execution of a step it found killed ends only a running row: an end the
// execution's own process recorded first (its spool delivered meanwhile) stays.
TEST_P(CatalogConformanceTest, EndRunningExecutionEndsOnlyARunningRow) {
  auto catalog = Open();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("e"));
  ASSERT_TRUE(catalog->Write(batch).ok());
  ExecutionRow killed;
  killed.id = "e";
  killed.status = "failed";
  killed.ended_at = At(30);
  killed.exit_code = 137;
  killed.message = "fanout run was killed by signal 9 before it recorded its end";
  auto ended = catalog->EndRunningExecution(killed);
  ASSERT_TRUE(ended.ok()) << ended.status().ToString();
  EXPECT_TRUE(*ended);
  auto execution = catalog->GetExecution("e");
  ASSERT_TRUE(execution.ok() && execution->has_value());
  EXPECT_EQ((*execution)->status, "failed");
  EXPECT_EQ((*execution)->ended_at, At(30));
  EXPECT_EQ((*execution)->exit_code, 137);
  EXPECT_EQ((*execution)->message, killed.message);
  EXPECT_EQ((*execution)->package, SampleExecution("e").package);  // the rest as it was

  ExecutionRow again = killed;
  again.status = "canceled";
  again.ended_at = At(40);
  again.exit_code.reset();
  ended = catalog->EndRunningExecution(again);
  ASSERT_TRUE(ended.ok());
  EXPECT_FALSE(*ended);
  execution = catalog->GetExecution("e");
  EXPECT_EQ((*execution)->status, "failed");
  EXPECT_EQ((*execution)->ended_at, At(30));

  again.id = "not-there";
  ended = catalog->EndRunningExecution(again);
  ASSERT_TRUE(ended.ok());
  EXPECT_FALSE(*ended);
  EXPECT_FALSE(catalog->GetExecution("not-there")->has_value());
}

// A batch may hold several rows of one key (a task that started and ended within one gather
// interval): the last one wins, as if they were written one after another.
TEST_P(CatalogConformanceTest, LastRowOfAKeyInOneBatchWins) {
  auto catalog = Open();
  CatalogBatch batch;
  ExecutionRow running = SampleExecution("e");
  running.parameters["a"] = ParameterValue{"1", false};
  running.parameters["b"] = ParameterValue{"2", false};
  ExecutionRow done = SampleExecution("e");
  done.status = "succeeded";
  done.ended_at = At(9);
  done.parameters["b"] = ParameterValue{"3", false};
  batch.executions = {running, done};
  TaskRunRow started = SampleTaskRun("e", "t");
  TaskRunRow ended = SampleTaskRun("e", "t");
  ended.status = "failed";
  ended.message = "exit code 3";
  batch.task_runs = {started, ended};
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto got = catalog->GetExecution("e");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, "succeeded");
  EXPECT_EQ((*got)->ended_at, At(9));
  std::map<std::string, ParameterValue> want = {{"a", {"1", false}}, {"b", {"3", false}}};
  EXPECT_EQ((*got)->parameters, want);
  auto runs = catalog->ListTaskRuns("e");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].status, "failed");
  EXPECT_EQ((*runs)[0].message, "exit code 3");

  // Except that a running row after an end leaves it ended, in one batch as across two.
  CatalogBatch late;
  ExecutionRow failed = SampleExecution("e2");
  failed.status = "failed";
  failed.ended_at = At(9);
  late.executions = {failed, SampleExecution("e2")};
  ASSERT_TRUE(catalog->Write(late).ok());
  got = catalog->GetExecution("e2");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, "failed");
  EXPECT_EQ((*got)->ended_at, At(9));
}

TEST_P(CatalogConformanceTest, ListsExecutionsNewestFirstAndChildren) {
  auto catalog = Open();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("parent", 0));
  for (int i = 0; i < 3; ++i) {
    ExecutionRow child = SampleExecution("child-" + std::to_string(i), 100 + i);
    child.parent_id = "parent";
    batch.executions.push_back(child);
  }
  batch.executions.push_back(SampleExecution("later", 1000));
  // Same start: ties are broken by id.
  ExecutionRow twin = SampleExecution("child-3", 102);
  twin.parent_id = "parent";
  batch.executions.push_back(twin);
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto newest = catalog->ListExecutions(3);
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 3u);
  EXPECT_EQ((*newest)[0].id, "later");
  EXPECT_EQ((*newest)[1].id, "child-3");
  EXPECT_EQ((*newest)[2].id, "child-2");
  EXPECT_EQ(catalog->ListExecutions(0)->size(), 6u);

  auto children = catalog->ListChildExecutions("parent");
  ASSERT_TRUE(children.ok());
  ASSERT_EQ(children->size(), 4u);
  EXPECT_EQ((*children)[0].id, "child-0");
  EXPECT_EQ((*children)[2].id, "child-2");
  EXPECT_EQ((*children)[3].id, "child-3");
  EXPECT_TRUE(catalog->ListChildExecutions("child-0")->empty());

  auto counts = catalog->CountChildren({"parent", "child-0", "nope"});
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(*counts, (std::map<std::string, int>{{"parent", 4}}));
  // More ids than one query takes.
  std::vector<std::string> many(kIdsPerStatement * 2 + 1, "nope");
  many.back() = "parent";
  counts = catalog->CountChildren(many);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(*counts, (std::map<std::string, int>{{"parent", 4}}));
}

// Task runs sort by start, then path in byte order ('/' < '[' whatever the locale), then
// attempt.
TEST_P(CatalogConformanceTest, ListsTaskRunsInByteOrder) {
  auto catalog = Open();
  CatalogBatch batch;
  for (const char* path : {"load[3]/x", "load/x", "Load/x", "load-2/x", "load[10]/x"}) {
    batch.task_runs.push_back(SampleTaskRun("e", path, 5));
  }
  batch.task_runs.push_back(SampleTaskRun("e", "zz", 1));
  ASSERT_TRUE(catalog->Write(batch).ok());
  auto runs = catalog->ListTaskRuns("e");
  ASSERT_TRUE(runs.ok());
  std::string order;
  for (const TaskRunRow& run : *runs) order += run.task_path + " ";
  EXPECT_EQ(order, "zz Load/x load-2/x load/x load[10]/x load[3]/x ");
}

TEST_P(CatalogConformanceTest, KeepsEventOrderAcrossBatches) {
  auto catalog = Open();
  for (int b = 0; b < 5; ++b) {
    CatalogBatch batch;
    for (int i = 0; i < 100; ++i) {
      batch.events.push_back(
          SampleEvent("e", EventType::kOnInformation, std::to_string(b * 100 + i)));
    }
    ASSERT_TRUE(catalog->Write(batch).ok());
  }
  auto events = catalog->ListEvents({});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 500u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ((*events)[i].message, std::to_string(i));
    if (i > 0) {
      EXPECT_GT((*events)[i].id, (*events)[i - 1].id);
    }
  }
}

// The Recorder replays a batch whose outcome it does not know (spooled, or a lost COMMIT): an
// event whose uid is stored already is skipped, so none is stored twice.
TEST_P(CatalogConformanceTest, StoresEachEventUidOnce) {
  auto catalog = Open();
  auto event = [](const std::string& uid, const std::string& message) {
    Event e = SampleEvent("e", EventType::kOnInformation, message);
    e.uid = uid;
    return e;
  };
  CatalogBatch batch;
  batch.events = {event("p:1", "1"), event("p:2", "2"), event("", "no uid")};
  ASSERT_TRUE(catalog->Write(batch).ok());
  batch.events.push_back(event("p:3", "3"));
  Status status = catalog->Write(batch);
  ASSERT_TRUE(status.ok()) << status.ToString();
  auto events = catalog->ListEvents({});
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  std::string messages;
  for (const Event& e : *events) messages += e.message + ",";
  EXPECT_EQ(messages, "1,2,no uid,no uid,3,");  // events without a uid are always added
}

TEST_P(CatalogConformanceTest, FiltersEvents) {
  auto catalog = Open();
  CatalogBatch batch;
  batch.events.push_back(SampleEvent("e1", EventType::kOnPreExecute, "1"));
  batch.events.push_back(SampleEvent("e1", EventType::kOnError, "2"));
  batch.events.push_back(SampleEvent("e2", EventType::kOnError, "3"));
  Event other_source = SampleEvent("e1", EventType::kOnWarning, "4");
  other_source.source = "extract";
  batch.events.push_back(other_source);
  batch.events.push_back(SampleEvent("e1", EventType::kOnPostExecute, "5"));
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto messages = [&](const EventQuery& query) {
    std::string out;
    auto events = catalog->ListEvents(query);
    EXPECT_TRUE(events.ok()) << events.status().ToString();
    if (!events.ok()) return out;
    for (const Event& e : *events) out += e.message;
    return out;
  };
  EventQuery query;
  EXPECT_EQ(messages(query), "12345");
  query.execution_id = "e1";
  EXPECT_EQ(messages(query), "1245");
  query.types = {EventType::kOnError, EventType::kOnWarning};
  EXPECT_EQ(messages(query), "24");
  query.source = "extract";
  EXPECT_EQ(messages(query), "4");
  query.source = "nowhere";
  EXPECT_EQ(messages(query), "");

  EventQuery paged;
  paged.limit = 2;
  auto first = catalog->ListEvents(paged);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  paged.after_id = first->back().id;
  EXPECT_EQ(messages(paged), "34");
  paged.limit = 0;
  EXPECT_EQ(messages(paged), "345");

  EventQuery tail;  // the last two of e1's
  tail.execution_id = "e1";
  tail.newest_first = true;
  tail.limit = 2;
  EXPECT_EQ(messages(tail), "54");
}

TEST_P(CatalogConformanceTest, RecordsParametersButNeverSensitiveValues) {
  auto catalog = Open();
  CatalogBatch batch;
  ExecutionRow execution = SampleExecution("e");
  execution.parameters["day"] = ParameterValue{"2026-11-26", false};
  execution.parameters["db_password"] = ParameterValue{"hunter2", true};
  batch.executions.push_back(execution);
  ASSERT_TRUE(catalog->Write(batch).ok());
  // A later row of the execution (its end) carries no parameters and keeps them.
  CatalogBatch end;
  ExecutionRow done = SampleExecution("e");
  done.status = "succeeded";
  end.executions.push_back(done);
  ASSERT_TRUE(catalog->Write(end).ok());

  auto got = catalog->GetExecution("e");
  ASSERT_TRUE(got.ok() && got->has_value());
  std::map<std::string, ParameterValue> want = {{"day", {"2026-11-26", false}},
                                                {"db_password", {"", true}}};
  EXPECT_EQ((*got)->parameters, want);
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM execution_parameters"), "2");
  EXPECT_EQ(backend_->Query("SELECT value FROM execution_parameters WHERE name = 'db_password'"),
            "<null>");
  EXPECT_EQ(
      backend_->Query("SELECT COUNT(*) FROM execution_parameters WHERE value LIKE '%hunter%'"),
      "0");
}

TEST_P(CatalogConformanceTest, ListsAJobsSucceededExecutionsNewestFirstWithParameters) {
  auto catalog = Open();
  CatalogBatch batch;
  for (int i = 0; i < 5; ++i) {
    ExecutionRow row = SampleExecution("run-" + std::to_string(i), i * 1000);
    row.job = "load-region";
    row.status = i == 3 ? "failed" : "succeeded";
    row.ended_at = At(i * 1000 + 500);
    row.parameters["region"] = ParameterValue{"r" + std::to_string(i), false};
    batch.executions.push_back(row);
  }
  ExecutionRow other = SampleExecution("other", 9000);
  other.job = "other-job";
  other.status = "succeeded";
  batch.executions.push_back(other);
  batch.executions.push_back(SampleExecution("no-job", 9500));
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto runs = catalog->ListJobExecutions("load-region", 3);
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0].id, "run-4");
  EXPECT_EQ((*runs)[1].id, "run-2");
  EXPECT_EQ((*runs)[2].id, "run-1");
  EXPECT_EQ((*runs)[0].parameters.at("region").value, "r4");
  EXPECT_EQ((*runs)[2].ended_at, At(1500));
  EXPECT_EQ(catalog->ListJobExecutions("load-region", 0)->size(), 4u);
  EXPECT_TRUE(catalog->ListJobExecutions("nope", 10)->empty());
}

TEST_P(CatalogConformanceTest, ReopensAndRefusesANewerSchema) {
  {
    auto catalog = Open();
    CatalogBatch batch;
    batch.executions.push_back(SampleExecution("kept"));
    ASSERT_TRUE(catalog->Write(batch).ok());
  }
  {
    auto catalog = Open();
    EXPECT_TRUE(catalog->GetExecution("kept")->has_value());
    EXPECT_TRUE(catalog->Open().ok());  // a second Open is harmless
  }
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM schema_version"), "1");
  int version = backend_->version();
  EXPECT_EQ(backend_->Query("INSERT INTO schema_version(version) VALUES (" +
                            std::to_string(version + 1) + ")"),
            "");
  auto newer = backend_->Make();
  Status status = newer->Open();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_NE(status.message().find("schema version " + std::to_string(version + 1) +
                                  ", newer than the version " + std::to_string(version)),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("use a newer fanout"), std::string::npos) << status.message();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("x"));
  EXPECT_EQ(newer->Write(batch).code(), Code::kFailedPrecondition);
  EXPECT_EQ(newer->ListExecutions(0).status().code(), Code::kFailedPrecondition);
}

TEST_P(CatalogConformanceTest, UnopenedCatalogRefusesWork) {
  auto catalog = backend_->Make();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("x"));
  EXPECT_EQ(catalog->Write(batch).code(), Code::kFailedPrecondition);
  EXPECT_EQ(catalog->GetExecution("x").status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(catalog->ListEvents({}).status().code(), Code::kFailedPrecondition);
}

// Several processes start on a fresh store at once: exactly one creates the schema.
TEST_P(CatalogConformanceTest, ConcurrentOpenersCreateTheSchemaOnce) {
  constexpr int kOpeners = 8;
  std::atomic<int> ready{0};
  std::vector<Status> results(kOpeners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      auto catalog = backend_->Make();
      ready.fetch_add(1);
      while (ready.load() < kOpeners) std::this_thread::yield();
      results[i] = catalog->Open();
      if (results[i].ok()) {
        CatalogBatch batch;
        batch.events.push_back(SampleEvent("e", EventType::kOnInformation, std::to_string(i)));
        results[i] = catalog->Write(batch);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& status : results) EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM schema_version"), "1");
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM events"), std::to_string(kOpeners));
}

// Eight writers (the Recorders of a parent and its children) write at once, each its own
// execution's events plus upserts of one shared row; none fails, and each execution's events
// keep their order.
TEST_P(CatalogConformanceTest, ConcurrentWritersKeepEachExecutionsOrder) {
  Open();  // the parent creates the schema before starting children
  constexpr int kWriters = 8;
  constexpr int kBatches = 40;
  constexpr int kPerBatch = 100;
  std::vector<Status> results(kWriters);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      auto catalog = backend_->Make();
      results[w] = catalog->Open();
      std::string id = "writer-" + std::to_string(w);
      for (int b = 0; b < kBatches && results[w].ok(); ++b) {
        CatalogBatch batch;
        batch.executions.push_back(SampleExecution(id, b));
        ExecutionRow parent = SampleExecution("parent");
        parent.message = id;
        batch.executions.push_back(parent);
        TaskRunRow run = SampleTaskRun("parent", "pool[" + std::to_string(w) + "]/job", b);
        run.child_execution_id = id;
        batch.task_runs.push_back(run);
        for (int i = 0; i < kPerBatch; ++i) {
          batch.events.push_back(
              SampleEvent(id, EventType::kOnProgress, std::to_string(b * kPerBatch + i)));
        }
        results[w] = catalog->Write(batch);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& status : results) ASSERT_TRUE(status.ok()) << status.ToString();

  auto catalog = Open();
  for (int w = 0; w < kWriters; ++w) {
    EventQuery query;
    query.execution_id = "writer-" + std::to_string(w);
    auto events = catalog->ListEvents(query);
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), static_cast<size_t>(kBatches * kPerBatch));
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      ASSERT_EQ((*events)[i].message, std::to_string(i));
    }
  }
  EXPECT_EQ(catalog->ListTaskRuns("parent")->size(), static_cast<size_t>(kWriters));
  EXPECT_EQ(catalog->ListExecutions(0)->size(), static_cast<size_t>(kWriters + 1));
  EXPECT_EQ(backend_->Query("SELECT COUNT(DISTINCT id) FROM events"),
            std::to_string(kWriters * kBatches * kPerBatch));
}

// The same across processes, which is how out-of-process children write; both also race to
// create the schema.
TEST_P(CatalogConformanceTest, TwoProcessesWriteConcurrently) {
  constexpr int kBatches = 50;
  constexpr int kPerBatch = 100;
  auto write_all = [&](const std::string& execution_id) -> bool {
    auto catalog = backend_->Make();
    if (!catalog->Open().ok()) return false;
    for (int b = 0; b < kBatches; ++b) {
      CatalogBatch batch;
      for (int i = 0; i < kPerBatch; ++i) {
        batch.events.push_back(SampleEvent(execution_id, EventType::kOnProgress, "m"));
      }
      if (!catalog->Write(batch).ok()) return false;
    }
    return true;
  };
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(write_all("child") ? 0 : 1);
  bool parent_ok = write_all("parent");
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(parent_ok);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM events"),
            std::to_string(2 * kBatches * kPerBatch));
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM schema_version"), "1");
}

TEST_P(CatalogConformanceTest, OpenCatalogOpensTheBackendsSpec) {
  auto catalog = OpenCatalog(backend_->Spec());
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("x"));
  EXPECT_TRUE((*catalog)->Write(batch).ok());
  EXPECT_EQ(backend_->Query("SELECT id FROM executions"), "x");
}

// ---- OpenCatalog --------------------------------------------------------------------------------

TEST(OpenCatalogTest, AcceptsSqliteSpecsAndBareDbPaths) {
  TempDir dir;
  auto a = OpenCatalog("sqlite:" + dir.File("a.sqlite"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("x"));
  EXPECT_TRUE((*a)->Write(batch).ok());
  auto b = OpenCatalog(dir.File("b.db"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(std::filesystem::exists(dir.File("b.db")));
}

TEST(OpenCatalogTest, RejectsUnsupportedSpecs) {
  for (const char* spec : {"mysql://x", "fanout.sqlite", "", "sqlite:"}) {
    auto other = OpenCatalog(spec);
    ASSERT_FALSE(other.ok()) << spec;
    EXPECT_EQ(other.status().code(), Code::kInvalidArgument);
    EXPECT_NE(other.status().message().find("sqlite:PATH"), std::string::npos);
    EXPECT_NE(other.status().message().find("postgresql://"), std::string::npos);
  }
  auto mistyped = OpenCatalog("postgresq://fanout:hunter2@db/fanout");
  ASSERT_FALSE(mistyped.ok());
  EXPECT_EQ(mistyped.status().message().find("hunter2"), std::string::npos)
      << mistyped.status().message();
}

TEST(OpenCatalogTest, MissingDirectoryIsAnErrorNamingIt) {
  TempDir dir;
  std::string path = dir.File("no/such/dir/c.db");
  auto catalog = OpenCatalog("sqlite:" + path);
  ASSERT_FALSE(catalog.ok());
  EXPECT_EQ(catalog.status().code(), Code::kNotFound);
  EXPECT_NE(catalog.status().message().find(dir.File("no/such/dir")), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.File("no")));
}

// Needs no server: nothing listens on port 1.
TEST(OpenCatalogTest, UnreachablePostgresIsUnavailableNamingTheHostButNotThePassword) {
  for (const char* spec : {"postgresql://fanout:hunter2@127.0.0.1:1/fanout?connect_timeout=5",
                           "postgres://fanout@127.0.0.1:1/fanout?password=hunter2"}) {
    auto catalog = OpenCatalog(spec);
    ASSERT_FALSE(catalog.ok()) << spec;
    const std::string& message = catalog.status().message();
    EXPECT_EQ(catalog.status().code(), Code::kUnavailable) << message;
    EXPECT_NE(message.find("127.0.0.1"), std::string::npos) << message;
    EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
    EXPECT_NE(message.find("***"), std::string::npos) << message;
    EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
  }
}

// ---- PostgreSQL specifics ---------------------------------------------------------------------

// What libpq would misread, and so show parts of the password in its messages, is refused up
// front, as are specs it cannot parse; none of the messages holds the password.
TEST(PostgresConnectionStringTest, RefusesWhatLibpqWouldMisread) {
  for (const char* bad : {"postgresql://etl:ab/cdSECRET@127.0.0.1:5432/db",
                          "postgresql://etl:p@ssSECRET@127.0.0.1/db",
                          "postgresql://etl:SECRET@127.0.0.1:notaport/db",
                          // QA: taken for an outage, the run went on and spooled for ever.
                          "postgresql://etl:SECRET@127.0.0.1:99999/db",
                          "postgresql://etl:SECRET@127.0.0.1:0/db",
                          "host=h port=5432,70000 password=SECRET",
                          "postgresql://etl:SECRET@127.0.0.1/db?nosuchoption=1",
                          // QA: a '?' had ended the user info, and the password showed whole.
                          "postgresql://etl:Qm?SECRET@127.0.0.1:5432/db",
                          "postgresql://etl:p@ss/w?rd#%:SECRET y'z@127.0.0.1:5432/db"}) {
    Status status = CheckConnectionString(bad);
    EXPECT_EQ(status.code(), Code::kInvalidArgument) << bad;
    EXPECT_EQ(status.message().find("SECRET"), std::string::npos) << status.message();
  }
  EXPECT_TRUE(CheckConnectionString("postgresql://etl:p%40ss%2F@127.0.0.1:5432/db").ok());
  EXPECT_TRUE(CheckConnectionString("postgresql://h1:5432,h2:5433/db?connect_timeout=2").ok());
  // An '@' in a query value is no user info (an Azure-style user name).
  EXPECT_TRUE(CheckConnectionString("postgresql://127.0.0.1:5432/db?user=etl@srv").ok());
}

TEST(PostgresConnectionStringTest, RedactsPasswords) {
  EXPECT_EQ(RedactConnectionString("postgresql://u:p%40ss@h:5432/db?sslmode=require"),
            "postgresql://u:***@h:5432/db?sslmode=require");
  EXPECT_EQ(RedactConnectionString("postgres://u@h/db?password=x&application_name=a"),
            "postgres://u@h/db?password=***&application_name=a");
  EXPECT_EQ(RedactConnectionString("postgresql://h1:5432,h2:5433/db"),
            "postgresql://h1:5432,h2:5433/db");
  EXPECT_EQ(RedactConnectionString("postgresql://u:a@b@h"), "postgresql://u:***@h");
  // A password written with a raw '/' had ended the user info early and shown whole.
  EXPECT_EQ(RedactConnectionString("postgresql://u:ab/cd@h:5432/db?x=1"),
            "postgresql://u:***@h:5432/db?x=1");
  EXPECT_EQ(RedactConnectionString("postgresql://u:Qm?Leak@h:5432/db"), "postgresql://u:***@h:5432/db");
  EXPECT_EQ(RedactConnectionString("postgresql://u:Qm?a=b@h:5432/db"), "postgresql://u:***@h:5432/db");
  EXPECT_EQ(RedactConnectionString("postgresql://h:1/db?user=etl@srv&password=SECRET"),
            "postgresql://h:1/db?user=etl@srv&password=***");
  EXPECT_EQ(RedactConnectionString("postgresql://u:p@ss/w?rd#%:x y'z@h:5432/db"),
            "postgresql://u:***@h:5432/db");
  EXPECT_EQ(RedactConnectionString("host=h password=secret dbname=d"),
            "host=h password=*** dbname=d");
  EXPECT_EQ(RedactConnectionString("host=h password = 'se cr\\'et' user=u"),
            "host=h password = *** user=u");
  EXPECT_EQ(RedactConnectionString("host=h user=u"), "host=h user=u");
  // libpq decodes a query key: a percent-encoded "password" is one too.
  EXPECT_EQ(RedactConnectionString("postgres://u@h/db?pass%77ord=x&a=%41"),
            "postgres://u@h/db?password=***&a=%41");
}

// An agent's step run as a proxy user gets its catalog without the agent's password (QA: it
// could read it from its own process's memory).
TEST(PostgresConnectionStringTest, WithoutPasswordLeavesThePasswordOut) {
  EXPECT_EQ(WithoutPassword("postgresql://u:p%40ss@h:5432/db?sslmode=require"),
            "postgresql://u@h:5432/db?sslmode=require");
  EXPECT_EQ(WithoutPassword("postgres://u@h/db?password=x&application_name=a"),
            "postgres://u@h/db?application_name=a");
  EXPECT_EQ(WithoutPassword("postgres://u@h/db?application_name=a&password=x"),
            "postgres://u@h/db?application_name=a");
  EXPECT_EQ(WithoutPassword("postgres://u@h/db?password=x"), "postgres://u@h/db");
  EXPECT_EQ(WithoutPassword("postgres://u@h/db?pass%77ord=x"), "postgres://u@h/db");
  EXPECT_EQ(WithoutPassword("postgresql://u:ab/cd@h:5432/db?x=1"), "postgresql://u@h:5432/db?x=1");
  EXPECT_EQ(WithoutPassword("postgresql://h1:5432,h2:5433/db"), "postgresql://h1:5432,h2:5433/db");
  EXPECT_EQ(WithoutPassword("host=h password = 'se cr\\'et' user=u"), "host=h user=u");
  EXPECT_EQ(WithoutPassword("host=h user=u password=secret"), "host=h user=u ");
}

class PostgresCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* uri = std::getenv(kPostgresEnv);
    if (uri == nullptr || *uri == '\0') GTEST_SKIP() << kHowToRunPostgres;
    backend_ = std::make_unique<PostgresBackend>(uri);
  }
  std::unique_ptr<PostgresBackend> backend_;
};

// A server restart or a network cut kills the connection; the next Write reconnects.
TEST_F(PostgresCatalogTest, ReconnectsAfterLosingTheConnection) {
  std::string app = backend_->schema();
  auto catalog = std::make_unique<PostgresCatalog>(backend_->Spec() + "&application_name=" + app);
  ASSERT_TRUE(catalog->Open().ok());
  CatalogBatch batch;
  batch.events.push_back(SampleEvent("e", EventType::kOnInformation, "before"));
  ASSERT_TRUE(catalog->Write(batch).ok());
  EXPECT_EQ(backend_->Query("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = '" +
                            app + "'"),
            "1");
  batch.events[0].message = "after";
  Status status = catalog->Write(batch);
  EXPECT_TRUE(status.ok()) << status.ToString();
  auto events = catalog->ListEvents({});
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].message, "after");
}

// A TCP relay on loopback to the test server that can stop passing bytes while it keeps its
// connections open: a server that took the connection and then answers nothing (frozen, or its
// packets dropped).
class FreezableRelay {
 public:
  explicit FreezableRelay(int target_port) : target_port_(target_port) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = Loopback(0);
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(listen(listener_, 16), 0);
    socklen_t length = sizeof address;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~FreezableRelay() {
    stop_ = true;
    thread_.join();
    for (auto [client, server] : pairs_) {
      close(client);
      close(server);
    }
    close(listener_);
  }
  int port() const { return port_; }
  void Freeze(bool frozen) { frozen_ = frozen; }

 private:
  static sockaddr_in Loopback(int port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
  }
  void Run() {
    while (!stop_) {
      const bool frozen = frozen_;
      std::vector<pollfd> fds = {{listener_, POLLIN, 0}};
      if (!frozen) {
        for (auto [client, server] : pairs_) {
          fds.push_back({client, POLLIN, 0});
          fds.push_back({server, POLLIN, 0});
        }
      }
      poll(fds.data(), fds.size(), 20);
      if ((fds[0].revents & POLLIN) != 0) Accept();
      if (frozen) continue;
      std::vector<std::pair<int, int>> open;
      for (size_t k = 0; k < pairs_.size(); ++k) {
        auto [client, server] = pairs_[k];
        bool ok = Pass(fds[1 + 2 * k], server) && Pass(fds[2 + 2 * k], client);
        if (ok) {
          open.push_back(pairs_[k]);
        } else {
          close(client);
          close(server);
        }
      }
      pairs_ = std::move(open);
    }
  }
  void Accept() {
    int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = Loopback(target_port_);
    if (connect(server, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      close(client);
      close(server);
      return;
    }
    pairs_.emplace_back(client, server);
  }
  // Copies what `from` has to `to`; false once either side is closed.
  static bool Pass(const pollfd& from, int to) {
    if ((from.revents & (POLLIN | POLLHUP | POLLERR)) == 0) return true;
    char buffer[65536];
    ssize_t n = read(from.fd, buffer, sizeof buffer);
    if (n <= 0) return false;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write(to, buffer + done, static_cast<size_t>(n - done));
      if (w <= 0) return false;
      done += w;
    }
    return true;
  }

  const int target_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> stop_{false};
  std::vector<std::pair<int, int>> pairs_;  // the relay thread's
  std::thread thread_;
};

// A server that took the connection and then answered nothing held a run's Write() for ever,
// and its console and log files with it (QA: 25 s). With a write timeout the connection is
// dropped, the write fails as an outage (to be spooled), and the next write connects again.
TEST_F(PostgresCatalogTest, AWriteTimeoutEndsAWriteToAServerThatStoppedAnswering) {
  using Clock = std::chrono::steady_clock;
  // The relay needs the server's port, as a URI written host:port/ says it.
  const std::string uri = std::getenv(kPostgresEnv);
  size_t at = uri.find('@'), slash = uri.find('/', at == std::string::npos ? 0 : at);
  size_t colon = uri.rfind(':', slash);
  if (at == std::string::npos || slash == std::string::npos || colon == std::string::npos ||
      colon < at) {
    GTEST_SKIP() << "needs " << kPostgresEnv << " as postgresql://USER:PASSWORD@HOST:PORT/DB";
  }
  FreezableRelay relay(std::stoi(uri.substr(colon + 1, slash - colon - 1)));
  PostgresCatalog catalog(backend_->Spec() + "&port=" + std::to_string(relay.port()));
  catalog.SetWriteTimeout(std::chrono::milliseconds(1000));
  ASSERT_TRUE(catalog.Open().ok());
  CatalogBatch batch;
  batch.events.push_back(SampleEvent("e", EventType::kOnInformation, "before"));
  ASSERT_TRUE(catalog.Write(batch).ok());

  relay.Freeze(true);
  batch.events[0] = SampleEvent("e", EventType::kOnInformation, "during");
  auto start = Clock::now();
  Status status = catalog.Write(batch);
  auto waited = Clock::now() - start;
  EXPECT_EQ(status.code(), Code::kUnavailable) << status.ToString();
  EXPECT_NE(status.message().find("no answer for 1000 ms"), std::string::npos)
      << status.ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(900));
  EXPECT_LT(waited, std::chrono::seconds(4));

  relay.Freeze(false);
  status = catalog.Write(batch);
  ASSERT_TRUE(status.ok()) << status.ToString();
  auto events = catalog.ListEvents({});
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].message, "during");
}

// Tables in place but no version recorded count as version 0: every migration step is applied
// (they are idempotent) and recorded.
// A run goes on with a catalog no server answers for (its rows are spooled until it does), but
// not with one that answers and refuses: that is for the user to fix.
TEST_F(PostgresCatalogTest, ARunDefersOnlyACatalogNoServerAnswersFor) {
  std::string unreachable;
  auto down = OpenCatalogForRun("postgresql://fanout@127.0.0.1:1/nowhere", unreachable);
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_FALSE(unreachable.empty());
  EXPECT_EQ((*down)->ListExecutions(1).status().code(), Code::kFailedPrecondition)
      << "not open until a write reaches the server";

  std::string spec = backend_->Spec();
  size_t at = spec.find('@');
  ASSERT_NE(at, std::string::npos) << spec;
  std::string wrong_password = "postgresql://fanout:wrong-password" + spec.substr(at);
  auto refused = OpenCatalogForRun(wrong_password, unreachable);
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(unreachable.empty());

  auto up = OpenCatalogForRun(spec, unreachable);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  EXPECT_TRUE(unreachable.empty());
}

TEST_F(PostgresCatalogTest, UpgradesAnUnversionedSchema) {
  ASSERT_TRUE(backend_->Make()->Open().ok());
  EXPECT_EQ(backend_->Query("SELECT COUNT(*) FROM schema_version"), "1");
  EXPECT_EQ(backend_->Query("DELETE FROM schema_version"), "");
  ASSERT_TRUE(backend_->Make()->Open().ok());
  EXPECT_EQ(backend_->Query("SELECT MAX(version) FROM schema_version"),
            std::to_string(kPostgresSchemaVersion));
  EXPECT_EQ(
      backend_->Query("SELECT data_type FROM information_schema.columns WHERE table_schema = '" +
                      backend_->schema() + "' AND table_name = 'events' AND column_name = 'id'"),
      "bigint");
}

// A login role of the test's own (the test server's role may create roles), dropped at the end
// with the rights it was given on the test's schema.
class TestRole {
 public:
  TestRole(PostgresBackend& backend, const std::string& suffix, const std::string& options = "")
      : backend_(backend), name_(backend.schema() + "_" + suffix) {
    std::string created =
        backend_.Query("CREATE ROLE " + name_ + " LOGIN PASSWORD 'pw-" + suffix + "' " + options);
    EXPECT_EQ(created, "") << created;
  }
  ~TestRole() {
    const std::string& schema = backend_.schema();
    backend_.Query("REVOKE ALL ON ALL TABLES IN SCHEMA " + schema + " FROM " + name_);
    backend_.Query("REVOKE ALL ON ALL SEQUENCES IN SCHEMA " + schema + " FROM " + name_);
    backend_.Query("REVOKE ALL ON SCHEMA " + schema + " FROM " + name_);
    std::string dropped = backend_.Query("DROP ROLE " + name_);
    EXPECT_EQ(dropped, "") << dropped;
  }
  const std::string& name() const { return name_; }
  // The backend's spec (its schema on the search path) as this role.
  std::string Spec() const {
    std::string spec = backend_.Spec();
    size_t user = spec.find("://") + 3;
    size_t at = spec.find('@', user);
    return spec.substr(0, user) + name_ + ":pw-" + name_.substr(backend_.schema().size() + 1) +
           spec.substr(at);
  }

 private:
  PostgresBackend& backend_;
  std::string name_;
};

// A role that may only read: a run is refused at its start, naming what is missing (it had
// succeeded with every row left in the spool, said as "unavailable"); a reader opens the
// catalog. The same reader on an older schema is told it needs an upgrade it may not make.
TEST_F(PostgresCatalogTest, ARoleThatMayOnlyReadReadsButDoesNotRecord) {
  ASSERT_TRUE(backend_->Make()->Open().ok());
  TestRole reader(*backend_, "reader");
  EXPECT_EQ(backend_->Query("GRANT USAGE ON SCHEMA " + backend_->schema() + " TO " + reader.name() +
                            "; GRANT SELECT ON ALL TABLES IN SCHEMA " + backend_->schema() +
                            " TO " + reader.name()),
            "");
  std::string unreachable;
  auto run = OpenCatalogForRun(reader.Spec(), unreachable);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), Code::kPermissionDenied);
  EXPECT_NE(run.status().message().find("lacks INSERT on executions, UPDATE on executions"),
            std::string::npos)
      << run.status().message();
  EXPECT_NE(run.status().message().find("USAGE on the sequence of events.id"), std::string::npos)
      << run.status().message();

  PostgresCatalog read(reader.Spec(), /*existing_catalog_only=*/true);
  Status opened = read.Open();
  EXPECT_TRUE(opened.ok()) << opened.ToString();

  EXPECT_EQ(backend_->Query("UPDATE schema_version SET version = 2"), "");
  PostgresCatalog older(reader.Spec(), /*existing_catalog_only=*/true);
  opened = older.Open();
  EXPECT_EQ(opened.code(), Code::kPermissionDenied) << opened.ToString();
  EXPECT_NE(opened.message().find("has schema version 2, older than this fanout's"),
            std::string::npos)
      << opened.message();

  // Upserts need SELECT as well as INSERT and UPDATE.
  TestRole writer(*backend_, "writer");
  EXPECT_EQ(backend_->Query("GRANT USAGE ON SCHEMA " + backend_->schema() + " TO " + writer.name() +
                            "; GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA " + backend_->schema() +
                            " TO " + writer.name() + "; GRANT USAGE ON ALL SEQUENCES IN SCHEMA " +
                            backend_->schema() + " TO " + writer.name() +
                            "; GRANT SELECT ON schema_version TO " + writer.name()),
            "");
  EXPECT_EQ(backend_->Query("UPDATE schema_version SET version = " +
                            std::to_string(kPostgresSchemaVersion)),
            "");
  auto blind = OpenCatalogForRun(writer.Spec(), unreachable);
  ASSERT_FALSE(blind.ok());
  EXPECT_EQ(blind.status().message().find("INSERT on"), std::string::npos) << blind.status().message();
  EXPECT_NE(blind.status().message().find("lacks SELECT on executions, SELECT on "
                                          "execution_parameters, SELECT on task_runs, SELECT on "
                                          "events"),
            std::string::npos)
      << blind.status().message();

  // Given what a run writes, the same role may record.
  EXPECT_EQ(backend_->Query("UPDATE schema_version SET version = " +
                            std::to_string(kPostgresSchemaVersion) +
                            "; GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA " +
                            backend_->schema() + " TO " + reader.name() +
                            "; GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + backend_->schema() +
                            " TO " + reader.name()),
            "");
  run = OpenCatalogForRun(reader.Spec(), unreachable);
  EXPECT_TRUE(run.ok()) << run.status().ToString();
}

// A reader creates nothing in a database without the catalog's tables (reports ran CREATE).
TEST_F(PostgresCatalogTest, AReaderCreatesNothing) {
  PostgresCatalog read(backend_->Spec(), /*existing_catalog_only=*/true);
  Status opened = read.Open();
  EXPECT_FALSE(opened.ok());
  EXPECT_TRUE(read.found_empty()) << opened.ToString();
  EXPECT_EQ(backend_->Query("SELECT to_regclass('schema_version') IS NULL"), "t");
}

// A role's own CONNECTION LIMIT is configuration, not the server's load: the run is refused
// (a full server, "too many clients already", is waited out like an outage instead).
TEST_F(PostgresCatalogTest, ARolesConnectionLimitIsNotAnOutage) {
  TestRole limited(*backend_, "limited", "CONNECTION LIMIT 0");
  std::string unreachable;
  auto run = OpenCatalogForRun(limited.Spec(), unreachable);
  ASSERT_FALSE(run.ok());
  EXPECT_TRUE(unreachable.empty()) << unreachable;
  EXPECT_NE(run.status().message().find("too many connections for role"), std::string::npos)
      << run.status().message();
}

}  // namespace
}  // namespace fanout::catalog

namespace fanout::catalog {
namespace {

TEST_P(CatalogConformanceTest, PruneRemovesOldExecutionsWithEverythingTheyOwn) {
  auto catalog = Open();
  CatalogBatch batch;
  for (auto [id, started] : {std::pair{"old", 1000}, std::pair{"new", 5000000}}) {
    ExecutionRow e = testing::SampleExecution(id, started);
    e.parameters["day"] = ParameterValue{"2026-11-26", false};
    batch.executions.push_back(e);
    batch.task_runs.push_back(testing::SampleTaskRun(id, "a", started));
    batch.task_runs.push_back(testing::SampleTaskRun(id, "b", started));
    batch.events.push_back(testing::SampleEvent(id, EventType::kOnInformation, "x"));
  }
  ASSERT_TRUE(catalog->Write(batch).ok());
  auto none_live = [](const ExecutionRow&) { return false; };
  // A dry run counts what would go and deletes nothing.
  auto would = catalog->Prune(testing::At(2000000), none_live, /*dry_run=*/true);
  ASSERT_TRUE(would.ok()) << would.status().ToString();
  EXPECT_EQ(would->executions, 1);
  EXPECT_EQ(would->task_runs, 2);
  EXPECT_EQ(would->events, 1);
  ASSERT_TRUE(catalog->GetExecution("old").ok());
  EXPECT_TRUE(catalog->GetExecution("old")->has_value()) << "the dry run deleted it";
  EXPECT_EQ(catalog->ListTaskRuns("old")->size(), 2u);
  auto counts = catalog->Prune(testing::At(2000000), none_live, /*dry_run=*/false);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->executions, 1);
  EXPECT_EQ(counts->task_runs, 2);
  EXPECT_EQ(counts->events, 1);
  auto old = catalog->GetExecution("old");
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->has_value());
  auto kept = catalog->GetExecution("new");
  ASSERT_TRUE(kept.ok());
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->parameters.size(), 1u);
  EXPECT_EQ(catalog->ListTaskRuns("old")->size(), 0u);
  EXPECT_EQ(catalog->ListTaskRuns("new")->size(), 2u);
  EventQuery q;
  q.execution_id = "old";
  EXPECT_EQ(catalog->ListEvents(q)->size(), 0u);
  auto again = catalog->Prune(testing::At(2000000), none_live, /*dry_run=*/false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->executions, 0);
  if (GetParam() == "sqlite") {  // its write-ahead log, which held the deleted pages, is emptied
    const std::string wal = backend_->Spec().substr(std::string("sqlite:").size()) + "-wal";
    EXPECT_EQ(std::filesystem::file_size(wal), 0u);
  }
}

// A prune goes by whole trees: an old parent's child that started after the cut-off goes with
// it (it had been left with a parent id that no longer existed), a tree with a live execution
// stays whole (a live run's record had been cut in two), and a child whose parent is already
// gone counts as a tree of its own.
TEST_P(CatalogConformanceTest, PruneTakesWholeTreesAndKeepsLiveOnes) {
  auto catalog = Open();
  CatalogBatch batch;
  auto add = [&](const std::string& id, const std::string& parent, int64_t started) {
    ExecutionRow e = testing::SampleExecution(id, started);
    e.parent_id = parent;
    e.status = "succeeded";
    batch.executions.push_back(e);
    batch.events.push_back(testing::SampleEvent(id, EventType::kOnInformation, "x"));
  };
  add("old-parent", "", 1000);
  add("late-child", "old-parent", 3000000);
  add("live-parent", "", 1000);
  add("live-child", "live-parent", 2000);
  add("orphan", "pruned-long-ago", 1000);
  add("new", "", 3000000);
  // Children whose parent's rows are not in the catalog: a parent that started (its UUIDv7 id
  // says) a day or more before the cut-off is done with; a later one may be running with its
  // rows in a spool, and its children stay (QA: they were pruned and lost).
  auto uuid_v7_at = [](std::chrono::microseconds before_base) {
    int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     (testing::At(0) - before_base).time_since_epoch())
                     .count();
    std::string hex = fmt::format("{:012x}", ms);
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-7000-8000-000000000000";
  };
  add("child-of-an-old-parent", uuid_v7_at(std::chrono::hours(48)), 1000);
  add("child-of-a-spooled-parent", uuid_v7_at(std::chrono::seconds(5)), 1000);
  ASSERT_TRUE(catalog->Write(batch).ok());
  auto counts = catalog->Prune(
      testing::At(2000000), [](const ExecutionRow& row) { return row.id == "live-child"; },
      /*dry_run=*/false);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->executions, 4);
  EXPECT_EQ(counts->events, 4);
  EXPECT_EQ(counts->kept_live, 1);
  for (const char* gone : {"old-parent", "late-child", "orphan", "child-of-an-old-parent"}) {
    EXPECT_FALSE(catalog->GetExecution(gone)->has_value()) << gone;
  }
  for (const char* kept : {"live-parent", "live-child", "new", "child-of-a-spooled-parent"}) {
    EXPECT_TRUE(catalog->GetExecution(kept)->has_value()) << kept;
  }
}

}  // namespace
}  // namespace fanout::catalog
