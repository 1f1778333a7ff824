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
