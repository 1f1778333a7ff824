#include "nn/norm.h"

#include "ops/ops.h"

namespace vgen::nn {

LayerNorm::LayerNorm(const Weights& weights, const std::string& prefix, int64_t dim, float eps)
    : weight_(weights.load(prefix + ".weight", {dim})), bias_(weights.load(prefix + ".bias", {dim})), eps_(eps) {}

Tensor LayerNorm::forward(const Tensor& x) const {
  return weight_.defined() ? ops::layer_norm(x, weight_, bias_, eps_) : x;
}

ResidualNorm LayerNorm::forward_residual(const Tensor& x, const Tensor& y, const Tensor& gate) const {
  if (!weight_.defined()) {
    const Tensor r = gate.defined() ? ops::gated_residual(x, y, gate) : ops::add(x, y);
    return {r, r};
  }
  return ops::residual_layer_norm(x, y, gate, {weight_, bias_, {}, {}, eps_});
}

Tensor ModulatedLayerNorm::forward(const Tensor& x, const Tensor& scale, const Tensor& shift) const {
  return ops::modulated_layer_norm(x, scale, shift, eps_);
}

ResidualNorm ModulatedLayerNorm::forward_residual(const Tensor& x, const Tensor& y, const Tensor& gate,
                                                 const Tensor& scale, const Tensor& shift) const {
  return ops::residual_layer_norm(x, y, gate, {{}, {}, scale, shift, eps_});
}

RMSNorm::RMSNorm(const Weights& weights, const std::string& prefix, int64_t dim, float eps)
    : weight_(weights.load(prefix + ".weight", {dim})), eps_(eps) {}

Tensor RMSNorm::forward(const Tensor& x) const {
  Tensor y = ops::rms_norm(x, weight_, eps_);
  const bool half = weight_.dtype() == DType::BF16 || weight_.dtype() == DType::F16;
  return half && y.dtype() != weight_.dtype() ? y.to(weight_.dtype()) : y;
}

Tensor RMSNorm::forward_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) const {
  return ops::rms_norm_rope(x, weight_, eps_, cos, sin);
}

ChannelRMSNorm::ChannelRMSNorm(const Weights& weights, const std::string& prefix, int64_t dim, bool images)
    : gamma_(weights.load(prefix + ".gamma", images ? Shape{dim, 1, 1} : Shape{dim, 1, 1, 1})) {}

Tensor ChannelRMSNorm::forward(const Tensor& x, Activation act, const Tensor& out, const Tensor& tail) const {
  return ops::channel_rms_norm(x, gamma_, {}, act, out, tail);
}

ResidualNorm ChannelRMSNorm::forward_residual(const Tensor& x, const Tensor& y, Activation act,
                                              const Tensor& residual, const Tensor& out, const Tensor& tail) const {
  return ops::residual_channel_rms_norm(x, y, gamma_, {}, act, residual, out, tail);
}

}  // namespace vgen::nn
