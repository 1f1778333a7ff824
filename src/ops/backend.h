// The op interface every compute backend implements (CPU reference, CUDA).
//
// Ops take and return Tensors on the backend's device. The CPU backend is the
// reference: each other backend is tested op by op against it (tests/ops).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen {

enum class BinaryOp { Add, Sub, Mul, Div };
enum class UnaryOp { Scale, AddScalar, Clamp, Silu, GeluTanh, Gelu, Exp, Neg };
enum class Activation { None, GeluTanh, Gelu, Silu };

struct Conv3dParams {
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{0, 0, 0};  // zero padding on both sides of (T, H, W)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // dst and src have the same shape; either may be strided or of another dtype.
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  virtual void fill(const Tensor& dst, float value) = 0;

  // Elementwise with numpy broadcasting; result dtype is a's.
  virtual Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) = 0;
  // Scale: x*alpha. AddScalar: x+alpha. Clamp: to [alpha, beta]. Others ignore alpha/beta.
  virtual Tensor unary(UnaryOp op, const Tensor& x, float alpha, float beta) = 0;
  // alpha*a + beta*b for same-shape tensors, accumulated in float32.
  virtual Tensor axpby(float alpha, const Tensor& a, float beta, const Tensor& b) = 0;

  // x[..., in] @ weight[out, in]^T + bias[out], then the activation.
  virtual Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) = 0;
  // a[..., M, K] @ b[..., K, N]; batch dims of b equal a's, or b is 2-D.
  virtual Tensor matmul(const Tensor& a, const Tensor& b) = 0;

  // Over the last dim; undefined weight/bias means no affine part. Statistics in float32.
  virtual Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) = 0;
  // x * rsqrt(mean(x^2) + eps) * weight over the last dim (T5 / Wan qk-norm).
  virtual Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) = 0;
  // Wan VAE norm over dim 1 of [B, C, ...]: x / max(||x||_2, 1e-12) * sqrt(C) * gamma[C] + bias[C].
  virtual Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias) = 0;
  virtual Tensor softmax(const Tensor& x) = 0;  // over the last dim

  // softmax(q k^T * scale + bias) v; q [B, H, Sq, D], k/v [B, H, Sk, D];
  // bias (optional, additive) broadcastable to [B, H, Sq, Sk].
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias,
                           float scale) = 0;
  // Rotary embedding on interleaved pairs: x [B, S, H, D], cos/sin [S, D] (float32).
  virtual Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) = 0;
  // table[ids]: ids (I64) of any shape, table [V, D].
  virtual Tensor embedding(const Tensor& ids, const Tensor& table) = 0;

  // x [B, C, T, H, W], weight [O, C, kt, kh, kw], bias [O] (optional).
  virtual Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p) = 0;
  // Nearest-neighbour 2x upsampling of the last two dims.
  virtual Tensor upsample_nearest2x(const Tensor& x) = 0;

  virtual double sum_abs(const Tensor& x) = 0;
};

Backend& backend_for(Device device);
// Installed by a backend at startup (the CPU one is built in).
void register_backend(DeviceType type, Backend* backend);
bool has_backend(DeviceType type);

}  // namespace vgen
