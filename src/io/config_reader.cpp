#include "io/config_reader.h"

#include <climits>
#include <cmath>

#include "core/error.h"

namespace vgen {
namespace {

using Json = nlohmann::json;

const Json& empty_object() {
  static const Json empty = Json::object();
  return empty;
}

std::string range_text(int64_t v, int64_t min, int64_t max, bool yaml) {
  if (max == INT64_MAX) return fmt::format("must be at least {}, got {}", min, v);
  if (min == INT64_MIN) return fmt::format("must be at most {}, got {}", max, v);
  if (yaml) return fmt::format("{} is out of range [{}, {}]", v, min, max);
  return fmt::format("must be in [{}, {}], got {}", min, max, v);
}

std::shared_ptr<const ConfigSource> json_source(const std::string& file, const std::string& subject) {
  auto source = std::make_shared<ConfigSource>();
  source->file = file;
  source->subject = subject;
  return source;
}

}  // namespace

ConfigReader::ConfigReader(const Json* value, std::shared_ptr<const ConfigSource> source, std::string path)
    : value_(value), source_(std::move(source)), path_(std::move(path)) {
  if (value_->is_null()) value_ = &empty_object();
  if (!value_->is_object()) {
    if (source_->yaml) fail_value("", "expected a mapping of keys to values");
    fail("{}: expected a JSON object{}, got {}", source_->file, path_.empty() ? "" : " in field '" + path_ + "'",
         value_->dump());
  }
}

ConfigReader::ConfigReader(const Json& value, std::shared_ptr<const ConfigSource> source)
    : ConfigReader(&value, std::move(source), "") {}

ConfigReader::ConfigReader(const Json& value, const std::string& file, const std::string& subject)
    : ConfigReader(&value, json_source(file, subject), "") {}

std::string ConfigReader::path_of(const std::string& key) const {
  if (key.empty()) return path_;
  return path_.empty() ? key : path_ + "." + key;
}

void ConfigReader::fail_value(const std::string& key, const std::string& what) const {
  const std::string path = path_of(key);
  if (source_->yaml) {
    const std::string label = path.empty() ? "top level" : path;
    auto it = source_->value_marks.find(path);
    if (it == source_->value_marks.end()) fail("{}: {}: {}", source_->file, label, what);
    fail("{}:{}:{}: {}: {}", source_->file, it->second.line, it->second.column, label, what);
  }
  fail("{}: {}field '{}' {}", source_->file, source_->subject.empty() ? "" : source_->subject + " ", path, what);
}

void ConfigReader::fail_key(const std::string& key, const std::string& what) const {
  const std::string path = path_of(key);
  auto it = source_->key_marks.find(path);
  if (source_->yaml && it != source_->key_marks.end())
    fail("{}:{}:{}: {}: {}", source_->file, it->second.line, it->second.column, path, what);
  fail_value(key, what);
}

void ConfigReader::fail_type(const std::string& key, const char* expected, const Json& value) const {
  // A YAML scalar is shown as written; JSON values (and YAML lists or maps) as JSON.
  const std::string shown =
      source_->yaml && value.is_primitive() && !value.is_null()
          ? fmt::format("'{}'", value.is_string() ? value.get<std::string>() : value.dump())
          : value.dump();
  fail_value(key, fmt::format("{} {}, got {}", source_->yaml ? "expected" : "must be", expected, shown));
}

const Json* ConfigReader::find(const std::string& key) const {
  if (asked_.insert(key).second) asked_order_.push_back(key);
  auto it = value_->find(key);
  return it == value_->end() ? nullptr : &*it;
}

const Json* ConfigReader::find_non_null(const std::string& key, const char* what) const {
  const Json* v = find(key);
  if (v && v->is_null()) fail_type(key, what, *v);
  return v;
}

bool ConfigReader::present(const std::string& key) const { return find(key) != nullptr; }

bool ConfigReader::has(const std::string& key) const {
  const Json* v = find(key);
  return v && !v->is_null();
}

ConfigReader ConfigReader::section(const std::string& key) const {
  const Json* v = find(key);
  return ConfigReader(v ? v : &empty_object(), source_, path_of(key));
}

bool ConfigReader::boolean(const std::string& key, bool fallback) const {
  const Json* v = find_non_null(key, "true or false");
  if (!v) return fallback;
  if (!v->is_boolean()) fail_type(key, "true or false", *v);
  return v->get<bool>();
}

int64_t ConfigReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) const {
  return find_non_null(key, "an integer") ? *optional_integer(key, min, max) : fallback;
}

std::optional<int64_t> ConfigReader::optional_integer(const std::string& key, int64_t min, int64_t max) const {
  const Json* v = find(key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    fail_value(key, fmt::format("is out of range ({})", v->dump()));
  if (!v->is_number_integer()) fail_type(key, "an integer", *v);
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) fail_value(key, range_text(x, min, max, source_->yaml));
  return x;
}

int64_t ConfigReader::required_integer(const std::string& key, int64_t min, int64_t max) const {
  const std::optional<int64_t> v = optional_integer(key, min, max);
  if (!v) fail_value(key, "is required");
  return *v;
}

int ConfigReader::int32(const std::string& key, int fallback) const {
  return static_cast<int>(integer(key, fallback, INT32_MIN, INT32_MAX));
}

void ConfigReader::require_absent(const std::string& key, const std::string& why) const {
  if (has(key)) fail_value(key, fmt::format("= {} is not supported: {}", value_->at(key).dump(), why));
}

double ConfigReader::number(const std::string& key, double fallback) const {
  return find_non_null(key, "a number") ? *optional_number(key) : fallback;
}

std::optional<double> ConfigReader::optional_number(const std::string& key) const {
  const Json* v = find(key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>())) fail_type(key, "a number", *v);
  return v->get<double>();
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) const {
  return optional_string_strict(key).value_or(fallback);
}

std::optional<std::string> ConfigReader::optional_string_strict(const std::string& key) const {
  const Json* v = find_non_null(key, "a string");
  if (!v) return std::nullopt;
  if (!v->is_string()) fail_type(key, "a string", *v);
  return v->get<std::string>();
}

std::optional<std::string> ConfigReader::optional_string(const std::string& key) const {
  const Json* v = find(key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) fail_type(key, "a string", *v);
  return v->get<std::string>();
}

template <typename T, typename Check>
std::vector<T> ConfigReader::list(const std::string& key, const char* element, Check check) const {
  const Json* v = find(key);
  std::vector<T> out;
  if (!v->is_array()) fail_type(key, "a list", *v);
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& e = (*v)[i];
    const std::string item = fmt::format("{}[{}]", key, i);
    if (!check(e)) fail_type(item, element, e);
    out.push_back(e.get<T>());
  }
  return out;
}

std::vector<int64_t> ConfigReader::integer_list(const std::string& key, const std::vector<int64_t>& fallback) const {
  if (!has(key)) return fallback;
  return list<int64_t>(key, "an integer", [](const Json& e) { return e.is_number_integer(); });
}

std::vector<double> ConfigReader::number_list(const std::string& key, const std::vector<double>& fallback) const {
  return optional_number_list(key).value_or(fallback);
}

std::optional<std::vector<double>> ConfigReader::optional_number_list(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return list<double>(key, "a number",
                      [](const Json& e) { return e.is_number() && std::isfinite(e.get<double>()); });
}

std::vector<bool> ConfigReader::boolean_list(const std::string& key, const std::vector<bool>& fallback) const {
  if (!has(key)) return fallback;
  return list<bool>(key, "true or false", [](const Json& e) { return e.is_boolean(); });
}

std::vector<std::string> ConfigReader::string_list(const std::string& key,
                                                   const std::vector<std::string>& fallback) const {
  if (!has(key)) return fallback;
  return list<std::string>(key, "a string", [](const Json& e) { return e.is_string(); });
}

void ConfigReader::reject_unknown() const {
  for (auto it = value_->begin(); it != value_->end(); ++it) {
    if (asked_.count(it.key())) continue;
    std::string known;
    for (const std::string& k : asked_order_) known += (known.empty() ? "" : ", ") + k;
    fail_key(it.key(), fmt::format("{} (known keys{}: {})", source_->yaml ? "unknown key" : "is not a known key",
                                   path_.empty() ? "" : " of '" + path_ + "'", known));
  }
}

}  // namespace vgen
