// `fanout report executions` and `fanout report overview ID`: SSIS's All Executions and Overview
// reports over the catalog, as aligned tables, JSON (--json) or one self-contained HTML page
// (--html FILE). The reports themselves live in src/report/.
#include "report/report.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>

#include "cli/cli.h"
#include "common/util.h"
#include "report/render.h"

namespace fanout::cli {
namespace {

namespace fs = std::filesystem;

struct ReportArgs {
  std::string catalog;
  bool json = false;
  std::string html;
  // executions
  std::string since;
  std::string package;
  std::string status;
  int limit = 50;
  bool all = false;
  // overview
  std::string id;
};

int QueryFailed(const char* command, const std::string& spec, const Status& status) {
  std::fprintf(stderr, "fanout %s: reading catalog %s: %s\n", command, spec.c_str(),
               status.message().c_str());
  return kExitFailure;
}

// An --html FILE that holds a SQLite database (the catalog itself, given by mistake) is not
// replaced: the page would destroy the history it shows. Prints why; returns kExitUsage.
std::optional<int> RefuseDatabaseAsPage(const std::string& path, const char* command) {
  // Not opened unless a regular file: a pipe's open waits for a writer (QA: it hung).
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;  // written, or refused, as it is
  std::ifstream in(path, std::ios::binary);
  char header[16] = {};
  if (!in.read(header, sizeof header) || std::string_view(header, 15) != "SQLite format 3") {
    return std::nullopt;
  }
  std::fprintf(stderr,
               "fanout %s: --html %s: that file is a SQLite database (a catalog?), not replaced; "
               "give the page a name of its own, such as report.html\n",
               command, path.c_str());
  return kExitUsage;
}

// Writes a page whole (no reader sees half of it); on failure prints why and returns false.
// A new page is its user's alone, as the catalog and log files are: it shows the tasks' output
// and errors (security QA: it was 0644). A page written again keeps the mode given to it (one
// that a web server serves).
bool WriteFile(const std::string& path, const std::string& content, const char* command) {
  struct stat st {};
  const mode_t mode = stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0600;
  Status written = WriteFileAtomically(path, content, mode);
  if (!written.ok()) std::fprintf(stderr, "fanout %s: %s\n", command, written.message().c_str());
  return written.ok();
}

int Executions(const ReportArgs& args) {
  constexpr const char* kCommand = "report executions";
  if (!args.html.empty()) {
    if (auto rc = RefuseDatabaseAsPage(args.html, kCommand)) return *rc;
  }
  const DateTime now = Now();
  report::ExecutionsQuery query;
  query.package = args.package;
  query.status = args.status;
  // One more tells whether the list was cut.
  query.limit = args.limit < std::numeric_limits<int>::max() ? args.limit + 1 : args.limit;
  query.include_children = args.all;
  std::string filters;
  auto describe = [&](const std::string& text) { filters += (filters.empty() ? "" : ", ") + text; };
  if (!args.since.empty()) {
    if (auto rc = ParseSinceFor(args.since, kCommand, now, query.since)) return *rc;
    describe("since " + report::ShortDateTime(*query.since) + " UTC");
  }
  if (!args.package.empty()) describe("package " + args.package);
  if (!args.status.empty()) describe("status " + args.status);

  std::string spec;
  std::unique_ptr<Catalog> catalog;
  if (auto rc = OpenCatalogFor(args.catalog, kCommand, false, spec, catalog)) return *rc;
  std::vector<report::ExecutionSummary> executions;
  if (catalog != nullptr) {
    auto listed = report::ListExecutions(*catalog, query);
    if (!listed.ok()) return QueryFailed(kCommand, spec, listed.status());
    executions = std::move(*listed);
  }
  const bool cut = static_cast<int>(executions.size()) > args.limit;
  if (cut) executions.pop_back();

  if (!args.html.empty()) {
    std::string page_filters = filters;
    if (!args.all) page_filters += std::string(filters.empty() ? "" : ", ") + "top-level only";
    if (!WriteFile(args.html, report::ExecutionsHtml(executions, page_filters, now), kCommand)) {
      return kExitUsage;
    }
  }
  if (args.json) {
    std::fputs(report::ExecutionsJson(executions, now).c_str(), stdout);
  } else if (!args.html.empty()) {
    fmt::print("Wrote {} ({})\n", args.html, Counted(executions.size(), "execution"));
  } else if (executions.empty()) {
    std::printf("No executions%s in catalog %s%s\n",
                filters.empty() ? "" : (" (" + filters + ")").c_str(), spec.c_str(),
                catalog == nullptr               ? " (it does not exist yet)"
                : args.all || filters.empty() ? ""
                                              : "; child executions are listed with --all");
  } else {
    std::fputs(EscapeControls(report::ExecutionsText(executions, now)).c_str(), stdout);
    if (cut) {
      std::printf("(the newest %d; there are more: --limit N or --since shows others)\n",
                  args.limit);
    }
  }
  return kExitSuccess;
}

int Overview(const ReportArgs& args) {
  constexpr const char* kCommand = "report overview";
  if (!args.html.empty()) {
    if (auto rc = RefuseDatabaseAsPage(args.html, kCommand)) return *rc;
  }
  std::string spec;
  std::unique_ptr<Catalog> catalog;
  if (auto rc = OpenCatalogFor(args.catalog, kCommand, false, spec, catalog)) return *rc;
  if (catalog == nullptr) return CatalogDoesNotExist(kCommand, spec, args.id);
  auto execution = report::FindExecution(*catalog, args.id);
  if (!execution.ok()) {
    const Status& s = execution.status();
    if (s.code() == Code::kNotFound) {
      std::fprintf(stderr, "fanout %s: catalog %s: %s\n", kCommand, spec.c_str(),
                   s.message().c_str());
      return kExitNotFound;
    }
    if (s.code() == Code::kInvalidArgument) {
      std::fprintf(stderr, "fanout %s: %s\n", kCommand, s.message().c_str());
      return kExitUsage;
    }
    return QueryFailed(kCommand, spec, s);
  }
  auto overview = report::BuildOverview(*catalog, std::move(*execution), Now());
  if (!overview.ok()) return QueryFailed(kCommand, spec, overview.status());

  if (!args.html.empty()) {
    if (!WriteFile(args.html, report::OverviewHtml(*overview), kCommand)) return kExitUsage;
  }
  if (args.json) {
    std::fputs(report::OverviewJson(*overview).c_str(), stdout);
  } else if (!args.html.empty()) {
    std::printf("Wrote %s (execution %s, %d child execution%s)\n", args.html.c_str(),
                overview->execution.id.c_str(), report::CountChildren(overview->children),
                report::CountChildren(overview->children) == 1 ? "" : "s");
  } else {
    std::fputs(EscapeControls(report::OverviewText(*overview)).c_str(), stdout);
  }
  return kExitSuccess;
}

void AddCommonOptions(CLI::App* cmd, ReportArgs& args) {
  cmd->add_option("--catalog", args.catalog,
                  "The catalog to read: sqlite:PATH or postgresql://USER@HOST/DB (default sqlite:fanout.db, or "
                  "$FANOUT_CATALOG)");
  cmd->add_flag("--json", args.json, "Print JSON instead of tables");
  cmd->add_option("--html", args.html,
                  "Write the report as one self-contained HTML page to this file, instead of "
                  "the text (with --json: both)");
}

}  // namespace

Command AddReportCommand(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* report = app.add_subcommand("report", "Catalog reports: all executions, overview");
  report->require_subcommand(1);
  const std::string footer =
      "Times are UTC. Exit codes: 0 ok, 1 the catalog could not be read, 4 execution not found\n"
      "or no SQLite catalog there, 6 usage error (bad flags, ambiguous id, an --html file that\n"
      "cannot be written).";
  report->footer(footer);

  CLI::App* executions = report->add_subcommand(
      "executions", "All executions, newest first: id, package, host, agent, status, times");
  executions->footer(footer);
  AddCommonOptions(executions, *args);
  executions->add_option("--since", args->since,
                         "Only executions started since: a duration back from now (24h, 7d) or "
                         "a date (2026-11-26, 2026-11-26T03:00:00Z)");
  executions->add_option("--package", args->package, "Only executions of this package");
  executions->add_option("--status", args->status, "Only executions in this state")
      ->check(CLI::IsMember({"succeeded", "failed", "canceled", "running", "abandoned"}));
  executions->add_option("--limit", args->limit, "At most this many executions")
      ->default_str("50")
      ->check(WholeNumberAtLeastOne());
  executions->add_flag("--all", args->all,
                       "Child executions too (by default only top-level ones are listed)");

  CLI::App* overview = report->add_subcommand(
      "overview", "One execution: parameters, tasks, errors and the tree of child packages");
  overview->footer(footer);
  overview
      ->add_option("id", args->id,
                   "The execution id, or at least its last 8 characters (as `p#1f2e3d4c` shows "
                   "them; its first ones are shared by executions started within a minute)")
      ->required();
  AddCommonOptions(overview, *args);

  return {report, [args, executions, overview] {
            if (executions->parsed()) return Executions(*args);
            if (overview->parsed()) return Overview(*args);
            return static_cast<int>(kExitUsage);
          }};
}

}  // namespace fanout::cli
