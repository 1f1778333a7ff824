// How nn::Linear quantizes its weight (quant_config, config/engine_config.h; the formats in
// ops/quant.h).
//
// Dynamic (quant_config.dynamic: true): the checkpoint's weight is read in float32 on the host,
// LoRA merged (nn::Weights::load), rounded to the compute dtype (what the unquantized model
// would multiply by), then quantized by the host reference quantize_weight and uploaded.
// Fused projections (Linear::fused: to_q | to_k | to_v) are quantized as ONE weight, after the
// concatenation: one per-tensor scale (or one global NVFP4 scale) for the fused GEMM.
//
// Static (dynamic: false): the checkpoint holds what ModelOpt's export writes for each
// quantized module PREFIX (the unquantized ones keep their float weight):
//   FP8               PREFIX.weight F8_E4M3 [N, K], PREFIX.weight_scale F32 [] or [1],
//                     PREFIX.input_scale F32 [] or [1] (required: the activation scale)
//   FP8_BLOCK_SCALES  PREFIX.weight F8_E4M3 [N, K], PREFIX.weight_scale F32 [ceil(N/128), ceil(K/128)]
//   NVFP4             PREFIX.weight U8 [N, K/2], PREFIX.weight_scale F8_E4M3 [N, K/16],
//                     PREFIX.weight_scale_2 F32 [] or [1], PREFIX.input_scale (optional, unused:
//                     vgen's NVFP4 is W4A16)
// A missing or mis-shaped tensor is an error naming it. A fused projection of static parts
// concatenates them when their per-tensor scales (FP8 weight_scale, input_scale, NVFP4
// weight_scale_2) agree, and FP8_BLOCK_SCALES parts whose rows are whole 128-blocks; otherwise
// the parts are dequantized and the fused weight requantized as one (dynamic-style).
// LoRA adapters cannot be merged into a static checkpoint's quantized weights (an error).
#pragma once

#include <string>

#include "config/engine_config.h"
#include "ops/quant.h"

namespace vgen::nn {

QuantFormat quant_format(QuantAlgo algo);
// Whether `name` (a module prefix, "blocks.0.attn1.to_q") matches one of the config's ignore
// patterns (fnmatch, `*` crosses dots).
bool quant_ignored(const QuantConfig& config, const std::string& name);

}  // namespace vgen::nn
