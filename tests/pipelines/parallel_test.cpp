// CFG and sequence parallelism on the CPU, ranks as threads (ThreadGroup): every split of the
// work gives what one rank gives.
//
//  - ops::attention_lse against softmax and log-sum-exp written out in double;
//  - nn::Attention (12 heads, qk-norm, RoPE) sharded over Ulysses, ring and Ulysses x ring on
//    2, 3 and 4 ranks, with a token count no rank count divides, against the unsharded call;
//  - the tiny Wan2.1 and Wan2.2 (two experts) pipelines with CFG parallel, Ulysses (3 heads),
//    ring and their products on 2 to 6 ranks, against one rank: latents and frames;
//  - the refusals: heads that do not divide ulysses_size, sizes that do not match the world.
//
// Bounds: the sharded runs compute the same sums in other groupings (fewer rows per matrix
// product, attention merged over key blocks), so float32 rounding differs: the bounds below are
// a few float32 ulps of the values' scale, stated per check. CFG parallel alone computes
// exactly what one rank does: bit-exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "core/communicator.h"
#include "io/safetensors.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "nn/attention.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::expect_error;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;

namespace {

Tensor values(const Shape& shape, int seed, double freq = 0.7) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(freq * (i + 1) + 1.3 * seed));
  return Tensor::from_vector(v, shape);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float x : t.to_vector()) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

TEST(AttentionLse, MatchesSoftmaxAndLogSumExpInDouble) {
  const int64_t B = 2, H = 3, Sq = 5, Sk = 7, D = 4;
  const float scale = 0.45f;
  // [B, S, H, D] buffers seen as [B, H, S, D], as the models pass them.
  const Tensor q = values({B, Sq, H, D}, 1, 1.1), k = values({B, Sk, H, D}, 2, 0.9), v = values({B, Sk, H, D}, 3);
  const ops::AttentionWithLse r =
      ops::attention_lse(q.permute({0, 2, 1, 3}), k.permute({0, 2, 1, 3}), v.permute({0, 2, 1, 3}), scale);
  ASSERT_EQ(r.lse.shape(), (Shape{B, H, Sq}));
  const std::vector<float> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  const std::vector<float> out = r.out.contiguous().to_vector(), lse = r.lse.to_vector();
  double worst_out = 0, worst_lse = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Sq; ++i) {
        std::vector<double> s(Sk);
        double sum = 0;
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qv[((b * Sq + i) * H + h) * D + d] * kv[((b * Sk + j) * H + h) * D + d];
          s[j] = std::exp(dot * scale);
          sum += s[j];
        }
        worst_lse = std::max(worst_lse, std::fabs(std::log(sum) - lse[(b * H + h) * Sq + i]));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < Sk; ++j) acc += s[j] / sum * vv[((b * Sk + j) * H + h) * D + d];
          worst_out = std::max(worst_out, std::fabs(acc - out[((b * H + h) * Sq + i) * D + d]));
        }
      }
  EXPECT_LT(worst_out, 1e-6);
  EXPECT_LT(worst_lse, 1e-6);
  // No keys: an empty sum, log-sum-exp -inf.
  const ops::AttentionWithLse none = ops::attention_lse(q.permute({0, 2, 1, 3}), k.narrow(1, 0, 0).permute({0, 2, 1, 3}),
                                                        v.narrow(1, 0, 0).permute({0, 2, 1, 3}), scale);
  for (float x : none.lse.to_vector()) EXPECT_EQ(x, -INFINITY);
  for (float x : none.out.contiguous().to_vector()) EXPECT_EQ(x, 0.0f);
}

// A 12-head self-attention with qk-norm and RoPE, random weights in a temporary checkpoint.
struct AttentionFixture {
  static constexpr int64_t H = 12, D = 8, dim = H * D, S = 23;
  WeightStore store;
  nn::AttentionOptions options;
  Tensor x, cos, sin;

  AttentionFixture() {
    std::map<std::string, Tensor> t;
    int seed = 0;
    for (const char* m : {"to_q", "to_k", "to_v", "to_out.0"}) {
      t[fmt::format("attn.{}.weight", m)] = ops::scale(values({dim, dim}, ++seed), 0.3f);
      t[fmt::format("attn.{}.bias", m)] = values({dim}, ++seed);
    }
    t["attn.norm_q.weight"] = values({dim}, ++seed);
    t["attn.norm_k.weight"] = values({dim}, ++seed);
    const std::string path = vgen::testing::test_temp_path("parallel_attention.safetensors");
    save_safetensors(path, t);
    store = WeightStore::open_files({path});
    options.query_dim = dim;
    options.heads = H;
    options.dim_head = D;
    options.qk_norm = true;
    x = values({2, S, dim}, 50);
    std::vector<float> c, s;
    for (int64_t i = 0; i < S; ++i)
      for (int64_t d = 0; d < D; ++d) {
        const double angle = (i + 1) * std::pow(0.5, d / 2);
        c.push_back(static_cast<float>(std::cos(angle)));
        s.push_back(static_cast<float>(std::sin(angle)));
      }
    cos = Tensor::from_vector(c, {S, D});
    sin = Tensor::from_vector(s, {S, D});
  }
};

// Rows [shard * per, (shard + 1) * per) of x along dim, zero rows past its end.
Tensor shard(const Tensor& x, int64_t dim, int64_t index, int64_t per) {
  const int64_t n = x.size(dim), start = index * per, have = std::clamp<int64_t>(n - start, 0, per);
  if (have == per) return x.narrow(dim, start, per).contiguous();
  Shape pad_shape = x.shape();
  pad_shape[dim] = per - have;
  const Tensor pad = Tensor::zeros(pad_shape);
  return have == 0 ? pad : ops::cat({x.narrow(dim, start, have), pad}, dim);
}

TEST(SequenceParallelAttention, UlyssesRingAndBothGiveTheUnshardedResult) {
  const AttentionFixture f;
  const nn::Weights w(f.store, DType::F32, Device::cpu());
  const nn::Attention attn(w, "attn", f.options);
  const nn::RotaryTables rope{f.cos, f.sin};
  const Tensor want = attn.forward(f.x, &rope);
  const double scale = max_abs(want);
  // (ulysses, ring) on 2, 3 and 4 ranks; 12 heads divide 2, 3 and 4.
  for (auto [u, r] : std::vector<std::pair<int, int>>{{2, 1}, {1, 2}, {3, 1}, {1, 3}, {4, 1}, {1, 4}, {2, 2}}) {
    const ParallelSizes sizes{1, u, r};
    const int P = sizes.world_size();
    const int64_t per = (AttentionFixture::S + P - 1) / P;
    std::vector<Tensor> got(P);
    ThreadGroup::run(P, [&](int rank, const std::shared_ptr<Communicator>& comm) {
      const ParallelLayout layout(comm, sizes);
      const int64_t me = layout.sequence_rank();
      const nn::RotaryTables local_rope{shard(f.cos, 0, me, per), shard(f.sin, 0, me, per)};
      const nn::SequenceParallel sp{&layout, AttentionFixture::S};
      got[me] = attn.forward(shard(f.x, 1, me, per), &local_rope, {}, &sp);
    });
    const Tensor joined = ops::cat(got, 1).narrow(1, 0, AttentionFixture::S);
    // Summation order only (rows grouped otherwise, key blocks merged by their log-sum-exp).
    EXPECT_LT(max_abs_diff(joined, want), 2e-6 * scale) << "ulysses " << u << " ring " << r;
  }
}

TEST(SequenceParallelAttention, RefusesHeadsThatDoNotDivideAndABias) {
  const AttentionFixture f;
  const nn::Attention attn(nn::Weights(f.store, DType::F32, Device::cpu()), "attn", f.options);
  const nn::RotaryTables rope{f.cos, f.sin};
  ThreadGroup::run(5, [&](int rank, const std::shared_ptr<Communicator>& comm) {
    const ParallelLayout layout(comm, ParallelSizes{1, 5, 1});
    const nn::SequenceParallel sp{&layout, AttentionFixture::S};
    expect_error([&] { attn.forward(f.x, &rope, {}, &sp); }, "12 heads do not divide over ulysses_size 5");
  });
  ThreadGroup::run(2, [&](int rank, const std::shared_ptr<Communicator>& comm) {
    const ParallelLayout layout(comm, ParallelSizes{1, 1, 2});
    const nn::SequenceParallel sp{&layout, AttentionFixture::S};
    expect_error([&] { attn.forward(f.x, &rope, Tensor::zeros({1, 1, 1, 1}), &sp); }, "no attention bias");
  });
}

// ---- The parallel VAE decode ----------------------------------------------------------------

// The Wan2.1 and Wan2.2 (patchified, residual up-blocks) VAEs split over 2, 3 and 4 ranks by
// latent rows give the unsplit decode: every conv sees the same input values (halo rows from
// the neighbours, zeros at the edges), the mid-block attention the gathered frame.
TEST(ParallelVae, RowSplitDecodeEqualsTheWholeDecode) {
  for (const char* name : {"wan_vae_tiny/wan21", "wan_vae_tiny/wan22"}) {
    const auto vae = AutoencoderKLWan::from_pretrained(fixture(name), DType::F32, Device::cpu());
    const Tensor z = ops::scale(values({1, vae->config().z_dim, 3, 12, 5}, 9, 0.37), 1.5f);
    const Tensor want = vae->decode(z);
    for (int P : {2, 3, 4}) {
      std::vector<Tensor> got(P);
      ThreadGroup::run(P, [&](int rank, const std::shared_ptr<Communicator>& comm) { got[rank] = vae->decode(z, comm.get()); });
      for (int r = 0; r < P; ++r) {
        ASSERT_EQ(got[r].shape(), want.shape()) << name;
        // Summation order only (a conv over fewer rows, which OpenBLAS blocks differently, and
        // its blocking depends on the CPU it finds): float32 rounding, ~1e-5 on outputs near 1.
        EXPECT_LT(max_abs_diff(got[r], want), 5e-5) << name << " on " << P << " ranks, rank " << r;
      }
    }
    // A latent height the ranks do not divide (12 rows over 5): every rank decodes it whole.
    std::vector<Tensor> got(5);
    ThreadGroup::run(5, [&](int rank, const std::shared_ptr<Communicator>& comm) { got[rank] = vae->decode(z, comm.get()); });
    EXPECT_EQ(max_abs_diff(got[4], want), 0.0);
    // Several latent frames per decoder call (a 2-frame head, --vae-chunk-frames 2): the halo
    // rows are exchanged for every frame of a chunk.
    vae->set_decode_head_frames(2);
    vae->set_decode_chunk_frames(2);
    std::vector<Tensor> chunked(2);
    ThreadGroup::run(2, [&](int rank, const std::shared_ptr<Communicator>& comm) { chunked[rank] = vae->decode(z, comm.get()); });
    for (int r = 0; r < 2; ++r) EXPECT_LT(max_abs_diff(chunked[r], want), 5e-5) << name << " in 2-frame chunks, rank " << r;
  }
}

// ---- The Wan pipelines -----------------------------------------------------------------------

GenerationParams tiny_request() {
  GenerationParams p;
  p.prompt = "a lighthouse at dusk";
  p.height = 48;
  p.width = 48;
  p.num_frames = 9;  // 3 latent frames of 6 x 6, patches of 2 x 2: 27 tokens (2 and 4 ranks pad them)
  p.num_inference_steps = 3;
  p.guidance_scale = 4.0;
  p.seed = 7;
  return p;
}

// Every rank's output of one generation with these sizes (threads as ranks).
std::vector<GenerationOutput> run_ranks(const std::string& model, const ParallelSizes& sizes,
                                        const GenerationParams& params, bool parallel_vae) {
  std::vector<GenerationOutput> out(sizes.world_size());
  ThreadGroup::run(sizes.world_size(), [&](int rank, const std::shared_ptr<Communicator>& comm) {
    PipelineOptions o;
    o.parallel = std::make_shared<ParallelLayout>(comm, sizes);
    o.parallel_vae = parallel_vae;
    const auto pipe = load_pipeline(model, o);
    out[rank] = pipe->generate(pipe->resolve(params));
  });
  return out;
}

int64_t differing_bytes(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const uint8_t* x = a.data<uint8_t>();
  const uint8_t* y = b.data<uint8_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += x[i] != y[i];
  return n;
}

struct ParallelCase {
  const char* model;
  ParallelSizes sizes;
  bool parallel_vae = false;
};

std::string case_name_of(const ParallelCase& c);

class WanParallel : public ::testing::TestWithParam<ParallelCase> {};

TEST_P(WanParallel, MatchesOneRank) {
  const ParallelCase c = GetParam();
  const GenerationParams params = tiny_request();
  static std::map<std::string, GenerationOutput> single;  // one single-rank run per model
  if (!single.count(c.model)) {
    const auto pipe = load_pipeline(fixture(c.model), PipelineOptions{});
    single[c.model] = pipe->generate(pipe->resolve(params));
  }
  const GenerationOutput& want = single[c.model];
  const std::vector<GenerationOutput> got = run_ranks(fixture(c.model), c.sizes, params, c.parallel_vae);
  const double scale = max_abs(want.denoised_latents);
  for (size_t r = 0; r < got.size(); ++r) {
    const double latents = max_abs_diff(got[r].denoised_latents, want.denoised_latents);
    const double video = max_abs_diff(got[r].video, want.video);
    const int64_t frames = differing_bytes(got[r].frames, want.frames);
    std::printf("[ %s ] rank %zu: latents max |diff| %.3g (scale %.3g), video %.3g, %lld frame bytes differ\n",
                case_name_of(c).c_str(), r, latents, scale, video, static_cast<long long>(frames));
    if (c.sizes.sequence_size() == 1) {
      // CFG parallel alone: the same computations, exchanged: bit-exact.
      EXPECT_EQ(latents, 0.0) << "rank " << r;
    } else {
      // Float32 regrouping through 3 steps: within 1e-5 of the latents' scale.
      EXPECT_LT(latents, 1e-5 * scale) << "rank " << r;
    }
    if (c.sizes.sequence_size() == 1 && !c.parallel_vae) {
      EXPECT_EQ(frames, 0) << "rank " << r;
    } else {
      // The frames (uint8) may differ by one level where a value sits on a rounding edge.
      EXPECT_LT(video, 1e-4) << "rank " << r;
      EXPECT_LE(frames, want.frames.numel() / 1000) << "rank " << r;
    }
    // Every rank holds the same result.
    EXPECT_EQ(max_abs_diff(got[r].denoised_latents, got[0].denoised_latents), 0.0) << "rank " << r;
  }
}

std::string case_name_of(const ParallelCase& c) {
  return fmt::format("{}_cfg{}_ulysses{}_ring{}{}", c.model, c.sizes.cfg_size, c.sizes.ulysses_size, c.sizes.ring_size,
                     c.parallel_vae ? "_vae" : "");
}

std::string case_name(const ::testing::TestParamInfo<ParallelCase>& info) { return case_name_of(info.param); }

// The tiny fixtures have 3 heads: Ulysses 1 or 3; the ring takes any size.
INSTANTIATE_TEST_SUITE_P(
    Combinations, WanParallel,
    ::testing::Values(ParallelCase{"wan21_t2v_tiny", {2, 1, 1}}, ParallelCase{"wan21_t2v_tiny", {1, 3, 1}},
                      ParallelCase{"wan21_t2v_tiny", {1, 1, 2}}, ParallelCase{"wan21_t2v_tiny", {1, 1, 3}},
                      ParallelCase{"wan21_t2v_tiny", {1, 1, 4}}, ParallelCase{"wan21_t2v_tiny", {2, 1, 2}},
                      ParallelCase{"wan21_t2v_tiny", {2, 3, 1}}, ParallelCase{"wan21_t2v_tiny", {1, 3, 2}},
                      ParallelCase{"wan22_t2v_tiny", {2, 1, 1}}, ParallelCase{"wan22_t2v_tiny", {1, 3, 1}},
                      ParallelCase{"wan22_t2v_tiny", {2, 1, 2}}, ParallelCase{"wan21_t2v_tiny", {2, 1, 1}, true},
                      ParallelCase{"wan21_t2v_tiny", {1, 1, 3}, true}),
    case_name);

TEST(WanParallelErrors, HeadsThatDoNotDivideUlyssesAreRefusedAtLoad) {
  ThreadGroup::run(2, [&](int rank, const std::shared_ptr<Communicator>& comm) {
    PipelineOptions o;
    o.parallel = std::make_shared<ParallelLayout>(comm, ParallelSizes{1, 2, 1});
    expect_error([&] { load_pipeline(fixture("wan21_t2v_tiny"), o); },
                 "ulysses_size 2 does not divide the transformer's 3 attention heads");
  });
}

}  // namespace
