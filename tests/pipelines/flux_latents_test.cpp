// FLUX.1 pipelines' latent helpers against diffusers' definitions: _pack_latents /
// _unpack_latents, _prepare_latent_image_ids, calculate_shift, and FluxKontextPipeline's
// choice among PREFERRED_KONTEXT_RESOLUTIONS.
#include <gtest/gtest.h>

#include "pipelines/flux/pipeline_flux_latents.h"

using namespace vgen;

TEST(FluxLatents, HelpersMatchDiffusers) {
  // _pack_latents / _unpack_latents round trip and _prepare_latent_image_ids' rows.
  const Tensor x = Tensor::from_vector([] {
    std::vector<float> v(2 * 4 * 6);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
    return v;
  }(), {1, 2, 4, 6});
  const Tensor packed = flux_pack_latents(x);
  ASSERT_EQ(packed.shape(), (Shape{1, 6, 8}));
  // Token 1 (row 0, col 1) holds channel 0's pixels (0,2),(0,3),(1,2),(1,3), then channel 1's.
  const std::vector<float> t1 = packed.select(1, 1).contiguous().to_vector();
  EXPECT_EQ(t1, (std::vector<float>{2, 3, 8, 9, 26, 27, 32, 33}));
  EXPECT_EQ(flux_unpack_latents(packed, 4, 6).to_vector(), x.to_vector());
  const std::vector<float> ids = flux_latent_image_ids(2, 3, 1.0f).to_vector();
  EXPECT_EQ(ids, (std::vector<float>{1, 0, 0, 1, 0, 1, 1, 0, 2, 1, 1, 0, 1, 1, 1, 1, 1, 2}));
  // calculate_shift at the ends of its line.
  EXPECT_DOUBLE_EQ(flux_calculate_shift(256, 256, 4096, 0.5, 1.15), 0.5);
  EXPECT_NEAR(flux_calculate_shift(4096, 256, 4096, 0.5, 1.15), 1.15, 1e-12);
  // Kontext: a square image picks 1024x1024, a tall one 672x1568.
  EXPECT_EQ(kontext_image_size(500, 500, 16), (std::pair<int64_t, int64_t>{1024, 1024}));
  EXPECT_EQ(kontext_image_size(300, 800, 16), (std::pair<int64_t, int64_t>{672, 1568}));
  EXPECT_EQ(kontext_image_size(16, 32, 16), (std::pair<int64_t, int64_t>{720, 1456}));
}
