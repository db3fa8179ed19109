// Events (SSIS log entries) and the sinks they are written to: console, text, JSON lines and the
// catalog. The engine emits events from many threads; sinks are called from one thread only
// (the Recorder's), so a sink needs no locking of its own.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fanout/status.h"
#include "fanout/value.h"

namespace fanout {

enum class EventType {
  kOnPreExecute,
  kOnPostExecute,
  kOnError,
  kOnWarning,
  kOnInformation,
  kOnTaskFailed,
  kOnProgress,
  kOnVariableValueChanged,
};

// "OnPreExecute", ... as SSIS spells them.
const char* EventName(EventType type);
Result<EventType> ParseEventName(std::string_view name);

// The message of a failed package's closing OnError, "package NAME failed: WHY" (WHY is its
// first error, already said by the task that raised it).
std::string PackageFailedMessage(std::string_view package, std::string_view why);
// WHY, when `message` is package `package`'s closing OnError; else "".
std::string_view PackageFailedReason(std::string_view message, std::string_view package);

// One log entry; the fields are the `sysssislog` columns (DESIGN §6).
struct Event {
  int64_t id = 0;            // assigned by the catalog; 0 until stored
  std::string uid;           // assigned by the Recorder: a retried write of it is a no-op
  std::string execution_id;  // the execution that raised it
  EventType type = EventType::kOnInformation;
  std::string computer;       // host name
  std::string operator_name;  // Unix user
  std::string source;         // task path ("load/region-job"), or the package name
  std::string source_id;      // stable id of the source within the execution (task path or "")
  DateTime started_at{};
  DateTime ended_at{};
  int64_t data_code = 0;  // exit code, row count, progress percent, ...
  std::string data_bytes;  // extra payload, e.g. captured output
  std::string message;
  // Not recorded: the console shows it before `source` (RunOptions::console_label).
  std::string console_label;
};

// Where events go. Called from a single thread; Write must not block for long.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Write(const Event& event) = 0;
  virtual void Flush() {}
};

// Replaces every occurrence of the registered secrets in a text with "***", as CI systems mask
// secrets. Thread-safe.
class Masker {
 public:
  Masker();
  ~Masker();
  Masker(const Masker&) = delete;
  Masker& operator=(const Masker&) = delete;
  // Values shorter than this are not searched for: hiding every "0", "1" or "no" in every text
  // would corrupt ids and counts and protect nothing. Such a secret is still hidden where it is
  // a parameter's whole value (MaskValue: the catalog, reports, an agent's history).
  static constexpr size_t kMinSecretLength = 4;
  void AddSecret(std::string secret);  // ignores empty secrets
  std::string Mask(std::string_view text) const;
  // A parameter's value: `***` when it is a secret, however short; else Mask(value).
  std::string MaskValue(std::string_view value) const;
  // For text whose end was cut off (bounded output): a secret's first part at its very end is
  // masked too.
  std::string MaskTruncated(std::string_view text) const;
  // For text whose start was cut off (the last bytes of a long output): a secret's last part
  // at its very start is masked too.
  std::string MaskTail(std::string_view text) const;
  // The end of a captured output stream, where a program says why it failed: all of it,
  // masked, when all was captured; else (`dropped` bytes went past the capture) its last
  // bytes, `tail`, with MaskTail.
  std::string MaskOutputEnd(std::string_view captured, size_t dropped,
                            std::string_view tail) const;
  bool empty() const;
  // Every secret registered, to hand on to a child process that must mask them too.
  std::vector<std::string> secrets() const;

 private:
  std::string Mask(std::string_view text, bool cut_end, bool cut_start = false) const;
  struct Impl;
  Impl* impl_;
};

}  // namespace fanout
