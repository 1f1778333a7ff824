// Explicit timesteps / sigmas (ScheduleRequest) against diffusers 0.42.1's set_timesteps,
// references written by tools/fixtures/make_scheduler_timesteps.py.
//
// Tolerances: timesteps (what the transformer sees) equal; sigmas equal (numpy float32 for
// FlowMatchEuler's given lists, float64 then one float32 rounding for UniPC's, reproduced
// operation for operation); steps within 2e-6 relative L2 over the whole chain, as the
// schedulers' other references (tests/schedulers/scheduler_test.cpp says why).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "io/json.h"
#include "schedulers/scheduler.h"
#include "schedulers/scheduling_flow_match_euler_discrete.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::error_of;
using vgen::testing::fixture;
using vgen::testing::rel_l2;

namespace {

constexpr double kStepTolerance = 2e-6;

ScheduleRequest request_of(const Json& r) {
  ScheduleRequest q;
  if (r.contains("num_inference_steps")) q.num_inference_steps = r.at("num_inference_steps").get<int>();
  if (r.contains("timesteps")) q.timesteps = r.at("timesteps").get<std::vector<double>>();
  if (r.contains("sigmas")) q.sigmas = r.at("sigmas").get<std::vector<double>>();
  if (r.contains("mu")) q.mu = r.at("mu").get<double>();
  return q;
}

}  // namespace

TEST(ScheduleRequests, MatchDiffusersSetTimesteps) {
  const std::string json_path = fixture("schedulers_timesteps.json");
  const Json doc = read_json_file(json_path);
  const WeightStore store = vgen::testing::reference("schedulers_timesteps.safetensors");
  ASSERT_GE(doc.at("cases").size(), 15u);
  for (const Json& c : doc.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    std::unique_ptr<Scheduler> s = make_scheduler(c.at("config"), json_path + " (" + name + ")", {});
    s->set_timesteps(request_of(c.at("request")));
    const std::vector<double> want_t = c.at("timesteps").get<std::vector<double>>();
    const std::vector<double> want_s = c.at("sigmas").get<std::vector<double>>();
    ASSERT_EQ(s->timesteps().size(), want_t.size());
    ASSERT_EQ(s->sigmas().size(), want_s.size());
    for (size_t i = 0; i < want_t.size(); ++i) EXPECT_EQ(s->timesteps()[i], want_t[i]) << "timestep " << i;
    for (size_t i = 0; i < want_s.size(); ++i) EXPECT_EQ(s->sigmas()[i], want_s[i]) << "sigma " << i;

    const Tensor model_outputs = store.get(name + ".model_outputs");
    const Tensor prev_samples = store.get(name + ".prev_samples");
    Tensor x = store.get(name + ".sample0");
    double worst = 0.0;
    for (size_t i = 0; i < want_t.size(); ++i) {
      const int64_t k = static_cast<int64_t>(i);
      x = s->step(model_outputs.select(0, k).contiguous(), s->timesteps()[i], x);
      worst = std::max(worst, rel_l2(x, prev_samples.select(0, k).contiguous()));
    }
    EXPECT_LT(worst, kStepTolerance);
    std::printf("  %-36s %zu steps, worst rel L2 %.2e\n", name.c_str(), want_t.size(), worst);
  }
}

// What diffusers refuses is refused, naming the argument.
TEST(ScheduleRequests, RefusesWhatDiffusersRefuses) {
  const Json doc = read_json_file(fixture("schedulers_timesteps.json"));
  ASSERT_EQ(doc.at("refusals").size(), 5u);  // the fixture's record of diffusers' errors
  const Json unipc_flow = {{"_class_name", "UniPCMultistepScheduler"}, {"prediction_type", "flow_prediction"},
                           {"use_flow_sigmas", true}, {"flow_shift", 3.0}};
  const Json unipc_eps = {{"_class_name", "UniPCMultistepScheduler"}, {"prediction_type", "epsilon"}};
  const Json euler = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 5.0}};
  const std::vector<double> four{1000, 750, 500, 250};
  auto unipc = make_scheduler(unipc_flow, "unipc");
  EXPECT_NE(error_of([&] { unipc->set_timesteps(ScheduleRequest{0, four, std::nullopt, std::nullopt}); })
                .find("takes no timesteps"),
            std::string::npos);
  EXPECT_FALSE(unipc->accepts_timesteps());
  EXPECT_TRUE(unipc->accepts_sigmas());
  auto eps = make_scheduler(unipc_eps, "unipc_eps");
  EXPECT_FALSE(eps->accepts_sigmas());
  EXPECT_NE(error_of([&] { eps->set_timesteps(ScheduleRequest{0, std::nullopt, std::vector<double>{0.9, 0.5}, {}}); })
                .find("sigmas is only supported when use_flow_sigmas = true"),
            std::string::npos);
  auto e = make_scheduler(euler, "euler");
  EXPECT_NE(error_of([&] { e->set_timesteps(ScheduleRequest{0, four, std::vector<double>{1, 0.75, 0.5}, {}}); })
                .find("sigmas (3 values) and timesteps (4 values) should have the same length"),
            std::string::npos);
  EXPECT_NE(error_of([&] { e->set_timesteps(ScheduleRequest{3, four, std::nullopt, {}}); })
                .find("should have the same length as num_inference_steps"),
            std::string::npos);
  EXPECT_NE(error_of([&] { e->set_timesteps(ScheduleRequest{0, std::vector<double>{}, std::nullopt, {}}); })
                .find("timesteps must not be empty"),
            std::string::npos);
  // UniPC, as diffusers, takes the length of sigmas and ignores num_inference_steps.
  unipc->set_timesteps(ScheduleRequest{7, std::nullopt, std::vector<double>{1, 0.75, 0.5, 0.25}, {}});
  EXPECT_EQ(unipc->timesteps().size(), 4u);
  // The int overload still computes the scheduler's own schedule after an explicit one.
  e->set_timesteps(ScheduleRequest{0, four, std::nullopt, {}});
  e->set_timesteps(3);
  EXPECT_EQ(e->timesteps().size(), 3u);
  EXPECT_EQ(e->timesteps()[0], 1000.0);
  EXPECT_NE(e->timesteps()[1], 750.0);
}
