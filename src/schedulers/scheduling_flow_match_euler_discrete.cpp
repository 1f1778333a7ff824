#include "schedulers/scheduling_flow_match_euler_discrete.h"

#include <cmath>

#include "core/random.h"
#include "ops/ops.h"
#include "io/config_reader.h"
#include "schedulers/scheduling_utils.h"

namespace vgen {
namespace {

constexpr const char* kName = "FlowMatchEulerDiscreteScheduler";

}  // namespace

FlowMatchEulerDiscreteConfig FlowMatchEulerDiscreteConfig::from_json(const Json& config, const std::string& path) {
  const ConfigReader r(config, path, kName);
  FlowMatchEulerDiscreteConfig c;
  c.num_train_timesteps = r.int32("num_train_timesteps", c.num_train_timesteps);
  c.shift = r.number("shift", c.shift);
  c.use_dynamic_shifting = r.boolean("use_dynamic_shifting", c.use_dynamic_shifting);
  // Optional in diffusers: null is kept, absent means the default.
  if (r.present("base_shift")) c.base_shift = r.optional_number("base_shift");
  if (r.present("max_shift")) c.max_shift = r.optional_number("max_shift");
  c.base_image_seq_len = r.int32("base_image_seq_len", c.base_image_seq_len);
  c.max_image_seq_len = r.int32("max_image_seq_len", c.max_image_seq_len);
  c.invert_sigmas = r.boolean("invert_sigmas", c.invert_sigmas);
  c.shift_terminal = r.optional_number("shift_terminal");
  c.use_karras_sigmas = r.boolean("use_karras_sigmas", c.use_karras_sigmas);
  c.use_exponential_sigmas = r.boolean("use_exponential_sigmas", c.use_exponential_sigmas);
  c.use_beta_sigmas = r.boolean("use_beta_sigmas", c.use_beta_sigmas);
  c.time_shift_type = r.string("time_shift_type", c.time_shift_type);
  c.stochastic_sampling = r.boolean("stochastic_sampling", c.stochastic_sampling);
  return c;
}

FlowMatchEulerDiscreteScheduler::FlowMatchEulerDiscreteScheduler(FlowMatchEulerDiscreteConfig config,
                                                                 const std::string& config_path)
    : config_(std::move(config)) {
  const FlowMatchEulerDiscreteConfig& c = config_;
  auto bad = [&](const char* field, const std::string& why) { scheduling::fail_field(config_path, kName, field, why); };
  if (c.num_train_timesteps < 1) bad("num_train_timesteps", fmt::format("must be at least 1, got {}", c.num_train_timesteps));
  scheduling::check_one_of(config_path, kName, "time_shift_type", c.time_shift_type, {"exponential", "linear"});
  if (c.use_beta_sigmas) bad("use_beta_sigmas", "= true is not supported (beta sigmas need scipy's beta quantile)");
  if (c.use_karras_sigmas && c.use_exponential_sigmas)
    bad("use_exponential_sigmas", "and use_karras_sigmas cannot both be true");

  // The training schedule in float32 torch arithmetic; only its two ends are used later.
  // Without dynamic shifting diffusers shifts it here and again in set_timesteps.
  const int N = c.num_train_timesteps;
  auto train_sigma = [&](int t) {
    float s = static_cast<float>(t) / static_cast<float>(N);
    if (!c.use_dynamic_shifting)
      s = static_cast<float>(c.shift) * s / (1.0f + static_cast<float>(c.shift - 1.0) * s);
    return s;
  };
  sigma_max_ = train_sigma(N);
  sigma_min_ = train_sigma(1);
}

double FlowMatchEulerDiscreteScheduler::calculate_shift(int64_t image_seq_len) const {
  const FlowMatchEulerDiscreteConfig& c = config_;
  if (!c.base_shift || !c.max_shift) fail("{}: calculate_shift needs base_shift and max_shift in the config", kName);
  const double m = (*c.max_shift - *c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len);
  const double b = *c.base_shift - m * c.base_image_seq_len;
  return static_cast<double>(image_seq_len) * m + b;
}

void FlowMatchEulerDiscreteScheduler::set_timesteps(const ScheduleRequest& request) {
  const FlowMatchEulerDiscreteConfig& c = config_;
  const int N = c.num_train_timesteps;
  const auto& given_t = request.timesteps;
  const auto& given_s = request.sigmas;
  if (c.use_dynamic_shifting && !request.mu) fail("{}: use_dynamic_shifting is set, so set_timesteps needs mu", kName);
  if (given_t && given_t->empty()) fail("{}: timesteps must not be empty", kName);
  if (given_s && given_s->empty()) fail("{}: sigmas must not be empty", kName);
  if (given_t && given_s && given_t->size() != given_s->size())
    fail("{}: sigmas ({} values) and timesteps ({} values) should have the same length", kName, given_s->size(),
         given_t->size());
  int n = request.num_inference_steps;
  const int given_n = given_s ? static_cast<int>(given_s->size()) : given_t ? static_cast<int>(given_t->size()) : 0;
  if (given_n > 0) {
    // diffusers raises when num_inference_steps is passed and differs from the lists' length.
    if (n != 0 && n != given_n)
      fail("{}: sigmas and timesteps should have the same length as num_inference_steps ({} values, "
           "num_inference_steps {})", kName, given_n, n);
    n = given_n;
  }
  if (n < 1) fail("{}: num_inference_steps must be at least 1, got {}", kName, n);

  std::vector<double> s;  // the sigmas before the final one, in the precision numpy computes them
  std::vector<float> custom_timesteps;
  if (given_n == 0) {
    // Default schedule: numpy float64 from linspace of the training schedule's ends.
    s = scheduling::np_linspace(sigma_max_ * N, sigma_min_ * N, n);
    for (double& x : s) x /= N;
    if (c.use_dynamic_shifting) {
      s = scheduling::time_shift(c.time_shift_type, *request.mu, s);
    } else {
      for (double& x : s) x = c.shift * x / (1 + (c.shift - 1) * x);
    }
    if (c.shift_terminal && *c.shift_terminal != 0.0) s = scheduling::stretch_shift_to_terminal(s, *c.shift_terminal);
  } else {
    // Given lists: np.array(...).astype(np.float32), and from there numpy float32 arithmetic
    // (Python scalars are cast to float32 first, NEP 50).
    std::vector<float> f;
    if (given_t) for (double t : *given_t) custom_timesteps.push_back(static_cast<float>(t));
    if (given_s) {
      for (double x : *given_s) f.push_back(static_cast<float>(x));
    } else {
      for (float t : custom_timesteps) f.push_back(t / static_cast<float>(N));
    }
    if (c.use_dynamic_shifting) {
      const float m = static_cast<float>(c.time_shift_type == "exponential" ? std::exp(*request.mu) : *request.mu);
      for (float& x : f) x = m / (m + (1.0f / x - 1.0f));
    } else {
      const float shift = static_cast<float>(c.shift), shift_m1 = static_cast<float>(c.shift - 1.0);
      for (float& x : f) x = shift * x / (1.0f + shift_m1 * x);
    }
    if (c.shift_terminal && *c.shift_terminal != 0.0) {
      const float scale_factor = (1.0f - f.back()) / static_cast<float>(1.0 - *c.shift_terminal);
      for (float& x : f) x = 1.0f - ((1.0f - x) / scale_factor);
    }
    s.assign(f.begin(), f.end());
  }
  if (c.use_karras_sigmas) s = scheduling::karras_sigmas(s.back(), s.front(), n);
  else if (c.use_exponential_sigmas) s = scheduling::exponential_sigmas(s.back(), s.front(), n);

  sigmas_.clear();
  timesteps_.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    float sigma = static_cast<float>(s[i]);
    if (c.invert_sigmas) sigma = 1.0f - sigma;
    sigmas_.push_back(sigma);
    // float32, as diffusers' torch product; given timesteps are kept, except that invert_sigmas
    // recomputes them from the inverted sigmas in diffusers.
    timesteps_.push_back(!custom_timesteps.empty() && !c.invert_sigmas ? custom_timesteps[i]
                                                                        : sigma * static_cast<float>(N));
  }
  sigmas_.push_back(c.invert_sigmas ? 1.0f : 0.0f);
  sigmas_out_.assign(sigmas_.begin(), sigmas_.end());
  step_index_ = 0;
}

Tensor FlowMatchEulerDiscreteScheduler::step(const Tensor& model_output, double timestep, const Tensor& sample) {
  const int n = static_cast<int>(timesteps_.size());
  if (n == 0) fail("{}: call set_timesteps before step", kName);
  if (step_index_ >= n) fail("{}: all {} steps are done; call set_timesteps again", kName, n);
  if (timestep != timesteps_[step_index_])
    fail("{}: step {} expects timestep {}, got {}", kName, step_index_, timesteps_[step_index_], timestep);
  if (model_output.shape() != sample.shape())
    fail("{}: model_output {} and sample {} differ in shape", kName, model_output.str(), sample.str());

  // diffusers upcasts the sample to float32 and casts the result to model_output's dtype.
  const Tensor x = sample.dtype() == DType::F32 ? sample : sample.to(DType::F32);
  const float sigma = sigmas_[step_index_], sigma_next = sigmas_[step_index_ + 1];
  Tensor prev_sample;
  if (config_.stochastic_sampling) {
    const Tensor x0 = ops::sub(x, ops::scale(model_output, sigma));
    const uint64_t offset = static_cast<uint64_t>(step_index_) * static_cast<uint64_t>(sample.numel());
    const Tensor noise = randn(sample.shape(), noise_seed_, offset).to(sample.device());
    prev_sample = ops::add(ops::scale(x0, 1.0f - sigma_next), ops::scale(noise, sigma_next));
  } else {
    prev_sample = ops::add(x, ops::scale(model_output, sigma_next - sigma));
  }
  ++step_index_;
  return prev_sample.dtype() == model_output.dtype() ? prev_sample : prev_sample.to(model_output.dtype());
}

}  // namespace vgen
