// Tests of the command line `fanout --argv-from-stdin` reads from its stdin (ParseArgvLine).
#include "cli/cli.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fanout::cli {
namespace {

using Args = std::vector<std::string>;

TEST(ParseArgvLineTest, TakesAJsonArrayOfStrings) {
  auto args = ParseArgvLine(R"(["run", "/data/p.yaml", "--set", "x=a b;\"c"])");
  ASSERT_TRUE(args.ok()) << args.status().ToString();
  EXPECT_EQ(*args, (Args{"run", "/data/p.yaml", "--set", "x=a b;\"c"}));
  auto none = ParseArgvLine("[]");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(ParseArgvLineTest, SaysWhatIsWrongInItsOwnWords) {
  auto message = [](const std::string& line) {
    auto args = ParseArgvLine(line);
    EXPECT_FALSE(args.ok()) << line;
    EXPECT_EQ(args.status().code(), Code::kInvalidArgument) << line;
    return args.status().message();
  };
  EXPECT_EQ(message("[\"run\""), "it is not valid JSON");
  EXPECT_EQ(message(""), "it is not valid JSON");
  EXPECT_EQ(message(R"({"run": 1})"), "it is not an array");
  EXPECT_EQ(message(R"(["run", 2])"), "argument 2 is a JSON number, not a string");
  EXPECT_EQ(message(R"([["run"]])"), "argument 1 is a JSON array, not a string");
  // Arguments are C strings: one with a NUL would reach the command cut short.
  EXPECT_EQ(message(R"(["run", "a\u0000b"])"), "argument 2 holds a NUL character");
}

}  // namespace
}  // namespace fanout::cli
