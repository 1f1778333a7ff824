#include "models/clip/clip_encoder.h"

#include "core/error.h"
#include "ops/ops.h"

namespace vgen {
namespace {

bool supported_activation(const std::string& act) {
  return act == "quick_gelu" || act == "gelu" || act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "silu";
}

nn::AttentionOptions clip_attention_options(const CLIPEncoderConfig& c) {
  nn::AttentionOptions o;
  o.query_dim = c.hidden_size;
  o.heads = c.num_attention_heads;
  o.dim_head = c.hidden_size / c.num_attention_heads;  // scale: head_dim ** -0.5, the default
  o.to_q = "q_proj";
  o.to_k = "k_proj";
  o.to_v = "v_proj";
  o.to_out = "out_proj";
  return o;
}

}  // namespace

void CLIPEncoderConfig::read_encoder_fields(const ConfigReader& r) {
  hidden_size = r.integer("hidden_size", hidden_size, 1);
  intermediate_size = r.integer("intermediate_size", intermediate_size, 1);
  num_attention_heads = r.integer("num_attention_heads", num_attention_heads, 1);
  if (hidden_size % num_attention_heads != 0)
    r.fail_value("num_attention_heads",
                 fmt::format("({}) must divide hidden_size ({})", num_attention_heads, hidden_size));
  hidden_act = r.string("hidden_act", hidden_act);
  if (!supported_activation(hidden_act))
    r.fail_value("hidden_act", fmt::format("is \"{}\"; supported: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh, silu",
                                           hidden_act));
  layer_norm_eps = r.number("layer_norm_eps", layer_norm_eps);
  if (!(layer_norm_eps > 0.0 && layer_norm_eps < 1.0))
    r.fail_value("layer_norm_eps", fmt::format("must be in (0, 1), got {}", layer_norm_eps));
}

CLIPEncoderLayer::CLIPEncoderLayer(const nn::Weights& weights, const std::string& p, const CLIPEncoderConfig& c)
    : hidden_act_(c.hidden_act),
      layer_norm1_(weights, p + "layer_norm1", c.hidden_size, static_cast<float>(c.layer_norm_eps)),
      self_attn_(weights, p + "self_attn", clip_attention_options(c)),
      layer_norm2_(weights, p + "layer_norm2", c.hidden_size, static_cast<float>(c.layer_norm_eps)),
      fc1_(weights, p + "mlp.fc1", c.hidden_size, c.intermediate_size),
      fc2_(weights, p + "mlp.fc2", c.intermediate_size, c.hidden_size) {
  VGEN_CHECK(supported_activation(hidden_act_), "CLIPEncoderLayer {}: hidden_act \"{}\" is not supported", p,
             hidden_act_);
}

Tensor CLIPEncoderLayer::mlp(const Tensor& x) const {
  if (hidden_act_ == "quick_gelu") {
    // x * sigmoid(1.702 x), written as silu(1.702 x) / 1.702 with the ops there are (in
    // float32 within an ulp or two of transformers' QuickGELUActivation).
    constexpr float k = 1.702f;
    return fc2_.forward(ops::scale(ops::silu(ops::scale(fc1_.forward(x), k)), 1.0f / k));
  }
  const Activation fused = hidden_act_ == "gelu"   ? Activation::Gelu
                           : hidden_act_ == "silu" ? Activation::Silu
                                                   : Activation::GeluTanh;  // gelu_new, gelu_pytorch_tanh
  return fc2_.forward(fc1_.forward(x, fused));
}

Tensor CLIPEncoderLayer::forward(const Tensor& hidden_states, const Tensor& attention_bias) const {
  Tensor h = ops::add(hidden_states, self_attn_.forward(layer_norm1_.forward(hidden_states), nullptr, attention_bias));
  return ops::add(h, mlp(layer_norm2_.forward(h)));
}

CLIPEncoder::CLIPEncoder(const nn::Weights& weights, const std::string& prefix, const CLIPEncoderConfig& config,
                         int64_t num_layers) {
  layers_.reserve(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i)
    layers_.emplace_back(weights, fmt::format("{}layers.{}.", prefix, i), config);
}

Tensor CLIPEncoder::forward(const Tensor& inputs_embeds, const Tensor& attention_bias) const {
  Tensor h = inputs_embeds;
  for (const CLIPEncoderLayer& layer : layers_) h = layer.forward(h, attention_bias);
  return h;
}

}  // namespace vgen
