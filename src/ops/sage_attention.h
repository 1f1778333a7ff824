// Quantized attention (SageAttention2's recipe), the op ops::sage_attention: what it computes,
// step by step, so that the CPU reference (backends/cpu/attention.cpp) and the Hopper kernel
// (backends/cuda/sage_attention_sm90.cuh) are the same algorithm.
//
// For q [B, H, Sq, D], k and v [B, H, Sk, D] (bf16, D = 128) and a softmax scale, per (b, h):
//   1. K is smoothed: k' = k - mean over the keys of k (per channel; softmax does not change,
//      a row's scores all move by q . mean).
//   2. q is quantized to int8 per group of kQGroup query rows, k' per block of kKBlock keys:
//      amax = max |x| over the group (0: scale 1, all codes 0), scale = amax / 127,
//      code = round-to-nearest-even(x * (127 / amax)) clamped to [-127, 127].
//   3. v is quantized to e4m3 per channel: amax over the keys, scale = amax / 448,
//      code = e4m3(v * (448 / amax)) (saturating; amax 0: scale 1, codes 0).
//   4. Key block n (kKBlock keys) of query row i: s_j = the exact int32 dot product of the
//      codes, f_j = 1.5 * 2^23 + s_j (exact in float32); c = max(q_scale * softmax_scale *
//      log2(e) * k_scale(n), FLT_MIN) (in that order, in float32); m' = max(m, c * (max_j f_j -
//      1.5 * 2^23)); rescale = 2^(m - m') (0 while m = -inf); K = fma(1.5 * 2^23, c, m' - log2 448);
//      w_j = e4m3(2^(fma(f_j, c, -K))) (448 times the softmax weight, rounded; 2^x is the
//      hardware's approximation, or exp2_poly for the keys kPolyKeys picks);
//      O = O * rescale + sum_j w_j v_code_j and l = l * rescale + sum_j w_j (each block's sums a
//      float32 of their own here. On the GPU they are one P V product whose V has a row of ones,
//      and the tensor cores add up the products of 4 blocks (their FP8 accumulation) before O
//      takes them, rescaling within the 4 where a row's maximum rose: the same sums in exact
//      arithmetic, rounded otherwise).
//   5. out = O * v_scale / l, rounded to bf16.
// Keys past Sk are not keys (masked); rows past Sq are not written.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "ops/quant.h"

namespace vgen::sage {

constexpr int kHeadDim = 128;
constexpr int kQGroup = 16;   // query rows per int8 scale
constexpr int kKBlock = 128;  // keys per int8 scale, and per float32 accumulation block
// K's mean is summed (float32, in this order) over chunks of kStatRows keys, each as kStatGroups
// partial sums of every kStatGroups-th key: the GPU's statistics pass and the CPU reference alike,
// so that both quantize K with the same mean.
constexpr int kStatRows = 256;
constexpr int kStatGroups = 16;

// The kernel can compute the weights of the last 8 keys of every 8 * kPolyPeriod with exp2_poly
// on the FMA pipe instead of the MUFU's approximation, spreading the softmax over two pipes (0:
// none). Tuned on an H200 (S=32760 H=12, TFLOP/s, one call): none 904, 1/16 902, 1/8 885, 1/4
// 806 (with the integer row max; 801 with 1/4 and FMNMX, the earlier setting): each polynomial
// costs the issue slots of ~8 instructions and lengthens the warp's dependent chain, while the
// MUFU is not saturated (48% busy per ncu, 2026-12-03).
constexpr int kPolyPeriod = 0;
// The kernel picks by column within each key block, the reference by key index: they agree when
// the period divides the block.
static_assert(kPolyPeriod >= 0 && kKBlock % (8 * (kPolyPeriod > 0 ? kPolyPeriod : 1)) == 0);
constexpr bool kPolyKeys(int64_t j) {
  constexpr int kSpan = 8 * (kPolyPeriod > 0 ? kPolyPeriod : 1);
  return kPolyPeriod > 0 && j % kSpan >= kSpan - 8;
}

// 2^x by a degree-3 polynomial on FMAs (max relative error 8e-5, far below e4m3's 2^-4 step):
// x is clamped to >= -125, rounded to an integer j by adding 1.5 * 2^23 (the integer is then in
// the low bits of the sum), 2^(x - j) is the polynomial, and j goes into the exponent bits.
VGEN_QUANT_HD float exp2_poly(float x) {
  x = x > -125.0f ? x : -125.0f;  // also NaN -> -125
  const float t = x + 12582912.0f;
  const float f = x - (t - 12582912.0f);
  const float p = fmaf(fmaf(fmaf(0.05508876592f, f, 0.24260465801f), f, 0.69327628613f), f, 0.99992889166f);
  return quant::bits_float(quant::float_bits(p) + (quant::float_bits(t) << 23));
}

// Why ops::sage_attention cannot take these inputs ("" when it can), whatever the device:
// q [B, H, Sq, D], k/v [B, H, Sk, D], BF16, D 128, Sk > 0, no bias.
std::string rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias);

// Where key j of a block of 16 sits in the kernel's transposed V (the FP8 wgmma's A operand
// holds a thread's accumulator columns {2t, 2t+1, 8+2t, 9+2t} as positions 4t..4t+3).
constexpr int vt_position(int j) { return 4 * ((j % 8) / 2) + 2 * (j / 8) + j % 2; }

}  // namespace vgen::sage
