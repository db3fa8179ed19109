// CancelToken: a stop flag with an eventfd so poll() loops wake at once (see fanout/task.h).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "fanout/task.h"

namespace fanout {

CancelToken::CancelToken() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

CancelToken::~CancelToken() {
  if (fd_ >= 0) close(fd_);
}

void CancelToken::Cancel(Reason reason) {
  Reason expected = Reason::kNone;
  if (!reason_.compare_exchange_strong(expected, reason)) return;
  if (fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  }
}

int CancelToken::fd() const { return fd_; }

bool CancelToken::SleepFor(std::chrono::milliseconds d) const {
  if (canceled()) return false;
  pollfd p{fd_, POLLIN, 0};
  poll(&p, 1, static_cast<int>(d.count()));
  return !canceled();
}

}  // namespace fanout
