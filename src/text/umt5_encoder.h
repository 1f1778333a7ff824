// transformers' UMT5EncoderModel (models/umt5/modeling_umt5.py), the text encoder of Wan:
// token embedding, num_layers blocks of [T5 RMS norm -> self-attention with a per-layer
// relative position bias and no 1/sqrt(d) scaling -> residual, T5 RMS norm -> gated-gelu FFN
// -> residual], final RMS norm. Runs through vgen::ops, so one code path serves every backend.
//
// Weights live in the compute dtype chosen at load; with float16, `wo` stays float32 as
// transformers keeps it (`_keep_in_fp32_modules`, applied to float16 only), which makes the
// residual stream float32 from the first FFN on. Norm statistics and the attention bias are
// float32. The float16 inf-clamping of transformers' UMT5Block is not reproduced.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen {

// Fields named as in text_encoder/config.json; defaults are transformers' UMT5Config.
struct UMT5Config {
  int64_t vocab_size = 250112;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 1024;
  int64_t num_layers = 8;
  int64_t num_heads = 6;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "gated-gelu";
  // Derived from feed_forward_proj as UMT5Config.__post_init__ does ("gated-gelu" -> gated
  // "gelu_new"); the values stored in config.json are ignored, as transformers ignores them.
  bool is_gated_act = true;
  std::string dense_act_fn = "gelu_new";

  // Reads and checks a config.json (`path` names it in errors).
  static UMT5Config from_json(const Json& j, const std::string& path);
};

// T5's relative position bucket of memory_position - query_position (bidirectional: the
// encoder's), exactly as transformers computes it in float32.
int64_t relative_position_bucket(int64_t relative_position, int64_t num_buckets, int64_t max_distance);

class UMT5EncoderModel {
 public:
  // Reads dir/config.json and the weights in dir (model.safetensors or shards), each checked
  // against the shape the config implies and converted to `dtype` on `device`. The embedding
  // is `shared.weight` or `encoder.embed_tokens.weight`. A missing tensor, or one the encoder
  // does not use, is an error naming it and the folder.
  static std::unique_ptr<UMT5EncoderModel> from_pretrained(const std::string& dir, DType dtype = DType::F32,
                                                           Device device = Device::cpu());

  // input_ids I64 [B, L]; attention_mask [B, L] (any dtype; 0 masks a key) -> last_hidden_state
  // [B, L, d_model] in the compute dtype. Masked keys get float32's lowest value as additive
  // bias, as in transformers; a row with every key masked attends uniformly, as there.
  Tensor forward(const Tensor& input_ids, const Tensor& attention_mask) const;

  const UMT5Config& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  // UMT5Block, its modules named as the checkpoint's keys under encoder.block.N.layer.
  struct Block {
    Block(const nn::Weights& weights, const std::string& prefix, const UMT5Config& config);

    nn::RMSNorm attention_norm;       // 0.layer_norm
    nn::Attention self_attention;     // 0.SelfAttention.{q,k,v,o}: no biases, no 1/sqrt(d) scaling
    Tensor relative_attention_bias;   // 0.SelfAttention.relative_attention_bias [num_buckets, num_heads] float32
    nn::RMSNorm ffn_norm;             // 1.layer_norm
    nn::Linear wi_0, wi_1;            // 1.DenseReluDense; wi_1 absent for a non-gated FFN (then wi_0 is `wi`)
    nn::Linear wo;                    // float32 when the compute dtype is F16
  };

  UMT5EncoderModel(UMT5Config config, DType dtype, Device device);
  Tensor self_attention(const Block& block, const Tensor& x, const Tensor& bucket_ids, const Tensor& mask_bias) const;
  Tensor feed_forward(const Block& block, const Tensor& x) const;

  UMT5Config config_;
  DType dtype_;
  Device device_;
  Tensor shared_;  // [vocab_size, d_model], in host memory (rows gathered there, then uploaded)
  std::vector<Block> blocks_;
  nn::RMSNorm final_layer_norm_;
};

// diffusers' WanPipeline._get_t5_prompt_embeds after the encoder: keeps the first lengths[b]
// positions of hidden[b] ([B, L, D]) and zeroes the rest (u[:v] re-padded with zeros).
Tensor zero_padded_positions(const Tensor& hidden, const std::vector<int64_t>& lengths);

}  // namespace vgen
