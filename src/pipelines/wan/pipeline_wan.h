// The Wan family's pipelines, diffusers' pipeline_wan.py (WanPipeline) and
// pipeline_wan_i2v.py (WanImageToVideoPipeline), read top to bottom: encode the prompts (and
// the image), prepare latents and the image condition, run the shared denoising loop, decode,
// to frames. One class serves every Wan checkpoint, as its model_index.json describes it:
//   - Wan2.1 text-to-video;
//   - Wan2.1 image-to-video (CLIP image tokens + 36-channel VAE condition; FLF2V with a last image);
//   - Wan2.2 A14B text- and image-to-video: two experts (transformer, transformer_2) split at
//     boundary_ratio, each phase with its guidance scale;
//   - Wan2.2 TI2V-5B (expand_timesteps): text-to-video, and image-to-video with the encoded
//     image as the first latent frame and per-token timesteps (0 on that frame).
// Every public entry point binds the pipeline's ExecutionContext for its duration.
#pragma once

#include <array>
#include <future>
#include <memory>

#include "io/checkpoint.h"
#include "models/clip/clip_image_processor.h"
#include "models/clip/clip_vision_model.h"
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

  // "WanPipeline" or "WanImageToVideoPipeline", as model_index.json names it.
  std::string class_name() const override { return class_name_; }
  const PipelineCapabilities& capabilities() const override { return capabilities_; }
  ResolvedParams resolve(const GenerationParams& params) const override;
  // The explicit schedule (timesteps, sigmas, boundary_step) of resolve: checked against the
  // scheduler and the experts, num_inference_steps set from the lists' length.
  void resolve_schedule(const GenerationParams& params, ResolvedParams& r) const;
  GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {}) override;
  // Requests that share everything but prompt and seed (and give no latents) run through the
  // transformer max_batch at a time: prompts encoded together, each video's noise from its own
  // seed, one transformer call per branch and step, the VAE decoding one video at a time.
  std::vector<GenerationOutput> generate_batch(const std::vector<ResolvedParams>& requests, int max_batch,
                                               const StepCallback& on_step = {}) override;
  std::vector<std::pair<std::string, std::string>> describe() const override;
  // Reloads the transformer(s) with these adapters fused (what a fresh pipeline with
  // PipelineOptions::lora / lora_2 loads, exactly); keeps options.lora_cached_variants merged
  // variants in memory (the current one counted) so switching back costs nothing.
  void set_lora(const std::vector<nn::LoraAdapterSpec>& lora, const std::vector<nn::LoraAdapterSpec>& lora_2) override;
  std::optional<int64_t> prompt_token_count(const std::string& prompt) const override;

  // The pieces, public for the parity tests.
  // Prompt embeddings [N, L, text_dim], zero past each prompt's length (as diffusers).
  Tensor encode_prompt(const std::vector<std::string>& prompts, int max_sequence_length) const;
  // Shape of the initial latents for a resolved request.
  Shape latent_shape(const ResolvedParams& p) const;
  // latents / (1 / latents_std) + latents_mean, then the VAE decode.
  Tensor decode_latents(const Tensor& latents) const;
  // CLIP's penultimate hidden states of the images (each preprocessed by the checkpoint's
  // image processor) -> [N, tokens, image_dim] float32: encode_image of diffusers.
  Tensor encode_image(const std::vector<Tensor>& images) const;
  // video_processor.preprocess: the image resized to height x width (Pillow's filter) in
  // [-1, 1], [1, 3, height, width] float32.
  Tensor preprocess_image(const Tensor& image, int64_t height, int64_t width) const;
  // What prepare_latents returns besides the noise: the image condition for one video.
  // Channel concatenation (Wan2.1 I2V, Wan2.2 A14B I2V): [1, 4 + z, T, h, w] = mask and the
  // normalised VAE latents of [image, zeros..., (last_image)]. expand_timesteps (TI2V):
  // [1, z, 1, h, w], the normalised latent of the image alone.
  Tensor prepare_condition(const ResolvedParams& p) const;
  Scheduler& scheduler() { return *scheduler_; }
  const WanTransformer3DModel& transformer(int expert = 0) const { return expert == 1 ? *transformer_2_ : *transformer_; }

 private:
  explicit WanPipeline(std::shared_ptr<ExecutionContext> context) : DiffusionPipeline(std::move(context)) {}
  // The videos of `batch` (one request, or several that batch_compatible accepts) in one
  // denoising loop.
  std::vector<GenerationOutput> run(const std::vector<const ResolvedParams*>& batch, const StepCallback& on_step);

  // offload_idle_expert: makes `expert` the one on the device (waiting for a prefetch in flight),
  // and starts uploading `expert` on a copy stream without waiting (prefetch).
  void make_resident(int expert);
  void prefetch_expert(int expert);
  // Waits for a prefetch in flight, releases the other expert when `expert` is not on the
  // device; returns `expert`'s model.
  WanTransformer3DModel& make_room_for(int expert);
  // The VAE config's latents_mean and 1 / latents_std as [1, z, 1, 1, 1] float32 on `device`.
  std::pair<Tensor, Tensor> latents_mean_and_inv_std(Device device) const;

  // Loads transformer (and transformer_2) from transformer_dirs_ with these adapters fused.
  void load_experts(const std::vector<nn::LoraAdapterSpec>& lora, const std::vector<nn::LoraAdapterSpec>& lora_2);

  // (latents - latents_mean) * (1 / latents_std): the inverse of decode_latents' normalisation.
  Tensor normalize_latents(const Tensor& latents) const;

  std::string class_name_;
  PipelineOptions options_;
  PipelineCapabilities capabilities_;
  // model_index.json: the expert boundary (Wan2.2 A14B) and per-token timesteps (TI2V).
  std::optional<double> boundary_ratio_;
  bool expand_timesteps_ = false;
  // The image enters as channels concatenated to the latents (in_channels = 2 z + 4).
  bool concat_condition_ = false;
  std::unique_ptr<T5Tokenizer> tokenizer_;
  std::string text_encoder_dir_;
  mutable std::unique_ptr<UMT5EncoderModel> text_encoder_;  // null while offloaded
  std::unique_ptr<WanTransformer3DModel> transformer_, transformer_2_;
  std::unique_ptr<AutoencoderKLWan> vae_;
  std::unique_ptr<CLIPVisionModel> image_encoder_;  // Wan2.1 image-to-video only
  std::unique_ptr<CLIPImageProcessor> image_processor_;
  std::unique_ptr<Scheduler> scheduler_;
  std::future<void> prefetch_;  // an expert upload in flight (offload_idle_expert)
  // LoRA: the folders the experts reload from, the adapters fused now, other merged variants.
  std::array<std::string, 2> transformer_dirs_;
  std::vector<nn::LoraAdapterSpec> lora_, lora_2_;
  struct ExpertVariant {
    std::vector<nn::LoraAdapterSpec> lora, lora_2;
    std::unique_ptr<WanTransformer3DModel> transformer, transformer_2;
  };
  std::vector<ExpertVariant> cached_variants_;  // most recently used first
  std::vector<std::pair<std::string, std::string>> description_;
};

}  // namespace vgen
