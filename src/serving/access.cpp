#include "serving/access.h"

#include <string_view>

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

}  // namespace

bool authorized(const httplib::Request& req, const std::string& api_key) {
  if (api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) return false;
  return constant_time_equal(header.substr(kBearer.size()), api_key);
}

void limit_requests(httplib::Server& http, size_t max_body_bytes) {
  http.set_payload_max_length(max_body_bytes);
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) fill_default_error(res);
  });
}

}  // namespace vgen::serving
