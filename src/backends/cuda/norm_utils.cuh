// Helpers shared by the CUDA norm kernels (norm.cu, group_norm.cu): 16-byte vector loads and
// stores converting to and from float32, and on the host the parameter handling (a contiguous,
// aligned copy in the dtype the kernel reads) and the choice of vector width. Internal linkage:
// each including file gets its own copy.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"

namespace vgen::cuda {
namespace {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

template <int VEC, typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[VEC]) {
  const Vec<T, VEC> r = *reinterpret_cast<const Vec<T, VEC>*>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) v[j] = to_float<T>(r.v[j]);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[VEC]) {
  Vec<T, VEC> r;
#pragma unroll
  for (int j = 0; j < VEC; ++j) r.v[j] = from_float<T>(v[j]);
  *reinterpret_cast<Vec<T, VEC>*>(p) = r;
}

inline bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// A contiguous, 16-byte aligned copy of an optional parameter in `dtype`.
inline Tensor param(const Tensor& t, DType dtype) {
  if (!t.defined()) return t;
  require_cuda("norm parameter", t);
  Tensor c = contiguous(t.dtype() == dtype ? t : t.to(dtype));
  return aligned(c.raw_data(), 16) ? c : c.clone();
}

// The dtype kernels read parameters in: x's when every given parameter has it, else float32
// (exact for bf16/f16 parameters).
inline DType param_dtype(DType x, const Tensor& a, const Tensor& b = {}) {
  const bool same = (!a.defined() || a.dtype() == x) && (!b.defined() || b.dtype() == x);
  return same ? x : DType::F32;
}

template <typename F>
inline void dispatch_param(DType xd, DType wd, const char* op, F&& f) {
  VGEN_DISPATCH_FLOAT(xd, op, {
    using X = T;
    if (wd == xd) f(X{}, X{});
    else f(X{}, float{});
  });
}

// vmax when `len`, every stride and every (pointer, element size) allow vectors of vmax
// elements, else vmin when they allow vmin, else 0.
inline int pick_vec(int vmax, int vmin, int64_t len, std::initializer_list<std::pair<const void*, int64_t>> ptrs,
             std::initializer_list<int64_t> strides) {
  for (int v : {vmax, vmin}) {
    bool ok = len % v == 0;
    for (const auto& [p, es] : ptrs) ok = ok && (p == nullptr || aligned(p, v * es));
    for (int64_t s : strides) ok = ok && s % v == 0;
    if (ok) return v;
  }
  return 0;
}

template <int V>
using Int = std::integral_constant<int, V>;

}  // namespace
}  // namespace vgen::cuda
