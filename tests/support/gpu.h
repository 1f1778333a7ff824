// For tests that run on the GPU: the device, the skip where there is none, and execution
// contexts with other settings for a scope.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/execution_context.h"
#include "core/random.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace vgen::testing {

inline const Device kGpu = Device::cuda(0);

// The environment's settings with one change (for ScopedContext).
inline ExecutionSettings with_attention(const std::string& backend) {
  ExecutionSettings s = ExecutionSettings::from_environment();
  s.attention_backend = backend;
  return s;
}
inline ExecutionSettings with_tf32(bool allow) {
  ExecutionSettings s = ExecutionSettings::from_environment();
  s.allow_tf32 = allow;
  return s;
}
inline ExecutionSettings with_gemm_autotune(bool on) {
  ExecutionSettings s = ExecutionSettings::from_environment();
  s.gemm_autotune = on;
  return s;
}

// t plus 0.1 of seeded noise, on the GPU: the other inputs of a model's later calls (graph
// replays against eager runs).
inline Tensor perturbed_on_gpu(const Tensor& t, uint64_t seed) {
  return ops::add(t, ops::scale(randn(t.shape(), seed), 0.1f)).to(kGpu);
}

// A fresh execution context bound to this thread until the object goes: ops in the scope run
// with its settings (make the tensors inside the scope too, on its stream).
class ScopedContext {
 public:
  ScopedContext(Device device, ExecutionSettings settings) : context_(device, std::move(settings)), scope_(context_) {}
  ExecutionContext& context() { return context_; }

 private:
  ExecutionContext context_;
  ContextScope scope_;
};

}  // namespace vgen::testing

// Skips the test (saying why) where no CUDA backend is usable: a build without CUDA, no
// device, no driver.
#define SKIP_WITHOUT_GPU()                                       \
  if (!::vgen::has_backend(::vgen::DeviceType::CUDA))            \
  GTEST_SKIP() << "no CUDA backend: " << ::vgen::backend_unavailable_reason(::vgen::DeviceType::CUDA)
