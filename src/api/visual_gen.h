// The C++ API: build a VisualGen from a diffusers checkpoint folder, then generate.
//
//   vgen::VisualGen gen("Wan2.1-T2V-1.3B-Diffusers");
//   vgen::GenerationParams params;
//   params.num_frames = 33;
//   vgen::GenerationOutput out = gen.generate("a cat surfing", params);  // out.frames: uint8 [F, H, W, 3]
#pragma once

#include <memory>
#include <string>

#include "pipelines/pipeline.h"

namespace vgen {

class VisualGen {
 public:
  explicit VisualGen(const std::string& model_path, const PipelineOptions& options = {});
  ~VisualGen();

  // Resolves `params` once (the family's defaults, validation) and runs what it resolved to.
  GenerationOutput generate(const std::string& prompt, GenerationParams params = {}, const StepCallback& on_step = {});
  GenerationOutput generate(const GenerationParams& params, const StepCallback& on_step = {});
  // Runs parameters already resolved by pipeline().resolve() (e.g. to show them first).
  GenerationOutput generate(const ResolvedParams& params, const StepCallback& on_step = {});

  DiffusionPipeline& pipeline() { return *pipeline_; }
  const std::string& model_path() const { return model_path_; }

 private:
  std::string model_path_;
  std::unique_ptr<DiffusionPipeline> pipeline_;
};

}  // namespace vgen
