// media::VaeImageProcessor against diffusers' VideoProcessor(vae_scale_factor=8).preprocess
// (tests/fixtures/image_ref/preprocess.safetensors): PIL lanczos resize, / 255, 2x - 1, all
// in float32 as numpy/torch do, so the values must be identical.
#include "media/image_processor.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;

TEST(VaeImageProcessor, PreprocessMatchesDiffusersExactly) {
  const WeightStore ref = vgen::testing::reference("image_ref/preprocess.safetensors");
  const media::VaeImageProcessor processor;  // VideoProcessor(vae_scale_factor=8): lanczos, normalize
  const Tensor source = ref.get("source");
  // (30, 44) is rounded down to (24, 40), as get_default_height_width does.
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{32, 48}, {56, 72}, {30, 44}, {48, 64}}) {
    const Tensor expected = ref.get(fmt::format("preprocess.{}x{}", h, w));
    const Tensor out = processor.preprocess(source, h, w);
    ASSERT_EQ(out.shape(), expected.shape()) << h << "x" << w;
    EXPECT_EQ(vgen::testing::max_abs_diff(out, expected), 0.0) << h << "x" << w;
  }
  // No size: the image's own (64x48, already on the grid): no resize, just the scaling.
  const Tensor same = processor.preprocess(source);
  EXPECT_EQ(vgen::testing::max_abs_diff(same, ref.get("preprocess.48x64")), 0.0);
}

TEST(VaeImageProcessor, Errors) {
  const media::VaeImageProcessor processor;
  vgen::testing::expect_error(
      [&] {
        processor.preprocess(Tensor::zeros({8, 8, 3}, DType::F32), 8, 8);
      },
      "must be U8 [H, W, 3]");
  vgen::testing::expect_error(
      [&] {
        processor.preprocess(Tensor::zeros({8, 8, 3}, DType::U8), 7, 8);
      },
      "below one vae_scale_factor (8) step");
}
