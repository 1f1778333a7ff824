// Wan's components alone for `vgen bench transformer|vae|image_encoder` (registered in pipelines/registry.cpp):
// the family turns a pixel size into its latent shape, so the bench driver needs no Wan facts.
#pragma once

#include <memory>
#include <string>

#include "pipelines/registry.h"

namespace vgen {

// One WanTransformer3DModel forward at the latent size of height x width x num_frames.
ComponentBench wan_transformer_bench(const std::string& dir, const ComponentBenchOptions& options,
                                     std::shared_ptr<ExecutionContext> context);
// One AutoencoderKLWan decode of random latents of that size (options.encode: one encode of
// a random video of that size).
ComponentBench wan_vae_bench(const std::string& dir, const ComponentBenchOptions& options,
                             std::shared_ptr<ExecutionContext> context);
// One CLIPVisionModel encode (the penultimate hidden states, as Wan I2V uses them) of a random
// image at the model's image_size.
ComponentBench clip_vision_bench(const std::string& dir, const ComponentBenchOptions& options,
                                 std::shared_ptr<ExecutionContext> context);

}  // namespace vgen
