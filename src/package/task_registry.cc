// The registry of task types that the loader consults (see include/fanout/task.h).
#include <algorithm>
#include <mutex>

#include "fanout/task.h"

namespace fanout {
namespace {
struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<TaskType>> types;
};
Registry& GetRegistry() {
  static Registry* registry = new Registry();  // never destroyed: used until exit
  return *registry;
}
}  // namespace

void RegisterTaskType(std::unique_ptr<TaskType> type) {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  auto same = [&](const auto& t) { return t->name() == type->name(); };
  r.types.erase(std::remove_if(r.types.begin(), r.types.end(), same), r.types.end());
  r.types.push_back(std::move(type));
}

const TaskType* FindTaskType(std::string_view name) {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  for (const auto& t : r.types) {
    if (t->name() == name) return t.get();
  }
  return nullptr;
}

std::vector<std::string> TaskTypeNames() {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> names;
  for (const auto& t : r.types) names.emplace_back(t->name());
  return names;
}

}  // namespace fanout
