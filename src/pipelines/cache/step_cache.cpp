#include "pipelines/cache/step_cache.h"

#include <cmath>

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

}  // namespace

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

StepCache::StepCache(CacheConfig config, int num_inference_steps)
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
}

Tensor StepCache::run(Branch branch, int expert, const Tensor& hidden, const Tensor& modulated, int64_t num_blocks,
                      const BlockRunner& blocks) {
  const int b = branch == Branch::Conditional ? 0 : 1;
  const auto key = std::make_pair(b, expert);
  auto [it, inserted] = states_.try_emplace(key);
  State& s = it->second;
  size_t entry = 0;
  while (entry < stats_.entries.size() &&
         (stats_.entries[entry].branch != b || stats_.entries[entry].expert != expert))
    ++entry;
  if (entry == stats_.entries.size()) stats_.entries.push_back({b, expert, 0, 0});

  bool computed = true;
  Tensor out;
  switch (config_.cache_backend) {
    case CacheBackend::TeaCache: out = run_teacache(s, expert, hidden, modulated, num_blocks, blocks, computed); break;
    case CacheBackend::MagCache: out = run_magcache(s, hidden, num_blocks, blocks, computed); break;
    case CacheBackend::FirstBlockCache: out = run_fbcache(s, hidden, num_blocks, blocks, computed); break;
    case CacheBackend::None: out = blocks(hidden, 0, num_blocks); break;
  }
  ++s.calls;
  s.consecutive = computed ? 0 : s.consecutive + 1;
  (computed ? stats_.entries[entry].computed : stats_.entries[entry].skipped) += 1;
  stats_.decisions.push_back({step_, b, expert, computed});
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
    s.accumulated += std::abs(polyval(coefficients, relative_l1(modulated, s.previous_modulated)));
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
