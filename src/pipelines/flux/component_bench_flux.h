// FLUX.1's components alone for `vgen bench transformer|vae` (registered in pipelines/registry.cpp):
// the family turns a pixel size into its packed latent tokens, so the bench driver needs no FLUX facts.
#pragma once

#include <memory>
#include <string>

#include "pipelines/registry.h"

namespace vgen {

// One FluxTransformer2DModel forward at the packed latent size of height x width (default
// 1024x1024, a x8 VAE), text_len T5 tokens, guidance 3.5 when the model embeds guidance.
// --inputs: hidden_states, encoder_hidden_states, pooled_projections, timestep (and guidance).
ComponentBench flux_transformer_bench(const std::string& dir, const ComponentBenchOptions& options,
                                      std::shared_ptr<ExecutionContext> context);
// One AutoencoderKL decode of random latents of that size (options.encode: one encode of a
// random image of that size). --inputs: "z" (decode) or "image" (encode).
ComponentBench autoencoder_kl_bench(const std::string& dir, const ComponentBenchOptions& options,
                                    std::shared_ptr<ExecutionContext> context);

}  // namespace vgen
