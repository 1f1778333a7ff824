#include "api/visual_gen.h"

#include "pipelines/registry.h"

namespace vgen {

VisualGen::VisualGen(const std::string& model_path, const PipelineOptions& options)
    : model_path_(model_path), pipeline_(load_pipeline(model_path, options)) {}

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

}  // namespace vgen
