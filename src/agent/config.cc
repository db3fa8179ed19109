// Agent configuration: YAML file in, checked AgentConfig out (see config.h).
#include "agent/config.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <set>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "agent/job.h"
#include "agent/store.h"
#include "client/agent_client.h"
#include "common/util.h"
#include "fanout/catalog.h"
#include "package/yaml_util.h"

namespace fanout::agent {
namespace {

std::string Resolve(const std::filesystem::path& base, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return (base / path).lexically_normal().string();
}

}  // namespace

std::string AgentConfig::url() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (h == "0.0.0.0") h = HostName();
  return fmt::format("{}://{}:{}", tls() ? "https" : "http", h, port);
}

// Whether `host` is a loopback address (127.0.0.0/8, ::1), or `localhost` with only such
// addresses. Other names are not looked up: "127.evil.example" can be anything, and what a name
// resolves to may change before the listener binds it.
bool IsLoopback(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (host != "localhost") hints.ai_flags = AI_NUMERICHOST;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return false;
  bool loopback = true;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      auto* v4 = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      loopback = loopback && (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    } else if (a->ai_family == AF_INET6) {
      auto* v6 = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
      loopback = loopback && IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
    } else {
      loopback = false;
    }
  }
  freeaddrinfo(found);
  return loopback;
}

Status ParseListen(std::string_view listen, AgentConfig& config) {
  size_t colon = listen.rfind(':');
  // "http://h:p" is a URL, and ":p" names no address (httplib would take every interface and
  // the agent would print "http://:PORT", which no client can use).
  if (colon == std::string_view::npos || colon == 0 || listen.find("://") != std::string_view::npos) {
    return InvalidArgument(fmt::format(
        "is HOST:PORT without a scheme, e.g. 127.0.0.1:7420, [::1]:7420 or 0.0.0.0:7420 (port 0: "
        "any free one), not '{}'",
        listen));
  }
  std::string_view host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int number = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (ec != std::errc() || end != port.data() + port.size() || number < 0 || number > 65535) {
    return InvalidArgument(fmt::format(
        "has a bad port '{}' in '{}': a whole number from 0 to 65535 (0: any free one)", port, listen));
  }
  config.host = std::string(host);
  config.port = number;
  return Status::Ok();
}

Result<AgentConfig> LoadAgentConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  // Absolute, so that paths mean the same to step processes, which run in other folders.
  std::error_code absolute_error;
  std::filesystem::path base = std::filesystem::absolute(path, absolute_error).parent_path();
  AgentConfig c;
  // Said in file order, one line each, as `fanout validate` prints a package's:
  // FILE:LINE:COLUMN: MESSAGE.
  std::vector<std::tuple<int, int, std::string>> problems;
  auto problem = [&](const YAML::Node& at, const std::string& message) {
    problems.emplace_back(at.Mark().line + 1, at.Mark().column + 1, message);
  };
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return InvalidArgument(path + ": an agent configuration is a YAML mapping");
    // Unknown keys are errors at every level: a misspelt `tls.client_ca` would turn mutual TLS
    // off without a word (QA).
    auto check_keys = [&](const YAML::Node& map, const std::vector<std::string>& allowed,
                          const std::string& where) {
      for (auto it = map.begin(); it != map.end(); ++it) {
        const std::string& key = it->first.Scalar();
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
          problem(it->first, fmt::format("unknown key `{}{}`; allowed: {}", where, key,
                                         fmt::join(allowed, ", ")));
        }
      }
    };
    // Where to point at `key`'s value: a null one has the position of whatever follows it,
    // often the next line, so its key's is said instead.
    auto at = [](const YAML::Node& parent, const std::string& key) {
      for (auto it = parent.begin(); it != parent.end(); ++it) {
        if (it->first.Scalar() == key) return it->second.IsNull() ? it->first : it->second;
      }
      return parent;
    };
    // The mapping under `key`, if any; another value is a problem saying what it holds.
    auto mapping = [&](const YAML::Node& parent, const std::string& key, const std::string& what,
                       const std::string& where = "") -> std::optional<YAML::Node> {
      YAML::Node node = parent[key];
      if (!node || node.IsNull()) return std::nullopt;  // every entry commented out, say
      if (!node.IsMap()) {
        problem(at(parent, key), fmt::format("`{}{}` is a mapping: {}", where, key, what));
        return std::nullopt;
      }
      return node;
    };
    // A key's text. No value (`data_dir:` alone, or `~`) is a problem: yaml-cpp reads it as the
    // text "null", which had made a folder of that name.
    auto text = [&](const YAML::Node& parent, const std::string& key,
                    const std::string& where = "") -> std::optional<std::string> {
      YAML::Node node = parent[key];
      if (!node) return std::nullopt;
      if (!node.IsScalar() || node.Scalar().empty()) {
        problem(at(parent, key),
                fmt::format("`{}{}` needs {}", where, key,
                            node.IsScalar() || node.IsNull() ? "a value" : "a single value"));
        return std::nullopt;
      }
      return node.Scalar();
    };
    for (const YAML::Node& key : RepeatedKeys(root)) {  // at every level
      problem(key, fmt::format("duplicate key `{}`", key.Scalar()));
    }
    check_keys(root, {"name", "listen", "data_dir", "slots", "tls", "token_file", "catalog",
                      "proxies", "max_body_bytes", "max_history_bytes", "history_runs_per_job",
                      "stop_grace", "drain_grace"},
               "");
    if (auto name = text(root, "name")) c.name = *name;
    if (auto listen = text(root, "listen")) {
      Status parsed = ParseListen(*listen, c);
      if (!parsed.ok()) problem(root["listen"], "`listen` " + parsed.message());
    }
    if (auto data_dir = text(root, "data_dir")) c.data_dir = Resolve(base, *data_dir);
    // Whole numbers of at least `min`, said so rather than yaml-cpp's "bad conversion".
    auto whole = [&](const char* key, int64_t min) -> std::optional<int64_t> {
      YAML::Node v = root[key];
      int64_t n = 0;
      if (!v) return std::nullopt;
      if (!v.IsScalar() || !YAML::convert<int64_t>::decode(v, n) || n < min) {
        problem(v, fmt::format("`{}` must be a whole number of at least {}, not '{}'", key, min,
                               v.Scalar()));
        return std::nullopt;
      }
      return n;
    };
    if (auto slots = whole("slots", 1)) c.slots = static_cast<int>(std::min<int64_t>(*slots, 100000));
    if (auto tls = mapping(root, "tls", "cert, key and client_ca, each a file")) {
      check_keys(*tls, {"cert", "key", "client_ca"}, "tls.");
      if (auto cert = text(*tls, "cert", "tls.")) c.tls_cert = Resolve(base, *cert);
      if (auto key = text(*tls, "key", "tls.")) c.tls_key = Resolve(base, *key);
      if (auto ca = text(*tls, "client_ca", "tls.")) c.tls_client_ca = Resolve(base, *ca);
    }
    if (auto token_file = text(root, "token_file")) {
      // Read as clients read it, so that both hold the same token.
      c.token_file = Resolve(base, *token_file);
      auto token = client::ReadTokenFile(c.token_file);
      if (!token.ok()) {
        problem(root["token_file"], "token_file: " + token.status().message());
      } else {
        c.token = *token;
      }
    }
    if (auto catalog = text(root, "catalog")) {
      c.catalog = *catalog;
      // A relative SQLite file is the config folder's, as the other paths here.
      if (auto sqlite = CatalogSqlitePath(c.catalog); sqlite.ok() && !sqlite->empty()) {
        c.catalog = "sqlite:" + Resolve(base, *sqlite);
      }
    }
    if (auto bytes = whole("max_body_bytes", 1024)) c.max_body_bytes = static_cast<size_t>(*bytes);
    if (auto bytes = whole("max_history_bytes", 1024)) {
      c.max_history_bytes = static_cast<size_t>(*bytes);
    }
    if (auto runs = whole("history_runs_per_job", 1)) {
      c.history_runs_per_job = static_cast<int>(std::min<int64_t>(*runs, 100000000));
    }
    for (const char* key : {"stop_grace", "drain_grace"}) {
      auto duration = text(root, key);
      if (!duration) continue;
      auto d = ParseDuration(*duration);
      if (!d.ok()) problem(root[key], fmt::format("`{}`: {}", key, d.status().message()));
      else (std::string(key) == "stop_grace" ? c.stop_grace : c.drain_grace) = *d;
    }
    YAML::Node proxies =
        mapping(root, "proxies", "each proxy's name, with its `user` and `subsystems`")
            .value_or(YAML::Node(YAML::NodeType::Map));
    std::set<std::string> proxy_names;  // one written twice is said as a duplicate key
    for (auto it = proxies.begin(); it != proxies.end(); ++it) {
      ProxyConfig p;
      p.name = it->first.Scalar();
      if (!proxy_names.insert(p.name).second) continue;
      if (!IsValidName(p.name)) {
        problem(it->first, fmt::format("proxy name '{}' must match {}", p.name, kNameRule));
      }
      const std::string where = "proxies." + p.name + ".";
      auto proxy = mapping(proxies, p.name, "its `user` and `subsystems`", "proxies.");
      if (!proxy) {
        if (it->second.IsNull()) problem(it->first, "proxy '" + p.name + "' needs `user`");
        continue;
      }
      check_keys(*proxy, {"user", "subsystems"}, where);
      if (auto user = text(*proxy, "user", where)) p.user = *user;
      else if (!(*proxy)["user"]) problem(it->first, "proxy '" + p.name + "' needs `user`");
      if (YAML::Node subs = (*proxy)["subsystems"]) {
        // A misspelt subsystem would only show when a step through the proxy is refused.
        static const std::vector<std::string> kSubsystems = {"package", "process"};
        if (!subs.IsSequence()) {
          problem(at(*proxy, "subsystems"), fmt::format("`{}subsystems` is a list of {}",
                                                        where, fmt::join(kSubsystems, ", ")));
        }
        for (size_t i = 0; subs.IsSequence() && i < subs.size(); ++i) {
          p.subsystems.push_back(subs[i].IsScalar() ? subs[i].Scalar() : "");
          if (std::find(kSubsystems.begin(), kSubsystems.end(), p.subsystems.back()) ==
              kSubsystems.end()) {
            problem(subs[i], fmt::format("unknown subsystem '{}' in {}subsystems; allowed: {}",
                                         p.subsystems.back(), where,
                                         fmt::join(kSubsystems, ", ")));
          }
        }
      }
      c.proxies[p.name] = std::move(p);
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}:{}:{}: {}{}", path, e.mark.line + 1, e.mark.column + 1,
                                       e.msg, YamlTabHint(text, e.mark.line + 1)));
  }
  if (problems.empty()) return c;
  std::sort(problems.begin(), problems.end());
  std::vector<std::string> lines;
  for (const auto& [line, column, message] : problems) {
    lines.push_back(fmt::format("{}:{}:{}: {}", path, line, column, message));
  }
  return InvalidArgument(fmt::format("{}", fmt::join(lines, "\n")));
}

namespace {

// The catalog (defaulting to one in data_dir): a SQLite catalog in a folder that does not exist
// would fail every package step, each with this message; the data_dir itself is made at start.
// An agent that has started here before starts all the same: its folder is away (a disk not
// mounted yet), not mistyped, and the agent has process steps to run and runs to finish
// meanwhile.
Status CheckAgentCatalog(AgentConfig& c, std::vector<std::string>& warnings) {
  if (c.data_dir.empty()) return Status::Ok();  // said already
  if (c.catalog.empty()) {
    c.catalog = "sqlite:" + (std::filesystem::path(c.data_dir) / "catalog.db").string();
  }
  if (Status spec = CheckCatalogSpec(c.catalog); !spec.ok()) return spec.WithContext("catalog");
  auto sqlite = CatalogSqlitePath(c.catalog);
  if (!sqlite.ok() || sqlite->empty()) return Status::Ok();
  std::filesystem::path folder = std::filesystem::path(*sqlite).parent_path();
  std::error_code ec;
  if (std::filesystem::is_directory(*sqlite, ec)) {
    return InvalidArgument(fmt::format(
        "catalog {}: {} is a directory; give a file in it, e.g. sqlite:{}", c.catalog, *sqlite,
        (std::filesystem::path(*sqlite) / "catalog.db").string()));
  }
  if (!folder.empty() && !std::filesystem::is_directory(folder, ec) &&
      std::filesystem::weakly_canonical(folder, ec) !=
          std::filesystem::weakly_canonical(c.data_dir, ec)) {
    std::string missing = fmt::format("catalog {}: its folder {} does not exist", c.catalog,
                                      folder.string());
    if (!std::filesystem::exists(StorePath(c.data_dir), ec)) {
      return InvalidArgument(missing + "; create it, or give another catalog");
    }
    warnings.push_back(missing + " (any more): package steps fail until it is back, and "
                       "executions left running are ended in the catalog once it is");
  }
  return Status::Ok();
}

}  // namespace

Status CheckAgentConfig(AgentConfig& c, std::vector<std::string>& warnings) {
  // Every problem is said at once, as the parser says all of its own.
  std::vector<std::string> problems;
  if (c.name.empty()) c.name = HostName();
  if (!IsValidName(c.name)) {
    problems.push_back(fmt::format("agent name '{}' must match {}", c.name, kNameRule));
  }
  if (c.data_dir.empty()) {
    problems.push_back(
        "`data_dir` is required (in the config file, or --data-dir): where the agent keeps its "
        "jobs, packages and history");
  }
  if (c.slots <= 0) c.slots = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (c.port < 0 || c.port > 65535) {
    problems.push_back(fmt::format("port {} is out of range", c.port));
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    problems.push_back("tls needs both `cert` and `key`");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    problems.push_back("tls.client_ca (mutual TLS) needs tls.cert and tls.key too");
  }
  bool mutual_tls = !c.tls_client_ca.empty();
  if (!IsLoopback(c.host) && c.token.empty() && !mutual_tls) {
    problems.push_back(fmt::format(
        "refusing to listen on {} without credentials: anyone who can reach it could run jobs. "
        "Set token_file, or tls with client_ca (mutual TLS), or listen on 127.0.0.1",
        c.host));
  }
  // ssh refuses a key others may read; a token is as good as a key here, so it is said, and
  // so is the TLS key (QA), with which anyone could pose as this agent.
  auto warn_if_others_read = [&](const std::string& key, const std::string& file,
                                 const char* what) {
    struct stat st {};
    if (file.empty() || stat(file.c_str(), &st) != 0 || (st.st_mode & 044) == 0) return;
    warnings.push_back(fmt::format("{} {} may be read by other users (mode {:04o}), and whoever "
                                   "reads it {}: chmod 600 {}",
                                   key, file, st.st_mode & 07777, what, file));
  };
  warn_if_others_read("token_file", c.token_file, "can run jobs here");
  warn_if_others_read("tls.key", c.tls_key, "can pose as this agent");
  if (Status catalog = CheckAgentCatalog(c, warnings); !catalog.ok()) {
    problems.push_back(catalog.message());
  }
  if (problems.empty()) return Status::Ok();
  return InvalidArgument(fmt::format("{}", fmt::join(problems, "\n")));
}

std::string CatalogSpecSourceOf(const std::string& name) {
  return fmt::format("agent {}'s catalog (`catalog:` in its config, or `fanout agent --catalog`)",
                     name);
}

}  // namespace fanout::agent
