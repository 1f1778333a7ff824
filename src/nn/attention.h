// nn::Attention, diffusers' Attention (and transformers' T5 self-attention): the q/k/v/out
// projections, an optional RMS qk-norm across heads, optional RoPE, and the one call of
// ops::attention every model makes. The attention kernel is the execution context's choice
// (its backend applies it). Sequence parallelism plugs in here, around that call: Ulysses
// (an all-to-all from sequence shards to head shards and back) and ring attention (key/value
// blocks passed around the ring, partial results merged by their log-sum-exp).
#pragma once

#include <optional>
#include <string>

#include "core/communicator.h"
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

// A self-attention over a token sequence split across the ranks of layout.sequence(): this
// rank holds tokens [sequence_rank * S, (sequence_rank + 1) * S) of a sequence of
// total_tokens padded to sequence_size * S (the padding at the end is never attended to).
// Ulysses needs the heads to divide ulysses_size. Ranks of one sequence group call together.
struct SequenceParallel {
  const ParallelLayout* layout = nullptr;
  int64_t total_tokens = 0;
  bool active() const { return layout != nullptr && layout->sizes().sequence_size() > 1; }
};

// Attention of local queries q [B, Sq, heads, D] to the keys/values of the whole sequence,
// held as blocks k/v [B, Sk, heads, D] one per rank of `ring` (block j holds global tokens
// [j * Sk, (j + 1) * Sk), of which those >= total_tokens are padding): each step attends to
// the block at hand and passes it on, and the partial results merge exactly through their
// log-sum-exp. -> [B, Sq, heads * D] (q's dtype; merged in float32).
Tensor ring_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Communicator& ring,
                      int64_t total_tokens);

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
  // added to the scores. -> [B, S, query_dim] after to_out. With an active `sp`, x (and rope)
  // are this rank's shard of the sequence and attention runs over the whole of it (no bias).
  Tensor forward(const Tensor& x, const RotaryTables* rope = nullptr, const Tensor& bias = {},
                 const SequenceParallel* sp = nullptr) const;
  // Cross-attention: queries from x [B, S, query_dim], keys and values from context
  // [B, L, cross_attention_dim]. With added_kv_proj_dim, also from image_context
  // [B, L_img, added_kv_proj_dim] (undefined: text only).
  Tensor forward_cross(const Tensor& x, const Tensor& context, const Tensor& image_context = {}) const;

  const AttentionOptions& options() const { return options_; }

 private:
  // softmax(q k^T * scale + bias) v, heads merged: [B, Sq, inner], before to_out.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) const;
  // The same over a sequence sharded as `sp` says.
  Tensor attend_parallel(const Tensor& q, const Tensor& k, const Tensor& v, const SequenceParallel& sp) const;
  float scale() const;

  AttentionOptions options_;
  std::string prefix_;
  Linear to_qkv_;  // self-attention
  Linear to_q_, to_kv_;  // cross-attention
  Linear to_added_kv_;  // add_k_proj | add_v_proj
  Linear to_out_;
  RMSNorm norm_q_, norm_k_, norm_added_k_;
};

}  // namespace vgen::nn
