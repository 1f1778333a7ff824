// Every op on every backend: the CPU reference against naive formulas here, and each
// other backend (CUDA when built and a GPU is present) against the CPU reference.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::max_abs_diff;
using vgen::testing::rel_l2;

namespace {

std::vector<Device> backends() {
  std::vector<Device> out{Device::cpu()};
  if (has_backend(DeviceType::CUDA)) out.push_back(Device::cuda(0));
  return out;
}

// Runs `op` on the CPU and on every other backend; results must agree to `tol` (relative L2).
template <typename F>
void on_all_backends(const std::vector<Tensor>& inputs, F op, double tol, const char* what) {
  const Tensor want = op(inputs);
  for (const Device& d : backends()) {
    if (d.is_cpu()) continue;
    std::vector<Tensor> moved;
    for (const Tensor& t : inputs) moved.push_back(t.defined() ? t.to(d) : t);
    const Tensor got = op(moved).to(Device::cpu());
    EXPECT_LT(rel_l2(got, want), tol) << what << " on " << d.str();
  }
}

Tensor rnd(const Shape& s, uint64_t seed) { return randn(s, seed); }

}  // namespace

TEST(CpuOps, LinearWithBiasAndActivations) {
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
  on_all_backends({x, w, b}, [](const std::vector<Tensor>& t) { return ops::linear(t[0], t[1], t[2], Activation::GeluTanh); }, 1e-2, "linear");
}

TEST(CpuOps, AttentionMatchesExplicitSoftmax) {
  const int64_t B = 2, H = 3, Sq = 5, Sk = 7, D = 4;
  const Tensor q = rnd({B, H, Sq, D}, 4), k = rnd({B, H, Sk, D}, 5), v = rnd({B, H, Sk, D}, 6);
  const Tensor bias = rnd({B, 1, 1, Sk}, 7);  // broadcast over heads and queries, like a key mask
  const float scale = 0.37f;
  const Tensor got = ops::attention(q, k, v, bias, scale);
  const Tensor scores = ops::add(ops::scale(ops::matmul(q, k.transpose(2, 3).contiguous()), scale), bias);
  const Tensor want = ops::matmul(ops::softmax(scores), v);
  EXPECT_LT(rel_l2(got, want), 1e-6);
  // Softmax rows sum to one.
  const std::vector<float> p = ops::softmax(scores).to_vector();
  for (int64_t r = 0; r < B * H * Sq; ++r) {
    double s = 0;
    for (int64_t j = 0; j < Sk; ++j) s += p[r * Sk + j];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  on_all_backends({q, k, v, bias}, [&](const std::vector<Tensor>& t) { return ops::attention(t[0], t[1], t[2], t[3], scale); }, 1e-2, "attention");
}

TEST(CpuOps, NormsMatchFormulas) {
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
  // Channel norm over dim 1 of [B, C, T, H, W]; the fused SiLU is silu of the norm.
  const Tensor v = rnd({1, 3, 2, 2, 2}, 11), g = rnd({3}, 12);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor vd = v.to(dt), gd = g.to(dt);
    EXPECT_EQ(ops::channel_rms_norm(vd, gd, {}, Activation::Silu).to_vector(),
              ops::silu(ops::channel_rms_norm(vd, gd, {})).to_vector());
  }
  EXPECT_THROW(ops::channel_rms_norm(v, g, {}, Activation::GeluTanh), Error);
  const std::vector<float> vv = v.to_vector(), gv = g.to_vector();
  const std::vector<float> cn = ops::channel_rms_norm(v, g, Tensor()).to_vector();
  for (int s = 0; s < 8; ++s) {
    double n = 0;
    for (int c = 0; c < 3; ++c) n += vv[c * 8 + s] * vv[c * 8 + s];
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(cn[c * 8 + s], vv[c * 8 + s] / std::sqrt(n) * std::sqrt(3.0) * gv[c], 1e-5);
  }
  on_all_backends({x, w, b}, [](const std::vector<Tensor>& t) { return ops::layer_norm(t[0], t[1], t[2], 1e-6f); }, 1e-2, "layer_norm");
  on_all_backends({x, w}, [](const std::vector<Tensor>& t) { return ops::rms_norm(t[0], t[1], 1e-6f); }, 1e-2, "rms_norm");
}

TEST(CpuOps, Conv3dMatchesDirectSum) {
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
  on_all_backends({x, w, b}, [&](const std::vector<Tensor>& t) { return ops::conv3d(t[0], t[1], t[2], p); }, 1e-2, "conv3d");
}

TEST(CpuOps, RopeRotatesPairs) {
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
  on_all_backends({x, c, sn}, [](const std::vector<Tensor>& t) { return ops::rope(t[0], t[1], t[2]); }, 1e-2, "rope");
}

TEST(CpuOps, ShapesCopiesAndSmallOps) {
  const Tensor x = rnd({2, 3, 4}, 17);
  // Strided copy through a permute, with a dtype change on the way.
  const Tensor p = x.permute({2, 0, 1}).contiguous();
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.permute({1, 2, 0}).contiguous().to_vector(), x.to_vector());
  EXPECT_LT(rel_l2(x.to(DType::BF16).permute({1, 0, 2}).contiguous().to(DType::F32), x.permute({1, 0, 2}).contiguous()), 4e-3);
  const Tensor up = ops::upsample_nearest2x(x);
  EXPECT_EQ(up.shape(), (Shape{2, 6, 8}));
  EXPECT_EQ(up.to_vector()[1 * 8 + 3], x.to_vector()[0 * 4 + 1]);
  const Tensor padded = ops::pad(x, 1, 2, 1);
  EXPECT_EQ(padded.shape(), (Shape{2, 6, 4}));
  EXPECT_EQ(padded.narrow(1, 2, 3).contiguous().to_vector(), x.to_vector());
  EXPECT_EQ(padded.narrow(1, 0, 2).contiguous().to_vector(), std::vector<float>(16, 0.0f));
  const Tensor ids = Tensor::from_vector_i64({2, 0, 1}, {3});
  const Tensor table = rnd({3, 5}, 18);
  EXPECT_EQ(ops::embedding(ids, table).select(0, 0).contiguous().to_vector(), table.select(0, 2).contiguous().to_vector());
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({3}, {1}), table), Error);
  EXPECT_NEAR(ops::mean_abs(Tensor::from_vector({-1, 2, -3, 4}, {4})), 2.5, 1e-12);
  EXPECT_EQ(ops::axpby(2.0f, Tensor::from_vector({1, 2}, {2}), -1.0f, Tensor::from_vector({3, 5}, {2})).to_vector(),
            (std::vector<float>{-1, -1}));
  EXPECT_EQ(ops::clamp(Tensor::from_vector({-2, 0.5f, 2}, {3}), -1, 1).to_vector(), (std::vector<float>{-1, 0.5f, 1}));
  EXPECT_THROW(ops::add(rnd({2, 3}, 1), rnd({4}, 2)), Error);
  on_all_backends({x, x.narrow(2, 0, 1).contiguous()}, [](const std::vector<Tensor>& t) { return ops::mul(ops::silu(t[0]), t[1]); }, 1e-2, "mul+silu");
}
