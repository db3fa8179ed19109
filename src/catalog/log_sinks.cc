// Console, CSV text and JSON-lines log sinks, and the `--log SPEC` factory.
#include "catalog/log_sinks.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/util.h"

namespace fanout::catalog {

namespace {

constexpr size_t kFileBufferBytes = 64 * 1024;

// "hh:mm:ss" of a time in UTC.
void AppendClockTime(std::string& out, DateTime t) {
  using namespace std::chrono;
  auto since_midnight = floor<seconds>(t) - floor<days>(t);
  hh_mm_ss<seconds> hms(since_midnight);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()));
  out += buf;
}

Status OpenError(const std::string& path, int error) {
  return Status(error == ENOENT ? Code::kNotFound : Code::kUnavailable,
                "cannot open log file '" + path + "': " + std::strerror(error));
}

}  // namespace

EventFilter::EventFilter(const std::vector<EventType>& types) {
  if (types.empty()) return;
  bits_ = 0;
  for (EventType type : types) Add(type);
}

Status ValidateReportingLevels(std::string_view levels) {
  if (levels.empty()) {
    return InvalidArgument("empty reporting levels; use letters from EWIPVN (N for none)");
  }
  for (char c : levels) {
    if (std::strchr("EWIPVN", std::toupper(static_cast<unsigned char>(c))) == nullptr || c == 0) {
      return InvalidArgument(std::string("unknown reporting level '") + c +
                             "'; use E (errors), W (warnings), I (information), P (progress), "
                             "V (verbose: every event) or N (none)");
    }
  }
  // N with other letters read as those letters, which surprised (QA): say which is meant.
  if (levels.size() > 1 && levels.find_first_of("Nn") != std::string_view::npos) {
    return InvalidArgument(fmt::format("reporting levels '{}': N (none) stands alone; leave it "
                                       "out to see the other levels",
                                       levels));
  }
  return Status::Ok();
}

EventFilter ReportingLevelsFilter(std::string_view levels) {
  EventFilter filter = EventFilter::None();
  for (char c : levels) {
    switch (std::toupper(static_cast<unsigned char>(c))) {
      case 'E':
        filter.Add(EventType::kOnError);
        break;
      case 'W':
        filter.Add(EventType::kOnWarning);
        break;
      case 'I':
        filter.Add(EventType::kOnInformation);
        break;
      case 'P':
        filter.Add(EventType::kOnProgress);
        break;
      case 'V':
        return EventFilter();
      default:
        break;  // N selects nothing
    }
  }
  return filter;
}

void ConsoleSink::Write(const Event& event) {
  if (!Prints(event)) return;
  if (event.type == EventType::kOnError) {
    std::string_view reason = PackageFailedReason(event.message, event.source);
    if (!reason.empty() && errors_said_.count(std::string(reason)) != 0) return;
    errors_said_.insert(event.source + ": " + event.message);
  }
  line_.clear();
  AppendClockTime(line_, event.ended_at);
  // Padded to the common names' width so that sources line up; the rare longer names
  // (OnVariableValueChanged) simply push the line to the right.
  char name[32];
  std::snprintf(name, sizeof name, " %-13s ", EventName(event.type));
  line_ += name;
  if (!event.console_label.empty()) {
    line_ += event.console_label;
    line_ += " > ";
  }
  line_ += event.source;
  if (!event.message.empty()) {
    if (!event.source.empty()) line_ += ": ";
    // A task's output must not drive the terminal; a message's further lines (a program's
    // stderr) are indented under the source: only an event's first line starts at the left
    // (QA: they read as lines of their own).
    constexpr std::string_view kIndent = "                       ";  // "HH:MM:SS EVENT-NAME "
    line_ += IndentFurtherLines(EscapeControls(event.message), kIndent);
  }
  line_ += '\n';
  std::fwrite(line_.data(), 1, line_.size(), out_);
}

void ConsoleSink::Flush() { std::fflush(out_); }

// O_CLOEXEC because the engine forks task processes that must not inherit the file. The header
// is written straight away under flock: buffered, it left the file empty long enough for every
// other process starting on it to write one too.
Result<std::unique_ptr<LineFile>> LineFile::Open(const std::string& path, std::string_view header) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return OpenError(path, errno);
  auto file = std::unique_ptr<LineFile>(new LineFile(path, fd));
  if (!header.empty()) {
    while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size == 0) {
      file->Append(header);
      file->Flush();
    }
    ::flock(fd, LOCK_UN);
  }
  return file;
}

LineFile::~LineFile() {
  Flush();
  ::close(fd_);
}

void LineFile::Append(std::string_view line) {
  if (buffer_.size() + line.size() + 1 > kFileBufferBytes && !buffer_.empty()) Flush();
  buffer_.append(line);
  buffer_ += '\n';
}

void LineFile::Flush() {
  size_t done = 0;
  while (done < buffer_.size()) {
    ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A full disk must not stop the run; say so once and drop what cannot be written.
      if (!reported_error_) {
        std::fprintf(stderr, "fanout: writing log file '%s' failed: %s\n", path_.c_str(),
                     std::strerror(errno));
        reported_error_ = true;
      }
      break;
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
}

void AppendCsvField(std::string& line, std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
    line.append(field);
    return;
  }
  line += '"';
  for (char c : field) {
    if (c == '"') line += '"';
    line += c;
  }
  line += '"';
}

Result<std::unique_ptr<TextFileSink>> TextFileSink::Open(const std::string& path,
                                                         EventFilter filter) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineFile> file, LineFile::Open(path, kHeader));
  return std::unique_ptr<TextFileSink>(new TextFileSink(std::move(file), filter));
}

void TextFileSink::Write(const Event& event) {
  if (!filter_.Accepts(event.type)) return;
  line_.clear();
  line_ += EventName(event.type);
  for (std::string_view field :
       {std::string_view(event.computer), std::string_view(event.operator_name),
        std::string_view(event.source), std::string_view(event.source_id),
        std::string_view(event.execution_id)}) {
    line_ += ',';
    AppendCsvField(line_, field);
  }
  line_ += ',';
  line_ += FormatDateTime(event.started_at);
  line_ += ',';
  line_ += FormatDateTime(event.ended_at);
  line_ += ',';
  line_ += std::to_string(event.data_code);
  // Task output and messages with their control characters written out (\x1b), as the console
  // and `fanout logs` show them: read with `cat` or `less -R`, the file must not drive the
  // terminal (QA). Line breaks and tabs stay, within the quoted field.
  line_ += ',';
  AppendCsvField(line_, EscapeControls(event.data_bytes));
  line_ += ',';
  AppendCsvField(line_, EscapeControls(event.message));
  file_->Append(line_);
}

Result<std::unique_ptr<JsonLinesSink>> JsonLinesSink::Open(const std::string& path,
                                                           EventFilter filter) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineFile> file, LineFile::Open(path, ""));
  return std::unique_ptr<JsonLinesSink>(new JsonLinesSink(std::move(file), filter));
}

std::string EventJsonLine(const Event& event, bool with_id) {
  // ordered_json keeps the documented key order, which people reading the file expect.
  nlohmann::ordered_json line;
  if (with_id) line["id"] = event.id;
  line["event"] = EventName(event.type);
  line["execution_id"] = event.execution_id;
  line["computer"] = event.computer;
  line["operator"] = event.operator_name;
  line["source"] = event.source;
  line["source_id"] = event.source_id;
  line["started_at"] = FormatDateTime(event.started_at);
  line["ended_at"] = FormatDateTime(event.ended_at);
  line["data_code"] = event.data_code;
  line["data_bytes"] = event.data_bytes;
  line["message"] = event.message;
  // `replace` rather than the default `strict`, which throws on captured output that is not
  // UTF-8.
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void JsonLinesSink::Write(const Event& event) {
  if (!filter_.Accepts(event.type)) return;
  file_->Append(EventJsonLine(event, false));
}

Result<std::unique_ptr<EventSink>> MakeLogSink(const std::string& spec,
                                               std::vector<EventType> events) {
  EventFilter filter(events);
  constexpr const char* kForms = "use text:PATH, jsonl:PATH or console";
  if (spec == "console") return std::unique_ptr<EventSink>(new ConsoleSink(filter, stdout));
  size_t colon = spec.find(':');
  std::string provider = spec.substr(0, colon);
  std::string path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (provider == "text" || provider == "jsonl") {
    if (path.empty()) return InvalidArgument("log spec '" + spec + "' names no file; " + kForms);
    if (provider == "text") {
      ASSIGN_OR_RETURN(auto sink, TextFileSink::Open(path, filter));
      return std::unique_ptr<EventSink>(std::move(sink));
    }
    ASSIGN_OR_RETURN(auto sink, JsonLinesSink::Open(path, filter));
    return std::unique_ptr<EventSink>(std::move(sink));
  }
  return InvalidArgument("unknown log provider '" + spec + "'; " + kForms);
}

}  // namespace fanout::catalog
