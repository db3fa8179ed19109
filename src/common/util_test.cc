// Tests of the small shared helpers in common/util.h: UUIDv7 execution ids, durations as written
// in packages and as shown to humans, SHA-256 fingerprints and file reading.
#include "common/util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"

namespace fanout {
namespace {

using std::chrono::milliseconds;

using fanout::testing::TempDir;

uint64_t IdMillis(const std::string& id) {
  auto time = ExecutionIdTime(id);
  EXPECT_TRUE(time.has_value()) << id;
  return time ? static_cast<uint64_t>(time->time_since_epoch().count()) : 0;
}

uint64_t NowMillis() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

// ---- NewExecutionId ---------------------------------------------------------------------------

// JSON writers refuse what is not UTF-8 (nlohmann throws): params, job files and command
// lines are checked with this first.
TEST(Utf8Test, FindsTheFirstByteThatIsNotUtf8) {
  EXPECT_EQ(InvalidUtf8At(""), std::nullopt);
  EXPECT_EQ(InvalidUtf8At("café ☕ 𝄞"), std::nullopt);
  EXPECT_EQ(InvalidUtf8At("caf\xe9.csv"), 3u);       // Latin-1
  EXPECT_EQ(InvalidUtf8At("ab\xc3"), 2u);            // cut short
  EXPECT_EQ(InvalidUtf8At("\xc0\xaf"), 0u);          // overlong '/'
  EXPECT_EQ(InvalidUtf8At("x\xe0\x80\xaf"), 1u);     // overlong, three bytes
  EXPECT_EQ(InvalidUtf8At("\xed\xa0\x80"), 0u);      // a surrogate
  EXPECT_EQ(InvalidUtf8At("\xf4\x90\x80\x80"), 0u);  // beyond U+10FFFF
  EXPECT_EQ(InvalidUtf8At("\x80"), 0u);              // a continuation alone
  EXPECT_EQ(InvalidUtf8At("\xf4\x8f\xbf\xbf"), std::nullopt);  // U+10FFFF
}

TEST(ExecutionIdTest, HasUuidV7Format) {
  const std::regex uuid7("^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  for (int i = 0; i < 200; ++i) {
    std::string id = NewExecutionId();
    ASSERT_EQ(id.size(), 36u) << id;
    EXPECT_TRUE(std::regex_match(id, uuid7)) << id;
    EXPECT_EQ(id[14], '7') << "version nibble: " << id;
  }
}

TEST(ExecutionIdTest, StartsWithCurrentUnixMilliseconds) {
  uint64_t before = NowMillis();
  std::string id = NewExecutionId();
  uint64_t after = NowMillis();
  uint64_t ms = IdMillis(id);
  EXPECT_GE(ms, before) << id;
  EXPECT_LE(ms, after) << id;
}

TEST(ExecutionIdTest, IsExecutionIdTakesOnlyTheWholeForm) {
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(IsExecutionId(NewExecutionId()));
  const std::string good = "01a220e9-37c6-7faa-9bc9-cf7885e09c3c";
  EXPECT_TRUE(IsExecutionId(good));
  for (const std::string& bad : std::vector<std::string>{"notauuid", "", good.substr(1),
                          "01A220E9-37C6-7FAA-9BC9-CF7885E09C3C",   // upper case
                          "01a220e9-37c6-6faa-9bc9-cf7885e09c3c",   // version 6
                          "01a220e9-37c6-7faa-cbc9-cf7885e09c3c",   // variant
                          "01a220e9-37c6-7faa-9bc9-cf7885e0/../"}) {  // a path's end
    EXPECT_FALSE(IsExecutionId(bad)) << bad;
  }
}

TEST(ExecutionIdTest, OnlyAnIdOfOursHasATime) {
  for (const char* other : {"", "exec", "pruned-long-ago", "01a21975-1f89-41fd-8f2a-0197c612a594",
                            "01a2197g-1f89-71fd-8f2a-0197c612a594"}) {
    EXPECT_FALSE(ExecutionIdTime(other).has_value()) << other;
  }
}

TEST(ExecutionIdTest, SortsByCreationTime) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    std::string id = NewExecutionId();
    // Wait for the millisecond clock to move on (not synchronisation: the time is the input).
    uint64_t ms = IdMillis(id);
    while (NowMillis() <= ms) std::this_thread::sleep_for(std::chrono::microseconds(200));
    ids.push_back(id);
  }
  ids.push_back(NewExecutionId());
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_LT(ids[i - 1], ids[i]) << "ids created later must sort later";
    EXPECT_LT(IdMillis(ids[i - 1]), IdMillis(ids[i]));
  }
}

TEST(ExecutionIdTest, IsUniqueAcrossCallsAndThreads) {
  std::mutex mu;
  std::set<std::string> all;
  std::vector<std::thread> threads;
  constexpr int kThreads = 4, kPerThread = 5000;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < kPerThread; ++i) mine.push_back(NewExecutionId());
      std::lock_guard lock(mu);
      all.insert(mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
}

// ---- ParseDuration ----------------------------------------------------------------------------

TEST(ParseDurationTest, AcceptsEveryUnit) {
  struct Case {
    const char* text;
    int64_t ms;
  };
  for (const Case& c : {Case{"250ms", 250}, Case{"30s", 30000}, Case{"10m", 600000},
                        Case{"2h", 7200000}, Case{"1d", 86400000}, Case{"0ms", 0}, Case{"0", 0},
                        Case{"1.5s", 1500}, Case{"0.5m", 30000},
                        // A positive duration under the millisecond is not 0, which means "none".
                        Case{"0.4ms", 1}, Case{"0.0004", 1}, Case{"1.4ms", 1}}) {
    auto d = ParseDuration(c.text);
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status().ToString();
    EXPECT_EQ(d->count(), c.ms) << c.text;
  }
}

TEST(ParseDurationTest, PlainNumberMeansSeconds) {
  auto d = ParseDuration("1.5");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, milliseconds(1500));
  auto whole = ParseDuration("7");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(*whole, milliseconds(7000));
}

TEST(ParseDurationTest, RejectsMalformedText) {
  for (const char* text :
       {"", "abc", "10x", "s", "ms", "-1s", "-5", "1.5.2s", "10 s", "s10", "10sec", "1h30m"}) {
    auto d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << "'" << text << "' gave " << (d.ok() ? d->count() : 0) << " ms";
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), Code::kInvalidArgument) << text;
      EXPECT_NE(d.status().message().find("250ms"), std::string::npos)
          << "the message shows the accepted forms: " << d.status().message();
    }
  }
}

TEST(ParseDurationTest, RejectsNonFiniteAndOutOfRangeNumbers) {
  for (const char* text : {"inf", "infs", "nan", "nanms"}) {
    auto d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << "'" << text << "' gave " << (d.ok() ? d->count() : 0) << " ms";
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), Code::kInvalidArgument) << text;
    }
  }
  // Numbers, only too large: a caller can say so rather than "not a duration".
  for (const char* text : {"1e300s", "1e20d"}) {
    auto d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << "'" << text << "' gave " << (d.ok() ? d->count() : 0) << " ms";
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), Code::kResourceExhausted) << text;
    }
  }
}

TEST(ParseDurationTest, AcceptsUpToAHundredYears) {
  auto most = ParseDuration("36500d");
  ASSERT_TRUE(most.ok()) << most.status().ToString();
  EXPECT_EQ(most->count(), int64_t{36500} * 86400000);
  auto plain = ParseDuration("3153600000");  // 100 years in seconds
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(*plain, *most);
  auto over = ParseDuration("36501d");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kResourceExhausted);
  EXPECT_NE(over.status().message().find("36501d"), std::string::npos) << over.status().message();
}

// ---- FormatDuration ---------------------------------------------------------------------------

TEST(FormatDurationTest, PicksAUnitForHumans) {
  using std::chrono::hours;
  using std::chrono::minutes;
  using std::chrono::seconds;
  EXPECT_EQ(FormatDuration(milliseconds(12)), "12.0 ms");
  EXPECT_EQ(FormatDuration(std::chrono::microseconds(1500)), "1.5 ms");
  EXPECT_EQ(FormatDuration(std::chrono::nanoseconds(0)), "0.0 ms");
  EXPECT_EQ(FormatDuration(milliseconds(1234)), "1.23 s");
  EXPECT_EQ(FormatDuration(seconds(59)), "59.00 s");
  EXPECT_EQ(FormatDuration(seconds(184)), "3 m 04 s");
  EXPECT_EQ(FormatDuration(minutes(59) + seconds(59)), "59 m 59 s");
  EXPECT_EQ(FormatDuration(hours(2) + minutes(5) + seconds(9)), "2 h 05 m");
}

TEST(FormatDurationTest, RoundTripsWhatParseDurationReads) {
  // The engine writes retry delays and timeouts with FormatDuration; they must read as the
  // same amount of time to a human, so check the numbers survive.
  auto d = ParseDuration("250ms");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(FormatDuration(*d), "250.0 ms");
  auto m = ParseDuration("10m");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(FormatDuration(*m), "10 m 00 s");
}

// ---- Sha256Hex --------------------------------------------------------------------------------

TEST(Sha256HexTest, MatchesKnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256HexTest, HashesEmbeddedNulBytes) {
  std::string with_nul("a\0b", 3);
  EXPECT_NE(Sha256Hex(with_nul), Sha256Hex("a"));
  EXPECT_EQ(Sha256Hex(with_nul).size(), 64u);
}

// ---- ReadFile ---------------------------------------------------------------------------------

TEST(ReadFileTest, MissingFileIsNotFound) {
  TempDir dir;
  auto r = ReadFile(dir.File("no-such-file.yaml"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("no-such-file.yaml"), std::string::npos)
      << r.status().message();
}

TEST(ReadFileTest, ReadsBytesExactly) {
  TempDir dir;
  std::string content("line 1\nline 2\r\n\0binary\xff", 23);
  {
    std::ofstream out(dir.File("f.bin"), std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  auto r = ReadFile(dir.File("f.bin"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, content);
}

TEST(ReadFileTest, EmptyFileIsEmptyText) {
  TempDir dir;
  { std::ofstream out(dir.File("empty")); }
  auto r = ReadFile(dir.File("empty"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "");
}

TEST(ReadFileTest, DirectoryIsAnError) {
  TempDir dir;
  auto r = ReadFile(dir.path());
  EXPECT_FALSE(r.ok()) << "reading a directory returned " << (r.ok() ? "'" + *r + "'" : "");
  if (!r.ok()) {
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(dir.path()), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("is a directory"), std::string::npos)
        << r.status().message();
  }
}

TEST(ReadFileTest, ReadsFilesLargerThanOneBuffer) {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 50000; ++i) content += std::to_string(i) + "\n";
  {
    std::ofstream out(dir.File("big.txt"), std::ios::binary);
    out << content;
  }
  auto r = ReadFile(dir.File("big.txt"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, content);
}

// Jobs and packages are files named after them in an agent's data_dir (QA: `..` was stored).
TEST(NameTest, NamesAreLettersDigitsAndDashDotUnderscoreButNotDotOrDotDot) {
  for (const char* good : {"a", "load-region.v2", "_x", "...", ".hidden", "A9"}) {
    EXPECT_TRUE(IsValidName(good)) << good;
  }
  for (const char* bad : {"", ".", "..", "a/b", "a b", "ä", "x\n"}) {
    EXPECT_FALSE(IsValidName(bad)) << bad;
  }
  EXPECT_TRUE(IsValidName(std::string(128, 'x')));
  EXPECT_FALSE(IsValidName(std::string(129, 'x')));
}

// ---- Host and user ----------------------------------------------------------------------------

TEST(IdentityTest, HostAndUserNamesAreKnown) {
  EXPECT_FALSE(HostName().empty());
  EXPECT_FALSE(UserName().empty());
  EXPECT_EQ(&HostName(), &HostName()) << "computed once";
}

}  // namespace
}  // namespace fanout

namespace fanout {
namespace {

TEST(WriteFileAtomicallyTest, WritesWholeOrSaysWhyNamingThePath) {
  testing::TempDir dir;
  std::string path = dir.path() + "/out.txt";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  Status failed = WriteFileAtomically(dir.path() + "/missing/out.txt", "x");
  EXPECT_EQ(failed.message(),
            "cannot write " + dir.path() + "/missing/out.txt: No such file or directory");
}

// A link is followed and only a regular file is replaced (QA, as root: `--html /dev/full` put
// a file in the device's place; a link became a file; a pipe hung the report).
TEST(WriteFileAtomicallyTest, FollowsALinkAndReplacesOnlyARegularFile) {
  testing::TempDir dir;
  const std::string target = dir.File("target.html"), link = dir.File("link.html");
  ASSERT_TRUE(WriteFileAtomically(target, "old").ok());
  std::filesystem::create_symlink(target, link);
  ASSERT_TRUE(WriteFileAtomically(link, "new").ok());
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(*ReadFile(target), "new");
  ASSERT_EQ(mkfifo(dir.File("pipe").c_str(), 0600), 0);
  Status pipe = WriteFileAtomically(dir.File("pipe"), "x");
  EXPECT_EQ(pipe.message(), "cannot write " + dir.File("pipe") +
                                ": it is not a regular file but a pipe; give a file's name");
  EXPECT_FALSE(WriteFileAtomically(dir.path(), "x").ok());
  if (geteuid() == 0) {  // only root can give a link away
    std::filesystem::create_symlink(target, dir.File("theirs.html"));
    ASSERT_EQ(lchown(dir.File("theirs.html").c_str(), 65534, 65534), 0);
    EXPECT_EQ(WriteFileAtomically(dir.File("theirs.html"), "x").message(),
              "cannot write " + dir.File("theirs.html") +
                  ": it is a symbolic link of another user (uid 65534), not followed");
    EXPECT_EQ(*ReadFile(target), "new");
  }
  std::filesystem::create_symlink(dir.File("nowhere/x"), dir.File("dangling"));
  EXPECT_EQ(WriteFileAtomically(dir.File("dangling"), "x").message(),
            "cannot write " + dir.File("dangling") +
                ": it is a symbolic link that cannot be followed (No such file or directory)");
}

TEST(IndentFurtherLinesTest, IndentsEveryLineButTheFirstAndDropsFinalBreaks) {
  EXPECT_EQ(IndentFurtherLines("one\ntwo\n\nthree\n\n", "  "), "one\n  two\n  \n  three");
  EXPECT_EQ(IndentFurtherLines("single", "  "), "single");
  EXPECT_EQ(IndentFurtherLines("", "  "), "");
}

TEST(EscapeControlsTest, LeavesTextAndLayoutButShowsControlsAsEscapes) {
  EXPECT_EQ(EscapeControls("plain\ttext\nnext line, caf\u00e9"), "plain\ttext\nnext line, caf\u00e9");
  EXPECT_EQ(EscapeControls("bad\x1b[2J\x1b]0;pwned\x07" "end\r"),
            "bad\\x1b[2J\\x1b]0;pwned\\x07end\\x0d");
  EXPECT_EQ(EscapeControls("csi\xc2\x9b" "31m del\x7f"), "csi\\u009b31m del\\x7f");
}

// The line named is the one indented with a tab nearest the error; a line of only whitespace
// (a tab on an empty line) is not one.
TEST(YamlTabHintTest, NamesTheTabIndentedLineNearestTheError) {
  const std::string text = "a:\n\tb: 1\n \t\nc:\n\td: 2\n";
  EXPECT_EQ(YamlTabHint(text, 5), "; line 5 is indented with a tab: YAML indents with spaces only");
  EXPECT_EQ(YamlTabHint(text, 3), "; line 2 is indented with a tab: YAML indents with spaces only");
  EXPECT_EQ(YamlTabHint("a:\n  b: 1\n", 2), "");
}

TEST(FindNulByteTest, GivesLineAndColumn) {
  EXPECT_FALSE(FindNulByte("package: p\n").has_value());
  EXPECT_EQ(FindNulByte(std::string("package: p\0\n", 12)), std::make_pair(1, 11));
  EXPECT_EQ(FindNulByte(std::string("a\nbc\0", 5)), std::make_pair(2, 3));
  EXPECT_EQ(FindNulByte(std::string("\0", 1)), std::make_pair(1, 1));
}

TEST(IsNumericAddressTest, AddressesButNotNames) {
  for (const char* address : {"127.0.0.1", "10.0.0.11", "::1", "fe80::1"}) {
    EXPECT_TRUE(IsNumericAddress(address)) << address;
  }
  for (const char* name : {"localhost", "srv1.example", "", "[::1]", "127.0.0"}) {
    EXPECT_FALSE(IsNumericAddress(name)) << name;
  }
}

// A process may name itself anything, a closing parenthesis and a line break included: the
// fields after the name are still its own (a forged parent and group would let a kill of a
// process tree reach a stranger).
TEST(ReadProcStatTest, ReadsTheFieldsAfterANameThatForgesThem) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setpgid(0, 0);
    prctl(PR_SET_NAME, "x) R 1 1\n", 0, 0, 0);
    pause();
    _exit(0);
  }
  setpgid(child, child);  // whichever runs first
  for (int i = 0; i < 200; ++i) {  // until it has named itself
    auto comm = ReadFile("/proc/" + std::to_string(child) + "/comm");
    if (comm.ok() && comm->starts_with("x)")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::optional<ProcStat> stat = ReadProcStat(child);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(stat.has_value());
  EXPECT_EQ(stat->ppid, getpid());
  EXPECT_EQ(stat->pgrp, child);
  EXPECT_GT(stat->start, 0);
  EXPECT_FALSE(ReadProcStat(child).has_value()) << "reaped: no such process";
}

}  // namespace
}  // namespace fanout
