// The op interface every compute backend implements (CPU reference, CUDA).
//
// Ops take and return Tensors on the backend's device. The CPU backend is the
// reference: each other backend is tested op by op against it (tests/ops).
#pragma once

#include <array>
#include <functional>
#include <memory>
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
  // when >= 0: zero frames before T instead of padding[0] (padding[0] stays the frames after),
  // for causal convolutions without a pad copy
  int64_t time_padding_before = -1;
};

// Device work recorded by Backend::capture, replayed on the backend's stream.
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  virtual void replay() = 0;
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

  // Over the last dim; undefined weight/bias means no affine part. Computed in float32 (statistics
  // and affine part), rounded once to x's dtype: layer_norm(x.float()).to(x.dtype).
  virtual Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) = 0;
  // x * rsqrt(mean(x^2) + eps) * weight over the last dim (T5 / Wan qk-norm).
  virtual Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) = 0;
  // Wan VAE norm over dim 1 of [B, C, ...]: x / max(||x||_2, 1e-12) * sqrt(C) * gamma[C] + bias[C],
  // then `act` (None or Silu) on the result as rounded to x's dtype. The CUDA backend keeps a
  // channels-last 3-D input's layout (the CPU's result is contiguous).
  virtual Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act) = 0;
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

  // Fused ops. The defaults compose the ops above (the reference every backend's own
  // version is tested against); a backend overrides them with single kernels.
  //
  // (layer_norm(x.float()) * (1 + scale) + shift).to(x.dtype): x [B, S, D]; scale and shift
  // float32, broadcastable to [B, S, D] (one row per batch [B, 1, D] or per token).
  virtual Tensor modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps);
  // (x.float() + y.float() * gate).to(x.dtype): x, y [B, S, D]; gate float32 like scale above.
  virtual Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate);
  // rope(rms_norm(x over its last two dims, weight, eps), cos, sin): x [B, S, H, D] (rows may
  // be strided, as a slice of a fused QKV projection), weight [H * D] -> [B, S, H, D].
  virtual Tensor rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos,
                               const Tensor& sin);

  // Waits for all queued work (a no-op on the CPU).
  virtual void synchronize() {}

  // Records the device work that `work` queues, without running it, for replay as one launch
  // (a CUDA graph). Throws when this backend cannot capture (the default), or when `work`
  // does what a recording cannot hold: a host synchronization or transfer, or memory
  // allocated inside that outlives it (or memory from outside freed inside).
  virtual std::unique_ptr<CapturedWork> capture(const std::function<void()>& work);
};

Backend& backend_for(Device device);
// Installed by a backend at startup (the CPU one is built in).
void register_backend(DeviceType type, Backend* backend);
bool has_backend(DeviceType type);
// Why there is no backend for `type` ("" when there is one), e.g. "no CUDA device found".
std::string backend_unavailable_reason(DeviceType type);

}  // namespace vgen
