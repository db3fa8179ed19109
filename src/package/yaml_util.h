// YAML checks shared by every file Fanout reads as YAML (packages, job files, agent.yaml), for
// what yaml-cpp itself lets pass.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <vector>

namespace fanout {

// The keys written again in a mapping anywhere under `root` (each repeat, not the first time
// the key appears), each once: yaml-cpp keeps one of the values without a word. Walks without
// recursion and at most `max_nodes` nodes, since aliases can make a small file huge.
std::vector<YAML::Node> RepeatedKeys(const YAML::Node& root, size_t max_nodes = 1000000);

// The merge keys (`<<: *anchor`) under `root`, each once. yaml-cpp reads `<<` as an ordinary key,
// so the keys it should have merged are missing without a word.
std::vector<YAML::Node> MergeKeys(const YAML::Node& root, size_t max_nodes = 1000000);

// The problem of a merge key.
inline constexpr const char* kMergeKeyProblem =
    "YAML merge keys (`<<: *anchor`) are not supported: write the keys out, or alias a whole "
    "mapping (`b: *a`)";

// What to say of a yaml-cpp exception thrown while reading `text`: `prefix`, its message and the
// line indented with a tab when there is one (YamlTabHint); for nesting past yaml-cpp's limit,
// whose message is only "bad file", that it is nested too deeply.
std::string YamlErrorMessage(const YAML::Exception& e, std::string_view text,
                             std::string_view prefix);

// The problem of a NUL byte (FindNulByte) in a file read as YAML.
inline constexpr const char* kNulByteProblem =
    "a NUL byte: a package or job file is text (YAML), not binary data";

}  // namespace fanout
