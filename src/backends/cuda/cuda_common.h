// Host-side helpers shared by the CUDA backend's files: the active backend and its stream,
// error checks that name the op and its shapes, launch geometry.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "backends/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/tensor.h"

namespace vgen::cuda {

// The backend running the current op on this thread (CudaBackend sets it around each op);
// outside an op, the GPU backend of the execution context bound to this thread.
CudaBackend& active();
// The active backend's stream: every kernel, copy and library call is queued on it.
inline cudaStream_t stream() { return active().stream(); }
// Whether the active stream is capturing a CUDA graph: launches are recorded, not run, so
// nothing may be timed or waited for (the autotuners leave their choice for an eager call).
inline bool stream_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}
// Properties of the active backend's device (read once per device).
const cudaDeviceProp& device_properties();

// Throws vgen::Error "cuda: <what>: <error string>" when `err` is not cudaSuccess.
void check(cudaError_t err, const char* what);
// After a kernel launch: throws naming the op and its inputs when the launch failed.
void check_launch(const char* op, const Tensor& a, const Tensor& b = {});

// Whether this binary has sm_90a code for `kernel` (vgen's Hopper kernels are compiled for every
// VGEN_CUDA_ARCHS target, but their bodies exist only for sm_90a). Read once per kernel.
bool has_sm90a_code(const void* kernel);
// Lets `kernel` use `bytes` of dynamic shared memory on the current device (cudaFuncSetAttribute
// holds per device: once per kernel and device); `what` names the kernel in errors.
void allow_dynamic_shared_memory(const void* kernel, int bytes, const char* what);

// 1-D launch geometry for n elements.
inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

// Floating dtypes the kernels take.
inline bool is_kernel_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }
void require_float(const char* op, const Tensor& t);
void require_cuda(const char* op, const Tensor& t);

// Largest power of two, at most `cap`, dividing the address (`cap` for null): the alignment
// a library (cuBLASLt, cuDNN) may assume for a buffer.
inline int64_t pointer_alignment(const void* p, int64_t cap) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return cap;
  const auto low = static_cast<int64_t>(a & (~a + 1));
  return low < cap ? low : cap;
}

// Whether a tensor's first element is 16-byte aligned (TMA, 16-byte vector loads); an undefined
// (optional) tensor counts as aligned.
inline bool aligned16(const Tensor& t) { return !t.defined() || pointer_alignment(t.raw_data(), 16) == 16; }

// A contiguous tensor on the same device (t itself when it already is).
Tensor contiguous(const Tensor& t);

// out += b in place (elementwise.cu): out dense (in any memory order) and of a kernel float
// dtype, b of out's dtype and broadcastable to its shape, any strides. For a result the
// backend owns, e.g. a convolution's output when its epilogue did not take the bias or the
// residual: no second buffer of the output's size.
void add_in_place(const Tensor& out, const Tensor& b);

}  // namespace vgen::cuda
