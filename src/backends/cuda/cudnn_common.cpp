#include "backends/cuda/cudnn_common.h"

#include "core/error.h"

namespace vgen::cuda {

void check_cudnn(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS) fail("cudnn: {}: {}", what, cudnnGetErrorString(status));
}

Cudnn::Cudnn(CudaBackend& backend) {
  check_cudnn(cudnnCreate(&handle), "create handle");
  check_cudnn(cudnnSetStream(handle, backend.stream()), "bind the handle to the backend's stream");
}

Cudnn::~Cudnn() {
  if (handle != nullptr) cudnnDestroy(handle);
}

CudnnPlan finish_plan(std::shared_ptr<cudnn_frontend::graph::Graph> g, cudnn_frontend::error_t err, std::string* why) {
  CudnnPlan plan;
  if (err.is_good()) err = g->get_workspace_size(plan.workspace);
  if (err.is_bad()) {
    *why = err.err_msg;
    return {};
  }
  plan.graph = std::move(g);
  return plan;
}

cudnn_frontend::error_t execute(Cudnn& cudnn, const CudnnPlan& plan, std::unordered_map<int64_t, void*>& pack,
                                Device device) {
  const Tensor workspace = plan.workspace > 0 ? Tensor::empty({plan.workspace}, DType::U8, device) : Tensor();
  return plan.graph->execute(cudnn.handle, pack, workspace.defined() ? workspace.raw_data() : nullptr);
}

}  // namespace vgen::cuda
