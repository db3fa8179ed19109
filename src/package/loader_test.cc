// Tests of the package loader (LoadPackageText / ParsePackage): every key of the format, defaults,
// typed values, precedence resolution, and the diagnostics with their file:line:column.
// The tasks module is not linked here, so the tests register small task types of their own.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/util.h"
#include "fanout/package.h"
#include "fanout/task.h"

namespace fanout {
namespace {

// ---- Task types of the tests ------------------------------------------------------------------

// What a `noop` task's keys parsed to, so tests can check the TaskParser services.
struct NoopTask : Task {
  std::optional<Template> message;
  std::string connection_type;
  std::string set;
  std::optional<int64_t> count;
  std::vector<Template> args;
  std::map<std::string, Template> env;
  std::optional<Expression> check;
  std::optional<bool> flag;
  std::string package_dir;
  TaskOutcome Execute(TaskContext&) const override { return TaskOutcome::Success(); }
};

class NoopType : public TaskType {
 public:
  std::string_view name() const override { return "noop"; }
  std::vector<std::string_view> keys() const override {
    return {"message", "connection", "pg_connection", "set",  "count",
            "args",    "env",        "check",         "flag", "unparseable"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto t = std::make_shared<NoopTask>();
    t->message = parser.TemplateAt(node, "message", false);
    if (auto c = parser.StringAt(node, "connection", false)) {
      t->connection_type = parser.CheckConnection(node["connection"], *c, {"sqlite"});
    }
    if (auto c = parser.StringAt(node, "pg_connection", false)) {
      parser.CheckConnection(node["pg_connection"], *c, {"postgres"});
    }
    if (auto s = parser.StringAt(node, "set", false)) {
      parser.CheckVariable(node["set"], *s);
      t->set = *s;
    }
    t->count = parser.IntAt(node, "count");
    t->args = parser.TemplateListAt(node, "args", false);
    t->env = parser.TemplateMapAt(node, "env");
    t->check = parser.ExpressionAt(node, "check", false);
    t->flag = parser.BoolAt(node, "flag");
    t->package_dir = parser.package_dir();
    if (parser.BoolAt(node, "unparseable").value_or(false)) return nullptr;
    return t;
  }
};

// A type with required keys.
class NeedyType : public TaskType {
 public:
  std::string_view name() const override { return "needy"; }
  std::vector<std::string_view> keys() const override { return {"run", "what"}; }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto run = parser.TemplateListAt(node, "run", true);
    auto what = parser.StringAt(node, "what", true);
    if (run.empty() || !what) return nullptr;
    return std::make_shared<NoopTask>();
  }
};

// ---- Helpers ----------------------------------------------------------------------------------

struct LineCol {
  int line = 0;
  int column = 0;
};

// 1-based line and column of the `nth` occurrence of `needle` in `text`.
LineCol Find(const std::string& text, const std::string& needle, int nth = 0) {
  size_t at = text.find(needle);
  for (int i = 0; i < nth && at != std::string::npos; ++i) at = text.find(needle, at + 1);
  if (at == std::string::npos) {
    ADD_FAILURE() << "'" << needle << "' not in the test text";
    return {};
  }
  LineCol lc{1, 1};
  for (size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++lc.line;
      lc.column = 1;
    } else {
      ++lc.column;
    }
  }
  return lc;
}

class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RegisterTaskType(std::make_unique<NoopType>());
    RegisterTaskType(std::make_unique<NeedyType>());
  }

  // Loads text that must be valid.
  std::shared_ptr<const Package> Load(const std::string& text,
                                      const std::string& path = "/pkgs/demo.yaml") {
    Diagnostics diags;
    auto r = LoadPackageText(text, path, diags);
    EXPECT_TRUE(r.ok()) << r.status().ToString() << "\n" << diags.ToString();
    EXPECT_TRUE(diags.empty()) << diags.ToString();
    return r.ok() ? *r : nullptr;
  }

  // Loads text that must be invalid; the diagnostics are kept in diags_.
  void LoadBad(const std::string& text) {
    diags_ = Diagnostics();
    text_ = text;
    auto r = LoadPackageText(text, "/pkgs/bad.yaml", diags_);
    EXPECT_FALSE(r.ok()) << "loaded without problems:\n" << text;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    }
    EXPECT_FALSE(diags_.empty());
  }

  // The diagnostic whose message contains `part`, or null (with a failure listing them all).
  const Diagnostic* Diag(const std::string& part) {
    for (const Diagnostic& d : diags_.items()) {
      if (d.message.find(part) != std::string::npos) return &d;
    }
    ADD_FAILURE() << "no diagnostic contains \"" << part << "\"; got:\n" << diags_.ToString();
    return nullptr;
  }

  // Expects a diagnostic containing `part` at the position of `needle` in the loaded text.
  void ExpectDiagAt(const std::string& part, const std::string& needle, int nth = 0,
                    int column_offset = 0) {
    const Diagnostic* d = Diag(part);
    if (d == nullptr) return;
    LineCol want = Find(text_, needle, nth);
    EXPECT_EQ(d->pos.file, "/pkgs/bad.yaml");
    EXPECT_EQ(d->pos.line, want.line) << d->ToString();
    EXPECT_EQ(d->pos.column, want.column + column_offset) << d->ToString();
  }

  // An expression error's message up to its first column, which the loader turns from the
  // expression's into the file's.
  static std::string WhatFailed(const ExpressionError& err) {
    return err.message.substr(0, err.message.find(" at column"));
  }

  int CountDiags(const std::string& part) const {
    return static_cast<int>(std::count_if(
        diags_.items().begin(), diags_.items().end(),
        [&](const Diagnostic& d) { return d.message.find(part) != std::string::npos; }));
  }

  static const NoopTask& Noop(const TaskDef& t) {
    auto* noop = dynamic_cast<const NoopTask*>(t.task.get());
    if (noop == nullptr) std::abort();
    return *noop;
  }

  Diagnostics diags_;
  std::string text_;
};

// ---- The package and its defaults -------------------------------------------------------------

TEST_F(LoaderTest, MinimalPackageGetsDefaults) {
  const std::string text = "package: demo\ntasks:\n  a: {type: noop}\n";
  auto pkg = Load(text);
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->name, "demo");
  EXPECT_EQ(pkg->description, "");
  EXPECT_EQ(pkg->path, "/pkgs/demo.yaml");
  EXPECT_EQ(pkg->dir, "/pkgs");
  EXPECT_EQ(pkg->sha256, Sha256Hex(text));
  EXPECT_EQ(pkg->max_concurrent, 0) << "0 means cores + 2";
  EXPECT_EQ(pkg->maximum_error_count, 1);
  EXPECT_TRUE(pkg->parameters.empty());
  EXPECT_TRUE(pkg->variables.empty());
  EXPECT_TRUE(pkg->connections.empty());
  EXPECT_TRUE(pkg->logging.empty());
  ASSERT_EQ(pkg->tasks.size(), 1u);
  const TaskDef& a = pkg->tasks[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.type, "noop");
  EXPECT_EQ(a.description, "");
  EXPECT_EQ(a.pos.line, 3);
  EXPECT_EQ(a.pos.column, 3);
  EXPECT_TRUE(a.after.empty());
  EXPECT_FALSE(a.after_or);
  EXPECT_FALSE(a.disabled);
  EXPECT_FALSE(a.fail_package_on_failure);
  EXPECT_FALSE(a.timeout.has_value());
  EXPECT_EQ(a.retries, 0);
  EXPECT_EQ(a.retry_delay.count(), 0);
  EXPECT_EQ(a.container, ContainerKind::kNone);
  EXPECT_FALSE(a.is_container());
  EXPECT_EQ(a.maximum_error_count, 1);
  EXPECT_EQ(a.foreach_max_concurrent, 1);
  EXPECT_TRUE(a.successors.empty());
  ASSERT_NE(a.task, nullptr);
  EXPECT_EQ(Noop(a).package_dir, "/pkgs");
}

TEST_F(LoaderTest, RelativePathHasDotAsFolder) {
  auto pkg = Load("package: demo\ntasks:\n  a: {type: noop}\n", "demo.yaml");
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->dir, ".");
  EXPECT_EQ(pkg->path, "demo.yaml");
}

TEST_F(LoaderTest, ReadsPackageLevelKeys) {
  auto pkg = Load(R"(package: nightly-orders.v2
description: Load every region
max_concurrent: 8
maximum_error_count: 3
tasks:
  a: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->name, "nightly-orders.v2");
  EXPECT_EQ(pkg->description, "Load every region");
  EXPECT_EQ(pkg->max_concurrent, 8);
  EXPECT_EQ(pkg->maximum_error_count, 3);
}

TEST_F(LoaderTest, MaxConcurrentMinusOneMeansCoresPlusTwo) {
  auto pkg = Load("package: demo\nmax_concurrent: -1\ntasks:\n  a: {type: noop}\n");
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->max_concurrent, 0);
}

TEST_F(LoaderTest, RejectsBadPackageLevelValues) {
  LoadBad(R"(package: "bad name!"
max_concurrent: 0
maximum_error_count: 0
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("package name 'bad name!' must match", "\"bad name!\"");
  ExpectDiagAt("max_concurrent must be at least 1", "0\n");
  ExpectDiagAt("maximum_error_count must be at least 1", "0\n", 1);

  LoadBad("package: demo\nmax_concurrent: lots\ntasks:\n  a: {type: noop}\n");
  ExpectDiagAt("`max_concurrent` must be a whole number", "lots");
  // Whole, but too large (QA: it said "must be a whole number").
  LoadBad("package: demo\nmax_concurrent: 99999999999999999999\ntasks:\n  a: {type: noop}\n");
  ExpectDiagAt("`max_concurrent` is out of range: 99999999999999999999", "9999");

  LoadBad("package: demo\nmax_concurrent: -2\ntasks:\n  a: {type: noop}\n");
  Diag("max_concurrent must be at least 1");
}

TEST_F(LoaderTest, RequiresPackageAndTasks) {
  LoadBad("description: nothing\n");
  Diag("missing required key `package`");
  Diag("a package needs `tasks:`");
}

TEST_F(LoaderTest, UnknownTopLevelKeyNamesTheAllowedOnes) {
  LoadBad("package: demo\nowner: me\ntasks:\n  a: {type: noop}\n");
  ExpectDiagAt("unknown key `owner` in package", "owner");
  const Diagnostic* d = Diag("unknown key `owner`");
  ASSERT_NE(d, nullptr);
  EXPECT_NE(d->message.find("allowed: package, description, max_concurrent"), std::string::npos)
      << d->message;
}

TEST_F(LoaderTest, NotAMappingIsReportedAtTheStart) {
  Diagnostics diags;
  auto pkg = ParsePackage("- a\n- b\n", "/pkgs/list.yaml", diags);
  EXPECT_EQ(pkg, nullptr);
  ASSERT_EQ(diags.items().size(), 1u);
  EXPECT_EQ(diags.items()[0].pos.line, 1);
  EXPECT_EQ(diags.items()[0].pos.column, 1);
  EXPECT_NE(diags.items()[0].message.find("YAML mapping"), std::string::npos);

  Diagnostics empty;
  EXPECT_FALSE(LoadPackageText("", "/pkgs/empty.yaml", empty).ok());
  EXPECT_FALSE(empty.empty());
}

TEST_F(LoaderTest, InvalidYamlHasAPosition) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop\n  b: [\n");
  ASSERT_EQ(diags_.items().size(), 1u);
  const Diagnostic& d = diags_.items()[0];
  EXPECT_NE(d.message.find("not valid YAML"), std::string::npos) << d.message;
  EXPECT_GE(d.pos.line, 3) << d.ToString();
  EXPECT_GE(d.pos.column, 1);
}

// yaml-cpp says an unclosed `{` or `[` at the end of the file: the one never closed is named.
TEST_F(LoaderTest, AnUnclosedFlowNamesWhereItOpens) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, d: \"{ # not a brace\"\n"
          "  b: {type: noop} # {\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  EXPECT_NE(diags_.items()[0].message.find("end of map flow not found; the `{` at line 3, column 6 "
                                           "is never closed"),
            std::string::npos)
      << diags_.ToString();
}

// YAML reads a plain key of 1,024 characters at most; yaml-cpp said only "illegal map value".
TEST_F(LoaderTest, AKeyOverYamlsLengthLimitIsNamed) {
  LoadBad("package: demo\ntasks:\n  " + std::string(1025, 'a') + ": {type: noop}\n");
  ASSERT_EQ(diags_.items().size(), 1u);
  EXPECT_EQ(diags_.items()[0].message,
            "not valid YAML: a key of 1025 characters: YAML reads a key of 1024 characters at most");
  // Other places of that error keep yaml-cpp's words.
  LoadBad("package: demo\ntasks:\n  a: b: c\n");
  EXPECT_EQ(diags_.items().back().message, "not valid YAML: illegal map value");
}

// A constraint to a task of another container names where that task is and what to do.
TEST_F(LoaderTest, AConstraintToATaskOfAnotherContainerSaysWhereItIs) {
  LoadBad("package: demo\ntasks:\n  seq:\n    type: sequence\n    tasks:\n"
          "      inner: {type: noop}\n  b: {type: noop, after: [inner]}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  EXPECT_NE(diags_.items()[0].message.find("('inner' is task seq/inner, in another container: a "
                                           "constraint joins tasks of one container, so put it "
                                           "on the container holding that task)"),
            std::string::npos)
      << diags_.ToString();
}

// The same constraint twice is a slip that was taken silently; different ones from one task are
// allowed (ReadsEveryFormOfAfter).
TEST_F(LoaderTest, TheSameConstraintTwiceIsAnError) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop}\n"
          "  b: {type: noop, after: [a, {task: a, on: success}]}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  EXPECT_EQ(diags_.items()[0].pos.line, 4);
  EXPECT_EQ(diags_.items()[0].message, "`after` holds the same constraint on task 'a' twice");
}

// yaml-cpp reads `<<` as an ordinary key: the keys it should merge were missing without a word.
TEST_F(LoaderTest, AMergeKeyIsNamed) {
  LoadBad("package: demo\ntasks:\n  a: &base {type: noop}\n  b:\n    <<: *base\n    after: [a]\n");
  EXPECT_NE(diags_.ToString().find("bad.yaml:5:5: error: YAML merge keys (`<<: *anchor`) are not "
                                   "supported"),
            std::string::npos)
      << diags_.ToString();
  LoadBad("package: demo\ntasks:\n  a: &base {type: noop}\n  b: {<<: *base, type: noop}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  EXPECT_NE(diags_.items()[0].message.find("merge keys"), std::string::npos);
}

// An entry left empty (`x:` alone) is pointed at on its own line, not on the next section's,
// where yaml-cpp places an empty value.
TEST_F(LoaderTest, AnEmptyEntryIsPointedAtByItsName) {
  LoadBad("package: demo\nvariables:\n  x:\nconnections:\n  db:\ntasks:\n  e:\n");
  std::vector<int> lines;
  for (const auto& item : diags_.items()) lines.push_back(item.pos.line);
  EXPECT_EQ(lines, (std::vector<int>{3, 5, 7})) << diags_.ToString();
}

TEST_F(LoaderTest, ParsePackageKeepsGoingWhenThereAreProblems) {
  Diagnostics diags;
  auto pkg = ParsePackage("package: demo\ncolour: red\ntasks:\n  a: {type: noop}\n",
                          "/pkgs/demo.yaml", diags);
  ASSERT_NE(pkg, nullptr) << "validate needs the parsed package even with problems";
  EXPECT_EQ(diags.items().size(), 1u);
  EXPECT_EQ(pkg->name, "demo");
  ASSERT_EQ(pkg->tasks.size(), 1u);
}

// ---- Parameters and variables -----------------------------------------------------------------

TEST_F(LoaderTest, ReadsTypedParameters) {
  auto pkg = Load(R"(package: demo
parameters:
  run_date: {type: string, required: true, description: the day}
  db_password: {type: string, sensitive: true}
  limit: {type: int, value: 10}
  ratio: {type: double, value: 0.5}
  dry: {type: bool, value: true}
  since: {type: datetime, value: "2026-01-02T03:04:05Z"}
  regions: {type: list, value: [eu, us]}
  plain:
tasks:
  a: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->parameters.size(), 8u);
  const ParameterDef* run_date = pkg->FindParameter("run_date");
  ASSERT_NE(run_date, nullptr);
  EXPECT_EQ(run_date->type, ValueType::kString);
  EXPECT_TRUE(run_date->required);
  EXPECT_FALSE(run_date->sensitive);
  EXPECT_EQ(run_date->description, "the day");
  EXPECT_FALSE(run_date->default_value.has_value());
  EXPECT_EQ(run_date->pos.line, 3);
  EXPECT_EQ(run_date->pos.column, 3);

  const ParameterDef* pw = pkg->FindParameter("db_password");
  ASSERT_NE(pw, nullptr);
  EXPECT_TRUE(pw->sensitive);
  EXPECT_FALSE(pw->required);

  const ParameterDef* limit = pkg->FindParameter("limit");
  ASSERT_NE(limit, nullptr);
  EXPECT_EQ(limit->type, ValueType::kInt);
  ASSERT_TRUE(limit->default_value.has_value());
  EXPECT_EQ(*limit->default_value, Value(int64_t{10}));

  EXPECT_EQ(*pkg->FindParameter("ratio")->default_value, Value(0.5));
  EXPECT_EQ(*pkg->FindParameter("dry")->default_value, Value(true));
  auto since = ParseDateTime("2026-01-02T03:04:05Z");
  ASSERT_TRUE(since.ok());
  EXPECT_EQ(*pkg->FindParameter("since")->default_value, Value(*since));
  EXPECT_EQ(*pkg->FindParameter("regions")->default_value,
            Value(Value::List{Value("eu"), Value("us")}));

  const ParameterDef* plain = pkg->FindParameter("plain");
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->type, ValueType::kString);
  EXPECT_FALSE(plain->default_value.has_value());
  EXPECT_EQ(pkg->FindParameter("nope"), nullptr);
}

// YAML 1.2's booleans only: `no` is Norway, `on`, `y` and `Yes` are words.
TEST_F(LoaderTest, ListItemsAreBoolsOnlyWhenTrueOrFalse) {
  auto pkg = Load(R"(package: demo
variables:
  countries: {type: list, value: [se, no, dk, n, y, on, off, Yes, True, false]}
tasks:
  a: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->FindVariable("countries")->value,
            Value(Value::List{Value("se"), Value("no"), Value("dk"), Value("n"), Value("y"),
                              Value("on"), Value("off"), Value("Yes"), Value(true),
                              Value(false)}));
}

TEST_F(LoaderTest, ReadsTypedVariablesWithDefaults) {
  auto pkg = Load(R"(package: demo
variables:
  rows: {type: int, value: 42}
  items: {type: list, value: [eu, 3, 1.5, true, "7"]}
  label: {value: hello}
  ratio: {type: double}
  empty_list: {type: list}
  stamp: {type: datetime, value: "2026-11-26"}
  fixed: {type: string, value: x, read_only: true}
  watched: {type: int, raise_changed_event: true, description: counts}
tasks:
  a: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->variables.size(), 8u);
  EXPECT_EQ(pkg->variables[0].name, "rows") << "declaration order is kept";
  const VariableDef* rows = pkg->FindVariable("rows");
  ASSERT_NE(rows, nullptr);
  EXPECT_EQ(rows->type, ValueType::kInt);
  EXPECT_EQ(rows->value, Value(int64_t{42}));
  EXPECT_FALSE(rows->read_only);
  EXPECT_FALSE(rows->raise_changed_event);

  // List items keep the type YAML gives them; a quoted item stays a string.
  const VariableDef* items = pkg->FindVariable("items");
  ASSERT_NE(items, nullptr);
  EXPECT_EQ(items->type, ValueType::kList);
  EXPECT_EQ(items->value, Value(Value::List{Value("eu"), Value(int64_t{3}), Value(1.5), Value(true),
                                            Value("7")}));

  EXPECT_EQ(pkg->FindVariable("label")->type, ValueType::kString);
  EXPECT_EQ(pkg->FindVariable("label")->value, Value("hello"));
  EXPECT_EQ(pkg->FindVariable("ratio")->value, Value(0.0));
  EXPECT_EQ(pkg->FindVariable("empty_list")->value, Value(Value::List{}));
  auto stamp = ParseDateTime("2026-11-26");
  ASSERT_TRUE(stamp.ok());
  EXPECT_EQ(pkg->FindVariable("stamp")->value, Value(*stamp));
  EXPECT_TRUE(pkg->FindVariable("fixed")->read_only);
  const VariableDef* watched = pkg->FindVariable("watched");
  EXPECT_TRUE(watched->raise_changed_event);
  EXPECT_EQ(watched->value, Value(int64_t{0}));
  EXPECT_EQ(pkg->FindVariable("nope"), nullptr);
}

TEST_F(LoaderTest, RejectsValuesThatDoNotFitTheirType) {
  LoadBad(R"(package: demo
parameters:
  p_int: {type: int, value: abc}
  p_pin: {type: int, sensitive: true, value: MyPinSecret99}
  p_kind: {type: number}
variables:
  v_list: {type: int, value: [1, 2]}
  v_scalar: {type: list, value: eu}
  v_bool: {type: bool, value: maybe}
  v_nested: {type: list, value: [[a, [b]]]}
  v_map: {type: list, value: [{a: 1}]}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("cannot convert", "abc");
  ExpectDiagAt("the sensitive value does not convert to int", "MyPinSecret99");
  for (const Diagnostic& d : diags_.items()) {
    EXPECT_EQ(d.message.find("MyPinSecret99"), std::string::npos) << d.message;
  }
  ExpectDiagAt("unknown type 'number'", "number");
  ExpectDiagAt("a list given where the type is int", "[1, 2]");
  ExpectDiagAt("needs a YAML list value", "eu}");
  ExpectDiagAt("to bool", "maybe");
  ExpectDiagAt("a row of a list holds scalars", "[b]");
  ExpectDiagAt("list items are scalars or rows of scalars", "{a: 1}");
}

// A kilobyte of nested YAML aliases holds half a million tasks: refused once it passes
// 200,000, rather than read for seconds into hundreds of megabytes.
TEST_F(LoaderTest, AnAliasBombOfTasksIsRefused) {
  std::string yaml = "package: bomb\nx:\n  t0: &t0 {type: noop}\n";
  for (int level = 1; level <= 19; ++level) {
    std::string prev = "*t" + std::to_string(level - 1);
    yaml += "  t" + std::to_string(level) + ": &t" + std::to_string(level) +
            " {type: sequence, tasks: {a: " + prev + ", b: " + prev + "}}\n";
  }
  yaml += "tasks:\n  top: *t19\n";
  LoadBad(yaml);
  EXPECT_NE(Diag("more than 200000 tasks"), nullptr);
  EXPECT_EQ(CountDiags("more than 200000 tasks"), 1) << "said once";
}

TEST_F(LoaderTest, RejectsMalformedDeclarations) {
  LoadBad(R"(package: demo
parameters:
  p: [1, 2]
  q: {type: string, secret: true}
variables:
  v: 5
  "bad name": {type: int}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("a parameter is a mapping", "[1, 2]");
  ExpectDiagAt("unknown key `secret` in parameter 'q'", "secret");
  ExpectDiagAt("a variable is a mapping", "5\n");
  ExpectDiagAt("name 'bad name' in `variables` must match", "\"bad name\"");
}

TEST_F(LoaderTest, ParametersAndVariablesShareOneNamespace) {
  LoadBad(R"(package: demo
parameters:
  region: {type: string}
variables:
  region: {type: string}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("'region' is declared twice", "region", 1);
}

TEST_F(LoaderTest, DuplicateNamesAreReported) {
  LoadBad(R"(package: demo
variables:
  rows: {type: int}
  rows: {type: int}
tasks:
  a: {type: noop}
  b: {type: noop}
  a: {type: noop}
)");
  ExpectDiagAt("duplicate name 'rows' in `variables`", "rows", 1);
  ExpectDiagAt("duplicate name 'a' in `tasks`", "  a:", 1, 2);
}

TEST_F(LoaderTest, DuplicateKeysInATaskAreReported) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, count: 1, count: 2}\n");
  ExpectDiagAt("duplicate key `count`", "count", 1);
}

// An assignment's unknown target was reported twice (as read and as written), counting two.
TEST_F(LoaderTest, AnUnknownAssignmentTargetIsOneProblem) {
  LoadBad("package: demo\nvariables:\n  i: {type: int}\ntasks:\n  l:\n    type: for\n"
          "    init: \"@x = 1\"\n    condition: \"@i < 3\"\n    assign: \"@i = @i + @y\"\n"
          "    tasks:\n      a: {type: noop}\n");
  EXPECT_EQ(CountDiags("'x'"), 1) << diags_.ToString();
  ExpectDiagAt("unknown variable 'x'; declare it under `variables:`", "\"@x");
  ExpectDiagAt("unknown variable or parameter 'y'", "@y", 0, 1);
}

// Maps of free names (env, an expression's set, params) were not checked: one of the values went
// silently. Each duplicate is said once, also where a specific check already said it.
TEST_F(LoaderTest, DuplicateKeysAnywhereAreReportedOnce) {
  LoadBad("package: demo\ntasks:\n"
          "  a: {type: noop, env: {XX: \"1\", XX: \"2\"}}\n"
          "  b: {type: noop, count: 1, count: 2}\n");
  ExpectDiagAt("duplicate key `XX`", "XX", 1);
  ExpectDiagAt("duplicate key `count` in task 'b'", "count", 1);
  EXPECT_EQ(CountDiags("duplicate"), 2) << diags_.ToString();
}

// ---- Connections and logging ------------------------------------------------------------------

TEST_F(LoaderTest, ReadsConnections) {
  auto pkg = Load(R"(package: demo
parameters:
  db_dir: {type: string, value: /data}
connections:
  warehouse: {type: sqlite, path: "${db_dir}/w.db"}
tasks:
  a: {type: noop, connection: warehouse}
)");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->connections.size(), 1u);
  const ConnectionDef& c = pkg->connections.at("warehouse");
  EXPECT_EQ(c.name, "warehouse");
  EXPECT_EQ(c.type, "sqlite");
  EXPECT_EQ(c.pos.line, 5);
  ASSERT_EQ(c.settings.count("path"), 1u);
  EXPECT_EQ(c.settings.at("path").text(), "${db_dir}/w.db");
  EXPECT_FALSE(c.settings.at("path").is_constant());
  EXPECT_EQ(Noop(pkg->tasks[0]).connection_type, "sqlite");
}

TEST_F(LoaderTest, RejectsBadConnections) {
  LoadBad(R"(package: demo
connections:
  ora: {type: oracle, dsn: x}
  nopath: {type: sqlite}
  extra: {type: sqlite, path: a.db, user: me}
  templ: {type: sqlite, path: "${nope}.db"}
  notamap: sqlite
  notype: {path: a.db}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("unknown connection type 'oracle'; allowed: sqlite, postgres", "oracle");
  ExpectDiagAt("missing required key `path`", "{type: sqlite}");
  ExpectDiagAt("unknown key `user` in connection 'extra'", "user");
  ExpectDiagAt("unknown variable or parameter 'nope'", "${nope}.db", 0, 2);
  ExpectDiagAt("a connection is a mapping", "sqlite\n");
  ExpectDiagAt("missing required key `type`", "{path: a.db}");
}

TEST_F(LoaderTest, TasksCheckTheConnectionsTheyName) {
  LoadBad(R"(package: demo
connections:
  warehouse: {type: sqlite, path: w.db}
tasks:
  a: {type: noop, connection: nowhere}
  b: {type: noop, pg_connection: warehouse}
)");
  ExpectDiagAt("unknown connection 'nowhere'; known: warehouse", "nowhere");
  ExpectDiagAt("connection 'warehouse' is of type sqlite; this task needs postgres", "warehouse",
               1);
}

TEST_F(LoaderTest, MissingConnectionSaysWhatToDeclare) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, connection: db}\n");
  ExpectDiagAt("unknown connection 'db'; declare one of type sqlite under `connections:`", "db}");
}

TEST_F(LoaderTest, ReadsLogging) {
  auto pkg = Load(R"(package: demo
logging:
  - {provider: text, path: run.log, events: [OnError, OnWarning, OnPostExecute]}
  - {provider: jsonl, path: run.jsonl}
  - {provider: console}
tasks:
  a: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->logging.size(), 3u);
  EXPECT_EQ(pkg->logging[0].provider, "text");
  EXPECT_EQ(pkg->logging[0].path, "run.log");
  EXPECT_EQ(pkg->logging[0].events,
            (std::vector<EventType>{EventType::kOnError, EventType::kOnWarning,
                                    EventType::kOnPostExecute}));
  EXPECT_EQ(pkg->logging[0].pos.line, 3);
  EXPECT_EQ(pkg->logging[1].provider, "jsonl");
  EXPECT_TRUE(pkg->logging[1].events.empty()) << "empty means all events";
  EXPECT_EQ(pkg->logging[2].provider, "console");
  EXPECT_EQ(pkg->logging[2].path, "");
}

TEST_F(LoaderTest, LoggingEventNamesIgnoreCase) {
  auto pkg = Load(
      "package: demo\nlogging:\n  - {provider: console, events: [onerror, ONWARNING]}\n"
      "tasks:\n  a: {type: noop}\n");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->logging.size(), 1u);
  EXPECT_EQ(pkg->logging[0].events,
            (std::vector<EventType>{EventType::kOnError, EventType::kOnWarning}));
}

TEST_F(LoaderTest, RejectsBadLogging) {
  LoadBad(R"(package: demo
logging:
  - {provider: syslog}
  - {provider: text}
  - {provider: jsonl, path: x.jsonl, events: [OnNothing]}
  - {provider: console, level: high}
  - console
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("unknown log provider 'syslog'", "syslog");
  ExpectDiagAt("missing required key `path`", "{provider: text}");
  ExpectDiagAt("OnNothing", "OnNothing");
  const Diagnostic* unknown_event = Diag("unknown event 'OnNothing'");
  ASSERT_NE(unknown_event, nullptr);
  EXPECT_NE(unknown_event->message.find("known events: OnPreExecute"), std::string::npos)
      << "the message lists the events: " << unknown_event->message;
  ExpectDiagAt("unknown key `level` in logging entry", "level");
  ExpectDiagAt("a logging entry is a mapping", "console\n");

  LoadBad("package: demo\nlogging: {provider: text}\ntasks:\n  a: {type: noop}\n");
  Diag("`logging` must be a list");
  // QA: a console entry's path was ignored without a word.
  LoadBad("package: demo\nlogging:\n  - {provider: console, path: z}\ntasks:\n  a: {type: noop}\n");
  ExpectDiagAt("the console provider writes to the terminal and takes no `path`", "z}");
  LoadBad("package: demo\nlogging:\n  - {provider: text, path: \"\"}\ntasks:\n  a: {type: noop}\n");
  ExpectDiagAt("`path` names the log file; it is empty", "\"\"}");
}

// ---- Tasks: common keys -----------------------------------------------------------------------

TEST_F(LoaderTest, ReadsEveryCommonTaskKey) {
  auto pkg = Load(R"(package: demo
tasks:
  first: {type: noop}
  second: {type: noop}
  t:
    type: noop
    description: does things
    after: [first, second]
    after_logic: or
    disabled: true
    fail_package_on_failure: true
    timeout: 10m
    retries: 2
    retry_delay: 250ms
  u: {type: noop, timeout: "0", after_logic: and, retry_delay: 2, disabled: false}
)");
  ASSERT_NE(pkg, nullptr);
  ASSERT_EQ(pkg->tasks.size(), 4u);
  const TaskDef& t = pkg->tasks[2];
  EXPECT_EQ(t.name, "t");
  EXPECT_EQ(t.description, "does things");
  ASSERT_EQ(t.after.size(), 2u);
  EXPECT_TRUE(t.after_or);
  EXPECT_TRUE(t.disabled);
  EXPECT_TRUE(t.fail_package_on_failure);
  ASSERT_TRUE(t.timeout.has_value());
  EXPECT_EQ(*t.timeout, std::chrono::minutes(10));
  EXPECT_EQ(t.retries, 2);
  EXPECT_EQ(t.retry_delay, std::chrono::milliseconds(250));

  const TaskDef& u = pkg->tasks[3];
  EXPECT_FALSE(u.timeout.has_value()) << "timeout 0 means none";
  EXPECT_FALSE(u.after_or);
  EXPECT_FALSE(u.disabled);
  EXPECT_EQ(u.retry_delay, std::chrono::seconds(2));
}

TEST_F(LoaderTest, RejectsBadCommonTaskValues) {
  LoadBad(R"(package: demo
tasks:
  a:
    type: noop
    retries: -1
    timeout: soon
    retry_delay: 5x
    after_logic: xor
    disabled: maybe
    fail_package_on_failure: 3
  b: {type: noop, retries: many}
)");
  ExpectDiagAt("`retries` must be 0 or more", "-1");
  ExpectDiagAt("'soon' is not a duration", "soon");
  ExpectDiagAt("'5x' is not a duration", "5x");
  ExpectDiagAt("`after_logic` must be `and`", "xor");
  ExpectDiagAt("`disabled` must be true or false", "maybe");
  ExpectDiagAt("`fail_package_on_failure` must be true or false", "3\n");
  ExpectDiagAt("`retries` must be a whole number", "many");
}

TEST_F(LoaderTest, UnknownTaskKeyNamesTheTaskAndTheAllowedKeys) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, colour: red}\n");
  ExpectDiagAt("unknown key `colour` in task 'a'", "colour");
  const Diagnostic* d = Diag("unknown key `colour`");
  ASSERT_NE(d, nullptr);
  // Both the keys every task has and the type's own keys are allowed.
  EXPECT_NE(d->message.find("after"), std::string::npos) << d->message;
  EXPECT_NE(d->message.find("retry_delay"), std::string::npos) << d->message;
  EXPECT_NE(d->message.find("message"), std::string::npos) << d->message;
}

TEST_F(LoaderTest, ContainerKeysAreNotAllowedOnLeafTasks) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, items: [1]}\n");
  ExpectDiagAt("unknown key `items` in task 'a'", "items");
}

TEST_F(LoaderTest, UnknownOrMissingTaskType) {
  LoadBad(R"(package: demo
tasks:
  a: {type: nosuch}
  b: {description: no type}
  c: just text
  "bad name": {type: noop}
)");
  ExpectDiagAt("unknown task type 'nosuch' in task 'a'", "nosuch");
  const Diagnostic* d = Diag("unknown task type");
  ASSERT_NE(d, nullptr);
  for (const char* allowed : {"foreach", "for", "noop", "needy", "sequence"}) {
    EXPECT_NE(d->message.find(allowed), std::string::npos) << allowed << ": " << d->message;
  }
  ExpectDiagAt("missing required key `type`", "{description");
  ExpectDiagAt("task 'c' must be a mapping", "just text");
  ExpectDiagAt("name 'bad name' in `tasks` must match", "\"bad name\"");
}

TEST_F(LoaderTest, TasksMustBeAMapping) {
  LoadBad("package: demo\ntasks: [a, b]\n");
  ExpectDiagAt("`tasks` must be a mapping", "[a, b]");
}

TEST_F(LoaderTest, TypeParseFailureWithoutAMessageStillFails) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, unparseable: true}\n");
  ExpectDiagAt("task 'a' could not be parsed", "{type");
}

TEST_F(LoaderTest, RequiredTypeKeysAreReported) {
  LoadBad("package: demo\ntasks:\n  a: {type: needy}\n  b: {type: needy, run: x, what: y}\n");
  ExpectDiagAt("missing required key `run` (a list)", "{type: needy}");
  ExpectDiagAt("missing required key `what`", "{type: needy}");
  ExpectDiagAt("`run` must be a list", "x,");
  EXPECT_EQ(CountDiags("could not be parsed"), 0) << "the type already said why";
}

// ---- TaskParser services through the noop type ------------------------------------------------

TEST_F(LoaderTest, TaskParserReadsTypedKeys) {
  auto pkg = Load(R"(package: demo
parameters:
  run_date: {type: string}
variables:
  rows: {type: int}
tasks:
  a:
    type: noop
    message: "day ${run_date}"
    set: rows
    count: 7
    args: [x, "${rows}"]
    env: {A: "1", B: "${run_date}"}
    check: "@rows > 0"
    flag: yes
)");
  ASSERT_NE(pkg, nullptr);
  const NoopTask& t = Noop(pkg->tasks[0]);
  ASSERT_TRUE(t.message.has_value());
  EXPECT_EQ(t.message->text(), "day ${run_date}");
  EXPECT_EQ(t.set, "rows");
  EXPECT_EQ(t.count, 7);
  ASSERT_EQ(t.args.size(), 2u);
  EXPECT_TRUE(t.args[0].is_constant());
  EXPECT_FALSE(t.args[1].is_constant());
  ASSERT_EQ(t.env.size(), 2u);
  EXPECT_EQ(t.env.at("B").text(), "${run_date}");
  ASSERT_TRUE(t.check.has_value());
  EXPECT_EQ(t.check->text(), "@rows > 0");
  EXPECT_EQ(t.flag, true);
}

TEST_F(LoaderTest, TaskParserRejectsWrongShapes) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop, message: [x], count: 1.5, args: {x: 1}, env: [x], flag: 2}
  b: {type: noop, args: [[x]], env: {K: [v]}, check: {x: 1}}
)");
  ExpectDiagAt("`message` must be a string", "[x]");
  ExpectDiagAt("`count` must be a whole number", "1.5");
  ExpectDiagAt("`args` must be a list", "{x: 1}");
  ExpectDiagAt("`env` must be a mapping", "[x]", 1);
  ExpectDiagAt("`flag` must be true or false", "2}");
  ExpectDiagAt("items of `args` must be strings", "[x]]");
  ExpectDiagAt("`env.K` must be a string", "[v]");
  ExpectDiagAt("`check` must be an expression string", "{x: 1}}");
}

// QA: a pool of pools, a pool naming no connection, and one naming a database all said
// "not an agent connection; declare it as {type: agent, ...}".
TEST_F(LoaderTest, APoolMemberThatIsNoAgentSaysWhatItIs) {
  LoadBad(R"(package: demo
connections:
  db: {type: sqlite, path: x.db}
  srv: {type: agent, url: "http://127.0.0.1:1"}
  inner: {type: agent-pool, agents: [srv]}
  outer: {type: agent-pool, agents: [inner, ghost, db]}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("agent-pool 'outer' lists 'inner', another agent-pool: pools do not nest; list "
               "the agents of 'inner' instead", "inner, ghost");
  ExpectDiagAt("agent-pool 'outer' lists 'ghost', but no connection has that name; declare it "
               "under `connections` as {type: agent, url: ...}", "ghost, db");
  ExpectDiagAt("agent-pool 'outer' lists 'db', a connection of type sqlite: a pool lists agent "
               "connections ({type: agent, url: ...})", "db]");
}

// QA: TLS files on a written http:// URL passed `validate` and failed only at run time.
TEST_F(LoaderTest, TlsFilesOnAnHttpAgentAreRefused) {
  LoadBad(R"(package: demo
connections:
  srv: {type: agent, url: "http://127.0.0.1:1", ca: ca.pem, cert: c.pem, key: k.pem}
tasks:
  a: {type: noop}
)");
  ExpectDiagAt("`ca` is for a TLS agent, but the URL is http://; use https:// or leave `ca` out",
               "ca.pem");
  ExpectDiagAt("`cert` is for a TLS agent", "c.pem");
  ExpectDiagAt("`key` is for a TLS agent", "k.pem");
}

TEST_F(LoaderTest, CheckVariableNeedsAWritableVariable) {
  LoadBad(R"(package: demo
parameters:
  run_date: {type: string}
variables:
  rows: {type: int}
  fixed: {type: int, read_only: true}
tasks:
  a: {type: noop, set: run_date}
  b: {type: noop, set: fixed}
  c: {type: noop, set: nope}
  d: {type: noop, set: "System::PackageName"}
  e: {type: noop, set: rows}
)");
  ExpectDiagAt("'run_date' is read-only", "run_date}");
  ExpectDiagAt("'fixed' is read-only", "fixed}");
  ExpectDiagAt("unknown variable 'nope'; declare it under `variables:`", "nope}");
  ExpectDiagAt("'System::PackageName' is read-only", "\"System::PackageName\"");
  EXPECT_EQ(diags_.items().size(), 4u) << diags_.ToString();
}

// ---- Expressions and templates ----------------------------------------------------------------

TEST_F(LoaderTest, ExpressionSyntaxErrorPointsIntoTheText) {
  // Double-quoted: the position is the opening quote's column + 1 + the offset in the text.
  const std::string expr = "@rows + * 2";
  ExpressionError err;
  ASSERT_FALSE(Expression::Parse(expr, {}, &err).ok());
  LoadBad("package: demo\nvariables:\n  rows: {type: int}\ntasks:\n  a: {type: noop, check: \"" +
          expr + "\"}\n");
  ExpectDiagAt(WhatFailed(err), "\"@rows", 0, 1 + static_cast<int>(err.offset));
}

TEST_F(LoaderTest, ExpressionSyntaxErrorInSingleQuotedAndPlainScalars) {
  const std::string expr = "1 + (2";
  ExpressionError err;
  ASSERT_FALSE(Expression::Parse(expr, {}, &err).ok());
  LoadBad("package: demo\ntasks:\n  a: {type: noop, check: '" + expr + "'}\n");
  ExpectDiagAt(WhatFailed(err), "'1 +", 0, 1 + static_cast<int>(err.offset));

  LoadBad("package: demo\ntasks:\n  a:\n    type: noop\n    check: " + expr + "\n");
  ExpectDiagAt(WhatFailed(err), "1 +", 0, static_cast<int>(err.offset));
}

TEST_F(LoaderTest, ExpressionErrorInABlockScalarPointsAtTheCharacter) {
  // A long condition written as a literal block: the error is the ')' on the third line.
  LoadBad("package: demo\ntasks:\n  a:\n    type: noop\n    check: |\n      1 +\n      )\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected ')'", ")\n");
}

TEST_F(LoaderTest, ExpressionErrorAfterAnEscapedQuotePointsAtTheCharacter) {
  // In the file the expression is written "LEN(\"ab\") + * 1": the error is the '*'.
  LoadBad("package: demo\ntasks:\n  a: {type: noop, check: \"LEN(\\\"ab\\\") + * 1\"}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected '*'", "* 1");
}

TEST_F(LoaderTest, ExpressionErrorAfterDoubledSingleQuotesPointsAtTheCharacter) {
  // '' in a single-quoted scalar is one quote in the value.
  LoadBad("package: demo\ntasks:\n  a: {type: noop, check: '\"it''s\" + * 1'}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected '*'", "* 1");
}

TEST_F(LoaderTest, ExpressionErrorAfterMultiByteEscapesPointsAtTheCharacter) {
  // The value is "é<tab>A\q": \u00e9 is two bytes, \t and \x41 one each, \\ one backslash.
  LoadBad(R"(package: demo
tasks:
  a: {type: noop, check: "\"\u00e9\t\x41\\q\""}
)");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unknown escape '\\q'", R"(\\q)");
}

TEST_F(LoaderTest, ExpressionErrorAfterAnEscapedLineBreakPointsAtTheCharacter) {
  LoadBad("package: demo\ntasks:\n  a:\n    type: noop\n    check: \"1 + \\\n      * 2\"\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected '*'", "* 2");
}

TEST_F(LoaderTest, ExpressionErrorInAnIndentedLiteralBlockPointsAtTheCharacter) {
  // |2: the indentation is given, and the first line keeps two spaces more than that.
  LoadBad("package: demo\ntasks:\n  a:\n    type: noop\n    check: |2\n        1 +\n      )\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected ')'", ")\n");
}

TEST_F(LoaderTest, ExpressionErrorInFoldedTextPointsAtTheCharacter) {
  // A folded block and a multi-line plain scalar: each line break becomes a space.
  LoadBad(
      "package: demo\ntasks:\n  a:\n    type: noop\n    check: >\n      1 +\n      2 +\n"
      "      )\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected ')'", ")\n");

  LoadBad("package: demo\ntasks:\n  a:\n    type: noop\n    check: 1 +\n      2 + )\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected ')'", ")\n");
}

TEST_F(LoaderTest, ExpressionErrorInATaggedOrAnchoredScalarPointsAtTheCharacter) {
  // yaml-cpp marks such a node at its tag or anchor, not at its text.
  LoadBad(
      "package: demo\ntasks:\n  a: {type: noop, check: !!str \"1 + * 2\"}\n"
      "  b: {type: noop, check: &e '3 + / 4'}\n");
  ExpectDiagAt("unexpected '*'", "* 2");
  ExpectDiagAt("unexpected '/'", "/ 4");
}

TEST_F(LoaderTest, ExpressionErrorPositionsWithCrLfAndAByteOrderMark) {
  LoadBad(
      "package: demo\r\ntasks:\r\n  a:\r\n    type: noop\r\n    check: |\r\n      1 +\r\n"
      "      )\r\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected ')'", ")\r\n");

  // yaml-cpp's marks do not count the BOM; the columns of later lines are the file's.
  LoadBad("\xEF\xBB\xBFpackage: demo\ntasks:\n  a: {type: noop, check: \"1 + * 2\"}\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unexpected '*'", "* 2");
}

TEST_F(LoaderTest, TemplateErrorInALiteralBlockPointsAtTheCharacter) {
  const std::string tmpl = "hello ${@rows +}";
  const std::string value = "first line\n" + tmpl + "\n";  // what the block scalar holds
  ExpressionError err;
  ASSERT_FALSE(Template::Parse(value, &err).ok());
  ASSERT_EQ(value.substr(err.offset, 1), "}") << "the test expects the error at the '}'";
  LoadBad(
      "package: demo\nvariables:\n  rows: {type: int}\ntasks:\n  a:\n    type: noop\n"
      "    message: |\n      first line\n      " +
      tmpl + "\n");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt(WhatFailed(err), "+}\n", 0, 1);
}

TEST_F(LoaderTest, TemplateSyntaxErrorHasAPosition) {
  const std::string tmpl = "hello ${@rows +}";
  ExpressionError err;
  ASSERT_FALSE(Template::Parse(tmpl, &err).ok());
  LoadBad("package: demo\nvariables:\n  rows: {type: int}\ntasks:\n  a: {type: noop, message: \"" +
          tmpl + "\"}\n");
  ExpectDiagAt(WhatFailed(err), "\"hello", 0, 1 + static_cast<int>(err.offset));
}

TEST_F(LoaderTest, UnknownVariablesInExpressionsAndTemplates) {
  LoadBad(R"(package: demo
variables:
  rows: {type: int}
tasks:
  a: {type: noop, check: "@rows > @limit", message: "${region}-x"}
  b: {type: noop, after: [{task: a, when: "@[User::missing] == 1"}]}
)");
  // At the name itself (QA: at the value's opening quote).
  ExpectDiagAt("unknown variable or parameter 'limit'", "@limit", 0, 1);
  ExpectDiagAt("unknown variable or parameter 'region'", "${region}-x", 0, 2);
  ExpectDiagAt("unknown variable or parameter 'missing'", "User::missing", 0, 6);
}

TEST_F(LoaderTest, SystemVariablesAndParametersAreVisible) {
  auto pkg = Load(R"(package: demo
parameters:
  run_date: {type: string}
tasks:
  a: {type: noop, check: "@[System::PackageName] == \"demo\" && @[System::ExecutionId] != \"\""}
  b: {type: noop, message: "${run_date} ${@[System::StartTime]}", after: [{task: a, when: "LEN(@run_date) >= 0"}]}
)");
  ASSERT_NE(pkg, nullptr);
  for (const char* name :
       {"System::PackageName", "System::ExecutionId", "System::ParentExecutionId",
        "System::StartTime", "System::MachineName", "System::UserName"}) {
    EXPECT_NE(std::find(SystemVariableNames().begin(), SystemVariableNames().end(), name),
              SystemVariableNames().end())
        << name;
  }
}

// With `after_logic: and`, success and failure of one predecessor never both hold (QA: validate
// passed it, and the task was skipped at every run); with `or` they make a completion.
TEST_F(LoaderTest, WaitingForATaskToSucceedAndToFailIsRefused) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after: [a, {task: a, on: failure}]}
)");
  ExpectDiagAt("`after` waits for task 'a' to succeed and to fail, which never both happen",
               "{task: a, on: failure}");
  LoadBad(R"(package: demo
variables:
  flag: {type: boolean}
tasks:
  a: {type: noop}
  b: {type: noop, after: [a, {task: a, on: failure}, {task: a, on: failure, when: "@flag"}]}
)");
  // Said once, and an unknown type says nothing of the expressions reading the variable.
  EXPECT_EQ(CountDiags("to succeed and to fail"), 1) << diags_.ToString();
  EXPECT_EQ(CountDiags("unknown type 'boolean'"), 1) << diags_.ToString();
  EXPECT_EQ(diags_.items().size(), 2u) << diags_.ToString();
  auto pkg = Load(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after_logic: or, after: [a, {task: a, on: failure}]}
  c: {type: noop, after: [a, {task: a, when: "1 == 1"}]}
)");
  EXPECT_NE(pkg, nullptr);
}

// A `when` or a loop condition whose type is known and is not bool is refused, as SSIS refuses
// it when it validates (QA: it passed validate and was counted false at every run). One whose
// type depends on the values (a loop variable) is left to the run.
TEST_F(LoaderTest, AConditionThatCannotGiveABoolIsRefused) {
  LoadBad(R"yaml(package: demo
parameters:
  limit: {type: int}
variables:
  rows: {type: int}
tasks:
  a: {type: noop}
  b: {type: noop, after: [{task: a, when: "@rows + @limit"}]}
  c: {type: noop, after: [{task: a, when: "@rows > @limit"}]}
  loop: {type: for, condition: "UPPER(\"x\")", tasks: {t: {type: noop}}}
  each:
    type: foreach
    items: [true, false]
    as: item
    tasks:
      t1: {type: noop}
      t2: {type: noop, after: [{task: t1, when: "@item"}]}
)yaml");
  ExpectDiagAt("`when` must give a bool, and `@rows + @limit` gives int: make it a comparison, "
               "as in `@rows > 0` or `@region == \"eu\"`",
               "@rows + @limit");
  ExpectDiagAt("`condition` must give a bool, and `UPPER(\"x\")` gives string", "UPPER");
  EXPECT_EQ(diags_.items().size(), 2u) << diags_.ToString();
}

// ---- Precedence -------------------------------------------------------------------------------

TEST_F(LoaderTest, ReadsEveryFormOfAfter) {
  auto pkg = Load(R"(package: demo
variables:
  rows: {type: int}
tasks:
  a: {type: noop}
  b: {type: noop, after: a}
  c: {type: noop, after: [a, b]}
  d:
    type: noop
    after:
      - {task: a, on: failure}
      - {task: b, on: completion, when: "@rows > 0"}
      - {task: c, when: "@rows == 0"}
      - {task: c, on: success}
      - {task: b}
)");
  ASSERT_NE(pkg, nullptr);
  const auto& tasks = pkg->tasks;
  ASSERT_EQ(tasks.size(), 4u);

  ASSERT_EQ(tasks[1].after.size(), 1u);
  EXPECT_EQ(tasks[1].after[0].task, "a");
  EXPECT_EQ(tasks[1].after[0].task_index, 0u);
  EXPECT_EQ(tasks[1].after[0].on, ConstraintValue::kSuccess);
  EXPECT_FALSE(tasks[1].after[0].when.has_value());

  ASSERT_EQ(tasks[2].after.size(), 2u);
  EXPECT_EQ(tasks[2].after[1].task_index, 1u);
  EXPECT_EQ(tasks[2].after[1].on, ConstraintValue::kSuccess);

  const auto& d = tasks[3].after;
  ASSERT_EQ(d.size(), 5u);
  EXPECT_EQ(d[0].on, ConstraintValue::kFailure);
  EXPECT_FALSE(d[0].when.has_value());
  EXPECT_EQ(d[1].on, ConstraintValue::kCompletion);
  ASSERT_TRUE(d[1].when.has_value());
  EXPECT_EQ(d[1].when->text(), "@rows > 0");
  EXPECT_FALSE(d[2].on.has_value()) << "`when` alone is SSIS Expression-only evaluation";
  ASSERT_TRUE(d[2].when.has_value());
  EXPECT_EQ(d[2].task_index, 2u);
  EXPECT_EQ(d[3].on, ConstraintValue::kSuccess);
  EXPECT_EQ(d[4].on, ConstraintValue::kSuccess) << "neither on nor when: success";
  EXPECT_EQ(d[0].pos.line, 11);
  EXPECT_EQ(d[0].pos.column, 9);
}

TEST_F(LoaderTest, FillsSuccessors) {
  auto pkg = Load(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after: [a]}
  c: {type: noop, after: [a, b]}
  d: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->tasks[0].successors, (std::vector<size_t>{1, 2}));
  EXPECT_EQ(pkg->tasks[1].successors, (std::vector<size_t>{2}));
  EXPECT_TRUE(pkg->tasks[2].successors.empty());
  EXPECT_TRUE(pkg->tasks[3].successors.empty());
}

TEST_F(LoaderTest, UnknownAfterTargetListsTheSiblings) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after: [a, zzz]}
  c: {type: noop, after: [{task: yyy, on: failure}]}
)");
  ExpectDiagAt("`after` names unknown task 'zzz'; tasks in this container: a, c", "zzz");
  ExpectDiagAt("`after` names unknown task 'yyy'", "{task: yyy");
}

TEST_F(LoaderTest, RejectsBadAfterItems) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after: [{task: a, on: sometimes}]}
  c: {type: noop, after: [{task: a, if: x}]}
  d: {type: noop, after: {task: a}}
  e: {type: noop, after: [[a]]}
  f: {type: noop, after: [{on: failure}]}
)");
  ExpectDiagAt("`on: sometimes` is not allowed; use success, failure or completion", "sometimes");
  ExpectDiagAt("unknown key `if` in `after` item", "if");
  ExpectDiagAt("`after` is a list of task names", "{task: a}}");
  ExpectDiagAt("an `after` item is a task name or {task, on, when}", "[a]]");
  ExpectDiagAt("missing required key `task`", "{on: failure}");
  for (const Diagnostic& d : diags_.items()) {
    EXPECT_EQ(d.message.find("unknown task ''"), std::string::npos) << "said twice: " << d.message;
  }
}

// SSIS writes its constraint values capitalised; event names are taken in any case too (QA).
TEST_F(LoaderTest, ConstraintValuesAreTakenInAnyCase) {
  auto pkg = Load(R"(package: demo
tasks:
  a: {type: noop}
  b: {type: noop, after: [{task: a, on: Failure}]}
  c: {type: noop, after: [{task: a, on: COMPLETION}]}
)");
  ASSERT_TRUE(pkg);
  ASSERT_EQ(pkg->tasks.size(), 3u);
  EXPECT_EQ(pkg->tasks[1].after[0].on, ConstraintValue::kFailure);
  EXPECT_EQ(pkg->tasks[2].after[0].on, ConstraintValue::kCompletion);
}

TEST_F(LoaderTest, TaskCannotRunAfterItself) {
  LoadBad("package: demo\ntasks:\n  a: {type: noop, after: [a]}\n");
  ExpectDiagAt("task 'a' cannot run after itself", "a]");
}

TEST_F(LoaderTest, ReportsAPrecedenceCycle) {
  LoadBad(R"(package: demo
tasks:
  start: {type: noop}
  a: {type: noop, after: [start, c]}
  b: {type: noop, after: [a]}
  c: {type: noop, after: [b]}
)");
  const Diagnostic* d = Diag("precedence cycle");
  ASSERT_NE(d, nullptr);
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_NE(d->message.find(std::string(" ") + name), std::string::npos) << d->message;
  }
  EXPECT_EQ(d->message.find("start"), std::string::npos) << "start is not in the cycle";
  EXPECT_GT(d->pos.line, 0);
  EXPECT_EQ(CountDiags("precedence cycle"), 1);
}

TEST_F(LoaderTest, ReportsEveryPrecedenceCycle) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop, after: [b]}
  b: {type: noop, after: [a]}
  c: {type: noop, after: [d]}
  d: {type: noop, after: [c]}
)");
  EXPECT_EQ(CountDiags("precedence cycle"), 2) << diags_.ToString();
}

TEST_F(LoaderTest, ReportsCyclesThroughASharedTaskInFileOrder) {
  LoadBad(R"(package: demo
tasks:
  a: {type: noop, after: [b, c]}
  b: {type: noop, after: [a, {task: a, on: completion}]}
  c: {type: noop, after: [a]}
)");
  ASSERT_EQ(CountDiags("precedence cycle"), 2) << diags_.ToString();
  ASSERT_EQ(diags_.items().size(), 2u) << "a repeated `after` is one edge: " << diags_.ToString();
  EXPECT_NE(diags_.items()[0].message.find("a -> b -> a"), std::string::npos)
      << diags_.items()[0].message;
  EXPECT_NE(diags_.items()[1].message.find("a -> c -> a"), std::string::npos)
      << diags_.items()[1].message;
}

TEST_F(LoaderTest, ReportsCyclesInEachContainer) {
  LoadBad(R"(package: demo
tasks:
  x: {type: noop, after: [y]}
  y: {type: noop, after: [x]}
  seq:
    type: sequence
    tasks:
      p: {type: noop, after: [q]}
      q: {type: noop, after: [p]}
)");
  EXPECT_EQ(CountDiags("precedence cycle"), 2) << diags_.ToString();
  EXPECT_EQ(CountDiags("p -> q -> p"), 1) << diags_.ToString();
}

TEST_F(LoaderTest, AfterOnlySeesSiblings) {
  LoadBad(R"(package: demo
tasks:
  outer: {type: noop}
  seq:
    type: sequence
    tasks:
      inner: {type: noop, after: [outer]}
  later: {type: noop, after: [inner]}
)");
  ExpectDiagAt("`after` names unknown task 'outer'", "outer]");
  ExpectDiagAt("`after` names unknown task 'inner'", "inner]");
}

// ---- Containers -------------------------------------------------------------------------------

TEST_F(LoaderTest, ReadsASequence) {
  auto pkg = Load(R"(package: demo
tasks:
  seq:
    type: sequence
    maximum_error_count: 2
    timeout: 1m
    tasks:
      x: {type: noop}
      y: {type: noop, after: [x]}
      inner:
        type: sequence
        tasks:
          z: {type: noop}
  next: {type: noop, after: [seq]}
)");
  ASSERT_NE(pkg, nullptr);
  const TaskDef& seq = pkg->tasks[0];
  EXPECT_EQ(seq.container, ContainerKind::kSequence);
  EXPECT_TRUE(seq.is_container());
  EXPECT_EQ(seq.task, nullptr);
  EXPECT_EQ(seq.maximum_error_count, 2);
  EXPECT_EQ(*seq.timeout, std::chrono::minutes(1));
  ASSERT_EQ(seq.children.size(), 3u);
  EXPECT_EQ(seq.children[0].successors, (std::vector<size_t>{1}));
  EXPECT_EQ(seq.children[2].container, ContainerKind::kSequence);
  EXPECT_EQ(seq.children[2].maximum_error_count, 1);
  ASSERT_EQ(seq.children[2].children.size(), 1u);
  EXPECT_EQ(pkg->tasks[0].successors, (std::vector<size_t>{1}));
}

TEST_F(LoaderTest, ContainerErrorsNameTheTaskPath) {
  LoadBad(R"(package: demo
tasks:
  seq:
    type: sequence
    maximum_error_count: 0
    items: [a]
    tasks:
      inner: {type: sequence}
      bad: {type: noop, colour: red}
)");
  ExpectDiagAt("maximum_error_count must be at least 1", "0\n");
  ExpectDiagAt("unknown key `items` in task 'seq'", "items");
  ExpectDiagAt("container 'seq/inner' needs `tasks:`", "{type: sequence}");
  ExpectDiagAt("unknown key `colour` in task 'seq/bad'", "colour");
}

TEST_F(LoaderTest, ReadsAForLoop) {
  auto pkg = Load(R"(package: demo
variables:
  i: {type: int}
  total: {type: int}
tasks:
  loop:
    type: for
    init: "@i = 0"
    condition: "@i < 3"
    assign: ["@i = @i + 1", "@total = @total + @i"]
    maximum_error_count: 4
    tasks:
      body: {type: noop, check: "@i >= 0"}
  bare:
    type: for
    condition: "@i < 10"
    tasks:
      body: {type: noop}
)");
  ASSERT_NE(pkg, nullptr);
  const TaskDef& loop = pkg->tasks[0];
  EXPECT_EQ(loop.container, ContainerKind::kFor);
  ASSERT_EQ(loop.for_init.size(), 1u);
  EXPECT_TRUE(loop.for_init[0].is_assignment());
  EXPECT_EQ(loop.for_init[0].text(), "@i = 0");
  ASSERT_TRUE(loop.for_condition.has_value());
  EXPECT_EQ(loop.for_condition->text(), "@i < 3");
  ASSERT_EQ(loop.for_assign.size(), 2u);
  EXPECT_EQ(loop.for_assign[1].text(), "@total = @total + @i");
  EXPECT_EQ(loop.maximum_error_count, 4);
  ASSERT_EQ(loop.children.size(), 1u);
  const TaskDef& bare = pkg->tasks[1];
  EXPECT_TRUE(bare.for_init.empty()) << "init and assign are optional";
  EXPECT_TRUE(bare.for_assign.empty());
}

TEST_F(LoaderTest, RejectsBadForLoops) {
  LoadBad(R"(package: demo
parameters:
  limit: {type: int, value: 3}
variables:
  i: {type: int}
tasks:
  no_condition:
    type: for
    init: "@i = 0"
    tasks: {x: {type: noop}}
  not_assignment:
    type: for
    init: "@i + 1"
    condition: "@i < @limit"
    tasks: {x: {type: noop}}
  to_parameter:
    type: for
    init: "@limit = 1"
    condition: "true"
    assign: "@nope = 1"
    tasks: {x: {type: noop}}
  bad_shape:
    type: for
    condition: "@i < 1"
    assign: {x: 1}
    init: [[a]]
    tasks: {x: {type: noop}}
)");
  ExpectDiagAt("missing required key `condition`", "type: for");
  ExpectDiagAt("`init` must assign a variable", "\"@i + 1\"");
  ExpectDiagAt("'limit' is read-only", "\"@limit = 1\"");
  ExpectDiagAt("unknown variable 'nope'", "\"@nope = 1\"");
  ExpectDiagAt("`assign` is an assignment", "{x: 1}");
  ExpectDiagAt("`init` items must be assignment strings", "[a]]");
}

TEST_F(LoaderTest, ReadsForeachOverInlineItems) {
  auto pkg = Load(R"(package: demo
tasks:
  each:
    type: foreach
    items: [eu, 2, 2.5, false, "3"]
    as: region
    max_concurrent: 4
    tasks:
      work: {type: noop, message: "${region}", set: region}
)");
  ASSERT_NE(pkg, nullptr);
  const TaskDef& each = pkg->tasks[0];
  EXPECT_EQ(each.container, ContainerKind::kForeach);
  ASSERT_TRUE(each.foreach_list.has_value());
  EXPECT_EQ(*each.foreach_list, Value(Value::List{Value("eu"), Value(int64_t{2}), Value(2.5),
                                                  Value(false), Value("3")}));
  EXPECT_FALSE(each.foreach_items.has_value());
  EXPECT_FALSE(each.foreach_files.has_value());
  EXPECT_EQ(each.foreach_as, std::vector<std::string>{"region"});
  EXPECT_FALSE(each.foreach_as_values);
  EXPECT_EQ(each.foreach_max_concurrent, 4);
  ASSERT_EQ(each.children.size(), 1u);
}

TEST_F(LoaderTest, ReadsForeachOverAVariableOrFiles) {
  auto pkg = Load(R"(package: demo
variables:
  regions: {type: list, value: [eu, us]}
tasks:
  each:
    type: foreach
    items: "${regions}"
    as: region
    tasks:
      work: {type: noop, message: "${UPPER(region)}"}
  files:
    type: foreach
    files: "data/*.csv"
    as: file
    tasks:
      work: {type: noop, message: "${file}"}
)");
  ASSERT_NE(pkg, nullptr);
  const TaskDef& each = pkg->tasks[0];
  ASSERT_TRUE(each.foreach_items.has_value());
  EXPECT_EQ(each.foreach_items->text(), "${regions}");
  EXPECT_FALSE(each.foreach_list.has_value());
  EXPECT_EQ(each.foreach_max_concurrent, 1) << "iterations run one by one by default";
  const TaskDef& files = pkg->tasks[1];
  ASSERT_TRUE(files.foreach_files.has_value());
  EXPECT_EQ(files.foreach_files->text(), "data/*.csv");
  EXPECT_FALSE(files.foreach_items.has_value());
}

TEST_F(LoaderTest, RejectsBadForeachLoops) {
  LoadBad(R"(package: demo
variables:
  rows: {type: int}
tasks:
  both:
    type: foreach
    items: [a]
    files: "*.csv"
    as: x
    tasks: {w: {type: noop}}
  neither:
    type: foreach
    as: y
    tasks: {w: {type: noop}}
  no_as:
    type: foreach
    items: [a]
    tasks: {w: {type: noop}}
  hides:
    type: foreach
    items: [a]
    as: rows
    tasks: {w: {type: noop}}
  bad_as:
    type: foreach
    items: [a]
    as: "not a name"
    max_concurrent: 0
    tasks: {w: {type: noop}}
  nested_items:
    type: foreach
    items: [[a, [b]], {c: d}]
    as: z
    tasks: {w: {type: noop}}
  rows_of_files:
    type: foreach
    files: "*.csv"
    as: [p, q, p]
    tasks: {w: {type: noop}}
)");
  EXPECT_EQ(CountDiags("needs exactly one of `items`"), 2) << diags_.ToString();
  ExpectDiagAt("foreach 'both' needs exactly one of `items`", "type: foreach");
  ExpectDiagAt("foreach 'neither' needs exactly one", "type: foreach", 1);
  ExpectDiagAt("missing required key `as`", "type: foreach", 2);
  ExpectDiagAt("`as: rows` would hide an existing variable or parameter", "rows\n");
  ExpectDiagAt("`as` must be a variable name", "\"not a name\"");
  ExpectDiagAt("max_concurrent must be at least 1", "0\n");
  ExpectDiagAt("a row of inline `items` holds scalars", "[b]]");
  ExpectDiagAt("inline `items` are scalars, or lists of scalars", "{c: d}");
  ExpectDiagAt("`as` with a list of names takes values from list items", "[p, q, p]");
  ExpectDiagAt("`as` names p twice", "p]");
}

TEST_F(LoaderTest, LoopVariableIsVisibleOnlyInsideTheLoop) {
  LoadBad(R"(package: demo
tasks:
  each:
    type: foreach
    items: [a, b]
    as: region
    tasks:
      inside: {type: noop, message: "${region}", check: "@region != \"\""}
      later: {type: noop, after: [{task: inside, when: "@region == \"a\""}]}
  after_loop: {type: noop, message: "${region}", after: [each]}
)");
  ASSERT_EQ(diags_.items().size(), 1u) << diags_.ToString();
  ExpectDiagAt("unknown variable or parameter 'region'", "${region}\"", 1, 2);
}

TEST_F(LoaderTest, TwoLoopsMayUseTheSameVariableName) {
  auto pkg = Load(R"(package: demo
tasks:
  one:
    type: foreach
    items: [a]
    as: item
    tasks: {w: {type: noop, message: "${item}"}}
  two:
    type: foreach
    items: [b]
    as: item
    tasks: {w: {type: noop, message: "${item}"}}
)");
  EXPECT_NE(pkg, nullptr);
}

// ---- Diagnostics ------------------------------------------------------------------------------

TEST_F(LoaderTest, ReportsEveryProblemAtOnceInFileOrder) {
  LoadBad(R"(package: demo
tasks:
  c: {type: noop, colour: red}
  a: {type: nosuch}
  b: {type: noop, after: [zzz]}
colour: blue
)");
  EXPECT_EQ(diags_.items().size(), 4u) << diags_.ToString();
  std::string all = diags_.ToString();
  std::vector<std::string> lines;
  for (size_t start = 0, nl; (nl = all.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(all.substr(start, nl - start));
  }
  ASSERT_EQ(lines.size(), 4u) << all;
  EXPECT_EQ(lines[0].rfind("/pkgs/bad.yaml:3:19: error: unknown key `colour`", 0), 0u) << all;
  EXPECT_EQ(lines[1].rfind("/pkgs/bad.yaml:4:", 0), 0u) << all;
  EXPECT_EQ(lines[2].rfind("/pkgs/bad.yaml:5:", 0), 0u) << all;
  EXPECT_EQ(lines[3].rfind("/pkgs/bad.yaml:6:1: error: unknown key `colour` in package", 0), 0u)
      << all;

  Diagnostics diags;
  auto r = LoadPackageText(text_, "/pkgs/bad.yaml", diags);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("4 problems found"), std::string::npos)
      << r.status().message();
}

TEST_F(LoaderTest, DiagnosticWithoutPositionNamesOnlyTheFile) {
  Diagnostic d{{"/pkgs/x.yaml", 0, 0}, "something"};
  EXPECT_EQ(d.ToString(), "/pkgs/x.yaml: error: something");
  Diagnostic e{{"/pkgs/x.yaml", 3, 7}, "else"};
  EXPECT_EQ(e.ToString(), "/pkgs/x.yaml:3:7: error: else");
}

TEST_F(LoaderTest, LoadPackageReadsAFile) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "fanout-loader-test-XXXXXX").string();
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  std::filesystem::path dir = pattern;
  const std::string text = "package: from-file\ntasks:\n  a: {type: noop}\n";
  { std::ofstream(dir / "p.yaml") << text; }

  Diagnostics diags;
  auto r = LoadPackage((dir / "p.yaml").string(), diags);
  ASSERT_TRUE(r.ok()) << r.status().ToString() << diags.ToString();
  EXPECT_EQ((*r)->name, "from-file");
  EXPECT_EQ((*r)->dir, dir.string());
  EXPECT_EQ((*r)->sha256, Sha256Hex(text));

  Diagnostics missing;
  auto m = LoadPackage((dir / "nope.yaml").string(), missing);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fanout
