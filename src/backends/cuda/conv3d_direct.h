// vgen's direct 3x3x3 convolution for few output channels (conv3d_direct.cu): a VAE's conv_out,
// which maps a wide feature map (the Wan2.2 decoder's 256 channels at 352x640, Wan2.1's 96 at
// 480x832) to a handful of channels (12, 3).
//
// Why a kernel of its own: as an implicit GEMM (cuDNN, CUTLASS) that convolution is M = the
// output positions, N = the output channels, K = 27 taps x C. With N = 12 every input element
// is fetched into shared memory once per tap, 27 times, for 12 multiply-adds each: the loads
// bound it (on an H200 cuDNN ran the Wan2.2 decoder's conv_out at ~90 TFLOP/s, 50 ms of a 3 s
// decode). Here a block stages a tile of input frames with its halo in shared memory once per
// 16 channels and runs all 27 taps from it on tensor cores (mma.sync m16n8k16, bf16 in,
// float32 accumulation), the output channels padded to 16.
//
// This header needs no CUDA headers; its functions exist only in builds with VGEN_WITH_CUDA.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace vgen::cuda {

// y = conv(x, w) + bias: x [N, C, T, H, W] channels-last 3-D bf16, w [K, C, 3, 3, 3] bf16 (any
// layout), bias [K] (or undefined: none), y [N, K, To, Ho, Wo] bf16; stride 1 and any padding
// before/after each spatial dim (the causal time padding included).
struct Conv3dDirectProblem {
  Tensor x, w, bias, y;
  std::array<int64_t, 3> pad_before{}, pad_after{}, stride{1, 1, 1};
};

// Largest number of output channels the kernel takes (two n8 tiles of mma.sync).
constexpr int64_t kConv3dDirectMaxOut = 16;

// Why the kernel cannot run p ("" when it can): a GPU older than sm_80 or with less than 104 KB
// of shared memory a block (sm_86/sm_89 have 99 KB), a dtype, kernel size,
// channel count, stride, layout or alignment it does not take.
std::string conv3d_direct_rejects(const Conv3dDirectProblem& p);

// Runs p (conv3d_direct_rejects(p) must be "") on the active stream.
void conv3d_direct(const Conv3dDirectProblem& p);

}  // namespace vgen::cuda
