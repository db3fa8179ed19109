// The PostgreSQL catalog backend: the DESIGN §6 tables in a PostgreSQL database shared by every
// machine of a scaled-out setup (DESIGN §8), with the same results as the SQLite backend.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fanout/catalog.h"

struct pg_conn;

namespace fanout::catalog {

namespace postgres_internal {
class Params;
}

// The schema version this build writes. Open() migrates an older database up to it and refuses
// a newer one.
inline constexpr int kPostgresSchemaVersion = 3;

// A Catalog in a PostgreSQL database, reached with a libpq connection string or URI
// ("postgresql://user@host:5432/db?sslmode=require"); the tables live in the first schema of the
// connection's search_path. Columns and their meaning match SqliteCatalog: empty ids and a
// missing ended_at / exit_code are NULL, timestamps are ISO 8601 UTC text (COLLATE "C", so they
// and every other text column sort byte-wise, as in SQLite). data_bytes is BYTEA; other text
// must be UTF-8 without NUL bytes, so invalid bytes are stored as U+FFFD rather than failing the
// batch (the Recorder would retry a refused batch for ever).
//
// Event ids are assigned in commit order: writers serialize their event inserts on an advisory
// lock, so a reader paging with EventQuery::after_id never skips a late-committed event. Writes
// use a session's temporary table, so a pooler in front of the server must pool sessions, not
// transactions.
//
// Like every Catalog, one object is used by one thread at a time; separate objects, in this
// process or on other machines, may write the same database concurrently.
class PostgresCatalog : public Catalog {
 public:
  // `existing_catalog_only`: for readers (reports, logs, prune), whose role may only read. Open()
  // then creates nothing in a database without the catalog's tables (found_empty() says so),
  // and says plainly when an older schema needs an upgrade this role may not make.
  explicit PostgresCatalog(std::string conninfo, bool existing_catalog_only = false);
  ~PostgresCatalog() override;
  PostgresCatalog(const PostgresCatalog&) = delete;
  PostgresCatalog& operator=(const PostgresCatalog&) = delete;

  // Connects and creates or migrates the schema, under an advisory lock so that processes
  // opening a fresh database at once do not race. Calling it again on an open catalog does
  // nothing. An unreachable server is Unavailable; a newer schema FailedPrecondition.
  Status Open() override;
  // Write() on a catalog not open yet then opens it first, rather than refusing: for a run that
  // began while the server could not be reached (OpenCatalogForRun).
  void OpenOnFirstWrite() { open_on_write_ = true; }
  // For a run, whose writes come from the thread that also feeds its console and log files: a
  // server that takes the connection but stops answering (frozen, or its packets dropped)
  // would hold a Write() for ever. With this set, a Write() (or Open()'s schema work) during
  // which the connection moves no byte for `timeout` drops it and fails as Unavailable (the
  // rows are spooled and retried); connections Write() makes again wait at most `timeout` (at
  // least 2 s) unless the spec sets connect_timeout; and each of the run's connections asks
  // the server to give up a lock wait after `timeout` and to notice a client that is gone.
  void SetWriteTimeout(std::chrono::milliseconds timeout) { write_timeout_ = timeout; }
  // PermissionDenied, naming each right missing, when the role may not write what a run
  // records. On an open catalog.
  Status CheckWriteRights();
  // Whether `open_failure` (Open's) is an outage to wait out, spooling: no server answers (or
  // not in time), or it takes no connection for now (starting up, shutting down, full); not one
  // that refuses this connection (a wrong password, no such database) or a bad spec.
  bool IsOutage(const Status& open_failure);
  // After a failed Open(): whether the server answered and refused (not IsOutage). A refusal
  // is confirmed by a second Open(), whose result replaces `opened`: a server back up between
  // the failed connect and IsOutage's ping would otherwise pass for one that refuses.
  bool Refuses(Status& opened);
  // One transaction; executions and task runs upserted by key (the last row of a key in the
  // batch wins), events appended in order (via COPY) except those whose uid is already stored.
  // Reconnects when the connection was lost; retries at once a transaction that lost a
  // deadlock, or its connection before COMMIT.
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

  // The connection string with any password replaced by "***", for messages.
  const std::string& display_name() const { return display_name_; }
  // After an Open() with existing_catalog_only refused the database: it has no catalog tables.
  bool found_empty() const { return found_empty_; }

 private:
  class Query;
  class Watchdog;
  using Params = postgres_internal::Params;

  // `timeout_seconds`: libpq's connect_timeout.
  Status Connect(int timeout_seconds = kConnectTimeoutSeconds);
  // Open()'s work, connecting within `timeout_seconds`.
  Status OpenWithin(int timeout_seconds);
  // The connect_timeout of connections Write() makes: shorter with a write timeout.
  int WriteConnectTimeoutSeconds() const;
  // Runs `statements` on the connection under the watchdog when there is a write timeout. A
  // connection it cut is closed (conn_ null after), and the result is Unavailable unless
  // `statements` had succeeded already.
  Status Watched(const std::function<Status()>& statements);
  Status EnsureConnected();
  // For reads: NotOpen before the first Open(); else connected, again if it was dropped.
  Status EnsureOpen();
  Result<int> SchemaVersion();
  Status Migrate();
  Status OpenExistingSchema();
  void Rollback();
  Status WriteOnce(const CatalogBatch& batch);
  Status CopyEvents(const std::vector<Event>& events);
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
  Result<std::vector<ExecutionRow>> QueryExecutions(const std::string& sql, const Params& params,
                                                    const std::string& what);
  Status NotOpen() const;
  Status ConnectionError(const std::string& what) const;
  void Close();

  std::string conninfo_;
  std::vector<std::string> secrets_;  // passwords in conninfo_, scrubbed from messages
  std::string display_name_;
  const bool existing_catalog_only_;
  bool found_empty_ = false;
  static constexpr int kConnectTimeoutSeconds = 10;
  pg_conn* conn_ = nullptr;
  bool open_on_write_ = false;
  bool opened_ = false;  // Open() succeeded once: a dropped connection is made again
  std::chrono::milliseconds write_timeout_{0};  // 0: none
  std::unique_ptr<Watchdog> watchdog_;           // made at the first Write() with a timeout
  bool limits_pending_ = false;  // a new connection, whose session limits Watched() sets first
  std::string last_sqlstate_;  // of the last failed statement, to retry deadlocks
  bool commit_sent_ = false;   // whether the current Write got as far as COMMIT
};

// Replaces the password in a libpq connection URI (user:PASSWORD@host, ?password=...) or
// keyword/value string (password=...) with "***". Everything else is kept.
std::string RedactConnectionString(std::string_view conninfo);
// The same connection string with no password at all: for a process that must log in with
// credentials of its own (~/.pgpass, PGPASSWORD), such as an agent's step run as another user.
std::string WithoutPassword(std::string_view conninfo);

// The database a connection string names, without its password, in one spelling: keyword=value
// of what libpq reads from it (host, port, dbname, user, options, ...), sorted. Two specs that
// differ only in the password or in form (URI or keywords) give the same text; "" when libpq
// cannot parse it.
std::string ConnectionIdentity(std::string_view conninfo);

// InvalidArgument, never showing the password, for a connection string that cannot be meant: one
// libpq cannot parse, a port that is not a number, or a URI whose user name or password holds
// '@', '/', '?' or '#' unencoded (libpq would misread it and show parts of it in messages).
Status CheckConnectionString(std::string_view conninfo);

}  // namespace fanout::catalog
