// Spool: where catalog rows go while the catalog cannot be reached, so that nothing is lost.
// Rows are appended in order to a JSON-lines file of this process (already masked: no secret
// reaches the disk) and replayed in the same order once the catalog answers; a file left by a
// process that died is replayed by the next one that opens the same catalog. Replays cannot
// duplicate: executions and task runs are upserts, events carry a unique uid.
// Not thread-safe: the Recorder's thread owns it.
#pragma once

#include <string>

#include "fanout/catalog.h"
#include "fanout/status.h"

namespace fanout::catalog {

class Spool {
 public:
  // `dir` is created when first needed; `catalog_spec` keys the files so rows only ever go
  // back to the catalog they were meant for. A PostgreSQL spec keys them without its password
  // and whatever its form, so that processes reaching one database by different spellings
  // (a password in the URI, or in PGPASSWORD) deliver each other's leftovers.
  Spool(std::string dir, const std::string& catalog_spec);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Appends rows to this process's file.
  Status Append(const CatalogBatch& rows);
  // True while this process's file holds rows not yet in the catalog.
  bool holding() const { return rows_held_ > 0; }
  size_t rows_held() const { return rows_held_; }
  const std::string& path() const { return path_; }

  // Writes this process's file to the catalog, in order, in transactions of at most
  // `max_rows`; on success empties it. On failure what was written stays written (replays are
  // idempotent) and the rest is tried again next time.
  Status Replay(Catalog& catalog, size_t max_rows);
  // Replays files that other, finished processes left for this catalog; returns rows delivered.
  Result<size_t> ReplayLeftovers(Catalog& catalog, size_t max_rows);

 private:
  Status Open();
  Status ReplayFile(int fd, size_t from_offset, size_t* delivered_offset, Catalog& catalog,
                    size_t max_rows);

  std::string dir_;
  std::string key_;
  std::string legacy_key_;  // the spec's text, as files were named before 2026-11-26
  std::string path_;
  int fd_ = -1;
  size_t rows_held_ = 0;
  size_t replayed_offset_ = 0;  // bytes of our file already in the catalog
};

// The spool folder: $FANOUT_SPOOL_DIR, else $XDG_STATE_HOME/fanout/spool, else
// ~/.local/state/fanout/spool.
std::string DefaultSpoolDir();

// A spool file in `dir`, of any catalog, that holds rows of `execution_id` (its own, not its
// children's); "" when none does.
std::string SpoolFileHolding(const std::string& dir, const std::string& execution_id);

// Row <-> JSON, one object per spool line.
std::string SpoolLine(const ExecutionRow& row);
std::string SpoolLine(const TaskRunRow& row);
std::string SpoolLine(const Event& event);
// Parses one line into `batch` (appending to the right vector).
Status ParseSpoolLine(const std::string& line, CatalogBatch& batch);

}  // namespace fanout::catalog
