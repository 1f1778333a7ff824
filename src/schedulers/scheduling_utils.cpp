#include "schedulers/scheduling_utils.h"

#include <cmath>

#include <fmt/ranges.h>

#include "ops/ops.h"

namespace vgen::scheduling {

void fail_field(const std::string& path, const std::string& class_name, const std::string& key,
                const std::string& why) {
  fail("{}: {} field '{}' {}", path, class_name, key, why);
}

void check_one_of(const std::string& path, const std::string& class_name, const std::string& key,
                  const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed)
    if (value == a) return;
  fail_field(path, class_name, key,
             fmt::format("has the unsupported value \"{}\" (supported: {})", value, fmt::join(allowed, ", ")));
}

ConfigReader::ConfigReader(const Json& config, std::string path, std::string class_name)
    : config_(config), path_(std::move(path)), class_name_(std::move(class_name)) {
  if (!config_.is_object()) fail("{}: a scheduler config must be a JSON object, got {}", path_, config_.dump());
}

const Json* ConfigReader::find(const std::string& key) const {
  auto it = config_.find(key);
  if (it == config_.end() || it->is_null()) return nullptr;
  return &*it;
}

void ConfigReader::fail_type(const std::string& key, const char* expected, const Json& value) const {
  fail_field(path_, class_name_, key, fmt::format("must be {}, got {}", expected, value.dump()));
}

int ConfigReader::integer(const std::string& key, int fallback) const {
  const Json* v = find(key);
  if (!v) {
    if (config_.contains(key)) fail_type(key, "an integer", nullptr);
    return fallback;
  }
  if (!v->is_number_integer()) fail_type(key, "an integer", *v);
  const int64_t x = v->get<int64_t>();
  if (x < INT32_MIN || x > INT32_MAX) fail_field(path_, class_name_, key, fmt::format("is out of range ({})", x));
  return static_cast<int>(x);
}

double ConfigReader::number(const std::string& key, double fallback) const {
  const Json* v = find(key);
  if (!v) {
    if (config_.contains(key)) fail_type(key, "a number", nullptr);
    return fallback;
  }
  if (!v->is_number()) fail_type(key, "a number", *v);
  return v->get<double>();
}

std::optional<double> ConfigReader::optional_number(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number()) fail_type(key, "a number or null", *v);
  return v->get<double>();
}

bool ConfigReader::boolean(const std::string& key, bool fallback) const {
  const Json* v = find(key);
  if (!v) {
    if (config_.contains(key)) fail_type(key, "true or false", nullptr);
    return fallback;
  }
  if (!v->is_boolean()) fail_type(key, "true or false", *v);
  return v->get<bool>();
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) const {
  const Json* v = find(key);
  if (!v) {
    if (config_.contains(key)) fail_type(key, "a string", nullptr);
    return fallback;
  }
  if (!v->is_string()) fail_type(key, "a string", *v);
  return v->get<std::string>();
}

std::vector<int> ConfigReader::integer_list(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return {};
  if (!v->is_array()) fail_type(key, "a list of integers", *v);
  std::vector<int> out;
  for (const Json& e : *v) {
    if (!e.is_number_integer()) fail_type(key, "a list of integers", *v);
    out.push_back(e.get<int>());
  }
  return out;
}

std::optional<std::vector<double>> ConfigReader::optional_number_list(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array()) fail_type(key, "a list of numbers or null", *v);
  std::vector<double> out;
  for (const Json& e : *v) {
    if (!e.is_number()) fail_type(key, "a list of numbers or null", *v);
    out.push_back(e.get<double>());
  }
  return out;
}

void ConfigReader::require_null(const std::string& key, const std::string& why) const {
  if (const Json* v = find(key)) fail_field(path_, class_name_, key, fmt::format("= {} is not supported: {}", v->dump(), why));
}

std::vector<double> np_linspace(double start, double stop, int num) {
  if (num <= 0) return {};
  if (num == 1) return {start};
  // numpy: i * step + start, with the last value set to stop exactly.
  const double step = (stop - start) / (num - 1);
  std::vector<double> out(num);
  for (int i = 0; i < num; ++i) out[i] = i * step + start;
  out.back() = stop;
  return out;
}

std::vector<double> time_shift(const std::string& time_shift_type, double mu, const std::vector<double>& t) {
  // diffusers: exp(mu) / (exp(mu) + (1/t - 1) ** sigma) with sigma = 1.0, elementwise in float64.
  const double m = time_shift_type == "exponential" ? std::exp(mu) : mu;
  std::vector<double> out(t.size());
  for (size_t i = 0; i < t.size(); ++i) out[i] = m / (m + (1.0 / t[i] - 1.0));
  return out;
}

std::vector<double> stretch_shift_to_terminal(const std::vector<double>& t, double shift_terminal) {
  if (t.empty()) return t;
  const double scale_factor = (1.0 - t.back()) / (1.0 - shift_terminal);
  std::vector<double> out(t.size());
  for (size_t i = 0; i < t.size(); ++i) out[i] = 1.0 - ((1.0 - t[i]) / scale_factor);
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int num_inference_steps) {
  const double rho = 7.0;  // the value of the Karras et al. paper
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> out = np_linspace(0.0, 1.0, num_inference_steps);
  for (double& r : out) r = std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho);
  return out;
}

std::vector<double> exponential_sigmas(double sigma_min, double sigma_max, int num_inference_steps) {
  std::vector<double> out = np_linspace(std::log(sigma_max), std::log(sigma_min), num_inference_steps);
  for (double& s : out) s = std::exp(s);
  return out;
}

Tensor div_scalar(const Tensor& x, float s) { return ops::div(x, Tensor::full({1}, s, DType::F32, x.device())); }

}  // namespace vgen::scheduling
