// The agent's route table and handlers (docs/agent-api.md). Handlers parse and check input,
// call the store or executor, and turn every Status into one JSON error shape.
#include "agent/server.h"

#include <httplib.h>
#include <openssl/crypto.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "agent/connection_threads.h"
#include "client/agent_client.h"
#include "client/tls_files.h"
#include "common/param_json.h"
#include "common/util.h"
#include "fanout/package.h"

namespace fanout::agent {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Why the agent's TLS files cannot serve, or OK: httplib only says that they did not load, and
// an expired certificate loads fine, then fails every client's check.
Status CheckTlsFiles(const AgentConfig& config) {
  ASSIGN_OR_RETURN(client::X509Ptr cert, client::ReadCertificate("tls.cert", config.tls_cert));
  RETURN_IF_ERROR(client::CheckPrivateKey("tls.key", config.tls_key, cert.get(),
                                          "tls.cert " + config.tls_cert));
  if (!config.tls_client_ca.empty()) {
    RETURN_IF_ERROR(client::ReadCertificate("tls.client_ca", config.tls_client_ca).status());
  }
  return Status::Ok();
}

constexpr int kMaxWaitSeconds = 60;
// How long a start with a wait holds its answer for a run that ends at once (see the start).
constexpr std::chrono::milliseconds kWholeAnswerWindow{10};
constexpr int kRequestReadTimeoutSeconds = 10;  // between the bytes of a request
// Connection threads (connection_threads.h): a long-poll holds one. Beyond the cap, connections
// wait for a thread.
constexpr int kMinHttpThreads = 8;
constexpr int kMaxHttpThreads = 4096;
constexpr std::chrono::seconds kIdleHttpThreadLimit{60};

json TimeJson(const std::optional<DateTime>& t) {
  return t ? json(FormatDateTime(*t)) : json(nullptr);
}

// Every answer's JSON text. Captured output that is not UTF-8 (binary bytes, a character cut at
// the 64 KiB limit) shows as U+FFFD: `strict` threw, and the run and its job's history answered
// 500 for ever.
std::string JsonText(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A 500 is the agent's own trouble (a full disk, say): said on stderr too, at most once every
// 10 s with how many came meanwhile. The agent's log had shown nothing while its parents got
// "database or disk is full" (QA). Those held back are said when their 10 s have passed, or as
// the process ends.
void SayServerError(const json& body) {
  static ThrottledNotice said(std::chrono::seconds(10), [](int count, const std::string& last) {
    if (count == 1) {
      std::fprintf(stderr, "fanout agent: answered 500: %s\n", last.c_str());
    } else {
      std::fprintf(stderr, "fanout agent: answered 500 to %d requests (the last: %s; said at most "
                   "once every 10 s)\n", count, last.c_str());
    }
  });
  said.Note(JsonText(body));
}

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  if (status == 500) SayServerError(body);
  res.set_content(JsonText(body), "application/json");
}

void ReplyError(httplib::Response& res, const Status& status, const std::string& error) {
  Reply(res, HttpStatusFor(status.code()), json{{"error", error}, {"detail", status.message()}});
}

// One line of an application/x-ndjson answer.
std::string JsonLine(const json& body) { return JsonText(body) + "\n"; }

// Query parameter `name`: a whole number from 0, of which at most `max` is used; else a 400
// that says so.
std::optional<int64_t> WholeNumberParam(const httplib::Request& req, httplib::Response& res,
                                        const std::string& name, std::string_view unit,
                                        int64_t max) {
  const std::string text = req.get_param_value(name);
  int64_t n = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 0) {
    Reply(res, 400, json{{"error", "bad " + name},
                         {"detail", fmt::format("{} is a whole number of {} from 0 (at most {} "
                                                "is used), not '{}'", name, unit, max, text)}});
    return std::nullopt;
  }
  return std::min(n, max);
}

// The request's `wait` in seconds, at most kMaxWaitSeconds; nullopt after answering 400.
std::optional<int> WaitSeconds(const httplib::Request& req, httplib::Response& res) {
  auto seconds = WholeNumberParam(req, res, "wait", "seconds", kMaxWaitSeconds);
  if (!seconds) return std::nullopt;
  return static_cast<int>(*seconds);
}

// The name in a route's first capture, checked against kNameRule.
bool RouteName(const httplib::Request& req, httplib::Response& res, std::string& name) {
  name = req.matches[1];
  if (IsValidName(name)) return true;
  Reply(res, 400, json{{"error", "bad name"},
                       {"detail",
                        fmt::format("'{}' is not a valid name: use {}", name, kNameRule)}});
  return false;
}

json StepJson(const StepAttemptRecord& a, bool with_output) {
  json j = {{"step", a.step},          {"name", a.name},
            {"attempt", a.attempt},    {"status", a.status},
            {"started_at", TimeJson(a.started_at)}, {"ended_at", TimeJson(a.ended_at)},
            {"exit_code", a.exit_code ? json(*a.exit_code) : json(nullptr)},
            {"execution_id", a.execution_id}, {"message", a.message}};
  if (with_output) {
    j["stdout"] = a.stdout_text;
    j["stderr"] = a.stderr_text;
  }
  return j;
}

json RunJson(const RunRecord& r, AgentStore& store, bool with_output) {
  json params = json::object();
  try {
    params = json::parse(r.params.empty() ? "{}" : r.params);
  } catch (const json::exception&) {
  }
  json steps = json::array();
  auto attempts = store.ListStepAttempts(r.id, with_output);
  if (attempts.ok()) {
    for (const auto& a : *attempts) steps.push_back(StepJson(a, with_output));
  }
  return {{"run_id", r.id},
          {"job", r.job},
          {"status", r.status},
          {"queued_at", TimeJson(r.queued_at)},
          {"started_at", TimeJson(r.started_at)},
          {"ended_at", TimeJson(r.ended_at)},
          {"message", r.message},
          {"parent_execution_id", r.parent_execution_id},
          {"params", params},
          {"steps", steps}};
}

// A file rewritten in place, renamed over, or only chown'ed or chmod'ed so that the agent may now
// read it (QA: a token the agent could not read at first was never taken once it could).
bool SameFileState(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// Creates `dir` with `mode` when it is missing, and the folders above it that are missing with
// 0755, whatever the umask; leaves existing folders as they are.
Status MakeFolder(const fs::path& dir, fs::perms mode) {
  std::error_code ec;
  std::vector<fs::path> missing;
  fs::path start = fs::absolute(dir, ec).lexically_normal();
  if (!start.has_filename()) start = start.parent_path();  // "data/"
  for (fs::path p = start; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.root_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && ec) return Unavailable(ec.message());
    const fs::perms wanted = *it == missing.front() ? mode : fs::perms(0755);
    fs::permissions(*it, wanted, ec);
    if (ec) return Unavailable(ec.message());
  }
  return Status::Ok();
}

// The most runs one history answer holds.
constexpr int kMaxHistoryLimit = 10000;

// What another user could change on the way to a path (see FindUntrustedWriter): `problem` is
// empty when nothing.
struct UntrustedWriter {
  std::string problem;  // "PATH belongs to uid N", "PATH is writable by every user (mode M)"
  std::string fix;      // "chmod go-w PATH", ...; empty when PATH could not be looked at
  bool inside = false;  // PATH is one of the last `strict_tail` on the way, not a folder above
};

// Every folder, link and file on the way to `path`, resolved one link at a time as the kernel
// does: whoever may replace any of them chooses what is read or run (QA: a link two deep, or a
// folder link, in a folder every user may write, passed a check of the resolved path alone).
// Each must belong to the agent's user or root. The last `strict_tail` on the way must be
// writable by them alone; folders above may be writable by others when sticky (as /tmp: others
// cannot replace what is not theirs), as sshd's StrictModes checks a home.
UntrustedWriter FindUntrustedWriter(const fs::path& path, size_t strict_tail) {
  const uid_t me = geteuid();
  std::error_code ec;
  std::deque<fs::path> rest;
  for (const fs::path& part : fs::absolute(path, ec).relative_path()) rest.push_back(part);
  rest.push_front("/");  // the root folder is checked as every other
  fs::path resolved;
  for (int links = 0; !rest.empty();) {
    const fs::path part = rest.front();
    rest.pop_front();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      resolved = resolved.parent_path();
      continue;
    }
    const fs::path next = part == "/" ? part : resolved / part;
    const bool strict = rest.size() < strict_tail;
    struct stat st {};
    if (lstat(next.c_str(), &st) != 0) {
      // A token file gone between its read and this check may have been swapped (review).
      return {fmt::format("{}: {}", next.string(), std::strerror(errno)), "", strict};
    }
    if (st.st_uid != me && st.st_uid != 0) {
      return {fmt::format("{} belongs to uid {}", next.string(), st.st_uid),
              S_ISLNK(st.st_mode) ? "replace it with a link of the agent's user or root"
                                  : "give it to the agent's user or root",
              strict};
    }
    if (S_ISLNK(st.st_mode)) {
      if (++links > 40) return {};  // a loop: reading it fails, and says so
      const fs::path target = fs::read_symlink(next, ec);
      if (ec) return {};
      const fs::path parts = target.relative_path();
      rest.insert(rest.begin(), parts.begin(), parts.end());
      if (target.is_absolute()) rest.push_front("/");
      continue;
    }
    const bool shared = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    if (shared && (strict || (st.st_mode & S_ISVTX) == 0)) {
      return {fmt::format("{} is writable by {} (mode {:04o})", next.string(),
                          (st.st_mode & S_IWOTH) ? "every user" : "its group", st.st_mode & 07777),
              "chmod go-w " + next.string(), strict};
    }
    resolved = next;
  }
  return {};
}

// Whoever may write in the data_dir, its packages/ or a folder above them chooses what the
// agent runs, as the agent's user (QA: a package swapped into a 0777 data_dir ran as root).
Status CheckOnlyTrustedWriters(const fs::path& data_dir) {
  std::error_code ec;
  const fs::path dir = fs::canonical(data_dir, ec);
  if (ec) return Unavailable(fmt::format("cannot use data_dir {}: {}", data_dir.string(),
                                         ec.message()));
  UntrustedWriter found = FindUntrustedWriter(dir / "packages", 2);
  if (found.problem.empty()) return Status::Ok();
  if (found.fix.empty()) {
    return Unavailable(fmt::format("cannot use data_dir {}: {}", data_dir.string(), found.problem));
  }
  return Status(Code::kPermissionDenied, fmt::format(
      "data_dir {} is unsafe: {}, who could replace the packages this agent runs: {}{}",
      data_dir.string(), found.problem, found.fix,
      found.inside ? "" : ", or pick a data_dir elsewhere"));
}

// The same for the token file (and the CA that vouches for clients): whoever may write it sets a
// token of their own, then deploys and runs jobs as the agent's user (QA: nobody ran `id` as
// root through a 0666 token file, which the agent reads again when a request brings a new one).
// "" when it is safe.
std::string UnsafeCredentialFile(const char* key, const std::string& file) {
  UntrustedWriter found = FindUntrustedWriter(file, 1);
  if (found.problem.empty()) return "";
  if (found.fix.empty()) {
    return fmt::format("{} {} cannot be checked: {}", key, file, found.problem);
  }
  return fmt::format("{} {} is unsafe: {}, who could {} and run jobs here: {}", key, file,
                     found.problem,
                     std::string_view(key) == "token_file" ? "write a token of their own"
                                                           : "vouch for a client of their own",
                     found.fix);
}

}  // namespace

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kUnauthenticated: return 401;
    case Code::kPermissionDenied: return 403;
    case Code::kNotFound: return 404;
    case Code::kAlreadyExists:
    case Code::kFailedPrecondition: return 409;
    case Code::kResourceExhausted: return 413;
    case Code::kUnavailable:
    case Code::kCanceled: return 503;
    case Code::kDeadlineExceeded: return 504;
    case Code::kInternal: return 500;
  }
  return 500;
}

AgentServer::AgentServer(AgentConfig config, std::string fanout_binary)
    : config_(std::move(config)),
      fanout_binary_(std::move(fanout_binary)),
      refused_(std::chrono::minutes(1), [](int count, const std::string& last) {
        std::fprintf(stderr, "fanout agent: refused %d request%s without a valid bearer token "
                     "(the last, %s; said at most once a minute)\n", count,
                     count == 1 ? "" : "s", last.c_str());
      }),
      token_(config_.token) {
  // The file's state, then its token: a change after LoadAgentConfig read it (the catalog
  // check between may take seconds) is not missed.
  if (config_.token_file.empty() || stat(config_.token_file.c_str(), &token_file_stat_) != 0) {
    return;
  }
  if (auto read = client::ReadTokenFile(config_.token_file); read.ok()) token_ = *read;
}

AgentServer::~AgentServer() = default;  // refused_ says what it held back as it goes

Status AgentServer::Start() {
  // Before anything changes: a bad certificate must not leave recovered runs behind.
  if (config_.tls()) RETURN_IF_ERROR(CheckTlsFiles(config_));
  for (const auto& [key, file] : {std::pair{"token_file", config_.token_file},
                                  std::pair{"tls.client_ca", config_.tls_client_ca}}) {
    if (std::string unsafe = file.empty() ? "" : UnsafeCredentialFile(key, file); !unsafe.empty()) {
      return Status(Code::kPermissionDenied, unsafe);
    }
  }
  std::error_code ec;
  const bool new_data_dir = !fs::exists(config_.data_dir, ec);
  // Others may pass through (a proxy's user reaches its results/USER/ folder and reads the
  // packages it runs) but not list the folder; the database, with every run's params and
  // output, is the agent's alone. Modes are set, not left to the umask: a umask of 002 would
  // make folders the check below refuses.
  using fs::perms;
  constexpr perms kPassThrough = perms::owner_all | perms::group_exec | perms::others_exec;
  constexpr perms kReadable = kPassThrough | perms::group_read | perms::others_read;
  for (const auto& [sub, mode] : {std::pair{"", kPassThrough}, std::pair{"packages", kReadable},
                                  std::pair{"results", kPassThrough}}) {
    const fs::path folder = fs::path(config_.data_dir) / sub;
    if (Status made = MakeFolder(folder, mode); !made.ok()) {
      return Unavailable(fmt::format("cannot {} data_dir {}: {}",
                                     new_data_dir ? "create" : "write in", config_.data_dir,
                                     made.message()));
    }
  }
  fs::permissions(fs::path(config_.data_dir) / "results", kPassThrough, ec);
  // From here on the folder as it is, not as written: a symbolic link on the way, swapped
  // later by whoever may write where it is, cannot move the agent's files (review).
  config_.data_dir = fs::canonical(config_.data_dir, ec).string();
  if (ec) return Unavailable(fmt::format("cannot use data_dir: {}", ec.message()));
  const fs::path data_dir(config_.data_dir);
  RETURN_IF_ERROR(CheckOnlyTrustedWriters(data_dir));
  const fs::path database = StorePath(config_.data_dir);
  if (!fs::exists(database, ec)) (void)WriteFileAtomically(database.string(), "", 0600);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    fs::path file = database.string() + suffix;
    if (fs::exists(file, ec)) fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  ASSIGN_OR_RETURN(store_, AgentStore::Open(database.string()));
  // Package files are the store's copies; write back any that are missing (a wiped folder) or
  // differ from what was deployed (an edit by hand), so that what runs is what GET shows.
  ASSIGN_OR_RETURN(auto packages, store_->ListPackages());
  for (const PackageRecord& p : packages) {
    fs::path file = PackagePath(config_.data_dir, p.name);
    auto on_disk = ReadFile(file.string());
    if (on_disk.ok() && Sha256Hex(*on_disk) == p.sha256) {
      fs::permissions(file, fs::perms(kPackageFileMode), ec);  // one written under a umask of 0
      continue;
    }
    ASSIGN_OR_RETURN(auto full, store_->GetPackage(p.name));
    if (!full) continue;
    if (on_disk.ok()) {
      std::fprintf(stderr, "fanout agent: %s was not package %s as deployed (version %lld); "
                   "wrote it back\n", file.c_str(), p.name.c_str(),
                   static_cast<long long>(p.version));
    }
    RETURN_IF_ERROR(WritePackageFile(config_.data_dir, p.name, full->content));
  }
  executor_ = std::make_unique<Executor>(config_, *store_, fanout_binary_);
  RETURN_IF_ERROR(executor_->Recover());

  if (config_.tls()) {
    auto ssl = std::make_unique<httplib::SSLServer>(
        config_.tls_cert.c_str(), config_.tls_key.c_str(),
        config_.tls_client_ca.empty() ? nullptr : config_.tls_client_ca.c_str());
    if (!ssl->is_valid()) {
      return InvalidArgument(fmt::format("cannot load TLS certificate {} / key {}{}", config_.tls_cert,
                                         config_.tls_key,
                                         config_.tls_client_ca.empty() ? "" : " / client CA " + config_.tls_client_ca));
    }
    http_ = std::move(ssl);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  http_->new_task_queue = [] {
    return new ConnectionThreads(kMinHttpThreads, kMaxHttpThreads, kIdleHttpThreadLimit);
  };
  http_->set_payload_max_length(config_.max_body_bytes);
  http_->set_keep_alive_max_count(100000);
  // httplib writes headers and body apart; without this the body waits ~40 ms for the
  // client's delayed ACK, on every answer.
  http_->set_tcp_nodelay(true);
  // An idle keep-alive connection holds a worker; on drain the listener waits for them.
  http_->set_keep_alive_timeout(2);
  // Reading a request, not waiting for an answer: a client that sends nothing for 10 s is cut
  // off, so that half-sent requests cannot hold connection threads for a minute each.
  http_->set_read_timeout(kRequestReadTimeoutSeconds, 0);
  http_->set_write_timeout(kMaxWaitSeconds + 5, 0);
  Routes();
  // httplib listens with a backlog of 5: a parent starting a hundred children at once overflowed
  // it, and the connections the kernel dropped waited for SYN retransmits (1 s, then 3 s) and
  // timed out. Listening again on the bound socket raises the backlog to the system's limit.
  // httplib's own options also set SO_REUSEPORT, which let a second agent bind the same port
  // and take part of the first one's requests; only SO_REUSEADDR is set here, so a restarted
  // agent can bind at once.
  auto listener = std::make_shared<int>(-1);
  http_->set_socket_options([listener](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *listener = sock;
  });
  int port = config_.port;
  errno = 0;
  if (port == 0) {
    port = http_->bind_to_any_port(config_.host);
  } else if (!http_->bind_to_port(config_.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    // errno is the failed bind's for an address; for a name, whatever resolving it left.
    const int error = IsNumericAddress(config_.host) ? errno : 0;
    std::string why = error == EADDRINUSE ? "the port is in use (another agent?)"
                      : error == EADDRNOTAVAIL ? config_.host + " is not an address of this machine"
                      : error == EACCES ? "permission denied (ports below 1024 need privileges)"
                      : error != 0 ? std::strerror(error)
                                   : "in use, or not an address of this machine";
    return Unavailable(fmt::format("cannot listen on {}:{}: {}", config_.host, config_.port, why));
  }
  if (*listener >= 0 && ::listen(*listener, SOMAXCONN) != 0) {
    return Unavailable(fmt::format("cannot listen on {}:{}: {}", config_.host, port,
                                   std::strerror(errno)));
  }
  config_.port = port;
  // Listening: a warm process now serves the first package step. Only a speed-up, so a store
  // that cannot list its jobs leaves it for the first step to start.
  if (auto jobs = store_->ListJobs(); jobs.ok()) {
    for (const JobRecord& r : *jobs) {
      auto job = ParseJob(r.definition, nullptr, JobCheck::kStored);
      if (job.ok() && executor_->KeepWarmFor(*job)) break;
    }
  }
  return Status::Ok();
}

std::vector<std::string> AgentServer::SensitiveParams(const std::string& package) {
  fs::path file = PackagePath(config_.data_dir, package);
  std::error_code ec;
  fs::file_time_type modified = fs::last_write_time(file, ec);
  if (ec) return {};
  std::lock_guard lock(packages_mu_);
  auto cached = package_secrets_.find(package);
  if (cached != package_secrets_.end() && cached->second.modified == modified) {
    return cached->second.sensitive;
  }
  Diagnostics diagnostics;
  auto loaded = LoadPackage(file.string(), diagnostics);
  if (!loaded.ok()) return {};
  PackageSecrets entry{modified, {}};
  for (const ParameterDef& p : (*loaded)->parameters) {
    if (p.sensitive) entry.sensitive.push_back(p.name);
  }
  package_secrets_[package] = entry;
  return entry.sensitive;
}

Status AgentServer::Serve() {
  serve_state_ = ServeState::kServing;
  bool listened = stop_requested_ || http_->listen_after_bind();
  serve_state_ = ServeState::kServed;
  return listened ? Status::Ok() : Unavailable("the listener stopped with an error");
}

void AgentServer::Shutdown() {
  if (executor_) executor_->Drain(config_.drain_grace);
  stop_requested_ = true;
  if (!http_) return;
  // httplib's stop() does nothing before listen_after_bind() has begun to listen: a SIGTERM
  // right after the start was lost and the agent served on for ever. Repeated until Serve
  // returns; a Serve not begun yet sees stop_requested_ and does not listen.
  while (serve_state_ == ServeState::kServing) {
    http_->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Bearer token compared in constant time; /v1/health needs nothing. Mutual TLS is enforced in
// the TLS handshake itself.
bool AgentServer::Authorized(const httplib::Request& req, httplib::Response& res) {
  if (req.path == "/v1/health" || config_.token.empty()) return true;
  const std::string& given = req.get_header_value("Authorization");
  // "Bearer TOKEN"; the scheme's case does not matter (RFC 7235: QA was told a right token
  // was wrong after `bearer`).
  const size_t space = given.find(' ');
  const std::string_view scheme = std::string_view(given).substr(0, space);
  const bool bearer = space != std::string::npos && EqualsIgnoreCase(scheme, "bearer");
  std::string_view token;
  if (const size_t start = given.find_first_not_of(' ', space); bearer && start != given.npos) {
    token = std::string_view(given).substr(start);
  }
  (void)ReloadTokenIfChanged(false);
  if (bearer && (TokenMatches(token) || (ReloadTokenIfChanged(true) && TokenMatches(token)))) {
    return true;
  }
  const char* detail = given.empty() ? "send Authorization: Bearer TOKEN (the agent's token_file)"
                       : !bearer     ? "the Authorization header is not `Bearer TOKEN`"
                                     : "the bearer token is wrong";
  Reply(res, 401, json{{"error", "unauthenticated"}, {"detail", detail}});
  NoteRefused(req, !given.empty());
  return false;
}

bool AgentServer::TokenMatches(std::string_view token) {
  std::lock_guard lock(token_mu_);
  return token.size() == token_.size() &&
         CRYPTO_memcmp(token.data(), token_.data(), token.size()) == 0;
}

bool AgentServer::ReloadTokenIfChanged(bool refused) {
  if (config_.token_file.empty()) return false;
  // A request the token let in looks at most once a second, so that an old token stops
  // working soon after the file changes even when no request brings the new one.
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now().time_since_epoch()).count();
  if (!refused && now_ms - token_checked_ms_.load(std::memory_order_relaxed) < 1000) {
    return false;
  }
  token_checked_ms_.store(now_ms, std::memory_order_relaxed);
  struct stat now {};
  if (stat(config_.token_file.c_str(), &now) != 0) now = {};  // gone: said when it comes back
  {
    std::lock_guard lock(token_mu_);
    if (SameFileState(now, token_file_stat_)) return false;
    token_file_stat_ = now;
  }
  if (now.st_ino == 0) return false;
  // Read without the lock: a slow disk must not hold up requests that bring the token.
  auto read = client::ReadTokenFile(config_.token_file);
  if (std::string unsafe = UnsafeCredentialFile("token_file", config_.token_file);
      read.ok() && !unsafe.empty()) {
    read = Status(Code::kFailedPrecondition, unsafe);
  }
  if (!read.ok()) {
    std::fprintf(stderr, "fanout agent: token_file %s changed but cannot be used (%s): the "
                 "token read before stays in force\n", config_.token_file.c_str(),
                 read.status().message().c_str());
    return false;
  }
  {
    std::lock_guard lock(token_mu_);
    if (*read == token_) return false;
    token_ = std::move(*read);
  }
  std::fprintf(stderr, "fanout agent: token_file %s changed: its new token is in force\n",
               config_.token_file.c_str());
  return true;
}

// A web page must not drive an agent (QA): any page could start the jobs of a loopback agent
// without a token, and one whose DNS name it rebinds to 127.0.0.1 could also deploy a job, that
// is run commands as the agent's user. A browser sends Origin with every request that can change
// something, and the page's own name as Host; fanout and curl send no Origin, and the address
// they connect to as Host. The Host is checked on an agent without credentials only: a token or
// a client certificate is out of a page's reach, and such agents may be reached by any name.
std::string AgentServer::FromAWebPage(const httplib::Request& req) const {
  if (req.has_header("Origin")) {
    return "the request comes from a web page (it has an Origin header): the agent answers "
           "fanout, curl and other HTTP clients, not browsers";
  }
  if (!config_.token.empty() || !config_.tls_client_ca.empty() || !req.has_header("Host")) {
    return "";
  }
  std::string host = req.get_header_value("Host");
  if (host.starts_with('[')) {
    host = host.substr(1, host.find(']') - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host.erase(host.find(':'));
  }
  // The name as sent, not resolved: a page's own name is what tells it (and no lookup per request).
  if (EqualsIgnoreCase(host, "localhost") || IsLoopback(host) || host == config_.host) return "";
  return fmt::format("Host '{}' is not a loopback address: an agent without a token answers "
                     "requests sent to 127.0.0.1, ::1 or localhost only (a web page may have "
                     "pointed its own name here)",
                     EscapeControls(req.get_header_value("Host")));
}

void AgentServer::NoteRefused(const httplib::Request& req, bool token_given) {
  // The path as sent, before any check: its control characters must not reach a terminal.
  refused_.Note(fmt::format("{} {} from {}, had {}", EscapeControls(req.method),
                            EscapeControls(req.path), req.remote_addr,
                            token_given ? "a wrong one" : "none"));
}

bool AgentServer::RefusedWhileBroken(httplib::Response& res) {
  std::string broken = executor_->Broken();
  if (broken.empty()) return false;
  Reply(res, 503, json{{"error", "agent broken"},
                       {"detail", broken + "; restart the agent"}});
  return true;
}

void AgentServer::ForgetJob(const std::string& name) {
  std::lock_guard lock(jobs_mu_);
  jobs_.erase(name);
  ++jobs_generation_;
}

namespace {

json MethodNotAllowed(const std::string& method) {
  return {{"error", "method not allowed"},
          {"detail", fmt::format("the agent answers GET, POST, PUT and DELETE, not {}; see "
                                 "docs/agent-api.md",
                                 method)}};
}

json NoContentLength() {
  return {{"error", "bad request"},
          {"detail", "the request could not be read: a POST or PUT needs a Content-Length "
                     "(0 for an empty body; curl's -d '' sends one)"}};
}

json BodyTooLarge(size_t max_body_bytes) {
  return {{"error", "body too large"},
          {"detail", fmt::format("the request body is over the agent's max_body_bytes ({} bytes)",
                                 max_body_bytes)}};
}

}  // namespace

void AgentServer::Routes() {
  httplib::Server& s = *http_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (std::string why = FromAWebPage(req); !why.empty()) {
      if (req.method != "GET" && req.method != "HEAD") res.set_header("Connection", "close");
      Reply(res, 403, json{{"error", "forbidden"}, {"detail", why}});
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!Authorized(req, res)) {
      // Refused before its body was read: the next request on this connection would be read
      // from inside that body (a parent whose agent came back with a new token got a 405
      // naming its own JSON as the method). The client is told to close it.
      if (req.method != "GET" && req.method != "HEAD") res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    // cpp-httplib reads a body that has no length until the connection closes, which held a
    // `curl -X POST` without data for the 10 s read timeout: answered now, and the connection
    // closed, since where the body would end is unknown.
    if (req.method == "GET" || req.method == "HEAD") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    auto refuse = [&](int status, json body) {
      res.set_header("Connection", "close");
      Reply(res, status, std::move(body));
      return httplib::Server::HandlerResponse::Handled;
    };
    const bool has_length = req.has_header("Content-Length");
    if (!has_length && !req.has_header("Transfer-Encoding")) {
      if (req.method == "DELETE") return httplib::Server::HandlerResponse::Unhandled;  // no body
      if (req.method == "POST" || req.method == "PUT") return refuse(400, NoContentLength());
      return refuse(405, MethodNotAllowed(req.method));
    }
    // Two lengths, or a length and chunks: which one the body follows is what request
    // smuggling plays on.
    if (req.get_header_value_count("Content-Length") > 1) {
      return refuse(400, json{{"error", "bad request"},
                              {"detail", "the request has more than one Content-Length"}});
    }
    if (has_length && req.has_header("Transfer-Encoding")) {
      return refuse(400, json{{"error", "bad request"},
                              {"detail", "the request has both a Content-Length and a "
                                         "Transfer-Encoding: send one"}});
    }
    // cpp-httplib 0.11 reads a chunked body whole, past its payload limit (QA: 40 MB stored,
    // 316 MB of memory), so the agent reads bodies of a stated length only.
    if (!has_length) {
      return refuse(411, json{{"error", "length required"},
                              {"detail", fmt::format("send the body with a Content-Length: the "
                                                     "agent does not read chunked bodies, which "
                                                     "it could not hold to its max_body_bytes "
                                                     "({} bytes)",
                                                     config_.max_body_bytes)}});
    }
    // A length over the limit is answered now: cpp-httplib would read the whole body first, or
    // wait its 10 s read timeout for one that never comes.
    const std::string length = req.get_header_value("Content-Length");
    size_t bytes = 0;
    auto [end, error] = std::from_chars(length.data(), length.data() + length.size(), bytes);
    if (error == std::errc::result_out_of_range ||
        (error == std::errc() && end == length.data() + length.size() &&
         bytes > config_.max_body_bytes)) {
      return refuse(413, BodyTooLarge(config_.max_body_bytes));
    }
    if (error != std::errc() || end != length.data() + length.size()) {
      return refuse(400, json{{"error", "bad request"},
                              {"detail", fmt::format("Content-Length '{}' is not a number of "
                                                     "bytes", length)}});
    }
    // Bodies are JSON whatever their type says. curl -d sends its default,
    // application/x-www-form-urlencoded, which cpp-httplib caps at 8 KiB and parses as a query;
    // such a body is read as the JSON it is (the request object is the server's own, not const).
    const std::string type = AsciiLower(req.get_header_value("Content-Type"));  // any case
    if (type.starts_with("application/x-www-form-urlencoded")) {
      auto& headers = const_cast<httplib::Request&>(req).headers;
      headers.erase("Content-Type");
      headers.emplace("Content-Type", "application/json");
    } else if (type.starts_with("multipart/")) {
      return refuse(415, json{{"error", "unsupported media type"},
                              {"detail", fmt::format("bodies are JSON (Content-Type: "
                                                     "application/json), not {}", type)}});
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors cpp-httplib answers itself get the documented body too.
  s.set_error_handler([max_body_bytes = config_.max_body_bytes](const httplib::Request& req,
                                                                httplib::Response& res) {
    if (!res.body.empty()) return;
    const bool known_method = req.method == "GET" || req.method == "POST" ||
                              req.method == "PUT" || req.method == "DELETE";
    int status = res.status;
    std::string error = "request failed";
    std::string detail = fmt::format("HTTP {}", status);
    if (status == 413) {
      Reply(res, 413, BodyTooLarge(max_body_bytes));
      return;
    } else if (!known_method && (status == 400 || status == 404)) {
      Reply(res, 405, MethodNotAllowed(req.method));
      return;
    } else if (status == 404) {
      error = "not found";
      detail = fmt::format("no route {} {}; see docs/agent-api.md", req.method, req.path);
    } else if (status == 400) {
      if ((req.method == "POST" || req.method == "PUT") && !req.has_header("Content-Length") &&
          !req.has_header("Transfer-Encoding")) {
        Reply(res, 400, NoContentLength());
        return;
      }
      error = "bad request";
      detail = "the request could not be read: it was malformed or cut short (a body shorter "
               "than its Content-Length, bad chunks, a header line over 8 KiB)";
    } else if (status == 414) {
      error = "URI too long";
      detail = "the request's path and query are over 8 KiB";
    }
    Reply(res, status, json{{"error", error}, {"detail", detail}});
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    Reply(res, 500, json{{"error", "internal error"}, {"detail", what}});
  });

  s.Get("/v1/health", [this](const httplib::Request&, httplib::Response& res) {
    json health{{"status", "ok"},
                {"name", config_.name},
                {"version", FANOUT_VERSION},
                {"draining", executor_->Draining()}};
    if (executor_->Broken().empty()) return Reply(res, 200, health);
    // Without the path, which needs no token here: /v1/status says it.
    health["status"] = "broken";
    health["detail"] = "the agent's database is gone (see its log, or /v1/status); restart it";
    Reply(res, 503, health);
  });

  s.Get("/v1/status", [this](const httplib::Request&, httplib::Response& res) {
    ExecutorStatus st = executor_->Snapshot();
    json running = json::array();
    for (const RunRecord& r : st.active) {
      if (r.status == "queued") continue;
      auto step = st.steps.find(r.id);
      json step_name = step == st.steps.end() ? json(nullptr) : json(step->second);
      running.push_back({{"run_id", r.id}, {"job", r.job}, {"status", r.status},
                         {"started_at", TimeJson(r.started_at)}, {"step", step_name}});
    }
    json status{{"name", config_.name}, {"version", FANOUT_VERSION},
                {"instance", instance_}, {"slots", st.slots}, {"busy", st.busy},
                {"queued", st.queued}, {"draining", st.draining}, {"running", running}};
    if (!st.broken.empty()) status["broken"] = st.broken;
    Reply(res, 200, status);
  });

  // Packages ----------------------------------------------------------------------------------
  s.Put(R"(/v1/packages/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    if (RefusedWhileBroken(res)) return;
    Diagnostics diagnostics;
    auto package = LoadPackageText(req.body, name + ".yaml", diagnostics);
    if (!package.ok()) {
      std::string detail = diagnostics.empty() ? package.status().message() : diagnostics.ToString();
      return Reply(res, 400, json{{"error", "invalid package"}, {"detail", detail}});
    }
    if ((*package)->name != name) {
      return Reply(res, 400, json{{"error", "name mismatch"},
                                  {"detail", fmt::format("the URL names package '{}' but the file says "
                                                         "`package: {}`", name, (*package)->name)}});
    }
    std::string sha = Sha256Hex(req.body);
    if (Status st = WritePackageFile(config_.data_dir, name, req.body); !st.ok()) {
      return ReplyError(res, st, "cannot store package");
    }
    auto put = store_->PutPackage(name, sha, req.body);
    if (!put.ok()) return ReplyError(res, put.status(), "cannot store package");
    Reply(res, put->created ? 201 : 200,
          json{{"name", name}, {"version", put->version}, {"sha256", sha}, {"changed", put->changed}});
  });

  s.Get("/v1/packages", [this](const httplib::Request&, httplib::Response& res) {
    auto list = store_->ListPackages();
    if (!list.ok()) return ReplyError(res, list.status(), "cannot list packages");
    json out = json::array();
    for (const auto& p : *list) {
      out.push_back({{"name", p.name}, {"version", p.version}, {"sha256", p.sha256},
                     {"size", p.size}, {"deployed_at", TimeJson(p.deployed_at)}});
    }
    Reply(res, 200, json{{"packages", out}});
  });

  s.Get(R"(/v1/packages/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    auto p = store_->GetPackage(name);
    if (!p.ok()) return ReplyError(res, p.status(), "cannot read package");
    if (!*p) return ReplyError(res, NotFound("no package named " + name), "unknown package");
    const PackageRecord& r = **p;
    Reply(res, 200, json{{"name", r.name}, {"version", r.version}, {"sha256", r.sha256},
                         {"size", r.size}, {"deployed_at", TimeJson(r.deployed_at)},
                         {"content", r.content}});
  });

  s.Delete(R"(/v1/packages/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    if (RefusedWhileBroken(res)) return;
    auto deleted = store_->DeletePackage(name);
    if (!deleted.ok()) return ReplyError(res, deleted.status(), "cannot delete package");
    if (!*deleted) return ReplyError(res, NotFound("no package named " + name), "unknown package");
    std::error_code ec;
    fs::remove(PackagePath(config_.data_dir, name), ec);
    res.status = 204;
  });

  // Jobs --------------------------------------------------------------------------------------
  s.Put(R"(/v1/jobs/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    if (RefusedWhileBroken(res)) return;
    auto job = ParseJob(req.body);
    if (!job.ok()) return ReplyError(res, job.status(), "invalid job");
    if (job->name != name) {
      return Reply(res, 400, json{{"error", "name mismatch"},
                                  {"detail", fmt::format("the URL names job '{}' but the definition says "
                                                         "`job: {}`", name, job->name)}});
    }
    // GET shows sensitive step params as ***: a definition fetched, edited and put back would
    // otherwise store the mask as the password.
    for (const StepDef& step : job->steps) {
      for (const std::string& param : SensitiveParams(step.package)) {
        auto value = step.params.find(param);
        if (value != step.params.end() && value->second == "***") {
          return Reply(res, 400, json{{"error", "masked value"},
                                      {"detail", fmt::format("step {} gives sensitive param {} as "
                                                             "***, the mask GET shows: give its "
                                                             "real value", step.name, param)}});
        }
      }
    }
    auto put = store_->PutJob(name, job->ToJson().dump());
    ForgetJob(name);
    if (!put.ok()) return ReplyError(res, put.status(), "cannot store job");
    executor_->KeepWarmFor(*job);
    json answer{{"name", name}, {"changed", put->changed}};
    // Stored all the same: a deploy may send the package next (QA: nothing was said until a
    // run failed).
    for (const StepDef& step : job->steps) {
      if (!step.proxy.empty() && config_.proxies.count(step.proxy) == 0) {
        std::vector<std::string> defined;
        for (const auto& [proxy, unused] : config_.proxies) defined.push_back(proxy);
        answer["warnings"].push_back(fmt::format(
            "step {} runs as proxy {}, which agent {} does not define ({}): runs of job {} fail "
            "until its config does", step.name, step.proxy, config_.name,
            defined.empty() ? "it has no proxies"
                            : fmt::format("its proxies: {}", fmt::join(defined, ", ")),
            name));
      }
      if (step.subsystem != "package") continue;
      auto package = store_->GetPackage(step.package);
      if (package.ok() && !*package) {
        answer["warnings"].push_back(fmt::format(
            "step {} runs package {}, which is not deployed on agent {}: runs of job {} fail "
            "until it is (fanout deploy)", step.name, step.package, config_.name, name));
      }
    }
    Reply(res, put->created ? 201 : 200, answer);
  });

  auto load_job = [this](const std::string& name,
                          httplib::Response& res) -> std::shared_ptr<const JobDef> {
    uint64_t generation;
    {
      std::lock_guard lock(jobs_mu_);
      auto cached = jobs_.find(name);
      if (cached != jobs_.end()) return cached->second;
      generation = jobs_generation_;
    }
    auto record = store_->GetJob(name);
    if (!record.ok()) {
      ReplyError(res, record.status(), "cannot read job");
      return nullptr;
    }
    if (!*record) {
      ReplyError(res, NotFound(fmt::format("no job named {} on agent {}; create it with `fanout job "
                                           "create` or `fanout deploy`", name, config_.name)),
                 "unknown job");
      return nullptr;
    }
    auto job = ParseJob((*record)->definition, nullptr, JobCheck::kStored);
    if (!job.ok()) {
      ReplyError(res, Internal(job.status().message()), "stored job is unreadable");
      return nullptr;
    }
    auto parsed = std::make_shared<const JobDef>(std::move(*job));
    std::lock_guard lock(jobs_mu_);
    // A job replaced or deleted while this one was read must not be cached in its old form.
    if (generation == jobs_generation_) jobs_[name] = parsed;
    return parsed;
  };

  s.Get("/v1/jobs", [this, load_job](const httplib::Request&, httplib::Response& res) {
    auto list = store_->ListJobs();
    if (!list.ok()) return ReplyError(res, list.status(), "cannot list jobs");
    ExecutorStatus st = executor_->Snapshot();
    json out = json::array();
    for (const JobRecord& r : *list) {
      auto job = ParseJob(r.definition, nullptr, JobCheck::kStored);
      if (!job.ok()) continue;
      int running = 0;
      for (const RunRecord& a : st.active) running += a.job == r.name;
      json last = nullptr;
      auto runs = store_->ListRuns(r.name, 1);
      if (runs.ok() && !runs->empty()) {
        last = {{"run_id", runs->front().id}, {"status", runs->front().status},
                {"ended_at", TimeJson(runs->front().ended_at)}};
      }
      out.push_back({{"name", r.name}, {"enabled", job->enabled},
                     {"steps", job->steps.size()}, {"max_concurrent_runs", job->max_concurrent_runs},
                     {"running", running}, {"last_run", last}});
    }
    Reply(res, 200, json{{"jobs", out}});
  });

  s.Get(R"(/v1/jobs/([^/]+))", [this, load_job](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    auto job = load_job(name, res);
    if (!job) return;
    json out = job->ToJson();
    // A package step's own params that its package declares sensitive are not shown.
    for (json& step : out["steps"]) {
      if (!step.contains("params")) continue;
      for (const std::string& param : SensitiveParams(step.value("package", ""))) {
        if (step["params"].contains(param)) step["params"][param] = "***";
      }
    }
    int running = 0;
    for (const RunRecord& a : executor_->Snapshot().active) running += a.job == name;
    out["running"] = running;
    Reply(res, 200, out);
  });

  s.Delete(R"(/v1/jobs/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    if (RefusedWhileBroken(res)) return;
    auto deleted = store_->DeleteJob(name);
    ForgetJob(name);
    if (!deleted.ok()) return ReplyError(res, deleted.status(), "cannot delete job");
    if (!*deleted) return ReplyError(res, NotFound("no job named " + name), "unknown job");
    res.status = 204;
  });

  s.Post(R"(/v1/jobs/([^/]+)/start)", [this, load_job](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    // Before the job is looked up (a job lost with the data_dir read as "unknown job");
    // Executor::Start checks again, for an agent that breaks meanwhile.
    if (RefusedWhileBroken(res)) return;
    StartRequest start;
    if (!req.body.empty()) {
      json body;
      try {
        body = json::parse(req.body);
      } catch (const json::exception& e) {
        return Reply(res, 400, json{{"error", "malformed JSON"}, {"detail", e.what()}});
      }
      if (!body.is_object()) {
        return Reply(res, 400, json{{"error", "malformed request"}, {"detail", "the body must be a JSON object"}});
      }
      if (NestedDeeperThan(body, kMaxJsonNesting)) {
        return Reply(res, 400, json{{"error", "malformed request"},
                                    {"detail", fmt::format("the body nests more than {} levels deep",
                                                           kMaxJsonNesting)}});
      }
      for (const auto& [key, value] : body.items()) {
        if (key == "params") {
          if (!value.is_object()) {
            return Reply(res, 400, json{{"error", "malformed request"}, {"detail", "`params` must be an object"}});
          }
          for (const auto& [param, text] : value.items()) {
            // A name no package can declare: as FANOUT_PARAM_<name>, "a=b" would set a variable
            // a process step cannot tell from `a`'s (QA).
            if (!IsValidName(param)) {
              return Reply(res, 400, json{{"error", "malformed request"},
                                          {"detail", fmt::format("`params` holds {}, which is no "
                                                                 "parameter name: names match "
                                                                 "{}",
                                                                 json(param).dump(), kNameRule)}});
            }
            if (auto checked = ParamFromJson(text); !checked.ok()) {
              return Reply(res, 400, json{{"error", "malformed request"},
                                          {"detail", fmt::format("`params.{}`: {}", param,
                                                                 checked.status().message())}});
            }
          }
          start.params = value;
        } else if (key == "secrets") {
          if (!value.is_array() ||
              !std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_string(); })) {
            return Reply(res, 400, json{{"error", "malformed request"},
                                        {"detail", "`secrets` must be an array of strings"}});
          }
          start.secrets = value.get<std::vector<std::string>>();
        } else if (key == "parent_execution_id" || key == "start_step" || key == "idempotency_key") {
          if (!value.is_string()) {
            return Reply(res, 400, json{{"error", "malformed request"}, {"detail", "`" + key + "` must be a string"}});
          }
          (key == "parent_execution_id" ? start.parent_execution_id
           : key == "start_step"        ? start.start_step
                                        : start.idempotency_key) = value.get<std::string>();
        } else {
          return Reply(res, 400, json{{"error", "malformed request"},
                                      {"detail", "unknown key `" + key + "`; allowed: params, "
                                                 "secrets, parent_execution_id, start_step, "
                                                 "idempotency_key"}});
        }
      }
    }
    auto job = load_job(name, res);
    if (!job) return;
    // Values of parameters a package step declares sensitive are secrets whoever sends them
    // (`fanout job start --param` cannot mark them): kept in memory only, `***` in the history.
    for (const StepDef& step : job->steps) {
      if (step.subsystem != "package") continue;
      for (const std::string& param : SensitiveParams(step.package)) {
        if (!start.params.contains(param)) continue;
        start.sensitive_params.push_back(param);
        ForEachScalar(start.params[param], [&](const json&, const std::string& text) {
          start.secrets.push_back(text);
        });
      }
    }
    std::optional<int> wait;
    if (req.has_param("wait")) {
      wait = WaitSeconds(req, res);
      if (!wait) return;
    }
    // A query parameter, not a key of the body: an agent older than it ignores it, where an
    // unknown key would fail every start of a parent upgraded first.
    if (req.has_param("orphan_timeout_ms")) {
      auto ms = WholeNumberParam(
          req, res, "orphan_timeout_ms", "milliseconds",
          std::chrono::duration_cast<std::chrono::milliseconds>(client::kMaxOrphanTimeout).count());
      if (!ms) return;
      start.orphan_timeout = std::chrono::milliseconds(*ms);
    }
    auto started = executor_->Start(std::move(job), start);
    if (!started.ok()) {
      std::string error = started.status().code() == Code::kFailedPrecondition ? "job already running"
                          : started.status().code() == Code::kNotFound   ? "unknown start step"
                                                                          : "cannot start job";
      return ReplyError(res, started.status(), error);
    }
    json accepted{{"run_id", started->run.id}, {"status", started->run.status},
                  {"existing", started->existing}};
    if (!wait) return Reply(res, 202, accepted);
    res.status = 202;
    // The run after the wait, as GET /v1/runs/{id} gives it; a failed wait says so as that would,
    // with the HTTP status it would have.
    auto polled = [this](const Result<RunRecord>& run) {
      return JsonLine(run.ok() ? RunJson(*run, *store_, false)
                               : json{{"error", "unknown run"},
                                      {"detail", run.status().message()},
                                      {"http_status", HttpStatusFor(run.status().code())}});
    };
    // HTTP/1.0 has no chunked answers: its client gets both lines once the second is known.
    if (req.version == "HTTP/1.0") {
      auto run = executor_->Wait(started->run.id, std::chrono::seconds(*wait), std::string());
      res.set_content(JsonLine(accepted) + polled(run), "application/x-ndjson");
      return;
    }
    // A run that ends at once gets both lines in one plain answer: two sends instead of four,
    // and one wake-up of the parent instead of two, for every short child. Its start's answer
    // comes that much later, which the idempotency key covers: a connection lost before it is
    // a lost start, which the parent looks up by its key.
    const std::chrono::milliseconds window =
        std::min<std::chrono::milliseconds>(kWholeAnswerWindow, std::chrono::seconds(*wait));
    if (auto run = executor_->Wait(started->run.id, window); run.ok() && run->ended_at) {
      res.set_content(JsonLine(accepted) + polled(run), "application/x-ndjson");
      return;
    }
    // Start and first long-poll in one exchange, the start's answer sent first: a parent learns
    // that the run exists before it waits, so a connection lost during the wait is a lost agent,
    // not a lost start. Saves a parent's child a second request.
    res.set_chunked_content_provider(
        "application/x-ndjson",
        [this, polled, accepted = JsonLine(accepted), id = started->run.id, wait = *wait](
            size_t, httplib::DataSink& sink) {
          if (!sink.write(accepted.data(), accepted.size())) return false;
          std::string line = polled(executor_->Wait(id, std::chrono::seconds(wait), std::string()));
          if (!sink.write(line.data(), line.size())) return false;
          sink.done();
          return true;
        });
  });

  s.Get(R"(/v1/jobs/([^/]+)/history)", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!RouteName(req, res, name)) return;
    int limit = 50;
    if (req.has_param("limit")) {
      const std::string text = req.get_param_value("limit");
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), limit);
      const bool whole = end == text.data() + text.size() && !text.starts_with('-');
      if (ec == std::errc::result_out_of_range && whole) {
        limit = kMaxHistoryLimit;  // as any number over it is (QA: was said not to be one)
      } else if (ec != std::errc() || !whole || limit < 1) {
        return Reply(res, 400, json{{"error", "bad limit"},
                                    {"detail", "limit is a whole number of 1 or more, not '" +
                                                   text + "'"}});
      }
      limit = std::min(limit, kMaxHistoryLimit);
    }
    auto runs = store_->ListRuns(name, limit);
    if (!runs.ok()) return ReplyError(res, runs.status(), "cannot read history");
    if (runs->empty()) {  // a deleted job keeps its history; a name never seen is an error
      auto job = store_->GetJob(name);
      if (job.ok() && !*job) {
        return ReplyError(res, NotFound(fmt::format("no job named {} on agent {}", name, config_.name)),
                          "unknown job");
      }
    }
    // Written run by run: the whole answer as one JSON tree took several times its size (QA:
    // 10,000 runs made 6.8 MB of text and grew the agent by 80 MB a call), and it stops at
    // max_history_bytes, saying so.
    std::string body = "{\"runs\":[";
    bool truncated = false;
    for (size_t i = 0; i < runs->size(); ++i) {
      if (body.size() > config_.max_history_bytes) {
        truncated = true;
        break;
      }
      if (i > 0) body += ',';
      body += JsonText(RunJson((*runs)[i], *store_, true));
    }
    body += truncated ? "],\"truncated\":true}" : "]}";
    res.status = 200;
    res.body = std::move(body);
    res.set_header("Content-Type", "application/json");
  });

  // Runs --------------------------------------------------------------------------------------
  // The run a start with this key began, if any: a parent that lost the answer to a start looks
  // it up to stop it, having started the child elsewhere.
  s.Get("/v1/runs", [this](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("idempotency_key")) {
      return Reply(res, 400, json{{"error", "missing idempotency_key"},
                                  {"detail", "GET /v1/runs?idempotency_key=KEY finds the run a "
                                             "start with that key began"}});
    }
    auto run = store_->FindRunByKey(req.get_param_value("idempotency_key"));
    if (!run.ok()) return ReplyError(res, run.status(), "unknown run");
    json runs = json::array();
    if (run->has_value()) runs.push_back(RunJson(**run, *store_, false));
    Reply(res, 200, json{{"runs", runs}});
  });

  s.Get(R"(/v1/runs/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!RouteName(req, res, id)) return;
    int wait = 0;
    if (req.has_param("wait")) {
      std::optional<int> given = WaitSeconds(req, res);
      if (!given) return;
      wait = *given;
    }
    std::optional<std::string> known_execution_id;
    if (req.has_param("execution_id")) known_execution_id = req.get_param_value("execution_id");
    auto run = executor_->Wait(id, std::chrono::seconds(wait), known_execution_id);
    if (!run.ok()) return ReplyError(res, run.status(), "unknown run");
    Reply(res, 200, RunJson(*run, *store_, false));
  });

  s.Post(R"(/v1/runs/([^/]+)/stop)", [this](const httplib::Request& req, httplib::Response& res) {
    std::string id;
    if (!RouteName(req, res, id)) return;
    auto run = executor_->Stop(id);
    if (!run.ok()) return ReplyError(res, run.status(), "unknown run");
    bool final = client::IsFinalRunStatus(run->status);
    Reply(res, final ? 200 : 202, json{{"run_id", run->id}, {"status", final ? run->status : "stopping"}});
  });

  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    ExecutorStatus st = executor_->Snapshot();
    std::string out;
    auto gauge = [&](const char* name, const char* help, int64_t value) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
    };
    // 0 once broken (its data_dir gone): it answers, but takes no work.
    gauge("fanout_agent_up", "1 while the agent serves requests and takes work",
          executor_->Broken().empty() ? 1 : 0);
    gauge("fanout_agent_slots", "Runs the agent executes at once", st.slots);
    gauge("fanout_agent_busy", "Runs holding a slot", st.busy);
    gauge("fanout_agent_queued", "Runs waiting for a slot", st.queued);
    auto counter = [&](const char* name, const char* help, const std::map<std::string, int64_t>& counts) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n", name, help);
      for (const auto& [status, n] : counts) out += fmt::format("{}{{status=\"{}\"}} {}\n", name, status, n);
    };
    counter("fanout_agent_runs_total", "Runs ended since the agent started, by final status",
            executor_->RunCounts());
    counter("fanout_agent_step_attempts_total", "Step attempts ended since the agent started, by status",
            executor_->StepCounts());
    res.set_content(out, "text/plain; version=0.0.4");
  });
}

}  // namespace fanout::agent
