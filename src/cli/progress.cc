// The terminal progress line of `fanout run` (see progress.h).
#include "cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace fanout::cli {
namespace {

// "0:07", "12:34", "1:02:03", to the nearest second: truncated, a task started with the run
// showed a second less than the run's clock at every redraw (QA).
std::string ClockText(std::chrono::steady_clock::duration d) {
  auto total = std::chrono::round<std::chrono::seconds>(d).count();
  if (total < 3600) return fmt::format("{}:{:02}", total / 60, total % 60);
  return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
}

int TerminalColumns(FILE* terminal) {
  winsize size{};
  if (ioctl(fileno(terminal), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// `text` cut to `width` bytes, never inside a UTF-8 sequence.
void CutTo(std::string& text, size_t width) {
  if (text.size() <= width) return;
  size_t end = width;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
}

}  // namespace

class ProgressLine::Sink : public EventSink {
 public:
  Sink(ProgressLine& line, std::unique_ptr<catalog::ConsoleSink> console)
      : line_(line), console_(std::move(console)) {}

  void Write(const Event& event) override {
    std::lock_guard lock(line_.mu_);
    line_.Count(event, Clock::now());
    if (!console_->Prints(event)) return;
    // The event's line goes where the progress line is, which is drawn again below it.
    bool was_shown = line_.shown_;
    line_.EraseLocked();
    console_->Write(event);
    console_->Flush();
    if (was_shown) line_.DrawLocked(Clock::now());
  }
  void Flush() override {
    std::lock_guard lock(line_.mu_);
    console_->Flush();
  }

 private:
  ProgressLine& line_;
  std::unique_ptr<catalog::ConsoleSink> console_;
};

ProgressLine::ProgressLine(FILE* terminal, int columns, Clock::time_point started)
    : terminal_(terminal), columns_(columns), started_(started) {}

ProgressLine::~ProgressLine() { Stop(); }

bool ProgressLine::Wanted(FILE* out) {
  const char* term = std::getenv("TERM");
  return isatty(fileno(out)) == 1 && term != nullptr && *term != '\0' &&
         std::strcmp(term, "dumb") != 0;
}

std::unique_ptr<EventSink> ProgressLine::Wrap(std::unique_ptr<catalog::ConsoleSink> console) {
  return std::make_unique<Sink>(*this, std::move(console));
}

void ProgressLine::Start() {
  ticker_ = std::thread([this] {
    std::unique_lock lock(mu_);
    for (auto next = started_ + std::chrono::seconds(1);; next += std::chrono::seconds(1)) {
      if (stop_.wait_until(lock, next, [&] { return stopping_; })) return;
      DrawLocked(Clock::now());
    }
  });
}

void ProgressLine::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  Erase();
}

void ProgressLine::Erase() {
  std::lock_guard lock(mu_);
  EraseLocked();
}

std::string ProgressLine::Render(Clock::time_point now) {
  std::lock_guard lock(mu_);
  return RenderLocked(now);
}

void ProgressLine::Draw(Clock::time_point now) {
  std::lock_guard lock(mu_);
  DrawLocked(now);
}

void ProgressLine::Count(const Event& event, Clock::time_point now) {
  // The package's own first event names the run's execution; events of child packages run in
  // this process (their own executions) are counted by their package task alone.
  if (top_execution_.empty() && event.source_id.empty()) top_execution_ = event.execution_id;
  if (event.execution_id != top_execution_ || event.source_id.empty()) return;
  switch (event.type) {
    case EventType::kOnPreExecute:
      running_.emplace(event.source_id, now);
      // Only what runs now, so that each goes with its end (a loop's iterations have no
      // events of their own: "each[3]" would stay for ever).
      for (size_t i = 1; i < event.source_id.size(); ++i) {
        const char c = event.source_id[i];
        if (c != '/' && c != '[') continue;
        std::string outer = event.source_id.substr(0, i);
        if (running_.count(outer) != 0) containers_.insert(std::move(outer));
      }
      break;
    case EventType::kOnPostExecute:
      ended_ += static_cast<int>(running_.erase(event.source_id));
      containers_.erase(event.source_id);
      break;
    case EventType::kOnTaskFailed:
      ++failed_;
      break;
    default:
      break;
  }
}

std::string ProgressLine::RenderLocked(Clock::time_point now) const {
  if (now - started_ < std::chrono::seconds(1)) return "";
  // Containers run as long as what they hold: the line counts and names tasks doing work
  // themselves.
  int working = 0;
  auto longest = running_.end();
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (containers_.count(it->first) != 0) continue;
    ++working;
    if (longest == running_.end() || it->second < longest->second) longest = it;
  }
  std::string text = fmt::format("[{}] {} running, {} ended, {} failed", ClockText(now - started_),
                                 working, ended_, failed_);
  if (longest != running_.end()) {
    text += fmt::format("; longest: {} ({})", longest->first, ClockText(now - longest->second));
  }
  int columns = columns_ > 0 ? columns_ : TerminalColumns(terminal_);
  CutTo(text, static_cast<size_t>(std::max(columns - 1, 1)));  // the last column would wrap
  return text;
}

void ProgressLine::DrawLocked(Clock::time_point now) {
  std::string text = RenderLocked(now);
  if (text.empty()) return;
  std::fprintf(terminal_, "\r%s\033[K", text.c_str());
  std::fflush(terminal_);
  shown_ = true;
}

void ProgressLine::EraseLocked() {
  if (!shown_) return;
  std::fputs("\r\033[K", terminal_);
  std::fflush(terminal_);
  shown_ = false;
}

}  // namespace fanout::cli
