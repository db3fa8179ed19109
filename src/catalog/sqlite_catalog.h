// The SQLite catalog backend: the DESIGN §6 tables in one file that a parent execution and its
// out-of-process children write at the same time (WAL mode, writers wait for each other).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "fanout/catalog.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fanout::catalog {

// The schema version this build writes. Open() refuses a file with a newer one.
inline constexpr int kSqliteSchemaVersion = 3;

// How long Open() waits for another process's transaction at least: a catalog that cannot be
// opened stops a run before it starts, so opening is patient whatever busy_timeout_ms says.
inline constexpr int kOpenBusyTimeoutMs = 10000;

struct SqliteCatalogOptions {
  // How long a read or write, once open, waits for another process's transaction before failing
  // with Unavailable.
  int busy_timeout_ms = 10000;
  // For reading what runs recorded (reports, logs, prune): a file that is not already a catalog
  // (another application's database, an empty file) is refused with NotFound, untouched, rather
  // than made into one.
  bool existing_catalog_only = false;
  // What a reader (existing_catalog_only) run by a user other than the file's owner does while
  // no -wal and -shm exist: opening would create them as that user, and the owner's next run
  // could not write them (QA). kOpen opens all the same (a writer, such as prune, needs write
  // access anyway); kReadOnce reads the file alone, as immutable, creating nothing (a report);
  // kRefuse says so (a reader that stays, such as `logs --follow`, would not see later rows).
  enum class Guest { kOpen, kReadOnce, kRefuse };
  Guest guest = Guest::kOpen;
};

// A Catalog in one SQLite file. Empty parent_id, agent, job, run_id and child_execution_id are
// stored as NULL (and read back as ""), as are a missing ended_at and exit_code; timestamps are
// ISO 8601 UTC text, which sorts in time order. Like every Catalog, one object is used by one
// thread at a time; separate objects (connections), in this process or others, may write the
// same file concurrently.
class SqliteCatalog : public Catalog {
 public:
  explicit SqliteCatalog(std::string path, SqliteCatalogOptions options = {});
  ~SqliteCatalog() override;
  SqliteCatalog(const SqliteCatalog&) = delete;
  SqliteCatalog& operator=(const SqliteCatalog&) = delete;

  // Opens the file (creating it, but not its directory), switches to WAL and creates or upgrades
  // the schema when needed (a current one is only read, so that opening never waits for a
  // writer). Calling it again on an open catalog does nothing.
  Status Open() override;
  // Whether the open file was renamed or deleted since (or none is open): a connection kept
  // open a while (a warm process's) would write where nobody reads.
  bool FileMoved() const;
  // One transaction; executions and task runs upserted by key, events appended in order.
  Status Write(const CatalogBatch& batch) override;

  Result<std::optional<ExecutionRow>> GetExecution(const std::string& id) override;
  Result<bool> EndRunningExecution(const ExecutionRow& end) override;
  Result<std::vector<ExecutionRow>> ListExecutions(int limit) override;
  Result<std::vector<ExecutionRow>> ListChildExecutions(const std::string& parent_id) override;
  Result<std::map<std::string, int>> CountChildren(
      const std::vector<std::string>& parent_ids) override;
  Result<std::vector<TaskRunRow>> ListTaskRuns(const std::string& execution_id) override;
  Result<std::vector<ExecutionRow>> ListDescendantExecutions(const std::string& root_id) override;
  Result<std::vector<TaskRunRow>> ListTreeTaskRuns(const std::string& root_id) override;
  Result<std::vector<Event>> ListEvents(const EventQuery& query) override;
  Result<std::vector<ExecutionRow>> ListJobExecutions(const std::string& job, int limit) override;
  Result<PruneCounts> Prune(DateTime cutoff, const IsLive& is_live, bool dry_run) override;

  const std::string& path() const { return path_; }
  // After an Open() with existing_catalog_only refused the file: it holds no table at all (an
  // empty file, or one a run is making into a catalog at this moment), so there is no catalog
  // yet rather than something else's database.
  bool found_empty() const { return found_empty_; }

 private:
  static int OnBusy(void* self, int count);

  Status Error(int rc, const std::string& what) const;
  Status Exec(const char* sql, const char* what);
  Status Prepare(const char* sql, sqlite3_stmt** stmt);
  Status Step(sqlite3_stmt* stmt, const char* what);
  Status CannotOpen() const;
  // The version in schema_version; none when the table does not exist.
  // The first column of the first row of `sql`; `what` names the read in errors.
  Result<int> QueryInt(const char* sql, const char* what);
  Result<std::optional<int>> StoredSchemaVersion();
  // Whether the database holds no table at all.
  Result<bool> HasNoTables();
  Status CreateSchema();
  Status WriteRows(const CatalogBatch& batch);
  Status LoadParameters(ExecutionRow& row);
  Status LoadParameters(const std::string& cte, const std::string& condition,
                        const std::string& bound, std::map<std::string, ExecutionRow*>& by_id);
  Result<std::vector<ExecutionRow>> ExecutionsWithParameters(const std::string& cte,
                                                             const std::string& condition,
                                                             const std::string& order,
                                                             const std::string& bound,
                                                             const std::string& what);
  Result<std::vector<TaskRunRow>> TaskRuns(const std::string& cte, const std::string& condition,
                                           const std::string& bound);
  void Close();

  std::string path_;
  bool found_empty_ = false;
  SqliteCatalogOptions options_;
  sqlite3* db_ = nullptr;
  int64_t busy_since_ns_ = 0;  // steady-clock time of the first retry of the current wait
  int busy_limit_ms_ = 0;      // how long the current wait may last: OnBusy gives up after it

  // Prepared once in Open(): Write() is the hot path.
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* upsert_execution_ = nullptr;
  sqlite3_stmt* upsert_task_run_ = nullptr;
  sqlite3_stmt* insert_event_ = nullptr;
  sqlite3_stmt* upsert_parameter_ = nullptr;
};

}  // namespace fanout::catalog
