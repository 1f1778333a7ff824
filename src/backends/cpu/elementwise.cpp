// Broadcasting binary ops, unary ops and reductions.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {
namespace {

Shape broadcast_shape(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes {} and {} cannot be broadcast together", shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Strides of a contiguous tensor of `shape` read as `out_shape`, 0 where broadcast.
Shape broadcast_strides(const Shape& shape, const Shape& out_shape) {
  const Shape strides = contiguous_strides(shape);
  Shape out(out_shape.size(), 0);
  const size_t lead = out_shape.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) out[lead + i] = shape[i] == 1 ? 0 : strides[i];
  return out;
}

template <typename F>
void binary_loop(const float* a, const float* b, float* out, const Shape& shape, const Shape& sa, const Shape& sb, F f) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t inner = rank ? shape.back() : 1;
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const int64_t outer = n / inner;
  const int64_t ia = rank ? sa.back() : 0, ib = rank ? sb.back() : 0;
#pragma omp parallel for
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, oa = 0, ob = 0;
    for (int64_t d = rank - 2; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    float* dst = out + o * inner;
    for (int64_t i = 0; i < inner; ++i) dst[i] = f(a[oa + i * ia], b[ob + i * ib]);
  }
}

inline float gelu_tanh_f(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

}  // namespace

Tensor CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const Tensor fa = as_f32(a), fb = as_f32(b);
  const Shape shape = broadcast_shape(a.shape(), b.shape());
  Tensor out = Tensor::empty(shape);
  const Shape sa = broadcast_strides(a.shape(), shape), sb = broadcast_strides(b.shape(), shape);
  const float* pa = fa.data<float>();
  const float* pb = fb.data<float>();
  float* po = out.data<float>();
  switch (op) {
    case BinaryOp::Add: binary_loop(pa, pb, po, shape, sa, sb, [](float x, float y) { return x + y; }); break;
    case BinaryOp::Sub: binary_loop(pa, pb, po, shape, sa, sb, [](float x, float y) { return x - y; }); break;
    case BinaryOp::Mul: binary_loop(pa, pb, po, shape, sa, sb, [](float x, float y) { return x * y; }); break;
    case BinaryOp::Div: binary_loop(pa, pb, po, shape, sa, sb, [](float x, float y) { return x / y; }); break;
  }
  return to_dtype(out, a.dtype());
}

Tensor CpuBackend::unary(UnaryOp op, const Tensor& x, float alpha, float beta) {
  const Tensor fx = as_f32(x);
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float v = p[i];
    float r = v;
    switch (op) {
      case UnaryOp::Scale: r = v * alpha; break;
      case UnaryOp::AddScalar: r = v + alpha; break;
      case UnaryOp::Clamp: r = std::fmin(std::fmax(v, alpha), beta); break;
      case UnaryOp::Silu: r = v / (1.0f + std::exp(-v)); break;
      case UnaryOp::GeluTanh: r = gelu_tanh_f(v); break;
      case UnaryOp::Gelu: r = 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f)); break;
      case UnaryOp::Exp: r = std::exp(v); break;
      case UnaryOp::Neg: r = -v; break;
    }
    q[i] = r;
  }
  return to_dtype(out, x.dtype());
}

Tensor CpuBackend::axpby(float alpha, const Tensor& a, float beta, const Tensor& b) {
  const Tensor fa = as_f32(a), fb = as_f32(b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = fa.data<float>();
  const float* pb = fb.data<float>();
  float* q = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) q[i] = alpha * pa[i] + beta * pb[i];
  return to_dtype(out, a.dtype());
}

double CpuBackend::sum_abs(const Tensor& x) {
  const Tensor fx = as_f32(x);
  const float* p = fx.data<float>();
  const int64_t n = x.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(p[i]));
  return s;
}

void apply_activation(float* data, int64_t n, Activation act) {
  if (act == Activation::None) return;
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float v = data[i];
    switch (act) {
      case Activation::GeluTanh: data[i] = gelu_tanh_f(v); break;
      case Activation::Gelu: data[i] = 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f)); break;
      case Activation::Silu: data[i] = v / (1.0f + std::exp(-v)); break;
      case Activation::None: break;
    }
  }
}

}  // namespace vgen::cpu
