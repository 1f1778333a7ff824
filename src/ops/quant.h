// Quantized linear layers in NVIDIA ModelOpt's formats: the formats, a quantized weight, the
// scalar codecs (shared by host and device code) and the host reference of weight quantization.
//
//   Fp8PerTensor  (quant_algo FP8) weight F8_E4M3 [N, K] with weight_scale F32 [] (one value):
//                 w ~= q * weight_scale, weight_scale = amax(|W|) / 448. Activations: one scale
//                 per call, amax(|x|) / 448 (dynamic) or the checkpoint's input_scale (static).
//   Fp8Block      (FP8_BLOCK_SCALES, DeepSeek-V3's) weight F8_E4M3 [N, K] with weight_scale F32
//                 [ceil(N/128), ceil(K/128)], one per 128x128 block: amax(block) / 448.
//                 Activations: one scale per row and 128 consecutive input features (1x128
//                 groups), always computed per call.
//   Nvfp4         (NVFP4) weight U8 [N, K/2], two e2m1 values per byte (element 2j in the low
//                 nibble, 2j+1 in the high one), weight_scale F8_E4M3 [N, K/16] (one per 16
//                 elements of a row) and weight_scale_2 F32 [] (global):
//                 w ~= e2m1 * float(weight_scale) * weight_scale_2, with
//                 weight_scale_2 = amax(|W|) / (6 * 448) and weight_scale = e4m3(amax(block) / 6 /
//                 weight_scale_2). Activations are NOT quantized (W4A16): no GPU before Blackwell
//                 multiplies fp4, so on Hopper the weights are expanded to 16-bit in the GEMM and
//                 a 4-bit activation would only add error. A static checkpoint's input_scale is
//                 read and checked, not used.
//
// Rounding everywhere is round-to-nearest-even; values are clamped to the format's largest
// magnitude (448 for e4m3, 6 for e2m1) first. An all-zero tensor or block gets the scale 1.
// tools/fixtures/make_wan_quant_fixtures.py is the Python reference of the same functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/tensor.h"

#if defined(__CUDACC__)
#define VGEN_QUANT_HD __host__ __device__ __forceinline__
#else
#define VGEN_QUANT_HD inline
#endif

namespace vgen {

enum class QuantFormat { Fp8PerTensor, Fp8Block, Nvfp4 };

// "fp8 per-tensor", "fp8 128x128 blocks", "nvfp4" (messages, `vgen info`).
const char* quant_format_name(QuantFormat format);

// The weight of one quantized linear layer, on one device (see the formats above).
struct QuantizedWeight {
  QuantFormat format = QuantFormat::Fp8PerTensor;
  int64_t out_features = 0, in_features = 0;
  Tensor data;            // F8_E4M3 [N, K] or U8 [N, K/2]
  Tensor weight_scale;    // F32 [1] | F32 [ceil(N/128), ceil(K/128)] | F8_E4M3 [N, K/16]
  Tensor weight_scale_2;  // NVFP4: F32 [1]
  Tensor input_scale;     // F32 [1]: a static checkpoint's activation scale (FP8: used); else undefined
  // FP8 on the GPU: cuBLASLt's fast accumulation (quant_config.fast_accum); no effect elsewhere.
  bool fast_accum = false;
  bool defined() const { return data.defined(); }
  QuantizedWeight to(Device device) const;
  // Bytes of data and scales.
  int64_t nbytes() const;
};

// A quantized activation: F8_E4M3 [M, K] (contiguous rows) and its F32 scales, [1] (per
// tensor) or [M, ceil(K/128)] (1x128 groups).
struct QuantizedActivation {
  Tensor data;
  Tensor scale;
};

namespace quant {

constexpr float kE4M3Max = 448.0f;
constexpr float kE2M1Max = 6.0f;
constexpr int64_t kBlock = 128;      // FP8_BLOCK_SCALES: weight blocks and activation groups
constexpr int64_t kNvfp4Block = 16;  // NVFP4: elements per e4m3 block scale

VGEN_QUANT_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
VGEN_QUANT_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// float -> e4m3fn, round to nearest even, saturating at +-448; NaN -> 0x7f.
VGEN_QUANT_HD uint8_t float_to_e4m3(float f) {
  const uint32_t bits = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7f);
  const float a = bits_float(abs_bits);
  if (a >= kE4M3Max) return static_cast<uint8_t>(sign | 0x7e);
  if (a < 0.015625f) {  // below 2^-6: subnormals, steps of 2^-9 (a * 512 is exact)
    const float q = a * 512.0f;
    float r = floorf(q);
    const float frac = q - r;
    if (frac > 0.5f || (frac == 0.5f && fmodf(r, 2.0f) != 0.0f)) r += 1.0f;
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(r));  // r == 8 is 2^-6, the smallest normal
  }
  const uint32_t rounded = abs_bits + 0x7ffffu + ((abs_bits >> 20) & 1u);
  const int e = static_cast<int>((rounded >> 23) & 0xffu) - 127;
  const uint32_t m = (rounded >> 20) & 7u;
  if (e > 8 || (e == 8 && m == 7)) return static_cast<uint8_t>(sign | 0x7e);
  return static_cast<uint8_t>(sign | static_cast<uint8_t>(((e + 7) << 3) | m));
}

VGEN_QUANT_HD float e4m3_to_float(uint8_t v) {
  const uint32_t sign = (v & 0x80u) ? 0x80000000u : 0u;
  const uint32_t e = (v >> 3) & 0xfu, m = v & 7u;
  if (e == 0xf && m == 7) return bits_float(sign | 0x7fc00000u);
  if (e == 0) return bits_float(sign | float_bits(static_cast<float>(m) * 0.001953125f));  // m * 2^-9
  return bits_float(sign | ((e + 120u) << 23) | (m << 20));
}

// float -> e2m1 code (bit 3 the sign, bits 0-2 the index into 0, .5, 1, 1.5, 2, 3, 4, 6), round to
// nearest even (a tie goes to the even index), saturating at +-6.
VGEN_QUANT_HD uint8_t float_to_e2m1(float f) {
  const float a = fabsf(f);
  uint8_t i;
  if (a <= 0.25f) i = 0;
  else if (a < 0.75f) i = 1;
  else if (a <= 1.25f) i = 2;
  else if (a < 1.75f) i = 3;
  else if (a <= 2.5f) i = 4;
  else if (a < 3.5f) i = 5;
  else if (a <= 5.0f) i = 6;
  else i = 7;
  return static_cast<uint8_t>((f < 0.0f ? 8 : 0) | i);
}

VGEN_QUANT_HD float e2m1_to_float(uint8_t code) {
  const uint8_t i = code & 7u;
  const float mag = i < 4 ? 0.5f * static_cast<float>(i) : (i == 4 ? 2.0f : i == 5 ? 3.0f : i == 6 ? 4.0f : 6.0f);
  return (code & 8u) ? -mag : mag;
}

// The scale that maps an amax onto the format's largest value (1 for an all-zero amax).
VGEN_QUANT_HD float fp8_scale(float amax) { return amax > 0.0f ? amax / kE4M3Max : 1.0f; }

}  // namespace quant

// Host reference: quantizes w (any float dtype, any device; read as float32 on the host) into
// `format`, on the host. w [N, K] with K a multiple of 16 for NVFP4 (else an error naming `name`).
QuantizedWeight quantize_weight(const Tensor& w, QuantFormat format, const std::string& name);
// Host reference: the float32 [N, K] host tensor a quantized weight stands for.
Tensor dequantize_weight(const QuantizedWeight& w);
// Checks a weight's tensors against its format and shape; an error names `name` + ".weight",
// ".weight_scale", ... and the shape or dtype expected.
void check_quantized_weight(const QuantizedWeight& w, const std::string& name);

}  // namespace vgen
