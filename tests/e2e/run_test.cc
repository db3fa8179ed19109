// `fanout run` end to end: exit codes, cancel by signal, masking of secrets, log providers.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e/e2e_util.h"

namespace fanout::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RunTest, HelpOnEveryCommand) {
  ScratchDir dir;
  for (auto args : std::vector<std::vector<std::string>>{{"--help"}, {"run", "--help"},
                                                          {"validate", "--help"}}) {
    CommandResult r = RunFanout(args, dir.path());
    EXPECT_EQ(r.exit_code, 0) << args[0];
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
}

TEST(RunTest, ExitCodesFollowDtexec) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  dir.Write("fail.yaml", "package: fail\ntasks:\n  a: {type: process, run: [/bin/false]}\n");
  dir.Write("bad.yaml", "package: bad\ntasks:\n  a: {type: nope}\n");
  dir.Write("req.yaml", "package: req\nparameters:\n  day: {required: true}\n"
                        "tasks:\n  a: {type: process, run: [/bin/true]}\n");
  EXPECT_EQ(RunFanout({"run", "ok.yaml"}, dir.path()).exit_code, 0);
  EXPECT_EQ(RunFanout({"run", "fail.yaml"}, dir.path()).exit_code, 1);
  EXPECT_EQ(RunFanout({"run", "missing.yaml"}, dir.path()).exit_code, 4);
  CommandResult bad = RunFanout({"run", "bad.yaml"}, dir.path());
  EXPECT_EQ(bad.exit_code, 5);
  EXPECT_NE(bad.err.find("bad.yaml:3:13: error: unknown task type 'nope'"), std::string::npos)
      << bad.err;
  CommandResult req = RunFanout({"run", "req.yaml"}, dir.path());
  EXPECT_EQ(req.exit_code, 5);
  EXPECT_NE(req.err.find("required parameter 'day' has no value"), std::string::npos) << req.err;
  EXPECT_EQ(RunFanout({"run", "req.yaml", "--set", "day=1"}, dir.path()).exit_code, 0);
  // A repeatable option takes one value each time: the file after it is still the file.
  EXPECT_EQ(RunFanout({"run", "--set", "day=1", "req.yaml", "--set", "day=2"}, dir.path()).exit_code,
            0);
  EXPECT_EQ(RunFanout({"run", "ok.yaml", "--set", "novalue"}, dir.path()).exit_code, 6);
  EXPECT_EQ(RunFanout({"run", "ok.yaml", "--set", "nosuch=1"}, dir.path()).exit_code, 5);
  EXPECT_EQ(RunFanout({"run", "ok.yaml", "--reporting", "XYZ"}, dir.path()).exit_code, 6);
  EXPECT_EQ(RunFanout({"run", "ok.yaml", "--max-concurrent", "0"}, dir.path()).exit_code, 6);
  EXPECT_EQ(RunFanout({"run"}, dir.path()).exit_code, 6);
  // The default catalog is fanout.db in the working directory.
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/fanout.db"));
}

// A catalog scheme in capitals is refused, not taken for a file's name (QA: `SQLITE:z.db`
// made a file named so).
TEST(RunTest, ACatalogSchemeInCapitalsIsRefused) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  CommandResult r = RunFanout({"run", "ok.yaml", "--catalog", "SQLITE:z.db"}, dir.path());
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_TRUE(Contains(r.err, "catalog spec 'SQLITE:...': write its scheme in lower case, "
                              "sqlite:"))
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/SQLITE:z.db"));
}

// A SQLite catalog removed during the run takes what it recorded with it: said, not silent (QA).
TEST(RunTest, ACatalogFileRemovedDuringTheRunIsSaid) {
  ScratchDir dir;
  dir.Write("rm.yaml", "package: rm\ntasks:\n"
                       "  a: {type: process, run: [/bin/sh, -c, 'rm -f fanout.db*']}\n");
  CommandResult r = RunFanout({"run", "rm.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "fanout: warning: the catalog file fanout.db was removed or "
                              "replaced during the run"))
      << r.err;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  EXPECT_FALSE(Contains(RunFanout({"run", "ok.yaml"}, dir.path()).err, "warning")) << "kept";
}

// A bad command line is said as the command's own, naming an unknown option and the nearest
// known one (QA: `--sett x=1 ok.yaml` was "The following arguments were not expected: ok.yaml
// --sett", blaming the valid file).
TEST(RunTest, ABadCommandLineNamesTheCommandAndTheUnknownOption) {
  ScratchDir dir;
  CommandResult typo = RunFanout({"run", "--sett", "x=1", "ok.yaml"}, dir.path());
  EXPECT_EQ(typo.exit_code, 6);
  EXPECT_EQ(typo.err, "fanout run: unknown option --sett (did you mean --set?); see fanout run "
                      "--help\n");
  // An enclosing command's option, written after the subcommand as CLI11 allows.
  CommandResult outer = RunFanout({"job", "start", "--token-fle", "t", "j"}, dir.path());
  EXPECT_EQ(outer.exit_code, 6);
  EXPECT_EQ(outer.err, "fanout job start: unknown option --token-fle (did you mean "
                       "--token-file?); see fanout job start --help\n");
  CommandResult far = RunFanout({"report", "overview", "x", "--bogus"}, dir.path());
  EXPECT_EQ(far.exit_code, 6);
  EXPECT_EQ(far.err, "fanout report overview: unknown option --bogus; see fanout report overview "
                     "--help\n");
  CommandResult empty = RunFanout({"run", "ok.yaml", "--reporting", ""}, dir.path());
  EXPECT_EQ(empty.exit_code, 6);
  EXPECT_EQ(empty.err, "fanout run: --reporting: must not be empty; see fanout run --help\n");
  CommandResult twice = RunFanout({"report", "overview", "--catalog", "a.db", "--catalog", "b.db"},
                                  dir.path());
  EXPECT_EQ(twice.exit_code, 6);
  EXPECT_EQ(twice.err, "fanout report overview: --catalog was given 2 times; it takes one value; "
                       "see fanout report overview --help\n");
  // A parent's option for its child: an id of the kind fanout makes, or the catalog would
  // record any text as the id.
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  CommandResult id = RunFanout({"run", "ok.yaml", "--execution-id", "notauuid"}, dir.path());
  EXPECT_EQ(id.exit_code, 6);
  EXPECT_EQ(id.err, "fanout: --execution-id: 'notauuid' is not an execution id (a UUIDv7)\n");
}

// Output that could not be written is an error, said on stderr (QA: `> /dev/full` exited 0, a
// full disk's file cut short); a reader that went away (`| head`) is not.
TEST(RunTest, OutputThatCannotBeWrittenIsAnError) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full here";
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  const std::string fanout = FANOUT_BINARY;
  auto shell = [&](const std::string& command) {
    return std::system(("cd '" + dir.path() + "' && " + command + " 2>err.txt").c_str());
  };
  EXPECT_EQ(WEXITSTATUS(shell(fanout + " run ok.yaml > /dev/full")), 1);
  EXPECT_TRUE(Contains(dir.Read("err.txt"), "fanout: cannot write to standard output"))
      << dir.Read("err.txt");
  EXPECT_EQ(WEXITSTATUS(shell(fanout + " report executions --json > /dev/full")), 1);
  // The reader is gone before the first line is written (review: `logs --follow | head` had
  // exited 1, its own flush having met the closed pipe first).
  shell("(sleep 0.3; " + fanout + " logs --follow; echo $? > rc.txt) | true");
  EXPECT_EQ(dir.Read("rc.txt"), "0\n");
  EXPECT_EQ(dir.Read("err.txt"), "");
}

// Counts given as 0 or text name the option and say what it takes, instead of CLI11's range
// of doubles; they stay usage errors.
TEST(RunTest, CountOptionsSayTheyNeedAWholeNumber) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  for (const char* value : {"0", "abc", "-3", "1.5", "99999999999"}) {
    CommandResult r = RunFanout({"run", "ok.yaml", "--max-concurrent", value}, dir.path());
    EXPECT_EQ(r.exit_code, 6) << value;
    EXPECT_NE(r.err.find("--max-concurrent: must be a whole number"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(std::string("'") + value + "'"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("not in range"), std::string::npos) << r.err;
  }
  CommandResult slots = RunFanout({"agent", "--dev", "--slots", "0"}, dir.path());
  EXPECT_EQ(slots.exit_code, 6);
  EXPECT_NE(slots.err.find("--slots: must be a whole number of 1 or more, not '0'"),
            std::string::npos)
      << slots.err;
  CommandResult limit = RunFanout({"report", "executions", "--limit", "0"}, dir.path());
  EXPECT_EQ(limit.exit_code, 6);
  EXPECT_NE(limit.err.find("--limit: must be a whole number of 1 or more, not '0'"),
            std::string::npos)
      << limit.err;
  EXPECT_EQ(RunFanout({"run", "ok.yaml", "--max-concurrent", "2"}, dir.path()).exit_code, 0);
}

// A mistyped command is named, with the commands there are.
TEST(RunTest, UnknownCommandIsNamedWithTheCommandsThereAre) {
  ScratchDir dir;
  CommandResult r = RunFanout({"nosuchcmd"}, dir.path());
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_NE(r.err.find("unknown command 'nosuchcmd'"), std::string::npos) << r.err;
  for (const char* command : {"run", "validate", "agent", "job", "deploy", "report", "logs",
                              "catalog"}) {
    EXPECT_NE(r.err.find(command), std::string::npos) << command << " in " << r.err;
  }
  CommandResult nested = RunFanout({"report", "nosuch"}, dir.path());
  EXPECT_EQ(nested.exit_code, 6);
  EXPECT_NE(nested.err.find("fanout report: unknown command 'nosuch'"), std::string::npos)
      << nested.err;
  EXPECT_NE(nested.err.find("executions, overview"), std::string::npos) << nested.err;
  EXPECT_EQ(RunFanout({}, dir.path()).exit_code, 6);
}

// `run` on a directory says so, as `validate` does, and exits 4 as for a missing file.
TEST(RunTest, ADirectoryIsNotAPackageFile) {
  ScratchDir dir;
  CommandResult run = RunFanout({"run", dir.path()}, dir.path());
  EXPECT_EQ(run.exit_code, 4);
  EXPECT_NE(run.err.find(dir.path() + ": is a directory, not a file"), std::string::npos)
      << run.err;
  CommandResult validate = RunFanout({"validate", dir.path()}, dir.path());
  EXPECT_EQ(validate.err, run.err);
  CommandResult missing = RunFanout({"run", "missing.yaml"}, dir.path());
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_NE(missing.err.find("missing.yaml"), std::string::npos) << missing.err;
}

// A job file given to `run` is said to be one, not listed as a package lacking every key (QA).
TEST(RunTest, AJobFileIsSaidToBeOne) {
  ScratchDir dir;
  dir.Write("load.job.yaml", "job: load\nsteps:\n  - {name: s, subsystem: process, run: [true]}\n");
  CommandResult run = RunFanout({"run", "load.job.yaml"}, dir.path());
  EXPECT_EQ(run.exit_code, 5);
  EXPECT_EQ(run.err, "fanout: load.job.yaml is a job file (it has `job:`), which agents run: "
                     "deploy it with `fanout deploy load.job.yaml --agent URL`, then `fanout "
                     "job start`\n");
}

// On a terminal, a run lasting over a second keeps a progress line at the bottom, redrawn in
// place and erased before the result line; --no-progress, or a stdout that is no terminal
// (every other test here), prints none.
TEST(RunTest, ALongRunShowsProgressOnATerminal) {
  ScratchDir dir;
  dir.Write("slow.yaml", "package: slow\ntasks:\n  nap: {type: process, run: [/bin/sleep, \"2.2\"]}\n");
  CommandResult shown = RunFanoutInTerminal({"run", "slow.yaml"}, dir.path());
  ASSERT_EQ(shown.exit_code, 0) << shown.out;
  // nap started a moment after the run did: its own time may still read 0:00.
  EXPECT_TRUE(std::regex_search(
      shown.out,
      std::regex(R"(\r\[0:01\] 1 running, 0 ended, 0 failed; longest: nap \(0:0[01]\)\x1b\[K)")))
      << shown.out;
  EXPECT_NE(shown.out.find("\r\033[KPackage slow: Success"), std::string::npos) << shown.out;

  for (const char* off : {"--no-progress", "--log=console"}) {
    CommandResult hidden = RunFanoutInTerminal({"run", "slow.yaml", off}, dir.path());
    ASSERT_EQ(hidden.exit_code, 0) << hidden.out;
    EXPECT_EQ(hidden.out.find("running,"), std::string::npos) << off << ": " << hidden.out;
    EXPECT_NE(hidden.out.find("Package slow: Success"), std::string::npos) << hidden.out;
  }
}

TEST(RunTest, SetConvertsToTheDeclaredType) {
  ScratchDir dir;
  dir.Write("typed.yaml", R"(package: typed
parameters:
  count: {type: int, value: 1}
variables:
  flag: {type: bool, value: false}
tasks:
  check: {type: process, run: [/bin/sh, -c, "test $0 = 42 && test $1 = true", "${@count * 2}", "${flag}"]}
)");
  EXPECT_EQ(RunFanout({"run", "typed.yaml", "--set", "count=21", "--set", "flag=true"},
                      dir.path()).exit_code, 0);
  // Named as expressions name them too (QA: `User::count` was "no parameter of that name").
  EXPECT_EQ(RunFanout({"run", "typed.yaml", "--set", "User::count=21", "--set", "@[flag]=true"},
                      dir.path()).exit_code, 0);
  CommandResult r = RunFanout({"run", "typed.yaml", "--set", "count=many"}, dir.path());
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("count"), std::string::npos) << r.err;
}

// SIGINT and SIGTERM stop every running task, kill its whole process group (grandchildren
// too), record the execution as canceled and exit 3.
void ExpectSignalCancels(int signal) {
  ScratchDir dir;
  dir.Write("long.yaml", R"(package: long
tasks:
  wait:
    type: process
    shell: true
    run: "sleep 60 & echo $! > grandchild.pid; wait"
  after: {type: process, run: [/bin/true], after: [wait]}
)");
  int pid = StartFanout({"run", "long.yaml"}, dir.path());
  std::string pid_file = dir.path() + "/grandchild.pid";
  ASSERT_TRUE(WaitFor([&] { return !dir.Read("grandchild.pid").empty(); }, kEventually));
  int grandchild = std::stoi(dir.Read("grandchild.pid"));
  kill(pid, signal);
  EXPECT_EQ(WaitFanout(pid, kEventually), 3) << dir.Read("fanout.err");
  EXPECT_TRUE(WaitFor([&] { return kill(grandchild, 0) != 0; }, kEventually))
      << "the task's grandchild survived the cancel";
  // The summary counts the canceled task (it had said 0 of everything) and says it once, and
  // the task the cancel kept from starting.
  EXPECT_NE(dir.Read("fanout.out").find(
                "(0 succeeded, 0 failed, 1 canceled, 0 skipped, 1 not started)"),
            std::string::npos)
      << dir.Read("fanout.out");
  EXPECT_NE(dir.Read("fanout.err").find("fanout: package long was canceled\n"), std::string::npos)
      << dir.Read("fanout.err");
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto executions = catalog->ListExecutions(10);
  ASSERT_TRUE(executions.ok());
  ASSERT_EQ(executions->size(), 1u);
  EXPECT_EQ(executions->front().status, "canceled");
  EXPECT_EQ(executions->front().exit_code, 3);
  // The overview's errors had said only "canceled" (QA).
  EXPECT_EQ(executions->front().message, std::string("canceled by SIG") + sigabbrev_np(signal));
  auto runs = catalog->ListTaskRuns(executions->front().id);
  ASSERT_TRUE(runs.ok());
  for (const TaskRunRow& run : *runs) EXPECT_NE(run.task_path, "after");
}

TEST(RunTest, SigintCancels) { ExpectSignalCancels(SIGINT); }

// With a PostgreSQL catalog, whose connection has a watchdog thread started while the catalog
// opens: a Ctrl-C mid-run still cancels the run (a handler for Ctrl-C during the open, which that
// thread did not block, had ended runs at once as if nothing had run).
TEST(RunTest, SigintCancelsARunThatRecordsToPostgres) {
  const char* uri = std::getenv("FANOUT_TEST_POSTGRES");
  if (uri == nullptr || *uri == '\0') GTEST_SKIP() << "needs FANOUT_TEST_POSTGRES";
  ScratchDir dir;
  dir.Write("long.yaml", "package: long\ntasks:\n  wait: {type: process, shell: true, run: "
                         "\"touch started; sleep 60\"}\n");
  int pid = StartFanout({"run", "long.yaml", "--catalog", uri}, dir.path());
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/started"); },
                      kEventually));
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 3) << dir.Read("fanout.err");
  EXPECT_NE(dir.Read("fanout.err").find("SIGINT received, stopping every running task"),
            std::string::npos)
      << dir.Read("fanout.err");
  EXPECT_EQ(dir.Read("fanout.err").find("while opening the catalog"), std::string::npos)
      << dir.Read("fanout.err");
}
TEST(RunTest, SigtermCancels) { ExpectSignalCancels(SIGTERM); }

// An agent's package step writes its result file whatever the bytes of its reason (a task's
// stderr cut anywhere): a byte that is not UTF-8 made the JSON writer throw, and the step die of
// SIGABRT.
TEST(RunTest, AResultFileTakesAReasonThatIsNotUtf8) {
  ScratchDir dir;
  dir.Write("bytes.yaml", "package: bytes\ntasks:\n  bad: {type: process, shell: true, "
                          "run: \"printf 'bad \\\\377 byte\\\\n' >&2; exit 1\"}\n");
  CommandResult r = RunFanout({"run", "bytes.yaml", "--result-file", "result.json"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json result = nlohmann::json::parse(dir.Read("result.json"), nullptr, false);
  ASSERT_TRUE(result.is_object()) << dir.Read("result.json");
  EXPECT_EQ(result.value("exit_code", -1), 1);
  EXPECT_NE(result.value("reason", "").find("fanout: package bytes failed: "), std::string::npos)
      << result.dump();
}

// A second signal while the tasks stop says that it changes nothing (QA: it said "stopping
// every running task" again).
TEST(RunTest, ASecondSignalSaysItChangesNothing) {
  ScratchDir dir;
  dir.Write("slow-stop.yaml", "package: slow-stop\ntasks:\n  wait: {type: process, shell: true, "
                              "run: \"trap 'while :; do sleep 0.05; done' TERM; touch started; "
                              "while :; do sleep 0.05; done\"}\n");
  int pid = StartFanout({"run", "slow-stop.yaml"}, dir.path());
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/started"); },
                      kEventually));
  kill(pid, SIGINT);
  auto said = [&](const std::string& text) {
    return dir.Read("fanout.err").find(text) != std::string::npos;
  };
  ASSERT_TRUE(WaitFor([&] { return said("stopping every running task"); }, kEventually));
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 3) << dir.Read("fanout.err");
  EXPECT_TRUE(said("fanout: SIGINT received again; still stopping the running tasks (a second "
                   "signal changes nothing)"))
      << dir.Read("fanout.err");
}
// A closed terminal had killed the run on the spot, leaving its tasks (and remote children).
TEST(RunTest, SighupCancels) { ExpectSignalCancels(SIGHUP); }

// Under `nohup` (SIGHUP inherited ignored) a hang-up leaves the run alone: waiting for the
// blocked signal had undone nohup.
// A signal ignored when the run started stays ignored: SIGHUP under nohup, SIGINT for a run a
// script starts with & (QA: an ignored SIGINT or SIGTERM had canceled the run all the same).
TEST(RunTest, AnIgnoredSignalStaysIgnored) {
  ScratchDir dir;
  dir.Write("hold.yaml", "package: hold\ntasks:\n  a: {type: process, run: [/bin/sh, -c, "
                         "'touch started; until [ -e release ]; do sleep 0.05; done']}\n");
  for (int ignored : {SIGHUP, SIGINT, SIGTERM}) {
    std::filesystem::remove(dir.path() + "/started");
    std::filesystem::remove(dir.path() + "/release");
    sighandler_t before = signal(ignored, SIG_IGN);
    int pid = StartFanout({"run", "hold.yaml"}, dir.path());
    signal(ignored, before);
    ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/started"); },
                        kEventually));
    kill(pid, ignored);
    // Taken, the signal would cancel the run within about 100 ms.
    std::this_thread::sleep_for(milliseconds(300));
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, WNOHANG), 0) << "SIG" << sigabbrev_np(ignored) << " ended it";
    dir.Write("release", "");
    EXPECT_EQ(WaitFanout(pid, kEventually), 0)
        << "SIG" << sigabbrev_np(ignored) << ": " << dir.Read("fanout.err");
  }
}

// A task's output in the failure line on stderr is escaped, as logs and reports escape it: raw,
// it recoloured the terminal and set its title.
TEST(RunTest, TheFailureLineEscapesTerminalControls) {
  ScratchDir dir;
  dir.Write("x.yaml", "package: x\ntasks:\n  bad: {type: process, run: [/bin/sh, -c, "
                      "\"printf 'evil \\\\033[31mRED \\\\033]0;title\\\\007' >&2; exit 2\"]}\n");
  CommandResult r = RunFanout({"run", "x.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("evil \\x1b[31mRED \\x1b]0;title\\x07"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
}

TEST(RunTest, SensitiveValuesNeverAppear) {
  ScratchDir dir;
  const std::string secret = "pa55-w0rd-xyzzy";
  dir.Write("secret.yaml", R"(package: secret
parameters:
  password: {type: string, sensitive: true}
variables:
  said: {type: string, raise_changed_event: true}
logging:
  - {provider: text, path: pkg.log}
tasks:
  echo:
    type: process
    run: [/bin/sh, -c, "echo the password is $0; echo also $0 >&2", "${password}"]
    stdout: said
  fail:
    type: process
    run: [/bin/sh, -c, "echo cannot log in with $0 >&2; exit 2", "${password}"]
    after: [echo]
)");
  CommandResult r = RunFanout({"run", "secret.yaml", "--set", "password=" + secret, "--reporting",
                               "V", "--log", "jsonl:events.jsonl", "--log", "text:events.log"},
                              dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("cannot log in with ***"), std::string::npos) << r.out;
  for (const char* file : {"events.jsonl", "events.log", "pkg.log"}) {
    std::string content = dir.Read(file);
    EXPECT_FALSE(content.empty()) << file;
    EXPECT_EQ(content.find(secret), std::string::npos) << file << ":\n" << content;
  }
  // The catalog holds no copy either (every table, every column).
  std::string db;
  for (const char* f : {"fanout.db", "fanout.db-wal"}) db += dir.Read(f);
  EXPECT_EQ(db.find(secret), std::string::npos);
  EXPECT_NE(dir.Read("events.jsonl").find("the password is ***"), std::string::npos);
}

// A run-time expression error names where the expression is written, as validation does: the
// same expression in many tasks, or in a loop body, was otherwise hard to find.
TEST(RunTest, ARunTimeExpressionErrorNamesItsPlaceInTheFile) {
  ScratchDir dir;
  dir.Write("avg.yaml", "package: avg\nvariables:\n  files: {type: int, value: 0}\n"
                        "  avg: {type: int}\ntasks:\n"
                        "  compute: {type: expression, set: {avg: \"10 / @files\"}}\n"
                        "  show: {type: process, run: [/bin/echo, \"${10 / files}\"]}\n");
  CommandResult r = RunFanout({"run", "avg.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("compute: setting avg: evaluating '10 / @files' (avg.yaml:6:43): "
                       "division by zero"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("show: evaluating '${10 / files}' (avg.yaml:7:43): division by zero"),
            std::string::npos)
      << r.out;
  // A value its variable cannot take names the expression too (QA: only the conversion).
  dir.Write("conv.yaml", "package: conv\nvariables:\n  i: {type: int}\ntasks:\n"
                         "  t: {type: expression, set: {i: \"2.5\"}}\n");
  CommandResult conv = RunFanout({"run", "conv.yaml"}, dir.path());
  EXPECT_EQ(conv.exit_code, 1) << conv.err;
  EXPECT_NE(conv.out.find("t: setting i: '2.5' (conv.yaml:5:35): cannot assign to int variable "
                          "'i': cannot convert double '2.5' to int"),
            std::string::npos)
      << conv.out;
  // A for loop's condition that gives no bool too (QA).
  dir.Write("loop.yaml", "package: loop\nvariables:\n  i: {type: int, value: 0}\ntasks:\n"
                         "  nb: {type: for, condition: \"@i == 0 ? @i : false\", tasks: {}}\n");
  CommandResult loop = RunFanout({"run", "loop.yaml"}, dir.path());
  EXPECT_EQ(loop.exit_code, 1) << loop.err;
  EXPECT_NE(loop.out.find("nb: condition `@i == 0 ? @i : false` is not a bool (loop.yaml:5:31)"),
            std::string::npos)
      << loop.out;
}

// --set on the command line shows a secret in `ps` all night: --set-file reads it from a file
// (or standard input) instead.
TEST(RunTest, SetFileReadsAValueFromAFile) {
  ScratchDir dir;
  dir.Write("p.yaml", "package: p\nparameters:\n  pw: {type: string, sensitive: true}\ntasks:\n"
                      "  a: {type: process, run: [/bin/sh, -c, 'test \"$PW\" = S3cr3t'], "
                      "env: {PW: \"${pw}\"}}\n");
  dir.Write("pw.txt", "S3cr3t\n");
  CommandResult ok = RunFanout({"run", "p.yaml", "--set-file", "pw=pw.txt"}, dir.path());
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  CommandResult missing = RunFanout({"run", "p.yaml", "--set-file", "pw=nope.txt"}, dir.path());
  EXPECT_EQ(missing.exit_code, 4) << missing.err;
  EXPECT_NE(missing.err.find("--set-file pw: "), std::string::npos) << missing.err;
  CommandResult both =
      RunFanout({"run", "p.yaml", "--set", "pw=x", "--set-file", "pw=pw.txt"}, dir.path());
  EXPECT_EQ(both.exit_code, 6) << both.err;
  EXPECT_NE(both.err.find("pw is given by both --set and --set-file"), std::string::npos)
      << both.err;
  // A value that does not convert is said as --set-file's (it was said as --set's).
  dir.Write("n.yaml", "package: n\nparameters:\n  n: {type: int}\ntasks: {}\n");
  dir.Write("n.txt", "many\n");
  CommandResult bad = RunFanout({"run", "n.yaml", "--set-file", "n=n.txt"}, dir.path());
  EXPECT_EQ(bad.exit_code, 5) << bad.err;
  EXPECT_NE(bad.err.find("--set-file n: cannot convert"), std::string::npos) << bad.err;
  // Masked also for a parameter not declared sensitive: it had shown on the console (QA).
  dir.Write("r.yaml", "package: r\nparameters:\n  region: {type: string}\ntasks:\n"
                      "  a: {type: process, run: [/bin/sh, -c, 'echo \"bad $R\" >&2; exit 1'], "
                      "env: {R: \"${region}\"}}\n");
  dir.Write("region.txt", "RegionFromFile77\n");
  CommandResult masked = RunFanout({"run", "r.yaml", "--set-file", "region=region.txt"},
                                   dir.path());
  EXPECT_EQ(masked.exit_code, 1) << masked.err;
  EXPECT_NE(masked.err.find("bad ***"), std::string::npos) << masked.err;
  EXPECT_EQ((masked.out + masked.err).find("RegionFromFile77"), std::string::npos)
      << masked.out << masked.err;
  // Standard input serves one name: a second had silently got "".
  CommandResult twice =
      RunFanout({"run", "p.yaml", "--set-file", "pw=-", "--set-file", "other=-"}, dir.path());
  EXPECT_EQ(twice.exit_code, 6) << twice.err;
  EXPECT_NE(twice.err.find("standard input is read for one name only"), std::string::npos)
      << twice.err;
  // Endless, it is refused: it had filled the memory and aborted (QA).
  CommandResult endless = RunFanout({"run", "p.yaml", "--set-file", "pw=/dev/zero"}, dir.path());
  EXPECT_EQ(endless.exit_code, 6) << endless.err;
  EXPECT_NE(endless.err.find("--set-file pw: /dev/zero: larger than 16777216 bytes (16 MiB at "
                             "most)"), std::string::npos) << endless.err;
}

// Standard input is read from fd 0 itself, not reopened by path: /dev/stdin cannot be opened
// again when it is a socket, or a pipe another user owns (`vault ... | sudo -u etl fanout`, QA).
TEST(RunTest, SetFileReadsStandardInputThatCannotBeReopened) {
  ScratchDir dir;
  dir.Write("p.yaml", "package: p\nparameters:\n  pw: {type: string, sensitive: true}\ntasks:\n"
                      "  a: {type: process, run: [/bin/sh, -c, 'test \"$PW\" = S3cr3t'], "
                      "env: {PW: \"${pw}\"}}\n");
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(write(sv[1], "S3cr3t\n", 7), 7);
  close(sv[1]);
  const std::string command = "cd '" + dir.path() + "' && " + FANOUT_BINARY +
                              " run p.yaml --set-file pw=- 0<&" + std::to_string(sv[0]) +
                              " > out.txt 2>&1";
  int status = std::system(command.c_str());
  close(sv[0]);
  EXPECT_EQ(WEXITSTATUS(status), 0) << dir.Read("out.txt");
}

// `--log console` prints every event; the reporting console printed the errors a second time,
// and so did a package's console provider (QA).
TEST(RunTest, AConsoleLogAndReportingShowEachLineOnce) {
  ScratchDir dir;
  dir.Write("f.yaml", "package: f\nlogging: [{provider: console, events: [OnError, "
                      "OnPostExecute]}]\ntasks:\n  a: {type: process, run: [/bin/false]}\n");
  for (bool log_console : {true, false}) {
    std::vector<std::string> args = {"run", "f.yaml", "--reporting", "E"};
    if (log_console) args.insert(args.end(), {"--log", "console"});
    CommandResult r = RunFanout(args, dir.path());
    EXPECT_EQ(r.exit_code, 1) << r.err;
    for (const std::string line : {"OnError       a: /bin/false failed with exit code 1",
                                   "OnPostExecute a: process a finished: failed"}) {
      size_t first = r.out.find(line);
      ASSERT_NE(first, std::string::npos) << line << " in\n" << r.out;
      EXPECT_EQ(r.out.find(line, first + 1), std::string::npos) << line << " twice in\n" << r.out;
    }
    EXPECT_EQ(r.out.find("OnPreExecute  a: ") != std::string::npos, log_console) << r.out;
  }
}

// An agent token in the environment reaches process tasks (a child `fanout run` needs it), but
// not the catalog or the console when a task prints it (QA: `env` stored $FANOUT_TOKEN).
TEST(RunTest, AgentTokensFromTheEnvironmentAreMasked) {
  ScratchDir dir;
  dir.Write("p.yaml", "package: p\nvariables:\n"
                      "  tokvar: {type: string, value: PARENT_AGENT_TOKEN}\nconnections:\n"
                      "  a: {type: agent, url: 'http://127.0.0.1:9', token_env: '${tokvar}'}\n"
                      "tasks:\n"
                      "  t: {type: process, run: [/bin/sh, -c, 'echo $FANOUT_TOKEN; "
                      "echo $PARENT_AGENT_TOKEN; exit 1']}\n");
  setenv("FANOUT_TOKEN", "DefaultEnvToken1234", 1);
  setenv("PARENT_AGENT_TOKEN", "ConnectionEnvToken5678", 1);
  CommandResult r = RunFanout({"run", "p.yaml", "--reporting", "V"}, dir.path());
  unsetenv("FANOUT_TOKEN");
  unsetenv("PARENT_AGENT_TOKEN");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  CommandResult logs = RunFanout({"logs"}, dir.path());
  EXPECT_TRUE(Contains(logs.out, "| ***\n    | ***")) << logs.out;
  std::string db;
  for (const char* f : {"fanout.db", "fanout.db-wal"}) db += dir.Read(f);
  for (const char* token : {"DefaultEnvToken1234", "ConnectionEnvToken5678"}) {
    EXPECT_FALSE(Contains(r.out + r.err, token)) << r.out << r.err;
    EXPECT_FALSE(Contains(db, token)) << token;
  }
}

// A parent's secret stays masked in a child that does not declare its parameter sensitive,
// in process and out of process.
TEST(RunTest, ParentSecretsStayMaskedInChildren) {
  ScratchDir dir;
  const std::string secret = "t0ps3cret-for-child";
  dir.Write("child.yaml", "package: child\nparameters:\n  key: {type: string}\ntasks:\n"
                          "  show: {type: process, run: [/bin/sh, -c, \"echo key=$0; exit 1\", \"${key}\"]}\n");
  dir.Write("parent.yaml", "package: parent\nmaximum_error_count: 2\nparameters:\n"
                           "  key: {type: string, sensitive: true}\ntasks:\n"
                           "  in: {type: package, path: child.yaml, params: {key: \"${key}\"}}\n"
                           "  out: {type: package, path: child.yaml, out_of_process: true, "
                           "params: {key: \"${key}\"}}\n");
  CommandResult r = RunFanout({"run", "parent.yaml", "--set", "key=" + secret, "--reporting", "V"},
                              dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ((r.out + r.err).find(secret), std::string::npos) << r.out << r.err;
  std::string db;
  for (const char* f : {"fanout.db", "fanout.db-wal"}) db += dir.Read(f);
  EXPECT_EQ(db.find(secret), std::string::npos);
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto events = catalog->ListEvents(EventQuery{});
  ASSERT_TRUE(events.ok());
  int masked = 0;
  for (const Event& e : *events) masked += e.data_bytes.find("key=***") != std::string::npos;
  EXPECT_EQ(masked, 2) << "both children's output should be recorded, masked";
  // The child process's reason, quoted without its own "fanout: " (SSIS QA).
  EXPECT_TRUE(Contains(r.out + r.err, "failed (exit code 1): package child failed: show: "))
      << r.out << r.err;
}

// A program says why it failed at the end: past the capture limit too, the failure's message
// and the event's output end with its last lines (QA: they showed byte 64 Ki of 1 MB).
TEST(RunTest, AFailureAfterMuchOutputSaysItsLastLines) {
  ScratchDir dir;
  dir.Write("noisy.yaml",
            "package: noisy\ntasks:\n  t: {type: process, run: [/bin/sh, -c, 'seq 1 30000 >&2; "
            "seq 1 30000; echo out-end; echo FATAL: the real reason >&2; exit 1']}\n");
  CommandResult r = RunFanout({"run", "noisy.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "failed with exit code 1: ...") &&
              Contains(r.err, "29999\\n30000\\nFATAL: the real reason\n"))
      << r.err;
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto events = catalog->ListEvents(EventQuery{});
  ASSERT_TRUE(events.ok());
  std::string output;
  for (const Event& e : *events) output += e.data_bytes;
  EXPECT_TRUE(Contains(output, "30000\nout-end\n")) << output.substr(0, 200);
  EXPECT_TRUE(Contains(output, "30000\nFATAL: the real reason")) << output.substr(0, 200);
}

// A value that is not UTF-8 (a Latin-1 file name, say) cannot travel as JSON: the child's task
// fails saying so, where the parent had aborted (QA: "terminate called ... invalid UTF-8").
// In process, the child gets it as it is.
TEST(RunTest, AParamThatIsNotUtf8FailsItsOutOfProcessChildAndNothingElse) {
  ScratchDir dir;
  dir.Write("child.yaml", "package: child\nparameters:\n  name: {type: string}\ntasks:\n"
                          "  show: {type: process, run: [/bin/echo, \"${name}\"]}\n");
  dir.Write("parent.yaml", "package: parent\nmaximum_error_count: 2\nparameters:\n"
                           "  name: {type: string}\ntasks:\n"
                           "  in: {type: package, path: child.yaml, params: {name: \"${name}\"}}\n"
                           "  out: {type: package, path: child.yaml, out_of_process: true, "
                           "params: {name: \"${name}\"}}\n");
  CommandResult r = RunFanout({"run", "parent.yaml", "--set", "name=caf\xe9.csv"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;  // maximum_error_count: 2
  EXPECT_TRUE(Contains(r.out + r.err, "out: param name: its value is not UTF-8 text (byte 3 is "
                                      "0xE9)"))
      << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "(1 succeeded, 1 failed")) << r.out;
}

// An out-of-process child's command line, which `ps` shows to every user, holds no catalog spec
// (a PostgreSQL URI may carry a password): the child reads it from stdin.
TEST(RunTest, AChildProcessCommandLineHoldsNoCatalogSpec) {
  ScratchDir dir;
  dir.Write("child.yaml", "package: child\ntasks:\n  ps: {type: process, run: [/bin/sh, -c, "
                          "\"tr '\\\\000' ' ' < /proc/$PPID/cmdline > cmdline.txt\"]}\n");
  dir.Write("parent.yaml", "package: parent\ntasks:\n"
                           "  out: {type: package, path: child.yaml, out_of_process: true}\n");
  CommandResult r = RunFanout({"run", "parent.yaml", "--catalog", "sqlite:pw-in-spec.db"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string cmdline = dir.Read("cmdline.txt");
  EXPECT_TRUE(cmdline.ends_with(" --argv-from-stdin ")) << cmdline;
  EXPECT_EQ(cmdline.find("pw-in-spec"), std::string::npos) << cmdline;
}

// `--argv-from-stdin` reads the whole command line from stdin: words after it would be
// ignored, so they are a usage error (QA: `fanout --argv-from-stdin run` said "file is required").
TEST(RunTest, ArgvFromStdinTakesNoOtherArguments) {
  ScratchDir dir;
  CommandResult r = RunFanout({"--argv-from-stdin", "run", "p.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 6) << r.out << r.err;
  EXPECT_NE(r.err.find("--argv-from-stdin takes the whole command line from stdin"),
            std::string::npos)
      << r.err;
}

// An out-of-process child stopped from outside (SIGTERM to its process, or SIGKILL) did not do
// its work: its task fails with a message that says so, and what follows it is skipped.
TEST(RunTest, AChildProcessStoppedFromOutsideFailsItsTask) {
  for (int signal : {SIGTERM, SIGKILL}) {
    ScratchDir dir;
    dir.Write("child.yaml", "package: child\ntasks:\n  wait: {type: process, run: [/bin/sh, -c, "
                            "'echo $PPID > child.pid; echo $$ > task.pid; exec sleep 30']}\n");
    dir.Write("parent.yaml", "package: parent\ntasks:\n"
                             "  out: {type: package, path: child.yaml, out_of_process: true}\n"
                             "  next: {type: process, run: [/bin/true], after: [out]}\n");
    int run = StartFanout({"run", "parent.yaml"}, dir.path());
    ASSERT_TRUE(WaitFor([&] { return !dir.Read("task.pid").empty(); }, kEventually));
    kill(std::stoi(dir.Read("child.pid")), signal);
    EXPECT_EQ(WaitFanout(run, kEventually), 1) << "signal " << signal;
    kill(std::stoi(dir.Read("task.pid")), SIGKILL);  // a SIGKILLed child leaves it behind

    auto catalog = OpenTestCatalog(dir.path());
    ASSERT_NE(catalog, nullptr);
    auto parent = catalog->ListExecutions(0);
    ASSERT_TRUE(parent.ok());
    ASSERT_FALSE(parent->empty());
    auto runs = catalog->ListTaskRuns(parent->back().id);  // the oldest: the parent
    ASSERT_TRUE(runs.ok());
    std::map<std::string, TaskRunRow> by_path;
    for (const TaskRunRow& r : *runs) by_path[r.task_path] = r;
    EXPECT_EQ(by_path["out"].status, "failed") << "signal " << signal;
    EXPECT_NE(by_path["out"].message.find(signal == SIGKILL ? "killed by signal 9"
                                                            : "not by this run"),
              std::string::npos)
        << by_path["out"].message;
    EXPECT_EQ(by_path["next"].status, "skipped") << "signal " << signal;
  }
}

// `files` is a pattern, but the package's folder is a path: a package in a folder named with
// pattern characters still finds its files, and a pattern escapes its own.
TEST(RunTest, ForeachFilesInAFolderWithPatternCharacters) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path() + "/night[1]/in[2]");
  dir.Write("night[1]/in[2]/a.csv", "a\n");
  dir.Write("night[1]/p.yaml", "package: p\ntasks:\n  each:\n    type: foreach\n"
                               "    files: 'in\\[2\\]/*.csv'\n    as: f\n    tasks:\n"
                               "      show: {type: process, run: [/bin/sh, -c, 'echo \"$0\" >> seen.txt', '${f}']}\n");
  CommandResult r = RunFanout({"run", "night[1]/p.yaml"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(dir.Read("night[1]/seen.txt"), dir.path() + "/night[1]/in[2]/a.csv\n");  // cwd: its folder
}

TEST(RunTest, LogProvidersWriteEvents) {
  ScratchDir dir;
  dir.Write("log.yaml", "package: log\ntasks:\n  a: {type: process, run: [/bin/echo, hi]}\n");
  CommandResult r = RunFanout({"run", "log.yaml", "--log", "jsonl:e.jsonl", "--log", "text:e.log"},
                              dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string jsonl = dir.Read("e.jsonl");
  EXPECT_NE(jsonl.find("\"event\":\"OnPreExecute\""), std::string::npos) << jsonl;
  EXPECT_NE(jsonl.find("\"event\":\"OnPostExecute\""), std::string::npos) << jsonl;
  std::string text = dir.Read("e.log");
  EXPECT_EQ(text.rfind("#Fields: event,computer,operator,source", 0), 0u) << text;
  EXPECT_NE(text.find("OnInformation"), std::string::npos);
  EXPECT_NE(r.out.find("Package log: Success"), std::string::npos) << r.out;
}

TEST(RunTest, ChildExecutionsLinkToTheParent) {
  ScratchDir dir;
  dir.Write("child.yaml", "package: child\nparameters:\n  x: {type: int, required: true}\n"
                          "tasks:\n  a: {type: process, run: [/bin/sh, -c, \"test $0 = 7\", \"${x}\"]}\n");
  dir.Write("parent.yaml", "package: parent\ntasks:\n"
                           "  in: {type: package, path: child.yaml, params: {x: \"7\"}}\n"
                           "  out: {type: package, path: child.yaml, out_of_process: true, "
                           "params: {x: \"${3 + 4}\"}}\n");
  CommandResult r = RunFanout({"run", "parent.yaml"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto all = catalog->ListExecutions(10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  std::string parent_id;
  for (const auto& e : *all) {
    if (e.package == "parent") parent_id = e.id;
  }
  auto children = catalog->ListChildExecutions(parent_id);
  ASSERT_TRUE(children.ok());
  ASSERT_EQ(children->size(), 2u);
  auto runs = catalog->ListTaskRuns(parent_id);
  ASSERT_TRUE(runs.ok());
  for (const TaskRunRow& run : *runs) {
    if (run.status != "succeeded") continue;
    bool linked = run.child_execution_id == (*children)[0].id ||
                  run.child_execution_id == (*children)[1].id;
    EXPECT_TRUE(linked) << run.task_path << " -> " << run.child_execution_id;
  }
}

// A running package task names its child in the catalog already, in and out of process: the
// overview of a running or killed parent showed "-" for each child.
TEST(RunTest, ARunningPackageTaskIsLinkedToItsChild) {
  ScratchDir dir;
  dir.Write("child.yaml", "package: child\nparameters:\n  name: {type: string}\ntasks:\n"
                          "  wait: {type: process, run: [/bin/sh, -c, 'touch $0.started; "
                          "while [ ! -e release ]; do sleep 0.02; done', \"${name}\"]}\n");
  dir.Write("parent.yaml", "package: parent\ntasks:\n"
                           "  in: {type: package, path: child.yaml, params: {name: in}}\n"
                           "  out: {type: package, path: child.yaml, out_of_process: true, "
                           "params: {name: out}}\n");
  int run = StartFanout({"run", "parent.yaml"}, dir.path());
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/in.started"); },
                      kEventually));
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/out.started"); },
                      kEventually));
  std::map<std::string, TaskRunRow> running;
  std::vector<ExecutionRow> children;
  bool linked = WaitFor(
      [&] {
        auto catalog = OpenTestCatalog(dir.path());
        if (catalog == nullptr) return false;
        auto executions = catalog->ListExecutions(0);
        if (!executions.ok() || executions->empty()) return false;
        auto runs = catalog->ListTaskRuns(executions->back().id);  // the oldest: the parent
        if (!runs.ok()) return false;
        for (const TaskRunRow& r : *runs) running[r.task_path] = r;
        auto kids = catalog->ListChildExecutions(executions->back().id);
        if (kids.ok()) children = *kids;
        return children.size() == 2 && !running["in"].child_execution_id.empty() &&
               !running["out"].child_execution_id.empty();
      },
      kEventually);
  dir.Write("release", "");
  EXPECT_EQ(WaitFanout(run, kEventually), 0) << dir.Read("fanout.err");
  ASSERT_TRUE(linked) << "in -> '" << running["in"].child_execution_id << "', out -> '"
                      << running["out"].child_execution_id << "', " << children.size()
                      << " children";
  EXPECT_EQ(running["in"].status, "running");
  EXPECT_EQ(running["out"].status, "running");
  for (const char* task : {"in", "out"}) {
    bool found = std::any_of(children.begin(), children.end(), [&](const ExecutionRow& e) {
      return e.id == running[task].child_execution_id;
    });
    EXPECT_TRUE(found) << task << " -> " << running[task].child_execution_id;
  }
}

// Output captured into a variable that cannot hold it: the process's event (exit code, output)
// is still logged, and a failed exit is the task's error before the failed assignment.
TEST(RunTest, ACaptureThatDoesNotFitKeepsTheOutputEvent) {
  ScratchDir dir;
  dir.Write("cap.yaml", "package: cap\nmaximum_error_count: 2\nvariables: {n: {type: int, value: 0}}\n"
                        "tasks:\n"
                        "  fits-not: {type: process, run: [/bin/echo, notanint], stdout: n}\n"
                        "  fails: {type: process, run: [/bin/sh, -c, 'echo word; exit 3'], stdout: n}\n");
  CommandResult r = RunFanout({"run", "cap.yaml", "--log", "jsonl:events.jsonl"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  std::string events = dir.Read("events.jsonl");
  EXPECT_NE(events.find("\"message\":\"/bin/echo exited with code 0\""), std::string::npos) << events;
  EXPECT_NE(events.find("stdout:\\nnotanint"), std::string::npos) << events;
  EXPECT_NE(events.find("cannot convert string 'notanint' to int"), std::string::npos) << events;
  EXPECT_NE(events.find("\"message\":\"/bin/sh failed with exit code 3\""), std::string::npos) << events;
  EXPECT_EQ(events.find("cannot convert string 'word'"), std::string::npos) << events;
}

// A list parameter's items keep their types on the way to a child run as its own process, as
// they do in this one: a row's number stayed a number (QA: out of process, `@n + 1` of item 1
// gave "11", and rows arrived as the strings "[eu, 1]").
TEST(RunTest, AChildGetsListItemsOfTheirTypesInAnyProcess) {
  ScratchDir dir;
  dir.Write("child.yaml", RowSummingChild("child"));
  for (const char* out_of_process : {"false", "true"}) {
    dir.Write("parent.yaml", std::string(R"(package: parent
variables:
  rows: {type: list, value: [[eu, 1], [us, 2.5]]}
tasks:
  child: {type: package, path: child.yaml, params: {rows: "${rows}"}, out_of_process: )") +
                                 out_of_process + "}\n");
    CommandResult r = RunFanout({"run", "parent.yaml"}, dir.path());
    EXPECT_EQ(r.exit_code, 0) << "out_of_process: " << out_of_process << "\n" << r.out << r.err;
  }
}

// A child package in this process stopped by its task's timeout says it timed out, not that it
// was canceled (QA: "cancel requested" and "timed out after 500.0 ms (child package slow was
// canceled: canceled)").
TEST(RunTest, AChildStoppedByItsTasksTimeoutSaysSo) {
  ScratchDir dir;
  dir.Write("slow.yaml", "package: slow\ntasks:\n  s: {type: process, run: [sleep, \"30\"]}\n");
  dir.Write("parent.yaml", "package: parent\ntasks:\n"
                           "  inp: {type: package, path: slow.yaml, timeout: 200ms}\n");
  CommandResult r = RunFanout({"run", "parent.yaml"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "inp > slow: the task running this package timed out")) << r.out;
  EXPECT_FALSE(Contains(r.out + r.err, "cancel")) << r.out << r.err;
  EXPECT_TRUE(Contains(r.err, "fanout: package parent failed: inp: timed out after 200.0 ms\n"))
      << r.err;
  // The child's own record says why it stopped.
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto executions = catalog->ListExecutions(10);
  ASSERT_TRUE(executions.ok());
  auto child = std::find_if(executions->begin(), executions->end(),
                            [](const ExecutionRow& e) { return e.package == "slow"; });
  ASSERT_NE(child, executions->end());
  EXPECT_EQ(child->message, "canceled by the timeout of task inp in the parent");
}

// A child package in a process of its own says its parent stopped it, and goes when its
// parent's process does, even SIGKILLed (QA: "canceled by SIGTERM"; it ran on, its parent gone).
TEST(RunTest, AChildInItsOwnProcessSaysItsParentStoppedItAndGoesWithIt) {
  ScratchDir dir;
  dir.Write("slow.yaml", "package: slow\ntasks:\n"
                         "  s: {type: process, run: [/bin/sh, -c, 'echo $$ > task.pid; exec sleep "
                         "30']}\n");
  dir.Write("parent.yaml", "package: parent\ntasks:\n"
                           "  oop: {type: package, path: slow.yaml, out_of_process: true}\n");
  std::set<std::string> seen;  // the children of earlier runs
  auto child_message = [&] {
    auto catalog = OpenTestCatalog(dir.path());
    if (catalog == nullptr) return std::string("no catalog");
    auto executions = catalog->ListExecutions(10);
    if (!executions.ok()) return executions.status().ToString();
    for (const ExecutionRow& e : *executions) {
      if (e.package == "slow" && e.ended_at && seen.count(e.id) == 0) {
        seen.insert(e.id);
        return e.message;
      }
    }
    return std::string("no ended child");
  };
  // Runs the parent until its child's task runs, sends `signal` to the parent, and returns the
  // message the child recorded.
  auto child_after = [&](int signal, int parent_exit) {
    std::filesystem::remove(dir.path() + "/task.pid");
    const int parent = StartFanout({"run", "parent.yaml"}, dir.path());
    EXPECT_TRUE(WaitFor([&] { return dir.Read("task.pid").ends_with("\n"); },
                        kEventually));
    const pid_t task = std::stoi("0" + dir.Read("task.pid"));
    kill(parent, signal);
    EXPECT_EQ(WaitFanout(parent, kEventually), parent_exit);
    // The child's task is stopped as any canceled task is: SIGTERM to its group.
    EXPECT_TRUE(WaitFor([&] { return task > 0 && kill(task, 0) != 0; }, kEventually))
        << "the child's task still runs";
    std::string message;
    WaitFor([&] { return (message = child_message()) != "no ended child"; },
            kEventually);
    return message;
  };
  const std::string stopped = child_after(SIGTERM, 3);
  EXPECT_TRUE(stopped.starts_with("canceled by its parent package (SIGTERM from its process, "))
      << stopped;
  const std::string orphaned = child_after(SIGKILL, 128 + SIGKILL);
  EXPECT_TRUE(orphaned.starts_with("canceled by the end of its parent package's process ("))
      << orphaned;
}

// A sensitive list of rows is secret value by value, in a child that loops over it too (QA:
// `as: [a, b]` showed a=abcd b=5555); and a child's failure of several lines reaches its
// parent whole, on one line (QA: only its last line did).
TEST(RunTest, SensitiveRowsStayMaskedAndAChildsWholeFailureReachesItsParent) {
  ScratchDir dir;
  dir.Write("child.yaml", R"(package: child
parameters:
  rows: {type: list}
tasks:
  each:
    type: foreach
    items: "${rows}"
    as: [a, b]
    tasks:
      p:
        type: process
        run: [/bin/sh, -c, 'echo "a=$0" >&2; echo "b=$1" >&2; exit 4', "${a}", "${b}"]
)");
  dir.Write("parent.yaml", R"(package: parent
parameters:
  rows: {type: list, sensitive: true, value: [[abcd-secret, 55551]]}
tasks:
  out: {type: package, path: child.yaml, out_of_process: true, params: {rows: "${rows}"}}
)");
  CommandResult r = RunFanout({"run", "parent.yaml", "--reporting", "V"}, dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_FALSE(Contains(r.out + r.err, "abcd-secret")) << r.out << r.err;
  EXPECT_FALSE(Contains(r.out + r.err, "55551")) << r.out << r.err;
  EXPECT_TRUE(Contains(r.err, "a=***\\nb=***")) << r.err;
}

// A child that cannot be loaded, run as its own process or in this one: the parent shows every
// problem, not only the child's "2 problems found" or its first one.
TEST(RunTest, AChildThatCannotLoadSaysWhy) {
  ScratchDir dir;
  dir.Write("broken.yaml", "package: broken\ntasks:\n  a: {type: nope}\n"
                           "  b: {type: process, run: [/bin/echo, '${nosuch}']}\n");
  for (const char* out_of_process : {"true", "false"}) {
    dir.Write("parent.yaml", std::string("package: parent\ntasks:\n"
                                         "  out: {type: package, path: broken.yaml, "
                                         "out_of_process: ") + out_of_process + "}\n");
    CommandResult r = RunFanout({"run", "parent.yaml"}, dir.path());
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("broken.yaml:3:13: error: unknown task type 'nope'"), std::string::npos)
        << "out_of_process: " << out_of_process << "\n" << r.err;
    EXPECT_NE(r.err.find("unknown variable or parameter 'nosuch'"), std::string::npos)
        << "out_of_process: " << out_of_process << "\n" << r.err;
  }
}

// A package that runs itself, in this process or through a child run as its own process, fails
// at once naming the loop, rather than nesting until threads or processes run out.
TEST(RunTest, APackageThatRunsItselfFailsNamingTheLoop) {
  ScratchDir dir;
  dir.Write("self.yaml", "package: self\ntasks:\n  again: {type: package, path: self.yaml}\n");
  dir.Write("a.yaml", "package: a\ntasks:\n  to-b: {type: package, path: b.yaml, out_of_process: true}\n");
  dir.Write("b.yaml", "package: b\ntasks:\n  to-a: {type: package, path: a.yaml}\n");
  CommandResult self = RunFanout({"run", "self.yaml"}, dir.path());
  EXPECT_EQ(self.exit_code, 1) << self.out << self.err;
  std::string path = std::filesystem::canonical(dir.path()).string();
  EXPECT_NE(self.err.find("would run itself (" + path + "/self.yaml -> " + path + "/self.yaml)"),
            std::string::npos)
      << self.err;
  CommandResult loop = RunFanout({"run", "a.yaml"}, dir.path());
  EXPECT_EQ(loop.exit_code, 1) << loop.out << loop.err;
  EXPECT_NE(loop.err.find("(" + path + "/a.yaml -> " + path + "/b.yaml -> " + path + "/a.yaml)"),
            std::string::npos)
      << loop.err;
}

}  // namespace
}  // namespace fanout::testing

namespace fanout::testing {
namespace {

TEST(CatalogPruneTest, RemovesOnlyExecutionsOlderThanTheCutoff) {
  ScratchDir dir;
  dir.Write("p.yaml", "package: p\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  ASSERT_EQ(RunFanout({"run", "p.yaml"}, dir.path()).exit_code, 0);
  CommandResult keep = RunFanout({"catalog", "prune", "--older-than", "1h"}, dir.path());
  EXPECT_EQ(keep.exit_code, 0) << keep.err;
  EXPECT_NE(keep.out.find("pruned 0 executions"), std::string::npos) << keep.out;
  CommandResult preview =
      RunFanout({"catalog", "prune", "--older-than", "0s", "--dry-run"}, dir.path());
  EXPECT_EQ(preview.exit_code, 0) << preview.err;
  EXPECT_NE(preview.out.find("would prune 1 execution, 1 task run"), std::string::npos)
      << preview.out;
  EXPECT_NE(preview.out.find("(--dry-run: nothing was deleted)"), std::string::npos) << preview.out;
  {
    auto catalog = OpenTestCatalog(dir.path());
    ASSERT_NE(catalog, nullptr);
    EXPECT_EQ(catalog->ListExecutions(10)->size(), 1u) << "the dry run deleted";
  }
  CommandResult drop = RunFanout({"catalog", "prune", "--older-than", "0s"}, dir.path());
  EXPECT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.out.find("pruned 1 execution, 1 task run"), std::string::npos) << drop.out;
  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  EXPECT_TRUE(catalog->ListExecutions(10)->empty());
  EXPECT_EQ(RunFanout({"catalog", "prune", "--older-than", "soon"}, dir.path()).exit_code, 6);
  // A number without a unit would be seconds: `--older-than 30` would empty the catalog.
  CommandResult no_unit = RunFanout({"catalog", "prune", "--older-than", "30"}, dir.path());
  EXPECT_EQ(no_unit.exit_code, 6);
  EXPECT_NE(no_unit.err.find("'30' has no unit"), std::string::npos) << no_unit.err;
  CommandResult date = RunFanout({"catalog", "prune", "--older-than", "2026-01-01"}, dir.path());
  EXPECT_EQ(date.exit_code, 6);
  EXPECT_NE(date.err.find("'2026-01-01' is a date; give an age back from now instead"),
            std::string::npos)
      << date.err;
  // --since reads ages the same way: 24 is not 24 seconds.
  CommandResult since = RunFanout({"report", "executions", "--since", "24"}, dir.path());
  EXPECT_EQ(since.exit_code, 6);
  EXPECT_NE(since.err.find("'24' has no unit"), std::string::npos) << since.err;
  EXPECT_EQ(RunFanout({"catalog", "prune"}, dir.path()).exit_code, 6);
}

// A mistyped --catalog path is refused, as the reports refuse it, instead of creating an empty
// catalog there and pruning nothing from it.
TEST(CatalogPruneTest, RefusesASqliteCatalogThatDoesNotExist) {
  ScratchDir dir;
  const std::string spec = "sqlite:" + dir.path() + "/typo.db";
  CommandResult r = RunFanout({"catalog", "prune", "--older-than", "30d", "--catalog", spec},
                              dir.path());
  EXPECT_EQ(r.exit_code, 4) << r.out;
  EXPECT_NE(r.err.find("fanout catalog prune: catalog " + spec + " does not exist"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/typo.db"));
}

}  // namespace
}  // namespace fanout::testing
