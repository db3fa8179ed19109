// Tests of AgentServer's life cycle that the end-to-end tests reach only by chance of timing.
#include "agent/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>

#include "common/test_util.h"

namespace fanout::agent {
namespace {

// A SIGTERM just after the start reached Shutdown before the listener ran; httplib's stop()
// then did nothing and the agent served on for ever (an e2e test saw it under load).
TEST(AgentServerTest, AShutdownBeforeServingEndsServe) {
  testing::TempDir dir;
  AgentConfig config;
  config.port = 0;
  config.data_dir = dir.path();
  config.slots = 1;
  AgentServer server(config, "/bin/false");
  ASSERT_TRUE(server.Start().ok());
  server.Shutdown();
  auto served = std::async(std::launch::async, [&] { return server.Serve(); });
  if (served.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Returning would wait for the listening thread (the future's destructor) for ever.
    std::fprintf(stderr, "FAILED: Serve() still listening 10 s after Shutdown()\n");
    std::_Exit(1);
  }
  EXPECT_TRUE(served.get().ok());
}

}  // namespace
}  // namespace fanout::agent
