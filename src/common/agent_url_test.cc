// Tests of ParseAgentUrl: the one parser of agent URLs for connections, --agent and deploy.
#include "common/agent_url.h"

#include <gtest/gtest.h>

namespace fanout {
namespace {

TEST(AgentUrlTest, APortGivenOrNot) {
  auto given = ParseAgentUrl("http://127.0.0.1:8700/");
  ASSERT_TRUE(given.ok()) << given.status().ToString();
  EXPECT_EQ(given->host, "127.0.0.1");
  EXPECT_EQ(given->port, 8700);
  EXPECT_TRUE(given->port_given);

  auto none = ParseAgentUrl("https://agents.example");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->https);
  EXPECT_EQ(none->port, 443);
  EXPECT_FALSE(none->port_given);

  auto v6 = ParseAgentUrl("http://[::1]");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 80);
  EXPECT_FALSE(v6->port_given);
}

// QA: HTTP://HOST:PORT was refused as not starting with http://.
TEST(AgentUrlTest, TheSchemeIsCaseInsensitive) {
  auto upper = ParseAgentUrl("HTTPS://127.0.0.1:8700");
  ASSERT_TRUE(upper.ok()) << upper.status().ToString();
  EXPECT_TRUE(upper->https);
  auto mixed = ParseAgentUrl("Http://127.0.0.1:8700");
  ASSERT_TRUE(mixed.ok()) << mixed.status().ToString();
  EXPECT_FALSE(mixed->https);
}

TEST(AgentUrlTest, RefusesWhatARunWouldFailOn) {
  for (const char* url : {"127.0.0.1:8700", "http://host:99999", "http://host/path",
                          "http://user:pw@host:1", "http://[::1"}) {
    EXPECT_FALSE(ParseAgentUrl(url).ok()) << url;
  }
}

// A list in one $FANOUT_AGENT or --agent was said to have "a path" (QA).
TEST(AgentUrlTest, AListOfAgentsInOneValueIsSaidToBeOne) {
  for (const char* list : {"http://127.0.0.1:1,http://127.0.0.1:2", "http://a:1 http://b:2"}) {
    auto parsed = ParseAgentUrl(list);
    ASSERT_FALSE(parsed.ok()) << list;
    EXPECT_NE(parsed.status().message().find("several agents are several --agent options"),
              std::string::npos)
        << parsed.status().message();
  }
}

}  // namespace
}  // namespace fanout
