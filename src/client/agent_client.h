// The HTTP/JSON client of one `fanout agent` (docs/agent-api.md): deploy packages and jobs,
// start and follow runs, read history. Used by the CLI (`fanout job`, `fanout deploy`), by
// agent-job tasks and by agent pools. Every HTTP or network failure comes back as a Status.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fanout/status.h"

namespace httplib {
class ClientImpl;
class SSLClient;
enum class Error;
}

namespace fanout::client {

// Where an agent is and how to prove who we are. Token files and environment variables are
// resolved by the caller (see ReadTokenFile); this holds the values.
struct AgentEndpoint {
  std::string url;        // http://HOST:PORT or https://HOST:PORT; IPv6 as http://[::1]:7420
  std::string token;      // sent as "Authorization: Bearer TOKEN" when not empty
  std::string token_source;  // where it was read ("token file PATH"), named when refused
  std::string ca_file;    // https: trust this CA for the agent's certificate (else system CAs)
  std::string cert_file;  // https: client certificate for mutual TLS (with key_file)
  std::string key_file;
  std::chrono::milliseconds connect_timeout{2000};
  // How long a silent agent is waited for; a long-poll (GetRun with wait) adds its wait to it.
  std::chrono::milliseconds read_timeout{10000};
};

// PUT/GET/list of /v1/packages. `content` is filled by GetPackage only; `changed` by
// PutPackage only.
struct PackageInfo {
  std::string name;
  int version = 0;
  std::string sha256;
  int64_t size = 0;
  std::string deployed_at;  // ISO 8601 UTC, empty when absent
  std::string content;
  bool changed = false;
};

// PUT /v1/jobs/{name}: `created` when the agent answered 201 (the job is new).
struct JobPutResult {
  std::string name;
  bool changed = false;
  bool created = false;
  std::vector<std::string> warnings;  // e.g. a package step's package not deployed there
};

// The body of POST /v1/jobs/{name}/start; empty fields are left out. Parameter values are
// typed JSON (common/param_json).
struct StartRequest {
  std::map<std::string, nlohmann::json> params;
  // Secrets that occur in the params' values: the agent keeps them out of its history and
  // answers, and its child masks them (docs/agent-api.md).
  std::vector<std::string> secrets;
  std::string parent_execution_id;
  std::string start_step;
  std::string idempotency_key;
  // The agent stops the run once nobody has followed it for this long (0: never). Sent as the
  // query parameter orphan_timeout_ms, which agents older than it ignore.
  std::chrono::milliseconds orphan_timeout{0};
};

struct StartResult {
  std::string run_id;
  std::string status;  // queued | running
  bool existing = false;  // the idempotency key matched a run started before
  // A start with a wait: its first long-poll, as GetRun with that wait (and no known execution)
  // returns it: the run, or why the connection failed after the start's answer. None from an
  // agent that answers the start alone (older than the wait).
  std::optional<Result<nlohmann::json>> first_poll;
};

// How long a parent waits for an agent whose connection is refused or broken (restarting) to
// answer again before it gives the child's run up and places it elsewhere. An agent down for
// longer ends the parents' queued runs it recovers rather than start them (a second run).
inline constexpr std::chrono::seconds kAgentComeBackWait{5};
// The longest orphan_timeout an agent takes (a start's orphan_timeout_ms above it is cut to it).
inline constexpr std::chrono::hours kMaxOrphanTimeout{30 * 24};

// Run states that never change again: succeeded, failed, canceled, abandoned.
bool IsFinalRunStatus(std::string_view status);

// Whether a call's error is the agent's own answer 503 (it drains, or its data_dir is gone),
// which says why, rather than no answer at all (both are Unavailable).
bool AnsweredUnavailable(const fanout::Status& status);

// What to do about an agent's 403: it took the request for a web page's (docs/agent-api.md).
std::string ForbiddenHint(const std::string& url);

// Reads a bearer token from a file (surrounding whitespace removed); InvalidArgument when the
// file is unreadable, empty or holds more than the token (see CheckToken).
Result<std::string> ReadTokenFile(const std::string& path);
// InvalidArgument, naming `source`, when `token` holds anything but printable ASCII without
// spaces (a line break would inject HTTP headers), or more than kMaxTokenLength characters.
inline constexpr size_t kMaxTokenLength = 4096;
Status CheckToken(std::string_view token, std::string_view source);
// The token as agent connections and the CLI name it: read from `token_file` when given, else
// the value of the environment variable `token_env` (empty when unset: no token is sent).
Result<std::string> ResolveToken(const std::string& token_file,
                                 const std::string& token_env = "FANOUT_TOKEN");
// Where ResolveToken reads: "token file PATH" or "$FANOUT_TOKEN" (AgentEndpoint::token_source).
std::string TokenSource(const std::string& token_file,
                        const std::string& token_env = "FANOUT_TOKEN");

// One agent's API. Keeps one keep-alive connection, so consecutive calls reuse it.
// Thread-compatible: one thread at a time per instance; use one AgentClient per thread (they
// are cheap) for concurrent calls to the same agent.
//
// HTTP statuses map to codes: 400 InvalidArgument, 401 Unauthenticated, 403 PermissionDenied,
// 404 NotFound, 409 FailedPrecondition, 413 ResourceExhausted, 502/503/504 and a refused,
// timed-out or broken connection Unavailable, anything else Internal. Messages name the
// method, the agent URL and path, and the agent's "error" and "detail".
class AgentClient {
 public:
  // A malformed URL or unreadable TLS file is not fatal here: every call then fails with
  // InvalidArgument, and endpoint_status() tells why up front.
  explicit AgentClient(AgentEndpoint endpoint);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  const AgentEndpoint& endpoint() const { return endpoint_; }
  // The URL as used: scheme://host:port without a trailing slash.
  const std::string& url() const { return base_url_; }
  const fanout::Status& endpoint_status() const { return endpoint_status_; }
  // Sends `token` from the next call on (an agent pool re-reads a member's token file).
  void SetToken(const std::string& token);

  // GET /v1/health: {"status", "name", "version"}. Needs no credentials.
  Result<nlohmann::json> Health();
  // GET /v1/status: {"name", "version", "slots", "busy", "queued", "draining", "running"}.
  Result<nlohmann::json> Status();

  Result<PackageInfo> PutPackage(const std::string& name, const std::string& yaml);
  // NotFound when the agent has no such package.
  Result<PackageInfo> GetPackage(const std::string& name);
  Result<std::vector<PackageInfo>> ListPackages();
  fanout::Status DeletePackage(const std::string& name);

  // `content_type` is application/json or application/yaml.
  Result<JobPutResult> PutJob(const std::string& name, const std::string& body,
                              const std::string& content_type);
  // The definition plus "running".
  Result<nlohmann::json> GetJob(const std::string& name);
  // The whole answer: {"jobs": [{"name", "enabled", "steps", "max_concurrent_runs", "running",
  // "last_run"}]}.
  Result<nlohmann::json> ListJobs();
  fanout::Status DeleteJob(const std::string& name);

  // `accepted` gets the start's answer as soon as it comes. With `wait`, the run's first
  // long-poll comes in the same exchange (StartResult::first_poll): the start's answer comes
  // first, so a connection lost after it loses no start.
  Result<StartResult> StartJob(
      const std::string& name, const StartRequest& request,
      std::optional<std::chrono::seconds> wait = std::nullopt,
      const std::function<void(const StartResult&)>& accepted = nullptr);
  // The run: {"run_id", "job", "status", ..., "steps": [...]}. With `wait`, a long-poll that
  // answers when the run ends or the wait (the agent caps it at 60 s) passes, and with
  // `known_execution_id` ("" for none) also when a package step's execution other than that one
  // has started.
  Result<nlohmann::json> GetRun(const std::string& run_id,
                                std::optional<std::chrono::seconds> wait = std::nullopt,
                                const std::optional<std::string>& known_execution_id = std::nullopt);
  // {"run_id", "status"}. `within`: how long to wait for the answer, when less than the
  // endpoint's read timeout (a stop that must give up at a deadline).
  Result<nlohmann::json> StopRun(const std::string& run_id,
                                 std::optional<std::chrono::milliseconds> within = std::nullopt);
  // From another thread: ends the request under way at once (it fails as Unavailable); the
  // next call connects again.
  void Interrupt();
  // After a call that got no answer: whether its request may have reached the agent (a
  // connection was made), so that what it asked for may have been done.
  bool LastRequestMayHaveArrived() const { return may_have_arrived_; }
  // Whether some request of this client got an HTTP answer: the agent was there.
  bool Answered() const { return answered_; }
  // The id of the run a start with `idempotency_key` began on this agent; "" when none did.
  Result<std::string> FindRunByKey(const std::string& idempotency_key);
  // The whole answer: {"runs": [...]}, newest first; limit 0 leaves the agent's default (50).
  Result<nlohmann::json> JobHistory(const std::string& name, int limit = 0);

 private:
  struct Response {
    int status = 0;
    nlohmann::json body;  // null for 204 or an empty body
  };
  // Sends one request and turns every failure into a Status; `body` is sent when
  // content_type is not empty.
  Result<Response> Call(const char* method, const std::string& path,
                        const std::string& body = "", const std::string& content_type = "");
  // POSTs a JSON body whose successful answer is application/x-ndjson, read as it arrives: each
  // whole line goes to `on_line` at once, also those before a connection that broke (the call
  // then fails); `on_line` returns false to stop reading (the call fails too). Any other answer
  // (an error, an agent that answers in one piece) is the Response's body.
  Result<Response> PostForLines(const std::string& path, const std::string& body,
                                const std::function<bool(nlohmann::json)>& on_line);
  fanout::Status TransportFailure(httplib::Error error, const std::string& where);
  // The Status or Response for an HTTP answer of `status` with body `text`.
  Result<Response> Answer(const std::string& where, int status, const std::string& text);
  fanout::Status CheckName(const char* what, const std::string& name) const;

  AgentEndpoint endpoint_;
  std::string base_url_;
  fanout::Status endpoint_status_;
  bool answered_ = false;  // some request got an HTTP answer
  bool may_have_arrived_ = true;  // see LastRequestMayHaveArrived
  std::unique_ptr<httplib::ClientImpl> http_;
  httplib::SSLClient* https_ = nullptr;  // http_ when the URL is https, for why a check failed
};

}  // namespace fanout::client
