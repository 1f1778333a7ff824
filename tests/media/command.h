// Runs the ffmpeg/ffprobe command-line tools from the media tests (outputs are checked
// with tools independent of the encoder code under test).
#pragma once

#include <cstdio>
#include <optional>
#include <string>

namespace vgen::testing {

// stdout of `command` (run by /bin/sh), or nullopt when it exits non-zero.
inline std::optional<std::string> run_command(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buffer[65536];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  return ::pclose(pipe) == 0 ? std::optional<std::string>(std::move(out)) : std::nullopt;
}

inline bool have_program(const std::string& name) {
  return run_command("command -v " + name + " >/dev/null 2>&1").has_value();
}

// Single-quoted for /bin/sh.
inline std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace vgen::testing
