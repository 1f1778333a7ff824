// An error answered to an HTTP client in OpenAI's shape:
//   {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace vgen::serving {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::optional<std::string> param = std::nullopt,
           std::optional<std::string> code = std::nullopt)
      : std::runtime_error(message), status(status), param(std::move(param)), code(std::move(code)) {}

  int status;
  std::optional<std::string> param;
  std::optional<std::string> code;
};

// OpenAI's error type for an HTTP status: "invalid_request_error" for 4xx,
// "rate_limit_error" for 429, "server_error" for 5xx.
inline std::string error_type(int status) {
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

inline nlohmann::json error_body(int status, const std::string& message, const std::optional<std::string>& param = {},
                                 const std::optional<std::string>& code = {}) {
  nlohmann::json e = {{"message", message}, {"type", error_type(status)}, {"param", nullptr}, {"code", nullptr}};
  if (param) e["param"] = *param;
  if (code) e["code"] = *code;
  return {{"error", e}};
}

// 400 naming the request field at fault.
[[noreturn]] inline void bad_field(const std::string& field, const std::string& message) {
  throw ApiError(400, message, field, "invalid_value");
}

}  // namespace vgen::serving
