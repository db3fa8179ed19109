// The `sql` task: runs SQL (text or file) on a connection with bound parameters, and stores
// the result as SSIS does: none, a single row into variables, or all rows into a list.
// SQLite now; other connection types plug in behind SqlConnection.
#include "tasks/sql/sql_task.h"

#include <sqlite3.h>

#include <fmt/format.h>

#include "common/util.h"

namespace fanout {
namespace {

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

    std::string db_path = context.ResolvePath((*settings)["path"]);
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      std::string err = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close(db);
      return TaskOutcome::Failure(fmt::format("cannot open SQLite database {} (connection {}): {}",
                                              db_path, connection, err));
    }
    sqlite3_busy_timeout(db, 10000);
    // Cancel and timeout interrupt a long statement.
    const CancelToken* token = &context.cancel();
    sqlite3_progress_handler(
        db, 1000, [](void* t) { return static_cast<const CancelToken*>(t)->canceled() ? 1 : 0; },
        const_cast<CancelToken*>(token));

    TaskOutcome outcome = Run(db, text, params, scope, context);
    sqlite3_close(db);
    return outcome;
  }

 private:
  TaskOutcome Run(sqlite3* db, const std::string& text, const std::vector<Value>& params,
                  Scope& scope, TaskContext& context) const {
    const char* tail = text.c_str();
    const char* end = tail + text.size();
    size_t next_param = 0;
    Value::List rows;
    bool got_row = false;
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
      rows.clear();
      got_row = false;
      int rc;
      while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int cols = sqlite3_column_count(stmt);
        if (mode == ResultMode::kRow && !got_row) {
          for (const auto& [column, var] : into_row) {
            int found = -1;
            for (int c = 0; c < cols; ++c) {
              if (column == sqlite3_column_name(stmt, c)) found = c;
            }
            if (found < 0) {
              sqlite3_finalize(stmt);
              return TaskOutcome::Failure(fmt::format("the result has no column '{}'", column));
            }
            Status s = scope.Set(var, ColumnValue(stmt, found));
            if (!s.ok()) {
              sqlite3_finalize(stmt);
              return TaskOutcome::Failure(s.message());
            }
          }
        } else if (mode == ResultMode::kRows) {
          if (cols == 1) {
            rows.push_back(ColumnValue(stmt, 0));
          } else {
            Value::List row;
            for (int c = 0; c < cols; ++c) row.push_back(ColumnValue(stmt, c));
            rows.emplace_back(std::move(row));
          }
        }
        got_row = true;
      }
      if (rc != SQLITE_DONE) {
        std::string err = rc == SQLITE_INTERRUPT ? "interrupted" : sqlite3_errmsg(db);
        sqlite3_finalize(stmt);
        return TaskOutcome::Failure(fmt::format("SQL error: {}", err));
      }
      changes += sqlite3_changes(db);
      sqlite3_finalize(stmt);
    }
    if (next_param < params.size()) {
      return TaskOutcome::Failure(fmt::format("`bind` gives {} values but the SQL uses only {}",
                                              params.size(), next_param));
    }
    if (mode == ResultMode::kRow && !got_row) {
      return TaskOutcome::Failure("`result: row` but the query returned no row");
    }
    if (mode == ResultMode::kRows) {
      size_t n = rows.size();
      Status s = scope.Set(into_rows, Value(std::move(rows)));
      if (!s.ok()) return TaskOutcome::Failure(s.message());
      context.Emit(EventType::kOnInformation, fmt::format("{} rows", n), static_cast<int64_t>(n));
    } else {
      context.Emit(EventType::kOnInformation, fmt::format("{} rows changed", changes), changes);
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
      parser.CheckConnection(node["connection"], *c, {"sqlite"});
    }
    task->sql = parser.TemplateAt(node, "sql", false);
    task->file = parser.TemplateAt(node, "file", false);
    if (!node["sql"] == !node["file"]) {
      parser.Error(node, "an sql task needs exactly one of `sql` (the statement) or `file`");
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
