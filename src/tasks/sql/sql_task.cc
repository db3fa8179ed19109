// The `sql` task: runs SQL (text or file) on a connection with bound parameters, and stores
// the result as SSIS does: none, a single row into variables, or all rows into a list.
// Connections of type sqlite (the SQLite library) and postgres (libpq); both end in Finish().
#include "tasks/sql/sql_task.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sqlite3.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <optional>

#include "catalog/libpq.h"
#include "catalog/postgres_catalog.h"
#include "common/util.h"

namespace fanout {
namespace {

// The connection's end would roll back what the SQL did after its BEGIN, and no one would know.
constexpr const char* kTransactionLeftOpen =
    "the SQL left a transaction open (BEGIN without COMMIT); what it did since was rolled back. "
    "End it with COMMIT";

enum class ResultMode { kNone, kRow, kRows };

Value ColumnValue(sqlite3_stmt* stmt, int col) {
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: return Value(static_cast<int64_t>(sqlite3_column_int64(stmt, col)));
    case SQLITE_FLOAT: return Value(sqlite3_column_double(stmt, col));
    case SQLITE_NULL: return Value("");
    default: {
      const unsigned char* text = sqlite3_column_text(stmt, col);
      return Value(std::string(reinterpret_cast<const char*>(text),
                               static_cast<size_t>(sqlite3_column_bytes(stmt, col))));
    }
  }
}

int Bind(sqlite3_stmt* stmt, int index, const Value& v) {
  switch (v.type()) {
    case ValueType::kInt: return sqlite3_bind_int64(stmt, index, v.as_int());
    case ValueType::kDouble: return sqlite3_bind_double(stmt, index, v.as_double());
    case ValueType::kBool: return sqlite3_bind_int(stmt, index, v.as_bool() ? 1 : 0);
    default: {
      std::string s = v.ToString();
      return sqlite3_bind_text(stmt, index, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
  }
}

// What the last statement returned (its columns, and its rows as far as the result mode needs
// them), and how many rows all statements changed.
struct StatementResult {
  std::vector<std::string> columns;
  std::vector<std::vector<Value>> rows;
  bool got_row = false;
};

// ---- PostgreSQL ---------------------------------------------------------------------------------

// A result column's value by its type: integers, floats and integral numerics as numbers, bool
// as bool, NULL as "" (as SQLite's path does), anything else as its text.
Value PgValue(const PGresult* result, int row, int col) {
  if (PQgetisnull(result, row, col)) return Value("");
  const char* text = PQgetvalue(result, row, col);
  const char* end = text + PQgetlength(result, row, col);
  switch (PQftype(result, col)) {
    case 16:  // bool
      return Value(text[0] == 't');
    case 20:    // int8
    case 21:    // int2
    case 23:    // int4
    case 26:    // oid
    case 1700:  // numeric: an integer when it has no fraction and fits
    {
      int64_t i = 0;
      auto [ptr, ec] = std::from_chars(text, end, i);
      if (ec == std::errc() && ptr == end) return Value(i);
      if (PQftype(result, col) != 1700) break;
      [[fallthrough]];
    }
    case 700:  // float4
    case 701:  // float8
    {
      double d = 0;
      auto [ptr, ec] = std::from_chars(text, end, d);
      if (ec == std::errc() && ptr == end) return Value(d);
      break;
    }
    default:
      break;
  }
  return Value(std::string(text, end));
}

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events`, the task is canceled (while `watch_cancel`), or
// `deadline` passes.
enum class Wake { kReady, kCanceled, kTimedOut };
Wake WaitFor(int fd, short events, const CancelToken& cancel, bool watch_cancel,
             std::optional<Clock::time_point> deadline) {
  for (;;) {
    if (watch_cancel && cancel.canceled()) return Wake::kCanceled;
    pollfd fds[2] = {{fd, events, 0}, {watch_cancel ? cancel.fd() : -1, POLLIN, 0}};
    int timeout_ms = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      if (left.count() <= 0) return Wake::kTimedOut;
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count() + 1, 60000));
    }
    int n = poll(fds, 2, timeout_ms);  // a negative fd is ignored
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) continue;  // re-check the deadline
    if (watch_cancel && (fds[1].revents & POLLIN)) return Wake::kCanceled;
    return Wake::kReady;  // errors on the socket are libpq's to report
  }
}

// One libpq connection, closed on destruction.
class PgConnection {
 public:
  ~PgConnection() {
    if (conn_ != nullptr) PQfinish(conn_);
  }

  // Connects without blocking a cancel: the connection is polled together with the task's
  // cancel fd, within the DSN's connect_timeout (default 30 s). The password is a separate
  // connection keyword, so it is never part of the DSN or a message.
  std::optional<std::string> Connect(const std::string& dsn, const std::string& password,
                                     const CancelToken& cancel) {
    // Entries after the expanded "dbname" (the DSN) override it; those before are defaults.
    const char* const keywords[] = {"fallback_application_name", "dbname", "password",
                                    "client_encoding", nullptr};
    const char* const values[] = {"fanout", dsn.c_str(),
                                  password.empty() ? nullptr : password.c_str(), "UTF8",
                                  nullptr};
    if (Status loaded = catalog::LoadLibpq(); !loaded.ok()) return loaded.message();
    conn_ = PQconnectStartParams(keywords, values, /*expand_dbname=*/1);
    if (conn_ == nullptr) return "out of memory";
    if (PQstatus(conn_) == CONNECTION_BAD) return OneLine(PQerrorMessage(conn_));
    Clock::time_point deadline = Clock::now() + std::chrono::seconds(ConnectTimeout());
    // As libpq's documentation says: start as if PQconnectPoll had asked to write.
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK) {
      if (state == PGRES_POLLING_FAILED) return OneLine(PQerrorMessage(conn_));
      Wake wake = WaitFor(PQsocket(conn_), state == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                          cancel, true, deadline);
      if (wake == Wake::kCanceled) return "canceled while connecting";
      if (wake == Wake::kTimedOut) return "timed out connecting";
      state = PQconnectPoll(conn_);
    }
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
    return std::nullopt;
  }

  // Collects the results of the query just sent, stopping the server's work with PQcancel when
  // the task is canceled. Returns the results in order; an error ends them.
  std::vector<PGresult*> Results(const CancelToken& cancel, bool& canceled) {
    std::vector<PGresult*> results;
    bool cancel_sent = false;
    for (;;) {
      while (PQisBusy(conn_)) {
        // Once the server has been asked to stop, wait for its answer without the cancel fd
        // (it stays readable), but not for ever.
        std::optional<Clock::time_point> deadline;
        if (cancel_sent) deadline = canceled_at_ + std::chrono::seconds(10);
        Wake wake = WaitFor(PQsocket(conn_), POLLIN, cancel, !cancel_sent, deadline);
        if (wake == Wake::kCanceled) {
          canceled = cancel_sent = true;
          canceled_at_ = Clock::now();
          if (PGcancel* handle = PQgetCancel(conn_)) {
            char error[256];
            PQcancel(handle, error, sizeof error);
            PQfreeCancel(handle);
          }
          continue;
        }
        if (wake == Wake::kTimedOut) return results;  // the caller reports the cancel
        if (!PQconsumeInput(conn_)) {
          results.push_back(nullptr);  // the connection failed: PQerrorMessage says why
          return results;
        }
      }
      PGresult* result = PQgetResult(conn_);
      if (result == nullptr) return results;
      ExecStatusType status = PQresultStatus(result);
      if (status == PGRES_COPY_IN) {
        PQputCopyEnd(conn_, "the sql task does not supply COPY FROM STDIN data");
      } else if (status == PGRES_COPY_OUT) {
        char* row = nullptr;
        while (PQgetCopyData(conn_, &row, 0) > 0) PQfreemem(row);
      }
      results.push_back(result);
    }
  }

  PGconn* get() const { return conn_; }

  static std::string OneLine(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    for (char& c : text) {
      if (c == '\n' || c == '\t') c = ' ';
    }
    return text;
  }

 private:
  int ConnectTimeout() const {
    int seconds = 30;
    if (PQconninfoOption* options = PQconninfo(conn_)) {
      for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
        if (std::string_view(o->keyword) == "connect_timeout" && o->val != nullptr &&
            std::atoi(o->val) > 0) {
          seconds = std::max(2, std::atoi(o->val));  // libpq's own minimum
        }
      }
      PQconninfoFree(options);
    }
    return seconds;
  }

  PGconn* conn_ = nullptr;
  Clock::time_point canceled_at_;
};

// Frees a batch of results.
struct PgResults {
  std::vector<PGresult*> list;
  ~PgResults() {
    for (PGresult* r : list) PQclear(r);
  }
};

// The error a result set ends with, if any.
std::optional<std::string> PgError(const PgResults& results, PGconn* conn) {
  for (PGresult* r : results.list) {
    if (r == nullptr) return PgConnection::OneLine(PQerrorMessage(conn));
    ExecStatusType status = PQresultStatus(r);
    if (status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE ||
        status == PGRES_NONFATAL_ERROR) {
      const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
      return primary != nullptr ? std::string(primary)
                                : PgConnection::OneLine(PQresultErrorMessage(r));
    }
  }
  return std::nullopt;
}

class SqlTask : public Task {
 public:
  std::string connection;
  std::optional<Template> sql;
  std::optional<Template> file;
  std::vector<Template> bind;
  ResultMode mode = ResultMode::kNone;
  std::map<std::string, std::string> into_row;  // column -> variable
  std::string into_rows;                        // list variable

  TaskOutcome Execute(TaskContext& context) const override {
    Scope& scope = context.scope();
    Report report;
    auto settings = context.Connection(connection);
    if (!settings.ok()) return TaskOutcome::Failure(settings.status().message());
    std::string text;
    if (sql) {
      auto t = sql->RenderString(scope);
      if (!t.ok()) return TaskOutcome::Failure(t.status().message());
      text = *t;
    } else {
      auto path = file->RenderString(scope);
      if (!path.ok()) return TaskOutcome::Failure(path.status().message());
      auto content = ReadFile(context.ResolvePath(*path));
      if (!content.ok()) return TaskOutcome::Failure(content.status().message());
      text = *content;
    }
    std::vector<Value> params;
    for (const Template& t : bind) {
      auto v = t.Render(scope);
      if (!v.ok()) return TaskOutcome::Failure(v.status().message());
      params.push_back(std::move(*v));
    }

    if ((*settings)["type"] == "postgres") {
      return Reported(RunPostgres((*settings)["dsn"], (*settings)["password"], text, params,
                                  scope, context, report),
                      report, context);
    }

    std::string db_path = context.ResolvePath((*settings)["path"]);
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      std::string err = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close(db);
      return TaskOutcome::Failure(fmt::format("cannot open SQLite database {} (connection {}): {}",
                                              db_path, connection, err));
    }
    // Cancel and timeout interrupt a long statement, and a wait for another connection's lock.
    const CancelToken* token = &context.cancel();
    sqlite3_progress_handler(
        db, 1000, [](void* t) { return static_cast<const CancelToken*>(t)->canceled() ? 1 : 0; },
        const_cast<CancelToken*>(token));
    BusyWait busy{token, std::chrono::steady_clock::now()};
    sqlite3_busy_handler(db, &BusyWait::Handler, &busy);

    TaskOutcome outcome = Run(db, text, params, scope, report);
    sqlite3_close(db);
    return Reported(std::move(outcome), report, context);
  }

 private:
  // What a successful attempt says ("N rows changed"): emitted only once the attempt has
  // succeeded, its transaction committed (a rolled-back attempt had said "1 row changed").
  struct Report {
    std::string message;
    int64_t count = 0;
  };
  static TaskOutcome Reported(TaskOutcome outcome, const Report& report, TaskContext& context) {
    if (outcome.result == TaskResult::kSuccess && !report.message.empty()) {
      context.Emit(EventType::kOnInformation, report.message, report.count);
    }
    return outcome;
  }

  // A locked database is waited for up to kBusyWait, as a busy timeout would, but polling the
  // task's cancel fd: a timeout or Ctrl-C ends the wait at once.
  struct BusyWait {
    static constexpr auto kBusyWait = std::chrono::seconds(10);
    const CancelToken* token;
    std::chrono::steady_clock::time_point since;  // reset at each wait's first call
    static int Handler(void* self, int count) {
      auto* wait = static_cast<BusyWait*>(self);
      auto now = std::chrono::steady_clock::now();
      if (count == 0) wait->since = now;
      if (wait->token->canceled() || now - wait->since >= kBusyWait) return 0;
      pollfd fd = {wait->token->fd(), POLLIN, 0};
      poll(&fd, 1, std::min(1 + count, 20));  // 1, 2, ... 20 ms between tries
      return wait->token->canceled() ? 0 : 1;
    }
  };

  // Several statements run as one transaction, as PostgreSQL runs them: all or nothing, so a
  // retry does not repeat the ones that worked. Not when the SQL manages transactions itself.
  static bool RunsAsOneTransaction(const std::string& text) {
    int statements = 0;
    std::string current;
    bool controls_transactions = false;
    auto first_word = [](const std::string& statement) {
      size_t i = statement.find_first_not_of(" \t\r\n;");
      size_t j = i;
      while (j < statement.size() && std::isalpha(static_cast<unsigned char>(statement[j]))) ++j;
      std::string word = i == std::string::npos ? "" : statement.substr(i, j - i);
      for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return word;
    };
    auto finish = [&] {
      std::string word = first_word(current);
      if (!word.empty()) {
        ++statements;
        for (const char* control : {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}) {
          controls_transactions = controls_transactions || word == control;
        }
      }
      current.clear();
    };
    for (char c : text) {
      current += c;
      // sqlite3_complete: a whole statement, with strings, comments and triggers' BEGIN..END.
      if (c == ';' && sqlite3_complete(current.c_str())) finish();
    }
    finish();
    return statements > 1 && !controls_transactions;
  }

  TaskOutcome Run(sqlite3* db, const std::string& text, const std::vector<Value>& params,
                  Scope& scope, Report& report) const {
    bool wrap = sqlite3_get_autocommit(db) && RunsAsOneTransaction(text);
    if (wrap && sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return TaskOutcome::Failure(fmt::format("SQL error: {}", sqlite3_errmsg(db)));
    }
    TaskOutcome outcome = RunStatements(db, text, params, scope, report);
    const bool ok = outcome.result == TaskResult::kSuccess;
    if (wrap && !sqlite3_get_autocommit(db)) {
      if (sqlite3_exec(db, ok ? "COMMIT" : "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK &&
          ok) {
        return TaskOutcome::Failure(fmt::format("SQL error: {}", sqlite3_errmsg(db)));
      }
    } else if (!sqlite3_get_autocommit(db)) {
      // Closing the connection would roll it back silently.
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      if (ok) return TaskOutcome::Failure(kTransactionLeftOpen);
    }
    return outcome;
  }

  TaskOutcome RunStatements(sqlite3* db, const std::string& text, const std::vector<Value>& params,
                            Scope& scope, Report& report) const {
    const char* tail = text.c_str();
    const char* end = tail + text.size();
    size_t next_param = 0;
    StatementResult last;
    int64_t changes = 0;
    while (tail < end) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db, tail, static_cast<int>(end - tail), &stmt, &tail) != SQLITE_OK) {
        return TaskOutcome::Failure(fmt::format("SQL error: {}", sqlite3_errmsg(db)));
      }
      if (stmt == nullptr) break;  // only whitespace or comments left
      int count = sqlite3_bind_parameter_count(stmt);
      for (int i = 1; i <= count; ++i) {
        if (next_param >= params.size()) {
          sqlite3_finalize(stmt);
          return TaskOutcome::Failure(fmt::format(
              "the SQL has more parameters than `bind` gives ({})", params.size()));
        }
        Bind(stmt, i, params[next_param++]);
      }
      last = StatementResult();
      const int64_t total_before = sqlite3_total_changes64(db);
      int cols = sqlite3_column_count(stmt);
      for (int c = 0; c < cols; ++c) last.columns.push_back(sqlite3_column_name(stmt, c));
      int rc;
      while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (mode == ResultMode::kRows || (mode == ResultMode::kRow && !last.got_row)) {
          std::vector<Value> row;
          for (int c = 0; c < cols; ++c) row.push_back(ColumnValue(stmt, c));
          last.rows.push_back(std::move(row));
        }
        last.got_row = true;
      }
      if (rc != SQLITE_DONE) {
        std::string err = rc == SQLITE_INTERRUPT ? "interrupted" : sqlite3_errmsg(db);
        sqlite3_finalize(stmt);
        return TaskOutcome::Failure(fmt::format("SQL error: {}", err));
      }
      // sqlite3_changes() keeps the last INSERT, UPDATE or DELETE's count through later
      // statements (a SELECT, a CREATE): counted again, one UPDATE of a row said "4 rows
      // changed". Only a statement that changed rows (the total moved) adds its own count.
      if (sqlite3_total_changes64(db) != total_before) changes += sqlite3_changes64(db);
      sqlite3_finalize(stmt);
    }
    if (next_param < params.size()) {
      return TaskOutcome::Failure(fmt::format("`bind` gives {} values but the SQL uses only {}",
                                              params.size(), next_param));
    }
    return Finish(last, changes, scope, report);
  }

  // Parameters are written $1, $2, ... as PostgreSQL itself takes them (`?` is not translated:
  // it is an operator in PostgreSQL). With `bind`, the SQL must be one statement (the extended
  // protocol's rule); without, it may be several, and the result is the last one's.
  TaskOutcome RunPostgres(const std::string& dsn, const std::string& password,
                          const std::string& text, const std::vector<Value>& params,
                          Scope& scope, TaskContext& context, Report& report) const {
    const CancelToken& cancel = context.cancel();
    // A DSN libpq would misread (an unencoded '@' in a password: it then looked up the rest as
    // a host name) is refused as the catalog's is, without echoing the password.
    if (Status checked = catalog::CheckConnectionString(dsn); !checked.ok()) {
      return TaskOutcome::Failure(
          fmt::format("connection {}: {}", connection, checked.message()));
    }
    PgConnection conn;
    if (auto error = conn.Connect(dsn, password, cancel)) {
      return TaskOutcome::Failure(
          fmt::format("cannot connect to PostgreSQL (connection {}): {}", connection, *error));
    }
    bool canceled = false;
    auto fail = [&](const PgResults& results) -> std::optional<TaskOutcome> {
      if (canceled) return TaskOutcome::Failure("SQL error: canceled");
      if (auto error = PgError(results, conn.get())) {
        std::string hint;
        if (!params.empty() && text.find('?') != std::string::npos) {
          hint = "; postgres connections take `bind` values as $1, $2, ... in the SQL, not ?";
        } else if (!params.empty() && error->find("multiple commands") != std::string::npos) {
          hint = "; with `bind`, a postgres task runs one statement: split it into tasks";
        }
        return TaskOutcome::Failure(fmt::format("SQL error: {}{}", *error, hint));
      }
      return std::nullopt;
    };

    // A send that failed leaves a null result: PQerrorMessage says why.
    auto collect = [&](int sent, PgResults& into) {
      if (sent) {
        into.list = conn.Results(cancel, canceled);
      } else {
        into.list.push_back(nullptr);
      }
    };
    PgResults results;
    if (params.empty()) {
      collect(PQsendQuery(conn.get(), text.c_str()), results);
    } else {
      // Prepared first, so that a count mismatch gets the same message as on SQLite.
      PgResults prepared;
      collect(PQsendPrepare(conn.get(), "", text.c_str(), 0, nullptr), prepared);
      if (auto failed = fail(prepared)) return *failed;
      PgResults described;
      collect(PQsendDescribePrepared(conn.get(), ""), described);
      if (auto failed = fail(described)) return *failed;
      int wanted = described.list.empty() ? 0 : PQnparams(described.list.back());
      if (static_cast<size_t>(wanted) > params.size()) {
        return TaskOutcome::Failure(fmt::format(
            "the SQL has more parameters than `bind` gives ({})", params.size()));
      }
      if (static_cast<size_t>(wanted) < params.size()) {
        return TaskOutcome::Failure(fmt::format(
            "`bind` gives {} values but the SQL uses only {} ($1..$n)", params.size(), wanted));
      }
      std::vector<std::string> texts;
      for (const Value& v : params) texts.push_back(v.ToString());
      std::vector<const char*> values;
      for (const std::string& t : texts) values.push_back(t.c_str());
      collect(PQsendQueryPrepared(conn.get(), "", static_cast<int>(values.size()),
                                  values.data(), nullptr, nullptr, 0),
              results);
    }
    if (auto failed = fail(results)) return *failed;
    if (PQtransactionStatus(conn.get()) != PQTRANS_IDLE) {
      return TaskOutcome::Failure(kTransactionLeftOpen);
    }

    StatementResult last;
    int64_t changes = 0;
    for (PGresult* r : results.list) {
      // Rows changed: INSERT, UPDATE, DELETE, MERGE (with or without RETURNING); a query's
      // row count is not a change.
      const char* tuples = PQcmdTuples(r);
      if (tuples[0] != '\0' && !std::string_view(PQcmdStatus(r)).starts_with("SELECT")) {
        changes += std::atoll(tuples);
      }
      if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) continue;
      last = StatementResult();
      int cols = PQnfields(r);
      int rows = PQntuples(r);
      for (int c = 0; c < cols; ++c) last.columns.push_back(PQfname(r, c));
      int keep = mode == ResultMode::kRows  ? rows
                 : mode == ResultMode::kRow ? std::min(rows, 1)
                                            : 0;
      for (int i = 0; i < keep; ++i) {
        std::vector<Value> row;
        for (int c = 0; c < cols; ++c) row.push_back(PgValue(r, i, c));
        last.rows.push_back(std::move(row));
      }
      last.got_row = rows > 0;
    }
    return Finish(last, changes, scope, report);
  }

  // Stores the last statement's result as the result mode asks, and says what to report.
  TaskOutcome Finish(StatementResult& last, int64_t changes, Scope& scope, Report& report) const {
    if (mode == ResultMode::kRow) {
      if (!last.got_row) return TaskOutcome::Failure("`result: row` but the query returned no row");
      for (const auto& [column, var] : into_row) {
        int found = -1;
        for (size_t c = 0; c < last.columns.size(); ++c) {
          if (last.columns[c] == column) found = static_cast<int>(c);
        }
        if (found < 0) {
          return TaskOutcome::Failure(fmt::format("the result has no column '{}'", column));
        }
        Status s = scope.Set(var, last.rows[0][found]);
        if (!s.ok()) return TaskOutcome::Failure(s.message());
      }
    }
    if (mode == ResultMode::kRows) {
      Value::List rows;
      for (auto& row : last.rows) {
        if (row.size() == 1) {
          rows.push_back(std::move(row[0]));
        } else {
          rows.emplace_back(Value::List(std::make_move_iterator(row.begin()),
                                        std::make_move_iterator(row.end())));
        }
      }
      size_t n = rows.size();
      Status s = scope.Set(into_rows, Value(std::move(rows)));
      if (!s.ok()) return TaskOutcome::Failure(s.message());
      report = {fmt::format("{} row{}", n, n == 1 ? "" : "s"), static_cast<int64_t>(n)};
    } else if (mode == ResultMode::kNone) {
      report = {fmt::format("{} row{} changed", changes, changes == 1 ? "" : "s"), changes};
    } else {
      report = {"1 row", 1};
    }
    return TaskOutcome::Success();
  }
};

class SqlTaskType : public TaskType {
 public:
  std::string_view name() const override { return "sql"; }
  std::vector<std::string_view> keys() const override {
    return {"connection", "sql", "file", "bind", "result", "into"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto task = std::make_shared<SqlTask>();
    if (auto c = parser.StringAt(node, "connection", true)) {
      task->connection = *c;
      parser.CheckConnection(node["connection"], *c, {"sqlite", "postgres"});
    }
    task->sql = parser.TemplateAt(node, "sql", false);
    task->file = parser.TemplateAt(node, "file", false);
    if (!node["sql"] == !node["file"]) {
      parser.Error(node, "an sql task needs exactly one of `sql` (the statement) or `file`");
    }
    for (auto [key, what] : {std::pair{"sql", "the statement to run"},
                             std::pair{"file", "the path of a file holding the SQL"}}) {
      if (YAML::Node value = node[key]; value && value.IsScalar() &&
          value.Scalar().find_first_not_of(" \t\r\n") == std::string::npos) {
        parser.Error(value, fmt::format("`{}` is empty; give {}", key, what));
      }
    }
    task->bind = parser.TemplateListAt(node, "bind", false);
    std::string mode = parser.StringAt(node, "result", false).value_or("none");
    YAML::Node into = node["into"];
    if (mode == "none") {
      if (into) parser.Error(into, "`into` needs `result: row` or `result: rows`");
    } else if (mode == "row") {
      task->mode = ResultMode::kRow;
      if (!into || !into.IsMap()) {
        parser.Error(into ? into : node, "`result: row` needs `into`: a mapping of column to variable");
      } else {
        for (auto it = into.begin(); it != into.end(); ++it) {
          std::string var = it->second.Scalar();
          if (var.starts_with("@")) var = var.substr(1);
          parser.CheckVariable(it->second, var);
          task->into_row[it->first.Scalar()] = var;
        }
      }
    } else if (mode == "rows") {
      task->mode = ResultMode::kRows;
      if (!into || !into.IsScalar()) {
        parser.Error(into ? into : node, "`result: rows` needs `into`: one list variable");
      } else {
        std::string var = into.Scalar();
        if (var.starts_with("@")) var = var.substr(1);
        parser.CheckVariable(into, var);
        task->into_rows = var;
      }
    } else {
      parser.Error(node["result"], fmt::format("`result: {}` is not allowed; use none, row or rows", mode));
    }
    return task;
  }
};

}  // namespace

std::unique_ptr<TaskType> MakeSqlTaskType() { return std::make_unique<SqlTaskType>(); }

}  // namespace fanout
