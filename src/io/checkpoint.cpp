#include "io/checkpoint.h"

#include <filesystem>

namespace fs = std::filesystem;

namespace vgen {

DiffusersCheckpoint DiffusersCheckpoint::open(const std::string& root) {
  if (!fs::is_directory(root)) fail("{}: model folder not found", root);
  const std::string index_path = (fs::path(root) / "model_index.json").string();
  if (!fs::exists(index_path)) fail("{}: not a diffusers checkpoint (no model_index.json)", root);
  DiffusersCheckpoint ckpt;
  ckpt.root_ = root;
  ckpt.model_index_ = read_json_file(index_path);
  if (!ckpt.model_index_.is_object()) fail("{}: expected a JSON object", index_path);
  ckpt.class_name_ = json_require<std::string>(ckpt.model_index_, "_class_name", index_path);
  for (const auto& [key, value] : ckpt.model_index_.items()) {
    if (key.empty() || key[0] == '_') continue;
    // Components are ["library", "ClassName"]; [null, null] marks an absent optional one.
    if (!value.is_array()) continue;
    if (value.size() != 2) fail("{}: component '{}' must be [library, class]", index_path, key);
    if (value[0].is_null() || value[1].is_null()) continue;
    if (!value[0].is_string() || !value[1].is_string())
      fail("{}: component '{}' must be [library, class] strings", index_path, key);
    ckpt.components_[key] = {key, value[0].get<std::string>(), value[1].get<std::string>()};
  }
  return ckpt;
}

const ComponentSpec& DiffusersCheckpoint::component(const std::string& name) const {
  auto it = components_.find(name);
  if (it == components_.end()) fail("{}/model_index.json: no component '{}'", root_, name);
  return it->second;
}

std::string DiffusersCheckpoint::component_dir(const std::string& name) const {
  component(name);
  const fs::path dir = fs::path(root_) / name;
  if (!fs::is_directory(dir)) fail("{}: component folder '{}' is missing", root_, name);
  return dir.string();
}

std::string DiffusersCheckpoint::component_config_path(const std::string& name) const {
  const fs::path dir = component_dir(name);
  for (const char* file : {"config.json", "scheduler_config.json"}) {
    if (fs::exists(dir / file)) return (dir / file).string();
  }
  fail("{}: no config.json or scheduler_config.json", dir.string());
}

Json DiffusersCheckpoint::component_config(const std::string& name) const {
  const std::string path = component_config_path(name);
  Json j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  return j;
}

WeightStore DiffusersCheckpoint::component_weights(const std::string& name) const {
  return WeightStore::open_dir(component_dir(name));
}

}  // namespace vgen
