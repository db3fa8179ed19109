// Helpers shared by the catalog module's tests: a temporary directory removed afterwards, and
// sample rows and events.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fanout/catalog.h"

namespace fanout::catalog::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "fanout-catalog-test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 2026-11-26T03:04:05Z plus `micros`.
inline DateTime At(int64_t micros) {
  return DateTime(std::chrono::microseconds(1795662245000000LL + micros));
}

inline Event SampleEvent(const std::string& execution_id, EventType type, std::string message) {
  Event event;
  event.execution_id = execution_id;
  event.type = type;
  event.computer = "host-a";
  event.operator_name = "etl";
  event.source = "load/region-job";
  event.source_id = "load/region-job";
  event.started_at = At(0);
  event.ended_at = At(1500);
  event.data_code = 7;
  event.data_bytes = "bytes";
  event.message = std::move(message);
  return event;
}

inline ExecutionRow SampleExecution(const std::string& id, int64_t started_micros = 0) {
  ExecutionRow row;
  row.id = id;
  row.package = "nightly-orders";
  row.package_sha256 = "abc123";
  row.host = "host-a";
  row.status = "running";
  row.started_at = At(started_micros);
  row.operator_name = "etl";
  return row;
}

inline TaskRunRow SampleTaskRun(const std::string& execution_id, const std::string& path,
                                int64_t started_micros = 0) {
  TaskRunRow row;
  row.execution_id = execution_id;
  row.task_path = path;
  row.task_type = "process";
  row.status = "running";
  row.started_at = At(started_micros);
  return row;
}

}  // namespace fanout::catalog::testing
