// Layout simplification and multi-tensor strided indexing for the CUDA backend's
// elementwise engines (copy.cu, elementwise.cu): a layout's dims are reduced (size-1 dims
// dropped, neighbours contiguous in every tensor merged) and then walked by a 32-bit
// multiply-shift indexer (64-bit division above 2^31 elements).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "backends/cuda/device_utils.cuh"

namespace vgen::cuda {
// n / d for n < 2^31 with a multiply-high and a shift.
struct FastDiv {
  uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    while ((uint64_t(1) << shift) < d) ++shift;
    mul = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, mul) + n) >> shift; }
};

// Maps a linear index over the simplified shape to element offsets of N tensors.
// dim 0 is the innermost; the outermost dim needs no division.
template <int N>
struct Indexer {
  int ndim = 0;
  int64_t size[kMaxDims];
  FastDiv div[kMaxDims];
  int64_t stride[N][kMaxDims];

  template <bool kWide>
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    uint32_t i32 = static_cast<uint32_t>(i);
#pragma unroll
    for (int d = 0; d < kMaxDims - 1; ++d) {
      if (d >= ndim - 1) break;
      int64_t idx;
      if constexpr (kWide) {
        idx = i % size[d];
        i /= size[d];
      } else {
        const uint32_t q = div[d].div(i32);
        idx = i32 - q * div[d].d;
        i32 = q;
      }
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += idx * stride[k][d];
    }
    const int64_t last = kWide ? i : static_cast<int64_t>(i32);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      // ndim >= 1 always; the outermost dim's index is what remains.
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d)
        if (d == ndim - 1) off[k] += last * stride[k][d];
    }
  }
};

// A simplified layout: dims innermost first.
template <int N>
struct Layout {
  std::vector<int64_t> size;
  std::vector<std::array<int64_t, N>> stride;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : size) n *= s;
    return n;
  }
};

// Drops size-1 dims and merges neighbours that are contiguous in every tensor. `order` lists
// the dims of `shape` from outermost to innermost in the walk order.
template <int N>
Layout<N> simplify(const Shape& shape, const std::array<const Shape*, N>& strides, const std::vector<int>& order) {
  Layout<N> l;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int d = *it;
    if (shape[d] == 1) continue;
    std::array<int64_t, N> st;
    for (int k = 0; k < N; ++k) st[k] = (*strides[k])[d];
    if (!l.size.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && st[k] == l.stride.back()[k] * l.size.back();
      if (merge) {
        l.size.back() *= shape[d];
        continue;
      }
    }
    l.size.push_back(shape[d]);
    l.stride.push_back(st);
  }
  if (l.size.empty()) {
    l.size.push_back(1);
    l.stride.push_back({});
  }
  return l;
}

// The same with the dims walked in their own order (outermost first).
template <int N>
Layout<N> simplify(const Shape& shape, const std::array<const Shape*, N>& strides) {
  std::vector<int> order(shape.size());
  for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int>(d);
  return simplify<N>(shape, strides, order);
}

template <int N>
Indexer<N> make_indexer(const Layout<N>& l) {
  Indexer<N> ix;
  ix.ndim = static_cast<int>(l.size.size());
  for (int d = 0; d < ix.ndim; ++d) {
    ix.size[d] = l.size[d];
    if (l.size[d] < (int64_t(1) << 31)) ix.div[d] = FastDiv(static_cast<uint32_t>(l.size[d]));
    for (int k = 0; k < N; ++k) ix.stride[k][d] = l.stride[d][k];
  }
  return ix;
}

inline bool is_wide(int64_t n) { return n >= (int64_t(1) << 31); }

}  // namespace vgen::cuda
