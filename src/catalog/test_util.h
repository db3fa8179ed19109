// Helpers shared by the catalog module's tests: sample rows and events, and common/test_util.h's
// temporary directory.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>

#include "common/test_util.h"
#include "fanout/catalog.h"

namespace fanout::catalog::testing {

using fanout::testing::TempDir;

// A catalog for tests that only take writes: derive and implement Write. Reading fails.
class WriteOnlyCatalog : public Catalog {
 public:
  Status Open() override { return Status::Ok(); }
  Result<std::optional<ExecutionRow>> GetExecution(const std::string&) override {
    return Unused();
  }
  Result<std::vector<ExecutionRow>> ListExecutions(int) override { return Unused(); }
  Result<std::vector<ExecutionRow>> ListChildExecutions(const std::string&) override {
    return Unused();
  }
  Result<std::map<std::string, int>> CountChildren(const std::vector<std::string>&) override {
    return Unused();
  }
  Result<std::vector<TaskRunRow>> ListTaskRuns(const std::string&) override {
    return Unused();
  }
  Result<std::vector<ExecutionRow>> ListDescendantExecutions(const std::string&) override {
    return Unused();
  }
  Result<std::vector<TaskRunRow>> ListTreeTaskRuns(const std::string&) override {
    return Unused();
  }
  Result<std::vector<Event>> ListEvents(const EventQuery&) override { return Unused(); }
  Result<std::vector<ExecutionRow>> ListJobExecutions(const std::string&, int) override {
    return Unused();
  }
  Result<PruneCounts> Prune(DateTime, const IsLive&, bool) override { return Unused(); }
  Result<bool> EndRunningExecution(const ExecutionRow&) override { return Unused(); }

 private:
  static Status Unused() { return Internal("a write-only test catalog cannot be read"); }
};

// Another catalog behind a gate: each write waits until `open` is ready, so a Recorder's thread
// stays stuck in Write while a test fills its queue.
class GatedCatalog : public WriteOnlyCatalog {
 public:
  GatedCatalog(std::unique_ptr<Catalog> inner, std::shared_future<void> open)
      : inner_(std::move(inner)), open_(std::move(open)) {}
  Status Write(const CatalogBatch& batch) override {
    open_.wait();
    return inner_->Write(batch);
  }

 private:
  std::unique_ptr<Catalog> inner_;
  std::shared_future<void> open_;
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
