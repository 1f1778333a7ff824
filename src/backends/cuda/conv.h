// Precision and engine choice of convolutions on CUDA (no CUDA headers needed): read from the
// active execution context's settings.
#pragma once

namespace vgen::cuda {

// Whether float32 convolutions may use TF32 tensor cores, as PyTorch's cuDNN convolutions do
// by default (torch.backends.cudnn.allow_tf32): ExecutionSettings::allow_tf32 (on unless
// VGEN_ALLOW_TF32=0); off gives true float32 (what the parity tests against the CPU use).
bool conv_allow_tf32();

// Whether a convolution graph's first call times cuDNN's leading candidate engines on its
// own buffers and keeps the fastest (as torch.backends.cudnn.benchmark), instead of taking
// the heuristics' first choice: ExecutionSettings::conv_autotune. It costs time once per
// shape, so it pays off in a long-running process (a server), not in one decode.
bool conv_autotune();

}  // namespace vgen::cuda
