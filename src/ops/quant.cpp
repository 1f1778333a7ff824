#include "ops/quant.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace vgen {

const char* quant_format_name(QuantFormat format) {
  switch (format) {
    case QuantFormat::Fp8PerTensor: return "fp8 per-tensor";
    case QuantFormat::Fp8Block: return "fp8 128x128 blocks";
    case QuantFormat::Nvfp4: return "nvfp4";
  }
  return "?";
}

QuantizedWeight QuantizedWeight::to(Device device) const {
  QuantizedWeight w = *this;
  for (Tensor* t : {&w.data, &w.weight_scale, &w.weight_scale_2, &w.input_scale})
    if (t->defined() && t->device() != device) *t = t->to(device);
  return w;
}

int64_t QuantizedWeight::nbytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&data, &weight_scale, &weight_scale_2, &input_scale})
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Tensor host_f32(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  h = h.dtype() == DType::F32 ? h.contiguous() : h.to(DType::F32);
  return h.contiguous();
}

Tensor scalar_f32(float v) { return Tensor::from_vector({v}, {1}); }

}  // namespace

QuantizedWeight quantize_weight(const Tensor& weight, QuantFormat format, const std::string& name) {
  VGEN_CHECK(weight.dim() == 2, "{}: quantizing needs a [out, in] weight, got {}", name, weight.str());
  const Tensor w = host_f32(weight);
  const int64_t N = w.size(0), K = w.size(1);
  const float* src = w.data<float>();
  QuantizedWeight q;
  q.format = format;
  q.out_features = N;
  q.in_features = K;
  switch (format) {
    case QuantFormat::Fp8PerTensor: {
      float amax = 0.0f;
      for (int64_t i = 0; i < N * K; ++i) amax = std::max(amax, std::fabs(src[i]));
      const float s = quant::fp8_scale(amax);
      q.data = Tensor::empty({N, K}, DType::F8_E4M3);
      uint8_t* d = static_cast<uint8_t*>(q.data.raw_data());
#pragma omp parallel for
      for (int64_t i = 0; i < N * K; ++i) d[i] = quant::float_to_e4m3(src[i] / s);
      q.weight_scale = scalar_f32(s);
      break;
    }
    case QuantFormat::Fp8Block: {
      const int64_t bn = ceil_div(N, quant::kBlock), bk = ceil_div(K, quant::kBlock);
      q.data = Tensor::empty({N, K}, DType::F8_E4M3);
      q.weight_scale = Tensor::empty({bn, bk});
      uint8_t* d = static_cast<uint8_t*>(q.data.raw_data());
      float* sc = q.weight_scale.data<float>();
#pragma omp parallel for collapse(2)
      for (int64_t i = 0; i < bn; ++i) {
        for (int64_t j = 0; j < bk; ++j) {
          const int64_t r0 = i * quant::kBlock, r1 = std::min(N, r0 + quant::kBlock);
          const int64_t c0 = j * quant::kBlock, c1 = std::min(K, c0 + quant::kBlock);
          float amax = 0.0f;
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(src[r * K + c]));
          const float s = quant::fp8_scale(amax);
          sc[i * bk + j] = s;
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) d[r * K + c] = quant::float_to_e4m3(src[r * K + c] / s);
        }
      }
      break;
    }
    case QuantFormat::Nvfp4: {
      VGEN_CHECK(K % quant::kNvfp4Block == 0, "{}: NVFP4 needs the input features ({}) to be a multiple of {}", name,
                 K, quant::kNvfp4Block);
      float amax = 0.0f;
      for (int64_t i = 0; i < N * K; ++i) amax = std::max(amax, std::fabs(src[i]));
      const float s2 = amax > 0.0f ? amax / (quant::kE2M1Max * quant::kE4M3Max) : 1.0f;
      const int64_t nb = K / quant::kNvfp4Block;
      q.data = Tensor::empty({N, K / 2}, DType::U8);
      q.weight_scale = Tensor::empty({N, nb}, DType::F8_E4M3);
      uint8_t* d = static_cast<uint8_t*>(q.data.raw_data());
      uint8_t* sc = static_cast<uint8_t*>(q.weight_scale.raw_data());
#pragma omp parallel for
      for (int64_t r = 0; r < N; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
          const float* x = src + r * K + b * quant::kNvfp4Block;
          float bmax = 0.0f;
          for (int64_t k = 0; k < quant::kNvfp4Block; ++k) bmax = std::max(bmax, std::fabs(x[k]));
          uint8_t code = quant::float_to_e4m3(bmax / quant::kE2M1Max / s2);
          // A block whose scale rounds to zero (all zero, or far below the tensor's amax) gets 1.
          if (quant::e4m3_to_float(code) == 0.0f) code = quant::float_to_e4m3(1.0f);
          sc[r * nb + b] = code;
          const float total = quant::e4m3_to_float(code) * s2;
          uint8_t* out = d + r * (K / 2) + b * (quant::kNvfp4Block / 2);
          for (int64_t k = 0; k < quant::kNvfp4Block; k += 2) {
            const uint8_t lo = quant::float_to_e2m1(x[k] / total), hi = quant::float_to_e2m1(x[k + 1] / total);
            out[k / 2] = static_cast<uint8_t>(lo | (hi << 4));
          }
        }
      }
      q.weight_scale_2 = scalar_f32(s2);
      break;
    }
  }
  return q;
}

Tensor dequantize_weight(const QuantizedWeight& qw) {
  const QuantizedWeight w = qw.to(Device::cpu());
  const int64_t N = w.out_features, K = w.in_features;
  Tensor out = Tensor::empty({N, K});
  float* o = out.data<float>();
  const Tensor data = w.data.contiguous();
  const uint8_t* d = static_cast<const uint8_t*>(data.raw_data());
  switch (w.format) {
    case QuantFormat::Fp8PerTensor: {
      const float s = host_f32(w.weight_scale).data<float>()[0];
#pragma omp parallel for
      for (int64_t i = 0; i < N * K; ++i) o[i] = quant::e4m3_to_float(d[i]) * s;
      break;
    }
    case QuantFormat::Fp8Block: {
      const Tensor sct = host_f32(w.weight_scale);
      const float* sc = sct.data<float>();
      const int64_t bk = sct.size(1);
#pragma omp parallel for
      for (int64_t r = 0; r < N; ++r)
        for (int64_t c = 0; c < K; ++c)
          o[r * K + c] = quant::e4m3_to_float(d[r * K + c]) * sc[(r / quant::kBlock) * bk + c / quant::kBlock];
      break;
    }
    case QuantFormat::Nvfp4: {
      const float s2 = host_f32(w.weight_scale_2).data<float>()[0];
      const Tensor sct = w.weight_scale.contiguous();
      const uint8_t* sc = static_cast<const uint8_t*>(sct.raw_data());
      const int64_t nb = K / quant::kNvfp4Block;
#pragma omp parallel for
      for (int64_t r = 0; r < N; ++r) {
        for (int64_t c = 0; c < K; ++c) {
          const uint8_t byte = d[r * (K / 2) + c / 2];
          const uint8_t code = (c % 2 == 0) ? (byte & 0xf) : (byte >> 4);
          // (e2m1 * block scale) is exact in float32 (and bf16); the global scale comes last.
          o[r * K + c] = quant::e2m1_to_float(code) * quant::e4m3_to_float(sc[r * nb + c / quant::kNvfp4Block]) * s2;
        }
      }
      break;
    }
  }
  return out;
}

void check_quantized_weight(const QuantizedWeight& w, const std::string& name) {
  const int64_t N = w.out_features, K = w.in_features;
  auto expect = [&](const Tensor& t, const char* suffix, DType dtype, const Shape& shape) {
    if (!t.defined()) fail("{}{}: missing ({} needs it: {} {})", name, suffix, quant_format_name(w.format),
                           dtype_name(dtype), shape_str(shape));
    // A scalar may be stored as [] or [1].
    const bool scalar_ok = shape == Shape{1} && t.numel() == 1;
    if (t.dtype() != dtype || (!scalar_ok && t.shape() != shape))
      fail("{}{}: expected {} {} for {} weight [{}, {}], got {}", name, suffix, dtype_name(dtype), shape_str(shape),
           quant_format_name(w.format), N, K, t.str());
  };
  switch (w.format) {
    case QuantFormat::Fp8PerTensor:
      expect(w.data, ".weight", DType::F8_E4M3, {N, K});
      expect(w.weight_scale, ".weight_scale", DType::F32, {1});
      break;
    case QuantFormat::Fp8Block:
      expect(w.data, ".weight", DType::F8_E4M3, {N, K});
      expect(w.weight_scale, ".weight_scale", DType::F32, {ceil_div(N, quant::kBlock), ceil_div(K, quant::kBlock)});
      break;
    case QuantFormat::Nvfp4:
      VGEN_CHECK(K % quant::kNvfp4Block == 0, "{}: NVFP4 needs the input features ({}) to be a multiple of {}", name,
                 K, quant::kNvfp4Block);
      expect(w.data, ".weight", DType::U8, {N, K / 2});
      expect(w.weight_scale, ".weight_scale", DType::F8_E4M3, {N, K / quant::kNvfp4Block});
      expect(w.weight_scale_2, ".weight_scale_2", DType::F32, {1});
      break;
  }
  if (w.input_scale.defined()) expect(w.input_scale, ".input_scale", DType::F32, {1});
}

}  // namespace vgen
