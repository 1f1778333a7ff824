// The HTTP request and response the routes see, independent of the transport (http_server.h
// fills and sends them). Header names compare case-insensitively; the path and query
// parameters arrive percent-decoded.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "serving/requests.h"

namespace vgen::serving {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive lookups in a list of (name, value) pairs; the first match wins.
bool has_header_in(const HeaderList& headers, const std::string& name);
std::string header_in(const HeaderList& headers, const std::string& name);

struct HttpRequest {
  std::string method;       // as sent, e.g. "POST"
  std::string target;       // as sent: path and query
  std::string path;         // decoded, no query
  std::multimap<std::string, std::string> params;  // decoded query parameters
  HeaderList headers;
  std::string body;                // JSON bodies (empty for multipart ones)
  std::vector<FormPart> parts;     // multipart/form-data bodies, parsed
  std::string remote_addr;

  bool has_header(const std::string& name) const { return has_header_in(headers, name); }
  std::string get_header_value(const std::string& name) const { return header_in(headers, name); }
  bool has_param(const std::string& name) const { return params.count(name) > 0; }
  std::string get_param_value(const std::string& name) const;
  // Content-Type multipart/form-data (any parameters).
  bool is_multipart_form_data() const;
};

struct HttpResponse {
  int status = 200;
  HeaderList headers;  // besides Content-Type and Content-Length, which the transport sets
  std::string body;
  std::string content_type;
  std::string job_id;  // the job the request made or named, for the access log (not sent)

  void set_header(const std::string& name, const std::string& value);
  bool has_header(const std::string& name) const { return has_header_in(headers, name); }
  std::string get_header_value(const std::string& name) const;
  void set_content(std::string content, std::string type) {
    body = std::move(content);
    content_type = std::move(type);
  }
};

// Splits a request target into its decoded path and query parameters ('+' is a space in
// the query only). Returns false when the target is not origin-form ("/...").
bool parse_target(const std::string& target, std::string& path, std::multimap<std::string, std::string>& params);

// A multipart/form-data body as its parts (boundary from `content_type`), within limits:
// at most kMaxFormParts parts and kMaxFormPartHeaderBytes of headers per part. Throws a 400
// ApiError naming what is malformed.
constexpr size_t kMaxFormParts = 64;
constexpr size_t kMaxFormPartHeaderBytes = 8192;
std::vector<FormPart> parse_multipart(const std::string& body, const std::string& content_type);

}  // namespace vgen::serving
