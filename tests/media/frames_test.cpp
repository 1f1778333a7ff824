// VAE output -> frames, against diffusers' VideoProcessor.postprocess_video
// (tests/fixtures/media_ref/media_extra.safetensors, tools/fixtures/make_media_extra.py).
#include <gtest/gtest.h>

#include "support/errors.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "media/frames.h"
#include "support/parity.h"

using namespace vgen;
using namespace vgen::media;

namespace {

using vgen::testing::expect_error;

std::vector<uint8_t> u8_values(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  EXPECT_EQ(c.dtype(), DType::U8) << c.str();
  return std::vector<uint8_t>(c.data<uint8_t>(), c.data<uint8_t>() + c.numel());
}

// [1, 3, 1, 1, n] video holding `values` in the red channel (green, blue = -1).
Tensor red_row(const std::vector<float>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<float> data(3 * n, -1.0f);
  std::copy(values.begin(), values.end(), data.begin());
  return Tensor::from_vector(data, {1, 3, 1, 1, n});
}

std::vector<uint8_t> red_levels(const Tensor& frames) {
  std::vector<uint8_t> all = u8_values(frames), red;
  for (size_t i = 0; i < all.size(); i += 3) red.push_back(all[i]);
  return red;
}

}  // namespace

// Same float32 operations in the same order as torch: the tolerance is zero, bit for bit,
// for both the float frames (output_type="np") and both uint8 conversions.
TEST(Frames, MatchesDiffusersPostprocessVideo) {
  const WeightStore ref = vgen::testing::reference("media_ref/media_extra.safetensors");
  const Tensor video = ref.get("video");
  for (int64_t b = 0; b < 2; ++b) {
    SCOPED_TRACE("batch " + std::to_string(b));
    const Tensor frames = video_to_float_frames(video, b);
    const Tensor expected = ref.get("frames_np").select(0, b);
    ASSERT_EQ(frames.shape(), expected.shape());
    EXPECT_EQ(frames.to_vector(), expected.to_vector()) << "max |diff| " << vgen::testing::max_abs_diff(frames, expected);
    EXPECT_EQ(u8_values(video_to_uint8_frames(video, b)), u8_values(ref.get("frames_pil").select(0, b)));
    EXPECT_EQ(u8_values(video_to_uint8_frames(video, b, Quantization::Truncate)),
              u8_values(ref.get("frames_trunc").select(0, b)));
  }
  // The fixture holds values exactly on .5 boundaries, where the two conversions differ.
  EXPECT_NE(u8_values(ref.get("frames_pil")), u8_values(ref.get("frames_trunc")));
}

// A bfloat16 VAE output: diffusers denormalizes in bfloat16, then converts to float32.
TEST(Frames, MatchesDiffusersForBf16Video) {
  const WeightStore ref = vgen::testing::reference("media_ref/media_extra.safetensors");
  const Tensor video = ref.get("video_bf16");
  ASSERT_EQ(video.dtype(), DType::BF16);
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_EQ(video_to_float_frames(video, b).to_vector(), ref.get("frames_np_bf16").select(0, b).to_vector());
    EXPECT_EQ(u8_values(video_to_uint8_frames(video, b)), u8_values(ref.get("frames_pil_bf16").select(0, b)));
  }
}

TEST(Frames, RoundsHalfToEvenAndClamps) {
  // x = 0 -> 0.5 -> 127.5: numpy's round gives the even 128, truncation 127.
  // Ends and out-of-range values clamp; NaN becomes 0.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor video = red_row({0.0f, -1.0f, 1.0f, -1.5f, 1.5f, nan, 0.999f, -0.999f});
  EXPECT_EQ(red_levels(video_to_uint8_frames(video)), (std::vector<uint8_t>{128, 0, 255, 0, 255, 0, 255, 0}));
  EXPECT_EQ(red_levels(video_to_uint8_frames(video, 0, Quantization::Truncate)),
            (std::vector<uint8_t>{127, 0, 255, 0, 255, 0, 254, 0}));

  // Every float32 x whose level lands exactly on k + 0.5 must go to the even neighbour.
  // (Found by walking float32 neighbours of the ideal x; about 80% of k have one.)
  std::vector<float> ties;
  std::vector<uint8_t> expected;
  for (int k = 0; k < 255; ++k) {
    float x = 2.0f * (k + 0.5f) / 255.0f - 1.0f;
    for (int i = 0; i < 64; ++i) x = std::nextafter(x, -2.0f);
    for (int i = 0; i < 128; ++i, x = std::nextafter(x, 2.0f)) {
      if ((x * 0.5f + 0.5f) * 255.0f == k + 0.5f) {
        ties.push_back(x);
        expected.push_back(static_cast<uint8_t>(k % 2 == 0 ? k : k + 1));
        break;
      }
    }
  }
  EXPECT_GT(ties.size(), 100u);
  EXPECT_EQ(red_levels(video_to_uint8_frames(red_row(ties))), expected);
}

TEST(Frames, LayoutAndBatchSelection) {
  // [B=2, C=3, F=2, H=2, W=3] with distinct values -> [F, H, W, C] of the chosen batch.
  std::vector<float> data(2 * 3 * 2 * 2 * 3);
  for (size_t i = 0; i < data.size(); ++i) data[i] = -1.0f + 2.0f * static_cast<float>(i) / 255.0f;
  const Tensor video = Tensor::from_vector(data, {2, 3, 2, 2, 3});
  for (int64_t b = 0; b < 2; ++b) {
    const Tensor frames = video_to_float_frames(video, b);
    ASSERT_EQ(frames.shape(), (Shape{2, 2, 3, 3}));
    const std::vector<float> got = frames.to_vector();
    for (int64_t f = 0; f < 2; ++f)
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 3; ++x)
          for (int64_t c = 0; c < 3; ++c) {
            const float v = data[(((b * 3 + c) * 2 + f) * 2 + y) * 3 + x];
            EXPECT_EQ(got[((f * 2 + y) * 3 + x) * 3 + c], std::clamp(v * 0.5f + 0.5f, 0.0f, 1.0f));
          }
    EXPECT_EQ(video_to_uint8_frames(video, b).shape(), (Shape{2, 2, 3, 3}));
  }
  // A strided (non-contiguous) video gives the same frames as its contiguous copy.
  const Tensor strided = video.transpose(3, 4).transpose(3, 4);
  const Tensor reversed = Tensor::from_vector(data, {2, 3, 2, 3, 2}).transpose(3, 4);
  ASSERT_FALSE(reversed.is_contiguous());
  EXPECT_EQ(video_to_float_frames(reversed, 1).to_vector(),
            video_to_float_frames(reversed.contiguous(), 1).to_vector());
  EXPECT_EQ(video_to_float_frames(strided).to_vector(), video_to_float_frames(video).to_vector());
}

TEST(Frames, ErrorsNameTheTensor) {
  expect_error([] { video_to_uint8_frames(Tensor::zeros({3, 2, 4, 4})); }, "[B, 3, F, H, W] video, got F32[3, 2, 4, 4]");
  expect_error([] { video_to_uint8_frames(Tensor::zeros({1, 4, 2, 4, 4})); }, "got F32[1, 4, 2, 4, 4]");
  expect_error([] { video_to_float_frames(Tensor::zeros({1, 3, 2, 4, 4}, DType::U8)); },
               "F32, BF16 or F16 video, got U8");
  expect_error([] { video_to_float_frames(Tensor::zeros({2, 3, 1, 2, 2}), 2); }, "batch_index 2 out of range");
  expect_error([] { video_to_float_frames(Tensor::zeros({2, 3, 1, 2, 2}), -1); }, "batch_index -1 out of range");
}
