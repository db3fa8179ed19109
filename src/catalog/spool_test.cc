// Tests of the catalog spool: rows written while the catalog is down reach it once it is back,
// in order and exactly once, including rows a dead process left behind.
#include "catalog/spool.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "catalog/sqlite_catalog.h"
#include "catalog/test_util.h"

namespace fanout::catalog {
namespace {

using testing::SampleExecution;

namespace fs = std::filesystem;

// A SQLite catalog that can be switched off, as a database server going down would be.
class FlakyCatalog : public Catalog {
 public:
  FlakyCatalog(std::string path, std::shared_ptr<std::atomic<bool>> down)
      : inner_(std::move(path)), down_(std::move(down)) {}
  Status Open() override { return inner_.Open(); }
  Status Write(const CatalogBatch& batch) override {
    if (*down_) return Unavailable("the catalog is down (test)");
    return inner_.Write(batch);
  }
  Result<std::optional<ExecutionRow>> GetExecution(const std::string& id) override {
    return inner_.GetExecution(id);
  }
  Result<std::vector<ExecutionRow>> ListExecutions(int limit) override {
    return inner_.ListExecutions(limit);
  }
  Result<std::vector<ExecutionRow>> ListChildExecutions(const std::string& id) override {
    return inner_.ListChildExecutions(id);
  }
  Result<std::map<std::string, int>> CountChildren(const std::vector<std::string>& ids) override {
    return inner_.CountChildren(ids);
  }
  Result<std::vector<TaskRunRow>> ListTaskRuns(const std::string& id) override {
    return inner_.ListTaskRuns(id);
  }
  Result<std::vector<ExecutionRow>> ListDescendantExecutions(const std::string& id) override {
    return inner_.ListDescendantExecutions(id);
  }
  Result<std::vector<TaskRunRow>> ListTreeTaskRuns(const std::string& id) override {
    return inner_.ListTreeTaskRuns(id);
  }
  Result<std::vector<Event>> ListEvents(const EventQuery& q) override { return inner_.ListEvents(q); }
  Result<std::vector<ExecutionRow>> ListJobExecutions(const std::string& job, int limit) override {
    return inner_.ListJobExecutions(job, limit);
  }
  Result<PruneCounts> Prune(DateTime cutoff, const IsLive& is_live, bool dry_run) override {
    return inner_.Prune(cutoff, is_live, dry_run);
  }
  Result<bool> EndRunningExecution(const ExecutionRow& end) override {
    return inner_.EndRunningExecution(end);
  }

 private:
  SqliteCatalog inner_;
  std::shared_ptr<std::atomic<bool>> down_;
};

class SpoolTest : public ::testing::Test {
 protected:
  std::string db() const { return dir_.File("catalog.db"); }
  std::string spool_dir() const { return dir_.File("spool"); }
  std::unique_ptr<SqliteCatalog> Reader() {
    auto c = std::make_unique<SqliteCatalog>(db());
    EXPECT_TRUE(c->Open().ok());
    return c;
  }
  Event MakeEvent(int i) {
    Event e;
    e.execution_id = "exec";
    e.type = EventType::kOnInformation;
    e.source = "task";
    e.message = "event " + std::to_string(i);
    e.uid = "test:" + std::to_string(i);
    return e;
  }
  size_t SpoolFiles() const {
    if (!fs::exists(spool_dir())) return 0;
    size_t n = 0;
    for (const auto& entry : fs::directory_iterator(spool_dir())) n += entry.file_size() > 0;
    return n;
  }

  testing::TempDir dir_;
};

TEST_F(SpoolTest, LinesRoundTrip) {
  ExecutionRow r = SampleExecution("exec");
  r.parameters["region"] = ParameterValue{"eu", false};
  r.parameters["password"] = ParameterValue{"", true};
  r.pid = 4242;
  r.process = "boot:99";
  CatalogBatch batch;
  ASSERT_TRUE(ParseSpoolLine(SpoolLine(r), batch).ok());
  ASSERT_TRUE(ParseSpoolLine(SpoolLine(MakeEvent(7)), batch).ok());
  ASSERT_EQ(batch.executions.size(), 1u);
  EXPECT_EQ(batch.executions[0].id, r.id);
  EXPECT_EQ(batch.executions[0].parameters, r.parameters);
  EXPECT_EQ(batch.executions[0].started_at, r.started_at);
  EXPECT_EQ(batch.executions[0].pid, 4242);
  EXPECT_EQ(batch.executions[0].process, "boot:99");
  ASSERT_EQ(batch.events.size(), 1u);
  EXPECT_EQ(batch.events[0].uid, "test:7");
  EXPECT_EQ(batch.events[0].message, "event 7");
  EXPECT_FALSE(ParseSpoolLine("{\"kind\": \"nonsense\"}", batch).ok());
  EXPECT_FALSE(ParseSpoolLine("not json", batch).ok());
}

// A child's spool file names its parent as parent_id: the parent's own file is the one that
// holds the parent's rows (QA: a report named the child's).
TEST_F(SpoolTest, TheFileHoldingAnExecutionsRowsIsItsOwnNotItsChilds) {
  fs::create_directories(spool_dir());
  ExecutionRow child = SampleExecution("child");
  child.parent_id = "parent";
  Event child_event = MakeEvent(1);
  child_event.execution_id = "child";
  std::ofstream(spool_dir() + "/k.1.a.spool") << SpoolLine(child) << "\n"
                                              << SpoolLine(child_event) << "\n";
  EXPECT_EQ(SpoolFileHolding(spool_dir(), "parent"), "");
  Event parent_event = MakeEvent(2);
  parent_event.execution_id = "parent";
  std::ofstream(spool_dir() + "/k.2.b.spool") << SpoolLine(parent_event) << "\n";
  EXPECT_EQ(SpoolFileHolding(spool_dir(), "parent"), spool_dir() + "/k.2.b.spool");
  EXPECT_EQ(SpoolFileHolding(spool_dir(), "child"), spool_dir() + "/k.1.a.spool");
}

TEST_F(SpoolTest, ReplayingTwiceNeverDuplicatesEvents) {
  SqliteCatalog catalog(db());
  ASSERT_TRUE(catalog.Open().ok());
  Spool spool(spool_dir(), "sqlite:" + db());
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("exec"));
  for (int i = 0; i < 5; ++i) batch.events.push_back(MakeEvent(i));
  ASSERT_TRUE(spool.Append(batch).ok());
  EXPECT_TRUE(spool.holding());
  ASSERT_TRUE(catalog.Write(batch).ok());  // as if a first replay committed but was not told
  ASSERT_TRUE(spool.Replay(catalog, 2).ok());
  EXPECT_FALSE(spool.holding());
  auto events = catalog.ListEvents(EventQuery{});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*events)[static_cast<size_t>(i)].message, "event " + std::to_string(i));
}

TEST_F(SpoolTest, RecorderDeliversEverythingAfterAnOutage) {
  auto down = std::make_shared<std::atomic<bool>>(false);
  {
    auto catalog = std::make_unique<FlakyCatalog>(db(), down);
    ASSERT_TRUE(catalog->Open().ok());
    Recorder recorder(std::move(catalog), {}, nullptr,
                      RecorderOptions{spool_dir(), "sqlite:" + db()});
    recorder.RecordExecution(SampleExecution("exec"));
    for (int i = 0; i < 100; ++i) recorder.Emit(MakeEvent(i));
    recorder.Flush();
    *down = true;
    for (int i = 100; i < 300; ++i) recorder.Emit(MakeEvent(i));
    recorder.Flush();  // fails, so the rows go to the spool
    EXPECT_EQ(SpoolFiles(), 1u);
    *down = false;
    for (int i = 300; i < 400; ++i) recorder.Emit(MakeEvent(i));
  }  // the destructor keeps retrying until the catalog takes everything
  EXPECT_EQ(SpoolFiles(), 0u);
  auto events = Reader()->ListEvents(EventQuery{});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 400u);
  for (int i = 0; i < 400; ++i) {
    ASSERT_EQ((*events)[static_cast<size_t>(i)].message, "event " + std::to_string(i)) << "in order";
  }
}

TEST_F(SpoolTest, NextProcessDeliversWhatADeadOneLeft) {
  // A spool file whose owner is gone: written and closed without being replayed.
  {
    Spool spool(spool_dir(), "sqlite:" + db());
    CatalogBatch batch;
    batch.executions.push_back(SampleExecution("left-behind"));
    for (int i = 0; i < 3; ++i) batch.events.push_back(MakeEvent(i));
    ASSERT_TRUE(spool.Append(batch).ok());
  }
  EXPECT_EQ(SpoolFiles(), 1u);
  // A file for another catalog is left alone.
  {
    Spool other(spool_dir(), "sqlite:/elsewhere.db");
    CatalogBatch batch;
    batch.events.push_back(MakeEvent(99));
    ASSERT_TRUE(other.Append(batch).ok());
  }
  {
    auto catalog = std::make_unique<SqliteCatalog>(db());
    ASSERT_TRUE(catalog->Open().ok());
    Recorder recorder(std::move(catalog), {}, nullptr,
                      RecorderOptions{spool_dir(), "sqlite:" + db()});
    recorder.Flush();
  }
  auto reader = Reader();
  auto exec = reader->GetExecution("left-behind");
  ASSERT_TRUE(exec.ok());
  EXPECT_TRUE(exec->has_value());
  auto events = reader->ListEvents(EventQuery{});
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 3u);
  EXPECT_EQ(SpoolFiles(), 1u) << "only the other catalog's file is left";
}

// One PostgreSQL database reached by different spellings (a password in the URI for one agent,
// PGPASSWORD for the others; postgres:// or postgresql://) is one spool key: QA saw an agent's
// leftovers never delivered by the parent, and its succeeded children shown abandoned.
TEST_F(SpoolTest, SpellingsOfOneDatabaseShareTheirLeftovers) {
  {
    Spool spool(spool_dir(), "postgresql://etl:s3cret@127.0.0.1:5432/night");
    CatalogBatch batch;
    batch.executions.push_back(SampleExecution("from-srv1"));
    ASSERT_TRUE(spool.Append(batch).ok());
  }
  SqliteCatalog catalog(db());
  ASSERT_TRUE(catalog.Open().ok());
  Spool other_database(spool_dir(), "postgresql://etl@127.0.0.1:5432/day");
  auto none = other_database.ReplayLeftovers(catalog, 100);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  Spool same(spool_dir(), "postgres://etl@127.0.0.1:5432/night");
  auto delivered = same.ReplayLeftovers(catalog, 100);
  ASSERT_TRUE(delivered.ok()) << delivered.status().ToString();
  EXPECT_EQ(*delivered, 1u);
  auto exec = catalog.GetExecution("from-srv1");
  ASSERT_TRUE(exec.ok());
  EXPECT_TRUE(exec->has_value());
}

}  // namespace
}  // namespace fanout::catalog
