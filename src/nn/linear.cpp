#include "nn/linear.h"

#include "core/error.h"
#include "nn/quant.h"
#include "ops/ops.h"

namespace vgen::nn {
namespace {

// The float weight a dynamic quantization starts from: read in float32 on the host with LoRA
// merged, rounded to the compute dtype as the unquantized layer would hold it, viewed [out, in].
Tensor dynamic_source(const Weights& weights, const std::string& name, const Shape& shape) {
  Tensor w = weights.on_host_f32().load(name, shape);
  if (weights.dtype() != DType::F32) w = w.to(weights.dtype()).to(DType::F32);
  const int64_t out = shape[0];
  return shape.size() > 2 ? w.view({out, w.numel() / out}) : w;
}

// A static (ModelOpt-exported) quantized weight PREFIX.weight + scales, checked, on `device`.
QuantizedWeight read_static(const Weights& weights, const std::string& prefix, QuantFormat format, int64_t N,
                            int64_t K) {
  const WeightStore& store = weights.store();
  if (weights.lora() && weights.lora()->touches(prefix + ".weight"))
    fail("{}: LoRA adapters cannot be merged into the pre-quantized weight '{}.weight' (quant_config.dynamic: "
         "false); use the unquantized checkpoint with dynamic: true",
         store.source(), prefix);
  auto get = [&](const char* suffix) { return store.contains(prefix + suffix) ? store.get(prefix + suffix) : Tensor(); };
  QuantizedWeight q;
  q.format = format;
  q.out_features = N;
  q.in_features = K;
  q.data = get(".weight");
  q.weight_scale = get(".weight_scale");
  if (format == QuantFormat::Nvfp4) q.weight_scale_2 = get(".weight_scale_2");
  if (format != QuantFormat::Fp8Block) q.input_scale = get(".input_scale");
  try {
    check_quantized_weight(q, prefix);
    if (format == QuantFormat::Fp8PerTensor && !q.input_scale.defined())
      fail("{}.input_scale: missing (a static FP8 checkpoint carries the activation scale: F32 [] or [1])", prefix);
  } catch (const Error& e) {
    fail("{}: {}", store.source(), e.what());
  }
  // Scalars as [1]; contiguous copies we own (not views of the mapping), on the device.
  for (Tensor* t : {&q.weight_scale_2, &q.input_scale})
    if (t->defined()) *t = t->reshape({1});
  if (format == QuantFormat::Fp8PerTensor) q.weight_scale = q.weight_scale.reshape({1});
  for (Tensor* t : {&q.data, &q.weight_scale, &q.weight_scale_2, &q.input_scale})
    if (t->defined()) *t = t->clone();
  if (format == QuantFormat::Nvfp4) q.input_scale = Tensor();  // checked, not used (W4A16)
  return q.to(weights.device());
}

float scalar(const Tensor& t) { return t.to(Device::cpu()).to(DType::F32).contiguous().data<float>()[0]; }

// Static parts fused exactly when their per-tensor scales agree (block scales: whole 128-row
// blocks); else nullopt.
bool can_concat(const std::vector<QuantizedWeight>& parts) {
  const QuantizedWeight& a = parts.front();
  for (const QuantizedWeight& p : parts) {
    switch (p.format) {
      case QuantFormat::Fp8PerTensor:
        if (scalar(p.weight_scale) != scalar(a.weight_scale) || scalar(p.input_scale) != scalar(a.input_scale))
          return false;
        break;
      case QuantFormat::Fp8Block:
        if (p.out_features % quant::kBlock != 0) return false;
        break;
      case QuantFormat::Nvfp4:
        if (scalar(p.weight_scale_2) != scalar(a.weight_scale_2)) return false;
        break;
    }
  }
  return true;
}

}  // namespace

Linear::Linear(std::string name, Tensor weight, Tensor bias)
    : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {}

bool Linear::quantizes(const Weights& weights, const std::vector<std::string>& prefixes) {
  const QuantConfig* q = weights.quant();
  if (!q) return false;
  for (const std::string& p : prefixes)
    if (quant_ignored(*q, p)) return false;
  return true;
}

Linear Linear::load(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias,
                    bool quantizable) {
  VGEN_CHECK(weight_shape.size() >= 2, "nn::Linear '{}': weight shape needs [out, in, ...], got {} dims", prefix,
             weight_shape.size());
  const int64_t out = weight_shape[0];
  // The weight first, then the bias (a mismatch error names the weight).
  if (quantizable && quantizes(weights, {prefix})) {
    const QuantFormat format = quant_format(weights.quant()->quant_algo);
    const int64_t in = shape_numel(weight_shape) / out;
    Linear l(prefix, Tensor(), Tensor());
    if (weights.quant()->dynamic)
      l.qweight_ = quantize_weight(dynamic_source(weights, prefix + ".weight", weight_shape), format, prefix)
                       .to(weights.device());
    else
      l.qweight_ = read_static(weights, prefix, format, out, in);
    l.qweight_.fast_accum = weights.quant()->fast_accum_on();
    if (bias) l.bias_ = weights.load(prefix + ".bias", {out});
    return l;
  }
  Tensor w = weights.load(prefix + ".weight", weight_shape);
  if (weight_shape.size() > 2) w = w.view({out, w.numel() / out});
  return Linear(prefix, std::move(w), bias ? weights.load(prefix + ".bias", {out}) : Tensor());
}

Linear::Linear(const Weights& weights, const std::string& prefix, int64_t in_features, int64_t out_features, bool bias)
    : Linear(load(weights, prefix, {out_features, in_features}, bias, true)) {}

Linear Linear::fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                     int64_t out_features, bool bias) {
  return fused(weights, prefixes, in_features, std::vector<int64_t>(prefixes.size(), out_features), bias);
}

Linear Linear::fused(const Weights& weights, const std::vector<std::string>& prefixes, int64_t in_features,
                     const std::vector<int64_t>& out_features, bool bias) {
  VGEN_CHECK(!prefixes.empty(), "nn::Linear::fused: no projections to fuse");
  VGEN_CHECK(out_features.size() == prefixes.size(), "nn::Linear::fused: {} widths for {} projections",
             out_features.size(), prefixes.size());
  std::string name;
  for (const std::string& prefix : prefixes) name += (name.empty() ? "" : "+") + prefix;
  const bool quantized = quantizes(weights, prefixes);
  std::vector<Tensor> ws, bs;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const std::string& prefix = prefixes[i];
    if (quantized && weights.quant()->dynamic)
      ws.push_back(dynamic_source(weights, prefix + ".weight", {out_features[i], in_features}));
    else if (!quantized)
      ws.push_back(weights.load(prefix + ".weight", {out_features[i], in_features}));
    if (bias) bs.push_back(weights.load(prefix + ".bias", {out_features[i]}));
  }
  Tensor b = bias ? ops::cat(bs, 0) : Tensor();
  if (!quantized) return Linear(name, ops::cat(ws, 0), std::move(b));

  const QuantFormat format = quant_format(weights.quant()->quant_algo);
  Linear l(name, Tensor(), std::move(b));
  if (weights.quant()->dynamic) {
    // One weight: the concatenation quantized as a whole (one scale for the fused GEMM).
    l.qweight_ = quantize_weight(ops::cat(ws, 0), format, name).to(weights.device());
    l.qweight_.fast_accum = weights.quant()->fast_accum_on();
    return l;
  }
  std::vector<QuantizedWeight> parts;
  for (size_t i = 0; i < prefixes.size(); ++i)
    parts.push_back(read_static(weights, prefixes[i], format, out_features[i], in_features).to(Device::cpu()));
  QuantizedWeight q;
  if (can_concat(parts)) {
    q = parts.front();
    q.out_features = 0;
    for (const int64_t width : out_features) q.out_features += width;
    std::vector<Tensor> data, scales;
    for (const QuantizedWeight& p : parts) {
      data.push_back(p.data);
      if (format != QuantFormat::Fp8PerTensor) scales.push_back(p.weight_scale);
    }
    q.data = ops::cat(data, 0);
    if (format != QuantFormat::Fp8PerTensor) q.weight_scale = ops::cat(scales, 0);
  } else {
    std::vector<Tensor> deq;
    for (const QuantizedWeight& p : parts) deq.push_back(dequantize_weight(p));
    q = quantize_weight(ops::cat(deq, 0), format, name);
    // The activation scale of a static FP8 checkpoint: the parts' largest (none clips).
    if (format == QuantFormat::Fp8PerTensor) {
      float s = 0.0f;
      for (const QuantizedWeight& p : parts) s = std::max(s, scalar(p.input_scale));
      q.input_scale = Tensor::from_vector({s}, {1});
    }
  }
  l.qweight_ = q.to(weights.device());
  l.qweight_.fast_accum = weights.quant()->fast_accum_on();
  return l;
}

Linear Linear::from_conv(const Weights& weights, const std::string& prefix, const Shape& weight_shape, bool bias) {
  return load(weights, prefix, weight_shape, bias, false);
}

int64_t Linear::in_features() const {
  if (qweight_.defined()) return qweight_.in_features;
  return weight_.defined() ? weight_.size(1) : 0;
}

int64_t Linear::out_features() const {
  if (qweight_.defined()) return qweight_.out_features;
  return weight_.defined() ? weight_.size(0) : 0;
}

std::string Linear::format() const {
  if (qweight_.defined())
    return std::string(quant_format_name(qweight_.format)) + (qweight_.fast_accum ? ", fast accumulation" : "");
  return weight_.defined() ? std::string(dtype_name(weight_.dtype())) : "undefined";
}

int64_t Linear::weight_bytes() const {
  if (qweight_.defined()) return qweight_.nbytes();
  return weight_.defined() ? static_cast<int64_t>(weight_.nbytes()) : 0;
}

Tensor Linear::forward(const Tensor& x, Activation act) const {
  VGEN_CHECK(defined(), "nn::Linear: forward on a layer that was never loaded");
  VGEN_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == in_features(),
             "nn::Linear '{}': input {} must end in {} features (weight [{}, {}] {})", name_, x.str(), in_features(),
             out_features(), in_features(), format());
  if (qweight_.defined()) return ops::quantized_linear(x, qweight_, bias_, act);
  return ops::linear(x, weight_, bias_, act);
}

}  // namespace vgen::nn
