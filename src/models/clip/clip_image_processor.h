// transformers' CLIPImageProcessor as its PIL backend (CLIPImageProcessorPil, transformers
// 5.23) computes it: what WanImageToVideoPipeline.encode_image does to the image before the
// CLIPVisionModel (`image_processor(images=image, return_tensors="pt")`).
//
// resize (shortest edge, PIL filter `resample`) -> center crop (zero-padded when the image is
// smaller) -> rescale (uint8 * rescale_factor in float64, then float32) -> normalize
// ((x - mean) / std in float32): the same pixels as transformers', bit for bit.
//
// Which backend a diffusers user gets: transformers 5 makes `CLIPImageProcessor` the
// torchvision backend when torchvision is installed and falls back to CLIPImageProcessorPil
// (with a warning) when it is not. The torchvision backend resizes with torch's antialiased
// bicubic on uint8 tensors, which lands 1 uint8 level away from PIL's on about 0.3-0.4% of
// values (max 0.015 in normalised units, measured with torchvision 0.29.2:
// tools/fixtures/make_image_extra.py --compare-torchvision), and rounds rescale+normalize
// differently (up to 2.4e-7 without a resize). vgen implements the PIL one only.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "io/json.h"
#include "media/resample.h"

namespace vgen {

// preprocessor_config.json, with CLIPImageProcessor's defaults.
struct CLIPImageProcessorConfig {
  bool do_resize = true;
  // size: {"shortest_edge": N} (or a bare N, as old configs write it), or {"height", "width"}.
  int64_t shortest_edge = 224;
  int64_t size_height = 0, size_width = 0;  // when given instead of shortest_edge
  media::Resampling resample = media::Resampling::Bicubic;
  bool do_center_crop = true;
  int64_t crop_height = 224, crop_width = 224;  // crop_size {"height", "width"} (or a bare N)
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};  // OpenAI CLIP's
  std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};
  bool do_convert_rgb = true;  // inputs are RGB already (decode_image's output)

  // Reads a preprocessor_config.json strictly: a key it does not know or a value it does not
  // support is an error naming the file and the field.
  static CLIPImageProcessorConfig from_json(const Json& j, const std::string& path);
};

class CLIPImageProcessor {
 public:
  explicit CLIPImageProcessor(CLIPImageProcessorConfig config = {}) : config_(config) {}
  // dir/preprocessor_config.json (a pipeline's image_processor/ folder).
  static CLIPImageProcessor from_pretrained(const std::string& dir);

  // image: U8 [H, W, 3] RGB (any strides) -> pixel_values F32 [1, 3, crop_height, crop_width]
  // (without center crop: the resized size).
  Tensor preprocess(const Tensor& image) const;

  const CLIPImageProcessorConfig& config() const { return config_; }

 private:
  CLIPImageProcessorConfig config_;
};

}  // namespace vgen
