// WanPipeline (text-to-video, Wan2.1): diffusers' pipeline_wan.py, read top to bottom:
// encode the prompts, prepare latents, run the shared denoising loop, decode, to frames.
// Every public entry point binds the pipeline's ExecutionContext for its duration.
#pragma once

#include <memory>

#include "io/checkpoint.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/transformer_wan.h"
#include "pipelines/pipeline.h"
#include "text/tokenizer.h"
#include "text/umt5_encoder.h"

namespace vgen {

// The negative prompt of diffusers' Wan examples, used when the caller gives none.
extern const char* const kWanDefaultNegativePrompt;

class WanPipeline final : public DiffusionPipeline {
 public:
  // Loads the components in `context` (made by the registry from options.execution).
  static std::unique_ptr<WanPipeline> from_pretrained(const DiffusersCheckpoint& checkpoint,
                                                      const PipelineOptions& options,
                                                      std::shared_ptr<ExecutionContext> context);

  std::string class_name() const override { return "WanPipeline"; }
  const PipelineCapabilities& capabilities() const override { return capabilities_; }
  ResolvedParams resolve(const GenerationParams& params) const override;
  GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {}) override;
  // Requests that share everything but prompt and seed (and give no latents) run through the
  // transformer max_batch at a time: prompts encoded together, each video's noise from its own
  // seed, one transformer call per branch and step, the VAE decoding one video at a time.
  std::vector<GenerationOutput> generate_batch(const std::vector<ResolvedParams>& requests, int max_batch,
                                               const StepCallback& on_step = {}) override;
  std::vector<std::pair<std::string, std::string>> describe() const override;
  std::optional<int64_t> prompt_token_count(const std::string& prompt) const override;

  // The pieces, public for the parity tests.
  // Prompt embeddings [N, L, text_dim], zero past each prompt's length (as diffusers).
  Tensor encode_prompt(const std::vector<std::string>& prompts, int max_sequence_length) const;
  // Shape of the initial latents for a resolved request.
  Shape latent_shape(const ResolvedParams& p) const;
  // latents / (1 / latents_std) + latents_mean, then the VAE decode.
  Tensor decode_latents(const Tensor& latents) const;
  Scheduler& scheduler() { return *scheduler_; }
  const WanTransformer3DModel& transformer() const { return *transformer_; }

 private:
  explicit WanPipeline(std::shared_ptr<ExecutionContext> context) : DiffusionPipeline(std::move(context)) {}
  // The videos of `batch` (one request, or several that batch_compatible accepts) in one
  // denoising loop.
  std::vector<GenerationOutput> run(const std::vector<const ResolvedParams*>& batch, const StepCallback& on_step);

  PipelineOptions options_;
  PipelineCapabilities capabilities_;
  std::unique_ptr<T5Tokenizer> tokenizer_;
  std::string text_encoder_dir_;
  mutable std::unique_ptr<UMT5EncoderModel> text_encoder_;  // null while offloaded
  std::unique_ptr<WanTransformer3DModel> transformer_;
  std::unique_ptr<AutoencoderKLWan> vae_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::pair<std::string, std::string>> description_;
};

}  // namespace vgen
