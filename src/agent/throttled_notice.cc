// ThrottledNotice: see throttled_notice.h.
#include "agent/throttled_notice.h"

namespace fanout::agent {

ThrottledNotice::ThrottledNotice(std::chrono::milliseconds period, Say say)
    : period_(period), say_(std::move(say)) {}

ThrottledNotice::~ThrottledNotice() { Stop(); }

void ThrottledNotice::Note(std::string last) {
  std::lock_guard lock(mu_);
  ++count_;
  last_ = std::move(last);
  const auto now = std::chrono::steady_clock::now();
  if (stop_ || said_at_ == std::chrono::steady_clock::time_point{} || now - said_at_ >= period_) {
    SayLocked(now);
    return;
  }
  if (!sayer_.joinable()) sayer_ = std::thread([this] { Loop(); });
  wake_.notify_one();
}

void ThrottledNotice::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    if (count_ > 0) SayLocked(std::chrono::steady_clock::now());
  }
  wake_.notify_all();
  if (sayer_.joinable() && sayer_.get_id() != std::this_thread::get_id()) sayer_.join();
}

void ThrottledNotice::SayLocked(std::chrono::steady_clock::time_point now) {
  say_(count_, last_);
  count_ = 0;
  said_at_ = now;
}

void ThrottledNotice::Loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (count_ == 0) {
      wake_.wait(lock);
      continue;
    }
    const auto due = said_at_ + period_;
    if (wake_.wait_until(lock, due, [&] { return stop_; })) break;
    const auto now = std::chrono::steady_clock::now();
    if (count_ > 0 && now >= due) SayLocked(now);
  }
}

}  // namespace fanout::agent
