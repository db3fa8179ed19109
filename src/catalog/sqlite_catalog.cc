// SqliteCatalog: schema creation and version check, batched upserts in one transaction, and the
// queries behind reports and `fanout logs`.
#include "catalog/sqlite_catalog.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "catalog/shared_sql.h"

namespace fanout::catalog {

namespace {

// Whether opening `path` would lock its owner out: SQLite would create the missing -wal and
// -shm files as this user, with the catalog's mode, and the owner's next run could then not
// write them (QA). Not for root, whose new files SQLite gives to the database's owner. With
// neither file there, the last connection checkpointed the WAL: the file alone holds every row.
bool ReadsAsGuest(const std::string& path) {
  struct stat st {};
  if (geteuid() == 0 || stat(path.c_str(), &st) != 0 || st.st_uid == geteuid()) return false;
  std::error_code ec;
  return !std::filesystem::exists(path + "-wal", ec) && !std::filesystem::exists(path + "-shm", ec);
}

// `path` as a read-only, immutable SQLite URI (file:PATH?immutable=1). An absolute path gets
// an empty authority: "file://tmp/x.db" would name a host "tmp".
std::string ImmutableUri(const std::string& path) {
  std::string uri = path.starts_with('/') ? "file://" : "file:";
  for (char c : path) {
    if (c == '%' || c == '?' || c == '#') {
      uri += fmt::format("%{:02x}", static_cast<unsigned char>(c));
    } else {
      uri += c;
    }
  }
  return uri + "?immutable=1";
}

constexpr const char* kSchema[] = {
    R"(CREATE TABLE IF NOT EXISTS executions(
         id TEXT PRIMARY KEY,
         parent_id TEXT,
         package TEXT NOT NULL,
         package_sha256 TEXT NOT NULL,
         host TEXT NOT NULL,
         agent TEXT,
         job TEXT,
         run_id TEXT,
         status TEXT NOT NULL,
         started_at TEXT NOT NULL,
         ended_at TEXT,
         exit_code INTEGER,
         message TEXT NOT NULL,
         operator TEXT NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS task_runs(
         execution_id TEXT NOT NULL,
         task_path TEXT NOT NULL,
         task_type TEXT NOT NULL,
         attempt INTEGER NOT NULL,
         status TEXT NOT NULL,
         started_at TEXT NOT NULL,
         ended_at TEXT,
         agent TEXT,
         child_execution_id TEXT,
         message TEXT NOT NULL,
         PRIMARY KEY(execution_id, task_path, attempt)))",
    R"(CREATE TABLE IF NOT EXISTS events(
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         execution_id TEXT NOT NULL,
         event TEXT NOT NULL,
         computer TEXT NOT NULL,
         operator TEXT NOT NULL,
         source TEXT NOT NULL,
         source_id TEXT NOT NULL,
         started_at TEXT NOT NULL,
         ended_at TEXT NOT NULL,
         data_code INTEGER NOT NULL,
         data_bytes TEXT NOT NULL,
         message TEXT NOT NULL))",
    "CREATE INDEX IF NOT EXISTS events_by_execution ON events(execution_id, id)",
    "CREATE INDEX IF NOT EXISTS executions_by_parent ON executions(parent_id)",
    "CREATE INDEX IF NOT EXISTS executions_by_start ON executions(started_at)",
    // Added within schema version 1: CREATE IF NOT EXISTS brings older files up to date.
    R"(CREATE TABLE IF NOT EXISTS execution_parameters(
         execution_id TEXT NOT NULL,
         name TEXT NOT NULL,
         value TEXT,
         sensitive INTEGER NOT NULL,
         PRIMARY KEY(execution_id, name)))",
    "CREATE INDEX IF NOT EXISTS executions_by_job ON executions(job, started_at)",
};

constexpr const char* kExecutionColumns =
    "id, parent_id, package, package_sha256, host, agent, job, run_id, status, started_at, "
    "ended_at, exit_code, message, operator, pid, process";

constexpr const char* kUpsertExecution =
    "INSERT INTO executions(id, parent_id, package, package_sha256, host, agent, job, run_id, "
    "status, started_at, ended_at, exit_code, message, operator, pid, process) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) "
    "ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, package = excluded.package, "
    "package_sha256 = excluded.package_sha256, host = excluded.host, agent = excluded.agent, "
    "job = excluded.job, run_id = excluded.run_id, status = excluded.status, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "exit_code = excluded.exit_code, message = excluded.message, operator = excluded.operator, "
    "pid = excluded.pid, process = excluded.process "
    // An ended execution is not made running again by a late copy of its start (a spool
    // replayed after an agent ended a killed step's execution).
    "WHERE executions.ended_at IS NULL OR excluded.ended_at IS NOT NULL";

constexpr const char* kUpsertParameter =
    "INSERT INTO execution_parameters(execution_id, name, value, sensitive) "
    "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(execution_id, name) DO UPDATE SET "
    "value = excluded.value, sensitive = excluded.sensitive";

constexpr const char* kTaskRunColumns =
    "execution_id, task_path, task_type, attempt, status, started_at, ended_at, agent, "
    "child_execution_id, message";

constexpr const char* kUpsertTaskRun =
    "INSERT INTO task_runs(execution_id, task_path, task_type, attempt, status, started_at, "
    "ended_at, agent, child_execution_id, message) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
    "ON CONFLICT(execution_id, task_path, attempt) DO UPDATE SET "
    "task_type = excluded.task_type, status = excluded.status, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, agent = excluded.agent, "
    "child_execution_id = excluded.child_execution_id, message = excluded.message";

constexpr const char* kEventColumns =
    "id, execution_id, event, computer, operator, source, source_id, started_at, ended_at, "
    "data_code, data_bytes, message";

// A replayed event (uid seen before) is skipped, so a retry never duplicates one.
constexpr const char* kInsertEvent =
    "INSERT INTO events(execution_id, event, computer, operator, source, source_id, started_at, "
    "ended_at, data_code, data_bytes, message, uid) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT(uid) DO NOTHING";

// `tree`: the id bound to ?N and the ids of every execution below it (UNION, not UNION ALL: a
// cycle of parent ids ends).
std::string TreeOf(int param) {
  return "WITH RECURSIVE tree(id) AS (SELECT ?" + std::to_string(param) +
         " UNION SELECT e.id FROM executions e JOIN tree ON e.parent_id = tree.id) ";
}

// Schema changes after version 1, applied in order; entry i upgrades version i+1 to i+2.
constexpr const char* kMigrations[] = {
    // 2: events carry the Recorder's uid so that replays of a spooled batch are idempotent.
    "ALTER TABLE events ADD COLUMN uid TEXT; "
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_uid ON events(uid);",
    // 3: executions name the process recording them, so a killed one can be told from a live one.
    "ALTER TABLE executions ADD COLUMN pid INTEGER; "
    "ALTER TABLE executions ADD COLUMN process TEXT;",
};

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Formats timestamps exactly as FormatDateTime does, but calls it once per distinct second: the
// rows of a batch share a few seconds, and the calendar conversion is most of the cost.
class TimestampFormatter {
 public:
  void Format(DateTime t, std::string& out) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    if (prefix_.empty() || secs != secs_) {
      std::string full = FormatDateTime(secs);  // "....:05.000000Z"
      prefix_ = full.substr(0, full.size() - 7);
      secs_ = secs;
    }
    int64_t micros = (t - secs).count();
    char digits[7];
    for (int i = 5; i >= 0; --i) {
      digits[i] = static_cast<char>('0' + micros % 10);
      micros /= 10;
    }
    digits[6] = 'Z';
    out.assign(prefix_);
    out.append(digits, sizeof digits);
  }

 private:
  std::chrono::sys_seconds secs_{};
  std::string prefix_;
};

// Binds without copying: the caller keeps `text` alive until the statement has been stepped.
void BindText(sqlite3_stmt* stmt, int index, std::string_view text) {
  sqlite3_bind_text64(stmt, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8);
}

void BindTextOrNull(sqlite3_stmt* stmt, int index, const std::string& text) {
  if (text.empty()) {
    sqlite3_bind_null(stmt, index);
  } else {
    BindText(stmt, index, text);
  }
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt, column)));
}

Result<DateTime> ColumnTime(sqlite3_stmt* stmt, int column) {
  std::string text = ColumnText(stmt, column);
  auto parsed = ParseDateTime(text);
  if (!parsed.ok()) {
    return Internal(std::string("catalog column '") + sqlite3_column_name(stmt, column) +
                    "' holds a bad timestamp: " + parsed.status().message());
  }
  return *parsed;
}

Result<std::optional<DateTime>> ColumnOptionalTime(sqlite3_stmt* stmt, int column) {
  if (sqlite3_column_type(stmt, column) == SQLITE_NULL) return std::optional<DateTime>();
  ASSIGN_OR_RETURN(DateTime t, ColumnTime(stmt, column));
  return std::optional<DateTime>(t);
}

// Owns a statement prepared for one query.
class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

Result<ExecutionRow> ReadExecution(sqlite3_stmt* stmt) {
  ExecutionRow row;
  row.id = ColumnText(stmt, 0);
  row.parent_id = ColumnText(stmt, 1);
  row.package = ColumnText(stmt, 2);
  row.package_sha256 = ColumnText(stmt, 3);
  row.host = ColumnText(stmt, 4);
  row.agent = ColumnText(stmt, 5);
  row.job = ColumnText(stmt, 6);
  row.run_id = ColumnText(stmt, 7);
  row.status = ColumnText(stmt, 8);
  ASSIGN_OR_RETURN(row.started_at, ColumnTime(stmt, 9));
  ASSIGN_OR_RETURN(row.ended_at, ColumnOptionalTime(stmt, 10));
  if (sqlite3_column_type(stmt, 11) != SQLITE_NULL) row.exit_code = sqlite3_column_int(stmt, 11);
  row.message = ColumnText(stmt, 12);
  row.operator_name = ColumnText(stmt, 13);
  row.pid = sqlite3_column_int64(stmt, 14);
  row.process = ColumnText(stmt, 15);
  return row;
}

Result<TaskRunRow> ReadTaskRun(sqlite3_stmt* stmt) {
  TaskRunRow row;
  row.execution_id = ColumnText(stmt, 0);
  row.task_path = ColumnText(stmt, 1);
  row.task_type = ColumnText(stmt, 2);
  row.attempt = sqlite3_column_int(stmt, 3);
  row.status = ColumnText(stmt, 4);
  ASSIGN_OR_RETURN(row.started_at, ColumnTime(stmt, 5));
  ASSIGN_OR_RETURN(row.ended_at, ColumnOptionalTime(stmt, 6));
  row.agent = ColumnText(stmt, 7);
  row.child_execution_id = ColumnText(stmt, 8);
  row.message = ColumnText(stmt, 9);
  return row;
}

Result<Event> ReadEvent(sqlite3_stmt* stmt) {
  Event event;
  event.id = sqlite3_column_int64(stmt, 0);
  event.execution_id = ColumnText(stmt, 1);
  auto type = ParseEventName(ColumnText(stmt, 2));
  if (!type.ok()) {
    return Internal("catalog event " + std::to_string(event.id) + ": " + type.status().message());
  }
  event.type = *type;
  event.computer = ColumnText(stmt, 3);
  event.operator_name = ColumnText(stmt, 4);
  event.source = ColumnText(stmt, 5);
  event.source_id = ColumnText(stmt, 6);
  ASSIGN_OR_RETURN(event.started_at, ColumnTime(stmt, 7));
  ASSIGN_OR_RETURN(event.ended_at, ColumnTime(stmt, 8));
  event.data_code = sqlite3_column_int64(stmt, 9);
  event.data_bytes = ColumnText(stmt, 10);
  event.message = ColumnText(stmt, 11);
  return event;
}

}  // namespace

SqliteCatalog::SqliteCatalog(std::string path, SqliteCatalogOptions options)
    : path_(std::move(path)), options_(options) {}

SqliteCatalog::~SqliteCatalog() { Close(); }

void SqliteCatalog::Close() {
  for (sqlite3_stmt** stmt :
       {&begin_, &commit_, &rollback_, &upsert_execution_, &upsert_task_run_, &insert_event_,
        &upsert_parameter_}) {
    sqlite3_finalize(*stmt);
    *stmt = nullptr;
  }
  if (db_ != nullptr) sqlite3_close(db_);
  db_ = nullptr;
}

bool SqliteCatalog::FileMoved() const {
  int moved = 0;
  return db_ == nullptr ||
         sqlite3_file_control(db_, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK ||
         moved != 0;
}

// SQLite's own busy handler sleeps in steps of up to 100 ms, far longer than the other writer's
// transaction usually takes; short sleeps keep two processes writing at full speed.
int SqliteCatalog::OnBusy(void* arg, int count) {
  auto* self = static_cast<SqliteCatalog*>(arg);
  int64_t now = SteadyNowNs();
  if (count == 0) self->busy_since_ns_ = now;
  if (now - self->busy_since_ns_ >= int64_t{self->busy_limit_ms_} * 1000000) return 0;
  int sleep_us = 50 << std::min(count, 8);  // 50 us doubling, at most 10 ms
  usleep(static_cast<useconds_t>(std::min(sleep_us, 10000)));
  return 1;
}

Status SqliteCatalog::Error(int rc, const std::string& what) const {
  Code code = Code::kInternal;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
      code = Code::kUnavailable;
      break;
    case SQLITE_FULL:
      code = Code::kResourceExhausted;
      break;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      code = Code::kPermissionDenied;
      break;
    case SQLITE_CORRUPT:
      code = Code::kFailedPrecondition;
      break;
    default:
      break;
  }
  const char* detail = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  if ((rc & 0xff) == SQLITE_NOTADB) {
    // A mistyped --catalog naming some other file: said as a foreign SQLite file is.
    return NotFound("catalog '" + path_ + "' is not a SQLite database, so not a Fanout catalog (" +
                    what + ": " + detail + "): check " + CatalogSpecSource());
  }
  return Status(code, "catalog '" + path_ + "': " + what + ": " + detail);
}

Status SqliteCatalog::Exec(const char* sql, const char* what) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  return rc == SQLITE_OK ? Status::Ok() : Error(rc, what);
}

Status SqliteCatalog::Prepare(const char* sql, sqlite3_stmt** stmt) {
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : Error(rc, "preparing a statement");
}

// Steps a statement that returns no rows, and resets it so that it releases its locks.
Status SqliteCatalog::Step(sqlite3_stmt* stmt, const char* what) {
  int rc = sqlite3_step(stmt);
  Status status = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? Status::Ok() : Error(rc, what);
  sqlite3_reset(stmt);
  return status;
}

Status SqliteCatalog::Open() {
  if (db_ != nullptr) return Status::Ok();
  // SQLite's own message for a missing directory is "unable to open database file", which does
  // not say what is missing.
  std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  std::error_code ec;
  if (!dir.empty() && path_ != ":memory:" && !std::filesystem::is_directory(dir, ec)) {
    return NotFound("catalog directory '" + dir.string() + "' does not exist (catalog '" + path_ +
                    "')");
  }
  const int create = options_.existing_catalog_only ? 0 : SQLITE_OPEN_CREATE;
  const bool is_new = create != 0 && path_ != ":memory:" && !std::filesystem::exists(path_, ec);
  using Guest = SqliteCatalogOptions::Guest;
  const bool guest = options_.existing_catalog_only && options_.guest != Guest::kOpen &&
                     ReadsAsGuest(path_);
  if (guest && options_.guest == Guest::kRefuse) {
    return FailedPrecondition(
        "catalog '" + path_ + "' belongs to another user and no run has it open: reading on "
        "as this user would create its -wal and -shm files as this user, and its owner's runs "
        "could not write them; follow it as its owner, or once a run is going");
  }
  // A writer checkpointing meanwhile could change pages this connection reads (immutable: it
  // takes no lock); for one short read, a risk taken rather than lock the owner out.
  int rc = guest ? sqlite3_open_v2(ImmutableUri(path_).c_str(), &db_,
                                   SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                                   nullptr)
                 : sqlite3_open_v2(path_.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | create | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status status = (rc & 0xff) == SQLITE_CANTOPEN ? CannotOpen() : Error(rc, "opening");
    Close();
    return status;
  }
  // Its parameters and task output are the runner's business: a new catalog is its creator's
  // alone (SQLite gives its -wal and -shm files the same mode). Sharing it is a chmod away.
  if (is_new) std::filesystem::permissions(path_, std::filesystem::perms::owner_read |
                                                      std::filesystem::perms::owner_write, ec);
  sqlite3_extended_result_codes(db_, 1);
  busy_limit_ms_ = std::max(options_.busy_timeout_ms, kOpenBusyTimeoutMs);
  sqlite3_busy_handler(db_, &SqliteCatalog::OnBusy, this);
  if (options_.existing_catalog_only) {
    auto version = StoredSchemaVersion();
    Status status = version.status();
    if (status.ok() && !version->has_value()) {
      auto empty = HasNoTables();
      found_empty_ = empty.ok() && *empty;
      status = found_empty_ ? NotFound("'" + path_ + "' holds no catalog yet")
                            : NotFound("'" + path_ + "' is not a Fanout catalog (it has no "
                                       "schema_version table): check " + CatalogSpecSource());
    }
    if (!status.ok()) {
      Close();
      return status;
    }
  } else if (!is_new) {
    // Another application's database (a mistyped --catalog) is not made a catalog: the run had
    // added five tables to it without a word (QA).
    // One statement, so one snapshot: asked in two, a concurrent opener's new schema could
    // appear between them and look like someone else's tables.
    auto foreign = QueryInt(
        "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name IN ('executions', "
        "'schema_version')) AND EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
        "name NOT LIKE 'sqlite_%')",
        "reading the schema");
    if (foreign.ok() && *foreign != 0) {
      Close();
      return FailedPrecondition("'" + path_ + "' holds another application's tables and no Fanout "
                                "catalog; give " + CatalogSpecSource() + " a file of its own "
                                "(a new one is created)");
    }
  }

  // Switching to WAL needs a brief exclusive lock that a concurrent opener may hold; retry it
  // like any other busy wait rather than fail the run. A guest only reads.
  Status status;
  int64_t deadline = SteadyNowNs() + int64_t{busy_limit_ms_} * 1000000;
  for (int attempt = 0; !guest; ++attempt) {
    status = Exec("PRAGMA journal_mode=WAL", "switching to WAL mode");
    if (status.ok() || status.code() != Code::kUnavailable || SteadyNowNs() > deadline) break;
    usleep(static_cast<useconds_t>(std::min(100 << std::min(attempt, 7), 10000)));
  }
  // NORMAL in WAL mode loses at most the last transactions on power loss, never consistency;
  // FULL would add an fsync to every batch.
  if (status.ok() && !guest) status = Exec("PRAGMA synchronous=NORMAL", "setting synchronous mode");
  if (status.ok()) status = CreateSchema();
  if (status.ok()) status = Prepare("BEGIN IMMEDIATE", &begin_);
  if (status.ok()) status = Prepare("COMMIT", &commit_);
  if (status.ok()) status = Prepare("ROLLBACK", &rollback_);
  if (status.ok()) status = Prepare(kUpsertExecution, &upsert_execution_);
  if (status.ok()) status = Prepare(kUpsertTaskRun, &upsert_task_run_);
  if (status.ok()) status = Prepare(kInsertEvent, &insert_event_);
  if (status.ok()) status = Prepare(kUpsertParameter, &upsert_parameter_);
  if (!status.ok()) Close();
  busy_limit_ms_ = options_.busy_timeout_ms;
  return status;
}

// Runs in one IMMEDIATE transaction so that two processes opening a new file at once do not both
// create the schema.
// SQLite says only "unable to open database file": find out why, for a message that says what
// to change.
Status SqliteCatalog::CannotOpen() const {
  std::error_code ec;
  std::string why;
  if (std::filesystem::is_directory(path_, ec)) {
    why = "it is a directory";
  } else if (std::filesystem::exists(path_, ec)) {
    if (access(path_.c_str(), R_OK | W_OK) != 0) why = std::string("it cannot be read and written: ") + std::strerror(errno);
  } else {
    std::filesystem::path dir = std::filesystem::absolute(path_, ec).parent_path();
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
      why = "it cannot be created in " + dir.string() + ": " + std::strerror(errno);
    }
  }
  if (why.empty()) why = "SQLite cannot open it";
  std::string message = "catalog '" + path_ + "': " + why +
                        "; set another (sqlite:PATH) in " + CatalogSpecSource();
  // A folder is a wrong spec, not an outage: no command should wait for it to answer.
  if (std::filesystem::is_directory(path_, ec)) return InvalidArgument(std::move(message));
  return Unavailable(std::move(message));
}

Result<int> SqliteCatalog::QueryInt(const char* sql, const char* what) {
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql, -1, query.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(query.get());
  if (rc != SQLITE_ROW) return Error(rc, what);
  return sqlite3_column_int(query.get(), 0);
}

Result<std::optional<int>> SqliteCatalog::StoredSchemaVersion() {
  ASSIGN_OR_RETURN(int tables, QueryInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                        "AND name = 'schema_version'",
                                        "reading the schema version"));
  if (tables == 0) return std::optional<int>();
  ASSIGN_OR_RETURN(int version, QueryInt("SELECT MAX(version) FROM schema_version",
                                         "reading the schema version"));
  return std::optional<int>(version);
}

Result<bool> SqliteCatalog::HasNoTables() {
  ASSIGN_OR_RETURN(int entries, QueryInt("SELECT count(*) FROM sqlite_master", "reading the schema"));
  return entries == 0;
}

Status SqliteCatalog::CreateSchema() {
  // A current schema is only read: a writer holding the lock must not hold up a report.
  auto stored = StoredSchemaVersion();
  if (stored.ok() && *stored == kSqliteSchemaVersion) return Status::Ok();
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "starting the schema transaction"));
  auto body = [&]() -> Status {
    RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)",
                         "creating schema_version"));
    Statement query;
    int rc = sqlite3_prepare_v2(db_, "SELECT MAX(version) FROM schema_version", -1, query.out(),
                                nullptr);
    if (rc != SQLITE_OK) return Error(rc, "reading the schema version");
    rc = sqlite3_step(query.get());
    if (rc != SQLITE_ROW) return Error(rc, "reading the schema version");
    bool fresh = sqlite3_column_type(query.get(), 0) == SQLITE_NULL;
    int version = sqlite3_column_int(query.get(), 0);
    if (!fresh && version > kSqliteSchemaVersion) {
      return FailedPrecondition("catalog '" + path_ + "' has schema version " +
                                std::to_string(version) + ", newer than the version " +
                                std::to_string(kSqliteSchemaVersion) +
                                " this fanout understands; use a newer fanout to read it");
    }
    for (const char* sql : kSchema) RETURN_IF_ERROR(Exec(sql, "creating the schema"));
    int have = fresh ? 1 : version;
    for (int v = have; v < kSqliteSchemaVersion; ++v) {
      RETURN_IF_ERROR(Exec(kMigrations[v - 1], "upgrading the catalog schema"));
    }
    if (fresh || have < kSqliteSchemaVersion) {
      RETURN_IF_ERROR(Exec(("DELETE FROM schema_version; INSERT INTO schema_version(version) VALUES (" +
                            std::to_string(kSqliteSchemaVersion) + ")").c_str(),
                           "recording the schema version"));
    }
    return Status::Ok();
  };
  Status status = body();
  if (!status.ok()) {
    static_cast<void>(Exec("ROLLBACK", "rolling back"));  // the first error is the one to report
    return status;
  }
  return Exec("COMMIT", "committing the schema");
}

Status SqliteCatalog::Write(const CatalogBatch& batch) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  if (batch.empty()) return Status::Ok();
  RETURN_IF_ERROR(Step(begin_, "starting a write transaction"));
  Status status = WriteRows(batch);
  if (status.ok()) status = Step(commit_, "committing");
  if (!status.ok() && !sqlite3_get_autocommit(db_)) {
    static_cast<void>(Step(rollback_, "rolling back"));  // the first error is the one to report
  }
  return status;
}

Status SqliteCatalog::WriteRows(const CatalogBatch& batch) {
  TimestampFormatter formatter;
  // Reused for every row: bound without copying, they must live until the row is stepped.
  std::string started;
  std::string ended;
  for (const ExecutionRow& row : batch.executions) {
    sqlite3_stmt* s = upsert_execution_;
    formatter.Format(row.started_at, started);
    ended.clear();
    if (row.ended_at) formatter.Format(*row.ended_at, ended);
    BindText(s, 1, row.id);
    BindTextOrNull(s, 2, row.parent_id);
    BindText(s, 3, row.package);
    BindText(s, 4, row.package_sha256);
    BindText(s, 5, row.host);
    BindTextOrNull(s, 6, row.agent);
    BindTextOrNull(s, 7, row.job);
    BindTextOrNull(s, 8, row.run_id);
    BindText(s, 9, row.status);
    BindText(s, 10, started);
    BindTextOrNull(s, 11, ended);
    if (row.exit_code) {
      sqlite3_bind_int(s, 12, *row.exit_code);
    } else {
      sqlite3_bind_null(s, 12);
    }
    BindText(s, 13, row.message);
    BindText(s, 14, row.operator_name);
    if (row.pid > 0) {
      sqlite3_bind_int64(s, 15, row.pid);
    } else {
      sqlite3_bind_null(s, 15);
    }
    BindTextOrNull(s, 16, row.process);
    RETURN_IF_ERROR(Step(s, "writing an execution"));
    for (const auto& [name, param] : row.parameters) {
      sqlite3_stmt* p = upsert_parameter_;
      BindText(p, 1, row.id);
      BindText(p, 2, name);
      if (param.sensitive) {
        sqlite3_bind_null(p, 3);
      } else {
        BindText(p, 3, param.value);
      }
      sqlite3_bind_int(p, 4, param.sensitive ? 1 : 0);
      RETURN_IF_ERROR(Step(p, "writing an execution parameter"));
    }
  }
  for (const TaskRunRow& row : batch.task_runs) {
    sqlite3_stmt* s = upsert_task_run_;
    formatter.Format(row.started_at, started);
    ended.clear();
    if (row.ended_at) formatter.Format(*row.ended_at, ended);
    BindText(s, 1, row.execution_id);
    BindText(s, 2, row.task_path);
    BindText(s, 3, row.task_type);
    sqlite3_bind_int(s, 4, row.attempt);
    BindText(s, 5, row.status);
    BindText(s, 6, started);
    BindTextOrNull(s, 7, ended);
    BindTextOrNull(s, 8, row.agent);
    BindTextOrNull(s, 9, row.child_execution_id);
    BindText(s, 10, row.message);
    RETURN_IF_ERROR(Step(s, "writing a task run"));
  }
  for (const Event& event : batch.events) {
    sqlite3_stmt* s = insert_event_;
    formatter.Format(event.started_at, started);
    formatter.Format(event.ended_at, ended);
    BindText(s, 1, event.execution_id);
    BindText(s, 2, EventName(event.type));
    BindText(s, 3, event.computer);
    BindText(s, 4, event.operator_name);
    BindText(s, 5, event.source);
    BindText(s, 6, event.source_id);
    BindText(s, 7, started);
    BindText(s, 8, ended);
    sqlite3_bind_int64(s, 9, event.data_code);
    BindText(s, 10, event.data_bytes);
    BindText(s, 11, event.message);
    BindTextOrNull(s, 12, event.uid);
    RETURN_IF_ERROR(Step(s, "writing an event"));
  }
  return Status::Ok();
}

Result<std::optional<ExecutionRow>> SqliteCatalog::GetExecution(const std::string& id) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = std::string("SELECT ") + kExecutionColumns + " FROM executions WHERE id = ?1";
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  BindText(query.get(), 1, id);
  rc = sqlite3_step(query.get());
  if (rc == SQLITE_DONE) return std::optional<ExecutionRow>();
  if (rc != SQLITE_ROW) return Error(rc, "reading an execution");
  ASSIGN_OR_RETURN(ExecutionRow row, ReadExecution(query.get()));
  RETURN_IF_ERROR(LoadParameters(row));
  return std::optional<ExecutionRow>(std::move(row));
}

Result<bool> SqliteCatalog::EndRunningExecution(const ExecutionRow& end) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  if (!end.ended_at) return InvalidArgument("ending execution " + end.id + " needs its end time");
  Statement update;
  int rc = sqlite3_prepare_v2(db_,
                              "UPDATE executions SET status = ?2, ended_at = ?3, exit_code = ?4, "
                              "message = ?5 WHERE id = ?1 AND ended_at IS NULL",
                              -1, update.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing an execution's end");
  std::string ended;
  TimestampFormatter().Format(*end.ended_at, ended);
  BindText(update.get(), 1, end.id);
  BindText(update.get(), 2, end.status);
  BindText(update.get(), 3, ended);
  if (end.exit_code) sqlite3_bind_int(update.get(), 4, *end.exit_code);
  BindText(update.get(), 5, end.message);
  rc = sqlite3_step(update.get());
  if (rc != SQLITE_DONE) return Error(rc, "ending an execution");
  return sqlite3_changes(db_) > 0;
}

Status SqliteCatalog::LoadParameters(ExecutionRow& row) {
  std::map<std::string, ExecutionRow*> by_id = {{row.id, &row}};
  return LoadParameters("", "= ?1", row.id, by_id);
}

// The parameters of the executions `execution_id <condition>` selects (with ?1 bound to
// `bound`, after the `cte` prefix), into their rows in `by_id`.
Status SqliteCatalog::LoadParameters(const std::string& cte, const std::string& condition,
                                     const std::string& bound,
                                     std::map<std::string, ExecutionRow*>& by_id) {
  std::string sql = cte +
                    "SELECT execution_id, name, value, sensitive FROM execution_parameters "
                    "WHERE execution_id " +
                    condition + " ORDER BY execution_id, name";
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  BindText(query.get(), 1, bound);
  while ((rc = sqlite3_step(query.get())) == SQLITE_ROW) {
    auto it = by_id.find(ColumnText(query.get(), 0));
    if (it == by_id.end()) continue;
    it->second->parameters[ColumnText(query.get(), 1)] =
        ParameterValue{ColumnText(query.get(), 2), sqlite3_column_int(query.get(), 3) != 0};
  }
  if (rc != SQLITE_DONE) return Error(rc, "reading execution parameters");
  return Status::Ok();
}

namespace {

// Runs a prepared query and reads every row with `read`.
template <typename Row, typename ReadFn, typename ErrorFn>
Result<std::vector<Row>> ReadAll(sqlite3_stmt* stmt, ReadFn read, ErrorFn error) {
  std::vector<Row> rows;
  for (;;) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc);
    ASSIGN_OR_RETURN(Row row, read(stmt));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

Result<std::vector<ExecutionRow>> SqliteCatalog::ListExecutions(int limit) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = std::string("SELECT ") + kExecutionColumns +
                    " FROM executions ORDER BY started_at DESC, id DESC LIMIT ?1";
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  sqlite3_bind_int(query.get(), 1, limit > 0 ? limit : -1);
  return ReadAll<ExecutionRow>(query.get(), ReadExecution,
                               [this](int code) { return Error(code, "listing executions"); });
}

Result<std::vector<ExecutionRow>> SqliteCatalog::ListChildExecutions(const std::string& parent_id) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = std::string("SELECT ") + kExecutionColumns +
                    " FROM executions WHERE parent_id = ?1 ORDER BY started_at, id";
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  BindText(query.get(), 1, parent_id);
  return ReadAll<ExecutionRow>(query.get(), ReadExecution, [this](int code) {
    return Error(code, "listing child executions");
  });
}

Result<std::map<std::string, int>> SqliteCatalog::CountChildren(
    const std::vector<std::string>& parent_ids) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::map<std::string, int> counts;
  for (size_t first = 0; first < parent_ids.size(); first += kIdsPerStatement) {
    size_t n = std::min(kIdsPerStatement, parent_ids.size() - first);
    Statement query;
    int rc = sqlite3_prepare_v2(db_, CountChildrenSql(n).c_str(), -1, query.out(), nullptr);
    if (rc != SQLITE_OK) return Error(rc, "preparing a query");
    for (size_t i = 0; i < n; ++i) {
      BindText(query.get(), static_cast<int>(i + 1), parent_ids[first + i]);
    }
    while ((rc = sqlite3_step(query.get())) == SQLITE_ROW) {
      counts[ColumnText(query.get(), 0)] = sqlite3_column_int(query.get(), 1);
    }
    if (rc != SQLITE_DONE) return Error(rc, "counting child executions");
  }
  return counts;
}

// The executions `id <condition>` selects (?1 bound to `bound`, after the `cte` prefix) in
// `order`, with their parameters: two queries however many there are.
Result<std::vector<ExecutionRow>> SqliteCatalog::ExecutionsWithParameters(
    const std::string& cte, const std::string& condition, const std::string& order,
    const std::string& bound, const std::string& what) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = cte + "SELECT " + kExecutionColumns + " FROM executions WHERE id " +
                    condition + " ORDER BY " + order;
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  BindText(query.get(), 1, bound);
  ASSIGN_OR_RETURN(std::vector<ExecutionRow> rows,
                   ReadAll<ExecutionRow>(query.get(), ReadExecution,
                                         [&](int code) { return Error(code, what); }));
  std::map<std::string, ExecutionRow*> by_id;
  for (ExecutionRow& row : rows) by_id[row.id] = &row;
  RETURN_IF_ERROR(LoadParameters(cte, condition, bound, by_id));
  return rows;
}

Result<std::vector<ExecutionRow>> SqliteCatalog::ListDescendantExecutions(
    const std::string& root_id) {
  return ExecutionsWithParameters(TreeOf(1), "IN (SELECT id FROM tree WHERE id <> ?1)",
                                  "started_at, id", root_id, "listing an execution's tree");
}

Result<std::vector<TaskRunRow>> SqliteCatalog::ListTreeTaskRuns(const std::string& root_id) {
  return TaskRuns(TreeOf(1), "IN (SELECT id FROM tree)", root_id);
}

Result<std::vector<TaskRunRow>> SqliteCatalog::ListTaskRuns(const std::string& execution_id) {
  return TaskRuns("", "= ?1", execution_id);
}

// The task runs of the executions `execution_id <condition>` selects (?1 bound to `bound`).
Result<std::vector<TaskRunRow>> SqliteCatalog::TaskRuns(const std::string& cte,
                                                        const std::string& condition,
                                                        const std::string& bound) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = cte + "SELECT " + kTaskRunColumns + " FROM task_runs WHERE execution_id " +
                    condition + " ORDER BY started_at, task_path, attempt";
  Statement query;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, query.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  BindText(query.get(), 1, bound);
  return ReadAll<TaskRunRow>(query.get(), ReadTaskRun,
                             [this](int code) { return Error(code, "listing task runs"); });
}

Result<std::vector<Event>> SqliteCatalog::ListEvents(const EventQuery& query) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  std::string sql = std::string("SELECT ") + kEventColumns + " FROM events WHERE id > ?1";
  int next = 2;
  if (!query.execution_id.empty() && query.with_descendants) {
    sql = TreeOf(2) + sql + " AND execution_id IN (SELECT id FROM tree)";
    ++next;
  } else if (!query.execution_id.empty()) {
    sql += " AND execution_id = ?" + std::to_string(next++);
  }
  if (!query.source.empty()) sql += " AND source = ?" + std::to_string(next++);
  if (query.since) sql += " AND ended_at >= ?" + std::to_string(next++);
  if (!query.types.empty()) {
    sql += " AND event IN (";
    for (size_t i = 0; i < query.types.size(); ++i) {
      sql += (i == 0 ? "?" : ", ?") + std::to_string(next++);
    }
    sql += ")";
  }
  sql += std::string(query.newest_first ? " ORDER BY id DESC" : " ORDER BY id") + " LIMIT ?" +
         std::to_string(next);

  Statement stmt;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, stmt.out(), nullptr);
  if (rc != SQLITE_OK) return Error(rc, "preparing a query");
  int index = 1;
  sqlite3_bind_int64(stmt.get(), index++, query.after_id);
  if (!query.execution_id.empty()) BindText(stmt.get(), index++, query.execution_id);
  if (!query.source.empty()) BindText(stmt.get(), index++, query.source);
  std::string since = query.since ? FormatDateTime(*query.since) : "";
  if (query.since) BindText(stmt.get(), index++, since);
  for (EventType type : query.types) BindText(stmt.get(), index++, EventName(type));
  sqlite3_bind_int(stmt.get(), index, query.limit > 0 ? query.limit : -1);
  return ReadAll<Event>(stmt.get(), ReadEvent,
                        [this](int code) { return Error(code, "listing events"); });
}

Result<std::vector<ExecutionRow>> SqliteCatalog::ListJobExecutions(const std::string& job,
                                                                   int limit) {
  return ExecutionsWithParameters(
      "",
      fmt::format("IN (SELECT id FROM executions WHERE job = ?1 AND status = 'succeeded' "
                  "ORDER BY started_at DESC, id DESC LIMIT {})",
                  limit > 0 ? limit : -1),
      "started_at DESC, id DESC", job, "listing a job's executions");
}

Result<Catalog::PruneCounts> SqliteCatalog::Prune(DateTime cutoff, const IsLive& is_live,
                                                  bool dry_run) {
  if (db_ == nullptr) return FailedPrecondition("catalog '" + path_ + "' is not open");
  RETURN_IF_ERROR(Step(begin_, "starting the prune transaction"));
  PruneCounts counts;
  auto body = [&]() -> Status {
    ASSIGN_OR_RETURN(std::vector<ExecutionRow> all, ListExecutions(0));
    PrunePlan plan = PlanPrune(all, cutoff, is_live);
    counts.kept_live = plan.kept_live;
    return DeletePlanned(plan, [&](const std::string& sql, const std::vector<std::string>& ids)
                                    -> Result<int64_t> {
      Statement stmt;
      int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, stmt.out(), nullptr);
      if (rc != SQLITE_OK) return Error(rc, "preparing the prune");
      for (size_t i = 0; i < ids.size(); ++i) BindText(stmt.get(), static_cast<int>(i + 1), ids[i]);
      rc = sqlite3_step(stmt.get());
      if (rc != SQLITE_DONE) return Error(rc, "pruning");
      return sqlite3_changes(db_);
    }, counts);
  };
  Status status = body();
  if (status.ok() && dry_run) {
    RETURN_IF_ERROR(Step(rollback_, "rolling back the dry run"));
    return counts;
  }
  if (status.ok()) status = Step(commit_, "committing the prune");
  if (!status.ok() && !sqlite3_get_autocommit(db_)) static_cast<void>(Step(rollback_, "rolling back"));
  if (!status.ok()) return status;
  // The WAL held every deleted page: emptied now, or it stayed as large as what was pruned (QA).
  // Best effort: a reader holding an older snapshot keeps it until its next checkpoint.
  sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  return counts;
}

}  // namespace fanout::catalog
