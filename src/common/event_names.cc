// Event type names as SSIS spells them ("OnPreExecute", ...), and the one message whose form
// readers rely on (a package's closing OnError). They live in common, below both the package
// loader (which checks `logging: events`) and the catalog (which stores them).
#include "fanout/event.h"

#include <string>

#include "common/util.h"

namespace fanout {
namespace {

struct EventNameEntry {
  EventType type;
  const char* name;
};

constexpr EventNameEntry kEventNames[] = {
    {EventType::kOnPreExecute, "OnPreExecute"},
    {EventType::kOnPostExecute, "OnPostExecute"},
    {EventType::kOnError, "OnError"},
    {EventType::kOnWarning, "OnWarning"},
    {EventType::kOnInformation, "OnInformation"},
    {EventType::kOnTaskFailed, "OnTaskFailed"},
    {EventType::kOnProgress, "OnProgress"},
    {EventType::kOnVariableValueChanged, "OnVariableValueChanged"},
};

}  // namespace

const char* EventName(EventType type) {
  for (const auto& entry : kEventNames) {
    if (entry.type == type) return entry.name;
  }
  return "Unknown";
}

// Case-insensitive because users type event names on the command line (`fanout logs --event`).
Result<EventType> ParseEventName(std::string_view name) {
  for (const auto& entry : kEventNames) {
    if (EqualsIgnoreCase(name, entry.name)) return entry.type;
  }
  std::string known;
  for (const auto& entry : kEventNames) {
    if (!known.empty()) known += ", ";
    known += entry.name;
  }
  return InvalidArgument("unknown event '" + std::string(name) + "'; known events: " + known);
}

std::string PackageFailedMessage(std::string_view package, std::string_view why) {
  return "package " + std::string(package) + " failed: " + std::string(why);
}

std::string_view PackageFailedReason(std::string_view message, std::string_view package) {
  const std::string prefix = PackageFailedMessage(package, "");
  return message.starts_with(prefix) ? message.substr(prefix.size()) : std::string_view();
}

}  // namespace fanout
