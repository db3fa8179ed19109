// `fanout catalog prune --older-than 30d`: retention. Removes old executions with their
// parameters, task runs and events in one transaction.
#include <cctype>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "cli/cli.h"
#include "common/util.h"
#include "fanout/catalog.h"
#include "report/report.h"

namespace fanout::cli {

Command AddCatalogCommand(CLI::App& app) {
  struct Args {
    std::string older_than;
    std::string catalog;
    bool dry_run = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("catalog", "Maintain the catalog");
  cmd->require_subcommand(1);
  CLI::App* prune = cmd->add_subcommand(
      "prune",
      "Delete executions started before a cut-off, whole trees at a time (a parent with its "
      "children), with their task runs and events; a tree still running is kept");
  prune->add_option("--older-than", args->older_than, "Age to keep, e.g. 30d, 12h")->required();
  prune->add_option("--catalog", args->catalog,
                    "sqlite:PATH or postgresql://... (default sqlite:fanout.db, or $FANOUT_CATALOG)");
  prune->add_flag("--dry-run", args->dry_run, "Count what would be deleted; delete nothing");
  prune->footer(
      "Exit codes: 0 pruned (possibly nothing), 1 the catalog failed, 4 the SQLite catalog does\n"
      "not exist, 6 usage error (also a bad --catalog spec).");
  return {cmd, [args]() -> int {
            auto age = report::ParseAge(args->older_than);
            if (!age.ok()) {
              std::fprintf(stderr, "fanout catalog prune: --older-than: %s\n",
                           age.status().message().c_str());
              return kExitUsage;
            }
            constexpr const char* kCommand = "catalog prune";
            std::string spec;
            std::unique_ptr<Catalog> catalog;
            if (auto rc = OpenCatalogToWrite(args->catalog, kCommand, spec, catalog)) return *rc;
            // Pruning a catalog that does not exist would create an empty one there.
            if (catalog == nullptr) return CatalogDoesNotExist(kCommand, spec);
            auto cutoff = std::chrono::time_point_cast<std::chrono::microseconds>(
                std::chrono::system_clock::now() - *age);
            // A run killed without a trace stays "running" in the catalog: its tree may go.
            auto is_live = [](const ExecutionRow& row) {
              if (row.status != "running" || row.ended_at) return false;
              ExecutionRow judged = row;
              return !report::MarkIfProcessGone(judged);
            };
            auto counts = catalog->Prune(cutoff, is_live, args->dry_run);
            if (!counts.ok()) {
              std::fprintf(stderr, "fanout catalog prune: %s\n", counts.status().message().c_str());
              return kExitFailure;
            }
            fmt::print("{} {}, {} and {} started before {} from {}{}\n",
                       args->dry_run ? "would prune" : "pruned",
                       Counted(counts->executions, "execution"),
                       Counted(counts->task_runs, "task run"), Counted(counts->events, "event"),
                       FormatDateTime(cutoff), spec,
                       args->dry_run ? " (--dry-run: nothing was deleted)" : "");
            if (counts->kept_live > 0) {
              std::printf("%s %lld older tree%s of executions that %s still running\n",
                          args->dry_run ? "would keep" : "kept",
                          static_cast<long long>(counts->kept_live),
                          counts->kept_live == 1 ? "" : "s", counts->kept_live == 1 ? "is" : "are");
            }
            return kExitSuccess;
          }};
}

}  // namespace fanout::cli
