// JSON files and typed field access with errors that name the file and the field.
// Configuration files (config.json, scheduler_config.json) are read with ConfigReader
// (io/config_reader.h), which also checks ranges, null and unknown keys; json_get serves the
// structural fields of other formats (safetensors headers, tokenizer.json, model_index.json).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vgen {

using Json = nlohmann::json;

// Parses a JSON file; throws vgen::Error "PATH: ..." when missing or malformed.
Json read_json_file(const std::string& path);

// Field `key` of object `j` (read from `where`) converted to T; `fallback` when absent.
template <typename T>
T json_get(const Json& j, const std::string& key, const T& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    fail("{}: field '{}' has the wrong type ({})", where, key, it->dump());
  }
}

template <typename T>
T json_require(const Json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail("{}: missing field '{}'", where, key);
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    fail("{}: field '{}' has the wrong type ({})", where, key, it->dump());
  }
}

}  // namespace vgen
