// Who may call the server and what it accepts, decided from the request line and headers
// alone, before any body is read:
//   - Host and Origin (only without an API key, where nothing else stops a web page from
//     driving a local server): a server bound to a loopback address answers only Host names
//     of the loopback (localhost, 127.0.0.1, [::1]), which defeats DNS rebinding; and a
//     request carrying an Origin is answered only when that origin is the Host itself, so
//     other sites' pages cannot queue jobs. 403.
//   - the bearer API key on routes that are not open (compared in constant time). 401.
//   - the body's type on routes that read one: application/json or multipart/form-data
//     (text/plain, which any web page may send without a CORS preflight, is refused). 415.
#pragma once

#include <optional>
#include <string>

#include "serving/http_message.h"

#include "serving/api_error.h"

namespace vgen::serving {

struct AccessPolicy {
  std::string api_key;     // empty: no key, so Host and Origin are checked
  std::string bound_host;  // the address the server listens on
};

// True when no key is configured, or the request carries "Authorization: Bearer <api_key>".
bool authorized(const HttpRequest& req, const std::string& api_key);

// True for the loopback names and addresses (localhost, 127.0.0.0/8, ::1), bracketed or not.
bool is_loopback_host(const std::string& host);

// The 403 for a Host or Origin this policy refuses; nullopt when both are acceptable.
std::optional<ApiError> check_host_and_origin(const HttpRequest& req, const AccessPolicy& policy);

// The 415 for a body that is neither JSON nor multipart/form-data; nullopt when it is one.
std::optional<ApiError> check_content_type(const HttpRequest& req);

}  // namespace vgen::serving
