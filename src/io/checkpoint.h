// A checkpoint folder in the diffusers layout: `model_index.json` names the pipeline class
// and its components; each component is a subfolder with its config and weights.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/json.h"
#include "io/safetensors.h"

namespace vgen {

struct ComponentSpec {
  std::string name;        // "transformer"
  std::string library;     // "diffusers" / "transformers"
  std::string class_name;  // "WanTransformer3DModel"
};

class DiffusersCheckpoint {
 public:
  // Reads and checks `root/model_index.json`; throws naming the file on any problem.
  static DiffusersCheckpoint open(const std::string& root);

  const std::string& root() const { return root_; }
  const std::string& class_name() const { return class_name_; }
  const Json& model_index() const { return model_index_; }
  const std::map<std::string, ComponentSpec>& components() const { return components_; }

  bool has_component(const std::string& name) const { return components_.count(name) != 0; }
  const ComponentSpec& component(const std::string& name) const;
  std::string component_dir(const std::string& name) const;
  // `config.json` of a model component or `scheduler_config.json` of a scheduler.
  Json component_config(const std::string& name) const;
  std::string component_config_path(const std::string& name) const;
  WeightStore component_weights(const std::string& name) const;

 private:
  std::string root_;
  std::string class_name_;
  Json model_index_;
  std::map<std::string, ComponentSpec> components_;
};

}  // namespace vgen
