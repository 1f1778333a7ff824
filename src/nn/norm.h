// Normalization layers. Statistics are float32 whatever the activations' dtype (the fused
// ops compute them so); each class says what dtype its result has, as its reference does.
#pragma once

#include <string>

#include "nn/weights.h"
#include "ops/backend.h"

namespace vgen::nn {

// torch.nn.LayerNorm(dim, eps) with weight and bias (diffusers' FP32LayerNorm when loaded
// as float32): float32 statistics, the result rounded once to x's dtype.
class LayerNorm {
 public:
  LayerNorm() = default;  // nn.Identity: a norm the config turns off; forward returns x
  // PREFIX.weight and PREFIX.bias [dim].
  LayerNorm(const Weights& weights, const std::string& prefix, int64_t dim, float eps);

  bool defined() const { return weight_.defined(); }
  Tensor forward(const Tensor& x) const;
  // The residual x + y, or x + y * gate (gate [B, 1 or S, dim] float32; see ops::gated_residual),
  // and forward() of it, in one op: {residual, normed}. As nn.Identity, normed is the residual.
  ResidualNorm forward_residual(const Tensor& x, const Tensor& y, const Tensor& gate = {}) const;

 private:
  Tensor weight_, bias_;
  float eps_ = 0.0f;
};

// LayerNorm without affine parameters followed by adaLN modulation, fused:
// (LayerNorm(x.float()) * (1 + scale) + shift).type_as(x) (Wan/DiT norm1, norm3, norm_out).
class ModulatedLayerNorm {
 public:
  explicit ModulatedLayerNorm(float eps = 1e-6f) : eps_(eps) {}
  // scale, shift [B, 1 or S, dim] float32.
  Tensor forward(const Tensor& x, const Tensor& scale, const Tensor& shift) const;
  // The residual x + y, or x + y * gate, and forward() of it, in one op: {residual, normed}.
  ResidualNorm forward_residual(const Tensor& x, const Tensor& y, const Tensor& gate, const Tensor& scale,
                                const Tensor& shift) const;

 private:
  float eps_;
};

// RMSNorm over the last dim with a weight (diffusers' RMSNorm, transformers' T5LayerNorm):
// x * rsqrt(mean(x^2) + eps) * weight with float32 statistics. As both references do, the
// result takes the weight's dtype when that is 16-bit, else x's.
class RMSNorm {
 public:
  RMSNorm() = default;
  // PREFIX.weight [dim].
  RMSNorm(const Weights& weights, const std::string& prefix, int64_t dim, float eps);

  Tensor forward(const Tensor& x) const;
  // rope(forward(x), cos, sin) in one op, x [B, S, heads, D] (rows may be strided, as a slice
  // of a fused QKV projection) normalized over heads * D = dim: Wan's qk-norm across heads.
  Tensor forward_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
  float eps_ = 0.0f;
};

// The Wan VAE's WanRMS_norm (bias=False): F.normalize over the channels (dim 1) * sqrt(C) *
// gamma, with the SiLU that usually follows fused in.
class ChannelRMSNorm {
 public:
  // PREFIX.gamma [dim, 1, 1, 1] for video ([dim, 1, 1] when `images`).
  ChannelRMSNorm(const Weights& weights, const std::string& prefix, int64_t dim, bool images = false);
  // act None or Silu; keeps a channels-last input's layout on the GPU. With `out` (x's shape,
  // e.g. frames of a larger buffer) the result is written there and out returned; with `tail`
  // ([B, C, n, H, W]) its last n frames are written there too (ops::channel_rms_norm).
  Tensor forward(const Tensor& x, Activation act = Activation::None, const Tensor& out = {},
                 const Tensor& tail = {}) const;
  // The skip connection x + y (written into `residual` when defined, which may be x) and
  // forward() of it, in one op: {residual, normed}.
  ResidualNorm forward_residual(const Tensor& x, const Tensor& y, Activation act, const Tensor& residual = {},
                                const Tensor& out = {}, const Tensor& tail = {}) const;

 private:
  Tensor gamma_;
};

}  // namespace vgen::nn
