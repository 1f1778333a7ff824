#include "api/visual_gen.h"

#include <random>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "api/model_path.h"
#include "core/error.h"
#include "pipelines/registry.h"

namespace vgen {

VisualGen::VisualGen(const std::string& model_path)
    : VisualGen(model_path, default_pipeline_options(resolve_device("auto"))) {}

VisualGen::VisualGen(const std::string& model_path, const PipelineOptions& options)
    : model_(model_path), model_path_(resolve_model_path(model_path)), pipeline_(load_pipeline(model_path_, options)) {}

VisualGen::~VisualGen() = default;

GenerationOutput VisualGen::generate(const std::string& prompt, GenerationParams params, const StepCallback& on_step) {
  params.prompt = prompt;
  return generate(params, on_step);
}

GenerationOutput VisualGen::generate(const GenerationParams& params, const StepCallback& on_step) {
  return pipeline_->generate(pipeline_->resolve(params), on_step);
}

GenerationOutput VisualGen::generate(const ResolvedParams& params, const StepCallback& on_step) {
  return pipeline_->generate(params, on_step);
}

std::vector<GenerationOutput> VisualGen::generate_batch(const std::vector<ResolvedParams>& requests, int max_batch,
                                                        const StepCallback& on_step) {
  VGEN_CHECK(max_batch >= 1, "max_batch must be at least 1, got {}", max_batch);
  return pipeline_->generate_batch(requests, max_batch, on_step);
}

std::optional<int64_t> VisualGen::prompt_token_count(const std::string& prompt) const {
  return pipeline_->prompt_token_count(prompt);
}

media::Metadata VisualGen::metadata(const ResolvedParams& r, double fps) const {
  media::Metadata m = {
      {"prompt", r.prompt},
      {"negative_prompt", r.negative_prompt},
      {"seed", std::to_string(r.seed)},
      {"num_inference_steps", std::to_string(r.num_inference_steps)},
      {"guidance_scale", fmt::format("{}", r.guidance_scale)},
      {"guidance_rescale", fmt::format("{}", r.guidance_rescale)},
      {"height", std::to_string(r.height)},
      {"width", std::to_string(r.width)},
      {"num_frames", std::to_string(r.num_frames)},
      {"max_sequence_length", std::to_string(r.max_sequence_length)},
      {"fps", fmt::format("{}", fps)},
      {"model", model_},
      {"pipeline", pipeline_->class_name()},
  };
  if (pipeline_->capabilities().two_experts) m.emplace_back("guidance_scale_2", fmt::format("{}", r.guidance_scale_2));
  if (r.true_cfg_scale != 1.0) m.emplace_back("true_cfg_scale", fmt::format("{}", r.true_cfg_scale));
  // An explicit schedule replaces the scheduler's own: recorded as given (comma-separated).
  if (r.timesteps) m.emplace_back("timesteps", fmt::format("{}", fmt::join(*r.timesteps, ",")));
  if (r.sigmas) m.emplace_back("sigmas", fmt::format("{}", fmt::join(*r.sigmas, ",")));
  if (r.boundary_step) m.emplace_back("boundary_step", std::to_string(*r.boundary_step));
  if (r.latents.defined()) m.emplace_back("latents", "given (not seeded noise)");
  if (r.image.defined()) m.emplace_back("image", fmt::format("given ({}x{})", r.image.size(1), r.image.size(0)));
  if (r.last_image.defined())
    m.emplace_back("last_image", fmt::format("given ({}x{})", r.last_image.size(1), r.last_image.size(0)));
  for (const auto& [key, value] : pipeline_->describe())
    if (key == "scheduler" || key == "device" || key == "lora" || key == "lora_2") m.emplace_back(key, value);
    else if (key == "compute dtype") m.emplace_back("dtype", value);
  m.emplace_back("software", std::string("vgen ") + VGEN_VERSION);
  return m;
}

uint64_t random_seed() {
  // Below 2^53 so that the seed survives a round trip through JSON numbers (JavaScript
  // clients, metadata readers) unchanged.
  std::random_device rd;
  return ((static_cast<uint64_t>(rd()) << 32) ^ rd()) & ((uint64_t{1} << 53) - 1);
}

}  // namespace vgen
