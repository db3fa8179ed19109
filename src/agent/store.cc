// AgentStore on SQLite (see store.h). Every statement is prepared once per connection and kept
// (reset after each use): at a thousand runs a second, parsing the SQL anew on each call was the
// largest single cost of the agent's database work.
#include "agent/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "common/util.h"

namespace fanout::agent {
namespace {

// An update that ends the run (its status final): written only after its attempts' ends.
bool EndsTheRun(const RunRecord& run) { return run.ended_at.has_value(); }

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS packages(
  name TEXT PRIMARY KEY, version INTEGER NOT NULL, sha256 TEXT NOT NULL, content TEXT NOT NULL,
  deployed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(
  name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL, params TEXT NOT NULL,
  parent_execution_id TEXT NOT NULL, start_step TEXT NOT NULL,
  idempotency_key TEXT UNIQUE, message TEXT NOT NULL, queued_at TEXT NOT NULL,
  started_at TEXT, ended_at TEXT, current_step INTEGER NOT NULL, pid INTEGER NOT NULL,
  pid_start INTEGER NOT NULL, execution_id TEXT NOT NULL, sensitive TEXT NOT NULL DEFAULT '[]',
  definition TEXT NOT NULL DEFAULT '', stop_reason TEXT NOT NULL DEFAULT '',
  orphan_timeout_ms INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs(job, queued_at);
CREATE TABLE IF NOT EXISTS step_attempts(
  run_id TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL,
  status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, exit_code INTEGER,
  execution_id TEXT NOT NULL, message TEXT NOT NULL, stdout TEXT NOT NULL, stderr TEXT NOT NULL,
  PRIMARY KEY(run_id, step, attempt));
CREATE TABLE IF NOT EXISTS unended_executions(
  id TEXT PRIMARY KEY, status TEXT NOT NULL, message TEXT NOT NULL, exit_code INTEGER,
  seen_at TEXT NOT NULL);
)";

// 2: runs.sensitive, the names of params whose values are kept in memory only.
// 3: runs.definition, the job as the run started it; runs.stop_reason, a stop under way.
// unended_executions and runs.orphan_timeout_ms came later without a new version: a table or
// a column with a default that an older agent does not know leaves it working (the executions
// in it are then ended by no one, and its runs are not stopped as orphans, as before), and an
// agent can be rolled back.
constexpr int kSchemaVersion = 3;

}  // namespace

// One use of a prepared statement, with positional binding and typed column reads. A statement
// from the store's cache is reset and its bindings cleared when the Query ends, so it holds no
// read snapshot (which in WAL mode would keep checkpoints from finishing) and is ready for the
// next call; one prepared here for a single use is finalized.
class Query {
 public:
  Query(sqlite3* db, const char* sql) : db_(db), owned_(true) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  // `stmt` is null when preparing failed; `rc` is then its error code.
  Query(sqlite3* db, sqlite3_stmt* stmt, int rc) : db_(db), stmt_(stmt), rc_(rc), owned_(false) {}
  ~Query() {
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& Bind(const std::string& s) {
    sqlite3_bind_text(stmt_, ++n_, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Query& BindNullable(const std::string& s) {
    if (s.empty()) {
      sqlite3_bind_null(stmt_, ++n_);
      return *this;
    }
    return Bind(s);
  }
  Query& Bind(int64_t i) {
    sqlite3_bind_int64(stmt_, ++n_, i);
    return *this;
  }
  Query& Bind(std::optional<DateTime> t) {
    if (!t) {
      sqlite3_bind_null(stmt_, ++n_);
      return *this;
    }
    return Bind(FormatDateTime(*t));
  }

  // Runs to completion (writes).
  Status Run() {
    if (rc_ != SQLITE_OK) return Error();
    rc_ = sqlite3_step(stmt_);
    if (rc_ != SQLITE_DONE && rc_ != SQLITE_ROW) return Error();
    return Status::Ok();
  }
  // Advances to the next row; false at the end or on error (see status()).
  bool Next() {
    if (rc_ != SQLITE_OK && rc_ != SQLITE_ROW) return false;
    rc_ = sqlite3_step(stmt_);
    return rc_ == SQLITE_ROW;
  }
  Status status() const {
    return (rc_ == SQLITE_OK || rc_ == SQLITE_ROW || rc_ == SQLITE_DONE) ? Status::Ok() : Error();
  }
  int rc() const { return rc_; }

  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t == nullptr ? "" : std::string(reinterpret_cast<const char*>(t),
                                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  DateTime Time(int col) const {
    auto t = ParseDateTime(Text(col));
    return t.ok() ? *t : DateTime{};
  }
  std::optional<DateTime> OptionalTime(int col) const {
    if (IsNull(col)) return std::nullopt;
    return Time(col);
  }

 private:
  Status Error() const {
    return Status(rc_ == SQLITE_BUSY ? Code::kUnavailable : Code::kInternal,
                  fmt::format("agent database: {}", sqlite3_errmsg(db_)));
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
  int n_ = 0;
  bool owned_;
};

namespace {

constexpr const char* kRunColumns =
    "id, job, status, params, parent_execution_id, start_step, idempotency_key, message, "
    "queued_at, started_at, ended_at, current_step, pid, pid_start, execution_id, sensitive, "
    "definition, stop_reason, orphan_timeout_ms";

RunRecord ReadRun(const Query& q) {
  RunRecord r;
  r.id = q.Text(0);
  r.job = q.Text(1);
  r.status = q.Text(2);
  r.params = q.Text(3);
  r.parent_execution_id = q.Text(4);
  r.start_step = q.Text(5);
  r.idempotency_key = q.Text(6);
  r.message = q.Text(7);
  r.queued_at = q.Time(8);
  r.started_at = q.OptionalTime(9);
  r.ended_at = q.OptionalTime(10);
  r.current_step = static_cast<int>(q.Int(11));
  r.pid = static_cast<int>(q.Int(12));
  r.pid_start = q.Int(13);
  r.execution_id = q.Text(14);
  r.sensitive = q.Text(15);
  r.definition = q.Text(16);
  r.stop_reason = q.Text(17);
  r.orphan_timeout_ms = q.Int(18);
  return r;
}

}  // namespace

std::string StorePath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "agent.db").string();
}

std::string PackagePath(const std::string& data_dir, const std::string& name) {
  return (std::filesystem::path(data_dir) / "packages" / (name + ".yaml")).string();
}

Status WritePackageFile(const std::string& data_dir, const std::string& name,
                        std::string_view content) {
  return WriteFileAtomically(PackagePath(data_dir, name), content, kPackageFileMode);
}

namespace {

// SQLite's word for a database it cannot write ("disk I/O error", "unable to open") says not
// why (QA: an agent restarted on a read-only mount said only that; one run as another user than
// the data_dir's said only "unable to open database file").
std::string CannotWriteHint(const std::string& path) {
  struct statvfs fs {};
  std::error_code ec;
  const std::string where = std::filesystem::exists(path, ec)
                                ? path
                                : std::filesystem::path(path).parent_path().string();
  if (statvfs(where.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY) != 0) {
    return "; its file system is mounted read-only: give the agent a data_dir it can write";
  }
  if (faccessat(AT_FDCWD, where.c_str(), W_OK, AT_EACCESS) != 0 && errno == EACCES) {
    return fmt::format("; the agent's user (uid {}) may not write {}: run the agent as the "
                       "data_dir's owner, or give it the data_dir (chown -R)",
                       geteuid(), where);
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<AgentStore>> AgentStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Unavailable(
        fmt::format("cannot open agent database {}: {}{}", path, err, CannotWriteHint(path)));
  }
  std::unique_ptr<AgentStore> store(new AgentStore(db));
  store->path_ = path;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Unavailable(
        fmt::format("cannot read agent database {}: {}", path, std::strerror(errno)));
  }
  store->device_ = st.st_dev;
  store->inode_ = st.st_ino;
  sqlite3_busy_timeout(db, 5000);
  // Exclusive locking, set before WAL mode so that no shared-memory WAL index is made: the
  // agent is the database's only user, so it takes the file lock once and keeps the WAL index in
  // its own memory instead of taking locks and reading the shared index on every transaction
  // (about 5 % of the agent's CPU per run). It also keeps a second agent off the same data_dir.
  // WAL with synchronous=NORMAL: a commit is in the WAL file, not yet fsynced, when the call
  // returns. That survives the agent's own crash or SIGKILL (the OS holds the written pages),
  // which is what recovery needs to mark interrupted runs abandoned; only a power loss or kernel
  // crash can take back the last commits. FULL would add an fsync to each of a run's
  // transactions.
  Status pragmas = store->Exec("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; "
                               "PRAGMA synchronous=NORMAL;");
  if (pragmas.ok()) pragmas = store->Exec(kSchema);
  // The index of runs by status that earlier agents kept cost two more pages written with most
  // of a run's commits, and served only the look for unfinished runs at start, which scans
  // anyway (NOT IN). An earlier agent makes it again, harmlessly: no schema version for it.
  if (pragmas.ok()) pragmas = store->Exec("DROP INDEX IF EXISTS runs_by_status");
  if (!pragmas.ok() && sqlite3_errcode(db) == SQLITE_BUSY) {
    return Unavailable(fmt::format("agent database {} is in use by another process (is another "
                                   "agent running on the same data_dir?)", path));
  }
  if (!pragmas.ok()) {
    return Internal(fmt::format("agent database {}: {}{}", path, sqlite3_errmsg(db),
                                CannotWriteHint(path)));
  }
  Query version(db, "SELECT MAX(version) FROM schema_version");
  if (version.Next() && !version.IsNull(0)) {
    int64_t found = version.Int(0);
    if (found > kSchemaVersion) {
      return FailedPrecondition(fmt::format(
          "agent database {} has schema version {}, newer than this fanout ({}); upgrade fanout",
          path, found, kSchemaVersion));
    }
    if (found < 2) {
      RETURN_IF_ERROR(store->Exec(
          "BEGIN; ALTER TABLE runs ADD COLUMN sensitive TEXT NOT NULL DEFAULT '[]'; "
          "UPDATE schema_version SET version = 2; COMMIT;"));
    }
    if (found < 3) {
      RETURN_IF_ERROR(store->Exec(
          "BEGIN; ALTER TABLE runs ADD COLUMN definition TEXT NOT NULL DEFAULT ''; "
          "ALTER TABLE runs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT ''; "
          "UPDATE schema_version SET version = 3; COMMIT;"));
    }
  } else {
    RETURN_IF_ERROR(store->Exec(fmt::format("INSERT INTO schema_version VALUES ({})", kSchemaVersion)));
  }
  // Added without a new version (see kSchemaVersion): made when a database lacks it.
  if (Query probe(db, "SELECT orphan_timeout_ms FROM runs LIMIT 0"); !probe.status().ok()) {
    RETURN_IF_ERROR(
        store->Exec("ALTER TABLE runs ADD COLUMN orphan_timeout_ms INTEGER NOT NULL DEFAULT 0"));
  }
  return store;
}

AgentStore::~AgentStore() {
  WriteUnsavedLocked(/*now=*/true);  // the agent stops: a last try (no other user is left)
  if (size_t lost = unsaved_runs_.size() + unsaved_attempts_.size(); lost > 0) {
    std::fprintf(stderr, "fanout agent: %zu run or step update%s could not be written to %s and "
                 "are lost: the next start recovers those runs as unfinished\n", lost,
                 lost == 1 ? "" : "s", sqlite3_db_filename(db_, "main"));
  }
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

Query AgentStore::Cached(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it != statements_.end()) return Query(db_, it->second, SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Query(db_, nullptr, rc);
  }
  statements_.emplace(sql, stmt);
  return Query(db_, stmt, SQLITE_OK);
}

Status AgentStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err ? err : "unknown error";
    sqlite3_free(err);
    return Internal("agent database: " + message);
  }
  return Status::Ok();
}

Result<AgentStore::PutResult> AgentStore::PutPackage(const std::string& name,
                                                     const std::string& sha256,
                                                     const std::string& content) {
  std::lock_guard lock(mu_);
  Query find = Cached("SELECT version, sha256 FROM packages WHERE name = ?");
  find.Bind(name);
  PutResult result;
  if (find.Next()) {
    result.version = static_cast<int>(find.Int(0));
    if (find.Text(1) == sha256) return result;  // unchanged
    ++result.version;
  } else {
    RETURN_IF_ERROR(find.status());
    result.version = 1;
    result.created = true;
  }
  result.changed = true;
  Query put = Cached("INSERT INTO packages(name, version, sha256, content, deployed_at) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET version = excluded.version, "
                 "sha256 = excluded.sha256, content = excluded.content, "
                 "deployed_at = excluded.deployed_at");
  put.Bind(name).Bind(static_cast<int64_t>(result.version)).Bind(sha256).Bind(content).Bind(std::optional<DateTime>(Now()));
  RETURN_IF_ERROR(put.Run());
  return result;
}

Result<std::optional<PackageRecord>> AgentStore::GetPackage(const std::string& name) {
  std::lock_guard lock(mu_);
  Query q = Cached("SELECT name, version, sha256, content, deployed_at FROM packages WHERE name = ?");
  q.Bind(name);
  if (!q.Next()) {
    RETURN_IF_ERROR(q.status());
    return std::optional<PackageRecord>();
  }
  std::string content = q.Text(3);
  auto size = static_cast<int64_t>(content.size());
  return std::optional<PackageRecord>(PackageRecord{q.Text(0), static_cast<int>(q.Int(1)),
                                                    q.Text(2), std::move(content), q.Time(4), size});
}

Result<std::vector<PackageRecord>> AgentStore::ListPackages() {
  std::lock_guard lock(mu_);
  Query q = Cached("SELECT name, version, sha256, length(content), deployed_at FROM packages ORDER BY name");
  std::vector<PackageRecord> out;
  while (q.Next()) {
    out.push_back(PackageRecord{q.Text(0), static_cast<int>(q.Int(1)), q.Text(2), "", q.Time(4),
                                q.Int(3)});
  }
  RETURN_IF_ERROR(q.status());
  return out;
}

Result<bool> AgentStore::DeletePackage(const std::string& name) {
  std::lock_guard lock(mu_);
  Query q = Cached("DELETE FROM packages WHERE name = ?");
  q.Bind(name);
  RETURN_IF_ERROR(q.Run());
  return sqlite3_changes(db_) > 0;
}

Result<AgentStore::PutResult> AgentStore::PutJob(const std::string& name,
                                                 const std::string& definition) {
  std::lock_guard lock(mu_);
  Query find = Cached("SELECT definition FROM jobs WHERE name = ?");
  find.Bind(name);
  PutResult result;
  if (find.Next()) {
    if (find.Text(0) == definition) return result;
  } else {
    RETURN_IF_ERROR(find.status());
    result.created = true;
  }
  result.changed = true;
  Query put = Cached("INSERT INTO jobs(name, definition, updated_at) VALUES (?, ?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET definition = excluded.definition, "
                 "updated_at = excluded.updated_at");
  put.Bind(name).Bind(definition).Bind(std::optional<DateTime>(Now()));
  RETURN_IF_ERROR(put.Run());
  return result;
}

Result<std::optional<JobRecord>> AgentStore::GetJob(const std::string& name) {
  std::lock_guard lock(mu_);
  Query q = Cached("SELECT name, definition, updated_at FROM jobs WHERE name = ?");
  q.Bind(name);
  if (!q.Next()) {
    RETURN_IF_ERROR(q.status());
    return std::optional<JobRecord>();
  }
  return std::optional<JobRecord>(JobRecord{q.Text(0), q.Text(1), q.Time(2)});
}

Result<std::vector<JobRecord>> AgentStore::ListJobs() {
  std::lock_guard lock(mu_);
  Query q = Cached("SELECT name, definition, updated_at FROM jobs ORDER BY name");
  std::vector<JobRecord> out;
  while (q.Next()) out.push_back(JobRecord{q.Text(0), q.Text(1), q.Time(2)});
  RETURN_IF_ERROR(q.status());
  return out;
}

Result<bool> AgentStore::DeleteJob(const std::string& name) {
  std::lock_guard lock(mu_);
  Query q = Cached("DELETE FROM jobs WHERE name = ?");
  q.Bind(name);
  RETURN_IF_ERROR(q.Run());
  return sqlite3_changes(db_) > 0;
}

Status AgentStore::SaveUnendedExecution(const UnendedExecutionRecord& e) {
  std::lock_guard lock(mu_);
  Query q = Cached("INSERT OR REPLACE INTO unended_executions(id, status, message, exit_code, "
                   "seen_at) VALUES (?, ?, ?, ?, ?)");
  q.Bind(e.id).Bind(e.status).Bind(e.message);
  if (e.exit_code) q.Bind(static_cast<int64_t>(*e.exit_code));
  else q.BindNullable("");
  q.Bind(std::optional<DateTime>(e.seen_at));
  return q.Run();
}

Status AgentStore::ForgetUnendedExecution(const std::string& id) {
  std::lock_guard lock(mu_);
  Query q = Cached("DELETE FROM unended_executions WHERE id = ?");
  q.Bind(id);
  return q.Run();
}

Result<std::vector<UnendedExecutionRecord>> AgentStore::ListUnendedExecutions() {
  std::lock_guard lock(mu_);
  Query q = Cached("SELECT id, status, message, exit_code, seen_at FROM unended_executions "
                   "ORDER BY seen_at, id");
  std::vector<UnendedExecutionRecord> out;
  while (q.Next()) {
    UnendedExecutionRecord& e = out.emplace_back();
    e.id = q.Text(0);
    e.status = q.Text(1);
    e.message = q.Text(2);
    if (!q.IsNull(3)) e.exit_code = static_cast<int>(q.Int(3));
    e.seen_at = q.Time(4);
  }
  RETURN_IF_ERROR(q.status());
  return out;
}

Status AgentStore::InsertRun(const RunRecord& r) {
  std::lock_guard lock(mu_);
  Query q = Cached("INSERT INTO runs(id, job, status, params, parent_execution_id, start_step, "
               "idempotency_key, message, queued_at, started_at, ended_at, current_step, pid, "
               "pid_start, execution_id, sensitive, definition, orphan_timeout_ms) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  q.Bind(r.id).Bind(r.job).Bind(r.status).Bind(r.params).Bind(r.parent_execution_id)
      .Bind(r.start_step).BindNullable(r.idempotency_key).Bind(r.message)
      .Bind(std::optional<DateTime>(r.queued_at)).Bind(r.started_at).Bind(r.ended_at)
      .Bind(static_cast<int64_t>(r.current_step)).Bind(static_cast<int64_t>(r.pid))
      .Bind(r.pid_start).Bind(r.execution_id).Bind(r.sensitive).Bind(r.definition)
      .Bind(r.orphan_timeout_ms);
  Status s = q.Run();
  if (!s.ok() && q.rc() == SQLITE_CONSTRAINT) {
    return AlreadyExists("idempotency key " + r.idempotency_key + " is already used");
  }
  return s;
}

Status AgentStore::UpdateRun(const RunRecord& r) {
  std::lock_guard lock(mu_);
  return WriteOrKeepLocked(&r, nullptr);
}

Status AgentStore::UpdateRunAndAttempt(const RunRecord& run, const StepAttemptRecord& attempt) {
  std::lock_guard lock(mu_);
  return WriteOrKeepLocked(&run, &attempt);
}

Status AgentStore::UpsertStepAttempt(const StepAttemptRecord& a) {
  std::lock_guard lock(mu_);
  return WriteOrKeepLocked(nullptr, &a);
}

Status AgentStore::WriteOrKeepLocked(const RunRecord* run, const StepAttemptRecord* attempt) {
  WriteUnsavedLocked();
  Status s = Status::Ok();
  bool both = run != nullptr && attempt != nullptr;
  if (both) s = Cached("BEGIN IMMEDIATE").Run();
  if (s.ok() && attempt != nullptr) s = UpsertStepAttemptLocked(*attempt);
  if (s.ok() && run != nullptr) {
    s = EndsTheRun(*run) && AttemptsUnsavedLocked(run->id, attempt)
            ? Unavailable(fmt::format("run {} is held in memory until its step attempts are "
                                      "written",
                                      run->id))
            : UpdateRunLocked(*run);
  }
  if (both) {
    if (s.ok()) s = Cached("COMMIT").Run();
    if (!s.ok()) (void)Cached("ROLLBACK").Run();
  }
  if (attempt != nullptr && (!s.ok() || !unsaved_attempts_.empty())) {
    AttemptKey key{attempt->run_id, attempt->step, attempt->attempt};
    if (s.ok()) unsaved_attempts_.erase(key);
    else unsaved_attempts_[key] = *attempt;
  }
  if (run != nullptr) {
    if (s.ok()) unsaved_runs_.erase(run->id);
    else unsaved_runs_[run->id] = *run;
  }
  return s;
}

void AgentStore::WriteUnsavedLocked(bool now) {
  if (unsaved_runs_.empty() && unsaved_attempts_.empty()) return;
  // At most once a second: a try writes the whole backlog, under the lock every request needs.
  auto tried = std::chrono::steady_clock::now();
  if (!now && tried - unsaved_tried_ < std::chrono::seconds(1)) return;
  unsaved_tried_ = tried;
  // One by one: a record that cannot be written does not hold back the others.
  std::erase_if(unsaved_attempts_, [&](const auto& kept) {
    return UpsertStepAttemptLocked(kept.second).ok();
  });
  std::erase_if(unsaved_runs_, [&](const auto& kept) {
    return !(EndsTheRun(kept.second) && AttemptsUnsavedLocked(kept.first)) &&
           UpdateRunLocked(kept.second).ok();
  });
}

// A run's end is written after its attempts' ends: written alone (an attempt with its output
// needs more room than a run), it left the run ended with its attempt `running` for ever, and
// recovery, which looks at unfinished runs only, never closed it (QA, a full disk). Updates
// before the end (a new step's pid) are written as they come: recovery needs them.
bool AgentStore::AttemptsUnsavedLocked(const std::string& run_id,
                                       const StepAttemptRecord* but) const {
  for (auto it = unsaved_attempts_.lower_bound(AttemptKey{run_id, INT_MIN, INT_MIN});
       it != unsaved_attempts_.end() && std::get<0>(it->first) == run_id; ++it) {
    if (but == nullptr || it->first != AttemptKey{but->run_id, but->step, but->attempt}) {
      return true;
    }
  }
  return false;
}

RunRecord AgentStore::WithUnsavedLocked(RunRecord run) const {
  auto it = unsaved_runs_.find(run.id);
  if (it == unsaved_runs_.end()) return run;
  // The columns UpdateRun writes come from memory; the rest (definition, stop reason) as stored.
  const RunRecord& kept = it->second;
  run.status = kept.status;
  run.message = kept.message;
  run.started_at = kept.started_at;
  run.ended_at = kept.ended_at;
  run.current_step = kept.current_step;
  run.pid = kept.pid;
  run.pid_start = kept.pid_start;
  run.execution_id = kept.execution_id;
  return run;
}

std::string AgentStore::FileProblem() const {
  struct stat st {};
  if (stat(path_.c_str(), &st) != 0) {
    // Only a file that is not there: a path unreadable for a moment (EIO, a stale NFS handle)
    // says nothing of the file.
    if (errno != ENOENT && errno != ENOTDIR) return "";
    return fmt::format("{} is gone ({}): was its data_dir removed?", path_, std::strerror(errno));
  }
  if (st.st_dev != device_ || st.st_ino != inode_) {
    return fmt::format("{} was replaced by another file", path_);
  }
  return "";
}

void AgentStore::WriteUnsaved() {
  std::lock_guard lock(mu_);
  WriteUnsavedLocked();
}

size_t AgentStore::UnsavedCount() {
  std::lock_guard lock(mu_);
  return unsaved_runs_.size() + unsaved_attempts_.size();
}

Status AgentStore::UpdateRunLocked(const RunRecord& r) {
  Query q = Cached("UPDATE runs SET status = ?, message = ?, started_at = ?, ended_at = ?, "
               "current_step = ?, pid = ?, pid_start = ?, execution_id = ? WHERE id = ?");
  q.Bind(r.status).Bind(r.message).Bind(r.started_at).Bind(r.ended_at)
      .Bind(static_cast<int64_t>(r.current_step)).Bind(static_cast<int64_t>(r.pid))
      .Bind(r.pid_start).Bind(r.execution_id).Bind(r.id);
  return q.Run();
}

Result<int64_t> AgentStore::TrimHistory(const std::string& job, int keep) {
  std::lock_guard lock(mu_);
  // Older than the job's keep-th newest finished run (by queue time, as the history lists
  // them); runs queued or running count for nothing and are never taken.
  constexpr const char* kBeyond =
      "job = ?1 AND ended_at IS NOT NULL AND queued_at < (SELECT queued_at FROM runs WHERE job = "
      "?1 AND ended_at IS NOT NULL ORDER BY queued_at DESC LIMIT 1 OFFSET ?2 - 1)";
  RETURN_IF_ERROR(Cached("BEGIN IMMEDIATE").Run());
  Query attempts = Cached(std::string("DELETE FROM step_attempts WHERE run_id IN (SELECT id FROM "
                                      "runs WHERE ") + kBeyond + ")");
  attempts.Bind(job).Bind(int64_t{keep});
  Status s = attempts.Run();
  int64_t removed = 0;
  if (s.ok()) {
    Query runs = Cached(std::string("DELETE FROM runs WHERE ") + kBeyond);
    runs.Bind(job).Bind(int64_t{keep});
    s = runs.Run();
    removed = sqlite3_changes64(db_);
  }
  if (s.ok()) s = Cached("COMMIT").Run();
  if (!s.ok()) {
    (void)Cached("ROLLBACK").Run();
    return s;
  }
  return removed;
}

Status AgentStore::SaveStopReason(const std::string& run_id, const std::string& reason) {
  std::lock_guard lock(mu_);
  Query q = Cached("UPDATE runs SET stop_reason = ? WHERE id = ?");
  q.Bind(reason).Bind(run_id);
  return q.Run();
}

Result<std::optional<RunRecord>> AgentStore::GetRun(const std::string& id) {
  std::lock_guard lock(mu_);
  static const std::string sql = fmt::format("SELECT {} FROM runs WHERE id = ?", kRunColumns);
  Query q = Cached(sql);
  q.Bind(id);
  if (!q.Next()) {
    RETURN_IF_ERROR(q.status());
    return std::optional<RunRecord>();
  }
  return std::optional<RunRecord>(WithUnsavedLocked(ReadRun(q)));
}

Result<std::optional<RunRecord>> AgentStore::FindRunByKey(const std::string& key) {
  std::lock_guard lock(mu_);
  static const std::string sql =
      fmt::format("SELECT {} FROM runs WHERE idempotency_key = ?", kRunColumns);
  Query q = Cached(sql);
  q.Bind(key);
  if (!q.Next()) {
    RETURN_IF_ERROR(q.status());
    return std::optional<RunRecord>();
  }
  return std::optional<RunRecord>(WithUnsavedLocked(ReadRun(q)));
}

Result<std::vector<RunRecord>> AgentStore::ListRuns(const std::string& job, int limit) {
  std::lock_guard lock(mu_);
  static const std::string sql = fmt::format(
      "SELECT {} FROM runs WHERE job = ? ORDER BY queued_at DESC, id DESC LIMIT ?", kRunColumns);
  Query q = Cached(sql);
  q.Bind(job).Bind(static_cast<int64_t>(limit));
  std::vector<RunRecord> out;
  while (q.Next()) out.push_back(WithUnsavedLocked(ReadRun(q)));
  RETURN_IF_ERROR(q.status());
  return out;
}

Result<std::vector<RunRecord>> AgentStore::ListUnfinishedRuns() {
  std::lock_guard lock(mu_);
  static const std::string sql =
      fmt::format("SELECT {} FROM runs WHERE status NOT IN ('succeeded', 'failed', 'canceled', "
                  "'abandoned') ORDER BY queued_at, id", kRunColumns);
  Query q = Cached(sql);
  std::vector<RunRecord> out;
  while (q.Next()) out.push_back(ReadRun(q));
  RETURN_IF_ERROR(q.status());
  return out;
}

Result<int64_t> AgentStore::CloseAttemptsOfEndedRuns() {
  std::lock_guard lock(mu_);
  Query q = Cached(
      "UPDATE step_attempts SET status = 'abandoned', "
      "ended_at = (SELECT ended_at FROM runs WHERE runs.id = step_attempts.run_id), "
      "message = 'the end of this attempt was not recorded: the agent could not write it' "
      "WHERE status = 'running' AND run_id IN (SELECT id FROM runs WHERE status IN "
      "('succeeded', 'failed', 'canceled', 'abandoned'))");
  RETURN_IF_ERROR(q.Run());
  return sqlite3_changes64(db_);
}

Status AgentStore::UpsertStepAttemptLocked(const StepAttemptRecord& a) {
  Query q = Cached("INSERT INTO step_attempts(run_id, step, name, attempt, status, started_at, "
               "ended_at, exit_code, execution_id, message, stdout, stderr) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
               "ON CONFLICT(run_id, step, attempt) DO UPDATE SET status = excluded.status, "
               "ended_at = excluded.ended_at, exit_code = excluded.exit_code, "
               "execution_id = excluded.execution_id, message = excluded.message, "
               "stdout = excluded.stdout, stderr = excluded.stderr");
  q.Bind(a.run_id).Bind(static_cast<int64_t>(a.step)).Bind(a.name).Bind(static_cast<int64_t>(a.attempt))
      .Bind(a.status).Bind(std::optional<DateTime>(a.started_at)).Bind(a.ended_at);
  if (a.exit_code) q.Bind(static_cast<int64_t>(*a.exit_code));
  else q.BindNullable("");
  q.Bind(a.execution_id).Bind(a.message).Bind(a.stdout_text).Bind(a.stderr_text);
  return q.Run();
}

Result<std::vector<StepAttemptRecord>> AgentStore::ListStepAttempts(const std::string& run_id,
                                                                    bool with_output) {
  std::lock_guard lock(mu_);
  Query q = Cached(with_output
                   ? "SELECT run_id, step, name, attempt, status, started_at, ended_at, exit_code, "
                     "execution_id, message, stdout, stderr FROM step_attempts WHERE run_id = ? "
                     "ORDER BY started_at, step, attempt"
                   : "SELECT run_id, step, name, attempt, status, started_at, ended_at, exit_code, "
                     "execution_id, message, '', '' FROM step_attempts WHERE run_id = ? "
                     "ORDER BY started_at, step, attempt");
  q.Bind(run_id);
  std::vector<StepAttemptRecord> out;
  while (q.Next()) {
    StepAttemptRecord a;
    a.run_id = q.Text(0);
    a.step = static_cast<int>(q.Int(1));
    a.name = q.Text(2);
    a.attempt = static_cast<int>(q.Int(3));
    a.status = q.Text(4);
    a.started_at = q.Time(5);
    a.ended_at = q.OptionalTime(6);
    if (!q.IsNull(7)) a.exit_code = static_cast<int>(q.Int(7));
    a.execution_id = q.Text(8);
    a.message = q.Text(9);
    a.stdout_text = q.Text(10);
    a.stderr_text = q.Text(11);
    out.push_back(std::move(a));
  }
  RETURN_IF_ERROR(q.status());
  for (const auto& [key, kept] : unsaved_attempts_) {
    if (std::get<0>(key) != run_id) continue;
    auto same = std::find_if(out.begin(), out.end(), [&](const StepAttemptRecord& a) {
      return a.step == kept.step && a.attempt == kept.attempt;
    });
    StepAttemptRecord& a = same != out.end() ? *same : out.emplace_back();
    a = kept;
    if (!with_output) {
      a.stdout_text.clear();
      a.stderr_text.clear();
    }
  }
  return out;
}

}  // namespace fanout::agent
