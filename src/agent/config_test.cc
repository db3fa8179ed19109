// Tests of the agent's configuration: listen addresses and which count as loopback, and what a
// configuration file may hold.
#include "agent/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/test_util.h"

namespace fanout::agent {
namespace {

// Judged by address: a name other than localhost is not looked up ("127.evil.example" could be
// anything in /etc/hosts).
TEST(ConfigTest, LoopbackIsJudgedByAddress) {
  EXPECT_TRUE(IsLoopback("127.0.0.1"));
  EXPECT_TRUE(IsLoopback("127.3.2.1"));
  EXPECT_TRUE(IsLoopback("::1"));
  EXPECT_TRUE(IsLoopback("localhost"));
  EXPECT_FALSE(IsLoopback("0.0.0.0"));
  EXPECT_FALSE(IsLoopback("::"));
  EXPECT_FALSE(IsLoopback("10.1.2.3"));
  EXPECT_FALSE(IsLoopback("127.evil.example"));  // a name, not looked up
}

// ":0" took every interface and printed "http://:PORT"; a URL's scheme was read as the host.
TEST(ConfigTest, ListenIsHostAndPort) {
  AgentConfig config;
  ASSERT_TRUE(ParseListen("[::1]:7420", config).ok());
  EXPECT_EQ(config.host, "::1");
  EXPECT_EQ(config.port, 7420);
  for (const char* bad : {":0", "http://127.0.0.1:0", "127.0.0.1", "127.0.0.1:x", "h:70000"}) {
    Status status = ParseListen(bad, config);
    EXPECT_EQ(status.code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseListen(":0", config).message().find("is HOST:PORT without a scheme"),
            std::string::npos);
}

// QA: `subsystems: [process, pakage]` was accepted; the misspelt one is an error, as in a job.
TEST(ConfigTest, RefusesUnknownProxySubsystems) {
  testing::TempDir dir;
  std::ofstream(dir.File("agent.yaml"))
      << "data_dir: data\nproxies:\n  etl: {user: nobody, subsystems: [process, pakage, bogus]}\n"
         "  ok: {user: nobody, subsystems: [package, process]}\n";
  auto config = LoadAgentConfig(dir.File("agent.yaml"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), Code::kInvalidArgument);
  const std::string message = config.status().message();
  EXPECT_NE(message.find("agent.yaml:3:45: unknown subsystem 'pakage' in proxies.etl.subsystems; allowed: "
                         "package, process"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown subsystem 'bogus'"), std::string::npos) << message;
  EXPECT_EQ(message.find("'process' in"), std::string::npos) << message;
}

// Each problem has its place and its own line; a key written twice (yaml-cpp keeps the first)
// is one of them.
TEST(ConfigTest, ProblemsAreSaidInFileOrderWithTheirPlace) {
  testing::TempDir dir;
  std::ofstream(dir.File("agent.yaml")) << "name: a\ndata_dir: d\nstop_grace: abc\n"
                                           "max_body_bytes: 5\nname: b\n";
  auto config = LoadAgentConfig(dir.File("agent.yaml"));
  ASSERT_FALSE(config.ok());
  const std::string file = dir.File("agent.yaml");
  EXPECT_EQ(config.status().message(),
            file + ":3:13: `stop_grace`: 'abc' is not a duration; write a number with a unit: "
                   "250ms, 30s, 10m, 2h, 1d (a plain number is seconds)\n" +
                file + ":4:17: `max_body_bytes` must be a whole number of at least 1024, not '5'\n" +
                file + ":5:1: duplicate key `name`");
}

// QA: `tls: {client-ca: ...}` was ignored, so mutual TLS was off without a word; `data_dir:`
// alone made a folder named "null"; `tls: yes` and `proxies: [a]` said yaml-cpp's internals.
TEST(ConfigTest, NestedKeysValuesAndShapesAreCheckedToo) {
  testing::TempDir dir;
  const std::string file = dir.File("agent.yaml");
  auto problems = [&](const std::string& yaml) {
    std::ofstream(file) << yaml;
    auto config = LoadAgentConfig(file);
    return config.ok() ? std::string("loaded") : config.status().message();
  };
  EXPECT_EQ(problems("data_dir: d\ntls: {cert: c, key: k, client-ca: ca}\n"),
            file + ":2:24: unknown key `tls.client-ca`; allowed: cert, key, client_ca");
  EXPECT_EQ(problems("data_dir:\nname: ~\n"),
            file + ":1:1: `data_dir` needs a value\n" + file + ":2:1: `name` needs a value");
  EXPECT_EQ(problems("data_dir: d\ntls: yes\nlisten: {host: x}\n"),
            file + ":2:6: `tls` is a mapping: cert, key and client_ca, each a file\n" + file +
                ":3:9: `listen` needs a single value");
  EXPECT_EQ(problems("data_dir: d\nproxies: [a, b]\n"),
            file + ":2:10: `proxies` is a mapping: each proxy's name, with its `user` and "
                   "`subsystems`");
  EXPECT_EQ(problems("data_dir: d\nproxies:\n  etl: {user: u, group: g, subsystems: package}\n"
                     "  bare:\n  etl: {user: v}\n  empty: {user: w, subsystems:}\n"),
            file + ":3:18: unknown key `proxies.etl.group`; allowed: user, subsystems\n" + file +
                ":3:40: `proxies.etl.subsystems` is a list of package, process\n" + file +
                ":4:3: proxy 'bare' needs `user`\n" + file + ":5:3: duplicate key `etl`\n" +
                file + ":6:20: `proxies.empty.subsystems` is a list of package, process");
  // Sections whose entries are all commented out are no sections (review).
  EXPECT_EQ(problems("data_dir: d\ntls:\n#  cert: c\nproxies:\n"), "loaded");
}

// A relative `catalog: sqlite:rel.db` was passed as is to step processes, which run in other
// folders: one created /rel.db. Relative paths are the config folder's, made absolute.
TEST(ConfigTest, RelativePathsAreTheConfigFoldersMadeAbsolute) {
  testing::TempDir dir;
  std::ofstream(dir.File("agent.yaml")) << "data_dir: data\ncatalog: \"sqlite:rel.db\"\n";
  auto config = LoadAgentConfig(dir.File("agent.yaml"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const std::string folder = std::filesystem::absolute(dir.File("agent.yaml")).parent_path().string();
  EXPECT_EQ(config->data_dir, folder + "/data");
  EXPECT_EQ(config->catalog, "sqlite:" + folder + "/rel.db");
}

// A folder given as the SQLite catalog is refused at start, as every other command refuses it:
// the agent had started, and every package step then failed with a usage error (QA).
TEST(ConfigTest, AFolderAsTheCatalogIsRefusedAtStart) {
  testing::TempDir dir;
  AgentConfig config;
  config.data_dir = dir.path();
  config.host = "127.0.0.1";
  config.catalog = "sqlite:" + dir.path();
  std::vector<std::string> warnings;
  Status checked = CheckAgentConfig(config, warnings);
  EXPECT_EQ(checked.code(), Code::kInvalidArgument) << checked.ToString();
  EXPECT_NE(checked.message().find("is a directory; give a file in it"), std::string::npos)
      << checked.ToString();
}

// Every problem at once, so that one edit fixes them all.
TEST(ConfigTest, EveryProblemIsSaidAtOnce) {
  AgentConfig config;
  config.name = "bad name";
  config.host = "0.0.0.0";
  config.port = 70000;
  config.tls_key = "key.pem";
  std::vector<std::string> warnings;
  Status checked = CheckAgentConfig(config, warnings);
  EXPECT_EQ(checked.code(), Code::kInvalidArgument) << checked.ToString();
  for (const char* said : {"agent name 'bad name' must match", "`data_dir` is required",
                           "port 70000 is out of range", "tls needs both `cert` and `key`",
                           "refusing to listen on 0.0.0.0 without credentials"}) {
    EXPECT_NE(checked.message().find(said), std::string::npos) << said << "\n" << checked.message();
  }
}

// A SQLite catalog's missing folder is a mistake on a first start, but not for an agent that
// has run here before: a restarted agent refused to start while the folder was away (QA), and
// its process steps could not run nor its runs be finished meanwhile.
TEST(ConfigTest, AMissingCatalogFolderStopsOnlyAFirstStart) {
  testing::TempDir dir;
  AgentConfig config;
  config.data_dir = dir.path();
  config.host = "127.0.0.1";
  config.catalog = "sqlite:" + dir.path() + "/away/catalog.db";
  std::vector<std::string> warnings;
  Status first = CheckAgentConfig(config, warnings);
  EXPECT_EQ(first.code(), Code::kInvalidArgument) << first.ToString();
  EXPECT_NE(first.message().find("/away does not exist; create it"), std::string::npos)
      << first.ToString();
  EXPECT_TRUE(warnings.empty());

  std::ofstream(dir.File("agent.db")).flush();  // the agent has started here before
  Status again = CheckAgentConfig(config, warnings);
  EXPECT_TRUE(again.ok()) << again.ToString();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("/away does not exist (any more): package steps fail until it is "
                             "back"),
            std::string::npos)
      << warnings[0];
}

// QA: a token file others may read was taken without a word.
TEST(ConfigTest, ATokenFileOthersMayReadIsWarnedOf) {
  testing::TempDir dir;
  std::ofstream(dir.File("token")) << "secret-token-of-the-agent\n";
  std::ofstream(dir.File("agent.yaml")) << "data_dir: d\ntoken_file: token\n";
  for (mode_t mode : {0600, 0644}) {
    chmod(dir.File("token").c_str(), mode);
    auto config = LoadAgentConfig(dir.File("agent.yaml"));
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    std::vector<std::string> warnings;
    ASSERT_TRUE(CheckAgentConfig(*config, warnings).ok());
    if (mode == 0600) {
      EXPECT_TRUE(warnings.empty());
      continue;
    }
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_EQ(warnings[0], "token_file " + dir.File("token") + " may be read by other users "
                           "(mode 0644), and whoever reads it can run jobs here: chmod 600 " +
                           dir.File("token"));
  }
}

// QA: a TLS key others may read was taken without a word, as the token file had been.
TEST(ConfigTest, ATlsKeyOthersMayReadIsWarnedOf) {
  testing::TempDir dir;
  std::ofstream(dir.File("agent.crt")) << "not read here\n";
  std::ofstream(dir.File("agent.key")) << "not read here\n";
  chmod(dir.File("agent.key").c_str(), 0640);
  std::ofstream(dir.File("agent.yaml")) << "data_dir: d\ntls: {cert: agent.crt, key: agent.key}\n";
  auto config = LoadAgentConfig(dir.File("agent.yaml"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  std::vector<std::string> warnings;
  ASSERT_TRUE(CheckAgentConfig(*config, warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "tls.key " + dir.File("agent.key") + " may be read by other users "
                         "(mode 0640), and whoever reads it can pose as this agent: chmod 600 " +
                         dir.File("agent.key"));
}

}  // namespace
}  // namespace fanout::agent
