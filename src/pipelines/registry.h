// Pipelines keyed by the `_class_name` in a checkpoint's model_index.json, and model
// components keyed by the `_class_name` in their own config.json (for `vgen bench`).
// This is the only place that names a model family: adding one is a folder under
// src/models/ and src/pipelines/, and its lines here.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "pipelines/pipeline.h"

namespace vgen {

struct PipelineEntry {
  std::string class_name;  // "WanPipeline"
  // Loads the pipeline into `context` (built by load_pipeline from options.execution).
  std::unique_ptr<DiffusionPipeline> (*load)(const DiffusersCheckpoint&, const PipelineOptions&,
                                             std::shared_ptr<ExecutionContext>);
};

const std::vector<PipelineEntry>& pipeline_registry();
// The ExecutionContext for options.device with options.execution: the one place contexts are
// made (pipelines, component benchmarks, and op benchmarks that run outside a pipeline).
std::shared_ptr<ExecutionContext> make_pipeline_context(const PipelineOptions& options);
// The entry for a checkpoint's class; throws listing the supported classes when unknown.
const PipelineEntry& find_pipeline(const DiffusersCheckpoint& checkpoint);
// Builds the pipeline's ExecutionContext (options.device, options.execution) and loads the
// pipeline the checkpoint's model_index.json names into it.
std::unique_ptr<DiffusionPipeline> load_pipeline(const DiffusersCheckpoint& checkpoint, const PipelineOptions& options);
// Opens `model_dir`, then as above.
std::unique_ptr<DiffusionPipeline> load_pipeline(const std::string& model_dir, const PipelineOptions& options);

// One model component on its own, timed by `vgen bench transformer|vae` on random (or
// given) inputs at a pixel size that the component's family turns into latents.
struct ComponentBenchOptions {
  PipelineOptions pipeline;  // device, dtype, vae_dtype, execution
  // Pixel size; unset: the family's defaults.
  std::optional<int64_t> height, width, num_frames;
  int64_t text_len = 512;  // denoiser: prompt tokens of the random context
  // Denoiser: inputs from a safetensors file (hidden_states, timestep, encoder_hidden_states),
  // and the output of one forward written as raw little-endian float32.
  std::string inputs;
  std::string save_output;
  // VAE: time encode (a video of the pixel size) instead of decode.
  bool encode = false;
  // Denoiser: pixels per latent position; unset: the scale_factor_spatial of a `vae` folder
  // beside the component's, else the family's default (Wan2.1: 8).
  std::optional<int64_t> vae_scale_factor_spatial;
};

struct ComponentBench {
  std::function<void()> run;            // one forward (denoiser) or decode (VAE)
  nlohmann::json facts;                 // the sizes it runs at (h, w, frames, tokens, ...)
  std::function<nlohmann::json()> after;  // facts known once it has run (e.g. CUDA-graph replays)
  std::shared_ptr<ExecutionContext> context;  // bind it around run()
};

// For the families' component benches: t written as raw little-endian float32 (what the bench
// driver reads back with numpy), and random data (never zeros: they can run faster than real data).
void bench_save_raw_f32(const Tensor& t, const std::string& path);
Tensor bench_random(const Shape& shape, DType dtype, Device device, uint64_t seed);

struct ComponentEntry {
  std::string class_name;  // "WanTransformer3DModel"
  std::string role;        // "transformer", "vae" or "image_encoder": what `vgen bench` calls it
  ComponentBench (*load)(const std::string& dir, const ComponentBenchOptions&, std::shared_ptr<ExecutionContext>);
};

const std::vector<ComponentEntry>& component_registry();
// Loads the `role` component from `model` (a pipeline root, whose `role` subfolder is used,
// or the component's own folder) by the `_class_name` of its config.json, in a context built
// from options.pipeline.
ComponentBench load_component_bench(const std::string& model, const std::string& role,
                                    const ComponentBenchOptions& options);

}  // namespace vgen
