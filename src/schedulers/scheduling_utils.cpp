#include "schedulers/scheduling_utils.h"

#include <cmath>

#include <fmt/ranges.h>

#include "core/error.h"
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
