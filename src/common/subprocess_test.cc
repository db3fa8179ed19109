// Tests of RunProcess: exit codes and signals, bounded capture of stdout/stderr, stdin, env and
// cwd, start failures, and stopping the whole process group through a cancel eventfd; and of
// StartProcess + FollowProcess, a child started ahead of its work.
#include "common/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "common/test_util.h"

namespace fanout {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using fanout::testing::TempDir;

class EventFd {
 public:
  EventFd() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~EventFd() { close(fd_); }
  int fd() const { return fd_; }
  void Fire() {
    uint64_t one = 1;
    ASSERT_EQ(write(fd_, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }

 private:
  int fd_;
};

SpawnSpec Shell(const std::string& script) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  return spec;
}

SpawnResult MustRun(const SpawnSpec& spec, int cancel_fd = -1) {
  auto r = RunProcess(spec, cancel_fd);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : SpawnResult{};
}

// Waits (by pidfd, not by sleeping) until `pid` has exited; false after `timeout`.
bool WaitForExit(int pidfd, milliseconds timeout) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// Reads one line a writer puts into `fifo`, waiting for it with poll() up to `timeout`.
std::string ReadLineFromFifo(const std::string& fifo, milliseconds timeout) {
  int fd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "";
  std::string text;
  auto deadline = Clock::now() + timeout;
  while (text.find('\n') == std::string::npos && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) <= 0) break;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (p.revents & POLLHUP) {
      break;  // the writer closed without a full line
    }
  }
  close(fd);
  return text.substr(0, text.find('\n'));
}

// ---- Exit status ------------------------------------------------------------------------------

TEST(RunProcessTest, ReportsExitCodes) {
  EXPECT_EQ(MustRun(Shell("exit 0")).exit_code, 0);
  EXPECT_EQ(MustRun(Shell("exit 3")).exit_code, 3);
  EXPECT_EQ(MustRun(Shell("exit 255")).exit_code, 255);
  SpawnResult r = MustRun(Shell("exit 7"));
  EXPECT_EQ(r.term_signal, 0);
  EXPECT_FALSE(r.stopped);
}

TEST(RunProcessTest, FindsProgramsOnPath) {
  SpawnSpec spec;
  spec.argv = {"true"};
  EXPECT_EQ(MustRun(spec).exit_code, 0);
  spec.argv = {"false"};
  EXPECT_EQ(MustRun(spec).exit_code, 1);
}

TEST(RunProcessTest, KilledBySignalIs128PlusSignal) {
  SpawnResult term = MustRun(Shell("kill -TERM $$; sleep 5"));
  EXPECT_EQ(term.term_signal, SIGTERM);
  EXPECT_EQ(term.exit_code, 128 + SIGTERM);
  SpawnResult kill9 = MustRun(Shell("kill -KILL $$; sleep 5"));
  EXPECT_EQ(kill9.term_signal, SIGKILL);
  EXPECT_EQ(kill9.exit_code, 137);
  EXPECT_FALSE(kill9.stopped) << "we did not stop it";
}

// ---- Output -----------------------------------------------------------------------------------

TEST(RunProcessTest, CapturesStdoutAndStderrSeparately) {
  SpawnResult r = MustRun(Shell("printf 'to out\\n'; printf 'to err' >&2; printf more"));
  EXPECT_EQ(r.out, "to out\nmore");
  EXPECT_EQ(r.err, "to err");
  EXPECT_EQ(r.out_dropped, 0u);
  EXPECT_EQ(r.err_dropped, 0u);
}

TEST(RunProcessTest, CaptureLimitKeepsTheStartAndCountsTheRest) {
  SpawnSpec spec = Shell("printf '0123456789abcdefghij'; printf 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' >&2");
  spec.capture_limit = 8;
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out, "01234567");
  EXPECT_EQ(r.out_dropped, 12u);
  EXPECT_EQ(r.err, "ABCDEFGH");
  EXPECT_EQ(r.err_dropped, 18u);
}

// A program says why it failed at the end of its output: past the capture limit, the stream's
// last bytes are kept too (QA: a failure's message showed byte 64 Ki of 1 MB).
TEST(RunProcessTest, BeyondTheCaptureLimitTheLastBytesAreKeptToo) {
  SpawnSpec spec = Shell("printf '0123456789abcdefghij'; printf 'short' >&2");
  spec.capture_limit = 8;
  spec.tail_limit = 5;
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out_tail, "fghij");
  EXPECT_EQ(r.err_tail, "") << "all of it was captured";
  EXPECT_EQ(r.err, "short");
  // Across many reads, also when the tail is longer than the capture limit.
  SpawnSpec big = Shell("seq 1 200000; echo the-end");
  big.capture_limit = 100;
  big.tail_limit = 4096;
  SpawnResult b = MustRun(big);
  ASSERT_EQ(b.out_tail.size(), 4096u);
  EXPECT_TRUE(b.out_tail.ends_with("199999\n200000\nthe-end\n")) << b.out_tail.substr(4000);
}

TEST(RunProcessTest, DrainsLargeOutputBeyondThePipeBuffer) {
  // 1 MiB on each stream: the child would block forever if either pipe were not drained.
  SpawnSpec spec = Shell("head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; exit 4");
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.out.size(), spec.capture_limit);
  EXPECT_EQ(r.out.size() + r.out_dropped, 1048576u);
  EXPECT_EQ(r.err.size() + r.err_dropped, 1048576u);
}

TEST(RunProcessTest, ZeroCaptureLimitOnlyCounts) {
  SpawnSpec spec = Shell("printf hello");
  spec.capture_limit = 0;
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.out_dropped, 5u);
}

// ---- Input, environment, working directory ----------------------------------------------------

TEST(RunProcessTest, WritesStdinDataThenCloses) {
  SpawnSpec spec;
  spec.argv = {"cat"};
  spec.stdin_data = "line one\nline two\n";
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, spec.stdin_data);
}

TEST(RunProcessTest, StdinIsEmptyWithoutData) {
  SpawnResult r = MustRun(Shell("wc -c"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.find_first_not_of(" \t"), r.out.find('0')) << r.out;
}

TEST(RunProcessTest, LargeStdinToAProgramThatReadsItAll) {
  SpawnSpec spec = Shell("wc -c");
  spec.stdin_data.assign(300000, 'x');
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("300000"), std::string::npos) << r.out;
}

TEST(RunProcessTest, LargeStdinEchoedBackDoesNotDeadlock) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Runs in a forked child with an alarm so a deadlock fails the test instead of hanging it.
  EXPECT_EXIT(
      {
        alarm(10);
        SpawnSpec spec;
        spec.argv = {"cat"};
        spec.stdin_data.assign(1 << 20, 'y');
        spec.capture_limit = 2 << 20;
        auto r = RunProcess(spec, -1);
        _exit(r.ok() && r->out == spec.stdin_data ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(RunProcessTest, ChildThatIgnoresStdinDoesNotKillTheCaller) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(10);
        SpawnSpec spec;
        spec.argv = {"true"};
        spec.stdin_data.assign(1 << 20, 'z');
        auto r = RunProcess(spec, -1);
        _exit(r.ok() && r->exit_code == 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// True when SIGPIPE is in this thread's signal mask; `pending` also asks whether one is pending.
bool SigpipeIn(bool pending) {
  sigset_t set;
  sigemptyset(&set);
  if (pending) {
    sigpending(&set);
  } else {
    pthread_sigmask(SIG_BLOCK, nullptr, &set);
  }
  return sigismember(&set, SIGPIPE) == 1;
}

// The shell closes its stdin at once and stays alive a moment, so the parent's next write meets
// a pipe without a reader (EPIPE) while the child still runs. The outcome must be the same
// whichever comes first.
SpawnSpec ClosesStdinEarly() {
  SpawnSpec spec = Shell("exec 0<&-; sleep 0.3; echo done");
  spec.stdin_data.assign(1 << 20, 'w');
  return spec;
}

TEST(RunProcessTest, ChildThatClosesStdinEarlyLeavesNoSigpipeBehind) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(10);
        auto r = RunProcess(ClosesStdinEarly(), -1);
        if (!r.ok() || r->exit_code != 0 || r->out != "done\n") _exit(1);
        if (SigpipeIn(false)) _exit(2);  // the caller's mask is restored
        if (SigpipeIn(true)) _exit(3);   // the SIGPIPE our write raised was consumed
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(RunProcessTest, KeepsASigpipeTheCallerAlreadyHadPending) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(10);
        sigset_t sigpipe;
        sigemptyset(&sigpipe);
        sigaddset(&sigpipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &sigpipe, nullptr);
        raise(SIGPIPE);
        if (!SigpipeIn(true)) _exit(4);
        auto r = RunProcess(ClosesStdinEarly(), -1);
        if (!r.ok() || r->exit_code != 0) _exit(1);
        if (!SigpipeIn(false)) _exit(2);  // still blocked, as the caller had it
        if (!SigpipeIn(true)) _exit(3);   // still pending: it was the caller's, not ours
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(RunProcessTest, LargeStdinToALateReader) {
  // The child reads nothing until its own output is done; the writer must wait, not spin or drop.
  SpawnSpec spec = Shell("head -c 200000 /dev/zero; wc -c");
  spec.stdin_data.assign(500000, 'q');
  spec.capture_limit = 1 << 20;
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.size(), 200000u + 7u);
  EXPECT_EQ(r.out.substr(200000), "500000\n");
}

TEST(RunProcessTest, EnvAddsAndReplacesButKeepsTheRest) {
  ASSERT_EQ(setenv("FANOUT_SUBPROCESS_TEST_KEEP", "kept", 1), 0);
  ASSERT_EQ(setenv("FANOUT_SUBPROCESS_TEST_OVERRIDE", "old", 1), 0);
  SpawnSpec spec = Shell(
      "printf '%s|%s|%s' \"$FANOUT_NEW\" \"$FANOUT_SUBPROCESS_TEST_OVERRIDE\" "
      "\"$FANOUT_SUBPROCESS_TEST_KEEP\"");
  spec.env = {{"FANOUT_NEW", "a b=c"}, {"FANOUT_SUBPROCESS_TEST_OVERRIDE", "new"}};
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out, "a b=c|new|kept");
  unsetenv("FANOUT_SUBPROCESS_TEST_KEEP");
  unsetenv("FANOUT_SUBPROCESS_TEST_OVERRIDE");
}

TEST(RunProcessTest, OverriddenVariableAppearsOnce) {
  ASSERT_EQ(setenv("FANOUT_SUBPROCESS_TEST_DUP", "old", 1), 0);
  SpawnSpec spec = Shell("env | grep -c '^FANOUT_SUBPROCESS_TEST_DUP='");
  spec.env = {{"FANOUT_SUBPROCESS_TEST_DUP", "new"}};
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out, "1\n");
  unsetenv("FANOUT_SUBPROCESS_TEST_DUP");
}

// An agent's open connections (its clients' tokens) must not reach a job step: no descriptor
// but 0, 1 and 2 goes to the child, close-on-exec or not, as the caller or as another user.
TEST(RunProcessTest, TheChildGetsNoDescriptorButItsStandardOnes) {
  int leaked = open("/dev/null", O_RDONLY);  // without O_CLOEXEC
  ASSERT_GE(leaked, 3);
  SpawnSpec spec = Shell(fmt::format("test -e /proc/$$/fd/{} && echo open || echo closed", leaked));
  EXPECT_EQ(MustRun(spec).out, "closed\n");
  if (geteuid() == 0) {
    auto root = LookUpUser("root");
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    spec.run_as = *root;
    EXPECT_EQ(MustRun(spec).out, "closed\n");
  }
  close(leaked);
}

// A process run as another user (an agent's proxy) gets a clean environment: the caller's may
// hold its secrets (FANOUT_TOKEN, PGPASSWORD). PATH, the locale and what the spec sets stay.
TEST(RunProcessTest, AnotherUserGetsACleanEnvironment) {
  if (geteuid() != 0) GTEST_SKIP() << "running as another user needs root";
  ASSERT_EQ(setenv("FANOUT_SUBPROCESS_TEST_SECRET", "agent-only", 1), 0);
  SpawnSpec spec = Shell("printf '%s|%s|%s' \"${FANOUT_SUBPROCESS_TEST_SECRET-unset}\" "
                         "\"$FANOUT_GIVEN\" \"${PATH:+has-path}\"");
  spec.env = {{"FANOUT_GIVEN", "given"}};
  auto root = LookUpUser("root");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  spec.run_as = *root;
  EXPECT_EQ(MustRun(spec).out, "unset|given|has-path");
  spec.run_as.reset();
  EXPECT_EQ(MustRun(spec).out, "agent-only|given|has-path") << "the caller's own children keep it";
  unsetenv("FANOUT_SUBPROCESS_TEST_SECRET");
}

// QA: as another user, a program in no folder of PATH was "Permission denied" when one of the
// folders was closed to that user (execvpe's EACCES).
TEST(RunProcessTest, AnotherUserMissingAProgramIsToldItIsNotInPath) {
  if (geteuid() != 0) GTEST_SKIP() << "running as another user needs root";
  auto nobody = LookUpUser("nobody");
  if (!nobody.ok()) GTEST_SKIP() << "no user nobody here";
  TempDir dir;
  std::filesystem::create_directory(dir.File("closed"));
  chmod(dir.File("closed").c_str(), 0700);
  chmod(dir.path().c_str(), 0755);
  const char* own = getenv("PATH");
  const std::string saved = own != nullptr ? own : "";
  const std::string path = dir.File("closed") + ":/usr/bin:/bin";
  ASSERT_EQ(setenv("PATH", path.c_str(), 1), 0);
  SpawnSpec spec;
  spec.argv = {"fanout-no-such-program-xyz"};
  spec.run_as = *nobody;
  spec.cwd = "/";
  auto r = RunProcess(spec, -1);
  setenv("PATH", saved.c_str(), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(), "cannot start fanout-no-such-program-xyz as user nobody: no "
                                  "program of that name in PATH (" + path + ")");
}

// As another user, the program PATH finds is the first that user may run: the agent's own
// rights had picked one only the agent could run, which then failed with "Permission denied".
TEST(RunProcessTest, AnotherUserRunsTheFirstProgramInPathThatItMayRun) {
  if (geteuid() != 0) GTEST_SKIP() << "running as another user needs root";
  auto nobody = LookUpUser("nobody");
  if (!nobody.ok()) GTEST_SKIP() << "no user nobody here";
  TempDir dir;
  chmod(dir.path().c_str(), 0755);
  for (const char* place : {"mine", "theirs"}) {
    std::filesystem::create_directory(dir.File(place));
    chmod(dir.File(place).c_str(), 0755);
    { std::ofstream(dir.File(place) + "/fanout-which") << "#!/bin/sh\necho " << place << "\n"; }
  }
  chmod((dir.File("mine") + "/fanout-which").c_str(), 0700);  // the agent's (root's) only
  chmod((dir.File("theirs") + "/fanout-which").c_str(), 0755);
  SpawnSpec spec;
  spec.argv = {"fanout-which"};
  spec.run_as = *nobody;
  spec.cwd = "/";
  spec.env = {{"PATH", dir.File("mine") + ":" + dir.File("theirs") + ":/usr/bin:/bin"}};
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "theirs\n");

  // There, but nowhere the user may run it: denied, as a shell says.
  spec.env = {{"PATH", dir.File("mine")}};
  auto denied = RunProcess(spec, -1);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().message(),
            "cannot start fanout-which in / as user nobody: Permission denied");
}

TEST(RunProcessTest, RunsInCwd) {
  TempDir dir;
  SpawnSpec spec;
  spec.argv = {"pwd", "-P"};
  spec.cwd = dir.path();
  SpawnResult r = MustRun(spec);
  EXPECT_EQ(r.out, std::filesystem::canonical(dir.path()).string() + "\n");
}

TEST(RunProcessTest, BadCwdFailsToStart) {
  TempDir dir;
  SpawnSpec spec;
  spec.argv = {"true"};
  spec.cwd = dir.File("missing");
  auto r = RunProcess(spec, -1);
  ASSERT_FALSE(r.ok()) << "exit code " << r->exit_code;
  EXPECT_EQ(r.status().message(), "cannot start true: its working directory " +
                                      dir.File("missing") + " does not exist");
}

// QA: a step's `env: {PATH: ...}` was not used to find its own program (posix_spawnp looks in
// the caller's PATH), and the failure did not say where it had looked.
TEST(RunProcessTest, AProgramIsLookedUpInThePathTheProcessGets) {
  TempDir dir;
  std::filesystem::create_directory(dir.File("bin"));
  { std::ofstream(dir.File("bin/hello-fanout")) << "#!/bin/sh\necho \"hi $0\"\n"; }
  chmod(dir.File("bin/hello-fanout").c_str(), 0755);
  SpawnSpec spec;
  spec.argv = {"hello-fanout"};
  spec.env = {{"PATH", "/nonexistent:" + dir.File("bin") + ":/usr/bin:/bin"}};
  EXPECT_EQ(MustRun(spec).out, "hi " + dir.File("bin/hello-fanout") + "\n");
  spec.env = {{"PATH", "bin:/usr/bin:/bin"}};  // relative: the working directory's
  spec.cwd = dir.path();
  EXPECT_EQ(MustRun(spec).exit_code, 0);
  // A relative working directory (a package's folder) is not taken twice (review).
  spec.cwd = std::filesystem::relative(dir.path()).string();
  ASSERT_NE(spec.cwd[0], '/');
  EXPECT_EQ(MustRun(spec).exit_code, 0);
  spec.env = {{"PATH", "/usr/bin:/bin"}};
  auto r = RunProcess(spec, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(),
            "cannot start hello-fanout: no program of that name in PATH (/usr/bin:/bin)");
  // A program in bin/ written as `text` with `mode`: why it cannot start.
  auto start_failure = [&](const std::string& name, const std::string& text, mode_t mode) {
    { std::ofstream(dir.File("bin/" + name)) << text; }
    chmod(dir.File("bin/" + name).c_str(), mode);
    spec.argv = {name};
    spec.env = {{"PATH", dir.File("bin")}};
    auto started = RunProcess(spec, -1);
    return started.ok() ? std::string("started") : started.status().message();
  };
  // There, but not executable (QA).
  EXPECT_EQ(start_failure("plain", "#!/bin/sh\n", 0644),
            "cannot start plain: " + dir.File("bin/plain") +
                " is there, but not executable (chmod +x)");
  // There, but its interpreter is not: not "no program of that name" (review).
  EXPECT_EQ(start_failure("orphan", "#!/nonexistent/interpreter\n", 0755),
            "cannot start orphan: " + dir.File("bin/orphan") +
                " is there, but not the interpreter its first line (#!) names");
}

// ---- Start failures ---------------------------------------------------------------------------

TEST(RunProcessTest, MissingProgramIsNotFound) {
  SpawnSpec spec;
  spec.argv = {"fanout-no-such-program-xyz", "arg"};
  auto r = RunProcess(spec, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("fanout-no-such-program-xyz"), std::string::npos)
      << r.status().message();

  spec.argv = {"/nonexistent/dir/prog"};
  auto abs = RunProcess(spec, -1);
  ASSERT_FALSE(abs.ok());
  EXPECT_EQ(abs.status().code(), Code::kNotFound);
}

TEST(RunProcessTest, NonExecutableFileFailsToStart) {
  TempDir dir;
  { std::ofstream(dir.File("script")) << "#!/bin/sh\nexit 0\n"; }
  chmod(dir.File("script").c_str(), 0644);
  SpawnSpec spec;
  spec.argv = {dir.File("script")};
  auto r = RunProcess(spec, -1);
  if (geteuid() == 0 && r.ok()) GTEST_SKIP() << "root may execute files without x bits here";
  EXPECT_FALSE(r.ok());
}

TEST(RunProcessTest, EmptyArgvIsInvalid) {
  auto r = RunProcess(SpawnSpec{}, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  SpawnSpec empty_program;
  empty_program.argv = {""};
  r = RunProcess(empty_program, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "the program to run is an empty string");
}

// exec would cut "a\0b" to "a", and the program would run with less than it was given (QA).
TEST(RunProcessTest, ANulByteInAnArgumentOrTheEnvironmentIsRefused) {
  SpawnSpec spec;
  spec.argv = {"/bin/echo", "ok", std::string("a\0b", 3)};
  auto r = RunProcess(spec, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "argument 2 holds a NUL byte, which no program can be given");
  spec.argv = {"/bin/true"};
  spec.env = {{"CODE", std::string("0\0; exit 9", 10)}};
  r = RunProcess(spec, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "environment variable CODE holds a NUL byte, which no program can be given");
}

// ---- Cancellation -----------------------------------------------------------------------------

// The child reports its background grandchild's pid through a FIFO, so the test knows the
// group is fully started before it cancels.
TEST(RunProcessTest, CancelStopsTheWholeProcessGroup) {
  TempDir dir;
  std::string fifo = dir.File("pid");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EventFd cancel;
  SpawnSpec spec = Shell("sleep 30 & echo $! > '" + fifo + "'; wait");
  spec.kill_grace = milliseconds(5000);
  auto start = Clock::now();
  auto future = std::async(std::launch::async, [&] { return RunProcess(spec, cancel.fd()); });

  std::string line = ReadLineFromFifo(fifo, milliseconds(10000));
  ASSERT_FALSE(line.empty()) << "the shell never reported its grandchild";
  pid_t grandchild = static_cast<pid_t>(std::stoi(line));
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, grandchild, 0));
  ASSERT_GE(pidfd, 0) << "grandchild " << grandchild << " already gone";

  cancel.Fire();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->stopped);
  EXPECT_EQ(r->exit_code, 128 + SIGTERM);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5)) << "SIGTERM was enough";
  EXPECT_TRUE(WaitForExit(pidfd, milliseconds(3000))) << "grandchild sleep survived the cancel";
  close(pidfd);
  if (kill(grandchild, 0) == 0) kill(grandchild, SIGKILL);
}

TEST(RunProcessTest, CancelEscalatesToSigkillAfterGrace) {
  TempDir dir;
  std::string fifo = dir.File("ready");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EventFd cancel;
  // The trap is inherited by sleep, so only SIGKILL ends the group.
  SpawnSpec spec = Shell("trap '' TERM; echo ready > '" + fifo + "'; sleep 5; exit 0");
  spec.kill_grace = milliseconds(100);
  auto start = Clock::now();
  auto future = std::async(std::launch::async, [&] { return RunProcess(spec, cancel.fd()); });
  ASSERT_EQ(ReadLineFromFifo(fifo, milliseconds(10000)), "ready");
  cancel.Fire();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto result = future.get();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  SpawnResult r = *result;
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4)) << "did not wait for sleep 5";
}

TEST(RunProcessTest, CancelAfterExitIsNotAStop) {
  EventFd cancel;
  SpawnResult r = MustRun(Shell("exit 2"), cancel.fd());
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.exit_code, 2);
}

TEST(RunProcessTest, GrandchildHoldingThePipeDoesNotBlockReturn) {
  // The shell exits at once; its background sleep keeps stdout and stderr open.
  auto start = Clock::now();
  SpawnResult r = MustRun(Shell("sleep 20 & echo $!; echo done >&2"));
  auto elapsed = Clock::now() - start;
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_FALSE(r.stopped);
  EXPECT_LT(elapsed, std::chrono::seconds(10)) << "waited for the grandchild";
  EXPECT_EQ(r.err, "done\n");
  ASSERT_FALSE(r.out.empty());
  pid_t grandchild = static_cast<pid_t>(std::stoi(r.out));
  if (grandchild > 0) kill(grandchild, SIGKILL);
}

// ---- Started now, followed later (an agent's warm process) --------------------------------------

TEST(StartProcessTest, AChildStartedEarlyGetsItsStdinWhenFollowed) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", "read line; echo got $line; cat"};
  auto child = StartProcess(spec, /*stdin_pipe=*/true);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_FALSE(child->Ended()) << "it waits for its stdin";
  spec.stdin_data = "first\nrest\n";
  auto r = FollowProcess(*child, spec, -1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "got first\nrest\n");
}

TEST(StartProcessTest, TheTimeoutCountsFromFollowNotFromStart) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", "read line"};
  auto child = StartProcess(spec, true);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  std::this_thread::sleep_for(milliseconds(400));
  spec.stdin_data = "go\n";
  spec.timeout = milliseconds(300);  // already past, counted from the start
  auto r = FollowProcess(*child, spec, -1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->exit_code, 0);
}

TEST(StartProcessTest, AChildNeverFollowedIsKilledAndReaped) {
  pid_t pid = 0;
  {
    SpawnSpec spec;
    spec.argv = {"sleep", "30"};
    auto child = StartProcess(spec, false);
    ASSERT_TRUE(child.ok()) << child.status().ToString();
    pid = child->pid();
    ASSERT_GT(pid, 0);
    EXPECT_EQ(kill(pid, 0), 0);
  }
  EXPECT_EQ(kill(pid, 0), -1) << "still there, or a zombie nobody reaped";
  EXPECT_EQ(errno, ESRCH);
}

TEST(StartProcessTest, EndedSeesAChildThatDiedWhileWaiting) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", "exit 3"};
  auto child = StartProcess(spec, true);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  auto deadline = Clock::now() + milliseconds(5000);
  while (!child->Ended() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_TRUE(child->Ended());
}

}  // namespace
}  // namespace fanout
