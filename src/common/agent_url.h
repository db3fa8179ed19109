// Agent URLs (http://HOST[:PORT][/] or https://...), as agent connections, `--agent` and
// `fanout deploy` take them: one parser, so that `fanout validate` refuses what a run would.
#pragma once

#include <string>
#include <string_view>

#include "fanout/status.h"

namespace fanout {

struct AgentUrl {
  bool https = false;
  std::string host;  // IPv6 without brackets
  int port = 0;  // 80 or 443 when the URL gives none
  bool port_given = false;
};

// InvalidArgument saying what is wrong (no http:// or https://, a path, user credentials, a bad
// port) and how to write it; the message shows the URL with any credentials masked.
Result<AgentUrl> ParseAgentUrl(std::string_view url);

// `url` with the credentials of a user-info part masked (http://user:***@host), for messages:
// a password written into an agent URL had been shown and kept in the catalog's events.
std::string RedactAgentUrl(std::string_view url);

}  // namespace fanout
