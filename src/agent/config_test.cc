// Tests of the agent's configuration helpers: which listen addresses count as loopback.
#include "agent/config.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fanout::agent
