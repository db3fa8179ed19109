// Tests of the job file parser: YAML scalars, nesting and number ranges.
#include "agent/job.h"

#include <gtest/gtest.h>

namespace fanout::agent {
namespace {

// A step param written `no` (Norway) is the text "no": only true and false are YAML 1.2 bools.
TEST(JobTest, StepParamsKeepYamlWordsAsText) {
  auto job = ParseJob("job: j\nsteps:\n"
                      "  - {name: s, subsystem: package, package: p, params: {tag: no, on: y}}\n");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ASSERT_EQ(job->steps.size(), 1u);
  EXPECT_EQ(job->steps[0].params.at("tag"), "no");
  EXPECT_EQ(job->steps[0].params.at("on"), "y");
}

// `job: true` is a YAML boolean, not the name "true": the problem says so and how to fix it.
TEST(JobTest, ABooleanOrNumberForANameSaysToQuoteIt) {
  auto job = ParseJob("job: true\nsteps: [{name: 2024, subsystem: process, run: [/bin/true]}]\n");
  ASSERT_FALSE(job.ok());
  const std::string& message = job.status().message();
  EXPECT_NE(message.find("`job` in the job must be a string, got the boolean true; quote it"),
            std::string::npos) << message;
  EXPECT_NE(message.find("`name` in step 1 must be a string, got the number 2024; quote it"),
            std::string::npos) << message;
  EXPECT_TRUE(ParseJob("job: \"true\"\nsteps: [{name: \"2024\", subsystem: process, "
                       "run: [/bin/true]}]\n").ok());
}

// exec cuts an argument at a NUL byte: the job ran more than `job show` printed (QA).
TEST(JobTest, ANulByteInAnArgumentIsAProblem) {
  for (const std::string& text :
       {std::string("job: j\nsteps: [{name: a, subsystem: process, run: [\"/usr/bin/env\\0\", "
                    "touch, x]}]\n"),
        std::string("{\"job\": \"j\", \"steps\": [{\"name\": \"a\", \"subsystem\": "
                    "\"process\", \"run\": [\"/usr/bin/env\\u0000\", \"touch\"]}]}")}) {
    auto job = ParseJob(text);
    ASSERT_FALSE(job.ok()) << text;
    EXPECT_NE(job.status().message().find("`run[0]` in step 'a' holds a NUL byte"),
              std::string::npos) << job.status().message();
  }
  // A package step's param, which its child would get cut: "0\0; exit 9" ran `exit 0` (QA).
  auto params = ParseJob("job: j\nsteps: [{name: a, subsystem: package, package: p, "
                         "params: {code: \"0\\0; exit 9\"}}]\n");
  ASSERT_FALSE(params.ok());
  EXPECT_NE(params.status().message().find("`params.code` in step 'a' holds a NUL byte"),
            std::string::npos) << params.status().message();
}

// Each problem says where it is; a key written twice, impossible exit codes and params on a
// process step (silently dropped before) are problems.
TEST(JobTest, ProblemsHavePositionsAndCoverWhatWasSilentlyAccepted) {
  std::vector<JobProblem> problems;
  auto job = ParseJob("job: j\nsteps:\n  - name: a\n    subsystem: process\n"
                      "    run: [/bin/echo, first]\n    run: [/bin/false]\n"
                      "    success_codes: [0, 256, -1]\n    params: {x: fixed}\n"
                      "  - {name: b, subsystem: process, run: [/bin/true], success_codes: []}\n",
                      &problems);
  ASSERT_FALSE(job.ok());
  std::vector<std::string> lines;
  for (const JobProblem& p : problems) lines.push_back(p.ToString());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "line 6, column 5: duplicate key `run`",
                       "line 7, column 24: `success_codes` in step 'a' must hold exit codes from "
                       "0 to 255, not 256",
                       "line 7, column 29: `success_codes` in step 'a' must hold exit codes from "
                       "0 to 255, not -1",
                       "line 8, column 13: `params` belongs to package steps, not step 'a'",
                       "line 9, column 68: `success_codes` in step 'b' must list at least one "
                       "exit code",
                   }));
  EXPECT_NE(job.status().message().find("line 6, column 5: duplicate key `run`\n"),
            std::string::npos);
  // JSON has no positions; its problems are still all listed.
  auto json_job = ParseJob("{\"job\": \"j\", \"steps\": [{\"name\": \"a\", \"subsystem\": "
                           "\"process\", \"run\": [\"/bin/true\"], \"success_codes\": []}]}");
  ASSERT_FALSE(json_job.ok());
  EXPECT_EQ(json_job.status().message(), "`success_codes` in step 'a' must list at least one exit code");
}

// QA: `run: "echo hi"` and `run: []` said the step "needs `run`", which it had.
TEST(JobTest, ARunThatIsNotAListSaysSo) {
  for (const auto& [run, said] : std::vector<std::pair<std::string, std::string>>{
           {"\"echo hi\"", "not \"echo hi\""}, {"[]", "not an empty list"}}) {
    std::vector<JobProblem> problems;
    auto job = ParseJob("job: j\nsteps:\n  - {name: a, subsystem: process, run: " + run + "}\n",
                        &problems);
    ASSERT_FALSE(job.ok());
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].ToString(),
              "line 3, column 40: `run` in step 'a' must be a list of the program and its "
              "arguments, e.g. [/bin/echo, hi] or [/bin/sh, -c, 'echo hi'], " + said);
  }
}

// QA: a mapping as a step's param was stored as its JSON text; an agent-job refuses one. A list
// is kept: it is the text form a list parameter reads.
TEST(JobTest, AStepParamThatIsAMappingIsRefused) {
  std::vector<JobProblem> problems;
  auto job = ParseJob("job: j\nsteps:\n  - {name: a, subsystem: package, package: p, "
                      "params: {x: {y: 1}, regions: [eu, us], z: [[eu], us]}}\n",
                      &problems);
  ASSERT_FALSE(job.ok());
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].ToString(),
            "line 3, column 59: `params.x` in step 'a' must be a value or a list of values, not "
            "a mapping: no package parameter takes one");
  EXPECT_EQ(problems[1].ToString(),
            "line 3, column 89: `params.z` in step 'a' must be a value or a list of values, not "
            "a list holding lists or mappings: no package parameter takes one");
  auto listed = ParseJob("job: j\nsteps:\n  - {name: a, subsystem: package, package: p, "
                         "params: {regions: [eu, us]}}\n");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->steps[0].params.at("regions"), R"(["eu","us"])");
  // One stored before this rule still loads, as it ran before.
  auto stored = ParseJob(R"({"job": "j", "steps": [{"name": "a", "subsystem": "package", )"
                         R"("package": "p", "params": {"x": {"y": 1}}}]})",
                         nullptr, JobCheck::kStored);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(stored->steps[0].params.at("x"), R"({"y":1})");
}

// A merge key is one problem, said as such: not also an unknown key `<<`.
TEST(JobTest, AMergeKeyIsOneProblem) {
  std::vector<JobProblem> problems;
  auto job = ParseJob("job: j\nx: &common {subsystem: process}\nsteps:\n"
                      "  - name: a\n    <<: *common\n    run: [/bin/true]\n",
                      &problems);
  ASSERT_FALSE(job.ok());
  const std::string& message = job.status().message();
  EXPECT_EQ(message.find("`<<`"), std::string::npos) << message;
  EXPECT_NE(message.find("line 5, column 5: YAML merge keys"), std::string::npos) << message;
}

// JSON keeps the last of a key written twice too: refused as in YAML. A problem about a
// repeated key's value points at the value kept (the last).
TEST(JobTest, RepeatedKeysInJsonAndThePlaceOfTheValueKept) {
  auto json_job = ParseJob("{\"job\": \"j1\", \"job\": \"j2\", \"steps\": [{\"name\": \"s\", "
                           "\"subsystem\": \"process\", \"run\": [\"/bin/true\"]}]}");
  ASSERT_FALSE(json_job.ok());
  EXPECT_EQ(json_job.status().message(), "duplicate key `job`");
  std::vector<JobProblem> problems;
  auto yaml_job = ParseJob("job: ok\njob: \"bad name\"\nsteps: [{name: s, subsystem: process, "
                           "run: [/bin/true]}]\n",
                           &problems);
  ASSERT_FALSE(yaml_job.ok());
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[1].ToString(), "line 2, column 6: job name 'bad name' must match "
                                    "[A-Za-z0-9_.-]{1,128}, other than . and ..");
}

// A job an earlier agent stored stays readable after an upgrade that added rules.
TEST(JobTest, AStoredJobIsReadByTheRulesItWasStoredUnder) {
  const std::string stored =
      "job: old\nsteps:\n  - name: a\n    subsystem: process\n    run: [/bin/false]\n"
      "    run: [/bin/true]\n    success_codes: []\n    params: {x: y}\n";
  EXPECT_FALSE(ParseJob(stored).ok());
  auto job = ParseJob(stored, nullptr, JobCheck::kStored);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->steps[0].run, std::vector<std::string>{"/bin/true"});
}

// A definition nested 100,000 deep crashed the agent in nlohmann's recursive dump(): it is
// refused before anything dumps it.
TEST(JobTest, DeepNestingIsRefusedWithoutRecursion) {
  const size_t depth = 100000;
  std::string nested = std::string(depth, '[') + std::string(depth, ']');
  auto value = nlohmann::json::parse(nested);
  EXPECT_TRUE(NestedDeeperThan(value, kMaxJsonNesting));
  EXPECT_FALSE(NestedDeeperThan(nlohmann::json::parse("{\"a\": [[1]]}"), 3));
  EXPECT_TRUE(NestedDeeperThan(nlohmann::json::parse("{\"a\": [[1]]}"), 2));
  auto job = ParseJob("{\"job\": \"j\", \"steps\": [{\"name\": \"s\", \"subsystem\": "
                      "\"package\", \"package\": \"p\", \"params\": {\"x\": " +
                      nested + "}}]}");
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("nests more than 64 levels"), std::string::npos)
      << job.status().message();
}

// A number beyond int was stored cut (retries 99999999999 became 1215752191) or made the job
// unreadable once stored; such numbers are refused.
TEST(JobTest, NumbersOutOfRangeAreRefused) {
  for (const char* job : {"job: j\nmax_concurrent_runs: 2147483648\nsteps: [{name: s, "
                          "subsystem: process, run: [/bin/true]}]\n",
                          "job: j\nsteps: [{name: s, subsystem: process, run: [/bin/true], "
                          "retries: 99999999999}]\n",
                          "job: j\nsteps: [{name: s, subsystem: process, run: [/bin/true], "
                          "retries: 18446744073709551615}]\n"}) {
    auto parsed = ParseJob(job);
    ASSERT_FALSE(parsed.ok()) << job;
    EXPECT_NE(parsed.status().message().find("must be a whole number from"), std::string::npos)
        << parsed.status().message();
  }
  auto fine = ParseJob("job: j\nmax_concurrent_runs: 1000000\nsteps: [{name: s, subsystem: "
                       "process, run: [/bin/true], retries: 3}]\n");
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  EXPECT_EQ(fine->max_concurrent_runs, 1000000);
}

// A few hundred bytes of nested YAML aliases expand to millions of values: refused, not built.
TEST(JobTest, AnAliasBombIsRefused) {
  std::string yaml = "job: j\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int level = 1; level <= 7; ++level) {
    std::string prev = "*x" + std::to_string(level - 1);
    yaml += "x" + std::to_string(level) + ": &x" + std::to_string(level) + " [" + prev;
    for (int k = 1; k < 10; ++k) yaml += ", " + prev;
    yaml += "]\n";
  }
  yaml += "steps: [{name: s, subsystem: process, run: [/bin/true]}]\n";
  auto job = ParseJob(yaml);
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("more than 100000 values"), std::string::npos)
      << job.status().message();
}

}  // namespace
}  // namespace fanout::agent
