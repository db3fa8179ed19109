// `fanout agent` end to end: real agent processes on loopback ports, driven over the HTTP API
// (docs/agent-api.md), by `fanout job` and by `fanout deploy`. Every wait is a long-poll on the
// run or a bounded poll on a file a step writes; steps hold on gate files, never on timing.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "common/util.h"
#include "e2e/agent_util.h"
#include "e2e/e2e_util.h"
#include "fanout/catalog.h"

namespace fanout::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kToken = "e2e-secret-token-5f1d0c9a";

// A YAML flow sequence running `script` through /bin/sh, single-quoted for YAML.
std::string Sh(const std::string& script) {
  std::string quoted;
  for (char c : script) {
    quoted += c;
    if (c == '\'') quoted += '\'';
  }
  return "[/bin/sh, -c, '" + quoted + "']";
}

// agent.yaml for StartWithConfig: loopback (the command line adds --listen 127.0.0.1:0), a
// token, short grace periods so stop and drain tests stay fast.
std::string Config(int slots, const std::string& extra = "") {
  return "name: e2e\ndata_dir: data\nslots: " + std::to_string(slots) +
         "\ntoken_file: token\nstop_grace: 300ms\ndrain_grace: 5s\n" + extra;
}

// Whether `pid` is a process that has not ended (a zombie waiting for init has).
bool ProcessRuns(pid_t pid) {
  std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  size_t after_comm = stat.rfind(')');
  return after_comm != std::string::npos && after_comm + 2 < stat.size() &&
         stat[after_comm + 2] != 'Z';
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The CLI tests pass credentials explicitly; nothing may leak in from the environment.
    unsetenv("FANOUT_TOKEN");
    unsetenv("FANOUT_AGENT");
    // An agent that refuses a TLS handshake closes the socket under the client's write.
    signal(SIGPIPE, SIG_IGN);
  }

  bool StartDev(int slots) {
    if (!agent_.StartDev(slots)) return false;
    api_ = agent_.Client();
    return true;
  }
  bool StartConfig(const std::string& yaml) {
    if (!agent_.StartWithConfig(yaml, kToken)) return false;
    api_ = agent_.Client();
    return true;
  }
  // SIGTERM; the client's idle keep-alive connection is closed first, else the agent's
  // listener waits for it to time out before exiting.
  int Terminate() {
    api_.reset();
    return agent_.Terminate();
  }
  // After Terminate(): `text` is nowhere in the agent's database files.
  void ExpectNotInAgentDatabase(const std::string& text) {
    for (const char* file : {"agent.db", "agent.db-wal"}) {
      std::string path = agent_.data_dir() + "/" + file;
      if (std::filesystem::exists(path)) {
        EXPECT_FALSE(Contains(ReadText(path), text)) << path;
      }
    }
  }
  // `fanout job ARGS... --agent URL --token-file FILE` against agent_, in its folder.
  CommandResult Job(std::vector<std::string> args) {
    args.insert(args.begin(), "job");
    args.insert(args.end(), {"--agent", agent_.url(), "--token-file", agent_.token_file()});
    return RunFanout(args, agent_.dir().path());
  }

  bool Restart() {
    if (!agent_.Restart()) return false;
    api_ = agent_.Client();
    return true;
  }

  // PUT /v1/jobs/NAME with a YAML body; the name comes from its `job:` line.
  bool PutJob(const std::string& yaml) {
    std::string name = yaml.substr(5, yaml.find('\n') - 5);
    auto put = api_->PutJob(name, yaml, "application/yaml");
    EXPECT_TRUE(put.ok()) << put.status().ToString();
    return put.ok();
  }
  bool PutPackage(const std::string& name, const std::string& yaml) {
    auto put = api_->PutPackage(name, yaml);
    EXPECT_TRUE(put.ok()) << put.status().ToString();
    return put.ok();
  }

  std::string StartRun(const std::string& job, const client::StartRequest& request = {}) {
    auto started = api_->StartJob(job, request);
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    return started.ok() ? started->run_id : "";
  }

  // Starts job `stubborn`: one package step whose task ignores SIGTERM and outlasts the
  // stop_grace, so that a stop kills its `fanout run` mid-run. Returns once the task runs, with
  // its pid.
  void StartStubbornPackageStep(std::string& run_id, pid_t& task_pid) {
    const std::string started = agent_.Path("started");
    ASSERT_TRUE(PutPackage("stubborn", "package: stubborn\ntasks:\n"
                                       "  hold: {type: process, run: [/bin/sh, -c, "
                                       "'trap \"\" TERM; echo $$ > " + started + ".new; mv " +
                                       started + ".new " + started + "; sleep 30']}\n"));
    ASSERT_TRUE(
        PutJob("job: stubborn\nsteps:\n  - {name: s, subsystem: package, package: stubborn}\n"));
    run_id = StartRun("stubborn");
    ASSERT_TRUE(WaitForFile(started));
    task_pid = std::atoi(ReadText(started).c_str());
    ASSERT_GT(task_pid, 1);
  }
  void KillAStepWhileItsCatalogIsAway(std::string& execution_id);  // see its definition

  json Run(const std::string& job, const client::StartRequest& request = {}) {
    std::string id = StartRun(job, request);
    if (id.empty()) return nullptr;
    return WaitForRun(*api_, id);
  }

  json History(const std::string& job) {
    auto history = api_->JobHistory(job);
    EXPECT_TRUE(history.ok()) << history.status().ToString();
    return history.ok() ? history->value("runs", json::array()) : json::array();
  }

  // Waits (bounded) until the file exists: a step writes it once it really runs.
  bool WaitForFile(const std::string& path) {
    bool found = WaitFor([&] { return std::filesystem::exists(path); }, kEventually);
    EXPECT_TRUE(found) << path << " never appeared; agent stderr:\n" << agent_.err();
    return found;
  }

  // Waits (bounded) until the run shows `status`, e.g. `retrying` between attempts.
  bool WaitForStatus(const std::string& run_id, const std::string& status) {
    return WaitFor(
        [&] {
          auto run = api_->GetRun(run_id);
          return run.ok() && (*run)["status"] == status;
        },
        kEventually);
  }
  // Waits (bounded) until the agent says it is draining (after a SIGTERM).
  bool WaitForDraining() {
    return WaitFor(
        [&] {
          auto status = api_->Status();
          return status.ok() && (*status)["draining"] == true;
        },
        kEventually);
  }

  // A step that holds until the gate file exists, after writing `started`.
  std::string GateStep() const {
    return Sh("touch " + agent_.Path("started") + "; while [ ! -e " + agent_.Path("gate") +
              " ]; do sleep 0.02; done");
  }
  void OpenGate() { agent_.dir().Write("gate", ""); }

  // Creates job `hold` (one gated step) and starts `fanout job start hold --wait EXTRA...` in
  // the background, in the agent's folder; returns its pid once the step runs, -1 (having
  // said why) when the job could not be created or the step did not start.
  int StartAHeldWait(const std::vector<std::string>& extra) {
    const ScratchDir& d = agent_.dir();
    d.Write("hold.yaml",
            "job: hold\nsteps:\n  - {name: s, subsystem: process, run: " + GateStep() + "}\n");
    CommandResult created = Job({"create", "hold.yaml"});
    EXPECT_EQ(created.exit_code, 0) << created.err;
    if (created.exit_code != 0) return -1;
    std::vector<std::string> args = {"job", "start", "hold", "--wait"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--agent", agent_.url(), "--token-file", agent_.token_file()});
    int pid = StartFanout(args, d.path());
    const bool started = WaitForFile(agent_.Path("started"));
    EXPECT_TRUE(started) << "the held step did not start";
    return started ? pid : -1;
  }

  AgentProcess agent_;
  std::unique_ptr<client::AgentClient> api_;
};

// --- Start-up, authentication, input checks ---------------------------------------------------

TEST_F(AgentTest, DevModePrintsUrlAndTokenOnItsFirstLines) {
  ASSERT_TRUE(StartDev(2));
  std::vector<std::string> lines = Lines(agent_.out());
  ASSERT_GE(lines.size(), 4u) << agent_.out();
  EXPECT_EQ(lines[0], "fanout agent dev listening on " + agent_.url());
  EXPECT_TRUE(agent_.url().starts_with("http://127.0.0.1:")) << agent_.url();
  EXPECT_NE(agent_.url(), "http://127.0.0.1:0");
  EXPECT_EQ(lines[1], "data_dir: " + agent_.Path("data"));
  EXPECT_EQ(lines[2], "token: " + agent_.token());
  EXPECT_GE(agent_.token().size(), 32u);
  EXPECT_EQ(lines[3], "token_file: " + agent_.Path("data") + "/token");
  auto token = client::ReadTokenFile(agent_.token_file());
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, agent_.token());
  // Whoever reads the token runs jobs as the agent's user.
  EXPECT_EQ(std::filesystem::status(agent_.token_file()).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_TRUE(std::filesystem::exists(agent_.Path("data/agent.db")));

  HttpReply health = agent_.HttpWithToken("", "GET", "/v1/health");
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(health.json.value("status", ""), "ok");
  EXPECT_EQ(health.json.value("name", ""), "dev");
  EXPECT_FALSE(health.json.value("version", "").empty());

  auto status = api_->Status();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ((*status)["name"], "dev");
  EXPECT_EQ((*status)["slots"], 2);
  EXPECT_EQ((*status)["busy"], 0);
  EXPECT_EQ((*status)["queued"], 0);
  EXPECT_EQ((*status)["draining"], false);
  EXPECT_TRUE((*status)["running"].empty());
}

TEST_F(AgentTest, RequestsWithoutValidCredentialsGet401AndChangeNothing) {
  ASSERT_TRUE(StartDev(1));
  const std::string marker = agent_.Path("ran");
  ASSERT_TRUE(PutJob("job: touch\nsteps:\n  - {name: a, subsystem: process, run: " +
                     Sh("touch " + marker) + "}\n"));
  const std::string package = "package: p\ntasks:\n  a: {type: process, run: [/bin/true]}\n";
  const std::vector<std::array<std::string, 3>> routes = {
      {"GET", "/v1/status", ""},
      {"GET", "/v1/jobs", ""},
      {"GET", "/v1/jobs/touch", ""},
      {"PUT", "/v1/jobs/other",
       "job: other\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n"},
      {"DELETE", "/v1/jobs/touch", ""},
      {"POST", "/v1/jobs/touch/start", "{}"},
      {"GET", "/v1/jobs/touch/history", ""},
      {"PUT", "/v1/packages/p", package},
      {"GET", "/v1/packages", ""},
      {"GET", "/v1/packages/p", ""},
      {"DELETE", "/v1/packages/p", ""},
      {"GET", "/v1/runs/some-run?wait=1", ""},
      {"POST", "/v1/runs/some-run/stop", ""},
      {"GET", "/metrics", ""},
  };
  for (const std::string& token : {std::string(), std::string("not-the-token")}) {
    for (const auto& [method, path, body] : routes) {
      HttpReply r = agent_.HttpWithToken(token, method, path, body);
      EXPECT_EQ(r.status, 401) << method << " " << path << " token '" << token << "': " << r.body;
      EXPECT_EQ(r.json.value("error", ""), "unauthenticated") << r.body;
      EXPECT_FALSE(r.json.value("detail", "").empty()) << r.body;
    }
  }
  auto refused = agent_.Client(/*with_token=*/false)->Status();
  EXPECT_EQ(refused.status().code(), Code::kUnauthenticated) << refused.status().ToString();

  // Nothing ran, nothing was created or deleted.
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_TRUE(History("touch").empty());
  EXPECT_TRUE(api_->GetJob("touch").ok());
  EXPECT_EQ(api_->GetJob("other").status().code(), Code::kNotFound);
  auto packages = api_->ListPackages();
  ASSERT_TRUE(packages.ok());
  EXPECT_TRUE(packages->empty());
  // The agent's log says so, once for the first refusal (then at most once a minute), where it
  // had said nothing.
  const std::string err = agent_.err();
  const std::string said = "refused 1 request without a valid bearer token (the last, GET "
                           "/v1/status from 127.0.0.1, had none;";
  EXPECT_TRUE(Contains(err, said)) << err;
  EXPECT_EQ(err.find("refused", err.find(said) + said.size()), std::string::npos) << err;
  // Those held back are said when their minute has passed, or at the stop: they were said only
  // when another came after the minute, so never after a last burst (QA).
  auto wrong = agent_.HttpWithToken("nope", "GET", "/v1/jobs");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(agent_.Terminate(), 0);
  EXPECT_TRUE(Contains(agent_.err(), " requests without a valid bearer token (the last, GET "
                                     "/v1/jobs from 127.0.0.1, had a wrong one;"))
      << agent_.err();
}

TEST_F(AgentTest, MalformedInputGets400WithAReasonAndChangesNothing) {
  ASSERT_TRUE(StartConfig(Config(1, "max_body_bytes: 4096\n")));
  const std::string good =
      "job: keep\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n";
  ASSERT_TRUE(PutJob(good));
  auto before = api_->GetJob("keep");
  ASSERT_TRUE(before.ok());

  struct Case {
    std::string body, content_type, error, detail;
  };
  const std::vector<Case> jobs = {
      {"{\"job\": \"keep\", ", "application/json", "invalid job", "malformed JSON"},
      {"job: keep\nsteps: [x\n", "application/yaml", "invalid job", "malformed YAML"},
      {"job: keep\nsteps:\n  - {name: a, subsystem: telepathy}\n", "application/yaml",
       "invalid job", "unknown subsystem 'telepathy'"},
      {"job: keep\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true], on_failure: "
       "'goto:nowhere'}\n",
       "application/yaml", "invalid job", "unknown step 'nowhere'"},
      {"job: keep\ncolour: red\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n",
       "application/yaml", "invalid job", "unknown key `colour`"},
      {"job: keep\nsteps:\n  - {name: 'bad name', subsystem: process, run: [/bin/true]}\n",
       "application/yaml", "invalid job", "must match"},
      {"job: other\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n",
       "application/yaml", "name mismatch", "other"},
  };
  for (const Case& c : jobs) {
    HttpReply r = agent_.Http("PUT", "/v1/jobs/keep", c.body, c.content_type);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    EXPECT_EQ(r.json.value("error", ""), c.error) << r.body;
    EXPECT_TRUE(Contains(r.json.value("detail", ""), c.detail)) << c.detail << " in " << r.body;
  }
  auto after = api_->GetJob("keep");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);

  // Names are [A-Za-z0-9_.-]{1,128}.
  for (const std::string& path :
       std::vector<std::string>{"/v1/jobs/bad$name", "/v1/jobs/" + std::string(129, 'x'),
                                "/v1/runs/" + std::string(129, 'r'), "/v1/packages/a%20b"}) {
    HttpReply r = agent_.Http("GET", path);
    EXPECT_EQ(r.status, 400) << path << " -> " << r.body;
    EXPECT_EQ(r.json.value("error", ""), "bad name") << r.body;
  }
  EXPECT_EQ(agent_.Http("GET", "/v1/jobs/" + std::string(128, 'x')).status, 404);

  // Start bodies.
  const std::vector<std::pair<std::string, std::string>> starts = {
      {"not json", "malformed JSON"},
      {"[1, 2]", "the body must be a JSON object"},
      {"{\"params\": 3}", "`params` must be an object"},
      {"{\"start_step\": 7}", "`start_step` must be a string"},
      {"{\"colour\": \"red\"}", "unknown key `colour`"},
      {"{\"secrets\": \"pw\"}", "`secrets` must be an array of strings"},
      {"{\"secrets\": [1]}", "`secrets` must be an array of strings"},
      {"{\"params\": {\"n\": null}}", "`params.n`: null is no parameter value"},
      {"{\"params\": {\"n\": [\"a\", {}]}}", "`params.n`: {} is no parameter value"},
      {"{\"params\": {\"a=b\": \"x\"}}", "`params` holds \\\"a=b\\\", which is no parameter name"},
      {"{\"params\": {\"\": \"x\"}}", "`params` holds \\\"\\\", which is no parameter name"},
  };
  for (const auto& [body, detail] : starts) {
    HttpReply r = agent_.Http("POST", "/v1/jobs/keep/start", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_TRUE(Contains(r.body, detail)) << detail << " in " << r.body;
  }
  EXPECT_TRUE(History("keep").empty());
  for (const char* limit : {"0", "-5", "abc", "3x", "-99999999999999999999"}) {
    HttpReply r = agent_.Http("GET", std::string("/v1/jobs/keep/history?limit=") + limit);
    EXPECT_EQ(r.status, 400) << limit << " -> " << r.body;
    EXPECT_TRUE(Contains(r.body, "limit is a whole number of 1 or more")) << r.body;
  }
  // Past the most it returns, as any number over 10000 is (QA: said not to be a number).
  EXPECT_EQ(agent_.Http("GET", "/v1/jobs/keep/history?limit=99999999999999999999").status, 200);

  // Packages are validated as `fanout validate` does.
  HttpReply invalid = agent_.Http("PUT", "/v1/packages/bad",
                                  "package: bad\ntasks:\n  a: {type: nope}\n", "application/yaml");
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_EQ(invalid.json.value("error", ""), "invalid package");
  EXPECT_TRUE(Contains(invalid.json.value("detail", ""), "unknown task type 'nope'"))
      << invalid.body;
  HttpReply mismatch = agent_.Http(
      "PUT", "/v1/packages/bad", "package: good\ntasks:\n  a: {type: process, run: [/bin/true]}\n",
      "application/yaml");
  EXPECT_EQ(mismatch.status, 400) << mismatch.body;
  EXPECT_EQ(mismatch.json.value("error", ""), "name mismatch");

  // Bodies over max_body_bytes: 413.
  std::string big = "package: big\ntasks:\n  a: {type: process, run: [/bin/true]}\n# " +
                    std::string(8192, 'x') + "\n";
  HttpReply too_large = agent_.Http("PUT", "/v1/packages/big", big, "application/yaml");
  EXPECT_EQ(too_large.status, 413) << too_large.body << too_large.error;
  EXPECT_EQ(too_large.json.value("error", ""), "body too large") << too_large.body;
  HttpReply big_job = agent_.Http("PUT", "/v1/jobs/keep",
                                  good + "# " + std::string(8192, 'x') + "\n", "application/yaml");
  EXPECT_EQ(big_job.status, 413) << big_job.body << big_job.error;
  auto packages = api_->ListPackages();
  ASSERT_TRUE(packages.ok());
  EXPECT_TRUE(packages->empty());
  EXPECT_EQ(*api_->GetJob("keep"), *before);

  // A wait is a whole number of seconds from 0; 1.5 and -1 were taken as 1 and 0 (QA).
  for (const char* wait : {"soon", "1.5", "-1", "", "1s", "99999999999999999999"}) {
    HttpReply bad_wait = agent_.Http("GET", std::string("/v1/runs/abc?wait=") + wait);
    EXPECT_EQ(bad_wait.status, 400) << wait << ": " << bad_wait.body;
    HttpReply bad_start = agent_.Http("POST", std::string("/v1/jobs/keep/start?wait=") + wait, "{}");
    EXPECT_EQ(bad_start.status, 400) << wait << ": " << bad_start.body;
  }
  EXPECT_TRUE(History("keep").empty()) << "a start with a bad wait started a run";
  HttpReply capped = agent_.Http("GET", "/v1/runs/abc?wait=3600");
  EXPECT_EQ(capped.status, 404) << "a long wait is capped, not refused: " << capped.body;
  HttpReply no_run = agent_.Http("GET", "/v1/runs/no-such-run");
  EXPECT_EQ(no_run.status, 404) << no_run.body;
  HttpReply no_route = agent_.Http("GET", "/v1/nothing-here");
  EXPECT_EQ(no_route.status, 404);
  EXPECT_EQ(no_route.json.value("error", ""), "not found") << no_route.body;
  // Requests cpp-httplib refuses itself get the documented error body too.
  HttpReply patch = agent_.Http("PATCH", "/v1/jobs/keep", "{}");
  EXPECT_EQ(patch.status, 405) << patch.body;
  EXPECT_EQ(patch.json.value("error", ""), "method not allowed") << patch.body;
  EXPECT_TRUE(Contains(patch.json.value("detail", ""), "not PATCH")) << patch.body;
}

// Sends `request` as it is on a new connection to the agent at `url` (http://127.0.0.1:PORT);
// returns the reply as far as it has read, which is until it holds `until` (the whole reply
// when `until` is empty, the connection then closing), and in `took` how long that took.
std::string RawExchange(const std::string& url, const std::string& request,
                        std::chrono::milliseconds& took, const std::string& until = "\r\n") {
  const int port = std::stoi(url.substr(url.rfind(':') + 1));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto start = std::chrono::steady_clock::now();
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    timeval limit{15, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    char buffer[4096];
    ssize_t n = 0;
    while ((until.empty() || reply.find(until) == std::string::npos) &&
           (n = recv(fd, buffer, sizeof buffer, 0)) > 0) {
      reply.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  return reply;
}

// A web page cannot drive an agent (QA): a request with an Origin header is refused, and an
// agent without a token answers only requests addressed to a loopback name (DNS rebinding had
// let a page deploy a job there, and run it). A refused request's path reaches the agent's log
// with its control characters escaped.
TEST_F(AgentTest, AWebPageCannotDriveTheAgent) {
  ASSERT_TRUE(StartConfig("name: e2e\ndata_dir: data\nslots: 1\nstop_grace: 300ms\n"));
  const std::string port = agent_.url().substr(agent_.url().rfind(':') + 1);
  auto ask = [&](const std::string& method, const std::string& host, const std::string& extra) {
    std::chrono::milliseconds took{0};
    return RawExchange(agent_.url(),
                       method + " /v1/jobs/rb HTTP/1.1\r\nHost: " + host + "\r\n" + extra +
                           "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
                       took, "\"}");
  };
  for (const std::string& host : {"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port}) {
    EXPECT_TRUE(ask("GET", host, "").starts_with("HTTP/1.1 404")) << host;  // no job rb: heard
  }
  std::string rebound = ask("GET", "attacker.example.com:" + port, "");
  EXPECT_TRUE(rebound.starts_with("HTTP/1.1 403")) << rebound;
  EXPECT_TRUE(Contains(rebound, "is not a loopback address")) << rebound;
  const std::string job = "{\"job\":\"rb\",\"steps\":[{\"name\":\"s\",\"subsystem\":\"process\","
                          "\"run\":[\"/bin/true\"]}]}";
  std::chrono::milliseconds took{0};
  std::string deployed = RawExchange(
      agent_.url(),
      "PUT /v1/jobs/rb HTTP/1.1\r\nHost: 127.0.0.1:" + port +
          "\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\n"
          "Content-Length: " + std::to_string(job.size()) + "\r\n\r\n" + job,
      took, "\"}");
  EXPECT_TRUE(deployed.starts_with("HTTP/1.1 403")) << deployed;
  EXPECT_TRUE(Contains(deployed, "comes from a web page")) << deployed;
  EXPECT_FALSE(api_->GetJob("rb").ok()) << "a web page deployed a job";
  Terminate();

  // With a token, any Host serves (the agent may be reached by any name); Origin never does.
  ASSERT_TRUE(StartConfig(Config(1)));
  const std::string bearer = std::string("Authorization: Bearer ") + kToken + "\r\n";
  const std::string other_port = agent_.url().substr(agent_.url().rfind(':') + 1);
  EXPECT_TRUE(ask("GET", "etl-srv1.example.com:" + other_port, bearer).starts_with("HTTP/1.1 404"));
  EXPECT_TRUE(ask("GET", "127.0.0.1", bearer + "Origin: null\r\n").starts_with("HTTP/1.1 403"));
  std::chrono::milliseconds unused{0};  // no token: refused, and said in the log at once
  RawExchange(agent_.url(), "GET /v1/\x1b[31mRED HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", unused,
              "\"}");
  ASSERT_TRUE(WaitFor([&] { return Contains(agent_.err(), "RED"); }, kEventually)) << agent_.err();
  EXPECT_FALSE(Contains(agent_.err(), "\x1b")) << agent_.err();
}

// A new token written into the agent's token_file is in force at the first request that
// carries it: rotating the token needs no restart, which would drain the agent (QA).
TEST_F(AgentTest, ARotatedTokenFileTakesEffectWithoutARestart) {
  ASSERT_TRUE(StartConfig(Config(1)));
  EXPECT_EQ(agent_.Http("GET", "/v1/jobs").status, 200);
  const std::string rotated(64, 'b');
  ASSERT_TRUE(WriteFileAtomically(agent_.Path("token"), rotated + "\n", 0600).ok());
  // The old token stops working within a second or so, though no request brings the new one
  // (review: it worked on until one did).
  EXPECT_TRUE(WaitFor([&] { return agent_.Http("GET", "/v1/jobs").status == 401; },
                      kEventually));
  EXPECT_EQ(agent_.HttpWithToken(rotated, "GET", "/v1/jobs").status, 200);
  // A token file that cannot be used leaves the token in force, and the agent says so.
  ASSERT_TRUE(WriteFileAtomically(agent_.Path("token"), "two words\n", 0600).ok());
  EXPECT_EQ(agent_.HttpWithToken("two words", "GET", "/v1/jobs").status, 401);
  EXPECT_EQ(agent_.HttpWithToken(rotated, "GET", "/v1/jobs").status, 200);
  EXPECT_TRUE(Contains(agent_.err(), "token_file " + agent_.Path("token") +
                                         " changed: its new token is in force"))
      << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "changed but cannot be used")) << agent_.err();
  // Nor does one others may write: whoever wrote it would run jobs here (QA).
  const std::string planted(64, 'c');
  ASSERT_TRUE(WriteFileAtomically(agent_.Path("token"), planted + "\n", 0666).ok());
  ASSERT_EQ(chmod(agent_.Path("token").c_str(), 0666), 0);  // whatever the umask
  EXPECT_EQ(agent_.HttpWithToken(planted, "GET", "/v1/jobs").status, 401);
  EXPECT_EQ(agent_.HttpWithToken(rotated, "GET", "/v1/jobs").status, 200);
  EXPECT_TRUE(Contains(agent_.err(), "is writable by every user (mode 0666), who could write a "
                                     "token of their own")) << agent_.err();
}

// The scheme of `Authorization: Bearer TOKEN` is matched whatever its case (RFC 7235): a right
// token after `bearer` was told it was wrong (QA).
TEST_F(AgentTest, TheBearerSchemeIsMatchedWhateverItsCase) {
  ASSERT_TRUE(StartDev(1));
  auto status_with = [&](const std::string& authorization) {
    std::chrono::milliseconds took{0};
    return RawExchange(agent_.url(),
                       "GET /v1/status HTTP/1.1\r\nHost: a\r\nAuthorization: " + authorization +
                           "\r\nConnection: close\r\n\r\n",
                       took, "}");
  };
  for (const char* scheme : {"Bearer ", "bearer ", "BEARER  "}) {
    std::string reply = status_with(scheme + agent_.token());
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << scheme << ": " << reply;
  }
  std::string basic = status_with("Basic " + agent_.token());
  EXPECT_TRUE(basic.starts_with("HTTP/1.1 401")) << basic;
  EXPECT_TRUE(Contains(basic, "the Authorization header is not `Bearer TOKEN`")) << basic;
  for (const char* broken : {"Bearer", "Bearer ", "Bearerx "}) {
    std::string reply = status_with(broken);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 401")) << broken << ": " << reply;
  }
  EXPECT_TRUE(Contains(status_with("bearer wrong"), "the bearer token is wrong"));
}

// A POST without a Content-Length (`curl -X POST` without data) was answered only after the
// 10 s read timeout, cpp-httplib reading for a body until the connection closed.
TEST_F(AgentTest, ARequestWithoutABodyLengthIsAnsweredAtOnce) {
  ASSERT_TRUE(StartConfig(Config(1)));
  for (const char* method : {"POST", "PATCH"}) {
    std::chrono::milliseconds took{0};
    std::string status = RawExchange(
        agent_.url(),
        std::string(method) + " /v1/jobs/j/start HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " +
            kToken + "\r\n\r\n",
        took);
    status.erase(status.find("\r\n"));
    EXPECT_EQ(status, std::string(method) == "POST" ? "HTTP/1.1 400 Bad Request"
                                                    : "HTTP/1.1 405 Method Not Allowed")
        << method;
    EXPECT_LT(took, std::chrono::seconds(5)) << method;
  }
}

// QA: curl -d's default type (application/x-www-form-urlencoded) capped bodies at 8 KiB with a
// 413 blaming max_body_bytes; a Content-Length over the limit, or negative, was answered only
// after the 10 s read timeout.
TEST_F(AgentTest, BodiesAreJsonWhateverTheirTypeAndOverlongOnesAreRefusedAtOnce) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutJob("job: env\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n"));
  const std::string params = R"({"params": {"p": ")" + std::string(20000, 'x') + R"("}})";
  HttpReply form = agent_.Http("POST", "/v1/jobs/env/start", params,
                               "application/x-www-form-urlencoded");
  EXPECT_EQ(form.status, 202) << form.body;
  HttpReply multipart = agent_.Http("POST", "/v1/jobs/env/start", params,
                                    "MULTIPART/form-data; boundary=x");  // in any case
  EXPECT_EQ(multipart.status, 415) << multipart.body;
  EXPECT_TRUE(Contains(multipart.json.value("detail", ""), "application/json")) << multipart.body;
  // {method, extra headers, status}: answered before any body is read.
  const std::vector<std::array<std::string, 3>> heads = {
      {"PUT", "Content-Length: 5000000\r\n", "413 Payload Too Large"},
      {"PUT", "Content-Length: 99999999999999999999999\r\n", "413 Payload Too Large"},
      {"PUT", "Content-Length: -5\r\n", "400 Bad Request"},
      {"DELETE", "Content-Length: 5000000\r\n", "413 Payload Too Large"},
      {"PUT", "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "400 Bad Request"},
      {"PUT", "Transfer-Encoding: chunked\r\n", "411 Length Required"},
      {"POST", "Transfer-Encoding: chunked\r\n", "411 Length Required"},
      {"PUT", "Content-Length: 2\r\nContent-Length: 40\r\n", "400 Bad Request"},
  };
  // Refused for its credentials before its body is read: the client is told to close, or its
  // next request on the connection would be read from inside this body.
  std::chrono::milliseconds took{0};
  std::string refused = RawExchange(agent_.url(),
                                    "POST /v1/jobs/env/start HTTP/1.1\r\nHost: a\r\n"
                                    "Authorization: Bearer wrong\r\nContent-Length: 2\r\n\r\n{}",
                                    took, "\"}");
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 401")) << refused;
  EXPECT_TRUE(Contains(refused, "Connection: close")) << refused;
  for (const auto& [method, headers, status] : heads) {
    std::chrono::milliseconds took{0};
    std::string reply = RawExchange(
        agent_.url(),
        method + " /v1/jobs/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + kToken +
            "\r\nContent-Type: application/json\r\n" + headers + "\r\n",
        took, "\"}");  // the end of its JSON body
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 " + status)) << headers << ": " << reply;
    EXPECT_LT(took, std::chrono::seconds(1)) << headers;
  }
}

// A start with a wait answers a run that ends at once in one plain answer (the start's line and
// the ended run's), which costs a parent one wake-up; a longer run's start is answered at once,
// in lines as they come.
TEST_F(AgentTest, AStartWithAWaitAnswersAQuickRunInOnePiece) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ASSERT_TRUE(PutJob("job: quick\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(PutJob("job: slow\nsteps:\n  - {name: a, subsystem: process, run: [sleep, '3']}\n"));
  ASSERT_TRUE(PutJob("job: slow2\nsteps:\n  - {name: a, subsystem: process, run: [sleep, '3']}\n"));
  auto request = [&](const std::string& job, const std::string& version = "1.1") {
    return "POST /v1/jobs/" + job + "/start?wait=1 HTTP/" + version + "\r\nHost: a\r\n"
           "Authorization: Bearer " +
           kToken + "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
           "Connection: close\r\n\r\n{}";
  };
  std::chrono::milliseconds took{0};
  // /bin/true ends well within the 10 ms the agent holds the answer, unless the machine is
  // loaded (a parallel test run): a few tries, so that one slow spawn does not fail the test.
  std::string quick;
  for (int tries = 0; tries < 5; ++tries) {
    quick = RawExchange(agent_.url(), request("quick"), took, "");
    if (!Contains(quick, "Transfer-Encoding")) break;
  }
  ASSERT_TRUE(quick.starts_with("HTTP/1.1 202 ")) << quick;
  EXPECT_TRUE(Contains(quick, "Content-Length: ")) << quick;
  EXPECT_FALSE(Contains(quick, "Transfer-Encoding")) << quick;
  std::vector<std::string> lines = Lines(quick.substr(quick.find("\r\n\r\n") + 4));
  ASSERT_EQ(lines.size(), 2u) << quick;
  EXPECT_EQ(nlohmann::json::parse(lines[0]).value("status", ""), "running") << quick;
  EXPECT_EQ(nlohmann::json::parse(lines[1]).value("status", ""), "succeeded") << quick;

  std::string slow = RawExchange(agent_.url(), request("slow"), took, "\"run_id\"");
  EXPECT_TRUE(Contains(slow, "Transfer-Encoding: chunked")) << slow;
  EXPECT_LT(took, std::chrono::milliseconds(900)) << "the start's line waited for the run";

  // HTTP/1.0 knows no chunks (QA): both lines in one answer once the wait has passed.
  std::string old_client = RawExchange(agent_.url(), request("slow2", "1.0"), took, "");
  EXPECT_FALSE(Contains(old_client, "Transfer-Encoding")) << old_client;
  lines = Lines(old_client.substr(old_client.find("\r\n\r\n") + 4));
  ASSERT_EQ(lines.size(), 2u) << old_client;
  EXPECT_EQ(nlohmann::json::parse(lines[1]).value("status", ""), "running") << old_client;
}

// An agent whose data_dir is removed under it says so, and starts and deploys nothing more: it
// had gone on healthy to its probes, failing every package step, while `fanout deploy` said
// "unchanged" of files that were gone (QA).
// An answer of 500 (the agent's own trouble: here, its packages folder is a file) is said on
// the agent's stderr too, once for a burst: its log had shown nothing while parents got "disk
// full" (QA).
TEST_F(AgentTest, AnInternalErrorIsSaidInTheAgentsLog) {
  ASSERT_TRUE(StartDev(1));
  const std::string packages = agent_.data_dir() + "/packages";
  std::filesystem::remove_all(packages);
  { std::ofstream(packages) << "not a folder"; }
  for (int i = 0; i < 3; ++i) {
    HttpReply put = agent_.Http("PUT", "/v1/packages/p", "package: p\ntasks: {}\n");
    EXPECT_EQ(put.status, 500) << put.body;
  }
  auto said = [&] { return Contains(agent_.err(), "fanout agent: answered 500: "); };
  EXPECT_TRUE(WaitFor(said, kEventually)) << agent_.err();
  const std::string err = agent_.err();
  EXPECT_TRUE(Contains(err, "cannot store package")) << err;
  EXPECT_EQ(err.find("answered 500"), err.rfind("answered 500")) << "said once a burst: " << err;
  // The rest of the burst is said at the stop, not only if another 500 comes (review).
  EXPECT_EQ(Terminate(), 0);
  EXPECT_TRUE(Contains(agent_.err(), "fanout agent: answered 500 to 2 requests (the last: "))
      << agent_.err();
}

TEST_F(AgentTest, AnAgentWhoseDataDirIsRemovedSaysSoAndTakesNoMoreWork) {
  ASSERT_TRUE(StartDev(1));
  const std::string job = "job: j\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n";
  ASSERT_TRUE(PutJob(job));
  // One run holds the slot, another waits for it: the waiting one ends failed once the agent
  // is broken, rather than start into a database that is gone (its parent places it elsewhere).
  ASSERT_TRUE(PutJob("job: hold\nmax_concurrent_runs: 2\nsteps:\n"
                     "  - {name: s, subsystem: process, run: [sleep, '30']}\n"));
  std::string holding = StartRun("hold");
  std::string waiting = StartRun("hold");
  ASSERT_FALSE(holding.empty() || waiting.empty());
  // Its token file goes with the data_dir: the deploy below takes a copy.
  const std::string token_file = agent_.Path("token");
  std::filesystem::copy_file(agent_.token_file(), token_file);
  std::filesystem::remove_all(agent_.data_dir());
  auto said = [&] { return agent_.Http("GET", "/v1/health").status == 503; };
  ASSERT_TRUE(WaitFor(said, kEventually)) << agent_.err();
  HttpReply health = agent_.Http("GET", "/v1/health");
  EXPECT_EQ(health.json.value("status", ""), "broken") << health.body;
  EXPECT_FALSE(Contains(health.body, agent_.data_dir())) << "health needs no token" << health.body;
  EXPECT_TRUE(Contains(agent_.err(), "agent.db is gone")) << agent_.err();
  EXPECT_TRUE(Contains(agent_.Http("GET", "/v1/status").json.value("broken", ""),
                       agent_.data_dir() + "/agent.db is gone"));
  json ended = WaitForRun(*api_, waiting);
  EXPECT_EQ(ended.value("status", ""), "failed") << ended.dump();
  EXPECT_TRUE(Contains(ended.value("message", ""), "the agent's database is gone")) << ended.dump();
  auto still = api_->GetRun(holding);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ((*still)["status"], "running") << "a run under way goes on";
  EXPECT_TRUE(Contains(agent_.Http("GET", "/metrics").body, "\nfanout_agent_up 0\n"));
  ASSERT_TRUE(api_->StopRun(holding).ok()) << "stops are still taken";
  EXPECT_EQ(WaitForRun(*api_, holding).value("status", ""), "canceled");
  EXPECT_EQ(agent_.Http("POST", "/v1/jobs/j/start", "{}").status, 503);
  HttpReply put = agent_.Http("PUT", "/v1/packages/p", "package: p\ntasks: {}\n");
  EXPECT_EQ(put.status, 503) << put.body;
  EXPECT_TRUE(Contains(put.body, "restart the agent")) << put.body;
  // The deploy says it failed rather than "unchanged".
  std::string job_file = agent_.Path("j.yaml");
  { std::ofstream(job_file) << job; }
  CommandResult deploy = RunFanout(
      {"deploy", job_file, "--agent", agent_.url(), "--token-file", token_file}, agent_.Path(""));
  EXPECT_NE(deploy.exit_code, 0) << deploy.out << deploy.err;
  EXPECT_TRUE(Contains(deploy.err, "database is gone")) << deploy.err;
}

// A PostgreSQL catalog that refuses the agent's login (here: no such database) is said at the
// start, as a warning beside serving: it had shown only as every package step exiting 6.
TEST_F(AgentTest, APostgresCatalogThatRefusesIsSaidAtTheStart) {
  const char* uri = std::getenv("FANOUT_TEST_POSTGRES");
  if (uri == nullptr || *uri == '\0') GTEST_SKIP() << "needs FANOUT_TEST_POSTGRES";
  std::string spec = uri;
  spec = spec.substr(0, spec.rfind('/')) + "/no_such_database_here";
  // A data_dir of the test's own: --dev's temporary one stays behind the SIGKILL at its end.
  ASSERT_TRUE(agent_.Start({"--dev", "--catalog", spec, "--data-dir", agent_.Path("data")}));
  auto warned = [&] {
    return Contains(agent_.err(), "warning: ") && Contains(agent_.err(), "no_such_database_here") &&
           Contains(agent_.err(), "package steps that log in as this agent's user");
  };
  EXPECT_TRUE(WaitFor(warned, kEventually)) << agent_.err();
  EXPECT_FALSE(Contains(agent_.err(), uri)) << "the password stays out: " << agent_.err();
}

TEST_F(AgentTest, RefusesToListenBeyondLoopbackWithoutCredentials) {
  agent_.dir().Write("open.yaml", "name: open\nlisten: 0.0.0.0:0\ndata_dir: data\n");
  EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("open.yaml")}), 5);
  EXPECT_TRUE(Contains(agent_.err(), "refusing to listen on 0.0.0.0 without credentials"))
      << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "token_file")) << agent_.err();
  EXPECT_EQ(agent_.out(), "");

  // The command line cannot open it up either.
  agent_.dir().Write("loop.yaml", "name: loop\ndata_dir: data\n");
  EXPECT_EQ(
      agent_.StartExpectingExit({"--config", agent_.Path("loop.yaml"), "--listen", "0.0.0.0:0"}),
      5);
  EXPECT_TRUE(Contains(agent_.err(), "refusing to listen on 0.0.0.0")) << agent_.err();
  // A bad port is refused, on the command line (usage) as in the file (invalid).
  EXPECT_EQ(agent_.StartExpectingExit({"--dev", "--listen", "127.0.0.1:bad"}), 6);
  EXPECT_TRUE(Contains(agent_.err(), "--listen has a bad port 'bad'")) << agent_.err();
  EXPECT_EQ(agent_.StartExpectingExit({"--dev", "--listen", "127.0.0.1:38001x"}), 6);
  // A SQLite catalog whose folder is missing had started fine and failed every package step.
  EXPECT_EQ(agent_.StartExpectingExit({"--dev", "--catalog", "sqlite:/nonexistent-fanout/c.db"}),
            5);
  EXPECT_TRUE(Contains(agent_.err(), "its folder /nonexistent-fanout does not exist")) << agent_.err();
  EXPECT_EQ(agent_.StartExpectingExit({"--dev", "--catalog", "/nonexistent-fanout/c.db"}), 5);
  agent_.dir().Write("port.yaml", "name: p\ndata_dir: data\nlisten: 127.0.0.1:70000\n");
  EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("port.yaml")}), 5);
  EXPECT_TRUE(Contains(agent_.err(), "port.yaml:3:9: `listen` has a bad port '70000'"))
      << agent_.err();

  agent_.dir().Write("half-tls.yaml", "name: t\ndata_dir: data\ntls: {client_ca: ca.crt}\n");
  EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("half-tls.yaml")}), 5);
  EXPECT_TRUE(Contains(agent_.err(), "client_ca")) << agent_.err();

  // Values out of range are refused, not replaced by a default or found out later.
  for (const auto& [line, says] : std::vector<std::pair<std::string, std::string>>{
           {"slots: 0", "`slots` must be a whole number of at least 1, not '0'"},
           {"slots: abc", "`slots` must be a whole number of at least 1, not 'abc'"},
           {"max_body_bytes: 0", "`max_body_bytes` must be a whole number of at least 1024"},
           {"catalog: \"mysql://x\"", "unsupported catalog 'mysql://x'"},
           // QA: a misspelt subsystem was accepted, and found out only when a step was refused.
           {"proxies: {etl: {user: nobody, subsystems: [process, pakage, bogus]}}",
            "odd.yaml:3:53: unknown subsystem 'pakage' in proxies.etl.subsystems; allowed: package, "
            "process"}}) {
    agent_.dir().Write("odd.yaml", "name: odd\ndata_dir: data\n" + line + "\n");
    EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("odd.yaml")}), 5) << line;
    EXPECT_TRUE(Contains(agent_.err(), says)) << agent_.err();
  }

  // Every problem at once, each on a line of its own (only the first was said).
  agent_.dir().Write("many.yaml", "name: \"a b\"\nlisten: 0.0.0.0:1\n");
  EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("many.yaml")}), 5);
  EXPECT_TRUE(Contains(agent_.err(), "fanout agent: agent name 'a b' must match")) << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "\nfanout agent: `data_dir` is required")) << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "\nfanout agent: refusing to listen on 0.0.0.0"))
      << agent_.err();

  EXPECT_EQ(agent_.StartExpectingExit({"--config", agent_.Path("missing.yaml")}), 4);
  EXPECT_EQ(agent_.StartExpectingExit({"--dev", "--config", agent_.Path("loop.yaml")}), 6);
}

// A second agent on a port already taken exits 1 saying so, rather than sharing the port and
// taking part of the first agent's requests (SO_REUSEPORT).
TEST_F(AgentTest, ASecondAgentOnATakenPortRefusesToStart) {
  ASSERT_TRUE(StartDev(1));
  std::string port = agent_.url().substr(agent_.url().rfind(':') + 1);
  AgentProcess second;
  EXPECT_EQ(second.StartExpectingExit({"--dev", "--listen", "127.0.0.1:" + port, "--data-dir",
                                       second.Path("data")}),
            1);
  EXPECT_TRUE(Contains(second.err(), "cannot listen on 127.0.0.1:" + port +
                                         ": the port is in use (another agent?)"))
      << second.err();
  auto health = agent_.Client()->Status();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
}

// --- Packages and jobs ----------------------------------------------------------------------

TEST_F(AgentTest, PackagesDeployListFetchAndDelete) {
  ASSERT_TRUE(StartDev(1));
  const std::string v1 = "package: hello\ntasks:\n  a: {type: process, run: [/bin/true]}\n";
  const std::string v2 = "package: hello\ntasks:\n  b: {type: process, run: [/bin/echo, hi]}\n";
  HttpReply created = agent_.Http("PUT", "/v1/packages/hello", v1, "application/yaml");
  EXPECT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.json["version"], 1);
  EXPECT_EQ(created.json["changed"], true);
  EXPECT_EQ(created.json.value("sha256", "").size(), 64u);
  HttpReply same = agent_.Http("PUT", "/v1/packages/hello", v1, "application/yaml");
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_EQ(same.json["version"], 1);
  EXPECT_EQ(same.json["changed"], false);
  EXPECT_EQ(same.json["sha256"], created.json["sha256"]);
  HttpReply changed = agent_.Http("PUT", "/v1/packages/hello", v2, "application/yaml");
  EXPECT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(changed.json["version"], 2);
  EXPECT_EQ(changed.json["changed"], true);

  auto list = api_->ListPackages();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "hello");
  EXPECT_EQ((*list)[0].version, 2);
  EXPECT_EQ((*list)[0].size, static_cast<int64_t>(v2.size()));
  EXPECT_FALSE((*list)[0].deployed_at.empty());
  auto fetched = api_->GetPackage("hello");
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->content, v2);
  EXPECT_EQ(fetched->sha256, changed.json["sha256"]);
  EXPECT_EQ(ReadText(agent_.data_dir() + "/packages/hello.yaml"), v2);

  HttpReply deleted = agent_.Http("DELETE", "/v1/packages/hello");
  EXPECT_EQ(deleted.status, 204) << deleted.body;
  EXPECT_EQ(api_->GetPackage("hello").status().code(), Code::kNotFound);
  EXPECT_EQ(agent_.Http("DELETE", "/v1/packages/hello").status, 404);
  EXPECT_FALSE(std::filesystem::exists(agent_.data_dir() + "/packages/hello.yaml"));
}

TEST_F(AgentTest, JobsCreateListShowAndDelete) {
  ASSERT_TRUE(StartDev(1));
  const std::string yaml =
      "job: nightly\ndescription: two steps\nsteps:\n"
      "  - {name: one, subsystem: process, run: [/bin/true]}\n"
      "  - {name: two, subsystem: process, run: [/bin/true], retries: 2, retry_interval: 1s}\n";
  HttpReply created = agent_.Http("PUT", "/v1/jobs/nightly", yaml, "application/yaml");
  EXPECT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.json, json({{"name", "nightly"}, {"changed", true}}));
  HttpReply same = agent_.Http("PUT", "/v1/jobs/nightly", yaml, "application/yaml");
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_EQ(same.json["changed"], false);
  const json as_json = {
      {"job", "from-json"},
      {"enabled", false},
      {"max_concurrent_runs", 3},
      {"steps", {{{"name", "s"}, {"subsystem", "process"}, {"run", {"/bin/true"}}}}}};
  HttpReply from_json = agent_.Http("PUT", "/v1/jobs/from-json", as_json.dump());
  EXPECT_EQ(from_json.status, 201) << from_json.body;

  auto list = api_->ListJobs();
  ASSERT_TRUE(list.ok());
  const json& jobs = (*list)["jobs"];
  ASSERT_EQ(jobs.size(), 2u) << list->dump();
  EXPECT_EQ(jobs[0]["name"], "from-json");
  EXPECT_EQ(jobs[0]["enabled"], false);
  EXPECT_EQ(jobs[0]["max_concurrent_runs"], 3);
  EXPECT_EQ(jobs[1]["name"], "nightly");
  EXPECT_EQ(jobs[1]["steps"], 2);
  EXPECT_EQ(jobs[1]["running"], 0);
  EXPECT_TRUE(jobs[1]["last_run"].is_null());

  auto shown = api_->GetJob("nightly");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ((*shown)["job"], "nightly");
  EXPECT_EQ((*shown)["description"], "two steps");
  EXPECT_EQ((*shown)["max_concurrent_runs"], 1);
  EXPECT_EQ((*shown)["running"], 0);
  ASSERT_EQ((*shown)["steps"].size(), 2u);
  EXPECT_EQ((*shown)["steps"][0]["on_success"], "next");
  EXPECT_EQ((*shown)["steps"][0]["on_failure"], "quit-failure");
  EXPECT_EQ((*shown)["steps"][1]["on_success"], "quit-success");
  EXPECT_EQ((*shown)["steps"][1]["retries"], 2);

  // A disabled job can still be started by hand.
  json run = Run("from-json");
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
  auto listed = api_->ListJobs();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ((*listed)["jobs"][0]["last_run"]["status"], "succeeded") << listed->dump();
  EXPECT_EQ((*listed)["jobs"][0]["last_run"]["run_id"], run["run_id"]);

  HttpReply unknown_step =
      agent_.Http("POST", "/v1/jobs/nightly/start", R"({"start_step": "three"})");
  EXPECT_EQ(unknown_step.status, 404) << unknown_step.body;
  EXPECT_EQ(unknown_step.json.value("error", ""), "unknown start step");

  EXPECT_EQ(agent_.Http("DELETE", "/v1/jobs/nightly").status, 204);
  EXPECT_EQ(api_->GetJob("nightly").status().code(), Code::kNotFound);
  HttpReply start_deleted = agent_.Http("POST", "/v1/jobs/nightly/start", "{}");
  EXPECT_EQ(start_deleted.status, 404) << start_deleted.body;
  EXPECT_EQ(start_deleted.json.value("error", ""), "unknown job");
  EXPECT_EQ(agent_.Http("DELETE", "/v1/jobs/nightly").status, 404);
  // History: a never-seen name is unknown; a deleted job with runs keeps its history.
  EXPECT_EQ(agent_.Http("GET", "/v1/jobs/never-was/history").status, 404);
  EXPECT_EQ(agent_.Http("DELETE", "/v1/jobs/from-json").status, 204);
  HttpReply kept = agent_.Http("GET", "/v1/jobs/from-json/history");
  EXPECT_EQ(kept.status, 200) << kept.body;
  EXPECT_EQ(kept.json["runs"].size(), 1u) << kept.body;
}

// --- Steps: output, params, actions, retries -------------------------------------------------

// A history answer stops past max_history_bytes and says so; the CLI says it got only part.
TEST_F(AgentTest, AHistoryAnswerIsBoundedAndSaysSo) {
  ASSERT_TRUE(StartConfig(Config(1, "max_history_bytes: 3000\n")));
  ASSERT_TRUE(PutJob("job: chatty\nmax_concurrent_runs: 10\nsteps:\n"
                     "  - {name: s, subsystem: process, run: " +
                     Sh("yes x | head -c 1500") + "}\n"));
  for (int i = 0; i < 4; ++i) {
    json run = Run("chatty");
    ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  }
  HttpReply all = agent_.Http("GET", "/v1/jobs/chatty/history");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(all.json["runs"].size(), 2u) << "past 3,000 bytes after the second run: "
                                         << all.body.size() << " bytes";
  EXPECT_EQ(all.json.value("truncated", false), true) << all.body;
  HttpReply two = agent_.Http("GET", "/v1/jobs/chatty/history?limit=1");
  EXPECT_EQ(two.json["runs"].size(), 1u);
  EXPECT_FALSE(two.json.contains("truncated")) << two.body;

  CommandResult cli = RunFanout({"job", "history", "chatty", "--agent", agent_.url(),
                                 "--token-file", agent_.Path("token")},
                                agent_.dir().path());
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_TRUE(Contains(cli.err, "the agent sent the newest 2 runs only")) << cli.err;
}

// history_runs_per_job keeps each job's newest finished runs only (agent.db had grown for ever:
// 100 MB after 600 runs of a job with a lot of output).
TEST_F(AgentTest, HistoryKeepsTheNewestRunsOfEachJob) {
  ASSERT_TRUE(StartConfig(Config(2, "history_runs_per_job: 3\n")));
  ASSERT_TRUE(PutJob("job: often\nmax_concurrent_runs: 10\nsteps:\n"
                     "  - {name: s, subsystem: process, run: " +
                     Sh("sleep ${FANOUT_PARAM_s:-0}") + "}\n"));
  ASSERT_TRUE(PutJob("job: once\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  ASSERT_EQ(Run("once").value("status", ""), "succeeded");
  client::StartRequest long_one;
  long_one.params["s"] = "30";
  std::string running = StartRun("often", long_one);  // counts for nothing, is never taken
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    json run = Run("often");
    ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
    ids.push_back(run.value("run_id", ""));
  }
  // The trim follows a run's end (the run is answered final first).
  json kept;
  EXPECT_TRUE(WaitFor([&] { return (kept = History("often")).size() == 4u; },
                      kEventually));
  ASSERT_EQ(kept.size(), 4u) << kept.dump();
  EXPECT_EQ(kept[0]["run_id"], ids[6]);
  EXPECT_EQ(kept[2]["run_id"], ids[4]);
  EXPECT_EQ(kept[3]["run_id"], running);
  EXPECT_EQ(kept[2]["steps"].size(), 1u) << "a kept run keeps its steps";
  (void)api_->StopRun(running);
  EXPECT_EQ(History("once").size(), 1u) << "another job's history is its own";
  EXPECT_EQ(agent_.Http("GET", "/v1/runs/" + ids[0]).status, 404) << "trimmed away";
}

TEST_F(AgentTest, ProcessStepsGetParamsAndKeepBoundedOutputInHistory) {
  ASSERT_TRUE(StartDev(1));
  const std::string trace = agent_.Path("trace");
  ASSERT_TRUE(
      PutJob("job: talk\nsteps:\n"
             "  - {name: first, subsystem: process, run: " +
             Sh("echo first >> " + trace) +
             "}\n"
             "  - {name: loud, subsystem: process, run: " +
             Sh("echo region=$FANOUT_PARAM_region job=$FANOUT_JOB run=$FANOUT_RUN_ID; "
                "echo oops >&2; yes 0123456789 | head -c 200000") +
             "}\n"));
  client::StartRequest request;
  request.params["region"] = "eu";
  json run = Run("talk", request);
  ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  EXPECT_EQ(StepNames(run), (std::vector<std::string>{"first", "loud"}));
  EXPECT_EQ(run["params"], json({{"region", "eu"}}));
  EXPECT_FALSE(run["steps"][1].contains("stdout")) << "GET /v1/runs leaves output to the history";
  EXPECT_FALSE(run["queued_at"].is_null());
  EXPECT_FALSE(run["started_at"].is_null());
  EXPECT_FALSE(run["ended_at"].is_null());

  json history = History("talk");
  ASSERT_EQ(history.size(), 1u);
  const json& loud = history[0]["steps"][1];
  const std::string out = loud.value("stdout", "");
  EXPECT_TRUE(out.starts_with("region=eu job=talk run=" + run.value("run_id", "") + "\n"))
      << out.substr(0, 200);
  EXPECT_LE(out.size(), 64u * 1024) << "stdout is bounded to 64 KiB";
  EXPECT_TRUE(std::regex_search(out, std::regex("\n\\[output cut at 64 KiB; \\d+ bytes in all\\]\n$")))
      << out.substr(out.size() - 200);
  EXPECT_EQ(loud.value("stderr", ""), "oops\n");
  EXPECT_EQ(loud["exit_code"], 0);

  // start_step skips the steps before it.
  client::StartRequest from_loud;
  from_loud.start_step = "loud";
  json second = Run("talk", from_loud);
  EXPECT_EQ(second.value("status", ""), "succeeded") << second.dump();
  EXPECT_EQ(StepNames(second), std::vector<std::string>{"loud"});
  EXPECT_EQ(ReadText(trace), "first\n");
}

// QA: output beyond 64 KiB was cut mid-line with nothing to say so. The history keeps whole
// lines and a last one saying where it was cut and how much there was, within 64 KiB.
TEST_F(AgentTest, OutputCutAt64KiBEndsWithALineSayingSo) {
  ASSERT_TRUE(StartConfig(Config(1)));
  // 1..100000, one a line: 588,895 bytes; stderr one line of 70,000 bytes.
  ASSERT_TRUE(PutJob("job: verbose\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("seq 1 100000; head -c 70000 /dev/zero | tr '\\0' x >&2") + "}\n"));
  json run = Run("verbose");
  ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  json history = History("verbose");
  ASSERT_EQ(history.size(), 1u);
  const std::string out = history[0]["steps"][0].value("stdout", "");
  const std::string marker = "[output cut at 64 KiB; 588895 bytes in all]\n";
  EXPECT_LE(out.size(), 64u * 1024);
  EXPECT_GT(out.size(), 60u * 1024);
  ASSERT_TRUE(out.ends_with("\n" + marker)) << out.substr(out.size() - 100);
  // Every line before the marker is whole: 1, 2, 3, ... in order.
  std::vector<std::string> lines = Lines(out.substr(0, out.size() - marker.size()));
  ASSERT_FALSE(lines.empty());
  for (size_t i = 0; i < lines.size(); ++i) ASSERT_EQ(lines[i], std::to_string(i + 1));
  // One line longer than what is kept: cut inside it.
  const std::string err = history[0]["steps"][0].value("stderr", "");
  EXPECT_LE(err.size(), 64u * 1024);
  EXPECT_GT(err.size(), 60u * 1024);
  EXPECT_TRUE(err.ends_with("x\n[output cut at 64 KiB; 70000 bytes in all]\n"))
      << err.substr(err.size() - 100);

  // A failure's message is the last line of stderr, also past the 64 KiB kept (QA: it was the
  // line cut at 64 KiB).
  ASSERT_TRUE(PutJob("job: failing\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("seq 1 100000 >&2; echo FATAL: the real reason >&2; exit 1") + "}\n"));
  json failed = Run("failing");
  EXPECT_EQ(failed.value("status", ""), "failed") << failed.dump();
  EXPECT_TRUE(failed.value("message", "").ends_with("exit code 1: FATAL: the real reason"))
      << failed.value("message", "");
}

TEST_F(AgentTest, StepActionsGoToAndQuitAsSqlServerAgentDoes) {
  ASSERT_TRUE(StartDev(2));
  const std::string trace = agent_.Path("trace");
  // A failure jumps ahead; the next failure quits with success.
  ASSERT_TRUE(
      PutJob("job: jump\nsteps:\n"
             "  - {name: a, subsystem: process, run: [/bin/false], on_failure: 'goto:c'}\n"
             "  - {name: b, subsystem: process, run: " +
             Sh("echo b >> " + trace) +
             "}\n"
             "  - {name: c, subsystem: process, run: " +
             Sh("echo c >> " + trace + "; exit 1") +
             ", on_failure: quit-success}\n"
             "  - {name: d, subsystem: process, run: " +
             Sh("echo d >> " + trace) + "}\n"));
  json jump = Run("jump");
  EXPECT_EQ(jump.value("status", ""), "succeeded") << jump.dump();
  EXPECT_EQ(StepNames(jump), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(ReadText(trace), "c\n");
  EXPECT_EQ(jump["steps"][0]["status"], "failed");
  EXPECT_EQ(jump["steps"][1]["status"], "failed");

  // Success can quit with failure.
  ASSERT_TRUE(
      PutJob("job: stop-early\nsteps:\n"
             "  - {name: a, subsystem: process, run: [/bin/true], on_success: quit-failure}\n"
             "  - {name: b, subsystem: process, run: [/bin/true]}\n"));
  json early = Run("stop-early");
  EXPECT_EQ(early.value("status", ""), "failed") << early.dump();
  EXPECT_EQ(StepNames(early), std::vector<std::string>{"a"});
  EXPECT_TRUE(Contains(early.value("message", ""), "quits with failure")) << early.dump();

  // Defaults: success goes on, failure quits with failure, naming the step and its exit code.
  ASSERT_TRUE(
      PutJob("job: defaults\nsteps:\n"
             "  - {name: a, subsystem: process, run: [/bin/true]}\n"
             "  - {name: b, subsystem: process, run: " +
             Sh("echo broken >&2; exit 4") +
             "}\n"
             "  - {name: c, subsystem: process, run: [/bin/true]}\n"));
  json defaults = Run("defaults");
  EXPECT_EQ(defaults.value("status", ""), "failed") << defaults.dump();
  EXPECT_EQ(StepNames(defaults), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(defaults["steps"][1]["exit_code"], 4);
  const std::string message = defaults.value("message", "");
  EXPECT_TRUE(Contains(message, "step 2 (b) failed")) << message;
  EXPECT_TRUE(Contains(message, "exit code 4")) << message;
  EXPECT_TRUE(Contains(message, "broken")) << message;

  // goto backwards loops until a step succeeds; every visit is in the history.
  const std::string count = agent_.Path("count");
  ASSERT_TRUE(
      PutJob("job: loop\nsteps:\n"
             "  - {name: add, subsystem: process, run: " +
             Sh("echo x >> " + count) +
             "}\n"
             "  - {name: check, subsystem: process, run: " +
             Sh("test $(wc -l < " + count + ") -ge 3") + ", on_failure: 'goto:add'}\n"));
  json loop = Run("loop");
  EXPECT_EQ(loop.value("status", ""), "succeeded") << loop.dump();
  EXPECT_EQ(StepNames(loop),
            (std::vector<std::string>{"add", "check", "add", "check", "add", "check"}));
  json history = History("loop");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0]["steps"].size(), 6u) << history.dump();
}

TEST_F(AgentTest, RetriesRecordEveryAttemptInHistory) {
  ASSERT_TRUE(StartDev(1));
  const std::string count = agent_.Path("count");
  ASSERT_TRUE(
      PutJob("job: flaky\nsteps:\n"
             "  - name: try\n    subsystem: process\n    retries: 2\n    retry_interval: 100ms\n"
             "    run: " +
             Sh("n=$(cat " + count + " 2>/dev/null || echo 0); n=$((n+1)); echo $n > " + count +
                "; echo attempt $n; test $n -ge 3") +
             "\n"));
  json run = Run("flaky");
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
  json history = History("flaky");
  ASSERT_EQ(history.size(), 1u);
  const json& steps = history[0]["steps"];
  ASSERT_EQ(steps.size(), 3u) << history.dump();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(steps[i]["name"], "try");
    EXPECT_EQ(steps[i]["attempt"], i + 1);
    EXPECT_EQ(steps[i]["status"], i < 2 ? "failed" : "succeeded");
    EXPECT_EQ(steps[i]["stdout"], "attempt " + std::to_string(i + 1) + "\n");
  }

  ASSERT_TRUE(
      PutJob("job: hopeless\nsteps:\n"
             "  - {name: never, subsystem: process, run: [/bin/false], retries: 1}\n"));
  json failed = Run("hopeless");
  EXPECT_EQ(failed.value("status", ""), "failed") << failed.dump();
  ASSERT_EQ(failed["steps"].size(), 2u);
  EXPECT_EQ(failed["steps"][1]["attempt"], 2);
  EXPECT_EQ(failed["steps"][1]["status"], "failed");
}

// --- Slots, queue, 409, idempotency --------------------------------------------------------------

TEST_F(AgentTest, RunsBeyondSlotsWaitQueuedInOrder) {
  ASSERT_TRUE(StartDev(1));
  const std::string order = agent_.Path("order");
  ASSERT_TRUE(
      PutJob("job: fifo\nmax_concurrent_runs: 10\nsteps:\n"
             "  - {name: s, subsystem: process, run: " +
             Sh("echo $FANOUT_PARAM_n >> " + order + "; while [ ! -e " + agent_.Path("gate") +
                " ]; do sleep 0.02; done") +
             "}\n"));
  std::vector<std::string> ids;
  for (int n = 1; n <= 4; ++n) {
    client::StartRequest request;
    request.params["n"] = std::to_string(n);
    auto started = api_->StartJob("fifo", request);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    EXPECT_EQ(started->status, n == 1 ? "running" : "queued") << n;
    ids.push_back(started->run_id);
  }
  // The first run's step has started; the others wait for the slot.
  ASSERT_TRUE(WaitFor([&] { return ReadText(order) == "1\n"; }, kEventually));
  auto status = api_->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)["busy"], 1);
  EXPECT_EQ((*status)["queued"], 3);
  ASSERT_EQ((*status)["running"].size(), 1u) << status->dump();
  EXPECT_EQ((*status)["running"][0]["run_id"], ids[0]);
  EXPECT_EQ((*status)["running"][0]["job"], "fifo");
  EXPECT_EQ((*status)["running"][0]["status"], "running");
  EXPECT_EQ((*status)["running"][0]["step"], "s");
  auto queued = api_->GetRun(ids[2]);
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ((*queued)["status"], "queued");
  EXPECT_TRUE((*queued)["started_at"].is_null());
  EXPECT_TRUE((*queued)["steps"].empty());
  HttpReply metrics = agent_.Http("GET", "/metrics");
  EXPECT_TRUE(Contains(metrics.body, "\nfanout_agent_queued 3\n")) << metrics.body;
  EXPECT_TRUE(Contains(metrics.body, "\nfanout_agent_busy 1\n")) << metrics.body;

  OpenGate();
  std::string previous_start;
  for (const std::string& id : ids) {
    json run = WaitForRun(*api_, id);
    EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
    std::string started_at = run.value("started_at", "");
    EXPECT_LT(previous_start, started_at);
    previous_start = started_at;
  }
  EXPECT_EQ(ReadText(order), "1\n2\n3\n4\n");
}

TEST_F(AgentTest, MaxConcurrentRunsGives409AndIdempotencyKeysReturnTheSameRun) {
  ASSERT_TRUE(StartDev(2));
  ASSERT_TRUE(
      PutJob("job: once\nsteps:\n  - {name: hold, subsystem: process, run: " + GateStep() + "}\n"));
  client::StartRequest keyed;
  keyed.idempotency_key = "parent-1/task/1";
  auto first = api_->StartJob("once", keyed);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(first->existing);
  auto repeated = api_->StartJob("once", keyed);
  ASSERT_TRUE(repeated.ok()) << repeated.status().ToString();
  EXPECT_EQ(repeated->run_id, first->run_id);
  EXPECT_TRUE(repeated->existing);
  // The key finds its run (a parent that lost the answer looks it up); a key names one start.
  auto found = api_->FindRunByKey(keyed.idempotency_key);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, first->run_id);
  EXPECT_EQ(*api_->FindRunByKey("parent-1/task/2"), "");
  EXPECT_EQ(agent_.Http("GET", "/v1/runs").status, 400);
  ASSERT_TRUE(PutJob("job: other\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  auto other_job = api_->StartJob("other", keyed);
  EXPECT_EQ(other_job.status().code(), Code::kInvalidArgument) << other_job.status().ToString();
  EXPECT_TRUE(Contains(other_job.status().message(), "of job once, not of job other"))
      << other_job.status().ToString();

  HttpReply refused = agent_.Http("POST", "/v1/jobs/once/start", "{}");
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(refused.json.value("error", ""), "job already running");
  EXPECT_TRUE(Contains(refused.json.value("detail", ""),
                       "Request to run job once refused because the job is already running"))
      << refused.body;
  EXPECT_EQ(api_->StartJob("once", {}).status().code(), Code::kFailedPrecondition);

  OpenGate();
  json run = WaitForRun(*api_, first->run_id);
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
  // The key still names the run after it ended: nothing new starts.
  auto after = api_->StartJob("once", keyed);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->run_id, first->run_id);
  EXPECT_TRUE(after->existing);
  EXPECT_EQ(after->status, "succeeded");
  EXPECT_EQ(History("once").size(), 1u);

  json fresh = Run("once");
  EXPECT_EQ(fresh.value("status", ""), "succeeded");
  EXPECT_NE(fresh.value("run_id", ""), first->run_id);
  EXPECT_EQ(History("once").size(), 2u);

  // With the job at its limit again, the ended run's key still names it rather than a 409.
  std::filesystem::remove(agent_.Path("gate"));
  auto holder = api_->StartJob("once", {});
  ASSERT_TRUE(holder.ok()) << holder.status().ToString();
  auto at_limit = api_->StartJob("once", keyed);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status().ToString();
  EXPECT_EQ(at_limit->run_id, first->run_id);
  EXPECT_TRUE(at_limit->existing);
  OpenGate();
  EXPECT_EQ(WaitForRun(*api_, holder->run_id).value("status", ""), "succeeded");
}

// --- Stop
// ------------------------------------------------------------------------------------------

TEST_F(AgentTest, StopKillsTheStepsProcessGroupAndEndsCanceled) {
  ASSERT_TRUE(StartConfig(Config(2)));
  const std::string grandchild = agent_.Path("grandchild.pid");
  ASSERT_TRUE(PutJob("job: long\nsteps:\n  - {name: wait, subsystem: process, retries: 3, run: " +
                     Sh("sleep 30 & echo $! > " + grandchild + "; wait") + "}\n"));
  std::string id = StartRun("long");
  ASSERT_TRUE(
      WaitFor([&] { return !agent_.dir().Read("grandchild.pid").empty(); }, kEventually));
  int pid = std::stoi(agent_.dir().Read("grandchild.pid"));
  auto stopping = api_->StopRun(id);
  ASSERT_TRUE(stopping.ok()) << stopping.status().ToString();
  EXPECT_EQ((*stopping)["run_id"], id);
  EXPECT_EQ((*stopping)["status"], "stopping");
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
  ASSERT_EQ(run["steps"].size(), 1u) << "a stopped step is not retried: " << run.dump();
  EXPECT_EQ(run["steps"][0]["status"], "canceled");
  EXPECT_TRUE(WaitFor([&] { return ProcessEnded(pid); }, kEventually))
      << "the step's background process survived the stop";

  // A run that ended answers 200 with its final status.
  HttpReply again = agent_.Http("POST", "/v1/runs/" + id + "/stop");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json["status"], "canceled");
  EXPECT_EQ(agent_.Http("POST", "/v1/runs/no-such-run/stop").status, 404);

  // A step that ignores SIGTERM gets SIGKILL after stop_grace (300ms).
  ASSERT_TRUE(PutJob(
      "job: stubborn\nsteps:\n  - {name: s, subsystem: process, run: " +
      Sh("trap \"\" TERM; touch " + agent_.Path("stubborn") + "; while :; do sleep 0.05; done") +
      "}\n"));
  std::string stubborn = StartRun("stubborn");
  ASSERT_TRUE(WaitForFile(agent_.Path("stubborn")));
  auto asked = std::chrono::steady_clock::now();
  HttpReply stop = agent_.Http("POST", "/v1/runs/" + stubborn + "/stop");
  EXPECT_EQ(stop.status, 202) << stop.body;
  json killed = WaitForRun(*api_, stubborn);
  auto took = std::chrono::steady_clock::now() - asked;
  EXPECT_EQ(killed.value("status", ""), "canceled") << killed.dump();
  EXPECT_GE(took, milliseconds(250)) << "SIGKILL came before the grace period";
  EXPECT_LT(took, seconds(5));
  EXPECT_EQ(killed["steps"][0]["exit_code"], 128 + SIGKILL) << killed.dump();
}

TEST_F(AgentTest, StopSkipsRetriesAndCancelsQueuedRuns) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutJob(
      "job: retrying\nsteps:\n"
      "  - {name: s, subsystem: process, run: [/bin/false], retries: 5, retry_interval: 30s}\n"));
  std::string id = StartRun("retrying");
  // Between attempts the run is `retrying`.
  ASSERT_TRUE(WaitForStatus(id, "retrying"));
  // It holds the only slot, so the next run waits in the queue; stopping it cancels it there.
  ASSERT_TRUE(PutJob("job: other\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  auto queued = api_->StartJob("other", {});
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->status, "queued");
  HttpReply unqueued = agent_.Http("POST", "/v1/runs/" + queued->run_id + "/stop");
  EXPECT_EQ(unqueued.status, 200) << unqueued.body;
  EXPECT_EQ(unqueued.json["status"], "canceled");
  json never = WaitForRun(*api_, queued->run_id);
  EXPECT_EQ(never.value("status", ""), "canceled");
  EXPECT_TRUE(never["steps"].empty()) << never.dump();

  auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(api_->StopRun(id).ok());
  json run = WaitForRun(*api_, id);
  EXPECT_LT(std::chrono::steady_clock::now() - asked, seconds(5));
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
  EXPECT_EQ(run["steps"].size(), 1u) << "no retry after a stop: " << run.dump();
  // Why it ended is the stop, not the failure it was about to retry.
  EXPECT_EQ(run.value("message", ""), "Job canceled: stopped on request") << run.dump();
}

// A parent killed (or cut off from the agent) follows its child no more: the agent stops a run
// whose orphan_timeout passes with nobody long-polling or reading it, queued or running.
TEST_F(AgentTest, ARunNobodyFollowsForItsOrphanTimeoutIsStopped) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ASSERT_TRUE(PutJob("job: long\nmax_concurrent_runs: 9\nsteps:\n"
                     "  - {name: s, subsystem: process, run: [sleep, '30']}\n"));
  client::StartRequest orphan;
  orphan.orphan_timeout = seconds(1);
  // Its state is read from the history: a read of the run itself would follow it.
  auto status_of = [&](const std::string& id) {
    for (const json& run : History("long")) {
      if (run.value("run_id", "") == id) return run;
    }
    return json::object();
  };
  auto ends_canceled = [&](const std::string& id) {
    return WaitFor([&] { return status_of(id).value("status", "") == "canceled"; },
                   kEventually);
  };

  const std::string without = StartRun("long");  // no orphan_timeout: runs on
  const std::string followed = StartRun("long", orphan);
  std::atomic<bool> following = true;
  std::thread follower([&, client = agent_.Client()] {
    while (following) (void)client->GetRun(followed, seconds(1));
  });
  // Ended and joined however the test ends (a failed ASSERT returns early).
  struct StopFollowing {
    std::atomic<bool>& following;
    std::thread& follower;
    ~StopFollowing() {
      following = false;
      if (follower.joinable()) follower.join();
    }
  } stop_following{following, follower};
  // Both slots are taken: it waits queued, and is stopped there.
  auto queued_at = std::chrono::steady_clock::now();
  const std::string queued = StartRun("long", orphan);
  ASSERT_TRUE(ends_canceled(queued));
  EXPECT_GE(std::chrono::steady_clock::now() - queued_at, milliseconds(1000));
  EXPECT_EQ(status_of(queued).value("message", ""),
            "Job canceled before it started: nobody followed this run for 1.00 s (its "
            "orphan_timeout): its parent was stopped or lost this agent");

  ASSERT_TRUE(api_->StopRun(without).ok());
  ASSERT_TRUE(ends_canceled(without));
  // Its slot is free once the agent counts one busy: its history shows its end a moment before.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto status = api_->Status();
        return status.ok() && (*status)["busy"] == 1;
      },
      kEventually));
  auto running_at = std::chrono::steady_clock::now();
  const std::string running = StartRun("long", orphan);
  ASSERT_TRUE(ends_canceled(running));
  EXPECT_GE(std::chrono::steady_clock::now() - running_at, milliseconds(1000));
  json stopped = status_of(running);
  EXPECT_EQ(stopped.value("message", ""),
            "Job canceled: nobody followed this run for 1.00 s (its orphan_timeout): its parent "
            "was stopped or lost this agent") << stopped.dump();
  EXPECT_TRUE(Contains(agent_.err(), "stopping run " + running + " of job long: nobody"))
      << agent_.err();

  // Followed all along (well past its timeout), it runs until nobody follows it.
  EXPECT_EQ(status_of(followed).value("status", ""), "running");
  following = false;
  follower.join();
  EXPECT_TRUE(ends_canceled(followed));

  // Between a step's retries (a stop-27 gap: no test reached that state).
  ASSERT_TRUE(PutJob("job: flaky\nsteps:\n  - {name: s, subsystem: process, run: [/bin/false], "
                     "retries: 3, retry_interval: 60s}\n"));
  const std::string retrying = StartRun("flaky", orphan);
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const json& run : History("flaky")) {
          if (run.value("run_id", "") == retrying) {
            return run.value("steps", json::array()).size() == 1;
          }
        }
        return false;
      },
      kEventually));
  auto retrying_at = std::chrono::steady_clock::now();
  bool ended = WaitFor(
      [&] {
        for (const json& run : History("flaky")) {
          if (run.value("run_id", "") == retrying) return run.value("status", "") == "canceled";
        }
        return false;
      },
      milliseconds(5000));
  EXPECT_TRUE(ended) << History("flaky").dump();
  EXPECT_LT(std::chrono::steady_clock::now() - retrying_at, milliseconds(4000));

  // The start's option is checked as `wait` is: past what an agent takes, it is cut to that.
  HttpReply huge = agent_.Http("POST", "/v1/jobs/long/start?orphan_timeout_ms=2592000001", "{}");
  EXPECT_EQ(huge.status, 202) << huge.body;
  EXPECT_TRUE(api_->StopRun(huge.json.value("run_id", "")).ok());
  HttpReply bad = agent_.Http("POST", "/v1/jobs/long/start?orphan_timeout_ms=1.5", "{}");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.json.value("detail", ""), "orphan_timeout_ms is a whole number of milliseconds "
                                          "from 0 (at most 2592000000 is used), not '1.5'");
}

// --- Package steps, proxies ----------------------------------------------------------------------

TEST_F(AgentTest, PackageStepsRunDeployedPackagesAndRecordTheirExecutions) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ASSERT_TRUE(PutPackage(
      "greet",
      "package: greet\nparameters:\n"
      "  region: {type: string, required: true}\n"
      "  day: {type: string, value: mon}\n"
      "tasks:\n"
      "  check: {type: process, run: [/bin/sh, -c, 'test \"$0\" = eu && test \"$1\" = tue', "
      "'${region}', '${day}']}\n"));
  ASSERT_TRUE(PutJob(
      "job: greet-job\nsteps:\n"
      "  - {name: load, subsystem: package, package: greet, params: {region: us, day: tue}}\n"));
  const std::string parent = "0190f3c4-5a6b-7c8d-9e0f-a1b2c3d4e5f6";
  client::StartRequest request;
  request.params["region"] = "eu";  // start params override the step's
  request.parent_execution_id = parent;
  json run = Run("greet-job", request);
  ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  EXPECT_EQ(run["parent_execution_id"], parent);
  ASSERT_EQ(run["steps"].size(), 1u);
  const std::string execution_id = run["steps"][0].value("execution_id", "");
  ASSERT_FALSE(execution_id.empty());
  EXPECT_EQ(run["steps"][0]["exit_code"], 0);

  auto catalog = OpenCatalog("sqlite:" + agent_.data_dir() + "/catalog.db");
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  auto execution = (*catalog)->GetExecution(execution_id);
  ASSERT_TRUE(execution.ok()) << execution.status().ToString();
  ASSERT_TRUE(execution->has_value());
  const ExecutionRow& row = **execution;
  EXPECT_EQ(row.package, "greet");
  EXPECT_EQ(row.parent_id, parent);
  EXPECT_EQ(row.agent, "e2e");
  EXPECT_EQ(row.job, "greet-job");
  EXPECT_EQ(row.run_id, run["run_id"]);
  EXPECT_EQ(row.status, "succeeded");
  EXPECT_TRUE(row.ended_at.has_value());

  // With the step's own params (region us) the package fails, and so does the run.
  json failed = Run("greet-job");
  EXPECT_EQ(failed.value("status", ""), "failed") << failed.dump();
  EXPECT_TRUE(Contains(failed.value("message", ""), "step 1 (load) failed")) << failed.dump();
  EXPECT_EQ(failed["steps"][0]["exit_code"], 1);
  auto failed_execution = (*catalog)->GetExecution(failed["steps"][0].value("execution_id", ""));
  ASSERT_TRUE(failed_execution.ok() && failed_execution->has_value());
  EXPECT_EQ((*failed_execution)->status, "failed");

  // A package that is not deployed fails clearly.
  ASSERT_TRUE(api_->DeletePackage("greet").ok());
  json missing = Run("greet-job", request);
  EXPECT_EQ(missing.value("status", ""), "failed") << missing.dump();
  EXPECT_TRUE(Contains(missing.value("message", ""), "package 'greet' is not deployed"))
      << missing.dump();
}

TEST_F(AgentTest, AStepsFanoutRunKilledBeforeItsEndLeavesNoExecutionRunning) {
  ASSERT_TRUE(StartConfig(Config(1)));  // stop_grace 300ms: then SIGKILL
  std::string id;
  pid_t task = 0;
  ASSERT_NO_FATAL_FAILURE(StartStubbornPackageStep(id, task));
  auto catalog = OpenCatalog("sqlite:" + agent_.data_dir() + "/catalog.db");
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  std::string execution_id;
  ASSERT_TRUE(WaitFor([&] {
    auto run = api_->GetRun(id);
    if (!run.ok() || (*run)["steps"].empty()) return false;
    execution_id = (*run)["steps"][0].value("execution_id", "");
    auto row = (*catalog)->GetExecution(execution_id);
    return row.ok() && row->has_value();
  }, kEventually)) << "the step's execution never reached the catalog";

  ASSERT_TRUE(api_->StopRun(id).ok());
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
  auto row = (*catalog)->GetExecution(execution_id);
  ASSERT_TRUE(row.ok() && row->has_value());
  EXPECT_EQ((*row)->status, "canceled");
  EXPECT_TRUE((*row)->ended_at.has_value());
  EXPECT_TRUE(Contains((*row)->message, "killed by signal 9")) << (*row)->message;
  // Its task, in a process group of its own, goes with it (it ran on, orphaned).
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(task); }, kEventually))
      << "the task of the killed fanout run still runs";
}

// The row of `execution_id` in the SQLite catalog <scratch>/DIR/catalog.db, if it can be read.
std::optional<ExecutionRow> RecordedIn(const AgentProcess& agent, const std::string& dir,
                                       const std::string& execution_id) {
  auto catalog = OpenCatalog("sqlite:" + agent.Path(dir) + "/catalog.db");
  if (!catalog.ok()) return std::nullopt;
  auto row = (*catalog)->GetExecution(execution_id);
  return row.ok() ? *row : std::nullopt;
}

// A package step its agent stops says why in its own record, and the orphan_timeout's reason
// likewise: it had said "canceled by SIGTERM" whatever the agent's reason (QA).
TEST_F(AgentTest, AStoppedPackageStepsRecordSaysWhy) {
  std::filesystem::create_directories(agent_.Path("cat"));
  ASSERT_TRUE(StartConfig(Config(1, "catalog: sqlite:cat/catalog.db\n")));
  ASSERT_TRUE(PutPackage("hold", "package: hold\ntasks:\n  t: {type: process, run: [/bin/sh, -c, "
                                 "'touch " + agent_.Path("held") + "; sleep 30']}\n"));
  ASSERT_TRUE(PutJob("job: hold\nsteps:\n  - {name: s, subsystem: package, package: hold}\n"));
  const std::string id = StartRun("hold");
  ASSERT_TRUE(WaitForFile(agent_.Path("held")));
  ASSERT_TRUE(api_->StopRun(id).ok());
  json run = WaitForRun(*api_, id);
  ASSERT_EQ(run.value("status", ""), "canceled") << run.dump();
  const std::string execution_id = run["steps"][0].value("execution_id", "");
  std::optional<ExecutionRow> row;
  ASSERT_TRUE(WaitFor([&] {
    row = RecordedIn(agent_, "cat", execution_id);
    return row.has_value() && row->ended_at.has_value();
  }, kEventually)) << execution_id;
  EXPECT_EQ(row->status, "canceled");
  EXPECT_EQ(row->message, "canceled by its agent: stopped on request");
  EXPECT_FALSE(std::filesystem::exists(agent_.data_dir() + "/results/" + execution_id +
                                       ".json.stop"))
      << "the stop file is left behind";

  // The step's timeout too.
  ASSERT_TRUE(PutJob("job: brief\nsteps:\n  - {name: s, subsystem: package, package: hold, "
                     "timeout: 1s}\n"));
  run = WaitForRun(*api_, StartRun("brief"));
  const std::string timed_out = run["steps"][0].value("execution_id", "");
  ASSERT_TRUE(WaitFor([&] {
    row = RecordedIn(agent_, "cat", timed_out);
    return row.has_value() && row->ended_at.has_value();
  }, kEventually)) << run.dump();
  EXPECT_EQ(row->message, "canceled by its agent: its step timed out after 1.00 s");
}

// Starts an agent whose catalog is <scratch>/cat and a package step that ignores SIGTERM, moves
// the catalog away (to cat.away) once the step's execution is in it, and stops the run: the
// agent kills the step after its grace and cannot end its execution yet. `execution_id`: the
// step's execution, `running` in cat.away.
void AgentTest::KillAStepWhileItsCatalogIsAway(std::string& execution_id) {
  std::filesystem::create_directories(agent_.Path("cat"));
  ASSERT_TRUE(StartConfig(Config(1, "catalog: sqlite:cat/catalog.db\n")));
  std::string id;
  pid_t task = 0;
  ASSERT_NO_FATAL_FAILURE(StartStubbornPackageStep(id, task));
  ASSERT_TRUE(WaitFor([&] {
    auto run = api_->GetRun(id);
    if (!run.ok() || (*run)["steps"].empty()) return false;
    execution_id = (*run)["steps"][0].value("execution_id", "");
    return RecordedIn(agent_, "cat", execution_id).has_value();
  }, kEventually)) << "the step's execution never reached the catalog";

  // Away: the step's fanout run keeps its open file; the agent cannot open the catalog.
  std::filesystem::rename(agent_.Path("cat"), agent_.Path("cat.away"));
  ASSERT_TRUE(api_->StopRun(id).ok());  // its task ignores SIGTERM: killed after the grace
  EXPECT_EQ(WaitForRun(*api_, id).value("status", ""), "canceled");
  ASSERT_TRUE(WaitFor([&] { return Contains(agent_.err(), "cannot end 1 execution left"); },
                      kEventually))
      << agent_.err();
  std::optional<ExecutionRow> away = RecordedIn(agent_, "cat.away", execution_id);
  ASSERT_TRUE(away.has_value());
  EXPECT_EQ(away->status, "running");
}

// Waits for the step's execution to be ended in <scratch>/cat, as killed before `restored`.
void ExpectEndedAsKilled(const AgentProcess& agent, const std::string& execution_id,
                         DateTime restored) {
  std::optional<ExecutionRow> back;
  EXPECT_TRUE(WaitFor([&] {
    back = RecordedIn(agent, "cat", execution_id);
    return back && back->ended_at.has_value();
  }, milliseconds(15000))) << agent.err();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->status, "canceled");
  EXPECT_TRUE(Contains(back->message, "killed by signal 9")) << back->message;
  EXPECT_LT(*back->ended_at, restored) << "its end is when it was killed, not when written";
}

// The same with the catalog away when the step is killed: its execution is ended once the
// catalog is back (it was tried once and stayed `running` for ever).
TEST_F(AgentTest, AKilledStepsExecutionIsEndedOnceTheCatalogIsBack) {
  std::string execution_id;
  ASSERT_NO_FATAL_FAILURE(KillAStepWhileItsCatalogIsAway(execution_id));
  const DateTime restored = Now();
  std::filesystem::rename(agent_.Path("cat.away"), agent_.Path("cat"));
  ExpectEndedAsKilled(agent_, execution_id, restored);
}

// ... also by the agent's next start when it is stopped before the catalog is back (the
// execution stayed `running` for ever).
TEST_F(AgentTest, AKilledStepsExecutionIsEndedAfterARestartOnceTheCatalogIsBack) {
  std::string execution_id;
  ASSERT_NO_FATAL_FAILURE(KillAStepWhileItsCatalogIsAway(execution_id));
  EXPECT_EQ(agent_.Terminate(), 0);
  EXPECT_TRUE(Contains(agent_.err(), "stopping with 1 execution left running")) << agent_.err();
  const DateTime restored = Now();
  std::filesystem::rename(agent_.Path("cat.away"), agent_.Path("cat"));
  ASSERT_TRUE(Restart());
  ExpectEndedAsKilled(agent_, execution_id, restored);
}

// A step's `fanout run` killed from outside (the OOM killer, an operator) was said to have
// "exited with code 137".
TEST_F(AgentTest, AStepsFanoutRunKilledBySignalSaysSo) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutPackage("doomed", "package: doomed\ntasks:\n"
                                   "  k: {type: process, run: [/bin/sh, -c, 'kill -9 $PPID']}\n"));
  ASSERT_TRUE(PutJob("job: doomed\nsteps:\n  - {name: s, subsystem: package, package: doomed}\n"));
  json run = WaitForRun(*api_, StartRun("doomed"));
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_TRUE(Contains(run.value("message", ""), "fanout run was killed by signal 9")) << run.dump();
}

// A package step failing while its catalog is away says why it failed: its `fanout run` said
// last where its rows wait, and that line had taken the failure's place for good (QA).
TEST_F(AgentTest, APackageStepFailingWhileItsCatalogIsAwaySaysWhy) {
  // Nothing listens on port 1: the step's rows go to a spool in the scratch folder.
  setenv("FANOUT_SPOOL_DIR", agent_.Path("spool").c_str(), 1);
  bool started = StartConfig(Config(1, "catalog: postgresql://fanout@127.0.0.1:1/away\n"));
  unsetenv("FANOUT_SPOOL_DIR");
  ASSERT_TRUE(started);
  ASSERT_TRUE(PutPackage("boom", "package: boom\ntasks:\n  t: {type: process, run: [/bin/sh, "
                                 "-c, 'echo boom >&2; exit 3']}\n"));
  ASSERT_TRUE(PutJob("job: boom\nsteps:\n  - {name: s, subsystem: package, package: boom}\n"));
  json run = WaitForRun(*api_, StartRun("boom"));
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  json history = History("boom");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_TRUE(Contains(history[0]["steps"][0].value("stderr", ""), "spool"))
      << "the catalog was not away: " << history.dump();
  EXPECT_TRUE(Contains(run.value("message", ""), "failed: package boom failed: t: /bin/sh failed "
                                                 "with exit code 3: boom"))
      << run.dump();
  // Quoted without the child's own "fanout: " (SSIS QA: "failed: fanout: package boom ...").
  EXPECT_FALSE(Contains(run.value("message", ""), "fanout: ")) << run.dump();
}

// A package step whose catalog is no catalog fails saying where the agent's catalog is set: the
// step's `fanout run` had said "check --catalog or $FANOUT_CATALOG", which no agent reads (QA).
TEST_F(AgentTest, AStepsBrokenCatalogIsSaidAsTheAgentsSetting) {
  std::filesystem::create_directories(agent_.Path("cat"));
  ASSERT_TRUE(StartConfig(Config(1, "catalog: sqlite:cat/catalog.db\n")));
  ASSERT_TRUE(
      PutPackage("quick", "package: quick\ntasks:\n  t: {type: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(PutJob("job: quick\nsteps:\n  - {name: s, subsystem: package, package: quick}\n"));
  std::filesystem::remove(agent_.Path("cat/catalog.db"));
  agent_.dir().Write("cat/catalog.db", std::string(4096, 'x'));
  json run = WaitForRun(*api_, StartRun("quick"));
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  const std::string message = run.value("message", "");
  EXPECT_TRUE(Contains(message, "is not a SQLite database")) << message;
  EXPECT_TRUE(Contains(message, "check agent e2e's catalog (`catalog:` in its config, or "
                                "`fanout agent --catalog`)")) << message;
  EXPECT_FALSE(Contains(message, "FANOUT_CATALOG")) << message;
  EXPECT_FALSE(Contains(message, "catalog sqlite:")) << "the catalog is named once: " << message;
}

// A long-poll that names the execution it knows answers as soon as a package step starts
// another: a parent shows its child in the tree while it runs.
TEST_F(AgentTest, ALongPollAnswersWhenAPackageStepStartsAnExecutionTheCallerLacks) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutPackage("nap", "package: nap\ntasks:\n  t: {type: process, run: [/bin/sleep, '1.5']}\n"));
  ASSERT_TRUE(PutJob("job: nap\nsteps:\n  - {name: p, subsystem: package, package: nap}\n"));
  std::string id = StartRun("nap");
  auto started = std::chrono::steady_clock::now();
  auto running = api_->GetRun(id, std::chrono::seconds(10), "");
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(1200));
  ASSERT_EQ(running->value("status", ""), "running") << running->dump();
  std::string execution = (*running)["steps"][0].value("execution_id", "");
  ASSERT_FALSE(execution.empty()) << running->dump();
  // Knowing it, the next long-poll waits for the end.
  auto ended = api_->GetRun(id, std::chrono::seconds(10), execution);
  ASSERT_TRUE(ended.ok()) << ended.status().ToString();
  EXPECT_EQ(ended->value("status", ""), "succeeded") << ended->dump();
}

// A secret too short to be searched for in text is still hidden as a param's whole value.
TEST_F(AgentTest, AShortSecretParamIsHiddenWhole) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutJob("job: pin\nsteps:\n  - {name: ok, subsystem: process, run: [/bin/true]}\n"));
  client::StartRequest request;
  request.params["pin"] = "q7";
  request.params["note"] = "q7 is not hidden inside text";
  request.secrets = {"q7"};
  json run = Run("pin", request);
  ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  EXPECT_EQ(run["params"], json({{"pin", "***"}, {"note", "q7 is not hidden inside text"}}));
  EXPECT_EQ(History("pin")[0]["params"], run["params"]);
}

TEST_F(AgentTest, SensitiveParamsAreMaskedInHistoryAnswersAndTheChildsCatalog) {
  ASSERT_TRUE(StartConfig(Config(2)));
  const std::string secret = "hunter2-e2e-secret";
  // The child package does not declare `pw` sensitive: the agent's secrets make it masked.
  ASSERT_TRUE(PutPackage("leaky",
                         "package: leaky\nparameters:\n"
                         "  pw: {type: string, required: true}\n"
                         "  region: {type: string}\n"
                         "tasks:\n"
                         "  say: {type: process, run: ['/nonexistent/${pw}']}\n"));
  ASSERT_TRUE(PutJob("job: secretive\nsteps:\n"
                     "  - {name: talk, subsystem: process, on_success: next, run: " +
                     Sh("echo pw=$FANOUT_PARAM_pw region=$FANOUT_PARAM_region; "
                        "echo $FANOUT_PARAM_pw >&2") +
                     "}\n"
                     // The secret straddles the 64 KiB capture limit.
                     "  - {name: spill, subsystem: process, on_success: next, run: " +
                     Sh("head -c 65530 /dev/zero | tr '\\0' a; echo $FANOUT_PARAM_pw") +
                     "}\n"
                     "  - {name: child, subsystem: package, package: leaky}\n"));
  client::StartRequest request;
  request.params["pw"] = secret;
  request.params["region"] = "eu";
  request.secrets = {secret};
  json run = Run("secretive", request);
  ASSERT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_EQ(run["params"], json({{"pw", "***"}, {"region", "eu"}}));
  EXPECT_FALSE(Contains(run.dump(), secret)) << run.dump();
  json history = History("secretive");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_FALSE(Contains(history.dump(), secret)) << history.dump();
  EXPECT_EQ(history[0]["steps"][0].value("stdout", ""), "pw=*** region=eu\n");
  EXPECT_EQ(history[0]["steps"][0].value("stderr", ""), "***\n");
  const std::string spilled = history[0]["steps"][1].value("stdout", "");
  // Masked before it is cut to make room for the line saying so.
  EXPECT_TRUE(spilled.ends_with("a\n[output cut at 64 KiB; " +
                                std::to_string(65530 + secret.size() + 1) + " bytes in all]\n"))
      << spilled.substr(spilled.size() - 60);
  EXPECT_FALSE(Contains(spilled, secret.substr(0, 6))) << spilled.substr(spilled.size() - 60);

  // The package step got the real value (the step ran with it) and masked it in the catalog.
  const std::string execution_id = run["steps"][2].value("execution_id", "");
  ASSERT_FALSE(execution_id.empty()) << run.dump();
  auto catalog = OpenCatalog("sqlite:" + agent_.data_dir() + "/catalog.db");
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  auto execution = (*catalog)->GetExecution(execution_id);
  ASSERT_TRUE(execution.ok() && execution->has_value()) << run.dump();
  EXPECT_NE((*execution)->parameters["pw"].value, secret);
  EventQuery query;
  query.execution_id = execution_id;
  auto events = (*catalog)->ListEvents(query);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  bool said = false;
  for (const Event& e : *events) {
    EXPECT_FALSE(Contains(e.message, secret)) << e.message;
    said = said || Contains(e.message, "/nonexistent/***");
  }
  EXPECT_TRUE(said) << "the child's error, masked, is among its events";

  // Nothing of it reaches the agent's database either.
  ASSERT_EQ(Terminate(), 0);
  ExpectNotInAgentDatabase(secret);
}

// `fanout job start --param` sends no `secrets`: a parameter that a package step declares
// sensitive is a secret all the same, hidden whole in the history however short.
TEST_F(AgentTest, ParamsAPackageDeclaresSensitiveAreSecretsWithoutBeingSentAsSuch) {
  ASSERT_TRUE(StartConfig(Config(1)));
  const std::string secret = "Sup3rSecretPW";
  ASSERT_TRUE(PutPackage("careful",
                         "package: careful\nparameters:\n"
                         "  pw: {type: string, sensitive: true}\n"
                         "  pin: {type: string, sensitive: true}\n"
                         "  region: {type: string}\n"
                         "tasks:\n"
                         "  say: {type: process, run: ['/nonexistent/${pw}']}\n"));
  ASSERT_TRUE(PutJob("job: guarded\nsteps:\n  - {name: child, subsystem: package, package: careful}\n"));
  client::StartRequest request;
  request.params["pw"] = secret;
  request.params["pin"] = "42";
  request.params["region"] = "eu";
  json run = Run("guarded", request);
  ASSERT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_EQ(run["params"], json({{"pw", "***"}, {"pin", "***"}, {"region", "eu"}}));
  EXPECT_FALSE(Contains(run.dump(), secret)) << run.dump();
  EXPECT_TRUE(Contains(run.dump(), "/nonexistent/***")) << "the step ran with the real value";
  ASSERT_EQ(Terminate(), 0);
  ExpectNotInAgentDatabase(secret);
}

// A job's own step params that its package declares sensitive are not shown by GET /v1/jobs/X
// (`fanout job show`); the step still runs with them.
TEST_F(AgentTest, AJobDefinitionShowsNoSensitiveStepParam) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutPackage("careful",
                         "package: careful\nparameters:\n"
                         "  pw: {type: string, sensitive: true}\n"
                         "  region: {type: string}\n"
                         "tasks:\n"
                         "  check: {type: process, run: [/bin/sh, -c, 'test \"$0\" = Fixed-Step-Pw', "
                         "'${pw}']}\n"));
  ASSERT_TRUE(PutJob("job: fixed\nsteps:\n  - {name: child, subsystem: package, package: careful, "
                     "params: {pw: Fixed-Step-Pw, region: eu}}\n"));
  auto shown = api_->GetJob("fixed");
  ASSERT_TRUE(shown.ok()) << shown.status().ToString();
  EXPECT_EQ((*shown)["steps"][0]["params"], json({{"pw", "***"}, {"region", "eu"}})) << shown->dump();
  // Put back as fetched, the mask would become the password: refused.
  json fetched = *shown;
  fetched.erase("running");
  auto put_back = api_->PutJob("fixed", fetched.dump(), "application/json");
  EXPECT_EQ(put_back.status().code(), Code::kInvalidArgument) << put_back.status().ToString();
  EXPECT_TRUE(Contains(put_back.status().message(), "sensitive param pw as ***"))
      << put_back.status().ToString();
  json run = Run("fixed", {});
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
}

// The agent's children running `fanout --argv-from-stdin`: its warm processes.
std::vector<int> WarmProcesses(int agent_pid) {
  std::vector<int> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadText(entry.path().string() + "/stat");
    std::string cmdline = ReadText(entry.path().string() + "/cmdline");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));  // state ppid ...
    std::string state;
    int ppid = 0;
    fields >> state >> ppid;
    if (ppid == agent_pid && state != "Z" && Contains(cmdline, "--argv-from-stdin")) {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

// Whether process `pid` holds `file` open.
bool HoldsOpen(int pid, const std::string& file) {
  std::error_code ec;
  const auto wanted = std::filesystem::weakly_canonical(file, ec);
  for (const auto& fd :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (std::filesystem::read_symlink(fd.path(), ec) == wanted) return true;
  }
  return false;
}

TEST_F(AgentTest, PackageStepsRunInAProcessStartedAhead) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutPackage("echo-region",
                         "package: echo-region\nparameters:\n"
                         "  region: {type: string, required: true}\n"
                         "tasks:\n"
                         "  check: {type: process, run: [/bin/sh, -c, 'test \"$0\" = eu && "
                         "test -z \"$FANOUT_WARM_CATALOG\"', '${region}']}\n"));
  ASSERT_TRUE(
      PutJob("job: plain\nsteps:\n  - {name: one, subsystem: process, run: [/bin/true]}\n"));
  EXPECT_TRUE(WarmProcesses(agent_.pid()).empty()) << "none for jobs without a package step";
  ASSERT_TRUE(PutJob("job: warm\nmax_concurrent_runs: 3\nsteps:\n"
                     "  - {name: load, subsystem: package, package: echo-region}\n"));
  std::vector<int> warm = WarmProcesses(agent_.pid());
  ASSERT_EQ(warm.size(), 1u) << "one started when a job with a package step is created";

  // The steps run in it (their params and result as ever), and each leaves a new one.
  client::StartRequest eu;
  eu.params["region"] = "eu";
  json first = Run("warm", eu);
  ASSERT_EQ(first.value("status", ""), "succeeded") << first.dump();
  json second = Run("warm", eu);
  EXPECT_EQ(second.value("status", ""), "succeeded") << second.dump();
  client::StartRequest us;
  us.params["region"] = "us";
  json third = Run("warm", us);
  EXPECT_EQ(third.value("status", ""), "failed") << third.dump();
  EXPECT_EQ(third["steps"][0]["exit_code"], 1) << third.dump();
  // The next one starts a moment after a step took the last (kWarmAfter), off its start.
  std::vector<int> now;
  ASSERT_TRUE(WaitFor([&] {
    now = WarmProcesses(agent_.pid());
    return now.size() == 1u;
  }, kEventually)) << now.size();
  EXPECT_NE(now[0], warm[0]) << "the first warm process ran a step";
  // It opens the agent's SQLite catalog (there once a step made it) while it waits: its step's
  // first catalog work, done ahead.
  EXPECT_TRUE(WaitFor([&] { return HoldsOpen(now[0], agent_.Path("data/catalog.db")); },
                      kEventually));
  EXPECT_NE(kill(warm[0], 0), 0) << "the warm process that ran a step is gone";

  // Another such job keeps the one there is; a restarted agent holding the job starts one.
  ASSERT_TRUE(PutJob("job: warm2\nsteps:\n"
                     "  - {name: load, subsystem: package, package: echo-region}\n"));
  EXPECT_EQ(WarmProcesses(agent_.pid()), now);
  ASSERT_EQ(Terminate(), 0);
  EXPECT_NE(kill(now[0], 0), 0) << "the last warm process outlived the agent";
  ASSERT_TRUE(Restart());
  now = WarmProcesses(agent_.pid());
  ASSERT_EQ(now.size(), 1u) << "one started at the agent's start";
  json after = Run("warm", eu);
  EXPECT_EQ(after.value("status", ""), "succeeded") << after.dump();

  // A drained agent leaves none behind.
  ASSERT_EQ(Terminate(), 0);
  EXPECT_NE(kill(now[0], 0), 0) << "the last warm process outlived the agent";
}

TEST_F(AgentTest, ProxiesAreCheckedAtEveryRun) {
  const std::string proxies =
      "proxies:\n"
      "  limited: {user: root, subsystems: [package]}\n"
      "  ghost: {user: fanout-no-such-user, subsystems: [process]}\n";
  ASSERT_TRUE(StartConfig(Config(2, proxies)));
  ASSERT_TRUE(
      PutJob("job: via-limited\nsteps:\n  - {name: s, subsystem: process, proxy: limited, run: "
             "[/bin/true]}\n"));
  ASSERT_TRUE(
      PutJob("job: via-ghost\nsteps:\n  - {name: s, subsystem: process, proxy: ghost, run: "
             "[/bin/true]}\n"));
  ASSERT_TRUE(
      PutJob("job: via-nobody\nsteps:\n  - {name: s, subsystem: process, proxy: nobody, run: "
             "[/bin/true]}\n"));

  json limited = Run("via-limited");
  EXPECT_EQ(limited.value("status", ""), "failed") << limited.dump();
  EXPECT_TRUE(Contains(limited.value("message", ""),
                       "proxy 'limited' has no access to the process subsystem"))
      << limited.dump();
  json ghost = Run("via-ghost");
  EXPECT_EQ(ghost.value("status", ""), "failed") << ghost.dump();
  EXPECT_TRUE(Contains(ghost.value("message", ""), "proxy 'ghost'")) << ghost.dump();
  EXPECT_TRUE(Contains(ghost.value("message", ""), "fanout-no-such-user")) << ghost.dump();
  json nobody = Run("via-nobody");
  EXPECT_EQ(nobody.value("status", ""), "failed") << nobody.dump();
  EXPECT_TRUE(Contains(nobody.value("message", ""), "proxy 'nobody' is not defined on agent e2e"))
      << nobody.dump();

  // Granting the subsystem takes effect at the next run of the same, unchanged job.
  ASSERT_EQ(Terminate(), 0);
  agent_.dir().Write(
      "agent.yaml",
      Config(2, "proxies:\n  limited: {user: root, subsystems: [package, process]}\n"));
  ASSERT_TRUE(Restart());
  json granted = Run("via-limited");
  EXPECT_EQ(granted.value("status", ""), "succeeded") << granted.dump();
}

constexpr const char* kProxyUser = "fanout-test-proxy";

// The account proxy tests run steps as, created when missing; null when it cannot be.
const passwd* ProxyAccount() {
  if (getpwnam(kProxyUser) == nullptr) {
    int rc = std::system("useradd --system --no-create-home fanout-test-proxy >/dev/null 2>&1");
    (void)rc;
  }
  return getpwnam(kProxyUser);
}

TEST_F(AgentTest, StepsRunAsTheProxysUnixUser) {
  if (geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  const char* user = kProxyUser;
  const passwd* account = ProxyAccount();
  if (account == nullptr) GTEST_SKIP() << "cannot create the user " << user;
  const std::string home = account->pw_dir;
  // The user reaches the deployed package and writes a catalog of its own; the agent's own
  // folders stay the agent's.
  std::filesystem::permissions(agent_.dir().path(), std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::add);
  std::filesystem::create_directory(agent_.Path("shared"));
  std::filesystem::permissions(agent_.Path("shared"), std::filesystem::perms::all);
  ASSERT_TRUE(StartConfig(Config(1, "catalog: sqlite:" + agent_.Path("shared/catalog.db") +
                                        "\nproxies:\n  etl: {user: fanout-test-proxy, "
                                        "subsystems: [process, package]}\n")));
  ASSERT_TRUE(PutPackage("hello", "package: hello\ntasks:\n  t: {type: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(
      PutJob("job: who\nsteps:\n  - {name: s, subsystem: process, proxy: etl, on_success: next, "
             "run: [/bin/sh, -c, 'id -un; echo $HOME $USER; pwd']}\n"
             "  - {name: p, subsystem: package, proxy: etl, package: hello}\n"));
  json run = Run("who");
  ASSERT_EQ(run.value("status", ""), "succeeded") << run.dump();
  json history = History("who");
  ASSERT_EQ(history.size(), 1u);
  // In its home, as `su -` starts (QA: in the agent's working directory), or / without one.
  const std::string cwd = std::filesystem::is_directory(home) ? home : "/";
  EXPECT_EQ(history[0]["steps"][0]["stdout"],
            std::string(user) + "\n" + home + " " + user + "\n" + cwd + "\n");
  // Its result file went to a folder of its own, not the agent's results/.
  EXPECT_EQ(std::filesystem::status(agent_.Path("data/results/fanout-test-proxy")).permissions(),
            std::filesystem::perms::owner_all);
}

// A package step through a proxy logs in to a PostgreSQL catalog as that user would, without
// the password of the agent's `catalog:` URL: its process, the proxy user's, had held it (QA).
TEST_F(AgentTest, AProxyStepGetsNoCatalogPasswordOfTheAgents) {
  if (geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  const char* uri = std::getenv("FANOUT_TEST_POSTGRES");
  if (uri == nullptr || *uri == '\0') GTEST_SKIP() << "needs FANOUT_TEST_POSTGRES";
  const std::string password = PasswordOf(uri);
  if (password.empty()) GTEST_SKIP() << "FANOUT_TEST_POSTGRES holds no password";
  if (ProxyAccount() == nullptr) GTEST_SKIP() << "cannot create the user " << kProxyUser;
  std::filesystem::permissions(agent_.dir().path(), std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::add);
  ASSERT_TRUE(StartConfig(Config(1, "catalog: \"" + std::string(uri) +
                                        "\"\nproxies:\n  etl: {user: fanout-test-proxy, "
                                        "subsystems: [package]}\n")));
  EXPECT_TRUE(WaitFor([&] { return Contains(agent_.err(), "~/.pgpass must hold one"); },
                      kEventually))
      << agent_.err();
  ASSERT_TRUE(
      PutPackage("hello", "package: hello\ntasks:\n  t: {type: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(PutJob("job: who\nsteps:\n  - {name: p, subsystem: package, proxy: etl, "
                     "package: hello}\n"));
  json run = Run("who");
  // That user has no ~/.pgpass: its login is refused for want of a password.
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_TRUE(Contains(run.value("message", ""), "password")) << run.dump();
  EXPECT_FALSE(Contains(run.dump(), password)) << run.dump();
}

// --- Status, metrics -----------------------------------------------------------------------------

TEST_F(AgentTest, MetricsAreInPrometheusTextFormat) {
  ASSERT_TRUE(StartDev(3));
  ASSERT_TRUE(PutJob("job: ok\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(PutJob(
      "job: bad\nsteps:\n  - {name: s, subsystem: process, run: [/bin/false], retries: 1}\n"));
  EXPECT_EQ(Run("ok").value("status", ""), "succeeded");
  EXPECT_EQ(Run("bad").value("status", ""), "failed");
  HttpReply metrics = agent_.Http("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200) << metrics.body;
  EXPECT_TRUE(metrics.content_type.starts_with("text/plain")) << metrics.content_type;
  const std::string& text = metrics.body;
  for (const char* expected :
       {"# TYPE fanout_agent_up gauge\nfanout_agent_up 1\n", "\nfanout_agent_slots 3\n",
        "\nfanout_agent_busy 0\n", "\nfanout_agent_queued 0\n",
        "# TYPE fanout_agent_runs_total counter\n",
        "\nfanout_agent_runs_total{status=\"succeeded\"} 1\n",
        "\nfanout_agent_runs_total{status=\"failed\"} 1\n",
        "# TYPE fanout_agent_step_attempts_total counter\n",
        "\nfanout_agent_step_attempts_total{status=\"succeeded\"} 1\n",
        "\nfanout_agent_step_attempts_total{status=\"failed\"} 2\n"}) {
    EXPECT_TRUE(Contains(text, expected)) << expected << " in:\n" << text;
  }
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"\})? -?[0-9]+(\.[0-9]+)?$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  ASSERT_TRUE(text.ends_with("\n"));
  for (const std::string& line : Lines(text)) {
    EXPECT_TRUE(std::regex_match(line, sample) || std::regex_match(line, comment))
        << "'" << line << "'";
  }
}

// --- Restarts: history, drain, re-attach, abandoned
// -----------------------------------------------

TEST_F(AgentTest, HistoryJobsAndPackagesSurviveARestart) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(
      PutPackage("keep", "package: keep\ntasks:\n  a: {type: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(
      PutJob("job: hello\nsteps:\n  - {name: s, subsystem: process, run: [/bin/echo, hello]}\n"));
  json first = Run("hello");
  ASSERT_EQ(first.value("status", ""), "succeeded") << first.dump();
  ASSERT_EQ(Terminate(), 0) << agent_.err();

  ASSERT_TRUE(Restart());
  json history = History("hello");
  ASSERT_EQ(history.size(), 1u) << history.dump();
  EXPECT_EQ(history[0]["run_id"], first["run_id"]);
  EXPECT_EQ(history[0]["status"], "succeeded");
  EXPECT_EQ(history[0]["steps"][0]["stdout"], "hello\n");
  auto again = api_->GetRun(first.value("run_id", ""));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)["status"], "succeeded");
  EXPECT_TRUE(api_->GetJob("hello").ok());
  auto package = api_->GetPackage("keep");
  ASSERT_TRUE(package.ok());
  EXPECT_EQ(package->version, 1);

  json second = Run("hello");
  EXPECT_EQ(second.value("status", ""), "succeeded");
  history = History("hello");
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0]["run_id"], second["run_id"]) << "newest first";
}

// QA: a restarted agent refused to start while its SQLite catalog's folder was away (a disk
// not mounted yet), so process steps could not run either. It starts with a warning now.
TEST_F(AgentTest, ARestartedAgentStartsWhileItsCatalogFolderIsAway) {
  const std::string folder = agent_.Path("catalogs");
  std::filesystem::create_directory(folder);
  ASSERT_TRUE(StartConfig(Config(1, "catalog: \"sqlite:" + folder + "/c.db\"\n")));
  ASSERT_TRUE(
      PutJob("job: hello\nsteps:\n  - {name: s, subsystem: process, run: [/bin/echo, hi]}\n"));
  ASSERT_EQ(Terminate(), 0) << agent_.err();
  std::filesystem::remove_all(folder);

  ASSERT_TRUE(Restart()) << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "warning: catalog sqlite:" + folder + "/c.db: its folder " +
                                         folder + " does not exist (any more)"))
      << agent_.err();
  EXPECT_EQ(Run("hello").value("status", ""), "succeeded");
}

TEST_F(AgentTest, SigtermDrainsLettingTheRunningStepFinish) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ASSERT_TRUE(PutJob("job: slow\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("touch " + agent_.Path("started") + "; while [ ! -e " +
                        agent_.Path("gate") + " ]; do sleep 0.02; done; echo finished") +
                     "}\n"));
  std::string id = StartRun("slow");
  ASSERT_TRUE(WaitForFile(agent_.Path("started")));
  kill(agent_.pid(), SIGTERM);
  // Draining: the agent still answers, but starts nothing new.
  ASSERT_TRUE(WaitForDraining());
  HttpReply refused = agent_.Http("POST", "/v1/jobs/slow/start", "{}");
  EXPECT_EQ(refused.status, 503) << refused.body;
  // A deploy is stored, and says the agent is going away (QA: it looked like any other).
  agent_.dir().Write("late.yaml", "job: late\nsteps:\n  - {name: s, subsystem: process, run: "
                                  "[/bin/true]}\n");
  CommandResult deployed = RunFanout(
      {"deploy", "late.yaml", "--agent", agent_.url(), "--token-file", agent_.Path("token")},
      agent_.dir().path());
  EXPECT_EQ(deployed.exit_code, 0) << deployed.err;
  EXPECT_TRUE(Contains(deployed.err, "fanout deploy: warning: agent e2e (" + agent_.url() +
                                         ") is draining (shutting down)"))
      << deployed.err;
  OpenGate();
  api_.reset();
  auto asked = std::chrono::steady_clock::now();
  EXPECT_EQ(agent_.WaitForExit(), 0) << agent_.err();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, seconds(3));
  EXPECT_TRUE(Contains(agent_.err(), "draining")) << agent_.err();

  ASSERT_TRUE(Restart());
  auto run = api_->GetRun(id);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ((*run)["status"], "succeeded") << run->dump();
  json history = History("slow");
  ASSERT_EQ(history.size(), 1u) << "the refused start left no run";
  EXPECT_EQ(history[0]["steps"][0]["stdout"], "finished\n");
}

// SIGHUP (the terminal that started the agent closed) had killed it on the spot.
TEST_F(AgentTest, SighupDrainsAsSigtermDoes) {
  ASSERT_TRUE(StartConfig(Config(1)));
  api_.reset();
  kill(agent_.pid(), SIGHUP);
  EXPECT_EQ(agent_.WaitForExit(), 0) << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "SIGHUP received: draining")) << agent_.err();
}

// A signal ignored when the agent started stays ignored, as for an agent a script starts with &
// (QA: an ignored SIGINT drained it all the same). Sent first, it would be the one said.
TEST_F(AgentTest, AnIgnoredSigintDoesNotDrain) {
  sighandler_t before = signal(SIGINT, SIG_IGN);
  bool started = StartConfig(Config(1));
  signal(SIGINT, before);
  ASSERT_TRUE(started);
  api_.reset();
  kill(agent_.pid(), SIGINT);
  kill(agent_.pid(), SIGTERM);
  EXPECT_EQ(agent_.WaitForExit(), 0) << agent_.err();
  EXPECT_TRUE(Contains(agent_.err(), "SIGTERM received: draining")) << agent_.err();
  EXPECT_FALSE(Contains(agent_.err(), "SIGINT")) << agent_.err();
}

TEST_F(AgentTest, SigtermStopsStepsThatOutlastTheDrainGrace) {
  ASSERT_TRUE(
      StartConfig("name: e2e\ndata_dir: data\nslots: 1\ntoken_file: token\n"
                  "stop_grace: 200ms\ndrain_grace: 300ms\n"));
  ASSERT_TRUE(PutJob("job: endless\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("touch " + agent_.Path("started") + "; sleep 30") + "}\n"));
  std::string id = StartRun("endless");
  ASSERT_TRUE(WaitForFile(agent_.Path("started")));
  auto asked = std::chrono::steady_clock::now();
  EXPECT_EQ(Terminate(), 0) << agent_.err();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, seconds(5));
  ASSERT_TRUE(Restart());
  auto run = api_->GetRun(id);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ((*run)["status"], "canceled") << run->dump();
  // Nobody asked for a stop: the agent says it shut down.
  EXPECT_TRUE(Contains((*run).value("message", ""),
                       "the agent shut down and stopped its step after drain_grace"))
      << run->dump();
}

// QA: a run still queued when the agent drained was canceled at the next start ("Job canceled
// before it started"), with a drain stop reason naming drain_grace 0.0 ms. It stays queued and
// runs after the restart; a queued run stopped during the drain is canceled all the same.
TEST_F(AgentTest, RunsQueuedAtADrainRunAfterTheRestart) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutJob("job: long\nmax_concurrent_runs: 5\nsteps:\n  - {name: s, subsystem: "
                     "process, run: " + GateStep() + "}\n"));
  ASSERT_TRUE(PutJob("job: quick\nmax_concurrent_runs: 2\nsteps:\n  - {name: s, subsystem: "
                     "process, run: [/bin/echo, quick]}\n"));
  std::string first = StartRun("long");
  ASSERT_TRUE(WaitForFile(agent_.Path("started")));
  auto kept = api_->StartJob("quick", {});
  auto dropped = api_->StartJob("quick", {});
  ASSERT_TRUE(kept.ok() && dropped.ok());
  EXPECT_EQ(kept->status, "queued");
  kill(agent_.pid(), SIGTERM);
  ASSERT_TRUE(WaitForDraining());
  HttpReply stopped = agent_.Http("POST", "/v1/runs/" + dropped->run_id + "/stop");
  EXPECT_EQ(stopped.json["status"], "canceled") << stopped.body;
  OpenGate();
  api_.reset();
  EXPECT_EQ(agent_.WaitForExit(), 0) << agent_.err();

  ASSERT_TRUE(Restart());
  json run = WaitForRun(*api_, kept->run_id);
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
  json history = History("quick");
  ASSERT_EQ(history.size(), 2u) << history.dump();
  const json& ran = history[1];  // newest first: the one canceled was started later
  EXPECT_EQ(ran["run_id"], kept->run_id) << history.dump();
  ASSERT_EQ(ran["steps"].size(), 1u) << history.dump();
  EXPECT_EQ(ran["steps"][0]["stdout"], "quick\n");
  EXPECT_EQ(WaitForRun(*api_, first).value("status", ""), "succeeded");
  EXPECT_EQ(WaitForRun(*api_, dropped->run_id).value("status", ""), "canceled");
}

// The agent dies (SIGKILL) while a package step runs; the step goes on, and the restarted
// agent re-attaches to it and ends the run with the package's real result.
// `catalog_answers` false: the agent's catalog is a PostgreSQL server nobody runs, so the step
// spools its rows and the restarted agent can learn its result only from the step itself.
// `ends_while_down`: the step ends before the agent is back, which reads its result all the same.
// `redefine`: the job is replaced while the step runs; the run goes on with the job it started.
void ExpectReattach(AgentProcess& agent, std::unique_ptr<client::AgentClient>& api, int exit_code,
                    bool catalog_answers = true, bool ends_while_down = false,
                    bool redefine = false) {
  const std::string started = agent.Path("started");
  const std::string gate = agent.Path("gate");
  ASSERT_TRUE(api->PutPackage("slow",
                              "package: slow\nparameters:\n  code: {type: string, value: '0'}\n"
                              "tasks:\n  work: {type: process, run: [/bin/sh, -c, 'touch " +
                                  started + "; while [ ! -e " + gate +
                                  " ]; do sleep 0.02; done; exit $0', '${code}']}\n")
                  .ok());
  const std::string trace = agent.Path("trace");
  ASSERT_TRUE(api->PutJob("carry-on",
                          "job: carry-on\nsteps:\n"
                          "  - {name: load, subsystem: package, package: slow}\n"
                          "  - {name: after, subsystem: process, run: " +
                              Sh("echo after >> " + trace) + "}\n",
                          "application/yaml")
                  .ok());
  client::StartRequest request;
  request.params["code"] = std::to_string(exit_code);
  auto started_run = api->StartJob("carry-on", request);
  ASSERT_TRUE(started_run.ok()) << started_run.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(started); }, kEventually));
  if (redefine) {
    ASSERT_TRUE(api->PutJob("carry-on", "job: carry-on\nsteps:\n  - {name: other, subsystem: process, "
                                        "run: [/bin/false]}\n",
                            "application/yaml")
                    .ok());
  }

  agent.Kill();
  DateTime restarted{};
  if (ends_while_down) {
    agent.dir().Write("gate", "");
    const std::string results = agent.data_dir() + "/results";
    ASSERT_TRUE(WaitFor([&] { return !std::filesystem::is_empty(results); }, kEventually))
        << "the step left no result file";
    std::this_thread::sleep_for(milliseconds(300));  // the agent stays down a while longer
    restarted = Now();
  }
  ASSERT_TRUE(agent.Restart());
  // The operator is told what became of the runs in flight (the agent had said nothing).
  EXPECT_TRUE(Contains(agent.err(),
                       ends_while_down
                           ? "1 run was in flight when the agent last stopped: 0 re-attached "
                             "(some may be finishing a stop), 1 whose package step ended while "
                             "the agent was down (its result is read now), 0 waiting to retry"
                           : "1 run was in flight when the agent last stopped: 1 re-attached "
                             "(some may be finishing a stop), 0 whose package step ended while "
                             "the agent was down (its result is read now), 0 waiting to retry"))
      << agent.err();
  api = agent.Client();
  auto recovered = api->GetRun(started_run->run_id);
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  if (!ends_while_down) {
    EXPECT_EQ((*recovered)["status"], "running") << recovered->dump();
    agent.dir().Write("gate", "");
  }
  json run = WaitForRun(*api, started_run->run_id);
  ASSERT_TRUE(run.is_object());
  ASSERT_GE(run["steps"].size(), 1u) << run.dump();
  EXPECT_EQ(run["steps"][0]["name"], "load");
  EXPECT_FALSE(run["steps"][0]["ended_at"].is_null()) << run.dump();
  if (ends_while_down) {
    // The step's end is when it ended, not when the restarted agent learned of it.
    auto ended = ParseDateTime(run["steps"][0].value("ended_at", ""));
    ASSERT_TRUE(ended.ok()) << run.dump();
    EXPECT_LT(*ended, restarted) << run.dump();
  }
  if (exit_code == 0) {
    EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
    EXPECT_EQ(StepNames(run), (std::vector<std::string>{"load", "after"}));
    EXPECT_EQ(run["steps"][0]["status"], "succeeded") << run.dump();
    EXPECT_EQ(ReadText(trace), "after\n");
  } else {
    EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
    EXPECT_EQ(StepNames(run), std::vector<std::string>{"load"});
    EXPECT_EQ(run["steps"][0]["status"], "failed") << run.dump();
    EXPECT_TRUE(Contains(run.value("message", ""), "step 1 (load) failed")) << run.dump();
    // In the step's own words, as a step the agent saw end says them (QA: "fanout run exited
    // with code 1" was all a restarted agent said).
    EXPECT_TRUE(Contains(run.value("message", ""), "package slow failed: work:")) << run.dump();
    EXPECT_FALSE(std::filesystem::exists(trace));
  }
  if (!catalog_answers) return;
  auto catalog = OpenCatalog("sqlite:" + agent.data_dir() + "/catalog.db");
  ASSERT_TRUE(catalog.ok());
  auto execution = (*catalog)->GetExecution(run["steps"][0].value("execution_id", ""));
  ASSERT_TRUE(execution.ok() && execution->has_value());
  EXPECT_EQ((*execution)->status, exit_code == 0 ? "succeeded" : "failed");
}

TEST_F(AgentTest, ARestartedAgentReattachesToAPackageStepThatSucceeds) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ExpectReattach(agent_, api_, 0);
}

TEST_F(AgentTest, ARestartedAgentReattachesToAPackageStepThatFails) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ExpectReattach(agent_, api_, 1);
}

// The step tells its result itself (a result file in data_dir), so an outage of the catalog
// does not turn a step that succeeded into `abandoned`.
TEST_F(AgentTest, AReattachedStepsResultNeedsNoCatalog) {
  setenv("FANOUT_SPOOL_DIR", agent_.Path("spool").c_str(), 1);
  ASSERT_TRUE(StartConfig(Config(2, "catalog: \"postgresql://fanout@127.0.0.1:1/nowhere\"\n")));
  ExpectReattach(agent_, api_, 0, /*catalog_answers=*/false);
  unsetenv("FANOUT_SPOOL_DIR");
  EXPECT_TRUE(std::filesystem::is_empty(agent_.data_dir() + "/results")) << "result files are removed";
}

// QA: a package step that ended while its agent was down was called `abandoned`, while the
// catalog said `succeeded` and its result file lay unread.
TEST_F(AgentTest, AStepThatEndedWhileTheAgentWasDownKeepsItsResult) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ExpectReattach(agent_, api_, 0, /*catalog_answers=*/true, /*ends_while_down=*/true);
  EXPECT_TRUE(std::filesystem::is_empty(agent_.data_dir() + "/results")) << "result files are removed";
}

// A re-attached step that is stopped ends as soon as it has ended, not after all of stop_grace.
TEST_F(AgentTest, AStoppedReattachedStepEndsWithoutWaitingOutTheGrace) {
  ASSERT_TRUE(StartConfig("name: e2e\ndata_dir: data\nslots: 1\ntoken_file: token\n"
                          "stop_grace: 10s\n"));
  const std::string pid_file = agent_.Path("step.pid");
  ASSERT_TRUE(PutJob("job: long\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("echo $$ > " + pid_file + ".tmp; mv " + pid_file + ".tmp " + pid_file +
                        "; exec sleep 30") +
                     "}\n"));
  std::string id = StartRun("long");
  ASSERT_TRUE(WaitForFile(pid_file));
  agent_.Kill();
  ASSERT_TRUE(Restart());
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(api_->StopRun(id).ok());
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5)) << "it waited out stop_grace";
}

// QA: a job replaced while its run's step ran, then a crash: the restarted agent took the new
// definition's step at the same index and ended the run `succeeded` at once.
TEST_F(AgentTest, AReattachedRunGoesOnWithTheJobItStarted) {
  ASSERT_TRUE(StartConfig(Config(2)));
  ExpectReattach(agent_, api_, 0, /*catalog_answers=*/true, /*ends_while_down=*/false,
                 /*redefine=*/true);
}

// A re-attached step that fails still has its retries: the restart does not use them up.
TEST_F(AgentTest, AReattachedStepThatFailsIsRetried) {
  ASSERT_TRUE(StartConfig(Config(1)));
  const std::string started = agent_.Path("started");
  const std::string gate = agent_.Path("gate");
  const std::string failed_once = agent_.Path("failed-once");
  ASSERT_TRUE(PutPackage("flaky", "package: flaky\ntasks:\n  work: {type: process, run: "
                                  "[/bin/sh, -c, 'if [ -e " + failed_once + " ]; then exit 0; fi; "
                                  "touch " + started + "; while [ ! -e " + gate +
                                  " ]; do sleep 0.02; done; touch " + failed_once + "; exit 1']}\n"));
  ASSERT_TRUE(PutJob("job: retried\nsteps:\n  - {name: load, subsystem: package, package: flaky, "
                     "retries: 1, retry_interval: 0s}\n"));
  std::string id = StartRun("retried");
  ASSERT_TRUE(WaitForFile(started));
  agent_.Kill();
  ASSERT_TRUE(Restart());
  agent_.dir().Write("gate", "");
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
  ASSERT_EQ(run["steps"].size(), 2u) << run.dump();
  EXPECT_EQ(run["steps"][0]["status"], "failed") << run.dump();
  EXPECT_EQ(run["steps"][1]["attempt"], 2) << run.dump();
  EXPECT_EQ(run["steps"][1]["status"], "succeeded") << run.dump();
}

// QA: a run waiting between two attempts of a step when the agent died was `abandoned` after
// the restart ("its step process is gone"). The wait goes on and the attempts left run.
TEST_F(AgentTest, ARunWaitingToRetryWhenTheAgentDiesGetsItsRetriesAfterTheRestart) {
  ASSERT_TRUE(StartConfig(Config(1)));
  // A 3 s retry wait leaves room for a slow machine to see `retrying` and kill the agent before
  // the retry; the restarted agent waits out what is left of it.
  ASSERT_TRUE(PutJob("job: flaky\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("echo try >> " + agent_.Path("tries") + "; exit 4") +
                     ", retries: 1, retry_interval: 3s}\n"));
  std::string id = StartRun("flaky");
  ASSERT_TRUE(WaitForStatus(id, "retrying"));
  agent_.Kill();
  ASSERT_EQ(ReadText(agent_.Path("tries")), "try\n") << "the retry came before the kill";
  ASSERT_TRUE(Restart());
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_TRUE(Contains(run.value("message", ""), "exit code 4")) << run.dump();
  ASSERT_EQ(run["steps"].size(), 2u) << run.dump();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(run["steps"][i]["attempt"], i + 1) << run.dump();
    EXPECT_EQ(run["steps"][i]["status"], "failed") << run.dump();
  }
  EXPECT_EQ(ReadText(agent_.Path("tries")), "try\ntry\n");
}

// A stop under way when the agent dies (the step ignores SIGTERM, the grace runs) is finished
// by the restarted agent: the run ends canceled, not re-attached to run on.
TEST_F(AgentTest, AStopUnderWayWhenTheAgentDiesIsFinishedAfterItsRestart) {
  ASSERT_TRUE(StartConfig("name: e2e\ndata_dir: data\nslots: 1\ntoken_file: token\n"
                          "stop_grace: 1s\n"));
  const std::string pid_file = agent_.Path("step.pid");
  ASSERT_TRUE(PutJob("job: stubborn\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("trap '' TERM; echo $$ > " + pid_file + ".tmp; mv " + pid_file + ".tmp " +
                        pid_file + "; sleep 30") +
                     "}\n"));
  std::string id = StartRun("stubborn");
  ASSERT_TRUE(WaitForFile(pid_file));
  ASSERT_TRUE(api_->StopRun(id).ok());
  agent_.Kill();  // within the 1 s grace: the step lives on, ignoring the SIGTERM
  int step = std::stoi(agent_.dir().Read("step.pid"));
  ASSERT_EQ(kill(step, 0), 0) << "the step should have outlived the agent";
  ASSERT_TRUE(Restart());
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
  EXPECT_TRUE(WaitFor([&] { return kill(step, 0) != 0; }, kEventually))
      << "the step still runs";

  // The same, but the step ends while the agent is down: the stop is done, the run canceled.
  std::filesystem::remove(pid_file);
  std::string second = StartRun("stubborn");
  ASSERT_TRUE(WaitForFile(pid_file));
  ASSERT_TRUE(api_->StopRun(second).ok());
  agent_.Kill();
  step = std::stoi(agent_.dir().Read("step.pid"));
  kill(-step, SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return kill(step, 0) != 0; }, kEventually));
  ASSERT_TRUE(Restart());
  run = WaitForRun(*api_, second);
  EXPECT_EQ(run.value("status", ""), "canceled") << run.dump();
}

// Output that is not UTF-8 (binary bytes; a character cut at the capture limit) shows as
// U+FFFD: it made the run and its job's history answer 500 for ever (QA).
TEST_F(AgentTest, OutputThatIsNotUtf8LeavesTheRunReadable) {
  ASSERT_TRUE(StartConfig(Config(1)));
  ASSERT_TRUE(PutJob("job: binary\nsteps:\n  - {name: s, subsystem: process, run: " +
                     Sh("printf 'ok\\n\\377\\376 bad bytes\\n' >&2; exit 1") + "}\n"));
  std::string id = StartRun("binary");
  json run = WaitForRun(*api_, id);
  EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
  EXPECT_TRUE(Contains(run.value("message", ""), "\xEF\xBF\xBD")) << run.dump();
  auto history = api_->JobHistory("binary");
  ASSERT_TRUE(history.ok()) << history.status().ToString();
  EXPECT_TRUE(Contains((*history)["runs"][0]["steps"][0].value("stderr", ""), "bad bytes"))
      << history->dump();
}

// The data dir lets others pass (a proxy's user reaches its results folder) but not list it,
// and the database is the agent's alone; a package file removed under the agent is written
// back from its database when a step needs it (a deploy sends nothing: same sha256).
TEST_F(AgentTest, TheDataDirKeepsItsDatabasePrivateAndItsPackageFiles) {
  ASSERT_TRUE(StartConfig(Config(1)));
  namespace fs = std::filesystem;
  auto mode = [](const std::string& path) {
    return fs::status(path).permissions() & fs::perms::mask;
  };
  const std::string dir = agent_.data_dir();
  EXPECT_EQ(mode(dir), fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  EXPECT_EQ(mode(dir + "/agent.db"), fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_TRUE(PutPackage("tiny", "package: tiny\ntasks:\n  t: {type: process, run: [/bin/true]}\n"));
  ASSERT_TRUE(PutJob("job: tiny\nsteps:\n  - {name: s, subsystem: package, package: tiny}\n"));
  ASSERT_TRUE(fs::remove(dir + "/packages/tiny.yaml"));
  json run = Run("tiny", {});
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();
}

// A password in --catalog is in `ps` for as long as the agent runs: it says so, without
// printing it.
TEST_F(AgentTest, APasswordOnTheCommandLineIsWarnedAbout) {
  ASSERT_TRUE(agent_.Start({"--dev", "--listen", "127.0.0.1:0", "--data-dir", agent_.Path("data"),
                            "--catalog", "postgresql://u:Pw-On-Argv@127.0.0.1:1/db"}));
  EXPECT_TRUE(Contains(agent_.err(), "the --catalog URI holds a password")) << agent_.err();
  EXPECT_FALSE(Contains(agent_.err(), "Pw-On-Argv")) << agent_.err();
}

TEST_F(AgentTest, ARunWhoseStepDiedWithTheAgentEndsAbandonedAndQueuedRunsStillRun) {
  ASSERT_TRUE(StartConfig(Config(1)));
  const std::string pid_file = agent_.Path("step.pid");
  ASSERT_TRUE(PutJob(
      "job: doomed\nsteps:\n  - {name: s, subsystem: process, run: " +
      Sh("echo $$ > " + pid_file + ".tmp; mv " + pid_file + ".tmp " + pid_file + "; sleep 30") +
      "}\n"));
  ASSERT_TRUE(PutJob("job: later\nmax_concurrent_runs: 2\n"
                     "steps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  std::string doomed = StartRun("doomed");
  auto later = api_->StartJob("later", {});
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->status, "queued");
  client::StartRequest with_secret;
  with_secret.params["pw"] = "s3cr3t-queued";
  with_secret.secrets = {"s3cr3t-queued"};
  auto secretive = api_->StartJob("later", with_secret);
  ASSERT_TRUE(secretive.ok()) << secretive.status().ToString();
  ASSERT_TRUE(WaitForFile(pid_file));
  int step_group = std::stoi(agent_.dir().Read("step.pid"));
  ASSERT_GT(step_group, 1);

  agent_.Kill();
  ASSERT_EQ(kill(-step_group, SIGKILL), 0);
  ASSERT_TRUE(Restart());
  json run = WaitForRun(*api_, doomed);
  EXPECT_EQ(run.value("status", ""), "abandoned") << run.dump();
  EXPECT_FALSE(run.value("message", "").empty());
  ASSERT_EQ(run["steps"].size(), 1u);
  EXPECT_EQ(run["steps"][0]["status"], "abandoned") << run.dump();
  EXPECT_FALSE(run["steps"][0]["ended_at"].is_null()) << run.dump();
  // The run that waited in the queue when the agent died runs after the restart.
  json queued = WaitForRun(*api_, later->run_id);
  EXPECT_EQ(queued.value("status", ""), "succeeded") << queued.dump();
  // ...but not one whose secret was in the dead agent's memory only; it says why.
  json lost = WaitForRun(*api_, secretive->run_id);
  EXPECT_EQ(lost.value("status", ""), "abandoned") << lost.dump();
  EXPECT_TRUE(Contains(lost.value("message", ""), "secrets in the run's params")) << lost.dump();
  HttpReply metrics = agent_.Http("GET", "/metrics");
  EXPECT_TRUE(Contains(metrics.body, "fanout_agent_runs_total{status=\"abandoned\"} 2"))
      << metrics.body;
}

// A parent's run queued when the agent stopped, on an agent down longer than parents wait for
// it (5 s): the parent has placed that child elsewhere, so the run ends abandoned rather than
// start a second time (QA: drained, restarted 9 s later, 5 of 6 children ran twice). A run
// started by hand still runs, as does a parent's on an agent back within the 5 s.
TEST_F(AgentTest, AParentsQueuedRunIsNotStartedAfterTheParentGaveTheAgentUp) {
  ASSERT_TRUE(StartConfig(Config(1)));
  // Holds the one slot long enough for the starts below to queue; drains end it.
  ASSERT_TRUE(PutJob("job: hold\nsteps:\n  - {name: s, subsystem: process, run: [sleep, '1']}\n"));
  ASSERT_TRUE(PutJob("job: later\nmax_concurrent_runs: 4\n"
                     "steps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  StartRun("hold");
  client::StartRequest from_parent;
  from_parent.parent_execution_id = "01a20000-0000-7000-8000-000000000001";
  from_parent.idempotency_key = "01a20000-0000-7000-8000-000000000001:load[1]/child:1";
  auto given_up = api_->StartJob("later", from_parent);
  ASSERT_TRUE(given_up.ok()) << given_up.status().ToString();
  auto by_hand = api_->StartJob("later", {});
  ASSERT_TRUE(by_hand.ok()) << by_hand.status().ToString();
  EXPECT_EQ(given_up->status, "queued");

  ASSERT_EQ(agent_.Terminate(), 0);  // the running step finishes; the queue is kept
  // Down for a minute, as its heartbeat file says.
  const std::string alive = agent_.data_dir() + "/alive";
  ASSERT_TRUE(std::filesystem::exists(alive));
  std::filesystem::last_write_time(
      alive, std::filesystem::file_time_type::clock::now() - std::chrono::seconds(60));
  ASSERT_TRUE(Restart());
  json ended = WaitForRun(*api_, given_up->run_id);
  EXPECT_EQ(ended.value("status", ""), "abandoned") << ended.dump();
  EXPECT_TRUE(Contains(ended.value("message", ""), "as long as a parent waits for it (5 s)"))
      << ended.dump();
  EXPECT_TRUE(ended["steps"].empty()) << "never started: " << ended.dump();
  json ran = WaitForRun(*api_, by_hand->run_id);
  EXPECT_EQ(ran.value("status", ""), "succeeded") << ran.dump();

  // Back at once: a parent's queued run runs. (The heartbeat file is set to now, so that a
  // slow machine's restart does not count as a long downtime.)
  StartRun("hold");
  from_parent.idempotency_key += "#2";
  auto followed = api_->StartJob("later", from_parent);
  ASSERT_TRUE(followed.ok()) << followed.status().ToString();
  EXPECT_EQ(followed->status, "queued");
  ASSERT_EQ(agent_.Terminate(), 0);
  std::filesystem::last_write_time(alive, std::filesystem::file_time_type::clock::now());
  ASSERT_TRUE(Restart());
  json kept = WaitForRun(*api_, followed->run_id);
  EXPECT_EQ(kept.value("status", ""), "succeeded") << kept.dump();
}

// --- TLS -----------------------------------------------------------------------------------------

// Runs one openssl command in `dir`; false (with its output in the failure) when it fails.
bool OpenSsl(const std::string& dir, const std::string& args) {
  std::string command = "cd '" + dir + "' && openssl " + args + " >openssl.log 2>&1";
  if (std::system(command.c_str()) == 0) return true;
  ADD_FAILURE() << "openssl " << args << " failed:\n" << ReadText(dir + "/openssl.log");
  return false;
}

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed, and a
// second ("rogue") CA with its own client certificate.
bool MakeCertificates(const std::string& dir) {
  std::ofstream(dir + "/ossl.cnf") << "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n"
                                      "[ca_ext]\nbasicConstraints = critical,CA:TRUE\n"
                                      "keyUsage = critical,keyCertSign,cRLSign\n"
                                      "subjectKeyIdentifier = hash\n"
                                      "[server_ext]\nbasicConstraints = CA:FALSE\n"
                                      "subjectAltName = IP:127.0.0.1,DNS:localhost\n"
                                      "extendedKeyUsage = serverAuth\n"
                                      "[client_ext]\nbasicConstraints = CA:FALSE\n"
                                      "extendedKeyUsage = clientAuth\n";
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  auto ca = [&](const std::string& name) {
    return OpenSsl(dir, "req -x509 -config ossl.cnf -extensions ca_ext " + key + " -keyout " +
                            name + ".key -out " + name + ".crt -days 2 -subj /CN=" + name);
  };
  auto leaf = [&](const std::string& name, const std::string& ca_name, const std::string& cn,
                  const std::string& ext) {
    return OpenSsl(dir, "req -new -config ossl.cnf " + key + " -keyout " + name + ".key -out " +
                            name + ".csr -subj /CN=" + cn) &&
           OpenSsl(dir, "x509 -req -in " + name + ".csr -CA " + ca_name + ".crt -CAkey " + ca_name +
                            ".key -CAcreateserial -out " + name +
                            ".crt -days 2 -extfile ossl.cnf -extensions " + ext);
  };
  return ca("ca") && ca("rogue-ca") && leaf("server", "ca", "127.0.0.1", "server_ext") &&
         leaf("client", "ca", "fanout-e2e-client", "client_ext") &&
         leaf("rogue", "rogue-ca", "fanout-e2e-rogue", "client_ext");
}

TEST_F(AgentTest, MutualTlsServesHttpsOnlyToClientsWithACertificateFromItsCa) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl";
  const std::string dir = agent_.dir().path();
  ASSERT_TRUE(MakeCertificates(dir));
  // Mutual TLS alone is enough credentials (no token).
  agent_.set_tls_files(dir + "/ca.crt", dir + "/client.crt", dir + "/client.key");
  ASSERT_TRUE(
      agent_.StartWithConfig("name: tls\ndata_dir: data\nslots: 1\ntls: {cert: server.crt, key: "
                             "server.key, client_ca: ca.crt}\n"));
  api_ = agent_.Client();
  EXPECT_TRUE(agent_.url().starts_with("https://127.0.0.1:")) << agent_.url();

  auto status = api_->Status();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ((*status)["name"], "tls");
  ASSERT_TRUE(PutJob("job: secure\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true]}\n"));
  EXPECT_EQ(Run("secure").value("status", ""), "succeeded");
  // A parent's start, which brings the run's end in the same answer, works over TLS too.
  auto waited = api_->StartJob("secure", {}, std::chrono::seconds(5));
  ASSERT_TRUE(waited.ok()) << waited.status().ToString();
  ASSERT_TRUE(waited->first_poll.has_value() && waited->first_poll->ok());
  EXPECT_EQ((**waited->first_poll).value("status", ""), "succeeded");

  auto refused = [&](const std::string& url, const std::string& cert, const std::string& key) {
    client::AgentEndpoint endpoint;
    endpoint.url = url;
    if (url.starts_with("https")) endpoint.ca_file = dir + "/ca.crt";
    endpoint.cert_file = cert;
    endpoint.key_file = key;
    client::AgentClient other(endpoint);
    auto health = other.Health();
    auto started = other.StartJob("secure", {});
    return !health.ok() && !started.ok();
  };
  EXPECT_TRUE(refused(agent_.url(), "", "")) << "a client without a certificate was served";
  EXPECT_TRUE(refused(agent_.url(), dir + "/rogue.crt", dir + "/rogue.key"))
      << "a certificate from another CA was accepted";
  std::string plain = "http://" + agent_.url().substr(8);
  EXPECT_TRUE(refused(plain, "", "")) << "plain HTTP was served";
  EXPECT_EQ(History("secure").size(), 2u) << "a refused client started a run";

  // The CLI speaks mutual TLS too.
  CommandResult list = RunFanout({"job", "list", "--agent", agent_.url(), "--ca", dir + "/ca.crt",
                                  "--cert", dir + "/client.crt", "--key", dir + "/client.key"},
                                 dir);
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(Contains(list.out, "secure")) << list.out;
  CommandResult no_cert =
      RunFanout({"job", "list", "--agent", agent_.url(), "--ca", dir + "/ca.crt"}, dir);
  EXPECT_EQ(no_cert.exit_code, 7) << no_cert.err;
}

// httplib only said that the TLS files did not load, and an expired certificate loaded fine,
// then failed every client's check: the agent says why, before it changes anything.
TEST(AgentTlsFilesTest, BadTlsFilesSayWhyAtStart) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl";
  ScratchDir dir;
  const std::string d = dir.path();
  ASSERT_TRUE(MakeCertificates(d));
  // A server certificate that expired in 2024, signed by the same CA.
  dir.Write("index.txt", "");
  dir.Write("serial", "01\n");
  dir.Write("ca.cnf", "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\nnew_certs_dir = .\n"
                      "serial = serial\ndefault_md = sha256\npolicy = p\n[p]\n"
                      "commonName = supplied\n");
  ASSERT_TRUE(OpenSsl(d, "ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in server.csr "
                         "-out expired.crt -startdate 20240101000000Z -enddate 20240201000000Z "
                         "-notext"));
  auto start = [&](const std::string& tls) {
    dir.Write("agent.yaml", "name: t\nlisten: 127.0.0.1:0\ndata_dir: data\ntls: " + tls + "\n");
    return RunFanout({"agent", "--config", "agent.yaml"}, d);
  };
  CommandResult expired = start("{cert: expired.crt, key: server.key}");
  EXPECT_EQ(expired.exit_code, 1) << expired.err;
  EXPECT_TRUE(Contains(expired.err, "tls.cert " + d + "/expired.crt expired on 2024-02-01; every "
                                    "peer would refuse it: renew it"))
      << expired.err;
  // A client with an expired certificate is told so before it connects (the agent's refusal
  // reached it as a broken connection).
  auto list_with = [&](const std::string& cert, const std::string& key) {
    return RunFanout({"job", "list", "--agent", "https://127.0.0.1:1", "--ca", "ca.crt", "--cert",
                      cert, "--key", key}, d);
  };
  CommandResult client = list_with("expired.crt", "server.key");
  EXPECT_NE(client.exit_code, 0);
  EXPECT_TRUE(Contains(client.err, "the client certificate expired.crt expired on 2024-02-01"))
      << client.err;
  // A client key with a passphrase had OpenSSL ask for it on the terminal and wait (QA); a key
  // that is not the certificate's was "cannot load" with two guesses.
  ASSERT_TRUE(OpenSsl(d, "pkey -in client.key -aes256 -passout pass:p4ss -out locked.key"));
  CommandResult locked = list_with("client.crt", "locked.key");
  EXPECT_EQ(locked.exit_code, 6) << locked.err;
  EXPECT_TRUE(Contains(locked.err, "the client key locked.key holds no PEM private key (without "
                                   "a passphrase)"))
      << locked.err;
  EXPECT_FALSE(Contains(locked.err, "pass phrase")) << locked.err;
  // A parent's task says it once, naming the agent once.
  dir.Write("parent.yaml", "package: parent\nconnections:\n  a: {type: agent, url: "
                           "\"https://127.0.0.1:1\", ca: ca.crt, cert: client.crt, key: "
                           "locked.key}\ntasks:\n  j: {type: agent-job, connection: a, job: x}\n");
  CommandResult parent = RunFanout({"run", "parent.yaml", "--catalog", "sqlite:p.db"}, d);
  EXPECT_EQ(parent.exit_code, 1) << parent.err;
  EXPECT_TRUE(Contains(parent.err, "no agent can take job x: a (https://127.0.0.1:1): the client "
                                   "key locked.key holds no PEM private key"))
      << parent.err;
  CommandResult wrong_key = list_with("client.crt", "server.key");
  EXPECT_EQ(wrong_key.exit_code, 6) << wrong_key.err;
  EXPECT_TRUE(Contains(wrong_key.err, "the client key server.key is not the key of the client "
                                      "certificate client.crt"))
      << wrong_key.err;
  CommandResult mismatch = start("{cert: server.crt, key: client.key}");
  EXPECT_EQ(mismatch.exit_code, 1) << mismatch.err;
  EXPECT_TRUE(Contains(mismatch.err, "tls.key " + d + "/client.key is not the key of tls.cert " +
                                         d + "/server.crt"))
      << mismatch.err;
  CommandResult missing = start("{cert: nosuch.crt, key: server.key}");
  EXPECT_EQ(missing.exit_code, 1) << missing.err;
  EXPECT_TRUE(Contains(missing.err, "cannot read tls.cert " + d + "/nosuch.crt: No such file"))
      << missing.err;
  EXPECT_FALSE(std::filesystem::exists(d + "/data")) << "the agent changed its data_dir first";
}

// --- The CLI -----------------------------------------------------------------------------------

// `fanout job start --secret-param NAME=FILE`: the value comes from a file, so `ps` does not
// show it, and goes as a secret: the step gets it, the history shows ***.
TEST_F(AgentTest, ASecretParamComesFromAFileAndIsMasked) {
  ASSERT_TRUE(StartDev(1));
  const ScratchDir& d = agent_.dir();
  d.Write("say.yaml", "job: say\nsteps:\n  - {name: s, subsystem: process, run: " +
                          Sh("test \"$FANOUT_PARAM_pw\" = From-A-File-99 && echo pw=$FANOUT_PARAM_pw") +
                          "}\n");
  d.Write("pw.txt", "From-A-File-99\n");
  ASSERT_EQ(Job({"create", "say.yaml"}).exit_code, 0);
  CommandResult started = Job({"start", "say", "--secret-param", "pw=pw.txt", "--wait"});
  EXPECT_EQ(started.exit_code, 0) << started.out << started.err;
  CommandResult history = Job({"history", "say", "--json"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_FALSE(Contains(history.out, "From-A-File-99")) << history.out;
  EXPECT_TRUE(Contains(history.out, "pw=***")) << history.out;
  CommandResult both = Job({"start", "say", "--param", "pw=plain", "--secret-param", "pw=pw.txt"});
  EXPECT_EQ(both.exit_code, 6) << both.err;
  EXPECT_TRUE(Contains(both.err, "pw is given by both --param and --secret-param")) << both.err;
  EXPECT_EQ(Job({"start", "say", "--secret-param", "pw=missing.txt"}).exit_code, 4);
  EXPECT_EQ(Job({"start", "say", "--secret-param", "pw"}).exit_code, 6);
}

// Ctrl-C ends `job start --wait`, not the run, and says how to wait again or stop it (it died
// of the signal without a word).
TEST_F(AgentTest, CtrlCEndsAWaitButNotTheRun) {
  ASSERT_TRUE(StartDev(1));
  const ScratchDir& d = agent_.dir();
  int pid = StartAHeldWait({});
  ASSERT_GT(pid, 0);
  std::string run_id;
  ASSERT_TRUE(WaitFor(
      [&] {
        run_id = d.Read("fanout.out");
        return run_id.ends_with('\n');
      },
      kEventually));
  run_id.pop_back();
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 130);
  std::string err = d.Read("fanout.err");
  EXPECT_TRUE(Contains(err, "stopped waiting; run " + run_id + " goes on. `fanout job wait " +
                                run_id + "` waits again"))
      << err;
  auto run = api_->GetRun(run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->value("status", ""), "running");
  // A --timeout in whole seconds, a fraction rounded up, and said as waited: it said "100.0 ms"
  // after a second (QA).
  CommandResult timed_out = Job({"wait", run_id, "--timeout", "0.2s"});
  EXPECT_EQ(timed_out.exit_code, 2) << timed_out.err;
  EXPECT_TRUE(Contains(timed_out.err, "after --timeout 1")) << timed_out.err;
  OpenGate();
  EXPECT_EQ(Job({"wait", run_id}).exit_code, 0);
}

// QA: `job start --wait` (and `job wait`) gave up at once when the agent was restarted, with a
// hint to use https://, though the run went on. An agent that answered is given 5 s to come
// back, as a parent gives it, and the wait goes on there.
TEST_F(AgentTest, AWaitGoesOnAcrossAnAgentRestart) {
  ASSERT_TRUE(StartDev(1));
  int pid = StartAHeldWait({});
  ASSERT_GT(pid, 0);
  std::string run_id;
  ASSERT_TRUE(WaitFor(
      [&] {
        run_id = agent_.dir().Read("fanout.out");
        return run_id.ends_with('\n');
      },
      kEventually));
  run_id.pop_back();
  agent_.Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(agent_.Restart(/*same_port=*/true));
  OpenGate();
  const int code = WaitFanout(pid, kEventually);
  std::string err = agent_.dir().Read("fanout.err");
  auto run = agent_.Client()->GetRun(run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  const std::string status = run->value("status", "");
  EXPECT_TRUE(client::IsFinalRunStatus(status)) << run->dump();
  EXPECT_EQ(code, status == "succeeded" ? 0 : 1) << status << "\n" << err;
  EXPECT_TRUE(Contains(err, "waiting up to 5 s for it to come back")) << err;
  EXPECT_TRUE(Contains(err, "answers again")) << err;
  EXPECT_FALSE(Contains(err, "use https://")) << err;
}

// ... and with --json, stdout gets the run as last known, so that a script learns its id (it
// got nothing).
TEST_F(AgentTest, CtrlCOfAJsonWaitPrintsTheRunAsKnown) {
  ASSERT_TRUE(StartDev(1));
  const ScratchDir& d = agent_.dir();
  int pid = StartAHeldWait({"--json"});
  ASSERT_GT(pid, 0);
  // The step runs: the start's answer comes 10 ms after it at most; this leaves it a second.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  kill(pid, SIGINT);
  EXPECT_EQ(WaitFanout(pid, kEventually), 130);
  json printed = json::parse(d.Read("fanout.out"), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(printed.is_object()) << d.Read("fanout.out");
  const std::string run_id = printed.value("run_id", "");
  EXPECT_EQ(printed.value("status", ""), "running") << printed.dump();
  ASSERT_FALSE(run_id.empty()) << printed.dump();
  EXPECT_TRUE(Contains(d.Read("fanout.err"), "stopped waiting; run " + run_id + " goes on"))
      << d.Read("fanout.err");
  OpenGate();
  EXPECT_EQ(Job({"wait", run_id}).exit_code, 0);
}

TEST_F(AgentTest, JobCommandsDriveOneAgent) {
  ASSERT_TRUE(StartDev(2));
  const ScratchDir& d = agent_.dir();
  const std::string cwd = d.path();
  d.Write("ok.yaml", "job: ok\nsteps:\n  - {name: hi, subsystem: process, run: [/bin/echo, hi]}\n");
  d.Write("fail.yaml",
          "job: fail\nsteps:\n  - {name: s, subsystem: process, run: " + Sh("exit 2") + "}\n");
  d.Write("hold.yaml",
          "job: hold\nsteps:\n  - {name: s, subsystem: process, run: " + GateStep() + "}\n");
  d.Write("bad.yaml", "job: bad\nsteps:\n  - {name: s, subsystem: telepathy}\n");

  CommandResult created = Job({"create", "ok.yaml"});
  EXPECT_EQ(created.exit_code, 0) << created.err;
  EXPECT_TRUE(Contains(created.out, "Job ok created")) << created.out;
  CommandResult unchanged = Job({"create", "ok.yaml"});
  EXPECT_EQ(unchanged.exit_code, 0) << unchanged.err;
  EXPECT_TRUE(Contains(unchanged.out, "Job ok unchanged")) << unchanged.out;
  EXPECT_EQ(Job({"create", "fail.yaml"}).exit_code, 0);
  EXPECT_EQ(Job({"create", "hold.yaml"}).exit_code, 0);
  CommandResult bad = Job({"create", "bad.yaml"});
  EXPECT_EQ(bad.exit_code, 5);
  EXPECT_TRUE(Contains(bad.err, "unknown subsystem 'telepathy'")) << bad.err;
  EXPECT_EQ(Job({"create", "missing.yaml"}).exit_code, 4);
  // A package file is said to be one, not listed as a job lacking every key (QA).
  d.Write("pkg.yaml", "package: pkg\ntasks:\n  t: {type: process, run: [/bin/true]}\n");
  CommandResult package = Job({"create", "pkg.yaml"});
  EXPECT_EQ(package.exit_code, 5);
  EXPECT_EQ(package.err, "fanout: pkg.yaml is a package file (it has `package:`), not a job: "
                         "deploy it with `fanout deploy pkg.yaml --agent URL`, or run it here "
                         "with `fanout run pkg.yaml`\n");
  CommandResult folder = Job({"create", "."});  // it had said "job file . not found"
  EXPECT_EQ(folder.exit_code, 4);
  EXPECT_TRUE(Contains(folder.err, "is a directory")) << folder.err;
  // QA: a job whose package is not deployed here was taken without a word; it is still taken
  // (a deploy may send the package next), with a warning.
  d.Write("unready.yaml",
          "job: unready\nsteps:\n  - {name: load, subsystem: package, package: absent}\n");
  CommandResult unready = Job({"create", "unready.yaml"});
  EXPECT_EQ(unready.exit_code, 0) << unready.err;
  EXPECT_TRUE(Contains(unready.err, "fanout job create: warning: step load runs package absent, "
                                    "which is not deployed on agent "))
      << unready.err;
  json unready_json = json::parse(Job({"create", "unready.yaml", "--json"}).out, nullptr, false);
  EXPECT_EQ(unready_json["warnings"].size(), 1u) << unready_json.dump();
  ASSERT_TRUE(
      PutPackage("absent", "package: absent\ntasks:\n  t: {type: process, run: [/bin/true]}\n"));
  CommandResult ready = Job({"create", "unready.yaml"});
  EXPECT_EQ(ready.exit_code, 0) << ready.err;
  EXPECT_EQ(ready.err, "") << "its package is there now";
  // So is a step whose proxy the agent does not define; a proxy name that is not a name (a path)
  // is refused (security QA: both had been taken without a word).
  d.Write("runas.yaml", "job: runas\nsteps:\n  - {name: s, subsystem: process, run: [/bin/true], "
                        "proxy: etl}\n");
  CommandResult runas = Job({"create", "runas.yaml"});
  EXPECT_EQ(runas.exit_code, 0) << runas.err;
  EXPECT_TRUE(Contains(runas.err, "warning: step s runs as proxy etl, which agent dev does not "
                                  "define (it has no proxies): runs of job runas fail until its "
                                  "config does"))
      << runas.err;
  d.Write("escape.yaml", "job: escape\nsteps:\n  - {name: s, subsystem: process, "
                         "run: [/bin/true], proxy: ../root}\n");
  CommandResult escape = Job({"create", "escape.yaml"});
  EXPECT_EQ(escape.exit_code, 5) << escape.err;
  EXPECT_TRUE(Contains(escape.err, "proxy name '../root' in step 's' must match")) << escape.err;

  CommandResult list = Job({"list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(list.out.starts_with("NAME")) << list.out;
  for (const char* name : {"ok", "fail", "hold"}) EXPECT_TRUE(Contains(list.out, name)) << list.out;
  CommandResult show = Job({"show", "ok"});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_TRUE(Contains(show.out, "/bin/echo hi")) << show.out;
  // QA: show left out success codes and timeouts; intervals read "5000ms".
  d.Write("codes.yaml", "job: codes\nsteps:\n  - {name: a, subsystem: process, run: [/bin/true], "
                        "success_codes: [0, 3], timeout: 90s, retries: 2, retry_interval: 5s}\n");
  ASSERT_EQ(Job({"create", "codes.yaml"}).exit_code, 0);
  const std::vector<std::string> codes = Lines(Job({"show", "codes"}).out);
  ASSERT_EQ(codes.size(), 3u);
  EXPECT_TRUE(Contains(codes[1], "TIMEOUT")) << codes[1];
  for (const char* said : {"/bin/true (exit 0, 3 succeed)", "2 every 5.00 s", "1 m 30 s"}) {
    EXPECT_TRUE(Contains(codes[2], said)) << said << " in " << codes[2];
  }
  EXPECT_EQ(Job({"show", "nosuch"}).exit_code, 4);

  // start --wait exits like `fanout run`; the run id comes first on stdout.
  CommandResult waited = Job({"start", "ok", "--wait"});
  EXPECT_EQ(waited.exit_code, 0) << waited.err;
  std::string first_id = Lines(waited.out).empty() ? "" : Lines(waited.out)[0];
  EXPECT_TRUE(IsExecutionId(first_id)) << waited.out;
  EXPECT_TRUE(Contains(waited.out, "succeeded")) << waited.out;
  CommandResult failed = Job({"start", "fail", "--wait"});
  EXPECT_EQ(failed.exit_code, 1) << failed.err;
  EXPECT_TRUE(Contains(failed.err, "exit code 2")) << failed.err;

  CommandResult started = Job({"start", "ok"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string id = started.out.substr(0, started.out.find('\n'));
  EXPECT_EQ(Job({"wait", id}).exit_code, 0);
  CommandResult status = Job({"status", id});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_TRUE(Contains(status.out, "Run " + id + ": succeeded")) << status.out;
  CommandResult as_json = Job({"status", id, "--json"});
  EXPECT_EQ(as_json.exit_code, 0);
  json parsed = json::parse(as_json.out, nullptr, false);
  EXPECT_EQ(parsed.value("run_id", ""), id) << as_json.out;
  EXPECT_EQ(Job({"status", "no-such-run"}).exit_code, 4);

  // Stop: the waiter exits 3 (canceled); a second start while it runs is refused (409 -> 7).
  CommandResult held = Job({"start", "hold"});
  ASSERT_EQ(held.exit_code, 0) << held.err;
  std::string hold_id = held.out.substr(0, held.out.find('\n'));
  ASSERT_TRUE(WaitForFile(agent_.Path("started")));
  CommandResult busy = Job({"start", "hold"});
  EXPECT_EQ(busy.exit_code, 7);
  EXPECT_TRUE(Contains(busy.err, "already running")) << busy.err;
  CommandResult stop = Job({"stop", hold_id});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(Job({"wait", hold_id}).exit_code, 3);

  CommandResult history = Job({"history", "ok"});
  EXPECT_EQ(history.exit_code, 0) << history.err;
  EXPECT_TRUE(Contains(history.out, first_id)) << history.out;
  EXPECT_TRUE(Contains(history.out, id)) << history.out;

  // Delete (QA: only the API's DELETE could): the history stays.
  CommandResult deleted = Job({"delete", "ok"});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_TRUE(deleted.out.starts_with("Job ok deleted from ")) << deleted.out;
  EXPECT_EQ(Job({"show", "ok"}).exit_code, 4);
  EXPECT_EQ(Job({"delete", "ok"}).exit_code, 4);
  EXPECT_TRUE(Contains(Job({"history", "ok"}).out, id)) << "the history went with the job";

  // Credentials and reachability.
  CommandResult no_token = RunFanout({"job", "list", "--agent", agent_.url()}, cwd);
  EXPECT_EQ(no_token.exit_code, 7);
  EXPECT_TRUE(Contains(no_token.err, "401")) << no_token.err;
  CommandResult unreachable = RunFanout({"job", "list", "--agent", "http://127.0.0.1:1"}, cwd);
  EXPECT_EQ(unreachable.exit_code, 7);
  EXPECT_EQ(RunFanout({"job", "list"}, cwd).exit_code, 6);
  CommandResult no_token_file = RunFanout(
      {"job", "list", "--agent", agent_.url(), "--token-file", agent_.Path("no-such-token")}, cwd);
  EXPECT_EQ(no_token_file.exit_code, 4);  // "4 job/run/file not found" in the help
  EXPECT_TRUE(Contains(no_token_file.err, "no-such-token: no such file")) << no_token_file.err;
}

// --dev's temporary data_dir goes when the agent stops: each try-out had left one in /tmp.
TEST(AgentDevTest, TheTemporaryDataDirIsRemovedWhenTheAgentStops) {
  ScratchDir dir;
  int pid = StartFanout({"agent", "--dev"}, dir.path());
  std::string data_dir;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::smatch m;
        std::string out = dir.Read("fanout.out");
        if (!std::regex_search(out, m, std::regex("data_dir: (/tmp/fanout-agent\\.\\w+)\n"))) {
          return false;
        }
        data_dir = m[1];
        return true;
      },
      kEventually))
      << dir.Read("fanout.out") << dir.Read("fanout.err");
  EXPECT_TRUE(std::filesystem::is_directory(data_dir));
  kill(pid, SIGTERM);
  EXPECT_EQ(WaitFanout(pid, kEventually), 0) << dir.Read("fanout.err");
  EXPECT_FALSE(std::filesystem::exists(data_dir));
  EXPECT_NE(dir.Read("fanout.err").find("removed the temporary data_dir " + data_dir),
            std::string::npos)
      << dir.Read("fanout.err");
}

TEST_F(AgentTest, DeployPushesToEveryAgentAndIsIdempotent) {
  ASSERT_TRUE(StartConfig(Config(1)));
  AgentProcess second;
  ASSERT_TRUE(second.StartWithConfig(Config(1), kToken));
  const ScratchDir& d = agent_.dir();
  d.Write("pkg.yaml", "package: pkg\ntasks:\n  a: {type: process, run: [/bin/true]}\n");
  d.Write("job.yaml", "job: deployed\nsteps:\n  - {name: s, subsystem: package, package: pkg}\n");
  const std::vector<std::string> agents = {"--agent",    agent_.url(),   "--agent",
                                           second.url(), "--token-file", agent_.Path("token")};
  auto deploy = [&](std::vector<std::string> files) {
    std::vector<std::string> args = {"deploy"};
    args.insert(args.end(), files.begin(), files.end());
    args.insert(args.end(), agents.begin(), agents.end());
    return RunFanout(args, d.path());
  };

  CommandResult first = deploy({"job.yaml", "pkg.yaml"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.err, "") << "the package goes before the job that runs it";
  std::vector<std::string> lines = Lines(first.out);
  ASSERT_EQ(lines.size(), 2u) << first.out;
  EXPECT_EQ(lines[0], agent_.url() + " e2e: 1 package (1 new), 1 job (1 new)");
  EXPECT_EQ(lines[1], second.url() + " e2e: 1 package (1 new), 1 job (1 new)");

  CommandResult again = deploy({"job.yaml", "pkg.yaml"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  lines = Lines(again.out);
  ASSERT_EQ(lines.size(), 2u) << again.out;
  for (const std::string& line : lines) {
    EXPECT_TRUE(Contains(line, ": 1 package (1 unchanged), 1 job (1 unchanged)")) << line;
  }
  auto package = api_->GetPackage("pkg");
  ASSERT_TRUE(package.ok());
  EXPECT_EQ(package->version, 1);

  d.Write("pkg.yaml", "package: pkg\ntasks:\n  b: {type: process, run: [/bin/true]}\n");
  CommandResult updated = deploy({"pkg.yaml", "job.yaml"});
  ASSERT_EQ(updated.exit_code, 0) << updated.err;
  EXPECT_TRUE(Contains(updated.out, "1 package (1 updated), 1 job (1 unchanged)")) << updated.out;

  // An invalid file: nothing is deployed anywhere.
  d.Write("broken.yaml", "package: broken\ntasks:\n  a: {type: nope}\n");
  CommandResult invalid = deploy({"broken.yaml", "pkg.yaml"});
  EXPECT_EQ(invalid.exit_code, 5);
  EXPECT_TRUE(Contains(invalid.err, "nothing was deployed")) << invalid.err;
  EXPECT_EQ(api_->GetPackage("broken").status().code(), Code::kNotFound);
  // A job file is checked as the agent checks it, before anything is sent.
  d.Write("broken.job.yaml", "job: broken\nsteps:\n  - {name: s, subsystem: telepathy}\n");
  CommandResult invalid_job = deploy({"pkg.yaml", "broken.job.yaml"});
  EXPECT_EQ(invalid_job.exit_code, 5);
  EXPECT_TRUE(Contains(invalid_job.err,
                       "broken.job.yaml:3:26: error: unknown subsystem 'telepathy'"))
      << invalid_job.err;
  EXPECT_TRUE(Contains(invalid_job.err, "nothing was deployed")) << invalid_job.err;
  EXPECT_EQ(api_->GetJob("broken").status().code(), Code::kNotFound);

  // The deployed job runs its deployed package.
  json run = Run("deployed");
  EXPECT_EQ(run.value("status", ""), "succeeded") << run.dump();

  // A job whose package is on no agent is deployed, with a warning for each agent.
  d.Write("orphan.yaml",
          "job: orphan\nsteps:\n  - {name: s, subsystem: package, package: nowhere}\n");
  CommandResult orphan = deploy({"orphan.yaml"});
  EXPECT_EQ(orphan.exit_code, 0) << orphan.err;
  EXPECT_EQ(Lines(orphan.err).size(), 2u) << orphan.err;
  EXPECT_TRUE(Contains(orphan.err, "fanout deploy: warning: step s runs package nowhere, which is "
                                   "not deployed on agent e2e: runs of job orphan fail until it "
                                   "is (fanout deploy)"))
      << orphan.err;

  // One agent down: the other is still done, the exit code says an agent failed.
  ASSERT_EQ(second.Terminate(), 0);
  d.Write("pkg.yaml", "package: pkg\ntasks:\n  c: {type: process, run: [/bin/true]}\n");
  CommandResult partial = deploy({"pkg.yaml"});
  EXPECT_EQ(partial.exit_code, 7);
  EXPECT_TRUE(Contains(partial.out, agent_.url() + " e2e: 1 package (1 updated)")) << partial.out;
  EXPECT_TRUE(Contains(partial.err, second.url())) << partial.err;
}

}  // namespace
}  // namespace fanout::testing
