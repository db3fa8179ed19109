// Tests of the terminal progress line: what it counts and names, and how the console's event
// lines share the terminal with it. The terminal is a temporary file read back.
#include "cli/progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "catalog/test_util.h"

namespace fanout::cli {
namespace {

using std::chrono::seconds;

constexpr const char* kRun = "0190f3a2-7c4e-7d4a-9b1e-4a5c6d7e8f90";
constexpr const char* kErase = "\r\033[K";

class ProgressLineTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(terminal_, nullptr); }
  void TearDown() override { std::fclose(terminal_); }

  // An event of task `path` ("" for the package itself) of execution `execution`.
  static Event Of(EventType type, const std::string& path, const std::string& execution = kRun) {
    Event event = catalog::testing::SampleEvent(execution, type, path + " says hello");
    event.source = path.empty() ? "nightly" : path;
    event.source_id = path;
    return event;
  }

  // The line's sink, over a console printing errors, after the package's first event.
  std::unique_ptr<EventSink> Started(ProgressLine& line) {
    auto sink = line.Wrap(std::make_unique<catalog::ConsoleSink>("E", terminal_));
    sink->Write(Of(EventType::kOnPreExecute, ""));
    return sink;
  }

  // What was written to the terminal so far.
  std::string Written() {
    std::fflush(terminal_);
    std::string text;
    std::rewind(terminal_);
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof buf, terminal_)) text.append(buf, n);
    return text;
  }

  static ProgressLine::Clock::time_point Later(int s) {
    return ProgressLine::Clock::now() + seconds(s);
  }

  FILE* terminal_ = std::tmpfile();
};

TEST_F(ProgressLineTest, CountsTasksAndNamesTheLongestRunningOneThatIsNoContainer) {
  ProgressLine line(terminal_, 200);
  auto sink = Started(line);
  sink->Write(Of(EventType::kOnPreExecute, "load"));
  sink->Write(Of(EventType::kOnPreExecute, "load[1]/region"));
  sink->Write(Of(EventType::kOnPreExecute, "load[2]/region"));
  sink->Write(Of(EventType::kOnPostExecute, "load[1]/region"));
  sink->Write(Of(EventType::kOnTaskFailed, "load[2]/region"));
  sink->Write(Of(EventType::kOnPostExecute, "load[2]/region"));
  sink->Write(Of(EventType::kOnPreExecute, "load[3]/region"));
  sink->Write(Of(EventType::kOnPreExecute, "loader"));  // not inside "load"
  // Between two iterations a loop runs nothing of its own (QA: it was counted, and named).
  sink->Write(Of(EventType::kOnPreExecute, "each"));
  sink->Write(Of(EventType::kOnPreExecute, "each[1]/nap"));
  sink->Write(Of(EventType::kOnPostExecute, "each[1]/nap"));
  // A child package run in this process: its tasks are its package task's business.
  sink->Write(Of(EventType::kOnPreExecute, "", "child-execution"));
  sink->Write(Of(EventType::kOnPreExecute, "work", "child-execution"));

  EXPECT_EQ(line.Render(ProgressLine::Clock::now()), "") << "shown before a second has passed";
  std::string text = line.Render(Later(75));
  EXPECT_EQ(text, "[1:15] 2 running, 3 ended, 1 failed; longest: load[3]/region (1:15)");
  EXPECT_EQ(Written(), "") << "no event printed, nothing drawn";
}

TEST_F(ProgressLineTest, ConsoleLinesGoAboveTheLine) {
  // A run that started an hour ago, so that the line is drawn again at once, at its time then.
  ProgressLine line(terminal_, 200, ProgressLine::Clock::now() - seconds(3600));
  auto sink = Started(line);
  sink->Write(Of(EventType::kOnPreExecute, "load"));
  line.Draw(Later(2));
  std::string drawn = "\r[1:00:02] 1 running, 0 ended, 0 failed; longest: load (0:02)\033[K";
  ASSERT_EQ(Written(), drawn);

  sink->Write(Of(EventType::kOnWarning, "load"));  // not printed with "E": the line stays
  EXPECT_EQ(Written(), drawn);
  sink->Write(Of(EventType::kOnError, "load"));
  std::string after = Written().substr(drawn.size());
  ASSERT_TRUE(after.starts_with(kErase)) << after;
  size_t newline = after.find('\n');
  ASSERT_NE(newline, std::string::npos) << after;
  EXPECT_NE(after.find("OnError       load: load says hello\n"), std::string::npos) << after;
  // Drawn again below the event's line, at the time of now.
  EXPECT_EQ(after.substr(newline + 1),
            "\r[1:00:00] 1 running, 0 ended, 0 failed; longest: load (0:00)\033[K");
}

// A task started a moment after the run shows the run's time, not a second less.
TEST_F(ProgressLineTest, ATaskStartedWithTheRunShowsTheRunsTime) {
  // The run 2.2 s old, its task 1.9 s: truncated, "[0:02] ... a (0:01)".
  ProgressLine line(terminal_, 200, ProgressLine::Clock::now() - std::chrono::milliseconds(300));
  auto sink = Started(line);
  sink->Write(Of(EventType::kOnPreExecute, "a"));
  auto now = ProgressLine::Clock::now() + std::chrono::milliseconds(1900);
  EXPECT_EQ(line.Render(now), "[0:02] 1 running, 0 ended, 0 failed; longest: a (0:02)");
}

TEST_F(ProgressLineTest, StopErasesTheLineAndIsCutToTheTerminalWidth) {
  ProgressLine line(terminal_, 21);
  auto sink = Started(line);
  sink->Write(Of(EventType::kOnPreExecute, "a-task-with-a-long-name"));
  EXPECT_EQ(line.Render(Later(3)), "[0:03] 1 running, 0 ");  // 20 columns: the 21st would wrap
  line.Draw(Later(3));
  line.Stop();
  std::string written = Written();
  EXPECT_TRUE(written.ends_with(std::string("\033[K") + kErase)) << written;
  line.Stop();  // twice is harmless
  EXPECT_EQ(Written(), written);
}

TEST_F(ProgressLineTest, HoursShowAndAUtf8CharacterIsNeverCut) {
  ProgressLine line(terminal_, 52);
  auto sink = Started(line);
  sink->Write(Of(EventType::kOnPreExecute, "région"));
  // "[1:01:01] 1 running, 0 ended, 0 failed; longest: r" is 50 bytes and "é" the next 2: a
  // cut at 51 would split it.
  std::string text = line.Render(Later(3661));
  EXPECT_EQ(text, "[1:01:01] 1 running, 0 ended, 0 failed; longest: r");
}

}  // namespace
}  // namespace fanout::cli
