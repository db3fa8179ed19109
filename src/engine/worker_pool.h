// A fixed-capacity pool of threads for blocking task attempts. Threads are started on demand up
// to the capacity, so a package that runs one task at a time uses one thread. Submit() is
// called from the scheduling thread only; the destructor waits for every job to finish.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fanout {

class WorkerPool {
 public:
  explicit WorkerPool(int capacity) : capacity_(capacity) {}
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> job);

 private:
  void Work();

  const int capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  int idle_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace fanout
