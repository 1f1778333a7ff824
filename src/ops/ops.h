// The ops models are written with. Each validates its inputs, then dispatches to the backend
// that runs their device in the execution context bound to this thread (core/execution_context.h).
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

// Quantized linear layers (ops/quant.h): the FP8 activation quantization, and the GEMM with a
// quantized weight (which quantizes x itself; quantize_fp8 is exposed for tests and tools).
QuantizedActivation quantize_fp8(const Tensor& x, QuantFormat format, const Tensor& input_scale = {});
Tensor quantized_linear(const Tensor& x, const QuantizedWeight& weight, const Tensor& bias = {},
                        Activation act = Activation::None);

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);
// The Wan VAE's channel RMS norm, optionally fused with the SiLU that follows it
// (act None or Silu; the same values as silu(channel_rms_norm(...))). With `out` (x's shape and
// dtype, on x's device, any strides) the result is written there, and out returned: a causal
// conv's input buffer takes the chunk behind its cached frames that way, without a copy. With
// `tail` ([B, C, n, H, W] for x [B, C, T, H, W], n <= T, x's dtype and device) the result's last
// n frames are written there too: the frames that conv keeps for the next chunk, without
// reading them back.
Tensor channel_rms_norm(const Tensor& x, const Tensor& gamma, const Tensor& bias, Activation act = Activation::None,
                        const Tensor& out = {}, const Tensor& tail = {});
// torch.nn.GroupNorm over x [N, C, *spatial] (weight, bias [C], either may be undefined),
// optionally followed by SiLU (act None or Silu; the same values as silu(group_norm(...))).
Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                  Activation act = Activation::None);
Tensor softmax(const Tensor& x);

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale);
// Attention over one block of keys with each query row's log-sum-exp of the scaled scores:
// out [B, H, Sq, D] (q's dtype), lse [B, H, Sq] float32 (-inf where there are no keys).
struct AttentionWithLse {
  Tensor out, lse;
};
AttentionWithLse attention_lse(const Tensor& q, const Tensor& k, const Tensor& v, float scale);
// Quantized attention (SageAttention2's recipe, ops/sage_attention.h): bf16 q [B, H, Sq, 128],
// k/v [B, H, Sk, 128]; scale < 0 means 1 / sqrt(head dim). Its error against exact attention is
// the quantization's: the "sage" attention backend runs it inside ops::attention when asked.
Tensor sage_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale = -1.0f);
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);
Tensor embedding(const Tensor& ids, const Tensor& table);

// With `residual` (the output's shape and x's dtype): conv + bias + residual (a ResNet block's
// skip connection). The CPU reference adds it before its one rounding to x's dtype; the CUDA
// backend adds it to the rounded convolution, as an unfused add would, unless conv autotuning
// chose cuDNN's fused epilogue for the shape (then before the one rounding).
Tensor conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& params,
              const Tensor& residual = Tensor());

// Shape ops built from copies (the same on every backend).
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// Zero padding of dimension `dim`: `before` and `after` elements, in x's memory format.
Tensor pad(const Tensor& x, int64_t dim, int64_t before, int64_t after);

// Fused ops (see Backend): modulated LayerNorm, gated residual add, a residual with the norm
// after it, RMSNorm + RoPE.
Tensor modulated_layer_norm(const Tensor& x, const Tensor& scale, const Tensor& shift, float eps);
Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate);
// x + y (gate undefined) or gated_residual(x, y, gate), and that residual's layer norm.
ResidualNorm residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& gate, const LayerNormParams& norm);
// x + y (written into `residual` when defined, which may be x) and its channel_rms_norm (into
// `out` and `tail` when defined): {residual, normed}.
ResidualNorm residual_channel_rms_norm(const Tensor& x, const Tensor& y, const Tensor& gamma, const Tensor& bias,
                                       Activation act = Activation::None, const Tensor& residual = {},
                                       const Tensor& out = {}, const Tensor& tail = {});
// weight [H * D] normalizes each token's heads together, [D] each head on its own.
Tensor rms_norm_rope(const Tensor& x, const Tensor& weight, float eps, const Tensor& cos, const Tensor& sin);

// Waits until the device has finished all queued work.
void synchronize(Device device);

// Records the work `work` queues on `device` for replay as one launch (see Backend::capture;
// GraphedCallable (ops/graphed_callable.h) is the safe way to use it).
std::unique_ptr<CapturedWork> capture(Device device, const std::function<void()>& work);

double sum_abs(const Tensor& x);
double mean_abs(const Tensor& x);

}  // namespace vgen::ops
