// CancelToken's callbacks: what a blocking call (an agent-job's HTTP request) registers to be cut
// short by a cancel.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "fanout/task.h"

namespace fanout {
namespace {

TEST(CancelTokenTest, ACallbackRunsOnceOnCancelWhileItLives) {
  CancelToken token;
  int runs = 0;
  {
    CancelToken::Callback gone = token.OnCancel([&runs] { ++runs; });
  }
  CancelToken::Callback live = token.OnCancel([&runs] { runs += 10; });
  token.Cancel(CancelToken::Reason::kCanceled);
  token.Cancel(CancelToken::Reason::kCanceled);
  EXPECT_EQ(runs, 10) << "only the living callback, once";
  // Registered after the cancel: nothing runs, and the caller sees canceled().
  CancelToken::Callback late = token.OnCancel([&runs] { runs += 100; });
  EXPECT_EQ(runs, 10);
  EXPECT_TRUE(token.canceled());
}

// The callback's end waits for a run of it under way on the canceling thread, so that what it
// uses (a client on the caller's stack) is not gone under it.
TEST(CancelTokenTest, ACallbacksEndWaitsForItsRunUnderWay) {
  CancelToken token;
  std::atomic<bool> running{false};
  std::atomic<bool> finished{false};
  auto callback = std::make_unique<CancelToken::Callback>(token.OnCancel([&] {
    running = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    finished = true;
  }));
  std::thread canceler([&token] { token.Cancel(CancelToken::Reason::kTimedOut); });
  while (!running) std::this_thread::yield();
  callback.reset();
  EXPECT_TRUE(finished) << "the callback ended while its function still ran";
  canceler.join();
}

TEST(CancelTokenTest, AMovedCallbackStaysRegisteredOnce) {
  CancelToken token;
  int runs = 0;
  CancelToken::Callback first = token.OnCancel([&runs] { ++runs; });
  CancelToken::Callback second = std::move(first);
  CancelToken::Callback third;
  third = std::move(second);
  token.Cancel(CancelToken::Reason::kCanceled);
  EXPECT_EQ(runs, 1);
}

}  // namespace
}  // namespace fanout
