// Small shared helpers: execution ids (UUIDv7), durations as written in packages, host and user
// names, and file reading. Everything here is thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "fanout/status.h"

namespace fanout {

// A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, so ids sort by creation
// time and need no coordination between machines.
std::string NewExecutionId();

// "250ms", "30s", "10m", "2h", "1d", or a plain number of seconds ("1.5").
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
// "1.234 s", "12 ms", "3 m 04 s": for humans.
std::string FormatDuration(std::chrono::nanoseconds d);

const std::string& HostName();
const std::string& UserName();

Result<std::string> ReadFile(const std::string& path);

// Hex SHA-256 of a text (used to fingerprint deployed and executed packages).
std::string Sha256Hex(std::string_view data);

}  // namespace fanout
