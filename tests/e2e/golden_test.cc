// Golden packages: every tests/packages/NAME.yaml is run with the real binary and checked
// against NAME.expected (YAML):
//   exit_code: 1                      # dtexec exit code (default 0)
//   args: [--set, x=1]                # extra arguments for `fanout run`
//   tasks: {a: succeeded, b: skipped}  # final status of each task path (last attempt)
//   not_run: [c]                      # paths with no task run at all
//   order: [[a, b]]                   # a ended before b started
//   concurrent: [[a, b]]              # a and b overlapped in time
//   attempts: {flaky: 3}
//   events: {OnError: 1}              # event counts in the top-level execution
//   children: 2                       # child executions linked to the top-level one
//   messages: {a: "exit code 3"}      # substring of a task run's message
//   output: ["published 3"]           # substrings of stdout
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "e2e/e2e_util.h"

namespace fanout::testing {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> GoldenNames() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(FANOUT_TEST_PACKAGES)) {
    if (entry.path().extension() == ".expected") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, RunsAsExpected) {
  const std::string name = GetParam();
  ScratchDir dir;
  fs::copy(FANOUT_TEST_PACKAGES, dir.path(), fs::copy_options::recursive);
  YAML::Node expected = YAML::LoadFile(dir.path() + "/" + name + ".expected");

  std::vector<std::string> args = {"run", name + ".yaml", "--catalog",
                                   "sqlite:" + dir.path() + "/fanout.db", "--reporting", "E"};
  if (expected["args"]) {
    for (const auto& a : expected["args"]) args.push_back(a.as<std::string>());
  }
  CommandResult r = RunFanout(args, dir.path());
  int want_exit = expected["exit_code"] ? expected["exit_code"].as<int>() : 0;
  ASSERT_EQ(r.exit_code, want_exit) << "stdout:\n" << r.out << "\nstderr:\n" << r.err;

  auto catalog = OpenTestCatalog(dir.path());
  ASSERT_NE(catalog, nullptr);
  auto executions = catalog->ListExecutions(1000);
  ASSERT_TRUE(executions.ok()) << executions.status().ToString();
  const ExecutionRow* top = nullptr;
  for (const auto& e : *executions) {
    if (e.parent_id.empty()) top = &e;
  }
  ASSERT_NE(top, nullptr) << "no top-level execution recorded";
  auto runs = catalog->ListTaskRuns(top->id);
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();

  std::map<std::string, TaskRunRow> last;   // per path, the last attempt
  std::map<std::string, TaskRunRow> first;  // per path, the first attempt
  std::map<std::string, int> attempts;
  for (const TaskRunRow& run : *runs) {
    auto& l = last[run.task_path];
    if (l.attempt <= run.attempt) l = run;
    if (!first.count(run.task_path) || first[run.task_path].attempt > run.attempt) {
      first[run.task_path] = run;
    }
    attempts[run.task_path] = std::max(attempts[run.task_path], run.attempt);
  }
  auto describe = [&] {
    std::string s;
    for (const auto& [path, run] : last) s += "  " + path + ": " + run.status + " " + run.message + "\n";
    return s + "stdout:\n" + r.out + "stderr:\n" + r.err;
  };

  for (const auto& item : expected["tasks"]) {
    std::string path = item.first.as<std::string>();
    ASSERT_TRUE(last.count(path)) << "no task run for " << path << "\n" << describe();
    EXPECT_EQ(last[path].status, item.second.as<std::string>()) << path << "\n" << describe();
  }
  for (const auto& item : expected["not_run"]) {
    EXPECT_EQ(last.count(item.as<std::string>()), 0u) << item.as<std::string>() << " ran\n" << describe();
  }
  for (const auto& pair : expected["order"]) {
    std::string a = pair[0].as<std::string>(), b = pair[1].as<std::string>();
    ASSERT_TRUE(last.count(a) && first.count(b)) << a << " / " << b << "\n" << describe();
    ASSERT_TRUE(last[a].ended_at.has_value()) << a;
    EXPECT_LE(*last[a].ended_at, first[b].started_at) << a << " must end before " << b << " starts";
  }
  for (const auto& pair : expected["concurrent"]) {
    std::string a = pair[0].as<std::string>(), b = pair[1].as<std::string>();
    ASSERT_TRUE(last.count(a) && last.count(b)) << a << " / " << b << "\n" << describe();
    EXPECT_LT(first[a].started_at, *last[b].ended_at) << a << " and " << b << " must overlap";
    EXPECT_LT(first[b].started_at, *last[a].ended_at) << a << " and " << b << " must overlap";
  }
  for (const auto& item : expected["attempts"]) {
    EXPECT_EQ(attempts[item.first.as<std::string>()], item.second.as<int>()) << item.first.as<std::string>();
  }
  for (const auto& item : expected["messages"]) {
    std::string path = item.first.as<std::string>();
    ASSERT_TRUE(last.count(path)) << path;
    EXPECT_NE(last[path].message.find(item.second.as<std::string>()), std::string::npos)
        << path << ": " << last[path].message;
  }
  if (expected["events"]) {
    EventQuery q;
    q.execution_id = top->id;
    auto events = catalog->ListEvents(q);
    ASSERT_TRUE(events.ok());
    std::map<std::string, int> counts;
    for (const Event& e : *events) ++counts[EventName(e.type)];
    for (const auto& item : expected["events"]) {
      EXPECT_EQ(counts[item.first.as<std::string>()], item.second.as<int>()) << item.first.as<std::string>();
    }
  }
  if (expected["children"]) {
    auto children = catalog->ListChildExecutions(top->id);
    ASSERT_TRUE(children.ok());
    EXPECT_EQ(static_cast<int>(children->size()), expected["children"].as<int>());
  }
  for (const auto& text : expected["output"]) {
    EXPECT_NE(r.out.find(text.as<std::string>()), std::string::npos)
        << "stdout lacks '" << text.as<std::string>() << "':\n" << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Packages, GoldenTest, ::testing::ValuesIn(GoldenNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace fanout::testing
