// `fanout deploy FILE... --agent URL...`: pushes packages and job files to every agent named.
// Everything is validated locally first and nothing is sent when any file is invalid; packages
// go before jobs; deploying the same files again changes nothing (idempotent).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "cli/cli.h"
#include "client/agent_client.h"
#include "common/util.h"
#include "fanout/package.h"

namespace fanout::cli {
namespace {

constexpr int kExitAgentError = 7;  // as in `fanout job`: an agent could not be used

struct DeployArgs {
  std::vector<std::string> files;
  std::vector<std::string> agents;
  std::string token_file;
  std::string ca, cert, key;
};

// One file to deploy, checked and ready to send.
struct Item {
  enum Kind { kPackage, kJob } kind = kPackage;
  std::string file;
  std::string name;
  std::string text;
  std::string content_type;  // jobs: application/json or application/yaml
};

// Reads and checks every file; appends each problem (one line each) to `problems`.
std::vector<Item> LoadItems(const std::vector<std::string>& files,
                            std::vector<std::string>& problems) {
  std::vector<Item> items;
  std::set<std::pair<Item::Kind, std::string>> seen;
  for (const std::string& file : files) {
    auto text = ReadFile(file);
    if (!text.ok()) {
      problems.push_back(text.status().message());  // names the file
      continue;
    }
    Item item;
    item.file = file;
    item.text = std::move(*text);
    try {
      const FileKeys keys = TopLevelKeys(item.text);
      if (keys.package == keys.job) {
        problems.push_back(NeitherKindOfFile(keys, file));
        continue;
      }
      item.kind = keys.package ? Item::kPackage : Item::kJob;
    } catch (const YAML::Exception& e) {
      problems.push_back(fmt::format("{}:{}:{}: not valid YAML or JSON: {}{}", file,
                                     e.mark.line + 1, e.mark.column + 1, e.msg,
                                     YamlTabHint(item.text, e.mark.line + 1)));
      continue;
    }
    if (item.kind == Item::kPackage) {
      // The same checks `fanout validate` and the agent make.
      Diagnostics diagnostics;
      auto package = LoadPackageText(item.text, file, diagnostics);
      if (!package.ok()) {
        for (const Diagnostic& d : diagnostics.Sorted()) problems.push_back(d.ToString());
        if (diagnostics.empty()) {
          problems.push_back(fmt::format("{}: {}", file, package.status().message()));
        }
        continue;
      }
      item.name = (*package)->name;
    } else {
      Diagnostics diagnostics;
      auto job = CheckJobFile(item.text, file, diagnostics);
      if (!job) {
        for (const Diagnostic& d : diagnostics.Sorted()) problems.push_back(d.ToString());
        continue;
      }
      item.name = job->job.name;
      item.content_type = job->content_type;
    }
    if (!seen.insert({item.kind, item.name}).second) {
      problems.push_back(fmt::format("{}: {} {} is also defined by another file given", file,
                                     item.kind == Item::kPackage ? "package" : "job", item.name));
      continue;
    }
    items.push_back(std::move(item));
  }
  // Packages first: a job's package steps need their packages on the agent.
  std::stable_partition(items.begin(), items.end(),
                        [](const Item& item) { return item.kind == Item::kPackage; });
  return items;
}

// What happened to each kind on one agent.
struct Counts {
  int created = 0, updated = 0, unchanged = 0;
  int total() const { return created + updated + unchanged; }
  void Add(bool was_new, bool changed) {
    if (!changed) {
      ++unchanged;
    } else if (was_new) {
      ++created;
    } else {
      ++updated;
    }
  }
  // "2 packages (1 new, 1 unchanged)".
  std::string ToString(const char* noun) const {
    std::vector<std::string> parts;
    if (created > 0) parts.push_back(fmt::format("{} new", created));
    if (updated > 0) parts.push_back(fmt::format("{} updated", updated));
    if (unchanged > 0) parts.push_back(fmt::format("{} unchanged", unchanged));
    return fmt::format("{} {}{} ({})", total(), noun, total() == 1 ? "" : "s",
                       fmt::join(parts, ", "));
  }
};

std::string Hint(const Status& status, const std::string& url) {
  switch (status.code()) {
    case Code::kUnavailable:
      if (client::AnsweredUnavailable(status)) {
        return "the agent answered that it takes no work now, saying why above: restart an agent "
               "whose data_dir is gone; one that is draining takes work once started again";
      }
      return fmt::format("check that `fanout agent` runs at {}; a TLS agent needs https:// and "
                         "--ca, and --cert/--key when it requires client certificates",
                         url);
    case Code::kPermissionDenied:
      return client::ForbiddenHint(url);
    case Code::kUnauthenticated:
      return "pass the agent's token with --token-file FILE or FANOUT_TOKEN, and --cert/--key "
             "when it requires a client certificate";
    case Code::kInvalidArgument:
      return "the agent rejected the file: fix what it says and deploy again";
    case Code::kResourceExhausted:
      return "the file is larger than the agent's max_body_bytes";
    default:
      return "the agent could not do it (its answer above may say why: a full disk, say) or "
             "answered unexpectedly; see its log, and check that it runs the same fanout version";
  }
}

// Deploys every item to one agent, stopping at its first failure; prints one summary line.
bool DeployTo(client::AgentClient& agent, const std::vector<Item>& items) {
  Counts packages, jobs;
  size_t done = 0;
  std::string agent_name;
  auto fail = [&](const std::string& what, const Status& status) {
    std::fprintf(stderr, "%s: FAILED %s (%zu of %zu files done): %s\n", agent.url().c_str(),
                 what.c_str(), done, items.size(), status.message().c_str());
    std::fprintf(stderr, "fanout: hint: %s\n", Hint(status, agent.url()).c_str());
    return false;
  };

  auto health = agent.Health();
  if (!health.ok()) return fail("reaching the agent", health.status());
  agent_name = health->value("name", std::string());
  if (health->value("draining", false)) {
    std::fprintf(stderr, "fanout deploy: warning: agent %s (%s) is draining (shutting down): the "
                 "files are stored, and its jobs run once it is started again\n",
                 agent_name.c_str(), agent.url().c_str());
  }

  for (const Item& item : items) {
    if (item.kind == Item::kPackage) {
      // Skip the upload when the agent already holds exactly these bytes.
      auto current = agent.GetPackage(item.name);
      if (!current.ok() && current.status().code() != Code::kNotFound) {
        return fail("reading package " + item.name, current.status());
      }
      const bool exists = current.ok();
      if (exists && current->sha256 == Sha256Hex(item.text)) {
        packages.Add(false, false);
      } else {
        auto put = agent.PutPackage(item.name, item.text);
        if (!put.ok()) return fail("deploying package " + item.name, put.status());
        packages.Add(!exists, put->changed);
      }
    } else {
      // A job is small: re-sending it is cheap, and the agent says whether it changed.
      auto put = agent.PutJob(item.name, item.text, item.content_type);
      if (!put.ok()) return fail("deploying job " + item.name, put.status());
      for (const std::string& warning : put->warnings) {
        std::fprintf(stderr, "fanout deploy: warning: %s\n", warning.c_str());
      }
      jobs.Add(put->created, put->changed || put->created);
    }
    ++done;
  }

  std::vector<std::string> parts;
  if (packages.total() > 0) parts.push_back(packages.ToString("package"));
  if (jobs.total() > 0) parts.push_back(jobs.ToString("job"));
  std::printf("%s%s%s: %s\n", agent.url().c_str(), agent_name.empty() ? "" : " ",
              agent_name.c_str(), fmt::format("{}", fmt::join(parts, ", ")).c_str());
  return true;
}

int Deploy(const DeployArgs& args) {
  std::vector<std::string> urls = args.agents;
  if (urls.empty()) {
    if (const char* env = std::getenv("FANOUT_AGENT"); env != nullptr && *env != '\0') {
      urls.push_back(env);
    }
  }
  if (urls.empty()) {
    std::fprintf(stderr, "fanout deploy: no agent given; pass --agent http://HOST:PORT (once "
                         "per agent) or set FANOUT_AGENT\n");
    return kExitUsage;
  }
  auto token = client::ResolveToken(args.token_file);
  if (!token.ok()) {
    std::fprintf(stderr, "fanout deploy: %s%s\n", args.token_file.empty() ? "" : "--token-file: ",
                 token.status().message().c_str());
    return kExitUsage;
  }
  std::vector<std::unique_ptr<client::AgentClient>> agents;
  for (const std::string& url : urls) {
    client::AgentEndpoint endpoint;
    endpoint.url = url;
    endpoint.token = *token;
    endpoint.token_source = client::TokenSource(args.token_file);
    endpoint.ca_file = args.ca;
    endpoint.cert_file = args.cert;
    endpoint.key_file = args.key;
    agents.push_back(std::make_unique<client::AgentClient>(std::move(endpoint)));
    if (!agents.back()->endpoint_status().ok()) {
      std::fprintf(stderr, "fanout deploy: %s\n",
                   agents.back()->endpoint_status().message().c_str());
      return kExitUsage;
    }
  }

  std::vector<std::string> problems;
  const std::vector<Item> items = LoadItems(args.files, problems);
  if (!problems.empty()) {
    for (const std::string& problem : problems) std::fprintf(stderr, "%s\n", problem.c_str());
    std::fprintf(stderr, "fanout deploy: %zu problem%s; nothing was deployed\n", problems.size(),
                 problems.size() == 1 ? "" : "s");
    return kExitInvalid;
  }

  // Every agent gets its chance even when one fails.
  bool all_ok = true;
  for (auto& agent : agents) all_ok = DeployTo(*agent, items) && all_ok;
  return all_ok ? kExitSuccess : kExitAgentError;
}

}  // namespace

Command AddDeployCommand(CLI::App& app) {
  auto args = std::make_shared<DeployArgs>();
  CLI::App* cmd = app.add_subcommand(
      "deploy", "Push packages and job files to agents; validates first, idempotent");
  cmd->add_option("files", args->files,
                  "Package files (with `package:`) and job files (YAML or JSON, with `job:`)")
      ->required();
  cmd->add_option("--agent", args->agents,
                  "An agent, http://HOST:PORT or https://HOST:PORT (repeatable; default: "
                  "$FANOUT_AGENT)");
  cmd->add_option("--token-file", args->token_file,
                  "File holding the agents' bearer token (without it: the token itself from $FANOUT_TOKEN)");
  cmd->add_option("--ca", args->ca, "https: CA certificate to trust for the agents");
  cmd->add_option("--cert", args->cert, "https: client certificate, for mutual TLS");
  cmd->add_option("--key", args->key, "https: the client certificate's key");
  cmd->footer(
      "Packages are deployed before jobs; a package the agent already holds (same sha256) is\n"
      "not sent again. Prints one line per agent.\n"
      "Exit codes: 0 every agent up to date, 5 a file is invalid (nothing deployed), 6 usage\n"
      "error, 7 an agent failed (unreachable, 401, rejected a file; the others are still done).");
  return {cmd, [args] { return Deploy(*args); }};
}

}  // namespace fanout::cli
