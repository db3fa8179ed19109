// Agent job definitions (SQL Server Agent jobs and steps, DESIGN §4): parsing from the JSON or
// YAML a user sends, validation with every problem reported, and the JSON form the agent
// stores and serves. A JobDef is plain data.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fanout/status.h"

namespace fanout::agent {

// What a step does when it ends: next step, quit with success/failure, or go to a named step.
struct StepAction {
  enum Kind { kNext, kQuitSuccess, kQuitFailure, kGoto } kind = kNext;
  std::string target;  // kGoto
  std::string ToString() const;
};

struct StepDef {
  std::string name;
  std::string subsystem;  // package | process
  std::string package;    // package steps
  std::map<std::string, std::string> params;  // package steps: fixed parameter values
  std::vector<std::string> run;               // process steps: argv
  std::vector<int> success_codes{0};          // process steps
  std::string proxy;
  int retries = 0;
  std::chrono::milliseconds retry_interval{0};
  std::optional<std::chrono::milliseconds> timeout;
  StepAction on_success;
  StepAction on_failure{StepAction::kQuitFailure, ""};
};

struct JobDef {
  std::string name;
  std::string description;
  bool enabled = true;
  int max_concurrent_runs = 1;
  std::vector<StepDef> steps;
  std::string text;  // as ParseJob read it: what a run keeps of the job it started from

  // Index of the step named `name`, or -1.
  int StepIndex(const std::string& name) const;
  nlohmann::json ToJson() const;
};

// Whether `value` nests arrays and objects more than `limit` levels deep, found without
// recursion: nlohmann's dump() recurses, and a body nested 100,000 deep overflowed its stack.
bool NestedDeeperThan(const nlohmann::json& value, size_t limit);
// The nesting a request body or job definition may have; far more than any real one needs.
inline constexpr size_t kMaxJsonNesting = 64;

// A problem in a job definition: where it is (1-based; 0 when not known, as in JSON) and what.
struct JobProblem {
  int line = 0;
  int column = 0;
  std::string message;
  std::string ToString() const;  // "line L, column C: MESSAGE", or MESSAGE
};

// How strictly a definition is checked: a new one (PUT, validate, deploy) by every rule; one
// an agent stored earlier only by the rules it was stored under, so that a rule added since
// (keys written twice, success_codes from 0 to 255, no params on a process step) does not make
// a stored job unreadable after an upgrade.
enum class JobCheck { kNew, kStored };

// Parses a job definition given as JSON or YAML (decided by the text, not a header). Every
// problem is collected; the Status message lists them all in file order, one per line, and
// `problems`, when given, receives them.
Result<JobDef> ParseJob(const std::string& text, std::vector<JobProblem>* problems = nullptr,
                        JobCheck check = JobCheck::kNew);
// Whether ParseJob reads `text` as JSON (it starts with '{') rather than YAML.
bool IsJsonText(std::string_view text);

}  // namespace fanout::agent
