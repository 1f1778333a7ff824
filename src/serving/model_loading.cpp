#include "serving/model_loading.h"

#include <filesystem>

#include "config/engine_config.h"
#include "pipelines/registry.h"
#include "serving/server.h"

namespace fs = std::filesystem;

namespace vgen::serving {

std::string model_id_for(const ServeOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  fs::path p(options.model);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

std::map<std::string, std::string> list_lora_adapters(const std::string& dir) {
  std::map<std::string, std::string> adapters;
  if (dir.empty()) return adapters;
  if (!fs::is_directory(dir)) fail("--lora-dir {}: not a folder", dir);
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".safetensors")
      adapters[e.path().stem().string()] = fs::absolute(e.path()).string();
  }
  if (adapters.empty()) fail("--lora-dir {}: no .safetensors files in it", dir);
  return adapters;
}

ServedModel load_served_model(const ServeOptions& options) {
  const Device device = resolve_device(options.device);
  PipelineOptions pipeline_options = default_pipeline_options(device);
  if (!options.dtype.empty()) pipeline_options.dtype = parse_compute_dtype(options.dtype);
  // Without a file the defaults apply, among them autotuned convolutions: a server decodes
  // many videos, so their first-call cost is repaid.
  EngineConfig config;
  if (!options.config_file.empty()) {
    config = load_engine_config(options.config_file);
    require_implemented(config, options.config_file);
  }
  apply_engine_config(config, pipeline_options);
  // The command line's switches add to the file's.
  pipeline_options.offload_text_encoder = pipeline_options.offload_text_encoder || options.offload_text_encoder;
  pipeline_options.offload_idle_expert = pipeline_options.offload_idle_expert || options.offload_idle_expert;
  pipeline_options.lora_cached_variants = options.lora_cached_variants;
  ServedModel m;
  m.info.adapters = list_lora_adapters(options.lora_dir);
  m.info.cache = config.cache_config;
  m.pipeline = load_pipeline(options.model, pipeline_options);
  m.info.id = model_id_for(options);
  m.device = device;
  return m;
}

}  // namespace vgen::serving
