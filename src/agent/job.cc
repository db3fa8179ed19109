// Job definitions: YAML/JSON in, validated JobDef out, JSON back (see job.h).
#include "agent/job.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/util.h"
#include "package/yaml_util.h"

namespace fanout::agent {
namespace {

using nlohmann::json;

// YAML to JSON, keeping scalars as strings except for what is plainly a number or a bool, so
// a YAML job file and a JSON body take the same path.
// Values a job file may hold: YAML aliases copy what they name, and a 500-byte file of nested
// ones expanded to 900 MB.
constexpr size_t kMaxJobValues = 100000;

struct TooManyValues {};

// Where each value of a job file was written: JSON values by address, in the finished document.
// Where each value, and each key of an object, was written in the YAML text.
struct Marks {
  std::unordered_map<const json*, YAML::Mark> values;
  std::map<std::pair<const json*, std::string>, YAML::Mark> keys;  // (object, key)
};

JobProblem ProblemAt(const YAML::Mark& mark, std::string message) {
  return {mark.line + 1, mark.column + 1, std::move(message)};
}

// `budget`: values left before kMaxJobValues is reached (TooManyValues is thrown then). Of a
// key written twice, the last value is kept.
json YamlToJson(const YAML::Node& node, size_t& budget) {
  if (budget-- == 0) throw TooManyValues{};
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        out[it->first.Scalar()] = YamlToJson(it->second, budget);
      }
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(YamlToJson(item, budget));
      return out;
    }
    case YAML::NodeType::Scalar: {
      if (node.Tag() == "!") return node.Scalar();  // quoted: always a string
      int64_t i;
      if (YAML::convert<int64_t>::decode(node, i)) return i;
      if (std::optional<bool> b = YamlBool(node.Scalar())) return *b;
      return node.Scalar();
    }
    default:
      return nullptr;
  }
}

// The position of every value of `root` (converted from `yaml` by YamlToJson), found once the
// document is whole: values move while it is built. Walks without recursion, as the nesting
// check has not run yet.
Marks MarksOf(const YAML::Node& yaml, const json& root) {
  Marks marks;
  std::vector<std::pair<YAML::Node, const json*>> pending = {{yaml, &root}};
  while (!pending.empty()) {
    auto [node, value] = pending.back();
    pending.pop_back();
    marks.values[value] = node.Mark();
    if (node.IsMap() && value->is_object()) {
      // A key written twice holds its last value (YamlToJson): that one's place is its place.
      std::map<std::string, YAML::Node> last;
      for (auto it = node.begin(); it != node.end(); ++it) {
        last[it->first.Scalar()] = it->second;
        marks.keys[{value, it->first.Scalar()}] = it->first.Mark();
      }
      for (const auto& [key, child_node] : last) {
        auto child = value->find(key);
        if (child != value->end()) pending.emplace_back(child_node, &*child);
      }
    } else if (node.IsSequence() && value->is_array()) {
      size_t i = 0;
      for (auto it = node.begin(); it != node.end() && i < value->size(); ++it, ++i) {
        pending.emplace_back(*it, &(*value)[i]);
      }
    }
  }
  return marks;
}

// Removes every member named `name` from the objects in `root`, at any depth.
void EraseKeysNamed(json& root, const std::string& name) {
  std::vector<json*> pending = {&root};
  while (!pending.empty()) {
    json* value = pending.back();
    pending.pop_back();
    if (value->is_object()) value->erase(name);
    if (value->is_structured()) {
      for (auto& child : *value) pending.push_back(&child);
    }
  }
}

class JobParser {
 public:
  JobParser(const Marks* marks, JobCheck check) : marks_(marks), check_(check) {}

  std::vector<JobProblem> problems;

  // `at`: the value the problem is in (or the mapping that lacks a key), for its position.
  void Problem(const json& at, std::string message) {
    const YAML::Mark* mark = nullptr;
    if (marks_ != nullptr) {
      auto found = marks_->values.find(&at);
      if (found != marks_->values.end()) mark = &found->second;
    }
    AddProblem(mark, std::move(message));
  }
  // At key `key` of object `obj` itself, not at its value (which may be lines below it).
  void ProblemAtKey(const json& obj, const std::string& key, std::string message) {
    const YAML::Mark* mark = nullptr;
    if (marks_ != nullptr) {
      auto found = marks_->keys.find({&obj, key});
      if (found != marks_->keys.end()) mark = &found->second;
    }
    AddProblem(mark, std::move(message));
  }
  void AddProblem(const YAML::Mark* mark, std::string message) {
    JobProblem problem{0, 0, std::move(message)};
    if (mark != nullptr) {
      problem.line = mark->line + 1;
      problem.column = mark->column + 1;
    }
    problems.push_back(std::move(problem));
  }

  void CheckKeys(const json& obj, const std::vector<std::string>& allowed, const std::string& what) {
    for (const auto& [key, value] : obj.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        ProblemAtKey(obj, key, fmt::format("unknown key `{}` in {}; allowed: {}", key, what,
                                           fmt::join(allowed, ", ")));
      }
    }
  }

  std::string String(const json& obj, const char* key, const std::string& what, bool required) {
    if (!obj.contains(key) || obj[key].is_null()) {
      if (required) Problem(obj, fmt::format("{} needs `{}`", what, key));
      return "";
    }
    const json& v = obj[key];
    if (v.is_boolean() || v.is_number()) {
      // Mostly YAML's doing: `job: true` or `name: 2024` read as a boolean or a number.
      Problem(v, fmt::format("`{}` in {} must be a string, got the {} {}; quote it (YAML reads "
                          "unquoted true and false as booleans and digits as numbers)", key, what, v.is_boolean() ? "boolean" : "number", v.dump()));
      return "";
    }
    if (!v.is_string()) {
      Problem(v, fmt::format("`{}` in {} must be a string", key, what));
      return "";
    }
    return obj[key].get<std::string>();
  }

  // A whole number from `min` to a million (no job needs more runs or retries; a larger one
  // would not fit the int it is kept in).
  int Int(const json& obj, const char* key, const std::string& what, int fallback, int min) {
    constexpr int64_t kMax = 1'000'000;
    if (!obj.contains(key)) return fallback;
    const json& v = obj[key];
    bool fits = v.is_number_integer() && (v.is_number_unsigned()
                                              ? v.get<uint64_t>() <= static_cast<uint64_t>(kMax)
                                              : v.get<int64_t>() <= kMax);
    if (!fits || v.get<int64_t>() < min) {
      Problem(v, fmt::format("`{}` in {} must be a whole number from {} to {}", key, what, min,
                             kMax));
      return fallback;
    }
    return static_cast<int>(v.get<int64_t>());
  }

  std::optional<std::chrono::milliseconds> Duration(const json& obj, const char* key,
                                                    const std::string& what) {
    if (!obj.contains(key)) return std::nullopt;
    std::string text = obj[key].is_number() ? obj[key].dump() : obj[key].is_string() ? obj[key].get<std::string>() : "";
    auto d = ParseDuration(text);
    if (!d.ok()) {
      Problem(obj[key], fmt::format("`{}` in {}: {}", key, what, d.status().message()));
      return std::nullopt;
    }
    return *d;
  }

  StepAction Action(const json& obj, const char* key, const std::string& what, StepAction fallback) {
    std::string text = String(obj, key, what, false);
    if (text.empty()) return fallback;
    if (text == "next") return {StepAction::kNext, ""};
    if (text == "quit-success") return {StepAction::kQuitSuccess, ""};
    if (text == "quit-failure") return {StepAction::kQuitFailure, ""};
    if (text.starts_with("goto:") && IsValidName(text.substr(5))) {
      return {StepAction::kGoto, text.substr(5)};
    }
    Problem(obj[key], fmt::format("`{}: {}` in {} is not allowed; use next, quit-success, "
                                  "quit-failure or goto:STEP", key, text, what));
    return fallback;
  }

  StepDef Step(const json& obj, size_t index, size_t count) {
    StepDef s;
    std::string what = fmt::format("step {}", index + 1);
    if (!obj.is_object()) {
      Problem(obj, what + " must be a mapping with at least `name` and `subsystem`");
      return s;
    }
    CheckKeys(obj, {"name", "subsystem", "package", "params", "run", "success_codes", "proxy",
                    "retries", "retry_interval", "timeout", "on_success", "on_failure"}, what);
    s.name = String(obj, "name", what, true);
    if (!s.name.empty()) {
      if (!IsValidName(s.name)) {
        Problem(obj["name"], fmt::format("step name '{}' must match {}", s.name, kNameRule));
      }
      what = fmt::format("step '{}'", s.name);
    }
    s.subsystem = String(obj, "subsystem", what, true);
    if (s.subsystem == "package") {
      s.package = String(obj, "package", what, true);
      if (!s.package.empty() && !IsValidName(s.package)) {
        Problem(obj["package"], fmt::format("package name '{}' in {} must match {}", s.package,
                                            what, kNameRule));
      }
      if (obj.contains("params")) {
        if (!obj["params"].is_object()) {
          Problem(obj["params"], fmt::format("`params` in {} must be a mapping of parameter to "
                                             "value", what));
        } else {
          for (const auto& [k, v] : obj["params"].items()) {
            // As in an agent-job's params (QA: stored as its JSON text here, refused there),
            // and a list's items are values too (QA: [{a: 1}] and [[eu], us] were taken).
            auto structured = [](const json& item) { return item.is_structured(); };
            const bool nested =
                v.is_object() || (v.is_array() && std::any_of(v.begin(), v.end(), structured));
            if (nested && check_ == JobCheck::kNew) {
              Problem(v, fmt::format("`params.{}` in {} must be a value or a list of values, "
                                     "not {}: no package parameter takes one", k, what,
                                     v.is_object() ? "a mapping" : "a list holding lists or "
                                                                   "mappings"));
            }
            s.params[k] = v.is_string() ? v.get<std::string>() : v.dump();
            if (s.params[k].find('\0') != std::string::npos && check_ == JobCheck::kNew) {
              Problem(v, fmt::format("`params.{}` in {} holds a NUL byte, which the step's "
                                     "package cannot be given: remove it", k, what));
            }
          }
        }
      }
      if (obj.contains("run")) {
        Problem(obj["run"], fmt::format("`run` belongs to process steps, not {}", what));
      }
    } else if (s.subsystem == "process") {
      if (!obj.contains("run") || obj["run"].is_null()) {
        Problem(obj, fmt::format("{} needs `run`: the program and its arguments, e.g. "
                                 "[/bin/echo, hi]", what));
      } else if (!obj["run"].is_array() || obj["run"].empty()) {
        // A string would need a shell's word splitting, which a step does not do.
        Problem(obj["run"], fmt::format("`run` in {} must be a list of the program and its "
                                        "arguments, e.g. [/bin/echo, hi] or [/bin/sh, -c, "
                                        "'echo hi'], not {}",
                                        what, obj["run"].is_array() ? "an empty list"
                                                                    : obj["run"].dump()));
      } else {
        for (const auto& a : obj["run"]) {
          if (a.is_string()) s.run.push_back(a.get<std::string>());
          else s.run.push_back(a.dump());
          // exec cuts an argument at its first NUL byte, so what ran and what `job show`
          // printed were not what was deployed (QA: a whole argument list hidden after one).
          if (s.run.back().find('\0') != std::string::npos && check_ == JobCheck::kNew) {
            Problem(a, fmt::format("`run[{}]` in {} holds a NUL byte, which no program can be "
                                   "given: remove it", s.run.size() - 1, what));
          }
        }
      }
      if (obj.contains("success_codes")) {
        s.success_codes.clear();
        const json& codes = obj["success_codes"];
        const bool stored = check_ == JobCheck::kStored;
        if (!codes.is_array() || (codes.empty() && !stored)) {
          Problem(codes, fmt::format("`success_codes` in {} must list at least one exit code",
                                     what));
        } else {
          for (const auto& c : codes) {
            if (c.is_number_integer() &&
                (stored || (c.get<int64_t>() >= 0 && c.get<int64_t>() <= 255))) {
              s.success_codes.push_back(static_cast<int>(c.get<int64_t>()));
            } else {
              Problem(c, fmt::format("`success_codes` in {} must hold exit codes from 0 to 255, "
                                     "not {}", what, c.dump()));
            }
          }
        }
      }
      for (const char* key : {"package", "params"}) {
        // A stored job may hold the params earlier agents ignored on a process step.
        if (obj.contains(key) && (key != std::string_view("params") || check_ == JobCheck::kNew)) {
          Problem(obj[key], fmt::format("`{}` belongs to package steps, not {}", key, what));
        }
      }
    } else if (!s.subsystem.empty()) {
      Problem(obj["subsystem"], fmt::format("unknown subsystem '{}' in {}; allowed: package, "
                                            "process", s.subsystem, what));
    }
    s.proxy = String(obj, "proxy", what, false);
    if (!s.proxy.empty() && !IsValidName(s.proxy) && check_ == JobCheck::kNew) {
      Problem(obj["proxy"], fmt::format("proxy name '{}' in {} must match {}", s.proxy, what,
                                        kNameRule));
    }
    s.retries = Int(obj, "retries", what, 0, 0);
    s.retry_interval = Duration(obj, "retry_interval", what).value_or(std::chrono::milliseconds(0));
    s.timeout = Duration(obj, "timeout", what);
    bool last = index + 1 == count;
    s.on_success = Action(obj, "on_success", what,
                          last ? StepAction{StepAction::kQuitSuccess, ""} : StepAction{StepAction::kNext, ""});
    s.on_failure = Action(obj, "on_failure", what, StepAction{StepAction::kQuitFailure, ""});
    return s;
  }

 private:
  const Marks* marks_;  // null: no positions (JSON)
  JobCheck check_;
};

}  // namespace

std::string StepAction::ToString() const {
  switch (kind) {
    case kNext: return "next";
    case kQuitSuccess: return "quit-success";
    case kQuitFailure: return "quit-failure";
    case kGoto: return "goto:" + target;
  }
  return "next";
}

int JobDef::StepIndex(const std::string& step) const {
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].name == step) return static_cast<int>(i);
  }
  return -1;
}

nlohmann::json JobDef::ToJson() const {
  json out = {{"job", name}, {"description", description}, {"enabled", enabled},
              {"max_concurrent_runs", max_concurrent_runs}};
  json steps_json = json::array();
  for (const StepDef& s : steps) {
    json step = {{"name", s.name}, {"subsystem", s.subsystem}};
    if (s.subsystem == "package") {
      step["package"] = s.package;
      if (!s.params.empty()) step["params"] = s.params;
    } else {
      step["run"] = s.run;
      step["success_codes"] = s.success_codes;
    }
    if (!s.proxy.empty()) step["proxy"] = s.proxy;
    step["retries"] = s.retries;
    step["retry_interval"] = fmt::format("{}ms", s.retry_interval.count());
    if (s.timeout) step["timeout"] = fmt::format("{}ms", s.timeout->count());
    step["on_success"] = s.on_success.ToString();
    step["on_failure"] = s.on_failure.ToString();
    steps_json.push_back(std::move(step));
  }
  out["steps"] = std::move(steps_json);
  return out;
}

bool NestedDeeperThan(const nlohmann::json& value, size_t limit) {
  std::vector<std::pair<const nlohmann::json*, size_t>> pending = {{&value, 0}};
  while (!pending.empty()) {
    auto [node, depth] = pending.back();
    pending.pop_back();
    if (!node->is_structured()) continue;
    if (depth >= limit) return true;
    for (const auto& child : *node) pending.emplace_back(&child, depth + 1);
  }
  return false;
}

namespace {

// Every problem of a job definition, in `problems`; `marks` (null for JSON) gives positions.
JobDef CheckJob(const json& obj, const Marks* marks, JobCheck check,
              std::vector<JobProblem>& problems) {
  JobParser p(marks, check);
  JobDef job;
  if (!obj.is_object()) {
    p.Problem(obj, "a job definition must be a mapping with `job` and `steps`");
  } else {
    p.CheckKeys(obj, {"job", "description", "enabled", "max_concurrent_runs", "steps"}, "the job");
    job.name = p.String(obj, "job", "the job", true);
    if (!job.name.empty() && !IsValidName(job.name)) {
      p.Problem(obj["job"], fmt::format("job name '{}' must match {}", job.name, kNameRule));
    }
    job.description = p.String(obj, "description", "the job", false);
    if (obj.contains("enabled")) {
      if (!obj["enabled"].is_boolean()) p.Problem(obj["enabled"], "`enabled` must be true or false");
      else job.enabled = obj["enabled"].get<bool>();
    }
    job.max_concurrent_runs = p.Int(obj, "max_concurrent_runs", "the job", 1, 1);
    if (!obj.contains("steps") || !obj["steps"].is_array() || obj["steps"].empty()) {
      p.Problem(obj.contains("steps") ? obj["steps"] : obj,
                "a job needs `steps`: a list of at least one step");
    } else {
      const json& steps = obj["steps"];
      std::set<std::string> names;
      for (size_t i = 0; i < steps.size(); ++i) {
        job.steps.push_back(p.Step(steps[i], i, steps.size()));
        const std::string& name = job.steps.back().name;
        if (!name.empty() && !names.insert(name).second) {
          p.Problem(steps[i]["name"], fmt::format("two steps are named '{}'", name));
        }
      }
      for (size_t i = 0; i < job.steps.size(); ++i) {
        const StepDef& s = job.steps[i];
        for (auto [action, key] : {std::pair{&s.on_success, "on_success"},
                                   std::pair{&s.on_failure, "on_failure"}}) {
          if (action->kind == StepAction::kGoto && job.StepIndex(action->target) < 0) {
            // Named, not numbered as in SQL Server Agent (QA: `goto:3` was taken for step 3).
            std::vector<std::string> names;
            for (const StepDef& step : job.steps) names.push_back(step.name);
            p.Problem(steps[i][key],
                      fmt::format("step '{}' goes to unknown step '{}'; `goto:` takes a step's "
                                  "name, one of: {}", s.name, action->target,
                                  fmt::join(names, ", ")));
          }
        }
      }
    }
  }
  problems.insert(problems.end(), p.problems.begin(), p.problems.end());
  return job;
}

Status ProblemsStatus(std::vector<JobProblem>& problems) {
  std::stable_sort(problems.begin(), problems.end(), [](const JobProblem& a, const JobProblem& b) {
    return std::pair(a.line, a.column) < std::pair(b.line, b.column);
  });
  std::vector<std::string> lines;
  for (const JobProblem& problem : problems) lines.push_back(problem.ToString());
  return InvalidArgument(fmt::format("{}", fmt::join(lines, "\n")));
}

}  // namespace

std::string JobProblem::ToString() const {
  if (line == 0) return message;
  return fmt::format("line {}, column {}: {}", line, column, message);
}

bool IsJsonText(std::string_view text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && text[first] == '{';
}

Result<JobDef> ParseJob(const std::string& text, std::vector<JobProblem>* problems_out,
                        JobCheck check) {
  std::vector<JobProblem> problems;
  json obj;
  Marks marks;
  const bool is_json = IsJsonText(text);
  const bool strict = check == JobCheck::kNew;
  if (auto bad = InvalidUtf8At(text)) {
    // The agent keeps and answers jobs as JSON, which holds only UTF-8 (QA: a 500 from deep
    // inside the agent at `fanout job create`, and the JSON parser's raw words for a .json).
    auto [line, column] = LineAndColumnAt(text, *bad);
    problems.push_back({line, column, fmt::format("byte 0x{:02X} is not UTF-8: job files are "
                                                  "UTF-8 text (convert the file with iconv)",
                                                  static_cast<unsigned char>(text[*bad]))});
  } else if (is_json) {
    // nlohmann keeps the last of a key written twice: each object's keys are watched.
    std::vector<std::set<std::string>> keys;
    auto watch = [&](int, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::object_start) keys.emplace_back();
      if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
      if (event == json::parse_event_t::key && !keys.empty() && strict &&
          !keys.back().insert(parsed.get<std::string>()).second) {
        problems.push_back({0, 0, fmt::format("duplicate key `{}`", parsed.get<std::string>())});
      }
      return true;
    };
    try {
      obj = json::parse(text, watch);
    } catch (const json::exception& e) {
      problems.push_back({0, 0, fmt::format("malformed JSON: {}", e.what())});
    }
  } else if (auto nul = FindNulByte(text)) {
    problems.push_back({nul->first, nul->second, kNulByteProblem});
  } else {
    try {
      size_t budget = kMaxJobValues;
      YAML::Node root = YAML::Load(text);
      obj = YamlToJson(root, budget);
      if (strict) {
        for (const YAML::Node& key : RepeatedKeys(root)) {
          problems.push_back(ProblemAt(key.Mark(), fmt::format("duplicate key `{}`", key.Scalar())));
        }
        auto merge_keys = MergeKeys(root);
        for (const YAML::Node& key : merge_keys) {
          problems.push_back(ProblemAt(key.Mark(), kMergeKeyProblem));
        }
        // Said once: as a merge key, not also as an unknown key `<<`.
        if (!merge_keys.empty()) EraseKeysNamed(obj, "<<");
      }
      marks = MarksOf(root, obj);
    } catch (const TooManyValues&) {
      problems.push_back({0, 0, fmt::format("the job file holds more than {} values (YAML "
                                            "aliases repeat what they name)", kMaxJobValues)});
    } catch (const YAML::Exception& e) {
      problems.push_back(ProblemAt(e.mark, YamlErrorMessage(e, text, "malformed YAML: ")));
    }
  }
  JobDef job;
  if (problems.empty() || !obj.is_null()) {
    if (NestedDeeperThan(obj, kMaxJsonNesting)) {
      problems.push_back({0, 0, fmt::format("the job definition nests more than {} levels deep",
                                            kMaxJsonNesting)});
    } else {
      job = CheckJob(obj, is_json ? nullptr : &marks, check, problems);
    }
  }
  if (!problems.empty()) {
    Status status = ProblemsStatus(problems);
    if (problems_out != nullptr) *problems_out = std::move(problems);
    return status;
  }
  job.text = text;
  return job;
}

}  // namespace fanout::agent
