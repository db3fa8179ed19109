// Agent end-to-end helpers (see agent_util.h).
#include "e2e/agent_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/util.h"

namespace fanout::testing {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr milliseconds kBannerLimit{10000};

bool HasArg(const std::vector<std::string>& args, const std::string& arg) {
  return std::find(args.begin(), args.end(), arg) != args.end();
}

}  // namespace

AgentProcess::AgentProcess() = default;

AgentProcess::~AgentProcess() {
  if (pid_ > 0) Kill();
  KillLeftovers();
}

std::string AgentProcess::out() const {
  return dir_.Read("agent-" + std::to_string(launches_) + ".out");
}

std::string AgentProcess::err() const {
  return dir_.Read("agent-" + std::to_string(launches_) + ".err");
}

void AgentProcess::set_tls_files(std::string ca, std::string cert, std::string key) {
  ca_ = std::move(ca);
  cert_ = std::move(cert);
  key_ = std::move(key);
}

bool AgentProcess::StartDev(int slots) {
  return Start({"--dev", "--slots", std::to_string(slots), "--data-dir", Path("data")});
}

bool AgentProcess::StartWithConfig(const std::string& yaml, const std::string& token) {
  dir_.Write("agent.yaml", yaml);
  if (!token.empty()) {
    // 0600 whatever the umask: the agent refuses a token file others may write.
    if (!WriteFileAtomically(dir_.path() + "/token", token + "\n", 0600).ok()) return false;
    token_ = token;
  }
  return Start({"--config", Path("agent.yaml"), "--listen", "127.0.0.1:0"});
}

int AgentProcess::Launch(const std::vector<std::string>& args) {
  ++launches_;
  std::string out = Path("agent-" + std::to_string(launches_) + ".out");
  std::string err = Path("agent-" + std::to_string(launches_) + ".err");
  std::vector<std::string> argv_text = {FANOUT_BINARY, "agent"};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string cwd = dir_.path();
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Should the test process die (a crash, a timeout), the agent goes with it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (!netns_.empty()) {
      int ns = open(netns_.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) _exit(127);
      close(ns);
    }
    if (chdir(cwd.c_str()) != 0) _exit(127);
    int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out_fd < 0 || err_fd < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
    execv(FANOUT_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

bool AgentProcess::Start(const std::vector<std::string>& args) {
  if (pid_ > 0) {
    ADD_FAILURE() << "the agent is already running";
    return false;
  }
  args_ = args;
  url_.clear();
  name_.clear();
  data_dir_.clear();
  token_file_.clear();
  if (HasArg(args, "--dev")) token_.clear();
  pid_ = Launch(args);
  if (pid_ <= 0) {
    ADD_FAILURE() << "fork failed";
    pid_ = -1;
    return false;
  }
  return ReadBanner();
}

// The first lines: `fanout agent NAME listening on URL`, `data_dir: DIR` and, with --dev,
// `token: TOKEN` and `token_file: FILE`. They are flushed together.
bool AgentProcess::ReadBanner() {
  const bool dev = HasArg(args_, "--dev");
  bool exited = false;
  int exit_code = -1;
  bool complete = WaitFor(
      [&] {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          return true;
        }
        std::istringstream lines(out());
        std::string line;
        bool have_url = false, have_dir = false, have_token_file = false;
        while (std::getline(lines, line)) {
          if (lines.eof()) break;  // a line without its newline is not complete yet
          const std::string listening = " listening on ";
          if (line.starts_with("fanout agent ") && line.find(listening) != std::string::npos) {
            size_t at = line.find(listening);
            name_ = line.substr(13, at - 13);
            url_ = line.substr(at + listening.size());
            have_url = true;
          } else if (line.starts_with("data_dir: ")) {
            data_dir_ = line.substr(10);
            have_dir = true;
          } else if (line.starts_with("token: ")) {
            token_ = line.substr(7);
          } else if (line.starts_with("token_file: ")) {
            token_file_ = line.substr(12);
            have_token_file = true;
          }
        }
        return have_url && have_dir && (!dev || have_token_file);
      },
      kBannerLimit);
  if (exited) {
    pid_ = -1;
    ADD_FAILURE() << "fanout agent exited with code " << exit_code << " before serving:\n" << err();
    return false;
  }
  if (!complete) {
    ADD_FAILURE() << "fanout agent printed no complete banner within " << kBannerLimit.count()
                  << " ms; stdout:\n"
                  << out() << "\nstderr:\n"
                  << err();
    Kill();
    return false;
  }
  return true;
}

int AgentProcess::StartExpectingExit(const std::vector<std::string>& args) {
  if (pid_ > 0) {
    ADD_FAILURE() << "the agent is already running";
    return -1;
  }
  args_ = args;
  pid_ = Launch(args);
  int code = WaitForExit(milliseconds(10000));
  return code;
}

bool AgentProcess::Restart(bool same_port) {
  if (pid_ > 0) {
    ADD_FAILURE() << "Restart() needs the agent stopped first";
    return false;
  }
  std::vector<std::string> args = args_;
  auto listen = std::find(args.begin(), args.end(), "--listen");
  if (same_port) {
    const std::string last = url_.substr(url_.find("://") + 3);  // HOST:PORT of the last launch
    if (listen == args.end()) {  // --dev picked one
      args.insert(args.end(), {"--listen", last});
    } else if (listen + 1 != args.end()) {
      *(listen + 1) = last;
    }
  }
  if (!HasArg(args, "--data-dir")) {
    args.push_back("--data-dir");
    args.push_back(data_dir_);
  }
  return Start(args);
}

// Waits for the agent to exit, SIGKILLing it when `limit` passes; its exit code.
int AgentProcess::WaitForExit(milliseconds limit) {
  if (pid_ <= 0) return -1;
  int status = 0;
  bool exited = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, limit);
  if (!exited) {
    ADD_FAILURE() << "fanout agent did not exit within " << limit.count() << " ms";
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (!exited) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int AgentProcess::Terminate(milliseconds limit) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  return WaitForExit(limit);
}

void AgentProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

// Step processes outlive an agent killed with SIGKILL. They all work in the scratch directory
// (or below it), which is how they are found: by their /proc/PID/cwd.
void AgentProcess::KillLeftovers() {
  const std::string root = dir_.path();
  for (int round = 0; round < 3; ++round) {
    int found = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string pid_text = entry.path().filename().string();
      if (pid_text.empty() || !std::all_of(pid_text.begin(), pid_text.end(),
                                           [](char c) { return c >= '0' && c <= '9'; })) {
        continue;
      }
      int pid = std::stoi(pid_text);
      if (pid == getpid()) continue;
      std::error_code link_ec;
      std::string cwd = std::filesystem::read_symlink(entry.path() / "cwd", link_ec).string();
      if (link_ec) continue;
      if (cwd == root || cwd.starts_with(root + "/") || cwd.starts_with(root + " ")) {
        kill(pid, SIGKILL);
        ++found;
      }
    }
    if (found == 0) return;
  }
}

std::unique_ptr<client::AgentClient> AgentProcess::Client(bool with_token) const {
  client::AgentEndpoint endpoint;
  endpoint.url = url_;
  if (with_token) endpoint.token = token_;
  endpoint.ca_file = ca_;
  endpoint.cert_file = cert_;
  endpoint.key_file = key_;
  return std::make_unique<client::AgentClient>(std::move(endpoint));
}

HttpReply AgentProcess::Http(const std::string& method, const std::string& path,
                             const std::string& body, const std::string& content_type) const {
  return HttpWithToken(token_, method, path, body, content_type);
}

HttpReply AgentProcess::HttpWithToken(const std::string& token, const std::string& method,
                                      const std::string& path, const std::string& body,
                                      const std::string& content_type) const {
  HttpReply reply;
  httplib::Client http(url_, cert_, key_);
  if (!ca_.empty()) http.set_ca_cert_path(ca_.c_str());
  http.enable_server_certificate_verification(true);
  http.set_connection_timeout(seconds(2));
  http.set_read_timeout(seconds(20));
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result res =
      method == "GET"      ? http.Get(path.c_str(), headers)
      : method == "PUT"    ? http.Put(path.c_str(), headers, body, content_type.c_str())
      : method == "POST"   ? http.Post(path.c_str(), headers, body, content_type.c_str())
      : method == "DELETE" ? http.Delete(path.c_str(), headers)
      : method == "PATCH"  ? http.Patch(path.c_str(), headers, body, content_type.c_str())
                           : httplib::Result(nullptr, httplib::Error::Unknown);
  if (!res) {
    reply.error = httplib::to_string(res.error());
    return reply;
  }
  reply.status = res->status;
  reply.body = res->body;
  reply.content_type = res->get_header_value("Content-Type");
  reply.json = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (reply.json.is_discarded()) reply.json = nullptr;
  return reply;
}

json WaitForRun(client::AgentClient& agent, const std::string& run_id, seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  json run;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::ceil<seconds>(deadline - std::chrono::steady_clock::now());
    auto polled = agent.GetRun(run_id, std::clamp(left, seconds(1), seconds(10)));
    if (!polled.ok()) {
      ADD_FAILURE() << "waiting for run " << run_id << ": " << polled.status().ToString();
      return nullptr;
    }
    run = std::move(*polled);
    if (client::IsFinalRunStatus(run.value("status", ""))) return run;
  }
  ADD_FAILURE() << "run " << run_id << " did not end within " << limit.count()
                << " s: " << run.dump();
  return nullptr;
}

bool ProcessEnded(int pid) {
  std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return true;
  char state = stat[close + 2];
  return state == 'Z' || state == 'X';
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> StepNames(const json& run) {
  std::vector<std::string> names;
  if (!run.is_object() || !run.contains("steps")) return names;
  for (const json& step : run["steps"]) names.push_back(step.value("name", ""));
  return names;
}

}  // namespace fanout::testing
