// Tests of the console, text and JSON-lines sinks and of the --log spec factory.
#include "catalog/log_sinks.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "catalog/test_util.h"

namespace fanout::catalog {
namespace {

using testing::ReadWholeFile;
using testing::SampleEvent;
using testing::TempDir;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Writes `events` (by default one event of every type) to a console sink and returns what it
// printed.
std::string ConsoleOutput(std::string_view levels, std::vector<Event> events = {}) {
  if (events.empty()) {
    for (EventType type :
         {EventType::kOnPreExecute, EventType::kOnError, EventType::kOnWarning,
          EventType::kOnInformation, EventType::kOnProgress, EventType::kOnTaskFailed,
          EventType::kOnVariableValueChanged, EventType::kOnPostExecute}) {
      events.push_back(SampleEvent("e", type, "m"));
    }
  }
  FILE* out = std::tmpfile();
  {
    ConsoleSink sink(levels, out);
    for (const Event& event : events) sink.Write(event);
    sink.Flush();
  }
  std::string text;
  std::rewind(out);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, out)) > 0) text.append(buf, n);
  std::fclose(out);
  return text;
}

TEST(ConsoleSinkTest, PrintsTimeEventSourceAndMessage) {
  EXPECT_EQ(ConsoleOutput("E"), "03:04:05 OnError       load/region-job: m\n");
}

// A message of several lines (a program's stderr) keeps one event per line that starts at the
// left: its further lines are indented under the event's name (QA).
TEST(ConsoleSinkTest, AMessagesFurtherLinesAreIndented) {
  Event e = SampleEvent("e", EventType::kOnError, "first\n\x1b[31msecond\nthird\n");
  EXPECT_EQ(ConsoleOutput("E", {e}),
            "03:04:05 OnError       load/region-job: first\n"
            "                       \\x1b[31msecond\n"
            "                       third\n");
}

// An in-process child's events mix with its parent's on the console: the parent's task running
// it comes first, so that two children's `extract` lines can be told apart.
TEST(ConsoleSinkTest, AChildsEventsShowTheParentTaskRunningIt) {
  Event child = SampleEvent("e", EventType::kOnError, "m");
  child.source = "extract";
  child.console_label = "load[2]/child";
  EXPECT_EQ(ConsoleOutput("E", {child}), "03:04:05 OnError       load[2]/child > extract: m\n");
}

// The package's closing error repeats its task's; the console says it once (the catalog keeps
// both). Another package error still shows.
TEST(ConsoleSinkTest, APackageErrorThatRepeatsItsTasksIsSaidOnce) {
  Event task = SampleEvent("e", EventType::kOnError, "exit code 3");
  task.source = "load";
  Event package = SampleEvent("e", EventType::kOnError, "package nightly failed: load: exit code 3");
  package.source = "nightly";
  Event other = SampleEvent("e", EventType::kOnError, "package nightly failed: disk full");
  other.source = "nightly";
  EXPECT_EQ(ConsoleOutput("E", {task, package, other}),
            "03:04:05 OnError       load: exit code 3\n"
            "03:04:05 OnError       nightly: package nightly failed: disk full\n");
}

TEST(ConsoleSinkTest, FiltersByReportingLevels) {
  EXPECT_EQ(Lines(ConsoleOutput("ewp")).size(), 3u);
  std::string ewp = ConsoleOutput("EWP");
  EXPECT_NE(ewp.find("OnError"), std::string::npos);
  EXPECT_NE(ewp.find("OnWarning"), std::string::npos);
  EXPECT_NE(ewp.find("OnProgress"), std::string::npos);
  EXPECT_EQ(ewp.find("OnInformation"), std::string::npos);
  EXPECT_EQ(Lines(ConsoleOutput("I")).size(), 1u);
  EXPECT_EQ(Lines(ConsoleOutput("V")).size(), 8u);
  EXPECT_EQ(ConsoleOutput("N"), "");
}

TEST(ConsoleSinkTest, ValidatesReportingLevels) {
  EXPECT_TRUE(ValidateReportingLevels("EWP").ok());
  EXPECT_TRUE(ValidateReportingLevels("ewipv").ok());
  EXPECT_TRUE(ValidateReportingLevels("n").ok());
  // N with other letters had been read as the other letters.
  Status mixed = ValidateReportingLevels("NE");
  EXPECT_EQ(mixed.code(), Code::kInvalidArgument);
  EXPECT_NE(mixed.message().find("N (none) stands alone"), std::string::npos) << mixed.message();
  Status bad = ValidateReportingLevels("EX");
  EXPECT_EQ(bad.code(), Code::kInvalidArgument);
  EXPECT_NE(bad.message().find("'X'"), std::string::npos);
  EXPECT_NE(bad.message().find("V (verbose"), std::string::npos);
  EXPECT_FALSE(ValidateReportingLevels("").ok());
}

TEST(CsvTest, QuotesOnlyWhenNeeded) {
  auto csv = [](std::string_view field) {
    std::string line;
    AppendCsvField(line, field);
    return line;
  };
  EXPECT_EQ(csv("plain text"), "plain text");
  EXPECT_EQ(csv(""), "");
  EXPECT_EQ(csv("a,b"), "\"a,b\"");
  EXPECT_EQ(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv("cr\rhere"), "\"cr\rhere\"");
}

// Several writers opening one new file (runs logging to the same path at once) write one
// header between them.
TEST(TextFileSinkTest, WritersOpeningOneNewFileWriteOneHeader) {
  TempDir dir;
  std::string path = dir.path() + "/shared.log";
  auto first = TextFileSink::Open(path, EventFilter());
  auto second = TextFileSink::Open(path, EventFilter());
  ASSERT_TRUE(first.ok() && second.ok());
  (*first)->Write(SampleEvent("e1", EventType::kOnInformation, "one"));
  (*second)->Write(SampleEvent("e2", EventType::kOnInformation, "two"));
  (*first)->Flush();
  (*second)->Flush();
  std::vector<std::string> lines = Lines(ReadWholeFile(path));
  ASSERT_EQ(lines.size(), 3u) << ReadWholeFile(path);
  EXPECT_EQ(lines[0], TextFileSink::kHeader);
  EXPECT_TRUE(lines[1].starts_with("OnInformation")) << lines[1];
  EXPECT_TRUE(lines[2].starts_with("OnInformation")) << lines[2];
}

TEST(TextFileSinkTest, WritesHeaderOnceAndAppends) {
  TempDir dir;
  std::string path = dir.File("log.csv");
  {
    auto sink = TextFileSink::Open(path, EventFilter());
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    (*sink)->Write(SampleEvent("exec-1", EventType::kOnError, "bad, \"very\" bad"));
  }
  {
    auto sink = TextFileSink::Open(path, EventFilter({EventType::kOnWarning}));
    ASSERT_TRUE(sink.ok());
    (*sink)->Write(SampleEvent("exec-1", EventType::kOnError, "filtered out"));
    (*sink)->Write(SampleEvent("exec-2", EventType::kOnWarning, "second"));
    (*sink)->Flush();
  }
  std::vector<std::string> lines = Lines(ReadWholeFile(path));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], TextFileSink::kHeader);
  EXPECT_EQ(lines[1],
            "OnError,host-a,etl,load/region-job,load/region-job,exec-1,"
            "2026-11-26T03:04:05.000000Z,2026-11-26T03:04:05.001500Z,7,bytes,"
            "\"bad, \"\"very\"\" bad\"");
  EXPECT_EQ(lines[2].substr(0, 10), "OnWarning,");
  EXPECT_EQ(lines[2].substr(lines[2].size() - 7), ",second");
}

// A program's escape sequences and other control characters are written out, not written
// raw into a file that `cat` then plays on the terminal (QA).
TEST(TextFileSinkTest, ControlCharactersAreWrittenOut) {
  TempDir dir;
  std::string path = dir.File("log.csv");
  {
    auto sink = TextFileSink::Open(path, EventFilter());
    ASSERT_TRUE(sink.ok());
    Event event = SampleEvent("exec-1", EventType::kOnError, "red \x1b[31mtext\r, bell \a");
    event.data_bytes = std::string("nul \0 and\ttab\nnext line", 23);
    (*sink)->Write(event);
  }
  std::string text = ReadWholeFile(path);
  EXPECT_NE(text.find(",\"nul \\x00 and\ttab\nnext line\","), std::string::npos) << text;
  EXPECT_NE(text.find(",\"red \\x1b[31mtext\\x0d, bell \\x07\"\n"), std::string::npos) << text;
}

TEST(TextFileSinkTest, WritesHeaderToExistingEmptyFile) {
  TempDir dir;
  std::string path = dir.File("empty.csv");
  { std::ofstream touch(path); }
  {
    auto sink = TextFileSink::Open(path, EventFilter());
    ASSERT_TRUE(sink.ok());
  }
  EXPECT_EQ(ReadWholeFile(path), std::string(TextFileSink::kHeader) + "\n");
}

// A new log file holds task output, as the catalog does, and is its owner's alone as the
// catalog is (QA: it was 0644); an existing one keeps the mode it was given.
TEST(TextFileSinkTest, ANewFileIsItsOwnersAloneAndAnOldOneKeepsItsMode) {
  namespace fs = std::filesystem;
  TempDir dir;
  const mode_t umask_before = umask(022);  // what a lax umask would let through
  const std::string fresh = dir.File("new.csv");
  ASSERT_TRUE(TextFileSink::Open(fresh, EventFilter()).ok());
  EXPECT_EQ(fs::status(fresh).permissions(), fs::perms::owner_read | fs::perms::owner_write);
  const std::string shared = dir.File("shared.csv");
  { std::ofstream touch(shared); }
  fs::permissions(shared, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  ASSERT_TRUE(TextFileSink::Open(shared, EventFilter()).ok());
  EXPECT_EQ(fs::status(shared).permissions(),
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  umask(umask_before);
}

TEST(JsonLinesSinkTest, ParsesBack) {
  TempDir dir;
  std::string path = dir.File("log.jsonl");
  {
    auto sink = JsonLinesSink::Open(path, EventFilter());
    ASSERT_TRUE(sink.ok());
    Event event = SampleEvent("exec-1", EventType::kOnTaskFailed, "line 1\nline \"2\"");
    event.data_bytes = "not utf-8: \xff";
    (*sink)->Write(event);
    (*sink)->Write(SampleEvent("exec-1", EventType::kOnPostExecute, "done"));
  }
  std::vector<std::string> lines = Lines(ReadWholeFile(path));
  ASSERT_EQ(lines.size(), 2u);
  auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["event"], "OnTaskFailed");
  EXPECT_EQ(first["execution_id"], "exec-1");
  EXPECT_EQ(first["computer"], "host-a");
  EXPECT_EQ(first["operator"], "etl");
  EXPECT_EQ(first["source"], "load/region-job");
  EXPECT_EQ(first["source_id"], "load/region-job");
  EXPECT_EQ(first["started_at"], "2026-11-26T03:04:05.000000Z");
  EXPECT_EQ(first["ended_at"], "2026-11-26T03:04:05.001500Z");
  EXPECT_EQ(first["data_code"], 7);
  EXPECT_EQ(first["data_bytes"], "not utf-8: \xef\xbf\xbd");
  EXPECT_EQ(first["message"], "line 1\nline \"2\"");
  EXPECT_EQ(lines[0].substr(0, 9), "{\"event\":");  // the documented key order
  EXPECT_EQ(nlohmann::json::parse(lines[1])["message"], "done");
}

TEST(MakeLogSinkTest, BuildsEveryProvider) {
  TempDir dir;
  EXPECT_TRUE(MakeLogSink("console", {}).ok());
  auto text = MakeLogSink("text:" + dir.File("a.csv"), {});
  ASSERT_TRUE(text.ok());
  auto jsonl = MakeLogSink("jsonl:" + dir.File("a.jsonl"), {EventType::kOnError});
  ASSERT_TRUE(jsonl.ok());
  (*jsonl)->Write(SampleEvent("e", EventType::kOnInformation, "skipped"));
  (*jsonl)->Write(SampleEvent("e", EventType::kOnError, "kept"));
  (*jsonl)->Flush();
  std::vector<std::string> lines = Lines(ReadWholeFile(dir.File("a.jsonl")));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("kept"), std::string::npos);
}

TEST(MakeLogSinkTest, ExplainsBadSpecs) {
  for (const char* spec : {"xml:log.xml", "text:", "jsonl", "", "Console"}) {
    auto sink = MakeLogSink(spec, {});
    ASSERT_FALSE(sink.ok()) << spec;
    EXPECT_EQ(sink.status().code(), Code::kInvalidArgument);
    EXPECT_NE(sink.status().message().find("text:PATH, jsonl:PATH or console"), std::string::npos);
  }
  TempDir dir;
  std::string path = dir.File("missing/dir/log.csv");
  auto sink = MakeLogSink("text:" + path, {});
  ASSERT_FALSE(sink.ok());
  EXPECT_NE(sink.status().message().find(path), std::string::npos);
  EXPECT_NE(sink.status().message().find("No such file or directory"), std::string::npos);
}

}  // namespace
}  // namespace fanout::catalog
