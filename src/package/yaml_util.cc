// YAML checks shared by every file Fanout reads as YAML (yaml_util.h).
#include "package/yaml_util.h"

#include <yaml-cpp/depthguard.h>

#include <set>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "common/util.h"

namespace fanout {

std::vector<YAML::Node> RepeatedKeys(const YAML::Node& root, size_t max_nodes) {
  std::vector<YAML::Node> repeated;
  std::set<std::pair<int, int>> said;  // by place: an alias walks the same keys again
  std::vector<YAML::Node> pending = {root};
  for (size_t visited = 0; !pending.empty() && visited < max_nodes; ++visited) {
    YAML::Node node = pending.back();
    pending.pop_back();
    if (node.IsMap()) {
      std::set<std::string> seen;
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!seen.insert(it->first.Scalar()).second &&
            said.insert({it->first.Mark().line, it->first.Mark().column}).second) {
          repeated.push_back(it->first);
        }
        pending.push_back(it->second);
      }
    } else if (node.IsSequence()) {
      for (const YAML::Node& item : node) pending.push_back(item);
    }
  }
  return repeated;
}

std::string YamlErrorMessage(const YAML::Exception& e, std::string_view text,
                             std::string_view prefix) {
  if (const auto* deep = dynamic_cast<const YAML::DeepRecursion*>(&e)) {
    return fmt::format("nested too deeply: YAML is read to {} levels at most", deep->depth() - 1);
  }
  return std::string(prefix) + e.msg + YamlTabHint(text, e.mark.line + 1);
}

}  // namespace fanout
