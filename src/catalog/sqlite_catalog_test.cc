// Tests of the SQLite catalog: round trips, upserts, event order and filters, schema versions,
// concurrent writers and OpenCatalog specs.
#include "catalog/sqlite_catalog.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "catalog/test_util.h"

namespace fanout::catalog {
namespace {

using testing::At;
using testing::SampleEvent;
using testing::SampleExecution;
using testing::SampleTaskRun;
using testing::TempDir;

std::unique_ptr<SqliteCatalog> OpenOrDie(const std::string& path) {
  auto catalog = std::make_unique<SqliteCatalog>(path);
  Status status = catalog->Open();
  EXPECT_TRUE(status.ok()) << status.ToString();
  return catalog;
}

// Runs one SQL statement on the file directly, as a user with the sqlite3 shell would.
std::string QueryOne(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* stmt = nullptr;
  std::string result = "<error>";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    result = text ? reinterpret_cast<const char*>(text) : "<null>";
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return result;
}

TEST(SqliteCatalogTest, RoundTripsEveryField) {
  TempDir dir;
  auto catalog = OpenOrDie(dir.File("c.db"));

  ExecutionRow execution = SampleExecution("exec-1");
  execution.parent_id = "exec-0";
  execution.agent = "agent-a";
  execution.job = "load-region";
  execution.run_id = "run-9";
  execution.status = "failed";
  execution.ended_at = At(2500000);
  execution.exit_code = 1;
  execution.message = "one task failed";
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
  ASSERT_TRUE(catalog->Write(batch).ok());

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

  auto runs = catalog->ListTaskRuns("exec-1");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  const TaskRunRow& r = (*runs)[0];
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
  ASSERT_TRUE(events.ok());
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

  EXPECT_FALSE(catalog->GetExecution("nope")->has_value());
}

TEST(SqliteCatalogTest, StoresAbsentValuesAsNullAndSortableTimes) {
  TempDir dir;
  std::string path = dir.File("c.db");
  auto catalog = OpenOrDie(path);
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("top"));
  ASSERT_TRUE(catalog->Write(batch).ok());
  EXPECT_EQ(QueryOne(path, "SELECT parent_id FROM executions"), "<null>");
  EXPECT_EQ(QueryOne(path, "SELECT ended_at FROM executions"), "<null>");
  EXPECT_EQ(QueryOne(path, "SELECT exit_code FROM executions"), "<null>");
  EXPECT_EQ(QueryOne(path, "SELECT started_at FROM executions"), "2026-11-26T03:04:05.000000Z");
  EXPECT_EQ(QueryOne(path, "SELECT version FROM schema_version"), "1");
  EXPECT_EQ(QueryOne(path, "PRAGMA journal_mode"), "wal");

  auto got = catalog->GetExecution("top");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->parent_id, "");
  EXPECT_FALSE((*got)->ended_at.has_value());
  EXPECT_FALSE((*got)->exit_code.has_value());
}

TEST(SqliteCatalogTest, UpsertsExecutionsAndTaskRunsByKey) {
  TempDir dir;
  auto catalog = OpenOrDie(dir.File("c.db"));
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
}

TEST(SqliteCatalogTest, ListsExecutionsNewestFirstAndChildren) {
  TempDir dir;
  auto catalog = OpenOrDie(dir.File("c.db"));
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("parent", 0));
  for (int i = 0; i < 3; ++i) {
    ExecutionRow child = SampleExecution("child-" + std::to_string(i), 100 + i);
    child.parent_id = "parent";
    batch.executions.push_back(child);
  }
  batch.executions.push_back(SampleExecution("later", 1000));
  ASSERT_TRUE(catalog->Write(batch).ok());

  auto newest = catalog->ListExecutions(2);
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].id, "later");
  EXPECT_EQ((*newest)[1].id, "child-2");
  EXPECT_EQ(catalog->ListExecutions(0)->size(), 5u);

  auto children = catalog->ListChildExecutions("parent");
  ASSERT_TRUE(children.ok());
  ASSERT_EQ(children->size(), 3u);
  EXPECT_EQ((*children)[0].id, "child-0");
  EXPECT_EQ((*children)[2].id, "child-2");
  EXPECT_TRUE(catalog->ListChildExecutions("child-0")->empty());
}

TEST(SqliteCatalogTest, KeepsEventOrderAcrossBatches) {
  TempDir dir;
  auto catalog = OpenOrDie(dir.File("c.db"));
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

TEST(SqliteCatalogTest, FiltersEvents) {
  TempDir dir;
  auto catalog = OpenOrDie(dir.File("c.db"));
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

  EventQuery paged;
  paged.limit = 2;
  auto first = catalog->ListEvents(paged);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  paged.after_id = first->back().id;
  EXPECT_EQ(messages(paged), "34");
}

TEST(SqliteCatalogTest, ReopensExistingFileAndRefusesNewerSchema) {
  TempDir dir;
  std::string path = dir.File("c.db");
  {
    auto catalog = OpenOrDie(path);
    CatalogBatch batch;
    batch.executions.push_back(SampleExecution("kept"));
    ASSERT_TRUE(catalog->Write(batch).ok());
  }
  {
    auto catalog = OpenOrDie(path);
    EXPECT_TRUE(catalog->GetExecution("kept")->has_value());
    EXPECT_TRUE(catalog->Open().ok());  // a second Open is harmless
  }
  EXPECT_EQ(QueryOne(path, "UPDATE schema_version SET version = 2 RETURNING version"), "2");
  SqliteCatalog newer(path);
  Status status = newer.Open();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_NE(status.message().find("schema version 2"), std::string::npos) << status.message();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("x"));
  EXPECT_FALSE(newer.Write(batch).ok());
}

TEST(SqliteCatalogTest, RejectsFilesThatAreNotDatabases) {
  TempDir dir;
  std::string path = dir.File("junk.db");
  {
    std::ofstream out(path);
    out << "this is not an SQLite database, just some text that is long enough to be a header\n";
  }
  SqliteCatalog catalog(path);
  Status status = catalog.Open();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
}

// Two connections, as a parent and a child process would have, write the same file at once;
// neither may fail with SQLITE_BUSY.
TEST(SqliteCatalogTest, TwoConnectionsWriteConcurrently) {
  TempDir dir;
  std::string path = dir.File("c.db");
  OpenOrDie(path);  // create the schema first, as the parent does before starting children
  constexpr int kBatches = 200;
  constexpr int kPerBatch = 50;
  auto writer = [&](const std::string& execution_id) {
    auto catalog = OpenOrDie(path);
    for (int b = 0; b < kBatches; ++b) {
      CatalogBatch batch;
      batch.executions.push_back(SampleExecution(execution_id, b));
      for (int i = 0; i < kPerBatch; ++i) {
        batch.events.push_back(
            SampleEvent(execution_id, EventType::kOnProgress, std::to_string(b * kPerBatch + i)));
      }
      Status status = catalog->Write(batch);
      ASSERT_TRUE(status.ok()) << status.ToString();
    }
  };
  std::thread a(writer, "a");
  std::thread b(writer, "b");
  a.join();
  b.join();
  auto catalog = OpenOrDie(path);
  for (const char* id : {"a", "b"}) {
    EventQuery query;
    query.execution_id = id;
    auto events = catalog->ListEvents(query);
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), static_cast<size_t>(kBatches * kPerBatch));
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      ASSERT_EQ((*events)[i].message, std::to_string(i));
    }
  }
}

// The same with a second process, which is how out-of-process children write.
TEST(SqliteCatalogTest, TwoProcessesWriteConcurrently) {
  TempDir dir;
  std::string path = dir.File("c.db");
  constexpr int kBatches = 100;
  constexpr int kPerBatch = 100;
  auto write_all = [&](const std::string& execution_id) -> bool {
    SqliteCatalog catalog(path);
    if (!catalog.Open().ok()) return false;
    for (int b = 0; b < kBatches; ++b) {
      CatalogBatch batch;
      for (int i = 0; i < kPerBatch; ++i) {
        batch.events.push_back(SampleEvent(execution_id, EventType::kOnProgress, "m"));
      }
      if (!catalog.Write(batch).ok()) return false;
    }
    return true;
  };
  // Both processes race to create the schema too.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(write_all("child") ? 0 : 1);
  bool parent_ok = write_all("parent");
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(parent_ok);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(QueryOne(path, "SELECT COUNT(*) FROM events"),
            std::to_string(2 * kBatches * kPerBatch));
  EXPECT_EQ(QueryOne(path, "SELECT COUNT(*) FROM schema_version"), "1");
}

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
  auto pg = OpenCatalog("postgresql://user@db/fanout");
  ASSERT_FALSE(pg.ok());
  EXPECT_EQ(pg.status().code(), Code::kInvalidArgument);
  EXPECT_NE(pg.status().message().find("PostgreSQL catalogs are not supported yet"),
            std::string::npos);
  for (const char* spec : {"mysql://x", "fanout.sqlite", "", "sqlite:"}) {
    auto other = OpenCatalog(spec);
    ASSERT_FALSE(other.ok()) << spec;
    EXPECT_EQ(other.status().code(), Code::kInvalidArgument);
    EXPECT_NE(other.status().message().find("sqlite:PATH"), std::string::npos);
  }
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

}  // namespace
}  // namespace fanout::catalog
