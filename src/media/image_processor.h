// diffusers' VaeImageProcessor.preprocess (image_processor.py) for one PIL RGB image: what
// VideoProcessor.preprocess does to the conditioning image of WanImageToVideoPipeline
// (`video_processor.preprocess(image, height=height, width=width)`).
#pragma once

#include <cstdint>
#include <optional>

#include "core/tensor.h"
#include "media/resample.h"

namespace vgen::media {

// The VaeImageProcessor config fields that act on a PIL RGB image, with diffusers' defaults
// (VideoProcessor(vae_scale_factor=...) as the Wan pipelines build it).
struct VaeImageProcessorConfig {
  int64_t vae_scale_factor = 8;
  bool do_resize = true;
  Resampling resample = Resampling::Lanczos;
  bool do_normalize = true;
};

class VaeImageProcessor {
 public:
  explicit VaeImageProcessor(VaeImageProcessorConfig config = {});

  // image: U8 [H, W, 3] RGB (any strides). height/width default to the image's; both are
  // rounded down to a multiple of vae_scale_factor (get_default_height_width). Then PIL's
  // resize to (width, height) with `resample`, float32 / 255, and with do_normalize 2x - 1
  // -> F32 [1, 3, height, width].
  Tensor preprocess(const Tensor& image, std::optional<int64_t> height = std::nullopt,
                    std::optional<int64_t> width = std::nullopt) const;

  const VaeImageProcessorConfig& config() const { return config_; }

 private:
  VaeImageProcessorConfig config_;
};

}  // namespace vgen::media
