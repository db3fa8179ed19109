// posix_spawn + pidfd + poll: start a child in a new process group, drain its pipes, and stop
// the group on request. posix_spawn (vfork-style in glibc) keeps the start cost near a bare
// fork/exec, which the engine's process benchmark is measured against.
#include "common/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/util.h"

extern char** environ;

namespace fanout {
namespace {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

bool MakePipe(Fd& read_end, Fd& write_end) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return false;
  read_end.fd = p[0];
  write_end.fd = p[1];
  return true;
}

// Keeps the first `limit` bytes of a stream in `buf`, counts the rest in `dropped`, and keeps
// the last `tail_limit` bytes (of the whole stream) in `tail` once any were dropped.
void Append(std::string& buf, size_t& dropped, std::string& tail, const char* data, size_t n,
            size_t limit, size_t tail_limit) {
  size_t room = buf.size() < limit ? limit - buf.size() : 0;
  size_t take = std::min(room, n);
  buf.append(data, take);
  if (take == n) return;
  if (dropped == 0) tail = buf.substr(buf.size() - std::min(buf.size(), tail_limit));
  dropped += n - take;
  tail.append(data + take, n - take);
  // Trimmed once it is twice as long as kept: each byte is moved about once.
  if (tail.size() > 2 * tail_limit) tail.erase(0, tail.size() - tail_limit);
}

// write() to a pipe whose read end is closed raises SIGPIPE, which by default kills the whole
// process; pipes have no MSG_NOSIGNAL. RunProcess is a library call and must not change the
// process-wide disposition, so SIGPIPE is blocked in this thread only for the write, and the
// one the write raised (if any) is taken off the pending set before the old mask comes back.
// A SIGPIPE that was already pending before is left alone: standard signals do not queue, so
// ours merged into it and the caller still sees exactly one.
ssize_t WriteWithoutSigpipe(int fd, const char* data, size_t size) {
  sigset_t sigpipe, old_mask, pending;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigpipe, &old_mask);
  sigemptyset(&pending);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ssize_t written = write(fd, data, size);
  int err = errno;
  if (written < 0 && err == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&sigpipe, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = err;
  return written;
}

// Of the caller's environment, what a process run as another user keeps: where programs are and
// the locale; nothing that could carry a secret.
bool KeptForAnotherUser(const std::string& name) {
  return name == "PATH" || name == "LANG" || name == "LANGUAGE" || name == "TZ" ||
         name.starts_with("LC_");
}

// The proxy path: posix_spawn cannot change user, so fork, switch groups and user, exec. An
// exec failure travels back through a close-on-exec pipe as the errno. `candidates`, when not
// empty, are the places of PATH to try `program` at, in order, as the user: only the user's own
// rights say which one runs (execvpe would look in the agent's PATH, not the step's).
int ForkAsUser(const SpawnSpec& spec, const char* program, std::vector<char*>& argv, char** env,
               int in_fd, int out_fd, int err_fd, const std::vector<std::string>& candidates,
               pid_t* pid_out) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return errno;
  std::vector<gid_t> groups(spec.run_as->groups.begin(), spec.run_as->groups.end());
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(report[0]);
    close(report[1]);
    return err;
  }
  if (pid == 0) {
    auto fail = [&](int err) {
      [[maybe_unused]] ssize_t n = write(report[1], &err, sizeof err);
      _exit(127);
    };
    setpgid(0, 0);
    sigset_t empty;
    sigemptyset(&empty);
    for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) signal(s, SIG_DFL);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    int null_fd = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
    if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) fail(errno);
    // As posix_spawn's closefrom in StartProcess; close-on-exec rather than closed, so that
    // `report` still carries an exec failure.
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(errno);
    if (setgroups(groups.size(), groups.data()) != 0) fail(errno);
    if (setgid(spec.run_as->gid) != 0) fail(errno);
    if (setuid(spec.run_as->uid) != 0) fail(errno);
    if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) fail(errno);
    if (candidates.empty()) {
      execve(program, argv.data(), env);
      fail(errno);
    }
    // As execvpe searches: a place that is missing, or closed to the user, is passed over.
    bool denied = false;
    for (const std::string& candidate : candidates) {
      execve(candidate.c_str(), argv.data(), env);
      if (errno == EACCES) denied = true;
      else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE) fail(errno);
    }
    fail(denied ? EACCES : ENOENT);
  }
  close(report[1]);
  int err = 0;
  ssize_t n = read(report[0], &err, sizeof err);
  close(report[0]);
  if (n == sizeof err) {
    waitpid(pid, nullptr, 0);
    return err;
  }
  *pid_out = pid;
  return 0;
}

// Every process /proc shows, by pid.
std::map<pid_t, ProcStat> ProcessTable() {
  std::map<pid_t, ProcStat> table;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return table;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (std::optional<ProcStat> stat = ReadProcStat(pid)) table[static_cast<pid_t>(pid)] = *stat;
  }
  closedir(proc);
  return table;
}

}  // namespace

void KillProcessTree(int pgid) {
  const pid_t own_group = getpgrp();
  if (pgid <= 1 || pgid == own_group) return;
  const std::map<pid_t, ProcStat> table = ProcessTable();
  std::map<pid_t, std::vector<pid_t>> children;
  std::vector<pid_t> todo;
  for (const auto& [pid, stat] : table) {
    // A child starts after its parent: an older process under a re-used parent pid is not one.
    auto parent = table.find(static_cast<pid_t>(stat.ppid));
    if (parent != table.end() && stat.start >= parent->second.start) {
      children[parent->first].push_back(pid);
    }
    if (stat.pgrp == pgid) todo.push_back(pid);
  }
  std::set<pid_t> tree;  // the group's members and all their descendants
  while (!todo.empty()) {
    pid_t pid = todo.back();
    todo.pop_back();
    if (!tree.insert(pid).second) continue;
    for (pid_t child : children[pid]) todo.push_back(child);
  }
  kill(-pgid, SIGKILL);
  for (pid_t pid : tree) {
    const pid_t group = static_cast<pid_t>(table.at(pid).pgrp);
    if (group == pgid) continue;
    // A group led by one of the tree (a task's own group) goes whole; a process in a group
    // from outside the tree (the caller's own, say) goes alone.
    if (group != own_group && group > 1 && tree.count(group) != 0) {
      kill(-group, SIGKILL);
    } else {
      kill(pid, SIGKILL);
    }
  }
}

void MoveArgvToStdin(SpawnSpec& spec) {
  if (spec.argv.empty()) return;
  nlohmann::json args = std::vector<std::string>(spec.argv.begin() + 1, spec.argv.end());
  // A path that is not UTF-8 reaches the command with U+FFFD in its place (JSON holds only
  // UTF-8), and is then not found, saying so, rather than throwing here.
  spec.stdin_data = args.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n" +
                    spec.stdin_data;
  spec.argv = {spec.argv.front(), std::string(kArgvFromStdin)};
}

Result<RunAs> LookUpUser(const std::string& user) {
  struct passwd pw;
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return NotFound(fmt::format("no Unix user named '{}'", user));
  }
  RunAs r;
  r.user = user;
  r.home = found->pw_dir;
  r.uid = found->pw_uid;
  r.gid = found->pw_gid;
  int count = 64;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  if (getgrouplist(user.c_str(), found->pw_gid, groups.data(), &count) < 0) {
    groups.resize(static_cast<size_t>(count));
    getgrouplist(user.c_str(), found->pw_gid, groups.data(), &count);
  }
  groups.resize(static_cast<size_t>(std::max(count, 0)));
  r.groups.assign(groups.begin(), groups.end());
  return r;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Release();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    in_ = std::exchange(other.in_, -1);
    out_ = std::exchange(other.out_, -1);
    err_ = std::exchange(other.err_, -1);
  }
  return *this;
}

ChildProcess::~ChildProcess() { Release(); }

void ChildProcess::Release() {
  for (int* fd : {&in_, &out_, &err_, &pidfd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (pid_ > 0) {
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

bool ChildProcess::Ended() const {
  if (pid_ <= 0) return true;
  if (pidfd_ >= 0) {
    pollfd fd{pidfd_, POLLIN, 0};
    return poll(&fd, 1, 0) > 0;
  }
  // Without a pidfd: a zombie still answers kill(pid, 0); ask for its exit, leaving it unreaped.
  siginfo_t info{};
  return waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid_;
}

namespace {

// Where a program named without a '/' may be, by `path` (the PATH the process gets), in the
// order a shell looks: posix_spawnp and execvpe look in ours, so a step's `env: {PATH: ...}`
// was not used to find its own program (QA). Relative folders are the working directory's.
std::vector<std::string> PathCandidates(const std::string& name, const std::string& path,
                                        const std::string& cwd) {
  std::vector<std::string> candidates;
  size_t begin = 0;
  for (;;) {
    size_t end = path.find(':', begin);
    std::string dir = path.substr(begin, end == std::string::npos ? end : end - begin);
    if (dir.empty()) dir = ".";  // POSIX: an empty entry is the working directory
    if (dir[0] != '/' && !cwd.empty()) dir = cwd + "/" + dir;
    // Absolute: the child moves into `cwd` before its exec, and a relative `cwd` (a package's
    // folder, "ex") would then be taken twice.
    std::error_code ec;
    candidates.push_back(std::filesystem::absolute(dir + "/" + name, ec).string());
    if (end == std::string::npos) return candidates;
    begin = end + 1;
  }
}

// The first of them that is a file (an executable one, when `executable`); "" when none is.
std::string FindInPath(const std::string& name, const std::string& path, const std::string& cwd,
                       bool executable = true) {
  for (const std::string& candidate : PathCandidates(name, path, cwd)) {
    struct stat st {};
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        (!executable || access(candidate.c_str(), X_OK) == 0)) {
      return candidate;
    }
  }
  return "";
}

// Why a start failed with ENOENT, in words: the working directory, the program (and where it
// was looked for), or the interpreter the program's `#!` line names.
// `program`: what was started, searched for in PATH by the spawn itself when `searched`.
std::string NotFoundReason(const SpawnSpec& spec, const std::string& program, bool searched,
                           const std::string& path) {
  struct stat st {};
  if (!spec.cwd.empty() && (stat(spec.cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) {
    return fmt::format("its working directory {} does not exist", spec.cwd);
  }
  std::string found = searched ? FindInPath(program, path, spec.cwd)
                      : program[0] == '/' || spec.cwd.empty() ? program
                                                              : spec.cwd + "/" + program;
  if (found.empty()) {
    std::string plain = FindInPath(program, path, spec.cwd, /*executable=*/false);
    if (!plain.empty()) return fmt::format("{} is there, but not executable (chmod +x)", plain);
    return fmt::format("no program of that name in PATH ({})", path);
  }
  if (stat(found.c_str(), &st) == 0) {
    return fmt::format("{} is there, but not the interpreter its first line (#!) names", found);
  }
  return std::strerror(ENOENT);
}

}  // namespace

Result<ChildProcess> StartProcess(const SpawnSpec& spec, bool stdin_pipe) {
  if (spec.argv.empty()) return InvalidArgument("no program to run");
  if (spec.argv[0].empty()) return InvalidArgument("the program to run is an empty string");
  // exec ends each argument and environment value at a NUL: the program would silently get less
  // than it was given (QA: "a\0b" ran as "a").
  for (size_t i = 0; i < spec.argv.size(); ++i) {
    if (spec.argv[i].find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("{} holds a NUL byte, which no program can be given",
                                         i == 0 ? std::string("the program's name")
                                                : fmt::format("argument {}", i)));
    }
  }
  for (const auto& [name, value] : spec.env) {
    if (name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("environment variable {} holds a NUL byte, which no "
                                         "program can be given", EscapeControls(name)));
    }
  }
  Fd out_r, out_w, err_r, err_w, in_r, in_w;
  if (!MakePipe(out_r, out_w) || !MakePipe(err_r, err_w) ||
      (stdin_pipe && !MakePipe(in_r, in_w))) {
    return Internal(fmt::format("pipe: {}", std::strerror(errno)));
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!stdin_pipe) {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  } else {
    posix_spawn_file_actions_adddup2(&actions, in_r.fd, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, out_w.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.fd, 2);
  // Nothing else of ours reaches the child, whether or not it was opened close-on-exec: an
  // agent's accepted connections would let a job step read its clients' bearer tokens and
  // answer for the agent.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, spec.cwd.c_str());

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // Another user's process gets its own HOME (its ~/.local/state/fanout/spool, its dotfiles),
  // as su and sudo give it.
  std::map<std::string, std::string> env_changes = spec.env;
  if (spec.run_as) {
    env_changes.try_emplace("HOME", spec.run_as->home);
    env_changes.try_emplace("USER", spec.run_as->user);
    env_changes.try_emplace("LOGNAME", spec.run_as->user);
  }
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  char** env = environ;
  if (!env_changes.empty()) {
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view entry(*e);
      std::string name(entry.substr(0, entry.find('=')));
      if (env_changes.count(name) != 0) continue;
      // Another user gets a clean environment, as `su -` gives: the caller's may hold its
      // secrets (a token, PGPASSWORD), which are not that user's to see.
      if (spec.run_as && !KeptForAnotherUser(name)) continue;
      envp.push_back(*e);
    }
    for (const auto& [k, v] : env_changes) env_storage.push_back(k + "=" + v);
    for (std::string& s : env_storage) envp.push_back(s.data());
    envp.push_back(nullptr);
    env = envp.data();
  }

  pid_t pid = 0;
  bool search = spec.argv[0].find('/') == std::string::npos;
  const char* own_path = getenv("PATH");
  auto path_given = env_changes.find("PATH");
  const std::string path = path_given != env_changes.end() ? path_given->second
                           : own_path != nullptr           ? own_path
                                                           : "/bin:/usr/bin";
  std::string found;  // the program, when looked up here in a PATH of the step's own
  if (search && !spec.run_as && path_given != env_changes.end()) {
    found = FindInPath(spec.argv[0], path, spec.cwd);
    if (found.empty()) {
      posix_spawn_file_actions_destroy(&actions);
      posix_spawnattr_destroy(&attr);
      return NotFound(fmt::format("cannot start {}: {}", spec.argv[0],
                                  NotFoundReason(spec, spec.argv[0], true, path)));
    }
    search = false;
  }
  const char* program = found.empty() ? argv[0] : found.c_str();
  int rc = 0;
  if (spec.run_as) {
    rc = ForkAsUser(spec, program, argv, env, in_r.fd, out_w.fd, err_w.fd,
                    search ? PathCandidates(spec.argv[0], path, spec.cwd)
                           : std::vector<std::string>{},
                    &pid);
  } else {
    rc = search ? posix_spawnp(&pid, program, &actions, &attr, argv.data(), env)
                : posix_spawn(&pid, program, &actions, &attr, argv.data(), env);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::string as = spec.run_as ? fmt::format(" as user {}", spec.run_as->user) : "";
    // Searching, execvpe says EACCES when a folder of PATH is closed to the user, though the
    // program is in none of them (QA).
    if (rc == EACCES && search && FindInPath(spec.argv[0], path, spec.cwd).empty()) rc = ENOENT;
    if (rc == ENOENT) {
      return NotFound(fmt::format("cannot start {}{}: {}", spec.argv[0], as,
                                  NotFoundReason(spec, program, search, path)));
    }
    std::string where = spec.cwd.empty() ? "" : fmt::format(" in {}", spec.cwd);
    return InvalidArgument(
        fmt::format("cannot start {}{}{}: {}", spec.argv[0], where, as, std::strerror(rc)));
  }
  if (spec.on_start) spec.on_start(pid);
  // Only our end: the child's read end is a separate open file and stays blocking.
  if (in_w.fd >= 0) fcntl(in_w.fd, F_SETFL, fcntl(in_w.fd, F_GETFL) | O_NONBLOCK);
  ChildProcess child;
  child.pid_ = pid;
  child.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  child.in_ = std::exchange(in_w.fd, -1);
  child.out_ = std::exchange(out_r.fd, -1);
  child.err_ = std::exchange(err_r.fd, -1);
  return child;
}

Result<SpawnResult> RunProcess(const SpawnSpec& spec, int cancel_fd) {
  ASSIGN_OR_RETURN(ChildProcess child, StartProcess(spec, !spec.stdin_data.empty()));
  return FollowProcess(child, spec, cancel_fd);
}

Result<SpawnResult> FollowProcess(ChildProcess& child, const SpawnSpec& spec, int cancel_fd) {
  const pid_t pid = child.pid_;
  if (pid <= 0) return FailedPrecondition("no started process to follow");
  Fd pidfd(std::exchange(child.pidfd_, -1));
  Fd in_w(std::exchange(child.in_, -1));
  Fd out_r(std::exchange(child.out_, -1));
  Fd err_r(std::exchange(child.err_, -1));
  if (spec.stdin_data.empty()) in_w.Close();
  SpawnResult result;
  size_t stdin_written = 0;
  std::chrono::steady_clock::time_point kill_at{};
  bool term_sent = false, exited = false;
  int reads_after_exit = 0;
  bool has_deadline = spec.timeout.count() > 0;
  auto deadline = std::chrono::steady_clock::now() + spec.timeout;
  char buf[16384];
  while (!exited || out_r.fd >= 0 || err_r.fd >= 0) {
    pollfd fds[5];
    int n = 0;
    int i_out = -1, i_err = -1, i_pid = -1, i_cancel = -1, i_in = -1;
    if (out_r.fd >= 0) { i_out = n; fds[n++] = {out_r.fd, POLLIN, 0}; }
    if (err_r.fd >= 0) { i_err = n; fds[n++] = {err_r.fd, POLLIN, 0}; }
    if (!exited && pidfd.fd >= 0) { i_pid = n; fds[n++] = {pidfd.fd, POLLIN, 0}; }
    if (!term_sent && cancel_fd >= 0) { i_cancel = n; fds[n++] = {cancel_fd, POLLIN, 0}; }
    if (in_w.fd >= 0) { i_in = n; fds[n++] = {in_w.fd, POLLOUT, 0}; }
    int timeout = -1;
    if (has_deadline && !term_sent && !exited) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        kill(-pid, SIGTERM);
        term_sent = true;
        result.stopped = true;
        result.timed_out = true;
        kill_at = std::chrono::steady_clock::now() + spec.kill_grace;
      } else {
        timeout = static_cast<int>(left.count());
      }
    }
    if (term_sent && !exited) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          kill_at - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    if (exited) timeout = 0;  // the child is gone: take what is buffered, don't wait for heirs
    if (pidfd.fd < 0 && !exited) timeout = 50;  // no pidfd: poll waitpid
    int ready = poll(fds, static_cast<nfds_t>(n), timeout);
    if (ready < 0 && errno != EINTR) {
      // Cannot watch it any more: the child's destructor kills and reaps it.
      return Internal(fmt::format("poll while following {}: {}", spec.argv[0], std::strerror(errno)));
    }
    auto drain = [&](Fd& fd, int idx, std::string& into, size_t& dropped, std::string& tail) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) {
        if (exited && idx >= 0) fd.Close();
        return;
      }
      ssize_t got = read(fd.fd, buf, sizeof buf);
      if (got > 0) {
        Append(into, dropped, tail, buf, static_cast<size_t>(got), spec.capture_limit,
               spec.tail_limit);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.Close();
      }
    };
    if (ready > 0 || exited) {
      drain(out_r, i_out, result.out, result.out_dropped, result.out_tail);
      drain(err_r, i_err, result.err, result.err_dropped, result.err_tail);
    }
    if (i_in >= 0 && (fds[i_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
      // Non-blocking: takes what fits in the pipe now, so stdout and stderr keep draining
      // while a child that echoes its input (cat) works through the rest.
      ssize_t w = WriteWithoutSigpipe(in_w.fd, spec.stdin_data.data() + stdin_written,
                                      spec.stdin_data.size() - stdin_written);
      if (w > 0) stdin_written += static_cast<size_t>(w);
      bool retry = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
      // EPIPE (the child closed its stdin or exited) or any other error: stop feeding it.
      if ((w < 0 && !retry) || stdin_written == spec.stdin_data.size()) in_w.Close();
    }
    if (i_cancel >= 0 && (fds[i_cancel].revents & POLLIN) && !exited) {
      kill(-pid, SIGTERM);
      term_sent = true;
      result.stopped = true;
      kill_at = std::chrono::steady_clock::now() + spec.kill_grace;
    }
    if (term_sent && !exited && std::chrono::steady_clock::now() >= kill_at) {
      KillProcessTree(pid);
      kill_at = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    if (!exited && (pidfd.fd < 0 || (i_pid >= 0 && (fds[i_pid].revents & POLLIN)))) {
      int status = 0;
      pid_t w = waitpid(pid, &status, pidfd.fd < 0 ? WNOHANG : 0);
      if (w == pid) {
        exited = true;
        child.pid_ = -1;  // reaped: nothing left for its destructor
        if (WIFEXITED(status)) {
          result.exit_code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
          result.term_signal = WTERMSIG(status);
          result.exit_code = 128 + result.term_signal;
        }
        in_w.Close();
      }
    }
    // Once the child is gone, take what is buffered but do not wait on heirs holding the pipes.
    if (exited && (ready == 0 || ++reads_after_exit > 64)) break;
  }
  if (result.stopped) kill(-pid, SIGKILL);  // leave no stragglers of a stopped group
  for (std::string* tail : {&result.out_tail, &result.err_tail}) {
    if (tail->size() > spec.tail_limit) tail->erase(0, tail->size() - spec.tail_limit);
  }
  return result;
}

}  // namespace fanout
