// Tests of what only the SQLite catalog does (WAL mode, files that are not databases); what every
// backend does is in catalog_conformance_test.cc.
#include "catalog/sqlite_catalog.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "catalog/test_util.h"

namespace fanout::catalog {
namespace {

using testing::SampleExecution;
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

// A catalog at `path` that holds one execution.
std::unique_ptr<SqliteCatalog> OpenWithAnExecution(const std::string& path) {
  auto catalog = OpenOrDie(path);
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("top"));
  EXPECT_TRUE(catalog->Write(batch).ok());
  return catalog;
}

// Another connection to `path` holding the write lock (BEGIN IMMEDIATE) until Release() or the
// end of the scope, as a `catalog prune` or a sqlite3 shell in a transaction would.
class WriteLock {
 public:
  explicit WriteLock(const std::string& path) {
    sqlite3_open(path.c_str(), &db_);
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  }
  ~WriteLock() { Release(); }
  void Release() {
    if (db_ == nullptr) return;
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  sqlite3* db_ = nullptr;
};

// A run's writes come from the thread that also feeds the console and the log files: against a
// file another process holds locked, they give up after half a second (and the rows go to the
// spool) rather than the 10 s that stalled the console that long. Opening still waits 10 s.
TEST(SqliteCatalogTest, ARunsWriteGivesUpSoonOnALockedFileButItsOpeningWaits) {
  using Clock = std::chrono::steady_clock;
  TempDir dir;
  std::string path = dir.File("c.db");
  OpenWithAnExecution(path);
  std::string unreachable;
  auto run = OpenCatalogForRun("sqlite:" + path, unreachable);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  {
    WriteLock lock(path);
    CatalogBatch batch;
    batch.executions.push_back(SampleExecution("during the lock"));
    auto start = Clock::now();
    Status written = (*run)->Write(batch);
    auto waited = Clock::now() - start;
    EXPECT_EQ(written.code(), Code::kUnavailable) << written.ToString();
    EXPECT_GE(waited, std::chrono::milliseconds(400));
    EXPECT_LT(waited, std::chrono::seconds(3));
  }
  // A run that makes the catalog (or upgrades its schema) needs the lock itself; held for
  // longer than a write waits, it still does not stop the run.
  std::string fresh = dir.File("fresh.db");
  WriteLock lock(fresh);
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    lock.Release();
  });
  auto opened = OpenCatalogForRun("sqlite:" + fresh, unreachable);
  release.join();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("after the lock"));
  EXPECT_TRUE((*opened)->Write(batch).ok());
}

// A warm process's catalog, opened while it waits, is the one its run writes to; a file replaced
// meanwhile (a catalog moved aside) is opened anew rather than written where nobody reads, and
// a file that is no catalog yet is left alone.
TEST(SqliteCatalogTest, APreopenedCatalogServesTheRunOfItsSpecOnly) {
  TempDir dir;
  const std::string path = dir.File("c.db");
  OpenWithAnExecution(path);
  std::string unreachable;
  PreopenCatalogForRun("sqlite:" + path);
  std::filesystem::rename(path, dir.File("old.db"));
  OpenWithAnExecution(path);
  auto run = OpenCatalogForRun("sqlite:" + path, unreachable);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  CatalogBatch batch;
  batch.executions.push_back(SampleExecution("written"));
  ASSERT_TRUE((*run)->Write(batch).ok());
  EXPECT_EQ(QueryOne(path, "SELECT COUNT(*) FROM executions"), "2");
  EXPECT_EQ(QueryOne(dir.File("old.db"), "SELECT COUNT(*) FROM executions"), "1");

  const std::string none = dir.File("none.db");
  PreopenCatalogForRun("sqlite:" + none);
  EXPECT_FALSE(std::filesystem::exists(none)) << "a warm process made a catalog";
}

TEST(SqliteCatalogTest, UsesWriteAheadLogging) {
  TempDir dir;
  std::string path = dir.File("c.db");
  auto catalog = OpenWithAnExecution(path);
  EXPECT_EQ(QueryOne(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryOne(path, "SELECT version FROM schema_version"),
            std::to_string(kSqliteSchemaVersion));
}

// A catalog holds run parameters and task output: a new one, and its WAL, are its creator's
// alone (0644 had let every local user read an agent's DATA_DIR/catalog.db). An existing file
// keeps the mode it was given.
TEST(SqliteCatalogTest, ANewCatalogIsReadableByItsOwnerOnly) {
  namespace fs = std::filesystem;
  TempDir dir;
  std::string path = dir.File("c.db");
  auto catalog = OpenWithAnExecution(path);
  const fs::perms owner = fs::perms::owner_read | fs::perms::owner_write;
  EXPECT_EQ(fs::status(path).permissions(), owner);
  ASSERT_TRUE(fs::exists(path + "-wal"));
  EXPECT_EQ(fs::status(path + "-wal").permissions(), owner);
  catalog.reset();

  fs::permissions(path, owner | fs::perms::group_read);
  OpenOrDie(path);
  EXPECT_EQ(fs::status(path).permissions(), owner | fs::perms::group_read);
}

// A report run by another user (the catalog made readable to it) had created the catalog's -wal
// and -shm files as that user, and the owner's runs could then not write the catalog (QA). It
// now reads the file alone, creating nothing, also in a folder it may write.
TEST(SqliteCatalogTest, AReaderOfAnotherUserLeavesNoFilesBehind) {
  namespace fs = std::filesystem;
  if (geteuid() != 0) GTEST_SKIP() << "reading as another user needs root";
  TempDir dir;
  const std::string path = dir.File("c.db");
  OpenWithAnExecution(path).reset();  // closed: its WAL checkpointed, -wal and -shm removed
  ASSERT_FALSE(fs::exists(path + "-wal"));
  fs::permissions(dir.path(), fs::perms::all | fs::perms::sticky_bit);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // as nobody: no gtest assertions here, only the exit code
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    // A reader that stays (`logs --follow`) would not see later rows: refused.
    SqliteCatalog follower(path, {.existing_catalog_only = true,
                                  .guest = SqliteCatalogOptions::Guest::kRefuse});
    if (follower.Open().code() != Code::kFailedPrecondition) _exit(5);
    // "//tmp/..." as a URI had named a host "tmp".
    SqliteCatalog reader("/" + path, {.existing_catalog_only = true,
                                      .guest = SqliteCatalogOptions::Guest::kReadOnce});
    if (!reader.Open().ok()) _exit(3);
    auto executions = reader.ListExecutions(10);
    _exit(executions.ok() && executions->size() == 1 ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_FALSE(fs::exists(path + "-wal"));
  EXPECT_FALSE(fs::exists(path + "-shm"));
}

// A --catalog naming a file that is no SQLite database at all (a package, say) is said to be
// no catalog, to a reader and to a run, as a foreign database is; it was "reading the schema
// version: file is not a database", exit 1 (QA).
TEST(SqliteCatalogTest, AFileThatIsNoDatabaseIsSaidToBeNoCatalog) {
  TempDir dir;
  const std::string path = dir.File("child.yaml");
  {
    std::ofstream out(path);
    out << "package: child\ntasks:\n  a: {type: process, run: [/bin/true]}\n";
  }
  SqliteCatalogOptions reading;
  reading.existing_catalog_only = true;
  for (bool reader : {true, false}) {
    SqliteCatalog catalog(path, reader ? reading : SqliteCatalogOptions{});
    Status refused = catalog.Open();
    EXPECT_EQ(refused.code(), Code::kNotFound) << reader << ": " << refused.ToString();
    EXPECT_NE(refused.message().find("is not a SQLite database, so not a Fanout catalog"),
              std::string::npos)
        << refused.message();
  }
}

// A run creating a catalog leaves, for a moment, a database with no table: a reader told it
// "is not a Fanout catalog" (`logs --follow` started with the run then ended). It is no
// catalog yet; another application's database stays refused.
TEST(SqliteCatalogTest, AReaderTellsADatabaseBeingCreatedFromAnotherApplications) {
  TempDir dir;
  const std::string path = dir.File("new.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr), SQLITE_OK);
  SqliteCatalogOptions reading;
  reading.existing_catalog_only = true;
  SqliteCatalog early(path, reading);
  EXPECT_EQ(early.Open().code(), Code::kNotFound);
  EXPECT_TRUE(early.found_empty());
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE customers(id INTEGER)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  SqliteCatalog other(path, reading);
  Status refused = other.Open();
  EXPECT_EQ(refused.code(), Code::kNotFound);
  EXPECT_FALSE(other.found_empty());
  EXPECT_NE(refused.message().find("is not a Fanout catalog"), std::string::npos);
  // A run does not make it one either (QA: five tables were added to it without a word); an
  // empty file it does.
  SqliteCatalog writer(path);
  refused = writer.Open();
  EXPECT_EQ(refused.code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.message().find("holds another application's tables"), std::string::npos)
      << refused.message();
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* count = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &count, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(count), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(count, 0), 1) << "only customers";
  sqlite3_finalize(count);
  sqlite3_close(db);
  SqliteCatalog fresh(dir.File("empty.db"));
  std::ofstream(dir.File("empty.db")).flush();  // an empty file is an empty database
  EXPECT_TRUE(fresh.Open().ok());
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

// SQLite says only "unable to open database file"; the message says why and what to do.
TEST(SqliteCatalogTest, AFileThatCannotBeOpenedSaysWhy) {
  TempDir dir;
  std::string path = dir.File("folder.db");
  std::filesystem::create_directory(path);
  SqliteCatalog catalog(path);
  Status status = catalog.Open();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("'" + path + "': it is a directory; set another " +
                                  "(sqlite:PATH) in --catalog"),
            std::string::npos)
      << status.message();
  // A wrong spec, which commands answer with their usage exit code, not an outage to wait out.
  EXPECT_EQ(status.code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace fanout::catalog
