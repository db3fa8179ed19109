// `fanout validate`: every problem at once, each with file:line:column; exit 0 / 5 / 6.
#include <gtest/gtest.h>

#include "e2e/e2e_util.h"

namespace fanout::testing {
namespace {

TEST(ValidateTest, ValidPackageExitsZero) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  CommandResult r = RunFanout({"validate", "ok.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("valid (package ok, 1 task)"), std::string::npos) << r.out;
}

// `fanout validate *.yaml` checks every file, packages and jobs alike, and says of each; one
// bad file makes it exit 5 (QA: it took one file only, as `deploy` does not).
TEST(ValidateTest, SeveralFilesAreEachChecked) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  dir.Write("ok.job.yaml", "job: ok\nsteps:\n  - {name: s, subsystem: process, run: [true]}\n");
  dir.Write("bad.yaml", "package: bad\ntasks:\n  a: {type: nope}\n");
  CommandResult good = RunFanout({"validate", "ok.yaml", "ok.job.yaml"}, dir.path());
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_EQ(good.out, "ok.yaml: valid (package ok, 1 task)\nok.job.yaml: valid (job ok, 1 step)\n");
  CommandResult one_bad = RunFanout({"validate", "bad.yaml", "ok.yaml"}, dir.path());
  EXPECT_EQ(one_bad.exit_code, 5) << one_bad.err;
  EXPECT_NE(one_bad.err.find("bad.yaml: 1 problem"), std::string::npos) << one_bad.err;
  EXPECT_EQ(one_bad.out, "ok.yaml: valid (package ok, 1 task)\n") << "the next file is checked";
  CommandResult sets = RunFanout({"validate", "ok.yaml", "bad.yaml", "--set", "x=1"}, dir.path());
  EXPECT_EQ(sets.exit_code, 6) << sets.err;
  EXPECT_NE(sets.err.find("--set gives one package's parameters"), std::string::npos) << sets.err;
}

TEST(ValidateTest, ReportsEveryProblemWithPosition) {
  ScratchDir dir;
  dir.Write("bad.yaml", R"(package: bad
colour: blue
parameters:
  day: {type: string, required: true}
variables:
  n: {type: integer, value: 0}
  m: {type: int, value: abc}
connections:
  db: {type: oracle}
tasks:
  a: {type: process, run: [/bin/true], after: [ghost]}
  b: {type: process, run: [/bin/true], after: [c]}
  c: {type: process, run: [/bin/true], after: [b]}
  d: {type: expression, set: {nope: "@n + 1"}}
  e: {type: expression, set: {m: "@m + "}}
  f: {type: teleport}
  g: {type: process, run: [/bin/true], after: [{task: a, when: "@missing > 1"}]}
  h: {type: sql, connection: nowhere, sql: "select 1"}
  i: {type: process, run: [/bin/true], retries: many}
  j: {type: process, run: "echo hi", success_codes: [256], env: {"A=B": x}, cwd: "${nope2}"}
  k: {type: process, run: [/bin/true], success_codes: []}
  l: {type: expression, set: {n: "1", "User::n": "2"}}
)");
  CommandResult r = RunFanout({"validate", "bad.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  const std::string& e = r.err;
  for (const char* expected : {
           "bad.yaml:2:1: error: unknown key `colour` in package",
           "bad.yaml:6:13: error: unknown type 'integer'",
           "bad.yaml:7:25: error: cannot convert string 'abc' to int",
           "bad.yaml:9:14: error: unknown connection type 'oracle'",
           "bad.yaml:11:48: error: `after` names unknown task 'ghost'",
           "bad.yaml:12:3: error: precedence cycle: b -> c -> b",
           "bad.yaml:14:31: error: unknown variable 'nope'",
           "bad.yaml:15:40: error: unexpected end of expression",
           "bad.yaml:16:13: error: unknown task type 'teleport'",
           "bad.yaml:17:66: error: unknown variable or parameter 'missing'",
           "bad.yaml:18:30: error: unknown connection 'nowhere'",
           "bad.yaml:19:49: error: `retries` must be a whole number",
           // A `run` of the wrong shape does not hide the task's other problems.
           "bad.yaml:20:27: error: `run` is a list",
           "bad.yaml:20:54: error: exit codes are whole numbers from 0 to 255",
           "bad.yaml:20:66: error: 'A=B' is not an environment variable name",
           "bad.yaml:20:85: error: unknown variable or parameter 'nope2'",
           "bad.yaml:21:55: error: `success_codes` is a list of at least one exit code",
           "bad.yaml:22:39: error: `set` assigns 'n' twice (as n and User::n)",
       }) {
    EXPECT_NE(e.find(expected), std::string::npos) << "missing: " << expected << "\n" << e;
  }
}

// An unknown key in a job file points at the key, as in a package; it pointed at its value,
// lines below it for a nested mapping (QA).
TEST(ValidateTest, AnUnknownKeyInAJobFilePointsAtTheKey) {
  ScratchDir dir;
  dir.Write("job.yaml", "job: j\nparameters:\n  region: {type: string}\nmax_concurent_runs: 2\n"
                        "steps:\n  - {name: a, subsystem: process, run: [/bin/true], colour: red}\n");
  CommandResult r = RunFanout({"validate", "job.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  for (const char* expected : {"job.yaml:2:1: error: unknown key `parameters` in the job",
                               "job.yaml:4:1: error: unknown key `max_concurent_runs` in the job",
                               "job.yaml:6:53: error: unknown key `colour` in step 1"}) {
    EXPECT_NE(r.err.find(expected), std::string::npos) << "missing: " << expected << "\n" << r.err;
  }
}

TEST(ValidateTest, BadExpressionPointsAtTheColumn) {
  ScratchDir dir;
  dir.Write("expr.yaml", "package: expr\nvariables:\n  n: {type: int, value: 0}\ntasks:\n"
                         "  a: {type: expression, set: {n: \"(@n + 2\"}}\n");
  CommandResult r = RunFanout({"validate", "expr.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  // The value starts at column 34 (the quote); the missing ")" is at its end, column 42.
  EXPECT_NE(r.err.find("expr.yaml:5:42:"), std::string::npos) << r.err;
  // Columns inside the message are the file's too (it had said "column 8", counted in the
  // expression, beside the file's 42).
  EXPECT_NE(r.err.find("to close the '(' at line 5, column 35"), std::string::npos) << r.err;
  // QA: the column the diagnostic starts with was said again in its message.
  EXPECT_EQ(r.err.find("column 42"), std::string::npos) << r.err;
}

// QA: a list written in place for an agent-job's param read as a mistake without a way out.
TEST(ValidateTest, AListWrittenAsAParamSaysHowToPassOne) {
  ScratchDir dir;
  dir.Write("list.yaml",
            "package: list\nconnections:\n  srv: {type: agent, url: \"http://127.0.0.1:1\"}\n"
            "tasks:\n  a: {type: agent-job, connection: srv, job: j, "
            "params: {regions: [eu, us]}}\n");
  CommandResult r = RunFanout({"validate", "list.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("list.yaml:5:67: error: `params.regions` must be a string (a template), "
                       "not a list; for a list, declare a variable of type list and name it: "
                       "\"${NAME}\""),
            std::string::npos)
      << r.err;
}

// QA: `fanout validate *.yaml` in a folder holding an agent.yaml listed each of its keys as
// unknown in a package; it is neither kind of file, as `deploy` says. A package with a
// misspelt `package:` still gets the package's checks.
TEST(ValidateTest, AFileOfNeitherKindIsSaidToBeSo) {
  ScratchDir dir;
  dir.Write("agent.yaml", "name: srv1\ndata_dir: data\nslots: 2\n");
  dir.Write("both.yaml", "package: p\njob: j\n");
  dir.Write("typo.yaml", "packge: p\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  CommandResult r = RunFanout({"validate", "agent.yaml", "both.yaml", "typo.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_EQ(r.err,
            "agent.yaml: is neither a package nor a job; a package file has a `package:` key, a "
            "job file a `job:` key\n"
            "both.yaml: has both `package:` and `job:`; a package file has a `package:` key, a "
            "job file a `job:` key\n"
            "typo.yaml:1:1: error: unknown key `packge` in package; allowed: package, "
            "description, max_concurrent, maximum_error_count, parameters, variables, "
            "connections, logging, tasks\n"
            "typo.yaml:1:1: error: missing required key `package`\n"
            "typo.yaml: 2 problems\n");
}

// A second YAML document (two packages pasted into one file) would go unnoticed.
TEST(ValidateTest, ASecondYamlDocumentIsAnError) {
  ScratchDir dir;
  dir.Write("two.yaml", "package: a\ntasks:\n  t: {type: process, run: [/bin/true]}\n---\n"
                        "package: b\ntasks: {}\n");
  CommandResult r = RunFanout({"validate", "two.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("two.yaml:5:1: error: a package file holds one YAML document"),
            std::string::npos)
      << r.err;
  // A trailing `---` (some generators write one) starts an empty document: nothing to refuse.
  dir.Write("trailing.yaml", "package: a\ntasks:\n  t: {type: process, run: [/bin/true]}\n---\n");
  CommandResult trailing = RunFanout({"validate", "trailing.yaml"}, dir.path());
  EXPECT_EQ(trailing.exit_code, 0) << trailing.err;
}

// yaml-cpp says only "end of map not found" for a tab in an indentation; the line is named.
// Nor does it say what a NUL byte or too deep a nesting is.
TEST(ValidateTest, ATabIndentationANulByteOrDeepNestingIsNamed) {
  ScratchDir dir;
  dir.Write("tab.yaml", "package: p\ntasks:\n  a:\n\ttype: process\n");
  CommandResult r = RunFanout({"validate", "tab.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("line 4 is indented with a tab: YAML indents with spaces only"),
            std::string::npos)
      << r.err;
  // Nesting past yaml-cpp's limit had said only "bad file".
  dir.Write("deep.yaml",
            "package: p\ntasks:\n  a: " + std::string(1000, '[') + std::string(1000, ']') + "\n");
  CommandResult deep = RunFanout({"validate", "deep.yaml"}, dir.path());
  EXPECT_EQ(deep.exit_code, 5);
  EXPECT_NE(deep.err.find("error: nested too deeply: YAML is read to"), std::string::npos)
      << deep.err;
  // A NUL byte had been reported at the next line as an "unknown escape character".
  dir.Write("nul.yaml", std::string("package: p\0\ntasks: {}\n", 22));
  CommandResult nul = RunFanout({"validate", "nul.yaml"}, dir.path());
  EXPECT_EQ(nul.exit_code, 5);
  EXPECT_NE(nul.err.find("nul.yaml:1:11: error: a NUL byte"), std::string::npos) << nul.err;
  dir.Write("tab.job.yaml", "job: j\nsteps:\n  - name: a\n\t  subsystem: process\n");
  CommandResult job = RunFanout({"validate", "tab.job.yaml"}, dir.path());
  EXPECT_EQ(job.exit_code, 5);
  EXPECT_NE(job.err.find("line 4 is indented with a tab"), std::string::npos) << job.err;
}

// Constants that can only fail at run time are refused before: an agent URL without its scheme,
// with a path or with a password (shown masked: QA found it printed and kept in the catalog's
// events), a job name the agent would refuse.
TEST(ValidateTest, ConstantAgentUrlsAndJobNamesAreChecked) {
  ScratchDir dir;
  dir.Write("v.yaml", "package: v\nconnections:\n  s: {type: agent, url: \"127.0.0.1:7420\"}\n"
                      "  t: {type: agent, url: \"${base}\"}\n"
                      "  u: {type: agent, url: \"http://127.0.0.1:7420/x\"}\n"
                      "  w: {type: agent, url: \"http://etl:hunter99pw@127.0.0.1:7420\"}\n"
                      "parameters:\n  base: {type: string}\n"
                      "tasks:\n  j: {type: agent-job, connection: s, job: \"bad name!\"}\n"
                      "  k: {type: agent-job, connection: t, job: \"${base}\"}\n"
                      "  m: {type: agent-job, connection: t, job: j, params: {\"a=b\": x}}\n"
                      "  n: {type: agent-job, connection: s, job: j, orphan_timeout: 500ms}\n"
                      "  o: {type: agent-job, connection: s, job: j, wait: false, "
                      "orphan_timeout: 1m}\n");
  CommandResult r = RunFanout({"validate", "v.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("v.yaml:3:25: error: agent URL '127.0.0.1:7420' does not start with "
                       "http:// or https://"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("v.yaml:5:25: error: agent URL 'http://127.0.0.1:7420/x' has a path"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("v.yaml:6:25: error: agent URL 'http://etl:***@127.0.0.1:7420' has user "
                       "credentials"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("hunter99pw"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("v.yaml:10:44: error: job name 'bad name!' must match"), std::string::npos)
      << r.err;
  // The agent refuses such a param name at every start (review).
  EXPECT_NE(r.err.find("v.yaml:12:56: error: param name 'a=b' must match"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("v.yaml:13:63: error: `orphan_timeout` must be 0 (never) or from 10 s "
                       "to 30 days"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("v.yaml:14:76: error: `orphan_timeout` needs `wait: true`"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("v.yaml: 7 problems"), std::string::npos) << "templates are not judged";
}

TEST(ValidateTest, DuplicateKeysAreReported) {
  ScratchDir dir;
  dir.Write("dup.yaml", "package: dup\ntasks:\n  a: {type: process, run: [/bin/true]}\n"
                        "  a: {type: process, run: [/bin/false]}\n");
  CommandResult r = RunFanout({"validate", "dup.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("dup.yaml:4:3: error: duplicate name 'a'"), std::string::npos) << r.err;
}

TEST(ValidateTest, RequiredParameterSatisfiedBySet) {
  ScratchDir dir;
  dir.Write("p.yaml", "package: p\nparameters:\n  day: {type: string, required: true}\n"
                      "tasks:\n  a: {type: process, run: [/bin/echo, \"${day}\"]}\n");
  CommandResult given = RunFanout({"validate", "p.yaml", "--set", "day=2026-11-26"}, dir.path());
  EXPECT_EQ(given.exit_code, 0);
  EXPECT_EQ(given.out, "p.yaml: valid (package p, 1 task)\n");
  // A required parameter is given when the package runs (by a parent, an agent's start or
  // --set): no problem of the file, but named.
  CommandResult needed = RunFanout({"validate", "p.yaml"}, dir.path());
  EXPECT_EQ(needed.exit_code, 0) << needed.err;
  EXPECT_EQ(needed.out, "p.yaml: valid (package p, 1 task; parameter day is required when it "
                        "runs)\n");
  // A name the package does not declare: validate says so as run would.
  CommandResult unknown =
      RunFanout({"validate", "p.yaml", "--set", "day=1", "--set", "dya=2"}, dir.path());
  EXPECT_EQ(unknown.exit_code, 5);
  EXPECT_NE(unknown.err.find("p.yaml: error: --set dya: the package has no parameter or variable "
                             "of that name (it has: day)"),
            std::string::npos)
      << unknown.err;
  // A system variable is there, but the run sets it.
  CommandResult system = RunFanout(
      {"validate", "p.yaml", "--set", "day=1", "--set", "System::StartTime=2"}, dir.path());
  EXPECT_EQ(system.exit_code, 5);
  EXPECT_NE(system.err.find("--set System::StartTime: system variables are read-only"),
            std::string::npos)
      << system.err;
  // A value the run would refuse for its type, in the run's words (SSIS QA: valid here, exit 5
  // there); a sensitive one is not shown.
  dir.Write("t.yaml", "package: t\nparameters:\n  fail: {type: bool}\n"
                      "  pin: {type: int, sensitive: true}\nvariables:\n  n: {type: int}\n"
                      "tasks:\n  a: {type: process, run: [/bin/true]}\n");
  CommandResult typed = RunFanout({"validate", "t.yaml", "--set", "fail=maybe", "--set",
                                   "pin=secret77", "--set", "n=12"}, dir.path());
  EXPECT_EQ(typed.exit_code, 5) << typed.out << typed.err;
  EXPECT_TRUE(Contains(typed.err, "t.yaml: error: --set fail: cannot convert")) << typed.err;
  EXPECT_TRUE(Contains(typed.err, "--set pin: ")) << typed.err;
  EXPECT_FALSE(Contains(typed.err, "secret77")) << typed.err;
  EXPECT_FALSE(Contains(typed.err, "--set n:")) << typed.err;
  CommandResult run = RunFanout({"run", "t.yaml", "--set", "fail=maybe"}, dir.path());
  EXPECT_EQ(run.exit_code, 5) << run.err;
  EXPECT_TRUE(Contains(run.err, "--set fail: cannot convert")) << run.err;
}

// A job file (`job:`) is checked as an agent would check it; `job: true` is a YAML boolean.
TEST(ValidateTest, JobFilesAreCheckedAsTheAgentChecksThem) {
  ScratchDir dir;
  dir.Write("ok.job.yaml", "job: nightly\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n"
                           "  - {name: b, subsystem: package, package: load}\n");
  CommandResult ok = RunFanout({"validate", "ok.job.yaml"}, dir.path());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("ok.job.yaml: valid (job nightly, 2 steps)"), std::string::npos) << ok.out;

  dir.Write("bad.job.yaml", "job: true\nsteps:\n  - {name: a, subsystem: process, on_success: goto:z}\n"
                            "  - name: b\n    subsystem: process\n    run: [/bin/false]\n"
                            "    run: [/bin/true]\n");
  CommandResult bad = RunFanout({"validate", "bad.job.yaml"}, dir.path());
  EXPECT_EQ(bad.exit_code, 5);
  for (const char* expected : {
           "bad.job.yaml:1:6: error: `job` in the job must be a string, got the boolean true; "
           "quote it",
           "bad.job.yaml:3:5: error: step 'a' needs `run`",
           "bad.job.yaml:3:47: error: step 'a' goes to unknown step 'z'; `goto:` takes a step's "
           "name, one of: a, b",
           // yaml-cpp keeps the last of a key written twice; the agent's check says so.
           "bad.job.yaml:7:5: error: duplicate key `run`",
           "bad.job.yaml: 4 problems",
       }) {
    EXPECT_NE(bad.err.find(expected), std::string::npos) << "missing: " << expected << "\n" << bad.err;
  }
  dir.Write("j.json", "{\"job\": \"j\", \"steps\": [{\"name\": \"s\", \"subsystem\": \"process\", "
                      "\"run\": [\"/bin/true\"]}]}");
  EXPECT_EQ(RunFanout({"validate", "j.json"}, dir.path()).exit_code, 0);
  EXPECT_EQ(RunFanout({"validate", "j.json", "--set", "a=b"}, dir.path()).exit_code, 6);
}

// An agent keeps jobs as JSON, which holds only UTF-8: a job file that is not UTF-8 is a
// problem at its place (QA: `fanout job create` got a 500 from inside the agent).
TEST(ValidateTest, AJobFileThatIsNotUtf8IsAProblemAtItsPlace) {
  ScratchDir dir;
  dir.Write("latin1.job.yaml", "job: latin1\nsteps:\n  - {name: s, subsystem: process, "
                               "run: [/bin/echo, caf\xe9]}\n");
  CommandResult r = RunFanout({"validate", "latin1.job.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("latin1.job.yaml:3:55: error: byte 0xE9 is not UTF-8: job files are "
                       "UTF-8 text"),
            std::string::npos)
      << r.err;
  // A JSON one too, where the parser's own words had been shown (QA).
  dir.Write("latin1.job.json", "{\"job\": \"latin1\", \"steps\": [{\"name\": \"s\", "
                               "\"subsystem\": \"process\", \"run\": [\"caf\xe9\"]}]}");
  CommandResult json = RunFanout({"validate", "latin1.job.json"}, dir.path());
  EXPECT_EQ(json.exit_code, 5);
  EXPECT_NE(json.err.find("latin1.job.json:1:79: error: byte 0xE9 is not UTF-8"),
            std::string::npos)
      << json.err;
}

TEST(ValidateTest, UsageErrorsExitSix) {
  ScratchDir dir;
  EXPECT_EQ(RunFanout({"validate"}, dir.path()).exit_code, 6);
  EXPECT_EQ(RunFanout({"validate", "x.yaml", "--bogus"}, dir.path()).exit_code, 6);
  CommandResult missing = RunFanout({"validate", "nowhere.yaml"}, dir.path());
  EXPECT_EQ(missing.exit_code, 5);
  EXPECT_NE(missing.err.find("nowhere.yaml"), std::string::npos);
}

}  // namespace
}  // namespace fanout::testing
