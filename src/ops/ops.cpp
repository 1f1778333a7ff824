#include "ops/ops.h"

#include <cmath>

#include "core/error.h"
#include "ops/sage_attention.h"

namespace vgen {

const char* op_name(Op op) {
  static const char* const names[] = {
#define VGEN_OP_NAME(name, ret, params, args, kind) #name,
      VGEN_OP_LIST(VGEN_OP_NAME)
#undef VGEN_OP_NAME
  };
  return names[static_cast<size_t>(op)];
}

OpKind op_kind(Op op) {
  static const OpKind kinds[] = {
#define VGEN_OP_KIND(name, ret, params, args, kind) OpKind::kind,
      VGEN_OP_LIST(VGEN_OP_KIND)
#undef VGEN_OP_KIND
  };
  return kinds[static_cast<size_t>(op)];
}

const std::vector<Op>& all_ops() {
  static const std::vector<Op> ops = {
#define VGEN_OP_ITEM(name, ret, params, args, kind) Op::name,
      VGEN_OP_LIST(VGEN_OP_ITEM)
#undef VGEN_OP_ITEM
  };
  return ops;
}

bool Backend::supports(Op, DType dtype) const {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16;
}

void Backend::not_implemented(Op op) const { fail("op '{}' is not implemented by the {} backend", op_name(op), name()); }

// A Primitive's default says it is missing; Composites are defined below.
#define VGEN_OP_MISSING_Primitive(name, ret, params, args) \
  ret Backend::name params { not_implemented(Op::name); }
#define VGEN_OP_MISSING_Composite(name, ret, params, args)
#define VGEN_OP_MISSING(name, ret, params, args, kind) VGEN_OP_MISSING_##kind(name, ret, params, args)
VGEN_OP_LIST(VGEN_OP_MISSING)
#undef VGEN_OP_MISSING
#undef VGEN_OP_MISSING_Primitive
#undef VGEN_OP_MISSING_Composite

// Every runtime a provider makes is a Backend (the backends register them: backends/*).
Backend& backend_for(Device device) { return static_cast<Backend&>(ExecutionContext::current().runtime(device)); }
bool has_backend(DeviceType type) { return device_available(type); }
std::string backend_unavailable_reason(DeviceType type) { return device_unavailable_reason(type); }

std::unique_ptr<CapturedWork> Backend::capture(const std::function<void()>&) {
  fail("{}: this backend cannot record work for replay", name());
}

Tensor Backend::modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps) {
  Tensor n = ops::layer_norm(x.to(DType::F32), {}, {}, eps);
  n = ops::add(ops::mul(n, ops::add_scalar(scale, 1.0f)), shift);
  return n.to(x.dtype());
}

Tensor Backend::gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate) {
  return ops::add(x.to(DType::F32), ops::mul(y.to(DType::F32), gate)).to(x.dtype());
}

ResidualNorm Backend::residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& gate,
                                          const LayerNormParams& n) {
  const Tensor r = gate.defined() ? ops::gated_residual(x, y, gate) : ops::add(x, y);
  if (n.scale.defined()) return {r, ops::modulated_layer_norm(r, n.scale, n.shift, n.eps)};
  return {r, ops::layer_norm(r, n.weight, n.bias, n.eps)};
}

ResidualNorm Backend::residual_channel_rms_norm(const Tensor& x, const Tensor& y, const Tensor& gamma,
                                                const Tensor& bias, Activation act, const Tensor& residual,
                                                const Tensor& out, const Tensor& tail) {
  Tensor r = ops::add(x, y);
  if (residual.defined()) {
    Tensor(residual).copy_(r);
    r = residual;
  }
  return {r, ops::channel_rms_norm(r, gamma, bias, act, out, tail)};
}

Tensor Backend::rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos, const Tensor& sin) {
  const Shape shape = x.shape();
  // weight [D]: each head normalized on its own (FLUX's norm_q / norm_k).
  if (weight.numel() != shape[2] * shape[3]) return ops::rope(ops::rms_norm(x, weight, eps), cos, sin);
  const Tensor flat = x.reshape({shape[0], shape[1], shape[2] * shape[3]});
  return ops::rope(ops::rms_norm(flat, weight, eps).view(shape), cos, sin);
}

namespace ops {
namespace {

// The backend of x's device in the bound context, after checking it runs `id` on x's dtype.
Backend& on(const Tensor& x, Op id, const char* op) {
  VGEN_CHECK(x.defined(), "{}: undefined input tensor", op);
  Backend& b = backend_for(x.device());
  if (!b.supports(id, x.dtype()))
    fail("{}: {} is not supported by the {} backend for {} inputs", op, op_name(id), b.name(), dtype_name(x.dtype()));
  return b;
}

void same_device(const Tensor& a, const Tensor& b, const char* op) {
  if (b.defined() && a.device() != b.device())
    fail("{}: inputs on different devices ({} and {})", op, a.device().str(), b.device().str());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { same_device(a, b, "add"); return on(a, Op::binary, "add").binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { same_device(a, b, "sub"); return on(a, Op::binary, "sub").binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { same_device(a, b, "mul"); return on(a, Op::binary, "mul").binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { same_device(a, b, "div"); return on(a, Op::binary, "div").binary(BinaryOp::Div, a, b); }
Tensor scale(const Tensor& x, float s) { return on(x, Op::unary, "scale").unary(UnaryOp::Scale, x, s, 0.0f); }
Tensor add_scalar(const Tensor& x, float s) { return on(x, Op::unary, "add_scalar").unary(UnaryOp::AddScalar, x, s, 0.0f); }
Tensor clamp(const Tensor& x, float lo, float hi) { return on(x, Op::unary, "clamp").unary(UnaryOp::Clamp, x, lo, hi); }
Tensor silu(const Tensor& x) { return on(x, Op::unary, "silu").unary(UnaryOp::Silu, x, 0, 0); }
Tensor gelu_tanh(const Tensor& x) { return on(x, Op::unary, "gelu_tanh").unary(UnaryOp::GeluTanh, x, 0, 0); }
Tensor gelu(const Tensor& x) { return on(x, Op::unary, "gelu").unary(UnaryOp::Gelu, x, 0, 0); }
Tensor exp(const Tensor& x) { return on(x, Op::unary, "exp").unary(UnaryOp::Exp, x, 0, 0); }

Tensor axpby(float alpha, const Tensor& a, float beta, const Tensor& b) {
  same_device(a, b, "axpby");
  VGEN_CHECK(a.shape() == b.shape(), "axpby: shapes {} and {} differ", shape_str(a.shape()), shape_str(b.shape()));
  return on(a, Op::axpby, "axpby").axpby(alpha, a, beta, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) {
  same_device(x, weight, "linear");
  same_device(x, bias, "linear");
  VGEN_CHECK(weight.dim() == 2 && x.size(-1) == weight.size(1), "linear: input {} does not match weight {}",
             x.str(), weight.str());
  VGEN_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
             "linear: bias {} does not match weight {}", bias.str(), weight.str());
  return on(x, Op::linear, "linear").linear(x, weight, bias, act);
}

QuantizedActivation quantize_fp8(const Tensor& x, QuantFormat format, const Tensor& input_scale) {
  VGEN_CHECK(format != QuantFormat::Nvfp4, "quantize_fp8: {} is not an fp8 format", quant_format_name(format));
  VGEN_CHECK(x.defined() && x.dim() >= 1, "quantize_fp8: needs an input [..., K]");
  same_device(x, input_scale, "quantize_fp8");
  VGEN_CHECK(!input_scale.defined() || (format == QuantFormat::Fp8PerTensor && input_scale.numel() == 1 &&
                                        input_scale.dtype() == DType::F32),
             "quantize_fp8: a static input scale is one float32 value for per-tensor fp8, got {} for {}",
             input_scale.str(), quant_format_name(format));
  return on(x, Op::quantize_fp8, "quantize_fp8").quantize_fp8(x, format, input_scale);
}

Tensor quantized_linear(const Tensor& x, const QuantizedWeight& weight, const Tensor& bias, Activation act) {
  VGEN_CHECK(weight.defined(), "quantized_linear: undefined weight");
  same_device(x, weight.data, "quantized_linear");
  same_device(x, bias, "quantized_linear");
  VGEN_CHECK(x.dim() >= 1 && x.size(-1) == weight.in_features, "quantized_linear: input {} does not match a {} weight [{}, {}]",
             x.str(), quant_format_name(weight.format), weight.out_features, weight.in_features);
  VGEN_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.out_features),
             "quantized_linear: bias {} does not match {} output features", bias.str(), weight.out_features);
  return on(x, Op::quantized_linear, "quantized_linear").quantized_linear(x, weight, bias, act);
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  same_device(a, b, "matmul");
  VGEN_CHECK(a.dim() >= 2 && b.dim() >= 2 && a.size(-1) == b.size(-2), "matmul: {} x {}", a.str(), b.str());
  return on(a, Op::matmul, "matmul").matmul(a, b);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  VGEN_CHECK(!weight.defined() || weight.numel() == x.size(-1), "layer_norm: weight {} for input {}", weight.str(), x.str());
  VGEN_CHECK(!bias.defined() || bias.numel() == x.size(-1), "layer_norm: bias {} for input {}", bias.str(), x.str());
  return on(x, Op::layer_norm, "layer_norm").layer_norm(x, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  VGEN_CHECK(!weight.defined() || weight.numel() == x.size(-1), "rms_norm: weight {} for input {}", weight.str(), x.str());
  return on(x, Op::rms_norm, "rms_norm").rms_norm(x, weight, eps);
}

namespace {

// channel_rms_norm's arguments (and residual_channel_rms_norm's, `op` naming it): gamma and bias
// [C], act None or Silu, out x's shape and dtype on x's device, tail [B, C, n, H, W] of x's dtype
// and device for x [B, C, T, H, W], n <= T.
void check_channel_rms_args(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act,
                            const Tensor& out, const Tensor& tail) {
  VGEN_CHECK(x.dim() >= 2 && gamma.numel() == x.size(1), "{}: gamma {} for input {}", op, gamma.str(), x.str());
  VGEN_CHECK(!bias.defined() || bias.numel() == x.size(1), "{}: bias {} for input {}", op, bias.str(), x.str());
  VGEN_CHECK(act == Activation::None || act == Activation::Silu, "{}: only SiLU (or nothing) may follow", op);
  if (out.defined()) {
    same_device(x, out, op);
    VGEN_CHECK(out.shape() == x.shape() && out.dtype() == x.dtype(), "{}: output {} for input {}", op, out.str(),
               x.str());
  }
  if (!tail.defined()) return;
  same_device(x, tail, op);
  VGEN_CHECK(x.dim() == 5 && tail.dim() == 5 && tail.dtype() == x.dtype() && tail.size(0) == x.size(0) &&
                 tail.size(1) == x.size(1) && tail.size(2) <= x.size(2) && tail.size(3) == x.size(3) &&
                 tail.size(4) == x.size(4),
             "{}: tail {} for input {} (its last frames)", op, tail.str(), x.str());
}

}  // namespace

Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act, const Tensor& out,
                        const Tensor& tail) {
  check_channel_rms_args("channel_rms_norm", x, gamma, bias, act, out, tail);
  return on(x, Op::channel_rms_norm, "channel_rms_norm").channel_rms_norm(x, gamma, bias, act, out, tail);
}

Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                  Activation act) {
  same_device(x, weight, "group_norm");
  same_device(x, bias, "group_norm");
  VGEN_CHECK(x.defined() && x.dim() >= 2, "group_norm: input {} must be [N, C, *spatial]", x.str());
  VGEN_CHECK(groups > 0 && x.size(1) % groups == 0, "group_norm: {} channels of input {} do not split into {} groups",
             x.size(1), x.str(), groups);
  VGEN_CHECK(!weight.defined() || (weight.dim() == 1 && weight.size(0) == x.size(1)),
             "group_norm: weight {} must be [{}] for input {}", weight.str(), x.size(1), x.str());
  VGEN_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == x.size(1)),
             "group_norm: bias {} must be [{}] for input {}", bias.str(), x.size(1), x.str());
  VGEN_CHECK(eps >= 0.0f, "group_norm: eps {} is negative", eps);
  VGEN_CHECK(act == Activation::None || act == Activation::Silu, "group_norm: only SiLU (or nothing) may follow");
  return on(x, Op::group_norm, "group_norm").group_norm(x, weight, bias, groups, eps, act);
}

Tensor softmax(const Tensor& x) { return on(x, Op::softmax, "softmax").softmax(x); }

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) {
  VGEN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q {}, k {}, v {} must be [B, H, S, D]",
             q.str(), k.str(), v.str());
  VGEN_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                 k.shape() == v.shape(),
             "attention: q {}, k {}, v {} do not agree", q.str(), k.str(), v.str());
  return on(q, Op::attention, "attention").attention(q, k, v, bias, scale);
}

AttentionWithLse attention_lse(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  VGEN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention_lse: q {}, k {}, v {} must be [B, H, S, D]",
             q.str(), k.str(), v.str());
  VGEN_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                 k.shape() == v.shape() && q.device() == k.device() && k.device() == v.device(),
             "attention_lse: q {}, k {}, v {} do not agree", q.str(), k.str(), v.str());
  AttentionWithLse r;
  r.lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, q.device());
  r.out = on(q, Op::attention_lse, "attention_lse").attention_lse(q, k, v, scale, r.lse);
  return r;
}

Tensor sage_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  const std::string why = sage::rejects(q, k, v, {});
  VGEN_CHECK(why.empty(), "sage_attention: q {}, k {}, v {}: {}", q.str(), k.str(), v.str(), why);
  VGEN_CHECK(q.device() == k.device() && k.device() == v.device(), "sage_attention: q {}, k {}, v {} are on different devices",
             q.str(), k.str(), v.str());
  if (scale < 0) scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  return on(q, Op::sage_attention, "sage_attention").sage_attention(q, k, v, scale);
}

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  VGEN_CHECK(x.dim() == 4 && cos.dim() == 2 && cos.size(0) == x.size(1) && cos.size(1) == x.size(3) &&
                 sin.shape() == cos.shape() && x.size(3) % 2 == 0,
             "rope: x {} with cos {} sin {}", x.str(), cos.str(), sin.str());
  return on(x, Op::rope, "rope").rope(x, cos, sin);
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  VGEN_CHECK(ids.dtype() == DType::I64 && table.dim() == 2, "embedding: ids {} table {}", ids.str(), table.str());
  return on(table, Op::embedding, "embedding").embedding(ids, table);
}

Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params,
              const Tensor& residual) {
  VGEN_CHECK(x.dim() == 5 && weight.dim() == 5 && x.size(1) == weight.size(1),
             "conv3d: input {} does not match weight {}", x.str(), weight.str());
  VGEN_CHECK(!bias.defined() || bias.numel() == weight.size(0), "conv3d: bias {} for weight {}", bias.str(), weight.str());
  VGEN_CHECK(params.time_padding_before >= -1, "conv3d: time_padding_before {} is negative",
             params.time_padding_before);
  Shape out{x.size(0), weight.size(0), 0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    const int64_t before = i == 0 && params.time_padding_before >= 0 ? params.time_padding_before : params.padding[i];
    VGEN_CHECK(params.stride[i] > 0 && params.padding[i] >= 0, "conv3d: stride {} / padding {} in dim {}",
               params.stride[i], params.padding[i], i);
    const int64_t span = x.size(2 + i) + before + params.padding[i] - weight.size(2 + i);
    VGEN_CHECK(span >= 0, "conv3d: input {} smaller than kernel {}", x.str(), weight.str());
    out[2 + i] = span / params.stride[i] + 1;
  }
  if (residual.defined()) {
    VGEN_CHECK(residual.shape() == out && residual.dtype() == x.dtype(),
               "conv3d: residual {} for an output {} of {}", residual.str(), shape_str(out), dtype_name(x.dtype()));
    same_device(x, residual, "conv3d");
  }
  return on(x, Op::conv3d, "conv3d").conv3d(x, weight, bias, params, residual);
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  VGEN_CHECK(!tensors.empty(), "cat of no tensors");
  const Tensor& first = tensors[0];
  dim = wrap_dim(dim, first.dim());
  Shape shape = first.shape();
  shape[dim] = 0;
  for (const Tensor& t : tensors) {
    VGEN_CHECK(t.dim() == first.dim(), "cat: {} and {} differ in rank", first.str(), t.str());
    for (int64_t i = 0; i < t.dim(); ++i) {
      VGEN_CHECK(i == dim || t.size(i) == first.size(i), "cat along {}: {} and {} differ", dim, first.str(), t.str());
    }
    same_device(first, t, "cat");
    shape[dim] += t.size(dim);
  }
  // Channels-last 3-D when any piece is (the Wan VAE's cached frames + a new chunk).
  const Tensor* like = &first;
  for (const Tensor& t : tensors) {
    if (t.prefers_channels_last_3d()) {
      like = &t;
      break;
    }
  }
  Tensor out = Tensor::empty_like_format(*like, shape, first.dtype());
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    if (t.size(dim) == 0) continue;
    out.narrow(dim, offset, t.size(dim)).copy_(t);
    offset += t.size(dim);
  }
  return out;
}

Tensor pad(const Tensor& x, int64_t dim, int64_t before, int64_t after) {
  dim = wrap_dim(dim, x.dim());
  Shape shape = x.shape();
  shape[dim] += before + after;
  // In x's memory format: a channels-last 3-D feature map stays so.
  const Tensor out = Tensor::zeros_like_format(x, shape, x.dtype());
  out.narrow(dim, before, x.size(dim)).copy_(x);
  return out;
}

Tensor modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps) {
  same_device(x, scale, "modulated_layer_norm");
  same_device(x, shift, "modulated_layer_norm");
  VGEN_CHECK(x.dim() == 3 && scale.dim() == 3 && shift.shape() == scale.shape() && scale.dtype() == DType::F32 &&
                 scale.size(2) == x.size(2) && (scale.size(0) == x.size(0) || scale.size(0) == 1) &&
                 (scale.size(1) == x.size(1) || scale.size(1) == 1),
             "modulated_layer_norm: x {} with scale {} shift {}", x.str(), scale.str(), shift.str());
  return on(x, Op::modulated_layer_norm, "modulated_layer_norm").modulated_layer_norm(x, scale, shift, eps);
}

Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate) {
  same_device(x, y, "gated_residual");
  same_device(x, gate, "gated_residual");
  VGEN_CHECK(x.dim() == 3 && y.shape() == x.shape() && y.dtype() == x.dtype() && gate.dim() == 3 &&
                 gate.dtype() == DType::F32 && gate.size(2) == x.size(2) &&
                 (gate.size(0) == x.size(0) || gate.size(0) == 1) && (gate.size(1) == x.size(1) || gate.size(1) == 1),
             "gated_residual: x {} y {} gate {}", x.str(), y.str(), gate.str());
  return on(x, Op::gated_residual, "gated_residual").gated_residual(x, y, gate);
}

ResidualNorm residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& gate, const LayerNormParams& n) {
  const char* op = "residual_layer_norm";
  for (const Tensor* t : {&y, &gate, &n.weight, &n.bias, &n.scale, &n.shift})
    if (t->defined()) same_device(x, *t, op);
  VGEN_CHECK(x.dim() == 3 && y.shape() == x.shape() && y.dtype() == x.dtype(), "{}: x {} and y {} differ", op, x.str(),
             y.str());
  const int64_t D = x.size(2);
  // A [B or 1, S or 1, D] float32 row tensor: the gate, a scale or a shift.
  auto rows_of_x = [&](const Tensor& t) {
    return t.dim() == 3 && t.dtype() == DType::F32 && t.size(2) == D && (t.size(0) == x.size(0) || t.size(0) == 1) &&
           (t.size(1) == x.size(1) || t.size(1) == 1);
  };
  VGEN_CHECK(!gate.defined() || rows_of_x(gate), "{}: gate {} for x {}", op, gate.str(), x.str());
  if (n.scale.defined()) {
    VGEN_CHECK(rows_of_x(n.scale) && n.shift.shape() == n.scale.shape() && n.shift.dtype() == DType::F32 &&
                   !n.weight.defined() && !n.bias.defined(),
               "{}: modulation scale {} shift {} (no weight or bias with them) for x {}", op, n.scale.str(),
               n.shift.str(), x.str());
  } else {
    VGEN_CHECK(!n.shift.defined(), "{}: a shift {} without a scale", op, n.shift.str());
    VGEN_CHECK(!n.weight.defined() || n.weight.numel() == D, "{}: weight {} for x {}", op, n.weight.str(), x.str());
    VGEN_CHECK(!n.bias.defined() || n.bias.numel() == D, "{}: bias {} for x {}", op, n.bias.str(), x.str());
  }
  return on(x, Op::residual_layer_norm, op).residual_layer_norm(x, y, gate, n);
}

ResidualNorm residual_channel_rms_norm(const Tensor& x, const Tensor& y, const Tensor& gamma, const Tensor& bias,
                                       Activation act, const Tensor& residual, const Tensor& out, const Tensor& tail) {
  const char* op = "residual_channel_rms_norm";
  for (const Tensor* t : {&y, &gamma, &bias, &residual})
    if (t->defined()) same_device(x, *t, op);
  VGEN_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "{}: x {} and y {} differ", op, x.str(), y.str());
  VGEN_CHECK(!residual.defined() || (residual.shape() == x.shape() && residual.dtype() == x.dtype()),
             "{}: residual {} for x {}", op, residual.str(), x.str());
  check_channel_rms_args(op, x, gamma, bias, act, out, tail);
  return on(x, Op::residual_channel_rms_norm, op).residual_channel_rms_norm(x, y, gamma, bias, act, residual, out,
                                                                            tail);
}

Tensor rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos, const Tensor& sin) {
  same_device(x, weight, "rms_norm_rope");
  VGEN_CHECK(x.dim() == 4 && weight.dim() == 1 &&
                 (weight.size(0) == x.size(2) * x.size(3) || weight.size(0) == x.size(3)) && cos.dim() == 2 &&
                 cos.size(0) == x.size(1) && cos.size(1) == x.size(3) && sin.shape() == cos.shape() &&
                 x.size(3) % 2 == 0,
             "rms_norm_rope: x {} weight {} cos {} sin {}", x.str(), weight.str(), cos.str(), sin.str());
  return on(x, Op::rms_norm_rope, "rms_norm_rope").rms_norm_rope(x, weight, eps, cos, sin);
}

void synchronize(Device device) { backend_for(device).synchronize(); }

std::unique_ptr<CapturedWork> capture(Device device, const std::function<void()>& work) {
  return backend_for(device).capture(work);
}

double sum_abs(const Tensor& x) { return on(x, Op::sum_abs, "sum_abs").sum_abs(x); }
double mean_abs(const Tensor& x) { return x.numel() == 0 ? 0.0 : sum_abs(x) / static_cast<double>(x.numel()); }

}  // namespace ops
}  // namespace vgen
