// The CUDA quantization kernels of the quantized linear layers (ops/quant.h), for quant.cu's
// op and gemm_fp8.cpp's GEMMs. Each queues work on the active stream and allocates only
// through Tensor (the stream-ordered pool, or the CUDA graph's pool while capturing).
#pragma once

#include "core/tensor.h"
#include "ops/quant.h"

namespace vgen::cuda {

// x (contiguous F32/BF16/F16 [M, K]) -> e4m3 bytes [M, K] (into `data`) and the F32 per-tensor
// scale [1] (into `scale`): `input_scale` when defined, else amax(|x|) / 448, computed on the
// device (no host synchronization).
void quantize_fp8_per_tensor(const Tensor& x, const Tensor& input_scale, const Tensor& data, const Tensor& scale);
// x [M, K] -> e4m3 [M, K] and one F32 scale per row and 128-column group, written at
// scale[row * row_stride + group * group_stride] ([M, G] row-major: (G, 1); [G, M]: (1, M)).
void quantize_fp8_groups(const Tensor& x, const Tensor& data, const Tensor& scale, int64_t row_stride,
                         int64_t group_stride);
// A quantized weight expanded to `dtype` (F32/BF16/F16) [N, K] (w_q * scales, rounded once).
Tensor dequantize_weight_device(const QuantizedWeight& w, DType dtype);
// e4m3 [M, K] with its scales (per tensor [1], or [M, G] row-major) -> `dtype` [M, K].
Tensor dequantize_activation_device(const QuantizedActivation& a, DType dtype);

}  // namespace vgen::cuda
