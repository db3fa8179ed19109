// The agent's elastic pool of HTTP connection threads (see connection_threads.h).
#include "agent/connection_threads.h"

#include <system_error>
#include <thread>

namespace fanout::agent {

ConnectionThreads::ConnectionThreads(int min_threads, int max_threads,
                                     std::chrono::milliseconds idle_limit)
    : min_threads_(min_threads), max_threads_(max_threads), idle_limit_(idle_limit) {}

ConnectionThreads::~ConnectionThreads() { shutdown(); }

void ConnectionThreads::enqueue(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  jobs_.push_back(std::move(fn));
  if (idle_ >= static_cast<int>(jobs_.size())) {
    work_.notify_one();
  } else if (threads_ < max_threads_) {
    ++threads_;
    ++idle_;  // counted idle until it takes a job, so the next enqueue does not start another
    try {
      std::thread([this] { Work(); }).detach();
    } catch (const std::system_error&) {
      // Out of threads (ulimit -u, memory): the job waits for a running thread instead.
      --threads_;
      --idle_;
    }
  }
}

void ConnectionThreads::shutdown() {
  std::unique_lock lock(mu_);
  shutdown_ = true;
  work_.notify_all();
  ended_.wait(lock, [&] { return threads_ == 0; });
}

int ConnectionThreads::threads() {
  std::lock_guard lock(mu_);
  return threads_;
}

void ConnectionThreads::Work() {
  std::unique_lock lock(mu_);
  for (;;) {
    bool woke = work_.wait_for(lock, idle_limit_, [&] { return !jobs_.empty() || shutdown_; });
    if (jobs_.empty() && (shutdown_ || (!woke && threads_ > min_threads_))) break;
    if (jobs_.empty()) continue;
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    --idle_;
    lock.unlock();
    job();
    lock.lock();
    ++idle_;
  }
  --idle_;
  --threads_;
  ended_.notify_all();  // after this, the thread touches nothing of the pool's
}

}  // namespace fanout::agent
