// CancelToken: a stop flag with an eventfd so poll() loops wake at once (see fanout/task.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "fanout/task.h"

namespace fanout {

struct CancelToken::Callbacks {
  std::map<uint64_t, std::function<void()>> by_id;
  uint64_t last_id = 0;
};

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
  std::lock_guard lock(mu_);
  if (fd_ >= 0) Signal(fd_);
  if (callbacks_ == nullptr) return;
  for (auto& [id, stop] : callbacks_->by_id) stop();
  callbacks_->by_id.clear();
}

CancelToken::Callback CancelToken::OnCancel(std::function<void()> stop) const {
  std::lock_guard lock(mu_);
  if (canceled()) return Callback();
  if (callbacks_ == nullptr) callbacks_ = std::make_unique<Callbacks>();
  callbacks_->by_id.emplace(++callbacks_->last_id, std::move(stop));
  return Callback(this, callbacks_->last_id);
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
  std::lock_guard lock(token_->mu_);
  token_->callbacks_->by_id.erase(id_);
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
