// The engine's YAML configuration file: how the model runs (quantization, caching,
// parallelism, attention backend, CUDA graphs), as opposed to what a request generates.
//
//   quant_config: {quant_algo: FP8, dynamic: true, ignore: ["proj_out", "blocks.0.*"], fast_accum: false}
//   cache_config: {cache_backend: teacache, teacache_thresh: 0.2, use_ret_steps: true}  (config/cache_config.h)
//   parallel_config: {cfg_size: 1, ulysses_size: 1, ring_size: 1, parallel_vae: false}
//   attention:   {backend: auto}
//   cuda_graph:  {enabled: true}
//   conv:        {autotune: true}
//   gemm:        {autotune: true}
//   offload:     {text_encoder: false, idle_expert: false}
//   vae:         {chunk_frames: 1}
//
// Every section and key is optional (absent = the default below). Parsing is strict: an
// unknown key at any level, a duplicate key, a value of the wrong type or out of range is
// an error naming the file, line, and key path.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/cache_config.h"
#include "core/execution_context.h"

namespace vgen {

// ModelOpt's quantization algorithms for the transformer's linear layers (ops/quant.h has
// the formats), spelled as ModelOpt and TensorRT-LLM's quant_config spell them.
enum class QuantAlgo { None, FP8, FP8Blockwise, NVFP4 };

// TensorRT-LLM VisualGen's `quant_config` (and vgen's --quant-algo, --linear-type).
struct QuantConfig {
  QuantAlgo quant_algo = QuantAlgo::None;  // none | FP8 | FP8_BLOCK_SCALES | NVFP4
  // true: quantize the checkpoint's bf16/fp32 weights while loading; false: the checkpoint
  // holds ModelOpt-exported weights and scales (weight_scale, input_scale, weight_scale_2).
  bool dynamic = true;
  // Module-name patterns (fnmatch-style, e.g. "blocks.0.*", "proj_out") left unquantized;
  // a fused projection is kept unquantized when any of its parts matches.
  std::vector<std::string> ignore;
  // FP8 GEMMs on the GPU accumulate without cuBLASLt's periodic promotion of partial sums to
  // float32 (CUBLASLT_MATMUL_DESC_FAST_ACCUM, torch._scaled_mm's use_fast_accum): faster,
  // slightly less accurate. Unset: on for the FP8 formats, as TensorRT-LLM's FP8 GEMMs run
  // (on an H200 the 14B forward's error against float32 moved from 0.03777 to 0.03779).
  // Nothing changes on the CPU (its reference accumulates in float32).
  std::optional<bool> fast_accum;
  bool enabled() const { return quant_algo != QuantAlgo::None; }
  // Whether the FP8 GEMMs accumulate fast: asked for or left to the default, and an FP8 format.
  bool fast_accum_on() const;
};

// --quant-algo's spelling ("FP8", "FP8_BLOCK_SCALES", "NVFP4", "none"), or TensorRT-LLM's
// --linear-type spelling ("trtllm-fp8-per-tensor", "trtllm-fp8-blockwise", "trtllm-nvfp4",
// "default"); an unknown name is an error naming `flag` and listing the choices.
QuantAlgo parse_quant_algo(const std::string& text, const std::string& flag);
QuantAlgo parse_linear_type(const std::string& text, const std::string& flag);
// Whether quant_config.fast_accum means anything for `algo` (the FP8 formats; NVFP4 runs the
// bf16 GEMM).
bool quant_fast_accum_applies(QuantAlgo algo);

// GPUs (or CPU threads) = cfg_size x ulysses_size x ring_size.
struct ParallelConfig {
  int cfg_size = 1;      // 1, or 2: positive and negative CFG branch on different GPUs
  int ulysses_size = 1;  // sequence-parallel GPUs (all-to-all over heads; must divide the heads)
  int ring_size = 1;     // sequence-parallel GPUs (ring attention over key/value blocks)
  bool parallel_vae = false;  // the VAE decode split over the ranks (by latent rows, with halos)
  int world_size() const { return cfg_size * ulysses_size * ring_size; }
};

enum class AttentionBackend { Auto, Reference, Flash, CuDNN, Sage };

struct AttentionConfig {
  // auto (the fastest exact kernel on the device) | reference | flash (vgen's Hopper kernel) | cudnn |
  // sage (quantized: int8 Q K^T, fp8 P V on Hopper; opt-in, lossy; exact kernels where it cannot run)
  AttentionBackend backend = AttentionBackend::Auto;
};

struct CudaGraphConfig {
  bool enabled = true;  // replay the transformer step from a CUDA graph (on a GPU)
};

struct ConvConfig {
  // Time cuDNN's leading engines for each VAE convolution shape on its first call and keep
  // the fastest (a one-time cost per shape, repaid from the second video on).
  bool autotune = true;
};

struct GemmConfig {
  // Time cuBLASLt's leading algorithms for each GEMM shape on its first call and keep the
  // fastest (a one-time cost per shape, outside CUDA graph capture).
  bool autotune = true;
};

struct OffloadConfig {
  bool text_encoder = false;  // free the text encoder between generations (reloaded for each)
  // Two-expert models (Wan2.2 A14B): only the expert whose turn it is on the GPU, the other in
  // host memory (for GPUs that cannot hold both).
  bool idle_expert = false;
};

struct VaeConfig {
  // Video VAEs (Wan): latent frames decoded per call after the first (diffusers' _decode: 1).
  // The same video; more is faster and takes more peak memory (--vae-chunk-frames).
  int64_t chunk_frames = 1;
};

struct EngineConfig {
  QuantConfig quant_config;
  // Step caching (TeaCache, MagCache, First-Block-Cache) for requests that set none.
  CacheConfig cache_config;
  ParallelConfig parallel_config;
  AttentionConfig attention;
  CudaGraphConfig cuda_graph;
  ConvConfig conv;
  GemmConfig gemm;
  OffloadConfig offload;
  VaeConfig vae;
};

// `source` names the text in errors (the file path).
EngineConfig parse_engine_config(const std::string& yaml_text, const std::string& source);
// Reads and parses a YAML file; a missing or unreadable file is an error naming it.
EngineConfig load_engine_config(const std::string& path);

// One line per configured value whose feature vgen does not implement yet, e.g.
// "linear.quant_algo: fp8 is not implemented yet (supported: none)". Empty when all of it runs.
std::vector<std::string> unimplemented_features(const EngineConfig& config);
// Throws vgen::Error "SOURCE: <every unimplemented feature>" when the list above is not empty,
// so that a configuration is never silently ignored.
void require_implemented(const EngineConfig& config, const std::string& source);

std::string quant_algo_name(QuantAlgo algo);
std::string attention_backend_name(AttentionBackend backend);

// How the configured engine runs ops: `base` (a front end passes
// ExecutionSettings::from_environment()) with the attention, cuda_graph, conv and gemm sections
// applied (attention `auto` keeps base's choice). The one place an EngineConfig becomes
// ExecutionSettings.
ExecutionSettings execution_settings(const EngineConfig& config,
                                     ExecutionSettings base = ExecutionSettings::from_environment());

}  // namespace vgen
