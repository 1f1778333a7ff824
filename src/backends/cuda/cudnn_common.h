// What the cuDNN users of the CUDA backend (attention.cpp, conv.cpp) share: status checks and
// one cuDNN handle per backend, bound to its stream, with the lock that serializes its use.
#pragma once

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

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

// A built cuDNN frontend graph (null: no engine took the case; cached too) and its workspace.
struct CudnnPlan {
  std::shared_ptr<cudnn_frontend::graph::Graph> graph;
  int64_t workspace = 0;
};

// The plan of graph `g` whose building so far ended with `err`: with the graph and its
// workspace size when all went well, else without a graph and with cuDNN's reason in *why.
CudnnPlan finish_plan(std::shared_ptr<cudnn_frontend::graph::Graph> g, cudnn_frontend::error_t err, std::string* why);

// A backend's cuDNN plans of one kind (`Kind` tells attention's from convolution's apart),
// keyed by the numbers that identify a case: CudaBackend::state<CudnnPlans<Kind>>().
template <typename Kind>
struct CudnnPlans {
  explicit CudnnPlans(CudaBackend& backend) : cudnn(backend.state<Cudnn>()) {}
  Cudnn& cudnn;  // the backend's handle; hold cudnn.mutex while using `plans`
  std::map<std::vector<int64_t>, CudnnPlan> plans;
};

// Runs `plan` on the handle's stream with a workspace allocated on `device`; the caller holds
// cudnn.mutex. Returns cuDNN's verdict for the caller's message.
cudnn_frontend::error_t execute(Cudnn& cudnn, const CudnnPlan& plan, std::unordered_map<int64_t, void*>& pack,
                                Device device);

}  // namespace vgen::cuda
