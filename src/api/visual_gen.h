// The C++ API: build a VisualGen from a diffusers checkpoint folder, then generate.
//
//   vgen::VisualGen gen("Wan2.1-T2V-1.3B-Diffusers");   // a GPU when one is usable, else the CPU
//   vgen::GenerationParams params;
//   params.num_frames = 33;
//   vgen::GenerationOutput out = gen.generate("a cat surfing", params);  // out.frames: uint8 [F, H, W, 3]
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "media/metadata.h"
#include "pipelines/pipeline.h"

namespace vgen {

class VisualGen {
 public:
  // model_path: a diffusers checkpoint folder, or a Hugging Face repo id found in the Hugging
  // Face cache (resolve_model_path in api/model_path.h).
  // Runs where `vgen generate` runs by default: the GPU when one is usable (bf16), else the
  // CPU (float32): default_pipeline_options(resolve_device("auto")).
  explicit VisualGen(const std::string& model_path);
  VisualGen(const std::string& model_path, const PipelineOptions& options);
  ~VisualGen();

  // Resolves `params` once (the family's defaults, validation) and runs what it resolved to.
  GenerationOutput generate(const std::string& prompt, GenerationParams params = {}, const StepCallback& on_step = {});
  GenerationOutput generate(const GenerationParams& params, const StepCallback& on_step = {});
  // Runs parameters already resolved by pipeline().resolve() (e.g. to show them first).
  GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {});

  // Several requests (resolved by pipeline().resolve()), outputs in order: those that differ
  // only in prompt and seed go through the transformer max_batch at a time (activation memory
  // grows with it; 1 runs them one by one). Each output equals its request run alone, within
  // float rounding.
  std::vector<GenerationOutput> generate_batch(const std::vector<ResolvedParams>& requests, int max_batch = 1,
                                               const StepCallback& on_step = {});

  // Tokens `prompt` takes in the checkpoint's tokenizer, its end-of-text token included, to
  // compare with max_sequence_length (longer prompts are cut there, as in diffusers); nullopt
  // when the checkpoint's tokenizer is not one vgen reads.
  std::optional<int64_t> prompt_token_count(const std::string& prompt) const;

  // What made an output, to store in it (PNG text chunks, MP4 tags; `vgen info FILE` reads
  // them back): prompt, negative_prompt, seed, num_inference_steps, guidance_scale,
  // guidance_rescale, height, width, num_frames, max_sequence_length, fps, model (as given to
  // the constructor), pipeline, scheduler, device, dtype, software (vgen and its version).
  media::Metadata metadata(const ResolvedParams& params, double fps) const;

  DiffusionPipeline& pipeline() { return *pipeline_; }
  const std::string& model_path() const { return model_path_; }  // the folder, once resolved

 private:
  std::string model_;       // as given
  std::string model_path_;  // the folder
  std::unique_ptr<DiffusionPipeline> pipeline_;
};

// A fresh seed (0 .. 2^53-1) from the operating system's entropy, for "a random seed" (`--seed -1`); show
// it to the user so that the run can be repeated.
uint64_t random_seed();

}  // namespace vgen
