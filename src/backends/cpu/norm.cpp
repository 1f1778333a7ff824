// Normalizations and softmax; statistics accumulated in double for a tight reference.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {

Tensor CpuBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  const Tensor fx = as_f32(x);
  const Tensor fw = weight.defined() ? as_f32(weight) : Tensor();
  const Tensor fb = bias.defined() ? as_f32(bias) : Tensor();
  const int64_t D = x.size(-1), rows = x.numel() / D;
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
  const float* w = fw.defined() ? fw.data<float>() : nullptr;
  const float* b = fb.defined() ? fb.data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * D;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < D; ++i) mean += row[i];
    mean /= D;
    for (int64_t i = 0; i < D; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= D;
    const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < D; ++i) {
      float v = (row[i] - m) * rstd;
      if (w) v *= w[i];
      if (b) v += b[i];
      q[r * D + i] = v;
    }
  }
  return to_dtype(out, x.dtype());
}

Tensor CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  const Tensor fx = as_f32(x);
  const Tensor fw = weight.defined() ? as_f32(weight) : Tensor();
  const int64_t D = x.size(-1), rows = x.numel() / D;
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
  const float* w = fw.defined() ? fw.data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * D;
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(row[i]) * row[i];
    const float rstd = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    for (int64_t i = 0; i < D; ++i) q[r * D + i] = w ? w[i] * (row[i] * rstd) : row[i] * rstd;
  }
  return to_dtype(out, x.dtype());
}

Tensor CpuBackend::channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act,
                                    const Tensor& dst, const Tensor& tail) {
  const Tensor fx = as_f32(x), fg = as_f32(gamma);
  const Tensor fb = bias.defined() ? as_f32(bias) : Tensor();
  const int64_t B = x.size(0), C = x.size(1), inner = x.numel() / (B * C);
  const float scale = std::sqrt(static_cast<float>(C));
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
  const float* g = fg.data<float>();
  const float* bb = fb.defined() ? fb.data<float>() : nullptr;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < inner; ++s) {
      const float* base = p + b * C * inner + s;
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(base[c * inner]) * base[c * inner];
      const float denom = std::fmax(static_cast<float>(std::sqrt(ss)), 1e-12f);
      float* dst = q + b * C * inner + s;
      for (int64_t c = 0; c < C; ++c) {
        float v = base[c * inner] / denom * scale * g[c];
        if (bb) v += bb[c];
        dst[c * inner] = v;
      }
    }
  }
  const Tensor y = to_dtype(out, x.dtype());
  const Tensor result = act == Activation::Silu ? unary(UnaryOp::Silu, y, 0.0f, 0.0f) : y;
  if (tail.defined()) copy(tail, result.narrow(2, x.size(2) - tail.size(2), tail.size(2)));
  if (!dst.defined()) return result;
  copy(dst, result);  // the reference keeps to contiguous results; the device backends write in place
  return dst;
}

Tensor CpuBackend::group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                              Activation act) {
  const Tensor fx = as_f32(x);
  const Tensor fw = weight.defined() ? as_f32(weight) : Tensor();
  const Tensor fb = bias.defined() ? as_f32(bias) : Tensor();
  const int64_t N = x.size(0), C = x.size(1), S = N * C == 0 ? 0 : x.numel() / (N * C), Cg = C / groups;
  const int64_t L = Cg * S;  // a group's values: Cg channels of S positions, contiguous
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
  const float* w = fw.defined() ? fw.data<float>() : nullptr;
  const float* b = fb.defined() ? fb.data<float>() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < N * groups; ++r) {
    const float* row = p + r * L;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < L; ++i) mean += row[i];
    mean /= static_cast<double>(std::max<int64_t>(L, 1));
    for (int64_t i = 0; i < L; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= static_cast<double>(std::max<int64_t>(L, 1));
    const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < L; ++i) {
      const int64_t c = (r % groups) * Cg + i / S;
      float v = (row[i] - m) * rstd;
      if (w) v *= w[c];
      if (b) v += b[c];
      q[r * L + i] = v;
    }
  }
  const Tensor y = to_dtype(out, x.dtype());
  return act == Activation::Silu ? unary(UnaryOp::Silu, y, 0.0f, 0.0f) : y;
}

Tensor CpuBackend::softmax(const Tensor& x) {
  const Tensor fx = as_f32(x);
  const int64_t D = x.size(-1), rows = x.numel() / D;
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  float* q = out.data<float>();
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * D;
    float* dst = q + r * D;
    float mx = -INFINITY;
    for (int64_t i = 0; i < D; ++i) mx = std::fmax(mx, row[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < D; ++i) {
      dst[i] = std::exp(row[i] - mx);
      sum += dst[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < D; ++i) dst[i] *= inv;
  }
  return to_dtype(out, x.dtype());
}

}  // namespace vgen::cpu
