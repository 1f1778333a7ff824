// Schedulers against diffusers 0.42.1: the Wan fixtures (tools/fixtures/make_wan_fixtures.py)
// and the extra configurations of tools/fixtures/make_scheduler_extra.py.
//
// Tolerances:
// - timesteps (what the transformer sees): equal.
// - sigmas: equal for the flow schedules (numpy float64, then one float32 rounding, as here).
//   The ones derived from betas within 1e-6 relative (worst seen 3.6e-7, zero-SNR rescaling):
//   diffusers takes sqrt((1 - alphas_cumprod) / alphas_cumprod) with torch's MKL sqrt, which
//   is not correctly rounded (1 ulp off for ~15% of inputs).
// - steps run the whole chain from sample0 on vgen's own outputs; every prev_sample within
//   2e-6 relative L2 (worst seen: 8.6e-7, UniPC with 50 steps). The update's scalars are float32
//   like diffusers' 0-d tensors, but torch's float32 log (MKL) and libm's differ by an ulp now
//   and then, and UniPC's log-SNR step h = lambda_t - lambda_s0 magnifies that by |lambda| / h,
//   more so the more steps; FlowMatchEuler matches bit for bit.
#include <gtest/gtest.h>

#include "support/errors.h"

#include <cmath>

#include "core/error.h"
#include "core/random.h"
#include "io/json.h"
#include "ops/ops.h"
#include "schedulers/scheduler.h"
#include "schedulers/scheduling_flow_match_euler_discrete.h"
#include "schedulers/scheduling_unipc_multistep.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::rel_l2;

namespace {

using vgen::testing::error_of;

constexpr double kStepTolerance = 2e-6;
constexpr double kBetaSigmaTolerance = 1e-6;

struct Reference {
  std::vector<double> timesteps, sigmas;
  Tensor sample0, model_outputs, prev_samples;
};

// flow_sigmas: the schedule comes from numpy float64 alone (no betas), so it must be exact.
void expect_schedule(const Scheduler& s, const Reference& ref, bool flow_sigmas, const std::string& what) {
  ASSERT_EQ(s.timesteps().size(), ref.timesteps.size()) << what;
  ASSERT_EQ(s.sigmas().size(), ref.sigmas.size()) << what;
  for (size_t i = 0; i < ref.timesteps.size(); ++i)
    EXPECT_EQ(s.timesteps()[i], ref.timesteps[i]) << what << " timestep " << i;
  for (size_t i = 0; i < ref.sigmas.size(); ++i) {
    if (flow_sigmas) EXPECT_EQ(s.sigmas()[i], ref.sigmas[i]) << what << " sigma " << i;
    else EXPECT_NEAR(s.sigmas()[i], ref.sigmas[i], std::fabs(ref.sigmas[i]) * kBetaSigmaTolerance) << what << " sigma " << i;
  }
}

// Runs every step from sample0 and returns the worst relative L2 over the steps.
double run_steps(Scheduler& s, const Reference& ref, const std::string& what) {
  Tensor x = ref.sample0;
  double worst = 0.0;
  const int64_t steps = static_cast<int64_t>(s.timesteps().size());
  EXPECT_EQ(ref.model_outputs.size(0), steps) << what;
  for (int64_t i = 0; i < steps; ++i) {
    x = s.step(ref.model_outputs.select(0, i), s.timesteps()[i], x);
    const double err = rel_l2(x, ref.prev_samples.select(0, i));
    EXPECT_LE(err, kStepTolerance) << what << " step " << i;
    worst = std::max(worst, err);
  }
  return worst;
}

std::vector<double> doubles(const Tensor& t) {
  std::vector<double> out;
  if (t.dtype() == DType::I64) {
    const Tensor c = t.contiguous();
    for (int64_t i = 0; i < c.numel(); ++i) out.push_back(static_cast<double>(c.data<int64_t>()[i]));
  } else {
    for (float v : t.to_vector()) out.push_back(v);
  }
  return out;
}

Json wan_scheduler_config(const std::string& checkpoint) {
  return read_json_file(fixture(checkpoint + "/scheduler/scheduler_config.json"));
}

}  // namespace

// The three references of each Wan fixture checkpoint, built the way a user would: from the
// checkpoint's scheduler_config.json with overrides.
TEST(Schedulers, WanFixtureReferences) {
  struct Case {
    const char* file;
    SchedulerOverrides overrides;
  };
  const std::vector<Case> cases = {
      {"scheduler_unipc", {}},
      {"scheduler_unipc_shift5", {std::nullopt, 5.0}},
      {"scheduler_flow_match_euler", {std::string("FlowMatchEulerDiscreteScheduler"), std::nullopt}},
  };
  for (const std::string checkpoint : {"wan21_t2v_tiny", "wan21_t2v_tiny_b"}) {
    const std::string config_path = fixture(checkpoint + "/scheduler/scheduler_config.json");
    for (const Case& c : cases) {
      const std::string what = checkpoint + "/" + c.file;
      const WeightStore store = vgen::testing::reference(checkpoint + "_ref/" + c.file + ".safetensors");
      Reference ref{doubles(store.get("timesteps")), doubles(store.get("sigmas")), store.get("sample0"),
                    store.get("model_outputs"), store.get("prev_samples")};
      const int steps = static_cast<int>(doubles(store.get("num_inference_steps"))[0]);
      std::unique_ptr<Scheduler> s = make_scheduler(read_json_file(config_path), config_path, c.overrides);
      s->set_timesteps(steps);
      expect_schedule(*s, ref, true, what);
      const double worst = run_steps(*s, ref, what);
      std::printf("  %-45s %2d steps, worst rel L2 %.2e\n", what.c_str(), steps, worst);
    }
  }
}

// Solver orders 1-3, bh1, step counts 1/2/50, final sigma, corrector switches, dynamic
// shifting, shift_terminal, karras/exponential sigmas, the non-flow prediction types and
// beta schedules, FLUX's dynamic shifting, invert_sigmas.
TEST(Schedulers, ExtraReferences) {
  const std::string json_path = fixture("schedulers_extra.json");
  const Json doc = read_json_file(json_path);
  const WeightStore store = vgen::testing::reference("schedulers_extra.safetensors");
  ASSERT_GE(doc.at("cases").size(), 20u);
  for (const Json& c : doc.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    Reference ref{c.at("timesteps").get<std::vector<double>>(), c.at("sigmas").get<std::vector<double>>(),
                  store.get(name + ".sample0"), store.get(name + ".model_outputs"),
                  store.get(name + ".prev_samples")};
    std::unique_ptr<Scheduler> s = make_scheduler(c.at("config"), json_path + " (" + name + ")", {});
    std::optional<double> mu;
    if (!c.at("mu").is_null()) mu = c.at("mu").get<double>();
    s->set_timesteps(c.at("num_inference_steps").get<int>(), mu);
    const Json& config = c.at("config");
    const bool flow_sigmas = config.at("_class_name") == "FlowMatchEulerDiscreteScheduler" ||
                             (config.at("use_flow_sigmas") == true && config.at("use_karras_sigmas") == false);
    expect_schedule(*s, ref, flow_sigmas, name);
    const double worst = run_steps(*s, ref, name);
    std::printf("  %-35s %2zu steps, worst rel L2 %.2e\n", name.c_str(), s->timesteps().size(), worst);
  }
}

TEST(Schedulers, OverrideToFlowMatchEulerConvertsFlowShift) {
  const Json config = wan_scheduler_config("wan21_t2v_tiny");
  SchedulerOverrides overrides;
  overrides.scheduler = "FlowMatchEulerDiscreteScheduler";
  auto s = make_scheduler(config, "scheduler_config.json", overrides);
  ASSERT_EQ(s->name(), "FlowMatchEulerDiscreteScheduler");
  auto* euler = dynamic_cast<FlowMatchEulerDiscreteScheduler*>(s.get());
  ASSERT_NE(euler, nullptr);
  EXPECT_EQ(euler->config().shift, 3.0);  // the UniPC config's flow_shift
  EXPECT_EQ(euler->config().num_train_timesteps, 1000);

  overrides.flow_shift = 5.0;
  s = make_scheduler(config, "scheduler_config.json", overrides);
  EXPECT_EQ(dynamic_cast<FlowMatchEulerDiscreteScheduler&>(*s).config().shift, 5.0);

  // And back: a FLUX-style FlowMatchEuler config read by UniPC is a flow-matching UniPC.
  const Json flux = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 3.0}, {"num_train_timesteps", 1000}};
  s = make_scheduler(flux, "flux/scheduler_config.json", {std::string("UniPCMultistepScheduler"), std::nullopt});
  const UniPCMultistepConfig& u = dynamic_cast<UniPCMultistepScheduler&>(*s).config();
  EXPECT_EQ(u.flow_shift, 3.0);
  EXPECT_TRUE(u.use_flow_sigmas);
  EXPECT_EQ(u.prediction_type, "flow_prediction");

  // No override: the config's own class, with its flow_shift.
  s = make_scheduler(config, "scheduler_config.json", {std::nullopt, 5.0});
  EXPECT_EQ(dynamic_cast<UniPCMultistepScheduler&>(*s).config().flow_shift, 5.0);
}

namespace {

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(Schedulers, ConfigErrorsNameFileAndField) {
  const std::string path = "/ckpt/scheduler/scheduler_config.json";
  Json config = wan_scheduler_config("wan21_t2v_tiny");

  Json bad = config;
  bad["flow_shift"] = "three";
  std::string msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "'flow_shift'") && has(msg, "\"three\"")) << msg;

  bad = config;
  bad["solver_order"] = 2.5;
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "'solver_order'")) << msg;

  bad = config;
  bad["use_flow_sigmas"] = 1;
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, "'use_flow_sigmas'") && has(msg, "true or false")) << msg;

  bad = config;
  bad["prediction_type"] = "x0";
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "'prediction_type'") && has(msg, "flow_prediction")) << msg;

  bad = config;
  bad["thresholding"] = true;
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, "'thresholding'") && has(msg, "not supported")) << msg;

  bad = config;
  bad["use_beta_sigmas"] = true;
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, "'use_beta_sigmas'")) << msg;

  bad = config;
  bad["solver_type"] = "bh1";  // NaN in diffusers with final_sigmas_type "zero"
  msg = error_of([&] { make_scheduler(bad, path); });
  EXPECT_TRUE(has(msg, "'solver_type'") && has(msg, "sigma_min")) << msg;

  // The FlowMatchEuler fields are checked too, also when reached through the override.
  bad = config;
  bad["time_shift_type"] = "cubic";
  msg = error_of([&] { make_scheduler(bad, path, {std::string("FlowMatchEulerDiscreteScheduler"), std::nullopt}); });
  EXPECT_TRUE(has(msg, path) && has(msg, "FlowMatchEulerDiscreteScheduler field 'time_shift_type'")) << msg;

  // Keys diffusers ignores are fine.
  Json extra = config;
  extra["some_future_field"] = {1, 2};
  EXPECT_NO_THROW(make_scheduler(extra, path));
}

TEST(Schedulers, UnknownSchedulerListsSupported) {
  const Json config = wan_scheduler_config("wan21_t2v_tiny");
  std::string msg = error_of([&] { make_scheduler(config, "cfg.json", {std::string("DDIMScheduler"), std::nullopt}); });
  EXPECT_TRUE(has(msg, "DDIMScheduler") && has(msg, "UniPCMultistepScheduler") &&
              has(msg, "FlowMatchEulerDiscreteScheduler"))
      << msg;
  Json other = config;
  other["_class_name"] = "EulerAncestralDiscreteScheduler";
  msg = error_of([&] { make_scheduler(other, "cfg.json"); });
  EXPECT_TRUE(has(msg, "cfg.json") && has(msg, "EulerAncestralDiscreteScheduler") && has(msg, "UniPCMultistepScheduler"))
      << msg;
  EXPECT_EQ(supported_schedulers(), (std::vector<std::string>{"FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"}));
}

TEST(Schedulers, StepMisuseIsAnError) {
  auto s = make_scheduler(wan_scheduler_config("wan21_t2v_tiny"), "cfg.json");
  const Tensor x = randn({1, 4, 2, 2}, 1);
  EXPECT_THROW(s->step(x, 999, x), Error);  // before set_timesteps
  s->set_timesteps(2);
  EXPECT_THROW(s->step(x, 998, x), Error);  // not the next timestep
  Tensor y = s->step(x, s->timesteps()[0], x);
  y = s->step(x, s->timesteps()[1], y);
  EXPECT_THROW(s->step(x, s->timesteps()[1], y), Error);  // past the end
  // set_timesteps restarts the schedule.
  s->set_timesteps(2);
  EXPECT_NO_THROW(s->step(x, s->timesteps()[0], x));

  const Json flux = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"use_dynamic_shifting", true}};
  auto f = make_scheduler(flux, "flux.json");
  const std::string msg = error_of([&] { f->set_timesteps(4); });
  EXPECT_TRUE(has(msg, "mu")) << msg;
}

// FLUX's mu (pipeline_flux.calculate_shift) from the scheduler's config fields.
TEST(Schedulers, FlowMatchEulerCalculateShift) {
  const Json flux = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"base_image_seq_len", 256},
                     {"base_shift", 0.5}, {"max_image_seq_len", 4096}, {"max_shift", 1.15},
                     {"num_train_timesteps", 1000}, {"shift", 3.0}, {"use_dynamic_shifting", true}};
  auto s = make_scheduler(flux, "flux.json");
  const auto& euler = dynamic_cast<FlowMatchEulerDiscreteScheduler&>(*s);
  EXPECT_NEAR(euler.calculate_shift(256), 0.5, 1e-12);
  EXPECT_NEAR(euler.calculate_shift(4096), 1.15, 1e-12);
  EXPECT_NEAR(euler.calculate_shift(1024), 0.5 + 0.65 * 768.0 / 3840.0, 1e-12);
}

// stochastic_sampling: prev = (1 - sigma_next) * (x - sigma * v) + sigma_next * noise, with
// vgen's seeded noise in place of torch's generator.
TEST(Schedulers, FlowMatchEulerStochasticSampling) {
  const Json config = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 3.0}, {"stochastic_sampling", true}};
  auto s = make_scheduler(config, "cfg.json");
  s->set_noise_seed(7);
  s->set_timesteps(3);
  const Tensor x = randn({2, 3, 4}, 1), v = randn({2, 3, 4}, 2);
  const Tensor prev = s->step(v, s->timesteps()[0], x);
  const std::vector<float> px = x.to_vector(), pv = v.to_vector(), pn = randn({2, 3, 4}, 7).to_vector();
  const std::vector<float> out = prev.to_vector();
  const float sigma = static_cast<float>(s->sigmas()[0]), next = static_cast<float>(s->sigmas()[1]);
  for (size_t i = 0; i < out.size(); ++i) {
    const float x0 = px[i] - sigma * pv[i];
    EXPECT_NEAR(out[i], (1.0f - next) * x0 + next * pn[i], 1e-6f) << i;
  }
}

// diffusers' dtypes: UniPC returns the sample's dtype, FlowMatchEuler the model output's.
TEST(Schedulers, ResultDtypes) {
  const Json config = wan_scheduler_config("wan21_t2v_tiny");
  const Tensor x = randn({1, 4, 2, 2}, 3), v = randn({1, 4, 2, 2}, 4).to(DType::BF16);
  auto unipc = make_scheduler(config, "cfg.json");
  unipc->set_timesteps(3);
  EXPECT_EQ(unipc->step(v, unipc->timesteps()[0], x).dtype(), DType::F32);
  auto euler = make_scheduler(config, "cfg.json", {std::string("FlowMatchEulerDiscreteScheduler"), std::nullopt});
  euler->set_timesteps(3);
  EXPECT_EQ(euler->step(v, euler->timesteps()[0], x).dtype(), DType::BF16);
}
