// posix_spawn + pidfd + poll: start a child in a new process group, drain its pipes (or read
// back its output files), and stop the group on request. posix_spawn (vfork-style in glibc)
// keeps the start cost near a bare fork/exec, which the engine's process benchmark is measured
// against; children that must outlive the caller with a known end (SpawnSpec::exit_file) run
// under a forked monitor instead.
#include "common/subprocess.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <pwd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

void Append(std::string& buf, size_t& dropped, const char* data, size_t n, size_t limit) {
  size_t room = buf.size() < limit ? limit - buf.size() : 0;
  size_t take = std::min(room, n);
  buf.append(data, take);
  dropped += n - take;
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

// After fork, in the child that becomes the process: leads a process group of its own with
// default signals, takes its stdin, stdout and stderr, switches user when asked, and execs.
// Only async-signal-safe calls (the parent has threads); an error goes back through `report`
// (close-on-exec) as the errno.
[[noreturn]] void ExecInChild(const SpawnSpec& spec, char* const* argv, char** env, int in_fd,
                              int out_fd, int err_fd, bool search, const std::vector<gid_t>& groups,
                              int report) {
  auto fail = [&](int err) {
    [[maybe_unused]] ssize_t n = write(report, &err, sizeof err);
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
  if (spec.run_as) {
    if (setgroups(groups.size(), groups.data()) != 0) fail(errno);
    if (setgid(spec.run_as->gid) != 0) fail(errno);
    if (setuid(spec.run_as->uid) != 0) fail(errno);
  }
  if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) fail(errno);
  if (search) execvpe(argv[0], argv, env);
  else execve(argv[0], argv, env);
  fail(errno);
  _exit(127);  // fail() does not return; the compiler cannot tell
}

// The proxy path: posix_spawn cannot change user, so fork, switch groups and user, exec. An
// exec failure travels back through a close-on-exec pipe as the errno.
int ForkAsUser(const SpawnSpec& spec, std::vector<char*>& argv, char** env, int in_fd, int out_fd,
               int err_fd, bool search, pid_t* pid_out) {
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
    ExecInChild(spec, argv.data(), env, in_fd, out_fd, err_fd, search, groups, report[1]);
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

// A decimal number into `out` (async-signal-safe, for the monitor); returns the end.
char* PutNumber(char* out, int n) {
  char digits[12];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n > 0);
  while (count > 0) *out++ = digits[--count];
  return out;
}

// What the monitor tells the caller once the process has exec'd (err 0) or failed to.
struct MonitorReport {
  pid_t process = 0;
  int err = 0;
};

// The SpawnSpec::exit_file path: a monitor forked apart from the caller (its own process group,
// deaf to the signals a terminal or a stop sends) forks the process, which leads its own group
// as always, reports its pid, waits for it, writes how it ended to the exit file, held locked
// until then, and ends the same way. `monitor` is the caller's child; `process` the pid to
// signal (its group) and to record.
int ForkMonitored(const SpawnSpec& spec, std::vector<char*>& argv, char** env, int in_fd,
                  int out_fd, int err_fd, bool search, pid_t* monitor, pid_t* process) {
  int relay[2];
  if (pipe2(relay, O_CLOEXEC) != 0) return errno;
  std::vector<gid_t> groups;
  if (spec.run_as) groups.assign(spec.run_as->groups.begin(), spec.run_as->groups.end());
  const char* exit_path = spec.exit_file.c_str();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(relay[0]);
    close(relay[1]);
    return err;
  }
  if (pid == 0) {
    setpgid(0, 0);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaction(s, &ignore, nullptr);
    signal(SIGCHLD, SIG_DFL);  // waitpid must see the process end
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    // Only the process's streams (0-2) and the relay (3) stay open: the monitor may outlive the
    // caller, and an agent's listening socket held here would keep its restart off its port.
    int null_fd = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
    if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0 ||
        dup2(relay[1], 3) < 0) {
      _exit(127);
    }
    close_range(4, ~0U, 0);
    int exit_fd = open(exit_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (exit_fd >= 0) flock(exit_fd, LOCK_EX);
    MonitorReport report;
    int exec_report[2];
    if (pipe2(exec_report, O_CLOEXEC) != 0) {
      report.err = errno;
    } else {
      report.process = fork();
      if (report.process == 0) {
        ExecInChild(spec, argv.data(), env, 0, 1, 2, search, groups, exec_report[1]);
      }
      close(exec_report[1]);
      if (report.process < 0) {
        report.err = errno;
      } else if (read(exec_report[0], &report.err, sizeof report.err) != sizeof report.err) {
        report.err = 0;  // closed on exec: it runs
      }
      close(exec_report[0]);
    }
    [[maybe_unused]] ssize_t sent = write(3, &report, sizeof report);
    close(3);
    if (report.err != 0) {
      if (report.process > 0) waitpid(report.process, nullptr, 0);
      _exit(127);
    }
    int status = 0;
    while (waitpid(report.process, &status, 0) < 0 && errno == EINTR) {
    }
    char line[32];
    char* end = WIFSIGNALED(status) ? PutNumber(stpcpy(line, "signal "), WTERMSIG(status))
                                    : PutNumber(stpcpy(line, "exit "), WEXITSTATUS(status));
    *end++ = '\n';
    if (exit_fd >= 0) {
      [[maybe_unused]] ssize_t written = write(exit_fd, line, static_cast<size_t>(end - line));
      close(exit_fd);  // and with it the lock: the end is there to read
    }
    if (WIFSIGNALED(status)) {  // ends as the process did, without a core dump of its own
      struct rlimit no_core {};
      setrlimit(RLIMIT_CORE, &no_core);
      signal(WTERMSIG(status), SIG_DFL);
      kill(getpid(), WTERMSIG(status));
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 127);
  }
  close(relay[1]);
  MonitorReport report;
  ssize_t n;
  do {
    n = read(relay[0], &report, sizeof report);
  } while (n < 0 && errno == EINTR);
  close(relay[0]);
  if (n != sizeof report || report.err != 0) {
    waitpid(pid, nullptr, 0);
    return n != sizeof report ? ECHILD : report.err;
  }
  *monitor = pid;
  *process = report.process;
  return 0;
}

// Opens (creating or emptying) an output file for a child to write and for us to read back.
bool OpenOutputFile(const std::string& path, Fd& fd) {
  fd.fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  return fd.fd >= 0;
}

// The first `limit` bytes of an output file and how many follow them.
CapturedOutput ReadOutput(int fd, size_t limit) {
  CapturedOutput out;
  struct stat st {};
  if (fstat(fd, &st) != 0) return out;
  const size_t size = static_cast<size_t>(st.st_size);
  out.text.resize(std::min(size, limit));
  size_t got = 0;
  while (got < out.text.size()) {
    ssize_t n = pread(fd, out.text.data() + got, out.text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.text.resize(got);
  out.dropped = size - got;
  return out;
}

}  // namespace

Result<CapturedOutput> ReadOutputFile(const std::string& path, size_t limit) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) {
    return Status(errno == ENOENT ? Code::kNotFound : Code::kInternal,
                  fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  }
  return ReadOutput(fd.fd, limit);
}

std::optional<ProcessEnd> ReadExitFile(const std::string& path, std::chrono::milliseconds wait) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return std::nullopt;
  // The monitor holds the file locked until it has written the end.
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (flock(fd.fd, LOCK_SH | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  char text[32] = {};
  ssize_t n = pread(fd.fd, text, sizeof text - 1, 0);
  if (n <= 0) return std::nullopt;  // the monitor was killed before the process ended
  std::string_view line(text, static_cast<size_t>(n));
  ProcessEnd end;
  int value = -1;
  bool signalled = line.starts_with("signal ");
  line.remove_prefix(signalled ? 7 : line.starts_with("exit ") ? 5 : 0);
  auto [rest, ec] = std::from_chars(line.data(), line.data() + line.size(), value);
  if (ec != std::errc() || value < 0 || rest == line.data()) return std::nullopt;
  end.term_signal = signalled ? value : 0;
  end.exit_code = signalled ? 128 + value : value;
  return end;
}

void TrimOutputFile(int fd, size_t keep) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return;
  const off_t block = st.st_blksize > 0 ? st.st_blksize : 4096;
  const off_t from = (static_cast<off_t>(keep) + block - 1) / block * block;
  const off_t to = st.st_size / block * block;
  // Where holes cannot be punched (EOPNOTSUPP), the file just keeps what it was given.
  if (to > from) fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, to - from);
}

void MoveArgvToStdin(SpawnSpec& spec) {
  if (spec.argv.empty()) return;
  nlohmann::json args = std::vector<std::string>(spec.argv.begin() + 1, spec.argv.end());
  spec.stdin_data = args.dump() + "\n" + spec.stdin_data;
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
    group_ = std::exchange(other.group_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    in_ = std::exchange(other.in_, -1);
    out_ = std::exchange(other.out_, -1);
    err_ = std::exchange(other.err_, -1);
    out_file_ = std::exchange(other.out_file_, -1);
    err_file_ = std::exchange(other.err_file_, -1);
  }
  return *this;
}

ChildProcess::~ChildProcess() { Release(); }

void ChildProcess::Release() {
  for (int* fd : {&in_, &out_, &err_, &pidfd_, &out_file_, &err_file_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (pid_ > 0) {
    kill(-group_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
  group_ = -1;
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

Result<ChildProcess> StartProcess(const SpawnSpec& spec, bool stdin_pipe) {
  if (spec.argv.empty()) return InvalidArgument("no program to run");
  if (spec.argv[0].empty()) return InvalidArgument("the program to run is an empty string");
  Fd out_r, out_w, err_r, err_w, in_r, in_w, out_file, err_file;
  // A stream going to a file: the child writes to the file, we keep our own descriptor of it.
  auto open_stream = [](const std::string& file, Fd& ours, Fd& read_end, Fd& write_end) {
    if (file.empty()) return MakePipe(read_end, write_end);
    if (!OpenOutputFile(file, ours)) return false;
    write_end.fd = fcntl(ours.fd, F_DUPFD_CLOEXEC, 0);
    return write_end.fd >= 0;
  };
  if (!open_stream(spec.stdout_file, out_file, out_r, out_w)) {
    return Internal(fmt::format("stdout of {}: {}", spec.argv[0], std::strerror(errno)));
  }
  if (!open_stream(spec.stderr_file, err_file, err_r, err_w)) {
    return Internal(fmt::format("stderr of {}: {}", spec.argv[0], std::strerror(errno)));
  }
  if (stdin_pipe && !MakePipe(in_r, in_w)) {
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
  pid_t group = 0;  // the process's, which leads it; the monitor's child when there is one
  bool search = spec.argv[0].find('/') == std::string::npos;
  int rc = 0;
  if (!spec.exit_file.empty()) {
    rc = ForkMonitored(spec, argv, env, in_r.fd, out_w.fd, err_w.fd, search, &pid, &group);
  } else if (spec.run_as) {
    rc = ForkAsUser(spec, argv, env, in_r.fd, out_w.fd, err_w.fd, search, &pid);
  } else {
    rc = search ? posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), env)
                : posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), env);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::string where = spec.cwd.empty() ? "" : fmt::format(" in {}", spec.cwd);
    std::string as = spec.run_as ? fmt::format(" as user {}", spec.run_as->user) : "";
    return Status(rc == ENOENT ? Code::kNotFound : Code::kInvalidArgument,
                  fmt::format("cannot start {}{}{}: {}", spec.argv[0], where, as, std::strerror(rc)));
  }
  if (group == 0) group = pid;
  if (spec.on_start) spec.on_start(group);
  // Only our end: the child's read end is a separate open file and stays blocking.
  if (in_w.fd >= 0) fcntl(in_w.fd, F_SETFL, fcntl(in_w.fd, F_GETFL) | O_NONBLOCK);
  ChildProcess child;
  child.pid_ = pid;
  child.group_ = group;
  child.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  child.in_ = std::exchange(in_w.fd, -1);
  child.out_ = std::exchange(out_r.fd, -1);
  child.err_ = std::exchange(err_r.fd, -1);
  child.out_file_ = std::exchange(out_file.fd, -1);
  child.err_file_ = std::exchange(err_file.fd, -1);
  return child;
}

Result<SpawnResult> RunProcess(const SpawnSpec& spec, int cancel_fd) {
  ASSIGN_OR_RETURN(ChildProcess child, StartProcess(spec, !spec.stdin_data.empty()));
  return FollowProcess(child, spec, cancel_fd);
}

Result<SpawnResult> FollowProcess(ChildProcess& child, const SpawnSpec& spec, int cancel_fd) {
  const pid_t pid = child.pid_;
  const pid_t group = child.group_;  // signalled; `pid` (a monitor, maybe) is waited for
  if (pid <= 0) return FailedPrecondition("no started process to follow");
  Fd pidfd(std::exchange(child.pidfd_, -1));
  Fd in_w(std::exchange(child.in_, -1));
  Fd out_r(std::exchange(child.out_, -1));
  Fd err_r(std::exchange(child.err_, -1));
  Fd out_file(std::exchange(child.out_file_, -1));
  Fd err_file(std::exchange(child.err_file_, -1));
  const bool to_files = out_file.fd >= 0 || err_file.fd >= 0;
  // Output files are trimmed this often, so a chatty child does not fill the disk.
  constexpr auto kTrimEvery = std::chrono::milliseconds(250);
  auto trim_at = std::chrono::steady_clock::now() + kTrimEvery;
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
        kill(-group, SIGTERM);
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
    if (to_files && !exited) {
      auto now = std::chrono::steady_clock::now();
      if (now >= trim_at) {
        for (const Fd* file : {&out_file, &err_file}) {
          if (file->fd >= 0) TrimOutputFile(file->fd, spec.capture_limit);
        }
        trim_at = now + kTrimEvery;
      }
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(trim_at - now).count()) + 1;
      timeout = timeout < 0 ? left : std::min(timeout, left);
    }
    if (exited) timeout = 0;  // the child is gone: take what is buffered, don't wait for heirs
    if (pidfd.fd < 0 && !exited) timeout = 50;  // no pidfd: poll waitpid
    int ready = poll(fds, static_cast<nfds_t>(n), timeout);
    if (ready < 0 && errno != EINTR) {
      // Cannot watch it any more: the child's destructor kills and reaps it.
      return Internal(fmt::format("poll while following {}: {}", spec.argv[0], std::strerror(errno)));
    }
    auto drain = [&](Fd& fd, int idx, std::string& into, size_t& dropped) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) {
        if (exited && idx >= 0) fd.Close();
        return;
      }
      ssize_t got = read(fd.fd, buf, sizeof buf);
      if (got > 0) {
        Append(into, dropped, buf, static_cast<size_t>(got), spec.capture_limit);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.Close();
      }
    };
    if (ready > 0 || exited) {
      drain(out_r, i_out, result.out, result.out_dropped);
      drain(err_r, i_err, result.err, result.err_dropped);
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
      kill(-group, SIGTERM);
      term_sent = true;
      result.stopped = true;
      kill_at = std::chrono::steady_clock::now() + spec.kill_grace;
    }
    if (term_sent && !exited && std::chrono::steady_clock::now() >= kill_at) {
      kill(-group, SIGKILL);
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
  if (result.stopped) kill(-group, SIGKILL);  // leave no stragglers of a stopped group
  for (const Fd* file : {&out_file, &err_file}) {  // what came since the last trim
    if (file->fd >= 0) TrimOutputFile(file->fd, spec.capture_limit);
  }
  if (out_file.fd >= 0) {
    CapturedOutput out = ReadOutput(out_file.fd, spec.capture_limit);
    result.out = std::move(out.text);
    result.out_dropped = out.dropped;
  }
  if (err_file.fd >= 0) {
    CapturedOutput err = ReadOutput(err_file.fd, spec.capture_limit);
    result.err = std::move(err.text);
    result.err_dropped = err.dropped;
  }
  return result;
}

}  // namespace fanout
