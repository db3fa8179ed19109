// The Masker that hides secrets in every text bound for a log sink or the catalog. (Event names
// are in common/event_names.cc, where the package loader can reach them too.)
#include "fanout/event.h"

#include <algorithm>
#include <atomic>
#include <bitset>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace fanout {

struct Masker::Impl {
  mutable std::shared_mutex mu;
  // Longest first, so the longest secret starting at a position is found first.
  std::vector<std::string> secrets;
  // Under kMinSecretLength: hidden as whole values only.
  std::vector<std::string> short_secrets;
  // First bytes of all secrets: most positions of a text are rejected by one lookup.
  std::bitset<256> first_bytes;
  // Read without the lock so that Mask() on a run without secrets costs one atomic load.
  std::atomic<bool> empty{true};
};

Masker::Masker() : impl_(new Impl) {}

Masker::~Masker() { delete impl_; }

void Masker::AddSecret(std::string secret) {
  if (secret.empty()) return;
  std::unique_lock lock(impl_->mu);
  if (secret.size() < kMinSecretLength) {
    auto& short_secrets = impl_->short_secrets;
    if (std::find(short_secrets.begin(), short_secrets.end(), secret) == short_secrets.end()) {
      short_secrets.push_back(std::move(secret));
    }
    impl_->empty.store(false, std::memory_order_release);
    return;
  }
  auto& secrets = impl_->secrets;
  if (std::find(secrets.begin(), secrets.end(), secret) != secrets.end()) return;
  impl_->first_bytes.set(static_cast<unsigned char>(secret[0]));
  secrets.push_back(std::move(secret));
  std::stable_sort(secrets.begin(), secrets.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  impl_->empty.store(false, std::memory_order_release);
}

std::vector<std::string> Masker::secrets() const {
  std::shared_lock lock(impl_->mu);
  std::vector<std::string> all = impl_->secrets;
  all.insert(all.end(), impl_->short_secrets.begin(), impl_->short_secrets.end());
  return all;
}

std::string Masker::MaskValue(std::string_view value) const {
  if (empty()) return std::string(value);
  {
    std::shared_lock lock(impl_->mu);
    const auto& list = value.size() < kMinSecretLength ? impl_->short_secrets : impl_->secrets;
    if (std::find(list.begin(), list.end(), value) != list.end()) return "***";
  }
  return Mask(value);
}

bool Masker::empty() const { return impl_->empty.load(std::memory_order_acquire); }

// Every byte covered by an occurrence of any secret is hidden, and each maximal covered run
// becomes one "***". Overlapping secrets ("abcd" and "cdef" in "abcdef") therefore leave no
// fragment of either visible, which replacing leftmost matches one at a time would.
std::string Masker::Mask(std::string_view text) const { return Mask(text, false); }

std::string Masker::MaskTruncated(std::string_view text) const { return Mask(text, true); }

std::string Masker::MaskTail(std::string_view text) const { return Mask(text, false, true); }

std::string Masker::MaskOutputEnd(std::string_view captured, size_t dropped,
                                  std::string_view tail) const {
  return dropped > 0 ? MaskTail(tail) : Mask(captured);
}

std::string Masker::Mask(std::string_view text, bool cut_end, bool cut_start) const {
  if (empty()) return std::string(text);
  std::shared_lock lock(impl_->mu);
  const auto& secrets = impl_->secrets;
  const auto& first_bytes = impl_->first_bytes;
  std::string out;
  out.reserve(text.size());
  size_t covered_until = 0;  // bytes before this index are covered by some occurrence
  if (cut_start) {  // the text may begin with a secret's last part: the longest such is covered
    for (const auto& secret : secrets) {
      for (size_t length = std::min(secret.size() - 1, text.size()); length > covered_until;
           --length) {
        if (text.substr(0, length) == std::string_view(secret).substr(secret.size() - length)) {
          covered_until = length;
          break;
        }
      }
    }
  }
  bool in_run = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (first_bytes.test(static_cast<unsigned char>(text[i]))) {
      for (const auto& secret : secrets) {
        size_t left = text.size() - i;
        // A truncated text may end in the first part of a secret: that part is covered too.
        size_t length = cut_end ? std::min(secret.size(), left) : secret.size();
        if (length <= left && std::memcmp(text.data() + i, secret.data(), length) == 0) {
          covered_until = std::max(covered_until, i + length);
          break;  // longest first: a shorter match here ends earlier
        }
      }
    }
    if (i < covered_until) {
      if (!in_run) out += "***";
      in_run = true;
      continue;
    }
    in_run = false;
    out += text[i];
  }
  return out;
}

}  // namespace fanout
