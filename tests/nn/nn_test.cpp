// The nn layer: loading errors that name the tensor, fused projections in the right order,
// attention against a plain loop, the causal conv's chunked decode against one pass, and the
// upsampler's phase convolutions against upsampling and convolving.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/weights.h"
#include "ops/ops.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::error_of;
using vgen::testing::expect_error;
using vgen::testing::max_abs_diff;

namespace {

// Deterministic values in [-1, 1) (no two tensors alike).
Tensor values(const Shape& shape, int seed) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.7 * (i + 1) + 1.3 * seed));
  return Tensor::from_vector(v, shape);
}

// A checkpoint file holding `tensors`, opened as a WeightStore.
WeightStore store_of(const std::string& tag, const std::map<std::string, Tensor>& tensors) {
  const std::string path = vgen::testing::test_temp_path("nn_" + tag + ".safetensors");
  save_safetensors(path, tensors);
  return WeightStore::open_files({path});
}

}  // namespace

TEST(NnLinear, LoadingErrorsNameTheTensorAndShape) {
  const WeightStore store = store_of("linear_errors", {{"proj.weight", values({4, 3}, 1)}, {"proj.bias", values({4}, 2)}});
  const nn::Weights w(store, DType::F32, Device::cpu());
  expect_error([&] { nn::Linear(w, "proj", 3, 5); }, "'proj.weight' has shape [4, 3], expected [5, 3]");
  const std::string missing = error_of([&] { nn::Linear(w, "attn.to_q", 3, 4); });
  EXPECT_NE(missing.find("missing tensor 'attn.to_q.weight'"), std::string::npos) << missing;
  EXPECT_NE(missing.find(store.source()), std::string::npos) << missing;
  // A bias the checkpoint lacks is named too.
  const WeightStore no_bias = store_of("linear_no_bias", {{"proj.weight", values({4, 3}, 1)}});
  expect_error([&] { nn::Linear(nn::Weights(no_bias, DType::F32, Device::cpu()), "proj", 3, 4); },
               "missing tensor 'proj.bias'");
  EXPECT_NO_THROW(nn::Linear(nn::Weights(no_bias, DType::F32, Device::cpu()), "proj", 3, 4, /*bias=*/false));
}

TEST(NnLinear, ForwardNamesTheLayerOnAWrongInput) {
  const WeightStore store = store_of("linear_forward", {{"ffn.net.2.weight", values({4, 3}, 1)}, {"ffn.net.2.bias", values({4}, 2)}});
  const nn::Linear l(nn::Weights(store, DType::F32, Device::cpu()), "ffn.net.2", 3, 4);
  EXPECT_EQ(l.forward(values({2, 3}, 3)).shape(), (Shape{2, 4}));
  expect_error([&] { l.forward(values({2, 5}, 3)); }, "nn::Linear 'ffn.net.2': input F32[2, 5]");
  expect_error([] { nn::Linear().forward(Tensor::zeros({1, 1})); }, "never loaded");
}

// to_q | to_k | to_v fused: the output holds q, then k, then v, each as its own layer gives it.
TEST(NnLinear, FusedProjectionsKeepTheirOrder) {
  std::map<std::string, Tensor> tensors;
  for (int i = 0; const char* name : {"to_q", "to_k", "to_v"}) {
    tensors[std::string(name) + ".weight"] = values({2, 3}, 10 + i);
    tensors[std::string(name) + ".bias"] = values({2}, 20 + i);
    ++i;
  }
  const WeightStore store = store_of("linear_fused", tensors);
  const nn::Weights w(store, DType::F32, Device::cpu());
  const nn::Linear fused = nn::Linear::fused(w, {"to_q", "to_k", "to_v"}, 3, 2);
  const Tensor x = values({5, 3}, 4);
  const Tensor y = fused.forward(x);
  ASSERT_EQ(y.shape(), (Shape{5, 6}));
  for (int i = 0; const char* name : {"to_q", "to_k", "to_v"}) {
    const Tensor part = nn::Linear(w, name, 3, 2).forward(x);
    EXPECT_EQ(max_abs_diff(y.narrow(1, 2 * i, 2).contiguous(), part), 0.0) << name;
    ++i;
  }
}

TEST(NnWeights, LeftoverTensorsAreListed) {
  const WeightStore store = store_of("leftovers", {{"a.weight", values({1}, 1)},
                                                  {"encoder.x", values({1}, 2)},
                                                  {"b.weight", values({1}, 3)}});
  const nn::Weights w(store, DType::F32, Device::cpu());
  w.load("a.weight", {1});
  const std::string msg = error_of([&] { w.check_all_used("Model", "cfg.json"); });
  EXPECT_NE(msg.find("2 unexpected tensor(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'b.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Model as configured by cfg.json"), std::string::npos) << msg;
  // Tensors the model legitimately leaves (an encoder it does not run) are not reported.
  const std::string only_b = error_of([&] {
    w.check_all_used("Model", "cfg.json", [](const std::string& n) { return n.starts_with("encoder."); });
  });
  EXPECT_NE(only_b.find("1 unexpected tensor(s)"), std::string::npos) << only_b;
  store.get("b.weight");
  EXPECT_NO_THROW(w.check_all_used("Model", "cfg.json", [](const std::string& n) { return n.starts_with("encoder."); }));
}

// The result dtype of diffusers' RMSNorm / T5LayerNorm: the weight's when it is 16-bit.
TEST(NnRMSNorm, ResultTakesA16BitWeightsDtype) {
  const WeightStore store = store_of("rms", {{"norm.weight", values({4}, 1)}});
  const Tensor x = values({2, 4}, 2);
  const nn::RMSNorm f32(nn::Weights(store, DType::F32, Device::cpu()), "norm", 4, 1e-6f);
  const nn::RMSNorm bf16(nn::Weights(store, DType::BF16, Device::cpu()), "norm", 4, 1e-6f);
  EXPECT_EQ(f32.forward(x).dtype(), DType::F32);
  EXPECT_EQ(bf16.forward(x).dtype(), DType::BF16);
  // x * rsqrt(mean(x^2) + eps) * w, row by row.
  const std::vector<float> xv = x.to_vector(), wv = values({4}, 1).to_vector(), y = f32.forward(x).to_vector();
  for (int r = 0; r < 2; ++r) {
    double ms = 0;
    for (int i = 0; i < 4; ++i) ms += xv[r * 4 + i] * xv[r * 4 + i] / 4.0;
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[r * 4 + i], xv[r * 4 + i] / std::sqrt(ms + 1e-6) * wv[i], 1e-5);
  }
}

// Self- and cross-attention against softmax(q k^T * scale + bias) v written out as loops:
// catches a wrong fusion order, head split or scale.
TEST(NnAttention, MatchesAPlainLoop) {
  const int64_t B = 1, S = 3, L = 2, H = 2, D = 2, dim = H * D, ctx_dim = 3;
  std::map<std::string, Tensor> t;
  int seed = 0;
  for (const char* p : {"attn1", "attn2"}) {
    for (const char* m : {"to_q", "to_k", "to_v", "to_out.0"}) {
      const bool kv_of_context = std::string(p) == "attn2" && (m[3] == 'k' || m[3] == 'v');
      t[fmt::format("{}.{}.weight", p, m)] = values({dim, kv_of_context ? ctx_dim : dim}, ++seed);
      t[fmt::format("{}.{}.bias", p, m)] = values({dim}, ++seed);
    }
  }
  const WeightStore store = store_of("attention", t);
  const nn::Weights w(store, DType::F32, Device::cpu());
  nn::AttentionOptions o;
  o.query_dim = dim;
  o.heads = H;
  o.dim_head = D;
  o.scale = 0.7f;
  const nn::Attention self(w, "attn1", o);
  o.cross_attention_dim = ctx_dim;
  const nn::Attention cross(w, "attn2", o);

  const Tensor x = values({B, S, dim}, 100), context = values({B, L, ctx_dim}, 101);
  auto linear = [&](const std::string& name, const Tensor& in) {
    return nn::Linear(w, name, in.size(2), dim).forward(in).to_vector();
  };
  // RoPE of token s: each (even, odd) pair turned by the angle 0.3 (s + 1).
  std::vector<float> cos_table, sin_table;
  for (int64_t t = 0; t < S; ++t)
    for (int64_t d = 0; d < D; ++d) {
      cos_table.push_back(static_cast<float>(std::cos(0.3 * (t + 1))));
      sin_table.push_back(static_cast<float>(std::sin(0.3 * (t + 1))));
    }
  const nn::RotaryTables rope{Tensor::from_vector(cos_table, {S, D}), Tensor::from_vector(sin_table, {S, D})};
  auto rotate = [&](std::vector<float>& y) {
    for (int64_t t = 0; t < S; ++t)
      for (int64_t i = 0; i < dim; i += 2) {
        const double a = 0.3 * (t + 1), y0 = y[t * dim + i], y1 = y[t * dim + i + 1];
        y[t * dim + i] = static_cast<float>(y0 * std::cos(a) - y1 * std::sin(a));
        y[t * dim + i + 1] = static_cast<float>(y0 * std::sin(a) + y1 * std::cos(a));
      }
  };
  // Reference: per head h, out[s] = sum_j softmax_j(q[s].k[j] * 0.7) v[j]; then to_out.
  auto reference = [&](const std::string& p, const Tensor& kv_in, bool rotary) {
    std::vector<float> q = linear(p + ".to_q", x), k = linear(p + ".to_k", kv_in);
    const std::vector<float> v = linear(p + ".to_v", kv_in);
    if (rotary) {
      rotate(q);
      rotate(k);
    }
    const int64_t n = kv_in.size(1);
    std::vector<float> merged(static_cast<size_t>(S * dim));
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t s = 0; s < S; ++s) {
        std::vector<double> score(static_cast<size_t>(n));
        double total = 0;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[s * dim + h * D + d] * k[j * dim + h * D + d];
          score[j] = std::exp(dot * 0.7);
          total += score[j];
        }
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j) acc += score[j] / total * v[j * dim + h * D + d];
          merged[s * dim + h * D + d] = static_cast<float>(acc);
        }
      }
    }
    return nn::Linear(w, p + ".to_out.0", dim, dim).forward(Tensor::from_vector(merged, {B, S, dim}));
  };
  EXPECT_LT(max_abs_diff(self.forward(x), reference("attn1", x, false)), 1e-5);
  EXPECT_LT(max_abs_diff(self.forward(x, &rope), reference("attn1", x, true)), 1e-5);
  EXPECT_LT(max_abs_diff(cross.forward_cross(x, context), reference("attn2", context, false)), 1e-5);
  expect_error([&] { self.forward_cross(x, context); }, "'attn1' is a self-attention");
}

// Decoding one frame at a time with the feature cache gives what one pass over all frames
// gives (zero frames in front): the property diffusers' chunked _decode relies on.
TEST(NnCausalConv3d, ChunkedWithCacheEqualsOnePass) {
  const WeightStore store = store_of("causal", {{"conv.weight", values({2, 3, 3, 3, 3}, 1)}, {"conv.bias", values({2}, 2)}});
  nn::FeatCacheSlots slots;
  const nn::CausalConv3d conv(nn::Weights(store, DType::F32, Device::cpu()), "conv", 3, 2, {3, 3, 3}, {1, 1, 1},
                              /*channels_last=*/false, slots);
  EXPECT_EQ(slots.count, 1);
  const Tensor x = values({1, 3, 4, 5, 5}, 3);
  const Tensor whole = conv.forward(x, nullptr);
  ASSERT_EQ(whole.shape(), (Shape{1, 2, 4, 5, 5}));
  nn::FeatCache cache(1);
  for (int64_t t = 0; t < 4; ++t) {
    const Tensor frame = conv.forward(x.narrow(2, t, 1).contiguous(), &cache);
    EXPECT_LT(max_abs_diff(frame, whole.narrow(2, t, 1).contiguous()), 1e-5) << "frame " << t;
  }
  // A temporal padding other than the cache's frames is refused, naming the conv.
  nn::FeatCacheSlots other;
  expect_error([&] {
    nn::CausalConv3d(nn::Weights(store, DType::F32, Device::cpu()), "conv", 3, 2, {3, 3, 3}, {2, 1, 1}, false, other);
  }, "conv: unsupported temporal padding 2");
}

// The input written behind the cached frames (as the VAE's norms do) gives exactly what the
// same frames given as x give, chunk after chunk (no past, one cached frame, two), and the
// cache that follows is the same.
TEST(NnCausalConv3d, WrittenInputEqualsGivenInput) {
  const WeightStore store = store_of("causal", {{"conv.weight", values({2, 3, 3, 3, 3}, 1)}, {"conv.bias", values({2}, 2)}});
  nn::FeatCacheSlots slots;
  const nn::CausalConv3d conv(nn::Weights(store, DType::F32, Device::cpu()), "conv", 3, 2, {3, 3, 3}, {1, 1, 1},
                              /*channels_last=*/false, slots);
  const Tensor x = values({1, 3, 8, 5, 5}, 3);
  // The writer also stores the chunk's last frames when it is given a tail (a chunk of 2 or more
  // frames with a cache): those become the cache.
  int64_t tails = 0;
  auto writer = [&tails](const Tensor& frames) {
    return [frames, &tails](const Tensor& out, const Tensor& tail) {
      Tensor(out).copy_(frames);
      if (!tail.defined()) return;
      ++tails;
      EXPECT_EQ(tail.shape(), (Shape{1, 3, nn::kCausalCacheFrames, 5, 5}));
      Tensor(tail).copy_(frames.narrow(2, frames.size(2) - tail.size(2), tail.size(2)));
    };
  };
  nn::FeatCache given(1), written(1);
  int64_t start = 0;
  for (int64_t n : {1, 1, 3, 1, 2}) {
    const Tensor chunk = x.narrow(2, start, n).contiguous();
    EXPECT_EQ(conv.forward(chunk, writer(chunk), &written).to_vector(), conv.forward(chunk, &given).to_vector())
        << "frames " << start << " + " << n;
    EXPECT_EQ(written[0].to_vector(), given[0].to_vector()) << "frames " << start << " + " << n;
    start += n;
  }
  EXPECT_EQ(tails, 2);
  EXPECT_EQ(conv.forward(x, writer(x), nullptr).to_vector(), conv.forward(x, nullptr).to_vector());
  EXPECT_EQ(tails, 2);  // no cache: nothing kept
}

// The upsampler's 2x2 phase convolutions give diffusers' nearest 2x upsampling and 3x3
// convolution (padding 1), here a plain loop over the upsampled frame: odd sizes, several
// frames and batches, both memory formats; the filter counts as loaded.
TEST(NnUpsampleConv2d, EqualsUpsampleThenConv) {
  const int64_t B = 2, C = 3, O = 4, T = 2, H = 5, W = 7;
  const Tensor w = values({O, C, 3, 3}, 4), bias = values({O}, 5), x = values({B, C, T, H, W}, 6);
  const WeightStore store = store_of("upconv", {{"up.weight", w}, {"up.bias", bias}});
  const nn::Weights weights(store, DType::F32, Device::cpu());
  const std::vector<float> wv = w.to_vector(), bv = bias.to_vector(), xv = x.to_vector();
  std::vector<float> want(static_cast<size_t>(B * O * T * 4 * H * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t yy = 0; yy < 2 * H; ++yy)
          for (int64_t xx = 0; xx < 2 * W; ++xx) {
            double sum = bv[static_cast<size_t>(o)];
            for (int64_t c = 0; c < C; ++c)
              for (int64_t kh = 0; kh < 3; ++kh)
                for (int64_t kw = 0; kw < 3; ++kw) {
                  const int64_t uy = yy + kh - 1, ux = xx + kw - 1;  // in the upsampled frame
                  if (uy < 0 || uy >= 2 * H || ux < 0 || ux >= 2 * W) continue;
                  sum += wv[static_cast<size_t>(((o * C + c) * 3 + kh) * 3 + kw)] *
                         xv[static_cast<size_t>((((b * C + c) * T + t) * H + uy / 2) * W + ux / 2)];
                }
            want[static_cast<size_t>((((b * O + o) * T + t) * 2 * H + yy) * 2 * W + xx)] = static_cast<float>(sum);
          }
  const Tensor expected = Tensor::from_vector(want, {B, O, T, 2 * H, 2 * W});
  for (bool channels_last : {false, true}) {
    const nn::UpsampleConv2d up(weights, "up", C, O, channels_last);
    const Tensor got = up.forward(channels_last ? x.to_channels_last_3d() : x);
    ASSERT_EQ(got.shape(), expected.shape());
    EXPECT_LT(max_abs_diff(got, expected), 1e-5) << "channels_last " << channels_last;
    // With an addend split as [B, O, T / ft, ft, H, 2, W, 2]: dense (ft 2 and 1), and a
    // nearest-repeated one read through stride-0 dims (as the Wan2.2 decoder's shortcut).
    const Tensor dense = values({B, O, 1, 2, H, 2, W, 2}, 7);
    const Tensor small = values({B, O, 1, 1, H, 1, W, 1}, 8);
    const Tensor repeated = small.expand({B, O, 1, 2, H, 2, W, 2});
    for (const Tensor& addend : {dense, dense.view({B, O, 2, 1, H, 2, W, 2}), repeated}) {
      const Tensor sum = up.forward(channels_last ? x.to_channels_last_3d() : x, [&] { return addend; });
      const Tensor want_sum = ops::add(expected, addend.contiguous().view({B, O, T, 2 * H, 2 * W}));
      EXPECT_LT(max_abs_diff(sum, want_sum), 1e-5) << "channels_last " << channels_last << " addend " << addend.str();
    }
    expect_error([&] { (void)up.forward(x, [&] { return dense.view({B, O, T, 2 * H, 2 * W}); }); }, "addend");
    expect_error([&] { (void)up.forward(x, [&] { return values({B, O, 1, 2, H, 2, W + 1, 2}, 9); }); }, "addend");
  }
  weights.check_all_used("test", "config.json");
  expect_error([&] { nn::UpsampleConv2d(weights, "up", C + 1, O, false); }, "up.weight");
}
