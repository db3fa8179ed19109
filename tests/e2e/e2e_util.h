// Helpers for end-to-end tests: a scratch directory, running the real `fanout` binary with
// captured output, and reading the catalog it wrote.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fanout/catalog.h"

namespace fanout::testing {

// A fresh directory under /tmp, removed with everything in it when the object goes away.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content) const;
  std::string Read(const std::string& name) const;

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `fanout ARGS...` in `cwd` and waits for it.
CommandResult RunFanout(const std::vector<std::string>& args, const std::string& cwd);

// Runs `fanout ARGS...` in `cwd` on a terminal of its own (a pseudo-terminal, TERM=xterm), as a
// user at a shell does; `out` gets all it wrote there, stdout and stderr together.
CommandResult RunFanoutInTerminal(const std::vector<std::string>& args, const std::string& cwd);

// Starts `fanout ARGS...` in the background; returns its pid. Output goes to files in `cwd`
// (fanout.out, fanout.err).
int StartFanout(const std::vector<std::string>& args, const std::string& cwd);
// Waits for a pid started by StartFanout; returns its exit code (128+signal when killed).
int WaitFanout(int pid, std::chrono::seconds limit);

// How long a test waits for what must happen. A wait ends as soon as its condition holds, so a
// passing test does not pay for this; a loaded CI machine can stall a process for seconds (a run
// there once took 13 s to start while Chromium rendered beside it).
inline constexpr std::chrono::seconds kEventually{60};

// Waits until `predicate` holds or `limit` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& predicate, std::chrono::milliseconds limit);

inline bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The password of a postgresql://USER:PASSWORD@HOST/... URI, or "".
std::string PasswordOf(const std::string& uri);

// A child package `name` that fails unless its list parameter `rows` is [[eu, 1], [us, 2.5]]
// with its numbers as numbers: it adds 1 to each row's second value.
std::string RowSummingChild(const std::string& name);

// Opens the catalog at dir/fanout.db.
std::unique_ptr<Catalog> OpenTestCatalog(const std::string& dir);

}  // namespace fanout::testing
