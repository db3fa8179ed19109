// Tests of the Masker (event names are tested in common/event_names_test.cc).
#include "fanout/event.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <thread>
#include <vector>

namespace fanout {
namespace {

TEST(MaskerTest, EmptyMaskerReturnsTextUnchanged) {
  Masker masker;
  EXPECT_TRUE(masker.empty());
  masker.AddSecret("");
  EXPECT_TRUE(masker.empty());
  EXPECT_EQ(masker.Mask("password=hunter2"), "password=hunter2");
}

TEST(MaskerTest, MasksEveryOccurrence) {
  Masker masker;
  masker.AddSecret("hunter2");
  EXPECT_FALSE(masker.empty());
  EXPECT_EQ(masker.Mask("pw=hunter2, again hunter2!"), "pw=***, again ***!");
  EXPECT_EQ(masker.Mask("hunter2"), "***");
  EXPECT_EQ(masker.Mask("hunter"), "hunter");
  EXPECT_EQ(masker.Mask(""), "");
}

TEST(MaskerTest, LongerSecretWinsOverItsPrefix) {
  Masker masker;
  masker.AddSecret("abcd");
  masker.AddSecret("abcdefgh");
  EXPECT_EQ(masker.Mask("x abcdefgh y abcd z"), "x *** y *** z");
}

// "0", "1", "false" hidden in every text would turn ids, counts and words into "***" and
// protect nothing.
TEST(MaskerTest, ValuesShorterThanFourCharactersAreNotSearchedFor) {
  Masker masker;
  for (const char* tiny : {"0", "1", "no", "abc"}) masker.AddSecret(tiny);
  EXPECT_EQ(masker.Mask("execution 01a2-0b1c: 1 failed, no rows, abc"),
            "execution 01a2-0b1c: 1 failed, no rows, abc");
  masker.AddSecret("4567");
  EXPECT_EQ(masker.Mask("pin 4567"), "pin ***");
}

TEST(MaskerTest, AParametersWholeValueIsHiddenHoweverShort) {
  Masker masker;
  EXPECT_EQ(masker.MaskValue("Ab1"), "Ab1");
  masker.AddSecret("Ab1");
  masker.AddSecret("");  // an unset sensitive value: nothing to hide
  EXPECT_FALSE(masker.empty());
  EXPECT_EQ(masker.MaskValue("Ab1"), "***");
  EXPECT_EQ(masker.MaskValue("Ab12"), "Ab12");
  EXPECT_EQ(masker.MaskValue(""), "");
  masker.AddSecret("hunter2");
  EXPECT_EQ(masker.MaskValue("hunter2"), "***");
  EXPECT_EQ(masker.MaskValue("user=hunter2"), "user=***");
  // Children get the short ones too, to hide them as their own parameters' values.
  std::vector<std::string> all = masker.secrets();
  EXPECT_NE(std::find(all.begin(), all.end(), "Ab1"), all.end());
}

TEST(MaskerTest, OverlappingSecretsLeaveNoFragment) {
  Masker masker;
  masker.AddSecret("abcd");
  masker.AddSecret("cdef");
  EXPECT_EQ(masker.Mask("[abcdef]"), "[***]");
  // Adjacent occurrences become one run as well.
  EXPECT_EQ(masker.Mask("abcdabcd"), "***");
}

TEST(MaskerTest, IsSafeToUseFromManyThreads) {
  Masker masker;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&masker, t] {
      for (int i = 0; i < 500; ++i) {
        masker.AddSecret("secret-" + std::to_string(t) + "-" + std::to_string(i % 50));
        std::string masked = masker.Mask("x secret-" + std::to_string(t) + "-0 y");
        EXPECT_EQ(masked, "x *** y");
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

TEST(MaskerTest, TruncatedTextAlsoLosesASecretsFirstPartAtItsEnd) {
  Masker masker;
  masker.AddSecret("hunter2");
  EXPECT_EQ(masker.MaskTruncated("pw=hunter2 and hun"), "pw=*** and ***");
  EXPECT_EQ(masker.MaskTruncated("ends in h"), "ends in ***");
  EXPECT_EQ(masker.Mask("ends in hun"), "ends in hun") << "only a truncated text is cut short";
  EXPECT_EQ(masker.MaskTruncated("no secret here"), "no secret here");
}

TEST(MaskerTest, ATailAlsoLosesASecretsLastPartAtItsStart) {
  Masker masker;
  masker.AddSecret("hunter2");
  EXPECT_EQ(masker.MaskTail("ter2 and hunter2"), "*** and ***");
  EXPECT_EQ(masker.MaskTail("2 left"), "*** left");
  EXPECT_EQ(masker.Mask("ter2 left"), "ter2 left") << "only a tail is cut at its start";
  EXPECT_EQ(masker.MaskTail("no secret here"), "no secret here");
}

}  // namespace
}  // namespace fanout
