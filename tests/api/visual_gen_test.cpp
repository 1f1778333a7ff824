// The C++ API: generate(GenerationParams) resolves once and runs what it resolved to, so it
// gives what generate(pipeline().resolve(params)) gives, at the model's frame rate.
#include <gtest/gtest.h>

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
