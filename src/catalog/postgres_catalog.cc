// PostgresCatalog: schema migrations under an advisory lock, batched multi-row upserts and a COPY
// of the events in one transaction per batch, and the queries behind reports and `fanout logs`.
#include "catalog/postgres_catalog.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cctype>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "catalog/libpq.h"
#include "catalog/shared_sql.h"

namespace fanout::catalog {

namespace {

// ---- Schema -------------------------------------------------------------------------------------

// One step of the schema: the statements that bring a database from `version - 1` to `version`.
// Open() applies the steps above the database's version in order, in one transaction, then
// records the new version. A new version is one more entry here plus kPostgresSchemaVersion.
struct Migration {
  int version;
  std::vector<const char*> statements;
};

const std::vector<Migration>& Migrations() {
  // Every text column is COLLATE "C": ISO 8601 times, ids and task paths then sort byte-wise as
  // in SQLite, whatever the database's default collation.
  static const std::vector<Migration> migrations = {
      {1,
       {
           R"(CREATE TABLE IF NOT EXISTS executions(
                id TEXT COLLATE "C" PRIMARY KEY,
                parent_id TEXT COLLATE "C",
                package TEXT COLLATE "C" NOT NULL,
                package_sha256 TEXT COLLATE "C" NOT NULL,
                host TEXT COLLATE "C" NOT NULL,
                agent TEXT COLLATE "C",
                job TEXT COLLATE "C",
                run_id TEXT COLLATE "C",
                status TEXT COLLATE "C" NOT NULL,
                started_at TEXT COLLATE "C" NOT NULL,
                ended_at TEXT COLLATE "C",
                exit_code INTEGER,
                message TEXT COLLATE "C" NOT NULL,
                operator TEXT COLLATE "C" NOT NULL))",
           R"(CREATE TABLE IF NOT EXISTS task_runs(
                execution_id TEXT COLLATE "C" NOT NULL,
                task_path TEXT COLLATE "C" NOT NULL,
                task_type TEXT COLLATE "C" NOT NULL,
                attempt INTEGER NOT NULL,
                status TEXT COLLATE "C" NOT NULL,
                started_at TEXT COLLATE "C" NOT NULL,
                ended_at TEXT COLLATE "C",
                agent TEXT COLLATE "C",
                child_execution_id TEXT COLLATE "C",
                message TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY(execution_id, task_path, attempt)))",
           R"(CREATE TABLE IF NOT EXISTS events(
                id BIGSERIAL PRIMARY KEY,
                execution_id TEXT COLLATE "C" NOT NULL,
                event TEXT COLLATE "C" NOT NULL,
                computer TEXT COLLATE "C" NOT NULL,
                operator TEXT COLLATE "C" NOT NULL,
                source TEXT COLLATE "C" NOT NULL,
                source_id TEXT COLLATE "C" NOT NULL,
                started_at TEXT COLLATE "C" NOT NULL,
                ended_at TEXT COLLATE "C" NOT NULL,
                data_code BIGINT NOT NULL,
                data_bytes BYTEA NOT NULL,
                message TEXT COLLATE "C" NOT NULL))",
           R"(CREATE TABLE IF NOT EXISTS execution_parameters(
                execution_id TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                value TEXT COLLATE "C",
                sensitive BOOLEAN NOT NULL,
                PRIMARY KEY(execution_id, name)))",
           "CREATE INDEX IF NOT EXISTS events_by_execution ON events(execution_id, id)",
           "CREATE INDEX IF NOT EXISTS executions_by_parent ON executions(parent_id)",
           "CREATE INDEX IF NOT EXISTS executions_by_start ON executions(started_at)",
           "CREATE INDEX IF NOT EXISTS executions_by_job ON executions(job, started_at)",
       }},
      // Events carry the Recorder's uid, so that a replayed (spooled or retried) batch adds no
      // event twice.
      {2,
       {
           R"(ALTER TABLE events ADD COLUMN IF NOT EXISTS uid TEXT COLLATE "C")",
           "CREATE UNIQUE INDEX IF NOT EXISTS events_by_uid ON events(uid)",
       }},
      // Executions name the process recording them, so a killed one can be told from a live one.
      {3,
       {
           "ALTER TABLE executions ADD COLUMN IF NOT EXISTS pid BIGINT",
           R"(ALTER TABLE executions ADD COLUMN IF NOT EXISTS process TEXT COLLATE "C")",
       }},
  };
  return migrations;
}

// Advisory lock keys (pg_advisory_xact_lock(int, int)): our namespace, then what is locked. The
// events lock is keyed by the events table's OID so that catalogs in different schemas of one
// database do not wait for each other.
constexpr const char* kLockSchema = "SELECT pg_advisory_xact_lock(1178684751, 1)";
constexpr const char* kLockEvents =
    "SELECT pg_advisory_xact_lock(1178684751, 'events'::regclass::oid::int4)";

constexpr const char* kExecutionColumns =
    "id, parent_id, package, package_sha256, host, agent, job, run_id, status, started_at, "
    "ended_at, exit_code, message, operator, pid, process";
constexpr int kExecutionColumnCount = 16;
constexpr const char* kUpsertExecutionTail =
    " ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, package = excluded.package, "
    "package_sha256 = excluded.package_sha256, host = excluded.host, agent = excluded.agent, "
    "job = excluded.job, run_id = excluded.run_id, status = excluded.status, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "exit_code = excluded.exit_code, message = excluded.message, operator = excluded.operator, "
    "pid = excluded.pid, process = excluded.process "
    // An ended execution is not made running again by a late copy of its start (a spool
    // replayed after an agent ended a killed step's execution).
    "WHERE executions.ended_at IS NULL OR excluded.ended_at IS NOT NULL";

// `tree`: the id bound to $N and the ids of every execution below it (UNION, not UNION ALL: a
// cycle of parent ids ends).
std::string TreeOf(size_t param) {
  return "WITH RECURSIVE tree(id) AS (SELECT $" + std::to_string(param) +
         "::text COLLATE \"C\" UNION SELECT e.id FROM executions e JOIN tree ON e.parent_id = "
         "tree.id) ";
}

constexpr const char* kParameterColumns = "execution_id, name, value, sensitive";
constexpr int kParameterColumnCount = 4;
constexpr const char* kUpsertParameterTail =
    " ON CONFLICT(execution_id, name) DO UPDATE SET value = excluded.value, "
    "sensitive = excluded.sensitive";

constexpr const char* kTaskRunColumns =
    "execution_id, task_path, task_type, attempt, status, started_at, ended_at, agent, "
    "child_execution_id, message";
constexpr int kTaskRunColumnCount = 10;
constexpr const char* kUpsertTaskRunTail =
    " ON CONFLICT(execution_id, task_path, attempt) DO UPDATE SET "
    "task_type = excluded.task_type, status = excluded.status, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, agent = excluded.agent, "
    "child_execution_id = excluded.child_execution_id, message = excluded.message";

constexpr const char* kEventColumns =
    "id, execution_id, event, computer, operator, source, source_id, started_at, ended_at, "
    "data_code, data_bytes, message";
// Events are copied into a temporary table first, then inserted in their order, skipping uids
// already stored: COPY itself cannot skip conflicts. The copy runs before the events lock is
// taken, so the lock is held only for the INSERT and the COMMIT.
constexpr const char* kCreateIncomingEvents =
    R"(CREATE TEMP TABLE IF NOT EXISTS fanout_incoming_events(
         seq BIGSERIAL,
         execution_id TEXT, event TEXT, computer TEXT, operator TEXT, source TEXT, source_id TEXT,
         started_at TEXT, ended_at TEXT, data_code BIGINT, data_bytes BYTEA, message TEXT,
         uid TEXT) ON COMMIT DELETE ROWS)";
constexpr const char* kCopyEvents =
    "COPY fanout_incoming_events(execution_id, event, computer, operator, source, source_id, "
    "started_at, ended_at, data_code, data_bytes, message, uid) FROM STDIN";
constexpr const char* kInsertIncomingEvents =
    "INSERT INTO events(execution_id, event, computer, operator, source, source_id, started_at, "
    "ended_at, data_code, data_bytes, message, uid) "
    "SELECT execution_id, event, computer, operator, source, source_id, started_at, ended_at, "
    "data_code, data_bytes, message, uid FROM fanout_incoming_events ORDER BY seq "
    "ON CONFLICT (uid) DO NOTHING";

// Rows per multi-row INSERT: well under PostgreSQL's 65535 parameters per statement.
constexpr size_t kRowsPerStatement = 1000;
// COPY data is handed to libpq in pieces of about this size.
constexpr size_t kCopyChunkBytes = 256 * 1024;
// A batch that loses a deadlock or serialization check is retried this many times at once.
constexpr int kWriteAttempts = 3;

// ---- Text -------------------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence starting at s[i] (as PostgreSQL's UTF8 encoding
// accepts it: no NUL, overlong forms, surrogates or code points above U+10FFFF), or 0.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  auto continuation = [&](size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i + k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  unsigned char c = byte(0);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return continuation(1) ? 2 : 0;
  if (c == 0xE0) return continuation(1, 0xA0) && continuation(2) ? 3 : 0;
  if (c == 0xED) return continuation(1, 0x80, 0x9F) && continuation(2) ? 3 : 0;
  if (c >= 0xE1 && c <= 0xEF) return continuation(1) && continuation(2) ? 3 : 0;
  if (c == 0xF0) return continuation(1, 0x90) && continuation(2) && continuation(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return continuation(1) && continuation(2) && continuation(3) ? 4 : 0;
  if (c == 0xF4) return continuation(1, 0x80, 0x8F) && continuation(2) && continuation(3) ? 4 : 0;
  return 0;
}

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Appends `text` as PostgreSQL text accepts it: each byte that is not part of well-formed UTF-8
// (including NUL) becomes U+FFFD. With `copy_escape`, also escapes it for COPY's text format.
void AppendText(std::string& out, std::string_view text, bool copy_escape) {
  for (size_t i = 0; i < text.size();) {
    size_t n = Utf8SequenceLength(text, i);
    if (n == 0) {
      out += kReplacementCharacter;
      ++i;
      continue;
    }
    char c = text[i];
    if (copy_escape && n == 1 && (c == '\\' || c == '\n' || c == '\r' || c == '\t')) {
      out += '\\';
      out += c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
    } else {
      out.append(text.data() + i, n);
    }
    i += n;
  }
}

std::string CleanText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendText(out, text, false);
  return out;
}

// ISO 8601 UTC with microseconds, exactly as FormatDateTime writes it; the calendar conversion
// is done once per distinct second, since the rows of a batch share a few seconds.
class IsoTimes {
 public:
  const std::string& Format(DateTime t) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    if (text_.empty() || secs != secs_) {
      text_ = FormatDateTime(secs);  // "2026-11-26T03:04:05.000000Z"
      secs_ = secs;
    }
    int64_t micros = (t - secs).count();
    size_t last_digit = text_.size() - 2;  // before the 'Z'
    for (int k = 0; k < 6; ++k) {
      text_[last_digit - k] = static_cast<char>('0' + micros % 10);
      micros /= 10;
    }
    return text_;
  }

 private:
  std::chrono::sys_seconds secs_{};
  std::string text_;
};

// Collapses libpq's multi-line messages ("...failed: Connection refused\n\tIs the server
// running...") into one line.
std::string OneLine(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// ---- Connection strings -----------------------------------------------------------------------

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Where a URI's user info ends (its '@'), or npos. Masking too much is harmless, too little
// not, so this is the later of two readings: libpq's own (the first '@', unless a '/' comes
// first), which catches a password holding '?' (shown whole before); and the last '@', which
// catches one holding '/' or '@' (libpq misreads those: such specs are refused), except an '@'
// in a query value (?user=etl@srv), which follows a "key=". `authority` is where the user info
// would start.
size_t UserinfoEnd(std::string_view uri, size_t authority) {
  constexpr size_t npos = std::string_view::npos;
  size_t libpq = uri.find_first_of("@/", authority);
  if (libpq != npos && uri[libpq] != '@') libpq = npos;
  size_t last = uri.rfind('@');
  size_t query = uri.find('?', authority);
  if (last != npos && query != npos && last > query &&
      uri.substr(query, last - query).find('=') != npos) {
    last = uri.rfind('@', query);
  }
  if (last != npos && last < authority) last = npos;
  if (libpq == npos) return last;
  return last == npos ? libpq : std::max(libpq, last);
}

// `text` with each %XX replaced by its byte (a malformed one is kept as it is).
std::string PercentDecoded(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned value = 0;
    if (text[i] == '%' && i + 2 < text.size() &&
        std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16).ptr ==
            text.data() + i + 3) {
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Masks the password of a URI or keyword/value connection string as "***", or with `drop`
// leaves it out; collects the raw passwords in `secrets` so that messages echoing them can be
// scrubbed too.
std::string Redact(std::string_view conninfo, std::vector<std::string>* secrets,
                   bool drop = false) {
  auto keep = [&](std::string_view secret) {
    if (secrets != nullptr && !secret.empty()) secrets->emplace_back(secret);
  };
  std::string out;
  // Any scheme://[user[:password]@]host... is treated as a URI, so that a mistyped scheme is
  // redacted too.
  size_t scheme_length = 0;
  while (scheme_length < conninfo.size() &&
         (std::isalnum(static_cast<unsigned char>(conninfo[scheme_length])) ||
          conninfo[scheme_length] == '+' || conninfo[scheme_length] == '-' ||
          conninfo[scheme_length] == '.')) {
    ++scheme_length;
  }
  if (scheme_length > 0 && conninfo.substr(scheme_length, 3) == "://") {
    size_t scheme_end = scheme_length + 3;
    out.append(conninfo.substr(0, scheme_end));
    size_t at = UserinfoEnd(conninfo, scheme_end);
    size_t host_start = scheme_end;
    if (at != std::string_view::npos) {
      std::string_view userinfo = conninfo.substr(scheme_end, at - scheme_end);
      size_t colon = userinfo.find(':');
      if (colon != std::string_view::npos) {
        keep(userinfo.substr(colon + 1));
        out.append(userinfo.substr(0, colon));
        if (!drop) out.append(":***");
      } else {
        out.append(userinfo);
      }
      host_start = at;
    }
    size_t authority_end = conninfo.find_first_of("/?", host_start);
    if (authority_end == std::string_view::npos) authority_end = conninfo.size();
    out.append(conninfo.substr(host_start, authority_end - host_start));
    std::string_view rest = conninfo.substr(authority_end);
    size_t query = rest.find('?');
    out.append(rest.substr(0, query));
    if (query == std::string_view::npos) return out;
    // Query parameters: key=value joined by '&'.
    std::string_view params = rest.substr(query + 1);
    char separator = '?';
    for (size_t start = 0; start <= params.size();) {
      size_t end = params.find('&', start);
      if (end == std::string_view::npos) end = params.size();
      std::string_view param = params.substr(start, end - start);
      start = end + 1;
      // libpq decodes a key's %XX: "pass%77ord" names the password too.
      const size_t eq = param.find('=');
      const bool password = eq != std::string_view::npos &&
                            PercentDecoded(param.substr(0, eq)) == "password";
      if (password) keep(param.substr(eq + 1));
      if (password && drop) continue;
      out += separator;
      separator = '&';
      out.append(password ? "password=***" : param);
    }
    return out;
  }
  // keyword = value pairs separated by spaces; values may be 'single quoted' with \ escapes.
  size_t i = 0;
  while (i < conninfo.size()) {
    size_t keyword_start = i;
    while (i < conninfo.size() && conninfo[i] != '=' && conninfo[i] != ' ') ++i;
    std::string_view keyword = conninfo.substr(keyword_start, i - keyword_start);
    while (i < conninfo.size() && (conninfo[i] == ' ' || conninfo[i] == '=')) ++i;
    out.append(conninfo.substr(keyword_start, i - keyword_start));
    size_t value_start = i;
    if (i < conninfo.size() && conninfo[i] == '\'') {
      for (++i; i < conninfo.size() && conninfo[i] != '\''; ++i) {
        if (conninfo[i] == '\\') ++i;
      }
      if (i < conninfo.size()) ++i;  // the closing quote
    } else {
      for (; i < conninfo.size() && conninfo[i] != ' '; ++i) {
        if (conninfo[i] == '\\') ++i;
      }
    }
    i = std::min(i, conninfo.size());
    std::string_view value = conninfo.substr(value_start, i - value_start);
    size_t space_start = i;
    while (i < conninfo.size() && conninfo[i] == ' ') ++i;
    if (keyword == "password") {
      keep(value);
      if (value.size() >= 2 && value.front() == '\'') keep(value.substr(1, value.size() - 2));
      if (drop) {
        out.resize(out.size() - (value_start - keyword_start));  // its keyword and '='
        continue;
      }
      out.append("***");
    } else {
      out.append(value);
    }
    out.append(conninfo.substr(space_start, i - space_start));
  }
  return out;
}

std::string Scrub(std::string message, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    for (size_t at = message.find(secret); at != std::string::npos;
         at = message.find(secret, at + 3)) {
      message.replace(at, secret.size(), "***");
    }
  }
  return message;
}

}  // namespace

// Named (not anonymous) so that the header can forward-declare Params.
namespace postgres_internal {

// ---- libpq helpers ----------------------------------------------------------------------------

// Owns a PGresult.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* result) : result_(result) {}
  ~PgResult() { PQclear(result_); }
  PgResult(PgResult&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}
  PgResult& operator=(PgResult&& other) noexcept {
    std::swap(result_, other.result_);
    return *this;
  }

  PGresult* get() const { return result_; }
  int rows() const { return PQntuples(result_); }
  bool IsNull(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }
  std::string Text(int row, int column) const {
    return std::string(PQgetvalue(result_, row, column),
                       static_cast<size_t>(PQgetlength(result_, row, column)));
  }

 private:
  PGresult* result_ = nullptr;
};

// Text-format query parameters; an absent value is SQL NULL.
class Params {
 public:
  void Add(std::string value) { values_.emplace_back(std::move(value)); }
  void AddText(std::string_view text) { Add(CleanText(text)); }
  void AddTextOrNull(std::string_view text) {
    if (text.empty()) {
      AddNull();
    } else {
      AddText(text);
    }
  }
  void AddNull() { values_.emplace_back(std::nullopt); }
  void AddInt(int64_t value) { Add(std::to_string(value)); }
  void AddIntOrNull(std::optional<int> value) {
    if (value) {
      AddInt(*value);
    } else {
      AddNull();
    }
  }
  void AddTimeOrNull(IsoTimes& times, std::optional<DateTime> t) {
    if (t) {
      Add(times.Format(*t));
    } else {
      AddNull();
    }
  }

  int size() const { return static_cast<int>(values_.size()); }
  // What PQexecParams takes; valid while this object is unchanged.
  std::vector<const char*> Pointers() const {
    std::vector<const char*> pointers;
    pointers.reserve(values_.size());
    for (const auto& value : values_) pointers.push_back(value ? value->c_str() : nullptr);
    return pointers;
  }

 private:
  std::vector<std::optional<std::string>> values_;
};

struct Statement {
  std::string sql;
  Params params;
};

// Turns `rows` into "INSERT INTO table(columns) VALUES ($1, ...), (...) tail" statements of at
// most kRowsPerStatement rows; `bind` adds one row's `columns` parameters.
template <typename Row, typename BindFn>
std::vector<Statement> MultiRowInserts(const char* table, const char* column_list, int columns,
                                       const char* tail, const std::vector<const Row*>& rows,
                                       BindFn bind) {
  std::vector<Statement> statements;
  for (size_t first = 0; first < rows.size(); first += kRowsPerStatement) {
    size_t count = std::min(kRowsPerStatement, rows.size() - first);
    Statement& s = statements.emplace_back();
    s.sql = std::string("INSERT INTO ") + table + "(" + column_list + ") VALUES ";
    int next = 1;
    for (size_t r = 0; r < count; ++r) {
      s.sql += r == 0 ? "(" : ", (";
      for (int c = 0; c < columns; ++c) {
        if (c > 0) s.sql += ", ";
        s.sql += '$';
        s.sql += std::to_string(next++);
      }
      s.sql += ')';
      bind(*rows[first + r], s.params);
    }
    s.sql += tail;
  }
  return statements;
}

}  // namespace postgres_internal

namespace {

using postgres_internal::MultiRowInserts;
using postgres_internal::Params;
using postgres_internal::PgResult;
using postgres_internal::Statement;

Result<DateTime> ReadTime(const PgResult& result, int row, int column) {
  std::string text = result.Text(row, column);
  auto parsed = ParseDateTime(text);
  if (!parsed.ok()) {
    return Internal(std::string("catalog column '") + PQfname(result.get(), column) +
                    "' holds a bad timestamp: " + parsed.status().message());
  }
  return *parsed;
}

Result<std::optional<DateTime>> ReadOptionalTime(const PgResult& result, int row, int column) {
  if (result.IsNull(row, column)) return std::optional<DateTime>();
  ASSIGN_OR_RETURN(DateTime t, ReadTime(result, row, column));
  return std::optional<DateTime>(t);
}

Result<int64_t> ReadInt(const PgResult& result, int row, int column) {
  const char* text = PQgetvalue(result.get(), row, column);
  const char* end = text + PQgetlength(result.get(), row, column);
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end) {
    return Internal(std::string("catalog column '") + PQfname(result.get(), column) +
                    "' holds a bad integer: '" + std::string(text, end) + "'");
  }
  return value;
}

Result<ExecutionRow> ReadExecution(const PgResult& result, int i) {
  ExecutionRow row;
  row.id = result.Text(i, 0);
  row.parent_id = result.Text(i, 1);  // NULL reads as ""
  row.package = result.Text(i, 2);
  row.package_sha256 = result.Text(i, 3);
  row.host = result.Text(i, 4);
  row.agent = result.Text(i, 5);
  row.job = result.Text(i, 6);
  row.run_id = result.Text(i, 7);
  row.status = result.Text(i, 8);
  ASSIGN_OR_RETURN(row.started_at, ReadTime(result, i, 9));
  ASSIGN_OR_RETURN(row.ended_at, ReadOptionalTime(result, i, 10));
  if (!result.IsNull(i, 11)) {
    ASSIGN_OR_RETURN(int64_t code, ReadInt(result, i, 11));
    row.exit_code = static_cast<int>(code);
  }
  row.message = result.Text(i, 12);
  row.operator_name = result.Text(i, 13);
  if (!result.IsNull(i, 14)) {
    ASSIGN_OR_RETURN(row.pid, ReadInt(result, i, 14));
  }
  row.process = result.Text(i, 15);
  return row;
}

Result<TaskRunRow> ReadTaskRun(const PgResult& result, int i) {
  TaskRunRow row;
  row.execution_id = result.Text(i, 0);
  row.task_path = result.Text(i, 1);
  row.task_type = result.Text(i, 2);
  ASSIGN_OR_RETURN(int64_t attempt, ReadInt(result, i, 3));
  row.attempt = static_cast<int>(attempt);
  row.status = result.Text(i, 4);
  ASSIGN_OR_RETURN(row.started_at, ReadTime(result, i, 5));
  ASSIGN_OR_RETURN(row.ended_at, ReadOptionalTime(result, i, 6));
  row.agent = result.Text(i, 7);
  row.child_execution_id = result.Text(i, 8);
  row.message = result.Text(i, 9);
  return row;
}

Result<Event> ReadEvent(const PgResult& result, int i) {
  Event event;
  ASSIGN_OR_RETURN(event.id, ReadInt(result, i, 0));
  event.execution_id = result.Text(i, 1);
  auto type = ParseEventName(result.Text(i, 2));
  if (!type.ok()) {
    return Internal("catalog event " + std::to_string(event.id) + ": " + type.status().message());
  }
  event.type = *type;
  event.computer = result.Text(i, 3);
  event.operator_name = result.Text(i, 4);
  event.source = result.Text(i, 5);
  event.source_id = result.Text(i, 6);
  ASSIGN_OR_RETURN(event.started_at, ReadTime(result, i, 7));
  ASSIGN_OR_RETURN(event.ended_at, ReadTime(result, i, 8));
  ASSIGN_OR_RETURN(event.data_code, ReadInt(result, i, 9));
  // Text-format BYTEA ("\x4142" or the old escape form); PQunescapeBytea reads both.
  size_t length = 0;
  unsigned char* bytes = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result.get(), i, 10)), &length);
  if (bytes == nullptr) {
    return Internal("catalog event " + std::to_string(event.id) + ": cannot decode data_bytes");
  }
  event.data_bytes.assign(reinterpret_cast<const char*>(bytes), length);
  PQfreemem(bytes);
  event.message = result.Text(i, 11);
  return event;
}

template <typename Row, typename ReadFn>
Result<std::vector<Row>> ReadAll(const PgResult& result, ReadFn read) {
  std::vector<Row> rows;
  rows.reserve(static_cast<size_t>(result.rows()));
  for (int i = 0; i < result.rows(); ++i) {
    ASSIGN_OR_RETURN(Row row, read(result, i));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string LimitParam(int limit) { return limit > 0 ? std::to_string(limit) : "ALL"; }

}  // namespace

// ---- PostgresCatalog --------------------------------------------------------------------------

// Runs statements on the catalog's connection and turns failures into Status values.
class PostgresCatalog::Query {
 public:
  explicit Query(PostgresCatalog& catalog) : catalog_(catalog) {}

  Result<PgResult> Run(const std::string& sql, const Params& params, const std::string& what) {
    std::vector<const char*> values = params.Pointers();
    PgResult result(PQexecParams(catalog_.conn_, sql.c_str(), params.size(), nullptr,
                                 values.empty() ? nullptr : values.data(), nullptr, nullptr, 0));
    ExecStatusType status =
        result.get() != nullptr ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
    return Error(result.get(), what);
  }

  Status Command(const std::string& sql, const std::string& what) {
    return Run(sql, Params(), what).status();
  }

  // The Status for a failed statement, by SQLSTATE class: what may pass (a lost connection, a
  // deadlock, a server shutting down) is Unavailable.
  Status Error(PGresult* result, const std::string& what) {
    const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    const char* primary =
        result != nullptr ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string sqlstate = state != nullptr ? state : "";
    catalog_.last_sqlstate_ = sqlstate;
    std::string detail = primary != nullptr ? primary : OneLine(PQerrorMessage(catalog_.conn_));
    Code code = Code::kInternal;
    if (sqlstate.empty() || PQstatus(catalog_.conn_) != CONNECTION_OK ||
        StartsWith(sqlstate, "08") || StartsWith(sqlstate, "57P") || sqlstate == "40001" ||
        sqlstate == "40P01" || sqlstate == "55P03") {
      code = Code::kUnavailable;
    } else if (StartsWith(sqlstate, "53")) {
      code = Code::kResourceExhausted;
    } else if (sqlstate == "42501") {
      code = Code::kPermissionDenied;
    } else if (StartsWith(sqlstate, "28")) {
      code = Code::kUnauthenticated;
    }
    if (!sqlstate.empty()) detail += " (SQLSTATE " + sqlstate + ")";
    return Status(
        code, Scrub("PostgreSQL catalog '" + catalog_.display_name_ + "': " + what + ": " + detail,
                    catalog_.secrets_));
  }

 private:
  PostgresCatalog& catalog_;
};

// Ends a Write() that the server has stopped answering: once armed, when `timeout` passes with
// no byte acknowledged or received on the connection, it shuts the connection's socket down,
// and libpq's wait returns with the connection lost. A slow transfer that still moves (a large
// batch over a slow link) is given another `timeout` each time. It works on its own duplicate
// of the socket, closed at Disarm(): libpq may close its descriptor meanwhile (a connection the
// server ended), and that number may then be reused by anything else in the process.
class PostgresCatalog::Watchdog {
 public:
  using Clock = std::chrono::steady_clock;
  Watchdog() : thread_([this] { Run(); }) {}
  ~Watchdog() {
    Disarm();
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  void Arm(int socket, std::chrono::milliseconds timeout) {
    {
      std::lock_guard lock(mu_);
      socket_ = socket >= 0 ? fcntl(socket, F_DUPFD_CLOEXEC, 0) : -1;
      timeout_ = timeout;
      deadline_ = Clock::now() + timeout;
      progress_ = Progress(socket_);
      fired_ = false;
    }
    wake_.notify_one();
  }
  // Whether it shut the socket down since Arm().
  bool Disarm() {
    std::lock_guard lock(mu_);
    if (socket_ >= 0) close(socket_);
    socket_ = -1;
    return fired_;
  }

 private:
  // Bytes the connection has moved either way; 0 where the kernel does not say (a Unix socket).
  static uint64_t Progress(int socket) {
    tcp_info info{};
    socklen_t length = sizeof info;
    if (socket < 0 || getsockopt(socket, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return 0;
    return info.tcpi_bytes_acked + info.tcpi_bytes_received;
  }
  void Run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      if (socket_ < 0 || fired_) {
        wake_.wait(lock);
      } else if (Clock::now() < deadline_) {
        wake_.wait_until(lock, deadline_);
      } else if (uint64_t moved = Progress(socket_); moved != progress_) {
        progress_ = moved;
        deadline_ = Clock::now() + timeout_;
      } else {
        ::shutdown(socket_, SHUT_RDWR);
        fired_ = true;
      }
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  int socket_ = -1;  // armed: our duplicate of the connection's socket
  std::chrono::milliseconds timeout_{0};
  Clock::time_point deadline_;
  uint64_t progress_ = 0;
  bool fired_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is set
};

PostgresCatalog::PostgresCatalog(std::string conninfo, bool existing_catalog_only)
    : conninfo_(std::move(conninfo)),
      display_name_(Redact(conninfo_, &secrets_)),
      existing_catalog_only_(existing_catalog_only) {}

PostgresCatalog::~PostgresCatalog() { Close(); }

void PostgresCatalog::Close() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

Status PostgresCatalog::NotOpen() const {
  return FailedPrecondition("PostgreSQL catalog '" + display_name_ + "' is not open");
}

Status PostgresCatalog::ConnectionError(const std::string& what) const {
  std::string detail = conn_ != nullptr ? OneLine(PQerrorMessage(conn_)) : "out of memory";
  return Unavailable(
      Scrub("PostgreSQL catalog '" + display_name_ + "': " + what + ": " + detail, secrets_));
}

namespace {
// Array entries after the expanded connection string ("dbname") override it, entries before it
// are defaults it may override.
constexpr const char* kConnectKeywords[] = {"connect_timeout", "fallback_application_name",
                                            "dbname", "client_encoding", nullptr};
}  // namespace

Status PostgresCatalog::Connect(int timeout_seconds) {
  const std::string timeout = std::to_string(timeout_seconds);
  const char* const values[] = {timeout.c_str(), "fanout", conninfo_.c_str(), "UTF8", nullptr};
  RETURN_IF_ERROR(LoadLibpq());
  conn_ = PQconnectdbParams(kConnectKeywords, values, /*expand_dbname=*/1);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    Status status = ConnectionError("cannot connect");
    Close();
    return status;
  }
  limits_pending_ = write_timeout_.count() > 0;
  // Notices ("relation already exists, skipping") would otherwise go to stderr.
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  return Status::Ok();
}

bool PostgresCatalog::IsOutage(const Status& open_failure) {
  if (open_failure.code() != Code::kUnavailable) return false;
  // libpq's "timeout expired": nothing answered within connect_timeout, so a ping, which
  // would wait as long again, has nothing to add. A server with no connection left (SQLSTATE
  // 53300, which a ping takes for an answer) passes as its load does. A role's or database's
  // own CONNECTION LIMIT ("too many connections for role") is configuration, for the user to
  // fix. Matched by the server's English words: a server with other lc_messages is taken for
  // one that refuses.
  const std::string& message = open_failure.message();
  if (message.find("timeout expired") != std::string::npos ||
      message.find("too many clients already") != std::string::npos ||
      message.find("connection slots are reserved") != std::string::npos) {
    return true;
  }
  // SSL refused or unverifiable is configuration too, though libpq's ping reports no answer.
  // Matched in libpq's words only: the spec before them may hold anything ("certificates").
  const std::string named = "PostgreSQL catalog '" + display_name_ + "': ";
  const std::string_view libpq = std::string_view(message).substr(
      message.starts_with(named) ? named.size() : 0);
  for (std::string_view ssl : {"does not support SSL", "certificate verify failed",
                               "root certificate file", "server certificate for"}) {
    if (libpq.find(ssl) != std::string_view::npos) return false;
  }
  if (!LoadLibpq().ok()) return false;
  const char* const values[] = {"10", "fanout", conninfo_.c_str(), "UTF8", nullptr};
  // Connection failures are all Unavailable; a ping tells a server that answers and refuses (a
  // wrong password, no such database) from one that does not answer. PQPING_REJECT: it
  // answers but takes no connection now (starting up, shutting down, in recovery): a restart,
  // to be waited out like a server that does not answer.
  PGPing ping = PQpingParams(kConnectKeywords, values, /*expand_dbname=*/1);
  return ping == PQPING_NO_RESPONSE || ping == PQPING_REJECT;
}

bool PostgresCatalog::Refuses(Status& opened) {
  auto refused = [&] { return opened.code() == Code::kUnavailable && !IsOutage(opened); };
  if (!refused()) return false;
  opened = Open();
  return refused();
}

int PostgresCatalog::WriteConnectTimeoutSeconds() const {
  if (write_timeout_.count() == 0) return kConnectTimeoutSeconds;
  // libpq takes whole seconds, and at least 2.
  auto seconds = std::chrono::ceil<std::chrono::seconds>(write_timeout_).count();
  return static_cast<int>(std::clamp<decltype(seconds)>(seconds, 2, kConnectTimeoutSeconds));
}

Status PostgresCatalog::EnsureConnected() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return Status::Ok();
  Close();
  return Connect(WriteConnectTimeoutSeconds());
}

Status PostgresCatalog::EnsureOpen() {
  if (conn_ == nullptr && !opened_) return NotOpen();
  return EnsureConnected();
}

Status PostgresCatalog::Open() { return OpenWithin(kConnectTimeoutSeconds); }

Status PostgresCatalog::Watched(const std::function<Status()>& statements) {
  if (write_timeout_.count() == 0) return statements();
  if (!watchdog_) watchdog_ = std::make_unique<Watchdog>();
  watchdog_->Arm(PQsocket(conn_), write_timeout_);
  if (limits_pending_) {
    limits_pending_ = false;
    // The server's side of the same limit: a lock wait ends with an error rather than hold a
    // statement the watchdog will cut, and a backend notices that its client is gone rather
    // than wait on for it (PostgreSQL 14 and later; an older server refuses, which is fine).
    const std::string ms = std::to_string(write_timeout_.count()) + "ms";
    for (const std::string& set : {"SET lock_timeout = '" + ms + "'",
                                   std::string("SET client_connection_check_interval = '1s'")}) {
      PQclear(PQexec(conn_, set.c_str()));
    }
  }
  Status status = statements();
  if (!watchdog_->Disarm()) return status;
  Close();  // its socket is shut down; the next call connects again
  if (status.ok()) return status;  // the last answer came just in time
  return Unavailable("PostgreSQL catalog '" + display_name_ + "': no answer for " +
                     std::to_string(write_timeout_.count()) + " ms; the connection was dropped");
}

Status PostgresCatalog::OpenWithin(int timeout_seconds) {
  if (conn_ != nullptr) return Status::Ok();
  RETURN_IF_ERROR(Connect(timeout_seconds));
  Status status =
      Watched([&] { return existing_catalog_only_ ? OpenExistingSchema() : Migrate(); });
  if (!status.ok()) Close();
  opened_ = opened_ || status.ok();
  return status;
}

Status PostgresCatalog::OpenExistingSchema() {
  Query query(*this);
  ASSIGN_OR_RETURN(PgResult tables, query.Run("SELECT to_regclass('executions') IS NOT NULL",
                                               Params(), "looking for the catalog's tables"));
  if (tables.Text(0, 0) != "t") {
    found_empty_ = true;
    return NotFound("PostgreSQL catalog '" + display_name_ +
                    "' has no Fanout tables yet (the first run recording to it creates them)");
  }
  ASSIGN_OR_RETURN(int version, SchemaVersion());
  Status migrated = Migrate();
  if (migrated.code() != Code::kPermissionDenied) return migrated;
  const std::string& why = migrated.message();
  const size_t said = why.rfind(": ");  // the server's words, after the catalog's context
  return PermissionDenied("PostgreSQL catalog '" + display_name_ + "' has schema version " +
                          std::to_string(version) + ", older than this fanout's " +
                          std::to_string(kPostgresSchemaVersion) + ", and this role may not " +
                          "upgrade it (" + (said == std::string::npos ? why : why.substr(said + 2)) +
                          "); upgrade it once as a role that may create tables in its schema "
                          "(any `fanout run` or `fanout report` as that role does)");
}

Result<int> PostgresCatalog::SchemaVersion() {
  Query query(*this);
  ASSIGN_OR_RETURN(PgResult exists, query.Run("SELECT to_regclass('schema_version') IS NOT NULL",
                                              Params(), "reading the schema version"));
  if (exists.Text(0, 0) != "t") return 0;
  ASSIGN_OR_RETURN(PgResult max, query.Run("SELECT MAX(version) FROM schema_version", Params(),
                                           "reading the schema version"));
  if (max.IsNull(0, 0)) return 0;
  ASSIGN_OR_RETURN(int64_t version, ReadInt(max, 0, 0));
  return static_cast<int>(version);
}

// What Write needs, asked of the server: a role that may only read had its run succeed with
// every row left in the spool for ever, said as "unavailable".
Status PostgresCatalog::CheckWriteRights() {
  if (conn_ == nullptr) return NotOpen();
  Query query(*this);
  ASSIGN_OR_RETURN(
      PgResult missing,
      // Upserts (INSERT ... ON CONFLICT DO UPDATE) need SELECT too; events go through a
      // temporary table (TEMP on the database) and skip uids already stored (SELECT).
      query.Run("SELECT string_agg(p || ' on ' || t, ', ') FROM (VALUES "
                "('executions', 'INSERT'), ('executions', 'UPDATE'), ('executions', 'SELECT'), "
                "('execution_parameters', 'INSERT'), ('execution_parameters', 'UPDATE'), "
                "('execution_parameters', 'SELECT'), ('task_runs', 'INSERT'), "
                "('task_runs', 'UPDATE'), ('task_runs', 'SELECT'), ('events', 'INSERT'), "
                "('events', 'SELECT')) AS needed(t, p) WHERE NOT has_table_privilege(t, p)",
                Params(), "checking the role's rights"));
  ASSIGN_OR_RETURN(PgResult other,
                   query.Run("SELECT has_sequence_privilege(pg_get_serial_sequence('events', "
                             "'id'), 'USAGE'), has_database_privilege(current_database(), "
                             "'TEMP')",
                             Params(), "checking the role's rights"));
  std::string lacking = missing.IsNull(0, 0) ? "" : missing.Text(0, 0);
  auto add = [&](const std::string& right) { lacking += (lacking.empty() ? "" : ", ") + right; };
  if (other.Text(0, 0) != "t") add("USAGE on the sequence of events.id");
  if (other.Text(0, 1) != "t") add("TEMP on the database");
  if (lacking.empty()) return Status::Ok();
  return PermissionDenied("PostgreSQL catalog '" + display_name_ + "': the role may not record " +
                          "runs: it lacks " + lacking +
                          "; grant them, or record with a role that may (reports need only "
                          "SELECT)");
}

// A database at the current version is only read (a role without CREATE rights may open it);
// otherwise the check is repeated under the schema lock, so that of several processes opening a
// fresh database at once exactly one creates the schema.
Status PostgresCatalog::Migrate() {
  CHECK(Migrations().back().version == kPostgresSchemaVersion);
  auto newer = [&](int version) {
    return FailedPrecondition("PostgreSQL catalog '" + display_name_ + "' has schema version " +
                              std::to_string(version) + ", newer than the version " +
                              std::to_string(kPostgresSchemaVersion) +
                              " this fanout understands; use a newer fanout to read it");
  };
  ASSIGN_OR_RETURN(int version, SchemaVersion());
  if (version > kPostgresSchemaVersion) return newer(version);
  if (version == kPostgresSchemaVersion) return Status::Ok();

  Query query(*this);
  RETURN_IF_ERROR(query.Command("BEGIN", "starting the schema transaction"));
  auto body = [&]() -> Status {
    RETURN_IF_ERROR(query.Command(kLockSchema, "locking the schema"));
    RETURN_IF_ERROR(
        query.Command("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)",
                      "creating schema_version"));
    ASSIGN_OR_RETURN(version, SchemaVersion());
    if (version > kPostgresSchemaVersion) return newer(version);
    for (const Migration& migration : Migrations()) {
      if (migration.version <= version) continue;
      std::string what = "migrating the schema to version " + std::to_string(migration.version);
      for (const char* sql : migration.statements) RETURN_IF_ERROR(query.Command(sql, what));
    }
    // One row, the current version, as in SQLite.
    RETURN_IF_ERROR(query.Command("DELETE FROM schema_version", "recording the schema version"));
    Params params;
    params.AddInt(kPostgresSchemaVersion);
    RETURN_IF_ERROR(query
                        .Run("INSERT INTO schema_version(version) VALUES ($1)", params,
                             "recording the schema version")
                        .status());
    return query.Command("COMMIT", "committing the schema");
  };
  Status status = body();
  if (!status.ok()) Rollback();
  return status;
}

void PostgresCatalog::Rollback() {
  if (PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    PQclear(PQexec(conn_, "ROLLBACK"));
  }
}

Status PostgresCatalog::Write(const CatalogBatch& batch) {
  if (batch.empty()) return Status::Ok();
  if (conn_ == nullptr && !opened_) {
    if (!open_on_write_) return NotOpen();
    RETURN_IF_ERROR(OpenWithin(WriteConnectTimeoutSeconds()));
  }
  Status status;
  for (int attempt = 0; attempt < kWriteAttempts; ++attempt) {
    RETURN_IF_ERROR(EnsureConnected());
    last_sqlstate_.clear();
    commit_sent_ = false;
    status = Watched([&] {
      Status written = WriteOnce(batch);
      if (!written.ok()) Rollback();  // the first error is the one to report
      return written;
    });
    // No connection left: the watchdog cut it. During COMMIT the outcome is unknown, and a
    // replay adds nothing twice (see below).
    if (status.ok() || conn_ == nullptr) return status;
    bool lost_deadlock = last_sqlstate_ == "40P01" || last_sqlstate_ == "40001";
    // A connection lost before COMMIT took the transaction with it: reconnect and write again.
    // Lost during COMMIT, the outcome is unknown: report it, and let the caller retry (rows are
    // upserts and events are skipped by uid, so a replay adds nothing twice).
    bool lost_before_commit = PQstatus(conn_) != CONNECTION_OK && !commit_sent_;
    if (!lost_deadlock && !lost_before_commit) break;
  }
  return status;
}

// Rows of one key are collapsed to the last one (an upsert replaces every column, so the result
// is the same as upserting them in order; one INSERT may not touch a row twice), except that a
// running execution row does not replace an ended one, as the upsert would not; and sorted by
// key, so that concurrent writers lock shared rows in the same order and do not deadlock.
Status PostgresCatalog::WriteOnce(const CatalogBatch& batch) {
  std::map<std::string_view, const ExecutionRow*> executions;
  std::map<std::pair<std::string_view, std::string_view>, const ParameterValue*> parameters;
  for (const ExecutionRow& row : batch.executions) {
    const ExecutionRow*& kept = executions[row.id];
    if (kept == nullptr || !kept->ended_at || row.ended_at) kept = &row;
    for (const auto& [name, value] : row.parameters) parameters[{row.id, name}] = &value;
  }
  std::map<std::tuple<std::string_view, std::string_view, int>, const TaskRunRow*> task_runs;
  for (const TaskRunRow& row : batch.task_runs) {
    task_runs[{row.execution_id, row.task_path, row.attempt}] = &row;
  }

  IsoTimes times;
  std::vector<Statement> statements;
  auto add = [&](std::vector<Statement> more) {
    for (Statement& s : more) statements.push_back(std::move(s));
  };
  std::vector<const ExecutionRow*> execution_rows;
  for (const auto& entry : executions) execution_rows.push_back(entry.second);
  add(MultiRowInserts("executions", kExecutionColumns, kExecutionColumnCount, kUpsertExecutionTail,
                      execution_rows, [&](const ExecutionRow& row, Params& p) {
                        p.AddText(row.id);
                        p.AddTextOrNull(row.parent_id);
                        p.AddText(row.package);
                        p.AddText(row.package_sha256);
                        p.AddText(row.host);
                        p.AddTextOrNull(row.agent);
                        p.AddTextOrNull(row.job);
                        p.AddTextOrNull(row.run_id);
                        p.AddText(row.status);
                        p.Add(times.Format(row.started_at));
                        p.AddTimeOrNull(times, row.ended_at);
                        p.AddIntOrNull(row.exit_code);
                        p.AddText(row.message);
                        p.AddText(row.operator_name);
                        if (row.pid > 0) {
                          p.AddInt(row.pid);
                        } else {
                          p.AddNull();
                        }
                        p.AddTextOrNull(row.process);
                      }));
  // Sensitive values are never stored: NULL with the flag set.
  using ParameterEntry =
      std::pair<const std::pair<std::string_view, std::string_view>, const ParameterValue*>;
  std::vector<const ParameterEntry*> parameter_rows;
  for (const auto& entry : parameters) parameter_rows.push_back(&entry);
  add(MultiRowInserts("execution_parameters", kParameterColumns, kParameterColumnCount,
                      kUpsertParameterTail, parameter_rows,
                      [](const ParameterEntry& entry, Params& p) {
                        const auto& [key, value] = entry;
                        p.AddText(key.first);
                        p.AddText(key.second);
                        if (value->sensitive) {
                          p.AddNull();
                        } else {
                          p.AddText(value->value);
                        }
                        p.Add(value->sensitive ? "true" : "false");
                      }));
  std::vector<const TaskRunRow*> task_run_rows;
  for (const auto& entry : task_runs) task_run_rows.push_back(entry.second);
  add(MultiRowInserts("task_runs", kTaskRunColumns, kTaskRunColumnCount, kUpsertTaskRunTail,
                      task_run_rows, [&](const TaskRunRow& row, Params& p) {
                        p.AddText(row.execution_id);
                        p.AddText(row.task_path);
                        p.AddText(row.task_type);
                        p.AddInt(row.attempt);
                        p.AddText(row.status);
                        p.Add(times.Format(row.started_at));
                        p.AddTimeOrNull(times, row.ended_at);
                        p.AddTextOrNull(row.agent);
                        p.AddTextOrNull(row.child_execution_id);
                        p.AddText(row.message);
                      }));

  Query query(*this);
  RETURN_IF_ERROR(query.Command("BEGIN", "starting a write transaction"));
  for (const Statement& s : statements) {
    RETURN_IF_ERROR(query.Run(s.sql, s.params, "writing executions and task runs").status());
  }
  if (!batch.events.empty()) {
    RETURN_IF_ERROR(query.Command(kCreateIncomingEvents, "preparing to copy events"));
    RETURN_IF_ERROR(CopyEvents(batch.events));
    // Held until COMMIT: ids are then taken and made visible in the same order.
    RETURN_IF_ERROR(query.Command(kLockEvents, "locking the events table"));
    RETURN_IF_ERROR(query.Command(kInsertIncomingEvents, "writing events"));
  }
  commit_sent_ = true;
  return query.Command("COMMIT", "committing");
}

Status PostgresCatalog::CopyEvents(const std::vector<Event>& events) {
  Query query(*this);
  {
    PgResult start(PQexec(conn_, kCopyEvents));
    if (start.get() == nullptr || PQresultStatus(start.get()) != PGRES_COPY_IN) {
      return query.Error(start.get(), "starting to copy events");
    }
  }
  IsoTimes times;
  std::string buffer;
  buffer.reserve(kCopyChunkBytes + 4096);
  static constexpr char kHex[] = "0123456789abcdef";
  bool sent = true;
  auto flush = [&]() {
    if (!buffer.empty() &&
        PQputCopyData(conn_, buffer.data(), static_cast<int>(buffer.size())) != 1) {
      sent = false;
    }
    buffer.clear();
  };
  for (const Event& e : events) {
    // Text format: tab-separated columns, one line per row, backslash escapes.
    AppendText(buffer, e.execution_id, true);
    buffer += '\t';
    buffer += EventName(e.type);
    buffer += '\t';
    AppendText(buffer, e.computer, true);
    buffer += '\t';
    AppendText(buffer, e.operator_name, true);
    buffer += '\t';
    AppendText(buffer, e.source, true);
    buffer += '\t';
    AppendText(buffer, e.source_id, true);
    buffer += '\t';
    buffer += times.Format(e.started_at);
    buffer += '\t';
    buffer += times.Format(e.ended_at);
    buffer += '\t';
    buffer += std::to_string(e.data_code);
    buffer += "\t\\\\x";  // BYTEA hex input "\x...", its backslash escaped for COPY
    for (unsigned char c : e.data_bytes) {
      buffer += kHex[c >> 4];
      buffer += kHex[c & 0xf];
    }
    buffer += '\t';
    AppendText(buffer, e.message, true);
    buffer += '\t';
    if (e.uid.empty()) {
      buffer += "\\N";  // NULL: never conflicts
    } else {
      AppendText(buffer, e.uid, true);
    }
    buffer += '\n';
    if (buffer.size() >= kCopyChunkBytes) flush();
    if (!sent) break;
  }
  flush();
  if (PQputCopyEnd(conn_, sent ? nullptr : "fanout stopped sending") != 1) sent = false;
  // The COPY's outcome, then the end of its results.
  PgResult end(PQgetResult(conn_));
  Status status;
  if (end.get() == nullptr || PQresultStatus(end.get()) != PGRES_COMMAND_OK) {
    status = query.Error(end.get(), "copying events");
  } else if (!sent) {
    status = ConnectionError("copying events");
  }
  while (PGresult* more = PQgetResult(conn_)) PQclear(more);
  return status;
}

Result<std::optional<ExecutionRow>> PostgresCatalog::GetExecution(const std::string& id) {
  RETURN_IF_ERROR(EnsureOpen());
  Params params;
  params.AddText(id);
  ASSIGN_OR_RETURN(
      std::vector<ExecutionRow> rows,
      QueryExecutions(std::string("SELECT ") + kExecutionColumns + " FROM executions WHERE id = $1",
                      params, "reading an execution"));
  if (rows.empty()) return std::optional<ExecutionRow>();
  RETURN_IF_ERROR(LoadParameters(rows[0]));
  return std::optional<ExecutionRow>(std::move(rows[0]));
}

Result<bool> PostgresCatalog::EndRunningExecution(const ExecutionRow& end) {
  RETURN_IF_ERROR(EnsureOpen());
  if (!end.ended_at) return InvalidArgument("ending execution " + end.id + " needs its end time");
  IsoTimes times;
  Params params;
  params.AddText(end.id);
  params.AddText(end.status);
  params.AddTimeOrNull(times, end.ended_at);
  params.AddIntOrNull(end.exit_code);
  params.AddText(end.message);
  Query query(*this);
  ASSIGN_OR_RETURN(PgResult result,
                   query.Run("UPDATE executions SET status = $2, ended_at = $3, exit_code = $4, "
                             "message = $5 WHERE id = $1 AND ended_at IS NULL",
                             params, "ending an execution"));
  return std::atoll(PQcmdTuples(result.get())) > 0;
}

Result<std::vector<ExecutionRow>> PostgresCatalog::QueryExecutions(const std::string& sql,
                                                                   const Params& params,
                                                                   const std::string& what) {
  Query query(*this);
  ASSIGN_OR_RETURN(PgResult result, query.Run(sql, params, what));
  return ReadAll<ExecutionRow>(result, ReadExecution);
}

Status PostgresCatalog::LoadParameters(ExecutionRow& row) {
  std::map<std::string, ExecutionRow*> by_id = {{row.id, &row}};
  return LoadParameters("", "= $1", row.id, by_id);
}

// The parameters of the executions `execution_id <condition>` selects (with $1 bound to
// `bound`, after the `cte` prefix), into their rows in `by_id`.
Status PostgresCatalog::LoadParameters(const std::string& cte, const std::string& condition,
                                       const std::string& bound,
                                       std::map<std::string, ExecutionRow*>& by_id) {
  Query query(*this);
  Params params;
  params.AddText(bound);
  ASSIGN_OR_RETURN(PgResult result,
                   query.Run(cte +
                                 "SELECT execution_id, name, value, sensitive FROM "
                                 "execution_parameters WHERE execution_id " +
                                 condition,
                             params, "reading execution parameters"));
  for (int i = 0; i < result.rows(); ++i) {
    auto it = by_id.find(result.Text(i, 0));
    if (it == by_id.end()) continue;
    it->second->parameters[result.Text(i, 1)] =
        ParameterValue{result.Text(i, 2), result.Text(i, 3) == "t"};
  }
  return Status::Ok();
}

Result<std::vector<ExecutionRow>> PostgresCatalog::ListExecutions(int limit) {
  RETURN_IF_ERROR(EnsureOpen());
  return QueryExecutions(std::string("SELECT ") + kExecutionColumns +
                             " FROM executions ORDER BY started_at DESC, id DESC LIMIT " +
                             LimitParam(limit),
                         Params(), "listing executions");
}

Result<std::vector<ExecutionRow>> PostgresCatalog::ListChildExecutions(
    const std::string& parent_id) {
  RETURN_IF_ERROR(EnsureOpen());
  Params params;
  params.AddText(parent_id);
  return QueryExecutions(std::string("SELECT ") + kExecutionColumns +
                             " FROM executions WHERE parent_id = $1 ORDER BY started_at, id",
                         params, "listing child executions");
}

Result<std::map<std::string, int>> PostgresCatalog::CountChildren(
    const std::vector<std::string>& parent_ids) {
  RETURN_IF_ERROR(EnsureOpen());
  std::map<std::string, int> counts;
  for (size_t first = 0; first < parent_ids.size(); first += kIdsPerStatement) {
    size_t n = std::min(kIdsPerStatement, parent_ids.size() - first);
    Params params;
    for (size_t i = 0; i < n; ++i) params.AddText(parent_ids[first + i]);
    Query query(*this);
    ASSIGN_OR_RETURN(PgResult result,
                     query.Run(CountChildrenSql(n), params, "counting child executions"));
    for (int i = 0; i < result.rows(); ++i) {
      counts[result.Text(i, 0)] = std::stoi(result.Text(i, 1));
    }
  }
  return counts;
}

// The executions `id <condition>` selects ($1 bound to `bound`, after the `cte` prefix) in
// `order`, with their parameters: two round trips however many there are.
Result<std::vector<ExecutionRow>> PostgresCatalog::ExecutionsWithParameters(
    const std::string& cte, const std::string& condition, const std::string& order,
    const std::string& bound, const std::string& what) {
  RETURN_IF_ERROR(EnsureOpen());
  Params params;
  params.AddText(bound);
  ASSIGN_OR_RETURN(std::vector<ExecutionRow> rows,
                   QueryExecutions(cte + "SELECT " + kExecutionColumns +
                                       " FROM executions WHERE id " + condition + " ORDER BY " +
                                       order,
                                   params, what));
  std::map<std::string, ExecutionRow*> by_id;
  for (ExecutionRow& row : rows) by_id[row.id] = &row;
  RETURN_IF_ERROR(LoadParameters(cte, condition, bound, by_id));
  return rows;
}

Result<std::vector<ExecutionRow>> PostgresCatalog::ListDescendantExecutions(
    const std::string& root_id) {
  return ExecutionsWithParameters(TreeOf(1), "IN (SELECT id FROM tree WHERE id <> $1)",
                                  "started_at, id", root_id, "listing an execution's tree");
}

Result<std::vector<TaskRunRow>> PostgresCatalog::ListTreeTaskRuns(const std::string& root_id) {
  return TaskRuns(TreeOf(1), "IN (SELECT id FROM tree)", root_id);
}

Result<std::vector<TaskRunRow>> PostgresCatalog::ListTaskRuns(const std::string& execution_id) {
  return TaskRuns("", "= $1", execution_id);
}

// The task runs of the executions `execution_id <condition>` selects ($1 bound to `bound`).
Result<std::vector<TaskRunRow>> PostgresCatalog::TaskRuns(const std::string& cte,
                                                          const std::string& condition,
                                                          const std::string& bound) {
  RETURN_IF_ERROR(EnsureOpen());
  Params params;
  params.AddText(bound);
  Query query(*this);
  ASSIGN_OR_RETURN(PgResult result,
                   query.Run(cte + "SELECT " + kTaskRunColumns +
                                 " FROM task_runs WHERE execution_id " + condition +
                                 " ORDER BY started_at, task_path, attempt",
                             params, "listing task runs"));
  return ReadAll<TaskRunRow>(result, ReadTaskRun);
}

Result<std::vector<Event>> PostgresCatalog::ListEvents(const EventQuery& query) {
  RETURN_IF_ERROR(EnsureOpen());
  Params params;
  std::string sql = std::string("SELECT ") + kEventColumns + " FROM events WHERE id > $1";
  params.AddInt(query.after_id);
  if (!query.execution_id.empty() && query.with_descendants) {
    params.AddText(query.execution_id);
    sql = TreeOf(params.size()) + sql + " AND execution_id IN (SELECT id FROM tree)";
  } else if (!query.execution_id.empty()) {
    params.AddText(query.execution_id);
    sql += " AND execution_id = $" + std::to_string(params.size());
  }
  if (!query.source.empty()) {
    params.AddText(query.source);
    sql += " AND source = $" + std::to_string(params.size());
  }
  if (query.since) {
    params.AddText(FormatDateTime(*query.since));
    sql += " AND ended_at >= $" + std::to_string(params.size());
  }
  if (!query.types.empty()) {
    sql += " AND event IN (";
    for (size_t i = 0; i < query.types.size(); ++i) {
      params.Add(EventName(query.types[i]));
      sql += (i == 0 ? "$" : ", $") + std::to_string(params.size());
    }
    sql += ")";
  }
  sql += std::string(query.newest_first ? " ORDER BY id DESC" : " ORDER BY id") + " LIMIT " +
         LimitParam(query.limit);
  Query run(*this);
  ASSIGN_OR_RETURN(PgResult result, run.Run(sql, params, "listing events"));
  return ReadAll<Event>(result, ReadEvent);
}

Result<std::vector<ExecutionRow>> PostgresCatalog::ListJobExecutions(const std::string& job,
                                                                     int limit) {
  return ExecutionsWithParameters(
      "",
      "IN (SELECT id FROM executions WHERE job = $1 AND status = 'succeeded' "
      "ORDER BY started_at DESC, id DESC LIMIT " + LimitParam(limit) + ")",
      "started_at DESC, id DESC", job, "listing a job's executions");
}

Result<Catalog::PruneCounts> PostgresCatalog::Prune(DateTime cutoff, const IsLive& is_live,
                                                    bool dry_run) {
  RETURN_IF_ERROR(EnsureOpen());
  Query q(*this);
  RETURN_IF_ERROR(q.Command("BEGIN", "starting the prune transaction"));
  PruneCounts counts;
  auto body = [&]() -> Status {
    ASSIGN_OR_RETURN(std::vector<ExecutionRow> all, ListExecutions(0));
    PrunePlan plan = PlanPrune(all, cutoff, is_live);
    counts.kept_live = plan.kept_live;
    return DeletePlanned(plan, [&](const std::string& sql, const std::vector<std::string>& ids)
                                    -> Result<int64_t> {
      Params params;
      for (const std::string& id : ids) params.AddText(id);
      ASSIGN_OR_RETURN(PgResult result, q.Run(sql, params, "pruning"));
      return static_cast<int64_t>(std::atoll(PQcmdTuples(result.get())));
    }, counts);
  };
  Status status = body();
  if (status.ok() && dry_run) {
    RETURN_IF_ERROR(q.Command("ROLLBACK", "rolling back the dry run"));
    return counts;
  }
  if (status.ok()) status = q.Command("COMMIT", "committing the prune");
  if (!status.ok()) {
    static_cast<void>(q.Command("ROLLBACK", "rolling back"));
    return status;
  }
  return counts;
}

std::string RedactConnectionString(std::string_view conninfo) { return Redact(conninfo, nullptr); }

std::string WithoutPassword(std::string_view conninfo) {
  return Redact(conninfo, nullptr, /*drop=*/true);
}

namespace {

// What libpq reads from a connection string: keyword and value of each option it sets, in its
// own order; libpq's error (trailing whitespace removed) when it cannot parse it. libpq must be
// loaded.
Result<std::vector<std::pair<std::string, std::string>>> ParsedOptions(std::string_view conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(std::string(conninfo).c_str(), &error);
  if (options == nullptr) {
    std::string message = error != nullptr ? error : "cannot be parsed";
    if (error != nullptr) PQfreemem(error);
    while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) {
      message.pop_back();
    }
    return InvalidArgument(message);
  }
  std::vector<std::pair<std::string, std::string>> set;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val != nullptr) set.emplace_back(option->keyword, option->val);
  }
  PQconninfoFree(options);
  return set;
}

}  // namespace

std::string ConnectionIdentity(std::string_view conninfo) {
  if (!LoadLibpq().ok()) return "";
  auto options = ParsedOptions(conninfo);
  if (!options.ok()) return "";
  std::vector<std::string> pairs;
  for (const auto& [keyword, value] : *options) {
    if (keyword == "password" || keyword == "passfile") continue;
    pairs.push_back(keyword + "=" + value);
  }
  std::sort(pairs.begin(), pairs.end());
  std::string identity = "postgresql:";
  for (const std::string& pair : pairs) identity += pair + "\n";
  return identity;
}

Status CheckConnectionString(std::string_view conninfo) {
  std::vector<std::string> secrets;
  Redact(conninfo, &secrets);
  const size_t scheme = conninfo.find("://");
  if (scheme != std::string_view::npos) {
    // libpq splits the user info at the first '@' and ends it at the first '/', so such a
    // password is misread and parts of it end up in libpq's messages. '?' and '#' it would read,
    // but a URI's user info cannot hold them (RFC 3986), and refusing them keeps masking simple.
    size_t at = UserinfoEnd(conninfo, scheme + 3);
    if (at != std::string_view::npos &&
        conninfo.substr(scheme + 3, at - scheme - 3).find_first_of("@/?#") != std::string_view::npos) {
      return InvalidArgument(
          "the PostgreSQL URI's user name or password holds '@', '/', '?' or '#'; write them percent-encoded "
          "(%40, %2F, %3F, %23), or keep the password in ~/.pgpass or PGPASSWORD");
    }
  }
  if (!LoadLibpq().ok()) return Status::Ok();  // said when the connection is made
  auto options = ParsedOptions(conninfo);
  if (!options.ok()) {
    return InvalidArgument("not a PostgreSQL connection string: " +
                           Scrub(options.status().message(), secrets));
  }
  Status status = Status::Ok();
  for (const auto& [keyword, set_value] : *options) {
    std::string_view value = set_value;
    if (keyword != "port") continue;
    // A list for several hosts ("5432,5433"); an empty entry takes the default.
    for (size_t start = 0; start <= value.size() && status.ok();) {
      size_t end = std::min(value.find(',', start), value.size());
      std::string_view port = value.substr(start, end - start);
      int number = 0;
      auto [next, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
      if (!port.empty() && (ec != std::errc() || next != port.data() + port.size() ||
                            number < 1 || number > 65535)) {
        status = InvalidArgument("the PostgreSQL port '" + Scrub(std::string(port), secrets) +
                                 "' is not a port number (1 to 65535)");
      }
      start = end + 1;
    }
  }
  return status;
}

}  // namespace fanout::catalog
