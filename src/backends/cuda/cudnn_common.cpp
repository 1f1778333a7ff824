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

}  // namespace vgen::cuda
