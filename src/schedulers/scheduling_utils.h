// Pieces the schedulers share: errors about scheduler_config.json fields, and the
// numpy-style float64 schedule helpers diffusers builds sigmas with.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen::scheduling {

// The error for a config field with an unsupported value: "PATH: CLASS field 'KEY' WHY".
[[noreturn]] void fail_field(const std::string& path, const std::string& class_name, const std::string& key,
                             const std::string& why);
// Fails unless value is one of allowed.
void check_one_of(const std::string& path, const std::string& class_name, const std::string& key,
                  const std::string& value, std::initializer_list<const char*> allowed);

// np.linspace(start, stop, num) in float64, value for value.
std::vector<double> np_linspace(double start, double stop, int num);

// diffusers' time_shift(mu, 1.0, t) for time_shift_type "exponential" or "linear".
std::vector<double> time_shift(const std::string& time_shift_type, double mu, const std::vector<double>& t);
// diffusers' stretch_shift_to_terminal: rescales 1 - t so the last value becomes shift_terminal.
std::vector<double> stretch_shift_to_terminal(const std::vector<double>& t, double shift_terminal);
// diffusers' _convert_to_karras / _convert_to_exponential (rho 7) between sigma_max and sigma_min.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int num_inference_steps);
std::vector<double> exponential_sigmas(double sigma_min, double sigma_max, int num_inference_steps);

// x / s for a float32 scalar s: a true division like torch's, not a multiply by 1/s.
Tensor div_scalar(const Tensor& x, float s);

}  // namespace vgen::scheduling
