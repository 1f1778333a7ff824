#include "serving/access.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include <fmt/format.h>

#include "serving/http_util.h"

namespace vgen::serving {
namespace {

// Compares without an early exit, so response times do not reveal a matching prefix.
bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "host:port", "[::1]:port", "host" -> the host part, lower-case, brackets kept.
std::string host_part(const std::string& authority) {
  const std::string a = lower(authority);
  if (!a.empty() && a[0] == '[') {
    const size_t close = a.find(']');
    return close == std::string::npos ? a : a.substr(0, close + 1);
  }
  return a.substr(0, a.find(':'));
}

}  // namespace

bool authorized(const HttpRequest& req, const std::string& api_key) {
  if (api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) return false;
  return constant_time_equal(header.substr(kBearer.size()), api_key);
}

bool is_loopback_host(const std::string& host) {
  std::string h = lower(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1") return true;
  if (h.rfind("127.", 0) != 0) return false;
  return h.find_first_not_of("0123456789.") == std::string::npos;
}

std::optional<ApiError> check_host_and_origin(const HttpRequest& req, const AccessPolicy& policy) {
  if (!policy.api_key.empty()) return std::nullopt;
  const std::string host = req.get_header_value("Host");
  if (is_loopback_host(policy.bound_host) && !is_loopback_host(host_part(host)))
    return ApiError(403,
                    fmt::format("Host '{}' is refused: this server listens on {} without an API key and answers "
                                "only localhost, 127.0.0.1 and [::1] (start it with --api-key to allow others)",
                                printable(host), policy.bound_host),
                    std::nullopt, "forbidden_host");
  if (req.has_header("Origin")) {
    const std::string origin = req.get_header_value("Origin");
    const size_t scheme = origin.find("://");
    const std::string authority = scheme == std::string::npos ? origin : origin.substr(scheme + 3);
    if (lower(authority) != lower(host))
      return ApiError(403,
                      fmt::format("Origin '{}' is refused: without an API key this server answers browsers only "
                                  "from its own origin (start it with --api-key to allow others)",
                                  printable(origin)),
                      std::nullopt, "forbidden_origin");
  }
  return std::nullopt;
}

std::optional<ApiError> check_content_type(const HttpRequest& req) {
  const std::string type = lower(req.get_header_value("Content-Type"));
  const std::string media = type.substr(0, type.find(';'));
  const auto trimmed = [](std::string s) {
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  };
  if (trimmed(media) == "application/json" || trimmed(media) == "multipart/form-data") return std::nullopt;
  return ApiError(415,
                  fmt::format("Content-Type '{}' is not accepted; send application/json (or multipart/form-data)",
                              printable(req.get_header_value("Content-Type"))),
                  std::nullopt, "unsupported_media_type");
}

}  // namespace vgen::serving
