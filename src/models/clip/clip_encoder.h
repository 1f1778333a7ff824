// transformers' CLIPEncoder and CLIPEncoderLayer (models/clip/modeling_clip.py), the stack that
// CLIPTextModel (text/clip_text_model.h) and CLIPVisionModel (models/clip/clip_vision_model.h)
// share: pre-norm blocks of [layer_norm1 -> self-attention (q/k/v/out_proj with biases,
// head_dim ** -0.5 scaling) -> residual, layer_norm2 -> fc1 -> hidden_act -> fc2 -> residual].
// What differs between the two models is a parameter: the config's fields, how many layers run
// and the additive attention bias (the text model's causal + padding mask; none for images).
// Runs through vgen::ops on every backend; weights and results in the compute dtype.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config_reader.h"
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen {

// The fields of a CLIPTextConfig / CLIPVisionConfig that the encoder reads, named as in
// config.json. The models' configs derive from it and set their own defaults.
struct CLIPEncoderConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_attention_heads = 0;
  std::string hidden_act = "quick_gelu";  // quick_gelu, gelu, gelu_new / gelu_pytorch_tanh, silu
  double layer_norm_eps = 1e-5;

  // Reads and checks these fields of a config.json (the current values are the defaults); an
  // error names the file and the field.
  void read_encoder_fields(const ConfigReader& r);
};

// One CLIPEncoderLayer, its modules named as the checkpoint's keys under PREFIX
// ("encoder.layers.N."): layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2.
class CLIPEncoderLayer {
 public:
  CLIPEncoderLayer(const nn::Weights& weights, const std::string& prefix, const CLIPEncoderConfig& config);

  // hidden_states [B, L, hidden_size]; attention_bias is added to the scores (broadcast to
  // [B, heads, L, L]) or undefined.
  Tensor forward(const Tensor& hidden_states, const Tensor& attention_bias = {}) const;

 private:
  Tensor mlp(const Tensor& x) const;

  std::string hidden_act_;
  nn::LayerNorm layer_norm1_;
  nn::Attention self_attn_;
  nn::LayerNorm layer_norm2_;
  nn::Linear fc1_, fc2_;
};

// The first `num_layers` layers of a CLIPEncoder (a model may stop before the last, as
// CLIPVisionModel does for hidden_states[-2]).
class CLIPEncoder {
 public:
  CLIPEncoder() = default;
  // Loads PREFIX + "layers.N." for N < num_layers (PREFIX: "encoder." or "text_model.encoder.").
  CLIPEncoder(const nn::Weights& weights, const std::string& prefix, const CLIPEncoderConfig& config,
              int64_t num_layers);

  // inputs_embeds [B, L, hidden_size] through every loaded layer; attention_bias as in
  // CLIPEncoderLayer::forward.
  Tensor forward(const Tensor& inputs_embeds, const Tensor& attention_bias = {}) const;

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  std::vector<CLIPEncoderLayer> layers_;
};

}  // namespace vgen
