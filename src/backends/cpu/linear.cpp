// Matrix products through BLAS.
#include <cblas.h>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {

void apply_activation(float* data, int64_t n, Activation act);

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, bool trans_b, float* C, bool accumulate) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M),
              static_cast<int>(N), static_cast<int>(K), 1.0f, A, static_cast<int>(K), B,
              static_cast<int>(trans_b ? K : N), accumulate ? 1.0f : 0.0f, C, static_cast<int>(N));
}

Tensor CpuBackend::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) {
  const Tensor fx = as_f32(x), fw = as_f32(weight);
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const int64_t M = x.numel() / in;
  Shape shape = x.shape();
  shape.back() = out_features;
  Tensor out = Tensor::empty(shape);
  float* o = out.data<float>();
  if (bias.defined()) {
    const Tensor fb = as_f32(bias);
    const float* b = fb.data<float>();
#pragma omp parallel for
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < out_features; ++n) o[m * out_features + n] = b[n];
  }
  sgemm(M, out_features, in, fx.data<float>(), fw.data<float>(), true, o, bias.defined());
  apply_activation(o, out.numel(), act);
  return to_dtype(out, x.dtype());
}

Tensor CpuBackend::matmul(const Tensor& a, const Tensor& b) {
  const Tensor fa = as_f32(a), fb = as_f32(b);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const int64_t batch = a.numel() / (M * K);
  const bool shared_b = b.dim() == 2;
  VGEN_CHECK(shared_b || b.numel() / (K * N) == batch, "matmul: batch of {} does not match {}", a.str(), b.str());
  Shape shape = a.shape();
  shape.back() = N;
  Tensor out = Tensor::empty(shape);
  for (int64_t i = 0; i < batch; ++i) {
    sgemm(M, N, K, fa.data<float>() + i * M * K, fb.data<float>() + (shared_b ? 0 : i * K * N), false,
          out.data<float>() + i * M * N);
  }
  return to_dtype(out, a.dtype());
}

}  // namespace vgen::cpu
