// Flag checks that say what is wrong in words and name the flag, and "did you mean" for a
// mistyped command or flag (CLI11's own range messages print DBL_MAX in full).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace vgen::cli {

// Validators for CLI::Option::check. CLI11 prefixes the message with the flag's name:
// "--fps: must be a positive number, got 0".
CLI::Validator positive_number();
CLI::Validator non_negative_number();
CLI::Validator integer_in_range(int64_t lo, int64_t hi);

// "--seed": "-1" draws a random seed (nullopt); otherwise an integer 0..2^64-1. Anything
// else throws vgen::Error naming `flag` and the valid range.
std::optional<uint64_t> parse_seed(const std::string& text, const std::string& flag = "--seed");

// "--timesteps 1000,750,500,250": comma-separated finite numbers (no empty items, at most
// 1000). Anything else throws vgen::Error naming `flag`. Ranges and order are checked by the
// pipeline's resolve.
std::vector<double> parse_number_list(const std::string& text, const std::string& flag);

// The candidate closest to `word` by edit distance, when it is close enough to be a typo
// (at most 2 edits, or a third of the word); "" otherwise.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// A one-line hint for the arguments CLI11 did not expect: the first one that looks like a flag
// of `app` mistyped gets "did you mean --x?"; "" when none does.
std::string suggest_flag(const CLI::App& app, const std::vector<std::string>& args);

}  // namespace vgen::cli
