#include "cli/flags.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "core/error.h"

namespace vgen::cli {
namespace {

// The number CLI11 will convert, or the error text (empty when it is not a number at all:
// CLI11's own conversion error then names it).
std::optional<double> as_number(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<double> v = as_number(text);
        if (v && !(*v > 0)) return fmt::format("must be a positive number, got {}", text);
        return "";
      },
      "POSITIVE");
}

CLI::Validator non_negative_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<double> v = as_number(text);
        if (v && !(*v >= 0)) return fmt::format("must be zero or more, got {}", text);
        return "";
      },
      "NONNEGATIVE");
}

CLI::Validator integer_in_range(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const std::optional<double> v = as_number(text);
        if (v && !(*v >= static_cast<double>(lo) && *v <= static_cast<double>(hi)))
          return fmt::format("must be an integer from {} to {}, got {}", lo, hi, text);
        return "";
      },
      fmt::format("INT in {}..{}", lo, hi));
}

std::vector<double> parse_number_list(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    const double v = item.empty() || std::isspace(static_cast<unsigned char>(item[0]))
                         ? 0.0
                         : std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(v))
      fail("{}: expected comma-separated numbers (e.g. 1000,750,500,250), got '{}'", flag, text);
    out.push_back(v);
    if (out.size() > 1000) fail("{}: at most 1000 values, got more", flag);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::optional<uint64_t> parse_seed(const std::string& text, const std::string& flag) {
  if (text == "-1") return std::nullopt;
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) {
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (errno != ERANGE && end == text.c_str() + text.size()) return static_cast<uint64_t>(v);
  }
  fail("{}: must be an integer from 0 to 18446744073709551615 (2^64-1), or -1 for a random seed; got '{}'", flag, text);
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  const size_t allowed = std::max<size_t>(2, word.size() / 3);
  return best_distance <= allowed ? best : "";
}

std::string suggest_flag(const CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> names;
  for (const CLI::Option* opt : app.get_options())
    for (const std::string& n : opt->get_lnames()) names.push_back("--" + n);
  for (const std::string& arg : args) {
    if (arg.rfind("--", 0) != 0) continue;
    const std::string flag = arg.substr(0, arg.find('='));
    if (std::find(names.begin(), names.end(), flag) != names.end()) continue;
    const std::string match = closest_match(flag, names);
    if (!match.empty()) return fmt::format("unknown flag {}: did you mean {}?", flag, match);
  }
  return "";
}

}  // namespace vgen::cli
