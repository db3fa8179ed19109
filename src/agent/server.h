// The agent daemon: its HTTP/JSON API (docs/agent-api.md) over the job store and executor,
// with token and mutual-TLS authentication, body limits and clear errors.
// Start() binds and recovers; Serve() blocks handling requests until Shutdown() (called from
// another thread, e.g. on SIGTERM) drains the runs and stops the listener.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agent/config.h"
#include "agent/executor.h"
#include "agent/store.h"
#include "agent/throttled_notice.h"
#include "common/util.h"
#include "fanout/status.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace fanout::agent {

class AgentServer {
 public:
  // `fanout_binary` is what package steps run (`fanout run`).
  AgentServer(AgentConfig config, std::string fanout_binary);
  ~AgentServer();
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  // Opens the store under data_dir, recovers runs, binds the listener (port 0: any free port).
  Status Start();
  // Handles requests until Shutdown(). Returns an error when the listener failed.
  Status Serve();
  // Stops accepting runs, lets running steps finish for up to drain_grace, stops the rest,
  // then stops the listener. Safe to call from any thread, once.
  void Shutdown();

  const AgentConfig& config() const { return config_; }

 private:
  void Routes();
  bool Authorized(const httplib::Request& req, httplib::Response& res);
  // Why a request that comes from a web page is refused, or "" (see server.cc).
  std::string FromAWebPage(const httplib::Request& req) const;
  // Says on stderr that a request was refused for its token: at once, then at most once a
  // minute with how many (refused_), so that a misconfigured parent shows in the agent's log
  // without flooding it.
  void NoteRefused(const httplib::Request& req, bool token_given);
  // Whether `token` is the one in force, compared in constant time.
  bool TokenMatches(std::string_view token);
  // Reads token_file again when it changed since it was last read, so that a rotated token
  // takes effect without a restart; true when the token changed. Looks at the file for every
  // `refused` request, else at most once a second.
  bool ReloadTokenIfChanged(bool refused);
  // Drops a job from jobs_ after the store changed it.
  void ForgetJob(const std::string& name);
  // Answers 503 when the agent's database is gone (Executor::Broken): a deploy would report
  // success and be lost.
  bool RefusedWhileBroken(httplib::Response& res);
  // The parameters that deployed package `package` declares sensitive ({} when it is missing or
  // invalid: its step will fail and say so). Read again when the file changed.
  std::vector<std::string> SensitiveParams(const std::string& package);

  AgentConfig config_;
  std::string fanout_binary_;
  // This agent process's own id, new at each start, in its status: a parent's pool that lists
  // the agent twice (under two names or URLs) finds out by it.
  const std::string instance_ = NewExecutionId();
  std::unique_ptr<AgentStore> store_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<httplib::Server> http_;
  // Shutdown against Serve (see Shutdown): a stop asked for before the listener runs.
  enum class ServeState { kNotYet, kServing, kServed };
  std::atomic<ServeState> serve_state_{ServeState::kNotYet};
  std::atomic<bool> stop_requested_{false};

  // Requests refused for their token (NoteRefused): the last described as "GET /v1/status from
  // 10.0.0.7, had none".
  ThrottledNotice refused_;

  // The token in force: config_.token at the start, then token_file's as it changes (its
  // inode, size and modification time say when).
  std::mutex token_mu_;
  std::string token_;
  struct stat token_file_stat_ {};
  std::atomic<int64_t> token_checked_ms_{0};  // steady clock

  // Parsed job definitions by name, so a start reads and parses its job only the first time.
  // PUT and DELETE of a job drop its entry and bump the generation, so a load that began before
  // them does not cache what it read.
  std::mutex jobs_mu_;
  std::map<std::string, std::shared_ptr<const JobDef>> jobs_;
  uint64_t jobs_generation_ = 0;

  struct PackageSecrets {
    std::filesystem::file_time_type modified;
    std::vector<std::string> sensitive;
  };
  std::mutex packages_mu_;
  std::map<std::string, PackageSecrets> package_secrets_;  // by package name
};

// The one place a Status code becomes an HTTP status.
int HttpStatusFor(Code code);

}  // namespace fanout::agent
