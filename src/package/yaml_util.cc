// YAML checks shared by every file Fanout reads as YAML (yaml_util.h).
#include "package/yaml_util.h"

#include <yaml-cpp/depthguard.h>

#include <set>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "common/util.h"

namespace fanout {

namespace {

// Calls on_map(map) for every mapping under `root`, visiting at most `max_nodes` nodes, without
// recursion.
template <typename OnMap>
void ForEachMap(const YAML::Node& root, size_t max_nodes, OnMap on_map) {
  std::vector<YAML::Node> pending = {root};
  for (size_t visited = 0; !pending.empty() && visited < max_nodes; ++visited) {
    YAML::Node node = pending.back();
    pending.pop_back();
    if (node.IsMap()) {
      on_map(node);
      for (auto it = node.begin(); it != node.end(); ++it) pending.push_back(it->second);
    } else if (node.IsSequence()) {
      for (const YAML::Node& item : node) pending.push_back(item);
    }
  }
}

}  // namespace

std::vector<YAML::Node> RepeatedKeys(const YAML::Node& root, size_t max_nodes) {
  std::vector<YAML::Node> repeated;
  std::set<std::pair<int, int>> said;  // by place: an alias walks the same keys again
  ForEachMap(root, max_nodes, [&](const YAML::Node& map) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!seen.insert(it->first.Scalar()).second &&
          said.insert({it->first.Mark().line, it->first.Mark().column}).second) {
        repeated.push_back(it->first);
      }
    }
  });
  return repeated;
}

std::vector<YAML::Node> MergeKeys(const YAML::Node& root, size_t max_nodes) {
  std::vector<YAML::Node> merges;
  std::set<std::pair<int, int>> said;
  ForEachMap(root, max_nodes, [&](const YAML::Node& map) {
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == "<<" && it->first.Tag() != "!" &&
          said.insert({it->first.Mark().line, it->first.Mark().column}).second) {
        merges.push_back(it->first);
      }
    }
  });
  return merges;
}

namespace {

// YAML reads a key written without `? ` as 1,024 characters at most; yaml-cpp then says only
// "illegal map value" at the colon after it. The key's length when that is why, else 0.
size_t OverlongKeyLength(const YAML::Exception& e, std::string_view text) {
  constexpr size_t kMaxKey = 1024;
  if (e.msg != YAML::ErrorMsg::MAP_VALUE || e.mark.line < 0 || e.mark.column < 0) return 0;
  size_t start = 0;
  for (int line = 0; line < e.mark.line && start != std::string_view::npos; ++line) {
    start = text.find('\n', start);
    if (start != std::string_view::npos) ++start;
  }
  if (start == std::string_view::npos) return 0;
  std::string_view row = text.substr(start, static_cast<size_t>(e.mark.column));
  size_t key_start = row.find_first_not_of(" -");
  if (key_start == std::string_view::npos) return 0;
  size_t length = row.size() - key_start;
  return length > kMaxKey ? length : 0;
}

// For yaml-cpp's "end of map/sequence flow not found", which it says at the end of the file:
// where the `{` or `[` that is never closed is. Quoted text and comments are skipped.
std::string UnclosedFlowHint(const YAML::Exception& e, std::string_view text) {
  const bool map = e.msg == YAML::ErrorMsg::END_OF_MAP_FLOW;
  if (!map && e.msg != YAML::ErrorMsg::END_OF_SEQ_FLOW) return "";
  struct Open {
    char bracket;
    int line, column;
  };
  std::vector<Open> open;
  int line = 1, column = 0;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
      if (quote == '\'') quote = 0;  // a broken single-quoted line: do not let it hide the rest
      continue;
    }
    if (quote != 0) {
      if (c == '\\' && quote == '"') {
        ++i;
        ++column;
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t')) {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '{' || c == '[') {
      open.push_back({c, line, column});
    } else if ((c == '}' || c == ']') && !open.empty()) {
      open.pop_back();
    }
  }
  for (auto it = open.rbegin(); it != open.rend(); ++it) {
    if (it->bracket == (map ? '{' : '[')) {
      return fmt::format("; the `{}` at line {}, column {} is never closed", it->bracket, it->line,
                         it->column);
    }
  }
  return "";
}

}  // namespace

std::string YamlErrorMessage(const YAML::Exception& e, std::string_view text,
                             std::string_view prefix) {
  if (const auto* deep = dynamic_cast<const YAML::DeepRecursion*>(&e)) {
    return fmt::format("nested too deeply: YAML is read to {} levels at most", deep->depth() - 1);
  }
  if (size_t length = OverlongKeyLength(e, text)) {
    return fmt::format("{}a key of {} characters: YAML reads a key of 1024 characters at most",
                       prefix, length);
  }
  return std::string(prefix) + e.msg + UnclosedFlowHint(e, text) + YamlTabHint(text, e.mark.line + 1);
}

}  // namespace fanout
