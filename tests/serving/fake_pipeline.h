// A stand-in DiffusionPipeline for serving tests: validates like a Wan pipeline by default
// (sizes in multiples of 16, 4k+1 frames, 16 fps; other capabilities can be given) and
// "generates" a deterministic gradient in a few milliseconds per step, honouring the step
// callback's cancellation. The prompt "fail" fails after its first step, as a generation
// that runs out of memory would.
#pragma once

#include <chrono>
#include <memory>
#include <thread>

#include "core/error.h"
#include "pipelines/pipeline.h"

namespace vgen::testing {

// What FakePipeline reports unless told otherwise: Wan2.1's grid at a tiny default size.
inline PipelineCapabilities fake_capabilities() {
  PipelineCapabilities c;
  c.tasks = {"text-to-video"};
  c.default_fps = 16.0;
  c.temporal_multiple = 4;
  c.spatial_multiple = 16;
  c.default_height = 32;
  c.default_width = 48;
  c.default_num_frames = 5;
  c.default_num_inference_steps = 2;
  c.default_guidance_scale = 5.0;
  c.default_max_sequence_length = 512;
  return c;
}

class FakePipeline final : public DiffusionPipeline {
 public:
  explicit FakePipeline(std::chrono::milliseconds step_time = std::chrono::milliseconds(1),
                        PipelineCapabilities capabilities = fake_capabilities())
      : DiffusionPipeline(std::make_shared<ExecutionContext>(Device::cpu())),
        step_time_(step_time),
        capabilities_(std::move(capabilities)) {}

  std::string class_name() const override { return "FakePipeline"; }
  const PipelineCapabilities& capabilities() const override { return capabilities_; }
  // One token per word plus </s> when count_tokens is on (off: the family cannot tell).
  std::optional<int64_t> prompt_token_count(const std::string& prompt) const override {
    if (!count_tokens) return std::nullopt;
    int64_t words = 0;
    bool in_word = false;
    for (char ch : prompt) {
      const bool space = ch == ' ';
      if (!space && !in_word) ++words;
      in_word = !space;
    }
    return words + 1;
  }
  bool count_tokens = false;

  ResolvedParams resolve(const GenerationParams& p) const override {
    const PipelineCapabilities& c = capabilities_;
    ResolvedParams r;
    r.prompt = p.prompt;
    r.negative_prompt = p.negative_prompt.value_or("");
    r.height = p.height.value_or(c.default_height);
    r.width = p.width.value_or(c.default_width);
    r.num_frames = p.num_frames.value_or(c.default_num_frames);
    r.num_inference_steps = p.num_inference_steps.value_or(c.default_num_inference_steps);
    // An explicit schedule sets the steps, as WanPipeline::resolve does.
    r.timesteps = p.timesteps;
    r.sigmas = p.sigmas;
    if (p.timesteps || p.sigmas) r.num_inference_steps = static_cast<int>((p.sigmas ? p.sigmas : p.timesteps)->size());
    r.guidance_scale = p.guidance_scale.value_or(c.default_guidance_scale);
    r.max_sequence_length = p.max_sequence_length.value_or(c.default_max_sequence_length);
    r.seed = p.seed;
    r.image = p.image;
    VGEN_CHECK(r.height % c.spatial_multiple == 0 && r.width % c.spatial_multiple == 0,
               "height and width must be multiples of {}, got {}x{}", c.spatial_multiple, r.width, r.height);
    VGEN_CHECK(r.num_frames % c.temporal_multiple == 1 % c.temporal_multiple,
               "num_frames must be of the form {}k+1, got {}", c.temporal_multiple, r.num_frames);
    return r;
  }

  GenerationOutput generate(const ResolvedParams& r, const StepCallback& on_step = {}) override {
    ContextScope scope(*context_);
    for (int i = 1; i <= r.num_inference_steps; ++i) {
      std::this_thread::sleep_for(step_time_);
      StepProgress p;
      p.step = i;
      p.total = r.num_inference_steps;
      p.step_seconds = std::chrono::duration<double>(step_time_).count();
      if (on_step && !on_step(p)) throw Cancelled();
      if (r.prompt == "fail") fail("simulated failure at step {}", i);
    }
    GenerationOutput out;
    out.fps = capabilities_.default_fps;
    out.frames = Tensor::empty({r.num_frames, r.height, r.width, 3}, DType::U8);
    uint8_t* px = out.frames.data<uint8_t>();
    for (int64_t f = 0; f < r.num_frames; ++f)
      for (int64_t y = 0; y < r.height; ++y)
        for (int64_t x = 0; x < r.width; ++x)
          for (int64_t c = 0; c < 3; ++c)
            *px++ = static_cast<uint8_t>((x * 5 + y * 3 + f * 20 + c * 60 + static_cast<int64_t>(r.seed)) & 0xFF);
    return out;
  }

  std::vector<std::pair<std::string, std::string>> describe() const override { return {{"pipeline", "fake"}}; }

 private:
  std::chrono::milliseconds step_time_;
  PipelineCapabilities capabilities_;
};

}  // namespace vgen::testing
