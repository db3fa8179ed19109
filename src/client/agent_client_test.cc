// Tests of AgentClient against an in-process fake agent (an httplib::Server on a loopback port
// chosen by the kernel): request shapes, auth header, JSON decoding and error mapping.
#include "client/agent_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

namespace fanout::client {
namespace {

using nlohmann::json;

// A fake agent: register routes on `server`, then Start(). Stops and joins in the destructor.
class FakeAgent {
 public:
  httplib::Server server;
  std::mutex mu;  // guards what handlers record for the test to check

  ~FakeAgent() {
    if (!thread_.joinable()) return;
    // stop() only takes effect once the accept loop runs.
    while (!server.is_running()) std::this_thread::yield();
    server.stop();
    thread_.join();
  }

  // Binds to a free port on `host` and serves from a thread; false when the host cannot be
  // bound (no IPv6 here). Connections made before the accept loop starts wait in the backlog.
  bool Start(const std::string& host = "127.0.0.1") {
    port_ = server.bind_to_any_port(host);
    if (port_ <= 0) return false;
    host_ = host;
    thread_ = std::thread([this] { server.listen_after_bind(); });
    return true;
  }

  std::string url() const {
    return host_.find(':') == std::string::npos
               ? "http://" + host_ + ":" + std::to_string(port_)
               : "http://[" + host_ + "]:" + std::to_string(port_);
  }

 private:
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& error,
                const std::string& detail) {
  Reply(res, status, json{{"error", error}, {"detail", detail}});
}

AgentEndpoint Endpoint(const std::string& url, const std::string& token = "") {
  AgentEndpoint endpoint;
  endpoint.url = url;
  endpoint.token = token;
  return endpoint;
}

// A loopback port with nothing listening: bound, read, closed.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// A token must be one word of printable ASCII; the message says what is in the way (QA: a
// byte 0xff was called "a space or control character").
TEST(AgentClientTest, CheckTokenSaysWhatIsInTheWay) {
  EXPECT_TRUE(CheckToken("abc-123", "the token").ok());
  EXPECT_NE(CheckToken("ab\xff" "cd", "the token").message().find("a character that is not ASCII "
                                                               "at character 3"),
            std::string::npos);
  // A file saved by an editor as "UTF-8 with BOM" (security QA: "not ASCII at character 1").
  EXPECT_NE(CheckToken("\xEF\xBB\xBF" "abcd", "the token").message().find("a byte order mark"),
            std::string::npos);
  EXPECT_NE(CheckToken("ab cd", "the token").message().find("a space or control character"),
            std::string::npos);
  EXPECT_NE(CheckToken("ab\ncd", "the token").message().find("more than one line"),
            std::string::npos);
}

TEST(AgentClientTest, HealthParsesJson) {
  FakeAgent agent;
  agent.server.Get("/v1/health", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"status", "ok"}, {"name", "srv1"}, {"version", "0.1.0"}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url() + "/"));
  EXPECT_EQ(client.url(), agent.url());
  auto health = client.Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ((*health)["name"], "srv1");
}

TEST(AgentClientTest, SendsBearerTokenAndMapsUnauthenticated) {
  FakeAgent agent;
  agent.server.Get("/v1/jobs", [](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer s3cret") {
      ReplyError(res, 401, "unauthenticated", "missing or wrong bearer token");
      return;
    }
    Reply(res, 200, {{"jobs", json::array({{{"name", "load"}, {"enabled", true}}})}});
  });
  ASSERT_TRUE(agent.Start());

  AgentClient good(Endpoint(agent.url(), "s3cret"));
  auto jobs = good.ListJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  EXPECT_EQ((*jobs)["jobs"][0]["name"], "load");

  AgentClient anonymous(Endpoint(agent.url()));
  auto refused = anonymous.ListJobs();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnauthenticated);
  EXPECT_NE(refused.status().message().find(agent.url()), std::string::npos);
  EXPECT_NE(refused.status().message().find("missing or wrong bearer token"), std::string::npos);
  EXPECT_NE(refused.status().message().find("no token was sent"), std::string::npos);

  AgentClient wrong(Endpoint(agent.url(), "nope"));
  EXPECT_EQ(wrong.ListJobs().status().code(), Code::kUnauthenticated);
  // A refused token names where it was read, so that a user knows which file to fix.
  AgentEndpoint from_file = Endpoint(agent.url(), "nope");
  from_file.token_source = TokenSource("/etc/fanout/srv1.token");
  auto stale = AgentClient(from_file).ListJobs();
  EXPECT_NE(stale.status().message().find("the token from token file /etc/fanout/srv1.token was "
                                          "refused"),
            std::string::npos)
      << stale.status().message();
  EXPECT_EQ(TokenSource("", "ETL_TOKEN"), "$ETL_TOKEN");
  // An unset variable is named (security QA: "no token was sent" left the user guessing).
  AgentEndpoint from_env = Endpoint(agent.url());
  from_env.token_source = TokenSource("", "ETL_TOKEN");
  auto unset = AgentClient(from_env).ListJobs();
  EXPECT_NE(unset.status().message().find("no token was sent: $ETL_TOKEN is unset or empty"),
            std::string::npos)
      << unset.status().message();
}

// One start route answers with the status named by the job: s404 -> 404, ...
// A refused connection to a URL without a port says which port was tried (QA: `http://127.0.0.1`
// failed on port 80 without a word about the port).
TEST(AgentClientTest, ARefusedURLWithoutAPortSaysWhichPortWasTried) {
  int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(80);
  const bool port_80_open = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(probe);
  if (port_80_open) GTEST_SKIP() << "something listens on 127.0.0.1:80 here";
  AgentEndpoint endpoint;
  endpoint.url = "http://127.0.0.1";
  AgentClient client(endpoint);
  auto health = client.Health();
  ASSERT_FALSE(health.ok());
  EXPECT_NE(health.status().message().find("the URL gives no port, so port 80 was tried"),
            std::string::npos)
      << health.status().message();
}

TEST(AgentClientTest, MapsHttpErrorsToCodes) {
  FakeAgent agent;
  agent.server.Post(R"(/v1/jobs/s(\d+)/start)",
                    [](const httplib::Request& req, httplib::Response& res) {
                      int status = std::stoi(req.matches[1]);
                      ReplyError(res, status, "reason" + std::to_string(status),
                                 "detail of " + std::to_string(status));
                    });
  agent.server.Post("/v1/jobs/plain/start", [](const httplib::Request&, httplib::Response& res) {
    res.status = 502;
    res.set_content("<html>bad gateway</html>", "text/html");
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));

  const std::pair<int, Code> cases[] = {
      {400, Code::kInvalidArgument},   {401, Code::kUnauthenticated},
      {403, Code::kPermissionDenied},  {404, Code::kNotFound},
      {409, Code::kFailedPrecondition}, {413, Code::kResourceExhausted},
      {503, Code::kUnavailable},       {500, Code::kInternal},
      {418, Code::kInternal},
  };
  for (const auto& [status, code] : cases) {
    SCOPED_TRACE(status);
    auto result = client.StartJob("s" + std::to_string(status), {});
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), code);
    const std::string& message = result.status().message();
    EXPECT_NE(message.find("POST " + agent.url() + "/v1/jobs/s"), std::string::npos) << message;
    EXPECT_NE(message.find("HTTP " + std::to_string(status)), std::string::npos) << message;
    EXPECT_NE(message.find("reason" + std::to_string(status)), std::string::npos) << message;
    EXPECT_NE(message.find("detail of " + std::to_string(status)), std::string::npos) << message;
  }

  auto gateway = client.StartJob("plain", {});
  EXPECT_EQ(gateway.status().code(), Code::kUnavailable);
  EXPECT_NE(gateway.status().message().find("bad gateway"), std::string::npos);
}

TEST(AgentClientTest, ConnectionRefusedIsUnavailable) {
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort());
  AgentClient client(Endpoint(url));
  auto health = client.Health();
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code(), Code::kUnavailable);
  EXPECT_NE(health.status().message().find(url), std::string::npos);
  EXPECT_NE(health.status().message().find("cannot connect"), std::string::npos);
}

TEST(AgentClientTest, SilentAgentTimesOutAsUnavailable) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  FakeAgent agent;
  agent.server.Get("/v1/status", [released](const httplib::Request&, httplib::Response& res) {
    released.wait();
    Reply(res, 200, json::object());
  });
  ASSERT_TRUE(agent.Start());
  AgentEndpoint endpoint = Endpoint(agent.url());
  endpoint.read_timeout = std::chrono::milliseconds(100);
  AgentClient client(endpoint);
  auto status = client.Status();
  release.set_value();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), Code::kUnavailable);
}

TEST(AgentClientTest, GetRunPassesWaitAndExtendsReadTimeout) {
  FakeAgent agent;
  agent.server.Get(R"(/v1/runs/([^/]+))", [](const httplib::Request& req,
                                              httplib::Response& res) {
    if (req.matches[1] == "missing") {
      ReplyError(res, 404, "not found", "no run missing");
      return;
    }
    Reply(res, 200,
          {{"run_id", req.matches[1]},
           {"status", "succeeded"},
           {"wait", req.has_param("wait") ? req.get_param_value("wait") : "none"},
           {"steps", json::array()}});
  });
  ASSERT_TRUE(agent.Start());
  AgentEndpoint endpoint = Endpoint(agent.url());
  endpoint.read_timeout = std::chrono::milliseconds(100);
  AgentClient client(endpoint);

  auto waited = client.GetRun("r-1", std::chrono::seconds(30));
  ASSERT_TRUE(waited.ok()) << waited.status().ToString();
  EXPECT_EQ((*waited)["run_id"], "r-1");
  EXPECT_EQ((*waited)["wait"], "30");

  auto plain = client.GetRun("r-2");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ((*plain)["wait"], "none");

  EXPECT_EQ(client.GetRun("missing").status().code(), Code::kNotFound);
}

TEST(AgentClientTest, StartJobSendsRequestAndParsesResult) {
  FakeAgent agent;
  json seen;
  std::string content_type;
  agent.server.Post("/v1/jobs/load/start", [&](const httplib::Request& req,
                                              httplib::Response& res) {
    std::lock_guard lock(agent.mu);
    seen = json::parse(req.body);
    content_type = req.get_header_value("Content-Type");
    Reply(res, 202, {{"run_id", "r-9"}, {"status", "queued"}, {"existing", true}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));

  StartRequest request;
  request.params["region"] = "eu";
  request.params["days"] = json::array({"mon", "tue"});
  request.parent_execution_id = "p-1";
  request.start_step = "load";
  request.idempotency_key = "k-1";
  auto started = client.StartJob("load", request);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::lock_guard lock(agent.mu);
  EXPECT_EQ(started->run_id, "r-9");
  EXPECT_EQ(started->status, "queued");
  EXPECT_TRUE(started->existing);
  EXPECT_EQ(content_type, "application/json");
  EXPECT_EQ(seen["params"]["region"], "eu");
  EXPECT_EQ(seen["params"]["days"], json::array({"mon", "tue"}));
  EXPECT_EQ(seen["parent_execution_id"], "p-1");
  EXPECT_EQ(seen["start_step"], "load");
  EXPECT_EQ(seen["idempotency_key"], "k-1");

}

TEST(AgentClientTest, StartJobLeavesOutEmptyFields) {
  FakeAgent agent;
  std::string body;
  agent.server.Post("/v1/jobs/load/start", [&](const httplib::Request& req,
                                              httplib::Response& res) {
    std::lock_guard lock(agent.mu);
    body = req.body;
    Reply(res, 202, {{"run_id", "r-1"}, {"status", "running"}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));
  auto started = client.StartJob("load", {});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_FALSE(started->existing);
  std::lock_guard lock(agent.mu);
  EXPECT_EQ(body, "{}");
}

// A start with a wait reads the start's answer and the first long-poll's as two lines of one
// answer. A connection that breaks after the first line still started the run, and the poll
// says why it failed; an error, or an agent that answers the start alone, is read as before.
TEST(AgentClientTest, StartJobWithAWaitReadsTheStartThenTheFirstPoll) {
  FakeAgent agent;
  std::string wait_seen;
  agent.server.Post(R"(/v1/jobs/([^/]+)/start)", [&](const httplib::Request& req,
                                                    httplib::Response& res) {
    const std::string job = req.matches[1];
    {
      std::lock_guard lock(agent.mu);
      wait_seen = req.has_param("wait") ? req.get_param_value("wait") : "none";
    }
    if (job == "busy") return ReplyError(res, 409, "job already running", "at its limit");
    if (job == "older" || !req.has_param("wait")) {
      return Reply(res, 202, {{"run_id", "r-" + job}, {"status", "running"}});
    }
    res.status = 202;
    const std::string type =
        job == "charset" ? "application/x-ndjson; charset=utf-8" : "application/x-ndjson";
    res.set_chunked_content_provider(type, [job](size_t, httplib::DataSink& sink) {
      std::string start = json{{"run_id", "r-" + job}, {"status", "running"}}.dump() + "\n";
      sink.write(start.data(), start.size());
      if (job == "dies") return false;  // the connection ends after the start's answer
      std::string run =
          (job == "gone" ? json{{"error", "unknown run"}, {"detail", "no run r-gone"},
                                {"http_status", 404}}
                         : json{{"run_id", "r-" + job}, {"status", "succeeded"}})
              .dump() +
          "\n";
      sink.write(run.data(), run.size());
      sink.done();
      return true;
    });
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));

  std::vector<std::string> accepted;  // the runs `accepted` was told of, in order
  auto tell = [&accepted](const StartResult& run) { accepted.push_back(run.run_id); };
  auto both = client.StartJob("load", {}, std::chrono::seconds(1), tell);
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  EXPECT_EQ(both->run_id, "r-load");
  ASSERT_TRUE(both->first_poll.has_value());
  ASSERT_TRUE(both->first_poll->ok()) << both->first_poll->status().ToString();
  EXPECT_EQ((**both->first_poll)["status"], "succeeded");
  {
    std::lock_guard lock(agent.mu);
    EXPECT_EQ(wait_seen, "1");
  }

  auto broken = client.StartJob("dies", {}, std::chrono::seconds(1), tell);
  ASSERT_TRUE(broken.ok()) << broken.status().ToString();
  EXPECT_EQ(broken->run_id, "r-dies");
  ASSERT_TRUE(broken->first_poll.has_value());
  EXPECT_EQ(broken->first_poll->status().code(), Code::kUnavailable);

  // A break after the answer began is no TLS or address mistake, even on a client's first call.
  AgentClient fresh(Endpoint(agent.url()));
  auto fresh_broken = fresh.StartJob("dies", {}, std::chrono::seconds(1));
  ASSERT_TRUE(fresh_broken.ok() && fresh_broken->first_poll.has_value());
  EXPECT_EQ(fresh_broken->first_poll->status().message().find("https"), std::string::npos)
      << fresh_broken->first_poll->status().ToString();

  auto gone = client.StartJob("gone", {}, std::chrono::seconds(1));
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  ASSERT_TRUE(gone->first_poll.has_value());
  EXPECT_EQ(gone->first_poll->status().code(), Code::kNotFound);
  EXPECT_NE(gone->first_poll->status().message().find("no run r-gone"), std::string::npos)
      << gone->first_poll->status().ToString();

  auto charset = client.StartJob("charset", {}, std::chrono::seconds(1));
  ASSERT_TRUE(charset.ok()) << charset.status().ToString();
  ASSERT_TRUE(charset->first_poll.has_value() && charset->first_poll->ok());
  EXPECT_EQ((**charset->first_poll)["status"], "succeeded");

  auto refused = client.StartJob("busy", {}, std::chrono::seconds(1), tell);
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("at its limit"), std::string::npos)
      << refused.status().ToString();

  auto older = client.StartJob("older", {}, std::chrono::seconds(1), tell);
  ASSERT_TRUE(older.ok()) << older.status().ToString();
  EXPECT_EQ(older->run_id, "r-older");
  EXPECT_FALSE(older->first_poll.has_value());

  auto plain = client.StartJob("load", {}, std::nullopt, tell);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->first_poll.has_value());
  // Told once per accepted start, however it was answered; a refused start is not told.
  EXPECT_EQ(accepted, (std::vector<std::string>{"r-load", "r-dies", "r-older", "r-load"}));
  std::lock_guard lock(agent.mu);
  EXPECT_EQ(wait_seen, "none");
}

TEST(AgentClientTest, PackagesRoundTrip) {
  FakeAgent agent;
  std::string stored;
  agent.server.Put("/v1/packages/etl", [&](const httplib::Request& req, httplib::Response& res) {
    EXPECT_EQ(req.get_header_value("Content-Type"), "application/yaml");
    bool changed = req.body != stored;
    stored = req.body;
    Reply(res, 200, {{"name", "etl"}, {"version", 2}, {"sha256", "abc"}, {"changed", changed}});
  });
  agent.server.Get("/v1/packages/etl", [&](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          {{"name", "etl"}, {"version", 2}, {"sha256", "abc"}, {"size", stored.size()},
           {"deployed_at", nullptr}, {"content", stored}});
  });
  agent.server.Get("/v1/packages/none", [](const httplib::Request&, httplib::Response& res) {
    ReplyError(res, 404, "not found", "no package none");
  });
  agent.server.Get("/v1/packages", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"packages", json::array({{{"name", "etl"}, {"version", 2}}})}});
  });
  agent.server.Delete("/v1/packages/etl", [](const httplib::Request&, httplib::Response& res) {
    res.status = 204;
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));

  auto put = client.PutPackage("etl", "package: etl\n");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->version, 2);
  EXPECT_EQ(put->sha256, "abc");
  EXPECT_TRUE(put->changed);
  EXPECT_FALSE(client.PutPackage("etl", "package: etl\n")->changed);

  auto got = client.GetPackage("etl");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->content, "package: etl\n");
  EXPECT_EQ(got->size, 13);
  EXPECT_EQ(got->deployed_at, "");

  auto missing = client.GetPackage("none");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("no package none"), std::string::npos);

  auto list = client.ListPackages();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "etl");

  EXPECT_TRUE(client.DeletePackage("etl").ok());
}

TEST(AgentClientTest, PutJobReportsCreatedAndChanged) {
  FakeAgent agent;
  int puts = 0;
  agent.server.Put("/v1/jobs/load", [&](const httplib::Request& req, httplib::Response& res) {
    EXPECT_EQ(req.get_header_value("Content-Type"), "application/json");
    ++puts;
    Reply(res, puts == 1 ? 201 : 200, {{"name", "load"}, {"changed", puts == 1}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));
  auto first = client.PutJob("load", R"({"job": "load"})", "application/json");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->created);
  EXPECT_TRUE(first->changed);
  auto second = client.PutJob("load", R"({"job": "load"})", "application/json");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->created);
  EXPECT_FALSE(second->changed);
}

// An answer that is not JSON comes from another server (a URL with the wrong port), which had
// printed its HTML page as the error and exited 4 ("not found"); JSON of the wrong shape is an
// agent's bug or version mismatch.
TEST(AgentClientTest, AnAnswerThatIsNotJsonIsAnotherServerAndMalformedJsonIsInternal) {
  FakeAgent agent;
  agent.server.Get("/v1/status", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("not json", "text/plain");
  });
  agent.server.Get("/v1/jobs", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content("<!DOCTYPE HTML>\n<html><title>Error</title>", "text/html");
  });
  agent.server.Post("/v1/jobs/load/start", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 202, {{"run_id", 42}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));
  EXPECT_EQ(client.Status().status().code(), Code::kUnavailable);
  auto jobs = client.ListJobs();
  EXPECT_EQ(jobs.status().code(), Code::kUnavailable);
  EXPECT_NE(jobs.status().message().find("HTTP 404 from a server that is not a fanout agent (its "
                                         "answer is not JSON: <!DOCTYPE HTML> <html>"),
            std::string::npos)
      << jobs.status().message();
  auto started = client.StartJob("load", {});
  EXPECT_EQ(started.status().code(), Code::kInternal);
  EXPECT_NE(started.status().message().find("unexpected answer"), std::string::npos);
}

TEST(AgentClientTest, ReusesOneConnection) {
  FakeAgent agent;
  std::vector<int> ports;
  agent.server.Get("/v1/health", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(agent.mu);
    ports.push_back(req.remote_port);
    Reply(res, 200, {{"status", "ok"}});
  });
  ASSERT_TRUE(agent.Start());
  AgentClient client(Endpoint(agent.url()));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client.Health().ok());
  std::lock_guard lock(agent.mu);
  ASSERT_EQ(ports.size(), 3u);
  EXPECT_EQ(ports[0], ports[1]);
  EXPECT_EQ(ports[1], ports[2]);
}

TEST(AgentClientTest, WorksOverIpv6Loopback) {
  FakeAgent agent;
  agent.server.Get("/v1/health", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"status", "ok"}, {"name", "v6"}});
  });
  if (!agent.Start("::1")) GTEST_SKIP() << "no IPv6 loopback here";
  AgentClient client(Endpoint(agent.url()));
  auto health = client.Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ((*health)["name"], "v6");
}

TEST(AgentClientTest, RejectsBadEndpointsAndNamesWithoutSending) {
  for (const char* url : {"ftp://h:1", "127.0.0.1:7420", "http://h:1/v1", "http://[::1:7420",
                          "http://h:0", "http://h:x", "http://:7420"}) {
    SCOPED_TRACE(url);
    AgentClient client(Endpoint(url));
    EXPECT_EQ(client.endpoint_status().code(), Code::kInvalidArgument);
    EXPECT_EQ(client.Health().status().code(), Code::kInvalidArgument);
  }
  AgentEndpoint tls_on_http = Endpoint("http://127.0.0.1:7420");
  tls_on_http.ca_file = "/etc/hostname";
  EXPECT_EQ(AgentClient(tls_on_http).endpoint_status().code(), Code::kInvalidArgument);
  AgentEndpoint half_pair = Endpoint("https://127.0.0.1:7420");
  half_pair.cert_file = "/etc/hostname";
  EXPECT_EQ(AgentClient(half_pair).endpoint_status().code(), Code::kInvalidArgument);
  AgentEndpoint missing_ca = Endpoint("https://127.0.0.1:7420");
  missing_ca.ca_file = "/nonexistent/ca.crt";
  AgentClient missing(missing_ca);
  EXPECT_EQ(missing.endpoint_status().code(), Code::kInvalidArgument);
  EXPECT_NE(missing.endpoint_status().message().find("/nonexistent/ca.crt"), std::string::npos);

  AgentClient client(Endpoint("http://127.0.0.1:" + std::to_string(ClosedPort())));
  EXPECT_TRUE(client.endpoint_status().ok());
  EXPECT_EQ(client.GetJob("a/b").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(client.StartJob("", {}).status().code(), Code::kInvalidArgument);
}

TEST(AgentClientTest, ReadTokenFileTrimsWhitespace) {
  char path[] = "/tmp/fanout-token-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "  tok3n\n";
  auto token = ReadTokenFile(path);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, "tok3n");
  std::ofstream(path) << "\n";
  EXPECT_EQ(ReadTokenFile(path).status().code(), Code::kInvalidArgument);
  // A second line would be sent as an HTTP header of its own.
  std::ofstream(path) << "tok3n\n# the nightly token\n";
  auto two_lines = ReadTokenFile(path);
  ASSERT_FALSE(two_lines.ok());
  EXPECT_NE(two_lines.status().message().find("holds more than one line at character 6"),
            std::string::npos)
      << two_lines.status().message();
  // Longer than an HTTP header may be: said up front, not as the agent's puzzling 400.
  std::ofstream(path) << std::string(kMaxTokenLength, 'x');
  EXPECT_TRUE(ReadTokenFile(path).ok());
  std::ofstream(path) << std::string(5000, 'x');
  auto too_long = ReadTokenFile(path);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("holds 5000 characters; a token is at most 4096"),
            std::string::npos)
      << too_long.status().message();
  // Read no further than a token can be: /dev/zero would fill the memory, a FIFO wait for ever.
  std::ofstream(path) << std::string(1 << 20, 'x');
  auto huge = ReadTokenFile(path);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("holds more than 5120 bytes"), std::string::npos)
      << huge.status().message();
  auto device = ReadTokenFile("/dev/zero");
  ASSERT_FALSE(device.ok());
  EXPECT_NE(device.status().message().find("/dev/zero: is not a regular file"), std::string::npos)
      << device.status().message();
  // The variable is trimmed as a file is: `FANOUT_TOKEN="$(cat token; echo)"` works.
  setenv("FANOUT_TEST_TOKEN", " tok3n\n", 1);
  EXPECT_EQ(*ResolveToken("", "FANOUT_TEST_TOKEN"), "tok3n");
  setenv("FANOUT_TEST_TOKEN", "t\r\nX-Evil: 1", 1);
  auto from_env = ResolveToken("", "FANOUT_TEST_TOKEN");
  ASSERT_FALSE(from_env.ok());
  EXPECT_NE(from_env.status().message().find("$FANOUT_TEST_TOKEN holds more than one line"),
            std::string::npos)
      << from_env.status().message();
  unsetenv("FANOUT_TEST_TOKEN");
  std::remove(path);
  EXPECT_EQ(ReadTokenFile(path).status().code(), Code::kNotFound);
}

TEST(AgentClientTest, ResolveTokenPrefersTheFileThenTheEnvironment) {
  setenv("FANOUT_TEST_TOKEN", "from-env", 1);
  auto from_env = ResolveToken("", "FANOUT_TEST_TOKEN");
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(*from_env, "from-env");
  unsetenv("FANOUT_TEST_TOKEN");
  EXPECT_EQ(*ResolveToken("", "FANOUT_TEST_TOKEN"), "");
  EXPECT_EQ(ResolveToken("/nonexistent/token", "FANOUT_TEST_TOKEN").status().code(),
            Code::kNotFound);
}

// Certificates made with the openssl command in a scratch directory: a CA, an agent
// certificate for 127.0.0.1 signed by it, one issued for other.example whose subject's CN is
// 127.0.0.1, a client certificate signed by it, and an unrelated self-signed CA. Empty when
// openssl is not installed.
class TlsFiles {
 public:
  TlsFiles() {
    char dir[] = "/tmp/fanout-tls-XXXXXX";
    if (mkdtemp(dir) == nullptr) return;
    dir_ = dir;
    const char* kSteps[] = {
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
        "-subj /CN=ca",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 1 "
        "-subj /CN=other",
        "openssl req -newkey rsa:2048 -nodes -keyout agent.key -out agent.csr -subj /CN=127.0.0.1",
        "echo subjectAltName=IP:127.0.0.1 > san.cnf",
        "openssl x509 -req -in agent.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out agent.crt "
        "-days 1 -extfile san.cnf",
        "echo subjectAltName=DNS:other.example > other-san.cnf",
        "openssl x509 -req -in agent.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out other-name.crt -days 1 -extfile other-san.cnf",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client",
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out client.crt -days 1",
    };
    std::string script = "cd " + dir_;
    for (const char* step : kSteps) script += std::string(" && ") + step;
    ok_ = std::system(("(" + script + ") >/dev/null 2>&1").c_str()) == 0;
  }
  ~TlsFiles() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  bool ok() const { return ok_; }
  std::string operator()(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  bool ok_ = false;
};

// An https fake agent that requires a client certificate signed by the test CA.
class FakeTlsAgent {
 public:
  explicit FakeTlsAgent(const TlsFiles& files, const std::string& cert = "agent.crt")
      : server_(files(cert).c_str(), files("agent.key").c_str(), files("ca.crt").c_str()) {
    server_.Get("/v1/health", [](const httplib::Request&, httplib::Response& res) {
      Reply(res, 200, {{"status", "ok"}, {"name", "tls"}});
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FakeTlsAgent() {
    while (!server_.is_running()) std::this_thread::yield();
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::SSLServer server_;
  std::thread thread_;
  int port_ = 0;
};

TEST(AgentClientTest, MutualTlsVerifiesTheAgentAndPresentsTheClientCertificate) {
  TlsFiles files;
  if (!files.ok()) GTEST_SKIP() << "the openssl command is not available";
  FakeTlsAgent agent(files);

  AgentEndpoint trusted = Endpoint(agent.url());
  trusted.ca_file = files("ca.crt");
  trusted.cert_file = files("client.crt");
  trusted.key_file = files("client.key");
  AgentClient good(trusted);
  auto health = good.Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ((*health)["name"], "tls");

  AgentEndpoint wrong_ca = trusted;
  wrong_ca.ca_file = files("other.crt");
  auto untrusted = AgentClient(wrong_ca).Health();
  EXPECT_EQ(untrusted.status().code(), Code::kUnavailable);
  EXPECT_NE(untrusted.status().message().find("not trusted"), std::string::npos)
      << untrusted.status().message();

  // A key that is not the certificate's: a clear error (httplib dropped its SSL context, which
  // the name check then read: a crash).
  AgentEndpoint wrong_key = trusted;
  wrong_key.key_file = files("agent.key");
  auto mismatched = AgentClient(wrong_key).Health();
  EXPECT_EQ(mismatched.status().code(), Code::kInvalidArgument) << mismatched.status().ToString();
  EXPECT_NE(mismatched.status().message().find("is not the key of the client certificate"),
            std::string::npos)
      << mismatched.status().message();

  AgentEndpoint no_client_cert = trusted;
  no_client_cert.cert_file.clear();
  no_client_cert.key_file.clear();
  auto refused = AgentClient(no_client_cert).Health();
  EXPECT_EQ(refused.status().code(), Code::kUnavailable) << refused.status().ToString();
}

// RFC 6125: with subjectAltNames, the subject's CN does not count; an address must be one of the
// certificate's IP names. httplib alone had accepted a certificate for other.example here.
TEST(AgentClientTest, TheAgentsCertificateMustNameTheAddress) {
  TlsFiles files;
  if (!files.ok()) GTEST_SKIP() << "the openssl command is not available";
  FakeTlsAgent agent(files, "other-name.crt");
  AgentEndpoint endpoint = Endpoint(agent.url());
  endpoint.ca_file = files("ca.crt");
  endpoint.cert_file = files("client.crt");
  endpoint.key_file = files("client.key");
  auto health = AgentClient(endpoint).Health();
  EXPECT_EQ(health.status().code(), Code::kUnavailable) << health.status().ToString();
  EXPECT_NE(health.status().message().find("the agent's certificate is not for this address (IP "
                                           "address mismatch); use the name or address"),
            std::string::npos)
      << health.status().message();
}

TEST(AgentClientTest, FinalRunStates) {
  for (const char* s : {"succeeded", "failed", "canceled", "abandoned"}) {
    EXPECT_TRUE(IsFinalRunStatus(s));
  }
  for (const char* s : {"queued", "running", "retrying", ""}) EXPECT_FALSE(IsFinalRunStatus(s));
}

}  // namespace
}  // namespace fanout::client
