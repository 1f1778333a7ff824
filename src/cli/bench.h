// `vgen bench`: times vgen's pieces on random inputs, one JSON line per measurement, so a
// driver (tools/bench/bench_wan.py) can put them beside diffusers' figures from the same run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vgen::cli {

struct BenchArgs {
  std::string what;    // attention | transformer | vae | image_encoder | pipeline
  std::string model;   // checkpoint folder (pipeline root, or the component's own folder)
  std::string device = "auto";
  std::string dtype;   // compute dtype; empty: bf16 on a GPU, fp32 on the CPU
  std::string vae_dtype;  // empty: the model family's default
  int64_t vae_chunk_frames = 1;  // the Wan VAE's latent frames per decoder call after the first
  std::optional<std::string> attention_backend;  // unset: VGEN_ATTENTION_BACKEND, else auto
  // Pixel size; unset: the model's defaults (its capabilities, or its family's for a component).
  std::optional<int64_t> height, width, num_frames;
  int64_t heads = 12, head_dim = 128, seq = 32760;  // attention
  int64_t kv_seq = 0;                                // attention: key/value length (0: seq)
  int64_t text_len = 512;                         // transformer context tokens
  std::optional<int> steps;                       // pipeline; unset: the model's default
  int warmup = 2, iters = 5;
  bool cuda_graphs = true;            // transformer, pipeline: replay the step from a CUDA graph
  bool conv_autotune = false;         // vae, pipeline: autotuned GPU convolutions (vgen serve's default)
  bool gemm_autotune = true;          // cuBLASLt's algorithms timed per GEMM shape (false: the heuristic's first)
  bool offload_idle_expert = false;   // pipeline: two-expert models keep the idle expert in host memory
  bool offload_text_encoder = false;  // pipeline: free the text encoder after encoding, as `vgen generate` does
  std::string output;  // pipeline: also write the MP4 (timed, as diffusers' export is)
  std::string prompt = "A cat plays piano in the night";
  // transformer: inputs from a safetensors file (hidden_states, timestep, encoder_hidden_states)
  // instead of random ones, and the output saved as raw little-endian float32 (parity runs).
  std::string inputs;
  std::string save_output;
  bool encode = false;  // vae: time encode instead of decode
  std::optional<int64_t> vae_scale_factor_spatial;  // transformer: pixels per latent position
  std::string image;    // pipeline: the first frame (image-to-video models)
  std::optional<double> guidance_scale;  // pipeline; unset: the model's default (1 runs no negative pass)
  std::vector<std::string> lora;         // pipeline: LoRA adapters "FILE[:SCALE]" fused while loading
  // pipeline: step caching (a JSON file holding a cache_config object, config/cache_config.h);
  // the initial noise (safetensors `latents`); where to save the denoised latents and the
  // uint8 frames (safetensors `denoised_latents`, `frames`) for accuracy against another run.
  // Several --cache-config: one run each (after one load and warm-up), in order, reported in
  // "runs"; "none" is a run without a cache; save_latents then gets ".N" before its extension.
  std::vector<std::string> cache_config;
  std::string latents;
  std::string save_latents;
  // transformer, pipeline: the linear layers quantized (--quant-algo FP8 | FP8_BLOCK_SCALES |
  // NVFP4; --quant-static: the checkpoint is ModelOpt-exported); empty: none.
  std::string quant_algo;
  bool quant_static = false;
  bool quant_fast_accum = false, quant_no_fast_accum = false;  // FP8: cuBLASLt's fast accumulation (quant_config.fast_accum)
};

int run_bench(const BenchArgs& args);

}  // namespace vgen::cli
