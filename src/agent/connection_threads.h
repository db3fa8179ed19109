// The agent's HTTP connection threads. cpp-httplib serves a connection on one thread for as
// long as it stays open (keep-alive), and a long-poll holds that thread while it waits, so a
// fixed pool starves every connection beyond its size: with 64 threads, a parent running 100
// children on a 100-slot agent had 16 starts time out. This pool starts a thread whenever a
// connection finds none idle, up to a cap, and lets threads idle for a while end.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

#include <httplib.h>

namespace fanout::agent {

class ConnectionThreads : public httplib::TaskQueue {
 public:
  // At most `max_threads` at once (connections beyond wait for one); a thread idle for
  // `idle_limit` ends, down to `min_threads`.
  ConnectionThreads(int min_threads, int max_threads, std::chrono::milliseconds idle_limit);
  ~ConnectionThreads() override;

  void enqueue(std::function<void()> fn) override;
  // Runs what is queued, then returns once every thread has ended.
  void shutdown() override;

  int threads();  // alive now, for tests

 private:
  void Work();

  const int min_threads_;
  const int max_threads_;
  const std::chrono::milliseconds idle_limit_;
  std::mutex mu_;
  std::condition_variable work_;   // a job came, or shutdown
  std::condition_variable ended_;  // a thread ended
  std::deque<std::function<void()>> jobs_;
  int threads_ = 0;
  int idle_ = 0;  // waiting for a job
  bool shutdown_ = false;
};

}  // namespace fanout::agent
