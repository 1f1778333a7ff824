// The CUDA backend: every op of ops/backend.h on NVIDIA GPUs (Hopper first; sm_80 and sm_100
// build too). Work is queued on one stream per process; memory comes from CUDA's
// stream-ordered pool (a caching allocator), so a tensor freed on the host is reused by the
// next op on the same stream without a synchronization.
//
// Floating ops take F32, BF16 or F16 tensors and accumulate in float32. The files beside
// this one implement it: copy.cu (copies, casts, fill, host transfers), elementwise.cu,
// norm.cu (norms, softmax, fused norm+modulation, RMSNorm+RoPE, gated residual),
// gemm.cpp (cuBLASLt), attention.cpp (cuDNN SDPA and a plain reference), conv.cpp (cuDNN
// convolution), misc.cu (embedding, upsampling, reductions).
#pragma once

#include "ops/backend.h"

namespace vgen::cuda {

// a @ b (as matmul) of 16-bit operands with the float32 product kept (no rounding of D).
Tensor matmul_float32_out(const Tensor& a, const Tensor& b);

class CudaBackend final : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& dst, float value) override;
  Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) override;
  Tensor unary(UnaryOp op, const Tensor& x, float alpha, float beta) override;
  Tensor axpby(float alpha, const Tensor& a, float beta, const Tensor& b) override;
  Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) override;
  Tensor matmul(const Tensor& a, const Tensor& b) override;
  Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) override;
  Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) override;
  Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act) override;
  Tensor softmax(const Tensor& x) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) override;
  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;
  Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p) override;
  Tensor upsample_nearest2x(const Tensor& x) override;
  double sum_abs(const Tensor& x) override;

  // Fused ops (ops/backend.h defines them by composition; these are single kernels).
  Tensor modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps) override;
  Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate) override;
  Tensor rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos,
                       const Tensor& sin) override;
  void synchronize() override;
  // A CUDA graph of the work (stream capture on the backend's stream, this thread only).
  std::unique_ptr<CapturedWork> capture(const std::function<void()>& work) override;
};

// Registers the backend and its allocator when a CUDA device is usable; otherwise returns
// false with the reason in `why` (no driver, no device, ...).
bool register_if_available(std::string* why);

}  // namespace vgen::cuda
