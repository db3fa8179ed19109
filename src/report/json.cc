// The reports as JSON for scripts (see render.h). Keys follow the catalog's column names; absent
// values are null rather than "".
#include <chrono>
#include <nlohmann/json.hpp>

#include "report/render.h"

namespace fanout::report {
namespace {

using Json = nlohmann::ordered_json;

Json OrNull(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

Json Time(const std::optional<DateTime>& t) { return t ? Json(FormatDateTime(*t)) : Json(nullptr); }

double Seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

Json ExecutionJson(const ExecutionRow& e, DateTime now, bool with_parameters) {
  Json j = {
      {"id", e.id},
      {"parent_id", OrNull(e.parent_id)},
      {"package", e.package},
      {"package_sha256", OrNull(e.package_sha256)},
      {"host", OrNull(e.host)},
      {"agent", OrNull(e.agent)},
      {"job", OrNull(e.job)},
      {"run_id", OrNull(e.run_id)},
      {"status", e.status},
      {"started_at", FormatDateTime(e.started_at)},
      {"ended_at", Time(e.ended_at)},
      {"duration_seconds", EndUnknown(e.status, e.ended_at)
                               ? Json(nullptr)
                               : Json(Seconds(Elapsed(e.started_at, e.ended_at, now)))},
      {"exit_code", e.exit_code ? Json(*e.exit_code) : Json(nullptr)},
      {"message", OrNull(e.message)},
      {"operator", OrNull(e.operator_name)},
  };
  if (with_parameters) {
    Json params = Json::object();
    for (const auto& [name, value] : e.parameters) {
      params[name] = {{"value", value.sensitive ? Json(nullptr) : Json(value.value)},
                      {"sensitive", value.sensitive}};
    }
    j["parameters"] = std::move(params);
  }
  return j;
}

Json ChildrenJson(const std::vector<ChildNode>& children, DateTime now) {
  Json list = Json::array();
  for (const ChildNode& child : children) {
    Json j = ExecutionJson(child.execution, now, true);
    j["task_path"] = OrNull(child.task_path);
    j["attempt"] = child.attempt > 0 ? Json(child.attempt) : Json(nullptr);
    j["superseded"] = child.superseded;
    j["given_up"] = child.given_up;
    j["label"] = child.label;
    j["errors"] = child.errors;
    j["errors_omitted"] = child.errors_omitted;
    j["children"] = ChildrenJson(child.children, now);
    list.push_back(std::move(j));
  }
  return list;
}

// `replace` rather than the default `strict`: captured output need not be UTF-8.
std::string Dump(const Json& j) {
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

Json EarlierAttemptsJson(const std::vector<TaskRunRow>& attempts) {
  Json list = Json::array();
  for (const TaskRunRow& run : attempts) {
    list.push_back({{"attempt", run.attempt},
                    {"status", run.status},
                    {"started_at", FormatDateTime(run.started_at)},
                    {"ended_at", Time(run.ended_at)},
                    {"agent", OrNull(run.agent)},
                    {"child_execution_id", OrNull(run.child_execution_id)},
                    {"message", OrNull(run.message)}});
  }
  return list;
}

}  // namespace

std::string ExecutionsJson(const std::vector<ExecutionSummary>& executions, DateTime now) {
  Json list = Json::array();
  for (const ExecutionSummary& s : executions) {
    Json j = ExecutionJson(s.execution, now, false);
    j["children"] = s.children;
    list.push_back(std::move(j));
  }
  return Dump(list);
}

std::string OverviewJson(const Overview& overview) {
  const DateTime now = overview.generated_at;
  Json tasks = Json::array();
  for (const TaskSummary& t : overview.tasks) {
    tasks.push_back({
        {"task_path", t.task_path},
        {"task_type", t.task_type},
        {"status", t.status},
        {"attempts", t.attempts},
        {"started_at", FormatDateTime(t.started_at)},
        {"ended_at", Time(t.ended_at)},
        {"duration_seconds", EndUnknown(t.status, t.ended_at)
                                 ? Json(nullptr)
                                 : Json(Seconds(Elapsed(t.started_at, t.ended_at, now)))},
        {"agent", OrNull(t.agent)},
        {"child_execution_id", OrNull(t.child_execution_id)},
        {"message", OrNull(t.message)},
        {"earlier_attempts", EarlierAttemptsJson(t.earlier_attempts)},
    });
  }
  Json j = {
      {"execution", ExecutionJson(overview.execution, now, true)},
      {"tasks", std::move(tasks)},
      {"errors", overview.errors},
      {"errors_omitted", overview.errors_omitted},
      {"children", ChildrenJson(overview.children, now)},
      {"children_elsewhere", overview.children_elsewhere},
      {"generated_at", FormatDateTime(now)},
  };
  return Dump(j);
}

}  // namespace fanout::report
