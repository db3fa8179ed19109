// YAML checks shared by every file Fanout reads as YAML (packages, job files, agent.yaml), for
// what yaml-cpp itself lets pass.
#pragma once

#include <yaml-cpp/yaml.h>

#include <vector>

namespace fanout {

// The keys written again in a mapping anywhere under `root` (each repeat, not the first time
// the key appears), each once: yaml-cpp keeps one of the values without a word. Walks without
// recursion and at most `max_nodes` nodes, since aliases can make a small file huge.
std::vector<YAML::Node> RepeatedKeys(const YAML::Node& root, size_t max_nodes = 1000000);

}  // namespace fanout
