// CancelToken: a stop flag with an eventfd so poll() loops wake at once (see fanout/task.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "fanout/task.h"

namespace fanout {

CancelToken::CancelToken() = default;

CancelToken::~CancelToken() {
  if (fd_ >= 0) close(fd_);
}

namespace {
void Signal(int fd) {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof one);
}
}  // namespace

void CancelToken::Cancel(Reason reason) {
  Reason expected = Reason::kNone;
  if (!reason_.compare_exchange_strong(expected, reason)) return;
  {
    std::lock_guard lock(mu_);
    if (fd_ >= 0) Signal(fd_);
  }
  std::lock_guard lock(callbacks_mu_);
  for (auto& [id, stop] : callbacks_) stop();
  callbacks_.clear();
}

CancelToken::Callback CancelToken::OnCancel(std::function<void()> stop) const {
  std::lock_guard lock(callbacks_mu_);
  if (canceled()) return Callback();
  callbacks_.emplace(++next_callback_, std::move(stop));
  return Callback(this, next_callback_);
}

CancelToken::Callback& CancelToken::Callback::operator=(Callback&& other) noexcept {
  if (this != &other) {
    Callback gone(std::move(*this));
    token_ = std::exchange(other.token_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

CancelToken::Callback::~Callback() {
  if (token_ == nullptr) return;
  std::lock_guard lock(token_->callbacks_mu_);
  token_->callbacks_.erase(id_);
}

int CancelToken::fd() const {
  std::lock_guard lock(mu_);
  if (fd_ < 0) {
    fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd_ >= 0 && canceled()) Signal(fd_);  // canceled before anyone asked for the fd
  }
  return fd_;
}

bool CancelToken::SleepFor(std::chrono::milliseconds d) const {
  if (canceled()) return false;
  pollfd p{fd(), POLLIN, 0};
  poll(&p, 1, static_cast<int>(d.count()));
  return !canceled();
}

}  // namespace fanout
