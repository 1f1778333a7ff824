// nn::Linear, torch.nn.Linear: y = x W^T + b, with the activation of the next op fused in.
//
// The one place a model's projection weights are loaded, converted to the compute dtype and
// uploaded. Every constructor goes through one load path (a checkpoint module PREFIX ->
// PREFIX.weight, PREFIX.bias), where LoRA adapters are merged into the weight (nn::Weights::load,
// nn/lora.h) and where a quantized format will take its scales; fusing (several projections of
// one input as one GEMM) happens after that path, on the loaded (merged) weights.
#pragma once

#include <string>
#include <vector>

#include "nn/weights.h"
#include "ops/backend.h"

namespace vgen::nn {

class Linear {
 public:
  Linear() = default;  // no layer (forward fails)

  // PREFIX.weight [out_features, in_features] and, with `bias`, PREFIX.bias [out_features].
  Linear(const Weights& weights, const std::string& prefix, int64_t in_features, int64_t out_features,
         bool bias = true);

  // Projections of the same input concatenated along the output features, each
  // PREFIX.weight [out_features, in_features] (+ bias): diffusers' fuse_projections (to_q, to_k,
  // to_v -> to_qkv). One GEMM instead of several, the same numbers.
  static Linear fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                      int64_t out_features, bool bias = true);
  // The same with a width per projection (FLUX's single-stream to_q | to_k | to_v | proj_mlp).
  static Linear fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                      const std::vector<int64_t>& out_features, bool bias = true);

  // A convolution whose kernel covers its whole input window, applied as a linear map: a 1x1
  // convolution, or a patch embedding with kernel = stride. PREFIX.weight has the checkpoint's
  // shape `weight_shape` [out, in, k...] and is used as [out, in * k...], the layout of the
  // gathered patches (channel, then kernel positions).
  static Linear from_conv(const Weights& weights, const std::string& prefix, const Shape& weight_shape,
                          bool bias = true);

  // x [..., in_features] -> [..., out_features] in x's dtype; `act` applied to the result.
  Tensor forward(const Tensor& x, Activation act = Activation::None) const;

  bool defined() const { return weight_.defined(); }
  const std::string& name() const { return name_; }  // the checkpoint prefix ("blocks.0.attn1.to_q")
  int64_t in_features() const { return weight_.defined() ? weight_.size(1) : 0; }
  int64_t out_features() const { return weight_.defined() ? weight_.size(0) : 0; }
  const Tensor& weight() const { return weight_; }  // [out_features, in_features]
  const Tensor& bias() const { return bias_; }      // [out_features], or undefined

 private:
  Linear(std::string name, Tensor weight, Tensor bias);
  // The load path every constructor takes.
  static Linear load(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias);

  std::string name_;
  Tensor weight_, bias_;
};

}  // namespace vgen::nn
