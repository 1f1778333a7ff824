// Device helpers shared by vgen's Hopper attention kernels (flash_attention_sm90.cuh,
// sage_attention_sm90.cuh).
#pragma once

// Outside namespace vgen, as the kernels' CuTe code is.
namespace vgen_sm90 {

// 2^x on the MUFU (approximate, flushing subnormals): the softmax's exp with the scale folded in.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Named barriers 1 and 2 order the two consumer warpgroups' turns at the tensor cores (0 is
// __syncthreads); 256 threads take part in each.
__device__ __forceinline__ void named_sync(int id) { asm volatile("bar.sync %0, 256;" ::"r"(id)); }
__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;" ::"r"(id)); }

}  // namespace vgen_sm90
