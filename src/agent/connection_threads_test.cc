// Tests of the agent's elastic connection threads: every connection gets a thread at once up to
// the cap, idle threads end, and shutdown runs what is queued and waits for every thread.
#include "agent/connection_threads.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <thread>

namespace fanout::agent {
namespace {

using std::chrono::milliseconds;

bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(milliseconds(10));
  return done();
}

// 100 jobs that each wait for all the others, as 100 long-polls hold their threads at once: a
// fixed pool smaller than that would never let the last ones start.
TEST(ConnectionThreadsTest, EveryWaitingJobGetsAThreadOfItsOwn) {
  ConnectionThreads pool(2, 1000, milliseconds(60000));
  constexpr int kJobs = 100;
  std::latch all_started(kJobs);
  std::atomic<int> done{0};
  for (int i = 0; i < kJobs; ++i) {
    pool.enqueue([&] {
      all_started.arrive_and_wait();
      ++done;
    });
  }
  ASSERT_TRUE(WaitFor([&] { return done == kJobs; })) << done << " of " << kJobs << " ran";
  EXPECT_EQ(pool.threads(), kJobs);
  // Idle threads are reused, not added to.
  for (int i = 0; i < 10; ++i) pool.enqueue([&] { ++done; });
  ASSERT_TRUE(WaitFor([&] { return done == kJobs + 10; }));
  EXPECT_EQ(pool.threads(), kJobs);
}

TEST(ConnectionThreadsTest, BeyondTheCapJobsWaitForAThread) {
  ConnectionThreads pool(1, 3, milliseconds(60000));
  std::atomic<bool> release{false};
  std::atomic<int> started{0};
  for (int i = 0; i < 5; ++i) {
    pool.enqueue([&] {
      ++started;
      while (!release) std::this_thread::sleep_for(milliseconds(1));
    });
  }
  ASSERT_TRUE(WaitFor([&] { return started == 3; }));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(started, 3);
  EXPECT_EQ(pool.threads(), 3);
  release = true;
  EXPECT_TRUE(WaitFor([&] { return started == 5; }));
}

TEST(ConnectionThreadsTest, IdleThreadsEndDownToTheMinimum) {
  ConnectionThreads pool(2, 100, milliseconds(50));
  std::latch all_started(6);
  for (int i = 0; i < 6; ++i) pool.enqueue([&] { all_started.arrive_and_wait(); });
  EXPECT_TRUE(WaitFor([&] { return pool.threads() == 2; })) << pool.threads();
}

TEST(ConnectionThreadsTest, ShutdownRunsWhatIsQueuedAndWaitsForEveryThread) {
  std::atomic<int> done{0};
  {
    ConnectionThreads pool(1, 1, milliseconds(60000));
    for (int i = 0; i < 5; ++i) {
      pool.enqueue([&] {
        std::this_thread::sleep_for(milliseconds(5));
        ++done;
      });
    }
    pool.shutdown();
    EXPECT_EQ(done, 5);
    EXPECT_EQ(pool.threads(), 0);
  }  // the destructor's second shutdown returns at once
  EXPECT_EQ(done, 5);
}

}  // namespace
}  // namespace fanout::agent
