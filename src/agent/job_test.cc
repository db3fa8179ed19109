// Tests of the job file parser's handling of YAML scalars.
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

}  // namespace
}  // namespace fanout::agent
