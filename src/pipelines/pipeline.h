// What every pipeline offers: generation parameters named as diffusers names them, each
// optional so that the model family's own default applies; what the pipeline can do
// (capabilities); the parameters resolved once; and the generated frames.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/cache_config.h"
#include "config/engine_config.h"
#include "core/error.h"
#include "core/execution_context.h"
#include "core/tensor.h"
#include "nn/lora.h"
#include "pipelines/cache/cache_stats.h"
#include "schedulers/scheduler.h"

namespace vgen {

struct GenerationParams {
  std::string prompt;
  // Unset: the family's default (Wan's long one; none for FLUX). "" is the empty prompt, as in
  // diffusers: Wan guides against it, FLUX's true CFG runs against it.
  std::optional<std::string> negative_prompt;
  std::optional<int64_t> height;
  std::optional<int64_t> width;
  std::optional<int64_t> num_frames;
  std::optional<int> num_inference_steps;
  // An explicit schedule, as diffusers' `timesteps=` / `sigmas=` (scheduler.set_timesteps):
  // strictly decreasing, timesteps in (0, num_train_timesteps], sigmas in (0, 1]; the number of
  // steps is then their length (num_inference_steps, when set, must equal it). Step-distilled
  // models run e.g. timesteps {1000, 750, 500, 250} with guidance_scale 1.
  std::optional<std::vector<double>> timesteps;
  std::optional<std::vector<double>> sigmas;
  // Two-expert models: the step index at which the low-noise expert takes over (steps with
  // index < boundary_step run the high-noise one), instead of the checkpoint's boundary_ratio
  // timestep; e.g. 2 for the 4-step distilled Wan2.2 A14B recipe. 0..number of steps.
  std::optional<int> boundary_step;
  std::optional<double> guidance_scale;
  // The low-noise expert's guidance scale (two-expert models); defaults to guidance_scale.
  std::optional<double> guidance_scale_2;
  double guidance_rescale = 0.0;
  // FLUX: real classifier-free guidance with the negative prompt when above 1 (diffusers'
  // true_cfg_scale); guidance_scale is then the distilled guidance the transformer embeds.
  std::optional<double> true_cfg_scale;
  std::optional<int> max_sequence_length;
  uint64_t seed = 0;
  // Initial noise, like diffusers' `latents=` argument; replaces the seeded noise.
  Tensor latents;
  // Image-to-video: the first frame, and for first-last-frame models the last one, as decoded
  // images (U8 [H, W, 3] RGB, e.g. media::read_image). Undefined: none. The pipeline resizes
  // them to height x width as diffusers' video processor does. Without height and width, an
  // image-to-video pipeline takes them from the image's aspect ratio (diffusers' examples).
  Tensor image;
  Tensor last_image;
  // Step caching (TeaCache, MagCache, First-Block-Cache: config/cache_config.h); unset: the
  // pipeline's (PipelineOptions::cache, e.g. the engine YAML's cache_config).
  std::optional<CacheConfig> cache;
};

// Progress per denoising step. Returning false cancels the generation.
struct StepProgress {
  int step = 0;  // 1-based, of `total`
  int total = 0;
  double timestep = 0.0;
  double step_seconds = 0.0;
  int expert = 0;  // two-expert models: 0 the high-noise one (transformer), 1 the low-noise one
};
using StepCallback = std::function<bool(const StepProgress&)>;

class Cancelled : public Error {
 public:
  Cancelled() : Error("generation cancelled") {}
};

struct GenerationOutput {
  Tensor frames;            // uint8 [F, H, W, 3]
  Tensor video;             // float [1, 3, F, H, W] in [-1, 1] as the VAE produced it
  Tensor denoised_latents;  // [1, C, T, h, w] before de-normalization
  double fps = 0.0;         // the family's default frame rate (capabilities().default_fps)
  // Seconds per phase, in order: "encode_prompt", ("encode_image",) "denoise", "decode".
  std::vector<std::pair<std::string, double>> timings;
  // Transformer calls computed and skipped by the step cache (empty backend: none ran).
  CacheStats cache;
};

// The parameters after defaults and validation: what will actually run. Made once by
// DiffusionPipeline::resolve and handed to generate as is (never turned back into
// GenerationParams), so that what a front end shows is what runs.
struct ResolvedParams {
  std::string prompt;
  std::string negative_prompt;
  // Whether the request gave a negative prompt (an empty one included): FLUX runs true CFG
  // against "" then, as diffusers does for `negative_prompt=""` (a non-empty one counts as given).
  bool negative_prompt_given = false;
  int64_t height = 0, width = 0, num_frames = 0;
  int num_inference_steps = 0;
  // Explicit schedule (checked by resolve against the scheduler); nullopt: the scheduler's own.
  std::optional<std::vector<double>> timesteps;
  std::optional<std::vector<double>> sigmas;
  // Two-expert models: the expert switch by step index; nullopt: by boundary_ratio's timestep.
  std::optional<int> boundary_step;
  double guidance_scale = 0.0;
  double guidance_scale_2 = 0.0;  // the low-noise expert's (two-expert models), else guidance_scale
  double guidance_rescale = 0.0;
  double true_cfg_scale = 1.0;  // FLUX's true CFG (see GenerationParams)
  int max_sequence_length = 0;
  uint64_t seed = 0;
  // Initial noise (diffusers' `latents=`), its shape checked by resolve; undefined: seeded noise.
  Tensor latents;
  Tensor image, last_image;  // U8 [H, W, 3] RGB, checked by resolve; undefined: none
  // Step caching, checked by resolve, with the model's published TeaCache coefficients filled in.
  CacheConfig cache;
};

// What a pipeline can do and what it does when a request leaves a value unset. Front ends
// (CLI, server, bench, `vgen info`) read this instead of knowing a family's numbers.
struct PipelineCapabilities {
  std::vector<std::string> tasks;  // e.g. {"text-to-video"}
  // Inputs beyond the prompt that the pipeline accepts.
  bool image_input = false;       // a first frame (image-to-video)
  bool image_required = false;    // image-to-video only: a request without an image is refused
  bool last_image_input = false;  // a last frame (first-last-frame-to-video)
  bool last_image_required = false;
  bool lora = false;              // LoRA adapters
  bool two_experts = false;       // a high-noise and a low-noise transformer (Wan2.2 A14B)
  double default_fps = 0.0;       // frame rate of the family's videos
  // num_frames = temporal_multiple * k + 1 (the VAE's temporal compression).
  int64_t temporal_multiple = 1;
  // height and width are multiples of this (VAE compression times transformer patch size).
  int64_t spatial_multiple = 1;
  int64_t default_height = 0, default_width = 0, default_num_frames = 0;
  int default_num_inference_steps = 0;
  double default_guidance_scale = 0.0;
  double default_guidance_scale_2 = 0.0;  // two-expert models
  int default_max_sequence_length = 0;

  // Whether `task` is among `tasks`.
  bool supports(const std::string& task) const;
  // The tasks joined with ", " (for messages and `vgen info`).
  std::string task_list() const;
};

struct PipelineOptions {
  Device device = Device::cpu();
  DType dtype = DType::F32;      // compute dtype of the transformer and text encoder
  // The VAE's; unset, each family's as diffusers' examples run it: float32 for Wan (its video
  // examples load AutoencoderKLWan in float32), the compute dtype for FLUX (the whole pipeline
  // in bf16). vae_dtype_or(family default) reads it.
  std::optional<DType> vae_dtype;
  DType vae_dtype_or(DType family_default) const { return vae_dtype.value_or(family_default); }
  // Latent frames the Wan VAE decodes per call after the first (diffusers' _decode: 1): the
  // same video, with fewer and larger convolutions and that many frames' activations at once
  // (more peak memory). AutoencoderKLWan::set_decode_chunk_frames; image models refuse > 1.
  int64_t vae_chunk_frames = 1;
  // Frees the text encoder once the prompts of a generation are encoded (reloaded from the
  // checkpoint for the next one): its memory goes to the transformer and the VAE.
  bool offload_text_encoder = false;
  // Two-expert models on a GPU: both experts stay in host memory and only the one whose turn
  // it is occupies the device (uploaded at the expert switch; the first expert of the next
  // generation is prefetched on a copy stream while the VAE decodes). For GPUs that cannot hold
  // both experts (a Wan2.2 A14B pair is 2 x 28 GB in bf16); costs one upload per switch.
  bool offload_idle_expert = false;
  // How ops run (attention kernel, TF32, convolution autotuning, CUDA graphs): the registry
  // builds the pipeline's ExecutionContext from these.
  ExecutionSettings execution = ExecutionSettings::from_environment();
  SchedulerOverrides scheduler;
  // LoRA adapters fused into `transformer` (lora) and, for two-expert models, into
  // `transformer_2` (lora_2) while they load, in order, each with its scale (diffusers'
  // load_lora_weights(..., load_into_transformer_2=...) + fuse_lora(lora_scale=scale)).
  // lora_ignore_unmatched: LoRA keys that match no module are skipped with a warning, not an error.
  std::vector<nn::LoraAdapterSpec> lora, lora_2;
  bool lora_ignore_unmatched = false;
  // DiffusionPipeline::set_lora keeps this many merged variants of the transformer(s) in
  // memory (the current one counted): switching back to one of them costs nothing.
  int lora_cached_variants = 1;
  // Step caching for requests that set none (GenerationParams::cache).
  CacheConfig cache;
  // The transformer(s)' linear layers quantized (or read pre-quantized): the engine config's
  // quant_config, --quant-algo / --linear-type (nn/quant.h, ops/quant.h).
  QuantConfig quant;
  // CFG / sequence parallelism: this rank's place among cfg_size x ulysses_size x ring_size
  // ranks (a ThreadGroup or NCCL communicator split by ParallelLayout); null: one rank. Every
  // rank loads the pipeline and calls generate() with the same request; all return the result.
  std::shared_ptr<const ParallelLayout> parallel;
  // With `parallel`: the VAE decode split over all its ranks by latent rows (exact; a latent
  // height the ranks do not divide is decoded whole by every rank).
  bool parallel_vae = false;
};

// The usual options for a device: bf16 compute on a GPU, float32 on the CPU.
PipelineOptions default_pipeline_options(Device device);
// The engine config's sections applied to `options`: the execution settings (attention,
// cuda_graph, conv over the environment's), offload, cache_config and quant_config. The one
// place an EngineConfig becomes PipelineOptions (`vgen serve --config`, Python's
// VisualGenArgs); parallel_config is the launcher's.
void apply_engine_config(const EngineConfig& config, PipelineOptions& options);
// "auto" (a GPU when one is usable, else the CPU), "cpu", "cuda", "cuda:N"; an unusable GPU is
// an error saying why.
Device resolve_device(const std::string& text);
// "bf16", "fp16", "fp32" (and bfloat16/float16/float32, f16/f32).
DType parse_compute_dtype(const std::string& text);

// A loaded pipeline. It owns the ExecutionContext it runs in: every public entry point binds
// it (ContextScope) for the duration of the call, so two pipelines in one process never
// share settings, streams or handles.
class DiffusionPipeline {
 public:
  explicit DiffusionPipeline(std::shared_ptr<ExecutionContext> context);
  virtual ~DiffusionPipeline() = default;
  virtual std::string class_name() const = 0;
  virtual const PipelineCapabilities& capabilities() const = 0;
  // Fills the unset parameters with the family's defaults and validates all of them; throws
  // vgen::Error naming the parameter at fault.
  virtual ResolvedParams resolve(const GenerationParams& params) const = 0;
  // Runs a request resolved by this pipeline's resolve().
  virtual GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {}) = 0;
  // Runs several requests resolved by resolve(), returning their outputs in order. A pipeline
  // may run up to `max_batch` of them through its transformer at once when they differ only
  // in prompt and seed (activation memory grows with the batch: max_batch is the caller's
  // memory budget); each output then equals, within float rounding, its request run alone.
  // on_step reports the steps of each batch. This default runs them one by one.
  virtual std::vector<GenerationOutput> generate_batch(const std::vector<ResolvedParams>& requests, int max_batch,
                                                       const StepCallback& on_step = {});
  // Fuses these LoRA adapters instead of the current ones (the weights reload: exactly what a
  // pipeline loaded with them gives); throws when the family takes no adapters.
  virtual void set_lora(const std::vector<nn::LoraAdapterSpec>& lora, const std::vector<nn::LoraAdapterSpec>& lora_2) {
    if (!lora.empty() || !lora_2.empty()) fail("{} takes no LoRA adapters", class_name());
  }
  // Human-readable description of what was loaded (components, sizes, dtypes).
  virtual std::vector<std::pair<std::string, std::string>> describe() const = 0;
  // Tokens the text encoder would see for `prompt` before cutting it to max_sequence_length
  // (the family's own cleaning and special tokens included); nullopt when the family cannot tell.
  virtual std::optional<int64_t> prompt_token_count(const std::string& prompt) const { return std::nullopt; }

  ExecutionContext& context() const { return *context_; }

 protected:
  std::shared_ptr<ExecutionContext> context_;
};

}  // namespace vgen
