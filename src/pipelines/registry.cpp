#include "pipelines/registry.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/random.h"
#include "io/json.h"
#include "pipelines/flux/component_bench_flux.h"
#include "pipelines/flux/pipeline_flux.h"
#include "pipelines/wan/component_bench_wan.h"
#include "pipelines/wan/pipeline_wan.h"

namespace fs = std::filesystem;

namespace vgen {

const std::vector<PipelineEntry>& pipeline_registry() {
  const auto wan = [](const DiffusersCheckpoint& c, const PipelineOptions& o,
                       std::shared_ptr<ExecutionContext> ctx) -> std::unique_ptr<DiffusionPipeline> {
    return WanPipeline::from_pretrained(c, o, std::move(ctx));
  };
  const auto flux = [](const DiffusersCheckpoint& c, const PipelineOptions& o,
                        std::shared_ptr<ExecutionContext> ctx) -> std::unique_ptr<DiffusionPipeline> {
    return FluxPipeline::from_pretrained(c, o, std::move(ctx));
  };
  static const std::vector<PipelineEntry> entries = {
      {"WanPipeline", wan},
      {"WanImageToVideoPipeline", wan},
      {"FluxPipeline", flux},
      {"FluxKontextPipeline", flux},
  };
  return entries;
}

std::shared_ptr<ExecutionContext> make_pipeline_context(const PipelineOptions& options) {
  auto context = std::make_shared<ExecutionContext>(options.device, options.execution);
  if (options.parallel) context->set_parallel(options.parallel);
  return context;
}

const PipelineEntry& find_pipeline(const DiffusersCheckpoint& checkpoint) {
  std::string supported;
  for (const PipelineEntry& e : pipeline_registry()) {
    if (e.class_name == checkpoint.class_name()) return e;
    supported += (supported.empty() ? "" : ", ") + e.class_name;
  }
  fail("{}/model_index.json: unsupported pipeline class '{}' (supported: {})", checkpoint.root(),
       checkpoint.class_name(), supported);
}

std::unique_ptr<DiffusionPipeline> load_pipeline(const DiffusersCheckpoint& checkpoint, const PipelineOptions& options) {
  const PipelineEntry& entry = find_pipeline(checkpoint);
  // Everything the pipeline runs reads its settings from this context.
  return entry.load(checkpoint, options, make_pipeline_context(options));
}

std::unique_ptr<DiffusionPipeline> load_pipeline(const std::string& model_dir, const PipelineOptions& options) {
  return load_pipeline(DiffusersCheckpoint::open(model_dir), options);
}

void bench_save_raw_f32(const Tensor& t, const std::string& path) {
  const Tensor y = t.to(Device::cpu()).to(DType::F32).contiguous();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  VGEN_CHECK(f != nullptr, "bench: cannot write '{}'", path);
  const size_t n = std::fwrite(y.raw_data(), 1, y.nbytes(), f);
  std::fclose(f);
  VGEN_CHECK(n == y.nbytes(), "bench: short write to '{}'", path);
}

Tensor bench_random(const Shape& shape, DType dtype, Device device, uint64_t seed) {
  return randn(shape, seed).to(dtype).to(device);
}

const std::vector<ComponentEntry>& component_registry() {
  static const std::vector<ComponentEntry> entries = {
      {"WanTransformer3DModel", "transformer", &wan_transformer_bench},
      {"AutoencoderKLWan", "vae", &wan_vae_bench},
      {"CLIPVisionModel", "image_encoder", &clip_vision_bench},
      {"FluxTransformer2DModel", "transformer", &flux_transformer_bench},
      {"AutoencoderKL", "vae", &autoencoder_kl_bench},
  };
  return entries;
}

ComponentBench load_component_bench(const std::string& model, const std::string& role,
                                    const ComponentBenchOptions& options) {
  const fs::path sub = fs::path(model) / role;
  const std::string dir = fs::exists(sub / "config.json") ? sub.string() : model;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  // diffusers writes `_class_name` into every model's config.json; transformers writes
  // `architectures` (e.g. ["CLIPVisionModel"]).
  const Json config = read_json_file(config_path);
  std::string class_name = json_get<std::string>(config, "_class_name", "", config_path);
  if (class_name.empty() && config.contains("architectures") && config.at("architectures").is_array() &&
      !config.at("architectures").empty() && config.at("architectures")[0].is_string())
    class_name = config.at("architectures")[0].get<std::string>();
  std::string supported;
  for (const ComponentEntry& e : component_registry()) {
    if (e.role != role) continue;
    if (e.class_name == class_name) return e.load(dir, options, make_pipeline_context(options.pipeline));
    supported += (supported.empty() ? "" : ", ") + e.class_name;
  }
  fail("{}: no {} benchmark for class '{}' (supported: {})", config_path, role,
       class_name.empty() ? "(no _class_name)" : class_name, supported);
}

}  // namespace vgen
