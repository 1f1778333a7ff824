// The denoising loop shared by every pipeline: scheduler steps, classifier-free guidance
// (with guidance_rescale), per-step progress and cancellation. A model plugs in a
// function that predicts the noise (or flow) for one conditioning branch.
#pragma once

#include <functional>

#include "pipelines/pipeline.h"
#include "schedulers/scheduler.h"

namespace vgen {

enum class Branch { Conditional, Unconditional };

// Predicts the model output for `latents` at `timestep` for one branch.
using DenoiseFn = std::function<Tensor(const Tensor& latents, double timestep, Branch branch)>;

struct DenoiseConfig {
  double guidance_scale = 1.0;
  double guidance_rescale = 0.0;
  bool do_classifier_free_guidance = false;
};

// Runs all scheduler timesteps from `latents`; returns the denoised latents.
Tensor run_denoising_loop(Scheduler& scheduler, Tensor latents, const DenoiseConfig& config, const DenoiseFn& predict,
                          const StepCallback& on_step);

// noise_uncond + scale * (noise_cond - noise_uncond), then diffusers' rescale_noise_cfg
// when guidance_rescale > 0 (Lin et al. 2023, section 3.4).
Tensor apply_guidance(const Tensor& noise_cond, const Tensor& noise_uncond, double guidance_scale,
                      double guidance_rescale);

}  // namespace vgen
