// transformers' T5EncoderModel (models/t5/modeling_t5.py) and UMT5EncoderModel
// (models/umt5/modeling_umt5.py): one implementation of the T5 encoder stack. Token embedding,
// num_layers blocks of [T5 RMS norm -> self-attention with a relative position bias and no
// 1/sqrt(d) scaling -> residual, T5 RMS norm -> (gated) FFN -> residual], final RMS norm. Runs
// through vgen::ops, so one code path serves every backend.
//
// The two models differ only in where the relative position bias comes from:
// * T5 (v1.1, FLUX's text_encoder_2): block 0 alone owns `relative_attention_bias`; the bias it
//   computes (plus the padding mask) is shared by every later block.
// * UMT5 (Wan's text encoder): every block owns its table and computes its own bias.
//
// Weights live in the compute dtype chosen at load; with float16, `wo` stays float32 as
// transformers keeps it (`_keep_in_fp32_modules`, applied to float16 only), which makes the
// residual stream float32 from the first FFN on. Norm statistics and the attention bias are
// float32. The float16 inf-clamping of transformers' T5Block / UMT5Block is not reproduced.
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

// Fields named as in config.json. Defaults are transformers' T5Config for model_type "t5" and
// UMT5Config for "umt5" (from_json picks them by the file's model_type).
struct T5Config {
  std::string model_type = "t5";  // "t5" or "umt5"
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "relu";
  // Derived from feed_forward_proj as T5Config / UMT5Config.__post_init__ do ("gated-gelu" ->
  // gated "gelu_new"); the values stored in config.json are ignored, as transformers ignores them.
  bool is_gated_act = false;
  std::string dense_act_fn = "relu";

  // Every block has its own relative attention bias table (UMT5), or only block 0 (T5).
  bool relative_bias_per_layer() const { return model_type == "umt5"; }

  // Reads and checks a config.json (`path` names it in errors). `expected_model_type` ("t5" or
  // "umt5") is the model the caller loads: a config of the other type is an error naming both.
  static T5Config from_json(const Json& j, const std::string& path, const std::string& expected_model_type);
};

// T5's relative position bucket of memory_position - query_position (bidirectional: the
// encoder's), exactly as transformers computes it in float32.
int64_t relative_position_bucket(int64_t relative_position, int64_t num_buckets, int64_t max_distance);

class T5EncoderModel {
 public:
  // Reads dir/config.json (model_type "t5") and the weights in dir (model.safetensors or
  // shards), each checked against the shape the config implies and converted to `dtype` on
  // `device`. The embedding is `shared.weight` or `encoder.embed_tokens.weight`. A missing
  // tensor, or one the encoder does not use, is an error naming it and the folder.
  static std::unique_ptr<T5EncoderModel> from_pretrained(const std::string& dir, DType dtype = DType::F32,
                                                         Device device = Device::cpu());

  virtual ~T5EncoderModel() = default;

  // input_ids I64 [B, L]; attention_mask [B, L] (any dtype; 0 masks a key), or undefined for
  // no mask (FluxPipeline calls text_encoder_2 without one: padding is attended) ->
  // last_hidden_state [B, L, d_model] in the compute dtype. Masked keys get float32's lowest
  // value as additive bias, as in transformers; a row with every key masked attends uniformly.
  Tensor forward(const Tensor& input_ids, const Tensor& attention_mask = {}) const;

  const T5Config& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 protected:
  // Reads dir/config.json, which must say `model_type` ("t5" or "umt5"), and the weights:
  // the load behind T5EncoderModel's and UMT5EncoderModel's from_pretrained.
  T5EncoderModel(const std::string& dir, const std::string& model_type, DType dtype, Device device);

 private:
  // T5Block / UMT5Block, its modules named as the checkpoint's keys under encoder.block.N.layer.
  struct Block {
    Block(const nn::Weights& weights, const std::string& prefix, const T5Config& config, bool has_relative_bias);

    nn::RMSNorm attention_norm;       // 0.layer_norm
    nn::Attention self_attention;     // 0.SelfAttention.{q,k,v,o}: no biases, no 1/sqrt(d) scaling
    Tensor relative_attention_bias;   // 0.SelfAttention.relative_attention_bias [num_buckets, num_heads]
                                      // float32; undefined in T5 blocks after the first
    nn::RMSNorm ffn_norm;             // 1.layer_norm
    nn::Linear wi_0, wi_1;            // 1.DenseReluDense; wi_1 absent for a non-gated FFN (then wi_0 is `wi`)
    nn::Linear wo;                    // float32 when the compute dtype is F16
  };

  // [1, H, L, L] position bias from one block's bucket table.
  Tensor position_bias(const Block& block, const Tensor& bucket_ids) const;
  Tensor feed_forward(const Block& block, const Tensor& x) const;

  T5Config config_;
  DType dtype_;
  Device device_;
  Tensor shared_;  // [vocab_size, d_model], in host memory (rows gathered there, then uploaded)
  std::vector<Block> blocks_;
  nn::RMSNorm final_layer_norm_;
};

}  // namespace vgen
