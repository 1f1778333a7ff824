// The CPU reference's own checks: each op against an independent naive formula (loops in
// double), never against other ops of the same backend. Every other backend is held to the
// CPU reference by the table-driven tests/ops/backend_ops_test.cpp.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::rel_l2;

namespace {

Tensor rnd(const Shape& s, uint64_t seed) { return randn(s, seed); }

}  // namespace

TEST(CpuReference, LinearWithBiasAndActivations) {
  const Tensor x = rnd({3, 5, 7}, 1), w = rnd({4, 7}, 2), b = rnd({4}, 3);
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Gelu, Activation::Silu}) {
    const std::vector<float> got = ops::linear(x, w, b, act).to_vector();
    for (int m = 0; m < 15; ++m) {
      for (int n = 0; n < 4; ++n) {
        double s = bv[n];
        for (int k = 0; k < 7; ++k) s += static_cast<double>(xv[m * 7 + k]) * wv[n * 7 + k];
        double want = s;
        if (act == Activation::GeluTanh) want = 0.5 * s * (1 + std::tanh(std::sqrt(2 / M_PI) * (s + 0.044715 * s * s * s)));
        if (act == Activation::Gelu) want = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
        if (act == Activation::Silu) want = s / (1 + std::exp(-s));
        EXPECT_NEAR(got[m * 4 + n], want, 1e-5);
      }
    }
  }
}

// softmax(q k^T * scale + bias) v by naive loops in double, with a key-mask bias broadcast over
// heads and queries (some keys -inf) and one per head and query.
TEST(CpuReference, AttentionMatchesNaiveLoops) {
  const int64_t B = 2, H = 3, Sq = 5, Sk = 7, D = 4;
  const Tensor q = rnd({B, H, Sq, D}, 4), k = rnd({B, H, Sk, D}, 5), v = rnd({B, H, Sk, D}, 6);
  std::vector<float> mask = rnd({B, 1, 1, Sk}, 7).to_vector();
  mask[2] = mask[Sk + 5] = -INFINITY;
  const Tensor key_mask = Tensor::from_vector(mask, {B, 1, 1, Sk});
  const Tensor per_query = rnd({1, H, Sq, Sk}, 19);
  const float scale = 0.37f;
  const std::vector<float> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  for (const Tensor& bias : {Tensor(), key_mask, per_query}) {
    const std::vector<float> bv = bias.defined() ? bias.to_vector() : std::vector<float>();
    const std::vector<float> got = ops::attention(q, k, v, bias, scale).to_vector();
    ASSERT_EQ(got.size(), static_cast<size_t>(B * H * Sq * D));
    double num = 0, den = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Sq; ++i) {
          std::vector<double> s(Sk);
          double mx = -INFINITY;
          for (int64_t j = 0; j < Sk; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += static_cast<double>(qv[((b * H + h) * Sq + i) * D + d]) * kv[((b * H + h) * Sk + j) * D + d];
            s[j] = dot * scale;
            if (bias.defined()) s[j] += bias.size(0) == B ? bv[b * Sk + j] : bv[(h * Sq + i) * Sk + j];
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (int64_t j = 0; j < Sk; ++j) sum += s[j] = std::exp(s[j] - mx);
          for (int64_t d = 0; d < D; ++d) {
            double o = 0;
            for (int64_t j = 0; j < Sk; ++j) o += s[j] / sum * vv[((b * H + h) * Sk + j) * D + d];
            const double e = got[((b * H + h) * Sq + i) * D + d] - o;
            num += e * e;
            den += o * o;
          }
        }
    // float32 products and sums against double: a few float32 roundings per element.
    EXPECT_LT(std::sqrt(num / den), 1e-6) << (bias.defined() ? bias.str() : "no bias");
  }
}

// Softmax over the last dim against exp(x - max) / sum in double; rows sum to one.
TEST(CpuReference, SoftmaxMatchesFormula) {
  const Tensor x = ops::scale(rnd({6, 11}, 20), 4.0f);
  const std::vector<float> xv = x.to_vector(), got = ops::softmax(x).to_vector();
  for (int r = 0; r < 6; ++r) {
    double mx = -INFINITY, sum = 0, total = 0;
    for (int i = 0; i < 11; ++i) mx = std::max<double>(mx, xv[r * 11 + i]);
    for (int i = 0; i < 11; ++i) sum += std::exp(xv[r * 11 + i] - mx);
    for (int i = 0; i < 11; ++i) {
      EXPECT_NEAR(got[r * 11 + i], std::exp(xv[r * 11 + i] - mx) / sum, 1e-7);
      total += got[r * 11 + i];
    }
    EXPECT_NEAR(total, 1.0, 1e-6);
  }
}

TEST(CpuReference, NormsMatchFormulas) {
  const Tensor x = rnd({4, 9}, 8), w = rnd({9}, 9), b = rnd({9}, 10);
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  const std::vector<float> ln = ops::layer_norm(x, w, b, 1e-6f).to_vector();
  const std::vector<float> rms = ops::rms_norm(x, w, 1e-6f).to_vector();
  for (int r = 0; r < 4; ++r) {
    double mean = 0, var = 0, ss = 0;
    for (int i = 0; i < 9; ++i) mean += xv[r * 9 + i] / 9.0;
    for (int i = 0; i < 9; ++i) var += (xv[r * 9 + i] - mean) * (xv[r * 9 + i] - mean) / 9.0;
    for (int i = 0; i < 9; ++i) ss += xv[r * 9 + i] * xv[r * 9 + i] / 9.0;
    for (int i = 0; i < 9; ++i) {
      EXPECT_NEAR(ln[r * 9 + i], (xv[r * 9 + i] - mean) / std::sqrt(var + 1e-6) * wv[i] + bv[i], 1e-5);
      EXPECT_NEAR(rms[r * 9 + i], xv[r * 9 + i] / std::sqrt(ss + 1e-6) * wv[i], 1e-5);
    }
  }
  // Channel norm over dim 1 of [B, C, T, H, W].
  const Tensor v = rnd({1, 3, 2, 2, 2}, 11), g = rnd({3}, 12);
  EXPECT_THROW(ops::channel_rms_norm(v, g, {}, Activation::GeluTanh), Error);
  const std::vector<float> vv = v.to_vector(), gv = g.to_vector();
  const std::vector<float> cn = ops::channel_rms_norm(v, g, Tensor()).to_vector();
  for (int s = 0; s < 8; ++s) {
    double n = 0;
    for (int c = 0; c < 3; ++c) n += vv[c * 8 + s] * vv[c * 8 + s];
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(cn[c * 8 + s], vv[c * 8 + s] / std::sqrt(n) * std::sqrt(3.0) * gv[c], 1e-5);
  }
}

// The channel norm with bias and the fused SiLU against the formula in double:
// y = x / max(||x||_2 over C, 1e-12) * sqrt(C) * gamma + bias, rounded to x's dtype, then
// silu(y) = y / (1 + exp(-y)) of that rounded y, rounded again.
TEST(CpuReference, ChannelRmsNormWithBiasAndSiluMatchesFormula) {
  const int64_t B = 2, C = 5, S = 12;  // [B, C, 2, 2, 3]
  const Tensor x = rnd({B, C, 2, 2, 3}, 21), gamma = rnd({C, 1, 1, 1}, 22), bias = rnd({C}, 23);
  for (DType dt : {DType::F32, DType::BF16}) {
    const auto round = [dt](double y) {
      return dt == DType::F32 ? static_cast<double>(static_cast<float>(y))
                              : static_cast<double>(bf16_to_float(float_to_bf16(static_cast<float>(y))));
    };
    const Tensor xd = x.to(dt), gd = gamma.to(dt);
    const std::vector<float> xv = xd.to_vector(), gv = gd.to_vector(), bv = bias.to_vector();
    const std::vector<float> plain = ops::channel_rms_norm(xd, gd, bias).to_vector();
    const std::vector<float> fused = ops::channel_rms_norm(xd, gd, bias, Activation::Silu).to_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) {
        double n = 0;
        for (int64_t c = 0; c < C; ++c) n += static_cast<double>(xv[(b * C + c) * S + s]) * xv[(b * C + c) * S + s];
        n = std::max(std::sqrt(n), 1e-12);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = (b * C + c) * S + s;
          const double y = round(xv[i] / n * std::sqrt(static_cast<double>(C)) * gv[c] + bv[c]);
          // The SiLU acts on the norm as rounded to x's dtype (the CPU's own, checked above).
          const double want = round(plain[i] / (1.0 + std::exp(-static_cast<double>(plain[i]))));
          // float32: float arithmetic against double; bf16: at most one rounding step apart (a
          // float32 result on the other side of a rounding boundary), 2^-7 relative at most.
          const double tol_y = dt == DType::F32 ? 1e-5 : std::ldexp(std::fabs(y), -7) + 1e-6;
          const double tol = dt == DType::F32 ? 1e-6 : std::ldexp(std::fabs(want), -7) + 1e-6;
          EXPECT_NEAR(plain[i], y, tol_y) << dtype_name(dt) << " element " << i;
          EXPECT_NEAR(fused[i], want, tol) << dtype_name(dt) << " element " << i;
        }
      }
  }
}

// torch.nn.GroupNorm against the formula in double: per (sample, group) the mean and biased
// variance over the group's channels x positions, y = (x - mean) / sqrt(var + eps) * w + b
// rounded to x's dtype, then silu of that rounded y rounded again. Inputs with a large mean
// (the statistics must not lose the variance to it), with and without weight and bias, 2-D to
// 5-D inputs.
TEST(CpuReference, GroupNormMatchesFormula) {
  struct Case {
    Shape shape;
    int64_t groups;
    bool weight, bias;
    float offset;
  };
  const float eps = 1e-6f;
  for (const Case& k : std::vector<Case>{{{2, 6, 7, 13}, 3, true, true, 0.0f},
                                         {{1, 96, 1, 3, 5}, 32, true, false, 20.0f},
                                         {{3, 4}, 2, false, true, -5.0f},
                                         {{2, 8, 1, 1, 1}, 8, false, false, 0.0f},
                                         {{1, 6, 2, 3, 4}, 1, true, true, 100.0f}}) {
    const int64_t N = k.shape[0], C = k.shape[1], S = shape_numel(k.shape) / (N * C), Cg = C / k.groups;
    const Tensor x = ops::add_scalar(rnd(k.shape, 31), k.offset);
    const Tensor w = k.weight ? rnd({C}, 32) : Tensor(), b = k.bias ? rnd({C}, 33) : Tensor();
    for (DType dt : {DType::F32, DType::BF16}) {
      const auto round = [dt](double y) {
        return dt == DType::F32 ? static_cast<double>(static_cast<float>(y))
                                : static_cast<double>(bf16_to_float(float_to_bf16(static_cast<float>(y))));
      };
      const Tensor xd = x.to(dt), wd = k.weight ? w.to(dt) : Tensor(), bd = k.bias ? b.to(dt) : Tensor();
      const std::vector<float> xv = xd.to_vector();
      const std::vector<float> wv = k.weight ? wd.to_vector() : std::vector<float>(C, 1.0f);
      const std::vector<float> bv = k.bias ? bd.to_vector() : std::vector<float>(C, 0.0f);
      const std::vector<float> plain = ops::group_norm(xd, wd, bd, k.groups, eps).to_vector();
      const std::vector<float> fused = ops::group_norm(xd, wd, bd, k.groups, eps, Activation::Silu).to_vector();
      const std::string what = fmt::format("{} {} groups {}", dtype_name(dt), shape_str(k.shape), k.groups);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t g = 0; g < k.groups; ++g) {
          const int64_t first = (n * C + g * Cg) * S, count = Cg * S;
          double mean = 0, var = 0;
          for (int64_t i = 0; i < count; ++i) mean += xv[first + i];
          mean /= static_cast<double>(count);
          for (int64_t i = 0; i < count; ++i) var += (xv[first + i] - mean) * (xv[first + i] - mean);
          var /= static_cast<double>(count);
          for (int64_t i = 0; i < count; ++i) {
            const int64_t c = g * Cg + i / S, at = first + i;
            const double y = round((xv[at] - mean) / std::sqrt(var + eps) * wv[c] + bv[c]);
            // The SiLU acts on the norm as rounded to x's dtype (checked just below).
            const double want = round(plain[at] / (1.0 + std::exp(-static_cast<double>(plain[at]))));
            // float32: float arithmetic against double (|y| up to a few); bf16: at most one
            // rounding step apart, 2^-7 relative.
            const double tol_y = dt == DType::F32 ? 2e-5 : std::ldexp(std::fabs(y), -7) + 1e-6;
            const double tol = dt == DType::F32 ? 1e-6 : std::ldexp(std::fabs(want), -7) + 1e-6;
            EXPECT_NEAR(plain[at], y, tol_y) << what << " element " << at;
            EXPECT_NEAR(fused[at], want, tol) << what << " element " << at;
          }
        }
      }
    }
  }
}

// The group norm's refusals name what is wrong.
TEST(CpuReference, GroupNormRefusesBadGroupsAndShapes) {
  using vgen::testing::expect_error;
  const Tensor x = rnd({2, 6, 4, 4}, 34), w = rnd({6}, 35);
  expect_error([&] { ops::group_norm(x, w, w, 4, 1e-6f); }, "6 channels of input");
  expect_error([&] { ops::group_norm(x, w, w, 4, 1e-6f); }, "do not split into 4 groups");
  expect_error([&] { ops::group_norm(x, w, w, 0, 1e-6f); }, "do not split into 0 groups");
  expect_error([&] { ops::group_norm(x, rnd({5}, 36), {}, 3, 1e-6f); }, "weight F32[5] cpu must be [6]");
  expect_error([&] { ops::group_norm(x, {}, rnd({2, 3}, 37), 3, 1e-6f); }, "bias F32[2, 3] cpu must be [6]");
  expect_error([&] { ops::group_norm(rnd({6}, 38), {}, {}, 3, 1e-6f); }, "must be [N, C, *spatial]");
  expect_error([&] { ops::group_norm(x, w, w, 3, 1e-6f, Activation::GeluTanh); }, "only SiLU");
}

// Causal padding (time_padding_before) is the same as padding the input explicitly.
TEST(CpuReference, Conv3dTimePaddingBeforeMatchesExplicitPad) {
  const Tensor x = rnd({2, 3, 5, 6, 7}, 24), w = rnd({4, 3, 3, 3, 3}, 25), b = rnd({4}, 26);
  for (int64_t before : {0, 1, 2, 4}) {
    for (int64_t after : {0, 1}) {
      for (int64_t st : {1, 2}) {
        Conv3dParams p;
        p.stride = {st, 1, 2};
        p.padding = {after, 1, 0};
        p.time_padding_before = before;
        Conv3dParams explicit_p = p;
        explicit_p.padding[0] = 0;
        explicit_p.time_padding_before = -1;
        const Tensor want = ops::conv3d(ops::pad(x, 2, before, after), w, b, explicit_p);
        const Tensor got = ops::conv3d(x, w, b, p);
        ASSERT_EQ(got.shape(), want.shape()) << before << " " << after << " " << st;
        EXPECT_LT(rel_l2(got, want), 1e-6) << "before " << before << " after " << after << " stride " << st;
      }
    }
  }
  // -1 keeps the symmetric padding.
  Conv3dParams sym;
  sym.padding = {1, 1, 1};
  Conv3dParams same = sym;
  same.time_padding_before = 1;
  EXPECT_LT(rel_l2(ops::conv3d(x, w, b, sym), ops::conv3d(x, w, b, same)), 1e-7);
}

TEST(CpuReference, Conv3dMatchesDirectSum) {
  const Tensor x = rnd({2, 3, 4, 5, 6}, 13), w = rnd({4, 3, 3, 2, 3}, 14), b = rnd({4}, 15);
  Conv3dParams p;
  p.stride = {1, 2, 1};
  p.padding = {1, 0, 1};
  const Tensor got = ops::conv3d(x, w, b, p);
  const int64_t To = (4 + 2 - 3) / 1 + 1, Ho = (5 - 2) / 2 + 1, Wo = (6 + 2 - 3) / 1 + 1;
  ASSERT_EQ(got.shape(), (Shape{2, 4, To, Ho, Wo}));
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), gv = got.to_vector();
  double worst = 0;
  for (int n = 0; n < 2; ++n)
    for (int o = 0; o < 4; ++o)
      for (int t = 0; t < To; ++t)
        for (int h = 0; h < Ho; ++h)
          for (int ww = 0; ww < Wo; ++ww) {
            double s = bv[o];
            for (int c = 0; c < 3; ++c)
              for (int dt = 0; dt < 3; ++dt)
                for (int dh = 0; dh < 2; ++dh)
                  for (int dw = 0; dw < 3; ++dw) {
                    const int ti = t - 1 + dt, hi = h * 2 + dh, wi = ww - 1 + dw;
                    if (ti < 0 || ti >= 4 || hi >= 5 || wi < 0 || wi >= 6) continue;
                    s += static_cast<double>(xv[(((n * 3 + c) * 4 + ti) * 5 + hi) * 6 + wi]) *
                         wv[(((o * 3 + c) * 3 + dt) * 2 + dh) * 3 + dw];
                  }
            worst = std::max(worst, std::fabs(s - gv[(((n * 4 + o) * To + t) * Ho + h) * Wo + ww]));
          }
  EXPECT_LT(worst, 1e-5);
  // With a residual: the direct sum plus the residual at every output position; one of another
  // shape or dtype is refused, naming it.
  const Tensor r = rnd(got.shape(), 16);
  const std::vector<float> with = ops::conv3d(x, w, b, p, r).to_vector(), rv = r.to_vector();
  double worst_r = 0;
  for (size_t i = 0; i < gv.size(); ++i) worst_r = std::max(worst_r, std::fabs(static_cast<double>(gv[i]) + rv[i] - with[i]));
  EXPECT_LT(worst_r, 1e-5);
  using vgen::testing::expect_error;
  expect_error([&] { ops::conv3d(x, w, b, p, rnd({2, 4, To, Ho, Wo + 1}, 17)); }, "residual F32[2, 4, 4, 2, 7]");
  expect_error([&] { ops::conv3d(x, w, b, p, r.to(DType::BF16)); }, "conv3d: residual BF16");
}

TEST(CpuReference, RopeRotatesPairs) {
  const int64_t S = 3, D = 4;
  const Tensor x = rnd({1, S, 2, D}, 16);
  std::vector<float> cosv(S * D), sinv(S * D);
  for (int s = 0; s < S; ++s)
    for (int i = 0; i < D; i += 2) {
      const double angle = 0.3 * (s + 1) * (i + 1);
      cosv[s * D + i] = cosv[s * D + i + 1] = static_cast<float>(std::cos(angle));
      sinv[s * D + i] = sinv[s * D + i + 1] = static_cast<float>(std::sin(angle));
    }
  const Tensor c = Tensor::from_vector(cosv, {S, D}), sn = Tensor::from_vector(sinv, {S, D});
  const std::vector<float> got = ops::rope(x, c, sn).to_vector(), xv = x.to_vector();
  for (int s = 0; s < S; ++s)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < D; i += 2) {
        const int base = (s * 2 + h) * D + i;
        const double a = 0.3 * (s + 1) * (i + 1);
        EXPECT_NEAR(got[base], xv[base] * std::cos(a) - xv[base + 1] * std::sin(a), 1e-6);
        EXPECT_NEAR(got[base + 1], xv[base] * std::sin(a) + xv[base + 1] * std::cos(a), 1e-6);
      }
}

TEST(CpuReference, ShapesCopiesAndSmallOps) {
  const Tensor x = rnd({2, 3, 4}, 17);
  // Strided copy through a permute, with a dtype change on the way.
  const Tensor p = x.permute({2, 0, 1}).contiguous();
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.permute({1, 2, 0}).contiguous().to_vector(), x.to_vector());
  EXPECT_LT(rel_l2(x.to(DType::BF16).permute({1, 0, 2}).contiguous().to(DType::F32), x.permute({1, 0, 2}).contiguous()), 4e-3);
  const Tensor padded = ops::pad(x, 1, 2, 1);
  EXPECT_EQ(padded.shape(), (Shape{2, 6, 4}));
  EXPECT_EQ(padded.narrow(1, 2, 3).contiguous().to_vector(), x.to_vector());
  EXPECT_EQ(padded.narrow(1, 0, 2).contiguous().to_vector(), std::vector<float>(16, 0.0f));
  // A channels-last 3-D input is padded in its own layout, to the same values.
  const Tensor frames = rnd({2, 3, 1, 4, 5}, 19);
  const Tensor padded_cl = ops::pad(frames.to_channels_last_3d(), 3, 1, 2);
  EXPECT_TRUE(padded_cl.is_channels_last_3d());
  EXPECT_EQ(padded_cl.contiguous().to_vector(), ops::pad(frames, 3, 1, 2).to_vector());
  const Tensor ids = Tensor::from_vector_i64({2, 0, 1}, {3});
  const Tensor table = rnd({3, 5}, 18);
  EXPECT_EQ(ops::embedding(ids, table).select(0, 0).contiguous().to_vector(), table.select(0, 2).contiguous().to_vector());
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({3}, {1}), table), Error);
  EXPECT_NEAR(ops::mean_abs(Tensor::from_vector({-1, 2, -3, 4}, {4})), 2.5, 1e-12);
  EXPECT_EQ(ops::axpby(2.0f, Tensor::from_vector({1, 2}, {2}), -1.0f, Tensor::from_vector({3, 5}, {2})).to_vector(),
            (std::vector<float>{-1, -1}));
  EXPECT_EQ(ops::clamp(Tensor::from_vector({-2, 0.5f, 2}, {3}), -1, 1).to_vector(), (std::vector<float>{-1, 0.5f, 1}));
  EXPECT_THROW(ops::add(rnd({2, 3}, 1), rnd({4}, 2)), Error);
}

// ops::sage_attention (ops/sage_attention.h) by naive loops: the quantization steps written out
// again, sums in double, the block-wise online softmax as the recipe states it.
TEST(CpuReference, SageAttentionMatchesNaiveLoops) {
  const int64_t B = 1, H = 2, Sq = 37, Sk = 300, D = 128;
  const Tensor q = rnd({B, H, Sq, D}, 31).to(DType::BF16), k = ops::scale(rnd({B, H, Sk, D}, 32), 2.0f).to(DType::BF16),
               v = rnd({B, H, Sk, D}, 33).to(DType::BF16);
  const float scale = 0.0883883f;
  const std::vector<float> got = ops::sage_attention(q, k, v, scale).to(DType::F32).to_vector();
  const std::vector<float> qv = q.to(DType::F32).to_vector(), kv = k.to(DType::F32).to_vector(),
                           vv = v.to(DType::F32).to_vector();
  auto e4m3 = [](double x) {  // round to nearest e4m3 value (3 mantissa bits), saturating at 448
    if (x == 0) return 0.0;
    const double a = std::min(std::fabs(x), 448.0);
    const int e = std::max(static_cast<int>(std::floor(std::log2(a))), -6);
    const double step = std::ldexp(1.0, e - 3);
    return std::copysign(std::nearbyint(a / step) * step, x);
  };
  double num = 0, den = 0;
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const float* qp = qv.data() + bh * Sq * D;
    const float* kp = kv.data() + bh * Sk * D;
    const float* vp = vv.data() + bh * Sk * D;
    std::vector<double> mean(D, 0.0), vmax(D, 0.0);
    for (int64_t j = 0; j < Sk; ++j)
      for (int64_t d = 0; d < D; ++d) {
        mean[d] += kp[j * D + d] / static_cast<double>(Sk);
        vmax[d] = std::max(vmax[d], std::fabs(static_cast<double>(vp[j * D + d])));
      }
    // int8 codes and scales: q per 16 rows, k - mean per 128 keys.
    auto codes = [&](const float* x, const std::vector<double>* m, int64_t rows, int64_t group, std::vector<double>& c,
                     std::vector<double>& s) {
      c.assign(rows * D, 0.0);
      s.assign((rows + group - 1) / group, 1.0);
      for (int64_t g = 0; g * group < rows; ++g) {
        const int64_t r1 = std::min(rows, g * group + group);
        double amax = 0;
        for (int64_t i = g * group * D; i < r1 * D; ++i) amax = std::max(amax, std::fabs(x[i] - (m ? (*m)[i % D] : 0.0)));
        if (amax == 0) continue;
        s[g] = amax / 127;
        for (int64_t i = g * group * D; i < r1 * D; ++i) c[i] = std::nearbyint((x[i] - (m ? (*m)[i % D] : 0.0)) / s[g]);
      }
    };
    std::vector<double> qc, qs, kc, ks;
    codes(qp, nullptr, Sq, 16, qc, qs);
    codes(kp, &mean, Sk, 128, kc, ks);
    for (int64_t i = 0; i < Sq; ++i) {
      double m = -INFINITY, l = 0;
      std::vector<double> o(D, 0.0);
      for (int64_t j0 = 0; j0 < Sk; j0 += 128) {
        const int64_t j1 = std::min(Sk, j0 + 128);
        const double c = qs[i / 16] * scale * M_LOG2E * ks[j0 / 128];
        std::vector<double> s(j1 - j0);
        double mx = -INFINITY;
        for (int64_t j = j0; j < j1; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qc[i * D + d] * kc[j * D + d];
          mx = std::max(mx, s[j - j0] = dot * c);
        }
        const double m_new = std::max(m, mx), corr = m == -INFINITY ? 0.0 : std::exp2(m - m_new);
        l *= corr;
        for (double& x : o) x *= corr;
        m = m_new;
        for (int64_t j = j0; j < j1; ++j) {
          const double w = e4m3(std::exp2(s[j - j0] - m) * 448);  // rounded weights, their sum is l
          l += w;
          for (int64_t d = 0; d < D; ++d)
            o[d] += w * (vmax[d] > 0 ? e4m3(vp[j * D + d] * 448 / vmax[d]) * vmax[d] / 448 : 0.0);
        }
      }
      for (int64_t d = 0; d < D; ++d) {
        const double want = o[d] / l, e = got[(bh * Sq + i) * D + d] - want;
        num += e * e;
        den += want * want;
      }
    }
  }
  EXPECT_LT(std::sqrt(num / den), 3e-3);  // bf16 output; e4m3 roundings may flip at a tie
}

// Its error against exact attention is the quantization's (not zero, not large), and K's
// smoothing takes a large offset shared by every key out before the int8 rounding: softmax does
// not see it, and neither does the quantized result.
TEST(CpuReference, SageAttentionErrorIsTheQuantizationsAndSmoothingRemovesKeyOffsets) {
  const int64_t B = 1, H = 2, Sq = 64, Sk = 500, D = 128;
  const Tensor q = rnd({B, H, Sq, D}, 41).to(DType::BF16), k = rnd({B, H, Sk, D}, 42).to(DType::BF16),
               v = rnd({B, H, Sk, D}, 43).to(DType::BF16);
  const float scale = 1.0f / std::sqrt(128.0f);
  const Tensor exact = ops::attention(q, k, v, {}, scale), quant = ops::sage_attention(q, k, v, scale);
  const double err = rel_l2(quant.to(DType::F32), exact.to(DType::F32));
  EXPECT_GT(err, 1e-3);
  EXPECT_LT(err, 8e-2);
  const Tensor shifted = ops::add(k.to(DType::F32), ops::scale(rnd({1, 1, 1, D}, 44), 30.0f)).to(DType::BF16);
  const Tensor exact_shifted = ops::attention(q, shifted, v, {}, scale);
  const double shift_err = rel_l2(ops::sage_attention(q, shifted, v, scale).to(DType::F32), exact_shifted.to(DType::F32));
  EXPECT_LT(shift_err, 1.5 * err);
}

TEST(CpuReference, SageAttentionNamesWhatItDoesNotTake) {
  const Tensor q = rnd({1, 2, 8, 128}, 51).to(DType::BF16), k = rnd({1, 2, 9, 128}, 52).to(DType::BF16);
  vgen::testing::expect_error([&] { ops::sage_attention(q.to(DType::F32), k, k); }, "BF16");
  const Tensor q64 = rnd({1, 2, 8, 64}, 53).to(DType::BF16);
  vgen::testing::expect_error([&] { ops::sage_attention(q64, q64, q64); }, "head dim 128");
  vgen::testing::expect_error([&] { ops::sage_attention(q, k, k.narrow(2, 0, 5)); }, "key and value lengths");
}
