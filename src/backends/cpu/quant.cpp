// The reference of the quantized linear layers (ops/quant.h): activations quantized to e4m3
// exactly as the device kernels do, then dequantized, and a float32 GEMM with the dequantized
// weight. Slow (the weight is expanded on every call) and exact: what the GPU paths are checked against.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {

void apply_activation(float* data, int64_t n, Activation act);

QuantizedActivation CpuBackend::quantize_fp8(const Tensor& x, QuantFormat format, const Tensor& input_scale) {
  const Tensor fx = as_f32(x);
  const int64_t K = x.size(-1), M = K == 0 ? 0 : x.numel() / K;
  const float* src = fx.data<float>();
  QuantizedActivation q;
  q.data = Tensor::empty({M, K}, DType::F8_E4M3);
  uint8_t* d = static_cast<uint8_t*>(q.data.raw_data());
  if (format == QuantFormat::Fp8PerTensor) {
    float s;
    if (input_scale.defined()) {
      s = as_f32(input_scale).data<float>()[0];
    } else {
      float amax = 0.0f;
      for (int64_t i = 0; i < M * K; ++i) amax = std::max(amax, std::fabs(src[i]));
      s = quant::fp8_scale(amax);
    }
#pragma omp parallel for
    for (int64_t i = 0; i < M * K; ++i) d[i] = quant::float_to_e4m3(src[i] / s);
    q.scale = Tensor::from_vector({s}, {1});
    return q;
  }
  VGEN_CHECK(format == QuantFormat::Fp8Block, "quantize_fp8: {} is not an fp8 format", quant_format_name(format));
  const int64_t G = (K + quant::kBlock - 1) / quant::kBlock;
  q.scale = Tensor::empty({M, G});
  float* sc = q.scale.data<float>();
#pragma omp parallel for
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c0 = g * quant::kBlock, c1 = std::min(K, c0 + quant::kBlock);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(src[r * K + c]));
      const float s = quant::fp8_scale(amax);
      sc[r * G + g] = s;
      for (int64_t c = c0; c < c1; ++c) d[r * K + c] = quant::float_to_e4m3(src[r * K + c] / s);
    }
  }
  return q;
}

Tensor CpuBackend::quantized_linear(const Tensor& x, const QuantizedWeight& weight, const Tensor& bias, Activation act) {
  const int64_t K = weight.in_features;
  const int64_t M = K == 0 ? 0 : x.numel() / K;
  Tensor xf;
  if (weight.format == QuantFormat::Nvfp4) {
    xf = as_f32(x);
  } else {
    const QuantizedActivation q = quantize_fp8(x, weight.format, weight.input_scale);
    xf = Tensor::empty({M, K});
    float* o = xf.data<float>();
    const uint8_t* d = static_cast<const uint8_t*>(q.data.raw_data());
    const float* sc = q.scale.data<float>();
    const int64_t G = q.scale.numel() == 1 && weight.format == QuantFormat::Fp8PerTensor ? 0 : q.scale.size(1);
#pragma omp parallel for
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < K; ++c)
        o[r * K + c] = quant::e4m3_to_float(d[r * K + c]) * (G == 0 ? sc[0] : sc[r * G + c / quant::kBlock]);
  }
  // The float GEMM of the dequantized operands is the ordinary linear (float32 in and out).
  return to_dtype(linear(xf.view(x.shape()), dequantize_weight(weight), bias, act), x.dtype());
}

}  // namespace vgen::cpu
