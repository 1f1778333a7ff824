// Error type used everywhere in vgen: one exception class whose message names the culprit
// (file, tensor, field, request value), so the CLI and server can print it as one line.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace vgen {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

#define VGEN_CHECK(cond, ...)          \
  do {                                 \
    if (!(cond)) ::vgen::fail(__VA_ARGS__); \
  } while (0)

}  // namespace vgen
