#include "models/clip/clip_image_processor.h"

#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/json.h"

namespace vgen {
namespace {

std::array<double, 3> three_numbers(const ConfigReader& r, const std::string& key,
                                    const std::array<double, 3>& fallback, bool nonzero) {
  const std::vector<double> values = r.number_list(key, {fallback.begin(), fallback.end()});
  if (values.size() != 3) r.fail_value(key, fmt::format("must have 3 values (R, G, B), got {}", values.size()));
  for (double v : values)
    if (nonzero && v == 0.0) r.fail_value(key, "must not contain 0");
  return {values[0], values[1], values[2]};
}

}  // namespace

CLIPImageProcessorConfig CLIPImageProcessorConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path, "CLIPImageProcessor");
  CLIPImageProcessorConfig c;
  const std::string type = r.string("image_processor_type", "CLIPImageProcessor");
  if (type != "CLIPImageProcessor" && type != "CLIPImageProcessorPil" && type != "CLIPImageProcessorFast")
    r.fail_value("image_processor_type", fmt::format("is \"{}\"; vgen reads CLIPImageProcessor configs", type));
  const std::string legacy_type = r.string("feature_extractor_type", "CLIPFeatureExtractor");
  if (legacy_type != "CLIPFeatureExtractor")
    r.fail_value("feature_extractor_type",
                 fmt::format("is \"{}\"; vgen reads CLIPImageProcessor configs", legacy_type));
  r.string("processor_class", "");  // the processor bundling it (CLIPProcessor): no effect here

  c.do_resize = r.boolean("do_resize", c.do_resize);
  // size: a bare integer is the shortest edge (get_size_dict with default_to_square=False).
  if (j.is_object() && j.contains("size") && j.at("size").is_number_integer()) {
    c.shortest_edge = r.integer("size", c.shortest_edge, 1, 1 << 16);
  } else if (r.has("size")) {
    const ConfigReader size = r.section("size");
    if (size.has("shortest_edge")) {
      c.shortest_edge = size.integer("shortest_edge", c.shortest_edge, 1, 1 << 16);
    } else {
      c.shortest_edge = 0;
      c.size_height = size.required_integer("height", 1, 1 << 16);
      c.size_width = size.required_integer("width", 1, 1 << 16);
    }
    size.require_absent("longest_edge", "a longest_edge limit is not supported");
    size.reject_unknown();
  }
  c.resample = media::resampling_from_pil(r.integer("resample", 3), path + ": field 'resample'");
  c.do_center_crop = r.boolean("do_center_crop", c.do_center_crop);
  if (j.is_object() && j.contains("crop_size") && j.at("crop_size").is_number_integer()) {
    c.crop_height = c.crop_width = r.integer("crop_size", c.crop_height, 1, 1 << 16);
  } else if (r.has("crop_size")) {
    const ConfigReader crop = r.section("crop_size");
    c.crop_height = crop.required_integer("height", 1, 1 << 16);
    c.crop_width = crop.required_integer("width", 1, 1 << 16);
    crop.reject_unknown();
  }
  c.do_rescale = r.boolean("do_rescale", c.do_rescale);
  c.rescale_factor = r.number("rescale_factor", c.rescale_factor);
  c.do_normalize = r.boolean("do_normalize", c.do_normalize);
  c.image_mean = three_numbers(r, "image_mean", c.image_mean, false);
  c.image_std = three_numbers(r, "image_std", c.image_std, true);
  c.do_convert_rgb = r.boolean("do_convert_rgb", c.do_convert_rgb);
  r.reject_unknown();
  return c;
}

CLIPImageProcessor CLIPImageProcessor::from_pretrained(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "preprocessor_config.json").string();
  return CLIPImageProcessor(CLIPImageProcessorConfig::from_json(read_json_file(path), path));
}

Tensor CLIPImageProcessor::preprocess(const Tensor& image) const {
  VGEN_CHECK(image.defined() && image.dtype() == DType::U8 && image.dim() == 3 && image.size(2) == 3,
             "CLIPImageProcessor: the image must be U8 [H, W, 3] RGB, got {}",
             image.defined() ? image.str() : "an undefined tensor");
  const CLIPImageProcessorConfig& c = config_;
  Tensor rgb = image.to(Device::cpu()).contiguous();
  if (c.do_resize) {
    int64_t height = c.size_height, width = c.size_width;
    if (c.shortest_edge > 0) {
      // get_resize_output_image_size(default_to_square=False): the short side becomes
      // shortest_edge, the long one int(shortest_edge * long / short) (a Python float division).
      const int64_t h = rgb.size(0), w = rgb.size(1);
      const int64_t short_side = std::min(h, w), long_side = std::max(h, w);
      const auto new_long =
          static_cast<int64_t>(static_cast<double>(c.shortest_edge * long_side) / static_cast<double>(short_side));
      if (w <= h) {
        height = new_long;
        width = c.shortest_edge;
      } else {
        height = c.shortest_edge;
        width = new_long;
      }
    }
    rgb = media::resize(rgb, width, height, c.resample);
  }
  const int64_t H = rgb.size(0), W = rgb.size(1);
  // center_crop: top = (H - crop) // 2; a smaller image is first zero-padded to the crop size
  // (ceil of half the missing rows before it), which shifts the window to start at 0.
  int64_t out_h = H, out_w = W, top = 0, left = 0;
  if (c.do_center_crop) {
    out_h = c.crop_height;
    out_w = c.crop_width;
    top = H >= out_h ? (H - out_h) / 2 : -((out_h - H + 1) / 2);
    left = W >= out_w ? (W - out_w) / 2 : -((out_w - W + 1) / 2);
  }
  Tensor out = Tensor::empty({1, 3, out_h, out_w}, DType::F32);
  const uint8_t* in = rgb.data<uint8_t>();
  float* dst = out.data<float>();
  for (int64_t ch = 0; ch < 3; ++ch) {
    const auto mean = static_cast<float>(c.image_mean[ch]), std = static_cast<float>(c.image_std[ch]);
    for (int64_t y = 0; y < out_h; ++y)
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t sy = y + top, sx = x + left;
        const uint8_t u = sy >= 0 && sy < H && sx >= 0 && sx < W ? in[(sy * W + sx) * 3 + ch] : 0;
        // rescale: float64 product, then float32; normalize: float32 (x - mean) / std.
        float v = c.do_rescale ? static_cast<float>(static_cast<double>(u) * c.rescale_factor) : static_cast<float>(u);
        if (c.do_normalize) v = (v - mean) / std;
        dst[(ch * out_h + y) * out_w + x] = v;
      }
  }
  return out;
}

}  // namespace vgen
