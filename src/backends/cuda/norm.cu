// Row normalizations on the GPU: layer norm (plain and modulated), RMS norm (plain and fused
// with RoPE), RoPE alone, softmax, and the Wan VAE channel norm.
//
// Rows of up to 24 16-byte vectors a lane (the transformers' widths) run one warp per row
// (layer_norm_warp_kernel, rms_rope_warp_kernel; residual_layer_norm adds the residual there
// on the way in). Other row ops run one block per row. A row is read once into registers
// (up to kCached vectors per thread, each VEC elements of one 16-byte load) and reduced in
// float32 with warp shuffles; longer rows fall back to a loop that re-reads the row (from
// L1/L2). Results are rounded as the CPU reference (and the default compositions of the
// fused ops) round them: products and sums are rounded separately (__fmul_rn etc. keep the
// compiler from fusing them), intermediates stored in x's dtype are rounded to it.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/norm_utils.cuh"

namespace vgen::cuda {
namespace {

constexpr int kCached = 2;           // vectors per thread kept in registers (2 measured best)
constexpr int kMaxRowThreads = 512;  // threads per row block

// Sum (or max) over the block; every thread gets the result. blockDim.x is a multiple of 32.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // smem may still be read from a previous reduction
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < warps ? smem[lane] : (kMax ? -INFINITY : 0.0f);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  return v;
}

// Calls f(k, vi) for this thread's vectors vi = threadIdx.x + k * blockDim.x of a row of nv
// vectors: unrolled over k < CACHE (the caller keeps vector k in registers), or with
// CACHE == 0 a plain loop (k is then always 0).
template <int CACHE, typename F>
__device__ __forceinline__ void for_row(int nv, F&& f) {
  if constexpr (CACHE > 0) {
#pragma unroll
    for (int k = 0; k < CACHE; ++k) {
      const int vi = threadIdx.x + k * blockDim.x;
      if (vi < nv) f(k, vi);
    }
  } else {
    for (int vi = threadIdx.x; vi < nv; vi += blockDim.x) f(0, vi);
  }
}

// Rows of a [B, S, D] view: row r = b * S + s starts at b * batch_stride + s * row_stride.
struct Rows {
  int64_t S = 1, batch_stride = 0, row_stride = 0;
  __device__ __forceinline__ int64_t offset(int64_t r) const { return (r / S) * batch_stride + (r % S) * row_stride; }
};

// A row's vectors of this thread, kept as loaded (packed T) when CACHE > 0, else re-read.
template <typename T, int VEC, int CACHE>
struct RowCache {
  Vec<T, VEC> v[CACHE > 0 ? CACHE : 1];
  const T* row;
  __device__ __forceinline__ void load(int k, int vi, float (&out)[VEC]) {
    const Vec<T, VEC> r = *reinterpret_cast<const Vec<T, VEC>*>(row + int64_t(vi) * VEC);
    if constexpr (CACHE > 0) v[k] = r;
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = to_float<T>(r.v[j]);
  }
  __device__ __forceinline__ void get(int k, int vi, float (&out)[VEC]) const {
    Vec<T, VEC> r;
    if constexpr (CACHE > 0) r = v[k];
    else r = *reinterpret_cast<const Vec<T, VEC>*>(row + int64_t(vi) * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = to_float<T>(r.v[j]);
  }
};

// ---- Layer norm (plain, affine, or modulated) -----------------------------------------------

enum LnMode { kPlain, kAffine, kModulated };

struct LayerNormArgs {
  const void* x;
  Rows rows;
  int D;
  void* out;  // contiguous [rows, D]
  const void* weight;  // kAffine: optional weight and bias [D]
  const void* bias;
  const float* scale;  // kModulated: F32 rows given by `mod`
  const float* shift;
  Rows mod;
  float eps;
  // residual_layer_norm (layer_norm_warp_kernel's kResidual): the row normalized is x + y, or
  // x + y * gate, rounded to x's dtype and written to `residual` as the norm reads it.
  const void* y = nullptr;  // contiguous [rows, D], x's dtype
  const float* gate = nullptr;  // optional F32 rows given by `gate_rows`
  Rows gate_rows;
  void* residual = nullptr;  // contiguous [rows, D]
};

// The last step of a layer norm on VEC normalized values at element e of the row, in place:
// times the weight p0 then plus the bias p1 (kAffine; either may be null), or times 1 + scale
// p0 then plus shift p1 (kModulated).
template <int MODE, int VEC, typename P0, typename P1>
__device__ __forceinline__ void layer_norm_finish(float (&v)[VEC], const P0* p0, const P1* p1, int64_t e) {
  if constexpr (MODE == kAffine) {
    float p[VEC];
    if (p0) {
      load_vec<VEC>(p0 + e, p);
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = __fmul_rn(v[j], p[j]);
    }
    if (p1) {
      load_vec<VEC>(p1 + e, p);
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = __fadd_rn(v[j], p[j]);
    }
  } else if constexpr (MODE == kModulated) {
    float sc[VEC], sh[VEC];
    load_vec<VEC>(p0 + e, sc);
    load_vec<VEC>(p1 + e, sh);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = __fadd_rn(__fmul_rn(v[j], __fadd_rn(sc[j], 1.0f)), sh[j]);
  }
}

template <typename T, typename Tw, int MODE, int VEC, int CACHE>
__global__ void __launch_bounds__(kMaxRowThreads) layer_norm_kernel(LayerNormArgs a) {
  __shared__ float smem[32];
  const int64_t row = blockIdx.x;
  T* out = static_cast<T*>(a.out) + row * a.D;
  const int nv = a.D / VEC;
  RowCache<T, VEC, CACHE> cache;
  cache.row = static_cast<const T*>(a.x) + a.rows.offset(row);

  // Two-pass mean and variance over the cached row.
  float sum = 0.0f;
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    cache.load(k, vi, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) sum += v[j];
  });
  const float mean = block_reduce<false>(sum, smem) / a.D;
  float sq = 0.0f;
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    cache.get(k, vi, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) sq += (v[j] - mean) * (v[j] - mean);
  });
  const float rstd = 1.0f / sqrtf(block_reduce<false>(sq, smem) / a.D + a.eps);

  const Tw* w = static_cast<const Tw*>(a.weight);
  const Tw* b = static_cast<const Tw*>(a.bias);
  const float* scale = MODE == kModulated ? a.scale + a.mod.offset(row) : nullptr;
  const float* shift = MODE == kModulated ? a.shift + a.mod.offset(row) : nullptr;
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    cache.get(k, vi, v);
    const int64_t e = int64_t(vi) * VEC;
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = __fmul_rn(__fsub_rn(v[j], mean), rstd);
    if constexpr (MODE == kAffine) layer_norm_finish<MODE>(v, w, b, e);
    else layer_norm_finish<MODE>(v, scale, shift, e);
    store_vec<VEC>(out + e, v);
  });
}

// One warp per row, kWarpRows rows per block in a grid-stride loop: for rows of at most
// 32 MAXV vectors (the transformers' widths: 1536, 3072, 5120 in bf16). The row stays in
// registers, the statistics come from warp shuffles alone (no block barriers), and parameters
// that do not change along the rows (the affine weight and bias, modulation rows per batch)
// are staged once per block in shared memory as float32. Same arithmetic and roundings as
// layer_norm_kernel. Measured on an H200 at Wan 1.3B's [32760, 1536] bf16 rows: the modulated
// norm took 0.24 ms a call with layer_norm_kernel (VGEN_PROFILE_OPS, synchronized), 0.07 ms
// with this one (VGEN_OPS_PERF).
constexpr int kWarpRows = 8;

// Keeps the compiler from carrying a cached vector's float32 conversions from one pass over
// the row to the next (that would hold 4x the registers and spill for wide rows): the packed
// vector is "rewritten" in place, so each pass converts it again (a shift or two a value).
template <typename T, int VEC>
__device__ __forceinline__ void launder(Vec<T, VEC>& v) {
  static_assert(sizeof(v) % 4 == 0);
  uint32_t* w = reinterpret_cast<uint32_t*>(&v);
#pragma unroll
  for (int i = 0; i < int(sizeof(v) / 4); ++i) asm volatile("" : "+r"(w[i]));
}

// A row held by one warp: lane l keeps vectors l, l + 32, ... (up to MAXV of them) as loaded.
template <typename T, int VEC, int MAXV>
struct WarpRow {
  Vec<T, VEC> v[MAXV];
  int nv, lane;

  __device__ __forceinline__ WarpRow(const T* x, int nv_, int lane_) : nv(nv_), lane(lane_) {
#pragma unroll
    for (int k = 0; k < MAXV; ++k)
      if (has(k)) v[k] = *reinterpret_cast<const Vec<T, VEC>*>(x + int64_t(lane + 32 * k) * VEC);
  }
  __device__ __forceinline__ bool has(int k) const { return lane + 32 * k < nv; }
  // Replaces the row by x + y, or x + y * g, in float32 rounded to T (as gated_residual and
  // add round), and stores that to h.
  __device__ __forceinline__ void add_residual(const T* y, const float* g, T* h) {
#pragma unroll
    for (int k = 0; k < MAXV; ++k) {
      if (!has(k)) continue;
      const int64_t e = int64_t(lane + 32 * k) * VEC;
      const Vec<T, VEC> yv = *reinterpret_cast<const Vec<T, VEC>*>(y + e);
      float gv[VEC];
      if (g) load_vec<VEC>(g + e, gv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float xf = to_float<T>(v[k].v[j]), yf = to_float<T>(yv.v[j]);
        v[k].v[j] = from_float<T>(g ? __fadd_rn(xf, __fmul_rn(yf, gv[j])) : __fadd_rn(xf, yf));
      }
      *reinterpret_cast<Vec<T, VEC>*>(h + e) = v[k];
    }
  }
  __device__ __forceinline__ float at(int k, int j) const { return to_float<T>(v[k].v[j]); }
  // The sum over the row of f(value), the same on every lane; the next pass converts again.
  template <typename F>
  __device__ __forceinline__ float sum(F&& f) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < MAXV; ++k) {
      if (!has(k)) continue;
#pragma unroll
      for (int j = 0; j < VEC; ++j) s += f(at(k, j));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
#pragma unroll
    for (int k = 0; k < MAXV; ++k) launder(v[k]);
    return s;
  }
};

template <typename T, typename Tw, int MODE, int VEC, int MAXV, bool kResidual>
__global__ void __launch_bounds__(32 * kWarpRows, 2) layer_norm_warp_kernel(LayerNormArgs a, int64_t nrows,
                                                                          int staged_batches) {
  extern __shared__ __align__(32) float staged[];  // [staged_batches][2][D]: weight and bias, or scale and shift
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int D = a.D, nv = D / VEC;
  if (staged_batches > 0) {
    for (int i = threadIdx.x; i < staged_batches * D; i += blockDim.x) {
      const int b = i / D, d = i % D;
      float p0 = 0.0f, p1 = 0.0f;
      if constexpr (MODE == kAffine) {
        p0 = a.weight ? to_float<Tw>(static_cast<const Tw*>(a.weight)[d]) : 1.0f;
        p1 = a.bias ? to_float<Tw>(static_cast<const Tw*>(a.bias)[d]) : 0.0f;
      } else if constexpr (MODE == kModulated) {
        p0 = a.scale[b * a.mod.batch_stride + d];
        p1 = a.shift[b * a.mod.batch_stride + d];
      }
      staged[(2 * b) * D + d] = p0;
      staged[(2 * b + 1) * D + d] = p1;
    }
    __syncthreads();
  }
  for (int64_t row = int64_t(blockIdx.x) * kWarpRows + warp; row < nrows; row += int64_t(gridDim.x) * kWarpRows) {
    WarpRow<T, VEC, MAXV> x(static_cast<const T*>(a.x) + a.rows.offset(row), nv, lane);
    if constexpr (kResidual)
      x.add_residual(static_cast<const T*>(a.y) + row * D, a.gate ? a.gate + a.gate_rows.offset(row) : nullptr,
                     static_cast<T*>(a.residual) + row * D);
    const float mean = x.sum([](float v) { return v; }) / D;
    const float rstd = 1.0f / sqrtf(x.sum([mean](float v) { return (v - mean) * (v - mean); }) / D + a.eps);

    // This row's parameters: staged (batch row / S of the modulation), or per token in global memory.
    const float* p0 = nullptr;
    const float* p1 = nullptr;
    if (staged_batches > 0) {
      const int b = (MODE == kModulated && staged_batches > 1) ? static_cast<int>(row / a.mod.S) : 0;
      p0 = staged + (2 * b) * D;
      p1 = p0 + D;
    } else if constexpr (MODE == kModulated) {
      p0 = a.scale + a.mod.offset(row);
      p1 = a.shift + a.mod.offset(row);
    }
    T* out = static_cast<T*>(a.out) + row * D;
#pragma unroll
    for (int k = 0; k < MAXV; ++k) {
      if (!x.has(k)) continue;
      const int e = (lane + 32 * k) * VEC;
      float v[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = __fmul_rn(__fsub_rn(x.at(k, j), mean), rstd);
      if constexpr (MODE == kAffine) layer_norm_finish<MODE>(v, a.weight ? p0 : nullptr, a.bias ? p1 : nullptr, e);
      else layer_norm_finish<MODE>(v, p0, p1, e);
      store_vec<VEC>(out + e, v);
    }
  }
}

// ---- RMS norm, RoPE, and both fused ------------------------------------------------------------

struct RmsRopeArgs {
  const void* x;
  Rows rows;  // one row per token (b, s); s indexes the RoPE tables
  int D;      // row length (H * head_dim for the fused op)
  void* out;  // contiguous [rows, D]
  const void* weight;
  float eps;
  const float* cos;  // [S, head_dim] contiguous
  const float* sin;
  int head_dim;
  int groups;  // rows per token: 1, or H when each head of D elements is normalized on its own
};

// kNorm: x * rsqrt(mean(x^2) + eps) * weight, rounded to T. kRope: then rotate interleaved
// pairs: out[2i] = n[2i] cos[2i] - n[2i+1] sin[2i+1], out[2i+1] = n[2i] sin[2i+1] + n[2i+1] cos[2i].
template <typename T, typename Tw, bool kNorm, bool kRope, int VEC, int CACHE>
__global__ void __launch_bounds__(kMaxRowThreads) rms_rope_kernel(RmsRopeArgs a) {
  static_assert(!kRope || VEC % 2 == 0, "rope needs whole pairs per vector");
  __shared__ float smem[32];
  extern __shared__ float4 rope_smem[];  // kRope: (cos[2i], sin[2i + 1]) of this token
  const int64_t row = blockIdx.x, token = row / a.groups;
  T* out = static_cast<T*>(a.out) + row * a.D;
  const int nv = a.D / VEC;
  RowCache<T, VEC, kNorm ? CACHE : 0> cache;
  cache.row = static_cast<const T*>(a.x) + a.rows.offset(token) + (row % a.groups) * a.D;
  float2* pairs = reinterpret_cast<float2*>(rope_smem);
  if constexpr (kRope) {
    const int64_t t = (token % a.rows.S) * a.head_dim;
    for (int i = threadIdx.x; i < a.head_dim / 2; i += blockDim.x)
      pairs[i] = make_float2(a.cos[t + 2 * i], a.sin[t + 2 * i + 1]);
    if constexpr (!kNorm) __syncthreads();  // else the reduction's barriers order it
  }

  float rstd = 1.0f;
  if constexpr (kNorm) {
    float ss = 0.0f;
    for_row<CACHE>(nv, [&](int k, int vi) {
      float v[VEC];
      cache.load(k, vi, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) ss += v[j] * v[j];
    });
    rstd = 1.0f / sqrtf(block_reduce<false>(ss, smem) / a.D + a.eps);
  }

  const Tw* w = static_cast<const Tw*>(a.weight);
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    cache.get(k, vi, v);
    const int64_t e = int64_t(vi) * VEC;
    if constexpr (kNorm) {
      float wv[VEC];
      if (w) {
        load_vec<VEC>(w + e, wv);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) wv[j] = 1.0f;  // exact: w * n == n
      }
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        v[j] = __fmul_rn(wv[j], __fmul_rn(v[j], rstd));
        if constexpr (kRope) v[j] = round_to<T>(v[j]);  // the normalized tensor is stored in T
      }
    }
    if constexpr (kRope) {
      const float2* p = pairs + static_cast<int>(e % a.head_dim) / 2;
      float o[VEC];
#pragma unroll
      for (int j = 0; j < VEC; j += 2) {
        const float2 cs = p[j / 2];
        o[j] = __fsub_rn(__fmul_rn(v[j], cs.x), __fmul_rn(v[j + 1], cs.y));
        o[j + 1] = __fadd_rn(__fmul_rn(v[j], cs.y), __fmul_rn(v[j + 1], cs.x));
      }
      store_vec<VEC>(out + e, o);
    } else {
      store_vec<VEC>(out + e, v);
    }
  });
}

// The per-head case (weight [D], several heads a token): a row is one head of D = G * VEC
// elements, so a block gives each row G lanes (one vector each) rather than a block of its own,
// whose reduction would leave half of a warp idle at D = 128 in 16-bit types. The sum of squares
// is reduced in the same order as rms_rope_kernel's (lanes past D contribute exact zeros
// there), so the two kernels agree bit for bit.
constexpr int kHeadThreads = 256;

template <typename T, typename Tw, int VEC, int G>
__global__ void __launch_bounds__(kHeadThreads) rms_rope_heads_kernel(RmsRopeArgs a, int64_t nrows) {
  static_assert(VEC % 2 == 0 && G <= 32 && (G & (G - 1)) == 0, "whole pairs, a power-of-two lane group");
  const int sub = threadIdx.x % G;
  const int64_t row = int64_t(blockIdx.x) * (kHeadThreads / G) + threadIdx.x / G;
  const bool active = row < nrows;
  const int64_t r = active ? row : 0;  // idle lanes still take part in the shuffles
  const int64_t token = r / a.groups;
  const int e = sub * VEC;
  float v[VEC];
  load_vec<VEC>(static_cast<const T*>(a.x) + a.rows.offset(token) + (r % a.groups) * a.D + e, v);
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < VEC; ++j) ss += v[j] * v[j];
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (!active) return;
  const float rstd = 1.0f / sqrtf(ss / a.D + a.eps);
  float wv[VEC];
  if (a.weight) {
    load_vec<VEC>(static_cast<const Tw*>(a.weight) + e, wv);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) wv[j] = 1.0f;
  }
  const float* cs = a.cos + (token % a.rows.S) * a.head_dim + e;
  const float* sn = a.sin + (token % a.rows.S) * a.head_dim + e;
  float o[VEC];
#pragma unroll
  for (int j = 0; j < VEC; j += 2) {
    const float n0 = round_to<T>(__fmul_rn(wv[j], __fmul_rn(v[j], rstd)));
    const float n1 = round_to<T>(__fmul_rn(wv[j + 1], __fmul_rn(v[j + 1], rstd)));
    const float c = cs[j], s = sn[j + 1];
    o[j] = __fsub_rn(__fmul_rn(n0, c), __fmul_rn(n1, s));
    o[j + 1] = __fadd_rn(__fmul_rn(n0, s), __fmul_rn(n1, c));
  }
  store_vec<VEC>(static_cast<T*>(a.out) + row * a.D + e, o);
}

// RMS norm over rows of up to 32 MAXV vectors (a token's heads together: Wan's q and k norm
// across heads), then optionally RoPE: one warp per row as layer_norm_warp_kernel, the weight
// staged once per block in shared memory as float32, the token's cos / sin read from global
// memory. Same arithmetic and roundings as rms_rope_kernel.
template <typename T, typename Tw, bool kRope, int VEC, int MAXV>
__global__ void __launch_bounds__(32 * kWarpRows, 2) rms_rope_warp_kernel(RmsRopeArgs a, int64_t nrows) {
  static_assert(!kRope || VEC % 4 == 0, "rope reads cos / sin four floats at a time");
  extern __shared__ __align__(16) float wsm[];  // [D] the weight (ones without one)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int D = a.D, nv = D / VEC;
  for (int i = threadIdx.x; i < D; i += blockDim.x)
    wsm[i] = a.weight ? to_float<Tw>(static_cast<const Tw*>(a.weight)[i]) : 1.0f;
  __syncthreads();
  for (int64_t row = int64_t(blockIdx.x) * kWarpRows + warp; row < nrows; row += int64_t(gridDim.x) * kWarpRows) {
    WarpRow<T, VEC, MAXV> x(static_cast<const T*>(a.x) + a.rows.offset(row), nv, lane);
    const float rstd = 1.0f / sqrtf(x.sum([](float v) { return v * v; }) / D + a.eps);
    const int64_t t = (row % a.rows.S) * a.head_dim;  // this token's row of the RoPE tables
    T* out = static_cast<T*>(a.out) + row * D;
#pragma unroll
    for (int k = 0; k < MAXV; ++k) {
      if (!x.has(k)) continue;
      const int e = (lane + 32 * k) * VEC;
      float v[VEC], wv[VEC];
      load_vec<VEC>(wsm + e, wv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        v[j] = __fmul_rn(wv[j], __fmul_rn(x.at(k, j), rstd));
        if constexpr (kRope) v[j] = round_to<T>(v[j]);  // the normalized tensor is stored in T
      }
      if constexpr (kRope) {
        const int hp = e % a.head_dim;
        float c[VEC], sn[VEC];
#pragma unroll
        for (int j = 0; j < VEC; j += 4) {
          load_vec<4>(a.cos + t + hp + j, *reinterpret_cast<float(*)[4]>(c + j));
          load_vec<4>(a.sin + t + hp + j, *reinterpret_cast<float(*)[4]>(sn + j));
        }
        float o[VEC];
#pragma unroll
        for (int j = 0; j < VEC; j += 2) {
          o[j] = __fsub_rn(__fmul_rn(v[j], c[j]), __fmul_rn(v[j + 1], sn[j + 1]));
          o[j + 1] = __fadd_rn(__fmul_rn(v[j], sn[j + 1]), __fmul_rn(v[j + 1], c[j]));
        }
        store_vec<VEC>(out + e, o);
      } else {
        store_vec<VEC>(out + e, v);
      }
    }
  }
}

// ---- Softmax ----------------------------------------------------------------------------------

template <typename T, int VEC, int CACHE>
__global__ void __launch_bounds__(kMaxRowThreads) softmax_kernel(const T* __restrict__ in, T* __restrict__ out, int D) {
  __shared__ float smem[32];
  const int64_t row = blockIdx.x;
  const T* x = in + row * D;
  T* y = out + row * D;
  const int nv = D / VEC;
  float cache[CACHE > 0 ? CACHE : 1][VEC];

  float mx = -INFINITY;
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    load_vec<VEC>(x + int64_t(vi) * VEC, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      mx = fmaxf(mx, v[j]);
      if constexpr (CACHE > 0) cache[k][j] = v[j];
    }
  });
  mx = block_reduce<true>(mx, smem);
  float sum = 0.0f;
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    if constexpr (CACHE > 0) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = cache[k][j];
    } else {
      load_vec<VEC>(x + int64_t(vi) * VEC, v);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float ex = expf(v[j] - mx);
      sum += ex;
      if constexpr (CACHE > 0) cache[k][j] = ex;
    }
  });
  const float inv = 1.0f / block_reduce<false>(sum, smem);
  for_row<CACHE>(nv, [&](int k, int vi) {
    float v[VEC];
    if constexpr (CACHE > 0) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = __fmul_rn(cache[k][j], inv);
    } else {
      load_vec<VEC>(x + int64_t(vi) * VEC, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = __fmul_rn(expf(v[j] - mx), inv);
    }
    store_vec<VEC>(y + int64_t(vi) * VEC, v);
  });
}

// ---- Channel RMS norm (Wan VAE) -----------------------------------------------------------

// The channel norm's value y of one element, given its position's factor sqrt(C) / ||x||
// (channel_rms_factor), then SiLU when kSilu, applied to y rounded to T as an unfused
// silu(norm(x)) would read it. One multiply by a per-position factor instead of torch's divide
// and multiply, and SiLU from the fast exp and divide: the values differ from torch's by float32
// roundings (~1e-7 relative), far below a 16-bit output's; exact IEEE divisions per element made
// this kernel issue-bound (~1.8 TB/s on an H200 for the Wan2.2 VAE's 256-channel frames).
template <typename T, bool kSilu>
__device__ __forceinline__ float channel_rms_out(float v, float factor, float g, float b, bool has_bias) {
  float y = v * factor * g;
  if (has_bias) y += b;
  if constexpr (!kSilu) return y;
  const float r = to_float<T>(from_float<T>(y));
  return __fdividef(r, 1.0f + __expf(-r));
}

// sqrt(C) / max(||x||, 1e-12) from the sum of squares (F.normalize(x, dim=1) * C ** 0.5).
__device__ __forceinline__ float channel_rms_factor(float sum_squares, float scale) {
  return __fdiv_rn(scale, fmaxf(sqrtf(sum_squares), 1e-12f));
}

// x [B, C, inner] contiguous; one thread per VEC consecutive positions of one batch.
template <typename T, typename Tw, int VEC, bool kSilu>
__global__ void channel_rms_kernel(const T* __restrict__ x, T* __restrict__ out, const Tw* __restrict__ gamma,
                                   const Tw* __restrict__ bias, int64_t C, int64_t inner, int64_t n, float scale) {
  const int64_t per_batch = inner / VEC;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / per_batch, p = (i - b * per_batch) * VEC;
    const T* base = x + b * C * inner + p;
    T* dst = out + b * C * inner + p;
    float ss[VEC] = {};
    for (int64_t c = 0; c < C; ++c) {
      float v[VEC];
      load_vec<VEC>(base + c * inner, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) ss[j] += v[j] * v[j];
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) ss[j] = channel_rms_factor(ss[j], scale);
    for (int64_t c = 0; c < C; ++c) {
      float v[VEC];
      load_vec<VEC>(base + c * inner, v);
      const float g = to_float<Tw>(gamma[c]);
      const float bb = bias ? to_float<Tw>(bias[c]) : 0.0f;
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = channel_rms_out<T, kSilu>(v[j], ss[j], g, bb, bias != nullptr);
      store_vec<VEC>(dst + c * inner, v);
    }
  }
}

// x [rows, C] (channels-last: the C channels of a position are contiguous) as nv vectors of
// VEC per row; a group of G lanes per row (G divides 32), lane i of a group taking vectors
// i, i + G, ... With CACHE > 0 (nv <= G * CACHE) a lane keeps its vectors in registers and x
// is read once; CACHE == 0 reads the row twice.
// kRes (residual_channel_rms_norm; CACHE > 0): the row normalized is x + y rounded to T, which
// is also written to res (laid out as x; res may be x: a lane reads all its elements before it
// writes any). x and res are not __restrict__ for that reason.
// tail (optional): rows [tail_start, inner) of each sample of `inner` rows (a causal conv's last
// frames) written there too, as [samples, inner - tail_start] rows.
// Launched with kChannelRmsThreads threads a block and held to 64 registers a thread (4 blocks
// an SM): with 68, the fused residual variant ran 3 blocks an SM and ~10% slower.
constexpr int kChannelRmsThreads = 256;
template <typename T, typename Tw, int VEC, int G, int CACHE, bool kSilu, bool kRes = false>
__global__ void __launch_bounds__(kChannelRmsThreads, 4)
    channel_rms_rows_kernel(const T* x, T* __restrict__ out, const Tw* __restrict__ gamma,
                            const Tw* __restrict__ bias, int64_t nv, int64_t rows, float scale,
                            const T* __restrict__ y = nullptr, T* res = nullptr, T* __restrict__ tail = nullptr,
                            int64_t inner = 1, int64_t tail_start = 0) {
  static_assert(!kRes || CACHE > 0, "the fused residual keeps the row in registers");
  constexpr int kRowsPerWarp = 32 / G;
  const int lane = threadIdx.x & 31, sub = lane % G, slot = lane / G;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  const int64_t C = nv * VEC;
  // The loop is uniform over the warp (shuffles need every lane); rows past the end idle.
  for (int64_t base = warp * kRowsPerWarp; base < rows; base += warps * kRowsPerWarp) {
    const int64_t r = base + slot;
    const bool active = r < rows;
    const T* row = x + (active ? r : 0) * C;
    T* dst = out + r * C;
    // The cached row stays in T (half the registers of float32: more blocks an SM, more loads
    // in flight); the residual sum is rounded to T anyway.
    using Raw = Vec<T, VEC>;
    Raw cache[CACHE > 0 ? CACHE : 1];
    float ss = 0.0f;
    if constexpr (CACHE > 0) {
#pragma unroll
      for (int k = 0; k < CACHE; ++k) {
        const int64_t i = sub + int64_t(k) * G;
        if (active && i < nv) {
          cache[k] = *reinterpret_cast<const Raw*>(row + i * VEC);
          if constexpr (kRes) {
            const Raw add = *reinterpret_cast<const Raw*>(y + r * C + i * VEC);
#pragma unroll
            for (int j = 0; j < VEC; ++j)
              cache[k].v[j] = from_float<T>(to_float<T>(cache[k].v[j]) + to_float<T>(add.v[j]));
          }
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            const float v = to_float<T>(cache[k].v[j]);
            ss += v * v;
          }
        }
      }
    } else {
      for (int64_t i = sub; active && i < nv; i += G) {
        float v[VEC];
        load_vec<VEC>(row + i * VEC, v);
#pragma unroll
        for (int j = 0; j < VEC; ++j) ss += v[j] * v[j];
      }
    }
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (!active) continue;
    const float factor = channel_rms_factor(ss, scale);
    T* tail_row = nullptr;
    if (tail) {
      const int64_t sample = r / inner, local = r - sample * inner;
      if (local >= tail_start) tail_row = tail + (sample * (inner - tail_start) + local - tail_start) * C;
    }
    auto finish = [&](int64_t i, float (&v)[VEC]) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int64_t c = i * VEC + j;
        const float bb = bias ? to_float<Tw>(bias[c]) : 0.0f;
        v[j] = channel_rms_out<T, kSilu>(v[j], factor, to_float<Tw>(gamma[c]), bb, bias != nullptr);
      }
      store_vec<VEC>(dst + i * VEC, v);
      if (tail_row) store_vec<VEC>(tail_row + i * VEC, v);
    };
    if constexpr (CACHE > 0) {
#pragma unroll
      for (int k = 0; k < CACHE; ++k) {
        const int64_t i = sub + int64_t(k) * G;
        if (i < nv) {
          if constexpr (kRes) *reinterpret_cast<Raw*>(res + r * C + i * VEC) = cache[k];
          float v[VEC];
#pragma unroll
          for (int j = 0; j < VEC; ++j) v[j] = to_float<T>(cache[k].v[j]);
          finish(i, v);
        }
      }
    } else {
      for (int64_t i = sub; i < nv; i += G) {
        float v[VEC];
        load_vec<VEC>(row + i * VEC, v);
        finish(i, v);
      }
    }
  }
}

// ---- Host side ----------------------------------------------------------------------------

// Calls launch(Int<VEC>, Int<CACHE>, threads) for a row of nv vectors of `vec` (VMAX or
// VMIN) elements: cached in registers when the row fits kCached vectors a thread.
template <int VMAX, int VMIN, typename F>
void launch_rows(int64_t nv, int vec, F&& launch) {
  const int64_t per = (nv + kCached - 1) / kCached;
  const bool cached = per <= kMaxRowThreads;
  const int threads = cached ? static_cast<int>(std::max<int64_t>(32, (per + 31) / 32 * 32)) : kMaxRowThreads;
  if (vec == VMAX && cached) launch(Int<VMAX>{}, Int<kCached>{}, threads);
  else if (vec == VMAX) launch(Int<VMAX>{}, Int<0>{}, threads);
  else if (cached) launch(Int<VMIN>{}, Int<kCached>{}, threads);
  else launch(Int<VMIN>{}, Int<0>{}, threads);
}

// Calls launch(Int<MAXV>, grid, threads) for the warp-per-row kernels (kWarpRows rows a block,
// at most 8 blocks an SM in a grid-stride loop) over rows of up to 24 vectors a lane.
template <typename F>
void launch_warp_rows(int64_t nrows, int64_t nv, F&& launch) {
  const int64_t per_lane = (nv + 31) / 32, blocks = (nrows + kWarpRows - 1) / kWarpRows;
  const auto grid = static_cast<unsigned>(std::min<int64_t>(blocks, device_properties().multiProcessorCount * 8LL));
  constexpr int threads = 32 * kWarpRows;
  if (per_lane <= 2) launch(Int<2>{}, grid, threads);
  else if (per_lane <= 6) launch(Int<6>{}, grid, threads);
  else if (per_lane <= 12) launch(Int<12>{}, grid, threads);
  else launch(Int<24>{}, grid, threads);
}

// The widest rows residual_layer_norm fuses, in vectors a lane (3072 bf16 elements). Wider rows
// run the two ops: measured on an H200 at [16384, 5120] bf16 the fused kernel took 0.29 ms
// (ptxas spills its 24-vector rows), the two ops 0.26-0.28 ms; at [32760, 1536]
// it takes 0.134-0.139 ms against 0.155-0.165 ms for the two.
constexpr int kResidualMaxV = 12;

// residual_layer_norm's residual: x + y (* gate) is normalized, and written to `out`.
struct ResidualIn {
  const Tensor& y;
  const Tensor& gate;
  Tensor* out;
};

// Layer norm over the last dim, optional affine and modulation (x [B, S, D] then). With `res`
// (x [B, S, D]) the norm of the residual x + y (* gate), which goes to *res->out, in one pass
// of layer_norm_warp_kernel; where that kernel does not apply, nothing runs and the result is
// undefined (the caller composes the ops).
Tensor layer_norm_rows(const char* op, const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                       const Tensor& scale, const Tensor& shift, float eps, const ResidualIn* res = nullptr) {
  require_cuda(op, x_in);
  require_float(op, x_in);
  const int64_t D = x_in.size(-1);
  Tensor out = Tensor::empty(x_in.shape(), x_in.dtype(), x_in.device());
  if (res) *res->out = Tensor::empty(x_in.shape(), x_in.dtype(), x_in.device());
  const int64_t nrows = D == 0 ? 0 : x_in.numel() / D;
  if (nrows == 0) return out;
  VGEN_CHECK(nrows < (int64_t(1) << 31) && D < (int64_t(1) << 31), "{}: {} is too large", op, x_in.str());
  // Rows of a [B, S, D] view with a contiguous last dim are read in place; others are copied.
  Tensor x = x_in;
  Rows rows{nrows, 0, D};
  if (x.dim() == 3 && x.strides()[2] == 1) rows = {x.size(1), x.strides()[0], x.strides()[1]};
  else x = contiguous(x);
  const DType wd = param_dtype(x.dtype(), weight, bias);
  const Tensor w = param(weight, wd), b = param(bias, wd);
  Rows mod;
  if (scale.defined())
    mod = {x.size(1), scale.size(0) == 1 ? 0 : scale.strides()[0], scale.size(1) == 1 ? 0 : scale.strides()[1]};
  LayerNormArgs args{x.raw_data(), rows, static_cast<int>(D), out.raw_data(),
                     w.defined() ? w.raw_data() : nullptr, b.defined() ? b.raw_data() : nullptr,
                     scale.defined() ? static_cast<const float*>(scale.raw_data()) : nullptr,
                     shift.defined() ? static_cast<const float*>(shift.raw_data()) : nullptr, mod, eps};
  if (res) {
    // y contiguous and the gate's rows with a contiguous last dim, or no fused kernel.
    if (!res->y.is_contiguous() || (res->gate.defined() && res->gate.strides()[2] != 1)) return {};
    args.y = res->y.raw_data();
    args.residual = res->out->raw_data();
    if (res->gate.defined()) {
      const Tensor& g = res->gate;
      args.gate = static_cast<const float*>(g.raw_data());
      args.gate_rows = {x.size(1), g.size(0) == 1 ? 0 : g.strides()[0], g.size(1) == 1 ? 0 : g.strides()[1]};
    }
  }
  const int64_t es = static_cast<int64_t>(x.element_size()), ws = static_cast<int64_t>(dtype_size(wd));
  const int vmax = static_cast<int>(16 / es);
  const int vec = pick_vec(vmax, 1, D,
                           {{args.x, es}, {args.out, es}, {args.weight, ws}, {args.bias, ws}, {args.scale, 4},
                            {args.shift, 4}, {args.y, es}, {args.residual, es}, {args.gate, 4}},
                           {rows.batch_stride, rows.row_stride, mod.batch_stride, mod.row_stride,
                            args.gate_rows.batch_stride, args.gate_rows.row_stride});
  const int64_t nv = D / vec;
  const unsigned grid = static_cast<unsigned>(nrows);
  const int mode = scale.defined() ? kModulated : (w.defined() || b.defined()) ? kAffine : kPlain;
  // Rows of up to 24 full-width vectors a lane: one warp per row (layer_norm_warp_kernel), with
  // the parameters staged in shared memory when they fit (48 KB) and do not change per token.
  const int64_t per_lane = (nv + 31) / 32;
  int staged = 0;
  if (mode == kAffine) staged = 1;
  if (mode == kModulated && mod.row_stride == 0) staged = mod.batch_stride == 0 ? 1 : static_cast<int>(x.size(0));
  if (static_cast<int64_t>(staged) * 2 * D * 4 > 48 * 1024) staged = 0;
  if (vec == vmax && per_lane <= (res ? kResidualMaxV : 24) && (mode != kAffine || staged == 1)) {
    const size_t smem = static_cast<size_t>(staged) * 2 * D * sizeof(float);
    dispatch_param(x.dtype(), wd, op, [&](auto tx, auto tw) {
      using T = decltype(tx);
      using Tw = decltype(tw);
      constexpr int V = 16 / sizeof(T);
      launch_warp_rows(nrows, nv, [&](auto maxv, unsigned grid, int threads) {
        constexpr int M = decltype(maxv)::value;
        auto go = [&](auto residual) {
          constexpr bool R = decltype(residual)::value;
          if constexpr (!R || M <= kResidualMaxV) {  // (wider residual rows are not fused: not compiled)
            if (mode == kAffine)
              layer_norm_warp_kernel<T, Tw, kAffine, V, M, R><<<grid, threads, smem, stream()>>>(args, nrows, staged);
            else if (mode == kModulated)
              layer_norm_warp_kernel<T, T, kModulated, V, M, R><<<grid, threads, smem, stream()>>>(args, nrows, staged);
            else
              layer_norm_warp_kernel<T, T, kPlain, V, M, R><<<grid, threads, smem, stream()>>>(args, nrows, 0);
          }
        };
        if (res) go(std::true_type{});
        else go(std::false_type{});
      });
    });
    check_launch(op, x_in, scale);
    return out;
  }
  if (res) return {};
  dispatch_param(x.dtype(), wd, op, [&](auto tx, auto tw) {
    using T = decltype(tx);
    using Tw = decltype(tw);
    launch_rows<16 / sizeof(T), 1>(nv, vec, [&](auto v, auto c, int threads) {
      constexpr int V = decltype(v)::value, C = decltype(c)::value;
      if (mode == kAffine) layer_norm_kernel<T, Tw, kAffine, V, C><<<grid, threads, 0, stream()>>>(args);
      else if (mode == kModulated) layer_norm_kernel<T, T, kModulated, V, C><<<grid, threads, 0, stream()>>>(args);
      else layer_norm_kernel<T, T, kPlain, V, C><<<grid, threads, 0, stream()>>>(args);
    });
  });
  check_launch(op, x_in, scale);
  return out;
}

// RMS norm (norm) and/or RoPE (cos defined) of the rows of x: one row per token of D
// elements (H * head_dim for RoPE), x's rows given by `rows`, the output contiguous. With
// `groups` > 1 a token's D elements are `groups` rows of D / groups, each normalized alone.
Tensor rms_rope_rows(const char* op, const Tensor& x, Rows rows, int64_t D, const Tensor& weight, float eps,
                     const Tensor& cos, const Tensor& sin, bool norm, int64_t groups = 1) {
  D /= groups;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t nrows = D == 0 ? 0 : x.numel() / D;
  if (nrows == 0) return out;
  VGEN_CHECK(nrows < (int64_t(1) << 31) && D < (int64_t(1) << 31), "{}: {} is too large", op, x.str());
  const bool rope = cos.defined();
  const DType wd = param_dtype(x.dtype(), weight);
  const Tensor w = norm ? param(weight, wd) : Tensor();
  const Tensor c = rope ? param(cos, DType::F32) : Tensor(), s = rope ? param(sin, DType::F32) : Tensor();
  const int64_t hd = rope ? c.size(1) : D;
  const RmsRopeArgs args{x.raw_data(), rows, static_cast<int>(D), out.raw_data(),
                         w.defined() ? w.raw_data() : nullptr, eps,
                         rope ? static_cast<const float*>(c.raw_data()) : nullptr,
                         rope ? static_cast<const float*>(s.raw_data()) : nullptr, static_cast<int>(hd),
                         static_cast<int>(groups)};
  const int64_t es = static_cast<int64_t>(x.element_size()), ws = static_cast<int64_t>(dtype_size(wd));
  const int vmax = static_cast<int>(16 / es), vmin = rope ? 2 : 1;
  const int vec = pick_vec(vmax, vmin, hd, {{args.x, es}, {args.weight, ws}}, {rows.batch_stride, rows.row_stride});
  if (vec == 0) {  // a misaligned view (RoPE needs whole pairs): read an aligned copy
    const Tensor xc = x.clone();
    const int64_t token = D * groups;
    return rms_rope_rows(op, xc, {rows.S, rows.S * token, token}, token, weight, eps, cos, sin, norm, groups);
  }
  const int64_t nv = D / vec;
  const unsigned grid = static_cast<unsigned>(nrows);
  VGEN_CHECK(!rope || hd <= 8192, "{}: head dim {} is too large", op, hd);
  if (norm && rope && groups > 1 && hd == D && vec == static_cast<int>(16 / es) && nv >= 2 && nv <= 32 &&
      (nv & (nv - 1)) == 0) {
    dispatch_param(x.dtype(), wd, op, [&](auto tx, auto tw) {
      using T = decltype(tx);
      using Tw = decltype(tw);
      constexpr int V = 16 / sizeof(T);
      auto launch = [&](auto g) {
        constexpr int G = decltype(g)::value;
        const unsigned blocks = static_cast<unsigned>((nrows + kHeadThreads / G - 1) / (kHeadThreads / G));
        rms_rope_heads_kernel<T, Tw, V, G><<<blocks, kHeadThreads, 0, stream()>>>(args, nrows);
      };
      switch (nv) {
        case 2: launch(Int<2>{}); break;
        case 4: launch(Int<4>{}); break;
        case 8: launch(Int<8>{}); break;
        case 16: launch(Int<16>{}); break;
        default: launch(Int<32>{}); break;
      }
    });
    check_launch(op, x, cos);
    return out;
  }
  // Whole-token rows (groups 1) of up to 24 full-width vectors a lane, normalized: one warp per
  // row (rms_rope_warp_kernel); RoPE there needs head dims of whole 4-float vectors.
  const int64_t per_lane = (nv + 31) / 32;
  if (norm && groups == 1 && vec == vmax && per_lane <= 24 && (!rope || hd % vmax == 0) &&
      D * sizeof(float) <= 48 * 1024) {
    const size_t smem = static_cast<size_t>(D) * sizeof(float);
    dispatch_param(x.dtype(), wd, op, [&](auto tx, auto tw) {
      using T = decltype(tx);
      using Tw = decltype(tw);
      constexpr int V = 16 / sizeof(T);
      launch_warp_rows(nrows, nv, [&](auto maxv, unsigned grid, int threads) {
        constexpr int M = decltype(maxv)::value;
        if (rope) rms_rope_warp_kernel<T, Tw, true, V, M><<<grid, threads, smem, stream()>>>(args, nrows);
        else rms_rope_warp_kernel<T, Tw, false, V, M><<<grid, threads, smem, stream()>>>(args, nrows);
      });
    });
    check_launch(op, x, cos);
    return out;
  }
  const size_t pair_bytes = rope ? static_cast<size_t>(hd / 2) * sizeof(float2) : 0;
  dispatch_param(x.dtype(), wd, op, [&](auto tx, auto tw) {
    using T = decltype(tx);
    using Tw = decltype(tw);
    constexpr int kVec = 16 / sizeof(T);
    if (rope) {
      launch_rows<kVec, 2>(nv, vec, [&](auto v, auto c, int threads) {
        constexpr int V = decltype(v)::value, C = decltype(c)::value;
        if (norm) rms_rope_kernel<T, Tw, true, true, V, C><<<grid, threads, pair_bytes, stream()>>>(args);
        else rms_rope_kernel<T, T, false, true, V, C><<<grid, threads, pair_bytes, stream()>>>(args);
      });
    } else {
      launch_rows<kVec, 1>(nv, vec, [&](auto v, auto c, int threads) {
        rms_rope_kernel<T, Tw, true, false, decltype(v)::value, decltype(c)::value>
            <<<grid, threads, 0, stream()>>>(args);
      });
    }
  });
  check_launch(op, x, cos);
  return out;
}

// Rows (one per token) of x [B, S, H, D], copying x first when a token's (H, D) block is
// not contiguous.
Rows token_rows(Tensor* x) {
  const Shape& st = x->strides();
  const bool dense = st[3] == 1 && (x->size(2) == 1 || st[2] == x->size(3));
  if (!dense) *x = x->contiguous();
  return {x->size(1), x->strides()[0], x->strides()[1]};
}

}  // namespace

Tensor CudaOps::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  VGEN_CHECK(x.dim() >= 1, "layer_norm of {}", x.str());
  VGEN_CHECK(!weight.defined() || weight.numel() == x.size(-1), "layer_norm: weight {} for input {}", weight.str(), x.str());
  VGEN_CHECK(!bias.defined() || bias.numel() == x.size(-1), "layer_norm: bias {} for input {}", bias.str(), x.str());
  return layer_norm_rows("layer_norm", x, weight, bias, {}, {}, eps);
}

Tensor CudaOps::modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps) {
  require_cuda("modulated_layer_norm", scale);
  require_cuda("modulated_layer_norm", shift);
  VGEN_CHECK(x.dim() == 3 && scale.dim() == 3 && shift.shape() == scale.shape() && scale.dtype() == DType::F32 &&
                 shift.dtype() == DType::F32 && scale.size(2) == x.size(2) &&
                 (scale.size(0) == x.size(0) || scale.size(0) == 1) && (scale.size(1) == x.size(1) || scale.size(1) == 1),
             "modulated_layer_norm: x {} with scale {} shift {}", x.str(), scale.str(), shift.str());
  // scale and shift are read through one set of strides with a contiguous last dim.
  const bool same = scale.strides()[2] == 1 && shift.strides() == scale.strides();
  return layer_norm_rows("modulated_layer_norm", x, {}, {}, same ? scale : scale.clone(), same ? shift : shift.clone(),
                         eps);
}

ResidualNorm CudaOps::residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& gate,
                                          const LayerNormParams& n) {
  const char* op = "residual_layer_norm";
  for (const Tensor* t : {&y, &gate, &n.weight, &n.bias, &n.scale, &n.shift}) require_cuda(op, *t);
  VGEN_CHECK(x.dim() == 3 && y.shape() == x.shape() && y.dtype() == x.dtype(), "{}: x {} and y {} differ", op,
             x.str(), y.str());
  // The modulation as modulated_layer_norm reads it (one set of strides, contiguous last dim).
  const bool mod_ok = !n.scale.defined() || (n.scale.dtype() == DType::F32 && n.shift.dtype() == DType::F32 &&
                                              n.scale.strides()[2] == 1 && n.shift.strides() == n.scale.strides());
  const bool gate_ok = !gate.defined() || gate.dtype() == DType::F32;
  if (mod_ok && gate_ok && is_kernel_float(x.dtype())) {
    ResidualNorm r;
    const ResidualIn res{y, gate, &r.residual};
    r.normed = layer_norm_rows(op, x, n.weight, n.bias, n.scale, n.shift, n.eps, &res);
    if (r.normed.defined()) return r;
  }
  return active().Backend::residual_layer_norm(x, y, gate, n);  // the ops in turn
}

Tensor CudaOps::rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  require_cuda("rms_norm", x);
  require_float("rms_norm", x);
  VGEN_CHECK(x.dim() >= 1, "rms_norm of {}", x.str());
  VGEN_CHECK(!weight.defined() || weight.numel() == x.size(-1), "rms_norm: weight {} for input {}", weight.str(), x.str());
  const Tensor xc = contiguous(x);
  const int64_t D = x.size(-1);
  const int64_t rows = D == 0 ? 1 : std::max<int64_t>(x.numel() / D, 1);
  return rms_rope_rows("rms_norm", xc, {rows, 0, D}, D, weight, eps, {}, {}, true);
}

Tensor CudaOps::rope(const Tensor& x_in, const Tensor& cos, const Tensor& sin) {
  require_cuda("rope", x_in);
  require_float("rope", x_in);
  VGEN_CHECK(x_in.dim() == 4 && cos.dim() == 2 && cos.size(0) == x_in.size(1) && cos.size(1) == x_in.size(3) &&
                 sin.shape() == cos.shape() && x_in.size(3) % 2 == 0,
             "rope: x {} with cos {} sin {}", x_in.str(), cos.str(), sin.str());
  Tensor x = x_in;
  const Rows rows = token_rows(&x);
  return rms_rope_rows("rope", x, rows, x.size(2) * x.size(3), {}, 0.0f, cos, sin, false);
}

Tensor CudaOps::rms_norm_rope(const Tensor& x_in, const Tensor& weight, float eps, const Tensor& cos,
                                  const Tensor& sin) {
  require_cuda("rms_norm_rope", x_in);
  require_float("rms_norm_rope", x_in);
  const int64_t H = x_in.size(2), D = x_in.size(3);
  VGEN_CHECK(x_in.dim() == 4 && weight.dim() == 1 && (weight.size(0) == H * D || weight.size(0) == D) &&
                 cos.dim() == 2 && cos.size(0) == x_in.size(1) && cos.size(1) == D && sin.shape() == cos.shape() &&
                 D % 2 == 0,
             "rms_norm_rope: x {} weight {} cos {} sin {}", x_in.str(), weight.str(), cos.str(), sin.str());
  Tensor x = x_in;
  const Rows rows = token_rows(&x);
  // weight [D] with several heads: each head is a row of its own.
  const int64_t groups = weight.size(0) == H * D ? 1 : H;
  return rms_rope_rows("rms_norm_rope", x, rows, H * D, weight, eps, cos, sin, true, groups);
}

Tensor CudaOps::softmax(const Tensor& x_in) {
  require_cuda("softmax", x_in);
  require_float("softmax", x_in);
  VGEN_CHECK(x_in.dim() >= 1, "softmax of {}", x_in.str());
  const Tensor x = contiguous(x_in);
  const int64_t D = x.size(-1);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t nrows = D == 0 ? 0 : x.numel() / D;
  if (nrows == 0) return out;
  VGEN_CHECK(nrows < (int64_t(1) << 31) && D < (int64_t(1) << 31), "softmax: {} is too large", x.str());
  const int64_t es = static_cast<int64_t>(x.element_size());
  const int vec = pick_vec(static_cast<int>(16 / es), 1, D, {{x.raw_data(), es}}, {});
  const int64_t nv = D / vec;
  const unsigned grid = static_cast<unsigned>(nrows);
  VGEN_DISPATCH_FLOAT(x.dtype(), "softmax", {
    const T* in = static_cast<const T*>(x.raw_data());
    T* o = static_cast<T*>(out.raw_data());
    const int d = static_cast<int>(D);
    launch_rows<16 / sizeof(T), 1>(nv, vec, [&](auto v, auto c, int threads) {
      softmax_kernel<T, decltype(v)::value, decltype(c)::value><<<grid, threads, 0, stream()>>>(in, o, d);
    });
  });
  check_launch("softmax", x_in);
  return out;
}

namespace {

// Lanes a channels-last row keeps in registers (kChannelRmsCache vectors a lane, 32 lanes).
constexpr int kChannelRmsCache = 4;

// channel_rms_norm of x into out (x's shape; rows as x's, or a batch stride of out_batch); with
// y and res (residual_channel_rms_norm), of x + y, which is written to res. x is channels-last
// (rows) or contiguous; y and res are laid out as x and need whole rows in registers.
void launch_channel_rms(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act, const Tensor& out,
                        const Tensor& y, const Tensor& res, const Tensor& tail) {
  const bool rows = x.is_channels_last_3d(), fused = y.defined();
  const int64_t B = x.size(0), C = x.size(1), inner = x.numel() / (B * C);
  // Sample b's rows start at b * out_batch in out (in x, at b * inner * C).
  const int64_t out_batch = B > 1 ? out.strides()[0] : inner * C;
  const DType wd = param_dtype(x.dtype(), gamma, bias);
  const Tensor g = param(gamma, wd), b = param(bias, wd);
  const float scale = std::sqrt(static_cast<float>(C));
  const int64_t es = static_cast<int64_t>(x.element_size());
  const int vec = rows ? pick_vec(static_cast<int>(16 / es), 1, C, {{x.raw_data(), es}, {out.raw_data(), es}}, {})
                       : pick_vec(static_cast<int>(16 / es), 1, inner, {{x.raw_data(), es}}, {});
  VGEN_CHECK(!fused || (rows && vec == 16 / es && C / vec <= 32 * kChannelRmsCache),
             "residual_channel_rms_norm: {} is not rows of whole 16-byte vectors held in registers", x.str());
  VGEN_CHECK(!tail.defined() || (rows && vec == 16 / es), "channel_rms_norm: tail {} for {} is not rows of vectors",
             tail.str(), x.str());
  constexpr int kThreads = kChannelRmsThreads;  // the rows kernel's launch bounds
  dispatch_param(x.dtype(), wd, "channel_rms_norm", [&](auto tx, auto tw) {
    using T = decltype(tx);
    using Tw = decltype(tw);
    constexpr int kVec = 16 / sizeof(T);
    const T* in = static_cast<const T*>(x.raw_data());
    const T* yp = fused ? static_cast<const T*>(y.raw_data()) : nullptr;
    T* rp = fused ? static_cast<T*>(res.raw_data()) : nullptr;
    T* tp = tail.defined() ? static_cast<T*>(tail.raw_data()) : nullptr;
    // The tail's rows: the last tail.size(2) frames of each sample's inner rows.
    const int64_t tail_rows = tp ? tail.numel() / (B * C) : 0, tail_start = inner - tail_rows;
    T* o = static_cast<T*>(out.raw_data());
    const Tw* gp = static_cast<const Tw*>(g.raw_data());
    const Tw* bp = b.defined() ? static_cast<const Tw*>(b.raw_data()) : nullptr;
    auto go = [&](auto v, auto silu) {
      constexpr int V = decltype(v)::value;
      constexpr bool S = decltype(silu)::value;
      if (!rows) {
        channel_rms_kernel<T, Tw, V, S><<<blocks_for(B * (inner / V), kThreads), kThreads, 0, stream()>>>(
            in, o, gp, bp, C, inner, B * (inner / V), scale);
        return;
      }
      // Channels-last rows: the smallest group of lanes that holds a row in registers
      // (kCache vectors a lane), else whole warps reading the row twice.
      constexpr int kCache = kChannelRmsCache;
      // One launch over all rows when out's samples follow each other as x's do, else one a sample.
      const bool packed = out_batch == inner * C;
      const int64_t nv = C / V, nrows = packed ? B * inner : inner;
      auto launch = [&](auto g, auto cache) {
        constexpr int Gs = decltype(g)::value, Cs = decltype(cache)::value;
        const unsigned blocks = blocks_for((nrows + 32 / Gs - 1) / (32 / Gs) * 32, kThreads);
        for (int64_t s = 0; s < (packed ? 1 : B); ++s) {
          if constexpr (Cs > 0) {
            if (fused) {
              channel_rms_rows_kernel<T, Tw, V, Gs, Cs, S, true><<<blocks, kThreads, 0, stream()>>>(
                  in + s * inner * C, o + s * out_batch, gp, bp, nv, nrows, scale, yp + s * inner * C,
                  rp + s * inner * C, tp ? tp + s * tail_rows * C : nullptr, inner, tail_start);
              continue;
            }
          }
          channel_rms_rows_kernel<T, Tw, V, Gs, Cs, S><<<blocks, kThreads, 0, stream()>>>(
              in + s * inner * C, o + s * out_batch, gp, bp, nv, nrows, scale, nullptr, nullptr,
              tp ? tp + s * tail_rows * C : nullptr, inner, tail_start);
        }
      };
      if constexpr (V != kVec) launch(Int<32>{}, Int<0>{});
      else if (nv > 32 * kCache) launch(Int<32>{}, Int<0>{});
      else if (nv <= 2 * kCache) launch(Int<2>{}, Int<kCache>{});
      else if (nv <= 4 * kCache) launch(Int<4>{}, Int<kCache>{});
      else if (nv <= 8 * kCache) launch(Int<8>{}, Int<kCache>{});
      else if (nv <= 16 * kCache) launch(Int<16>{}, Int<kCache>{});
      else launch(Int<32>{}, Int<kCache>{});
    };
    auto with_vec = [&](auto silu) {
      if (vec == kVec) go(Int<kVec>{}, silu);
      else go(Int<1>{}, silu);
    };
    if (act == Activation::Silu) with_vec(std::true_type{});
    else with_vec(std::false_type{});
  });
}

// Whether `dst` takes the result in place: each batch sample of it laid out as the result's
// channels-last rows (the frames of a causal conv's input buffer behind its cached ones).
bool writes_rows_into(const Tensor& x, const Tensor& dst) {
  return x.is_channels_last_3d() && dst.numel() > 0 && dst.narrow(0, 0, 1).is_channels_last_3d();
}

// Whether the norm's kernel writes `tail` (the result's last frames) itself: channels-last rows of
// x, of `dst` (if any) and of a dense channels-last tail (its rows [N, T, H, W] in order, as the
// kernel addresses them), 16-byte aligned with whole vectors a row; else the tail is copied from
// the result.
bool writes_tail(const Tensor& x, const Tensor& tail, const Tensor& dst) {
  const int64_t vec = 16 / static_cast<int64_t>(x.element_size());
  return tail.defined() && tail.numel() > 0 && x.dim() == 5 && x.is_channels_last_3d() && x.size(1) % vec == 0 &&
         aligned16(x) && aligned16(tail) && tail.is_channels_last_3d() &&
         (!dst.defined() || (writes_rows_into(x, dst) && aligned16(dst)));
}

}  // namespace

Tensor CudaOps::channel_rms_norm(const Tensor& x_in, const Tensor& gamma, const Tensor& bias, Activation act,
                                 const Tensor& dst, const Tensor& tail) {
  require_cuda("channel_rms_norm", x_in);
  if (dst.defined()) require_cuda("channel_rms_norm", dst);
  if (tail.defined()) require_cuda("channel_rms_norm", tail);
  // A tail the kernel cannot write is copied from the result.
  if (tail.defined() && !writes_tail(x_in, tail, dst)) {
    const Tensor out = channel_rms_norm(x_in, gamma, bias, act, dst, Tensor());
    if (tail.numel() > 0) Tensor(tail).copy_(out.narrow(2, out.size(2) - tail.size(2), tail.size(2)));
    return out;
  }
  require_float("channel_rms_norm", x_in);
  VGEN_CHECK(x_in.dim() >= 2 && gamma.numel() == x_in.size(1) && (!bias.defined() || bias.numel() == x_in.size(1)),
             "channel_rms_norm: x {} gamma {} bias {}", x_in.str(), gamma.str(), bias.str());
  VGEN_CHECK(act == Activation::None || act == Activation::Silu,
             "channel_rms_norm: only no activation or SiLU can follow the norm");
  // Channels-last 3-D input: rows of C contiguous channels, output in the same layout.
  const bool rows = x_in.is_channels_last_3d();
  // `dst` is written in place when laid out as the result's rows, else through a copy.
  if (dst.defined() && !writes_rows_into(x_in, dst)) {
    Tensor(dst).copy_(channel_rms_norm(x_in, gamma, bias, act, Tensor(), Tensor()));
    return dst;
  }
  const Tensor x = rows ? x_in : contiguous(x_in);
  Tensor out = dst.defined() ? dst : Tensor::empty_like_format(x, x.shape(), x.dtype());
  if (x.numel() == 0) return out;
  launch_channel_rms(x, gamma, bias, act, out, Tensor(), Tensor(), tail);
  check_launch("channel_rms_norm", x_in, gamma);
  return out;
}

ResidualNorm CudaOps::residual_channel_rms_norm(const Tensor& x, const Tensor& y, const Tensor& gamma,
                                                const Tensor& bias, Activation act, const Tensor& residual,
                                                const Tensor& dst, const Tensor& tail) {
  const char* op = "residual_channel_rms_norm";
  for (const Tensor* t : {&x, &y, &residual, &dst, &tail})
    if (t->defined()) require_cuda(op, *t);
  require_float(op, x);
  // One kernel: channels-last rows of x, y and the residual alike, each row held in registers
  // (at 16-byte vectors, up to 32 x kChannelRmsCache of them: 1024 16-bit channels), and `dst`
  // taking its rows in place; else the ops in turn.
  const int64_t es = static_cast<int64_t>(x.element_size()), vec = 16 / es;
  const int64_t C = x.dim() == 5 ? x.size(1) : 0;
  const bool fused = x.dim() == 5 && x.numel() > 0 && is_kernel_float(x.dtype()) && x.is_channels_last_3d() &&
                     y.strides() == x.strides() && (!residual.defined() || residual.strides() == x.strides()) &&
                     C % vec == 0 && C / vec <= 32 * kChannelRmsCache && (!dst.defined() || writes_rows_into(x, dst)) &&
                     aligned16(x) && aligned16(y) && aligned16(residual) && aligned16(dst) &&
                     (!tail.defined() || writes_tail(x, tail, dst));
  if (!fused) return active().Backend::residual_channel_rms_norm(x, y, gamma, bias, act, residual, dst, tail);
  VGEN_CHECK(gamma.numel() == C && (!bias.defined() || bias.numel() == C), "{}: x {} gamma {} bias {}", op, x.str(),
             gamma.str(), bias.str());
  const Tensor res = residual.defined() ? residual : Tensor::empty_like_format(x, x.shape(), x.dtype());
  const Tensor out = dst.defined() ? dst : Tensor::empty_like_format(x, x.shape(), x.dtype());
  launch_channel_rms(x, gamma, bias, act, out, y, res, tail);
  check_launch(op, x, gamma);
  return {res, out};
}

}  // namespace vgen::cuda
