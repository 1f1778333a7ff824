// vgen's own flash-attention forward for Hopper (flash_attention_sm90.cuh): bf16 q, k, v of
// head dim 64 or 128, no bias, any lengths. CudaOps::attention takes it for the "flash"
// backend, and for "auto" where it is the faster exact kernel.
//
// This header needs no CUDA headers; its functions exist only in builds with VGEN_WITH_CUDA.
#pragma once

#include <string>

#include "core/tensor.h"

namespace vgen::cuda {

// Why the kernel cannot run these inputs on the active device ("" when it can): a device other
// than sm_90, a build without sm_90a code, a dtype, head dim, bias, layout or alignment it
// does not take. q [B, H, Sq, D], k/v [B, H, Sk, D], each with unit stride along D.
std::string flash_attention_sm90_rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias);

// softmax(q k^T * scale) v into out ([B, H, Sq, D], unit stride along D), on the active stream.
// The inputs must be accepted (flash_attention_sm90_rejects(...) == "").
void flash_attention_sm90(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& out);

}  // namespace vgen::cuda
