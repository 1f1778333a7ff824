// Host-side helpers shared by the CUDA backend's files: error checks that name the op and
// its shapes, the backend's stream, and the cuBLASLt / cuDNN handles bound to it.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace vgen::cuda {

// The stream every op is queued on (created when the backend registers).
cudaStream_t stream();
// Properties of the current device (read once).
const cudaDeviceProp& device_properties();

// Throws vgen::Error "cuda: <what>: <error string>" when `err` is not cudaSuccess.
void check(cudaError_t err, const char* what);
// After a kernel launch: throws naming the op and its inputs when the launch failed.
void check_launch(const char* op, const Tensor& a, const Tensor& b = {});

// 1-D launch geometry for n elements.
inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

// Floating dtypes the kernels take.
inline bool is_kernel_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }
void require_float(const char* op, const Tensor& t);
void require_cuda(const char* op, const Tensor& t);

// A contiguous tensor on the same device (t itself when it already is).
Tensor contiguous(const Tensor& t);

}  // namespace vgen::cuda
