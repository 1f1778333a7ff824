#include "nn/attention.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/ops.h"

namespace vgen::nn {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias,
                                    float scale) {
  VGEN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q {}, k {}, v {} must be [B, S, heads, D]",
             q.str(), k.str(), v.str());
  const int64_t B = q.size(0), S = q.size(1), inner = q.size(2) * q.size(3);
  const Tensor out = ops::attention(q.permute({0, 2, 1, 3}), k.permute({0, 2, 1, 3}), v.permute({0, 2, 1, 3}), bias,
                                    scale);
  return out.permute({0, 2, 1, 3}).reshape({B, S, inner});
}

namespace {

// Ulysses: [B, S, H, D] sequence shards -> [B, U * S, H / U, D], the group's whole sequence
// (in rank order) for this rank's H / U heads.
Tensor sequence_to_heads(const Tensor& t, Communicator& group) {
  const int64_t U = group.size(), B = t.size(0), S = t.size(1), H = t.size(2), D = t.size(3);
  const Tensor send = t.reshape({B, S, U, H / U, D}).permute({2, 0, 1, 3, 4});  // [U (head group), B, S, h, D]
  const Tensor got = group.all_to_all(send);                                      // [U (sequence shard), B, S, h, D]
  return got.permute({1, 0, 2, 3, 4}).reshape({B, U * S, H / U, D});
}

// The way back: [B, U * S, h * D] (heads merged) -> [B, S, U * h * D], all heads of this
// rank's shard.
Tensor heads_to_sequence(const Tensor& t, Communicator& group, int64_t h, int64_t D) {
  const int64_t U = group.size(), B = t.size(0), S = t.size(1) / U;
  const Tensor send = t.reshape({B, U, S, h, D}).permute({1, 0, 2, 3, 4});  // [U (sequence shard), B, S, h, D]
  const Tensor got = group.all_to_all(send);                                  // [U (head group), B, S, h, D]
  return got.permute({1, 2, 0, 3, 4}).reshape({B, S, U * h * D});
}

}  // namespace

Tensor ring_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Communicator& ring,
                      int64_t total_tokens) {
  VGEN_CHECK(q.dim() == 4 && k.dim() == 4 && k.shape() == v.shape() && q.size(2) == k.size(2),
             "ring_attention: q {}, k {}, v {} must be [B, S, heads, D]", q.str(), k.str(), v.str());
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), D = q.size(3), Sk = k.size(1);
  const int R = ring.size(), r = ring.rank();
  VGEN_CHECK(total_tokens > 0 && total_tokens <= R * Sk, "ring_attention: {} tokens in {} blocks of {}", total_tokens,
             R, Sk);
  const Tensor qh = q.permute({0, 2, 1, 3});
  // The running merge, per query row (no log needed): num = sum_j out_j * exp(lse_j - m),
  // den = sum_j exp(lse_j - m), m the largest lse so far; the result is num / den.
  Tensor num, den, m;
  Tensor kv = ops::cat({k.unsqueeze(0), v.unsqueeze(0)}, 0);  // [2, B, Sk, H, D]: one message per step
  for (int step = 0; step < R; ++step) {
    const int src = (r - step + R) % R;  // the rank whose block is at hand
    const int64_t valid = std::clamp<int64_t>(total_tokens - src * Sk, 0, Sk);
    if (valid > 0) {
      const Tensor kb = kv.select(0, 0).narrow(1, 0, valid).permute({0, 2, 1, 3});
      const Tensor vb = kv.select(0, 1).narrow(1, 0, valid).permute({0, 2, 1, 3});
      const ops::AttentionWithLse part = ops::attention_lse(qh, kb, vb, scale);
      const Tensor out = part.out.to(DType::F32), lse = part.lse.unsqueeze(3);  // [B, H, Sq, D], [B, H, Sq, 1]
      if (!num.defined()) {
        num = out;
        den = Tensor::full(lse.shape(), 1.0f, DType::F32, lse.device());
        m = lse;
      } else {
        const Tensor m_new = ops::add(lse, ops::clamp(ops::sub(m, lse), 0.0f, INFINITY));  // max(m, lse)
        const Tensor keep = ops::exp(ops::sub(m, m_new)), w = ops::exp(ops::sub(lse, m_new));
        num = ops::add(ops::mul(num, keep), ops::mul(out, w));
        den = ops::add(ops::mul(den, keep), w);
        m = m_new;
      }
    }
    if (step + 1 < R) kv = ring.send_recv(kv, (r + 1) % R, (r - 1 + R) % R);
  }
  const Tensor out = ops::div(num, den).to(q.dtype());  // [B, H, Sq, D]
  return out.permute({0, 2, 1, 3}).reshape({B, Sq, H * D});
}

Attention::Attention(const Weights& weights, const std::string& prefix, const AttentionOptions& o)
    : options_(o), prefix_(prefix) {
  VGEN_CHECK(o.query_dim > 0 && o.heads > 0 && o.dim_head > 0, "nn::Attention '{}': query_dim {}, heads {}, dim_head {}",
             prefix, o.query_dim, o.heads, o.dim_head);
  const int64_t inner = o.inner_dim();
  const std::string p = prefix + ".";
  if (o.cross_attention_dim) {
    to_q_ = Linear(weights, p + o.to_q, o.query_dim, inner, o.bias);
    to_kv_ = Linear::fused(weights, {p + o.to_k, p + o.to_v}, *o.cross_attention_dim, inner, o.bias);
  } else {
    to_qkv_ = Linear::fused(weights, {p + o.to_q, p + o.to_k, p + o.to_v}, o.query_dim, inner, o.bias);
  }
  to_out_ = Linear(weights, p + o.to_out, inner, o.query_dim, o.bias);
  if (o.qk_norm) {
    norm_q_ = RMSNorm(weights, p + o.norm_q, inner, o.eps);
    norm_k_ = RMSNorm(weights, p + o.norm_k, inner, o.eps);
  }
  if (o.added_kv_proj_dim) {
    VGEN_CHECK(o.cross_attention_dim, "nn::Attention '{}': added_kv_proj_dim needs a cross-attention", prefix);
    to_added_kv_ = Linear::fused(weights, {p + "add_k_proj", p + "add_v_proj"}, *o.added_kv_proj_dim, inner, true);
    norm_added_k_ = RMSNorm(weights, p + "norm_added_k", inner, o.eps);
  }
}

float Attention::scale() const {
  return options_.scale.value_or(static_cast<float>(1.0 / std::sqrt(static_cast<double>(options_.dim_head))));
}

Tensor Attention::attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) const {
  return scaled_dot_product_attention(q, k, v, bias, scale());
}

Tensor Attention::attend_parallel(const Tensor& q, const Tensor& k, const Tensor& v, const SequenceParallel& sp) const {
  const ParallelLayout& layout = *sp.layout;
  const int64_t U = layout.sizes().ulysses_size, H = options_.heads, D = options_.dim_head, S = q.size(1);
  VGEN_CHECK(H % U == 0, "nn::Attention '{}': {} heads do not divide over ulysses_size {}", prefix_, H, U);
  VGEN_CHECK(sp.total_tokens > 0 && sp.total_tokens <= S * layout.sizes().sequence_size(),
             "nn::Attention '{}': {} tokens do not fit {} shards of {}", prefix_, sp.total_tokens,
             layout.sizes().sequence_size(), S);
  Tensor qh = q, kh = k, vh = v;
  if (U > 1) {
    qh = sequence_to_heads(q, layout.ulysses());
    kh = sequence_to_heads(k, layout.ulysses());
    vh = sequence_to_heads(v, layout.ulysses());
  }
  Tensor out;  // [B, U * S, H / U * D]
  if (layout.sizes().ring_size > 1) {
    out = ring_attention(qh, kh, vh, scale(), layout.ring(), sp.total_tokens);
  } else {
    // The whole sequence is here: leave the padding out of the keys (its queries are dropped later).
    const int64_t valid = std::min<int64_t>(sp.total_tokens, kh.size(1));
    out = attend(qh, kh.narrow(1, 0, valid), vh.narrow(1, 0, valid), {});
  }
  return U > 1 ? heads_to_sequence(out, layout.ulysses(), H / U, D) : out;
}

Tensor Attention::forward(const Tensor& x, const RotaryTables* rope, const Tensor& bias,
                          const SequenceParallel* sp) const {
  VGEN_CHECK(to_qkv_.defined(), "nn::Attention '{}' is a cross-attention: call forward_cross", prefix_);
  VGEN_CHECK(x.dim() == 3, "nn::Attention '{}': x {} must be [batch, tokens, {}]", prefix_, x.str(), options_.query_dim);
  const int64_t B = x.size(0), S = x.size(1), H = options_.heads, D = options_.dim_head;
  // [B, S, (q|k|v), heads, D]: q, k and v are read straight out of the fused projection.
  const Tensor qkv = to_qkv_.forward(x).view({B, S, 3, H, D});
  Tensor q = qkv.select(2, 0), k = qkv.select(2, 1);
  const Tensor v = qkv.select(2, 2);
  if (options_.qk_norm && rope) {
    q = norm_q_.forward_rope(q, rope->cos, rope->sin);  // the norm across heads and the rotation, one op each
    k = norm_k_.forward_rope(k, rope->cos, rope->sin);
  } else {
    if (options_.qk_norm) {
      q = norm_q_.forward(q.reshape({B, S, H * D})).view({B, S, H, D});
      k = norm_k_.forward(k.reshape({B, S, H * D})).view({B, S, H, D});
    }
    if (rope) {
      q = ops::rope(q, rope->cos, rope->sin);
      k = ops::rope(k, rope->cos, rope->sin);
    }
  }
  if (sp && sp->active()) {
    VGEN_CHECK(!bias.defined(), "nn::Attention '{}': no attention bias with sequence parallelism", prefix_);
    return to_out_.forward(attend_parallel(q, k, v, *sp));
  }
  return to_out_.forward(attend(q, k, v, bias));
}

Tensor Attention::forward_cross(const Tensor& x, const Tensor& context, const Tensor& image_context) const {
  VGEN_CHECK(to_kv_.defined(), "nn::Attention '{}' is a self-attention: call forward", prefix_);
  VGEN_CHECK(x.dim() == 3 && context.dim() == 3 && context.size(0) == x.size(0),
             "nn::Attention '{}': x {} and context {} must be [batch, tokens, features] of one batch", prefix_,
             x.str(), context.str());
  VGEN_CHECK(!image_context.defined() || to_added_kv_.defined(),
             "nn::Attention '{}' has no image projections (added_kv_proj_dim) for an image context", prefix_);
  const int64_t B = x.size(0), S = x.size(1), L = context.size(1), H = options_.heads, D = options_.dim_head;
  const int64_t inner = options_.inner_dim();
  Tensor q = to_q_.forward(x);
  const Tensor kv = to_kv_.forward(context);
  Tensor k = kv.narrow(2, 0, inner);
  if (options_.qk_norm) {
    q = norm_q_.forward(q);
    k = norm_k_.forward(k);
  }
  q = q.view({B, S, H, D});
  Tensor out = attend(q, k.reshape({B, L, H, D}), kv.narrow(2, inner, inner).reshape({B, L, H, D}), {});
  if (image_context.defined()) {
    VGEN_CHECK(image_context.dim() == 3 && image_context.size(0) == B,
               "nn::Attention '{}': image context {} must be [{}, tokens, {}]", prefix_, image_context.str(), B,
               *options_.added_kv_proj_dim);
    // diffusers' WanAttnProcessor: the image keys get norm_added_k, the queries are the
    // normed ones of the text attention; hidden_states + hidden_states_img.
    const int64_t Li = image_context.size(1);
    const Tensor kv_img = to_added_kv_.forward(image_context);
    const Tensor k_img = norm_added_k_.forward(kv_img.narrow(2, 0, inner));
    const Tensor out_img = attend(q, k_img.reshape({B, Li, H, D}), kv_img.narrow(2, inner, inner).reshape({B, Li, H, D}), {});
    out = ops::add(out, out_img);
  }
  return to_out_.forward(out);
}

}  // namespace vgen::nn
