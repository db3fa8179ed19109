// OpenCatalog: turns a --catalog / FANOUT_CATALOG spec into an opened Catalog backend.
#include <chrono>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "catalog/postgres_catalog.h"
#include "catalog/sqlite_catalog.h"
#include "common/util.h"
#include "fanout/catalog.h"

namespace fanout {

namespace {

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// How long a run's write to a SQLite catalog waits for another process's transaction
// (OpenCatalogForRun); far above the milliseconds a batch of other runs takes.
constexpr int kRunBusyTimeoutMs = 500;
// How long a run's write to a PostgreSQL catalog may take before the connection is dropped and
// the rows spooled: a transaction of 10,000 rows takes well under a second on a LAN.
constexpr std::chrono::milliseconds kRunPostgresWriteTimeout{5000};

constexpr const char* kSupportedForms =
    "use sqlite:PATH, a path ending in .db, or a postgresql:// (or postgres://) URI";

// A spec's SQLite file, or "" for a PostgreSQL URI; InvalidArgument for anything else.
Result<std::string> SqlitePathOf(const std::string& spec) {
  // A scheme in other case is refused rather than read as a file's name (QA: `SQLITE:z.db`
  // made a file named so, a `.db` path being taken as it is).
  const std::string lower = AsciiLower(spec.substr(0, spec.find(':') + 1));
  if ((lower == "sqlite:" || lower == "postgresql:" || lower == "postgres:") &&
      !StartsWith(spec, lower)) {
    return InvalidArgument(fmt::format("catalog spec '{}...': write its scheme in lower case, "
                                       "{}", spec.substr(0, lower.size()), lower));
  }
  if (StartsWith(spec, "sqlite:")) {
    if (spec.size() == 7) {
      return InvalidArgument(std::string("catalog spec 'sqlite:' names no file; ") +
                             kSupportedForms);
    }
    return spec.substr(7);
  }
  if (StartsWith(spec, "postgresql://") || StartsWith(spec, "postgres://")) {
    RETURN_IF_ERROR(catalog::CheckConnectionString(spec));
    return std::string();
  }
  if (EndsWith(spec, ".db") && spec.find("://") == std::string::npos) return spec;
  // Not echoed verbatim: a mistyped URI may still hold a password.
  return InvalidArgument("unsupported catalog '" + catalog::RedactConnectionString(spec) + "'; " +
                         kSupportedForms);
}

Result<std::unique_ptr<Catalog>> OpenSqlite(const std::string& path,
                                            catalog::SqliteCatalogOptions options = {}) {
  auto catalog = std::make_unique<catalog::SqliteCatalog>(path, options);
  RETURN_IF_ERROR(catalog->Open());
  return std::unique_ptr<Catalog>(std::move(catalog));
}

// PreopenCatalogForRun's catalog, until OpenCatalogForRun takes it.
struct Preopened {
  std::string spec;
  std::unique_ptr<catalog::SqliteCatalog> catalog;
};
Preopened& PreopenedCatalog() {
  static Preopened preopened;
  return preopened;
}

std::string& SpecSource() {
  static std::string source = "--catalog or $FANOUT_CATALOG";
  return source;
}

}  // namespace

void SetCatalogSpecSource(std::string source) { SpecSource() = std::move(source); }

const std::string& CatalogSpecSource() { return SpecSource(); }

Status CheckCatalogSpec(const std::string& spec) { return SqlitePathOf(spec).status(); }

Result<std::string> CatalogSqlitePath(const std::string& spec) { return SqlitePathOf(spec); }

Result<std::unique_ptr<Catalog>> OpenCatalog(const std::string& spec) {
  ASSIGN_OR_RETURN(std::string path, SqlitePathOf(spec));
  if (path.empty()) {
    // A libpq connection URI; a password is better kept in ~/.pgpass or PGPASSWORD than here,
    // where it shows in process lists. Messages show the URI with the password redacted.
    auto catalog = std::make_unique<catalog::PostgresCatalog>(spec);
    RETURN_IF_ERROR(catalog->Open());
    return std::unique_ptr<Catalog>(std::move(catalog));
  }
  return OpenSqlite(path);
}

Result<std::unique_ptr<Catalog>> OpenCatalogForRun(const std::string& spec,
                                                   std::string& unreachable, bool connect_later) {
  unreachable.clear();
  ASSIGN_OR_RETURN(std::string sqlite_path, SqlitePathOf(spec));
  if (!sqlite_path.empty()) {
    Preopened& preopened = PreopenedCatalog();
    std::unique_ptr<catalog::SqliteCatalog> ready = std::move(preopened.catalog);
    if (ready && preopened.spec == spec && !ready->FileMoved()) {
      return std::unique_ptr<Catalog>(std::move(ready));
    }
    // A run's writes come from the Recorder's thread, which also feeds the console and the log
    // files: waiting the usual 10 s for another process's long transaction (a prune, a tool
    // holding the file) stalled them that long, twice for a run that wrote twice. A write that
    // waits longer than this goes to the spool and is retried like any outage.
    return OpenSqlite(sqlite_path, {.busy_timeout_ms = kRunBusyTimeoutMs});
  }
  auto catalog = std::make_unique<catalog::PostgresCatalog>(spec);
  catalog->SetWriteTimeout(kRunPostgresWriteTimeout);
  if (connect_later) {
    catalog->OpenOnFirstWrite();
    return std::unique_ptr<Catalog>(std::move(catalog));
  }
  Status opened = catalog->Open();
  // A server that answers and refuses, or any failure but a connection's, is for the user.
  if (catalog->Refuses(opened) || (!opened.ok() && opened.code() != Code::kUnavailable)) {
    return opened;
  }
  if (opened.ok()) {
    RETURN_IF_ERROR(catalog->CheckWriteRights());
    return std::unique_ptr<Catalog>(std::move(catalog));
  }
  unreachable = opened.message();
  catalog->OpenOnFirstWrite();  // a failed Open left it closed
  return std::unique_ptr<Catalog>(std::move(catalog));
}

void PreopenCatalogForRun(const std::string& spec) {
  auto path = SqlitePathOf(spec);
  if (!path.ok() || path->empty()) return;
  // Not made a catalog here: a warm process the agent never uses must leave no file behind.
  auto catalog = std::make_unique<catalog::SqliteCatalog>(
      *path, catalog::SqliteCatalogOptions{.busy_timeout_ms = kRunBusyTimeoutMs,
                                           .existing_catalog_only = true});
  if (!catalog->Open().ok()) return;
  PreopenedCatalog() = {spec, std::move(catalog)};
}

}  // namespace fanout
