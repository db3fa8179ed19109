// Small shared helpers: execution ids (UUIDv7), durations as written in packages, host and user
// names, and file reading. Everything here is thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "fanout/status.h"

namespace fanout {

// A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, so ids sort by creation
// time and need no coordination between machines.
std::string NewExecutionId();
// When an id of NewExecutionId's was made (its first 48 bits), to the millisecond; nullopt for
// anything else.
std::optional<std::chrono::sys_time<std::chrono::milliseconds>> ExecutionIdTime(
    std::string_view id);
// Whether `id` has NewExecutionId's form whole: lower-case hex, version 7, the RFC variant.
bool IsExecutionId(std::string_view id);

// The names of packages, jobs, steps, proxies, agents, tasks, parameters, variables and
// connections: `kNameRule`. Jobs and packages are files in an agent's data_dir, named after
// them: `.` and `..` are refused (QA: `PUT /v1/packages/%2E%2E` was stored).
inline constexpr std::string_view kNameRule = "[A-Za-z0-9_.-]{1,128}, other than . and ..";
bool IsValidName(std::string_view name);

// "250ms", "30s", "10m", "2h", "1d", or a plain number of seconds ("1.5"). Negative and
// non-finite ("inf", "nan") are InvalidArgument; longer than 100 years, ResourceExhausted.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
// "1 execution", "2 executions": `noun` with an s when `count` is not 1.
std::string Counted(int64_t count, std::string_view noun);

// For humans: "12.0 ms" below a second, "1.23 s" below a minute, "3 m 04 s" below an hour,
// then "2 h 05 m".
std::string FormatDuration(std::chrono::nanoseconds d);

// Where `text` stops being UTF-8 (the offset of the first byte of a bad or cut sequence, an
// overlong form or a surrogate, as JSON writers refuse them); nullopt when it is UTF-8 whole.
std::optional<size_t> InvalidUtf8At(std::string_view text);

// Whether `host` is an IPv4 or IPv6 address written out (no brackets), not a name.
bool IsNumericAddress(const std::string& host);

const std::string& HostName();
const std::string& UserName();

// The whole content of a file. NotFound when it does not exist; InvalidArgument naming the path
// for a directory or any other failure to read. With `max_bytes`, a file that holds more fails
// with ResourceExhausted once that much was read (a token file that is /dev/zero must not fill
// the memory).
// With `regular_only`, anything but a regular file is refused (InvalidArgument) before a read:
// a FIFO would wait for a writer.
Result<std::string> ReadFile(const std::string& path,
                             size_t max_bytes = std::numeric_limits<size_t>::max(),
                             bool regular_only = false);
// The rest of standard input, read from fd 0 itself: reopening /dev/stdin fails when the pipe or
// file belongs to another user (`vault read ... | sudo -u etl fanout ...`). Errors name it
// "standard input"; `max_bytes` as for ReadFile.
Result<std::string> ReadStandardInput(size_t max_bytes = std::numeric_limits<size_t>::max());

// Fields of /proc/PID/stat; nullopt when there is no such process.
struct ProcStat {
  int64_t ppid = 0;
  int64_t pgrp = 0;
  int64_t start = 0;  // field 22: start time in clock ticks since boot (tells a re-used pid apart)
};
std::optional<ProcStat> ReadProcStat(int64_t pid);
// ReadProcStat's start; 0 when there is no such process.
int64_t ProcessStartTime(int64_t pid);
// "BOOT_ID:START_TICKS" of a live process on this machine, "" when there is none: no two
// processes of this machine, across reboots too, share one.
std::string ProcessIdentity(int64_t pid);

// Text from tasks (their output, messages) made safe to print on a terminal: control
// characters other than newline and tab, DEL and the C1 controls (U+0080..U+009F) become
// visible escapes (\x1b, \u009b), so that stored output cannot move the cursor, clear the
// screen or retitle the window of whoever reads a report or log.
std::string EscapeControls(std::string_view text);

// The last line of a program's output, its final line breaks left out: where it says why it
// failed.
std::string LastLine(std::string_view text);
// A child `fanout run`'s reason (its last line of stderr, or its result file's) as its parent
// quotes it: without the "fanout: " that each such line starts with, which read "step run failed:
// fanout: package x failed: ..." there (QA).
std::string AsChildReason(std::string reason);
// `text` without its final line breaks, each further line after `indent`: a message of several
// lines (a program's stderr) printed in a one-line-per-event listing.
std::string IndentFurtherLines(std::string_view text, std::string_view indent);

// What to add to a YAML parser's message for an error at `line` (1-based) of `text`: yaml-cpp
// says "end of map not found" or "illegal map value" for a tab in an indentation, so the line
// nearest the error indented with a tab is named ("; line 4 is indented with a tab: YAML
// indents with spaces only"); "" when there is none.
std::string YamlTabHint(std::string_view text, int line);

// Where the first NUL byte of `text` is, as 1-based line and column, when there is one: a
// file with one is binary, not YAML (yaml-cpp then names a wrong place and an empty character).
std::optional<std::pair<int, int>> FindNulByte(std::string_view text);
// The 1-based line and column (in bytes) of offset `at` of `text`.
std::pair<int, int> LineAndColumnAt(std::string_view text, size_t at);

// Writes `content` to PATH.tmp and renames it to `path`, so that no reader sees half a file.
// On failure the temporary file is removed and the Status says "cannot write PATH: reason".
// `mode` (e.g. 0600 for a secret) replaces the one the umask gives. A symbolic link of the
// caller's own user is followed (another user's is refused); a `path` that is not a regular
// file (a device, a pipe, a folder) is refused, not replaced.
Status WriteFileAtomically(const std::string& path, std::string_view content,
                           std::optional<mode_t> mode = std::nullopt);

// Hex SHA-256 of a text (used to fingerprint deployed and executed packages).
std::string Sha256Hex(std::string_view data);

// A plain YAML scalar as a bool the YAML 1.2 way: true/True/TRUE or false/False/FALSE, nothing
// else. yaml-cpp's YAML 1.1 rules also take y, n, yes, no, on and off, which turned Norway's
// country code `no` in a list into false.
std::optional<bool> YamlBool(std::string_view scalar);

// ASCII case folding, for names and keywords written in any case (Success, MULTIPART/...).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string AsciiLower(std::string text);

}  // namespace fanout
