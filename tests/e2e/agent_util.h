// Helpers for end-to-end tests of `fanout agent`: a real agent process in the background on a
// loopback port, its banner parsed (URL, token, data_dir), stopped by signal and restarted on
// the same data_dir, plus clients for it: AgentClient for the API and raw HTTP for what
// AgentClient never sends (bad bodies, missing or wrong credentials).
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "client/agent_client.h"
#include "e2e/e2e_util.h"

namespace fanout::testing {

// One HTTP answer, or `error` when no answer came (refused connection, TLS handshake failed).
struct HttpReply {
  int status = 0;
  std::string body;
  std::string content_type;
  nlohmann::json json;  // the body parsed, null when it is not JSON
  std::string error;
};

// A `fanout agent` process run in its own scratch directory (its working directory, so step
// processes inherit it). Output goes to agent-N.out / agent-N.err there, N counting launches.
// The destructor kills the agent and every process still working in the scratch directory
// (orphaned steps), even when the test failed half way.
class AgentProcess {
 public:
  AgentProcess();
  ~AgentProcess();
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  const ScratchDir& dir() const { return dir_; }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  // `fanout agent --dev --slots N --data-dir <dir>/data`.
  bool StartDev(int slots);
  // Writes `yaml` to <dir>/agent.yaml (and `token` to <dir>/token when not empty, for the
  // config's `token_file: token`), then `fanout agent --config agent.yaml --listen
  // 127.0.0.1:0`. The config's paths are relative to <dir>.
  bool StartWithConfig(const std::string& yaml, const std::string& token = "");
  // Launches `fanout agent ARGS...` and waits (bounded) for its banner. False, with a test
  // failure naming its stderr, when it exits first or prints nothing in time.
  bool Start(const std::vector<std::string>& args);
  // Launches `fanout agent ARGS...` expecting it to refuse to start; returns its exit code.
  int StartExpectingExit(const std::vector<std::string>& args);
  // The last arguments again, on the same data_dir (--data-dir). The URL (port) changes unless
  // `same_port` (as a restarted service's); for --dev, the token changes.
  bool Restart(bool same_port = false);

  // SIGTERM (a drain) and wait for the exit; returns the exit code (128+signal when killed).
  int Terminate(std::chrono::milliseconds limit = std::chrono::seconds(15));
  // Waits for the agent to exit by itself (after a signal sent elsewhere); its exit code,
  // or -1 after killing it when `limit` passes.
  int WaitForExit(std::chrono::milliseconds limit = std::chrono::seconds(15));
  // SIGKILL, as a crash, and reap it.
  void Kill();
  bool running() const { return pid_ > 0; }
  int pid() const { return pid_; }

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }
  const std::string& token() const { return token_; }
  const std::string& token_file() const { return token_file_; }
  const std::string& data_dir() const { return data_dir_; }
  // This launch's stdout and stderr so far.
  std::string out() const;
  std::string err() const;

  // For an https agent: the CA to trust and the client certificate to present.
  void set_tls_files(std::string ca, std::string cert, std::string key);
  // Launches from now on run in this network namespace (a path such as /run/netns/NAME), as
  // if on a server of their own.
  void set_netns(std::string path) { netns_ = std::move(path); }

  // An API client with the agent's URL, token and TLS files; `with_token` false leaves the
  // token out.
  std::unique_ptr<client::AgentClient> Client(bool with_token = true) const;

  // Raw requests. Http() sends the agent's token; HttpWithToken() sends `token` ("" sends no
  // Authorization header at all).
  HttpReply Http(const std::string& method, const std::string& path, const std::string& body = "",
                 const std::string& content_type = "application/json") const;
  HttpReply HttpWithToken(const std::string& token, const std::string& method,
                          const std::string& path, const std::string& body = "",
                          const std::string& content_type = "application/json") const;

 private:
  int Launch(const std::vector<std::string>& args);
  bool ReadBanner();
  void KillLeftovers();

  ScratchDir dir_;
  std::vector<std::string> args_;
  int pid_ = -1;
  int launches_ = 0;
  std::string url_, name_, token_, token_file_, data_dir_;
  std::string ca_, cert_, key_;
  std::string netns_;
};

// Long-polls a run until it reaches a final state (bounded by `limit`); the run's JSON, or
// null after a test failure.
nlohmann::json WaitForRun(client::AgentClient& agent, const std::string& run_id,
                          std::chrono::seconds limit = std::chrono::seconds(20));

// Whether a process has ended: gone, or a zombie its (adoptive) parent has not reaped yet.
bool ProcessEnded(int pid);

// The whole content of a file, "" when it cannot be read.
std::string ReadText(const std::string& path);

// The names of a run's step attempts in order, e.g. {"a", "c"}.
std::vector<std::string> StepNames(const nlohmann::json& run);

}  // namespace fanout::testing
