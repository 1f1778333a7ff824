#include "schedulers/scheduling_unipc_multistep.h"

#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "io/config_reader.h"
#include "schedulers/scheduling_utils.h"

namespace vgen {
namespace {

using scheduling::div_scalar;

constexpr const char* kName = "UniPCMultistepScheduler";

// torch.linspace(start, end, steps, dtype=float32) on the CPU: a float32 step, then each
// value from the nearer end with one rounding (torch's kernel compiles to fused multiply-adds;
// this reproduces its betas bit for bit, which the non-flow timesteps are sensitive to).
std::vector<float> torch_linspace_f32(double start, double end, int steps) {
  const float s = static_cast<float>(start), e = static_cast<float>(end);
  if (steps == 1) return {s};
  const float step = (e - s) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  std::vector<float> out(steps);
  for (int i = 0; i < steps; ++i)
    out[i] = i < halfway ? std::fma(step, static_cast<float>(i), s)
                         : std::fma(-step, static_cast<float>(steps - i - 1), e);
  return out;
}

// diffusers' betas_for_alpha_bar with the cosine transform (computed in Python floats).
std::vector<float> betas_for_alpha_bar(int num_diffusion_timesteps) {
  const double pi = 3.14159265358979323846;
  auto alpha_bar = [&](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * pi / 2);
    return c * c;
  };
  std::vector<float> betas(num_diffusion_timesteps);
  for (int i = 0; i < num_diffusion_timesteps; ++i) {
    const double t1 = static_cast<double>(i) / num_diffusion_timesteps;
    const double t2 = static_cast<double>(i + 1) / num_diffusion_timesteps;
    betas[i] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

// torch.cumprod on a float32 CPU tensor accumulates in double.
std::vector<float> cumprod_f32(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  double acc = 1.0;
  for (size_t i = 0; i < x.size(); ++i) {
    acc *= x[i];
    out[i] = static_cast<float>(acc);
  }
  return out;
}

// diffusers' rescale_zero_terminal_snr, float32 like its torch ops.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> alphas(betas.size());
  for (size_t i = 0; i < betas.size(); ++i) alphas[i] = 1.0f - betas[i];
  std::vector<float> sqrt_bar = cumprod_f32(alphas);
  for (float& a : sqrt_bar) a = std::sqrt(a);
  const float first = sqrt_bar.front(), last = sqrt_bar.back();
  const float ratio = first / (first - last);
  for (float& a : sqrt_bar) a = (a - last) * ratio;
  std::vector<float> out(betas.size());
  for (size_t i = 0; i < betas.size(); ++i) {
    const float bar = sqrt_bar[i] * sqrt_bar[i];
    const float prev = i == 0 ? 1.0f : sqrt_bar[i - 1] * sqrt_bar[i - 1];
    out[i] = 1.0f - (i == 0 ? bar : bar / prev);
  }
  return out;
}

// diffusers' _sigma_to_t: the fractional training timestep of sigma, by linear interpolation
// of log sigma (float32 log_sigmas, float64 arithmetic except the float32 low - high).
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int n = static_cast<int>(log_sigmas.size());
  int low = 0;
  for (int j = 0; j < n; ++j)
    if (log_sigma - log_sigmas[j] >= 0) low = j;
  low = std::min(low, n - 2);
  const float lo = log_sigmas[low], hi = log_sigmas[low + 1];
  double w = (lo - log_sigma) / static_cast<double>(lo - hi);
  w = std::clamp(w, 0.0, 1.0);
  return (1 - w) * low + w * (low + 1);
}

// torch.pow(float32 tensor, int): small exponents are repeated products.
float pow_int(float x, int e) {
  switch (e) {
    case 0: return 1.0f;
    case 1: return x;
    case 2: return x * x;
    case 3: return x * x * x;
    default: return std::pow(x, static_cast<float>(e));
  }
}

// torch.linalg.solve on float32: LU with partial pivoting (LAPACK getrf/getrs).
std::vector<float> solve_f32(std::vector<std::vector<float>> A, std::vector<float> b) {
  const size_t n = b.size();
  for (size_t j = 0; j < n; ++j) {
    size_t p = j;
    for (size_t i = j + 1; i < n; ++i)
      if (std::fabs(A[i][j]) > std::fabs(A[p][j])) p = i;
    std::swap(A[j], A[p]);
    std::swap(b[j], b[p]);
    if (A[j][j] == 0.0f) fail("{}: singular UniPC coefficient matrix (repeated sigmas in the schedule?)", kName);
    const float r = 1.0f / A[j][j];
    for (size_t i = j + 1; i < n; ++i) A[i][j] *= r;
    for (size_t i = j + 1; i < n; ++i)
      for (size_t k = j + 1; k < n; ++k) A[i][k] -= A[i][j] * A[j][k];
  }
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < i; ++k) b[i] -= A[i][k] * b[k];
  for (size_t i = n; i-- > 0;) {
    for (size_t k = i + 1; k < n; ++k) b[i] -= A[i][k] * b[k];
    b[i] /= A[i][i];
  }
  return b;
}

// torch.expm1 on a float32 CPU scalar is correctly rounded (glibc's expm1f is not always).
float expm1_f32(float x) { return static_cast<float>(std::expm1(static_cast<double>(x))); }

// einsum("k,bkc...->bc...", rhos, D1s) in float32.
Tensor weighted_sum(const std::vector<float>& rhos, const std::vector<Tensor>& d1s) {
  if (d1s.size() == 1) return ops::scale(d1s[0], rhos[0]);
  Tensor acc = ops::axpby(rhos[0], d1s[0], rhos[1], d1s[1]);
  for (size_t k = 2; k < d1s.size(); ++k) acc = ops::axpby(1.0f, acc, rhos[k], d1s[k]);
  return acc;
}

Tensor as_dtype(const Tensor& x, DType dtype) { return x.dtype() == dtype ? x : x.to(dtype); }

}  // namespace

UniPCMultistepConfig UniPCMultistepConfig::from_json(const Json& config, const std::string& path) {
  const ConfigReader r(config, path, kName);
  UniPCMultistepConfig c;
  c.num_train_timesteps = r.int32("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = r.number("beta_start", c.beta_start);
  c.beta_end = r.number("beta_end", c.beta_end);
  c.beta_schedule = r.string("beta_schedule", c.beta_schedule);
  c.trained_betas = r.optional_number_list("trained_betas");
  c.solver_order = r.int32("solver_order", c.solver_order);
  c.prediction_type = r.string("prediction_type", c.prediction_type);
  c.thresholding = r.boolean("thresholding", c.thresholding);
  c.dynamic_thresholding_ratio = r.number("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  c.sample_max_value = r.number("sample_max_value", c.sample_max_value);
  c.predict_x0 = r.boolean("predict_x0", c.predict_x0);
  c.solver_type = r.string("solver_type", c.solver_type);
  c.lower_order_final = r.boolean("lower_order_final", c.lower_order_final);
  for (int64_t step : r.integer_list("disable_corrector")) c.disable_corrector.push_back(static_cast<int>(step));
  r.require_absent("solver_p", "a solver_p scheduler cannot be given in a config file");
  c.use_karras_sigmas = r.boolean("use_karras_sigmas", c.use_karras_sigmas);
  c.use_exponential_sigmas = r.boolean("use_exponential_sigmas", c.use_exponential_sigmas);
  c.use_beta_sigmas = r.boolean("use_beta_sigmas", c.use_beta_sigmas);
  c.use_flow_sigmas = r.boolean("use_flow_sigmas", c.use_flow_sigmas);
  c.flow_shift = r.number("flow_shift", c.flow_shift);
  c.timestep_spacing = r.string("timestep_spacing", c.timestep_spacing);
  c.steps_offset = r.int32("steps_offset", c.steps_offset);
  c.final_sigmas_type = r.string("final_sigmas_type", c.final_sigmas_type);
  c.rescale_betas_zero_snr = r.boolean("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  c.use_dynamic_shifting = r.boolean("use_dynamic_shifting", c.use_dynamic_shifting);
  c.time_shift_type = r.string("time_shift_type", c.time_shift_type);
  c.sigma_min = r.optional_number("sigma_min");
  c.sigma_max = r.optional_number("sigma_max");
  c.shift_terminal = r.optional_number("shift_terminal");
  return c;
}

UniPCMultistepScheduler::UniPCMultistepScheduler(UniPCMultistepConfig config, const std::string& config_path)
    : config_(std::move(config)) {
  const UniPCMultistepConfig& c = config_;
  auto bad = [&](const char* field, const std::string& why) { scheduling::fail_field(config_path, kName, field, why); };
  auto one_of = [&](const char* field, const std::string& value, std::initializer_list<const char*> allowed) {
    scheduling::check_one_of(config_path, kName, field, value, allowed);
  };
  if (c.num_train_timesteps < 2) bad("num_train_timesteps", fmt::format("must be at least 2, got {}", c.num_train_timesteps));
  if (c.solver_order < 1) bad("solver_order", fmt::format("must be at least 1, got {}", c.solver_order));
  one_of("prediction_type", c.prediction_type, {"epsilon", "sample", "v_prediction", "flow_prediction"});
  one_of("timestep_spacing", c.timestep_spacing, {"linspace", "leading", "trailing"});
  one_of("final_sigmas_type", c.final_sigmas_type, {"zero", "sigma_min"});
  one_of("time_shift_type", c.time_shift_type, {"exponential", "linear"});
  one_of("solver_type", c.solver_type, {"bh1", "bh2", "midpoint", "heun", "logrho"});
  if (c.solver_type != "bh1") config_.solver_type = "bh2";  // diffusers maps the DPM-Solver names to bh2
  if (c.thresholding) bad("thresholding", "= true is not supported (dynamic thresholding is not implemented)");
  if (c.use_beta_sigmas) bad("use_beta_sigmas", "= true is not supported (beta sigmas need scipy's beta quantile)");
  if (c.use_karras_sigmas && c.use_exponential_sigmas)
    bad("use_exponential_sigmas", "and use_karras_sigmas cannot both be true");
  if (c.shift_terminal && !c.use_flow_sigmas) bad("shift_terminal", "is only supported with use_flow_sigmas = true");
  if (!c.predict_x0 && c.prediction_type == "flow_prediction")
    bad("predict_x0", "= false is not supported with prediction_type \"flow_prediction\"");
  // These combinations end in NaN/inf in diffusers: with a final sigma of 0 the last
  // log-SNR step h is infinite, and these updates multiply or divide by it.
  if (c.final_sigmas_type == "zero") {
    if (config_.solver_type == "bh1") bad("solver_type", "\"bh1\" needs final_sigmas_type \"sigma_min\" (NaN with \"zero\")");
    if (!c.predict_x0) bad("predict_x0", "= false needs final_sigmas_type \"sigma_min\" (NaN with \"zero\")");
    if (!c.lower_order_final && c.solver_order > 1)
      bad("lower_order_final", "= false needs final_sigmas_type \"sigma_min\" (inf with \"zero\")");
  }

  const int N = c.num_train_timesteps;
  std::vector<float> betas;
  if (c.trained_betas) {
    if (static_cast<int>(c.trained_betas->size()) != N)
      bad("trained_betas", fmt::format("has {} values, num_train_timesteps is {}", c.trained_betas->size(), N));
    for (double b : *c.trained_betas) betas.push_back(static_cast<float>(b));
  } else if (c.beta_schedule == "linear") {
    betas = torch_linspace_f32(c.beta_start, c.beta_end, N);
  } else if (c.beta_schedule == "scaled_linear") {
    betas = torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), N);
    for (float& b : betas) b = b * b;
  } else if (c.beta_schedule == "squaredcos_cap_v2") {
    betas = betas_for_alpha_bar(N);
  } else {
    one_of("beta_schedule", c.beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"});
  }
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  std::vector<float> alphas(N);
  for (int i = 0; i < N; ++i) alphas[i] = 1.0f - betas[i];
  alphas_cumprod_ = cumprod_f32(alphas);
  // diffusers: a terminal alpha_cumprod of 0 would make sigma infinite.
  if (c.rescale_betas_zero_snr) alphas_cumprod_.back() = std::ldexp(1.0f, -24);
  train_sigmas_.resize(N);
  for (int i = 0; i < N; ++i) train_sigmas_[i] = std::sqrt((1.0f - alphas_cumprod_[i]) / alphas_cumprod_[i]);
}

void UniPCMultistepScheduler::set_timesteps(const ScheduleRequest& request) {
  const UniPCMultistepConfig& c = config_;
  const std::optional<double>& mu = request.mu;
  const std::optional<std::vector<double>>& given = request.sigmas;
  int n = request.num_inference_steps;
  const int N = c.num_train_timesteps;
  if (c.use_dynamic_shifting && !mu) fail("{}: use_dynamic_shifting is set, so set_timesteps needs mu", kName);
  if (request.timesteps)
    fail("{}: set_timesteps takes no timesteps (diffusers {} accepts sigmas only); pass sigmas, or use "
         "FlowMatchEulerDiscreteScheduler", kName, "0.42.1");
  if (given) {
    if (!c.use_flow_sigmas)
      fail("{}: passing sigmas is only supported when use_flow_sigmas = true (diffusers raises the same)", kName);
    // diffusers builds exponential sigmas from the given ones and reads their timesteps off
    // log(sigmas); not reproduced here.
    if (c.use_exponential_sigmas) fail("{}: sigmas with use_exponential_sigmas = true are not supported", kName);
    if (given->empty()) fail("{}: sigmas must not be empty", kName);
    n = static_cast<int>(given->size());
  }
  if (n < 1) fail("{}: num_inference_steps must be at least 1, got {}", kName, n);

  // Integer timesteps of the spacing; the sigma schedules below replace them, except the default one.
  std::vector<double> ts;
  if (c.timestep_spacing == "linspace") {
    const std::vector<double> l = scheduling::np_linspace(0, N - 1, n + 1);
    for (int i = n; i >= 1; --i) ts.push_back(std::nearbyint(l[i]));
  } else if (c.timestep_spacing == "leading") {
    const int step_ratio = N / (n + 1);
    for (int i = n; i >= 1; --i) ts.push_back(static_cast<double>(i) * step_ratio + c.steps_offset);
  } else {  // trailing: np.arange(N, 0, -N / n).round() - 1
    const double step = -static_cast<double>(N) / n;
    const int64_t len = static_cast<int64_t>(std::ceil(-N / step));
    const double a0 = N, delta = (a0 + step) - a0;  // numpy fills start + i * (a[1] - a[0])
    for (int64_t i = 0; i < len; ++i) ts.push_back(std::nearbyint(i == 1 ? a0 + step : a0 + i * delta) - 1);
  }

  std::vector<double> s;  // float64 sigmas, as numpy computes them
  double sigma_last = 0.0;
  const bool last_is_min = c.final_sigmas_type == "sigma_min";
  if (c.use_karras_sigmas || c.use_exponential_sigmas) {
    std::vector<float> log_sigmas(N);
    for (int i = 0; i < N; ++i) log_sigmas[i] = std::log(train_sigmas_[i]);
    // diffusers flips the input sigmas and takes the ends: the training sigmas' (ascending),
    // or the given ones' (descending, so their first is "sigma_min").
    const double sigma_min = c.sigma_min.value_or(given ? given->front() : train_sigmas_.front());
    const double sigma_max = c.sigma_max.value_or(given ? given->back() : train_sigmas_.back());
    ts.clear();
    if (c.use_karras_sigmas) {
      s = scheduling::karras_sigmas(sigma_min, sigma_max, n);
      if (c.use_flow_sigmas) {
        for (double& x : s) x = x / (x + 1);
        for (double x : s) ts.push_back(std::trunc(x * N));
      } else {
        for (double x : s) ts.push_back(std::nearbyint(sigma_to_t(x, log_sigmas)));
      }
    } else {
      s = scheduling::exponential_sigmas(sigma_min, sigma_max, n);
      for (double x : s) ts.push_back(std::trunc(sigma_to_t(x, log_sigmas)));
    }
    if (last_is_min) sigma_last = s.back();
  } else if (c.use_flow_sigmas) {
    if (given) {
      s = *given;
    } else {
      s = scheduling::np_linspace(1.0, 1.0 / N, n + 1);
      s.pop_back();
    }
    if (c.use_dynamic_shifting) {
      s = scheduling::time_shift(c.time_shift_type, *mu, s);
    } else {
      for (double& x : s) x = c.flow_shift * x / (1 + (c.flow_shift - 1) * x);
    }
    if (c.shift_terminal && *c.shift_terminal != 0.0) s = scheduling::stretch_shift_to_terminal(s, *c.shift_terminal);
    if (std::fabs(s[0] - 1) < 1e-6) s[0] -= 1e-6;  // keeps the first step's log(sigma_t) finite
    ts.clear();
    for (double x : s) ts.push_back(std::trunc(x * N));  // torch .to(int64) truncates
    if (last_is_min) sigma_last = s.back();
  } else {
    // np.interp(timesteps, arange(N), train_sigmas): exact at the integer timesteps, clamped at the ends.
    for (double t : ts) s.push_back(train_sigmas_[static_cast<size_t>(std::clamp(t, 0.0, N - 1.0))]);
    if (last_is_min) sigma_last = train_sigmas_.front();
  }

  timesteps_ = ts;
  sigmas_.clear();
  for (double x : s) sigmas_.push_back(static_cast<float>(x));
  sigmas_.push_back(static_cast<float>(sigma_last));
  sigmas_out_.assign(sigmas_.begin(), sigmas_.end());

  step_index_ = 0;
  model_outputs_.assign(c.solver_order, Tensor());
  lower_order_nums_ = 0;
  this_order_ = 0;
  last_sample_ = Tensor();
}

UniPCMultistepScheduler::AlphaSigma UniPCMultistepScheduler::alpha_sigma(float sigma) const {
  if (config_.use_flow_sigmas) return {1.0f - sigma, sigma};
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  return {alpha, sigma * alpha};
}

UniPCMultistepScheduler::BhTerms UniPCMultistepScheduler::bh_terms(float sigma_t, float sigma_s0,
                                                                   const std::vector<float>& sigma_si,
                                                                   int order) const {
  BhTerms t;
  const AlphaSigma at = alpha_sigma(sigma_t), as0 = alpha_sigma(sigma_s0);
  t.alpha_t = at.alpha;
  t.sigma_t = at.sigma;
  t.alpha_s0 = as0.alpha;
  t.sigma_s0 = as0.sigma;
  const float lambda_t = std::log(at.alpha) - std::log(at.sigma);
  const float lambda_s0 = std::log(as0.alpha) - std::log(as0.sigma);
  const float h = lambda_t - lambda_s0;
  for (float si : sigma_si) {
    const AlphaSigma a = alpha_sigma(si);
    const float lambda_si = std::log(a.alpha) - std::log(a.sigma);
    t.rks.push_back((lambda_si - lambda_s0) / h);
  }
  t.rks.push_back(1.0f);

  const float hh = config_.predict_x0 ? -h : h;
  t.h_phi_1 = expm1_f32(hh);  // h * phi_1(h) = e^h - 1
  float h_phi_k = t.h_phi_1 / hh - 1.0f;
  t.B_h = config_.solver_type == "bh1" ? hh : expm1_f32(hh);
  int64_t factorial_i = 1;
  for (int i = 1; i <= order; ++i) {
    std::vector<float> row;
    for (float r : t.rks) row.push_back(pow_int(r, i - 1));
    t.R.push_back(std::move(row));
    t.b.push_back(h_phi_k * static_cast<float>(factorial_i) / t.B_h);
    factorial_i *= i + 1;
    h_phi_k = h_phi_k / hh - static_cast<float>(1.0 / static_cast<double>(factorial_i));
  }
  return t;
}

Tensor UniPCMultistepScheduler::convert_model_output(const Tensor& model_output, const Tensor& sample) const {
  const float sigma = sigmas_[step_index_];
  const std::string& type = config_.prediction_type;
  if (type == "flow_prediction") return ops::sub(sample, ops::scale(model_output, sigma));
  const AlphaSigma a = alpha_sigma(sigma);
  if (config_.predict_x0) {
    if (type == "epsilon") return div_scalar(ops::sub(sample, ops::scale(model_output, a.sigma)), a.alpha);
    if (type == "sample") return model_output.clone();
    return ops::sub(ops::scale(sample, a.alpha), ops::scale(model_output, a.sigma));  // v_prediction
  }
  if (type == "epsilon") return model_output.clone();
  if (type == "sample") return div_scalar(ops::sub(sample, ops::scale(model_output, a.alpha)), a.sigma);
  return ops::add(ops::scale(model_output, a.alpha), ops::scale(sample, a.sigma));  // v_prediction
}

Tensor UniPCMultistepScheduler::base_update(const BhTerms& t, const Tensor& x, const Tensor& m0) const {
  const float coef_x = config_.predict_x0 ? t.sigma_t / t.sigma_s0 : t.alpha_t / t.alpha_s0;
  const float coef_m = (config_.predict_x0 ? t.alpha_t : t.sigma_t) * t.h_phi_1;
  return ops::sub(ops::scale(x, coef_x), ops::scale(m0, coef_m));
}

std::vector<Tensor> UniPCMultistepScheduler::differences(const BhTerms& t, int count) const {
  const Tensor& m0 = model_outputs_.back();
  std::vector<Tensor> d1s;
  for (int i = 1; i <= count; ++i) {
    const Tensor& mi = model_outputs_[model_outputs_.size() - 1 - i];
    d1s.push_back(div_scalar(ops::sub(mi, m0), t.rks[i - 1]));
  }
  return d1s;
}

Tensor UniPCMultistepScheduler::multistep_uni_p_bh_update(const Tensor& sample, int order) const {
  const int i = step_index_;
  std::vector<float> sigma_si;
  for (int k = 1; k < order; ++k) sigma_si.push_back(sigmas_[i - k]);
  const BhTerms t = bh_terms(sigmas_[i + 1], sigmas_[i], sigma_si, order);
  Tensor x_t = base_update(t, sample, model_outputs_.back());
  if (order >= 2) {
    const std::vector<Tensor> d1s = differences(t, order - 1);
    std::vector<float> rhos_p{0.5f};
    if (order > 2) {
      std::vector<std::vector<float>> R(t.R.begin(), t.R.end() - 1);
      for (auto& row : R) row.pop_back();
      rhos_p = solve_f32(R, std::vector<float>(t.b.begin(), t.b.end() - 1));
    }
    const float coef = (config_.predict_x0 ? t.alpha_t : t.sigma_t) * t.B_h;
    x_t = ops::sub(x_t, ops::scale(weighted_sum(rhos_p, d1s), coef));
  }
  // With order 1 diffusers subtracts coef * 0, which leaves x_t as it is (coef is finite:
  // the configs where it is not are rejected by the constructor).
  return as_dtype(x_t, sample.dtype());
}

Tensor UniPCMultistepScheduler::multistep_uni_c_bh_update(const Tensor& this_model_output, const Tensor& last_sample,
                                                          int order) const {
  const int i = step_index_;
  const Tensor& m0 = model_outputs_.back();
  std::vector<float> sigma_si;
  for (int k = 1; k < order; ++k) sigma_si.push_back(sigmas_[i - (k + 1)]);
  const BhTerms t = bh_terms(sigmas_[i], sigmas_[i - 1], sigma_si, order);
  Tensor x_t = base_update(t, last_sample, m0);
  const std::vector<Tensor> d1s = differences(t, order - 1);
  const std::vector<float> rhos_c = order == 1 ? std::vector<float>{0.5f} : solve_f32(t.R, t.b);
  Tensor res = ops::scale(ops::sub(this_model_output, m0), rhos_c.back());
  if (!d1s.empty()) res = ops::add(weighted_sum(rhos_c, d1s), res);
  const float coef = (config_.predict_x0 ? t.alpha_t : t.sigma_t) * t.B_h;
  x_t = ops::sub(x_t, ops::scale(res, coef));
  return as_dtype(x_t, last_sample.dtype());
}

Tensor UniPCMultistepScheduler::step(const Tensor& model_output, double timestep, const Tensor& sample) {
  const int n = static_cast<int>(timesteps_.size());
  if (n == 0) fail("{}: call set_timesteps before step", kName);
  if (step_index_ >= n) fail("{}: all {} steps are done; call set_timesteps again", kName, n);
  if (timestep != timesteps_[step_index_])
    fail("{}: step {} expects timestep {}, got {}", kName, step_index_, timesteps_[step_index_], timestep);
  if (model_output.shape() != sample.shape())
    fail("{}: model_output {} and sample {} differ in shape", kName, model_output.str(), sample.str());

  const int order = config_.solver_order;
  const bool use_corrector = step_index_ > 0 && last_sample_.defined() &&
                             std::find(config_.disable_corrector.begin(), config_.disable_corrector.end(),
                                       step_index_ - 1) == config_.disable_corrector.end();
  Tensor x0 = convert_model_output(model_output, sample);
  Tensor x = use_corrector ? multistep_uni_c_bh_update(x0, last_sample_, this_order_) : sample;

  model_outputs_.erase(model_outputs_.begin());
  model_outputs_.push_back(x0);
  const int this_order = config_.lower_order_final ? std::min(order, n - step_index_) : order;
  this_order_ = std::min(this_order, lower_order_nums_ + 1);  // warm-up of the multistep history
  last_sample_ = x;
  Tensor prev_sample = multistep_uni_p_bh_update(x, this_order_);
  lower_order_nums_ = std::min(lower_order_nums_ + 1, order);
  ++step_index_;
  return prev_sample;
}

}  // namespace vgen
