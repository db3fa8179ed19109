// `fanout job list|show|create|start|stop|status|wait|history`: drive the jobs and runs of one
// agent over its HTTP API (docs/agent-api.md). Human output is short tables; --json prints the
// agent's JSON for scripts. `start --wait` and `wait` exit like `fanout run`.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "cli/cli.h"
#include "client/agent_client.h"
#include "common/param_json.h"
#include "common/util.h"

namespace fanout::cli {
namespace {

using nlohmann::json;

// Beyond dtexec's codes (cli.h): the agent could not be used (unreachable, 401, 409, other
// errors), and a wait whose --timeout passed while the run goes on.
constexpr int kExitAgentError = 7;
constexpr int kExitWaitTimeout = 2;

constexpr std::chrono::seconds kLongPoll{30};

struct JobArgs {
  // Shared by every subcommand.
  std::string agent;
  std::string token_file;
  std::string ca, cert, key;
  bool json = false;
  // Subcommand arguments.
  std::string job;
  std::string run;
  std::string file;
  std::vector<std::string> params;
  std::vector<std::string> secret_params;  // NAME=FILE
  std::string start_step;
  std::string idempotency_key;
  bool wait = false;
  std::string timeout;
  int limit = 0;
};

// Resolves --agent/$FANOUT_AGENT, the token and TLS files into a client; nullptr after printing
// why, with `exit_code` set: 4 for a token file that does not exist, else 6 (a usage error).
std::unique_ptr<client::AgentClient> Connect(const JobArgs& args, const char* command,
                                             int& exit_code) {
  exit_code = kExitUsage;
  client::AgentEndpoint endpoint;
  endpoint.url = args.agent;
  if (endpoint.url.empty()) {
    if (const char* env = std::getenv("FANOUT_AGENT"); env != nullptr) endpoint.url = env;
  }
  if (endpoint.url.empty()) {
    std::fprintf(stderr,
                 "fanout job %s: no agent given; pass --agent http://HOST:PORT or set "
                 "FANOUT_AGENT\n",
                 command);
    return nullptr;
  }
  auto token = client::ResolveToken(args.token_file);
  if (!token.ok()) {
    std::fprintf(stderr, "fanout job %s: %s%s\n", command,
                 args.token_file.empty() ? "" : "--token-file: ", token.status().message().c_str());
    if (token.status().code() == Code::kNotFound) exit_code = kExitNotFound;
    return nullptr;
  }
  endpoint.token = *token;
  endpoint.token_source = client::TokenSource(args.token_file);
  endpoint.ca_file = args.ca;
  endpoint.cert_file = args.cert;
  endpoint.key_file = args.key;
  auto agent = std::make_unique<client::AgentClient>(std::move(endpoint));
  if (!agent->endpoint_status().ok()) {
    std::fprintf(stderr, "fanout job %s: %s\n", command,
                 agent->endpoint_status().message().c_str());
    return nullptr;
  }
  return agent;
}

// Prints what failed and how to fix it; returns the exit code for the failure.
int Fail(const std::string& what, const Status& status, const std::string& url,
         const std::string& not_found_hint = "") {
  std::fprintf(stderr, "fanout: %s failed: %s\n", what.c_str(), status.message().c_str());
  std::string hint;
  int code = kExitAgentError;
  switch (status.code()) {
    case Code::kNotFound:
      hint = not_found_hint;
      code = kExitNotFound;
      break;
    case Code::kInvalidArgument:
      hint = "correct the input named above and try again";
      code = kExitInvalid;
      break;
    case Code::kUnavailable:
      // The agent answered 503 (it drains, or its data_dir is gone); anything else is no
      // answer at all.
      hint = client::AnsweredUnavailable(status)
                 ? fmt::format("the agent at {} starts no new run now, saying why above: one "
                               "shutting down takes runs once it is back, one whose data_dir "
                               "is gone once restarted; or start it on another agent", url)
                 : fmt::format("check that `fanout agent` runs at {} and that --agent (or "
                               "FANOUT_AGENT) names it; a TLS agent needs https:// and --ca, "
                               "and --cert/--key when it requires client certificates",
                               url);
      break;
    case Code::kPermissionDenied:
      hint = client::ForbiddenHint(url);
      break;
    case Code::kUnauthenticated:
      hint = fmt::format("pass the token of the agent at {} with --token-file FILE or "
                         "FANOUT_TOKEN, and --cert/--key when it requires a client certificate",
                         url);
      break;
    case Code::kFailedPrecondition:
      hint = "the job already has max_concurrent_runs runs queued or running: wait for them "
             "(`fanout job list` shows them), stop one, or raise max_concurrent_runs";
      break;
    case Code::kResourceExhausted:
      hint = "the request is larger than the agent's max_body_bytes: shrink it or raise the "
             "limit in the agent's configuration";
      break;
    default:
      hint = fmt::format("the agent at {} could not do it (its answer above may say why: a "
                         "full disk, say) or answered unexpectedly; see its log, and check that "
                         "it runs the same fanout version ({})",
                         url, FANOUT_VERSION);
      break;
  }
  if (!hint.empty()) std::fprintf(stderr, "fanout: hint: %s\n", hint.c_str());
  return code;
}

void PrintJson(const json& value) { std::printf("%s\n", value.dump(2).c_str()); }

// Prints rows as aligned columns; the first row is the header.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

// A field for a table cell: strings as they are, booleans yes/no, numbers as JSON, absent "-".
std::string Cell(const json& object, const char* key) {
  if (!object.is_object()) return "-";
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  return it->dump();
}

// "2026-11-26T03:04:05.123456Z" -> a time point; nullopt when absent or malformed.
std::optional<std::chrono::system_clock::time_point> ParseTime(const json& object,
                                                               const char* key) {
  std::string text = Cell(object, key);
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  double fraction = 0;
  if (text[consumed] == '.') fraction = std::atof(text.c_str() + consumed);
  auto point = std::chrono::system_clock::from_time_t(timegm(&tm));
  return point + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                     std::chrono::duration<double>(fraction));
}

// "2026-11-26 03:04:05" (UTC) for tables.
std::string ShortTime(const json& object, const char* key) {
  std::string text = Cell(object, key);
  if (text.size() < 19 || text[10] != 'T') return text;
  return text.substr(0, 10) + " " + text.substr(11, 8);
}

// From started_at to ended_at (or to now while running).
std::string Duration(const json& object) {
  auto start = ParseTime(object, "started_at");
  if (!start) return "-";
  auto end = ParseTime(object, "ended_at").value_or(std::chrono::system_clock::now());
  return FormatDuration(std::max(end - *start, std::chrono::system_clock::duration::zero()));
}

// Header and one row per step attempt of a run.
std::vector<std::vector<std::string>> StepRows(const json& run, const std::string& indent) {
  std::vector<std::vector<std::string>> rows;
  if (!run.contains("steps") || !run["steps"].is_array()) return rows;
  for (const json& step : run["steps"]) {
    rows.push_back({indent + Cell(step, "step") + " " + Cell(step, "name") + " #" +
                        Cell(step, "attempt"),
                    Cell(step, "status"), ShortTime(step, "started_at"), Duration(step),
                    Cell(step, "exit_code"), step.value("message", std::string())});
  }
  return rows;
}

// The exit code for a run in a final state, as `fanout run` exits.
int RunExitCode(const std::string& status) {
  if (status == "succeeded") return kExitSuccess;
  if (status == "canceled") return kExitCanceled;
  return kExitFailure;  // failed, abandoned
}

void PrintRun(const json& run) {
  std::string line = fmt::format("Run {}: {} (job {}", Cell(run, "run_id"), Cell(run, "status"),
                                 Cell(run, "job"));
  if (ParseTime(run, "started_at")) line += ", " + Duration(run);
  line += ")";
  std::printf("%s\n", line.c_str());
  std::string message = run.is_object() ? run.value("message", std::string()) : "";
  if (!message.empty()) std::printf("  %s\n", message.c_str());
  auto steps = StepRows(run, "");
  if (steps.empty()) return;
  steps.insert(steps.begin(), {"STEP", "STATUS", "STARTED", "DURATION", "EXIT", "MESSAGE"});
  PrintTable(steps);
}

// What a Ctrl-C (or SIGTERM) during a start or a wait says before the process dies of the
// signal: set with the signals blocked, so that the handler needs only async-signal-safe calls
// and never reads it half written.
char g_interrupt_message[512];
size_t g_interrupt_message_size = 0;
// With --json: what stdout gets then, the run as last known (a script reading it learns the
// run's id); a run too long for it goes as its id and status alone.
char g_interrupt_json[65536];
size_t g_interrupt_json_size = 0;
// The dispositions replaced, put back when the start or wait is over.
struct sigaction g_before_interruptible[2];
bool g_interruptible = false;
constexpr int kInterruptSignals[2] = {SIGINT, SIGTERM};

// Async-signal-safe; gives up on an error (the reader gone: SIGPIPE is blocked in the handler).
void WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void OnInterrupt(int signal) {
  WriteAll(STDOUT_FILENO, g_interrupt_json, g_interrupt_json_size);
  WriteAll(STDERR_FILENO, g_interrupt_message, g_interrupt_message_size);
  // Dies of the signal rather than exiting 128 + it: a shell running a script then stops the
  // script too.
  ::signal(signal, SIG_DFL);
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, signal);
  sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
  raise(signal);
  _exit(128 + signal);
}

// Until StopSayingOnInterrupt, SIGINT and SIGTERM print `message` (a line) and end the process:
// what they interrupt goes on at the agent, and the user is told so (it died without a word). A
// signal the caller ignores (`nohup`, `trap '' INT`) stays ignored. `run`, when not null, is
// printed on stdout first, as --json prints a run.
void SayOnInterrupt(const std::string& message, const json& run = nullptr) {
  sigset_t signals, before;
  sigemptyset(&signals);
  for (int sig : kInterruptSignals) sigaddset(&signals, sig);
  sigprocmask(SIG_BLOCK, &signals, &before);
  // On a terminal the ^C echo has left the cursor mid-line.
  std::string text = (isatty(STDERR_FILENO) ? "\nfanout: " : "fanout: ") + message + "\n";
  g_interrupt_message_size = std::min(text.size(), sizeof g_interrupt_message);
  std::memcpy(g_interrupt_message, text.data(), g_interrupt_message_size);
  std::string printed = run.is_null() ? "" : run.dump(2) + "\n";
  if (printed.size() > sizeof g_interrupt_json) {
    printed = json{{"run_id", run.value("run_id", "")}, {"status", run.value("status", "")}}
                  .dump(2) + "\n";
  }
  g_interrupt_json_size = printed.size();
  std::memcpy(g_interrupt_json, printed.data(), printed.size());
  if (!g_interruptible) {
    g_interruptible = true;
    struct sigaction action {};
    action.sa_handler = OnInterrupt;
    // A second signal waits: the handler's output is written once. A reader gone from stdout
    // (`| jq`, which the Ctrl-C ended too) makes the write fail, not the process die of
    // SIGPIPE before its line on stderr.
    sigemptyset(&action.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE}) sigaddset(&action.sa_mask, sig);
    for (int i = 0; i < 2; ++i) {
      sigaction(kInterruptSignals[i], nullptr, &g_before_interruptible[i]);
      if (g_before_interruptible[i].sa_handler != SIG_IGN) {
        sigaction(kInterruptSignals[i], &action, nullptr);
      }
    }
  }
  sigprocmask(SIG_SETMASK, &before, nullptr);
}

void StopSayingOnInterrupt() {
  if (!g_interruptible) return;
  g_interruptible = false;
  for (int i = 0; i < 2; ++i) sigaction(kInterruptSignals[i], &g_before_interruptible[i], nullptr);
}

std::string WaitInterrupted(const std::string& run_id) {
  return fmt::format("stopped waiting; run {0} goes on. `fanout job wait {0}` waits again, "
                     "`fanout job stop {0}` stops it",
                     run_id);
}

// Long-polls the run until it ends (or --timeout passes) and exits like `fanout run`. `known`:
// the run as known before (its start's answer), what --json prints if interrupted before the
// agent answers. `token_file`: where the token came from, read again when it is refused.
int WaitForRun(client::AgentClient& agent, const std::string& token_file,
               const std::string& run_id, std::optional<std::chrono::milliseconds> timeout,
               bool as_json, const json& known) {
  SayOnInterrupt(WaitInterrupted(run_id), as_json ? known : json());
  using Clock = std::chrono::steady_clock;
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  json run;
  // An agent that answered, then went away (QA: restarted for an upgrade), re-attaches its
  // runs when it is back: the wait goes on if it answers again within kAgentComeBackWait, as a
  // parent's does. The first poll, and those while it is gone, are answered at once, so that
  // the agent is known to be there.
  bool first = true;
  std::optional<Clock::time_point> gone_since;
  while (true) {
    std::chrono::seconds wait = first || gone_since ? std::chrono::seconds(0) : kLongPoll;
    first = false;
    if (timeout) {
      auto left = std::chrono::ceil<std::chrono::seconds>(deadline - Clock::now());
      wait = std::clamp(left, std::chrono::seconds(0), wait);
    }
    const auto asked = Clock::now();
    auto polled = agent.GetRun(run_id, wait);
    const auto now = Clock::now();
    // Refused, or broken before the poll's time was up: its process went away. An agent that
    // let the poll run out without a word (frozen, a cut network) is not waited for again.
    const bool went_away = now - asked < wait + std::chrono::seconds(1);
    const auto come_back_by = std::min(gone_since.value_or(now) + client::kAgentComeBackWait,
                                       deadline);
    if (!polled.ok() && polled.status().code() == Code::kUnavailable && agent.Answered() &&
        went_away && now < come_back_by) {
      if (!gone_since) {
        gone_since = now;
        std::fprintf(stderr, "fanout: %s; waiting up to %lld s for it to come back\n",
                     polled.status().message().c_str(),
                     static_cast<long long>(
                         std::chrono::ceil<std::chrono::seconds>(come_back_by - now).count()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      continue;
    } else if (!polled.ok() && polled.status().code() == Code::kUnauthenticated) {
      // Back with a new token (an agent --dev makes one at each start), or the token rotated:
      // the token file is read again, and the wait goes on with what it holds now.
      auto token = client::ResolveToken(token_file);
      if (token.ok() && *token != agent.endpoint().token) {
        agent.SetToken(*token);
        continue;
      }
    } else if (polled.ok() && gone_since) {
      gone_since.reset();
      std::fprintf(stderr, "fanout: agent %s answers again\n", agent.url().c_str());
    }
    const bool over = !polled.ok() || client::IsFinalRunStatus(Cell(*polled, "status")) ||
                      (timeout && Clock::now() >= deadline);
    if (over) StopSayingOnInterrupt();
    if (!polled.ok()) {
      int code = Fail(fmt::format("waiting for run {}", run_id), polled.status(), agent.url(),
                      "run ids come from `fanout job start` or `fanout job history JOB`");
      if (polled.status().code() == Code::kUnavailable) {
        std::fprintf(stderr,
                     "fanout: the run may still be going on; `fanout job wait %s` resumes "
                     "waiting once the agent answers\n",
                     run_id.c_str());
      }
      return code;
    }
    run = std::move(*polled);
    const std::string status = Cell(run, "status");
    if (as_json && !over) SayOnInterrupt(WaitInterrupted(run_id), run);
    if (client::IsFinalRunStatus(status)) {
      if (as_json) {
        PrintJson(run);
      } else {
        PrintRun(run);
      }
      if (status != "succeeded") {
        std::string message = run.value("message", std::string());
        const std::string outcome = status == "canceled" ? "was canceled" : status;
        std::fprintf(stderr, "fanout: run %s of job %s %s%s%s\n", run_id.c_str(),
                     Cell(run, "job").c_str(), outcome.c_str(), message.empty() ? "" : ": ",
                     message.c_str());
      }
      return RunExitCode(status);
    }
    if (over) break;  // --timeout passed
  }
  if (as_json) PrintJson(run);
  std::fprintf(stderr,
               "fanout: run %s is still %s after --timeout %s; it goes on. `fanout job wait %s` "
               "waits again, `fanout job stop %s` stops it\n",
               run_id.c_str(), Cell(run, "status").c_str(),
               FormatDuration(*timeout).c_str(), run_id.c_str(), run_id.c_str());
  return kExitWaitTimeout;
}

// --timeout DURATION, when given; false after printing why it is malformed.
bool ParseTimeout(const std::string& text, std::optional<std::chrono::milliseconds>& out) {
  if (text.empty()) return true;
  auto parsed = ParseDuration(text);
  if (!parsed.ok() || parsed->count() <= 0) {
    std::fprintf(stderr, "fanout: --timeout: %s\n",
                 parsed.ok() ? "must be more than 0" : parsed.status().message().c_str());
    return false;
  }
  // The agent's long-poll counts whole seconds: a fraction is rounded up, and the message at
  // the timeout says what was waited (it said "100.0 ms" after a second, QA).
  out = std::chrono::ceil<std::chrono::seconds>(*parsed);
  return true;
}

// --param NAME=VALUE: VALUE is a string, or a JSON array of strings when it starts with '['.
bool ParseParams(const std::vector<std::string>& pairs, std::map<std::string, json>& out) {
  for (const std::string& pair : pairs) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "fanout: --param needs NAME=VALUE, got '%s'\n", pair.c_str());
      return false;
    }
    std::string value = pair.substr(eq + 1);
    json parsed = value;
    if (value.starts_with('[')) {
      parsed = json::parse(value, nullptr, /*allow_exceptions=*/false);
      bool strings = parsed.is_array() && std::all_of(parsed.begin(), parsed.end(),
                                                      [](const json& v) { return v.is_string(); });
      if (!strings) {
        std::fprintf(stderr,
                     "fanout: --param %s: a value starting with '[' must be a JSON array of "
                     "strings, like [\"eu\",\"us\"]\n",
                     pair.substr(0, eq).c_str());
        return false;
      }
    }
    out[pair.substr(0, eq)] = std::move(parsed);
  }
  return true;
}

const char* kJobNotFound = "`fanout job list --agent URL` lists the agent's jobs; `fanout job "
                           "create FILE` or `fanout deploy` adds one";
const char* kRunNotFound = "run ids come from `fanout job start` or `fanout job history JOB`";

int List(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "list", connect_exit);
  if (!agent) return connect_exit;
  auto jobs = agent->ListJobs();
  if (!jobs.ok()) return Fail("listing jobs", jobs.status(), agent->url());
  if (args.json) {
    PrintJson(*jobs);
    return kExitSuccess;
  }
  const json list = jobs->value("jobs", json::array());
  if (list.empty()) {
    std::printf("No jobs on %s; `fanout job create FILE` adds one.\n", agent->url().c_str());
    return kExitSuccess;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ENABLED", "STEPS", "RUNNING", "LAST STATUS", "LAST ENDED"}};
  for (const json& job : list) {
    std::string steps = job.contains("steps") && job["steps"].is_array()
                            ? std::to_string(job["steps"].size())
                            : Cell(job, "steps");
    const json last = job.value("last_run", json());
    std::string last_status = last.is_object() ? Cell(last, "status")
                              : last.is_string() ? last.get<std::string>()
                                                 : "never run";
    std::string last_ended = last.is_object() ? ShortTime(last, "ended_at") : "-";
    rows.push_back({Cell(job, "name"), Cell(job, "enabled"), steps, Cell(job, "running"),
                    last_status, last_ended});
  }
  PrintTable(rows);
  return kExitSuccess;
}

// "next" etc., with the API's defaults for absent values.
std::string StepAction(const json& step, const char* key, bool last) {
  std::string value = Cell(step, key);
  if (value != "-") return value;
  if (std::string_view(key) == "on_failure") return "quit-failure";
  return last ? "quit-success" : "next";
}

int Show(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "show", connect_exit);
  if (!agent) return connect_exit;
  auto job = agent->GetJob(args.job);
  if (!job.ok()) return Fail("showing job " + args.job, job.status(), agent->url(), kJobNotFound);
  if (args.json) {
    PrintJson(*job);
    return kExitSuccess;
  }
  const json& j = *job;
  std::printf("Job %s on %s: %s, at most %s concurrent run(s), %s running\n",
              args.job.c_str(), agent->url().c_str(),
              j.value("enabled", true) ? "enabled" : "disabled",
              Cell(j, "max_concurrent_runs").c_str(), Cell(j, "running").c_str());
  std::string description = j.value("description", std::string());
  if (!description.empty()) std::printf("  %s\n", description.c_str());
  const json steps = j.value("steps", json::array());
  std::vector<std::vector<std::string>> rows = {
      {"#", "STEP", "SUBSYSTEM", "RUNS", "ON SUCCESS", "ON FAILURE", "RETRIES", "TIMEOUT"}};
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& step = steps[i];
    std::string what;
    if (step.contains("run") && step["run"].is_array()) {
      for (const json& arg : step["run"]) {
        what += (what.empty() ? "" : " ") + (arg.is_string() ? arg.get<std::string>() : arg.dump());
      }
    } else {
      what = Cell(step, "package");
      if (step.contains("params") && step["params"].is_object()) {
        for (const auto& [name, value] : step["params"].items()) {
          what += " " + name + "=" + (value.is_string() ? value.get<std::string>() : value.dump());
        }
      }
    }
    // Exit codes other than 0 that count as success (QA: show left them out).
    if (const json codes = step.value("success_codes", json::array({0}));
        codes != json::array({0})) {
      std::vector<std::string> listed;
      for (const json& code : codes) listed.push_back(code.dump());
      what += fmt::format(" (exit {} succeed{})", fmt::join(listed, ", "),
                          listed.size() == 1 ? "s" : "");
    }
    if (step.contains("proxy") && !Cell(step, "proxy").empty() && Cell(step, "proxy") != "-") {
      what += " (as " + Cell(step, "proxy") + ")";
    }
    std::string retries = Cell(step, "retries");
    if (retries == "-") retries = "0";
    auto interval = ParseDuration(Cell(step, "retry_interval"));
    if (retries != "0" && interval.ok()) retries += " every " + FormatDuration(*interval);
    std::string timeout = "-";
    if (auto limit = ParseDuration(Cell(step, "timeout")); limit.ok()) {
      timeout = FormatDuration(*limit);
    }
    const bool last = i + 1 == steps.size();
    rows.push_back({std::to_string(i + 1), Cell(step, "name"), Cell(step, "subsystem"), what,
                    StepAction(step, "on_success", last), StepAction(step, "on_failure", last),
                    retries, timeout});
  }
  PrintTable(rows);
  return kExitSuccess;
}

int Create(const JobArgs& args) {
  // As `fanout run` says of its file: missing, a directory or unreadable (exit 4).
  auto text = ReadFile(args.file);
  if (!text.ok()) {
    std::fprintf(stderr, "fanout: %s\n", text.status().message().c_str());
    return kExitNotFound;
  }
  if (auto other = OtherKindOfFile(*text, args.file, /*want_job=*/true)) {
    std::fprintf(stderr, "fanout: %s\n", other->c_str());
    return kExitInvalid;
  }
  Diagnostics diagnostics;
  auto file = CheckJobFile(*text, args.file, diagnostics);
  if (!file) {
    std::fputs(diagnostics.ToString().c_str(), stderr);
    return kExitInvalid;
  }
  const std::string& name = file->job.name;
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "create", connect_exit);
  if (!agent) return connect_exit;
  auto put = agent->PutJob(name, *text, file->content_type);
  if (!put.ok()) {
    return Fail(fmt::format("creating job {} from {}", name, args.file), put.status(),
                agent->url());
  }
  for (const std::string& warning : put->warnings) {
    std::fprintf(stderr, "fanout job create: warning: %s\n", warning.c_str());
  }
  if (args.json) {
    PrintJson({{"name", name}, {"changed", put->changed}, {"created", put->created},
               {"warnings", put->warnings}});
  } else {
    std::printf("Job %s %s on %s\n", name.c_str(),
                put->created ? "created" : put->changed ? "updated" : "unchanged",
                agent->url().c_str());
  }
  return kExitSuccess;
}

// Runs under way go on with the definition they started with (the agent keeps it with each
// run), and the job's history stays, as the API's DELETE does.
int Delete(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "delete", connect_exit);
  if (!agent) return connect_exit;
  Status deleted = agent->DeleteJob(args.job);
  if (!deleted.ok()) {
    return Fail("deleting job " + args.job, deleted, agent->url(), kJobNotFound);
  }
  if (args.json) {
    PrintJson({{"name", args.job}, {"deleted", true}});
  } else {
    std::printf("Job %s deleted from %s (its run history stays; runs under way go on)\n",
                args.job.c_str(), agent->url().c_str());
  }
  return kExitSuccess;
}

// --secret-param NAME=FILE: sent as a param and as a secret.
int ReadSecretParams(const std::vector<std::string>& pairs, client::StartRequest& request) {
  std::map<std::string, std::string> secrets;
  if (int code = ReadValueFiles("--secret-param", pairs, secrets); code != kExitSuccess) return code;
  for (auto& [name, secret] : secrets) {
    if (request.params.contains(name)) {
      fmt::print(stderr, "fanout: {} is given by both --param and --secret-param; give it once\n",
                 name);
      return kExitUsage;
    }
    request.params[name] = secret;
    request.secrets.push_back(std::move(secret));
  }
  return kExitSuccess;
}

int Start(const JobArgs& args) {
  client::StartRequest request;
  if (!ParseParams(args.params, request.params)) return kExitUsage;
  if (int code = ReadSecretParams(args.secret_params, request); code != kExitSuccess) return code;
  // JSON holds only UTF-8 (QA: a Latin-1 value aborted the command).
  for (const auto& [name, value] : request.params) {
    if (Status bad = CheckParamUtf8(value); !bad.ok()) {
      std::fprintf(stderr, "fanout: param %s: %s\n", name.c_str(), bad.message().c_str());
      return kExitUsage;
    }
  }
  std::optional<std::chrono::milliseconds> timeout;
  if (!ParseTimeout(args.timeout, timeout)) return kExitUsage;
  if (timeout && !args.wait) {
    std::fprintf(stderr, "fanout: --timeout only applies with --wait\n");
    return kExitUsage;
  }
  request.start_step = args.start_step;
  request.idempotency_key = args.idempotency_key;
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "start", connect_exit);
  if (!agent) return connect_exit;
  SayOnInterrupt(fmt::format("interrupted while starting job {0}: a run may have started; "
                             "`fanout job history {0}` shows it",
                             args.job));
  auto started = agent->StartJob(args.job, request);
  json accepted;
  if (started.ok()) {
    accepted = {{"run_id", started->run_id},
                {"status", started->status},
                {"existing", started->existing}};
  }
  if (args.wait && started.ok()) {
    // Before the id is printed: a Ctrl-C between them still says which run goes on.
    SayOnInterrupt(WaitInterrupted(started->run_id), args.json ? accepted : json());
  } else {
    StopSayingOnInterrupt();
  }
  if (!started.ok()) {
    return Fail("starting job " + args.job, started.status(), agent->url(),
                "`fanout job list --agent URL` lists the jobs, `fanout job show JOB` its steps");
  }
  if (started->existing) {
    std::fprintf(stderr,
                 "fanout: idempotency key %s matched run %s started before; nothing new was "
                 "started\n",
                 args.idempotency_key.c_str(), started->run_id.c_str());
  }
  if (args.json && !args.wait) {
    PrintJson(accepted);
    return kExitSuccess;
  }
  if (!args.json) {
    // The id alone on stdout, so that RUN=$(fanout job start ...) works.
    std::printf("%s\n", started->run_id.c_str());
    std::fflush(stdout);
  }
  if (!args.wait) return kExitSuccess;
  return WaitForRun(*agent, args.token_file, started->run_id, timeout, args.json, accepted);
}

int Wait(const JobArgs& args) {
  std::optional<std::chrono::milliseconds> timeout;
  if (!ParseTimeout(args.timeout, timeout)) return kExitUsage;
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "wait", connect_exit);
  if (!agent) return connect_exit;
  return WaitForRun(*agent, args.token_file, args.run, timeout, args.json,
                    json{{"run_id", args.run}});
}

int RunStatus(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "status", connect_exit);
  if (!agent) return connect_exit;
  auto run = agent->GetRun(args.run);
  if (!run.ok()) {
    return Fail("reading run " + args.run, run.status(), agent->url(), kRunNotFound);
  }
  if (args.json) {
    PrintJson(*run);
  } else {
    PrintRun(*run);
  }
  return kExitSuccess;
}

int Stop(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "stop", connect_exit);
  if (!agent) return connect_exit;
  auto stopped = agent->StopRun(args.run);
  if (!stopped.ok()) {
    return Fail("stopping run " + args.run, stopped.status(), agent->url(), kRunNotFound);
  }
  if (args.json) {
    PrintJson(*stopped);
    return kExitSuccess;
  }
  const std::string status = Cell(*stopped, "status");
  if (client::IsFinalRunStatus(status) && status != "canceled") {
    std::printf("Run %s had already ended: %s\n", args.run.c_str(), status.c_str());
  } else if (status == "canceled") {
    std::printf("Run %s is canceled\n", args.run.c_str());
  } else {
    std::printf("Run %s: stop requested (now %s); its step's processes get SIGTERM, then "
                "SIGKILL, and it ends canceled\n",
                args.run.c_str(), status.c_str());
  }
  return kExitSuccess;
}

int History(const JobArgs& args) {
  int connect_exit = kExitSuccess;
  auto agent = Connect(args, "history", connect_exit);
  if (!agent) return connect_exit;
  auto history = agent->JobHistory(args.job, args.limit);
  if (!history.ok()) {
    return Fail("reading the history of job " + args.job, history.status(), agent->url(),
                kJobNotFound);
  }
  if (args.json) {
    PrintJson(*history);
    return kExitSuccess;
  }
  const json runs = history->value("runs", json::array());
  if (history->value("truncated", false)) {
    std::fprintf(stderr, "fanout job history: the agent sent the newest %zu runs only (its answer "
                 "stops at its max_history_bytes); ask for fewer with --limit\n", runs.size());
  }
  if (runs.empty()) {
    std::printf("Job %s has no runs on %s\n", args.job.c_str(), agent->url().c_str());
    return kExitSuccess;
  }
  std::vector<std::vector<std::string>> rows = {
      {"RUN / STEP", "STATUS", "STARTED", "DURATION", "EXIT", "MESSAGE"}};
  for (const json& run : runs) {
    rows.push_back({Cell(run, "run_id"), Cell(run, "status"), ShortTime(run, "started_at"),
                    Duration(run), "", run.value("message", std::string())});
    for (auto& step : StepRows(run, "  ")) rows.push_back(std::move(step));
  }
  PrintTable(rows);
  return kExitSuccess;
}

}  // namespace

Command AddJobCommand(CLI::App& app) {
  auto args = std::make_shared<JobArgs>();
  CLI::App* job = app.add_subcommand("job", "Drive the jobs and runs of one agent");
  job->require_subcommand(1);
  job->fallthrough();  // the options below may follow the subcommand
  job->add_option("--agent", args->agent,
                  "The agent: http://HOST:PORT or https://HOST:PORT (default: $FANOUT_AGENT)");
  job->add_option("--token-file", args->token_file,
                  "File holding the agent's bearer token (without it: the token itself from $FANOUT_TOKEN)");
  job->add_option("--ca", args->ca, "https: CA certificate to trust for the agent");
  job->add_option("--cert", args->cert, "https: client certificate, for mutual TLS");
  job->add_option("--key", args->key, "https: the client certificate's key");
  job->add_flag("--json", args->json, "Print the agent's JSON instead of tables");
  const std::string exit_codes =
      "Exit codes: 0 ok, 4 job/run/file not found, 5 invalid input (agent answered 400),\n"
      "6 usage error (bad flags, no --agent), 7 agent unreachable, 401, 409 or another agent "
      "error.";
  const std::string run_exit_codes =
      "Exit codes: 0 run succeeded, 1 run failed or abandoned, 2 --timeout passed (the run goes\n"
      "on), 3 run canceled, 4 job/run not found, 5 invalid input, 6 usage error, 7 agent\n"
      "unreachable, 401, 409 or another agent error, 130 Ctrl-C (143 SIGTERM) ended the wait\n"
      "(the run goes on).";
  job->footer(exit_codes);

  std::vector<std::pair<CLI::App*, std::function<int()>>> subcommands;
  auto add = [&](const char* name, const char* description, const std::string& footer,
                 std::function<int(const JobArgs&)> run) {
    CLI::App* cmd = job->add_subcommand(name, description);
    // The agent options belong to `fanout job`, so CLI11 lists them only there.
    cmd->footer("Also --agent URL, --token-file FILE, --ca, --cert, --key and --json, before or\n"
                "after the subcommand (see fanout job --help).\n" +
                footer);
    subcommands.emplace_back(cmd, [args, run] { return run(*args); });
    return cmd;
  };

  add("list", "List the agent's jobs: enabled, steps, running runs, last result", exit_codes,
      List);
  add("show", "Show a job's definition and steps", exit_codes, Show)
      ->add_option("job", args->job, "The job name")
      ->required();
  add("create", "Create or replace a job from a YAML or JSON job file (its `job:` names it)",
      exit_codes, Create)
      ->add_option("file", args->file, "The job file")
      ->required();
  add("delete", "Delete a job (its run history stays; runs under way go on)", exit_codes, Delete)
      ->add_option("job", args->job, "The job name")
      ->required();

  CLI::App* start = add("start", "Start a job; prints the run id", run_exit_codes, Start);
  start->add_option("job", args->job, "The job name")->required();
  start->add_option("--param", args->params,
                    "NAME=VALUE: a parameter for the job's package steps (repeatable); a value "
                    "like [\"a\",\"b\"] is a list");
  start->add_option("--secret-param", args->secret_params,
                    "NAME=FILE: a parameter whose value is read from FILE (- for standard input), "
                    "so that `ps` does not show it; sent as a secret, which the agent keeps in "
                    "memory only and shows as *** (repeatable)");
  start->add_option("--start-step", args->start_step, "Start at this step instead of the first");
  start->add_option("--idempotency-key", args->idempotency_key,
                    "Repeating a key returns the run it started and starts nothing");
  start->add_flag("--wait", args->wait,
                  "Wait for the run to end and exit like `fanout run` (Ctrl-C stops waiting, "
                  "not the run)");
  start->add_option("--timeout", args->timeout, "With --wait: stop waiting after this long (30s, "
                                                "10m, 2h; whole seconds, rounded up)");

  add("status", "Show a run's state and steps", exit_codes, RunStatus)
      ->add_option("run", args->run, "The run id")
      ->required();
  CLI::App* wait = add("wait", "Wait for a run to end; exits like `fanout run`", run_exit_codes,
                       Wait);
  wait->add_option("run", args->run, "The run id")->required();
  wait->add_option("--timeout", args->timeout,
                   "Stop waiting after this long (30s, 10m, 2h; whole seconds, rounded up)");
  add("stop", "Stop a run: SIGTERM, then SIGKILL, to its step's processes; it ends canceled",
      exit_codes, Stop)
      ->add_option("run", args->run, "The run id")
      ->required();
  CLI::App* history = add("history", "A job's runs, newest first, with their steps", exit_codes,
                          History);
  history->add_option("job", args->job, "The job name")->required();
  history->add_option("--limit", args->limit, "At most this many runs (agent default 50)")
      ->check(WholeNumberAtLeastOne());

  return {job, [subcommands] {
            for (const auto& [cmd, run] : subcommands) {
              if (cmd->parsed()) return run();
            }
            return static_cast<int>(kExitUsage);
          }};
}

}  // namespace fanout::cli
