// transformers' CLIPVisionModel (models/clip/modeling_clip.py), the image encoder of the
// Wan2.1 image-to-video pipelines: CLIPVisionEmbeddings (class token, patch convolution,
// position embeddings), pre_layrnorm, then the CLIPEncoder's layers (models/clip/clip_encoder.h,
// shared with CLIPTextModel), without a mask.
//
// WanImageToVideoPipeline.encode_image takes `hidden_states[-2]` of
// `image_encoder(**image, output_hidden_states=True)`: the output of all layers but the
// last. That is all this model computes: the last layer and post_layernorm are never run
// (their weights are read past, not loaded).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "models/clip/clip_encoder.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen {

// Fields named as in image_encoder/config.json; defaults are transformers' CLIPVisionConfig
// (the encoder's: hidden_size 768, intermediate_size 3072, 12 heads, quick_gelu, eps 1e-5).
struct CLIPVisionConfig : CLIPEncoderConfig {
  CLIPVisionConfig() : CLIPEncoderConfig{768, 3072, 12, "quick_gelu", 1e-5} {}

  int64_t num_hidden_layers = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;

  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t num_positions() const { return num_patches() + 1; }
  // Reads and checks a config.json (`path` names it in errors).
  static CLIPVisionConfig from_json(const Json& j, const std::string& path);
};

class CLIPVisionModel {
 public:
  // Reads dir/config.json and the weights in dir (model.safetensors or shards), named as
  // transformers 5 saves them ("embeddings.…", "encoder.layers.N.…") or with the
  // "vision_model." prefix of older checkpoints (the Wan repos'); each checked against the
  // shape the config implies and converted to `dtype` (F32, BF16, F16) on `device`.
  static std::unique_ptr<CLIPVisionModel> from_pretrained(const std::string& dir, DType dtype = DType::F32,
                                                          Device device = Device::cpu());

  // pixel_values [B, num_channels, image_size, image_size] (any float dtype, any device; a
  // CLIPImageProcessor output) -> hidden_states[-2], [B, 1 + num_patches, hidden_size] in the
  // compute dtype on the model's device.
  Tensor penultimate_hidden_states(const Tensor& pixel_values) const;

  const CLIPVisionConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  CLIPVisionModel(CLIPVisionConfig config, DType dtype, Device device);
  Tensor embeddings(const Tensor& pixel_values) const;

  CLIPVisionConfig config_;
  DType dtype_;
  Device device_;
  Tensor class_embedding_;      // [hidden_size]
  nn::Linear patch_embedding_;  // the Conv2d (kernel = stride = patch_size, no bias) as a linear map
  Tensor position_embedding_;   // [num_positions, hidden_size]
  nn::LayerNorm pre_layrnorm_;  // (sic: transformers' name)
  CLIPEncoder encoder_;         // the first num_hidden_layers - 1 layers
};

}  // namespace vgen
