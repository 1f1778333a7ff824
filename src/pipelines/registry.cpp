#include "pipelines/registry.h"

#include "models/wan/pipeline_wan.h"

namespace vgen {

const std::vector<PipelineEntry>& pipeline_registry() {
  static const std::vector<PipelineEntry> entries = {
      {"WanPipeline", "text-to-video",
       [](const DiffusersCheckpoint& c, const PipelineOptions& o) -> std::unique_ptr<DiffusionPipeline> {
         return WanPipeline::from_pretrained(c, o);
       }},
  };
  return entries;
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

std::unique_ptr<DiffusionPipeline> load_pipeline(const std::string& model_dir, const PipelineOptions& options) {
  const DiffusersCheckpoint checkpoint = DiffusersCheckpoint::open(model_dir);
  return find_pipeline(checkpoint).load(checkpoint, options);
}

}  // namespace vgen
