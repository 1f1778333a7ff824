#include "pipelines/pipeline.h"

#include "core/error.h"
#include "ops/backend.h"

namespace vgen {

bool PipelineCapabilities::supports(const std::string& task) const {
  for (const std::string& t : tasks)
    if (t == task) return true;
  return false;
}

std::string PipelineCapabilities::task_list() const {
  std::string out;
  for (const std::string& t : tasks) out += (out.empty() ? "" : ", ") + t;
  return out;
}

DiffusionPipeline::DiffusionPipeline(std::shared_ptr<ExecutionContext> context) : context_(std::move(context)) {
  VGEN_CHECK(context_ != nullptr, "a pipeline needs an execution context");
}

std::vector<GenerationOutput> DiffusionPipeline::generate_batch(const std::vector<ResolvedParams>& requests, int,
                                                                const StepCallback& on_step) {
  std::vector<GenerationOutput> outputs;
  for (const ResolvedParams& r : requests) outputs.push_back(generate(r, on_step));
  return outputs;
}

void apply_engine_config(const EngineConfig& config, PipelineOptions& options) {
  options.execution = execution_settings(config, ExecutionSettings::from_environment());
  options.offload_text_encoder = config.offload.text_encoder;
  options.offload_idle_expert = config.offload.idle_expert;
  options.vae_chunk_frames = config.vae.chunk_frames;
  options.cache = config.cache_config;  // a request may set its own
  options.quant = config.quant_config;
}

PipelineOptions default_pipeline_options(Device device) {
  PipelineOptions o;
  o.device = device;
  o.dtype = device.is_cuda() ? DType::BF16 : DType::F32;
  return o;
}

Device resolve_device(const std::string& text) {
  if (text == "auto") return has_backend(DeviceType::CUDA) ? Device::cuda(0) : Device::cpu();
  const Device d = parse_device(text);
  if (d.is_cuda() && !has_backend(DeviceType::CUDA))
    fail("--device {}: {}", text, backend_unavailable_reason(DeviceType::CUDA));
  return d;
}

DType parse_compute_dtype(const std::string& text) {
  if (text == "bf16" || text == "bfloat16") return DType::BF16;
  if (text == "f16" || text == "fp16" || text == "float16") return DType::F16;
  if (text == "f32" || text == "fp32" || text == "float32") return DType::F32;
  fail("unknown dtype '{}': expected bf16, fp16 or fp32", text);
}

}  // namespace vgen
