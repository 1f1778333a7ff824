// The whole WanPipeline against diffusers' own run on the tiny fixtures: same initial
// latents in, denoised latents and frames out.
#include <gtest/gtest.h>

#include <fstream>

#include "io/json.h"
#include "media/frames.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

class WanPipelineParity : public ::testing::TestWithParam<std::string> {};

GenerationParams with_guidance(GenerationParams p, double guidance_scale) {
  p.guidance_scale = guidance_scale;
  return p;
}

// Fraction of uint8 values that differ by more than `levels`.
double fraction_off(const Tensor& a, const Tensor& b, int levels) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  size_t off = 0;
  for (size_t i = 0; i < x.size(); ++i) off += std::fabs(x[i] - y[i]) > levels;
  return static_cast<double>(off) / static_cast<double>(x.size());
}

}  // namespace

TEST_P(WanPipelineParity, MatchesDiffusersEndToEnd) {
  const std::string name = GetParam();
  const Json spec = read_json_file(fixture(name + "_ref/pipeline.json"));
  const WeightStore ref = reference(name + "_ref/pipeline.safetensors");
  auto pipe = load_pipeline(fixture(name), PipelineOptions{});
  const Json& call = spec["call"];

  for (const bool cfg : {true, false}) {
    SCOPED_TRACE(cfg ? "with CFG" : "without CFG");
    const std::string suffix = cfg ? "" : "_nocfg";
    int steps_seen = 0;
    const GenerationOutput out = pipe->generate(pipe->resolve(with_guidance(vgen::testing::wan_t2v_call_params(name), cfg ? 5.0 : 1.0)),
                                                [&](const StepProgress& p) {
                                                  ++steps_seen;
                                                  return true;
                                                });
    EXPECT_EQ(steps_seen, call["num_inference_steps"].get<int>());
    // Errors compound over the steps and through the VAE; float32 on both sides keeps
    // them near 1e-5 relative.
    const double latent_err = rel_l2(out.denoised_latents, ref.get("denoised_latents" + suffix));
    EXPECT_LT(latent_err, 1e-4) << name;
    const Tensor frames_float = media::video_to_float_frames(out.video);
    const double frame_err = max_abs_diff(frames_float, ref.get("frames_float" + suffix));
    EXPECT_LT(frame_err, 1e-4) << name;
    // uint8 frames: rounding can flip a value sitting on a .5 boundary, so allow one level.
    const Tensor want = ref.get("frames_uint8" + suffix);
    EXPECT_EQ(fraction_off(out.frames, want, 1), 0.0) << name;
    EXPECT_LT(fraction_off(out.frames, want, 0), 1e-3) << name;
    std::printf("[%s%s] denoised latents rel L2 %.2e, frames max abs %.2e, uint8 values off by one %.4f%%\n",
                name.c_str(), suffix.c_str(), latent_err, frame_err, 100.0 * fraction_off(out.frames, want, 0));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, WanPipelineParity, ::testing::Values("wan21_t2v_tiny", "wan21_t2v_tiny_b"));

TEST(WanPipeline, SeedGivesReproducibleOutputAndCancelStops) {
  auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  GenerationParams p;
  p.prompt = "a lighthouse at dusk";
  p.height = 32;
  p.width = 48;
  p.num_frames = 5;
  p.num_inference_steps = 3;
  p.seed = 1234;
  const GenerationOutput a = pipe->generate(pipe->resolve(p));
  const GenerationOutput b = pipe->generate(pipe->resolve(p));
  EXPECT_EQ(a.frames.to_vector(), b.frames.to_vector());
  EXPECT_EQ(a.frames.shape(), (Shape{5, 32, 48, 3}));
  p.seed = 1235;
  EXPECT_NE(pipe->generate(pipe->resolve(p)).frames.to_vector(), a.frames.to_vector());
  int calls = 0;
  EXPECT_THROW(pipe->generate(pipe->resolve(p), [&](const StepProgress&) { return ++calls < 2; }), Cancelled);
  EXPECT_EQ(calls, 2);
}

TEST(WanPipeline, ValidatesRequests) {
  auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  GenerationParams p;
  p.prompt = "x";
  p.num_frames = 80;
  EXPECT_THROW(pipe->resolve(p), Error);
  p.num_frames = 81;
  p.height = 100;
  EXPECT_THROW(pipe->resolve(p), Error);
  p.height = 480;
  p.num_inference_steps = 0;
  EXPECT_THROW(pipe->resolve(p), Error);
  p.num_inference_steps = 4;
  p.height = 32;
  p.width = 48;
  p.num_frames = 9;
  p.latents = Tensor::zeros({1, 16, 2, 4, 6});
  // resolve() checks the latents' shape, before any work.
  try {
    pipe->resolve(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("latents have shape [1, 16, 2, 4, 6]"), std::string::npos) << e.what();
  }
}
