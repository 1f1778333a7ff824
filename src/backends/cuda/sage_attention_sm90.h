// vgen's quantized attention for Hopper (sage_attention_sm90.cuh; the algorithm is
// ops/sage_attention.h's): bf16 q, k, v of head dim 128, no bias, any lengths. CudaOps runs it
// for ops::sage_attention and, with the context's attention backend "sage", for ops::attention.
//
// This header needs no CUDA headers; its functions exist only in builds with VGEN_WITH_CUDA.
#pragma once

#include <string>

#include "core/tensor.h"

namespace vgen::cuda {

// Why the kernel cannot run on device `device` ("" when it can): not sm_90, or a build
// without sm_90a code.
std::string sage_attention_sm90_unavailable(int device);

// Why the kernel cannot run these inputs on the active device ("" when it can): the op's own
// rules (sage::rejects), a device other than sm_90, a build without sm_90a code.
std::string sage_attention_sm90_rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias);

// Quantized softmax(q k^T * scale) v into out ([B, H, Sq, D], unit stride along D), on the
// active stream. The inputs must be accepted (sage_attention_sm90_rejects(...) == "").
void sage_attention_sm90(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& out);

}  // namespace vgen::cuda
