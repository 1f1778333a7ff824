// media::resize against Pillow's Image.resize (tests/fixtures/image_ref/resize.safetensors,
// written by tools/fixtures/make_image_extra.py). Bit-exact: the same fixed-point weights,
// rounding and pass order as libImaging/Resample.c, so every pixel must be equal.
#include "media/resample.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>

#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;

namespace {

// "a.lanczos.80x50" -> source "source_a", filter, width, height.
struct ResizeCase {
  std::string source, filter;
  int64_t width = 0, height = 0;
};

ResizeCase parse_case(const std::string& key) {
  ResizeCase c;
  const size_t dot1 = key.find('.'), dot2 = key.find('.', dot1 + 1), x = key.find('x', dot2);
  c.source = "source_" + key.substr(0, dot1);
  c.filter = key.substr(dot1 + 1, dot2 - dot1 - 1);
  c.width = std::stoll(key.substr(dot2 + 1, x - dot2 - 1));
  c.height = std::stoll(key.substr(x + 1));
  return c;
}

int64_t differing_bytes(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  int64_t n = 0;
  for (int64_t i = 0; i < x.numel(); ++i) n += x.data<uint8_t>()[i] != y.data<uint8_t>()[i];
  return n;
}

}  // namespace

// Every filter, up and down, non-integer factors, odd sizes, the vertical-first order
// (60x7 from 64x48) and 1x1: identical to PIL.
TEST(Resample, BitExactAgainstPillow) {
  const WeightStore ref = vgen::testing::reference("image_ref/resize.safetensors");
  int cases = 0;
  for (const std::string& key : ref.names()) {
    if (key.rfind("source_", 0) == 0) continue;
    const ResizeCase c = parse_case(key);
    const Tensor expected = ref.get(key);
    const Tensor out =
        media::resize(ref.get(c.source), c.width, c.height, media::resampling_from_name(c.filter, "test"));
    ASSERT_EQ(out.shape(), expected.shape()) << key;
    EXPECT_EQ(differing_bytes(out, expected), 0) << key;
    ++cases;
  }
  EXPECT_EQ(cases, 60);
  std::printf("[ resize ] %d PIL resize cases, all bit-exact\n", cases);
}

// Single-channel images (PIL mode L) take the same path per channel; a strided input (a
// crop view) is read as the crop; the same size is a copy.
TEST(Resample, GrayStridedAndSameSize) {
  const WeightStore ref = vgen::testing::reference("image_ref/resize.safetensors");
  const Tensor rgb = ref.get("source_a");
  const Tensor red = rgb.narrow(2, 0, 1);  // strided [H, W, 1]
  const Tensor gray = media::resize(red, 80, 50, media::Resampling::Lanczos);
  const Tensor full = ref.get("a.lanczos.80x50");
  EXPECT_EQ(differing_bytes(gray, full.narrow(2, 0, 1).contiguous()), 0);
  EXPECT_EQ(differing_bytes(media::resize(rgb, 37, 23, media::Resampling::Bicubic), rgb), 0);
}

TEST(Resample, FilterNamesAndCodes) {
  EXPECT_EQ(media::resampling_from_pil(1, "f"), media::Resampling::Lanczos);
  EXPECT_EQ(media::resampling_from_pil(3, "f"), media::Resampling::Bicubic);
  EXPECT_EQ(media::resampling_from_name("bilinear", "f"), media::Resampling::Bilinear);
  EXPECT_EQ(media::resampling_from_pil(0, "f"), media::Resampling::Nearest);
  vgen::testing::expect_error([] { media::resampling_from_pil(7, "cfg.json: field 'resample'"); },
                              "cfg.json: field 'resample': resample 7 is not a PIL filter");
  vgen::testing::expect_error([] { media::resampling_from_name("mks2013", "x"); }, "\"mks2013\" is not supported");
  vgen::testing::expect_error(
      [] {
        media::resize(Tensor::zeros({4, 4, 3}, DType::F32), 2, 2, media::Resampling::Lanczos);
      },
      "must be U8");
  vgen::testing::expect_error(
      [] {
        media::resize(Tensor::zeros({4, 4, 3}, DType::U8), 0, 2, media::Resampling::Lanczos);
      },
      "must be positive");
}
