// The ops models are written with. Each dispatches to the backend of its inputs' device.
#pragma once

#include <vector>

#include "ops/backend.h"

namespace vgen::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);
Tensor add_scalar(const Tensor& x, float s);
Tensor clamp(const Tensor& x, float lo, float hi);
Tensor silu(const Tensor& x);
Tensor gelu_tanh(const Tensor& x);
Tensor gelu(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor axpby(float alpha, const Tensor& a, float beta, const Tensor& b);

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
              Activation act = Activation::None);
Tensor matmul(const Tensor& a, const Tensor& b);

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);
// The Wan VAE's channel RMS norm, optionally fused with the SiLU that follows it
// (act None or Silu; the same values as silu(channel_rms_norm(...))).
Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act = Activation::None);
Tensor softmax(const Tensor& x);

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale);
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);
Tensor embedding(const Tensor& ids, const Tensor& table);

Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params);
Tensor upsample_nearest2x(const Tensor& x);

// Shape ops built from copies (the same on every backend).
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// Zero padding of dimension `dim`: `before` and `after` elements.
Tensor pad(const Tensor& x, int64_t dim, int64_t before, int64_t after);

// Fused ops (see Backend): modulated LayerNorm, gated residual add, RMSNorm + RoPE.
Tensor modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps);
Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate);
Tensor rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos, const Tensor& sin);

// Waits until the device has finished all queued work.
void synchronize(Device device);

// Records the work `work` queues on `device` for replay as one launch (see Backend::capture;
// GraphedCallable (ops/graphed_callable.h) is the safe way to use it).
std::unique_ptr<CapturedWork> capture(Device device, const std::function<void()>& work);

// The GPU attention kernel: "auto" (the fastest available: cuDNN's fused SDPA), "cudnn", or
// "reference" (plain GEMM + softmax; also what cuDNN falls back to for cases it rejects).
void set_attention_backend(const std::string& name);
std::string attention_backend_name(Device device);

// Whether float32 convolutions on the GPU may use TF32 tensor cores, as PyTorch's cuDNN
// convolutions (and so diffusers' float32 VAE) do by default. On unless VGEN_ALLOW_TF32=0;
// float32 matrix products are always true FP32 (PyTorch's default too).
void set_allow_tf32(bool allow);
// Whether GPU convolutions time cuDNN's leading engines on their first call per shape and
// keep the fastest (torch.backends.cudnn.benchmark): faster from the second decode on, slower
// the first time. Off unless VGEN_CONV_AUTOTUNE=1; vgen serve turns it on (conv.autotune).
void set_conv_autotune(bool on);

double sum_abs(const Tensor& x);
double mean_abs(const Tensor& x);

}  // namespace vgen::ops
