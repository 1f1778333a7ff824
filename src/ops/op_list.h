// The op list, declared once. Every op a backend implements is one line here:
//
//   X(name, return type, (parameters), (arguments), kind)
//
// kind is Primitive (each backend implements it; the CPU's is the reference) or Composite (the
// Backend base composes it from primitives, and that composition is the reference a backend's
// own fused version is checked against). From this list come the Backend virtuals
// (ops/backend.h), the Op enum and names, the profiler's forwarding (ops/profiling_backend.cpp)
// and the table-driven test's check that every op has a case on every backend
// (tests/ops/backend_ops_test.cpp). The user-facing wrappers in ops/ops.h validate their
// inputs and call these.
//
// Adding an op: one line here, its wrapper in ops.h/ops.cpp, a CPU implementation, the other
// backends' (or a supports() that says no), and its cases in backend_ops_test.cpp.
#pragma once

// clang-format off
#define VGEN_OP_LIST(X)                                                                                          \
  X(copy, void, (const Tensor& dst, const Tensor& src), (dst, src), Primitive)                                    \
  X(fill, void, (const Tensor& dst, float value), (dst, value), Primitive)                                        \
  X(binary, Tensor, (BinaryOp op, const Tensor& a, const Tensor& b), (op, a, b), Primitive)                       \
  X(unary, Tensor, (UnaryOp op, const Tensor& x, float alpha, float beta), (op, x, alpha, beta), Primitive)       \
  X(axpby, Tensor, (float alpha, const Tensor& a, float beta, const Tensor& b), (alpha, a, beta, b), Primitive)   \
  X(linear, Tensor, (const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act),                  \
    (x, weight, bias, act), Primitive)                                                                            \
  X(matmul, Tensor, (const Tensor& a, const Tensor& b), (a, b), Primitive)                                        \
  X(layer_norm, Tensor, (const Tensor& x, const Tensor& weight, const Tensor& bias, float eps),                   \
    (x, weight, bias, eps), Primitive)                                                                            \
  X(rms_norm, Tensor, (const Tensor& x, const Tensor& weight, float eps), (x, weight, eps), Primitive)            \
  X(channel_rms_norm, Tensor, (const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act,         \
                               const Tensor& out, const Tensor& tail), (x, gamma, bias, act, out, tail), Primitive) \
  X(group_norm, Tensor, (const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,     \
                         Activation act), (x, weight, bias, groups, eps, act), Primitive)                         \
  X(softmax, Tensor, (const Tensor& x), (x), Primitive)                                                           \
  X(attention, Tensor, (const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale),      \
    (q, k, v, bias, scale), Primitive)                                                                            \
  X(rope, Tensor, (const Tensor& x, const Tensor& cos, const Tensor& sin), (x, cos, sin), Primitive)              \
  X(embedding, Tensor, (const Tensor& ids, const Tensor& table), (ids, table), Primitive)                         \
  X(conv3d, Tensor, (const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p,            \
                     const Tensor& residual), (x, weight, bias, p, residual), Primitive)                           \
  X(sum_abs, double, (const Tensor& x), (x), Primitive)                                                           \
  X(quantize_fp8, QuantizedActivation, (const Tensor& x, QuantFormat format, const Tensor& input_scale),          \
    (x, format, input_scale), Primitive)                                                                          \
  X(quantized_linear, Tensor, (const Tensor& x, const QuantizedWeight& weight, const Tensor& bias, Activation act), \
    (x, weight, bias, act), Primitive)                                                                            \
  X(modulated_layer_norm, Tensor, (const Tensor& x, const Tensor& scale, const Tensor& shift, float eps),         \
    (x, scale, shift, eps), Composite)                                                                            \
  X(gated_residual, Tensor, (const Tensor& x, const Tensor& y, const Tensor& gate), (x, y, gate), Composite)      \
  X(residual_layer_norm, ResidualNorm, (const Tensor& x, const Tensor& y, const Tensor& gate,                     \
                                        const LayerNormParams& norm), (x, y, gate, norm), Composite)             \
  X(residual_channel_rms_norm, ResidualNorm, (const Tensor& x, const Tensor& y, const Tensor& gamma,               \
                                               const Tensor& bias, Activation act, const Tensor& residual,       \
                                               const Tensor& out, const Tensor& tail),                           \
    (x, y, gamma, bias, act, residual, out, tail), Composite)                                                    \
  X(rms_norm_rope, Tensor, (const Tensor& x, const Tensor& weight, float eps, const Tensor& cos,                  \
                            const Tensor& sin), (x, weight, eps, cos, sin), Composite)                    \
  X(attention_lse, Tensor, (const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& lse),   \
    (q, k, v, scale, lse), Primitive)                                                                             \
  X(sage_attention, Tensor, (const Tensor& q, const Tensor& k, const Tensor& v, float scale), (q, k, v, scale),    \
    Primitive)
// clang-format on
