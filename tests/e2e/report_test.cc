// `fanout report` and `fanout logs` end to end: reports over a catalog written by real runs of
// parent packages with in-process and out-of-process children, the HTML timeline rendered by
// headless Chromium, and `logs --follow` streaming a run while it goes.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "common/subprocess.h"
#include "e2e/e2e_util.h"

namespace fanout::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kChromium = "/usr/bin/chromium";

// A child that takes `delay` seconds and fails when its region is "fail".
constexpr const char* kChild = R"(package: load-region
parameters:
  region: {type: string, required: true}
  delay: {type: string, value: "0.1"}
tasks:
  extract:
    type: process
    run: [/bin/sh, -c, "sleep $0; echo extracted $1", "${delay}", "${region}"]
  load:
    type: process
    run: [/bin/sh, -c, "test $0 != fail || { echo cannot load $0 >&2; exit 3; }", "${region}"]
    after: [extract]
)";

// A parent running `regions` as children, alternately in process and out of process.
std::string ParentPackage(const std::vector<std::string>& regions) {
  std::string yaml =
      "package: nightly\nmaximum_error_count: 10\nparameters:\n"
      "  day: {type: string, value: \"2026-11-26\"}\n"
      "  password: {type: string, sensitive: true}\ntasks:\n";
  for (size_t i = 0; i < regions.size(); ++i) {
    yaml += "  " + regions[i] + ": {type: package, path: child.yaml" +
            (i % 2 == 1 ? ", out_of_process: true" : "") + ", params: {region: " + regions[i] +
            ", delay: \"0." + std::to_string(1 + i % 3) + "\"}}\n";
  }
  return yaml;
}

// Runs the parent and returns its execution id (read from the catalog).
std::string RunParent(const ScratchDir& dir, const std::vector<std::string>& regions,
                      int expected_exit) {
  dir.Write("child.yaml", kChild);
  dir.Write("parent.yaml", ParentPackage(regions));
  CommandResult run =
      RunFanout({"run", "parent.yaml", "--set", "password=s3cr3t-value"}, dir.path());
  EXPECT_EQ(run.exit_code, expected_exit) << run.out << run.err;
  auto catalog = OpenTestCatalog(dir.path());
  if (catalog == nullptr) return "";
  auto executions = catalog->ListExecutions(100);
  if (!executions.ok()) return "";
  for (const ExecutionRow& e : *executions) {
    if (e.package == "nightly") return e.id;
  }
  ADD_FAILURE() << "no nightly execution in the catalog";
  return "";
}

int CountLines(const std::string& text, const std::string& needle) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
  return n;
}

TEST(ReportCommandTest, HelpEmptyCatalogAndUsageErrors) {
  ScratchDir dir;
  for (auto args : std::vector<std::vector<std::string>>{{"report", "--help"},
                                                         {"report", "executions", "--help"},
                                                         {"report", "overview", "--help"},
                                                         {"logs", "--help"}}) {
    CommandResult r = RunFanout(args, dir.path());
    EXPECT_EQ(r.exit_code, 0) << args[0];
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }

  // No catalog yet: empty answers, and no catalog file made by reading.
  CommandResult empty = RunFanout({"report", "executions"}, dir.path());
  EXPECT_EQ(empty.exit_code, 0) << empty.err;
  EXPECT_NE(empty.out.find("No executions"), std::string::npos) << empty.out;
  CommandResult empty_json = RunFanout({"report", "executions", "--json"}, dir.path());
  EXPECT_EQ(empty_json.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(empty_json.out), nlohmann::json::array());
  // logs refuses a catalog that does not exist (a mistyped --catalog would otherwise print
  // nothing and exit 0), as overview does.
  CommandResult no_logs = RunFanout({"logs"}, dir.path());
  EXPECT_EQ(no_logs.exit_code, 4) << no_logs.err;
  EXPECT_EQ(no_logs.out, "");
  EXPECT_NE(no_logs.err.find("fanout logs: catalog sqlite:fanout.db does not exist"),
            std::string::npos)
      << no_logs.err;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/fanout.db"));

  const std::string unknown = "01234567-89ab-7cde-8f01-23456789abcd";
  CommandResult missing = RunFanout({"report", "overview", unknown}, dir.path());
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_NE(missing.err.find(unknown), std::string::npos) << missing.err;
  EXPECT_EQ(RunFanout({"logs", "--execution", unknown}, dir.path()).exit_code, 4);

  // An empty catalog that exists.
  auto created = OpenTestCatalog(dir.path());
  ASSERT_NE(created, nullptr);
  created.reset();
  EXPECT_EQ(RunFanout({"report", "executions"}, dir.path()).exit_code, 0);
  CommandResult missing_in_db = RunFanout({"report", "overview", unknown}, dir.path());
  EXPECT_EQ(missing_in_db.exit_code, 4);
  EXPECT_NE(missing_in_db.err.find(unknown), std::string::npos) << missing_in_db.err;
  // The catalog comes first (QA: "... 8 of its first or last characters in catalog X").
  CommandResult short_id = RunFanout({"logs", "--execution", "01a21f8"}, dir.path());
  EXPECT_EQ(short_id.exit_code, 4);
  EXPECT_EQ(short_id.err, "fanout logs: catalog sqlite:fanout.db: no execution '01a21f8'; give "
                          "the full id or at least 8 of its first or last characters\n");

  for (auto args :
       std::vector<std::vector<std::string>>{{"report"},
                                             {"report", "executions", "--status", "bogus"},
                                             {"report", "executions", "--since", "yesterday"},
                                             {"report", "executions", "--limit", "0"},
                                             {"report", "executions", "--no-such-flag"},
                                             {"report", "executions", "--catalog", "mysql://x"},
                                             {"report", "overview"},
                                             {"logs", "--event", "OnBogus"},
                                             {"logs", "--children"},
                                             {"logs", "--catalog", "nope"},
                                             // Empty values are not "no option".
                                             {"logs", "--execution", ""},
                                             {"report", "executions", "--html", ""},
                                             {"report", "executions", "--catalog", ""}}) {
    CommandResult r = RunFanout(args, dir.path());
    EXPECT_EQ(r.exit_code, 6) << ::testing::PrintToString(args) << r.err;
  }
}

// Reading commands given another application's database (or an empty file) refuse it untouched;
// they had created their tables in it and switched it to WAL.
TEST(ReportCommandTest, AnotherApplicationsDatabaseIsNotTakenForACatalog) {
  ScratchDir dir;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() + "/app.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE customers(id INTEGER PRIMARY KEY)", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  dir.Write("empty.db", "");
  for (auto args : std::vector<std::vector<std::string>>{
           {"report", "executions"}, {"logs"}, {"catalog", "prune", "--older-than", "1d"}}) {
    std::vector<std::string> app = args;
    app.insert(app.end(), {"--catalog", "app.db"});
    CommandResult r = RunFanout(app, dir.path());
    EXPECT_EQ(r.exit_code, 4) << ::testing::PrintToString(app) << r.err;
    EXPECT_NE(r.err.find("'app.db' is not a Fanout catalog"), std::string::npos) << r.err;
    // A file with no table is what a run creating its catalog leaves for a moment: no catalog
    // yet, as a missing file (`logs --follow` had ended there, saying "not a Fanout catalog").
    std::vector<std::string> empty = args;
    empty.insert(empty.end(), {"--catalog", "empty.db"});
    CommandResult none = RunFanout(empty, dir.path());
    EXPECT_EQ(none.err.find("not a Fanout catalog"), std::string::npos) << none.err;
    if (args[0] != "report") {
      EXPECT_EQ(none.exit_code, 4) << ::testing::PrintToString(empty) << none.err;
      EXPECT_NE(none.err.find("does not exist"), std::string::npos) << none.err;
    }
  }
  // Following all executions may create a catalog that does not exist yet, but not this one.
  CommandResult follow = RunFanout({"logs", "--follow", "--catalog", "app.db"}, dir.path());
  EXPECT_EQ(follow.exit_code, 4) << follow.err;
  EXPECT_EQ(std::filesystem::file_size(dir.path() + "/empty.db"), 0u);
  ASSERT_EQ(sqlite3_open((dir.path() + "/app.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* tables = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &tables, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(tables), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(tables, 0), 1) << "only the application's own table";
  sqlite3_finalize(tables);
  sqlite3_close(db);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/app.db-wal"));
}

// A folder given as the catalog is a usage error for every command, as for `fanout run` (prune
// and the reports had exited 1, and `logs --follow` waited for it as for an outage).
TEST(ReportCommandTest, AFolderGivenAsTheCatalogIsAUsageError) {
  ScratchDir dir;
  std::filesystem::create_directory(dir.path() + "/folder.db");
  for (auto args : std::vector<std::vector<std::string>>{{"report", "executions"},
                                                         {"logs"},
                                                         {"logs", "--follow"},
                                                         {"catalog", "prune", "--older-than", "1d"}}) {
    args.insert(args.end(), {"--catalog", "sqlite:folder.db"});
    CommandResult r = RunFanout(args, dir.path());
    EXPECT_EQ(r.exit_code, 6) << ::testing::PrintToString(args) << r.err;
    EXPECT_NE(r.err.find("'folder.db': it is a directory"), std::string::npos) << r.err;
  }
}

// An --html file that cannot be written: the path given and why, as a usage error (not 1, which
// says the catalog could not be read), and no temporary file named.
// `logs --follow` waits for a catalog that cannot be reached yet, as it rides out an outage
// later (it had exited 1 at once), and a Ctrl-C while it waits ends it with 0.
TEST(ReportCommandTest, FollowingWaitsForACatalogThatCannotBeReachedYet) {
  ScratchDir dir;
  int pid = StartFanout(
      {"logs", "--follow", "--catalog", "postgresql://fanout@127.0.0.1:1/nowhere"}, dir.path());
  auto says_it_waits = [&] {
    return dir.Read("fanout.err").find("still following, retrying") != std::string::npos;
  };
  EXPECT_TRUE(WaitFor(says_it_waits, kEventually)) << dir.Read("fanout.err");
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 0) << dir.Read("fanout.err");
}

// A catalog server that answers and refuses is said at once, not waited for: `logs --follow`
// had retried a wrong password for ever, and a run took SSL the server does not offer for an
// outage, spooling its rows (QA).
TEST(ReportCommandTest, ACatalogServerThatRefusesIsNotWaitedFor) {
  const char* uri = std::getenv("FANOUT_TEST_POSTGRES");
  if (uri == nullptr || *uri == '\0') GTEST_SKIP() << "needs FANOUT_TEST_POSTGRES";
  const std::string password = PasswordOf(uri);
  if (password.empty()) GTEST_SKIP() << "FANOUT_TEST_POSTGRES holds no password";
  std::string wrong = uri;
  wrong.replace(wrong.find(":" + password + "@"), password.size() + 2, ":not-it@");
  ScratchDir dir;
  int pid = StartFanout({"logs", "--follow", "--catalog", wrong}, dir.path());
  EXPECT_EQ(WaitFanout(pid, kEventually), 1) << dir.Read("fanout.err");
  EXPECT_TRUE(Contains(dir.Read("fanout.err"), "password authentication failed"))
      << dir.Read("fanout.err");

  dir.Write("p.yaml", "package: p\ntasks:\n  t: {type: process, run: [/bin/true]}\n");
  const std::string ssl = std::string(uri) + (Contains(uri, "?") ? "&" : "?") + "sslmode=require";
  CommandResult run = RunFanout({"run", "p.yaml", "--catalog", ssl}, dir.path());
  if (!Contains(run.err, "does not support SSL")) GTEST_SKIP() << "this server offers SSL";
  EXPECT_EQ(run.exit_code, 6) << run.err;
  EXPECT_FALSE(Contains(run.err, "cannot be reached")) << run.err;
}

// A new page is its user's alone, as the catalog and log files are (security QA: 0644); one
// written again keeps the mode given to it.
TEST(ReportCommandTest, ANewHtmlPageIsReadableByItsUserOnly) {
  ScratchDir dir;
  dir.Write("ok.yaml", "package: ok\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  ASSERT_EQ(RunFanout({"run", "ok.yaml"}, dir.path()).exit_code, 0);
  const std::string html = dir.path() + "/execs.html";
  ASSERT_EQ(RunFanout({"report", "executions", "--html", html}, dir.path()).exit_code, 0);
  namespace fs = std::filesystem;
  EXPECT_EQ(fs::status(html).permissions(), fs::perms(0600));
  fs::permissions(html, fs::perms(0644));
  ASSERT_EQ(RunFanout({"report", "executions", "--html", html}, dir.path()).exit_code, 0);
  EXPECT_EQ(fs::status(html).permissions(), fs::perms(0644));
}

TEST(ReportCommandTest, HtmlFileThatCannotBeWrittenSaysWhy) {
  ScratchDir dir;
  const std::string html = dir.path() + "/no/such/dir/x.html";
  CommandResult r = RunFanout({"report", "executions", "--html", html}, dir.path());
  EXPECT_EQ(r.exit_code, 6) << r.out;
  EXPECT_NE(r.err.find("fanout report executions: cannot write " + html +
                       ": No such file or directory"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find(".tmp"), std::string::npos) << r.err;

  // The catalog given as the page (`--html fanout.db`) had replaced the whole history.
  ASSERT_NE(OpenTestCatalog(dir.path()), nullptr);
  for (auto args : std::vector<std::vector<std::string>>{
           {"report", "executions", "--html", "fanout.db"},
           {"report", "overview", "01234567-89ab-7cde-8f01-23456789abcd", "--html", "fanout.db"}}) {
    CommandResult onto_catalog = RunFanout(args, dir.path());
    EXPECT_EQ(onto_catalog.exit_code, 6) << onto_catalog.out;
    EXPECT_NE(onto_catalog.err.find("--html fanout.db: that file is a SQLite database"),
              std::string::npos)
        << onto_catalog.err;
  }
  EXPECT_EQ(RunFanout({"report", "executions"}, dir.path()).exit_code, 0);
}

TEST(ReportCommandTest, ExecutionsAndOverviewOfARealRun) {
  ScratchDir dir;
  std::string id = RunParent(dir, {"eu", "us", "fail", "apac"}, 0);
  ASSERT_FALSE(id.empty());

  CommandResult list = RunFanout({"report", "executions"}, dir.path());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("(times in UTC)"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(id), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find("load-region"), std::string::npos) << "top-level executions only";
  CommandResult all = RunFanout({"report", "executions", "--all"}, dir.path());
  EXPECT_EQ(CountLines(all.out, "load-region"), 4) << all.out;
  CommandResult failed =
      RunFanout({"report", "executions", "--all", "--status", "failed"}, dir.path());
  EXPECT_EQ(CountLines(failed.out, "load-region"), 1) << failed.out;
  EXPECT_EQ(failed.out.find("nightly"), std::string::npos) << failed.out;
  CommandResult since = RunFanout(
      {"report", "executions", "--since", "1h", "--package", "nightly", "--json"}, dir.path());
  ASSERT_EQ(since.exit_code, 0) << since.err;
  auto listed = nlohmann::json::parse(since.out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["id"], id);
  EXPECT_EQ(listed[0]["children"], 4);
  CommandResult future = RunFanout({"report", "executions", "--since", "2999-01-01"}, dir.path());
  EXPECT_NE(future.out.find("No executions"), std::string::npos) << future.out;

  CommandResult overview = RunFanout({"report", "overview", id}, dir.path());
  ASSERT_EQ(overview.exit_code, 0) << overview.err;
  const std::string& text = overview.out;
  EXPECT_NE(text.find("Execution " + id + " (times in UTC)"), std::string::npos) << text;
  EXPECT_NE(text.find("password  ***"), std::string::npos) << text;
  EXPECT_EQ(text.find("s3cr3t-value"), std::string::npos) << text;
  EXPECT_NE(text.find("Child packages (4: 3 succeeded, 1 failed)"), std::string::npos) << text;
  EXPECT_NE(text.find("load-region fail"), std::string::npos) << text;
  EXPECT_NE(text.find("! load: /bin/sh failed with exit code 3: cannot load fail"),
            std::string::npos)
      << text;
  EXPECT_EQ(CountLines(text, " package  "), 4) << "one task row per child task:\n" << text;

  // A unique fragment of the id finds it; the last characters are what `logs` prints.
  EXPECT_EQ(RunFanout({"report", "overview", id.substr(id.size() - 12)}, dir.path()).out, text);

  CommandResult json = RunFanout({"report", "overview", id, "--json"}, dir.path());
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["execution"]["id"], id);
  EXPECT_TRUE(j["execution"]["parameters"]["password"]["value"].is_null());
  EXPECT_EQ(j["execution"]["parameters"]["day"]["value"], "2026-11-26");
  ASSERT_EQ(j["children"].size(), 4u);
  std::set<std::string> labels;
  for (const auto& child : j["children"]) {
    labels.insert(child["label"].get<std::string>());
    EXPECT_EQ(child["parent_id"], id);
  }
  EXPECT_EQ(labels, (std::set<std::string>{"load-region eu", "load-region us", "load-region fail",
                                           "load-region apac"}));
  EXPECT_EQ(j["tasks"].size(), 4u);
}

// The overview page opened in a real browser: the timeline draws one bar per child.
TEST(ReportCommandTest, HtmlTimelineRendersInChromium) {
  ScratchDir dir;
  const std::vector<std::string> regions = {"eu", "us", "apac", "latam", "mea", "fail", "nordic"};
  std::string id = RunParent(dir, regions, 0);
  ASSERT_FALSE(id.empty());
  CommandResult wrote = RunFanout({"report", "overview", id, "--html", "page.html"}, dir.path());
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  EXPECT_NE(wrote.out.find("Wrote page.html"), std::string::npos) << wrote.out;
  std::string page = dir.Read("page.html");
  ASSERT_FALSE(page.empty());
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("http"), std::string::npos) << "the page must need nothing from elsewhere";
  CommandResult list = RunFanout({"report", "executions", "--html", "list.html"}, dir.path());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(dir.Read("list.html").find(id), std::string::npos);

  if (access(kChromium, X_OK) != 0) GTEST_SKIP() << kChromium << " is not installed";
  auto chromium = [&](const std::vector<std::string>& what) {
    SpawnSpec spec;
    spec.argv = {kChromium,
                 "--headless",
                 "--no-sandbox",
                 "--disable-gpu",
                 "--disable-quic",
                 "--no-first-run",
                 "--disable-background-networking",
                 "--disable-component-update",
                 "--disable-sync",
                 "--hide-scrollbars",
                 "--user-data-dir=" + dir.path() + "/chromium-profile"};
    spec.argv.insert(spec.argv.end(), what.begin(), what.end());
    spec.env["HOME"] = dir.path();
    spec.capture_limit = 8 << 20;
    spec.timeout = milliseconds(60000);
    auto result = RunProcess(spec, -1);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    if (!result.ok()) return SpawnResult{};
    EXPECT_FALSE(result->timed_out) << "chromium did not finish within a minute";
    EXPECT_EQ(result->exit_code, 0) << result->err;
    return std::move(*result);
  };
  const std::string url = "file://" + dir.path() + "/page.html";

  SpawnResult dom = chromium({"--dump-dom", url});
  // Count the rendered <rect> elements whose class list holds "bar".
  std::regex rect("<rect\\b[^>]*\\bclass=\"([^\"]*)\"");
  int bars = 0, failed = 0;
  for (auto it = std::sregex_iterator(dom.out.begin(), dom.out.end(), rect);
       it != std::sregex_iterator(); ++it) {
    std::istringstream classes((*it)[1].str());
    std::set<std::string> tokens;
    for (std::string c; classes >> c;) tokens.insert(c);
    bars += tokens.count("bar");
    failed += tokens.count("bar-failed");
  }
  EXPECT_EQ(bars, static_cast<int>(regions.size())) << dom.out.substr(0, 4000);
  EXPECT_EQ(failed, 1);
  EXPECT_NE(dom.out.find(">local<"), std::string::npos) << "one row for the local children";

  SpawnResult shot =
      chromium({"--window-size=1280,1600", "--screenshot=" + dir.path() + "/page.png", url});
  std::error_code ec;
  auto size = std::filesystem::file_size(dir.path() + "/page.png", ec);
  EXPECT_FALSE(ec) << "no screenshot: " << shot.err;
  EXPECT_GT(size, 10000u) << "a blank page compresses far below this";
}

// A run killed with SIGKILL cannot record its end: reports and `logs --follow` see that its
// process is gone and show it abandoned, rather than running for ever.
TEST(ReportCommandTest, AnExecutionWhoseProcessWasKilledShowsAbandoned) {
  ScratchDir dir;
  dir.Write("stuck.yaml", "package: stuck\ntasks:\n  wait: {type: process, run: [/bin/sh, -c, "
                          "'echo $$ > task.pid; exec sleep 30']}\n");
  int run = StartFanout({"run", "stuck.yaml"}, dir.path());
  std::string id;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto catalog = OpenTestCatalog(dir.path());
        if (catalog == nullptr || !std::filesystem::exists(dir.path() + "/task.pid")) return false;
        auto executions = catalog->ListExecutions(1);
        if (!executions.ok() || executions->empty()) return false;
        id = executions->front().id;
        return true;
      },
      kEventually))
      << dir.Read("fanout.err");
  CommandResult alive = RunFanout({"report", "executions", "--status", "running"}, dir.path());
  EXPECT_NE(alive.out.find(id), std::string::npos) << alive.out << alive.err;
  // A prune leaves a live run whole (it had deleted its rows while the run went on writing).
  CommandResult live_prune = RunFanout({"catalog", "prune", "--older-than", "0s"}, dir.path());
  EXPECT_EQ(live_prune.exit_code, 0) << live_prune.err;
  EXPECT_NE(live_prune.out.find("pruned 0 executions"), std::string::npos) << live_prune.out;
  EXPECT_NE(live_prune.out.find("kept 1 older tree of executions that is still running"),
            std::string::npos)
      << live_prune.out;

  kill(run, SIGKILL);
  WaitFanout(run, kEventually);
  kill(std::stoi(dir.Read("task.pid")), SIGKILL);  // the orphaned task, not ours to leave

  CommandResult listed = RunFanout({"report", "executions", "--status", "abandoned"}, dir.path());
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(id), std::string::npos) << listed.out;
  CommandResult overview = RunFanout({"report", "overview", id}, dir.path());
  EXPECT_NE(overview.out.find("abandoned"), std::string::npos) << overview.out;
  EXPECT_NE(overview.out.find("ended without recording an end"), std::string::npos)
      << overview.out;
  EXPECT_EQ(overview.out.find("so far"), std::string::npos) << overview.out;
  // It ends, and says why nothing more comes (it had ended on an ordinary event, silently).
  CommandResult follow = RunFanout({"logs", "--follow", "--execution", id}, dir.path());
  EXPECT_EQ(follow.exit_code, 0) << follow.err;
  EXPECT_NE(follow.err.find("fanout logs: execution " + id + " is abandoned: its fanout process"),
            std::string::npos)
      << follow.err;
  // Abandoned, it may go: it would otherwise stay "running" in the catalog for ever.
  CommandResult prune = RunFanout({"catalog", "prune", "--older-than", "0s"}, dir.path());
  EXPECT_NE(prune.out.find("pruned 1 execution,"), std::string::npos) << prune.out << prune.err;
}

// Each stream shows its last lines: a long stdout had cut off the stderr that said what failed.
TEST(LogsCommandTest, LongOutputKeepsTheEndOfEachStream) {
  ScratchDir dir;
  dir.Write("noisy.yaml", "package: noisy\ntasks:\n  t: {type: process, run: [/bin/sh, -c, "
                          "\"seq 1 30; echo boom >&2; exit 2\"]}\n");
  ASSERT_EQ(RunFanout({"run", "noisy.yaml"}, dir.path()).exit_code, 1);
  CommandResult logs = RunFanout({"logs"}, dir.path());
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_NE(logs.out.find("    | stdout:\n    | ... 10 earlier lines (--json shows all)\n"
                          "    | 11\n"),
            std::string::npos)
      << logs.out;
  EXPECT_NE(logs.out.find("    | 30\n    | stderr:\n    | boom\n"), std::string::npos) << logs.out;
}

TEST(LogsCommandTest, PrintsFilteredEventsAsTextAndJson) {
  ScratchDir dir;
  std::string id = RunParent(dir, {"eu", "fail"}, 0);
  ASSERT_FALSE(id.empty());

  CommandResult all = RunFanout({"logs"}, dir.path());
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.out.find("nightly#" + id.substr(id.size() - 8) + " OnPreExecute"),
            std::string::npos)
      << all.out;
  EXPECT_NE(all.out.find("    | cannot load fail"), std::string::npos) << "captured output";

  CommandResult errors = RunFanout({"logs", "--event", "OnError"}, dir.path());
  ASSERT_EQ(errors.exit_code, 0);
  std::istringstream error_lines(errors.out);
  int error_count = 0;
  for (std::string line; std::getline(error_lines, line);) {
    if (line.rfind("    |", 0) == 0) continue;  // captured output under an event
    EXPECT_NE(line.find(" OnError "), std::string::npos) << line;
    ++error_count;
  }
  EXPECT_GE(error_count, 2) << errors.out;

  CommandResult own = RunFanout({"logs", "--execution", id}, dir.path());
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_NE(own.out.find("OnPreExecute  nightly: package nightly started"), std::string::npos)
      << own.out;
  EXPECT_EQ(own.out.find("extracted"), std::string::npos) << "children's events are not its own";
  CommandResult tree =
      RunFanout({"logs", "--execution", id, "--children", "--source", "load"}, dir.path());
  ASSERT_EQ(tree.exit_code, 0) << tree.err;
  EXPECT_EQ(CountLines(tree.out, "load-region#"), CountLines(tree.out, " load: ")) << tree.out;
  EXPECT_GE(CountLines(tree.out, "OnPostExecute load: process load finished"), 2) << tree.out;

  CommandResult json = RunFanout(
      {"logs", "--execution", id, "--json", "--event", "OnPreExecute,OnPostExecute"}, dir.path());
  ASSERT_EQ(json.exit_code, 0) << json.err;
  std::istringstream lines(json.out);
  int count = 0;
  int64_t last_id = 0;
  for (std::string line; std::getline(lines, line); ++count) {
    auto event = nlohmann::json::parse(line);
    EXPECT_EQ(event["execution_id"], id);
    EXPECT_TRUE(event["event"] == "OnPreExecute" || event["event"] == "OnPostExecute") << line;
    EXPECT_GT(event["id"].get<int64_t>(), last_id) << "in catalog order";
    last_id = event["id"].get<int64_t>();
  }
  EXPECT_EQ(count, 6) << "the package and two tasks, each begun and ended:\n" << json.out;

  CommandResult recent = RunFanout({"logs", "--execution", id, "--since", "1h"}, dir.path());
  ASSERT_EQ(recent.exit_code, 0) << recent.err;
  EXPECT_EQ(recent.out, own.out);
  CommandResult future = RunFanout({"logs", "--since", "2099-01-01"}, dir.path());
  ASSERT_EQ(future.exit_code, 0) << future.err;
  EXPECT_EQ(future.out, "");
  EXPECT_EQ(RunFanout({"logs", "--since", "soon"}, dir.path()).exit_code, 6);

  // --tail N: the last N lines of the plain listing, whatever the filters select.
  CommandResult tail = RunFanout({"logs", "--execution", id, "--tail", "2"}, dir.path());
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  std::vector<std::string> own_lines;
  std::istringstream own_stream(own.out);
  for (std::string line; std::getline(own_stream, line);) {
    if (line.rfind("    |", 0) != 0) own_lines.push_back(line);  // events, not captured output
  }
  ASSERT_GE(own_lines.size(), 2u);
  EXPECT_EQ(tail.out, own_lines[own_lines.size() - 2] + "\n" + own_lines.back() + "\n");
  EXPECT_EQ(RunFanout({"logs", "--tail", "0"}, dir.path()).out, "");
  EXPECT_EQ(RunFanout({"logs", "--tail", "-1"}, dir.path()).exit_code, 6);
}

// `logs --follow --execution ID` prints events while the run goes and exits when it ends;
// without --execution it runs until SIGTERM.
TEST(LogsCommandTest, FollowStreamsARunAndEndsWithIt) {
  ScratchDir dir;
  dir.Write("slow.yaml", R"(package: slow
tasks:
  hello: {type: process, run: [/bin/echo, hello]}
  wait: {type: process, run: [/bin/sleep, "2"], after: [hello]}
  bye: {type: process, run: [/bin/echo, bye], after: [wait]}
)");
  std::filesystem::create_directories(dir.path() + "/follow");
  std::filesystem::create_directories(dir.path() + "/all");
  const std::string catalog_flag = "--catalog=sqlite:" + dir.path() + "/fanout.db";

  // Following everything starts before the catalog exists.
  int follow_all = StartFanout({"logs", "--follow", catalog_flag}, dir.path() + "/all");
  int run = StartFanout({"run", "slow.yaml"}, dir.path());
  std::string id;
  ASSERT_TRUE(WaitFor(
      [&] {
        if (!std::filesystem::exists(dir.path() + "/fanout.db")) return false;
        auto catalog = OpenTestCatalog(dir.path());
        if (catalog == nullptr) return false;
        auto executions = catalog->ListExecutions(1);
        if (!executions.ok() || executions->empty()) return false;
        id = executions->front().id;
        return true;
      },
      kEventually))
      << dir.Read("fanout.err");
  int follow =
      StartFanout({"logs", "--follow", "--execution", id, catalog_flag}, dir.path() + "/follow");
  auto read_follow = [&] { return dir.Read("follow/fanout.out"); };
  ASSERT_TRUE(WaitFor(
      [&] { return read_follow().find("hello: process hello finished") != std::string::npos; },
      kEventually))
      << read_follow() << dir.Read("follow/fanout.err");
  {
    // The line arrived while the run was still going.
    auto catalog = OpenTestCatalog(dir.path());
    ASSERT_NE(catalog, nullptr);
    auto row = catalog->GetExecution(id);
    ASSERT_TRUE(row.ok() && row->has_value());
    EXPECT_FALSE((*row)->ended_at.has_value()) << "the run ended before its events were seen";
  }
  EXPECT_EQ(WaitFanout(follow, kEventually), 0) << dir.Read("follow/fanout.err");
  EXPECT_EQ(WaitFanout(run, kEventually), 0) << dir.Read("fanout.err");
  std::string followed = read_follow();
  EXPECT_NE(followed.find("bye: process bye finished"), std::string::npos) << followed;
  EXPECT_NE(followed.find("OnPostExecute slow: package slow finished"), std::string::npos)
      << followed;
  EXPECT_EQ(CountLines(followed, "OnPreExecute"), 4) << followed;

  ASSERT_TRUE(WaitFor(
      [&] { return dir.Read("all/fanout.out").find("package slow finished") != std::string::npos; },
      kEventually))
      << dir.Read("all/fanout.out") << dir.Read("all/fanout.err");
  kill(follow_all, SIGTERM);
  EXPECT_EQ(WaitFanout(follow_all, kEventually), 0);
  EXPECT_EQ(CountLines(dir.Read("all/fanout.out"), "OnPreExecute"), 4);
}

}  // namespace
}  // namespace fanout::testing
