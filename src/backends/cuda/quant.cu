// Quantization kernels of the quantized linear layers (ops/quant.h) and the quantize_fp8 op.
// The scalar codecs are ops/quant.h's, shared with the CPU reference, so the e4m3 bytes and
// scales are the reference's bit for bit (x / scale is an IEEE division on both).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/quant.cuh"

namespace vgen::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// VEC elements of x at i (VEC 1: one element), as float.
template <int VEC, typename T>
__device__ __forceinline__ void load_elements(const T* x, float (&v)[VEC]) {
  if constexpr (VEC == 1) {
    v[0] = to_float<T>(*x);
  } else {
    struct alignas(sizeof(T) * VEC) Pack {
      T e[VEC];
    };
    const Pack p = *reinterpret_cast<const Pack*>(x);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = to_float<T>(p.e[j]);
  }
}

// amax(|x|) into *bits (as the bits of a non-negative float: they order as unsigned integers).
// The first n / VEC * VEC elements are read VEC at a time (16-byte loads), the rest one by one.
template <typename T, int VEC>
__global__ void amax_kernel(const T* x, int64_t n, unsigned* bits) {
  float m = 0.0f;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x, nv = n / VEC;
  for (int64_t i = first; i < nv; i += stride) {
    float v[VEC];
    load_elements<VEC>(x + i * VEC, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) m = fmaxf(m, fabsf(v[j]));
  }
  for (int64_t i = nv * VEC + first; i < n; i += stride) m = fmaxf(m, fabsf(to_float<T>(x[i])));
  m = warp_max(m);
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
    m = warp_max(m);
    if (lane == 0) atomicMax(bits, __float_as_uint(m));
  }
}

// The amax (as bits) in place -> its scale.
__global__ void amax_to_scale_kernel(float* scale) {
  scale[0] = quant::fp8_scale(__uint_as_float(*reinterpret_cast<unsigned*>(scale)));
}

// e4m3(x / scale), VEC elements a thread at a time (one store of VEC bytes), the tail one by one.
template <typename T, int VEC>
__global__ void quantize_per_tensor_kernel(const T* x, int64_t n, const float* scale, uint8_t* out) {
  const float s = scale[0];
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x, nv = n / VEC;
  struct alignas(VEC) Bytes {
    uint8_t b[VEC];
  };
  for (int64_t i = first; i < nv; i += stride) {
    float v[VEC];
    load_elements<VEC>(x + i * VEC, v);
    Bytes q;
#pragma unroll
    for (int j = 0; j < VEC; ++j) q.b[j] = quant::float_to_e4m3(v[j] / s);
    *reinterpret_cast<Bytes*>(out + i * VEC) = q;
  }
  for (int64_t i = nv * VEC + first; i < n; i += stride) out[i] = quant::float_to_e4m3(to_float<T>(x[i]) / s);
}

// One warp per (row, 128-column group): each lane holds 4 elements.
template <typename T>
__global__ void quantize_groups_kernel(const T* x, int64_t M, int64_t K, int64_t G, uint8_t* out, float* scale,
                                       int64_t row_stride, int64_t group_stride) {
  const int64_t item = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (item >= M * G) return;
  const int lane = threadIdx.x & 31;
  const int64_t r = item / G, g = item % G;
  const int64_t c0 = g * quant::kBlock;
  float v[4];
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t c = c0 + lane + 32 * j;
    v[j] = c < K ? to_float<T>(x[r * K + c]) : 0.0f;
    m = fmaxf(m, fabsf(v[j]));
  }
  m = warp_max(m);
  const float s = quant::fp8_scale(m);
  if (lane == 0) scale[r * row_stride + g * group_stride] = s;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t c = c0 + lane + 32 * j;
    if (c < K) out[r * K + c] = quant::float_to_e4m3(v[j] / s);
  }
}

template <typename T>
__global__ void dequantize_fp8_kernel(const uint8_t* q, int64_t rows, int64_t K, const float* scale, int64_t scale_rows,
                                      int64_t scale_cols, int64_t row_block, T* out) {
  const int64_t n = rows * K;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, c = i % K;
    const float s = scale_cols == 0 ? scale[0] : scale[(r / row_block) * scale_cols + c / quant::kBlock];
    out[i] = from_float<T>(quant::e4m3_to_float(q[i]) * s);
  }
}

// NVFP4 -> T: (e2m1 * block scale) * global scale, as the reference computes it, rounded once.
template <typename T>
__global__ void dequantize_nvfp4_kernel(const uint8_t* q, const uint8_t* block_scale, const float* scale_2, int64_t N,
                                        int64_t K, T* out) {
  const int64_t pairs = N * K / 2;
  const float s2 = scale_2[0];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = (2 * i) / K, c = (2 * i) % K;
    const float bs = quant::e4m3_to_float(block_scale[r * (K / quant::kNvfp4Block) + c / quant::kNvfp4Block]);
    const uint8_t byte = q[i];
    out[2 * i] = from_float<T>(quant::e2m1_to_float(byte & 0xf) * bs * s2);
    out[2 * i + 1] = from_float<T>(quant::e2m1_to_float(byte >> 4) * bs * s2);
  }
}

template <typename F>
void dispatch_float(DType d, const char* op, F&& f) {
  switch (d) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    case DType::F16: f(__half{}); break;
    default: fail("{}: dtype {} is not supported (F32, BF16, F16)", op, dtype_name(d));
  }
}

}  // namespace

void quantize_fp8_per_tensor(const Tensor& x, const Tensor& input_scale, const Tensor& data, const Tensor& scale) {
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), "quantize_fp8", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.raw_data());
    float* sp = scale.data<float>();
    uint8_t* out = static_cast<uint8_t*>(data.raw_data());
    // 16-byte loads where x and the output are aligned for them (a view may not be).
    constexpr int kVec = 16 / sizeof(T);
    const bool vec = reinterpret_cast<uintptr_t>(xp) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % kVec == 0;
    const int64_t items = vec ? std::max<int64_t>(n / kVec, 1) : n;
    // Grid-stride loops: 4096 blocks keep every SM of today's GPUs full (an H200 holds 132 x 8).
    const unsigned grid = std::min<unsigned>(blocks_for(items, kThreads), 4096);
    if (input_scale.defined()) {
      check(cudaMemcpyAsync(sp, input_scale.raw_data(), sizeof(float), cudaMemcpyDeviceToDevice, stream()),
            "copy the input scale");
    } else {
      check(cudaMemsetAsync(sp, 0, sizeof(float), stream()), "clear the amax");
      if (n > 0) {
        if (vec) amax_kernel<T, kVec><<<grid, kThreads, 0, stream()>>>(xp, n, reinterpret_cast<unsigned*>(sp));
        else amax_kernel<T, 1><<<grid, kThreads, 0, stream()>>>(xp, n, reinterpret_cast<unsigned*>(sp));
      }
      amax_to_scale_kernel<<<1, 1, 0, stream()>>>(sp);
    }
    if (n > 0) {
      if (vec) quantize_per_tensor_kernel<T, kVec><<<grid, kThreads, 0, stream()>>>(xp, n, sp, out);
      else quantize_per_tensor_kernel<T, 1><<<grid, kThreads, 0, stream()>>>(xp, n, sp, out);
    }
  });
  check_launch("quantize_fp8", x);
}

void quantize_fp8_groups(const Tensor& x, const Tensor& data, const Tensor& scale, int64_t row_stride,
                         int64_t group_stride) {
  const int64_t K = x.size(-1), M = K == 0 ? 0 : x.numel() / K, G = (K + quant::kBlock - 1) / quant::kBlock;
  if (M * G == 0) return;
  dispatch_float(x.dtype(), "quantize_fp8", [&](auto tag) {
    using T = decltype(tag);
    const int warps = kThreads / 32;
    quantize_groups_kernel<T><<<static_cast<unsigned>((M * G + warps - 1) / warps), kThreads, 0, stream()>>>(
        static_cast<const T*>(x.raw_data()), M, K, G, static_cast<uint8_t*>(data.raw_data()), scale.data<float>(),
        row_stride, group_stride);
  });
  check_launch("quantize_fp8", x);
}

Tensor dequantize_weight_device(const QuantizedWeight& w, DType dtype) {
  const int64_t N = w.out_features, K = w.in_features;
  Tensor out = Tensor::empty({N, K}, dtype, w.data.device());
  if (N * K == 0) return out;
  dispatch_float(dtype, "quantized_linear", [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out.raw_data());
    const auto* q = static_cast<const uint8_t*>(w.data.raw_data());
    if (w.format == QuantFormat::Nvfp4) {
      dequantize_nvfp4_kernel<T><<<blocks_for(N * K / 2, kThreads), kThreads, 0, stream()>>>(
          q, static_cast<const uint8_t*>(w.weight_scale.raw_data()), w.weight_scale_2.data<float>(), N, K, o);
    } else {
      const bool blocks = w.format == QuantFormat::Fp8Block;
      dequantize_fp8_kernel<T><<<blocks_for(N * K, kThreads), kThreads, 0, stream()>>>(
          q, N, K, w.weight_scale.data<float>(), blocks ? w.weight_scale.size(0) : 1,
          blocks ? w.weight_scale.size(1) : 0, quant::kBlock, o);
    }
  });
  check_launch("quantized_linear", w.data);
  return out;
}

Tensor dequantize_activation_device(const QuantizedActivation& a, DType dtype) {
  const int64_t M = a.data.size(0), K = a.data.size(1);
  Tensor out = Tensor::empty({M, K}, dtype, a.data.device());
  if (M * K == 0) return out;
  const bool groups = a.scale.dim() == 2;
  dispatch_float(dtype, "quantized_linear", [&](auto tag) {
    using T = decltype(tag);
    // 1x128 groups: the [M, G] scales read as blocks of one row (row_block 1).
    dequantize_fp8_kernel<T><<<blocks_for(M * K, kThreads), kThreads, 0, stream()>>>(
        static_cast<const uint8_t*>(a.data.raw_data()), M, K, a.scale.data<float>(), groups ? M : 1,
        groups ? a.scale.size(1) : 0, 1, static_cast<T*>(out.raw_data()));
  });
  check_launch("quantized_linear", a.data);
  return out;
}

QuantizedActivation CudaOps::quantize_fp8(const Tensor& x_in, QuantFormat format, const Tensor& input_scale) {
  require_cuda("quantize_fp8", x_in);
  require_float("quantize_fp8", x_in);
  const Tensor x = contiguous(x_in);
  const int64_t K = x.size(-1), M = K == 0 ? 0 : x.numel() / K;
  QuantizedActivation q;
  q.data = Tensor::empty({M, K}, DType::F8_E4M3, x.device());
  if (format == QuantFormat::Fp8PerTensor) {
    q.scale = Tensor::empty({1}, DType::F32, x.device());
    quantize_fp8_per_tensor(x, input_scale, q.data, q.scale);
  } else {
    const int64_t G = (K + quant::kBlock - 1) / quant::kBlock;
    q.scale = Tensor::empty({M, G}, DType::F32, x.device());
    quantize_fp8_groups(x, q.data, q.scale, G, 1);
  }
  return q;
}

}  // namespace vgen::cuda
