// End-to-end test helpers (see e2e_util.h).
#include "e2e/e2e_util.h"

#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/subprocess.h"

namespace fanout::testing {

ScratchDir::ScratchDir() {
  char tmpl[] = "/tmp/fanout-test.XXXXXX";
  char* dir = mkdtemp(tmpl);
  if (dir == nullptr) std::abort();
  path_ = dir;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ScratchDir::Write(const std::string& name, const std::string& content) const {
  std::string full = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(full).parent_path());
  std::ofstream(full) << content;
  return full;
}

std::string ScratchDir::Read(const std::string& name) const {
  std::ifstream in(path_ + "/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

CommandResult RunFanout(const std::vector<std::string>& args, const std::string& cwd) {
  SpawnSpec spec;
  spec.argv = {FANOUT_BINARY};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = cwd;
  spec.capture_limit = 4 << 20;
  auto run = RunProcess(spec, -1);
  CommandResult r;
  if (!run.ok()) {
    r.err = run.status().ToString();
    return r;
  }
  r.exit_code = run->exit_code;
  r.out = run->out;
  r.err = run->err;
  return r;
}

CommandResult RunFanoutInTerminal(const std::vector<std::string>& args, const std::string& cwd) {
  CommandResult r;
  int terminal = -1;
  pid_t pid = forkpty(&terminal, nullptr, nullptr, nullptr);
  if (pid < 0) {
    r.err = std::string("forkpty: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    if (chdir(cwd.c_str()) != 0) _exit(127);
    setenv("TERM", "xterm", 1);
    std::vector<char*> argv{const_cast<char*>(FANOUT_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(FANOUT_BINARY, argv.data());
    _exit(127);
  }
  char buf[4096];
  for (;;) {  // until the terminal closes (EIO once the child has gone)
    ssize_t n = read(terminal, buf, sizeof buf);
    if (n > 0) {
      r.out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  close(terminal);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

int StartFanout(const std::vector<std::string>& args, const std::string& cwd) {
  // Emptied before it returns, so that a caller waiting for a line never reads the last run's.
  for (const char* name : {"/fanout.out", "/fanout.err"}) {
    std::ofstream(cwd + name, std::ios::trunc);
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (chdir(cwd.c_str()) != 0) _exit(127);
    int out = open("fanout.out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open("fanout.err", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> argv{const_cast<char*>(FANOUT_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(FANOUT_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

int WaitFanout(int pid, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ADD_FAILURE() << "fanout did not exit within " << limit.count() << " s";
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

bool WaitFor(const std::function<bool()>& predicate, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return predicate();
}

std::string RowSummingChild(const std::string& name) {
  return "package: " + name + R"(
parameters:
  rows: {type: list}
variables:
  acc: {type: string}
tasks:
  each:
    type: foreach
    items: "${rows}"
    as: [name, n]
    tasks:
      add: {type: expression, set: {acc: '@acc + @name + "=" + (DT_WSTR,10)(@n + 1) + ","'}}
  check: {type: process, run: [/bin/sh, -c, 'test "$0" = "eu=2,us=3.5,"', "${acc}"], after: [each]}
)";
}

std::string PasswordOf(const std::string& uri) {
  size_t user = uri.find("://");
  size_t at = uri.find('@');
  if (user == std::string::npos || at == std::string::npos) return "";
  size_t colon = uri.find(':', user + 3);
  return colon < at ? uri.substr(colon + 1, at - colon - 1) : "";
}

std::unique_ptr<Catalog> OpenTestCatalog(const std::string& dir) {
  auto catalog = OpenCatalog("sqlite:" + dir + "/fanout.db");
  if (!catalog.ok()) {
    ADD_FAILURE() << catalog.status().ToString();
    return nullptr;
  }
  return std::move(*catalog);
}

}  // namespace fanout::testing
