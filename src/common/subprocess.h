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
  // Of a stream longer than capture_limit, its last bytes are kept too (SpawnResult::out_tail):
  // a failing program says why at the end.
  size_t tail_limit = 8 * 1024;
  std::chrono::milliseconds kill_grace{2000};  // SIGTERM -> SIGKILL
  // Stopped like a cancel once this much time has passed (0: no limit).
  std::chrono::milliseconds timeout{0};
  // Run as this Unix account (an agent proxy): its uid, primary gid and supplementary groups.
  // Needs the privilege to switch (root); unset runs as the caller.
  std::optional<RunAs> run_as;
  // Called with the child's pid as soon as it runs (an agent records it for re-attach).
  std::function<void(int pid)> on_start;
};

// SIGKILL to the process group `pgid` and to every descendant of its members (found through
// /proc): a descendant's own group goes whole when one of the tree leads it, else the
// descendant alone. A `fanout run` puts each task in a group of its own, and killed before it
// could stop them, it left them running for ever (QA). Never signals the caller's own group.
void KillProcessTree(int pgid);

// `fanout --argv-from-stdin` reads its command line from the first line of stdin, a JSON array
// of the arguments after `fanout`, and leaves the rest of stdin to the command.
inline constexpr std::string_view kArgvFromStdin = "--argv-from-stdin";
// In a warm process's environment (an agent's, started ahead of its next package step): the
// SQLite catalog its step will use, opened while it waits (PreopenCatalogForRun).
inline constexpr const char* kWarmCatalogEnv = "FANOUT_WARM_CATALOG";

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
  // When bytes were dropped: the stream's last tail_limit bytes (else empty: `out` holds all).
  std::string out_tail;
  std::string err_tail;
};

// A started child, its process group and the pipes of its stdin, stdout and stderr, between
// StartProcess and FollowProcess. One never followed is killed (its group) and reaped.
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
  int pid_ = -1;
  int pidfd_ = -1, in_ = -1, out_ = -1, err_ = -1;  // our ends; -1 when closed
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
