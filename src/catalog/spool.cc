// The catalog spool (see spool.h). One file per process, locked with flock while the process
// lives, so a leftover file is one whose lock nobody holds.
#include "catalog/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "catalog/postgres_catalog.h"
#include "common/util.h"

namespace fanout::catalog {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSpoolSuffix = ".spool";  // PREFIX.PID.ID.spool

json Time(DateTime t) { return FormatDateTime(t); }
json Time(const std::optional<DateTime>& t) { return t ? json(FormatDateTime(*t)) : json(nullptr); }

Result<DateTime> ReadTime(const json& j) { return ParseDateTime(j.get<std::string>()); }
Result<std::optional<DateTime>> ReadOptionalTime(const json& j) {
  if (j.is_null()) return std::optional<DateTime>();
  ASSIGN_OR_RETURN(DateTime t, ParseDateTime(j.get<std::string>()));
  return std::optional<DateTime>(t);
}

// Reads the whole of `fd` from `offset`.
Result<std::string> ReadFrom(int fd, size_t offset) {
  std::string data;
  char buf[65536];
  off_t at = static_cast<off_t>(offset);
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof buf, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal(fmt::format("reading the spool: {}", std::strerror(errno)));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return data;
}

}  // namespace

std::string SpoolLine(const ExecutionRow& r) {
  json params = json::object();
  for (const auto& [name, p] : r.parameters) params[name] = {{"value", p.value}, {"sensitive", p.sensitive}};
  return json{{"kind", "execution"}, {"id", r.id}, {"parent_id", r.parent_id},
              {"package", r.package}, {"package_sha256", r.package_sha256}, {"host", r.host},
              {"agent", r.agent}, {"job", r.job}, {"run_id", r.run_id}, {"status", r.status},
              {"started_at", Time(r.started_at)}, {"ended_at", Time(r.ended_at)},
              {"exit_code", r.exit_code ? json(*r.exit_code) : json(nullptr)},
              {"message", r.message}, {"operator", r.operator_name}, {"pid", r.pid},
              {"process", r.process}, {"parameters", params}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SpoolLine(const TaskRunRow& r) {
  return json{{"kind", "task_run"}, {"execution_id", r.execution_id}, {"task_path", r.task_path},
              {"task_type", r.task_type}, {"attempt", r.attempt}, {"status", r.status},
              {"started_at", Time(r.started_at)}, {"ended_at", Time(r.ended_at)},
              {"agent", r.agent}, {"child_execution_id", r.child_execution_id},
              {"message", r.message}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SpoolLine(const Event& e) {
  return json{{"kind", "event"}, {"uid", e.uid}, {"execution_id", e.execution_id},
              {"event", EventName(e.type)}, {"computer", e.computer},
              {"operator", e.operator_name}, {"source", e.source}, {"source_id", e.source_id},
              {"started_at", Time(e.started_at)}, {"ended_at", Time(e.ended_at)},
              {"data_code", e.data_code}, {"data_bytes", e.data_bytes}, {"message", e.message}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

Status ParseSpoolLine(const std::string& line, CatalogBatch& batch) {
  try {
    json j = json::parse(line);
    std::string kind = j.at("kind");
    if (kind == "execution") {
      ExecutionRow r;
      r.id = j.at("id");
      r.parent_id = j.at("parent_id");
      r.package = j.at("package");
      r.package_sha256 = j.at("package_sha256");
      r.host = j.at("host");
      r.agent = j.at("agent");
      r.job = j.at("job");
      r.run_id = j.at("run_id");
      r.status = j.at("status");
      ASSIGN_OR_RETURN(r.started_at, ReadTime(j.at("started_at")));
      ASSIGN_OR_RETURN(r.ended_at, ReadOptionalTime(j.at("ended_at")));
      if (!j.at("exit_code").is_null()) r.exit_code = j.at("exit_code").get<int>();
      r.message = j.at("message");
      r.operator_name = j.at("operator");
      r.pid = j.value("pid", int64_t{0});  // absent from files of an older fanout
      r.process = j.value("process", "");
      for (const auto& [name, p] : j.at("parameters").items()) {
        r.parameters[name] = ParameterValue{p.at("value"), p.at("sensitive")};
      }
      batch.executions.push_back(std::move(r));
    } else if (kind == "task_run") {
      TaskRunRow r;
      r.execution_id = j.at("execution_id");
      r.task_path = j.at("task_path");
      r.task_type = j.at("task_type");
      r.attempt = j.at("attempt");
      r.status = j.at("status");
      ASSIGN_OR_RETURN(r.started_at, ReadTime(j.at("started_at")));
      ASSIGN_OR_RETURN(r.ended_at, ReadOptionalTime(j.at("ended_at")));
      r.agent = j.at("agent");
      r.child_execution_id = j.at("child_execution_id");
      r.message = j.at("message");
      batch.task_runs.push_back(std::move(r));
    } else if (kind == "event") {
      Event e;
      e.uid = j.at("uid");
      e.execution_id = j.at("execution_id");
      ASSIGN_OR_RETURN(e.type, ParseEventName(j.at("event").get<std::string>()));
      e.computer = j.at("computer");
      e.operator_name = j.at("operator");
      e.source = j.at("source");
      e.source_id = j.at("source_id");
      ASSIGN_OR_RETURN(e.started_at, ReadTime(j.at("started_at")));
      ASSIGN_OR_RETURN(e.ended_at, ReadTime(j.at("ended_at")));
      e.data_code = j.at("data_code");
      e.data_bytes = j.at("data_bytes");
      e.message = j.at("message");
      batch.events.push_back(std::move(e));
    } else {
      return InvalidArgument("unknown spool row kind '" + kind + "'");
    }
  } catch (const json::exception& e) {
    return InvalidArgument(fmt::format("bad spool line: {}", e.what()));
  }
  return Status::Ok();
}

std::string SpoolFileHolding(const std::string& dir, const std::string& execution_id) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != kSpoolSuffix || !entry.is_regular_file(ec)) continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      if (line.find(execution_id) == std::string::npos) continue;
      // Its own rows, not a child's that names it as their parent (QA: the note named a
      // child's spool file for the parent's).
      CatalogBatch rows;
      if (!ParseSpoolLine(line, rows).ok()) continue;
      auto of_it = [&](const auto& row) { return row.execution_id == execution_id; };
      if (std::any_of(rows.executions.begin(), rows.executions.end(),
                      [&](const ExecutionRow& row) { return row.id == execution_id; }) ||
          std::any_of(rows.task_runs.begin(), rows.task_runs.end(), of_it) ||
          std::any_of(rows.events.begin(), rows.events.end(), of_it)) {
        return entry.path().string();
      }
    }
  }
  return "";
}

std::string DefaultSpoolDir() {
  if (const char* dir = std::getenv("FANOUT_SPOOL_DIR"); dir != nullptr && *dir != '\0') return dir;
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state != '\0') {
    return (fs::path(state) / "fanout" / "spool").string();
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return (fs::path(home) / ".local" / "state" / "fanout" / "spool").string();
  }
  return fmt::format("/tmp/fanout-spool-{}", getuid());
}

namespace {

std::string KeyOf(const std::string& catalog_spec) {
  std::string identity;
  if (catalog_spec.starts_with("postgresql://") || catalog_spec.starts_with("postgres://")) {
    identity = ConnectionIdentity(catalog_spec);
  }
  return Sha256Hex(identity.empty() ? catalog_spec : identity).substr(0, 16);
}

}  // namespace

Spool::Spool(std::string dir, const std::string& catalog_spec)
    : dir_(std::move(dir)),
      key_(KeyOf(catalog_spec)),
      legacy_key_(Sha256Hex(catalog_spec).substr(0, 16)) {
  path_ = (fs::path(dir_) /
           fmt::format("{}.{}.{}{}", key_, getpid(), NewExecutionId(), kSpoolSuffix))
              .string();
}

Spool::~Spool() {
  if (fd_ < 0) return;
  // An empty file has nothing to deliver; a non-empty one waits for the next process.
  struct stat st {};
  if (fstat(fd_, &st) == 0 && static_cast<size_t>(st.st_size) <= replayed_offset_) unlink(path_.c_str());
  close(fd_);
}

Status Spool::Open() {
  if (fd_ >= 0) return Status::Ok();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Unavailable(fmt::format("cannot create spool folder {}: {}", dir_, ec.message()));
  fd_ = open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) return Unavailable(fmt::format("cannot open spool file {}: {}", path_, std::strerror(errno)));
  flock(fd_, LOCK_EX);  // ours for as long as we live
  return Status::Ok();
}

Status Spool::Append(const CatalogBatch& rows) {
  if (rows.empty()) return Status::Ok();
  RETURN_IF_ERROR(Open());
  std::string data;
  for (const auto& r : rows.executions) data += SpoolLine(r) + "\n";
  for (const auto& r : rows.task_runs) data += SpoolLine(r) + "\n";
  for (const auto& e : rows.events) data += SpoolLine(e) + "\n";
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable(fmt::format("cannot write spool file {}: {}", path_, std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  rows_held_ += rows.executions.size() + rows.task_runs.size() + rows.events.size();
  return Status::Ok();
}

// Lines are grouped into transactions of at most `max_rows`; the offset advances past each
// committed group, so a failure resumes where it stopped.
Status Spool::ReplayFile(int fd, size_t from_offset, size_t* delivered_offset, Catalog& catalog,
                         size_t max_rows) {
  ASSIGN_OR_RETURN(std::string data, ReadFrom(fd, from_offset));
  size_t pos = 0;
  *delivered_offset = from_offset;
  while (pos < data.size()) {
    CatalogBatch batch;
    size_t rows = 0;
    size_t end = pos;
    while (end < data.size() && rows < max_rows) {
      size_t nl = data.find('\n', end);
      if (nl == std::string::npos) break;  // a torn last line (killed mid-write): drop it
      Status parsed = ParseSpoolLine(data.substr(end, nl - end), batch);
      if (!parsed.ok()) return parsed.WithContext("spool file");
      ++rows;
      end = nl + 1;
    }
    if (rows == 0) break;
    RETURN_IF_ERROR(catalog.Write(batch));
    pos = end;
    *delivered_offset = from_offset + pos;
  }
  return Status::Ok();
}

Status Spool::Replay(Catalog& catalog, size_t max_rows) {
  if (fd_ < 0 || rows_held_ == 0) return Status::Ok();
  size_t delivered = replayed_offset_;
  Status status = ReplayFile(fd_, replayed_offset_, &delivered, catalog, max_rows);
  replayed_offset_ = delivered;
  if (!status.ok()) return status;
  if (ftruncate(fd_, 0) == 0) replayed_offset_ = 0;
  rows_held_ = 0;
  return Status::Ok();
}

Result<size_t> Spool::ReplayLeftovers(Catalog& catalog, size_t max_rows) {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return size_t{0};
  size_t delivered_rows = 0;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (!(name.starts_with(key_ + ".") || name.starts_with(legacy_key_ + ".")) ||
        entry.path().string() == path_) {
      continue;
    }
    int fd = open(entry.path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {  // its process is still alive and owns it
      close(fd);
      continue;
    }
    size_t delivered = 0;
    Status status = ReplayFile(fd, 0, &delivered, catalog, max_rows);
    if (status.ok()) {
      unlink(entry.path().c_str());
      ++delivered_rows;
    }
    close(fd);
    if (!status.ok()) return status;
  }
  return delivered_rows;
}

}  // namespace fanout::catalog
