// A line on the agent's stderr about something that can come many times a second (requests
// refused for their token, 500 answers): said at once, then at most once a period with how many
// came meanwhile and the last one's words. Those held back are said when their period has
// passed (on a thread of its own, started with the first held back) or at Stop, whether or not
// more come: a last burst is not left unsaid. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace fanout::agent {

class ThrottledNotice {
 public:
  // Writes the line for `count` occurrences, the last of them described by `last`.
  using Say = std::function<void(int count, const std::string& last)>;
  ThrottledNotice(std::chrono::milliseconds period, Say say);
  ~ThrottledNotice();  // Stop()
  ThrottledNotice(const ThrottledNotice&) = delete;
  ThrottledNotice& operator=(const ThrottledNotice&) = delete;

  // One more occurrence.
  void Note(std::string last);
  // Says what is held back and ends the thread; later notes are said at once.
  void Stop();

 private:
  void SayLocked(std::chrono::steady_clock::time_point now);
  void Loop();

  const std::chrono::milliseconds period_;
  const Say say_;
  std::mutex mu_;
  std::condition_variable wake_;
  int count_ = 0;  // since the last line
  std::string last_;
  std::chrono::steady_clock::time_point said_at_{};
  bool stop_ = false;
  std::thread sayer_;
};

}  // namespace fanout::agent
