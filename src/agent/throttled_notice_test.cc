// Tests of ThrottledNotice: said at once, then held back and said when the period passes or at
// Stop, never lost.
#include "agent/throttled_notice.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fanout::agent {
namespace {

using namespace std::chrono_literals;

struct Lines {
  std::mutex mu;
  std::vector<std::string> said;
  ThrottledNotice::Say Sayer() {
    return [this](int count, const std::string& last) {
      std::lock_guard lock(mu);
      said.push_back(std::to_string(count) + " " + last);
    };
  }
  std::vector<std::string> Get() {
    std::lock_guard lock(mu);
    return said;
  }
};

TEST(ThrottledNoticeTest, TheFirstIsSaidAtOnceTheRestWhenThePeriodHasPassed) {
  Lines lines;
  ThrottledNotice notice(200ms, lines.Sayer());
  notice.Note("a");
  EXPECT_EQ(lines.Get(), std::vector<std::string>{"1 a"});
  notice.Note("b");
  notice.Note("c");
  EXPECT_EQ(lines.Get().size(), 1u) << "held back within the period";
  // Said by its own thread once the period has passed, though nothing more came.
  for (int i = 0; i < 100 && lines.Get().size() < 2; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(lines.Get(), (std::vector<std::string>{"1 a", "2 c"}));
  notice.Stop();
  EXPECT_EQ(lines.Get().size(), 2u) << "nothing held back, nothing more said";
}

TEST(ThrottledNoticeTest, WhatIsHeldBackIsSaidAtStopAndLaterNotesAtOnce) {
  Lines lines;
  ThrottledNotice notice(std::chrono::minutes(1), lines.Sayer());
  notice.Note("a");
  notice.Note("b");
  notice.Stop();
  EXPECT_EQ(lines.Get(), (std::vector<std::string>{"1 a", "1 b"}));
  notice.Note("c");
  EXPECT_EQ(lines.Get().back(), "1 c");
}

}  // namespace
}  // namespace fanout::agent
