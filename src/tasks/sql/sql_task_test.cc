// Tests of the `sql` task on postgres connections: packages run by the real engine against the
// database $FANOUT_TEST_POSTGRES names (a libpq URI), each in a schema of its own. Without it,
// those cases skip; the ones that need no server (validation, an unreachable host) always run.
#include "tasks/sql/sql_task.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <random>

#include "common/test_util.h"
#include "fanout/engine.h"
#include "fanout/package.h"
#include "tasks/builtin.h"

namespace fanout {
namespace {

constexpr const char* kPostgresEnv = "FANOUT_TEST_POSTGRES";

// Keeps every event, for checking messages after the run.
class CapturingSink : public EventSink {
 public:
  explicit CapturingSink(std::vector<Event>* events, std::mutex* mu) : events_(events), mu_(mu) {}
  void Write(const Event& event) override {
    std::lock_guard lock(*mu_);
    events_->push_back(event);
  }

 private:
  std::vector<Event>* events_;
  std::mutex* mu_;
};

struct Run {
  RunResult result;
  std::vector<Event> events;
  std::string all_text;  // every event's message and data, for "never shown" checks
};

Result<Run> RunPackage(const std::string& yaml) {
  RegisterBuiltinTaskTypes();
  Diagnostics diagnostics;
  auto package = LoadPackageText(yaml, "/tmp/sql-task-test.yaml", diagnostics);
  if (!package.ok()) {
    return InvalidArgument(diagnostics.ToString() + package.status().message());
  }
  Run run;
  std::mutex mu;
  {
    std::vector<std::unique_ptr<EventSink>> sinks;
    sinks.push_back(std::make_unique<CapturingSink>(&run.events, &mu));
    Recorder recorder(nullptr, std::move(sinks), nullptr);
    Engine engine(recorder);
    ASSIGN_OR_RETURN(run.result, engine.Run(*package, RunOptions{}));
    recorder.Flush();
  }
  for (const Event& e : run.events) run.all_text += e.message + "\n" + e.data_bytes + "\n";
  return run;
}

// The libpq URI split into a DSN without the password, and the password.
struct Dsn {
  std::string dsn;
  std::string password;
};

Dsn SplitPassword(const std::string& uri) {
  size_t scheme = uri.find("://");
  size_t at = uri.find('@');
  if (scheme == std::string::npos || at == std::string::npos) return {uri, ""};
  size_t colon = uri.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return {uri, ""};
  return {uri.substr(0, colon) + uri.substr(at), uri.substr(colon + 1, at - colon - 1)};
}

// ---- SQLite connections ------------------------------------------------------------------------

class SqlTaskSqliteTest : public ::testing::Test {
 protected:
  std::string Package(const std::string& tasks) {
    return "package: p\nconnections:\n  db: {type: sqlite, path: " + db_ + "}\ntasks:\n" + tasks;
  }
  // The first value of a query on a connection of the test's own, or "<error: ...>".
  std::string Query(const std::string& sql) {
    sqlite3* db = nullptr;
    sqlite3_open(db_.c_str(), &db);
    std::string out;
    char* error = nullptr;
    sqlite3_exec(
        db, sql.c_str(),
        [](void* into, int, char** values, char**) {
          *static_cast<std::string*>(into) = values[0] ? values[0] : "NULL";
          return 0;
        },
        &out, &error);
    if (error != nullptr) out = std::string("<error: ") + error + ">";
    sqlite3_free(error);
    sqlite3_close(db);
    return out;
  }

  testing::TempDir dir_;
  std::string db_ = dir_.File("e.db");
};

// Several statements are all or nothing, as on PostgreSQL: a retry does not repeat the first.
TEST_F(SqlTaskSqliteTest, SeveralStatementsRunAsOneTransaction) {
  ASSERT_EQ(Query("CREATE TABLE log(m TEXT); CREATE TABLE u(k INT PRIMARY KEY); "
                  "INSERT INTO u VALUES (1)"),
            "");
  auto run = RunPackage(Package(
      "  t: {type: sql, connection: db, retries: 2, sql: \"INSERT INTO log VALUES ('loaded'); "
      "INSERT INTO u VALUES (1)\"}\n"));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_EQ(Query("SELECT COUNT(*) FROM log"), "0");
  // A trigger's BEGIN..END is no transaction control; the SQL's own BEGIN..COMMIT is kept.
  run = RunPackage(Package(
      "  t: {type: sql, connection: db, sql: \"CREATE TRIGGER tr AFTER INSERT ON log BEGIN "
      "INSERT OR IGNORE INTO u VALUES (2); END; INSERT INTO log VALUES ('a')\"}\n"
      "  u: {type: sql, connection: db, after: [t], sql: \"BEGIN; INSERT INTO log VALUES ('b'); "
      "COMMIT\"}\n"));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kSuccess) << run->result.message;
  EXPECT_EQ(Query("SELECT group_concat(m) FROM log"), "a,b");
}

TEST_F(SqlTaskSqliteTest, ATransactionLeftOpenFailsTheTask) {
  auto run = RunPackage(Package(
      "  t: {type: sql, connection: db, sql: \"CREATE TABLE t(k INT); BEGIN; INSERT INTO t "
      "VALUES (7)\"}\n"));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_NE(run->result.message.find("left a transaction open"), std::string::npos)
      << run->result.message;
  EXPECT_EQ(Query("SELECT COUNT(*) FROM t"), "0");
  EXPECT_EQ(run->all_text.find("changed"), std::string::npos)
      << "a rolled-back attempt changed nothing: " << run->all_text;
}

// "N rows changed" counts the rows each statement changed, once: a statement after an UPDATE
// (a SELECT, a CREATE) had counted the UPDATE's rows again (QA: 1 row said as 4).
TEST_F(SqlTaskSqliteTest, RowsChangedCountsEachStatementsOwnRows) {
  ASSERT_EQ(Query("CREATE TABLE z(a INT); INSERT INTO z VALUES (1), (1), (3)"), "");
  auto run = RunPackage(Package(
      "  t: {type: sql, connection: db, sql: \"UPDATE z SET a = 2 WHERE a = 3; SELECT 1; "
      "SELECT 2; CREATE TABLE IF NOT EXISTS q(x); DELETE FROM z WHERE a = 1; SELECT 3\"}\n"));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kSuccess) << run->result.message;
  EXPECT_NE(run->all_text.find("3 rows changed"), std::string::npos) << run->all_text;
}

// Waiting for another connection's lock ends with the task's timeout, not after the 10 s wait.
TEST_F(SqlTaskSqliteTest, ATimeoutEndsTheWaitForALockedDatabase) {
  ASSERT_EQ(Query("CREATE TABLE t(k INT)"), "");
  sqlite3* holder = nullptr;
  sqlite3_open(db_.c_str(), &holder);
  ASSERT_EQ(sqlite3_exec(holder, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto started = std::chrono::steady_clock::now();
  auto run = RunPackage(
      Package("  t: {type: sql, connection: db, timeout: 300ms, sql: \"INSERT INTO t VALUES (1)\"}\n"));
  auto took = std::chrono::steady_clock::now() - started;
  sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(holder);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_NE(run->result.message.find("timed out"), std::string::npos) << run->result.message;
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(SqlTaskValidationTest, AcceptsPostgresConnections) {
  RegisterBuiltinTaskTypes();
  Diagnostics ok;
  auto package = LoadPackageText(R"(package: p
parameters:
  pw: {type: string, sensitive: true, value: x}
connections:
  db: {type: postgres, dsn: "host=h dbname=d", password: "${pw}"}
tasks:
  q: {type: sql, connection: db, sql: "SELECT 1"}
)",
                                 "/tmp/p.yaml", ok);
  EXPECT_TRUE(package.ok()) << ok.ToString();

  Diagnostics bad;
  auto missing = LoadPackageText(R"(package: p
connections:
  db: {type: postgres, password: x}
tasks:
  q: {type: sql, connection: db, sql: "SELECT 1"}
)",
                                 "/tmp/p.yaml", bad);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(bad.ToString().find("missing required key `dsn`"), std::string::npos) << bad.ToString();
}

// An Execute SQL task with no statement is a mistake (a broken template, an unfilled file),
// not a task that changes nothing.
TEST(SqlTaskValidationTest, RefusesAnEmptyStatementOrFile) {
  RegisterBuiltinTaskTypes();
  Diagnostics bad;
  auto package = LoadPackageText(R"(package: p
connections:
  db: {type: sqlite, path: x.db}
tasks:
  q: {type: sql, connection: db, sql: "  "}
  f: {type: sql, connection: db, file: ""}
)",
                                 "/tmp/p.yaml", bad);
  EXPECT_FALSE(package.ok());
  EXPECT_NE(bad.ToString().find("5:39: error: `sql` is empty; give the statement to run"),
            std::string::npos)
      << bad.ToString();
  EXPECT_NE(bad.ToString().find("`file` is empty; give the path of a file holding the SQL"),
            std::string::npos)
      << bad.ToString();
}

// Needs no server: nothing listens on port 1.
TEST(SqlTaskPostgresTest, UnreachableServerFailsTheTaskNamingTheHost) {
  auto run = RunPackage(R"(package: p
parameters:
  pw: {type: string, sensitive: true, value: "hunter2-secret"}
connections:
  db: {type: postgres, dsn: "postgresql://fanout@127.0.0.1:1/fanout", password: "${pw}"}
tasks:
  q: {type: sql, connection: db, sql: "SELECT 1"}
)");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_EQ(run->result.failed, 1);
  EXPECT_NE(run->result.message.find("cannot connect to PostgreSQL (connection db)"),
            std::string::npos)
      << run->result.message;
  EXPECT_NE(run->result.message.find("127.0.0.1"), std::string::npos) << run->result.message;
  EXPECT_EQ(run->all_text.find("hunter2-secret"), std::string::npos);
}

// A DSN with a raw '@' in its password is refused as the catalog's is; libpq had looked the
// password's tail up as a host name (QA).
TEST(SqlTaskPostgresTest, ADsnLibpqWouldMisreadIsRefused) {
  auto run = RunPackage(R"(package: p
connections:
  db: {type: postgres, dsn: "postgresql://fanout:p@ssTAIL@127.0.0.1:1/fanout"}
tasks:
  q: {type: sql, connection: db, sql: "SELECT 1"}
)");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_NE(run->result.message.find("connection db: the PostgreSQL URI's user name or password "
                                     "holds '@'"),
            std::string::npos)
      << run->result.message;
  EXPECT_EQ(run->all_text.find("ssTAIL"), std::string::npos) << run->all_text;
}

class SqlTaskPostgresServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* uri = std::getenv(kPostgresEnv);
    if (uri == nullptr || *uri == '\0') {
      GTEST_SKIP() << "PostgreSQL cases skipped: set FANOUT_TEST_POSTGRES to a libpq URI of a "
                      "database where the tests may create schemas (eval \"$(bash "
                      "scripts/postgres.sh start)\" starts a throwaway server and sets it; "
                      "scripts/test.sh does this)";
    }
    uri_ = uri;
    std::random_device random;
    schema_ =
        "fanout_sql_test_" + std::to_string(getpid()) + "_" + std::to_string(random() % 1000000);
    ASSERT_EQ(Admin("CREATE SCHEMA " + schema_), "");
    Dsn split = SplitPassword(uri_);
    ASSERT_FALSE(split.password.empty()) << "the tests want a URI with a password";
    dsn_ = split.dsn + (split.dsn.find('?') == std::string::npos ? "?" : "&") +
           "options=-csearch_path%3D" + schema_;
    password_ = split.password;
  }
  void TearDown() override {
    if (!schema_.empty()) Admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
  }

  // Runs SQL on a connection of its own; "" or the first value, or "<error: ...>".
  std::string Admin(const std::string& sql) {
    PGconn* conn = PQconnectdb(uri_.c_str());
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);
    PGresult* r = PQexec(conn, sql.c_str());
    std::string out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
      out = std::string("<error: ") + PQerrorMessage(conn) + ">";
    }
    PQclear(r);
    PQfinish(conn);
    return out;
  }

  // The package header: the sensitive password parameter and the connection `db`.
  std::string Header(const std::string& password) {
    return "package: p\nparameters:\n  db_password: {type: string, sensitive: true, value: \"" +
           password +
           "\"}\n  day: {type: string, value: \"2026-11-26\"}\nconnections:\n  db: "
           "{type: postgres, dsn: \"" +
           dsn_ + "\", password: \"${db_password}\"}\n";
  }

  std::string uri_, schema_, dsn_, password_;
};

TEST_F(SqlTaskPostgresServerTest, RunsStatementsWithBindParametersAndEveryResultMode) {
  auto run = RunPackage(Header(password_) + R"yaml(variables:
  total: {type: int, value: 0}
  average: {type: double, value: 0}
  all_positive: {type: bool, value: false}
  missing: {type: string, value: "x"}
  regions: {type: list}
  pairs: {type: list}
tasks:
  create:
    type: sql
    connection: db
    sql: |
      CREATE TABLE orders (day TEXT, region TEXT, amount INTEGER, note TEXT);
      INSERT INTO orders VALUES ('2026-11-26', 'eu', 10, NULL), ('2026-11-26', 'us', 20, NULL);
  bound:
    type: sql
    connection: db
    sql: "INSERT INTO orders VALUES ($1, $2, $3), ($1, 'latam', 5)"
    bind: ["${day}", "apac", "30"]
    after: [create]
  sum:
    type: sql
    connection: db
    sql: |
      SELECT SUM(amount) AS total, AVG(amount)::float8 AS average,
             bool_and(amount > 0) AS all_positive, MAX(note) AS missing
      FROM orders WHERE day = $1
    bind: ["${day}"]
    result: row
    into: {total: total, average: average, all_positive: all_positive, missing: missing}
    after: [bound]
  list:
    type: sql
    connection: db
    sql: "SELECT region FROM orders ORDER BY amount"
    result: rows
    into: regions
    after: [bound]
  pairs:
    type: sql
    connection: db
    sql: "SELECT region, amount FROM orders WHERE amount >= 20 ORDER BY amount"
    result: rows
    into: pairs
    after: [bound]
  check:
    type: process
    run: [/bin/sh, -c, 'test "$0|$1|$2|$3|$4|$5" = "65|16.25|true||[latam, eu, us, apac]|[[us, 20], [apac, 30]]"',
          "${total}", "${average}", "${all_positive}", "${missing}", "${regions}", "${pairs}"]
    after: [sum, list, pairs]
)yaml");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kSuccess) << run->result.message;
  EXPECT_EQ(run->result.succeeded, 6) << run->result.message;
  std::string infos;
  for (const Event& e : run->events) {
    if (e.type == EventType::kOnInformation && e.message.find("row") != std::string::npos) {
      infos += e.source + ": " + e.message + "\n";
    }
  }
  EXPECT_NE(infos.find("create: 2 rows changed"), std::string::npos) << infos;
  EXPECT_NE(infos.find("bound: 2 rows changed"), std::string::npos) << infos;
  EXPECT_NE(infos.find("list: 4 rows"), std::string::npos) << infos;
  EXPECT_NE(infos.find("sum: 1 row\n"), std::string::npos) << infos;
  EXPECT_EQ(run->all_text.find(password_), std::string::npos);
}

// PostgreSQL prints timestamptz with an offset of hours only ("...+00"); it still goes into a
// datetime variable.
TEST_F(SqlTaskPostgresServerTest, ATimestamptzGoesIntoADatetimeVariable) {
  auto run = RunPackage(Header(password_) + R"yaml(variables:
  at: {type: datetime}
  expected: {type: datetime, value: "2026-11-26T01:04:05.5Z"}
  same: {type: bool, value: false}
tasks:
  read:
    type: sql
    connection: db
    sql: "SET TIME ZONE 'UTC'; SELECT '2026-11-26 03:04:05.5+02'::timestamptz AS at"
    result: row
    into: {at: at}
  compare: {type: expression, set: {same: "@at == @expected"}, after: [read]}
  check: {type: process, run: [/bin/sh, -c, 'test "$0" = true', "${same}"], after: [compare]}
)yaml");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kSuccess) << run->result.message;
}

TEST_F(SqlTaskPostgresServerTest, ReportsParameterAndResultMistakesLikeSqlite) {
  struct Case {
    std::string task;
    std::string message;
  };
  std::vector<Case> cases = {
      {R"({type: sql, connection: db, sql: "SELECT $1::int + $2::int", bind: ["1"]})",
       "the SQL has more parameters than `bind` gives (1)"},
      {R"({type: sql, connection: db, sql: "SELECT $1::int", bind: ["1", "2"]})",
       "`bind` gives 2 values but the SQL uses only 1"},
      {R"({type: sql, connection: db, sql: "SELECT ?", bind: ["1"]})",
       "postgres connections take `bind` values as $1, $2, ... in the SQL, not ?"},
      {R"({type: sql, connection: db, sql: "SELECT 1 WHERE false", result: row, into: {a: x}})",
       "`result: row` but the query returned no row"},
      {R"({type: sql, connection: db, sql: "SELECT 1 AS b", result: row, into: {a: x}})",
       "the result has no column 'a'"},
      {R"({type: sql, connection: db, sql: "SELECT * FROM no_such_table"})",
       "SQL error: relation \"no_such_table\" does not exist"},
      {R"x({type: sql, connection: db, sql: "SELECT $1::int; SELECT 2", bind: ["1"]})x",
       "with `bind`, a postgres task runs one statement"},
      {R"x({type: sql, connection: db, sql: "CREATE TABLE t(k int); BEGIN; INSERT INTO t VALUES (7)"})x",
       "left a transaction open"},
  };
  for (const Case& c : cases) {
    auto run = RunPackage(Header(password_) +
                          "variables:\n  x: {type: string}\ntasks:\n  q: " + c.task + "\n");
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    EXPECT_EQ(run->result.result, TaskResult::kFailure) << c.task;
    EXPECT_NE(run->result.message.find(c.message), std::string::npos)
        << c.task << "\n  got: " << run->result.message;
  }
}

TEST_F(SqlTaskPostgresServerTest, WrongPasswordFailsWithoutShowingIt) {
  auto run = RunPackage(Header("wrong-password-xyz") +
                        "tasks:\n  q: {type: sql, connection: db, sql: \"SELECT 1\"}\n");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_NE(run->result.message.find("password authentication failed"), std::string::npos)
      << run->result.message;
  EXPECT_EQ(run->all_text.find("wrong-password-xyz"), std::string::npos) << run->all_text;
  EXPECT_EQ(run->all_text.find(password_), std::string::npos);
}

// A timeout cancels the statement on the server (PQcancel), not just the wait for it.
TEST_F(SqlTaskPostgresServerTest, TimeoutCancelsTheRunningStatement) {
  auto start = std::chrono::steady_clock::now();
  auto run = RunPackage(Header(password_) +
                        "tasks:\n  q: {type: sql, connection: db, timeout: 1s, sql: \"SELECT "
                        "pg_sleep(60) /* fanout-cancel-test-" +
                        schema_ + " */\"}\n");
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->result.result, TaskResult::kFailure);
  EXPECT_NE(run->result.message.find("timed out"), std::string::npos) << run->result.message;
  EXPECT_LT(elapsed, std::chrono::seconds(20));
  EXPECT_EQ(Admin("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE "
                  "'%fanout-cancel-test-" +
                  schema_ +
                  "%' AND pid <> pg_backend_pid() "
                  "AND state = 'active'"),
            "0");
}

}  // namespace
}  // namespace fanout
