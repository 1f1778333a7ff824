// What the cuDNN users of the CUDA backend (attention.cpp, conv.cpp) share: status checks and
// one cuDNN handle per backend, bound to its stream, with the lock that serializes its use.
#pragma once

#include <cudnn.h>

#include <mutex>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"

namespace vgen::cuda {

// Throws "cudnn: <what>: <error string>" unless status is success.
void check_cudnn(cudnnStatus_t status, const char* what);

// The alignment cuDNN may assume for a buffer (it distinguishes up to 16 bytes).
inline int64_t cudnn_alignment(const void* p) { return pointer_alignment(p, 16); }

// A backend's cuDNN handle (CudaBackend::state<Cudnn>()): made on its stream on first use.
// Hold `mutex` while building plans with it or executing them (a handle is not thread-safe).
struct Cudnn {
  explicit Cudnn(CudaBackend& backend);
  ~Cudnn();
  Cudnn(const Cudnn&) = delete;
  Cudnn& operator=(const Cudnn&) = delete;

  cudnnHandle_t handle = nullptr;
  std::mutex mutex;
};

}  // namespace vgen::cuda
