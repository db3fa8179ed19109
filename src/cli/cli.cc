// The subcommand registry and the shared parts of every command.
#include "cli/cli.h"

#include <csignal>
#include <cstdio>
#include <map>

#include "tasks/builtin.h"

namespace fanout::cli {

bool ParseSets(const std::vector<std::string>& pairs, std::map<std::string, std::string>& out) {
  for (const std::string& pair : pairs) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "fanout: --set needs NAME=VALUE, got '%s'\n", pair.c_str());
      return false;
    }
    out[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return true;
}

int Main(int argc, char** argv) {
  // A peer that goes away (a child's stdin, an agent's socket) is an error to handle, not a
  // reason to die.
  std::signal(SIGPIPE, SIG_IGN);
  RegisterBuiltinTaskTypes();
  CLI::App app{"Fanout runs packages of tasks and spreads child packages over agents."};
  app.set_version_flag("--version", std::string("fanout ") + FANOUT_VERSION);
  app.require_subcommand(1);
  const std::vector<Command> commands = {AddRunCommand(app), AddValidateCommand(app),
                                         AddAgentCommand(app), AddJobCommand(app),
                                         AddDeployCommand(app), AddReportCommand(app),
                                         AddLogsCommand(app), AddCatalogCommand(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  for (const Command& command : commands) {
    if (command.app->parsed()) return command.run();
  }
  return kExitUsage;
}

}  // namespace fanout::cli
