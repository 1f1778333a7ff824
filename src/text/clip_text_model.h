// transformers' CLIPTextModel (models/clip/modeling_clip.py): FLUX.1's text_encoder (CLIP-L).
// Token + learned position embeddings, the CLIPEncoder's num_hidden_layers pre-norm blocks
// (models/clip/clip_encoder.h, shared with CLIPVisionModel) with a causal mask, final LayerNorm.
// pooler_output is the final hidden state at each row's end-of-text token, chosen as
// transformers does for the config: with eos_token_id == 2 (the legacy CLIP configs, FLUX's
// included) the position of the largest input id, else the first position holding
// eos_token_id. Runs through vgen::ops on every backend; weights and results in the compute
// dtype, norm statistics float32.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "models/clip/clip_encoder.h"
#include "nn/norm.h"

namespace vgen {

// text_encoder/config.json fields (a CLIPTextConfig, or a CLIPConfig's text_config); defaults
// are transformers' CLIPTextConfig (the encoder's: hidden_size 512, intermediate_size 2048,
// 8 heads, quick_gelu, eps 1e-5).
struct CLIPTextConfig : CLIPEncoderConfig {
  CLIPTextConfig() : CLIPEncoderConfig{512, 2048, 8, "quick_gelu", 1e-5} {}

  int64_t vocab_size = 49408;
  int64_t num_hidden_layers = 12;
  int64_t max_position_embeddings = 77;
  int64_t eos_token_id = 49407;

  // Reads and checks a config.json (`path` names it in errors).
  static CLIPTextConfig from_json(const Json& j, const std::string& path);
};

struct CLIPTextModelOutput {
  Tensor last_hidden_state;  // [B, L, hidden_size]
  Tensor pooler_output;      // [B, hidden_size]
};

class CLIPTextModel {
 public:
  // Reads dir/config.json and the weights in dir (model.safetensors or shards; keys
  // text_model.*), each checked against the shape the config implies and converted to `dtype`
  // on `device`. A missing tensor or one the model does not use (apart from the
  // text_model.embeddings.position_ids buffer) is an error naming it and the folder.
  static std::unique_ptr<CLIPTextModel> from_pretrained(const std::string& dir, DType dtype = DType::F32,
                                                        Device device = Device::cpu());

  // input_ids I64 [B, L], L <= max_position_embeddings; attention_mask [B, L] (0 masks a key)
  // or undefined (FluxPipeline passes none: only the causal mask applies).
  CLIPTextModelOutput forward(const Tensor& input_ids, const Tensor& attention_mask = {}) const;

  const CLIPTextConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  CLIPTextModel(CLIPTextConfig config, DType dtype, Device device);

  CLIPTextConfig config_;
  DType dtype_;
  Device device_;
  Tensor token_embedding_;     // [vocab_size, hidden_size], host memory
  Tensor position_embedding_;  // [max_position_embeddings, hidden_size], on device
  CLIPEncoder encoder_;        // text_model.encoder.layers.N
  nn::LayerNorm final_layer_norm_;
};

}  // namespace vgen
