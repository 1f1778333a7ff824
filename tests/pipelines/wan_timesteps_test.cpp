// Explicit schedules end to end: the 4-step distilled recipe (timesteps 1000/750/500/250,
// guidance 1, Wan2.2's expert switch at step index 2) on the tiny Wan fixtures against
// diffusers' WanPipeline driven as tools/fixtures/make_scheduler_timesteps.py documents; the
// checks of resolve() on timesteps / sigmas / boundary_step; and the denoising loop's expert
// switch by step index with no negative pass at guidance 1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "io/json.h"
#include "pipelines/denoising_loop.h"
#include "pipelines/registry.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::error_of;
using vgen::testing::fixture;
using vgen::testing::rel_l2;

namespace {

// Fraction of uint8 values that differ by more than `levels`.
double fraction_off(const Tensor& a, const Tensor& b, int levels) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  size_t off = 0;
  for (size_t i = 0; i < x.size(); ++i) off += std::fabs(x[i] - y[i]) > levels;
  return static_cast<double>(off) / static_cast<double>(x.size());
}

GenerationParams distilled_params() {
  GenerationParams p;
  p.prompt = "a cat";
  p.height = 32;
  p.width = 48;
  p.num_frames = 9;
  p.guidance_scale = 1.0;
  p.timesteps = std::vector<double>{1000, 750, 500, 250};
  return p;
}

PipelineOptions euler_options(double shift) {
  PipelineOptions o;
  o.scheduler.scheduler = "FlowMatchEulerDiscreteScheduler";
  o.scheduler.flow_shift = shift;
  return o;
}

std::string resolve_error(const DiffusionPipeline& pipe, const GenerationParams& p) {
  return error_of([&] { pipe.resolve(p); });
}

}  // namespace

TEST(WanTimesteps, MatchesDiffusersEndToEnd) {
  const Json doc = read_json_file(fixture("schedulers_timesteps.json"));
  const WeightStore ref = vgen::testing::reference("schedulers_timesteps.safetensors");
  ASSERT_EQ(doc.at("pipeline_runs").size(), 3u);
  for (const Json& run : doc.at("pipeline_runs")) {
    const std::string name = run.at("name").get<std::string>();
    SCOPED_TRACE(name);
    PipelineOptions options;
    options.scheduler.scheduler = run.at("scheduler").get<std::string>();
    const Json& overrides = run.at("scheduler_overrides");
    options.scheduler.flow_shift = overrides.contains("shift") ? overrides.at("shift").get<double>()
                                                               : overrides.at("flow_shift").get<double>();
    auto pipe = load_pipeline(fixture(run.at("checkpoint").get<std::string>()), options);
    const Json& call = run.at("call");
    GenerationParams p;
    p.prompt = run.at("prompt").get<std::string>();
    p.height = call.at("height").get<int64_t>();
    p.width = call.at("width").get<int64_t>();
    p.num_frames = call.at("num_frames").get<int64_t>();
    p.guidance_scale = call.at("guidance_scale").get<double>();
    p.max_sequence_length = call.at("max_sequence_length").get<int>();
    p.latents = ref.get(name + ".latents");
    const Json& schedule = run.at("schedule");
    if (schedule.contains("timesteps")) p.timesteps = schedule.at("timesteps").get<std::vector<double>>();
    if (schedule.contains("sigmas")) p.sigmas = schedule.at("sigmas").get<std::vector<double>>();
    // diffusers' reference splits by a boundary_ratio between the 2nd and 3rd timesteps;
    // vgen says it by index, as the distilled recipe does.
    if (!run.at("boundary_ratio_set_to").is_null()) p.boundary_step = 2;
    const ResolvedParams r = pipe->resolve(p);
    EXPECT_EQ(r.num_inference_steps, 4);
    std::vector<int> experts;
    std::vector<double> timesteps;
    const GenerationOutput out = pipe->generate(r, [&](const StepProgress& s) {
      experts.push_back(s.expert);
      timesteps.push_back(s.timestep);
      return true;
    });
    EXPECT_EQ(timesteps, run.at("scheduler_timesteps").get<std::vector<double>>());
    // One transformer call per step in diffusers (guidance 1: no negative pass), numbered 1 / 2.
    const std::vector<float> want_experts = ref.get(name + ".step_expert").to_vector();
    ASSERT_EQ(experts.size(), want_experts.size());
    for (size_t i = 0; i < experts.size(); ++i) EXPECT_EQ(experts[i] + 1, static_cast<int>(want_experts[i])) << i;
    const double latent_err = rel_l2(out.denoised_latents, ref.get(name + ".denoised_latents"));
    EXPECT_LT(latent_err, 1e-4);
    const Tensor want = ref.get(name + ".frames_uint8");
    EXPECT_EQ(fraction_off(out.frames, want, 1), 0.0);
    std::printf("[%s] denoised latents rel L2 %.2e, uint8 values off by one %.4f%%\n", name.c_str(), latent_err,
                100.0 * fraction_off(out.frames, want, 0));
  }
}

TEST(WanTimesteps, ResolveChecksTheScheduleNamingTheParameter) {
  auto euler = load_pipeline(fixture("wan21_t2v_tiny"), euler_options(5.0));
  GenerationParams p = distilled_params();
  const ResolvedParams r = euler->resolve(p);
  EXPECT_EQ(r.num_inference_steps, 4);
  EXPECT_EQ(*r.timesteps, (std::vector<double>{1000, 750, 500, 250}));
  EXPECT_FALSE(r.sigmas.has_value());

  auto with = [&](auto edit) {
    GenerationParams q = distilled_params();
    edit(q);
    return resolve_error(*euler, q);
  };
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>{750, 1000}; })
                .find("timesteps must be strictly decreasing, but timesteps[1] = 1000 follows 750"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>{1000, 500, 500}; }).find("strictly decreasing"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>{1200, 500}; })
                .find("timesteps[0] must be in (0, 1000], got 1200"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>{500, 0}; }).find("timesteps[1] must be in"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>{}; })
                .find("timesteps must have between 1 and 1000 values, got 0"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.timesteps = std::vector<double>(1001, 1.0); }).find("between 1 and 1000"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) {
              q.timesteps.reset();
              q.sigmas = std::vector<double>{1.0, 1.5};
            }).find("sigmas[1] must be in (0, 1], got 1.5"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.sigmas = std::vector<double>{1.0, 0.5}; })
                .find("timesteps (4 values) and sigmas (2 values) must have the same length"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.num_inference_steps = 8; })
                .find("num_inference_steps is 8, but the timesteps given have 4 values"),
            std::string::npos);
  EXPECT_NE(with([](GenerationParams& q) { q.boundary_step = 2; }).find("boundary_step applies to two-expert models"),
            std::string::npos);
  // num_inference_steps equal to the length is fine; sigmas alone too.
  GenerationParams same = distilled_params();
  same.num_inference_steps = 4;
  EXPECT_EQ(euler->resolve(same).num_inference_steps, 4);
  GenerationParams sig = distilled_params();
  sig.timesteps.reset();
  sig.sigmas = std::vector<double>{1.0, 0.5};
  EXPECT_EQ(euler->resolve(sig).num_inference_steps, 2);

  // The checkpoint's UniPC takes sigmas but no timesteps (diffusers' set_timesteps has none).
  auto unipc = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  EXPECT_NE(resolve_error(*unipc, distilled_params()).find("timesteps: the UniPCMultistepScheduler scheduler takes no timesteps"),
            std::string::npos);
  EXPECT_EQ(unipc->resolve(sig).num_inference_steps, 2);

  // Two experts: boundary_step in [0, steps].
  auto a14b = load_pipeline(fixture("wan22_t2v_tiny"), euler_options(5.0));
  GenerationParams b = distilled_params();
  b.boundary_step = 2;
  EXPECT_EQ(a14b->resolve(b).boundary_step, 2);
  b.boundary_step = 5;
  EXPECT_NE(resolve_error(*a14b, b).find("boundary_step must be between 0 and num_inference_steps (4), got 5"),
            std::string::npos);
  b.boundary_step = -1;
  EXPECT_NE(resolve_error(*a14b, b).find("boundary_step must be between"), std::string::npos);
}

// The loop itself: guidance 1 runs the conditional branch only; the switch by step index
// overrides the timestep boundary; guidance above 1 adds the unconditional pass per expert.
TEST(WanTimesteps, DenoisingLoopSwitchesByStepIndex) {
  const Json euler_config = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 5.0}};
  auto scheduler = make_scheduler(euler_config, "euler");
  struct Call {
    int step;
    Branch branch;
    int expert;
  };
  auto run = [&](const DenoiseConfig& config) {
    scheduler->set_timesteps(ScheduleRequest{0, std::vector<double>{1000, 750, 500, 250}, std::nullopt, {}});
    std::vector<Call> calls;
    int step = 0;
    const DenoiseFn predict = [&](const Tensor& x, double, Branch branch, int expert) {
      calls.push_back({step, branch, expert});
      return Tensor::full(x.shape(), 0.1f, DType::F32);
    };
    run_denoising_loop(*scheduler, Tensor::full({1, 2, 1, 2, 2}, 1.0f, DType::F32), config, predict,
                       [&](const StepProgress&) {
                         ++step;
                         return true;
                       });
    return calls;
  };
  DenoiseConfig distilled;
  distilled.guidance_scale = 1.0;
  distilled.guidance_scale_2 = 1.0;
  distilled.boundary_timestep = 875.0;  // the checkpoint's ratio would switch after step 0
  distilled.boundary_step = 2;
  const std::vector<Call> calls = run(distilled);
  ASSERT_EQ(calls.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(calls[i].step, i);
    EXPECT_EQ(calls[i].branch, Branch::Conditional);
    EXPECT_EQ(calls[i].expert, i < 2 ? 0 : 1);
  }
  DenoiseConfig by_timestep = distilled;
  by_timestep.boundary_step.reset();
  const std::vector<Call> t = run(by_timestep);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].expert, 0);
  EXPECT_EQ(t[1].expert, 1);
  DenoiseConfig cfg_high = distilled;
  cfg_high.guidance_scale = 3.0;  // CFG on the high-noise expert only
  const std::vector<Call> c = run(cfg_high);
  ASSERT_EQ(c.size(), 6u);
  EXPECT_EQ(c[1].branch, Branch::Unconditional);
  EXPECT_EQ(c[4].branch, Branch::Conditional);
  EXPECT_EQ(c[5].expert, 1);
}
