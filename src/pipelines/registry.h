// Pipelines keyed by the `_class_name` in a checkpoint's model_index.json.
// Adding a model family: a folder under src/models/ and one line in registry.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "pipelines/pipeline.h"

namespace vgen {

struct PipelineEntry {
  std::string class_name;  // "WanPipeline"
  std::string task;        // "text-to-video"
  std::unique_ptr<DiffusionPipeline> (*load)(const DiffusersCheckpoint&, const PipelineOptions&);
};

const std::vector<PipelineEntry>& pipeline_registry();
// The entry for a checkpoint's class; throws listing the supported classes when unknown.
const PipelineEntry& find_pipeline(const DiffusersCheckpoint& checkpoint);
// Opens `model_dir` and loads the pipeline its model_index.json names.
std::unique_ptr<DiffusionPipeline> load_pipeline(const std::string& model_dir, const PipelineOptions& options);

}  // namespace vgen
