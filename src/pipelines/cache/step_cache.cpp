#include "pipelines/cache/step_cache.h"

#include <cmath>
#include <regex>

#include "core/error.h"
#include "ops/ops.h"

namespace vgen {
namespace {

// mean|a - b| / mean|b| over every element, in float32 differences summed in double.
double relative_l1(const Tensor& a, const Tensor& b) {
  const Tensor a32 = a.to(DType::F32), b32 = b.to(DType::F32);
  const double denominator = ops::mean_abs(b32);
  const double numerator = ops::mean_abs(ops::sub(a32, b32));
  if (denominator == 0.0) return numerator == 0.0 ? 0.0 : INFINITY;
  return numerator / denominator;
}

// diffusers' hooks/taylorseer_cache.py identifiers.
const std::vector<std::string> kTransformerBlockIdentifiers = {
    "^blocks.*attn", "^transformer_blocks.*attn", "^single_transformer_blocks.*attn",
    "^temporal_transformer_blocks.*attn"};
const std::vector<std::string> kLiteSkipped = {"^[^.]*block[^.]*\\.[^.]+$"};
const std::vector<std::string> kLiteCached = {"^proj_out$"};

bool full_match_any(const std::string& name, const std::vector<std::regex>& patterns) {
  for (const std::regex& re : patterns)
    if (std::regex_match(name, re)) return true;
  return false;
}

std::vector<std::regex> compile(const std::vector<std::string>& patterns) {
  std::vector<std::regex> out;
  for (const std::string& p : patterns) out.emplace_back(p);
  return out;
}

// Python's % for a positive divisor (non-negative result).
int floor_mod(int a, int b) { return ((a % b) + b) % b; }

}  // namespace

TaylorSeerHooks resolve_taylorseer_hooks(const CacheConfig& config, const std::vector<std::string>& module_names) {
  VGEN_CHECK(!module_names.empty(), "TaylorSeer: the model's module names are needed to place its hooks");
  if (const auto p = config.problem()) fail("cache_config.{}: {}", p->first, p->second);
  // _resolve_patterns, then apply_taylorseer_cache: no cache_identifiers -> the attention
  // blocks' default; use_lite_mode replaces both lists. A module matching both is skipped.
  std::vector<std::string> skipped = config.skip_predict_identifiers;
  std::vector<std::string> cached = config.cache_identifiers.empty() ? kTransformerBlockIdentifiers
                                                                     : config.cache_identifiers;
  if (config.use_lite_mode) {
    cached = kLiteCached;
    skipped = kLiteSkipped;
  }
  const std::vector<std::regex> skip_re = compile(skipped), cache_re = compile(cached);
  TaylorSeerHooks hooks;
  for (const std::string& name : module_names) {
    if (full_match_any(name, skip_re)) hooks.skipped.push_back(name);
    else if (full_match_any(name, cache_re)) hooks.cached.push_back(name);
  }
  // What vgen runs: see TaylorSeerHooks.
  for (const std::string& name : hooks.cached)
    if (name != "proj_out")
      fail("cache_config.cache_identifiers: they match the module '{}'; vgen's TaylorSeer predicts only the model's "
           "output projection proj_out (use_lite_mode's choice), not the outputs of other modules",
           name.empty() ? std::string("(the whole model)") : name);
  if (hooks.cached.empty() && !hooks.skipped.empty())
    fail("cache_config.skip_predict_identifiers: they match '{}' but no module is predicted (cache_identifiers "
         "match none): diffusers would feed the skipped modules' zeros to the output, which vgen does not run",
         hooks.skipped.front());
  for (const std::string& name : hooks.skipped)
    if (name != "norm_out" && name != "blocks" && !name.starts_with("blocks."))
      fail("cache_config.skip_predict_identifiers: they match '{}'; vgen skips only modules of the block stack "
           "(blocks...) and norm_out, whose outputs feed only the predicted proj_out",
           name.empty() ? std::string("(the whole model)") : name);
  return hooks;
}

std::vector<float> nearest_interp(const std::vector<float>& src, int length) {
  VGEN_CHECK(!src.empty() && length >= 1, "nearest_interp: {} values to {}", src.size(), length);
  if (length == 1) return {src.back()};
  // torch: arange(length, float32) * ((n - 1) / (length - 1)), rounded half to even.
  const float scale = static_cast<float>(static_cast<double>(src.size() - 1) / static_cast<double>(length - 1));
  std::vector<float> out(static_cast<size_t>(length));
  for (int i = 0; i < length; ++i) {
    const float x = static_cast<float>(i) * scale;
    const auto index = static_cast<size_t>(std::nearbyint(x));
    out[static_cast<size_t>(i)] = src[std::min(index, src.size() - 1)];
  }
  return out;
}

double polyval(const std::vector<double>& coefficients, double x) {
  double y = 0.0;
  for (double c : coefficients) y = y * x + c;
  return y;
}

StepCache::StepCache(CacheConfig config, int num_inference_steps, const std::vector<std::string>& module_names)
    : config_(std::move(config)), num_inference_steps_(num_inference_steps) {
  if (const auto p = config_.problem()) fail("cache_config.{}: {}", p->first, p->second);
  VGEN_CHECK(num_inference_steps_ >= 1, "StepCache: {} inference steps", num_inference_steps_);
  stats_.backend = cache_backend_name(config_.cache_backend);
  if (config_.cache_backend == CacheBackend::TeaCache && config_.coefficients.empty())
    fail("cache_config.coefficients: TeaCache needs the rescaling coefficients of the model");
  if (config_.cache_backend == CacheBackend::MagCache) {
    const std::vector<float> ratios(config_.mag_ratios.begin(), config_.mag_ratios.end());  // torch.tensor(list): float32
    const int n = config_.num_inference_steps.value_or(num_inference_steps_);
    mag_ratios_ = static_cast<int>(ratios.size()) == n ? ratios : nearest_interp(ratios, n);
  }
  if (config_.cache_backend == CacheBackend::TaylorSeer) taylorseer_hooks_ = resolve_taylorseer_hooks(config_, module_names);
}

std::pair<StepCache::State*, size_t> StepCache::state_for(int branch, int expert) {
  State& s = states_[std::make_pair(branch, expert)];
  size_t entry = 0;
  while (entry < stats_.entries.size() &&
         (stats_.entries[entry].branch != branch || stats_.entries[entry].expert != expert))
    ++entry;
  if (entry == stats_.entries.size()) stats_.entries.push_back({branch, expert, 0, 0});
  return {&s, entry};
}

void StepCache::record(State& s, size_t entry, int branch, int expert, bool computed) {
  ++s.calls;
  s.consecutive = computed ? 0 : s.consecutive + 1;
  (computed ? stats_.entries[entry].computed : stats_.entries[entry].skipped) += 1;
  stats_.decisions.push_back({step_, branch, expert, computed});
}

Tensor StepCache::run(Branch branch, int expert, const Tensor& hidden, const TimestepEmbeddings& embeddings,
                      int64_t num_blocks, const BlockRunner& blocks) {
  VGEN_CHECK(!works_on_output(), "StepCache::run: {} works on whole calls (run_output)", stats_.backend);
  const int b = branch == Branch::Conditional ? 0 : 1;
  auto [state, entry] = state_for(b, expert);
  State& s = *state;
  bool computed = true;
  Tensor out;
  switch (config_.cache_backend) {
    case CacheBackend::TeaCache: {
      const Tensor& modulated = config_.use_ret_steps ? embeddings.timestep_proj : embeddings.temb;
      out = run_teacache(s, expert, hidden, modulated, num_blocks, blocks, computed);
      break;
    }
    case CacheBackend::MagCache: out = run_magcache(s, hidden, num_blocks, blocks, computed); break;
    case CacheBackend::FirstBlockCache: out = run_fbcache(s, hidden, num_blocks, blocks, computed); break;
    case CacheBackend::TaylorSeer:
    case CacheBackend::None: out = blocks(hidden, 0, num_blocks); break;
  }
  record(s, entry, b, expert, computed);
  return out;
}

Tensor StepCache::run_output(Branch branch, int expert, const OutputFn& forward) {
  VGEN_CHECK(works_on_output(), "StepCache::run_output: {} works on the block stack (run)", stats_.backend);
  const int b = branch == Branch::Conditional ? 0 : 1;
  auto [state, entry] = state_for(b, expert);
  State& s = *state;
  // TaylorSeerCacheHook._measure_should_compute: the state's call counter (current_step).
  const int call = s.calls;
  const int before = config_.disable_cache_before_step;
  const bool warmup = call < before;
  const bool interval = floor_mod(call - before - 1, config_.cache_interval) == 0;
  const bool cooldown = config_.disable_cache_after_step && call >= *config_.disable_cache_after_step;
  const bool computed = !taylorseer_hooks_.predicts_output() || warmup || interval || cooldown ||
                        s.last_update_call < 0 || limit_reached(s);
  Tensor out;
  if (computed) {
    out = forward();
    if (taylorseer_hooks_.predicts_output()) {
      taylor_update(s, out);
      s.last_update_call = call;
    }
  } else {
    out = taylor_predict(s);
  }
  record(s, entry, b, expert, computed);
  return out;
}

// TaylorSeerState.update: order 0 the output, order j + 1 (order j - the previous order j,
// upcast to the output's dtype) / the calls between, in the output's dtype; each stored in
// taylor_factors_dtype. A factor of another shape stops the differences (diffusers restarts).
void StepCache::taylor_update(State& s, const Tensor& features) const {
  const int call = s.calls;
  std::vector<Tensor> factors = {features};
  if (s.last_update_call >= 0) {
    const int delta = call - s.last_update_call;
    VGEN_CHECK(delta > 0, "TaylorSeer: update at call {} after one at call {}", call, s.last_update_call);
    // torch divides by the Python int in float (opmath): a float32 divisor, exact for any delta.
    const Tensor divisor = Tensor::full({1}, static_cast<float>(delta), DType::F32, features.device());
    for (int j = 0; j < config_.max_order; ++j) {
      if (static_cast<size_t>(j) >= s.taylor_factors.size()) break;
      const Tensor& previous = s.taylor_factors[static_cast<size_t>(j)];
      if (previous.shape() != factors.back().shape()) break;
      factors.push_back(ops::div(ops::sub(factors.back(), previous.to(features.dtype())), divisor));
    }
  }
  // The stored order 0 must not alias the model's output (a CUDA graph's output buffer is
  // rewritten by the next replay).
  for (Tensor& f : factors) f = f.dtype() == config_.taylor_factors_dtype ? f.clone() : f.to(config_.taylor_factors_dtype);
  s.taylor_factors = std::move(factors);
  s.output_dtype = features.dtype();
}

// TaylorSeerState.predict: zeros + sum_k factor_k (in the output's dtype) * d^k / k!, one
// rounding per multiply and per add as torch.
Tensor StepCache::taylor_predict(const State& s) const {
  VGEN_CHECK(!s.taylor_factors.empty(), "TaylorSeer: predicting without computed factors");
  const int offset = s.calls - s.last_update_call;
  Tensor out = s.taylor_factors[0].to(s.output_dtype).clone();  // zeros + factor_0 * 1.0
  double factorial = 1.0;
  for (size_t order = 1; order < s.taylor_factors.size(); ++order) {
    factorial *= static_cast<double>(order);
    const double coeff = std::pow(static_cast<double>(offset), static_cast<double>(order)) / factorial;
    out = ops::add(out, ops::scale(s.taylor_factors[order].to(s.output_dtype), static_cast<float>(coeff)));
  }
  return out;
}

Tensor StepCache::run_teacache(State& s, int expert, const Tensor& hidden, const Tensor& modulated, int64_t n,
                               const BlockRunner& blocks, bool& computed) {
  const std::vector<double>& coefficients = expert == 0 ? config_.coefficients : config_.coefficients_2;
  if (coefficients.empty())
    fail("cache_config.coefficients_2: TeaCache needs the second expert's rescaling coefficients (no published "
         "ones for two-expert models)");
  const int warmup = config_.use_ret_steps ? 5 : 1;
  const bool forced = s.calls < warmup || (!config_.use_ret_steps && step_ >= num_inference_steps_ - 1) ||
                      !s.residual.defined() || !s.previous_modulated.defined() || limit_reached(s);
  if (forced) {
    s.accumulated = 0.0;
  } else {
    s.accumulated += polyval(coefficients, relative_l1(modulated, s.previous_modulated));
    if (s.accumulated < config_.teacache_thresh) {
      computed = false;
    } else {
      s.accumulated = 0.0;
    }
  }
  s.previous_modulated = modulated;
  if (!computed) return ops::add(hidden, s.residual);
  Tensor out = blocks(hidden, 0, n);
  s.residual = ops::sub(out, hidden);
  return out;
}

Tensor StepCache::run_magcache(State& s, const Tensor& hidden, int64_t n, const BlockRunner& blocks, bool& computed) {
  const int steps = config_.num_inference_steps.value_or(num_inference_steps_);
  const int current = s.mag_step;
  const float scale = current < static_cast<int>(mag_ratios_.size()) ? mag_ratios_[static_cast<size_t>(current)] : 1.0f;
  const int retention_step = static_cast<int>(config_.retention_ratio * steps + 0.5);
  if (current >= retention_step) {
    s.accumulated_ratio *= scale;
    s.accumulated_steps += 1;
    s.accumulated_err += std::abs(1.0f - s.accumulated_ratio);
    if (s.residual.defined() && s.accumulated_err <= static_cast<float>(config_.effective_threshold()) &&
        s.accumulated_steps <= config_.max_skip_steps && !limit_reached(s)) {
      computed = false;
    } else {
      s.accumulated_ratio = 1.0f;
      s.accumulated_steps = 0;
      s.accumulated_err = 0.0f;
    }
  }
  Tensor out;
  if (computed) {
    out = blocks(hidden, 0, n);
    s.residual = ops::sub(out, hidden);
  } else {
    out = ops::add(hidden, s.residual);
  }
  // diffusers' _advance_step: the counters start over after num_inference_steps calls.
  if (++s.mag_step >= steps) {
    s.mag_step = 0;
    s.accumulated_ratio = 1.0f;
    s.accumulated_steps = 0;
    s.accumulated_err = 0.0f;
    s.residual = Tensor();
  }
  return out;
}

Tensor StepCache::run_fbcache(State& s, const Tensor& hidden, int64_t n, const BlockRunner& blocks, bool& computed) {
  VGEN_CHECK(n >= 2, "First-Block-Cache needs at least 2 transformer blocks (a head and a tail), the model has {}", n);
  const Tensor head = blocks(hidden, 0, 1);
  const Tensor head_residual = ops::sub(head, hidden);
  if (s.head_residual.defined() && s.residual.defined() && !limit_reached(s))
    computed = relative_l1(head_residual, s.head_residual) > config_.effective_threshold();
  if (!computed) return ops::add(s.residual, head);
  s.head_residual = head_residual;
  Tensor out = blocks(head, 1, n);
  s.residual = ops::sub(out, head);
  return out;
}

}  // namespace vgen
