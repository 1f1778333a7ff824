// `--batch-size auto`'s decision (cli/batching.h) on numbers: what fits in the memory left.
#include "cli/batching.h"

#include <gtest/gtest.h>

namespace vgen::cli {
namespace {

constexpr size_t GiB = size_t{1} << 30;

TEST(AutoBatchSize, FitsTheMeasuredVideoInTheMemoryLeft) {
  // 40 GiB left, 10% kept free: 36 GiB for videos of 5 GiB each -> 7.
  EXPECT_EQ(auto_batch_size(20, 40 * GiB, 5 * GiB), 7);
  // Never more than the videos left, nor max_batch.
  EXPECT_EQ(auto_batch_size(3, 40 * GiB, 5 * GiB), 3);
  EXPECT_EQ(auto_batch_size(100, 1000 * GiB, 1 * GiB), 64);
  EXPECT_EQ(auto_batch_size(100, 1000 * GiB, 1 * GiB, 8), 8);
  // Not even one more fits: one at a time, still.
  EXPECT_EQ(auto_batch_size(10, 3 * GiB, 5 * GiB), 1);
  EXPECT_EQ(auto_batch_size(10, 0, 5 * GiB), 1);
  // The headroom: none -> 8 of 5 GiB in 40 GiB.
  EXPECT_EQ(auto_batch_size(20, 40 * GiB, 5 * GiB, 64, 0.0), 8);
}

TEST(AutoBatchSize, OneAtATimeWhenMemoryIsUnknown) {
  EXPECT_EQ(auto_batch_size(10, std::nullopt, 5 * GiB), 1);  // the CPU
  EXPECT_EQ(auto_batch_size(10, 40 * GiB, 0), 1);            // nothing measured
  EXPECT_EQ(auto_batch_size(0, 40 * GiB, 1 * GiB), 1);
}

}  // namespace
}  // namespace vgen::cli
