// Embedding lookup and the sum of absolute values.

#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"

namespace vgen::cuda {
namespace {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }


// ---- Embedding ---------------------------------------------------------------------------------

// One block row per id: copies table row ids[r] (words_per_row words of W) to out row r.
// An id outside [0, V) leaves its row unwritten and is reported through `bad` (flag, id).
template <typename W>
__global__ void embedding_kernel(const int64_t* __restrict__ ids, const W* __restrict__ table, W* __restrict__ out,
                                 int64_t n, int64_t V, int64_t words_per_row, unsigned long long* bad) {
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int64_t id = ids[r];
    if (id < 0 || id >= V) {
      if (threadIdx.x == 0 && atomicCAS(bad, 0ull, 1ull) == 0ull) bad[1] = static_cast<unsigned long long>(id);
      continue;
    }
    const W* src = table + id * words_per_row;
    W* dst = out + r * words_per_row;
    for (int64_t w = threadIdx.x; w < words_per_row; w += blockDim.x) dst[w] = src[w];
  }
}

// ---- Sum of absolute values -------------------------------------------------------------------

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Per-thread float64 sums of |x|, reduced per block and added to *result.
template <typename T, int VEC>
__global__ void sum_abs_kernel(const T* __restrict__ x, int64_t n, double* result) {
  __shared__ double partial[32];
  double acc[4] = {0.0, 0.0, 0.0, 0.0};  // independent chains
  const int64_t nvec = n / VEC, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < nvec; i += stride) {
    const Vec<T, VEC> v = *reinterpret_cast<const Vec<T, VEC>*>(x + i * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j % 4] += fabs(static_cast<double>(to_float<T>(v.v[j])));
  }
  for (int64_t i = nvec * VEC + first; i < n; i += stride) acc[0] += fabs(static_cast<double>(to_float<T>(x[i])));
  double total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  total = warp_sum(total);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = total;
  __syncthreads();
  if (warp == 0) {
    total = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0;
    total = warp_sum(total);
    if (lane == 0) atomicAdd(result, total);
  }
}

}  // namespace

Tensor CudaOps::embedding(const Tensor& ids_in, const Tensor& table_in) {
  require_cuda("embedding", table_in);
  VGEN_CHECK(ids_in.dtype() == DType::I64 && table_in.dim() == 2, "embedding: ids {} table {}", ids_in.str(),
             table_in.str());
  // Token ids may come from the host.
  const Tensor ids = ids_in.device().is_cuda() ? contiguous(ids_in) : ids_in.to(table_in.device());
  const Tensor table = contiguous(table_in);
  const int64_t V = table.size(0), D = table.size(1), n = ids.numel();
  Shape shape = ids.shape();
  shape.push_back(D);
  Tensor out = Tensor::empty(shape, table.dtype(), table.device());
  if (n == 0) return out;
  // The widest word that divides a row and keeps both tensors aligned.
  const int64_t row_bytes = D * static_cast<int64_t>(table.element_size());
  int64_t word = static_cast<int64_t>(table.element_size());
  for (int64_t w = 16; w > word; w /= 2) {
    if (row_bytes % w == 0 && aligned(table.raw_data(), w) && aligned(out.raw_data(), w)) {
      word = w;
      break;
    }
  }
  const int64_t words = row_bytes / word;
  Tensor flag = Tensor::zeros({2}, DType::I64, table.device());
  auto* bad = static_cast<unsigned long long*>(flag.raw_data());
  const int threads = static_cast<int>(std::clamp<int64_t>((words + 31) / 32 * 32, 32, 256));
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 65535LL * 32));
  dispatch_word(word, [&](auto w) {
    using W = decltype(w);
    embedding_kernel<W><<<blocks, threads, 0, stream()>>>(static_cast<const int64_t*>(ids.raw_data()),
                                                           static_cast<const W*>(table.raw_data()),
                                                           static_cast<W*>(out.raw_data()), n, V, words, bad);
  });
  check_launch("embedding", ids, table);
  int64_t host_flag[2] = {0, 0};
  check(cudaMemcpyAsync(host_flag, flag.raw_data(), sizeof(host_flag), cudaMemcpyDeviceToHost, stream()),
        "embedding: read the id check");
  check(cudaStreamSynchronize(stream()), "embedding: synchronize");
  VGEN_CHECK(host_flag[0] == 0, "embedding: token id {} out of range for a vocabulary of {}", host_flag[1], V);
  return out;
}

double CudaOps::sum_abs(const Tensor& x_in) {
  require_cuda("sum_abs", x_in);
  if (x_in.numel() == 0) return 0.0;
  // Other dtypes are read as float32, as the CPU backend does.
  const Tensor x = contiguous(is_kernel_float(x_in.dtype()) ? x_in : x_in.to(DType::F32));
  Tensor result = Tensor::zeros({1}, DType::F64, x.device());
  const int64_t n = x.numel();
  constexpr int kThreads = 256;
  const int64_t want = (n + kThreads * 8 - 1) / (kThreads * 8);
  const unsigned blocks =
      static_cast<unsigned>(std::clamp<int64_t>(want, 1, int64_t(device_properties().multiProcessorCount) * 8));
  double* r = static_cast<double*>(result.raw_data());
  VGEN_DISPATCH_FLOAT(x.dtype(), "sum_abs", {
    const T* p = static_cast<const T*>(x.raw_data());
    if (aligned(p, 16)) sum_abs_kernel<T, 16 / sizeof(T)><<<blocks, kThreads, 0, stream()>>>(p, n, r);
    else sum_abs_kernel<T, 1><<<blocks, kThreads, 0, stream()>>>(p, n, r);
  });
  check_launch("sum_abs", x_in);
  double host = 0.0;
  check(cudaMemcpyAsync(&host, r, sizeof(host), cudaMemcpyDeviceToHost, stream()), "sum_abs: read the result");
  check(cudaStreamSynchronize(stream()), "sum_abs: synchronize");
  return host;
}

}  // namespace vgen::cuda
