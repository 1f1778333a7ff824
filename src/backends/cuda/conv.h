// Precision of float32 convolutions on CUDA (no CUDA headers needed).
#pragma once

namespace vgen::cuda {

// Whether float32 convolutions may use TF32 tensor cores, as PyTorch's cuDNN convolutions do
// by default (torch.backends.cudnn.allow_tf32). Initially on, or VGEN_ALLOW_TF32=0 turns it
// off; off gives true float32 (what the parity tests against the CPU use).
void set_conv_allow_tf32(bool allow);
bool conv_allow_tf32();

}  // namespace vgen::cuda
