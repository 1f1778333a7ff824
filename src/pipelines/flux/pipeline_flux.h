// The FLUX.1 pipelines, diffusers' pipeline_flux.py (FluxPipeline: dev and schnell) and
// pipeline_flux_kontext.py (FluxKontextPipeline: image editing), read top to bottom: encode the
// prompt with CLIP (pooled) and T5 (per token), prepare packed 2x2 latents and their RoPE ids,
// FlowMatchEuler with the resolution-dependent shift (mu), the shared denoising loop (true CFG
// with a negative prompt when true_cfg_scale > 1), unpack, unscale and decode with the VAE.
//   - dev: guidance-distilled (the transformer embeds guidance_scale; no second pass);
//   - schnell: no guidance embedding, 4 steps, max_sequence_length 256;
//   - Kontext: the input image VAE-encoded, packed and appended as reference tokens whose ids
//     have 1 on the first axis; the transformer's output for them is dropped.
// Every public entry point binds the pipeline's ExecutionContext for its duration.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "models/autoencoder_kl/autoencoder_kl.h"
#include "models/flux/transformer_flux.h"
#include "pipelines/flux/pipeline_flux_latents.h"
#include "pipelines/pipeline.h"
#include "text/clip_text_model.h"
#include "text/clip_tokenizer.h"
#include "text/t5_encoder.h"
#include "text/tokenizer.h"

namespace vgen {

class FluxPipeline final : public DiffusionPipeline {
 public:
  static std::unique_ptr<FluxPipeline> from_pretrained(const DiffusersCheckpoint& checkpoint,
                                                       const PipelineOptions& options,
                                                       std::shared_ptr<ExecutionContext> context);

  std::string class_name() const override { return class_name_; }
  const PipelineCapabilities& capabilities() const override { return capabilities_; }
  ResolvedParams resolve(const GenerationParams& params) const override;
  GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {}) override;
  std::vector<std::pair<std::string, std::string>> describe() const override { return description_; }
  std::optional<int64_t> prompt_token_count(const std::string& prompt) const override;

  // The pieces, public for the parity tests.
  struct PromptEmbeds {
    Tensor prompt_embeds;  // [N, max_sequence_length, joint_attention_dim] (T5)
    Tensor pooled;         // [N, pooled_projection_dim] (CLIP's pooler_output)
  };
  PromptEmbeds encode_prompt(const std::vector<std::string>& prompts, int max_sequence_length) const;
  // The unpacked initial latent shape [1, C, 2 (H / 16), 2 (W / 16)] of a resolved request.
  Shape latent_shape(const ResolvedParams& p) const;
  // Kontext: the packed, scaled latents of the (resized, normalised) image [1, 3, h, w].
  Tensor encode_image_latents(const Tensor& image) const;
  // Kontext: the input image resized as diffusers does ([1, 3, h, w] in [-1, 1]).
  Tensor preprocess_image(const Tensor& image) const;
  // (z / scaling_factor + shift_factor), then the VAE decode -> [1, 3, H, W].
  Tensor decode_latents(const Tensor& unpacked) const;
  const FluxTransformer2DModel& transformer() const { return *transformer_; }
  Scheduler& scheduler() { return *scheduler_; }

 private:
  explicit FluxPipeline(std::shared_ptr<ExecutionContext> context) : DiffusionPipeline(std::move(context)) {}

  std::string class_name_;
  bool kontext_ = false;
  // A size warning is not repeated for the size warned about last (resolve runs once per video).
  bool first_size_warning(int64_t width, int64_t height) const;
  mutable std::mutex size_warning_mutex_;
  mutable std::pair<int64_t, int64_t> last_size_warned_{0, 0};
  PipelineOptions options_;
  PipelineCapabilities capabilities_;
  std::unique_ptr<CLIPTokenizer> tokenizer_;
  std::unique_ptr<CLIPTextModel> text_encoder_;
  std::unique_ptr<T5Tokenizer> tokenizer_2_;
  std::unique_ptr<T5EncoderModel> text_encoder_2_;
  std::unique_ptr<FluxTransformer2DModel> transformer_;
  std::unique_ptr<AutoencoderKL> vae_;
  std::unique_ptr<Scheduler> scheduler_;
  Json scheduler_config_;  // for calculate_shift's fields, read as diffusers' config.get
  std::vector<std::pair<std::string, std::string>> description_;
};

}  // namespace vgen
