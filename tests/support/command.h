// Shell commands and scratch folders for tests (outputs are checked with tools such as
// ffprobe, independent of the code under test).
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>
#include <optional>
#include <string>

#include <gtest/gtest.h>

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

// An empty folder under the test temp dir.
inline std::string fresh_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/vgen_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Sorted file names in dir.
inline std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace vgen::testing
