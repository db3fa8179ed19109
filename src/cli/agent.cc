// `fanout agent`: runs the job agent of this server (DESIGN §4) until SIGTERM, SIGINT or SIGHUP,
// which drain it: no new starts, running steps may finish for drain_grace, then the rest are
// stopped.
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "agent/config.h"
#include "agent/server.h"
#include "catalog/postgres_catalog.h"
#include "fanout/catalog.h"
#include "cli/cli.h"
#include "common/util.h"
#include "report/report.h"

namespace fanout::cli {
namespace {

struct AgentArgs {
  std::string config;
  bool dev = false;
  std::string listen;
  std::string data_dir;
  int slots = 0;
  std::string name;
  std::string catalog;
};

std::string SelfPath() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "fanout";
}

// A PostgreSQL catalog that refuses this agent's login (no such database, a newer schema, a
// role that may not write) fails every package step that logs in the same way, which had shown
// only as steps exiting 6 (QA). Said once, as a warning: steps through proxies log in as their
// own users, and the check creates and upgrades nothing. A catalog without tables yet is the
// first step's to create; one that does not answer yet may later.
void WarnIfCatalogRefuses(const std::string& spec) {
  catalog::PostgresCatalog catalog(spec, /*existing_catalog_only=*/true);
  Status status = catalog.Open();
  if (!status.ok() && catalog.found_empty()) return;
  if (status.ok()) status = catalog.CheckWriteRights();
  if (status.ok() || catalog.IsOutage(status)) return;
  std::fprintf(stderr, "fanout agent: warning: %s; package steps that log in as this agent's "
               "user cannot record there\n", status.message().c_str());
}

std::string RandomToken() {
  std::random_device rd;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:016x}", (uint64_t{rd()} << 32) | rd());
  return token;
}

// One line on stderr per problem in `message`, each saying who speaks.
void SayProblems(const std::string& message) {
  for (size_t at = 0; at <= message.size();) {
    size_t end = std::min(message.find('\n', at), message.size());
    std::fprintf(stderr, "fanout agent: %.*s\n", static_cast<int>(end - at), message.data() + at);
    at = end + 1;
  }
}

int RunAgent(const AgentArgs& args) {
  // A server that answers now and then with megabytes (history) and lives for months: blocks
  // of 1 MiB and more are mapped and given back when freed. glibc otherwise raises this
  // threshold after each such free (up to 32 MiB), and later ones stay in a thread's heap.
  mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  if (args.dev == !args.config.empty()) {
    std::fprintf(stderr, "fanout agent: give either --config FILE or --dev\n");
    return kExitUsage;
  }
  agent::AgentConfig config;
  // --dev's own data_dir is temporary: removed when the agent stops (or fails to start), unless
  // serving failed, when what it holds may explain why. Each try-out had left one behind.
  struct TemporaryDir {
    std::string path;
    bool keep = false;
    ~TemporaryDir() {
      std::error_code ec;
      if (!path.empty() && !keep) std::filesystem::remove_all(path, ec);
    }
  } temporary;
  if (args.dev) {
    config.name = "dev";
    config.port = 0;
    if (args.data_dir.empty()) {
      char tmpl[] = "/tmp/fanout-agent.XXXXXX";
      if (mkdtemp(tmpl) == nullptr) {
        std::perror("fanout agent: mkdtemp");
        return kExitFailure;
      }
      config.data_dir = tmpl;
      temporary.path = tmpl;
    }
    config.token = RandomToken();
  } else {
    auto loaded = agent::LoadAgentConfig(args.config);
    if (!loaded.ok()) {
      SayProblems(loaded.status().message());
      return loaded.status().code() == Code::kNotFound ? kExitNotFound : kExitInvalid;
    }
    config = *loaded;
  }
  if (!args.name.empty()) config.name = args.name;
  if (!args.data_dir.empty()) config.data_dir = args.data_dir;
  if (args.slots > 0) config.slots = args.slots;
  if (!args.catalog.empty()) config.catalog = args.catalog;
  SetCatalogSpecSource(agent::CatalogSpecSourceOf(config.name));
  if (!args.listen.empty()) {
    if (Status s = agent::ParseListen(args.listen, config); !s.ok()) {
      std::fprintf(stderr, "fanout agent: --listen %s\n", s.message().c_str());
      return kExitUsage;
    }
  }
  std::vector<std::string> warnings;
  if (Status s = agent::CheckAgentConfig(config, warnings); !s.ok()) {
    SayProblems(s.message());
    return kExitInvalid;
  }
  for (const std::string& warning : warnings) {
    std::fprintf(stderr, "fanout agent: warning: %s\n", warning.c_str());
  }
  // The agent runs for months: a password on its command line is in `ps` for every local user
  // (and every step) all that time.
  if (report::DisplayCatalogSpec(args.catalog) != args.catalog) {
    std::fprintf(stderr,
                 "fanout agent: warning: the --catalog URI holds a password, which `ps` shows to "
                 "every local user; give it in agent.yaml (`catalog:`), ~/.pgpass or PGPASSWORD "
                 "instead\n");
  }
  // A package step through a proxy records as the proxy's user: a SQLite catalog then needs
  // sharing, which the agent cannot arrange (docs/agents.md).
  const bool postgres = config.catalog.starts_with("postgres");
  const std::string shown_catalog = report::DisplayCatalogSpec(config.catalog);
  for (const auto& [name, proxy] : config.proxies) {
    const auto& subsystems = proxy.subsystems;
    if (std::find(subsystems.begin(), subsystems.end(), "package") == subsystems.end()) continue;
    if (!postgres) {
      std::fprintf(stderr,
                   "fanout agent: note: package steps through proxy '%s' run as %s, who must be "
                   "able to write the catalog %s and its folder; a PostgreSQL catalog avoids "
                   "that\n",
                   name.c_str(), proxy.user.c_str(), config.catalog.c_str());
    } else if (shown_catalog != config.catalog) {
      std::fprintf(stderr,
                   "fanout agent: note: package steps through proxy '%s' run as %s and are not "
                   "given the password in the catalog %s: that user's ~/.pgpass must hold one "
                   "for its role\n",
                   name.c_str(), proxy.user.c_str(), shown_catalog.c_str());
    }
  }

  // Signals are taken by one thread so shutdown runs as ordinary code. SIGHUP (the terminal
  // that started the agent closed) drains too: it had killed the agent on the spot.
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) AddUnlessIgnored(set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  agent::AgentServer server(config, SelfPath());
  if (Status s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "fanout agent: %s\n", s.message().c_str());
    // Refused by the security rules (a data_dir, token_file or client CA others may write).
    return s.code() == Code::kPermissionDenied ? kExitInvalid : kExitFailure;
  }
  const agent::AgentConfig& running = server.config();
  std::printf("fanout agent %s listening on %s\n", running.name.c_str(), running.url().c_str());
  std::printf("data_dir: %s\n", running.data_dir.c_str());
  if (args.dev) {
    std::string token_file = running.data_dir + "/token";
    // The bearer token lets anyone who reads it run jobs as this agent's user: owner only.
    if (Status s = WriteFileAtomically(token_file, running.token + "\n", 0600); !s.ok()) {
      std::fprintf(stderr, "fanout agent: %s; use the token printed below\n", s.message().c_str());
    }
    std::printf("token: %s\n", running.token.c_str());
    std::printf("token_file: %s\n", token_file.c_str());
  }
  std::fflush(stdout);

  // Beside serving: libpq may wait its connect_timeout for a catalog that does not answer.
  std::thread catalog_check;
  if (config.catalog.starts_with("postgres")) {
    catalog_check = std::thread([spec = config.catalog] { WarnIfCatalogRefuses(spec); });
  }
  std::thread watcher([&server, set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "fanout agent: SIG%s received: draining (no new runs; running steps may "
                         "finish)\n", sigabbrev_np(sig));
    server.Shutdown();
  });
  Status served = server.Serve();
  if (!served.ok()) {
    std::fprintf(stderr, "fanout agent: %s\n", served.message().c_str());
    pthread_kill(watcher.native_handle(), SIGTERM);
  }
  watcher.join();
  if (catalog_check.joinable()) catalog_check.join();
  temporary.keep = !served.ok();
  std::fprintf(stderr, "fanout agent: stopped%s%s\n",
               temporary.path.empty() || temporary.keep ? "" : "; removed the temporary data_dir ",
               temporary.path.empty() || temporary.keep ? "" : temporary.path.c_str());
  return served.ok() ? kExitSuccess : kExitFailure;
}

}  // namespace

Command AddAgentCommand(CLI::App& app) {
  auto args = std::make_shared<AgentArgs>();
  CLI::App* cmd = app.add_subcommand("agent", "Run the job agent of this server");
  cmd->add_option("--config", args->config, "The agent configuration file (agent.yaml)");
  cmd->add_flag("--dev", args->dev,
                "Development mode: loopback, any free port, a temporary data_dir and a printed "
                "token");
  cmd->add_option("--listen", args->listen, "HOST:PORT to listen on (overrides the config; port 0: any)");
  cmd->add_option("--data-dir", args->data_dir, "Where jobs, packages and history live (overrides the config)");
  cmd->add_option("--slots", args->slots, "Runs at once (overrides the config; default: cores)")
      ->check(WholeNumberAtLeastOne());
  cmd->add_option("--name", args->name, "The agent's name (overrides the config)");
  cmd->add_option("--catalog", args->catalog,
                  "Where package steps record their executions: sqlite:PATH or a URL (overrides "
                  "the config; default sqlite:DATA_DIR/catalog.db)");
  cmd->footer(
      "The first line printed is `fanout agent NAME listening on URL`. SIGTERM, SIGINT or\n"
      "SIGHUP (each unless ignored when it started, as nohup ignores SIGHUP) drain the agent:\n"
      "nothing new starts, running steps may finish for drain_grace, the rest are stopped.\n"
      "Exit codes: 0 stopped cleanly, 1 could not start, 4 config not found, 5 invalid config\n"
      "(or refused: listening beyond loopback without a token or mutual TLS), 6 usage error.");
  return {cmd, [args] { return RunAgent(*args); }};
}

}  // namespace fanout::cli
