// The denoising loop shared by every pipeline: scheduler steps, classifier-free guidance
// (with guidance_rescale), switching between two experts (Wan2.2 A14B), per-step progress
// and cancellation. A model plugs in a function that predicts the noise (or flow) for one
// conditioning branch with one expert.
#pragma once

#include <functional>
#include <optional>

#include "pipelines/pipeline.h"
#include "schedulers/scheduler.h"

namespace vgen {

enum class Branch { Conditional, Unconditional };

class StepCache;  // pipelines/cache/step_cache.h

// Predicts the model output for `latents` at `timestep` for one branch; `expert` is 0, or 1
// for the low-noise expert of a two-expert model.
using DenoiseFn = std::function<Tensor(const Tensor& latents, double timestep, Branch branch, int expert)>;

struct DenoiseConfig {
  double guidance_scale = 1.0;
  double guidance_rescale = 0.0;
  // Two experts (diffusers' boundary_ratio * num_train_timesteps): timesteps >= this go to
  // expert 0 with guidance_scale, the others to expert 1 with guidance_scale_2.
  std::optional<double> boundary_timestep;
  // The alternative for explicit (distilled) schedules: steps with index < boundary_step run
  // expert 0, the others expert 1. Takes precedence over boundary_timestep.
  std::optional<int> boundary_step;
  double guidance_scale_2 = 1.0;
  // Step caching (issue 15): told each step's index before its calls; the model function runs
  // its block stack through it (StepCache::run), keyed by branch and expert. Null: none.
  StepCache* cache = nullptr;

  // Which expert runs step `step_index` (timestep t), and with which guidance scale; a scale
  // above 1 means CFG (two transformer calls), as diffusers' do_classifier_free_guidance.
  int expert_at(int step_index, double t) const {
    if (boundary_step) return step_index < *boundary_step ? 0 : 1;
    return boundary_timestep && t < *boundary_timestep ? 1 : 0;
  }
  double guidance_at(int step_index, double t) const {
    return expert_at(step_index, t) == 1 ? guidance_scale_2 : guidance_scale;
  }
  // Whether any step may run CFG (the negative prompt is needed).
  bool any_cfg() const {
    return guidance_scale > 1.0 || ((boundary_timestep || boundary_step) && guidance_scale_2 > 1.0);
  }
};

// Runs all scheduler timesteps from `latents`; returns the denoised latents.
Tensor run_denoising_loop(Scheduler& scheduler, Tensor latents, const DenoiseConfig& config, const DenoiseFn& predict,
                          const StepCallback& on_step);

// noise_uncond + scale * (noise_cond - noise_uncond), then diffusers' rescale_noise_cfg
// when guidance_rescale > 0 (Lin et al. 2023, section 3.4).
Tensor apply_guidance(const Tensor& noise_cond, const Tensor& noise_uncond, double guidance_scale,
                      double guidance_rescale);

}  // namespace vgen
