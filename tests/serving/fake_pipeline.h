// A stand-in DiffusionPipeline for serving tests: validates like a Wan pipeline (sizes in
// multiples of 16, 4k+1 frames) and "generates" a deterministic gradient in a few
// milliseconds per step, honouring the step callback's cancellation. The prompt "fail"
// fails after its first step, as a generation that runs out of memory would.
#pragma once

#include <chrono>
#include <thread>

#include "core/error.h"
#include "pipelines/pipeline.h"

namespace vgen::testing {

class FakePipeline final : public DiffusionPipeline {
 public:
  explicit FakePipeline(std::chrono::milliseconds step_time = std::chrono::milliseconds(1)) : step_time_(step_time) {}

  std::string class_name() const override { return "FakePipeline"; }

  ResolvedParams resolve(const GenerationParams& p) const override {
    ResolvedParams r;
    r.prompt = p.prompt;
    r.negative_prompt = p.negative_prompt.value_or("");
    r.height = p.height.value_or(32);
    r.width = p.width.value_or(48);
    r.num_frames = p.num_frames.value_or(5);
    r.num_inference_steps = p.num_inference_steps.value_or(2);
    r.guidance_scale = p.guidance_scale.value_or(5.0);
    r.max_sequence_length = p.max_sequence_length.value_or(512);
    r.seed = p.seed;
    VGEN_CHECK(r.height % 16 == 0 && r.width % 16 == 0, "height and width must be multiples of 16, got {}x{}", r.width,
               r.height);
    VGEN_CHECK(r.num_frames % 4 == 1, "num_frames must be of the form 4k+1, got {}", r.num_frames);
    return r;
  }

  GenerationOutput generate(const GenerationParams& params, const StepCallback& on_step = {}) override {
    const ResolvedParams r = resolve(params);
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
};

}  // namespace vgen::testing
