// OpenCatalog: turns a --catalog / FANOUT_CATALOG spec into an opened Catalog backend.
#include <memory>
#include <string>

#include "catalog/sqlite_catalog.h"
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

constexpr const char* kSupportedForms =
    "use sqlite:PATH, a path ending in .db, or (later) a postgresql:// URL";

}  // namespace

Result<std::unique_ptr<Catalog>> OpenCatalog(const std::string& spec) {
  std::string path;
  if (StartsWith(spec, "sqlite:")) {
    path = spec.substr(7);
    if (path.empty()) {
      return InvalidArgument(std::string("catalog spec 'sqlite:' names no file; ") +
                             kSupportedForms);
    }
  } else if (StartsWith(spec, "postgresql://") || StartsWith(spec, "postgres://")) {
    return InvalidArgument(
        "PostgreSQL catalogs are not supported yet; use sqlite:PATH (one file shared by every "
        "process on this machine)");
  } else if (EndsWith(spec, ".db") && spec.find("://") == std::string::npos) {
    path = spec;
  } else {
    return InvalidArgument("unsupported catalog '" + spec + "'; " + kSupportedForms);
  }
  auto catalog = std::make_unique<catalog::SqliteCatalog>(path);
  RETURN_IF_ERROR(catalog->Open());
  return std::unique_ptr<Catalog>(std::move(catalog));
}

}  // namespace fanout
