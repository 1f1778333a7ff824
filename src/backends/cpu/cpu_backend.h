// The CPU backend: the reference implementation of every op. Computes in float32
// (inputs of other dtypes are converted), parallel over rows with OpenMP, GEMMs via BLAS.
#pragma once

#include "ops/backend.h"

namespace vgen::cpu {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  // The reference runs every op on every dtype (converting to float32).
  bool supports(Op, DType) const override { return true; }
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& dst, float value) override;
  Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) override;
  Tensor unary(UnaryOp op, const Tensor& x, float alpha, float beta) override;
  Tensor axpby(float alpha, const Tensor& a, float beta, const Tensor& b) override;
  Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) override;
  Tensor matmul(const Tensor& a, const Tensor& b) override;
  Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) override;
  Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) override;
  Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act,
                          const Tensor& out, const Tensor& tail) override;
  Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                    Activation act) override;
  Tensor softmax(const Tensor& x) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) override;
  Tensor attention_lse(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& lse) override;
  Tensor sage_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale) override;
  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;
  Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p,
                const Tensor& residual) override;
  double sum_abs(const Tensor& x) override;
  QuantizedActivation quantize_fp8(const Tensor& x, QuantFormat format, const Tensor& input_scale) override;
  Tensor quantized_linear(const Tensor& x, const QuantizedWeight& weight, const Tensor& bias, Activation act) override;
};

// The CPU backend. It holds no state, so every execution context shares this one.
Backend& cpu_backend();

// Contiguous float32 CPU copy of x (x itself when it already is one).
Tensor as_f32(const Tensor& x);
// Converts a float32 result back to the caller's dtype.
Tensor to_dtype(const Tensor& x, DType dtype);
// Row-major single-precision GEMM: C[M,N] = A[M,K] * op(B) (+ C when accumulate).
// B is [K,N], or [N,K] when trans_b.
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, const float* B, bool trans_b, float* C,
           bool accumulate = false);

}  // namespace vgen::cpu
