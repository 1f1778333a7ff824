// Copies on the GPU and between host and GPU (any strides, dtype conversion as the CPU
// copy does), fills, and the host builders of StridedIndex (device_utils.cuh).
//
// A device copy first simplifies the layout: dims are ordered by the destination's strides,
// size-1 dims dropped, and dims that are contiguous with each other in both tensors merged.
// What is left is walked by a 32-bit multiply-shift indexer (64-bit above 2^31 elements).
// Same-dtype copies move raw words of up to 16 bytes (the innermost run of both tensors
// reinterpreted as wider words when aligned), so a permuted copy whose innermost dim is
// contiguous on both sides, e.g. [B, S, H, D] <-> [B, H, S, D], is a stream of 16-byte loads.


#include <algorithm>
#include <array>
#include <cstring>

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/layout.cuh"

namespace vgen::cuda {

StridedIndex strided_index(const Tensor& t) {
  VGEN_CHECK(t.dim() <= kMaxDims, "cuda: {} has more than {} dims", t.str(), kMaxDims);
  StridedIndex s;
  s.ndim = static_cast<int>(t.dim());
  for (int d = 0; d < s.ndim; ++d) {
    s.sizes[d] = t.size(d);
    s.strides[d] = t.strides()[d];
  }
  return s;
}

StridedIndex broadcast_index(const Tensor& t, const Shape& out_shape) {
  const int64_t rank = static_cast<int64_t>(out_shape.size());
  VGEN_CHECK(rank <= kMaxDims && t.dim() <= rank, "cuda: cannot broadcast {} to {}", t.str(), shape_str(out_shape));
  StridedIndex s;
  s.ndim = static_cast<int>(rank);
  const int64_t lead = rank - t.dim();
  for (int64_t d = 0; d < rank; ++d) {
    s.sizes[d] = out_shape[d];
    s.strides[d] = 0;
    if (d < lead) continue;
    const int64_t n = t.size(d - lead);
    VGEN_CHECK(n == out_shape[d] || n == 1, "cuda: cannot broadcast {} to {}", t.str(), shape_str(out_shape));
    if (n != 1) s.strides[d] = t.strides()[d - lead];
  }
  return s;
}

namespace {

constexpr int kThreads = 256;

// ---- Element conversions --------------------------------------------------------------------

__device__ __forceinline__ float f8e4m3_to_float_dev(uint8_t v) {
  const float sign = (v & 0x80) ? -1.0f : 1.0f;
  const int exponent = (v >> 3) & 0xf, mantissa = v & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return __int_as_float(0x7fc00000);
  if (exponent == 0) return sign * ldexpf(static_cast<float>(mantissa), -9);
  return sign * ldexpf(1.0f + mantissa / 8.0f, exponent - 7);
}

// Any dtype as double, as the CPU copy reads it.
__device__ __forceinline__ double load_any(const char* p, DType t) {
  switch (t) {
    case DType::F32: return *reinterpret_cast<const float*>(p);
    case DType::F16: return __half2float(*reinterpret_cast<const __half*>(p));
    case DType::BF16: return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
    case DType::F8_E4M3: return f8e4m3_to_float_dev(*reinterpret_cast<const uint8_t*>(p));
    case DType::F8_E5M2: {
      const uint16_t bits = static_cast<uint16_t>(*reinterpret_cast<const uint8_t*>(p)) << 8;
      return __half2float(__ushort_as_half(bits));
    }
    case DType::F64: return *reinterpret_cast<const double*>(p);
    case DType::I64: return static_cast<double>(*reinterpret_cast<const int64_t*>(p));
    case DType::I32: return *reinterpret_cast<const int32_t*>(p);
    case DType::U8: return *reinterpret_cast<const uint8_t*>(p);
    case DType::BOOL: return *reinterpret_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0.0;
}

// double -> integer as x86's truncating conversions do (the CPU reference): NaN and
// out-of-range values give the "integer indefinite" minimum.
__device__ __forceinline__ int64_t to_i64(double v) {
  return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? static_cast<int64_t>(v) : INT64_MIN;
}
__device__ __forceinline__ int32_t to_i32(double v) {
  return v > -2147483649.0 && v < 2147483648.0 ? static_cast<int32_t>(v) : INT32_MIN;
}

// Stores a double as the CPU copy does (F8 targets are refused on the host).
__device__ __forceinline__ void store_any(char* p, DType t, double v) {
  switch (t) {
    case DType::F32: *reinterpret_cast<float*>(p) = static_cast<float>(v); break;
    case DType::F16: *reinterpret_cast<__half*>(p) = __float2half_rn(static_cast<float>(v)); break;
    case DType::BF16: *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(static_cast<float>(v)); break;
    case DType::F64: *reinterpret_cast<double*>(p) = v; break;
    case DType::I64: *reinterpret_cast<int64_t*>(p) = to_i64(v); break;
    case DType::I32: *reinterpret_cast<int32_t*>(p) = to_i32(v); break;
    case DType::U8: *reinterpret_cast<uint8_t*>(p) = static_cast<uint8_t>(to_i32(v)); break;
    case DType::BOOL: *reinterpret_cast<uint8_t*>(p) = v != 0.0; break;
    default: break;
  }
}

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// ---- Kernels ----------------------------------------------------------------------------------

// Same dtype: words of type W (1 to 16 bytes); offsets in words.
template <typename W, bool kWide>
__global__ void copy_words_kernel(W* __restrict__ dst, const W* __restrict__ src, Indexer<2> ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets<kWide>(i, off);
    dst[off[0]] = src[off[1]];
  }
}

// Same dtype, the destination's innermost run contiguous: VEC elements gathered per thread and
// stored as one word (offsets: destination in words, source in elements). Element j of a word
// is read at (j % run) * step + (j / run) * step2 from the word's source offset: runs of `run`
// elements stepping by `step` (0: repeated), the runs stepping by `step2`. The index arithmetic
// is done once per word.
template <typename T, int VEC, bool kWide>
__global__ void gather_words_kernel(Vec<T, VEC>* __restrict__ dst, const T* __restrict__ src, Indexer<2> ix,
                                    int64_t n, int run, int step, int step2) {
  int at[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) at[j] = (j % run) * step + (j / run) * step2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets<kWide>(i, off);
    Vec<T, VEC> w;
#pragma unroll
    for (int j = 0; j < VEC; ++j) w.v[j] = src[off[1] + at[j]];
    dst[off[0]] = w;
  }
}

// Between float kernel dtypes, VEC consecutive elements per thread (offsets in elements).
template <typename S, typename D, int VEC, bool kWide>
__global__ void convert_kernel(D* __restrict__ dst, const S* __restrict__ src, Indexer<2> ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets<kWide>(i, off);
    const Vec<S, VEC> s = *reinterpret_cast<const Vec<S, VEC>*>(src + off[1]);
    Vec<D, VEC> d;
#pragma unroll
    for (int j = 0; j < VEC; ++j) d.v[j] = from_float<D>(to_float<S>(s.v[j]));
    *reinterpret_cast<Vec<D, VEC>*>(dst + off[0]) = d;
  }
}

// Any other pair of dtypes, through double (offsets in elements).
template <bool kWide>
__global__ void convert_any_kernel(char* dst, DType dt, int dsize, const char* src, DType st, int ssize, Indexer<2> ix,
                                   int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets<kWide>(i, off);
    store_any(dst + off[0] * dsize, dt, load_any(src + off[1] * ssize, st));
  }
}

template <typename W, bool kWide>
__global__ void fill_kernel(W* __restrict__ dst, W value, Indexer<1> ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    ix.offsets<kWide>(i, off);
    dst[off[0]] = value;
  }
}

// ---- Host side ----------------------------------------------------------------------------


template <typename S, typename D>
void launch_convert(const Tensor& dst, const Tensor& src, Layout<2> l) {
  // Vectorize along the innermost dim when it is contiguous and aligned in both.
  constexpr int kMaxVec = 16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
  int vec = 1;
  if (l.stride[0][0] == 1 && l.stride[0][1] == 1) {
    for (int v = kMaxVec; v > 1; v /= 2) {
      bool ok = l.size[0] % v == 0 && reinterpret_cast<uintptr_t>(dst.raw_data()) % (v * sizeof(D)) == 0 &&
                reinterpret_cast<uintptr_t>(src.raw_data()) % (v * sizeof(S)) == 0;
      for (size_t d = 1; d < l.size.size(); ++d) ok = ok && l.stride[d][0] % v == 0 && l.stride[d][1] % v == 0;
      if (ok) {
        vec = v;
        break;
      }
    }
  }
  if (vec > 1) {
    l.size[0] /= vec;
    l.stride[0] = {vec, vec};
  }
  const int64_t n = l.numel();
  const Indexer<2> ix = make_indexer(l);
  D* d = static_cast<D*>(dst.raw_data());
  const S* s = static_cast<const S*>(src.raw_data());
  const unsigned blocks = blocks_for(n, kThreads);
  const bool wide = is_wide(n);
  auto go = [&](auto vc) {
    constexpr int V = decltype(vc)::value;
    if (wide) convert_kernel<S, D, V, true><<<blocks, kThreads, 0, stream()>>>(d, s, ix, n);
    else convert_kernel<S, D, V, false><<<blocks, kThreads, 0, stream()>>>(d, s, ix, n);
  };
  switch (vec) {
    case 1: go(std::integral_constant<int, 1>{}); break;
    case 2: if constexpr (kMaxVec >= 2) go(std::integral_constant<int, 2>{}); break;
    case 4: if constexpr (kMaxVec >= 4) go(std::integral_constant<int, 4>{}); break;
    case 8: if constexpr (kMaxVec >= 8) go(std::integral_constant<int, 8>{}); break;
  }
  check_launch("copy (convert)", dst, src);
}

// A same-dtype copy whose destination is contiguous along the innermost dim and whose source
// steps by a few elements there (a channel de-interleave such as the Wan2.2 VAE's DupUp3D, or a
// broadcast): 16-byte destination words, each gathered by one thread. Word copies would move
// one element per thread with the full index arithmetic each (about 0.2 TB/s on an H200).
// Larger source steps are left to the element copy (no better coalesced this way).
// A destination run shorter than a word that the next dim continues (runs of 2 elements two
// apart, the runs 12 apart: the Wan2.2 VAE's unpatchify of a channels-last frame) is gathered
// the same way, a word spanning several runs.
bool try_gather_words(const Tensor& dst, const Tensor& src, Layout<2> l) {
  const int64_t es = static_cast<int64_t>(dst.element_size()), step = l.stride[0][1];
  if (l.stride[0][0] != 1 || step < 0 || step == 1 || step > 8 || es > 8) return false;
  const int64_t k = 16 / es;
  if (reinterpret_cast<uintptr_t>(dst.raw_data()) % 16 != 0) return false;
  const int64_t run = l.size[0];
  const bool runs = run < k && k % run == 0 && l.size.size() > 1 && l.stride[1][0] == run &&
                    l.size[1] % (k / run) == 0 && l.stride[1][1] >= 0 && l.stride[1][1] <= 64;
  const int64_t step2 = runs ? l.stride[1][1] : 0;
  if (runs) {  // merge the run into the next dim: words of k / run runs
    l.size.erase(l.size.begin());
    l.stride.erase(l.stride.begin());
    l.size[0] /= k / run;
    l.stride[0] = {k, step2 * (k / run)};
  } else if (l.size[0] % k == 0) {
    l.size[0] /= k;
    l.stride[0] = {k, step * k};
  } else {
    return false;
  }
  for (size_t d = 0; d < l.size.size(); ++d) {
    if (l.stride[d][0] % k != 0) return false;
    l.stride[d][0] /= k;
  }
  const int run_len = static_cast<int>(runs ? run : k);
  const int64_t count = l.numel();
  const Indexer<2> ix = make_indexer(l);
  const unsigned blocks = blocks_for(count, kThreads);
  auto go = [&](auto t) {
    using T = decltype(t);
    constexpr int V = 16 / sizeof(T);
    auto* d = static_cast<Vec<T, V>*>(dst.raw_data());
    const T* s = static_cast<const T*>(src.raw_data());
    const int st = static_cast<int>(step), st2 = static_cast<int>(step2);
    if (is_wide(count))
      gather_words_kernel<T, V, true><<<blocks, kThreads, 0, stream()>>>(d, s, ix, count, run_len, st, st2);
    else
      gather_words_kernel<T, V, false><<<blocks, kThreads, 0, stream()>>>(d, s, ix, count, run_len, st, st2);
  };
  switch (es) {
    case 1: go(uint8_t{}); break;
    case 2: go(uint16_t{}); break;
    case 4: go(uint32_t{}); break;
    default: go(uint64_t{}); break;
  }
  check_launch("copy (gathered words)", dst, src);
  return true;
}

void device_copy(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const DType sd = src.dtype(), dd = dst.dtype();
  // One memcpy where both are the same span of memory in the same order: contiguous, or dense
  // channels-last 3-D (a causal conv's cached frames copied to the front of its next input).
  if (sd == dd && ((dst.is_contiguous() && src.is_contiguous()) ||
                   (dst.is_channels_last_3d() && src.is_channels_last_3d()))) {
    check(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream()),
          "device copy");
    return;
  }
  if (dd != sd && (dd == DType::F8_E4M3 || dd == DType::F8_E5M2))
    fail("copy: conversion of {} to {} is not supported", src.str(), dst.str());

  // Walk in the destination's memory order.
  const int rank = static_cast<int>(dst.dim());
  std::vector<int> order(rank);
  for (int d = 0; d < rank; ++d) order[d] = d;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return dst.strides()[a] > dst.strides()[b]; });
  Layout<2> l = simplify<2>(dst.shape(), {&dst.strides(), &src.strides()}, order);
  if (static_cast<int>(l.size.size()) > kMaxDims) {
    // More irregular dims than the indexer holds: copy slice by slice.
    for (int64_t i = 0; i < dst.size(0); ++i) device_copy(dst.select(0, i), src.select(0, i));
    return;
  }

  if (sd == dd) {
    const int64_t es = static_cast<int64_t>(dst.element_size());
    // Reinterpret the innermost run as the widest aligned word (up to 16 bytes).
    int64_t word = es;
    if (l.stride[0][0] == 1 && l.stride[0][1] == 1) {
      for (int64_t w = 16; w > es; w /= 2) {
        bool ok = (l.size[0] * es) % w == 0 && reinterpret_cast<uintptr_t>(dst.raw_data()) % w == 0 &&
                  reinterpret_cast<uintptr_t>(src.raw_data()) % w == 0;
        for (size_t d = 1; d < l.size.size(); ++d)
          ok = ok && (l.stride[d][0] * es) % w == 0 && (l.stride[d][1] * es) % w == 0;
        if (ok) {
          word = w;
          break;
        }
      }
    }
    if (word == es && try_gather_words(dst, src, l)) return;
    if (word != es) {
      const int64_t k = word / es;
      l.size[0] /= k;
      for (size_t d = 1; d < l.size.size(); ++d) {
        l.stride[d][0] /= k;
        l.stride[d][1] /= k;
      }
    }
    const int64_t count = l.numel();
    const Indexer<2> ix = make_indexer(l);
    const unsigned blocks = blocks_for(count, kThreads);
    dispatch_word(static_cast<int>(word), [&](auto w) {
      using W = decltype(w);
      W* d = static_cast<W*>(dst.raw_data());
      const W* s = static_cast<const W*>(src.raw_data());
      if (is_wide(count)) copy_words_kernel<W, true><<<blocks, kThreads, 0, stream()>>>(d, s, ix, count);
      else copy_words_kernel<W, false><<<blocks, kThreads, 0, stream()>>>(d, s, ix, count);
    });
    check_launch("copy (strided)", dst, src);
    return;
  }

  if (is_kernel_float(sd) && is_kernel_float(dd)) {
    VGEN_DISPATCH_FLOAT(sd, "copy", {
      using S = T;
      VGEN_DISPATCH_FLOAT(dd, "copy", { launch_convert<S, T>(dst, src, l); });
    });
    return;
  }

  const Indexer<2> ix = make_indexer(l);
  const unsigned blocks = blocks_for(n, kThreads);
  char* d = static_cast<char*>(dst.raw_data());
  const char* s = static_cast<const char*>(src.raw_data());
  const int ds = static_cast<int>(dst.element_size()), ss = static_cast<int>(src.element_size());
  if (is_wide(n)) convert_any_kernel<true><<<blocks, kThreads, 0, stream()>>>(d, dd, ds, s, sd, ss, ix, n);
  else convert_any_kernel<false><<<blocks, kThreads, 0, stream()>>>(d, dd, ds, s, sd, ss, ix, n);
  check_launch("copy (convert)", dst, src);
}

// Whether host memory is page-locked (a copy from it runs asynchronously to the caller).
bool is_pinned(const void* p) {
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, p), "query a host pointer");
  return attr.type == cudaMemoryTypeHost;
}

// Host -> device: a contiguous host image of src (in src's dtype), one transfer, then a
// device-side scatter/convert when dst is strided or of another dtype.
void upload(const Tensor& dst, const Tensor& src) {
  Tensor host = src;
  if (!src.is_contiguous()) {
    host = Tensor::empty(src.shape(), src.dtype(), Device::cpu());
    cpu::cpu_backend().copy(host, src);
  }
  const bool direct = dst.is_contiguous() && dst.dtype() == src.dtype();
  const Tensor staging = direct ? dst : Tensor::empty(src.shape(), src.dtype(), dst.device());
  check(cudaMemcpyAsync(staging.raw_data(), host.raw_data(), host.nbytes(), cudaMemcpyHostToDevice, stream()),
        "copy host to device");
  // From pageable memory the call returns once the data is staged; from pinned memory it is
  // asynchronous, and the caller (or our staging buffer) may reuse the memory at once.
  if (is_pinned(host.raw_data())) check(cudaStreamSynchronize(stream()), "synchronize a host to device copy");
  if (!direct) device_copy(dst, staging);
}

// Device -> host: a contiguous device image in dst's dtype, one transfer, a synchronization,
// then a host-side scatter when dst is strided.
void download(const Tensor& dst, const Tensor& src) {
  Tensor dev = src;
  if (!src.is_contiguous() || src.dtype() != dst.dtype()) {
    dev = Tensor::empty(src.shape(), dst.dtype(), src.device());
    device_copy(dev, src);
  }
  const Tensor host = dst.is_contiguous() ? dst : Tensor::empty(dst.shape(), dst.dtype(), Device::cpu());
  check(cudaMemcpyAsync(host.raw_data(), dev.raw_data(), dev.nbytes(), cudaMemcpyDeviceToHost, stream()),
        "copy device to host");
  check(cudaStreamSynchronize(stream()), "synchronize a device to host copy");
  if (!dst.is_contiguous()) cpu::cpu_backend().copy(dst, host);
}

// The bytes of `value` stored as dtype (as the CPU fill stores it).
uint64_t encode(DType dtype, float value) {
  uint64_t bits = 0;
  switch (dtype) {
    case DType::F32: std::memcpy(&bits, &value, 4); break;
    case DType::F16: bits = float_to_f16(value); break;
    case DType::BF16: bits = float_to_bf16(value); break;
    case DType::F64: {
      const double v = value;
      std::memcpy(&bits, &v, 8);
      break;
    }
    case DType::I64: {
      const int64_t v = static_cast<int64_t>(value);
      std::memcpy(&bits, &v, 8);
      break;
    }
    case DType::I32: {
      const int32_t v = static_cast<int32_t>(value);
      std::memcpy(&bits, &v, 4);
      break;
    }
    case DType::U8: bits = static_cast<uint8_t>(value); break;
    case DType::BOOL: bits = value != 0.0f; break;
    case DType::F8_E4M3:
    case DType::F8_E5M2:
      if (value != 0.0f) fail("fill: conversion to {} is not supported", dtype_name(dtype));
      break;
  }
  return bits;
}

}  // namespace

void CudaOps::copy(const Tensor& dst, const Tensor& src) {
  VGEN_CHECK(dst.shape() == src.shape(), "copy: shape {} into {}", src.str(), dst.str());
  if (dst.numel() == 0) return;
  const bool dcuda = dst.device().is_cuda(), scuda = src.device().is_cuda();
  if (dcuda && scuda) device_copy(dst, src);
  else if (dcuda) upload(dst, src);
  else if (scuda) download(dst, src);
  else cpu::cpu_backend().copy(dst, src);
}

void CudaOps::fill(const Tensor& dst, float value) {
  require_cuda("fill", dst);
  const int64_t n = dst.numel();
  if (n == 0) return;
  const uint64_t bits = encode(dst.dtype(), value);
  const int es = static_cast<int>(dst.element_size());
  if (dst.is_contiguous() && bits == 0) {
    check(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), stream()), "fill");
    return;
  }
  std::vector<int> order(dst.dim());
  for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int>(d);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return dst.strides()[a] > dst.strides()[b]; });
  Layout<1> l = simplify<1>(dst.shape(), {&dst.strides()}, order);
  if (static_cast<int>(l.size.size()) > kMaxDims) {
    for (int64_t i = 0; i < dst.size(0); ++i) fill(dst.select(0, i), value);
    return;
  }
  // Contiguous and 16-byte aligned: store the pattern repeated in 16-byte words.
  int word = es;
  if (l.size.size() == 1 && l.stride[0][0] == 1 && reinterpret_cast<uintptr_t>(dst.raw_data()) % 16 == 0 &&
      (n * es) % 16 == 0) {
    word = 16;
    l.size[0] = n * es / 16;
  }
  uint8_t pattern[16];
  for (int i = 0; i < 16; i += es) std::memcpy(pattern + i, &bits, es);
  const int64_t count = l.numel();
  const Indexer<1> ix = make_indexer(l);
  const unsigned blocks = blocks_for(count, kThreads);
  dispatch_word(word, [&](auto w) {
    using W = decltype(w);
    W v;
    std::memcpy(&v, pattern, sizeof(W));
    W* d = static_cast<W*>(dst.raw_data());
    if (is_wide(count)) fill_kernel<W, true><<<blocks, kThreads, 0, stream()>>>(d, v, ix, count);
    else fill_kernel<W, false><<<blocks, kThreads, 0, stream()>>>(d, v, ix, count);
  });
  check_launch("fill", dst);
}

}  // namespace vgen::cuda
