// Loading the served model: the pipeline from the registry, with the engine config's
// execution settings, and the id the API knows it by.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "pipelines/pipeline.h"
#include "serving/requests.h"

namespace vgen::serving {

struct ServeOptions;

// A loaded model: its pipeline and what the server needs to know about it.
struct ServedModel {
  ModelInfo info;
  std::unique_ptr<DiffusionPipeline> pipeline;
  Device device = Device::cpu();  // where its tensors live (the memory /metrics reports)
};
using ModelLoader = std::function<ServedModel()>;

// The LoRA files of `dir` by file stem (empty dir: none); an error for a folder that is missing
// or holds none.
std::map<std::string, std::string> list_lora_adapters(const std::string& dir);

// The model's id in the API: options.served_model_name, else the checkpoint folder's name.
std::string model_id_for(const ServeOptions& options);

// Loads options.model through the pipeline registry on options.device, running as the
// engine config (options.config_file) says over the environment's settings.
ServedModel load_served_model(const ServeOptions& options);

}  // namespace vgen::serving
