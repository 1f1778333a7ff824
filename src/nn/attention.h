// nn::Attention, diffusers' Attention (and transformers' T5 self-attention): the q/k/v/out
// projections, an optional RMS qk-norm across heads, optional RoPE, and the one call of
// ops::attention every model makes. The attention kernel is the execution context's choice
// (its backend applies it); sequence parallelism will plug in here, around that call.
#pragma once

#include <optional>
#include <string>

#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen::nn {

// softmax(q k^T * scale + bias) v over q [B, Sq, heads, D], k/v [B, Sk, heads, D] (views of a
// fused projection are fine); bias broadcastable to [B, heads, Sq, Sk] or undefined.
// -> [B, Sq, heads * D], heads merged back as diffusers' `transpose(1, 2).flatten(2)`.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias,
                                    float scale);

// RoPE tables [S, head_dim] (float32, on the model's device) for the query/key tokens.
struct RotaryTables {
  Tensor cos, sin;
};

struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t heads = 0;
  int64_t dim_head = 0;
  std::optional<int64_t> cross_attention_dim;  // the context's width; nullopt: self-attention only
  bool bias = true;                            // the projections have biases
  bool qk_norm = false;                        // RMSNorm of q and k across heads ("rms_norm_across_heads")
  float eps = 1e-6f;                           // of the qk-norm
  std::optional<float> scale;                  // default 1 / sqrt(dim_head)
  // Wan2.1 image-to-video cross-attention: image tokens get their own key/value projections
  // (add_k_proj, add_v_proj from this width) and key norm (norm_added_k), attended separately
  // from the text with the same queries; the two results are summed before to_out.
  std::optional<int64_t> added_kv_proj_dim;
  // Module names under the prefix: diffusers' by default (T5 names them q, k, v, o).
  std::string to_q = "to_q", to_k = "to_k", to_v = "to_v", to_out = "to_out.0";
  std::string norm_q = "norm_q", norm_k = "norm_k";

  int64_t inner_dim() const { return heads * dim_head; }
};

class Attention {
 public:
  // Loads PREFIX.{to_q,to_k,to_v,to_out}[.weight/.bias] and, with qk_norm, PREFIX.{norm_q,norm_k}.weight.
  // Self-attention fuses to_q|to_k|to_v into one projection; cross-attention (with
  // cross_attention_dim) fuses to_k|to_v, the projections of the context.
  Attention(const Weights& weights, const std::string& prefix, const AttentionOptions& options);

  // Self-attention of x [B, S, query_dim]; `rope` rotates q and k after the norm; `bias` is
  // added to the scores. -> [B, S, query_dim] after to_out.
  Tensor forward(const Tensor& x, const RotaryTables* rope = nullptr, const Tensor& bias = {}) const;
  // Cross-attention: queries from x [B, S, query_dim], keys and values from context
  // [B, L, cross_attention_dim]. With added_kv_proj_dim, also from image_context
  // [B, L_img, added_kv_proj_dim] (undefined: text only).
  Tensor forward_cross(const Tensor& x, const Tensor& context, const Tensor& image_context = {}) const;

  const AttentionOptions& options() const { return options_; }

 private:
  // softmax(q k^T * scale + bias) v, heads merged: [B, Sq, inner], before to_out.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) const;

  AttentionOptions options_;
  std::string prefix_;
  Linear to_qkv_;  // self-attention
  Linear to_q_, to_kv_;  // cross-attention
  Linear to_added_kv_;  // add_k_proj | add_v_proj
  Linear to_out_;
  RMSNorm norm_q_, norm_k_, norm_added_k_;
};

}  // namespace vgen::nn
