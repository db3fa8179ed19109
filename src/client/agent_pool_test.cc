// Tests of AgentPool::Get: which connections share one pool (and so one count of the children
// running on each agent).
#include "client/agent_pool.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace fanout::client {
namespace {

PoolMember Member(const std::string& token_file) {
  PoolMember m;
  m.name = "srv1";
  m.endpoint.url = "http://127.0.0.1:1";  // nothing listens: the pool's prober finds it down
  m.token_file = token_file;
  return m;
}

TEST(AgentPoolTest, OnePoolPerMembersHoweverTheTokenFilesFolderIsSpelled) {
  char made[] = "/tmp/fanout-pool-XXXXXX";
  ASSERT_NE(mkdtemp(made), nullptr);
  const std::filesystem::path dir(made);
  std::filesystem::create_directories(dir / "a");
  std::filesystem::create_directories(dir / "b");
  std::ofstream(dir / "a" / "token") << "one\n";
  std::ofstream(dir / "b" / "token") << "two\n";
  const std::string a = (dir / "a" / "token").string();
  const std::string a_again = (dir / "b" / ".." / "a" / "token").string();

  std::shared_ptr<AgentPool> first = AgentPool::Get({Member(a)});
  EXPECT_EQ(AgentPool::Get({Member(a)}), first);
  // Another spelling of the same file, asked for twice (the second time by that spelling).
  EXPECT_EQ(AgentPool::Get({Member(a_again)}), first);
  EXPECT_EQ(AgentPool::Get({Member(a_again)}), first);
  // Another file, token or CA is another member, so another pool.
  EXPECT_NE(AgentPool::Get({Member((dir / "b" / "token").string())}), first);
  PoolMember with_token = Member("");
  with_token.endpoint.token = "one";
  PoolMember other_token = with_token;
  other_token.endpoint.token = "two";
  EXPECT_NE(AgentPool::Get({with_token}), AgentPool::Get({other_token}));
  PoolMember with_ca = Member(a);
  with_ca.endpoint.ca_file = (dir / "ca.pem").string();
  EXPECT_NE(AgentPool::Get({with_ca}), first);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fanout::client
