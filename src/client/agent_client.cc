// AgentClient: the agent's HTTP/JSON API (docs/agent-api.md) over cpp-httplib, with every
// network failure, HTTP error and malformed answer turned into a Status that names the agent.
#include "client/agent_client.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include <fmt/format.h>
#include <httplib.h>
#include <openssl/x509_vfy.h>

#include "client/tls_files.h"
#include "common/agent_url.h"
#include "common/util.h"

namespace fanout::client {
namespace {

using nlohmann::json;

// A request's JSON body. Its callers check the params are UTF-8 (CheckParamUtf8: a task's
// ParamToJson, `fanout job start`); anything else that is not (a secret, say) goes with U+FFFD
// in place rather than throw.
std::string BodyText(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "";
}

Code CodeForHttpStatus(int status) {
  switch (status) {
    case 400: return Code::kInvalidArgument;
    case 401: return Code::kUnauthenticated;
    case 403: return Code::kPermissionDenied;
    case 404: return Code::kNotFound;
    case 409: return Code::kFailedPrecondition;
    case 413: return Code::kResourceExhausted;
    case 502:
    case 503:
    case 504: return Code::kUnavailable;
  }
  return Code::kInternal;
}

// A request that got no HTTP answer at all; `answered_before` when this client had answers
// from the agent (then a TLS mismatch is not why).
// `verify_result`: OpenSSL's verdict on the agent's certificate (X509_V_OK when none).
fanout::Status TransportError(httplib::Error error, const std::string& where,
                              const AgentEndpoint& endpoint, bool answered_before,
                              long verify_result) {
  const std::string what = httplib::to_string(error);
  switch (error) {
    case httplib::Error::Connection: {
      // QA: `url: http://127.0.0.1` tried port 80 and did not say so.
      auto url = ParseAgentUrl(endpoint.url);
      std::string no_port =
          url.ok() && !url->port_given
              ? fmt::format(" (the URL gives no port, so port {} was tried; an agent listens on "
                            "the port its `listen` gives: http://HOST:PORT)",
                            url->port)
              : "";
      return Unavailable(fmt::format(
          "{}: cannot connect (refused or unreachable){}; is `fanout agent` running and "
          "listening at that address?",
          where, no_port));
    }
    case httplib::Error::ConnectionTimeout:
      return Unavailable(fmt::format("{}: no connection within {} ms; is the agent's host up and "
                                     "its port reachable?",
                                     where, endpoint.connect_timeout.count()));
    case httplib::Error::Read:
    case httplib::Error::Write: {
      std::string message = fmt::format(
          "{}: the connection broke or the agent did not answer in time, while {}", where,
          error == httplib::Error::Read ? "reading its answer" : "sending the request");
      // Both TLS mismatches below look like a dropped connection from this side, but cannot
      // be why once the agent has answered.
      if (answered_before) {
        message += "; it answered before: it went away or stopped answering";
      } else if (auto url = ParseAgentUrl(endpoint.url); url.ok() && !url->https) {
        message += "; if the agent serves https, use https://";
      } else if (endpoint.cert_file.empty()) {
        message += "; if the agent requires client certificates, give a certificate and key";
      } else {
        message += "; if the agent checks client certificates, it may have refused this one: is "
                   "it signed by the CA its tls.client_ca names?";
      }
      return Unavailable(std::move(message));
    }
    case httplib::Error::SSLConnection:
      return Unavailable(fmt::format(
          "{}: TLS handshake failed; check that the agent serves https and that the "
          "client certificate and key are the ones its tls.client_ca trusts",
          where));
    case httplib::Error::SSLServerVerification: {
      std::string why = verify_result == X509_V_OK ? what : X509_verify_cert_error_string(verify_result);
      switch (verify_result) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
          return Unavailable(fmt::format(
              "{}: the agent's certificate is not for this address ({}); use the name or address "
              "the certificate was issued for in the URL, or add this one to its subjectAltName",
              where, why));
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
          return Unavailable(fmt::format(
              "{}: the agent's certificate is not valid now ({}); renew the agent's tls.cert",
              where, why));
      }
      return Unavailable(fmt::format(
          "{}: the agent's certificate is not trusted ({}); pass the CA that signed it", where,
          why));
    }
    case httplib::Error::SSLLoadingCerts:
      return InvalidArgument(fmt::format(
          "{}: cannot load the CA certificate '{}' ({})", where, endpoint.ca_file, what));
    default:
      return Unavailable(fmt::format("{}: request failed ({})", where, what));
  }
}

// Wraps the field reads of a decoded answer: a field of the wrong type is the agent's bug or
// a version mismatch, reported as Internal rather than thrown.
template <typename T, typename F>
Result<T> Decode(const std::string& where, const json& body, F&& decode) {
  if (!body.is_object()) {
    return Internal(fmt::format("{}: expected a JSON object from the agent, got {}", where,
                                body.dump().substr(0, 200)));
  }
  try {
    return decode(body);
  } catch (const json::exception& e) {
    return Internal(fmt::format("{}: unexpected answer from the agent ({}): {}", where, e.what(),
                                body.dump().substr(0, 200)));
  }
}

// Reads a string field that may be absent or null.
std::string StringField(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return "";
  return it->get<std::string>();
}

PackageInfo PackageFromJson(const json& j) {
  PackageInfo info;
  info.name = StringField(j, "name");
  info.version = j.value("version", 0);
  info.sha256 = StringField(j, "sha256");
  info.size = j.value("size", int64_t{0});
  info.deployed_at = StringField(j, "deployed_at");
  info.content = StringField(j, "content");
  info.changed = j.value("changed", false);
  return info;
}

}  // namespace

bool IsFinalRunStatus(std::string_view status) {
  return status == "succeeded" || status == "failed" || status == "canceled" ||
         status == "abandoned";
}

std::string ForbiddenHint(const std::string& url) {
  return fmt::format("the agent at {} refuses requests that look like a web page's: without a "
                     "token it answers only requests sent to 127.0.0.1, ::1 or localhost, so use "
                     "one of those in the URL (or give the agent a token_file)", url);
}

bool AnsweredUnavailable(const fanout::Status& status) {
  // As Call writes an answer's error: "WHERE: HTTP 503 ERROR: DETAIL".
  return status.code() == Code::kUnavailable &&
         status.message().find(": HTTP 503") != std::string::npos;
}

namespace {

// A token as a file or variable holds it: without the white space around it (a final line break).
std::string TrimmedToken(std::string token) {
  auto is_space = [](unsigned char c) { return std::isspace(c) != 0; };
  token.erase(token.begin(), std::find_if_not(token.begin(), token.end(), is_space));
  token.erase(std::find_if_not(token.rbegin(), token.rend(), is_space).base(), token.end());
  return token;
}

}  // namespace

Result<std::string> ReadTokenFile(const std::string& path) {
  // A regular file only (a FIFO would wait for a writer, a device may never end), and room for
  // white space around the longest token.
  auto read = ReadFile(path, kMaxTokenLength + 1024, /*regular_only=*/true);
  if (!read.ok() && read.status().code() == Code::kResourceExhausted) {
    return InvalidArgument(fmt::format("the token file '{}' holds more than {} bytes; a token is "
                                       "at most {} characters",
                                       path, kMaxTokenLength + 1024, kMaxTokenLength));
  }
  if (!read.ok()) {
    return Status(read.status().code(),
                  fmt::format("cannot read the token file: {}", read.status().message()));
  }
  std::string token = TrimmedToken(std::move(*read));
  if (token.empty()) return InvalidArgument(fmt::format("the token file '{}' is empty", path));
  RETURN_IF_ERROR(CheckToken(token, fmt::format("the token file '{}'", path)));
  return token;
}

// A token goes into an HTTP header as it is: a line break in it would end the header and start
// another (a token file with a comment line sent that line as a header).
Status CheckToken(std::string_view token, std::string_view source) {
  auto bad = std::find_if(token.begin(), token.end(),
                          [](char c) { return c <= ' ' || c > '~'; });
  if (bad != token.end()) {
    return InvalidArgument(fmt::format(
        "{} holds {} at character {}; a token is one word of printable ASCII: the file (or "
        "variable) must hold the token alone",
        source,
        *bad == '\n' || *bad == '\r' ? "more than one line"
        : token.substr(static_cast<size_t>(bad - token.begin())).starts_with("\xEF\xBB\xBF")
            ? "a byte order mark (saved as \"UTF-8 with BOM\": save it as plain text)"
        : static_cast<unsigned char>(*bad) > 0x7f ? "a character that is not ASCII"
                                                   : "a space or control character",
        bad - token.begin() + 1));
  }
  if (token.size() > kMaxTokenLength) {
    return InvalidArgument(fmt::format(
        "{} holds {} characters; a token is at most {} (it goes into an HTTP header, which the "
        "agent takes up to 8 KiB long)",
        source, token.size(), kMaxTokenLength));
  }
  return Status::Ok();
}

std::string TokenSource(const std::string& token_file, const std::string& token_env) {
  return token_file.empty() ? "$" + token_env : "token file " + token_file;
}

Result<std::string> ResolveToken(const std::string& token_file, const std::string& token_env) {
  if (!token_file.empty()) return ReadTokenFile(token_file);
  const char* value = token_env.empty() ? nullptr : std::getenv(token_env.c_str());
  if (value == nullptr) return std::string();
  std::string token = TrimmedToken(value);
  RETURN_IF_ERROR(CheckToken(token, "$" + token_env));
  return token;
}

AgentClient::AgentClient(AgentEndpoint endpoint) : endpoint_(std::move(endpoint)) {
  base_url_ = RedactAgentUrl(endpoint_.url);
  while (base_url_.ends_with('/')) base_url_.pop_back();
  auto parsed = ParseAgentUrl(endpoint_.url);
  if (!parsed.ok()) {
    endpoint_status_ = parsed.status();
    return;
  }
  const bool has_tls_files =
      !endpoint_.ca_file.empty() || !endpoint_.cert_file.empty() || !endpoint_.key_file.empty();
  if (!parsed->https && has_tls_files) {
    endpoint_status_ = InvalidArgument(fmt::format(
        "agent {}: a CA, client certificate or key was given but the URL is http://; use "
        "https:// for a TLS agent",
        base_url_));
    return;
  }
  if (endpoint_.cert_file.empty() != endpoint_.key_file.empty()) {
    endpoint_status_ = InvalidArgument(fmt::format(
        "agent {}: a client certificate needs both a certificate and a key file", base_url_));
    return;
  }
  for (const std::string* file : {&endpoint_.ca_file, &endpoint_.cert_file, &endpoint_.key_file}) {
    if (!file->empty() && access(file->c_str(), R_OK) != 0) {
      endpoint_status_ = InvalidArgument(
          fmt::format("agent {}: cannot read the TLS file '{}'", base_url_, *file));
      return;
    }
  }
  // An expired client certificate is refused by the agent with an alert httplib does not
  // report: the request would only say that the connection broke.
  if (!endpoint_.cert_file.empty()) {
    auto cert = ReadCertificate("the client certificate", endpoint_.cert_file);
    fanout::Status usable = cert.status();
    if (usable.ok()) {
      usable = CheckPrivateKey("the client key", endpoint_.key_file, cert->get(),
                               "the client certificate " + endpoint_.cert_file);
    }
    if (!usable.ok()) {
      endpoint_status_ = usable.WithContext("agent " + base_url_);
      return;
    }
  }

  if (parsed->https) {
    auto ssl = std::make_unique<httplib::SSLClient>(parsed->host, parsed->port,
                                                    endpoint_.cert_file, endpoint_.key_file);
    // A certificate and key that do not load (a key that is not the certificate's, or has a
    // passphrase) leave the client without its SSL context.
    if (!ssl->is_valid()) {
      endpoint_status_ = InvalidArgument(fmt::format(
          "agent {}: cannot load the client certificate '{}' and key '{}' (is the key the "
          "certificate's, and without a passphrase?)",
          base_url_, endpoint_.cert_file, endpoint_.key_file));
      return;
    }
    // Verification stays on: against the given CA, else the system's trusted CAs.
    if (!endpoint_.ca_file.empty()) ssl->set_ca_cert_path(endpoint_.ca_file);
    ssl->enable_server_certificate_verification(true);
    // OpenSSL checks the certificate's name as RFC 6125 says: an address only against its IP
    // subjectAltNames. httplib 0.11's own check also takes the subject's CN, so a certificate
    // issued for another name but with the address as its CN would pass.
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ssl->ssl_context());
    if (IsNumericAddress(parsed->host)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, parsed->host.c_str());
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      X509_VERIFY_PARAM_set1_host(param, parsed->host.c_str(), 0);
    }
    https_ = ssl.get();
    http_ = std::move(ssl);
  } else {
    http_ = std::make_unique<httplib::ClientImpl>(parsed->host, parsed->port);
  }
  http_->set_keep_alive(true);
  http_->set_tcp_nodelay(true);  // small requests: do not wait for Nagle
  http_->set_connection_timeout(endpoint_.connect_timeout);
  http_->set_read_timeout(endpoint_.read_timeout);
  http_->set_write_timeout(endpoint_.read_timeout);
  if (!endpoint_.token.empty()) http_->set_bearer_token_auth(endpoint_.token);
}

AgentClient::~AgentClient() = default;

void AgentClient::SetToken(const std::string& token) {
  endpoint_.token = token;
  if (http_) http_->set_bearer_token_auth(token);
}

fanout::Status AgentClient::CheckName(const char* what, const std::string& name) const {
  if (IsValidName(name)) return fanout::Status::Ok();
  return InvalidArgument(fmt::format(
      "agent {}: '{}' is not a valid {}; names and ids use letters, digits, '_', '.' and '-' "
      "(1 to 128 characters)",
      base_url_, name, what));
}

Result<AgentClient::Response> AgentClient::Call(const char* method, const std::string& path,
                                                const std::string& body,
                                                const std::string& content_type) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  may_have_arrived_ = true;
  const std::string where = fmt::format("{} {}{}", method, base_url_, path);
  const httplib::Headers headers = {{"Accept", "application/json"}};
  const std::string_view m = method;
  httplib::Result res =
      m == "GET"      ? http_->Get(path, headers)
      : m == "PUT"    ? http_->Put(path, headers, body, content_type)
      : m == "POST"   ? (content_type.empty() ? http_->Post(path, headers)
                                              : http_->Post(path, headers, body, content_type))
      : m == "DELETE" ? http_->Delete(path, headers)
                      : httplib::Result(nullptr, httplib::Error::Unknown);
  if (!res) return TransportFailure(res.error(), where);
  return Answer(where, res->status, res->body);
}

Result<AgentClient::Response> AgentClient::PostForLines(
    const std::string& path, const std::string& body,
    const std::function<bool(json)>& on_line) {
  if (!endpoint_status_.ok()) return endpoint_status_;
  may_have_arrived_ = true;
  const std::string where = fmt::format("POST {}{}", base_url_, path);
  httplib::Request request;
  request.method = "POST";
  request.path = path;
  request.headers = {{"Accept", "application/x-ndjson, application/json"},
                     {"Content-Type", "application/json"}};
  request.body = body;
  bool streamed = false;  // a success in lines, not one JSON answer (an error, an older agent)
  request.response_handler = [&](const httplib::Response& head) {
    answered_ = true;  // a connection that breaks from here on is no TLS or address mistake
    streamed = head.status >= 200 && head.status < 300 &&
               head.get_header_value("Content-Type").starts_with("application/x-ndjson");
    return true;
  };
  std::string text;  // an answer in one piece, or the part of a line not yet whole
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    text.append(data, size);
    if (!streamed) return true;
    for (size_t end; (end = text.find('\n')) != std::string::npos; text.erase(0, end + 1)) {
      json line;
      try {
        line = json::parse(std::string_view(text).substr(0, end));
      } catch (const json::exception&) {
        return false;  // not the agent's answer: a read failure below
      }
      if (!on_line(std::move(line))) return false;
    }
    return true;
  };
  httplib::Result res = http_->send(request);
  if (!res) return TransportFailure(res.error(), where);
  if (streamed) return Response{res->status, json()};
  return Answer(where, res->status, text);
}

fanout::Status AgentClient::TransportFailure(httplib::Error error, const std::string& where) {
  // Refused, or stopped before the TLS handshake ended: the request itself was never sent.
  may_have_arrived_ =
      error != httplib::Error::Connection && error != httplib::Error::ConnectionTimeout &&
      error != httplib::Error::SSLConnection && error != httplib::Error::SSLServerVerification &&
      error != httplib::Error::SSLLoadingCerts;
  return TransportError(error, where, endpoint_, answered_,
                        https_ != nullptr ? https_->get_openssl_verify_result() : X509_V_OK);
}

Result<AgentClient::Response> AgentClient::Answer(const std::string& where, int status,
                                                  const std::string& text) {
  answered_ = true;
  Response out;
  out.status = status;
  const bool success = out.status >= 200 && out.status < 300;
  if (!text.empty()) {
    try {
      out.body = json::parse(text);
    } catch (const json::exception&) {
      // An agent answers JSON, errors included. A success or a 404 that is not JSON comes from
      // another server (the wrong port); any other status from something in front of the agent
      // (a proxy's error page), which keeps its meaning.
      std::string start = text.substr(0, 120);
      std::replace_if(start.begin(), start.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
      if (success || out.status == 404) {
        return Unavailable(fmt::format("{}: HTTP {} from a server that is not a fanout agent (its "
                                       "answer is not JSON: {}); check the URL's host and port",
                                       where, out.status, start));
      }
      out.body = json{{"detail", start}};
    }
  }
  if (success) return out;

  std::string error, detail;
  if (out.body.is_object()) {
    if (auto it = out.body.find("error"); it != out.body.end() && it->is_string()) error = *it;
    if (auto it = out.body.find("detail"); it != out.body.end() && it->is_string()) detail = *it;
  }
  if (error.empty()) error = ReasonPhrase(out.status);
  std::string message = fmt::format("{}: HTTP {}", where, out.status);
  if (!error.empty()) message += " " + error;
  if (!detail.empty()) message += ": " + detail;
  if (out.status == 401) {
    const std::string sent =
        endpoint_.token_source.empty() ? "the token sent" : "the token from " + endpoint_.token_source;
    message += !endpoint_.token.empty()
                   ? " (" + sent + " was refused; check it matches the agent's token_file)"
               : endpoint_.token_source.starts_with('$')
                   ? " (no token was sent: " + endpoint_.token_source + " is unset or empty; set "
                     "it to the agent's token, or give a token file)"
                   : " (no token was sent; give the agent's token)";
  }
  return fanout::Status(CodeForHttpStatus(out.status), std::move(message));
}

Result<json> AgentClient::Health() {
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/health"));
  return std::move(r.body);
}

Result<json> AgentClient::Status() {
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/status"));
  return std::move(r.body);
}

Result<PackageInfo> AgentClient::PutPackage(const std::string& name, const std::string& yaml) {
  RETURN_IF_ERROR(CheckName("package name", name));
  const std::string path = "/v1/packages/" + name;
  ASSIGN_OR_RETURN(Response r, Call("PUT", path, yaml, "application/yaml"));
  return Decode<PackageInfo>("PUT " + base_url_ + path, r.body, PackageFromJson);
}

Result<PackageInfo> AgentClient::GetPackage(const std::string& name) {
  RETURN_IF_ERROR(CheckName("package name", name));
  const std::string path = "/v1/packages/" + name;
  ASSIGN_OR_RETURN(Response r, Call("GET", path));
  return Decode<PackageInfo>("GET " + base_url_ + path, r.body, PackageFromJson);
}

Result<std::vector<PackageInfo>> AgentClient::ListPackages() {
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/packages"));
  return Decode<std::vector<PackageInfo>>(
      "GET " + base_url_ + "/v1/packages", r.body, [](const json& body) {
        std::vector<PackageInfo> out;
        for (const json& p : body.at("packages")) out.push_back(PackageFromJson(p));
        return out;
      });
}

fanout::Status AgentClient::DeletePackage(const std::string& name) {
  RETURN_IF_ERROR(CheckName("package name", name));
  return Call("DELETE", "/v1/packages/" + name).status();
}

Result<JobPutResult> AgentClient::PutJob(const std::string& name, const std::string& body,
                                         const std::string& content_type) {
  RETURN_IF_ERROR(CheckName("job name", name));
  const std::string path = "/v1/jobs/" + name;
  ASSIGN_OR_RETURN(Response r, Call("PUT", path, body, content_type));
  const bool created = r.status == 201;
  return Decode<JobPutResult>("PUT " + base_url_ + path, r.body, [&](const json& j) {
    JobPutResult out;
    out.name = StringField(j, "name");
    out.changed = j.value("changed", created);
    out.created = created;
    for (const json& warning : j.value("warnings", json::array())) {
      if (warning.is_string()) out.warnings.push_back(warning.get<std::string>());
    }
    return out;
  });
}

Result<json> AgentClient::GetJob(const std::string& name) {
  RETURN_IF_ERROR(CheckName("job name", name));
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/jobs/" + name));
  return std::move(r.body);
}

Result<json> AgentClient::ListJobs() {
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/jobs"));
  return std::move(r.body);
}

fanout::Status AgentClient::DeleteJob(const std::string& name) {
  RETURN_IF_ERROR(CheckName("job name", name));
  return Call("DELETE", "/v1/jobs/" + name).status();
}

Result<StartResult> AgentClient::StartJob(
    const std::string& name, const StartRequest& request,
    std::optional<std::chrono::seconds> wait,
    const std::function<void(const StartResult&)>& accepted) {
  RETURN_IF_ERROR(CheckName("job name", name));
  json body = json::object();
  if (!request.params.empty()) body["params"] = request.params;
  if (!request.secrets.empty()) body["secrets"] = request.secrets;
  if (!request.parent_execution_id.empty()) {
    body["parent_execution_id"] = request.parent_execution_id;
  }
  if (!request.start_step.empty()) body["start_step"] = request.start_step;
  if (!request.idempotency_key.empty()) body["idempotency_key"] = request.idempotency_key;
  std::string path = "/v1/jobs/" + name + "/start";
  std::string query;  // the start's options, not the run's
  auto add_query = [&](std::string_view key, int64_t value) {
    query += fmt::format("{}{}={}", query.empty() ? "?" : "&", key, value);
  };
  if (request.orphan_timeout.count() > 0) {
    add_query("orphan_timeout_ms", request.orphan_timeout.count());
  }
  auto decode = [&](const json& answer) {
    return Decode<StartResult>("POST " + base_url_ + path, answer, [](const json& j) {
      StartResult out;
      out.run_id = j.at("run_id").get<std::string>();
      out.status = StringField(j, "status");
      out.existing = j.value("existing", false);
      return out;
    });
  };
  // A start answered in one piece (no wait, or an agent older than the wait).
  auto whole = [&](const json& answer) -> Result<StartResult> {
    ASSIGN_OR_RETURN(StartResult out, decode(answer));
    if (accepted) accepted(out);
    return out;
  };
  if (!wait) {
    ASSIGN_OR_RETURN(Response r, Call("POST", path + query, BodyText(body), "application/json"));
    return whole(r.body);
  }
  if (!endpoint_status_.ok()) return endpoint_status_;
  add_query("wait", std::max<int64_t>(0, wait->count()));
  path += query;
  std::optional<Result<StartResult>> start;  // the first line, decoded
  std::optional<json> polled;                // the second
  http_->set_read_timeout(endpoint_.read_timeout + *wait);
  auto r = PostForLines(path, BodyText(body), [&](json line) {
    if (start) {
      if (!polled) polled = std::move(line);
      return true;
    }
    start = decode(line);
    if (start->ok() && accepted) accepted(**start);
    return start->ok();
  });
  http_->set_read_timeout(endpoint_.read_timeout);
  // Once the start's answer came, the run exists, whatever became of the wait after it.
  if (!start) {
    if (!r.ok()) return r.status();
    return whole(r->body);  // an agent older than the wait answers the start alone
  }
  ASSIGN_OR_RETURN(StartResult out, std::move(*start));
  if (polled && polled->is_object() && polled->contains("http_status")) {
    // The wait failed on the agent: as GetRun's answer would have said it.
    const json& http_status = (*polled)["http_status"];
    const int status = http_status.is_number_integer() ? http_status.get<int>() : 500;
    out.first_poll =
        Answer("POST " + base_url_ + path, status < 400 ? 500 : status, polled->dump()).status();
  } else if (polled) {
    out.first_poll = std::move(*polled);
  } else if (r.ok()) {
    out.first_poll = Unavailable(fmt::format("POST {}{}: the agent answered the start but not "
                                             "its wait", base_url_, path));
  } else {
    // Said of the run, not of its start: the start went through (QA: "lost while it ran job X:
    // POST .../start: the connection broke" read as a start that had failed).
    std::string why = r.status().message();
    if (const std::string sent = "POST " + base_url_ + path + ": "; why.starts_with(sent)) {
      why.erase(0, sent.size());
    }
    out.first_poll = fanout::Status(r.status().code(),
                                    fmt::format("{}/v1/runs/{} (waited on with its start): {}",
                                                base_url_, out.run_id, why));
  }
  return out;
}

void AgentClient::Interrupt() {
  if (http_) http_->stop();  // cpp-httplib: shuts the socket of a request in flight down
}

Result<json> AgentClient::GetRun(const std::string& run_id,
                                 std::optional<std::chrono::seconds> wait,
                                 const std::optional<std::string>& known_execution_id) {
  RETURN_IF_ERROR(CheckName("run id", run_id));
  std::string path = "/v1/runs/" + run_id;
  if (!wait || !endpoint_status_.ok()) {
    ASSIGN_OR_RETURN(Response r, Call("GET", path));
    return std::move(r.body);
  }
  path += fmt::format("?wait={}", std::max<int64_t>(0, wait->count()));
  if (known_execution_id) {
    if (!known_execution_id->empty()) RETURN_IF_ERROR(CheckName("execution id", *known_execution_id));
    path += "&execution_id=" + *known_execution_id;
  }
  // The answer may take the whole wait: allow for it on top of the usual read timeout.
  http_->set_read_timeout(endpoint_.read_timeout + *wait);
  auto r = Call("GET", path);
  http_->set_read_timeout(endpoint_.read_timeout);
  if (!r.ok()) return r.status();
  return std::move(r->body);
}

Result<json> AgentClient::StopRun(const std::string& run_id,
                                  std::optional<std::chrono::milliseconds> within) {
  RETURN_IF_ERROR(CheckName("run id", run_id));
  const bool shorter = within && http_ && *within < endpoint_.read_timeout;
  if (shorter) http_->set_read_timeout(*within);
  auto r = Call("POST", "/v1/runs/" + run_id + "/stop");
  if (shorter) http_->set_read_timeout(endpoint_.read_timeout);
  if (!r.ok()) return r.status();
  return std::move(r->body);
}

Result<std::string> AgentClient::FindRunByKey(const std::string& idempotency_key) {
  ASSIGN_OR_RETURN(Response r, Call("GET", "/v1/runs?idempotency_key=" +
                                               httplib::detail::encode_query_param(idempotency_key)));
  const json runs = r.body.is_object() ? r.body.value("runs", json::array()) : json::array();
  if (!runs.is_array() || runs.empty()) return std::string();
  return runs.front().is_object() ? runs.front().value("run_id", "") : std::string();
}

Result<json> AgentClient::JobHistory(const std::string& name, int limit) {
  RETURN_IF_ERROR(CheckName("job name", name));
  std::string path = "/v1/jobs/" + name + "/history";
  if (limit > 0) path += fmt::format("?limit={}", limit);
  ASSIGN_OR_RETURN(Response r, Call("GET", path));
  return std::move(r.body);
}

}  // namespace fanout::client
