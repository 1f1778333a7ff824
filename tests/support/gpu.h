// For tests that run on the GPU: the device, and the skip where there is none.
#pragma once

#include <gtest/gtest.h>

#include "ops/backend.h"

namespace vgen::testing {

inline const Device kGpu = Device::cuda(0);

}  // namespace vgen::testing

// Skips the test (saying why) where no CUDA backend is usable: a build without CUDA, no
// device, no driver.
#define SKIP_WITHOUT_GPU()                                       \
  if (!::vgen::has_backend(::vgen::DeviceType::CUDA))            \
  GTEST_SKIP() << "no CUDA backend: " << ::vgen::backend_unavailable_reason(::vgen::DeviceType::CUDA)
