// The C++ API: generate(GenerationParams) resolves once and runs what it resolved to, so it
// gives what generate(pipeline().resolve(params)) gives, at the model's frame rate.
#include <gtest/gtest.h>

#include <cmath>

#include "api/visual_gen.h"
#include "support/parity.h"

using namespace vgen;

TEST(VisualGenApi, GenerateResolvesOnceAndRunsTheResolvedParameters) {
  VisualGen gen(vgen::testing::fixture("wan21_t2v_tiny"));
  GenerationParams p;
  p.height = 32;
  p.width = 48;
  p.num_frames = 5;
  p.num_inference_steps = 2;
  p.seed = 11;
  int steps = 0;
  const GenerationOutput a = gen.generate("a red kite", p, [&](const StepProgress&) { return ++steps > 0; });
  EXPECT_EQ(steps, 2);
  p.prompt = "a red kite";
  const ResolvedParams r = gen.pipeline().resolve(p);
  const GenerationOutput b = gen.generate(r);
  EXPECT_EQ(a.frames.to_vector(), b.frames.to_vector());
  EXPECT_EQ(a.frames.shape(), (Shape{5, 32, 48, 3}));
  EXPECT_DOUBLE_EQ(a.fps, gen.pipeline().capabilities().default_fps);
  // An invalid request fails in resolve, naming the parameter, before any work.
  p.num_frames = 6;
  try {
    gen.generate(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_frames"), std::string::npos) << e.what();
  }
}

// VisualGen(path) runs where `vgen generate` runs by default (the GPU when one is usable).
TEST(VisualGenApi, PicksTheDeviceLikeTheCli) {
  VisualGen gen(vgen::testing::fixture("wan21_t2v_tiny"));
  const Device expected = resolve_device("auto");
  std::string device;
  for (const auto& [k, v] : gen.pipeline().describe())
    if (k == "device") device = v;
  EXPECT_EQ(device, expected.str());
}

TEST(VisualGenApi, CountsPromptTokensAndDrawsRandomSeeds) {
  VisualGen gen(vgen::testing::fixture("wan21_t2v_tiny"), PipelineOptions{});
  const std::optional<int64_t> short_count = gen.prompt_token_count("a fox");
  ASSERT_TRUE(short_count.has_value());
  EXPECT_GE(*short_count, 2);  // at least one piece and </s>
  EXPECT_GT(*gen.prompt_token_count("a fox a fox a fox a fox"), *short_count);
  const uint64_t a = random_seed(), b = random_seed();
  EXPECT_NE(a, b);
  EXPECT_LT(a, uint64_t{1} << 53);
}

// Requests that differ only in prompt and seed run through the transformer together and give
// what each gives alone: the same noise (its own seed), the same prompt embedding; only the
// float rounding of batched matmuls may differ.
TEST(VisualGenApi, BatchedRequestsMatchTheirSoloRuns) {
  VisualGen gen(vgen::testing::fixture("wan21_t2v_tiny"), PipelineOptions{});
  std::vector<ResolvedParams> requests;
  for (const auto& [prompt, seed] : std::vector<std::pair<std::string, uint64_t>>{
           {"a red kite", 3}, {"a fox in the snow, running", 4}, {"a red kite", 5}}) {
    GenerationParams p;
    p.prompt = prompt;
    p.seed = seed;
    p.height = 32;
    p.width = 48;
    p.num_frames = 5;
    p.num_inference_steps = 2;
    requests.push_back(gen.pipeline().resolve(p));
  }
  int steps = 0;
  const std::vector<GenerationOutput> batched = gen.generate_batch(requests, 3, [&](const StepProgress&) { return ++steps > 0; });
  EXPECT_EQ(steps, 2) << "one denoising loop for the three";
  ASSERT_EQ(batched.size(), 3u);
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationOutput solo = gen.generate(requests[i]);
    ASSERT_EQ(batched[i].frames.shape(), solo.frames.shape());
    ASSERT_EQ(batched[i].denoised_latents.shape(), solo.denoised_latents.shape());
    const std::vector<float> a = batched[i].denoised_latents.to_vector(), b = solo.denoised_latents.to_vector();
    double diff = 0, norm = 0;
    for (size_t j = 0; j < a.size(); ++j) {
      diff += (a[j] - b[j]) * double(a[j] - b[j]);
      norm += double(b[j]) * b[j];
    }
    // float32 on the CPU: batched GEMMs may sum in another order (about 1e-7 relative each).
    EXPECT_LT(std::sqrt(diff / norm), 1e-5) << "request " << i;
    const std::vector<float> fa = batched[i].frames.to_vector(), fb = solo.frames.to_vector();
    for (size_t j = 0; j < fa.size(); ++j) ASSERT_LE(std::abs(fa[j] - fb[j]), 1.0f) << "request " << i << " byte " << j;
  }
  // max_batch 1 is the one-by-one run, exactly.
  const std::vector<GenerationOutput> single = gen.generate_batch(requests, 1);
  EXPECT_EQ(single[1].frames.to_vector(), gen.generate(requests[1]).frames.to_vector());
}
