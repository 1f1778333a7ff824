// Attention on CUDA: which implementation CudaOps::attention uses, and a benchmark.
//
// "flash": vgen's own kernel for Hopper (flash_attention_sm90.h), BF16 without bias, head dim
// 64 or 128; what it does not take goes to cuDNN. "auto" (the default) takes it where it is
// faster than cuDNN, and cuDNN elsewhere.
// "cudnn": cuDNN's fused SDPA (flash attention) through the cuDNN frontend, for
// BF16/F16 q/k/v with head dim a multiple of 8 up to 256, float32 softmax. 16-bit cases it
// does not take (head dims above 256 as in the Wan VAE, misaligned or unsupported strides or
// biases) go to "math": tensor-core matrix products with float32 scores and softmax, the
// weights rounded to 16 bits for weights @ v; F32 inputs go to the reference. "reference":
// plain matrix products + softmax in float32, chunked over heads and queries (exact, slow,
// for checking).
//
// This header needs no CUDA headers (the CLI includes it); its functions exist only in builds
// with VGEN_WITH_CUDA.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace vgen::cuda {

// The implementation the active execution context chooses ("auto", "cudnn", "flash" or
// "reference"), from its ExecutionSettings::attention_backend. "auto" takes vgen's Hopper
// kernel (flash_attention_sm90.h) where it is faster than cuDNN (sm_90, head dim 128, 4096 keys
// or more: self-attention over video tokens) and cuDNN elsewhere.
std::string attention_backend();

// Which implementation CudaOps::attention takes for these inputs ("flash", "cudnn", "math" or
// "reference"),
// building and caching the cuDNN graph as a call would. scale < 0 means 1 / sqrt(D).
std::string attention_path(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale = -1.0f);

// Times scaled-dot-product attention on random BF16 q, k, v [B, H, S, D] (views of
// [B, S, H, D] buffers, as the models pass them) through the selected backend: a few warm-up
// calls, then `iters` timed calls (CUDA events); returns TFLOP/s of the median call, counting
// 4 * B * H * S * S * D flops. Needs the CUDA backend (throws otherwise).
double benchmark_attention_tflops(int64_t B, int64_t H, int64_t S, int64_t D, int iters);

}  // namespace vgen::cuda
