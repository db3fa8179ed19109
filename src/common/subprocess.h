// Runs one child process in its own process group with captured, bounded output, and stops
// the whole group on cancel or timeout (SIGTERM, then SIGKILL after a grace period).
// Used by the `process` task and by out-of-process child packages. Thread-safe: each call
// is independent.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fanout/status.h"

namespace fanout {

struct RunAs {
  std::string user;
  std::string home;  // its HOME, USER and LOGNAME replace the caller's (unless spec.env sets them)
  unsigned uid = 0;
  unsigned gid = 0;
  std::vector<unsigned> groups;
};

// Looks up a Unix account by name for RunAs; NotFound when there is none.
Result<RunAs> LookUpUser(const std::string& user);

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] without '/' is looked up in PATH
  std::string cwd;                // "" = inherit
  std::map<std::string, std::string> env;  // added to (or replacing in) the inherited environment
  // Written to the child's stdin (while its output is drained), then closed. A child that
  // exits or closes stdin before reading it all just gets less; the caller sees no SIGPIPE.
  std::string stdin_data;
  size_t capture_limit = 64 * 1024;        // bytes kept per stream; the rest is counted only
  std::chrono::milliseconds kill_grace{2000};  // SIGTERM -> SIGKILL
  // Stopped like a cancel once this much time has passed (0: no limit).
  std::chrono::milliseconds timeout{0};
  // Run as this Unix account (an agent proxy): its uid, primary gid and supplementary groups.
  // Needs the privilege to switch (root); unset runs as the caller.
  std::optional<RunAs> run_as;
  // Called with the child's pid as soon as it runs (an agent records it for re-attach).
  std::function<void(int pid)> on_start;
  // When set, the child's stdout (stderr) goes to this file, created or emptied (mode 0600),
  // instead of a pipe: a child that outlives the caller (an agent's step) keeps writing rather
  // than dying of SIGPIPE. FollowProcess reads the first capture_limit bytes once the child has
  // ended, counts the rest as dropped, and meanwhile frees the disk blocks beyond that
  // (TrimOutputFile). The caller removes the file.
  std::string stdout_file;
  std::string stderr_file;
  // When set, the child runs under a monitor: a fork of the caller, apart from its process
  // group and deaf to the signals a terminal or a stop sends, that waits for the child and
  // writes how it ended to this file (ReadExitFile), so that the end of a child outliving the
  // caller (an agent's step, the agent killed) is still known. The child leads its own process
  // group as without it, and on_start gets its pid; the monitor ends as the child did.
  std::string exit_file;
};

// How a process ended, as SpawnResult says it.
struct ProcessEnd {
  int exit_code = 0;  // 128 + signal when killed by a signal
  int term_signal = 0;
};
// The end a monitor wrote to `path` (SpawnSpec::exit_file), waiting up to `wait` for it to be
// written; nullopt when there is no such file or it holds no end (the monitor was killed too).
std::optional<ProcessEnd> ReadExitFile(const std::string& path, std::chrono::milliseconds wait);

// What a child wrote to an output file (SpawnSpec::stdout_file): the first `limit` bytes and
// how many came after them. NotFound when there is no such file.
struct CapturedOutput {
  std::string text;
  size_t dropped = 0;
};
Result<CapturedOutput> ReadOutputFile(const std::string& path, size_t limit);
// Frees the disk blocks of an output file beyond its first `keep` bytes (punching holes, where
// the file system can): its size still counts every byte written, its start stays readable.
void TrimOutputFile(int fd, size_t keep);

// `fanout --argv-from-stdin` reads its command line from the first line of stdin, a JSON array
// of the arguments after `fanout`, and leaves the rest of stdin to the command.
inline constexpr std::string_view kArgvFromStdin = "--argv-from-stdin";

// Makes `spec` (a `fanout` command line) run as `fanout --argv-from-stdin`, its arguments put
// before its stdin_data: a command line that holds a secret (a catalog URI with a password)
// stays out of `ps`.
void MoveArgvToStdin(SpawnSpec& spec);

struct SpawnResult {
  int exit_code = 0;  // 128 + signal when killed by a signal
  int term_signal = 0;
  bool stopped = false;    // we stopped it because `cancel_fd` fired
  bool timed_out = false;  // we stopped it because `timeout` passed
  std::string out;
  std::string err;
  size_t out_dropped = 0;  // bytes beyond capture_limit
  size_t err_dropped = 0;
};

// A started child, its process group and the pipes (or files) of its stdin, stdout and stderr,
// between StartProcess and FollowProcess. One never followed is killed (its group) and reaped.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  int pid() const { return pid_; }
  // Whether it has ended (without reaping it): a child kept waiting may have died meanwhile.
  bool Ended() const;

 private:
  friend Result<ChildProcess> StartProcess(const SpawnSpec& spec, bool stdin_pipe);
  friend Result<SpawnResult> FollowProcess(ChildProcess& child, const SpawnSpec& spec,
                                           int cancel_fd);
  void Release();  // closes what is still open, kills and reaps a child not yet reaped
  int pid_ = -1;    // our child: the process, or its monitor (SpawnSpec::exit_file)
  int group_ = -1;  // the process's group, which its pid names
  int pidfd_ = -1, in_ = -1, out_ = -1, err_ = -1;  // our ends; -1 when closed
  int out_file_ = -1, err_file_ = -1;  // the output files when the spec names them
};

// Starts `spec` (calling its on_start), with its stdin a pipe to be fed by FollowProcess when
// `stdin_pipe`, else /dev/null. Fails when the process could not be started (no such program,
// bad cwd).
Result<ChildProcess> StartProcess(const SpawnSpec& spec, bool stdin_pipe);

// Feeds `spec.stdin_data` to a started child, waits for it and collects its output; its timeout
// counts from this call. When `cancel_fd` (an eventfd or pipe, -1 for none) becomes readable the
// process group is stopped.
Result<SpawnResult> FollowProcess(ChildProcess& child, const SpawnSpec& spec, int cancel_fd);

// StartProcess, then FollowProcess.
Result<SpawnResult> RunProcess(const SpawnSpec& spec, int cancel_fd);

}  // namespace fanout
