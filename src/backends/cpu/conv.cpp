// 3-D convolution as im2col + GEMM over chunks of output positions.
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgen::cpu {

Tensor CpuBackend::conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p,
                          const Tensor& residual) {
  const Tensor fx = as_f32(x), fw = as_f32(weight);
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t O = weight.size(0), kt = weight.size(2), kh = weight.size(3), kw = weight.size(4);
  const auto [st, sh, sw] = p.stride;
  const auto [pt_after, ph, pw] = p.padding;
  const int64_t pt = p.time_padding_before >= 0 ? p.time_padding_before : pt_after;  // frames before T
  const int64_t To = (T + pt + pt_after - kt) / st + 1;
  const int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
  const int64_t K = C * kt * kh * kw, L = To * Ho * Wo;
  Tensor out = Tensor::empty({B, O, To, Ho, Wo});
  // Columns for at most ~16M floats at a time.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(L, (int64_t{1} << 24) / K));
  std::vector<float> col(static_cast<size_t>(K * chunk));
  std::vector<float> res(static_cast<size_t>(O * chunk));
  const Tensor fb = bias.defined() ? as_f32(bias) : Tensor();
  const Tensor fr = residual.defined() ? as_f32(residual) : Tensor();  // contiguous [B, O, L]
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = fx.data<float>() + b * C * T * H * W;
    float* ob = out.data<float>() + b * O * L;
    for (int64_t l0 = 0; l0 < L; l0 += chunk) {
      const int64_t n = std::min(chunk, L - l0);
#pragma omp parallel for
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c = k / (kt * kh * kw), dt = (k / (kh * kw)) % kt, dh = (k / kw) % kh, dw = k % kw;
        const float* xc = xb + c * T * H * W;
        float* dst = col.data() + k * n;
        // Walk the output positions with counters instead of a division per element.
        int64_t to = l0 / (Ho * Wo), ho = (l0 / Wo) % Ho, wo = l0 % Wo;
        for (int64_t j = 0; j < n; ++j) {
          const int64_t ti = to * st - pt + dt, hi = ho * sh - ph + dh, wi = wo * sw - pw + dw;
          dst[j] = (ti < 0 || ti >= T || hi < 0 || hi >= H || wi < 0 || wi >= W) ? 0.0f : xc[(ti * H + hi) * W + wi];
          if (++wo == Wo) {
            wo = 0;
            if (++ho == Ho) {
              ho = 0;
              ++to;
            }
          }
        }
      }
      sgemm(O, n, K, fw.data<float>(), col.data(), false, res.data());
#pragma omp parallel for
      for (int64_t o = 0; o < O; ++o) {
        const float bo = fb.defined() ? fb.data<float>()[o] : 0.0f;
        const float* rb = fr.defined() ? fr.data<float>() + (b * O + o) * L + l0 : nullptr;
        for (int64_t j = 0; j < n; ++j) ob[o * L + l0 + j] = res[o * n + j] + bo + (rb ? rb[j] : 0.0f);
      }
    }
  }
  return to_dtype(out, x.dtype());
}

}  // namespace vgen::cpu
