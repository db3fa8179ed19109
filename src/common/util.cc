// Execution ids, durations, host/user names, file reading and hashing (see util.h).
#include "common/util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include <fmt/format.h>

namespace fanout {

std::string NewExecutionId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  uint64_t r1 = rng(), r2 = rng();
  unsigned char b[16];
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  for (int i = 6; i < 16; ++i) b[i] = static_cast<unsigned char>((i < 11 ? r1 : r2) >> (8 * (i % 8)));
  b[6] = static_cast<unsigned char>(0x70 | (b[6] & 0x0f));  // version 7
  b[8] = static_cast<unsigned char>(0x80 | (b[8] & 0x3f));  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0xf]);
  }
  return out;
}

std::optional<std::chrono::sys_time<std::chrono::milliseconds>> ExecutionIdTime(
    std::string_view id) {
  // xxxxxxxx-xxxx-7xxx-...: the time is the first 12 hex digits.
  if (id.size() != 36 || id[8] != '-' || id[13] != '-' || id[14] != '7') return std::nullopt;
  uint64_t ms = 0;
  for (char c : std::string(id.substr(0, 8)) + std::string(id.substr(9, 4))) {
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return std::nullopt;
    ms = ms << 4 | static_cast<uint64_t>(digit);
  }
  return std::chrono::sys_time<std::chrono::milliseconds>(
      std::chrono::milliseconds(static_cast<int64_t>(ms)));
}

bool IsExecutionId(std::string_view id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return id[14] == '7' && (id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b');
}

namespace {
// The longest duration a package may write: 100 years, far beyond any real timeout but well
// inside int64 milliseconds.
constexpr double kMaxDurationMs = 100.0 * 365 * 86400000.0;
}  // namespace

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  std::string_view number = text;
  double scale_ms = 1000.0;
  struct Unit {
    std::string_view suffix;
    double ms;
  };
  static constexpr Unit kUnits[] = {{"ms", 1.0}, {"s", 1000.0}, {"m", 60000.0},
                                    {"h", 3600000.0}, {"d", 86400000.0}};
  for (const Unit& unit : kUnits) {
    if (text.size() > unit.suffix.size() && text.ends_with(unit.suffix)) {
      number = text.substr(0, text.size() - unit.suffix.size());
      scale_ms = unit.ms;
      break;
    }
  }
  double value = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  // from_chars also reads "inf" and "nan": reject them, and anything too large to be a
  // sensible timeout, before the cast to int64 (which would be undefined behaviour).
  if (ec != std::errc() || end != number.data() + number.size() || !std::isfinite(value) ||
      value < 0) {
    return InvalidArgument(fmt::format(
        "'{}' is not a duration; write a number with a unit: 250ms, 30s, 10m, 2h, 1d (a plain "
        "number is seconds)",
        text));
  }
  double ms = value * scale_ms;
  if (!std::isfinite(ms) || ms > kMaxDurationMs) {
    return Status(Code::kResourceExhausted, fmt::format(
        "'{}' is too long a duration; the longest allowed is 100 years (36500d)", text));
  }
  // Milliseconds are the resolution; a positive duration never rounds to 0, which means "none".
  auto rounded = static_cast<int64_t>(ms + 0.5);
  if (rounded == 0 && ms > 0) rounded = 1;
  return std::chrono::milliseconds(rounded);
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  double s = std::chrono::duration<double>(d).count();
  if (s < 1.0) return fmt::format("{:.1f} ms", s * 1000);
  if (s < 60.0) return fmt::format("{:.2f} s", s);
  int total = static_cast<int>(s);
  if (total < 3600) return fmt::format("{} m {:02} s", total / 60, total % 60);
  return fmt::format("{} h {:02} m", total / 3600, (total % 3600) / 60);
}

std::string Counted(int64_t count, std::string_view noun) {
  return fmt::format("{} {}{}", count, noun, count == 1 ? "" : "s");
}

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

std::optional<size_t> InvalidUtf8At(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    // Continuation bytes after the lead, and the range of the first (RFC 3629's table).
    size_t more = 0;
    unsigned char low = 0x80, high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      more = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      more = 2;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      more = 3;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // beyond U+10FFFF
    } else {
      return i;
    }
    if (i + more >= text.size()) return i;
    for (size_t k = 1; k <= more; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xBF)) return i;
    }
    i += more + 1;
  }
  return std::nullopt;
}

bool IsNumericAddress(const std::string& host) {
  unsigned char address[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

const std::string& HostName() {
  static const std::string name = [] {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return std::string("localhost");
    return std::string(buf);
  }();
  return name;
}

const std::string& UserName() {
  static const std::string name = [] {
    struct passwd pw;
    struct passwd* result = nullptr;
    char buf[1024];
    if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &result) == 0 && result != nullptr) {
      return std::string(result->pw_name);
    }
    return std::to_string(geteuid());
  }();
  return name;
}

// Plain POSIX reads: std::ifstream opens a directory without complaint and then reads nothing,
// and loses errno on the way.
namespace {

// Reads `fd` to its end and closes it; `name` is what errors call it.
Result<std::string> ReadToEnd(int fd, const std::string& name, size_t max_bytes,
                              bool regular_only) {
  std::string out;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      close(fd);
      return InvalidArgument(fmt::format("{}: is a directory, not a file", name));
    }
    if (regular_only && !S_ISREG(st.st_mode)) {
      close(fd);
      return InvalidArgument(fmt::format("{}: is not a regular file", name));
    }
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
      out.reserve(std::min(static_cast<size_t>(st.st_size), max_bytes));
    }
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      if (out.size() > max_bytes) {
        close(fd);
        return Status(Code::kResourceExhausted,
                      fmt::format("{}: larger than {} bytes", name, max_bytes));
      }
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN && !regular_only) {
      // A non-blocking descriptor (standard input inherited so): wait for more (review).
      pollfd ready{fd, POLLIN, 0};
      (void)poll(&ready, 1, -1);
    } else if (errno != EINTR) {
      int err = errno;
      close(fd);
      return InvalidArgument(fmt::format("{}: {}", name, std::strerror(err)));
    }
  }
  close(fd);
  return out;
}

}  // namespace

Result<std::string> ReadFile(const std::string& path, size_t max_bytes, bool regular_only) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFound(fmt::format("{}: no such file", path));
    return InvalidArgument(fmt::format("{}: {}", path, std::strerror(err)));
  }
  return ReadToEnd(fd, path, max_bytes, regular_only);
}

Result<std::string> ReadStandardInput(size_t max_bytes) {
  int fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);  // closed after; fd 0 stays open
  if (fd < 0) {
    return InvalidArgument(fmt::format("standard input: {}", std::strerror(errno)));
  }
  return ReadToEnd(fd, "standard input", max_bytes, false);
}

std::string LastLine(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  const size_t nl = text.rfind('\n');
  return std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
}

std::string AsChildReason(std::string reason) {
  if (reason.starts_with("fanout: ")) reason.erase(0, 8);
  return reason;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned int i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

// Read with plain open/read into a buffer: an agent does it for every step started, and the
// streams it used to go through cost as much as one of the run's database writes.
std::optional<ProcStat> ReadProcStat(int64_t pid) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%lld/stat", static_cast<long long>(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return std::nullopt;
  std::string_view stat(buf, static_cast<size_t>(n));
  // "pid (comm) state ppid pgrp ...": the name may hold spaces, parentheses and line breaks.
  size_t pos = stat.rfind(')');
  if (pos == std::string_view::npos) return std::nullopt;
  pos += 2;  // field 3 starts after ") "
  ProcStat out;
  for (int field = 3; field <= 22; ++field) {
    if (field > 3) {
      pos = stat.find(' ', pos);
      if (pos == std::string_view::npos) return std::nullopt;
      ++pos;
    }
    int64_t* into = field == 4    ? &out.ppid
                    : field == 5  ? &out.pgrp
                    : field == 22 ? &out.start
                                  : nullptr;
    if (into == nullptr) continue;
    auto [end, ec] = std::from_chars(stat.data() + pos, stat.data() + stat.size(), *into);
    if (ec != std::errc()) return std::nullopt;
  }
  return out;
}

int64_t ProcessStartTime(int64_t pid) {
  std::optional<ProcStat> stat = ReadProcStat(pid);
  return stat ? stat->start : 0;
}

std::string ProcessIdentity(int64_t pid) {
  static const std::string boot_id = [] {
    auto text = ReadFile("/proc/sys/kernel/random/boot_id");
    std::string id = text.ok() ? *text : "";
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    return id;
  }();
  int64_t start = pid > 0 ? ProcessStartTime(pid) : 0;
  return start > 0 ? boot_id + ":" + std::to_string(start) : "";
}

std::string EscapeControls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c == 0xc2 && i + 1 < text.size() &&
               static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(text[++i]));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string IndentFurtherLines(std::string_view text, std::string_view indent) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    out += c;
    if (c == '\n') out += indent;
  }
  return out;
}

Status WriteFileAtomically(const std::string& given, std::string_view content,
                           std::optional<mode_t> mode) {
  // A symbolic link is followed, and only a regular file is replaced: the rename had put a
  // file in the place of the link, and of a device (QA, as root: `--html /dev/full`). The
  // kernel follows links (open with O_PATH), so that its rules for links in sticky folders
  // such as /tmp hold, and only a link of one's own user is followed: one that a proxy's user
  // left in a folder of its own must not lead the agent, as root, to write elsewhere.
  std::string path = given;
  struct stat st {};
  const bool link = lstat(given.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
  if (link && st.st_uid != geteuid()) {
    return Internal(fmt::format("cannot write {}: it is a symbolic link of another user (uid "
                                "{}), not followed",
                                given, st.st_uid));
  }
  if (const int fd = open(given.c_str(), O_PATH | O_CLOEXEC); fd >= 0) {
    const bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (regular && link) {
      std::error_code ec;
      path = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec).string();
      if (ec) path = given;
    }
    close(fd);
    if (!regular) {
      const char* what = S_ISDIR(st.st_mode)    ? "a folder"
                         : S_ISFIFO(st.st_mode) ? "a pipe"
                                                : "a device or socket";
      return Internal(fmt::format("cannot write {}: it is not a regular file but {}; give a "
                                  "file's name", given, what));
    }
  } else if (link) {
    return Internal(fmt::format("cannot write {}: it is a symbolic link that cannot be followed "
                                "({})", given, std::strerror(errno)));
  }
  // A name of its own: two threads writing the same file must not share (and rename) one.
  static std::atomic<uint64_t> writes{0};
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, getpid(), writes.fetch_add(1));
  int error = 0;
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  std::FILE* out = fd < 0 ? nullptr : fdopen(fd, "wb");
  if (out == nullptr) {
    error = errno;
    if (fd >= 0) close(fd);
  } else {
    // Before the content: a secret is never readable by others, not even for a moment.
    if (mode && fchmod(fileno(out), *mode) != 0) error = errno;
    if (error == 0 && std::fwrite(content.data(), 1, content.size(), out) != content.size()) error = errno;
    if (std::fclose(out) != 0 && error == 0) error = errno;
    if (error == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) error = errno;
  }
  if (error == 0) return Status::Ok();
  std::remove(tmp.c_str());
  return Internal(fmt::format("cannot write {}: {}", given, std::strerror(error)));
}

std::optional<bool> YamlBool(std::string_view scalar) {
  if (scalar == "true" || scalar == "True" || scalar == "TRUE") return true;
  if (scalar == "false" || scalar == "False" || scalar == "FALSE") return false;
  return std::nullopt;
}

std::string YamlTabHint(std::string_view text, int line) {
  // The line nearest the error (up to the one after it, where yaml-cpp may point) whose
  // indentation holds a tab; lines of only whitespace do not count.
  int number = 1, nearest = 0;
  for (size_t start = 0; start < text.size() && number <= line + 1; ++number) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view row = text.substr(start, end - start);
    size_t indent = row.find_first_not_of(" \t\r");
    if (indent != std::string_view::npos && row.substr(0, indent).find('\t') != std::string_view::npos) {
      nearest = number;
    }
    start = end + 1;
  }
  if (nearest == 0) return "";
  return fmt::format("; line {} is indented with a tab: YAML indents with spaces only", nearest);
}

std::pair<int, int> LineAndColumnAt(std::string_view text, size_t at) {
  size_t newline = at == 0 ? std::string_view::npos : text.rfind('\n', at - 1);
  size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
  const auto end = text.begin() + static_cast<std::ptrdiff_t>(at);
  int line = 1 + static_cast<int>(std::count(text.begin(), end, '\n'));
  return {line, static_cast<int>(at - line_start) + 1};
}

std::optional<std::pair<int, int>> FindNulByte(std::string_view text) {
  size_t at = text.find('\0');
  if (at == std::string_view::npos) return std::nullopt;
  return LineAndColumnAt(text, at);
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return AsciiLower(std::string(a)) == AsciiLower(std::string(b));
}

std::string AsciiLower(std::string text) {
  for (char& c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return text;
}

}  // namespace fanout
