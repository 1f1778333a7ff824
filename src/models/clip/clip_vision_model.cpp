#include "models/clip/clip_vision_model.h"

#include <filesystem>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "CLIPVisionModel";

}  // namespace

CLIPVisionConfig CLIPVisionConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path);
  const std::string model_type = r.string("model_type", "clip_vision_model");
  if (model_type != "clip_vision_model")
    r.fail_value("model_type", fmt::format("is \"{}\", expected \"clip_vision_model\" (the image_encoder of a "
                                           "diffusers pipeline is a CLIPVisionModel)",
                                           model_type));
  CLIPVisionConfig c;
  c.read_encoder_fields(r);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers, 1);
  c.num_channels = r.integer("num_channels", c.num_channels, 1);
  c.image_size = r.integer("image_size", c.image_size, 1);
  c.patch_size = r.integer("patch_size", c.patch_size, 1);
  if (c.patch_size > c.image_size)
    r.fail_value("patch_size", fmt::format("({}) is larger than image_size ({})", c.patch_size, c.image_size));
  return c;
}

CLIPVisionModel::CLIPVisionModel(CLIPVisionConfig config, DType dtype, Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device) {}

std::unique_ptr<CLIPVisionModel> CLIPVisionModel::from_pretrained(const std::string& dir, DType dtype, Device device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  if (!std::filesystem::is_directory(dir)) fail("{}: image encoder folder not found", dir);
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto model = std::unique_ptr<CLIPVisionModel>(
      new CLIPVisionModel(CLIPVisionConfig::from_json(read_json_file(config_path), config_path), dtype, device));
  const CLIPVisionConfig& c = model->config_;

  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights weights(store, dtype, device);
  // transformers 5 saves CLIPVisionModel's modules at the top; earlier versions (and the Wan
  // repos) under "vision_model.".
  const std::string prefix = store.contains("vision_model.embeddings.class_embedding") ? "vision_model." : "";
  model->class_embedding_ = weights.load(prefix + "embeddings.class_embedding", {c.hidden_size});
  model->patch_embedding_ = nn::Linear::from_conv(weights, prefix + "embeddings.patch_embedding",
                                                  {c.hidden_size, c.num_channels, c.patch_size, c.patch_size},
                                                  /*bias=*/false);
  model->position_embedding_ =
      weights.load(prefix + "embeddings.position_embedding.weight", {c.num_positions(), c.hidden_size});
  model->pre_layrnorm_ =
      nn::LayerNorm(weights, prefix + "pre_layrnorm", c.hidden_size, static_cast<float>(c.layer_norm_eps));
  model->encoder_ = CLIPEncoder(weights, prefix + "encoder.", c, c.num_hidden_layers - 1);

  // What hidden_states[-2] does not depend on: the last layer, post_layernorm, the projection
  // of a CLIPVisionModelWithProjection checkpoint, and the position_ids buffer that
  // transformers before 4.31 saved. The last layer must still be there: a checkpoint with
  // fewer layers than the config says is another model.
  const std::string last_layer = fmt::format("{}encoder.layers.{}.", prefix, c.num_hidden_layers - 1);
  if (!store.contains(last_layer + "layer_norm1.weight"))
    fail("{}: missing tensor '{}layer_norm1.weight' (num_hidden_layers is {} in {})", store.source(), last_layer,
         c.num_hidden_layers, config_path);
  weights.check_all_used(kClassName, config_path, [&](const std::string& name) {
    return name.rfind(last_layer, 0) == 0 || name.rfind(prefix + "post_layernorm.", 0) == 0 ||
           name == "visual_projection.weight" || name == prefix + "embeddings.position_ids";
  });
  return model;
}

Tensor CLIPVisionModel::embeddings(const Tensor& pixel_values) const {
  const CLIPVisionConfig& c = config_;
  VGEN_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == c.num_channels &&
                 pixel_values.size(2) == c.image_size && pixel_values.size(3) == c.image_size,
             "{}: pixel_values {} must be [batch, {}, {}, {}] (transformers refuses other sizes without "
             "interpolate_pos_encoding, which vgen does not implement)",
             kClassName, pixel_values.str(), c.num_channels, c.image_size, c.image_size);
  VGEN_CHECK(
      pixel_values.dtype() == DType::F32 || pixel_values.dtype() == DType::BF16 || pixel_values.dtype() == DType::F16,
      "{}: pixel_values {} must be a float tensor", kClassName, pixel_values.str());
  const int64_t B = pixel_values.size(0), C = c.num_channels, p = c.patch_size, G = c.image_size / p;
  // The Conv2d with kernel = stride = patch_size is a linear map of each patch: gather the
  // patches as rows of (channel, dy, dx) in token order (row, column), the weight's layout.
  // Like the convolution, a remainder that does not fill a patch is dropped.
  Tensor x = pixel_values.to(device_).to(dtype_);  // transformers: .to(patch_embedding.weight.dtype)
  x = x.narrow(2, 0, G * p).narrow(3, 0, G * p);
  x = x.reshape({B, C, G, p, G, p}).permute({0, 2, 4, 1, 3, 5}).reshape({B, G * G, C * p * p});
  const Tensor patch_embeds = patch_embedding_.forward(x);
  const std::vector<Tensor> class_embeds(static_cast<size_t>(B), class_embedding_.view({1, 1, c.hidden_size}));
  const Tensor embeddings = ops::cat({ops::cat(class_embeds, 0), patch_embeds}, 1);
  return ops::add(embeddings, position_embedding_.unsqueeze(0));
}

Tensor CLIPVisionModel::penultimate_hidden_states(const Tensor& pixel_values) const {
  return encoder_.forward(pre_layrnorm_.forward(embeddings(pixel_values)));
}

}  // namespace vgen
