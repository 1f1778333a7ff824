// Switching LoRA adapters on a loaded pipeline (what `vgen serve` does between requests):
// each switch gives exactly what a pipeline loaded with those adapters gives, back and forth,
// with and without merged variants cached; a file that fails leaves the pipeline serving
// what it served before.
#include <gtest/gtest.h>

#include <fstream>

#include "pipelines/registry.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;

namespace {

Tensor denoised(DiffusionPipeline& pipe) {
  GenerationParams p;
  p.prompt = "a red fox in the snow";
  p.height = 32;
  p.width = 48;
  p.num_frames = 5;
  p.num_inference_steps = 2;
  p.seed = 7;
  return pipe.generate(pipe.resolve(p)).denoised_latents;
}

std::vector<nn::LoraAdapterSpec> adapter(const std::string& file, double scale) {
  return {{fixture("lora_ref/" + file), scale}};
}

}  // namespace

TEST(WanLoraSwitch, EachSwitchGivesWhatAFreshPipelineGives) {
  const std::vector<nn::LoraAdapterSpec> a = adapter("t2v_wan.safetensors", 0.8);
  std::vector<nn::LoraAdapterSpec> b = adapter("t2v_peft.safetensors", 1.5);
  b.push_back(adapter("t2v_musubi.safetensors", -0.5).front());
  PipelineOptions with_a, with_b;
  with_a.lora = a;
  with_b.lora = b;
  const Tensor fresh_base = denoised(*load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{}));
  const Tensor fresh_a = denoised(*load_pipeline(fixture("wan21_t2v_tiny"), with_a));
  const Tensor fresh_b = denoised(*load_pipeline(fixture("wan21_t2v_tiny"), with_b));
  ASSERT_GT(max_abs_diff(fresh_a, fresh_base), 1e-3) << "the adapter changes the video";

  for (int cached : {1, 3}) {
    SCOPED_TRACE(fmt::format("lora_cached_variants {}", cached));
    PipelineOptions o;
    o.lora_cached_variants = cached;
    auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), o);
    for (const auto& [lora, want] : {std::pair{a, fresh_a}, {b, fresh_b}, {{}, fresh_base}, {a, fresh_a}, {b, fresh_b}}) {
      pipe->set_lora(lora, {});
      EXPECT_EQ(max_abs_diff(denoised(*pipe), want), 0.0);
    }
  }
}

TEST(WanLoraSwitch, AFailedSwitchKeepsTheCurrentAdapters) {
  PipelineOptions o;
  o.lora = adapter("t2v_wan.safetensors", 0.8);
  auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), o);
  const Tensor before = denoised(*pipe);
  const std::string bad = ::testing::TempDir() + "/wan_lora_switch_bad.safetensors";
  std::ofstream(bad) << "not a safetensors file";
  EXPECT_THROW(pipe->set_lora({{bad, 1.0}}, {}), Error);
  // An I2V adapter: its image projections match no module of this text-to-video model.
  EXPECT_THROW(pipe->set_lora(adapter("i2v_wan.safetensors", 1.0), {}), Error);
  EXPECT_THROW(pipe->set_lora({}, adapter("wan22_low_wan.safetensors", 1.0)), Error);
  EXPECT_EQ(max_abs_diff(denoised(*pipe), before), 0.0);
}
