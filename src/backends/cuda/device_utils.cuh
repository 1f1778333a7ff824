// Helpers for the CUDA backend's kernels: float conversions of the element
// types, SiLU, a dtype dispatch, strided indexing of up to 8 dimensions, and (host side) a
// dispatch over the unsigned word types that vectorized copies move.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace vgen::cuda {

// x * sigmoid(x), one formula for every kernel that applies it (unary ops, fused norms).
__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Rounds a float32 value to T and back (what a store and reload through T gives).
template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float<T>(from_float<T>(v)); }

// Runs `body` with `T` bound to the C++ type of a floating dtype (F32, BF16, F16).
#define VGEN_DISPATCH_FLOAT(dtype, op, ...)                                                   \
  do {                                                                                        \
    switch (dtype) {                                                                          \
      case ::vgen::DType::F32: { using T = float; __VA_ARGS__; break; }                       \
      case ::vgen::DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; }              \
      case ::vgen::DType::F16: { using T = __half; __VA_ARGS__; break; }                      \
      default: ::vgen::fail("{}: dtype {} is not supported on cuda", op, ::vgen::dtype_name(dtype)); \
    }                                                                                         \
  } while (0)

// Calls f(W{}) with W an unsigned word of `bytes` bytes (1 to 16).
template <typename F>
inline void dispatch_word(int64_t bytes, F&& f) {
  switch (bytes) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint2{}); break;
    case 16: f(uint4{}); break;
    default: fail("cuda: no word of {} bytes", bytes);
  }
}

constexpr int kMaxDims = 8;

// Maps a linear index over `shape` (row-major) to an element offset through `strides`.
struct StridedIndex {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];

  __device__ __forceinline__ int64_t offset(int64_t linear) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t i = linear % sizes[d];
      linear /= sizes[d];
      off += i * strides[d];
    }
    return off;
  }
};

// Host: the indexer of a tensor's view (its element offset is in raw_data()); `shape` lets
// a caller broadcast (stride 0 for size-1 dims of t against a larger output shape).
StridedIndex strided_index(const Tensor& t);
StridedIndex broadcast_index(const Tensor& t, const Shape& out_shape);

}  // namespace vgen::cuda
