// vgen's implicit-GEMM 3-D convolution for Hopper (conv3d_sm90.cu), built from CUTLASS 3's sm90
// convolution collectives: TMA im2col loads of a channels-last (NDHWC) bf16 input, a KTRSC
// filter, float32 accumulation on tensor cores, the bias added in the epilogue, a bf16 NDHWC
// output. CudaOps::conv3d times it against cuDNN per shape and keeps the faster (conv.cpp).
//
// This header needs no CUDA headers; its functions exist only in builds with VGEN_WITH_CUDA.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen::cuda {

// One convolution: x [N, C, D, H, W] and w [K, C, T, R, S] channels-last 3-D, bias [K] (or
// undefined: none), y [N, K, Do, Ho, Wo] channels-last 3-D and dense; padding per spatial dim.
struct Conv3dSm90Problem {
  Tensor x, w, bias, y;
  std::array<int64_t, 3> pad_before{}, pad_after{}, stride{1, 1, 1};
};

// Why the kernel cannot run p on the active device ("" when some variant can): a device other
// than sm_90, a build without sm_90a code, a dtype, layout, stride, alignment or size it does
// not take.
std::string conv3d_sm90_rejects(const Conv3dSm90Problem& p);

// The tile variants that take p, the preferred one first (empty when rejected).
std::vector<int> conv3d_sm90_variants(const Conv3dSm90Problem& p);

// A variant's name ("128x128x64", "64x256x64c2": CTA tile M x N x K, c2 a cluster of 2 CTAs
// along M), as logs and ExecutionSettings::conv_kernel ("cutlass:<name>") give it.
const char* conv3d_sm90_variant_name(int variant);

// y = conv(x, w) + bias with `variant` (one of conv3d_sm90_variants(p)), on the active stream.
void conv3d_sm90(const Conv3dSm90Problem& p, int variant);

}  // namespace vgen::cuda
