// One reader for configuration fields: JSON config files (model config.json,
// scheduler_config.json) and the engine's YAML file (converted to JSON with the line and
// column of every key and value kept, see ConfigSource).
//
// Typed getters with defaults, required fields, range checks and choices; optional
// detection of keys the program never asked for. Every error names the file and the field,
// in the style of each format's tools (WHAT is a predicate: "must be even, got 3"):
//   JSON: "FILE: [SUBJECT ]field 'KEY' WHAT"  e.g. "scheduler_config.json: UniPCMultistepScheduler field 'flow_shift' must be a number, got "three""
//   YAML: "FILE:LINE:COL: KEY.PATH: WHAT"     e.g. "engine.yaml:2:12: teacache.enabled: expected true or false, got 'yes'"
// Values are shown as the file writes them (JSON text; a YAML scalar in single quotes).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace vgen {

// Where a configuration came from, for its error messages.
struct ConfigSource {
  struct Mark {
    int line = 0, column = 0;  // 1-based
  };
  std::string file;     // the path (or what stands for it)
  std::string subject;  // what the file configures, named before fields in JSON errors ("UniPCMultistepScheduler")
  bool yaml = false;    // errors in the YAML style, with marks
  // YAML: the position of each key and of each value, by key path ("teacache.enabled",
  // "linear.ignore[0]"; the top level is "").
  std::map<std::string, Mark> key_marks, value_marks;
};

class ConfigReader {
 public:
  // Reads the object `value` of `source` (both must outlive the reader); fails unless it is an
  // object (null, e.g. an empty YAML section, is an empty one).
  ConfigReader(const nlohmann::json& value, std::shared_ptr<const ConfigSource> source);
  // A JSON file's object, errors naming `file` (and `subject` before each field).
  ConfigReader(const nlohmann::json& value, const std::string& file, const std::string& subject = "");

  // The nested object `key` (absent or null: empty); its fields are named "key.field".
  ConfigReader section(const std::string& key) const;

  // Whether the key is in the object (`has`: with a value other than null).
  bool present(const std::string& key) const;
  bool has(const std::string& key) const;

  // Absent -> fallback. Null or a value of another type -> an error naming the field.
  bool boolean(const std::string& key, bool fallback) const;
  int64_t integer(const std::string& key, int64_t fallback, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  int int32(const std::string& key, int fallback) const;  // an integer that fits an int
  double number(const std::string& key, double fallback) const;  // finite
  std::string string(const std::string& key, const std::string& fallback) const;
  // Absent or null -> nullopt (the fields diffusers declares Optional).
  std::optional<int64_t> optional_integer(const std::string& key, int64_t min = INT64_MIN,
                                          int64_t max = INT64_MAX) const;
  std::optional<double> optional_number(const std::string& key) const;
  std::optional<std::string> optional_string(const std::string& key) const;
  // Lists (absent or null -> fallback); an element of another type is named "key[i]".
  std::vector<int64_t> integer_list(const std::string& key, const std::vector<int64_t>& fallback = {}) const;
  std::vector<double> number_list(const std::string& key, const std::vector<double>& fallback = {}) const;
  std::vector<bool> boolean_list(const std::string& key, const std::vector<bool>& fallback = {}) const;
  std::vector<std::string> string_list(const std::string& key, const std::vector<std::string>& fallback = {}) const;
  std::optional<std::vector<double>> optional_number_list(const std::string& key) const;
  // A field that must be given.
  int64_t required_integer(const std::string& key, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;

  // Fails unless the field is absent or null: a feature this program does not implement.
  void require_absent(const std::string& key, const std::string& why) const;

  // A string naming one of `options` (absent -> fallback); another name is an error listing them.
  template <typename E>
  E choice(const std::string& key, E fallback, const std::vector<std::pair<std::string, E>>& options) const {
    const std::optional<std::string> name = optional_string_strict(key);
    if (!name) return fallback;
    std::string list;
    for (const auto& [n, value] : options) {
      if (n == *name) return value;
      list += (list.empty() ? "" : ", ") + n;
    }
    fail_value(key, source_->yaml ? "'" + *name + "' is not one of: " + list
                                  : "is \"" + *name + "\", not one of: " + list);
  }

  // Fails on the first key of the object that no getter above asked for, listing those asked.
  void reject_unknown() const;

  // An error about field `key` (in YAML at its value's position); `what` is a predicate.
  [[noreturn]] void fail_value(const std::string& key, const std::string& what) const;
  // The same, pointing at the key itself (YAML: an unknown or duplicate key).
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) const;

 private:
  ConfigReader(const nlohmann::json* value, std::shared_ptr<const ConfigSource> source, std::string path);
  std::string path_of(const std::string& key) const;
  // The value of `key`, nullptr when absent; marks `key` as asked.
  const nlohmann::json* find(const std::string& key) const;
  // The value, or nullptr when absent; null is an error (expected `what`).
  const nlohmann::json* find_non_null(const std::string& key, const char* what) const;
  std::optional<std::string> optional_string_strict(const std::string& key) const;
  [[noreturn]] void fail_type(const std::string& key, const char* expected, const nlohmann::json& value) const;
  template <typename T, typename Check>
  std::vector<T> list(const std::string& key, const char* element, Check check) const;

  const nlohmann::json* value_;
  std::shared_ptr<const ConfigSource> source_;
  std::string path_;  // of this object in the file ("" at the top)
  mutable std::set<std::string> asked_;
  mutable std::vector<std::string> asked_order_;
};

}  // namespace vgen
