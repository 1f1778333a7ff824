// Reference attention (scores materialized per block of queries), the quantized attention's
// steps (ops/sage_attention.h), RoPE and embedding lookup.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"
#include "ops/quant.h"
#include "ops/sage_attention.h"

namespace vgen::cpu {

namespace {

// softmax(q k^T * scale + bias) v in float32; with `lse`, each row's log-sum-exp of the
// scaled, biased scores there ([B, H, Sq], -inf for a row without finite scores).
Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale, float* lse) {
  const Tensor fq = as_f32(q), fk = as_f32(k), fv = as_f32(v);
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3), Sk = k.size(2);
  Tensor fb;
  int64_t bsb = 0, bsh = 0, bsq = 0, bsk = 0;  // bias strides, 0 where broadcast
  if (bias.defined()) {
    VGEN_CHECK(bias.dim() == 4, "attention: bias {} must be 4-D", bias.str());
    const Shape want{B, H, Sq, Sk};
    for (int i = 0; i < 4; ++i)
      VGEN_CHECK(bias.size(i) == 1 || bias.size(i) == want[i], "attention: bias {} does not broadcast to {}",
                 bias.str(), shape_str(want));
    fb = as_f32(bias);
    const Shape st = contiguous_strides(bias.shape());
    bsb = bias.size(0) == 1 ? 0 : st[0];
    bsh = bias.size(1) == 1 ? 0 : st[1];
    bsq = bias.size(2) == 1 ? 0 : st[2];
    bsk = bias.size(3) == 1 ? 0 : st[3];
  }
  Tensor out = Tensor::empty({B, H, Sq, D});
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(Sq, (int64_t{1} << 24) / std::max<int64_t>(Sk, 1)));
  std::vector<float> scores(static_cast<size_t>(block * Sk));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* qp = fq.data<float>() + (b * H + h) * Sq * D;
      const float* kp = fk.data<float>() + (b * H + h) * Sk * D;
      const float* vp = fv.data<float>() + (b * H + h) * Sk * D;
      float* op = out.data<float>() + (b * H + h) * Sq * D;
      for (int64_t q0 = 0; q0 < Sq; q0 += block) {
        const int64_t rows = std::min(block, Sq - q0);
        sgemm(rows, Sk, D, qp + q0 * D, kp, true, scores.data());
#pragma omp parallel for
        for (int64_t r = 0; r < rows; ++r) {
          float* s = scores.data() + r * Sk;
          const float* bp = fb.defined() ? fb.data<float>() + b * bsb + h * bsh + (q0 + r) * bsq : nullptr;
          float mx = -INFINITY;
          for (int64_t j = 0; j < Sk; ++j) {
            s[j] = s[j] * scale + (bp ? bp[j * bsk] : 0.0f);
            mx = std::fmax(mx, s[j]);
          }
          double sum = 0.0;
          for (int64_t j = 0; j < Sk; ++j) {
            s[j] = mx == -INFINITY ? 0.0f : std::exp(s[j] - mx);
            sum += s[j];
          }
          if (lse) lse[(b * H + h) * Sq + q0 + r] = mx == -INFINITY ? -INFINITY : mx + static_cast<float>(std::log(sum));
          const float inv = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
          for (int64_t j = 0; j < Sk; ++j) s[j] *= inv;
        }
        sgemm(rows, D, Sk, scores.data(), vp, false, op + q0 * D);
      }
    }
  }
  return to_dtype(out, q.dtype());
}

}  // namespace

Tensor CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) {
  return attend(q, k, v, bias, scale, nullptr);
}

Tensor CpuBackend::attention_lse(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& lse) {
  VGEN_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous() &&
                 lse.shape() == (Shape{q.size(0), q.size(1), q.size(2)}),
             "attention_lse: lse {} must be contiguous F32 [B, H, Sq] for q {}", lse.str(), q.str());
  float* l = lse.data<float>();
  if (k.size(2) == 0)
    for (int64_t i = 0; i < lse.numel(); ++i) l[i] = -INFINITY;
  return attend(q, k, v, {}, scale, l);
}

// ops/sage_attention.h's steps in order, with the kernel's float32 operations (its sums for K's
// mean included: per 256-key chunk, 16 partial sums of every 16th key, added in order), so that
// the two have the same codes and differ in the order of the later sums only.
Tensor CpuBackend::sage_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  const Tensor fq = as_f32(q), fk = as_f32(k), fv = as_f32(v);
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), Sk = k.size(2);
  constexpr int64_t D = sage::kHeadDim, G = sage::kQGroup, N = sage::kKBlock, kStatRows = sage::kStatRows,
                    kStatGroups = sage::kStatGroups;
  const float sl2 = scale * 1.4426950408889634f;
  constexpr float kLog2_448 = 8.807354922057604f, kMagic = 12582912.0f;
  Tensor out = Tensor::empty({B, H, Sq, D});
  // int8 codes of rows [r0, r1) of x (minus mean), with their scale.
  auto quantize = [](const float* x, const float* mean, int64_t r0, int64_t r1, int32_t* codes) {
    float amax = 0.0f;
    for (int64_t i = r0 * D; i < r1 * D; ++i) amax = std::fmax(amax, std::fabs(x[i] - (mean ? mean[i % D] : 0.0f)));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t i = r0 * D; i < r1 * D; ++i) {
      const float c = std::nearbyint((x[i] - (mean ? mean[i % D] : 0.0f)) * inv);
      codes[i] = static_cast<int32_t>(std::clamp(c, -127.0f, 127.0f));
    }
    return amax > 0.0f ? amax / 127.0f : 1.0f;
  };
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const float* qp = fq.data<float>() + bh * Sq * D;
    const float* kp = fk.data<float>() + bh * Sk * D;
    const float* vp = fv.data<float>() + bh * Sk * D;
    float* op = out.data<float>() + bh * Sq * D;
    std::vector<float> mean(D), v_scale(D), v_inv(D), v_code(static_cast<size_t>(Sk * D));
    for (int64_t d = 0; d < D; ++d) {
      float sum = 0.0f, amax = 0.0f;
      for (int64_t s0 = 0; s0 < Sk; s0 += kStatRows) {
        float chunk = 0.0f;
        for (int64_t g = 0; g < kStatGroups; ++g) {
          float part = 0.0f;
          for (int64_t s = s0 + g; s < std::min(Sk, s0 + kStatRows); s += kStatGroups) {
            part += kp[s * D + d];
            amax = std::fmax(amax, std::fabs(vp[s * D + d]));
          }
          chunk += part;
        }
        sum += chunk;
      }
      mean[d] = sum / static_cast<float>(Sk);
      v_scale[d] = amax > 0.0f ? amax / 448.0f : 1.0f;
      v_inv[d] = amax > 0.0f ? 448.0f / amax : 0.0f;
    }
    for (int64_t i = 0; i < Sk * D; ++i) v_code[i] = quant::e4m3_to_float(quant::float_to_e4m3(vp[i] * v_inv[i % D]));
    std::vector<int32_t> q_code(static_cast<size_t>(Sq * D)), k_code(static_cast<size_t>(Sk * D));
    std::vector<float> q_scale((Sq + G - 1) / G), k_scale((Sk + N - 1) / N);
    for (int64_t g = 0; g < static_cast<int64_t>(q_scale.size()); ++g)
      q_scale[g] = quantize(qp, nullptr, g * G, std::min(Sq, g * G + G), q_code.data());
    for (int64_t n = 0; n < static_cast<int64_t>(k_scale.size()); ++n)
      k_scale[n] = quantize(kp, mean.data(), n * N, std::min(Sk, n * N + N), k_code.data());
#pragma omp parallel for
    for (int64_t i = 0; i < Sq; ++i) {
      const float qs = q_scale[i / G] * sl2;
      float m = -INFINITY, l = 0.0f;
      std::vector<float> o(D, 0.0f), t(D), f(N);
      for (int64_t n = 0; n * N < Sk; ++n) {
        const int64_t j0 = n * N, j1 = std::min(Sk, j0 + N);
        const float c = std::fmax(qs * k_scale[n], FLT_MIN);
        float mx = -INFINITY;
        for (int64_t j = j0; j < j1; ++j) {
          int32_t dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q_code[i * D + d] * k_code[j * D + d];
          f[j - j0] = kMagic + static_cast<float>(dot);  // exact: |dot| < 2^21
          mx = std::fmax(mx, f[j - j0]);
        }
        const float m_new = std::fmax(m, (mx - kMagic) * c);
        const float corr = m == -INFINITY ? 0.0f : std::exp2(m - m_new);
        m = m_new;
        const float off = std::fma(kMagic, c, m_new - kLog2_448);
        std::fill(t.begin(), t.end(), 0.0f);
        float block_sum = 0.0f;
        for (int64_t j = j0; j < j1; ++j) {
          const float x = std::fma(f[j - j0], c, -off);
          const float pw = quant::e4m3_to_float(quant::float_to_e4m3(sage::kPolyKeys(j) ? sage::exp2_poly(x) : std::exp2(x)));
          block_sum += pw;
          for (int64_t d = 0; d < D; ++d) t[d] += pw * v_code[j * D + d];
        }
        for (int64_t d = 0; d < D; ++d) o[d] = std::fma(o[d], corr, t[d]);
        l = std::fma(l, corr, block_sum);
      }
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int64_t d = 0; d < D; ++d) op[i * D + d] = o[d] * v_scale[d] * inv;
    }
  }
  return to_dtype(out, DType::BF16);
}

Tensor CpuBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const Tensor fx = as_f32(x), fc = as_f32(cos), fs = as_f32(sin);
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3);
  Tensor out = Tensor::empty(x.shape());
  const float* p = fx.data<float>();
  const float* c = fc.data<float>();
  const float* sn = fs.data<float>();
  float* q = out.data<float>();
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const float* cs = c + s * D;
      const float* ss = sn + s * D;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = ((b * S + s) * H + h) * D;
        for (int64_t i = 0; i < D; i += 2) {
          // As diffusers: cos from even slots, sin from odd slots of the interleaved tables.
          const float x1 = p[base + i], x2 = p[base + i + 1];
          q[base + i] = x1 * cs[i] - x2 * ss[i + 1];
          q[base + i + 1] = x1 * ss[i + 1] + x2 * cs[i];
        }
      }
    }
  }
  return to_dtype(out, x.dtype());
}

Tensor CpuBackend::embedding(const Tensor& ids, const Tensor& table) {
  // Rows are copied as bytes in the table's own dtype: exact, and no conversion of the whole
  // table (UMT5-XXL's is a billion elements) for the few rows a prompt needs.
  const Tensor fi = ids.contiguous();
  const Tensor t = table.contiguous();
  const int64_t V = table.size(0), D = table.size(1), n = ids.numel();
  Shape shape = ids.shape();
  shape.push_back(D);
  Tensor out = Tensor::empty(shape, table.dtype());
  const int64_t row = D * static_cast<int64_t>(t.element_size());
  const int64_t* id = fi.data<int64_t>();
  const char* src = static_cast<const char*>(t.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t i = 0; i < n; ++i) {
    VGEN_CHECK(id[i] >= 0 && id[i] < V, "embedding: token id {} out of range for a vocabulary of {}", id[i], V);
    std::memcpy(dst + i * row, src + id[i] * row, static_cast<size_t>(row));
  }
  return out;
}

}  // namespace vgen::cpu
