// ISO 8601 UTC formatting and parsing of DateTime values, shared by values, logs and the catalog.
#include <cctype>
#include <cstdio>
#include <ctime>

#include "fanout/value.h"

namespace fanout {

std::string FormatDateTime(DateTime t) {
  using namespace std::chrono;
  auto secs = floor<seconds>(t);
  auto micros = (t - secs).count();
  std::time_t tt = secs.time_since_epoch().count();
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(micros));
  return buf;
}

DateTime Now() {
  return std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
}

namespace {

// The number written with exactly `n` digits at `pos` of `s`, or -1 (sscanf's %2d would also
// take "-1" or "+1").
int FixedDigits(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return -1;
  int value = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return -1;
    value = value * 10 + (s[i] - '0');
  }
  return value;
}

}  // namespace

// Accepts "YYYY-MM-DD", "YYYY-MM-DD[T ]hh:mm[:ss[.ffffff]]" with an optional "Z" or "+hh:mm".
// Times without an offset are UTC. A leap second (:60) is the next minute's first, as in
// PostgreSQL.
Result<DateTime> ParseDateTime(std::string_view text) {
  using namespace std::chrono;
  std::string s(text);
  int y = FixedDigits(s, 0, 4), mo = FixedDigits(s, 5, 2), d = FixedDigits(s, 8, 2);
  if (y < 0 || mo < 0 || d < 0 || s[4] != '-' || s[7] != '-') {
    return InvalidArgument("'" + s + "' is not a date; use ISO 8601 such as 2026-11-26T03:00:00Z");
  }
  int h = 0, mi = 0, sec = 0;
  size_t pos = 10;
  long long micros = 0;
  int offset_minutes = 0;
  if (pos < s.size() && (s[pos] == 'T' || s[pos] == ' ')) {
    h = FixedDigits(s, pos + 1, 2);
    mi = FixedDigits(s, pos + 4, 2);
    if (h < 0 || mi < 0 || s[pos + 3] != ':') {
      return InvalidArgument("'" + s + "' has a bad time; use hh:mm[:ss[.ffffff]]");
    }
    pos += 6;
    if (pos < s.size() && s[pos] == ':') {
      sec = FixedDigits(s, pos + 1, 2);
      if (sec < 0) return InvalidArgument("'" + s + "' has bad seconds");
      pos += 3;
      if (pos < s.size() && s[pos] == '.') {
        ++pos;
        int digits = 0;
        while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
          if (digits < 6) micros = micros * 10 + (s[pos] - '0');
          ++digits;
          ++pos;
        }
        for (; digits < 6; ++digits) micros *= 10;
      }
    }
    if (pos < s.size() && s[pos] == 'Z') {
      ++pos;
    } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
      // +hh:mm, +hhmm or +hh (PostgreSQL prints timestamptz as "...05.5+00").
      std::string_view rest = std::string_view(s).substr(pos + 1);
      auto two_digits = [](std::string_view t) {
        return t.size() >= 2 && std::isdigit(static_cast<unsigned char>(t[0])) &&
               std::isdigit(static_cast<unsigned char>(t[1]));
      };
      if (!two_digits(rest)) return InvalidArgument("'" + s + "' has a bad UTC offset; use +hh:mm");
      int oh = (rest[0] - '0') * 10 + (rest[1] - '0'), om = 0;
      size_t used = 2;
      std::string_view minutes_part = rest.substr(2);
      if (!minutes_part.empty() && minutes_part[0] == ':') minutes_part.remove_prefix(1), ++used;
      if (two_digits(minutes_part)) {
        om = (minutes_part[0] - '0') * 10 + (minutes_part[1] - '0');
        used += 2;
      } else if (used == 3) {
        return InvalidArgument("'" + s + "' has a bad UTC offset; use +hh:mm");
      }
      if (oh > 23 || om > 59) return InvalidArgument("'" + s + "' has a bad UTC offset; use +hh:mm");
      offset_minutes = (s[pos] == '-' ? -1 : 1) * (oh * 60 + om);
      pos += 1 + used;
    }
  }
  if (pos != s.size()) return InvalidArgument("'" + s + "' has trailing text after the date");
  year_month_day ymd{year(y), month(static_cast<unsigned>(mo)), day(static_cast<unsigned>(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) {
    return InvalidArgument("'" + s + "' is not a valid calendar date and time");
  }
  auto tp = sys_days(ymd) + hours(h) + minutes(mi) + seconds(sec) + microseconds(micros) -
            minutes(offset_minutes);
  return DateTime(time_point_cast<microseconds>(tp));
}

}  // namespace fanout
