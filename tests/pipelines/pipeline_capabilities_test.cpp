// What a pipeline says about itself: the tiny Wan2.1 fixture reports Wan2.1's frame grid,
// frame rate, size multiple and defaults (its config has Wan2.1's VAE factors and patch
// size), and resolve() applies exactly those defaults.
#include <gtest/gtest.h>

#include "pipelines/registry.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;

TEST(PipelineCapabilities, TinyWanReportsWan21) {
  const auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  const PipelineCapabilities& c = pipe->capabilities();
  EXPECT_EQ(c.tasks, std::vector<std::string>{"text-to-video"});
  EXPECT_TRUE(c.supports("text-to-video"));
  EXPECT_FALSE(c.supports("image-to-video"));
  EXPECT_EQ(c.task_list(), "text-to-video");
  // Text-to-video: no image, last image or second expert; LoRA adapters fuse at load.
  EXPECT_FALSE(c.image_input);
  EXPECT_FALSE(c.last_image_input);
  EXPECT_TRUE(c.lora);
  EXPECT_FALSE(c.two_experts);
  EXPECT_DOUBLE_EQ(c.default_fps, 16.0);
  EXPECT_EQ(c.temporal_multiple, 4);  // frames = 4k+1
  EXPECT_EQ(c.spatial_multiple, 16);  // VAE 8x times patch 2
  // The tiny model is "small" (dim 48 < 5120): the 1.3B model's 480p defaults.
  EXPECT_EQ(c.default_height, 480);
  EXPECT_EQ(c.default_width, 832);
  EXPECT_EQ(c.default_num_frames, 81);
  EXPECT_EQ(c.default_num_inference_steps, 50);
  EXPECT_DOUBLE_EQ(c.default_guidance_scale, 5.0);
  EXPECT_EQ(c.default_max_sequence_length, 512);

  GenerationParams none;
  none.prompt = "x";
  const ResolvedParams r = pipe->resolve(none);
  EXPECT_EQ(r.height, c.default_height);
  EXPECT_EQ(r.width, c.default_width);
  EXPECT_EQ(r.num_frames, c.default_num_frames);
  EXPECT_EQ(r.num_inference_steps, c.default_num_inference_steps);
  EXPECT_DOUBLE_EQ(r.guidance_scale, c.default_guidance_scale);
  EXPECT_EQ(r.max_sequence_length, c.default_max_sequence_length);
  EXPECT_FALSE(r.latents.defined());
}

TEST(PipelineCapabilities, ResolveFollowsTheGrid) {
  const auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  const PipelineCapabilities& c = pipe->capabilities();
  GenerationParams p;
  p.prompt = "x";
  p.height = 2 * c.spatial_multiple;
  p.width = 3 * c.spatial_multiple;
  for (int64_t k : {0, 1, 2}) {
    p.num_frames = c.temporal_multiple * k + 1;
    EXPECT_EQ(pipe->resolve(p).num_frames, *p.num_frames);
    p.num_frames = c.temporal_multiple * k + 2;
    EXPECT_THROW(pipe->resolve(p), Error) << *p.num_frames;
  }
  p.num_frames = 1;
  p.height = c.spatial_multiple + c.spatial_multiple / 2;
  EXPECT_THROW(pipe->resolve(p), Error);
}
