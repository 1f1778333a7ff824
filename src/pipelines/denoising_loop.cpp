#include "pipelines/denoising_loop.h"

#include <chrono>
#include <cmath>

#include "core/execution_context.h"
#include "ops/ops.h"
#include "pipelines/cache/step_cache.h"

namespace vgen {
namespace {

// Standard deviation over all but the batch dim (torch.std, unbiased), per batch entry.
std::vector<double> std_per_batch(const Tensor& x) {
  const std::vector<float> v = x.to_vector();
  const int64_t B = x.size(0), n = x.numel() / B;
  std::vector<double> out(B);
  for (int64_t b = 0; b < B; ++b) {
    double mean = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; ++i) mean += v[b * n + i];
    mean /= n;
    for (int64_t i = 0; i < n; ++i) ss += (v[b * n + i] - mean) * (v[b * n + i] - mean);
    out[b] = std::sqrt(ss / std::max<int64_t>(n - 1, 1));
  }
  return out;
}

}  // namespace

Tensor apply_guidance(const Tensor& noise_cond, const Tensor& noise_uncond, double guidance_scale,
                      double guidance_rescale) {
  // Same association as diffusers: uncond + scale * (cond - uncond).
  Tensor guided = ops::add(noise_uncond, ops::scale(ops::sub(noise_cond, noise_uncond), static_cast<float>(guidance_scale)));
  if (guidance_rescale <= 0.0) return guided;
  const std::vector<double> std_text = std_per_batch(noise_cond), std_cfg = std_per_batch(guided);
  std::vector<float> factors(std_text.size());
  for (size_t b = 0; b < factors.size(); ++b) {
    const double ratio = std_text[b] / std_cfg[b];
    factors[b] = static_cast<float>(guidance_rescale * ratio + (1.0 - guidance_rescale));
  }
  Shape shape(guided.dim(), 1);
  shape[0] = guided.size(0);
  return ops::mul(guided, Tensor::from_vector(factors, shape).to(guided.device()));
}

Tensor run_denoising_loop(Scheduler& scheduler, Tensor latents, const DenoiseConfig& config, const DenoiseFn& predict,
                          const StepCallback& on_step) {
  const std::vector<double>& timesteps = scheduler.timesteps();
  const int total = static_cast<int>(timesteps.size());
  for (int i = 0; i < total; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const double t = timesteps[i];
    const int expert = config.expert_at(i, t);
    const double guidance = config.guidance_at(i, t);
    if (config.cache) config.cache->begin_step(i);
    Tensor noise_pred;
    const ParallelLayout& parallel = ExecutionContext::current().parallel();
    if (guidance > 1.0 && parallel.sizes().cfg_size == 2) {
      // CFG parallel: each half of the ranks predicts one branch; the pair is exchanged so
      // every rank guides (and steps) identically.
      const Branch mine = parallel.cfg_rank() == 0 ? Branch::Conditional : Branch::Unconditional;
      const Tensor both = parallel.cfg().all_gather(predict(latents, t, mine, expert));  // [cond, uncond]
      noise_pred = apply_guidance(both.select(0, 0), both.select(0, 1), guidance, config.guidance_rescale);
    } else {
      noise_pred = predict(latents, t, Branch::Conditional, expert);
    }
    if (guidance > 1.0 && parallel.sizes().cfg_size == 1) {
      const Tensor noise_uncond = predict(latents, t, Branch::Unconditional, expert);
      noise_pred = apply_guidance(noise_pred, noise_uncond, guidance, config.guidance_rescale);
    }
    latents = scheduler.step(noise_pred, t, latents);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (on_step && !on_step({i + 1, total, t, seconds, expert})) throw Cancelled();
  }
  return latents;
}

}  // namespace vgen
