#include "nn/linear.h"

#include "core/error.h"
#include "ops/ops.h"

namespace vgen::nn {

Linear::Linear(std::string name, Tensor weight, Tensor bias)
    : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {}

Linear Linear::load(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias) {
  VGEN_CHECK(weight_shape.size() >= 2, "nn::Linear '{}': weight shape needs [out, in, ...], got {} dims", prefix,
             weight_shape.size());
  Tensor w = weights.load(prefix + ".weight", weight_shape);
  const int64_t out = weight_shape[0];
  if (weight_shape.size() > 2) w = w.view({out, w.numel() / out});
  return Linear(prefix, std::move(w), bias ? weights.load(prefix + ".bias", {out}) : Tensor());
}

Linear::Linear(const Weights& weights, const std::string& prefix, int64_t in_features, int64_t out_features, bool bias)
    : Linear(load(weights, prefix, {out_features, in_features}, bias)) {}

Linear Linear::fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                     int64_t out_features, bool bias) {
  return fused(weights, prefixes, in_features, std::vector<int64_t>(prefixes.size(), out_features), bias);
}

Linear Linear::fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                     const std::vector<int64_t>& out_features, bool bias) {
  VGEN_CHECK(!prefixes.empty(), "nn::Linear::fused: no projections to fuse");
  VGEN_CHECK(out_features.size() == prefixes.size(), "nn::Linear::fused: {} widths for {} projections",
             out_features.size(), prefixes.size());
  std::vector<Tensor> ws, bs;
  std::string name;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const std::string& prefix = prefixes[i];
    Linear part = load(weights, prefix, {out_features[i], in_features}, bias);
    ws.push_back(part.weight_);
    bs.push_back(part.bias_);
    name += (name.empty() ? "" : "+") + prefix;
  }
  return Linear(name, ops::cat(ws, 0), bias ? ops::cat(bs, 0) : Tensor());
}

Linear Linear::from_conv(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias) {
  return load(weights, prefix, weight_shape, bias);
}

Tensor Linear::forward(const Tensor& x, Activation act) const {
  VGEN_CHECK(defined(), "nn::Linear: forward on a layer that was never loaded");
  VGEN_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == in_features(),
             "nn::Linear '{}': input {} must end in {} features (weight {})", name_, x.str(), in_features(),
             weight_.str());
  return ops::linear(x, weight_, bias_, act);
}

}  // namespace vgen::nn
