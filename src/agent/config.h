// The agent's configuration file (DESIGN §4) and `--dev` defaults, with the security rules
// checked before anything listens: beyond loopback, a token or mutual TLS is required.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "fanout/status.h"

namespace fanout::agent {

struct ProxyConfig {
  std::string name;
  std::string user;  // Unix account the step runs as (its primary group too)
  std::vector<std::string> subsystems;  // package, process
};

struct AgentConfig {
  std::string name;
  std::string host = "127.0.0.1";
  int port = 7420;  // 0: any free port (printed at start)
  std::string data_dir;
  int slots = 0;  // 0: cores
  std::string tls_cert, tls_key, tls_client_ca;
  std::string token;       // read from token_file
  std::string token_file;  // "" when the token came from elsewhere (--dev)
  std::string catalog;  // where package steps' executions are recorded
  std::map<std::string, ProxyConfig> proxies;
  size_t max_body_bytes = 4 << 20;
  // A history answer ends after the run that takes it past this size, with "truncated": true:
  // outputs of 64 KiB per step attempt could otherwise make a gigabyte.
  size_t max_history_bytes = 64 << 20;
  // Finished runs kept per job, newest first (SQL Server Agent keeps 100 rows per job); older
  // ones are deleted with their step attempts and output as new ones finish.
  int history_runs_per_job = 1000;
  std::chrono::milliseconds stop_grace{5000};    // SIGTERM -> SIGKILL for a stopped step
  std::chrono::milliseconds drain_grace{60000};  // on SIGTERM: how long running steps may finish

  bool tls() const { return !tls_cert.empty(); }
  std::string url() const;
};

// Reads agent.yaml. Relative paths (data_dir, token_file, tls files) are relative to the file.
Result<AgentConfig> LoadAgentConfig(const std::string& path);

// `listen` (agent.yaml) and `--listen`: HOST:PORT, [V6]:PORT; the port a whole number 0-65535
// (0: any free port). Sets config.host and config.port; InvalidArgument says what is wrong.
Status ParseListen(std::string_view listen, AgentConfig& config);

// Refuses configurations that would expose the agent without credentials, and fills defaults.
// `warnings` gets what is wrong but must not stop the agent.
Status CheckAgentConfig(AgentConfig& config, std::vector<std::string>& warnings);

bool IsLoopback(const std::string& host);

// Where agent `name` and its package steps take their catalog spec from, as catalog messages
// name it (SetCatalogSpecSource): not the commands' --catalog or $FANOUT_CATALOG.
std::string CatalogSpecSourceOf(const std::string& name);

}  // namespace fanout::agent
