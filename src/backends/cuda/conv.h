// Precision and engine choice of convolutions on CUDA (no CUDA headers needed).
#pragma once

namespace vgen::cuda {

// Whether float32 convolutions may use TF32 tensor cores, as PyTorch's cuDNN convolutions do
// by default (torch.backends.cudnn.allow_tf32). Initially on, or VGEN_ALLOW_TF32=0 turns it
// off; off gives true float32 (what the parity tests against the CPU use).
void set_conv_allow_tf32(bool allow);
bool conv_allow_tf32();

// Whether a convolution graph's first call times cuDNN's leading candidate engines on its
// own buffers and keeps the fastest (as torch.backends.cudnn.benchmark), instead of taking
// the heuristics' first choice. Initially off, or on with VGEN_CONV_AUTOTUNE=1. It costs
// time once per shape, so it pays off in a long-running process (a server), not in one decode.
void set_conv_autotune(bool on);
bool conv_autotune();

}  // namespace vgen::cuda
