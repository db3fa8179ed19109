// ParseAgentUrl and RedactAgentUrl: see agent_url.h.
#include "common/agent_url.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace fanout {

std::string RedactAgentUrl(std::string_view url) {
  size_t scheme = url.find("://");
  size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
  size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  std::string_view userinfo = url.substr(start, at - start);
  size_t colon = userinfo.find(':');
  std::string out(url.substr(0, start));
  out += colon == std::string_view::npos ? "***" : std::string(userinfo.substr(0, colon)) + ":***";
  out += url.substr(at);
  return out;
}

Result<AgentUrl> ParseAgentUrl(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument(fmt::format(
        "agent URL '{}' {}; write http://HOST:PORT or https://HOST:PORT (IPv6 as "
        "http://[::1]:7420)",
        RedactAgentUrl(url), why));
  };
  AgentUrl out;
  std::string_view rest = url;
  // Schemes are case-insensitive (RFC 3986 §3.1): HTTP:// is http://.
  auto has_scheme = [&](std::string_view scheme) {
    return rest.size() >= scheme.size() &&
           std::equal(scheme.begin(), scheme.end(), rest.begin(), [](char a, char b) {
             return a == std::tolower(static_cast<unsigned char>(b));
           });
  };
  if (has_scheme("http://")) {
    rest.remove_prefix(7);
  } else if (has_scheme("https://")) {
    out.https = true;
    rest.remove_prefix(8);
  } else {
    return bad("does not start with http:// or https://");
  }
  // A list ("http://a:7420,http://b:7420") in one value: several agents are several --agent.
  if (rest.find_first_of(", \t") != std::string_view::npos) {
    return bad("holds a comma or a space: it names one agent (several agents are several "
               "--agent options, or an agent-pool's list)");
  }
  if (rest.find('@') != std::string_view::npos) {
    return bad("has user credentials (agents take a bearer token instead)");
  }
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("has a path");
  std::string_view port_text;
  if (rest.starts_with('[')) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed '['");
    out.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad("has text after the IPv6 address");
      port_text = rest.substr(1);
    }
  } else {
    size_t colon = rest.find(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
  }
  if (out.host.empty()) return bad("has no host");
  if (port_text.empty()) {
    out.port = out.https ? 443 : 80;
  } else {
    out.port_given = true;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(),
                                     out.port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || out.port <= 0 ||
        out.port > 65535) {
      return bad("has a bad port");
    }
  }
  return out;
}

}  // namespace fanout
