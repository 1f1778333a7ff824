// What every pipeline offers: generation parameters named as diffusers names them, each
// optional so that the model family's own default applies, and the generated frames.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "schedulers/scheduler.h"

namespace vgen {

struct GenerationParams {
  std::string prompt;
  std::optional<std::string> negative_prompt;  // family default when unset; "" disables it
  std::optional<int64_t> height;
  std::optional<int64_t> width;
  std::optional<int64_t> num_frames;
  std::optional<int> num_inference_steps;
  std::optional<double> guidance_scale;
  double guidance_rescale = 0.0;
  std::optional<int> max_sequence_length;
  uint64_t seed = 0;
  // Initial noise, like diffusers' `latents=` argument; replaces the seeded noise.
  Tensor latents;
};

// Progress per denoising step. Returning false cancels the generation.
struct StepProgress {
  int step = 0;  // 1-based, of `total`
  int total = 0;
  double timestep = 0.0;
  double step_seconds = 0.0;
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
  double fps = 16.0;        // the family's default frame rate
  // Seconds per phase, in order: "encode_prompt", "denoise", "decode".
  std::vector<std::pair<std::string, double>> timings;
};

// The resolved parameters after defaults and validation (what will actually run).
struct ResolvedParams {
  std::string prompt;
  std::string negative_prompt;
  int64_t height = 0, width = 0, num_frames = 0;
  int num_inference_steps = 0;
  double guidance_scale = 0.0;
  double guidance_rescale = 0.0;
  int max_sequence_length = 0;
  uint64_t seed = 0;
};

struct PipelineOptions {
  Device device = Device::cpu();
  DType dtype = DType::F32;      // compute dtype of the transformer and text encoder
  DType vae_dtype = DType::F32;  // the VAE's (float32 as diffusers' Wan examples advise)
  // Frees the text encoder once the prompts of a generation are encoded (reloaded from the
  // checkpoint for the next one): its memory goes to the transformer and the VAE.
  bool offload_text_encoder = false;
  // Replays the transformer step from a CUDA graph per input shape (on a GPU; the numbers are
  // the same, the launches fewer).
  bool cuda_graphs = true;
  SchedulerOverrides scheduler;
};

// The usual options for a device: bf16 compute on a GPU, float32 on the CPU.
PipelineOptions default_pipeline_options(Device device);
// "auto" (a GPU when one is usable, else the CPU), "cpu", "cuda", "cuda:N"; an unusable GPU is
// an error saying why.
Device resolve_device(const std::string& text);
// "bf16", "fp16", "fp32" (and bfloat16/float16/float32, f16/f32).
DType parse_compute_dtype(const std::string& text);

class DiffusionPipeline {
 public:
  virtual ~DiffusionPipeline() = default;
  virtual std::string class_name() const = 0;
  virtual ResolvedParams resolve(const GenerationParams& params) const = 0;
  virtual GenerationOutput generate(const GenerationParams& params, const StepCallback& on_step = {}) = 0;
  // Human-readable description of what was loaded (components, sizes, dtypes).
  virtual std::vector<std::pair<std::string, std::string>> describe() const = 0;
};

}  // namespace vgen
