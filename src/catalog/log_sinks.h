// Log sinks, the SSIS log providers of Fanout: the console (dtexec /Reporting), a CSV text file
// and a JSON-lines file, plus the factory behind `fanout run --log SPEC`.
// Like every EventSink, each is driven by the Recorder's thread alone and does no locking.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "fanout/event.h"
#include "fanout/status.h"

namespace fanout::catalog {

// A set of event types; by default every type.
class EventFilter {
 public:
  EventFilter() = default;
  // An empty list means every type, as on the command line.
  explicit EventFilter(const std::vector<EventType>& types);
  static EventFilter None() { return EventFilter(0u); }

  bool Accepts(EventType type) const { return (bits_ >> static_cast<unsigned>(type)) & 1u; }
  void Add(EventType type) { bits_ |= 1u << static_cast<unsigned>(type); }
  // Stops accepting what `other` accepts.
  void Remove(const EventFilter& other) { bits_ &= ~other.bits_; }
  // Accepts what `other` accepts too.
  void Add(const EventFilter& other) { bits_ |= other.bits_; }

 private:
  explicit EventFilter(uint32_t bits) : bits_(bits) {}
  uint32_t bits_ = ~0u;
};

// Checks a dtexec /Reporting string such as "EWP": letters E (OnError), W (OnWarning),
// I (OnInformation), P (OnProgress), V (verbose: every event), N (none), in any case.
Status ValidateReportingLevels(std::string_view levels);
// The events a levels string selects. Letters other than the valid ones are ignored, so validate
// user input first.
EventFilter ReportingLevelsFilter(std::string_view levels);

// Human-readable lines on a terminal or pipe, one per event:
//   03:04:05 OnError      load/region-job: message
// The time is when the event ended, in UTC, matching the catalog and the log files. Does not own
// `out`.
class ConsoleSink : public EventSink {
 public:
  ConsoleSink(std::string_view levels, FILE* out)
      : ConsoleSink(ReportingLevelsFilter(levels), out) {}
  ConsoleSink(EventFilter filter, FILE* out) : filter_(filter), out_(out) {}

  // Prints the event's line, except a package's closing "package P failed: TASK: M" when
  // TASK's own OnError line said M already (the catalog keeps both, as SSIS does).
  void Write(const Event& event) override;
  void Flush() override;
  // Whether Write prints this event.
  bool Prints(const Event& event) const { return filter_.Accepts(event.type); }

 private:
  EventFilter filter_;
  FILE* out_;
  std::string line_;  // reused to avoid an allocation per event
  std::unordered_set<std::string> errors_said_;  // "SOURCE: MESSAGE" of OnError lines printed
};

// An append-only file written in whole lines, buffered until Flush() or until the buffer fills.
// Whole lines per write(2) on an O_APPEND descriptor keep lines from several processes
// logging to one file from interleaving.
class LineFile {
 public:
  // `header` (a line without its newline, or "") is written at once when the file is new or
  // empty, under a lock, so that of several processes opening one file only one writes it.
  static Result<std::unique_ptr<LineFile>> Open(const std::string& path, std::string_view header);
  ~LineFile();
  LineFile(const LineFile&) = delete;
  LineFile& operator=(const LineFile&) = delete;

  // `line` without its newline.
  void Append(std::string_view line);
  void Flush();

 private:
  LineFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_;
  std::string buffer_;
  bool reported_error_ = false;
};

// The SSIS text-file log provider: a "#Fields:" header line, then one CSV row per event with
// RFC 4180 quoting. Appends to an existing file; the header is written only to a new or empty one.
class TextFileSink : public EventSink {
 public:
  static constexpr const char* kHeader =
      "#Fields: event,computer,operator,source,sourceid,executionid,starttime,endtime,datacode,"
      "databytes,message";

  static Result<std::unique_ptr<TextFileSink>> Open(const std::string& path, EventFilter filter);

  void Write(const Event& event) override;
  void Flush() override { file_->Flush(); }

 private:
  TextFileSink(std::unique_ptr<LineFile> file, EventFilter filter)
      : file_(std::move(file)), filter_(filter) {}

  std::unique_ptr<LineFile> file_;
  EventFilter filter_;
  std::string line_;
};

// One JSON object per line with the keys event, execution_id, computer, operator, source,
// source_id, started_at, ended_at (ISO 8601 UTC), data_code (a number), data_bytes, message.
// Bytes that are not UTF-8 are replaced by U+FFFD.
class JsonLinesSink : public EventSink {
 public:
  static Result<std::unique_ptr<JsonLinesSink>> Open(const std::string& path, EventFilter filter);

  void Write(const Event& event) override;
  void Flush() override { file_->Flush(); }

 private:
  JsonLinesSink(std::unique_ptr<LineFile> file, EventFilter filter)
      : file_(std::move(file)), filter_(filter) {}

  std::unique_ptr<LineFile> file_;
  EventFilter filter_;
};

// One event as the JSON-lines provider writes it (keys in the documented order), with the
// catalog's `id` first when `with_id` (for `fanout logs --json`, which can resume from it).
std::string EventJsonLine(const Event& event, bool with_id);

// RFC 4180: a field holding a comma, quote, CR or LF is quoted, with quotes doubled.
void AppendCsvField(std::string& line, std::string_view field);

// Builds a sink from a `--log` spec: "text:PATH", "jsonl:PATH" or "console" (every event on
// stdout). `events` restricts the sink to those types; empty means all.
Result<std::unique_ptr<EventSink>> MakeLogSink(const std::string& spec,
                                               std::vector<EventType> events);

}  // namespace fanout::catalog
