// The catalog goes away in the middle of a run, or is away when one begins: a private PostgreSQL
// server is stopped and started again, and every event of the run must reach it exactly once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "e2e/e2e_util.h"
#include "fanout/catalog.h"

namespace fanout::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// scripts/postgres.sh, run through the shell; returns its stdout.
std::string PostgresScript(const std::string& args, int* status) {
  std::string cmd = std::string("bash ") + FANOUT_SOURCE_DIR + "/scripts/postgres.sh " + args + " 2>&1";
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    *status = -1;
    return out;
  }
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  *status = pclose(pipe);
  return out;
}

std::string ExportedValue(const std::string& out, const std::string& name) {
  std::smatch m;
  if (std::regex_search(out, m, std::regex("export " + name + "='([^']*)'"))) return m[1];
  return "";
}

// The package: about 3 s of steady events.
constexpr const char* kPackage = R"(package: outage
variables:
  i: {type: int, value: 0}
  n: {type: int, value: 0}
tasks:
  loop:
    type: for
    init: "@i = 0"
    condition: "@i < 30"
    assign: "@i = @i + 1"
    tasks:
      wait: {type: process, run: [/bin/sleep, "0.1"]}
      count: {type: expression, set: {n: "@n + 1"}, after: [wait]}
)";

int64_t CountEvents(Catalog& catalog, const std::string& execution_id) {
  EventQuery q;
  q.execution_id = execution_id;
  auto events = catalog.ListEvents(q);
  return events.ok() ? static_cast<int64_t>(events->size()) : -1;
}

std::string ExecutionIdFrom(const std::string& out) {
  std::smatch m;
  if (std::regex_search(out, m, std::regex("execution ([0-9a-f-]{36})"))) return m[1];
  return "";
}

TEST(CatalogOutageTest, PostgresAwayMidRunOrAtTheStartLosesNoEvent) {
  int status = 0;
  std::string started = PostgresScript("start", &status);
  if (status != 0 && started.find("no PostgreSQL server found") != std::string::npos) {
    GTEST_SKIP() << "PostgreSQL is not installed (scripts/install-deps.sh installs it)";
  }
  ASSERT_EQ(status, 0) << started;
  std::string uri = ExportedValue(started, "FANOUT_TEST_POSTGRES");
  std::string pg_dir = ExportedValue(started, "FANOUT_POSTGRES_DIR");
  ASSERT_FALSE(uri.empty() || pg_dir.empty()) << started;
  struct StopServer {
    std::string dir;
    ~StopServer() {
      int ignored = 0;
      PostgresScript("stop " + dir, &ignored);
    }
  } stop_server{pg_dir};

  ScratchDir dir;
  dir.Write("outage.yaml", kPackage);
  setenv("FANOUT_SPOOL_DIR", (dir.path() + "/spool").c_str(), 1);

  // The same run into SQLite says how many events it makes.
  CommandResult reference = RunFanout({"run", "outage.yaml", "--catalog", "sqlite:reference.db"},
                                      dir.path());
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  auto sqlite = OpenCatalog("sqlite:" + dir.path() + "/reference.db");
  ASSERT_TRUE(sqlite.ok());
  int64_t expected = CountEvents(**sqlite, ExecutionIdFrom(reference.out));
  ASSERT_GT(expected, 100);

  auto pg = OpenCatalog(uri);
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  // `fanout logs --follow` rides out the outage too (in a folder of its own: its output files).
  const std::string follow_dir = dir.path() + "/follow";
  std::filesystem::create_directory(follow_dir);
  int follower = StartFanout({"logs", "--follow", "--json", "--catalog", uri}, follow_dir);
  int pid = StartFanout({"run", "outage.yaml", "--catalog", uri}, dir.path());
  // Once the run is writing, the server goes away for a second and comes back.
  ASSERT_TRUE(WaitFor([&] {
    auto executions = (*pg)->ListExecutions(5);
    return executions.ok() && !executions->empty();
  }, kEventually));
  std::this_thread::sleep_for(milliseconds(300));
  std::string paused = PostgresScript("pause " + pg_dir, &status);
  ASSERT_EQ(status, 0) << paused;
  std::this_thread::sleep_for(seconds(1));  // the outage itself
  std::string resumed = PostgresScript("resume " + pg_dir, &status);
  ASSERT_EQ(status, 0) << resumed;

  ASSERT_EQ(WaitFanout(pid, seconds(60)), 0) << dir.Read("fanout.err");
  EXPECT_NE(dir.Read("fanout.err").find("catalog write failed"), std::string::npos)
      << "the outage should have been noticed: " << dir.Read("fanout.err");
  std::string execution = ExecutionIdFrom(dir.Read("fanout.out"));
  ASSERT_FALSE(execution.empty()) << dir.Read("fanout.out");
  auto after = OpenCatalog(uri);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(CountEvents(**after, execution), expected) << "every event, exactly once";
  auto row = (*after)->GetExecution(execution);
  ASSERT_TRUE(row.ok() && row->has_value());
  EXPECT_EQ((*row)->status, "succeeded");
  auto followed = [&] {
    std::string lines = dir.Read("follow/fanout.out");
    int64_t n = 0;
    for (size_t at = lines.find(execution); at != std::string::npos; at = lines.find(execution, at + 1)) {
      ++n;
    }
    return n;
  };
  // Every event line carries the execution id once, in "execution_id" (the package's own
  // start message names it too).
  EXPECT_TRUE(WaitFor([&] { return followed() >= expected; }, kEventually))
      << followed() << " of " << expected << " events followed";
  kill(follower, SIGTERM);
  EXPECT_EQ(WaitFanout(follower, kEventually), 0) << dir.Read("follow/fanout.err");

  // Down when a run begins: the run goes on, and its rows arrive once the server is back.
  paused = PostgresScript("pause " + pg_dir, &status);
  ASSERT_EQ(status, 0) << paused;
  pid = StartFanout({"run", "outage.yaml", "--catalog", uri}, dir.path());
  std::this_thread::sleep_for(seconds(1));
  resumed = PostgresScript("resume " + pg_dir, &status);
  ASSERT_EQ(status, 0) << resumed;
  ASSERT_EQ(WaitFanout(pid, seconds(60)), 0) << dir.Read("fanout.err");
  EXPECT_NE(dir.Read("fanout.err").find("cannot be reached"), std::string::npos)
      << dir.Read("fanout.err");
  // Said once: its first write, failing too, said the same thing again.
  EXPECT_EQ(dir.Read("fanout.err").find("catalog write failed"), std::string::npos)
      << dir.Read("fanout.err");
  std::string late = ExecutionIdFrom(dir.Read("fanout.out"));
  ASSERT_FALSE(late.empty()) << dir.Read("fanout.out");
  auto reopened = OpenCatalog(uri);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(CountEvents(**reopened, late), expected) << "every event, exactly once";
}

// A package that only touches the file `ran`.
constexpr const char* kMarkPackage =
    "package: p\ntasks:\n  mark: {type: process, run: [touch, ran]}\n";

// A TCP socket bound to a free 127.0.0.1 port (set in `port`), or -1.
int BoundLoopbackSocket(int& port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  port = ntohs(addr.sin_port);
  return fd;
}

std::string PostgresSpecAt(int port, const std::string& database) {
  return "postgresql://fanout@127.0.0.1:" + std::to_string(port) + "/" + database;
}

// Ctrl-C while the catalog server keeps the connect waiting (it takes the connection and never
// answers): the run ends at once as canceled, saying why, and nothing ran (it had died of the
// signal with 130 and no word). Needs no PostgreSQL: the listener below is all the "server".
TEST(CatalogOutageTest, CtrlCWhileTheCatalogConnectWaitsEndsTheRunAsCanceled) {
  int port = 0;
  int listener = BoundLoopbackSocket(port);
  ASSERT_GE(listener, 0);
  ASSERT_EQ(listen(listener, 4), 0);  // the kernel completes connections; nobody answers them
  ScratchDir dir;
  dir.Write("p.yaml", kMarkPackage);
  int pid = StartFanout({"run", "p.yaml", "--catalog", PostgresSpecAt(port, "silent")}, dir.path());
  std::this_thread::sleep_for(milliseconds(500));  // well inside the connect's own limit
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 3) << dir.Read("fanout.err");
  EXPECT_NE(dir.Read("fanout.err").find("SIGINT received while opening the catalog, before "
                                        "anything ran; stopped"),
            std::string::npos)
      << dir.Read("fanout.err");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/ran"));
  close(listener);
}

// Ctrl-C once the package has ended, while its rows wait for a catalog that does not answer:
// the wait is cut short and said as such (it said "stopping every running task", with none
// running), and the run keeps its result.
TEST(CatalogOutageTest, CtrlCAfterTheRunEndedOnlyStopsWaitingForTheCatalog) {
  int port = 0;
  int port_holder = BoundLoopbackSocket(port);
  ASSERT_GE(port_holder, 0);
  close(port_holder);  // a free port of this host, which refuses: the catalog is down at once
  ScratchDir dir;
  dir.Write("p.yaml", kMarkPackage);
  setenv("FANOUT_SPOOL_DIR", (dir.path() + "/spool").c_str(), 1);
  int pid = StartFanout({"run", "p.yaml", "--catalog", PostgresSpecAt(port, "down")}, dir.path());
  unsetenv("FANOUT_SPOOL_DIR");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.path() + "/ran"); }, seconds(20)))
      << dir.Read("fanout.err");
  std::this_thread::sleep_for(milliseconds(1000));  // the engine returns; the recorder retries
  auto interrupted = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 0) << dir.Read("fanout.err");
  const auto took = std::chrono::steady_clock::now() - interrupted;
  EXPECT_LT(std::chrono::duration<double>(took).count(), 2.0)
      << "it waited for the catalog on";
  const std::string err = dir.Read("fanout.err");
  EXPECT_NE(err.find("SIGINT received after the run ended; no longer waiting for the catalog"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("stopping every running task"), std::string::npos) << err;
  EXPECT_NE(dir.Read("fanout.out").find("Package p: Success"), std::string::npos)
      << dir.Read("fanout.out");
}

}  // namespace
}  // namespace fanout::testing
