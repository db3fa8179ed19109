// The progress line `fanout run` keeps at the bottom of a terminal during a long run
// (DESIGN §5): how many tasks run, have ended and have failed, the time so far, and the task
// that has been running longest, redrawn in place. It appears once the run has lasted a second,
// so short runs print exactly what they print without a terminal.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "catalog/log_sinks.h"
#include "fanout/event.h"

namespace fanout::cli {

class ProgressLine {
 public:
  using Clock = std::chrono::steady_clock;

  // Draws on `terminal` (not owned), where the console's event lines go too. `columns` is the
  // terminal's width; 0 asks the terminal. The run's time counts from `started`.
  explicit ProgressLine(FILE* terminal, int columns = 0, Clock::time_point started = Clock::now());
  ~ProgressLine();  // Stop()
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Whether `fanout run` should show one: its stdout is a terminal that can redraw a line.
  static bool Wanted(FILE* out);

  // The sink to give the Recorder instead of `console`: it counts the run's tasks from their
  // events and writes the console's lines above the progress line. Must not outlive this.
  std::unique_ptr<EventSink> Wrap(std::unique_ptr<catalog::ConsoleSink> console);

  // Redraws once a second from a thread of its own.
  void Start();
  // Ends the redrawing and erases the line, so what follows starts on a clean line.
  void Stop();
  // Erases the line until the next redraw, for a message written to the terminal elsewhere.
  void Erase();

  // The line as it would be drawn at `now`; "" while the run is younger than a second.
  std::string Render(Clock::time_point now);
  // Draws Render(now) over the current line. Start()'s thread calls it.
  void Draw(Clock::time_point now);

 private:
  class Sink;
  void Count(const Event& event, Clock::time_point now);
  void EraseLocked();
  void DrawLocked(Clock::time_point now);
  std::string RenderLocked(Clock::time_point now) const;

  FILE* const terminal_;
  const int columns_;
  const Clock::time_point started_;

  std::mutex mu_;  // the counts and the terminal
  std::string top_execution_;  // the run's own execution, from the package's first event
  std::map<std::string, Clock::time_point> running_;  // task path -> when it started
  // Running paths known to be containers: something has started in them ("each" once
  // "each[3]/nap" did). Between two iterations a loop runs nothing of its own.
  std::set<std::string> containers_;
  int ended_ = 0;
  int failed_ = 0;
  bool shown_ = false;  // the line is on the terminal now

  std::condition_variable stop_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace fanout::cli
