// Worker threads for blocking task attempts (see worker_pool.h).
#include "engine/worker_pool.h"

namespace fanout {

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Submit(std::function<void()> job) {
  bool spawn = false;
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
    spawn = idle_ < static_cast<int>(jobs_.size()) &&
            static_cast<int>(threads_.size()) < capacity_;
  }
  if (spawn) {
    threads_.emplace_back([this] { Work(); });
  } else {
    cv_.notify_one();
  }
}

void WorkerPool::Work() {
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_;
    cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    --idle_;
    if (jobs_.empty()) return;  // stopping and nothing left
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

}  // namespace fanout
