#include "media/image_processor.h"

#include "core/error.h"

namespace vgen::media {

VaeImageProcessor::VaeImageProcessor(VaeImageProcessorConfig config) : config_(config) {
  VGEN_CHECK(config_.vae_scale_factor > 0, "VaeImageProcessor: vae_scale_factor must be positive, got {}",
             config_.vae_scale_factor);
}

Tensor VaeImageProcessor::preprocess(const Tensor& image, std::optional<int64_t> height,
                                     std::optional<int64_t> width) const {
  VGEN_CHECK(image.defined() && image.dtype() == DType::U8 && image.dim() == 3 && image.size(2) == 3,
             "VaeImageProcessor.preprocess: the image must be U8 [H, W, 3] RGB, got {}",
             image.defined() ? image.str() : "an undefined tensor");
  Tensor rgb = image.to(Device::cpu()).contiguous();
  if (config_.do_resize) {
    // get_default_height_width: the image's size where not given, rounded down to the grid.
    int64_t h = height.value_or(rgb.size(0)), w = width.value_or(rgb.size(1));
    h -= h % config_.vae_scale_factor;
    w -= w % config_.vae_scale_factor;
    VGEN_CHECK(h > 0 && w > 0,
               "VaeImageProcessor.preprocess: height {} x width {} is below one vae_scale_factor ({}) step",
               height.value_or(rgb.size(0)), width.value_or(rgb.size(1)), config_.vae_scale_factor);
    rgb = resize(rgb, w, h, config_.resample);
  }
  const int64_t H = rgb.size(0), W = rgb.size(1);
  Tensor out = Tensor::empty({1, 3, H, W}, DType::F32);
  const uint8_t* in = rgb.data<uint8_t>();
  float* dst = out.data<float>();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < H * W; ++i) {
      // pil_to_numpy: float32(x) / 255 in float32; normalize: 2 * x - 1 in float32 (2x is exact).
      const float v = static_cast<float>(in[i * 3 + c]) / 255.0f;
      dst[c * H * W + i] = config_.do_normalize ? 2.0f * v - 1.0f : v;
    }
  return out;
}

}  // namespace vgen::media
