// Strided, dtype-converting copies and fills.
#include <cstring>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {
namespace {

inline double load(const char* p, DType dtype) {
  switch (dtype) {
    case DType::F32: return *reinterpret_cast<const float*>(p);
    case DType::F16: return f16_to_float(*reinterpret_cast<const uint16_t*>(p));
    case DType::BF16: return bf16_to_float(*reinterpret_cast<const uint16_t*>(p));
    case DType::F8_E4M3: return f8e4m3_to_float(*reinterpret_cast<const uint8_t*>(p));
    case DType::F8_E5M2: return f8e5m2_to_float(*reinterpret_cast<const uint8_t*>(p));
    case DType::F64: return *reinterpret_cast<const double*>(p);
    case DType::I64: return static_cast<double>(*reinterpret_cast<const int64_t*>(p));
    case DType::I32: return *reinterpret_cast<const int32_t*>(p);
    case DType::U8: return *reinterpret_cast<const uint8_t*>(p);
    case DType::BOOL: return *reinterpret_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0.0;
}

inline void store(char* p, DType dtype, double v) {
  switch (dtype) {
    case DType::F32: *reinterpret_cast<float*>(p) = static_cast<float>(v); break;
    case DType::F16: *reinterpret_cast<uint16_t*>(p) = float_to_f16(static_cast<float>(v)); break;
    case DType::BF16: *reinterpret_cast<uint16_t*>(p) = float_to_bf16(static_cast<float>(v)); break;
    case DType::F64: *reinterpret_cast<double*>(p) = v; break;
    case DType::I64: *reinterpret_cast<int64_t*>(p) = static_cast<int64_t>(v); break;
    case DType::I32: *reinterpret_cast<int32_t*>(p) = static_cast<int32_t>(v); break;
    case DType::U8: *reinterpret_cast<uint8_t*>(p) = static_cast<uint8_t>(v); break;
    case DType::BOOL: *reinterpret_cast<uint8_t*>(p) = v != 0.0; break;
    case DType::F8_E4M3:
    case DType::F8_E5M2: fail("conversion to {} is not supported on the CPU", dtype_name(dtype));
  }
}

}  // namespace

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  VGEN_CHECK(dst.device().is_cpu() && src.device().is_cpu(), "cpu copy between {} and {}", dst.str(), src.str());
  const int64_t n = dst.numel();
  if (n == 0) return;
  const DType sd = src.dtype(), dd = dst.dtype();
  const size_t ss = src.element_size(), ds = dst.element_size();
  char* dp = static_cast<char*>(dst.raw_data());
  const char* sp = static_cast<const char*>(src.raw_data());
  if (dst.is_contiguous() && src.is_contiguous()) {
    if (sd == dd) {
      std::memcpy(dp, sp, n * ds);
    } else if (sd == DType::BF16 && dd == DType::F32) {
      const uint16_t* s = reinterpret_cast<const uint16_t*>(sp);
      float* d = reinterpret_cast<float*>(dp);
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
    } else {
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) store(dp + i * ds, dd, load(sp + i * ss, sd));
    }
    return;
  }
  // General strided walk: split the index into the last dim (inner loop) and the rest.
  const int64_t rank = dst.dim();
  const int64_t inner = dst.size(-1);
  const int64_t outer = n / inner;
  const Shape& shape = dst.shape();
  const Shape& dstr = dst.strides();
  const Shape& sstr = src.strides();
#pragma omp parallel for
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, doff = 0, soff = 0;
    for (int64_t d = rank - 2; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      doff += idx * dstr[d];
      soff += idx * sstr[d];
    }
    const int64_t di = dstr[rank - 1], si = sstr[rank - 1];
    for (int64_t i = 0; i < inner; ++i) {
      char* q = dp + (doff + i * di) * static_cast<int64_t>(ds);
      const char* p = sp + (soff + i * si) * static_cast<int64_t>(ss);
      if (sd == dd) {
        std::memcpy(q, p, ds);
      } else {
        store(q, dd, load(p, sd));
      }
    }
  }
}

void CpuBackend::fill(const Tensor& dst, float value) {
  VGEN_CHECK(dst.is_contiguous(), "fill of a non-contiguous tensor {}", dst.str());
  const int64_t n = dst.numel();
  if (n == 0) return;
  char* p = static_cast<char*>(dst.raw_data());
  const size_t es = dst.element_size();
  if (dst.dtype() == DType::F32) {
    float* f = reinterpret_cast<float*>(p);
    for (int64_t i = 0; i < n; ++i) f[i] = value;
    return;
  }
  store(p, dst.dtype(), value);
  for (int64_t i = 1; i < n; ++i) std::memcpy(p + i * es, p, es);
}

Tensor as_f32(const Tensor& x) {
  if (x.dtype() == DType::F32 && x.is_contiguous() && x.device().is_cpu()) return x;
  Tensor out = Tensor::empty(x.shape(), DType::F32, Device::cpu());
  out.copy_(x);
  return out;
}

Tensor to_dtype(const Tensor& x, DType dtype) { return x.dtype() == dtype ? x : x.to(dtype); }

}  // namespace vgen::cpu
