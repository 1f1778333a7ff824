// Allocator::available_bytes on the GPU (what `vgen generate --batch-size auto` sizes batches
// with): positive, and a freed tensor's memory counts as available again (the caching pool
// keeps it, so the device's own free memory alone would miss it). The CPU reports none.
#include <gtest/gtest.h>

#include "core/allocator.h"
#include "core/tensor.h"
#include "support/gpu.h"

using namespace vgen;
using vgen::testing::kGpu;

TEST(AvailableMemory, TheCpuReportsNone) { EXPECT_FALSE(allocator_for(Device::cpu()).available_bytes().has_value()); }

TEST(AvailableMemory, CountsThePoolsFreedMemory) {
  SKIP_WITHOUT_GPU();
  Allocator& memory = allocator_for(kGpu);
  const std::optional<size_t> before = memory.available_bytes();
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(*before, size_t{0});
  const size_t n = size_t{1} << 30;  // 1 GiB
  {
    Tensor t = Tensor::empty({static_cast<int64_t>(n)}, DType::U8, kGpu);
    const std::optional<size_t> during = memory.available_bytes();
    ASSERT_TRUE(during.has_value());
    // About 1 GiB less (the pool may round up, other processes may allocate: a loose bound).
    EXPECT_LT(*during + n / 2, *before + n / 8);
  }
  const std::optional<size_t> after = memory.available_bytes();
  ASSERT_TRUE(after.has_value());
  // Freed into the pool (not back to the driver): still available.
  EXPECT_GT(*after + n / 8, *before);
}
