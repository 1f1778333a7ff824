// nn::Linear, torch.nn.Linear: y = x W^T + b, with the activation of the next op fused in.
//
// The one place a model's projection weights are loaded, converted to the compute dtype and
// uploaded. Every constructor goes through one load path (a checkpoint module PREFIX ->
// PREFIX.weight, PREFIX.bias), where LoRA adapters are merged into the weight (nn::Weights::load,
// nn/lora.h) and where the weight is quantized or read quantized when the Weights carry a
// quant_config (nn/quant.h: after the LoRA merge); fusing (several projections of one input as
// one GEMM) happens after that path, on the loaded (merged) weights, and a quantized fused
// projection is quantized as one weight.
#pragma once

#include <string>
#include <vector>

#include "nn/weights.h"
#include "ops/quant.h"
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
  // gathered patches (channel, then kernel positions). Never quantized: the checkpoint's module
  // is a convolution, and ModelOpt's linear formats cover nn.Linear modules.
  static Linear from_conv(const Weights& weights, const std::string& prefix, const Shape& weight_shape,
                          bool bias = true);

  // x [..., in_features] -> [..., out_features] in x's dtype; `act` applied to the result.
  Tensor forward(const Tensor& x, Activation act = Activation::None) const;

  bool defined() const { return weight_.defined() || qweight_.defined(); }
  const std::string& name() const { return name_; }  // the checkpoint prefix ("blocks.0.attn1.to_q")
  int64_t in_features() const;
  int64_t out_features() const;
  // [out_features, in_features]; undefined when the layer is quantized (see quantized_weight()).
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }      // [out_features], or undefined
  bool quantized() const { return qweight_.defined(); }
  const QuantizedWeight& quantized_weight() const { return qweight_; }
  // The weight's format for reports: the dtype ("BF16") or the quantized format ("fp8 per-tensor",
  // with ", fast accumulation" under quant_config.fast_accum).
  std::string format() const;
  // Bytes of the weight (data and scales; the bias not counted).
  int64_t weight_bytes() const;

 private:
  Linear(std::string name, Tensor weight, Tensor bias);
  // The load path every constructor takes (quantizable: the Weights' quant_config applies).
  static Linear load(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias,
                     bool quantizable);
  // Whether `weights` quantize this layer (a quant_config not ignoring any of `prefixes`).
  static bool quantizes(const Weights& weights, const std::vector<std::string>& prefixes);

  std::string name_;
  Tensor weight_, bias_;
  QuantizedWeight qweight_;  // defined instead of weight_ for a quantized layer
};

}  // namespace vgen::nn
